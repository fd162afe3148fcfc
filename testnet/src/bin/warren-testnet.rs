//! `warren-testnet`: real warren-node peers in network namespaces, faults on demand, scenarios.
//! Argument parsing and wiring only; the work is in the `warren_testnet` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use warren_testnet::cluster::{Cluster, UpOptions};
use warren_testnet::scenario::{self, parse_duration, Scenario, ScenarioOptions};
use warren_testnet::topology::Topology;
use warren_testnet::Bins;

/// Real warren-node peers in Linux network namespaces, with partitions, loss, kills and
/// restarts on demand, and scripted scenarios. Needs root.
#[derive(Debug, Parser)]
#[command(name = "warren-testnet", version)]
struct Cli {
    /// Where the state file, node data dirs and logs live.
    #[arg(long, global = true, default_value = "/tmp/warren-testnet")]
    state_dir: PathBuf,
    /// Directory holding warren-node and warren-cli (default: next to this binary, then
    /// target/debug).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the testnet and start one bootstrapped peer per namespace (cleans up a previous
    /// run in the state dir first).
    Up {
        /// Number of nodes (named n0, n1, ...).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// A topology file (JSON: node names, initial partition and loss; see the README).
        #[arg(long, conflicts_with = "nodes")]
        topology: Option<PathBuf>,
    },
    /// Stop every peer, remove their containers, rules, links and namespaces.
    Down,
    /// The nodes, their processes and API lines, and the faults so far.
    Status,
    /// Cut the network into groups: `partition 0,1 / 2,3,4` (names or indexes; nodes named in
    /// no group form one more group).
    Partition {
        /// Groups separated by `/`.
        #[arg(required = true, num_args = 1..)]
        groups: Vec<String>,
    },
    /// Remove every partition and loss.
    Heal,
    /// Cut one node off from all others.
    Isolate {
        /// Node name or index.
        node: String,
    },
    /// Drop a share of a node's packets in each direction: `loss n2 10%` (`0%` removes it).
    Loss {
        /// Node name or index.
        node: String,
        /// Percentage, e.g. `10%`.
        percent: String,
    },
    /// Not modelled: this kernel has no netem; link delays are the simulator's job.
    Delay {
        /// Node name or index.
        node: String,
        /// Delay, e.g. `200ms`.
        delay: String,
    },
    /// SIGKILL a node (its containers keep running).
    Kill {
        /// Node name or index.
        node: String,
    },
    /// Restart a node on its data dir (SIGTERM first if it runs).
    Restart {
        /// Node name or index.
        node: String,
    },
    /// Run warren-cli at a node: `warren-testnet cli n1 service ls`.
    Cli {
        /// Node name or index.
        node: String,
        /// warren-cli arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a scenario on a fresh testnet: convergence, failover, split-brain, autonomy, offline-reboot, overlay, chaos.
    Scenario {
        /// Scenario name.
        name: String,
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// convergence: number of writes.
        #[arg(long, default_value_t = 100)]
        writes: usize,
        /// convergence: the idle window over which each node's CPU is measured, after a minute
        /// without reads (e.g. 30s; 0s for none).
        #[arg(long, default_value = "30s")]
        idle: String,
        /// chaos: how long (e.g. 60s, 10m).
        #[arg(long, default_value = "60s")]
        duration: String,
        /// chaos: seed (random when absent; printed either way).
        #[arg(long)]
        seed: Option<u64>,
        /// failover: how many lease holders to kill, one after another (p50/p99 over them).
        #[arg(long, default_value_t = 1)]
        kills: u32,
    },
}

fn bins(dir: Option<&Path>) -> Result<Bins> {
    Ok(match dir {
        Some(dir) => Bins::in_dir(dir)?,
        None => Bins::find()?,
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren-testnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dir = cli.state_dir.as_path();
    match cli.command {
        Command::Up { nodes, topology } => {
            let topology = topology
                .map(|path| Topology::load(&path).map_err(|e| anyhow!(e)))
                .transpose()?;
            let mut opts = UpOptions::new(nodes, dir, bins(cli.bin_dir.as_deref())?);
            if let Some(t) = &topology {
                opts.names = t.nodes.clone();
            }
            let mut c = Cluster::up(opts)?;
            if let Some(t) = &topology {
                for (name, pct) in &t.loss {
                    let i = c.resolve(name)?;
                    c.loss(i, *pct)?;
                }
                if !t.partition.is_empty() {
                    let groups = t
                        .partition
                        .iter()
                        .map(|g| g.iter().map(|n| c.resolve(n)).collect())
                        .collect::<Result<Vec<Vec<usize>>, _>>()?;
                    c.partition(&groups)?;
                }
            }
            print_nodes(&mut c);
            c.detach()?;
        }
        Command::Down => match Cluster::load(dir) {
            Ok(mut c) => {
                c.down()?;
                println!("down: everything removed (logs stay in {})", dir.display());
            }
            Err(warren_testnet::cluster::Error::NotUp(_)) => println!("nothing is up"),
            Err(e) => return Err(e.into()),
        },
        Command::Status => {
            let mut c = Cluster::load(dir)?;
            print_nodes(&mut c);
            println!("faults:");
            for f in c.faults() {
                println!("  {f}");
            }
            c.detach()?;
        }
        Command::Partition { groups } => {
            let mut c = Cluster::load(dir)?;
            let text = groups.join(" ");
            let groups = text
                .split('/')
                .map(|g| {
                    g.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(|s| c.resolve(s))
                        .collect::<Result<Vec<usize>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            if groups.iter().any(Vec::is_empty) {
                c.detach()?;
                bail!("an empty group in `{text}`");
            }
            let r = c.partition(&groups);
            c.detach()?;
            r?;
        }
        Command::Heal => one(dir, |c| c.heal())?,
        Command::Isolate { node } => one(dir, |c| {
            let i = c.resolve(&node)?;
            c.isolate(i)
        })?,
        Command::Loss { node, percent } => {
            let pct: f64 = percent
                .trim_end_matches('%')
                .parse()
                .with_context(|| format!("`{percent}` is not a percentage"))?;
            one(dir, |c| {
                let i = c.resolve(&node)?;
                c.loss(i, pct)
            })?
        }
        Command::Delay { node, delay } => {
            let d = parse_duration(&delay).ok_or_else(|| anyhow!("`{delay}` is not a duration"))?;
            one(dir, |c| {
                let i = c.resolve(&node)?;
                c.delay(i, d)
            })?
        }
        Command::Kill { node } => one(dir, |c| {
            let i = c.resolve(&node)?;
            c.kill(i)
        })?,
        Command::Restart { node } => one(dir, |c| {
            let i = c.resolve(&node)?;
            c.restart(i)
        })?,
        Command::Cli { node, args } => {
            let c = Cluster::load(dir)?;
            let i = c.resolve(&node)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = c.cli(i, &args);
            c.detach()?;
            print!("{}", r?);
        }
        Command::Scenario {
            name,
            nodes,
            writes,
            idle,
            duration,
            seed,
            kills,
        } => {
            let scenario = match name.as_str() {
                "convergence" => Scenario::Convergence {
                    writes,
                    idle: parse_duration(&idle)
                        .ok_or_else(|| anyhow!("`{idle}` is not a duration"))?,
                },
                "failover" => Scenario::Failover { kills },
                "split-brain" => Scenario::SplitBrain,
                "autonomy" => Scenario::Autonomy,
                "offline-reboot" => Scenario::OfflineReboot,
                "overlay" => Scenario::Overlay,
                "chaos" => Scenario::Chaos {
                    duration: parse_duration(&duration)
                        .ok_or_else(|| anyhow!("`{duration}` is not a duration"))?,
                    seed: seed.unwrap_or_else(rand::random),
                },
                other => bail!(
                    "unknown scenario `{other}` (convergence, failover, split-brain, autonomy, offline-reboot, overlay, chaos)"
                ),
            };
            let opts = ScenarioOptions {
                nodes,
                bins: bins(cli.bin_dir.as_deref())?,
                state_dir: Some(dir.to_path_buf()),
            };
            let verdict = scenario::run(&scenario, &opts);
            println!("{verdict}");
            if !verdict.passed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the cluster, applies `f`, saves the state whatever happened.
fn one(
    dir: &Path,
    f: impl FnOnce(&mut Cluster) -> Result<(), warren_testnet::cluster::Error>,
) -> Result<()> {
    let mut c = Cluster::load(dir)?;
    let r = f(&mut c);
    c.detach()?;
    Ok(r?)
}

fn print_nodes(c: &mut Cluster) {
    println!(
        "testnet {} on {} (bridge {}), state in {}",
        c.net().run_id(),
        c.net().subnet(),
        c.net().bridge(),
        c.state_dir().display()
    );
    for i in 0..c.len() {
        let running = c.is_running(i);
        let node = &c.nodes()[i];
        println!(
            "node {i} {} {} {} pid {} peer {}",
            node.name,
            node.addr,
            if running { "running" } else { "stopped" },
            node.pid.map_or("-".to_string(), |p| p.to_string()),
            node.peer.as_deref().unwrap_or("?")
        );
        println!("  {} cluster status", c.api_line(i));
    }
}
