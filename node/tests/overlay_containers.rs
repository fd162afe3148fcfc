//! End-to-end: containers on the overlay (issue 14, part 3). One `warren-node` with the
//! overlay on (the default) runs a service of two replicas: `service ps` reports for each an
//! IPv6 address inside the node's container subnet (the pure rule of
//! `warren_core::overlay`, from the node's WireGuard key and the cluster id), the two are
//! distinct, one replica reaches the other over that address, and the host's forwarding rules
//! are there while the node runs and gone once it stopped. Whether the node could bring up
//! its WireGuard interface plays no part here: the containers share the node's bridge.

mod support;

use std::net::Ipv6Addr;
use std::process::Command;
use std::time::Duration;

use support::*;
use warren_node::overlay::{addresses, WireguardKey};

const T: Duration = Duration::from_secs(60);

/// `ip6tables -S` of every table this node's rules go to.
fn ip6tables_rules() -> String {
    ["filter", "nat"]
        .iter()
        .filter_map(|table| {
            Command::new("ip6tables")
                .args(["-w", "-t", table, "-S"])
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect()
}

/// `service create web` with `replicas` replicas of the test web server, port 80 published.
fn create_web(node: &Node, replicas: u32) {
    let replicas = replicas.to_string();
    let mut create = vec![
        "service",
        "create",
        "web",
        "--image",
        IMAGE,
        "--replicas",
        &replicas,
        "--publish",
        "80",
        "--",
    ];
    create.extend(WEB_COMMAND);
    let out = node.cli(&create);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tasks of `web` in `service ps -o json`.
fn web_tasks(node: &Node) -> Option<Vec<serde_json::Value>> {
    node.cli_json(&["service", "ps", "web"])?
        .as_array()
        .cloned()
}

#[test]
fn replicas_get_distinct_overlay_addresses_in_the_nodes_subnet_and_reach_each_other() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("o1");
    // Its drop removes the node's containers, overlay network and forwarding rules. An
    // interface name of its own (tests run side by side): its DNS serves on its overlay
    // address once the interface is up, and tasks created after that use it.
    let interface = format!("wo{}", std::process::id() % 100_000);
    let mut node = Node::start(
        "o1",
        &data_dir,
        &["--init", "overlay", "--overlay-interface", &interface],
    );
    wait_for("the node's DNS serving", T, || {
        node.log_text()
            .contains("serving names to tasks")
            .then_some(())
    });

    // The node's container subnet, by the pure rule.
    let key_text = std::fs::read_to_string(data_dir.join("wireguard.key")).expect("key file");
    let key = WireguardKey::from_file_text(&key_text).expect("key");
    let cluster_id = node.status().expect("status")["cluster"]["id"]
        .as_str()
        .expect("cluster id")
        .to_string();
    let subnet = addresses(&cluster_id, &key.public()).container_subnet;

    create_web(&node, 2);

    let ips: Vec<(u32, Ipv6Addr)> = wait_for("two running tasks with overlay addresses", T, || {
        let ps = node.cli_json(&["service", "ps", "web"])?;
        let tasks = ps.as_array()?;
        let ips: Vec<(u32, Ipv6Addr)> = tasks
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| {
                let slot = u32::try_from(t["slot"].as_u64()?).ok()?;
                Some((slot, t["overlay_ip"].as_str()?.parse().ok()?))
            })
            .collect();
        (ips.len() == 2).then_some(ips)
    });
    assert_ne!(ips[0].1, ips[1].1, "distinct addresses: {ips:?}");
    for (slot, ip) in &ips {
        assert!(subnet.contains(*ip), "slot {slot}: {ip} outside {subnet}");
    }

    // The table shows the address too.
    let table = node.cli(&["-o", "table", "service", "ps", "web"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("OVERLAY_IP"), "{table}");
    assert!(table.contains(&ips[0].1.to_string()), "{table}");

    // One replica reaches the other over its overlay address.
    let containers = containers(&[node.peer_id.as_str()]);
    let (target_slot, target_ip) = ips[0];
    let from = containers
        .iter()
        .find(|c| c.service == "web" && c.slot != target_slot && c.state == "running")
        .expect("the other replica's container");
    let url = format!("http://[{target_ip}]/");
    wait_for(&format!("wget {url} from slot {}", from.slot), T, || {
        let out = Command::new("docker")
            .args(["exec", &from.id, "wget", "-q", "-O", "-", &url])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("hello from warren")
            .then_some(())
    });

    // The node's address is its tasks' DNS server, and it names the replicas.
    let running: std::collections::BTreeSet<Ipv6Addr> = ips.iter().map(|(_, ip)| *ip).collect();
    let mut named = std::collections::BTreeSet::new();
    let by_name = warren_testkit::poll_until(T, Duration::from_millis(250), || {
        named = lookup(&from.id, "web");
        (named == running).then_some(())
    });
    assert!(
        by_name.is_some(),
        "web by name from a replica: {named:?}, want {running:?}"
    );
    let dns = Command::new("docker")
        .args(["inspect", "-f", "{{json .HostConfig.Dns}}", &from.id])
        .output()
        .expect("docker inspect");
    let overlay_ip = addresses(&cluster_id, &key.public()).overlay_ip;
    assert_eq!(
        String::from_utf8_lossy(&dns.stdout).trim(),
        format!("[\"{overlay_ip}\"]")
    );

    // The forwarding rules carry the node's tag while it runs, and go when it stops.
    let tag = format!("warren:{}", node.peer_id);
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if is_root {
        assert!(ip6tables_rules().contains(&tag), "{}", ip6tables_rules());
    }
    node.stop();
    if is_root {
        assert!(!ip6tables_rules().contains(&tag), "{}", ip6tables_rules());
    }
    // The tasks outlive the daemon on their network.
    let running = support::containers(&[node.peer_id.as_str()])
        .into_iter()
        .filter(|c| c.state == "running")
        .count();
    assert_eq!(running, 2);
}

#[test]
fn a_task_started_without_the_overlay_keeps_running_when_the_overlay_comes_on() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("u1");
    let mut node = Node::start("u1", &data_dir, &["--init", "upgrade", "--no-overlay"]);
    create_web(&node, 1);
    let before = wait_for("web.0 running without an overlay address", T, || {
        let tasks = web_tasks(&node)?;
        let t = tasks
            .iter()
            .find(|t| t["slot"] == 0 && t["state"] == "running")?;
        t["overlay_ip"]
            .is_null()
            .then(|| t["container"].as_str().map(str::to_string))?
    });

    node.stop();
    node.restart(&[]);
    let network = warren_runtime::overlay_network_name(&node.peer_id);
    wait_for("the overlay network", T, || {
        Command::new("docker")
            .args(["network", "inspect", &network])
            .output()
            .ok()?
            .status
            .success()
            .then_some(())
    });
    wait_for("web.0 reported after the restart", T, || {
        let tasks = web_tasks(&node)?;
        tasks
            .iter()
            .any(|t| t["slot"] == 0 && t["state"] == "running")
            .then_some(())
    });
    // No churn: the same container keeps running, on the default network.
    holds_for("web.0 untouched", Duration::from_secs(3), || {
        let tasks = web_tasks(&node).ok_or("service ps")?;
        let t = tasks.iter().find(|t| t["slot"] == 0).ok_or("no web.0")?;
        if t["state"] == "running" && t["container"] == before.as_str() && t["overlay_ip"].is_null()
        {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });

    // A new task joins the overlay.
    let out = node.cli(&["service", "scale", "web", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_text = std::fs::read_to_string(data_dir.join("wireguard.key")).expect("key file");
    let key = WireguardKey::from_file_text(&key_text).expect("key");
    let cluster_id = node.status().expect("status")["cluster"]["id"]
        .as_str()
        .expect("cluster id")
        .to_string();
    let subnet = addresses(&cluster_id, &key.public()).container_subnet;
    let ip: Ipv6Addr = wait_for("web.1 with an overlay address", T, || {
        let tasks = web_tasks(&node)?;
        let t = tasks
            .iter()
            .find(|t| t["slot"] == 1 && t["state"] == "running")?;
        t["overlay_ip"].as_str()?.parse().ok()
    });
    assert!(subnet.contains(ip), "{ip} outside {subnet}");
    let tasks = web_tasks(&node).expect("service ps");
    let first = tasks.iter().find(|t| t["slot"] == 0).expect("web.0");
    assert_eq!(first["container"], before.as_str());
}

/// `nslookup -type=AAAA NAME` inside container `id`: the IPv6 addresses it answers.
fn lookup(id: &str, name: &str) -> std::collections::BTreeSet<Ipv6Addr> {
    let out = Command::new("docker")
        .args([
            "exec",
            id,
            "sh",
            "-c",
            &format!("nslookup -type=AAAA {name}"),
        ])
        .output()
        .expect("docker exec nslookup");
    warren_testkit::nslookup_addresses(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn a_task_failing_its_health_check_leaves_the_names() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("h1");
    let interface = format!("wh{}", std::process::id() % 100_000);
    let node = Node::start(
        "h1",
        &data_dir,
        &["--init", "health", "--overlay-interface", &interface],
    );
    wait_for("the node's DNS serving", T, || {
        node.log_text()
            .contains("serving names to tasks")
            .then_some(())
    });
    // Healthy while /tmp/ok exists; probed every second, one failure makes it unhealthy.
    let out = node.cli(&[
        "service",
        "create",
        "hw",
        "--image",
        IMAGE,
        "--replicas",
        "2",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--",
        "sh",
        "-c",
        "touch /tmp/ok; trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
    ]);
    assert!(out.status.success(), "create: {}", one_line_error(&out));
    let tasks: Vec<(String, Ipv6Addr)> = wait_for("two healthy tasks", T, || {
        let ps = node.cli_json(&["service", "ps", "hw"])?;
        let healthy: Vec<(String, Ipv6Addr)> = ps
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running" && t["health"] == "healthy")
            .filter_map(|t| {
                Some((
                    t["container"].as_str()?.to_string(),
                    t["overlay_ip"].as_str()?.parse().ok()?,
                ))
            })
            .collect();
        (healthy.len() == 2).then_some(healthy)
    });
    let all: std::collections::BTreeSet<Ipv6Addr> = tasks.iter().map(|(_, ip)| *ip).collect();
    let (asker, _) = &tasks[0];
    let (sick, sick_ip) = &tasks[1];
    wait_for("both healthy replicas named", T, || {
        (lookup(asker, "hw") == all).then_some(())
    });
    let broke = std::time::Instant::now();
    let rm = Command::new("docker")
        .args(["exec", sick, "rm", "/tmp/ok"])
        .output()
        .expect("docker exec rm");
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let left: std::collections::BTreeSet<Ipv6Addr> =
        all.iter().copied().filter(|ip| ip != sick_ip).collect();
    // Looked up as often as `docker exec` allows, to time it (a figure, not an assertion).
    let gone = warren_testkit::poll_until(T, Duration::from_millis(50), || {
        (lookup(asker, "hw.warren") == left).then_some(())
    });
    let (since_rm, gone_at) = (broke.elapsed(), std::time::SystemTime::now());
    assert!(
        gone.is_some(),
        "the unhealthy replica out of the names: {:?}, want {left:?}",
        lookup(asker, "hw.warren")
    );
    eprintln!(
        "failing health check -> out of the names (interval 1 s): {since_rm:?} after the rm; \
         {} after the engine's failing probe ended",
        failed_probe_end(sick).map_or("(probe log gone)".to_string(), |end| format!(
            "{:?}",
            gone_at.duration_since(end).unwrap_or_default()
        ))
    );
}

/// When the first failing probe in container `id`'s health log ended (the engine keeps the
/// last five), if the container still has its log.
fn failed_probe_end(id: &str) -> Option<std::time::SystemTime> {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .State.Health.Log}}{{if ne .ExitCode 0}}{{.End.UnixNano}} {{end}}{{end}}",
            id,
        ])
        .output()
        .ok()?;
    let nanos: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_nanos(nanos))
}
