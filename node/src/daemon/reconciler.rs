//! The reconcile loop: lists this node's containers, asks [`crate::core::reconcile`] what to do,
//! does it through the runtime, and reports the actual state of its tasks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_crdt::{NodeId, SecretRecord, ServiceName, SlotId};
use warren_runtime::{ContainerInfo, ContainerRuntime, ContainerState, PortMapping, TaskSpec};

use super::secret_files;
use crate::core::{
    reconcile, ActualTask, ActualTaskState, BackoffConfig, DesiredTask, Millis, RestartBackoff,
    RuntimeAction,
};
use crate::protocol::TaskStatus;
use crate::secrets::SecretKeys;

fn actual_state(state: ContainerState) -> ActualTaskState {
    match state {
        ContainerState::Running => ActualTaskState::Running,
        ContainerState::Created | ContainerState::Exited => ActualTaskState::Stopped,
        ContainerState::Dead => ActualTaskState::Broken,
        _ => ActualTaskState::Transient,
    }
}

fn actual_task(c: &ContainerInfo) -> Option<ActualTask> {
    Some(ActualTask {
        id: c.id.clone(),
        slot: SlotId {
            service: ServiceName::new(c.service.clone()).ok()?,
            slot: c.slot,
        },
        generation: c.generation,
        state: actual_state(c.state),
    })
}

/// What the reconciler needs to hand secrets to containers.
pub(crate) struct SecretContext {
    /// This node's X25519 keys.
    pub(crate) keys: SecretKeys,
    /// The document's secret records, kept current by the actor.
    pub(crate) records: watch::Receiver<Arc<BTreeMap<String, SecretRecord>>>,
    /// Where the secret files go (a tmpfs).
    pub(crate) root: PathBuf,
}

fn task_spec(node: &NodeId, task: &DesiredTask) -> TaskSpec {
    TaskSpec {
        node: node.to_string(),
        service: task.slot.service.to_string(),
        slot: task.slot.slot,
        epoch: task.epoch.0,
        generation: task.generation,
        image: task.spec.image.clone(),
        command: task.spec.command.clone(),
        env: task.spec.env.clone(),
        ports: task
            .spec
            .ports
            .iter()
            .map(|p| PortMapping {
                container_port: p.container_port,
                host_port: p.host_port,
            })
            .collect(),
        secrets_dir: None,
        ..Default::default()
    }
}

/// Runs reconcile rounds every `interval` and whenever the desired tasks change, until
/// `cancel`. Does nothing until the first desired set arrives. Containers keep running when the loop stops: a node's restart adopts them.
pub(crate) async fn run<R: ContainerRuntime>(
    runtime: R,
    node: NodeId,
    mut desired: watch::Receiver<Option<Vec<DesiredTask>>>,
    status_tx: watch::Sender<Vec<TaskStatus>>,
    secrets: SecretContext,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut errors: BTreeMap<SlotId, String> = BTreeMap::new();
    let mut last_list_error: Option<String> = None;
    let mut backoff = RestartBackoff::new(BackoffConfig::default());
    let origin = std::time::Instant::now();
    loop {
        // `None` until the actor has read the document once: reconciling against "nothing
        // assigned" would remove every container a restarted node still runs.
        let Some(want) = desired.borrow_and_update().clone() else {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = desired.changed() => continue,
            }
        };
        let now = Millis(origin.elapsed().as_millis() as u64);
        match round(
            &runtime,
            &node,
            &want,
            &secrets,
            &mut backoff,
            now,
            &mut errors,
        )
        .await
        {
            Ok(containers) => {
                last_list_error = None;
                status_tx.send_replace(statuses(&want, &containers, &errors));
            }
            Err(e) => {
                let text = e.to_string();
                if last_list_error.as_deref() != Some(text.as_str()) {
                    warn!(error = %text, "reconcile cannot reach the container runtime");
                }
                last_list_error = Some(text.clone());
                let unknown = want
                    .iter()
                    .map(|t| status_of(t, None, Some(&text), "unknown"))
                    .collect();
                status_tx.send_replace(unknown);
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = desired.changed() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One round: list, decide, act (actions run concurrently: a removal waits for the container's
/// stop grace period), list again if anything was done.
#[allow(clippy::too_many_arguments)]
async fn round<R: ContainerRuntime>(
    runtime: &R,
    node: &NodeId,
    want: &[DesiredTask],
    secrets: &SecretContext,
    backoff: &mut RestartBackoff,
    now: Millis,
    errors: &mut BTreeMap<SlotId, String>,
) -> Result<Vec<ContainerInfo>, warren_runtime::RuntimeError> {
    let containers = runtime.list_tasks(node.as_str()).await?;
    let actual: Vec<ActualTask> = containers.iter().filter_map(actual_task).collect();
    for task in actual
        .iter()
        .filter(|t| t.state == ActualTaskState::Running)
    {
        backoff.running(&task.slot, now);
    }
    backoff.retain(|slot| want.iter().any(|t| t.slot == *slot));
    // A container that keeps exiting is restarted after a growing delay, not every round.
    let actions: Vec<RuntimeAction> = reconcile(want, &actual)
        .into_iter()
        .filter(|action| match action {
            RuntimeAction::Start { slot, .. } => match backoff.try_restart(slot, now) {
                Ok(()) => true,
                Err(wait_ms) => {
                    errors.insert(
                        slot.clone(),
                        format!(
                            "exited; restart {} in {:.1} s (backing off)",
                            backoff.restarts(slot) + 1,
                            wait_ms as f64 / 1000.0
                        ),
                    );
                    false
                }
            },
            _ => true,
        })
        .collect();
    if actions.is_empty() {
        return Ok(containers);
    }
    let records = secrets.records.borrow().clone();
    let results = join_all(actions.iter().map(|action| {
        let records = records.clone();
        async move {
            let result = match action {
                RuntimeAction::Create(task) => {
                    info!(slot = %task.slot, image = %task.spec.image, "creating container");
                    let mut spec = task_spec(node, task);
                    if !task.spec.secrets.is_empty() {
                        match secret_files::prepare(
                            &secrets.root,
                            &spec.container_name(),
                            &task.spec.secrets,
                            &records,
                            node,
                            &secrets.keys,
                        ) {
                            Ok(dir) => spec.secrets_dir = Some(dir.to_string_lossy().into_owned()),
                            Err(e) => return (action, Err(e)),
                        }
                    }
                    runtime
                        .create_and_start(&spec)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                RuntimeAction::Start { id, slot } => {
                    info!(%slot, container = %short(id), "restarting stopped container");
                    runtime.start(id).await.map_err(|e| e.to_string())
                }
                RuntimeAction::Remove { id, slot, reason } => {
                    info!(%slot, container = %short(id), reason, "removing container");
                    runtime.remove(id).await.map_err(|e| e.to_string())
                }
            };
            (action, result)
        }
    }))
    .await;
    for (action, result) in results {
        let slot = match action {
            RuntimeAction::Create(task) => &task.slot,
            RuntimeAction::Start { slot, .. } | RuntimeAction::Remove { slot, .. } => slot,
        };
        match result {
            Ok(()) => {
                errors.remove(slot);
            }
            Err(e) => {
                warn!(%slot, error = %e, "reconcile action failed");
                errors.insert(slot.clone(), e);
            }
        }
    }
    errors.retain(|slot, _| want.iter().any(|t| t.slot == *slot));
    let containers = runtime.list_tasks(node.as_str()).await?;
    let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
    secret_files::sweep(&secrets.root, &names);
    Ok(containers)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn status_of(
    task: &DesiredTask,
    container: Option<&ContainerInfo>,
    error: Option<&String>,
    fallback_state: &str,
) -> TaskStatus {
    TaskStatus {
        service: task.slot.service.to_string(),
        slot: task.slot.slot,
        state: match (container, error) {
            (Some(c), _) if c.state == ContainerState::Running => "running".into(),
            (_, Some(_)) => "failed".into(),
            (Some(c), None) => c.state.as_str().to_string(),
            (None, None) => fallback_state.into(),
        },
        status: match (container, error) {
            (Some(c), _) if c.state == ContainerState::Running => c.status.clone(),
            (_, Some(e)) => e.clone(),
            (Some(c), None) => c.status.clone(),
            (None, None) => String::new(),
        },
        container: container
            .map(|c| short(&c.id).to_string())
            .unwrap_or_default(),
        ports: container.map(|c| c.ports.clone()).unwrap_or_default(),
    }
}

fn statuses(
    want: &[DesiredTask],
    containers: &[ContainerInfo],
    errors: &BTreeMap<SlotId, String>,
) -> Vec<TaskStatus> {
    want.iter()
        .map(|task| {
            let container = containers
                .iter()
                .filter(|c| c.service == task.slot.service.as_str() && c.slot == task.slot.slot)
                .max_by_key(|c| c.state == ContainerState::Running);
            status_of(task, container, errors.get(&task.slot), "pending")
        })
        .collect()
}
