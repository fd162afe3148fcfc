//! Placement an operator steers (issue 16, item 2): on three real nodes started with
//! `--label zone=a|b`, a label constraint that no node meets waits and says why, takes the
//! node a runtime `node update --label-add` gives the label, and follows the label when it
//! moves; a spread preference balances two zones before nodes; `--max-replicas-per-node`
//! caps each node and the slot beyond waits with its reason. Members announce their
//! platform.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(40);

fn create(node: &Node, name: &str, replicas: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        name,
        "--image",
        IMAGE,
        "--replicas",
        replicas,
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend(WEB_COMMAND);
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn update_labels(node: &Node, target: &str, flags: &[&str]) {
    let mut args = vec!["node", "update", target];
    args.extend_from_slice(flags);
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Running replicas of `service` per node name.
fn running_on(service: &str, nodes: &[Node]) -> BTreeMap<String, usize> {
    nodes
        .iter()
        .map(|n| {
            let count = containers(&[&n.peer_id])
                .iter()
                .filter(|c| c.service == service && c.running())
                .count();
            (n.name.clone(), count)
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// The `status` of every pending task of `service` in `service ps`.
fn pending_reasons(node: &Node, service: &str) -> Option<Vec<String>> {
    let ps: Value = node.cli_json(&["service", "ps", service])?;
    Some(
        ps.as_array()?
            .iter()
            .filter(|t| t["state"] == "pending")
            .filter_map(|t| t["status"].as_str().map(str::to_string))
            .collect(),
    )
}

#[test]
fn constraints_spread_and_a_cap_place_replicas_where_the_operator_says() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start(
        "n1",
        &dir.path().join("n1"),
        &["--init", "placement", "--label", "zone=a"],
    );
    let token = n1.join_token();
    let n2 = Node::start(
        "n2",
        &dir.path().join("n2"),
        &["--join", &token, "--label", "zone=a"],
    );
    let token = n1.join_token();
    let n3 = Node::start(
        "n3",
        &dir.path().join("n3"),
        &["--join", &token, "--label", "zone=b", "--capability", "gpu"],
    );
    let nodes = [n1, n2, n3];
    wait_all_alive(&nodes[0], 3, T);
    // Every member announced its labels, capabilities and platform.
    let want_arch = warren_crdt::Platform::current().arch;
    wait_for("labels and platforms in the member records", T, || {
        let list = nodes[0].cli_json(&["node", "ls"])?;
        let list = list.as_array()?;
        let zones: BTreeMap<String, String> = list
            .iter()
            .filter_map(|m| {
                Some((
                    m["name"].as_str()?.to_string(),
                    m["labels"]["zone"].as_str()?.to_string(),
                ))
            })
            .collect();
        let announced = list
            .iter()
            .all(|m| m["platform"]["arch"] == want_arch.as_str() && m["platform"]["os"] == "linux");
        let gpu = list
            .iter()
            .any(|m| m["name"] == "n3" && m["capabilities"] == serde_json::json!(["gpu"]));
        (zones.len() == 3 && zones["n1"] == "a" && zones["n3"] == "b" && announced && gpu)
            .then_some(())
    });

    // A constraint nobody meets: the replica waits and `service ps` says why.
    create(
        &nodes[0],
        "pinned",
        "1",
        &["--constraint", "node.labels.tier==front"],
    );
    // Four replicas spread over the two zones first: two in zone b's one node.
    create(
        &nodes[0],
        "spread",
        "4",
        &["--placement-pref", "spread=node.labels.zone"],
    );
    // One per node at most: the fourth waits.
    create(&nodes[0], "capped", "4", &["--max-replicas-per-node", "1"]);
    // A capability constraint.
    create(
        &nodes[0],
        "gpu",
        "2",
        &["--constraint", "node.capabilities==gpu"],
    );

    wait_for("pinned waits for a node with tier=front", T, || {
        let reasons = pending_reasons(&nodes[1], "pinned")?;
        (reasons == ["no node matches node.labels.tier==front"]).then_some(())
    });
    wait_for("spread: two replicas in each zone", T, || {
        (running_on("spread", &nodes) == counts(&[("n1", 1), ("n2", 1), ("n3", 2)])).then_some(())
    });
    wait_for("capped: one per node, the fourth waits", T, || {
        let reasons = pending_reasons(&nodes[0], "capped")?;
        (running_on("capped", &nodes) == counts(&[("n1", 1), ("n2", 1), ("n3", 1)])
            && reasons == ["max-replicas-per-node 1 reached on every matching node (3)"])
        .then_some(())
    });
    wait_for(
        "gpu: both replicas on the node with the capability",
        T,
        || (running_on("gpu", &nodes) == counts(&[("n3", 2)])).then_some(()),
    );
    assert!(running_on("pinned", &nodes).is_empty());

    // The operator gives n2 the label at run time: the replica starts there.
    update_labels(&nodes[0], "n2", &["--label-add", "tier=front"]);
    wait_for("pinned runs on n2", T, || {
        (running_on("pinned", &nodes) == counts(&[("n2", 1)])).then_some(())
    });
    // The label moves to n3 (one write each, at two different peers): the replica follows,
    // and leaves the node that no longer matches.
    update_labels(&nodes[1], "n2", &["--label-rm", "tier"]);
    update_labels(&nodes[2], "n3", &["--label-add", "tier=front"]);
    wait_for("pinned moved to n3", T, || {
        (running_on("pinned", &nodes) == counts(&[("n3", 1)])).then_some(())
    });
    let n2 = wait_for("n2 without the label at n1", T, || {
        let m = nodes[0].cli_json(&["node", "inspect", "n2"])?;
        m["labels"].get("tier").is_none().then_some(m)
    });
    assert_eq!(n2["labels"]["zone"], "a", "other labels stay: {n2}");

    // Invalid placement is refused with the reason, and nothing is created.
    let out = nodes[0].cli(&[
        "service",
        "create",
        "bad",
        "--image",
        IMAGE,
        "--constraint",
        "node.labels.zone=a",
    ]);
    let err = one_line_error(&out);
    assert!(
        err.contains("node.labels.zone=a") && err.contains("=="),
        "{err}"
    );
    let out = nodes[0].cli(&["node", "update", "n1", "--label-add", "bad key=x"]);
    let err = one_line_error(&out);
    assert!(err.contains("invalid label key"), "{err}");
}
