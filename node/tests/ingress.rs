//! The routing mesh (issue 15, part 4) on three real nodes on one host: `n1` accepts ingress
//! ports on 127.0.0.1, `n2` and `n3` run with `--ingress-addr none` (on one host they would
//! all ask for the same 127.0.0.1 port). A service of three busybox httpd replicas, one per
//! node, each serving a page that names its slot and node, published `--publish P:80`:
//!
//! - requests to `127.0.0.1:P` reach every replica (connections spread, crossing nodes);
//! - a second service asking the same published port is refused;
//! - a service whose slot 1 fails its health check never sends a connection to slot 1;
//! - after `docker kill` of a replica on another node, requests keep succeeding: at most the
//!   one in flight when the container died fails (the client is sequential; a connection
//!   to the dead container's port is refused and the proxy tries the next task), and none
//!   once the reports show the change;
//! - a published port another program holds is retried and shown with the reason in
//!   `cluster status`, and served once it is free.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(90);

/// A page per replica: `slot=<slot> node=<node id>`.
const PAGE_COMMAND: [&str; 3] = [
    "sh",
    "-c",
    "mkdir -p /www && echo \"slot=$WARREN_SLOT node=$WARREN_NODE_ID\" > /www/index.html; \
     trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
];

/// `(slot, node id)` named by a page.
fn page_of(body: &str) -> Option<(u32, String)> {
    let line = body.trim();
    let rest = line.strip_prefix("slot=")?;
    let (slot, node) = rest.split_once(" node=")?;
    Some((slot.parse().ok()?, node.to_string()))
}

fn create(node: &Node, args: &[&str]) -> std::process::Output {
    let mut all = vec!["service", "create"];
    all.extend_from_slice(args);
    all.push("--");
    all.extend_from_slice(&PAGE_COMMAND);
    node.cli(&all)
}

fn tasks(node: &Node, service: &str) -> Vec<Value> {
    node.cli_json(&["service", "ps", service])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The ingress port's entry in `n`'s `cluster status`.
fn port_state(node: &Node, port: u16) -> Option<Value> {
    let status = node.status()?;
    status["ingress"]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["port"] == port)
        .cloned()
}

#[test]
fn the_routing_mesh_spreads_over_healthy_tasks_and_survives_a_killed_one() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "mesh"]);
    let token = n1.join_token();
    let n2 = Node::start(
        "n2",
        &dir.path().join("n2"),
        &["--join", &token, "--ingress-addr", "none"],
    );
    let token = n1.join_token();
    let n3 = Node::start(
        "n3",
        &dir.path().join("n3"),
        &["--join", &token, "--ingress-addr", "none"],
    );
    let nodes = [&n1, &n2, &n3];
    wait_all_alive(&n1, 3, T);
    let port = free_tcp_port();
    let published = format!("{port}:80");
    let out = create(
        &n1,
        &[
            "web",
            "--image",
            IMAGE,
            "--replicas",
            "3",
            "--max-replicas-per-node",
            "1",
            "--publish",
            &published,
        ],
    );
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The spec says ingress; the tasks' containers took engine-chosen ports, not P.
    let inspect = n1
        .cli_json(&["service", "inspect", "web"])
        .expect("inspect");
    assert_eq!(inspect["spec"]["ports"][0]["mode"], "ingress", "{inspect}");
    wait_for("3 running replicas on 3 nodes", T, || {
        let ts = tasks(&n1, "web");
        let running: BTreeSet<String> = ts
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| t["node"].as_str().map(str::to_string))
            .collect();
        (running.len() == 3).then_some(())
    });
    for t in tasks(&n1, "web") {
        let host_port = t["ports"][0]["host_port"].as_u64().expect("published");
        assert_ne!(
            host_port,
            u64::from(port),
            "a task took the ingress port: {t}"
        );
    }
    wait_for("n1 listening with 3 backends", T, || {
        let p = port_state(&n1, port)?;
        (p["listening"] == true && p["backends"] == 3).then_some(())
    });
    // n2 runs no routing mesh and says so.
    let s2 = n2.status().expect("n2 status");
    assert!(s2["ingress"]["addr"].is_null(), "{s2}");

    // Every replica answers through the one port of n1.
    let mut seen = BTreeSet::new();
    for i in 0..60 {
        let body = http_get(port).unwrap_or_else(|| panic!("request {i} through the mesh failed"));
        seen.insert(page_of(&body).unwrap_or_else(|| panic!("page {body:?}")));
    }
    let slots: BTreeSet<u32> = seen.iter().map(|(s, _)| *s).collect();
    let answering: BTreeSet<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    let ids: BTreeSet<&str> = nodes.iter().map(|n| n.peer_id.as_str()).collect();
    assert_eq!(slots, BTreeSet::from([0, 1, 2]), "{seen:?}");
    assert_eq!(answering, ids, "every node's replica answered: {seen:?}");

    // The port is the service's: a second service may not ask for it.
    let other = create(&n1, &["other", "--image", IMAGE, "--publish", &published]);
    let err = one_line_error(&other);
    assert!(
        err.contains(&format!("port {port} is already published by service web")),
        "{err}"
    );

    // A service whose slot 1 fails its check never gets a connection to slot 1.
    let sick_port = free_tcp_port();
    let sick_published = format!("{sick_port}:80");
    let out = create(
        &n1,
        &[
            "sick",
            "--image",
            IMAGE,
            "--replicas",
            "2",
            "--publish",
            &sick_published,
            "--health-cmd",
            "test \"$WARREN_SLOT\" != 1",
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "create sick: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("sick slot 0 healthy", T, || {
        tasks(&n1, "sick")
            .iter()
            .any(|t| t["slot"] == 0 && t["health"] == "healthy")
            .then_some(())
    });
    let mut slot1_seen_unhealthy = false;
    for i in 0..40 {
        let body = http_get(sick_port).unwrap_or_else(|| panic!("sick request {i} failed"));
        let (slot, _) = page_of(&body).unwrap_or_else(|| panic!("page {body:?}"));
        assert_eq!(slot, 0, "request {i} reached slot {slot}");
        if i % 10 == 0 {
            slot1_seen_unhealthy |= tasks(&n1, "sick")
                .iter()
                .any(|t| t["slot"] == 1 && t["state"] == "running" && t["health"] != "healthy");
        }
    }
    assert!(
        slot1_seen_unhealthy
            || wait_for("sick slot 1 running, not healthy", T, || {
                tasks(&n1, "sick")
                    .iter()
                    .any(|t| t["slot"] == 1 && t["state"] == "running" && t["health"] != "healthy")
                    .then_some(true)
            }),
        "slot 1 never ran: the check above proved nothing"
    );
    let s1 = port_state(&n1, sick_port).expect("sick port");
    assert_eq!(s1["backends"], 1, "{s1}");

    // Kill web's replica on n2 (a task n1 reaches across nodes); a sequential client keeps
    // asking n1.
    let victim = wait_for("web's container on n2", T, || {
        containers(&[&n2.peer_id])
            .into_iter()
            .find(|c| c.service == "web" && c.running())
    });
    let before = tasks(&n1, "web")
        .into_iter()
        .find(|t| t["node"] == n2.peer_id.as_str())
        .expect("n2's task");
    let killed = std::process::Command::new("docker")
        .args(["kill", &victim.id])
        .output()
        .expect("docker kill");
    assert!(killed.status.success(), "docker kill");
    let started = Instant::now();
    let (mut requests, mut failed_before_report, mut failed_after_report) = (0u32, 0u32, 0u32);
    let mut report_changed_at: Option<u32> = None;
    while started.elapsed() < T {
        requests += 1;
        let ok = http_get(port).and_then(|b| page_of(&b)).is_some();
        match (ok, report_changed_at) {
            (false, None) => failed_before_report += 1,
            (false, Some(_)) => failed_after_report += 1,
            _ => {}
        }
        if report_changed_at.is_none() && requests % 5 == 0 {
            let changed = tasks(&n1, "web").into_iter().any(|t| {
                t["slot"] == before["slot"]
                    && (t["state"] != "running"
                        || t["restarts"] != before["restarts"]
                        || t["container"] != before["container"]
                        || t["ports"] != before["ports"])
            });
            if changed {
                report_changed_at = Some(requests);
            }
        }
        if report_changed_at.is_some_and(|at| requests >= at + 40) {
            break;
        }
    }
    let stats = n1.status().expect("status")["ingress"].clone();
    eprintln!(
        "{requests} requests after the kill: {failed_before_report} failed before the report \
         changed (at request {report_changed_at:?}), {failed_after_report} after; mesh: {stats}"
    );
    assert!(
        report_changed_at.is_some(),
        "n1 never saw the killed task's report change in {requests} requests"
    );
    assert!(
        failed_before_report <= 1,
        "{failed_before_report} requests failed before the reports changed (at most the one \
         in flight may)"
    );
    assert_eq!(
        failed_after_report, 0,
        "requests failed after the reports changed"
    );

    // A port this node cannot bind is retried and shown with the reason, then taken once free.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a blocker");
    let blocked = blocker.local_addr().expect("addr").port();
    let blocked_published = format!("{blocked}:80");
    let out = create(
        &n1,
        &["blocked", "--image", IMAGE, "--publish", &blocked_published],
    );
    assert!(
        out.status.success(),
        "create blocked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let error = wait_for("the port in use shown", T, || {
        port_state(&n1, blocked)?["error"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(
        error,
        format!("ingress port {blocked} on 127.0.0.1: address in use")
    );
    let table = n1.cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("address in use (retrying)"), "{text}");
    drop(blocker);
    wait_for("the freed port taken", T, || {
        let p = port_state(&n1, blocked)?;
        (p["listening"] == true && p["error"].is_null()).then_some(())
    });
    let body = wait_for("an answer on the freed port", T, || http_get(blocked));
    assert!(page_of(&body).is_some(), "{body:?}");
}
