//! End-to-end: Docker engine faults under a running `warren-node`. Each test runs its own
//! private `dockerd` (`warren_testkit::PrivateEngine`: own socket, data root, exec root and
//! network namespace; no bridge, no iptables), so killing and restarting it never touches
//! the machine's shared engine, which other tests use.
//!
//! - the engine's socket is missing when the node starts: the node comes up, serves its
//!   API, reports the engine down, and runs the service once the engine appears;
//! - the engine is SIGKILLed and restarted under a running node: the node reports the
//!   outage, keeps serving reads and writes, and once the engine is back runs every replica
//!   exactly once (counted by labels on the private engine), removing strays it finds.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::*;
use warren_testkit::PrivateEngine;

const T: Duration = Duration::from_secs(60);

/// Containers labelled `warren.node=<node>` on `engine`: (service, slot, running); none while
/// the engine does not answer.
fn tasks(engine: &PrivateEngine, node: &str) -> Vec<(String, u32, bool)> {
    engine
        .containers(&format!("label=warren.node={node}"))
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let running = c.running();
            (c.service, c.slot, running)
        })
        .collect()
}

/// Starts `engine`; a failure fails the test with the end of dockerd's log.
fn start(engine: &mut PrivateEngine) {
    if let Err(e) = engine.start() {
        panic!("{e}");
    }
}

/// This node's engine report, as its own `cluster status` shows it.
fn engine_of(node: &Node) -> Option<Value> {
    let status = node.status()?;
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["is_self"] == Value::Bool(true))
        .map(|m| m["engine"].clone())
        .filter(|e| !e.is_null())
}

fn engine_reachable(node: &Node) -> Option<bool> {
    engine_of(node).and_then(|e| e["reachable"].as_bool())
}

fn create(node: &Node, name: &str, replicas: &str) {
    let mut args = vec![
        "service",
        "create",
        name,
        "--image",
        IMAGE,
        "--replicas",
        replicas,
        "--",
    ];
    args.extend(WEB_COMMAND);
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "service create {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Running containers per (service, slot), and whether any slot has more than one
/// container (running or not).
fn census(engine: &PrivateEngine, node: &str) -> (BTreeMap<(String, u32), usize>, bool) {
    let mut per_slot: BTreeMap<(String, u32), usize> = BTreeMap::new();
    let mut running: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for (service, slot, up) in tasks(engine, node) {
        *per_slot.entry((service.clone(), slot)).or_default() += 1;
        if up {
            *running.entry((service, slot)).or_default() += 1;
        }
    }
    let duplicated = per_slot.values().any(|&n| n > 1);
    (running, duplicated)
}

fn running_of(engine: &PrivateEngine, node: &str, service: &str) -> usize {
    census(engine, node)
        .0
        .iter()
        .filter(|((s, _), _)| s == service)
        .count()
}

#[test]
fn a_node_started_without_its_engine_reports_it_and_runs_the_service_once_it_appears() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = PrivateEngine::new();
    let socket = engine.socket();
    let node = Node::start(
        "e1",
        &dir.path().join("e1"),
        &["--init", "engine", "--docker-host", &socket],
    );

    // Up without its engine: the API answers and says the engine is down, and why.
    let down = wait_for("the engine reported unreachable", T, || {
        engine_of(&node).filter(|e| e["reachable"] == Value::Bool(false))
    });
    assert!(
        down["error"].as_str().unwrap_or("").contains("docker.sock"),
        "{down}"
    );
    assert!(down["since_ms"].as_i64().unwrap_or(0) > 0, "{down}");
    let table = node.cli(&["cluster", "status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("unreachable since"), "{table}");
    assert!(
        node.log_text().contains("container engine unreachable"),
        "{}",
        node.log_text()
    );

    // Writes are taken; the tasks wait, with the reason in `service ps`.
    create(&node, "early", "2");
    wait_for("service ps to show the engine outage", T, || {
        let ps = node.cli_json(&["service", "ps", "early"])?;
        let tasks = ps.as_array()?;
        let waiting = |t: &Value| {
            t["state"] == "unknown"
                && t["status"]
                    .as_str()
                    .is_some_and(|s| s.contains("engine unreachable"))
        };
        (tasks.len() == 2 && tasks.iter().all(waiting)).then_some(())
    });

    // The engine appears: the node connects by itself and runs both replicas, once each.
    start(&mut engine);
    wait_for("2 running replicas on the private engine", T, || {
        (running_of(&engine, &node.peer_id, "early") == 2).then_some(())
    });
    wait_for("the engine reported reachable", T, || {
        (engine_reachable(&node) == Some(true)).then_some(())
    });
    let (running, duplicated) = census(&engine, &node.peer_id);
    assert!(!duplicated, "{running:?}");
    assert!(node.log_text().contains("container engine reachable again"));
    let table = node.cli(&["node", "ls"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("ENGINE") && table.contains(" ok "),
        "{table}"
    );
}

#[test]
fn an_engine_killed_and_restarted_under_a_running_node_gets_every_replica_back_once() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = PrivateEngine::new();
    start(&mut engine);
    let socket = engine.socket();
    let node = Node::start(
        "e2",
        &dir.path().join("e2"),
        &["--init", "engine", "--docker-host", &socket],
    );
    create(&node, "web", "3");
    wait_for("3 running replicas", T, || {
        (running_of(&engine, &node.peer_id, "web") == 3).then_some(())
    });
    assert_eq!(engine_reachable(&node), Some(true));

    // The engine crashes.
    engine.kill();
    wait_for("the node to report its engine unreachable", T, || {
        (engine_reachable(&node) == Some(false)).then_some(())
    });
    let log = node.log_text();
    assert!(log.contains("container engine unreachable"), "{log}");
    // The node keeps serving: reads, and a write that waits for the engine.
    let ps = node
        .cli_json(&["service", "ps", "web"])
        .expect("service ps");
    assert_eq!(ps.as_array().map(Vec::len), Some(3), "{ps}");
    create(&node, "late", "1");

    // Back: every replica of both services runs, each exactly once.
    start(&mut engine);
    wait_for("3 + 1 running replicas after the restart", T, || {
        let (running, duplicated) = census(&engine, &node.peer_id);
        let web = running.keys().filter(|(s, _)| s == "web").count();
        let late = running.keys().filter(|(s, _)| s == "late").count();
        (web == 3 && late == 1 && !duplicated).then_some(())
    });
    wait_for("the engine reported reachable again", T, || {
        (engine_reachable(&node) == Some(true)).then_some(())
    });
    assert!(node.log_text().contains("reachable again"));

    // Containers it does not know of, in its name: a stray slot and a second container
    // for slot 0. It removes the stray and keeps one container for slot 0.
    for (slot, name) in [("7", "stray-7"), ("0", "extra-0")] {
        let out = engine.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            &format!("warren.node={}", node.peer_id),
            "--label",
            "warren.service=web",
            "--label",
            &format!("warren.slot={slot}"),
            "--label",
            "warren.generation=1",
            IMAGE,
            "sleep",
            "600",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("the strays removed", T, || {
        let listed = tasks(&engine, &node.peer_id);
        let web: Vec<_> = listed.iter().filter(|(s, _, _)| s == "web").collect();
        (web.len() == 3 && web.iter().all(|(_, slot, up)| *up && *slot != 7)).then_some(())
    });
    // And it stays so.
    holds_for(
        "one running container per slot",
        Duration::from_secs(3),
        || {
            let (running, duplicated) = census(&engine, &node.peer_id);
            if duplicated || running.len() != 4 {
                return Err(format!("duplicated {duplicated}, {running:?}"));
            }
            Ok(())
        },
    );
}

#[test]
fn other_members_see_a_node_s_engine_outage_through_its_heartbeats() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    // No engine ever answers here: a directory of ours with no socket in it.
    let nowhere = tempfile::tempdir().expect("tempdir");
    let socket = format!("unix://{}/docker.sock", nowhere.path().display());
    let blind = Node::start(
        "blind",
        &dir.path().join("blind"),
        &["--init", "engine", "--docker-host", &socket],
    );
    let token = blind.join_token();
    let seer = Node::start("seer", &dir.path().join("seer"), &["--join", &token]);

    let engine_of = |name: &str| {
        let nodes = seer.cli_json(&["node", "ls"])?;
        nodes
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["engine"].clone())
            .filter(|e| !e.is_null())
    };
    let down = wait_for("seer to see blind's engine down", T, || {
        engine_of("blind").filter(|e| e["reachable"] == Value::Bool(false))
    });
    assert!(
        down["error"].as_str().unwrap_or("").contains("docker.sock"),
        "{down}"
    );
    wait_for("seer's own engine up", T, || {
        engine_of("seer").filter(|e| e["reachable"] == Value::Bool(true))
    });
    let table = seer.cli(&["node", "ls"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let blind_row = table
        .lines()
        .find(|l| l.starts_with("blind"))
        .unwrap_or_default();
    assert!(blind_row.contains("unreachable since"), "{table}");
}
