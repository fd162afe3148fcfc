//! Maintenance without an outage (issue 16, item 3): on three real nodes, a service of two
//! replicas with a published port and a health check; `node update --availability drain` on
//! a node holding a replica moves it start-first (the replacement runs healthy before the old
//! copy stops, which first leaves the task lists for the deregistration delay) while a client
//! that reads `service ps` before each request and calls a running, healthy task's published
//! port never fails. `node ls` shows the availability; back to `active`, nothing moves back
//! by itself (Swarm's behaviour).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(60);

/// `(slot, node name, host port)` of every task of `web` that `service ps` shows running and
/// healthy with its port 80 published.
fn healthy_targets(node: &Node) -> Option<Vec<(u64, String, u16)>> {
    let ps: Value = node.cli_json(&["service", "ps", "web"])?;
    Some(
        ps.as_array()?
            .iter()
            .filter(|t| t["state"] == "running" && t["health"] == "healthy")
            .filter_map(|t| {
                let port = t["ports"]
                    .as_array()?
                    .iter()
                    .find(|p| p["container_port"] == 80)?["host_port"]
                    .as_u64()?;
                Some((
                    t["slot"].as_u64()?,
                    t["node_name"].as_str()?.to_string(),
                    u16::try_from(port).ok()?,
                ))
            })
            .collect(),
    )
}

fn availability_of(node: &Node, name: &str) -> Option<String> {
    let list = node.cli_json(&["node", "ls"])?;
    list.as_array()?.iter().find(|m| m["name"] == name)?["availability"]
        .as_str()
        .map(str::to_string)
}

fn set_availability(node: &Node, target: &str, availability: &str) {
    let out = node.cli(&["node", "update", target, "--availability", availability]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn drain_moves_a_replica_start_first_with_no_failed_request() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster_of_three(dir.path(), "drain");
    wait_all_alive(&nodes[0], 3, T);
    let mut create = vec![
        "service",
        "create",
        "web",
        "--image",
        IMAGE,
        "--replicas",
        "2",
        "--publish",
        "80",
        "--health-cmd",
        "wget -q -O /dev/null http://127.0.0.1:80/",
        "--health-interval",
        "500ms",
        "--health-retries",
        "2",
        "--",
    ];
    create.extend(WEB_COMMAND);
    let out = nodes[0].cli(&create);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = wait_for("2 healthy replicas on 2 nodes", T, || {
        let targets = healthy_targets(&nodes[0])?;
        let on: BTreeMap<u64, String> = targets.into_iter().map(|(s, n, _)| (s, n)).collect();
        let distinct: std::collections::BTreeSet<&String> = on.values().collect();
        (on.len() == 2 && distinct.len() == 2).then_some(on)
    });
    // Drain the node that holds slot 0; the client asks another node.
    let drained_name = before[&0].clone();
    let drained = nodes
        .iter()
        .find(|n| n.name == drained_name)
        .expect("the drained node");
    let asked = nodes
        .iter()
        .find(|n| n.name != drained_name)
        .expect("another node");
    assert_eq!(
        availability_of(asked, &drained_name).as_deref(),
        Some("active")
    );
    let old_container = wait_for("slot 0's container on the drained node", T, || {
        containers(&[&drained.peer_id])
            .into_iter()
            .find(|c| c.service == "web" && c.slot == 0 && c.running())
    });
    set_availability(asked, &drained_name, "drain");

    // The client: before each request, the running healthy tasks from `service ps`; one of
    // them round-robin. Bounded by a count and a deadline.
    let started = Instant::now();
    let (mut requests, mut failures) = (0u32, Vec::new());
    let mut replacement_healthy_at: Option<Duration> = None;
    let mut old_stopped_at: Option<Duration> = None;
    let mut done_at: Option<u32> = None;
    while requests < 2_000 && started.elapsed() < Duration::from_secs(90) {
        let Some(targets) = healthy_targets(asked) else {
            continue;
        };
        let now = started.elapsed();
        if replacement_healthy_at.is_none()
            && targets
                .iter()
                .any(|(s, n, _)| *s == 0 && *n != drained_name)
        {
            replacement_healthy_at = Some(now);
        }
        requests += 1;
        if targets.is_empty() {
            failures.push(format!(
                "request {requests}: no running healthy task listed"
            ));
            continue;
        }
        let (slot, node, port) = &targets[requests as usize % targets.len()];
        if http_get(*port).is_none() {
            failures.push(format!(
                "request {requests}: {node} slot {slot} port {port}"
            ));
        }
        let old_runs = containers(&[&drained.peer_id])
            .iter()
            .any(|c| c.id == old_container.id && c.running());
        if !old_runs && old_stopped_at.is_none() {
            old_stopped_at = Some(started.elapsed());
        }
        // Moved and settled: a few more requests against the new placement, then stop.
        let settled = old_stopped_at.is_some()
            && targets.len() == 2
            && targets.iter().all(|(_, n, _)| *n != drained_name);
        if settled && done_at.is_none() {
            done_at = Some(requests);
        }
        if done_at.is_some_and(|d| requests >= d + 10) {
            break;
        }
    }
    eprintln!(
        "{requests} requests, {} failed; replacement healthy at {replacement_healthy_at:?}, \
         old copy stopped at {old_stopped_at:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed of {requests}: {failures:?}",
        failures.len()
    );
    assert!(
        done_at.is_some(),
        "the drain did not finish: {requests} requests"
    );
    let (healthy_at, stopped_at) = (
        replacement_healthy_at.expect("the replacement was seen healthy"),
        old_stopped_at.expect("the old copy stopped"),
    );
    assert!(
        healthy_at < stopped_at,
        "replacement healthy at {healthy_at:?}, old copy stopped at {stopped_at:?}"
    );

    // The drained node ends with no task of the service, and says it is drained.
    wait_for("no web container left on the drained node", T, || {
        containers(&[&drained.peer_id])
            .iter()
            .all(|c| c.service != "web")
            .then_some(())
    });
    assert_eq!(
        availability_of(asked, &drained_name).as_deref(),
        Some("drain")
    );
    let after = healthy_targets(asked).expect("ps");
    assert!(
        after.iter().all(|(_, n, _)| *n != drained_name),
        "{after:?}"
    );

    // Active again: it takes tasks again, but nothing moves back by itself.
    set_availability(asked, &drained_name, "active");
    wait_for("availability active in node ls", T, || {
        (availability_of(asked, &drained_name)? == "active").then_some(())
    });
    let placed: BTreeMap<u64, String> = after.into_iter().map(|(s, n, _)| (s, n)).collect();
    holds_for(
        "the placement after the drain",
        Duration::from_secs(5),
        || {
            let now: BTreeMap<u64, String> = healthy_targets(asked)
                .ok_or("no ps")?
                .into_iter()
                .map(|(s, n, _)| (s, n))
                .collect();
            if now == placed {
                Ok(())
            } else {
                Err(format!("{now:?} != {placed:?}"))
            }
        },
    );
}
