//! The daemon behind `warren-node up`: wires the desired-state document, the mesh, the
//! container runtime, the decision core and the HTTP API together.

mod actor;
mod api;
mod applied;
mod identity;
mod image_platforms;
pub mod ingress;
mod logs;
mod metrics;
mod names;
mod overlay;
mod reconciler;
mod secret_files;
mod tls;
mod volumes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use warren_crdt::{ClusterInfo, DesiredState, Member, MemberState, NodeId, Store};
use warren_mesh::{MeshConfig, MeshEvent, MeshHandle, Multiaddr, PeerId, RequestKind, Response};
use warren_runtime::DockerRuntime;

use crate::machine::{MachineConfig, NodeMachine};
use crate::protocol;
pub use crate::protocol::{EngineStatus, Report, TaskStatus};
pub use crate::token::JoinToken;
pub use tls::TlsFiles;

use crate::core::{CoreConfig, Millis};

/// How the node starts: what `warren-node up` parsed, in one place.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name shown in tables (`--name`).
    pub name: String,
    /// Data dir: identity key and the desired-state store (`--data-dir`).
    pub data_dir: PathBuf,
    /// libp2p listen addresses (`--listen`, default QUIC on UDP 7701).
    pub listen: Vec<Multiaddr>,
    /// HTTP API address (`--api`, default 127.0.0.1:7700). Loopback only: it asks for no
    /// credential.
    pub api: SocketAddr,
    /// Remote API address (`--api-remote`), if any: HTTPS only, every request needs an
    /// operator token (`warren-cli api-token create`). Any address, loopback included.
    pub api_remote: Option<SocketAddr>,
    /// The remote API's certificate and key (`--tls-cert`, `--tls-key`, `--tls-san`); by
    /// default a self-signed pair generated once into the data dir.
    pub tls: TlsFiles,
    /// Extra peers to dial (`--bootstrap`).
    pub bootstrap: Vec<Multiaddr>,
    /// Node labels (`--label k=v`), written to the member record at every start (they win
    /// per key).
    pub labels: BTreeMap<String, String>,
    /// Capabilities (`--capability NAME`), written to the member record at every start.
    pub capabilities: std::collections::BTreeSet<String>,
    /// Whether tasks may bind-mount this node's host paths (`--allow-host-paths`, default
    /// off). The node then announces the `host-paths` capability, and any operator with an
    /// API token can mount any path of this host into a container (docs/security.md).
    pub allow_host_paths: bool,
    /// Docker endpoint (`--docker-host`); `None` for the local default.
    pub docker_host: Option<String>,
    /// Create a new cluster with this name (`--init`).
    pub init: Option<String>,
    /// Join with this token (`--join`).
    pub join: Option<String>,
    /// Failure detection and lease timing.
    pub core: CoreConfig,
    /// Lease renewal period (default 500 ms).
    pub renew_interval: Duration,
    /// Least period of the report digest (default 2 s; see [`MachineConfig::report_ms`]).
    pub report_interval: Duration,
    /// Anti-entropy period (default 3 s).
    pub anti_entropy_interval: Duration,
    /// Reconcile period (default 1 s).
    pub reconcile_interval: Duration,
    /// How long a copy this node stops because it moved elsewhere (a drain's or a heal's
    /// start-first move, once the new copy runs healthy) is first reported `removing` while
    /// it still runs, so the cluster stops advertising it before it stops (default 2 s:
    /// one report period, as other peers' task lists lag by up to that; see
    /// [`warren_core::core::Supervisor::set_deregistration_delay`]).
    pub deregistration_delay: Duration,
    /// Whether this node takes part in the overlay (default on; `--no-overlay` turns it
    /// off): it keeps a WireGuard key (`wireguard.key` in the data dir, mode 0600) and
    /// publishes the key and the overlay addresses derived from it in its member record.
    pub overlay: bool,
    /// The overlay's WireGuard interface (`--overlay-interface`, default `warren0`).
    pub overlay_interface: String,
    /// The UDP port it listens on (`--overlay-port`, default 51820), published in the
    /// member record.
    pub overlay_port: u16,
    /// The routing mesh on this node (`--ingress-addr`, `--ingress-max-connections`).
    pub ingress: ingress::IngressConfig,
}

impl NodeConfig {
    /// Defaults for everything but the name and data dir.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            data_dir: data_dir.into(),
            listen: vec!["/ip4/0.0.0.0/udp/7701/quic-v1"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty())],
            api: SocketAddr::from(([127, 0, 0, 1], 7700)),
            api_remote: None,
            tls: TlsFiles::default(),
            bootstrap: vec![],
            labels: BTreeMap::new(),
            capabilities: Default::default(),
            allow_host_paths: false,
            docker_host: None,
            init: None,
            join: None,
            core: CoreConfig::default(),
            renew_interval: Duration::from_millis(500),
            report_interval: Duration::from_secs(2),
            anti_entropy_interval: Duration::from_secs(3),
            reconcile_interval: Duration::from_secs(1),
            deregistration_delay: Duration::from_secs(2),
            overlay: true,
            overlay_interface: "warren0".into(),
            overlay_port: 0,
            ingress: ingress::IngressConfig::default(),
        }
    }
}

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The data dir cannot be created or used.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The identity key cannot be loaded or created.
    #[error("identity key {path}: {reason}")]
    Identity {
        /// The key file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The desired-state store failed.
    #[error(transparent)]
    Store(#[from] warren_crdt::CrdtError),
    /// The container runtime is not usable.
    #[error(transparent)]
    Runtime(#[from] warren_runtime::RuntimeError),
    /// The mesh failed to start.
    #[error(transparent)]
    Mesh(#[from] warren_mesh::MeshError),
    /// The mesh task stopped while the node ran.
    #[error("the mesh stopped unexpectedly")]
    MeshStopped,
    /// The store holds data of which nothing loads.
    #[error("the desired state in {0} does not load (see the warnings above); move it aside and rejoin with a join token")]
    Unreadable(PathBuf),
    /// The data dir holds no cluster and neither `--init` nor `--join` was given.
    #[error("{0} holds no cluster: pass --init NAME to create one or --join TOKEN to join one")]
    NoCluster(PathBuf),
    /// A join token that does not parse.
    #[error("bad join token: {0}")]
    BadToken(String),
    /// The admitting member refused the join.
    #[error("join refused by {peer}: {reason}")]
    JoinRefused {
        /// The member that refused.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// Admitted, but the cluster's desired state could not be fetched; starting again with
    /// the same token resumes (an admitted identity is answered again).
    #[error("admitted, but fetching the cluster's desired state failed: {0}; start again with the same token")]
    CatchUp(#[from] crate::join::CatchUpError),
    /// No bootstrap peer answered in time.
    #[error("could not reach any bootstrap peer of the join token within {0:?}")]
    JoinTimeout(Duration),
    /// The API address cannot be bound.
    #[error("cannot serve the API on {addr}: {reason}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The remote API's certificate or key cannot be loaded or generated.
    #[error("TLS for the remote API: {0}")]
    Tls(String),
}

/// How long a joining node keeps trying to reach a bootstrap peer.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

// The machine bounds what it sends by the mesh's limits, which it cannot see (warren-core
// does not depend on the mesh): they must agree.
const _: () = assert!(protocol::MAX_REQUEST_BYTES == warren_mesh::MAX_REQUEST_BODY);
const _: () = assert!(protocol::MAX_RESPONSE_BYTES == warren_mesh::MAX_RESPONSE_BODY);

/// Runs a node until `cancel` fires. Errors are the reasons it could not start or had to stop.
pub async fn run(config: NodeConfig, cancel: CancellationToken) -> Result<(), NodeError> {
    if !config.api.ip().is_loopback() {
        // The loopback API takes writes without credentials: anyone who reaches it runs the
        // cluster. Other addresses get the remote API, with TLS and operator tokens.
        return Err(NodeError::Api {
            addr: config.api,
            reason: "--api takes no credential, so it listens on loopback only (127.0.0.1 or \
                     ::1); serve other addresses with --api-remote ADDR (HTTPS, operator \
                     tokens from `warren-cli api-token create`)"
                .into(),
        });
    }
    if config.api_remote == Some(config.api) {
        return Err(NodeError::Api {
            addr: config.api,
            reason: "--api and --api-remote name the same address".into(),
        });
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| NodeError::DataDir {
        path: data_dir.clone(),
        reason: e.to_string(),
    })?;
    let keypair = identity::load_or_create(&data_dir)?;
    let secret_keys = identity::load_or_create_x25519(&data_dir)?;
    let peer_id = keypair.public().to_peer_id();
    let me = NodeId(peer_id.to_string());
    let span = tracing::info_span!("node", node = %config.name, peer = %me.short());
    run_node(config, cancel, keypair, secret_keys, me, data_dir)
        .instrument(span)
        .await
}

async fn run_node(
    config: NodeConfig,
    cancel: CancellationToken,
    keypair: warren_mesh::Keypair,
    secret_keys: crate::secrets::SecretKeys,
    me: NodeId,
    data_dir: PathBuf,
) -> Result<(), NodeError> {
    let peer_id = keypair.public().to_peer_id();

    // Only the endpoint is checked here: the engine may come later (or go and come back);
    // the reconcile loop connects, reports and retries.
    let engine_endpoint = DockerRuntime::resolve_endpoint(config.docker_host.as_deref())?;
    let mut store = Store::open(&data_dir)?;
    let loaded = store.load(&me)?;
    if loaded.skipped_chunks > 0 {
        warn!(
            skipped = loaded.skipped_chunks,
            held = loaded.held_changes,
            repaired = loaded.repaired,
            details = ?loaded.skipped,
            store = %store.path().display(),
            "the desired state had corrupt chunks; started from the last good state"
        );
        if loaded.state.is_none() {
            // Unreadable data is not a fresh data dir: never --init or --join over it.
            return Err(NodeError::Unreadable(store.path().to_path_buf()));
        }
    }
    let join_token = config
        .join
        .as_deref()
        .map(|text| JoinToken::decode(text).map_err(|e| NodeError::BadToken(e.to_string())))
        .transpose()?;
    let cluster_id = match (&loaded.state, &config.init, &join_token) {
        (Some(state), _, _) => {
            if config.init.is_some() || join_token.is_some() {
                warn!("this data dir already holds a cluster; --init/--join ignored");
            }
            state.cluster().map(|c| c.id).unwrap_or_default()
        }
        (None, Some(_), _) => hex::encode(rand::random::<[u8; 8]>()),
        (None, None, Some(token)) => token.cluster_id.clone(),
        (None, None, None) => return Err(NodeError::NoCluster(data_dir)),
    };

    let mut mesh_config = MeshConfig::new(keypair, cluster_id.clone());
    mesh_config.listen = config.listen.clone();
    mesh_config.bootstrap = config.bootstrap.clone();
    if loaded.state.is_none() {
        if let Some(token) = &join_token {
            mesh_config
                .bootstrap
                .extend(token.bootstrap.iter().filter_map(|a| a.parse().ok()));
        }
    }
    let (mesh, mut events) = warren_mesh::spawn(mesh_config).await?;
    let listen_addrs = wait_for_listen_addrs(&mesh).await;
    let my_addrs: Vec<String> = listen_addrs
        .iter()
        .map(|a| format!("{a}/p2p/{peer_id}"))
        .collect();

    let state = match (loaded.state, &config.init, &join_token) {
        (Some(state), _, _) => state,
        (None, Some(cluster_name), _) => {
            let now_ms = wall_ms();
            let founder = Member {
                id: me.clone(),
                name: config.name.clone(),
                addrs: my_addrs.clone(),
                labels: config.labels.clone(),
                capabilities: Default::default(),
                platform: Default::default(),
                admitted_by: me.clone(),
                admitted_at: now_ms,
                state: MemberState::Active,
                availability: Default::default(),
            };
            let info = ClusterInfo {
                id: cluster_id.clone(),
                name: cluster_name.clone(),
                created_at: now_ms,
            };
            let mut state = DesiredState::new_cluster(&info, &founder)?;
            let (token, record) = JoinToken::mint(
                &mut rand::rngs::OsRng,
                &cluster_id,
                &founder.id.to_string(),
                my_addrs.clone(),
                now_ms / 1000,
                &crate::token::TokenGrant::single_use(3_600),
            );
            state.add_token(&record)?;
            store.persist(&mut state, true)?;
            info!(cluster = %cluster_name, id = %cluster_id, "created a new cluster");
            eprintln!("cluster {cluster_name} created; a single-use join token, valid 1 h:");
            println!("{}", token.encode());
            state
        }
        (None, None, Some(token)) => {
            let mut state = join(
                &mesh,
                &mut events,
                &me,
                &config,
                token,
                &my_addrs,
                &secret_keys.public_hex(),
            )
            .await?;
            store.persist(&mut state, true)?;
            state
        }
        (None, None, None) => return Err(NodeError::NoCluster(data_dir)),
    };

    let origin = Instant::now();
    let machine_config = MachineConfig {
        core: config.core,
        renew_ms: config.renew_interval.as_millis() as u64,
        report_ms: config.report_interval.as_millis() as u64,
        anti_entropy_ms: config.anti_entropy_interval.as_millis() as u64,
        ..MachineConfig::default()
    };
    let (command_tx, command_rx) = mpsc::channel(256);
    let (desired_tx, desired_rx) = watch::channel(None);
    let (secrets_tx, secrets_rx) = watch::channel(Arc::new(BTreeMap::new()));
    let reconciler_keys =
        crate::secrets::SecretKeys::from_bytes(&secret_keys.to_bytes()).map_err(|e| {
            NodeError::Identity {
                path: data_dir.join("x25519.key"),
                reason: e.to_string(),
            }
        })?;
    let (status_tx, status_rx) = watch::channel(Vec::new());
    let (engine_tx, engine_rx) = watch::channel(None);
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(crate::machine::Snapshot::default()));

    let mut remote_line = String::new();
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .map_err(|e| NodeError::Api {
            addr: config.api,
            reason: e.to_string(),
        })?;
    let api_addr = listener.local_addr().unwrap_or(config.api);
    let log_service = Arc::new(logs::LogService::new(
        config.docker_host.clone(),
        me.clone(),
        config.name.clone(),
        mesh.clone(),
    ));
    // The DNS for tasks reads the view and asks for reports like the API does.
    let names_inputs = (snapshot_rx.clone(), command_tx.clone());
    let (images_tx, images_rx) = watch::channel(Vec::new());
    let images_task = image_platforms::spawn(
        config.docker_host.clone(),
        snapshot_rx.clone(),
        images_tx,
        cancel.clone(),
    );
    // The overlay task's channels, made here: the DNS for tasks and the routing mesh wait on
    // its status.
    let (overlay_link, overlay_side) = overlay::link();
    // The routing mesh reads the view, asks for reports and reaches other nodes' tasks over
    // the overlay while it is on.
    let (ingress, ingress_task) = ingress::spawn(
        config.ingress.clone(),
        snapshot_rx.clone(),
        command_tx.clone(),
        overlay_link.status.clone(),
        cancel.clone(),
    );
    // Counters shared with the reconcile loop, the actor and both APIs; state read at scrape.
    let metrics = Arc::new(metrics::Metrics::new(snapshot_rx.clone()));
    let api_state = api::ApiState {
        metrics: Arc::clone(&metrics),
        snapshot: snapshot_rx,
        commands: command_tx,
        ingress,
        logs: Arc::clone(&log_service),
        docker_host: config.docker_host.clone(),
    };
    let remote_task = match config.api_remote {
        Some(addr) => {
            let names = certificate_names(&config, addr, &listen_addrs);
            let (task, bound) =
                serve_remote(addr, &config, &data_dir, &names, api_state.clone(), &cancel).await?;
            remote_line = format!(", remote API https://{bound}");
            Some(task)
        }
        None => None,
    };
    let router = api::router(api_state);
    let api_cancel = cancel.clone();
    let api_task = tokio::spawn(
        async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { api_cancel.cancelled().await });
            if let Err(e) = serve.await {
                warn!(error = %e, "the API server stopped");
            }
        }
        .in_current_span(),
    );
    let wireguard = config
        .overlay
        .then(|| identity::load_or_create_wireguard(&data_dir))
        .transpose()?;
    let (dns_serving, dns_ready) = watch::channel(None);
    let overlay = wireguard.as_ref().map(|key| {
        let interface = &config.overlay_interface;
        // Absolute: the engine bind-mounts it into tasks.
        let resolv = std::path::absolute(&data_dir)
            .unwrap_or_else(|_| data_dir.clone())
            .join("resolv.conf");
        reconciler::OverlayConfig::new(
            &cluster_id,
            &key.public(),
            &me,
            interface,
            dns_ready,
            resolv,
        )
    });
    let names_task = overlay.as_ref().map(|overlay| {
        let (snapshots, commands) = names_inputs;
        let run = names::run(
            overlay.node_ip,
            overlay.resolv_conf.clone(),
            snapshots,
            commands,
            overlay_link.status.clone(),
            dns_serving,
            cancel.clone(),
        );
        tokio::spawn(run.in_current_span())
    });
    let reconciler = tokio::spawn(
        reconciler::run(
            reconciler::DockerConnector {
                host: config.docker_host.clone(),
                endpoint: engine_endpoint,
            },
            me.clone(),
            desired_rx,
            reconciler::Reports {
                tasks: status_tx,
                engine: engine_tx,
                metrics: Arc::clone(&metrics),
            },
            reconciler::SecretContext {
                keys: reconciler_keys,
                records: secrets_rx,
                root: secret_files::root(&me),
                allow_host_paths: config.allow_host_paths,
            },
            overlay,
            config.reconcile_interval,
            config.deregistration_delay,
            cancel.clone(),
        )
        .in_current_span(),
    );

    eprintln!(
        "warren-node {} ({}) up: API http://{api_addr}{remote_line}, listening on {}",
        config.name,
        peer_id,
        my_addrs.join(" ")
    );
    let mut machine = NodeMachine::new(
        me,
        config.name.clone(),
        format!("http://{api_addr}"),
        state,
        machine_config,
        Millis(0),
        rand::random(),
    );
    for addr in &listen_addrs {
        machine.handle_listen_addr(addr.to_string());
    }
    machine.set_secret_keys(secret_keys);
    let description = crate::machine::OwnDescription {
        labels: config.labels.clone(),
        capabilities: {
            let mut capabilities = config.capabilities.clone();
            if config.allow_host_paths {
                capabilities.insert(crate::core::volumes::HOST_PATHS_CAPABILITY.to_string());
            }
            capabilities
        },
        platform: warren_crdt::Platform::current(),
    };
    // Each flag was checked as it was parsed; this checks the counts.
    description.validate()?;
    machine.describe_self(description);
    let overlay_task = overlay::spawn(
        overlay::Setup::load(&config, &data_dir, &cluster_id, &mut machine)?,
        overlay_side,
        cancel.clone(),
    );
    let capacity = crate::system::read_capacity();
    match capacity {
        Some(c) => info!(
            cpus = %crate::core::format_cpus(c.nano_cpus),
            memory = %crate::core::format_bytes(c.memory_bytes),
            "capacity offered to reservations"
        ),
        None => {
            warn!("could not read this node's CPUs and memory; reservations are not limited here")
        }
    }
    machine.set_capacity(capacity);
    machine.set_usage(crate::system::read_usage());
    let gpus = tokio::task::spawn_blocking(crate::system::read_gpus)
        .await
        .unwrap_or_default();
    if !gpus.is_empty() {
        info!(count = gpus.len(), first = %gpus[0].name, "GPUs found (nvidia-smi)");
    }
    machine.set_gpus(gpus);
    let actor = actor::NodeActor::new(machine, store, origin, mesh, metrics);
    let wiring = actor::Wiring {
        commands: command_rx,
        events,
        desired_tx,
        secrets_tx,
        local_status: status_rx,
        engine_status: engine_rx,
        snapshot_tx,
        logs: log_service,
        overlay: overlay_link,
        images: images_rx,
    };
    let result = actor.run(wiring, cancel.clone()).await;
    cancel.cancel();
    let _ = api_task.await;
    if let Some(task) = remote_task {
        let _ = task.await;
    }
    let _ = reconciler.await;
    if let Some(task) = names_task {
        let _ = task.await;
    }
    let _ = overlay_task.await;
    let _ = images_task.await;
    if let Some(task) = ingress_task {
        let _ = task.await;
    }
    result
}

/// Names and addresses a generated certificate of the remote API covers: localhost, the
/// loopback addresses, the host name, the node name, the remote API's address when it is a
/// specific one, and the IP addresses the mesh listens on (an unspecified `0.0.0.0` expands to
/// each interface there). `--tls-san` adds more.
fn certificate_names(config: &NodeConfig, remote: SocketAddr, listen: &[Multiaddr]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        names.push(host.trim().to_string());
    }
    names.push(config.name.clone());
    if !remote.ip().is_unspecified() {
        names.push(remote.ip().to_string());
    }
    for addr in listen {
        let text = addr.to_string();
        let mut parts = text.split('/').skip(1);
        if let (Some("ip4" | "ip6"), Some(ip)) = (parts.next(), parts.next()) {
            if ip
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_unspecified())
            {
                names.push(ip.to_string());
            }
        }
    }
    names
}

/// Binds the remote API on `addr` with TLS (loading or generating the certificate) and serves
/// it until `cancel` fires. Returns the server's task and the bound address.
///
/// Errors: [`NodeError::Tls`] for the certificate, [`NodeError::Api`] for the socket.
async fn serve_remote(
    addr: SocketAddr,
    config: &NodeConfig,
    data_dir: &std::path::Path,
    names: &[String],
    state: api::ApiState,
    cancel: &CancellationToken,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), NodeError> {
    let setup = tls::load_or_generate(data_dir, &config.tls, names).map_err(NodeError::Tls)?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Api {
            addr,
            reason: e.to_string(),
        })?;
    let bound = tcp.local_addr().unwrap_or(addr);
    let listener =
        tls::TlsListener::spawn(tcp, setup.config, tls::Limits::default(), cancel.clone())
            .map_err(|e| NodeError::Api {
                addr,
                reason: e.to_string(),
            })?;
    if setup.generated {
        info!(cert = %setup.cert_path.display(), sha256 = %setup.fingerprint, "generated a self-signed certificate for the remote API");
    }
    info!(
        addr = %bound,
        cert = %setup.cert_path.display(),
        sha256 = %setup.fingerprint,
        "remote API: HTTPS, operator token required; clients trust the certificate with \
         warren-cli --tls-ca"
    );
    let router = api::remote_router(state);
    let stop = cancel.clone();
    let task = tokio::spawn(
        async move {
            let serve = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<tls::ClientAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                warn!(error = %e, "the remote API server stopped");
            }
        }
        .in_current_span(),
    );
    Ok((task, bound))
}

/// The wall clock in Unix milliseconds: for records people read (admission time, token
/// expiry), never for lease or liveness decisions.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Waits up to 5 s for the mesh to report its listen addresses.
async fn wait_for_listen_addrs(mesh: &MeshHandle) -> Vec<Multiaddr> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(stats) = mesh.stats().await {
            if !stats.listen_addrs.is_empty() || Instant::now() > deadline {
                return stats.listen_addrs;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presents `token` to its bootstrap peers until one admits this node or refuses (an error: a
/// refused token will not become valid by retrying), then fetches the cluster's document from
/// the admitting member ([`catch_up`]) and returns it whole: the machine starts only over the
/// complete state. A member older than issue 13 answers with the whole document instead,
/// which is loaded as before.
async fn join(
    mesh: &MeshHandle,
    events: &mut mpsc::Receiver<MeshEvent>,
    me: &NodeId,
    config: &NodeConfig,
    token: &JoinToken,
    my_addrs: &[String],
    x25519_public: &str,
) -> Result<DesiredState, NodeError> {
    let peers: Vec<PeerId> = token
        .bootstrap
        .iter()
        .filter_map(|a| a.rsplit_once("/p2p/").and_then(|(_, p)| p.parse().ok()))
        .collect();
    if peers.is_empty() {
        return Err(NodeError::BadToken(
            "the token names no bootstrap peer".into(),
        ));
    }
    let request = serde_json::to_vec(&protocol::JoinRequest {
        token: token.encode(),
        name: config.name.clone(),
        addrs: my_addrs.to_vec(),
        labels: config.labels.clone(),
        x25519_public_key: x25519_public.to_string(),
        sync_after: true,
    })
    .map_err(|e| NodeError::BadToken(e.to_string()))?;
    let deadline = Instant::now() + JOIN_DEADLINE;
    info!(bootstrap = ?token.bootstrap, "joining cluster {}", token.cluster_id);
    while Instant::now() < deadline {
        // Events before admission carry nothing for us; drain them so the mesh never stalls.
        while events.try_recv().is_ok() {}
        let connected = mesh.stats().await?.connected_peers;
        for peer in peers.iter().filter(|p| connected.contains(p)) {
            match mesh
                .request(*peer, RequestKind::Join, request.clone())
                .await
            {
                Ok(Response::Ok(answer)) => {
                    if let Some(answer) = protocol::JoinAnswer::decode(&answer) {
                        info!(%peer, "admitted to the cluster; fetching its desired state");
                        return catch_up(mesh, events, me, *peer, &answer).await;
                    }
                    // A member older than issue 13 answers with its whole document. Loading a
                    // peer's whole document is what Automerge cannot bound (a few KB can
                    // declare gigabytes of columns: fuzz/README.md, "Open findings"), so a
                    // joining node takes the document only in sync rounds, change by change.
                    return Err(NodeError::JoinRefused {
                        peer: peer.to_string(),
                        reason: format!(
                            "the member answered with its whole document ({} bytes), as \
                             versions before the sync join do; upgrade that member, or join \
                             with a token minted at an upgraded one",
                            answer.len()
                        ),
                    });
                }
                Ok(Response::Refused(reason)) => {
                    return Err(NodeError::JoinRefused {
                        peer: peer.to_string(),
                        reason,
                    })
                }
                Err(e) => warn!(%peer, error = %e, "join request failed; retrying"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(NodeError::JoinTimeout(JOIN_DEADLINE))
}

/// Fetches the cluster's document from `admitter` after an admission answered with `answer`,
/// in sync round trips ([`warren_core::join::CatchUp`]), each message within the mesh's
/// limits. The members the answer names become the mesh's member set first, so that the
/// admitter's connection is not closed as a stranger's. Members' own requests are refused
/// meanwhile (this node has no machine to answer them yet; their dialogues resume later).
///
/// Errors: [`NodeError::CatchUp`] after too many rounds or for a state that does not list
/// this node, [`NodeError::MeshStopped`].
async fn catch_up(
    mesh: &MeshHandle,
    events: &mut mpsc::Receiver<MeshEvent>,
    me: &NodeId,
    admitter: PeerId,
    answer: &protocol::JoinAnswer,
) -> Result<DesiredState, NodeError> {
    let members: std::collections::HashMap<PeerId, Vec<Multiaddr>> = answer
        .members
        .iter()
        .filter_map(|(id, addrs)| {
            let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
            Some((id.parse().ok()?, addrs))
        })
        .collect();
    mesh.set_members(members)
        .await
        .map_err(|_| NodeError::MeshStopped)?;
    let started = Instant::now();
    let mut fetched = 0usize;
    let mut catch_up = crate::join::CatchUp::new(me.clone(), answer);
    while let Some(body) = catch_up.next_request()? {
        while let Ok(event) = events.try_recv() {
            if let MeshEvent::Request { reply, .. } = event {
                let refusal = Response::Refused("catching up with the cluster's state".into());
                let _ = mesh.respond(reply, refusal).await;
            }
        }
        let response = match mesh.request(admitter, RequestKind::Sync, body).await {
            Ok(Response::Ok(body)) => Ok(body),
            Ok(Response::Refused(reason)) => Err(reason),
            Err(e) => Err(e.to_string()),
        };
        match &response {
            Ok(body) => fetched += body.len(),
            Err(reason) => {
                warn!(peer = %admitter, %reason, "a sync round failed while catching up; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        catch_up.handle_response(response.as_deref().map_err(Clone::clone));
    }
    let rounds = catch_up.rounds();
    let state = catch_up.finish()?;
    info!(
        rounds,
        bytes = fetched,
        ms = started.elapsed().as_millis() as u64,
        "caught up with the cluster's desired state"
    );
    Ok(state)
}
