//! Persistence of the desired state in sled: a compacted snapshot plus an append-only log of
//! incremental chunks, flushed before a local write is acknowledged.

use std::path::{Path, PathBuf};

use crate::{CrdtError, DesiredState, NodeId};

const SNAPSHOT: &[u8] = b"snapshot";
const LOG_PREFIX: &[u8] = b"log/";

/// After this many appended chunks the next [`Store::persist`] compacts into one snapshot.
pub const COMPACT_AFTER_CHUNKS: usize = 512;

/// The on-disk home of one node's replica: `<data dir>/state` (a sled database).
///
/// Layout: key `snapshot` holds a full save; keys `log/<u64 big-endian>` hold the incremental
/// chunks written since, in order. Load = snapshot, then every chunk in key order.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    tree: sled::Tree,
    db: sled::Db,
    next_seq: u64,
    chunks: usize,
}

/// What [`Store::load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The document, or `None` when the store is empty.
    pub state: Option<DesiredState>,
    /// Chunks that failed to load (corrupt tail): reported, skipped.
    pub skipped_chunks: usize,
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    ///
    /// Errors: [`CrdtError::Store`] with the path, e.g. when another process holds its lock.
    pub fn open(dir: &Path) -> Result<Self, CrdtError> {
        let path = dir.join("state");
        let err = |source| CrdtError::Store {
            path: path.clone(),
            source,
        };
        let db = sled::open(&path).map_err(err)?;
        let tree = db.open_tree("desired").map_err(err)?;
        let mut next_seq = 0;
        let mut chunks = 0;
        for item in tree.scan_prefix(LOG_PREFIX).keys() {
            let key = item.map_err(err)?;
            if let Some(seq) = key
                .get(LOG_PREFIX.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            {
                next_seq = next_seq.max(u64::from_be_bytes(seq) + 1);
                chunks += 1;
            }
        }
        Ok(Self {
            path,
            tree,
            db,
            next_seq,
            chunks,
        })
    }

    fn err(&self, source: sled::Error) -> CrdtError {
        CrdtError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the persisted replica and continues it as `node`. A chunk that fails to load is
    /// skipped and counted (the node starts from the last good state and anti-entropy refills
    /// the rest from peers); a corrupt snapshot is an error.
    ///
    /// Errors: [`CrdtError::Store`], [`CrdtError::Automerge`] for a corrupt snapshot.
    pub fn load(&self, node: &NodeId) -> Result<Loaded, CrdtError> {
        let snapshot = self.tree.get(SNAPSHOT).map_err(|e| self.err(e))?;
        let mut state = match snapshot {
            Some(bytes) => DesiredState::load(node.clone(), &bytes)?,
            None => DesiredState::empty(node.clone()),
        };
        let mut loaded_any = self.tree.get(SNAPSHOT).map_err(|e| self.err(e))?.is_some();
        let mut skipped_chunks = 0;
        for item in self.tree.scan_prefix(LOG_PREFIX) {
            let (key, chunk) = item.map_err(|e| self.err(e))?;
            match state.load_incremental(&chunk) {
                Ok(()) => loaded_any = true,
                Err(e) => {
                    skipped_chunks += 1;
                    tracing::warn!(store = %self.path.display(), key = ?key, error = %e,
                        "skipping a corrupt chunk of the desired state");
                }
            }
        }
        // Loading consumed the bytes we already hold: start the incremental cursor after them.
        let _ = state.save_incremental();
        Ok(Loaded {
            state: loaded_any.then_some(state),
            skipped_chunks,
        })
    }

    /// Appends what changed in `state` since the last persist; when `flush` is set, waits until
    /// it is on disk (do this before acknowledging a write). Compacts every
    /// [`COMPACT_AFTER_CHUNKS`] chunks.
    ///
    /// Errors: [`CrdtError::Store`].
    pub fn persist(&mut self, state: &mut DesiredState, flush: bool) -> Result<(), CrdtError> {
        if self.chunks >= COMPACT_AFTER_CHUNKS {
            return self.compact(state);
        }
        let chunk = state.save_incremental();
        if !chunk.is_empty() {
            let mut key = LOG_PREFIX.to_vec();
            key.extend_from_slice(&self.next_seq.to_be_bytes());
            self.tree.insert(key, chunk).map_err(|e| self.err(e))?;
            self.next_seq += 1;
            self.chunks += 1;
        }
        if flush {
            self.db.flush().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Replaces snapshot and log by one full save, atomically, and flushes.
    ///
    /// Errors: [`CrdtError::Store`].
    pub fn compact(&mut self, state: &mut DesiredState) -> Result<(), CrdtError> {
        let full = state.save();
        let _ = state.save_incremental();
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT, full);
        for key in self.tree.scan_prefix(LOG_PREFIX).keys() {
            batch.remove(key.map_err(|e| self.err(e))?);
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        self.chunks = 0;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
}
