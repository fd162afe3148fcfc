//! Plain data: labels, task specs and what the engine reports back.

use std::collections::BTreeMap;
use std::fmt;

/// Label holding the full PeerId string of the node that owns the container. Every
/// container Warren creates carries it; [`ContainerRuntime::list_tasks`](crate::ContainerRuntime::list_tasks)
/// filters on it.
pub const LABEL_NODE: &str = "warren.node";
/// Label holding the service name the container belongs to.
pub const LABEL_SERVICE: &str = "warren.service";
/// Label holding the replica slot number, decimal `u32` (e.g. `"0"`).
pub const LABEL_SLOT: &str = "warren.slot";
/// Label holding the scheduling epoch the container was started under, decimal `u64`.
pub const LABEL_EPOCH: &str = "warren.epoch";
/// Label holding the service spec generation the container runs, decimal `u64`.
pub const LABEL_GENERATION: &str = "warren.generation";

/// One TCP port to publish: `container_port` inside the container, bound on the host at
/// `127.0.0.1:host_port`. `host_port: None` lets the engine pick a free host port (read it
/// back from [`ContainerInfo::ports`]). Only TCP is supported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// Port the process listens on inside the container (TCP).
    pub container_port: u16,
    /// Host port on 127.0.0.1, or `None` for an engine-chosen free port.
    pub host_port: Option<u16>,
}

/// Everything needed to run one replica ("task") of a service on this node.
///
/// The identity fields become the container's labels ([`LABEL_NODE`] … [`LABEL_GENERATION`])
/// and its name (see [`TaskSpec::container_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Full PeerId string of the node that runs the task (value of [`LABEL_NODE`]).
    pub node: String,
    /// Service name (value of [`LABEL_SERVICE`]).
    pub service: String,
    /// Replica slot, 0-based (value of [`LABEL_SLOT`]).
    pub slot: u32,
    /// Scheduling epoch (value of [`LABEL_EPOCH`]).
    pub epoch: u64,
    /// Service spec generation (value of [`LABEL_GENERATION`]).
    pub generation: u64,
    /// Docker image reference, e.g. `warren/busybox:latest`; checked with
    /// [`validate_image_reference`](crate::validate_image_reference) before use.
    pub image: String,
    /// Command and arguments (Docker `Cmd`); empty means the image's default `CMD`.
    pub command: Vec<String>,
    /// Environment variables, passed as `KEY=VALUE`.
    pub env: BTreeMap<String, String>,
    /// TCP ports to publish on 127.0.0.1.
    pub ports: Vec<PortMapping>,
    /// A host directory (on a tmpfs) bind-mounted read-only at [`SECRETS_MOUNT`]; `None` for
    /// a task without secrets. Only its path appears in `docker inspect`, never its files.
    pub secrets_dir: Option<String>,
}

/// Where a task's secrets appear inside its container.
pub const SECRETS_MOUNT: &str = "/run/secrets";

impl TaskSpec {
    /// The Docker container name for this task: `warren-{service}-{slot}-{last 8 chars of
    /// node}` (the whole node string when it is shorter). Characters Docker does not allow
    /// in names (anything but `[A-Za-z0-9_.-]`) are replaced by `-`.
    pub fn container_name(&self) -> String {
        container_name(&self.service, self.slot, &self.node)
    }
}

/// The container name for (`service`, `slot`) on `node`; see [`TaskSpec::container_name`].
pub fn container_name(service: &str, slot: u32, node: &str) -> String {
    let count = node.chars().count();
    let suffix: String = node.chars().skip(count.saturating_sub(8)).collect();
    format!("warren-{service}-{slot}-{suffix}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A container's lifecycle state as the engine reports it. Serialized lowercase
/// (`"running"`, `"exited"`, …), matching Docker's own state strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created but never started.
    Created,
    /// Its main process is running.
    Running,
    /// Frozen with `docker pause`.
    Paused,
    /// The engine is restarting it (Warren sets no restart policy, so rarely seen).
    Restarting,
    /// Being removed.
    Removing,
    /// Its main process ended (exit code in [`ContainerInfo::status`]); can be started again.
    Exited,
    /// Removal failed half-way; only removal is possible.
    Dead,
    /// The engine reported a state this crate does not know.
    Unknown,
}

impl ContainerState {
    /// Parses Docker's state string (`"created"`, `"running"`, `"paused"`, `"restarting"`,
    /// `"removing"`, `"exited"`, `"dead"`); anything else is [`ContainerState::Unknown`].
    /// (`"stopping"`, reported by newer engines while a stop is in progress, maps to
    /// [`ContainerState::Running`]: the process is still alive.)
    pub fn from_docker(state: &str) -> Self {
        match state {
            "created" => ContainerState::Created,
            "running" | "stopping" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }

    /// The lowercase name, the same string serde produces (e.g. `"running"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TCP port the engine actually published: `host_ip:host_port` on the host forwards to
/// `container_port` in the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedPort {
    /// Port inside the container.
    pub container_port: u16,
    /// Host address the port is bound on, e.g. `"127.0.0.1"` (empty if the engine did not say).
    pub host_ip: String,
    /// Host port, chosen by the engine when the mapping's `host_port` was `None`.
    pub host_port: u16,
}

/// One Warren container as the engine reports it, identity parsed from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full container id (64 hex characters).
    pub id: String,
    /// Container name without Docker's leading `/`, e.g. `warren-web-0-AbCdEfGh`.
    pub name: String,
    /// From [`LABEL_SERVICE`].
    pub service: String,
    /// From [`LABEL_SLOT`].
    pub slot: u32,
    /// From [`LABEL_EPOCH`] (0 when the label is absent).
    pub epoch: u64,
    /// From [`LABEL_GENERATION`] (0 when the label is absent).
    pub generation: u64,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Docker's human text, e.g. `"Up 3 seconds"`, `"Exited (137) 2 seconds ago"`.
    pub status: String,
    /// Published TCP ports, sorted by container port then host port.
    pub ports: Vec<PublishedPort>,
}

/// Version of the engine a [`DockerRuntime`](crate::DockerRuntime) talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version, e.g. `"20.10.24+dfsg1"` (`"unknown"` if not reported).
    pub version: String,
    /// Highest API version the engine speaks, e.g. `"1.41"` (`"unknown"` if not reported).
    pub api_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_name_uses_last_8_chars() {
        assert_eq!(
            container_name("web", 3, "12D3KooWAbCdEfGhIjKl"),
            "warren-web-3-EfGhIjKl"
        );
        assert_eq!(container_name("web", 0, "short"), "warren-web-0-short");
        assert_eq!(container_name("a b/c", 1, "n"), "warren-a-b-c-1-n");
    }

    #[test]
    fn state_strings_round_trip() {
        for s in [
            ContainerState::Created,
            ContainerState::Running,
            ContainerState::Paused,
            ContainerState::Restarting,
            ContainerState::Removing,
            ContainerState::Exited,
            ContainerState::Dead,
        ] {
            assert_eq!(ContainerState::from_docker(s.as_str()), s);
        }
        assert_eq!(
            ContainerState::from_docker("weird"),
            ContainerState::Unknown
        );
    }
}
