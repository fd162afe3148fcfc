//! End-to-end: `warren-cli service logs` at a node that runs no task of the service shows the
//! lines of tasks on two other nodes (over the mesh), prefixed with task and node; `--tail`,
//! `--since` and `--follow` (no line twice, none skipped); an unknown service is an error; a
//! node that stops answering is one warning, not the end of the command.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(60);

/// Prints `line 0`, `line 1`, ... five times a second on stdout, and `err N` on stderr for
/// every tenth.
fn counter_command() -> Vec<&'static str> {
    vec![
        "sh",
        "-c",
        "trap 'exit 0' TERM; i=0; while true; do echo line $i; \
         if [ $((i % 10)) = 0 ]; then echo err $i >&2; fi; i=$((i+1)); sleep 0.2; done",
    ]
}

/// A three-node cluster, every member alive at every peer.
fn cluster(dir: &std::path::Path) -> Vec<Node> {
    let nodes = Vec::from(cluster_of_three(dir, "logs"));
    for node in &nodes {
        wait_all_alive(node, 3, T);
    }
    nodes
}

/// Creates `counter` with two replicas and waits until both run on two different nodes.
/// Returns slot -> node name.
fn two_counters(node: &Node) -> BTreeMap<u64, String> {
    let mut create = vec![
        "service",
        "create",
        "counter",
        "--image",
        IMAGE,
        "--replicas",
        "2",
        "--stop-timeout",
        "1s",
        "--",
    ];
    create.extend(counter_command());
    let out = node.cli(&create);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("2 running counter tasks on 2 nodes", T, || {
        let ps = node.cli_json(&["service", "ps", "counter"])?;
        let tasks: BTreeMap<u64, String> = ps
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| Some((t["slot"].as_u64()?, t["node_name"].as_str()?.to_string())))
            .collect();
        let nodes: BTreeSet<&String> = tasks.values().collect();
        (tasks.len() == 2 && nodes.len() == 2).then_some(tasks)
    })
}

/// `counter.SLOT@NODE | line N` -> (task prefix, N); `None` for other lines.
fn numbered(line: &str) -> Option<(String, u64)> {
    let (task, text) = line.split_once(" | ")?;
    let n = text.strip_prefix("line ")?.parse().ok()?;
    Some((task.to_string(), n))
}

/// The `-o json` lines of `service logs counter ARGS` at `node`.
fn json_lines(node: &Node, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["-o", "json", "service", "logs", "counter"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "service logs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// `warren-cli service logs counter -f ARGS` at `node` as a child process, its stdout and
/// stderr lines sent to the returned channels.
fn follow(node: &Node, args: &[&str]) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(cli_bin())
        .arg("--peer")
        .arg(node.peer())
        .args(["service", "logs", "counter", "-f"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren-cli");
    let lines = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let out = lines(Box::new(child.stdout.take().expect("stdout")));
    let err = lines(Box::new(child.stderr.take().expect("stderr")));
    (child, out, err)
}

/// Reads `rx` until `done` holds of everything read, or panics after `timeout`.
fn read_until(
    rx: &mpsc::Receiver<String>,
    what: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {timeout:?} waiting for {what}; got {seen:#?}"
        );
        if let Ok(line) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
            seen.push(line);
        }
    }
}

/// Per task, its line numbers in the order printed.
fn by_task(lines: &[String]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (task, n) in lines.iter().filter_map(|l| numbered(l)) {
        out.entry(task).or_default().push(n);
    }
    out
}

#[test]
fn logs_of_tasks_on_two_nodes_read_and_followed_through_a_third() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(dir.path());
    let placed = two_counters(&nodes[0]);
    let third = nodes
        .iter()
        .position(|n| !placed.values().any(|name| *name == n.name))
        .expect("a node without a counter task");
    let tasks: BTreeSet<String> = placed
        .iter()
        .map(|(slot, node)| format!("counter.{slot}@{node}"))
        .collect();

    // --tail 5 at the third node: five numbered lines per task, each prefixed with its task
    // and the node that runs it, consecutive within the task.
    let reader = &nodes[third];
    let tail = wait_for("5 numbered lines of each task", T, || {
        let out = reader.cli(&["service", "logs", "counter", "--tail", "5"]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let per_task = by_task(&lines);
        // `--tail 5` counts stderr lines too: wait for 5 stdout lines per task, and for
        // tasks that printed more than that, so the tail did leave lines out.
        (per_task.len() == 2 && per_task.values().all(|ns| ns.len() == 5 && ns[0] >= 5))
            .then_some(lines)
    });
    let per_task = by_task(&tail);
    assert_eq!(
        per_task.keys().cloned().collect::<BTreeSet<_>>(),
        tasks,
        "{tail:#?}"
    );
    for (task, ns) in &per_task {
        assert!(
            ns.windows(2).all(|w| w[1] == w[0] + 1),
            "{task}: not consecutive: {ns:?}"
        );
    }
    for line in &tail {
        let (task, _) = line.split_once(" | ").expect("prefixed line");
        assert!(tasks.contains(task), "unexpected prefix in {line:?}");
    }

    // -o json: the same lines with stream and timestamp; stderr is there too, and the lines
    // are in time order.
    let all = json_lines(reader, &[]);
    assert!(
        all.iter().any(|l| l["stream"] == "stderr"
            && l["text"].as_str().is_some_and(|t| t.starts_with("err "))),
        "no stderr line"
    );
    let stamps: Vec<i64> = all.iter().filter_map(|l| l["ts"].as_i64()).collect();
    assert_eq!(stamps.len(), all.len());
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "not in time order");

    // --since the exact timestamp of one of slot 0's lines: that line is the task's first.
    let slot0: Vec<&Value> = all
        .iter()
        .filter(|l| l["slot"] == 0 && l["stream"] == "stdout")
        .collect();
    assert!(slot0.len() >= 6, "{slot0:?}");
    let pick = slot0[slot0.len() - 4];
    let ts = pick["ts"].as_i64().expect("ts");
    let since = format!("{}.{:09}", ts / 1_000_000_000, ts % 1_000_000_000);
    let after = json_lines(reader, &["--since", &since]);
    assert!(
        after
            .iter()
            .all(|l| l["ts"].as_i64().is_some_and(|t| t >= ts)),
        "a line before --since {since}"
    );
    let first0 = after
        .iter()
        .find(|l| l["slot"] == 0 && l["stream"] == "stdout")
        .expect("slot 0 lines since");
    assert_eq!(first0["text"], pick["text"]);
    assert!(after.len() < all.len(), "--since filtered nothing");
    // A time in the future: nothing.
    let future = json_lines(reader, &["--since", "4102444800"]);
    assert!(future.is_empty(), "{future:?}");

    // -f --tail 1 for a while: new lines of both tasks, each exactly once and in order.
    let (mut child, out, _err) = follow(reader, &["--tail", "1"]);
    let mut seen = Vec::new();
    read_until(
        &out,
        "15 new lines of each task while following",
        T,
        &mut seen,
        |lines| {
            let per = by_task(lines);
            per.len() == 2 && per.values().all(|ns| ns.len() >= 15)
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    let followed = by_task(&seen);
    assert_eq!(followed.keys().cloned().collect::<BTreeSet<_>>(), tasks);
    for (task, ns) in &followed {
        // Consecutive: no line skipped, none twice.
        assert!(
            ns.windows(2).all(|w| w[1] == w[0] + 1),
            "{task}: not strictly consecutive while following: {ns:?}"
        );
        let last_tail = per_task[task].last().copied().unwrap_or(0);
        assert!(
            ns[0] >= last_tail,
            "{task}: following started before the tail ({ns:?} vs {last_tail})"
        );
    }

    // An unknown service: a clear error and a non-zero exit.
    let out = reader.cli(&["service", "logs", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no service named nope"), "{err}");

    // One task's node goes down while following: one warning line, and the other task's
    // lines keep coming.
    let victim_name = placed[&0].clone();
    let survivor = format!("counter.1@{}", placed[&1]);
    let victim = nodes
        .iter()
        .position(|n| n.name == victim_name)
        .expect("victim");
    let (mut child, out, err) = follow(reader, &["--tail", "1"]);
    let mut seen = Vec::new();
    read_until(&out, "lines before the outage", T, &mut seen, |lines| {
        by_task(lines).len() == 2
    });
    nodes[victim].kill();
    let mut warnings = Vec::new();
    read_until(
        &err,
        "a warning about the node",
        T,
        &mut warnings,
        |lines| lines.iter().any(|l| l.contains(&victim_name)),
    );
    let before = by_task(&seen).get(&survivor).map_or(0, Vec::len);
    read_until(
        &out,
        "the other task's lines to go on",
        T,
        &mut seen,
        |lines| by_task(lines).get(&survivor).map_or(0, Vec::len) >= before + 10,
    );
    // Still a single warning for this outage.
    while let Ok(line) = err.try_recv() {
        warnings.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    let about_victim: Vec<&String> = warnings
        .iter()
        .filter(|l| l.contains(&format!("node {victim_name} ")))
        .collect();
    assert_eq!(about_victim.len(), 1, "{warnings:#?}");
    assert!(
        about_victim[0].starts_with("warning:") && about_victim[0].contains("does not answer"),
        "{about_victim:?}"
    );
    let survivor_lines = &by_task(&seen)[&survivor];
    assert!(
        survivor_lines.windows(2).all(|w| w[1] == w[0] + 1),
        "{survivor_lines:?}"
    );
}
