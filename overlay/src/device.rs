//! The boringtun device, the channel that configures it, and the UAPI socket this crate
//! serves for it.
//!
//! boringtun 0.7 is configured either through a socket of its own at
//! `/var/run/wireguard/<name>.sock` or through a file descriptor given as
//! `DeviceConfig::uapi_fd`. Its own socket comes with SIGINT and SIGTERM handling: it blocks
//! both in the thread that creates the device and reads them from a signalfd in its worker
//! threads, and a signalfd takes a signal pending for the *process*, whichever thread it was
//! meant for. A SIGTERM for the daemon then stops the device instead of the daemon: 18 of 20
//! SIGTERMs sent to the probe with boringtun's socket were taken that way (the probe went on
//! running with a dead device). So the device gets one end of a socket pair (no signal
//! handling comes with that), [`DeviceChannel`] holds the other, and [`Server`] serves the
//! usual socket path so that `wg show` and other processes still find the interface.
//!
//! The server forwards `get` as it is. A `set` is read as the protocol describes it
//! ([`interpret_set`]) into the peer set it asks for, and the device is brought there with
//! the request [`peers_request`] writes: boringtun only ever reads requests this crate wrote.
//! That matters: its reader carries fields over from one peer section to the next, panics on
//! a section for a peer that exists already, and stops reading a request at the first value
//! it refuses (the rest of the request would then be read as further requests).

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::peer::Peer;
use crate::protocol::{
    check_set, errno, interpret_set, parse_state, peers_request, DeviceState, ReplyError,
};
use crate::uapi::{exchange, read_until, ReadCut, IO_TIMEOUT, SOCKET_DIR};
use crate::OverlayError;

/// The longest request the server reads from a client, in bytes (a peer section takes
/// about 250).
const MAX_REQUEST: usize = 1 << 20;

/// How often the server's accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// This crate's end of the device's configuration channel.
///
/// One request at a time, each bounded like every UAPI exchange ([`exchange`]). After a
/// failed exchange or a refused `set`, the two ends may be out of step (boringtun answers
/// the unread rest of a refused request line by line), so the channel refuses every later
/// request: the interface must be taken down and brought up again.
#[derive(Debug)]
pub(crate) struct DeviceChannel {
    stream: UnixStream,
    /// The interface's socket path, for errors.
    socket: PathBuf,
    broken: bool,
}

/// A channel shared by the interface and its server.
pub(crate) type SharedChannel = Arc<Mutex<DeviceChannel>>;

/// Locks `channel`; a holder's panic left nothing half-done that matters (the broken flag
/// is set before anything else can go wrong).
pub(crate) fn lock(channel: &SharedChannel) -> MutexGuard<'_, DeviceChannel> {
    channel
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeviceChannel {
    pub(crate) fn new(stream: UnixStream, socket: PathBuf) -> Self {
        DeviceChannel {
            stream,
            socket,
            broken: false,
        }
    }

    fn error(&self, e: ReplyError) -> OverlayError {
        OverlayError::Uapi {
            socket: self.socket.clone(),
            errno: e.errno,
            reason: format!("device channel: {}", e.reason),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> Result<Zeroizing<String>, ReplyError> {
        if self.broken {
            return Err(ReplyError::new(
                "out of step after an earlier failure; take the interface down and up again",
            ));
        }
        exchange(&mut self.stream, request).inspect_err(|_| self.broken = true)
    }

    /// The device's `get=1` reply, as boringtun wrote it (`errno=0` checked).
    pub(crate) fn get_raw(&mut self) -> Result<Zeroizing<String>, OverlayError> {
        // No blank line after get=1: boringtun reads one line, and a second one, read on its
        // own, would be answered as a request of its own.
        let reply = self.exchange(b"get=1\n").map_err(|e| self.error(e))?;
        parse_state(&reply).map_err(|e| self.error(e))?;
        Ok(reply)
    }

    /// The device's state.
    pub(crate) fn state(&mut self) -> Result<DeviceState, OverlayError> {
        let reply = self.get_raw()?;
        parse_state(&reply).map_err(|e| self.error(e))
    }

    /// Sends a `set` request this crate wrote.
    fn set(&mut self, request: &str) -> Result<(), OverlayError> {
        let reply = self
            .exchange(request.as_bytes())
            .map_err(|e| self.error(e))?;
        check_set(&reply).map_err(|e| {
            self.broken = true;
            self.error(e)
        })
    }

    /// Sets the private key (64 hex digits, checked by the caller) and the listen port.
    pub(crate) fn set_device(
        &mut self,
        private_key_hex: &str,
        listen_port: u16,
    ) -> Result<(), OverlayError> {
        // Port 0: keep the free port boringtun bound at creation. Setting one re-opens its
        // sockets, which in boringtun 0.7.1 can panic its event loop (see interface.rs).
        let port_line = if listen_port == 0 {
            String::new()
        } else {
            format!("listen_port={listen_port}\n")
        };
        let request = Zeroizing::new(format!(
            "set=1\nprivate_key={private_key_hex}\n{port_line}\n"
        ));
        self.set(&request)
    }

    /// Makes the device's peers exactly `peers` (see [`crate::Uapi::set_peers`]).
    pub(crate) fn set_peers(&mut self, peers: &[Peer]) -> Result<(), OverlayError> {
        let current = self.state()?;
        match peers_request(&current, peers)? {
            Some(request) => self.set(&request),
            None => Ok(()),
        }
    }
}

/// The UAPI socket of one interface, served by a thread of its own, one client at a time.
#[derive(Debug)]
pub(crate) struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` (replacing a file there: the caller checked that nothing answers on it)
    /// and serves it.
    pub(crate) fn start(path: &Path, channel: SharedChannel) -> std::io::Result<Server> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(SOCKET_DIR)?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("overlay-uapi".into())
                .spawn(move || serve(&listener, &channel, &stop))?
        };
        Ok(Server {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// Stops serving (within [`ACCEPT_POLL`], or [`IO_TIMEOUT`] if a client is being served)
    /// and removes the socket.
    pub(crate) fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: &UnixListener, channel: &SharedChannel, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve_client(stream, channel) {
                    tracing::debug!(error = %e, "UAPI client");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the UAPI socket");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// Reads one request, answers it, closes.
fn serve_client(mut stream: UnixStream, channel: &SharedChannel) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(request) = read_request(&mut stream)? else {
        return stream.write_all(format!("errno={}\n\n", errno::EPROTO).as_bytes());
    };
    let mut lines = request.split('\n');
    let reply: Zeroizing<String> = match lines.next() {
        Some("get=1") => match lock(channel).get_raw() {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "UAPI get");
                Zeroizing::new(format!("errno={}\n\n", errno::EIO))
            }
        },
        Some("set=1") => {
            let body: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
            Zeroizing::new(format!("errno={}\n\n", apply_set(channel, &body)))
        }
        _ => Zeroizing::new(format!("errno={}\n\n", errno::EINVAL)),
    };
    stream.write_all(reply.as_bytes())
}

/// A client's `set`, applied; the errno to answer.
fn apply_set(channel: &SharedChannel, lines: &[&str]) -> i32 {
    let mut channel = lock(channel);
    let result = channel.state().and_then(|current| {
        let peers = interpret_set(&current, lines).map_err(|errno| OverlayError::Uapi {
            socket: PathBuf::new(),
            errno: Some(errno),
            reason: String::new(),
        })?;
        channel.set_peers(&peers)
    });
    match result {
        Ok(()) => 0,
        Err(OverlayError::Uapi {
            errno: Some(errno), ..
        }) => errno,
        Err(OverlayError::Config(_)) => errno::EINVAL,
        Err(e) => {
            tracing::warn!(error = %e, "UAPI set");
            errno::EIO
        }
    }
}

/// Reads a request up to its end (`get=1` and its newline; for anything else, a blank line
/// or the end of the stream) within [`IO_TIMEOUT`] and [`MAX_REQUEST`] bytes; `None` when it
/// is cut short by the deadline or the bound, or is not UTF-8.
fn read_request(stream: &mut UnixStream) -> std::io::Result<Option<Zeroizing<String>>> {
    let complete = |request: &[u8]| {
        request.starts_with(b"get=1\n")
            || request.starts_with(b"\n")
            || request.windows(2).any(|w| w == b"\n\n")
    };
    let request = match read_until(stream, Instant::now() + IO_TIMEOUT, MAX_REQUEST, complete) {
        Ok(request) => request,
        Err(ReadCut::Deadline | ReadCut::TooLong) => return Ok(None),
        Err(ReadCut::Io(e)) => return Err(e),
    };
    Ok(std::str::from_utf8(&request)
        .ok()
        .map(|text| Zeroizing::new(text.to_string())))
}
