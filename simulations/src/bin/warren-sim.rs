//! `warren-sim`: run a scenario, sweep seeds, or measure the figures. Thin: parsing and
//! printing only; everything else is in `warren_simulations`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use warren_simulations::{percentile, run, run_breaking, scenario, Report, RuleBreak};

#[derive(Parser)]
#[command(
    name = "warren-sim",
    about = "Deterministic simulations of a Warren cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario (or every one with `--scenario all`) for one seed or a range of seeds.
    Run {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// One seed.
        #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
        seed: u64,
        /// A sweep `A..B` (B excluded): each seed runs twice and the trace hashes must match.
        #[arg(long)]
        seeds: Option<String>,
        /// Scenario name, or `all`.
        #[arg(long, default_value = "steady")]
        scenario: String,
        /// Virtual duration of the schedule in seconds (default: the scenario's).
        #[arg(long)]
        duration: Option<u64>,
        /// Swap one of the node's rules for a deliberately wrong one, to see the invariant
        /// checks catch it (an experiment; the run is expected to fail).
        #[arg(long, value_enum)]
        break_rule: Option<BrokenRule>,
    },
    /// List the scenarios.
    List,
    /// Measure the figures: the propagation scenario at each N, a leader crash and a split.
    Figures {
        /// Node counts.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        nodes: Vec<usize>,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the table here as Markdown too.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Measure failover over many seeds: the `leader-crash` scenario (the lease holder
    /// crashes), timed from the crash to a new holder with every replica running; prints
    /// p50, p99 and the worst (nearest rank). Fails if a run breaks an invariant or never
    /// fails over.
    Failover {
        /// Number of nodes.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Seeds `A..B` (B excluded).
        #[arg(long, default_value = "0..100")]
        seeds: String,
        /// Virtual duration of each run's schedule in seconds (the crash is at a quarter).
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// The broadcast tree alone (the node's Plumtree, nothing else of the node) over many
    /// peers: delivery latency, the share within 2 s, copies and messages per peer.
    Broadcast {
        /// Number of peers.
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Probability that a packet is lost (each loss costs a retransmission, 200 ms).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Seconds before the first broadcast (round trips are measured, one a second).
        #[arg(long, default_value_t = 60)]
        warm: u64,
        /// Broadcasts measured, one every 500 ms from random peers.
        #[arg(long, default_value_t = 30)]
        broadcasts: usize,
        /// Neighbours each peer chooses (the tree's default when not given).
        #[arg(long)]
        degree: Option<usize>,
        /// Of those, how many by round trip (the tree's default when not given).
        #[arg(long)]
        near: Option<usize>,
        /// The origin also sends each broadcast to one member per this many (0: none; the
        /// tree's default when not given).
        #[arg(long)]
        seed_every: Option<usize>,
        /// Hops from the origin and each seed over which a broadcast goes in full to every
        /// neighbour (the tree's default when not given).
        #[arg(long)]
        flood_rounds: Option<u16>,
    },
}

/// The rules `--break-rule` can break.
#[derive(Clone, Copy, clap::ValueEnum)]
enum BrokenRule {
    /// The lease rule: a node that claimed the lease never steps down.
    HolderNeverStepsDown,
    /// The lease merge rule: each replica keeps its own concurrent claim.
    OwnClaimWins,
    /// The heal's keep rule: a copy of a slot assigned elsewhere stops at once.
    StopAtOnce,
    /// The heal's keep rule: of a disputed slot's copies the youngest is kept.
    KeepNewest,
    /// Fencing: assignments are written, read and run whatever their `(epoch, holder)`.
    NoFencing,
    /// The failed-task move: a task out of restarts stays on the node it failed on.
    NoFailedMove,
    /// The rollout heal rules: a merge of concurrent updates or of a rollout completed on one
    /// side leaves slots on older specs.
    NoRolloutHeal,
}

impl BrokenRule {
    fn rule_break(rule: Option<BrokenRule>) -> RuleBreak {
        match rule {
            None => RuleBreak::None,
            Some(BrokenRule::HolderNeverStepsDown) => RuleBreak::HolderNeverStepsDown,
            Some(BrokenRule::OwnClaimWins) => RuleBreak::OwnClaimWins,
            Some(BrokenRule::StopAtOnce) => RuleBreak::StopAtOnce,
            Some(BrokenRule::KeepNewest) => RuleBreak::KeepNewest,
            Some(BrokenRule::NoFencing) => RuleBreak::NoFencing,
            Some(BrokenRule::NoFailedMove) => RuleBreak::NoFailedMove,
            Some(BrokenRule::NoRolloutHeal) => RuleBreak::NoRolloutHeal,
        }
    }
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once("..")?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn replay(r: &Report, duration: Option<u64>, break_rule: Option<BrokenRule>) -> String {
    let d = duration
        .map(|d| format!(" --duration {d}"))
        .unwrap_or_default();
    let b = break_rule
        .and_then(|b| b.to_possible_value())
        .map(|v| format!(" --break-rule {}", v.get_name()))
        .unwrap_or_default();
    format!(
        "warren-sim run --nodes {} --seed {} --scenario {}{d}{b}",
        r.nodes, r.seed, r.scenario
    )
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            for n in scenario::NAMES {
                println!("{n}");
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            nodes,
            seed,
            seeds,
            scenario: name,
            duration,
            break_rule,
        } => {
            let rule_break = BrokenRule::rule_break(break_rule);
            let run_one = |name: &str, nodes, seed, duration| {
                run_breaking(name, nodes, seed, duration, rule_break)
            };
            let names: Vec<&str> = if name == "all" {
                scenario::NAMES.to_vec()
            } else {
                vec![name.as_str()]
            };
            let (from, to, sweep) = match seeds.as_deref().map(parse_range) {
                Some(Some((a, b))) => (a, b, true),
                Some(None) => {
                    eprintln!("--seeds takes A..B");
                    return ExitCode::from(2);
                }
                None => (seed, seed + 1, false),
            };
            let mut failed = Vec::new();
            for name in names {
                for seed in from..to {
                    let Some(report) = run_one(name, nodes, seed, duration.map(|d| d * 1000))
                    else {
                        eprintln!("unknown scenario {name}; see `warren-sim list`");
                        return ExitCode::from(2);
                    };
                    let mut ok = report.passed();
                    if sweep {
                        let again = run_one(name, nodes, seed, duration.map(|d| d * 1000));
                        if again.as_ref().map(|a| a.trace_hash) != Some(report.trace_hash) {
                            println!(
                                "FAIL determinism: seed {seed} of {name} gave two trace hashes"
                            );
                            ok = false;
                        }
                        println!(
                            "{} {name} seed {seed}: {} violation(s), {:.2} s wall, trace {:016x}",
                            if ok { "ok  " } else { "FAIL" },
                            report.violations.len(),
                            report.wall_secs,
                            report.trace_hash
                        );
                        for v in &report.violations {
                            println!("    {v}");
                        }
                    } else {
                        print!("{}", report.summary());
                    }
                    if !ok {
                        failed.push(replay(&report, duration, break_rule));
                    }
                }
            }
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                println!("{} failing run(s); replay with:", failed.len());
                for f in failed {
                    println!("  {f}");
                }
                ExitCode::FAILURE
            }
        }
        Command::Figures { nodes, seed, out } => figures(&nodes, seed, out.as_deref()),
        Command::Failover {
            nodes,
            seeds,
            duration,
        } => {
            let Some((from, to)) = parse_range(&seeds) else {
                eprintln!("--seeds takes A..B");
                return ExitCode::from(2);
            };
            failover(nodes, from..to, duration * 1000)
        }
        Command::Broadcast {
            nodes,
            seed,
            loss,
            warm,
            broadcasts,
            degree,
            near,
            seed_every,
            flood_rounds,
        } => {
            if !(0.0..1.0).contains(&loss) {
                eprintln!("--loss takes a probability below 1");
                return ExitCode::from(2);
            }
            let defaults = warren_simulations::broadcast::BroadcastParams::default().plum;
            let plum = warren_core::core::PlumConfig {
                degree: degree.unwrap_or(defaults.degree),
                near: near.unwrap_or(defaults.near),
                seed_every: seed_every.unwrap_or(defaults.seed_every),
                flood_rounds: flood_rounds.unwrap_or(defaults.flood_rounds),
                ..defaults
            };
            if plum.near > plum.degree {
                eprintln!("--near takes at most --degree neighbours");
                return ExitCode::from(2);
            }
            let params = warren_simulations::broadcast::BroadcastParams {
                plum,
                nodes,
                seed,
                net: warren_simulations::NetConfig {
                    loss,
                    ..Default::default()
                },
                warm_ms: warm * 1_000,
                broadcasts,
                ..Default::default()
            };
            let report = warren_simulations::broadcast::run(params);
            print!("{}", report.summary());
            if report.to_all_ms.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn failover(nodes: usize, seeds: std::ops::Range<u64>, duration_ms: u64) -> ExitCode {
    let mut times = Vec::new();
    let mut failed = Vec::new();
    let started = std::time::Instant::now();
    for seed in seeds {
        let Some(r) = run("leader-crash", nodes, seed, Some(duration_ms)) else {
            return ExitCode::FAILURE;
        };
        match r.failovers_ms.first() {
            Some(&ms) if r.passed() => times.push(ms),
            _ => {
                print!("{}", r.summary());
                failed.push(seed);
            }
        }
    }
    let pct = |p: f64| percentile(&times, p).map_or_else(|| "-".into(), |v| format!("{v} ms"));
    println!(
        "leader-crash, {nodes} nodes, {} runs in {:.0} s wall: failover p50 {}, p99 {}, worst {}",
        times.len(),
        started.elapsed().as_secs_f64(),
        pct(50.0),
        pct(99.0),
        pct(100.0),
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("seeds that failed or never failed over: {failed:?}");
        ExitCode::FAILURE
    }
}

fn figures(ns: &[usize], seed: u64, out: Option<&std::path::Path>) -> ExitCode {
    let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), |u| format!("{:.0}", u as f64 / 1000.0));
    let mut md = String::from(
        "| N | propagation p50 (ms) | p99 (ms) | to all peers p99 (ms) | copies per peer | wall s per virtual s | invariants |\n|---|---|---|---|---|---|---|\n",
    );
    let mut ok = true;
    for &n in ns {
        let Some(r) = run("propagation", n, seed, None) else {
            return ExitCode::FAILURE;
        };
        print!("{}", r.summary());
        ok &= r.passed();
        md.push_str(&format!(
            "| {n} | {} | {} | {} | {:.2} | {:.3} | {} |\n",
            ms(percentile(&r.latencies_us, 50.0)),
            ms(percentile(&r.latencies_us, 99.0)),
            ms(percentile(&r.full_coverage_us, 99.0)),
            r.copies_per_peer(),
            r.wall_per_virtual(),
            if r.passed() { "held" } else { "FAILED" }
        ));
    }
    md.push_str("\n| scenario (N) | failover (ms) | heal → one leader (ms) | heal → converged (ms) | heal → replicas right (ms) | heal churn (started/stopped) | wall s per virtual s |\n|---|---|---|---|---|---|---|\n");
    for (name, n) in [
        ("leader-crash", 10),
        ("split", 10),
        ("split", 100),
        ("three-way-split", 30),
    ] {
        let Some(r) = run(name, n, seed, None) else {
            return ExitCode::FAILURE;
        };
        print!("{}", r.summary());
        ok &= r.passed();
        let h = r.heals.first();
        let o = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
        md.push_str(&format!(
            "| {name} ({n}) | {} | {} | {} | {} | {} | {:.3} |\n",
            r.failovers_ms
                .first()
                .map_or_else(|| "-".into(), |f| f.to_string()),
            o(h.and_then(|h| h.leader_ms)),
            o(h.and_then(|h| h.converged_ms)),
            o(h.and_then(|h| h.replicas_ms)),
            h.map_or_else(|| "-".into(), |h| format!("{}/{}", h.started, h.stopped)),
            r.wall_per_virtual()
        ));
    }
    println!("\n{md}");
    if let Some(path) = out {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
