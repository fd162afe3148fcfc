//! End-to-end: three real `warren-node` processes on 127.0.0.1 sharing the machine's Docker
//! engine, driven through `warren-cli`.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(30);

fn lease_of(node: &Node) -> Option<(String, u64)> {
    let s = node.status()?;
    Some((
        s["lease"]["holder"].as_str()?.to_string(),
        s["lease"]["epoch"].as_u64()?,
    ))
}

fn running_web(nodes: &[&str]) -> Vec<Container> {
    containers(nodes)
        .into_iter()
        .filter(|c| c.service == "web" && c.running())
        .collect()
}

#[test]
fn three_peers_schedule_restart_fail_over_scale_and_remove() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster_of_three(dir.path(), "e2e");
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

    // Every peer lists all three members as alive.
    for node in &nodes {
        wait_all_alive(node, 3, T);
    }

    // Create through one peer; the others list it.
    let mut create = vec![
        "service",
        "create",
        "web",
        "--image",
        IMAGE,
        "--replicas",
        "3",
        "--publish",
        "80",
        "--env",
        "GREETING=hi",
        "--",
    ];
    create.extend(WEB_COMMAND);
    let out = nodes[0].cli(&create);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in &nodes[1..] {
        wait_for(&format!("web listed at {}", node.name), T, || {
            let list = node.cli_json(&["service", "ls"])?;
            list.as_array()?
                .iter()
                .any(|s| s["name"] == "web" && s["replicas"] == 3)
                .then_some(())
        });
    }

    // Three labelled containers run within 15 s, one per node (spread), and serve.
    let running = wait_for("3 running web containers", Duration::from_secs(15), || {
        let r = running_web(&ids);
        (r.len() == 3).then_some(r)
    });
    let on: BTreeSet<&str> = running.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(
        on.len(),
        3,
        "replicas spread over the three nodes: {running:?}"
    );
    let slots: BTreeSet<u32> = running.iter().map(|c| c.slot).collect();
    assert_eq!(slots, [0, 1, 2].into());
    assert!(running.iter().all(|c| c.epoch.is_some_and(|e| e >= 1)));
    let port = running[0].host_port().expect("published port");
    let body = wait_for("an answer on the published port", T, || http_get(port));
    assert_eq!(body.trim(), "hello from warren");

    // `service ps` at another peer shows every task running with its node and port.
    let ps = wait_for("service ps shows 3 running tasks", T, || {
        let ps = nodes[2].cli_json(&["service", "ps", "web"])?;
        let n = ps
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (n == 3).then_some(ps)
    });
    assert!(ps
        .as_array()
        .expect("tasks")
        .iter()
        .all(|t| t["ports"][0]["host_port"].as_u64().is_some()));

    // A container killed behind Warren's back is restarted.
    let victim = running[0].clone();
    let out = Command::new("docker")
        .args(["kill", &victim.id])
        .output()
        .expect("docker kill");
    assert!(out.status.success());
    wait_for("the killed container restarted", T, || {
        containers(&[&victim.node])
            .into_iter()
            .find(|c| c.id == victim.id && c.running())
    });

    // SIGKILL the lease holder: a survivor takes the lease with a higher epoch and the lost
    // replica runs again on a survivor.
    let (holder, epoch) = wait_for("a lease holder", T, || lease_of(&nodes[0]));
    let h = nodes
        .iter()
        .position(|n| n.peer_id == holder)
        .expect("holder is one of ours");
    let originals: BTreeSet<String> = running_web(&[&holder]).into_iter().map(|c| c.id).collect();
    nodes[h].kill();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != h).collect();
    for &i in &survivors {
        wait_for(&format!("a new lease at {}", nodes[i].name), T, || {
            let (new_holder, new_epoch) = lease_of(&nodes[i])?;
            (new_holder != holder && new_epoch > epoch).then_some(())
        });
    }
    let survivor_ids: Vec<&str> = survivors
        .iter()
        .map(|&i| nodes[i].peer_id.as_str())
        .collect();
    let moved = wait_for("3 replicas on the two survivors", T, || {
        let r = running_web(&survivor_ids);
        let slots: BTreeSet<u32> = r.iter().map(|c| c.slot).collect();
        (r.len() == 3 && slots.len() == 3).then_some(r)
    });
    assert!(moved.iter().all(|c| c.node != holder));

    // The killed node comes back with its identity and its state. Its containers ran on
    // while its process was down, so the slot that moved runs twice: the heal rule (DESIGN
    // §5) keeps the copy that has run longest — the original on the restarted node — and
    // stops the one started on the survivor, once the original is confirmed running.
    let old_id = nodes[h].peer_id.clone();
    nodes[h].restart(&[]);
    let status = nodes[h].status().expect("status");
    assert_eq!(
        status["node"].as_str(),
        Some(old_id.as_str()),
        "same PeerId after restart"
    );
    wait_for(
        "one copy per slot, the restarted node's originals kept",
        T,
        || {
            let r = running_web(&ids);
            let slots: BTreeSet<u32> = r.iter().map(|c| c.slot).collect();
            let kept = originals.iter().all(|id| r.iter().any(|c| c.id == *id));
            (r.len() == 3 && slots.len() == 3 && kept).then_some(())
        },
    );

    // Scale to one: exactly one container is left, anywhere.
    let out = nodes[survivors[0]].cli(&["service", "scale", "web", "1"]);
    assert!(
        out.status.success(),
        "scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("exactly one web container", T, || {
        let all: Vec<Container> = containers(&ids)
            .into_iter()
            .filter(|c| c.service == "web")
            .collect();
        (all.len() == 1 && all[0].running()).then_some(())
    });

    // Any peer tells who changed the service and when: the create came from n1, the scale
    // from the survivor it was sent to, and scheduling changes are listed too.
    let history = wait_for(
        "the scale in web's history at the restarted node",
        T,
        || {
            let h = nodes[h].cli_json(&["cluster", "history", "--service", "web"])?;
            let entries = h.as_array()?.clone();
            entries
                .iter()
                .any(|e| e["message"] == "service scale web 1")
                .then_some(entries)
        },
    );
    let by = |message: &str| {
        history
            .iter()
            .find(|e| e["message"] == message)
            .and_then(|e| e["node"].as_str().map(str::to_string))
    };
    assert_eq!(by("service create web"), Some(nodes[0].peer_id.clone()));
    assert_eq!(
        by("service scale web 1"),
        Some(nodes[survivors[0]].peer_id.clone())
    );
    assert!(history.iter().any(|e| e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("schedule"))));
    assert!(history
        .iter()
        .all(|e| e["time"].as_i64().is_some_and(|t| t > 0)));

    // Remove: none is left, and every peer forgets the service.
    let out = nodes[h].cli(&["service", "rm", "web"]);
    assert!(
        out.status.success(),
        "rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("no web container", T, || {
        containers(&ids)
            .iter()
            .all(|c| c.service != "web")
            .then_some(())
    });
    for node in &nodes {
        wait_for(&format!("web gone at {}", node.name), T, || {
            let list = node.cli_json(&["service", "ls"])?;
            list.as_array()?.is_empty().then_some(())
        });
    }
}

#[test]
fn a_restarted_node_resumes_its_state_and_work_with_no_peer() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("solo");
    let mut solo = Node::start("solo", &data, &["--init", "alone"]);
    let mut create = vec![
        "service",
        "create",
        "solo-web",
        "--image",
        IMAGE,
        "--replicas",
        "2",
        "--",
    ];
    create.extend(WEB_COMMAND);
    assert!(solo.cli(&create).status.success());
    let id = solo.peer_id.clone();
    let first = wait_for("2 running containers", T, || {
        let r: Vec<Container> = containers(&[&id])
            .into_iter()
            .filter(|c| c.running())
            .collect();
        (r.len() == 2).then_some(r)
    });

    solo.kill();
    solo.restart(&[]);
    let status = solo.status().expect("status");
    assert_eq!(status["node"].as_str(), Some(id.as_str()), "same PeerId");
    assert_eq!(status["cluster"]["name"], "alone");
    let list = solo.cli_json(&["service", "ls"]).expect("service ls");
    assert_eq!(list[0]["name"], "solo-web");
    // The containers it ran before are adopted, not duplicated.
    wait_for(
        "the same 2 containers running, reported by the node",
        T,
        || {
            let ps = solo.cli_json(&["service", "ps", "solo-web"])?;
            let n = ps
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "running")
                .count();
            (n == 2).then_some(())
        },
    );
    let now: BTreeSet<String> = containers(&[&id]).into_iter().map(|c| c.id).collect();
    let before: BTreeSet<String> = first.into_iter().map(|c| c.id).collect();
    assert_eq!(now, before);
}
