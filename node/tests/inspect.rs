//! `node inspect`: a member's capacity, what its tasks reserve, its usage and GPUs, as any
//! peer sees them from the member's heartbeats.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn node_inspect_shows_capacity_reservations_usage_and_gpus_at_any_peer() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster_of_three(dir.path(), "inspect");
    let cpus = std::thread::available_parallelism()
        .expect("CPU count")
        .get() as u64;

    // n2's own figures, read at n1 from n2's heartbeats.
    let m = wait_for("n2's capacity and usage at n1", T, || {
        let m = nodes[0].cli_json(&["node", "inspect", "n2"])?;
        (m["capacity"].is_object() && m["usage"].is_object()).then_some(m)
    });
    assert_eq!(m["name"], "n2");
    assert_eq!(m["capacity"]["nano_cpus"], cpus * 1_000_000_000);
    let memory = m["capacity"]["memory_bytes"].as_u64().expect("memory");
    let used = m["usage"]["memory_used_bytes"]
        .as_u64()
        .expect("memory used");
    assert!(memory > 0 && used > 0 && used < memory, "{m}");
    assert_eq!(m["reserved"]["nano_cpus"], 0, "nothing reserved yet: {m}");
    // This machine has no NVIDIA GPU; with one, nvidia-smi would list it.
    if std::process::Command::new("nvidia-smi").output().is_err() {
        assert_eq!(m["gpus"], serde_json::json!([]), "{m}");
    }

    // n2's place on the overlay, published from its own key file (not its identity's nor
    // its secrets' key), with the addresses the rule derives from that key.
    let m = wait_for("n2's overlay record at n1", T, || {
        let m = nodes[0].cli_json(&["node", "inspect", "n2"])?;
        m["overlay"].is_object().then_some(m)
    });
    let key_text = std::fs::read_to_string(nodes[1].data_dir.join("wireguard.key"))
        .expect("n2's wireguard.key");
    let key = warren_node::overlay::WireguardKey::from_file_text(&key_text).expect("a key");
    assert_eq!(
        m["overlay"]["wg_public_key"],
        key.public().to_base64(),
        "{m}"
    );
    let status = nodes[0].cli_json(&["cluster", "status"]).expect("status");
    let cluster_id = status["cluster"]["id"].as_str().expect("cluster id");
    let record: warren_crdt::MemberOverlay =
        serde_json::from_value(m["overlay"].clone()).expect("a record");
    let addresses = warren_node::overlay::verify(cluster_id, &record).expect("follows the rule");
    assert!(record.overlay_ip.starts_with("fd"), "{record:?}");
    assert_eq!(addresses.overlay_ip.to_string(), record.overlay_ip);
    let text = nodes[0].cli(&["node", "inspect", "n2"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("OVERLAY       {} (containers", record.overlay_ip)),
        "{text}"
    );

    // n2's word on its interface, from its reports: on (with the address its record names)
    // when it created one, off and why otherwise (the three nodes share this machine's
    // network namespace, so at most one of them has `warren0`).
    let m = wait_for("n2's overlay state at n1", T, || {
        let m = nodes[0].cli_json(&["node", "inspect", "n2"])?;
        m["overlay_state"].is_object().then_some(m)
    });
    let state = &m["overlay_state"];
    match state["state"].as_str() {
        Some("on") => {
            assert_eq!(state["address"], record.overlay_ip.as_str(), "{m}");
            assert_eq!(state["interface"], "warren0", "{m}");
        }
        Some("off") => assert!(
            state["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{m}"
        ),
        _ => panic!("the overlay is neither on nor off: {m}"),
    }
    let text = nodes[0].cli(&["node", "inspect", "n2"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("OVERLAY STATE ")
            && (l.contains(&format!("on (warren0, {}", record.overlay_ip)) || l.contains("off: "))),
        "{text}"
    );

    // Three replicas spread one per node, each reserving a quarter CPU and 64 MiB: n2's
    // reservation shows at n3.
    let mut create = vec![
        "service",
        "create",
        "small",
        "--image",
        IMAGE,
        "--replicas",
        "3",
        "--cpus",
        "0.25",
        "--memory",
        "64M",
        "--",
    ];
    create.extend(WEB_COMMAND);
    let out = nodes[0].cli(&create);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = wait_for("n2's reservation at n3", T, || {
        let m = nodes[2].cli_json(&["node", "inspect", "n2"])?;
        (m["reserved"]["nano_cpus"] == 250_000_000u64).then_some(m)
    });
    assert_eq!(m["reserved"]["memory_bytes"], 64u64 << 20, "{m}");
    assert_eq!(m["display"]["reserved_cpus"], "0.25 CPUs", "{m}");

    // The table says the same for people.
    let out = nodes[2].cli(&["node", "inspect", "n2"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("CPUS") && l.contains("(reserved 0.25 CPUs)")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("MEMORY") && l.contains("reserved 64 MiB, in use")),
        "{text}"
    );

    // An unknown member is one clear line and a failure.
    let err = one_line_error(&nodes[0].cli(&["node", "inspect", "nobody"]));
    assert!(err.contains("no member named nobody"), "{err}");
}

/// A node that cannot create its interface runs without the overlay and says so; one started
/// with `--no-overlay` says it is disabled: both in `node inspect` and under `cluster status`,
/// at any peer. n2 asks for the interface n1 already runs (its UAPI socket answers), which
/// fails whatever the machine; n1's own interface needs root and `/dev/net/tun`.
#[test]
fn a_node_without_its_interface_says_so_and_the_cluster_runs_on() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let iface = format!("wi{}", std::process::id() % 1_000_000_000);
    // The nodes are killed (SIGKILL) when dropped: their TUN links go with them, the UAPI
    // socket file stays. Dropped after the nodes (declared before them).
    struct Socket(String);
    impl Drop for Socket {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.0));
        }
    }
    let _socket = Socket(iface.clone());
    let n1 = Node::start(
        "n1",
        &dir.path().join("n1"),
        &["--init", "ovl", "--overlay-interface", &iface],
    );
    let n1_state = wait_for("n1's overlay state", T, || {
        let m = n1.cli_json(&["node", "inspect", "n1"])?;
        m["overlay_state"]
            .is_object()
            .then(|| m["overlay_state"].clone())
    });
    let token = n1.join_token();
    let n2 = Node::start(
        "n2",
        &dir.path().join("n2"),
        &["--join", &token, "--overlay-interface", &iface],
    );
    let token = n1.join_token();
    let n3 = Node::start(
        "n3",
        &dir.path().join("n3"),
        &["--join", &token, "--no-overlay"],
    );

    // At n3 (a third party): n2 is off and says why, n3 disabled.
    let state = |at: &Node, of: &str| {
        at.cli_json(&["node", "inspect", of])
            .map(|m| m["overlay_state"].clone())
            .filter(Value::is_object)
    };
    let n2_state = wait_for("n2's overlay state at n3", T, || state(&n3, "n2"));
    assert_eq!(n2_state["state"], "off", "{n2_state}");
    let reason = n2_state["reason"].as_str().expect("a reason");
    assert!(reason.contains(&iface), "{reason}");
    let n3_state = wait_for("n3's overlay state at n1", T, || state(&n1, "n3"));
    assert_eq!(n3_state, serde_json::json!({"state": "disabled"}));

    // n1: on with n2 as its one peer (n2 published its record; n3 none), where it can.
    match n1_state["state"].as_str() {
        Some("on") => {
            let m = wait_for("n1 with one overlay peer", T, || {
                let m = n1.cli_json(&["node", "inspect", "n1"])?;
                (m["overlay_state"]["peers"] == 1).then_some(m)
            });
            assert_eq!(m["overlay_state"]["interface"], iface.as_str(), "{m}");
        }
        Some("off") => eprintln!("n1 has no interface here either: {n1_state}"),
        _ => panic!("n1's overlay is neither on nor off: {n1_state}"),
    }

    // For people: the rows and lines.
    let out = n3.cli(&["node", "inspect", "n2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("OVERLAY STATE") && l.contains("off: ")),
        "{text}"
    );
    let out = n1.cli(&["cluster", "status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("overlay off at n2: ") && l.contains(&iface)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "overlay disabled at n3 (--no-overlay)"),
        "{text}"
    );

    // The rest of the cluster works: a service runs on every node, the one without the
    // overlay included. Read at n1, the lease holder, which every member reports to (a
    // member that is neither holder nor successor may miss another member's report for
    // longer than this wait: seen without the overlay too).
    let mut create = vec![
        "service",
        "create",
        "ovl",
        "--image",
        IMAGE,
        "--replicas",
        "3",
        "--",
    ];
    create.extend(WEB_COMMAND);
    let out = n2.cli(&create);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("three running replicas", T, || {
        let tasks = n1.cli_json(&["service", "ps", "ovl"])?;
        let running = tasks
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (running == 3).then_some(())
    });
}
