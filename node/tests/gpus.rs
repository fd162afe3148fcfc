//! GPU reservations end to end on a machine without GPUs (issue 16, item 4): `--gpus N`
//! reaches the spec through the CLI and the API, a slot that finds no node with N free GPUs
//! waits with the reason in `service ps`, and `service update --gpus 0` lets it run.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(40);

#[test]
fn a_task_wanting_gpus_waits_for_a_node_with_them_and_says_so() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "gpus"]);
    let mut args = vec![
        "service",
        "create",
        "train",
        "--image",
        IMAGE,
        "--replicas",
        "1",
        "--gpus",
        "2",
        "--",
    ];
    args.extend(WEB_COMMAND);
    let out = n1.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = n1
        .cli_json(&["service", "inspect", "train"])
        .expect("inspect");
    assert_eq!(spec["spec"]["gpus"], 2, "{spec}");

    wait_for("train waits for two free GPUs", T, || {
        let ps: Value = n1.cli_json(&["service", "ps", "train"])?;
        let task = ps.as_array()?.first()?.clone();
        (task["state"] == "pending" && task["status"] == "no node with 2 free GPUs").then_some(())
    });
    let running = || {
        containers(&[&n1.peer_id])
            .iter()
            .filter(|c| c.service == "train" && c.running())
            .count()
    };
    assert_eq!(running(), 0);

    // Without GPUs it runs.
    let out = n1.cli(&["service", "update", "train", "--gpus", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("train runs once it wants no GPU", T, || {
        (running() == 1).then_some(())
    });
}
