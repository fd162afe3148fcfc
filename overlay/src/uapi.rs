//! A client of an interface's configuration socket, `/var/run/wireguard/<name>.sock` (the
//! socket `wg show` and `wg set` use; WireGuard's cross-platform UAPI, see `protocol.rs`).
//!
//! Every exchange is bounded: a [`IO_TIMEOUT`] deadline on the whole exchange and a
//! [`MAX_REPLY`] cap on the reply. Reply text may hold keys (the kernel's and wireguard-go's
//! `get` include `private_key=`), so it is kept in zeroized memory and never put in an error.
//!
//! The socket's path depends on the interface name only, not on the network namespace: two
//! devices of the same name in two namespaces of one machine would share (and fight over)
//! one socket. [`Interface::up`](crate::Interface::up) refuses a name whose socket answers.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::peer::{Peer, PeerState};
use crate::protocol::{check_set, parse_state, peers_request, reply_complete, ReplyError};
use crate::{DeviceState, OverlayError};

/// Where userspace WireGuard devices put their UAPI sockets (`<name>.sock`).
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Deadline of one whole exchange (connect, request, reply).
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest reply read, in bytes: a peer takes about 330 bytes of a `get` reply, so this
/// holds about 12,000 peers.
pub const MAX_REPLY: usize = 4 << 20;

/// A client of one device's UAPI socket. Holds only the path: each call is one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uapi {
    socket: PathBuf,
}

impl Uapi {
    /// The socket of interface `name`: `/var/run/wireguard/<name>.sock`.
    ///
    /// Errors: [`OverlayError::Config`] when `name` is not a valid interface name (see
    /// [`validate_name`]).
    pub fn for_interface(name: &str) -> Result<Self, OverlayError> {
        validate_name(name)?;
        Ok(Self::at(Path::new(SOCKET_DIR).join(format!("{name}.sock"))))
    }

    /// The socket at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Uapi {
            socket: path.into(),
        }
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether something accepts connections on the socket (a device of that name runs).
    pub fn answers(&self) -> bool {
        UnixStream::connect(&self.socket).is_ok()
    }

    /// The device's state: `get=1`, parsed.
    ///
    /// Errors: [`OverlayError::Uapi`] when the exchange fails, the reply is over
    /// [`MAX_REPLY`] or malformed, or the device answers a non-zero errno.
    pub fn state(&self) -> Result<DeviceState, OverlayError> {
        let reply = self.exchange(b"get=1\n\n")?;
        parse_state(&reply).map_err(|e| self.error(e))
    }

    /// The device's peers (what `wg show` lists): [`state`](Self::state)`.peers`.
    ///
    /// Errors: as [`state`](Self::state).
    pub fn peers(&self) -> Result<Vec<PeerState>, OverlayError> {
        Ok(self.state()?.peers)
    }

    /// Makes the device's peers exactly `peers`: peers not in the list are removed (their
    /// sessions and connected sockets closed), new ones added, changed ones removed and added
    /// again (a new handshake), unchanged ones left alone (their sessions go on). A peer is
    /// unchanged when its allowed IPs and keepalive are the same and its endpoint is the one
    /// given (or none is given: the device keeps the one it learned).
    ///
    /// It reads the device's peers (`get=1`), then sends one `set=1` with the changes
    /// (nothing when there are none): `remove=true` sections, then the added peers.
    ///
    /// Why not `replace_peers=true` and every peer: boringtun 0.7 then drops its peer table
    /// but neither closes a removed peer's connected UDP socket nor stops reading it, so a
    /// removed member could still handshake and send into the interface; and every peer
    /// would lose its session on every call.
    ///
    /// Errors: [`OverlayError::Config`] when two peers share a public key, a prefix is longer
    /// than 128 bits, or the device has no private key yet (nothing is sent);
    /// [`OverlayError::Uapi`] as [`state`](Self::state).
    pub fn set_peers(&self, peers: &[Peer]) -> Result<(), OverlayError> {
        let current = self.state()?;
        if let Some(request) = peers_request(&current, peers)? {
            let reply = self.exchange(request.as_bytes())?;
            check_set(&reply).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn error(&self, e: ReplyError) -> OverlayError {
        OverlayError::Uapi {
            socket: self.socket.clone(),
            errno: e.errno,
            reason: e.reason,
        }
    }

    /// One connection, one request, one reply.
    fn exchange(&self, request: &[u8]) -> Result<Zeroizing<String>, OverlayError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            self.error(ReplyError::new(match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    format!("no device answers ({e})")
                }
                _ => format!("cannot connect: {e}"),
            }))
        })?;
        exchange(&mut stream, request).map_err(|e| self.error(e))
    }
}

/// Sends `request` on `stream` and reads the reply up to its `errno=N` line and blank line
/// (or the end of the stream), within [`IO_TIMEOUT`] for the whole exchange and [`MAX_REPLY`]
/// bytes. Returns the reply in memory that is zeroed when dropped.
///
/// Errors: a [`ReplyError`] without errno when writing or reading fails, the deadline or the
/// size bound is passed, bytes follow the reply, or the reply is not UTF-8.
pub(crate) fn exchange(
    stream: &mut UnixStream,
    request: &[u8],
) -> Result<Zeroizing<String>, ReplyError> {
    let failed = |reason: String| ReplyError::new(reason);
    let deadline = Instant::now() + IO_TIMEOUT;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| failed(format!("cannot set a timeout: {e}")))?;
    stream
        .write_all(request)
        .map_err(|e| failed(format!("cannot send the request: {e}")))?;
    let reply = read_until(stream, deadline, MAX_REPLY, reply_complete).map_err(|cut| {
        failed(match cut {
            ReadCut::Deadline => format!("no complete reply within {IO_TIMEOUT:?}"),
            ReadCut::TooLong => format!("reply longer than {MAX_REPLY} bytes"),
            ReadCut::Io(e) => format!("cannot read the reply: {e}"),
        })
    })?;
    let text = std::str::from_utf8(&reply).map_err(|_| failed("reply is not UTF-8".to_string()))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// Why [`read_until`] stopped short.
#[derive(Debug)]
pub(crate) enum ReadCut {
    /// The deadline passed first.
    Deadline,
    /// More than the bound came first.
    TooLong,
    /// The stream failed.
    Io(std::io::Error),
}

/// Reads from `stream` until `complete` holds for the bytes so far or the stream ends, by
/// `deadline` and within `max` bytes. Both ends of the UAPI socket read this way: the client
/// a reply, the socket this crate serves a request. The bytes are zeroed when dropped (a
/// request may carry a key).
///
/// Errors: [`ReadCut`].
pub(crate) fn read_until(
    stream: &mut UnixStream,
    deadline: Instant,
    max: usize,
    complete: impl Fn(&[u8]) -> bool,
) -> Result<Zeroizing<Vec<u8>>, ReadCut> {
    let mut bytes = Zeroizing::new(Vec::new());
    let mut chunk = Zeroizing::new([0u8; 8192]);
    while !complete(&bytes) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadCut::Deadline);
        }
        stream.set_read_timeout(Some(left)).map_err(ReadCut::Io)?;
        let n = match stream.read(&mut chunk[..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadCut::Deadline)
            }
            Err(e) => return Err(ReadCut::Io(e)),
        };
        if n == 0 {
            break;
        }
        if bytes.len() + n > max {
            return Err(ReadCut::TooLong);
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok(bytes)
}

/// Checks an interface name: 1 to 15 bytes (the kernel's `IFNAMSIZ` less the NUL), an ASCII
/// letter first, then ASCII letters, digits, `-`, `_` or `.`. (boringtun would take an
/// all-digit name for a file descriptor number; a `/` would escape the socket directory.)
///
/// Errors: [`OverlayError::Config`] naming the rule broken.
pub fn validate_name(name: &str) -> Result<(), OverlayError> {
    let bad = |why: &str| OverlayError::Config(format!("interface name {name:?}: {why}"));
    if name.is_empty() || name.len() > 15 {
        return Err(bad("must be 1 to 15 bytes long"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad("must start with an ASCII letter"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad("may hold only ASCII letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["warren0", "wo123a", "a", "w.x-y_z", "abcdefghijklmno"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "0",
            "12",
            "abcdefghijklmnop",
            "a/b",
            "../x",
            "a b",
            "wärren",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Uapi::for_interface("warren0").expect("uapi").socket(),
            Path::new("/var/run/wireguard/warren0.sock")
        );
    }

    #[test]
    fn an_exchange_reads_up_to_the_errno_line_and_no_further() {
        let (mut ours, mut theirs) = UnixStream::pair().expect("pair");
        let device = std::thread::spawn(move || {
            let mut request = [0u8; 6];
            theirs.read_exact(&mut request).expect("request");
            assert_eq!(&request, b"get=1\n");
            // The reply in two writes; the stream stays open, as boringtun's channel does.
            theirs.write_all(b"listen_port=7\n").expect("write");
            theirs.write_all(b"errno=0\n\n").expect("write");
            theirs
        });
        let reply = exchange(&mut ours, b"get=1\n").expect("reply");
        assert_eq!(reply.as_str(), "listen_port=7\nerrno=0\n\n");
        let _theirs = device.join().expect("device");
    }

    #[test]
    fn an_exchange_gives_up_on_a_silent_or_endless_device() {
        // Silent: the deadline (IO_TIMEOUT is 5 s; this waits for it once).
        let (mut ours, _theirs) = UnixStream::pair().expect("pair");
        let started = Instant::now();
        let e = exchange(&mut ours, b"get=1\n").expect_err("silent");
        assert!(e.reason.contains("no complete reply"), "{e:?}");
        assert!(started.elapsed() >= IO_TIMEOUT);
        // Endless: the size bound.
        let (mut ours, mut theirs) = UnixStream::pair().expect("pair");
        let flood = std::thread::spawn(move || {
            let line = [b'x'; 8192];
            while theirs.write_all(&line).is_ok() {}
        });
        let e = exchange(&mut ours, b"get=1\n").expect_err("endless");
        assert!(e.reason.contains("longer than"), "{e:?}");
        drop(ours);
        flood.join().expect("flood");
    }
}
