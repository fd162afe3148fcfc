//! A node joins a cluster whose document takes more than 50 MiB (issue 13): the admission's
//! answer stays small, the document follows in sync round trips, and no message exceeds the
//! mesh's limits (the harness checks every one). Figures: run with `--no-capture`.

mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use support::{node_id, Cluster};
use warren_core::protocol::{JoinRequest, SYNC_RESPONSE_BUDGET};
use warren_core::JoinError;

#[test]
fn a_node_joins_a_50_mib_cluster_in_messages_within_the_mesh_limits() {
    let started = Instant::now();
    let mut cluster = Cluster::founded_with_history("a", 62 << 20);
    let saved = cluster.machine(0).state_mut().save().len();
    assert!(saved >= 50 << 20, "the document takes {saved} bytes");
    cluster.tick();
    let token = cluster.mint_token(0);
    let built = started.elapsed();

    // A node older than issue 13 expects the whole document as the answer: refused, and
    // nothing written (the token keeps its use).
    let old = serde_json::to_vec(&JoinRequest {
        token: token.clone(),
        name: "old".into(),
        addrs: Vec::new(),
        labels: BTreeMap::new(),
        x25519_public_key: String::new(),
        sync_after: false,
    })
    .expect("encode");
    let now_secs = cluster.now_secs();
    let refused = cluster
        .machine(0)
        .handle_join(&node_id("old"), &old, now_secs)
        .expect_err("too large for one answer");
    assert!(
        matches!(refused, JoinError::DocumentTooLarge { .. }),
        "{refused:?}"
    );
    assert!(!cluster
        .machine(0)
        .state()
        .members()
        .contains_key(&node_id("old")));

    let started = Instant::now();
    let (b, figures) = cluster
        .join_measured(0, "b", &token, false)
        .expect("b is admitted");
    let took = started.elapsed();
    assert!(figures.answer < 64 * 1024, "{figures:?}");
    assert!(
        figures.rounds as usize > saved / SYNC_RESPONSE_BUDGET,
        "{saved} bytes cannot come in {figures:?}"
    );
    assert_eq!(cluster.heads(0), cluster.heads(b));
    assert_eq!(
        cluster.machine(b).state().services(),
        cluster.machine(0).state().services()
    );

    // The new member runs: both tick, heartbeat and sync, and stay in step.
    cluster.advance(3_000);
    assert_eq!(cluster.heads(0), cluster.heads(b));
    eprintln!(
        "document {saved} bytes (built in {built:?}); join: answer {} bytes, {} sync rounds, \
         largest request {} and response {} bytes, {} bytes in all, in {took:?}",
        figures.answer,
        figures.rounds,
        figures.largest_request,
        figures.largest_response,
        figures.bytes
    );
}
