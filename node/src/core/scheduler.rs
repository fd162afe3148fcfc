//! The scheduler: a pure function from (services, members, liveness, assignments, lease) to the
//! assignments to write and to remove (DESIGN §5). Only the lease holder runs it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use warren_crdt::{Assignment, Lease, Member, MemberState, NodeId, Service, ServiceName, SlotId};

/// One scheduling round: assignments to write and slots to clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// New or moved assignments, each made under the holder's lease.
    pub put: Vec<(SlotId, Assignment)>,
    /// Slots of deleted services or beyond the replica count.
    pub remove: Vec<SlotId>,
}

impl Plan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }
}

/// Plans one round.
///
/// - A slot keeps its node while that node is an active, live member and the assignment is
///   for the service's current generation (no churn for healthy placements).
/// - A slot without a usable node goes to the eligible node with the fewest slots of the same
///   service, then the fewest slots overall, then the lowest id (spread, deterministic).
/// - Slots of deleted services and slots `>= replicas` are removed.
/// - With no eligible node a slot stays unassigned (pending) until one appears.
pub fn plan(
    services: &BTreeMap<ServiceName, Service>,
    members: &BTreeMap<NodeId, Member>,
    live: &BTreeSet<NodeId>,
    assignments: &BTreeMap<SlotId, Assignment>,
    lease: &Lease,
) -> Plan {
    let eligible: Vec<&NodeId> = members
        .values()
        .filter(|m| m.state == MemberState::Active && live.contains(&m.id))
        .map(|m| &m.id)
        .collect();
    let mut plan = Plan::default();

    // Slots that stay where they are count towards each node's load.
    let mut total: BTreeMap<&NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    let mut per_service: BTreeMap<(&ServiceName, &NodeId), usize> = BTreeMap::new();
    let keeps = |slot: &SlotId, a: &Assignment| -> bool {
        services.get(&slot.service).is_some_and(|s| {
            !s.deleted
                && slot.slot < s.spec.replicas
                && a.spec_generation == s.generation
                && eligible.contains(&&a.node)
        })
    };
    for (slot, a) in assignments {
        if keeps(slot, a) {
            *total.entry(&a.node).or_default() += 1;
            *per_service.entry((&slot.service, &a.node)).or_default() += 1;
        }
    }

    for slot in assignments.keys() {
        let live_service = services
            .get(&slot.service)
            .filter(|s| !s.deleted && slot.slot < s.spec.replicas);
        if live_service.is_none() {
            plan.remove.push(slot.clone());
        }
    }

    for (name, service) in services.iter().filter(|(_, s)| !s.deleted) {
        for index in 0..service.spec.replicas {
            let slot = SlotId {
                service: name.clone(),
                slot: index,
            };
            if assignments.get(&slot).is_some_and(|a| keeps(&slot, a)) {
                continue;
            }
            let Some(node) = eligible.iter().copied().min_by_key(|n| {
                (
                    per_service.get(&(name, *n)).copied().unwrap_or(0),
                    total.get(*n).copied().unwrap_or(0),
                    *n,
                )
            }) else {
                continue;
            };
            *total.entry(node).or_default() += 1;
            *per_service.entry((name, node)).or_default() += 1;
            plan.put.push((
                slot,
                Assignment {
                    node: node.clone(),
                    epoch: lease.epoch,
                    holder: lease.holder.clone(),
                    spec_generation: service.generation,
                },
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{Epoch, ServiceSpec};

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn member(s: &str) -> (NodeId, Member) {
        (
            id(s),
            Member {
                id: id(s),
                name: s.into(),
                addrs: vec![],
                labels: Default::default(),
                admitted_by: id(s),
                admitted_at: 0,
                state: MemberState::Active,
            },
        )
    }

    fn service(name: &str, replicas: u32) -> (ServiceName, Service) {
        let n = ServiceName::new(name).expect("name");
        (
            n.clone(),
            Service {
                name: n,
                generation: 1,
                deleted: false,
                previous_spec: None,
                spec: ServiceSpec {
                    image: "img".into(),
                    replicas,
                    command: vec![],
                    env: Default::default(),
                    ports: vec![],
                    secrets: Vec::new(),
                    ..Default::default()
                },
            },
        )
    }

    fn lease() -> Lease {
        Lease {
            epoch: Epoch(2),
            holder: id("a"),
        }
    }

    fn apply(assignments: &mut BTreeMap<SlotId, Assignment>, plan: &Plan) {
        for slot in &plan.remove {
            assignments.remove(slot);
        }
        for (slot, a) in &plan.put {
            assignments.insert(slot.clone(), a.clone());
        }
    }

    #[test]
    fn spreads_replicas_then_keeps_them_and_moves_only_lost_ones() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services: BTreeMap<_, _> = [service("web", 3)].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        let p = plan(&services, &members, &all, &assignments, &lease());
        let nodes: BTreeSet<_> = p.put.iter().map(|(_, a)| a.node.clone()).collect();
        assert_eq!(nodes, all, "one replica per node");
        assert!(p.put.iter().all(|(_, a)| a.epoch == Epoch(2)));
        apply(&mut assignments, &p);
        assert!(plan(&services, &members, &all, &assignments, &lease()).is_empty());

        // "c" goes down: only its slot moves.
        let live: BTreeSet<_> = [id("a"), id("b")].into();
        let p = plan(&services, &members, &live, &assignments, &lease());
        assert_eq!(p.put.len(), 1);
        assert!(p.remove.is_empty());
        assert_ne!(p.put[0].1.node, id("c"));
    }

    #[test]
    fn scale_down_and_delete_remove_slots() {
        let members: BTreeMap<_, _> = [member("a"), member("b")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut services: BTreeMap<_, _> = [service("web", 3)].into();
        let mut assignments = BTreeMap::new();
        let p = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &p);
        assert_eq!(assignments.len(), 3);
        services.insert(service("web", 1).0, service("web", 1).1);
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 2);
        apply(&mut assignments, &p);
        assert_eq!(assignments.len(), 1);
        if let Some(s) = services.values_mut().next() {
            s.deleted = true;
        }
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 1);
    }

    #[test]
    fn no_live_node_leaves_slots_pending() {
        let members: BTreeMap<_, _> = [member("a")].into();
        let services: BTreeMap<_, _> = [service("web", 2)].into();
        let p = plan(
            &services,
            &members,
            &BTreeSet::new(),
            &BTreeMap::new(),
            &lease(),
        );
        assert!(p.is_empty());
    }
}
