//! Three real `warren-node` processes in three network namespaces, through a partition and its
//! heal.
//!
//! Node 0 creates the cluster, nodes 1 and 2 join with tokens minted at node 0. Then the network
//! is cut into {0} / {1,2}: nodes 1 and 2 must see node 0 `down` and agree on a lease held by
//! one of them at a higher epoch, while node 0 keeps serving its API. After the heal all three
//! must see three live members and report the same lease, held by one of them. The lease
//! checks are invariant 3's shared implementation (`warren_core::invariants::one_lease`).
//!
//! Needs root, a Docker engine (each node talks to `/var/run/docker.sock`) and the binaries
//! (`cargo build --workspace --bins`). Leaves nothing behind, pass or fail: the [`Cluster`]
//! guard stops the nodes, removes containers labelled with their peer ids and tears the testnet
//! down in `Drop`; on failure it prints the tail of every node's log.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use warren_core::invariants::one_lease;
use warren_testkit::{log_tail, poll_until, Launch};
use warren_testnet::cluster::{lease, lease_seen, liveness, CliHandle, API_LISTEN, P2P_PORT};
use warren_testnet::{Bins, Testnet};

const NODES: usize = 3;
const POLL: Duration = Duration::from_millis(250);
const LOG_TAIL_LINES: usize = 40;

fn members(status: &Value) -> &[Value] {
    status
        .get("members")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn alive_count(status: &Value) -> usize {
    members(status)
        .iter()
        .filter(|m| m.get("liveness").and_then(Value::as_str) == Some("alive"))
        .count()
}

/// The testnet, its nodes and their files; cleans everything up in `Drop`.
struct Cluster {
    net: Testnet,
    bins: Bins,
    cli: CliHandle,
    dir: tempfile::TempDir,
    pids: Vec<Option<u32>>,
    peers: Vec<Option<String>>,
}

impl Cluster {
    fn new(bins: Bins) -> Self {
        let net = match Testnet::new(NODES) {
            Ok(net) => net,
            Err(e) => {
                panic!("cannot build the testnet (this test needs root; CI runs it as root): {e}")
            }
        };
        let dir = match tempfile::Builder::new().prefix("warren-testnet-").tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot create a temporary directory: {e}"),
        };
        let namespaces = (0..NODES).map(|i| net.namespace(i)).collect();
        Self {
            cli: CliHandle::new(bins.cli.clone(), namespaces),
            net,
            bins,
            dir,
            pids: vec![None; NODES],
            peers: vec![None; NODES],
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}.log"))
    }

    /// Starts `warren-node up` in namespace `i` with `role` (`--init NAME` or `--join TOKEN`).
    fn start(&mut self, i: usize, role: &[&str]) {
        let dir = self.dir.path();
        let launch = Launch::new(&self.bins.node, &format!("n{i}"), dir.join(format!("n{i}")))
            .prefix(["ip", "netns", "exec", &self.net.namespace(i)])
            .listen(format!("/ip4/{}/udp/{P2P_PORT}/quic-v1", self.net.addr(i)))
            .api(API_LISTEN)
            .args(role)
            .env("NO_COLOR", "1")
            .log(self.log_path(i))
            .stdout(dir.join(format!("n{i}.out")));
        let cmd = match launch.command() {
            Ok(cmd) => cmd,
            Err(e) => panic!("cannot prepare node {i}: {e}"),
        };
        match self.net.spawn(cmd) {
            Ok(pid) => self.pids[i] = Some(pid),
            Err(e) => panic!("cannot start node {i}: {e}"),
        }
    }

    /// `warren-cli --peer API ARGS` in namespace `i`: its stdout, or why it failed.
    fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        self.cli.run(i, args).map_err(|e| e.to_string())
    }

    fn status(&self, i: usize) -> Result<Value, String> {
        self.cli
            .json(i, &["cluster", "status"])
            .map_err(|e| e.to_string())
    }

    fn peer(&self, i: usize) -> &str {
        self.peers[i].as_deref().unwrap_or("?")
    }

    /// Panics if a node this test started has exited.
    fn assert_nodes_running(&mut self) {
        for i in 0..NODES {
            if let Some(pid) = self.pids[i] {
                match self.net.try_wait(pid) {
                    Ok(None) => {}
                    Ok(Some(status)) => panic!("node {i} (pid {pid}) exited: {status}"),
                    Err(e) => panic!("node {i}: {e}"),
                }
            }
        }
    }

    /// Polls `check` until it returns `Ok`, failing after `timeout` with its last complaint.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        self.net.log(format_args!("waiting for {what}"));
        let mut last = String::new();
        let value = poll_until(timeout, POLL, || {
            self.assert_nodes_running();
            check(self).map_err(|why| last = why).ok()
        });
        match value {
            Some(value) => {
                self.net
                    .log(format_args!("{what}: after {:?}", start.elapsed()));
                value
            }
            None => panic!("no {what} within {timeout:?}; last: {last}"),
        }
    }

    /// Removes the containers the nodes labelled with their peer ids.
    fn remove_containers(&self) {
        for peer in self.peers.iter().flatten() {
            let filter = format!("label=warren.node={peer}");
            match warren_testkit::remove_containers(&filter) {
                Ok(0) => {}
                Ok(n) => self
                    .net
                    .log(format_args!("removed {n} containers of {peer}")),
                Err(e) => self
                    .net
                    .log(format_args!("removing containers of {peer}: {e}")),
            }
        }
    }

    fn print_log_tails(&self) {
        for i in 0..NODES {
            let path = self.log_path(i);
            eprintln!(
                "----- node {i} ({}), last {LOG_TAIL_LINES} lines of {} -----\n{}",
                self.peer(i),
                path.display(),
                log_tail(&path, LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        // Stop the nodes first, so that none starts a container after the cleanup.
        if let Err(e) = self.net.down() {
            self.net.log(format_args!("teardown: {e}"));
        }
        self.remove_containers();
        if failed {
            self.print_log_tails();
        }
    }
}

#[test]
fn partition_elects_a_new_lease_holder_and_heal_converges() {
    let bins = Bins::find().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::new(bins);
    let started = Instant::now();

    // Node 0 creates the cluster; 1 and 2 join with tokens minted at node 0.
    c.start(0, &["--init", "wt-partition"]);
    let peer0 = c.wait_for("node 0's API", Duration::from_secs(30), |c| {
        let status = c.status(0)?;
        status
            .get("node")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| format!("no `node` in {status}"))
    });
    c.peers[0] = Some(peer0);
    for i in 1..NODES {
        let token = match c.cli(0, &["join-token", "create"]) {
            Ok(out) => out.trim().to_string(),
            Err(e) => panic!("cannot mint a join token at node 0: {e}"),
        };
        assert!(!token.is_empty(), "node 0 printed an empty join token");
        c.start(i, &["--join", &token]);
        let peer = c.wait_for(&format!("node {i}'s API"), Duration::from_secs(30), |c| {
            let status = c.status(i)?;
            status
                .get("node")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| format!("no `node` in {status}"))
        });
        c.peers[i] = Some(peer);
    }

    c.wait_for(
        "3 alive members on every node",
        Duration::from_secs(60),
        |c| {
            for i in 0..NODES {
                let status = c.status(i)?;
                if alive_count(&status) != NODES {
                    return Err(format!("node {i} sees {status}"));
                }
            }
            Ok(())
        },
    );
    let before = match lease(&c.status(0).unwrap_or_default()) {
        Some(lease) => lease,
        None => panic!("node 0 reports no lease with all 3 members alive"),
    };
    c.net.log(format_args!(
        "lease before the partition: {before:?} (formed in {:?})",
        started.elapsed()
    ));

    // {0} / {1,2}
    if let Err(e) = c.net.partition(&[&[0], &[1, 2]]) {
        panic!("cannot partition: {e}");
    }
    let cut = Instant::now();
    let majority = c.wait_for(
        "a new lease in {1,2} with node 0 down there",
        Duration::from_secs(30),
        |c| {
            let peer0 = c.peer(0).to_string();
            let mut leases = Vec::new();
            for i in [1, 2] {
                let status = c.status(i)?;
                if liveness(&status, &peer0) != Some("down") {
                    return Err(format!("node {i} does not see node 0 down: {status}"));
                }
                leases.push(lease_seen(i, c.peer(i), &status));
            }
            // Invariant 3 in {1,2}: one holder among them, one lease.
            let lease = one_lease(&leases).map_err(|e| format!("{{1,2}}: {e}"))?;
            if lease.epoch <= before.epoch {
                return Err(format!("lease {lease:?} is not newer than {before:?}"));
            }
            Ok(lease)
        },
    );
    c.net.log(format_args!(
        "lease in {{1,2}}: {majority:?}, {:?} after the cut",
        cut.elapsed()
    ));
    // Autonomy: node 0 still answers, and sees the others go.
    c.wait_for(
        "node 0 serving its API and seeing 1 and 2 down",
        Duration::from_secs(30),
        |c| {
            let status = c.status(0)?;
            for j in [1, 2] {
                if liveness(&status, c.peer(j)) != Some("down") {
                    return Err(format!("node 0 does not see node {j} down: {status}"));
                }
            }
            Ok(())
        },
    );

    if let Err(e) = c.net.heal() {
        panic!("cannot heal: {e}");
    }
    let healed = Instant::now();
    let after = c.wait_for(
        "3 alive members and one lease on every node after the heal",
        Duration::from_secs(30),
        |c| {
            let mut leases = Vec::new();
            for i in 0..NODES {
                let status = c.status(i)?;
                if alive_count(&status) != NODES {
                    return Err(format!("node {i} sees {status}"));
                }
                leases.push(lease_seen(i, c.peer(i), &status));
            }
            // Invariants 3 and 4: one holder, one lease on every node.
            one_lease(&leases).map_err(|e| e.to_string())
        },
    );
    c.net.log(format_args!(
        "lease after the heal: {after:?}, {:?} after the heal, {:?} in all",
        healed.elapsed(),
        started.elapsed()
    ));
    assert!(
        after.epoch >= majority.epoch,
        "the lease went back in time: {after:?} after {majority:?}"
    );
}
