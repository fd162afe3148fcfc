//! The scheduler: a pure function from (services, members, liveness, assignments, lease) to the
//! assignments to write and to remove (DESIGN §5). Only the lease holder runs it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use warren_crdt::{Assignment, Lease, Member, MemberState, NodeId, Service, ServiceName, SlotId};

/// What a node offers to reservations: its CPUs and memory, read from the system and
/// reported in its heartbeats (soft state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capacity {
    /// CPUs in billionths (2 CPUs = 2,000,000,000), as Docker's `NanoCpus`.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// One scheduling round: assignments to write and slots to clear, and why the slots that got
/// no node are pending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// New or moved assignments, each made under the holder's lease.
    pub put: Vec<(SlotId, Assignment)>,
    /// Slots of deleted services or beyond the replica count.
    pub remove: Vec<SlotId>,
    /// Slots left without a node this round, with the reason in words (e.g. `no node with
    /// 2 GiB free memory`). Nothing is written for them.
    pub pending: Vec<(SlotId, String)>,
}

impl Plan {
    /// Nothing to write (pending slots write nothing).
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }
}

/// `bytes` for people: `2 GiB`, `1.5 GiB`, `256 MiB`, `512 KiB`, `100 B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let tenths = (u128::from(bytes) * 10 / u128::from(size)) as u64;
            return if tenths % 10 == 0 {
                format!("{} {unit}", tenths / 10)
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes} B")
}

/// Nano-CPUs for people: `2 CPUs`, `0.5 CPUs`, `1 CPU`.
pub fn format_cpus(nano: u64) -> String {
    let text = format!("{:.3}", nano as f64 / 1e9);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "1" {
        "1 CPU".to_string()
    } else {
        format!("{text} CPUs")
    }
}

/// Plans one round.
///
/// - A slot keeps its node while that node is an active, live member and the assignment is
///   for the service's current generation (no churn for healthy placements).
/// - A slot without a usable node goes to the eligible node with the fewest slots of the same
///   service, then the fewest slots overall, then the lowest id (spread, deterministic).
/// - Slots of deleted services and slots `>= replicas` are removed.
/// - With no eligible node a slot stays unassigned (pending) until one appears.
///
/// No capacity is known, so nothing limits reservations: [`plan_with_capacity`] with an empty
/// map.
pub fn plan(
    services: &BTreeMap<ServiceName, Service>,
    members: &BTreeMap<NodeId, Member>,
    live: &BTreeSet<NodeId>,
    assignments: &BTreeMap<SlotId, Assignment>,
    lease: &Lease,
) -> Plan {
    plan_with_capacity(
        services,
        members,
        live,
        assignments,
        lease,
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
}

/// A slot's reservation: its service's CPU and memory limits (0 where none).
pub fn reservation(service: &Service) -> Capacity {
    Capacity {
        nano_cpus: service.spec.resources.nano_cpus.unwrap_or(0),
        memory_bytes: service.spec.resources.memory_bytes.unwrap_or(0),
    }
}

/// Plans one round as [`plan`] does, and never over-commits a node: a task reserves its
/// service's `--cpus` and `--memory`, and a slot goes only to a node whose `capacity` minus
/// the reservations of the slots it keeps or gets this round still holds it. A node whose
/// capacity is unknown (an older peer, no heartbeat yet) takes any reservation. A slot no node
/// can hold stays pending, with the reason in [`Plan::pending`].
///
/// `unrunnable` holds, per slot, the nodes that reported the slot's task `failed` (out of
/// restart attempts) for the service's current spec: such a slot moves to another eligible
/// node, and is never placed on one of those nodes while another is eligible. With no other
/// node it stays where it is (moving it back and forth would gain nothing).
pub fn plan_with_capacity(
    services: &BTreeMap<ServiceName, Service>,
    members: &BTreeMap<NodeId, Member>,
    live: &BTreeSet<NodeId>,
    assignments: &BTreeMap<SlotId, Assignment>,
    lease: &Lease,
    capacity: &BTreeMap<NodeId, Capacity>,
    unrunnable: &BTreeMap<SlotId, BTreeSet<NodeId>>,
) -> Plan {
    let eligible: Vec<&NodeId> = members
        .values()
        .filter(|m| m.state == MemberState::Active && live.contains(&m.id))
        .map(|m| &m.id)
        .collect();
    let avoided = |slot: &SlotId, n: &NodeId| unrunnable.get(slot).is_some_and(|s| s.contains(n));
    let elsewhere = |slot: &SlotId| eligible.iter().any(|n| !avoided(slot, n));
    let mut plan = Plan::default();

    // Slots that stay where they are count towards each node's load.
    let mut total: BTreeMap<&NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    let mut per_service: BTreeMap<(&ServiceName, &NodeId), usize> = BTreeMap::new();
    let keeps = |slot: &SlotId, a: &Assignment| -> bool {
        services.get(&slot.service).is_some_and(|s| {
            !s.deleted
                && slot.slot < s.spec.replicas
                && a.spec_generation == s.generation
                && eligible.contains(&&a.node)
                && !(avoided(slot, &a.node) && elsewhere(slot))
        })
    };
    let mut reserved: BTreeMap<&NodeId, Capacity> = BTreeMap::new();
    fn reserve<'a>(
        reserved: &mut BTreeMap<&'a NodeId, Capacity>,
        node: &'a NodeId,
        want: Capacity,
    ) {
        let r = reserved.entry(node).or_default();
        r.nano_cpus = r.nano_cpus.saturating_add(want.nano_cpus);
        r.memory_bytes = r.memory_bytes.saturating_add(want.memory_bytes);
    }
    for (slot, a) in assignments {
        if keeps(slot, a) {
            *total.entry(&a.node).or_default() += 1;
            *per_service.entry((&slot.service, &a.node)).or_default() += 1;
            if let Some(s) = services.get(&slot.service) {
                reserve(&mut reserved, &a.node, reservation(s));
            }
        }
    }

    for slot in assignments.keys() {
        let live_service = services
            .get(&slot.service)
            .filter(|s| !s.deleted && slot.slot < s.spec.replicas);
        if live_service.is_none() {
            plan.remove.push(slot.clone());
        }
    }

    for (name, service) in services.iter().filter(|(_, s)| !s.deleted) {
        for index in 0..service.spec.replicas {
            let slot = SlotId {
                service: name.clone(),
                slot: index,
            };
            if assignments.get(&slot).is_some_and(|a| keeps(&slot, a)) {
                continue;
            }
            let want = reservation(service);
            let free = |n: &NodeId| -> Option<Capacity> {
                let cap = capacity.get(n)?;
                let used = reserved.get(n).copied().unwrap_or_default();
                Some(Capacity {
                    nano_cpus: cap.nano_cpus.saturating_sub(used.nano_cpus),
                    memory_bytes: cap.memory_bytes.saturating_sub(used.memory_bytes),
                })
            };
            let fits = |n: &NodeId| {
                free(n).is_none_or(|f| {
                    f.nano_cpus >= want.nano_cpus && f.memory_bytes >= want.memory_bytes
                })
            };
            let Some(node) = eligible
                .iter()
                .copied()
                .filter(|n| fits(n) && !(avoided(&slot, n) && elsewhere(&slot)))
                .min_by_key(|n| {
                    (
                        per_service.get(&(name, *n)).copied().unwrap_or(0),
                        total.get(*n).copied().unwrap_or(0),
                        *n,
                    )
                })
            else {
                let reason = if eligible.is_empty() {
                    "no live member to run it".to_string()
                } else {
                    let frees: Vec<Capacity> = eligible.iter().filter_map(|n| free(n)).collect();
                    let memory_short = frees.iter().all(|f| f.memory_bytes < want.memory_bytes);
                    let cpu_short = frees.iter().all(|f| f.nano_cpus < want.nano_cpus);
                    match (memory_short, cpu_short) {
                        (true, false) => format!(
                            "no node with {} free memory",
                            format_bytes(want.memory_bytes)
                        ),
                        (false, true) => {
                            format!("no node with {} free", format_cpus(want.nano_cpus))
                        }
                        _ => format!(
                            "no node with {} free memory and {} free",
                            format_bytes(want.memory_bytes),
                            format_cpus(want.nano_cpus)
                        ),
                    }
                };
                // An assignment made for an older spec must not run the new one on a node
                // that cannot hold it: clear it (the slot waits, visibly).
                if assignments
                    .get(&slot)
                    .is_some_and(|a| a.spec_generation != service.generation)
                    && !eligible.is_empty()
                {
                    plan.remove.push(slot.clone());
                }
                plan.pending.push((slot, reason));
                continue;
            };
            *total.entry(node).or_default() += 1;
            *per_service.entry((name, node)).or_default() += 1;
            reserve(&mut reserved, node, want);
            plan.put.push((
                slot,
                Assignment {
                    node: node.clone(),
                    epoch: lease.epoch,
                    holder: lease.holder.clone(),
                    spec_generation: service.generation,
                },
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{Epoch, ServiceSpec};

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn member(s: &str) -> (NodeId, Member) {
        (
            id(s),
            Member {
                id: id(s),
                name: s.into(),
                addrs: vec![],
                labels: Default::default(),
                admitted_by: id(s),
                admitted_at: 0,
                state: MemberState::Active,
            },
        )
    }

    fn service(name: &str, replicas: u32) -> (ServiceName, Service) {
        let n = ServiceName::new(name).expect("name");
        (
            n.clone(),
            Service {
                name: n,
                generation: 1,
                deleted: false,
                previous_spec: None,
                spec: ServiceSpec {
                    image: "img".into(),
                    replicas,
                    command: vec![],
                    env: Default::default(),
                    ports: vec![],
                    secrets: Vec::new(),
                    ..Default::default()
                },
            },
        )
    }

    fn lease() -> Lease {
        Lease {
            epoch: Epoch(2),
            holder: id("a"),
        }
    }

    fn apply(assignments: &mut BTreeMap<SlotId, Assignment>, plan: &Plan) {
        for slot in &plan.remove {
            assignments.remove(slot);
        }
        for (slot, a) in &plan.put {
            assignments.insert(slot.clone(), a.clone());
        }
    }

    #[test]
    fn a_slot_that_failed_on_its_node_moves_unless_it_failed_everywhere() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services: BTreeMap<_, _> = [service("web", 1)].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        let first_round = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first_round);
        let slot = assignments.keys().next().expect("placed").clone();
        let first = assignments[&slot].node.clone();
        let failed = |nodes: &[&NodeId]| -> BTreeMap<SlotId, BTreeSet<NodeId>> {
            [(slot.clone(), nodes.iter().map(|n| (*n).clone()).collect())].into()
        };
        let none = BTreeMap::new();
        let p = |unrunnable: &BTreeMap<SlotId, BTreeSet<NodeId>>,
                 assignments: &BTreeMap<SlotId, Assignment>| {
            plan_with_capacity(
                &services,
                &members,
                &all,
                assignments,
                &lease(),
                &none,
                unrunnable,
            )
        };
        // Failed on its node: it moves, to a node it has not failed on.
        let moved = p(&failed(&[&first]), &assignments);
        assert_eq!(moved.put.len(), 1, "{moved:?}");
        let second = moved.put[0].1.node.clone();
        assert_ne!(second, first);
        apply(&mut assignments, &moved);
        // Failed there too: the third node.
        let moved = p(&failed(&[&first, &second]), &assignments);
        let third = moved.put[0].1.node.clone();
        assert!(third != first && third != second, "{moved:?}");
        apply(&mut assignments, &moved);
        // Failed everywhere: it stays where it is rather than bounce.
        assert!(p(&failed(&[&first, &second, &third]), &assignments).is_empty());
        // A report of another slot changes nothing.
        let other = SlotId {
            service: slot.service.clone(),
            slot: 7,
        };
        let unrelated: BTreeMap<_, _> = [(other, [third.clone()].into())].into();
        assert!(p(&unrelated, &assignments).is_empty());
    }

    #[test]
    fn spreads_replicas_then_keeps_them_and_moves_only_lost_ones() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services: BTreeMap<_, _> = [service("web", 3)].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        let p = plan(&services, &members, &all, &assignments, &lease());
        let nodes: BTreeSet<_> = p.put.iter().map(|(_, a)| a.node.clone()).collect();
        assert_eq!(nodes, all, "one replica per node");
        assert!(p.put.iter().all(|(_, a)| a.epoch == Epoch(2)));
        apply(&mut assignments, &p);
        assert!(plan(&services, &members, &all, &assignments, &lease()).is_empty());

        // "c" goes down: only its slot moves.
        let live: BTreeSet<_> = [id("a"), id("b")].into();
        let p = plan(&services, &members, &live, &assignments, &lease());
        assert_eq!(p.put.len(), 1);
        assert!(p.remove.is_empty());
        assert_ne!(p.put[0].1.node, id("c"));
    }

    #[test]
    fn scale_down_and_delete_remove_slots() {
        let members: BTreeMap<_, _> = [member("a"), member("b")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut services: BTreeMap<_, _> = [service("web", 3)].into();
        let mut assignments = BTreeMap::new();
        let p = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &p);
        assert_eq!(assignments.len(), 3);
        services.insert(service("web", 1).0, service("web", 1).1);
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 2);
        apply(&mut assignments, &p);
        assert_eq!(assignments.len(), 1);
        if let Some(s) = services.values_mut().next() {
            s.deleted = true;
        }
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 1);
    }

    fn limited(
        name: &str,
        replicas: u32,
        cpus: Option<u64>,
        memory: Option<u64>,
    ) -> (ServiceName, Service) {
        let (n, mut s) = service(name, replicas);
        s.spec.resources = warren_crdt::Resources {
            nano_cpus: cpus,
            memory_bytes: memory,
        };
        (n, s)
    }

    #[test]
    fn reservations_never_over_commit_a_node_and_say_why_a_slot_waits() {
        const GIB: u64 = 1 << 30;
        let members: BTreeMap<_, _> = [member("a"), member("b")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let capacity: BTreeMap<_, _> = [
            (
                id("a"),
                Capacity {
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 4 * GIB,
                },
            ),
            (
                id("b"),
                Capacity {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 2 * GIB,
                },
            ),
        ]
        .into();
        // 3 × 2 GiB: a takes two, b one; nothing is left for a fourth.
        let services: BTreeMap<_, _> = [limited("db", 4, None, Some(2 * GIB))].into();
        let mut assignments = BTreeMap::new();
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &assignments,
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        let on = |node: &str| p.put.iter().filter(|(_, a)| a.node == id(node)).count();
        assert_eq!((on("a"), on("b")), (2, 1), "{p:?}");
        assert_eq!(p.pending.len(), 1);
        assert_eq!(p.pending[0].1, "no node with 2 GiB free memory");
        apply(&mut assignments, &p);
        // Next round: the placed slots keep their reservations, the fourth still waits.
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &assignments,
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert!(p.is_empty());
        assert_eq!(p.pending.len(), 1);

        // CPUs: 3 CPUs fit only on b; a second such task fits nowhere.
        let services: BTreeMap<_, _> = [limited("calc", 2, Some(3_000_000_000), None)].into();
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &BTreeMap::new(),
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert_eq!(p.put.len(), 1);
        assert_eq!(p.put[0].1.node, id("b"));
        assert_eq!(p.pending[0].1, "no node with 3 CPUs free");

        // A spec change that no longer fits clears the old assignment: the slot waits.
        let small: BTreeMap<_, _> = [limited("calc", 1, Some(1_000_000_000), None)].into();
        let mut placed = BTreeMap::new();
        apply(
            &mut placed,
            &plan_with_capacity(
                &small,
                &members,
                &all,
                &BTreeMap::new(),
                &lease(),
                &capacity,
                &BTreeMap::new(),
            ),
        );
        let mut big: BTreeMap<_, _> = [limited("calc", 1, Some(8_000_000_000), None)].into();
        if let Some(s) = big.values_mut().next() {
            s.generation = 2;
        }
        let p = plan_with_capacity(
            &big,
            &members,
            &all,
            &placed,
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert_eq!(p.remove.len(), 1, "{p:?}");
        assert_eq!(p.pending[0].1, "no node with 8 CPUs free");

        // Without a known capacity a node takes anything (an older peer).
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &BTreeMap::new(),
            &lease(),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!((p.put.len(), p.pending.len()), (2, 0));
        // Without a limit, a service reserves nothing.
        let services: BTreeMap<_, _> = [service("web", 10)].into();
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &BTreeMap::new(),
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert_eq!((p.put.len(), p.pending.len()), (10, 0));
    }

    #[test]
    fn sizes_and_cpus_read_well() {
        assert_eq!(format_bytes(2 << 30), "2 GiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes(100), "100 B");
        assert_eq!(format_cpus(500_000_000), "0.5 CPUs");
        assert_eq!(format_cpus(1_000_000_000), "1 CPU");
        assert_eq!(format_cpus(2_000_000_000), "2 CPUs");
    }

    #[test]
    fn no_live_node_leaves_slots_pending() {
        let members: BTreeMap<_, _> = [member("a")].into();
        let services: BTreeMap<_, _> = [service("web", 2)].into();
        let p = plan(
            &services,
            &members,
            &BTreeSet::new(),
            &BTreeMap::new(),
            &lease(),
        );
        assert!(p.is_empty());
    }
}
