//! Warren's container runtime: the [`ContainerRuntime`] trait a node drives, and
//! [`DockerRuntime`], its implementation over a local Docker engine (via bollard).
//!
//! # Model
//!
//! A node runs *tasks*: replica `slot` of service `service`, described by a [`TaskSpec`].
//! Each task is one container. The container carries its whole identity in labels —
//! [`LABEL_NODE`] (the owning node's PeerId), [`LABEL_SERVICE`], [`LABEL_SLOT`],
//! [`LABEL_EPOCH`], [`LABEL_GENERATION`] — so the engine itself is the node's record of
//! what runs: after a restart the node calls [`ContainerRuntime::list_tasks`] and gets
//! every container it owns back as a [`ContainerInfo`], running or not, with the identity
//! parsed. Containers whose labels do not parse are skipped with a warning rather than
//! failing the listing.
//!
//! The runtime does no scheduling and sets no Docker restart policy: the node's reconcile
//! loop compares the desired tasks with [`list_tasks`](ContainerRuntime::list_tasks) and
//! calls [`create_and_start`](ContainerRuntime::create_and_start),
//! [`start`](ContainerRuntime::start) (for an exited container),
//! [`stop`](ContainerRuntime::stop) (for an unhealthy one) or
//! [`remove`](ContainerRuntime::remove) (SIGTERM, the container's stop timeout, SIGKILL,
//! then delete; idempotent). Counting restarts and backing off is the node's decision.
//!
//! # Health, limits, stop timeout
//!
//! A [`TaskSpec`] may carry a [`HealthCheck`]: it becomes the container's Docker
//! healthcheck, so the engine runs the probe inside the container's own namespaces (an HTTP
//! probe runs `wget`, a TCP probe `nc`, both in the image — busybox has them). The verdict
//! comes back in [`ContainerInfo::health`] (read with `inspect`), the last failed probe's
//! output in [`ContainerInfo::detail`]; [`DockerRuntime::health_events`] streams each
//! change of verdict as the engine announces it ([`HealthEvent`]). `nano_cpus` and `memory_bytes` become the
//! container's `NanoCpus` and `Memory`; `stop_timeout` its `StopTimeout`.
//!
//! Container names are `warren-{service}-{slot}-g{generation}-{last 8 chars of node}`
//! ([`TaskSpec::container_name`]: two generations of a slot may run side by side during a
//! start-first rollout); a stale container holding the name is force-removed and the create
//! retried once. Ports ([`PortMapping`], TCP only) are published on `127.0.0.1`
//! only; with `host_port: None` the engine picks a free port, reported back in
//! [`ContainerInfo::ports`].
//!
//! # Images
//!
//! Image references are checked offline with [`validate_image_reference`] (Docker's
//! reference grammar) before anything reaches the engine.
//! [`pull_image`](ContainerRuntime::pull_image) pulls with progress ([`PullProgress`],
//! summed over layers); [`create_and_start`](ContainerRuntime::create_and_start) pulls a
//! missing image once itself. When a pull fails — the normal case on an edge node without
//! registry access — the error is [`RuntimeError::ImageUnavailable`] with the engine's
//! reason, and the image has to be loaded onto the node by other means:
//! [`DockerRuntime::load_image`] streams a `docker save` tarball into the engine.
//!
//! # Overlay network
//!
//! [`DockerRuntime::ensure_network`] creates (or checks) a node's IPv6 bridge network on its
//! container subnet ([`NetworkSpec`], named by [`overlay_network_name`]); a task joins it
//! through [`TaskSpec::network`], with [`TaskSpec::dns`] as its DNS servers, and its address
//! comes back in [`ContainerInfo::ipv6`]. A network of that name with another subnet is
//! [`RuntimeError::NetworkConflict`]. [`forward`] sets up the host's side: IPv6 forwarding and
//! the `ip6tables` rules between the bridge and the overlay interface.
//!
//! # Logs
//!
//! [`DockerRuntime::read_logs`] reads a container's stdout and stderr as timestamped
//! [`LogLine`]s (lossy UTF-8, each line bounded), keeping what the caller's filter keeps and
//! stopping at the limits of a [`LogQuery`]: the node serves `warren-cli service logs` with it.
//!
//! # Engine compatibility
//!
//! [`DockerRuntime::connect`] negotiates the API version (bollard 0.21 defaults to 1.53;
//! Debian 12's engine 20.10 speaks at most 1.41) and pings the engine, so a missing engine
//! fails early with [`RuntimeError::Unavailable`], which names the endpoint and hints at
//! `dockerd`. Later connection failures map to `Unavailable` as well; refusals by a
//! reachable engine map to [`RuntimeError::Engine`].
//!
//! # Example
//!
//! ```no_run
//! use warren_runtime::{ContainerRuntime, DockerRuntime, PortMapping, TaskSpec};
//!
//! # async fn run() -> Result<(), warren_runtime::RuntimeError> {
//! let rt = DockerRuntime::connect(None).await?;
//! let spec = TaskSpec {
//!     node: "12D3KooWExampleNodeId".into(),
//!     service: "web".into(),
//!     slot: 0,
//!     epoch: 1,
//!     generation: 1,
//!     image: "warren/busybox:latest".into(),
//!     command: vec![],
//!     env: Default::default(),
//!     ports: vec![PortMapping { container_port: 80, host_port: None }],
//!     memory_bytes: Some(64 << 20),
//!     ..Default::default()
//! };
//! let id = rt.create_and_start(&spec).await?;
//! for task in rt.list_tasks(&spec.node).await? {
//!     println!("{} {} {:?}", task.name, task.state, task.ports);
//! }
//! rt.remove(&id).await?;
//! # Ok(())
//! # }
//! ```

mod docker;
mod error;
mod events;
pub mod forward;
mod image_platform;
mod logs;
mod network;
mod types;
mod volumes;

use std::future::Future;
use std::sync::Arc;

pub use docker::validate_image_reference;
pub use docker::DockerRuntime;
pub use docker::MAX_STOP_TIMEOUT_SECS;
pub use error::RuntimeError;
pub use events::HealthEvent;
pub use logs::{parse_rfc3339_nanos, LogRead, REORDER_LOOKAHEAD_LINES, REORDER_WINDOW_NS};
pub use network::{
    overlay_bridge_name, overlay_network_name, NetworkInfo, NetworkSpec, LABEL_NETWORK,
};
pub use types::{
    container_name, ContainerInfo, ContainerState, EngineInfo, HealthCheck, HealthStatus,
    HealthTest, PortMapping, PullProgress, TaskSpec, LABEL_EPOCH, LABEL_GENERATION, LABEL_GPUS,
    LABEL_NODE, LABEL_SERVICE, LABEL_SLOT, MAX_DETAIL_BYTES, SECRETS_MOUNT,
};
/// The plain data the engine and the node's core share, defined in `warren-core` (which
/// links no engine client) and named here as they always were.
pub use volumes::{docker_volume_name, MountSource, TaskMount, LABEL_VOLUME};
pub use warren_core::engine::{truncate_text, LogLine, LogQuery, LogStream, PublishedPort};

/// The container runtime a node drives. Implemented by [`DockerRuntime`]; a simulator can
/// provide its own. Also implemented for `Arc<R>` so one runtime can be shared.
///
/// All methods are safe to call concurrently. Container ids are the engine's ids (Docker:
/// 64 hex characters); methods taking an id also accept a container name.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Every container (running or not) labelled `warren.node=<node>`, sorted by service,
    /// slot and name. Containers whose labels do not parse (missing or malformed
    /// `warren.service` / `warren.slot`, malformed epoch/generation) are skipped with a
    /// `tracing::warn`, never an error.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] if the engine cannot be reached,
    /// [`RuntimeError::Engine`] if it refuses the listing.
    fn list_tasks(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;

    /// Creates and starts the task's container; returns the container id.
    ///
    /// The image reference is validated first; a missing image is pulled once. A stale
    /// container with the same name ([`TaskSpec::container_name`]) is force-removed and the
    /// create retried once. If the start fails (e.g. the host port is taken) the new
    /// container is removed again before the error is returned.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidImage`] for a malformed reference,
    /// [`RuntimeError::ImageUnavailable`] when the image is absent and cannot be pulled,
    /// [`RuntimeError::Unavailable`] / [`RuntimeError::Engine`] otherwise.
    fn create_and_start(
        &self,
        spec: &TaskSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Starts an existing (exited or created) container. Starting a running container is
    /// a no-op success.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] (status 404 for an unknown id, see
    /// [`RuntimeError::status_code`]) or [`RuntimeError::Unavailable`].
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops the container and keeps it (its logs and exit code stay readable): SIGTERM,
    /// then SIGKILL once the container's stop timeout ([`TaskSpec::stop_timeout`], the
    /// engine's 10 s if none was set) has passed. Returns when the container has stopped.
    /// Stopping a stopped or missing container is `Ok(())`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] or [`RuntimeError::Engine`].
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops the container (SIGTERM, then SIGKILL after its stop timeout as in
    /// [`stop`](ContainerRuntime::stop)) and removes it with its anonymous volumes.
    /// Idempotent: a container that is already gone (or already being removed) is `Ok(())`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] or [`RuntimeError::Engine`] when removal fails.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Whether `image` (a reference as in [`TaskSpec::image`]) is in the engine's local
    /// store.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] or [`RuntimeError::Engine`].
    fn has_image(&self, image: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send;

    /// Pulls `image` from its registry (a name without tag or digest pulls `latest`),
    /// calling `progress` with the running totals after every update the engine sends.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidImage`] for a malformed reference,
    /// [`RuntimeError::ImageUnavailable`] with the engine's reason when the pull fails (no
    /// registry reachable, unknown repository, access denied),
    /// [`RuntimeError::Unavailable`] when the engine goes away.
    fn pull_image<F>(
        &self,
        image: &str,
        progress: F,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send
    where
        F: Fn(&PullProgress) + Send + Sync + 'static;

    /// Creates the IPv6 network `spec` describes or checks the existing one of that name
    /// (see [`DockerRuntime::ensure_network`]); tasks join it through
    /// [`TaskSpec::network`].
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NetworkConflict`] for a network of that name with another subnet,
    /// [`RuntimeError::Engine`] / [`RuntimeError::Unavailable`].
    fn ensure_network(
        &self,
        spec: &NetworkSpec,
    ) -> impl Future<Output = Result<NetworkInfo, RuntimeError>> + Send;

    /// The Warren volumes node `node` holds on this engine, as (Warren volume name, engine
    /// volume name). A runtime without volumes holds none (the default).
    fn list_volumes(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, RuntimeError>> + Send {
        let _ = node;
        async { Ok(Vec::new()) }
    }

    /// Deletes engine volume `name` and its data; `Ok` when it does not exist. A runtime
    /// without volumes has nothing to delete (the default).
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let _ = name;
        async { Ok(()) }
    }
}

impl<R: ContainerRuntime> ContainerRuntime for Arc<R> {
    fn list_tasks(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send {
        (**self).list_tasks(node)
    }

    fn create_and_start(
        &self,
        spec: &TaskSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        (**self).create_and_start(spec)
    }

    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).start(id)
    }

    fn stop(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).stop(id)
    }

    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).remove(id)
    }

    fn has_image(&self, image: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send {
        (**self).has_image(image)
    }

    fn pull_image<F>(
        &self,
        image: &str,
        progress: F,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send
    where
        F: Fn(&PullProgress) + Send + Sync + 'static,
    {
        (**self).pull_image(image, progress)
    }

    fn ensure_network(
        &self,
        spec: &NetworkSpec,
    ) -> impl Future<Output = Result<NetworkInfo, RuntimeError>> + Send {
        (**self).ensure_network(spec)
    }

    fn list_volumes(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, RuntimeError>> + Send {
        (**self).list_volumes(node)
    }

    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).remove_volume(name)
    }
}
