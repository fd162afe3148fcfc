//! The invariants of DESIGN §7 that the simulator (`warren-simulations`) and the testnet
//! (`warren-testnet`) both check, as pure functions over what each observes. The simulator
//! reads its nodes' machines and simulated containers; the testnet reads `cluster status`,
//! `service ls` and the engine's listing. Both hand the same plain observations here, so a
//! rule is judged by one implementation.
//!
//! - [`one_lease`]: invariant 3, lease safety within a component;
//! - [`replicas_exact`]: invariant 5, replica correctness;
//! - [`duplicates`] and [`unchanged_heal_churn`]: invariant 6a, a heal's churn for a
//!   service nobody changed during the split;
//! - [`global_exact`]: a global service runs once on every eligible member and never twice on
//!   one node;
//! - [`rollout_safe`]: a service's rollout (issue 15): never two at once, at most
//!   `parallelism` slots below healthy for start-first, and a paused rollout's slots not
//!   updated keep their generation.
//!
//! Checks that only one side can make (the simulator's fencing and keep-rule checks, which
//! need every replica's document; the testnet's engine samples) stay with that side.
//!
//! ```
//! use warren_core::invariants::{one_lease, LeaseSeen, LeaseViolation};
//!
//! // Nodes 0 and 1 follow the lease of node 1, epoch 4; node 1 holds it.
//! let seen = [
//!     LeaseSeen { node: 0, lease: Some((1, 4)), holds: false },
//!     LeaseSeen { node: 1, lease: Some((1, 4)), holds: true },
//! ];
//! assert_eq!(one_lease(&seen), Ok((1, 4)));
//!
//! // Node 0 still believes it holds an older lease: two holders.
//! let split = [
//!     LeaseSeen { node: 0, lease: Some((0, 3)), holds: true },
//!     LeaseSeen { node: 1, lease: Some((1, 4)), holds: true },
//! ];
//! assert_eq!(one_lease(&split), Err(LeaseViolation::Holders { holders: vec![0, 1] }));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};

/// One node's lease, as observed: what invariant 3 is judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSeen<N, L> {
    /// The node.
    pub node: N,
    /// The lease it follows or holds; `None` when it has none (vacant, or claiming).
    pub lease: Option<L>,
    /// Whether it believes it holds the lease (it schedules as the holder). An observer that
    /// sees only the lease passes whether the lease's holder is this node.
    pub holds: bool,
}

/// Why a component breaks invariant 3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseViolation<N: Debug, L: Debug> {
    /// Not exactly one node of the component believes it holds the lease.
    #[error("{} nodes believe they hold the lease (want 1): {holders:?}", holders.len())]
    Holders {
        /// The nodes that believe they hold it.
        holders: Vec<N>,
    },
    /// The nodes do not all follow one lease (some follow none, or another).
    #[error("nodes follow {count} different leases: {seen:?}")]
    Differ {
        /// How many different leases (no lease counts as one).
        count: usize,
        /// Each node and the lease it follows.
        seen: Vec<(N, Option<L>)>,
    },
}

/// How many different values `all` holds (by equality: leases need not be ordered).
fn distinct<'a, L: PartialEq + 'a>(all: impl Iterator<Item = &'a Option<L>>) -> usize {
    let mut kinds: Vec<&Option<L>> = Vec::new();
    for l in all {
        if !kinds.contains(&l) {
            kinds.push(l);
        }
    }
    kinds.len()
}

/// Invariant 3 (DESIGN §7), lease safety within a component: of the nodes of one connected
/// component, exactly one believes it holds the lease and every node follows that same lease.
/// Returns the lease.
///
/// `seen` holds one entry per node of the component. An empty component has no holder.
pub fn one_lease<N, L>(seen: &[LeaseSeen<N, L>]) -> Result<L, LeaseViolation<N, L>>
where
    N: Clone + Debug,
    L: Clone + PartialEq + Debug,
{
    let holders: Vec<N> = seen
        .iter()
        .filter(|s| s.holds)
        .map(|s| s.node.clone())
        .collect();
    if holders.len() != 1 {
        return Err(LeaseViolation::Holders { holders });
    }
    let first = seen.first().and_then(|s| s.lease.as_ref());
    match first {
        Some(lease) if seen.iter().all(|s| s.lease.as_ref() == Some(lease)) => Ok(lease.clone()),
        _ => Err(LeaseViolation::Differ {
            count: distinct(seen.iter().map(|s| &s.lease)),
            seen: seen
                .iter()
                .map(|s| (s.node.clone(), s.lease.clone()))
                .collect(),
        }),
    }
}

/// One running copy of a slot, as observed: what invariant 5 is judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningCopy<S> {
    /// Its service.
    pub service: S,
    /// Its slot.
    pub slot: u32,
    /// Whether it runs the service's current spec (its generation). An observer that cannot
    /// tell passes `true`.
    pub current: bool,
}

/// Why the running copies break invariant 5.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaViolation<S: Display> {
    /// A copy runs for a slot no live service wants (unknown or removed service, slot beyond
    /// its replicas, or an older spec).
    #[error("{service}.{slot} runs but is not desired")]
    NotDesired {
        /// The service.
        service: S,
        /// The slot.
        slot: u32,
    },
    /// A slot runs more than once.
    #[error("{service}.{slot} runs {copies} times")]
    Duplicated {
        /// The service.
        service: S,
        /// The slot.
        slot: u32,
        /// How many running copies.
        copies: usize,
    },
    /// A service runs fewer slots than its replicas.
    #[error("service {service} runs {running} of {replicas} replicas")]
    Missing {
        /// The service.
        service: S,
        /// How many of its slots run.
        running: usize,
        /// How many it wants.
        replicas: u32,
    },
}

/// Invariant 5 (DESIGN §7), replica correctness: given each live service's replica count
/// (`desired`: service → replicas) and every running copy, each slot `0..replicas` of each
/// service runs exactly once, on its current spec, and nothing else runs. Checked in that
/// order: a copy nobody wants, then a slot running twice, then a service short of slots.
pub fn replicas_exact<S>(
    desired: &BTreeMap<S, u32>,
    running: impl IntoIterator<Item = RunningCopy<S>>,
) -> Result<(), ReplicaViolation<S>>
where
    S: Ord + Clone + Display,
{
    let mut copies: BTreeMap<(S, u32), usize> = BTreeMap::new();
    for c in running {
        let wanted = c.current && desired.get(&c.service).is_some_and(|&r| c.slot < r);
        if !wanted {
            return Err(ReplicaViolation::NotDesired {
                service: c.service,
                slot: c.slot,
            });
        }
        *copies.entry((c.service, c.slot)).or_default() += 1;
    }
    if let Some(((service, slot), &k)) = copies.iter().find(|(_, k)| **k > 1) {
        return Err(ReplicaViolation::Duplicated {
            service: service.clone(),
            slot: *slot,
            copies: k,
        });
    }
    for (service, &replicas) in desired {
        let have = copies.keys().filter(|(s, _)| s == service).count();
        if have != replicas as usize {
            return Err(ReplicaViolation::Missing {
                service: service.clone(),
                running: have,
                replicas,
            });
        }
    }
    Ok(())
}

/// The duplicates among running copies, per service: for each slot with `k` running copies,
/// `k − 1`. What a heal may stop of a service nobody changed during the split (invariant 6a).
/// Services with no duplicate are listed with 0.
pub fn duplicates<S: Ord + Clone>(running: impl IntoIterator<Item = (S, u32)>) -> BTreeMap<S, u64> {
    let mut per_slot: BTreeMap<(S, u32), u64> = BTreeMap::new();
    for slot in running {
        *per_slot.entry(slot).or_default() += 1;
    }
    let mut out: BTreeMap<S, u64> = BTreeMap::new();
    for ((service, _), k) in per_slot {
        *out.entry(service).or_default() += k - 1;
    }
    out
}

/// Why a heal broke invariant 6a for a service nobody changed during the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{starts} starts and {stops} stops for {duplicates} duplicates (want no start, no more stops than duplicates)")]
pub struct HealChurnViolation {
    /// Containers the heal started.
    pub starts: u64,
    /// Containers the heal stopped.
    pub stops: u64,
    /// Running copies beyond one per slot at the heal ([`duplicates`]).
    pub duplicates: u64,
}

/// Invariant 6a (DESIGN §5 and §7), the heal's churn for a service nobody changed during the
/// split: the heal starts nothing and stops at most the duplicates it found.
pub fn unchanged_heal_churn(
    starts: u64,
    stops: u64,
    duplicates: u64,
) -> Result<(), HealChurnViolation> {
    if starts > 0 || stops > duplicates {
        return Err(HealChurnViolation {
            starts,
            stops,
            duplicates,
        });
    }
    Ok(())
}

/// Why the running copies of global services break [`global_exact`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GlobalViolation<S: Display, N: Debug> {
    /// A node runs more than one task of a global service.
    #[error("global service {service} runs {copies} tasks on node {node:?}")]
    Twice {
        /// The service.
        service: S,
        /// The node.
        node: N,
        /// How many running tasks of the service it has.
        copies: usize,
    },
    /// A node runs a task of a global service it is not eligible for (or of no known global
    /// service).
    #[error("global service {service} runs on node {node:?}, which is not eligible for it")]
    Ineligible {
        /// The service.
        service: S,
        /// The node.
        node: N,
    },
    /// An eligible node runs no task of a global service.
    #[error("global service {service} runs no task on eligible node {node:?}")]
    Missing {
        /// The service.
        service: S,
        /// The node.
        node: N,
    },
}

/// Global services once settled (issue 16): given, per live global service, the nodes
/// eligible for it that are up (`eligible`: service → nodes) and every running copy of a
/// global service's current spec as (service, node), each eligible node runs exactly one
/// task of each service and no other node runs any. Checked in that order: a node running
/// one twice, then a copy on a node not eligible, then an eligible node without one.
pub fn global_exact<S, N>(
    eligible: &BTreeMap<S, BTreeSet<N>>,
    running: impl IntoIterator<Item = (S, N)>,
) -> Result<(), GlobalViolation<S, N>>
where
    S: Ord + Clone + Display,
    N: Ord + Clone + Debug,
{
    let mut per_node: BTreeMap<(S, N), usize> = BTreeMap::new();
    for copy in running {
        *per_node.entry(copy).or_default() += 1;
    }
    if let Some(((service, node), &copies)) = per_node.iter().find(|(_, k)| **k > 1) {
        return Err(GlobalViolation::Twice {
            service: service.clone(),
            node: node.clone(),
            copies,
        });
    }
    for (service, node) in per_node.keys() {
        if !eligible.get(service).is_some_and(|e| e.contains(node)) {
            return Err(GlobalViolation::Ineligible {
                service: service.clone(),
                node: node.clone(),
            });
        }
    }
    for (service, nodes) in eligible {
        for node in nodes {
            if !per_node.contains_key(&(service.clone(), node.clone())) {
                return Err(GlobalViolation::Missing {
                    service: service.clone(),
                    node: node.clone(),
                });
            }
        }
    }
    Ok(())
}

/// One slot of a service during a rollout, as observed: what [`rollout_safe`] is judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSlot {
    /// The slot.
    pub slot: u32,
    /// The generation its assignment names.
    pub assigned: u64,
    /// The generations of its running copies that are healthy (or have no health check),
    /// on any node.
    pub healthy: Vec<u64>,
}

/// Why a service's rollout breaks the rollout invariants (issue 15).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutViolation {
    /// A slot is assigned a generation newer than the service's, or the rollout record
    /// targets another generation than the service's: two rollouts at once.
    #[error("two rollouts: slot {slot} assigned generation {assigned}, service at {current}")]
    TwoRollouts {
        /// The slot.
        slot: u32,
        /// The generation it is assigned.
        assigned: u64,
        /// The service's generation.
        current: u64,
    },
    /// More slots than the parallelism have no healthy running copy during a start-first
    /// rollout.
    #[error("start-first: {below} slots below healthy (parallelism {parallelism})")]
    BelowHealthy {
        /// How many slots have no healthy copy.
        below: usize,
        /// The rollout's parallelism.
        parallelism: u32,
    },
    /// A paused (or awaiting-promotion) rollout's slot not updated does not run its
    /// previous generation.
    #[error("paused: slot {slot} (generation {assigned}) does not run its previous generation")]
    PreviousLost {
        /// The slot.
        slot: u32,
        /// The generation it is assigned.
        assigned: u64,
    },
}

/// The rollout invariants for one service (issue 15), given its generation `current`, its
/// rollout's target `to_generation`, whether the rollout is stopped (`paused`: paused or
/// awaiting promotion), its order (`start_first`) and `parallelism` (0: all), and its slots
/// once settled (`slots`: assignments and the healthy running copies):
///
/// - never two rollouts: no slot is assigned a generation newer than `current`, and the
///   rollout targets `current`;
/// - start-first: at most `parallelism` slots have no healthy running copy;
/// - a paused rollout leaves every slot not updated running its (previous) generation.
pub fn rollout_safe(
    current: u64,
    to_generation: u64,
    paused: bool,
    start_first: bool,
    parallelism: u32,
    slots: &[RolloutSlot],
) -> Result<(), RolloutViolation> {
    if let Some(s) = slots.iter().find(|s| s.assigned > current) {
        return Err(RolloutViolation::TwoRollouts {
            slot: s.slot,
            assigned: s.assigned,
            current,
        });
    }
    if to_generation != current {
        return Err(RolloutViolation::TwoRollouts {
            slot: 0,
            assigned: to_generation,
            current,
        });
    }
    if start_first && parallelism > 0 {
        let below = slots.iter().filter(|s| s.healthy.is_empty()).count();
        if below > parallelism as usize {
            return Err(RolloutViolation::BelowHealthy { below, parallelism });
        }
    }
    if paused {
        if let Some(s) = slots
            .iter()
            .find(|s| s.assigned < to_generation && !s.healthy.contains(&s.assigned))
        {
            return Err(RolloutViolation::PreviousLost {
                slot: s.slot,
                assigned: s.assigned,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_exact_wants_one_task_per_eligible_node() {
        let eligible: BTreeMap<&str, BTreeSet<u8>> = [("web", [0, 1].into())].into();
        assert_eq!(global_exact(&eligible, [("web", 0), ("web", 1)]), Ok(()));
        assert_eq!(
            global_exact(&eligible, [("web", 0), ("web", 1), ("web", 1)]),
            Err(GlobalViolation::Twice {
                service: "web",
                node: 1,
                copies: 2
            })
        );
        assert_eq!(
            global_exact(&eligible, [("web", 0), ("web", 1), ("web", 2)]),
            Err(GlobalViolation::Ineligible {
                service: "web",
                node: 2
            })
        );
        assert_eq!(
            global_exact(&eligible, [("web", 0)]),
            Err(GlobalViolation::Missing {
                service: "web",
                node: 1
            })
        );
    }

    fn seen(node: u8, lease: Option<(u8, u64)>, holds: bool) -> LeaseSeen<u8, (u8, u64)> {
        LeaseSeen { node, lease, holds }
    }

    #[test]
    fn one_holder_and_one_lease_pass() {
        let c = [
            seen(0, Some((2, 5)), false),
            seen(1, Some((2, 5)), false),
            seen(2, Some((2, 5)), true),
        ];
        assert_eq!(one_lease(&c), Ok((2, 5)));
    }

    #[test]
    fn no_holder_or_two_holders_fail() {
        let none = [seen(0, Some((2, 5)), false), seen(1, None, false)];
        assert_eq!(
            one_lease(&none),
            Err(LeaseViolation::Holders { holders: vec![] })
        );
        let two = [seen(0, Some((0, 5)), true), seen(1, Some((1, 5)), true)];
        let err = one_lease(&two).expect_err("two holders");
        assert_eq!(
            err,
            LeaseViolation::Holders {
                holders: vec![0, 1]
            }
        );
        assert_eq!(
            err.to_string(),
            "2 nodes believe they hold the lease (want 1): [0, 1]"
        );
        assert!(
            one_lease::<u8, (u8, u64)>(&[]).is_err(),
            "no node, no holder"
        );
    }

    #[test]
    fn a_node_on_another_lease_or_none_fails() {
        let other_epoch = [seen(0, Some((1, 4)), false), seen(1, Some((1, 5)), true)];
        let err = one_lease(&other_epoch).expect_err("two leases");
        assert!(
            err.to_string()
                .starts_with("nodes follow 2 different leases"),
            "{err}"
        );
        let claiming = [seen(0, None, false), seen(1, Some((1, 5)), true)];
        assert!(matches!(
            one_lease(&claiming),
            Err(LeaseViolation::Differ { .. })
        ));
    }

    fn copy(service: &str, slot: u32) -> RunningCopy<String> {
        RunningCopy {
            service: service.into(),
            slot,
            current: true,
        }
    }

    fn want(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(s, r)| (s.to_string(), *r)).collect()
    }

    #[test]
    fn each_slot_once_passes() {
        let desired = want(&[("web", 2), ("idle", 0)]);
        assert_eq!(
            replicas_exact(&desired, [copy("web", 1), copy("web", 0)]),
            Ok(())
        );
    }

    #[test]
    fn a_copy_nobody_wants_fails() {
        let desired = want(&[("web", 2)]);
        for (stray, what) in [
            (copy("web", 2), "slot beyond the replicas"),
            (copy("gone", 0), "unknown service"),
            (
                RunningCopy {
                    current: false,
                    ..copy("web", 0)
                },
                "older spec",
            ),
        ] {
            let err = replicas_exact(&desired, [copy("web", 0), copy("web", 1), stray]);
            assert!(
                matches!(err, Err(ReplicaViolation::NotDesired { .. })),
                "{what}: {err:?}"
            );
        }
    }

    #[test]
    fn a_slot_twice_or_a_slot_missing_fails() {
        let desired = want(&[("web", 2)]);
        let twice = replicas_exact(&desired, [copy("web", 0), copy("web", 1), copy("web", 1)]);
        assert_eq!(
            twice.map_err(|e| e.to_string()),
            Err("web.1 runs 2 times".to_string())
        );
        let missing = replicas_exact(&desired, [copy("web", 0)]);
        assert_eq!(
            missing,
            Err(ReplicaViolation::Missing {
                service: "web".into(),
                running: 1,
                replicas: 2
            })
        );
    }

    #[test]
    fn duplicates_count_copies_beyond_one_per_slot() {
        let d = duplicates([("a", 0), ("a", 0), ("a", 0), ("a", 1), ("b", 0), ("b", 0)]);
        assert_eq!(d, BTreeMap::from([("a", 2), ("b", 1)]));
        assert_eq!(duplicates([("c", 3)]), BTreeMap::from([("c", 0)]));
    }

    #[test]
    fn an_unchanged_service_may_only_lose_its_duplicates() {
        assert_eq!(unchanged_heal_churn(0, 2, 2), Ok(()));
        assert_eq!(unchanged_heal_churn(0, 0, 3), Ok(()));
        assert!(unchanged_heal_churn(1, 0, 0).is_err(), "a start");
        assert!(
            unchanged_heal_churn(0, 3, 2).is_err(),
            "a stop beyond the duplicates"
        );
    }

    #[test]
    fn rollout_safe_judges_two_rollouts_start_first_and_pauses() {
        let slot = |slot, assigned, healthy: &[u64]| RolloutSlot {
            slot,
            assigned,
            healthy: healthy.to_vec(),
        };
        // Mid-rollout, start-first, parallelism 1: slot 0 moved, its new copy starting and
        // its old one still healthy.
        let mid = [slot(0, 2, &[1]), slot(1, 1, &[1]), slot(2, 1, &[1])];
        assert_eq!(rollout_safe(2, 2, false, true, 1, &mid), Ok(()));
        let two_down = [slot(0, 2, &[]), slot(1, 2, &[]), slot(2, 1, &[1])];
        assert_eq!(
            rollout_safe(2, 2, false, true, 1, &two_down),
            Err(RolloutViolation::BelowHealthy {
                below: 2,
                parallelism: 1
            })
        );
        assert_eq!(
            rollout_safe(2, 2, false, false, 1, &two_down),
            Ok(()),
            "stop-first"
        );
        assert!(matches!(
            rollout_safe(2, 2, false, true, 1, &[slot(0, 3, &[3])]),
            Err(RolloutViolation::TwoRollouts { .. })
        ));
        assert!(matches!(
            rollout_safe(3, 2, false, true, 1, &mid),
            Err(RolloutViolation::TwoRollouts { .. })
        ));
        // Paused: the slots not updated keep their generation.
        let paused = [slot(0, 2, &[]), slot(1, 1, &[1]), slot(2, 1, &[1])];
        assert_eq!(rollout_safe(2, 2, true, false, 1, &paused), Ok(()));
        let lost = [slot(0, 2, &[]), slot(1, 1, &[1]), slot(2, 1, &[])];
        assert_eq!(
            rollout_safe(2, 2, true, false, 1, &lost),
            Err(RolloutViolation::PreviousLost {
                slot: 2,
                assigned: 1
            })
        );
    }
}
