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
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// List members.
    Ls,
    /// Remove a member: it is cut off, its tasks move, its identity can never rejoin.
    Rm {
        /// The member's name or id (or the last 8 characters of its id).
        node: String,
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
    /// List services.
    Ls,
    /// Show a service's spec.
    Inspect {
        /// Service name.
        name: String,
    },
    /// List a service's tasks: node, container state, ports.
    Ps {
        /// Service name.
        name: String,
    },
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
}

#[derive(Debug, Args)]
pub(crate) struct CreateService {
    /// Service name: lowercase letters, digits and '-'.
    pub(crate) name: String,
    /// Image reference, e.g. warren/busybox:latest.
    #[arg(long)]
    pub(crate) image: String,
    /// Number of replicas.
    #[arg(long, default_value_t = 1)]
    pub(crate) replicas: u32,
    /// Environment variable K=V (repeatable).
    #[arg(long, value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Publish a container port on 127.0.0.1: CONTAINER (engine picks the host port) or
    /// HOST:CONTAINER (repeatable).
    #[arg(long, short = 'p', value_name = "[HOST:]CONTAINER")]
    pub(crate) publish: Vec<String>,
    /// Mount a secret read-only at /run/secrets/TARGET (TARGET defaults to NAME; repeatable).
    #[arg(long, value_name = "NAME[:TARGET]")]
    pub(crate) secret: Vec<String>,
    /// Command and arguments (after --).
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
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
