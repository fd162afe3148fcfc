//! Size and speed of the desired state (issue 3), with criterion.
//!
//! ```sh
//! cargo bench -p warren-crdt --bench desired_state
//! ```
//!
//! The document: 1,000 services, each updated 10 times (create + 9 scale/env updates), on a
//! founder replica. Sizes are printed once at the start (they are not timings); the times are
//! criterion's. Figures and the machine they came from go into `crdt/README.md`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use warren_crdt::{
    ClusterInfo, DesiredState, Member, MemberState, NodeId, ServiceName, ServiceSpec, Store,
    SyncState,
};

const SERVICES: usize = 1_000;
const UPDATES: usize = 10;
const DIVERGENCE: usize = 10_000;

fn member(id: &str) -> Member {
    Member {
        id: NodeId(id.into()),
        name: id.into(),
        addrs: vec![format!("/ip4/127.0.0.1/udp/7701/quic-v1/p2p/{id}")],
        labels: Default::default(),
        capabilities: Default::default(),
        platform: Default::default(),
        admitted_by: NodeId(id.into()),
        admitted_at: 0,
        state: MemberState::Active,
        availability: Default::default(),
    }
}

fn spec(replicas: u32) -> ServiceSpec {
    ServiceSpec {
        image: "warren/busybox:latest".into(),
        replicas,
        command: vec!["httpd".into(), "-f".into(), "-p".into(), "80".into()],
        env: [("MODE".to_string(), "edge".to_string())].into(),
        ports: vec![],
        secrets: Vec::new(),
        ..Default::default()
    }
}

fn name(i: usize) -> ServiceName {
    ServiceName::new(format!("svc-{i:04}")).expect("valid name")
}

/// 1,000 services, each written 10 times.
fn big_document() -> DesiredState {
    let info = ClusterInfo {
        id: "bench".into(),
        name: "bench".into(),
        created_at: 0,
    };
    let mut doc = DesiredState::new_cluster(&info, &member("12D3KooWbenchA")).expect("init");
    for i in 0..SERVICES {
        doc.create_service(&name(i), &spec(1)).expect("create");
        for u in 1..UPDATES {
            if u % 3 == 0 {
                let mut s = spec(u as u32);
                s.env.insert("REVISION".into(), u.to_string());
                doc.update_service(&name(i), &s).expect("update");
            } else {
                doc.scale_service(&name(i), u as u32).expect("scale");
            }
        }
    }
    doc
}

/// Runs the sync protocol until both sides are quiet; returns (bytes sent, round trips).
fn sync(a: &mut DesiredState, b: &mut DesiredState) -> (usize, usize) {
    let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
    let (mut bytes, mut rounds) = (0, 0);
    loop {
        let m1 = a.generate_sync_message(&mut sa);
        if let Some(m) = &m1 {
            bytes += m.len();
            b.receive_sync_message(&mut sb, m).expect("receive");
        }
        let m2 = b.generate_sync_message(&mut sb);
        if let Some(m) = &m2 {
            bytes += m.len();
            a.receive_sync_message(&mut sa, m).expect("receive");
        }
        if m1.is_none() && m2.is_none() {
            return (bytes, rounds);
        }
        rounds += 1;
    }
}

/// Two replicas of `base` that each made `DIVERGENCE` changes the other has not seen.
fn diverged(base: &[u8]) -> (DesiredState, DesiredState) {
    let mut a = DesiredState::load(NodeId("12D3KooWbenchA".into()), base).expect("load");
    let mut b = DesiredState::load(NodeId("12D3KooWbenchB".into()), base).expect("load");
    for k in 0..DIVERGENCE {
        a.scale_service(&name(k % SERVICES), (k % 7) as u32 + 1)
            .expect("a");
        b.scale_service(&name((k * 7) % SERVICES), (k % 5) as u32 + 1)
            .expect("b");
    }
    (a, b)
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn sizes(doc: &mut DesiredState, saved: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("store");
    store.compact(doc).expect("compact");
    drop(store);
    let mut empty = DesiredState::empty(NodeId("12D3KooWbenchC".into()));
    let (sync_bytes, sync_rounds) = sync(doc, &mut empty);
    let (mut a, mut b) = diverged(saved);
    let started = Instant::now();
    let (merge_bytes, merge_rounds) = sync(&mut a, &mut b);
    let merge_once = started.elapsed();
    println!("== warren-crdt sizes: {SERVICES} services x {UPDATES} writes ==");
    println!("saved document (compacted):        {} bytes", saved.len());
    println!(
        "sled store after compaction:       {} bytes on disk",
        dir_size(dir.path())
    );
    println!("sync to an empty replica:          {sync_bytes} bytes in {sync_rounds} round trips");
    println!(
        "merge of 2 x {DIVERGENCE} diverged changes: {merge_bytes} bytes in {merge_rounds} round trips ({merge_once:?} once)"
    );
}

fn benches(c: &mut Criterion) {
    let mut doc = big_document();
    let saved = doc.save();
    sizes(&mut doc, &saved);

    let mut group = c.benchmark_group("desired_state");
    group.sample_size(10);
    group.bench_function("load 1000x10 document", |b| {
        b.iter(|| DesiredState::load(NodeId("12D3KooWbenchD".into()), black_box(&saved)))
    });

    // One remote change: an update of one service made on another replica.
    let mut remote = DesiredState::load(NodeId("12D3KooWbenchR".into()), &saved).expect("load");
    let change = remote.scale_service(&name(500), 42).expect("remote change");
    group.bench_function("apply one remote change", |b| {
        b.iter_batched(
            || DesiredState::load(NodeId("12D3KooWbenchE".into()), &saved).expect("load"),
            |mut replica| {
                replica.apply_change(black_box(&change)).expect("apply");
                replica
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("sync an empty replica up to date", |b| {
        b.iter_batched(
            || {
                (
                    DesiredState::load(NodeId("12D3KooWbenchF".into()), &saved).expect("load"),
                    DesiredState::empty(NodeId("12D3KooWbenchG".into())),
                )
            },
            |(mut full, mut empty)| sync(&mut full, &mut empty),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("merge 2 replicas diverged by 10000 changes each", |b| {
        b.iter_batched(
            || diverged(&saved),
            |(mut a, mut b)| sync(&mut a, &mut b),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(desired_state, benches);
criterion_main!(desired_state);
