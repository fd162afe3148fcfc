//! The crate's error type.

/// Everything that can go wrong when a node drives its container engine.
///
/// `#[non_exhaustive]`: match with a wildcard arm. Each variant's `Display` text is meant
/// to be shown to an operator as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine is not reachable: the socket file does not exist, the connection was
    /// refused or reset, the engine stopped answering (bollard's 120 s request timeout), or
    /// the version handshake in [`DockerRuntime::connect`](crate::DockerRuntime::connect)
    /// failed. `endpoint` is the address that was tried (e.g.
    /// `unix:///var/run/docker.sock`); `reason` is the underlying error chain as text.
    #[error(
        "Docker engine not reachable at {endpoint}: {reason} (is dockerd running? set --docker-host)"
    )]
    Unavailable {
        /// The endpoint that was tried, as given to or chosen by `connect`.
        endpoint: String,
        /// The low-level cause, with its source chain joined by `": "`.
        reason: String,
    },

    /// The image reference does not follow Docker's reference grammar; see
    /// [`validate_image_reference`](crate::validate_image_reference). Nothing was sent to
    /// the engine.
    #[error("invalid image reference {image:?}: {reason}")]
    InvalidImage {
        /// The reference exactly as given.
        image: String,
        /// What is wrong and how to fix it, in words.
        reason: String,
    },

    /// The image is not in the engine's local store and pulling it failed (no registry is
    /// reachable, the repository does not exist, or access was denied). `reason` is the
    /// engine's own message. Load the image on this node (`docker load` / `docker import`)
    /// or make a registry reachable.
    #[error("image {image} is not present on this node and could not be pulled: {reason}")]
    ImageUnavailable {
        /// The reference exactly as given in the task spec.
        image: String,
        /// The engine's explanation of the failed pull.
        reason: String,
    },

    /// A Docker network of the overlay network's name exists but does not match: another
    /// IPv6 subnet (the node's WireGuard key changed, or a stranger's network took the
    /// name), IPv6 off, or another driver. Warren never reuses it silently: remove it
    /// (`docker network rm NAME`, after its containers) or free the name.
    #[error("Docker network {name} exists with {have}, not the overlay subnet {want}; remove it (docker network rm {name}) to let Warren create its own")]
    NetworkConflict {
        /// The network's name.
        name: String,
        /// The subnet Warren wants, e.g. `fd12:3456:789a:1:2:3:8000:0/97`.
        want: String,
        /// What the existing network has instead.
        have: String,
    },

    /// The engine answered but refused or failed the request `op` (the bollard method
    /// name, e.g. `"create_container"`). For HTTP-level refusals the source is
    /// `bollard::errors::Error::DockerResponseServerError { status_code, message }`.
    #[error("Docker {op} failed: {source}")]
    Engine {
        /// The bollard operation that failed, e.g. `"start_container"`.
        op: &'static str,
        /// The error bollard returned.
        #[source]
        source: bollard::errors::Error,
    },
}

impl RuntimeError {
    /// The HTTP status code the engine answered with, when this is an
    /// [`Engine`](RuntimeError::Engine) error carrying one (e.g. `Some(404)` for "no such
    /// container", `Some(409)` for a conflict); `None` otherwise.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            RuntimeError::Engine { source, .. } => status_code(source),
            _ => None,
        }
    }
}

/// The HTTP status of an engine refusal, if `e` is one.
pub(crate) fn status_code(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether `e` means "could not talk to the engine at all" rather than "the engine said no".
pub(crate) fn is_connection_error(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::HyperLegacyError { .. }
            | E::HyperResponseError { .. }
            | E::IOError { .. }
            | E::SocketNotFoundError(_)
            | E::RequestTimeoutError
            | E::UnsupportedURISchemeError { .. }
            | E::InvalidURIError { .. }
            | E::InvalidURIPartsError { .. }
    )
}

/// `e` and its sources as one line, `"outer: inner: innermost"` (hyper's outer messages
/// alone, such as "client error (Connect)", say little).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}
