//! Messages between nodes, above the mesh's opaque bytes. All JSON except the sync body.
//! Every decoder here reads bytes from a peer: each bounds what it keeps and never panics.

use serde::{Deserialize, Serialize};
use warren_runtime::PublishedPort;

/// Most task statuses one heartbeat carries; more are cut (the heartbeat stays under gossip's
/// size limit).
pub const MAX_HEARTBEAT_TASKS: usize = 1024;

/// The heartbeat every node gossips every `heartbeat_interval`: liveness, lease renewal and
/// the actual state of its tasks (soft state: never written into the document).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases with every heartbeat of one process, so two heartbeats never have the same
    /// bytes (gossip drops a message it has seen, which would silence a steady node).
    pub seq: u64,
    /// The sender's node name.
    pub name: String,
    /// The lease epoch the sender holds (renewal), if it is the holder.
    pub held_lease: Option<u64>,
    /// The sender's HTTP API address.
    pub api: String,
    /// Actual state of the sender's tasks.
    pub tasks: Vec<TaskStatus>,
    /// What the sender offers to reservations (CPUs, memory); `None` from an older peer or
    /// one that could not read it.
    #[serde(default)]
    pub capacity: Option<crate::core::Capacity>,
    /// The sender's load and memory in use at its last reading; `None` from an older peer or
    /// one that could not read it.
    #[serde(default)]
    pub usage: Option<crate::system::Usage>,
    /// The sender's GPUs (at most [`crate::system::MAX_GPUS`]); empty without any.
    #[serde(default)]
    pub gpus: Vec<crate::system::Gpu>,
    /// Whether the sender reaches its container engine; `None` from an older peer.
    #[serde(default)]
    pub engine: Option<EngineStatus>,
}

/// Longest text field of an [`EngineStatus`], in bytes.
pub const MAX_ENGINE_TEXT_BYTES: usize = 256;

/// A node's word on its container engine (soft state, carried in heartbeats): whether it is
/// reachable, since when, and the last error when not. The node keeps its desired state and
/// serves its API and gossip either way; its tasks resume once the engine answers again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// `true` when the last call to the engine got an answer.
    pub reachable: bool,
    /// When the engine became reachable or unreachable, in Unix milliseconds by the
    /// sender's own clock (for people to read, never for decisions); 0 when unknown.
    pub since_ms: i64,
    /// The endpoint the node talks to, e.g. `unix:///var/run/docker.sock`.
    pub endpoint: String,
    /// The engine's version while reachable, e.g. `20.10.24+dfsg1`; may be empty.
    #[serde(default)]
    pub version: String,
    /// Why it is unreachable (the last connection error); empty while reachable.
    #[serde(default)]
    pub error: String,
}

impl EngineStatus {
    /// The status with its texts cut to [`MAX_ENGINE_TEXT_BYTES`]: applied before sending and
    /// after receiving.
    pub fn bounded(mut self) -> Self {
        for text in [&mut self.endpoint, &mut self.version, &mut self.error] {
            if text.len() > MAX_ENGINE_TEXT_BYTES {
                *text = warren_runtime::truncate_text(text, MAX_ENGINE_TEXT_BYTES);
            }
        }
        self
    }
}

/// Longest text field of a [`TaskStatus`] (`status`, `error`), in bytes: a heartbeat carries
/// up to [`MAX_HEARTBEAT_TASKS`] of them.
pub const MAX_STATUS_TEXT_BYTES: usize = 256;
/// Most published ports one [`TaskStatus`] carries.
pub const MAX_STATUS_PORTS: usize = 16;

/// The actual state of one task on the node that runs it.
///
/// Fields after `ports` came with issue 6; they default when an older peer leaves them out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Service name.
    pub service: String,
    /// Slot index.
    pub slot: u32,
    /// `running`, `exited`, `restarting` (backing off), `failed`, `pending`, `unknown`, ...
    pub state: String,
    /// Docker's status text or the last error.
    pub status: String,
    /// Short container id, empty when there is none.
    pub container: String,
    /// Ports published on 127.0.0.1.
    pub ports: Vec<PublishedPort>,
    /// `none` (no health check), `starting`, `healthy` or `unhealthy`; empty from an older
    /// peer.
    #[serde(default)]
    pub health: String,
    /// Exit code of the task's last run, once it stopped.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Restarts in a row (since it last ran for 30 s or its spec changed).
    #[serde(default)]
    pub restarts: u32,
    /// Milliseconds until the next restart, while backing off (as of the report).
    #[serde(default)]
    pub next_restart_ms: Option<u64>,
    /// Why the last run ended or the last action failed; empty when nothing went wrong.
    #[serde(default)]
    pub error: String,
}

impl TaskStatus {
    /// The status with its texts cut to [`MAX_STATUS_TEXT_BYTES`] and its ports to
    /// [`MAX_STATUS_PORTS`]: applied before sending and after receiving, so no peer makes
    /// another hold more.
    pub fn bounded(mut self) -> Self {
        for text in [
            &mut self.service,
            &mut self.state,
            &mut self.status,
            &mut self.container,
            &mut self.health,
            &mut self.error,
        ] {
            if text.len() > MAX_STATUS_TEXT_BYTES {
                *text = warren_runtime::truncate_text(text, MAX_STATUS_TEXT_BYTES);
            }
        }
        self.ports.truncate(MAX_STATUS_PORTS);
        for p in &mut self.ports {
            p.host_ip = warren_runtime::truncate_text(&p.host_ip, 64);
        }
        self
    }
}

/// A join request: the token and what the new member says about itself. Its id is the
/// connection's authenticated PeerId, never a field of the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The token in its text form.
    pub token: String,
    /// The joining node's name.
    pub name: String,
    /// Its addresses, each ending in `/p2p/<its id>`.
    pub addrs: Vec<String>,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its X25519 public key (hex) for secrets; empty from a node that has none.
    #[serde(default)]
    pub x25519_public_key: String,
}

/// Sync request/response body: one flag byte (1 = first message of a new session: the
/// responder resets its state for this peer) then the Automerge sync message, if any.
pub fn encode_sync(reset: bool, message: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = vec![u8::from(reset)];
    out.extend(message.unwrap_or_default());
    out
}

/// Inverse of [`encode_sync`]; `None` for an empty body.
pub fn decode_sync(body: &[u8]) -> Option<(bool, Option<&[u8]>)> {
    let (flag, rest) = body.split_first()?;
    Some((*flag == 1, (!rest.is_empty()).then_some(rest)))
}
