//! TLS for the remote API: the certificate and key (given, or generated once into the data
//! dir), and a listener that hands axum only connections whose TLS handshake completed.
//!
//! Handshakes run in their own tasks with a deadline, so a client that opens a connection and
//! says nothing holds no other client up; concurrent handshakes and open connections are
//! bounded.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

/// File names of the generated certificate and key in the data dir.
const CERT_FILE: &str = "api-cert.pem";
const KEY_FILE: &str = "api-key.pem";
/// The remote listener's bounds. The HTTP server behind it sets none of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a client has to finish its TLS handshake (default 10 s).
    pub(crate) handshake_timeout: Duration,
    /// Handshakes in progress at once (default 64); further connections wait in the
    /// kernel's backlog.
    pub(crate) max_handshakes: usize,
    /// Open TLS connections at once (default 256).
    pub(crate) max_connections: usize,
    /// A connection on which nothing was read or written for this long is closed (default
    /// 60 s), so idle clients cannot keep every slot.
    pub(crate) idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 64,
            max_connections: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Where the remote API's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// PEM certificate chain (`--tls-cert`); with `key`, or neither.
    pub cert: Option<PathBuf>,
    /// PEM private key (`--tls-key`).
    pub key: Option<PathBuf>,
    /// Extra names or IP addresses for a generated certificate (`--tls-san`).
    pub extra_names: Vec<String>,
}

/// A server configuration ready to accept, and what the operator needs to know of it.
pub(crate) struct TlsSetup {
    pub(crate) config: Arc<ServerConfig>,
    /// The certificate file the clients should trust (`warren-cli --tls-ca`).
    pub(crate) cert_path: PathBuf,
    /// SHA-256 of the leaf certificate's DER, as colon-separated uppercase hex.
    pub(crate) fingerprint: String,
    /// Whether this start generated the certificate.
    pub(crate) generated: bool,
}

/// Loads the certificate and key named in `files`, or `<data_dir>/api-cert.pem` and
/// `api-key.pem`, generating a self-signed pair for `names` (plus `files.extra_names`) there
/// if neither exists. The generated key file has mode 0600; a key file group or others may
/// read is refused.
///
/// Errors: a reason to show the operator (a file missing, unreadable, not PEM, a key that does
/// not match, one of the generated pair without the other).
pub(crate) fn load_or_generate(
    data_dir: &Path,
    files: &TlsFiles,
    names: &[String],
) -> Result<TlsSetup, String> {
    let (cert_path, key_path, generated) = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), false),
        (None, None) => {
            let cert = data_dir.join(CERT_FILE);
            let key = data_dir.join(KEY_FILE);
            let generated = match (cert.exists(), key.exists()) {
                (true, true) => false,
                (false, false) => {
                    let mut all: Vec<String> = names.to_vec();
                    all.extend(files.extra_names.iter().cloned());
                    generate(&cert, &key, &all)?;
                    true
                }
                _ => {
                    return Err(format!(
                        "{} and {} must both exist or both be absent (remove the other to \
                         generate a new pair)",
                        cert.display(),
                        key.display()
                    ))
                }
            };
            (cert, key, generated)
        }
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", cert_path.display()))?;
    let leaf = certs
        .first()
        .ok_or_else(|| format!("certificate {}: no certificate in it", cert_path.display()))?;
    let fingerprint = fingerprint(leaf);
    let mode = std::fs::metadata(&key_path)
        .map_err(|e| format!("key {}: {e}", key_path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "key {}: mode {:o} lets other users read it; run chmod 600",
            key_path.display(),
            mode & 0o777
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("key {}: {e}", key_path.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "certificate {} and key {}: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        config: Arc::new(config),
        cert_path,
        fingerprint,
        generated,
    })
}

/// SHA-256 of `cert`'s DER as `AB:CD:...` (what `openssl x509 -fingerprint -sha256` prints).
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `name` can go into a certificate as a DNS name or an IP address.
fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b))
}

/// Writes a fresh self-signed certificate for `names` to `cert` and its key to `key` (0600).
fn generate(cert: &Path, key: &Path, names: &[String]) -> Result<(), String> {
    let mut sans: Vec<String> = Vec::new();
    for name in names {
        if usable_name(name) && !sans.contains(name) {
            sans.push(name.clone());
        }
    }
    let mut params = rcgen::CertificateParams::new(sans).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "warren-node API");
    let key_pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let certificate = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    let key_pem = zeroize::Zeroizing::new(key_pair.serialize_pem());
    let write = |path: &Path, mode: u32, bytes: &[u8]| -> Result<(), String> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    // The key first: a certificate without its key would only block the next start.
    write(key, 0o600, key_pem.as_bytes())?;
    write(cert, 0o644, certificate.pem().as_bytes())
}

/// A TLS connection that holds one of the listener's connection slots while it is open, and
/// fails with `TimedOut` once it has been idle for [`Limits::idle_timeout`].
pub(crate) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl TlsConnection {
    fn new(stream: TlsStream<TcpStream>, slot: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self {
            stream,
            _slot: slot,
            idle_timeout: idle,
            idle: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.touch();
                Poll::Ready(result)
            }
            // The server always waits to read the next request: the timer runs while it does.
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle connection closed",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The address of the client at the other end of a remote API connection, for the logs
/// (`ConnectInfo<ClientAddr>` in handlers and middleware).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// An [`axum::serve::Listener`] that yields only connections whose TLS handshake completed.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsConnection, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and runs handshakes with `config`, within `limits`, until `cancel`
    /// fires.
    pub(crate) fn spawn(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        limits: Limits,
        cancel: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(limits.max_handshakes.max(1));
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
        let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        tokio::spawn(
            async move {
                loop {
                    // A slot for the connection first: at the limit, stop accepting and let
                    // the kernel's backlog hold the rest.
                    let slot = tokio::select! {
                        biased;
                        () = cancel.cancelled() => return,
                        slot = connections.clone().acquire_owned() => slot,
                    };
                    let Ok(slot) = slot else { return };
                    let Ok(handshake) = handshakes.clone().acquire_owned().await else {
                        return;
                    };
                    let (tcp_stream, addr) = tokio::select! {
                        biased;
                        () = cancel.cancelled() => return,
                        accepted = tcp.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(e) => {
                                // Out of file descriptors and the like: back off a little.
                                warn!(error = %e, "remote API accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(
                        async move {
                            let result = tokio::time::timeout(
                                limits.handshake_timeout,
                                acceptor.accept(tcp_stream),
                            )
                            .await;
                            drop(handshake);
                            match result {
                                Ok(Ok(stream)) => {
                                    let connection =
                                        TlsConnection::new(stream, slot, limits.idle_timeout);
                                    let _ = tx.send((connection, addr)).await;
                                }
                                Ok(Err(e)) => {
                                    debug!(client = %addr, error = %e, "TLS handshake failed")
                                }
                                Err(_) => debug!(client = %addr, "TLS handshake timed out"),
                            }
                        }
                        .in_current_span(),
                    );
                }
            }
            .in_current_span(),
        );
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor stopped (shutdown): wait for the server's graceful shutdown to
            // stop calling us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_kept_and_its_key_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = load_or_generate(dir.path(), &TlsFiles::default(), &names).expect("generate");
        assert!(first.generated);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_generate(dir.path(), &TlsFiles::default(), &names).expect("load");
        assert!(!again.generated);
        assert_eq!(first.fingerprint, again.fingerprint, "generated once");
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);

        std::fs::set_permissions(
            dir.path().join(KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(load_or_generate(dir.path(), &TlsFiles::default(), &names).is_err());
        std::fs::remove_file(dir.path().join(KEY_FILE)).expect("rm");
        let half = load_or_generate(dir.path(), &TlsFiles::default(), &names);
        assert!(half.is_err(), "a certificate without its key is refused");
    }

    /// A listener on 127.0.0.1 with `limits`, and a client configuration that trusts it.
    async fn listener(
        dir: &Path,
        limits: Limits,
    ) -> (TlsListener, Arc<tokio_rustls::rustls::ClientConfig>) {
        let setup = load_or_generate(dir, &TlsFiles::default(), &["127.0.0.1".into()])
            .expect("certificate");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listener =
            TlsListener::spawn(tcp, setup.config, limits, CancellationToken::new()).expect("tls");
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&setup.cert_path).expect("pem") {
            roots.add(cert.expect("cert")).expect("root");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (listener, Arc::new(client))
    }

    #[tokio::test]
    async fn silent_and_idle_clients_lose_their_connection() {
        use axum::serve::Listener;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (mut listener, client) = listener(dir.path(), limits).await;
        let addr = listener.local_addr().expect("addr");

        // A client that never starts its handshake is dropped after the handshake timeout.
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed by the server: {read:?}"
        );

        // A client that completes its handshake and then says nothing is closed when idle.
        let connector = tokio_rustls::TlsConnector::from(client);
        let name =
            tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(b"x").await.expect("write");
        tls.flush().await.expect("flush");
        let (mut server, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("a connection");
        let mut buf = [0u8; 8];
        let n = server.read(&mut buf).await.expect("first byte");
        assert_eq!(&buf[..n], b"x");
        let started = std::time::Instant::now();
        let idle = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await;
        let err = idle.expect("not stuck").expect_err("idle connection fails");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn given_files_are_used_and_must_come_in_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = dir.path().join("made");
        std::fs::create_dir(&made).expect("mkdir");
        let generated =
            load_or_generate(&made, &TlsFiles::default(), &["localhost".into()]).expect("gen");
        let files = TlsFiles {
            cert: Some(made.join(CERT_FILE)),
            key: Some(made.join(KEY_FILE)),
            extra_names: vec![],
        };
        let other = dir.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        let given = load_or_generate(&other, &files, &[]).expect("given files");
        assert!(!given.generated);
        assert_eq!(given.fingerprint, generated.fingerprint);
        assert!(!other.join(CERT_FILE).exists(), "nothing generated");
        let only_cert = TlsFiles { key: None, ..files };
        assert!(load_or_generate(&other, &only_cert, &[]).is_err());
    }
}
