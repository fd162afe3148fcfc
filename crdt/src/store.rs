//! Persistence of the desired state in sled: a compacted snapshot plus an append-only log of
//! incremental chunks, flushed before a local write is acknowledged. Layout, value format, what
//! "the last good state" is after corruption, and why compaction is atomic: see [`Store`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{CrdtError, DesiredState, NodeId};

const TREE: &str = "desired";
const SNAPSHOT: &[u8] = b"snapshot";
const LOG_PREFIX: &[u8] = b"log/";
const CORRUPT_PREFIX: &[u8] = b"corrupt/";

/// Start of every value we write; the digit is the frame's version.
const FRAME_MAGIC: [u8; 4] = *b"WRN\x01";
/// Bytes of the payload's SHA-256 kept in the frame.
const CHECKSUM_LEN: usize = 8;
const FRAME_HEADER_LEN: usize = FRAME_MAGIC.len() + CHECKSUM_LEN;
/// Start of every Automerge chunk (values written before the frame existed).
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Automerge chunk header: magic, checksum, chunk type, then the LEB128 length of the data.
const AUTOMERGE_HEADER_FIXED: usize = 9;

/// How long [`Store::open`] waits for sled's file lock held by a store just dropped.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// After this many appended chunks the next [`Store::persist`] compacts into one snapshot.
pub const COMPACT_AFTER_CHUNKS: usize = 512;

/// The on-disk home of one node's replica: `<data dir>/state` (a sled database).
///
/// # Layout
///
/// One sled database at `<data dir>/state` (that is [`Store::path`]), tree `desired`:
///
/// - `snapshot`: a full save of the document ([`DesiredState::save`]);
/// - `log/<u64 big-endian>`: the incremental chunks written since ([`DesiredState::save_incremental`],
///   one or more Automerge change chunks each), in order, with consecutive sequence numbers;
/// - `corrupt/log/<u64 big-endian>`: chunks that did not load, moved out of the log by the repair
///   described below and kept, untouched, as evidence. Nothing reads them.
///
/// Every value is framed: the 4 bytes `WRN\x01`, the first 8 bytes of the SHA-256 of the payload,
/// then the payload. A value that fails this check (torn, truncated, overwritten) is caught before
/// Automerge sees it. Values written before the frame existed (bare Automerge bytes, recognised by
/// Automerge's magic bytes) are still read, checked change by change against Automerge's own header
/// checksum. We check ourselves because Automerge's `load_incremental` does not report a corrupt
/// tail: it logs "partial load", keeps what parsed and returns `Ok`.
///
/// # The last good state
///
/// [`Store::load`] reads the snapshot, then every log chunk in key order, and applies every chunk
/// that passes its check, also the ones after a bad chunk. A chunk that fails is skipped as a whole
/// (none of its changes are applied) and reported; a gap in the sequence numbers (a chunk that
/// vanished) and a log without its snapshot count as skipped too. Automerge applies a change only
/// once all of its dependencies are present, so the loaded state is **the snapshot plus every
/// surviving change whose whole causal history survived**: the largest causally complete part of
/// what is on disk.
///
/// - When the bad chunk is the last one (a torn tail, the usual case), that is the snapshot plus all
///   earlier chunks: the state just before the bad write.
/// - When a middle chunk is bad, the later changes that depend on it are *held*: they sit in
///   Automerge's queue, invisible, and are applied by themselves if anti-entropy brings the missing
///   changes from a peer. This node's own later writes always depend on it (each local change
///   depends on the heads before it). Later changes that do not depend on it (concurrent writes of
///   peers received after it) are applied. No visible value ever depends on a missing change.
///   [`Loaded::held_changes`] counts the held ones.
///
/// Why later chunks are applied rather than dropped at the first bad one: the result is still
/// causally consistent (a state some replica could hold, which merges with the peers' like any
/// other), and stopping would throw away independent changes for nothing.
///
/// After loading past a bad chunk, `load` repairs the store if the state is not empty: it writes a
/// clean snapshot of the loaded state and removes the whole log in one atomic batch, and flushes.
/// The bad values move to `corrupt/...`, and a warning with the store path says so. The next start
/// is clean. Held changes are not in that snapshot (a snapshot holds applied changes only), so on
/// disk they go with the log, just as a change received by gossip with missing dependencies is never
/// persisted; they stay in memory for this run, and peers send them again with the missing change.
/// When nothing loads at all (no snapshot, every chunk bad or held), `load` returns no state and
/// writes nothing: the evidence stays, and a data dir that held a cluster is not mistaken for a
/// fresh one.
///
/// A corrupt **snapshot** is an error ([`CrdtError::Decode`] naming the path and the key), and the
/// store is left untouched: the log chunks after it depend on it and are useless alone. Move the
/// directory aside and rejoin the cluster with a join token to rebuild it from peers. To make this
/// unlikely, [`Store::compact`] loads every new snapshot back before it replaces anything.
///
/// # Atomicity of compaction
///
/// Compaction writes the new snapshot and removes the log in one `sled::Batch`. In sled 0.34
/// `Tree::apply_batch` writes a batch manifest into sled's log ahead of the batch's updates and
/// seals it with the batch's last LSN; crash recovery stops at a batch whose updates are not all
/// stable ("torn batch"). After a crash either the whole batch is there or none of it: the previous
/// snapshot and log stay until the new snapshot is durably written. The flush that follows makes
/// the batch durable before `compact` returns. The crash test (`crdt/tests/crash.rs`) kills
/// processes in the middle of compactions to check this.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    tree: sled::Tree,
    db: sled::Db,
    next_seq: u64,
    /// Log chunks on disk; atomic because the repair in [`Store::load`] (`&self`) resets it.
    chunks: AtomicUsize,
    /// Set when a write failed after the document's save cursor moved past changes that are not
    /// on disk: the next [`Store::persist`] then writes a full snapshot instead of a chunk.
    needs_full_save: bool,
}

/// What [`Store::load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The document, or `None` when the store holds no usable state: empty, or nothing in it
    /// loads. `None` with `skipped_chunks > 0` means the store held data that is unreadable: do
    /// not treat the data dir as a fresh one (no `--init` over it).
    pub state: Option<DesiredState>,
    /// Log chunks that did not load (failed their check, missing from the sequence, or a log
    /// without its snapshot): skipped and reported. The state is the last good state (see
    /// [`Store`]).
    pub skipped_chunks: usize,
    /// One line per skipped chunk or gap, `<key>: <reason>`, in key order.
    pub skipped: Vec<String>,
    /// Changes that loaded but wait for a dependency that is not on disk (it was in a skipped
    /// chunk): held by Automerge, invisible, until anti-entropy brings the missing change.
    pub held_changes: usize,
    /// Whether this load rewrote the store (clean snapshot, empty log, bad values moved to
    /// `corrupt/...`) so that the next start is clean.
    pub repaired: bool,
}

/// The changes of one log value that passed its check: bytes and hash of each.
type GoodChunk<'a> = Vec<(&'a [u8], automerge::ChangeHash)>;

impl Store {
    /// Opens (or creates) the store under `dir`.
    ///
    /// sled releases its file lock lazily: a store dropped in this process may hold it for a
    /// moment longer (sled issues #1234, #1289). `open` therefore retries for up to 2 s while
    /// the lock is taken, then gives up.
    ///
    /// Errors: [`CrdtError::Store`] with the path, e.g. when another process holds its lock.
    pub fn open(dir: &Path) -> Result<Self, CrdtError> {
        let path = dir.join("state");
        let err = |source| CrdtError::Store {
            path: path.clone(),
            source,
        };
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::open(&path) {
                Err(e) if is_lock_contention(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.map_err(err)?,
            }
        };
        let tree = db.open_tree(TREE).map_err(err)?;
        let mut next_seq = 0;
        let mut chunks = 0;
        for item in tree.scan_prefix(LOG_PREFIX).keys() {
            let key = item.map_err(err)?;
            if let Some(seq) = seq_of(&key) {
                next_seq = next_seq.max(seq.saturating_add(1));
            }
            chunks += 1;
        }
        Ok(Self {
            path,
            tree,
            db,
            next_seq,
            chunks: AtomicUsize::new(chunks),
            needs_full_save: false,
        })
    }

    fn err(&self, source: sled::Error) -> CrdtError {
        CrdtError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// The store's directory (`<data dir>/state`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the document takes in the store: its snapshot and its log chunks, framing
    /// included (sled's own files are larger). Reads at most [`COMPACT_AFTER_CHUNKS`] + 1
    /// values' lengths; a value that cannot be read counts as 0.
    pub fn stored_bytes(&self) -> u64 {
        let snapshot = self
            .tree
            .get(SNAPSHOT)
            .ok()
            .flatten()
            .map_or(0, |v| v.len() as u64);
        let log: u64 = self
            .tree
            .scan_prefix(LOG_PREFIX)
            .values()
            .filter_map(Result::ok)
            .map(|v| v.len() as u64)
            .sum();
        snapshot + log
    }

    /// Loads the persisted replica and continues it as `node` (with a fresh actor id).
    ///
    /// A log chunk that fails its check is skipped, counted and logged (warning with the store
    /// path and the key); the node starts from the last good state: the snapshot plus every
    /// surviving change whose dependencies all survived. Later changes that depend on a skipped
    /// one are held, not shown ([`Loaded::held_changes`]). If anything was skipped and the state
    /// is not empty, the store is repaired before returning ([`Loaded::repaired`]): a clean
    /// snapshot replaces snapshot and log atomically, the bad values move to `corrupt/...`, so
    /// the next start is clean. A failed repair is logged and retried at the next start. The
    /// [`Store`] documentation has the details and the reasons.
    ///
    /// Errors: [`CrdtError::Store`] when sled fails; [`CrdtError::Decode`] naming the path when
    /// the snapshot is corrupt (the store is left untouched: move it aside and rejoin the
    /// cluster to rebuild it from peers).
    pub fn load(&self, node: &NodeId) -> Result<Loaded, CrdtError> {
        let snapshot = self.tree.get(SNAPSHOT).map_err(|e| self.err(e))?;
        let mut state = match &snapshot {
            Some(value) => self.load_snapshot(node, value)?,
            None => DesiredState::empty(node.clone()),
        };

        let mut skipped = Vec::new();
        let mut skipped_chunks = 0usize;
        let mut log_keys = Vec::new();
        let mut bad = Vec::new();
        // Values that passed their check: key, value, where the payload starts, change hashes.
        let mut good = Vec::new();
        let mut expected_seq = None;
        // Last ops of the logged changes checked so far, for the first-op check of the next.
        let mut first_ops = std::collections::HashMap::new();
        for item in self.tree.scan_prefix(LOG_PREFIX) {
            let (key, value) = item.map_err(|e| self.err(e))?;
            log_keys.push(key.clone());
            let seq = seq_of(&key);
            match (seq, expected_seq) {
                // Only compaction starts the log past 0, and it writes a snapshot first.
                (Some(seq), None) if seq > 0 && snapshot.is_none() => {
                    self.skip(
                        &mut skipped,
                        &format!("snapshot or log/0..log/{}", seq - 1),
                        &format!("missing (no snapshot, and the log starts at log/{seq})"),
                    );
                    skipped_chunks = skipped_chunks.saturating_add(1);
                }
                (Some(seq), Some(expected)) if seq > expected => {
                    let missing = seq - expected;
                    self.skip(
                        &mut skipped,
                        &format!("log/{expected}..log/{}", seq - 1),
                        &format!("missing ({missing} chunk(s) absent from the sequence)"),
                    );
                    skipped_chunks = skipped_chunks
                        .saturating_add(usize::try_from(missing).unwrap_or(usize::MAX));
                }
                _ => {}
            }
            if let Some(seq) = seq {
                expected_seq = Some(seq.saturating_add(1));
            }
            let checked = match seq {
                Some(_) => check_log_value(&value).and_then(|(payload, chunk)| {
                    state
                        .check_first_ops(chunk.iter().map(|c| c.0), &mut first_ops)
                        .map_err(|e| e.to_string())?;
                    Ok((
                        value.len() - payload.len(),
                        chunk.into_iter().map(|c| c.1).collect::<Vec<_>>(),
                    ))
                }),
                None => Err("malformed key (not log/ and a 64-bit sequence number)".to_string()),
            };
            match checked {
                Ok((offset, hashes)) => good.push((key, value, offset, hashes)),
                Err(reason) => {
                    self.skip(&mut skipped, &display_key(&key), &reason);
                    skipped_chunks = skipped_chunks.saturating_add(1);
                    bad.push((key, value));
                }
            }
        }

        // All good chunks in one call: Automerge applies a batch of changes far faster than one
        // chunk at a time. Checked bytes parse; should Automerge still refuse the batch, load
        // chunk by chunk to find the culprit.
        let all: Vec<u8> = good
            .iter()
            .flat_map(|(_, value, offset, _)| value[*offset..].iter().copied())
            .collect();
        if !all.is_empty() {
            if let Err(e) = state.load_incremental(&all) {
                tracing::warn!(store = %self.path.display(), error = %e,
                    "Automerge refused the log of the desired state; loading it chunk by chunk");
                let mut kept = Vec::with_capacity(good.len());
                for (key, value, offset, hashes) in good {
                    match state.load_incremental(&value[offset..]) {
                        Ok(()) => kept.push((key, value, offset, hashes)),
                        Err(e) => {
                            self.skip(
                                &mut skipped,
                                &display_key(&key),
                                &format!("Automerge refused it: {e}"),
                            );
                            skipped_chunks = skipped_chunks.saturating_add(1);
                            bad.push((key, value));
                        }
                    }
                }
                good = kept;
            }
        }

        // Changes that loaded but are not in the document's history wait for a dependency. Only
        // possible when something is missing, so only counted then (the history costs a walk).
        let held_changes = if skipped_chunks > 0 {
            let applied: HashSet<String> = state.history().into_iter().map(|h| h.hash).collect();
            good.iter()
                .flat_map(|(_, _, _, hashes)| hashes)
                .filter(|h| !applied.contains(&h.to_string()))
                .count()
        } else {
            0
        };
        if held_changes > 0 {
            tracing::warn!(store = %self.path.display(), held = held_changes,
                "changes of the desired state wait for dependencies that are not on disk; \
                 they stay invisible until a peer sends the missing changes");
        }

        let has_state = !state.heads().is_empty();
        let mut repaired = false;
        if skipped_chunks > 0 && has_state {
            match self.repair(&mut state, &log_keys, &bad) {
                Ok(()) => {
                    repaired = true;
                    tracing::warn!(store = %self.path.display(), skipped = skipped_chunks,
                        held = held_changes,
                        "started from the last good state of the desired state and rewrote a \
                         clean snapshot of it; the log was cleared and the bad chunks moved to \
                         corrupt/log/...");
                }
                Err(e) => {
                    tracing::warn!(store = %self.path.display(), error = %e,
                        "could not rewrite a clean snapshot after skipping corrupt chunks; \
                         the next start will skip them again");
                }
            }
        } else if skipped_chunks > 0 {
            tracing::warn!(store = %self.path.display(), skipped = skipped_chunks,
                "nothing of the desired state loads; the store was left as it is");
        }
        // What was loaded is on disk: the next incremental save starts after it.
        state.mark_persisted();
        Ok(Loaded {
            state: has_state.then_some(state),
            skipped_chunks,
            skipped,
            held_changes,
            repaired,
        })
    }

    /// Reports one skipped chunk (or gap): a warning with the store path, and a line for
    /// [`Loaded::skipped`].
    fn skip(&self, skipped: &mut Vec<String>, key: &str, reason: &str) {
        tracing::warn!(store = %self.path.display(), key = %key, error = %reason,
            "skipping a chunk of the desired state that does not load");
        skipped.push(format!("{key}: {reason}"));
    }

    fn load_snapshot(&self, node: &NodeId, value: &[u8]) -> Result<DesiredState, CrdtError> {
        let corrupt = |reason: String| {
            tracing::warn!(store = %self.path.display(), key = "snapshot", error = %reason,
                "the snapshot of the desired state is corrupt");
            CrdtError::Decode(format!(
                "the desired-state snapshot in {} (key \"snapshot\") is corrupt: {reason}; the \
                 store was left untouched: move it aside and rejoin the cluster with a join \
                 token to rebuild it from peers",
                self.path.display()
            ))
        };
        let payload = unframe(value).map_err(corrupt)?;
        DesiredState::load(node.clone(), payload).map_err(|e| corrupt(e.to_string()))
    }

    /// Writes a clean snapshot of `state`, removes `log_keys` and keeps the `bad` values under
    /// `corrupt/`, in one batch, flushed.
    fn repair(
        &self,
        state: &mut DesiredState,
        log_keys: &[sled::IVec],
        bad: &[(sled::IVec, sled::IVec)],
    ) -> Result<(), CrdtError> {
        let full = self.verified_save(state)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT, frame(&full));
        for key in log_keys {
            batch.remove(key.clone());
        }
        for (key, value) in bad {
            let mut quarantine = CORRUPT_PREFIX.to_vec();
            quarantine.extend_from_slice(key);
            batch.insert(quarantine, value.clone());
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        self.chunks.store(0, Ordering::Relaxed);
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A full save of `state` that was loaded back and holds the same heads: a snapshot known to
    /// be good before it replaces anything.
    fn verified_save(&self, state: &mut DesiredState) -> Result<Vec<u8>, CrdtError> {
        let full = state.save();
        let refused = |reason: String| {
            CrdtError::Decode(format!(
                "a new snapshot of the desired state does not load back ({reason}); the previous \
                 snapshot and log in {} were kept",
                self.path.display()
            ))
        };
        let mut check =
            DesiredState::load(state.node().clone(), &full).map_err(|e| refused(e.to_string()))?;
        if check.heads() != state.heads() {
            return Err(refused("its heads differ".to_string()));
        }
        Ok(full)
    }

    /// Appends what changed in `state` since the last persist; when `flush` is set, waits until
    /// it is on disk (do this before acknowledging a write). Compacts every
    /// [`COMPACT_AFTER_CHUNKS`] chunks, and after a failed write (the changes it lost are then
    /// rewritten in full).
    ///
    /// Errors: [`CrdtError::Store`]; [`CrdtError::Decode`] when compaction produced a snapshot
    /// that does not load back (nothing was replaced).
    pub fn persist(&mut self, state: &mut DesiredState, flush: bool) -> Result<(), CrdtError> {
        if self.needs_full_save || *self.chunks.get_mut() >= COMPACT_AFTER_CHUNKS {
            return self.compact(state);
        }
        let chunk = state.save_incremental();
        if !chunk.is_empty() {
            let key = log_key(self.next_seq);
            if let Err(e) = self.tree.insert(key, frame(&chunk)) {
                // The save cursor has moved past this chunk: only a full save can write it now.
                self.needs_full_save = true;
                return Err(self.err(e));
            }
            self.next_seq += 1;
            *self.chunks.get_mut() += 1;
        }
        if flush {
            if let Err(e) = self.db.flush() {
                self.needs_full_save = true;
                return Err(self.err(e));
            }
        }
        Ok(())
    }

    /// Replaces snapshot and log by one full save, atomically, and flushes. The new snapshot is
    /// loaded back first; the previous snapshot and log stay until it is durably written (see
    /// [`Store`] on sled's batch atomicity).
    ///
    /// Errors: [`CrdtError::Store`]; [`CrdtError::Decode`] when the new snapshot does not load
    /// back (nothing was replaced). After an error the next [`Store::persist`] compacts again.
    pub fn compact(&mut self, state: &mut DesiredState) -> Result<(), CrdtError> {
        // Until the batch is written, only a full save is known to be safe.
        self.needs_full_save = true;
        let full = self.verified_save(state)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT, frame(&full));
        for key in self.tree.scan_prefix(LOG_PREFIX).keys() {
            batch.remove(key.map_err(|e| self.err(e))?);
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        *self.chunks.get_mut() = 0;
        self.db.flush().map_err(|e| self.err(e))?;
        state.mark_persisted();
        self.needs_full_save = false;
        Ok(())
    }
}

/// sled 0.34's error when another handle holds the database's file lock (an I/O error of kind
/// `Other` whose text says so; sled has no dedicated variant).
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn log_key(seq: u64) -> Vec<u8> {
    let mut key = LOG_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(LOG_PREFIX)?;
    <[u8; 8]>::try_from(rest).ok().map(u64::from_be_bytes)
}

/// `log/42` for log keys, the escaped bytes otherwise.
fn display_key(key: &[u8]) -> String {
    match seq_of(key) {
        Some(seq) => format!("log/{seq}"),
        None => key.escape_ascii().to_string(),
    }
}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(payload);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

/// Frame of a value: magic, checksum, payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    value.extend_from_slice(&FRAME_MAGIC);
    value.extend_from_slice(&checksum(payload));
    value.extend_from_slice(payload);
    value
}

/// The payload of a stored value: checked against its frame, or a legacy bare Automerge value.
fn unframe(value: &[u8]) -> Result<&[u8], String> {
    if let Some(rest) = value.strip_prefix(&FRAME_MAGIC) {
        let Some((sum, payload)) = rest.split_at_checked(CHECKSUM_LEN) else {
            return Err(format!("truncated frame ({} bytes)", value.len()));
        };
        if sum != checksum(payload) {
            return Err(format!(
                "checksum mismatch ({} bytes: truncated or overwritten)",
                value.len()
            ));
        }
        Ok(payload)
    } else if value.starts_with(&AUTOMERGE_MAGIC) {
        Ok(value)
    } else {
        Err(format!(
            "not a desired-state value (unknown format, {} bytes)",
            value.len()
        ))
    }
}

/// The payload of a stored log value and its changes: the frame checked ([`unframe`]), then
/// every change in it ([`split_changes`]).
fn check_log_value(value: &[u8]) -> Result<(&[u8], GoodChunk<'_>), String> {
    let payload = unframe(value)?;
    Ok((payload, split_changes(payload)?))
}

/// The checks [`Store::load`] runs on each stored value before Automerge sees it, for the fuzz
/// targets in `fuzz/` (not part of the API).
pub mod fuzzing {
    /// The payload of a stored snapshot value (frame checked), as [`super::Store::load`] hands
    /// it to [`crate::DesiredState::load`].
    ///
    /// Errors: why the value is refused (unknown format, truncated frame, checksum mismatch).
    pub fn snapshot_payload(value: &[u8]) -> Result<&[u8], String> {
        super::unframe(value)
    }

    /// The payload of a stored log value (frame and every change's header checked), as
    /// [`super::Store::load`] hands it to [`crate::DesiredState::load_incremental`].
    ///
    /// Errors: why the value is refused, as `Store::load` reports it.
    pub fn log_payload(value: &[u8]) -> Result<&[u8], String> {
        super::check_log_value(value).map(|(payload, _)| payload)
    }
}

/// Splits a log payload (concatenated Automerge change chunks) into its changes, checking each
/// one: complete, a change chunk, its header checksum right. Any failure rejects the whole
/// payload, so a chunk is applied entirely or not at all.
fn split_changes(payload: &[u8]) -> Result<GoodChunk<'_>, String> {
    let mut changes = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let at = payload.len() - rest.len();
        if !rest.starts_with(&AUTOMERGE_MAGIC) || rest.len() < AUTOMERGE_HEADER_FIXED {
            return Err(format!("no Automerge chunk at byte {at}"));
        }
        let (len, len_bytes) = read_uleb128(&rest[AUTOMERGE_HEADER_FIXED..])
            .ok_or_else(|| format!("bad chunk length at byte {at}"))?;
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(AUTOMERGE_HEADER_FIXED + len_bytes))
            .filter(|t| *t <= rest.len())
            .ok_or_else(|| format!("chunk at byte {at} is truncated"))?;
        let (bytes, tail) = rest.split_at(total);
        let change = crate::doc::parse_change(bytes)
            .map_err(|e| format!("chunk at byte {at} is not a valid change: {e}"))?;
        let hash = change.hash();
        if bytes[4..8] != hash.0[..4] {
            return Err(format!("chunk at byte {at} fails its checksum"));
        }
        changes.push((bytes, hash));
        rest = tail;
    }
    if changes.is_empty() {
        return Err("empty chunk".to_string());
    }
    Ok(changes)
}

/// An unsigned LEB128 number at the start of `bytes`: its value and how many bytes it took.
fn read_uleb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        let low = u64::from(byte & 0x7f);
        value |= low.checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
