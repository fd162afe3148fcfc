//! The desired-state document: typed reads and named writes over one Automerge document.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, Change, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::model::{
    Assignment, ClusterInfo, ClusterSetting, ClusterSettings, Epoch, HistoryEntry, Job, JobAttempt,
    JobSpec, JobState, Lease, Member, MemberOverlay, MemberState, NodeId, PortSpec, SecretRecord,
    Service, ServiceName, ServiceSpec, SlotId, TokenRecord,
};
use crate::placement::Platform;
use crate::rollout::{Deploy, Rollout, RolloutKind, RolloutState, KEPT_OLDER_SPECS};
use crate::sync_memo::SyncMemo;
use crate::volume::Volume;
use crate::CrdtError;

const CLUSTER: &str = "cluster";
const MEMBERS: &str = "members";
const SERVICES: &str = "services";
const ASSIGNMENTS: &str = "assignments";
const LEASE: &str = "lease";
const TOKENS: &str = "tokens";
const JOBS: &str = "jobs";
const SECRETS: &str = "secrets";
const VOLUMES: &str = "volumes";
/// Key of [`ClusterSettings::rebalance`] in the `cluster` map.
const SETTING_REBALANCE: &str = "rebalance";

/// Separates the node id from the per-start random suffix in an actor id.
const ACTOR_SEPARATOR: u8 = b'#';

/// Default bound of one sync message, in bytes: [`SyncState::new`]'s. A libp2p
/// request-response request carries at most 1 MiB with its envelope (the smaller of the
/// mesh's two caps, so a message within it can travel either way); 64 KiB of that is left to
/// the envelope.
pub const DEFAULT_MAX_SYNC_MESSAGE: usize = 1024 * 1024 - 64 * 1024;

/// Per-peer state of the Automerge sync protocol (what we know the peer has), and the most
/// bytes one message to that peer may take.
///
/// Keep one per remote peer for the life of a connection; a fresh one is always safe
/// (the protocol then re-discovers what the peer has, at the cost of one more round trip).
#[derive(Debug)]
pub struct SyncState {
    pub(crate) inner: sync::State,
    max_message: usize,
}

impl Default for SyncState {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncState {
    /// A state for a peer we know nothing about, whose messages stay within
    /// [`DEFAULT_MAX_SYNC_MESSAGE`] bytes.
    pub fn new() -> Self {
        Self::with_max_message(DEFAULT_MAX_SYNC_MESSAGE)
    }

    /// A state for a peer we know nothing about, whose messages stay within `max_message`
    /// bytes (encoded): see [`DesiredState::generate_sync_message`].
    pub fn with_max_message(max_message: usize) -> Self {
        Self {
            inner: sync::State::new(),
            max_message,
        }
    }

    /// The most bytes one message generated with this state takes.
    pub fn max_message(&self) -> usize {
        self.max_message
    }
}

/// Change bytes of one local write, ready to gossip. Apply with [`DesiredState::apply_change`].
pub type ChangeBytes = Vec<u8>;

/// Whether assignments are fenced (DESIGN §5): an assignment made under a lower `(epoch,
/// holder)` never replaces one made under a higher one, neither by a later write
/// ([`DesiredState::write_assignments`]) nor by a concurrent one merged in
/// ([`DesiredState::assignments`]). [`Fencing::On`] everywhere but in the simulator's test
/// that removes fencing on purpose to show its checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fencing {
    /// The rule as designed.
    #[default]
    On,
    /// No fencing: a later write of a slot replaces the standing one whatever their ranks, and
    /// of concurrent writes Automerge's own conflict winner stands.
    Off,
}

/// One cluster's desired state: an Automerge document with a typed API.
///
/// Every write is one Automerge change committed with a message (`service create web`) and the
/// author's wall-clock time; [`DesiredState::history`] reads them back as the audit trail.
/// Writes return the change's bytes so the caller can gossip them.
pub struct DesiredState {
    doc: AutoCommit,
    node: NodeId,
    clock: fn() -> i64,
    /// Heads already handed to storage: [`DesiredState::save_incremental`] returns what came
    /// after them. Kept here rather than in Automerge's own save cursor, which
    /// `AutoCommit::save` moves: a full save sent to a joining peer must never make the next
    /// incremental save skip changes that are not on disk yet.
    persisted: Vec<automerge::ChangeHash>,
    /// The heads at the last [`DesiredState::take_touched`]; `None` until the first call and
    /// after a rebuild or load (the next call then says everything).
    touched_heads: Option<Vec<automerge::ChangeHash>>,
    /// How to rebuild `doc` should Automerge panic while it changes ([`Recovery`]).
    recovery: Recovery,
    /// Sync steps already taken at the current heads ([`SyncMemo`]).
    pub(crate) sync_memo: SyncMemo,
}

/// What changed in a document since the last [`DesiredState::take_touched`]: the keys of the
/// services and assignments touched, and which small parts changed. A reader that keeps a
/// materialized view re-reads only these (issue 11: a write's cost independent of the
/// document's size).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Read everything again (the first call, or a change of a whole collection).
    pub all: bool,
    /// Names of the services touched (created, changed, deleted).
    pub services: BTreeSet<String>,
    /// Keys of the assignments touched (as [`SlotId`]'s text form).
    pub assignments: BTreeSet<String>,
    /// The member set changed.
    pub members: bool,
    /// The lease changed.
    pub lease: bool,
    /// The cluster record changed (its settings included).
    pub cluster: bool,
    /// The volumes changed.
    pub volumes: bool,
}

impl Touched {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Touched::default()
    }
}

impl std::fmt::Debug for DesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredState")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs Automerge over bytes from a peer or a file and turns a panic inside it into
/// [`CrdtError::Decode`] naming `what`.
///
/// Automerge 0.12 panics on some malformed input instead of returning an error; the fuzz
/// targets in `fuzz/` found it in `AutoCommit::load` and `load_incremental` (hexane's
/// "RawColumnIter::take would cross slab boundary", an assertion in the change collector),
/// in `apply_changes` (an `unwrap` on `None` in `import_ops`) and in `generate_sync_message`
/// after a peer's sync message with an empty Bloom filter (a remainder by zero). No panic on
/// anything a peer or a file controls. A call that mutates the replica's document runs through
/// [`DesiredState::guarded_mut`], which rebuilds the document after such a panic (see
/// [`Recovery`]).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, CrdtError>) -> Result<T, CrdtError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(CrdtError::Decode(format!(
            "{what} made the Automerge library panic (malformed input)"
        )))
    })
}

/// Parses one change chunk from a peer or a file. Automerge's parser panics on some: an
/// operation on an object whose counter exceeds 32 bits (an `unwrap` in `OpId::new`, under
/// `verify_ops`; found by the fuzz target `store_chunks`), so it runs [`guarded`].
///
/// Errors: [`CrdtError::Decode`] for bytes that are not a change, or that Automerge panicked on.
pub(crate) fn parse_change(bytes: &[u8]) -> Result<Change, CrdtError> {
    guarded("a change", || {
        Change::from_bytes(bytes.to_vec()).map_err(|e| CrdtError::Decode(e.to_string()))
    })
}

/// Reads every change of `doc` once. Automerge 0.12 may accept bytes without an error and then
/// panic when their history is read (the fuzz target `store_chunks` found an assertion in
/// the change collector under [`DesiredState::history`]); run inside [`guarded`] right after a
/// load, this refuses such bytes while the document can still be thrown away.
fn walk_history(doc: &mut AutoCommit) {
    let _ = doc.get_changes(&[]);
}

/// Refuses a change whose first op is not the one a load would give it. Automerge's document
/// format does not store a change's first op: loading derives it from the change's
/// dependencies (one past the greatest of their last ops; 1 without any), and every change
/// Automerge makes agrees. `apply_changes` does not check that a received change does, and a
/// document holding one that does not saves into bytes that no longer load ("max_op is lower
/// than start_op"; the fuzz target `store_chunks` found it): such a replica could never
/// compact its store nor answer a join, nor could any replica the change spread to. Checked
/// when every dependency is at hand (their metadata only, no op is read); a change whose
/// dependencies are missing is held by Automerge and applied later unchecked.
fn start_op_fits(doc: &mut AutoCommit, change: &Change) -> Result<(), CrdtError> {
    start_op_fits_among(doc, change, &std::collections::HashMap::new())
}

/// [`start_op_fits`] for a change that may depend on `earlier` changes arriving with it (a
/// sync message's), given by hash with their last op.
fn start_op_fits_among(
    doc: &mut AutoCommit,
    change: &Change,
    earlier: &std::collections::HashMap<automerge::ChangeHash, u64>,
) -> Result<(), CrdtError> {
    let mut deps_max_op = 0;
    for dep in change.deps() {
        let max_op = match earlier.get(dep) {
            Some(max_op) => *max_op,
            None => match doc.get_change_meta_by_hash(dep) {
                Some(meta) => meta.max_op,
                None => return Ok(()),
            },
        };
        deps_max_op = deps_max_op.max(max_op);
    }
    let start_op = change.start_op().get();
    if Some(start_op) == deps_max_op.checked_add(1) {
        Ok(())
    } else {
        Err(CrdtError::Decode(format!(
            "the change starts at op {start_op}, its dependencies end at op {deps_max_op}"
        )))
    }
}

/// Bytes of `n` as an unsigned LEB128 number (how sync messages prefix lengths and counts).
fn leb128_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Encodes `message`, keeping of its changes only a causal prefix that fits in `max` bytes
/// ([`DesiredState::generate_sync_message`]), and tells `sync` that the changes left out were
/// not sent, so that a later message of the dialogue carries them.
fn fit_message(mut message: sync::Message, sync: &mut sync::State, max: usize) -> Vec<u8> {
    let changes = std::mem::replace(&mut message.changes, sync::ChunkList::empty());
    // The message without changes ends with a count of 0 (one byte).
    let skeleton = message.clone().encode().len() - 1;
    let size = |chunks: &[&[u8]]| {
        skeleton
            + leb128_len(chunks.len())
            + chunks
                .iter()
                .map(|c| leb128_len(c.len()) + c.len())
                .sum::<usize>()
    };
    let all: Vec<&[u8]> = changes.iter().collect();
    if size(&all) <= max {
        message.changes = changes;
        return message.encode();
    }
    // Causal order: Automerge's list starts with the changes the peer asked for by hash, which
    // may depend on later ones. Kahn's algorithm, stable in Automerge's order.
    let parsed: Vec<Option<Change>> = all.iter().map(|c| parse_change(c).ok()).collect();
    let index: std::collections::HashMap<automerge::ChangeHash, usize> = parsed
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().map(|c| (c.hash(), i)))
        .collect();
    let mut waiting = vec![0usize; all.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
    for (i, change) in parsed.iter().enumerate() {
        for dep in change.iter().flat_map(|c| c.deps()) {
            if let Some(&d) = index.get(dep) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..all.len()).filter(|&i| waiting[i] == 0).collect();
    let mut budget = max.saturating_sub(skeleton + leb128_len(all.len()));
    let mut kept = Vec::new();
    // A change that does not fit stays out with everything after it; smaller independent
    // changes may still go.
    while let Some(i) = ready.pop_first() {
        let cost = leb128_len(all[i].len()) + all[i].len();
        if cost > budget {
            continue;
        }
        budget -= cost;
        kept.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if kept.is_empty() {
        tracing::debug!(
            first = all.first().map_or(0, |c| c.len()),
            max,
            "no change fits in this sync message"
        );
    }
    let sent: std::collections::HashSet<usize> = kept.iter().copied().collect();
    for (i, change) in parsed.iter().enumerate() {
        if let (false, Some(change)) = (sent.contains(&i), change) {
            sync.sent_hashes.remove(&change.hash());
        }
    }
    message.changes = sync::ChunkList::from(
        kept.iter()
            .map(|&i| all[i].to_vec())
            .collect::<Vec<Vec<u8>>>(),
    );
    message.encode()
}

/// Below this many bytes, [`Recovery::since`] is never folded into a new base.
const RECOVERY_MIN_COMPACT: usize = 1 << 20;

/// What rebuilds a replica's document after Automerge panicked half-way through a call that
/// mutates it (after such a panic the document in memory may be inconsistent): a saved document
/// and what the document took in since, in order. Keeping it costs one copy of the bytes taken
/// in (local writes, gossip, sync, loads), not a copy of the document per received change; a
/// rebuild costs a load of the whole document, paid only after a panic.
/// [`DesiredState::save`] (the store's compaction, a join) starts it over from the saved bytes,
/// and so does [`Recovery::remember`] once what came since outgrows the base.
#[derive(Default, Clone)]
struct Recovery {
    /// A saved document; empty for the empty document.
    base: Vec<u8>,
    /// What came after `base`, in segments each loaded by one `load_incremental`. Changes known
    /// to parse whole (local commits, gossiped changes) share a segment; other bytes (a store's
    /// chunk, a sync message's changes) get their own, since Automerge may keep part of such
    /// bytes without an error and would then drop whatever followed them in the same call.
    since: Vec<Segment>,
    /// Bytes in `since`.
    since_len: usize,
}

#[derive(Clone)]
struct Segment {
    bytes: Vec<u8>,
    /// Only whole, checked changes: more may be appended.
    changes_only: bool,
}

impl Recovery {
    fn from_saved(bytes: Vec<u8>) -> Self {
        Self {
            base: bytes,
            ..Self::default()
        }
    }

    /// Remembers bytes the document took in without an error: `change` when they are one
    /// whole change that parsed.
    fn push(&mut self, bytes: &[u8], change: bool) {
        self.since_len += bytes.len();
        match self.since.last_mut() {
            Some(last) if change && last.changes_only => last.bytes.extend_from_slice(bytes),
            _ => self.since.push(Segment {
                bytes: bytes.to_vec(),
                changes_only: change,
            }),
        }
    }

    /// Whether what came since the base is worth folding into a new base (a save of the
    /// document: its cost is then spread over at least as many bytes taken in as it writes).
    fn wants_new_base(&self) -> bool {
        self.since_len > self.base.len().max(RECOVERY_MIN_COMPACT)
    }

    /// The document as it was before the call that panicked.
    fn rebuild(&self) -> Result<AutoCommit, CrdtError> {
        guarded("rebuilding the document", || {
            let mut doc = if self.base.is_empty() {
                AutoCommit::new()
            } else {
                AutoCommit::load(&self.base)?
            };
            // The same calls on the same bytes as when they came: those Automerge refused
            // then (having maybe kept part of them) it refuses again.
            for segment in &self.since {
                let _ = doc.load_incremental(&segment.bytes);
            }
            Ok(doc)
        })
    }
}

/// Actor id = node id text, `#`, 8 random bytes: history still names the node, and a node that
/// crashed after gossiping an unpersisted change never reuses its (actor, seq) (DESIGN §3).
fn actor_for(node: &NodeId) -> ActorId {
    let mut bytes = node.as_str().as_bytes().to_vec();
    bytes.push(ACTOR_SEPARATOR);
    bytes.extend_from_slice(&rand::random::<[u8; 8]>());
    ActorId::from(bytes)
}

fn node_of_actor(actor: &ActorId) -> Option<NodeId> {
    let bytes = actor.to_bytes();
    // The suffix is exactly 8 random bytes, which may themselves contain the separator.
    let end = bytes.len().checked_sub(9)?;
    if bytes[end] != ACTOR_SEPARATOR {
        return None;
    }
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    Some(NodeId(text.to_string()))
}

/// Above this many operations, [`DesiredState::take_touched`] says everything changed rather
/// than resolve each operation's path.
pub const TOUCHED_MAX_OPS: usize = 20_000;

/// What the changes after `since` touched ([`DesiredState::take_touched`]), or `None` when
/// they are too many or an object of theirs cannot be resolved.
fn touched_since(doc: &mut AutoCommit, since: &[automerge::ChangeHash]) -> Option<Touched> {
    let changes = doc.get_changes(since);
    if changes.iter().map(Change::len).sum::<usize>() > TOUCHED_MAX_OPS {
        return None;
    }
    let mut touched = Touched::default();
    // Each object's first two map keys from the root, once per object.
    let mut paths: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for change in &changes {
        for op in change.decode().operations {
            let obj = op.obj.to_string();
            let path = match paths.get(&obj) {
                Some(path) => path,
                None => {
                    let path = top_keys(doc, &obj)?;
                    paths.entry(obj).or_insert(path)
                }
            };
            let key = match &op.key {
                automerge::legacy::Key::Map(k) => Some(k.to_string()),
                automerge::legacy::Key::Seq(_) => None,
            };
            let mut keys = path.iter().cloned().map(Some).chain([key]);
            let (Some(top), second) = (keys.next().flatten(), keys.next().flatten()) else {
                touched.all = true;
                continue;
            };
            // An operation on the root itself names a whole collection.
            let second = if path.is_empty() { None } else { second };
            match (top.as_str(), second) {
                (SERVICES, Some(name)) => {
                    touched.services.insert(name);
                }
                (ASSIGNMENTS, Some(key)) => {
                    touched.assignments.insert(key);
                }
                (SERVICES | ASSIGNMENTS, None) => touched.all = true,
                (MEMBERS, _) => touched.members = true,
                (LEASE, _) => touched.lease = true,
                (CLUSTER, _) => touched.cluster = true,
                (VOLUMES, _) => touched.volumes = true,
                _ => {}
            }
        }
    }
    Some(touched)
}

/// The first two map keys on the way from the root to the object `obj` (Automerge's text
/// form of an object id, `_root` or `<counter>@<actor>`): empty for the root, one key for a
/// collection (`services`), two below it (`services`, `web`). `None` when Automerge does not
/// know the object; a list index among the two reads as an unknown key (everything).
fn top_keys(doc: &AutoCommit, obj: &str) -> Option<Vec<String>> {
    let (id, _) = doc.import(obj).ok()?;
    if id == ROOT {
        return Some(Vec::new());
    }
    let mut props: Vec<automerge::Prop> = doc.parents(&id).ok()?.map(|p| p.prop).collect();
    props.reverse();
    props.truncate(2);
    props
        .into_iter()
        .map(|p| match p {
            automerge::Prop::Map(k) => Some(k),
            automerge::Prop::Seq(_) => None,
        })
        .collect()
}

/// Whether an Automerge patch changes something of `service`: a key under
/// `services.<service>`, the `services.<service>` entry itself, or an `assignments` key
/// `<service>/<slot>`.
fn patch_touches_service(patch: &automerge::Patch, service: &str) -> bool {
    use automerge::{PatchAction, Prop};
    let key = match &patch.action {
        PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key.as_str()),
        _ => None,
    };
    let props: Vec<&str> = patch
        .path
        .iter()
        .filter_map(|(_, p)| match p {
            Prop::Map(k) => Some(k.as_str()),
            Prop::Seq(_) => None,
        })
        .collect();
    let of_service = |slot_key: &str| {
        slot_key
            .rsplit_once('/')
            .is_some_and(|(name, _)| name == service)
    };
    match props.as_slice() {
        [SERVICES, name, ..] => *name == service,
        [SERVICES] => key == Some(service),
        [ASSIGNMENTS, slot, ..] => of_service(slot),
        [ASSIGNMENTS] => key.is_some_and(of_service),
        _ => false,
    }
}

/// How history names a token's kind: `api-token` or `join-token`, as the CLI does.
fn token_kind(token: &TokenRecord) -> &'static str {
    if token.is_operator() {
        "api-token"
    } else {
        "join-token"
    }
}

impl DesiredState {
    /// A new cluster's document, written by `node`: the cluster record and `node` as first member.
    pub fn new_cluster(info: &ClusterInfo, founder: &Member) -> Result<Self, CrdtError> {
        let mut state = Self::empty(founder.id.clone());
        state.init(info, founder)?;
        Ok(state)
    }

    /// As [`DesiredState::new_cluster`], with the actor suffix and the change clock fixed
    /// before the first change, so that the whole history is the same on every run. For
    /// simulations only (see [`DesiredState::set_actor_suffix`]).
    pub fn new_cluster_seeded(
        info: &ClusterInfo,
        founder: &Member,
        suffix: [u8; 8],
        clock: fn() -> i64,
    ) -> Result<Self, CrdtError> {
        let mut state = Self::empty(founder.id.clone());
        state.set_actor_suffix(suffix);
        state.set_clock(clock);
        state.init(info, founder)?;
        Ok(state)
    }

    fn init(&mut self, info: &ClusterInfo, founder: &Member) -> Result<(), CrdtError> {
        let state = self;
        let obj = state.doc.put_object(ROOT, CLUSTER, ObjType::Map)?;
        state.doc.put(&obj, "id", info.id.as_str())?;
        state.doc.put(&obj, "name", info.name.as_str())?;
        state.doc.put(&obj, "created_at", info.created_at)?;
        // Every top-level map is made once, here: two replicas that each created a missing map
        // concurrently would hold two conflicting maps, and one side's entries would vanish.
        for key in [
            MEMBERS,
            SERVICES,
            ASSIGNMENTS,
            TOKENS,
            JOBS,
            SECRETS,
            VOLUMES,
        ] {
            state.doc.put_object(ROOT, key, ObjType::Map)?;
        }
        state.write_member(founder)?;
        state.commit(format!("cluster init {}", info.name));
        Ok(())
    }

    /// An empty document owned by `node` (a joining node before it receives the cluster's).
    pub fn empty(node: NodeId) -> Self {
        let doc = AutoCommit::new().with_actor(actor_for(&node));
        Self {
            doc,
            node,
            clock: system_clock_ms,
            persisted: Vec::new(),
            touched_heads: None,
            recovery: Recovery::default(),
            sync_memo: SyncMemo::default(),
        }
    }

    /// Loads a document saved with [`DesiredState::save`] (optionally followed by incremental
    /// chunks) and continues it as `node` with a fresh actor id. Nothing of it counts as
    /// persisted: the first [`DesiredState::save_incremental`] returns all of it (a document
    /// received from a peer must reach the disk); [`DesiredState::mark_persisted`] says
    /// otherwise for bytes that came from the disk.
    ///
    /// Only for bytes this node trusts (its own store, whose frames carry a SHA-256, or a
    /// test): a document of a few KB can make Automerge 0.12 allocate gigabytes and abort the
    /// process (fuzz/README.md, "Open findings"), so a peer's document is never loaded; peers
    /// exchange changes ([`DesiredState::receive_sync_message`] refuses anything else).
    ///
    /// Errors: [`CrdtError::Automerge`] when the bytes are not a valid document,
    /// [`CrdtError::Decode`] when Automerge panicked on them (see [`guarded`]).
    pub fn load(node: NodeId, bytes: &[u8]) -> Result<Self, CrdtError> {
        let doc = guarded("a saved document", || {
            let mut doc = AutoCommit::load(bytes)?;
            walk_history(&mut doc);
            Ok(doc)
        })?
        .with_actor(actor_for(&node));
        Ok(Self {
            doc,
            node,
            clock: system_clock_ms,
            persisted: Vec::new(),
            touched_heads: None,
            recovery: Recovery::from_saved(bytes.to_vec()),
            sync_memo: SyncMemo::default(),
        })
    }

    /// A second replica holding what this one holds, written by `node` with a fresh actor
    /// id, as if [`DesiredState::empty`]`(node)` had taken in the same bytes: the same
    /// changes, the same persisted heads, the same rebuild state, the same clock. Copies the
    /// document Automerge already parsed instead of parsing its bytes again, for a process that
    /// starts many replicas from one snapshot (a simulation's 1,000 nodes each loading the
    /// founder's document). Cached sync steps ([`SyncMemo`]) are not copied: they are
    /// recomputed as needed and give the same messages.
    pub fn fork(&self, node: NodeId) -> Self {
        Self {
            doc: self.doc.clone().with_actor(actor_for(&node)),
            node,
            clock: self.clock,
            persisted: self.persisted.clone(),
            touched_heads: self.touched_heads.clone(),
            recovery: self.recovery.clone(),
            sync_memo: SyncMemo::default(),
        }
    }

    /// Replaces the random part of this replica's actor id with `suffix`. Simulations use it so
    /// that a seed replays exactly (Automerge orders concurrent values by actor id); a daemon
    /// must never call it, since a restarted node reusing an actor id could reuse sequence
    /// numbers (DESIGN §3).
    pub fn set_actor_suffix(&mut self, suffix: [u8; 8]) {
        let mut bytes = self.node.as_str().as_bytes().to_vec();
        bytes.push(ACTOR_SEPARATOR);
        bytes.extend_from_slice(&suffix);
        self.doc.set_actor(ActorId::from(bytes));
    }

    /// Replaces the wall clock used to time-stamp changes (milliseconds since the Unix epoch).
    /// Simulations pass a virtual clock.
    pub fn set_clock(&mut self, clock: fn() -> i64) {
        self.clock = clock;
    }

    /// The node this replica writes as.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Appends incremental bytes (a change chunk or a whole saved document) from storage.
    ///
    /// Errors: [`CrdtError::Automerge`] for some malformed input. Automerge 0.12 does not
    /// report every corrupt or truncated chunk (it keeps what parsed and returns `Ok`): the
    /// [`Store`](crate::Store) checks each chunk's checksum before it gets here.
    /// [`CrdtError::Decode`] when Automerge panicked on them (see [`guarded`]); the document
    /// is then unchanged.
    pub fn load_incremental(&mut self, bytes: &[u8]) -> Result<(), CrdtError> {
        let loaded = self.guarded_mut("incremental bytes", |doc| {
            let loaded = doc.load_incremental(bytes);
            walk_history(doc);
            loaded
        })?;
        // Bytes Automerge refused may still have left part of them in the document.
        self.remember(bytes, false);
        loaded?;
        Ok(())
    }

    /// Commits pending operations as one change; returns its bytes, empty when the operations
    /// wrote nothing (Automerge then commits no change).
    fn commit(&mut self, message: String) -> ChangeBytes {
        let time = (self.clock)();
        let hash = self.doc.commit_with(
            CommitOptions::default()
                .with_message(message)
                .with_time(time),
        );
        let bytes = hash
            .and_then(|h| self.doc.get_change_by_hash(&h))
            .map(|c| c.raw_bytes().to_vec())
            .unwrap_or_default();
        self.remember(&bytes, true);
        bytes
    }

    /// Keeps bytes the document took in for a rebuild ([`Recovery`]); `change` when they are
    /// whole changes that parsed.
    fn remember(&mut self, bytes: &[u8], change: bool) {
        if bytes.is_empty() {
            return;
        }
        self.recovery.push(bytes, change);
        if self.recovery.wants_new_base() {
            self.recovery = Recovery::from_saved(self.doc.save());
        }
    }

    /// Runs `f`, which changes the document with bytes a peer or a file controls; a panic
    /// inside Automerge becomes `Err(`[`CrdtError::Decode`]`)` naming `what` (see [`guarded`]),
    /// and only a panic. After one, the document is rebuilt as it was before the call
    /// ([`Recovery`]), and the next [`DesiredState::take_touched`] says everything changed.
    /// Runs on the document itself: nothing is copied unless Automerge panics. The caller
    /// [`remember`](Self::remember)s what `f` fed the document when it returned.
    fn guarded_mut<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut AutoCommit) -> T,
    ) -> Result<T, CrdtError> {
        // Automerge commits pending operations (without a message) before it takes anything
        // in; committing them here the same way lets a rebuild keep them.
        if self.doc.pending_ops() > 0 {
            if let Some(bytes) = self
                .doc
                .commit()
                .and_then(|h| self.doc.get_change_by_hash(&h))
                .map(|c| c.raw_bytes().to_vec())
            {
                self.remember(&bytes, true);
            }
        }
        let actor = self.doc.get_actor().clone();
        let doc = &mut self.doc;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(doc))) {
            Ok(result) => Ok(result),
            Err(_) => {
                match self.recovery.rebuild() {
                    Ok(doc) => {
                        self.doc = doc.with_actor(actor);
                        self.touched_heads = None;
                        self.sync_memo.clear();
                    }
                    // Bytes that loaded once do not panic the second time; should they, the
                    // document stays as the panic left it.
                    Err(e) => tracing::error!(error = %e, "could not rebuild the document"),
                }
                Err(CrdtError::Decode(format!(
                    "{what} made the Automerge library panic (malformed input)"
                )))
            }
        }
    }

    // ---- sync and persistence ----------------------------------------------------------

    /// The first-op check of [`DesiredState::apply_change`] on changes about to be loaded
    /// from storage (a log value's change chunks, in order), against this document and the
    /// changes checked before them (`earlier`, by hash with their last op; each change that
    /// passes is added). Does not change the document.
    ///
    /// Errors: [`CrdtError::Decode`] naming the first change whose first op its dependencies
    /// contradict. Bytes that are not a change are left to the load to judge.
    pub(crate) fn check_first_ops<'a>(
        &mut self,
        changes: impl IntoIterator<Item = &'a [u8]>,
        earlier: &mut std::collections::HashMap<automerge::ChangeHash, u64>,
    ) -> Result<(), CrdtError> {
        for bytes in changes {
            if let Ok(change) = parse_change(bytes) {
                start_op_fits_among(&mut self.doc, &change, earlier)?;
                earlier.insert(change.hash(), change.max_op());
            }
        }
        Ok(())
    }

    /// Applies one change received by gossip. Changes whose dependencies are missing are held
    /// by Automerge until they arrive (anti-entropy fills the gap).
    ///
    /// Errors: [`CrdtError::Decode`] for bytes that are not a change, whose header checksum is
    /// wrong, or that Automerge panicked on (see [`DesiredState::guarded_mut`]; the document is
    /// then as it was).
    pub fn apply_change(&mut self, bytes: &[u8]) -> Result<(), CrdtError> {
        let change = parse_change(bytes)?;
        // Automerge's load (the store's, a rebuild's) refuses a change whose header checksum is
        // wrong, and `apply_changes` does not check it: refused here too, so that what the
        // document holds always loads back.
        let raw = change.raw_bytes().to_vec();
        if raw.get(4..8) != Some(&change.hash().0[..4]) {
            return Err(CrdtError::Decode(
                "the change fails its checksum".to_string(),
            ));
        }
        start_op_fits(&mut self.doc, &change)?;
        let applied = self.guarded_mut("a change", |doc| doc.apply_changes([change]))?;
        self.remember(&raw, applied.is_ok());
        Ok(applied?)
    }

    /// What changed since the last call (the first call says everything): the keys named by
    /// every operation of every change the document took in since (local writes, gossiped
    /// changes, sync and loads alike), so the cost is that of the changes, not of the
    /// document.
    ///
    /// Operations, not Automerge's patches: a patch names only the values that win
    /// Automerge's own order of concurrent writes, and a merged value that loses that order
    /// can still win Warren's (the greatest `(epoch, holder)` of an assignment or lease), so
    /// no patch would name it (seen in `warren-sim run --nodes 5 --seed 1 --scenario
    /// three-way-split`). An operation names its key whether it wins or not.
    ///
    /// Says everything (`all`) after more than [`TOUCHED_MAX_OPS`] operations (a heal after
    /// a long partition: reading everything is then cheaper), and should Automerge fail or
    /// panic while the changes are read.
    pub fn take_touched(&mut self) -> Touched {
        let heads = self.doc.get_heads();
        let everything = Touched {
            all: true,
            ..Touched::default()
        };
        let Some(since) = self.touched_heads.replace(heads.clone()) else {
            return everything;
        };
        if since == heads {
            return Touched::default();
        }
        let doc = &mut self.doc;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| touched_since(doc, &since)))
            .ok()
            .flatten()
            .unwrap_or(everything)
    }

    /// The assignment that stands for `slot` (see [`DesiredState::assignments_with`]).
    pub fn assignment_of(&self, slot: &SlotId, fencing: Fencing) -> Option<Assignment> {
        let assignments = self.map(&ROOT, ASSIGNMENTS)?;
        self.standing_assignment(&assignments, &slot.key(), fencing)
    }

    /// The fencing read rule for the assignment under `key` of the `assignments` map: with
    /// [`Fencing::On`], of all its concurrent values the greatest `(epoch, holder)`.
    fn standing_assignment(
        &self,
        assignments: &ObjId,
        key: &str,
        fencing: Fencing,
    ) -> Option<Assignment> {
        match fencing {
            Fencing::On => self
                .all_maps(assignments, key)
                .into_iter()
                .filter_map(|obj| self.assignment(&obj))
                .max_by(|a, b| a.rank().cmp(&b.rank())),
            Fencing::Off => self.assignment(&self.map(assignments, key)?),
        }
    }

    /// Whether changes received are waiting for changes this replica lacks (Automerge holds a
    /// change back until its dependencies arrive): a sign that a whole history is missing,
    /// which the sync protocol fetches and gossip never will.
    pub fn has_missing_deps(&mut self) -> bool {
        !self.doc.get_missing_deps(&[]).is_empty()
    }

    /// The heads under which [`SyncMemo`] may answer a sync step: `None` while operations
    /// wait for a commit (the step commits them first) or changes wait for their dependencies
    /// (Automerge's answer then also depends on them, not only on the heads).
    fn sync_memo_heads(&mut self) -> Option<Vec<automerge::ChangeHash>> {
        if self.doc.pending_ops() > 0 || self.has_missing_deps() {
            return None;
        }
        Some(self.doc.get_heads())
    }

    /// The next message of the sync protocol for the peer behind `state`, or `None` when it has
    /// nothing to send (in sync, or waiting for the peer's answer).
    ///
    /// The message takes at most [`SyncState::max_message`] bytes: when the changes the peer
    /// lacks take more, it carries those that fit, in causal order (each after the changes it
    /// depends on), and the rest go in the next rounds of the dialogue; the peer's answer
    /// tells what it still lacks. Two things may still exceed the bound: the heads, needs and
    /// Bloom filter alone (the message then carries no change; about 10 bits per change
    /// since the last sync, so a first dialogue over more than about 800,000 changes), and a
    /// single change larger than the bound, which is never sent in such messages (the peer
    /// gets it when it asks in a dialogue whose messages to it may be larger, or by gossip).
    /// Automerge's version-2 messages, which carry the whole document as one chunk when the
    /// peer holds nothing or lacks a third of it, are never sent.
    ///
    /// Should Automerge panic on what the peer told it before (see [`guarded`]), `state` is
    /// reset (the dialogue starts over) and there is no message.
    pub fn generate_sync_message(&mut self, state: &mut SyncState) -> Option<Vec<u8>> {
        let max = state.max_message;
        // Taken before at these heads from an equal state: the same message ([`SyncMemo`]).
        let memo_heads = self.sync_memo_heads();
        if let Some(heads) = &memo_heads {
            if let Some((after, message)) = self.sync_memo.generated(heads, &state.inner, max) {
                state.inner = after;
                return message;
            }
        }
        let before = memo_heads.as_ref().map(|_| state.inner.clone());
        let sync = &mut state.inner;
        let generated = self.guarded_mut("the peer's sync state", |doc| {
            // Without the peer's version-2 capability Automerge sends changes one by one,
            // which a budget can split; a saved document cannot be.
            if let Some(capabilities) = sync.their_capabilities.as_mut() {
                capabilities.retain(|c| *c != sync::Capability::MessageV2);
            }
            doc.sync().generate_sync_message(sync)
        });
        match generated {
            Ok(message) => {
                let message = message.map(|m| fit_message(m, sync, max));
                if let (Some(heads), Some(before)) = (memo_heads, before) {
                    self.sync_memo.remember_generated(
                        &heads,
                        before,
                        max,
                        &state.inner,
                        message.as_deref(),
                    );
                }
                message
            }
            Err(e) => {
                tracing::debug!(error = %e, "resetting a sync state");
                *sync = sync::State::new();
                None
            }
        }
    }

    /// Receives one sync-protocol message from the peer behind `state`.
    ///
    /// Errors: [`CrdtError::Decode`] for malformed bytes and for a chunk that is not one
    /// change (a whole document, which a peer's message never brings in), [`CrdtError::Automerge`] for bad
    /// changes, [`CrdtError::Decode`] when Automerge panicked on the message (see [`guarded`]:
    /// the document is then unchanged and `state` reset).
    pub fn receive_sync_message(
        &mut self,
        state: &mut SyncState,
        bytes: &[u8],
    ) -> Result<(), CrdtError> {
        let message = sync::Message::decode(bytes).map_err(|e| CrdtError::Decode(e.to_string()))?;
        // A message without changes leaves the document as it is and only moves the state:
        // taken before at these heads from an equal state, the same state ([`SyncMemo`]).
        let memo = match self.sync_memo_heads() {
            Some(heads) if message.changes.is_empty() => {
                if let Some(after) = self.sync_memo.received(&heads, &state.inner, bytes) {
                    state.inner = after;
                    return Ok(());
                }
                Some((heads, state.inner.clone()))
            }
            _ => None,
        };
        // Changes only: every chunk must parse as one change, which then passes the first-op
        // check of a gossiped change ([`start_op_fits`]), in order (a later one may depend on
        // an earlier one). A whole-document chunk (Automerge's version-2 messages carry one)
        // is refused: loading a document is what Automerge cannot bound (a few KB can declare
        // gigabytes of columns, fuzz/README.md "Open findings"), and Warren never sends one
        // ([`DesiredState::generate_sync_message`] drops the version-2 capability).
        let mut earlier = std::collections::HashMap::new();
        for chunk in message.changes.iter() {
            let change = parse_change(chunk).map_err(|e| {
                CrdtError::Decode(format!(
                    "a sync message carried a chunk that is not one change ({} bytes; a \
                     whole document is never taken from a peer): {e}",
                    chunk.len()
                ))
            })?;
            start_op_fits_among(&mut self.doc, &change, &earlier)?;
            earlier.insert(change.hash(), change.max_op());
        }
        // What Automerge hands to `load_incremental` for this message, kept for a rebuild.
        let changes: Vec<u8> = message.changes.iter().flatten().copied().collect();
        let sync = &mut state.inner;
        match self.guarded_mut("a sync message", |doc| {
            doc.sync().receive_sync_message(sync, message)
        }) {
            Ok(received) => {
                self.remember(&changes, false);
                received?;
                if let Some((heads, before)) = memo {
                    self.sync_memo
                        .remember_received(&heads, before, bytes, &state.inner);
                }
                Ok(())
            }
            Err(panicked) => {
                *sync = sync::State::new();
                Err(panicked)
            }
        }
    }

    /// The whole document, compacted: for a snapshot or for a joining peer. Does not change
    /// what [`DesiredState::save_incremental`] returns next.
    pub fn save(&mut self) -> Vec<u8> {
        let bytes = self.doc.save();
        self.recovery = Recovery::from_saved(bytes.clone());
        bytes
    }

    /// Every change not yet handed to storage (since the last `save_incremental` or
    /// [`DesiredState::mark_persisted`]), as Automerge change chunks; empty when there is none.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        let bytes = self.doc.save_after(&self.persisted);
        self.persisted = self.doc.get_heads();
        bytes
    }

    /// Storage now holds everything up to the current heads (after it wrote a full snapshot, or
    /// after the state was loaded from it).
    pub fn mark_persisted(&mut self) {
        self.persisted = self.doc.get_heads();
    }

    /// Hex hashes of the document's heads, sorted: equal on two replicas iff they hold the same
    /// changes.
    pub fn heads(&mut self) -> Vec<String> {
        let mut heads: Vec<String> = self.doc.get_heads().iter().map(|h| h.to_string()).collect();
        heads.sort();
        heads
    }

    /// The changes the document took in after `heads` (hex hashes, as [`DesiredState::heads`]
    /// returned them earlier on this replica): hash, author, time and message of each, in
    /// causal order. Reads the changes' metadata only (nothing is re-encoded), so it costs the
    /// changes taken in since `heads`, not the document. A hash that is malformed or unknown
    /// here is left out of `heads`: with none left, every change is returned.
    pub fn changes_since(&mut self, heads: &[String]) -> Vec<HistoryEntry> {
        let heads: Vec<automerge::ChangeHash> =
            heads.iter().filter_map(|h| h.parse().ok()).collect();
        self.doc
            .get_changes_meta(&heads)
            .into_iter()
            .map(|c| HistoryEntry {
                hash: c.hash.to_string(),
                node: node_of_actor(&c.actor),
                time: c.timestamp,
                message: c.message.map(|m| m.into_owned()).unwrap_or_default(),
            })
            .collect()
    }

    /// Whether the document holds the change whose hex hash is `hash` (as [`HistoryEntry::hash`]
    /// and [`DesiredState::heads`] print it); `false` for a malformed hash.
    pub fn has_change(&mut self, hash: &str) -> bool {
        hash.parse::<automerge::ChangeHash>()
            .is_ok_and(|h| self.doc.get_change_by_hash(&h).is_some())
    }

    /// The audit trail: every change with its author node, time and message, oldest first.
    pub fn history(&mut self) -> Vec<HistoryEntry> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .map(|c| HistoryEntry {
                hash: c.hash().to_string(),
                node: node_of_actor(c.actor_id()),
                time: c.timestamp(),
                message: c.message().map(str::to_string).unwrap_or_default(),
            })
            .collect()
    }

    /// The newest changes that touched `service` (its record, spec or any of its
    /// assignments), newest first, at most `limit`. Each change is diffed against its
    /// dependencies, so this costs one diff per change examined: it is an operator's query,
    /// not a hot path.
    pub fn service_history(&mut self, service: &ServiceName, limit: usize) -> Vec<HistoryEntry> {
        let changes = self.doc.get_changes(&[]);
        let mut found = Vec::new();
        for change in changes.iter().rev() {
            if found.len() >= limit {
                break;
            }
            let patches = self.doc.diff(change.deps(), &[change.hash()]);
            if patches
                .iter()
                .any(|p| patch_touches_service(p, service.as_str()))
            {
                found.push(HistoryEntry {
                    hash: change.hash().to_string(),
                    node: node_of_actor(change.actor_id()),
                    time: change.timestamp(),
                    message: change.message().map(str::to_string).unwrap_or_default(),
                });
            }
        }
        found
    }

    // ---- reads ---------------------------------------------------------------------------

    fn map(&self, parent: &ObjId, key: &str) -> Option<ObjId> {
        match self.doc.get(parent, key) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        }
    }

    fn scalar(&self, obj: &ObjId, key: &str) -> Option<ScalarValue> {
        match self.doc.get(obj, key) {
            Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
            _ => None,
        }
    }

    fn string(&self, obj: &ObjId, key: &str) -> Option<String> {
        self.scalar(obj, key)
            .and_then(|s| s.as_str().map(str::to_string))
    }

    fn uint(&self, obj: &ObjId, key: &str) -> Option<u64> {
        match self.scalar(obj, key)? {
            ScalarValue::Uint(v) => Some(v),
            ScalarValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A service's generation as every replica reads it: its `generation` key's value; when
    /// the key holds several values, one past the greatest. Several values means concurrent
    /// updates that each needed new containers, typically one on each side of a partition:
    /// each side wrote its own next generation (often the same number) and ran its own spec
    /// under it, while the merged spec (each field's merge) is neither. Reading a generation
    /// neither side ran makes every slot "not updated", so the lease holder rolls the merged
    /// spec out to all of them under its update policy ([`Rollout`] records of the sides no
    /// longer target it: the rollout engine starts a fresh one). The next update's write
    /// replaces every value, so the read is the written value again. Depends only on the set
    /// of values, so every replica that merged the same changes reads the same generation.
    fn generation(&self, obj: &ObjId) -> u64 {
        let values: Vec<u64> = self
            .doc
            .get_all(obj, "generation")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(v, _)| match v {
                Value::Scalar(s) => match s.as_ref() {
                    ScalarValue::Uint(v) => Some(*v),
                    ScalarValue::Int(v) => u64::try_from(*v).ok(),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let greatest = values.iter().copied().max().unwrap_or_default();
        if values.len() > 1 {
            greatest.saturating_add(1)
        } else {
            greatest
        }
    }

    fn int(&self, obj: &ObjId, key: &str) -> Option<i64> {
        match self.scalar(obj, key)? {
            ScalarValue::Int(v) | ScalarValue::Timestamp(v) => Some(v),
            ScalarValue::Uint(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    fn boolean(&self, obj: &ObjId, key: &str) -> Option<bool> {
        self.scalar(obj, key).and_then(|s| s.as_bool())
    }

    fn string_map(&self, obj: &ObjId, key: &str) -> BTreeMap<String, String> {
        let Some(map) = self.map(obj, key) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&map)
            .filter_map(|k| self.string(&map, &k).map(|v| (k, v)))
            .collect()
    }

    /// A member record's `arch` and `os`; `unknown` where absent (records written before
    /// members announced them) or empty.
    fn platform_of(&self, obj: &ObjId) -> Platform {
        let field = |key| {
            self.string(obj, key)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| crate::placement::UNKNOWN_PLATFORM.to_string())
        };
        Platform {
            arch: field("arch"),
            os: field("os"),
        }
    }

    fn json<T: serde::de::DeserializeOwned + Default>(&self, obj: &ObjId, key: &str) -> T {
        self.string(obj, key)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// All map objects stored at `parent.key`, conflicts included (concurrent `put_object`s).
    fn all_maps(&self, parent: &ObjId, key: &str) -> Vec<ObjId> {
        self.doc
            .get_all(parent, key)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(v, id)| matches!(v, Value::Object(ObjType::Map)).then_some(id))
            .collect()
    }

    /// The cluster record; `None` in an empty document.
    pub fn cluster(&self) -> Option<ClusterInfo> {
        let obj = self.map(&ROOT, CLUSTER)?;
        Some(ClusterInfo {
            id: self.string(&obj, "id")?,
            name: self.string(&obj, "name").unwrap_or_default(),
            created_at: self.int(&obj, "created_at").unwrap_or_default(),
        })
    }

    /// The cluster settings in force on this replica. A setting the document does not hold,
    /// or holds as a value this version cannot read, reads as its default; an empty document
    /// reads as all defaults. See [`ClusterSettings`] for the merge rule.
    pub fn cluster_settings(&self) -> ClusterSettings {
        let defaults = ClusterSettings::default();
        let Some(obj) = self.map(&ROOT, CLUSTER) else {
            return defaults;
        };
        ClusterSettings {
            rebalance: self
                .boolean(&obj, SETTING_REBALANCE)
                .unwrap_or(defaults.rebalance),
        }
    }

    /// Every member, by id.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        let Some(members) = self.map(&ROOT, MEMBERS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&members)
            .filter_map(|id| {
                let obj = self.map(&members, &id)?;
                let id = NodeId(id);
                Some((
                    id.clone(),
                    Member {
                        id,
                        name: self.string(&obj, "name").unwrap_or_default(),
                        addrs: self.json(&obj, "addrs"),
                        labels: self.string_map(&obj, "labels"),
                        capabilities: self.string_map(&obj, "capabilities").into_keys().collect(),
                        platform: self.platform_of(&obj),
                        admitted_by: NodeId(self.string(&obj, "admitted_by").unwrap_or_default()),
                        admitted_at: self.int(&obj, "admitted_at").unwrap_or_default(),
                        state: MemberState::parse(&self.string(&obj, "state").unwrap_or_default()),
                        availability: self
                            .string(&obj, "availability")
                            .and_then(|w| crate::Availability::parse(&w))
                            .unwrap_or_default(),
                    },
                ))
            })
            .collect()
    }

    /// Every service, tombstones included (check [`Service::deleted`]).
    pub fn services(&self) -> BTreeMap<ServiceName, Service> {
        let Some(services) = self.map(&ROOT, SERVICES) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&services)
            .filter_map(|name| {
                let name = ServiceName::new(name).ok()?;
                let service = self.read_service(&services, &name)?;
                Some((name, service))
            })
            .collect()
    }

    /// One live (not deleted) service.
    pub fn service(&self, name: &ServiceName) -> Option<Service> {
        self.service_record(name).filter(|s| !s.deleted)
    }

    /// One service as [`DesiredState::services`] has it: a tombstone included.
    pub fn service_record(&self, name: &ServiceName) -> Option<Service> {
        let services = self.map(&ROOT, SERVICES)?;
        self.read_service(&services, name)
    }

    /// The object of service `name` that stands: of concurrent (re-)creations, a live one over a
    /// tombstoned one (a delete never removes a creation it had not seen), then the highest
    /// generation; equal ranks resolve by Automerge's deterministic order.
    fn service_obj(&self, services: &ObjId, name: &ServiceName) -> Option<ObjId> {
        let mut best: Option<((bool, u64), ObjId)> = None;
        for obj in self.all_maps(services, name.as_str()) {
            let live = !self.boolean(&obj, "deleted").unwrap_or(false);
            let rank = (live, self.generation(&obj));
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, obj));
            }
        }
        best.map(|(_, obj)| obj)
    }

    fn read_spec(&self, spec: &ObjId) -> ServiceSpec {
        ServiceSpec {
            image: self.string(spec, "image").unwrap_or_default(),
            replicas: self
                .uint(spec, "replicas")
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or_default(),
            command: self.json(spec, "command"),
            env: self.string_map(spec, "env"),
            ports: self.json::<Vec<PortSpec>>(spec, "ports"),
            secrets: self.json(spec, "secrets"),
            // Keys written since issue 6: absent in older documents, which read as defaults.
            health: self.json(spec, "health"),
            restart: self.json(spec, "restart"),
            resources: self.json(spec, "resources"),
            stop_timeout_ms: self.json(spec, "stop_timeout_ms"),
            partition: self.json(spec, "partition"),
            // Since issue 16.
            placement: self.json(spec, "placement"),
            mounts: self.json(spec, "mounts"),
            gpus: self
                .uint(spec, "gpus")
                .and_then(|g| u32::try_from(g).ok())
                .unwrap_or_default(),
            mode: self.json(spec, "mode"),
            // Since issue 15.
            update: self.json(spec, "update"),
            rollback: self.json(spec, "rollback"),
            deploy: self.json(spec, "deploy"),
        }
    }

    /// `services.<name>.specs`: generation → spec JSON (issue 15); unreadable entries skipped.
    fn older_specs(&self, obj: &ObjId) -> BTreeMap<u64, ServiceSpec> {
        let Some(specs) = self.map(obj, "specs") else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&specs)
            .filter_map(|k| {
                let generation = k.parse::<u64>().ok()?;
                let spec = serde_json::from_str(&self.string(&specs, &k)?).ok()?;
                Some((generation, spec))
            })
            .collect()
    }

    fn read_service(&self, services: &ObjId, name: &ServiceName) -> Option<Service> {
        let obj = self.service_obj(services, name)?;
        let spec = self.map(&obj, "spec")?;
        Some(Service {
            name: name.clone(),
            generation: self.generation(&obj),
            deleted: self.boolean(&obj, "deleted").unwrap_or(false),
            spec: self.read_spec(&spec),
            previous_spec: self
                .string(&obj, "previous_spec")
                .and_then(|s| serde_json::from_str(&s).ok()),
            older_specs: self.older_specs(&obj),
            rollout: self
                .string(&obj, "rollout")
                .and_then(|s| serde_json::from_str(&s).ok()),
        })
    }

    /// The lease in force: of concurrent claims (two sides of a partition), the greatest
    /// `(epoch, holder)` stands, on every replica alike. This is the lease merge rule.
    pub fn lease(&self) -> Option<Lease> {
        self.lease_claims().into_iter().max()
    }

    /// Every lease claim standing in the document: one, or several concurrent claims after a
    /// partition merged (until the next claim overwrites them all). Unordered; empty in a
    /// cluster whose lease was never claimed. Use [`DesiredState::lease`] for the lease in force.
    pub fn lease_claims(&self) -> Vec<Lease> {
        self.all_maps(&ROOT, LEASE)
            .into_iter()
            .filter_map(|obj| {
                Some(Lease {
                    epoch: Epoch(self.uint(&obj, "epoch")?),
                    holder: NodeId(self.string(&obj, "holder")?),
                })
            })
            .collect()
    }

    /// The assignment that stands for every slot: of concurrent writes of one slot, the one made
    /// under the greatest `(epoch, holder)` (fencing on read, DESIGN §5).
    pub fn assignments(&self) -> BTreeMap<SlotId, Assignment> {
        self.assignments_with(Fencing::On)
    }

    /// [`DesiredState::assignments`] with the fencing rule on, or off on purpose: with
    /// [`Fencing::Off`], of concurrent writes of one slot the one Automerge's own conflict
    /// resolution picks stands (the greatest operation id), whatever its `(epoch, holder)`.
    /// `Off` exists only for the simulator's test that shows removing fencing is caught.
    pub fn assignments_with(&self, fencing: Fencing) -> BTreeMap<SlotId, Assignment> {
        let Some(assignments) = self.map(&ROOT, ASSIGNMENTS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&assignments)
            .filter_map(|key| {
                let slot = SlotId::parse(&key)?;
                let best = self.standing_assignment(&assignments, &key, fencing)?;
                Some((slot, best))
            })
            .collect()
    }

    /// Every value standing for each slot's assignment: one, or several after concurrent
    /// writes merged (until the next write of the slot overwrites them all). Unordered within
    /// a slot. Use [`DesiredState::assignments`] for the one that stands.
    pub fn assignment_values(&self) -> BTreeMap<SlotId, Vec<Assignment>> {
        let Some(assignments) = self.map(&ROOT, ASSIGNMENTS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&assignments)
            .filter_map(|key| {
                let slot = SlotId::parse(&key)?;
                let values: Vec<Assignment> = self
                    .all_maps(&assignments, &key)
                    .into_iter()
                    .filter_map(|obj| self.assignment(&obj))
                    .collect();
                (!values.is_empty()).then_some((slot, values))
            })
            .collect()
    }

    /// The rank `(epoch, holder)` of every value standing for each slot's assignment: the
    /// values of [`DesiredState::assignment_values`] (the same slots, values and order), with
    /// only what ranks them read: three fields per value instead of five, no JSON. For a
    /// checker that compares ranks after every change (the simulator's fencing check).
    pub fn assignment_ranks(&self) -> BTreeMap<SlotId, Vec<(Epoch, NodeId)>> {
        let Some(assignments) = self.map(&ROOT, ASSIGNMENTS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&assignments)
            .filter_map(|key| {
                let slot = SlotId::parse(&key)?;
                let ranks: Vec<(Epoch, NodeId)> = self
                    .all_maps(&assignments, &key)
                    .into_iter()
                    .filter_map(|obj| {
                        // As `assignment`: a value without a node or an epoch is none.
                        self.string(&obj, "node")?;
                        let epoch = Epoch(self.uint(&obj, "epoch")?);
                        Some((
                            epoch,
                            NodeId(self.string(&obj, "holder").unwrap_or_default()),
                        ))
                    })
                    .collect();
                (!ranks.is_empty()).then_some((slot, ranks))
            })
            .collect()
    }

    /// One assignment object; `None` when it has no node or epoch.
    fn assignment(&self, obj: &ObjId) -> Option<Assignment> {
        Some(Assignment {
            node: NodeId(self.string(obj, "node")?),
            epoch: Epoch(self.uint(obj, "epoch")?),
            holder: NodeId(self.string(obj, "holder").unwrap_or_default()),
            spec_generation: self.uint(obj, "spec_generation").unwrap_or_default(),
            displaced: self
                .json::<Vec<String>>(obj, "displaced")
                .into_iter()
                .map(NodeId)
                .collect(),
            // A peer's document is not trusted to be small: at most as many ids as a task
            // may hold, each as long as a device id is at most.
            gpus: self
                .json::<Vec<String>>(obj, "gpus")
                .into_iter()
                .filter(|g| g.len() <= crate::MAX_GPU_ID_BYTES)
                .take(crate::MAX_SERVICE_GPUS as usize)
                .collect(),
        })
    }

    /// Join tokens and operator (API) tokens by id; [`TokenRecord::role`] tells them apart.
    pub fn tokens(&self) -> BTreeMap<String, TokenRecord> {
        let Some(tokens) = self.map(&ROOT, TOKENS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&tokens)
            .filter_map(|id| {
                let obj = self.map(&tokens, &id)?;
                Some((
                    id.clone(),
                    TokenRecord {
                        id,
                        digest: self.string(&obj, "digest")?,
                        expires_at: self.int(&obj, "expires_at").unwrap_or_default(),
                        uses_left: self.uint(&obj, "uses_left").unwrap_or_default(),
                        role: self.string(&obj, "role").unwrap_or_default(),
                        created_at: self.int(&obj, "created_at").unwrap_or_default(),
                        labels: self.string_map(&obj, "labels"),
                        revoked: self.boolean(&obj, "revoked").unwrap_or(false),
                        minted_by: self.string(&obj, "minted_by").unwrap_or_default(),
                    },
                ))
            })
            .collect()
    }

    fn bytes(&self, obj: &ObjId, key: &str) -> Option<Vec<u8>> {
        match self.scalar(obj, key)? {
            ScalarValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    fn entries(&self, top: &str) -> Vec<(String, ObjId)> {
        let Some(map) = self.map(&ROOT, top) else {
            return Vec::new();
        };
        self.doc
            .keys(&map)
            .filter_map(|k| self.map(&map, &k).map(|obj| (k, obj)))
            .collect()
    }

    /// Every job, by id.
    pub fn jobs(&self) -> BTreeMap<String, Job> {
        self.entries(JOBS)
            .into_iter()
            .filter_map(|(id, obj)| {
                let spec = self.map(&obj, "spec")?;
                let attempts = match self.doc.get(&obj, "attempts") {
                    Ok(Some((Value::Object(ObjType::List), list))) => (0..self.doc.length(&list))
                        .filter_map(|i| match self.doc.get(&list, i) {
                            Ok(Some((Value::Object(ObjType::Map), a))) => Some(JobAttempt {
                                number: self
                                    .uint(&a, "number")
                                    .and_then(|n| u32::try_from(n).ok())
                                    .unwrap_or_default(),
                                node: NodeId(self.string(&a, "node").unwrap_or_default()),
                                started_at: self.int(&a, "started_at").unwrap_or_default(),
                                exit_code: self.int(&a, "exit_code"),
                            }),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let job = Job {
                    id: id.clone(),
                    spec: JobSpec {
                        image: self.string(&spec, "image").unwrap_or_default(),
                        command: self.json(&spec, "command"),
                        env: self.string_map(&spec, "env"),
                    },
                    priority: self.int(&obj, "priority").unwrap_or_default(),
                    max_attempts: self
                        .uint(&obj, "max_attempts")
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1),
                    attempts,
                    state: JobState::parse(&self.string(&obj, "state").unwrap_or_default()),
                };
                Some((id, job))
            })
            .collect()
    }

    /// Every secret (ciphertext and sealed keys only), by name.
    pub fn secrets(&self) -> BTreeMap<String, SecretRecord> {
        self.entries(SECRETS)
            .into_iter()
            .filter_map(|(name, obj)| {
                let recipients = self
                    .map(&obj, "recipients")
                    .map(|r| {
                        self.doc
                            .keys(&r)
                            .filter_map(|peer| self.bytes(&r, &peer).map(|key| (NodeId(peer), key)))
                            .collect()
                    })
                    .unwrap_or_default();
                let record = SecretRecord {
                    name: name.clone(),
                    version: self.uint(&obj, "version").unwrap_or_default(),
                    ciphertext: self.bytes(&obj, "ciphertext")?,
                    nonce: self.bytes(&obj, "nonce")?,
                    recipients,
                };
                Some((name, record))
            })
            .collect()
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> BTreeMap<String, Volume> {
        self.entries(VOLUMES)
            .into_iter()
            .map(|(name, obj)| {
                let volume = Volume {
                    name: name.clone(),
                    driver: self.string(&obj, "driver").unwrap_or_default(),
                    node: NodeId(self.string(&obj, "node").unwrap_or_default()),
                    options: self.string_map(&obj, "options"),
                };
                (name, volume)
            })
            .collect()
    }

    // ---- writes --------------------------------------------------------------------------

    fn ensure_map(&mut self, parent: &ObjId, key: &str) -> Result<ObjId, CrdtError> {
        match self.map(parent, key) {
            Some(id) => Ok(id),
            None => Ok(self.doc.put_object(parent, key, ObjType::Map)?),
        }
    }

    fn write_member(&mut self, member: &Member) -> Result<(), CrdtError> {
        let members = self.ensure_map(&ROOT, MEMBERS)?;
        let obj = self
            .doc
            .put_object(&members, member.id.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "name", member.name.as_str())?;
        self.doc
            .put(&obj, "addrs", serde_json::to_string(&member.addrs)?)?;
        let labels = self.doc.put_object(&obj, "labels", ObjType::Map)?;
        for (k, v) in &member.labels {
            self.doc.put(&labels, k.as_str(), v.as_str())?;
        }
        let capabilities = self.doc.put_object(&obj, "capabilities", ObjType::Map)?;
        for name in &member.capabilities {
            self.doc.put(&capabilities, name.as_str(), "")?;
        }
        self.doc.put(&obj, "arch", member.platform.arch.as_str())?;
        self.doc.put(&obj, "os", member.platform.os.as_str())?;
        self.doc
            .put(&obj, "admitted_by", member.admitted_by.as_str())?;
        self.doc.put(&obj, "admitted_at", member.admitted_at)?;
        self.doc.put(&obj, "state", member.state.as_str())?;
        self.doc
            .put(&obj, "availability", member.availability.as_str())?;
        Ok(())
    }

    /// Admits (or re-writes) a member. Returns the change to gossip.
    pub fn add_member(&mut self, member: &Member) -> Result<ChangeBytes, CrdtError> {
        self.write_member(member)?;
        Ok(self.commit(format!(
            "member add {} ({})",
            member.name,
            member.id.short()
        )))
    }

    /// Replaces a member's addresses (a node that restarted on new ports).
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn set_member_addrs(
        &mut self,
        id: &NodeId,
        addrs: &[String],
    ) -> Result<ChangeBytes, CrdtError> {
        let members = self
            .map(&ROOT, MEMBERS)
            .ok_or_else(|| CrdtError::UnknownMember(id.clone()))?;
        let obj = self
            .map(&members, id.as_str())
            .ok_or_else(|| CrdtError::UnknownMember(id.clone()))?;
        self.doc.put(&obj, "addrs", serde_json::to_string(addrs)?)?;
        Ok(self.commit(format!("member addrs {}", id.short())))
    }

    /// Changes member `id`'s labels in one change: puts each of `add` (the value wins over
    /// the one there), then deletes each of `remove`. Each key is its own entry in the
    /// document, so concurrent changes of different keys at different peers all survive the
    /// merge; concurrent changes of one key resolve to one of them on every peer. Returns an
    /// empty change when nothing differs. The caller validates keys and values
    /// ([`crate::validate_label`]).
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn update_member_labels(
        &mut self,
        id: &NodeId,
        add: &BTreeMap<String, String>,
        remove: &BTreeSet<String>,
    ) -> Result<ChangeBytes, CrdtError> {
        let unknown = || CrdtError::UnknownMember(id.clone());
        let members = self.map(&ROOT, MEMBERS).ok_or_else(unknown)?;
        let obj = self.map(&members, id.as_str()).ok_or_else(unknown)?;
        let current = self.string_map(&obj, "labels");
        let labels = self.ensure_map(&obj, "labels")?;
        let mut changed = false;
        for (k, v) in add {
            if current.get(k) != Some(v) {
                self.doc.put(&labels, k.as_str(), v.as_str())?;
                changed = true;
            }
        }
        for k in remove.iter().filter(|k| current.contains_key(*k)) {
            if !add.contains_key(k) {
                self.doc.delete(&labels, k.as_str())?;
                changed = true;
            }
        }
        if !changed {
            return Ok(Vec::new());
        }
        let mut words: Vec<String> = add.iter().map(|(k, v)| format!("+{k}={v}")).collect();
        words.extend(remove.iter().map(|k| format!("-{k}")));
        Ok(self.commit(format!("member labels {} {}", id.short(), words.join(" "))))
    }

    /// Sets member `id`'s availability (`node update --availability`): one register, so
    /// concurrent changes resolve to one of them on every peer. Returns an empty change when
    /// it is already `availability`.
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn set_member_availability(
        &mut self,
        id: &NodeId,
        availability: crate::Availability,
    ) -> Result<ChangeBytes, CrdtError> {
        let unknown = || CrdtError::UnknownMember(id.clone());
        let members = self.map(&ROOT, MEMBERS).ok_or_else(unknown)?;
        let obj = self.map(&members, id.as_str()).ok_or_else(unknown)?;
        let current = self
            .string(&obj, "availability")
            .and_then(|w| crate::Availability::parse(&w))
            .unwrap_or_default();
        if current == availability {
            return Ok(Vec::new());
        }
        self.doc.put(&obj, "availability", availability.as_str())?;
        Ok(self.commit(format!("member availability {} {availability}", id.short())))
    }

    /// Publishes member `id`'s capabilities (replacing the set there, name by name) and its
    /// platform, as the member announces them at start. Returns an empty change when nothing
    /// differs.
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn set_member_platform(
        &mut self,
        id: &NodeId,
        capabilities: &BTreeSet<String>,
        platform: &Platform,
    ) -> Result<ChangeBytes, CrdtError> {
        let unknown = || CrdtError::UnknownMember(id.clone());
        let members = self.map(&ROOT, MEMBERS).ok_or_else(unknown)?;
        let obj = self.map(&members, id.as_str()).ok_or_else(unknown)?;
        let current: BTreeSet<String> = self.string_map(&obj, "capabilities").into_keys().collect();
        let mut changed = false;
        if current != *capabilities {
            let map = self.ensure_map(&obj, "capabilities")?;
            for gone in current.difference(capabilities) {
                self.doc.delete(&map, gone.as_str())?;
            }
            for new in capabilities.difference(&current) {
                self.doc.put(&map, new.as_str(), "")?;
            }
            changed = true;
        }
        if self.platform_of(&obj) != *platform {
            self.doc.put(&obj, "arch", platform.arch.as_str())?;
            self.doc.put(&obj, "os", platform.os.as_str())?;
            changed = true;
        }
        if !changed {
            return Ok(Vec::new());
        }
        Ok(self.commit(format!("member platform {}", id.short())))
    }

    /// Creates a service (or re-creates a deleted one with a higher generation).
    ///
    /// Errors: [`CrdtError::ServiceExists`] when a live service has that name.
    pub fn create_service(
        &mut self,
        name: &ServiceName,
        spec: &ServiceSpec,
    ) -> Result<ChangeBytes, CrdtError> {
        let services = self.ensure_map(&ROOT, SERVICES)?;
        let previous = self.read_service(&services, name);
        if let Some(existing) = &previous {
            if !existing.deleted {
                return Err(CrdtError::ServiceExists(name.clone()));
            }
        }
        let generation = previous.map(|s| s.generation + 1).unwrap_or(1);
        let obj = self
            .doc
            .put_object(&services, name.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "generation", generation)?;
        self.doc.put(&obj, "deleted", false)?;
        let spec_obj = self.doc.put_object(&obj, "spec", ObjType::Map)?;
        self.doc.put(&spec_obj, "image", spec.image.as_str())?;
        self.doc
            .put(&spec_obj, "replicas", u64::from(spec.replicas))?;
        self.doc
            .put(&spec_obj, "command", serde_json::to_string(&spec.command)?)?;
        self.doc
            .put(&spec_obj, "ports", serde_json::to_string(&spec.ports)?)?;
        self.doc
            .put(&spec_obj, "secrets", serde_json::to_string(&spec.secrets)?)?;
        self.put_runtime_fields(&spec_obj, None, spec)?;
        let env = self.doc.put_object(&spec_obj, "env", ObjType::Map)?;
        for (k, v) in &spec.env {
            self.doc.put(&env, k.as_str(), v.as_str())?;
        }
        Ok(self.commit(format!("service create {name}")))
    }

    fn live_service_obj(&self, name: &ServiceName) -> Result<(ObjId, Service), CrdtError> {
        let unknown = || CrdtError::UnknownService(name.clone());
        let services = self.map(&ROOT, SERVICES).ok_or_else(unknown)?;
        match self.read_service(&services, name) {
            Some(s) if !s.deleted => {
                Ok((self.service_obj(&services, name).ok_or_else(unknown)?, s))
            }
            _ => Err(unknown()),
        }
    }

    /// Changes a service's spec, field by field: only fields that differ are written, so a
    /// concurrent update of another field survives the merge. The old spec is kept as
    /// `previous_spec` (for a rollback); the generation increases when anything but the replica
    /// count changed, since that needs new containers. Returns an empty change when `spec` is
    /// what is already there.
    ///
    /// Errors: [`CrdtError::UnknownService`].
    pub fn update_service(
        &mut self,
        name: &ServiceName,
        spec: &ServiceSpec,
    ) -> Result<ChangeBytes, CrdtError> {
        let (obj, current) = self.live_service_obj(name)?;
        if current.spec == *spec {
            return Ok(Vec::new());
        }
        let spec_obj = self.ensure_map(&obj, "spec")?;
        let old = &current.spec;
        self.put_spec_fields(&spec_obj, old, spec)?;
        // Replicas and the restart policy are the reconcile loop's business: the running
        // containers stay (a policy change lets a `failed` task be restarted again). So is
        // placement: the scheduler moves only the replicas whose node no longer suits it.
        // The rollout policies are the next rollout's. Anything else needs new containers:
        // a new generation, rolled out under the update policy.
        if !old.same_tasks(spec) {
            let to = current.generation.saturating_add(1);
            self.put_generation(
                &obj,
                &current,
                Rollout {
                    kind: RolloutKind::Update,
                    from_generation: current.generation,
                    to_generation: to,
                    state: RolloutState::Updating,
                    policy: spec.update,
                    deploy: spec.deploy,
                    updated_at_ms: 0,
                    traffic_generation: None,
                },
            )?;
        }
        Ok(self.commit(format!("service update {name}")))
    }

    /// Writes the fields of `spec` that differ from `old` under `spec_obj`, each under its
    /// own key so that concurrent updates of different fields merge.
    fn put_spec_fields(
        &mut self,
        spec_obj: &ObjId,
        old: &ServiceSpec,
        spec: &ServiceSpec,
    ) -> Result<(), CrdtError> {
        if old.image != spec.image {
            self.doc.put(spec_obj, "image", spec.image.as_str())?;
        }
        if old.replicas != spec.replicas {
            self.doc
                .put(spec_obj, "replicas", u64::from(spec.replicas))?;
        }
        if old.command != spec.command {
            self.doc
                .put(spec_obj, "command", serde_json::to_string(&spec.command)?)?;
        }
        if old.secrets != spec.secrets {
            self.doc
                .put(spec_obj, "secrets", serde_json::to_string(&spec.secrets)?)?;
        }
        if old.ports != spec.ports {
            self.doc
                .put(spec_obj, "ports", serde_json::to_string(&spec.ports)?)?;
        }
        self.put_runtime_fields(spec_obj, Some(old), spec)?;
        if old.env != spec.env {
            let env = self.ensure_map(spec_obj, "env")?;
            for key in old.env.keys().filter(|k| !spec.env.contains_key(*k)) {
                self.doc.delete(&env, key.as_str())?;
            }
            for (k, v) in spec.env.iter().filter(|(k, v)| old.env.get(*k) != Some(*v)) {
                self.doc.put(&env, k.as_str(), v.as_str())?;
            }
        }
        Ok(())
    }

    /// Starts the rollout to a new generation: `generation` + 1, the replaced spec kept as
    /// `previous_spec` and under `specs.<old generation>` (the oldest beyond
    /// [`KEPT_OLDER_SPECS`] dropped), and `rollout` written.
    fn put_generation(
        &mut self,
        obj: &ObjId,
        current: &Service,
        rollout: Rollout,
    ) -> Result<(), CrdtError> {
        self.doc.put(obj, "generation", rollout.to_generation)?;
        self.doc
            .put(obj, "previous_spec", serde_json::to_string(&current.spec)?)?;
        let specs = self.ensure_map(obj, "specs")?;
        self.doc.put(
            &specs,
            current.generation.to_string().as_str(),
            serde_json::to_string(&current.spec)?,
        )?;
        let mut kept: Vec<u64> = current.older_specs.keys().copied().collect();
        kept.push(current.generation);
        kept.sort_unstable();
        kept.dedup();
        let drop = kept.len().saturating_sub(KEPT_OLDER_SPECS);
        for generation in &kept[..drop] {
            self.doc.delete(&specs, generation.to_string().as_str())?;
        }
        self.doc
            .put(obj, "rollout", serde_json::to_string(&rollout)?)?;
        Ok(())
    }

    /// Writes the rollout record of service `name` (the lease holder as a rollout advances,
    /// or an API peer for `service promote`/pause). A record for another generation than the
    /// service's current one is refused: it belongs to a superseded rollout.
    ///
    /// Errors: [`CrdtError::UnknownService`]; [`CrdtError::InvalidSpec`] when
    /// `rollout.to_generation` is not the current generation.
    pub fn set_rollout(
        &mut self,
        name: &ServiceName,
        rollout: &Rollout,
    ) -> Result<ChangeBytes, CrdtError> {
        let (obj, current) = self.rollout_service_obj(name, rollout)?;
        if current.rollout.as_ref() == Some(rollout) {
            return Ok(Vec::new());
        }
        self.doc
            .put(&obj, "rollout", serde_json::to_string(rollout)?)?;
        Ok(self.commit(format!("service rollout {name} {}", rollout.state_word())))
    }

    /// The object and record of live service `name`, for writing `rollout`: refused unless the
    /// record is for the service's current generation (one for another belongs to a
    /// superseded rollout).
    ///
    /// Errors: [`CrdtError::UnknownService`]; [`CrdtError::InvalidSpec`].
    fn rollout_service_obj(
        &self,
        name: &ServiceName,
        rollout: &Rollout,
    ) -> Result<(ObjId, Service), CrdtError> {
        let (obj, current) = self.live_service_obj(name)?;
        if rollout.to_generation != current.generation {
            return Err(CrdtError::InvalidSpec {
                field: "rollout",
                reason: format!(
                    "rollout of generation {} for service {name}, whose generation is {}",
                    rollout.to_generation, current.generation
                ),
            });
        }
        Ok((obj, current))
    }

    /// `service rollback`: the previous spec becomes the spec again, as a new generation
    /// rolled out under the rollback policy of the spec it replaces (Swarm's rule). The
    /// replica count stays what it is now.
    ///
    /// Errors: [`CrdtError::UnknownService`]; [`CrdtError::InvalidSpec`] when the service
    /// has no previous spec.
    pub fn rollback_service(&mut self, name: &ServiceName) -> Result<ChangeBytes, CrdtError> {
        let (obj, current) = self.live_service_obj(name)?;
        let Some(previous) = current.previous_spec.clone() else {
            return Err(CrdtError::InvalidSpec {
                field: "previous_spec",
                reason: format!("service {name} has no previous spec to roll back to"),
            });
        };
        let target = ServiceSpec {
            replicas: current.spec.replicas,
            ..previous
        };
        let policy = current.spec.rollback;
        // The spec is written field by field (as an update is); the generation then moves
        // on even when the fields equal the current ones, so the rollout replaces the
        // slots that run the replaced generation.
        let spec_obj = self.ensure_map(&obj, "spec")?;
        let old = current.spec.clone();
        self.put_spec_fields(&spec_obj, &old, &target)?;
        self.put_generation(
            &obj,
            &current,
            Rollout {
                kind: RolloutKind::Rollback,
                from_generation: current.generation,
                to_generation: current.generation.saturating_add(1),
                state: RolloutState::Updating,
                policy,
                deploy: Deploy::Rolling,
                updated_at_ms: 0,
                traffic_generation: None,
            },
        )?;
        Ok(self.commit(format!("service rollback {name}")))
    }

    /// Writes the spec keys added in issue 6 (`health`, `restart`, `resources`,
    /// `stop_timeout_ms`), each as one JSON value under its own key so concurrent updates of
    /// different ones merge; with `old`, only those that differ from it.
    fn put_runtime_fields(
        &mut self,
        spec_obj: &ObjId,
        old: Option<&ServiceSpec>,
        spec: &ServiceSpec,
    ) -> Result<(), CrdtError> {
        if old.is_none_or(|o| o.health != spec.health) {
            self.doc
                .put(spec_obj, "health", serde_json::to_string(&spec.health)?)?;
        }
        if old.is_none_or(|o| o.restart != spec.restart) {
            self.doc
                .put(spec_obj, "restart", serde_json::to_string(&spec.restart)?)?;
        }
        if old.is_none_or(|o| o.resources != spec.resources) {
            self.doc.put(
                spec_obj,
                "resources",
                serde_json::to_string(&spec.resources)?,
            )?;
        }
        if old.is_none_or(|o| o.stop_timeout_ms != spec.stop_timeout_ms) {
            self.doc.put(
                spec_obj,
                "stop_timeout_ms",
                serde_json::to_string(&spec.stop_timeout_ms)?,
            )?;
        }
        if old.is_none_or(|o| o.partition != spec.partition) {
            self.doc.put(
                spec_obj,
                "partition",
                serde_json::to_string(&spec.partition)?,
            )?;
        }
        if old.is_none_or(|o| o.placement != spec.placement) {
            self.doc.put(
                spec_obj,
                "placement",
                serde_json::to_string(&spec.placement)?,
            )?;
        }
        if old.is_none_or(|o| o.mounts != spec.mounts) {
            self.doc
                .put(spec_obj, "mounts", serde_json::to_string(&spec.mounts)?)?;
        }
        if old.map_or(spec.gpus != 0, |o| o.gpus != spec.gpus) {
            self.doc.put(spec_obj, "gpus", u64::from(spec.gpus))?;
        }
        if old.is_none_or(|o| o.mode != spec.mode) {
            self.doc
                .put(spec_obj, "mode", serde_json::to_string(&spec.mode)?)?;
        }
        if old.is_none_or(|o| o.update != spec.update) {
            self.doc
                .put(spec_obj, "update", serde_json::to_string(&spec.update)?)?;
        }
        if old.is_none_or(|o| o.rollback != spec.rollback) {
            self.doc
                .put(spec_obj, "rollback", serde_json::to_string(&spec.rollback)?)?;
        }
        if old.is_none_or(|o| o.deploy != spec.deploy) {
            self.doc
                .put(spec_obj, "deploy", serde_json::to_string(&spec.deploy)?)?;
        }
        Ok(())
    }

    /// Sets a service's replica count.
    ///
    /// Errors: [`CrdtError::UnknownService`].
    pub fn scale_service(
        &mut self,
        name: &ServiceName,
        replicas: u32,
    ) -> Result<ChangeBytes, CrdtError> {
        let (obj, _) = self.live_service_obj(name)?;
        let spec = self.ensure_map(&obj, "spec")?;
        self.doc.put(&spec, "replicas", u64::from(replicas))?;
        Ok(self.commit(format!("service scale {name} {replicas}")))
    }

    /// Deletes a service: sets its tombstone, which wins over concurrent updates of its spec.
    ///
    /// Errors: [`CrdtError::UnknownService`].
    pub fn delete_service(&mut self, name: &ServiceName) -> Result<ChangeBytes, CrdtError> {
        self.live_service_obj(name)?;
        // Tombstone every concurrent (re-)creation this replica sees, not only the one that
        // stands here: otherwise a concurrent update of another one would revive the service.
        let services = self
            .map(&ROOT, SERVICES)
            .ok_or_else(|| CrdtError::UnknownService(name.clone()))?;
        for obj in self.all_maps(&services, name.as_str()) {
            self.doc.put(&obj, "deleted", true)?;
        }
        Ok(self.commit(format!("service rm {name}")))
    }

    /// Writes a lease claim. Concurrent claims all stay in the document as conflicts and
    /// [`DesiredState::lease`] picks the greatest, so the merge rule holds on every replica.
    pub fn claim_lease(&mut self, lease: &Lease) -> Result<ChangeBytes, CrdtError> {
        let obj = self.doc.put_object(ROOT, LEASE, ObjType::Map)?;
        self.doc.put(&obj, "holder", lease.holder.as_str())?;
        self.doc.put(&obj, "epoch", lease.epoch.0)?;
        Ok(self.commit(format!(
            "lease claim epoch {} by {}",
            lease.epoch,
            lease.holder.short()
        )))
    }

    /// Applies one scheduling round in a single change: `put` writes assignments, `remove`
    /// deletes them. Returns `None` when nothing was left to write.
    ///
    /// Fencing (DESIGN §5): a put made under a lower `(epoch, holder)` than the assignment
    /// standing for its slot is dropped, whatever the causal order of the two writes: a
    /// holder that has not yet learned it was superseded cannot overwrite its successor's
    /// decisions. (Concurrent writes are fenced on read: [`DesiredState::assignments`] keeps
    /// the greatest rank.)
    pub fn write_assignments(
        &mut self,
        put: &[(SlotId, Assignment)],
        remove: &[SlotId],
    ) -> Result<Option<ChangeBytes>, CrdtError> {
        self.write_assignments_with(put, remove, Fencing::On)
    }

    /// [`DesiredState::write_assignments`] with the fencing rule on, or off on purpose: with
    /// [`Fencing::Off`] every put is written, whatever the rank of the assignment standing
    /// for its slot. `Off` exists only for the simulator's test that shows removing fencing
    /// is caught.
    ///
    /// Errors: [`CrdtError`] from the document.
    pub fn write_assignments_with(
        &mut self,
        put: &[(SlotId, Assignment)],
        remove: &[SlotId],
        fencing: Fencing,
    ) -> Result<Option<ChangeBytes>, CrdtError> {
        let standing = match fencing {
            Fencing::On => self.assignments(),
            Fencing::Off => BTreeMap::new(),
        };
        let put: Vec<&(SlotId, Assignment)> = put
            .iter()
            .filter(|(slot, a)| standing.get(slot).is_none_or(|s| a.rank() >= s.rank()))
            .collect();
        if put.is_empty() && remove.is_empty() {
            return Ok(None);
        }
        let assignments = self.ensure_map(&ROOT, ASSIGNMENTS)?;
        for (slot, a) in put.iter().copied() {
            let obj = self
                .doc
                .put_object(&assignments, slot.key(), ObjType::Map)?;
            self.doc.put(&obj, "node", a.node.as_str())?;
            self.doc.put(&obj, "epoch", a.epoch.0)?;
            self.doc.put(&obj, "holder", a.holder.as_str())?;
            self.doc.put(&obj, "spec_generation", a.spec_generation)?;
            if !a.displaced.is_empty() {
                let displaced: Vec<&str> = a.displaced.iter().map(NodeId::as_str).collect();
                self.doc
                    .put(&obj, "displaced", serde_json::to_string(&displaced)?)?;
            }
            if !a.gpus.is_empty() {
                self.doc
                    .put(&obj, "gpus", serde_json::to_string(&a.gpus)?)?;
            }
        }
        for slot in remove {
            self.doc.delete(&assignments, slot.key())?;
        }
        Ok(Some(self.commit(format!(
            "schedule: {} placed, {} removed",
            put.len(),
            remove.len()
        ))))
    }

    /// Sets the cluster settings given, and only those, in one change (message `cluster set
    /// rebalance=off`). Writing a setting's current value still writes (the history shows who
    /// confirmed it); an empty `settings` writes nothing and returns empty bytes.
    ///
    /// Errors: [`CrdtError::NoCluster`] when the document holds no cluster record yet.
    pub fn set_cluster_settings(
        &mut self,
        settings: &[ClusterSetting],
    ) -> Result<ChangeBytes, CrdtError> {
        // The `cluster` map is made once, at init: writing into it never creates a second,
        // conflicting map (which would hide one side's settings after a merge).
        let obj = self.map(&ROOT, CLUSTER).ok_or(CrdtError::NoCluster)?;
        if settings.is_empty() {
            return Ok(ChangeBytes::new());
        }
        for setting in settings {
            match *setting {
                ClusterSetting::Rebalance(on) => self.doc.put(&obj, SETTING_REBALANCE, on)?,
            }
        }
        let what: Vec<String> = settings.iter().map(ToString::to_string).collect();
        Ok(self.commit(format!("cluster set {}", what.join(" "))))
    }

    /// Stores a token record: a join token or an operator's API token (by its `role`).
    pub fn add_token(&mut self, token: &TokenRecord) -> Result<ChangeBytes, CrdtError> {
        let tokens = self.ensure_map(&ROOT, TOKENS)?;
        let obj = self
            .doc
            .put_object(&tokens, token.id.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "digest", token.digest.as_str())?;
        self.doc.put(&obj, "expires_at", token.expires_at)?;
        self.doc.put(&obj, "uses_left", token.uses_left)?;
        self.doc.put(&obj, "role", token.role.as_str())?;
        self.doc.put(&obj, "created_at", token.created_at)?;
        let labels = self.doc.put_object(&obj, "labels", ObjType::Map)?;
        for (k, v) in &token.labels {
            self.doc.put(&labels, k.as_str(), v.as_str())?;
        }
        self.doc.put(&obj, "revoked", token.revoked)?;
        if !token.minted_by.is_empty() {
            self.doc.put(&obj, "minted_by", token.minted_by.as_str())?;
        }
        Ok(self.commit(format!("{} create {}", token_kind(token), token.id)))
    }

    /// Publishes member `id`'s X25519 public key (hex), the key secrets are sealed to.
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn set_member_key(&mut self, id: &NodeId, key_hex: &str) -> Result<ChangeBytes, CrdtError> {
        let unknown = || CrdtError::UnknownMember(id.clone());
        let members = self.map(&ROOT, MEMBERS).ok_or_else(unknown)?;
        let obj = self.map(&members, id.as_str()).ok_or_else(unknown)?;
        self.doc.put(&obj, "x25519_public_key", key_hex)?;
        Ok(self.commit(format!("member key {}", id.short())))
    }

    /// Every member's published X25519 public key (hex), by id; members that published none
    /// are absent.
    pub fn member_keys(&self) -> BTreeMap<NodeId, String> {
        self.entries(MEMBERS)
            .into_iter()
            .filter_map(|(id, obj)| {
                self.string(&obj, "x25519_public_key")
                    .filter(|k| !k.is_empty())
                    .map(|k| (NodeId(id), k))
            })
            .collect()
    }

    /// Publishes member `id`'s place on the overlay: its WireGuard key, the addresses
    /// derived from it and its WireGuard port, in one change (a key rotation replaces them
    /// all).
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn set_member_overlay(
        &mut self,
        id: &NodeId,
        overlay: &MemberOverlay,
    ) -> Result<ChangeBytes, CrdtError> {
        let unknown = || CrdtError::UnknownMember(id.clone());
        let members = self.map(&ROOT, MEMBERS).ok_or_else(unknown)?;
        let obj = self.map(&members, id.as_str()).ok_or_else(unknown)?;
        self.doc
            .put(&obj, "wg_public_key", overlay.wg_public_key.as_str())?;
        self.doc
            .put(&obj, "overlay_ip", overlay.overlay_ip.as_str())?;
        self.doc
            .put(&obj, "container_subnet", overlay.container_subnet.as_str())?;
        self.doc.put(&obj, "wg_port", u64::from(overlay.wg_port))?;
        Ok(self.commit(format!("member overlay {}", id.short())))
    }

    /// Every member's published place on the overlay, by id; members that published none (or
    /// only part of one) are absent.
    pub fn member_overlays(&self) -> BTreeMap<NodeId, MemberOverlay> {
        self.entries(MEMBERS)
            .into_iter()
            .filter_map(|(id, obj)| Some((NodeId(id), self.overlay_of(&obj)?)))
            .collect()
    }

    /// Member `id`'s published place on the overlay, if it published one whole (one member's
    /// record read, not every member's).
    pub fn member_overlay(&self, id: &NodeId) -> Option<MemberOverlay> {
        let members = self.map(&ROOT, MEMBERS)?;
        let obj = self.map(&members, id.as_str())?;
        self.overlay_of(&obj)
    }

    fn overlay_of(&self, obj: &ObjId) -> Option<MemberOverlay> {
        let field = |key| self.string(obj, key).filter(|v| !v.is_empty());
        Some(MemberOverlay {
            wg_public_key: field("wg_public_key")?,
            overlay_ip: field("overlay_ip")?,
            container_subnet: field("container_subnet")?,
            // Older records have no port: WireGuard's usual one.
            wg_port: self
                .uint(obj, "wg_port")
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(crate::model::DEFAULT_WG_PORT),
        })
    }

    /// Revokes a token: a join token admits nobody from now on (a concurrent admission on the
    /// other side of a partition may still have used it; revocation wins from the merge on), an
    /// operator token opens the API at no peer that has merged the revocation.
    ///
    /// Errors: [`CrdtError::UnknownToken`].
    pub fn revoke_token(&mut self, token_id: &str) -> Result<ChangeBytes, CrdtError> {
        let unknown = || CrdtError::UnknownToken(token_id.to_string());
        let record = self.tokens().remove(token_id).ok_or_else(unknown)?;
        let tokens = self.map(&ROOT, TOKENS).ok_or_else(unknown)?;
        let obj = self.map(&tokens, token_id).ok_or_else(unknown)?;
        self.doc.put(&obj, "revoked", true)?;
        Ok(self.commit(format!("{} revoke {token_id}", token_kind(&record))))
    }

    /// Removes a member: its state becomes `removed` (the record stays, so its identity can
    /// never be admitted again), the scheduler stops placing tasks on it and peers stop
    /// hearing it.
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn remove_member(&mut self, id: &NodeId) -> Result<ChangeBytes, CrdtError> {
        let unknown = || CrdtError::UnknownMember(id.clone());
        let members = self.map(&ROOT, MEMBERS).ok_or_else(unknown)?;
        let obj = self.map(&members, id.as_str()).ok_or_else(unknown)?;
        self.doc.put(&obj, "state", MemberState::Removed.as_str())?;
        Ok(self.commit(format!("member rm {}", id.short())))
    }

    /// Admits `member` with the token `token_id`: decrements its uses and writes the member, in
    /// one change. The caller has checked the token.
    ///
    /// Errors: [`CrdtError::UnknownToken`].
    pub fn admit_with_token(
        &mut self,
        token_id: &str,
        member: &Member,
    ) -> Result<ChangeBytes, CrdtError> {
        let record = self
            .tokens()
            .remove(token_id)
            .ok_or_else(|| CrdtError::UnknownToken(token_id.to_string()))?;
        let tokens = self.ensure_map(&ROOT, TOKENS)?;
        let obj = self
            .map(&tokens, token_id)
            .ok_or_else(|| CrdtError::UnknownToken(token_id.to_string()))?;
        self.doc
            .put(&obj, "uses_left", record.uses_left.saturating_sub(1))?;
        self.write_member(member)?;
        Ok(self.commit(format!(
            "member admit {} ({}) with token {token_id}",
            member.name,
            member.id.short()
        )))
    }

    /// Creates a job in state `pending` with no attempts.
    ///
    /// Errors: [`CrdtError::JobExists`].
    pub fn create_job(
        &mut self,
        id: &str,
        spec: &JobSpec,
        priority: i64,
        max_attempts: u32,
    ) -> Result<ChangeBytes, CrdtError> {
        if self.jobs().contains_key(id) {
            return Err(CrdtError::JobExists(id.to_string()));
        }
        let jobs = self.ensure_map(&ROOT, JOBS)?;
        let obj = self.doc.put_object(&jobs, id, ObjType::Map)?;
        let spec_obj = self.doc.put_object(&obj, "spec", ObjType::Map)?;
        self.doc.put(&spec_obj, "image", spec.image.as_str())?;
        self.doc
            .put(&spec_obj, "command", serde_json::to_string(&spec.command)?)?;
        let env = self.doc.put_object(&spec_obj, "env", ObjType::Map)?;
        for (k, v) in &spec.env {
            self.doc.put(&env, k.as_str(), v.as_str())?;
        }
        self.doc.put(&obj, "priority", priority)?;
        self.doc
            .put(&obj, "max_attempts", u64::from(max_attempts))?;
        self.doc.put_object(&obj, "attempts", ObjType::List)?;
        self.doc.put(&obj, "state", JobState::Pending.as_str())?;
        Ok(self.commit(format!("job create {id}")))
    }

    /// Appends an attempt to a job and sets its state, in one change. Concurrent appends from
    /// two nodes both survive (Automerge list inserts).
    ///
    /// Errors: [`CrdtError::UnknownJob`].
    pub fn record_job_attempt(
        &mut self,
        id: &str,
        attempt: &JobAttempt,
        state: JobState,
    ) -> Result<ChangeBytes, CrdtError> {
        let missing = || CrdtError::UnknownJob(id.to_string());
        let jobs = self.map(&ROOT, JOBS).ok_or_else(missing)?;
        let obj = self.map(&jobs, id).ok_or_else(missing)?;
        let list = match self.doc.get(&obj, "attempts")? {
            Some((Value::Object(ObjType::List), list)) => list,
            _ => self.doc.put_object(&obj, "attempts", ObjType::List)?,
        };
        let at = self.doc.length(&list);
        let a = self.doc.insert_object(&list, at, ObjType::Map)?;
        self.doc.put(&a, "number", u64::from(attempt.number))?;
        self.doc.put(&a, "node", attempt.node.as_str())?;
        self.doc.put(&a, "started_at", attempt.started_at)?;
        if let Some(code) = attempt.exit_code {
            self.doc.put(&a, "exit_code", code)?;
        }
        self.doc.put(&obj, "state", state.as_str())?;
        Ok(self.commit(format!(
            "job attempt {id} #{} on {} -> {}",
            attempt.number,
            attempt.node.short(),
            state.as_str()
        )))
    }

    /// Writes (or rotates) a secret: ciphertext, nonce and sealed keys replace the old ones.
    pub fn put_secret(&mut self, secret: &SecretRecord) -> Result<ChangeBytes, CrdtError> {
        let secrets = self.ensure_map(&ROOT, SECRETS)?;
        let obj = self
            .doc
            .put_object(&secrets, secret.name.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "version", secret.version)?;
        self.doc.put(
            &obj,
            "ciphertext",
            ScalarValue::Bytes(secret.ciphertext.clone()),
        )?;
        self.doc
            .put(&obj, "nonce", ScalarValue::Bytes(secret.nonce.clone()))?;
        let recipients = self.doc.put_object(&obj, "recipients", ObjType::Map)?;
        for (peer, key) in &secret.recipients {
            self.doc
                .put(&recipients, peer.as_str(), ScalarValue::Bytes(key.clone()))?;
        }
        Ok(self.commit(format!("secret put {} v{}", secret.name, secret.version)))
    }

    /// Removes a secret. Errors: [`CrdtError::UnknownSecret`].
    pub fn remove_secret(&mut self, name: &str) -> Result<ChangeBytes, CrdtError> {
        let secrets = self
            .map(&ROOT, SECRETS)
            .filter(|s| self.map(s, name).is_some())
            .ok_or_else(|| CrdtError::UnknownSecret(name.to_string()))?;
        self.doc.delete(&secrets, name)?;
        Ok(self.commit(format!("secret rm {name}")))
    }

    /// Creates or replaces a volume record.
    pub fn put_volume(&mut self, volume: &Volume) -> Result<ChangeBytes, CrdtError> {
        let volumes = self.ensure_map(&ROOT, VOLUMES)?;
        let obj = self
            .doc
            .put_object(&volumes, volume.name.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "driver", volume.driver.as_str())?;
        self.doc.put(&obj, "node", volume.node.as_str())?;
        let options = self.doc.put_object(&obj, "options", ObjType::Map)?;
        for (k, v) in &volume.options {
            self.doc.put(&options, k.as_str(), v.as_str())?;
        }
        Ok(self.commit(format!("volume put {}", volume.name)))
    }

    /// Removes a volume record. Errors: [`CrdtError::UnknownVolume`].
    pub fn remove_volume(&mut self, name: &str) -> Result<ChangeBytes, CrdtError> {
        let volumes = self
            .map(&ROOT, VOLUMES)
            .filter(|v| self.map(v, name).is_some())
            .ok_or_else(|| CrdtError::UnknownVolume(name.to_string()))?;
        self.doc.delete(&volumes, name)?;
        Ok(self.commit(format!("volume rm {name}")))
    }
}

/// Rollout records written by an operator (issue 15's `service promote`, `pause`, `resume`).
impl DesiredState {
    /// Writes the rollout record of service `name` as [`DesiredState::set_rollout`] does,
    /// committed as `service VERB NAME` (e.g. `service promote web`) so the cluster's
    /// history says what the operator did.
    ///
    /// Errors: as [`DesiredState::set_rollout`].
    pub fn set_rollout_by_operator(
        &mut self,
        name: &ServiceName,
        rollout: &Rollout,
        verb: &str,
    ) -> Result<ChangeBytes, CrdtError> {
        let (obj, _) = self.rollout_service_obj(name, rollout)?;
        self.doc
            .put(&obj, "rollout", serde_json::to_string(rollout)?)?;
        Ok(self.commit(format!("service {verb} {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_record_written_before_the_port_reads_as_51820() {
        let me = NodeId("A".into());
        let member = Member {
            id: me.clone(),
            name: "a".into(),
            addrs: vec![],
            labels: BTreeMap::new(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: me.clone(),
            admitted_at: 0,
            state: MemberState::Active,
            availability: Default::default(),
        };
        let info = ClusterInfo {
            id: "c".into(),
            name: "c".into(),
            created_at: 0,
        };
        let mut state = DesiredState::new_cluster(&info, &member).expect("cluster");
        let record = MemberOverlay {
            wg_public_key: "key".into(),
            overlay_ip: "fd00::1".into(),
            container_subnet: "fd00::8000:0/97".into(),
            wg_port: 40000,
        };
        state.set_member_overlay(&me, &record).expect("overlay");
        assert_eq!(state.member_overlay(&me), Some(record));
        let members = state.map(&ROOT, MEMBERS).expect("members");
        let obj = state.map(&members, "A").expect("member");
        state.doc.delete(&obj, "wg_port").expect("delete");
        assert_eq!(
            state.member_overlay(&me).map(|r| r.wg_port),
            Some(crate::model::DEFAULT_WG_PORT)
        );
    }
}
