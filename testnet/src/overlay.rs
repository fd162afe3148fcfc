//! Scenario `overlay` (issue 14): containers on different nodes talk over the WireGuard
//! overlay and find each other by name. Each node runs its own Docker engine inside its
//! namespace ([`UpOptions::own_engines`](crate::cluster::UpOptions)), so two nodes' containers
//! are on two hosts in every sense.
//!
//! 1. Every node's interface lists every other member (`wg show`).
//! 2. `web` runs one replica on every node but node 0 (`--constraint node.name!=<node 0>
//!    --max-replicas-per-node 1`), each serving its host name; a client container on node 0
//!    (on node 0's overlay network, node 0's DNS) resolves `web` to every replica's overlay
//!    address, fetches `http://web/`, and fetches each replica by its slot name
//!    (`<slot>.web.warren`): every answer crosses the overlay.
//! 3. `node rm` of the last node: its peer leaves node 0's interface, its replica's address
//!    stops answering node 0 over the overlay, and `web` answers only node 1's replica (the
//!    removed node's slot waits: no other node matches and has room).
//! 4. Node 1 is cut off from node 0: within the down timeout `web` answers node 0 with no
//!    replica (none runs on its side) while its DNS still answers node 0's own name; after
//!    the heal, node 1's replica again.
//! 5. Figures: throughput and request latency between a container on node 0 and one on
//!    node 1, over the overlay and over the plain path (a port published on node 1's testnet
//!    address, through the bridge), as ratios measured in one run.
//!
//! The client resolves `web` through Docker's embedded resolver, which forwards to the node's
//! DNS; glibc then orders the addresses (RFC 6724), so repeated fetches of `http://web/` may
//! all reach one replica: each replica is checked by its slot name as well.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use warren_core::overlay::{addresses, Prefix, WireguardPublic};
use warren_testkit::{poll_until, IMAGE};

use crate::cluster::{Cluster, Error};
use crate::scenario::{failed, ms, Figures};

/// How long peers, placements and names may take to follow a change.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(90);
/// How long node 0 may take to drop a cut-off member's replicas from its answers: SWIM's
/// down verdict (a few seconds) plus a report round; generous on a busy 2-core machine.
const DOWN_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(300);
/// `web`'s command: serve the container's host name (its short id) on port 80.
const WEB: &str =
    "trap 'exit 0' TERM; mkdir -p /w && hostname > /w/index.html && httpd -f -p 80 -h /w & wait";
/// MiB fetched per throughput sample (a file of zeros, over HTTP).
const BENCH_MIB: u64 = 64;
/// Requests per latency sample.
const BENCH_REQUESTS: usize = 100;

/// A member's place on the overlay, read from its record.
#[derive(Debug, Clone)]
struct Place {
    key: String,
    overlay_ip: Ipv6Addr,
    subnet: Prefix,
}

/// A running replica of `web`: its slot, node index, container (host name) and address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Replica {
    slot: u64,
    node: usize,
    container: String,
    ip: Ipv6Addr,
}

/// Runs the scenario on `c` (at least 3 nodes, each with its own engine).
pub(crate) fn overlay(c: &mut Cluster, fig: &mut Figures) -> Result<(), Error> {
    let n = c.len();
    if (0..n).any(|i| c.engine(i).is_none()) {
        return Err(failed("the overlay scenario needs an engine per node"));
    }
    let started = Instant::now();
    let places = wait(c, "every member's overlay record at node 0", |c| {
        (0..n).map(|i| place(c, i)).collect::<Result<Vec<_>, _>>()
    })?;
    wait(c, "every interface lists every other member", |c| {
        for i in 0..n {
            let want: BTreeSet<(String, String)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (places[j].key.clone(), block(&places[j])))
                .collect();
            let got = c.wg_peers(i)?;
            if got != want {
                return Err(format!("node {i}: wg show lists {got:?}, want {want:?}"));
            }
        }
        Ok(())
    })?;
    fig.add("wg show: every member's peers", ms(started.elapsed()));

    let replicas = (n - 1).to_string();
    let not_node0 = format!("node.name!={}", c.nodes()[0].name);
    c.cli(
        0,
        &[
            "service",
            "create",
            "web",
            "--image",
            IMAGE,
            "--replicas",
            &replicas,
            "--constraint",
            &not_node0,
            "--max-replicas-per-node",
            "1",
            "--",
            "sh",
            "-c",
            WEB,
        ],
    )?;
    let placed = Instant::now();
    let others: BTreeSet<usize> = (1..n).collect();
    let web = wait(c, "web running once on every node but node 0", |c| {
        let web = running(c, &places)?;
        let nodes: BTreeSet<usize> = web.iter().map(|r| r.node).collect();
        if web.len() == n - 1 && nodes == others {
            Ok(web)
        } else {
            Err(format!("web: {web:?}"))
        }
    })?;
    fig.add(
        "web placed, one replica per node but node 0",
        ms(placed.elapsed()),
    );

    let client = Client::new(c, 0)?;
    let all: BTreeSet<Ipv6Addr> = web.iter().map(|r| r.ip).collect();
    wait(c, "node 0's DNS answers web with every replica", |_| {
        let got = client.resolve("web")?;
        (got == all)
            .then_some(())
            .ok_or(format!("web resolves to {got:?}, want {all:?}"))
    })?;
    // Polled (the first packets to a member wait for a WireGuard handshake), and the time it
    // took is a figure.
    let first = Instant::now();
    let page = poll("node 0 fetches http://web/", || {
        client.fetch("http://web/").map_err(|e| e.to_string())
    })?;
    fig.add("first fetch of http://web/ at node 0", ms(first.elapsed()));
    if !web.iter().any(|r| r.container == page) {
        return Err(failed(format!(
            "http://web/ answered {page:?}, no replica of {web:?}"
        )));
    }
    for r in &web {
        let url = format!("http://{}.web.warren/", r.slot);
        let got = poll(&format!("node 0 fetches {url}"), || {
            client.fetch(&url).map_err(|e| e.to_string())
        })?;
        if got != r.container {
            return Err(failed(format!(
                "{url} answered {got:?}, want {}",
                r.container
            )));
        }
    }
    fig.add(
        "node 0 fetches each replica by name",
        format!("{} replicas, all on other nodes", web.len()),
    );

    // The last node leaves for good.
    let gone = n - 1;
    let removed = c.nodes()[gone].name.clone();
    let gone_replica = web
        .iter()
        .find(|r| r.node == gone)
        .cloned()
        .ok_or_else(|| failed("no replica on the node to remove"))?;
    c.cli(0, &["node", "rm", &removed])?;
    let rm = Instant::now();
    poll(&format!("node {gone}'s peer gone from node 0"), || {
        let got = c.wg_peers(0)?;
        (!got.iter().any(|(key, _)| *key == places[gone].key))
            .then_some(())
            .ok_or(format!("wg show lists {got:?}"))
    })?;
    fig.add("node rm -> its peer gone at node 0", ms(rm.elapsed()));
    // The names before the reachability checks below, which wait out timeouts.
    let node1: BTreeSet<Ipv6Addr> = web.iter().filter(|r| r.node == 1).map(|r| r.ip).collect();
    poll("web answers only node 1's replica", || {
        let got = client.resolve("web")?;
        (got == node1)
            .then_some(())
            .ok_or(format!("web resolves to {got:?}, want {node1:?}"))
    })?;
    fig.add("node rm -> names without it", ms(rm.elapsed()));
    let url = format!("http://[{}]/", gone_replica.ip);
    if let Ok(answer) = client.fetch(&url) {
        return Err(failed(format!(
            "node 0 still reaches the removed node's replica at {url}: {answer:?}"
        )));
    }
    fig.add("removed node's replica from node 0", "unreachable");
    // The removed node is a non-member now: its own interface still lists node 0 and sends
    // it handshakes, which node 0's WireGuard ignores (no peer has its key).
    let pinged = c
        .net()
        .exec(gone, "busybox")
        .args([
            "ping",
            "-6",
            "-c",
            "3",
            "-W",
            "1",
            &places[0].overlay_ip.to_string(),
        ])
        .output()
        .map_err(|e| failed(format!("busybox ping: {e}")))?;
    if pinged.status.success() {
        return Err(failed(
            "the removed node still reaches node 0's overlay address through its tunnel",
        ));
    }
    let listed = c.wg_peers(0).map_err(failed)?;
    if listed.iter().any(|(key, _)| *key == places[gone].key) {
        return Err(failed("node 0's interface lists the removed node again"));
    }
    fig.add(
        "removed node's handshakes at node 0",
        "ignored (ping through its tunnel fails)",
    );

    // Node 1 cut off from node 0 (the removed node stays on node 1's side).
    c.partition(&[vec![0], (1..n).collect()])?;
    let cut = Instant::now();
    // No answer must not be a DNS that stopped: node 0's own name still resolves.
    let own_name = format!("{}.node.warren", c.nodes()[0].name);
    let waited = poll_for(
        DOWN_DEADLINE,
        "web answers node 0 with no replica, its DNS still up",
        || {
            let web = client.resolve("web")?;
            let own = client.resolve(&own_name)?;
            (web.is_empty() && own == BTreeSet::from([places[0].overlay_ip]))
                .then_some(())
                .ok_or(format!(
                    "web resolves to {web:?} (want none), {own_name} to {own:?} (want {})",
                    places[0].overlay_ip
                ))
        },
    );
    if let Err(e) = waited {
        let _ = c.heal();
        return Err(e);
    }
    fig.add(
        "partition -> web names no replica at node 0",
        ms(cut.elapsed()),
    );
    c.heal()?;
    let healed = Instant::now();
    poll("web answers node 1's replicas again after the heal", || {
        let got = client.resolve("web")?;
        got.iter()
            .any(|ip| places[1].subnet.contains(*ip))
            .then_some(())
            .ok_or(format!("web resolves to {got:?}"))
    })?;
    fig.add(
        "heal -> node 1's replicas named again",
        ms(healed.elapsed()),
    );

    bench(c, fig)?;
    Ok(())
}

/// `/96` block of a member, as `wg show` prints allowed IPs.
fn block(p: &Place) -> String {
    let a = u128::from(p.overlay_ip) & !0xffff_ffff;
    format!("{}/96", Ipv6Addr::from(a))
}

/// Node `i`'s published overlay record at node 0, checked against the rule.
fn place(c: &Cluster, i: usize) -> Result<Place, String> {
    let status = c.status(0).map_err(|e| e.to_string())?;
    let cluster = status["cluster"]["id"]
        .as_str()
        .ok_or("no cluster id yet")?
        .to_string();
    let m = c
        .cli_handle()
        .json(0, &["node", "inspect", &c.nodes()[i].name])
        .map_err(|e| e.to_string())?;
    if m["overlay_state"]["state"] != "on" {
        return Err(format!("node {i}'s overlay: {}", m["overlay_state"]));
    }
    let key = m["overlay"]["wg_public_key"]
        .as_str()
        .ok_or_else(|| format!("node {i} published no overlay record"))?;
    let public = WireguardPublic::from_base64(key).map_err(|e| e.to_string())?;
    let derived = addresses(&cluster, &public);
    Ok(Place {
        key: key.to_string(),
        overlay_ip: derived.overlay_ip,
        subnet: derived.container_subnet,
    })
}

/// `web`'s running replicas with an overlay address, from `service ps` at node 0.
fn running(c: &Cluster, places: &[Place]) -> Result<Vec<Replica>, String> {
    let ps = c
        .cli_handle()
        .json(0, &["service", "ps", "web"])
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for t in ps.as_array().map(Vec::as_slice).unwrap_or_default() {
        if t["state"] != "running" {
            continue;
        }
        let Some(ip) = t["overlay_ip"]
            .as_str()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
        else {
            continue;
        };
        let node = places
            .iter()
            .position(|p| p.subnet.contains(ip))
            .ok_or_else(|| format!("{ip} is in no member's subnet"))?;
        out.push(Replica {
            slot: t["slot"].as_u64().unwrap_or(0),
            node,
            container: t["container"].as_str().unwrap_or("").to_string(),
            ip,
        });
    }
    out.sort();
    Ok(out)
}

/// A one-off container on a node's overlay network, with the node's DNS (the resolver file
/// the node gives its tasks).
struct Client {
    /// The node's own engine (`docker -H`).
    socket: String,
    network: String,
    resolv_conf: String,
}

impl Client {
    fn new(c: &Cluster, i: usize) -> Result<Self, Error> {
        let socket = c
            .engine(i)
            .ok_or_else(|| failed(format!("node {i} has no engine of its own")))?
            .socket();
        let out = docker_at(
            &socket,
            &[
                "network",
                "ls",
                "-q",
                "--filter",
                "label=warren.network=overlay",
                "--format",
                "{{.Name}}",
            ],
        );
        let network = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if network.is_empty() || network.contains('\n') {
            return Err(failed(format!("node {i}'s overlay network: {network:?}")));
        }
        let resolv_conf = c.nodes()[i].data_dir.join("resolv.conf");
        if !resolv_conf.exists() {
            return Err(failed(format!(
                "node {i} wrote no resolver file for its tasks"
            )));
        }
        Ok(Self {
            socket,
            network,
            resolv_conf: format!("{}:/etc/resolv.conf:ro", resolv_conf.display()),
        })
    }

    /// `sh -c script` in a fresh container on the network: its output.
    fn run(&self, script: &str) -> Output {
        self.docker(&[
            "run",
            "--rm",
            "--network",
            &self.network,
            "-v",
            &self.resolv_conf,
            IMAGE,
            "sh",
            "-c",
            script,
        ])
    }

    /// `docker -H <the node's engine> args...`.
    fn docker(&self, args: &[&str]) -> Output {
        docker_at(&self.socket, args)
    }

    /// The IPv6 addresses `name` resolves to (busybox `nslookup` through Docker's resolver).
    fn resolve(&self, name: &str) -> Result<BTreeSet<Ipv6Addr>, String> {
        let out = self.run(&format!("nslookup -type=AAAA {name}"));
        Ok(warren_testkit::nslookup_addresses(
            &String::from_utf8_lossy(&out.stdout),
        ))
    }

    /// The body `url` answers, trimmed (a 5 s bound on the whole request).
    fn fetch(&self, url: &str) -> Result<String, Error> {
        // `; exit $?` keeps the shell as the container's init: alone, `sh -c` execs
        // `timeout`, which execs wget as pid 1, and pid 1 ignores the SIGTERM meant to end it.
        let out = self.run(&format!("timeout 5 wget -q -O - {url}; exit $?"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(failed(format!(
                "fetching {url} from node 0: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Throughput and request latency between a container on node 0 and one on node 1, over
/// the overlay and over the plain path; figures only.
fn bench(c: &Cluster, fig: &mut Figures) -> Result<(), Error> {
    let client = Client::new(c, 0)?;
    let server = Client::new(c, 1)?;
    let node1 = c.nodes()[1].addr.to_string();
    // A sink and a web page on node 1, on its overlay network, published on its address.
    let started = server.docker(&[
        "run",
        "-d",
        "--name",
        "bench-sink",
        "--network",
        &server.network,
        "-p",
        &format!("{node1}:8081:80"),
        IMAGE,
        "sh",
        "-c",
        &format!(
            "trap 'exit 0' TERM; mkdir -p /w && hostname > /w/hostname && \
             dd if=/dev/zero of=/w/big bs=1M count={BENCH_MIB} 2>/dev/null && \
             httpd -f -p 80 -h /w & wait"
        ),
    ]);
    if !started.status.success() {
        return Err(failed(format!(
            "bench sink on node 1: {}",
            String::from_utf8_lossy(&started.stderr).trim()
        )));
    }
    let inspect = server.docker(&["inspect", "bench-sink"]);
    let ip: Option<Ipv6Addr> = serde_json::from_slice::<Value>(&inspect.stdout)
        .ok()
        .and_then(|v| {
            v[0]["NetworkSettings"]["Networks"][&server.network]["GlobalIPv6Address"]
                .as_str()
                .and_then(|s| s.parse().ok())
        });
    let Some(ip) = ip else {
        return Err(failed("the bench sink has no overlay address"));
    };
    let paths = [
        ("overlay", format!("http://[{ip}]")),
        ("plain", format!("http://{node1}:8081")),
    ];
    let mut results = Vec::new();
    for (name, base) in &paths {
        // Everything in one container: its start is not timed. Busybox's `date` has no
        // `%N`: milliseconds from /proc/uptime (10 ms steps).
        let script = format!(
            "ms() {{ read u _ < /proc/uptime; echo $((${{u%.*}}*1000 + 1${{u#*.}}0 - 1000)); }}; \
             t0=$(ms); wget -q -O /dev/null {base}/big || exit 1; \
             t1=$(ms); i=0; while [ $i -lt {BENCH_REQUESTS} ]; do \
             wget -q -O /dev/null {base}/hostname || exit 1; i=$((i+1)); done; t2=$(ms); \
             echo $((t1-t0)) $((t2-t1))"
        );
        let out = client.run(&script);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let nums: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [send_ms, req_ms] = nums[..] else {
            return Err(failed(format!(
                "bench over the {name} path: {text:?} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        };
        let mib_s = BENCH_MIB as f64 / (send_ms.max(10.0) / 1e3);
        let req_ms = req_ms / BENCH_REQUESTS as f64;
        fig.add(
            format!("{name} path, node 0 -> node 1 containers"),
            format!("{mib_s:.0} MiB/s (a {BENCH_MIB} MiB download), {req_ms:.2} ms per HTTP request ({BENCH_REQUESTS})"),
        );
        results.push((mib_s, req_ms));
    }
    if let [(o_mib, o_ms), (p_mib, p_ms)] = results[..] {
        fig.add(
            "overlay / plain",
            format!(
                "throughput {:.2}×, request latency {:.2}×",
                o_mib / p_mib,
                o_ms / p_ms
            ),
        );
    }
    Ok(())
}

/// `docker -H socket args...`: its output, whatever its status (a failure to run `docker`
/// at all reads as a failed command).
fn docker_at(socket: &str, args: &[&str]) -> Output {
    std::process::Command::new("docker")
        .arg("-H")
        .arg(socket)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("cannot run docker: {e}").into_bytes(),
        })
}

/// Polls `check` for [`FOLLOW_DEADLINE`] without the cluster's liveness check (a removed or
/// cut-off node is expected to look dead); the error names the last failure.
fn poll<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> Result<T, Error> {
    poll_for(FOLLOW_DEADLINE, what, check)
}

fn poll_for<T>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, Error> {
    let mut last = String::new();
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(10);
    poll_until(deadline, POLL, || match check() {
        Ok(v) => Some(v),
        Err(e) => {
            if Instant::now() >= next_report {
                eprintln!("{what}: still waiting after {:.0?}: {e}", start.elapsed());
                next_report += Duration::from_secs(10);
            }
            last = e;
            None
        }
    })
    .ok_or_else(|| failed(format!("{what}: not within {deadline:?}; last: {last}")))
}

/// [`Cluster::wait_for`] over [`FOLLOW_DEADLINE`].
fn wait<T>(
    c: &mut Cluster,
    what: &str,
    check: impl FnMut(&mut Cluster) -> Result<T, String>,
) -> Result<T, Error> {
    c.wait_for(what, FOLLOW_DEADLINE, check)
}
