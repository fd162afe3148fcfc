//! The [`Testnet`] on its own: connectivity between namespaces, a partition and its heal seen
//! with `busybox ping`, and a teardown that leaves no trace. Needs root and `busybox`; sends
//! packets only between the namespaces it creates.

use std::process::{Command, Stdio};

use warren_testnet::Testnet;

/// Whether node `from` gets an answer from node `to` to one ping within a second.
fn reaches(net: &Testnet, from: usize, to: usize) -> bool {
    let target = net.addr(to).to_string();
    match net
        .exec(from, "busybox")
        .args(["ping", "-c", "1", "-W", "1", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) => status.success(),
        Err(e) => panic!("cannot run busybox ping (is busybox installed?): {e}"),
    }
}

fn output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

#[test]
fn partition_cuts_exactly_between_groups_and_teardown_leaves_nothing() {
    let mut net = match Testnet::new(3) {
        Ok(net) => net,
        Err(e) => panic!("cannot build the testnet (this test needs root): {e}"),
    };
    let run_id = net.run_id().to_string();
    let bridge = net.bridge().to_string();
    assert_eq!(net.len(), 3);
    assert_eq!(net.namespace(2), format!("wt-{run_id}-2"));
    assert_eq!(
        net.addr(1).to_string(),
        format!("{}.11", net.subnet().trim_end_matches(".0/24"))
    );

    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        assert!(
            reaches(&net, a, b),
            "node {a} cannot reach node {b} before any partition"
        );
    }

    assert!(net.partition(&[&[0, 1, 1]]).is_err(), "a node named twice");
    assert!(
        net.partition(&[&[3]]).is_err(),
        "a node that does not exist"
    );
    assert!(!net.is_partitioned());

    // `&[&[0]]`: node 0 alone, the others together.
    if let Err(e) = net.partition(&[&[0]]) {
        panic!("cannot partition: {e}");
    }
    assert!(net.is_partitioned());
    assert!(reaches(&net, 1, 2), "1 and 2 are on the same side");
    assert!(!reaches(&net, 0, 1), "0 is cut off from 1");
    assert!(!reaches(&net, 2, 0), "2 is cut off from 0");

    if let Err(e) = net.heal() {
        panic!("cannot heal: {e}");
    }
    assert!(!net.is_partitioned());
    for ns in 0..3 {
        let rules = output(
            "ip",
            &["netns", "exec", &net.namespace(ns), "iptables", "-w", "-S"],
        );
        assert!(
            !rules.lines().any(|l| l.starts_with("-A")),
            "rules left in node {ns} after the heal:\n{rules}"
        );
    }
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        assert!(
            reaches(&net, a, b),
            "node {a} cannot reach node {b} after the heal"
        );
    }

    if let Err(e) = net.down() {
        panic!("teardown failed: {e}");
    }
    assert!(net.down().is_ok(), "a second down() does nothing");
    let namespaces = output("ip", &["netns", "list"]);
    assert!(
        !namespaces.contains(&format!("wt-{run_id}-")),
        "namespaces left behind:\n{namespaces}"
    );
    let links = output("ip", &["-o", "link", "show"]);
    assert!(
        !links.contains(&format!("wt{run_id}")),
        "links left behind:\n{links}"
    );
    let forward = output("iptables", &["-w", "-S", "FORWARD"]);
    assert!(
        !forward.contains(&bridge),
        "FORWARD rule left behind:\n{forward}"
    );
}
