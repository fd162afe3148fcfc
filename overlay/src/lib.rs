//! `warren-overlay`: a node's WireGuard interface on the overlay (DESIGN §4, issue 14).
//!
//! Each member runs one interface (`warren0`) in userspace with [boringtun] (no kernel
//! module needed): its own WireGuard key and UDP port, its overlay address as a /128, the
//! cluster's /48 routed through it, and one peer per other member whose allowed IP is that
//! member's /96 block. The addresses and keys come from [`warren_core::overlay`] (a pure
//! rule: every member derives every other member's block from its public key); this crate
//! only makes the kernel and boringtun carry them out.
//!
//! - [`Interface::up`] creates the device, sets key and port over its UAPI socket, and puts
//!   address, MTU and route on the link with `ip` (iproute2; why not netlink: see
//!   `command.rs`). [`Interface::set_peers`] makes the peer set exactly the given one;
//!   [`Interface::show`] reads it back; dropping the interface (or [`Interface::down`])
//!   stops the device and deletes the link.
//! - The interface serves its UAPI socket, `/var/run/wireguard/<name>.sock`, itself (`wg
//!   show` reads it; `wg set` works for peers); boringtun is configured through a private
//!   channel only this crate writes to (see `device.rs`: boringtun's own socket takes SIGTERM
//!   away from the process that runs it). [`Uapi`] is a client of such a socket, with a
//!   deadline and a bound on the reply.
//! - [`OverlayError::Unavailable`] says there is no TUN device to be had here (no
//!   `/dev/net/tun`, no `CAP_NET_ADMIN`); a daemon carries on without the overlay then.
//!
//! Used by the daemon's overlay task (`node/src/daemon/overlay.rs`), which keeps the peers
//! those [`warren_core::overlay::peers`] gives from the desired state.
//!
//! ```no_run
//! use warren_core::overlay::{addresses, cluster_prefix, WireguardKey};
//! use warren_overlay::{Interface, InterfaceConfig, Peer};
//!
//! let mut rng = rand::rngs::OsRng;
//! let key = WireguardKey::generate(&mut rng);
//! let me = addresses("lab", &key.public());
//! let mut interface = Interface::up(&InterfaceConfig {
//!     name: "warren0".into(),
//!     private_key_hex: key.to_uapi_hex(),
//!     listen_port: 51820,
//!     address: me.overlay_ip,
//!     route: cluster_prefix("lab"),
//! })?;
//!
//! let other = WireguardKey::generate(&mut rng).public();
//! interface.set_peers(&[Peer {
//!     public_key: other,
//!     endpoint: Some("198.18.0.2:51820".parse()?),
//!     allowed: vec![addresses("lab", &other).block],
//!     keepalive_s: 25,
//! }])?;
//! for peer in interface.show()? {
//!     println!("{} handshake {:?} ago", peer.public_key.to_base64(), peer.last_handshake);
//! }
//! interface.down()?; // or let it drop
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything here needs root (or `CAP_NET_ADMIN`) and `ip`; `tests/two_namespaces.rs`
//! runs two interfaces in two network namespaces and sends TCP between them.
//!
//! [boringtun]: https://docs.rs/boringtun/0.7

mod command;
mod device;
mod error;
mod interface;
mod peer;
mod protocol;
mod uapi;

pub use error::OverlayError;
pub use interface::{Interface, InterfaceConfig, MTU};
pub use peer::{parse_prefix, parse_public_key, AllowedIp, Peer, PeerState};
pub use protocol::DeviceState;
pub use uapi::{validate_name, Uapi, IO_TIMEOUT, MAX_REPLY, SOCKET_DIR};
