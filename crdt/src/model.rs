//! Typed values read from and written to the desired-state document.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::placement::{Placement, Platform};
use crate::CrdtError;

/// A node's identity as stored in the document: the base58 text of its libp2p `PeerId`.
///
/// The crate does not depend on libp2p; the node converts at its edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last 8 characters, enough to tell members apart in logs and tables.
    pub fn short(&self) -> &str {
        let s = self.0.as_str();
        let start = s.len().saturating_sub(8);
        s.get(start..).unwrap_or(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service name: 1 to 63 characters of `[a-z0-9-]`, starting with a letter or digit.
///
/// The same rule as a DNS label, so a name is always safe in a container name, a label value
/// and a URL path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    /// Validates `name`. Errors: [`CrdtError::InvalidName`] with the reason.
    pub fn new(name: impl Into<String>) -> Result<Self, CrdtError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > 63 {
            Some("must be at most 63 characters")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Some("may only contain lowercase letters, digits and '-'")
        } else if name.starts_with('-') || name.ends_with('-') {
            Some("must not start or end with '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(CrdtError::InvalidName {
                name,
                reason: reason.to_string(),
            }),
            None => Ok(Self(name)),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceName {
    type Error = CrdtError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ServiceName> for String {
    fn from(value: ServiceName) -> Self {
        value.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease epoch: the fencing token of the scheduling lease. Strictly increases with every claim.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch a new claim over this one uses.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `cluster { id, name, created_at }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Random id chosen at `--init`; topic names and join tokens carry it.
    pub id: String,
    /// Operator-chosen name.
    pub name: String,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

/// Cluster-wide settings an operator changes at run time (`warren-cli cluster set`), stored
/// as scalar keys of the document's `cluster` map so that every peer, on any side of a
/// partition, obeys the same value once it has merged it.
///
/// Each setting is its own key with a default that applies while the key is absent (a cluster
/// made before the setting existed) or holds a value this version cannot read (one written by
/// a newer version): old documents and mixed versions keep working.
///
/// Merge: last writer wins per key. A value set after seeing another replaces it; of two
/// concurrent writes of one setting, every replica keeps the same one (Automerge's
/// deterministic choice: the greater Lamport counter, then the greater actor id), which is
/// not necessarily the later by wall clock. Concurrent writes of *different* settings both
/// survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// Whether the lease holder restores spread after a heal or a join by moving replicas
    /// start-first, one per service at a time (DESIGN §5). Default `true`. With `false` no
    /// replica is ever moved for balance; slots are still placed, re-placed off unreachable
    /// members and judged after a heal.
    pub rebalance: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self { rebalance: true }
    }
}

/// One cluster setting with its new value: the unit [`DesiredState::set_cluster_settings`]
/// writes (only the settings named are written, so concurrent changes of others survive).
///
/// [`DesiredState::set_cluster_settings`]: crate::DesiredState::set_cluster_settings
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterSetting {
    /// [`ClusterSettings::rebalance`].
    Rebalance(bool),
}

impl ClusterSetting {
    /// The setting's name, as the document, the API and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            ClusterSetting::Rebalance(_) => "rebalance",
        }
    }
}

impl fmt::Display for ClusterSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterSetting::Rebalance(on) => {
                write!(f, "{}={}", self.name(), if *on { "on" } else { "off" })
            }
        }
    }
}

/// A member's admission state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Admitted and eligible for tasks.
    Active,
    /// Admitted; takes no new tasks.
    Draining,
    /// Removed; its messages are dropped.
    Removed,
}

impl MemberState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Draining => "draining",
            MemberState::Removed => "removed",
        }
    }

    pub(crate) fn parse(s: &str) -> MemberState {
        match s {
            "draining" => MemberState::Draining,
            "removed" => MemberState::Removed,
            _ => MemberState::Active,
        }
    }
}

/// `members.<peer_id>`: a node admitted to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id (its PeerId).
    pub id: NodeId,
    /// Operator-chosen node name (`--name`).
    pub name: String,
    /// Multiaddrs the member listens on, as text, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    /// `--label k=v` values, used by placement constraints (`node.labels.KEY`): the join
    /// token's, then the node's own `--label` flags (which win per key) at every start, and
    /// `node update --label-add/--label-rm` at run time, each key merged on its own.
    pub labels: BTreeMap<String, String>,
    /// `--capability NAME` values the node announces at start (`node.capabilities`
    /// constraints); empty in records written before members announced them.
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
    /// The node's CPU architecture and OS, announced by the node itself at start
    /// (`node.arch`, `node.os` constraints); `unknown` until it has.
    #[serde(default)]
    pub platform: Platform,
    /// Who admitted it (itself for the node that ran `--init`).
    pub admitted_by: NodeId,
    /// Unix time in milliseconds.
    pub admitted_at: i64,
    /// Admission state.
    pub state: MemberState,
    /// `node update --availability`: whether the scheduler places tasks here and keeps them
    /// ([`crate::Availability`]; separate from the admission state). `active` in records
    /// written before it existed.
    #[serde(default)]
    pub availability: crate::Availability,
}

/// A member's place on the overlay (DESIGN §4): its WireGuard public key, the addresses
/// the overlay's rule derives from it (`warren_core::overlay`) and the UDP port its WireGuard
/// interface listens on. Written by the member itself, the fields in one change, so they
/// always come from the same key; stored beside the typed [`Member`] record
/// (`members.<id>.{wg_public_key, overlay_ip, container_subnet, wg_port}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberOverlay {
    /// The WireGuard public key, base64 (as `wg show` prints it).
    pub wg_public_key: String,
    /// The member's own address on the overlay (IPv6, text).
    pub overlay_ip: String,
    /// The subnet its tasks get addresses from (IPv6 CIDR, text).
    pub container_subnet: String,
    /// The UDP port its WireGuard interface listens on (`--overlay-port`, or the free one
    /// it took); 0 while it has none (not up yet, or it could not come up). Records written
    /// before the field existed read as [`DEFAULT_WG_PORT`].
    #[serde(default = "default_wg_port")]
    pub wg_port: u16,
}

/// WireGuard's usual UDP port (51820): a member's when its record names none.
pub const DEFAULT_WG_PORT: u16 = 51820;

fn default_wg_port() -> u16 {
    DEFAULT_WG_PORT
}

/// A port a service publishes: container port, and a host port on 127.0.0.1 or `None` for one
/// the engine picks (so several replicas on one engine never collide).
///
/// In [`PublishMode::Ingress`] (`--publish 8080:80`, the CLI's default for a fixed port) the
/// fixed port is the routing mesh's: every node listens on `--ingress-addr:host_port` and
/// forwards each connection to a task of the service; the task's container itself publishes
/// `container_port` on an engine-chosen port of 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// TCP port inside the container.
    pub container_port: u16,
    /// Fixed host port, or `None` for an engine-chosen one.
    pub host_port: Option<u16>,
    /// Who answers `host_port`: each task's container (`host`, also the reading of specs
    /// written before the field existed) or the routing mesh on every node (`ingress`, which
    /// needs a fixed `host_port`).
    #[serde(default)]
    pub mode: PublishMode,
}

impl PortSpec {
    /// The routing mesh's port, if this is an ingress port with a fixed published port.
    pub fn ingress_port(&self) -> Option<u16> {
        match self.mode {
            PublishMode::Ingress => self.host_port,
            PublishMode::Host => None,
        }
    }
}

/// How a published port is answered (`--publish ...,mode=ingress|host`), as in Docker Swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// The routing mesh: every node accepts the published port and forwards to any task.
    Ingress,
    /// Each task's container publishes the port on its own node (the meaning before the
    /// routing mesh existed, hence the default when a stored spec does not say).
    #[default]
    Host,
}

impl PublishMode {
    /// `ingress` or `host`, as the CLI and API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
}

/// What an operator asked to run: `services.<name>.spec`.
///
/// Every field added after the first release has a serde default (and a default when the
/// document lacks its key), so specs written by older nodes still read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Docker image reference.
    pub image: String,
    /// Number of replicas (slots `0..replicas`).
    pub replicas: u32,
    /// Command and arguments; empty means the image's default.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Secrets mounted read-only at `/run/secrets/<target>` in every task.
    #[serde(default)]
    pub secrets: Vec<SecretMount>,
    /// The health check every task runs inside its container; `None`: no check (a running
    /// container counts as healthy).
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// When a task whose container stopped or turned unhealthy is started again.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// CPU and memory limits of each task's container.
    #[serde(default)]
    pub resources: Resources,
    /// Milliseconds between SIGTERM and SIGKILL when a task is stopped; `None`: Docker's
    /// default (10 s). The engine counts whole seconds: the value is rounded up.
    #[serde(default)]
    pub stop_timeout_ms: Option<u64>,
    /// What happens to the slots of a member that cannot be reached (`--on-partition`,
    /// `--reschedule-after`); `reschedule` after the down timeout by default.
    #[serde(default)]
    pub partition: PartitionPolicy,
    /// Where its replicas may go and how they spread (`--constraint`, `--placement-pref`,
    /// `--max-replicas-per-node`); anywhere, spread over nodes, by default.
    #[serde(default)]
    pub placement: Placement,
    /// Volumes and host paths mounted into every task (`--mount`); none by default. A
    /// service mounting a volume runs only on the volume's node ([`crate::Volume`]).
    #[serde(default)]
    pub mounts: Vec<crate::volume::Mount>,
    /// Whole GPUs each task reserves (`--gpus N`): a slot goes only to a node that reports
    /// N GPUs no other slot holds, and its task gets those devices. 0 (the default): none.
    #[serde(default)]
    pub gpus: u32,
    /// `replicated` (the default: `replicas` slots) or `global` (one task on every eligible
    /// member, `--mode global`; `replicas` must then be 0).
    #[serde(default)]
    pub mode: ServiceMode,
    /// How an update rolls out (`--update-*`); Swarm's defaults. Not part of what a task
    /// runs: changing it alone starts no rollout.
    #[serde(default)]
    pub update: crate::rollout::UpdatePolicy,
    /// How a rollback rolls out (`--rollback-*`); Swarm's defaults.
    #[serde(default)]
    pub rollback: crate::rollout::UpdatePolicy,
    /// The deployment strategy of the next update (`--deploy rolling|canary|blue-green`).
    #[serde(default)]
    pub deploy: crate::rollout::Deploy,
}

impl ServiceSpec {
    /// Whether tasks of `self` and of `other` run the same containers: equal but for the
    /// fields the reconcile loop and the scheduler apply to running tasks (replica count,
    /// restart policy, placement) and the rollout's own policy (update, rollback, deploy).
    /// A spec change that keeps this `true` needs no new containers and starts no rollout;
    /// a change that makes it `false` increases the service's generation.
    pub fn same_tasks(&self, other: &ServiceSpec) -> bool {
        ServiceSpec {
            replicas: other.replicas,
            restart: other.restart,
            placement: other.placement.clone(),
            update: other.update,
            rollback: other.rollback,
            deploy: other.deploy,
            ..self.clone()
        } == *other
    }
}

/// How many tasks a service runs (`--mode`), as in Docker Swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// `replicas` tasks, slots `0..replicas`, placed by the scheduler.
    #[default]
    Replicated,
    /// One task on every eligible member: the lease holder hands each one a slot index of its
    /// own (the lowest free), and the slot stays on that member.
    Global,
}

impl ServiceMode {
    /// `replicated` or `global`, as the CLI and API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Replicated => "replicated",
            ServiceMode::Global => "global",
        }
    }
}

impl ServiceSpec {
    /// The number of slots the replica count asks for: `replicas`, at most [`MAX_REPLICAS`];
    /// 0 for a global service, whose slots exist only as the lease holder hands them out
    /// (one per eligible member). A spec above the bound fails [`ServiceSpec::validate`] and
    /// never runs, but one can arrive from a peer's document; every loop over a service's
    /// slots uses this count so that such a spec cannot make a node iterate billions of slots.
    pub fn slot_count(&self) -> u32 {
        match self.mode {
            ServiceMode::Replicated => self.replicas.min(MAX_REPLICAS),
            ServiceMode::Global => 0,
        }
    }

    /// Whether the service wants slot `index` while an assignment names it: below the replica
    /// count for a replicated service; any index below [`MAX_REPLICAS`] for a global one (its
    /// slots are the ones the lease holder handed out; it clears those it no longer wants).
    pub fn wants_slot(&self, index: u32) -> bool {
        match self.mode {
            ServiceMode::Replicated => index < self.replicas,
            ServiceMode::Global => index < MAX_REPLICAS,
        }
    }

    /// Checks the fields that have limits beyond their types: the image reference (Docker's
    /// grammar, [`crate::parse_image_reference`]), the health check, restart policy,
    /// resources, stop timeout and placement (see each type's `validate`).
    ///
    /// Errors: [`CrdtError::InvalidSpec`] naming the field and the rule it breaks.
    pub fn validate(&self) -> Result<(), CrdtError> {
        if let Err(reason) = crate::image_ref::parse_image_reference(&self.image) {
            return Err(invalid("image", reason));
        }
        if self.replicas > MAX_REPLICAS {
            return Err(invalid(
                "replicas",
                format!("must be at most {MAX_REPLICAS}"),
            ));
        }
        if self.mode == ServiceMode::Global && self.replicas != 0 {
            return Err(invalid(
                "replicas",
                "a global service runs one task on every eligible node: --replicas does not \
                 apply with --mode global",
            ));
        }
        if self.mode == ServiceMode::Global && self.gpus != 0 {
            return Err(invalid(
                "gpus",
                "a global service cannot reserve GPUs yet: use a replicated service with \
                 --constraint node.capabilities==gpu",
            ));
        }
        if self.command.len() > MAX_ARGS
            || self
                .command
                .iter()
                .any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
        {
            return Err(invalid(
                "command",
                format!(
                    "at most {MAX_ARGS} arguments of at most {MAX_ARG_BYTES} bytes, without NUL"
                ),
            ));
        }
        if self.env.len() > MAX_ENV {
            return Err(invalid("env", format!("at most {MAX_ENV} variables")));
        }
        for (key, value) in &self.env {
            if key.is_empty()
                || key.len() > MAX_ENV_KEY_BYTES
                || key.contains('=')
                || key.contains('\0')
            {
                return Err(invalid(
                    "env",
                    format!(
                        "invalid environment variable name {key:?}: 1 to {MAX_ENV_KEY_BYTES} \
                         bytes without '=' or NUL"
                    ),
                ));
            }
            if value.len() > MAX_ARG_BYTES || value.contains('\0') {
                return Err(invalid(
                    "env",
                    format!("value of {key:?} must be at most {MAX_ARG_BYTES} bytes without NUL"),
                ));
            }
        }
        if self.ports.len() > MAX_PORTS {
            return Err(invalid("ports", format!("at most {MAX_PORTS} ports")));
        }
        if self
            .ports
            .iter()
            .any(|p| p.container_port == 0 || p.host_port == Some(0))
        {
            return Err(invalid("ports", "container and host ports must be 1-65535"));
        }
        if self
            .ports
            .iter()
            .any(|p| p.mode == PublishMode::Ingress && p.host_port.is_none())
        {
            return Err(invalid(
                "ports",
                "an ingress port needs a published port (PUBLISHED:TARGET); without one use \
                 mode=host",
            ));
        }
        let mut ingress: Vec<u16> = self
            .ports
            .iter()
            .filter_map(PortSpec::ingress_port)
            .collect();
        ingress.sort_unstable();
        if let Some(w) = ingress.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(
                "ports",
                format!("ingress port {} is published twice", w[0]),
            ));
        }
        if self.secrets.len() > MAX_SECRET_MOUNTS {
            return Err(invalid(
                "secrets",
                format!("at most {MAX_SECRET_MOUNTS} mounts"),
            ));
        }
        for mount in &self.secrets {
            validate_secret_name(&mount.name)?;
            validate_secret_target(&mount.target)?;
        }
        if let Some(health) = &self.health {
            health.validate()?;
        }
        self.restart.validate()?;
        self.resources.validate()?;
        if let Some(ms) = self.stop_timeout_ms {
            if ms > MAX_STOP_TIMEOUT_MS {
                return Err(invalid(
                    "stop_timeout_ms",
                    format!("must be at most {} s", MAX_STOP_TIMEOUT_MS / 1000),
                ));
            }
        }
        if self
            .partition
            .reschedule_after_ms
            .is_some_and(|ms| ms > MAX_RESCHEDULE_AFTER_MS)
        {
            return Err(invalid(
                "partition.reschedule_after_ms",
                format!(
                    "must be at most {} days",
                    MAX_RESCHEDULE_AFTER_MS / 86_400_000
                ),
            ));
        }
        self.placement.validate()?;
        crate::volume::validate_mounts(&self.mounts)?;
        if self.gpus > MAX_SERVICE_GPUS {
            return Err(invalid(
                "gpus",
                format!("must be at most {MAX_SERVICE_GPUS}"),
            ));
        }
        // Since issue 15: the rollout policies and strategy (crate::rollout_rules).
        self.validate_rollout()?;
        Ok(())
    }
}

/// Most GPUs one task may reserve (`--gpus`): as many as a node reports at most.
pub const MAX_SERVICE_GPUS: u32 = 16;
/// Longest GPU device id (a UUID such as `GPU-5c0cbd6e-…`, or an index), in bytes.
pub const MAX_GPU_ID_BYTES: usize = 64;

/// Most replicas a service may ask for.
pub const MAX_REPLICAS: u32 = 10_000;
/// Most command arguments in a spec.
pub const MAX_ARGS: usize = 1_024;
/// Longest command argument or environment value, in bytes.
pub const MAX_ARG_BYTES: usize = 65_536;
/// Most environment variables in a spec.
pub const MAX_ENV: usize = 1_024;
/// Longest environment variable name, in bytes.
pub const MAX_ENV_KEY_BYTES: usize = 256;
/// Most published ports in a spec.
pub const MAX_PORTS: usize = 256;
/// Most secret mounts in a spec.
pub const MAX_SECRET_MOUNTS: usize = 64;
/// Longest secret name or secret mount target, in bytes.
pub const MAX_SECRET_NAME_BYTES: usize = 63;

/// Checks a secret's name: 1 to 63 bytes of ASCII letters, digits, `.`, `_`, `-`, not
/// starting with `.`.
///
/// Errors: [`CrdtError::InvalidSpec`] on field `secrets.name`.
pub fn validate_secret_name(name: &str) -> Result<(), CrdtError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME_BYTES
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "secrets.name",
            format!(
                "invalid secret name {name:?}: 1-63 characters of letters, digits, '.', '_', '-'"
            ),
        ))
    }
}

/// Checks a secret mount's target: one relative file name under `/run/secrets`, 1 to 63
/// bytes, no `/`, no NUL, not `.` or `..` (so it can never leave the secrets directory).
///
/// Errors: [`CrdtError::InvalidSpec`] on field `secrets.target`.
pub fn validate_secret_target(target: &str) -> Result<(), CrdtError> {
    if target.is_empty()
        || target.len() > MAX_SECRET_NAME_BYTES
        || target == "."
        || target == ".."
        || target.contains('/')
        || target.contains('\\')
        || target.contains('\0')
    {
        return Err(invalid(
            "secrets.target",
            format!("invalid secret target {target:?}: a file name under /run/secrets"),
        ));
    }
    Ok(())
}

/// Longest `--reschedule-after` a spec may ask for: 30 days, in milliseconds.
pub const MAX_RESCHEDULE_AFTER_MS: u64 = 30 * 86_400_000;

/// What the scheduler does with the slots of a member it cannot reach (Nomad's `disconnect`
/// block; DESIGN §5). The same rule applies on every side of a split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPartition {
    /// Re-place the slots once the member is down (after `reschedule_after_ms` if set).
    #[default]
    Reschedule,
    /// Never re-place them while the member is a member (or only after
    /// `reschedule_after_ms`): its containers keep running where they are.
    Wait,
}

impl OnPartition {
    /// `reschedule` or `wait`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnPartition::Reschedule => "reschedule",
            OnPartition::Wait => "wait",
        }
    }
}

/// A service's partition policy: `--on-partition` and `--reschedule-after`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionPolicy {
    /// What happens to an unreachable member's slots.
    #[serde(default)]
    pub on_partition: OnPartition,
    /// Milliseconds a member must have been silent before its slots are re-placed; `None`:
    /// the down timeout for `reschedule`, never for `wait`. At most
    /// [`MAX_RESCHEDULE_AFTER_MS`].
    #[serde(default)]
    pub reschedule_after_ms: Option<u64>,
}

impl PartitionPolicy {
    /// Whether the slots of a member silent for `silent_ms` (and judged down) stay where
    /// they are.
    pub fn waits(&self, silent_ms: u64) -> bool {
        match (self.on_partition, self.reschedule_after_ms) {
            (OnPartition::Wait, None) => true,
            (_, Some(after)) => silent_ms < after,
            (OnPartition::Reschedule, None) => false,
        }
    }
}

/// Longest stop timeout a spec may ask for: 1 hour, in milliseconds.
pub const MAX_STOP_TIMEOUT_MS: u64 = 3_600_000;
/// Longest health interval, timeout or start period, and longest restart delay: 1 hour, in
/// milliseconds.
pub const MAX_PERIOD_MS: u64 = 3_600_000;
/// Smallest memory limit the Docker engine accepts: 6 MiB, in bytes.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// Smallest CPU limit the Docker engine accepts: 0.01 CPU, in nano-CPUs.
pub const MIN_NANO_CPUS: u64 = 10_000_000;

fn invalid(field: &'static str, reason: impl Into<String>) -> CrdtError {
    CrdtError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}

/// What a health check runs. Every probe runs inside the task's own container (Docker's
/// native healthcheck), so it reaches the service through the container's loopback, never
/// through the host's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HealthProbe {
    /// A shell command (`/bin/sh -c`); exit status 0 is healthy.
    Cmd {
        /// The command line, 1 to 4,096 bytes, no NUL.
        command: String,
    },
    /// `GET http://127.0.0.1:<port><path>` from inside the container with `wget` (the image
    /// must have it; busybox does); any 2xx/3xx answer is healthy.
    Http {
        /// TCP port inside the container.
        port: u16,
        /// Request path: starts with `/`, at most 1,024 bytes, printable ASCII without
        /// spaces or quotes.
        path: String,
    },
    /// A TCP connect to `127.0.0.1:<port>` from inside the container with `nc -z` (the image
    /// must have it; busybox does).
    Tcp {
        /// TCP port inside the container.
        port: u16,
    },
}

/// A service's health check: `services.<name>.spec.health`. Durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What to run.
    pub probe: HealthProbe,
    /// Time between two probes (default 10,000).
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
    /// A probe that takes longer has failed (default 5,000).
    #[serde(default = "default_health_timeout")]
    pub timeout_ms: u64,
    /// Consecutive failures that make a task unhealthy (default 3).
    #[serde(default = "default_health_retries")]
    pub retries: u32,
    /// Failures in this time after a start do not count (default 0).
    #[serde(default)]
    pub start_period_ms: u64,
}

fn default_health_interval() -> u64 {
    10_000
}
fn default_health_timeout() -> u64 {
    5_000
}
fn default_health_retries() -> u32 {
    3
}

impl HealthCheck {
    /// A check running `probe` with the default timing.
    pub fn new(probe: HealthProbe) -> Self {
        Self {
            probe,
            interval_ms: default_health_interval(),
            timeout_ms: default_health_timeout(),
            retries: default_health_retries(),
            start_period_ms: 0,
        }
    }

    /// Interval and timeout 1 ms to 1 h, start period at most 1 h, retries 1 to 100, ports
    /// 1-65535, a command 1 to 4,096 bytes without NUL, a path as [`HealthProbe::Http`] says.
    ///
    /// Errors: [`CrdtError::InvalidSpec`].
    pub fn validate(&self) -> Result<(), CrdtError> {
        match &self.probe {
            HealthProbe::Cmd { command } => {
                if command.trim().is_empty() || command.len() > 4_096 || command.contains('\0') {
                    return Err(invalid(
                        "health.command",
                        "must be 1 to 4096 bytes, not blank, without NUL",
                    ));
                }
            }
            HealthProbe::Http { port, path } => {
                if *port == 0 {
                    return Err(invalid("health.port", "must be 1-65535"));
                }
                let printable = path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'));
                if !path.starts_with('/') || path.len() > 1_024 || !printable {
                    return Err(invalid(
                        "health.path",
                        format!(
                            "{path:?} must start with '/', be at most 1024 bytes and hold no \
                             spaces, quotes or control characters"
                        ),
                    ));
                }
            }
            HealthProbe::Tcp { port } => {
                if *port == 0 {
                    return Err(invalid("health.port", "must be 1-65535"));
                }
            }
        }
        for (field, ms) in [
            ("health.interval_ms", self.interval_ms),
            ("health.timeout_ms", self.timeout_ms),
        ] {
            if ms == 0 || ms > MAX_PERIOD_MS {
                return Err(invalid(field, "must be 1 ms to 1 h"));
            }
        }
        if self.start_period_ms > MAX_PERIOD_MS {
            return Err(invalid("health.start_period_ms", "must be at most 1 h"));
        }
        if !(1..=100).contains(&self.retries) {
            return Err(invalid("health.retries", "must be 1-100"));
        }
        Ok(())
    }
}

/// When a stopped task is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Whatever its exit code (the default).
    #[default]
    Always,
    /// Only after a non-zero exit code or a failed health check.
    OnFailure,
    /// Never: an exited task stays exited.
    Never,
}

impl RestartCondition {
    /// `always`, `on-failure` or `never`, as the CLI and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartCondition::Always => "always",
            RestartCondition::OnFailure => "on-failure",
            RestartCondition::Never => "never",
        }
    }
}

impl fmt::Display for RestartCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's restart policy: `services.<name>.spec.restart`. Warren's own reconcile loop
/// restarts tasks (the engine's restart policy stays off), so it can count attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Which exits are restarted.
    #[serde(default)]
    pub condition: RestartCondition,
    /// Restarts allowed before the task is marked `failed` and left alone; `None`: no limit.
    /// The count starts over once a task has kept running for 30 s.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Delay before the second restart in a row, in milliseconds (the first is immediate);
    /// each further one doubles it, up to 60 s or this delay if it is longer (default 1,000).
    #[serde(default = "default_restart_delay")]
    pub delay_ms: u64,
}

fn default_restart_delay() -> u64 {
    1_000
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            condition: RestartCondition::Always,
            max_attempts: None,
            delay_ms: default_restart_delay(),
        }
    }
}

impl RestartPolicy {
    /// The delay is 1 ms to 1 h.
    ///
    /// Errors: [`CrdtError::InvalidSpec`].
    pub fn validate(&self) -> Result<(), CrdtError> {
        if self.delay_ms == 0 || self.delay_ms > MAX_PERIOD_MS {
            return Err(invalid("restart.delay_ms", "must be 1 ms to 1 h"));
        }
        Ok(())
    }
}

/// CPU and memory limits of one task: `services.<name>.spec.resources`. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in billionths of a CPU (Docker's `NanoCpus`; 1.5 CPUs = 1,500,000,000).
    #[serde(default)]
    pub nano_cpus: Option<u64>,
    /// Memory limit in bytes (Docker's `Memory`).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

impl Resources {
    /// CPUs 0.01 to 1,024; memory at least 6 MiB (the engine's minimum) and at most
    /// `i64::MAX` bytes (the engine's type).
    ///
    /// Errors: [`CrdtError::InvalidSpec`].
    pub fn validate(&self) -> Result<(), CrdtError> {
        if let Some(n) = self.nano_cpus {
            if !(MIN_NANO_CPUS..=1_024 * 1_000_000_000).contains(&n) {
                return Err(invalid("resources.nano_cpus", "CPUs must be 0.01 to 1024"));
            }
        }
        if let Some(m) = self.memory_bytes {
            if m < MIN_MEMORY_BYTES || i64::try_from(m).is_err() {
                return Err(invalid(
                    "resources.memory_bytes",
                    "memory must be at least 6 MiB (the engine's minimum)",
                ));
            }
        }
        Ok(())
    }
}

/// A secret a service mounts: `name` from the document, as file `target` under `/run/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMount {
    /// The secret's name.
    pub name: String,
    /// The file name under `/run/secrets` (defaults to the name).
    pub target: String,
}

/// `services.<name>`: a spec with its generation and tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The service's name.
    pub name: ServiceName,
    /// Increases whenever the spec changes in a way that needs new containers (create, re-create).
    pub generation: u64,
    /// Tombstone: a deleted service stays in the document so a concurrent update cannot revive it.
    pub deleted: bool,
    /// The desired spec.
    pub spec: ServiceSpec,
    /// The spec before the last update that changed the generation, for a rollback.
    #[serde(default)]
    pub previous_spec: Option<ServiceSpec>,
    /// The specs of older generations that slots may still run during a rollout, by
    /// generation: at most [`crate::rollout::KEPT_OLDER_SPECS`], the newest kept. Empty in
    /// documents written before rollouts.
    #[serde(default)]
    pub older_specs: BTreeMap<u64, ServiceSpec>,
    /// The rollout of the current generation; `None` for a service never updated (or in
    /// documents written before rollouts).
    #[serde(default)]
    pub rollout: Option<crate::rollout::Rollout>,
}

impl Service {
    /// The spec a slot assigned at `generation` runs: the current spec for the current
    /// generation, a kept older one otherwise; `None` for a generation no longer kept.
    pub fn spec_for(&self, generation: u64) -> Option<&ServiceSpec> {
        if generation == self.generation {
            Some(&self.spec)
        } else {
            self.older_specs.get(&generation)
        }
    }
}

/// The key of one replica of a service: `<service>/<slot>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotId {
    /// The service.
    pub service: ServiceName,
    /// Replica index, `0..replicas`.
    pub slot: u32,
}

impl SlotId {
    /// The document key, `<service>/<slot>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.service, self.slot)
    }

    /// Parses a document key written by [`SlotId::key`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<SlotId> {
        let (service, slot) = key.rsplit_once('/')?;
        Some(SlotId {
            service: ServiceName::new(service).ok()?,
            slot: slot.parse().ok()?,
        })
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.slot)
    }
}

/// `assignments.<service>/<slot>`: the scheduler's decision for one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The node that runs the slot.
    pub node: NodeId,
    /// Lease epoch of the holder that wrote it (fencing token).
    pub epoch: Epoch,
    /// The lease holder that wrote it.
    pub holder: NodeId,
    /// The service generation it was made for.
    pub spec_generation: u64,
    /// Nodes whose running copies of the slot the holder saw and decided to stop: the losers
    /// of a heal's dispute, or the node a rebalancing move leaves. Each stops its copy only
    /// once `node` reports the slot running (make before break, DESIGN §5). A copy on a node
    /// not listed here was not judged yet and keeps running until the holder decides.
    /// Empty in documents written before the heal rules (the field is absent).
    #[serde(default)]
    pub displaced: Vec<NodeId>,
    /// The GPUs of `node` this slot's task holds, by device id (the GPU's UUID as
    /// `nvidia-smi` reports it, or its index where the UUID is unknown): chosen by the holder
    /// among the node's GPUs no other slot's assignment names, so that two tasks never share
    /// one (`--gpus N`). Empty for a service without GPUs and in documents written before
    /// GPU reservations (the field is absent).
    #[serde(default)]
    pub gpus: Vec<String>,
}

impl Assignment {
    /// Order between two assignments of one slot: greater `(epoch, holder)` stands.
    pub fn rank(&self) -> (Epoch, &NodeId) {
        (self.epoch, &self.holder)
    }
}

/// `lease { holder, epoch }`: the right to schedule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// Fencing token; compared first.
    pub epoch: Epoch,
    /// The member holding it; breaks ties between equal epochs.
    pub holder: NodeId,
}

/// `tokens.<token_id>`: a join token or an operator's API token, stored as the SHA-256 digest
/// of its secret only. `role` tells the two apart: a token is only ever accepted for its own
/// role ([`TokenRecord::ROLE_MEMBER`] admits a node, [`TokenRecord::ROLE_OPERATOR`] opens the
/// remote API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id of the token.
    pub id: String,
    /// Lowercase hex SHA-256 of the token secret.
    pub digest: String,
    /// Unix time in seconds after which the token is refused.
    pub expires_at: i64,
    /// Admissions left (join tokens; 0 for operator tokens).
    pub uses_left: u64,
    /// What the token is for: [`TokenRecord::ROLE_MEMBER`] or [`TokenRecord::ROLE_OPERATOR`].
    pub role: String,
    /// Unix time in seconds when it was minted (0 for records written before this field).
    #[serde(default)]
    pub created_at: i64,
    /// Labels every node admitted with it gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Revoked tokens are refused.
    #[serde(default)]
    pub revoked: bool,
    /// Node id of the member that minted a join token: only that member admits with it, so
    /// its `uses_left` (a last-writer-wins counter) cannot be spent twice on the two sides of
    /// a split. Empty for operator tokens and for join tokens minted by a version without the
    /// field: any member still admits with those (the old, split-unsafe rule).
    #[serde(default)]
    pub minted_by: String,
}

impl TokenRecord {
    /// The role of a join token: it admits a node as a member.
    pub const ROLE_MEMBER: &'static str = "member";
    /// The role of an operator's API token: it opens the remote (TLS) API.
    pub const ROLE_OPERATOR: &'static str = "operator";

    /// Whether this is an operator's API token rather than a join token.
    pub fn is_operator(&self) -> bool {
        self.role == Self::ROLE_OPERATOR
    }
}

/// One change of the document's history: who (actor = node), when, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Hex change hash.
    pub hash: String,
    /// The node that made the change, if its actor id carries one.
    pub node: Option<NodeId>,
    /// Unix time in milliseconds, as the author's clock had it.
    pub time: i64,
    /// What the change did, e.g. `service create web`.
    pub message: String,
}

/// What a job runs: `jobs.<id>.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Docker image reference.
    pub image: String,
    /// Command and arguments; empty means the image's default.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for an attempt.
    Pending,
    /// An attempt runs.
    Running,
    /// An attempt exited 0.
    Succeeded,
    /// The last allowed attempt failed: dead-lettered, kept for inspection.
    Dead,
}

impl JobState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
        }
    }

    pub(crate) fn parse(s: &str) -> JobState {
        match s {
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            _ => JobState::Pending,
        }
    }
}

/// One attempt of a job: `jobs.<id>.attempts[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAttempt {
    /// 1-based attempt number.
    pub number: u32,
    /// The node that ran it.
    pub node: NodeId,
    /// Unix milliseconds when it started.
    pub started_at: i64,
    /// Exit code, once it ended.
    pub exit_code: Option<i64>,
}

/// `jobs.<id>`: a run-to-completion workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// What it runs.
    pub spec: JobSpec,
    /// Higher runs first.
    pub priority: i64,
    /// Attempts before it is dead-lettered.
    pub max_attempts: u32,
    /// Attempts so far, in the order the document holds them (concurrent appends all survive).
    pub attempts: Vec<JobAttempt>,
    /// Its state.
    pub state: JobState,
}

/// `secrets.<name>`: a secret as ciphertext only. The value is encrypted once under a data key
/// (XChaCha20-Poly1305); the data key is sealed to each member's X25519 key (DESIGN §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// The secret's name.
    pub name: String,
    /// Increases with every rotation or re-keying.
    pub version: u64,
    /// Encrypted value.
    pub ciphertext: Vec<u8>,
    /// The 24-byte XChaCha20 nonce.
    pub nonce: Vec<u8>,
    /// The data key sealed to each recipient member.
    pub recipients: BTreeMap<NodeId, Vec<u8>>,
}

#[cfg(test)]
mod validate_tests {
    use super::*;

    fn ok_spec() -> ServiceSpec {
        ServiceSpec {
            image: "warren/busybox:latest".into(),
            replicas: 1,
            ..ServiceSpec::default()
        }
    }

    fn field_of(spec: &ServiceSpec) -> &'static str {
        match spec.validate() {
            Err(CrdtError::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert!(ok_spec().validate().is_ok());
    }

    #[test]
    fn image_must_be_a_reference_by_dockers_grammar() {
        let mut s = ok_spec();
        for bad in [
            "",
            "a\0b",
            "Warren/Busybox",
            "busybox:",
            "a b",
            "a@sha256:12",
        ] {
            s.image = bad.into();
            assert_eq!(field_of(&s), "image", "{bad:?}");
        }
        for good in ["busybox", "localhost:5000/a/b:1.0", "ghcr.io/o/r:v1"] {
            s.image = good.into();
            assert!(s.validate().is_ok(), "{good:?}");
        }
    }

    #[test]
    fn mode_reads_replicated_when_absent_and_global_wants_handed_out_slots() {
        let old: ServiceSpec =
            serde_json::from_str(r#"{"image": "busybox", "replicas": 2}"#).expect("an old spec");
        assert_eq!(old.mode, ServiceMode::Replicated);
        assert_eq!(
            (old.slot_count(), old.wants_slot(1), old.wants_slot(2)),
            (2, true, false)
        );
        let global: ServiceSpec =
            serde_json::from_str(r#"{"image": "busybox", "replicas": 0, "mode": "global"}"#)
                .expect("a global spec");
        assert_eq!(global.mode, ServiceMode::Global);
        assert_eq!((global.slot_count(), global.wants_slot(7)), (0, true));
        assert!(!global.wants_slot(MAX_REPLICAS));
    }

    #[test]
    fn replicas_are_bounded() {
        let mut s = ok_spec();
        s.replicas = MAX_REPLICAS;
        assert!(s.validate().is_ok());
        s.replicas = MAX_REPLICAS + 1;
        assert_eq!(field_of(&s), "replicas");
    }

    #[test]
    fn env_keys_are_checked() {
        for key in ["", "A=B", "A\0", &"K".repeat(MAX_ENV_KEY_BYTES + 1)] {
            let mut s = ok_spec();
            s.env.insert(key.to_string(), "v".into());
            assert_eq!(field_of(&s), "env", "{key:?}");
        }
        let mut s = ok_spec();
        s.env.insert("GOOD".into(), "v\0".into());
        assert_eq!(field_of(&s), "env");
    }

    #[test]
    fn command_is_bounded() {
        let mut s = ok_spec();
        s.command = vec!["x".into(); MAX_ARGS + 1];
        assert_eq!(field_of(&s), "command");
        s.command = vec!["x".repeat(MAX_ARG_BYTES + 1)];
        assert_eq!(field_of(&s), "command");
    }

    #[test]
    fn ports_are_checked() {
        let mut s = ok_spec();
        s.ports = vec![PortSpec {
            container_port: 0,
            host_port: None,
            mode: PublishMode::Host,
        }];
        assert_eq!(field_of(&s), "ports");
        s.ports = vec![PortSpec {
            container_port: 80,
            host_port: Some(0),
            mode: PublishMode::Host,
        }];
        assert_eq!(field_of(&s), "ports");
        s.ports = vec![
            PortSpec {
                container_port: 80,
                host_port: None,
                mode: PublishMode::Host,
            };
            MAX_PORTS + 1
        ];
        assert_eq!(field_of(&s), "ports");
    }

    #[test]
    fn ingress_ports_need_a_published_port_once() {
        let ingress = |host_port| PortSpec {
            container_port: 80,
            host_port,
            mode: PublishMode::Ingress,
        };
        let mut s = ok_spec();
        s.ports = vec![ingress(None)];
        assert_eq!(field_of(&s), "ports");
        s.ports = vec![ingress(Some(8080)), ingress(Some(8080))];
        assert_eq!(field_of(&s), "ports");
        s.ports = vec![ingress(Some(8080)), ingress(Some(8081))];
        assert!(s.validate().is_ok());
    }

    #[test]
    fn ports_written_before_the_mode_read_as_host() {
        let old: PortSpec =
            serde_json::from_str(r#"{"container_port": 80, "host_port": 8080}"#).expect("port");
        assert_eq!(old.mode, PublishMode::Host);
        assert_eq!(old.ingress_port(), None);
        let new: PortSpec =
            serde_json::from_str(r#"{"container_port": 80, "host_port": 8080, "mode": "ingress"}"#)
                .expect("port");
        assert_eq!(new.ingress_port(), Some(8080));
    }

    #[test]
    fn secret_targets_stay_in_the_secrets_directory() {
        for target in [
            "/etc/warren-pwned",
            "../x",
            "a/b",
            "..",
            ".",
            "",
            "a\0",
            "a\\b",
        ] {
            let mut s = ok_spec();
            s.secrets = vec![SecretMount {
                name: "db".into(),
                target: target.into(),
            }];
            assert_eq!(field_of(&s), "secrets.target", "{target:?}");
        }
        let mut s = ok_spec();
        s.secrets = vec![SecretMount {
            name: "../db".into(),
            target: "db".into(),
        }];
        assert_eq!(field_of(&s), "secrets.name");
    }

    #[test]
    fn stop_timeout_is_bounded() {
        let mut s = ok_spec();
        s.stop_timeout_ms = Some(MAX_STOP_TIMEOUT_MS + 1);
        assert_eq!(field_of(&s), "stop_timeout_ms");
    }

    #[test]
    fn the_message_names_the_field() {
        let mut s = ok_spec();
        s.env.insert("A=B".into(), "v".into());
        let text = s
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.starts_with("invalid env:"), "{text}");
    }
}
