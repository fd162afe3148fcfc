//! Reconcile decisions: what a node must do to its containers so that its actual state matches
//! the assignments it holds. Pure: the daemon lists containers and carries out the actions.

use std::collections::BTreeMap;

use serde::Serialize;
use warren_crdt::{Epoch, ServiceSpec, SlotId};

/// A slot assigned to this node, with what it should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTask {
    /// The slot.
    pub slot: SlotId,
    /// Epoch of the assignment (labels the container).
    pub epoch: Epoch,
    /// Service generation the container must have.
    pub generation: u64,
    /// What to run.
    pub spec: ServiceSpec,
}

/// The state of a container as far as reconcile cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActualTaskState {
    /// Running.
    Running,
    /// Created or exited: start it again.
    Stopped,
    /// Dead or otherwise unusable: replace it.
    Broken,
    /// In transition (restarting, removing, paused): leave it alone this round.
    Transient,
}

/// A container this node owns, as listed by the runtime.
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
}

/// What the daemon must do to its runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeAction {
    /// Create and start a container for this task.
    Create(DesiredTask),
    /// Start this stopped container again (restart).
    Start {
        /// Container id.
        id: String,
        /// Its slot.
        slot: SlotId,
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

/// Decides the actions that bring `actual` to `desired`.
///
/// - no container for a desired slot: create one;
/// - a stopped one: start it; a broken one or one of an older generation: remove it (it is
///   re-created next round);
/// - containers of slots not assigned here, and duplicates of one slot: remove (a running
///   duplicate is kept over a stopped one).
pub fn reconcile(desired: &[DesiredTask], actual: &[ActualTask]) -> Vec<RuntimeAction> {
    let wanted: BTreeMap<&SlotId, &DesiredTask> = desired.iter().map(|d| (&d.slot, d)).collect();
    let mut by_slot: BTreeMap<&SlotId, Vec<&ActualTask>> = BTreeMap::new();
    for task in actual {
        by_slot.entry(&task.slot).or_default().push(task);
    }
    let mut actions = Vec::new();
    for (slot, mut tasks) in by_slot {
        let Some(want) = wanted.get(slot) else {
            for t in tasks {
                actions.push(RuntimeAction::Remove {
                    id: t.id.clone(),
                    slot: slot.clone(),
                    reason: "slot not assigned to this node",
                });
            }
            continue;
        };
        // Keep the best container: right generation first, then running.
        tasks.sort_by_key(|t| {
            (
                t.generation != want.generation,
                t.state != ActualTaskState::Running,
                t.id.clone(),
            )
        });
        let (keep, extra) = tasks.split_at(1);
        for t in extra {
            actions.push(RuntimeAction::Remove {
                id: t.id.clone(),
                slot: slot.clone(),
                reason: "duplicate container for slot",
            });
        }
        if let Some(t) = keep.first() {
            if t.generation != want.generation {
                actions.push(RuntimeAction::Remove {
                    id: t.id.clone(),
                    slot: slot.clone(),
                    reason: "container of an older service generation",
                });
            } else {
                match t.state {
                    ActualTaskState::Running | ActualTaskState::Transient => {}
                    ActualTaskState::Stopped => actions.push(RuntimeAction::Start {
                        id: t.id.clone(),
                        slot: slot.clone(),
                    }),
                    ActualTaskState::Broken => actions.push(RuntimeAction::Remove {
                        id: t.id.clone(),
                        slot: slot.clone(),
                        reason: "container is dead",
                    }),
                }
            }
        }
    }
    for d in desired {
        if !actual.iter().any(|t| t.slot == d.slot) {
            actions.push(RuntimeAction::Create(d.clone()));
        }
    }
    actions
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

    fn desired(i: u32) -> DesiredTask {
        DesiredTask {
            slot: slot(i),
            epoch: Epoch(1),
            generation: 1,
            spec: ServiceSpec {
                image: "img".into(),
                replicas: 3,
                command: vec![],
                env: Default::default(),
                ports: vec![],
                secrets: Vec::new(),
                ..Default::default()
            },
        }
    }

    fn actual(id: &str, i: u32, generation: u64, state: ActualTaskState) -> ActualTask {
        ActualTask {
            id: id.into(),
            slot: slot(i),
            generation,
            state,
        }
    }

    #[test]
    fn creates_restarts_and_removes() {
        let actions = reconcile(
            &[desired(0), desired(1), desired(2)],
            &[
                actual("run", 0, 1, ActualTaskState::Running),
                actual("exited", 1, 1, ActualTaskState::Stopped),
                actual("stray", 5, 1, ActualTaskState::Running),
            ],
        );
        assert!(actions.contains(&RuntimeAction::Start {
            id: "exited".into(),
            slot: slot(1)
        }));
        assert!(actions.contains(&RuntimeAction::Create(desired(2))));
        assert!(actions
            .iter()
            .any(|a| matches!(a, RuntimeAction::Remove { id, .. } if id == "stray")));
        assert_eq!(actions.len(), 3, "{actions:?}");
    }

    #[test]
    fn keeps_the_running_duplicate_and_replaces_old_generations() {
        let actions = reconcile(
            &[desired(0), desired(1)],
            &[
                actual("stopped", 0, 1, ActualTaskState::Stopped),
                actual("running", 0, 1, ActualTaskState::Running),
                actual("old", 1, 0, ActualTaskState::Running),
            ],
        );
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
        assert!(reconcile(
            &[desired(0)],
            &[actual("r", 0, 1, ActualTaskState::Running)]
        )
        .is_empty());
    }
}
