//! Rollouts seen through the routing mesh (issue 15, "Done when"): a client sends a request
//! to the service's ingress port on `127.0.0.1` every 50 ms, as a user's client would, while
//! the service is updated; each page names the `VERSION` its task runs.
//!
//! - a start-first rolling update of 4 replicas loses no request, and both versions answer
//!   during it;
//! - a canary of 1 task in 4 answers about a quarter of the requests (counted); `promote`
//!   finishes it;
//! - a blue/green update loses no request: the old version answers every request until the
//!   switch, the new one every request after it.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const HEALTH: &str = "wget -q -O /dev/null http://127.0.0.1:80/";

/// A page naming the task's version and slot: `v=<VERSION> slot=<slot>`.
const PAGE_COMMAND: [&str; 3] = [
    "sh",
    "-c",
    "mkdir -p /www && echo \"v=$VERSION slot=$WARREN_SLOT\" > /www/index.html; \
     trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
];

/// The version a page names.
fn version_of(body: &str) -> Option<u32> {
    body.trim()
        .strip_prefix("v=")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn rollout(node: &Node) -> Value {
    node.cli_json(&["service", "inspect", "mesh"])
        .map(|s| s["rollout"].clone())
        .unwrap_or(Value::Null)
}

/// Requests through the mesh every 50 ms until `done` says so (checked before each one);
/// returns the versions that answered, in order, and the failures.
fn client(port: u16, limit: Duration, mut done: impl FnMut() -> bool) -> (Vec<u32>, Vec<String>) {
    let started = Instant::now();
    let (mut versions, mut failures) = (Vec::new(), Vec::new());
    while !done() {
        assert!(
            started.elapsed() < limit,
            "not done within {limit:?}: {} requests, {} failed",
            versions.len(),
            failures.len()
        );
        match http_get(port).as_deref().map(version_of) {
            Some(Some(v)) => versions.push(v),
            other => failures.push(format!(
                "request {}: {other:?}",
                versions.len() + failures.len()
            )),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (versions, failures)
}

fn cli_ok(node: &Node, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until every one of `n` requests through the mesh is answered by `version`.
fn wait_all_answer(port: u16, version: u32) {
    wait_for(
        &format!("every request answered by v={version}"),
        Duration::from_secs(90),
        || {
            (0..8)
                .all(|_| http_get(port).as_deref().and_then(version_of) == Some(version))
                .then_some(())
        },
    );
}

#[test]
fn rollouts_through_the_routing_mesh_lose_no_request_and_split_traffic() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("n1", &dir.path().join("n1"), &["--init", "rollout-mesh"]);
    let port = free_tcp_port();
    let publish = format!("{port}:80");
    let mut create = vec![
        "service",
        "create",
        "mesh",
        "--image",
        IMAGE,
        "--replicas",
        "4",
        "--publish",
        &publish,
        "--env",
        "VERSION=1",
        "--health-cmd",
        HEALTH,
        "--health-interval",
        "500ms",
        "--health-retries",
        "2",
        "--update-order",
        "start-first",
        "--update-monitor",
        "1s",
        "--",
    ];
    create.extend(PAGE_COMMAND);
    cli_ok(&node, &create);
    wait_all_answer(port, 1);

    // 1. A start-first rolling update: no request fails, both versions answer during it.
    let update = [
        "service",
        "update",
        "mesh",
        "--env",
        "VERSION=2",
        "--detach",
    ];
    cli_ok(&node, &update);
    let (versions, failures) = client(port, Duration::from_secs(180), || {
        rollout(&node)["state"] == "completed"
    });
    eprintln!(
        "rolling: {} requests, {} failed, versions {:?}",
        versions.len() + failures.len(),
        failures.len(),
        count(&versions)
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        versions.contains(&1) && versions.contains(&2),
        "{:?}",
        count(&versions)
    );
    wait_all_answer(port, 2);

    // 2. A canary of one task in four takes about a quarter of the requests; promote ends it.
    cli_ok(
        &node,
        &[
            "service",
            "update",
            "mesh",
            "--env",
            "VERSION=3",
            "--deploy",
            "canary",
            "--canary",
            "1",
            "--detach",
        ],
    );
    wait_for(
        "the canary waits for promotion",
        Duration::from_secs(90),
        || (rollout(&node)["state"] == "awaiting promotion").then_some(()),
    );
    let mut tally: BTreeMap<u32, u32> = BTreeMap::new();
    for _ in 0..200 {
        if let Some(v) = http_get(port).as_deref().and_then(version_of) {
            *tally.entry(v).or_default() += 1;
        }
    }
    let answered: u32 = tally.values().sum();
    let canary = tally.get(&3).copied().unwrap_or(0);
    eprintln!("canary: {tally:?} of {answered} answered");
    assert!(
        answered >= 195,
        "requests failed during the canary: {tally:?}"
    );
    assert_eq!(
        tally.keys().copied().collect::<Vec<_>>(),
        vec![2, 3],
        "{tally:?}"
    );
    // Smooth weighted round-robin over 4 equal backends gives the canary exactly 1 in 4
    // while the table stands; allow for a table rebuilt mid-count.
    assert!(
        (answered * 15 / 100..=answered * 35 / 100).contains(&canary),
        "canary share {canary}/{answered}"
    );
    cli_ok(&node, &["service", "promote", "mesh", "--detach"]);
    wait_for(
        "the promoted canary completes",
        Duration::from_secs(120),
        || (rollout(&node)["state"] == "completed").then_some(()),
    );
    wait_all_answer(port, 3);

    // 3. Blue/green: the old set answers every request until the switch, the new one after
    // it; none fails.
    cli_ok(
        &node,
        &[
            "service",
            "update",
            "mesh",
            "--env",
            "VERSION=4",
            "--deploy",
            "blue-green",
            "--update-delay",
            "2s",
            "--detach",
        ],
    );
    let mut switched = None;
    let mut requests = 0u32;
    let (versions, failures) = client(port, Duration::from_secs(180), || {
        let r = rollout(&node);
        if switched.is_none() && r["traffic_generation"].as_u64().is_some() {
            switched = Some(requests);
        }
        requests += 1;
        r["state"] == "completed"
    });
    eprintln!(
        "blue/green: {} requests, {} failed, switched at {switched:?}, versions {:?}",
        versions.len() + failures.len(),
        failures.len(),
        count(&versions)
    );
    assert!(failures.is_empty(), "{failures:?}");
    let first_new = versions.iter().position(|v| *v == 4).expect("v=4 answered");
    assert!(
        versions[..first_new].iter().all(|v| *v == 3)
            && versions[first_new..].iter().all(|v| *v == 4),
        "traffic switched at once, never back: {versions:?}"
    );
    assert!(
        switched.is_some(),
        "the switch was seen in the rollout record"
    );
    wait_all_answer(port, 4);
}

fn count(versions: &[u32]) -> BTreeMap<u32, usize> {
    let mut c = BTreeMap::new();
    for v in versions {
        *c.entry(*v).or_default() += 1;
    }
    c
}
