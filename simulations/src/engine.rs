//! The discrete-event engine: virtual clock, event queue, nodes, containers, checks.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warren_core::core::{
    round_statuses, ActualTask, ActualTaskState, ClusterView, DesiredTask, LeaseDecision, Millis,
    PlumMessage, RuntimeAction, Supervisor, TaskHealth,
};
use warren_core::invariants::{self, LeaseSeen, RunningCopy};
use warren_core::machine::{Channel, NodeMachine, Output, Write};
use warren_core::patch::{DeployPatch, DeployStrategy, PolicyPatch, ServicePatch};
use warren_core::protocol::{Direct, TaskState};
use warren_crdt::{
    ClusterInfo, DesiredState, HealthCheck, HealthProbe, Lease, Member, MemberState, NodeId,
    RestartCondition, RestartPolicy, ServiceName, ServiceSpec, SlotId,
};

use crate::net::{mix, Network};
use crate::report::{HealFigures, Report};
use crate::scenario::{Failure, Params, Scenario, Step, Target, WriteKind};

/// A rule of the simulator broken on purpose, to show that the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// None: the simulator follows every rule.
    #[default]
    None,
    /// The driver acknowledges a write before carrying out its flushing persist and defers the
    /// machine's outputs to the node's next event (a lazy writer). A crash right after the
    /// write loses an acknowledged write.
    AckBeforePersist,
    /// The transport drops every sync request: anti-entropy, and so the merge after a heal,
    /// never happens.
    DropSync,
}

fn zero_clock() -> i64 {
    0
}

/// An FNV-1a digest of bytes.
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[derive(Debug)]
enum Ev {
    Step(usize),
    Tick {
        node: usize,
        inc: u32,
        /// Which arming of the node's timer this is: an earlier deadline re-arms it, and the
        /// superseded tick is dropped.
        seq: u64,
    },
    Reconcile {
        node: usize,
        inc: u32,
    },
    Gossip {
        to: usize,
        from: usize,
        /// The node that published it (gossipsub's verified source).
        author: usize,
        channel: Channel,
        id: u64,
        data: Rc<[u8]>,
        digest: u64,
    },
    SyncReq {
        to: usize,
        from: usize,
        from_inc: u32,
        body: Vec<u8>,
        sent: u64,
    },
    /// A direct message (SWIM, a report, a request for reports): the mesh's unicast over a
    /// reliable stream; lost when the peer is unreachable or down.
    Direct {
        to: usize,
        from: usize,
        data: Vec<u8>,
    },
    SyncResp {
        to: usize,
        from: usize,
        to_inc: u32,
        result: Result<Vec<u8>, String>,
    },
    SyncFail {
        to: usize,
        peer: usize,
        to_inc: u32,
    },
    Connected {
        node: usize,
        peer: usize,
        inc: u32,
    },
    Probe,
    /// The failover check, every [`FAILOVER_PROBE_MS`] while a leader crash is tracked.
    FailoverProbe,
}

/// Resolution of the failover figure (virtual ms): finer than the invariant probe, and only
/// while a leader crash is being followed, so it costs nothing otherwise.
pub(crate) const FAILOVER_PROBE_MS: u64 = 50;

impl Ev {
    fn target(&self) -> Option<usize> {
        match self {
            Ev::Step(_) | Ev::Probe | Ev::FailoverProbe => None,
            Ev::Tick { node, .. } | Ev::Reconcile { node, .. } | Ev::Connected { node, .. } => {
                Some(*node)
            }
            Ev::Gossip { to, .. }
            | Ev::Direct { to, .. }
            | Ev::SyncReq { to, .. }
            | Ev::SyncResp { to, .. }
            | Ev::SyncFail { to, .. } => Some(*to),
        }
    }
}

struct Queued {
    t: u64,
    seq: u64,
    /// Already arrived at its node (it waits in the node's inbox): no second network check.
    arrived: bool,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

#[derive(Debug, Clone)]
struct Container {
    slot: SlotId,
    generation: u64,
    running: bool,
    /// When it was created, in virtual microseconds (its age is read on its node's clock).
    created_us: u64,
    /// When its current (or last) run began, in virtual microseconds: a health check's start
    /// period counts from here.
    started_us: u64,
    /// Its service has a health check: `starting` for [`HEALTH_START_US`] after each start,
    /// then `healthy` (or `unhealthy` on a failing node).
    checked: bool,
    /// Its service has a restart limit (`max_attempts`): the kind of service a failing node
    /// cannot run ([`Step::FailingNode`]).
    fragile: bool,
    /// On a failing node: when the current run fails (virtual µs), as the node's failure says.
    fails_at: Option<(u64, Failure)>,
    /// The engine's health verdict is `unhealthy` (its probes failed).
    unhealthy: bool,
    /// Exit code of its last run once it stopped: 137 when killed, 1 when it failed.
    exit_code: i64,
    /// The spec it runs (what an engine's container config holds): the final checks compare
    /// it with the document's ([`ServiceSpec::same_tasks`]).
    spec: Box<ServiceSpec>,
    /// Its image is one of the simulator's failing images ([`crate::UpdatePlan::failing`]):
    /// every run fails [`FAIL_AFTER_US`] after it starts, on any node.
    bad_image: bool,
}

impl Container {
    /// A container of `task` started at `now_us` on a node that fails fragile containers as
    /// `failing` says.
    fn new(task: &DesiredTask, now_us: u64, failing: Option<Failure>) -> Self {
        let mut c = Container {
            slot: task.slot.clone(),
            generation: task.generation,
            running: true,
            created_us: now_us,
            started_us: now_us,
            checked: task.spec.health.is_some(),
            fragile: task.spec.restart.max_attempts.is_some(),
            fails_at: None,
            unhealthy: false,
            exit_code: 0,
            spec: Box::new(task.spec.clone()),
            bad_image: task.spec.image.contains(BAD_IMAGE_TAG),
        };
        c.start(now_us, failing);
        c
    }

    /// (Re)starts the container at `now_us`.
    fn start(&mut self, now_us: u64, failing: Option<Failure>) {
        self.running = true;
        self.started_us = now_us;
        self.unhealthy = false;
        self.fails_at = if self.bad_image {
            Some((now_us + FAIL_AFTER_US, Failure::Unhealthy))
        } else {
            failing
                .filter(|_| self.fragile)
                .map(|f| (now_us + FAIL_AFTER_US, f))
        };
    }

    /// Its health as the engine would report it at `now_us`.
    fn health(&self, now_us: u64) -> TaskHealth {
        if !self.checked {
            TaskHealth::None
        } else if self.unhealthy {
            TaskHealth::Unhealthy
        } else if now_us < self.started_us + HEALTH_START_US {
            TaskHealth::Starting
        } else {
            TaskHealth::Healthy
        }
    }
}

/// How long a container with a health check reports `starting` after each start (virtual
/// µs): its check's start period and first probe.
const HEALTH_START_US: u64 = 1_000 * MS;

/// How long a fragile container runs on a failing node before it fails (virtual µs).
const FAIL_AFTER_US: u64 = 1_000 * MS;

/// The reasons the node's reconcile gives when a rollout replaces a slot's container
/// (`core/reconcile.rs`): stop-first removes the older generation's, start-first stops it
/// once the new one runs healthy.
const ROLLOUT_STOPS: [&str; 2] = [
    "container of an older service generation",
    "its slot's new generation runs healthy",
];

/// `--update-monitor` of the simulator's updates (ms): longer than a failing image's run
/// ([`FAIL_AFTER_US`]), so a failure shows within it.
const UPDATE_MONITOR_MS: u64 = 3_000;

/// The tag of the images whose containers fail wherever they run
/// ([`crate::UpdatePlan::failing`]): `warren/busybox:bad-<n>`.
const BAD_IMAGE_TAG: &str = ":bad-";

struct SimNode {
    id: NodeId,
    machine: Option<NodeMachine>,
    inc: u32,
    origin_us: u64,
    local_origin_ms: u64,
    rate_ppm: u64,
    busy_until: u64,
    paused_until: u64,
    /// Last time it crashed, restarted or was paused (autonomy and lease checks wait after it).
    disrupted_at: u64,
    chunks: Vec<Vec<u8>>,
    containers: BTreeMap<u64, Container>,
    /// Since [`Step::FailingNode`] picked it: how its fragile containers fail.
    failing: Option<Failure>,
    /// The daemon's reconcile decisions and restart counts (in memory: a restart forgets them).
    supervisor: Supervisor,
    next_container: u64,
    seen: HashSet<u64>,
    /// Per publisher, the newest gossip message seen (ids increase per publisher).
    gossip_seen: HashMap<usize, u64>,
    reconciled_heads: Vec<String>,
    /// Acknowledgements waiting for the flushing persist: indexes into `writes`.
    pending_ack: Vec<usize>,
    /// Outputs deferred by [`Fault::AckBeforePersist`].
    deferred: bool,
    /// The write whose change the next `Changes` publish carries.
    /// The heads at the last fencing check.
    fencing_heads: Vec<String>,
    /// The armed tick: its sequence number and virtual time (µs).
    tick_seq: u64,
    next_tick_us: u64,
}

impl SimNode {
    fn up(&self) -> bool {
        self.machine.is_some()
    }
}

/// An acknowledged (or attempted) write.
#[derive(Debug, Clone)]
struct WriteRecord {
    t: u64,
    node: usize,
    kind: &'static str,
    service: ServiceName,
    hash: Option<String>,
    acked: bool,
}

#[derive(Debug)]
struct ChangeTrack {
    t0: u64,
    reached: u32,
    last: u64,
    copies: u64,
}

#[derive(Debug)]
struct HealTrack {
    at: u64,
    leader: Option<u64>,
    converged: Option<u64>,
    replicas: Option<u64>,
    starts0: u64,
    stops0: u64,
    final_heal: bool,
    /// When the split this heal ends began.
    split_at: u64,
    /// Slots with a running copy on some up node at the heal, with the generation it ran.
    running: BTreeMap<SlotId, u64>,
    /// Per service, running copies beyond one per slot at the heal.
    duplicates: BTreeMap<ServiceName, u64>,
    /// Per service, containers started and running containers stopped in the window.
    starts: BTreeMap<ServiceName, u64>,
    stops: BTreeMap<ServiceName, u64>,
    /// Slots seen with no running copy in the window (invariant 6a).
    zero_windows: u64,
    /// Slots left with no running copy in the window, judged when the heal closes: `(slot,
    /// generation, node that stopped the last copy, what was seen)`.
    zero_pending: Vec<(SlotId, u64, usize, String)>,
    /// A partition (or another heal) came before the settle window ended.
    interrupted: bool,
    /// Slots with more than one running copy at the heal: the keep rule's disputes.
    disputes: BTreeMap<SlotId, Dispute>,
    /// Services with a rollout under way at the heal (`updating` in some up node's replica,
    /// or a generation the replicas disagree on): the rollout replaces their containers in
    /// the window, which is the operator's update carried out, not the heal's churn.
    rolling: BTreeSet<ServiceName>,
    /// Starts of containers of a failing image in the window: its crash loop (and the moves
    /// of its `failed` tasks), not the heal's churn.
    failing_starts: u64,
}

impl HealTrack {
    /// A container of `service` started in the window; `bad_image`: one of a failing image.
    fn count_start(&mut self, service: &ServiceName, bad_image: bool) {
        if bad_image {
            self.failing_starts += 1;
        } else {
            *self.starts.entry(service.clone()).or_default() += 1;
        }
    }
}

/// The running copies of one slot at a heal, when there was more than one: which one
/// survives is the heal's keep rule (invariant 6a, DESIGN §5).
#[derive(Debug)]
struct Dispute {
    copies: Vec<DisputedCopy>,
    /// A copy stopped by a crash (of the container or its node), or its node was paused: the
    /// rule no longer decides alone which copy survives, so the slot is not judged. Also set
    /// when the copies' health differed at the heal (health decides before age).
    void: bool,
    /// The survivor was checked.
    done: bool,
}

/// One running copy of a disputed slot at a heal.
#[derive(Debug)]
struct DisputedCopy {
    node: usize,
    container: u64,
    generation: u64,
    /// Virtual µs it was created (its age is read on its node's clock, as its node reports it).
    created_us: u64,
    /// Its health at the heal.
    health: TaskHealth,
    running: bool,
}

/// How much older (by its node's clock, in ms) a stopped copy of a disputed slot may be than
/// the copy that survives before the keep rule counts as broken. The rule compares whole
/// seconds (1 s), of ages the holder reads from reports up to a reconcile period (1 s) plus
/// a heartbeat period and a network delay (< 1 s) old: 3 s covers what the rule cannot see.
const KEEP_TOLERANCE_MS: u64 = 3_000;

/// An operator's write that makes running slots undesired: a scale down (the slots from the
/// new count up) or a delete (every slot); an update of the spec would touch every slot.
/// Invariant 6 exempts a node's stops of those slots from the moment the write's change is
/// in the node's replica until the end of the node's first reconcile with it and with no
/// scaled-away slot of the service still assigned in its view: that reconcile carries the
/// change out (a delete stops at once, a scale down once the holder removed the slots). Not the whole
/// service, not the whole run: a stop of another slot, or a later stop of a touched slot,
/// is the partition's doing and a violation.
#[derive(Debug)]
struct Touch {
    service: ServiceName,
    /// The first slot touched: slots `from_slot..` of `service`.
    from_slot: u32,
    /// The write (its change hash, once published).
    write: usize,
    /// Per node: it finished a reconcile with the change in its replica.
    rolled_out: Vec<bool>,
}

#[derive(Debug)]
struct FailoverTrack {
    at: u64,
    old: NodeId,
}

/// One simulation run. See the crate doc.
pub struct Simulation {
    scenario: Scenario,
    params: Params,
    seed: u64,
    fault: Fault,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    rng: StdRng,
    net: Network,
    nodes: Vec<SimNode>,
    groups: Vec<Vec<usize>>,
    /// Per pair `(i < j)`: since when the pair has been unreachable (`u64::MAX`: reachable).
    cut_since: Vec<u64>,
    last_topology: u64,
    last_heal: Option<u64>,
    next_message: u64,
    next_service: u64,
    trace: u64,
    writes: Vec<WriteRecord>,
    changes: BTreeMap<u64, ChangeTrack>,
    latencies_us: Vec<u64>,
    heal: Option<HealTrack>,
    heals: Vec<HealFigures>,
    failover: Option<FailoverTrack>,
    failovers_ms: Vec<u64>,
    started: u64,
    stopped: u64,
    /// Container runs failed on a failing node or of a failing image (see
    /// [`Report::containers_failed`]).
    failed: u64,
    /// Operators' writes that make running slots undesired, while they roll out: their stops
    /// are not the partition's doing (invariant 6).
    touches: Vec<Touch>,
    /// Probes at which the lease check (invariant 3) ran while the network was split.
    lease_checks_split: u64,
    /// Operators' updates written ([`WriteKind::Update`]): the rollout checks run once one is.
    updates: u64,
    /// Services' rollouts judged by the rollout invariants (issue 15), summed over probes.
    rollout_checks: u64,
    /// When each service was last written by an operator.
    written_at: BTreeMap<ServiceName, u64>,
    /// When the current (or last) split began.
    split_at: u64,
    violations: Vec<String>,
    events: u64,
    messages: u64,
    /// Direct messages delivered (SWIM, reports, requests for reports) and their bytes.
    direct_messages: u64,
    direct_bytes: u64,
    /// Gossip messages delivered (first copies: duplicates are dropped before): lease renewals.
    gossip_copies: u64,
    end_at: u64,
    done: bool,
    /// The founder's snapshot and a replica loaded from it once: a node that starts from
    /// exactly these bytes gets a [`DesiredState::fork`] of the replica instead of parsing
    /// them again (at 1,000 nodes, most of the start). `None` when the load failed (each
    /// node then loads, and reports, on its own).
    start_template: Option<(Vec<u8>, DesiredState)>,
}

const MS: u64 = 1_000;

impl Simulation {
    /// A simulation of `scenario` with `seed`, following every rule.
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        Self::with_fault(scenario, seed, Fault::None)
    }

    /// A simulation of `scenario` with `seed` that breaks `fault` on purpose.
    ///
    /// # Panics
    /// If the scenario has no node, or the founder document cannot be written (a bug).
    pub fn with_fault(scenario: Scenario, seed: u64, fault: Fault) -> Self {
        let n = scenario.nodes;
        assert!(n > 0, "a simulation needs at least one node");
        let params = scenario.params.clone();
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..n).map(|i| NodeId(format!("n{i:04}"))).collect();
        let member = |id: &NodeId| Member {
            id: id.clone(),
            name: id.to_string(),
            addrs: vec![],
            labels: ids
                .iter()
                .position(|i| i == id)
                .and_then(|i| scenario.labels.get(&i).cloned())
                .unwrap_or_default(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: ids[0].clone(),
            admitted_at: 0,
            state: MemberState::Active,
            availability: Default::default(),
        };
        let info = ClusterInfo {
            id: format!("sim-{seed}"),
            name: "sim".into(),
            created_at: 0,
        };
        let mut founder = deterministic_founder(&info, &member(&ids[0]), mix(seed ^ 0xF0));
        for id in &ids[1..] {
            founder.add_member(&member(id)).expect("member");
        }
        let snapshot = founder.save();
        let net = Network::new(params.net.clone(), n, seed, &mut rng);
        let mut sim = Self {
            params: params.clone(),
            seed,
            fault,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            net,
            nodes: Vec::with_capacity(n),
            groups: vec![(0..n).collect()],
            cut_since: vec![u64::MAX; n * n],
            last_topology: 0,
            last_heal: None,
            next_message: 0,
            next_service: 0,
            trace: 0xcbf2_9ce4_8422_2325,
            writes: Vec::new(),
            changes: BTreeMap::new(),
            latencies_us: Vec::new(),
            heal: None,
            heals: Vec::new(),
            failover: None,
            failovers_ms: Vec::new(),
            started: 0,
            stopped: 0,
            failed: 0,
            touches: Vec::new(),
            lease_checks_split: 0,
            updates: 0,
            rollout_checks: 0,
            written_at: BTreeMap::new(),
            split_at: 0,
            violations: Vec::new(),
            events: 0,
            messages: 0,
            direct_messages: 0,
            direct_bytes: 0,
            gossip_copies: 0,
            end_at: scenario.duration_ms * MS,
            done: false,
            start_template: None,
            scenario,
            rng,
        };
        if let Some(first) = ids.first() {
            let mut template = DesiredState::empty(first.clone());
            if template.load_incremental(&snapshot).is_ok() {
                sim.start_template = Some((snapshot.clone(), template));
            }
        }
        for id in ids {
            let rate_ppm = if params.clock_drift > 1.0 {
                let r = params.clock_drift.sqrt();
                (sim.rng.gen_range(1.0 / r..=r) * 1e6) as u64
            } else {
                1_000_000
            };
            sim.nodes.push(SimNode {
                id,
                machine: None,
                inc: 0,
                origin_us: 0,
                local_origin_ms: 0,
                rate_ppm,
                busy_until: 0,
                paused_until: 0,
                disrupted_at: 0,
                chunks: vec![snapshot.clone()],
                containers: BTreeMap::new(),
                failing: None,
                supervisor: Supervisor::new(),
                next_container: 0,
                seen: HashSet::new(),
                gossip_seen: HashMap::new(),
                reconciled_heads: Vec::new(),
                pending_ack: Vec::new(),
                deferred: false,
                fencing_heads: Vec::new(),
                tick_seq: 0,
                next_tick_us: u64::MAX,
            });
        }
        for i in 0..n {
            sim.start_process(i);
        }
        for (k, (t, _)) in sim.scenario.steps.iter().enumerate() {
            let (t, seq) = (*t * MS, sim.seq);
            sim.seq += 1;
            sim.queue.push(Queued {
                t,
                seq,
                arrived: false,
                ev: Ev::Step(k),
            });
        }
        let probe = params.probe_ms * MS;
        sim.push(probe, Ev::Probe);
        sim
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.push_q(t, false, ev);
    }

    fn push_q(&mut self, t: u64, arrived: bool, ev: Ev) {
        let seq = self.seq;
        self.seq += 1;
        self.queue.push(Queued {
            t,
            seq,
            arrived,
            ev,
        });
    }

    fn record(&mut self, kind: u64, node: usize, d: u64) {
        for x in [self.now, kind, node as u64, d] {
            self.trace ^= x;
            self.trace = self.trace.wrapping_mul(0x0100_0000_01b3);
            self.trace = mix(self.trace);
        }
    }

    fn local_now(&self, i: usize) -> Millis {
        let n = &self.nodes[i];
        let elapsed = self.now.saturating_sub(n.origin_us);
        Millis(n.local_origin_ms + elapsed * n.rate_ppm / 1_000_000 / MS)
    }

    /// Real microseconds for `ms` milliseconds of node `i`'s clock.
    fn local_span_us(&self, i: usize, ms: u64) -> u64 {
        (ms * MS * 1_000_000 / self.nodes[i].rate_ppm).max(1)
    }

    /// Starts (or restarts) node `i`'s process from its persisted chunks.
    fn start_process(&mut self, i: usize) {
        let seed = self.seed;
        let node = &mut self.nodes[i];
        let mut state = match &self.start_template {
            Some((bytes, template)) if node.chunks.len() == 1 && node.chunks[0] == *bytes => {
                template.fork(node.id.clone())
            }
            _ => {
                let mut state = DesiredState::empty(node.id.clone());
                for chunk in &node.chunks {
                    if let Err(e) = state.load_incremental(chunk) {
                        self.violations.push(format!(
                            "t={} node {i}: persisted chunk does not load: {e}",
                            fmt_t(self.now)
                        ));
                    }
                }
                state
            }
        };
        state.mark_persisted();
        let suffix = mix(seed ^ mix((i as u64) << 32 | u64::from(node.inc)));
        state.set_actor_suffix(suffix.to_le_bytes());
        state.set_clock(zero_clock);
        let local_origin_ms = if node.inc == 0 {
            0
        } else {
            self.rng.gen_range(0..1_000_000_000)
        };
        let node = &mut self.nodes[i];
        node.local_origin_ms = local_origin_ms;
        node.origin_us = self.now;
        node.busy_until = self.now;
        node.seen.clear();
        node.supervisor = Supervisor::new();
        node.reconciled_heads.clear();
        node.pending_ack.clear();
        node.deferred = false;
        node.fencing_heads.clear();
        let mut config = self.params.machine;
        config.core.tick_ms = self.params.tick_ms;
        let mut machine = NodeMachine::new(
            node.id.clone(),
            node.id.to_string(),
            format!("sim://{}", node.id),
            state,
            config,
            Millis(local_origin_ms),
            mix(suffix ^ 0xAB),
        );
        // Token secrets and data keys from the seed too, so a run replays exactly whatever
        // it writes (never a daemon's choice: a known seed makes every secret guessable).
        machine.set_secure_rng(Box::new(StdRng::seed_from_u64(mix(suffix ^ 0x5EC))));
        node.machine = Some(machine);
        let inc = node.inc;
        let first_tick = self.now + self.rng.gen_range(0..self.params.tick_ms * MS);
        let node = &mut self.nodes[i];
        node.tick_seq += 1;
        node.next_tick_us = first_tick;
        let seq = node.tick_seq;
        self.push(first_tick, Ev::Tick { node: i, inc, seq });
        let first_rec = self.rng.gen_range(0..self.params.reconcile_ms * MS);
        self.push(self.now + first_rec, Ev::Reconcile { node: i, inc });
    }

    /// Runs the schedule, the final heal and settle, and the final checks.
    pub fn run(mut self) -> Report {
        let wall = std::time::Instant::now();
        while let Some(q) = self.queue.pop() {
            if q.t > self.end_at && !self.done {
                self.now = self.end_at;
                self.final_heal();
                self.push_q(q.t, q.arrived, q.ev);
                continue;
            }
            if self.done && q.t > self.end_at {
                self.now = self.end_at;
                break;
            }
            self.now = q.t;
            let target = q.ev.target();
            self.handle(q);
            if let Some(i) = target {
                self.arm_tick(i);
            }
        }
        self.final_checks();
        if std::env::var_os("WARREN_SIM_DUMP").is_some() {
            self.dump();
        }
        let wall_secs = wall.elapsed().as_secs_f64();
        self.report(wall_secs)
    }

    /// Prints each node's view at the end (`WARREN_SIM_DUMP=1`): liveness of every peer, its
    /// lease decision, what it runs. A debugging aid; nothing reads it.
    fn dump(&mut self) {
        for i in 0..self.nodes.len() {
            let now = self.local_now(i);
            let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id.clone()).collect();
            let running = self.nodes[i]
                .containers
                .values()
                .filter(|c| c.running)
                .count();
            let containers: Vec<String> = self.nodes[i]
                .containers
                .values()
                .map(|c| {
                    format!(
                        "{}/{}@{} {}",
                        c.slot.service, c.slot.slot, c.generation, c.running
                    )
                })
                .collect();
            eprintln!("n{i} containers {containers:?}");
            let Some(m) = self.nodes[i].machine.as_mut() else {
                eprintln!("n{i}: down");
                continue;
            };
            let view = m.view();
            for s in view.services.values().filter(|s| s.rollout.is_some()) {
                let slots: Vec<String> = view
                    .assignments
                    .iter()
                    .filter(|(slot, _)| slot.service == s.name)
                    .map(|(slot, a)| format!("{}@{}", slot.slot, a.spec_generation))
                    .collect();
                eprintln!(
                    "n{i} {} generation {} rollout {:?} slots {slots:?}",
                    s.name, s.generation, s.rollout
                );
            }
            let live: Vec<String> = ids
                .iter()
                .map(|p| format!("{:?}", m.liveness(p, now)))
                .collect();
            let (eager, lazy) = m.broadcast_tree().neighbours();
            eprintln!(
                "n{i} tree eager {} lazy {} {:?}",
                eager.len(),
                lazy.len(),
                m.broadcast_tree().stats()
            );
            let decision = m.lease_decision().cloned();
            let assigned = m.view().assignments.len();
            let me = m.id().clone();
            let mine: Vec<String> = m
                .view()
                .assignments
                .iter()
                .filter(|(_, a)| a.node == me)
                .map(|(s, a)| format!("{}/{}@{}", s.service, s.slot, a.spec_generation))
                .collect();
            let awaiting = m.awaiting_slots(now);
            let held: Vec<String> = m
                .held_slots(now)
                .iter()
                .map(|(s, h)| format!("{}/{} {:?}", s.service, s.slot, h))
                .collect();
            let desired = m.desired(now);
            eprintln!(
                "n{i}: live {live:?} lease {decision:?} assignments {assigned} running {running}\n  mine {mine:?}\n  awaiting {awaiting:?}\n  held {held:?}\n  desired {desired:?}"
            );
        }
    }

    fn final_heal(&mut self) {
        self.done = true;
        let t = self.now;
        if self.net.components() > 1 {
            self.apply_step(Step::Heal, true);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused_until > t {
                self.nodes[i].paused_until = t;
            }
            if !self.nodes[i].up() {
                self.restart(i);
            }
        }
        self.end_at = t + self.params.settle_ms * MS;
    }

    fn handle(&mut self, q: Queued) {
        if let Some(i) = q.ev.target() {
            if !self.nodes[i].up() {
                return self.undeliverable(q.ev);
            }
            let stale = match &q.ev {
                Ev::Tick { inc, seq, .. } => {
                    *inc != self.nodes[i].inc || *seq != self.nodes[i].tick_seq
                }
                Ev::Reconcile { inc, .. }
                | Ev::Connected { inc, .. }
                | Ev::SyncResp { to_inc: inc, .. }
                | Ev::SyncFail { to_inc: inc, .. } => *inc != self.nodes[i].inc,
                _ => false,
            };
            if stale {
                return;
            }
            if !q.arrived {
                let from = match &q.ev {
                    Ev::Gossip { from, .. }
                    | Ev::Direct { from, .. }
                    | Ev::SyncReq { from, .. }
                    | Ev::SyncResp { from, .. } => Some(*from),
                    _ => None,
                };
                if from.is_some_and(|f| !self.net.same_component(f, i)) {
                    return self.undeliverable(q.ev);
                }
            }
            let ready = self.nodes[i].busy_until.max(self.nodes[i].paused_until);
            if ready > self.now {
                return self.push_q(ready, true, q.ev);
            }
            if self.nodes[i].deferred {
                // Fault::AckBeforePersist: the lazy writer catches up at the next event.
                self.nodes[i].deferred = false;
                self.drain(i);
            }
        }
        self.events += 1;
        match q.ev {
            Ev::Step(k) => {
                let step = self.scenario.steps[k].1.clone();
                self.record(1, k, 0);
                self.apply_step(step, false);
            }
            Ev::Tick { node, .. } => self.tick(node),
            Ev::Reconcile { node, inc } => {
                self.record(3, node, 0);
                self.reconcile(node);
                let next = self.now + self.local_span_us(node, self.params.reconcile_ms);
                self.push(next, Ev::Reconcile { node, inc });
            }
            Ev::Gossip {
                to,
                from,
                author,
                channel,
                id,
                data,
                digest,
            } => self.gossip_in(to, from, author, channel, id, data, digest),
            Ev::Direct { to, from, data } => {
                self.record(4, to, digest(&data));
                self.direct_messages += 1;
                self.direct_bytes += data.len() as u64;
                self.nodes[to].busy_until = self.now + self.params.cost_direct_us;
                if let Some((id, _)) = plum_gossip(&data) {
                    if let Some(c) = self.changes.get_mut(&id) {
                        c.copies += 1;
                    }
                    if self.nodes[to].seen.insert(id) {
                        let done = self.now + self.params.cost_change_us;
                        self.nodes[to].busy_until = done;
                        if let Some(c) = self.changes.get_mut(&id) {
                            c.reached += 1;
                            c.last = c.last.max(done);
                            self.latencies_us.push(done - c.t0);
                        }
                    }
                }
                let now = self.local_now(to);
                let from_id = self.nodes[from].id.clone();
                if self.machine(to).handle_direct(&from_id, &data, now) {
                    self.tick_soon(to);
                }
                self.drain(to);
            }
            Ev::SyncReq {
                to,
                from,
                from_inc,
                body,
                sent,
            } => {
                self.record(6, to, digest(&body));
                let cost = self.params.cost_sync_us + body.len() as u64 / 100;
                self.nodes[to].busy_until = self.now + cost;
                let from_id = self.nodes[from].id.clone();
                let result = self
                    .machine(to)
                    .handle_sync_request(&from_id, &body)
                    .map_err(|e| e.to_string());
                self.drain(to);
                self.tick_soon(to);
                let t = self.now + cost + self.reliable_delay(to, from);
                let _ = sent;
                self.messages += 1;
                self.push(
                    t,
                    Ev::SyncResp {
                        to: from,
                        from: to,
                        to_inc: from_inc,
                        result,
                    },
                );
            }
            Ev::SyncResp {
                to, from, result, ..
            } => {
                let len = result.as_ref().map_or(0, Vec::len);
                self.record(7, to, result.as_ref().map_or(1, |b| digest(b)));
                self.nodes[to].busy_until = self.now + self.params.cost_sync_us + len as u64 / 100;
                let from_id = self.nodes[from].id.clone();
                self.machine(to).handle_sync_response(&from_id, result);
                self.drain(to);
                self.tick_soon(to);
            }
            Ev::SyncFail { to, peer, .. } => {
                self.record(8, to, peer as u64);
                let peer_id = self.nodes[peer].id.clone();
                self.machine(to)
                    .handle_sync_response(&peer_id, Err("request timed out".into()));
                self.drain(to);
            }
            Ev::Connected { node, peer, .. } => {
                self.record(9, node, peer as u64);
                let peer_id = self.nodes[peer].id.clone();
                let now = self.local_now(node);
                let m = self.machine(node);
                m.handle_disconnected(&peer_id);
                m.handle_connected(&peer_id, now);
                self.drain(node);
            }
            Ev::Probe => {
                self.probe();
                self.push(self.now + self.params.probe_ms * MS, Ev::Probe);
            }
            Ev::FailoverProbe => {
                self.check_failover();
                if self.failover.is_some() {
                    self.push(self.now + FAILOVER_PROBE_MS * MS, Ev::FailoverProbe);
                }
            }
        }
    }

    /// A message that cannot be delivered: a lost sync request or response ends in a timeout
    /// at the requester.
    fn undeliverable(&mut self, ev: Ev) {
        match ev {
            Ev::SyncReq {
                to,
                from,
                from_inc,
                sent,
                ..
            } => {
                let t = (sent + self.params.net.sync_timeout_ms * MS).max(self.now);
                self.push(
                    t,
                    Ev::SyncFail {
                        to: from,
                        peer: to,
                        to_inc: from_inc,
                    },
                );
            }
            Ev::SyncResp {
                to, from, to_inc, ..
            } => {
                // The request left at most one timeout ago: fail at the latest then.
                let t = self.now + self.params.net.sync_timeout_ms * MS / 2;
                self.push(
                    t,
                    Ev::SyncFail {
                        to,
                        peer: from,
                        to_inc,
                    },
                );
            }
            _ => {}
        }
    }

    fn machine(&mut self, i: usize) -> &mut NodeMachine {
        self.nodes[i]
            .machine
            .as_mut()
            .expect("events for a down node are dropped before this")
    }

    /// Node `i`'s next tick where its machine wants it ([`NodeMachine::poll_timeout`], as the
    /// daemon's actor sleeps until it), re-armed after every event of the node: an event
    /// that brings a deadline forward (a broadcast's announcement, a probe's timeout) gets
    /// its tick then, not at the next period. At least 1 ms after now.
    fn arm_tick(&mut self, i: usize) {
        let Some(machine) = self.nodes[i].machine.as_ref() else {
            return;
        };
        let due = machine.poll_timeout();
        let span_ms = due.0.saturating_sub(self.local_now(i).0).max(1);
        let at = self.now + self.local_span_us(i, span_ms);
        self.arm_tick_at(i, at);
    }

    /// Node `i` decides on an input at once (a write, changes merged, a sync message), as the
    /// daemon's actor brings its tick forward to now after one.
    fn tick_soon(&mut self, i: usize) {
        if self.nodes[i].up() {
            self.arm_tick_at(i, self.now + 1);
        }
    }

    fn arm_tick_at(&mut self, i: usize, at: u64) {
        let node = &mut self.nodes[i];
        if at < node.next_tick_us {
            node.tick_seq += 1;
            node.next_tick_us = at;
            let (inc, seq) = (node.inc, node.tick_seq);
            self.push(at, Ev::Tick { node: i, inc, seq });
        }
    }

    fn tick(&mut self, i: usize) {
        self.nodes[i].next_tick_us = u64::MAX;
        self.record(2, i, 0);
        let now = self.local_now(i);
        self.nodes[i].busy_until = self.now + self.params.cost_tick_us;
        self.machine(i).handle_tick(now);
        self.drain(i);
        let heads = self.machine(i).state_mut().heads();
        if self.params.reconcile_on_change && heads != self.nodes[i].reconciled_heads {
            self.reconcile(i);
        }
    }

    /// Carries out node `i`'s outputs.
    fn drain(&mut self, i: usize) {
        if self.nodes[i].deferred {
            return;
        }
        while let Some(out) = self.nodes[i].machine.as_mut().and_then(|m| m.poll_output()) {
            match out {
                Output::Persist { flush } => {
                    let node = &mut self.nodes[i];
                    let Some(m) = node.machine.as_mut() else {
                        return;
                    };
                    let chunk = m.state_mut().save_incremental();
                    if !chunk.is_empty() {
                        node.chunks.push(chunk);
                    }
                    if node.chunks.len() > warren_crdt::COMPACT_AFTER_CHUNKS {
                        let snapshot = m.state_mut().save();
                        m.state_mut().mark_persisted();
                        node.chunks = vec![snapshot];
                    }
                    if flush {
                        for w in std::mem::take(&mut node.pending_ack) {
                            self.writes[w].acked = true;
                        }
                    }
                }
                Output::Publish { channel, data } => self.publish(i, channel, data),
                Output::Send { to, data } => {
                    let Some(j) = self.index_of(&to) else {
                        continue;
                    };
                    if let Some((id, 0)) = plum_gossip(&data) {
                        // A change leaves its origin along the broadcast tree.
                        if !self.changes.contains_key(&id) {
                            self.record(12, i, id);
                            self.nodes[i].seen.insert(id);
                            let track = ChangeTrack {
                                t0: self.now,
                                reached: 0,
                                last: self.now,
                                copies: 0,
                            };
                            self.changes.insert(id, track);
                        }
                    }
                    self.messages += 1;
                    let t = self.nodes[i].busy_until.max(self.now) + self.reliable_delay(i, j);
                    self.push(
                        t,
                        Ev::Direct {
                            to: j,
                            from: i,
                            data,
                        },
                    );
                }
                Output::SyncRequest { to, body } => {
                    let Some(j) = self.index_of(&to) else {
                        continue;
                    };
                    self.messages += 1;
                    let sent = self.now;
                    let from_inc = self.nodes[i].inc;
                    if self.fault == Fault::DropSync {
                        self.undeliverable(Ev::SyncReq {
                            to: j,
                            from: i,
                            from_inc,
                            body,
                            sent,
                        });
                        continue;
                    }
                    let t = self.nodes[i].busy_until.max(self.now) + self.reliable_delay(i, j);
                    self.push(
                        t,
                        Ev::SyncReq {
                            to: j,
                            from: i,
                            from_inc,
                            body,
                            sent,
                        },
                    );
                }
                Output::SetMembers(members) => {
                    self.record(10, i, members.len() as u64);
                }
            }
        }
    }

    fn index_of(&self, id: &NodeId) -> Option<usize> {
        id.as_str()
            .strip_prefix('n')
            .and_then(|s| s.parse().ok())
            .filter(|&i: &usize| i < self.nodes.len())
    }

    /// A reliable stream's delay: lost packets cost retransmissions.
    fn reliable_delay(&mut self, a: usize, b: usize) -> u64 {
        let mut d = self.net.delay_us(a, b, &mut self.rng);
        while self.params.net.loss > 0.0 && self.rng.gen_bool(self.params.net.loss) {
            d += self.params.net.rto_ms * MS;
        }
        d
    }

    /// Sends one gossip copy from `a` to `b`: loss, duplication, delay.
    #[allow(clippy::too_many_arguments)]
    fn send_gossip(
        &mut self,
        a: usize,
        b: usize,
        author: usize,
        channel: Channel,
        id: u64,
        data: &Rc<[u8]>,
        d: u64,
    ) {
        let net = &self.params.net;
        if net.loss > 0.0 && self.rng.gen_bool(net.loss) {
            return;
        }
        let copies = if net.duplicate > 0.0 && self.rng.gen_bool(net.duplicate) {
            2
        } else {
            1
        };
        let start = self.nodes[a].busy_until.max(self.now);
        for _ in 0..copies {
            self.messages += 1;
            let t = start + self.net.delay_us(a, b, &mut self.rng);
            self.push(
                t,
                Ev::Gossip {
                    to: b,
                    from: a,
                    author,
                    channel,
                    id,
                    data: Rc::clone(data),
                    digest: d,
                },
            );
        }
    }

    /// Gossips `data` from node `i` on `channel` over the gossip mesh. The machine gossips
    /// only lease renewals (changes go along its broadcast tree, as direct messages); the
    /// model is the same for any channel.
    fn publish(&mut self, i: usize, channel: Channel, data: Vec<u8>) {
        let d = digest(&data);
        let id = self.next_message;
        self.next_message += 1;
        let data: Rc<[u8]> = data.into();
        self.record(11, i, d);
        self.nodes[i].gossip_seen.insert(i, id);
        let targets: Vec<usize> = self.net.mesh[i].iter().map(|&p| p as usize).collect();
        for j in targets {
            if self.net.same_component(i, j) {
                self.send_gossip(i, j, i, channel, id, &data, d);
            }
        }
    }

    /// A gossip copy from `from`, published by `author`: handed to the machine unless seen
    /// (message ids increase per publisher: a copy seen is dropped, as gossipsub's seen
    /// cache does, and so is an older one overtaken by a newer), then forwarded once to the
    /// mesh peers but the sender.
    #[allow(clippy::too_many_arguments)]
    fn gossip_in(
        &mut self,
        to: usize,
        from: usize,
        author: usize,
        channel: Channel,
        id: u64,
        data: Rc<[u8]>,
        d: u64,
    ) {
        let seen = self.nodes[to].gossip_seen.entry(author).or_insert(0);
        if *seen >= id {
            return;
        }
        *seen = id;
        self.record(13, to, d);
        self.gossip_copies += 1;
        self.nodes[to].busy_until = self.now + self.params.cost_direct_us;
        let now = self.local_now(to);
        let author_id = self.nodes[author].id.clone();
        self.machine(to)
            .handle_gossip(channel, &author_id, &data, now);
        self.drain(to);
        if channel == Channel::Changes {
            self.tick_soon(to);
        }
        let peers: Vec<usize> = self.net.mesh[to]
            .iter()
            .map(|&p| p as usize)
            .filter(|&p| p != from)
            .collect();
        for p in peers {
            if self.net.same_component(to, p) {
                self.send_gossip(to, p, author, channel, id, &data, d);
            }
        }
    }

    // ---- containers ------------------------------------------------------------------------

    fn reconcile(&mut self, i: usize) {
        self.fail_containers(i);
        let now = self.local_now(i);
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        let desired = m.desired(now);
        let heads = m.state_mut().heads();
        if heads != self.nodes[i].fencing_heads {
            self.check_fencing(i);
            self.nodes[i].fencing_heads.clone_from(&heads);
        }
        let node = &mut self.nodes[i];
        node.reconciled_heads = heads;
        let actual = actual_tasks(&node.containers, self.now, node.rate_ppm);
        node.supervisor.set_held(desired.held.clone());
        node.supervisor.set_awaiting(desired.awaiting.clone());
        let round = node.supervisor.round(&desired.tasks, &actual, now);
        for action in round.actions.clone() {
            match action {
                RuntimeAction::Create(task) => {
                    let node = &mut self.nodes[i];
                    let id = node.next_container;
                    node.next_container += 1;
                    let container = Container::new(&task, self.now, node.failing);
                    if let Some(h) = self.heal.as_mut() {
                        h.count_start(&task.slot.service, container.bad_image);
                    }
                    node.containers.insert(id, container);
                    self.started += 1;
                    self.record(13, i, id);
                }
                RuntimeAction::Start { id, slot } => {
                    let Ok(id) = id.parse::<u64>() else { continue };
                    let failing = self.nodes[i].failing;
                    if let Some(c) = self.nodes[i].containers.get_mut(&id) {
                        c.start(self.now, failing);
                        self.started += 1;
                        if let Some(h) = self.heal.as_mut() {
                            h.count_start(&slot.service, c.bad_image);
                        }
                        self.record(14, i, id);
                    }
                }
                RuntimeAction::Stop { id, slot, reason } => {
                    let Ok(id) = id.parse::<u64>() else { continue };
                    if let Some(c) = self.nodes[i].containers.get_mut(&id) {
                        if c.running {
                            c.running = false;
                            let bad_image = c.bad_image;
                            self.stopped += 1;
                            self.check_autonomy(i, &slot, reason, bad_image);
                            self.heal_stop(i, &slot, reason);
                            self.heal_keep(i, id, &slot);
                        }
                    }
                }
                RuntimeAction::Remove { id, slot, reason } => {
                    let Ok(id) = id.parse::<u64>() else { continue };
                    if let Some(c) = self.nodes[i].containers.remove(&id) {
                        if c.running {
                            self.stopped += 1;
                            self.check_autonomy(i, &slot, reason, c.bad_image);
                            self.heal_stop(i, &slot, reason);
                            self.heal_keep(i, id, &slot);
                        }
                        self.record(15, i, id);
                    }
                }
            }
        }
        self.rolled_out(i);
        let actual = actual_tasks(&self.nodes[i].containers, self.now, self.nodes[i].rate_ppm);
        let statuses = round_statuses(
            &desired.tasks,
            &actual,
            &round,
            &BTreeMap::new(),
            TaskState::Pending,
        );
        self.machine(i).set_local_status(statuses);
    }

    /// The fragile containers of a failing node ([`Step::FailingNode`]) whose run is over by
    /// now: they exit with code 1, or their health check turns `unhealthy` (the node's
    /// reconcile then stops them).
    fn fail_containers(&mut self, i: usize) {
        let now = self.now;
        let mut exited = Vec::new();
        for (id, c) in self.nodes[i].containers.iter_mut() {
            let Some((_, failure)) = c.fails_at.filter(|(at, _)| c.running && *at <= now) else {
                continue;
            };
            c.fails_at = None;
            self.failed += 1;
            if failure == Failure::Unhealthy && c.checked {
                c.unhealthy = true;
            } else {
                c.running = false;
                c.exit_code = 1;
                exited.push(*id);
            }
        }
        for id in exited {
            self.record(24, i, id);
        }
    }

    /// Node `i` stopped a running copy of `slot` (`reason`) while a heal is watched: counts
    /// the stop, and checks invariant 6a: a slot that ran at the heal, still desired at the
    /// same generation (in node `i`'s view, and not made undesired by an operator's write since
    /// the split began: [`Touch`]), is never left without a running copy on an up node.
    fn heal_stop(&mut self, i: usize, slot: &SlotId, reason: &str) {
        let Some(h) = self.heal.as_mut() else { return };
        *h.stops.entry(slot.service.clone()).or_default() += 1;
        let Some(generation) = h.running.get(slot).copied() else {
            return;
        };
        let still_desired = self.nodes[i].machine.as_ref().is_some_and(|m| {
            m.state().services().get(&slot.service).is_some_and(|s| {
                !s.deleted && wanted_at_heal(m, s, slot) && s.generation == generation
            })
        });
        if !still_desired {
            return;
        }
        let running = self
            .nodes
            .iter()
            .filter(|n| n.up())
            .flat_map(|n| n.containers.values())
            .any(|c| c.running && c.slot == *slot);
        if !running {
            // Judged when the heal closes: while the sides' writes are still merging, this
            // node's view may keep a slot that the merged document scales away (a scale on
            // one side) — then no copy is the right outcome, not a zero-replica window.
            let seen = format!(
                "t={}: {slot} has no running copy after node {i} stopped its own ({reason})",
                fmt_t(self.now)
            );
            if let Some(h) = self.heal.as_mut() {
                h.zero_pending.push((slot.clone(), generation, i, seen));
            }
        }
    }

    /// Invariant 6: while partitioned, no running container stops by itself. Exempt: the churn
    /// window after a heal, nodes recently crashed, restarted or paused, the slots an
    /// operator's write touches on a node while the write rolls out there ([`Touch`]), a
    /// rollout's replacement of a slot's container by its new generation's (an operator's
    /// update carried on in the component: [`ROLLOUT_STOPS`]), and the restart of a container
    /// of a failing image (`bad_image`) that its health check found unhealthy.
    fn check_autonomy(&mut self, i: usize, slot: &SlotId, reason: &str, bad_image: bool) {
        if self.net.components() <= 1 {
            return;
        }
        if ROLLOUT_STOPS.contains(&reason) || bad_image {
            return;
        }
        let window = self.params.settle_ms * MS;
        if self.last_heal.is_some_and(|h| self.now < h + window) {
            return;
        }
        if self.now < self.nodes[i].disrupted_at + self.params.stability_ms * MS {
            return;
        }
        if self.rolling_out(i, slot) {
            return;
        }
        self.violate(format!(
            "autonomy: node {i} stopped running {slot} during a partition ({reason})"
        ));
    }

    /// Whether an operator's write that touches `slot` is in node `i`'s replica and node `i`
    /// has not finished a reconcile with it yet ([`Touch`]).
    fn rolling_out(&mut self, i: usize, slot: &SlotId) -> bool {
        let hashes: Vec<String> = self
            .touches
            .iter()
            .filter(|t| !t.rolled_out[i] && t.service == slot.service && slot.slot >= t.from_slot)
            .filter_map(|t| self.writes[t.write].hash.clone())
            .collect();
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return false;
        };
        hashes.iter().any(|h| m.state_mut().has_change(h))
    }

    /// The end of a reconcile of node `i`: every operator's write whose change is in its
    /// replica has rolled out there ([`Touch`]), unless a slot its service scaled away
    /// still has an assignment in the node's view: its copy stops when the lease holder
    /// removes the slot ([`NodeMachine::held_slots`]).
    fn rolled_out(&mut self, i: usize) {
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        for t in self.touches.iter_mut().filter(|t| !t.rolled_out[i]) {
            let hash = self.writes[t.write].hash.as_ref();
            if hash.is_some_and(|h| m.state_mut().has_change(h))
                && !scaled_away_standing(m.view(), &t.service)
            {
                t.rolled_out[i] = true;
            }
        }
    }

    /// Invariant 6b, fencing (DESIGN §5), on node `i`'s replica, checked at each reconcile
    /// after it changed: the assignment the node's machine acts on for a slot (its view's)
    /// ranks no lower than any value its replica holds for that slot — of concurrent writes
    /// merged in, one made under a lower `(epoch, holder)` never stands over one made under a
    /// higher one, so no container runs for an assignment older than one its node holds.
    fn check_fencing(&mut self, i: usize) {
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        let ranks = m.state().assignment_ranks();
        let mut broken = Vec::new();
        for (slot, a) in &m.view().assignments {
            let greatest = ranks
                .get(slot)
                .and_then(|vs| vs.iter().map(|(epoch, holder)| (*epoch, holder)).max());
            if let Some((epoch, holder)) = greatest.filter(|g| *g > (a.epoch, &a.holder)) {
                broken.push(format!(
                    "fencing: node {i} acts on {slot} assigned under epoch {} by {} while its \
                     replica holds one under epoch {epoch} by {holder}",
                    a.epoch, a.holder
                ));
            }
        }
        for b in broken {
            self.violate(b);
        }
    }

    /// Node `i` stopped its running copy `id` of `slot` by reconcile while a heal is watched.
    /// Invariant 6a's keep rule: when one copy of a slot disputed at the heal is left, it is
    /// the rule's pick — no copy stopped was older than it, by their nodes' clocks (as the
    /// nodes report ages), by [`KEEP_TOLERANCE_MS`] or more. Every simulated copy is equally
    /// healthy, so age decides. Not judged: slots of a service an operator wrote since the
    /// split began, and disputes a crash or a pause interfered with ([`Dispute::void`]).
    fn heal_keep(&mut self, i: usize, id: u64, slot: &SlotId) {
        let Some(h) = self.heal.as_mut() else { return };
        let split_at = h.split_at;
        let Some(d) = h.disputes.get_mut(slot) else {
            return;
        };
        let Some(c) = d
            .copies
            .iter_mut()
            .find(|c| c.node == i && c.container == id)
        else {
            return;
        };
        c.running = false;
        if d.void || d.done || d.copies.iter().filter(|c| c.running).count() != 1 {
            return;
        }
        d.done = true;
        let copies: Vec<(usize, u64, u64, bool)> = d
            .copies
            .iter()
            .map(|c| (c.node, c.generation, c.created_us, c.running))
            .collect();
        if self
            .written_at
            .get(&slot.service)
            .is_some_and(|t| *t >= split_at)
        {
            return;
        }
        let age = |s: &Self, node: usize, created_us: u64| {
            local_age_ms(s.now, created_us, s.nodes[node].rate_ppm)
        };
        let Some(&(kept, generation, created, _)) = copies.iter().find(|c| c.3) else {
            return;
        };
        let kept_age = age(self, kept, created);
        let older: Vec<(usize, u64)> = copies
            .iter()
            .filter(|c| !c.3 && c.1 == generation)
            .map(|c| (c.0, age(self, c.0, c.2)))
            .filter(|(_, a)| *a >= kept_age + KEEP_TOLERANCE_MS)
            .collect();
        for (node, a) in older {
            self.violate(format!(
                "heal keep: {slot} kept node {kept}'s copy ({} s old) and stopped node {node}'s \
                 ({} s old): the rule keeps the oldest",
                kept_age / 1000,
                a / 1000
            ));
        }
    }

    /// Node `i` crashed or paused, or its container `id` crashed (`None`: all of them): the
    /// disputes of the heal being watched over its copies are no longer the rule's alone.
    fn void_disputes(&mut self, i: usize, id: Option<u64>) {
        let Some(h) = self.heal.as_mut() else { return };
        for d in h.disputes.values_mut() {
            if d.copies
                .iter()
                .any(|c| c.node == i && id.is_none_or(|id| c.container == id))
            {
                d.void = true;
            }
        }
    }

    fn violate(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations
                .push(format!("t={} {what}", fmt_t(self.now)));
        }
    }

    // ---- scenario steps --------------------------------------------------------------------

    fn pick(&mut self, target: &Target) -> Option<usize> {
        let usable = |s: &Self, i: usize| s.nodes[i].up() && s.nodes[i].paused_until <= s.now;
        let pool: Vec<usize> = match target {
            Target::Node(i) => return (*i < self.nodes.len()).then_some(*i),
            Target::Leader => return self.leader(),
            Target::InGroup(g) => self
                .groups
                .get(*g)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|&i| usable(self, i))
                .collect(),
            Target::Any => (0..self.nodes.len()).filter(|&i| usable(self, i)).collect(),
        };
        (!pool.is_empty()).then(|| pool[self.rng.gen_range(0..pool.len())])
    }

    /// The lease holder most up nodes follow.
    fn leader(&self) -> Option<usize> {
        let mut votes: BTreeMap<Lease, usize> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| n.up()) {
            if let Some(l) = n.machine.as_ref().and_then(|m| m.state().lease()) {
                *votes.entry(l).or_default() += 1;
            }
        }
        let (lease, _) = votes.into_iter().max_by_key(|(l, v)| (*v, l.clone()))?;
        self.index_of(&lease.holder)
    }

    fn topology_changed(&mut self) {
        self.last_topology = self.now;
    }

    fn set_components(&mut self, groups: Vec<Vec<usize>>) {
        let n = self.nodes.len();
        let before = self.net.component.clone();
        for i in 0..n {
            self.net.component[i] = groups
                .iter()
                .position(|g| g.contains(&i))
                .map_or(1_000_000 + i as u32, |g| g as u32);
        }
        self.groups = groups;
        self.net.remesh(&mut self.rng);
        // Connections: a pair cut for longer than the connection timeout reconnects (and
        // syncs) when it meets again.
        let timeout = self.params.net.conn_timeout_ms * MS;
        for a in 0..n {
            for b in a + 1..n {
                let was = before[a] == before[b];
                let is = self.net.component[a] == self.net.component[b];
                let k = a * n + b;
                if was && !is {
                    self.cut_since[k] = self.now;
                } else if !was && is {
                    let since = std::mem::replace(&mut self.cut_since[k], u64::MAX);
                    if self.now.saturating_sub(since) >= timeout {
                        self.connect(a, b);
                    }
                }
            }
        }
        self.topology_changed();
    }

    fn connect(&mut self, a: usize, b: usize) {
        let t = self.now + self.rng.gen_range(0..=self.params.net.redial_ms * MS);
        for (x, y) in [(a, b), (b, a)] {
            let inc = self.nodes[x].inc;
            self.push(
                t,
                Ev::Connected {
                    node: x,
                    peer: y,
                    inc,
                },
            );
        }
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].up() {
            return;
        }
        self.nodes[i].inc += 1;
        self.nodes[i].disrupted_at = self.now;
        self.start_process(i);
        for j in 0..self.nodes.len() {
            if j != i && self.net.same_component(i, j) && self.nodes[j].up() {
                self.connect(i, j);
            }
        }
        self.topology_changed();
    }

    fn apply_step(&mut self, step: Step, final_heal: bool) {
        match step {
            Step::Partition(groups) => {
                self.interrupt_heal();
                if self.net.components() <= 1 {
                    self.split_at = self.now;
                }
                self.set_components(groups);
            }
            Step::Heal => {
                let was_split = self.net.components() > 1;
                let n = self.nodes.len();
                self.set_components(vec![(0..n).collect()]);
                if was_split {
                    self.interrupt_heal();
                    self.last_heal = Some(self.now);
                    let mut running: BTreeMap<SlotId, u64> = BTreeMap::new();
                    let mut copies: BTreeMap<SlotId, Vec<DisputedCopy>> = BTreeMap::new();
                    for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.up()) {
                        for (id, c) in node.containers.iter().filter(|(_, c)| c.running) {
                            running.insert(c.slot.clone(), c.generation);
                            copies
                                .entry(c.slot.clone())
                                .or_default()
                                .push(DisputedCopy {
                                    node: i,
                                    container: *id,
                                    generation: c.generation,
                                    created_us: c.created_us,
                                    health: c.health(self.now),
                                    running: true,
                                });
                        }
                    }
                    let duplicates =
                        invariants::duplicates(copies.iter().flat_map(|(slot, c)| {
                            c.iter().map(|_| (slot.service.clone(), slot.slot))
                        }));
                    let disputes = copies
                        .into_iter()
                        .filter(|(_, c)| c.len() > 1)
                        .map(|(slot, copies)| {
                            // Health ranks before age in the rule: copies of unequal health
                            // at the heal are not judged by age.
                            let void = copies.iter().any(|c| c.health != copies[0].health);
                            let dispute = Dispute {
                                copies,
                                void,
                                done: false,
                            };
                            (slot, dispute)
                        })
                        .collect();
                    let rolling = self.rolling_services();
                    self.heal = Some(HealTrack {
                        rolling,
                        failing_starts: 0,
                        at: self.now,
                        leader: None,
                        converged: None,
                        replicas: None,
                        starts0: self.started,
                        stops0: self.stopped,
                        final_heal,
                        split_at: self.split_at,
                        running,
                        duplicates,
                        starts: BTreeMap::new(),
                        stops: BTreeMap::new(),
                        zero_windows: 0,
                        zero_pending: Vec::new(),
                        interrupted: false,
                        disputes,
                    });
                }
            }
            Step::Crash(target) => {
                let Some(i) = self.pick(&target) else { return };
                if !self.nodes[i].up() {
                    return;
                }
                if target == Target::Leader && self.failover.is_none() {
                    self.failover = Some(FailoverTrack {
                        at: self.now,
                        old: self.nodes[i].id.clone(),
                    });
                    self.push(self.now + FAILOVER_PROBE_MS * MS, Ev::FailoverProbe);
                }
                self.void_disputes(i, None);
                let node = &mut self.nodes[i];
                node.machine = None;
                node.disrupted_at = self.now;
                node.paused_until = 0;
                node.busy_until = 0;
                // The engine reports a container killed with its host as exited with 255
                // (Docker's code for a container that did not stop cleanly), so the restart
                // policy `on-failure` starts it again after the reboot.
                for c in node.containers.values_mut().filter(|c| c.running) {
                    c.running = false;
                    c.exit_code = 255;
                }
                self.record(20, i, 0);
                self.topology_changed();
            }
            Step::RestartAll => {
                for i in 0..self.nodes.len() {
                    self.restart(i);
                }
            }
            Step::Restart(i) => {
                if i < self.nodes.len() {
                    self.restart(i);
                }
            }
            Step::Pause(target, ms) => {
                let Some(i) = self.pick(&target) else { return };
                let until = self.now + ms * MS;
                self.void_disputes(i, None);
                let node = &mut self.nodes[i];
                node.paused_until = node.paused_until.max(until);
                node.disrupted_at = until;
                self.record(21, i, ms);
                self.topology_changed();
            }
            Step::ContainerCrash(target) => {
                let Some(i) = self.pick(&target) else { return };
                let running: Vec<u64> = self.nodes[i]
                    .containers
                    .iter()
                    .filter(|(_, c)| c.running)
                    .map(|(id, _)| *id)
                    .collect();
                if running.is_empty() {
                    return;
                }
                let id = running[self.rng.gen_range(0..running.len())];
                self.void_disputes(i, Some(id));
                if let Some(c) = self.nodes[i].containers.get_mut(&id) {
                    c.running = false;
                    c.exit_code = 137;
                }
                self.record(22, i, id);
            }
            Step::FailingNode(failure) => {
                // The up node running the most fragile containers (the lowest index on a
                // tie), so the failure has slots to move.
                let fragile = |n: &SimNode| {
                    n.containers
                        .values()
                        .filter(|c| c.running && c.fragile)
                        .count()
                };
                let Some(i) = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].up())
                    .max_by_key(|&i| (fragile(&self.nodes[i]), std::cmp::Reverse(i)))
                else {
                    return;
                };
                self.nodes[i].failing = Some(failure);
                let now = self.now;
                for c in self.nodes[i].containers.values_mut() {
                    if c.running && c.fragile {
                        c.fails_at = Some((now + FAIL_AFTER_US, failure));
                    }
                }
                self.record(25, i, failure as u64);
            }
            Step::Write(target, kind) => {
                let Some(i) = self.pick(&target) else { return };
                if !self.nodes[i].up() || self.nodes[i].paused_until > self.now {
                    return;
                }
                self.write(i, kind);
            }
        }
    }

    fn write(&mut self, i: usize, kind: WriteKind) {
        let live: Vec<ServiceName> = self
            .machine(i)
            .state()
            .services()
            .into_values()
            .filter(|s| !s.deleted)
            .map(|s| s.name)
            .collect();
        let pick_live = |s: &mut Self| -> Option<ServiceName> {
            (!live.is_empty()).then(|| live[s.rng.gen_range(0..live.len())].clone())
        };
        let (write, label, service) = match kind {
            WriteKind::Create(replicas)
            | WriteKind::CreatePlaced(replicas, _)
            | WriteKind::CreateGlobal(replicas, _) => {
                let n = self.next_service;
                let name = ServiceName::new(format!("svc{n}")).expect("name");
                self.next_service += 1;
                let spec = ServiceSpec {
                    image: "warren/busybox:latest".into(),
                    replicas,
                    command: vec![],
                    env: Default::default(),
                    ports: vec![],
                    secrets: Vec::new(),
                    // Two of every three services have a health check; every second one a
                    // restart limit, so a failing node's tasks end `failed` and move.
                    health: (n % 3 != 2).then(|| HealthCheck {
                        probe: HealthProbe::Cmd {
                            command: "true".into(),
                        },
                        interval_ms: 1_000,
                        timeout_ms: 1_000,
                        retries: 1,
                        start_period_ms: 0,
                    }),
                    restart: if n % 2 == 0 {
                        RestartPolicy {
                            condition: RestartCondition::OnFailure,
                            max_attempts: Some(2),
                            delay_ms: 500,
                        }
                    } else {
                        RestartPolicy::default()
                    },
                    placement: match &kind {
                        WriteKind::CreatePlaced(_, placement)
                        | WriteKind::CreateGlobal(_, placement) => placement.clone(),
                        _ => Default::default(),
                    },
                    mode: match &kind {
                        WriteKind::CreateGlobal(..) => warren_crdt::ServiceMode::Global,
                        _ => Default::default(),
                    },
                    ..Default::default()
                };
                (
                    Write::CreateService(name.clone(), Box::new(spec)),
                    "create",
                    name,
                )
            }
            WriteKind::Scale(replicas) => {
                let Some(name) = pick_live(self) else { return };
                (Write::ScaleService(name.clone(), replicas), "scale", name)
            }
            WriteKind::Delete => {
                let Some(name) = pick_live(self) else { return };
                (Write::DeleteService(name.clone()), "delete", name)
            }
            WriteKind::Promote(n) => {
                let Ok(name) = ServiceName::new(format!("svc{n}")) else {
                    return;
                };
                (
                    Write::StepRollout {
                        service: name.clone(),
                        step: warren_core::machine::RolloutStep::Promote,
                        now_ms: 0,
                    },
                    "promote",
                    name,
                )
            }
            WriteKind::Update(plan) => {
                let services = self.machine(i).state().services();
                let replicated: Vec<ServiceName> = services
                    .values()
                    .filter(|s| !s.deleted && s.spec.mode == warren_crdt::ServiceMode::Replicated)
                    .map(|s| s.name.clone())
                    .collect();
                let name = match plan.service {
                    Some(n) => {
                        let Ok(name) = ServiceName::new(format!("svc{n}")) else {
                            return;
                        };
                        if !replicated.contains(&name) {
                            return;
                        }
                        name
                    }
                    None if replicated.is_empty() => return,
                    None => replicated[self.rng.gen_range(0..replicated.len())].clone(),
                };
                // A fresh image per write, so every update needs new containers.
                let tag = if plan.failing { BAD_IMAGE_TAG } else { ":v-" };
                let image = format!("warren/busybox{tag}{}", self.writes.len());
                let policy = PolicyPatch {
                    parallelism: Some(plan.parallelism),
                    delay_ms: Some(0),
                    order: Some(plan.order),
                    monitor_ms: Some(UPDATE_MONITOR_MS),
                    failure_action: Some(plan.failure_action),
                    max_failure_ratio_permille: Some(0),
                };
                let (strategy, canary) = match plan.deploy {
                    warren_crdt::Deploy::Rolling => (DeployStrategy::Rolling, None),
                    warren_crdt::Deploy::Canary { count, .. } => {
                        (DeployStrategy::Canary, Some(count))
                    }
                    warren_crdt::Deploy::BlueGreen => (DeployStrategy::BlueGreen, None),
                };
                let patch = ServicePatch {
                    deploy: Some(DeployPatch {
                        strategy: Some(strategy),
                        canary,
                        canary_weight_percent: None,
                    }),
                    image: Some(image),
                    update: Some(policy),
                    rollback: Some(PolicyPatch {
                        failure_action: Some(warren_crdt::FailureAction::Pause),
                        ..policy
                    }),
                    ..Default::default()
                };
                self.updates += 1;
                (
                    Write::UpdateService(name.clone(), Box::new(patch)),
                    "update",
                    name,
                )
            }
        };
        self.written_at.insert(service.clone(), self.now);
        self.record(23, i, digest(service.as_str().as_bytes()));
        let heads_before = self.machine(i).state_mut().heads();
        if self.machine(i).write(write).is_err() {
            return;
        }
        self.tick_soon(i);
        // The write's change, if it made one (scaling to the current count makes none).
        let hash = if self.machine(i).state_mut().heads() != heads_before {
            self.machine(i).history(None, 1).pop().map(|h| h.hash)
        } else {
            None
        };
        let w = self.writes.len();
        let from_slot = match kind {
            WriteKind::Create(_) | WriteKind::CreatePlaced(..) | WriteKind::CreateGlobal(..) => {
                None
            }
            WriteKind::Scale(replicas) => Some(replicas),
            // Every slot: the rollout replaces each one's container (judged by the stop's
            // reason in `check_autonomy`, as the rollout goes on after this write).
            WriteKind::Delete | WriteKind::Update(_) | WriteKind::Promote(_) => Some(0),
        };
        if let Some(from_slot) = from_slot {
            self.touches.push(Touch {
                service: service.clone(),
                from_slot,
                write: w,
                rolled_out: vec![false; self.nodes.len()],
            });
        }
        self.writes.push(WriteRecord {
            t: self.now,
            node: i,
            kind: label,
            service,
            hash,
            acked: false,
        });
        self.nodes[i].pending_ack.push(w);
        if self.fault == Fault::AckBeforePersist {
            // The broken driver: acknowledge now, persist and gossip later.
            self.writes[w].acked = true;
            self.nodes[i].deferred = true;
            self.nodes[i].pending_ack.clear();
            return;
        }
        self.drain(i);
    }

    // ---- checks ----------------------------------------------------------------------------

    /// Components of up, unpaused nodes.
    fn live_components(&self) -> BTreeMap<u32, Vec<usize>> {
        let mut comps: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.up() && n.paused_until <= self.now {
                comps.entry(self.net.component[i]).or_default().push(i);
            }
        }
        comps
    }

    /// Invariant 3: in each component, exactly one node believes it holds the lease and every
    /// node follows that lease. "Believes" is each machine's own decision at its last tick (it
    /// schedules as `Holder`), not the document's lease, so a node that schedules under a lease
    /// it lost is caught. `Err` says why not.
    fn leases_ok(&self, members: &[usize]) -> Result<(), String> {
        let seen: Vec<LeaseSeen<usize, Lease>> = members
            .iter()
            .map(|&i| {
                let decision = self.nodes[i]
                    .machine
                    .as_ref()
                    .and_then(|m| m.lease_decision());
                let (lease, holds) = match decision {
                    Some(LeaseDecision::Holder(l)) => (Some(l.clone()), true),
                    Some(LeaseDecision::Follower { lease, .. }) => (Some(lease.clone()), false),
                    Some(LeaseDecision::Claim(_) | LeaseDecision::Vacant { .. }) | None => {
                        (None, false)
                    }
                };
                LeaseSeen {
                    node: i,
                    lease,
                    holds,
                }
            })
            .collect();
        invariants::one_lease(&seen)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn converged(&mut self) -> bool {
        let mut first: Option<Vec<String>> = None;
        for n in self.nodes.iter_mut() {
            if let Some(m) = n.machine.as_mut() {
                let h = m.state_mut().heads();
                match &first {
                    None => first = Some(h),
                    Some(f) if *f == h => {}
                    Some(_) => return false,
                }
            }
        }
        true
    }

    /// Invariant 5 on the services of `view_node`'s replica: each live service has exactly
    /// `replicas` running slots of its generation on up nodes, none twice, and nothing else runs.
    /// A global service instead runs once on every up node eligible for it, and never twice
    /// on one node ([`invariants::global_exact`]).
    fn replicas_ok(&self) -> Result<(), String> {
        let Some(m) = self.nodes.iter().find_map(|n| n.machine.as_ref()) else {
            return Ok(());
        };
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up())
            .collect();
        self.global_ok(&up, m, None)?;
        let services = m.state().services();
        let global = |name: &ServiceName| {
            services
                .get(name)
                .is_some_and(|s| s.spec.mode == warren_crdt::ServiceMode::Global)
        };
        let desired: BTreeMap<&ServiceName, u32> = services
            .values()
            .filter(|s| !s.deleted && !global(&s.name))
            .map(|s| (&s.name, s.spec.replicas))
            .collect();
        let running = self
            .nodes
            .iter()
            .filter(|n| n.up())
            .flat_map(|n| n.containers.values().filter(|c| c.running))
            .filter(|c| !global(&c.slot.service))
            .map(|c| RunningCopy {
                service: &c.slot.service,
                slot: c.slot.slot,
                current: services
                    .get(&c.slot.service)
                    .is_some_and(|s| runs_current(c, s)),
            });
        invariants::replicas_exact(&desired, running).map_err(|e| e.to_string())
    }

    /// The global services of `m`'s document on the nodes `nodes` (up ones: a whole cluster
    /// or one component): each node eligible for a service runs exactly one task of it and
    /// none runs two ([`invariants::global_exact`]). With `written_before`, only services
    /// written before that virtual time (settled ones).
    fn global_ok(
        &self,
        nodes: &[usize],
        m: &NodeMachine,
        written_before: Option<u64>,
    ) -> Result<(), String> {
        let services = m.state().services();
        let global = |name: &ServiceName| {
            services.get(name).is_some_and(|s| {
                !s.deleted
                    && s.spec.mode == warren_crdt::ServiceMode::Global
                    && written_before
                        .is_none_or(|t| self.written_at.get(name).is_some_and(|w| *w < t))
            })
        };
        let members = m.state().members();
        let eligible: BTreeMap<ServiceName, BTreeSet<usize>> = services
            .values()
            .filter(|s| global(&s.name))
            .map(|s| {
                let on = nodes
                    .iter()
                    .copied()
                    .filter(|&i| {
                        self.nodes[i].up()
                            && members
                                .get(&self.nodes[i].id)
                                .is_some_and(|m| warren_core::core::global::eligible(s, m))
                    })
                    .collect();
                (s.name.clone(), on)
            })
            .collect();
        let running = nodes
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].up())
            .flat_map(|i| {
                self.nodes[i]
                    .containers
                    .values()
                    .filter(|c| c.running && global(&c.slot.service))
                    .filter(|c| {
                        services
                            .get(&c.slot.service)
                            .is_some_and(|s| runs_current(c, s))
                    })
                    .map(move |c| (c.slot.service.clone(), i))
            });
        invariants::global_exact(&eligible, running).map_err(|e| e.to_string())
    }

    /// Issue 15's rollout invariants ([`invariants::rollout_safe`]) on the up nodes' document
    /// (call once they hold one document and nothing disrupted them for a stability window),
    /// for each live replicated service with a rollout record: its slots' assignments and the
    /// generations of their healthy running copies on up nodes. Counts each service judged.
    fn rollouts_ok(&mut self) -> Result<(), String> {
        let Some(i) = self.nodes.iter().position(|n| n.up()) else {
            return Ok(());
        };
        let mut healthy: BTreeMap<SlotId, Vec<u64>> = BTreeMap::new();
        let mut copies: Vec<(SlotId, u64)> = Vec::new();
        for c in self
            .nodes
            .iter()
            .filter(|n| n.up())
            .flat_map(|n| n.containers.values())
            .filter(|c| c.running)
        {
            if matches!(c.health(self.now), TaskHealth::Healthy | TaskHealth::None) {
                copies.push((c.slot.clone(), c.generation));
            }
        }
        let view = self.machine(i).view();
        // A copy counts at its slot's assigned generation when the node keeps it for that one
        // (the same tasks: `rollout::same_tasks`).
        for (slot, generation) in copies {
            let counted = match (
                view.services.get(&slot.service),
                view.assignments.get(&slot),
            ) {
                (Some(s), Some(a))
                    if warren_core::core::rollout::same_tasks(s, generation, a.spec_generation) =>
                {
                    a.spec_generation
                }
                _ => generation,
            };
            healthy.entry(slot).or_default().push(counted);
        }
        let mut judged = 0;
        for s in view.services.values() {
            let Some(r) = s.rollout.as_ref() else {
                continue;
            };
            if s.deleted || s.spec.mode != warren_crdt::ServiceMode::Replicated {
                continue;
            }
            let slots: Vec<invariants::RolloutSlot> = (0..s.spec.replicas)
                .map(|k| {
                    let slot = SlotId {
                        service: s.name.clone(),
                        slot: k,
                    };
                    invariants::RolloutSlot {
                        slot: k,
                        // A slot waiting for a node is placed at the current generation.
                        assigned: view
                            .assignments
                            .get(&slot)
                            .map_or(s.generation, |a| a.spec_generation),
                        healthy: healthy.get(&slot).cloned().unwrap_or_default(),
                    }
                })
                .collect();
            let stopped = matches!(
                r.state,
                warren_crdt::RolloutState::Paused { .. }
                    | warren_crdt::RolloutState::AwaitingPromotion
            );
            judged += 1;
            invariants::rollout_safe(
                s.generation,
                r.to_generation,
                stopped,
                r.policy.order == warren_crdt::UpdateOrder::StartFirst,
                r.policy.parallelism,
                &slots,
            )
            .map_err(|e| format!("{} ({}): {e}", s.name, r.state_word()))?;
        }
        self.rollout_checks += judged;
        Ok(())
    }

    /// Failover after a leader crash: a new holder in one component and every replica
    /// running, timed from the crash (resolution [`FAILOVER_PROBE_MS`]); given up after 60 s.
    fn check_failover(&mut self) {
        if let Some(f) = &self.failover {
            let (at, old) = (f.at, f.old.clone());
            let comps = self.live_components();
            let whole = comps.len() == 1;
            let new_leader = whole
                && comps
                    .values()
                    .next()
                    .is_some_and(|m| self.leases_ok(m).is_ok())
                && self.leader().is_some_and(|l| self.nodes[l].id != old);
            if new_leader && self.replicas_ok().is_ok() {
                self.failovers_ms.push((self.now - at) / MS);
                self.failover = None;
            } else if self.now - at > 60_000 * MS {
                self.failover = None;
            }
        }
    }

    fn probe(&mut self) {
        // Placement: no replica's document assigns a slot to a node its service's
        // constraints exclude (checked in scenarios that label their nodes).
        if !self.scenario.labels.is_empty() {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].up() {
                    continue;
                }
                let view = self.machine(i).view();
                let wrong = warren_core::placement::misplaced(
                    &view.services,
                    &view.members,
                    &view.assignments,
                );
                if let Some((slot, node, constraints)) = wrong.into_iter().next() {
                    self.violate(format!(
                        "placement: n{i}'s document assigns {slot} to {node}, which {constraints} excludes"
                    ));
                    break;
                }
            }
        }
        // Lease safety per component after stability.
        let stable = self.now >= self.last_topology + self.params.stability_ms * MS;
        if stable && self.now > self.params.stability_ms * MS {
            if self.net.components() > 1 {
                self.lease_checks_split += 1;
            }
            for (_, members) in self.live_components() {
                if let Err(e) = self.leases_ok(&members) {
                    self.violate(format!("lease: component of {members:?}: {e}"));
                    break;
                }
            }
            // Global services on each side: every member of a component eligible for one
            // runs exactly one of its tasks (services written a stability window ago).
            let settled = self.now.saturating_sub(self.params.stability_ms * MS);
            for (_, members) in self.live_components() {
                let Some(m) = members
                    .first()
                    .and_then(|&i| self.nodes[i].machine.as_ref())
                else {
                    continue;
                };
                if let Err(e) = self.global_ok(&members, m, Some(settled)) {
                    self.violate(format!("global: component of {members:?}: {e}"));
                    break;
                }
            }
            // Rollouts, once an update was written: on one document, with no node crashed,
            // restarted or paused for a stability window (a fault takes copies down whatever
            // the rollout does).
            let window = self.params.stability_ms * MS;
            let undisturbed = self
                .nodes
                .iter()
                .all(|n| self.now >= n.disrupted_at + window);
            if self.updates > 0 && undisturbed && self.converged() {
                if let Err(e) = self.rollouts_ok() {
                    self.violate(format!("rollout: {e}"));
                }
            }
        }
        // After a heal: one leader, one document, right replicas; churn in the window.
        if let Some(h) = &self.heal {
            let at = self.heal.as_ref().map_or(0, |h| h.at);
            let (need_leader, need_conv, need_rep) = (
                h.leader.is_none(),
                h.converged.is_none(),
                h.replicas.is_none(),
            );
            let comps = self.live_components();
            let leader_ok = comps.len() == 1
                && comps
                    .values()
                    .next()
                    .is_some_and(|m| self.leases_ok(m).is_ok());
            let converged = need_conv && self.converged();
            let replicas = !need_conv || converged;
            let replicas = replicas && need_rep && self.replicas_ok().is_ok();
            let now_ms = (self.now - at) / MS;
            if let Some(h) = self.heal.as_mut() {
                if need_leader && leader_ok {
                    h.leader = Some(now_ms);
                }
                if converged {
                    h.converged = Some(now_ms);
                }
                if replicas && h.converged.is_some() {
                    h.replicas = Some(now_ms);
                }
            }
            if self.now >= at + self.params.settle_ms * MS {
                self.close_heal();
            }
        }
    }

    /// The services with a rollout under way on some up node: its replica holds the service's
    /// rollout `updating`, or the replicas disagree on the service's generation.
    fn rolling_services(&mut self) -> BTreeSet<ServiceName> {
        let mut generations: BTreeMap<ServiceName, BTreeSet<u64>> = BTreeMap::new();
        let mut rolling = BTreeSet::new();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up() {
                continue;
            }
            for s in self.machine(i).view().services.values() {
                generations
                    .entry(s.name.clone())
                    .or_default()
                    .insert(s.generation);
                if s.rollout
                    .as_ref()
                    .is_some_and(|r| r.state == warren_crdt::RolloutState::Updating)
                {
                    rolling.insert(s.name.clone());
                }
            }
        }
        rolling.extend(
            generations
                .into_iter()
                .filter(|(_, g)| g.len() > 1)
                .map(|(name, _)| name),
        );
        rolling
    }

    /// A new partition (or heal) came before the settle window of the last heal ended: its
    /// figures are kept, but nothing is judged on an incomplete window.
    fn interrupt_heal(&mut self) {
        if let Some(h) = self.heal.as_mut() {
            h.interrupted = true;
        }
        self.close_heal();
    }

    fn close_heal(&mut self) {
        let Some(mut h) = self.heal.take() else {
            return;
        };
        // Invariant 6a, judged against the document as the heal left it: a slot still
        // desired at the generation it ran at the heal never had no running copy.
        for (slot, generation, i, seen) in std::mem::take(&mut h.zero_pending) {
            let still_desired = self.nodes[i].machine.as_ref().is_some_and(|m| {
                m.state().services().get(&slot.service).is_some_and(|s| {
                    !s.deleted && wanted_at_heal(m, s, &slot) && s.generation == generation
                })
            });
            if still_desired {
                h.zero_windows += 1;
                self.violate(format!("heal at {}: {seen}", fmt_t(h.at)));
            }
        }
        let live: u64 = self
            .nodes
            .iter()
            .find_map(|n| n.machine.as_ref())
            .map(|m| {
                // A global service's desired tasks: the slots its document holds.
                let assignments = m.state().assignments();
                m.state()
                    .services()
                    .values()
                    .filter(|s| !s.deleted)
                    .map(|s| match s.spec.mode {
                        warren_crdt::ServiceMode::Replicated => u64::from(s.spec.replicas),
                        warren_crdt::ServiceMode::Global => {
                            assignments.keys().filter(|k| k.service == s.name).count() as u64
                        }
                    })
                    .sum()
            })
            .unwrap_or(0);
        let fig = HealFigures {
            at_ms: h.at / MS,
            leader_ms: h.leader,
            converged_ms: h.converged,
            replicas_ms: h.replicas,
            started: self.started - h.starts0,
            stopped: self.stopped - h.stops0,
            replicas_total: live,
            duplicates: 0,
            zero_windows: 0,
        };
        if !h.interrupted
            && fig
                .leader_ms
                .is_none_or(|l| l > self.params.heal_leader_bound_ms)
        {
            self.violate(format!(
                "heal at {}: no single lease holder within {} ms",
                fmt_t(h.at),
                self.params.heal_leader_bound_ms
            ));
        }
        // Churn bound: every slot ran at most once on each side; the merge keeps one of them.
        // So at most one stop and one start per desired replica. Not counted: the
        // replacements of a rollout under way at the heal ([`HealTrack::rolling`]) and the
        // restarts of a failing image's containers ([`HealTrack::failing_starts`]).
        let of_rollouts = |counts: &BTreeMap<ServiceName, u64>| -> u64 {
            h.rolling.iter().filter_map(|s| counts.get(s)).sum()
        };
        let started = fig
            .started
            .saturating_sub(of_rollouts(&h.starts) + h.failing_starts);
        let stopped = fig.stopped - of_rollouts(&h.stops).min(fig.stopped);
        if started + stopped > 2 * live.max(1) {
            let per_service: Vec<String> = h
                .starts
                .keys()
                .chain(h.stops.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|s| {
                    let n = |m: &BTreeMap<ServiceName, u64>| m.get(s).copied().unwrap_or(0);
                    format!("{s} {}+{}", n(&h.starts), n(&h.stops))
                })
                .collect();
            self.violate(format!(
                "heal at {}: churn {started} starts + {stopped} stops (rollouts' replacements \
                 not counted) exceeds 2 × {live} replicas; per service: {}",
                fmt_t(h.at),
                per_service.join(", ")
            ));
        }
        // Per heal, for services no operator wrote since the split began: starts = 0 and
        // stops ≤ the duplicates at the heal. Judged only for a split that lasted the
        // stability window (both sides settled: what the split decided was carried out
        // before the heal), a full settle window after it, and no node crashed, restarted
        // or paused since the split began (their restarts are theirs, not the heal's).
        let undisturbed = self.nodes.iter().all(|n| n.disrupted_at < h.split_at);
        let settled_split = h.at >= h.split_at + self.params.stability_ms * MS;
        if undisturbed && settled_split && !h.interrupted {
            let services: BTreeSet<&ServiceName> = h.starts.keys().chain(h.stops.keys()).collect();
            for service in services {
                if h.rolling.contains(service)
                    || self
                        .written_at
                        .get(service)
                        .is_some_and(|t| *t >= h.split_at)
                {
                    continue;
                }
                let starts = h.starts.get(service).copied().unwrap_or(0);
                let stops = h.stops.get(service).copied().unwrap_or(0);
                let duplicates = h.duplicates.get(service).copied().unwrap_or(0);
                if let Err(e) = invariants::unchanged_heal_churn(starts, stops, duplicates) {
                    self.violate(format!(
                        "heal at {}: {service}, unchanged during the split, had {e}",
                        fmt_t(h.at)
                    ));
                }
            }
        }
        let _ = h.final_heal;
        self.heals.push(HealFigures {
            duplicates: h.duplicates.values().sum(),
            zero_windows: h.zero_windows,
            ..fig
        });
    }

    fn final_checks(&mut self) {
        self.close_heal();
        let t = fmt_t(self.now);
        if !self.converged() {
            self.violations.push(format!(
                "t={t} convergence: up nodes hold different documents {} ms after the final heal",
                self.params.settle_ms
            ));
        }
        let comps = self.live_components();
        for members in comps.values() {
            if let Err(e) = self.leases_ok(members) {
                self.violations.push(format!("t={t} lease at the end: {e}"));
            }
        }
        if let Err(e) = self.replicas_ok() {
            self.violations
                .push(format!("t={t} replica correctness at the end: {e}"));
        }
        // No lost acknowledged writes.
        let deleted: BTreeSet<ServiceName> = self
            .writes
            .iter()
            .filter(|w| w.acked && w.kind == "delete")
            .map(|w| w.service.clone())
            .collect();
        let acked: Vec<WriteRecord> = self.writes.iter().filter(|w| w.acked).cloned().collect();
        let mut lost = Vec::new();
        for i in 0..self.nodes.len() {
            let Some(m) = self.nodes[i].machine.as_mut() else {
                continue;
            };
            let history: HashSet<String> = m
                .history(None, usize::MAX)
                .into_iter()
                .map(|h| h.hash)
                .collect();
            let services = m.state().services();
            for w in &acked {
                // No hash: the write changed nothing, so there is nothing to lose.
                let in_history = w.hash.as_ref().is_none_or(|h| history.contains(h));
                let live = w.kind != "create"
                    || deleted.contains(&w.service)
                    || services.get(&w.service).is_some_and(|s| !s.deleted);
                if !in_history || !live {
                    lost.push(format!(
                        "{} {} acknowledged by node {} at {} missing on node {i}",
                        w.kind,
                        w.service,
                        w.node,
                        fmt_t(w.t)
                    ));
                }
            }
            if !lost.is_empty() {
                break;
            }
        }
        for l in lost.into_iter().take(5) {
            self.violations.push(format!("t={t} lost write: {l}"));
        }
    }

    fn report(self, wall_secs: f64) -> Report {
        let n = self.nodes.len() as u64;
        let mut full: Vec<u64> = Vec::new();
        let (mut copies, mut tracked) = (0u64, 0u64);
        for c in self.changes.values() {
            if c.t0 > self.scenario.duration_ms * MS {
                continue;
            }
            copies += c.copies;
            tracked += 1;
            if u64::from(c.reached) + 1 >= n {
                full.push(c.last - c.t0);
            }
        }
        let mut swim = warren_core::core::SwimStats::default();
        for m in self.nodes.iter().filter_map(|n| n.machine.as_ref()) {
            let st = m.swim_stats();
            swim.sent += st.sent;
            swim.received += st.received;
            swim.failed_probes += st.failed_probes;
            swim.refutations += st.refutations;
            swim.downs += st.downs;
        }
        Report {
            scenario: self.scenario.name.clone(),
            nodes: self.nodes.len(),
            seed: self.seed,
            duration_ms: self.scenario.duration_ms,
            virtual_ms: self.now / MS,
            wall_secs,
            trace_hash: self.trace,
            violations: self.violations,
            events: self.events,
            messages: self.messages,
            writes_acked: self.writes.iter().filter(|w| w.acked).count(),
            latencies_us: self.latencies_us,
            full_coverage_us: full,
            changes_tracked: tracked,
            copies,
            failovers_ms: self.failovers_ms,
            heals: self.heals,
            containers_started: self.started,
            containers_stopped: self.stopped,
            containers_failed: self.failed,
            lease_checks_split: self.lease_checks_split,
            rollout_checks: self.rollout_checks,
            direct_messages: self.direct_messages,
            direct_bytes: self.direct_bytes,
            lease_copies: self.gossip_copies,
            swim,
        }
    }
}

/// The founder's document, byte for byte the same in every run of a seed.
///
/// The founder's document with its actor suffix and clock fixed before the first change, so
/// the whole history (and every change hash) is the same on every run of a seed.
/// Whether container `c` runs service `s` as its document stands: a spec with the same tasks
/// as the document's current one (after a merge of concurrent updates, the merged spec, not
/// one side's), of the current generation or one the node keeps for it (a rollback's slots
/// that never left the previous spec: `rollout::same_tasks`).
fn runs_current(c: &Container, s: &warren_crdt::Service) -> bool {
    c.spec.same_tasks(&s.spec)
        && warren_core::core::rollout::same_tasks(s, c.generation, s.generation)
}

fn deterministic_founder(info: &ClusterInfo, founder: &Member, suffix: u64) -> DesiredState {
    DesiredState::new_cluster_seeded(info, founder, suffix.to_le_bytes(), zero_clock)
        .expect("founder document")
}

/// Whether `m`'s document still wants `slot` of `service`: below its replica count, or for a
/// global service, still assigned (the holder clears a global slot it no longer wants).
fn wanted_at_heal(m: &NodeMachine, service: &warren_crdt::Service, slot: &SlotId) -> bool {
    match service.spec.mode {
        warren_crdt::ServiceMode::Replicated => slot.slot < service.spec.replicas,
        warren_crdt::ServiceMode::Global => m.state().assignments().contains_key(slot),
    }
}

/// The hash of one Automerge change, as history prints it.
/// Whether `view` still assigns a slot of `service` at or beyond its replica count (a scale
/// down the lease holder has not carried out yet). A deleted, unknown or global service (no
/// replica count): no.
fn scaled_away_standing(view: &ClusterView, service: &ServiceName) -> bool {
    view.services
        .get(service)
        .filter(|s| !s.deleted && s.spec.mode == warren_crdt::ServiceMode::Replicated)
        .is_some_and(|s| {
            view.assignments
                .range(
                    SlotId {
                        service: service.clone(),
                        slot: s.spec.replicas,
                    }..,
                )
                .next()
                .is_some_and(|(slot, _)| slot.service == *service)
        })
}

/// The id (first 8 bytes of its [`MessageId`]) and round of a direct message that carries a
/// change along the broadcast tree; `None` for any other message. Only such a message is
/// decoded in full (the measurement's cost, not the node's).
fn plum_gossip(data: &[u8]) -> Option<(u64, u16)> {
    if !data.starts_with(br#"{"plum":{"gossip""#) {
        return None;
    }
    match Direct::decode(data).ok()? {
        Direct::Plum(PlumMessage::Gossip { id, round, .. }) => {
            let mut head = [0u8; 8];
            head.copy_from_slice(&id.0[..8]);
            Some((u64::from_le_bytes(head), round))
        }
        _ => None,
    }
}

/// Milliseconds on a clock running at `rate_ppm` from virtual µs `since_us` to `now_us`.
fn local_age_ms(now_us: u64, since_us: u64, rate_ppm: u64) -> u64 {
    now_us.saturating_sub(since_us) * rate_ppm / 1_000_000 / MS
}

/// A simulated node's containers as the core sees them (the daemon's Docker listing, here).
/// `now_us` is virtual time, `rate_ppm` the node's clock rate: a container's age is read on
/// its node's clock, as the daemon reads Docker's creation time.
fn actual_tasks(
    containers: &BTreeMap<u64, Container>,
    now_us: u64,
    rate_ppm: u64,
) -> Vec<ActualTask> {
    containers
        .iter()
        .map(|(id, c)| ActualTask {
            id: id.to_string(),
            slot: c.slot.clone(),
            generation: c.generation,
            state: if c.running {
                ActualTaskState::Running
            } else {
                ActualTaskState::Stopped
            },
            exit_code: (!c.running).then_some(c.exit_code),
            health: c.health(now_us),
            detail: if c.unhealthy {
                "probe failed".into()
            } else {
                String::new()
            },
            engine_state: if c.running {
                TaskState::Running
            } else {
                TaskState::Exited
            },
            status: String::new(),
            ports: Vec::new(),
            age_ms: Some(local_age_ms(now_us, c.created_us, rate_ppm)),
            // The simulated nodes report no GPU, so no task holds one.
            gpus: Vec::new(),
        })
        .collect()
}

/// Virtual microseconds as `12.345s`.
pub(crate) fn fmt_t(us: u64) -> String {
    format!("{}.{:03}s", us / 1_000_000, us / 1_000 % 1_000)
}
