//! The sans-IO decision core of a node: membership view, lease, scheduler and reconcile.
//!
//! Nothing here touches a socket, a clock or Docker. Events and the current time go in as
//! values ([`Millis`]), decisions come out as values ([`Action`], [`RuntimeAction`]). The
//! daemon drives it with tokio, libp2p and Docker; `warren-simulations` drives the very same
//! code with a virtual clock and a simulated network (DESIGN §2).
//!
//! ```
//! use warren_core::core::{Core, CoreConfig, Millis, ClusterView, Action};
//! use warren_crdt::{Member, MemberState, NodeId};
//!
//! let me = NodeId("A".into());
//! let mut core = Core::new(me.clone(), CoreConfig::default(), Millis(0));
//! let member = Member {
//!     id: me.clone(), name: "a".into(), addrs: vec![], labels: Default::default(),
//!     capabilities: Default::default(), platform: Default::default(),
//!     admitted_by: me.clone(), admitted_at: 0, state: MemberState::Active,
//!     availability: Default::default(),
//! };
//! let view = ClusterView { members: [(me.clone(), member)].into(), ..Default::default() };
//! // A member with no lease in sight is the candidate and claims epoch 1.
//! let actions = core.tick(&view, Millis(10));
//! assert!(matches!(&actions[..], [Action::ClaimLease(l)] if l.holder == me && l.epoch.0 == 1));
//! ```

pub mod availability;
mod backoff;
mod candidates;
pub mod global;
pub mod gpus;
pub mod image_platform;
pub mod ingress;
mod lease;
mod membership;
mod plumtree;
mod reconcile;
pub mod rollout;
mod scheduler;
mod swim;
pub mod volumes;

use std::collections::{BTreeMap, BTreeSet};

use warren_crdt::{
    Assignment, ChangeBytes, ClusterSettings, CrdtError, DesiredState, Epoch, Fencing, Lease,
    Member, NodeId, Service, ServiceName, SlotId, Touched,
};

pub use backoff::{Backoff, BackoffConfig, MAX_BACKOFF_MS, STABLE_AFTER_MS};
pub use lease::{LeaseDecision, LeaseTracker};
pub use membership::Liveness;
pub use plumtree::{MessageId, PlumConfig, PlumMessage, PlumStats, Plumtree, MAX_SEEDS};
pub use reconcile::{
    container_for, held_status, round_statuses, short_id, task_status, ActualTask, ActualTaskState,
    Desired, DesiredTask, HeldSlot, PreviousCopy, RestartPhase, Round, RuntimeAction, Supervisor,
    TaskHealth, TaskRestartStatus, MAX_ERROR_BYTES,
};
pub use scheduler::{
    format_bytes, format_cpus, plan, plan_observed, plan_with_capacity, reservation,
    service_wanting, Capacity, Observations, Plan, RunningCopy, Services,
};
pub use swim::{
    reply_of_live_member, Kind as SwimKind, Swim, SwimConfig, SwimMessage, SwimStats,
    Update as SwimUpdate, UpdateState as SwimUpdateState, MAX_ID_BYTES, MAX_UPDATES_READ,
    SUSPICION_CONFIRMATIONS,
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
    /// Membership and failure detection (SWIM with Lifeguard's refinements): when a member
    /// is `suspect`, then `down` (its slots are rescheduled).
    pub swim: SwimConfig,
    /// A lease not renewed for this long, by the receiver's own clock, has expired (default 2,000).
    pub lease_ttl_ms: u64,
    /// A rule broken on purpose; [`RuleBreak::None`] (the default) everywhere but in the tests
    /// that show the simulator catches a broken rule.
    pub rule_break: RuleBreak,
    /// Whether this process may restore spread after a heal or a join by moving replicas
    /// start-first, one per service at a time (default on; see [`plan_observed`]). The
    /// operator's switch is the cluster setting [`ClusterSettings::rebalance`] in the
    /// document, which every peer obeys: the holder rebalances only when both allow it
    /// ([`Core::rebalances`]). Only tests and simulations turn this off; the daemon cannot.
    pub rebalance: bool,
    /// The period at which the driver calls [`Core::tick`] (default 250, the daemon's). A gap
    /// between two ticks longer than twice this means this node itself was not running (a
    /// starved or paused process): that much silence is not held against its peers or the
    /// lease (see [`Core::tick`]).
    pub tick_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            swim: SwimConfig::default(),
            lease_ttl_ms: 2_000,
            rule_break: RuleBreak::None,
            rebalance: true,
            tick_ms: 250,
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
    /// The failed-task move removed: the holder ignores the nodes' reports of tasks `failed`
    /// (out of restart attempts), so such a task stays assigned where it failed.
    NoFailedMove,
    /// The rollout heal rules removed ([`rollout::record_of`]): after the merge of
    /// concurrent updates, the holder keeps the record as written (one for a generation the
    /// merged document no longer reads, so no rollout), and a `completed` record stays
    /// completed when the merge brought back slots of an older generation.
    NoRolloutHeal,
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Admitted members.
    pub members: BTreeMap<NodeId, Member>,
    /// Services, tombstones included. A persistent map: a clone shares the table (O(1)),
    /// so the API snapshot and the cached view hold one copy of every service.
    pub services: Services,
    /// Standing assignments.
    pub assignments: BTreeMap<SlotId, Assignment>,
    /// The lease in force, if any.
    pub lease: Option<Lease>,
    /// The cluster settings in force (defaults when the document holds none).
    pub settings: ClusterSettings,
    /// The live services whose spec fails
    /// [`ServiceSpec::validate`](warren_crdt::ServiceSpec::validate), with the reason: kept
    /// by [`ClusterView::read`] and [`ClusterView::refresh`] so that a tick does not validate
    /// every service again. A view built by hand sets it with [`ClusterView::revalidate`].
    pub rejected: BTreeMap<ServiceName, String>,
    /// The volume records, by name (the scheduler's volume rule reads them).
    pub volumes: BTreeMap<String, warren_crdt::Volume>,
}

/// Why a live service is never run (its spec fails validation), or `None`: a deleted
/// service is not judged.
fn rejection(service: &Service) -> Option<String> {
    if service.deleted {
        return None;
    }
    service.spec.validate().err().map(|e| e.to_string())
}

impl ClusterView {
    /// Reads the view from a replica of the desired state.
    pub fn read(state: &DesiredState) -> Self {
        Self::read_fenced(state, Fencing::On)
    }

    fn read_fenced(state: &DesiredState, fencing: Fencing) -> Self {
        let mut view = Self {
            members: state.members(),
            services: state.services().into(),
            assignments: state.assignments_with(fencing),
            lease: state.lease(),
            settings: state.cluster_settings(),
            rejected: BTreeMap::new(),
            volumes: state.volumes(),
        };
        view.revalidate();
        view
    }

    /// Validates every live service again into [`ClusterView::rejected`]: O(services).
    pub fn revalidate(&mut self) {
        self.rejected = self
            .services
            .iter()
            .filter_map(|(name, service)| Some((name.clone(), rejection(service)?)))
            .collect();
    }

    /// Reads the view as node `me` sees it under `rule_break` ([`ClusterView::read`] unless
    /// the lease merge rule is broken on purpose).
    pub fn read_as(state: &DesiredState, me: &NodeId, rule_break: RuleBreak) -> Self {
        let mut view = Self::read_fenced(state, rule_break.fencing());
        view.lease = Self::lease_as(state, me, rule_break);
        view
    }

    /// The lease in force as `me` sees it: the document's (greatest `(epoch, holder)`), or
    /// under [`RuleBreak::OwnClaimWins`] its own greatest claim if it made one.
    fn lease_as(state: &DesiredState, me: &NodeId, rule_break: RuleBreak) -> Option<Lease> {
        let own = (rule_break == RuleBreak::OwnClaimWins)
            .then(|| {
                state
                    .lease_claims()
                    .into_iter()
                    .filter(|l| l.holder == *me)
                    .max()
            })
            .flatten();
        own.or_else(|| state.lease())
    }

    /// Brings a view read by [`ClusterView::read_as`] from `state` up to date with the
    /// changes since, `touched` ([`DesiredState::take_touched`]): re-reads only the services,
    /// assignments and small parts they name, so the result is what `read_as` would give now.
    pub fn refresh(
        &mut self,
        state: &DesiredState,
        touched: &Touched,
        me: &NodeId,
        rule_break: RuleBreak,
    ) {
        if touched.all {
            *self = Self::read_as(state, me, rule_break);
            return;
        }
        for name in &touched.services {
            let Ok(name) = ServiceName::new(name.clone()) else {
                continue;
            };
            match state.service_record(&name) {
                Some(service) => {
                    match rejection(&service) {
                        Some(reason) => self.rejected.insert(name.clone(), reason),
                        None => self.rejected.remove(&name),
                    };
                    self.services.insert(name, service);
                }
                None => {
                    self.rejected.remove(&name);
                    self.services.remove(&name);
                }
            }
        }
        for key in &touched.assignments {
            let Some(slot) = SlotId::parse(key) else {
                continue;
            };
            match state.assignment_of(&slot, rule_break.fencing()) {
                Some(a) => {
                    self.assignments.insert(slot, a);
                }
                None => {
                    self.assignments.remove(&slot);
                }
            }
        }
        if touched.members {
            self.members = state.members();
        }
        if touched.cluster {
            self.settings = state.cluster_settings();
        }
        if touched.volumes {
            self.volumes = state.volumes();
        }
        if touched.lease {
            self.lease = Self::lease_as(state, me, rule_break);
        }
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
                // Each slot runs its assignment's generation (a rollout moves it on); a
                // generation no longer kept runs the current spec.
                let spec = service.spec_for(a.spec_generation).unwrap_or(&service.spec);
                service.spec.wants_slot(slot.slot).then(|| DesiredTask {
                    slot: slot.clone(),
                    epoch: a.epoch,
                    holder: a.holder.clone(),
                    generation: a.spec_generation,
                    spec: spec.clone(),
                    volumes: spec
                        .mounts
                        .iter()
                        .filter_map(|m| self.volumes.get(&m.source).cloned())
                        .collect(),
                    gpus: a.gpus.clone(),
                    previous: rollout::previous_copy(service, a.spec_generation),
                    same_tasks_as: rollout::same_tasks_generations(service, a.spec_generation),
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
    /// Write this rollout record of a service (the rollout engine, [`rollout`]).
    SetRollout(ServiceName, warren_crdt::Rollout),
    /// Roll the service back (its rollout's failure action is `rollback`), if it is still
    /// at `generation` (the one that failed): [`DesiredState::rollback_service`].
    Rollback {
        /// The service.
        service: ServiceName,
        /// The generation whose rollout failed.
        generation: u64,
    },
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
            Action::SetRollout(service, record) => {
                let change = state.set_rollout(service, record)?;
                Ok((!change.is_empty()).then_some(change))
            }
            Action::Rollback {
                service,
                generation,
            } => {
                let current = state.service_record(service).map(|s| s.generation);
                if current != Some(*generation) {
                    return Ok(None);
                }
                state.rollback_service(service).map(Some)
            }
        }
    }
}

/// A seed for `me`'s random choices (whom to probe): derived from its id, so a simulation
/// replays exactly and two nodes do not choose alike.
fn seed_of(me: &NodeId) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same on every run and platform.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    me.hash(&mut h);
    h.finish()
}

/// One node's decision core: membership (SWIM) + lease tracker + scheduler.
#[derive(Debug)]
pub struct Core {
    me: NodeId,
    config: CoreConfig,
    membership: Swim,
    lease: LeaseTracker,
    last_decision: Option<LeaseDecision>,
    /// Members' capacities as their heartbeats (or this node itself) last said.
    capacity: BTreeMap<NodeId, Capacity>,
    /// Members' GPU device ids as their heartbeats (or this node itself) last said.
    gpus: gpus::NodeGpus,
    /// What members' heartbeats (or this node itself) last said of their images' platforms.
    images: BTreeMap<NodeId, Vec<image_platform::ImageReport>>,
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
    /// When [`Core::tick`] last ran.
    last_tick: Option<Millis>,
    /// See [`Core::set_merge_incomplete`].
    merge_incomplete: bool,
    /// The rollout engine's memory (this node's while it holds the lease).
    rollouts: rollout::Rollouts,
    /// The fresh task reports of slots whose service rolls out ([`Core::set_slot_reports`]).
    slot_reports: rollout::SlotReports,
}

/// How long the cluster must be calm (no member coming or going, no slot placed, moved or
/// removed) before the holder rebalances, in milliseconds: a heal's disputes are settled
/// first, and spread is restored after, one replica of a service at a time. The holder
/// never rebalances while an active member is down (a partition): `node rm` of a dead
/// device lets spread resume.
pub const REBALANCE_QUIET_MS: u64 = 10_000;

impl Core {
    /// A core for node `me`, started at `now`.
    pub fn new(me: NodeId, config: CoreConfig, now: Millis) -> Self {
        Self {
            membership: Swim::new(me.clone(), config.swim, now, seed_of(&me)),
            lease: LeaseTracker::new(config.lease_ttl_ms, now, config.rule_break),
            me,
            config,
            last_decision: None,
            capacity: BTreeMap::new(),
            gpus: BTreeMap::new(),
            images: BTreeMap::new(),
            failed_on: BTreeMap::new(),
            copies: BTreeMap::new(),
            reported: BTreeSet::new(),
            last_live: BTreeSet::new(),
            last_change: now,
            last_tick: None,
            merge_incomplete: false,
            rollouts: rollout::Rollouts::with_heal_rules(
                config.rule_break != RuleBreak::NoRolloutHeal,
            ),
            slot_reports: rollout::SlotReports::new(),
        }
    }

    /// The fresh task reports (every node's, this node's included) of the slots of services
    /// whose rollout is `updating`: what the rollout engine watches when this node holds
    /// the lease ([`rollout::Rollouts::round`]). Replaces the previous set.
    pub fn set_slot_reports(&mut self, reports: rollout::SlotReports) {
        self.slot_reports = reports;
    }

    /// The rollout engine's round after the scheduling round `plan` under `lease`: its
    /// moves (as one more assignment write), record writes and rollbacks. Reads the live
    /// members of the scheduling round that just ran.
    fn rollout_actions(
        &mut self,
        view: &ClusterView,
        plan: &Plan,
        lease: &Lease,
        now: Millis,
    ) -> Vec<Action> {
        let touched: BTreeSet<SlotId> = plan
            .put
            .iter()
            .map(|(slot, _)| slot.clone())
            .chain(plan.remove.iter().cloned())
            .collect();
        let decisions = self.rollouts.round(rollout::RolloutInput {
            services: &view.services,
            assignments: &view.assignments,
            reports: &self.slot_reports,
            live: &self.last_live,
            lease,
            touched: &touched,
            capacity: &self.capacity,
            now,
        });
        let mut actions = Vec::new();
        if !decisions.moves.is_empty() {
            self.last_change = now;
            actions.push(Action::WriteAssignments(Plan {
                put: decisions.moves,
                ..Plan::default()
            }));
        }
        actions.extend(
            decisions
                .records
                .into_iter()
                .map(|(name, record)| Action::SetRollout(name, record)),
        );
        actions.extend(
            decisions
                .rollbacks
                .into_iter()
                .map(|(service, generation)| Action::Rollback {
                    service,
                    generation,
                }),
        );
        actions
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
        if self.config.rule_break == RuleBreak::NoFailedMove {
            return BTreeMap::new();
        }
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

    /// `node`'s GPU device ids, from its heartbeat (or this node's own reading), in report
    /// order; `None` forgets them (no slot wanting GPUs goes there).
    pub fn set_gpus(&mut self, node: &NodeId, gpus: Option<Vec<String>>) {
        match gpus {
            Some(g) => {
                self.gpus.insert(node.clone(), g);
            }
            None => {
                self.gpus.remove(node);
            }
        }
    }

    /// What `node` knows of its images' platforms, from its heartbeat (or this node's own
    /// reading); empty forgets it.
    pub fn set_images(&mut self, node: &NodeId, images: Vec<image_platform::ImageReport>) {
        if images.is_empty() {
            self.images.remove(node);
        } else {
            self.images.insert(node.clone(), images);
        }
    }

    /// The GPU device ids known, by node.
    pub fn gpus(&self) -> &gpus::NodeGpus {
        &self.gpus
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
            gpus: self.gpus.clone(),
            image_platforms: image_platform::restrictions(self.images.values().flatten()),
            unrunnable: self.unrunnable(view),
            copies: self.copies.clone(),
            reported: self.reported.clone(),
            rebalance: false,
            rule_break: self.config.rule_break,
            merge_incomplete: self.merge_incomplete,
            volumes: view.volumes.clone(),
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
        if !self.rebalances(view) || now.since(self.last_change) < REBALANCE_QUIET_MS {
            return plan;
        }
        // Spread waits for the whole cluster: while an active member is down (a partition,
        // a dead device not yet removed), a move would stop a running copy on this side for
        // no loss (DESIGN §7, invariant 6) and add churn to the heal's disputes. Found by
        // `warren-sim run --nodes 5 --seed 6 --scenario long-partition`.
        let active = view
            .members
            .values()
            .filter(|m| m.state == warren_crdt::MemberState::Active)
            .count();
        if live.len() < active {
            return plan;
        }
        observed.rebalance = true;
        round(&observed)
    }

    /// Whether the holder may move replicas for spread under `view`: the cluster setting
    /// (the document's, the same on every peer that merged it) and this process's
    /// [`CoreConfig::rebalance`] both allow it. The one place the rule is decided.
    pub fn rebalances(&self, view: &ClusterView) -> bool {
        self.config.rebalance && view.settings.rebalance
    }

    /// Why each unassigned slot of a live service waits, as the scheduler would say it at
    /// `now` with what this node knows (any node can answer, not only the lease holder).
    pub fn pending_reasons(&mut self, view: &ClusterView, now: Millis) -> BTreeMap<SlotId, String> {
        self.unplaced_reasons(view, now)
            .into_iter()
            .filter(|(slot, _)| !view.assignments.contains_key(slot))
            .collect()
    }

    /// Why each slot the scheduler could not place this round waits, assigned or not (a
    /// slot on a drained node that has nowhere to go keeps its assignment and is listed).
    pub fn unplaced_reasons(
        &mut self,
        view: &ClusterView,
        now: Millis,
    ) -> BTreeMap<SlotId, String> {
        let lease = view.lease.clone().unwrap_or(Lease {
            epoch: Epoch(0),
            holder: self.me.clone(),
        });
        self.plan(view, &lease, now).pending.into_iter().collect()
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The timing in use.
    pub fn config(&self) -> CoreConfig {
        self.config
    }

    /// `from` renewed the lease of epoch `epoch` (its renewal arrived at `now`).
    pub fn handle_renewal(&mut self, from: &NodeId, epoch: Epoch, now: Millis) {
        self.lease.on_renewal(from, epoch, now);
    }

    /// A SWIM message from member `from` arrived at `now`; what it answers is queued
    /// ([`Core::poll_swim`]).
    pub fn handle_swim(&mut self, from: &NodeId, message: SwimMessage, now: Millis) {
        self.membership.handle(from, message, now);
    }

    /// A connection to member `from` opened at `now`: direct evidence that it runs
    /// ([`Swim::connected`]).
    pub fn connected(&mut self, from: &NodeId, now: Millis) {
        self.membership.connected(from, now);
    }

    /// The members failure detection watches: the desired state's, not removed.
    pub fn set_members<'a>(&mut self, members: impl IntoIterator<Item = &'a NodeId>) {
        self.membership.set_members(members);
    }

    /// The next SWIM message to send, `(to, message)`.
    pub fn poll_swim(&mut self) -> Option<(NodeId, SwimMessage)> {
        self.membership.poll_send()
    }

    /// The latest instant failure detection or the lease needs the next tick: SWIM's next
    /// deadline ([`Swim::poll_timeout`]) and, while another node holds the lease, the instant
    /// its renewals will have been silent for half the TTL (the holder is suspected, see
    /// [`Core::tick`]) and for the whole TTL (the lease expires), as of the last tick. Not
    /// before `now`.
    pub fn swim_timeout(&self, now: Millis) -> Millis {
        let mut due = self.membership.poll_timeout(now);
        if let (Some(LeaseDecision::Follower { expires_in_ms, .. }), Some(last)) =
            (&self.last_decision, self.last_tick)
        {
            let half = self.config.lease_ttl_ms / 2;
            let expiry = last.0.saturating_add(*expires_in_ms);
            let suspicion = expiry.saturating_sub(half);
            let next = if suspicion > last.0 {
                suspicion
            } else {
                expiry
            };
            due = due.min(Millis(next.saturating_add(1)).max(now));
        }
        due
    }

    /// The failure detector (its incarnation, local health and counters).
    pub fn swim(&self) -> &Swim {
        &self.membership
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
        view.members
            .values()
            .filter(|m| m.state == warren_crdt::MemberState::Active)
            .filter(|m| self.membership.liveness(&m.id, now) != Liveness::Down)
            .map(|m| m.id.clone())
            .collect()
    }

    /// The lease epoch this node holds according to `view`, to renew.
    pub fn held_lease(&self, view: &ClusterView) -> Option<Epoch> {
        view.lease
            .as_ref()
            .filter(|l| l.holder == self.me)
            .map(|l| l.epoch)
    }

    /// What the lease looks like from here at `now`.
    pub fn lease_decision(&mut self, view: &ClusterView, now: Millis) -> LeaseDecision {
        self.lease.observe(view.lease.as_ref(), now);
        // The live members as `live_members` has them (ascending id), walked lazily: only an
        // expired lease needs them, and building the set every tick was a quiet node's
        // largest cost at 1,000 members.
        let membership = &self.membership;
        let live = view
            .members
            .values()
            .filter(|m| m.state == warren_crdt::MemberState::Active)
            .filter(|m| membership.liveness(&m.id, now) != Liveness::Down)
            .map(|m| &m.id);
        self.lease.decide(&self.me, view.lease.as_ref(), live, now)
    }

    /// Tells the scheduler whether this node's replica holds a partial merge (see
    /// [`Observations::merge_incomplete`]): while it does, a scale down's slots are not
    /// removed, for the rest of the merge may raise the count again. The caller bounds how
    /// long it says so (the machine: [`crate::machine::MERGE_WAIT_MS`]), so history that
    /// never arrives cannot hold scale downs back for good.
    pub fn set_merge_incomplete(&mut self, incomplete: bool) {
        self.merge_incomplete = incomplete;
    }

    /// One round of decisions at `now`: claim the lease if it expired and this node is the
    /// candidate, and schedule under the claim at once; schedule if this node holds it.
    ///
    /// A round that comes more than two tick periods ([`CoreConfig::tick_ms`]) after the
    /// previous one found this node not running for the excess (a starved or paused process):
    /// first, that excess is credited to every peer's silence and to the lease's renewal, so
    /// a node that could not listen does not write its peers off or claim the lease for it.
    /// This is Lifeguard's local-health idea (Dadgar et al., "Lifeguard: Local Health
    /// Awareness for More Accurate Failure Detection", 2018) in its simplest form.
    pub fn tick(&mut self, view: &ClusterView, now: Millis) -> Vec<Action> {
        if let Some(last) = self.last_tick {
            let stalled = now
                .since(last)
                .saturating_sub(self.config.tick_ms.saturating_mul(2));
            if stalled > 0 {
                self.membership.credit(stalled, now);
                self.lease.credit(stalled, now);
            }
        }
        self.last_tick = Some(now);
        self.membership.tick(now);
        let decision = self.lease_decision(view, now);
        // The holder's renewals stopped for half the TTL: this node suspects it (a SWIM
        // suspicion by this node, told at once to the holder, which refutes it if it runs
        // and hears of it, and to a few others). Every node sees the same silence at about
        // the same time, so the suspicion is confirmed at once and runs its shortest: the
        // dead holder is down (its slots move) about when its lease expires, not a probe
        // round and a lone suspicion later. The claim still waits for the whole TTL.
        let half_silent = match &decision {
            LeaseDecision::Claim(_) | LeaseDecision::Vacant { .. } => true,
            LeaseDecision::Follower { expires_in_ms, .. } => {
                expires_in_ms.saturating_mul(2) <= self.config.lease_ttl_ms
            }
            LeaseDecision::Holder(_) => false,
        };
        if half_silent {
            if let Some(lease) = view.lease.as_ref().filter(|l| l.holder != self.me) {
                self.membership.suspect(&lease.holder, now);
            }
        }
        self.last_decision = Some(decision.clone());
        match decision {
            LeaseDecision::Claim(lease) => {
                self.lease.claimed(&lease);
                // The claim is this node's to act on now: a failover waits no extra round.
                let plan = self.plan(view, &lease, now);
                let rollouts = self.rollout_actions(view, &plan, &lease, now);
                let mut actions = vec![Action::ClaimLease(lease)];
                if !plan.is_empty() {
                    actions.push(Action::WriteAssignments(plan));
                }
                actions.extend(rollouts);
                actions
            }
            LeaseDecision::Holder(lease) => {
                let plan = self.plan(view, &lease, now);
                let rollouts = self.rollout_actions(view, &plan, &lease, now);
                let mut actions = Vec::new();
                if !plan.is_empty() {
                    actions.push(Action::WriteAssignments(plan));
                }
                actions.extend(rollouts);
                actions
            }
            LeaseDecision::Follower { .. } | LeaseDecision::Vacant { .. } => {
                // A holder that lost the lease forgets its monitors: if it holds the lease
                // again, it watches afresh (see `rollout`).
                self.rollouts.clear();
                vec![]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{MemberState, Service, ServiceSpec};

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    /// Members `a`, `b`, `c`; lease held by `c` at epoch 1; service `web` of two replicas,
    /// slot 0 on `b`, slot 1 on `c`.
    fn view() -> ClusterView {
        let member = |s: &str| {
            (
                id(s),
                Member {
                    id: id(s),
                    name: s.into(),
                    addrs: Vec::new(),
                    labels: BTreeMap::new(),
                    capabilities: Default::default(),
                    platform: Default::default(),
                    admitted_by: id("a"),
                    admitted_at: 0,
                    state: MemberState::Active,
                    availability: Default::default(),
                },
            )
        };
        let name = ServiceName::new("web").expect("name");
        let service = Service {
            name: name.clone(),
            generation: 1,
            deleted: false,
            previous_spec: None,
            older_specs: Default::default(),
            rollout: None,
            spec: ServiceSpec {
                image: "img".into(),
                replicas: 2,
                ..Default::default()
            },
        };
        let lease = Lease {
            epoch: Epoch(1),
            holder: id("c"),
        };
        let assign = |slot: u32, node: &str| {
            (
                SlotId {
                    service: name.clone(),
                    slot,
                },
                Assignment {
                    node: id(node),
                    epoch: Epoch(1),
                    holder: id("c"),
                    spec_generation: 1,
                    displaced: Vec::new(),
                    gpus: Vec::new(),
                },
            )
        };
        let assignments = [assign(0, "b"), assign(1, "c")].into();
        ClusterView {
            members: [member("a"), member("b"), member("c")].into(),
            services: Services::from(vec![(name, service)]),
            assignments,
            lease: Some(lease),
            settings: ClusterSettings::default(),
            rejected: BTreeMap::new(),
            volumes: BTreeMap::new(),
        }
    }

    /// Answers, as the peers in `up`, every SWIM message `core` queued at `now` (see
    /// [`swim::reply_of_live_member`]); messages to anyone else are lost.
    fn answer(core: &mut Core, up: &[&str], now: Millis) {
        let is_up = |n: &NodeId| up.iter().any(|u| id(u) == *n);
        let mut replies = Vec::new();
        while let Some((to, message)) = core.poll_swim() {
            if is_up(&to) {
                if let Some(reply) = swim::reply_of_live_member(&to, &message, is_up) {
                    replies.push((to, reply));
                }
            }
        }
        for (from, reply) in replies {
            core.handle_swim(&from, reply, now);
        }
    }

    /// Ticks `core` every tick period from `from` to `to` (excluded): `b` answers its probes
    /// throughout, `c` answers and renews its lease until `c_dies`; returns the actions of
    /// each round.
    fn run(
        core: &mut Core,
        view: &ClusterView,
        from: u64,
        to: u64,
        c_dies: u64,
    ) -> Vec<(u64, Vec<Action>)> {
        core.set_members(view.members.keys());
        let mut rounds = Vec::new();
        let mut t = from;
        while t < to {
            let up: &[&str] = if t < c_dies { &["b", "c"] } else { &["b"] };
            if t < c_dies {
                core.handle_renewal(&id("c"), Epoch(1), Millis(t));
            }
            rounds.push((t, core.tick(view, Millis(t))));
            answer(core, up, Millis(t));
            t += core.config().tick_ms;
        }
        rounds
    }

    #[test]
    fn the_candidate_claims_the_lease_and_schedules_the_dead_holders_slots_once_it_is_down() {
        let view = view();
        let mut core = Core::new(id("a"), CoreConfig::default(), Millis(0));
        let rounds = run(&mut core, &view, 0, 12_000, 1_000);
        let (claimed_at, actions) = rounds
            .iter()
            .find(|(_, a)| !a.is_empty())
            .expect("a claim after the holder's death");
        // The lease expires a TTL (2 s) after the last renewal, by this node's clock.
        assert!(
            (3_000..=3_500).contains(claimed_at),
            "claimed at {claimed_at}"
        );
        let Some(Action::ClaimLease(lease)) = actions.first() else {
            panic!("a claim first: {actions:?}");
        };
        assert_eq!((lease.epoch, &lease.holder), (Epoch(2), &id("a")));
        // c's slot moves once SWIM has c down: probed, suspected, its suspicion run out.
        let (moved_at, plan) = rounds
            .iter()
            .flat_map(|(t, actions)| actions.iter().map(move |a| (t, a)))
            .find_map(|(t, a)| match a {
                Action::WriteAssignments(plan) => Some((*t, plan)),
                _ => None,
            })
            .expect("c's slot is rescheduled");
        assert_eq!(core.liveness(&id("c"), Millis(moved_at)), Liveness::Down);
        let moved = plan.put.iter().filter(|(_, a)| a.node != id("c")).count();
        assert_eq!(moved, 1, "c's slot moves: {plan:?}");
        assert_eq!(core.liveness(&id("b"), Millis(moved_at)), Liveness::Alive);
    }

    #[test]
    fn a_stalled_node_does_not_write_its_peers_off_for_its_own_stall() {
        let view = view();
        let mut core = Core::new(id("a"), CoreConfig::default(), Millis(0));
        run(&mut core, &view, 0, 1_000, u64::MAX);
        // This process does not run for 5 s (its last tick was at 750).
        let actions = core.tick(&view, Millis(5_750));
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(core.liveness(&id("c"), Millis(5_750)), Liveness::Alive);
        assert!(matches!(
            core.last_decision(),
            Some(LeaseDecision::Follower { .. })
        ));
        // The credit is for the stall only: silence after it counts again.
        let rounds = run(&mut core, &view, 6_000, 9_000, 0);
        let (at, _) = rounds
            .iter()
            .find(|(_, a)| !a.is_empty())
            .expect("a claim once c is silent after the stall");
        assert!((7_500..=8_500).contains(at), "claimed at {at}");
        // Without the stall credit the same silence would have been 5 s long at once.
        let never_stalled = CoreConfig {
            tick_ms: 10_000,
            ..CoreConfig::default()
        };
        let mut blind = Core::new(id("a"), never_stalled, Millis(0));
        blind.set_members(view.members.keys());
        for t in [0, 250, 500, 750] {
            blind.handle_renewal(&id("c"), Epoch(1), Millis(t));
            blind.tick(&view, Millis(t));
            answer(&mut blind, &["b", "c"], Millis(t));
        }
        let actions = blind.tick(&view, Millis(5_750));
        assert!(
            matches!(actions.first(), Some(Action::ClaimLease(_))),
            "{actions:?}"
        );
    }

    /// Three live members and a service of four replicas all on "a", which holds the lease:
    /// the picture after a heal or a join that the rebalance would spread.
    fn lopsided(settings: ClusterSettings) -> ClusterView {
        let web = ServiceName::new("web").expect("name");
        let lease = Lease {
            epoch: Epoch(1),
            holder: id("a"),
        };
        let members = ["a", "b", "c"]
            .map(|n| {
                let member = Member {
                    id: id(n),
                    name: n.into(),
                    addrs: vec![],
                    labels: Default::default(),
                    capabilities: Default::default(),
                    platform: Default::default(),
                    admitted_by: id("a"),
                    admitted_at: 0,
                    state: MemberState::Active,
                    availability: Default::default(),
                };
                (id(n), member)
            })
            .into();
        let service = Service {
            name: web.clone(),
            generation: 1,
            deleted: false,
            previous_spec: None,
            older_specs: Default::default(),
            rollout: None,
            spec: ServiceSpec {
                image: "img".into(),
                replicas: 4,
                ..Default::default()
            },
        };
        let assignments = (0..4)
            .map(|slot| {
                let a = Assignment {
                    node: id("a"),
                    epoch: lease.epoch,
                    holder: lease.holder.clone(),
                    spec_generation: 1,
                    displaced: vec![],
                    gpus: Vec::new(),
                };
                (
                    SlotId {
                        service: web.clone(),
                        slot,
                    },
                    a,
                )
            })
            .collect();
        ClusterView {
            members,
            services: Services::from(vec![(web, service)]),
            assignments,
            lease: Some(lease),
            settings,
            rejected: BTreeMap::new(),
            volumes: BTreeMap::new(),
        }
    }

    /// Runs holder "a" through a calm cluster for twice the quiet period (the view is not
    /// updated with what it writes); returns every assignment plan it wrote.
    fn rounds(view: &ClusterView) -> Vec<Plan> {
        let config = CoreConfig::default();
        let mut core = Core::new(id("a"), config, Millis(0));
        let copies = view
            .assignments
            .iter()
            .map(|(slot, a)| {
                let copy = RunningCopy {
                    node: a.node.clone(),
                    generation: 1,
                    age_ms: 60_000,
                    health: TaskHealth::None,
                };
                (slot.clone(), vec![copy])
            })
            .collect();
        core.set_running_copies(copies, view.members.keys().cloned().collect());
        core.set_members(view.members.keys());
        let step = config.tick_ms;
        let end = config.lease_ttl_ms + 2 * REBALANCE_QUIET_MS;
        let mut plans = Vec::new();
        let mut now = 0;
        while now <= end {
            for action in core.tick(view, Millis(now)) {
                if let Action::WriteAssignments(plan) = action {
                    plans.push(plan);
                }
            }
            answer(&mut core, &["b", "c"], Millis(now));
            now += step;
        }
        plans
    }

    /// A partition: a fourth active member, "d", never answers (down on this side). The
    /// holder moves nothing for spread while it is down, though the same cluster without
    /// "d" is rebalanced (above); a move would stop a running copy during the partition.
    #[test]
    fn no_rebalance_while_a_member_is_down() {
        let mut view = lopsided(ClusterSettings::default());
        let mut d = view.members[&id("a")].clone();
        d.id = id("d");
        d.name = "d".into();
        view.members.insert(id("d"), d);
        let plans = rounds(&view);
        assert!(plans.is_empty(), "{plans:?}");
    }

    #[test]
    fn the_cluster_setting_switches_the_rebalance_off() {
        // On (the default): after the quiet period the holder moves one replica off "a".
        // (The view here never takes the plan in, so later rounds propose the same move.)
        let on = rounds(&lopsided(ClusterSettings::default()));
        let first = on.first().expect("a rebalance move");
        assert_eq!(first.put.len(), 1, "{on:?}");
        assert_ne!(first.put[0].1.node, id("a"));
        assert_eq!(first.put[0].1.displaced, vec![id("a")]);
        // Off in the document: the very same cluster plans no move at all.
        let off = rounds(&lopsided(ClusterSettings { rebalance: false }));
        assert!(off.is_empty(), "{off:?}");
        // The process switch alone turns it off as well (tests and simulations).
        let core = Core::new(
            id("a"),
            CoreConfig {
                rebalance: false,
                ..CoreConfig::default()
            },
            Millis(0),
        );
        assert!(!core.rebalances(&lopsided(ClusterSettings::default())));
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;
    use warren_crdt::{ClusterInfo, ClusterSetting, MemberState, ServiceSpec};

    /// A view kept by [`ClusterView::refresh`] after each local write and each merge equals
    /// one read afresh, on replicas whose documents hold concurrent writes of the same
    /// services, slots and lease (merged in late and out of order): a merged value that loses
    /// Automerge's order but wins ours must be named by [`DesiredState::take_touched`].
    #[test]
    fn a_refreshed_view_equals_a_fresh_read() {
        let me = |s: &str| NodeId(s.into());
        let member = |s: &str| Member {
            id: me(s),
            name: s.into(),
            addrs: Vec::new(),
            labels: BTreeMap::new(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: me("a"),
            admitted_at: 0,
            state: MemberState::Active,
            availability: Default::default(),
        };
        let info = ClusterInfo {
            id: "c".into(),
            name: "c".into(),
            created_at: 0,
        };
        let mut founder = DesiredState::new_cluster(&info, &member("a")).expect("cluster");
        let bytes = founder.save();
        let mut replicas = [
            DesiredState::load(me("a"), &bytes).expect("a"),
            DesiredState::load(me("b"), &bytes).expect("b"),
        ];
        let mut views: Vec<ClusterView> = replicas
            .iter()
            .map(|r| ClusterView::read_as(r, &me("a"), RuleBreak::None))
            .collect();
        // In flight to the other replica: (to, change).
        let mut held: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..1_000u64 {
            let i = next(2) as usize;
            let r = &mut replicas[i];
            let name = ServiceName::new(format!("s{}", next(6))).expect("name");
            let change = match next(9) {
                0 | 1 => {
                    let spec = ServiceSpec {
                        image: "img".into(),
                        replicas: next(4) as u32,
                        ..Default::default()
                    };
                    r.create_service(&name, &spec).ok()
                }
                2 => r.scale_service(&name, next(5) as u32).ok(),
                3 => r.delete_service(&name).ok(),
                4 | 5 => {
                    let slot = SlotId {
                        service: name.clone(),
                        slot: next(3) as u32,
                    };
                    let a = Assignment {
                        node: me(["a", "b", "c"][next(3) as usize]),
                        epoch: Epoch(1 + next(3)),
                        holder: me(["a", "b"][i]),
                        spec_generation: 1,
                        displaced: Vec::new(),
                        gpus: Vec::new(),
                    };
                    if next(4) == 0 {
                        r.write_assignments(&[], &[slot]).ok().flatten()
                    } else {
                        r.write_assignments(&[(slot, a)], &[]).ok().flatten()
                    }
                }
                6 => r
                    .claim_lease(&Lease {
                        epoch: Epoch(1 + next(4)),
                        holder: me(["a", "b"][i]),
                    })
                    .ok(),
                7 => r.add_member(&member(&format!("m{}", next(4)))).ok(),
                _ => r
                    .set_cluster_settings(&[ClusterSetting::Rebalance(next(2) == 0)])
                    .ok(),
            };
            if let Some(change) = change.filter(|c| !c.is_empty()) {
                held.push((1 - i, change));
            }
            let touched = replicas[i].take_touched();
            views[i].refresh(&replicas[i], &touched, &me("a"), RuleBreak::None);
            assert_eq!(
                views[i],
                ClusterView::read_as(&replicas[i], &me("a"), RuleBreak::None),
                "step {step}: {touched:?}"
            );
            // Deliver some held changes, in any order; the receiver refreshes its view.
            while !held.is_empty() && next(3) != 0 {
                let k = next(held.len() as u64) as usize;
                let (to, change) = held.swap_remove(k);
                replicas[to].apply_change(&change).expect("apply");
                let touched = replicas[to].take_touched();
                assert!(
                    !touched.all,
                    "step {step}: a small merge re-reads everything"
                );
                views[to].refresh(&replicas[to], &touched, &me("a"), RuleBreak::None);
                assert_eq!(
                    views[to],
                    ClusterView::read_as(&replicas[to], &me("a"), RuleBreak::None),
                    "step {step}, merge: {touched:?}"
                );
            }
        }
        assert!(held.len() < 1_000, "changes were delivered");
    }

    /// The rollout's writes through the document: each slot runs its assignment's
    /// generation, a record write is idempotent, and a rollback happens only for the
    /// generation that failed.
    #[test]
    fn rollout_actions_apply_to_the_document_and_slots_run_their_own_generation() {
        use warren_crdt::{ClusterInfo, RolloutKind, RolloutState};
        let a = NodeId("a".into());
        let member = Member {
            id: a.clone(),
            name: "a".into(),
            addrs: Vec::new(),
            labels: BTreeMap::new(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: a.clone(),
            admitted_at: 0,
            state: warren_crdt::MemberState::Active,
            availability: Default::default(),
        };
        let info = ClusterInfo {
            id: "c".into(),
            name: "c".into(),
            created_at: 0,
        };
        let mut state = DesiredState::new_cluster(&info, &member).expect("cluster");
        let web = ServiceName::new("web").expect("name");
        let v1 = ServiceSpec {
            image: "img:1".into(),
            replicas: 2,
            ..Default::default()
        };
        state.create_service(&web, &v1).expect("create");
        let generation = state.service_record(&web).expect("web").generation;
        let assignment = |g: u64| Assignment {
            node: a.clone(),
            epoch: Epoch(1),
            holder: a.clone(),
            spec_generation: g,
            displaced: Vec::new(),
            gpus: Vec::new(),
        };
        let slot = |i: u32| SlotId {
            service: web.clone(),
            slot: i,
        };
        state
            .write_assignments_with(
                &[
                    (slot(0), assignment(generation)),
                    (slot(1), assignment(generation)),
                ],
                &[],
                Fencing::On,
            )
            .expect("assign");
        let v2 = ServiceSpec {
            image: "img:2".into(),
            ..v1.clone()
        };
        state.update_service(&web, &v2).expect("update");
        let target = generation + 1;
        // Slot 0 moved by the rollout, slot 1 not yet.
        Action::WriteAssignments(Plan {
            put: vec![(slot(0), assignment(target))],
            ..Plan::default()
        })
        .apply(&mut state, Fencing::On)
        .expect("move");
        let tasks = ClusterView::read(&state).desired_tasks(&a);
        let images: Vec<(u64, &str)> = tasks
            .iter()
            .map(|t| (t.generation, t.spec.image.as_str()))
            .collect();
        assert_eq!(images, vec![(target, "img:2"), (generation, "img:1")]);
        // A record write, then the same again: nothing more to write.
        let record = state
            .service_record(&web)
            .and_then(|s| s.rollout)
            .expect("a record");
        assert_eq!(record.to_generation, target);
        let done = Action::SetRollout(
            web.clone(),
            warren_crdt::Rollout {
                state: RolloutState::Completed,
                ..record
            },
        );
        assert!(done.apply(&mut state, Fencing::On).expect("set").is_some());
        assert!(done
            .apply(&mut state, Fencing::On)
            .expect("again")
            .is_none());
        // A rollback asked for an older generation (superseded) does nothing; for the
        // current one it rolls back.
        let stale = Action::Rollback {
            service: web.clone(),
            generation,
        };
        assert!(stale
            .apply(&mut state, Fencing::On)
            .expect("stale")
            .is_none());
        let back = Action::Rollback {
            service: web.clone(),
            generation: target,
        };
        assert!(back
            .apply(&mut state, Fencing::On)
            .expect("rollback")
            .is_some());
        let service = state.service_record(&web).expect("web");
        assert_eq!(service.generation, target + 1);
        assert_eq!(service.spec.image, "img:1");
        assert_eq!(service.rollout.map(|r| r.kind), Some(RolloutKind::Rollback));
        // Slot 1 (generation 1's spec all along) moved to the rollback's generation: its
        // node keeps the container it has (`rollout::same_tasks`); slot 0's does not.
        Action::WriteAssignments(Plan {
            put: vec![(slot(1), assignment(target + 1))],
            ..Plan::default()
        })
        .apply(&mut state, Fencing::On)
        .expect("move");
        let same: Vec<(u64, Vec<u64>)> = ClusterView::read(&state)
            .desired_tasks(&a)
            .into_iter()
            .map(|t| (t.generation, t.same_tasks_as))
            .collect();
        assert_eq!(same, vec![(target, vec![]), (target + 1, vec![generation])]);
    }
}
