//! Test harness: real `warren-node` processes on 127.0.0.1, driven through `warren-cli` and
//! checked through the Docker engine, the way an operator would. The launcher, the engine
//! listing and the deadline polls are `warren-testkit`'s (shared with `warren-testnet`); this
//! module adds what only these tests need: a [`Node`] on 127.0.0.1 ports with its CLI, and
//! cluster helpers.

// Each test binary uses a part of it.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use warren_testkit::{Launch, NodeProcess};

pub use warren_testkit::{holds_for, require_docker, wait_for, Container, IMAGE, WEB_COMMAND};

pub fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warren-node"))
}

/// `warren-cli` is built beside `warren-node` by the README's test command
/// (`cargo build --workspace --bins` runs first).
pub fn cli_bin() -> PathBuf {
    let path = node_bin().with_file_name("warren-cli");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (the README's test command does)",
        path.display()
    );
    path
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp_port() -> u16 {
    warren_testkit::free_tcp_port().expect("free tcp port")
}

/// One `warren-node` process with its own data dir and ports.
pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    pub api_port: u16,
    pub quic_port: u16,
    pub peer_id: String,
    child: Option<NodeProcess>,
    log: PathBuf,
}

impl Node {
    /// Starts `warren-node up` with `extra` args and waits until its API answers.
    pub fn start(name: &str, data_dir: &Path, extra: &[&str]) -> Node {
        let quic_port = warren_testkit::free_udp_port().expect("free udp port");
        Self::start_on(name, data_dir, free_tcp_port(), quic_port, extra)
    }

    pub fn start_on(
        name: &str,
        data_dir: &Path,
        api_port: u16,
        quic_port: u16,
        extra: &[&str],
    ) -> Node {
        Self::start_within(
            name,
            data_dir,
            api_port,
            quic_port,
            extra,
            Duration::from_secs(30),
        )
    }

    /// [`Node::start_on`], waiting up to `timeout` for the API (a join that fetches a large
    /// document answers later).
    pub fn start_within(
        name: &str,
        data_dir: &Path,
        api_port: u16,
        quic_port: u16,
        extra: &[&str],
        timeout: Duration,
    ) -> Node {
        let mut node = Node {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            api_port,
            quic_port,
            peer_id: String::new(),
            child: None,
            log: data_dir.with_extension("log"),
        };
        node.spawn(extra);
        node.peer_id = wait_for(&format!("{name}'s API"), timeout, || {
            if let Some(status) = node.try_exit() {
                panic!("{name} exited early ({status}); log:\n{}", node.log_text());
            }
            node.status()
                .and_then(|s| s["node"].as_str().map(str::to_string))
        });
        node
    }

    fn spawn(&mut self, extra: &[&str]) {
        let launch = Launch::new(node_bin(), &self.name, &self.data_dir)
            .listen(format!("/ip4/127.0.0.1/udp/{}/quic-v1", self.quic_port))
            .api(format!("127.0.0.1:{}", self.api_port))
            .args(extra)
            .env("RUST_LOG", "info,libp2p=warn")
            .log(&self.log);
        self.child = Some(launch.spawn().expect("spawn warren-node"));
    }

    /// Restarts the process with the same data dir and ports.
    pub fn restart(&mut self, extra: &[&str]) {
        self.spawn(extra);
        let name = self.name.clone();
        wait_for(
            &format!("{name}'s API after restart"),
            Duration::from_secs(30),
            || {
                if let Some(status) = self.try_exit() {
                    panic!("{name} exited early ({status}); log:\n{}", self.log_text());
                }
                self.status()
            },
        );
    }

    fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(NodeProcess::try_exit)
    }

    /// SIGTERM, as an operator stops it: waits up to 30 s for its exit (then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop("TERM", Duration::from_secs(30));
        }
    }

    /// SIGKILL: the process dies without any cleanup, as on power loss.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn peer(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// `warren-cli --peer <this node> args...`
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(cli_bin())
            .arg("--peer")
            .arg(self.peer())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run warren-cli")
    }

    /// `warren-cli -o json args...`, parsed; `None` when the command fails.
    pub fn cli_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> Option<Value> {
        self.cli_json(&["cluster", "status"])
    }

    pub fn join_token(&self) -> String {
        let out = self.cli(&["join-token", "create"]);
        assert!(
            out.status.success(),
            "join-token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    pub fn quic_addr(&self) -> String {
        format!(
            "/ip4/127.0.0.1/udp/{}/quic-v1/p2p/{}",
            self.quic_port, self.peer_id
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- last lines of {}'s log ----", self.name);
            eprintln!("{}", warren_testkit::log_tail(&self.log, 40));
        }
        if !self.peer_id.is_empty() {
            remove_containers(&self.peer_id);
            // A killed node leaves its overlay network and its host forwarding rules.
            let network = warren_runtime::overlay_network_name(&self.peer_id);
            let _ = Command::new("docker")
                .args(["network", "rm", &network])
                .output();
            let _ = warren_runtime::forward::remove(&self.peer_id);
            // The node's tmpfs for secret files, if it mounted one.
            let secrets = format!("/run/warren/{}/secrets", self.peer_id);
            let _ = Command::new("umount").arg(&secrets).output();
            let _ = std::fs::remove_dir_all(format!("/run/warren/{}", self.peer_id));
        }
    }
}

/// Containers labelled with one of `nodes` (running or not).
pub fn containers(nodes: &[&str]) -> Vec<Container> {
    nodes
        .iter()
        .flat_map(|node| {
            warren_testkit::containers(&format!("label=warren.node={node}")).expect("docker ps")
        })
        .collect()
}

/// Removes every container labelled with `node`, running or not (best effort: a test's
/// cleanup).
pub fn remove_containers(node: &str) {
    let _ = warren_testkit::remove_containers(&format!("label=warren.node={node}"));
}

/// GET / on 127.0.0.1:port with a plain HTTP/1.0 request; the body, if any answer came.
pub fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// Starts a cluster `name` of three nodes `n1` (the founder), `n2` and `n3` under `dir`, each
/// admitted with its own join token.
pub fn cluster_of_three(dir: &Path, name: &str) -> [Node; 3] {
    let n1 = Node::start("n1", &dir.join("n1"), &["--init", name]);
    let token = n1.join_token();
    let n2 = Node::start("n2", &dir.join("n2"), &["--join", &token]);
    let token = n1.join_token();
    let n3 = Node::start("n3", &dir.join("n3"), &["--join", &token]);
    [n1, n2, n3]
}

/// A failed CLI call: non-zero, one line on stderr starting `error: `, no panic; returns that
/// line.
pub fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got: {err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

/// Waits (up to `timeout`) until `node` lists `n` members as alive.
pub fn wait_all_alive(node: &Node, n: usize, timeout: Duration) {
    wait_for(
        &format!("{n} alive members at {}", node.name),
        timeout,
        || {
            let s = node.status()?;
            let alive = s["members"]
                .as_array()?
                .iter()
                .filter(|m| m["liveness"] == "alive")
                .count();
            (alive == n).then_some(())
        },
    );
}
