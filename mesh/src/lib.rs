//! # warren-mesh: the network of one Warren node
//!
//! Every Warren node is an equal peer. This crate runs the node's libp2p swarm in one tokio
//! task (an *actor*) and talks to the rest of the node through two bounded channels:
//!
//! * a [`MeshHandle`] (cheap to clone) sends commands: [`publish`](MeshHandle::publish) gossip,
//!   send a [`request`](MeshHandle::request) or a [`direct`](MeshHandle::send_direct) message,
//!   [`set_members`](MeshHandle::set_members), [`dial`](MeshHandle::dial),
//!   [`stats`](MeshHandle::stats), [`shutdown`](MeshHandle::shutdown);
//! * a `tokio::sync::mpsc::Receiver<`[`MeshEvent`]`>` delivers what the network says: gossip,
//!   inbound requests and direct messages, connections, listen addresses.
//!
//! Payloads are opaque bytes here: the node decides what they mean (SWIM messages, reports and
//! the broadcast tree's messages as direct messages, lease renewals as gossip, sync messages,
//! join tokens). How the node uses them — SWIM membership, the Plumtree broadcast of changes,
//! soft state to the members that need it — is described in `warren-core` (`core::swim`,
//! `core::plumtree`, `machine::reports`) and DESIGN §4.
//!
//! ## Protocols
//!
//! | What | libp2p protocol | Used for |
//! |---|---|---|
//! | transport | QUIC (`/udp/N/quic-v1`), TCP + noise + yamux fallback | everything |
//! | gossip | gossipsub, topics `warren/{cluster_id}/lease` (and `.../changes`, which the node no longer publishes on) | the lease holder's renewals: one small signed message per renewal period |
//! | request-response | CBOR on [`REQUEST_PROTOCOL`] (`/warren/req/2`) | [`RequestKind::Sync`] (Automerge sync dialogue, repair), [`RequestKind::Join`], [`RequestKind::Logs`] (a service's container logs) |
//! | direct messages | CBOR request-response on [`DIRECT_PROTOCOL`] (`/warren/direct/1`), acknowledged by the receiving mesh | fire-and-forget unicast between members ([`MeshHandle::send_direct`], [`MeshEvent::Direct`]): SWIM probes and acks, reports, the broadcast tree's messages (changes) |
//! | identify | [`IDENTIFY_PROTOCOL`] (`/warren/id/2`) | learning the listen addresses of peers; a peer announcing another version is refused ([`MeshStats::incompatible_peers`]) |
//!
//! Gossip messages are signed by their author (gossipsub `Strict` validation); the
//! [`MeshEvent::Gossip`] `source` is that verified author, not the peer that forwarded it.
//!
//! Direct messages are datagrams: at most [`MAX_DIRECT_BYTES`], no answer to the node,
//! possibly lost (counted on both sides, see [`MeshStats`]), and
//! [`send_direct`](MeshHandle::send_direct) never waits. They have a protocol of their own
//! rather than a fourth [`RequestKind`]: request-response bounds streams per connection and
//! behaviour, so a burst of direct messages never takes the slots of Sync and Logs requests;
//! they get a short acknowledgement timeout (5 s) and a codec that reads no more than
//! [`MAX_DIRECT_BYTES`], where requests have 10 s and 1 MiB; and the node's `RequestKind`
//! keeps the kinds it answers. The receiving mesh acknowledges each message as soon as it is
//! read, whatever it then does with it; at most [`MAX_DIRECT_IN_FLIGHT`] (64) to one peer
//! await their acknowledgement at once.
//!
//! ## Admission
//!
//! The node tells the mesh who the members are ([`MeshHandle::set_members`]); the local peer
//! always counts as a member. Then:
//!
//! * gossip authored by a non-member is rejected (gossipsub validation) and counted in
//!   [`MeshStats::dropped_non_member`]; it never reaches the event channel; so is a direct
//!   message from a non-member (acknowledged, then dropped);
//! * a [`RequestKind::Sync`] or [`RequestKind::Logs`] request (any kind but `Join`) from a
//!   non-member is answered `Response::Refused("not a member")` by the mesh itself and
//!   counted;
//! * a [`RequestKind::Join`] request is the one thing a non-member may send: it reaches the
//!   node, which checks the token;
//! * non-members get a negative gossipsub application score: the mesh never publishes or
//!   forwards gossip to them (nor grafts them), so cluster state does not leak to a peer
//!   that merely connected. Their own messages are still received, validated and counted;
//! * non-members hold few of the node's connections ([`MeshConfig::non_member`],
//!   [`NonMemberLimits`]): at most 128 incoming handshakes at once (anyone's), 64
//!   established incoming connections of non-members all together, 2 per non-member and 8
//!   per IP address, each closed 30 s after it was established (a join takes less). Members
//!   are not counted;
//! * members are rate-limited ([`MeshConfig::member`], [`MemberLimits`]): a token bucket per
//!   member for the gossip it authored (1,000 messages/s, bursts of 2,000), its requests
//!   (100/s, bursts of 200) and its direct messages (500/s, bursts of 1,000). Over the limit,
//!   gossip is ignored in validation (not delivered, not forwarded, no forwarder penalised),
//!   a request is answered `Response::Refused("rate limited")` by the mesh, a direct message
//!   is dropped; all counted in [`MeshStats::dropped_rate_limited`]. The buckets of a peer
//!   are dropped when it leaves the member set.
//!
//! gossipsub verifies a message's signature before the mesh sees it, so a member's flood
//! costs a verification per message (some 30 µs optimised) before its rate limit applies;
//! the limit bounds what is delivered and forwarded, hence the cost to every other node.
//!
//! Membership is symmetric in effect: a node only publishes to, and accepts gossip and Sync
//! requests from, peers in *its own* member set. A joining node therefore sends its Join
//! request, then calls `set_members` with the member list it learns (at least the peer that
//! admitted it), while the admitting side adds the newcomer to the document and to its own
//! `set_members`.
//!
//! ## Connectivity
//!
//! [`MeshConfig::bootstrap`] addresses and the addresses of members (from `set_members`, plus
//! what identify reported) are dialed at start and every [`MeshConfig::redial_interval`]
//! while not connected; never two concurrent dials to the same peer. The mesh dials from a
//! fresh local port (TCP port reuse makes two peers dialing each other at once fail).
//! Members' connections stay open for an hour of idleness.
//!
//! ## Backpressure
//!
//! All channels are bounded ([`MeshConfig::channel_capacity`]). The swarm never waits for the
//! node: when the event channel is full, gossip and direct messages are dropped (counted in
//! [`MeshStats::dropped_overflow`]; anti-entropy repairs gossip) and inbound requests are
//! answered `Refused("overloaded")`. Commands wait for room in the command channel, except
//! [`send_direct`](MeshHandle::send_direct), which drops the message when it is full.
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren_mesh::MeshError> {
//! use warren_mesh::{spawn, Keypair, MeshConfig, MeshEvent, Response, Topic};
//!
//! let mut config = MeshConfig::new(Keypair::generate_ed25519(), "prod");
//! config.listen = vec!["/ip4/0.0.0.0/udp/7946/quic-v1".parse().expect("valid multiaddr")];
//! let (mesh, mut events) = spawn(config).await?;
//! mesh.publish(Topic::Lease, b"renewal".to_vec()).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         MeshEvent::Gossip { topic, source, data } => { /* apply */ }
//!         MeshEvent::Request { reply, .. } => reply.send(Response::Ok(vec![])).await?,
//!         // A datagram from a member: answer it (or not) with a datagram of our own.
//!         MeshEvent::Direct { from, data } => mesh.send_direct(from, data)?,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use libp2p::request_response::ResponseChannel;
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::{mpsc, oneshot};

mod actor;
mod guard;
mod limits;
mod wire;

pub use libp2p::{identity::Keypair, Multiaddr, PeerId};

pub use actor::spawn;

/// The decoders of what a peer sends on [`REQUEST_PROTOCOL`], for the fuzz targets in `fuzz/`
/// (not part of the API: the swarm calls the same code on every inbound stream).
#[doc(hidden)]
pub mod fuzzing {
    use crate::{wire, RequestKind, Response};

    /// Decodes one inbound request stream's bytes with the swarm's codec: the request's kind
    /// and body.
    ///
    /// Errors: the codec's I/O error (over 1 MiB, not CBOR, not a request envelope).
    pub fn decode_request(bytes: &[u8]) -> std::io::Result<(RequestKind, Vec<u8>)> {
        wire::decode_request(bytes).map(|r| (r.kind, r.body))
    }

    /// Decodes one response stream's bytes with the swarm's codec.
    ///
    /// Errors: the codec's I/O error (over 10 MiB, not CBOR, not a [`Response`]).
    pub fn decode_response(bytes: &[u8]) -> std::io::Result<Response> {
        wire::decode_response(bytes)
    }

    /// Decodes one inbound stream's bytes on [`DIRECT_PROTOCOL`](crate::DIRECT_PROTOCOL) with
    /// the swarm's codec: the direct message's payload.
    ///
    /// Errors: the codec's I/O error (over [`MAX_DIRECT_BYTES`](crate::MAX_DIRECT_BYTES) plus
    /// the envelope, not CBOR, not a direct message envelope).
    pub fn decode_direct(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        wire::decode_direct(bytes).map(|d| d.data)
    }
}

/// Protocol name of the request-response protocol (Sync, Join and Logs requests).
pub const REQUEST_PROTOCOL: &str = "/warren/req/2";

/// Protocol name of direct messages ([`MeshHandle::send_direct`], [`MeshEvent::Direct`]).
pub const DIRECT_PROTOCOL: &str = "/warren/direct/1";

/// Largest direct message payload, in bytes: [`MeshHandle::send_direct`] refuses a larger one
/// with [`MeshError::TooLarge`], and the receiving codec reads no more than this plus a small
/// envelope (a larger stream is an inbound failure, never delivered). Sized for a node's
/// report of up to 1,024 tasks (the node's largest direct message); SWIM messages are under
/// 2 KiB.
pub const MAX_DIRECT_BYTES: usize = 512 * 1024;

/// Outbound direct messages to one peer that may await their acknowledgement at once; one
/// more is dropped and counted in [`MeshStats::dropped_direct_outbound`]. Below
/// request-response's 100 streams per connection, so direct messages never exhaust them.
pub const MAX_DIRECT_IN_FLIGHT: usize = 64;

/// Protocol version string announced by identify. Version 2 came with SWIM membership,
/// direct messages and the broadcast tree (issue 13); a node of version 1 (all-to-all
/// heartbeats) cannot take part. Each side refuses a peer that announces another version:
/// it logs a warning naming both versions once per peer, counts it
/// ([`MeshStats::incompatible_peers`]) and disconnects. The older side's requests also fail,
/// on [`REQUEST_PROTOCOL`]'s new name.
pub const IDENTIFY_PROTOCOL: &str = "/warren/id/2";

/// Largest request body [`MeshHandle::request`] accepts.
///
/// The CBOR codec of libp2p caps a whole request at 1 MiB; this leaves room for the envelope.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024 - 1024;

/// Largest `Response::Ok` payload a reply may carry.
///
/// The CBOR codec of libp2p caps a whole response at 10 MiB; this leaves room for the envelope.
pub const MAX_RESPONSE_BODY: usize = 10 * 1024 * 1024 - 1024;

/// Which gossip topic.
///
/// Topic strings: `warren/{cluster_id}/changes` and `warren/{cluster_id}/lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Automerge change bytes of local writes.
    Changes,
    /// The lease holder's signed renewals (one small message per renewal period).
    Lease,
}

impl Topic {
    /// Both topics.
    pub const ALL: [Topic; 2] = [Topic::Changes, Topic::Lease];

    /// The gossipsub topic string for this topic in cluster `cluster_id`.
    pub fn name(self, cluster_id: &str) -> String {
        let suffix = match self {
            Topic::Changes => "changes",
            Topic::Lease => "lease",
        };
        format!("warren/{cluster_id}/{suffix}")
    }
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// One step of the Automerge sync dialogue. Only members may send it.
    Sync,
    /// A join request carrying a join token. Anyone may send it.
    Join,
    /// A question for the container logs of a service's tasks on the receiving node. Only
    /// members may send it; the node bounds its answer (see `warren_node::logs`).
    Logs,
}

/// Response to a request: sent by the node, or by the mesh itself (`Refused` to non-members,
/// or when the node is overloaded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request was handled; opaque payload.
    Ok(#[serde(with = "wire::bytes")] Vec<u8>),
    /// The request was refused, with a reason for humans.
    Refused(String),
}

/// Configuration of [`spawn`].
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The node's identity; its [`PeerId`] is derived from it.
    pub keypair: Keypair,
    /// Cluster id; part of the gossip topic names.
    pub cluster_id: String,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/udp/7946/quic-v1` and `/ip4/0.0.0.0/tcp/7946`.
    pub listen: Vec<Multiaddr>,
    /// Dialed at start and re-dialed every `redial_interval` while not connected. With a
    /// `/p2p/<peer id>` suffix the peer is known up front; without one it is learnt from the
    /// first connection.
    pub bootstrap: Vec<Multiaddr>,
    /// Period of the re-dial of bootstrap addresses and disconnected members (default 2 s).
    pub redial_interval: Duration,
    /// Deadline of [`MeshHandle::request`], dialing included (default 10 s).
    pub request_timeout: Duration,
    /// Largest gossip payload (default 256 KiB). Gossipsub's `max_transmit_size` is set a
    /// little above it, for the signed envelope.
    pub max_gossip_bytes: usize,
    /// Capacity of the command channel and of the event channel (default 1024).
    pub channel_capacity: usize,
    /// What a peer that is not a member may hold of this node's connections.
    pub non_member: NonMemberLimits,
    /// How much gossip, how many requests and how many direct messages one member may send
    /// this node.
    pub member: MemberLimits,
    /// The protocol version this node announces in identify; always [`IDENTIFY_PROTOCOL`]
    /// but in the test that plays an older release.
    #[doc(hidden)]
    pub identify_version: String,
}

/// Bounds on the connections of peers that are not members (a joining node, or anyone who
/// can reach the port). Members are never counted nor limited. Enforced by a behaviour of
/// the mesh's swarm and an idle sweep in its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonMemberLimits {
    /// Incoming connections still in their handshake, whoever they are from (the peer is not
    /// known yet), at most (default 128).
    pub max_pending_incoming: u32,
    /// Established incoming connections of non-members, all together, at most (default 64).
    pub max_established_incoming: u32,
    /// Established connections of one non-member peer, at most (default 2).
    pub max_per_peer: u32,
    /// Established incoming connections of non-members from one IP address, at most
    /// (default 8; a site behind NAT shares one).
    pub max_per_ip: u32,
    /// An incoming connection of a non-member is closed this long after it was established
    /// (default 30 s): time enough for a join, which makes it a member's.
    pub idle: Duration,
}

impl Default for NonMemberLimits {
    fn default() -> Self {
        Self {
            max_pending_incoming: 128,
            max_established_incoming: 64,
            max_per_peer: 2,
            max_per_ip: 8,
            idle: Duration::from_secs(30),
        }
    }
}

/// A token bucket's rate: `per_second` tokens are added each second, up to `burst`; each
/// message or request takes one. A peer idle for `burst / per_second` seconds may therefore
/// send `burst` at once, then `per_second` each second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained rate, in messages (or requests) per second. At least 1.
    pub per_second: u32,
    /// Largest burst, in messages (or requests); also what a fresh bucket holds. At least 1.
    pub burst: u32,
}

impl Rate {
    /// `per_second` sustained, bursts of `burst`.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// Rate limits on what one member sends this node: one token bucket per member and per kind
/// of traffic, kept while the peer is in the member set (memory: three buckets per member;
/// dropped when [`MeshHandle::set_members`] removes it). Non-members are limited otherwise:
/// their gossip and requests (but Join) are refused outright, their connections bounded by
/// [`NonMemberLimits`].
///
/// What goes over a limit is dropped and counted in [`MeshStats::dropped_rate_limited`]. The
/// defaults are far above what a node sends in normal operation (a lease renewal every
/// 500 ms, a few SWIM messages and a report a second, a few broadcast messages per write, a
/// sync dialogue per peer every few seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLimits {
    /// Gossip messages *authored* by one member, as this node receives them from whichever
    /// peer forwards them (default 1,000/s, burst 2,000). Over the limit a message is
    /// ignored in gossipsub validation (`MessageAcceptance::Ignore`): neither delivered nor
    /// forwarded, and no forwarder penalised.
    ///
    /// Charged to the author, not the forwarder: gossipsub drops duplicates before
    /// validation, so every message a forwarder brings is a new, validly signed message of
    /// some member, counted once against that member wherever it comes from. An honest
    /// member relaying a flood is not throttled for it, and the flooding author is throttled
    /// at every node, on every path.
    pub gossip: Rate,
    /// Requests (Sync, Logs, and Join from a member) from one member (default 100/s, burst
    /// 200). Over the limit the mesh answers `Response::Refused("rate limited")` itself.
    pub requests: Rate,
    /// Direct messages from one member (default 500/s, burst 1,000). Over the limit a
    /// message is dropped (acknowledged at the transport level like any other; the sender
    /// never learns of the drop).
    pub direct: Rate,
}

impl Default for MemberLimits {
    fn default() -> Self {
        Self {
            gossip: Rate::new(1_000, 2_000),
            requests: Rate::new(100, 200),
            direct: Rate::new(500, 1_000),
        }
    }
}

impl MemberLimits {
    /// Checks every rate has `per_second` and `burst` of at least 1.
    ///
    /// Errors: [`MeshError::Config`] naming the first zero field.
    pub fn validate(&self) -> Result<(), MeshError> {
        for (name, rate) in [
            ("gossip", self.gossip),
            ("requests", self.requests),
            ("direct", self.direct),
        ] {
            if rate.per_second == 0 || rate.burst == 0 {
                return Err(MeshError::Config(format!(
                    "member limit {name}: per_second and burst must be at least 1, got {rate:?}"
                )));
            }
        }
        Ok(())
    }
}

impl MeshConfig {
    /// Defaults, with empty `listen` and `bootstrap`.
    pub fn new(keypair: Keypair, cluster_id: impl Into<String>) -> Self {
        Self {
            keypair,
            cluster_id: cluster_id.into(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            redial_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_gossip_bytes: 256 * 1024,
            channel_capacity: 1024,
            non_member: NonMemberLimits::default(),
            identify_version: IDENTIFY_PROTOCOL.to_string(),
            member: MemberLimits::default(),
        }
    }
}

/// What the mesh tells the node.
#[derive(Debug)]
pub enum MeshEvent {
    /// Gossip authored by a member.
    Gossip {
        /// The topic it came on.
        topic: Topic,
        /// The author (gossipsub `source`, verified by gossipsub's signature check); not
        /// necessarily the peer that forwarded it.
        source: PeerId,
        /// Opaque payload.
        data: Vec<u8>,
    },
    /// An inbound request. Sync and Logs requests arrive only from members; Join from anyone.
    ///
    /// The node must answer with [`ReplyHandle::send`] or [`MeshHandle::respond`]; dropping the
    /// `reply` answers `Refused("no response")`.
    Request {
        /// The peer that sent it (authenticated by the transport).
        peer: PeerId,
        /// Sync, Join or Logs.
        kind: RequestKind,
        /// Opaque payload.
        body: Vec<u8>,
        /// Where the answer goes.
        reply: ReplyHandle,
    },
    /// A direct message ([`MeshHandle::send_direct`]) from a member. Delivered at most once,
    /// with no answer expected: the mesh acknowledged it to the sender's mesh already.
    Direct {
        /// The peer that sent it (authenticated by the transport).
        from: PeerId,
        /// Opaque payload, at most [`MAX_DIRECT_BYTES`].
        data: Vec<u8>,
    },
    /// The first connection to `peer` was established.
    ConnectionEstablished {
        /// The remote peer.
        peer: PeerId,
        /// Remote address of that connection. For an inbound TCP connection this is the
        /// peer's ephemeral port, not a dialable address; see [`MeshHandle::peer_addrs`].
        addr: Multiaddr,
    },
    /// The last connection to `peer` was closed.
    ConnectionClosed {
        /// The remote peer.
        peer: PeerId,
    },
    /// The mesh listens on a new address (without `/p2p` suffix).
    NewListenAddr {
        /// The address.
        addr: Multiaddr,
    },
}

/// Answer channel of one inbound request.
///
/// Sending goes back to the swarm through the command channel. Dropping it unanswered makes
/// the mesh answer `Response::Refused("no response")`.
pub struct ReplyHandle {
    channel: Option<ResponseChannel<Response>>,
    commands: mpsc::Sender<Command>,
    peer: PeerId,
    kind: RequestKind,
}

impl ReplyHandle {
    /// The peer that sent the request.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// What the request is for.
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// Sends the response.
    ///
    /// Errors: [`MeshError::TooLarge`] if an `Ok` payload exceeds [`MAX_RESPONSE_BODY`] (the
    /// requester then gets `Refused("response too large")`); [`MeshError::Stopped`] if the
    /// mesh task has stopped. A requester that went away meanwhile is not an error (logged).
    pub async fn send(mut self, response: Response) -> Result<(), MeshError> {
        let Some(channel) = self.channel.take() else {
            return Ok(());
        };
        let (response, result) = match response {
            Response::Ok(data) if data.len() > MAX_RESPONSE_BODY => (
                Response::Refused("response too large".into()),
                Err(MeshError::TooLarge {
                    size: data.len(),
                    max: MAX_RESPONSE_BODY,
                }),
            ),
            other => (other, Ok(())),
        };
        self.commands
            .send(Command::Respond { channel, response })
            .await
            .map_err(|_| MeshError::Stopped)?;
        result
    }

    fn take_channel(&mut self) -> Option<ResponseChannel<Response>> {
        self.channel.take()
    }
}

impl Drop for ReplyHandle {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            tracing::debug!(peer = %self.peer, kind = ?self.kind, "request dropped unanswered");
            // Best effort: if the command channel is full the channel is simply dropped and
            // the requester sees a failed request.
            let _ = self.commands.try_send(Command::Respond {
                channel,
                response: Response::Refused("no response".into()),
            });
        }
    }
}

impl fmt::Debug for ReplyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyHandle")
            .field("peer", &self.peer)
            .field("kind", &self.kind)
            .field("answered", &self.channel.is_none())
            .finish()
    }
}

/// Commands from handles to the actor.
pub(crate) enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
    },
    Request {
        peer: PeerId,
        request: wire::WireRequest,
        reply: oneshot::Sender<Result<Response, MeshError>>,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
    Direct {
        peer: PeerId,
        data: Vec<u8>,
    },
    SetMembers {
        members: HashMap<PeerId, Vec<Multiaddr>>,
        done: oneshot::Sender<()>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Stats(oneshot::Sender<MeshStats>),
    PeerAddrs {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// Handle to a running mesh. Cheap to clone.
///
/// When every handle (and every unanswered [`ReplyHandle`]) is dropped, the mesh stops.
#[derive(Debug, Clone)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    request_timeout: Duration,
    max_gossip_bytes: usize,
    /// Direct messages dropped because the command channel was full: counted here, where
    /// they are dropped, and reported by the actor in [`MeshStats::dropped_direct_outbound`].
    direct_queue_full: Arc<AtomicU64>,
}

impl MeshHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Publishes gossip. Fire and forget: "no peers subscribed yet" is not an error (logged at
    /// debug; anti-entropy repairs). Identical bytes published again on the same topic within
    /// 60 s are dropped as a duplicate.
    ///
    /// Errors: [`MeshError::TooLarge`] above [`MeshConfig::max_gossip_bytes`],
    /// [`MeshError::Stopped`] if the mesh task has stopped.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), MeshError> {
        if data.len() > self.max_gossip_bytes {
            return Err(MeshError::TooLarge {
                size: data.len(),
                max: self.max_gossip_bytes,
            });
        }
        self.send(Command::Publish { topic, data }).await
    }

    /// Sends one request to `peer` (dialing it if needed, with the addresses known from
    /// `set_members` and identify) and waits for the response.
    ///
    /// A refusal is `Ok(Response::Refused(..))`. Errors: [`MeshError::Timeout`] after
    /// [`MeshConfig::request_timeout`], [`MeshError::Request`] when the request failed
    /// (dial failure, connection closed, protocol not supported, request to self),
    /// [`MeshError::TooLarge`] above [`MAX_REQUEST_BODY`], [`MeshError::Stopped`].
    pub async fn request(
        &self,
        peer: PeerId,
        kind: RequestKind,
        body: Vec<u8>,
    ) -> Result<Response, MeshError> {
        if body.len() > MAX_REQUEST_BODY {
            return Err(MeshError::TooLarge {
                size: body.len(),
                max: MAX_REQUEST_BODY,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request {
            peer,
            request: wire::WireRequest { kind, body },
            reply,
        })
        .await?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(MeshError::Timeout),
            Ok(Err(_)) => Err(MeshError::Stopped),
            Ok(Ok(result)) => result,
        }
    }

    /// Sends `data` to `peer` as one direct message, delivered there as
    /// [`MeshEvent::Direct`]. Datagram-like: returns at once without waiting for anything
    /// (not even for room in the command channel), the node gets no answer, and the message
    /// may be lost.
    ///
    /// The mesh dials `peer` if needed (addresses from `set_members` and identify). `peer`
    /// need not be in this node's member set, but the receiver delivers only what its own
    /// members send. Lost, and counted, when: the command channel is full or
    /// [`MAX_DIRECT_IN_FLIGHT`] messages to `peer` already await their acknowledgement
    /// ([`MeshStats::dropped_direct_outbound`]); `peer` cannot be reached or did not
    /// acknowledge within 5 s ([`MeshStats::failed_direct_outbound`]). The receiver drops,
    /// after acknowledging, a message from a non-member, one over its
    /// [`MemberLimits::direct`] and one that finds its event channel full.
    ///
    /// Carried by its own request-response protocol, [`DIRECT_PROTOCOL`] (see the crate
    /// doc). Errors: [`MeshError::TooLarge`] above [`MAX_DIRECT_BYTES`];
    /// [`MeshError::Request`] for a message to this node itself; [`MeshError::Stopped`] if
    /// the mesh task has stopped.
    pub fn send_direct(&self, peer: PeerId, data: Vec<u8>) -> Result<(), MeshError> {
        if data.len() > MAX_DIRECT_BYTES {
            return Err(MeshError::TooLarge {
                size: data.len(),
                max: MAX_DIRECT_BYTES,
            });
        }
        if peer == self.local_peer_id {
            return Err(MeshError::Request("direct message to self".into()));
        }
        match self.commands.try_send(Command::Direct { peer, data }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.direct_queue_full.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(MeshError::Stopped),
        }
    }

    /// Answers an inbound request; same as [`ReplyHandle::send`].
    pub async fn respond(&self, reply: ReplyHandle, response: Response) -> Result<(), MeshError> {
        reply.send(response).await
    }

    /// Replaces the member set: peer -> known addresses.
    ///
    /// The mesh accepts gossip and Sync requests only from these peers (and itself), and keeps
    /// re-dialing members it is not connected to. Has taken effect when this returns, also
    /// for peers already connected.
    pub async fn set_members(
        &self,
        members: HashMap<PeerId, Vec<Multiaddr>>,
    ) -> Result<(), MeshError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::SetMembers { members, done }).await?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// Starts dialing `addr` (with or without `/p2p/<peer id>` suffix). Returns once the dial
    /// has started, not when it connected: watch for [`MeshEvent::ConnectionEstablished`].
    /// Dialing a peer that is already connected or being dialed is a no-op.
    ///
    /// Errors: [`MeshError::Transport`] if the dial cannot start (e.g. unsupported address).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), MeshError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { addr, reply }).await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Counters and current state.
    pub async fn stats(&self) -> Result<MeshStats, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats(reply)).await?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// Listen addresses `peer` announced over identify (empty if unknown). Kept for connected
    /// peers and for members.
    pub async fn peer_addrs(&self, peer: PeerId) -> Result<Vec<Multiaddr>, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::PeerAddrs { peer, reply }).await?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// Stops the swarm task: closes connections and listeners, fails pending requests with
    /// [`MeshError::Stopped`]. Then waits, at most 1 s, until the listen ports can be bound
    /// again (QUIC keeps its UDP socket while connections drain, typically a few hundred ms;
    /// longer while a dial to an unreachable address is pending). Idempotent; returns at once
    /// if the mesh already stopped.
    pub async fn shutdown(&self) {
        let (ack, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(ack)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), MeshError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| MeshError::Stopped)
    }
}

/// Counters and current state of the mesh.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeshStats {
    /// Peers with at least one connection, sorted.
    #[serde(serialize_with = "serialize_display")]
    pub connected_peers: Vec<PeerId>,
    /// Addresses the mesh listens on (without `/p2p` suffix).
    #[serde(serialize_with = "serialize_display")]
    pub listen_addrs: Vec<Multiaddr>,
    /// Gossip messages, Sync/Logs requests and direct messages rejected because their author
    /// is not a member.
    pub dropped_non_member: u64,
    /// Gossip messages, direct messages and inbound requests dropped (requests: answered
    /// `Refused("overloaded")`) because the event channel was full.
    pub dropped_overflow: u64,
    /// Gossip messages (ignored in validation), requests (answered `Refused("rate limited")`)
    /// and direct messages (dropped) of members over their [`MemberLimits`].
    pub dropped_rate_limited: u64,
    /// Peers refused because identify showed another protocol version
    /// ([`IDENTIFY_PROTOCOL`]): another Warren release. Each is logged once and disconnected.
    pub incompatible_peers: u64,
    /// Outbound direct messages never sent: the command channel was full, or
    /// [`MAX_DIRECT_IN_FLIGHT`] to the same peer awaited their acknowledgement.
    pub dropped_direct_outbound: u64,
    /// Outbound direct messages sent but not acknowledged: the peer could not be dialed, the
    /// stream failed or timed out (5 s), the connection closed.
    pub failed_direct_outbound: u64,
    /// Connected peers known (through gossipsub) to be subscribed to every topic of this node,
    /// sorted: the peers its gossip reaches directly. A connected member missing here for
    /// the QUIC idle timeout (5 s) is reconnected, so that both sides announce their
    /// subscriptions again.
    #[serde(serialize_with = "serialize_display")]
    pub subscribed_peers: Vec<PeerId>,
}

fn serialize_display<T: fmt::Display, S: Serializer>(
    items: &[T],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().map(|i| i.to_string()))
}

/// Errors of the mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// An address could not be listened on (e.g. port in use).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Building the transport failed, or a dial could not start.
    #[error("transport: {0}")]
    Transport(String),
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The mesh task has stopped.
    #[error("mesh stopped")]
    Stopped,
    /// The request got no response in time.
    #[error("request timed out")]
    Timeout,
    /// The request failed (dial failure, connection closed, protocol not supported, ...).
    #[error("request failed: {0}")]
    Request(String),
    /// A payload exceeds its limit.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the payload.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Last 8 characters of the base58 peer id: enough to tell peers apart in logs (all ed25519
/// peer ids start with the same `12D3KooW`).
pub fn short_peer_id(peer: &PeerId) -> String {
    let s = peer.to_base58();
    let skip = s.chars().count().saturating_sub(8);
    s.chars().skip(skip).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(Topic::Changes.name("c1"), "warren/c1/changes");
        assert_eq!(Topic::Lease.name("c1"), "warren/c1/lease");
    }

    #[test]
    fn short_peer_id_is_suffix() {
        let p = Keypair::generate_ed25519().public().to_peer_id();
        let s = short_peer_id(&p);
        assert_eq!(s.len(), 8);
        assert!(p.to_base58().ends_with(&s));
    }

    #[test]
    fn stats_serialize_as_strings() {
        let p = Keypair::generate_ed25519().public().to_peer_id();
        let stats = MeshStats {
            connected_peers: vec![p],
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            dropped_non_member: 1,
            dropped_overflow: 2,
            ..MeshStats::default()
        };
        let v = serde_json::to_value(&stats).unwrap();
        assert_eq!(v["connected_peers"][0], p.to_base58());
        assert_eq!(v["listen_addrs"][0], "/ip4/127.0.0.1/tcp/1");
        assert_eq!(v["dropped_overflow"], 2);
    }

    #[test]
    fn config_defaults() {
        let c = MeshConfig::new(Keypair::generate_ed25519(), "x");
        assert_eq!(c.redial_interval, Duration::from_secs(2));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.max_gossip_bytes, 256 * 1024);
        assert_eq!(c.channel_capacity, 1024);
        assert!(c.listen.is_empty() && c.bootstrap.is_empty());
        assert_eq!(c.member.gossip, Rate::new(1_000, 2_000));
        assert_eq!(c.member.requests, Rate::new(100, 200));
        assert_eq!(c.member.direct, Rate::new(500, 1_000));
        assert!(c.member.validate().is_ok());
    }

    #[test]
    fn zero_member_limits_are_refused() {
        let mut limits = MemberLimits::default();
        limits.requests.per_second = 0;
        assert!(matches!(limits.validate(), Err(MeshError::Config(m)) if m.contains("requests")));
        let mut limits = MemberLimits::default();
        limits.direct.burst = 0;
        assert!(matches!(limits.validate(), Err(MeshError::Config(m)) if m.contains("direct")));
    }
}
