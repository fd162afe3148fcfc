//! The reconcile loop: lists this node's containers, asks [`crate::core::Supervisor`] what to do,
//! does it through the runtime, and reports the actual state of its tasks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_crdt::{HealthProbe, NodeId, SecretRecord, ServiceName, SlotId};
use warren_runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, HealthCheck, HealthStatus, HealthTest,
    PortMapping, TaskSpec,
};

use super::secret_files;
use crate::core::{
    ActualTask, ActualTaskState, DesiredTask, Millis, RestartPhase, RuntimeAction, Supervisor,
    TaskHealth, TaskRestartStatus,
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

fn task_health(health: Option<HealthStatus>) -> TaskHealth {
    match health {
        None => TaskHealth::None,
        Some(HealthStatus::Starting) => TaskHealth::Starting,
        Some(HealthStatus::Healthy) => TaskHealth::Healthy,
        Some(HealthStatus::Unhealthy) => TaskHealth::Unhealthy,
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
        exit_code: c.exit_code,
        health: task_health(c.health),
        detail: c.detail.clone(),
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

fn health_check(h: &warren_crdt::HealthCheck) -> HealthCheck {
    HealthCheck {
        test: match &h.probe {
            HealthProbe::Cmd { command } => HealthTest::Shell(command.clone()),
            HealthProbe::Http { port, path } => HealthTest::Http {
                port: *port,
                path: path.clone(),
            },
            HealthProbe::Tcp { port } => HealthTest::Tcp { port: *port },
        },
        interval: Duration::from_millis(h.interval_ms),
        timeout: Duration::from_millis(h.timeout_ms),
        retries: h.retries,
        start_period: Duration::from_millis(h.start_period_ms),
    }
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
        health: task.spec.health.as_ref().map(health_check),
        nano_cpus: task.spec.resources.nano_cpus,
        memory_bytes: task.spec.resources.memory_bytes,
        stop_timeout: task.spec.stop_timeout_ms.map(Duration::from_millis),
    }
}

/// Runs reconcile rounds every `interval` and whenever the desired tasks change, until
/// `cancel`. Does nothing until the first desired set arrives. Containers keep running when
/// the loop stops: a node's restart adopts them.
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
    let mut supervisor = Supervisor::new();
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
            &mut supervisor,
            now,
            &mut errors,
        )
        .await
        {
            Ok((containers, restarts)) => {
                last_list_error = None;
                status_tx.send_replace(statuses(&want, &containers, &restarts, &errors));
            }
            Err(e) => {
                let text = e.to_string();
                if last_list_error.as_deref() != Some(text.as_str()) {
                    warn!(error = %text, "reconcile cannot reach the container runtime");
                }
                last_list_error = Some(text.clone());
                let unknown = want
                    .iter()
                    .map(|t| status_of(t, None, None, Some(&text), "unknown"))
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

type Listed = (Vec<ContainerInfo>, BTreeMap<SlotId, TaskRestartStatus>);

/// One round: list, decide, act (actions run concurrently: a stop or removal waits for the
/// container's stop timeout), list again if anything was done.
#[allow(clippy::too_many_arguments)]
async fn round<R: ContainerRuntime>(
    runtime: &R,
    node: &NodeId,
    want: &[DesiredTask],
    secrets: &SecretContext,
    supervisor: &mut Supervisor,
    now: Millis,
    errors: &mut BTreeMap<SlotId, String>,
) -> Result<Listed, warren_runtime::RuntimeError> {
    let containers = runtime.list_tasks(node.as_str()).await?;
    let actual: Vec<ActualTask> = containers.iter().filter_map(actual_task).collect();
    // An error of an earlier action is over once the slot's container runs.
    errors.retain(|slot, _| {
        want.iter().any(|t| t.slot == *slot)
            && !actual
                .iter()
                .any(|t| t.slot == *slot && t.state == ActualTaskState::Running)
    });
    let decided = supervisor.round(want, &actual, now);
    if decided.actions.is_empty() {
        return Ok((containers, decided.tasks));
    }
    let records = secrets.records.borrow().clone();
    let results = join_all(decided.actions.iter().map(|action| {
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
                RuntimeAction::Stop { id, slot, reason } => {
                    info!(%slot, container = %short(id), reason, "stopping container");
                    runtime.stop(id).await.map_err(|e| e.to_string())
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
        let slot = action.slot();
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
    Ok((containers, decided.tasks))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn status_of(
    task: &DesiredTask,
    container: Option<&ContainerInfo>,
    restart: Option<&TaskRestartStatus>,
    error: Option<&String>,
    fallback_state: &str,
) -> TaskStatus {
    let running = container.is_some_and(|c| c.state == ContainerState::Running);
    let phase = restart.map(|r| r.phase);
    let last_error = restart.and_then(|r| r.last_error.clone());
    let (state, status) = if running {
        ("running".to_string(), container.map(|c| c.status.clone()))
    } else if let Some(e) = error {
        ("failed".to_string(), Some(e.clone()))
    } else {
        match (phase, restart) {
            (Some(RestartPhase::Failed), Some(r)) => (
                "failed".to_string(),
                Some(format!(
                    "gave up after {} restarts: {}",
                    r.restarts,
                    last_error.clone().unwrap_or_default()
                )),
            ),
            (Some(RestartPhase::BackingOff), Some(r)) => (
                "restarting".to_string(),
                Some(format!(
                    "restart {} in {:.1} s (backing off)",
                    r.restarts.saturating_add(1),
                    r.next_restart_in_ms.unwrap_or(0) as f64 / 1000.0
                )),
            ),
            _ => match container {
                Some(c) => (c.state.as_str().to_string(), Some(c.status.clone())),
                None => (fallback_state.to_string(), None),
            },
        }
    };
    TaskStatus {
        service: task.slot.service.to_string(),
        slot: task.slot.slot,
        state,
        status: status.unwrap_or_default(),
        container: container
            .map(|c| short(&c.id).to_string())
            .unwrap_or_default(),
        ports: container.map(|c| c.ports.clone()).unwrap_or_default(),
        health: container
            .map(|c| task_health(c.health).as_str().to_string())
            .unwrap_or_default(),
        exit_code: container
            .and_then(|c| c.exit_code)
            .or_else(|| restart.and_then(|r| r.last_exit_code)),
        restarts: restart.map_or(0, |r| r.restarts),
        next_restart_ms: restart.and_then(|r| r.next_restart_in_ms),
        error: error.cloned().or(last_error).unwrap_or_default(),
    }
    .bounded()
}

fn statuses(
    want: &[DesiredTask],
    containers: &[ContainerInfo],
    restarts: &BTreeMap<SlotId, TaskRestartStatus>,
    errors: &BTreeMap<SlotId, String>,
) -> Vec<TaskStatus> {
    want.iter()
        .map(|task| {
            let container = containers
                .iter()
                .filter(|c| c.service == task.slot.service.as_str() && c.slot == task.slot.slot)
                .max_by_key(|c| {
                    (
                        c.generation == task.generation,
                        c.state == ContainerState::Running,
                    )
                });
            status_of(
                task,
                container,
                restarts.get(&task.slot),
                errors.get(&task.slot),
                "pending",
            )
        })
        .collect()
}
