//! `warren-cli cluster set rebalance off|on` (issue 12 item 2): a cluster setting in the
//! desired-state document, written at any peer and obeyed by the lease holder wherever it is.
//! With rebalance off an empty node that joins gets nothing; switched back on, it gets a
//! replica. Bad input gets one line and a non-zero exit from the CLI, a stable code from the
//! API.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(30);

/// Running containers of `service` on `node` (a peer id).
fn running_on(service: &str, node: &str) -> usize {
    containers(&[node])
        .iter()
        .filter(|c| c.service == service && c.running())
        .count()
}

/// `PATCH /v1/cluster/settings` on `node`'s local API with `body`: status and JSON answer.
fn patch_settings(node: &Node, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method("PATCH")
        .uri(format!("{}/v1/cluster/settings", node.peer()))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .expect("request");
    let mut response = agent.run(request).expect("PATCH /v1/cluster/settings");
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (response.status().as_u16(), json)
}

fn rebalance_at(node: &Node) -> Option<bool> {
    node.cli_json(&["cluster", "settings"])?["rebalance"].as_bool()
}

#[test]
fn rebalance_off_leaves_a_joining_node_empty_until_it_is_switched_on() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "settings"]);
    let token = n1.join_token();
    let n2 = Node::start("n2", &dir.path().join("n2"), &["--join", &token]);
    wait_all_alive(&n1, 2, T);

    // On by default, at every peer; the table says so in words.
    assert_eq!(rebalance_at(&n1), Some(true));
    let table = n2.cli(&["cluster", "settings"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["rebalance", "on"])),
        "{table}"
    );

    // Switched off at a peer that is not the founder; every peer has it once merged.
    let set = n2.cli_json(&["cluster", "set", "rebalance", "off"]);
    assert_eq!(set, Some(serde_json::json!({"rebalance": false})));
    wait_for("rebalance off at n1", T, || {
        (rebalance_at(&n1) == Some(false)).then_some(())
    });
    let history = n1
        .cli_json(&["cluster", "history"])
        .expect("cluster history");
    assert!(
        history
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["message"] == "cluster set rebalance=off"),
        "{history}"
    );

    // Operator mistakes: one line, non-zero exit, nothing written.
    let err = one_line_error(&n1.cli(&["cluster", "set", "rebalance", "maybe"]));
    assert!(err.contains("on or off"), "{err}");
    let err = one_line_error(&n1.cli(&["cluster", "set", "spread", "on"]));
    assert!(err.contains("no cluster setting \"spread\""), "{err}");
    // The API: a misspelt setting, none at all, a value of the wrong type.
    let (status, body) = patch_settings(&n1, r#"{"rebalanse": false}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_field")),
        "{body}"
    );
    let (status, body) = patch_settings(&n1, "{}");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    let (status, body) = patch_settings(&n1, r#"{"rebalance": "off"}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_argument")),
        "{body}"
    );
    assert_eq!(rebalance_at(&n1), Some(false));

    // Four replicas on two nodes: two each.
    let mut create = vec![
        "service",
        "create",
        "web",
        "--image",
        IMAGE,
        "--replicas",
        "4",
        "--",
    ];
    create.extend(WEB_COMMAND);
    let out = n1.cli(&create);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("2 + 2 replicas running", T, || {
        (running_on("web", &n1.peer_id) == 2 && running_on("web", &n2.peer_id) == 2).then_some(())
    });

    // An empty node joins: with rebalance on, the holder would move one replica to it after
    // 10 s of calm (the gap is two). Off, it stays empty well past that.
    let token = n1.join_token();
    let n3 = Node::start("n3", &dir.path().join("n3"), &["--join", &token]);
    wait_all_alive(&n1, 3, T);
    wait_for("rebalance off at the joiner", T, || {
        (rebalance_at(&n3) == Some(false)).then_some(())
    });
    holds_for(
        "no replica moved while rebalance is off",
        Duration::from_secs(18),
        || match running_on("web", &n3.peer_id) {
            0 => Ok(()),
            n => Err(format!("{n} replicas of web on the new node")),
        },
    );

    // Switched back on (at the newcomer this time): spread is restored, one replica moves.
    assert_eq!(
        n3.cli_json(&["cluster", "set", "rebalance", "on"]),
        Some(serde_json::json!({"rebalance": true}))
    );
    wait_for(
        "a replica of web on the new node",
        Duration::from_secs(60),
        || (running_on("web", &n3.peer_id) == 1).then_some(()),
    );
    wait_for("4 replicas running, spread 2/1/1", T, || {
        let counts = [&n1, &n2, &n3].map(|n| running_on("web", &n.peer_id));
        (counts.iter().sum::<usize>() == 4 && counts.iter().all(|c| (1..=2).contains(c)))
            .then_some(())
    });
}
