//! End-to-end: health checks, restart policies, resource limits and stop timeouts, with real
//! `warren-node` processes driving the machine's Docker engine, set through `warren-cli` and
//! checked in `service ps` and `docker inspect`.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(60);

/// The one task of `service` as `service ps -o json` shows it.
fn task(node: &Node, service: &str) -> Option<Value> {
    let ps = node.cli_json(&["service", "ps", service])?;
    ps.as_array()?.first().cloned()
}

/// `docker inspect -f FORMAT ID`, trimmed; `None` when docker fails.
fn inspect(id: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The one container of `service` run by `node`.
fn container_of(node: &Node, service: &str) -> Option<Container> {
    let mut found: Vec<Container> = containers(&[node.peer_id.as_str()])
        .into_iter()
        .filter(|c| c.service == service)
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

fn create(node: &Node, args: &[&str]) {
    let mut all = vec!["service", "create"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "service create {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// For `window`, checks every 200 ms that `holds` is still true of the task; panics at the
/// first time it is not.
fn stays(node: &Node, service: &str, what: &str, window: Duration, holds: impl Fn(&Value) -> bool) {
    holds_for(what, window, || {
        let t = task(node, service).expect("service ps");
        if holds(&t) {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
}

#[test]
fn a_task_that_fails_its_health_check_is_restarted_and_ps_shows_its_health() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("h1", &dir.path().join("h1"), &["--init", "health"]);
    // Healthy from its second start on: the first run never creates /tmp/healthy.
    let script = "trap 'exit 0' TERM; \
                  if [ -f /tmp/started ]; then touch /tmp/healthy; fi; touch /tmp/started; \
                  httpd -f -p 80 -h /www & wait";
    create(
        &node,
        &[
            "flaky",
            "--image",
            IMAGE,
            "--health-cmd",
            "test -f /tmp/healthy",
            "--health-interval",
            "500ms",
            "--health-retries",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let first = wait_for("the task's container", T, || container_of(&node, "flaky"));
    assert_eq!(
        inspect(&first.id, "{{json .Config.Healthcheck.Test}}").as_deref(),
        Some(r#"["CMD-SHELL","test -f /tmp/healthy"]"#)
    );
    let healthy = wait_for("the restarted task to be healthy", T, || {
        let t = task(&node, "flaky")?;
        (t["health"] == "healthy").then_some(t)
    });
    assert_eq!(healthy["state"], "running", "{healthy}");
    assert_eq!(
        healthy["restarts"], 1,
        "one restart after unhealthy: {healthy}"
    );
    assert!(
        healthy["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("unhealthy")),
        "the last run ended unhealthy: {healthy}"
    );
    // The same container was stopped and started again, not replaced.
    let now = container_of(&node, "flaky").expect("container");
    assert_eq!(now.id, first.id);
    assert!(now.running());
    // The table shows health per task.
    let table = node.cli(&["service", "ps", "flaky"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().next().is_some_and(|h| h.contains("HEALTH")),
        "{text}"
    );
    assert!(text.contains("healthy"), "{text}");
}

#[test]
fn a_crash_loop_backs_off_then_ends_failed_with_its_exit_code() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("c1", &dir.path().join("c1"), &["--init", "crash"]);
    create(
        &node,
        &[
            "crashy",
            "--image",
            IMAGE,
            "--restart",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "--restart-delay",
            "2s",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    // Backing off is visible: state, restarts so far, the time to the next one.
    let backing_off = wait_for("a restart delay in service ps", T, || {
        let t = task(&node, "crashy")?;
        (t["state"] == "restarting" && t["next_restart_ms"].as_u64()? > 0).then_some(t)
    });
    assert_eq!(backing_off["exit_code"], 3, "{backing_off}");
    assert!(backing_off["restarts"]
        .as_u64()
        .is_some_and(|n| (1..3).contains(&n)));
    let failed = wait_for("the task to fail for good", T, || {
        let t = task(&node, "crashy")?;
        (t["state"] == "failed").then_some(t)
    });
    assert_eq!(failed["exit_code"], 3, "{failed}");
    assert_eq!(failed["restarts"], 3, "{failed}");
    assert_eq!(failed["error"], "exited with code 3", "{failed}");
    assert!(
        failed["status"]
            .as_str()
            .is_some_and(|s| s.contains("gave up after 3 restarts")),
        "{failed}"
    );
    // It is not started again: the container stays exited with the same start time.
    let c = container_of(&node, "crashy").expect("container kept for its logs");
    assert!(!c.running());
    let started = inspect(&c.id, "{{.State.StartedAt}}").expect("inspect");
    stays(&node, "crashy", "failed", Duration::from_secs(4), |t| {
        t["state"] == "failed" && t["restarts"] == 3
    });
    assert_eq!(inspect(&c.id, "{{.State.StartedAt}}"), Some(started));

    // A new restart policy is a changed spec: the task gets a fresh start.
    let out = node.cli(&["service", "update", "crashy", "--restart-max-attempts", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("a fresh run after the update", T, || {
        let t = task(&node, "crashy")?;
        (t["state"] != "failed" && t["restarts"].as_u64()? >= 1).then_some(())
    });
    assert_eq!(
        container_of(&node, "crashy").map(|n| n.id),
        Some(c.id),
        "a restart policy change keeps the container"
    );
}

#[test]
fn restart_never_leaves_an_exited_task_alone() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("r1", &dir.path().join("r1"), &["--init", "never"]);
    create(
        &node,
        &[
            "once",
            "--image",
            IMAGE,
            "--restart",
            "never",
            "--",
            "sh",
            "-c",
            "exit 5",
        ],
    );
    let exited = wait_for("the task to exit", T, || {
        let t = task(&node, "once")?;
        (t["state"] == "exited").then_some(t)
    });
    assert_eq!(exited["exit_code"], 5, "{exited}");
    assert_eq!(exited["restarts"], 0, "{exited}");
    let c = container_of(&node, "once").expect("container");
    let started = inspect(&c.id, "{{.State.StartedAt}}").expect("inspect");
    stays(&node, "once", "exited", Duration::from_secs(4), |t| {
        t["state"] == "exited" && t["restarts"] == 0
    });
    assert_eq!(inspect(&c.id, "{{.State.StartedAt}}"), Some(started));
    assert_eq!(
        inspect(&c.id, "{{.State.Status}}").as_deref(),
        Some("exited")
    );
}

#[test]
fn limits_and_stop_timeout_reach_the_engine_and_update_changes_them() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("l1", &dir.path().join("l1"), &["--init", "limits"]);
    let mut args = vec![
        "capped",
        "--image",
        IMAGE,
        "--memory",
        "64M",
        "--cpus",
        "0.5",
        "--stop-timeout",
        "4s",
        "--",
    ];
    args.extend(WEB_COMMAND);
    create(&node, &args);
    let c = wait_for("the running container", T, || {
        container_of(&node, "capped").filter(|c| c.running())
    });
    assert_eq!(
        inspect(
            &c.id,
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.Config.StopTimeout}}"
        )
        .as_deref(),
        Some("67108864 500000000 4")
    );
    let engine_policy = inspect(&c.id, "{{.HostConfig.RestartPolicy.Name}}");
    assert!(
        matches!(engine_policy.as_deref(), Some("" | "no")),
        "Warren restarts tasks itself, the engine must not: {engine_policy:?}"
    );
    let spec = node
        .cli_json(&["service", "inspect", "capped"])
        .expect("inspect");
    assert_eq!(spec["spec"]["resources"]["memory_bytes"], 67_108_864);
    assert_eq!(spec["spec"]["stop_timeout_ms"], 4_000);

    // A bad size is refused by the CLI with the flag named; a too small one by the node.
    let out = node.cli(&["service", "update", "capped", "--memory", "lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory"));
    let out = node.cli(&["service", "update", "capped", "--memory", "1M"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 MiB"));

    // Changing the limit replaces the container; the CPU limit stays.
    let out = node.cli(&["service", "update", "capped", "--memory", "32M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replaced = wait_for("a container with the new limit", T, || {
        container_of(&node, "capped").filter(|n| n.id != c.id && n.running())
    });
    assert_eq!(
        inspect(
            &replaced.id,
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"
        )
        .as_deref(),
        Some("33554432 500000000")
    );
}

#[test]
fn reservations_never_over_commit_a_node_and_ps_says_why_a_task_waits() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start("v1", &dir.path().join("v1"), &["--init", "reserve"]);
    // The node reads its CPUs and memory and offers them to reservations.
    let nodes = node.cli_json(&["node", "ls"]).expect("node ls");
    let capacity = nodes[0]["capacity"].clone();
    let nano_cpus = capacity["nano_cpus"].as_u64().expect("CPUs reported");
    assert!(nano_cpus >= 1_000_000_000, "{capacity}");
    assert!(capacity["memory_bytes"]
        .as_u64()
        .is_some_and(|m| m >= 64 << 20));

    // More memory than the node has: the task waits, and says why.
    create(
        &node,
        &[
            "huge", "--image", IMAGE, "--memory", "64T", "--", "sleep", "1000",
        ],
    );
    let waiting = wait_for("the pending reason", T, || {
        let t = task(&node, "huge")?;
        (t["state"] == "pending" && t["status"] != "not assigned to a node yet").then_some(t)
    });
    assert_eq!(
        waiting["status"], "no node with 64 TiB free memory",
        "{waiting}"
    );
    assert!(container_of(&node, "huge").is_none());
    // A size that fits: placed and running.
    let out = node.cli(&["service", "update", "huge", "--memory", "16M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the resized task running", T, || {
        let t = task(&node, "huge")?;
        (t["state"] == "running").then_some(())
    });

    // Half the node's CPUs each: two tasks fit, the third waits.
    let half = format!("{}", (nano_cpus / 2) as f64 / 1e9);
    create(
        &node,
        &[
            "halves",
            "--image",
            IMAGE,
            "--replicas",
            "3",
            "--cpus",
            &half,
            "--",
            "sleep",
            "1000",
        ],
    );
    let tasks = wait_for("two placed halves and one waiting", T, || {
        let ps = node.cli_json(&["service", "ps", "halves"])?;
        let tasks = ps.as_array()?.clone();
        let running = tasks.iter().filter(|t| t["state"] == "running").count();
        let pending = tasks.iter().filter(|t| t["state"] == "pending").count();
        (running == 2 && pending == 1).then_some(tasks)
    });
    let waiting = tasks
        .iter()
        .find(|t| t["state"] == "pending")
        .expect("pending");
    let status = waiting["status"].as_str().unwrap_or_default();
    assert!(
        status.starts_with("no node with") && status.ends_with("free"),
        "{waiting}"
    );
}

/// A task its node cannot run (it fails there until it is out of restart attempts) is moved
/// by the scheduler to a node it has not failed on. The command fails on n1 and n2 only (each
/// task knows its node from `WARREN_NODE_ID`); three replicas spread one per node, so two
/// start where they cannot run, and all three must end up running on n3, with no container
/// left on n1 and n2.
#[test]
fn a_task_that_fails_on_its_node_is_moved_to_one_that_runs_it() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster_of_three(dir.path(), "replace");
    for node in &nodes {
        wait_all_alive(node, 3, T);
    }
    let (n1, n2, n3) = (&nodes[0].peer_id, &nodes[1].peer_id, &nodes[2].peer_id);
    let script = format!(
        "case \"$WARREN_NODE_ID\" in {n1}|{n2}) echo cannot run here; exit 3;; esac; \
         trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"
    );
    create(
        &nodes[0],
        &[
            "picky",
            "--image",
            IMAGE,
            "--replicas",
            "3",
            "--restart-max-attempts",
            "1",
            "--restart-delay",
            "200ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let on_n3 = |node: &Node| -> Option<usize> {
        let ps = node.cli_json(&["service", "ps", "picky"])?;
        let tasks = ps.as_array()?;
        Some(
            tasks
                .iter()
                .filter(|t| t["state"] == "running" && t["node_name"] == "n3")
                .count(),
        )
    };
    // Seen so by every peer: each learns of n3's tasks from n3's heartbeats, at its own pace
    // (the check below reads n1's view).
    wait_for(
        "all 3 replicas running on n3, at every peer",
        Duration::from_secs(60),
        || nodes.iter().all(|n| on_n3(n) == Some(3)).then_some(()),
    );
    // Nothing of it is left on n1 and n2; on n3 it runs three times and knows its node.
    wait_for("no container of picky left on n1 and n2", T, || {
        let left: Vec<Container> = containers(&[n1.as_str(), n2.as_str()])
            .into_iter()
            .filter(|c| c.service == "picky")
            .collect();
        left.is_empty().then_some(())
    });
    let mine: Vec<Container> = containers(&[n3.as_str()])
        .into_iter()
        .filter(|c| c.service == "picky" && c.running())
        .collect();
    assert_eq!(mine.len(), 3, "{mine:?}");
    let env = inspect(&mine[0].id, "{{range .Config.Env}}{{println .}}{{end}}").expect("env");
    assert!(
        env.lines().any(|l| l == format!("WARREN_NODE_ID={n3}")),
        "the task knows its node: {env}"
    );
    // And they stay there.
    holds_for(
        "all 3 replicas on n3",
        Duration::from_secs(3),
        || match on_n3(&nodes[0]) {
            Some(3) => Ok(()),
            other => Err(format!("picky left n3: {other:?} running there")),
        },
    );
}
