//! Crash test of the desired-state store: acknowledged writes must survive SIGKILL.
//!
//! [`acknowledged_changes_survive_sigkill`] runs child processes, one after another, on one data
//! dir. Each child loads the store and then writes in a loop: `create_service` →
//! `Store::persist(.., flush = true)` → only then prints `ack <name>`. The parent kills it with
//! SIGKILL at a random moment (after a random number of acks, sometimes after a further random
//! delay of a few milliseconds so the kill lands inside a write, sometimes during start-up, and
//! every tenth child compacts every few writes and is sometimes killed just after it announced a
//! compaction), waits until it is dead, opens the store itself and checks that every
//! acknowledged service is there. The next child continues on the same dir.
//!
//! The child is this very test executable, run again with
//! `--ignored --exact crash_child_process_entry_point --nocapture` and `WARREN_CRASH_CHILD=<dir>`.
//! [`crash_child_process_entry_point`] is therefore not a test of its own: it is `#[ignore]`d
//! and returns at once without that variable.
//!
//! Seeded: the seed is printed (and named in any failure); `WARREN_CRASH_SEED=<u64>` replays the
//! schedule (the moments of the kills relative to the child's progress, not the exact
//! interleaving). The default is 50 kills, about 10-15 s in a debug build on 2 cores. A longer
//! run, e.g. 500 kills (some minutes: every child loads the growing document):
//!
//! ```text
//! WARREN_CRASH_KILLS=500 cargo test -p warren-crdt --test crash -- --nocapture
//! ```
//!
//! A lost acknowledged write does not stop the run: every loss is collected (which kill, which
//! names, out of how many acks) and the test fails at the end with the whole list, so a long run
//! gathers the evidence. Chunks the store had to skip or hold back are reported the same way.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use warren_crdt::{
    ClusterInfo, DesiredState, Member, MemberState, NodeId, ServiceName, ServiceSpec, Store,
};

/// Set in a child process: the data dir it works on.
const CHILD_ENV: &str = "WARREN_CRASH_CHILD";
/// Set in a child process: the prefix of the service names it creates.
const PREFIX_ENV: &str = "WARREN_CRASH_PREFIX";
/// Set in some child processes: compact after every n-th write.
const COMPACT_ENV: &str = "WARREN_CRASH_COMPACT_EVERY";
/// Number of kills (default and minimum [`DEFAULT_KILLS`]).
const KILLS_ENV: &str = "WARREN_CRASH_KILLS";
/// Seed of the random schedule.
const SEED_ENV: &str = "WARREN_CRASH_SEED";
const DEFAULT_KILLS: usize = 50;
/// How long the parent waits for a line of a child before it calls the child hung.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

fn node() -> NodeId {
    NodeId("12D3KooWcrash".into())
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        image: "warren/busybox:latest".into(),
        replicas: 1,
        command: vec![],
        env: Default::default(),
        ports: vec![],
        secrets: Vec::new(),
        ..Default::default()
    }
}

fn new_cluster() -> DesiredState {
    let founder = Member {
        id: node(),
        name: "crash".into(),
        addrs: vec![],
        labels: Default::default(),
        capabilities: Default::default(),
        platform: Default::default(),
        admitted_by: node(),
        admitted_at: 0,
        state: MemberState::Active,
        availability: Default::default(),
    };
    let info = ClusterInfo {
        id: "crash".into(),
        name: "crash".into(),
        created_at: 0,
    };
    DesiredState::new_cluster(&info, &founder).expect("new cluster")
}

/// Not a test: the body of the child processes of [`acknowledged_changes_survive_sigkill`],
/// which runs this executable again with `--ignored --exact crash_child_process_entry_point`.
/// Without `WARREN_CRASH_CHILD` (any ordinary run, also with `--include-ignored`) it returns at
/// once; with it, it never returns: it writes until it is killed.
#[test]
#[ignore = "child process of acknowledged_changes_survive_sigkill, not a test of its own"]
fn crash_child_process_entry_point() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let prefix = std::env::var(PREFIX_ENV).expect("prefix");
    let compact_every: Option<usize> = std::env::var(COMPACT_ENV)
        .ok()
        .map(|v| v.parse().expect("compact every"));
    let mut out = std::io::stdout().lock();

    let mut store = Store::open(Path::new(&dir)).expect("open");
    let loaded = store.load(&node()).expect("load");
    writeln!(
        out,
        "loaded skipped={} held={} repaired={}",
        loaded.skipped_chunks, loaded.held_changes, loaded.repaired
    )
    .expect("stdout");
    let mut state = match loaded.state {
        Some(state) => state,
        None => {
            let mut state = new_cluster();
            store.persist(&mut state, true).expect("persist");
            writeln!(out, "ack cluster").expect("stdout");
            out.flush().expect("stdout");
            state
        }
    };
    for i in 1usize.. {
        let name = format!("{prefix}-{i}");
        state
            .create_service(&ServiceName::new(name.clone()).expect("name"), &spec())
            .expect("create");
        store.persist(&mut state, true).expect("persist");
        writeln!(out, "ack {name}").expect("stdout");
        out.flush().expect("stdout");
        if compact_every.is_some_and(|n| i % n == 0) {
            writeln!(out, "compacting").expect("stdout");
            out.flush().expect("stdout");
            store.compact(&mut state).expect("compact");
        }
    }
}

/// Lines of a child's stdout, read on a thread so the parent can time out.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// How the parent picks the moment of a kill.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Right after reading this many acks.
    AfterAcks(usize),
    /// After this many acks and a further delay: likely inside the next write.
    MidWrite(usize, Duration),
    /// This long after the spawn, acks or not: start-up (open, load, repair) or the first writes.
    AfterSpawn(Duration),
    /// After this many acks, on the next `compacting` line, after a delay.
    InCompaction(usize, Duration),
}

#[derive(Default)]
struct Report {
    acks: usize,
    losses: Vec<String>,
    anomalies: Vec<String>,
    compaction_kills: usize,
    mid_write_kills: usize,
    startup_kills: usize,
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let kills = std::env::var(KILLS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KILLS)
        .max(DEFAULT_KILLS);
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("crash test: seed {seed} ({SEED_ENV}), {kills} kills ({KILLS_ENV})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let started = Instant::now();

    // Every acknowledged name still expected on disk; "cluster" for the cluster record.
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut report = Report::default();
    for kill in 0..kills {
        let compacting_child = kill % 10 == 9;
        let moment = if compacting_child && rng.gen_bool(0.7) {
            Moment::InCompaction(
                rng.gen_range(0..6),
                Duration::from_micros(rng.gen_range(0..3_000)),
            )
        } else {
            match rng.gen_range(0..10) {
                0..=3 => Moment::AfterAcks(rng.gen_range(0..25)),
                4..=8 => Moment::MidWrite(
                    rng.gen_range(0..25),
                    Duration::from_micros(rng.gen_range(0..5_000)),
                ),
                _ => Moment::AfterSpawn(Duration::from_micros(rng.gen_range(0..60_000))),
            }
        };
        let mut command = Command::new(&exe);
        command
            .args([
                "--ignored",
                "--exact",
                "crash_child_process_entry_point",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .env(PREFIX_ENV, format!("k{kill}"))
            .env_remove(COMPACT_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if compacting_child {
            command.env(COMPACT_ENV, rng.gen_range(1..=3).to_string());
        }
        let mut child = command.spawn().expect("spawn child");
        let lines = lines_of(&mut child);
        let mut new_acks = Vec::new();
        let mut seen_acks = 0;

        // Read until the chosen moment (or until the child ends on its own: a failure).
        let wanted = match moment {
            Moment::AfterAcks(n) | Moment::MidWrite(n, _) | Moment::InCompaction(n, _) => Some(n),
            Moment::AfterSpawn(delay) => {
                std::thread::sleep(delay);
                None
            }
        };
        let mut ended_early = false;
        if let Some(wanted) = wanted {
            let mut waiting_for_compaction = matches!(moment, Moment::InCompaction(..));
            while seen_acks < wanted || waiting_for_compaction {
                match lines.recv_timeout(LINE_TIMEOUT) {
                    Ok(line) => {
                        if let Some(name) = line.strip_prefix("ack ") {
                            new_acks.push(name.to_string());
                            seen_acks += 1;
                        } else if line == "compacting" && seen_acks >= wanted {
                            waiting_for_compaction = false;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = child.kill();
                        panic!("seed {seed}, kill {kill}: child silent for {LINE_TIMEOUT:?}");
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        ended_early = true;
                        break;
                    }
                }
            }
            match moment {
                Moment::MidWrite(_, delay) => {
                    report.mid_write_kills += 1;
                    std::thread::sleep(delay);
                }
                Moment::InCompaction(_, delay) => {
                    report.compaction_kills += 1;
                    std::thread::sleep(delay);
                }
                _ => {}
            }
        } else {
            report.startup_kills += 1;
        }
        child.kill().expect("kill");
        let status = child.wait().expect("wait");
        // Acks printed before the kill but not read yet were acknowledged too.
        for line in lines.iter() {
            if let Some(name) = line.strip_prefix("ack ") {
                new_acks.push(name.to_string());
            }
        }
        if ended_early || status.signal() != Some(9) {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("seed {seed}, kill {kill}: the child ended by itself ({status}):\n{stderr}");
        }
        report.acks += new_acks.len();
        acked.extend(new_acks.iter().cloned());

        // The child is dead: check every acknowledged write.
        let store = Store::open(dir.path())
            .unwrap_or_else(|e| panic!("seed {seed}, kill {kill} ({moment:?}): open: {e}"));
        let mut loaded = store
            .load(&node())
            .unwrap_or_else(|e| panic!("seed {seed}, kill {kill} ({moment:?}): load: {e}"));
        if loaded.skipped_chunks > 0 || loaded.held_changes > 0 {
            report.anomalies.push(format!(
                "kill {kill} ({moment:?}): skipped {} chunk(s) {:?}, held {} change(s)",
                loaded.skipped_chunks, loaded.skipped, loaded.held_changes
            ));
        }
        // Every acknowledged write is one change in the loaded history (read from the history,
        // which is linear, rather than from all services); this child's ones must also show.
        let present: BTreeSet<String> = match loaded.state.as_mut() {
            Some(state) => {
                let mut present: BTreeSet<String> = state
                    .history()
                    .into_iter()
                    .filter_map(|h| {
                        if h.message.starts_with("cluster init ") {
                            Some("cluster".to_string())
                        } else {
                            h.message
                                .strip_prefix("service create ")
                                .map(str::to_string)
                        }
                    })
                    .collect();
                for name in &new_acks {
                    let visible = name == "cluster" && state.cluster().is_some()
                        || ServiceName::new(name.clone())
                            .ok()
                            .and_then(|n| state.service(&n))
                            .is_some();
                    if !visible {
                        present.remove(name);
                    }
                }
                present
            }
            None => BTreeSet::new(),
        };
        let missing: Vec<String> = acked.difference(&present).cloned().collect();
        if !missing.is_empty() {
            report.losses.push(format!(
                "kill {kill} ({moment:?}, acks of this child {}): {} of {} acknowledged missing: {:?}",
                new_acks.len(),
                missing.len(),
                acked.len(),
                missing
            ));
            for name in &missing {
                acked.remove(name);
            }
        }
        drop(loaded);
        drop(store);
        if (kill + 1) % 50 == 0 {
            println!(
                "crash test: {} kills, {} acknowledged writes, {} losses, {} anomalies, {:.1} s",
                kill + 1,
                report.acks,
                report.losses.len(),
                report.anomalies.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    let elapsed = started.elapsed();
    println!(
        "crash test: {kills} kills ({} mid-write, {} aimed at compaction, {} at start-up), \
         {} acknowledged writes, {} losses, {} anomalies, {:.1} s",
        report.mid_write_kills,
        report.compaction_kills,
        report.startup_kills,
        report.acks,
        report.losses.len(),
        report.anomalies.len(),
        elapsed.as_secs_f64()
    );
    for line in report.losses.iter().chain(&report.anomalies) {
        println!("  {line}");
    }
    assert!(
        report.acks > kills,
        "seed {seed}: too few acknowledged writes ({}) to mean anything",
        report.acks
    );
    assert!(
        report.losses.is_empty() && report.anomalies.is_empty(),
        "seed {seed}: acknowledged writes lost in {} of {kills} kills, anomalies in {}:\n{}",
        report.losses.len(),
        report.anomalies.len(),
        report
            .losses
            .iter()
            .chain(&report.anomalies)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
