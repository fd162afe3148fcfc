//! Builders of desired-state values for tests (the `test-utils` feature): the members, specs
//! and documents that the tests of warren-core, warren-node and the simulator would otherwise
//! each spell out field by field. Each builder's result is fixed (no clock, no randomness), so
//! a test can rebuild the same value.
//!
//! ```
//! use warren_crdt::test_utils::{member, new_cluster, service_name, spec};
//!
//! let mut state = new_cluster("n00");
//! state.add_member(&member("n01")).expect("a member");
//! state
//!     .create_service(&service_name("web"), &spec("warren/busybox:latest", 3))
//!     .expect("a service");
//! assert_eq!(state.members().len(), 2);
//! assert_eq!(state.services()[&service_name("web")].spec.replicas, 3);
//! ```

use std::collections::BTreeMap;

use crate::{ClusterInfo, DesiredState, Member, MemberState, NodeId, ServiceName, ServiceSpec};

/// The node id `s`.
pub fn node_id(s: &str) -> NodeId {
    NodeId(s.into())
}

/// An active member `id`, named `id`, with no addresses or labels, admitted by itself at time
/// 0 (the founder's shape; see [`member_admitted_by`] for a joiner).
pub fn member(id: &str) -> Member {
    member_admitted_by(id, id)
}

/// An active member `id`, named `id`, with no addresses or labels, admitted by `by` at time 0.
pub fn member_admitted_by(id: &str, by: &str) -> Member {
    Member {
        id: node_id(id),
        name: id.into(),
        addrs: Vec::new(),
        labels: BTreeMap::new(),
        admitted_by: node_id(by),
        admitted_at: 0,
        state: MemberState::Active,
    }
}

/// The cluster every test document belongs to: id `c1`, name `lab`, created at time 0.
pub fn cluster_info() -> ClusterInfo {
    ClusterInfo {
        id: "c1".into(),
        name: "lab".into(),
        created_at: 0,
    }
}

/// A new document of [`cluster_info`] founded by [`member`]`(founder)`.
///
/// # Panics
///
/// If the document cannot be created, which a valid founder never causes: a test's setup.
pub fn new_cluster(founder: &str) -> DesiredState {
    DesiredState::new_cluster(&cluster_info(), &member(founder))
        .unwrap_or_else(|e| panic!("a new cluster founded by {founder}: {e}"))
}

/// The service name `s`.
///
/// # Panics
///
/// If `s` is not a valid service name: a test's own constant.
pub fn service_name(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap_or_else(|e| panic!("service name {s:?}: {e}"))
}

/// A spec of `replicas` replicas of `image`, every other field at its default (the image's
/// command, no env, ports, secrets, health check or limits).
pub fn spec(image: &str, replicas: u32) -> ServiceSpec {
    ServiceSpec {
        image: image.into(),
        replicas,
        ..Default::default()
    }
}
