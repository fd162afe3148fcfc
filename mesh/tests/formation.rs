//! How long three members dialing each other take until each knows the two others subscribed
//! to every topic (`MeshStats::subscribed_peers`), over many rounds: the figure behind the
//! mesh's `DIAL_CONCURRENCY` (README, "Gossip subscriptions no longer get lost").
//!
//! Ignored by default (a measurement, not a check of behaviour beyond "it forms"):
//!
//! ```text
//! FORMATION_ROUNDS=30 cargo nextest run -p warren-mesh --test formation \
//!     --run-ignored ignored-only --no-capture
//! ```
//!
//! Each round starts three fresh nodes (QUIC and TCP on 127.0.0.1, as in the flood test),
//! gives them one member set, and polls every 50 ms. It prints each round's time and the
//! minimum, median and maximum; `RUST_LOG=warren_mesh=debug` shows the reconnects
//! ("reconnecting afresh") a lost subscription announcement costs.

#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;
use warren_mesh::{spawn, Keypair, MeshConfig, MeshHandle, Multiaddr, PeerId};

/// A round that has not formed by then fails the measurement.
const DEADLINE: Duration = Duration::from_secs(20);

async fn node() -> (MeshHandle, PeerId, Vec<Multiaddr>) {
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "formation");
    config.listen = vec![
        "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
    ];
    config.redial_interval = Duration::from_millis(500);
    let (mesh, mut events) = spawn(config).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let addrs = mesh.stats().await.unwrap().listen_addrs;
    let id = mesh.local_peer_id();
    (mesh, id, addrs)
}

/// One round: how long until every node knows the others' subscriptions.
async fn round() -> Duration {
    let nodes = [node().await, node().await, node().await];
    let members: HashMap<PeerId, Vec<Multiaddr>> = nodes
        .iter()
        .map(|(_, id, addrs)| (*id, addrs.clone()))
        .collect();
    let start = Instant::now();
    for (mesh, _, _) in &nodes {
        mesh.set_members(members.clone()).await.unwrap();
    }
    loop {
        let mut formed = true;
        for (mesh, id, _) in &nodes {
            let known = mesh.stats().await.unwrap().subscribed_peers;
            formed &= nodes
                .iter()
                .all(|(_, other, _)| other == id || known.contains(other));
        }
        if formed {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not formed after {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    for (mesh, _, _) in &nodes {
        mesh.shutdown().await;
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it with --run-ignored ignored-only --no-capture"]
async fn three_members_know_each_others_subscriptions() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let rounds: usize = std::env::var("FORMATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut times = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let took = round().await;
        println!("formation: round {r}: {took:?}");
        times.push(took);
    }
    times.sort();
    println!(
        "formation: {rounds} rounds; min {:?}, median {:?}, max {:?}",
        times.first(),
        times.get(times.len() / 2),
        times.last()
    );
}
