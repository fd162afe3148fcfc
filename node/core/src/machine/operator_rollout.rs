//! An operator's steps in a rollout (issue 15): `service rollback`, `promote`, `pause` and
//! `resume`. The lease holder runs the rollout; these only rewrite its record (or, for a
//! rollback, start a new one), each committed under the verb so `cluster history` says what
//! the operator did.

use warren_crdt::{ChangeBytes, CrdtError, Deploy, Rollout, RolloutState, ServiceName};

use super::{NodeMachine, WriteError};

/// What an operator asks of a service's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutStep {
    /// `service promote`: a canary awaiting promotion rolls the rest of the slots (the
    /// record goes back to `updating` with a rolling strategy).
    Promote,
    /// `service pause`: an updating rollout stops where it stands (`paused`, reason "paused
    /// by operator"); slots not updated keep their generation.
    Pause,
    /// `service resume`: a paused rollout goes on (`updating`).
    Resume,
}

impl RolloutStep {
    /// `promote`, `pause` or `resume`: the CLI's verb and the history's.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStep::Promote => "promote",
            RolloutStep::Pause => "pause",
            RolloutStep::Resume => "resume",
        }
    }

    /// What the step needs, in the words of its refusal (`has no canary waiting for
    /// promotion`).
    pub fn needs(self) -> &'static str {
        match self {
            RolloutStep::Promote => "has no canary waiting for promotion",
            RolloutStep::Pause => "has no rollout in progress to pause",
            RolloutStep::Resume => "has no paused rollout to resume",
        }
    }
}

/// The reason a pause by `service pause` records.
pub const PAUSED_BY_OPERATOR: &str = "paused by operator";

impl NodeMachine {
    /// Applies `step` to the rollout of service `name`; `now_ms` (wall clock, Unix ms) goes
    /// into the record for people.
    ///
    /// Errors: [`CrdtError::UnknownService`]; [`WriteError::RolloutStep`] when the rollout
    /// is not in the state the step needs (promote: awaiting promotion; pause: updating or
    /// rolling back; resume: paused).
    pub(super) fn step_rollout(
        &mut self,
        name: &ServiceName,
        step: RolloutStep,
        now_ms: u64,
    ) -> Result<ChangeBytes, WriteError> {
        let service = self
            .state
            .services()
            .remove(name)
            .filter(|s| !s.deleted)
            .ok_or_else(|| CrdtError::UnknownService(name.clone()))?;
        let refused = |rollout: Option<&Rollout>| WriteError::RolloutStep {
            service: name.to_string(),
            step,
            state: rollout.map_or("none", Rollout::state_word),
        };
        let current = service.rollout.as_ref();
        let next = match (step, current) {
            (RolloutStep::Promote, Some(r)) if r.state == RolloutState::AwaitingPromotion => {
                Rollout {
                    state: RolloutState::Updating,
                    deploy: Deploy::Rolling,
                    ..r.clone()
                }
            }
            (RolloutStep::Pause, Some(r)) if r.state == RolloutState::Updating => Rollout {
                state: RolloutState::Paused {
                    reason: PAUSED_BY_OPERATOR.to_string(),
                },
                ..r.clone()
            },
            (RolloutStep::Resume, Some(r)) if matches!(r.state, RolloutState::Paused { .. }) => {
                Rollout {
                    state: RolloutState::Updating,
                    ..r.clone()
                }
            }
            _ => return Err(refused(current)),
        };
        let next = Rollout {
            updated_at_ms: now_ms,
            ..next
        };
        Ok(self
            .state
            .set_rollout_by_operator(name, &next, step.as_str())?)
    }
}
