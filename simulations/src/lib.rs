//! # warren-simulations: many peers, one process, virtual time
//!
//! A [`Simulation`] runs N nodes, each with its own replica of the desired state
//! ([`warren_crdt::DesiredState`]) and its own decision core ([`warren_node::core::Core`]) —
//! the same code `warren-node` runs — over a simulated network driven by a virtual clock.
//! Heartbeats, gossip of changes and anti-entropy sync travel only between nodes in the same
//! component of the current partition; crashed nodes hear and say nothing. Containers are a
//! simulated runtime per node, reconciled with the core's [`warren_node::core::reconcile`].
//!
//! Everything random comes from one seeded generator, so a seed replays exactly
//! ([`Simulation::trace_hash`]).
//!
//! This is the first slice; the scenario language, link delays and loss, clock drift and the
//! `warren-sim` binary come with their own issue.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warren_crdt::{
    ClusterInfo, DesiredState, Lease, Member, MemberState, NodeId, ServiceName, ServiceSpec,
    SlotId, SyncState,
};
use warren_node::core::{
    reconcile, Action, ActualTask, ActualTaskState, ClusterView, Core, CoreConfig, Millis,
    RuntimeAction,
};

/// Virtual milliseconds per [`Simulation::step`].
pub const STEP_MS: u64 = 100;
/// Heartbeat period in virtual milliseconds (as the daemon's default).
pub const HEARTBEAT_MS: u64 = 500;
/// Anti-entropy period in virtual milliseconds.
pub const ANTI_ENTROPY_MS: u64 = 1_000;

fn virtual_epoch() -> i64 {
    0
}

/// One simulated node.
struct SimNode {
    id: NodeId,
    core: Core,
    state: DesiredState,
    up: bool,
    /// The simulated runtime: slot → generation of the running container.
    running: BTreeMap<SlotId, u64>,
}

/// A cluster of simulated nodes. See the crate doc.
pub struct Simulation {
    now: Millis,
    rng: StdRng,
    nodes: Vec<SimNode>,
    /// Component of each node; nodes talk only within one component.
    component: Vec<usize>,
    trace: DefaultHasher,
    config: CoreConfig,
}

impl Simulation {
    /// `n` nodes (ids `sim-00`, `sim-01`, ...), all members from the start, in one component.
    ///
    /// # Panics
    /// If `n` is 0 or the document refuses the initial writes (a bug, not an input).
    pub fn new(n: usize, seed: u64) -> Self {
        assert!(n > 0, "a simulation needs at least one node");
        let ids: Vec<NodeId> = (0..n).map(|i| NodeId(format!("sim-{i:02}"))).collect();
        let member = |id: &NodeId| Member {
            id: id.clone(),
            name: id.to_string(),
            addrs: vec![],
            labels: Default::default(),
            admitted_by: ids[0].clone(),
            admitted_at: 0,
            state: MemberState::Active,
        };
        let info = ClusterInfo {
            id: format!("sim-{seed}"),
            name: "sim".into(),
            created_at: 0,
        };
        let mut founder = DesiredState::new_cluster(&info, &member(&ids[0])).expect("init");
        for id in &ids[1..] {
            founder.add_member(&member(id)).expect("member");
        }
        let snapshot = founder.save();
        let config = CoreConfig::default();
        let nodes = ids
            .iter()
            .map(|id| {
                let mut state = DesiredState::load(id.clone(), &snapshot).expect("load");
                state.set_clock(virtual_epoch);
                SimNode {
                    id: id.clone(),
                    core: Core::new(id.clone(), config, Millis(0)),
                    state,
                    up: true,
                    running: BTreeMap::new(),
                }
            })
            .collect();
        Self {
            now: Millis(0),
            rng: StdRng::seed_from_u64(seed),
            nodes,
            component: vec![0; n],
            trace: DefaultHasher::new(),
            config,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The timing the cores use.
    pub fn config(&self) -> CoreConfig {
        self.config
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        a != b && self.nodes[a].up && self.nodes[b].up && self.component[a] == self.component[b]
    }

    /// Splits the cluster: each group is one component; nodes in no group are alone.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        for (i, c) in self.component.iter_mut().enumerate() {
            *c = groups
                .iter()
                .position(|g| g.contains(&i))
                .map_or(1_000 + i, |g| g);
        }
        self.record(&("partition", groups.to_vec()));
    }

    /// Joins every component back into one.
    pub fn heal(&mut self) {
        self.component.iter_mut().for_each(|c| *c = 0);
        self.record(&"heal");
    }

    /// Crashes node `i`: it stops hearing and speaking; its containers stop counting.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.record(&("crash", i));
    }

    /// Restarts node `i` from its persisted replica with a fresh core (a new process).
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.core = Core::new(node.id.clone(), self.config, self.now);
        node.up = true;
        self.record(&("restart", i));
    }

    /// Writes a new service at node `i` and gossips the change.
    ///
    /// # Panics
    /// If the name is invalid or taken at that node (a scenario bug).
    pub fn create_service(&mut self, i: usize, name: &str, replicas: u32) {
        let spec = ServiceSpec {
            image: "warren/busybox:latest".into(),
            replicas,
            command: vec![],
            env: Default::default(),
            ports: vec![],
            secrets: Vec::new(),
        };
        let name = ServiceName::new(name).expect("service name");
        let change = self.nodes[i]
            .state
            .create_service(&name, &spec)
            .expect("create service");
        self.gossip(i, &change);
        self.record(&("create", i, name.to_string(), replicas));
    }

    fn gossip(&mut self, from: usize, change: &[u8]) {
        for j in 0..self.nodes.len() {
            if self.reachable(from, j) {
                // A change this replica cannot decode is a bug in the document code.
                self.nodes[j]
                    .state
                    .apply_change(change)
                    .expect("apply gossip");
            }
        }
    }

    fn record<T: Hash>(&mut self, event: &T) {
        self.now.0.hash(&mut self.trace);
        event.hash(&mut self.trace);
    }

    /// Advances the clock by [`STEP_MS`]: heartbeats, anti-entropy, core ticks, reconcile.
    pub fn step(&mut self) {
        self.now = Millis(self.now.0 + STEP_MS);
        let now = self.now;
        let n = self.nodes.len();
        if now.0 % HEARTBEAT_MS == 0 {
            for i in 0..n {
                if !self.nodes[i].up {
                    continue;
                }
                let view = ClusterView::read(&self.nodes[i].state);
                let held = self.nodes[i].core.held_lease(&view);
                let from = self.nodes[i].id.clone();
                for j in 0..n {
                    if self.reachable(i, j) {
                        self.nodes[j].core.handle_heartbeat(&from, held, now);
                    }
                }
            }
        }
        if now.0 % ANTI_ENTROPY_MS == 0 {
            for i in 0..n {
                let peers: Vec<usize> = (0..n).filter(|&j| self.reachable(i, j)).collect();
                if peers.is_empty() {
                    continue;
                }
                let j = peers[self.rng.gen_range(0..peers.len())];
                self.sync(i, j);
            }
        }
        for i in 0..n {
            if !self.nodes[i].up {
                continue;
            }
            let view = ClusterView::read(&self.nodes[i].state);
            for action in self.nodes[i].core.tick(&view, now) {
                if let Action::ClaimLease(lease) = &action {
                    self.record(&("claim", i, lease.epoch.0));
                }
                if let Some(change) = action.apply(&mut self.nodes[i].state).expect("write") {
                    self.gossip(i, &change);
                }
            }
            self.reconcile(i);
        }
    }

    /// Runs steps for `ms` virtual milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        for _ in 0..ms.div_ceil(STEP_MS) {
            self.step();
        }
    }

    /// Runs until `done` holds or `limit_ms` passes; returns the virtual ms it took.
    pub fn run_until(&mut self, limit_ms: u64, mut done: impl FnMut(&Self) -> bool) -> Option<u64> {
        let start = self.now;
        while self.now.since(start) < limit_ms {
            if done(self) {
                return Some(self.now.since(start));
            }
            self.step();
        }
        done(self).then(|| self.now.since(start))
    }

    /// The full sync dialogue between nodes `a` and `b`.
    fn sync(&mut self, a: usize, b: usize) {
        let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
        for _ in 0..64 {
            let m1 = self.nodes[a].state.generate_sync_message(&mut sa);
            if let Some(m) = &m1 {
                self.nodes[b]
                    .state
                    .receive_sync_message(&mut sb, m)
                    .expect("sync");
            }
            let m2 = self.nodes[b].state.generate_sync_message(&mut sb);
            if let Some(m) = &m2 {
                self.nodes[a]
                    .state
                    .receive_sync_message(&mut sa, m)
                    .expect("sync");
            }
            if m1.is_none() && m2.is_none() {
                return;
            }
        }
    }

    /// Node `i`'s simulated runtime against its assignments, through the core's reconcile.
    fn reconcile(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let desired = ClusterView::read(&node.state).desired_tasks(&node.id);
        let actual: Vec<ActualTask> = node
            .running
            .iter()
            .map(|(slot, generation)| ActualTask {
                id: slot.key(),
                slot: slot.clone(),
                generation: *generation,
                state: ActualTaskState::Running,
            })
            .collect();
        for action in reconcile(&desired, &actual) {
            match action {
                RuntimeAction::Create(task) => {
                    node.running.insert(task.slot, task.generation);
                }
                RuntimeAction::Remove { slot, .. } => {
                    node.running.remove(&slot);
                }
                RuntimeAction::Start { .. } => {}
            }
        }
    }

    /// Running replicas of `service` on up nodes.
    pub fn running(&self, service: &str) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .flat_map(|n| n.running.keys())
            .filter(|slot| slot.service.as_str() == service)
            .count()
    }

    /// Distinct running slots of `service` on up nodes (a slot running twice counts once).
    pub fn running_slots(&self, service: &str) -> BTreeSet<u32> {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .flat_map(|n| n.running.keys())
            .filter(|slot| slot.service.as_str() == service)
            .map(|slot| slot.slot)
            .collect()
    }

    /// The lease each up node's replica holds, by node index.
    pub fn leases(&self) -> BTreeMap<usize, Option<Lease>> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .map(|i| (i, self.nodes[i].state.lease()))
            .collect()
    }

    /// Invariant 3/4: every component of up nodes agrees on one lease whose holder is an up
    /// node of that component. Returns the holders by component, or why not.
    pub fn one_leader_per_component(&self) -> Result<BTreeMap<usize, NodeId>, String> {
        let mut holders = BTreeMap::new();
        for (i, lease) in self.leases() {
            let lease = lease.ok_or_else(|| format!("node {i} has no lease"))?;
            let component = self.component[i];
            match holders.get(&component) {
                None => {
                    holders.insert(component, lease.holder.clone());
                }
                Some(h) if *h == lease.holder => {}
                Some(h) => {
                    return Err(format!(
                        "component {component}: node {i} follows {} but another follows {h}",
                        lease.holder
                    ))
                }
            }
            let holder = self
                .nodes
                .iter()
                .position(|n| n.id == lease.holder)
                .ok_or("lease held by a stranger")?;
            if !self.nodes[holder].up || self.component[holder] != component {
                return Err(format!(
                    "component {component} follows {} which is not up there",
                    lease.holder
                ));
            }
        }
        Ok(holders)
    }

    /// Invariant 1: every up node holds the same document heads.
    pub fn converged(&mut self) -> bool {
        let mut heads = self
            .nodes
            .iter_mut()
            .filter(|n| n.up)
            .map(|n| n.state.heads());
        let Some(first) = heads.next() else {
            return true;
        };
        heads.all(|h| h == first)
    }

    /// A hash of every scenario event and every lease claim, with its virtual time: equal for
    /// equal seeds and scenarios.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }
}
