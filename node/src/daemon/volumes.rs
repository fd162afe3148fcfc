//! The node's side of volumes (issue 16, item 6): the mounts a task's container gets, and
//! the deletion of a removed volume's Docker volume.
//!
//! Removal rule: a Docker volume of this node is deleted when its Warren name leaves the set
//! of volumes whose record names this node *after this process saw it there* (`volume rm`,
//! merged from any peer). A name never seen since the start is never deleted on absence, so
//! a node that starts with an old or partial replica cannot delete data. A volume removed
//! while this node was down keeps its Docker volume (`docker volume rm warren-NAME-NODE`
//! frees it): losing data by mistake is worse than keeping it.

use std::collections::BTreeSet;

use tracing::{info, warn};
use warren_crdt::{MountKind, NodeId};
use warren_runtime::{ContainerRuntime, MountSource, TaskMount};

use crate::core::DesiredTask;

/// The mounts of `task`'s container: its spec's volume mounts with their records, its bind
/// mounts when this node allows host paths.
///
/// Errors (the task is not started; the text shows in `service ps`): a bind mount on a node
/// without `--allow-host-paths`; a volume without a record or whose record names another
/// node (the scheduler never places such a task here; the document may have changed since).
pub(crate) fn task_mounts(
    task: &DesiredTask,
    allow_host_paths: bool,
) -> Result<Vec<TaskMount>, String> {
    task.spec
        .mounts
        .iter()
        .map(|m| {
            let source = match m.kind {
                MountKind::Bind if !allow_host_paths => {
                    return Err(format!(
                        "refused: bind mount of host path {} but this node does not allow host \
                         paths (start it with --allow-host-paths)",
                        m.source
                    ))
                }
                MountKind::Bind => MountSource::Bind {
                    path: m.source.clone(),
                },
                MountKind::Volume => {
                    let volume = task
                        .volumes
                        .iter()
                        .find(|v| v.name == m.source)
                        .ok_or_else(|| format!("volume {} does not exist", m.source))?;
                    MountSource::Volume {
                        name: volume.name.clone(),
                        driver: volume.driver.clone(),
                        options: volume.options.clone(),
                    }
                }
            };
            Ok(TaskMount {
                source,
                target: m.target.clone(),
                readonly: m.readonly,
            })
        })
        .collect()
}

/// Deletes the Docker volumes of volumes removed while this process ran (see the module
/// doc). Holds at most the names of this node's volume records.
#[derive(Debug, Default)]
pub(crate) struct Sweeper {
    /// This node's volume names at the last round.
    known: BTreeSet<String>,
    /// Names removed whose Docker volume is not deleted yet (a container may still hold it).
    removing: BTreeSet<String>,
}

impl Sweeper {
    /// One round: `current` is this node's volume names now.
    pub(crate) async fn sweep<R: ContainerRuntime>(
        &mut self,
        rt: &R,
        node: &NodeId,
        current: &BTreeSet<String>,
    ) {
        self.removing
            .extend(self.known.difference(current).cloned());
        self.removing.retain(|n| !current.contains(n));
        self.known.clone_from(current);
        if self.removing.is_empty() {
            return;
        }
        let held = match rt.list_volumes(node.as_str()).await {
            Ok(held) => held,
            Err(e) => {
                warn!(error = %e, "could not list volumes to remove");
                return;
            }
        };
        let mut done: BTreeSet<String> = self
            .removing
            .iter()
            .filter(|n| !held.iter().any(|(w, _)| w == *n))
            .cloned()
            .collect();
        for (name, docker_name) in held.iter().filter(|(w, _)| self.removing.contains(w)) {
            match rt.remove_volume(docker_name).await {
                Ok(()) => {
                    info!(volume = %name, docker = %docker_name, "removed volume");
                    done.insert(name.clone());
                }
                Err(e) => warn!(volume = %name, error = %e, "volume not removed yet"),
            }
        }
        self.removing.retain(|n| !done.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{Epoch, Mount, ServiceName, ServiceSpec, SlotId, Volume};

    fn task(mounts: &[&str], volumes: Vec<Volume>) -> DesiredTask {
        DesiredTask {
            slot: SlotId {
                service: ServiceName::new("db").expect("name"),
                slot: 0,
            },
            epoch: Epoch(1),
            holder: NodeId("a".into()),
            generation: 1,
            spec: ServiceSpec {
                image: "img".into(),
                replicas: 1,
                mounts: mounts
                    .iter()
                    .map(|m| Mount::parse(m).expect("mount"))
                    .collect(),
                ..Default::default()
            },
            volumes,
            gpus: Vec::new(),
            previous: Default::default(),
            same_tasks_as: Vec::new(),
        }
    }

    #[test]
    fn bind_mounts_need_the_flag_and_volumes_their_record() {
        let bind = task(&["type=bind,source=/srv,target=/srv,ro"], vec![]);
        let refused = task_mounts(&bind, false).expect_err("refused");
        assert!(refused.contains("--allow-host-paths"), "{refused}");
        let allowed = task_mounts(&bind, true).expect("allowed");
        assert_eq!(
            allowed[0].source,
            MountSource::Bind {
                path: "/srv".into()
            }
        );
        assert!(allowed[0].readonly);

        let record = Volume {
            name: "data".into(),
            driver: "local".into(),
            node: NodeId("a".into()),
            options: [("type".to_string(), "tmpfs".to_string())].into(),
        };
        let with = task(&["source=data,target=/data"], vec![record]);
        let mounts = task_mounts(&with, false).expect("volume");
        assert!(matches!(
            &mounts[0].source,
            MountSource::Volume { name, options, .. } if name == "data" && options["type"] == "tmpfs"
        ));
        let without = task(&["source=data,target=/data"], vec![]);
        assert_eq!(
            task_mounts(&without, false).expect_err("no record"),
            "volume data does not exist"
        );
    }
}
