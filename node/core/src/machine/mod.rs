//! The sans-IO node: one peer's whole behaviour above the network and the runtime.
//!
//! A [`NodeMachine`] owns the replica of the desired state and the decision [`Core`]. It takes
//! inputs — ticks, gossip, sync requests and responses, join requests, connections, local task
//! status, operator writes — each with the current time as a value, and queues [`Output`]s
//! (publish this gossip, send this direct message or sync request, persist now, tell the mesh
//! the members)
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
//!
//! The machine's concerns, one file each, all `impl NodeMachine`:
//!
//! - this module: the machine, its [`MachineConfig`], its [`Output`]s and what the node tells
//!   it of itself (its keys, capacity, usage, GPUs, tasks, engine);
//! - `tick`: time ([`NodeMachine::handle_tick`]): the core's decisions, failure detection,
//!   lease renewals, anti-entropy, the member set and this member's addresses;
//! - `reports`: soft state (task status, capacity, usage, engine) sent to the members that
//!   need it and received from them ([`NodeMachine::handle_direct`]);
//! - `sync`: what comes from peers: connections, gossip, sync dialogues ([`SyncError`]);
//! - `admission`: join requests ([`NodeMachine::handle_join`], [`JoinError`]);
//! - `keys`: this member's published key and re-keying secrets when the membership changes;
//! - `writes`: operator writes ([`Write`], [`WriteError`]);
//! - `desired`: what the node should run ([`NodeMachine::desired`]);
//! - `read_model`: the API's [`Snapshot`] and the document's history.

mod admission;
mod availability;
mod desired;
mod keys;
mod operator_rollout;
mod placement;
mod read_model;
mod reports;
mod sync;
mod tick;
mod volumes;
mod writes;

pub use admission::JoinError;
pub use desired::rejected_services;
pub use operator_rollout::{RolloutStep, PAUSED_BY_OPERATOR};
pub use placement::OwnDescription;
pub use read_model::{LeaseStatus, MemberStatus, SecretMeta, Snapshot, TaskView};
pub use reports::{answer_probes, fingerprint, WANT_MS};
pub use sync::{SyncError, MAX_SYNC_ROUNDS};
pub use tick::MERGE_WAIT_MS;
pub use writes::{SecretValue, Write, WriteAck, WriteError, WriteErrorKind};

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::rngs::{OsRng, StdRng};
use rand::SeedableRng;
use rand_core::CryptoRngCore;
use warren_crdt::{DesiredState, Epoch, NodeId, ServiceName, SlotId, SyncState};

use crate::core::{
    Capacity, ClusterView, Core, CoreConfig, LeaseDecision, Liveness, Millis, PlumConfig, Plumtree,
};
use crate::protocol::{EngineStatus, TaskStatus, MAX_REPORT_TASKS};
use crate::secrets::SecretKeys;
use crate::system::{Gpu, Usage, MAX_GPUS};

/// Timing of the machine. All values in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    /// Failure detection and lease timing.
    pub core: CoreConfig,
    /// Period of the lease holder's renewal (default 500; the lease's TTL is four of them).
    pub renew_ms: u64,
    /// Least period of the report digest (default 2,000): a node sends its report to the
    /// members that need it on every change and at least this often. In a cluster of more
    /// than [`REPORTS_PER_SECOND`] · this / 1,000 members the period grows, so the holder
    /// takes in at most that many reports a second. A report is fresh for three periods.
    pub report_ms: u64,
    /// Anti-entropy period: one sync dialogue with a random member (default 3,000).
    pub anti_entropy_ms: u64,
    /// The broadcast tree that carries changes (Plumtree).
    pub plum: PlumConfig,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            core: CoreConfig::default(),
            renew_ms: 500,
            report_ms: 2_000,
            anti_entropy_ms: 3_000,
            plum: PlumConfig::default(),
        }
    }
}

/// Most digests a second the lease holder takes in (see [`MachineConfig::report_ms`]).
pub const REPORTS_PER_SECOND: u64 = 500;

/// Largest change broadcast along the tree, in bytes; a larger one travels by anti-entropy
/// only (its base64 form must fit a direct message).
pub const MAX_BROADCAST_BYTES: usize = 256 * 1024;

/// The gossip channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Automerge change bytes of one write. The machine sends changes along its broadcast tree
    /// ([`crate::core::Plumtree`], direct messages), not on this channel; a driver that
    /// receives change bytes some other way feeds them here.
    Changes,
    /// The lease holder's renewals ([`crate::protocol::LeaseRenewal`]).
    Lease,
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
    /// Send `data` to member `to` as a direct message (may be lost; nothing answers it here:
    /// feed what arrives from peers to [`NodeMachine::handle_direct`]).
    Send {
        /// The member.
        to: NodeId,
        /// A JSON [`crate::protocol::Direct`].
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
    /// Soft state this node sends and receives ([`reports::Reports`]).
    reports: reports::Reports,
    /// The broadcast tree that carries changes.
    plum: Plumtree,
    /// Failure detection's change count when the tree last took the live members.
    plum_members_at: Option<u64>,
    /// Per slot, the greatest assignment rank `(epoch, holder)` this node has seen: it never
    /// starts a container for an older one (fencing, DESIGN §5).
    seen_rank: HashMap<SlotId, (Epoch, NodeId)>,
    outbound_sync: HashMap<NodeId, (SyncState, u32)>,
    inbound_sync: HashMap<NodeId, SyncState>,
    local_status: Vec<TaskStatus>,
    /// This node's container engine, as its reconcile loop last saw it.
    local_engine: Option<EngineStatus>,
    renewal_seq: u64,
    next_renewal: Millis,
    next_anti_entropy: Millis,
    /// When [`NodeMachine::handle_tick`] last ran (construction counts as one).
    last_tick: Millis,
    /// The wall clock as the driver last gave it ([`NodeMachine::set_wall_clock`]): the
    /// tick it was read at and Unix milliseconds then. `None` (simulations): records this
    /// node writes for people carry no time.
    wall_clock: Option<(Millis, u64)>,
    /// Since when this replica has held changes waiting for history it lacks (`None`: none
    /// wait).
    missing_deps_since: Option<Millis>,
    /// The typed view of `state`, read once per change of the document rather than per tick;
    /// `None` when the document changed since.
    view_cache: Option<ClusterView>,
    /// Raised each time a change of the document touched the members (so the view's members
    /// may have changed): the member set derived from them is recomputed only when it moved.
    members_version: u64,
    /// `members_version` when the member set was last read from the view (`None`: never).
    members_at: Option<u64>,
    /// (service, generation) pairs whose invalid spec was already logged, so a rejected
    /// spec is logged once per generation, not every tick.
    rejected_logged: std::collections::BTreeSet<(ServiceName, u64)>,
    /// This node's X25519 keys: secrets are sealed to its public key. `None` in simulations.
    secret_keys: Option<SecretKeys>,
    /// The public key this node last saw published in its member record (checked again
    /// whenever the document changes).
    published_key: Option<String>,
    /// This node's WireGuard public key, when it has one (the daemon's key file); `None` in
    /// simulations and with the overlay off.
    wireguard: Option<crate::overlay::WireguardPublic>,
    /// Whether its overlay record was seen published as it should be (checked again whenever
    /// the document changes).
    published_overlay: bool,
    /// The UDP port its WireGuard interface listens on, published with the key.
    wireguard_port: u16,
    /// This node's overlay interface, as the daemon last said (reported).
    local_overlay: Option<crate::protocol::OverlayStatus>,
    /// This node's usage at its last reading (reported in digests).
    usage: Option<Usage>,
    /// This node's GPUs (reported).
    gpus: Vec<Gpu>,
    /// What this node knows of its images' platforms ([`NodeMachine::set_images`]).
    images: Vec<crate::core::image_platform::ImageReport>,
    /// What this node announces about itself, until written to its member record.
    own_description: Option<OwnDescription>,
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
        let plum = Plumtree::new(me.clone(), config.plum, seed ^ 0x9E37_79B9);
        // What the view is later brought up to date with is counted from here: the view is
        // read whole the first time it is needed, so the first change refreshes only what it
        // touched rather than read everything again (at 1,000 members, two whole reads per
        // node were most of a simulation's start).
        let mut state = state;
        let _ = state.take_touched();
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
            reports: reports::Reports::new(now),
            plum,
            plum_members_at: None,
            seen_rank: HashMap::new(),
            outbound_sync: HashMap::new(),
            inbound_sync: HashMap::new(),
            local_status: Vec::new(),
            local_engine: None,
            renewal_seq: 0,
            next_renewal: now,
            next_anti_entropy: now,
            last_tick: now,
            wall_clock: None,
            missing_deps_since: None,
            view_cache: None,
            members_version: 0,
            members_at: None,
            rejected_logged: std::collections::BTreeSet::new(),
            secret_keys: None,
            published_key: None,
            wireguard: None,
            published_overlay: false,
            wireguard_port: warren_crdt::DEFAULT_WG_PORT,
            local_overlay: None,
            usage: None,
            gpus: Vec::new(),
            images: Vec::new(),
            own_description: None,
        }
    }

    /// What this node offers to reservations, announced in its reports and used by its
    /// own scheduler; `None` when it could not be read (no limit is then put on it).
    pub fn set_capacity(&mut self, capacity: Option<Capacity>) {
        let me = self.me.clone();
        if self.core.capacities().get(&me).copied() != capacity {
            self.reports.local_changed();
        }
        self.core.set_capacity(&me, capacity);
    }

    /// This node's usage now (load, memory in use), to report in its next digest.
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        self.usage = usage;
    }

    /// The wall clock: Unix milliseconds `unix_ms` at tick time `now`. The core never reads
    /// it (edge devices' wall clocks are not trusted, DESIGN §5); it only stamps, for
    /// people, the records this node writes as lease holder (a rollout record's
    /// `updated_at_ms`), advanced by the ticks since it was given.
    pub fn set_wall_clock(&mut self, now: Millis, unix_ms: u64) {
        self.wall_clock = Some((now, unix_ms));
    }

    /// Unix milliseconds at tick time `now` by the wall clock last given, if any.
    pub(crate) fn wall_ms(&self, now: Millis) -> Option<u64> {
        let (at, unix_ms) = self.wall_clock?;
        Some(unix_ms.saturating_add(now.since(at)))
    }

    /// What this node knows of the platforms of the current services' images it has, to
    /// report and to schedule from (at most
    /// [`MAX_IMAGE_REPORTS`](crate::core::image_platform::MAX_IMAGE_REPORTS)).
    pub fn set_images(&mut self, mut images: Vec<crate::core::image_platform::ImageReport>) {
        images.truncate(crate::core::image_platform::MAX_IMAGE_REPORTS);
        let images: Vec<_> = images
            .into_iter()
            .map(crate::core::image_platform::ImageReport::bounded)
            .collect();
        if images != self.images {
            self.reports.local_changed();
        }
        let me = self.me.clone();
        self.core.set_images(&me, images.clone());
        self.images = images;
    }

    /// This node's GPUs, to report (at most [`MAX_GPUS`]).
    pub fn set_gpus(&mut self, mut gpus: Vec<Gpu>) {
        gpus.truncate(MAX_GPUS);
        let gpus: Vec<Gpu> = gpus.into_iter().map(Gpu::bounded).collect();
        if gpus != self.gpus {
            self.reports.local_changed();
        }
        let me = self.me.clone();
        self.core
            .set_gpus(&me, Some(crate::system::device_ids(&gpus)));
        self.gpus = gpus;
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

    /// Gives the machine this node's WireGuard public key: it publishes the key and the
    /// overlay addresses the rule derives from it ([`crate::overlay`]) in its member record,
    /// and again after a rotation (a new key).
    pub fn set_wireguard_public(&mut self, key: crate::overlay::WireguardPublic) {
        self.wireguard = Some(key);
        self.published_overlay = false;
    }

    /// This node's addresses on the overlay, from its WireGuard key and the cluster's id;
    /// `None` without a key or before the document names the cluster.
    pub fn overlay_addresses(&self) -> Option<crate::overlay::NodeAddresses> {
        let key = self.wireguard.as_ref()?;
        let cluster = self.state.cluster()?;
        Some(crate::overlay::addresses(&cluster.id, key))
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

    /// The reconcile loop's latest report of this node's tasks (at most
    /// [`MAX_REPORT_TASKS`] are kept, each [`TaskStatus::bounded`]). A change that matters
    /// (state, health, generation, assignment: not a copy's age) is reported at the next
    /// tick.
    pub fn set_local_status(&mut self, mut tasks: Vec<TaskStatus>) {
        tasks.truncate(MAX_REPORT_TASKS);
        let tasks: Vec<TaskStatus> = tasks.into_iter().map(TaskStatus::bounded).collect();
        let me = self.me.clone();
        self.note_task_reports(&me, &tasks);
        if reports::fingerprint(&tasks) != reports::fingerprint(&self.local_status) {
            self.reports.local_changed();
        }
        self.local_status = tasks;
    }

    /// The reconcile loop's latest word on this node's container engine (reachable or not,
    /// since when): reported and shown in `cluster status` / `node ls`.
    pub fn set_engine_status(&mut self, engine: Option<EngineStatus>) {
        let engine = engine.map(EngineStatus::bounded);
        if engine.as_ref().map(|e| e.reachable) != self.local_engine.as_ref().map(|e| e.reachable) {
            self.reports.local_changed();
        }
        self.local_engine = engine;
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

    /// Failure detection's counters (messages, failed probes, refutations, down verdicts).
    pub fn swim_stats(&self) -> crate::core::SwimStats {
        self.core.swim().stats()
    }

    /// The broadcast tree that carries this node's changes (its neighbours and counters).
    pub fn broadcast_tree(&self) -> &Plumtree {
        &self.plum
    }

    /// How `peer` looks from here at `now`.
    pub fn liveness(&self, peer: &NodeId, now: Millis) -> Liveness {
        self.core.liveness(peer, now)
    }

    /// This node changed the document (an operator's write, a scheduling decision, an
    /// admission): the cached view is brought up to date ([`NodeMachine::refresh_view`]),
    /// and the change is persisted, flushed before it is acknowledged.
    fn changed(&mut self, flush: bool) {
        self.refresh_view();
        self.after_change(flush);
    }

    /// Changes from a peer merged in (gossip, sync): the cached view is brought up to date
    /// the same way, and the changes persisted (not flushed: the peer still holds them).
    fn merged(&mut self) {
        self.refresh_view();
        self.after_change(false);
    }

    /// Brings the cached view up to date from what the changes since the last refresh
    /// touched, O(changes) and not O(document) ([`DesiredState::take_touched`]: from the
    /// changes' operations, so a merged value that loses Automerge's order of concurrent
    /// writes but wins Warren's is named too).
    fn refresh_view(&mut self) {
        let touched = self.state.take_touched();
        if touched.all || touched.members {
            self.members_version += 1;
        }
        if let Some(view) = self.view_cache.as_mut() {
            view.refresh(&self.state, &touched, &self.me, self.config.core.rule_break);
        }
    }

    fn after_change(&mut self, flush: bool) {
        self.published_key = None;
        self.published_overlay = false;
        self.reports.view_changed();
        self.outputs.push_back(Output::Persist { flush });
    }

    /// Broadcasts this node's change along the tree (one larger than
    /// [`MAX_BROADCAST_BYTES`] travels by anti-entropy only).
    fn publish_change(&mut self, change: Vec<u8>) {
        if !change.is_empty() && change.len() <= MAX_BROADCAST_BYTES {
            let now = self.last_tick;
            self.plum.broadcast(change, now);
            self.flush_plum();
        }
    }
}
