//! The overlay task: runs this node's WireGuard interface ([`warren_overlay::Interface`]) and
//! keeps its peers those the overlay's rule gives ([`crate::overlay::peers`], computed by the
//! actor from the desired state whenever the document changes).
//!
//! - With the overlay on (the default), it brings the interface up: the node's overlay
//!   address, the cluster's /48 routed through it, the key from `wireguard.key`, the UDP port
//!   of `--overlay-port`. If that fails (no `/dev/net/tun`, no `CAP_NET_ADMIN`, a name taken,
//!   anything else) it logs one warning with the reason and the node runs without the
//!   overlay: its status says `off` and why.
//! - While up, it applies the peer set each time it changes, and every
//!   [`REAPPLY_EVERY`] again (someone may have run `wg set`); a removed member's peer goes
//!   at the first change after its removal.
//! - When the node stops (the cancel token), it takes the interface down.
//!
//! [`warren_overlay`] is blocking code: each call runs on tokio's blocking pool.
//!
//! Its status ([`OverlayStatus`]) goes to the actor over a watch channel, into this node's
//! reports, `node inspect` and `cluster status`.

use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use warren_overlay::{Interface, InterfaceConfig, OverlayError, Peer};

use super::{NodeConfig, NodeError};
use crate::machine::NodeMachine;
use crate::overlay::{addresses, cluster_prefix, OverlayPeer, Prefix, WireguardKey};
use crate::protocol::OverlayStatus;

/// How often the peer set is applied again although it did not change (it makes the device's
/// peers exactly the set, undoing a `wg set` by hand; a device already right is not written).
pub(crate) const REAPPLY_EVERY: Duration = Duration::from_secs(30);

/// The actor's ends of the overlay task's channels: it publishes the peer set and reads the
/// interface's status.
pub(crate) struct OverlayLink {
    /// This node's WireGuard peers, as the rule gives them now.
    pub(crate) peers: watch::Sender<Vec<OverlayPeer>>,
    /// The interface's status; `None` until the task said.
    pub(crate) status: watch::Receiver<Option<OverlayStatus>>,
}

/// The overlay task's ends of its channels.
pub(crate) struct OverlaySide {
    peers: watch::Receiver<Vec<OverlayPeer>>,
    status: watch::Sender<Option<OverlayStatus>>,
}

/// The two ends of the channels between the actor and the overlay task (watch channels: each
/// holds one value, the latest).
pub(crate) fn link() -> (OverlayLink, OverlaySide) {
    let (peers_tx, peers_rx) = watch::channel(Vec::new());
    let (status_tx, status_rx) = watch::channel(None);
    (
        OverlayLink {
            peers: peers_tx,
            status: status_rx,
        },
        OverlaySide {
            peers: peers_rx,
            status: status_tx,
        },
    )
}

/// What the interface is brought up with.
pub(crate) struct Setup {
    /// Interface name (`--overlay-interface`).
    pub(crate) name: String,
    /// UDP listen port (`--overlay-port`).
    pub(crate) port: u16,
    /// This node's WireGuard key (`wireguard.key`).
    pub(crate) key: WireguardKey,
    /// This node's overlay address.
    pub(crate) address: Ipv6Addr,
    /// The cluster's prefix, routed through the interface.
    pub(crate) route: Prefix,
}

impl Setup {
    /// The interface this node runs in cluster `cluster_id`, `None` with the overlay off
    /// (`--no-overlay`). Loads (or creates) the WireGuard key in `data_dir` and gives the
    /// machine its public half and the port, which it publishes in its member record.
    ///
    /// Errors: [`NodeError::Identity`] when the key file cannot be read or created.
    pub(crate) fn load(
        config: &NodeConfig,
        data_dir: &Path,
        cluster_id: &str,
        machine: &mut NodeMachine,
    ) -> Result<Option<Setup>, NodeError> {
        if !config.overlay {
            return Ok(None);
        }
        let key = super::identity::load_or_create_wireguard(data_dir)?;
        machine.set_wireguard_public(key.public());
        machine.set_wireguard_port(config.overlay_port);
        Ok(Some(Setup {
            name: config.overlay_interface.clone(),
            port: config.overlay_port,
            address: addresses(cluster_id, &key.public()).overlay_ip,
            route: cluster_prefix(cluster_id),
            key,
        }))
    }
}

/// Starts the overlay task: with `setup` (`None`: `--no-overlay`, the status says
/// `disabled` and the task ends at once) until `cancel` fires.
pub(crate) fn spawn(
    setup: Option<Setup>,
    side: OverlaySide,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(setup, side, cancel).in_current_span())
}

async fn run(setup: Option<Setup>, mut side: OverlaySide, cancel: CancellationToken) {
    let Some(setup) = setup else {
        side.status.send_replace(Some(OverlayStatus::Disabled));
        return;
    };
    let interface = setup.name.clone();
    let address = setup.address.to_string();
    let config = InterfaceConfig {
        name: setup.name,
        private_key_hex: setup.key.to_uapi_hex(),
        listen_port: setup.port,
        address: setup.address,
        route: setup.route,
    };
    let up = blocking(move || Interface::up(&config)).await;
    let mut device = match up {
        Ok(device) => device,
        Err(e) => {
            warn!(
                interface = %interface,
                reason = %e,
                "running without the overlay: its WireGuard interface cannot be created{}",
                if matches!(e, OverlayError::Unavailable { .. }) {
                    " (no TUN device here: /dev/net/tun and CAP_NET_ADMIN are needed)"
                } else {
                    ""
                }
            );
            side.status.send_replace(Some(OverlayStatus::Off {
                reason: e.to_string(),
            }));
            return;
        }
    };
    let port = device.listen_port();
    let on = |peers: usize| OverlayStatus::On {
        interface: interface.clone(),
        address: address.clone(),
        peers: u32::try_from(peers).unwrap_or(u32::MAX),
        port,
    };
    side.status.send_replace(Some(on(0)));
    let mut reapply = tokio::time::interval(REAPPLY_EVERY);
    reapply.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied: Option<Vec<Peer>> = None;
    // The peer count last logged: a re-application of the same set is not logged again.
    let mut logged = None;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            changed = side.peers.changed() => {
                if changed.is_err() {
                    // The actor is gone: the node is stopping.
                    break;
                }
            }
            _ = reapply.tick() => applied = None,
        }
        let want: Vec<Peer> = side
            .peers
            .borrow_and_update()
            .iter()
            .map(wireguard_peer)
            .collect();
        if applied.as_ref() == Some(&want) {
            continue;
        }
        let peers = want.clone();
        let (back, result) = blocking(move || {
            let result = device.set_peers(&peers);
            (device, result)
        })
        .await;
        device = back;
        match result {
            Ok(()) => {
                if logged != Some(want.len()) {
                    info!(interface = %interface, peers = want.len(), "overlay peers applied");
                    logged = Some(want.len());
                }
                side.status.send_replace(Some(on(want.len())));
                applied = Some(want);
            }
            Err(e) => {
                // Tried again at the next change or re-application.
                warn!(interface = %interface, error = %e, "could not apply the overlay peers");
                applied = None;
            }
        }
    }
    if let Err(e) = blocking(move || device.down()).await {
        warn!(interface = %interface, error = %e, "taking the overlay interface down");
    }
}

/// The interface's peer entry for a member the rule gave.
fn wireguard_peer(peer: &OverlayPeer) -> Peer {
    Peer {
        public_key: peer.public_key,
        endpoint: peer.endpoint,
        allowed: vec![peer.allowed],
        keepalive_s: peer.keepalive_s,
    }
}

/// Runs `f` on tokio's blocking pool. A panic there (a bug) is carried on in this task.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::WireguardPublic;
    use warren_crdt::NodeId;

    #[test]
    fn a_members_peer_entry_allows_its_block_and_keeps_its_endpoint() {
        let key = WireguardPublic([9; 32]);
        let block = addresses("c", &key).block;
        let peer = wireguard_peer(&OverlayPeer {
            node: NodeId("n".into()),
            public_key: key,
            endpoint: Some("198.18.0.2:51820".parse().expect("addr")),
            allowed: block,
            keepalive_s: 25,
        });
        assert_eq!(peer.public_key, key);
        assert_eq!(peer.allowed, vec![block]);
        assert_eq!(
            peer.endpoint,
            Some("198.18.0.2:51820".parse().expect("addr"))
        );
        assert_eq!(peer.keepalive_s, 25);
    }

    #[tokio::test]
    async fn with_the_overlay_off_the_status_says_disabled() {
        let (link, side) = link();
        spawn(None, side, CancellationToken::new())
            .await
            .expect("task");
        assert_eq!(*link.status.borrow(), Some(OverlayStatus::Disabled));
    }
}
