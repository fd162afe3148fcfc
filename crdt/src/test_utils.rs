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
        capabilities: Default::default(),
        platform: Default::default(),
        admitted_by: node_id(by),
        admitted_at: 0,
        state: MemberState::Active,
        availability: Default::default(),
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

/// Grows `state`'s history by at least `bytes` of changes, fast: updates of four services
/// (`big-0` to `big-3`, created unless they exist), each replacing two environment values of
/// [`MAX_ARG_BYTES`](crate::MAX_ARG_BYTES) with printable text drawn from a fixed seed (which
/// Automerge's compression barely shrinks), each followed by a one-key change of the
/// service's replica count. Returns the number of changes written.
///
/// # Panics
///
/// If a write fails, which valid specs never cause: a test's setup.
pub fn grow_history(state: &mut DesiredState, bytes: usize) -> usize {
    use rand::{Rng, SeedableRng};
    // Values are windows of one pool of random text: far enough apart that no compressor
    // window (32 KiB for DEFLATE) sees two of them, and drawn once, which keeps this fast in
    // a debug build.
    const POOL: usize = 4 << 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    let pool: Vec<u8> = (0..POOL + crate::MAX_ARG_BYTES)
        .map(|_| rng.gen_range(0x21u8..0x7f))
        .collect();
    let text = |rng: &mut rand::rngs::StdRng| -> String {
        let at = rng.gen_range(0..POOL);
        String::from_utf8_lossy(&pool[at..at + crate::MAX_ARG_BYTES]).into_owned()
    };
    let names: Vec<ServiceName> = (0..4).map(|i| service_name(&format!("big-{i}"))).collect();
    let mut specs: Vec<ServiceSpec> = Vec::new();
    let (mut written, mut changes) = (0, 0);
    for name in &names {
        if let Some(existing) = state.service(name) {
            specs.push(existing.spec);
            continue;
        }
        let mut s = spec("warren/busybox:latest", 1);
        s.env.insert("A".into(), text(&mut rng));
        s.env.insert("B".into(), text(&mut rng));
        written += state
            .create_service(name, &s)
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
            .len();
        changes += 1;
        specs.push(s);
    }
    let mut round = 0usize;
    while written < bytes {
        let i = round % names.len();
        let s = &mut specs[i];
        s.env.insert("A".into(), text(&mut rng));
        s.env.insert("B".into(), text(&mut rng));
        s.replicas = 1 + (round as u32 % 3);
        written += state
            .update_service(&names[i], s)
            .unwrap_or_else(|e| panic!("update {}: {e}", names[i]))
            .len();
        s.replicas = 1 + ((round as u32 + 1) % 3);
        written += state
            .scale_service(&names[i], s.replicas)
            .unwrap_or_else(|e| panic!("scale {}: {e}", names[i]))
            .len();
        changes += 2;
        round += 1;
    }
    changes
}
