//! GPU reservations (`--gpus N`, issue 16): the scheduler's rules for which GPUs of a node a
//! slot holds. Pure; called from the scheduler ([`super::plan_observed`]).
//!
//! - Each node reports its GPUs' device ids in its heartbeats ([`crate::system::Gpu::device_id`]:
//!   the UUID, which survives re-enumeration — a reboot or a GPU added can change the
//!   indexes, so an index written in an assignment could later name another GPU).
//! - A slot of a service with `gpus: N` goes only to a node whose report lists N GPUs that
//!   no other slot's assignment names; the holder writes the N ids it picked (the first free
//!   ones in report order: deterministic) into the assignment ([`Assignment::gpus`]), and
//!   the node's task gets exactly those devices. A slot that finds no such node is pending,
//!   `no node with 2 free GPUs`.
//! - A standing assignment keeps its GPUs while it names N distinct ids that its node's
//!   report lists (or the node's report is unknown or lists no GPU at all: a node not heard
//!   from yet, or an `nvidia-smi` that failed once, does not make every task move).
//! - **Two assignments naming one GPU** (two holders on two sides of a split each gave the
//!   same free GPU to a different slot, and the heal merged both): the assignment decided
//!   first keeps it — the lower `(epoch, holder)`, then the lower slot — and the later one
//!   is re-placed like any slot without a node (onto other free GPUs of the same node or
//!   another node; pending if there are none). Its task was started on a GPU another task
//!   uses, so it is the one to move: the earlier decision may have been running longer.
//! - GPUs are released when the slot is cleared or moves: what a node holds is recomputed
//!   from the assignments every round, never stored apart.

use std::collections::{BTreeMap, BTreeSet};

use warren_crdt::{Assignment, NodeId, Service, SlotId};

use super::scheduler::{service_wanting, Services};

/// Each node's GPU device ids, in the order its report lists them; a node missing here has
/// not reported (its GPUs are unknown: standing assignments there are trusted, no new slot
/// wanting GPUs goes there).
pub type NodeGpus = BTreeMap<NodeId, Vec<String>>;

/// `no node with 1 free GPU`, `no node with 2 free GPUs`: the pending reason of a slot no
/// node has enough free GPUs for.
pub fn pending_reason(want: u32) -> String {
    if want == 1 {
        "no node with 1 free GPU".to_string()
    } else {
        format!("no node with {want} free GPUs")
    }
}

/// Whether assignment `a` of a slot of `service` still holds valid GPUs on its node: none when
/// the service wants none; else as many distinct ids as it wants, all listed in the node's
/// report (or the report is unknown or empty: see the module doc).
pub fn valid(service: &Service, a: &Assignment, gpus: &NodeGpus) -> bool {
    let want = service.spec.gpus as usize;
    if want == 0 {
        return true;
    }
    let distinct: BTreeSet<&String> = a.gpus.iter().collect();
    if a.gpus.len() != want || distinct.len() != want {
        return false;
    }
    match gpus.get(&a.node) {
        None => true,
        Some(reported) if reported.is_empty() => true,
        Some(reported) => a.gpus.iter().all(|g| reported.contains(g)),
    }
}

/// The slots whose assignment names a GPU that an assignment decided before it (lower
/// `(epoch, holder)`, then lower slot) also names on the same node: each must be re-placed.
/// Only assignments of slots their service still wants count.
pub fn conflicted(
    services: &Services,
    assignments: &BTreeMap<SlotId, Assignment>,
) -> BTreeSet<SlotId> {
    let mut claims: Vec<(&Assignment, &SlotId)> = assignments
        .iter()
        .filter(|(slot, a)| !a.gpus.is_empty() && service_wanting(services, slot).is_some())
        .map(|(slot, a)| (a, slot))
        .collect();
    claims.sort_by(|(a, s), (b, t)| (a.rank(), *s).cmp(&(b.rank(), *t)));
    let mut taken: BTreeSet<(&NodeId, &String)> = BTreeSet::new();
    let mut out = BTreeSet::new();
    for (a, slot) in claims {
        if a.gpus.iter().any(|g| taken.contains(&(&a.node, g))) {
            out.insert(slot.clone());
        } else {
            taken.extend(a.gpus.iter().map(|g| (&a.node, g)));
        }
    }
    out
}

/// The GPUs held on each node during one scheduling round: those of the slots kept, then
/// those given to slots placed this round.
#[derive(Debug, Default)]
pub struct GpuBook {
    held: BTreeMap<NodeId, BTreeSet<String>>,
}

impl GpuBook {
    /// Marks `gpus` of `node` held.
    pub fn hold(&mut self, node: &NodeId, gpus: &[String]) {
        if !gpus.is_empty() {
            self.held
                .entry(node.clone())
                .or_default()
                .extend(gpus.iter().cloned());
        }
    }

    /// The GPUs of `node` its report lists and no slot holds, in report order.
    pub fn free<'a>(&self, gpus: &'a NodeGpus, node: &NodeId) -> Vec<&'a String> {
        let held = self.held.get(node);
        gpus.get(node)
            .into_iter()
            .flatten()
            .filter(|g| held.is_none_or(|h| !h.contains(*g)))
            .collect()
    }

    /// Whether `node` has `want` free GPUs (always, for `want` 0).
    pub fn fits(&self, gpus: &NodeGpus, node: &NodeId, want: u32) -> bool {
        want == 0 || self.free(gpus, node).len() >= want as usize
    }

    /// The first `want` free GPUs of `node`, now held; `None` (nothing held) when it has
    /// fewer. Empty for `want` 0.
    pub fn take(&mut self, gpus: &NodeGpus, node: &NodeId, want: u32) -> Option<Vec<String>> {
        if want == 0 {
            return Some(Vec::new());
        }
        let picked: Vec<String> = self
            .free(gpus, node)
            .into_iter()
            .take(want as usize)
            .cloned()
            .collect();
        if picked.len() < want as usize {
            return None;
        }
        self.hold(node, &picked);
        Some(picked)
    }
}

/// Which slot holds each GPU, by node and device id, from `assignments` (what `node inspect`
/// shows); of two slots naming one GPU (before the holder resolves it), the lower.
pub fn holders(
    assignments: &BTreeMap<SlotId, Assignment>,
) -> BTreeMap<NodeId, BTreeMap<String, SlotId>> {
    let mut out: BTreeMap<NodeId, BTreeMap<String, SlotId>> = BTreeMap::new();
    for (slot, a) in assignments.iter().filter(|(_, a)| !a.gpus.is_empty()) {
        let node = out.entry(a.node.clone()).or_default();
        for g in &a.gpus {
            node.entry(g.clone()).or_insert_with(|| slot.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::scheduler::{plan_observed, Observations, Plan};
    use warren_crdt::{Epoch, Lease, Member, MemberState, ServiceName, ServiceSpec};

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn members(names: &[&str]) -> BTreeMap<NodeId, Member> {
        names
            .iter()
            .map(|s| {
                (
                    id(s),
                    Member {
                        id: id(s),
                        name: (*s).into(),
                        addrs: vec![],
                        labels: Default::default(),
                        capabilities: Default::default(),
                        platform: Default::default(),
                        admitted_by: id(s),
                        admitted_at: 0,
                        state: MemberState::Active,
                        availability: Default::default(),
                    },
                )
            })
            .collect()
    }

    fn service(name: &str, replicas: u32, gpus: u32) -> (ServiceName, Service) {
        let n = ServiceName::new(name).expect("name");
        (
            n.clone(),
            Service {
                name: n,
                generation: 1,
                deleted: false,
                previous_spec: None,
                older_specs: Default::default(),
                rollout: None,
                spec: ServiceSpec {
                    image: "img".into(),
                    replicas,
                    gpus,
                    ..Default::default()
                },
            },
        )
    }

    fn slot(service: &str, slot: u32) -> SlotId {
        SlotId {
            service: ServiceName::new(service).expect("name"),
            slot,
        }
    }

    fn lease(epoch: u64, holder: &str) -> Lease {
        Lease {
            epoch: Epoch(epoch),
            holder: id(holder),
        }
    }

    /// "a" has two GPUs, "b" one, "c" reported none, "d" has not reported.
    fn observed() -> Observations {
        Observations {
            gpus: [
                (id("a"), vec!["GPU-a0".into(), "GPU-a1".into()]),
                (id("b"), vec!["GPU-b0".into()]),
                (id("c"), vec![]),
            ]
            .into(),
            ..Observations::default()
        }
    }

    fn run(services: &Services, assignments: &BTreeMap<SlotId, Assignment>, lease: &Lease) -> Plan {
        let members = members(&["a", "b", "c", "d"]);
        let live: BTreeSet<NodeId> = members.keys().cloned().collect();
        plan_observed(services, &members, &live, assignments, lease, &observed())
    }

    fn apply(assignments: &mut BTreeMap<SlotId, Assignment>, plan: &Plan) {
        plan.apply(assignments);
    }

    /// Every (node, GPU) the assignments name, with how many name it.
    fn claims(assignments: &BTreeMap<SlotId, Assignment>) -> BTreeMap<(NodeId, String), usize> {
        let mut out = BTreeMap::new();
        for a in assignments.values() {
            for g in &a.gpus {
                *out.entry((a.node.clone(), g.clone())).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn slots_get_distinct_reported_gpus_and_wait_when_none_are_free() {
        let services = Services::from(vec![service("train", 4, 1)]);
        let mut assignments = BTreeMap::new();
        let p = run(&services, &assignments, &lease(1, "a"));
        apply(&mut assignments, &p);
        // Three GPUs in the cluster: three slots, each on its own GPU, only on "a" and "b".
        assert_eq!(assignments.len(), 3, "{p:?}");
        let held = claims(&assignments);
        assert_eq!(held.len(), 3);
        assert!(held.values().all(|n| *n == 1));
        assert!(held.contains_key(&(id("a"), "GPU-a0".into())));
        assert!(held.contains_key(&(id("a"), "GPU-a1".into())));
        assert!(held.contains_key(&(id("b"), "GPU-b0".into())));
        assert_eq!(p.pending, vec![(slot("train", 3), pending_reason(1))]);
        assert_eq!(pending_reason(1), "no node with 1 free GPU");
        // The placed slots keep their GPUs: nothing to write.
        let again = run(&services, &assignments, &lease(1, "a"));
        assert!(again.put.is_empty() && again.remove.is_empty(), "{again:?}");

        // Two GPUs each: only "a" has two.
        let services = Services::from(vec![service("big", 2, 2)]);
        let p = run(&services, &BTreeMap::new(), &lease(1, "a"));
        assert_eq!(p.put.len(), 1, "{p:?}");
        assert_eq!(p.put[0].1.node, id("a"));
        assert_eq!(p.put[0].1.gpus, vec!["GPU-a0", "GPU-a1"]);
        assert_eq!(p.pending[0].1, "no node with 2 free GPUs");

        // A service without GPUs still goes anywhere, with none.
        let services = Services::from(vec![service("web", 4, 0)]);
        let p = run(&services, &BTreeMap::new(), &lease(1, "a"));
        assert_eq!(p.put.len(), 4);
        assert!(p.put.iter().all(|(_, a)| a.gpus.is_empty()));
    }

    #[test]
    fn gpus_are_released_when_their_slot_is_cleared() {
        let big = service("big", 1, 2);
        let small = service("small", 1, 1);
        let mut assignments = BTreeMap::new();
        let both = Services::from(vec![big.clone(), small.clone()]);
        let p = run(&both, &assignments, &lease(1, "a"));
        apply(&mut assignments, &p);
        // "big" took both of a's GPUs, "small" the one of "b".
        assert_eq!(assignments[&slot("big", 0)].node, id("a"));
        assert_eq!(assignments[&slot("small", 0)].gpus, vec!["GPU-b0"]);

        // "small" wants two more replicas: b is full, a is held by "big".
        let mut more = small.clone();
        more.1.spec.replicas = 2;
        let services = Services::from(vec![big.clone(), more.clone()]);
        let p = run(&services, &assignments, &lease(1, "a"));
        assert_eq!(p.pending, vec![(slot("small", 1), pending_reason(1))]);

        // "big" is deleted: its slot is removed and a's GPUs go to "small".
        let mut gone = big.clone();
        gone.1.deleted = true;
        let services = Services::from(vec![gone, more]);
        let p = run(&services, &assignments, &lease(1, "a"));
        assert_eq!(p.remove, vec![slot("big", 0)]);
        let placed = p
            .put
            .iter()
            .find(|(s, _)| *s == slot("small", 1))
            .expect("placed");
        assert_eq!(
            (&placed.1.node, &placed.1.gpus[..]),
            (&id("a"), &["GPU-a0".to_string()][..])
        );
    }

    #[test]
    fn two_slots_naming_one_gpu_after_a_heal_keep_the_first_decision() {
        let services = Services::from(vec![service("train", 2, 1)]);
        let on_a0 = |epoch, holder: &str| Assignment {
            node: id("a"),
            epoch: Epoch(epoch),
            holder: id(holder),
            spec_generation: 1,
            displaced: vec![],
            gpus: vec!["GPU-a0".into()],
        };
        // Two sides of a split each gave GPU-a0 to a different slot; slot 0's was decided
        // later (epoch 3 over epoch 2).
        let merged: BTreeMap<SlotId, Assignment> = [
            (slot("train", 0), on_a0(3, "b")),
            (slot("train", 1), on_a0(2, "c")),
        ]
        .into();
        assert_eq!(conflicted(&services, &merged), [slot("train", 0)].into());
        let p = run(&services, &merged, &lease(4, "a"));
        let mut after = merged.clone();
        apply(&mut after, &p);
        // Slot 1 keeps GPU-a0 untouched; slot 0 is re-placed on a free GPU.
        assert!(p.put.iter().all(|(s, _)| *s == slot("train", 0)), "{p:?}");
        assert_eq!(after[&slot("train", 1)], merged[&slot("train", 1)]);
        assert_ne!(after[&slot("train", 0)].gpus, vec!["GPU-a0".to_string()]);
        assert!(claims(&after).values().all(|n| *n == 1), "{after:?}");

        // Equal ranks: the lower slot keeps it.
        let tied: BTreeMap<SlotId, Assignment> = [
            (slot("train", 0), on_a0(2, "b")),
            (slot("train", 1), on_a0(2, "b")),
        ]
        .into();
        assert_eq!(conflicted(&services, &tied), [slot("train", 1)].into());

        // No free GPU anywhere for the loser: it is cleared and waits with the reason.
        let services = Services::from(vec![service("train", 2, 2)]);
        let both = |epoch, holder: &str| Assignment {
            gpus: vec!["GPU-a0".into(), "GPU-a1".into()],
            ..on_a0(epoch, holder)
        };
        let merged: BTreeMap<SlotId, Assignment> = [
            (slot("train", 0), both(2, "b")),
            (slot("train", 1), both(3, "c")),
        ]
        .into();
        let p = run(&services, &merged, &lease(4, "a"));
        assert_eq!(p.remove, vec![slot("train", 1)], "{p:?}");
        assert!(p.put.is_empty());
        assert_eq!(p.pending, vec![(slot("train", 1), pending_reason(2))]);
    }

    #[test]
    fn a_copy_the_heal_keeps_on_another_node_gets_free_gpus_there() {
        use crate::core::scheduler::RunningCopy;
        use crate::core::TaskHealth;
        let services = Services::from(vec![service("train", 1, 1)]);
        let standing: BTreeMap<SlotId, Assignment> = [(
            slot("train", 0),
            Assignment {
                node: id("a"),
                epoch: Epoch(1),
                holder: id("a"),
                spec_generation: 1,
                displaced: vec![],
                gpus: vec!["GPU-a0".into()],
            },
        )]
        .into();
        let copy = |node: &str, age_ms| RunningCopy {
            node: id(node),
            generation: 1,
            age_ms,
            health: TaskHealth::None,
        };
        // Both sides of a split ran the slot; b's copy is older and is kept.
        let mut seen = observed();
        seen.copies = [(slot("train", 0), vec![copy("a", 5_000), copy("b", 60_000)])].into();
        seen.reported = [id("a"), id("b")].into();
        let members = members(&["a", "b", "c", "d"]);
        let live: BTreeSet<NodeId> = members.keys().cloned().collect();
        let p = plan_observed(&services, &members, &live, &standing, &lease(2, "a"), &seen);
        assert_eq!(p.put.len(), 1, "{p:?}");
        let kept = &p.put[0].1;
        assert_eq!((&kept.node, &kept.displaced), (&id("b"), &vec![id("a")]));
        assert_eq!(kept.gpus, vec!["GPU-b0"], "b's free GPU, not a's");
    }

    #[test]
    fn an_assignment_keeps_its_gpus_only_while_its_node_lists_them() {
        let (name, train) = service("train", 1, 1);
        let standing = |node: &str, gpus: &[&str]| Assignment {
            node: id(node),
            epoch: Epoch(1),
            holder: id("a"),
            spec_generation: 1,
            displaced: vec![],
            gpus: gpus.iter().map(|g| g.to_string()).collect(),
        };
        let known = observed().gpus;
        assert!(valid(&train, &standing("a", &["GPU-a1"]), &known));
        // The node lists other GPUs now (one was removed): re-placed.
        assert!(!valid(&train, &standing("a", &["GPU-zz"]), &known));
        // Not the count the spec wants, or one GPU twice.
        assert!(!valid(&train, &standing("a", &[]), &known));
        assert!(!valid(
            &train,
            &standing("a", &["GPU-a0", "GPU-a1"]),
            &known
        ));
        let mut two = train.clone();
        two.spec.gpus = 2;
        assert!(!valid(&two, &standing("a", &["GPU-a0", "GPU-a0"]), &known));
        // A node not heard from, or whose report lists no GPU (nvidia-smi failed once),
        // keeps what it holds.
        assert!(valid(&train, &standing("d", &["GPU-d0"]), &known));
        assert!(valid(&train, &standing("c", &["GPU-c0"]), &known));

        let services = Services::from(vec![(name, train)]);
        let gone: BTreeMap<SlotId, Assignment> =
            [(slot("train", 0), standing("a", &["GPU-zz"]))].into();
        let p = run(&services, &gone, &lease(1, "a"));
        assert_eq!(p.put.len(), 1, "{p:?}");
        assert_eq!(p.put[0].1.node, id("a"));
        assert_eq!(p.put[0].1.gpus, vec!["GPU-a0"]);

        assert_eq!(
            holders(&[(slot("train", 0), standing("a", &["GPU-a1"]))].into()),
            [(id("a"), [("GPU-a1".to_string(), slot("train", 0))].into())].into()
        );
    }
}
