//! Volumes with node affinity (issue 16, item 6), on three real nodes: a volume created on
//! node n2 pins the service that mounts it to n2; the data its task writes survives a
//! container kill (restart policy), a removed container (a new one is created), a restart
//! of n2's daemon and a spec update; a volume in use cannot be removed; while n2 is down
//! the slot waits for it (`service ps` says so) and no copy starts on n1 or n3; back up, n2
//! runs it again on the same data, and after `volume rm` deletes its Docker volume.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(40);

/// Each start of the task appends one line to /data/runs, then idles (exits on SIGTERM).
const KEEPER: &str = "echo run >> /data/runs; trap 'exit 0' TERM; sleep 100000 & wait";

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The running task of `keeper` as `node`'s `service ps` reports it: (node id, container).
fn running_task(node: &Node) -> Option<(String, String)> {
    let ps: Value = node.cli_json(&["service", "ps", "keeper"])?;
    let task = ps.as_array()?.iter().find(|t| {
        t["state"] == "running" && t["container"].as_str().is_some_and(|c| !c.is_empty())
    })?;
    Some((
        task["node"].as_str()?.to_string(),
        task["container"].as_str()?.to_string(),
    ))
}

/// The lines of /data/runs in `container`, read with `docker exec`.
fn runs(container: &str) -> Option<usize> {
    let out = Command::new("docker")
        .args(["exec", container, "cat", "/data/runs"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Waits until `keeper` runs on `on` in a container other than `not`, whose file holds at
/// least `at_least` runs; returns the container.
fn wait_runs(node: &Node, on: &str, not: &str, at_least: usize, what: &str) -> String {
    wait_for(what, T, || {
        let (task_node, container) = running_task(node)?;
        assert_eq!(task_node, on, "the task runs on the volume's node");
        if container == not {
            return None;
        }
        (runs(&container)? >= at_least).then_some(container)
    })
}

#[test]
fn a_volumes_data_survives_restarts_and_its_service_waits_for_its_node() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster_of_three(dir.path(), "volumes");
    wait_all_alive(&nodes[0], 3, T);
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let b = ids[1].clone();

    ok(&nodes[0].cli(&["volume", "create", "data", "--node", "n2"]));
    let listed = wait_for("the volume listed at n3", T, || {
        nodes[2].cli_json(&["volume", "inspect", "data"])
    });
    assert_eq!(listed["node"], b.as_str(), "{listed}");
    assert_eq!(listed["driver"], "local", "{listed}");
    // Another driver is refused with the reason.
    let nfs = one_line_error(&nodes[0].cli(&["volume", "create", "other", "--driver", "nfs"]));
    assert!(nfs.contains("only \"local\""), "{nfs}");

    ok(&nodes[0].cli(&[
        "service",
        "create",
        "keeper",
        "--image",
        IMAGE,
        "--mount",
        "type=volume,source=data,target=/data",
        "--",
        "sh",
        "-c",
        KEEPER,
    ]));
    let first = wait_runs(&nodes[0], &b, "", 1, "keeper running on n2");
    // n2's engine holds the Docker volume, named for the node, labelled as Warren's.
    let volumes = Command::new("docker")
        .args(["volume", "ls", "-q", "--filter", "label=warren.volume=data"])
        .output()
        .expect("docker volume ls");
    let docker_name = warren_runtime::docker_volume_name("data", &b);
    assert!(
        String::from_utf8_lossy(&volumes.stdout)
            .lines()
            .any(|l| l == docker_name),
        "{docker_name} missing"
    );

    // In use: cannot be removed, and the error names the service.
    let busy = one_line_error(&nodes[0].cli(&["volume", "rm", "data"]));
    assert!(busy.contains("keeper"), "{busy}");

    // The container is killed: the restart policy starts it again, the data is there.
    ok(&Command::new("docker")
        .args(["kill", &first])
        .output()
        .expect("docker kill"));
    wait_for("the killed task restarted with its data", T, || {
        let (_, c) = running_task(&nodes[0])?;
        (runs(&c)? >= 2).then_some(())
    });
    // The container is removed: a new one is created on the same volume.
    let current = running_task(&nodes[0]).expect("running").1;
    ok(&Command::new("docker")
        .args(["rm", "-f", &current])
        .output()
        .expect("docker rm"));
    let second = wait_runs(
        &nodes[0],
        &b,
        &current,
        3,
        "a new container with the old data",
    );

    // n2's daemon restarts (its containers run on): the data is still there.
    nodes[1].kill();
    nodes[1].restart(&[]);
    wait_all_alive(&nodes[0], 3, T);
    wait_for("n2 reports keeper again", T, || {
        let (_, c) = running_task(&nodes[1])?;
        (runs(&c)? >= 3).then_some(())
    });
    // A spec update replaces the container: the data stays.
    ok(&nodes[0].cli(&["service", "update", "keeper", "--env", "ROUND=2"]));
    wait_runs(
        &nodes[0],
        &b,
        &second,
        4,
        "the updated task with the old data",
    );

    // n2 goes down (its daemon and its containers): the slot waits for it.
    nodes[1].kill();
    remove_containers(&b);
    let others = [ids[0].as_str(), ids[2].as_str()];
    wait_for("service ps says the slot waits for n2", T, || {
        let ps = nodes[0].cli_json(&["service", "ps", "keeper"])?;
        ps.as_array()?
            .iter()
            .any(|t| t["status"] == "waits for volume data on node n2")
            .then_some(())
    });
    // Several down-detection periods: no copy starts on n1 or n3.
    holds_for("no copy of keeper off n2", Duration::from_secs(8), || {
        let elsewhere: Vec<_> = containers(&others)
            .into_iter()
            .filter(|c| c.service == "keeper")
            .collect();
        if elsewhere.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "copies started off the volume's node: {elsewhere:?}"
            ))
        }
    });

    // n2 comes back and runs the slot again with its data; once the service is gone the
    // volume can be removed, and n2 deletes its Docker volume.
    nodes[1].restart(&[]);
    wait_for("keeper back on n2 with its data", T, || {
        let (_, c) = running_task(&nodes[0])?;
        (runs(&c)? >= 5).then_some(())
    });
    ok(&nodes[0].cli(&["service", "rm", "keeper"]));
    ok(&nodes[0].cli(&["volume", "rm", "data"]));
    wait_for("n2 deleted the Docker volume", T, || {
        let out = Command::new("docker")
            .args(["volume", "inspect", &docker_name])
            .output()
            .ok()?;
        (!out.status.success()).then_some(())
    });

    for id in &ids {
        remove_containers(id);
    }
    let _ = Command::new("docker")
        .args(["volume", "rm", &docker_name])
        .output();
}
