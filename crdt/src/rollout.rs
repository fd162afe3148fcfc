//! Rollouts: how a service's tasks move from one spec generation to the next (issue 15).
//!
//! The operator's policy lives in the spec ([`UpdatePolicy`] for updates and rollbacks,
//! [`Deploy`] for the strategy); what a rollout has reached lives beside the spec in the
//! service record ([`Rollout`], written as one JSON value under `services.<name>.rollout`),
//! and which generation each slot runs lives in its assignment
//! (`Assignment::spec_generation`). The specs of older generations that slots may still run
//! are kept under `services.<name>.specs.<generation>` ([`crate::Service::older_specs`]).
//!
//! Names and defaults follow `docker service update` (`--update-parallelism`,
//! `--update-delay`, `--update-order`, `--update-monitor`, `--update-failure-action`,
//! `--update-max-failure-ratio`, and the same `--rollback-*` flags): Swarm's
//! `UpdateConfig`/`RollbackConfig` in the Docker Engine API.

use serde::{Deserialize, Serialize};

/// Largest number of older generations' specs a service record keeps
/// ([`crate::Service::older_specs`]): a slot still on a generation older than these is
/// updated like any other, and if its container must be created again it is created from
/// the oldest spec kept.
pub const KEPT_OLDER_SPECS: usize = 4;

/// Whether a slot's new task starts before its old one stops (`--update-order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one (Swarm's default).
    #[default]
    StopFirst,
    /// Start the new task; the old one stops once the new one runs healthy.
    StartFirst,
}

impl UpdateOrder {
    /// `stop-first` or `start-first`, as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

/// What a rollout does when too many of its new tasks fail (`--update-failure-action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// Stop updating; the slots not updated yet keep the previous generation (the default).
    #[default]
    Pause,
    /// Return to the previous spec with the rollback policy.
    Rollback,
    /// Go on with the next batch.
    Continue,
}

impl FailureAction {
    /// `pause`, `rollback` or `continue`, as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Pause => "pause",
            FailureAction::Rollback => "rollback",
            FailureAction::Continue => "continue",
        }
    }
}

/// How a rollout moves slots to the new generation: `--update-*` (updates) or
/// `--rollback-*` (rollbacks). Defaults are Swarm's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdatePolicy {
    /// Slots updated at once (a batch); 0 means all at once. Default 1.
    pub parallelism: u32,
    /// Milliseconds to wait after a batch is done before the next one starts. Default 0.
    pub delay_ms: u64,
    /// Stop-first (default) or start-first.
    pub order: UpdateOrder,
    /// Milliseconds a new task must stay running and healthy to count as updated; a task
    /// that fails within it counts as a failure. Default 5,000.
    pub monitor_ms: u64,
    /// What happens when failures exceed `max_failure_ratio_permille`. Default pause.
    pub failure_action: FailureAction,
    /// Failures tolerated, in thousandths of the slots updated so far (Swarm's
    /// `--update-max-failure-ratio` 0.0–1.0 times 1,000). Default 0.
    pub max_failure_ratio_permille: u16,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            parallelism: 1,
            delay_ms: 0,
            order: UpdateOrder::StopFirst,
            monitor_ms: 5_000,
            failure_action: FailureAction::Pause,
            max_failure_ratio_permille: 0,
        }
    }
}

/// How many canary tasks a canary deployment starts (`--canary N` or `--canary P%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CanaryCount {
    /// This many slots (at least 1, at most the replica count).
    Tasks(u32),
    /// This percentage of the replicas, rounded up (1–100).
    Percent(u8),
}

impl CanaryCount {
    /// Slots of `replicas` that run the canary: at least 1 (when there is any replica) and at
    /// most `replicas`.
    pub fn slots(self, replicas: u32) -> u32 {
        let n = match self {
            CanaryCount::Tasks(n) => n,
            CanaryCount::Percent(p) => (u64::from(replicas) * u64::from(p)).div_ceil(100) as u32,
        };
        n.clamp(1, replicas.max(1)).min(replicas)
    }
}

/// The deployment strategy of an update (`--deploy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "strategy")]
pub enum Deploy {
    /// Batch by batch under the update policy (the default).
    #[default]
    Rolling,
    /// Update `count` slots, then wait for `service promote` (or `service rollback`); the
    /// routing mesh gives the canary `weight_percent` of the connections when set, else its
    /// share of the tasks.
    Canary {
        /// How many slots run the new spec before promotion.
        count: CanaryCount,
        /// Share of new connections sent to the canary, 0–100; `None`: its share of tasks.
        weight_percent: Option<u8>,
    },
    /// Start a full set of the new spec beside the old one, switch traffic to it at once when
    /// every new task is healthy, and stop the old set `delay_ms` (the update delay) later.
    BlueGreen,
}

/// Whether a rollout moves forward to a new spec or back to the previous one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutKind {
    /// `service update` (or create over a deleted service).
    #[default]
    Update,
    /// `service rollback`, or an update's failure action.
    Rollback,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum RolloutState {
    /// Batches are being updated (`rolling back` when the kind is a rollback).
    #[default]
    Updating,
    /// Stopped by its failure action or by an operator; slots not updated keep their
    /// generation.
    Paused {
        /// Why, for people (`task web.2 exited with code 1 within the monitor period`).
        reason: String,
    },
    /// A canary runs and waits for `service promote` or `service rollback`.
    AwaitingPromotion,
    /// Every slot runs the new generation and stayed healthy through its monitor period.
    Completed,
}

/// `services.<name>.rollout`: the rollout of the service's current generation.
///
/// Written by the API peer that accepted an update (state `updating`) and by the lease
/// holder as the rollout advances (`paused`, `awaiting-promotion`, `completed`); one JSON
/// value, so concurrent writes resolve as one register (the holder rewrites it from the
/// slots' generations each round it acts, so a lost write is made again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollout {
    /// Update or rollback.
    pub kind: RolloutKind,
    /// The generation being replaced.
    pub from_generation: u64,
    /// The generation rolled out: the service's current generation while this record is its
    /// rollout.
    pub to_generation: u64,
    /// Where it stands.
    pub state: RolloutState,
    /// The policy in force: the new spec's `update` for an update, the replaced spec's
    /// `rollback` for a rollback.
    pub policy: UpdatePolicy,
    /// The strategy (a rollback is always rolling).
    pub deploy: Deploy,
    /// Wall-clock milliseconds since the Unix epoch when the state was last written (for
    /// people; never compared across nodes).
    pub updated_at_ms: u64,
    /// Blue/green: the generation that takes the service's traffic, written by the lease
    /// holder once every task of `to_generation` is healthy (the switch); `None` before the
    /// switch (the old set takes the traffic) and for other strategies. The routing mesh
    /// reads it through `warren_core::core::rollout::traffic_split`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_generation: Option<u64>,
}

impl Rollout {
    /// The word `service inspect` and `service ls` show: `updating`, `rolling back`,
    /// `paused`, `awaiting promotion`, `completed`.
    pub fn state_word(&self) -> &'static str {
        match (&self.state, self.kind) {
            (RolloutState::Updating, RolloutKind::Update) => "updating",
            (RolloutState::Updating, RolloutKind::Rollback) => "rolling back",
            (RolloutState::Paused { .. }, _) => "paused",
            (RolloutState::AwaitingPromotion, _) => "awaiting promotion",
            (RolloutState::Completed, _) => "completed",
        }
    }

    /// Whether the lease holder moves slots for it now (`updating`).
    pub fn is_active(&self) -> bool {
        self.state == RolloutState::Updating
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_slots_round_up_and_stay_within_the_replicas() {
        assert_eq!(CanaryCount::Percent(25).slots(4), 1);
        assert_eq!(CanaryCount::Percent(10).slots(4), 1);
        assert_eq!(CanaryCount::Percent(50).slots(5), 3);
        assert_eq!(CanaryCount::Percent(100).slots(3), 3);
        assert_eq!(CanaryCount::Tasks(9).slots(3), 3);
        assert_eq!(CanaryCount::Tasks(0).slots(3), 1);
        assert_eq!(CanaryCount::Tasks(2).slots(0), 0);
    }

    #[test]
    fn policies_read_from_partial_json_with_swarm_defaults() {
        let p: UpdatePolicy = serde_json::from_str(r#"{"parallelism":2}"#).expect("json");
        assert_eq!(p.parallelism, 2);
        assert_eq!(p.monitor_ms, 5_000);
        assert_eq!(p.failure_action, FailureAction::Pause);
        let d: Deploy = serde_json::from_str(
            r#"{"strategy":"canary","count":{"percent":25},"weight_percent":null}"#,
        )
        .expect("json");
        assert_eq!(
            d,
            Deploy::Canary {
                count: CanaryCount::Percent(25),
                weight_percent: None
            }
        );
        let r: Rollout =
            serde_json::from_str(r#"{"state":{"state":"paused","reason":"x"}}"#).expect("json");
        assert_eq!(r.state_word(), "paused");
    }
}
