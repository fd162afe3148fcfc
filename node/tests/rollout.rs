//! Rollouts on real nodes (issue 15), driven through `warren-cli` as an operator would:
//!
//! - a start-first rolling update of a 4-replica httpd service to another image while a
//!   client calls the running, healthy tasks every 50 ms: no request fails, and
//!   `service update` waits and ends with "rollout completed";
//! - an update whose health check fails pauses after the first batch (`service update` exits
//!   1 with the reason), the old tasks still serving; `service rollback` returns to the
//!   previous spec;
//! - a canary stops at its count and waits; `service promote` rolls the rest; a second
//!   canary is removed by `service rollback`; `service pause` and `resume` stop and restart a
//!   rollout;
//! - killing the lease holder mid-rollout: the new holder finishes it.
//!
//! "Another image" is `warren/busybox:latest` tagged under a second name (removed at the
//! end); a failing health check is a command that fails. Without the routing mesh the
//! client reads `service ps` and calls tasks' published ports (as `drain.rs`).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(90);

/// A second name for the test image, removed on drop (only the tag: the image stays).
struct OtherImage(String);

impl OtherImage {
    fn new(test: &str) -> OtherImage {
        let tag = format!("warren/busybox:rollout-{test}-{}", std::process::id());
        let out = Command::new("docker")
            .args(["tag", IMAGE, &tag])
            .output()
            .expect("docker tag");
        assert!(
            out.status.success(),
            "docker tag: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        OtherImage(tag)
    }
}

impl Drop for OtherImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

const HEALTH: &str = "wget -q -O /dev/null http://127.0.0.1:80/";

/// `service create web` with 4 replicas (or `replicas`), port 80 published, an HTTP health
/// check every 500 ms, and `extra` flags.
fn create_web(node: &Node, replicas: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "web",
        "--image",
        IMAGE,
        "--replicas",
        replicas,
        "--publish",
        "80",
        "--health-cmd",
        HEALTH,
        "--health-interval",
        "500ms",
        "--health-retries",
        "2",
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend(WEB_COMMAND);
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(slot, generation, host port)` of every task of `web` listed running and healthy, not
/// an older container kept beside its slot's new one.
fn serving(node: &Node) -> Option<Vec<(u64, u64, u16)>> {
    let ps: Value = node.cli_json(&["service", "ps", "web"])?;
    Some(
        ps.as_array()?
            .iter()
            .filter(|t| t["state"] == "running" && t["health"] == "healthy")
            .filter(|t| t["previous"] != true)
            .filter_map(|t| {
                let port = t["ports"]
                    .as_array()?
                    .iter()
                    .find(|p| p["container_port"] == 80)?["host_port"]
                    .as_u64()?;
                Some((
                    t["slot"].as_u64()?,
                    t["generation"].as_u64()?,
                    u16::try_from(port).ok()?,
                ))
            })
            .collect(),
    )
}

/// The running tasks of `web` (older copies a rollout keeps aside), by slot: its
/// generation and container id.
fn containers(node: &Node) -> std::collections::BTreeMap<u64, (u64, String)> {
    let ps: Value = node
        .cli_json(&["service", "ps", "web"])
        .expect("service ps");
    ps.as_array()
        .expect("a list")
        .iter()
        .filter(|t| t["state"] == "running" && t["previous"] != true)
        .filter_map(|t| {
            Some((
                t["slot"].as_u64()?,
                (
                    t["generation"].as_u64()?,
                    t["container"].as_str()?.to_string(),
                ),
            ))
        })
        .collect()
}

/// Waits until exactly `n` tasks serve, all on `generation`.
fn wait_serving(node: &Node, n: usize, generation: u64) {
    wait_for(
        &format!("{n} healthy tasks of generation {generation}"),
        T,
        || {
            let s = serving(node)?;
            (s.len() == n && s.iter().all(|(_, g, _)| *g == generation)).then_some(())
        },
    );
}

fn service(node: &Node) -> Value {
    node.cli_json(&["service", "inspect", "web"])
        .expect("service inspect")
}

fn rollout(node: &Node) -> Value {
    service(node)["rollout"].clone()
}

/// Runs `warren-cli args` at `node` to the end; `(success, stdout, stderr)`.
fn run(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = node.cli(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_first_update_loses_no_request_a_failing_check_pauses_and_rollback_returns() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("n1", &dir.path().join("n1"), &["--init", "rollout-a"]);
    let other = OtherImage::new("a");
    create_web(
        &node,
        "4",
        &[
            "--update-order",
            "start-first",
            "--update-parallelism",
            "1",
            "--update-monitor",
            "1s",
        ],
    );
    wait_serving(&node, 4, 1);

    // `service update` waits for the rollout; the client calls a serving task every 50 ms.
    let mut update = Command::new(cli_bin())
        .args(["--peer", &node.peer(), "service", "update", "web"])
        .args(["--image", &other.0])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("service update");
    let started = Instant::now();
    let (mut requests, mut failures) = (0u32, Vec::new());
    let mut generations_seen = std::collections::BTreeSet::new();
    let status = loop {
        if let Some(status) = update.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the update did not finish: {requests} requests, {:?}",
            rollout(&node)
        );
        let Some(targets) = serving(&node) else {
            continue;
        };
        requests += 1;
        if targets.is_empty() {
            failures.push(format!("request {requests}: no serving task listed"));
            continue;
        }
        let (slot, generation, port) = targets[requests as usize % targets.len()];
        generations_seen.insert(generation);
        if http_get(port).is_none() {
            failures.push(format!(
                "request {requests}: slot {slot} generation {generation} port {port}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = update.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{requests} requests, {} failed, in {:?}; generations served {generations_seen:?}",
        failures.len(),
        started.elapsed()
    );
    assert!(
        status.success(),
        "service update: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("web: rollout completed"), "{stdout}");
    // Without a terminal: one plain line per change of the progress.
    assert!(stdout.contains("web: updating "), "{stdout}");
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        generations_seen.contains(&1) && generations_seen.contains(&2),
        "the client was served by both generations during the rollout: {generations_seen:?}"
    );
    wait_serving(&node, 4, 2);
    let r = rollout(&node);
    assert_eq!(
        (r["state"].as_str(), r["updated"].as_u64()),
        (Some("completed"), Some(4))
    );

    // An update whose health check fails: the first batch fails, the rollout pauses, the
    // others keep serving on generation 2; `service update` exits 1 with the reason.
    let (ok, stdout, stderr) = run(
        &node,
        &[
            "service",
            "update",
            "web",
            "--image",
            IMAGE,
            "--health-cmd",
            "exit 1",
        ],
    );
    assert!(!ok, "a paused rollout exits non-zero: {stdout}");
    assert!(
        stderr.contains("rollout of web paused") && stderr.contains("service rollback web"),
        "{stderr}"
    );
    let r = rollout(&node);
    assert_eq!(r["state"], "paused", "{r}");
    assert!(!r["reason"].as_str().unwrap_or("").is_empty(), "{r}");
    let still = serving(&node).expect("ps");
    assert!(
        still.iter().filter(|(_, g, _)| *g == 2).count() >= 3,
        "the old tasks still serve: {still:?}"
    );
    for (slot, _, port) in still.iter().filter(|(_, g, _)| *g == 2) {
        assert!(http_get(*port).is_some(), "slot {slot} on port {port}");
    }
    let (_, ls, _) = run(&node, &["service", "ls"]);
    assert!(ls.contains("UPDATE") && ls.contains("paused"), "{ls}");
    let (_, inspect, _) = run(&node, &["service", "inspect", "web"]);
    assert!(inspect.contains("Rollout:    paused"), "{inspect}");

    // `service rollback` (waits): the previous spec again, every task healthy.
    let (ok, stdout, stderr) = run(&node, &["service", "rollback", "web"]);
    assert!(ok, "rollback: {stdout} {stderr}");
    assert!(stdout.contains("web: rollout completed"), "{stdout}");
    let back = service(&node);
    assert_eq!(back["spec"]["image"], other.0.as_str());
    assert!(
        back["spec"]["health"]["probe"]["command"]
            .as_str()
            .is_some_and(|c| c.contains("wget")),
        "{}",
        back["spec"]
    );
    let generation = back["generation"].as_u64().expect("generation");
    assert_eq!(back["rollout"]["kind"], "rollback");
    wait_serving(&node, 4, generation);
    let history = node
        .cli_json(&["cluster", "history", "--service", "web"])
        .expect("history");
    assert!(
        history
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["message"] == "service rollback web")),
        "{history}"
    );
}

#[test]
fn canary_waits_for_promote_rollback_removes_it_and_pause_resume() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("n1", &dir.path().join("n1"), &["--init", "rollout-b"]);
    let other = OtherImage::new("b");
    create_web(&node, "4", &["--update-monitor", "1s"]);
    wait_serving(&node, 4, 1);

    let (ok, stdout, stderr) = run(
        &node,
        &[
            "service", "update", "web", "--image", &other.0, "--deploy", "canary", "--canary", "1",
        ],
    );
    assert!(ok, "{stdout} {stderr}");
    assert!(
        stdout.contains("canary running: 1 of 4 tasks on generation 2"),
        "{stdout}"
    );
    let tasks = serving(&node).expect("ps");
    assert_eq!(
        tasks.iter().filter(|(_, g, _)| *g == 2).count(),
        1,
        "one canary: {tasks:?}"
    );
    holds_for("the canary waits", Duration::from_secs(3), || {
        let r = rollout(&node);
        (r["state"] == "awaiting promotion")
            .then_some(())
            .ok_or(format!("{r}"))
    });
    let (ok, stdout, stderr) = run(&node, &["service", "promote", "web"]);
    assert!(ok, "promote: {stdout} {stderr}");
    assert!(stdout.contains("web: rollout completed"), "{stdout}");
    wait_serving(&node, 4, 2);
    let refused = node.cli(&["service", "promote", "web"]);
    let err = one_line_error(&refused);
    assert!(
        err.contains("service web has no canary waiting for promotion (rollout: completed)"),
        "{err}"
    );

    // A second canary, half the tasks; rollback removes it.
    let (ok, stdout, _) = run(
        &node,
        &[
            "service", "update", "web", "--image", IMAGE, "--canary", "50%",
        ],
    );
    assert!(
        ok && stdout.contains("canary running: 2 of 4 tasks on generation 3"),
        "{stdout}"
    );
    let before = containers(&node);
    let (ok, stdout, stderr) = run(&node, &["service", "rollback", "web"]);
    assert!(ok, "rollback: {stdout} {stderr}");
    let back = service(&node);
    assert_eq!(back["spec"]["image"], other.0.as_str());
    let generation = back["generation"].as_u64().expect("generation");
    wait_serving(&node, 4, generation);
    // The slots that never left generation 2's spec keep their containers, now reported at
    // the rollback's generation; the canary's slots got new ones.
    let after = containers(&node);
    for (slot, (g, id)) in &before {
        let (now_g, now_id) = after.get(slot).expect("every slot runs");
        assert_eq!(*now_g, generation, "slot {slot}: {after:?}");
        assert_eq!(
            now_id == id,
            *g == 2,
            "slot {slot} was on generation {g}: {before:?} -> {after:?}"
        );
    }
    assert_eq!(
        before.values().filter(|(g, _)| *g == 2).count(),
        2,
        "two slots never left generation 2: {before:?}"
    );

    // Pause and resume a slow rolling update.
    let (ok, _, stderr) = run(
        &node,
        &[
            "service",
            "update",
            "web",
            "--image",
            IMAGE,
            "--deploy",
            "rolling",
            "--update-monitor",
            "3s",
            "--detach",
        ],
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = run(&node, &["service", "pause", "web"]);
    assert!(ok && stdout.contains("rollout paused"), "{stdout} {stderr}");
    let r = rollout(&node);
    assert_eq!(
        (r["state"].as_str(), r["reason"].as_str()),
        (Some("paused"), Some("paused by operator"))
    );
    let held = r["updated"].as_u64().expect("updated");
    holds_for(
        "the paused rollout moves no slot",
        Duration::from_secs(5),
        || {
            let r = rollout(&node);
            (r["state"] == "paused" && r["updated"].as_u64() == Some(held))
                .then_some(())
                .ok_or(format!("{r}"))
        },
    );
    let (ok, stdout, stderr) = run(&node, &["service", "resume", "web"]);
    assert!(ok, "resume: {stdout} {stderr}");
    assert!(stdout.contains("web: rollout completed"), "{stdout}");
    let done = service(&node);
    assert_eq!(done["spec"]["image"], IMAGE);
    wait_serving(&node, 4, done["generation"].as_u64().expect("generation"));
}

#[test]
fn a_new_lease_holder_finishes_the_rollout() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster_of_three(dir.path(), "rollout-c");
    wait_all_alive(&nodes[0], 3, T);
    let other = OtherImage::new("c");
    create_web(&nodes[0], "4", &["--update-monitor", "3s"]);
    wait_serving(&nodes[0], 4, 1);
    let holder = wait_for("a lease holder", T, || {
        nodes[0].status()?["lease"]["holder_name"]
            .as_str()
            .map(str::to_string)
    });
    let asked = nodes
        .iter()
        .position(|n| n.name != holder)
        .expect("a node that is not the holder");
    let (ok, _, stderr) = run(
        &nodes[asked],
        &["service", "update", "web", "--image", &other.0, "-d"],
    );
    assert!(ok, "{stderr}");
    // Mid-rollout: a slot updated, others not yet.
    wait_for("the first slot updated", T, || {
        let r = rollout(&nodes[asked]);
        (r["state"] == "updating" && r["updated"].as_u64()? >= 1 && r["updated"].as_u64()? < 4)
            .then_some(())
    });
    let killed = nodes
        .iter()
        .position(|n| n.name == holder)
        .expect("the holder");
    nodes[killed].kill();
    let survivor = &nodes[asked];
    let new_holder = wait_for("another lease holder", T, || {
        let h = survivor.status()?["lease"]["holder_name"]
            .as_str()?
            .to_string();
        (h != holder).then_some(h)
    });
    wait_for(
        "the rollout completed under the new holder",
        Duration::from_secs(180),
        || (rollout(survivor)["state"] == "completed").then_some(()),
    );
    wait_serving(survivor, 4, 2);
    eprintln!("holder {holder} killed mid-rollout; {new_holder} finished it");
}
