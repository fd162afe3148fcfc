//! Scripted scenarios on a fresh cluster: up → run → verdict → down.
//!
//! Each scenario builds its own [`Cluster`] in a fresh state dir, drives it, measures, and
//! always tears it down (nodes, containers, rules, links, namespaces), pass or fail. Every
//! wait polls against a deadline; every loop is bounded in count and time. A failed verdict
//! carries the reason, the fault log, the node logs' tails and the command that replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use warren_testkit::{docker, IMAGE, WEB_COMMAND};

use warren_core::invariants;

use crate::cluster::{
    self, lease, lease_seen, liveness, Bins, CliHandle, Cluster, Container, Error, FaultRecord,
    Formed, UpOptions,
};
use crate::measure::{self, LivenessWatch};

/// Pause between two writes of `convergence` (their propagation overlaps; writing flat out
/// would measure a burst, not one change at a time).
const WRITE_GAP: Duration = Duration::from_millis(200);
/// Time every node gets, after the last write, to have applied every write.
const COLLECT_DEADLINE: Duration = Duration::from_secs(60);
/// Period of the liveness samples (`GET /v1/status` at every node) during `convergence`.
const LIVENESS_PERIOD: Duration = Duration::from_secs(3);
/// Quiet before the idle window of `convergence`: no write and no read, so that no node is
/// still asking its members for reports (a read of `/v1/status` makes it ask for
/// [`WANT_MS`](warren_core::machine::WANT_MS)).
const IDLE_QUIET: Duration = Duration::from_millis(warren_core::machine::WANT_MS + 5_000);
const SPLIT_SERVICES: [&str; 5] = ["sb", "sb2", "sb-still", "left-svc", "right-svc"];
/// The service of `split-brain` that no write touches during the split.
const STILL: &str = "sb-still";
/// Period of the engine samples that look for zero-replica windows.
const SAMPLE_PERIOD: Duration = Duration::from_millis(150);
/// Time the gradual rebalance gets, after settling, to bring the spread to max − min ≤ 1.
const SPREAD_DEADLINE: Duration = Duration::from_secs(60);
const PLACE_DEADLINE: Duration = Duration::from_secs(60);
const LEASE_DEADLINE: Duration = Duration::from_secs(30);
const HEAL_DEADLINE: Duration = Duration::from_secs(180);
const REJOIN_DEADLINE: Duration = Duration::from_secs(60);
const SETTLE_DEADLINE: Duration = Duration::from_secs(180);

/// A scripted scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// `writes` writes, at node `k mod N` for write `k`; from each node's record of when it
    /// applied each change (`GET /v1/debug/applied`), the time from a write's apply at its
    /// origin to its apply at the last node. Then each node's CPU over `idle` with no write,
    /// and its resident memory.
    Convergence {
        /// How many writes.
        writes: usize,
        /// The idle window over which CPU is measured (after a minute without reads); zero
        /// for none.
        idle: Duration,
    },
    /// SIGKILL the lease holder; time until a new holder has its tasks running elsewhere.
    /// Repeated `kills` times (the killed node restarted and the cluster settled in between);
    /// p50, p99 and the worst of the times are reported.
    Failover {
        /// How many holders to kill, one after another.
        kills: u32,
    },
    /// Partition {0,1} / {2..}, writes and service changes on both sides, heal; time until one
    /// document, one leader, right replica counts; containers stopped and started by the heal.
    SplitBrain,
    /// Isolate a node: its containers keep running, a killed one is restarted locally, and it
    /// rejoins without duplicates.
    Autonomy,
    /// Isolate a member, kill its process and remove its containers (a reboot), restart it with
    /// no peer reachable: time until its tasks run again, a `docker kill` restarted by
    /// `--restart always`, writes at it while isolated merged at the heal.
    OfflineReboot,
    /// Containers on different nodes, each node with its own engine, talk over the WireGuard
    /// overlay and find each other by name; `node rm`, a partition and its heal change the
    /// answers (see `overlay.rs`).
    Overlay,
    /// Random faults while a writer writes at random peers; nothing acknowledged is lost.
    Chaos {
        /// How long faults and writes go on.
        duration: Duration,
        /// Seed of the fault schedule and the writer's choices.
        seed: u64,
    },
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Convergence { .. } => "convergence",
            Self::Failover { .. } => "failover",
            Self::SplitBrain => "split-brain",
            Self::Autonomy => "autonomy",
            Self::OfflineReboot => "offline-reboot",
            Self::Overlay => "overlay",
            Self::Chaos { .. } => "chaos",
        }
    }

    /// The smallest number of nodes it needs.
    pub fn min_nodes(&self) -> usize {
        match self {
            Self::Convergence { .. } => 2,
            Self::Failover { .. } | Self::Autonomy | Self::OfflineReboot | Self::Overlay => 3,
            Self::SplitBrain => 5,
            Self::Chaos { .. } => 3,
        }
    }

    /// The `warren-testnet` command that runs it again.
    pub fn replay_command(&self, nodes: usize) -> String {
        let extra = match self {
            Self::Convergence { writes, idle } => {
                format!(" --writes {writes} --idle {}s", idle.as_secs())
            }
            Self::Chaos { duration, seed } => {
                format!(" --duration {}s --seed {seed}", duration.as_secs())
            }
            Self::Failover { kills } if *kills != 1 => format!(" --kills {kills}"),
            _ => String::new(),
        };
        format!(
            "warren-testnet scenario {} --nodes {nodes}{extra}",
            self.name()
        )
    }
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// The binaries.
    pub bins: Bins,
    /// Parent of the run's state dir; a fresh temporary dir when `None`.
    pub state_dir: Option<PathBuf>,
}

/// What a scenario found.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The scenario's name.
    pub scenario: String,
    /// Whether every check held.
    pub passed: bool,
    /// Why not.
    pub failure: Option<String>,
    /// Measured figures, in order.
    pub figures: Vec<(String, String)>,
    /// A table of figures per node, if the scenario makes one (printed after the figures).
    pub table: Option<String>,
    /// The fault log.
    pub faults: Vec<FaultRecord>,
    /// The command that replays it.
    pub replay: String,
    /// Wall time of the whole run, setup and teardown included.
    pub elapsed: Duration,
    /// On failure: the node logs' tails.
    pub logs: Option<String>,
    /// On failure: where the logs were kept.
    pub kept_dir: Option<PathBuf>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {}: {} in {:.1} s",
            self.scenario,
            if self.passed { "PASS" } else { "FAIL" },
            self.elapsed.as_secs_f64()
        )?;
        let width = self.figures.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.figures {
            writeln!(f, "  {k:<width$}  {v}")?;
        }
        if let Some(table) = &self.table {
            write!(f, "{table}")?;
        }
        if let Some(failure) = &self.failure {
            writeln!(f, "FAILURE: {failure}")?;
            writeln!(f, "replay: {}", self.replay)?;
            writeln!(f, "fault log ({} faults):", self.faults.len())?;
            for fault in &self.faults {
                writeln!(f, "  {fault}")?;
            }
            if let Some(dir) = &self.kept_dir {
                writeln!(f, "logs kept in {}", dir.display())?;
            }
            if let Some(logs) = &self.logs {
                writeln!(f, "{logs}")?;
            }
        } else if !self.faults.is_empty() {
            writeln!(f, "  replay: {}", self.replay)?;
        }
        Ok(())
    }
}

/// Figures a scenario records as it goes.
#[derive(Debug, Default)]
pub(crate) struct Figures(Vec<(String, String)>, Option<String>);

impl Figures {
    pub(crate) fn add(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), value.into()));
    }
}

/// Runs `scenario` on a fresh cluster and tears it down, whatever happens.
pub fn run(scenario: &Scenario, opts: &ScenarioOptions) -> Verdict {
    let started = Instant::now();
    let mut verdict = Verdict {
        scenario: scenario.name().to_string(),
        passed: false,
        failure: None,
        figures: Vec::new(),
        table: None,
        faults: Vec::new(),
        replay: scenario.replay_command(opts.nodes),
        elapsed: Duration::ZERO,
        logs: None,
        kept_dir: None,
    };
    if opts.nodes < scenario.min_nodes() {
        verdict.failure = Some(format!(
            "{} needs at least {} nodes",
            scenario.name(),
            scenario.min_nodes()
        ));
        return verdict;
    }
    if !crate::is_root() {
        verdict.failure = Some(
            "warren-testnet must run as root (network namespaces, links, iptables); \
             run it with sudo or as root"
                .to_string(),
        );
        return verdict;
    }
    let prefix = format!("warren-testnet-{}-", scenario.name());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    let tmp = match &opts.state_dir {
        Some(parent) => std::fs::create_dir_all(parent).and_then(|()| builder.tempdir_in(parent)),
        None => builder.tempdir(),
    };
    let tmp = match tmp {
        Ok(tmp) => tmp,
        Err(e) => {
            verdict.failure = Some(format!("cannot create a state dir: {e}"));
            return verdict;
        }
    };
    let mut up = UpOptions::new(opts.nodes, tmp.path(), opts.bins.clone());
    up.cluster = format!("wt-{}", scenario.name());
    if let Scenario::Convergence { .. } = scenario {
        // It measures how changes spread in the cluster as it is, and counts the flaps.
        up.formed = Formed::Members;
    }
    up.own_engines = matches!(scenario, Scenario::Overlay);
    let mut figures = Figures::default();
    let mut failure = None;
    match Cluster::up(up) {
        Err(e) => failure = Some(format!("cannot bring the cluster up: {e}")),
        Ok(mut c) => {
            figures.add("nodes", c.len().to_string());
            let result = match scenario {
                Scenario::Convergence { writes, idle } => {
                    convergence(&mut c, *writes, *idle, &mut figures)
                }
                Scenario::Failover { kills } => failover(&mut c, *kills, &mut figures),
                Scenario::SplitBrain => split_brain(&mut c, &mut figures),
                Scenario::Autonomy => autonomy(&mut c, &mut figures),
                Scenario::OfflineReboot => offline_reboot(&mut c, &mut figures),
                Scenario::Overlay => crate::overlay::overlay(&mut c, &mut figures),
                Scenario::Chaos { duration, seed } => chaos(&mut c, *duration, *seed, &mut figures),
            };
            verdict.faults = c.faults().to_vec();
            if let Err(e) = result {
                failure = Some(e.to_string());
                verdict.logs = Some(c.log_tails(30));
            }
            if let Err(e) = c.down() {
                failure.get_or_insert(format!("teardown failed: {e}"));
            }
        }
    }
    verdict.figures = figures.0;
    verdict.table = figures.1;
    verdict.passed = failure.is_none();
    verdict.failure = failure;
    // On failure, or when asked (`WARREN_TESTNET_KEEP=1`: to read a passing run's node logs).
    if !verdict.passed || std::env::var_os("WARREN_TESTNET_KEEP").is_some() {
        verdict.kept_dir = Some(tmp.keep());
    }
    verdict.elapsed = started.elapsed();
    verdict
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn failed(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

fn create(
    h: &CliHandle,
    at: usize,
    name: &str,
    replicas: u32,
    httpd: bool,
) -> Result<String, Error> {
    let replicas = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        name,
        "--image",
        IMAGE,
        "--replicas",
        &replicas,
    ];
    if httpd {
        args.push("--");
        args.extend(WEB_COMMAND);
    }
    h.run(at, &args)
}

/// The tasks of `service` as node `at` reports them: (node peer id, state).
fn tasks(h: &CliHandle, at: usize, service: &str) -> Result<Vec<(String, String)>, String> {
    let ps = h
        .json(at, &["service", "ps", service])
        .map_err(|e| e.to_string())?;
    Ok(ps
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let field = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (field("node"), field("state"))
        })
        .collect())
}

/// Ok when every service node `at` knows has all its tasks running on nodes of `group`.
fn check_group_running(c: &Cluster, at: usize, group: &[usize]) -> Result<(), String> {
    let h = c.cli_handle();
    let peers: BTreeSet<&str> = group.iter().map(|&i| c.peer(i)).collect();
    for (service, replicas) in c.services(at).map_err(|e| e.to_string())? {
        let tasks = tasks(&h, at, &service)?;
        let ok = tasks
            .iter()
            .filter(|(node, state)| peers.contains(node.as_str()) && state == "running")
            .count();
        if ok as u64 != replicas || tasks.len() as u64 != replicas {
            return Err(format!(
                "node {at}: {service}: {ok} of {replicas} running in {group:?}: {tasks:?}"
            ));
        }
    }
    Ok(())
}

/// Ok when the nodes of `group` see every other node down and hold one lease among them
/// (invariant 3, [`warren_core::invariants::one_lease`]).
fn check_side(c: &Cluster, group: &[usize]) -> Result<(), String> {
    let mut leases = Vec::new();
    for &i in group {
        let status = c.status(i).map_err(|e| e.to_string())?;
        for j in (0..c.len()).filter(|j| !group.contains(j)) {
            let live = liveness(&status, c.peer(j));
            if live != Some("down") {
                return Err(format!("node {i} sees node {j} {live:?}"));
            }
        }
        leases.push(lease_seen(i, c.peer(i), &status));
    }
    invariants::one_lease(&leases)
        .map(drop)
        .map_err(|e| format!("{group:?}: {e}"))
}

/// Names of acknowledged writes missing at some node: (name, nodes where it is missing).
fn missing_writes(c: &Cluster, acked: &[String]) -> Result<Vec<(String, Vec<usize>)>, Error> {
    let mut missing: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..c.len() {
        let known = c.services(i)?;
        for name in acked {
            if !known.contains_key(name) {
                missing.entry(name.clone()).or_default().push(i);
            }
        }
    }
    Ok(missing.into_iter().collect())
}

fn running_ids(c: &Cluster) -> Result<BTreeSet<String>, Error> {
    Ok(c.containers()?
        .into_iter()
        .filter(|c| c.state == "running")
        .map(|c| c.id)
        .collect())
}

fn all(c: &Cluster) -> Vec<usize> {
    (0..c.len()).collect()
}

// ----- convergence -----

fn convergence(
    c: &mut Cluster,
    writes: usize,
    idle: Duration,
    fig: &mut Figures,
) -> Result<(), Error> {
    let n = c.len();
    let peers: Vec<String> = (0..n).map(|i| c.peer(i).to_string()).collect();
    let pids: Vec<u32> = c
        .nodes()
        .iter()
        .map(|node| {
            node.pid
                .ok_or_else(|| failed(format!("{} has no pid", node.name)))
        })
        .collect::<Result<_, _>>()?;
    // `ip netns exec` execs the node: its pid is warren-node's own.
    if let Some((i, name)) = pids.iter().enumerate().find_map(|(i, &p)| {
        measure::comm(p)
            .filter(|c| c != "warren-node")
            .map(|c| (i, c))
    }) {
        return Err(failed(format!(
            "node {i}'s pid runs `{name}`, not warren-node"
        )));
    }
    let watch = LivenessWatch::start(
        c.cli_handle(),
        peers,
        LIVENESS_PERIOD,
        Duration::from_secs(1_800),
    );
    let spread = spread(c, writes, fig);
    let seen = watch.stop();
    let (suspect, down) = seen.pairs_not_alive();
    fig.add(
        "liveness during the writes (every node's /v1/status every 3 s)",
        format!(
            "{} rounds; {} alive -> suspect/down transitions; ordered pairs ever suspect \
             {suspect}, ever down {down} (of {}); {} unanswered",
            seen.rounds,
            seen.flaps(),
            n * (n - 1),
            seen.failed
        ),
    );
    for (i, j, p) in seen.worst(5) {
        fig.add(
            format!("  n{i} saw n{j}"),
            format!(
                "{} flaps, suspect in {} samples, down in {}",
                p.flaps, p.suspect, p.down
            ),
        );
    }
    let spread = spread?;

    // Idle: no write and no read for a minute (a status read makes a node ask every member
    // for reports for WANT_MS), then CPU over the window, then memory. No window: no CPU.
    let cpu = if idle.is_zero() {
        vec![None; n]
    } else {
        c.log(format_args!(
            "idle: {} s without reads, then CPU over {} s",
            IDLE_QUIET.as_secs(),
            idle.as_secs()
        ));
        std::thread::sleep(IDLE_QUIET);
        measure::cpu_percent(&pids, idle)
    };
    let rss: Vec<Option<u64>> = pids.iter().map(|&p| measure::rss_kib(p)).collect();
    if let Some(i) = (0..n).find(|&i| rss[i].is_none()) {
        c.check_running(i)?;
    }
    // Liveness at the end of the idle window, one look.
    let after: Vec<String> = c
        .statuses(&all(c))
        .into_iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let s = s.ok();
            (0..n)
                .filter(|&j| j != i)
                .filter_map(|j| {
                    let live = s.as_ref().and_then(|s| liveness(s, c.peer(j)));
                    (live != Some("alive")).then(|| format!("n{i} sees n{j} {live:?}"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    fig.add(
        "liveness after the idle window",
        if after.is_empty() {
            "every node sees every other alive".to_string()
        } else {
            format!("{} pairs not alive: {}", after.len(), after.join(", "))
        },
    );

    let mut table = format!(
        "  {:<5} {:>8} {:>9} {:>9} {:>7} {:>6} {:>6} {:>10} {:>9}\n",
        "node", "pid", "lag p50", "lag max", "gossip", "sync", "other", "idle CPU", "RSS"
    );
    for i in 0..n {
        let row = &spread.nodes[i];
        table.push_str(&format!(
            "  {:<5} {:>8} {:>9} {:>9} {:>7} {:>6} {:>6} {:>10} {:>9}\n",
            format!("n{i}"),
            pids[i],
            ms(percentile(&row.lag, 50.0)),
            ms(percentile(&row.lag, 100.0)),
            row.via[0],
            row.via[1],
            row.via[2],
            cpu[i].map_or("-".to_string(), |p| format!("{p:.1} %")),
            rss[i].map_or("gone".to_string(), |k| format!("{} MiB", k / 1024)),
        ));
    }
    let mut cpus: Vec<f64> = cpu.iter().flatten().copied().collect();
    cpus.sort_by(f64::total_cmp);
    let mut rsss: Vec<u64> = rss.iter().flatten().copied().collect();
    rsss.sort_unstable();
    let mid_cpu = cpus.get(cpus.len() / 2).copied().unwrap_or_default();
    let max_cpu = cpus.last().copied().unwrap_or_default();
    let mid_rss = rsss.get(rsss.len() / 2).copied().unwrap_or_default() / 1024;
    let max_rss = rsss.last().copied().unwrap_or_default() / 1024;
    let cpu_line = if cpus.is_empty() {
        "not measured (--idle 0s)".to_string()
    } else {
        format!("median {mid_cpu:.1} % (max {max_cpu:.1} %) of one core")
    };
    fig.add(
        format!("idle CPU per node over {} s", idle.as_secs()),
        if cpus.is_empty() {
            cpu_line.clone()
        } else {
            format!(
                "{cpu_line}; all nodes together {:.1} %",
                cpus.iter().sum::<f64>()
            )
        },
    );
    fig.add(
        "RSS per node",
        format!("median {mid_rss} MiB, max {max_rss} MiB"),
    );
    let [p50, p99, max] = spread.to_last;
    fig.add(
        "summary",
        format!(
            "{n} nodes, {writes} changes: applied at origin -> at the last node p50 {}, p99 {}, \
             max {}; idle CPU {cpu_line}; RSS median {mid_rss} MiB (max {max_rss} MiB); {} \
             liveness flaps during the writes",
            ms(p50),
            ms(p99),
            ms(max),
            seen.flaps()
        ),
    );
    fig.1 = Some(table);
    Ok(())
}

/// How the writes of `convergence` spread.
struct Spread {
    /// Origin apply -> last node apply, over the changes: p50, p99, max.
    to_last: [Duration; 3],
    /// Per node.
    nodes: Vec<NodeSpread>,
}

/// How the writes reached one node.
struct NodeSpread {
    /// Its apply minus the origin's, for each write it did not make, sorted.
    lag: Vec<Duration>,
    /// How those came: gossip, sync, other.
    via: [usize; 3],
}

/// One write of `convergence`: its service, the node it was written at and the wall clock
/// (Unix ms) just before it was sent.
struct Written {
    name: String,
    origin: usize,
    sent_ms: i64,
}

/// The writes of `convergence`, then the nodes' records of them.
fn spread(c: &mut Cluster, writes: usize, fig: &mut Figures) -> Result<Spread, Error> {
    let h = c.cli_handle();
    let n = c.len();
    let since_ms = cluster::wall_ms();
    let mut written = Vec::with_capacity(writes);
    let mut write_calls = Vec::with_capacity(writes);
    for k in 0..writes {
        let origin = k % n;
        let name = format!("conv-{k}");
        let sent_ms = cluster::wall_ms();
        let t = Instant::now();
        create(&h, origin, &name, 0, false)?;
        write_calls.push(t.elapsed());
        written.push(Written {
            name,
            origin,
            sent_ms,
        });
        std::thread::sleep(WRITE_GAP);
    }
    // Every node's record, once it holds every write (the times come from the records; this
    // wait only decides when to read them).
    let (records, lags) = c.wait_for(
        "every write in every node's applied record",
        COLLECT_DEADLINE,
        |c| {
            let records = h
                .applied_all(&all(c), since_ms)
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let lags = apply_times(c, &written, &records)?;
            Ok((records, lags))
        },
    )?;
    let mut to_last: Vec<Duration> = lags
        .iter()
        .map(|(_, row)| row.iter().copied().max().unwrap_or_default())
        .collect();
    to_last.sort_unstable();
    write_calls.sort_unstable();
    let to_last = [
        percentile(&to_last, 50.0),
        percentile(&to_last, 99.0),
        percentile(&to_last, 100.0),
    ];
    fig.add(
        "writes",
        format!(
            "{writes} `service create conv-k --replicas 0`, write k at node k mod {n}, one every \
             {} ms",
            WRITE_GAP.as_millis()
        ),
    );
    fig.add(
        "applied at origin -> applied at the last node",
        format!(
            "p50 {}, p99 {}, max {}",
            ms(to_last[0]),
            ms(to_last[1]),
            ms(to_last[2])
        ),
    );
    fig.add(
        "write acknowledged (one warren-cli call, median)",
        ms(percentile(&write_calls, 50.0)),
    );
    let nodes = (0..n)
        .map(|i| {
            let mut lag = Vec::new();
            let mut via = [0; 3];
            for ((hash, row), w) in lags.iter().zip(&written) {
                if w.origin == i {
                    continue;
                }
                lag.push(row[i]);
                let how = records[i].iter().find(|e| &e.hash == hash);
                match how.map(|e| e.via.as_str()) {
                    Some("gossip") => via[0] += 1,
                    Some("sync") => via[1] += 1,
                    _ => via[2] += 1,
                }
            }
            lag.sort_unstable();
            NodeSpread { lag, via }
        })
        .collect();
    // The same heads everywhere (liveness is not judged here: the flaps are counted).
    let status = c.wait_for("one document everywhere", COLLECT_DEADLINE, |c| {
        let statuses = c
            .statuses(&all(c))
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let heads = |s: &Value| s.get("heads").cloned().unwrap_or(Value::Null);
        match statuses
            .iter()
            .position(|s| heads(s) != heads(&statuses[0]))
        {
            Some(i) => Err(format!("node {i}'s heads differ from node 0's")),
            None => Ok(statuses.into_iter().next()),
        }
    })?;
    let holder = status
        .as_ref()
        .and_then(lease)
        .map_or("none".to_string(), |l| {
            format!("{} epoch {}", l.holder, l.epoch)
        });
    fig.add("lease holder (at node 0)", holder);
    // The mesh logs each connection it drops to reconnect afresh (a member it does not know
    // as subscribed, or a second connection): churn that costs gossip and SWIM messages.
    let reconnects: usize = c
        .nodes()
        .iter()
        .map(|node| {
            std::fs::read_to_string(&node.log)
                .map(|log| log.matches("reconnecting afresh").count())
                .unwrap_or(0)
        })
        .sum();
    fig.add(
        "mesh reconnects so far (\"reconnecting afresh\" in the node logs)",
        format!("{reconnects} over {} nodes", c.len()),
    );
    Ok(Spread { to_last, nodes })
}

/// For each write, its change's hash and each node's apply time minus the apply time at its
/// origin (zero at the origin), from the nodes' records. An error names what is missing (the caller waits for it)
/// or what is wrong: a write applied at its origin before it was sent, or at a node before
/// its origin.
fn apply_times(
    c: &Cluster,
    written: &[Written],
    records: &[Vec<cluster::Applied>],
) -> Result<Vec<(String, Vec<Duration>)>, String> {
    let mut lags = Vec::with_capacity(written.len());
    for w in written {
        let message = format!("service create {}", w.name);
        let origin = records[w.origin]
            .iter()
            .find(|e| e.message == message && e.author.as_deref() == Some(c.peer(w.origin)))
            .ok_or_else(|| format!("node {} has no record of its write {}", w.origin, w.name))?;
        if origin.via != "local" {
            return Err(format!(
                "node {} recorded its own write {} as via {}",
                w.origin, w.name, origin.via
            ));
        }
        if origin.at_ms < w.sent_ms {
            return Err(format!(
                "node {} applied {} at {} ms, before it was sent ({} ms)",
                w.origin, w.name, origin.at_ms, w.sent_ms
            ));
        }
        let mut row = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let e = record
                .iter()
                .find(|e| e.hash == origin.hash)
                .ok_or_else(|| format!("node {i} has not applied {} yet", w.name))?;
            let lag = e.at_ms - origin.at_ms;
            if lag < 0 {
                return Err(format!(
                    "node {i} applied {} {} ms before its origin (node {})",
                    w.name, -lag, w.origin
                ));
            }
            row.push(Duration::from_millis(lag as u64));
        }
        lags.push((origin.hash.clone(), row));
    }
    Ok(lags)
}

// ----- failover -----

fn failover(c: &mut Cluster, kills: u32, fig: &mut Figures) -> Result<(), Error> {
    let h = c.cli_handle();
    let n = c.len();
    let replicas = 2 * n;
    create(&h, 0, "fo", replicas as u32, true)?;
    c.wait_for("fo placed and running", PLACE_DEADLINE, |c| {
        c.check_replicas(0, &["fo"])
    })?;
    let (mut to_lease, mut to_running) = (Vec::new(), Vec::new());
    for round in 1..=kills.max(1) {
        let (lease_ms, running_ms) = kill_the_holder(c, replicas, round, fig)?;
        to_lease.push(lease_ms);
        to_running.push(running_ms);
    }
    to_lease.sort();
    to_running.sort();
    let spread = |v: &[Duration]| {
        format!(
            "p50 {}, p99 {}, worst {} ({} kill(s))",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(percentile(v, 100.0)),
            v.len()
        )
    };
    fig.add("kill -> new lease holder", spread(&to_lease));
    fig.add(
        "kill -> its tasks running elsewhere (engine, 50 ms samples)",
        spread(&to_running),
    );
    Ok(())
}

/// One failover: SIGKILL the lease holder; wait for a new holder (seen by `warren-cli` at a
/// live node) and for every slot of `fo` running on a live node (seen in the engine, sampled
/// every 50 ms: the figure is when it first held, not when a poll noticed). Then the old
/// holder restarts and the cluster settles (one document, exact replicas, its orphans
/// removed) before the next round.
fn kill_the_holder(
    c: &mut Cluster,
    replicas: usize,
    round: u32,
    fig: &mut Figures,
) -> Result<(Duration, Duration), Error> {
    let n = c.len();
    let before = lease(&c.status(0)?).ok_or_else(|| failed("no lease before the kill"))?;
    let holder = c
        .index_of_peer(&before.holder)
        .ok_or_else(|| failed(format!("lease held by a stranger: {before:?}")))?;
    let held: Vec<u32> = c
        .containers()?
        .iter()
        .filter(|x| x.node == holder && x.state == "running")
        .map(|x| x.slot)
        .collect();
    fig.add(
        format!("kill {round}: lease holder killed"),
        format!(
            "node {holder}, epoch {}, running slots {held:?}",
            before.epoch
        ),
    );
    let other = (holder + 1) % n;
    let sampler = c.sample_containers(Duration::from_millis(50), LEASE_DEADLINE * 2);
    c.kill(holder)?;
    let killed = Instant::now();
    let new = c.wait_for("a new lease holder", LEASE_DEADLINE, |c| {
        let l = lease(&c.status(other).map_err(|e| e.to_string())?).ok_or("no lease")?;
        if l.holder != before.holder && l.epoch > before.epoch {
            Ok(l)
        } else {
            Err(format!("lease {l:?}"))
        }
    })?;
    let t_lease = killed.elapsed();
    let all_elsewhere = |containers: &[Container]| {
        let slots: BTreeSet<u32> = containers
            .iter()
            .filter(|x| x.service == "fo" && x.node != holder && x.state == "running")
            .map(|x| x.slot)
            .collect();
        slots.len() == replicas && slots.iter().all(|s| (*s as usize) < replicas)
    };
    c.wait_for("fo re-placed and running elsewhere", LEASE_DEADLINE, |c| {
        let containers = c.containers().map_err(|e| e.to_string())?;
        if all_elsewhere(&containers) {
            Ok(())
        } else {
            Err(format!("{containers:?}"))
        }
    })?;
    let samples = sampler.stop();
    let t_running = samples
        .iter()
        .filter(|(at, _)| *at >= killed)
        .find(|(_, out)| all_elsewhere(&c.parse_containers(out)))
        .map_or_else(|| killed.elapsed(), |(at, _)| at.duration_since(killed));
    fig.add(
        format!("kill {round}: new holder"),
        format!(
            "node {:?}, epoch {}: lease after {}, tasks running after {}",
            c.index_of_peer(&new.holder),
            new.epoch,
            ms(t_lease),
            ms(t_running)
        ),
    );
    c.restart(holder)?;
    let back = Instant::now();
    c.wait_for(
        "one document and exact replicas after the restart",
        REJOIN_DEADLINE,
        |c| {
            c.check_converged(&all(c))?;
            c.check_replicas(0, &["fo"])
        },
    )?;
    fig.add(
        format!("kill {round}: restart of the old holder -> one document, its orphans removed"),
        ms(back.elapsed()),
    );
    Ok((t_lease, t_running))
}

// ----- split-brain -----

fn split_brain(c: &mut Cluster, fig: &mut Figures) -> Result<(), Error> {
    let h = c.cli_handle();
    let n = c.len();
    create(&h, 0, "sb", n as u32, true)?;
    create(&h, 0, "sb2", 2, true)?;
    create(&h, 0, STILL, 3, true)?;
    c.wait_for("services placed and running", PLACE_DEADLINE, |c| {
        c.check_replicas(0, &["sb", "sb2", STILL])
    })?;
    let a: Vec<usize> = vec![0, 1];
    let b: Vec<usize> = (2..n).collect();
    c.partition(&[a.clone(), b.clone()])?;
    let cut = Instant::now();
    c.wait_for("a lease on each side", LEASE_DEADLINE, |c| {
        check_side(c, &a)?;
        check_side(c, &b)
    })?;
    fig.add("partition -> a lease on each side", ms(cut.elapsed()));
    let mut acked = Vec::new();
    for k in 0..10 {
        let left = format!("left-{k}");
        create(&h, a[k % a.len()], &left, 0, false)?;
        acked.push(left);
        let right = format!("right-{k}");
        create(&h, b[k % b.len()], &right, 0, false)?;
        acked.push(right);
    }
    let mut scales = Vec::new();
    for (at, service, value) in [
        (a[0], "sb", 3),
        (b[0], "sb", n as u64 + 1),
        (b[1], "sb2", 3),
    ] {
        h.run(at, &["service", "scale", service, &value.to_string()])?;
        scales.push(ScaleWrite {
            service: service.to_string(),
            node: at,
            value,
            acked: true,
        });
    }
    create(&h, a[1], "left-svc", 1, true)?;
    create(&h, b[2 % b.len()], "right-svc", 1, true)?;
    acked.push("left-svc".into());
    acked.push("right-svc".into());
    fig.add(
        "writes acknowledged during the split",
        acked.len().to_string(),
    );
    c.wait_for("each side running its own view", PLACE_DEADLINE, |c| {
        check_group_running(c, a[0], &a)?;
        check_group_running(c, b[0], &b)
    })?;
    // The containers at the moment of the heal, and the engine sampled from just before it
    // until the spread is restored.
    let sampler = c.sample_containers(SAMPLE_PERIOD, HEAL_DEADLINE + SPREAD_DEADLINE);
    let at_heal = c.containers()?;
    let before: BTreeSet<String> = running(&at_heal).map(|x| x.id.clone()).collect();
    fig.add("containers running at the heal", before.len().to_string());
    c.heal()?;
    let healed = Instant::now();
    let nodes = all(c);
    let mut one_doc = None;
    let mut one_leader = None;
    let mut replicas = None;
    let settled = c.wait_for(
        "one document, one leader, right replicas",
        HEAL_DEADLINE,
        |c| {
            let mut heads = Vec::new();
            let mut leases = BTreeSet::new();
            for &i in &nodes {
                let s = c.status(i).map_err(|e| e.to_string())?;
                heads.push(s.get("heads").cloned().unwrap_or(Value::Null));
                if let Some(l) = lease(&s) {
                    leases.insert((l.holder, l.epoch));
                }
            }
            if one_doc.is_none() && heads.iter().all(|x| *x == heads[0]) {
                one_doc = Some(healed.elapsed());
            }
            if one_leader.is_none() && leases.len() == 1 {
                one_leader = Some(healed.elapsed());
            }
            if replicas.is_none() && c.check_replicas(0, &SPLIT_SERVICES).is_ok() {
                replicas = Some(healed.elapsed());
            }
            c.check_converged(&nodes)?;
            c.check_replicas(0, &SPLIT_SERVICES)
        },
    );
    let settled = match settled {
        Ok(()) => healed.elapsed(),
        Err(e) => {
            let _ = sampler.stop();
            return Err(e);
        }
    };
    // What the heal itself did: judged once the counts are right, before any rebalance move.
    let after = running_ids(c)?;
    let services = c.services(0)?;
    let spread = c.wait_for("spread restored", SPREAD_DEADLINE, |c| check_spread(c, 0));
    let spread_at = spread.as_ref().ok().map(|()| healed.elapsed());
    let samples = sampler.stop();
    let show = |d: Option<Duration>| d.map_or("-".to_string(), ms);
    fig.add("heal -> one document (equal heads)", show(one_doc));
    fig.add("heal -> one leader", show(one_leader));
    fig.add("heal -> right replica counts", show(replicas));
    fig.add("heal -> all of it at once", ms(settled));
    fig.add("heal -> spread restored (max - min <= 1)", show(spread_at));
    let parsed: Vec<Vec<Container>> = samples
        .iter()
        .map(|(_, out)| c.parse_containers(out))
        .collect();
    let judged = judge_heal(&at_heal, &after, &services, &parsed);
    fig.add("duplicates at the heal", judged.duplicates.to_string());
    fig.add(
        "slots beyond the merged counts at the heal",
        judged.surplus.to_string(),
    );
    fig.add("slots missing at the heal", judged.missing.to_string());
    fig.add("containers stopped by the heal", judged.stops.to_string());
    fig.add("containers started by the heal", judged.starts.to_string());
    fig.add(
        "stopped / started, unchanged service sb-still",
        format!(
            "{} / {} (duplicates {})",
            judged.still_stops, judged.still_starts, judged.still_duplicates
        ),
    );
    fig.add(
        "engine samples after the heal",
        format!("{} (every {})", samples.len(), ms(SAMPLE_PERIOD)),
    );
    fig.add(
        "zero-replica windows",
        format!("{} {:?}", judged.zero_windows.len(), judged.zero_windows),
    );
    fig.add(
        "replicas after merge (sb, sb2)",
        format!("{:?}, {:?}", services.get("sb"), services.get("sb2")),
    );
    let mut failures = judged.failures;
    if let Err(e) = spread {
        failures.push(format!("spread not restored: {e}"));
    }
    let missing = missing_writes(c, &acked)?;
    fig.add("acknowledged writes lost", missing.len().to_string());
    if !missing.is_empty() {
        failures.push(format!("acknowledged writes lost: {missing:?}"));
    }
    // Concurrent scales of sb on both sides: either may win; sb2's one scale must hold.
    let initial = BTreeMap::from([("sb".to_string(), n as u64), ("sb2".to_string(), 2)]);
    let wrong = wrong_scales(c, &scale_candidates(&initial, &scales))?;
    fig.add(
        "acknowledged scales not visible (or superseded)",
        wrong.len().to_string(),
    );
    if !wrong.is_empty() {
        failures.push(format!("acknowledged scales lost: {wrong:?}"));
    }
    if !failures.is_empty() {
        return Err(failed(failures.join("; ")));
    }
    Ok(())
}

/// Containers running in `before` that some sample shows not running (or gone), except those
/// in `allowed`: (id, node, service, slot), each once.
fn stopped_in_samples(
    before: &[Container],
    samples: &[Vec<Container>],
    allowed: &[&str],
) -> Vec<(String, usize, String, u32)> {
    let mut stopped = Vec::new();
    for x in running(before).filter(|x| !allowed.contains(&x.id.as_str())) {
        let gone = samples
            .iter()
            .any(|sample| !running(sample).any(|y| y.id == x.id));
        if gone {
            stopped.push((x.id.clone(), x.node, x.service.clone(), x.slot));
        }
    }
    stopped
}

fn running(list: &[Container]) -> impl Iterator<Item = &Container> {
    list.iter().filter(|x| x.state == "running")
}

/// What a heal did, from the containers at the heal, once settled, and the samples between.
#[derive(Debug, Default)]
struct HealJudgement {
    /// Σ over slots (wanted after the merge) of running copies − 1 at the heal.
    duplicates: usize,
    /// Running containers at the heal whose slot is ≥ the merged replica count.
    surplus: usize,
    /// Slots < the merged replica count with no running copy at the heal.
    missing: usize,
    stops: usize,
    starts: usize,
    still_duplicates: usize,
    still_stops: usize,
    still_starts: usize,
    /// Slots (wanted after the merge) that ran at the heal and were seen with no running copy.
    zero_windows: BTreeSet<(String, u32)>,
    failures: Vec<String>,
}

/// Judges a heal by the DESIGN §5 rules: it stops at most the duplicates (plus the slots the
/// merged counts drop), starts at most the slots no side ran (none for the unchanged service
/// `sb-still`), and a wanted slot that ran at the heal is never seen with no running copy.
fn judge_heal(
    at_heal: &[Container],
    after: &BTreeSet<String>,
    services: &BTreeMap<String, u64>,
    samples: &[Vec<Container>],
) -> HealJudgement {
    let mut j = HealJudgement::default();
    let wanted = |x: &Container| {
        services
            .get(&x.service)
            .is_some_and(|&r| u64::from(x.slot) < r)
    };
    let mut copies: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for x in running(at_heal) {
        if wanted(x) {
            *copies.entry((x.service.clone(), x.slot)).or_default() += 1;
        } else {
            j.surplus += 1;
        }
    }
    let duplicates = invariants::duplicates(
        running(at_heal)
            .filter(|x| wanted(x))
            .map(|x| (&*x.service, x.slot)),
    );
    j.duplicates = duplicates.values().sum::<u64>() as usize;
    j.still_duplicates = duplicates.get(STILL).copied().unwrap_or(0) as usize;
    for (name, &r) in services {
        j.missing += (0..r as u32)
            .filter(|&slot| !copies.contains_key(&(name.clone(), slot)))
            .count();
    }
    let before: BTreeMap<&str, &Container> = running(at_heal).map(|x| (x.id.as_str(), x)).collect();
    for (id, x) in &before {
        if !after.contains(*id) {
            j.stops += 1;
            if x.service == STILL {
                j.still_stops += 1;
            }
        }
    }
    // Containers started by the heal: running once settled, not at the heal; their service
    // is known from the samples (the last one holds them).
    let last: BTreeMap<&str, &Container> = samples
        .iter()
        .flatten()
        .map(|x| (x.id.as_str(), x))
        .collect();
    for id in after.iter().filter(|id| !before.contains_key(id.as_str())) {
        j.starts += 1;
        if last.get(id.as_str()).is_some_and(|x| x.service == STILL) {
            j.still_starts += 1;
        }
    }
    for sample in samples {
        let mut seen: BTreeSet<(String, u32)> = BTreeSet::new();
        for x in running(sample) {
            seen.insert((x.service.clone(), x.slot));
        }
        for slot in copies.keys() {
            if !seen.contains(slot) {
                j.zero_windows.insert(slot.clone());
            }
        }
    }
    if j.stops > j.duplicates + j.surplus {
        j.failures.push(format!(
            "the heal stopped {} containers, more than the {} duplicates and {} slots beyond the merged counts",
            j.stops, j.duplicates, j.surplus
        ));
    }
    if j.starts > j.missing {
        j.failures.push(format!(
            "the heal started {} containers, more than the {} slots no side ran",
            j.starts, j.missing
        ));
    }
    if let Err(e) = invariants::unchanged_heal_churn(
        j.still_starts as u64,
        j.still_stops as u64,
        j.still_duplicates as u64,
    ) {
        j.failures
            .push(format!("unchanged service {STILL}: the heal had {e}"));
    }
    if !j.zero_windows.is_empty() {
        j.failures.push(format!(
            "{} slots that ran at the heal were seen with no running copy: {:?}",
            j.zero_windows.len(),
            j.zero_windows
        ));
    }
    j
}

/// Ok when, for every service node `at` knows, the running replicas per node of the cluster
/// differ by at most 1 between the nodes (every node counts, those with none too).
fn check_spread(c: &Cluster, at: usize) -> Result<(), String> {
    let services = c.services(at).map_err(|e| e.to_string())?;
    let containers = c.containers().map_err(|e| e.to_string())?;
    for name in services.keys() {
        let mut per_node = vec![0usize; c.len()];
        for x in running(&containers).filter(|x| &x.service == name) {
            per_node[x.node] += 1;
        }
        let (lo, hi) = (
            per_node.iter().min().copied().unwrap_or(0),
            per_node.iter().max().copied().unwrap_or(0),
        );
        if hi - lo > 1 {
            return Err(format!("service {name}: replicas per node {per_node:?}"));
        }
    }
    Ok(())
}

/// One `service scale` a scenario sent.
#[derive(Debug, Clone)]
struct ScaleWrite {
    service: String,
    /// The node it was sent to.
    node: usize,
    value: u64,
    /// `warren-cli` exited 0.
    acked: bool,
}

/// The replica counts each scaled service may end with after every heal: what an acknowledged
/// scale must leave visible, unless a later or concurrent write superseded it. A node's later
/// write follows its earlier one causally, so of each node's writes only the last acknowledged
/// one can win, or one sent after it and not acknowledged (it may have been applied anyway).
/// A service no acknowledged scale touched may also keep its `initial` count.
fn scale_candidates(
    initial: &BTreeMap<String, u64>,
    scales: &[ScaleWrite],
) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut per_node: BTreeMap<(&str, usize), Vec<&ScaleWrite>> = BTreeMap::new();
    for w in scales {
        per_node.entry((&w.service, w.node)).or_default().push(w);
    }
    for ((service, _), writes) in &per_node {
        let last_acked = writes.iter().rposition(|w| w.acked);
        let from = last_acked.unwrap_or(0);
        let values = out.entry(service.to_string()).or_default();
        values.extend(writes[from..].iter().map(|w| w.value));
    }
    for (service, &value) in initial {
        let any_acked = scales.iter().any(|w| &w.service == service && w.acked);
        if !any_acked {
            out.entry(service.clone()).or_default().push(value);
        }
    }
    out
}

/// Acknowledged scales not visible at some node. `scales` maps a service to the values that
/// may win: the last value acknowledged on each side of a split (concurrent writes: one of
/// them is kept by the merge). Returns (service, node, value seen) for every node whose value
/// is none of them.
fn wrong_scales(
    c: &Cluster,
    scales: &BTreeMap<String, Vec<u64>>,
) -> Result<Vec<(String, usize, Option<u64>)>, Error> {
    let mut wrong = Vec::new();
    for i in 0..c.len() {
        let known = c.services(i)?;
        for (name, ok) in scales {
            let seen = known.get(name).copied();
            if !seen.is_some_and(|v| ok.contains(&v)) {
                wrong.push((name.clone(), i, seen));
            }
        }
    }
    Ok(wrong)
}

// ----- autonomy -----

fn autonomy(c: &mut Cluster, fig: &mut Figures) -> Result<(), Error> {
    let h = c.cli_handle();
    let n = c.len();
    create(&h, 0, "au", n as u32, true)?;
    c.wait_for("au placed and running", PLACE_DEADLINE, |c| {
        c.check_replicas(0, &["au"])
    })?;
    let holder = lease(&c.status(0)?)
        .and_then(|l| c.index_of_peer(&l.holder))
        .ok_or_else(|| failed("no lease"))?;
    let containers = c.containers()?;
    let k = (1..n)
        .map(|d| (holder + d) % n)
        .find(|&k| {
            containers
                .iter()
                .any(|x| x.node == k && x.state == "running")
        })
        .ok_or_else(|| failed("no node but the holder runs a task"))?;
    let mine: Vec<_> = containers
        .into_iter()
        .filter(|x| x.node == k && x.state == "running")
        .collect();
    fig.add(
        "isolated node",
        format!("node {k}, running {} containers", mine.len()),
    );
    let others: Vec<usize> = (0..n).filter(|&i| i != k).collect();
    // Every task of either side, watched for the whole partition.
    let sampler = c.sample_containers(SAMPLE_PERIOD, HEAL_DEADLINE + SETTLE_DEADLINE);
    let at_cut = c.containers()?;
    let isolated = c.isolate(k);
    if let Err(e) = isolated {
        let _ = sampler.stop();
        return Err(e);
    }
    let cut = Instant::now();
    let dead = c.peer(k).to_string();
    c.wait_for(
        "both sides see the split; the others re-place",
        LEASE_DEADLINE,
        |c| {
            check_side(c, &others)?;
            let s = c.status(k).map_err(|e| e.to_string())?;
            for &o in &others {
                if liveness(&s, c.peer(o)) != Some("down") {
                    return Err(format!("node {k} does not see {o} down"));
                }
            }
            let t = tasks(&c.cli_handle(), others[0], "au")?;
            let ok = t
                .iter()
                .filter(|(node, st)| *node != dead && st == "running")
                .count();
            if ok == n {
                Ok(())
            } else {
                Err(format!("au at node {}: {t:?}", others[0]))
            }
        },
    )?;
    fig.add("isolate -> both sides settled", ms(cut.elapsed()));
    let now: BTreeMap<String, String> = c
        .containers()?
        .into_iter()
        .map(|x| (x.id, x.state))
        .collect();
    for x in &mine {
        if now.get(&x.id).map(String::as_str) != Some("running") {
            return Err(failed(format!(
                "the isolation stopped container {} (slot {}) of node {k}",
                x.id, x.slot
            )));
        }
    }
    fig.add(
        "its containers still running",
        format!("{} of {}", mine.len(), mine.len()),
    );
    create(&h, k, "au-local", 0, false)?;
    fig.add("write at the isolated node", "acknowledged");
    let victim = mine[0].clone();
    let restarted = kill_and_wait_restart(c, &victim)?;
    fig.add("docker kill -> restarted locally", ms(restarted));
    let samples = sampler.stop();
    let parsed: Vec<Vec<Container>> = samples
        .iter()
        .map(|(_, out)| c.parse_containers(out))
        .collect();
    // The container killed on purpose is the only one allowed to stop.
    let stopped = stopped_in_samples(&at_cut, &parsed, &[victim.id.as_str()]);
    fig.add(
        "partition watched",
        format!(
            "{} engine samples every {} over {}",
            parsed.len(),
            ms(SAMPLE_PERIOD),
            ms(cut.elapsed())
        ),
    );
    fig.add(
        "tasks stopped by the partition (either side)",
        format!("{} {stopped:?}", stopped.len()),
    );
    if !stopped.is_empty() {
        return Err(failed(format!(
            "the partition stopped tasks (id, node, service, slot): {stopped:?}"
        )));
    }
    c.heal()?;
    let healed = Instant::now();
    c.wait_for("one document after the heal", HEAL_DEADLINE, |c| {
        c.check_converged(&all(c))
    })?;
    c.wait_for("no duplicate replica after the heal", HEAL_DEADLINE, |c| {
        c.check_replicas(0, &[])
    })?;
    fig.add("heal -> one document, no duplicates", ms(healed.elapsed()));
    let missing = missing_writes(c, &["au-local".to_string()])?;
    if !missing.is_empty() {
        return Err(failed(format!(
            "the isolated node's write was lost: {missing:?}"
        )));
    }
    fig.add("isolated node's write present everywhere", "yes");
    Ok(())
}

/// `docker kill` of `victim`, then waits until its node runs its slot again (the same container
/// restarted, or a new one): the time that took.
fn kill_and_wait_restart(c: &mut Cluster, victim: &Container) -> Result<Duration, Error> {
    let started_before = docker_started_at(&victim.id)?;
    c.docker_kill(&victim.id)?;
    let killed = Instant::now();
    c.wait_for(
        "the killed container running again on its node",
        LEASE_DEADLINE,
        |c| {
            let running = c
                .containers()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|x| {
                    x.node == victim.node
                        && x.service == victim.service
                        && x.slot == victim.slot
                        && x.state == "running"
                })
                .ok_or("not running")?;
            if running.id != victim.id {
                return Ok(());
            }
            let started = docker_started_at(&running.id).map_err(|e| e.to_string())?;
            if started != started_before {
                Ok(())
            } else {
                Err("not restarted yet".into())
            }
        },
    )?;
    Ok(killed.elapsed())
}

// ----- offline-reboot -----

/// DESIGN §8: a node rebooted with no peer reachable runs its assigned tasks again within 10 s.
const REBOOT_TARGET: Duration = Duration::from_secs(10);

fn offline_reboot(c: &mut Cluster, fig: &mut Figures) -> Result<(), Error> {
    let h = c.cli_handle();
    let n = c.len();
    h.run(
        0,
        &[
            "service",
            "create",
            "or",
            "--image",
            IMAGE,
            "--replicas",
            &n.to_string(),
            "--restart",
            "always",
            "--",
        ]
        .into_iter()
        .chain(WEB_COMMAND)
        .collect::<Vec<_>>(),
    )?;
    c.wait_for("or placed and running", PLACE_DEADLINE, |c| {
        c.check_replicas(0, &["or"])
    })?;
    let holder = lease(&c.status(0)?)
        .and_then(|l| c.index_of_peer(&l.holder))
        .ok_or_else(|| failed("no lease"))?;
    let containers = c.containers()?;
    let has_task = |k: usize| running(&containers).any(|x| x.node == k);
    let k = (1..n)
        .map(|d| (holder + d) % n)
        .find(|&k| has_task(k))
        .ok_or_else(|| failed("no node but the holder runs a task"))?;
    let assigned: BTreeSet<(String, u32)> = running(&containers)
        .filter(|x| x.node == k)
        .map(|x| (x.service.clone(), x.slot))
        .collect();
    fig.add("rebooted node", format!("node {k}, assigned {assigned:?}"));
    c.isolate(k)?;
    // The reboot: the process dies, its containers go with the machine.
    c.kill(k)?;
    let ids: Vec<String> = c
        .containers()?
        .into_iter()
        .filter(|x| x.node == k)
        .map(|x| x.id)
        .collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    if !ids.is_empty() {
        docker(&rm)?;
    }
    fig.add("containers removed with the reboot", ids.len().to_string());
    c.restart(k)?;
    let booted = Instant::now();
    c.wait_for("its assigned tasks running again", REBOOT_TARGET * 6, |c| {
        let containers = c.containers().map_err(|e| e.to_string())?;
        let mine: BTreeSet<(String, u32)> = running(&containers)
            .filter(|x| x.node == k)
            .map(|x| (x.service.clone(), x.slot))
            .collect();
        // New containers only: the old ones were removed with the reboot.
        let fresh = running(&containers).all(|x| !ids.contains(&x.id));
        if assigned.is_subset(&mine) && fresh {
            Ok(())
        } else {
            Err(format!("node {k} runs {mine:?} of {assigned:?}"))
        }
    })?;
    let back = booted.elapsed();
    fig.add("restart (no peer) -> assigned tasks running", ms(back));
    let mut failures = Vec::new();
    if back > REBOOT_TARGET {
        failures.push(format!(
            "assigned tasks ran again {} after the restart (target {})",
            ms(back),
            ms(REBOOT_TARGET)
        ));
    }
    // It came back alone: no connection to any peer.
    let connected = c.status(k)?.get("connected_peers").and_then(Value::as_u64);
    fig.add(
        "its connected peers once its tasks ran",
        format!("{connected:?}"),
    );
    if connected != Some(0) {
        failures.push(format!(
            "node {k} was not alone after its restart: connected_peers {connected:?}"
        ));
    }
    let victim = running(&c.containers()?)
        .find(|x| x.node == k)
        .cloned()
        .ok_or_else(|| failed("its task vanished"))?;
    fig.add(
        "docker kill -> restarted (--restart always)",
        ms(kill_and_wait_restart(c, &victim)?),
    );
    // Writes while isolated: a create and a scale, both acknowledged by the rebooted node.
    create(&h, k, "or-local", 0, false)?;
    let scaled = n as u64 + 1;
    h.run(k, &["service", "scale", "or", &scaled.to_string()])?;
    let scales = [ScaleWrite {
        service: "or".to_string(),
        node: k,
        value: scaled,
        acked: true,
    }];
    fig.add(
        "writes at the isolated node",
        "create or-local, scale or: acknowledged",
    );
    c.heal()?;
    let healed = Instant::now();
    c.wait_for("one document after the heal", HEAL_DEADLINE, |c| {
        c.check_converged(&all(c))
    })?;
    c.wait_for("right replicas after the heal", HEAL_DEADLINE, |c| {
        c.check_replicas(0, &["or", "or-local"])
    })?;
    fig.add("heal -> one document, right replicas", ms(healed.elapsed()));
    let missing = missing_writes(c, &["or-local".to_string()])?;
    let initial = BTreeMap::from([("or".to_string(), n as u64)]);
    let wrong = wrong_scales(c, &scale_candidates(&initial, &scales))?;
    fig.add(
        "isolated writes lost (create, scale)",
        format!("{}, {}", missing.len(), wrong.len()),
    );
    if !missing.is_empty() {
        failures.push(format!("the isolated node's create was lost: {missing:?}"));
    }
    if !wrong.is_empty() {
        failures.push(format!("the isolated node's scale was lost: {wrong:?}"));
    }
    if !failures.is_empty() {
        return Err(failed(failures.join("; ")));
    }
    Ok(())
}

fn docker_started_at(id: &str) -> Result<String, Error> {
    Ok(docker(&["inspect", "-f", "{{.State.StartedAt}}", id])?
        .trim()
        .to_string())
}

// ----- chaos -----

#[derive(Debug, Default)]
struct WriterReport {
    attempts: usize,
    acked: Vec<String>,
    scales_acked: usize,
    scales: Vec<ScaleWrite>,
}

fn writer(
    h: &CliHandle,
    up: &Mutex<Vec<bool>>,
    stop: &AtomicBool,
    seed: u64,
    deadline: Instant,
) -> WriterReport {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5eed);
    let mut report = WriterReport::default();
    // Bounded in count and time.
    for k in 0..1_000_000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        let candidates: Vec<usize> = match up.lock() {
            Ok(up) => (0..up.len()).filter(|&i| up[i]).collect(),
            Err(_) => break,
        };
        let Some(&at) = candidates.choose(&mut rng) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        report.attempts += 1;
        if rng.gen_bool(0.85) {
            let name = format!("w-{k}");
            // Exit 0 from warren-cli = acknowledged.
            if create(h, at, &name, 0, false).is_ok() {
                report.acked.push(name);
            }
        } else {
            let service = if rng.gen_bool(0.5) { "ch-a" } else { "ch-b" };
            let replicas = rng.gen_range(1..=3u32).to_string();
            let acked = h.run(at, &["service", "scale", service, &replicas]).is_ok();
            report.scales_acked += usize::from(acked);
            report.scales.push(ScaleWrite {
                service: service.to_string(),
                node: at,
                value: replicas.parse().unwrap_or(0),
                acked,
            });
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..250)));
    }
    report
}

fn chaos(c: &mut Cluster, duration: Duration, seed: u64, fig: &mut Figures) -> Result<(), Error> {
    let h = c.cli_handle();
    let n = c.len();
    fig.add("seed", seed.to_string());
    fig.add("duration", format!("{} s", duration.as_secs()));
    create(&h, 0, "ch-a", 2, true)?;
    create(&h, 0, "ch-b", 1, true)?;
    c.wait_for("services placed and running", PLACE_DEADLINE, |c| {
        c.check_replicas(0, &["ch-a", "ch-b"])
    })?;
    let up = Arc::new(Mutex::new(vec![true; n]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let deadline = start + duration;
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let (report, faults) = std::thread::scope(|s| {
        let writer = {
            let (h, up, stop) = (&h, &up, &stop);
            s.spawn(move || writer(h, up, stop, seed, deadline))
        };
        let result = (|| -> Result<(), Error> {
            for _ in 0..100_000 {
                let pause = Duration::from_millis(rng.gen_range(1_500..4_500));
                let now = Instant::now();
                if now + pause >= deadline {
                    std::thread::sleep(deadline.saturating_duration_since(now));
                    break;
                }
                std::thread::sleep(pause);
                let roll = rng.gen_range(0..100u32);
                let kind = match roll {
                    0..=24 => "partition",
                    25..=44 => "heal",
                    45..=54 => "isolate",
                    55..=62 => "loss",
                    63..=79 => "kill",
                    80..=94 => "restart-down",
                    _ => "restart",
                };
                let kind = match kind {
                    "kill" if down.len() >= 2 => "restart-down",
                    "restart-down" if down.is_empty() => "kill",
                    k => k,
                };
                match kind {
                    "partition" => {
                        let mut order: Vec<usize> = (0..n).collect();
                        order.shuffle(&mut rng);
                        let parts = rng.gen_range(2..=3usize.min(n));
                        let mut cuts: Vec<usize> =
                            rand::seq::index::sample(&mut rng, n - 1, parts - 1)
                                .into_iter()
                                .map(|x| x + 1)
                                .collect();
                        cuts.sort_unstable();
                        let mut groups = Vec::new();
                        let mut from = 0;
                        for cut in cuts.into_iter().chain([n]) {
                            let mut g = order[from..cut].to_vec();
                            g.sort_unstable();
                            groups.push(g);
                            from = cut;
                        }
                        c.partition(&groups)?;
                    }
                    "heal" => c.heal()?,
                    "isolate" => c.isolate(rng.gen_range(0..n))?,
                    "loss" => {
                        let i = rng.gen_range(0..n);
                        let pct = f64::from(rng.gen_range(5..=30u32));
                        c.loss(i, pct)?;
                    }
                    "kill" => {
                        let candidates: Vec<usize> = (0..n).filter(|i| !down.contains(i)).collect();
                        let Some(&i) = candidates.choose(&mut rng) else {
                            continue;
                        };
                        set_up(&up, i, false);
                        down.insert(i);
                        c.kill(i)?;
                    }
                    "restart-down" => {
                        let candidates: Vec<usize> = down.iter().copied().collect();
                        let Some(&i) = candidates.choose(&mut rng) else {
                            continue;
                        };
                        c.restart(i)?;
                        down.remove(&i);
                        set_up(&up, i, true);
                    }
                    _ => {
                        let candidates: Vec<usize> = (0..n).filter(|i| !down.contains(i)).collect();
                        let Some(&i) = candidates.choose(&mut rng) else {
                            continue;
                        };
                        set_up(&up, i, false);
                        c.restart(i)?;
                        set_up(&up, i, true);
                    }
                }
                *kinds.entry(kind).or_default() += 1;
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let report = writer.join().unwrap_or_default();
        (report, result)
    });
    faults?;
    let total: usize = kinds.values().sum();
    fig.add(
        "faults injected",
        format!(
            "{total} ({})",
            kinds
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    fig.add("writes attempted", report.attempts.to_string());
    fig.add(
        "writes acknowledged",
        format!(
            "{} (service create) + {} (service scale)",
            report.acked.len(),
            report.scales_acked
        ),
    );
    // The end: heal, every node back up, settle.
    c.heal()?;
    for i in down {
        c.restart(i)?;
    }
    let settling = Instant::now();
    c.wait_for("one document after the chaos", SETTLE_DEADLINE, |c| {
        c.check_converged(&all(c))
    })?;
    c.wait_for(
        "right replica counts after the chaos",
        SETTLE_DEADLINE,
        |c| c.check_replicas(0, &["ch-a", "ch-b"]),
    )?;
    fig.add("heal -> settled", ms(settling.elapsed()));
    let missing = missing_writes(c, &report.acked)?;
    fig.add("writes lost", missing.len().to_string());
    let initial = BTreeMap::from([("ch-a".to_string(), 2), ("ch-b".to_string(), 1)]);
    let wrong = wrong_scales(c, &scale_candidates(&initial, &report.scales))?;
    fig.add("acknowledged scales lost", wrong.len().to_string());
    let mut failures = Vec::new();
    if !missing.is_empty() {
        failures.push(format!(
            "{} acknowledged writes lost: {missing:?}",
            missing.len()
        ));
    }
    if !wrong.is_empty() {
        failures.push(format!(
            "replica counts no acknowledged scale explains (service, node, value): {wrong:?}"
        ));
    }
    if !failures.is_empty() {
        return Err(failed(failures.join("; ")));
    }
    Ok(())
}

fn set_up(up: &Mutex<Vec<bool>>, i: usize, value: bool) {
    if let Ok(mut up) = up.lock() {
        up[i] = value;
    }
}

/// Parses `10m`, `90s`, `1m30s`, `200ms`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|ch: char| !ch.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|ch: char| ch.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return None,
        };
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(id: &str, node: usize, service: &str, slot: u32) -> Container {
        Container {
            id: id.to_string(),
            node,
            service: service.to_string(),
            slot,
            epoch: Some(1),
            state: "running".to_string(),
            ports: String::new(),
        }
    }

    /// `sb-still` slot 0 ran on both sides (one duplicate); `web` slot 0 on one side only.
    fn split() -> (Vec<Container>, BTreeMap<String, u64>) {
        let at_heal = vec![
            ctr("a", 0, STILL, 0),
            ctr("b", 3, STILL, 0),
            ctr("c", 1, "web", 0),
        ];
        let services = BTreeMap::from([(STILL.to_string(), 1), ("web".to_string(), 1)]);
        (at_heal, services)
    }

    #[test]
    fn a_heal_that_stops_only_the_duplicate_passes() {
        let (at_heal, services) = split();
        let after = BTreeSet::from(["a".to_string(), "c".to_string()]);
        let samples = vec![
            at_heal.clone(),
            vec![ctr("a", 0, STILL, 0), ctr("c", 1, "web", 0)],
        ];
        let j = judge_heal(&at_heal, &after, &services, &samples);
        assert!(j.failures.is_empty(), "{:?}", j.failures);
        assert_eq!((j.duplicates, j.stops, j.starts), (1, 1, 0));
    }

    #[test]
    fn a_heal_that_replaces_or_breaks_before_making_fails() {
        let (at_heal, services) = split();
        // Both copies of sb-still stopped, a new one started; web moved; a window with no web.
        let after = BTreeSet::from(["d".to_string(), "e".to_string()]);
        let samples = vec![
            at_heal.clone(),
            vec![],
            vec![ctr("d", 2, STILL, 0), ctr("e", 2, "web", 0)],
        ];
        let j = judge_heal(&at_heal, &after, &services, &samples);
        assert_eq!((j.stops, j.starts, j.still_starts), (3, 2, 1));
        assert_eq!(j.zero_windows.len(), 2);
        assert_eq!(j.failures.len(), 4, "{:?}", j.failures);
    }

    #[test]
    fn only_each_nodes_last_acknowledged_scale_can_win() {
        let w = |node, value, acked| ScaleWrite {
            service: "s".to_string(),
            node,
            value,
            acked,
        };
        let initial = BTreeMap::from([("s".to_string(), 1), ("t".to_string(), 4)]);
        let scales = [w(0, 2, true), w(0, 3, true), w(1, 5, true), w(1, 6, false)];
        let c = scale_candidates(&initial, &scales);
        assert_eq!(c["s"], vec![3, 5, 6]);
        assert_eq!(c["t"], vec![4]);
    }

    #[test]
    fn a_task_seen_stopped_once_is_reported() {
        let before = vec![
            ctr("a", 0, "au", 0),
            ctr("b", 1, "au", 1),
            ctr("k", 1, "au", 2),
        ];
        let samples = vec![before.clone(), vec![ctr("b", 1, "au", 1)], before.clone()];
        let stopped = stopped_in_samples(&before, &samples, &["k"]);
        assert_eq!(stopped, vec![("a".to_string(), 0, "au".to_string(), 0)]);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..3], 99.0), Duration::from_millis(3));
    }

    #[test]
    fn replay_commands_carry_the_seed() {
        let s = Scenario::Chaos {
            duration: Duration::from_secs(600),
            seed: 7,
        };
        assert_eq!(
            s.replay_command(5),
            "warren-testnet scenario chaos --nodes 5 --duration 600s --seed 7"
        );
    }
}
