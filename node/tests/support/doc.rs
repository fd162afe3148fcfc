//! Builders of desired-state values for tests that drive a machine directly.

use std::collections::BTreeMap;

use warren_crdt::{Member, MemberState, NodeId};

/// The node id `s`.
pub fn id(s: &str) -> NodeId {
    NodeId(s.into())
}

/// An active member `s` (named `s`, no addresses or labels), admitted by `n00` at time 0.
pub fn member(s: &str) -> Member {
    Member {
        id: id(s),
        name: s.into(),
        addrs: Vec::new(),
        labels: BTreeMap::new(),
        admitted_by: id("n00"),
        admitted_at: 0,
        state: MemberState::Active,
    }
}
