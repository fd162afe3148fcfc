//! The server: hickory's UDP loop and a bounded TCP loop around one [`RequestHandler`] that
//! answers from the current [`Zone`] or forwards upstream.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider, TokioTime};
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::{BufDnsStreamHandle, DnsError as NetDnsError, NetError, NoRecords};
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{AAAA, SOA};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_server::resolver::TokioResolver;
use hickory_server::server::{
    Request, RequestHandler, ResponseHandle, ResponseHandler, ResponseInfo, TimeoutStream,
};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::zone::{Resolution, Zone, DOMAIN};
use crate::DnsError;

/// The TTL of every answer from the zone, in seconds: a task that leaves the zone (stopped,
/// failed its health check) stops being handed out by caches within 5 s of its removal. Also
/// the SOA's negative-caching TTL (RFC 2308), so an NXDOMAIN is not remembered longer.
pub const TTL_SECS: u32 = 5;

/// How many times [`DnsServer::spawn`] retries when it binds port 0 and TCP finds the port
/// UDP got already taken.
const BIND_ATTEMPTS: usize = 16;

/// How long the TCP loop waits after a failed `accept` before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Outbound responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;

/// How [`DnsServer`] listens and forwards. Build with [`DnsConfig::new`] and adjust the
/// public fields; [`DnsServer::spawn`] checks them with [`DnsConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsConfig {
    /// Where to serve UDP and TCP, on the same port. The daemon uses `[overlay_ip]:53`;
    /// with port 0 the OS picks one port for both ([`DnsServer::local_addr`]).
    pub listen: SocketAddr,
    /// Upstream resolvers for names outside the zone, tried in order (UDP, then TCP for a
    /// truncated answer). Empty: such names are answered REFUSED. See
    /// [`crate::read_upstreams`] for the host's.
    pub upstreams: Vec<SocketAddr>,
    /// How long one forwarded query may take across all upstreams before it is answered
    /// SERVFAIL. Default 2 s: below the 5 s a libc stub waits, so the client sees the
    /// failure rather than its own timeout.
    pub forward_timeout: Duration,
    /// Forwarded queries in flight at once; a query beyond it is answered SERVFAIL at once.
    /// Default 64. Must be at least 1.
    pub max_forwards: usize,
    /// TCP connections served at once; more wait in the listen backlog. Default 64. Must be
    /// at least 1.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends no query for this long is closed. Default 5 s.
    pub tcp_idle_timeout: Duration,
    /// Answers cached from upstreams (hickory's resolver cache, bounded by TTLs). Default
    /// 1,024 entries.
    pub forward_cache_entries: u64,
}

impl DnsConfig {
    /// Serves on `listen` with no upstream and the documented defaults.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            upstreams: Vec::new(),
            forward_timeout: Duration::from_secs(2),
            max_forwards: 64,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(5),
            forward_cache_entries: 1_024,
        }
    }

    /// Checks the limits.
    ///
    /// # Errors
    ///
    /// [`DnsError::Config`] when `max_forwards` or `max_tcp_connections` is 0 or a timeout
    /// is zero.
    pub fn validate(&self) -> Result<(), DnsError> {
        let problem = if self.max_forwards == 0 {
            "max_forwards must be at least 1"
        } else if self.max_tcp_connections == 0 {
            "max_tcp_connections must be at least 1"
        } else if self.forward_timeout.is_zero() {
            "forward_timeout must not be zero"
        } else if self.tcp_idle_timeout.is_zero() {
            "tcp_idle_timeout must not be zero"
        } else {
            return Ok(());
        };
        Err(DnsError::Config(problem))
    }
}

/// A running DNS server; it stops when the [`CancellationToken`] given to
/// [`DnsServer::spawn`] is cancelled.
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), DnsError>>,
}

impl DnsServer {
    /// Binds UDP then TCP on `config.listen` (the same port for both) and serves, from the
    /// zone `zone` currently holds, until `cancel` is cancelled. A new zone sent on the watch
    /// channel answers from the next query on.
    ///
    /// Answers, all with TTL [`TTL_SECS`]:
    /// - `<service>.` and `<service>.warren.`: AAAA → the overlay address of every task of
    ///   the service, in an order rotated by one per query (round robin); another type or a
    ///   service with no task → NOERROR with no answer (and the zone's SOA);
    /// - `<slot>.<service>.warren.` → that task; `<node>.node.warren.` → the member;
    /// - any other name under `warren.` → NXDOMAIN, authoritative;
    /// - other names → forwarded to `config.upstreams` (SERVFAIL after
    ///   `config.forward_timeout` or when `config.max_forwards` are in flight), or REFUSED
    ///   when there is no upstream;
    /// - a class other than IN → REFUSED; an opcode other than QUERY → NOTIMP; a message that
    ///   does not parse → FORMERR (hickory) or, over TCP, the connection is closed.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`DnsError::Config`] for an invalid `config`, [`DnsError::Bind`] when a socket cannot
    /// be bound, [`DnsError::Upstream`] when the forwarding resolver cannot be built.
    pub async fn spawn(
        config: DnsConfig,
        zone: watch::Receiver<Arc<Zone>>,
        cancel: CancellationToken,
    ) -> Result<Self, DnsError> {
        config.validate()?;
        // Ours to cancel when the UDP loop dies, without cancelling the caller's token.
        let cancel = cancel.child_token();
        let handler = Handler::new(&config, zone)?;
        let (udp, tcp) = bind(config.listen).await?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: config.listen,
            source,
        })?;

        let mut server = Server::new(handler.clone());
        server.register_socket(udp);
        let tcp_loop = serve_tcp(tcp, handler, config.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            let tcp_loop = tokio::spawn(tcp_loop);
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => Ok(()),
                done = server.block_until_done() => done.map_err(|e| DnsError::Serve(e.to_string())),
            };
            if let Err(e) = server.shutdown_gracefully().await {
                debug!(error = %e, "DNS server shutdown");
            }
            cancel.cancel();
            if let Err(e) = tcp_loop.await {
                warn!(error = %e, "DNS TCP loop ended abnormally");
            }
            result
        });
        Ok(Self { local_addr, task })
    }

    /// The address UDP and TCP are served on (the bound port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has stopped (after its cancellation token was cancelled).
    ///
    /// # Errors
    ///
    /// [`DnsError::Serve`] when the UDP loop stopped on its own (its socket failed).
    pub async fn stopped(self) -> Result<(), DnsError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(DnsError::Serve(e.to_string())),
        }
    }
}

/// Binds UDP, then TCP on the port UDP got (retrying with a new port when `addr` has port 0
/// and that TCP port is taken).
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let bind_err = |source| DnsError::Bind { addr, source };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let port = udp.local_addr().map_err(bind_err)?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && attempt < BIND_ATTEMPTS => {
                debug!(port, error = %e, "TCP port taken, binding again");
            }
            Err(e) => return Err(bind_err(e)),
        }
    }
}

/// Accepts at most `max_tcp_connections` connections at once (the rest wait in the kernel's
/// backlog) and answers each one's queries in order, closing it after `tcp_idle_timeout`.
async fn serve_tcp(
    listener: TcpListener,
    handler: Handler,
    config: DnsConfig,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.max_tcp_connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, src) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!(error = %e, "DNS TCP accept failed");
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let handler = handler.clone();
        let idle = config.tcp_idle_timeout;
        let cancel = cancel.clone();
        connections.spawn(async move {
            serve_tcp_connection(stream, src, handler, idle, cancel).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

async fn serve_tcp_connection(
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    handler: Handler,
    idle: Duration,
    cancel: CancellationToken,
) {
    let (stream, responses): (_, BufDnsStreamHandle) = TcpStream::from_stream_with_buffer_size(
        AsyncIoTokioAsStd(stream),
        src,
        TCP_RESPONSE_BUFFER,
    );
    let mut stream = TimeoutStream::new(stream, idle);
    loop {
        let message = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            message = stream.next() => match message {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    debug!(%src, error = %e, "DNS TCP connection ends");
                    return;
                }
                None => return,
            },
        };
        let (bytes, peer) = message.into_parts();
        let request = match Request::from_bytes(bytes, peer, Protocol::Tcp) {
            Ok(request) => request,
            Err(e) => {
                debug!(%src, error = %e, "malformed DNS message over TCP, closing");
                return;
            }
        };
        if request.metadata.message_type != MessageType::Query {
            continue;
        }
        let response = ResponseHandle::new(peer, responses.clone(), Protocol::Tcp);
        handler
            .handle_request::<_, TokioTime>(&request, response)
            .await;
    }
}

/// Answers one request from the zone or upstream. Shared by hickory's UDP loop and our TCP
/// loop.
#[derive(Clone)]
struct Handler {
    inner: Arc<Inner>,
}

struct Inner {
    zone: watch::Receiver<Arc<Zone>>,
    /// Per-query counter: the offset of the round-robin rotation.
    rotation: AtomicUsize,
    /// `warren.`'s SOA, sent with every negative answer from the zone.
    soa: Record,
    forwarder: Option<Forwarder>,
}

struct Forwarder {
    resolver: TokioResolver,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Handler {
    fn new(config: &DnsConfig, zone: watch::Receiver<Arc<Zone>>) -> Result<Self, DnsError> {
        let soa = zone_soa().map_err(|e| DnsError::Upstream(e.to_string()))?;
        let forwarder = if config.upstreams.is_empty() {
            None
        } else {
            Some(Forwarder::new(config)?)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                zone,
                rotation: AtomicUsize::new(0),
                soa,
                forwarder,
            }),
        })
    }
}

impl Forwarder {
    fn new(config: &DnsConfig) -> Result<Self, DnsError> {
        let name_servers = config
            .upstreams
            .iter()
            .map(|upstream| {
                let mut udp = ConnectionConfig::udp();
                udp.port = upstream.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = upstream.port();
                NameServerConfig::new(upstream.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), name_servers),
            TokioRuntimeProvider::default(),
        );
        let options = builder.options_mut();
        options.timeout = config.forward_timeout;
        options.attempts = 1;
        options.cache_size = config.forward_cache_entries;
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        options.ndots = 0;
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Upstream(e.to_string()))?;
        Ok(Self {
            resolver,
            slots: Arc::new(Semaphore::new(config.max_forwards)),
            timeout: config.forward_timeout,
        })
    }
}

/// `warren. SOA warren. hostmaster.warren. 1 60 60 60 5`: the zone's apex, whose minimum is
/// the negative-caching TTL.
fn zone_soa() -> Result<Record, hickory_server::proto::ProtoError> {
    let apex = Name::from_ascii(format!("{DOMAIN}."))?;
    let soa = SOA::new(
        apex.clone(),
        Name::from_ascii(format!("hostmaster.{DOMAIN}."))?,
        1,
        60,
        60,
        60,
        TTL_SECS,
    );
    Ok(Record::from_rdata(apex, TTL_SECS, RData::SOA(soa)))
}

/// What one request gets back, before encoding.
struct Answer {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let answer = self.answer(request).await;

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.code;
        metadata.authoritative = answer.authoritative;
        metadata.recursion_available = self.inner.forwarder.is_some();
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let message = builder.build(
            metadata,
            answer.answers.iter(),
            answer.authorities.iter(),
            std::iter::empty(),
            answer.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                debug!(error = %e, "DNS response not sent");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl Handler {
    async fn answer(&self, request: &Request) -> Answer {
        if request.metadata.op_code != OpCode::Query {
            return Answer::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            return Answer::code(ResponseCode::FormErr);
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return Answer::code(ResponseCode::Refused);
        }
        let name = query.name();
        let labels: Vec<&[u8]> = name.iter().collect();
        let qtype = query.query_type();
        let zone = self.inner.zone.borrow().clone();
        let owner = query.original().name();

        let addresses = match zone.resolve(&labels) {
            Resolution::Forward => return self.forward(owner, qtype).await,
            Resolution::NxDomain => return self.negative(ResponseCode::NXDomain),
            Resolution::Empty => return self.negative(ResponseCode::NoError),
            Resolution::Service(tasks) => {
                let start = match tasks.len() {
                    0 => 0,
                    n => self.inner.rotation.fetch_add(1, Ordering::Relaxed) % n,
                };
                let (head, tail) = tasks.split_at(start);
                tail.iter().chain(head).map(|task| task.addr).collect()
            }
            Resolution::Slot(addrs) => addrs,
            Resolution::Node(addr) => vec![addr],
        };
        if addresses.is_empty() || !matches!(qtype, RecordType::AAAA | RecordType::ANY) {
            return self.negative(ResponseCode::NoError);
        }
        Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers: addresses
                .into_iter()
                .map(|addr: Ipv6Addr| {
                    Record::from_rdata(owner.clone(), TTL_SECS, RData::AAAA(AAAA(addr)))
                })
                .collect(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }

    /// An authoritative answer with no record: NXDOMAIN, or NOERROR for a name that exists
    /// without data of the asked type; the SOA tells caches how long to remember it.
    fn negative(&self, code: ResponseCode) -> Answer {
        Answer {
            code,
            authoritative: true,
            answers: Vec::new(),
            authorities: vec![self.inner.soa.clone()],
            additionals: Vec::new(),
        }
    }

    async fn forward(&self, name: &Name, qtype: RecordType) -> Answer {
        let Some(forwarder) = &self.inner.forwarder else {
            return Answer::code(ResponseCode::Refused);
        };
        let Ok(_permit) = forwarder.slots.clone().try_acquire_owned() else {
            debug!(%name, "too many forwarded queries in flight");
            return Answer::code(ResponseCode::ServFail);
        };
        let lookup = tokio::time::timeout(
            forwarder.timeout,
            forwarder.resolver.lookup(name.clone(), qtype),
        )
        .await;
        match lookup {
            Err(_elapsed) => {
                debug!(%name, %qtype, "forwarded query timed out");
                Answer::code(ResponseCode::ServFail)
            }
            Ok(Ok(lookup)) => Answer {
                code: ResponseCode::NoError,
                authoritative: false,
                answers: lookup.answers().to_vec(),
                authorities: lookup.authorities().to_vec(),
                additionals: lookup.additionals().to_vec(),
            },
            Ok(Err(NetError::Dns(NetDnsError::NoRecordsFound(NoRecords {
                response_code,
                soa,
                ..
            })))) => Answer {
                code: response_code,
                authoritative: false,
                answers: Vec::new(),
                authorities: soa
                    .map(|soa| soa.into_record_of_rdata())
                    .into_iter()
                    .collect(),
                additionals: Vec::new(),
            },
            Ok(Err(e)) => {
                debug!(%name, %qtype, error = %e, "forwarded query failed");
                Answer::code(ResponseCode::ServFail)
            }
        }
    }
}
