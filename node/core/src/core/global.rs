//! Global services (`--mode global`): one task on every eligible member, the lease holder's
//! rules for them. The scheduler ([`super::plan_observed`]) calls [`plan_service`] for each
//! live global service in place of its replica placement.
//!
//! **Why slots, not a new kind of task.** A global service keeps the existing slot machinery
//! unchanged: its tasks are assignments `<service>/<slot>` written under the holder's lease,
//! reconciled, reported and named in DNS (`<slot>.<service>.warren`) as a replicated
//! service's are. Only who hands out the indices differs: the holder gives each eligible
//! member without a slot of the service the lowest index no assignment (nor running copy)
//! of the service uses. So every part that reads assignments works for global services as
//! it is, and the heal's rules (the greater `(epoch, holder)` stands; the keep rule judges
//! the running copies of one slot) apply to them too.
//!
//! **The rules.**
//!
//! - **Eligible** ([`eligible`], the one predicate): an active member whose record
//!   satisfies the service's constraints and that keeps tasks by its availability (a
//!   drained member runs none, unless it must stay: [`super::availability::keeps_tasks`]),
//!   and that the scheduler's other rules allow (`Round::suits`: the service's mounts and
//!   its image's platforms). A new task goes only to an eligible member that is also live
//!   here and takes new tasks (not paused), so each side of a partition places on the
//!   members it can reach.
//! - **A slot never moves.** A slot stays on its member while that member is eligible, live
//!   or not (an unreachable member keeps running its task, autonomous); it is cleared when
//!   the member is removed or stops being eligible. A spec change re-writes it on the same
//!   member under the new generation.
//! - **One per member.** Where a member holds several slots of the service (after a heal:
//!   the keep rule gave it a slot the other side had handed to it, or the merge did), the
//!   lowest stays and the others are cleared; a member that lost its slot at a heal (the
//!   other side's assignment of the same index stood) gets a fresh index once the keep rule
//!   has judged its copy (until then the rule may give the slot back to it). Its old copy
//!   stops once the slot's node confirms its own running (make before break), so a member
//!   runs two tasks of the service only for that handover. Clearing a duplicate can bring
//!   back a concurrent assignment of the same index ranked below one its node saw, which
//!   the node's fencing refuses: a kept slot ranked below the lease whose node reports no
//!   copy of it is written again under the lease.
//! - **Reservations** apply: a member whose free capacity cannot hold the service's
//!   `--cpus`/`--memory` gets no task; the slot it would get is pending with the reason
//!   naming the member.

use std::collections::{BTreeMap, BTreeSet};

use warren_crdt::{Assignment, Lease, Member, MemberState, NodeId, Service, ServiceName, SlotId};

use super::scheduler::{Plan, RunningCopy};
use crate::placement;

/// Whether `member` may run a task of the global `service`: an active member whose record
/// satisfies every constraint of the service. The one eligibility rule: a standing slot
/// stays while its member is eligible, and a new one goes to an eligible member that is
/// live.
pub fn eligible(service: &Service, member: &Member) -> bool {
    member.state == MemberState::Active
        && placement::satisfies(&service.spec.placement, member)
        && super::availability::keeps_tasks(service, member)
}

/// Whether the standing assignment `a` of a global service's slot stays as it is: made for
/// the service's current generation or an older one (the rollout moves it,
/// [`super::rollout`]), on a member that is still [`eligible`] (live or not).
pub fn stands(service: &Service, a: &Assignment, members: &BTreeMap<NodeId, Member>) -> bool {
    a.spec_generation <= service.generation
        && members.get(&a.node).is_some_and(|m| eligible(service, m))
}

/// What [`plan_service`] reads of one round.
pub struct Round<'a> {
    /// The service's name.
    pub name: &'a ServiceName,
    /// The service (live, global).
    pub service: &'a Service,
    /// Every member, by id.
    pub members: &'a BTreeMap<NodeId, Member>,
    /// The members live here.
    pub live: &'a BTreeSet<NodeId>,
    /// The standing assignments (all services).
    pub assignments: &'a BTreeMap<SlotId, Assignment>,
    /// The assignments the heal's keep rule made this round (all services).
    pub judged: &'a BTreeMap<&'a SlotId, Assignment>,
    /// The running copies live nodes report, per slot.
    pub copies: &'a BTreeMap<SlotId, Vec<RunningCopy>>,
    /// The nodes whose reports are fresh.
    pub reported: &'a BTreeSet<NodeId>,
    /// The holder's lease: new assignments are made under it.
    pub lease: &'a Lease,
    /// Whether a member suits the service by the scheduler's rules beyond [`eligible`]'s
    /// (its mounts, its image's platforms).
    pub suits: &'a dyn Fn(&NodeId) -> bool,
}

/// Plans one round of the global service `round.service` into `plan` (the rules in the
/// module doc). `kept` says which of its slots the scheduler kept as they are (their
/// reservations already counted); `fit` checks that a member can hold one more task of the
/// service and reserves it there, or returns the reason it cannot (e.g. `no 2 GiB free
/// memory`).
pub fn plan_service(
    round: &Round<'_>,
    kept: &dyn Fn(&SlotId) -> bool,
    fit: &mut dyn FnMut(&NodeId) -> Result<(), String>,
    plan: &mut Plan,
) {
    let Round {
        name,
        service,
        members,
        live,
        assignments,
        judged,
        copies,
        reported,
        lease,
        suits,
    } = *round;
    let ours = |slot: &SlotId| slot.service == *name;
    // Every index the service's assignments or running copies use: a new slot takes none of
    // them, so that it is never mistaken for a copy of another member's slot.
    let mut used: BTreeSet<u32> = assignments
        .keys()
        .chain(judged.keys().copied())
        .chain(copies.keys())
        .filter(|s| ours(s))
        .map(|s| s.slot)
        .collect();
    // The standing slots, the keep rule's judgement over the document's, lowest first.
    let mut standing: BTreeMap<&SlotId, (&Assignment, bool)> = assignments
        .iter()
        .filter(|(s, _)| ours(s))
        .map(|(s, a)| (s, (a, false)))
        .collect();
    for (slot, a) in judged.iter().filter(|(s, _)| ours(s)) {
        standing.insert(*slot, (a, true));
    }
    // Members running a copy of one of its slots that the slot's assignment neither names
    // nor lists as displaced: the keep rule has yet to judge it (a heal), and may give them
    // that slot. They get no new index meanwhile; a member whose copy was judged displaced
    // does (make before break: its old copy stops once the kept one runs).
    let unjudged: BTreeSet<&NodeId> = copies
        .iter()
        .filter(|(slot, _)| ours(slot))
        .flat_map(|(slot, cs)| {
            let a = standing.get(slot).map(|(a, _)| *a);
            cs.iter()
                .filter(|c| c.generation == service.generation)
                .map(|c| &c.node)
                .filter(move |n| a.is_none_or(|a| a.node != **n && !a.displaced.contains(n)))
        })
        .collect();
    let mut served: BTreeSet<&NodeId> = BTreeSet::new();
    for (slot, (a, is_judged)) in standing {
        let node_eligible =
            members.get(&a.node).is_some_and(|m| eligible(service, m)) && suits(&a.node);
        if !node_eligible || served.contains(&a.node) {
            // Removed, no longer eligible, or a second slot on one member: cleared.
            plan.remove.push(slot.clone());
            continue;
        }
        if is_judged {
            served.insert(&a.node);
            plan.put.push((slot.clone(), a.clone()));
            continue;
        }
        if kept(slot) {
            served.insert(&a.node);
            // An assignment ranked below this lease whose node reports no copy of it may be
            // one a node refuses (fencing: clearing a duplicate at a heal can bring back a
            // concurrent assignment ranked below one the node saw): written again under this
            // lease, once (then it ranks as the lease).
            let runs = copies
                .get(slot)
                .is_some_and(|cs| cs.iter().any(|c| c.node == a.node));
            if (a.epoch, &a.holder) < (lease.epoch, &lease.holder)
                && reported.contains(&a.node)
                && !runs
            {
                plan.put.push((
                    slot.clone(),
                    Assignment {
                        epoch: lease.epoch,
                        holder: lease.holder.clone(),
                        ..a.clone()
                    },
                ));
            }
            continue;
        }
        // A spec change: the same member, the new generation (if it can hold it).
        match fit(&a.node) {
            Ok(()) => {
                served.insert(&a.node);
                plan.put.push((
                    slot.clone(),
                    Assignment {
                        node: a.node.clone(),
                        epoch: lease.epoch,
                        holder: lease.holder.clone(),
                        spec_generation: service.generation,
                        displaced: Vec::new(),
                        gpus: Vec::new(),
                    },
                ));
            }
            Err(why) => {
                plan.remove.push(slot.clone());
                plan.pending
                    .push((slot.clone(), on_member(members, &a.node, &why)));
            }
        }
    }
    // Every eligible live member without a slot (nor a copy awaiting judgement) gets the
    // lowest free index.
    let mut next = 0u32;
    for member in members.values().filter(|m| {
        live.contains(&m.id)
            && eligible(service, m)
            && super::availability::takes_new_tasks(m)
            && suits(&m.id)
            && !served.contains(&m.id)
            && !unjudged.contains(&m.id)
    }) {
        while used.contains(&next) {
            next += 1;
        }
        if !service.spec.wants_slot(next) {
            return;
        }
        used.insert(next);
        let slot = SlotId {
            service: (*name).clone(),
            slot: next,
        };
        match fit(&member.id) {
            Ok(()) => plan.put.push((
                slot,
                Assignment {
                    node: member.id.clone(),
                    epoch: lease.epoch,
                    holder: lease.holder.clone(),
                    spec_generation: service.generation,
                    displaced: Vec::new(),
                    gpus: Vec::new(),
                },
            )),
            Err(why) => plan
                .pending
                .push((slot, on_member(members, &member.id, &why))),
        }
    }
}

/// `why` about the member `node`, by name: `node edge-1: no 2 GiB free memory`.
fn on_member(members: &BTreeMap<NodeId, Member>, node: &NodeId, why: &str) -> String {
    let name = members
        .get(node)
        .map_or_else(|| node.short().to_string(), |m| m.name.clone());
    format!("node {name}: {why}")
}

#[cfg(test)]
mod tests {
    use super::super::scheduler::{plan, plan_observed, Capacity, Observations, Services};
    use super::*;
    use warren_crdt::{Epoch, ServiceMode, ServiceSpec};

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn member(s: &str, zone: &str) -> (NodeId, Member) {
        (
            id(s),
            Member {
                id: id(s),
                name: format!("node-{s}"),
                addrs: vec![],
                labels: [("zone".to_string(), zone.to_string())].into(),
                capabilities: Default::default(),
                platform: Default::default(),
                admitted_by: id(s),
                admitted_at: 0,
                state: MemberState::Active,
                availability: Default::default(),
            },
        )
    }

    fn global(constraints: &[&str]) -> Services {
        let name = ServiceName::new("agent").expect("name");
        let service = Service {
            name: name.clone(),
            generation: 1,
            deleted: false,
            previous_spec: None,
            older_specs: Default::default(),
            rollout: None,
            spec: ServiceSpec {
                image: "img".into(),
                mode: ServiceMode::Global,
                placement: warren_crdt::Placement {
                    constraints: constraints
                        .iter()
                        .map(|c| c.parse().expect("constraint"))
                        .collect(),
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        Services::from(vec![(name, service)])
    }

    fn lease() -> Lease {
        Lease {
            epoch: Epoch(2),
            holder: id("a"),
        }
    }

    fn apply(assignments: &mut BTreeMap<SlotId, Assignment>, plan: &Plan) {
        plan.apply(assignments);
    }

    /// Slot index → node, of every assignment.
    fn placed(assignments: &BTreeMap<SlotId, Assignment>) -> Vec<(u32, String)> {
        assignments
            .iter()
            .map(|(s, a)| (s.slot, a.node.to_string()))
            .collect()
    }

    fn settle(
        services: &Services,
        members: &BTreeMap<NodeId, Member>,
        live: &BTreeSet<NodeId>,
        assignments: &mut BTreeMap<SlotId, Assignment>,
    ) {
        let p = plan(services, members, live, assignments, &lease());
        apply(assignments, &p);
        let again = plan(services, members, live, assignments, &lease());
        assert!(
            again.is_empty(),
            "a second round changes nothing: {again:?}"
        );
    }

    #[test]
    fn one_task_per_member_joins_get_one_and_removed_members_lose_theirs() {
        let mut members: BTreeMap<_, _> =
            [member("a", "n"), member("b", "n"), member("c", "s")].into();
        let services = global(&[]);
        let mut live: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        settle(&services, &members, &live, &mut assignments);
        assert_eq!(
            placed(&assignments),
            [(0, "a".into()), (1, "b".into()), (2, "c".into())]
        );

        // "b" goes down: its slot stays there (no re-placement), nothing else changes.
        live.remove(&id("b"));
        assert!(plan(&services, &members, &live, &assignments, &lease()).is_empty());

        // "d" joins: it gets the next index.
        let (d, m) = member("d", "s");
        members.insert(d.clone(), m);
        live.insert(d);
        settle(&services, &members, &live, &mut assignments);
        assert_eq!(assignments.len(), 4);
        assert_eq!(placed(&assignments)[3], (3, "d".into()));

        // "a" is removed: its slot goes; a member joining later takes the freed index.
        if let Some(a) = members.get_mut(&id("a")) {
            a.state = MemberState::Removed;
        }
        settle(&services, &members, &live, &mut assignments);
        assert_eq!(
            placed(&assignments),
            [(1, "b".into()), (2, "c".into()), (3, "d".into())]
        );
        let (e, m) = member("e", "n");
        members.insert(e.clone(), m);
        live.insert(e);
        settle(&services, &members, &live, &mut assignments);
        assert_eq!(placed(&assignments)[0], (0, "e".into()));
    }

    #[test]
    fn constraints_choose_the_members_and_a_label_change_clears_a_slot() {
        let mut members: BTreeMap<_, _> =
            [member("a", "n"), member("b", "s"), member("c", "n")].into();
        let services = global(&["node.labels.zone==n"]);
        let live: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        settle(&services, &members, &live, &mut assignments);
        assert_eq!(placed(&assignments), [(0, "a".into()), (1, "c".into())]);
        // "c" is relabelled: its slot is cleared, not moved; "b" relabelled in gets one.
        members.insert(id("c"), member("c", "s").1);
        members.insert(id("b"), member("b", "n").1);
        let p = plan(&services, &members, &live, &assignments, &lease());
        assert_eq!(p.remove.len(), 1, "{p:?}");
        assert_eq!(p.remove[0].slot, 1);
        apply(&mut assignments, &p);
        settle(&services, &members, &live, &mut assignments);
        assert_eq!(placed(&assignments), [(0, "a".into()), (2, "b".into())]);
    }

    #[test]
    fn a_spec_change_leaves_each_slot_on_its_own_member_to_the_rollout() {
        let members: BTreeMap<_, _> = [member("a", "n"), member("b", "n")].into();
        let mut services = global(&[]);
        let live: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        settle(&services, &members, &live, &mut assignments);
        let before = placed(&assignments);
        if let Some(s) = services.get_mut(&ServiceName::new("agent").expect("name")) {
            s.generation = 2;
        }
        // The slots stay at generation 1 on their members, down ones too: the rollout
        // (`super::rollout`) moves each on its member.
        let only_a: BTreeSet<_> = [id("a")].into();
        let p = plan(&services, &members, &only_a, &assignments, &lease());
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(placed(&assignments), before);
    }

    /// After a heal where both sides handed index 2 to different new members, the merged
    /// document names one of them; the keep rule decides by the running copies, and the
    /// member left without a slot gets a fresh index. A member holding two slots keeps the
    /// lowest.
    #[test]
    fn after_a_heal_each_member_ends_with_exactly_one_slot() {
        let members: BTreeMap<_, _> = [
            member("a", "n"),
            member("b", "n"),
            member("x", "n"),
            member("y", "n"),
        ]
        .into();
        let services = global(&[]);
        let live: BTreeSet<_> = members.keys().cloned().collect();
        let slot = |i: u32| SlotId {
            service: ServiceName::new("agent").expect("name"),
            slot: i,
        };
        let on = |n: &str| Assignment {
            node: id(n),
            epoch: Epoch(1),
            holder: id("a"),
            spec_generation: 1,
            displaced: vec![],
            gpus: vec![],
        };
        // The merge kept y's assignment of slot 2; x runs its own copy of 2, older.
        let mut assignments: BTreeMap<_, _> =
            [(slot(0), on("a")), (slot(1), on("b")), (slot(2), on("y"))].into();
        let copy = |n: &str, age_s: u64| crate::core::RunningCopy {
            node: id(n),
            generation: 1,
            age_ms: age_s * 1000,
            health: crate::core::TaskHealth::Healthy,
        };
        let mut observed = Observations {
            copies: [
                (slot(0), vec![copy("a", 60)]),
                (slot(1), vec![copy("b", 60)]),
                (slot(2), vec![copy("x", 50), copy("y", 20)]),
            ]
            .into(),
            reported: live.iter().filter(|n| **n != id("y")).cloned().collect(),
            ..Observations::default()
        };
        // Until y's report is in, the keep rule waits, and x (whose copy it may keep) gets
        // no new index.
        let waiting = plan_observed(
            &services,
            &members,
            &live,
            &assignments,
            &lease(),
            &observed,
        );
        assert!(waiting.is_empty(), "{waiting:?}");
        observed.reported = live.clone();
        let p = plan_observed(
            &services,
            &members,
            &live,
            &assignments,
            &lease(),
            &observed,
        );
        apply(&mut assignments, &p);
        // The keep rule gave slot 2 to x (the older copy; y's stops once x's is confirmed),
        // and y got index 3.
        assert_eq!(assignments[&slot(2)].node, id("x"));
        assert_eq!(assignments[&slot(2)].displaced, [id("y")]);
        assert_eq!(assignments[&slot(3)].node, id("y"));
        let per_node: BTreeSet<_> = assignments.values().map(|a| a.node.clone()).collect();
        assert_eq!((assignments.len(), per_node.len()), (4, 4));

        // A member holding two slots keeps the lowest.
        assignments.insert(slot(5), on("a"));
        let p = plan(&services, &members, &live, &assignments, &lease());
        assert_eq!(p.remove, [slot(5)]);
        assert!(p.put.is_empty(), "{p:?}");
    }

    /// A kept slot ranked below the lease whose node reports no copy of it (its fencing may
    /// refuse it) is written again under the lease, once; one that runs is left alone.
    #[test]
    fn a_kept_slot_its_node_does_not_run_is_written_under_the_lease() {
        let members: BTreeMap<_, _> = [member("a", "n"), member("b", "n")].into();
        let services = global(&[]);
        let live: BTreeSet<_> = members.keys().cloned().collect();
        let slot = |i: u32| SlotId {
            service: ServiceName::new("agent").expect("name"),
            slot: i,
        };
        let old = |n: &str| Assignment {
            node: id(n),
            epoch: Epoch(1),
            holder: id("b"),
            spec_generation: 1,
            displaced: vec![],
            gpus: vec![],
        };
        let mut assignments: BTreeMap<_, _> = [(slot(0), old("a")), (slot(1), old("b"))].into();
        let observed = Observations {
            copies: [(
                slot(0),
                vec![crate::core::RunningCopy {
                    node: id("a"),
                    generation: 1,
                    age_ms: 5_000,
                    health: crate::core::TaskHealth::Healthy,
                }],
            )]
            .into(),
            reported: live.clone(),
            ..Observations::default()
        };
        let p = plan_observed(
            &services,
            &members,
            &live,
            &assignments,
            &lease(),
            &observed,
        );
        assert_eq!(p.put.len(), 1, "{p:?}");
        assert_eq!((p.put[0].0.slot, p.put[0].1.epoch), (1, Epoch(2)));
        assert_eq!(p.put[0].1.node, id("b"));
        apply(&mut assignments, &p);
        let again = plan_observed(
            &services,
            &members,
            &live,
            &assignments,
            &lease(),
            &observed,
        );
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_member_that_cannot_hold_the_task_is_pending_by_name() {
        let members: BTreeMap<_, _> = [member("a", "n"), member("b", "n")].into();
        let mut services = global(&[]);
        if let Some(s) = services.get_mut(&ServiceName::new("agent").expect("name")) {
            s.spec.resources.memory_bytes = Some(2 << 30);
        }
        let live: BTreeSet<_> = members.keys().cloned().collect();
        let capacity: BTreeMap<_, _> = [
            (
                id("a"),
                Capacity {
                    nano_cpus: 1_000_000_000,
                    memory_bytes: 4 << 30,
                },
            ),
            (
                id("b"),
                Capacity {
                    nano_cpus: 1_000_000_000,
                    memory_bytes: 1 << 30,
                },
            ),
        ]
        .into();
        let p = super::super::scheduler::plan_with_capacity(
            &services,
            &members,
            &live,
            &BTreeMap::new(),
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert_eq!(p.put.len(), 1);
        assert_eq!(p.put[0].1.node, id("a"));
        assert_eq!(p.pending.len(), 1);
        assert_eq!(p.pending[0].1, "node node-b: no 2 GiB free memory");
    }

    #[test]
    fn replicas_are_refused_with_global_mode() {
        let mut spec = ServiceSpec {
            image: "busybox".into(),
            mode: ServiceMode::Global,
            ..Default::default()
        };
        assert!(spec.validate().is_ok());
        spec.replicas = 2;
        let err = spec.validate().expect_err("replicas with global");
        assert!(err.to_string().contains("--mode global"), "{err}");
    }
}
