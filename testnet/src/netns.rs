//! Network namespaces on one bridge: the ground the testnet's `warren-node` processes stand on.
//!
//! A [`Testnet`] owns everything it creates and nothing else:
//!
//! * a subnet `198.18.0.0/15` cut into 512 `/24`s: each testnet claims one that no other
//!   testnet on the machine uses (a claim file under [`CLAIM_DIR`], created exclusively, plus a
//!   look at the routes already present), so two testnets never share a route;
//! * a Linux bridge `wt<run>br` in the root namespace, addressed `<subnet>.1/24`;
//! * one namespace `wt-<run>-<i>` per node, joined to the bridge by a veth pair (`wt<run>v<i>`
//!   on the bridge side, `eth0` inside), addressed `<subnet>.<10 + i>/24`, with `lo` up and no
//!   default route, so a node can reach the other nodes of its testnet and nothing else;
//! * `iptables -I FORWARD -i <bridge> -o <bridge> -j ACCEPT` in the root namespace (Docker's
//!   FORWARD policy is DROP and bridged traffic passes through it);
//! * while [partitioned](Testnet::partition), DROP rules inside the namespaces;
//! * while a node [loses packets](Testnet::set_loss), `statistic` DROP rules in its namespace;
//! * the processes started with [`Testnet::spawn`].
//!
//! `<run>` is a random 6-hex-digit id, so parallel runs never collide on names. Everything is
//! done with the `ip` and `iptables` commands and logged with a timestamp to stderr. Teardown
//! ([`Testnet::down`], or `Drop`) undoes exactly what was created, newest first, and skips what
//! someone else already removed.
//!
//! A testnet can outlive the process that built it: [`Testnet::into_state`] hands back a
//! serializable [`NetState`] without tearing anything down, and [`Testnet::from_state`] takes
//! it up again in another process (the `warren-testnet` command keeps it in its state file).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Display;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Prefix length of a testnet's subnet (one `/24` of `198.18.0.0/15`).
pub const PREFIX_LEN: u8 = 24;

/// How many `/24` subnets `198.18.0.0/15` holds: at most this many testnets at once.
pub const SUBNETS: u16 = 512;

/// Where testnets claim their subnet (one file per subnet in use, holding the bridge's name).
pub const CLAIM_DIR: &str = "/run/warren-testnet";

/// A claim whose bridge does not exist is taken over once it is this old (a run that died
/// between claiming and building its bridge).
const STALE_CLAIM: Duration = Duration::from_secs(60);

/// Last octet of node 0's address; node `i` has `198.18.0.<FIRST_HOST + i>`.
pub const FIRST_HOST: u8 = 10;

/// The most nodes one testnet holds (addresses `.10` to `.254`).
pub const MAX_NODES: usize = 245;

/// How long [`Testnet::stop`] and teardown wait after SIGTERM before sending SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What can go wrong while building, changing or tearing down a testnet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network namespaces, links and iptables rules need root.
    #[error("warren-testnet must run as root (effective uid 0) to create network namespaces, links and iptables rules; this process has effective uid {0}")]
    NotRoot(u32),
    /// A command could not be started at all (missing binary, ...).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// A short command (`ip`, `iptables`, ...) could not start, or ran and failed
    /// ([`warren_testkit::run`]).
    #[error(transparent)]
    Command(#[from] warren_testkit::Error),
    /// Waiting for or signalling a started process failed.
    #[error("process {pid}: {source}")]
    Process {
        /// Its process id.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A process id this testnet did not start (or already stopped).
    #[error("process {0} was not started by this testnet or was already stopped")]
    UnknownProcess(u32),
    /// A node count outside `1..=MAX_NODES`.
    #[error("a testnet holds 1 to {MAX_NODES} nodes, not {0}")]
    NodeCount(usize),
    /// Groups given to [`Testnet::partition`] that do not describe a partition.
    #[error("invalid partition: {0}")]
    InvalidPartition(String),
    /// The testnet was already torn down.
    #[error("the testnet was already torn down")]
    Down,
    /// Every `/24` of `198.18.0.0/15` is in use by another testnet (or claimed).
    #[error("no free /24 left in 198.18.0.0/15 (claims in {CLAIM_DIR})")]
    NoSubnet,
    /// A loss percentage outside `0..=100`.
    #[error("loss must be between 0% and 100%, not {0}%")]
    Loss(f64),
    /// Reading or writing a claim file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Something this testnet created, to undo on teardown.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Created {
    /// The claim file of the testnet's subnet.
    Claim(PathBuf),
    /// A link in the root namespace (the bridge or a veth's bridge side).
    Link(String),
    /// A network namespace.
    Namespace(String),
    /// `iptables -I FORWARD -i <bridge> -o <bridge> -j ACCEPT` in the root namespace.
    ForwardRule(String),
}

/// A DROP rule added by [`Testnet::partition`] or [`Testnet::set_loss`] inside node `node`'s
/// namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionRule {
    node: usize,
    /// Everything after `-I`/`-D`, e.g. `["INPUT", "-s", "198.18.0.11", "-j", "DROP"]`.
    spec: Vec<String>,
}

/// N network namespaces on one bridge, with partitions, process control and full teardown.
///
/// ```no_run
/// use warren_testnet::Testnet;
///
/// let mut net = Testnet::new(3)?;
/// let out = net.exec(1, "busybox").args(["ping", "-c1", "198.18.0.10"]).output();
/// net.partition(&[&[0], &[1, 2]])?;
/// net.heal()?;
/// net.down()?; // or let it drop
/// # Ok::<(), warren_testnet::Error>(())
/// ```
#[derive(Debug)]
pub struct Testnet {
    run_id: String,
    nodes: usize,
    /// Index of the `/24` in `198.18.0.0/15`.
    subnet: u16,
    bridge: String,
    /// Undo log, oldest first.
    created: Vec<Created>,
    partition: Vec<PartitionRule>,
    loss: Vec<PartitionRule>,
    children: Vec<Child>,
    down: bool,
}

/// Everything a [`Testnet`] needs to carry on (or tear down) in another process: what it
/// created and the fault rules in force. Processes started with [`Testnet::spawn`] are not
/// part of it; teardown still kills whatever runs in the namespaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetState {
    run_id: String,
    nodes: usize,
    subnet: u16,
    bridge: String,
    created: Vec<Created>,
    partition: Vec<PartitionRule>,
    loss: Vec<PartitionRule>,
}

impl Testnet {
    /// Creates the bridge, the forward rule and `nodes` namespaces, or undoes whatever it had
    /// created and returns the first error.
    pub fn new(nodes: usize) -> Result<Self, Error> {
        let uid = effective_uid();
        if uid != 0 {
            return Err(Error::NotRoot(uid));
        }
        if nodes == 0 || nodes > MAX_NODES {
            return Err(Error::NodeCount(nodes));
        }
        let run_id = format!("{:06x}", rand::random::<u32>() & 0x00ff_ffff);
        let mut net = Self {
            bridge: format!("wt{run_id}br"),
            run_id,
            nodes,
            subnet: 0,
            created: Vec::new(),
            partition: Vec::new(),
            loss: Vec::new(),
            children: Vec::new(),
            down: false,
        };
        net.log(format_args!(
            "creating {nodes} namespaces on bridge {}",
            net.bridge
        ));
        if let Err(e) = net.build() {
            net.log(format_args!("setup failed, tearing down: {e}"));
            if let Err(e2) = net.down() {
                net.log(format_args!("teardown after failed setup: {e2}"));
            }
            return Err(e);
        }
        net.log("ready");
        Ok(net)
    }

    /// Claims a `/24` no route of the root namespace and no other testnet's claim uses.
    fn claim_subnet(&mut self) -> Result<(), Error> {
        let dir = Path::new(CLAIM_DIR);
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let routes = self.run_quiet("ip", &["-4", "route", "show", "table", "all"])?;
        let start = rand::random::<u16>() % SUBNETS;
        for k in 0..SUBNETS {
            let subnet = (start + k) % SUBNETS;
            let prefix = subnet_prefix(subnet);
            if routes.contains(&format!("{prefix}.0/{PREFIX_LEN}")) {
                continue;
            }
            let path = dir.join(format!("{prefix}.0"));
            if path.exists() && !self.claim_is_stale(&path) {
                continue;
            }
            if path.exists() {
                self.log(format_args!("taking over stale claim {}", path.display()));
                let _ = std::fs::remove_file(&path);
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(self.bridge.as_bytes())
                        .map_err(|source| Error::Io {
                            path: path.clone(),
                            source,
                        })?;
                    self.subnet = subnet;
                    self.created.push(Created::Claim(path));
                    self.log(format_args!("claimed subnet {prefix}.0/{PREFIX_LEN}"));
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
        Err(Error::NoSubnet)
    }

    /// A claim is stale when its bridge does not exist and it is older than [`STALE_CLAIM`].
    fn claim_is_stale(&self, path: &Path) -> bool {
        let Ok(bridge) = std::fs::read_to_string(path) else {
            return false;
        };
        let old = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_CLAIM);
        old && self
            .run_quiet("ip", &["link", "show", "dev", bridge.trim()])
            .is_err()
    }

    fn build(&mut self) -> Result<(), Error> {
        self.claim_subnet()?;
        let bridge = self.bridge.clone();
        let bridge_cidr = format!("{}/{PREFIX_LEN}", self.bridge_addr());
        self.run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        self.created.push(Created::Link(bridge.clone()));
        self.run("ip", &["addr", "add", &bridge_cidr, "dev", &bridge])?;
        self.run("ip", &["link", "set", &bridge, "up"])?;
        self.run("iptables", &forward_rule("-I", &bridge))?;
        self.created.push(Created::ForwardRule(bridge.clone()));

        for i in 0..self.nodes {
            let ns = self.namespace(i);
            let veth = format!("wt{}v{i}", self.run_id);
            let cidr = format!("{}/{PREFIX_LEN}", self.addr(i));
            self.run("ip", &["netns", "add", &ns])?;
            self.created.push(Created::Namespace(ns.clone()));
            self.run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            self.created.push(Created::Link(veth.clone()));
            self.run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            self.run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            self.run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            self.run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The random id in every name this testnet creates (6 hex digits).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Number of nodes (namespaces).
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// Always false: a testnet has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    /// Name of the bridge in the root namespace.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Name of node `i`'s network namespace, `wt-<run id>-<i>`.
    pub fn namespace(&self, i: usize) -> String {
        format!("wt-{}-{i}", self.run_id)
    }

    /// The testnet's subnet, e.g. `198.18.7.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}.0/{PREFIX_LEN}", subnet_prefix(self.subnet))
    }

    /// The bridge's address in the root namespace, `<subnet>.1`.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.host_addr(1)
    }

    /// Node `i`'s address, `<subnet>.<10 + i>`. For `i >= MAX_NODES` this saturates at
    /// `<subnet>.255`, which no node has.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let host = u8::try_from(usize::from(FIRST_HOST).saturating_add(i)).unwrap_or(u8::MAX);
        self.host_addr(host)
    }

    fn host_addr(&self, host: u8) -> Ipv4Addr {
        let [b, c] = subnet_octets(self.subnet);
        Ipv4Addr::new(198, b, c, host)
    }

    /// A snapshot of what this testnet created and the fault rules in force.
    pub fn state(&self) -> NetState {
        NetState {
            run_id: self.run_id.clone(),
            nodes: self.nodes,
            subnet: self.subnet,
            bridge: self.bridge.clone(),
            created: self.created.clone(),
            partition: self.partition.clone(),
            loss: self.loss.clone(),
        }
    }

    /// Lets go of the testnet without tearing it down (the namespaces, links and rules stay;
    /// processes started with [`spawn`](Self::spawn) keep running, unwatched) and returns what
    /// [`from_state`](Self::from_state) needs to take it up again.
    pub fn into_state(mut self) -> NetState {
        let state = self.state();
        self.release();
        state
    }

    /// Lets go of the testnet without tearing it down: dropping it afterwards does nothing
    /// ([`state`](Self::state) taken before still describes it).
    pub fn release(&mut self) {
        self.children.clear();
        self.down = true;
    }

    /// Takes up a testnet described by `state` (from [`into_state`](Self::into_state), maybe
    /// in another process). Dropping it tears it down.
    pub fn from_state(state: NetState) -> Self {
        Self {
            run_id: state.run_id,
            nodes: state.nodes,
            subnet: state.subnet,
            bridge: state.bridge,
            created: state.created,
            partition: state.partition,
            loss: state.loss,
            children: Vec::new(),
            down: false,
        }
    }

    /// A command that runs `program` in node `i`'s namespace (`ip netns exec <ns> program`);
    /// add arguments, environment and stdio as usual. For an index with no namespace the
    /// command fails when run (`ip` cannot open the namespace). Run it yourself for
    /// short-lived commands, or hand it to [`spawn`](Self::spawn) so teardown stops it.
    pub fn exec(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"])
            .arg(self.namespace(i))
            .arg(program);
        cmd
    }

    /// Starts `command` (usually from [`exec`](Self::exec)) and keeps it, so that
    /// [`stop`](Self::stop) and teardown end it. Returns its process id.
    pub fn spawn(&mut self, mut command: Command) -> Result<u32, Error> {
        if self.down {
            return Err(Error::Down);
        }
        let line = command_line(&command);
        let child = command.spawn().map_err(|source| Error::Spawn {
            command: line.clone(),
            source,
        })?;
        let pid = child.id();
        self.log(format_args!("started pid {pid}: {line}"));
        self.children.push(child);
        Ok(pid)
    }

    /// Whether process `pid` (from [`spawn`](Self::spawn)) has exited, without waiting.
    pub fn try_wait(&mut self, pid: u32) -> Result<Option<ExitStatus>, Error> {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .ok_or(Error::UnknownProcess(pid))?;
        child
            .try_wait()
            .map_err(|source| Error::Process { pid, source })
    }

    /// Stops process `pid` (from [`spawn`](Self::spawn)): SIGTERM, then SIGKILL after
    /// [`STOP_GRACE`]. Returns its exit status.
    pub fn stop(&mut self, pid: u32) -> Result<ExitStatus, Error> {
        let index = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .ok_or(Error::UnknownProcess(pid))?;
        let mut child = self.children.swap_remove(index);
        let mut statuses = self.stop_all(std::slice::from_mut(&mut child));
        statuses.pop().unwrap_or(Err(Error::UnknownProcess(pid)))
    }

    /// SIGTERM to every child still running, up to [`STOP_GRACE`] for them to exit, then
    /// SIGKILL. One result per child, in order.
    fn stop_all(&self, children: &mut [Child]) -> Vec<Result<ExitStatus, Error>> {
        let mut results: Vec<Option<Result<ExitStatus, Error>>> = Vec::new();
        for child in children.iter_mut() {
            let pid = child.id();
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.log(format_args!("pid {pid} had already exited: {status}"));
                    results.push(Some(Ok(status)));
                }
                Ok(None) => {
                    // Not reaped yet, so the pid cannot have been reused.
                    if let Err(e) = self.run("kill", &["-s", "TERM", &pid.to_string()]) {
                        self.log(format_args!("SIGTERM to pid {pid}: {e}"));
                    }
                    results.push(None);
                }
                Err(source) => results.push(Some(Err(Error::Process { pid, source }))),
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while results.iter().any(Option::is_none) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            for (child, result) in children.iter_mut().zip(results.iter_mut()) {
                if result.is_none() {
                    let pid = child.id();
                    match child.try_wait() {
                        Ok(Some(status)) => {
                            self.log(format_args!("pid {pid} exited: {status}"));
                            *result = Some(Ok(status));
                        }
                        Ok(None) => {}
                        Err(source) => *result = Some(Err(Error::Process { pid, source })),
                    }
                }
            }
        }
        children
            .iter_mut()
            .zip(results)
            .map(|(child, result)| match result {
                Some(result) => result,
                None => {
                    let pid = child.id();
                    self.log(format_args!(
                        "pid {pid} still running after {STOP_GRACE:?}: SIGKILL"
                    ));
                    child
                        .kill()
                        .and_then(|()| child.wait())
                        .map_err(|source| Error::Process { pid, source })
                }
            })
            .collect()
    }

    /// Cuts the network into `groups`: nodes in different groups can no longer exchange
    /// packets (DROP rules in both directions inside each namespace); nodes in one group still
    /// can. Nodes named in no group form one more group together, so `&[&[0]]` isolates node 0
    /// from all others. A partition already in force is healed first. Fails, changing nothing,
    /// if an index is out of range or named twice.
    pub fn partition(&mut self, groups: &[&[usize]]) -> Result<(), Error> {
        if self.down {
            return Err(Error::Down);
        }
        let mut group_of: Vec<Option<usize>> = vec![None; self.nodes];
        for (g, members) in groups.iter().enumerate() {
            for &i in members.iter() {
                let slot = group_of.get_mut(i).ok_or_else(|| {
                    Error::InvalidPartition(format!(
                        "node {i} does not exist (the testnet has {} nodes)",
                        self.nodes
                    ))
                })?;
                if slot.is_some() {
                    return Err(Error::InvalidPartition(format!(
                        "node {i} is named in more than one group"
                    )));
                }
                *slot = Some(g);
            }
        }
        let rest = groups.len();
        let group_of: Vec<usize> = group_of.into_iter().map(|g| g.unwrap_or(rest)).collect();
        let components: BTreeSet<usize> = group_of.iter().copied().collect();
        if !self.partition.is_empty() {
            self.heal()?;
        }
        self.log(format_args!(
            "partition into {} components: {}",
            components.len(),
            describe_groups(&group_of)
        ));
        let mut rules = Vec::new();
        for (i, gi) in group_of.iter().enumerate() {
            for (j, gj) in group_of.iter().enumerate() {
                if gi != gj {
                    let peer = self.addr(j).to_string();
                    for (chain, flag) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                        rules.push(PartitionRule {
                            node: i,
                            spec: [chain, flag, &peer, "-j", "DROP"]
                                .map(String::from)
                                .to_vec(),
                        });
                    }
                }
            }
        }
        for rule in rules {
            let result = self.ns_iptables(&rule, "-I");
            match result {
                Ok(()) => self.partition.push(rule),
                Err(e) => {
                    self.log(format_args!("partition failed, undoing it: {e}"));
                    if let Err(e2) = self.heal() {
                        self.log(format_args!("undoing the partition: {e2}"));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        !self.partition.is_empty()
    }

    /// Removes exactly the rules [`partition`](Self::partition) added. Rules already gone are
    /// skipped; on an error the rules not yet removed stay recorded, so a retry finishes.
    pub fn heal(&mut self) -> Result<(), Error> {
        if self.partition.is_empty() {
            return Ok(());
        }
        self.log(format_args!(
            "heal: removing {} rules",
            self.partition.len()
        ));
        let mut first_error = None;
        let rules = std::mem::take(&mut self.partition);
        for rule in rules {
            let present = self.ns_iptables(&rule, "-C").is_ok();
            let result = if present {
                self.ns_iptables(&rule, "-D")
            } else {
                self.log(format_args!(
                    "rule `{}` in node {} is already gone",
                    rule.spec.join(" "),
                    rule.node
                ));
                Ok(())
            };
            if let Err(e) = result {
                self.partition.push(rule);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Makes node `i` lose `percent`% of its packets, independently in each direction (iptables
    /// `statistic --mode random` DROP rules on `eth0` in its namespace; loopback is untouched).
    /// Replaces the node's previous loss; `0` removes it.
    pub fn set_loss(&mut self, i: usize, percent: f64) -> Result<(), Error> {
        if self.down {
            return Err(Error::Down);
        }
        if i >= self.nodes {
            return Err(Error::InvalidPartition(format!(
                "node {i} does not exist (the testnet has {} nodes)",
                self.nodes
            )));
        }
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::Loss(percent));
        }
        self.clear_loss(Some(i))?;
        if percent == 0.0 {
            return Ok(());
        }
        self.log(format_args!("node {i} loses {percent}% of its packets"));
        let probability = format!("{:.4}", percent / 100.0);
        for (chain, flag) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            let rule = PartitionRule {
                node: i,
                spec: [
                    chain,
                    flag,
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "DROP",
                ]
                .map(String::from)
                .to_vec(),
            };
            match self.ns_iptables(&rule, "-I") {
                Ok(()) => self.loss.push(rule),
                Err(e) => {
                    if let Err(e2) = self.clear_loss(Some(i)) {
                        self.log(format_args!("undoing the loss: {e2}"));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Nodes that lose packets now.
    pub fn lossy_nodes(&self) -> BTreeSet<usize> {
        self.loss.iter().map(|r| r.node).collect()
    }

    /// Removes the loss rules of node `i` (or of every node, for `None`).
    pub fn clear_loss(&mut self, node: Option<usize>) -> Result<(), Error> {
        let (remove, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.loss)
            .into_iter()
            .partition(|r| node.is_none_or(|n| r.node == n));
        self.loss = keep;
        let mut first_error = None;
        for rule in remove {
            if let Err(e) = self.remove_rule(&rule) {
                self.loss.push(rule);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn remove_rule(&self, rule: &PartitionRule) -> Result<(), Error> {
        if self.ns_iptables(rule, "-C").is_ok() {
            self.ns_iptables(rule, "-D")
        } else {
            self.log(format_args!(
                "rule `{}` in node {} is already gone",
                rule.spec.join(" "),
                rule.node
            ));
            Ok(())
        }
    }

    fn ns_iptables(&self, rule: &PartitionRule, op: &str) -> Result<(), Error> {
        let ns = self.namespace(rule.node);
        let mut args = vec!["netns", "exec", &ns, "iptables", "-w", op];
        args.extend(rule.spec.iter().map(String::as_str));
        // `-C` is a probe: its failure is an answer, not an error worth logging.
        if op == "-C" {
            self.run_quiet("ip", &args).map(drop)
        } else {
            self.run("ip", &args).map(drop)
        }
    }

    /// Tears everything down: stops the processes it started (and any other process left in
    /// its namespaces), removes partition rules, the forward rule, veths, namespaces and the
    /// bridge. Keeps going past errors and returns the first; a second call does nothing.
    pub fn down(&mut self) -> Result<(), Error> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        self.log("tearing down");
        let mut first_error: Option<Error> = None;

        let mut children = std::mem::take(&mut self.children);
        for result in self.stop_all(&mut children) {
            if let Err(e) = result {
                self.log(format_args!("{e}"));
                first_error.get_or_insert(e);
            }
        }
        for created in &self.created {
            if let Created::Namespace(ns) = created {
                if let Err(e) = self.kill_namespace_pids(ns) {
                    self.log(format_args!("{e}"));
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.heal() {
            self.log(format_args!("{e}"));
            first_error.get_or_insert(e);
        }
        if let Err(e) = self.clear_loss(None) {
            self.log(format_args!("{e}"));
            first_error.get_or_insert(e);
        }
        while let Some(created) = self.created.pop() {
            if let Err(e) = self.undo(&created) {
                self.log(format_args!("{e}"));
                first_error.get_or_insert(e);
            }
        }
        match &first_error {
            None => self.log("torn down"),
            Some(_) => self.log("torn down, with errors (see above)"),
        }
        first_error.map_or(Ok(()), Err)
    }

    fn kill_namespace_pids(&self, ns: &str) -> Result<(), Error> {
        if !self.namespace_exists(ns)? {
            return Ok(());
        }
        let pids = self.run("ip", &["netns", "pids", ns])?;
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            return Ok(());
        }
        self.log(format_args!(
            "killing processes left in {ns}: {}",
            pids.join(" ")
        ));
        let mut args = vec!["-s", "KILL"];
        args.extend(pids);
        // A process may exit between listing and killing: not an error.
        if let Err(e) = self.run("kill", &args) {
            self.log(format_args!("{e}"));
        }
        Ok(())
    }

    fn undo(&self, created: &Created) -> Result<(), Error> {
        match created {
            Created::Claim(path) => match std::fs::remove_file(path) {
                Ok(()) => self.log(format_args!("released claim {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.log(format_args!("claim {} is already gone", path.display()));
                }
                Err(source) => {
                    return Err(Error::Io {
                        path: path.clone(),
                        source,
                    })
                }
            },
            Created::Link(name) => {
                if self.run_quiet("ip", &["link", "show", "dev", name]).is_ok() {
                    self.run("ip", &["link", "del", "dev", name])?;
                } else {
                    self.log(format_args!("link {name} is already gone"));
                }
            }
            Created::Namespace(ns) => {
                if self.namespace_exists(ns)? {
                    self.run("ip", &["netns", "del", ns])?;
                } else {
                    self.log(format_args!("namespace {ns} is already gone"));
                }
            }
            Created::ForwardRule(bridge) => {
                if self
                    .run_quiet("iptables", &forward_rule("-C", bridge))
                    .is_ok()
                {
                    self.run("iptables", &forward_rule("-D", bridge))?;
                } else {
                    self.log(format_args!("FORWARD rule for {bridge} is already gone"));
                }
            }
        }
        Ok(())
    }

    fn namespace_exists(&self, ns: &str) -> Result<bool, Error> {
        let list = self.run_quiet("ip", &["netns", "list"])?;
        Ok(list
            .lines()
            .any(|line| line.split_whitespace().next() == Some(ns)))
    }

    /// Logs `msg` to stderr with a UTC timestamp and this testnet's run id.
    pub fn log(&self, msg: impl Display) {
        eprintln!("{} warren-testnet {}: {msg}", timestamp(), self.run_id);
    }

    /// Runs a command, logging it; its stdout on success.
    fn run(&self, program: &str, args: &[&str]) -> Result<String, Error> {
        self.log(format_args!("$ {program} {}", args.join(" ")));
        self.run_quiet(program, args)
    }

    /// Runs a command without logging it; its stdout on success.
    fn run_quiet(&self, program: &str, args: &[&str]) -> Result<String, Error> {
        Ok(warren_testkit::run(Command::new(program).args(args))?)
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            self.log(format_args!("teardown in drop failed: {e}"));
        }
    }
}

/// The second and third octets of subnet `index` of `198.18.0.0/15`.
fn subnet_octets(index: u16) -> [u8; 2] {
    let index = index % SUBNETS;
    [18 + u8::from(index >= 256), (index % 256) as u8]
}

/// `198.B.C` of subnet `index`.
fn subnet_prefix(index: u16) -> String {
    let [b, c] = subnet_octets(index);
    format!("198.{b}.{c}")
}

fn forward_rule<'a>(op: &'a str, bridge: &'a str) -> [&'a str; 9] {
    [
        "-w", op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
    ]
}

fn describe_groups(group_of: &[usize]) -> String {
    let components: BTreeSet<usize> = group_of.iter().copied().collect();
    components
        .iter()
        .map(|g| {
            let members: Vec<String> = group_of
                .iter()
                .enumerate()
                .filter(|(_, gi)| *gi == g)
                .map(|(i, _)| i.to_string())
                .collect();
            format!("{{{}}}", members.join(","))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The effective uid of this process, from `/proc/self/status` (`u32::MAX` if unreadable).
pub(crate) fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|euid| euid.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), for logs that outlive a day.
pub fn utc_datetime() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let days = i64::try_from(now.as_secs() / 86_400).unwrap_or(0);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{}", timestamp())
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `HH:MM:SS.mmmZ` (UTC).
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_described_with_the_rest_as_one_more_group() {
        assert_eq!(describe_groups(&[0, 1, 1]), "{0} / {1,2}");
        assert_eq!(describe_groups(&[1, 0, 1, 2]), "{1} / {0,2} / {3}");
    }

    #[test]
    fn forward_rule_waits_for_the_xtables_lock() {
        let rule = forward_rule("-I", "wtabcdefbr");
        assert_eq!(rule[0], "-w");
        assert_eq!(
            &rule[1..9].join(" "),
            "-I FORWARD -i wtabcdefbr -o wtabcdefbr -j ACCEPT"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn subnets_cover_198_18_slash_15() {
        assert_eq!(subnet_prefix(0), "198.18.0");
        assert_eq!(subnet_prefix(255), "198.18.255");
        assert_eq!(subnet_prefix(256), "198.19.0");
        assert_eq!(subnet_prefix(511), "198.19.255");
    }

    #[test]
    fn timestamps_have_a_fixed_shape() {
        let t = timestamp();
        assert_eq!(t.len(), "00:00:00.000Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn effective_uid_is_read() {
        assert_ne!(effective_uid(), u32::MAX);
    }
}
