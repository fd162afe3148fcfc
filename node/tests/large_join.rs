//! A real node joins a cluster whose desired state takes more than 50 MiB (issue 13): the
//! admission's answer is small and the document follows in sync round trips over the mesh,
//! each within its limits (a message above them is refused by the mesh and the join would
//! fail). Figures: run with `--no-capture`.

mod support;

use std::time::{Duration, Instant};

use support::*;
use warren_crdt::test_utils::{grow_history, service_name};
use warren_crdt::{NodeId, Store};

const T: Duration = Duration::from_secs(180);

#[test]
fn a_node_joins_a_cluster_of_50_mib_over_the_mesh() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "big"]);
    let token = n1.join_token();
    // Months of operation, offline: n1's document grown past 50 MiB in its own store (the
    // services scaled to nothing, so no container starts).
    n1.kill();
    let saved = {
        let mut store = Store::open(&n1.data_dir).expect("open n1's store");
        let me = NodeId(n1.peer_id.clone());
        let mut state = store.load(&me).expect("load").state.expect("a cluster");
        grow_history(&mut state, 62 << 20);
        for i in 0..4 {
            state
                .scale_service(&service_name(&format!("big-{i}")), 0)
                .expect("scale to 0");
        }
        store.persist(&mut state, true).expect("persist");
        state.save().len()
    };
    assert!(saved >= 50 << 20, "the document takes {saved} bytes");
    n1.restart(&[]);

    let started = Instant::now();
    let quic = warren_testkit::free_udp_port().expect("free udp port");
    let n2 = Node::start_within(
        "n2",
        &dir.path().join("n2"),
        free_tcp_port(),
        quic,
        &["--join", &token],
        T,
    );
    let joined = started.elapsed();
    let services = wait_for("n2 lists the four services", T, || {
        let list = n2.cli_json(&["service", "ls"])?;
        let names = list.as_array()?.len();
        (names >= 4).then_some(names)
    });
    assert_eq!(services, 4);
    wait_for("n1 lists both members", T, || {
        let status = n1.status()?;
        (status["members"].as_array()?.len() == 2).then_some(())
    });
    let log = n2.log_text();
    let caught_up = log
        .lines()
        .find(|l| l.contains("caught up with the cluster's desired state"))
        .expect("n2 logs its catch-up")
        .to_string();
    assert!(
        !log.contains("sync round failed"),
        "a sync round failed (a message over the mesh's limits?)"
    );
    eprintln!("document {saved} bytes; n2 up after {joined:?}; {caught_up}");
}
