//! A data dir on disk: arbitrary values written into a real sled database under the store's
//! keys, then `Store::open` and `Store::load` as `warren-node up` calls them. When `load`
//! repaired the store, a second open and load must find it clean (no skipped chunk), as the
//! `Store` documentation promises. Slow (a sled database per input): see README.md.
//!
//! Input: one flag byte (bit 0: make frame and chunk checksums right; bit 1: leave a gap in
//! the log's sequence numbers; bit 2: add a malformed `log/` key), then the snapshot value
//! (empty: none) and up to seven log values, separated by `SPLT`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::{NodeId, Store};
use warren_fuzz::{fix_store_frame, split_parts, FOUNDER};

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let mut values: Vec<Vec<u8>> = split_parts(rest, 8)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    if flags & 1 == 1 {
        values.iter_mut().for_each(|v| fix_store_frame(v));
    }
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    };
    let dir = base.expect("tempdir");
    {
        let db = sled::open(dir.path().join("state")).expect("sled");
        let tree = db.open_tree("desired").expect("tree");
        if !values[0].is_empty() {
            tree.insert("snapshot", values[0].as_slice())
                .expect("insert");
        }
        for (i, value) in values[1..].iter().enumerate() {
            let seq = if flags & 2 == 2 && i > 0 {
                i as u64 + 1
            } else {
                i as u64
            };
            let mut key = b"log/".to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            tree.insert(key, value.as_slice()).expect("insert");
        }
        if flags & 4 == 4 {
            tree.insert("log/bad", values[0].as_slice())
                .expect("insert");
        }
        db.flush().expect("flush");
    }
    let node = NodeId(FOUNDER.into());
    let store = Store::open(dir.path()).expect("open");
    let Ok(loaded) = store.load(&node) else {
        return;
    };
    let repaired = loaded.repaired;
    drop(store);
    if repaired {
        let store = Store::open(dir.path()).expect("reopen");
        let again = store.load(&node).expect("a repaired store loads");
        assert_eq!(
            again.skipped_chunks, 0,
            "a repaired store is clean: {:?}",
            again.skipped
        );
        assert!(again.state.is_some(), "a repaired store holds its state");
    }
});
