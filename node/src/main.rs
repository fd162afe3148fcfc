//! `warren-node`: runs one Warren peer. Argument parsing and wiring only; the work is in the
//! `warren_node` library.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use warren_mesh::Multiaddr;
use warren_node::daemon::{run, NodeConfig};

/// An edge-first, peer-to-peer container orchestrator node.
#[derive(Debug, Parser)]
#[command(name = "warren-node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start this peer: create a cluster (--init), join one (--join), or resume from --data-dir.
    Up(Up),
}

#[derive(Debug, clap::Args)]
struct Up {
    /// Create a new cluster with this name.
    #[arg(long, value_name = "CLUSTER_NAME", num_args = 0..=1, default_missing_value = "warren", conflicts_with = "join")]
    init: Option<String>,
    /// Join a cluster with a token from `warren-cli join-token create`. Prefer
    /// `WARREN_JOIN_TOKEN` or --join-file: an argument is visible to every local user in the
    /// process list.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "WARREN_JOIN_TOKEN",
        hide_env_values = true
    )]
    join: Option<String>,
    /// Join a cluster with the token in FILE (its first line; keep the file mode 0600).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["join", "init"])]
    join_file: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Take no part in the overlay: no WireGuard key, no overlay addresses published, no
    /// interface.
    #[arg(long)]
    no_overlay: bool,
    /// The overlay's WireGuard interface name (1 to 15 characters: a letter, then letters,
    /// digits, `-`, `_`, `.`). Nodes sharing one machine need distinct names: the UAPI
    /// socket /var/run/wireguard/NAME.sock is per machine, not per network namespace.
    #[arg(long, value_name = "NAME", default_value = "warren0", value_parser = parse_interface)]
    overlay_interface: String,
    /// The UDP port the overlay's WireGuard interface listens on; published in this node's
    /// member record, so peers send to it. 0 (the default): any free port, published once
    /// the interface has it (boringtun 0.7.1 can panic when a port is set on a running
    /// device; see overlay/src/interface.rs).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    overlay_port: u16,
    /// The routing mesh's address: this node accepts every ingress port (`--publish
    /// PUBLISHED:TARGET`) on it and forwards each connection to a healthy task of the
    /// service on any node. `none`: no routing mesh on this node.
    #[arg(long, value_name = "ADDR|none", default_value = "127.0.0.1", value_parser = parse_ingress_addr)]
    ingress_addr: IngressAddr,
    /// Most connections the routing mesh proxies at once on this node; more are closed at
    /// once.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    ingress_max_connections: usize,
    /// Directory for the identity key and the desired-state store.
    #[arg(long, default_value = "/var/lib/warren")]
    data_dir: PathBuf,
    /// libp2p listen address (repeatable).
    #[arg(long, default_value = "/ip4/0.0.0.0/udp/7701/quic-v1")]
    listen: Vec<Multiaddr>,
    /// Local HTTP API address: loopback only (127.0.0.1 or ::1), no credential asked.
    #[arg(long, default_value = "127.0.0.1:7700")]
    api: SocketAddr,
    /// Also serve the API on this address (e.g. 0.0.0.0:7443) over HTTPS only; every request
    /// there needs an operator token from `warren-cli api-token create`, even from loopback.
    #[arg(long, value_name = "ADDR")]
    api_remote: Option<SocketAddr>,
    /// PEM certificate (chain) of the remote API. Without it, a self-signed certificate is
    /// generated once into the data dir (api-cert.pem; its path and SHA-256 are logged).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        requires = "api_remote"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (mode 0600).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// An extra DNS name or IP address for the generated certificate (repeatable); used only
    /// when the certificate is generated (delete api-cert.pem and api-key.pem to regenerate).
    #[arg(
        long,
        value_name = "NAME",
        requires = "api_remote",
        conflicts_with = "tls_cert"
    )]
    tls_san: Vec<String>,
    /// A peer to dial at start (repeatable), e.g. /ip4/10.0.0.2/udp/7701/quic-v1.
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// A node label K=V (repeatable), for placement constraints (`node.labels.K==V`) and
    /// spread preferences. Written to this node's member record at every start, over the
    /// join token's label of the same key; `warren-cli node update` changes labels at run
    /// time.
    #[arg(long, value_name = "K=V", value_parser = parse_label)]
    label: Vec<(String, String)>,
    /// A capability this node offers, e.g. gpu (repeatable), for `node.capabilities==NAME`
    /// constraints. The member record holds exactly this start's set.
    #[arg(long, value_name = "NAME", value_parser = parse_capability)]
    capability: Vec<String>,
    /// Let services bind-mount this node's host paths (`--mount type=bind,...`). Any
    /// operator with an API token can then read and write any path of this host through a
    /// container: give it only to nodes whose host data operators may touch.
    #[arg(long)]
    allow_host_paths: bool,
    /// Docker endpoint, e.g. unix:///var/run/docker.sock (default: DOCKER_HOST or the local socket).
    #[arg(long)]
    docker_host: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn parse_interface(s: &str) -> Result<String, String> {
    warren_overlay::validate_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            warren_crdt::validate_label(k, v).map_err(|e| e.to_string())?;
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("label {s:?} is not of the form key=value")),
    }
}

fn parse_capability(s: &str) -> Result<String, String> {
    if s == warren_node::core::volumes::HOST_PATHS_CAPABILITY {
        return Err(format!(
            "capability {s:?} is announced by --allow-host-paths, not --capability"
        ));
    }
    if warren_crdt::valid_label_key(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "capability {s:?}: 1-63 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// The join token in `path`: its first line, trimmed. Errors name the file: unreadable, or
/// no token in it.
fn read_join_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the join token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!(
            "the join token file {} is empty (expected the output of `warren-cli join-token create`)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Up(up) = cli.command;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,libp2p=warn,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if up.log_json {
        builder.json().init();
    } else {
        builder.init();
    }

    let name = up.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "node".into())
    });
    let join = match &up.join_file {
        Some(path) => match read_join_token(path) {
            Ok(token) => Some(token),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => up.join,
    };
    let mut config = NodeConfig::new(name, up.data_dir);
    config.init = up.init;
    config.join = join;
    config.listen = up.listen;
    config.api = up.api;
    config.api_remote = up.api_remote;
    config.tls = warren_node::daemon::TlsFiles {
        cert: up.tls_cert,
        key: up.tls_key,
        extra_names: up.tls_san,
    };
    config.bootstrap = up.bootstrap;
    config.labels = up.label.into_iter().collect::<BTreeMap<_, _>>();
    config.capabilities = up.capability.into_iter().collect();
    config.allow_host_paths = up.allow_host_paths;
    config.docker_host = up.docker_host;
    config.overlay = !up.no_overlay;
    config.overlay_interface = up.overlay_interface;
    config.overlay_port = up.overlay_port;
    config.ingress.addr = up.ingress_addr.0;
    config.ingress.max_connections = up.ingress_max_connections.max(1);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let stop = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        run(config, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `--ingress-addr`: an IP address, or `none` (no routing mesh on this node).
#[derive(Debug, Clone, Copy)]
struct IngressAddr(Option<std::net::IpAddr>);

fn parse_ingress_addr(s: &str) -> Result<IngressAddr, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(IngressAddr(None));
    }
    s.parse()
        .map(|ip| IngressAddr(Some(ip)))
        .map_err(|_| format!("{s:?} is neither an IP address nor `none`"))
}
