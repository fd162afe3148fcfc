//! What a service's placement means for a member: the constraint matching rule, the label
//! groups spread preferences count over, and the words a slot that fits nowhere is pending
//! with. The scheduler ([`crate::core::plan_observed`]) is the one user; the types and their
//! parser are [`warren_crdt::Placement`]'s.
//!
//! Swarm's semantics throughout:
//!
//! - `KEY==VALUE` matches a member whose value equals `VALUE`, ignoring ASCII case;
//!   `KEY!=VALUE` matches every other member.
//! - A member lacking the label of `node.labels.KEY` has no value: `==` does not match, `!=`
//!   does. An `unknown` architecture or OS (a member that never announced it) is no value
//!   either: `node.arch==unknown` matches nobody.
//! - `node.capabilities==NAME` matches a member that announced capability `NAME`; `!=` one
//!   that did not.
//! - A constraint this node could not read matches no member (with either operator).
//!
//! ```
//! use warren_core::placement::matches;
//! use warren_crdt::{Constraint, Member, MemberState, NodeId};
//!
//! let member = Member {
//!     id: NodeId("A".into()), name: "edge-1".into(), addrs: vec![],
//!     labels: [("zone".to_string(), "north".to_string())].into(),
//!     capabilities: Default::default(), platform: Default::default(),
//!     admitted_by: NodeId("A".into()), admitted_at: 0, state: MemberState::Active,
//!     availability: Default::default(),
//! };
//! let c = |s: &str| s.parse::<Constraint>().unwrap();
//! assert!(matches(&c("node.labels.zone==North"), &member));
//! assert!(!matches(&c("node.labels.rack==1"), &member));
//! assert!(matches(&c("node.labels.rack!=1"), &member));
//! ```

use warren_crdt::{Constraint, ConstraintKey, ConstraintOp, Member, Placement, UNKNOWN_PLATFORM};

/// Whether `member` satisfies `constraint` (the rules in the module doc).
pub fn matches(constraint: &Constraint, member: &Member) -> bool {
    let equal =
        |value: Option<&str>| value.is_some_and(|v| v.eq_ignore_ascii_case(&constraint.value));
    fn known(v: &str) -> Option<&str> {
        (v != UNKNOWN_PLATFORM).then_some(v)
    }
    let is = match &constraint.key {
        ConstraintKey::Name => equal(Some(&member.name)),
        ConstraintKey::Id => equal(Some(member.id.as_str())),
        ConstraintKey::Label(key) => equal(member.labels.get(key).map(String::as_str)),
        ConstraintKey::Arch => equal(known(&member.platform.arch)),
        ConstraintKey::Os => equal(known(&member.platform.os)),
        ConstraintKey::Capability => member
            .capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&constraint.value)),
        ConstraintKey::Unreadable { .. } => return false,
    };
    match constraint.op {
        ConstraintOp::Eq => is,
        ConstraintOp::NotEq => !is,
    }
}

/// Whether `member` satisfies every constraint of `placement`.
pub fn satisfies(placement: &Placement, member: &Member) -> bool {
    placement.constraints.iter().all(|c| matches(c, member))
}

/// Why no member of `members` can take a replica under `placement`'s constraints, or `None`
/// when one can: `no node matches node.labels.zone==north`, naming the constraints up to
/// the first one after which no member is left (`... matches A and B` when A alone left
/// some).
pub fn unmatched_reason<'a>(
    placement: &Placement,
    members: impl IntoIterator<Item = &'a Member>,
) -> Option<String> {
    let mut left: Vec<&Member> = members.into_iter().collect();
    for (i, c) in placement.constraints.iter().enumerate() {
        left.retain(|m| matches(c, m));
        if left.is_empty() {
            let named: Vec<String> = placement.constraints[..=i]
                .iter()
                .map(ToString::to_string)
                .collect();
            return Some(format!("no node matches {}", named.join(" and ")));
        }
    }
    None
}

/// The group a member falls in for `placement`'s spread preferences: its value of each
/// preference's label, in order; `None` where it lacks the label (all members lacking it
/// form one more group, as in Swarm).
pub fn spread_group<'a>(placement: &Placement, member: &'a Member) -> Vec<Option<&'a str>> {
    placement
        .preferences
        .iter()
        .map(|p| member.labels.get(&p.label).map(String::as_str))
        .collect()
}

/// The assignments of `assignments` that name a member their service's constraints
/// exclude, as `(slot, node, the constraints)`: what the simulator's invariant "no slot on a
/// node its constraints exclude" checks in every replica's document. A slot whose service
/// is deleted or scaled away, or whose node has no member record, is not judged.
pub fn misplaced(
    services: &crate::core::Services,
    members: &std::collections::BTreeMap<warren_crdt::NodeId, Member>,
    assignments: &std::collections::BTreeMap<warren_crdt::SlotId, warren_crdt::Assignment>,
) -> Vec<(warren_crdt::SlotId, warren_crdt::NodeId, String)> {
    assignments
        .iter()
        .filter_map(|(slot, a)| {
            let service = crate::core::service_wanting(services, slot)?;
            let placement = &service.spec.placement;
            let member = members.get(&a.node)?;
            (!satisfies(placement, member)).then(|| {
                let text: Vec<String> = placement
                    .constraints
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                (slot.clone(), a.node.clone(), text.join(" and "))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{MemberState, NodeId, Platform};

    fn member(name: &str, labels: &[(&str, &str)]) -> Member {
        Member {
            id: NodeId(format!("id-{name}")),
            name: name.into(),
            addrs: vec![],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capabilities: ["gpu".to_string()].into(),
            platform: Platform::from_rust("x86_64", "linux"),
            admitted_by: NodeId("x".into()),
            admitted_at: 0,
            state: MemberState::Active,
            availability: Default::default(),
        }
    }

    fn c(text: &str) -> Constraint {
        text.parse().expect(text)
    }

    #[test]
    fn each_key_matches_as_swarm_does() {
        let m = member("edge-1", &[("zone", "north")]);
        for (text, want) in [
            ("node.name==edge-1", true),
            ("node.name==EDGE-1", true),
            ("node.name!=edge-1", false),
            ("node.id==id-edge-1", true),
            ("node.id!=id-other", true),
            ("node.labels.zone==north", true),
            ("node.labels.zone==south", false),
            ("node.labels.zone!=south", true),
            // A label the member lacks: == never matches, != always does.
            ("node.labels.rack==1", false),
            ("node.labels.rack!=1", true),
            ("node.arch==amd64", true),
            ("node.arch==arm64", false),
            ("node.os==linux", true),
            ("node.os!=linux", false),
            ("node.capabilities==gpu", true),
            ("node.capabilities==tpu", false),
            ("node.capabilities!=tpu", true),
        ] {
            assert_eq!(matches(&c(text), &m), want, "{text}");
        }
        // An unannounced platform is no value.
        let old = Member {
            platform: Platform::default(),
            ..m.clone()
        };
        assert!(!matches(&c("node.arch==unknown"), &old));
        assert!(!matches(&c("node.os==linux"), &old));
        assert!(matches(&c("node.os!=linux"), &old));
        // What this node could not read matches nobody, whatever its operator.
        let unreadable: Constraint = serde_json::from_str("\"node.role!=manager\"").expect("reads");
        assert!(!matches(&unreadable, &m));
    }

    #[test]
    fn the_reason_names_the_constraints_that_left_no_node() {
        let members = [
            member("a", &[("zone", "north")]),
            member("b", &[("zone", "south")]),
        ];
        let placement = |cs: &[&str]| Placement {
            constraints: cs.iter().map(|s| c(s)).collect(),
            ..Placement::default()
        };
        assert_eq!(
            unmatched_reason(&placement(&["node.labels.zone==east"]), &members).as_deref(),
            Some("no node matches node.labels.zone==east")
        );
        assert_eq!(
            unmatched_reason(
                &placement(&["node.labels.zone==north", "node.name==b", "node.os==linux"]),
                &members
            )
            .as_deref(),
            Some("no node matches node.labels.zone==north and node.name==b")
        );
        assert_eq!(
            unmatched_reason(&placement(&["node.labels.zone!=east"]), &members),
            None
        );
        assert!(satisfies(
            &placement(&["node.labels.zone==south"]),
            &members[1]
        ));
        assert!(!satisfies(
            &placement(&["node.labels.zone==south"]),
            &members[0]
        ));
    }

    #[test]
    fn misplaced_names_assignments_on_excluded_nodes_only() {
        use warren_crdt::{Assignment, Epoch, Service, ServiceName, ServiceSpec, SlotId};
        let (a, b) = (
            member("a", &[("zone", "north")]),
            member("b", &[("zone", "south")]),
        );
        let members: std::collections::BTreeMap<_, _> =
            [(a.id.clone(), a.clone()), (b.id.clone(), b.clone())].into();
        let name = ServiceName::new("web").expect("name");
        let service = Service {
            name: name.clone(),
            generation: 1,
            deleted: false,
            previous_spec: None,
            older_specs: Default::default(),
            rollout: None,
            spec: ServiceSpec {
                image: "img".into(),
                replicas: 2,
                placement: Placement {
                    constraints: vec![c("node.labels.zone==north")],
                    ..Placement::default()
                },
                ..ServiceSpec::default()
            },
        };
        let services = crate::core::Services::from(vec![(name.clone(), service)]);
        let on = |slot: u32, node: &Member| {
            (
                SlotId {
                    service: name.clone(),
                    slot,
                },
                Assignment {
                    node: node.id.clone(),
                    epoch: Epoch(1),
                    holder: node.id.clone(),
                    spec_generation: 1,
                    displaced: vec![],
                    gpus: Vec::new(),
                },
            )
        };
        // Slot 5 is beyond the replica count: not judged.
        let assignments = [on(0, &a), on(1, &b), on(5, &b)].into();
        let wrong = misplaced(&services, &members, &assignments);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert_eq!(wrong[0].0.slot, 1);
        assert_eq!(wrong[0].1, b.id);
        assert_eq!(wrong[0].2, "node.labels.zone==north");
    }

    #[test]
    fn groups_follow_the_preferences_in_order() {
        let placement = Placement {
            preferences: vec![
                "spread=node.labels.zone".parse().expect("p"),
                "spread=node.labels.rack".parse().expect("p"),
            ],
            ..Placement::default()
        };
        let m = member("a", &[("zone", "north")]);
        assert_eq!(spread_group(&placement, &m), vec![Some("north"), None]);
    }
}
