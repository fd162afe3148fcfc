//! Messages between nodes, above the mesh's opaque bytes. All JSON except the sync body.
//! Every decoder here reads bytes from a peer: each bounds what it keeps and never panics.

use serde::{Deserialize, Serialize};

use crate::core::TaskHealth;
use crate::engine::PublishedPort;
use crate::system::{Gpu, Usage};

/// Most task statuses one report carries; more are cut (the report stays under the mesh's
/// direct-message limit).
pub const MAX_REPORT_TASKS: usize = 1024;

/// A node's soft state (never written into the document): who it is, what it offers and
/// uses, its engine, and the actual state of its tasks. Sent as a direct message to the lease
/// holder and its successor (which schedule from it), to the members with a stake in one of
/// its slots (the heal's keep rule), and to members that asked
/// ([`Direct::Want`]): on change, and as a digest every report period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Increases with every report of one process.
    pub seq: u64,
    /// The sender's node name.
    pub name: String,
    /// The sender's HTTP API address.
    pub api: String,
    /// Actual state of the sender's tasks.
    pub tasks: Vec<TaskStatus>,
    /// What the sender offers to reservations (CPUs, memory); `None` when it could not read
    /// it.
    #[serde(default)]
    pub capacity: Option<crate::core::Capacity>,
    /// The sender's load and memory in use at its last reading.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The sender's GPUs (at most [`crate::system::MAX_GPUS`]); empty without any.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// What the sender knows of the platforms of the current services' images it has (at
    /// most [`crate::core::image_platform::MAX_IMAGE_REPORTS`]); empty from an older sender.
    #[serde(default)]
    pub images: Vec<crate::core::image_platform::ImageReport>,
    /// Whether the sender reaches its container engine.
    #[serde(default)]
    pub engine: Option<EngineStatus>,
    /// The sender's overlay interface: up, down and why, or turned off; `None` from a sender
    /// that has not said (or predates the field). Boxed: a [`Direct`] is as large as its
    /// largest variant, this one.
    #[serde(default)]
    pub overlay: Option<Box<OverlayStatus>>,
}

impl Report {
    /// The report with every list and text cut to its bound ([`MAX_REPORT_TASKS`],
    /// [`TaskStatus::bounded`], [`EngineStatus::bounded`], [`crate::system::MAX_GPUS`]):
    /// applied after receiving, so no peer makes another hold more.
    pub fn bounded(mut self) -> Self {
        self.name = crate::engine::truncate_text(&self.name, MAX_STATUS_TEXT_BYTES);
        self.api = crate::engine::truncate_text(&self.api, MAX_STATUS_TEXT_BYTES);
        self.tasks.truncate(MAX_REPORT_TASKS);
        self.tasks = self.tasks.into_iter().map(TaskStatus::bounded).collect();
        self.engine = self.engine.map(EngineStatus::bounded);
        self.overlay = self.overlay.map(|o| Box::new((*o).bounded()));
        self.gpus.truncate(crate::system::MAX_GPUS);
        self.images
            .truncate(crate::core::image_platform::MAX_IMAGE_REPORTS);
        self.images = self
            .images
            .into_iter()
            .map(crate::core::image_platform::ImageReport::bounded)
            .collect();
        self.gpus = self.gpus.into_iter().map(Gpu::bounded).collect();
        self
    }
}

/// The lease holder's renewal, gossiped every renewal period on the lease channel: the one
/// message every member hears from the holder (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRenewal {
    /// The epoch the sender holds.
    pub epoch: u64,
    /// Increases with every renewal of one process (gossip drops a message it has seen).
    pub seq: u64,
}

/// Longest a [`Direct::Want`] may ask reports for, in milliseconds.
pub const MAX_WANT_MS: u64 = 120_000;

/// A direct message between two members (the mesh's unicast), JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direct {
    /// Membership and failure detection ([`crate::core::SwimMessage`]).
    Swim(crate::core::SwimMessage),
    /// The broadcast tree that carries changes ([`crate::core::PlumMessage`]).
    Plum(crate::core::PlumMessage),
    /// The sender's soft state (boxed: much larger than the other variants; the same JSON).
    Report(Box<Report>),
    /// "Send me your reports for `ms` milliseconds" (at most [`MAX_WANT_MS`]): a peer whose
    /// operator reads tasks or members (`service ps`, `node inspect`, `cluster status`).
    Want {
        /// How long, in milliseconds.
        ms: u64,
    },
}

impl Direct {
    /// Decodes a direct message from a peer. Errors: the JSON error (its text is for logs).
    pub fn decode(bytes: &[u8]) -> Result<Direct, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Longest text field of an [`EngineStatus`], in bytes.
pub const MAX_ENGINE_TEXT_BYTES: usize = 256;

/// A node's word on its container engine (soft state, carried in reports): whether it is
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
                *text = crate::engine::truncate_text(text, MAX_ENGINE_TEXT_BYTES);
            }
        }
        self
    }
}

/// Longest text field of an [`OverlayStatus`], in bytes.
pub const MAX_OVERLAY_TEXT_BYTES: usize = 256;

/// A node's word on its WireGuard interface on the overlay (soft state, carried in reports,
/// shown by `node inspect` and `cluster status`). In JSON: `{"state": "on", "interface":
/// "warren0", "address": "fd..::1", "peers": 2}`, `{"state": "off", "reason": "..."}` or
/// `{"state": "disabled"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum OverlayStatus {
    /// The interface is up.
    On {
        /// Its name (`--overlay-interface`, default `warren0`).
        interface: String,
        /// The node's overlay address on it (IPv6, text).
        address: String,
        /// How many peers it has (other active members with a valid record).
        peers: u32,
        /// The UDP port it listens on (published in the member record).
        #[serde(default)]
        port: u16,
    },
    /// The node takes part in the overlay but could not bring its interface up; it runs
    /// without it.
    Off {
        /// Why, e.g. `the overlay is unavailable here: /dev/net/tun does not exist`.
        reason: String,
    },
    /// Turned off by the operator (`--no-overlay`).
    Disabled,
}

impl OverlayStatus {
    /// The status with its texts cut to [`MAX_OVERLAY_TEXT_BYTES`]: applied before sending
    /// and after receiving.
    pub fn bounded(self) -> Self {
        let cut = |text: String| {
            if text.len() > MAX_OVERLAY_TEXT_BYTES {
                crate::engine::truncate_text(&text, MAX_OVERLAY_TEXT_BYTES)
            } else {
                text
            }
        };
        match self {
            OverlayStatus::On {
                interface,
                address,
                peers,
                port,
            } => OverlayStatus::On {
                interface: cut(interface),
                address: cut(address),
                peers,
                port,
            },
            OverlayStatus::Off { reason } => OverlayStatus::Off {
                reason: cut(reason),
            },
            OverlayStatus::Disabled => OverlayStatus::Disabled,
        }
    }
}

/// Longest text field of a [`TaskStatus`] (`status`, `error`), in bytes: a report carries
/// up to [`MAX_REPORT_TASKS`] of them.
pub const MAX_STATUS_TEXT_BYTES: usize = 256;
/// Most published ports one [`TaskStatus`] carries.
pub const MAX_STATUS_PORTS: usize = 16;

/// Where a task stands on the node that runs it: the `state` of a [`TaskStatus`].
///
/// Wire-compatible with the strings earlier peers sent (`"running"`, `"exited"`, ...): the
/// JSON is the same lowercase word, and a word this version does not know (from a newer peer)
/// reads as [`TaskState::Unknown`], so a mixed-version cluster keeps working.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Assigned, no container yet (or its image is missing and no pull runs).
    Pending,
    /// Its image is being pulled.
    Pulling,
    /// Created by the engine, never started.
    Created,
    /// Its main process runs.
    Running,
    /// Frozen with `docker pause`.
    Paused,
    /// Stopped; it is started again after its restart backoff.
    Restarting,
    /// Being removed by the engine.
    Removing,
    /// Stopped, and its restart policy leaves it so.
    Exited,
    /// The engine could not remove it cleanly.
    Dead,
    /// Out of restart attempts (or its last action failed): left stopped.
    Failed,
    /// Its spec failed validation on this node: it is never run.
    Rejected,
    /// Not known: no report, the engine unreachable, or a word from a newer peer.
    #[default]
    #[serde(other)]
    Unknown,
}

impl TaskState {
    /// The lowercase word, as on the wire and in `service ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Pulling => "pulling",
            TaskState::Created => "created",
            TaskState::Running => "running",
            TaskState::Paused => "paused",
            TaskState::Restarting => "restarting",
            TaskState::Removing => "removing",
            TaskState::Exited => "exited",
            TaskState::Dead => "dead",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The actual state of one task on the node that runs it.
///
/// Fields after `ports` came with issue 6 and those after `error` with the heal rules
/// (issue 12); they default when an older peer leaves them out. `state` and `health` are
/// typed but keep the wire words of earlier versions (see [`TaskState`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Service name.
    pub service: String,
    /// Slot index.
    pub slot: u32,
    /// Where the task stands.
    pub state: TaskState,
    /// Docker's status text or the last error.
    pub status: String,
    /// Short container id, empty when there is none.
    pub container: String,
    /// Ports published on 127.0.0.1.
    pub ports: Vec<PublishedPort>,
    /// The container's health (`none` without a health check); `none` from an older peer
    /// that sent nothing.
    #[serde(default)]
    pub health: TaskHealth,
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
    /// Service generation of the container reported; 0 when there is none (or from an older
    /// peer).
    #[serde(default)]
    pub generation: u64,
    /// How long the container has been this node's, in milliseconds as of the report (from
    /// its creation: restarts keep it); `None` without a container. The heal keeps the copy
    /// of a slot that has run longest (DESIGN §5).
    #[serde(default)]
    pub age_ms: Option<u64>,
    /// `true` for a copy of a slot this node runs without holding its assignment (after a
    /// heal, or while a move is made start-first): kept running, never restarted, until the
    /// lease holder decides which copy stays and the kept one is confirmed running.
    #[serde(default)]
    pub unassigned: bool,
    /// The rank `(epoch, holder)` of the assignment the node runs the task under, as its
    /// replica has it; 0 and empty for an unassigned copy (or from an older peer). Another
    /// node releases its copy only on a report that ranks at least as high as the assignment
    /// it acts on: proof the assigned node knows it is the one to keep the slot.
    #[serde(default)]
    pub assignment_epoch: u64,
    /// See `assignment_epoch` (a node id, at most [`MAX_STATUS_TEXT_BYTES`] bytes).
    #[serde(default)]
    pub assignment_holder: String,
    /// The task's address on its node's overlay network (inside the node's container
    /// subnet), while its container runs there; `None` without the overlay, for a task on
    /// the default network (started before the overlay was on), or from an older peer.
    #[serde(default)]
    pub overlay_ip: Option<std::net::Ipv6Addr>,
}

/// How old a copy without a health check must be before its report confirms it (see
/// [`TaskStatus::confirms_running`]), in milliseconds.
pub const CONFIRM_AFTER_MS: u64 = 2_000;

impl TaskStatus {
    /// Whether this report confirms a running copy of generation `generation` that stands
    /// for its slot under an assignment of rank `(epoch, holder)` or greater: assigned to the
    /// reporting node, running, of that generation, and not failing: healthy, or with no
    /// health check and created at least [`CONFIRM_AFTER_MS`] ago (a copy that starts and
    /// exits at once — it cannot run on that node — must not release the copy that runs).
    /// Make-before-break waits for this before stopping another copy. A report without an
    /// age (an older peer) counts as old enough. (The age is the container's, not its
    /// current run's: a copy that crash-loops slower than that can still be caught running.)
    pub fn confirms_running(&self, generation: u64, epoch: u64, holder: &str) -> bool {
        let proven = match self.health {
            TaskHealth::Healthy => true,
            TaskHealth::None => self.age_ms.is_none_or(|age| age >= CONFIRM_AFTER_MS),
            _ => false,
        };
        !self.unassigned
            && self.state == TaskState::Running
            && self.generation == generation
            && proven
            && (self.assignment_epoch, self.assignment_holder.as_str()) >= (epoch, holder)
    }
}

impl TaskStatus {
    /// The status with its texts cut to [`MAX_STATUS_TEXT_BYTES`] and its ports to
    /// [`MAX_STATUS_PORTS`]: applied before sending and after receiving, so no peer makes
    /// another hold more.
    pub fn bounded(mut self) -> Self {
        for text in [
            &mut self.service,
            &mut self.assignment_holder,
            &mut self.status,
            &mut self.container,
            &mut self.error,
        ] {
            if text.len() > MAX_STATUS_TEXT_BYTES {
                *text = crate::engine::truncate_text(text, MAX_STATUS_TEXT_BYTES);
            }
        }
        self.ports.truncate(MAX_STATUS_PORTS);
        for p in &mut self.ports {
            p.host_ip = crate::engine::truncate_text(&p.host_ip, 64);
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
    /// Whether the joining node takes a [`JoinAnswer`] and fetches the document through the
    /// sync protocol. Absent (`false`) from nodes older than issue 13, which expect the whole
    /// saved document as the answer.
    #[serde(default)]
    pub sync_after: bool,
}

/// Most members a [`JoinAnswer`] names.
pub const MAX_ANSWER_MEMBERS: usize = 64;

/// Most heads a [`JoinAnswer`] carries (a document has as many heads as concurrent latest
/// changes: a handful).
pub const MAX_ANSWER_HEADS: usize = 1024;

/// The answer to a [`JoinRequest`] with `sync_after`: what the new member needs to start, not
/// the document, which it then fetches through the sync protocol (any size, in messages within
/// the mesh's limits; see [`crate::join::CatchUp`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// The cluster's id.
    pub cluster_id: String,
    /// Hex hashes of the admitting member's heads right after the admission: the new member
    /// holds the whole state it was admitted into (its own admission included) once it holds
    /// these changes.
    pub heads: Vec<String>,
    /// Members with their addresses, the admitting member first, at most
    /// [`MAX_ANSWER_MEMBERS`]: whom the new member's mesh hears while it catches up.
    pub members: Vec<(String, Vec<String>)>,
}

impl JoinAnswer {
    /// Reads an answer from the admitting member, bounded ([`MAX_ANSWER_HEADS`],
    /// [`MAX_ANSWER_MEMBERS`], 16 addresses of at most 256 bytes each); `None` when the bytes
    /// are not one (an older member answers with the whole saved document).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut answer: Self = serde_json::from_slice(bytes).ok()?;
        answer.heads.truncate(MAX_ANSWER_HEADS);
        answer.members.truncate(MAX_ANSWER_MEMBERS);
        for (_, addrs) in &mut answer.members {
            addrs.retain(|a| a.len() <= 256);
            addrs.truncate(16);
        }
        Some(answer)
    }
}

/// Largest request body the mesh carries (`warren_mesh::MAX_REQUEST_BODY`: libp2p's 1 MiB
/// less the envelope). warren-core does not depend on the mesh; the daemon checks at compile
/// time that the two agree.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024 - 1024;

/// Largest response body the mesh carries (`warren_mesh::MAX_RESPONSE_BODY`: libp2p's 10 MiB
/// less the envelope).
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024 - 1024;

/// Most bytes of the Automerge message in a sync request ([`encode_sync`] adds one): our
/// changes for the peer, in a dialogue we started. [`warren_crdt::SyncState::new`]'s bound.
pub const SYNC_REQUEST_BUDGET: usize = warren_crdt::DEFAULT_MAX_SYNC_MESSAGE;

/// Most bytes of the Automerge message in a sync response: the changes a peer that started a
/// dialogue lacks (a new member catching up takes a document in messages of this size).
pub const SYNC_RESPONSE_BUDGET: usize = 8 * 1024 * 1024;

const _: () = assert!(SYNC_REQUEST_BUDGET < MAX_REQUEST_BYTES);
const _: () = assert!(SYNC_RESPONSE_BUDGET < MAX_RESPONSE_BYTES);

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

#[cfg(test)]
mod confirm_tests {
    use super::*;

    fn running(age_ms: Option<u64>, restarts: u32, health: TaskHealth) -> TaskStatus {
        TaskStatus {
            service: "web".into(),
            slot: 0,
            state: TaskState::Running,
            generation: 2,
            age_ms,
            restarts,
            health,
            assignment_epoch: 3,
            assignment_holder: "n1".into(),
            ..Default::default()
        }
    }

    /// The flake of `a_task_that_fails_on_its_node_is_moved_to_one_that_runs_it`: a
    /// rebalance's new copy that starts and exits at once was seen running for an instant
    /// and released the copy that ran. Only a proven copy confirms.
    #[test]
    fn only_a_copy_proven_running_confirms() {
        let ok = |t: &TaskStatus| t.confirms_running(2, 3, "n1");
        assert!(ok(&running(Some(CONFIRM_AFTER_MS), 0, TaskHealth::None)));
        assert!(
            ok(&running(None, 0, TaskHealth::None)),
            "an older peer's report"
        );
        assert!(
            ok(&running(Some(10), 0, TaskHealth::Healthy)),
            "its check passed"
        );
        assert!(
            !ok(&running(Some(CONFIRM_AFTER_MS - 1), 0, TaskHealth::None)),
            "too young"
        );
        assert!(!ok(&running(Some(60_000), 0, TaskHealth::Unhealthy)));
        assert!(!ok(&running(Some(60_000), 0, TaskHealth::Starting)));
        // Not its generation, not its assignment, or below the rank acted on.
        assert!(!running(Some(60_000), 0, TaskHealth::None).confirms_running(3, 3, "n1"));
        assert!(!running(Some(60_000), 0, TaskHealth::None).confirms_running(2, 4, "n1"));
        let unassigned = TaskStatus {
            unassigned: true,
            ..running(Some(60_000), 0, TaskHealth::None)
        };
        assert!(!ok(&unassigned));
    }
}
