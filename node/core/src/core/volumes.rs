//! Volume affinity (issue 16, item 6): the one rule that decides where a service that mounts
//! volumes or host paths may run, read by the scheduler ([`super::scheduler`]) and by the
//! read model (`service ps`).
//!
//! - A service mounting Warren volumes runs only on their node (all of them must be on one
//!   node, else its slots wait: `mounts volumes on different nodes`). A volume with no record
//!   leaves the slots waiting (`volume X does not exist`).
//! - While that node is down its slots wait there, whatever `--on-partition` says: the data
//!   is on that node, and a second copy elsewhere would run on an empty volume.
//! - A service with bind mounts runs only on members announcing [`HOST_PATHS_CAPABILITY`]
//!   (`warren-node up --allow-host-paths`).

use std::collections::BTreeMap;

use warren_crdt::{Member, MountKind, NodeId, ServiceSpec, Volume};

/// The capability a node started with `--allow-host-paths` announces: the scheduler places
/// services with bind mounts only on such members.
pub const HOST_PATHS_CAPABILITY: &str = "host-paths";

/// Where a service's volumes pin it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// It mounts no volume: anywhere its other rules allow.
    Free,
    /// Only on this node (the node of every volume it mounts).
    Node(NodeId),
    /// Nowhere, with the reason (a volume without a record, volumes on different nodes).
    Nowhere(String),
}

/// Where `spec`'s volume mounts pin its tasks, given the document's `volumes`.
pub fn pin(spec: &ServiceSpec, volumes: &BTreeMap<String, Volume>) -> Pin {
    let mut node: Option<(&str, &NodeId)> = None;
    for mount in spec.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
        let Some(volume) = volumes.get(&mount.source) else {
            return Pin::Nowhere(format!("volume {} does not exist", mount.source));
        };
        match node {
            None => node = Some((&mount.source, &volume.node)),
            Some((first, on)) if *on != volume.node => {
                return Pin::Nowhere(format!(
                    "mounts volumes on different nodes: {first} on {}, {} on {}",
                    on.short(),
                    mount.source,
                    volume.node.short()
                ));
            }
            Some(_) => {}
        }
    }
    match node {
        Some((_, n)) => Pin::Node(n.clone()),
        None => Pin::Free,
    }
}

/// Whether `spec` mounts host paths.
pub fn binds_host_paths(spec: &ServiceSpec) -> bool {
    spec.mounts.iter().any(|m| m.kind == MountKind::Bind)
}

/// Whether member `m` may run a task of `spec` as far as mounts go: on the volumes' node, and
/// announcing [`HOST_PATHS_CAPABILITY`] when the spec binds host paths.
pub fn allows(spec: &ServiceSpec, volumes: &BTreeMap<String, Volume>, m: &Member) -> bool {
    let pinned_ok = match pin(spec, volumes) {
        Pin::Free => true,
        Pin::Node(n) => n == m.id,
        Pin::Nowhere(_) => false,
    };
    pinned_ok && (!binds_host_paths(spec) || m.capabilities.contains(HOST_PATHS_CAPABILITY))
}

/// Why a slot of `spec` has no node, as far as mounts go, given the members that are live
/// (`live` says whether a node is): `None` when mounts do not explain it.
pub fn unplaced_reason(
    spec: &ServiceSpec,
    volumes: &BTreeMap<String, Volume>,
    live: impl Fn(&NodeId) -> bool,
    members: &BTreeMap<NodeId, Member>,
) -> Option<String> {
    match pin(spec, volumes) {
        Pin::Nowhere(reason) => Some(reason),
        Pin::Node(n) if !live(&n) => Some(waits_reason(&n, members)),
        Pin::Node(n) if binds_host_paths(spec) && !allows(spec, volumes, members.get(&n)?) => {
            Some(format!(
                "volume node {} does not allow host paths (--allow-host-paths)",
                name_of(&n, members)
            ))
        }
        Pin::Node(_) => None,
        Pin::Free if binds_host_paths(spec) => {
            let any = members
                .values()
                .any(|m| live(&m.id) && m.capabilities.contains(HOST_PATHS_CAPABILITY));
            (!any).then(|| "no live node allows host paths (--allow-host-paths)".to_string())
        }
        Pin::Free => None,
    }
}

/// The node a slot of `spec` waits for while it is down, whatever `--on-partition` says:
/// the node of its volumes. `None` for a service without volumes.
pub fn waits_for(spec: &ServiceSpec, volumes: &BTreeMap<String, Volume>) -> Option<NodeId> {
    match pin(spec, volumes) {
        Pin::Node(n) => Some(n),
        _ => None,
    }
}

/// `waits for volume data on node NAME`: the status of a slot whose volume's node is down.
pub fn waits_reason(node: &NodeId, members: &BTreeMap<NodeId, Member>) -> String {
    format!("waits for volume data on node {}", name_of(node, members))
}

fn name_of(node: &NodeId, members: &BTreeMap<NodeId, Member>) -> String {
    members
        .get(node)
        .map_or_else(|| node.short().to_string(), |m| m.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{MemberState, Mount};

    fn id(s: &str) -> NodeId {
        NodeId(format!("12D3KooW{s}"))
    }
    fn member(s: &str, caps: &[&str]) -> Member {
        Member {
            id: id(s),
            name: s.into(),
            addrs: vec![],
            labels: Default::default(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            platform: Default::default(),
            admitted_by: id(s),
            admitted_at: 0,
            state: MemberState::Active,
            availability: Default::default(),
        }
    }
    fn volume(name: &str, on: &str) -> (String, Volume) {
        (
            name.into(),
            Volume {
                name: name.into(),
                driver: "local".into(),
                node: id(on),
                options: Default::default(),
            },
        )
    }
    fn spec(mounts: &[&str]) -> ServiceSpec {
        ServiceSpec {
            image: "warren/busybox:latest".into(),
            replicas: 1,
            mounts: mounts
                .iter()
                .map(|m| Mount::parse(m).expect("mount"))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn volumes_pin_to_their_node_and_must_share_one() {
        let volumes: BTreeMap<_, _> = [volume("a", "b"), volume("b", "b"), volume("c", "c")].into();
        assert_eq!(pin(&spec(&[]), &volumes), Pin::Free);
        assert_eq!(
            pin(
                &spec(&["source=a,target=/a", "source=b,target=/b"]),
                &volumes
            ),
            Pin::Node(id("b"))
        );
        let Pin::Nowhere(why) = pin(
            &spec(&["source=a,target=/a", "source=c,target=/c"]),
            &volumes,
        ) else {
            panic!("different nodes must not pin")
        };
        assert!(
            why.starts_with("mounts volumes on different nodes"),
            "{why}"
        );
        assert_eq!(
            pin(&spec(&["source=zz,target=/z"]), &volumes),
            Pin::Nowhere("volume zz does not exist".into())
        );
        let on_b = spec(&["source=a,target=/a"]);
        assert!(allows(&on_b, &volumes, &member("b", &[])));
        assert!(!allows(&on_b, &volumes, &member("c", &[])));
    }

    #[test]
    fn host_paths_need_the_capability_and_a_down_volume_node_is_waited_for() {
        let volumes: BTreeMap<_, _> = [volume("a", "b")].into();
        let members: BTreeMap<_, _> = [
            (id("b"), member("b", &[])),
            (id("c"), member("c", &[HOST_PATHS_CAPABILITY])),
        ]
        .into();
        let bind = spec(&["type=bind,source=/srv,target=/srv"]);
        assert!(!allows(&bind, &volumes, &members[&id("b")]));
        assert!(allows(&bind, &volumes, &members[&id("c")]));
        assert_eq!(
            unplaced_reason(&bind, &volumes, |n| *n == id("b"), &members).as_deref(),
            Some("no live node allows host paths (--allow-host-paths)")
        );
        let on_b = spec(&["source=a,target=/a"]);
        assert_eq!(
            unplaced_reason(&on_b, &volumes, |_| false, &members).as_deref(),
            Some("waits for volume data on node b")
        );
        assert_eq!(unplaced_reason(&on_b, &volumes, |_| true, &members), None);
        assert_eq!(waits_for(&on_b, &volumes), Some(id("b")));
    }

    #[test]
    fn the_scheduler_places_on_the_volume_node_and_never_moves_off_it() {
        use crate::core::{plan_observed, Observations, Services};
        use std::collections::BTreeSet;
        use warren_crdt::{Epoch, Lease, Service, ServiceName, SlotId};

        let members: BTreeMap<_, _> = ["a", "b", "c"]
            .iter()
            .map(|n| (id(n), member(n, &[])))
            .collect();
        let web = ServiceName::new("web").expect("name");
        let services = Services::from(vec![(
            web.clone(),
            Service {
                name: web.clone(),
                generation: 1,
                spec: spec(&["source=data,target=/data"]),
                deleted: false,
                previous_spec: None,
                older_specs: Default::default(),
                rollout: None,
            },
        )]);
        let lease = Lease {
            epoch: Epoch(1),
            holder: id("a"),
        };
        let observed = Observations {
            volumes: [volume("data", "b")].into(),
            // Down for an hour: a `reschedule` service would have moved long ago.
            silent_ms: [(id("b"), 3_600_000)].into(),
            ..Default::default()
        };
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let p = plan_observed(
            &services,
            &members,
            &all,
            &BTreeMap::new(),
            &lease,
            &observed,
        );
        assert_eq!(p.put.len(), 1);
        assert_eq!(p.put[0].1.node, id("b"), "placed on the volume's node");
        let assignments: BTreeMap<_, _> = p.put.into_iter().collect();

        let without_b: BTreeSet<_> = [id("a"), id("c")].into();
        let p = plan_observed(
            &services,
            &members,
            &without_b,
            &assignments,
            &lease,
            &observed,
        );
        assert!(p.is_empty(), "the slot waits on b: {p:?}");

        // Never placed before b went down: it waits, and says why.
        let p = plan_observed(
            &services,
            &members,
            &without_b,
            &BTreeMap::new(),
            &lease,
            &observed,
        );
        assert!(p.put.is_empty());
        let slot = SlotId {
            service: web,
            slot: 0,
        };
        assert_eq!(
            p.pending,
            vec![(slot, "waits for volume data on node b".to_string())]
        );
    }
}
