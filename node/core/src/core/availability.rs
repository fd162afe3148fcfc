//! Node availability (`node update NAME --availability active|pause|drain`, as Docker Swarm
//! has it): the rules the scheduler ([`super::scheduler`]) calls, in one place.
//!
//! - `active`: the member takes new tasks and keeps its own.
//! - `pause`: it keeps the tasks it runs; nothing new is placed on it.
//! - `drain`: nothing new is placed on it, and its slots move to other members start-first:
//!   the new copy's node must report it running and healthy (or running long enough, without
//!   a health check) before the old copy stops — the make-before-break of a heal
//!   (`Assignment::displaced`). Each slot has its own replacement before its old copy stops,
//!   so a service never drops to zero running copies. Some slots stay
//!   ([`stays_on_drained`]): they are listed with the reason.
//!
//! Setting a member back to `active` moves nothing back by itself (Swarm's behaviour): it
//! takes new tasks again, and spread is restored only by the rebalancer, if on.
//!
//! Availability is separate from the admission state ([`MemberState`]): only an admitted
//! (`active`) member is ever eligible, whatever its availability.

use std::collections::BTreeMap;

use warren_crdt::{
    Assignment, Availability, Member, MemberState, NodeId, OnPartition, Service, SlotId,
};

/// Whether the scheduler may place a new task on `member`: admitted, and its availability
/// is `active`. Liveness is the caller's to check. The one predicate for "eligible for new
/// placements" (replicated and global services alike).
pub fn takes_new_tasks(member: &Member) -> bool {
    member.state == MemberState::Active && member.availability == Availability::Active
}

/// Why a slot of `service` stays on `member` although the member is drained, or `None` when
/// it moves (or the member is not drained): a service with `--on-partition wait` stays
/// (`on-partition wait`: it chose to wait for its node rather than run elsewhere), and so
/// does one mounting a Warren volume (`volume data`: the data lives on the node, and the
/// volume rule, [`super::volumes`], never runs it anywhere else).
pub fn stays_on_drained(service: &Service, member: &Member) -> Option<&'static str> {
    if member.availability != Availability::Drain {
        return None;
    }
    if service.spec.partition.on_partition == OnPartition::Wait {
        return Some("on-partition wait");
    }
    if service
        .spec
        .mounts
        .iter()
        .any(|m| m.kind == warren_crdt::MountKind::Volume)
    {
        return Some("volume data");
    }
    None
}

/// Whether a slot of `service` already on `member` may stay there as far as availability
/// goes: `active` and `pause` keep their tasks; `drain` keeps only those that
/// [`stays_on_drained`].
pub fn keeps_tasks(service: &Service, member: &Member) -> bool {
    match member.availability {
        Availability::Active | Availability::Pause => true,
        Availability::Drain => stays_on_drained(service, member).is_some(),
    }
}

/// The word for a member that takes no new tasks: `paused` or `drained`; `None` when it does.
pub fn unavailable_word(member: &Member) -> Option<&'static str> {
    match member.availability {
        Availability::Active => None,
        Availability::Pause => Some("paused"),
        Availability::Drain => Some("drained"),
    }
}

/// Words for a pending reason: the admitted members among `candidates` that `fits` would
/// accept but that are paused or drained, as `node b is paused` or `node b is paused, node c
/// is drained` (at most 3 named, then `and N more`); `None` when there is none.
pub fn unavailable_reason<'a>(
    candidates: impl IntoIterator<Item = &'a Member>,
    fits: impl Fn(&Member) -> bool,
) -> Option<String> {
    let words: Vec<String> = candidates
        .into_iter()
        .filter(|m| m.state == MemberState::Active && fits(m))
        .filter_map(|m| Some(format!("node {} is {}", m.name, unavailable_word(m)?)))
        .collect();
    if words.is_empty() {
        return None;
    }
    let mut text = words.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if words.len() > 3 {
        text.push_str(&format!(" and {} more", words.len() - 3));
    }
    Some(text)
}

/// The slots assigned to a drained member that stay there, each with the reason as
/// `service ps` and `node inspect` show it (`stays: on-partition wait`).
pub fn staying(
    services: &super::Services,
    members: &BTreeMap<NodeId, Member>,
    assignments: &BTreeMap<SlotId, Assignment>,
) -> BTreeMap<SlotId, String> {
    assignments
        .iter()
        .filter_map(|(slot, a)| {
            let service = super::service_wanting(services, slot)?;
            let why = stays_on_drained(service, members.get(&a.node)?)?;
            Some((slot.clone(), format!("stays: {why}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{ServiceName, ServiceSpec};

    fn member(name: &str, availability: Availability) -> Member {
        Member {
            id: NodeId(name.into()),
            name: name.into(),
            addrs: vec![],
            labels: Default::default(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: NodeId(name.into()),
            admitted_at: 0,
            state: MemberState::Active,
            availability,
        }
    }

    fn service(on_partition: OnPartition) -> Service {
        let name = ServiceName::new("web").expect("name");
        let mut spec = ServiceSpec {
            image: "img".into(),
            replicas: 1,
            ..Default::default()
        };
        spec.partition.on_partition = on_partition;
        Service {
            name,
            generation: 1,
            deleted: false,
            previous_spec: None,
            older_specs: Default::default(),
            rollout: None,
            spec,
        }
    }

    #[test]
    fn pause_keeps_drain_moves_but_wait_services_stay() {
        let reschedule = service(OnPartition::Reschedule);
        let wait = service(OnPartition::Wait);
        let active = member("a", Availability::Active);
        let paused = member("p", Availability::Pause);
        let drained = member("d", Availability::Drain);
        assert!(takes_new_tasks(&active));
        assert!(!takes_new_tasks(&paused) && !takes_new_tasks(&drained));
        let removed = Member {
            state: MemberState::Removed,
            ..active.clone()
        };
        assert!(!takes_new_tasks(&removed));
        assert!(keeps_tasks(&reschedule, &paused));
        assert!(!keeps_tasks(&reschedule, &drained));
        assert!(keeps_tasks(&wait, &drained));
        assert_eq!(stays_on_drained(&wait, &drained), Some("on-partition wait"));
        assert_eq!(stays_on_drained(&wait, &paused), None);
        assert_eq!(stays_on_drained(&reschedule, &drained), None);
        // A service on a Warren volume stays with its data; a host path does not pin it.
        let mut on_volume = service(OnPartition::Reschedule);
        on_volume.spec.mounts =
            vec![
                warren_crdt::Mount::parse("type=volume,source=data,target=/data")
                    .expect("a volume mount"),
            ];
        assert_eq!(stays_on_drained(&on_volume, &drained), Some("volume data"));
        assert!(keeps_tasks(&on_volume, &drained));
        let mut on_host = service(OnPartition::Reschedule);
        on_host.spec.mounts = vec![
            warren_crdt::Mount::parse("type=bind,source=/srv,target=/srv").expect("a bind mount"),
        ];
        assert_eq!(stays_on_drained(&on_host, &drained), None);
    }

    #[test]
    fn the_reason_names_paused_and_drained_members_that_would_fit() {
        let ms = [
            member("a", Availability::Active),
            member("b", Availability::Pause),
            member("c", Availability::Drain),
        ];
        assert_eq!(
            unavailable_reason(&ms, |_| true).as_deref(),
            Some("node b is paused, node c is drained")
        );
        assert_eq!(
            unavailable_reason(&ms, |m| m.name == "c").as_deref(),
            Some("node c is drained")
        );
        assert_eq!(unavailable_reason(&ms, |m| m.name == "a"), None);
        let many: Vec<Member> = (0..5)
            .map(|i| member(&format!("n{i}"), Availability::Pause))
            .collect();
        assert_eq!(
            unavailable_reason(&many, |_| true).as_deref(),
            Some("node n0 is paused, node n1 is paused, node n2 is paused and 2 more")
        );
    }

    /// The scheduler's side: pause places nothing new, drain moves each slot start-first
    /// (its old copy displaced), a wait service stays, and `active` again moves nothing back.
    mod scheduling {
        use std::collections::{BTreeMap, BTreeSet};

        use warren_crdt::{
            Assignment, Availability, Epoch, Lease, Member, NodeId, OnPartition, ServiceName,
            SlotId,
        };

        use super::{member, service};
        use crate::core::{plan, plan_observed, Observations, RunningCopy, Services, TaskHealth};

        fn id(s: &str) -> NodeId {
            NodeId(s.into())
        }

        fn lease() -> Lease {
            Lease {
                epoch: Epoch(2),
                holder: id("a"),
            }
        }

        fn members(paused: &str, drained: &str) -> BTreeMap<NodeId, Member> {
            ["a", "b", "c"]
                .iter()
                .map(|n| {
                    let availability = if *n == paused {
                        Availability::Pause
                    } else if *n == drained {
                        Availability::Drain
                    } else {
                        Availability::Active
                    };
                    (id(n), member(n, availability))
                })
                .collect()
        }

        fn services(replicas: u32, on_partition: OnPartition) -> Services {
            let mut s = service(on_partition);
            s.spec.replicas = replicas;
            Services::from(vec![(s.name.clone(), s)])
        }

        fn apply(assignments: &mut BTreeMap<SlotId, Assignment>, p: &crate::core::Plan) {
            p.apply(assignments);
        }

        /// Every assigned slot reported running healthy on its node.
        fn running(assignments: &BTreeMap<SlotId, Assignment>) -> Observations {
            let mut o = Observations {
                reported: [id("a"), id("b"), id("c")].into(),
                ..Observations::default()
            };
            for (slot, a) in assignments {
                o.copies.entry(slot.clone()).or_default().push(RunningCopy {
                    node: a.node.clone(),
                    generation: 1,
                    age_ms: 60_000,
                    health: TaskHealth::Healthy,
                });
            }
            o
        }

        #[test]
        fn pause_places_nothing_new_and_keeps_what_runs() {
            let all: BTreeSet<_> = [id("a"), id("b"), id("c")].into();
            let web = services(3, OnPartition::Reschedule);
            let mut assignments = BTreeMap::new();
            let p = plan(&web, &members("c", ""), &all, &assignments, &lease());
            apply(&mut assignments, &p);
            assert_eq!(assignments.len(), 3);
            assert!(assignments.values().all(|a| a.node != id("c")), "{p:?}");
            // All active, then "a" paused: nothing moves (it keeps its slots).
            let p = plan(&web, &members("", ""), &all, &assignments, &lease());
            assert!(p.is_empty(), "back to active moves nothing: {p:?}");
            let p = plan(&web, &members("a", ""), &all, &assignments, &lease());
            assert!(p.is_empty(), "paused keeps its slots: {p:?}");
        }

        #[test]
        fn drain_moves_each_slot_start_first_and_active_moves_nothing_back() {
            let all: BTreeSet<_> = [id("a"), id("b"), id("c")].into();
            let web = services(2, OnPartition::Reschedule);
            let mut assignments = BTreeMap::new();
            // Both replicas on "a" (b and c paused at placement time).
            let p = plan(&web, &members("b", "c"), &all, &assignments, &lease());
            apply(&mut assignments, &p);
            let on_a = assignments.values().filter(|a| a.node == id("a")).count();
            assert_eq!(on_a, 2, "{p:?}");
            // Drain "a": both slots move at once, each naming a's copy as displaced (its
            // own replacement first: make before break).
            let observed = running(&assignments);
            let p = plan_observed(
                &web,
                &members("", "a"),
                &all,
                &assignments,
                &lease(),
                &observed,
            );
            assert_eq!(p.put.len(), 2, "{p:?}");
            for (_, a) in &p.put {
                assert_ne!(a.node, id("a"));
                assert_eq!(a.displaced, vec![id("a")]);
            }
            assert!(p.remove.is_empty());
            apply(&mut assignments, &p);
            // While the old copies still run on "a", the moves stand.
            let mut observed = running(&assignments);
            for slot in assignments.keys() {
                observed
                    .copies
                    .entry(slot.clone())
                    .or_default()
                    .push(RunningCopy {
                        node: id("a"),
                        generation: 1,
                        age_ms: 120_000,
                        health: TaskHealth::Healthy,
                    });
            }
            let p = plan_observed(
                &web,
                &members("", "a"),
                &all,
                &assignments,
                &lease(),
                &observed,
            );
            assert!(p.is_empty(), "{p:?}");
            // "a" active again: nothing moves back (Swarm's behaviour).
            let observed = running(&assignments);
            let p = plan_observed(
                &web,
                &members("", ""),
                &all,
                &assignments,
                &lease(),
                &observed,
            );
            assert!(p.is_empty(), "{p:?}");
        }

        #[test]
        fn a_wait_service_stays_on_a_drained_node_and_says_so() {
            let all: BTreeSet<_> = [id("a"), id("b"), id("c")].into();
            let web = services(1, OnPartition::Wait);
            let mut assignments = BTreeMap::new();
            let p = plan(&web, &members("b", "c"), &all, &assignments, &lease());
            apply(&mut assignments, &p);
            let slot = SlotId {
                service: ServiceName::new("web").expect("name"),
                slot: 0,
            };
            assert_eq!(assignments[&slot].node, id("a"));
            let drained = members("", "a");
            let observed = running(&assignments);
            let p = plan_observed(&web, &drained, &all, &assignments, &lease(), &observed);
            assert!(p.is_empty(), "{p:?}");
            assert_eq!(
                super::super::staying(&web, &drained, &assignments),
                [(slot, "stays: on-partition wait".to_string())].into()
            );
            assert!(super::super::staying(&web, &members("", ""), &assignments).is_empty());
        }

        #[test]
        fn a_slot_only_a_paused_or_drained_node_could_take_says_so() {
            let all: BTreeSet<_> = [id("a"), id("b"), id("c")].into();
            let mut web = services(1, OnPartition::Reschedule);
            let name = ServiceName::new("web").expect("name");
            let mut s = web.get(&name).expect("web").clone();
            s.spec.placement.constraints = vec!["node.name==c".parse().expect("constraint")];
            web.insert(name, s);
            let p = plan(&web, &members("c", ""), &all, &BTreeMap::new(), &lease());
            assert_eq!(
                p.pending[0].1,
                "no node matches node.name==c (node c is paused)"
            );
            let p = plan(&web, &members("", "c"), &all, &BTreeMap::new(), &lease());
            assert_eq!(
                p.pending[0].1,
                "no node matches node.name==c (node c is drained)"
            );
            // Already on "c" when it is drained, with nowhere else to go: it keeps its node
            // (and its running copy) and the reason is given for it.
            let mut assignments = BTreeMap::new();
            let first = plan(&web, &members("", ""), &all, &assignments, &lease());
            apply(&mut assignments, &first);
            let observed = running(&assignments);
            let p = plan_observed(
                &web,
                &members("", "c"),
                &all,
                &assignments,
                &lease(),
                &observed,
            );
            assert!(p.is_empty(), "{p:?}");
            assert_eq!(
                p.pending[0].1,
                "no node matches node.name==c (node c is drained)"
            );
        }
    }
}
