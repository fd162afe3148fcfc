//! The reconcile loop: lists this node's containers, asks [`crate::core::Supervisor`] what to do,
//! does it through the runtime, and reports the actual state of its tasks.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::{debug, info, warn};
use warren_crdt::{HealthProbe, NodeId, SecretRecord, ServiceName, SlotId};
use warren_runtime::forward;
use warren_runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, DockerRuntime, HealthCheck, HealthEvent,
    HealthStatus, HealthTest, NetworkSpec, PortMapping, PullProgress, RuntimeError, TaskSpec,
};

use super::secret_files;
use crate::core::{
    container_for, round_statuses, short_id, task_status, ActualTask, ActualTaskState, Desired,
    DesiredTask, Millis, Round, RuntimeAction, Supervisor, TaskHealth,
};
use crate::overlay::{Prefix, WireguardPublic};
use crate::protocol::{EngineStatus, TaskState, TaskStatus};
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

/// A container as the core sees it; `now_secs` is this host's Unix time (the engine's clock
/// is this host's, so the age needs no trust in other devices' clocks).
fn actual_task(c: &ContainerInfo, now_secs: i64) -> Option<ActualTask> {
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
        engine_state: engine_state(c.state),
        status: c.status.clone(),
        ports: c.ports.clone(),
        age_ms: (c.created_secs > 0).then(|| {
            u64::try_from(now_secs.saturating_sub(c.created_secs))
                .unwrap_or(0)
                .saturating_mul(1000)
        }),
        gpus: c.gpus.clone(),
    })
}

fn engine_state(state: ContainerState) -> TaskState {
    match state {
        ContainerState::Created => TaskState::Created,
        ContainerState::Running => TaskState::Running,
        ContainerState::Paused => TaskState::Paused,
        ContainerState::Restarting => TaskState::Restarting,
        ContainerState::Removing => TaskState::Removing,
        ContainerState::Exited => TaskState::Exited,
        ContainerState::Dead => TaskState::Dead,
        ContainerState::Unknown => TaskState::Unknown,
    }
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What the reconciler needs to hand secrets to containers.
pub(crate) struct SecretContext {
    /// This node's X25519 keys.
    pub(crate) keys: SecretKeys,
    /// The document's secret records, kept current by the actor.
    pub(crate) records: watch::Receiver<Arc<BTreeMap<String, SecretRecord>>>,
    /// Where the secret files go (a tmpfs).
    pub(crate) root: PathBuf,
    /// Whether tasks may bind-mount this node's host paths (`--allow-host-paths`): without
    /// it a task with a bind mount is refused with the reason.
    pub(crate) allow_host_paths: bool,
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

/// The service's environment plus what Warren tells every task about itself (these win over
/// the service's own): `WARREN_NODE_ID` (the node running it), `WARREN_SERVICE`,
/// `WARREN_SLOT`.
fn task_env(node: &NodeId, task: &DesiredTask) -> std::collections::BTreeMap<String, String> {
    let mut env = task.spec.env.clone();
    env.insert("WARREN_NODE_ID".into(), node.to_string());
    env.insert("WARREN_SERVICE".into(), task.slot.service.to_string());
    env.insert("WARREN_SLOT".into(), task.slot.slot.to_string());
    env
}

fn task_spec(node: &NodeId, task: &DesiredTask, attach: Option<&Attach>) -> TaskSpec {
    TaskSpec {
        node: node.to_string(),
        service: task.slot.service.to_string(),
        slot: task.slot.slot,
        epoch: task.epoch.0,
        generation: task.generation,
        image: task.spec.image.clone(),
        command: task.spec.command.clone(),
        env: task_env(node, task),
        ports: task
            .spec
            .ports
            .iter()
            .map(|p| PortMapping {
                container_port: p.container_port,
                // An ingress port is the routing mesh's on every node: the container takes
                // an engine-chosen port (several replicas share one engine), the mesh
                // forwards to it (daemon::ingress).
                host_port: match p.mode {
                    warren_crdt::PublishMode::Ingress => None,
                    warren_crdt::PublishMode::Host => p.host_port,
                },
            })
            .collect(),
        secrets_dir: None,
        health: task.spec.health.as_ref().map(health_check),
        nano_cpus: task.spec.resources.nano_cpus,
        memory_bytes: task.spec.resources.memory_bytes,
        stop_timeout: task.spec.stop_timeout_ms.map(Duration::from_millis),
        network: attach.map(|a| a.network.clone()),
        dns: attach
            .and_then(|a| a.dns)
            .map(|ip| vec![ip.into()])
            .unwrap_or_default(),
        resolv_conf: attach
            .filter(|a| a.dns.is_some())
            .and_then(|a| a.resolv_conf.clone()),
        // Filled by the caller: a task whose mounts this node refuses is not started.
        mounts: Vec::new(),
        gpus: task.gpus.clone(),
    }
}

/// The node's place on the overlay, for its containers: computed from its WireGuard key
/// ([`crate::overlay::addresses`]) before the loop starts.
#[derive(Debug, Clone)]
pub(crate) struct OverlayConfig {
    /// The Docker network its tasks join: its name, the node's container subnet (a /97).
    pub(crate) network: NetworkSpec,
    /// The cluster's /48: forwarded between the network and the interface, never
    /// masqueraded.
    pub(crate) cluster: Prefix,
    /// The overlay interface, e.g. `warren0`.
    pub(crate) interface: String,
    /// The node's own overlay address: its tasks' DNS server.
    pub(crate) node_ip: Ipv6Addr,
    /// Whether the node's DNS serves on `node_ip` (its names task says so once bound):
    /// `None` until known. A task gets the engine's resolvers instead when it does not, so
    /// that it never waits on a server that does not answer (the overlay off). The loop
    /// waits up to [`DNS_DECISION_WAIT`] for it to be known before its first round.
    pub(crate) dns_ready: tokio::sync::watch::Receiver<Option<bool>>,
    /// The resolver file the names task writes ([`super::names::resolv_conf_text`]).
    pub(crate) resolv_conf: std::path::PathBuf,
}

impl OverlayConfig {
    /// The config of node `node` with WireGuard key `key` in cluster `cluster_id`, on
    /// interface `interface`.
    pub(crate) fn new(
        cluster_id: &str,
        key: &WireguardPublic,
        node: &NodeId,
        interface: &str,
        dns_ready: tokio::sync::watch::Receiver<Option<bool>>,
        resolv_conf: std::path::PathBuf,
    ) -> Self {
        let addresses = crate::overlay::addresses(cluster_id, key);
        Self {
            network: NetworkSpec {
                name: warren_runtime::overlay_network_name(node.as_str()),
                subnet: addresses.container_subnet,
                node: node.to_string(),
                overlay_interface: Some(interface.to_string()),
            },
            cluster: crate::overlay::cluster_prefix(cluster_id),
            interface: interface.to_string(),
            node_ip: addresses.overlay_ip,
            dns_ready,
            resolv_conf,
        }
    }
}

/// How long the loop waits at its start for the node's DNS to be known to serve or not: a
/// task created before would not get it, and a container's DNS servers are fixed at its
/// creation.
const DNS_DECISION_WAIT: Duration = Duration::from_secs(10);

/// Where new tasks go: the overlay network, with the node's address as their DNS server
/// while the node's DNS serves there.
#[derive(Debug, Clone)]
struct Attach {
    network: String,
    dns: Option<Ipv6Addr>,
    /// The file naming the node's DNS as the only server (written by the names task before
    /// it says it serves), bind-mounted as the task's `/etc/resolv.conf`.
    resolv_conf: Option<String>,
}

/// The overlay as the loop set it up: the network once it exists, the forwarding rules once
/// installed (removed when the loop ends).
struct OverlayState {
    config: OverlayConfig,
    attach: Option<Attach>,
    rules: bool,
    /// The last warning, so that a retry after an engine outage does not repeat it.
    warned: Option<String>,
}

impl OverlayState {
    fn new(config: OverlayConfig) -> Self {
        Self {
            config,
            attach: None,
            rules: false,
            warned: None,
        }
    }

    fn warn_once(&mut self, text: String) {
        if self.warned.as_ref() != Some(&text) {
            warn!("{text}");
            self.warned = Some(text);
        }
    }

    /// Ensures the network, IPv6 forwarding and the forwarding rules; run after every
    /// (re)connection to the engine (an engine restart may rewrite its rules ahead of ours).
    /// Without the network, new tasks go to the engine's default network as before;
    /// without the rules, they still reach each other on this node.
    async fn setup<R: ContainerRuntime>(&mut self, runtime: &R) {
        let network = match runtime.ensure_network(&self.config.network).await {
            Ok(n) => n,
            Err(e) => {
                self.attach = None;
                self.warn_once(format!(
                    "the overlay network could not be set up, so new tasks run on the \
                     engine's default network: {e}"
                ));
                return;
            }
        };
        if network.created || self.attach.is_none() {
            info!(network = %network.name, subnet = %network.subnet, bridge = %network.bridge, "tasks join the overlay network");
        }
        self.attach = Some(Attach {
            network: network.name.clone(),
            dns: None,
            resolv_conf: Some(self.config.resolv_conf.to_string_lossy().into_owned()),
        });
        let rules = forward::ForwardRules {
            node: self.config.network.node.clone(),
            bridge: network.bridge,
            interface: self.config.interface.clone(),
            cluster: self.config.cluster,
        };
        let installed = tokio::task::spawn_blocking(move || {
            forward::enable_ipv6_forwarding()?;
            forward::install(&rules)
        })
        .await;
        match installed {
            Ok(Ok(at)) => {
                self.rules = true;
                debug!(
                    chain = at.chain,
                    nat = at.nat,
                    "overlay forwarding rules installed"
                );
            }
            Ok(Err(e)) => {
                // Some may be in: remove them at the end.
                self.rules = true;
                self.warn_once(format!(
                    "host forwarding for the overlay could not be set up, so tasks reach                      only this node's tasks: {e}"
                ));
            }
            Err(e) => self.warn_once(format!("host forwarding setup stopped: {e}")),
        }
    }

    /// Removes the forwarding rules (the network stays: its tasks outlive the daemon).
    async fn teardown(&mut self) {
        if !self.rules {
            return;
        }
        let node = self.config.network.node.clone();
        match tokio::task::spawn_blocking(move || forward::remove(&node)).await {
            Ok(Ok(n)) => debug!(rules = n, "overlay forwarding rules removed"),
            Ok(Err(e)) => warn!(error = %e, "could not remove the overlay forwarding rules"),
            Err(e) => warn!(error = %e, "removing the overlay forwarding rules stopped"),
        }
        self.rules = false;
    }
}

/// How the reconcile loop reaches its container engine: a fresh connection (version
/// handshake included) at start and after every outage.
pub(crate) trait Connector: Send + Sync + 'static {
    /// The runtime a connection gives (cloned into background image pulls).
    type Runtime: ContainerRuntime + Clone;
    /// The endpoint, for reports (e.g. `unix:///var/run/docker.sock`).
    fn endpoint(&self) -> String;
    /// Connects and returns the runtime with the engine's version (`""` if unknown).
    fn connect(
        &self,
    ) -> impl std::future::Future<Output = Result<(Self::Runtime, String), RuntimeError>> + Send;
    /// The health verdicts of node `node`'s containers as the engine announces them, from
    /// the stream's first poll until the engine closes it (see
    /// [`DockerRuntime::health_events`]); the loop runs a round on each.
    fn health_events(
        runtime: Self::Runtime,
        node: String,
    ) -> impl Stream<Item = Result<HealthEvent, RuntimeError>> + Send + Unpin + 'static;
}

/// The Docker engine at `--docker-host`.
pub(crate) struct DockerConnector {
    pub(crate) host: Option<String>,
    pub(crate) endpoint: String,
}

impl Connector for DockerConnector {
    type Runtime = DockerRuntime;

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    async fn connect(&self) -> Result<(DockerRuntime, String), RuntimeError> {
        // A hung engine (stopped, overloaded) would hold the handshake for bollard's 2 min.
        let runtime = tokio::time::timeout(
            ENGINE_CONNECT_TIMEOUT,
            DockerRuntime::connect(self.host.as_deref()),
        )
        .await
        .map_err(|_| RuntimeError::Unavailable {
            endpoint: self.endpoint.clone(),
            reason: format!("no answer within {ENGINE_CONNECT_TIMEOUT:?}"),
        })??;
        let version = runtime
            .engine_info()
            .await
            .map(|i| i.version)
            .unwrap_or_default();
        Ok((runtime, version))
    }

    fn health_events(
        runtime: DockerRuntime,
        node: String,
    ) -> impl Stream<Item = Result<HealthEvent, RuntimeError>> + Send + Unpin + 'static {
        runtime.health_events(&node)
    }
}

/// First wait before watching the engine's health events again after the stream failed or
/// ended; doubles up to [`EVENTS_RETRY_MAX`].
const EVENTS_RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to watch the engine's health events.
const EVENTS_RETRY_MAX: Duration = Duration::from_secs(5);

/// Watches the health verdicts `open` streams (a new stream after each failure or end, with
/// backoff from [`EVENTS_RETRY_MIN`] to [`EVENTS_RETRY_MAX`]) until `cancel`, and asks the
/// loop for a round on each through `rounds` (capacity 1: one request pending stands for
/// any number of events, and the round reads every container). After a stream broke, the
/// next one asks for a round as it opens, since verdicts in between were not seen. A
/// failure is logged once (then at debug level) until a stream delivers again; the loop's
/// periodic rounds go on meanwhile.
async fn watch_health<S>(open: impl Fn() -> S, rounds: mpsc::Sender<()>, cancel: CancellationToken)
where
    S: Stream<Item = Result<HealthEvent, RuntimeError>> + Unpin,
{
    let mut retry = EVENTS_RETRY_MIN;
    let mut broke = false;
    let mut warned = false;
    loop {
        let mut events = open();
        if broke {
            let _ = rounds.try_send(());
        }
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = events.next() => match next {
                    Some(Ok(event)) => {
                        debug!(container = %short(&event.id), service = %event.service, health = event.status.as_str(), "health verdict");
                        retry = EVENTS_RETRY_MIN;
                        warned = false;
                        let _ = rounds.try_send(());
                    }
                    Some(Err(e)) => {
                        if warned {
                            debug!(error = %e, "the engine's health events still fail");
                        } else {
                            warn!(error = %e, "cannot watch the engine's health events; retrying (health changes are seen at the next periodic round meanwhile)");
                            warned = true;
                        }
                        break;
                    }
                    None => {
                        debug!("the engine closed its health events; watching again");
                        break;
                    }
                },
            }
        }
        broke = true;
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(EVENTS_RETRY_MAX);
    }
}

/// First wait before connecting again to an engine that does not answer; doubles up to
/// [`ENGINE_RETRY_MAX`].
const ENGINE_RETRY_MIN: Duration = Duration::from_millis(250);
/// How long one connection attempt (version handshake and ping) may take.
const ENGINE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two attempts to reach the engine.
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The engine's reachability as the loop tracks and reports it.
struct EngineTracker {
    status: EngineStatus,
    /// Whether the current outage has been logged.
    logged: bool,
    retry: Duration,
}

impl EngineTracker {
    fn new(endpoint: String) -> Self {
        Self {
            status: EngineStatus {
                reachable: false,
                since_ms: super::wall_ms(),
                endpoint,
                version: String::new(),
                error: "not connected yet".into(),
            },
            logged: false,
            retry: ENGINE_RETRY_MIN,
        }
    }

    /// The engine answered.
    fn up(&mut self, version: String) {
        if !self.status.reachable {
            let down_ms = super::wall_ms().saturating_sub(self.status.since_ms);
            if self.logged {
                info!(
                    endpoint = %self.status.endpoint,
                    %version,
                    down_for = %format!("{:.1}s", down_ms as f64 / 1000.0),
                    "container engine reachable again; reconciling"
                );
            } else {
                info!(endpoint = %self.status.endpoint, %version, "connected to the container engine");
            }
            self.status.reachable = true;
            self.status.since_ms = super::wall_ms();
            self.status.error.clear();
        }
        self.status.version = version;
        self.logged = false;
        self.retry = ENGINE_RETRY_MIN;
    }

    /// The engine did not answer; returns how long to wait before the next attempt.
    fn down(&mut self, error: &RuntimeError) -> Duration {
        let text = error.to_string();
        if self.status.reachable {
            self.status.reachable = false;
            self.status.since_ms = super::wall_ms();
        }
        if !self.logged {
            warn!(
                endpoint = %self.status.endpoint,
                error = %text,
                "container engine unreachable; keeping the desired state and retrying with \
                 backoff (tasks resume when it is back)"
            );
            self.logged = true;
        } else if self.status.error != text {
            debug!(error = %text, "container engine still unreachable");
        }
        self.status.error = text;
        let wait = self.retry;
        self.retry = (self.retry * 2).min(ENGINE_RETRY_MAX);
        wait
    }
}

/// First wait before pulling an image again after a failed pull; doubles per failure up to
/// [`PULL_RETRY_MAX`].
const PULL_RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between two pulls of one image.
const PULL_RETRY_MAX: Duration = Duration::from_secs(60);
/// Progress of a running pull is logged at most this often.
const PULL_LOG_EVERY: Duration = Duration::from_secs(5);

/// Where the pull of one image stands.
#[derive(Debug, Clone)]
enum PullState {
    /// Running in the background; the task's container is created once it is done.
    Pulling(PullProgress),
    /// The last pull failed; the next one starts at `retry_at`.
    Failed {
        error: String,
        attempts: u32,
        retry_at: std::time::Instant,
    },
}

/// Image pulls in flight or failed, by image reference: one background pull per image
/// however many tasks wait for it. Bounded by the images of the desired tasks (failed
/// entries of images no longer wanted are dropped every round).
#[derive(Debug, Clone, Default)]
struct Pulls(Arc<std::sync::Mutex<BTreeMap<String, PullState>>>);

impl Pulls {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PullState>> {
        // A panic while holding this lock leaves only plain data behind: go on with it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn snapshot(&self) -> BTreeMap<String, PullState> {
        self.lock().clone()
    }

    fn keep_only(&self, images: &[&str]) {
        self.lock().retain(|image, state| {
            matches!(state, PullState::Pulling(_)) || images.contains(&image.as_str())
        });
    }

    /// `image` is there (loaded by hand, perhaps): forget an earlier failed pull of it.
    fn present(&self, image: &str) {
        let mut map = self.lock();
        if matches!(map.get(image), Some(PullState::Failed { .. })) {
            map.remove(image);
        }
    }

    /// Starts pulling `image` in the background unless a pull runs or the last failure's
    /// backoff has not passed yet.
    fn begin<R: ContainerRuntime + Clone>(
        &self,
        runtime: &R,
        image: &str,
        metrics: &Arc<super::metrics::Metrics>,
    ) {
        let now = std::time::Instant::now();
        let attempts = {
            let mut map = self.lock();
            let attempts = match map.get(image) {
                Some(PullState::Pulling(_)) => return,
                Some(PullState::Failed { retry_at, .. }) if now < *retry_at => return,
                Some(PullState::Failed { attempts, .. }) => *attempts,
                None => 0,
            };
            map.insert(
                image.to_string(),
                PullState::Pulling(PullProgress::default()),
            );
            attempts
        };
        info!(%image, "image missing on this node; pulling it");
        let runtime = runtime.clone();
        let image = image.to_string();
        let pulls = self.clone();
        let metrics = Arc::clone(metrics);
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let last_log = std::sync::Mutex::new(started);
                let (report, name) = (pulls.clone(), image.clone());
                let result = runtime
                    .pull_image(&image, move |progress| {
                        report
                            .lock()
                            .insert(name.clone(), PullState::Pulling(progress.clone()));
                        let mut last = last_log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if last.elapsed() >= PULL_LOG_EVERY {
                            *last = std::time::Instant::now();
                            info!(image = %name, %progress, "pulling image");
                        }
                    })
                    .await;
                metrics.image_pull(result.is_ok());
                match result {
                    Ok(()) => {
                        pulls.lock().remove(&image);
                        info!(%image, took = ?started.elapsed(), "image pulled");
                    }
                    Err(e) => {
                        let attempts = attempts.saturating_add(1);
                        let wait = PULL_RETRY_MIN
                            .saturating_mul(1 << attempts.saturating_sub(1).min(8))
                            .min(PULL_RETRY_MAX);
                        let error = warren_runtime::truncate_text(
                            &format!(
                                "{e}; load it with `warren-cli image load FILE` or make a \
                                 registry reachable"
                            ),
                            crate::protocol::MAX_STATUS_TEXT_BYTES,
                        );
                        warn!(%image, error = %e, attempt = attempts, retry_in = ?wait, "image pull failed");
                        pulls.lock().insert(
                            image,
                            PullState::Failed {
                                error,
                                attempts,
                                retry_at: std::time::Instant::now() + wait,
                            },
                        );
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// Channels the reconcile loop reports on.
pub(crate) struct Reports {
    /// Actual state of the desired tasks.
    pub(crate) tasks: watch::Sender<Vec<TaskStatus>>,
    /// Whether the engine is reachable.
    pub(crate) engine: watch::Sender<Option<EngineStatus>>,
    /// Where round durations, container actions and image pulls are counted.
    pub(crate) metrics: Arc<super::metrics::Metrics>,
}

/// Runs reconcile rounds every `interval`, whenever the desired tasks change and whenever
/// the engine announces a health verdict of one of the node's containers ([`watch_health`]),
/// until `cancel`. Does nothing until the first desired set arrives. Containers keep running
/// when the loop stops: a node's restart adopts them. A round that acts reports what it
/// listed before acting and again after.
///
/// The engine may be missing at start or go away at any time: the loop then reports it
/// unreachable (with the time and the error), reports every task `unknown`, and connects
/// again with backoff (250 ms doubling to 5 s); once the engine answers it lists the
/// node's containers again, adopting what it finds, and starts the tasks the outage
/// stopped (see [`Supervisor::engine_lost`]).
///
/// With `overlay`, each connection to the engine first ensures the node's overlay network
/// and the host's forwarding rules ([`OverlayState::setup`]); new tasks join that network,
/// with the node's overlay address as their DNS server, and each task's address on it is
/// reported ([`TaskStatus::overlay_ip`]). Tasks started before keep running where they are.
/// When the loop ends the rules are removed; the network stays with its tasks.
///
/// A copy released by a start-first move runs on, reported `removing`, for
/// `deregistration_delay` before it is stopped ([`Supervisor::set_deregistration_delay`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<C: Connector>(
    connector: C,
    node: NodeId,
    mut desired: watch::Receiver<Option<Desired>>,
    reports: Reports,
    secrets: SecretContext,
    overlay: Option<OverlayConfig>,
    interval: Duration,
    deregistration_delay: Duration,
    cancel: CancellationToken,
) {
    if let Some(config) = overlay.as_ref() {
        let mut ready = config.dns_ready.clone();
        let known = tokio::time::timeout(DNS_DECISION_WAIT, ready.wait_for(Option::is_some));
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = known => {}
        }
    }
    let mut overlay = overlay.map(OverlayState::new);
    let mut errors: BTreeMap<SlotId, String> = BTreeMap::new();
    let mut last_list_error: Option<String> = None;
    let mut supervisor = Supervisor::new();
    supervisor.set_deregistration_delay(
        u64::try_from(deregistration_delay.as_millis()).unwrap_or(u64::MAX),
    );
    let mut sweeper = super::volumes::Sweeper::default();
    let pulls = Pulls::default();
    let origin = std::time::Instant::now();
    let mut engine = EngineTracker::new(connector.endpoint());
    let mut runtime: Option<C::Runtime> = None;
    // Containers running at the last successful listing: an outage stops them.
    let mut last_running: Vec<String> = Vec::new();
    // The health watcher of the current connection asks for rounds here (see
    // `watch_health`); it stops with the connection.
    let (round_tx, mut round_requests) = mpsc::channel::<()>(1);
    let mut watcher: Option<CancellationToken> = None;
    loop {
        let Some(rt) = runtime.as_ref() else {
            if let Some(watcher) = watcher.take() {
                watcher.cancel();
            }
            match connector.connect().await {
                Ok((rt, version)) => {
                    engine.up(version);
                    reports.engine.send_replace(Some(engine.status.clone()));
                    if let Some(overlay) = overlay.as_mut() {
                        overlay.setup(&rt).await;
                    }
                    let token = cancel.child_token();
                    let (events_rt, events_node) = (rt.clone(), node.to_string());
                    tokio::spawn(
                        watch_health(
                            move || C::health_events(events_rt.clone(), events_node.clone()),
                            round_tx.clone(),
                            token.clone(),
                        )
                        .in_current_span(),
                    );
                    watcher = Some(token);
                    runtime = Some(rt);
                    continue;
                }
                Err(e) => {
                    let wait = engine.down(&e);
                    reports.engine.send_replace(Some(engine.status.clone()));
                    if let Some(want) = desired.borrow().as_ref() {
                        reports
                            .tasks
                            .send_replace(engine_down(&want.tasks, &engine.status));
                    }
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            }
        };
        // `None` until the actor has read the document once: reconciling against "nothing
        // assigned" would remove every container a restarted node still runs.
        let Some(Desired {
            tasks: want,
            held,
            awaiting,
            volumes,
        }) = desired.borrow_and_update().clone()
        else {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = desired.changed() => continue,
            }
        };
        let now = Millis(origin.elapsed().as_millis() as u64);
        supervisor.set_held(held);
        supervisor.set_awaiting(awaiting);
        sweeper.sweep(rt, &node, &volumes).await;
        let images: Vec<&str> = want.iter().map(|t| t.spec.image.as_str()).collect();
        pulls.keep_only(&images);
        let attach = overlay.as_ref().and_then(|o| {
            let mut attach = o.attach.clone()?;
            attach.dns = (*o.config.dns_ready.borrow() == Some(true)).then_some(o.config.node_ip);
            Some(attach)
        });
        let attach = attach.as_ref();
        // What the round's listing showed goes out before its actions run (a stop waits for
        // the container's stop timeout): a task that failed its health check leaves the
        // names at once, not once it has stopped.
        let report_listing = |listed: &Listed, errors: &BTreeMap<SlotId, String>| {
            reports
                .tasks
                .send_replace(reported(&want, listed, errors, &pulls));
        };
        let started = std::time::Instant::now();
        let result = round(
            rt,
            &node,
            &want,
            &secrets,
            attach,
            &mut supervisor,
            (&pulls, &reports.metrics),
            now,
            &mut errors,
            report_listing,
        )
        .await;
        reports
            .metrics
            .observe_reconcile(started.elapsed().as_secs_f64());
        match result {
            Ok(listed) => {
                last_list_error = None;
                last_running = listed
                    .0
                    .iter()
                    .filter(|c| c.state == ActualTaskState::Running)
                    .map(|c| c.id.clone())
                    .collect();
                reports
                    .tasks
                    .send_replace(reported(&want, &listed, &errors, &pulls));
            }
            Err(e @ RuntimeError::Unavailable { .. }) => {
                // The engine went away (or restarts): connect again, with backoff.
                supervisor.engine_lost(std::mem::take(&mut last_running));
                let wait = engine.down(&e);
                reports.engine.send_replace(Some(engine.status.clone()));
                reports
                    .tasks
                    .send_replace(engine_down(&want, &engine.status));
                runtime = None;
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_list_error.as_deref() != Some(text.as_str()) {
                    warn!(error = %text, "the container engine refused to list this node's containers");
                }
                last_list_error = Some(text.clone());
                let unknown = want
                    .iter()
                    .map(|t| task_status(t, None, None, Some(&text), TaskState::Unknown))
                    .collect();
                reports.tasks.send_replace(unknown);
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = desired.changed() => {}
            // A container's health changed: the round stops it (the supervisor's rule)
            // and reports it at once, rather than within `interval`.
            Some(()) = round_requests.recv() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
    if let Some(watcher) = watcher.take() {
        watcher.cancel();
    }
    if let Some(overlay) = overlay.as_mut() {
        overlay.teardown().await;
    }
}

/// Every desired task as `unknown`, with the engine's outage as the reason.
fn engine_down(want: &[DesiredTask], engine: &EngineStatus) -> Vec<TaskStatus> {
    want.iter()
        .map(|t| {
            TaskStatus {
                service: t.slot.service.to_string(),
                slot: t.slot.slot,
                state: TaskState::Unknown,
                status: "container engine unreachable; the task resumes when it is back".into(),
                error: engine.error.clone(),
                ..Default::default()
            }
            .bounded()
        })
        .collect()
}

/// A round's result: the containers listed after its actions, as the core sees them, its
/// decisions, and the overlay addresses of the containers that have one, by short id.
type Listed = (Vec<ActualTask>, Round, BTreeMap<String, Ipv6Addr>);

/// The overlay addresses of `containers` on `attach`'s network, by short container id (as
/// in [`TaskStatus::container`]).
fn overlay_addresses(
    containers: &[ContainerInfo],
    attach: Option<&Attach>,
) -> BTreeMap<String, Ipv6Addr> {
    let Some(attach) = attach else {
        return BTreeMap::new();
    };
    containers
        .iter()
        .filter_map(|c| Some((short(&c.id).to_string(), *c.ipv6.get(&attach.network)?)))
        .collect()
}

/// The task reports of a round's result `listed` ([`statuses`], with each task's overlay
/// address).
fn reported(
    want: &[DesiredTask],
    listed: &Listed,
    errors: &BTreeMap<SlotId, String>,
    pulls: &Pulls,
) -> Vec<TaskStatus> {
    let (actual, decided, addresses) = listed;
    let mut report = statuses(want, actual, decided, errors, &pulls.snapshot());
    for status in &mut report {
        status.overlay_ip = addresses.get(&status.container).copied();
    }
    report
}

/// One round: list, decide, act (actions run concurrently: a stop or removal waits for the
/// container's stop timeout), list again if anything was done. When there is something to
/// do, `before_acting` gets the first listing with its decisions (and the errors so far)
/// before the actions start.
#[allow(clippy::too_many_arguments)]
async fn round<R: ContainerRuntime + Clone>(
    runtime: &R,
    node: &NodeId,
    want: &[DesiredTask],
    secrets: &SecretContext,
    attach: Option<&Attach>,
    supervisor: &mut Supervisor,
    (pulls, metrics): (&Pulls, &Arc<super::metrics::Metrics>),
    now: Millis,
    errors: &mut BTreeMap<SlotId, String>,
    before_acting: impl FnOnce(&Listed, &BTreeMap<SlotId, String>),
) -> Result<Listed, warren_runtime::RuntimeError> {
    let containers = runtime.list_tasks(node.as_str()).await?;
    let now_secs = unix_now_secs();
    let actual: Vec<ActualTask> = containers
        .iter()
        .filter_map(|c| actual_task(c, now_secs))
        .collect();
    // An error of an earlier action is over once the slot's container runs.
    errors.retain(|slot, _| {
        want.iter().any(|t| t.slot == *slot)
            && !actual
                .iter()
                .any(|t| t.slot == *slot && t.state == ActualTaskState::Running)
    });
    let decided = supervisor.round(want, &actual, now);
    let addresses = overlay_addresses(&containers, attach);
    if decided.actions.is_empty() {
        return Ok((actual, decided, addresses));
    }
    let listed = (actual, decided, addresses);
    before_acting(&listed, errors);
    let (_, decided, _) = listed;
    let records = secrets.records.borrow().clone();
    let results = join_all(decided.actions.iter().map(|action| {
        let records = records.clone();
        async move {
            let result = match action {
                RuntimeAction::Create(task) => {
                    // A missing image is pulled in the background (with progress in
                    // `service ps`); the container is created in a round after it is done.
                    match runtime.has_image(&task.spec.image).await {
                        Ok(true) => pulls.present(&task.spec.image),
                        Ok(false) => {
                            pulls.begin(runtime, &task.spec.image, metrics);
                            return (action, Ok(()));
                        }
                        Err(e) => return (action, Err(e.to_string())),
                    }
                    info!(slot = %task.slot, image = %task.spec.image, "creating container");
                    let mut spec = task_spec(node, task, attach);
                    match super::volumes::task_mounts(task, secrets.allow_host_paths) {
                        Ok(mounts) => spec.mounts = mounts,
                        Err(e) => return (action, Err(e)),
                    }
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
                    let started = runtime.create_and_start(&spec).await;
                    metrics.container_action("start", started.is_ok());
                    started.map(|_| ()).map_err(|e| e.to_string())
                }
                RuntimeAction::Start { id, slot } => {
                    info!(%slot, container = %short(id), "restarting stopped container");
                    let started = runtime.start(id).await;
                    metrics.container_action("restart", started.is_ok());
                    started.map_err(|e| e.to_string())
                }
                RuntimeAction::Stop { id, slot, reason } => {
                    info!(%slot, container = %short(id), reason, "stopping container");
                    let stopped = runtime.stop(id).await;
                    metrics.container_action("stop", stopped.is_ok());
                    stopped.map_err(|e| e.to_string())
                }
                RuntimeAction::Remove { id, slot, reason } => {
                    info!(%slot, container = %short(id), reason, "removing container");
                    let removed = runtime.remove(id).await;
                    metrics.container_action("remove", removed.is_ok());
                    removed.map_err(|e| e.to_string())
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
    let now_secs = unix_now_secs();
    let actual = containers
        .iter()
        .filter_map(|c| actual_task(c, now_secs))
        .collect();
    Ok((actual, decided, overlay_addresses(&containers, attach)))
}

fn short(id: &str) -> &str {
    short_id(id)
}

/// The reports of a round ([`round_statuses`]), with what the pulls in the background say
/// of tasks whose container of the current generation does not exist yet.
fn statuses(
    want: &[DesiredTask],
    actual: &[ActualTask],
    decided: &Round,
    errors: &BTreeMap<SlotId, String>,
    pulls: &BTreeMap<String, PullState>,
) -> Vec<TaskStatus> {
    let now = std::time::Instant::now();
    let mut out = round_statuses(want, actual, decided, errors, TaskState::Pending);
    for (task, status) in want.iter().zip(out.iter_mut()) {
        let current =
            container_for(task, actual).is_some_and(|c| task.runs_generation(c.generation));
        match pulls.get(&task.spec.image).filter(|_| !current) {
            Some(PullState::Pulling(progress)) => {
                *status = TaskStatus {
                    service: task.slot.service.to_string(),
                    slot: task.slot.slot,
                    state: TaskState::Pulling,
                    status: format!("pulling {}: {progress}", task.spec.image),
                    ..Default::default()
                }
                .bounded();
            }
            Some(PullState::Failed {
                error,
                attempts,
                retry_at,
            }) => {
                *status = TaskStatus {
                    service: task.slot.service.to_string(),
                    slot: task.slot.slot,
                    state: TaskState::Pending,
                    status: format!(
                        "image pull failed ({attempts} {}); next try in {:.0} s",
                        if *attempts == 1 {
                            "attempt"
                        } else {
                            "attempts"
                        },
                        retry_at.saturating_duration_since(now).as_secs_f64().ceil()
                    ),
                    error: error.clone(),
                    ..Default::default()
                }
                .bounded();
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{Epoch, ServiceSpec};

    fn task(image: &str) -> DesiredTask {
        DesiredTask {
            slot: SlotId {
                service: ServiceName::new("app").expect("name"),
                slot: 0,
            },
            epoch: Epoch(1),
            holder: NodeId("a".into()),
            generation: 1,
            spec: ServiceSpec {
                image: image.into(),
                replicas: 1,
                ..Default::default()
            },
            volumes: Vec::new(),
            gpus: Vec::new(),
            previous: Default::default(),
            same_tasks_as: Vec::new(),
        }
    }

    #[test]
    fn pulls_show_as_pulling_then_as_pending_with_the_error() {
        let want = [task("app:1")];
        let mut pulls = BTreeMap::new();
        pulls.insert(
            "app:1".to_string(),
            PullState::Pulling(PullProgress {
                layers: 2,
                layers_done: 1,
                bytes_done: 1 << 20,
                bytes_total: 2 << 20,
            }),
        );
        let s = statuses(&want, &[], &Round::default(), &BTreeMap::new(), &pulls);
        assert_eq!(s[0].state, TaskState::Pulling);
        assert_eq!(
            s[0].status,
            "pulling app:1: 1/2 layers, 1.0 MiB of 2.0 MiB (50%)"
        );
        pulls.insert(
            "app:1".to_string(),
            PullState::Failed {
                error: "image app:1 is not present on this node and could not be pulled: no route"
                    .into(),
                attempts: 2,
                retry_at: std::time::Instant::now() + Duration::from_secs(4),
            },
        );
        let s = statuses(&want, &[], &Round::default(), &BTreeMap::new(), &pulls);
        assert_eq!(s[0].state, TaskState::Pending);
        assert!(s[0]
            .status
            .starts_with("image pull failed (2 attempts); next try in"));
        assert!(s[0].error.contains("could not be pulled"));
        // Another image's pull says nothing about this task.
        let s = statuses(
            &[task("other:1")],
            &[],
            &Round::default(),
            &BTreeMap::new(),
            &pulls,
        );
        assert_eq!(s[0].state, TaskState::Pending);
        assert_eq!(s[0].error, "");
    }

    #[test]
    fn tasks_join_the_overlay_network_with_the_node_as_dns_and_report_their_address() {
        let attach = Attach {
            network: "warren-overlay-x".into(),
            dns: Some("fd00::1".parse().expect("ip")),
            resolv_conf: Some("/data/resolv.conf".into()),
        };
        let node = NodeId("a".into());
        let spec = task_spec(&node, &task("app:1"), Some(&attach));
        assert_eq!(spec.network.as_deref(), Some("warren-overlay-x"));
        assert_eq!(spec.resolv_conf.as_deref(), Some("/data/resolv.conf"));
        assert_eq!(
            spec.dns,
            vec!["fd00::1".parse::<std::net::IpAddr>().expect("ip")]
        );
        let plain = task_spec(&node, &task("app:1"), None);
        assert_eq!((plain.network, plain.dns), (None, vec![]));
        let no_dns_yet = Attach {
            dns: None,
            ..attach.clone()
        };
        let early = task_spec(&node, &task("app:1"), Some(&no_dns_yet));
        assert_eq!(
            (early.network.as_deref(), early.dns, early.resolv_conf),
            (Some("warren-overlay-x"), vec![], None)
        );

        let container = |id: &str, network: &str, ip: &str| ContainerInfo {
            id: id.into(),
            name: String::new(),
            service: "app".into(),
            slot: 0,
            epoch: 1,
            generation: 1,
            state: ContainerState::Running,
            status: String::new(),
            ports: vec![],
            exit_code: None,
            health: None,
            detail: String::new(),
            created_secs: 0,
            ipv6: [(network.to_string(), ip.parse().expect("ip"))].into(),
            gpus: vec![],
        };
        let listed = [
            container("0123456789abcdef", "warren-overlay-x", "fd00::8000:2"),
            // Started before the overlay: on another network, no overlay address.
            container("fedcba9876543210", "bridge", "fd99::2"),
        ];
        let addresses = overlay_addresses(&listed, Some(&attach));
        assert_eq!(
            addresses.into_iter().collect::<Vec<_>>(),
            vec![(
                short("0123456789abcdef").to_string(),
                "fd00::8000:2".parse().expect("ip")
            )]
        );
        assert!(overlay_addresses(&listed, None).is_empty());
    }

    #[tokio::test]
    async fn the_health_watcher_asks_for_a_round_per_verdict_and_watches_again_after_a_failure() {
        use futures::channel::mpsc as feed;
        use std::sync::atomic::{AtomicUsize, Ordering};

        // The first stream is fed by the test; later ones stay open, silent.
        let (engine, first) = feed::unbounded::<Result<HealthEvent, RuntimeError>>();
        let first = std::sync::Mutex::new(Some(first));
        let opened = Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        let open = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            match first.lock().expect("lock").take() {
                Some(stream) => stream.boxed(),
                None => futures::stream::pending().boxed(),
            }
        };
        let (tx, mut rounds) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(watch_health(open, tx, cancel.clone()));
        let deadline = Duration::from_secs(10);
        let mut next_round = async || {
            tokio::time::timeout(deadline, rounds.recv())
                .await
                .expect("a round asked for")
                .expect("the watcher runs")
        };

        engine
            .unbounded_send(Ok(HealthEvent {
                id: "0123456789abcdef".into(),
                name: "warren-app-0-abcdefgh".into(),
                service: "app".into(),
                status: HealthStatus::Unhealthy,
            }))
            .expect("send");
        next_round().await;
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        // The stream breaks: after the backoff a new one, and a round to catch up.
        engine
            .unbounded_send(Err(RuntimeError::Unavailable {
                endpoint: "unix:///x.sock".into(),
                reason: "connection reset".into(),
            }))
            .expect("send");
        next_round().await;
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        cancel.cancel();
        tokio::time::timeout(deadline, watcher)
            .await
            .expect("the watcher stops when cancelled")
            .expect("no panic");
        assert!(rounds.try_recv().is_err(), "no round without a verdict");
    }

    /// An engine holding `containers`, logging the stops it is asked for (other actions are
    /// not expected by the tests that use it and fail).
    #[derive(Clone, Default)]
    struct FakeEngine {
        containers: Arc<std::sync::Mutex<Vec<ContainerInfo>>>,
        log: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl FakeEngine {
        fn refuse(op: &'static str) -> RuntimeError {
            RuntimeError::Unavailable {
                endpoint: "fake".into(),
                reason: format!("{op} is not expected"),
            }
        }
    }

    impl ContainerRuntime for FakeEngine {
        async fn list_tasks(&self, _node: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
            Ok(self.containers.lock().expect("lock").clone())
        }
        async fn create_and_start(&self, _spec: &TaskSpec) -> Result<String, RuntimeError> {
            Err(Self::refuse("create"))
        }
        async fn start(&self, _id: &str) -> Result<(), RuntimeError> {
            Err(Self::refuse("start"))
        }
        async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
            self.log.lock().expect("lock").push(format!("stop {id}"));
            for c in self.containers.lock().expect("lock").iter_mut() {
                if c.id == id {
                    c.state = ContainerState::Exited;
                }
            }
            Ok(())
        }
        async fn remove(&self, _id: &str) -> Result<(), RuntimeError> {
            Err(Self::refuse("remove"))
        }
        async fn has_image(&self, _image: &str) -> Result<bool, RuntimeError> {
            Ok(true)
        }
        async fn pull_image<F>(&self, _image: &str, _progress: F) -> Result<(), RuntimeError>
        where
            F: Fn(&PullProgress) + Send + Sync + 'static,
        {
            Err(Self::refuse("pull"))
        }
        async fn ensure_network(
            &self,
            _spec: &NetworkSpec,
        ) -> Result<warren_runtime::NetworkInfo, RuntimeError> {
            Err(Self::refuse("network"))
        }
    }

    #[tokio::test]
    async fn a_round_reports_an_unhealthy_task_before_it_stops_it() {
        let engine = FakeEngine::default();
        let id = "0123456789abcdef0123456789abcdef".to_string();
        engine.containers.lock().expect("lock").push(ContainerInfo {
            id: id.clone(),
            name: "warren-app-0-abcdefgh".into(),
            service: "app".into(),
            slot: 0,
            epoch: 1,
            generation: 1,
            state: ContainerState::Running,
            status: "Up 3 seconds (unhealthy)".into(),
            ports: vec![],
            exit_code: None,
            health: Some(HealthStatus::Unhealthy),
            detail: "probe failed".into(),
            created_secs: 0,
            ipv6: Default::default(),
            gpus: vec![],
        });
        let want = [task("app:1")];
        let secrets = SecretContext {
            keys: crate::secrets::SecretKeys::generate(&mut rand::rngs::OsRng),
            records: watch::channel(Arc::new(BTreeMap::new())).1,
            root: std::env::temp_dir().join("warren-reconciler-test-no-secrets"),
            allow_host_paths: false,
        };
        let pulls = Pulls::default();
        let metrics = Arc::new(super::super::metrics::Metrics::new(
            watch::channel(Arc::new(crate::machine::Snapshot::default())).1,
        ));
        let mut errors = BTreeMap::new();
        let log = engine.log.clone();
        let before = |listed: &Listed, errors: &BTreeMap<SlotId, String>| {
            let report = reported(&want, listed, errors, &pulls);
            log.lock().expect("lock").push(format!(
                "report {:?} {:?}",
                report[0].state, report[0].health
            ));
        };
        let (actual, _, _) = round(
            &engine,
            &NodeId("a".into()),
            &want,
            &secrets,
            None,
            &mut Supervisor::new(),
            (&pulls, &metrics),
            Millis(0),
            &mut errors,
            before,
        )
        .await
        .expect("round");
        // The stop is counted as a container action.
        let body = metrics.encode().expect("encode");
        assert!(
            body.contains("warren_container_actions_total{action=\"stop\",result=\"ok\"} 1\n"),
            "{body}"
        );
        assert_eq!(
            *engine.log.lock().expect("lock"),
            vec![
                format!(
                    "report {:?} {:?}",
                    TaskState::Running,
                    TaskHealth::Unhealthy
                ),
                format!("stop {id}"),
            ]
        );
        // The round's result is the listing after the stop.
        assert_eq!(actual[0].state, ActualTaskState::Stopped);
    }

    #[test]
    fn an_engine_outage_makes_every_task_unknown_with_the_reason() {
        let engine = EngineStatus {
            reachable: false,
            error: "Docker engine not reachable at unix:///x.sock".into(),
            ..Default::default()
        };
        let s = engine_down(&[task("app:1")], &engine);
        assert_eq!(s[0].state, TaskState::Unknown);
        assert!(s[0].status.contains("engine unreachable"));
        assert_eq!(s[0].error, engine.error);
    }
}
