//! The routing mesh's rule (issue 15, part 4): which tasks take the connections of each
//! ingress port, and with what weight. Pure: the daemon (`node/src/daemon/ingress.rs`) feeds
//! it the node's view and serves the result with a userspace TCP proxy.
//!
//! - An **ingress port** is a [`PortSpec`] in [`PublishMode::Ingress`] of a live service: every
//!   node with a routing mesh listens on `--ingress-addr:host_port` and forwards each
//!   connection to one of the port's backends.
//! - A task is a **backend** while it runs, is not failing its health check (healthy; or
//!   without a check when its service has none; never while `starting`), has published the
//!   target port (a report with the engine's port for it) or has an overlay address, and its
//!   member is neither removed nor held down here (the DNS's rule for answering tasks,
//!   [`crate::names`], with the stricter health reading).
//! - **Where it is reached**: a task on this node at its published port (`127.0.0.1:P`, its
//!   overlay address without one); a task
//!   on another node at `[overlay address]:target` when this node's overlay is on and the task
//!   has an overlay address, its published port (the address its node's report names) next.
//!   The daemon tries the addresses in order.
//! - **Weights** come from a [`TrafficSplit`]: per service, its rollout's split
//!   ([`super::rollout::traffic_split`]): blue/green sends to every generation but the new
//!   one until its switch, then to the new one only; a canary with `--canary-weight P` gives
//!   its tasks P % of the connections and the others the rest. A service without a split
//!   spreads over every task of every generation alike (a canary without a weight thus gets
//!   its share of the tasks). When the favoured side or the rest has no eligible task, the
//!   other takes everything (connections go where a task can take them rather than nowhere).
//! - The tasks are the view's, one per assigned slot, plus the older copies a start-first or
//!   blue/green rollout keeps beside a slot's new task (`Snapshot::previous_tasks`): those
//!   serve until their node starts removing them (reported `removing`, not running).
//! - Two live services asking one ingress port (a merge of concurrent creates on two sides of
//!   a partition; the API refuses it otherwise, [`ingress_port_taken`]) — the service whose name
//!   sorts first keeps the port and the other is listed in [`IngressTable::conflicts`].
//!
//! [`WeightedPicker`] spreads connections over a route's backends by smooth weighted
//! round-robin (nginx's): deterministic, and over every run of `sum(weights)` picks each
//! backend is picked exactly `weight` times, interleaved.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use warren_crdt::{NodeId, PortSpec, PublishMode, Service, ServiceName, ServiceSpec};

use crate::core::rollout::TrafficSplit as RolloutSplit;
use crate::core::TaskHealth;
use crate::machine::{MemberStatus, TaskView};
use crate::protocol::TaskState;

/// Which generations of each service take its connections, from each service's rollout
/// ([`super::rollout::traffic_split`]: blue/green sends to one set, a weighted canary gets
/// its percentage); a service it does not name spreads over all its tasks evenly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficSplit {
    /// Service → its split. Absent: every task of the service weighs the same.
    pub services: BTreeMap<ServiceName, RolloutSplit>,
}

impl TrafficSplit {
    /// No service split: every task of every service weighs the same.
    pub fn even() -> Self {
        Self::default()
    }

    /// The split each of `services` asks by its rollout record.
    pub fn of_services<'s>(services: impl IntoIterator<Item = &'s Service>) -> Self {
        TrafficSplit {
            services: services
                .into_iter()
                .filter(|s| !s.deleted)
                .filter_map(|s| Some((s.name.clone(), super::rollout::traffic_split(s)?)))
                .collect(),
        }
    }

    /// The split of `service`, `None` when it has none.
    pub fn of(&self, service: &ServiceName) -> Option<&RolloutSplit> {
        self.services.get(service)
    }
}

/// One task that takes connections of an ingress port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its slot.
    pub slot: u32,
    /// The member that runs it.
    pub node: NodeId,
    /// The generation of its container.
    pub generation: u64,
    /// Where to connect, best first (see the module doc); never empty.
    pub addrs: Vec<SocketAddr>,
    /// Its weight relative to the route's other backends; at least 1.
    pub weight: u32,
}

/// What one ingress port forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRoute {
    /// The service it belongs to.
    pub service: ServiceName,
    /// The port inside the tasks' containers.
    pub target_port: u16,
    /// The eligible tasks, by slot; empty while none is (connections are then closed at once).
    pub backends: Vec<Backend>,
}

/// The routing mesh's table: per ingress port, its route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressTable {
    /// Published port → route.
    pub routes: BTreeMap<u16, IngressRoute>,
    /// `(port, service)` of each service that asks a port another service keeps.
    pub conflicts: Vec<(u16, ServiceName)>,
}

/// What the rule needs beyond the view: who asks, and whether its overlay is on.
#[derive(Debug, Clone, Copy)]
pub struct IngressContext<'a> {
    /// The node computing its table: its tasks are reached at their published ports.
    pub me: &'a NodeId,
    /// Whether this node's overlay interface is up (tasks on other nodes are then reached at
    /// their overlay addresses first).
    pub overlay_on: bool,
}

/// Weight of one task when its generation takes `percent` of the traffic and has `tasks`
/// eligible tasks: `percent * WEIGHT_SCALE / tasks`, at least 1.
const WEIGHT_SCALE: u32 = 1_000;

/// The table for `services` (tombstones are skipped) given the tasks of the view (`tasks`,
/// one per assigned slot with its node's latest report), the members and `split`, by the
/// rule in the module doc.
pub fn ingress_table<'s>(
    services: impl IntoIterator<Item = &'s Service>,
    tasks: &[TaskView],
    members: &[MemberStatus],
    split: &TrafficSplit,
    ctx: IngressContext<'_>,
) -> IngressTable {
    let serving: BTreeMap<&NodeId, bool> = members.iter().map(|m| (&m.id, m.serves())).collect();
    let mut by_service: BTreeMap<&ServiceName, Vec<&TaskView>> = BTreeMap::new();
    for t in tasks {
        by_service.entry(&t.service).or_default().push(t);
    }
    let mut table = IngressTable::default();
    // Sorted by name (the services map is ordered; sort anyway for any iterator).
    let mut live: Vec<&Service> = services.into_iter().filter(|s| !s.deleted).collect();
    live.sort_by(|a, b| a.name.cmp(&b.name));
    for service in live {
        for port in &service.spec.ports {
            let Some(published) = port.ingress_port() else {
                continue;
            };
            if table.routes.contains_key(&published) {
                table.conflicts.push((published, service.name.clone()));
                continue;
            }
            let of_service = by_service.get(&service.name).map_or(&[][..], Vec::as_slice);
            let backends = backends_of(
                service,
                port.container_port,
                of_service,
                &serving,
                split,
                ctx,
            );
            table.routes.insert(
                published,
                IngressRoute {
                    service: service.name.clone(),
                    target_port: port.container_port,
                    backends,
                },
            );
        }
    }
    table
}

fn backends_of(
    service: &Service,
    target: u16,
    tasks: &[&TaskView],
    serving: &BTreeMap<&NodeId, bool>,
    split: &TrafficSplit,
    ctx: IngressContext<'_>,
) -> Vec<Backend> {
    let checked = service.spec.health.is_some();
    let mut eligible: Vec<(u32, NodeId, u64, Vec<SocketAddr>)> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .filter(|t| match t.health {
            TaskHealth::Healthy => true,
            TaskHealth::None => !checked,
            TaskHealth::Starting | TaskHealth::Unhealthy => false,
        })
        .filter(|t| serving.get(&t.node).copied().unwrap_or(false))
        .filter_map(|t| {
            let addrs = addresses(t, target, ctx);
            (!addrs.is_empty()).then(|| (t.slot, t.node.clone(), t.generation, addrs))
        })
        .collect();
    eligible.sort_by_key(|(slot, ..)| *slot);
    let Some(split) = split.of(&service.name) else {
        // Every generation at its share of the tasks: equal weights per task.
        return eligible
            .into_iter()
            .map(|(slot, node, generation, addrs)| Backend {
                slot,
                node,
                generation,
                addrs,
                weight: WEIGHT_SCALE,
            })
            .collect();
    };
    // The generations the split favours (`chosen`) and their share in percent; the rest
    // take the remainder. A side without an eligible task leaves everything to the other
    // (connections go where a task can take them rather than nowhere).
    let (chosen, percent): (Box<dyn Fn(u64) -> bool>, u32) = match *split {
        RolloutSplit::Only(g) => (Box::new(move |x| x == g), 100),
        RolloutSplit::AllBut(g) => (Box::new(move |x| x != g), 100),
        RolloutSplit::Weighted {
            generation,
            percent,
        } => (
            Box::new(move |x| x == generation),
            u32::from(percent.min(100)),
        ),
    };
    let favoured = eligible.iter().filter(|(_, _, g, _)| chosen(*g)).count() as u32;
    let others = eligible.len() as u32 - favoured;
    let (favoured_share, others_share) = match (favoured, others) {
        (0, _) => (0, 100),
        (_, 0) => (100, 0),
        _ => (percent, 100 - percent),
    };
    eligible
        .into_iter()
        .filter_map(|(slot, node, generation, addrs)| {
            let (share, tasks) = if chosen(generation) {
                (favoured_share, favoured)
            } else {
                (others_share, others)
            };
            (share > 0).then(|| Backend {
                slot,
                node,
                generation,
                addrs,
                weight: (share * WEIGHT_SCALE / tasks.max(1)).max(1),
            })
        })
        .collect()
}

/// Where task `t` is reached on its `target` port, best first.
fn addresses(t: &TaskView, target: u16, ctx: IngressContext<'_>) -> Vec<SocketAddr> {
    let published = t
        .ports
        .iter()
        .find(|p| p.container_port == target && p.host_port != 0)
        .map(|p| {
            let ip = p
                .host_ip
                .parse::<IpAddr>()
                .ok()
                .filter(|ip| !ip.is_unspecified())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            SocketAddr::new(ip, p.host_port)
        });
    let overlay = t
        .overlay_ip
        .map(|ip| SocketAddr::new(IpAddr::V6(ip), target));
    if &t.node == ctx.me {
        // On this node: its published port, its own network's address without one.
        return published.or(overlay).into_iter().collect();
    }
    match (ctx.overlay_on, overlay) {
        (true, Some(overlay)) => std::iter::once(overlay).chain(published).collect(),
        _ => published.into_iter().collect(),
    }
}

/// Whether another live service than `name` already publishes one of `spec`'s ingress ports
/// (or publishes it as a fixed host port, or asks for a fixed host port that is another
/// service's ingress port): `Some((port, that service))`. The create and update of a service
/// are refused then.
pub fn ingress_port_taken<'s>(
    services: impl IntoIterator<Item = &'s Service>,
    name: &ServiceName,
    spec: &ServiceSpec,
) -> Option<(u16, ServiceName)> {
    let fixed = |p: &PortSpec| p.host_port.map(|h| (h, p.mode));
    let mine: Vec<(u16, PublishMode)> = spec.ports.iter().filter_map(fixed).collect();
    if mine.is_empty() {
        return None;
    }
    for other in services
        .into_iter()
        .filter(|s| !s.deleted && s.name != *name)
    {
        for (port, mode) in other.spec.ports.iter().filter_map(fixed) {
            let clash = mine.iter().any(|(p, m)| {
                *p == port && (*m == PublishMode::Ingress || mode == PublishMode::Ingress)
            });
            if clash {
                return Some((port, other.name.clone()));
            }
        }
    }
    None
}

/// Smooth weighted round-robin over a route's backends (nginx's algorithm): each pick adds
/// every backend's weight to its running score, takes the highest and subtracts the total
/// from it. Over any run of `sum(weights)` consecutive picks each backend is picked exactly
/// `weight` times; picks of one backend are spread out, not bunched.
#[derive(Debug, Clone, Default)]
pub struct WeightedPicker {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl WeightedPicker {
    /// A picker over `weights` (one per backend, in the route's order; 0 never picked).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(i64::from).collect();
        let total = weights.iter().sum();
        Self {
            current: vec![0; weights.len()],
            weights,
            total,
        }
    }

    /// The index of the next backend; `None` when there is none with a weight.
    pub fn pick(&mut self) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let mut best: Option<(usize, i64)> = None;
        for (i, (c, w)) in self.current.iter_mut().zip(&self.weights).enumerate() {
            *c += w;
            if *w > 0 && best.is_none_or(|(_, top)| *c > top) {
                best = Some((i, *c));
            }
        }
        let (b, _) = best?;
        if let Some(c) = self.current.get_mut(b) {
            *c -= self.total;
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Liveness;
    use crate::engine::PublishedPort;
    use std::net::Ipv6Addr;
    use warren_crdt::MemberState;
    use warren_crdt::{Epoch, HealthCheck};

    fn id(n: &str) -> NodeId {
        NodeId(format!("id-{n}"))
    }

    fn member(n: &str, liveness: Liveness, state: MemberState) -> MemberStatus {
        MemberStatus {
            id: id(n),
            name: n.into(),
            liveness,
            state,
            availability: Default::default(),
            stays: Vec::new(),
            labels: Default::default(),
            capabilities: Default::default(),
            platform: Default::default(),
            addrs: Vec::new(),
            api: String::new(),
            is_self: false,
            tasks: 0,
            capacity: None,
            reserved: Default::default(),
            usage: None,
            gpus: Vec::new(),
            gpu_holders: Default::default(),
            engine: None,
            overlay: None,
            overlay_state: None,
        }
    }

    fn members() -> Vec<MemberStatus> {
        ["a", "b", "c"]
            .iter()
            .map(|n| member(n, Liveness::Alive, MemberState::Active))
            .collect()
    }

    fn service(name: &str, published: u16, health: bool) -> Service {
        let spec = ServiceSpec {
            image: "warren/busybox:latest".into(),
            replicas: 3,
            ports: vec![PortSpec {
                container_port: 80,
                host_port: Some(published),
                mode: PublishMode::Ingress,
            }],
            health: health.then(|| HealthCheck {
                probe: warren_crdt::HealthProbe::Cmd {
                    command: "true".into(),
                },
                interval_ms: 1000,
                timeout_ms: 1000,
                retries: 1,
                start_period_ms: 0,
            }),
            ..Default::default()
        };
        Service {
            name: ServiceName::new(name).expect("name"),
            generation: 1,
            deleted: false,
            spec,
            previous_spec: None,
            older_specs: Default::default(),
            rollout: None,
        }
    }

    fn task(svc: &str, slot: u32, node: &str, state: TaskState, health: TaskHealth) -> TaskView {
        TaskView {
            service: ServiceName::new(svc).expect("name"),
            slot,
            node: id(node),
            node_name: node.into(),
            epoch: Epoch(1),
            state,
            status: String::new(),
            container: String::new(),
            ports: vec![PublishedPort {
                container_port: 80,
                host_ip: "127.0.0.1".into(),
                host_port: 30_000 + u16::try_from(slot).expect("slot"),
            }],
            health,
            exit_code: None,
            restarts: 0,
            next_restart_ms: None,
            error: String::new(),
            overlay_ip: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1 + slot as u16)),
            generation: 1,
        }
    }

    fn table(services: &[Service], tasks: &[TaskView], split: &TrafficSplit) -> IngressTable {
        ingress_table(
            services,
            tasks,
            &members(),
            split,
            IngressContext {
                me: &id("a"),
                overlay_on: true,
            },
        )
    }

    fn slots(table: &IngressTable, port: u16) -> Vec<u32> {
        table.routes[&port]
            .backends
            .iter()
            .map(|b| b.slot)
            .collect()
    }

    #[test]
    fn only_running_tasks_that_pass_their_check_take_connections() {
        let checked = service("web", 8080, true);
        let tasks = vec![
            task("web", 0, "a", TaskState::Running, TaskHealth::Healthy),
            task("web", 1, "b", TaskState::Running, TaskHealth::Unhealthy),
            task("web", 2, "c", TaskState::Running, TaskHealth::Starting),
            task("web", 3, "b", TaskState::Exited, TaskHealth::Healthy),
            task("web", 4, "c", TaskState::Restarting, TaskHealth::None),
            // A checked service's task whose health is not known yet does not count.
            task("web", 5, "c", TaskState::Running, TaskHealth::None),
            task("web", 6, "c", TaskState::Running, TaskHealth::Healthy),
        ];
        assert_eq!(
            slots(&table(&[checked], &tasks, &TrafficSplit::even()), 8080),
            vec![0, 6]
        );
        // Without a health check, a running task counts.
        let unchecked = service("web", 8080, false);
        assert_eq!(
            slots(&table(&[unchecked], &tasks, &TrafficSplit::even()), 8080),
            vec![0, 5, 6]
        );
    }

    #[test]
    fn tasks_of_down_or_removed_members_are_left_out() {
        let mut m = members();
        m[1].liveness = Liveness::Down;
        m[2].state = MemberState::Removed;
        let tasks = vec![
            task("web", 0, "a", TaskState::Running, TaskHealth::None),
            task("web", 1, "b", TaskState::Running, TaskHealth::None),
            task("web", 2, "c", TaskState::Running, TaskHealth::None),
        ];
        let t = ingress_table(
            &[service("web", 8080, false)],
            &tasks,
            &m,
            &TrafficSplit::even(),
            IngressContext {
                me: &id("a"),
                overlay_on: false,
            },
        );
        assert_eq!(slots(&t, 8080), vec![0]);
    }

    #[test]
    fn local_tasks_by_published_port_remote_ones_by_overlay_then_published() {
        let tasks = vec![
            task("web", 0, "a", TaskState::Running, TaskHealth::None),
            task("web", 1, "b", TaskState::Running, TaskHealth::None),
        ];
        let svc = [service("web", 8080, false)];
        let on = table(&svc, &tasks, &TrafficSplit::even());
        let local: SocketAddr = "127.0.0.1:30000".parse().expect("addr");
        let overlay: SocketAddr = "[fd00::2]:80".parse().expect("addr");
        let remote_published: SocketAddr = "127.0.0.1:30001".parse().expect("addr");
        assert_eq!(on.routes[&8080].backends[0].addrs, vec![local]);
        assert_eq!(
            on.routes[&8080].backends[1].addrs,
            vec![overlay, remote_published]
        );
        let off = ingress_table(
            &svc,
            &tasks,
            &members(),
            &TrafficSplit::even(),
            IngressContext {
                me: &id("a"),
                overlay_on: false,
            },
        );
        assert_eq!(off.routes[&8080].backends[1].addrs, vec![remote_published]);
        // A task with neither a published port nor an overlay address cannot be reached.
        let mut bare = task("web", 2, "b", TaskState::Running, TaskHealth::None);
        bare.ports.clear();
        bare.overlay_ip = None;
        let t = table(&svc, &[bare], &TrafficSplit::even());
        assert!(t.routes[&8080].backends.is_empty());
    }

    #[test]
    fn host_ports_and_deleted_services_have_no_route_and_a_second_claim_is_a_conflict() {
        let mut host = service("api", 9000, false);
        host.spec.ports[0].mode = PublishMode::Host;
        let mut gone = service("old", 9001, false);
        gone.deleted = true;
        let t = table(
            &[
                host,
                gone,
                service("zeta", 8080, false),
                service("alpha", 8080, false),
            ],
            &[],
            &TrafficSplit::even(),
        );
        assert_eq!(t.routes.keys().copied().collect::<Vec<_>>(), vec![8080]);
        assert_eq!(t.routes[&8080].service.as_str(), "alpha");
        assert_eq!(
            t.conflicts,
            vec![(8080, ServiceName::new("zeta").expect("name"))]
        );
    }

    #[test]
    fn the_split_filters_generations_and_weights_them() {
        let mut tasks = vec![
            task("web", 0, "a", TaskState::Running, TaskHealth::None),
            task("web", 1, "b", TaskState::Running, TaskHealth::None),
            task("web", 2, "c", TaskState::Running, TaskHealth::None),
            task("web", 3, "a", TaskState::Running, TaskHealth::None),
        ];
        tasks[3].generation = 2;
        let svc = [service("web", 8080, false)];
        let name = ServiceName::new("web").expect("name");
        let split = |split: RolloutSplit| TrafficSplit {
            services: [(name.clone(), split)].into(),
        };
        // Blue/green after its switch: generation 2 alone; before it: all but generation 2.
        assert_eq!(
            slots(&table(&svc, &tasks, &split(RolloutSplit::Only(2))), 8080),
            vec![3]
        );
        assert_eq!(
            slots(&table(&svc, &tasks, &split(RolloutSplit::AllBut(2))), 8080),
            vec![0, 1, 2]
        );
        // A side without an eligible task leaves everything to the other.
        assert_eq!(
            slots(&table(&svc, &tasks, &split(RolloutSplit::Only(7))), 8080),
            vec![0, 1, 2, 3]
        );
        // Canary: generation 2 at 25 %, 1 at 75 % over its three tasks.
        let canary = split(RolloutSplit::Weighted {
            generation: 2,
            percent: 25,
        });
        let t = table(&svc, &tasks, &canary);
        let backends = &t.routes[&8080].backends;
        let mut picker = WeightedPicker::new(backends.iter().map(|b| b.weight));
        let picks = 10_000;
        let mut new_gen = 0u32;
        for _ in 0..picks {
            let i = picker.pick().expect("a backend");
            if backends[i].generation == 2 {
                new_gen += 1;
            }
        }
        // Smooth weighted round-robin is exact over every run of sum(weights) picks (here
        // 3 * 250 + 250 = 1000): 10,000 picks are ten whole runs, so exactly 25 %.
        assert_eq!(new_gen, 2_500);
        // No split: every task weighs the same (generation 2 gets 1 of 4 tasks' share).
        let even = table(&svc, &tasks, &TrafficSplit::even());
        assert!(even.routes[&8080]
            .backends
            .iter()
            .all(|b| b.weight == WEIGHT_SCALE));
    }

    #[test]
    fn weighted_picks_follow_weights_interleaved() {
        let mut picker = WeightedPicker::new([5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| picker.pick().expect("pick")).collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        // Over many picks with uneven weights: every whole run of sum(weights) = 23 picks is
        // exact, so after 400 runs and 11 more picks a backend of weight w is off its exact
        // share by less than w (it got between 0 and w of the last 11).
        let weights = [7u32, 3, 0, 13];
        let mut picker = WeightedPicker::new(weights);
        let n = 23 * 400 + 11;
        let mut counts = [0u32; 4];
        for _ in 0..n {
            counts[picker.pick().expect("pick")] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let exact = f64::from(n) * f64::from(*w) / 23.0;
            assert!(
                (f64::from(counts[i]) - exact).abs() <= f64::from(*w),
                "backend {i}: {} picks, exact {exact}",
                counts[i]
            );
        }
        assert_eq!(counts[2], 0);
        assert_eq!(WeightedPicker::new([0, 0]).pick(), None);
        assert_eq!(WeightedPicker::new([]).pick(), None);
    }

    #[test]
    fn a_second_service_may_not_take_an_ingress_port() {
        let web = service("web", 8080, false);
        let other = service("other", 8080, false);
        let name = ServiceName::new("other").expect("name");
        assert_eq!(
            ingress_port_taken([&web], &name, &other.spec),
            Some((8080, web.name.clone()))
        );
        // Nor a fixed host port equal to it; its own update is fine.
        let mut host = other.spec.clone();
        host.ports[0].mode = PublishMode::Host;
        assert!(ingress_port_taken([&web], &name, &host).is_some());
        assert_eq!(ingress_port_taken([&web], &web.name, &web.spec), None);
        // Two host-mode services on one fixed port are the engine's business, as before.
        let mut host_web = web.clone();
        host_web.spec.ports[0].mode = PublishMode::Host;
        assert_eq!(ingress_port_taken([&host_web], &name, &host), None);
    }
}
