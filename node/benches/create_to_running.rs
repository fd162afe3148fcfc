//! Benchmark (not a test): the time from creating a service of N replicas on one local
//! `warren-node` to N running containers, against N plain `docker run -d` of the same image
//! and command on the same engine. Reports each run, the medians and their ratio.
//!
//! ```sh
//! scripts/ensure-docker.sh
//! cargo bench -p warren-node --bench create_to_running -- --runs 5 --replicas 20
//! ```
//!
//! Warren side: one `warren-node up --init` (this build's binary, release profile) on the
//! machine's engine; the clock starts just before `POST /v1/services` (what `warren-cli
//! service create` sends) and stops when the engine lists N running containers labelled
//! with the node (polled every 20 ms through the engine API). Docker side: the clock
//! starts before the first of N sequential `docker run -d` and stops when the last returns
//! (each returns once its container started). The service has no health check, so running
//! is as healthy as it gets. Each run removes what it made before the next; the node and
//! every container are removed at the end, on failure too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warren_runtime::{ContainerRuntime, ContainerState, DockerRuntime};

const IMAGE: &str = "warren/busybox:latest";
/// Exits on SIGTERM at once (busybox httpd as PID 1 would wait out the stop timeout).
const SCRIPT: &str = "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait";

struct Options {
    runs: usize,
    replicas: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        runs: 5,
        replicas: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--runs" => options.runs = number("--runs")?,
            "--replicas" => options.replicas = number("--replicas")?,
            // `cargo bench` passes --bench; anything else is a mistake.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument {other:?} (--runs N --replicas N)"
                ))
            }
        }
    }
    Ok(options)
}

/// The node under test; killed and its containers removed on drop.
struct Node {
    child: Child,
    api: String,
    peer_id: String,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Result<Node, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port()?;
        let quic = free_port()?;
        let log = std::fs::File::create(dir.path().join("node.log")).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_warren-node"))
            .args(["up", "--init", "bench", "--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--api", &format!("127.0.0.1:{port}")])
            .args(["--listen", &format!("/ip4/127.0.0.1/udp/{quic}/quic-v1")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start warren-node: {e}"))?;
        let mut node = Node {
            child,
            api: format!("http://127.0.0.1:{port}"),
            peer_id: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.peer_id.is_empty() {
            if Instant::now() > deadline {
                return Err(format!("warren-node did not answer; log: {}", node.log()));
            }
            if let Ok(status) = get(&format!("{}/v1/status", node.api)) {
                if let Some(id) = status["node"].as_str() {
                    node.peer_id = id.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(node)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("node.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.peer_id.is_empty() {
            remove_labelled(&format!("warren.node={}", self.peer_id));
        }
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(url: &str) -> Result<serde_json::Value, String> {
    let mut response = agent().get(url).call().map_err(|e| e.to_string())?;
    response
        .body_mut()
        .read_json()
        .map_err(|e: ureq::Error| e.to_string())
}

fn send(method: &str, url: &str, body: Option<serde_json::Value>) -> Result<(), String> {
    let agent = agent();
    let response = match (method, body) {
        ("POST", Some(body)) => agent.post(url).send_json(body),
        ("DELETE", _) => agent.delete(url).call(),
        _ => return Err(format!("unsupported request {method} {url}")),
    }
    .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{method} {url}: {}", response.status()))
    }
}

/// `docker rm -f` every container carrying `label` (`key=value`).
fn remove_labelled(label: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output();
    let ids: Vec<String> = out
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .status();
    }
}

/// Removes the `docker run` side's containers on drop, on failure too.
struct DockerSide(String);

impl Drop for DockerSide {
    fn drop(&mut self) {
        remove_labelled(&self.0);
    }
}

/// Containers of `node` for `service` in state running, by the engine's listing.
fn running(
    rt: &tokio::runtime::Runtime,
    docker: &DockerRuntime,
    node: &str,
    service: &str,
) -> usize {
    rt.block_on(docker.list_tasks(node))
        .map(|tasks| {
            tasks
                .iter()
                .filter(|t| t.service == service && t.state == ContainerState::Running)
                .count()
        })
        .unwrap_or(0)
}

fn warren_run(
    rt: &tokio::runtime::Runtime,
    docker: &DockerRuntime,
    node: &Node,
    replicas: usize,
    run: usize,
) -> Result<Duration, String> {
    let service = format!("bench{run}");
    let body = serde_json::json!({
        "name": service,
        "image": IMAGE,
        "replicas": replicas,
        "command": ["sh", "-c", SCRIPT],
    });
    let started = Instant::now();
    send("POST", &format!("{}/v1/services", node.api), Some(body))?;
    let deadline = started + Duration::from_secs(120);
    while running(rt, docker, &node.peer_id, &service) < replicas {
        if Instant::now() > deadline {
            return Err(format!("{replicas} replicas not running after 120 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    send(
        "DELETE",
        &format!("{}/v1/services/{service}", node.api),
        None,
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = rt
            .block_on(docker.list_tasks(&node.peer_id))
            .map(|t| t.len())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the service's containers were not removed within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(took)
}

fn docker_run(label: &str, replicas: usize) -> Result<Duration, String> {
    let started = Instant::now();
    for _ in 0..replicas {
        let out = Command::new("docker")
            .args(["run", "-d", "--label", label, IMAGE, "sh", "-c", SCRIPT])
            .output()
            .map_err(|e| format!("docker run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker run failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let took = started.elapsed();
    remove_labelled(label);
    Ok(took)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2
    }
}

fn bench(options: &Options) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let docker = rt
        .block_on(DockerRuntime::connect(None))
        .map_err(|e| e.to_string())?;
    let engine = rt
        .block_on(docker.engine_info())
        .map(|i| i.version)
        .unwrap_or_default();
    let node = Node::start()?;
    let label = format!("warren-bench={}", std::process::id());
    let _docker_side = DockerSide(label.clone());
    println!(
        "create -> {} running containers, {} runs each, engine {engine}, {} CPUs",
        options.replicas,
        options.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (mut warren, mut plain) = (Vec::new(), Vec::new());
    for run in 0..options.runs {
        // Alternate which side goes first, so neither always meets a warmer engine.
        let (w, d) = if run % 2 == 0 {
            let w = warren_run(&rt, &docker, &node, options.replicas, run)?;
            (w, docker_run(&label, options.replicas)?)
        } else {
            let d = docker_run(&label, options.replicas)?;
            (warren_run(&rt, &docker, &node, options.replicas, run)?, d)
        };
        println!(
            "run {}: warren {:>6.2} s   docker run {:>6.2} s",
            run + 1,
            w.as_secs_f64(),
            d.as_secs_f64()
        );
        warren.push(w);
        plain.push(d);
    }
    let (w, d) = (median(&mut warren), median(&mut plain));
    println!(
        "median: warren {:.2} s, {} x docker run -d {:.2} s, ratio warren/docker {:.2}",
        w.as_secs_f64(),
        options.replicas,
        d.as_secs_f64(),
        w.as_secs_f64() / d.as_secs_f64()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let result = options().and_then(|o| bench(&o));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
