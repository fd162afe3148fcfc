//! Bounds on the connections of peers that are not members ([`NonMemberLimits`]).
//!
//! libp2p's `connection_limits` counts members' connections too (its bypass list skips only
//! the check), so a cluster with many members would refuse every joining node: this
//! behaviour counts non-members alone, and by IP address as well.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::{transport::PortUse, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    behaviour::{ConnectionClosed, ListenFailure},
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use crate::NonMemberLimits;

/// Why a connection was refused: the bound it would have passed.
#[derive(Debug, thiserror::Error)]
#[error("connection refused: at most {limit} {what}")]
pub(crate) struct Refused {
    limit: u32,
    what: &'static str,
}

/// An established incoming connection of a non-member: its peer and remote IP address.
type Stranger = (PeerId, Option<IpAddr>);

/// The [`NetworkBehaviour`] that enforces [`NonMemberLimits`] (the idle close is the mesh
/// actor's). Members are never counted nor refused.
pub(crate) struct Guard {
    limits: NonMemberLimits,
    members: HashSet<PeerId>,
    /// Incoming connections in their handshake (peer not known yet).
    pending: HashSet<ConnectionId>,
    /// Established incoming connections of non-members: peer and remote IP address.
    strangers: HashMap<ConnectionId, Stranger>,
}

impl Guard {
    pub(crate) fn new(limits: NonMemberLimits) -> Self {
        Self {
            limits,
            members: HashSet::new(),
            pending: HashSet::new(),
            strangers: HashMap::new(),
        }
    }

    /// The member set changed: members are no longer counted.
    pub(crate) fn set_members(&mut self, members: impl IntoIterator<Item = PeerId>) {
        self.members = members.into_iter().collect();
        let members = &self.members;
        self.strangers
            .retain(|_, (peer, _)| !members.contains(peer));
    }

    fn check(&self, peer: &PeerId, ip: Option<IpAddr>) -> Result<(), Refused> {
        let refuse = |limit: u32, what: &'static str| Err(Refused { limit, what });
        let count =
            |f: &dyn Fn(&Stranger) -> bool| self.strangers.values().filter(|c| f(c)).count();
        if count(&|_| true) >= self.limits.max_established_incoming as usize {
            return refuse(
                self.limits.max_established_incoming,
                "incoming connections of non-members",
            );
        }
        if count(&|(p, _)| p == peer) >= self.limits.max_per_peer as usize {
            return refuse(self.limits.max_per_peer, "connections per non-member");
        }
        if ip.is_some() && count(&|(_, i)| *i == ip) >= self.limits.max_per_ip as usize {
            return refuse(
                self.limits.max_per_ip,
                "non-member connections per IP address",
            );
        }
        Ok(())
    }
}

/// The IP address of a remote address (`/ip4/...` or `/ip6/...`), if it has one.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Guard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if self.pending.len() >= self.limits.max_pending_incoming as usize {
            return Err(ConnectionDenied::new(Refused {
                limit: self.limits.max_pending_incoming,
                what: "incoming handshakes at once",
            }));
        }
        self.pending.insert(connection_id);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending.remove(&connection_id);
        if self.members.contains(&peer) {
            return Ok(dummy::ConnectionHandler);
        }
        let ip = ip_of(remote_addr);
        self.check(&peer, ip).map_err(ConnectionDenied::new)?;
        self.strangers.insert(connection_id, (peer, ip));
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.strangers.remove(&connection_id);
                self.pending.remove(&connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.pending.remove(&connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
