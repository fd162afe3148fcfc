//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong bringing up, configuring, reading or taking down an interface.
///
/// [`Unavailable`](Self::Unavailable) is the one a daemon acts on by carrying on without the
/// overlay; every other variant is a fault to report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// No TUN device can be made in this process: `/dev/net/tun` is missing, cannot be
    /// opened, or creating a device is not permitted (no `CAP_NET_ADMIN`). Nothing was
    /// created.
    #[error("the overlay is unavailable here: {reason}")]
    Unavailable {
        /// What failed, e.g. `/dev/net/tun does not exist`.
        reason: String,
    },
    /// A configuration refused before anything is changed: an interface name the kernel or
    /// boringtun would not take, a private key that is not 64 hex digits, two peers with one
    /// public key, a prefix longer than 128 bits, or a device of that name already running.
    #[error("invalid overlay configuration: {0}")]
    Config(String),
    /// boringtun could not create the device for a reason other than those of
    /// [`Unavailable`](Self::Unavailable) (a link of that name that is not a free TUN
    /// device, a UAPI socket that cannot be bound, ...).
    #[error("cannot create WireGuard device {name}: {reason}")]
    Device {
        /// The interface name.
        name: String,
        /// boringtun's error.
        reason: String,
    },
    /// An exchange on the device's UAPI socket failed: the socket is missing or refuses
    /// connections (no device of that name runs), a read or write timed out, the reply was
    /// longer than the bound or malformed, or the device answered with a non-zero errno.
    #[error("UAPI {}: {reason}", socket.display())]
    Uapi {
        /// The socket, `/var/run/wireguard/<name>.sock`.
        socket: PathBuf,
        /// The errno the device answered with (`22` EINVAL: a value it did not take, `98`
        /// EADDRINUSE: the listen port is taken, `71` EPROTO: a malformed line); `None` when
        /// the exchange itself failed.
        errno: Option<i32>,
        /// What went wrong. Never holds a key.
        reason: String,
    },
    /// An `ip` command failed, timed out or could not be started.
    #[error("`{command}` failed ({}): {stderr}", status.map_or_else(|| "did not exit".to_string(), |s| format!("exit status {s}")))]
    Command {
        /// The command line.
        command: String,
        /// Its exit code; `None` when it could not start, was killed by a signal or timed
        /// out.
        status: Option<i32>,
        /// What it wrote on stderr (trimmed, at most 4 KiB), or why it did not run.
        stderr: String,
    },
}
