//! `warren-overlay-probe`: one overlay interface by hand, for tests and for an operator who
//! wants to see the overlay work without a daemon.
//!
//! ```text
//! warren-overlay-probe up --name N --key-hex-file F --port P --address A --route PREFIX
//!     [--peer KEY,ENDPOINT,ALLOWED[,ALLOWED...]]... [--keepalive S]
//!     [--serve-tcp PORT | --connect [ADDR]:PORT --expect TEXT]
//! warren-overlay-probe set-peers --name N [--peer ...]... [--keepalive S]
//! warren-overlay-probe show --name N
//! warren-overlay-probe connect --to [ADDR]:PORT --expect TEXT [--timeout-ms MS]
//! ```
//!
//! `up` prints `ready NAME PORT` once the interface, its peers and the TCP echo server are up,
//! then stays up until SIGTERM or SIGINT, when it takes the interface down (link and UAPI
//! socket gone) and exits 0. With `--connect` it exits after the exchange instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use warren_core::overlay::Prefix;
use warren_overlay::{parse_prefix, parse_public_key, Interface, InterfaceConfig, Peer, Uapi};
use zeroize::Zeroizing;

/// The longest line the echo server and the client read, in bytes.
const MAX_LINE: u64 = 1024;

/// How long the echo server waits for a client's line or for its write to go out.
const SERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One WireGuard overlay interface, run by boringtun.
#[derive(Parser)]
#[command(name = "warren-overlay-probe", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Brings an interface up with its peers, then serves or connects; stays up until
    /// SIGTERM/SIGINT (or exits after --connect).
    Up(UpArgs),
    /// Replaces the peers of a running interface (through its UAPI socket); no --peer
    /// removes them all.
    SetPeers(SetPeersArgs),
    /// Prints a running interface's state, as `wg show` would.
    Show {
        /// Interface name.
        #[arg(long)]
        name: String,
    },
    /// Connects over TCP, sends TEXT and a newline, prints the line read back; exits 1
    /// unless it is TEXT.
    Connect(ConnectArgs),
}

#[derive(Args)]
struct PeerArgs {
    /// A peer: its public key (base64 or 64 hex digits), its endpoint IP:PORT ([IPv6]:PORT;
    /// empty for none) and one or more allowed IPv6 prefixes, comma-separated.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<Peer>,
    /// Persistent keepalive of every peer, in seconds (0: off).
    #[arg(long, default_value_t = 0)]
    keepalive: u16,
}

impl PeerArgs {
    fn peers(&self) -> Vec<Peer> {
        self.peers
            .iter()
            .cloned()
            .map(|mut p| {
                p.keepalive_s = self.keepalive;
                p
            })
            .collect()
    }
}

#[derive(Args)]
struct UpArgs {
    /// Interface name (1-15 characters, a letter first).
    #[arg(long)]
    name: String,
    /// File holding the private key in 64 hex digits (WireguardKey::to_uapi_hex).
    #[arg(long)]
    key_hex_file: PathBuf,
    /// UDP listen port (0: any).
    #[arg(long)]
    port: u16,
    /// This member's overlay address (put on the interface as a /128).
    #[arg(long)]
    address: Ipv6Addr,
    /// The prefix routed through the interface (the cluster's /48).
    #[arg(long, value_parser = parse_route)]
    route: Prefix,
    #[command(flatten)]
    peers: PeerArgs,
    /// Serve a TCP line echo on the overlay address, this port.
    #[arg(long, conflicts_with = "connect")]
    serve_tcp: Option<u16>,
    /// Connect to [ADDR]:PORT once up, print the echo of --expect, exit.
    #[arg(long, requires = "expect")]
    connect: Option<SocketAddr>,
    /// What to send with --connect and expect back.
    #[arg(long, requires = "connect")]
    expect: Option<String>,
}

#[derive(Args)]
struct SetPeersArgs {
    /// Interface name.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    peers: PeerArgs,
}

#[derive(Args)]
struct ConnectArgs {
    /// [ADDR]:PORT to connect to.
    #[arg(long)]
    to: SocketAddr,
    /// What to send, and expect back.
    #[arg(long)]
    expect: String,
    /// Deadline of the connect and of each read and write, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

fn parse_route(text: &str) -> Result<Prefix, String> {
    parse_prefix(text).map_err(|e| e.to_string())
}

fn parse_peer(text: &str) -> Result<Peer, String> {
    let mut fields = text.split(',');
    let key = fields.next().unwrap_or_default();
    let endpoint = fields.next().ok_or("want KEY,ENDPOINT,ALLOWED")?;
    let allowed: Vec<Prefix> = fields
        .map(|f| parse_prefix(f).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if allowed.is_empty() {
        return Err("want at least one allowed prefix after the endpoint".into());
    }
    Ok(Peer {
        public_key: parse_public_key(key).map_err(|e| e.to_string())?,
        endpoint: if endpoint.is_empty() {
            None
        } else {
            Some(
                endpoint
                    .parse()
                    .map_err(|_| format!("not an endpoint IP:PORT: {endpoint:?}"))?,
            )
        },
        allowed,
        keepalive_s: 0,
    })
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Up(args) => up(args),
        Command::SetPeers(args) => {
            let uapi = Uapi::for_interface(&args.name)?;
            uapi.set_peers(&args.peers.peers())?;
            println!("{} peers set on {}", args.peers.peers.len(), args.name);
            Ok(())
        }
        Command::Show { name } => show(&name),
        Command::Connect(args) => connect(
            args.to,
            &args.expect,
            Duration::from_millis(args.timeout_ms),
        ),
    }
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    let text = Zeroizing::new(
        std::fs::read_to_string(&args.key_hex_file)
            .with_context(|| format!("reading {}", args.key_hex_file.display()))?,
    );
    let mut interface = Interface::up(&InterfaceConfig {
        name: args.name.clone(),
        private_key_hex: Zeroizing::new(text.trim().to_string()),
        listen_port: args.port,
        address: args.address,
        route: args.route,
    })?;
    interface.set_peers(&args.peers.peers())?;
    if let Some(port) = args.serve_tcp {
        let listener = TcpListener::bind((IpAddr::V6(args.address), port))
            .with_context(|| format!("binding [{}]:{port}", args.address))?;
        std::thread::spawn(move || serve(listener));
    }
    let port = interface.state()?.listen_port;
    println!("ready {} {port}", interface.name());
    if let (Some(to), Some(expect)) = (args.connect, args.expect) {
        return connect(to, &expect, Duration::from_secs(3));
    }
    wait_for_signal()?;
    interface.down()?;
    Ok(())
}

/// Blocks until SIGTERM or SIGINT. (The interface leaves both to the process: see
/// `device.rs` on boringtun's own socket, which would take them.)
fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}

/// Echoes one line per connection, one connection at a time, each bounded in size and time.
fn serve(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = echo(stream) {
            eprintln!("echo: {e}");
        }
    }
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(SERVE_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVE_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    stream.write_all(line.as_bytes())
}

fn connect(to: SocketAddr, expect: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut stream =
        TcpStream::connect_timeout(&to, timeout).with_context(|| format!("connecting to {to}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{expect}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE))
        .read_line(&mut line)
        .with_context(|| format!("reading the echo from {to}"))?;
    let line = line.trim_end();
    println!("{line}");
    if line != expect {
        bail!("{to} echoed {line:?}, not {expect:?}");
    }
    Ok(())
}

fn show(name: &str) -> anyhow::Result<()> {
    let state = Uapi::for_interface(name)?.state()?;
    println!("interface: {name}");
    if let Some(key) = state.public_key {
        println!("  public key: {}", key.to_base64());
    }
    println!("  listening port: {}", state.listen_port);
    for peer in state.peers {
        println!("\npeer: {}", peer.public_key.to_base64());
        if let Some(endpoint) = peer.endpoint {
            println!("  endpoint: {endpoint}");
        }
        let allowed: Vec<String> = peer.allowed_ips.iter().map(|a| a.to_string()).collect();
        println!("  allowed ips: {}", allowed.join(", "));
        if let Some(age) = peer.last_handshake {
            println!("  latest handshake: {:.1} s ago", age.as_secs_f64());
        }
        println!(
            "  transfer: {} B received, {} B sent",
            peer.rx_bytes, peer.tx_bytes
        );
        if peer.keepalive_s > 0 {
            println!("  persistent keepalive: every {} s", peer.keepalive_s);
        }
    }
    Ok(())
}
