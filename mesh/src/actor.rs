//! The swarm task: builds the swarm, then owns it and serves commands and swarm events.

use std::{
    collections::{HashMap, HashSet},
    error::Error as StdError,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    num::NonZeroU8,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    core::transport::ListenerId,
    gossipsub, identify,
    multiaddr::Protocol,
    noise,
    request_response::{self, cbor, OutboundRequestId, ProtocolSupport, ResponseChannel},
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, DialError, NetworkBehaviour, SwarmEvent,
    },
    tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot,
};
use tracing::{debug, info, trace, warn, Instrument};

use crate::{
    limits::{RateLimits, Traffic},
    short_peer_id, wire, Command, MeshConfig, MeshError, MeshEvent, MeshHandle, MeshStats,
    ReplyHandle, RequestKind, Response, Topic, DIRECT_PROTOCOL, MAX_DIRECT_IN_FLIGHT,
    REQUEST_PROTOCOL,
};

/// Room for gossipsub's envelope (author, sequence number, topic, signature, protobuf framing)
/// on top of the payload, in `max_transmit_size`.
const GOSSIP_ENVELOPE_OVERHEAD: usize = 4096;

/// Gossipsub application score of non-members: below the publish threshold (-50, so we never
/// publish, forward or gossip to them, nor graft them) and above the graylist threshold (-80,
/// so what they send is still validated, rejected and counted).
const NON_MEMBER_SCORE: f64 = -60.0;

/// How long `spawn` waits for every listener to report its first address.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// How long `shutdown` waits for the listen ports to be free again.
const PORT_RELEASE_DEADLINE: Duration = Duration::from_secs(1);

/// Identify listen addresses kept per peer, at most.
const MAX_ADDRS_PER_PEER: usize = 16;

/// Most peers remembered as refused for their protocol version (one warning each).
const MAX_INCOMPATIBLE: usize = 1_024;

/// A QUIC connection that received nothing (not even a keep-alive, sent every fifth of this)
/// for this many milliseconds is dead. libp2p's default is 10 s; a peer restarted within this
/// time reconnects beside its dead connection, which costs it its gossip until then (see
/// `Actor::reconnect_unsubscribed`).
pub(crate) const QUIC_IDLE_TIMEOUT_MS: u32 = 5_000;

/// Two connections to one peer established within this time of each other are a
/// simultaneous dial (both live); a new connection beside an older one means the peer lost the
/// older one.
const FRESH_CONNECTION: Duration = Duration::from_secs(2);

/// Addresses of a peer one dial tries at once: one, in order (member addresses first, then
/// what identify reported), each after the previous failed.
///
/// libp2p's default (8) dials QUIC and TCP together and keeps the first to finish; the other
/// may already be established at the peer, which sees a connection close within milliseconds,
/// and gossipsub loses any subscription announcement that connection's handler took (see
/// `Actor::reconnect_unsubscribed`). Measured with three nodes dialing each other (the flood
/// test's set-up, 30 set-ups each on the loaded 2-core machine): with the default, 16 set-ups
/// of 30 needed the 5 s reconnect (24 reconnects, up to three in a row: 17.6 s to form);
/// with one at a time, none did (all formed within 0.4 s). The cost: an unreachable or stale
/// address listed before a good one delays the connection by its failure (a QUIC handshake
/// times out after 5 s; a closed TCP port fails at once).
const DIAL_CONCURRENCY: NonZeroU8 = NonZeroU8::MIN;

/// How long an outbound direct message may wait for its acknowledgement, dialing included.
/// Short: a lost datagram is better than a slot held for the request timeout.
const DIRECT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connected member may stay unknown to gossipsub as a subscriber before its
/// connections are dropped and redialed: the QUIC idle timeout, by which the dead connection
/// of a restarted peer has timed out (a fresh connection is then a first one). It was two
/// redial periods (1 s in the flood test, 4 s in the daemon): under load a live peer's
/// subscription can take that long to be read, and the drop failed a request in flight (the
/// flood test in a CI run). Twice the timeout was tried next: the flood test's setup, which
/// needs this rule when two dials cross, then missed its deadline under CI load.
const UNSUBSCRIBED_GRACE: Duration = Duration::from_millis(QUIC_IDLE_TIMEOUT_MS as u64);

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Bounds non-members' connections ([`crate::NonMemberLimits`]).
    limits: crate::guard::Guard,
    gossipsub: gossipsub::Behaviour,
    request_response: cbor::Behaviour<wire::WireRequest, Response>,
    /// Direct messages: their own protocol, so that they never take the stream slots,
    /// timeouts or size limits of Sync and Logs requests.
    direct: request_response::Behaviour<wire::DirectCodec>,
    identify: identify::Behaviour,
}

/// A bootstrap address and what we learnt about it.
struct Bootstrap {
    addr: Multiaddr,
    /// From a `/p2p` suffix, or learnt from the first connection made through it.
    peer: Option<PeerId>,
    /// An ongoing dial of the address while the peer is unknown.
    pending: Option<ConnectionId>,
}

/// An outbound request waiting for its response.
struct PendingRequest {
    reply: oneshot::Sender<Result<Response, MeshError>>,
    /// Kept for one retry when the dial failed but a connection exists by then (the peer
    /// dialed us at the same time).
    retry: Option<wire::WireRequest>,
}

struct Actor {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    topics: [(Topic, gossipsub::TopicHash); 2],
    members: HashMap<PeerId, Vec<Multiaddr>>,
    /// Listen addresses announced by peers over identify.
    identified: HashMap<PeerId, Vec<Multiaddr>>,
    bootstrap: Vec<Bootstrap>,
    events: mpsc::Sender<MeshEvent>,
    /// Weak, so that the actor alone does not keep its command channel open.
    commands: mpsc::WeakSender<Command>,
    pending: HashMap<OutboundRequestId, PendingRequest>,
    dropped_non_member: u64,
    dropped_overflow: u64,
    dropped_rate_limited: u64,
    /// Peers refused for speaking another protocol version (at most [`MAX_INCOMPATIBLE`]
    /// remembered): not redialed (each dial would open a connection only to refuse it),
    /// and forgotten when one identifies with this node's version (it was upgraded and
    /// dialed in).
    incompatible: HashSet<PeerId>,
    /// The version this node announces ([`MeshConfig::identify_version`]).
    identify_version: String,
    /// Direct messages dropped by handles because the command channel was full.
    direct_queue_full: Arc<AtomicU64>,
    dropped_direct_outbound: u64,
    failed_direct_outbound: u64,
    /// Outbound direct messages awaiting their acknowledgement, per peer (no entry at 0).
    direct_in_flight: HashMap<PeerId, usize>,
    /// Token buckets of members.
    limits: RateLimits,
    /// Connected members gossipsub does not know as subscribed, with when this node first saw
    /// them so (see `reconnect_unsubscribed`).
    unsubscribed: HashMap<PeerId, Instant>,
    /// Every established connection: its peer, when it was established, and whether the peer
    /// dialed it (inbound).
    connections: HashMap<ConnectionId, (PeerId, Instant, bool)>,
    /// How long a non-member's incoming connection may stay.
    non_member_idle: Duration,
}

/// Builds the swarm, starts listening, spawns the actor on the current tokio runtime.
///
/// Returns once every listen address is bound and has reported its address (so
/// [`MeshHandle::stats`] lists them), with the [`MeshEvent::NewListenAddr`] events already
/// queued in the event channel.
///
/// Errors: [`MeshError::Listen`] when an address cannot be bound (port in use, unsupported
/// address); [`MeshError::Transport`] / [`MeshError::Config`] when the swarm cannot be built.
///
/// Must be called within a tokio runtime.
pub async fn spawn(
    config: MeshConfig,
) -> Result<(MeshHandle, mpsc::Receiver<MeshEvent>), MeshError> {
    let local = config.keypair.public().to_peer_id();
    let span = tracing::info_span!("mesh", peer = %short_peer_id(&local));
    let (actor, commands_rx, handle, events_rx, redial_interval) =
        start(config, local).instrument(span.clone()).await?;
    tokio::spawn(actor.run(commands_rx, redial_interval).instrument(span));
    Ok((handle, events_rx))
}

type Started = (
    Actor,
    mpsc::Receiver<Command>,
    MeshHandle,
    mpsc::Receiver<MeshEvent>,
    Duration,
);

async fn start(config: MeshConfig, local: PeerId) -> Result<Started, MeshError> {
    config.member.validate()?;
    for addr in &config.listen {
        probe_tcp_port(addr)?;
    }

    let behaviour = build_behaviour(&config)?;
    let mut swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| MeshError::Transport(error_chain(&e)))?
        .with_quic_config(|mut c| {
            c.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
            c.keep_alive_interval = Duration::from_millis(u64::from(QUIC_IDLE_TIMEOUT_MS) / 5);
            c
        })
        .with_behaviour(move |_| behaviour)
        .map_err(|e| MeshError::Transport(error_chain(&e)))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(3600))
                .with_dial_concurrency_factor(DIAL_CONCURRENCY)
        })
        .build();

    let topics = Topic::ALL.map(|t| (t, gossipsub::IdentTopic::new(t.name(&config.cluster_id))));
    for (_, topic) in &topics {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(topic)
            .map_err(|e| MeshError::Config(format!("subscribe to {topic}: {e:?}")))?;
    }
    let topics = topics.map(|(t, topic)| (t, topic.hash()));

    let mut listeners = HashMap::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| MeshError::Listen {
                addr: addr.clone(),
                reason: error_chain(&e),
            })?;
        listeners.insert(id, addr.clone());
    }

    let capacity = config.channel_capacity.max(1);
    let (events_tx, events_rx) = mpsc::channel(capacity);
    let (commands_tx, commands_rx) = mpsc::channel(capacity);

    let bootstrap = config
        .bootstrap
        .iter()
        .map(|addr| Bootstrap {
            addr: addr.clone(),
            peer: peer_of(addr),
            pending: None,
        })
        .collect();

    let mut actor = Actor {
        swarm,
        local,
        topics,
        members: HashMap::new(),
        identified: HashMap::new(),
        bootstrap,
        events: events_tx,
        commands: commands_tx.downgrade(),
        pending: HashMap::new(),
        dropped_non_member: 0,
        dropped_overflow: 0,
        dropped_rate_limited: 0,
        incompatible: HashSet::new(),
        identify_version: config.identify_version.clone(),
        direct_queue_full: Arc::new(AtomicU64::new(0)),
        dropped_direct_outbound: 0,
        failed_direct_outbound: 0,
        direct_in_flight: HashMap::new(),
        limits: RateLimits::new(config.member),
        unsubscribed: HashMap::new(),
        connections: HashMap::new(),
        non_member_idle: config.non_member.idle,
    };
    actor.await_listeners(listeners).await?;
    actor.redial();
    info!(listen = ?actor.swarm.listeners().collect::<Vec<_>>(), "mesh started");

    let handle = MeshHandle {
        commands: commands_tx,
        local_peer_id: local,
        request_timeout: config.request_timeout,
        max_gossip_bytes: config.max_gossip_bytes,
        direct_queue_full: actor.direct_queue_full.clone(),
    };
    let redial = config.redial_interval.max(Duration::from_millis(100));
    Ok((actor, commands_rx, handle, events_rx, redial))
}

fn build_behaviour(config: &MeshConfig) -> Result<Behaviour, MeshError> {
    let gossipsub_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .heartbeat_initial_delay(Duration::from_millis(500))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(
            config
                .max_gossip_bytes
                .saturating_add(GOSSIP_ENVELOPE_OVERHEAD),
        )
        .message_id_fn(wire::message_id)
        // A peer pruned while it was a non-member is grafted again this soon after joining.
        .prune_backoff(Duration::from_secs(10))
        .build()
        .map_err(|e| MeshError::Config(format!("gossipsub: {e}")))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(config.keypair.clone()),
        gossipsub_config,
    )
    .map_err(|e| MeshError::Config(format!("gossipsub: {e}")))?;
    let score_params = gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        // Edge nodes often share an IP (NAT, one host in tests): no colocation penalty.
        ip_colocation_factor_weight: 0.0,
        // Mild: a few broken promises must not push a member below the gossip threshold.
        behaviour_penalty_weight: -1.0,
        behaviour_penalty_threshold: 5.0,
        ..Default::default()
    };
    gossipsub
        .with_peer_score(score_params, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| MeshError::Config(format!("gossipsub peer score: {e}")))?;

    let request_response = cbor::Behaviour::new(
        [(StreamProtocol::new(REQUEST_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    );
    let direct = request_response::Behaviour::with_codec(
        wire::direct_codec(),
        [(StreamProtocol::new(DIRECT_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(DIRECT_ACK_TIMEOUT),
    );
    let identify = identify::Behaviour::new(identify::Config::new(
        config.identify_version.clone(),
        config.keypair.public(),
    ));
    let limits = crate::guard::Guard::new(config.non_member);
    Ok(Behaviour {
        limits,
        gossipsub,
        request_response,
        direct,
        identify,
    })
}

/// libp2p binds TCP listeners with SO_REUSEPORT, so a second node on the same host and port
/// would *succeed* and silently share the port. Binding a plain socket first turns that (and
/// any other holder of the port) into a clean error.
fn probe_tcp_port(addr: &Multiaddr) -> Result<(), MeshError> {
    let Some((sock, false)) = socket_of(addr) else {
        return Ok(());
    };
    if sock.port() == 0 {
        return Ok(());
    }
    match TcpListener::bind(sock) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(MeshError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        }),
        // Anything else: let libp2p try and report.
        Err(_) => Ok(()),
    }
}

/// Socket address and transport of a listen address: `(addr, is_udp)`.
fn socket_of(addr: &Multiaddr) -> Option<(SocketAddr, bool)> {
    let mut ip: Option<IpAddr> = None;
    let mut port: Option<(u16, bool)> = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a.into()),
            Protocol::Ip6(a) => ip = Some(a.into()),
            Protocol::Tcp(p) => port = Some((p, false)),
            Protocol::Udp(p) => port = Some((p, true)),
            _ => {}
        }
    }
    let (ip, (port, udp)) = (ip?, port?);
    Some((SocketAddr::new(ip, port), udp))
}

/// Polls until every address can be bound again (or `deadline` passes).
async fn wait_ports_released(addrs: &[Multiaddr], deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    for addr in addrs {
        let Some((sock, udp)) = socket_of(addr) else {
            continue;
        };
        loop {
            let free = if udp {
                UdpSocket::bind(sock).is_ok()
            } else {
                TcpListener::bind(sock).is_ok()
            };
            if free || tokio::time::Instant::now() >= until {
                if !free {
                    debug!(%addr, "listen address still in use after shutdown");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn without_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// `e` and its sources, joined with ": " (empty and repeated messages skipped).
fn error_chain(e: &dyn StdError) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn StdError> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        let text = text.trim();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
        current = err.source();
    }
    if parts.is_empty() {
        format!("{e:?}")
    } else {
        parts.join(": ")
    }
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, redial_interval: Duration) {
        let mut redial = tokio::time::interval(redial_interval);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; `start` has just dialed.
        redial.tick().await;
        let ack = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    None => break None,
                    Some(Command::Shutdown(ack)) => break Some(ack),
                    Some(command) => self.on_command(command),
                },
                _ = redial.tick() => self.redial(),
            }
        };
        info!("mesh stopping");
        // Closed before `shutdown` returns, so every command after it fails with `Stopped`
        // (`send_direct`, which does not wait for a reply, included).
        drop(commands);
        let bound: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        // Pending requests fail with `Stopped` when their senders drop; the swarm closes its
        // connections and listeners when dropped.
        drop(self);
        if let Some(ack) = ack {
            // QUIC keeps its UDP socket while connections drain (a few hundred ms): wait, so a
            // node restarted in-process on the same port can bind it again.
            wait_ports_released(&bound, PORT_RELEASE_DEADLINE).await;
            let _ = ack.send(());
        }
        info!("mesh stopped");
    }

    /// Runs the swarm until every listener reported an address.
    async fn await_listeners(
        &mut self,
        mut waiting: HashMap<ListenerId, Multiaddr>,
    ) -> Result<(), MeshError> {
        let deadline = tokio::time::sleep(LISTEN_DEADLINE);
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                _ = &mut deadline => {
                    let addr = waiting.into_values().next().unwrap_or_else(Multiaddr::empty);
                    return Err(MeshError::Listen {
                        addr,
                        reason: "no listen address reported in time".into(),
                    });
                }
                event = self.swarm.select_next_some() => {
                    match &event {
                        SwarmEvent::NewListenAddr { listener_id, .. } => {
                            waiting.remove(listener_id);
                        }
                        SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                            if let Some(addr) = waiting.remove(listener_id) {
                                let reason = match reason {
                                    Ok(()) => "listener closed".to_string(),
                                    Err(e) => error_chain(e),
                                };
                                return Err(MeshError::Listen { addr, reason });
                            }
                        }
                        SwarmEvent::ListenerError { listener_id, error } => {
                            if let Some(addr) = waiting.remove(listener_id) {
                                return Err(MeshError::Listen { addr, reason: error_chain(error) });
                            }
                        }
                        _ => {}
                    }
                    self.on_swarm_event(event);
                }
            }
        }
        Ok(())
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        *peer == self.local || self.members.contains_key(peer)
    }

    fn topic_of(&self, hash: &gossipsub::TopicHash) -> Option<Topic> {
        self.topics
            .iter()
            .find(|(_, h)| h == hash)
            .map(|(topic, _)| *topic)
    }

    fn topic_hash(&self, topic: Topic) -> gossipsub::TopicHash {
        self.topics
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| gossipsub::TopicHash::from_raw(""))
    }

    /// Sends an event to the node without ever waiting. Returns the event if it could not be
    /// delivered (channel full: counted in `dropped_overflow`; or closed).
    fn emit(&mut self, event: MeshEvent) -> Option<MeshEvent> {
        match self.events.try_send(event) {
            Ok(()) => None,
            Err(TrySendError::Full(event)) => {
                self.dropped_overflow += 1;
                debug!("event channel full, dropping event");
                Some(event)
            }
            Err(TrySendError::Closed(event)) => {
                trace!("event channel closed, dropping event");
                Some(event)
            }
        }
    }

    fn set_score(&mut self, peer: &PeerId) {
        let score = if self.is_member(peer) {
            0.0
        } else {
            NON_MEMBER_SCORE
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(peer, score);
    }

    // ----- swarm events -----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossipsub(event),
            SwarmEvent::Behaviour(BehaviourEvent::RequestResponse(event)) => {
                self.on_request_response(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(event)) => self.on_direct(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connection established");
                self.set_score(&peer_id);
                for b in &mut self.bootstrap {
                    if b.pending == Some(connection_id) {
                        b.pending = None;
                        b.peer = Some(peer_id);
                    }
                }
                let now = Instant::now();
                let stale = self.connections.values().any(|(p, since, _)| {
                    *p == peer_id && now.duration_since(*since) > FRESH_CONNECTION
                });
                self.connections
                    .insert(connection_id, (peer_id, now, endpoint.is_listener()));
                if stale {
                    // The peer dialed us although we hold an older connection to it: it does
                    // not have that connection any more (it restarted, or closed it). gossipsub
                    // would not announce our subscriptions on this second connection and would
                    // feed the dead one (see `reconnect_unsubscribed`): start afresh. Two
                    // connections of the same age are a simultaneous dial; both live, kept.
                    info!(peer = %peer_id, "a peer reconnected beside an old connection: reconnecting afresh");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if num_established.get() == 1 {
                    let addr = without_p2p(endpoint.get_remote_address().clone());
                    let _ = self.emit(MeshEvent::ConnectionEstablished {
                        peer: peer_id,
                        addr,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.connections.remove(&connection_id);
                debug!(peer = %peer_id, remaining = num_established, cause = ?cause, "connection closed");
                if num_established == 0 {
                    if !self.members.contains_key(&peer_id) {
                        self.identified.remove(&peer_id);
                    }
                    let _ = self.emit(MeshEvent::ConnectionClosed { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let local = self.local;
                for b in &mut self.bootstrap {
                    if b.pending == Some(connection_id) {
                        b.pending = None;
                        if let DialError::LocalPeerId { .. } = error {
                            // The bootstrap address is ourselves: never dial it again.
                            b.peer = Some(local);
                        }
                    }
                }
                debug!(peer = ?peer_id, error = %error_chain(&error), "dial failed");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                debug!(from = %send_back_addr, error = %error_chain(&error), "incoming connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let addr = without_p2p(address);
                info!(%addr, "listening");
                let _ = self.emit(MeshEvent::NewListenAddr { addr });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                info!(addr = %address, "listen address expired");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => match reason {
                Ok(()) => info!(?addresses, "listener closed"),
                Err(e) => warn!(?addresses, error = %error_chain(&e), "listener failed"),
            },
            SwarmEvent::ListenerError { error, .. } => {
                warn!(error = %error_chain(&error), "listener error");
            }
            other => trace!(event = ?other, "swarm event"),
        }
    }

    fn on_gossipsub(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let topic = self.topic_of(&message.topic);
                let author = message.source.filter(|s| self.is_member(s));
                let (Some(topic), Some(source)) = (topic, author) else {
                    if topic.is_some() {
                        self.dropped_non_member += 1;
                        debug!(author = ?message.source, via = %propagation_source, "rejecting gossip from non-member");
                    } else {
                        debug!(topic = %message.topic, via = %propagation_source, "rejecting gossip on unknown topic");
                    }
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Reject,
                        );
                    return;
                };
                if source != self.local
                    && !self.limits.allow(source, Traffic::Gossip, Instant::now())
                {
                    // Ignore, not Reject: the message is valid, we only have no room for more
                    // of its author's. Reject would penalise the forwarder and every peer that
                    // brought a copy: honest members relaying a flood would be graylisted.
                    self.dropped_rate_limited += 1;
                    trace!(author = %source, via = %propagation_source, "gossip over its author's rate limit");
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                    return;
                }
                // Accept before delivering: the message is valid and worth forwarding even if
                // the node is too busy to take it right now.
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Accept,
                    );
                let _ = self.emit(MeshEvent::Gossip {
                    topic,
                    source,
                    data: message.data,
                });
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer subscribed");
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer unsubscribed");
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                debug!(peer = %peer_id, "peer does not support gossipsub");
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                debug!(peer = %peer_id, ?failed_messages, "slow gossip peer");
            }
        }
    }

    fn on_request_response(&mut self, event: request_response::Event<wire::WireRequest, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_inbound_request(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(pending) = self.pending.remove(&request_id) {
                        let _ = pending.reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, error = %error_chain(&error), "request failed");
                let Some(pending) = self.pending.remove(&request_id) else {
                    return;
                };
                if let (request_response::OutboundFailure::DialFailure, Some(request)) =
                    (&error, pending.retry)
                {
                    if self.swarm.is_connected(&peer) && !pending.reply.is_closed() {
                        debug!(%peer, "retrying request on the existing connection");
                        self.send_request(peer, request, pending.reply, false);
                        return;
                    }
                }
                let err = match error {
                    request_response::OutboundFailure::Timeout => MeshError::Timeout,
                    other => MeshError::Request(format!(
                        "to {}: {}",
                        short_peer_id(&peer),
                        error_chain(&other)
                    )),
                };
                let _ = pending.reply.send(Err(err));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, error = %error_chain(&error), "inbound request failed");
            }
            request_response::Event::ResponseSent { peer, .. } => {
                trace!(%peer, "response sent");
            }
        }
    }

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        request: wire::WireRequest,
        channel: ResponseChannel<Response>,
    ) {
        // Join is the one request a non-member may send.
        if request.kind != RequestKind::Join && !self.is_member(&peer) {
            self.dropped_non_member += 1;
            debug!(%peer, kind = ?request.kind, "refusing request from non-member");
            self.respond(channel, Response::Refused("not a member".into()));
            return;
        }
        if self.is_member(&peer) && !self.limits.allow(peer, Traffic::Request, Instant::now()) {
            self.dropped_rate_limited += 1;
            debug!(%peer, kind = ?request.kind, "refusing request over the member's rate limit");
            self.respond(channel, Response::Refused("rate limited".into()));
            return;
        }
        let Some(commands) = self.commands.upgrade() else {
            self.respond(channel, Response::Refused("shutting down".into()));
            return;
        };
        let reply = ReplyHandle {
            channel: Some(channel),
            commands,
            peer,
            kind: request.kind,
        };
        let event = MeshEvent::Request {
            peer,
            kind: request.kind,
            body: request.body,
            reply,
        };
        if let Some(MeshEvent::Request { mut reply, .. }) = self.emit(event) {
            if let Some(channel) = reply.take_channel() {
                self.respond(channel, Response::Refused("overloaded".into()));
            }
        }
    }

    fn on_direct(&mut self, event: request_response::Event<wire::WireDirect, ()>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    // Acknowledge at once, whatever becomes of it: the stream is done, and
                    // the sender learns nothing of our admission or limits.
                    if self
                        .swarm
                        .behaviour_mut()
                        .direct
                        .send_response(channel, ())
                        .is_err()
                    {
                        trace!(%peer, "direct message sender went away before the ack");
                    }
                    if !self.is_member(&peer) {
                        self.dropped_non_member += 1;
                        debug!(%peer, "dropping direct message from non-member");
                    } else if !self.limits.allow(peer, Traffic::Direct, Instant::now()) {
                        self.dropped_rate_limited += 1;
                        trace!(%peer, "direct message over the member's rate limit");
                    } else {
                        let _ = self.emit(MeshEvent::Direct {
                            from: peer,
                            data: request.data,
                        });
                    }
                }
                request_response::Message::Response { .. } => self.direct_done(peer),
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, error = %error_chain(&error), "direct message failed");
                self.failed_direct_outbound += 1;
                self.direct_done(peer);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, error = %error_chain(&error), "inbound direct message failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// One outbound direct message to `peer` was acknowledged or failed.
    fn direct_done(&mut self, peer: PeerId) {
        if let Some(n) = self.direct_in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.direct_in_flight.remove(&peer);
            }
        }
    }

    /// Sends one direct message unless [`MAX_DIRECT_IN_FLIGHT`] to `peer` are unacknowledged.
    fn send_direct(&mut self, peer: PeerId, data: Vec<u8>) {
        let in_flight = self.direct_in_flight.get(&peer).copied().unwrap_or(0);
        if in_flight >= MAX_DIRECT_IN_FLIGHT {
            self.dropped_direct_outbound += 1;
            trace!(%peer, "too many direct messages in flight, dropping one");
            return;
        }
        let addrs = self.known_addrs(&peer);
        if !self.swarm.is_connected(&peer) && !addrs.is_empty() {
            // As in `send_request`: our own dial, from a fresh port.
            self.dial_peer(peer, addrs.clone());
        }
        self.swarm
            .behaviour_mut()
            .direct
            .send_request_with_addresses(&peer, wire::WireDirect { data }, addrs);
        self.direct_in_flight.insert(peer, in_flight + 1);
    }

    fn respond(&mut self, channel: ResponseChannel<Response>, response: Response) {
        if self
            .swarm
            .behaviour_mut()
            .request_response
            .send_response(channel, response)
            .is_err()
        {
            debug!("requester went away before the response");
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            if info.protocol_version != self.identify_version {
                // Another Warren release (or not Warren at all): it could connect, but it
                // speaks other messages. Say so once per peer and close, rather than leave
                // it half-working.
                if self.incompatible.len() < MAX_INCOMPATIBLE && self.incompatible.insert(peer_id) {
                    warn!(
                        peer = %peer_id,
                        theirs = %info.protocol_version,
                        ours = %self.identify_version,
                        "refusing a peer on another Warren protocol version; run the same \
                         Warren release on every node"
                    );
                }
                let _ = self.swarm.disconnect_peer_id(peer_id);
                return;
            }
            if self.incompatible.remove(&peer_id) {
                info!(peer = %peer_id, "a peer refused for its protocol version now speaks ours");
            }
            trace!(peer = %peer_id, addrs = ?info.listen_addrs, "identified");
            let mut addrs: Vec<Multiaddr> = Vec::new();
            for addr in info.listen_addrs.into_iter().map(without_p2p) {
                if addrs.len() < MAX_ADDRS_PER_PEER && !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            self.identified.insert(peer_id, addrs);
        }
    }

    // ----- commands -----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data } => {
                let hash = self.topic_hash(topic);
                match self.swarm.behaviour_mut().gossipsub.publish(hash, data) {
                    Ok(id) => trace!(?topic, %id, "published"),
                    Err(
                        e @ (gossipsub::PublishError::NoPeersSubscribedToTopic
                        | gossipsub::PublishError::Duplicate
                        | gossipsub::PublishError::AllQueuesFull(_)),
                    ) => debug!(?topic, error = %e, "gossip not sent"),
                    Err(e) => warn!(?topic, error = %e, "publish failed"),
                }
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if peer == self.local {
                    let _ = reply.send(Err(MeshError::Request("request to self".into())));
                    return;
                }
                self.send_request(peer, request, reply, true);
            }
            Command::Respond { channel, response } => self.respond(channel, response),
            Command::Direct { peer, data } => self.send_direct(peer, data),
            Command::SetMembers { members, done } => {
                self.set_members(members);
                let _ = done.send(());
            }
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.dial_addr(addr));
            }
            Command::Stats(reply) => {
                let mut connected_peers: Vec<PeerId> =
                    self.swarm.connected_peers().copied().collect();
                connected_peers.sort();
                let _ = reply.send(MeshStats {
                    connected_peers,
                    listen_addrs: self.swarm.listeners().cloned().map(without_p2p).collect(),
                    dropped_non_member: self.dropped_non_member,
                    dropped_overflow: self.dropped_overflow,
                    dropped_rate_limited: self.dropped_rate_limited,
                    incompatible_peers: self.incompatible.len() as u64,
                    dropped_direct_outbound: self.dropped_direct_outbound
                        + self.direct_queue_full.load(Ordering::Relaxed),
                    failed_direct_outbound: self.failed_direct_outbound,
                    subscribed_peers: {
                        let mut peers: Vec<PeerId> = self.subscribed_to_all().into_iter().collect();
                        peers.sort();
                        peers
                    },
                });
            }
            Command::PeerAddrs { peer, reply } => {
                let _ = reply.send(self.identified.get(&peer).cloned().unwrap_or_default());
            }
            Command::Shutdown(_) => {} // handled in `run`
        }
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        request: wire::WireRequest,
        reply: oneshot::Sender<Result<Response, MeshError>>,
        may_retry: bool,
    ) {
        let addrs = self.known_addrs(&peer);
        if !self.swarm.is_connected(&peer) && !addrs.is_empty() {
            // Dial ourselves first (fresh port, see `dial_peer`); request-response's own dial
            // then finds one in progress and waits for it.
            self.dial_peer(peer, addrs.clone());
        }
        let retry = may_retry.then(|| request.clone());
        let id = self
            .swarm
            .behaviour_mut()
            .request_response
            .send_request_with_addresses(&peer, request, addrs);
        self.pending.insert(id, PendingRequest { reply, retry });
    }

    /// Connected peers gossipsub knows as subscribed to every topic of this node: the peers
    /// this node's gossip reaches directly on each topic.
    fn subscribed_to_all(&self) -> HashSet<PeerId> {
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| self.topics.iter().all(|(_, ours)| topics.contains(&ours)))
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Drops every connection to a connected member that gossipsub has not known as
    /// subscribed to *each* of our topics for [`UNSUBSCRIBED_GRACE`], so that the redial
    /// opens one fresh connection.
    ///
    /// gossipsub (0.49) announces its subscriptions to a peer once, on the first connection,
    /// one message per topic, and feeds all of a peer's connections from one queue: each
    /// message goes to whichever connection's handler takes it first, and is lost if that
    /// connection closes before sending it. Two ways that happens:
    ///
    /// * a dial to several addresses (QUIC and TCP) at once keeps the first to finish; the
    ///   other may already be established at the peer, which then sees a connection that
    ///   closes within milliseconds. When it was the peer's first connection, its handler may
    ///   have taken one of the peer's announcements with it. Measured with the flood test's
    ///   set-up (three nodes dialing each other, loaded 2-core machine): 41 of 298 (node,
    ///   peer) pairs knew the peer subscribed to one topic of the two only. [`DIAL_CONCURRENCY`]
    ///   (one address at a time) prevents this one;
    /// * a peer restarted before our connection to its previous process timed out reconnects
    ///   as a *second* connection: we never announce our subscriptions to it, and some of
    ///   what we send goes into the dead connection (found by the testnet's chaos scenario).
    ///
    /// Either way we never gossip to the peer on that topic: `publish` skips it silently,
    /// and a topic with no other known subscriber never reaches it. Every topic counts: this
    /// rule once looked at the lease topic alone, so a lost `changes` announcement was never
    /// repaired (what left the flood test's set-up, whose gossip is on `changes`, with three
    /// connected nodes and no gossip for 20 s in a loaded CI run).
    /// The side that misses an announcement reconnects; once the dead connection timed out
    /// ([`QUIC_IDLE_TIMEOUT_MS`]) the fresh connection is a first one and both sides announce.
    fn reconnect_unsubscribed(&mut self) {
        let subscribed = self.subscribed_to_all();
        let connected_members: Vec<PeerId> = self
            .members
            .keys()
            .filter(|p| **p != self.local && self.swarm.is_connected(p))
            .copied()
            .collect();
        self.unsubscribed
            .retain(|peer, _| connected_members.contains(peer) && !subscribed.contains(peer));
        for peer in connected_members {
            if subscribed.contains(&peer) {
                continue;
            }
            let since = *self.unsubscribed.entry(peer).or_insert_with(Instant::now);
            if since.elapsed() >= UNSUBSCRIBED_GRACE {
                info!(%peer, "connected member not subscribed to our topics: reconnecting afresh");
                self.unsubscribed.remove(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    /// Dials `peer` unless connected or already being dialed.
    ///
    /// Always from a fresh local port: with TCP port reuse (libp2p's default) two peers
    /// dialing each other at the same moment produce a TCP simultaneous open, and both
    /// dials fail in the noise handshake.
    fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        trace!(%peer, ?addrs, "dialing");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .allocate_new_port()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => debug!(%peer, error = %error_chain(&e), "cannot dial"),
        }
    }

    fn set_members(&mut self, members: HashMap<PeerId, Vec<Multiaddr>>) {
        debug!(count = members.len(), "member set replaced");
        let previous = std::mem::replace(&mut self.members, members);
        self.members.remove(&self.local);
        let members: Vec<PeerId> = self.members.keys().copied().collect();
        self.swarm.behaviour_mut().limits.set_members(members);
        let kept = &self.members;
        self.limits.retain(|peer| kept.contains_key(peer));
        // A member that was just removed is cut off now, not at its next message.
        for peer in previous.keys().filter(|p| !self.members.contains_key(*p)) {
            if self.swarm.is_connected(peer) {
                info!(%peer, "disconnecting a peer that is no longer a member");
                let _ = self.swarm.disconnect_peer_id(*peer);
            }
        }
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in &connected {
            self.set_score(peer);
        }
        let members = &self.members;
        self.identified
            .retain(|p, _| members.contains_key(p) || connected.contains(p));
        self.redial();
    }

    /// Addresses of `peer` from the member set and identify, deduplicated.
    fn known_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> = Vec::new();
        let from_members = self.members.get(peer).into_iter().flatten();
        let from_identify = self.identified.get(peer).into_iter().flatten();
        for addr in from_members.chain(from_identify) {
            let addr = without_p2p(addr.clone());
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    }

    fn dial_addr(&mut self, addr: Multiaddr) -> Result<(), MeshError> {
        let opts = match peer_of(&addr) {
            Some(peer) if peer == self.local => {
                return Err(MeshError::Transport("refusing to dial self".into()))
            }
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![without_p2p(addr)])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .allocate_new_port()
                .build(),
            None => DialOpts::unknown_peer_id()
                .address(addr)
                .allocate_new_port()
                .build(),
        };
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(MeshError::Transport(error_chain(&e))),
        }
    }

    /// Dials disconnected members and bootstrap addresses; never two dials to one peer.
    /// Closes every incoming connection of a non-member older than
    /// [`NonMemberLimits::idle`](crate::NonMemberLimits::idle): a join takes less, and a
    /// stranger holds none of this node's connections for long.
    fn close_idle_non_members(&mut self) {
        let now = Instant::now();
        let idle: Vec<(ConnectionId, PeerId)> = self
            .connections
            .iter()
            .filter(|(_, (peer, since, inbound))| {
                *inbound
                    && !self.members.contains_key(peer)
                    && now.duration_since(*since) > self.non_member_idle
            })
            .map(|(id, (peer, _, _))| (*id, *peer))
            .collect();
        for (id, peer) in idle {
            debug!(%peer, "closing an idle connection of a non-member");
            self.swarm.close_connection(id);
        }
    }

    fn redial(&mut self) {
        // Requests whose caller gave up (timeout) no longer need their retry copy.
        self.pending.retain(|_, p| !p.reply.is_closed());
        self.close_idle_non_members();
        self.reconnect_unsubscribed();
        let mut targets: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for peer in self.members.keys() {
            if *peer == self.local
                || self.swarm.is_connected(peer)
                || self.incompatible.contains(peer)
            {
                continue;
            }
            let addrs = self.known_addrs(peer);
            if !addrs.is_empty() {
                targets.push((*peer, addrs));
            }
        }
        let mut unknown: Vec<usize> = Vec::new();
        for (i, b) in self.bootstrap.iter().enumerate() {
            match b.peer {
                Some(peer) if peer == self.local || self.swarm.is_connected(&peer) => {}
                Some(peer) => match targets.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, addrs)) => {
                        let addr = without_p2p(b.addr.clone());
                        if !addrs.contains(&addr) {
                            addrs.push(addr);
                        }
                    }
                    None => targets.push((peer, vec![without_p2p(b.addr.clone())])),
                },
                None if b.pending.is_none() => unknown.push(i),
                None => {}
            }
        }

        for (peer, addrs) in targets {
            self.dial_peer(peer, addrs);
        }
        for i in unknown {
            let addr = self.bootstrap[i].addr.clone();
            let opts = DialOpts::unknown_peer_id()
                .address(addr.clone())
                .allocate_new_port()
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.bootstrap[i].pending = Some(id),
                Err(e) => debug!(%addr, error = %error_chain(&e), "cannot dial bootstrap"),
            }
        }
    }
}
