//! The desired-state store on disk: round trips, compaction, and what a corrupt log value or
//! snapshot does to the next start (see the module documentation of `crdt/src/store.rs`).
//!
//! The corruption tests open the sled database directly at `<dir>/state`, tree `desired`, keys
//! `snapshot` and `log/<u64 big-endian>`, while no [`Store`] is open.

use std::path::Path;

use warren_crdt::{
    ClusterInfo, DesiredState, Loaded, Member, MemberState, NodeId, ServiceName, ServiceSpec,
    Store, COMPACT_AFTER_CHUNKS,
};

fn node() -> NodeId {
    NodeId("12D3KooWfounder".into())
}

fn new_cluster() -> DesiredState {
    let founder = Member {
        id: node(),
        name: "a".into(),
        addrs: vec![],
        labels: Default::default(),
        capabilities: Default::default(),
        platform: Default::default(),
        admitted_by: node(),
        admitted_at: 0,
        state: MemberState::Active,
        availability: Default::default(),
    };
    let info = ClusterInfo {
        id: "c1".into(),
        name: "lab".into(),
        created_at: 0,
    };
    DesiredState::new_cluster(&info, &founder).expect("new cluster")
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid name")
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        image: "warren/busybox:latest".into(),
        replicas: 1,
        command: vec![],
        env: Default::default(),
        ports: vec![],
        secrets: Vec::new(),
        ..Default::default()
    }
}

fn service_names(state: &DesiredState) -> Vec<String> {
    state
        .services()
        .into_keys()
        .map(|n| n.as_str().to_string())
        .collect()
}

/// A store holding the cluster (log chunk 0) and services `s1..=sN` (chunks 1..=N), one
/// persisted, flushed chunk each.
fn store_with_services(dir: &Path, n: usize) -> DesiredState {
    let mut store = Store::open(dir).expect("open");
    let mut state = new_cluster();
    store.persist(&mut state, true).expect("persist");
    for i in 1..=n {
        state
            .create_service(&name(&format!("s{i}")), &spec())
            .expect("create");
        store.persist(&mut state, true).expect("persist");
    }
    state
}

fn expected(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    let mut names: Vec<String> = range.map(|i| format!("s{i}")).collect();
    names.sort();
    names
}

fn log_key(seq: u64) -> Vec<u8> {
    let mut key = b"log/".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Runs `f` on the store's sled tree, opened directly (no `Store` may be open). Retries for a
/// while: sled releases the file lock of a dropped database lazily (as `Store::open` does).
fn with_tree<T>(dir: &Path, f: impl FnOnce(&sled::Tree) -> T) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let db = loop {
        match sled::open(dir.join("state")) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other.expect("open sled"),
        }
    };
    let tree = db.open_tree("desired").expect("tree");
    let out = f(&tree);
    db.flush().expect("flush");
    out
}

fn log_keys(dir: &Path) -> Vec<Vec<u8>> {
    with_tree(dir, |t| {
        t.scan_prefix(b"log/")
            .keys()
            .map(|k| k.expect("key").to_vec())
            .collect()
    })
}

fn load(dir: &Path) -> Loaded {
    Store::open(dir).expect("open").load(&node()).expect("load")
}

/// Corrupts the last log value with `corrupt(real bytes)`, then checks the documented outcome:
/// the first N-1 services, one skipped chunk, a repair, and a clean second start.
fn last_chunk_corruption_is_skipped_once(corrupt: impl FnOnce(&[u8]) -> Vec<u8>) {
    const N: usize = 6;
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_services(dir.path(), N);
    let keys = log_keys(dir.path());
    assert_eq!(keys.len(), N + 1);
    let last = keys.last().expect("a key").clone();
    assert_eq!(last, log_key(N as u64));
    with_tree(dir.path(), |t| {
        let real = t.get(&last).expect("get").expect("value");
        t.insert(&last, corrupt(&real)).expect("insert");
    });

    let first = load(dir.path());
    assert_eq!(first.skipped_chunks, 1, "{:?}", first.skipped);
    assert_eq!(first.skipped.len(), 1);
    assert!(
        first.skipped[0].starts_with(&format!("log/{N}: ")),
        "{:?}",
        first.skipped
    );
    assert_eq!(first.held_changes, 0);
    assert!(first.repaired);
    let state = first.state.expect("state");
    assert_eq!(service_names(&state), expected(1..=N - 1));
    assert!(state.cluster().is_some());

    // The repair rewrote a clean snapshot: the bad value is kept aside, out of the log.
    assert!(log_keys(dir.path()).is_empty());
    let quarantined = with_tree(dir.path(), |t| t.scan_prefix(b"corrupt/").keys().count());
    assert_eq!(quarantined, 1);

    let second = load(dir.path());
    assert_eq!(second.skipped_chunks, 0);
    assert!(second.skipped.is_empty());
    assert!(!second.repaired);
    assert_eq!(
        service_names(&second.state.expect("state")),
        expected(1..=N - 1)
    );
}

#[test]
fn garbage_in_the_last_chunk_costs_only_that_chunk() {
    last_chunk_corruption_is_skipped_once(|real| vec![0xA5; real.len()]);
}

#[test]
fn a_truncated_last_chunk_costs_only_that_chunk() {
    last_chunk_corruption_is_skipped_once(|real| real[..real.len() / 2].to_vec());
}

#[test]
fn a_last_chunk_cut_inside_its_header_is_skipped() {
    last_chunk_corruption_is_skipped_once(|real| real[..6].to_vec());
}

#[test]
fn writes_continue_after_a_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_services(dir.path(), 3);
    with_tree(dir.path(), |t| {
        t.insert(log_key(3), b"garbage".to_vec()).expect("insert")
    });
    let mut store = Store::open(dir.path()).expect("open");
    let loaded = store.load(&node()).expect("load");
    assert!(loaded.repaired);
    let mut state = loaded.state.expect("state");
    state
        .create_service(&name("after"), &spec())
        .expect("create");
    store.persist(&mut state, true).expect("persist");
    drop(store);

    let again = load(dir.path());
    assert_eq!(again.skipped_chunks, 0);
    let mut names = expected(1..=2);
    names.insert(0, "after".into());
    assert_eq!(service_names(&again.state.expect("state")), names);
}

/// A bad chunk in the middle: later changes that depend on it are held (invisible, counted),
/// a concurrent change from a peer that does not depend on it is applied, and the held ones
/// apply by themselves once the missing change arrives (as anti-entropy would bring it).
#[test]
fn a_bad_middle_chunk_holds_back_only_what_depends_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    let mut a = new_cluster();
    store.persist(&mut a, true).expect("persist"); // log/0: cluster init
    let mut b = DesiredState::load(NodeId("12D3KooWpeer".into()), &a.save()).expect("fork");

    let x = a.create_service(&name("x"), &spec()).expect("x");
    store.persist(&mut a, true).expect("persist"); // log/1: x (will be corrupted)
    let y = b.create_service(&name("y"), &spec()).expect("y"); // concurrent with x
    a.apply_change(&y).expect("apply y");
    store.persist(&mut a, true).expect("persist"); // log/2: y (depends on init only)
    a.create_service(&name("z"), &spec()).expect("z"); // depends on x and y
    store.persist(&mut a, true).expect("persist"); // log/3: z
    drop(store);
    with_tree(dir.path(), |t| {
        t.insert(log_key(1), b"\x00\x01garbage".to_vec())
            .expect("insert")
    });

    let loaded = load(dir.path());
    assert_eq!(loaded.skipped_chunks, 1);
    assert_eq!(loaded.held_changes, 1, "z waits for x");
    assert!(loaded.repaired);
    let mut state = loaded.state.expect("state");
    assert_eq!(service_names(&state), vec!["y".to_string()]);

    // The missing change arrives from a peer: the held one follows it.
    state.apply_change(&x).expect("apply x");
    assert_eq!(service_names(&state), vec!["x", "y", "z"]);

    // On disk the repair kept what was visible; the next start is clean.
    let again = load(dir.path());
    assert_eq!((again.skipped_chunks, again.held_changes), (0, 0));
    assert_eq!(
        service_names(&again.state.expect("state")),
        vec!["y".to_string()]
    );
}

/// A chunk that vanished from the middle of the sequence counts as skipped.
#[test]
fn a_missing_middle_chunk_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_services(dir.path(), 4);
    with_tree(dir.path(), |t| t.remove(log_key(2)).expect("remove"));
    let loaded = load(dir.path());
    assert_eq!(loaded.skipped_chunks, 1, "{:?}", loaded.skipped);
    assert!(
        loaded.skipped[0].contains("missing"),
        "{:?}",
        loaded.skipped
    );
    assert_eq!(loaded.held_changes, 2, "s3 and s4 depend on s2");
    assert_eq!(
        service_names(&loaded.state.expect("state")),
        vec!["s1".to_string()]
    );
    assert_eq!(load(dir.path()).skipped_chunks, 0);
}

/// With no snapshot and no chunk that loads, there is no state, and nothing is rewritten: the
/// data dir must not look like a fresh one.
#[test]
fn a_store_where_nothing_loads_is_not_mistaken_for_an_empty_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_services(dir.path(), 2);
    with_tree(dir.path(), |t| {
        for seq in 0..3 {
            t.insert(log_key(seq), b"garbage".to_vec()).expect("insert");
        }
    });
    for _ in 0..2 {
        let loaded = load(dir.path());
        assert!(loaded.state.is_none());
        assert_eq!(loaded.skipped_chunks, 3);
        assert!(!loaded.repaired);
    }
    assert_eq!(log_keys(dir.path()).len(), 3);
}

#[test]
fn a_corrupt_snapshot_is_an_error_naming_the_path_and_leaves_the_store_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = Store::open(dir.path()).expect("open");
        let mut state = new_cluster();
        store.persist(&mut state, true).expect("persist");
        store.compact(&mut state).expect("compact");
        state.create_service(&name("web"), &spec()).expect("create");
        store.persist(&mut state, true).expect("persist");
    }
    let good = with_tree(dir.path(), |t| {
        let good = t.get(b"snapshot").expect("get").expect("snapshot");
        let mut bad = good.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        t.insert(b"snapshot", bad).expect("insert");
        good
    });
    let store = Store::open(dir.path()).expect("open");
    let err = store
        .load(&node())
        .expect_err("a corrupt snapshot must not load");
    let text = err.to_string();
    assert!(text.contains(&store.path().display().to_string()), "{text}");
    assert!(text.contains("snapshot"), "{text}");
    drop(store);
    let (snapshot, logs) = with_tree(dir.path(), |t| {
        (
            t.get(b"snapshot").expect("get").expect("snapshot"),
            t.scan_prefix(b"log/").count(),
        )
    });
    assert_ne!(snapshot, good);
    assert_eq!(logs, 1, "the log is kept");

    // Putting the good snapshot back restores everything.
    with_tree(dir.path(), |t| t.insert(b"snapshot", good).expect("insert"));
    let loaded = load(dir.path());
    assert!(loaded.state.expect("state").service(&name("web")).is_some());
}

#[test]
fn loading_an_empty_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.path(), dir.path().join("state"));
    let loaded = store.load(&node()).expect("load");
    assert!(loaded.state.is_none());
    assert_eq!(loaded.skipped_chunks, 0);
    assert_eq!(loaded.held_changes, 0);
    assert!(!loaded.repaired);
}

#[test]
fn reopen_after_drop_continues_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut before = store_with_services(dir.path(), 3);
    let mut store = Store::open(dir.path()).expect("reopen");
    let loaded = store.load(&node()).expect("load");
    assert_eq!(loaded.skipped_chunks, 0);
    let mut state = loaded.state.expect("state");
    assert_eq!(state.heads(), before.heads());
    assert_eq!(service_names(&state), expected(1..=3));

    state.create_service(&name("s4"), &spec()).expect("create");
    store.persist(&mut state, true).expect("persist");
    // Nothing changed: nothing is appended.
    store.persist(&mut state, true).expect("persist");
    drop(store);
    assert_eq!(log_keys(dir.path()).len(), 5);
    let mut again = load(dir.path()).state.expect("state");
    assert_eq!(again.heads(), state.heads());
    assert_eq!(service_names(&again), expected(1..=4));
}

#[test]
fn compaction_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = store_with_services(dir.path(), 3);
    {
        let mut store = Store::open(dir.path()).expect("open");
        store.compact(&mut state).expect("compact");
    }
    assert!(log_keys(dir.path()).is_empty());
    let mut store = Store::open(dir.path()).expect("open");
    let mut loaded = store.load(&node()).expect("load").state.expect("state");
    assert_eq!(loaded.heads(), state.heads());

    // Writes after a compaction and a reload land in the log on top of the snapshot.
    loaded.scale_service(&name("s1"), 5).expect("scale");
    store.persist(&mut loaded, true).expect("persist");
    drop(store);
    assert_eq!(log_keys(dir.path()).len(), 1);
    let mut again = load(dir.path()).state.expect("state");
    assert_eq!(again.heads(), loaded.heads());
    assert_eq!(again.service(&name("s1")).map(|s| s.spec.replicas), Some(5));
}

#[test]
fn persist_compacts_after_enough_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    let mut state = new_cluster();
    for i in 0..COMPACT_AFTER_CHUNKS + 3 {
        state
            .create_service(&name(&format!("s{i}")), &spec())
            .expect("create");
        store.persist(&mut state, false).expect("persist");
    }
    store.persist(&mut state, true).expect("flush");
    drop(store);
    let keys = log_keys(dir.path());
    assert!(
        keys.len() < 4,
        "{} chunks left after compaction",
        keys.len()
    );
    let mut loaded = load(dir.path()).state.expect("state");
    assert_eq!(loaded.heads(), state.heads());
    assert_eq!(loaded.services().len(), COMPACT_AFTER_CHUNKS + 3);
}

/// Stores written before values were framed (bare Automerge bytes) still load, and a truncated
/// legacy chunk is still caught.
#[test]
fn legacy_unframed_values_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = new_cluster();
    let snapshot = state.save();
    state.create_service(&name("s1"), &spec()).expect("create");
    let one = state.save_incremental();
    state.create_service(&name("s2"), &spec()).expect("create");
    let two = state.save_incremental();
    with_tree(dir.path(), |t| {
        t.insert(b"snapshot", snapshot).expect("insert");
        t.insert(log_key(0), one).expect("insert");
        t.insert(log_key(1), &two[..two.len() - 3]).expect("insert");
    });
    let loaded = load(dir.path());
    assert_eq!(loaded.skipped_chunks, 1, "{:?}", loaded.skipped);
    assert_eq!(
        service_names(&loaded.state.expect("state")),
        vec!["s1".to_string()]
    );
}

/// A logged change whose first op its dependencies contradict (what the `store_chunks` fuzz
/// target found Automerge accepts, after which the document's save no longer loads) is
/// skipped like a corrupt chunk: the rest loads, the store is repaired, and the next start is
/// clean.
#[test]
fn a_logged_change_whose_first_op_is_contradicted_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = store_with_services(dir.path(), 2);
    // The next change, re-encoded with a first op five past the one its dependencies give.
    let good = state.create_service(&name("bad"), &spec()).expect("create");
    let mut expanded = automerge::Change::from_bytes(good)
        .expect("a change")
        .decode();
    expanded.start_op = std::num::NonZeroU64::new(expanded.start_op.get() + 5).expect("nonzero");
    let bad = automerge::Change::from(expanded);
    // A bare Automerge value is read as a legacy (unframed) log value.
    with_tree(dir.path(), |t| {
        t.insert(log_key(3), bad.raw_bytes().to_vec())
            .expect("insert")
    });
    let loaded = load(dir.path());
    assert_eq!(loaded.skipped_chunks, 1, "{:?}", loaded.skipped);
    assert!(
        loaded.skipped.iter().any(|s| s.contains("starts at op")),
        "{:?}",
        loaded.skipped
    );
    assert!(loaded.repaired);
    assert_eq!(
        service_names(&loaded.state.expect("state")),
        expected(1..=2)
    );
    let again = load(dir.path());
    assert_eq!(again.skipped_chunks, 0);
    assert_eq!(service_names(&again.state.expect("state")), expected(1..=2));
}

/// `stored_bytes` counts the snapshot and the log chunks as they are on disk: it grows with
/// each persisted chunk by that chunk's size, and after a compaction it is the one snapshot.
#[test]
fn stored_bytes_are_the_snapshot_and_the_log_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    assert_eq!(store.stored_bytes(), 0, "an empty store");
    let mut state = new_cluster();
    store.persist(&mut state, true).expect("persist");
    let one = store.stored_bytes();
    assert!(one > 0);
    state.create_service(&name("s1"), &spec()).expect("create");
    store.persist(&mut state, true).expect("persist");
    let two = store.stored_bytes();
    assert!(two > one, "{two} > {one}");
    store.compact(&mut state).expect("compact");
    let compacted = store.stored_bytes();
    assert!(compacted > 0);
    drop(store);
    let on_disk: u64 = with_tree(dir.path(), |t| {
        t.iter().map(|kv| kv.expect("entry").1.len() as u64).sum()
    });
    assert_eq!(compacted, on_disk, "the snapshot is all the tree holds");
}
