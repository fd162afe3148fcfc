//! Benchmark (not a test): the time from creating a service of N replicas on one local
//! `warren-node` to N running containers, against the same N containers started by other
//! means on the same kind of engine, with the same image and command. Reports each run,
//! the medians and the ratios Warren / each baseline.
//!
//! ```sh
//! scripts/ensure-docker.sh
//! cargo bench -p warren-node --bench create_to_running -- --runs 5 --replicas 10 \
//!     --baseline sequential,parallel,swarm --engine shared
//! ```
//!
//! Warren: one `warren-node up --init` (this build's binary, release profile); the clock
//! starts just before `POST /v1/services` (what `warren-cli service create` sends) and stops
//! when the engine lists N running containers labelled with the node and the service
//! (polled every 20 ms through the engine API). The service has no health check, so
//! running is as healthy as it gets. Baselines (`--baseline`, comma-separated):
//!
//! - `sequential`: N `docker run -d`, one after the other; the clock stops when the last
//!   returns (each returns once its container started).
//! - `parallel`: N `docker run -d` spawned at once; the clock stops when all N have
//!   returned. The engine is then asked (off the clock) whether it lists N running
//!   containers of the run, and the run fails if not.
//! - `swarm`: Docker Swarm on a private engine (`warren_testkit::PrivateEngine`: its own
//!   dockerd under `unshare --net`, no bridge, no iptables, the test image loaded from the
//!   shared engine), in swarm mode with `swarm init --advertise-addr 127.0.0.1` (the
//!   namespace's own loopback). The clock starts before `docker service create --detach
//!   --replicas N` and stops when that engine lists N running containers of the service
//!   (polled every 20 ms, like Warren's). The shared engine is never put in swarm mode.
//!
//! `--engine shared` (the default) runs Warren and the `docker run` baselines on the
//! machine's engine, whose containers join the default bridge; `--engine private` runs them
//! on the private engine too (the swarm one when `swarm` is chosen), where no container gets
//! a network, like Swarm's tasks there: the same engine for every side.
//!
//! Each run rotates which side goes first, so none always meets a warmer engine, and removes
//! what it made before the next (waiting until the engine lists none of it). The node, every
//! container, the swarm and the private engine are removed at the end, on failure too.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptionsBuilder;
use warren_runtime::DockerRuntime;

use warren_testkit::PrivateEngine;

const IMAGE: &str = "warren/busybox:latest";
/// Exits on SIGTERM at once (busybox httpd as PID 1 would wait out the stop timeout).
const SCRIPT: &str = "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait";
/// How long one side may take to reach N running, or to remove them.
const PATIENCE: Duration = Duration::from_secs(120);
/// How often a side's clock looks for N running containers.
const POLL: Duration = Duration::from_millis(20);
/// How often the clean-up between runs looks for none left.
const CLEANUP_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Warren,
    Sequential,
    Parallel,
    Swarm,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Warren => "warren",
            Side::Sequential => "sequential",
            Side::Parallel => "parallel",
            Side::Swarm => "swarm",
        }
    }

    fn describe(self, n: usize) -> String {
        match self {
            Side::Warren => format!("Warren, create -> {n} running"),
            Side::Sequential => format!("{n} x docker run -d, one after the other"),
            Side::Parallel => format!("{n} x docker run -d, all at once"),
            Side::Swarm => format!("Swarm, service create --replicas {n} -> {n} running"),
        }
    }
}

struct Options {
    runs: usize,
    replicas: usize,
    baselines: Vec<Side>,
    private: bool,
}

const USAGE: &str =
    "--runs N --replicas N --baseline sequential,parallel,swarm --engine shared|private";

fn options() -> Result<Options, String> {
    let mut options = Options {
        runs: 5,
        replicas: 20,
        baselines: vec![Side::Sequential, Side::Parallel, Side::Swarm],
        private: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| -> Result<usize, String> {
            v.parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--runs" => options.runs = number("--runs", value("--runs")?)?,
            "--replicas" => options.replicas = number("--replicas", value("--replicas")?)?,
            "--baseline" => {
                options.baselines = Vec::new();
                for name in value("--baseline")?.split(',').filter(|n| !n.is_empty()) {
                    let side = match name {
                        "sequential" => Side::Sequential,
                        "parallel" => Side::Parallel,
                        "swarm" => Side::Swarm,
                        other => return Err(format!("unknown baseline {other:?} ({USAGE})")),
                    };
                    if !options.baselines.contains(&side) {
                        options.baselines.push(side);
                    }
                }
            }
            "--engine" => {
                options.private = match value("--engine")?.as_str() {
                    "shared" => false,
                    "private" => true,
                    other => return Err(format!("unknown engine {other:?} ({USAGE})")),
                }
            }
            // `cargo bench` passes --bench; anything else is a mistake.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?} ({USAGE})")),
        }
    }
    Ok(options)
}

/// An engine the sides run on: its `-H` for the CLI (none: the CLI's default, the shared
/// engine) and an API client for counting.
struct Engine {
    host: Option<String>,
    api: DockerRuntime,
}

impl Engine {
    fn connect(rt: &tokio::runtime::Runtime, host: Option<String>) -> Result<Engine, String> {
        let api = rt
            .block_on(DockerRuntime::connect(host.as_deref()))
            .map_err(|e| e.to_string())?;
        Ok(Engine { host, api })
    }

    fn cli(&self) -> Command {
        docker_cli(self.host.as_deref())
    }

    /// Containers carrying every one of `labels` (`key=value`), running ones only or all.
    fn count(
        &self,
        rt: &tokio::runtime::Runtime,
        labels: &[String],
        running_only: bool,
    ) -> Result<usize, String> {
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        filters.insert("label", labels.to_vec());
        if running_only {
            filters.insert("status", vec!["running".to_string()]);
        }
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        rt.block_on(self.api.docker().list_containers(Some(options)))
            .map(|c| c.len())
            .map_err(|e| e.to_string())
    }

    /// Polls [`count`](Self::count) every `every` until `done` holds for it; an error
    /// after [`PATIENCE`], naming `what`.
    fn wait_count(
        &self,
        rt: &tokio::runtime::Runtime,
        labels: &[String],
        running_only: bool,
        every: Duration,
        what: &str,
        done: impl Fn(usize) -> bool,
    ) -> Result<(), String> {
        // A failed listing is retried like a short one: the engine is busy, not gone.
        warren_testkit::poll_until(PATIENCE, every, || {
            self.count(rt, labels, running_only)
                .is_ok_and(&done)
                .then_some(())
        })
        .ok_or_else(|| format!("{what} not within {PATIENCE:?}"))
    }
}

/// `docker [-H host]`, to be given its arguments (no host: the shared engine).
fn docker_cli(host: Option<&str>) -> Command {
    let mut command = Command::new("docker");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    command.stdin(Stdio::null());
    command
}

/// `docker rm -f` every container carrying `label` (`key=value`).
fn remove_labelled(host: Option<&str>, label: &str) {
    let out = docker_cli(host)
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
        let _ = docker_cli(host)
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .status();
    }
}

/// The node under test; killed and its containers removed on drop.
struct Node {
    child: Child,
    api: String,
    peer_id: String,
    /// The engine's `-H`, for the removal on drop (none: the shared engine).
    docker_host: Option<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(docker_host: Option<&str>) -> Result<Node, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port()?;
        let quic = free_port()?;
        let log = std::fs::File::create(dir.path().join("node.log")).map_err(|e| e.to_string())?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren-node"));
        command
            .args(["up", "--init", "bench", "--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--api", &format!("127.0.0.1:{port}")])
            .args(["--listen", &format!("/ip4/127.0.0.1/udp/{quic}/quic-v1")]);
        if let Some(host) = docker_host {
            command.args(["--docker-host", host]);
        }
        let child = command
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
            docker_host: docker_host.map(str::to_string),
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
            remove_labelled(
                self.docker_host.as_deref(),
                &format!("warren.node={}", self.peer_id),
            );
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

/// Removes the `docker run` baselines' containers on drop, on failure too.
struct Labelled {
    host: Option<String>,
    label: String,
}

impl Drop for Labelled {
    fn drop(&mut self) {
        remove_labelled(self.host.as_deref(), &self.label);
    }
}

fn warren_run(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    node: &Node,
    replicas: usize,
    run: usize,
) -> Result<Duration, String> {
    let service = format!("bench{run}");
    let mine = format!("warren.node={}", node.peer_id);
    let labels = [mine.clone(), format!("warren.service={service}")];
    let body = serde_json::json!({
        "name": service,
        "image": IMAGE,
        "replicas": replicas,
        "command": ["sh", "-c", SCRIPT],
    });
    let started = Instant::now();
    send("POST", &format!("{}/v1/services", node.api), Some(body))?;
    let what = format!("{replicas} running containers of Warren's service");
    engine.wait_count(rt, &labels, true, POLL, &what, |n| n >= replicas)?;
    let took = started.elapsed();
    send(
        "DELETE",
        &format!("{}/v1/services/{service}", node.api),
        None,
    )?;
    let what = "the removal of Warren's containers";
    engine.wait_count(rt, &[mine], false, CLEANUP_POLL, what, |n| n == 0)?;
    Ok(took)
}

/// `docker run -d` of the benchmark's container, labelled `label`.
fn docker_run(engine: &Engine, label: &str) -> Command {
    let mut command = engine.cli();
    command.args(["run", "-d", "--label", label, IMAGE, "sh", "-c", SCRIPT]);
    command
}

fn failed(out: &std::process::Output) -> Option<String> {
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).trim().to_string())
}

fn sequential_run(engine: &Engine, label: &str, replicas: usize) -> Result<Duration, String> {
    let started = Instant::now();
    for _ in 0..replicas {
        let out = docker_run(engine, label)
            .output()
            .map_err(|e| format!("docker run: {e}"))?;
        if let Some(e) = failed(&out) {
            return Err(format!("docker run failed: {e}"));
        }
    }
    let took = started.elapsed();
    remove_labelled(engine.host.as_deref(), label);
    Ok(took)
}

fn parallel_run(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    label: &str,
    replicas: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    let children: Vec<Result<Child, String>> = (0..replicas)
        .map(|_| {
            docker_run(engine, label)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("docker run: {e}"))
        })
        .collect();
    // Every child is waited for, failed or not, before anything is reported.
    let mut failure = None;
    for child in children {
        let out = child.and_then(|c| c.wait_with_output().map_err(|e| e.to_string()));
        if let Some(e) = out.map_or_else(Some, |o| failed(&o)) {
            failure.get_or_insert(e);
        }
    }
    let took = started.elapsed();
    if let Some(e) = failure {
        return Err(format!("docker run failed: {e}"));
    }
    let running = engine.count(rt, &[label.to_string()], true)?;
    if running != replicas {
        return Err(format!(
            "{replicas} docker run -d returned but the engine lists {running} running"
        ));
    }
    remove_labelled(engine.host.as_deref(), label);
    Ok(took)
}

fn swarm_run(
    rt: &tokio::runtime::Runtime,
    swarm: &Engine,
    replicas: usize,
    run: usize,
) -> Result<Duration, String> {
    let service = format!("bench{run}");
    let labels = [format!("com.docker.swarm.service.name={service}")];
    let n = replicas.to_string();
    let started = Instant::now();
    let out = swarm
        .cli()
        .args(["service", "create", "--detach", "--quiet"])
        // The image is the one loaded into this engine: no registry to ask for its digest.
        .args(["--no-resolve-image", "--name", &service, "--replicas", &n])
        .args([IMAGE, "sh", "-c", SCRIPT])
        .output()
        .map_err(|e| format!("docker service create: {e}"))?;
    if let Some(e) = failed(&out) {
        return Err(format!("docker service create failed: {e}"));
    }
    let what = format!("{replicas} running tasks of the Swarm service");
    swarm.wait_count(rt, &labels, true, POLL, &what, |n| n >= replicas)?;
    let took = started.elapsed();
    let out = swarm
        .cli()
        .args(["service", "rm", &service])
        .output()
        .map_err(|e| format!("docker service rm: {e}"))?;
    if let Some(e) = failed(&out) {
        return Err(format!("docker service rm failed: {e}"));
    }
    let what = "the removal of the Swarm service's containers";
    swarm.wait_count(rt, &labels, false, CLEANUP_POLL, what, |n| n == 0)?;
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn bench(options: &Options) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let with_swarm = options.baselines.contains(&Side::Swarm);
    // Declared first, so dropped last: after the node and every container on it.
    let private = if options.private || with_swarm {
        let mut engine = PrivateEngine::new().with_loopback();
        engine.start()?;
        if with_swarm {
            engine.swarm_init()?;
        }
        Some(engine)
    } else {
        None
    };
    let private_host = private.as_ref().map(PrivateEngine::socket);
    let host = private_host.clone().filter(|_| options.private);
    let engine = Engine::connect(&rt, host.clone())?;
    let swarm = match private_host.filter(|_| with_swarm) {
        Some(h) => Some(Engine::connect(&rt, Some(h))?),
        None => None,
    };
    let version = rt
        .block_on(engine.api.engine_info())
        .map(|i| i.version)
        .unwrap_or_default();
    let node = Node::start(host.as_deref())?;
    let label = format!("warren-bench={}", std::process::id());
    let _docker_side = Labelled {
        host: host.clone(),
        label: label.clone(),
    };
    let mut sides = vec![Side::Warren];
    sides.extend(&options.baselines);
    println!(
        "create -> {} running containers, {} runs each, engine {version} ({}), {} CPUs, \
         load average {}",
        options.replicas,
        options.runs,
        if options.private {
            "private, no container network"
        } else {
            "shared; swarm on a private one"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    for run in 0..options.runs {
        // Rotate which side goes first, so none always meets a warmer engine.
        for i in (0..sides.len()).map(|i| (i + run) % sides.len()) {
            let n = options.replicas;
            let took = match sides[i] {
                Side::Warren => warren_run(&rt, &engine, &node, n, run)?,
                Side::Sequential => sequential_run(&engine, &label, n)?,
                Side::Parallel => parallel_run(&rt, &engine, &label, n)?,
                Side::Swarm => {
                    let swarm = swarm.as_ref().ok_or("no swarm engine")?;
                    swarm_run(&rt, swarm, n, run)?
                }
            };
            times[i].push(took);
        }
        let line: Vec<String> = sides
            .iter()
            .zip(&times)
            .map(|(side, t)| format!("{} {:>6.2} s", side.name(), t[run].as_secs_f64()))
            .collect();
        println!("run {}: {}", run + 1, line.join("   "));
    }
    let medians: Vec<Duration> = times.iter_mut().map(|t| median(t)).collect();
    for (side, m) in sides.iter().zip(&medians) {
        println!(
            "median {:<10} {:>6.2} s  ({})",
            side.name(),
            m.as_secs_f64(),
            side.describe(options.replicas)
        );
    }
    for (side, m) in sides.iter().zip(&medians).skip(1) {
        println!(
            "ratio warren/{:<10} {:.2}",
            side.name(),
            medians[0].as_secs_f64() / m.as_secs_f64()
        );
    }
    println!("load average at the end {}", load_average());
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
