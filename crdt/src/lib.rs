//! # warren-crdt: the cluster's desired state
//!
//! Every Warren peer holds a replica of one Automerge document that says what the operators
//! asked for (DESIGN §3): the cluster record, members, services, the scheduling lease,
//! assignments of slots to nodes, and tokens (join tokens and operators' API tokens, as
//! digests). Any peer may write; replicas exchange changes (gossip of change bytes, the
//! Automerge sync protocol for repair) and always merge.
//!
//! Callers never touch Automerge paths: [`DesiredState`] reads typed values and writes through
//! operations named for what they do, each one Automerge change with a message and a time, so
//! the document's history is the cluster's audit trail ([`DesiredState::history`]).
//!
//! ## Merge rules
//!
//! - Concurrent edits of *different* fields of one spec both survive (each field is its own key).
//! - Concurrent edits of the *same* field resolve identically on every replica (Automerge's
//!   deterministic choice among conflicting values).
//! - Delete vs concurrent update: delete sets a tombstone on every creation of the name it
//!   sees, which an update of the spec does not clear, so delete wins. A creation the delete
//!   had not seen (concurrent, on another replica) survives it: a live object ranks above a
//!   tombstone, then the higher generation (re-creating a service raises its generation).
//! - Lease: concurrent claims are kept as conflicting values and [`DesiredState::lease`] returns
//!   the greatest `(epoch, holder)`: the higher epoch wins, ties by peer id.
//! - Assignments of one slot: the one made under the greatest `(epoch, holder)` stands.
//! - Cluster settings ([`ClusterSettings`]): last writer wins per setting. Each setting is its
//!   own key of the `cluster` map; concurrent writes of one setting resolve to the same value
//!   on every replica, of different settings both survive. An absent or unreadable setting
//!   reads as its default.
//! - Volumes ([`Volume`]): concurrent creates of one name keep one whole record on every
//!   replica; a spec's mounts are one value (see the `volume` module's doc).
//!
//! ## Persistence
//!
//! [`Store`] keeps a sled database: a compacted snapshot and an append-only log of incremental
//! chunks. Local writes are flushed before they are acknowledged.
//!
//! ```
//! use warren_crdt::{ClusterInfo, DesiredState, Member, MemberState, NodeId, ServiceName, ServiceSpec, SyncState};
//!
//! let founder = Member {
//!     id: NodeId("12D3KooWfounder".into()), name: "a".into(), addrs: vec![],
//!     labels: Default::default(), capabilities: Default::default(),
//!     platform: Default::default(), admitted_by: NodeId("12D3KooWfounder".into()),
//!     admitted_at: 0, state: MemberState::Active,
//!     availability: Default::default(),
//! };
//! let info = ClusterInfo { id: "c1".into(), name: "lab".into(), created_at: 0 };
//! let mut a = DesiredState::new_cluster(&info, &founder)?;
//! let mut b = DesiredState::empty(NodeId("12D3KooWother".into()));
//!
//! let web = ServiceName::new("web")?;
//! let spec = ServiceSpec { image: "warren/busybox:latest".into(), replicas: 3,
//!     command: vec![], env: Default::default(), ports: vec![], secrets: Vec::new(),
//!     ..Default::default() };
//! let change = a.create_service(&web, &spec)?;
//!
//! // Fast path: gossip the change bytes.
//! b.apply_change(&change)?;
//! // (b lacks the earlier cluster-init change, so Automerge holds the service change back;
//! // the sync protocol repairs that.)
//! let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
//! loop {
//!     let m1 = a.generate_sync_message(&mut sa);
//!     if let Some(m) = &m1 { b.receive_sync_message(&mut sb, m)?; }
//!     let m2 = b.generate_sync_message(&mut sb);
//!     if let Some(m) = &m2 { a.receive_sync_message(&mut sa, m)?; }
//!     if m1.is_none() && m2.is_none() { break; }
//! }
//! assert_eq!(b.service(&web).map(|s| s.spec.replicas), Some(3));
//! assert_eq!(a.heads(), b.heads());
//! # Ok::<(), warren_crdt::CrdtError>(())
//! ```

mod availability;
mod doc;
mod error;
mod image_ref;
mod model;
mod placement;
mod rollout;
mod rollout_rules;
mod store;
mod sync_memo;
mod volume;

pub use availability::Availability;
pub use doc::{
    ChangeBytes, DesiredState, Fencing, SyncState, Touched, DEFAULT_MAX_SYNC_MESSAGE,
    TOUCHED_MAX_OPS,
};
pub use error::CrdtError;
pub use image_ref::{parse_image_reference, ImageReference};
pub use model::{
    validate_secret_name, validate_secret_target, Assignment, ClusterInfo, ClusterSetting,
    ClusterSettings, Epoch, HealthCheck, HealthProbe, HistoryEntry, Job, JobAttempt, JobSpec,
    JobState, Lease, Member, MemberOverlay, MemberState, NodeId, OnPartition, PartitionPolicy,
    PortSpec, PublishMode, Resources, RestartCondition, RestartPolicy, SecretMount, SecretRecord,
    Service, ServiceMode, ServiceName, ServiceSpec, SlotId, TokenRecord, DEFAULT_WG_PORT, MAX_ARGS,
    MAX_ARG_BYTES, MAX_ENV, MAX_ENV_KEY_BYTES, MAX_GPU_ID_BYTES, MAX_PERIOD_MS, MAX_PORTS,
    MAX_REPLICAS, MAX_RESCHEDULE_AFTER_MS, MAX_SECRET_MOUNTS, MAX_SECRET_NAME_BYTES,
    MAX_SERVICE_GPUS, MAX_STOP_TIMEOUT_MS, MIN_MEMORY_BYTES, MIN_NANO_CPUS,
};
pub use placement::{
    valid_label_key, validate_label, Constraint, ConstraintKey, ConstraintOp, Placement, Platform,
    SpreadPreference, MAX_CONSTRAINTS, MAX_CONSTRAINT_BYTES, MAX_LABEL_KEY_BYTES,
    MAX_LABEL_VALUE_BYTES, MAX_NODE_LABELS, MAX_PREFERENCES, UNKNOWN_PLATFORM,
};
pub use rollout::{
    CanaryCount, Deploy, FailureAction, Rollout, RolloutKind, RolloutState, UpdateOrder,
    UpdatePolicy, KEPT_OLDER_SPECS,
};
pub use rollout_rules::MAX_FAILURE_RATIO_PERMILLE;
pub use store::{Loaded, Store, COMPACT_AFTER_CHUNKS};
pub use volume::{
    validate_mounts, validate_volume_name, Mount, MountKind, Volume, LOCAL_DRIVER, MAX_MOUNTS,
    MAX_MOUNT_PATH_BYTES, MAX_VOLUME_NAME_BYTES, MAX_VOLUME_OPTIONS,
};

#[doc(hidden)]
pub use store::fuzzing;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

#[cfg(test)]
mod tests;
