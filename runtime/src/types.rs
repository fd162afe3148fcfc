//! Plain data: labels, task specs and what the engine reports back.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use warren_core::engine::PublishedPort;

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
/// Label holding the GPUs the container got, device ids joined by `,`; absent without any.
pub const LABEL_GPUS: &str = "warren.gpus";

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

/// What a health check runs inside the container (Docker's native healthcheck: the probe
/// runs in the container's own namespaces, so `127.0.0.1` is the container's loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    /// A shell command run with the image's `/bin/sh -c` (Docker's `CMD-SHELL`); exit 0 is
    /// healthy.
    Shell(String),
    /// `wget -q -O /dev/null http://127.0.0.1:<port><path>` (exec form, no shell): the image
    /// needs `wget` (busybox has it). `path` must start with `/`.
    Http {
        /// TCP port inside the container.
        port: u16,
        /// Request path, e.g. `/healthz`.
        path: String,
    },
    /// A TCP connect to `127.0.0.1:<port>`: `nc -z` where the image's `nc` has it, otherwise
    /// busybox's `nc ... -e true` (Debian's busybox `nc` has no `-z`). The image needs `nc`.
    Tcp {
        /// TCP port inside the container.
        port: u16,
    },
}

/// A container health check: what to run and how often. The engine runs it; its verdict is
/// read back as [`ContainerInfo::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The probe.
    pub test: HealthTest,
    /// Time between probes (at least 1 ms; the engine's granularity is 1 ms).
    pub interval: Duration,
    /// A probe running longer is killed and counts as failed.
    pub timeout: Duration,
    /// Consecutive failures before the container is `unhealthy` (at least 1).
    pub retries: u32,
    /// Failures within this time after the start do not count.
    pub start_period: Duration,
}

impl HealthCheck {
    /// The engine's `Healthcheck.Test` for this probe: `["CMD-SHELL", cmd]` or
    /// `["CMD", "wget", ...]`. The timeout in whole seconds (at least 1) goes to `nc -w`; the
    /// engine enforces the exact timeout on every probe anyway. (`wget -T` is not used:
    /// Debian's busybox 1.35 `wget` crashes with it.)
    pub fn docker_test(&self) -> Vec<String> {
        let secs = self.timeout.as_millis().div_ceil(1000).max(1);
        match &self.test {
            HealthTest::Shell(cmd) => vec!["CMD-SHELL".into(), cmd.clone()],
            HealthTest::Http { port, path } => vec![
                "CMD".into(),
                "wget".into(),
                "-q".into(),
                "-O".into(),
                "/dev/null".into(),
                format!("http://127.0.0.1:{port}{path}"),
            ],
            HealthTest::Tcp { port } => vec![
                "CMD-SHELL".into(),
                format!(
                    "nc -z -w {secs} 127.0.0.1 {port} 2>/dev/null || nc -w {secs} 127.0.0.1 {port} -e true"
                ),
            ],
        }
    }
}

/// A container's health as the engine judges it from its [`HealthCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Within the start period or before the first verdict.
    Starting,
    /// The last probe passed.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// `starting`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// Everything needed to run one replica ("task") of a service on this node.
///
/// The identity fields become the container's labels ([`LABEL_NODE`] … [`LABEL_GENERATION`])
/// and its name (see [`TaskSpec::container_name`]). `Default` gives an empty spec to fill
/// with struct update syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The health check the engine runs; `None` for none (the image's own `HEALTHCHECK`, if
    /// any, is then disabled too, so health is always what the spec says).
    pub health: Option<HealthCheck>,
    /// CPU limit in billionths of a CPU (Docker `NanoCpus`); `None`: no limit.
    pub nano_cpus: Option<u64>,
    /// Memory limit in bytes (Docker `Memory`; swap is not limited separately); `None`: no
    /// limit.
    pub memory_bytes: Option<u64>,
    /// Time between SIGTERM and SIGKILL when the container is stopped or removed, stored in
    /// the container (Docker `StopTimeout`, whole seconds, rounded up) so it also holds for a
    /// container adopted after a node restart; `None`: the engine's default, 10 s.
    pub stop_timeout: Option<Duration>,
    /// A Docker network (by name) to attach the container to instead of the engine's
    /// default bridge, e.g. the node's overlay network
    /// ([`DockerRuntime::ensure_network`](crate::DockerRuntime::ensure_network)); `None`:
    /// the default bridge. Published ports work on either.
    pub network: Option<String>,
    /// DNS servers for the container (Docker `HostConfig.Dns`); empty: the engine's
    /// default. On a user-defined network the container resolves through the engine's
    /// embedded server at `127.0.0.11`, which forwards to these.
    pub dns: Vec<IpAddr>,
    /// A host file bind-mounted read-only at `/etc/resolv.conf`, so the container asks
    /// those servers itself; `None`: the engine writes it. Docker 20.10's embedded server
    /// does not forward to IPv6 servers: through it, every lookup of a name on the overlay
    /// waits 5 s for its timeout before the libc tries the next server (measured).
    pub resolv_conf: Option<String>,
    /// Volumes and host paths to mount ([`TaskMount`](crate::TaskMount)); the Docker volumes
    /// of Warren volumes are created before the container. Empty: none.
    pub mounts: Vec<crate::TaskMount>,
    /// NVIDIA GPUs the container gets, by device id (UUID or index, as `nvidia-smi` names
    /// them): Docker `HostConfig.DeviceRequests` with the `nvidia` driver and the `gpu`
    /// capability. Empty: no GPU (no device request at all).
    pub gpus: Vec<String>,
}

/// Where a task's secrets appear inside its container.
pub const SECRETS_MOUNT: &str = "/run/secrets";

impl TaskSpec {
    /// The Docker container name for this task: `warren-{service}-{slot}-g{generation}-{last
    /// 8 chars of node}` (the whole node string when it is shorter). Characters Docker does
    /// not allow in names (anything but `[A-Za-z0-9_.-]`) are replaced by `-`. The generation
    /// is part of the name so that two generations of one slot can run side by side on one
    /// node (a start-first or blue/green rollout, issue 15): creating the new one never
    /// force-removes the old one for its name.
    pub fn container_name(&self) -> String {
        container_name(&self.service, self.slot, self.generation, &self.node)
    }
}

/// The container name for (`service`, `slot`) of spec generation `generation` on `node`; see
/// [`TaskSpec::container_name`].
pub fn container_name(service: &str, slot: u32, generation: u64, node: &str) -> String {
    let count = node.chars().count();
    let suffix: String = node.chars().skip(count.saturating_sub(8)).collect();
    format!("warren-{service}-{slot}-g{generation}-{suffix}")
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
    /// Exit code of the last run, for an `exited` or `dead` container; `None` for one that
    /// runs or never ran.
    pub exit_code: Option<i64>,
    /// The engine's health verdict; `None` for a container without a health check.
    pub health: Option<HealthStatus>,
    /// What the engine says went wrong, for people: the last failed probe's output when
    /// unhealthy, `OOM killed`, or the engine's error for a failed start; empty otherwise. At
    /// most [`MAX_DETAIL_BYTES`] bytes.
    pub detail: String,
    /// When the engine created the container, in Unix seconds by the engine's (this host's)
    /// clock; 0 when unknown. A restart keeps it: it says how long the task has been this
    /// node's, which is what the heal's keep rule compares (DESIGN §5).
    pub created_secs: i64,
    /// The container's global IPv6 address on each network where it has one, by network
    /// name (a running container on an IPv6-enabled network; empty otherwise).
    pub ipv6: BTreeMap<String, Ipv6Addr>,
    /// The GPUs it was created with (from [`LABEL_GPUS`]; empty when absent), at most
    /// [`warren_crdt::MAX_SERVICE_GPUS`].
    pub gpus: Vec<String>,
}

/// Longest [`ContainerInfo::detail`], in bytes.
pub const MAX_DETAIL_BYTES: usize = 256;

/// How far an image pull has got, summed over its layers as the engine reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullProgress {
    /// Layers the engine has announced so far.
    pub layers: u32,
    /// Layers complete (downloaded and extracted, or already present).
    pub layers_done: u32,
    /// Bytes downloaded so far, over the layers whose size is known.
    pub bytes_done: u64,
    /// Size of the layers whose size is known so far, in bytes (grows as layers start).
    pub bytes_total: u64,
}

impl PullProgress {
    /// Downloaded share of the known bytes, 0–100; `None` before any size is known.
    pub fn percent(&self) -> Option<u8> {
        (self.bytes_total > 0)
            .then(|| (self.bytes_done.min(self.bytes_total) * 100 / self.bytes_total) as u8)
    }
}

impl fmt::Display for PullProgress {
    /// `2/5 layers, 3.1 MiB of 12.0 MiB (25%)`, or `starting` before the first layer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.layers == 0 {
            return f.write_str("starting");
        }
        write!(f, "{}/{} layers", self.layers_done, self.layers)?;
        if let Some(percent) = self.percent() {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            write!(
                f,
                ", {:.1} MiB of {:.1} MiB ({percent}%)",
                mib(self.bytes_done),
                mib(self.bytes_total)
            )?;
        }
        Ok(())
    }
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
    fn container_name_uses_the_generation_and_last_8_chars() {
        assert_eq!(
            container_name("web", 3, 2, "12D3KooWAbCdEfGhIjKl"),
            "warren-web-3-g2-EfGhIjKl"
        );
        assert_eq!(
            container_name("web", 0, 1, "short"),
            "warren-web-0-g1-short"
        );
        assert_eq!(container_name("a b/c", 1, 7, "n"), "warren-a-b-c-1-g7-n");
        assert_ne!(
            container_name("web", 0, 1, "n"),
            container_name("web", 0, 2, "n"),
            "two generations of one slot can run side by side"
        );
    }

    #[test]
    fn health_tests_for_each_probe() {
        let check = |test| HealthCheck {
            test,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(1_500),
            retries: 3,
            start_period: Duration::ZERO,
        };
        assert_eq!(
            check(HealthTest::Shell("test -f /ok".into())).docker_test(),
            vec!["CMD-SHELL", "test -f /ok"]
        );
        assert_eq!(
            check(HealthTest::Http {
                port: 8080,
                path: "/healthz".into()
            })
            .docker_test(),
            vec![
                "CMD",
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1:8080/healthz"
            ]
        );
        assert_eq!(
            check(HealthTest::Tcp { port: 6379 }).docker_test(),
            vec![
                "CMD-SHELL",
                "nc -z -w 2 127.0.0.1 6379 2>/dev/null || nc -w 2 127.0.0.1 6379 -e true"
            ]
        );
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
