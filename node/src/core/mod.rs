//! The sans-IO decision core of a node: membership view, lease, scheduler and reconcile.
//!
//! Nothing here touches a socket, a clock or Docker. Events and the current time go in as
//! values ([`Millis`]), decisions come out as values ([`Action`], [`RuntimeAction`]). The
//! daemon drives it with tokio, libp2p and Docker; `warren-simulations` drives the very same
//! code with a virtual clock and a simulated network (DESIGN §2).
//!
//! ```
//! use warren_node::core::{Core, CoreConfig, Millis, ClusterView, Action};
//! use warren_crdt::{Member, MemberState, NodeId};
//!
//! let me = NodeId("A".into());
//! let mut core = Core::new(me.clone(), CoreConfig::default(), Millis(0));
//! let member = Member {
//!     id: me.clone(), name: "a".into(), addrs: vec![], labels: Default::default(),
//!     admitted_by: me.clone(), admitted_at: 0, state: MemberState::Active,
//! };
//! let view = ClusterView { members: [(me.clone(), member)].into(), ..Default::default() };
//! // A member with no lease in sight is the candidate and claims epoch 1.
//! let actions = core.tick(&view, Millis(10));
//! assert!(matches!(&actions[..], [Action::ClaimLease(l)] if l.holder == me && l.epoch.0 == 1));
//! ```

mod backoff;
mod lease;
mod membership;
mod reconcile;
mod scheduler;

use std::collections::{BTreeMap, BTreeSet};

use warren_crdt::{
    Assignment, ChangeBytes, CrdtError, DesiredState, Epoch, Fencing, Lease, Member, NodeId,
    Service, ServiceName, SlotId,
};

pub use backoff::{Backoff, BackoffConfig, MAX_BACKOFF_MS, STABLE_AFTER_MS};
pub use lease::{LeaseDecision, LeaseTracker};
pub use membership::{Liveness, MembershipView};
pub use reconcile::{
    container_for, held_status, round_statuses, short_id, task_status, ActualTask, ActualTaskState,
    Desired, DesiredTask, HeldSlot, RestartPhase, Round, RuntimeAction, Supervisor, TaskHealth,
    TaskRestartStatus, MAX_ERROR_BYTES,
};
pub use scheduler::{
    format_bytes, format_cpus, plan, plan_observed, plan_with_capacity, reservation, Capacity,
    Observations, Plan, RunningCopy,
};

/// A point on a node's monotonic clock, in milliseconds from an arbitrary origin.
/// Never a wall-clock time: edge devices' wall clocks are not trusted (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Timing of failure detection and the lease. All values in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// A member not heard from for this long is `suspect` (default 1,500).
    pub suspect_after_ms: u64,
    /// A member not heard from for this long is `down`: its slots are rescheduled (default 3,000).
    pub down_after_ms: u64,
    /// A lease not renewed for this long, by the receiver's own clock, has expired (default 3,000).
    pub lease_ttl_ms: u64,
    /// A rule broken on purpose; [`RuleBreak::None`] (the default) everywhere but in the tests
    /// that show the simulator catches a broken rule.
    pub rule_break: RuleBreak,
    /// Restore spread after a heal or a join by moving replicas start-first, one per service
    /// at a time (default on; see [`plan_observed`]).
    pub rebalance: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            suspect_after_ms: 1_500,
            down_after_ms: 3_000,
            lease_ttl_ms: 3_000,
            rule_break: RuleBreak::None,
            rebalance: true,
        }
    }
}

/// A rule of the core swapped for a deliberately wrong one. Nothing but tests uses a value other
/// than [`RuleBreak::None`]: `simulations/tests/sweep.rs` swaps each wrong rule in and shows
/// that a seed of the default sweep catches it. The daemon has no way to set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleBreak {
    /// Every rule as designed.
    #[default]
    None,
    /// The lease rule broken: a node that claimed the lease never steps down. It goes on
    /// scheduling under its own claim after a greater concurrent claim merged in, instead of
    /// following the lease in force.
    HolderNeverStepsDown,
    /// The lease merge rule broken: of concurrent claims, each replica keeps the one naming
    /// itself instead of the greatest `(epoch, holder)` ([`DesiredState::lease`]).
    OwnClaimWins,
    /// The heal's keep rule broken: nodes stop a copy of a slot assigned elsewhere at once,
    /// without waiting for the holder's judgement or the kept copy's confirmation, as before
    /// the heal rules.
    StopAtOnce,
    /// The heal's keep rule broken the other way round: of the running copies of a disputed
    /// slot the holder keeps the youngest (healthy still before unhealthy, then the lowest
    /// node id) instead of the one that has run longest.
    KeepNewest,
    /// Fencing removed (DESIGN §5), on every side at once: the document writes every
    /// assignment whatever the rank of the standing one, reads Automerge's own winner of
    /// concurrent writes instead of the greatest `(epoch, holder)` ([`Fencing::Off`]), and the
    /// machine starts containers for assignments older than one it has seen.
    NoFencing,
}

impl RuleBreak {
    /// Whether the document's assignments are fenced under this rule break: [`Fencing::On`]
    /// unless fencing is removed on purpose ([`RuleBreak::NoFencing`]).
    pub fn fencing(self) -> Fencing {
        if self == RuleBreak::NoFencing {
            Fencing::Off
        } else {
            Fencing::On
        }
    }
}

/// The parts of the desired state the core decides on, read by the caller from its replica.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Admitted members.
    pub members: BTreeMap<NodeId, Member>,
    /// Services, tombstones included.
    pub services: BTreeMap<ServiceName, Service>,
    /// Standing assignments.
    pub assignments: BTreeMap<SlotId, Assignment>,
    /// The lease in force, if any.
    pub lease: Option<Lease>,
}

impl ClusterView {
    /// Reads the view from a replica of the desired state.
    pub fn read(state: &DesiredState) -> Self {
        Self::read_fenced(state, Fencing::On)
    }

    fn read_fenced(state: &DesiredState, fencing: Fencing) -> Self {
        Self {
            members: state.members(),
            services: state.services(),
            assignments: state.assignments_with(fencing),
            lease: state.lease(),
        }
    }

    /// Reads the view as node `me` sees it under `rule_break` ([`ClusterView::read`] unless
    /// the lease merge rule is broken on purpose).
    pub fn read_as(state: &DesiredState, me: &NodeId, rule_break: RuleBreak) -> Self {
        let mut view = Self::read_fenced(state, rule_break.fencing());
        if rule_break == RuleBreak::OwnClaimWins {
            if let Some(own) = state
                .lease_claims()
                .into_iter()
                .filter(|l| l.holder == *me)
                .max()
            {
                view.lease = Some(own);
            }
        }
        view
    }

    /// The tasks assigned to `me`, each with what it should run: the input of
    /// [`Supervisor::round`].
    /// Slots of deleted services and slots beyond the replica count are not desired.
    pub fn desired_tasks(&self, me: &NodeId) -> Vec<DesiredTask> {
        self.assignments
            .iter()
            .filter(|(_, a)| a.node == *me)
            .filter_map(|(slot, a)| {
                let service = self.services.get(&slot.service).filter(|s| !s.deleted)?;
                (slot.slot < service.spec.replicas).then(|| DesiredTask {
                    slot: slot.clone(),
                    epoch: a.epoch,
                    holder: a.holder.clone(),
                    generation: service.generation,
                    spec: service.spec.clone(),
                })
            })
            .collect()
    }
}

/// A decision of [`Core::tick`] that the caller carries out on its replica of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this lease claim (the previous lease expired and this node is the candidate).
    ClaimLease(Lease),
    /// Write this scheduling round (this node holds the lease).
    WriteAssignments(Plan),
}

impl Action {
    /// Writes this decision into `state`, assignments fenced as `fencing` says ([`Fencing::On`]
    /// but in the test that removes fencing on purpose); returns the change to persist and
    /// gossip (`None` when there was nothing to write).
    ///
    /// Errors: [`CrdtError`] from the document.
    pub fn apply(
        &self,
        state: &mut DesiredState,
        fencing: Fencing,
    ) -> Result<Option<ChangeBytes>, CrdtError> {
        match self {
            Action::ClaimLease(lease) => state.claim_lease(lease).map(Some),
            Action::WriteAssignments(plan) => {
                state.write_assignments_with(&plan.put, &plan.remove, fencing)
            }
        }
    }
}

/// One node's decision core: membership view + lease tracker + scheduler.
#[derive(Debug)]
pub struct Core {
    me: NodeId,
    config: CoreConfig,
    membership: MembershipView,
    lease: LeaseTracker,
    last_decision: Option<LeaseDecision>,
    /// Members' capacities as their heartbeats (or this node itself) last said.
    capacity: BTreeMap<NodeId, Capacity>,
    /// Per slot, the nodes whose heartbeats said its task `failed` (out of restart attempts),
    /// each with the service generation in force when it said so.
    failed_on: BTreeMap<SlotId, BTreeMap<NodeId, u64>>,
    /// Running copies per slot and the nodes with fresh reports, as last given by
    /// [`Core::set_running_copies`].
    copies: BTreeMap<SlotId, Vec<RunningCopy>>,
    reported: BTreeSet<NodeId>,
    /// The live members at the last round, and when the cluster last changed (live members,
    /// or a round that placed, moved or removed anything): rebalancing waits for
    /// [`REBALANCE_QUIET_MS`] of calm, so a heal settles before spread is restored.
    last_live: BTreeSet<NodeId>,
    last_change: Millis,
}

/// How long the cluster must be calm (no member coming or going, no slot placed, moved or
/// removed) before the holder rebalances, in milliseconds: a heal's disputes are settled
/// first, and spread is restored after, one replica of a service at a time.
pub const REBALANCE_QUIET_MS: u64 = 10_000;

impl Core {
    /// A core for node `me`, started at `now`.
    pub fn new(me: NodeId, config: CoreConfig, now: Millis) -> Self {
        Self {
            membership: MembershipView::new(me.clone(), config, now),
            lease: LeaseTracker::new(config.lease_ttl_ms, now, config.rule_break),
            me,
            config,
            last_decision: None,
            capacity: BTreeMap::new(),
            failed_on: BTreeMap::new(),
            copies: BTreeMap::new(),
            reported: BTreeSet::new(),
            last_live: BTreeSet::new(),
            last_change: now,
        }
    }

    /// What the nodes with fresh reports (`reported`, this node included) say runs: per slot,
    /// each running copy, assigned to its node or not. The next scheduling rounds judge
    /// disputes and keep what runs from it ([`plan_observed`]); replaces the previous set.
    pub fn set_running_copies(
        &mut self,
        copies: BTreeMap<SlotId, Vec<RunningCopy>>,
        reported: BTreeSet<NodeId>,
    ) {
        self.copies = copies;
        self.reported = reported;
    }

    /// `node` reported the task of `slot`: `failed` (out of restart attempts) or not, under
    /// the service generation `generation` as this node's view has it. A failed report makes
    /// the scheduler move the slot to another node (see [`plan_with_capacity`]); any other
    /// report from that node, or a new generation, forgets it.
    pub fn task_reported(&mut self, node: &NodeId, slot: &SlotId, generation: u64, failed: bool) {
        if failed {
            self.failed_on
                .entry(slot.clone())
                .or_default()
                .insert(node.clone(), generation);
        } else if let Some(nodes) = self.failed_on.get_mut(slot) {
            nodes.remove(node);
            if nodes.is_empty() {
                self.failed_on.remove(slot);
            }
        }
    }

    /// The nodes each slot failed on under its service's current generation; drops reports
    /// of older generations and of services gone.
    fn unrunnable(&mut self, view: &ClusterView) -> BTreeMap<SlotId, BTreeSet<NodeId>> {
        self.failed_on.retain(|slot, nodes| {
            let current = view
                .services
                .get(&slot.service)
                .filter(|s| !s.deleted)
                .map(|s| s.generation);
            nodes.retain(|_, generation| Some(*generation) == current);
            !nodes.is_empty()
        });
        self.failed_on
            .iter()
            .map(|(slot, nodes)| (slot.clone(), nodes.keys().cloned().collect()))
            .collect()
    }

    /// What the lease looked like from here at the last [`Core::tick`]: whether this node
    /// believes it holds the lease (and schedules) or follows one. `None` before the first tick.
    pub fn last_decision(&self) -> Option<&LeaseDecision> {
        self.last_decision.as_ref()
    }

    /// What `node` offers to reservations, from its heartbeat (or this node's own reading);
    /// `None` forgets it (the scheduler then puts no limit on the node).
    pub fn set_capacity(&mut self, node: &NodeId, capacity: Option<Capacity>) {
        match capacity {
            Some(c) => {
                self.capacity.insert(node.clone(), c);
            }
            None => {
                self.capacity.remove(node);
            }
        }
    }

    /// The capacities known, by node.
    pub fn capacities(&self) -> &BTreeMap<NodeId, Capacity> {
        &self.capacity
    }

    /// One scheduling round under `lease` at `now`, with what this node knows: live members,
    /// their capacities, and where slots failed.
    fn plan(&mut self, view: &ClusterView, lease: &Lease, now: Millis) -> Plan {
        let live = self.live_members(view, now);
        if live != self.last_live {
            self.last_live = live.clone();
            self.last_change = now;
        }
        let mut observed = Observations {
            capacity: self.capacity.clone(),
            unrunnable: self.unrunnable(view),
            copies: self.copies.clone(),
            reported: self.reported.clone(),
            rebalance: false,
            rule_break: self.config.rule_break,
            silent_ms: view
                .members
                .keys()
                .filter(|n| !live.contains(*n))
                .map(|n| (n.clone(), self.membership.silent_ms(n, now)))
                .collect(),
        };
        let round = |observed: &Observations| {
            plan_observed(
                &view.services,
                &view.members,
                &live,
                &view.assignments,
                lease,
                observed,
            )
        };
        let plan = round(&observed);
        if !plan.is_empty() {
            self.last_change = now;
            return plan;
        }
        if !self.config.rebalance || now.since(self.last_change) < REBALANCE_QUIET_MS {
            return plan;
        }
        observed.rebalance = true;
        round(&observed)
    }

    /// Why each unassigned slot of a live service waits, as the scheduler would say it at
    /// `now` with what this node knows (any node can answer, not only the lease holder).
    pub fn pending_reasons(&mut self, view: &ClusterView, now: Millis) -> BTreeMap<SlotId, String> {
        let lease = view.lease.clone().unwrap_or(Lease {
            epoch: Epoch(0),
            holder: self.me.clone(),
        });
        self.plan(view, &lease, now)
            .pending
            .into_iter()
            .filter(|(slot, _)| !view.assignments.contains_key(slot))
            .collect()
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The timing in use.
    pub fn config(&self) -> CoreConfig {
        self.config
    }

    /// A heartbeat from `from` arrived at `now`; `held_lease` is the lease epoch the sender
    /// says it holds (a renewal), if any.
    pub fn handle_heartbeat(&mut self, from: &NodeId, held_lease: Option<Epoch>, now: Millis) {
        self.membership.heard(from, now);
        if let Some(epoch) = held_lease {
            self.lease.on_renewal(from, epoch, now);
        }
    }

    /// Milliseconds `peer` has been silent at `now`, by this node's clock.
    pub fn silent_ms(&self, peer: &NodeId, now: Millis) -> u64 {
        self.membership.silent_ms(peer, now)
    }

    /// How `peer` looks from here at `now`.
    pub fn liveness(&self, peer: &NodeId, now: Millis) -> Liveness {
        self.membership.liveness(peer, now)
    }

    /// Active members that are not down at `now`, this node included.
    pub fn live_members(&self, view: &ClusterView, now: Millis) -> BTreeSet<NodeId> {
        self.membership.live(view.members.values(), now)
    }

    /// The lease epoch this node holds according to `view`, to announce in its heartbeat.
    pub fn held_lease(&self, view: &ClusterView) -> Option<Epoch> {
        view.lease
            .as_ref()
            .filter(|l| l.holder == self.me)
            .map(|l| l.epoch)
    }

    /// What the lease looks like from here at `now`.
    pub fn lease_decision(&mut self, view: &ClusterView, now: Millis) -> LeaseDecision {
        self.lease.observe(view.lease.as_ref(), now);
        let live = self.live_members(view, now);
        self.lease.decide(&self.me, view.lease.as_ref(), &live, now)
    }

    /// One round of decisions at `now`: claim the lease if it expired and this node is the
    /// candidate; schedule if this node holds it.
    pub fn tick(&mut self, view: &ClusterView, now: Millis) -> Vec<Action> {
        let decision = self.lease_decision(view, now);
        self.last_decision = Some(decision.clone());
        match decision {
            LeaseDecision::Claim(lease) => {
                self.lease.claimed(&lease);
                vec![Action::ClaimLease(lease)]
            }
            LeaseDecision::Holder(lease) => {
                let plan = self.plan(view, &lease, now);
                if plan.is_empty() {
                    vec![]
                } else {
                    vec![Action::WriteAssignments(plan)]
                }
            }
            LeaseDecision::Follower { .. } | LeaseDecision::Vacant { .. } => vec![],
        }
    }
}
