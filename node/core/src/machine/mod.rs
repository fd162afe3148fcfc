//! The sans-IO node: one peer's whole behaviour above the network and the runtime.
//!
//! A [`NodeMachine`] owns the replica of the desired state and the decision [`Core`]. It takes
//! inputs — ticks, gossip, sync requests and responses, join requests, connections, local task
//! status, operator writes — each with the current time as a value, and queues [`Output`]s
//! (publish this gossip, send this sync request, persist now, tell the mesh the members)
//! that the driver drains with [`NodeMachine::poll_output`], as in quinn-proto.
//!
//! The daemon drives it with tokio, libp2p and Docker; `warren-simulations` drives the very
//! same machine over a simulated network. Randomness comes from two generators the machine
//! holds: its choices (the anti-entropy peer) from one seeded at [`NodeMachine::new`], so a
//! simulation replays exactly; token secrets, data keys and nonces from a cryptographically
//! secure one, the operating system's unless [`NodeMachine::set_secure_rng`] gives another.
//!
//! Writes: an operator's write is acknowledged only after the driver has carried out the
//! [`Output::Persist`] with `flush: true` that the write queued before its gossip.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::rngs::{OsRng, StdRng};
use rand::{Rng, SeedableRng};
use rand_core::CryptoRngCore;
use serde::Serialize;
use tracing::{debug, info, warn};
use warren_crdt::{
    Assignment, ClusterInfo, CrdtError, DesiredState, Epoch, HistoryEntry, Member, MemberState,
    NodeId, Service, ServiceName, ServiceSpec, SlotId, SyncState,
};

use crate::api_token::{ApiToken, ApiTokenGrant};
use crate::core::{
    reservation, Action, Capacity, ClusterView, Core, CoreConfig, Desired, DesiredTask, HeldSlot,
    LeaseDecision, Liveness, Millis, RuleBreak, RunningCopy, TaskHealth,
};
use crate::protocol::{
    self, EngineStatus, Heartbeat, JoinRequest, TaskState, TaskStatus, MAX_HEARTBEAT_TASKS,
};
use crate::secrets::{self, SecretKeys};
use crate::system::{Gpu, Usage, MAX_GPUS};
use crate::token::{JoinToken, TokenGrant};
use zeroize::Zeroizing;

/// Most rounds of one sync dialogue; a dialogue that needs more resumes at the next
/// anti-entropy round.
pub const MAX_SYNC_ROUNDS: u32 = 32;

/// Longest a lease holder defers removing the slots of a scale down while its replica holds a
/// partial merge (changes waiting for history it lacks), in milliseconds: a heal's sync
/// completes well within it, and history that never arrives holds nothing back for good.
pub const MERGE_WAIT_MS: u64 = 10_000;

/// Timing of the machine. All values in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    /// Failure detection and lease timing.
    pub core: CoreConfig,
    /// Heartbeat period (default 500).
    pub heartbeat_ms: u64,
    /// Anti-entropy period: one sync dialogue with a random member (default 3,000).
    pub anti_entropy_ms: u64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            core: CoreConfig::default(),
            heartbeat_ms: 500,
            anti_entropy_ms: 3_000,
        }
    }
}

/// The two gossip channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Automerge change bytes of one write (the fast path).
    Changes,
    /// Heartbeats: liveness, lease renewal, task status (soft state).
    Heartbeat,
}

/// What the driver must do for the machine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Persist what changed in [`NodeMachine::state_mut`]; with `flush`, wait for the disk.
    Persist {
        /// Flush before going on (a write is about to be acknowledged).
        flush: bool,
    },
    /// Gossip `data` on `channel` to the members.
    Publish {
        /// The channel.
        channel: Channel,
        /// The payload.
        data: Vec<u8>,
    },
    /// Send a sync request to `to`; feed the answer to [`NodeMachine::handle_sync_response`].
    SyncRequest {
        /// The member to sync with.
        to: NodeId,
        /// The request body.
        body: Vec<u8>,
    },
    /// The members changed: only these may be heard (addresses as multiaddr text).
    SetMembers(BTreeMap<NodeId, Vec<String>>),
}

/// An operator's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create a service (the spec boxed: it is large).
    CreateService(ServiceName, Box<ServiceSpec>),
    /// Set a service's replica count.
    ScaleService(ServiceName, u32),
    /// Change the given fields of a service's spec, field by field.
    UpdateService(ServiceName, Box<crate::patch::ServicePatch>),
    /// Delete a service.
    DeleteService(ServiceName),
    /// Mint a join token from `now_secs` (Unix seconds).
    CreateJoinToken {
        /// Validity, uses and labels.
        grant: TokenGrant,
        /// Wall clock now, Unix seconds.
        now_secs: i64,
    },
    /// Revoke a join token by id.
    RevokeJoinToken(String),
    /// Mint an operator (API) token from `now_secs` (Unix seconds).
    CreateApiToken {
        /// Validity and labels.
        grant: ApiTokenGrant,
        /// Wall clock now, Unix seconds.
        now_secs: i64,
    },
    /// Revoke an operator (API) token by id.
    RevokeApiToken(String),
    /// Create a secret: the value is sealed to every member with a published key.
    CreateSecret {
        /// Its name.
        name: String,
        /// Its value (never logged, never in the document in clear).
        value: SecretValue,
    },
    /// Re-key a secret for the current members (fresh data key, version + 1).
    RotateSecret(String),
    /// Remove a secret.
    RemoveSecret(String),
    /// Remove a member: cut off, its tasks rescheduled, its identity never admitted again.
    RemoveMember(NodeId),
    /// Change the cluster settings named (others keep their values), in one change.
    SetClusterSettings(Vec<warren_crdt::ClusterSetting>),
}

/// A secret's plaintext on its way in: zeroed when dropped, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// What a write returns once acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAck {
    /// The write is in the document (and, after the driver's persist, on disk).
    Done,
    /// A join token, in its text form.
    JoinToken(String),
    /// An operator token: its id and its text form (shown once, never stored).
    ApiToken {
        /// Its public id.
        id: String,
        /// The text the operator passes as `--token`.
        token: String,
    },
}

/// Why a write was refused. [`WriteError::kind`] sorts them for a caller that only needs
/// the class (the API's status code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The document refused it: an unknown service, member, secret or token, a service that
    /// exists, an invalid name or spec, or a store or encoding failure.
    #[error(transparent)]
    Document(#[from] CrdtError),
    /// `service update`'s patch does not apply to the spec.
    #[error(transparent)]
    Patch(#[from] crate::patch::PatchError),
    /// No API token (`operator`) or join token has this id.
    #[error("no {} {id}", if *.operator { "API token" } else { "join token" })]
    NoSuchToken {
        /// The id asked for.
        id: String,
        /// Whether an API token was asked for (else a join token).
        operator: bool,
    },
    /// A secret of that name exists.
    #[error("secret {0} already exists")]
    SecretExists(String),
    /// A value could not be sealed to the members, or this node could not open the secret
    /// to re-seal it.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// This node holds no key to open secrets with.
    #[error("this node has no key to open secrets")]
    NoSecretKey,
    /// A member asked to remove itself.
    #[error("a node cannot remove itself; ask another member")]
    RemoveSelf,
    /// A join token needs this node's addresses, and it listens on none yet.
    #[error("this node is not listening on any address yet")]
    NotListening,
    /// The change was made but could not be persisted: it is not acknowledged.
    #[error("write not persisted: {0}")]
    NotPersisted(String),
}

/// The class of a [`WriteError`]: what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// The thing to change does not exist.
    NotFound,
    /// The thing to create exists.
    Conflict,
    /// The request is malformed: fix it and ask again.
    Invalid,
    /// This node cannot do it now (not persisted, not listening, no cluster, no key).
    Internal,
}

impl WriteError {
    /// The class of this error.
    pub fn kind(&self) -> WriteErrorKind {
        match self {
            WriteError::Document(e) => match e {
                CrdtError::UnknownService(_)
                | CrdtError::UnknownMember(_)
                | CrdtError::UnknownSecret(_)
                | CrdtError::UnknownToken(_) => WriteErrorKind::NotFound,
                CrdtError::ServiceExists(_) => WriteErrorKind::Conflict,
                CrdtError::InvalidName { .. } | CrdtError::InvalidSpec { .. } => {
                    WriteErrorKind::Invalid
                }
                _ => WriteErrorKind::Internal,
            },
            WriteError::NoSuchToken { .. } => WriteErrorKind::NotFound,
            WriteError::SecretExists(_) => WriteErrorKind::Conflict,
            WriteError::Patch(_) | WriteError::RemoveSelf => WriteErrorKind::Invalid,
            WriteError::Secret(crate::secrets::SecretError::Invalid(_)) => WriteErrorKind::Invalid,
            WriteError::Secret(_)
            | WriteError::NoSecretKey
            | WriteError::NotListening
            | WriteError::NotPersisted(_) => WriteErrorKind::Internal,
        }
    }
}

/// Why a peer's sync request was refused ([`NodeMachine::handle_sync_request`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The body holds no sync frame.
    #[error("empty sync request")]
    Empty,
    /// The Automerge sync message does not decode or apply; the dialogue is reset.
    #[error("bad sync message: {0}")]
    BadMessage(CrdtError),
}

/// Why a join request was refused ([`NodeMachine::handle_join`]); the text goes back to the
/// joining node, so each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The request is not a JSON [`JoinRequest`].
    #[error("malformed join request")]
    MalformedRequest,
    /// The token does not parse.
    #[error("{0}")]
    MalformedToken(String),
    /// This peer holds no cluster yet.
    #[error("this peer holds no cluster")]
    NoCluster,
    /// The token is another cluster's.
    #[error("join token is for another cluster")]
    OtherCluster,
    /// The joining identity was removed from the cluster for good.
    #[error("this node was removed from the cluster; its identity cannot rejoin")]
    Removed,
    /// The token does not admit (unknown, wrong secret, revoked, expired, used).
    #[error(transparent)]
    Token(#[from] crate::token::TokenRefusal),
    /// Another member minted the token, and only it admits with it.
    #[error(
        "join token {token} was minted by member {name} ({short}) and only it can admit with \
         it; make sure {name} is reachable, or mint a token at a reachable member with \
         `warren-cli join-token create`"
    )]
    MintedElsewhere {
        /// The token's id.
        token: String,
        /// The minting member's name (`?` if unknown here).
        name: String,
        /// The last 8 characters of the minting member's id.
        short: String,
    },
    /// The joining node's name or labels are out of bounds.
    #[error("name must be 1-63 characters and labels at most 64")]
    BadName,
    /// Writing the admission failed (the token was used up concurrently, or the store).
    #[error(transparent)]
    Document(#[from] CrdtError),
}

/// A member as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// How it looks from here.
    pub liveness: Liveness,
    /// Admission state.
    pub state: MemberState,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Its API address, from its heartbeats (empty until one arrived).
    pub api: String,
    /// Whether this is the node answering.
    pub is_self: bool,
    /// Slots assigned to it.
    pub tasks: usize,
    /// What it offers to reservations, as it last said; `None` when unknown.
    pub capacity: Option<Capacity>,
    /// What the tasks assigned to it reserve (their services' `--cpus` and `--memory`).
    pub reserved: Capacity,
    /// Its load and memory in use, as it last said; `None` when unknown.
    pub usage: Option<Usage>,
    /// Its GPUs, as it last said.
    pub gpus: Vec<Gpu>,
    /// Whether it reaches its container engine, as it last said; `None` when unknown.
    pub engine: Option<EngineStatus>,
}

/// The lease as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    /// The holder.
    pub holder: NodeId,
    /// The holder's name.
    pub holder_name: String,
    /// Its epoch.
    pub epoch: Epoch,
}

/// One task: its assignment and the actual state its node last reported.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Service.
    pub service: ServiceName,
    /// Slot.
    pub slot: u32,
    /// Assigned node.
    pub node: NodeId,
    /// Its name.
    pub node_name: String,
    /// Epoch of the assignment.
    pub epoch: Epoch,
    /// Where it stands (`running`, `restarting`, `failed`, `pending`, `unknown`, ...).
    pub state: TaskState,
    /// Docker's status text or the last error.
    pub status: String,
    /// Short container id.
    pub container: String,
    /// Published ports.
    pub ports: Vec<crate::engine::PublishedPort>,
    /// `none` (no health check, or its node has not said), `starting`, `healthy`, `unhealthy`.
    pub health: TaskHealth,
    /// Exit code of its last run, once it stopped.
    pub exit_code: Option<i64>,
    /// Restarts in a row.
    pub restarts: u32,
    /// Milliseconds until its next restart (as of its node's last report), while backing off.
    pub next_restart_ms: Option<u64>,
    /// Why its last run ended or its last action failed; empty when nothing went wrong.
    pub error: String,
}

/// A consistent picture of one node's view, for the API.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// This node.
    pub node: Option<NodeId>,
    /// Its name.
    pub name: String,
    /// The cluster record.
    pub cluster: Option<ClusterInfo>,
    /// The lease in force.
    pub lease: Option<LeaseStatus>,
    /// Members with liveness.
    pub members: Vec<MemberStatus>,
    /// Live services.
    pub services: Vec<Service>,
    /// Tasks of live services.
    pub tasks: Vec<TaskView>,
    /// Messages from non-members dropped by the mesh.
    pub dropped_non_member: u64,
    /// Peers connected now.
    pub connected_peers: usize,
    /// Heads of the document.
    pub heads: Vec<String>,
    /// Join and operator tokens (digests included: never serialize this field to a client as
    /// is). The remote API checks credentials against it.
    #[serde(skip)]
    pub tokens: Vec<warren_crdt::TokenRecord>,
    /// Secrets, metadata only.
    pub secrets: Vec<SecretMeta>,
    /// Why each unassigned slot of a live service waits (e.g. `no node with 2 GiB free
    /// memory`).
    pub pending: Vec<(SlotId, String)>,
    /// The cluster settings in force on this replica.
    pub settings: warren_crdt::ClusterSettings,
}

/// What may be shown of a secret: never its value or keys.
#[derive(Debug, Clone, Serialize)]
pub struct SecretMeta {
    /// Its name.
    pub name: String,
    /// Its version (increases with every rotation and re-keying).
    pub version: u64,
    /// Size of the value in bytes.
    pub bytes: usize,
    /// Names of the members it is sealed to.
    pub recipients: Vec<String>,
}

/// One peer's behaviour, sans IO. See the module doc.
pub struct NodeMachine {
    me: NodeId,
    name: String,
    api: String,
    config: MachineConfig,
    state: DesiredState,
    core: Core,
    rng: StdRng,
    /// Where token secrets, data keys and nonces come from.
    secure_rng: Box<dyn CryptoRngCore + Send>,
    outputs: VecDeque<Output>,
    listen_addrs: Vec<String>,
    members: BTreeMap<NodeId, Vec<String>>,
    heartbeats: HashMap<NodeId, Heartbeat>,
    /// When each member's last heartbeat arrived, by this node's clock.
    heartbeat_at: HashMap<NodeId, Millis>,
    /// Per slot, the greatest assignment rank `(epoch, holder)` this node has seen: it never
    /// starts a container for an older one (fencing, DESIGN §5).
    seen_rank: HashMap<SlotId, (Epoch, NodeId)>,
    outbound_sync: HashMap<NodeId, (SyncState, u32)>,
    inbound_sync: HashMap<NodeId, SyncState>,
    local_status: Vec<TaskStatus>,
    /// This node's container engine, as its reconcile loop last saw it.
    local_engine: Option<EngineStatus>,
    heartbeat_seq: u64,
    next_heartbeat: Millis,
    next_anti_entropy: Millis,
    /// Since when this replica has held changes waiting for history it lacks (`None`: none
    /// wait).
    missing_deps_since: Option<Millis>,
    /// The typed view of `state`, read once per change of the document rather than per tick;
    /// `None` when the document changed since.
    view_cache: Option<ClusterView>,
    /// (service, generation) pairs whose invalid spec was already logged, so a rejected
    /// spec is logged once per generation, not every tick.
    rejected_logged: std::collections::BTreeSet<(ServiceName, u64)>,
    /// This node's X25519 keys: secrets are sealed to its public key. `None` in simulations.
    secret_keys: Option<SecretKeys>,
    /// The public key this node last saw published in its member record (checked again
    /// whenever the document changes).
    published_key: Option<String>,
    /// This node's usage at its last reading (reported in heartbeats).
    usage: Option<Usage>,
    /// This node's GPUs (reported in heartbeats).
    gpus: Vec<Gpu>,
}

impl std::fmt::Debug for NodeMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMachine")
            .field("me", &self.me)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeMachine {
    /// A machine for node `me` (`name`, serving its API at `api`) over `state`, started at
    /// `now`. `seed` seeds its random choices (not its secrets: those come from the operating
    /// system's generator, see [`NodeMachine::set_secure_rng`]).
    pub fn new(
        me: NodeId,
        name: impl Into<String>,
        api: impl Into<String>,
        state: DesiredState,
        config: MachineConfig,
        now: Millis,
        seed: u64,
    ) -> Self {
        Self {
            core: Core::new(me.clone(), config.core, now),
            me,
            name: name.into(),
            api: api.into(),
            config,
            state,
            rng: StdRng::seed_from_u64(seed),
            secure_rng: Box::new(OsRng),
            outputs: VecDeque::new(),
            listen_addrs: Vec::new(),
            members: BTreeMap::new(),
            heartbeats: HashMap::new(),
            heartbeat_at: HashMap::new(),
            seen_rank: HashMap::new(),
            outbound_sync: HashMap::new(),
            inbound_sync: HashMap::new(),
            local_status: Vec::new(),
            local_engine: None,
            heartbeat_seq: 0,
            next_heartbeat: now,
            next_anti_entropy: now,
            missing_deps_since: None,
            view_cache: None,
            rejected_logged: std::collections::BTreeSet::new(),
            secret_keys: None,
            published_key: None,
            usage: None,
            gpus: Vec::new(),
        }
    }

    /// What this node offers to reservations, announced in its heartbeats and used by its
    /// own scheduler; `None` when it could not be read (no limit is then put on it).
    pub fn set_capacity(&mut self, capacity: Option<Capacity>) {
        let me = self.me.clone();
        self.core.set_capacity(&me, capacity);
    }

    /// This node's usage now (load, memory in use), to report in its next heartbeats.
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        self.usage = usage;
    }

    /// This node's GPUs, to report in its heartbeats (at most [`MAX_GPUS`]).
    pub fn set_gpus(&mut self, mut gpus: Vec<Gpu>) {
        gpus.truncate(MAX_GPUS);
        self.gpus = gpus.into_iter().map(Gpu::bounded).collect();
    }

    /// Replaces the generator that token secrets, secret data keys and nonces are drawn from
    /// (by default the operating system's, `rand::rngs::OsRng`). A simulation gives a seeded
    /// one so that a run that mints tokens or seals secrets replays exactly; a daemon never
    /// should: a generator seeded from a known value makes every secret guessable.
    pub fn set_secure_rng(&mut self, rng: Box<dyn CryptoRngCore + Send>) {
        self.secure_rng = rng;
    }

    /// Gives the machine this node's X25519 keys: it publishes the public key in its member
    /// record and can then create, open and re-key secrets.
    pub fn set_secret_keys(&mut self, keys: SecretKeys) {
        self.secret_keys = Some(keys);
    }

    /// This node's secret keys, if it has them.
    pub fn secret_keys(&self) -> Option<&SecretKeys> {
        self.secret_keys.as_ref()
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.me
    }

    /// The replica (read-only).
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// The replica, for the driver's persistence (`Store::persist`). The driver must not
    /// change the document's content through it: the machine caches what it reads.
    pub fn state_mut(&mut self) -> &mut DesiredState {
        &mut self.state
    }

    /// The next thing the driver must do, in order; `None` when there is nothing.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The tasks assigned to this node: the input of the reconcile loop.
    /// A removed member runs nothing.
    ///
    /// Fencing (DESIGN §5): a task whose assignment ranks below the greatest `(epoch,
    /// holder)` this node has seen for its slot is left out, and logged.
    pub fn desired_tasks(&mut self) -> Vec<DesiredTask> {
        let me = self.me.clone();
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        let removed = view
            .members
            .get(&me)
            .is_some_and(|m| m.state == MemberState::Removed);
        for (slot, a) in &view.assignments {
            let rank = (a.epoch, a.holder.clone());
            let seen = self.seen_rank.entry(slot.clone()).or_insert(rank.clone());
            if rank > *seen {
                *seen = rank;
            }
        }
        let services = &view.services;
        self.seen_rank
            .retain(|slot, _| services.get(&slot.service).is_some_and(|s| !s.deleted));
        if removed {
            return Vec::new();
        }
        let seen_rank = &self.seen_rank;
        let fenced = self.config.core.rule_break != RuleBreak::NoFencing;
        let rejected = rejected_services(view);
        let tasks: Vec<DesiredTask> = view
            .desired_tasks(&me)
            .into_iter()
            .filter(|task| {
                let Some(a) = view.assignments.get(&task.slot).filter(|_| fenced) else {
                    return true;
                };
                match seen_rank.get(&task.slot) {
                    Some(seen) if (a.epoch, &a.holder) < (seen.0, &seen.1) => {
                        warn!(
                            slot = %task.slot,
                            epoch = %a.epoch,
                            seen_epoch = %seen.0,
                            "not running a task: its assignment is older than one seen for its slot"
                        );
                        false
                    }
                    _ => true,
                }
            })
            .collect();
        self.filter_rejected(tasks, &rejected)
    }

    /// What the reconcile loop works towards at `now`: [`NodeMachine::desired_tasks`] and
    /// [`NodeMachine::held_slots`].
    pub fn desired(&mut self, now: Millis) -> Desired {
        Desired {
            tasks: self.desired_tasks(),
            held: self.held_slots(now),
            awaiting: self.awaiting_slots(now),
        }
    }

    /// The slots assigned to this node that another live member reports running (a fresh
    /// report, the service's current generation) although the assignment does not list that
    /// member as displaced: the holder that wrote it did not know of that copy — typically
    /// the other side's writes at a heal. This node starts nothing for them until the holder
    /// judges (DESIGN §5: a heal starts nothing for a slot that runs); see
    /// [`Supervisor::set_awaiting`](crate::core::Supervisor::set_awaiting). Empty under
    /// [`RuleBreak::StopAtOnce`], the rules from before the heal's.
    pub fn awaiting_slots(&mut self, now: Millis) -> BTreeMap<SlotId, NodeId> {
        if self.config.core.rule_break == RuleBreak::StopAtOnce {
            return BTreeMap::new();
        }
        let me = self.me.clone();
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        let heartbeat_ms = self.config.heartbeat_ms;
        let mut awaiting = BTreeMap::new();
        for (slot, a) in view.assignments.iter().filter(|(_, a)| a.node == me) {
            let Some(service) = view
                .services
                .get(&slot.service)
                .filter(|s| !s.deleted && slot.slot < s.spec.replicas)
            else {
                continue;
            };
            // The lowest such node: the heartbeats map has no order of its own.
            let elsewhere = self.heartbeats.iter().filter(|(node, hb)| {
                **node != me
                    && !a.displaced.contains(node)
                    && is_fresh(&self.heartbeat_at, node, now, heartbeat_ms)
                    && hb.tasks.iter().any(|t| {
                        t.service == slot.service.as_str()
                            && t.slot == slot.slot
                            && t.state == TaskState::Running
                            && t.generation == service.generation
                    })
            });
            if let Some((node, _)) = elsewhere.min_by(|x, y| x.0.cmp(y.0)) {
                awaiting.insert(slot.clone(), node.clone());
            }
        }
        awaiting
    }

    /// The slots of live services assigned to another node whose running copies this node
    /// keeps for now (make before break, DESIGN §5), each with what releases it: the
    /// assigned node's report of the slot running ([`TaskStatus::confirms_running`]) and
    /// whether the holder listed this node as displaced. A removed member holds nothing.
    ///
    /// Also every slot at or beyond its service's replica count whose assignment still
    /// stands, wherever assigned: a scale down stops a copy when the lease holder removes
    /// the slot, not when a node first reads the lower count. At a heal a node's view can be
    /// a partial merge of the other side's scales (a causal prefix of its history) whose
    /// count the rest of the merge raises again; stopping on it would leave the slot with no
    /// running copy until it restarts. Such a hold never releases by itself
    /// ([`HeldSlot::releases`] stays false): the holder's removal ends it.
    ///
    /// And every slot a live service wants (below its replica count) that no assignment
    /// names, until the holder places it: at a heal, one side's holder may have removed a
    /// slot (its scale down) that the merged count keeps, while a node of the other side runs
    /// it. The holder's keep rule then gives the slot to a node that runs a copy.
    pub fn held_slots(&mut self, now: Millis) -> BTreeMap<SlotId, HeldSlot> {
        if self.config.core.rule_break == RuleBreak::StopAtOnce {
            return BTreeMap::new();
        }
        let me = self.me.clone();
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        if view
            .members
            .get(&me)
            .is_none_or(|m| m.state == MemberState::Removed)
        {
            return BTreeMap::new();
        }
        let heartbeats = &self.heartbeats;
        let heartbeat_at = &self.heartbeat_at;
        let heartbeat_ms = self.config.heartbeat_ms;
        let never_released = |service: &warren_crdt::Service| HeldSlot {
            generation: service.generation,
            confirmed_elsewhere: false,
            displaced: false,
        };
        // Slots a live service wants that no assignment names: the holder places them next,
        // on a node that runs a copy first (its keep rule).
        let unassigned = view
            .services
            .iter()
            .filter(|(_, s)| !s.deleted)
            .flat_map(|(name, s)| {
                (0..s.spec.replicas).map(move |index| {
                    (
                        SlotId {
                            service: name.clone(),
                            slot: index,
                        },
                        s,
                    )
                })
            })
            .filter(|(slot, _)| !view.assignments.contains_key(slot))
            .map(|(slot, s)| (slot, never_released(s)))
            .collect::<Vec<_>>();
        view.assignments
            .iter()
            .filter_map(|(slot, a)| {
                let service = view.services.get(&slot.service).filter(|s| !s.deleted)?;
                if slot.slot >= service.spec.replicas {
                    // Scaled away in this view, but the holder has not removed the slot yet:
                    // keep its copy until it does. At a heal this view can be a partial
                    // merge whose replica count the rest of the merge raises again.
                    return Some((slot.clone(), never_released(service)));
                }
                if a.node == me {
                    return None;
                }
                let confirmed_elsewhere = is_fresh(heartbeat_at, &a.node, now, heartbeat_ms)
                    && heartbeats.get(&a.node).is_some_and(|hb| {
                        hb.tasks.iter().any(|t| {
                            t.service == slot.service.as_str()
                                && t.slot == slot.slot
                                && t.confirms_running(
                                    service.generation,
                                    a.epoch.0,
                                    a.holder.as_str(),
                                )
                        })
                    });
                Some((
                    slot.clone(),
                    HeldSlot {
                        generation: service.generation,
                        confirmed_elsewhere,
                        displaced: a.displaced.contains(&me),
                    },
                ))
            })
            .chain(unassigned)
            .collect()
    }

    /// Tells the core what runs where, from the fresh reports of live members and this
    /// node's own (see [`Core::set_running_copies`]). A report is fresh for three heartbeat
    /// periods; a copy's age is advanced by the time since its report arrived.
    fn observe_running_copies(&mut self, now: Millis) {
        let mut copies: BTreeMap<SlotId, Vec<RunningCopy>> = BTreeMap::new();
        let mut reported = std::collections::BTreeSet::new();
        let mut add = |node: &NodeId, tasks: &[TaskStatus], since_ms: u64| {
            for t in tasks.iter().filter(|t| t.state == TaskState::Running) {
                let Ok(service) = ServiceName::new(t.service.clone()) else {
                    continue;
                };
                copies
                    .entry(SlotId {
                        service,
                        slot: t.slot,
                    })
                    .or_default()
                    .push(RunningCopy {
                        node: node.clone(),
                        generation: t.generation,
                        age_ms: t.age_ms.unwrap_or(0).saturating_add(since_ms),
                        health: t.health,
                    });
            }
        };
        add(&self.me, &self.local_status, 0);
        reported.insert(self.me.clone());
        for (node, hb) in &self.heartbeats {
            let Some(at) = self.heartbeat_at.get(node) else {
                continue;
            };
            let since = now.since(*at);
            if !is_fresh(&self.heartbeat_at, node, now, self.config.heartbeat_ms)
                || self.core.liveness(node, now) == Liveness::Down
            {
                continue;
            }
            add(node, &hb.tasks, since);
            reported.insert(node.clone());
        }
        self.core.set_running_copies(copies, reported);
    }

    /// Drops the tasks of services whose spec fails [`ServiceSpec::validate`] (a spec written
    /// into the document without the API's check, e.g. by another member): no container is
    /// ever created for them. Logs each rejected service once per generation.
    fn filter_rejected(
        &mut self,
        tasks: Vec<DesiredTask>,
        rejected: &BTreeMap<ServiceName, String>,
    ) -> Vec<DesiredTask> {
        tasks
            .into_iter()
            .filter(|t| {
                let Some(reason) = rejected.get(&t.slot.service) else {
                    return true;
                };
                if self
                    .rejected_logged
                    .insert((t.slot.service.clone(), t.generation))
                {
                    tracing::warn!(
                        service = %t.slot.service,
                        generation = t.generation,
                        %reason,
                        "refusing to run a service whose spec is invalid"
                    );
                }
                false
            })
            .collect()
    }

    /// The machine's current view of the lease, members, services, read from the replica
    /// (once per change of the document).
    pub fn view(&mut self) -> &ClusterView {
        self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        })
    }

    /// What the lease looked like from here at the last tick: `Holder` if this node believes
    /// it holds the lease (and schedules), `Follower` with the lease it follows, `None` before
    /// the first tick.
    pub fn lease_decision(&self) -> Option<&LeaseDecision> {
        self.core.last_decision()
    }

    /// How `peer` looks from here at `now`.
    pub fn liveness(&self, peer: &NodeId, now: Millis) -> Liveness {
        self.core.liveness(peer, now)
    }

    /// This node changed the document (an operator's write, a scheduling decision, an
    /// admission): the cached view is brought up to date from what the change touched,
    /// O(change) and not O(document) ([`DesiredState::take_touched`]), and the change is
    /// persisted, flushed before it is acknowledged.
    fn changed(&mut self, flush: bool) {
        let touched = self.state.take_touched();
        if let Some(view) = self.view_cache.as_mut() {
            view.refresh(&self.state, &touched, &self.me, self.config.core.rule_break);
        }
        self.after_change(flush);
    }

    /// Changes from a peer merged in (gossip, sync): the cached view is read again in full
    /// at its next use. Automerge names in its patches only the values that win its own
    /// order of concurrent writes, and a peer's value that loses that order can still win
    /// ours (the greatest `(epoch, holder)` of an assignment or lease), so no patch would
    /// name it (seen in `warren-sim run --nodes 5 --seed 1 --scenario three-way-split`).
    fn merged(&mut self) {
        // Moves the cursor, so the patch log holds nothing the full read already covers.
        self.state.take_touched();
        self.view_cache = None;
        self.after_change(false);
    }

    fn after_change(&mut self, flush: bool) {
        self.published_key = None;
        self.outputs.push_back(Output::Persist { flush });
    }

    fn publish_change(&mut self, change: Vec<u8>) {
        if !change.is_empty() {
            self.outputs.push_back(Output::Publish {
                channel: Channel::Changes,
                data: change,
            });
        }
    }

    // ---- time ----------------------------------------------------------------------------

    /// Time passed: decide (lease, schedule), heartbeat and anti-entropy when due, keep the
    /// member set and this member's addresses current. While changes received wait for
    /// history this replica lacks (for at most [`MERGE_WAIT_MS`]), the scheduler removes no
    /// slot of a scale down ([`Core::set_merge_incomplete`]).
    pub fn handle_tick(&mut self, now: Millis) {
        self.observe_running_copies(now);
        self.missing_deps_since = if self.state.has_missing_deps() {
            self.missing_deps_since.or(Some(now))
        } else {
            None
        };
        self.core.set_merge_incomplete(
            self.missing_deps_since
                .is_some_and(|since| now.since(since) < MERGE_WAIT_MS),
        );
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        for action in self.core.tick(view, now) {
            match &action {
                Action::ClaimLease(lease) => {
                    info!(epoch = %lease.epoch, "claiming the scheduling lease");
                }
                Action::WriteAssignments(plan) => {
                    debug!(
                        placed = plan.put.len(),
                        removed = plan.remove.len(),
                        "scheduling"
                    );
                }
            }
            match action.apply(&mut self.state, self.config.core.rule_break.fencing()) {
                Ok(Some(change)) => {
                    self.changed(true);
                    self.publish_change(change);
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "could not write a scheduling decision"),
            }
        }
        self.refresh_members();
        self.refresh_own_addrs();
        self.refresh_own_key();
        if now >= self.next_heartbeat {
            self.next_heartbeat = Millis(now.0 + self.config.heartbeat_ms);
            self.send_heartbeat();
        }
        if now >= self.next_anti_entropy {
            self.next_anti_entropy = Millis(now.0 + self.config.anti_entropy_ms);
            self.anti_entropy();
        }
    }

    fn send_heartbeat(&mut self) {
        self.heartbeat_seq += 1;
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        let held_lease = self.core.held_lease(view).map(|e| e.0);
        let mut tasks = self.local_status.clone();
        tasks.truncate(MAX_HEARTBEAT_TASKS);
        let heartbeat = Heartbeat {
            seq: self.heartbeat_seq,
            name: self.name.clone(),
            held_lease,
            api: self.api.clone(),
            tasks,
            capacity: self.core.capacities().get(&self.me).copied(),
            usage: self.usage,
            gpus: self.gpus.clone(),
            engine: self.local_engine.clone(),
        };
        match serde_json::to_vec(&heartbeat) {
            Ok(data) => self.outputs.push_back(Output::Publish {
                channel: Channel::Heartbeat,
                data,
            }),
            Err(e) => warn!(error = %e, "could not encode a heartbeat"),
        }
    }

    /// Anti-entropy: one sync dialogue with a random member.
    fn anti_entropy(&mut self) {
        let peers: Vec<NodeId> = self
            .members
            .keys()
            .filter(|p| **p != self.me)
            .cloned()
            .collect();
        if peers.is_empty() {
            return;
        }
        let pick = peers[self.rng.gen_range(0..peers.len())].clone();
        self.start_sync(pick);
    }

    fn refresh_members(&mut self) {
        let members: BTreeMap<NodeId, Vec<String>> = self
            .view()
            .members
            .values()
            .filter(|m| m.state != MemberState::Removed)
            .map(|m| (m.id.clone(), m.addrs.clone()))
            .collect();
        if members != self.members {
            self.members = members.clone();
            self.outputs.push_back(Output::SetMembers(members));
        }
    }

    /// This node's listen addresses with `/p2p/<id>`.
    pub fn my_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .listen_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", self.me))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Keeps this member's addresses in the document current (a restart may bring new ports).
    fn refresh_own_addrs(&mut self) {
        let mine = self.my_addrs();
        if mine.is_empty() {
            return;
        }
        let me = self.me.clone();
        let recorded = self.view().members.get(&me).map(|m| m.addrs.clone());
        if recorded.is_some_and(|r| r != mine) {
            match self.state.set_member_addrs(&self.me, &mine) {
                Ok(change) => {
                    self.changed(true);
                    self.publish_change(change);
                }
                Err(e) => warn!(error = %e, "could not record new addresses"),
            }
        }
    }

    /// Publishes this node's X25519 public key in its member record when it is not there.
    fn refresh_own_key(&mut self) {
        let Some(mine) = self.secret_keys.as_ref().map(SecretKeys::public_hex) else {
            return;
        };
        let me = self.me.clone();
        if !self.view().members.contains_key(&me) || self.published_key.as_ref() == Some(&mine) {
            return;
        }
        if self.state.member_keys().get(&self.me) == Some(&mine) {
            // Read the document once; after that, only when the view changed.
            self.published_key = Some(mine);
            return;
        }
        match self.state.set_member_key(&self.me, &mine) {
            Ok(change) => {
                self.changed(true);
                self.publish_change(change);
            }
            Err(e) => warn!(error = %e, "could not publish this node's key"),
        }
    }

    /// Active members with a published key: who secrets are sealed to.
    fn recipients(&mut self) -> BTreeMap<NodeId, String> {
        let keys = self.state.member_keys();
        self.view()
            .members
            .values()
            .filter(|m| m.state == MemberState::Active)
            .filter_map(|m| keys.get(&m.id).map(|k| (m.id.clone(), k.clone())))
            .collect()
    }

    /// Re-keys every secret this node can open for the current recipients (after an admission
    /// or a removal). Secrets it cannot open are left alone and logged: another member re-keys
    /// them when it next changes the membership.
    fn rekey_secrets(&mut self) {
        let recipients = self.recipients();
        let Some(keys) = self.secret_keys.as_ref() else {
            return;
        };
        let mut records = Vec::new();
        for record in self.state.secrets().into_values() {
            if record.recipients.keys().eq(recipients.keys()) {
                continue;
            }
            match secrets::reseal(&mut self.secure_rng, &record, &self.me, keys, &recipients) {
                Ok(new) => records.push(new),
                Err(e) => warn!(secret = %record.name, error = %e, "could not re-key a secret"),
            }
        }
        for record in records {
            match self.state.put_secret(&record) {
                Ok(change) => {
                    info!(secret = %record.name, version = record.version, "re-keyed a secret");
                    self.changed(true);
                    self.publish_change(change);
                }
                Err(e) => warn!(error = %e, "could not write a re-keyed secret"),
            }
        }
    }

    // ---- network -------------------------------------------------------------------------

    /// The transport listens on `addr` (multiaddr text, without `/p2p`).
    pub fn handle_listen_addr(&mut self, addr: String) {
        if !self.listen_addrs.contains(&addr) {
            self.listen_addrs.push(addr);
        }
    }

    /// A connection to member `peer` opened at `now`: it counts as hearing from it (after a
    /// heal the merged document may arrive before its first heartbeat, and its slots must not
    /// look like a down member's), and a sync starts.
    pub fn handle_connected(&mut self, peer: &NodeId, now: Millis) {
        if self.members.contains_key(peer) && *peer != self.me {
            self.core.handle_heartbeat(peer, None, now);
            self.start_sync(peer.clone());
        }
    }

    /// The last connection to `peer` closed.
    pub fn handle_disconnected(&mut self, peer: &NodeId) {
        self.inbound_sync.remove(peer);
    }

    /// Gossip from member `from` arrived at `now`. Malformed payloads are dropped and logged.
    pub fn handle_gossip(&mut self, channel: Channel, from: &NodeId, data: &[u8], now: Millis) {
        match channel {
            Channel::Changes => match self.state.apply_change(data) {
                Ok(()) => {
                    self.merged();
                    // A change whose history this replica lacks (the other side of a heal):
                    // sync with its sender now rather than at the next anti-entropy round.
                    if *from != self.me && self.state.has_missing_deps() {
                        self.start_sync(from.clone());
                    }
                }
                Err(e) => debug!(%from, error = %e, "dropping a malformed change"),
            },
            Channel::Heartbeat => match serde_json::from_slice::<Heartbeat>(data) {
                Ok(mut hb) => {
                    hb.tasks.truncate(MAX_HEARTBEAT_TASKS);
                    hb.tasks = hb.tasks.into_iter().map(TaskStatus::bounded).collect();
                    hb.engine = hb.engine.map(EngineStatus::bounded);
                    self.core
                        .handle_heartbeat(from, hb.held_lease.map(Epoch), now);
                    self.core.set_capacity(from, hb.capacity);
                    self.note_task_reports(from, &hb.tasks);
                    self.heartbeat_at.insert(from.clone(), now);
                    hb.gpus.truncate(MAX_GPUS);
                    hb.gpus = hb.gpus.into_iter().map(Gpu::bounded).collect();
                    self.heartbeats.insert(from.clone(), hb);
                }
                Err(e) => debug!(%from, error = %e, "dropping a malformed heartbeat"),
            },
        }
    }

    /// Tells the core which of `from`'s tasks are `failed` (out of restart attempts) under
    /// their service's current generation, so the scheduler moves them to another node.
    fn note_task_reports(&mut self, from: &NodeId, tasks: &[TaskStatus]) {
        let reports: Vec<(SlotId, u64, bool)> = {
            let view = self.view();
            tasks
                .iter()
                .filter_map(|t| {
                    let service = ServiceName::new(t.service.clone()).ok()?;
                    let generation = view.services.get(&service)?.generation;
                    let slot = SlotId {
                        service,
                        slot: t.slot,
                    };
                    Some((slot, generation, t.state == TaskState::Failed))
                })
                .collect()
        };
        for (slot, generation, failed) in reports {
            self.core.task_reported(from, &slot, generation, failed);
        }
    }

    /// Starts a sync dialogue with `peer` unless one is running.
    fn start_sync(&mut self, peer: NodeId) {
        if self.outbound_sync.contains_key(&peer) {
            return;
        }
        let mut state = SyncState::new();
        let message = self.state.generate_sync_message(&mut state);
        self.outbound_sync.insert(peer.clone(), (state, 1));
        self.outputs.push_back(Output::SyncRequest {
            to: peer,
            body: protocol::encode_sync(true, message),
        });
    }

    /// A sync request from member `from`: returns the response body, or why it is refused.
    ///
    /// Errors: [`SyncError`] (its text goes back to the peer).
    pub fn handle_sync_request(
        &mut self,
        from: &NodeId,
        body: &[u8],
    ) -> Result<Vec<u8>, SyncError> {
        let Some((reset, message)) = protocol::decode_sync(body) else {
            return Err(SyncError::Empty);
        };
        if reset {
            self.inbound_sync.insert(from.clone(), SyncState::new());
        }
        let state = self.inbound_sync.entry(from.clone()).or_default();
        if let Some(message) = message {
            if let Err(e) = self.state.receive_sync_message(state, message) {
                debug!(%from, error = %e, "bad sync message");
                self.inbound_sync.remove(from);
                return Err(SyncError::BadMessage(e));
            }
            self.merged();
        }
        let state = self.inbound_sync.entry(from.clone()).or_default();
        let reply = self.state.generate_sync_message(state);
        Ok(protocol::encode_sync(false, reply))
    }

    /// The answer to our sync request to `from` (or why there is none): continue or end the
    /// dialogue.
    pub fn handle_sync_response(&mut self, from: &NodeId, result: Result<Vec<u8>, String>) {
        let Some((mut state, rounds)) = self.outbound_sync.remove(from) else {
            return;
        };
        let body = match result {
            Ok(body) => body,
            Err(reason) => {
                debug!(%from, %reason, "sync ended");
                return;
            }
        };
        let Some((_, message)) = protocol::decode_sync(&body) else {
            return;
        };
        let got_message = message.is_some();
        if let Some(message) = message {
            if let Err(e) = self.state.receive_sync_message(&mut state, message) {
                debug!(%from, error = %e, "bad sync reply");
                return;
            }
            self.merged();
        }
        let next = self.state.generate_sync_message(&mut state);
        if (next.is_none() && !got_message) || rounds >= MAX_SYNC_ROUNDS {
            return;
        }
        self.outbound_sync.insert(from.clone(), (state, rounds + 1));
        self.outputs.push_back(Output::SyncRequest {
            to: from.clone(),
            body: protocol::encode_sync(false, next),
        });
    }

    /// A join request from `from` (its authenticated id) at wall time `now_secs`: checks the
    /// token and admits it. Returns the whole document to send back, or why it is refused.
    ///
    /// Errors: [`JoinError`] (its text goes back to the joining node).
    pub fn handle_join(
        &mut self,
        from: &NodeId,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Vec<u8>, JoinError> {
        let request: JoinRequest =
            serde_json::from_slice(body).map_err(|_| JoinError::MalformedRequest)?;
        let token = JoinToken::decode(&request.token)
            .map_err(|e| JoinError::MalformedToken(e.to_string()))?;
        let cluster = self.state.cluster().ok_or(JoinError::NoCluster)?;
        if token.cluster_id != cluster.id {
            return Err(JoinError::OtherCluster);
        }
        let known = self.state.members().get(from).map(|m| m.state);
        if known == Some(MemberState::Removed) {
            return Err(JoinError::Removed);
        }
        if known.is_none() {
            let record = self.state.tokens().remove(&token.token_id);
            token.check(record.as_ref(), now_secs)?;
            // Only the minting member admits with a token, so that its uses hold across a
            // split (see `crate::token`); an empty `minted_by` is an older version's token.
            if let Some(minter) = record
                .as_ref()
                .map(|r| r.minted_by.as_str())
                .filter(|m| !m.is_empty() && *m != self.me.to_string())
            {
                let name = self
                    .state
                    .members()
                    .into_iter()
                    .find(|(id, _)| id.to_string() == minter)
                    .map(|(_, m)| m.name)
                    .unwrap_or_else(|| "?".into());
                let short: String = minter
                    .chars()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(JoinError::MintedElsewhere {
                    token: token.token_id.clone(),
                    name,
                    short,
                });
            }
            if request.name.is_empty() || request.name.len() > 63 || request.labels.len() > 64 {
                return Err(JoinError::BadName);
            }
            let suffix = format!("/p2p/{from}");
            let addrs: Vec<String> = request
                .addrs
                .into_iter()
                .filter(|a| a.len() < 256 && a.ends_with(&suffix))
                .take(16)
                .collect();
            // The operator's labels on the token win over what the node says of itself.
            let mut labels = request.labels;
            labels.extend(record.map(|r| r.labels).unwrap_or_default());
            let member = Member {
                id: from.clone(),
                name: request.name,
                addrs,
                labels,
                admitted_by: self.me.clone(),
                admitted_at: now_secs.saturating_mul(1000),
                state: MemberState::Active,
            };
            let change = self.state.admit_with_token(&token.token_id, &member)?;
            self.changed(true);
            self.publish_change(change);
            info!(node = %member.name, peer = %from, "admitted a new member");
            let key_ok = hex::decode(&request.x25519_public_key).is_ok_and(|k| k.len() == 32);
            if key_ok {
                let change = self
                    .state
                    .set_member_key(from, &request.x25519_public_key)?;
                self.changed(true);
                self.publish_change(change);
                self.rekey_secrets();
            }
            self.refresh_members();
        }
        Ok(self.state.save())
    }

    // ---- local ---------------------------------------------------------------------------

    /// The reconcile loop's latest report of this node's tasks (at most
    /// [`MAX_HEARTBEAT_TASKS`] are kept, each [`TaskStatus::bounded`]).
    pub fn set_local_status(&mut self, mut tasks: Vec<TaskStatus>) {
        tasks.truncate(MAX_HEARTBEAT_TASKS);
        let tasks: Vec<TaskStatus> = tasks.into_iter().map(TaskStatus::bounded).collect();
        let me = self.me.clone();
        self.note_task_reports(&me, &tasks);
        self.local_status = tasks;
    }

    /// The reconcile loop's latest word on this node's container engine (reachable or not,
    /// since when): announced in heartbeats and shown in `cluster status` / `node ls`.
    pub fn set_engine_status(&mut self, engine: Option<EngineStatus>) {
        self.local_engine = engine.map(EngineStatus::bounded);
    }

    /// An operator's write. On success the machine has queued a flushing persist and the
    /// gossip of the change: acknowledge only after the driver carried out the persist.
    ///
    /// Errors: [`WriteError`] saying why nothing was written.
    pub fn write(&mut self, write: Write) -> Result<WriteAck, WriteError> {
        let (change, ack) = match write {
            Write::CreateService(name, spec) => {
                spec.validate()?;
                (self.state.create_service(&name, &spec)?, WriteAck::Done)
            }
            Write::UpdateService(name, patch) => {
                let current = self
                    .state
                    .services()
                    .remove(&name)
                    .filter(|s| !s.deleted)
                    .ok_or_else(|| CrdtError::UnknownService(name.clone()))?;
                let spec = patch.apply(&current.spec)?;
                spec.validate()?;
                (self.state.update_service(&name, &spec)?, WriteAck::Done)
            }
            Write::ScaleService(name, replicas) => {
                (self.state.scale_service(&name, replicas)?, WriteAck::Done)
            }
            Write::DeleteService(name) => (self.state.delete_service(&name)?, WriteAck::Done),
            Write::SetClusterSettings(settings) => {
                (self.state.set_cluster_settings(&settings)?, WriteAck::Done)
            }
            Write::RevokeJoinToken(id) => {
                // Each kind of token is revoked through its own command: an id from
                // `join-token ls` never names an operator token.
                self.token_of_role(&id, false)?;
                (self.state.revoke_token(&id)?, WriteAck::Done)
            }
            Write::RevokeApiToken(id) => {
                self.token_of_role(&id, true)?;
                (self.state.revoke_token(&id)?, WriteAck::Done)
            }
            Write::CreateApiToken { grant, now_secs } => {
                let (token, record) = ApiToken::mint(&mut self.secure_rng, now_secs, &grant);
                (
                    self.state.add_token(&record)?,
                    WriteAck::ApiToken {
                        id: token.id.clone(),
                        token: token.encode(),
                    },
                )
            }
            Write::RemoveMember(id) => {
                if id == self.me {
                    return Err(WriteError::RemoveSelf);
                }
                let change = self.state.remove_member(&id)?;
                self.changed(true);
                self.publish_change(change);
                // What the removed member could read stays read; what comes next it cannot.
                self.rekey_secrets();
                return Ok(WriteAck::Done);
            }
            Write::CreateSecret { name, value } => {
                if self.state.secrets().contains_key(&name) {
                    return Err(WriteError::SecretExists(name));
                }
                let recipients = self.recipients();
                let record = secrets::seal(&mut self.secure_rng, &name, 1, &value.0, &recipients)?;
                (self.state.put_secret(&record)?, WriteAck::Done)
            }
            Write::RotateSecret(name) => {
                let record = self
                    .state
                    .secrets()
                    .remove(&name)
                    .ok_or_else(|| CrdtError::UnknownSecret(name.to_string()))?;
                let recipients = self.recipients();
                let keys = self.secret_keys.as_ref().ok_or(WriteError::NoSecretKey)?;
                let rotated =
                    secrets::reseal(&mut self.secure_rng, &record, &self.me, keys, &recipients)?;
                (self.state.put_secret(&rotated)?, WriteAck::Done)
            }
            Write::RemoveSecret(name) => (self.state.remove_secret(&name)?, WriteAck::Done),
            Write::CreateJoinToken { grant, now_secs } => {
                let cluster = self.state.cluster().ok_or(CrdtError::NoCluster)?;
                let bootstrap = self.my_addrs();
                if bootstrap.is_empty() {
                    return Err(WriteError::NotListening);
                }
                let (token, record) = JoinToken::mint(
                    &mut self.secure_rng,
                    &cluster.id,
                    &self.me.to_string(),
                    bootstrap,
                    now_secs,
                    &grant,
                );
                (
                    self.state.add_token(&record)?,
                    WriteAck::JoinToken(token.encode()),
                )
            }
        };
        self.changed(true);
        self.publish_change(change);
        Ok(ack)
    }

    /// Checks that `id` names a token of the kind asked for (`operator`: an API token, else a
    /// join token).
    ///
    /// Errors: [`WriteError::NoSuchToken`].
    fn token_of_role(&self, id: &str, operator: bool) -> Result<(), WriteError> {
        let found = self
            .state
            .tokens()
            .get(id)
            .is_some_and(|r| r.is_operator() == operator);
        if found {
            Ok(())
        } else {
            Err(WriteError::NoSuchToken {
                id: id.to_string(),
                operator,
            })
        }
    }

    /// The newest `limit` changes, oldest first; only those that touched `service` if given.
    pub fn history(&mut self, service: Option<&ServiceName>, limit: usize) -> Vec<HistoryEntry> {
        let mut entries = match service {
            Some(service) => self.state.service_history(service, limit),
            None => {
                let mut all = self.state.history();
                all.reverse();
                all.truncate(limit);
                all
            }
        };
        entries.reverse();
        entries
    }

    /// This node's view at `now`, for the API. `dropped_non_member` and `connected_peers`
    /// come from the transport.
    pub fn snapshot(
        &mut self,
        now: Millis,
        dropped_non_member: u64,
        connected_peers: usize,
    ) -> Snapshot {
        let view = self.view().clone();
        let name_of = |id: &NodeId| {
            view.members
                .get(id)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| id.short().to_string())
        };
        let mut per_node: HashMap<&NodeId, usize> = HashMap::new();
        for a in view.assignments.values() {
            *per_node.entry(&a.node).or_default() += 1;
        }
        let mut reserved: HashMap<&NodeId, Capacity> = HashMap::new();
        for (slot, a) in &view.assignments {
            let Some(service) = view
                .services
                .get(&slot.service)
                .filter(|s| !s.deleted && slot.slot < s.spec.replicas)
            else {
                continue;
            };
            let want = reservation(service);
            let r = reserved.entry(&a.node).or_default();
            r.nano_cpus = r.nano_cpus.saturating_add(want.nano_cpus);
            r.memory_bytes = r.memory_bytes.saturating_add(want.memory_bytes);
        }
        let members = view
            .members
            .values()
            .map(|m| MemberStatus {
                id: m.id.clone(),
                name: m.name.clone(),
                liveness: self.core.liveness(&m.id, now),
                state: m.state,
                labels: m.labels.clone(),
                addrs: m.addrs.clone(),
                api: if m.id == self.me {
                    self.api.clone()
                } else {
                    self.heartbeats
                        .get(&m.id)
                        .map(|h| h.api.clone())
                        .unwrap_or_default()
                },
                is_self: m.id == self.me,
                tasks: per_node.get(&m.id).copied().unwrap_or(0),
                capacity: self.core.capacities().get(&m.id).copied(),
                reserved: reserved.get(&m.id).copied().unwrap_or_default(),
                usage: if m.id == self.me {
                    self.usage
                } else {
                    self.heartbeats.get(&m.id).and_then(|h| h.usage)
                },
                gpus: if m.id == self.me {
                    self.gpus.clone()
                } else {
                    self.heartbeats
                        .get(&m.id)
                        .map(|h| h.gpus.clone())
                        .unwrap_or_default()
                },
                engine: if m.id == self.me {
                    self.local_engine.clone()
                } else {
                    self.heartbeats.get(&m.id).and_then(|h| h.engine.clone())
                },
            })
            .collect();
        let tasks = view
            .assignments
            .iter()
            .filter(|(slot, _)| view.services.get(&slot.service).is_some_and(|s| !s.deleted))
            .map(|(slot, a)| {
                let mut task = self.task_view(slot, a, &name_of(&a.node));
                // An unreachable member's slot that its service's policy keeps there.
                let waiting = view
                    .services
                    .get(&slot.service)
                    .is_some_and(|s| s.spec.partition.waits(self.core.silent_ms(&a.node, now)));
                if a.node != self.me
                    && self.core.liveness(&a.node, now) == Liveness::Down
                    && waiting
                {
                    task.state = TaskState::Unknown;
                    task.status = "unreachable (waiting)".into();
                }
                task
            })
            .collect();
        Snapshot {
            node: Some(self.me.clone()),
            name: self.name.clone(),
            cluster: self.state.cluster(),
            lease: view.lease.as_ref().map(|l| LeaseStatus {
                holder: l.holder.clone(),
                holder_name: name_of(&l.holder),
                epoch: l.epoch,
            }),
            members,
            services: view
                .services
                .values()
                .filter(|s| !s.deleted)
                .cloned()
                .collect(),
            tasks,
            pending: self.core.pending_reasons(&view, now).into_iter().collect(),
            settings: view.settings,
            dropped_non_member,
            connected_peers,
            heads: self.state.heads(),
            tokens: self.state.tokens().into_values().collect(),
            secrets: self
                .state
                .secrets()
                .into_values()
                .map(|r| SecretMeta {
                    // XChaCha20-Poly1305 adds a 16-byte tag.
                    bytes: r.ciphertext.len().saturating_sub(16),
                    recipients: r.recipients.keys().map(&name_of).collect(),
                    name: r.name,
                    version: r.version,
                })
                .collect(),
        }
    }

    fn task_view(&self, slot: &SlotId, a: &Assignment, node_name: &str) -> TaskView {
        let matches = |t: &&TaskStatus| {
            t.service == slot.service.as_str() && t.slot == slot.slot && !t.unassigned
        };
        let reported: Option<&TaskStatus> = if a.node == self.me {
            self.local_status.iter().find(matches)
        } else {
            self.heartbeats
                .get(&a.node)
                .and_then(|h| h.tasks.iter().find(matches))
        };
        let rejected = self
            .view_cache
            .as_ref()
            .and_then(|v| v.services.get(&slot.service))
            .and_then(|svc| svc.spec.validate().err());
        if let Some(err) = rejected {
            return TaskView {
                service: slot.service.clone(),
                slot: slot.slot,
                node: a.node.clone(),
                node_name: node_name.to_string(),
                epoch: a.epoch,
                state: TaskState::Rejected,
                status: format!("rejected: {err}"),
                container: String::new(),
                ports: Default::default(),
                health: Default::default(),
                exit_code: None,
                restarts: 0,
                next_restart_ms: None,
                error: err.to_string(),
            };
        }
        TaskView {
            service: slot.service.clone(),
            slot: slot.slot,
            node: a.node.clone(),
            node_name: node_name.to_string(),
            epoch: a.epoch,
            state: reported.map_or(TaskState::Unknown, |t| t.state),
            status: reported.map_or_else(
                || "no report from its node yet".into(),
                |t| t.status.clone(),
            ),
            container: reported.map(|t| t.container.clone()).unwrap_or_default(),
            ports: reported.map(|t| t.ports.clone()).unwrap_or_default(),
            health: reported.map(|t| t.health).unwrap_or_default(),
            exit_code: reported.and_then(|t| t.exit_code),
            restarts: reported.map_or(0, |t| t.restarts),
            next_restart_ms: reported.and_then(|t| t.next_restart_ms),
            error: reported.map(|t| t.error.clone()).unwrap_or_default(),
        }
    }
}

/// Whether the last report heard from `node` is fresh at `now`: heard within three
/// heartbeat periods (`heartbeat_ms` each). Only a fresh report says anything of now; one
/// heard before a split does not.
fn is_fresh(
    heard_at: &HashMap<NodeId, Millis>,
    node: &NodeId,
    now: Millis,
    heartbeat_ms: u64,
) -> bool {
    heard_at
        .get(node)
        .is_some_and(|at| now.since(*at) <= heartbeat_ms.saturating_mul(3))
}

/// The live services whose spec fails [`ServiceSpec::validate`], with the reason. A node never
/// runs these (see [`NodeMachine::desired_tasks`]); `service ps` shows their tasks `rejected`.
pub fn rejected_services(view: &ClusterView) -> BTreeMap<ServiceName, String> {
    view.services
        .iter()
        .filter(|(_, svc)| !svc.deleted)
        .filter_map(|(name, svc)| {
            svc.spec
                .validate()
                .err()
                .map(|e| (name.clone(), e.to_string()))
        })
        .collect()
}
