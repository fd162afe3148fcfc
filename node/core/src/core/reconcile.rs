//! Reconcile decisions: what a node must do to its containers so that its actual state matches
//! the assignments it holds, and when a stopped or unhealthy task is started again under its
//! service's restart policy. Pure: the daemon (and the simulator) lists containers, passes
//! the time, and carries out the actions.
//!
//! The rules, per slot assigned to this node:
//! - no container: create one (unless the task has `failed`: it stays failed until the
//!   service's spec changes);
//! - a container of an older generation, or a dead one: remove it (a new one is created the
//!   round after); but under a start-first rollout ([`PreviousCopy::UntilHealthy`]) a
//!   running one of an older generation keeps running beside the new one until the new one
//!   runs healthy, then goes after the deregistration delay, and under blue/green
//!   ([`PreviousCopy::Keep`]) it keeps running until the rollout completes;
//! - duplicates of one slot: keep one (right generation first, then running), remove the rest;
//! - a running container the engine calls `unhealthy`: stop it (SIGTERM, its stop timeout,
//!   SIGKILL); its exit then counts as a failure whatever its exit code;
//! - a stopped container: start it again when the policy says so — `always`: any exit;
//!   `on-failure`: a non-zero exit or a failed health check; `never`: no exit — after the
//!   backoff of [`BackoffConfig::for_policy`]. A task that needs a restart when
//!   `max_attempts` restarts in a row have already been made is `failed`: it is left stopped
//!   with its last exit code and error. The count starts over once a task has kept running
//!   for 30 s, and whenever the service's generation or restart policy changes.
//!
//! Containers of slots not assigned here are removed.
//!
//! An engine outage is not a task's failure: the daemon tells [`Supervisor::engine_lost`]
//! which containers were running when its engine stopped answering, and the first round
//! after the engine is back starts those it finds stopped at once, without counting a
//! restart or consulting the restart policy.

use std::collections::BTreeMap;

use serde::Serialize;
use warren_crdt::{Epoch, NodeId, RestartCondition, RestartPolicy, ServiceSpec, SlotId};

use crate::engine::PublishedPort;
use crate::protocol::{TaskState, TaskStatus};

use super::backoff::{Backoff, BackoffConfig};
use super::Millis;

/// Longest error text a [`TaskRestartStatus`] keeps, in bytes (it travels in heartbeats).
pub const MAX_ERROR_BYTES: usize = 256;

/// A slot assigned to this node, with what it should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTask {
    /// The slot.
    pub slot: SlotId,
    /// Epoch of the assignment (labels the container).
    pub epoch: Epoch,
    /// The lease holder that made the assignment: with `epoch`, its rank.
    pub holder: NodeId,
    /// Service generation the container must have.
    pub generation: u64,
    /// What to run.
    pub spec: ServiceSpec,
    /// The records of the volumes its spec mounts (from the document): the node creates
    /// each one's Docker volume before it starts the task.
    pub volumes: Vec<warren_crdt::Volume>,
    /// The GPUs of this node the task gets, by device id (the assignment's
    /// [`gpus`](warren_crdt::Assignment::gpus)); empty: none.
    pub gpus: Vec<String>,
    /// What happens to the slot's running container of an older generation while this
    /// one starts (the rollout's order, see [`super::rollout::previous_copy`]).
    pub previous: PreviousCopy,
    /// The service's other generations whose spec runs the same tasks as this one's
    /// ([`super::rollout::same_tasks`]; e.g. the generation a rollback returns to): a
    /// container created for one of them is this task's — kept as it is, never replaced for
    /// its generation, and reported at [`DesiredTask::generation`]. Empty: only containers
    /// of `generation` are.
    pub same_tasks_as: Vec<u64>,
}

impl DesiredTask {
    /// Whether a container created for `generation` runs this task: `generation` is the
    /// task's own or one of [`DesiredTask::same_tasks_as`].
    pub fn runs_generation(&self, generation: u64) -> bool {
        generation == self.generation || self.same_tasks_as.contains(&generation)
    }
}

/// `actual` as the reconcile rules read it: a container of its slot's desired task whose
/// generation runs the same tasks ([`DesiredTask::runs_generation`]) counts as of the
/// task's generation, so it is kept (not replaced as an older generation) and reported at
/// the task's generation. The one place that rule applies: [`Supervisor::round`] and
/// [`round_statuses`] both read their containers through it.
fn adopted<'a>(
    desired: &[DesiredTask],
    actual: &'a [ActualTask],
) -> std::borrow::Cow<'a, [ActualTask]> {
    let adopts = |c: &ActualTask| {
        desired.iter().find(|d| {
            d.slot == c.slot && d.generation != c.generation && d.runs_generation(c.generation)
        })
    };
    if !actual.iter().any(|c| adopts(c).is_some()) {
        return std::borrow::Cow::Borrowed(actual);
    }
    std::borrow::Cow::Owned(
        actual
            .iter()
            .map(|c| match adopts(c) {
                Some(d) => ActualTask {
                    generation: d.generation,
                    ..c.clone()
                },
                None => c.clone(),
            })
            .collect(),
    )
}

/// What a node does with a slot's running container of an older generation when the slot's
/// assignment names a newer one (issue 15: the rollout's `--update-order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PreviousCopy {
    /// `stop-first`: removed before the new container is created (the default).
    #[default]
    Replace,
    /// `start-first`: kept running while the new container is created, and removed once the
    /// new one runs healthy (or without a health check, for
    /// [`crate::protocol::CONFIRM_AFTER_MS`]), after the deregistration delay
    /// ([`Supervisor::set_deregistration_delay`]) so DNS and the routing mesh drop it first.
    UntilHealthy,
    /// Blue/green before its rollout completes: kept running whatever the new one does.
    Keep,
}

/// The state of a container as far as reconcile cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActualTaskState {
    /// Running.
    Running,
    /// Created or exited: maybe start it again.
    Stopped,
    /// Dead or otherwise unusable: replace it.
    Broken,
    /// In transition (restarting, removing, paused): leave it alone this round.
    #[default]
    Transient,
}

/// A container's health as the engine judges it. On the wire (heartbeats) it is the
/// lowercase word; an empty or unknown word (an older or newer peer) reads as `none`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskHealth {
    /// The service has no health check (or nothing is known of it).
    #[default]
    None,
    /// Within its start period, or no verdict yet.
    Starting,
    /// The last probe passed.
    Healthy,
    /// Its probes failed `retries` times in a row.
    Unhealthy,
}

impl<'de> serde::Deserialize<'de> for TaskHealth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let word = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(match word.as_ref() {
            "starting" => TaskHealth::Starting,
            "healthy" => TaskHealth::Healthy,
            "unhealthy" => TaskHealth::Unhealthy,
            _ => TaskHealth::None,
        })
    }
}

impl TaskHealth {
    /// `none`, `starting`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskHealth::None => "none",
            TaskHealth::Starting => "starting",
            TaskHealth::Healthy => "healthy",
            TaskHealth::Unhealthy => "unhealthy",
        }
    }
}

/// A container this node owns, as listed by the runtime (the daemon's Docker listing or the
/// simulator's model): the one input both hand to [`Supervisor::round`] and [`task_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualTask {
    /// Runtime's container id.
    pub id: String,
    /// The slot it runs.
    pub slot: SlotId,
    /// Service generation it was created for.
    pub generation: u64,
    /// Its state.
    pub state: ActualTaskState,
    /// Exit code of its last run when stopped; `None` when it never ran (or runs).
    pub exit_code: Option<i64>,
    /// Its health.
    pub health: TaskHealth,
    /// The engine's word on what went wrong (last failed probe, OOM kill), for people; may
    /// be empty.
    pub detail: String,
    /// What the engine calls its state (`created`, `exited`, `paused`, ...), for reports.
    pub engine_state: TaskState,
    /// The engine's status text for people (`Up 3 minutes`); may be empty.
    pub status: String,
    /// Ports it publishes.
    pub ports: Vec<PublishedPort>,
    /// How long ago it was created, in milliseconds; `None` when unknown.
    pub age_ms: Option<u64>,
    /// The GPUs it was created with, by device id; empty: none.
    pub gpus: Vec<String>,
}

/// What a node's reconcile loop works towards: the tasks assigned to it and the slots assigned
/// elsewhere whose running copies it keeps for now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Tasks assigned to this node ([`Supervisor::round`]'s `desired`).
    pub tasks: Vec<DesiredTask>,
    /// Copies held ([`Supervisor::set_held`]).
    pub held: BTreeMap<SlotId, HeldSlot>,
    /// Slots assigned here that another node runs a copy of, which the assignment has not
    /// judged: each with that node ([`Supervisor::set_awaiting`]).
    pub awaiting: BTreeMap<SlotId, NodeId>,
    /// The names of the volumes whose record names this node: a Docker volume of this node
    /// whose name leaves the set (`volume rm`) is deleted.
    pub volumes: std::collections::BTreeSet<String>,
}

/// A slot this node holds a copy of without being assigned it (see [`Supervisor::set_held`]):
/// after a heal, or while a start-first move is made. Its running copy is kept (never
/// restarted) until the holder's decision and its assigned node's confirmation release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSlot {
    /// The service's current generation.
    pub generation: u64,
    /// The assigned node reports the slot running at `generation` (healthy, or without a
    /// health check).
    pub confirmed_elsewhere: bool,
    /// The assignment lists this node among those whose copies the holder decided to stop.
    pub displaced: bool,
}

impl HeldSlot {
    /// Whether a running copy of generation `generation` may stop now: only once the
    /// assigned node confirmed its own copy running, and only if the holder judged this
    /// copy (or it is of an older generation, which no holder keeps).
    pub fn releases(&self, generation: u64) -> bool {
        self.confirmed_elsewhere && (self.displaced || generation != self.generation)
    }
}

/// Whether the running copy `id` that is to stop is still in its deregistration delay of
/// `delay_ms` at `now` (`since`: when each copy's delay began, started here the first time
/// it is asked): then it is listed in `round.deregistering` with the milliseconds left, and
/// the caller leaves it running.
fn deregistering_still(
    delay_ms: u64,
    since: &mut BTreeMap<String, Millis>,
    id: &str,
    now: Millis,
    round: &mut Round,
) -> bool {
    if delay_ms == 0 {
        return false;
    }
    let began = *since.entry(id.to_string()).or_insert(now);
    let left = delay_ms.saturating_sub(now.since(began));
    if left > 0 {
        round.deregistering.push((id.to_string(), left));
    }
    left > 0
}

/// What the daemon must do to its runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeAction {
    /// Create and start a container for this task (boxed: a spec is large).
    Create(Box<DesiredTask>),
    /// Start this stopped container again (restart).
    Start {
        /// Container id.
        id: String,
        /// Its slot.
        slot: SlotId,
    },
    /// Stop this container and keep it (SIGTERM, its stop timeout, SIGKILL).
    Stop {
        /// Container id.
        id: String,
        /// Its slot.
        slot: SlotId,
        /// Why, for logs.
        reason: &'static str,
    },
    /// Stop and remove this container.
    Remove {
        /// Container id.
        id: String,
        /// Its slot.
        slot: SlotId,
        /// Why, for logs.
        reason: &'static str,
    },
}

impl RuntimeAction {
    /// The slot the action is for.
    pub fn slot(&self) -> &SlotId {
        match self {
            RuntimeAction::Create(task) => &task.slot,
            RuntimeAction::Start { slot, .. }
            | RuntimeAction::Stop { slot, .. }
            | RuntimeAction::Remove { slot, .. } => slot,
        }
    }
}

/// Where a task stands with its restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPhase {
    /// Running, being started, or nothing to decide.
    Active,
    /// Stopped; it will be started again after the backoff.
    BackingOff,
    /// Stopped, and its policy leaves it so (`never`, or `on-failure` after exit 0).
    Exited,
    /// It needed more restarts than `max_attempts` allows: left stopped until the spec changes.
    Failed,
}

/// A task's restart bookkeeping, for `service ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRestartStatus {
    /// Where it stands.
    pub phase: RestartPhase,
    /// Restarts in a row so far (since it last ran for 30 s or its spec changed).
    pub restarts: u32,
    /// Milliseconds until the next restart, while [`RestartPhase::BackingOff`].
    pub next_restart_in_ms: Option<u64>,
    /// Exit code of the task's last run, if it stopped.
    pub last_exit_code: Option<i64>,
    /// Why its last run ended, if not cleanly: `exited with code 3`, `unhealthy: ...`
    /// (at most [`MAX_ERROR_BYTES`] bytes).
    pub last_error: Option<String>,
}

/// One round's decisions: what to do, and where each desired task stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Runtime actions, in no particular order (each for a different container).
    pub actions: Vec<RuntimeAction>,
    /// Restart bookkeeping of every desired slot.
    pub tasks: BTreeMap<SlotId, TaskRestartStatus>,
    /// Ids of the running copies of held slots this round keeps (see [`HeldSlot`]): to be
    /// reported as `unassigned` so the lease holder can judge them.
    pub held: Vec<String>,
    /// Ids of released copies kept running through the deregistration delay (see
    /// [`Supervisor::set_deregistration_delay`]), each with the milliseconds left: reported
    /// `removing`, never `running`, so no one sends them new work.
    pub deregistering: Vec<(String, u64)>,
    /// Ids of running containers of an older generation kept beside their slot's new task
    /// (start-first and blue/green, [`PreviousCopy`]): reported as their own tasks, of their
    /// generation.
    pub previous: Vec<String>,
}

#[derive(Debug, Clone)]
struct SlotRecord {
    generation: u64,
    policy: RestartPolicy,
    backoff: Backoff,
    /// Set when this node stopped the container for being unhealthy (with the engine's
    /// detail): its exit counts as a failure whatever its code.
    stopped_unhealthy: Option<String>,
    last_exit_code: Option<i64>,
    last_error: Option<String>,
    failed: bool,
}

impl SlotRecord {
    fn new(task: &DesiredTask) -> Self {
        Self {
            generation: task.generation,
            policy: task.spec.restart,
            backoff: Backoff::default(),
            stopped_unhealthy: None,
            last_exit_code: None,
            last_error: None,
            failed: false,
        }
    }

    fn status(&self, phase: RestartPhase, next: Option<u64>) -> TaskRestartStatus {
        TaskRestartStatus {
            phase,
            restarts: self.backoff.restarts(),
            next_restart_in_ms: next,
            last_exit_code: self.last_exit_code,
            last_error: self.last_error.clone(),
        }
    }
}

/// The reconcile decision maker of one node: the rules of the module doc, with the restart
/// counts it must remember between rounds. The daemon and the simulator each keep one per
/// node and call [`Supervisor::round`] with what they listed.
#[derive(Debug, Default)]
pub struct Supervisor {
    slots: BTreeMap<SlotId, SlotRecord>,
    /// Containers that ran when the engine went away (see [`Supervisor::engine_lost`]);
    /// emptied by the next round.
    interrupted: std::collections::BTreeSet<String>,
    /// Slots assigned elsewhere whose running copies here are kept (see [`HeldSlot`]).
    held: BTreeMap<SlotId, HeldSlot>,
    /// Slots assigned here not to be started yet (see [`Supervisor::set_awaiting`]).
    awaiting: BTreeMap<SlotId, NodeId>,
    /// How long a released copy keeps running, reported `removing`, before it is stopped.
    deregistration_delay_ms: u64,
    /// Released copies in their deregistration delay: container id to when it began.
    deregistering: BTreeMap<String, Millis>,
}

impl Supervisor {
    /// A supervisor that remembers nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The engine stopped answering while the containers `running` (their ids) ran. The
    /// next round starts those of them it finds stopped at once, uncounted, whatever their
    /// exit code and restart policy: their exit was the engine's doing. Containers not
    /// found stopped in that round are forgotten.
    pub fn engine_lost(&mut self, running: impl IntoIterator<Item = String>) {
        self.interrupted.extend(running);
    }

    /// The slots assigned to other nodes whose running copies on this node the next rounds
    /// keep (make before break, DESIGN §5), replacing the previous set. A copy of a slot that
    /// is neither desired here nor held is removed; a held copy that stops is removed, never
    /// restarted; one is removed once its [`HeldSlot::releases`] says so.
    pub fn set_held(&mut self, held: BTreeMap<SlotId, HeldSlot>) {
        self.held = held;
    }

    /// The slots assigned to this node that another node (the value) runs a copy of, of the
    /// same generation, that the assignment did not judge (that node is not among its
    /// `displaced`): the assignment was made without knowing of that copy. The next rounds
    /// start no container for them — the lease holder will judge the copies and may keep
    /// the one that runs — but keep and restart one this node already has. Replaces the
    /// previous set (make before break, DESIGN §5: a heal starts nothing for a slot that
    /// runs).
    pub fn set_awaiting(&mut self, awaiting: BTreeMap<SlotId, NodeId>) {
        self.awaiting = awaiting;
    }

    /// How long a held copy, once released (its replacement runs and is healthy on the
    /// assigned node: a drain's or a heal's move), keeps running before it is stopped, in
    /// milliseconds; 0 (the default) stops it in the round that releases it. Meanwhile it is
    /// reported `removing` ([`Round::deregistering`]), so the cluster stops advertising it
    /// (task lists, names) before its process gets SIGTERM and clients that read the task
    /// list in that window still reach a running copy. The same idea as AWS load balancers'
    /// target deregistration delay, or a Kubernetes `preStop` sleep while the endpoint is
    /// withdrawn.
    pub fn set_deregistration_delay(&mut self, ms: u64) {
        self.deregistration_delay_ms = ms;
    }

    /// Decides the actions that bring `actual` to `desired` at `now`, and reports where each
    /// desired task stands.
    pub fn round(&mut self, desired: &[DesiredTask], actual: &[ActualTask], now: Millis) -> Round {
        let actual = adopted(desired, actual);
        let actual: &[ActualTask] = &actual;
        let wanted: BTreeMap<&SlotId, &DesiredTask> =
            desired.iter().map(|d| (&d.slot, d)).collect();
        self.slots.retain(|slot, _| wanted.contains_key(slot));
        let mut by_slot: BTreeMap<&SlotId, Vec<&ActualTask>> = BTreeMap::new();
        for task in actual {
            by_slot.entry(&task.slot).or_default().push(task);
        }
        let mut round = Round::default();
        // A copy in its deregistration delay that is gone (or no longer listed) is forgotten.
        self.deregistering
            .retain(|id, _| actual.iter().any(|t| t.id == *id));
        for (slot, tasks) in &by_slot {
            if wanted.contains_key(slot) {
                continue;
            }
            if let Some(hold) = self.held.get(*slot) {
                // Keep the copy that has been here longest, while it runs and is not released.
                let keep = tasks
                    .iter()
                    .filter(|t| t.state == ActualTaskState::Running && !hold.releases(t.generation))
                    .max_by_key(|t| (t.age_ms, std::cmp::Reverse(t.id.clone())));
                for t in tasks {
                    if keep.is_some_and(|k| k.id == t.id) {
                        round.held.push(t.id.clone());
                        continue;
                    }
                    // A released running copy first leaves the task lists for the delay.
                    if t.state == ActualTaskState::Running
                        && hold.releases(t.generation)
                        && deregistering_still(
                            self.deregistration_delay_ms,
                            &mut self.deregistering,
                            &t.id,
                            now,
                            &mut round,
                        )
                    {
                        continue;
                    }
                    let reason = if t.state != ActualTaskState::Running {
                        "stopped copy of a slot assigned to another node"
                    } else if hold.releases(t.generation) {
                        "the slot runs on its assigned node"
                    } else {
                        "duplicate container for slot"
                    };
                    round.actions.push(RuntimeAction::Remove {
                        id: t.id.clone(),
                        slot: (*slot).clone(),
                        reason,
                    });
                }
            } else {
                for t in tasks {
                    round.actions.push(RuntimeAction::Remove {
                        id: t.id.clone(),
                        slot: (*slot).clone(),
                        reason: "slot not assigned to this node",
                    });
                }
            }
        }
        for (slot, want) in wanted {
            let record = self
                .slots
                .entry(slot.clone())
                .or_insert_with(|| SlotRecord::new(want));
            if record.generation != want.generation || record.policy != want.spec.restart {
                // A new spec: the task gets a fresh start, failed or not.
                *record = SlotRecord::new(want);
            }
            let mut tasks = by_slot.remove(slot).unwrap_or_default();
            // Start-first and blue/green: the running containers of an older generation stay
            // beside the new one for now (decided after the new one's, below).
            let mut older: Vec<&ActualTask> = Vec::new();
            if want.previous != PreviousCopy::Replace {
                let (old, rest): (Vec<&ActualTask>, Vec<&ActualTask>) =
                    tasks.into_iter().partition(|t| {
                        t.generation < want.generation && t.state == ActualTaskState::Running
                    });
                tasks = rest;
                older = old;
            }
            // Keep the best container: right generation first, then running.
            tasks.sort_by_key(|t| {
                (
                    t.generation != want.generation || t.gpus != want.gpus,
                    t.state != ActualTaskState::Running,
                    t.id.clone(),
                )
            });
            for t in tasks.iter().skip(1) {
                round.actions.push(RuntimeAction::Remove {
                    id: t.id.clone(),
                    slot: slot.clone(),
                    reason: "duplicate container for slot",
                });
            }
            let status = match tasks.first() {
                None if record.failed => record.status(RestartPhase::Failed, None),
                None if self.awaiting.contains_key(slot) => {
                    record.status(RestartPhase::Active, None)
                }
                None => {
                    round
                        .actions
                        .push(RuntimeAction::Create(Box::new(want.clone())));
                    record.status(RestartPhase::Active, None)
                }
                Some(t) if t.generation != want.generation => {
                    round.actions.push(RuntimeAction::Remove {
                        id: t.id.clone(),
                        slot: slot.clone(),
                        reason: "container of an older service generation",
                    });
                    record.status(RestartPhase::Active, None)
                }
                // Its assignment now names other GPUs (a heal's GPU dispute re-placed it on
                // this node): the container, which holds the old ones, is replaced.
                Some(t) if t.gpus != want.gpus => {
                    round.actions.push(RuntimeAction::Remove {
                        id: t.id.clone(),
                        slot: slot.clone(),
                        reason: "container holds other GPUs than its assignment",
                    });
                    record.status(RestartPhase::Active, None)
                }
                Some(t) => match t.state {
                    ActualTaskState::Transient => record.status(RestartPhase::Active, None),
                    ActualTaskState::Broken => {
                        round.actions.push(RuntimeAction::Remove {
                            id: t.id.clone(),
                            slot: slot.clone(),
                            reason: "container is dead",
                        });
                        record.status(RestartPhase::Active, None)
                    }
                    ActualTaskState::Running if t.health == TaskHealth::Unhealthy => {
                        record.stopped_unhealthy = Some(t.detail.clone());
                        round.actions.push(RuntimeAction::Stop {
                            id: t.id.clone(),
                            slot: slot.clone(),
                            reason: "unhealthy",
                        });
                        record.status(RestartPhase::Active, None)
                    }
                    ActualTaskState::Running => {
                        let config = BackoffConfig::for_policy(&record.policy);
                        record.backoff.running(&config, now);
                        // Started by hand, perhaps: running is not failed.
                        record.failed = false;
                        record.status(RestartPhase::Active, None)
                    }
                    ActualTaskState::Stopped if self.interrupted.contains(&t.id) => {
                        round.actions.push(RuntimeAction::Start {
                            id: t.id.clone(),
                            slot: slot.clone(),
                        });
                        record.status(RestartPhase::Active, None)
                    }
                    ActualTaskState::Stopped => {
                        let (phase, next) = stopped(record, t, now);
                        if phase == RestartPhase::Active {
                            round.actions.push(RuntimeAction::Start {
                                id: t.id.clone(),
                                slot: slot.clone(),
                            });
                        }
                        record.status(phase, next)
                    }
                },
            };
            round.tasks.insert(slot.clone(), status);
            if !older.is_empty() {
                let new_ready = tasks.first().is_some_and(|t| {
                    t.generation == want.generation
                        && t.state == ActualTaskState::Running
                        && match t.health {
                            TaskHealth::Healthy => true,
                            TaskHealth::None => t
                                .age_ms
                                .is_none_or(|age| age >= crate::protocol::CONFIRM_AFTER_MS),
                            _ => false,
                        }
                });
                self.previous_copies(slot, want.previous, new_ready, &older, now, &mut round);
            }
        }
        self.interrupted.clear();
        round
    }

    /// Decides on the running containers of an older generation of `slot` kept beside its
    /// new task ([`PreviousCopy`]): the newest generation's (of equal ones, the one here
    /// longest) stays while `previous` says so (blue/green), or until the new task is ready
    /// (`new_ready`) and its deregistration delay has passed; the others go at once. The
    /// newest: a rollout that starts while the previous one's last old copy is still in its
    /// deregistration delay keeps the copy that served last, not the one before it.
    fn previous_copies(
        &mut self,
        slot: &SlotId,
        previous: PreviousCopy,
        new_ready: bool,
        older: &[&ActualTask],
        now: Millis,
        round: &mut Round,
    ) {
        let keep = older
            .iter()
            .max_by_key(|t| (t.generation, t.age_ms, std::cmp::Reverse(t.id.clone())))
            .map(|t| t.id.clone());
        for t in older {
            if keep.as_ref() != Some(&t.id) {
                round.actions.push(RuntimeAction::Remove {
                    id: t.id.clone(),
                    slot: slot.clone(),
                    reason: "duplicate container for slot",
                });
                continue;
            }
            if previous == PreviousCopy::Keep || !new_ready {
                round.previous.push(t.id.clone());
                continue;
            }
            if deregistering_still(
                self.deregistration_delay_ms,
                &mut self.deregistering,
                &t.id,
                now,
                round,
            ) {
                continue;
            }
            round.actions.push(RuntimeAction::Remove {
                id: t.id.clone(),
                slot: slot.clone(),
                reason: "its slot's new generation runs healthy",
            });
        }
    }
}

/// The decision for a stopped container `t`: start it now ([`RestartPhase::Active`]), later,
/// or never.
fn stopped(record: &mut SlotRecord, t: &ActualTask, now: Millis) -> (RestartPhase, Option<u64>) {
    let Some(code) = t.exit_code else {
        // Created but never started (a start that failed half-way): start it, uncounted.
        return (RestartPhase::Active, None);
    };
    let failure = record.stopped_unhealthy.is_some() || code != 0;
    record.last_exit_code = Some(code);
    record.last_error = match &record.stopped_unhealthy {
        Some(detail) if detail.is_empty() => Some("unhealthy".to_string()),
        Some(detail) => Some(format!("unhealthy: {detail}")),
        None if code != 0 && t.detail.is_empty() => Some(format!("exited with code {code}")),
        None if code != 0 => Some(format!("exited with code {code}: {}", t.detail)),
        None => None,
    }
    .map(|e| crate::engine::truncate_text(&e, MAX_ERROR_BYTES));
    let restart = match record.policy.condition {
        RestartCondition::Always => true,
        RestartCondition::OnFailure => failure,
        RestartCondition::Never => false,
    };
    if !restart {
        return (RestartPhase::Exited, None);
    }
    if record.failed {
        return (RestartPhase::Failed, None);
    }
    if record
        .policy
        .max_attempts
        .is_some_and(|max| record.backoff.restarts() >= max)
    {
        record.failed = true;
        return (RestartPhase::Failed, None);
    }
    let config = BackoffConfig::for_policy(&record.policy);
    match record.backoff.try_restart(&config, now) {
        Ok(()) => {
            record.stopped_unhealthy = None;
            (RestartPhase::Active, None)
        }
        Err(wait_ms) => (RestartPhase::BackingOff, Some(wait_ms)),
    }
}

/// The container that stands for `task` among this node's `actual` ones: of its slot, the
/// right generation first, then a running one.
///
/// A running container of an older generation that the task keeps beside it
/// ([`PreviousCopy`]) is not the task's: it is reported on its own ([`round_statuses`]).
pub fn container_for<'a>(task: &DesiredTask, actual: &'a [ActualTask]) -> Option<&'a ActualTask> {
    actual
        .iter()
        .filter(|c| c.slot == task.slot)
        .filter(|c| {
            task.previous == PreviousCopy::Replace
                || task.runs_generation(c.generation)
                || !(c.generation < task.generation && c.state == ActualTaskState::Running)
        })
        .max_by_key(|c| {
            (
                task.runs_generation(c.generation),
                c.state == ActualTaskState::Running,
            )
        })
}

/// The report of one desired task, from what the runtime observed of its container (if
/// any), its restart bookkeeping, the error of the last action on it, and the state to say
/// when there is neither a container nor anything else to tell (`fallback`, e.g.
/// [`TaskState::Pending`]). The one rule that turns an observation into a [`TaskStatus`]: the
/// daemon and the simulator both call it. The result is [`TaskStatus::bounded`].
pub fn task_status(
    task: &DesiredTask,
    container: Option<&ActualTask>,
    restart: Option<&TaskRestartStatus>,
    error: Option<&str>,
    fallback: TaskState,
) -> TaskStatus {
    let running = container.is_some_and(|c| c.state == ActualTaskState::Running);
    let last_error = restart.and_then(|r| r.last_error.clone());
    let (state, status) = if running {
        (TaskState::Running, container.map(|c| c.status.clone()))
    } else if let Some(e) = error {
        (TaskState::Failed, Some(e.to_string()))
    } else {
        match restart.map(|r| (r.phase, r)) {
            Some((RestartPhase::Failed, r)) => (
                TaskState::Failed,
                Some(format!(
                    "gave up after {} restarts: {}",
                    r.restarts,
                    last_error.clone().unwrap_or_default()
                )),
            ),
            Some((RestartPhase::BackingOff, r)) => (
                TaskState::Restarting,
                Some(format!(
                    "restart {} in {:.1} s (backing off)",
                    r.restarts.saturating_add(1),
                    r.next_restart_in_ms.unwrap_or(0) as f64 / 1000.0
                )),
            ),
            _ => match container {
                Some(c) => (c.engine_state, Some(c.status.clone())),
                None => (fallback, None),
            },
        }
    };
    TaskStatus {
        service: task.slot.service.to_string(),
        slot: task.slot.slot,
        state,
        status: status.unwrap_or_default(),
        container: container
            .map(|c| short_id(&c.id).to_string())
            .unwrap_or_default(),
        ports: container.map(|c| c.ports.clone()).unwrap_or_default(),
        health: container.map(|c| c.health).unwrap_or_default(),
        exit_code: container
            .and_then(|c| c.exit_code)
            .or_else(|| restart.and_then(|r| r.last_exit_code)),
        restarts: restart.map_or(0, |r| r.restarts),
        next_restart_ms: restart.and_then(|r| r.next_restart_in_ms),
        error: error.map(str::to_string).or(last_error).unwrap_or_default(),
        generation: container.map_or(0, |c| c.generation),
        age_ms: container.and_then(|c| c.age_ms),
        unassigned: false,
        assignment_epoch: task.epoch.0,
        assignment_holder: task.holder.to_string(),
        // The daemon adds it from its engine's listing (the core sees no networks).
        overlay_ip: None,
    }
    .bounded()
}

/// The report of a running copy this node keeps of a slot assigned elsewhere (see
/// [`HeldSlot`]): `unassigned`, so the lease holder judges it.
pub fn held_status(copy: &ActualTask) -> TaskStatus {
    TaskStatus {
        service: copy.slot.service.to_string(),
        slot: copy.slot.slot,
        state: TaskState::Running,
        status: copy.status.clone(),
        container: short_id(&copy.id).to_string(),
        ports: copy.ports.clone(),
        health: copy.health,
        generation: copy.generation,
        age_ms: copy.age_ms,
        unassigned: true,
        ..TaskStatus::default()
    }
    .bounded()
}

/// The reports of a round: one per desired task ([`task_status`] with `fallback` and the
/// round's `errors`), then one per held copy ([`held_status`]).
pub fn round_statuses(
    desired: &[DesiredTask],
    actual: &[ActualTask],
    round: &Round,
    errors: &BTreeMap<SlotId, String>,
    fallback: TaskState,
) -> Vec<TaskStatus> {
    let actual = adopted(desired, actual);
    let actual: &[ActualTask] = &actual;
    let mut out: Vec<TaskStatus> = desired
        .iter()
        .map(|task| {
            task_status(
                task,
                container_for(task, actual),
                round.tasks.get(&task.slot),
                errors.get(&task.slot).map(String::as_str),
                fallback,
            )
        })
        .collect();
    out.extend(
        actual
            .iter()
            .filter(|c| round.held.contains(&c.id))
            .map(held_status),
    );
    // Older generations kept beside their slot's new task: reported as assigned tasks of
    // their own generation (after the new task's report, which readers take first).
    out.extend(
        actual
            .iter()
            .filter(|c| round.previous.contains(&c.id))
            .filter_map(|c| {
                let task = desired.iter().find(|d| d.slot == c.slot)?;
                Some(task_status(task, Some(c), None, None, fallback))
            }),
    );
    out.extend(actual.iter().filter_map(|c| {
        let (_, left) = round.deregistering.iter().find(|(id, _)| *id == c.id)?;
        Some(
            TaskStatus {
                state: TaskState::Removing,
                status: format!("deregistering: stops in {:.1} s", *left as f64 / 1000.0),
                ..held_status(c)
            }
            .bounded(),
        )
    }));
    out
}

/// A container id as people see it: its first 12 characters.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::ServiceName;

    fn slot(i: u32) -> SlotId {
        SlotId {
            service: ServiceName::new("web").expect("name"),
            slot: i,
        }
    }

    fn desired_with(i: u32, restart: RestartPolicy) -> DesiredTask {
        DesiredTask {
            slot: slot(i),
            epoch: Epoch(1),
            holder: NodeId("a".into()),
            generation: 1,
            spec: ServiceSpec {
                image: "img".into(),
                replicas: 3,
                restart,
                ..Default::default()
            },
            volumes: Vec::new(),
            gpus: Vec::new(),
            previous: PreviousCopy::Replace,
            same_tasks_as: Vec::new(),
        }
    }

    fn desired(i: u32) -> DesiredTask {
        desired_with(i, RestartPolicy::default())
    }

    fn actual(id: &str, i: u32, generation: u64, state: ActualTaskState) -> ActualTask {
        ActualTask {
            id: id.into(),
            slot: slot(i),
            generation,
            state,
            exit_code: (state == ActualTaskState::Stopped).then_some(0),
            health: TaskHealth::None,
            detail: String::new(),
            engine_state: TaskState::Unknown,
            status: String::new(),
            ports: Vec::new(),
            age_ms: None,
            gpus: Vec::new(),
        }
    }

    #[test]
    fn a_container_on_other_gpus_than_its_assignment_is_replaced() {
        let mut s = Supervisor::new();
        let mut want = desired(0);
        want.gpus = vec!["GPU-b".into()];
        let on_a = ActualTask {
            gpus: vec!["GPU-a".into()],
            ..actual("c", 0, 1, ActualTaskState::Running)
        };
        let round = s.round(std::slice::from_ref(&want), &[on_a], Millis(0));
        assert_eq!(
            round.actions,
            vec![RuntimeAction::Remove {
                id: "c".into(),
                slot: slot(0),
                reason: "container holds other GPUs than its assignment",
            }]
        );
        // Gone: one is created with the assignment's GPUs.
        let round = s.round(std::slice::from_ref(&want), &[], Millis(1));
        assert!(
            matches!(&round.actions[..], [RuntimeAction::Create(t)] if t.gpus == want.gpus),
            "{round:?}"
        );
        // The right GPUs: left alone.
        let on_b = ActualTask {
            gpus: vec!["GPU-b".into()],
            ..actual("d", 0, 1, ActualTaskState::Running)
        };
        assert!(s
            .round(std::slice::from_ref(&want), &[on_b], Millis(2))
            .actions
            .is_empty());
    }

    #[test]
    fn a_held_copy_runs_until_the_kept_one_is_confirmed_and_is_never_restarted() {
        let mut s = Supervisor::new();
        let running = actual("c", 0, 1, ActualTaskState::Running);
        let hold = |confirmed_elsewhere, displaced| {
            [(
                slot(0),
                HeldSlot {
                    generation: 1,
                    confirmed_elsewhere,
                    displaced,
                },
            )]
            .into()
        };
        // Assigned elsewhere, not yet judged or not yet confirmed: kept and reported.
        for (confirmed, displaced) in [(false, false), (true, false), (false, true)] {
            s.set_held(hold(confirmed, displaced));
            let round = s.round(&[], std::slice::from_ref(&running), Millis(0));
            assert!(round.actions.is_empty(), "{round:?}");
            assert_eq!(round.held, vec!["c".to_string()]);
        }
        // Judged and the kept copy confirmed: it goes.
        s.set_held(hold(true, true));
        let round = s.round(&[], std::slice::from_ref(&running), Millis(0));
        assert!(matches!(&round.actions[..], [RuntimeAction::Remove { id, .. }] if id == "c"));
        // A held copy that stopped is removed, not restarted; not held at all: removed.
        s.set_held(hold(false, false));
        let round = s.round(&[], &[exited("c", 1)], Millis(0));
        assert!(matches!(&round.actions[..], [RuntimeAction::Remove { .. }]));
        s.set_held(BTreeMap::new());
        let round = s.round(&[], std::slice::from_ref(&running), Millis(0));
        assert!(matches!(&round.actions[..], [RuntimeAction::Remove { .. }]));
    }

    #[test]
    fn a_released_copy_is_reported_removing_through_the_deregistration_delay_then_stopped() {
        let mut s = Supervisor::new();
        s.set_deregistration_delay(2_000);
        let running = actual("c", 0, 1, ActualTaskState::Running);
        let released: BTreeMap<SlotId, HeldSlot> = [(
            slot(0),
            HeldSlot {
                generation: 1,
                confirmed_elsewhere: true,
                displaced: true,
            },
        )]
        .into();
        s.set_held(released);
        let round = s.round(&[], std::slice::from_ref(&running), Millis(10_000));
        assert!(round.actions.is_empty(), "{round:?}");
        assert_eq!(round.deregistering, vec![("c".to_string(), 2_000)]);
        let reports = round_statuses(
            &[],
            std::slice::from_ref(&running),
            &round,
            &BTreeMap::new(),
            TaskState::Pending,
        );
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].state, TaskState::Removing);
        assert!(reports[0].unassigned);
        let round = s.round(&[], std::slice::from_ref(&running), Millis(11_500));
        assert_eq!(round.deregistering, vec![("c".to_string(), 500)]);
        assert!(round.actions.is_empty());
        let round = s.round(&[], std::slice::from_ref(&running), Millis(12_000));
        assert!(
            matches!(&round.actions[..], [RuntimeAction::Remove { id, .. }] if id == "c"),
            "{round:?}"
        );
        assert!(round.deregistering.is_empty());
    }

    /// The 30-node three-way heal of `warren-sim run --nodes 30 --seed 1 --scenario
    /// three-way-split`: a node whose copy a stale judgement had stopped was then assigned
    /// the slot by the winning side's older view and started it again, though another node
    /// ran it. Awaiting the holder's judgement, it starts nothing; a copy it has is kept.
    #[test]
    fn a_slot_that_runs_elsewhere_unjudged_is_not_started_here() {
        let mut s = Supervisor::new();
        s.set_awaiting([(slot(0), NodeId("n7".into()))].into());
        let round = s.round(&[desired(0)], &[], Millis(0));
        assert!(round.actions.is_empty(), "{round:?}");
        assert_eq!(round.tasks[&slot(0)].phase, RestartPhase::Active);
        // A copy already here runs on, and one that exits is restarted as usual.
        let running = actual("c", 0, 1, ActualTaskState::Running);
        let round = s.round(&[desired(0)], &[running], Millis(0));
        assert!(round.actions.is_empty(), "{round:?}");
        let round = s.round(&[desired(0)], &[exited("c", 1)], Millis(0));
        assert!(
            matches!(&round.actions[..], [RuntimeAction::Start { .. }]),
            "{round:?}"
        );
        // Judged (or the other copy gone): created.
        s.set_awaiting(BTreeMap::new());
        let round = s.round(&[desired(0)], &[], Millis(0));
        assert!(
            matches!(&round.actions[..], [RuntimeAction::Create(_)]),
            "{round:?}"
        );
    }

    fn exited(id: &str, code: i64) -> ActualTask {
        ActualTask {
            exit_code: Some(code),
            ..actual(id, 0, 1, ActualTaskState::Stopped)
        }
    }

    fn start(id: &str) -> RuntimeAction {
        RuntimeAction::Start {
            id: id.into(),
            slot: slot(0),
        }
    }

    #[test]
    fn creates_restarts_and_removes() {
        let round = Supervisor::new().round(
            &[desired(0), desired(1), desired(2)],
            &[
                actual("run", 0, 1, ActualTaskState::Running),
                actual("exited", 1, 1, ActualTaskState::Stopped),
                actual("stray", 5, 1, ActualTaskState::Running),
            ],
            Millis(0),
        );
        let actions = round.actions;
        assert!(actions.contains(&RuntimeAction::Start {
            id: "exited".into(),
            slot: slot(1)
        }));
        assert!(actions.contains(&RuntimeAction::Create(Box::new(desired(2)))));
        assert!(actions
            .iter()
            .any(|a| matches!(a, RuntimeAction::Remove { id, .. } if id == "stray")));
        assert_eq!(actions.len(), 3, "{actions:?}");
        assert_eq!(round.tasks.len(), 3);
    }

    #[test]
    fn keeps_the_running_duplicate_and_replaces_old_generations() {
        let actions = Supervisor::new()
            .round(
                &[desired(0), desired(1)],
                &[
                    actual("stopped", 0, 1, ActualTaskState::Stopped),
                    actual("running", 0, 1, ActualTaskState::Running),
                    actual("old", 1, 0, ActualTaskState::Running),
                ],
                Millis(0),
            )
            .actions;
        assert_eq!(
            actions,
            vec![
                RuntimeAction::Remove {
                    id: "stopped".into(),
                    slot: slot(0),
                    reason: "duplicate container for slot"
                },
                RuntimeAction::Remove {
                    id: "old".into(),
                    slot: slot(1),
                    reason: "container of an older service generation"
                },
            ]
        );
        assert!(Supervisor::new()
            .round(
                &[desired(0)],
                &[actual("r", 0, 1, ActualTaskState::Running)],
                Millis(0)
            )
            .actions
            .is_empty());
    }

    #[test]
    fn a_crash_loop_backs_off_then_fails_after_max_attempts() {
        let policy = RestartPolicy {
            condition: RestartCondition::OnFailure,
            max_attempts: Some(3),
            delay_ms: 1_000,
        };
        let want = [desired_with(0, policy)];
        let mut s = Supervisor::new();
        let crashed = [exited("c", 3)];
        // Restart 1 at once, 2 after 1 s, 3 after 2 s more.
        assert_eq!(
            s.round(&want, &crashed, Millis(0)).actions,
            vec![start("c")]
        );
        let waiting = s.round(&want, &crashed, Millis(400));
        assert!(waiting.actions.is_empty());
        let status = &waiting.tasks[&slot(0)];
        assert_eq!(status.phase, RestartPhase::BackingOff);
        assert_eq!(status.next_restart_in_ms, Some(600));
        assert_eq!(status.restarts, 1);
        assert_eq!(status.last_exit_code, Some(3));
        assert_eq!(status.last_error.as_deref(), Some("exited with code 3"));
        assert_eq!(
            s.round(&want, &crashed, Millis(1_000)).actions,
            vec![start("c")]
        );
        assert!(s.round(&want, &crashed, Millis(2_999)).actions.is_empty());
        assert_eq!(
            s.round(&want, &crashed, Millis(3_000)).actions,
            vec![start("c")]
        );
        // The third restart failed too: no fourth.
        for now in [7_000, 60_000, 600_000] {
            let round = s.round(&want, &crashed, Millis(now));
            assert!(round.actions.is_empty(), "{round:?}");
            let status = &round.tasks[&slot(0)];
            assert_eq!(status.phase, RestartPhase::Failed);
            assert_eq!(status.restarts, 3);
            assert_eq!(status.last_exit_code, Some(3));
        }
        // Failed stays failed even if the container is gone...
        let gone = s.round(&want, &[], Millis(600_001));
        assert!(gone.actions.is_empty());
        assert_eq!(gone.tasks[&slot(0)].phase, RestartPhase::Failed);
        // ...until the spec changes: a new policy gives a fresh start.
        let relaxed = [desired_with(
            0,
            RestartPolicy {
                max_attempts: Some(5),
                ..policy
            },
        )];
        assert_eq!(
            s.round(&relaxed, &crashed, Millis(600_002)).actions,
            vec![start("c")]
        );
    }

    #[test]
    fn conditions_decide_which_exits_restart() {
        let with = |condition| {
            [desired_with(
                0,
                RestartPolicy {
                    condition,
                    ..RestartPolicy::default()
                },
            )]
        };
        let decide = |condition, code| {
            let round = Supervisor::new().round(&with(condition), &[exited("c", code)], Millis(0));
            (round.actions.len(), round.tasks[&slot(0)].phase)
        };
        assert_eq!(
            decide(RestartCondition::Always, 0),
            (1, RestartPhase::Active)
        );
        assert_eq!(
            decide(RestartCondition::Always, 1),
            (1, RestartPhase::Active)
        );
        assert_eq!(
            decide(RestartCondition::OnFailure, 1),
            (1, RestartPhase::Active)
        );
        assert_eq!(
            decide(RestartCondition::OnFailure, 0),
            (0, RestartPhase::Exited)
        );
        assert_eq!(
            decide(RestartCondition::Never, 1),
            (0, RestartPhase::Exited)
        );
        assert_eq!(
            decide(RestartCondition::Never, 0),
            (0, RestartPhase::Exited)
        );
        // A container that never ran is started under any policy.
        let never_ran = ActualTask {
            exit_code: None,
            ..exited("c", 0)
        };
        let round =
            Supervisor::new().round(&with(RestartCondition::Never), &[never_ran], Millis(0));
        assert_eq!(round.actions, vec![start("c")]);
    }

    #[test]
    fn an_unhealthy_task_is_stopped_and_its_exit_counts_as_a_failure() {
        let policy = RestartPolicy {
            condition: RestartCondition::OnFailure,
            max_attempts: Some(1),
            delay_ms: 1_000,
        };
        let want = [desired_with(0, policy)];
        let mut s = Supervisor::new();
        let unhealthy = ActualTask {
            health: TaskHealth::Unhealthy,
            detail: "health probe exited 1".into(),
            ..actual("c", 0, 1, ActualTaskState::Running)
        };
        assert_eq!(
            s.round(&want, std::slice::from_ref(&unhealthy), Millis(0))
                .actions,
            vec![RuntimeAction::Stop {
                id: "c".into(),
                slot: slot(0),
                reason: "unhealthy"
            }]
        );
        // It exited 0 on SIGTERM, yet on-failure restarts it: it failed its health check.
        let round = s.round(&want, &[exited("c", 0)], Millis(100));
        assert_eq!(round.actions, vec![start("c")]);
        assert_eq!(
            round.tasks[&slot(0)].last_error.as_deref(),
            Some("unhealthy: health probe exited 1")
        );
        // Unhealthy again: stopped again, and with max_attempts 1 it now fails.
        assert_eq!(s.round(&want, &[unhealthy], Millis(5_000)).actions.len(), 1);
        let round = s.round(&want, &[exited("c", 143)], Millis(6_000));
        assert!(round.actions.is_empty());
        assert_eq!(round.tasks[&slot(0)].phase, RestartPhase::Failed);
        // A healthy or starting task is left alone.
        for health in [TaskHealth::Healthy, TaskHealth::Starting, TaskHealth::None] {
            let ok = ActualTask {
                health,
                ..actual("d", 1, 1, ActualTaskState::Running)
            };
            assert!(Supervisor::new()
                .round(&[desired(1)], &[ok], Millis(0))
                .actions
                .is_empty());
        }
    }

    #[test]
    fn a_stable_run_starts_the_count_over() {
        let policy = RestartPolicy {
            max_attempts: Some(2),
            ..RestartPolicy::default()
        };
        let want = [desired_with(0, policy)];
        let mut s = Supervisor::new();
        let running = [actual("c", 0, 1, ActualTaskState::Running)];
        let mut now = 0;
        for _ in 0..5 {
            // Crash, restart, then run for 30 s: never fails however often it happens.
            assert_eq!(
                s.round(&want, &[exited("c", 1)], Millis(now)).actions,
                vec![start("c")]
            );
            s.round(&want, &running, Millis(now + 1));
            s.round(&want, &running, Millis(now + 31_000));
            assert_eq!(
                s.round(&want, &running, Millis(now + 31_001)).tasks[&slot(0)].restarts,
                0
            );
            now += 40_000;
        }
    }

    #[test]
    fn tasks_stopped_by_an_engine_outage_start_again_uncounted_whatever_their_policy() {
        let never = RestartPolicy {
            condition: RestartCondition::Never,
            ..Default::default()
        };
        let mut supervisor = Supervisor::new();
        let want = [desired_with(0, never)];
        let round = supervisor.round(
            &want,
            &[actual("c", 0, 1, ActualTaskState::Running)],
            Millis(0),
        );
        assert!(round.actions.is_empty());
        supervisor.engine_lost(["c".to_string()]);
        // Back: the engine stopped it (SIGTERM, exit 143); `never` would leave it stopped.
        let round = supervisor.round(&want, &[exited("c", 143)], Millis(1_000));
        assert_eq!(round.actions, vec![start("c")]);
        assert_eq!(round.tasks[&slot(0)].restarts, 0);
        assert_eq!(round.tasks[&slot(0)].phase, RestartPhase::Active);
        // Only once: a later exit follows the policy again.
        let round = supervisor.round(&want, &[exited("c", 143)], Millis(2_000));
        assert!(round.actions.is_empty(), "{:?}", round.actions);
        assert_eq!(round.tasks[&slot(0)].phase, RestartPhase::Exited);
    }

    /// Slot 0 at generation 2, kept beside its running container of generation 1 as
    /// `previous` says.
    fn rolled(previous: PreviousCopy) -> DesiredTask {
        DesiredTask {
            generation: 2,
            previous,
            ..desired(0)
        }
    }

    fn with_health(mut t: ActualTask, health: TaskHealth) -> ActualTask {
        t.health = health;
        t
    }

    #[test]
    fn start_first_keeps_the_old_container_until_the_new_one_runs_healthy() {
        let want = [rolled(PreviousCopy::UntilHealthy)];
        let mut supervisor = Supervisor::new();
        supervisor.set_deregistration_delay(1_000);
        let old = actual("old", 0, 1, ActualTaskState::Running);
        // The new one is created beside the old one, which keeps running.
        let round = supervisor.round(&want, std::slice::from_ref(&old), Millis(0));
        assert_eq!(
            round.actions,
            vec![RuntimeAction::Create(Box::new(want[0].clone()))]
        );
        assert_eq!(round.previous, vec!["old".to_string()]);
        // Both generations are reported: the new task (pending) first, the old one after.
        let reports = round_statuses(
            &want,
            std::slice::from_ref(&old),
            &round,
            &BTreeMap::new(),
            TaskState::Pending,
        );
        let seen: Vec<(u64, TaskState)> = reports.iter().map(|r| (r.generation, r.state)).collect();
        assert_eq!(seen, vec![(0, TaskState::Pending), (1, TaskState::Running)]);
        // The new one runs but is not healthy yet: the old one stays.
        let new = with_health(
            actual("new", 0, 2, ActualTaskState::Running),
            TaskHealth::Starting,
        );
        let round = supervisor.round(&want, &[old.clone(), new.clone()], Millis(100));
        assert!(round.actions.is_empty(), "{:?}", round.actions);
        let reports = round_statuses(
            &want,
            &[old.clone(), new.clone()],
            &round,
            &BTreeMap::new(),
            TaskState::Pending,
        );
        let seen: Vec<u64> = reports.iter().map(|r| r.generation).collect();
        assert_eq!(seen, vec![2, 1], "service ps shows both generations");
        // Healthy: the old one deregisters first, then goes.
        let new = with_health(new, TaskHealth::Healthy);
        let round = supervisor.round(&want, &[old.clone(), new.clone()], Millis(200));
        assert!(round.actions.is_empty(), "{:?}", round.actions);
        assert_eq!(round.deregistering, vec![("old".to_string(), 1_000)]);
        let round = supervisor.round(&want, &[old.clone(), new.clone()], Millis(1_200));
        assert_eq!(
            round.actions,
            vec![RuntimeAction::Remove {
                id: "old".into(),
                slot: slot(0),
                reason: "its slot's new generation runs healthy"
            }]
        );
    }

    #[test]
    fn stop_first_removes_the_old_container_before_creating_the_new_one() {
        let want = [rolled(PreviousCopy::Replace)];
        let old = actual("old", 0, 1, ActualTaskState::Running);
        let round = Supervisor::new().round(&want, &[old], Millis(0));
        assert_eq!(
            round.actions,
            vec![RuntimeAction::Remove {
                id: "old".into(),
                slot: slot(0),
                reason: "container of an older service generation"
            }]
        );
        assert!(round.previous.is_empty());
    }

    #[test]
    fn blue_green_keeps_the_old_container_while_the_new_one_is_healthy() {
        let want = [rolled(PreviousCopy::Keep)];
        let old = actual("old", 0, 1, ActualTaskState::Running);
        let new = with_health(
            actual("new", 0, 2, ActualTaskState::Running),
            TaskHealth::Healthy,
        );
        let mut supervisor = Supervisor::new();
        for t in [0, 10_000, 100_000] {
            let round = supervisor.round(&want, &[old.clone(), new.clone()], Millis(t));
            assert!(round.actions.is_empty(), "{:?}", round.actions);
            assert_eq!(round.previous, vec!["old".to_string()]);
        }
        // The rollout completed: the old one goes once the new one is healthy.
        let want = [rolled(PreviousCopy::UntilHealthy)];
        let round = supervisor.round(&want, &[old, new], Millis(100_100));
        assert_eq!(round.actions.len(), 1, "{:?}", round.actions);
    }

    #[test]
    fn a_rollout_that_starts_during_the_last_ones_delay_keeps_the_newest_old_copy() {
        // Generation 3 of slot 0 is rolled out blue/green while generation 1's copy (the
        // previous rollout's, older and here longer) is still in its deregistration delay:
        // generation 2's copy, the one serving, is kept; generation 1's goes.
        let want = [DesiredTask {
            generation: 3,
            previous: PreviousCopy::Keep,
            ..desired(0)
        }];
        let mut oldest = actual("g1", 0, 1, ActualTaskState::Running);
        oldest.age_ms = Some(60_000);
        let mut serving = actual("g2", 0, 2, ActualTaskState::Running);
        serving.age_ms = Some(10_000);
        let mut supervisor = Supervisor::new();
        let round = supervisor.round(&want, &[oldest, serving], Millis(0));
        assert_eq!(round.previous, vec!["g2".to_string()]);
        assert!(
            round.actions.iter().any(|a| matches!(
                a,
                RuntimeAction::Remove { id, .. } if id == "g1"
            )),
            "{:?}",
            round.actions
        );
        assert!(round
            .actions
            .iter()
            .any(|a| matches!(a, RuntimeAction::Create(_))));
    }
    #[test]
    fn a_container_of_a_generation_with_the_same_tasks_is_kept_and_reported_at_the_new_one() {
        // Slot 0 moved to generation 3 (a rollback to generation 1's spec); slot 1 to
        // generation 3 from generation 2, whose spec differs.
        let want: Vec<DesiredTask> = [0, 1]
            .into_iter()
            .map(|i| DesiredTask {
                generation: 3,
                same_tasks_as: vec![1],
                previous: PreviousCopy::UntilHealthy,
                ..desired(i)
            })
            .collect();
        let actual = [
            actual("kept", 0, 1, ActualTaskState::Running),
            actual("old", 1, 2, ActualTaskState::Running),
        ];
        let mut supervisor = Supervisor::new();
        let round = supervisor.round(&want, &actual, Millis(0));
        assert_eq!(
            round.actions,
            vec![RuntimeAction::Create(Box::new(want[1].clone()))],
            "slot 0 keeps its container; slot 1 gets a new one"
        );
        assert_eq!(round.previous, vec!["old".to_string()]);
        let reports = round_statuses(&want, &actual, &round, &BTreeMap::new(), TaskState::Pending);
        let seen: Vec<(u32, u64, TaskState)> = reports
            .iter()
            .map(|r| (r.slot, r.generation, r.state))
            .collect();
        assert_eq!(
            seen,
            vec![
                (0, 3, TaskState::Running),
                (1, 0, TaskState::Pending),
                (1, 2, TaskState::Running)
            ]
        );
        assert_eq!(
            container_for(&want[0], &actual).map(|c| c.id.as_str()),
            Some("kept")
        );
        // Without the same tasks, the container of generation 1 is replaced.
        let plain = [DesiredTask {
            generation: 3,
            ..desired(0)
        }];
        let round = Supervisor::new().round(&plain, &actual[..1], Millis(0));
        assert_eq!(
            round.actions,
            vec![RuntimeAction::Remove {
                id: "kept".into(),
                slot: slot(0),
                reason: "container of an older service generation"
            }]
        );
    }
}
