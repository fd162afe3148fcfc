//! The rollout engine (issue 15): how the lease holder moves a service's slots from the
//! generations they run to the service's current one, batch by batch, gated on the health
//! the nodes report.
//!
//! **Where progress lives.** Which generation each slot runs is its assignment's
//! `spec_generation`; where the rollout stands is the service's rollout record
//! ([`warren_crdt::Rollout`]). Both are in the desired state, so a new lease holder (after a
//! crash, or on the other side of a partition) resumes from them: it never needs the old
//! holder's memory, and a service has one record, so there are never two rollouts of one
//! service. A new update supersedes the rollout under way: it writes a new record for the
//! new generation, and every slot of any older generation is simply "not updated".
//!
//! **The rules, each round of the lease holder** ([`Rollouts::round`]), for a service whose
//! rollout is `updating`:
//!
//! - A slot *moved* (its assignment names the target generation) is **healthy** from the
//!   first round the holder sees its node report the target generation's task running and
//!   healthy (or running without a health check); it is **done** once it stayed so for the
//!   policy's `monitor_ms`. It is a **failure** when, before it is done, the report shows
//!   the task exited, failed, dead, rejected, restarting or unhealthy, or restarted at all.
//!   Done and failed are remembered by the holder only (holder-local memory): a new holder
//!   watches every moved slot through a whole monitor period again. (Recording when a slot
//!   was first seen healthy would need a clock the next holder can compare with; the core's
//!   is each node's monotonic clock, so the cost of a holder change stays one monitor
//!   period.)
//! - A slot not updated whose generation runs the **same tasks** as the target
//!   ([`same_tasks`]: a rollback finds them on the spec it returns to) is moved at once,
//!   outside batches and the delay, and is done at once: its node keeps the container it
//!   runs and reports it at the new generation (`DesiredTask::same_tasks_as`, see
//!   `reconcile.rs`). Its move starts no delay.
//! - At most `parallelism` slots (0: all) are **in flight** (moved, neither done nor
//!   failed). A batch starts when none is in flight and `delay_ms` has passed since the
//!   previous batch was done (a new holder that finds slots updated already waits the delay
//!   once). A batch takes the lowest-indexed slots not updated whose node is live and that
//!   the scheduling round of the same tick leaves alone. **Moving** a slot rewrites its
//!   assignment on the same node with the target generation under the holder's lease
//!   (fenced like every assignment), only if the node holds the target spec's reservation
//!   by the scheduler's fit rule ([`scheduler::fits`]; the other slots there reserve their
//!   own generation's, and the moved slot's old task's reservation is freed under
//!   stop-first and kept under start-first and blue/green); a batch with a slot that does
//!   not fit moves nothing and pauses the rollout with the resource (`task web.3 of
//!   generation 2 does not fit on node a: no 2 CPUs free`). New placements (an unassigned slot, a scale up, a slot
//!   whose node was lost) are made by the scheduler at the current generation directly.
//! - When failures exceed `max_failure_ratio_permille` of the slots moved, the **failure
//!   action** runs: `pause` writes the record `paused` with the reason (`task web.2 exited
//!   with code 1 within the monitor period`), leaving the slots not updated on their
//!   generation; `rollback` asks for the document's rollback ([`super::Action::Rollback`]): the
//!   previous spec comes back as a new generation rolled out under the rollback policy (a
//!   rollback whose own failure action is `rollback` pauses instead: it is not rolled back
//!   again); `continue` goes on.
//! - Every slot done (or failed, under `continue`) → `completed`.
//! - **Canary**: batches stop once `count` slots are moved; when they are done the record
//!   becomes `awaiting-promotion`. `service promote` writes it back to `updating` with the
//!   deploy `rolling`, so a promoted canary is a rolling rollout of the rest.
//! - **Blue/green**: every slot moves at once and its node starts the new task beside the
//!   old one, which it keeps ([`PreviousCopy::Keep`]). When every new task is done, the
//!   holder writes `traffic_generation` = the target (the switch: the routing mesh sends
//!   connections to the new set only, [`traffic_split`]); `delay_ms` after it saw the switch
//!   written, `completed`, and the nodes stop the old copies.
//!
//! Every write is a record write ([`super::Action::SetRollout`]) or an assignment write,
//! idempotent: a record equal to the standing one is not written, and a lost write is made
//! again by a later round.
//!
//! On the node, a slot of the target generation whose rollout's order is `start-first`
//! keeps its older container running until the new one runs healthy
//! ([`PreviousCopy::UntilHealthy`], see `reconcile.rs`); `stop-first` removes it first.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use warren_crdt::{
    Assignment, Deploy, FailureAction, Lease, NodeId, Rollout, RolloutKind, RolloutState, Service,
    ServiceMode, ServiceName, SlotId, UpdateOrder,
};

use super::reconcile::{PreviousCopy, TaskHealth};
use super::scheduler::{self, Capacity, Services};
use super::Millis;
use crate::protocol::{TaskState, TaskStatus};

/// What the lease holder knows of one task of a slot from a node's report: the inputs of
/// the rollout's monitor (a slimmed [`TaskStatus`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    /// The node that reported it.
    pub node: NodeId,
    /// The generation of its container (0: no container).
    pub generation: u64,
    /// Where it stands.
    pub state: TaskState,
    /// Its health (`none` without a health check).
    pub health: TaskHealth,
    /// Restarts in a row (reset when the slot's generation changes).
    pub restarts: u32,
    /// Exit code of its last run, once it stopped.
    pub exit_code: Option<i64>,
    /// A copy the node runs without its assignment (a heal's or a start-first move's).
    pub unassigned: bool,
}

impl SlotReport {
    /// The part of `status` reported by `node` that the monitor reads.
    pub fn of(node: &NodeId, status: &TaskStatus) -> Self {
        SlotReport {
            node: node.clone(),
            generation: status.generation,
            state: status.state,
            health: status.health,
            restarts: status.restarts,
            exit_code: status.exit_code,
            unassigned: status.unassigned,
        }
    }
}

/// The fresh task reports the lease holder has, per slot (any node, any generation).
pub type SlotReports = BTreeMap<SlotId, Vec<SlotReport>>;

/// What one round of [`Rollouts::round`] decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutDecisions {
    /// Slots moved to their service's current generation (same node, the holder's lease).
    pub moves: Vec<(SlotId, Assignment)>,
    /// Rollout records to write (each for the service's current generation).
    pub records: Vec<(ServiceName, Rollout)>,
    /// Services whose failure action is `rollback`, with the generation that failed: the
    /// caller calls the document's rollback if the service is still at that generation.
    pub rollbacks: Vec<(ServiceName, u64)>,
}

impl RolloutDecisions {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty() && self.records.is_empty() && self.rollbacks.is_empty()
    }
}

/// What [`Rollouts::round`] reads.
#[derive(Debug, Clone, Copy)]
pub struct RolloutInput<'a> {
    /// The services (tombstones included).
    pub services: &'a Services,
    /// The standing assignments.
    pub assignments: &'a BTreeMap<SlotId, Assignment>,
    /// The fresh reports.
    pub reports: &'a SlotReports,
    /// The members live here.
    pub live: &'a BTreeSet<NodeId>,
    /// The lease the holder acts under.
    pub lease: &'a Lease,
    /// Slots the scheduling round of the same tick writes or removes: left alone.
    pub touched: &'a BTreeSet<SlotId>,
    /// What each node offers to reservations (the scheduler's
    /// [`Observations::capacity`](super::scheduler::Observations::capacity)); a node
    /// missing here takes any reservation.
    pub capacity: &'a BTreeMap<NodeId, Capacity>,
    /// The holder's clock.
    pub now: Millis,
}

/// Where one slot of a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotPhase {
    /// No assignment yet: the scheduler places it at the current generation.
    Unplaced,
    /// Its assignment names an older generation.
    NotUpdated,
    /// Moved, watched.
    InFlight,
    /// Moved and healthy through its monitor period.
    Done,
    /// Moved and failed within its monitor period.
    Failed,
}

/// The holder's memory of one service's rollout (lost with the lease: see the module doc).
#[derive(Debug, Clone, Default)]
struct Monitor {
    to_generation: u64,
    /// Slot index → (first round seen healthy, its restarts then).
    healthy_since: BTreeMap<u32, (Millis, u32)>,
    done: BTreeSet<u32>,
    /// Slot index → why it failed, for people.
    failed: BTreeMap<u32, String>,
    /// Slots moved without new containers ([`same_tasks`]): done, but no batch of theirs
    /// starts the delay.
    adopted: BTreeSet<u32>,
    /// Whether a batch was in flight at the last round.
    had_in_flight: bool,
    /// When the last batch was done.
    batch_done_at: Option<Millis>,
    /// Blue/green: when this holder first saw the traffic switched.
    switched_at: Option<Millis>,
}

/// The lease holder's rollout engine: its memory of the rollouts it watches. See the module
/// doc for the rules.
#[derive(Debug, Clone)]
pub struct Rollouts {
    monitors: BTreeMap<ServiceName, Monitor>,
    /// [`record_of`]'s heal rules apply (always, but in the simulator's check that they
    /// matter, `RuleBreak::NoRolloutHeal`).
    heal_rules: bool,
}

/// The assignments of `name`'s slots, in index order.
fn slots_of<'a>(
    assignments: &'a BTreeMap<SlotId, Assignment>,
    name: &ServiceName,
) -> impl Iterator<Item = (&'a SlotId, &'a Assignment)> {
    let from = SlotId {
        service: name.clone(),
        slot: 0,
    };
    let to = SlotId {
        service: name.clone(),
        slot: u32::MAX,
    };
    assignments.range(from..=to)
}

/// The rollout record a service's slots are moved under (`None`: no rollout): its record
/// for the current generation. A service without a record (never updated, or a document written before
/// rollouts) has no rollout: its slots keep their generation until the next update.
///
/// Two cases of a heal, each read as `updating` (the first round writes it):
///
/// - A record for another generation is one of a merge of concurrent updates (two sides of
///   a partition each updated the service; the merged document reads a generation neither
///   ran, see `DesiredState`'s generation rule): the merged spec is rolled out as a fresh
///   update under its own update policy and deployment.
/// - A `completed` record while a slot the service wants is assigned an older generation
///   (in `assignments`): one side completed the rollout while the other kept its slots, and
///   the merge kept the other side's assignments (fencing). The rollout resumes.
///
/// `heal_rules` false: neither case (the record as written, if for the current generation).
pub fn record_of<'a>(
    service: &'a Service,
    assignments: &BTreeMap<SlotId, Assignment>,
    heal_rules: bool,
) -> Option<Cow<'a, Rollout>> {
    let record = service.rollout.as_ref()?;
    if !heal_rules {
        return (record.to_generation == service.generation).then_some(Cow::Borrowed(record));
    }
    if record.to_generation == service.generation {
        let behind = record.state == RolloutState::Completed
            && slots_of(assignments, &service.name).any(|(slot, a)| {
                service.spec.wants_slot(slot.slot) && a.spec_generation < record.to_generation
            });
        if behind {
            return Some(Cow::Owned(Rollout {
                state: RolloutState::Updating,
                ..record.clone()
            }));
        }
        return Some(Cow::Borrowed(record));
    }
    Some(Cow::Owned(Rollout {
        kind: RolloutKind::Update,
        from_generation: record.to_generation.min(service.generation),
        to_generation: service.generation,
        state: RolloutState::Updating,
        policy: service.spec.update,
        deploy: service.spec.deploy,
        updated_at_ms: 0,
        traffic_generation: None,
    }))
}

/// Whether slots at generations `a` and `b` of `service` run the same containers: both
/// specs are known (the current one or a kept older one) and
/// [`ServiceSpec::same_tasks`](warren_crdt::ServiceSpec::same_tasks) says so. The one rule
/// by which a rollout moves a slot without new containers, and by which a node keeps a
/// container of `a` for a slot assigned at `b` ([`same_tasks_generations`]).
pub fn same_tasks(service: &Service, a: u64, b: u64) -> bool {
    a == b
        || match (service.spec_for(a), service.spec_for(b)) {
            (Some(x), Some(y)) => x.same_tasks(y),
            _ => false,
        }
}

/// The other generations of `service` whose containers run the same tasks as a slot at
/// `generation` ([`same_tasks`]), oldest first: a node keeps a container of any of them
/// for that slot ([`super::reconcile::DesiredTask::same_tasks_as`]).
pub fn same_tasks_generations(service: &Service, generation: u64) -> Vec<u64> {
    service
        .older_specs
        .keys()
        .copied()
        .chain(std::iter::once(service.generation))
        .filter(|g| *g != generation && same_tasks(service, *g, generation))
        .collect()
}

/// The reservation of a slot at `generation` of `service` (its spec's limits; the current
/// spec's for a generation no longer kept).
fn reservation_at(service: &Service, generation: u64) -> Capacity {
    scheduler::reservation_of(service.spec_for(generation).unwrap_or(&service.spec))
}

/// What the slots assigned to each node reserve, each at the generation it runs.
fn reserved_by_node(input: &RolloutInput<'_>) -> BTreeMap<NodeId, Capacity> {
    let mut out: BTreeMap<NodeId, Capacity> = BTreeMap::new();
    for (slot, a) in input.assignments {
        let Some(service) = scheduler::service_wanting(input.services, slot) else {
            continue;
        };
        let r = reservation_at(service, a.spec_generation);
        let used = out.entry(a.node.clone()).or_default();
        used.nano_cpus = used.nano_cpus.saturating_add(r.nano_cpus);
        used.memory_bytes = used.memory_bytes.saturating_add(r.memory_bytes);
    }
    out
}

/// The report of the task of `slot` assigned as `a`, of generation `generation`.
fn report_for<'a>(
    reports: &'a SlotReports,
    slot: &SlotId,
    a: &Assignment,
    generation: u64,
) -> Option<&'a SlotReport> {
    reports
        .get(slot)?
        .iter()
        .find(|r| r.node == a.node && r.generation == generation && !r.unassigned)
}

/// Why a task of the target generation counts as a failure, or `None` while it does not.
fn failure_of(report: &SlotReport, restarts_before: u32) -> Option<String> {
    let exited = |what: &str| match report.exit_code {
        Some(code) => format!("{what} with code {code}"),
        None => what.to_string(),
    };
    match report.state {
        TaskState::Exited => return Some(exited("exited")),
        TaskState::Failed => return Some(exited("failed")),
        TaskState::Dead => return Some("died".to_string()),
        TaskState::Rejected => return Some("was rejected".to_string()),
        TaskState::Restarting => return Some(exited("exited and is restarting")),
        _ => {}
    }
    if report.health == TaskHealth::Unhealthy {
        return Some("turned unhealthy".to_string());
    }
    if report.restarts > restarts_before {
        return Some(format!("restarted {} times", report.restarts));
    }
    None
}

impl Monitor {
    fn phase(
        &mut self,
        index: u32,
        slot: &SlotId,
        a: Option<&Assignment>,
        reports: &SlotReports,
        monitor_ms: u64,
        now: Millis,
    ) -> SlotPhase {
        let Some(a) = a else {
            return SlotPhase::Unplaced;
        };
        if a.spec_generation != self.to_generation {
            return SlotPhase::NotUpdated;
        }
        if self.done.contains(&index) {
            return SlotPhase::Done;
        }
        if self.failed.contains_key(&index) {
            return SlotPhase::Failed;
        }
        let Some(report) = report_for(reports, slot, a, self.to_generation) else {
            return SlotPhase::InFlight;
        };
        let before = self.healthy_since.get(&index).map_or(0, |(_, r)| *r);
        if let Some(why) = failure_of(report, before) {
            self.failed.insert(index, why);
            return SlotPhase::Failed;
        }
        let healthy = report.state == TaskState::Running
            && matches!(report.health, TaskHealth::Healthy | TaskHealth::None);
        if !healthy {
            return SlotPhase::InFlight;
        }
        let (since, _) = *self
            .healthy_since
            .entry(index)
            .or_insert((now, report.restarts));
        if now.since(since) >= monitor_ms {
            self.done.insert(index);
            SlotPhase::Done
        } else {
            SlotPhase::InFlight
        }
    }
}

impl Default for Rollouts {
    fn default() -> Self {
        Self::new()
    }
}

impl Rollouts {
    /// An engine that watches nothing yet.
    pub fn new() -> Self {
        Self::with_heal_rules(true)
    }

    /// An engine that watches nothing yet, [`record_of`]'s heal rules on or (only to show
    /// that the simulator catches their absence) off.
    pub fn with_heal_rules(heal_rules: bool) -> Self {
        Rollouts {
            monitors: BTreeMap::new(),
            heal_rules,
        }
    }

    /// Forgets everything watched (this node no longer holds the lease: a later holder
    /// starts its monitors afresh).
    pub fn clear(&mut self) {
        self.monitors.clear();
    }

    /// One round of the lease holder: the slots to move and the records to write, by the
    /// rules of the module doc. Pure but for the engine's memory.
    pub fn round(&mut self, input: RolloutInput<'_>) -> RolloutDecisions {
        let mut out = RolloutDecisions::default();
        self.monitors
            .retain(|name, _| input.services.get(name).is_some_and(|s| !s.deleted));
        for (name, service) in input.services.iter().filter(|(_, s)| !s.deleted) {
            let Some(record) = record_of(service, input.assignments, self.heal_rules) else {
                self.monitors.remove(name);
                continue;
            };
            if !record.is_active() {
                continue;
            }
            let monitor = self.monitors.entry(name.clone()).or_default();
            if monitor.to_generation != record.to_generation {
                *monitor = Monitor {
                    to_generation: record.to_generation,
                    ..Monitor::default()
                };
            }
            step(name, service, &record, monitor, &input, &mut out);
        }
        out
    }
}

/// One service's round (its record is `updating`).
fn step(
    name: &ServiceName,
    service: &Service,
    record: &Rollout,
    monitor: &mut Monitor,
    input: &RolloutInput<'_>,
    out: &mut RolloutDecisions,
) {
    let policy = &record.policy;
    let now = input.now;
    // The slots the service wants: every replica index, or a global service's assignments.
    let mut slots: Vec<(SlotId, Option<&Assignment>)> = match service.spec.mode {
        ServiceMode::Replicated => (0..service.spec.slot_count())
            .map(|index| {
                let slot = SlotId {
                    service: name.clone(),
                    slot: index,
                };
                let a = input.assignments.get(&slot);
                (slot, a)
            })
            .collect(),
        ServiceMode::Global => slots_of(input.assignments, name)
            .filter(|(slot, _)| service.spec.wants_slot(slot.slot))
            .map(|(slot, a)| (slot.clone(), Some(a)))
            .collect(),
    };
    slots.sort_by_key(|(slot, _)| slot.slot);
    let mut phases: Vec<SlotPhase> = slots
        .iter()
        .map(|(slot, a)| monitor.phase(slot.slot, slot, *a, input.reports, policy.monitor_ms, now))
        .collect();
    // Slots whose generation runs the same tasks as the target (those a rollback finds on
    // the spec it returns to): moved at once, outside batches and the delay, and done at
    // once — their node keeps the container they run ([`same_tasks`]).
    for ((slot, a), phase) in slots.iter().zip(phases.iter_mut()) {
        let Some(a) = a.filter(|a| {
            *phase == SlotPhase::NotUpdated
                && same_tasks(service, a.spec_generation, record.to_generation)
                && input.live.contains(&a.node)
                && !input.touched.contains(slot)
        }) else {
            continue;
        };
        out.moves
            .push((slot.clone(), moved_to(a, input, record.to_generation)));
        monitor.done.insert(slot.slot);
        monitor.adopted.insert(slot.slot);
        *phase = SlotPhase::Done;
    }
    let count = |p: SlotPhase| phases.iter().filter(|q| **q == p).count();
    let (in_flight, done, failed) = (
        count(SlotPhase::InFlight),
        count(SlotPhase::Done),
        count(SlotPhase::Failed),
    );
    let moved = in_flight + done + failed;
    let write = |out: &mut RolloutDecisions, next: Rollout| {
        if service.rollout.as_ref() != Some(&next) {
            out.records.push((name.clone(), next));
        }
    };
    // The failure action.
    let ratio = usize::from(policy.max_failure_ratio_permille);
    if failed > 0
        && failed.saturating_mul(1000) > ratio.saturating_mul(moved)
        && policy.failure_action != FailureAction::Continue
    {
        let (index, why) = monitor
            .failed
            .iter()
            .next()
            .map(|(i, w)| (*i, w.clone()))
            .unwrap_or_default();
        let mut reason = format!("task {name}.{index} {why} within the monitor period");
        if policy.failure_action == FailureAction::Rollback && record.kind == RolloutKind::Update {
            out.rollbacks.push((name.clone(), record.to_generation));
            return;
        }
        if policy.failure_action == FailureAction::Rollback {
            reason.push_str(" (a rollback is not rolled back: paused)");
        }
        write(
            out,
            Rollout {
                state: RolloutState::Paused { reason },
                ..record.clone()
            },
        );
        return;
    }
    if in_flight > 0 {
        monitor.had_in_flight = true;
        return;
    }
    if monitor.had_in_flight || (monitor.batch_done_at.is_none() && moved > monitor.adopted.len()) {
        monitor.had_in_flight = false;
        monitor.batch_done_at = Some(now);
    }
    let unplaced = count(SlotPhase::Unplaced);
    let movable: Vec<(&SlotId, &Assignment)> = slots
        .iter()
        .zip(&phases)
        .filter(|(_, p)| **p == SlotPhase::NotUpdated)
        .filter_map(|((slot, a), _)| Some((slot, (*a)?)))
        .filter(|(slot, a)| input.live.contains(&a.node) && !input.touched.contains(*slot))
        .collect();
    let not_updated = count(SlotPhase::NotUpdated);
    let move_slot = |out: &mut RolloutDecisions, slot: &SlotId, a: &Assignment| {
        out.moves
            .push((slot.clone(), moved_to(a, input, record.to_generation)));
    };
    // A slot moves in place only if its node holds the target spec's reservation (the
    // scheduler's fit rule): beside the old task under start-first and blue/green, instead
    // of it under stop-first. Otherwise the rollout pauses, saying which resource is short.
    let keeps_old = previous_copy(service, record.to_generation) != PreviousCopy::Replace;
    let want = reservation_at(service, record.to_generation);
    let mut used: Option<BTreeMap<NodeId, Capacity>> = None;
    let mut room = |slot: &SlotId, a: &Assignment| -> Result<(), String> {
        if want == Capacity::default() {
            return Ok(());
        }
        let on_node = used
            .get_or_insert_with(|| reserved_by_node(input))
            .entry(a.node.clone())
            .or_default();
        let mut after = *on_node;
        if !keeps_old {
            let old = reservation_at(service, a.spec_generation);
            after.nano_cpus = after.nano_cpus.saturating_sub(old.nano_cpus);
            after.memory_bytes = after.memory_bytes.saturating_sub(old.memory_bytes);
        }
        let free = scheduler::free_capacity(input.capacity.get(&a.node), after);
        if !scheduler::fits(free, want) {
            return Err(format!(
                "task {name}.{} of generation {} does not fit on node {}: {}",
                slot.slot,
                record.to_generation,
                a.node,
                scheduler::shortfall(want, free.unwrap_or_default())
            ));
        }
        after.nano_cpus = after.nano_cpus.saturating_add(want.nano_cpus);
        after.memory_bytes = after.memory_bytes.saturating_add(want.memory_bytes);
        *on_node = after;
        Ok(())
    };
    let paused = |reason: String| Rollout {
        state: RolloutState::Paused { reason },
        ..record.clone()
    };
    let completed = Rollout {
        state: RolloutState::Completed,
        ..record.clone()
    };
    match record.deploy {
        Deploy::BlueGreen => {
            if not_updated > 0 {
                if let Err(reason) = movable.iter().try_for_each(|(slot, a)| room(slot, a)) {
                    write(out, paused(reason));
                    return;
                }
                for (slot, a) in movable {
                    move_slot(out, slot, a);
                }
                return;
            }
            if unplaced > 0 {
                return;
            }
            if record.traffic_generation != Some(record.to_generation) {
                write(
                    out,
                    Rollout {
                        traffic_generation: Some(record.to_generation),
                        ..record.clone()
                    },
                );
                return;
            }
            let since = *monitor.switched_at.get_or_insert(now);
            if now.since(since) >= policy.delay_ms {
                write(out, completed);
            }
        }
        Deploy::Rolling | Deploy::Canary { .. } => {
            let total = slots.len();
            if let Deploy::Canary { count, .. } = record.deploy {
                let quota = count.slots(u32::try_from(total).unwrap_or(u32::MAX)) as usize;
                if moved >= quota {
                    if not_updated == 0 && unplaced == 0 {
                        write(out, completed);
                    } else {
                        write(
                            out,
                            Rollout {
                                state: RolloutState::AwaitingPromotion,
                                ..record.clone()
                            },
                        );
                    }
                    return;
                }
            }
            if not_updated == 0 {
                if unplaced == 0 {
                    write(out, completed);
                }
                return;
            }
            if monitor
                .batch_done_at
                .is_some_and(|at| now.since(at) < policy.delay_ms)
            {
                return;
            }
            let mut batch = if policy.parallelism == 0 {
                usize::MAX
            } else {
                policy.parallelism as usize
            };
            if let Deploy::Canary { count, .. } = record.deploy {
                let quota = count.slots(u32::try_from(total).unwrap_or(u32::MAX)) as usize;
                batch = batch.min(quota.saturating_sub(moved));
            }
            let batch: Vec<(&SlotId, &Assignment)> = movable.into_iter().take(batch).collect();
            if let Err(reason) = batch.iter().try_for_each(|(slot, a)| room(slot, a)) {
                write(out, paused(reason));
                return;
            }
            for (slot, a) in batch {
                move_slot(out, slot, a);
            }
        }
    }
}

/// `a` moved to `generation` on its node, under the holder's lease.
fn moved_to(a: &Assignment, input: &RolloutInput<'_>, generation: u64) -> Assignment {
    Assignment {
        epoch: input.lease.epoch,
        holder: input.lease.holder.clone(),
        spec_generation: generation,
        ..a.clone()
    }
}

/// What a node does with a slot's container of an older generation while the task of
/// `generation` (the slot's assignment) starts, under `service`'s rollout: its order, and
/// blue/green's hold until the rollout completes.
pub fn previous_copy(service: &Service, generation: u64) -> PreviousCopy {
    let Some(r) = service
        .rollout
        .as_ref()
        .filter(|r| r.to_generation == generation && r.to_generation == service.generation)
    else {
        return PreviousCopy::Replace;
    };
    if r.deploy == Deploy::BlueGreen && r.kind == RolloutKind::Update {
        return if r.state == RolloutState::Completed {
            PreviousCopy::UntilHealthy
        } else {
            PreviousCopy::Keep
        };
    }
    match r.policy.order {
        UpdateOrder::StartFirst => PreviousCopy::UntilHealthy,
        UpdateOrder::StopFirst => PreviousCopy::Replace,
    }
}

/// Which tasks of a service take new connections, by generation (the routing mesh's
/// input): see [`traffic_split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficSplit {
    /// Only tasks of this generation (blue/green after its switch).
    Only(u64),
    /// Every task but those of this generation (blue/green before its switch: the new set
    /// starts and is watched, the old one serves).
    AllBut(u64),
    /// Tasks of `generation` (a canary) get `percent` % of new connections, the tasks of
    /// other generations the rest (when either side has no healthy task, the other takes
    /// everything).
    Weighted {
        /// The canary's generation.
        generation: u64,
        /// Its share of new connections, 0–100.
        percent: u8,
    },
}

/// How the routing mesh splits `service`'s connections between generations, from its rollout
/// record alone (a pure function every node computes alike); `None`: no preference, every
/// running healthy task alike (a canary without `weight_percent` thus gets its share of
/// the tasks).
///
/// - blue/green update, not completed: [`TrafficSplit::AllBut`] the new generation until
///   `traffic_generation` is written, then [`TrafficSplit::Only`] that generation;
/// - canary update with `weight_percent` (updating, paused or awaiting promotion):
///   [`TrafficSplit::Weighted`];
/// - anything else: `None`.
pub fn traffic_split(service: &Service) -> Option<TrafficSplit> {
    let r = service
        .rollout
        .as_ref()
        .filter(|r| r.to_generation == service.generation && r.kind == RolloutKind::Update)?;
    if r.state == RolloutState::Completed {
        return None;
    }
    match r.deploy {
        Deploy::BlueGreen => Some(match r.traffic_generation {
            Some(g) => TrafficSplit::Only(g),
            None => TrafficSplit::AllBut(r.to_generation),
        }),
        Deploy::Canary {
            weight_percent: Some(percent),
            ..
        } => Some(TrafficSplit::Weighted {
            generation: r.to_generation,
            percent: percent.min(100),
        }),
        _ => None,
    }
}

/// A rollout's progress for people (`service inspect`, the CLI's progress bar).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RolloutProgress {
    /// Slots whose assignment names the target generation.
    pub updated: u32,
    /// Of those, the ones whose node reports the target's task running and healthy (or
    /// without a health check).
    pub healthy: u32,
    /// Of those, the ones whose node reports the target's task exited, failed, restarting
    /// or unhealthy.
    pub failed: u32,
    /// Slots the service wants (its replica count; a global service's assignments).
    pub total: u32,
}

/// Where `service`'s rollout stands by the assignments and the latest `reports` (any
/// node's view: no monitor memory, so `healthy` counts the tasks healthy now, through their
/// monitor or not). `None` for a service without a rollout record.
pub fn progress(
    name: &ServiceName,
    service: &Service,
    assignments: &BTreeMap<SlotId, Assignment>,
    reports: &SlotReports,
) -> Option<RolloutProgress> {
    let target = service.rollout.as_ref()?.to_generation;
    let mut p = RolloutProgress::default();
    let wanted: Vec<(SlotId, Option<&Assignment>)> = match service.spec.mode {
        ServiceMode::Replicated => (0..service.spec.slot_count())
            .map(|index| {
                let slot = SlotId {
                    service: name.clone(),
                    slot: index,
                };
                let a = assignments.get(&slot);
                (slot, a)
            })
            .collect(),
        ServiceMode::Global => slots_of(assignments, name)
            .filter(|(slot, _)| service.spec.wants_slot(slot.slot))
            .map(|(slot, a)| (slot.clone(), Some(a)))
            .collect(),
    };
    for (slot, a) in wanted {
        let updated = a.filter(|a| a.spec_generation == target);
        p.count_slot(
            updated.is_some(),
            updated.and_then(|a| report_for(reports, &slot, a, target)),
        );
    }
    Some(p)
}

impl RolloutProgress {
    /// Counts one slot the service wants: `updated` when its assignment names the
    /// rollout's target generation, with its node's `report` of that generation's task. The
    /// one rule [`progress`] and the API's view of the tasks both follow.
    pub fn count_slot(&mut self, updated: bool, report: Option<&SlotReport>) {
        self.total = self.total.saturating_add(1);
        if !updated {
            return;
        }
        self.updated += 1;
        match report {
            Some(r) if failure_of(r, 0).is_some() => self.failed += 1,
            Some(r)
                if r.state == TaskState::Running
                    && matches!(r.health, TaskHealth::Healthy | TaskHealth::None) =>
            {
                self.healthy += 1
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{CanaryCount, Epoch, ServiceSpec, UpdatePolicy};

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn web() -> ServiceName {
        ServiceName::new("web").expect("name")
    }

    fn slot(i: u32) -> SlotId {
        SlotId {
            service: web(),
            slot: i,
        }
    }

    /// One service `web` at generation 2 rolling out from 1, its slots on nodes a, b, c in
    /// turn, every node reporting its task of generation 1 running.
    struct World {
        services: Services,
        assignments: BTreeMap<SlotId, Assignment>,
        reports: SlotReports,
        live: BTreeSet<NodeId>,
        lease: Lease,
        engine: Rollouts,
        capacity: BTreeMap<NodeId, Capacity>,
    }

    fn policy(parallelism: u32, delay_ms: u64, monitor_ms: u64) -> UpdatePolicy {
        UpdatePolicy {
            parallelism,
            delay_ms,
            monitor_ms,
            ..UpdatePolicy::default()
        }
    }

    fn world(replicas: u32, policy: UpdatePolicy, deploy: Deploy) -> World {
        let spec = ServiceSpec {
            image: "img:2".into(),
            replicas,
            ..Default::default()
        };
        let service = Service {
            name: web(),
            spec: spec.clone(),
            generation: 2,
            older_specs: [(
                1,
                ServiceSpec {
                    image: "img:1".into(),
                    ..spec
                },
            )]
            .into(),
            rollout: Some(Rollout {
                kind: RolloutKind::Update,
                from_generation: 1,
                to_generation: 2,
                state: RolloutState::Updating,
                policy,
                deploy,
                updated_at_ms: 0,
                traffic_generation: None,
            }),
            deleted: false,
            previous_spec: None,
        };
        let nodes = ["a", "b", "c"];
        let assignments = (0..replicas)
            .map(|i| {
                (
                    slot(i),
                    Assignment {
                        node: id(nodes[i as usize % 3]),
                        epoch: Epoch(1),
                        holder: id("a"),
                        spec_generation: 1,
                        displaced: Vec::new(),
                        gpus: Vec::new(),
                    },
                )
            })
            .collect();
        let mut w = World {
            services: Services::from(vec![(web(), service)]),
            assignments,
            reports: SlotReports::new(),
            live: nodes.iter().map(|n| id(n)).collect(),
            lease: Lease {
                epoch: Epoch(1),
                holder: id("a"),
            },
            engine: Rollouts::new(),
            capacity: BTreeMap::new(),
        };
        w.follow(TaskHealth::None);
        w
    }

    impl World {
        fn service(&self) -> &Service {
            self.services.get(&web()).expect("web")
        }

        fn record(&self) -> Rollout {
            self.service().rollout.clone().expect("a record")
        }

        fn set_record(&mut self, record: Rollout) {
            if let Some(s) = self.services.get_mut(&web()) {
                s.rollout = Some(record);
            }
        }

        /// Every node runs its slots' assigned generation, running with `health`.
        fn follow(&mut self, health: TaskHealth) {
            self.reports = self
                .assignments
                .iter()
                .map(|(slot, a)| {
                    (
                        slot.clone(),
                        vec![SlotReport {
                            node: a.node.clone(),
                            generation: a.spec_generation,
                            state: TaskState::Running,
                            health,
                            restarts: 0,
                            exit_code: None,
                            unassigned: false,
                        }],
                    )
                })
                .collect();
        }

        /// Slot `i`'s node reports its task of the assigned generation as `report` says.
        fn report(&mut self, i: u32, change: impl Fn(&mut SlotReport)) {
            if let Some(r) = self.reports.get_mut(&slot(i)).and_then(|r| r.first_mut()) {
                change(r);
            }
        }

        /// One holder round at `now`, its writes applied as the document would.
        fn round(&mut self, now: u64) -> RolloutDecisions {
            let touched = BTreeSet::new();
            let d = self.engine.round(RolloutInput {
                services: &self.services,
                assignments: &self.assignments,
                reports: &self.reports,
                live: &self.live,
                lease: &self.lease,
                touched: &touched,
                capacity: &self.capacity,
                now: Millis(now),
            });
            for (slot, a) in &d.moves {
                self.assignments.insert(slot.clone(), a.clone());
            }
            for (_, record) in &d.records {
                self.set_record(record.clone());
            }
            d
        }

        fn generations(&self) -> Vec<u64> {
            self.assignments
                .values()
                .map(|a| a.spec_generation)
                .collect()
        }
    }

    fn moved(d: &RolloutDecisions) -> Vec<u32> {
        d.moves.iter().map(|(s, _)| s.slot).collect()
    }

    #[test]
    fn batches_respect_parallelism_monitor_and_delay() {
        let mut w = world(4, policy(2, 1_000, 500), Deploy::Rolling);
        let before = w.assignments.clone();
        let d = w.round(0);
        assert_eq!(moved(&d), vec![0, 1], "lowest slots first, two at once");
        assert!(
            d.moves
                .iter()
                .all(|(s, a)| a.spec_generation == 2 && a.node == before[s].node),
            "moved on their nodes: {d:?}"
        );
        // Not reported yet, then healthy: in flight until the monitor period has passed.
        assert!(w.round(50).is_empty());
        w.follow(TaskHealth::None);
        assert!(w.round(100).is_empty(), "healthy from 100");
        assert!(w.round(599).is_empty(), "still within the monitor");
        assert!(w.round(600).is_empty(), "done at 600: the delay starts");
        assert!(w.round(1_599).is_empty(), "the delay has not passed");
        let d = w.round(1_600);
        assert_eq!(moved(&d), vec![2, 3]);
        w.follow(TaskHealth::Healthy);
        assert!(w.round(1_700).is_empty());
        let d = w.round(2_200);
        assert_eq!(d.records.len(), 1, "{d:?}");
        assert_eq!(w.record().state, RolloutState::Completed);
        assert_eq!(w.generations(), vec![2, 2, 2, 2]);
        assert!(
            w.round(2_300).is_empty(),
            "a completed rollout writes nothing more"
        );
    }

    #[test]
    fn a_task_starting_or_unhealthy_is_not_done_and_unhealthy_fails() {
        let mut w = world(2, policy(1, 0, 100), Deploy::Rolling);
        assert_eq!(moved(&w.round(0)), vec![0]);
        w.follow(TaskHealth::Starting);
        assert!(
            w.round(1_000).is_empty(),
            "starting is in flight, however long"
        );
        w.report(0, |r| r.health = TaskHealth::Unhealthy);
        let d = w.round(1_100);
        assert_eq!(d.records.len(), 1);
        assert_eq!(
            w.record().state,
            RolloutState::Paused {
                reason: "task web.0 turned unhealthy within the monitor period".into()
            }
        );
    }

    #[test]
    fn a_failure_pauses_and_leaves_the_rest_on_the_old_generation() {
        let mut w = world(4, policy(1, 0, 1_000), Deploy::Rolling);
        assert_eq!(moved(&w.round(0)), vec![0]);
        w.follow(TaskHealth::None);
        assert!(w.round(10).is_empty());
        // It runs a while, then exits within its monitor period.
        w.report(0, |r| {
            r.state = TaskState::Exited;
            r.exit_code = Some(1);
        });
        w.round(500);
        assert_eq!(
            w.record().state,
            RolloutState::Paused {
                reason: "task web.0 exited with code 1 within the monitor period".into()
            }
        );
        for t in [600, 5_000, 50_000] {
            assert!(w.round(t).is_empty(), "a paused rollout moves nothing");
        }
        assert_eq!(w.generations(), vec![2, 1, 1, 1]);
    }

    #[test]
    fn a_restart_within_the_monitor_is_a_failure_and_rollback_is_asked_for() {
        let mut w = world(3, policy(1, 0, 1_000), Deploy::Rolling);
        let mut record = w.record();
        record.policy.failure_action = FailureAction::Rollback;
        w.set_record(record);
        w.round(0);
        w.follow(TaskHealth::None);
        w.round(10);
        w.report(0, |r| r.restarts = 1);
        let d = w.round(20);
        assert_eq!(d.rollbacks, vec![(web(), 2)]);
        assert!(d.records.is_empty() && d.moves.is_empty(), "{d:?}");
        // A rollback whose own failure action is rollback pauses instead.
        let mut w = world(3, policy(1, 0, 1_000), Deploy::Rolling);
        let mut record = w.record();
        record.kind = RolloutKind::Rollback;
        record.policy.failure_action = FailureAction::Rollback;
        w.set_record(record);
        w.round(0);
        w.follow(TaskHealth::None);
        w.report(0, |r| r.state = TaskState::Failed);
        let d = w.round(20);
        assert!(d.rollbacks.is_empty());
        assert!(
            matches!(w.record().state, RolloutState::Paused { reason } if reason.contains("not rolled back"))
        );
    }

    #[test]
    fn failures_within_the_ratio_go_on_and_continue_ignores_them() {
        let mut w = world(4, policy(2, 0, 100), Deploy::Rolling);
        let mut record = w.record();
        record.policy.max_failure_ratio_permille = 500;
        w.set_record(record);
        w.round(0);
        w.follow(TaskHealth::None);
        w.report(1, |r| r.state = TaskState::Failed);
        w.round(10);
        assert_eq!(
            w.record().state,
            RolloutState::Updating,
            "1 of 2 is not above 0.5"
        );
        assert_eq!(
            moved(&w.round(110)),
            vec![2, 3],
            "slot 0 done, slot 1 failed"
        );
        w.follow(TaskHealth::None);
        w.report(3, |r| r.state = TaskState::Exited);
        w.round(120);
        assert_eq!(
            w.record().state,
            RolloutState::Updating,
            "2 of 4 is not above 0.5"
        );
        w.report(2, |r| r.state = TaskState::Dead);
        w.round(130);
        assert!(
            matches!(w.record().state, RolloutState::Paused { reason } if reason.starts_with("task web.1 failed"))
        );

        let mut w = world(2, policy(0, 0, 100), Deploy::Rolling);
        let mut record = w.record();
        record.policy.failure_action = FailureAction::Continue;
        w.set_record(record);
        assert_eq!(moved(&w.round(0)), vec![0, 1], "parallelism 0: all at once");
        w.follow(TaskHealth::None);
        w.report(0, |r| r.state = TaskState::Failed);
        w.round(10);
        w.round(110);
        assert_eq!(w.record().state, RolloutState::Completed);
    }

    #[test]
    fn a_canary_stops_at_its_count_and_a_promotion_rolls_the_rest() {
        let canary = Deploy::Canary {
            count: CanaryCount::Tasks(1),
            weight_percent: Some(10),
        };
        let mut w = world(4, policy(2, 0, 100), canary);
        assert_eq!(moved(&w.round(0)), vec![0], "the canary only");
        assert_eq!(
            traffic_split(w.service()),
            Some(TrafficSplit::Weighted {
                generation: 2,
                percent: 10
            })
        );
        w.follow(TaskHealth::None);
        w.round(10);
        w.round(110);
        assert_eq!(w.record().state, RolloutState::AwaitingPromotion);
        for t in [200, 10_000] {
            assert!(w.round(t).is_empty(), "waits for promote");
        }
        assert_eq!(w.generations(), vec![2, 1, 1, 1]);
        // `service promote`: updating again, rolling.
        let promoted = Rollout {
            state: RolloutState::Updating,
            deploy: Deploy::Rolling,
            ..w.record()
        };
        w.set_record(promoted);
        assert_eq!(traffic_split(w.service()), None);
        assert_eq!(moved(&w.round(10_100)), vec![1, 2]);
        w.follow(TaskHealth::None);
        w.round(10_200);
        assert_eq!(moved(&w.round(10_300)), vec![3]);
        w.follow(TaskHealth::None);
        w.round(10_400);
        w.round(10_500);
        assert_eq!(w.record().state, RolloutState::Completed);
    }

    #[test]
    fn blue_green_starts_all_switches_traffic_then_completes_after_the_delay() {
        let mut w = world(3, policy(1, 1_000, 100), Deploy::BlueGreen);
        assert_eq!(
            traffic_split(w.service()),
            Some(TrafficSplit::AllBut(2)),
            "the old set serves while the new one starts"
        );
        assert_eq!(moved(&w.round(0)), vec![0, 1, 2], "a full set at once");
        assert_eq!(previous_copy(w.service(), 2), PreviousCopy::Keep);
        w.follow(TaskHealth::Healthy);
        w.report(2, |r| r.health = TaskHealth::Starting);
        w.round(10);
        assert!(
            w.round(200).is_empty(),
            "slot 2 is not healthy yet: no switch"
        );
        w.follow(TaskHealth::Healthy);
        w.round(210);
        let d = w.round(310);
        assert_eq!(d.records.len(), 1);
        assert_eq!(w.record().traffic_generation, Some(2));
        assert_eq!(w.record().state, RolloutState::Updating);
        assert_eq!(traffic_split(w.service()), Some(TrafficSplit::Only(2)));
        assert_eq!(previous_copy(w.service(), 2), PreviousCopy::Keep);
        assert!(w.round(320).is_empty(), "the switch seen at 320");
        assert!(w.round(1_319).is_empty());
        w.round(1_320);
        assert_eq!(w.record().state, RolloutState::Completed);
        assert_eq!(traffic_split(w.service()), None);
        assert_eq!(
            previous_copy(w.service(), 2),
            PreviousCopy::UntilHealthy,
            "the old set stops once the rollout completes"
        );
    }

    #[test]
    fn a_new_holder_resumes_from_the_assignments() {
        let mut w = world(4, policy(1, 500, 100), Deploy::Rolling);
        w.round(0);
        w.follow(TaskHealth::None);
        w.round(10);
        w.round(110);
        assert_eq!(moved(&w.round(610)), vec![1]);
        // The holder dies; another takes the lease with no memory of the rollout.
        w.engine = Rollouts::new();
        w.lease = Lease {
            epoch: Epoch(2),
            holder: id("b"),
        };
        w.follow(TaskHealth::None);
        assert!(w.round(700).is_empty(), "slot 1 watched afresh: in flight");
        assert!(
            w.round(800).is_empty(),
            "both done at 800; the delay restarts"
        );
        let d = w.round(1_300);
        assert_eq!(
            moved(&d),
            vec![2],
            "resumes with the next slot, never slot 0 or 1 again"
        );
        assert_eq!(d.moves[0].1.epoch, Epoch(2), "under the new lease");
        assert_eq!(w.generations(), vec![2, 2, 2, 1]);
    }

    #[test]
    fn a_superseding_update_moves_every_older_generation_to_the_newest() {
        let mut w = world(3, policy(1, 0, 100), Deploy::Rolling);
        w.round(0);
        w.follow(TaskHealth::None);
        w.round(10);
        w.round(110);
        assert_eq!(w.generations(), vec![2, 2, 1]);
        // A new update while slot 1 is in flight: generation 3, a new record.
        if let Some(s) = w.services.get_mut(&web()) {
            let old = s.spec.clone();
            s.older_specs.insert(2, old);
            s.generation = 3;
            s.spec.image = "img:3".into();
            s.rollout = Some(Rollout {
                from_generation: 2,
                to_generation: 3,
                state: RolloutState::Updating,
                ..s.rollout.clone().expect("record")
            });
        }
        assert_eq!(moved(&w.round(120)), vec![0]);
        w.follow(TaskHealth::None);
        w.round(130);
        assert_eq!(
            moved(&w.round(230)),
            vec![1],
            "slot 1 of generation 2 is not updated"
        );
        w.follow(TaskHealth::None);
        w.round(240);
        assert_eq!(
            moved(&w.round(340)),
            vec![2],
            "slot 2 of generation 1 neither"
        );
        w.follow(TaskHealth::None);
        w.round(350);
        w.round(450);
        assert_eq!(w.record().state, RolloutState::Completed);
        assert_eq!(w.generations(), vec![3, 3, 3]);
    }

    #[test]
    fn slots_on_unreachable_nodes_or_touched_by_the_scheduler_wait() {
        let mut w = world(3, policy(0, 0, 100), Deploy::Rolling);
        w.live.remove(&id("b"));
        assert_eq!(moved(&w.round(0)), vec![0, 2]);
        let touched: BTreeSet<SlotId> = [slot(1)].into();
        w.live.insert(id("b"));
        w.follow(TaskHealth::None);
        let d = w.engine.round(RolloutInput {
            services: &w.services,
            assignments: &w.assignments,
            reports: &w.reports,
            live: &w.live,
            lease: &w.lease,
            touched: &touched,
            capacity: &w.capacity,
            now: Millis(200),
        });
        assert!(d.moves.is_empty(), "{d:?}");
    }

    #[test]
    fn progress_counts_updated_healthy_and_failed_slots() {
        let mut w = world(4, policy(2, 0, 100), Deploy::Rolling);
        w.round(0);
        w.follow(TaskHealth::Healthy);
        w.report(1, |r| r.state = TaskState::Exited);
        let p = progress(&web(), w.service(), &w.assignments, &w.reports).expect("a rollout");
        assert_eq!(
            p,
            RolloutProgress {
                updated: 2,
                healthy: 1,
                failed: 1,
                total: 4
            }
        );
    }
    /// `w`'s service rolled back from generation 2 to 3 (generation 1's spec again) under
    /// `policy`, as the document's rollback writes it.
    fn rolled_back(w: &mut World, policy: UpdatePolicy) {
        if let Some(s) = w.services.get_mut(&web()) {
            let old = s.spec.clone();
            let back = s.older_specs[&1].clone();
            s.older_specs.insert(2, old);
            s.generation = 3;
            s.spec = back;
            s.rollout = Some(Rollout {
                kind: RolloutKind::Rollback,
                from_generation: 2,
                to_generation: 3,
                state: RolloutState::Updating,
                policy,
                deploy: Deploy::Rolling,
                ..Rollout::default()
            });
        }
    }

    #[test]
    fn a_rollback_moves_the_slots_that_never_left_the_previous_spec_at_once() {
        // A canary of 1 of 4, rolled back: slots 1-3 still run generation 1's spec.
        let canary = Deploy::Canary {
            count: CanaryCount::Tasks(1),
            weight_percent: None,
        };
        let mut w = world(4, policy(1, 0, 100), canary);
        assert_eq!(moved(&w.round(0)), vec![0]);
        w.follow(TaskHealth::None);
        w.round(10);
        w.round(110);
        assert_eq!(w.record().state, RolloutState::AwaitingPromotion);
        rolled_back(&mut w, policy(1, 1_000, 100));
        assert_eq!(same_tasks_generations(w.service(), 3), vec![1]);
        assert_eq!(same_tasks_generations(w.service(), 2), Vec::<u64>::new());
        let d = w.round(200);
        assert_eq!(
            moved(&d),
            vec![1, 2, 3, 0],
            "the slots on generation 1 move at once, outside the batch of 1; slot 0 is the batch"
        );
        assert_eq!(w.generations(), vec![3, 3, 3, 3]);
        // The nodes keep the containers of slots 1-3 and report them at generation 3.
        w.follow(TaskHealth::None);
        assert!(
            w.round(210).is_empty(),
            "slot 0's new task is in its monitor"
        );
        let d = w.round(310);
        assert_eq!(d.records.len(), 1, "{d:?}");
        assert_eq!(w.record().state, RolloutState::Completed);
    }

    #[test]
    fn same_tasks_ignores_policies_and_needs_both_specs() {
        let mut w = world(2, policy(1, 0, 100), Deploy::Rolling);
        assert!(!same_tasks(w.service(), 1, 2), "another image");
        if let Some(s) = w.services.get_mut(&web()) {
            s.spec.image = "img:1".into();
            s.spec.update.parallelism = 7;
            s.spec.replicas = 9;
        }
        assert!(
            same_tasks(w.service(), 1, 2),
            "policies and replicas differ only"
        );
        assert!(!same_tasks(w.service(), 1, 5), "generation 5 is not known");
        assert!(same_tasks(w.service(), 5, 5));
    }

    /// `w`'s generations reserve `old` and `new` nano-CPUs; every node offers `offer`.
    fn with_cpus(w: &mut World, old: u64, new: u64, offer: u64) {
        if let Some(s) = w.services.get_mut(&web()) {
            s.spec.resources.nano_cpus = Some(new);
            if let Some(o) = s.older_specs.get_mut(&1) {
                o.resources.nano_cpus = Some(old);
            }
        }
        w.capacity = ["a", "b", "c"]
            .iter()
            .map(|n| {
                (
                    id(n),
                    Capacity {
                        nano_cpus: offer,
                        memory_bytes: 1 << 40,
                    },
                )
            })
            .collect();
    }

    const CPU: u64 = 1_000_000_000;

    #[test]
    fn a_move_that_does_not_fit_its_node_pauses_and_names_the_resource() {
        // Node a holds slots 0 and 3 at 1 CPU each of its 3; the new spec reserves 2.
        let mut w = world(4, policy(1, 0, 100), Deploy::Rolling);
        with_cpus(&mut w, CPU, 2 * CPU, 3 * CPU);
        // Stop-first: slot 0's 2 CPUs replace its 1 (2 + 1 of 3).
        assert_eq!(moved(&w.round(0)), vec![0]);
        for (t, slot) in [(100, 1), (200, 2)] {
            w.follow(TaskHealth::None);
            w.round(t);
            assert_eq!(moved(&w.round(t + 100)), vec![slot]);
        }
        w.follow(TaskHealth::None);
        w.round(400);
        // Slot 3 would make node a hold 4 CPUs of 3.
        let d = w.round(500);
        assert!(d.moves.is_empty(), "{d:?}");
        assert_eq!(
            w.record().state,
            RolloutState::Paused {
                reason: "task web.3 of generation 2 does not fit on node a: no 2 CPUs free".into()
            }
        );
        assert_eq!(w.generations(), vec![2, 2, 2, 1]);

        // Start-first keeps the old task beside the new: 1 + 1 + 2 of 3 does not fit.
        let mut w = world(4, policy(1, 0, 100), Deploy::Rolling);
        with_cpus(&mut w, CPU, 2 * CPU, 3 * CPU);
        let mut record = w.record();
        record.policy.order = UpdateOrder::StartFirst;
        w.set_record(record);
        let d = w.round(0);
        assert!(d.moves.is_empty(), "{d:?}");
        assert!(
            matches!(&w.record().state, RolloutState::Paused { reason } if reason.contains("web.0") && reason.contains("no 2 CPUs free")),
            "{:?}",
            w.record().state
        );

        // A node whose capacity is unknown takes any reservation (the scheduler's rule).
        let mut w = world(4, policy(1, 0, 100), Deploy::Rolling);
        with_cpus(&mut w, CPU, 2 * CPU, 3 * CPU);
        w.capacity.clear();
        let mut record = w.record();
        record.policy.order = UpdateOrder::StartFirst;
        w.set_record(record);
        assert_eq!(moved(&w.round(0)), vec![0]);
    }

    #[test]
    fn blue_green_checks_room_for_both_sets_before_it_starts_any() {
        let mut w = world(3, policy(1, 0, 100), Deploy::BlueGreen);
        with_cpus(&mut w, CPU, CPU, CPU);
        let d = w.round(0);
        assert!(d.moves.is_empty(), "{d:?}");
        assert!(
            matches!(&w.record().state, RolloutState::Paused { reason } if reason.contains("no 1 CPU free")),
            "{:?}",
            w.record().state
        );
        let mut w = world(3, policy(1, 0, 100), Deploy::BlueGreen);
        with_cpus(&mut w, CPU, CPU, 2 * CPU);
        assert_eq!(moved(&w.round(0)), vec![0, 1, 2]);
    }
}
