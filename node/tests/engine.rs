//! End-to-end: Docker engine faults under a running `warren-node`. Each test runs its own
//! private `dockerd` (own socket, data root, exec root; no bridge, no iptables), so killing
//! and restarting it never touches the machine's shared engine, which other tests use.
//!
//! - the engine's socket is missing when the node starts: the node comes up, serves its
//!   API, reports the engine down, and runs the service once the engine appears;
//! - the engine is SIGKILLed and restarted under a running node: the node reports the
//!   outage, keeps serving reads and writes, and once the engine is back runs every replica
//!   exactly once (counted by labels on the private engine), removing strays it finds.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(60);

/// A `dockerd` of this test's own, under `/tmp/wpe-*`. Everything it made (containers,
/// processes, mounts, directories) goes in `Drop`, on failure too.
struct PrivateEngine {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateEngine {
    /// A directory for the engine; nothing runs yet (its socket does not exist).
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Short: the socket path must fit a sockaddr_un (108 bytes).
        let dir = PathBuf::from(format!("/tmp/wpe-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("engine dir");
        PrivateEngine { dir, child: None }
    }

    fn socket(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    /// `docker -H <this engine> args...`
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn answers(&self) -> bool {
        self.docker(&["info", "--format", "{{.ServerVersion}}"])
            .status
            .success()
    }

    /// Starts `dockerd` and waits until it answers; loads the test image into it from the
    /// shared engine the first time.
    fn start(&mut self) {
        let d = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .expect("dockerd log");
        // In a network namespace of its own: a dockerd started with `--bridge none` deletes
        // the host's `docker0` link at start (libnetwork's removeDefaultBridgeInterface),
        // which breaks the shared engine every other test uses. `unshare` execs dockerd, so
        // the child is dockerd itself.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("--host")
            .arg(self.socket())
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd (is docker.io installed? scripts/ensure-docker.sh)");
        self.child = Some(child);
        wait_for("the private dockerd to answer", T, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("private dockerd exited ({status}):\n{}", self.log_tail());
            }
            self.answers().then_some(())
        });
        if !self.docker(&["image", "inspect", IMAGE]).status.success() {
            let mut save = Command::new("docker")
                .args(["save", IMAGE])
                .stdout(Stdio::piped())
                .spawn()
                .expect("docker save");
            let load = Command::new("docker")
                .arg("-H")
                .arg(self.socket())
                .arg("load")
                .stdin(save.stdout.take().expect("docker save's output"))
                .output()
                .expect("docker load");
            let _ = save.wait();
            assert!(
                load.status.success(),
                "loading {IMAGE} into the private engine failed: {}",
                String::from_utf8_lossy(&load.stderr)
            );
        }
    }

    /// SIGKILL to `dockerd`, as a crash: no shutdown of its containers (its containerd
    /// lives on and the next start adopts it).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its containerd dies with it, but may linger as a zombie of this test process,
        // which `kill -0` still finds: the next dockerd would wait for it forever. Make sure
        // it is dead and drop its pid file, so the next start runs a fresh containerd
        // (which picks up the shims of the containers that survived).
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if process_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = std::fs::remove_file(&pidfile);
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        // grpc's connectivity chatter says nothing a reader needs.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("[core]") && !l.contains("plugin"))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Containers labelled `warren.node=<node>` on this engine: (service, slot, running).
    fn tasks(&self, node: &str) -> Vec<(String, String, bool)> {
        let out = self.docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=warren.node={node}"),
            "--format",
            "{{.Label \"warren.service\"}}\t{{.Label \"warren.slot\"}}\t{{.State}}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 3).then(|| (f[0].to_string(), f[1].to_string(), f[2] == "running"))
            })
            .collect()
    }

    /// Pids of processes whose command line names this engine's directory (its dockerd,
    /// containerd and shims): only what this test started.
    fn own_processes(&self) -> Vec<i32> {
        let needle = self.dir.to_string_lossy().into_owned();
        let mut pids = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

/// Whether process `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- private dockerd log ----\n{}", self.log_tail());
        }
        if self.child.is_some() && self.answers() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args);
            }
        }
        if let Some(child) = self.child.as_ref() {
            // SIGTERM: dockerd stops its containerd on the way out.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill();
        // Whatever survived (a containerd orphaned by a SIGKILL, shims): by pid, ours only.
        let survivors = self.own_processes();
        for pid in &survivors {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // Their mounts can be released once they are gone: wait for that, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        while survivors.iter().any(|pid| process_alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for point in mounts_under(&self.dir) {
            let _ = Command::new("umount").args(["-l", &point]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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
    args.extend(web_command());
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "service create {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Running containers per (service, slot), and whether any slot has more than one
/// container (running or not).
fn census(engine: &PrivateEngine, node: &str) -> (BTreeMap<(String, String), usize>, bool) {
    let mut per_slot: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut running: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (service, slot, up) in engine.tasks(node) {
        *per_slot.entry((service.clone(), slot.clone())).or_default() += 1;
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
    engine.start();
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
    engine.start();
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
    engine.start();
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
        let tasks = engine.tasks(&node.peer_id);
        let web: Vec<_> = tasks.iter().filter(|(s, _, _)| s == "web").collect();
        (web.len() == 3 && web.iter().all(|(_, slot, up)| *up && slot != "7")).then_some(())
    });
    // And it stays so.
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let (running, duplicated) = census(&engine, &node.peer_id);
        assert!(!duplicated, "{running:?}");
        assert_eq!(running.len(), 4, "{running:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
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
