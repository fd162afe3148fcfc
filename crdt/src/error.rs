use crate::model::{NodeId, ServiceName};

/// Errors of the desired-state document and its store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdtError {
    /// A name that breaks the naming rule; `reason` says which part.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A service spec field outside its limits; `field` is its path, e.g. `health.retries`.
    #[error("invalid {field}: {reason}")]
    InvalidSpec {
        /// The field, as the API names it.
        field: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// No live service has that name.
    #[error("no service named {0}")]
    UnknownService(ServiceName),
    /// A live service already has that name.
    #[error("service {0} already exists")]
    ServiceExists(ServiceName),
    /// No member has that id.
    #[error("no member {0}")]
    UnknownMember(NodeId),
    /// No job has that id.
    #[error("no job {0}")]
    UnknownJob(String),
    /// A job with that id exists.
    #[error("job {0} already exists")]
    JobExists(String),
    /// No secret has that name.
    #[error("no secret named {0}")]
    UnknownSecret(String),
    /// No volume has that name.
    #[error("no volume named {0}")]
    UnknownVolume(String),
    /// No join token has that id.
    #[error("no join token {0}")]
    UnknownToken(String),
    /// The document holds no cluster record yet (a joining node before it received the
    /// cluster's document), so there is nothing to change the settings of.
    #[error("this replica holds no cluster yet")]
    NoCluster,
    /// Bytes from a peer or from disk that do not decode.
    #[error("malformed document data: {0}")]
    Decode(String),
    /// Automerge refused an operation or a change.
    #[error("document error: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A value that does not serialize (never expected for our own types).
    #[error("encoding error: {0}")]
    Json(#[from] serde_json::Error),
    /// The on-disk store failed; `path` is the data dir.
    #[error("store at {path}: {source}")]
    Store {
        /// The store's directory.
        path: std::path::PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
}
