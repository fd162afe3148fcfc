//! Command-line arguments (clap derive). Doc comments are the help text.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate a Warren cluster through any of its peers.
///
/// A node's local API (http://127.0.0.1:7700 by default) asks for no credential. A remote
/// API (a node started with --api-remote) is HTTPS only and needs an operator token:
///
///   warren-cli --peer https://NODE:7443 --tls-ca api-cert.pem --token "$TOKEN" cluster status
#[derive(Debug, Parser)]
#[command(name = "warren-cli", version)]
pub(crate) struct Cli {
    /// The peer's API URL: http://127.0.0.1:PORT for a node's local API, https://HOST:PORT
    /// for its remote API.
    #[arg(
        long,
        global = true,
        env = "WARREN_PEER",
        default_value = "http://127.0.0.1:7700"
    )]
    pub(crate) peer: String,
    /// Operator token for a remote (https://) API, from `warren-cli api-token create`. Sent
    /// only over HTTPS; prefer the environment variable to keep it out of shell history.
    #[arg(long, global = true, env = "WARREN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM certificate to trust for an https:// peer, e.g. the node's self-signed
    /// api-cert.pem from its data dir (default: the usual web CAs).
    #[arg(long, global = true, env = "WARREN_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The cluster as this peer sees it.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Members of the cluster.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Tokens that admit new nodes.
    #[command(subcommand, name = "join-token")]
    JoinToken(JoinTokenCommand),
    /// Operator tokens for the remote (HTTPS) API, valid at every peer.
    #[command(subcommand, name = "api-token")]
    ApiToken(ApiTokenCommand),
    /// Long-running services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Secrets: sealed to every member, readable only inside containers.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Container images on a node's engine.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Volumes: named data on one node; services mounting one run on that node.
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum VolumeCommand {
    /// Create a volume on a node (default: the node --peer points at). A service mounting
    /// it runs only there, and waits while that node is down.
    Create {
        /// Volume name: letters, digits, '_', '.', '-'.
        name: String,
        /// The node that holds its data (name or id).
        #[arg(long)]
        node: Option<String>,
        /// Volume driver: only `local`.
        #[arg(long, default_value = "local")]
        driver: String,
        /// A driver option K=V, passed to Docker's volume create (repeatable).
        #[arg(long = "opt", value_name = "K=V")]
        opt: Vec<String>,
    },
    /// List volumes: node, driver, the services that mount each.
    Ls,
    /// Show a volume.
    Inspect {
        /// Volume name.
        name: String,
    },
    /// Remove a volume and its data (refused while a service mounts it).
    Rm {
        /// Volume name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Load the images of a `docker save` tarball (at most 2 GiB) into the engine of the
    /// node --peer points at, for sites without a registry. Load it on each node that runs
    /// the service (point --peer at each in turn).
    Load {
        /// The tarball, as written by `docker save IMAGE -o FILE`.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Create a secret from a file, a literal, or standard input (`-`).
    Create {
        /// Secret name.
        name: String,
        /// Read the value from this file.
        #[arg(long, conflicts_with_all = ["from_literal", "stdin"])]
        from_file: Option<std::path::PathBuf>,
        /// The value itself (it stays in your shell history: prefer a file or `-`).
        #[arg(long, conflicts_with = "stdin")]
        from_literal: Option<String>,
        /// Read the value from standard input.
        #[arg(value_name = "-", num_args = 0..=1, default_missing_value = "-", hide = true)]
        stdin: Option<String>,
    },
    /// List secrets (metadata only).
    Ls,
    /// Show a secret's metadata: version, size, recipients. Never its value.
    Inspect {
        /// Secret name.
        name: String,
    },
    /// Re-key a secret for the current members.
    Rotate {
        /// Secret name.
        name: String,
    },
    /// Remove a secret.
    Rm {
        /// Secret name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Members with liveness, the lease holder and its epoch.
    Status,
    /// Who changed what, when (the desired state's history), oldest first.
    History {
        /// Only changes that touched this service (its spec or its assignments).
        #[arg(long)]
        service: Option<String>,
        /// How many of the newest changes to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The cluster-wide settings, as this peer has them. Every peer obeys them once it has
    /// merged them.
    Settings,
    /// Change a cluster-wide setting, e.g. `cluster set rebalance off`.
    ///
    /// Settings: `rebalance on|off` — whether the lease holder moves replicas to restore
    /// spread after a heal or when a node joins (default on). Off, nothing is moved for
    /// balance; slots are still placed and re-placed off unreachable members.
    ///
    /// The change is written at this peer and reaches the others by gossip; concurrent
    /// changes of one setting at two peers resolve to one of them everywhere.
    Set {
        /// The setting: `rebalance`.
        key: String,
        /// Its new value: `on` or `off` (`true` and `false` are accepted too).
        value: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// List members.
    Ls,
    /// One member: liveness, capacity, what its tasks reserve, its usage and GPUs.
    Inspect {
        /// The member's name or id (or the last 8 characters of its id).
        node: String,
    },
    /// Remove a member: it is cut off, its tasks move, its identity can never rejoin.
    Rm {
        /// The member's name or id (or the last 8 characters of its id).
        node: String,
    },
    /// Change a member's labels, in one write that reaches every peer; replicas whose
    /// constraints the change breaks move to a node that matches. Or its availability.
    Update {
        /// The member's name or id (or the last 8 characters of its id).
        node: String,
        /// Set label K to V (repeatable).
        #[arg(long, value_name = "K=V")]
        label_add: Vec<String>,
        /// Remove label K (repeatable).
        #[arg(long, value_name = "K")]
        label_rm: Vec<String>,
        /// `active`: takes tasks; `pause`: keeps its tasks, takes no new ones; `drain`: its
        /// tasks move elsewhere start-first (`--on-partition wait` ones stay). Going back to
        /// `active` moves nothing back.
        #[arg(long, value_parser = ["active", "pause", "drain"])]
        availability: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum JoinTokenCommand {
    /// Mint a join token (single use by default); prints the token alone on stdout.
    Create {
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// How many nodes it may admit.
        #[arg(long, default_value_t = 1)]
        uses: u64,
        /// A label k=v every node it admits gets (repeatable).
        #[arg(long, value_name = "K=V")]
        label: Vec<String>,
    },
    /// List join tokens: id, expiry, uses left, labels, revoked.
    Ls,
    /// Revoke a join token: it admits nobody from now on.
    Revoke {
        /// The token's id (from `join-token ls`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApiTokenCommand {
    /// Mint an operator token; prints it alone on stdout, once (peers keep only its digest).
    Create {
        /// Validity: a number with s, m, h or d (90d, 12h); a bare number is seconds.
        #[arg(long, value_name = "D", default_value = "90d", value_parser = parse_duration)]
        ttl: u64,
        /// A label k=v for your own bookkeeping, e.g. owner=alice (repeatable).
        #[arg(long, value_name = "K=V")]
        label: Vec<String>,
    },
    /// List operator tokens: id, labels, created, expires, state. Never the token itself.
    Ls,
    /// Revoke an operator token: refused at every peer once the revocation reaches it.
    Revoke {
        /// The token's id (from `api-token ls`).
        id: String,
    },
}

/// `90d`, `12h`, `30m`, `45s` or `3600` (seconds) as seconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90d, 12h, 30m or 3600"))?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the duration must be more than 0".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("{text:?} is too long")),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Create a service.
    Create(CreateService),
    /// Change a service: only the flags given change (an image, command, env, port, secret,
    /// health or resource change replaces its containers; replicas and the restart policy
    /// do not).
    Update(UpdateService),
    /// List services.
    Ls,
    /// Show a service's spec.
    Inspect {
        /// Service name.
        name: String,
    },
    /// List a service's tasks: node, container state, ports, overlay address.
    Ps {
        /// Service name.
        name: String,
    },
    /// Show the logs of every task of a service, from whichever node runs it: each line as
    /// `SERVICE.SLOT@NODE | TEXT`, in time order.
    Logs(ServiceLogs),
    /// Set a service's replica count.
    Scale {
        /// Service name.
        name: String,
        /// Replicas.
        replicas: u32,
    },
    /// Remove a service and its containers.
    Rm {
        /// Service name.
        name: String,
    },
    /// Return to the previous spec, rolled out under the rollback policy; removes a
    /// canary. Waits and shows progress unless --detach.
    Rollback(RolloutCommand),
    /// Let a canary waiting for promotion roll out to every task.
    Promote(RolloutCommand),
    /// Stop a rollout where it stands (the tasks not updated keep their generation).
    Pause {
        /// Service name.
        name: String,
    },
    /// Go on with a paused rollout.
    Resume(RolloutCommand),
}

/// A rollout step that can wait for the rollout (`service rollback|promote|resume`).
#[derive(Debug, Args)]
pub(crate) struct RolloutCommand {
    /// Service name.
    pub(crate) name: String,
    /// Return at once instead of waiting for the rollout.
    #[arg(short, long)]
    pub(crate) detach: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceLogs {
    /// Service name.
    pub(crate) name: String,
    /// Keep printing new lines as they come (polls every second) until Ctrl-C.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only the last N lines of each task.
    #[arg(long, short = 'n', value_name = "N")]
    pub(crate) tail: Option<u32>,
    /// Only lines since a time: RFC 3339 (2026-11-22T02:52:31Z), Unix seconds, or a duration
    /// ago (10s, 5m, 2h).
    #[arg(long, value_name = "T")]
    pub(crate) since: Option<String>,
    /// Show each line's timestamp (RFC 3339, the engine's clock of the node that runs it).
    #[arg(short, long)]
    pub(crate) timestamps: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CreateService {
    /// Service name: lowercase letters, digits and '-'.
    pub(crate) name: String,
    /// Image reference, e.g. warren/busybox:latest.
    #[arg(long)]
    pub(crate) image: String,
    /// Number of replicas (default 1; refused with --mode global).
    #[arg(long)]
    pub(crate) replicas: Option<u32>,
    /// `replicated` (--replicas tasks, the default) or `global` (one task on every node its
    /// constraints allow, added as nodes join and removed as they leave).
    #[arg(long, value_enum, default_value = "replicated")]
    pub(crate) mode: ModeArg,
    /// Environment variable K=V (repeatable).
    #[arg(long, value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Publish a container port (repeatable): TARGET (each task on an engine-chosen port of
    /// 127.0.0.1 of its node), PUBLISHED:TARGET (the routing mesh: every node accepts
    /// PUBLISHED on its --ingress-addr and forwards to a healthy task), or
    /// published=P,target=T[,mode=ingress|host].
    #[arg(long, short = 'p', value_name = "[PUBLISHED:]TARGET")]
    pub(crate) publish: Vec<String>,
    /// Mount a secret read-only at /run/secrets/TARGET (TARGET defaults to NAME; repeatable).
    #[arg(long, value_name = "NAME[:TARGET]")]
    pub(crate) secret: Vec<String>,
    /// Mount a volume or host path: type=volume,source=NAME,target=/data[,readonly] or
    /// type=bind,source=/host/path,target=/path (repeatable). A volume pins the service to
    /// its node; a bind mount needs a node started with --allow-host-paths.
    #[arg(long, value_name = "SPEC")]
    pub(crate) mount: Vec<String>,
    /// Health check, restart policy, limits and stop timeout.
    #[command(flatten)]
    pub(crate) spec: SpecFlags,
    /// Update and rollback policies, deployment strategy (issue 15).
    #[command(flatten)]
    pub(crate) rollout: crate::commands::rollout::RolloutFlags,
    /// Command and arguments (after --).
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateService {
    /// Service name.
    pub(crate) name: String,
    /// New image reference.
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// New number of replicas.
    #[arg(long)]
    pub(crate) replicas: Option<u32>,
    /// Environment variable K=V (repeatable; replaces the whole environment).
    #[arg(long, value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Published port [PUBLISHED:]TARGET or published=P,target=T[,mode=ingress|host]
    /// (repeatable; replaces all published ports; see `service create --help`).
    #[arg(long, short = 'p', value_name = "[PUBLISHED:]TARGET")]
    pub(crate) publish: Vec<String>,
    /// Secret NAME[:TARGET] (repeatable; replaces all secret mounts).
    #[arg(long, value_name = "NAME[:TARGET]")]
    pub(crate) secret: Vec<String>,
    /// Add a mount (as create's --mount; one at the same target replaces it; repeatable).
    #[arg(long, value_name = "SPEC")]
    pub(crate) mount: Vec<String>,
    /// Remove the mount at TARGET (repeatable).
    #[arg(long, value_name = "TARGET")]
    pub(crate) mount_rm: Vec<String>,
    /// Remove the health check.
    #[arg(long, conflicts_with_all = ["health_cmd", "health_http", "health_tcp", "health_interval", "health_timeout", "health_retries", "health_start_period"])]
    pub(crate) no_health: bool,
    /// Remove every placement constraint.
    #[arg(long, conflicts_with = "constraint")]
    pub(crate) no_constraints: bool,
    /// Remove every spread preference.
    #[arg(long, conflicts_with = "placement_pref")]
    pub(crate) no_placement_prefs: bool,
    /// Add a placement constraint to the current ones (repeatable; Swarm's syntax, see
    /// --constraint).
    #[arg(long, value_name = "EXPR", conflicts_with = "constraint")]
    pub(crate) constraint_add: Vec<String>,
    /// Remove a placement constraint from the current ones (repeatable; before the adds).
    #[arg(long, value_name = "EXPR", conflicts_with = "constraint")]
    pub(crate) constraint_rm: Vec<String>,
    /// Add a spread preference to the current ones (repeatable).
    #[arg(
        long,
        value_name = "spread=node.labels.KEY",
        conflicts_with = "placement_pref"
    )]
    pub(crate) placement_pref_add: Vec<String>,
    /// Remove a spread preference from the current ones (repeatable; before the adds).
    #[arg(
        long,
        value_name = "spread=node.labels.KEY",
        conflicts_with = "placement_pref"
    )]
    pub(crate) placement_pref_rm: Vec<String>,
    /// The service's mode: a service keeps the mode it was created with, so another one is
    /// refused.
    #[arg(long, value_enum)]
    pub(crate) mode: Option<ModeArg>,
    /// Health check, restart policy, limits and stop timeout.
    #[command(flatten)]
    pub(crate) spec: SpecFlags,
    /// Update and rollback policies, deployment strategy (issue 15).
    #[command(flatten)]
    pub(crate) rollout: crate::commands::rollout::RolloutFlags,
    /// Return at once instead of waiting for the rollout (and showing its progress).
    #[arg(short, long)]
    pub(crate) detach: bool,
    /// Roll back to the previous spec, as `service rollback` (Swarm's spelling); no other
    /// flag goes with it.
    #[arg(long)]
    pub(crate) rollback: bool,
    /// New command and arguments (after --; replaces the command).
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

/// When a stopped task is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Restart {
    /// After any exit (the default).
    Always,
    /// After a non-zero exit or a failed health check.
    OnFailure,
    /// Never: an exited task stays exited.
    Never,
}

impl Restart {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

/// Flags shared by `service create` and `service update`. Durations take a unit: `500ms`,
/// `10s`, `1m`, `1h` (a bare number is seconds); sizes `256M`, `1G`, `512k` (binary units, a
/// bare number is bytes).
#[derive(Debug, Args)]
pub(crate) struct SpecFlags {
    /// Health probe: a shell command run inside the container; exit 0 is healthy.
    #[arg(long, value_name = "CMD", conflicts_with_all = ["health_http", "health_tcp"])]
    pub(crate) health_cmd: Option<String>,
    /// Health probe: GET http://127.0.0.1:PORT/PATH from inside the container (needs wget in
    /// the image; busybox has it). Give the port with --health-port.
    #[arg(
        long,
        value_name = "PATH",
        requires = "health_port",
        conflicts_with = "health_tcp"
    )]
    pub(crate) health_http: Option<String>,
    /// The container port of --health-http.
    #[arg(long, value_name = "PORT", requires = "health_http")]
    pub(crate) health_port: Option<u16>,
    /// Health probe: a TCP connect to 127.0.0.1:PORT from inside the container (needs nc in
    /// the image; busybox has it).
    #[arg(long, value_name = "PORT")]
    pub(crate) health_tcp: Option<u16>,
    /// Time between probes (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) health_interval: Option<String>,
    /// A probe running longer has failed (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) health_timeout: Option<String>,
    /// Failed probes in a row that make a task unhealthy (default 3).
    #[arg(long, value_name = "N")]
    pub(crate) health_retries: Option<u32>,
    /// Failures in this time after a start do not count (default 0s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) health_start_period: Option<String>,
    /// When a stopped or unhealthy task is started again (default always).
    #[arg(long, value_enum)]
    pub(crate) restart: Option<Restart>,
    /// Restarts in a row before the task is marked failed and left alone (0: no limit, the
    /// default).
    #[arg(long, value_name = "N")]
    pub(crate) restart_max_attempts: Option<u32>,
    /// Delay before the second restart in a row, doubling with each further one up to 60s
    /// (default 1s; the first restart is immediate).
    #[arg(long, value_name = "DURATION")]
    pub(crate) restart_delay: Option<String>,
    /// CPU limit, e.g. 0.5 or 2 (0: no limit).
    #[arg(long, value_name = "CPUS")]
    pub(crate) cpus: Option<String>,
    /// Memory limit, e.g. 256M or 1G (at least 6M; 0: no limit).
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<String>,
    /// Time between SIGTERM and SIGKILL when a task is stopped (default 10s; whole seconds,
    /// rounded up).
    #[arg(long, value_name = "DURATION")]
    pub(crate) stop_timeout: Option<String>,
    /// Placement constraint, Docker Swarm's syntax (repeatable; every one must hold):
    /// node.labels.KEY==V, node.name==N, node.id==ID, node.arch==amd64, node.os==linux,
    /// node.capabilities==gpu, each also with !=. A node lacking the label matches != and
    /// never ==. On update, replaces all constraints.
    #[arg(long, value_name = "EXPR")]
    pub(crate) constraint: Vec<String>,
    /// Spread preference spread=node.labels.KEY (repeatable): replicas spread evenly over
    /// the label's values first (nodes lacking it count as one more value), then over
    /// nodes. On update, replaces all preferences.
    #[arg(long, value_name = "spread=node.labels.KEY")]
    pub(crate) placement_pref: Vec<String>,
    /// Most replicas of the service on one node (0: no limit, the default).
    #[arg(long, value_name = "N")]
    pub(crate) max_replicas_per_node: Option<u32>,
    /// Whole NVIDIA GPUs each task reserves (0: none, the default; at most 16): a task goes
    /// only to a node reporting that many GPUs no other task holds, and gets those devices.
    #[arg(long, value_name = "N")]
    pub(crate) gpus: Option<u32>,
    /// What happens to the tasks of a member that cannot be reached: `reschedule` them on
    /// reachable members after the down timeout (the default), or `wait` for it (its tasks
    /// keep running where they are; `service ps` shows them `unreachable (waiting)`).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub(crate) on_partition: Option<OnPartitionArg>,
    /// Re-place an unreachable member's tasks only after it has been silent this long, under
    /// either policy, e.g. 10m (0: the policy's default).
    #[arg(long, value_name = "DURATION")]
    pub(crate) reschedule_after: Option<String>,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ModeArg {
    /// `--replicas` tasks.
    Replicated,
    /// One task on every eligible node.
    Global,
}

impl ModeArg {
    /// The API's word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ModeArg::Replicated => "replicated",
            ModeArg::Global => "global",
        }
    }
}

/// `--on-partition` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OnPartitionArg {
    /// Re-place the slots on reachable members.
    Reschedule,
    /// Keep the slots where they are.
    Wait,
}

impl OnPartitionArg {
    /// The API's word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OnPartitionArg::Reschedule => "reschedule",
            OnPartitionArg::Wait => "wait",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("3600"), Ok(3_600));
        for bad in [
            "",
            "0",
            "0d",
            "d",
            "5w",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
