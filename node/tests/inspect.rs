//! `node inspect`: a member's capacity, what its tasks reserve, its usage and GPUs, as any
//! peer sees them from the member's heartbeats.

mod support;

use std::time::Duration;

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
