//! The routing mesh on one node (issue 15, part 4): one TCP listener on
//! `--ingress-addr:PORT` per ingress port of the live services, each connection forwarded to
//! a backend task by a userspace proxy ([`tokio::io::copy_bidirectional`]).
//!
//! - **Which tasks, what weight**: the core's rule ([`warren_core::core::ingress`]) over the
//!   node's view, recomputed whenever the view's snapshot or the overlay's state changes and
//!   published to the listeners through a `watch` channel (a connection clones one `Arc`).
//!   While it runs, the node asks every member for its task reports (as the DNS does).
//! - **Spreading**: smooth weighted round-robin per port ([`WeightedPicker`]); the picked
//!   backend's addresses are tried in order, each with [`IngressConfig::connect_timeout`], then
//!   the other backends in turn. An address that failed is skipped for [`EJECT_FOR`] unless
//!   nothing else is left. A connection no backend takes is closed at once (counted).
//! - **Bounded**: at most [`IngressConfig::max_connections`] proxied connections at once on
//!   the node; one over the cap is closed at once (counted). No queue: the accept loop never
//!   waits for a slot.
//! - **A port it cannot bind** (in use: several nodes on one host share `127.0.0.1`) is tried
//!   again with backoff ([`BIND_RETRY_FIRST`] doubling to [`BIND_RETRY_MAX`]), logged as a
//!   warning with the reason when the reason changes, and shown in [`IngressStatus`]
//!   (`cluster status`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use warren_core::core::ingress::{
    ingress_table, IngressContext, IngressRoute, IngressTable, TrafficSplit, WeightedPicker,
};
use warren_crdt::{NodeId, ServiceName};

use super::actor::Command;
use crate::machine::Snapshot;
use crate::protocol::OverlayStatus;

/// First wait before binding a port again after a failure.
pub const BIND_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to bind a port.
pub const BIND_RETRY_MAX: Duration = Duration::from_secs(10);
/// How long an address that refused or timed out a connection is skipped (while another is
/// left): the reports that take a dead task out of the table lag by up to a report period.
pub const EJECT_FOR: Duration = Duration::from_secs(5);

/// The routing mesh's settings on one node.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Where ingress ports are accepted (`--ingress-addr`, default `127.0.0.1`); `None`
    /// (`--ingress-addr none`): no routing mesh on this node.
    pub addr: Option<IpAddr>,
    /// Most proxied connections at once on this node (`--ingress-max-connections`, default
    /// 4096); at least 1.
    pub max_connections: usize,
    /// How long one connection attempt to a backend address may take before the next one is
    /// tried (default 2 s).
    pub connect_timeout: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            max_connections: 4096,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of one node's proxy, since it started.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections forwarded to a backend.
    pub proxied: AtomicU64,
    /// Connections closed at once: no backend took them (none eligible, or all refused).
    pub no_backend: AtomicU64,
    /// Connections closed at once: the node was at its cap.
    pub over_capacity: AtomicU64,
    /// Connection attempts to a backend address that failed or timed out.
    pub connect_failures: AtomicU64,
}

/// One port's route with its picker: what a connection reads.
struct RouteState {
    route: IngressRoute,
    picker: Mutex<WeightedPicker>,
}

/// The routes the listeners serve, per published port; replaced as a whole on each change.
#[derive(Default)]
pub struct Routes {
    by_port: HashMap<u16, RouteState>,
}

impl Routes {
    /// The routes of `table` (each with a fresh picker over its backends' weights).
    pub fn from_table(table: &IngressTable) -> Self {
        Self {
            by_port: table
                .routes
                .iter()
                .map(|(port, route)| {
                    let picker = WeightedPicker::new(route.backends.iter().map(|b| b.weight));
                    (
                        *port,
                        RouteState {
                            route: route.clone(),
                            picker: Mutex::new(picker),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The addresses to try for one connection to `port`, in order: the picked backend's,
    /// then the others' (from the next one on); empty without a route or backend.
    fn candidates(&self, port: u16) -> Vec<SocketAddr> {
        let Some(state) = self.by_port.get(&port) else {
            return Vec::new();
        };
        let backends = &state.route.backends;
        let first = match state.picker.lock() {
            Ok(mut picker) => picker.pick(),
            Err(poisoned) => poisoned.into_inner().pick(),
        };
        let Some(first) = first else {
            return Vec::new();
        };
        (0..backends.len())
            .map(|i| (first + i) % backends.len())
            .filter_map(|i| backends.get(i))
            .flat_map(|b| b.addrs.iter().copied())
            .collect()
    }
}

/// The proxy shared by a node's listeners: the routes, the cap, the counters and the
/// addresses skipped for a while.
pub struct Proxy {
    routes: watch::Receiver<Arc<Routes>>,
    slots: Arc<Semaphore>,
    cap: usize,
    connect_timeout: Duration,
    stats: Arc<ProxyStats>,
    /// Address → until when it is skipped; bounded by the number of backend addresses
    /// (expired entries are dropped on each failure).
    ejected: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Proxy {
    /// A proxy serving `routes` (replace them by sending on the channel) with `config`'s cap
    /// and connect timeout.
    pub fn new(config: &IngressConfig, routes: watch::Receiver<Arc<Routes>>) -> Arc<Self> {
        Arc::new(Self {
            routes,
            slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            cap: config.max_connections.max(1),
            connect_timeout: config.connect_timeout,
            stats: Arc::default(),
            ejected: Mutex::new(HashMap::new()),
        })
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// Connections being proxied now.
    pub fn active(&self) -> usize {
        self.cap.saturating_sub(self.slots.available_permits())
    }

    /// Accepts connections on `listener` for published port `port` until `cancel`, each
    /// proxied by a task of its own (connections in flight end on their own).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        port: u16,
        cancel: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (client, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    debug!(port, error = %e, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                self.stats.over_capacity.fetch_add(1, Ordering::Relaxed);
                debug!(port, %peer, "ingress connection closed: at the connection cap");
                continue;
            };
            let proxy = Arc::clone(&self);
            tokio::spawn(async move {
                proxy.forward(client, port).await;
                drop(slot);
            });
        }
    }

    async fn forward(&self, mut client: TcpStream, port: u16) {
        let routes = self.routes.borrow().clone();
        let candidates = routes.candidates(port);
        drop(routes);
        let now = Instant::now();
        let skipped: Vec<SocketAddr> = match self.ejected.lock() {
            Ok(ejected) => candidates
                .iter()
                .filter(|a| ejected.get(a).is_some_and(|until| *until > now))
                .copied()
                .collect(),
            Err(_) => Vec::new(),
        };
        // Addresses not ejected first, the ejected ones last (better than nothing).
        let ordered = candidates
            .iter()
            .filter(|a| !skipped.contains(a))
            .chain(candidates.iter().filter(|a| skipped.contains(a)));
        for addr in ordered {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(mut backend)) => {
                    self.stats.proxied.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = backend.set_nodelay(true);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                        debug!(port, %addr, error = %e, "ingress connection ended with an error");
                    }
                    return;
                }
                Ok(Err(e)) => self.failed(port, *addr, &e.to_string()),
                Err(_) => self.failed(port, *addr, "connect timed out"),
            }
        }
        self.stats.no_backend.fetch_add(1, Ordering::Relaxed);
        debug!(port, "ingress connection closed: no backend took it");
    }

    fn failed(&self, port: u16, addr: SocketAddr, reason: &str) {
        self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        debug!(port, %addr, reason, "ingress backend refused; trying the next");
        if let Ok(mut ejected) = self.ejected.lock() {
            let now = Instant::now();
            ejected.retain(|_, until| *until > now);
            ejected.insert(addr, now + EJECT_FOR);
        }
    }
}

/// One ingress port as the operator sees it on this node.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortState {
    /// The published port.
    pub port: u16,
    /// The service it forwards to.
    pub service: ServiceName,
    /// Whether this node accepts it now.
    pub listening: bool,
    /// Why not, while it does not (e.g. `ingress port 8080 on 127.0.0.1: address in use`).
    pub error: Option<String>,
    /// Tasks that take its connections now.
    pub backends: usize,
}

/// The routing mesh on this node, for `GET /v1/status` (`cluster status`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct IngressStatus {
    /// Where it accepts connections; `None`: no routing mesh on this node.
    pub addr: Option<IpAddr>,
    /// Its ports, by number.
    pub ports: Vec<PortState>,
    /// `(port, service)` of services asking a port another service keeps.
    pub conflicts: Vec<(u16, ServiceName)>,
    /// Connections proxied now.
    pub active: usize,
    /// Connections forwarded since start.
    pub proxied: u64,
    /// Connections closed at once since start: no backend took them.
    pub no_backend: u64,
    /// Connections closed at once since start: at the connection cap.
    pub over_capacity: u64,
    /// Failed connection attempts to backends since start.
    pub connect_failures: u64,
}

/// What the API reads of the routing mesh: cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct IngressHandle {
    addr: Option<IpAddr>,
    ports: Arc<Mutex<BTreeMap<u16, PortState>>>,
    conflicts: Arc<Mutex<Vec<(u16, ServiceName)>>>,
    proxy: Option<Arc<Proxy>>,
}

impl IngressHandle {
    /// The routing mesh's state now.
    pub(crate) fn status(&self) -> IngressStatus {
        let ports = self
            .ports
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        let conflicts = self.conflicts.lock().map(|c| c.clone()).unwrap_or_default();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        match &self.proxy {
            Some(proxy) => {
                let stats = proxy.stats();
                IngressStatus {
                    addr: self.addr,
                    ports,
                    conflicts,
                    active: proxy.active(),
                    proxied: count(&stats.proxied),
                    no_backend: count(&stats.no_backend),
                    over_capacity: count(&stats.over_capacity),
                    connect_failures: count(&stats.connect_failures),
                }
            }
            None => IngressStatus::default(),
        }
    }
}

fn set_port(ports: &Mutex<BTreeMap<u16, PortState>>, port: u16, f: impl FnOnce(&mut PortState)) {
    if let Ok(mut ports) = ports.lock() {
        if let Some(state) = ports.get_mut(&port) {
            f(state);
        }
    }
}

/// Starts the routing mesh of this node (nothing with `config.addr` `None`): returns the
/// handle the API reads and the task that runs it until `cancel`.
pub(crate) fn spawn(
    config: IngressConfig,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Command>,
    overlay: watch::Receiver<Option<OverlayStatus>>,
    cancel: CancellationToken,
) -> (IngressHandle, Option<tokio::task::JoinHandle<()>>) {
    let Some(addr) = config.addr else {
        info!("no routing mesh on this node (--ingress-addr none)");
        return (IngressHandle::default(), None);
    };
    let (routes_tx, routes_rx) = watch::channel(Arc::new(Routes::default()));
    let proxy = Proxy::new(&config, routes_rx);
    let handle = IngressHandle {
        addr: Some(addr),
        ports: Arc::default(),
        conflicts: Arc::default(),
        proxy: Some(Arc::clone(&proxy)),
    };
    let task = tokio::spawn(
        manage(
            addr,
            proxy,
            routes_tx,
            handle.clone(),
            snapshots,
            commands,
            overlay,
            cancel,
        )
        .in_current_span(),
    );
    (handle, Some(task))
}

/// Keeps the listeners and the routes in step with the view.
#[allow(clippy::too_many_arguments)]
async fn manage(
    addr: IpAddr,
    proxy: Arc<Proxy>,
    routes: watch::Sender<Arc<Routes>>,
    handle: IngressHandle,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Command>,
    mut overlay: watch::Receiver<Option<OverlayStatus>>,
    cancel: CancellationToken,
) {
    let mut listeners: BTreeMap<u16, CancellationToken> = BTreeMap::new();
    let mut current = IngressTable::default();
    let mut logged_conflicts: Vec<(u16, ServiceName)> = Vec::new();
    let mut ask = tokio::time::interval(Duration::from_millis(warren_core::machine::WANT_MS / 2));
    // Until the overlay task ends (then its last word stands).
    let mut overlay_open = true;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let overlay_on = matches!(
            overlay.borrow_and_update().as_ref(),
            Some(OverlayStatus::On { .. })
        );
        if let Some(me) = snapshot.node.clone() {
            let table = table_of(&snapshot, &me, overlay_on);
            if table != current {
                routes.send_replace(Arc::new(Routes::from_table(&table)));
                update_listeners(addr, &proxy, &handle, &table, &mut listeners, &cancel);
                if table.conflicts != logged_conflicts {
                    for (port, service) in &table.conflicts {
                        warn!(port, %service, "ingress port asked by two services: the other keeps it");
                    }
                    logged_conflicts = table.conflicts.clone();
                }
                if let Ok(mut c) = handle.conflicts.lock() {
                    *c = table.conflicts.clone();
                }
                current = table;
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            changed = snapshots.changed() => if changed.is_err() { break },
            changed = overlay.changed(), if overlay_open => if changed.is_err() {
                // The overlay task ended: keep serving with what is known.
                overlay_open = false;
            },
            _ = ask.tick() => {
                // The tasks of other members come with their reports, sent to askers only.
                if !current.routes.is_empty() {
                    let (reply, _) = oneshot::channel();
                    let _ = commands.try_send(Command::WantReports { reply });
                }
            }
        }
    }
    for token in listeners.values() {
        token.cancel();
    }
}

/// The table this node serves: the core's rule over its view (the slots' tasks and the
/// older copies rollouts keep beside them), split between generations as each service's
/// rollout says.
fn table_of(snapshot: &Snapshot, me: &NodeId, overlay_on: bool) -> IngressTable {
    let tasks: Vec<_> = snapshot
        .tasks
        .iter()
        .chain(&snapshot.previous_tasks)
        .cloned()
        .collect();
    ingress_table(
        snapshot.live_services(),
        &tasks,
        &snapshot.members,
        &TrafficSplit::of_services(snapshot.live_services()),
        IngressContext { me, overlay_on },
    )
}

/// Opens a listener for each new port, closes those of ports gone, refreshes the states.
fn update_listeners(
    addr: IpAddr,
    proxy: &Arc<Proxy>,
    handle: &IngressHandle,
    table: &IngressTable,
    listeners: &mut BTreeMap<u16, CancellationToken>,
    cancel: &CancellationToken,
) {
    listeners.retain(|port, token| {
        let keep = table.routes.contains_key(port);
        if !keep {
            token.cancel();
            info!(port, "ingress port closed: no live service publishes it");
        }
        keep
    });
    if let Ok(mut ports) = handle.ports.lock() {
        ports.retain(|port, _| table.routes.contains_key(port));
        for (port, route) in &table.routes {
            let state = ports.entry(*port).or_insert_with(|| PortState {
                port: *port,
                service: route.service.clone(),
                listening: false,
                error: None,
                backends: 0,
            });
            state.service = route.service.clone();
            state.backends = route.backends.len();
        }
    }
    for port in table.routes.keys() {
        if listeners.contains_key(port) {
            continue;
        }
        let token = cancel.child_token();
        listeners.insert(*port, token.clone());
        let run = listen(
            SocketAddr::new(addr, *port),
            Arc::clone(proxy),
            Arc::clone(&handle.ports),
            token,
        );
        tokio::spawn(run.in_current_span());
    }
}

/// Binds `listen` (again and again with backoff while that fails), then serves it.
async fn listen(
    listen: SocketAddr,
    proxy: Arc<Proxy>,
    ports: Arc<Mutex<BTreeMap<u16, PortState>>>,
    cancel: CancellationToken,
) {
    let port = listen.port();
    let mut delay = BIND_RETRY_FIRST;
    let mut last_reason = String::new();
    let listener = loop {
        match TcpListener::bind(listen).await {
            Ok(listener) => break listener,
            Err(e) => {
                let reason = match e.kind() {
                    std::io::ErrorKind::AddrInUse => "address in use".to_string(),
                    _ => e.to_string(),
                };
                let error = format!("ingress port {port} on {}: {reason}", listen.ip());
                if reason != last_reason {
                    warn!(
                        port,
                        addr = %listen.ip(),
                        %reason,
                        "{error}; trying again with backoff"
                    );
                    last_reason = reason;
                }
                set_port(&ports, port, |s| {
                    s.listening = false;
                    s.error = Some(error);
                });
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(BIND_RETRY_MAX);
    };
    info!(%listen, "routing mesh accepts this ingress port");
    set_port(&ports, port, |s| {
        s.listening = true;
        s.error = None;
    });
    proxy.serve(listener, port, cancel).await;
}
