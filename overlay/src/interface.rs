//! The interface: a boringtun device, its key and port, its address and route, its peers.

use std::net::Ipv6Addr;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use boringtun::device::{DeviceConfig, DeviceHandle};
use warren_core::overlay::Prefix;
use zeroize::Zeroizing;

use crate::command::run;
use crate::device::{lock, DeviceChannel, Server, SharedChannel};
use crate::peer::{Peer, PeerState};
use crate::protocol::DeviceState;
use crate::uapi::{validate_name, Uapi};
use crate::OverlayError;

/// The interface's MTU in bytes: WireGuard's usual 1420 (1500 less 80 bytes of IPv6, UDP and
/// WireGuard headers), so an encapsulated packet fits a 1500-byte link.
pub const MTU: u32 = 1420;

/// Worker threads of the device (boringtun's event loops, one TUN queue each).
const DEVICE_THREADS: usize = 2;

/// The character device a TUN interface is made from.
const TUN_PATH: &str = "/dev/net/tun";

/// What [`Interface::up`] brings up.
#[derive(Clone)]
pub struct InterfaceConfig {
    /// The interface name, e.g. `warren0`: 1 to 15 bytes, an ASCII letter first, then ASCII
    /// letters, digits, `-`, `_`, `.`. Its UAPI socket is `/var/run/wireguard/<name>.sock`,
    /// one per machine, whatever the network namespace.
    pub name: String,
    /// The member's WireGuard private key in 64 hex digits
    /// (`warren_core::overlay::WireguardKey::to_uapi_hex`).
    pub private_key_hex: Zeroizing<String>,
    /// The UDP port the device listens on (IPv4 and IPv6); 0 lets the system pick one
    /// ([`Interface::state`] tells which).
    pub listen_port: u16,
    /// The member's own overlay address (`NodeAddresses::overlay_ip`), put on the interface
    /// as a /128.
    pub address: Ipv6Addr,
    /// The prefix routed through the interface: the cluster's /48
    /// (`warren_core::overlay::cluster_prefix`).
    pub route: Prefix,
}

impl std::fmt::Debug for InterfaceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterfaceConfig")
            .field("name", &self.name)
            .field("private_key_hex", &"<redacted>")
            .field("listen_port", &self.listen_port)
            .field("address", &self.address)
            .field("route", &self.route)
            .finish()
    }
}

impl InterfaceConfig {
    /// Checks what can be checked without touching the system.
    ///
    /// Errors: [`OverlayError::Config`] for an invalid name, a key that is not 64 hex
    /// digits, a route longer than 128 bits.
    pub fn validate(&self) -> Result<(), OverlayError> {
        validate_name(&self.name)?;
        let key = self.private_key_hex.as_str();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OverlayError::Config(
                "the private key is not 64 hex digits".into(),
            ));
        }
        if self.route.len > 128 {
            return Err(OverlayError::Config(format!(
                "route {}/{} is longer than 128 bits",
                self.route.addr, self.route.len
            )));
        }
        Ok(())
    }
}

/// A running WireGuard interface: a boringtun device (userspace, its own threads) with the
/// member's key, listen port, overlay address and the cluster's route, and its UAPI socket
/// served by a thread of this crate. Dropping it (or [`down`](Self::down)) stops the device,
/// removes the socket and deletes the link.
pub struct Interface {
    name: String,
    socket: PathBuf,
    channel: SharedChannel,
    /// `None` until up, and once taken down.
    server: Option<Server>,
    /// `None` once taken down.
    device: Option<DeviceHandle>,
    /// The UDP port the device listens on (the configured one, or the one it picked).
    listen_port: u16,
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("name", &self.name)
            .field("socket", &self.socket)
            .field("up", &self.device.is_some())
            .finish()
    }
}

impl Interface {
    /// Creates the device and configures it:
    ///
    /// 1. boringtun's `DeviceHandle::new(name)`: opens `/dev/net/tun`, creates the TUN link
    ///    `name` in the calling thread's network namespace, binds a UDP port, starts its
    ///    worker threads; it is configured through a socket pair (see `device.rs` for why
    ///    not boringtun's own UAPI socket);
    /// 2. on that channel: `private_key`, `listen_port`;
    /// 3. serves `/var/run/wireguard/<name>.sock` (what `wg show` reads, and [`Uapi`]);
    /// 4. `ip -6 addr add ADDRESS/128 dev NAME nodad` (a TUN link has no neighbours to
    ///    detect a duplicate with; without `nodad` the address could not be bound for a
    ///    second), `ip link set NAME mtu 1420 up`, `ip -6 route add ROUTE dev NAME`.
    ///
    /// On any failure after step 1 the device is stopped and the link deleted again. The
    /// interface has no peers: [`set_peers`](Self::set_peers) gives them.
    ///
    /// Errors: [`OverlayError::Config`] (invalid config, or a device of that name already
    /// answers on its UAPI socket), [`OverlayError::Unavailable`] (no `/dev/net/tun`, or not
    /// permitted), [`OverlayError::Device`], [`OverlayError::Uapi`] (errno 98: the port is
    /// taken), [`OverlayError::Command`] (an `ip` command failed, with its stderr).
    pub fn up(config: &InterfaceConfig) -> Result<Interface, OverlayError> {
        config.validate()?;
        let name = config.name.clone();
        let uapi = Uapi::for_interface(&name)?;
        if uapi.answers() {
            return Err(OverlayError::Config(format!(
                "a WireGuard device named {name} already answers on {} (in this or another \
                 network namespace: the socket is per machine)",
                uapi.socket().display()
            )));
        }
        if !Path::new(TUN_PATH).exists() {
            return Err(OverlayError::Unavailable {
                reason: format!("{TUN_PATH} does not exist"),
            });
        }
        let device_error = {
            let name = name.clone();
            move |reason: String| OverlayError::Device {
                name: name.clone(),
                reason,
            }
        };
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| device_error(format!("cannot make a socket pair: {e}")))?;
        let device = DeviceHandle::new(
            &name,
            DeviceConfig {
                n_threads: DEVICE_THREADS,
                // Off: with connected per-peer sockets, boringtun 0.7.1 panics in a worker
                // thread (`epoll.rs:343`, index out of bounds in `clear_event_by_fd`, seen on
                // the testnet's release builds) and the device stops handshaking. All peers'
                // traffic then goes through the listening sockets.
                use_connected_socket: false,
                use_multi_queue: true,
                // boringtun owns this end from here (it leaks it if creating the TUN device
                // fails: one descriptor per failed `up`).
                uapi_fd: theirs.into_raw_fd(),
            },
        )
        .map_err(|e| classify(&name, e))?;
        let mut interface = Interface {
            name,
            socket: uapi.socket().to_path_buf(),
            channel: Arc::new(Mutex::new(DeviceChannel::new(
                ours,
                uapi.socket().to_path_buf(),
            ))),
            server: None,
            device: Some(device),
            listen_port: config.listen_port,
        };
        // From here, dropping `interface` undoes everything.
        lock(&interface.channel).set_device(&config.private_key_hex, config.listen_port)?;
        if config.listen_port == 0 {
            interface.listen_port = lock(&interface.channel).state()?.listen_port;
        }
        let server =
            Server::start(&interface.socket, Arc::clone(&interface.channel)).map_err(|e| {
                device_error(format!("cannot serve {}: {e}", interface.socket.display()))
            })?;
        interface.server = Some(server);
        let name = interface.name.as_str();
        run(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{}/128", config.address),
                "dev",
                name,
                "nodad",
            ],
        )?;
        run("ip", &["link", "set", name, "mtu", &MTU.to_string(), "up"])?;
        run(
            "ip",
            &["-6", "route", "add", &config.route.to_string(), "dev", name],
        )?;
        tracing::info!(
            interface = %name,
            address = %config.address,
            route = %config.route,
            listen_port = interface.listen_port,
            "overlay interface up"
        );
        Ok(interface)
    }

    /// The UDP port the device listens on: the configured one, or the free one it took for
    /// port 0.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client of the interface's UAPI socket (the one `wg` uses), for other threads or
    /// to hand its path to another process.
    pub fn uapi(&self) -> Uapi {
        Uapi::at(&self.socket)
    }

    /// Makes the interface's peers exactly `peers` (see [`Uapi::set_peers`]): a member left
    /// out has no peer entry after this returns, so nothing is routed to or accepted from
    /// it; unchanged peers keep their sessions.
    ///
    /// Errors: [`OverlayError::Config`] (two peers with one key, a prefix over 128 bits),
    /// [`OverlayError::Uapi`].
    pub fn set_peers(&mut self, peers: &[Peer]) -> Result<(), OverlayError> {
        lock(&self.channel).set_peers(peers)?;
        tracing::debug!(interface = %self.name, peers = peers.len(), "overlay peers set");
        Ok(())
    }

    /// The peers as the device reports them: public key, endpoint, allowed IPs, last
    /// handshake, bytes received and sent (what `wg show` prints).
    ///
    /// Errors: [`OverlayError::Uapi`].
    pub fn show(&self) -> Result<Vec<PeerState>, OverlayError> {
        Ok(self.state()?.peers)
    }

    /// The whole device: public key, listen port, peers.
    ///
    /// Errors: [`OverlayError::Uapi`].
    pub fn state(&self) -> Result<DeviceState, OverlayError> {
        lock(&self.channel).state()
    }

    /// Stops the device and deletes the link (with its address and route).
    ///
    /// Errors: [`OverlayError::Command`] when `ip link del` fails for another reason than
    /// the link being gone already (boringtun's closing of the TUN device may beat it).
    pub fn down(mut self) -> Result<(), OverlayError> {
        self.take_down()
    }

    fn take_down(&mut self) -> Result<(), OverlayError> {
        let Some(device) = self.device.take() else {
            return Ok(());
        };
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
        // Tells the worker threads to exit; the TUN device goes with the last of them.
        drop(device);
        match run("ip", &["link", "del", "dev", &self.name]) {
            Ok(_) => {}
            Err(OverlayError::Command { stderr, .. })
                if stderr.contains("Cannot find device") || stderr.contains("does not exist") => {}
            Err(e) => return Err(e),
        }
        tracing::info!(interface = %self.name, "overlay interface down");
        Ok(())
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        if let Err(e) = self.take_down() {
            tracing::warn!(interface = %self.name, error = %e, "taking the overlay interface down");
        }
    }
}

/// Sorts boringtun's error into "no TUN here" (the daemon runs without the overlay) and the
/// rest.
fn classify(name: &str, e: boringtun::device::Error) -> OverlayError {
    use boringtun::device::Error as E;
    let unavailable = |what: &str, io: &std::io::Error| {
        let denied = io.kind() == std::io::ErrorKind::PermissionDenied
            || matches!(io.raw_os_error(), Some(1 | 13)); // EPERM, EACCES
        let missing =
            io.kind() == std::io::ErrorKind::NotFound || matches!(io.raw_os_error(), Some(6 | 19)); // ENXIO, ENODEV: no tun driver
        (denied || missing).then(|| OverlayError::Unavailable {
            reason: format!("{what}: {io}"),
        })
    };
    let classified = match &e {
        E::Socket(io) => unavailable(&format!("cannot open {TUN_PATH}"), io),
        E::IOCtl(io) => unavailable(&format!("cannot create TUN device {name}"), io),
        E::IoError(io) => unavailable(&format!("cannot create TUN device {name}"), io),
        _ => None,
    };
    classified.unwrap_or_else(|| OverlayError::Device {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> InterfaceConfig {
        InterfaceConfig {
            name: "warren0".into(),
            private_key_hex: Zeroizing::new("ab".repeat(32)),
            listen_port: 51820,
            address: "fd00::1".parse().expect("addr"),
            route: Prefix {
                addr: "fd00::".parse().expect("addr"),
                len: 48,
            },
        }
    }

    #[test]
    fn configs_are_checked_and_never_show_the_key() {
        assert!(config().validate().is_ok());
        let shown = format!("{:?}", config());
        assert!(!shown.contains("abab"), "{shown}");
        let mut c = config();
        c.private_key_hex = Zeroizing::new("ab".repeat(31));
        assert!(matches!(c.validate(), Err(OverlayError::Config(_))));
        c.private_key_hex = Zeroizing::new("zz".repeat(32));
        assert!(matches!(c.validate(), Err(OverlayError::Config(_))));
        let mut c = config();
        c.name = "7".into();
        assert!(matches!(c.validate(), Err(OverlayError::Config(_))));
        let mut c = config();
        c.route.len = 200;
        assert!(matches!(c.validate(), Err(OverlayError::Config(_))));
    }

    #[test]
    fn a_missing_or_forbidden_tun_is_unavailable_and_the_rest_a_device_error() {
        use boringtun::device::Error as E;
        let io = |code| std::io::Error::from_raw_os_error(code);
        assert!(matches!(
            classify("w0", E::Socket(io(2))),
            OverlayError::Unavailable { .. }
        ));
        assert!(matches!(
            classify("w0", E::IOCtl(io(1))),
            OverlayError::Unavailable { .. }
        ));
        assert!(matches!(
            classify("w0", E::Socket(io(13))),
            OverlayError::Unavailable { .. }
        ));
        assert!(matches!(
            classify("w0", E::IOCtl(io(16))), // EBUSY: a link of that name exists
            OverlayError::Device { .. }
        ));
        assert!(matches!(
            classify("w0", E::InvalidTunnelName),
            OverlayError::Device { .. }
        ));
    }

    #[test]
    fn an_interface_can_be_moved_to_another_thread() {
        fn send<T: Send>() {}
        send::<Interface>();
    }
}
