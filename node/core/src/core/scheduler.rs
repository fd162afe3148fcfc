//! The scheduler: a pure function from (services, members, liveness, assignments, lease) to the
//! assignments to write and to remove (DESIGN §5). Only the lease holder runs it.
//!
//! Placement rules, in the order they apply to a slot that needs a node (Docker Swarm's
//! syntax and semantics; the matching rule is [`crate::placement`]'s):
//!
//! 1. **Eligible**: an active member that is live here, its availability `active`
//!    ([`availability::takes_new_tasks`]).
//! 2. **Constraints** (`spec.placement.constraints`): the member's record satisfies every
//!    one (`node.name`, `node.id`, `node.labels.KEY`, `node.arch`, `node.os`,
//!    `node.capabilities`, with `==` or `!=`; a missing label or an unknown platform is no
//!    value: `==` fails, `!=` holds); and where the platforms of the service's image are
//!    known in full, the member's OS and arch are one of them ([`super::image_platform`]).
//! 3. **Cap** (`max_replicas_per_node`): the member holds fewer slots of the service.
//! 4. **Reservations**: its capacity minus what its slots reserve holds the service's
//!    `--cpus` and `--memory`, and it reports `--gpus` GPUs no other slot holds (the slot's
//!    assignment names the ones it gets, [`super::gpus`]); a member whose task failed there
//!    is avoided while another is eligible.
//! 5. **Order**: a member already running a copy of the slot; then, for each spread
//!    preference in turn, the member whose label value (members lacking the label form one
//!    more value) holds the fewest of the service's replicas; then the fewest slots of the
//!    service, the fewest slots overall, the lowest id.
//!
//! A slot keeps its node while the node is eligible (or paused, or drained with a reason to
//! stay: [`availability::keeps_tasks`]; or waited for by the partition policy), the
//! assignment is of the current generation, the node still satisfies the constraints (a
//! label change re-places the slot, as Swarm's constraint enforcer does) and the cap holds
//! (lowest slots first). A slot no member can take is pending with the reason
//! ([`Plan::pending`]): `no live member to run it`, `no node matches C1 and C2` (the
//! constraints up to the one that left no member), `max-replicas-per-node N reached on every
//! matching node (M)`, `image I is linux/amd64 only (node.arch=arm64)`, `no node with N free
//! GPUs`, or the reservation that does not fit; an assignment left on a member
//! the constraints exclude or beyond the cap is then cleared.
//!
//! A global service (`--mode global`) is placed by [`super::global`]'s rules instead: one
//! slot per eligible member, handed out by index, never moved.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use warren_crdt::{
    Assignment, Constraint, Lease, Member, MemberState, NodeId, OnPartition, Service, ServiceMode,
    ServiceName, SlotId, SpreadPreference,
};

use super::availability;
use super::candidates::{Candidates, Fit, GroupPath};
use super::gpus::{self, GpuBook, NodeGpus};
use super::image_platform::{self, ImagePlatform};
use super::{volumes, RuleBreak, TaskHealth};
use crate::placement;

/// The services a plan reads, tombstones included, by name: a persistent map (`imbl`), so
/// that a view and the snapshots taken of it share one table.
pub type Services = imbl::OrdMap<ServiceName, Service>;

/// The live service that wants `slot`: not deleted, and the slot below its replica count
/// (any slot of a global service, [`warren_crdt::ServiceSpec::wants_slot`]). `None` for a
/// slot of a deleted service or one a scale down left beyond the count.
pub fn service_wanting<'a>(services: &'a Services, slot: &SlotId) -> Option<&'a Service> {
    services
        .get(&slot.service)
        .filter(|s| !s.deleted && s.spec.wants_slot(slot.slot))
}

/// What a node offers to reservations: its CPUs and memory, read from the system and
/// reported in its heartbeats (soft state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capacity {
    /// CPUs in billionths (2 CPUs = 2,000,000,000), as Docker's `NanoCpus`.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// One scheduling round: assignments to write and slots to clear, and why the slots that got
/// no node are pending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// New or moved assignments, each made under the holder's lease.
    pub put: Vec<(SlotId, Assignment)>,
    /// Slots of deleted services or beyond the replica count.
    pub remove: Vec<SlotId>,
    /// Slots left without a node this round, with the reason in words (e.g. `no node with
    /// 2 GiB free memory`). Nothing is written for them.
    pub pending: Vec<(SlotId, String)>,
}

impl Plan {
    /// Applies the plan to `assignments` as a document write would: removals, then puts
    /// (the tests' model of the holder's write).
    #[cfg(test)]
    pub(crate) fn apply(&self, assignments: &mut BTreeMap<SlotId, Assignment>) {
        for slot in &self.remove {
            assignments.remove(slot);
        }
        for (slot, a) in &self.put {
            assignments.insert(slot.clone(), a.clone());
        }
    }

    /// Nothing to write (pending slots write nothing).
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }
}

/// `bytes` for people: `2 GiB`, `1.5 GiB`, `256 MiB`, `512 KiB`, `100 B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let tenths = (u128::from(bytes) * 10 / u128::from(size)) as u64;
            return if tenths % 10 == 0 {
                format!("{} {unit}", tenths / 10)
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes} B")
}

/// Nano-CPUs for people: `2 CPUs`, `0.5 CPUs`, `1 CPU`.
pub fn format_cpus(nano: u64) -> String {
    let text = format!("{:.3}", nano as f64 / 1e9);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "1" {
        "1 CPU".to_string()
    } else {
        format!("{text} CPUs")
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
///
/// No capacity is known, so nothing limits reservations: [`plan_with_capacity`] with an empty
/// map.
pub fn plan(
    services: &Services,
    members: &BTreeMap<NodeId, Member>,
    live: &BTreeSet<NodeId>,
    assignments: &BTreeMap<SlotId, Assignment>,
    lease: &Lease,
) -> Plan {
    plan_with_capacity(
        services,
        members,
        live,
        assignments,
        lease,
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
}

/// What of `want` none of the `frees` holds, in words: `2 GiB free memory`, `3 CPUs free`,
/// or both.
fn shortfall_of(want: Capacity, frees: &[Capacity]) -> String {
    let memory_short = frees.iter().all(|f| f.memory_bytes < want.memory_bytes);
    let cpu_short = frees.iter().all(|f| f.nano_cpus < want.nano_cpus);
    match (memory_short, cpu_short) {
        (true, false) => format!("{} free memory", format_bytes(want.memory_bytes)),
        (false, true) => format!("{} free", format_cpus(want.nano_cpus)),
        _ => format!(
            "{} free memory and {} free",
            format_bytes(want.memory_bytes),
            format_cpus(want.nano_cpus)
        ),
    }
}

/// Why one node whose free capacity is `free` cannot hold `want`: `no 2 GiB free memory`.
pub(crate) fn shortfall(want: Capacity, free: Capacity) -> String {
    format!("no {}", shortfall_of(want, &[free]))
}

/// What a node of `capacity` has left once `used` is reserved (saturating at 0); `None`
/// when its capacity is unknown (an older peer, no heartbeat yet).
pub(crate) fn free_capacity(capacity: Option<&Capacity>, used: Capacity) -> Option<Capacity> {
    let cap = capacity?;
    Some(Capacity {
        nano_cpus: cap.nano_cpus.saturating_sub(used.nano_cpus),
        memory_bytes: cap.memory_bytes.saturating_sub(used.memory_bytes),
    })
}

/// Rule 4's test: whether a node with `free` capacity left ([`free_capacity`]) holds a
/// reservation `want` — both its CPUs and its memory; a node whose capacity is unknown
/// (`None`) takes any reservation. The one fit rule of the scheduler and of the rollout
/// engine's moves in place ([`super::rollout`]).
pub(crate) fn fits(free: Option<Capacity>, want: Capacity) -> bool {
    free.is_none_or(|f| f.nano_cpus >= want.nano_cpus && f.memory_bytes >= want.memory_bytes)
}

/// A slot's reservation: its service's CPU and memory limits (0 where none).
pub fn reservation(service: &Service) -> Capacity {
    reservation_of(&service.spec)
}

/// The reservation of a task of `spec`: its CPU and memory limits (0 where none).
pub(crate) fn reservation_of(spec: &warren_crdt::ServiceSpec) -> Capacity {
    Capacity {
        nano_cpus: spec.resources.nano_cpus.unwrap_or(0),
        memory_bytes: spec.resources.memory_bytes.unwrap_or(0),
    }
}

/// One running copy of a slot as its node last reported it (soft state, from heartbeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningCopy {
    /// The node that runs it.
    pub node: NodeId,
    /// The service generation it runs.
    pub generation: u64,
    /// How long it has been that node's, in milliseconds (from its creation), as of now.
    pub age_ms: u64,
    /// Its health.
    pub health: TaskHealth,
}

/// What the lease holder knows beyond the document, from the nodes' heartbeats: the input of
/// [`plan_observed`] besides the desired state.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// What each node offers to reservations; a node missing here takes any reservation.
    pub capacity: BTreeMap<NodeId, Capacity>,
    /// Each node's GPU device ids from its last report ([`super::gpus`]); a node missing
    /// here takes no slot that wants GPUs.
    pub gpus: NodeGpus,
    /// The images whose platforms are known in full ([`image_platform::restrictions`]): a
    /// slot of such an image goes only to a node of one of its platforms.
    pub image_platforms: BTreeMap<String, BTreeSet<ImagePlatform>>,
    /// Per slot, the nodes its task failed on (out of restart attempts) under the service's
    /// current generation.
    pub unrunnable: BTreeMap<SlotId, BTreeSet<NodeId>>,
    /// Per slot, the running copies reported by live nodes with a fresh report, whether
    /// assigned to them or not.
    pub copies: BTreeMap<SlotId, Vec<RunningCopy>>,
    /// Nodes whose reports are fresh: a dispute is judged only once the assigned node's
    /// own report is in.
    pub reported: BTreeSet<NodeId>,
    /// Restore spread by moving replicas, one per service at a time, start-first.
    pub rebalance: bool,
    /// Milliseconds since each member that is not live was last heard from (a member missing
    /// here counts as just gone silent): the input of each service's partition policy.
    pub silent_ms: BTreeMap<NodeId, u64>,
    /// A rule broken on purpose: [`RuleBreak::None`] (the default) but in the simulator's
    /// tests; [`RuleBreak::KeepNewest`] swaps the heal's keep rule for a wrong one.
    pub rule_break: RuleBreak,
    /// The holder's replica is known to hold a partial merge (changes received wait for
    /// history it lacks: the middle of a heal's sync). Its replica counts may be ones the
    /// rest of the merge raises again, so slots beyond them are not removed this round;
    /// slots of deleted services are.
    pub merge_incomplete: bool,
    /// The document's volume records, by name: a service mounting volumes goes only to
    /// their node and waits for it while it is down ([`super::volumes`]).
    pub volumes: BTreeMap<String, warren_crdt::Volume>,
}

/// Plans one round as [`plan`] does, and never over-commits a node: a task reserves its
/// service's `--cpus` and `--memory`, and a slot goes only to a node whose `capacity` minus
/// the reservations of the slots it keeps or gets this round still holds it. A node whose
/// capacity is unknown (an older peer, no heartbeat yet) takes any reservation. A slot no node
/// can hold stays pending, with the reason in [`Plan::pending`].
///
/// `unrunnable` holds, per slot, the nodes that reported the slot's task `failed` (out of
/// restart attempts) for the service's current spec: such a slot moves to another eligible
/// node, and is never placed on one of those nodes while another is eligible. With no other
/// node it stays where it is (moving it back and forth would gain nothing).
///
/// Knows no running copies: [`plan_observed`] with only these observations.
pub fn plan_with_capacity(
    services: &Services,
    members: &BTreeMap<NodeId, Member>,
    live: &BTreeSet<NodeId>,
    assignments: &BTreeMap<SlotId, Assignment>,
    lease: &Lease,
    capacity: &BTreeMap<NodeId, Capacity>,
    unrunnable: &BTreeMap<SlotId, BTreeSet<NodeId>>,
) -> Plan {
    let observed = Observations {
        capacity: capacity.clone(),
        unrunnable: unrunnable.clone(),
        ..Observations::default()
    };
    plan_observed(services, members, live, assignments, lease, &observed)
}

/// What a service's matching members depend on besides the members: its constraints, its
/// mounts (a service mounting volumes runs on their node only) and its image (whose
/// platforms may be known). Services with equal keys share one computation of their
/// matching members per round.
type MatchKey<'a> = (&'a Vec<Constraint>, &'a Vec<warren_crdt::Mount>, &'a String);

/// How a copy's health ranks in a heal's dispute: healthy (or unchecked) first.
fn health_rank(health: TaskHealth) -> u8 {
    match health {
        TaskHealth::None | TaskHealth::Healthy => 0,
        TaskHealth::Starting => 1,
        TaskHealth::Unhealthy => 2,
    }
}

/// The heal's keep rule (DESIGN §5) for one slot of `service`: when live nodes report
/// running copies of the slot's current generation on nodes it may use (`usable`: live,
/// active, matching its constraints) that the standing assignment `standing` has not judged (on a node other than its own and not in its `displaced`), keep exactly
/// one: healthy before unhealthy, then the one that has run longest (compared in whole
/// seconds: reports are up to a heartbeat old), then the lowest node id. Returns the
/// assignment that names the kept copy's node and lists the others as displaced; they stop
/// only once the kept copy's node confirms it running. `None` when there is nothing to
/// decide, or while the assigned node is live but its report is not in yet.
fn judge_copies(
    service: &Service,
    standing: Option<&Assignment>,
    copies: &[RunningCopy],
    usable: &dyn Fn(&NodeId) -> bool,
    observed: &Observations,
    lease: &Lease,
) -> Option<Assignment> {
    // The generation the slot runs: its assignment's (a rollout may not have moved it yet).
    let generation = standing.map_or(service.generation, |a| a.spec_generation);
    let candidates: Vec<&RunningCopy> = copies
        .iter()
        .filter(|c| c.generation == generation && usable(&c.node))
        .collect();
    let assigned = standing.map(|a| &a.node);
    if let Some(node) = assigned {
        if usable(node) && !observed.reported.contains(node) {
            return None;
        }
    }
    let judged = |n: &NodeId| standing.is_some_and(|a| a.displaced.contains(n));
    let undecided = candidates
        .iter()
        .any(|c| Some(&c.node) != assigned && !judged(&c.node));
    if !undecided {
        return None;
    }
    // Whole seconds of age, negated so that the oldest sorts first (the youngest with the
    // keep rule broken on purpose).
    let newest_first = observed.rule_break == RuleBreak::KeepNewest;
    let keeper = candidates.iter().min_by_key(|c| {
        let seconds = i128::from(c.age_ms / 1000);
        (
            health_rank(c.health),
            if newest_first { seconds } else { -seconds },
            &c.node,
        )
    })?;
    let mut displaced: Vec<NodeId> = copies
        .iter()
        .map(|c| c.node.clone())
        .filter(|n| *n != keeper.node)
        .collect();
    displaced.sort();
    displaced.dedup();
    // The kept copy on the assigned node runs with the GPUs assigned there; elsewhere the
    // scheduler picks free ones of the kept node.
    let gpus = standing
        .filter(|a| a.node == keeper.node)
        .map(|a| a.gpus.clone())
        .unwrap_or_default();
    Some(Assignment {
        node: keeper.node.clone(),
        epoch: lease.epoch,
        holder: lease.holder.clone(),
        spec_generation: generation,
        displaced,
        gpus,
    })
}

/// Plans one round: [`plan_with_capacity`]'s rules, with what the holder knows of the copies
/// that run (DESIGN §5):
///
/// 1. **The heal keeps what runs.** Where live nodes report more than one running copy of a
///    slot, or a copy the standing assignment has not judged, one is kept by
///    the heal's keep rule (`judge_copies`) and the slot is assigned to its node (the others listed as
///    displaced: they stop only once the kept one is confirmed running). Undisputed slots
///    are not touched.
/// 2. A slot that must move (its node is down or gone) goes, when a live node reports a
///    running copy of it, to that node rather than to a new one: nothing starts.
/// 3. **Rebalance** (when `observed.rebalance`): once every slot of a service runs as one
///    confirmed copy on its node and nothing of the service moves this round, if a node holds
///    at least two more of its replicas than another eligible node that has room, one
///    replica moves there, start-first (the old copy is listed as displaced and stops once
///    the new one is confirmed running): at most one replica of a service at a time.
pub fn plan_observed(
    services: &Services,
    members: &BTreeMap<NodeId, Member>,
    live: &BTreeSet<NodeId>,
    assignments: &BTreeMap<SlotId, Assignment>,
    lease: &Lease,
    observed: &Observations,
) -> Plan {
    let capacity = &observed.capacity;
    let unrunnable = &observed.unrunnable;
    // Sorted by id, so that a member's number in this list (`number`) orders as its id.
    let mut eligible: Vec<&NodeId> = members
        .values()
        .filter(|m| availability::takes_new_tasks(m) && live.contains(&m.id))
        .map(|m| &m.id)
        .collect();
    eligible.sort();
    eligible.dedup();
    let eligible_set: BTreeSet<&NodeId> = eligible.iter().copied().collect();
    let number = |n: &NodeId| eligible.binary_search(&n).ok();
    // Live admitted members, whatever their availability; `holds`: those that keep a slot
    // of the service they already hold (paused ones do, drained ones only what stays).
    let present = |n: &NodeId| {
        live.contains(n)
            && members
                .get(n)
                .is_some_and(|m| m.state == MemberState::Active)
    };
    let holds = |service: &Service, n: &NodeId| {
        present(n)
            && members
                .get(n)
                .is_some_and(|m| availability::keeps_tasks(service, m))
    };
    // A node suits a service when its member record satisfies every constraint of the
    // service's placement (`crate::placement`), it may hold the service's mounts
    // (`volumes`), and its platform is one the service's image supports, where that is
    // known (`image_platform`).
    let constrained = |service: &Service, n: &NodeId| {
        let p = &service.spec.placement;
        (p.constraints.is_empty() || members.get(n).is_some_and(|m| placement::satisfies(p, m)))
            && (service.spec.mounts.is_empty()
                || members
                    .get(n)
                    .is_some_and(|m| volumes::allows(&service.spec, &observed.volumes, m)))
    };
    let platforms_of = |service: &Service| observed.image_platforms.get(&service.spec.image);
    let suits = |service: &Service, n: &NodeId| {
        constrained(service, n)
            && image_platform::runs_on(platforms_of(service), members.get(n).map(|m| &m.platform))
    };
    let avoided = |slot: &SlotId, n: &NodeId| unrunnable.get(slot).is_some_and(|s| s.contains(n));
    let elsewhere = |service: &Service, slot: &SlotId| {
        eligible
            .iter()
            .any(|n| !avoided(slot, n) && suits(service, n))
    };
    // The partition policy (DESIGN §5): an active member that is down keeps the slots of a
    // service whose policy waits for it (`--on-partition wait`, or `--reschedule-after` not
    // reached yet). The same rule on every side of a split.
    let waits_for = |service: &Service, n: &NodeId| {
        !live.contains(n)
            && members
                .get(n)
                .is_some_and(|m| m.state == MemberState::Active)
            && (service
                .spec
                .partition
                .waits(observed.silent_ms.get(n).copied().unwrap_or(0))
                || volumes::waits_for(&service.spec, &observed.volumes).as_ref() == Some(n))
    };
    let mut plan = Plan::default();

    // 1. Disputes over running copies, judged first: their slots stay where the kept copy is.
    let mut judged: BTreeMap<&SlotId, Assignment> = BTreeMap::new();
    for (slot, copies) in &observed.copies {
        let Some(service) = service_wanting(services, slot) else {
            continue;
        };
        let usable = |n: &NodeId| holds(service, n) && suits(service, n);
        if let Some(a) = judge_copies(
            service,
            assignments.get(slot),
            copies,
            &usable,
            observed,
            lease,
        ) {
            judged.insert(slot, a);
        }
    }

    // GPUs: two slots naming one GPU of a node after a heal are resolved (the later-decided
    // one is re-placed), and a slot keeps its GPUs only while its node still lists them.
    let gpu_conflicts = gpus::conflicted(services, assignments);
    let mut book = GpuBook::default();
    // Slots that stay where they are count towards each node's load: per eligible member,
    // by its number.
    let mut total: Vec<usize> = vec![0; eligible.len()];
    let count = |total: &mut Vec<usize>, n: &NodeId| {
        if let Some(i) = number(n) {
            total[i] += 1;
        }
    };
    let mut per_service: BTreeMap<(&ServiceName, &NodeId), usize> = BTreeMap::new();
    // A slot stays on a node that no longer satisfies its constraints (a label changed)
    // only until this round: it is re-placed, as Swarm's constraint enforcer does.
    let keeps = |slot: &SlotId, a: &Assignment| -> bool {
        services.get(&slot.service).is_some_and(|s| {
            if s.spec.mode == ServiceMode::Global {
                // A global slot stays on its member, reachable or not (`super::global`).
                return !s.deleted
                    && super::global::stands(s, a, members)
                    && constrained(s, &a.node)
                    && gpus::valid(s, a, &observed.gpus)
                    && !gpu_conflicts.contains(slot);
            }
            // An assignment of an older generation stays: it is the rollout's to move
            // (`super::rollout`).
            !s.deleted
                && slot.slot < s.spec.replicas
                && a.spec_generation <= s.generation
                && (eligible_set.contains(&a.node) || holds(s, &a.node) || waits_for(s, &a.node))
                && suits(s, &a.node)
                && !(avoided(slot, &a.node) && elsewhere(s, slot))
                && gpus::valid(s, a, &observed.gpus)
                && !gpu_conflicts.contains(slot)
        })
    };
    let cap_of = |slot: &SlotId| {
        services
            .get(&slot.service)
            .and_then(|s| s.spec.placement.max_replicas_per_node)
            .map_or(usize::MAX, |m| m as usize)
    };
    // The slots that stay: judged ones, and those `keeps` allows while their node holds
    // fewer than `--max-replicas-per-node` of the service (lowest slots first).
    let mut kept: BTreeSet<&SlotId> = BTreeSet::new();
    let mut reserved: BTreeMap<&NodeId, Capacity> = BTreeMap::new();
    fn reserve<'a>(
        reserved: &mut BTreeMap<&'a NodeId, Capacity>,
        node: &'a NodeId,
        want: Capacity,
    ) {
        let r = reserved.entry(node).or_default();
        r.nano_cpus = r.nano_cpus.saturating_add(want.nano_cpus);
        r.memory_bytes = r.memory_bytes.saturating_add(want.memory_bytes);
    }
    for (slot, a) in assignments {
        let a = judged.get(slot).unwrap_or(a);
        let room = || {
            per_service
                .get(&(&slot.service, &a.node))
                .copied()
                .unwrap_or(0)
                < cap_of(slot)
        };
        if judged.contains_key(slot) || (keeps(slot, a) && room()) {
            kept.insert(slot);
            book.hold(&a.node, &a.gpus);
            count(&mut total, &a.node);
            *per_service.entry((&slot.service, &a.node)).or_default() += 1;
            if let Some(s) = services.get(&slot.service) {
                reserve(&mut reserved, &a.node, reservation(s));
            }
        }
    }
    for (slot, a) in &judged {
        if !assignments.contains_key(*slot) {
            kept.insert(slot);
            book.hold(&a.node, &a.gpus);
            count(&mut total, &a.node);
            *per_service.entry((&slot.service, &a.node)).or_default() += 1;
            if let Some(s) = services.get(&slot.service) {
                reserve(&mut reserved, &a.node, reservation(s));
            }
        }
    }

    for slot in assignments.keys() {
        let service = services.get(&slot.service).filter(|s| !s.deleted);
        let scaled_away = service.is_some_and(|s| !s.spec.wants_slot(slot.slot));
        if service.is_none() || (scaled_away && !observed.merge_incomplete) {
            plan.remove.push(slot.clone());
        }
    }

    let free = |reserved: &BTreeMap<&NodeId, Capacity>, n: &NodeId| -> Option<Capacity> {
        free_capacity(
            capacity.get(n),
            reserved.get(n).copied().unwrap_or_default(),
        )
    };
    let fits = |reserved: &BTreeMap<&NodeId, Capacity>, n: &NodeId, want: Capacity| {
        fits(free(reserved, n), want)
    };
    let mut moving: BTreeSet<&ServiceName> = BTreeSet::new();
    // The members each distinct set of constraints allows, by number, and each member's
    // spread group for each distinct list of preferences: services share them.
    let mut matching_by: Vec<(MatchKey, Vec<u32>)> = Vec::new();
    let mut paths_by: Vec<(&[SpreadPreference], Vec<GroupPath>)> = Vec::new();
    let min_id = NodeId(String::new());
    for (name, service) in services.iter().filter(|(_, s)| !s.deleted) {
        if service.spec.mode == ServiceMode::Global {
            let want = reservation(service);
            let mut fit = |n: &NodeId| -> Result<(), String> {
                // The member table's own key: the reservations outlive this round's borrows.
                let Some((n, _)) = members.get_key_value(n) else {
                    return Err("not a member".to_string());
                };
                if fits(&reserved, n, want) {
                    reserve(&mut reserved, n, want);
                    return Ok(());
                }
                let f = free(&reserved, n).unwrap_or_default();
                Err(shortfall(want, f))
            };
            let round = super::global::Round {
                name,
                service,
                members,
                live,
                assignments,
                judged: &judged,
                copies: &observed.copies,
                reported: &observed.reported,
                lease,
                suits: &|n: &NodeId| suits(service, n),
            };
            super::global::plan_service(&round, &|s| kept.contains(s), &mut fit, &mut plan);
            continue;
        }
        let placement = &service.spec.placement;
        let cap = placement
            .max_replicas_per_node
            .map_or(usize::MAX, |m| m as usize);
        let want = reservation(service);
        // Built at the service's first slot that needs a member: the members its
        // constraints allow, its replicas per member, its candidates in order.
        let mut round: Option<(usize, Vec<usize>, Candidates)> = None;
        // Why its slots wait, once no candidate is left (every later slot waits as well).
        let mut exhausted: Option<String> = None;
        for index in 0..service.spec.slot_count() {
            let slot = SlotId {
                service: name.clone(),
                slot: index,
            };
            if let Some(mut a) = judged.get(&&slot).cloned() {
                moving.insert(name);
                // A copy kept on another node than the assigned one gets free GPUs there
                // (none free: it keeps none, and is re-placed next round).
                if a.gpus.len() != service.spec.gpus as usize {
                    a.gpus = book
                        .take(&observed.gpus, &a.node, service.spec.gpus)
                        .unwrap_or_default();
                }
                plan.put.push((slot, a));
                continue;
            }
            if kept.contains(&slot) {
                continue;
            }
            moving.insert(name);
            let (matching_at, load, candidates) = round.get_or_insert_with(|| {
                let key: MatchKey = (
                    &placement.constraints,
                    &service.spec.mounts,
                    &service.spec.image,
                );
                let at = match matching_by.iter().position(|(k, _)| *k == key) {
                    Some(at) => at,
                    None => {
                        let numbers = (0..eligible.len() as u32)
                            .filter(|i| suits(service, eligible[*i as usize]))
                            .collect();
                        matching_by.push((key, numbers));
                        matching_by.len() - 1
                    }
                };
                let prefs = placement.preferences.as_slice();
                let paths: &[Vec<Option<&str>>] = if prefs.is_empty() {
                    &[]
                } else {
                    let p = match paths_by.iter().position(|(p, _)| *p == prefs) {
                        Some(p) => p,
                        None => {
                            let groups = eligible
                                .iter()
                                .map(|n| match members.get(*n) {
                                    Some(m) => placement::spread_group(placement, m),
                                    None => vec![None; prefs.len()],
                                })
                                .collect();
                            paths_by.push((prefs, groups));
                            paths_by.len() - 1
                        }
                    };
                    &paths_by[p].1
                };
                let mut load = vec![0; eligible.len()];
                let mut counts: BTreeMap<Vec<Option<&str>>, usize> = BTreeMap::new();
                for ((_, node), count) in per_service
                    .range((name, &min_id)..)
                    .take_while(|((s, _), _)| *s == name)
                {
                    if let Some(i) = number(node) {
                        load[i] = *count;
                    }
                    if !prefs.is_empty() {
                        let group = members
                            .get(*node)
                            .map(|m| placement::spread_group(placement, m))
                            .unwrap_or_else(|| vec![None; prefs.len()]);
                        for depth in 1..=group.len() {
                            *counts.entry(group[..depth].to_vec()).or_default() += *count;
                        }
                    }
                }
                let path = |i: u32| paths.get(i as usize).cloned().unwrap_or_default();
                let candidates = Candidates::new(&matching_by[at].1, path, counts, &load, &total);
                (at, load, candidates)
            });
            let matching = &matching_by[*matching_at].1;
            let is_matching =
                |n: &NodeId| number(n).is_some_and(|i| matching.binary_search(&(i as u32)).is_ok());
            let fit =
                |reserved: &BTreeMap<&NodeId, Capacity>, book: &GpuBook, load: &[usize], i: u32| {
                    let n = eligible[i as usize];
                    if load[i as usize] >= cap
                        || !fits(reserved, n, want)
                        || !book.fits(&observed.gpus, n, service.spec.gpus)
                    {
                        Fit::Never
                    } else if avoided(&slot, n) && elsewhere(service, &slot) {
                        Fit::NotThisSlot
                    } else {
                        Fit::Take
                    }
                };
            // Keep what runs: a live node that reports a running copy of this slot's
            // current generation takes it before any other.
            let running_on = observed.copies.get(&slot).and_then(|copies| {
                copies
                    .iter()
                    .filter(|c| c.generation == service.generation)
                    .map(|c| &c.node)
                    .find(|n| is_matching(n))
            });
            let chosen = match running_on.and_then(&number) {
                Some(i) if fit(&reserved, &book, load, i as u32) == Fit::Take => Some(i as u32),
                _ if exhausted.is_some() => None,
                _ => candidates.choose(load, &total, |i| fit(&reserved, &book, load, i)),
            };
            let Some(chosen) = chosen else {
                // Paused or drained members that would take it, named in the reason.
                let unavailable = || {
                    let candidates = members.values().filter(|m| present(&m.id));
                    availability::unavailable_reason(candidates, |m| {
                        placement::satisfies(placement, m)
                    })
                    .map_or(String::new(), |r| format!(" ({r})"))
                };
                let by_mounts = || {
                    volumes::unplaced_reason(
                        &service.spec,
                        &observed.volumes,
                        |n| eligible_set.contains(n),
                        members,
                    )
                };
                let pending_reason = |load: &[usize]| -> String {
                    let load_of = |n: &NodeId| number(n).map_or(0, |i| load[i]);
                    let room: Vec<&NodeId> = matching
                        .iter()
                        .map(|i| eligible[*i as usize])
                        .filter(|n| load_of(n) < cap)
                        .collect();
                    if eligible.is_empty() {
                        format!("no live member to run it{}", unavailable())
                    } else if let Some(reason) = by_mounts() {
                        reason
                    } else if let Some(reason) = platforms_of(service)
                        .filter(|_| matching.is_empty())
                        .and_then(|allowed| {
                            // Members the constraints allow, all of a platform the image lacks.
                            let allowed_by_constraints: Vec<&Member> = eligible
                                .iter()
                                .filter(|n| constrained(service, n))
                                .filter_map(|n| members.get(*n))
                                .collect();
                            (!allowed_by_constraints.is_empty()).then(|| {
                                image_platform::pending_reason(
                                    &service.spec.image,
                                    allowed,
                                    allowed_by_constraints,
                                )
                            })
                        })
                    {
                        reason
                    } else if matching.is_empty() {
                        let live = eligible.iter().filter_map(|n| members.get(*n));
                        let reason = placement::unmatched_reason(placement, live)
                            .unwrap_or_else(|| "no node matches its constraints".to_string());
                        let down_matches = members.values().any(|m| {
                            m.state == MemberState::Active
                                && !present(&m.id)
                                && placement::satisfies(placement, m)
                        });
                        if down_matches {
                            format!("{reason} among the live members{}", unavailable())
                        } else {
                            format!("{reason}{}", unavailable())
                        }
                    } else if room.is_empty() {
                        format!(
                            "max-replicas-per-node {cap} reached on every matching node ({})",
                            matching.len()
                        )
                    } else if !room
                        .iter()
                        .any(|n| book.fits(&observed.gpus, n, service.spec.gpus))
                    {
                        gpus::pending_reason(service.spec.gpus)
                    } else {
                        let frees: Vec<Capacity> =
                            room.iter().filter_map(|n| free(&reserved, n)).collect();
                        format!("no node with {}", shortfall_of(want, &frees))
                    }
                };
                let reason = match &exhausted {
                    Some(reason) => reason.clone(),
                    None => pending_reason(load),
                };
                // An assignment must not stay on a node its constraints no longer allow or
                // beyond `--max-replicas-per-node` (`keeps` holds, yet it was not kept), nor
                // hold a GPU another slot holds or its node no longer lists: clear it (the
                // slot waits, visibly). (An assignment of an older generation runs its own
                // spec: the rollout moves it, not this rule.)
                if assignments.get(&slot).is_some_and(|a| {
                    !suits(service, &a.node)
                        || keeps(&slot, a)
                        || gpu_conflicts.contains(&slot)
                        || !gpus::valid(service, a, &observed.gpus)
                }) && !eligible.is_empty()
                {
                    plan.remove.push(slot.clone());
                }
                if candidates.is_exhausted() {
                    exhausted = Some(reason.clone());
                }
                plan.pending.push((slot, reason));
                continue;
            };
            let node = eligible[chosen as usize];
            // Running copies on live members its placement excludes (its constraints no
            // longer allow them, or they hold `--max-replicas-per-node` already) are judged
            // here: they stop once the new node confirms its copy running (make before
            // break); unjudged, the new node would wait for a decision about them that never
            // comes. Any other copy is the heal's keep rule's (`judge_copies`), as before.
            // A copy on a paused or drained member is judged the same way (a drain's move).
            let excluded = |n: &NodeId| {
                present(n)
                    && (!eligible_set.contains(n)
                        || !suits(service, n)
                        || number(n).is_some_and(|i| load[i] >= cap))
            };
            let mut displaced: Vec<NodeId> = observed
                .copies
                .get(&slot)
                .into_iter()
                .flatten()
                .filter(|c| {
                    c.generation == service.generation && c.node != *node && excluded(&c.node)
                })
                .map(|c| c.node.clone())
                .collect();
            displaced.sort();
            displaced.dedup();
            total[chosen as usize] += 1;
            load[chosen as usize] += 1;
            *per_service.entry((name, node)).or_default() += 1;
            candidates.placed(chosen, load, &total);
            reserve(&mut reserved, node, want);
            // `fit` saw enough free GPUs on `node`.
            let gpus = book
                .take(&observed.gpus, node, service.spec.gpus)
                .unwrap_or_default();
            plan.put.push((
                slot,
                Assignment {
                    node: node.clone(),
                    epoch: lease.epoch,
                    holder: lease.holder.clone(),
                    spec_generation: service.generation,
                    displaced,
                    gpus,
                },
            ));
        }
    }

    if observed.rebalance {
        for (name, service) in services.iter().filter(|(_, s)| !s.deleted) {
            // Spread over label values is restored by re-placement, not by this node-level
            // move, which could unbalance the groups; a task holding GPUs is not moved for
            // spread (its new node's GPUs would have to be picked here too).
            if moving.contains(name)
                || service.spec.mode == ServiceMode::Global
                || service.spec.replicas < 2
                || service.spec.partition.on_partition == OnPartition::Wait
                || !service.spec.placement.preferences.is_empty()
                || service.spec.gpus > 0
            {
                continue;
            }
            // Only among the nodes its constraints allow: the ones holding its slots here,
            // the others (holding none) below, and only when a move could be due.
            let mut on: BTreeMap<&NodeId, Vec<u32>> = BTreeMap::new();
            let settled = (0..service.spec.slot_count()).all(|index| {
                let slot = SlotId {
                    service: name.clone(),
                    slot: index,
                };
                let Some(a) = assignments.get(&slot) else {
                    return false;
                };
                let confirmed = observed.copies.get(&slot).is_some_and(|copies| {
                    copies.len() == 1
                        && copies[0].node == a.node
                        && copies[0].generation == service.generation
                        && health_rank(copies[0].health) == 0
                });
                if !(eligible_set.contains(&a.node) && suits(service, &a.node)) {
                    return false;
                }
                on.entry(&a.node).or_default().push(index);
                confirmed
            });
            if !settled {
                continue;
            }
            let Some((from, slots)) = on
                .iter()
                .max_by_key(|(n, s)| (s.len(), std::cmp::Reverse(**n)))
            else {
                continue;
            };
            // A move needs a node with at least two fewer.
            if slots.len() < 2 {
                continue;
            }
            let want = reservation(service);
            let Some(index) = slots.iter().max().copied() else {
                continue;
            };
            let slot = SlotId {
                service: name.clone(),
                slot: index,
            };
            let to = eligible
                .iter()
                .enumerate()
                .filter(|(_, n)| suits(service, n))
                .map(|(i, n)| (i, *n, on.get(*n).map_or(0, Vec::len)))
                .filter(|(_, n, held)| {
                    // Never onto a node where any task of the service failed: a move there
                    // would crash-loop and be moved back.
                    let failed_there = (0..service.spec.slot_count()).any(|index| {
                        avoided(
                            &SlotId {
                                service: name.clone(),
                                slot: index,
                            },
                            n,
                        )
                    });
                    held + 2 <= slots.len() && fits(&reserved, n, want) && !failed_there
                })
                .min_by_key(|(i, n, held)| (*held, total[*i], *n))
                .map(|(i, n, _)| (i, n));
            let Some((i, to)) = to else { continue };
            reserve(&mut reserved, to, want);
            total[i] += 1;
            plan.put.push((
                slot,
                Assignment {
                    node: to.clone(),
                    epoch: lease.epoch,
                    holder: lease.holder.clone(),
                    spec_generation: service.generation,
                    displaced: vec![(*from).clone()],
                    gpus: Vec::new(),
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
                capabilities: Default::default(),
                platform: Default::default(),
                admitted_by: id(s),
                admitted_at: 0,
                state: MemberState::Active,
                availability: Default::default(),
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
                older_specs: Default::default(),
                rollout: None,
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
        plan.apply(assignments);
    }

    #[test]
    fn a_slot_that_failed_on_its_node_moves_unless_it_failed_everywhere() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services = Services::from(vec![service("web", 1)]);
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        let first_round = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first_round);
        let slot = assignments.keys().next().expect("placed").clone();
        let first = assignments[&slot].node.clone();
        let failed = |nodes: &[&NodeId]| -> BTreeMap<SlotId, BTreeSet<NodeId>> {
            [(slot.clone(), nodes.iter().map(|n| (*n).clone()).collect())].into()
        };
        let none = BTreeMap::new();
        let p = |unrunnable: &BTreeMap<SlotId, BTreeSet<NodeId>>,
                 assignments: &BTreeMap<SlotId, Assignment>| {
            plan_with_capacity(
                &services,
                &members,
                &all,
                assignments,
                &lease(),
                &none,
                unrunnable,
            )
        };
        // Failed on its node: it moves, to a node it has not failed on.
        let moved = p(&failed(&[&first]), &assignments);
        assert_eq!(moved.put.len(), 1, "{moved:?}");
        let second = moved.put[0].1.node.clone();
        assert_ne!(second, first);
        apply(&mut assignments, &moved);
        // Failed there too: the third node.
        let moved = p(&failed(&[&first, &second]), &assignments);
        let third = moved.put[0].1.node.clone();
        assert!(third != first && third != second, "{moved:?}");
        apply(&mut assignments, &moved);
        // Failed everywhere: it stays where it is rather than bounce.
        assert!(p(&failed(&[&first, &second, &third]), &assignments).is_empty());
        // A report of another slot changes nothing.
        let other = SlotId {
            service: slot.service.clone(),
            slot: 7,
        };
        let unrelated: BTreeMap<_, _> = [(other, [third.clone()].into())].into();
        assert!(p(&unrelated, &assignments).is_empty());
    }

    #[test]
    fn spreads_replicas_then_keeps_them_and_moves_only_lost_ones() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services = Services::from(vec![service("web", 3)]);
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
        let mut services = Services::from(vec![service("web", 3)]);
        let mut assignments = BTreeMap::new();
        let p = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &p);
        assert_eq!(assignments.len(), 3);
        services.insert(service("web", 1).0, service("web", 1).1);
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 2);
        apply(&mut assignments, &p);
        assert_eq!(assignments.len(), 1);
        if let Some(s) = services.get_mut(&ServiceName::new("web").expect("name")) {
            s.deleted = true;
        }
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 1);
    }

    /// A replica count far beyond `MAX_REPLICAS` can arrive from a peer's document: the round
    /// stays bounded (it considers `MAX_REPLICAS` slots), it does not iterate billions.
    #[test]
    fn an_absurd_replica_count_from_a_peer_keeps_the_round_bounded() {
        let members: BTreeMap<_, _> = [member("a"), member("b")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let services = Services::from(vec![service("web", u32::MAX)]);
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        assert_eq!(p.put.len(), warren_crdt::MAX_REPLICAS as usize);
    }

    /// A holder in the middle of a heal's merge may read a replica count the rest of the
    /// merge raises again: it removes a scale down's slots only once its merge is complete.
    /// A delete is final whatever the merge brings (its tombstone wins), so it goes at once.
    #[test]
    fn a_partial_merge_defers_a_scale_down_but_not_a_delete() {
        let members: BTreeMap<_, _> = [member("a"), member("b")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut services = Services::from(vec![service("web", 3), service("api", 1)]);
        let mut assignments = BTreeMap::new();
        let first = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first);
        services.insert(service("web", 1).0, service("web", 1).1);
        if let Some(api) = services.get_mut(&ServiceName::new("api").expect("name")) {
            api.deleted = true;
        }
        let partial = Observations {
            merge_incomplete: true,
            ..Observations::default()
        };
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &partial);
        assert_eq!(
            p.remove
                .iter()
                .map(|s| s.service.as_str())
                .collect::<Vec<_>>(),
            ["api"],
            "{p:?}"
        );
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 3, "{p:?}");
    }

    fn limited(
        name: &str,
        replicas: u32,
        cpus: Option<u64>,
        memory: Option<u64>,
    ) -> (ServiceName, Service) {
        let (n, mut s) = service(name, replicas);
        s.spec.resources = warren_crdt::Resources {
            nano_cpus: cpus,
            memory_bytes: memory,
        };
        (n, s)
    }

    #[test]
    fn reservations_never_over_commit_a_node_and_say_why_a_slot_waits() {
        const GIB: u64 = 1 << 30;
        let members: BTreeMap<_, _> = [member("a"), member("b")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let capacity: BTreeMap<_, _> = [
            (
                id("a"),
                Capacity {
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 4 * GIB,
                },
            ),
            (
                id("b"),
                Capacity {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 2 * GIB,
                },
            ),
        ]
        .into();
        // 3 × 2 GiB: a takes two, b one; nothing is left for a fourth.
        let services = Services::from(vec![limited("db", 4, None, Some(2 * GIB))]);
        let mut assignments = BTreeMap::new();
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &assignments,
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        let on = |node: &str| p.put.iter().filter(|(_, a)| a.node == id(node)).count();
        assert_eq!((on("a"), on("b")), (2, 1), "{p:?}");
        assert_eq!(p.pending.len(), 1);
        assert_eq!(p.pending[0].1, "no node with 2 GiB free memory");
        apply(&mut assignments, &p);
        // Next round: the placed slots keep their reservations, the fourth still waits.
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &assignments,
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert!(p.is_empty());
        assert_eq!(p.pending.len(), 1);

        // CPUs: 3 CPUs fit only on b; a second such task fits nowhere.
        let services = Services::from(vec![limited("calc", 2, Some(3_000_000_000), None)]);
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &BTreeMap::new(),
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert_eq!(p.put.len(), 1);
        assert_eq!(p.put[0].1.node, id("b"));
        assert_eq!(p.pending[0].1, "no node with 3 CPUs free");

        // A spec change leaves the slot's assignment of the older generation, which runs its
        // own spec, to the rollout (`super::rollout`); placed afresh, the new spec waits.
        let small = Services::from(vec![limited("calc", 1, Some(1_000_000_000), None)]);
        let mut placed = BTreeMap::new();
        apply(
            &mut placed,
            &plan_with_capacity(
                &small,
                &members,
                &all,
                &BTreeMap::new(),
                &lease(),
                &capacity,
                &BTreeMap::new(),
            ),
        );
        let mut big = Services::from(vec![limited("calc", 1, Some(8_000_000_000), None)]);
        if let Some(s) = big.get_mut(&ServiceName::new("calc").expect("name")) {
            s.generation = 2;
        }
        let p = plan_with_capacity(
            &big,
            &members,
            &all,
            &placed,
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert!(p.is_empty() && p.pending.is_empty(), "{p:?}");
        let p = plan_with_capacity(
            &big,
            &members,
            &all,
            &BTreeMap::new(),
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert_eq!(p.pending[0].1, "no node with 8 CPUs free");

        // Without a known capacity a node takes anything (an older peer).
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &BTreeMap::new(),
            &lease(),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!((p.put.len(), p.pending.len()), (2, 0));
        // Without a limit, a service reserves nothing.
        let services = Services::from(vec![service("web", 10)]);
        let p = plan_with_capacity(
            &services,
            &members,
            &all,
            &BTreeMap::new(),
            &lease(),
            &capacity,
            &BTreeMap::new(),
        );
        assert_eq!((p.put.len(), p.pending.len()), (10, 0));
    }

    fn copy(node: &str, age_s: u64, health: TaskHealth) -> RunningCopy {
        RunningCopy {
            node: id(node),
            generation: 1,
            age_ms: age_s * 1000,
            health,
        }
    }

    fn observed(copies: &[(u32, RunningCopy)], rebalance: bool) -> Observations {
        let mut o = Observations {
            reported: [id("a"), id("b"), id("c")].into(),
            rebalance,
            ..Observations::default()
        };
        for (slot, c) in copies {
            o.copies
                .entry(SlotId {
                    service: ServiceName::new("web").expect("name"),
                    slot: *slot,
                })
                .or_default()
                .push(c.clone());
        }
        o
    }

    /// [`RuleBreak::KeepNewest`], the keep rule broken for the simulator's test: the youngest
    /// copy is kept instead of the oldest.
    #[test]
    fn the_broken_keep_rule_keeps_the_youngest_copy() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services = Services::from(vec![service("web", 1)]);
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        let first = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first);
        let on0 = assignments.values().next().expect("assigned").node.clone();
        let (young, old) = if on0 == id("a") {
            ("b", "c")
        } else {
            ("a", on0.as_str())
        };
        let mut copies = observed(
            &[
                (0, copy(young, 5, TaskHealth::None)),
                (0, copy(old, 60, TaskHealth::None)),
            ],
            false,
        );
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &copies);
        assert_eq!(p.put[0].1.node, id(old), "{p:?}");
        copies.rule_break = RuleBreak::KeepNewest;
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &copies);
        assert_eq!(p.put[0].1.node, id(young), "{p:?}");
    }

    #[test]
    fn a_heal_keeps_the_oldest_healthy_copy_and_leaves_undisputed_slots() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services = Services::from(vec![service("web", 2)]);
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        let first = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first);
        let slot0 = SlotId {
            service: ServiceName::new("web").expect("name"),
            slot: 0,
        };
        let on0 = assignments[&slot0].node.clone();
        let on1 = assignments[&SlotId {
            slot: 1,
            ..slot0.clone()
        }]
            .node
            .clone();
        let other = ["a", "b", "c"]
            .into_iter()
            .map(id)
            .find(|n| *n != on0 && *n != on1)
            .expect("a third node");
        // Slot 0 runs on its node (young) and on another (older): the older copy stays,
        // the assigned one is displaced; slot 1 is undisputed and untouched.
        let copies = observed(
            &[
                (0, copy(on0.as_str(), 5, TaskHealth::None)),
                (0, copy(other.as_str(), 60, TaskHealth::None)),
                (1, copy(on1.as_str(), 60, TaskHealth::None)),
            ],
            false,
        );
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &copies);
        assert_eq!(p.put.len(), 1, "{p:?}");
        assert_eq!(p.put[0].0, slot0);
        assert_eq!(p.put[0].1.node, other);
        assert_eq!(p.put[0].1.displaced, vec![on0.clone()]);
        assert!(p.remove.is_empty());
        apply(&mut assignments, &p);
        // Judged: the same reports decide nothing more (no flip-flop).
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &copies);
        assert!(p.is_empty(), "{p:?}");
        // Healthy beats unhealthy whatever the age; equal health and age: lowest node id.
        let mut fresh = BTreeMap::new();
        let first = plan(&services, &members, &all, &fresh, &lease());
        apply(&mut fresh, &first);
        let sick = observed(
            &[
                (0, copy("a", 90, TaskHealth::Unhealthy)),
                (0, copy("b", 5, TaskHealth::Healthy)),
                (0, copy("c", 5, TaskHealth::None)),
            ],
            false,
        );
        let p = plan_observed(&services, &members, &all, &fresh, &lease(), &sick);
        let kept = p.put.iter().find(|(s, _)| *s == slot0).expect("judged");
        assert_eq!(kept.1.node, id("b"), "{p:?}");
        // The assigned node's own report is not in yet: wait for it.
        let mut waiting = copies.clone();
        waiting.reported.remove(&on0);
        let p = plan_observed(&services, &members, &all, &fresh, &lease(), &waiting);
        assert!(p.put.iter().all(|(s, _)| *s != slot0), "{p:?}");
    }

    #[test]
    fn a_slot_whose_node_is_down_goes_where_a_copy_runs() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services = Services::from(vec![service("web", 1)]);
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let mut assignments = BTreeMap::new();
        let first = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first);
        let was = assignments.values().next().expect("placed").node.clone();
        let runs = if was == id("c") { "b" } else { "c" };
        let live: BTreeSet<_> = all.iter().filter(|n| **n != was).cloned().collect();
        let copies = observed(&[(0, copy(runs, 30, TaskHealth::None))], false);
        let p = plan_observed(&services, &members, &live, &assignments, &lease(), &copies);
        assert_eq!(p.put.len(), 1);
        assert_eq!(p.put[0].1.node, id(runs), "{p:?}");
    }

    #[test]
    fn rebalance_moves_one_replica_start_first_while_the_gap_is_two() {
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let services = Services::from(vec![service("web", 4)]);
        let all: BTreeSet<_> = members.keys().cloned().collect();
        // All four on "a" (the node that was cut off held them all).
        let mut assignments = BTreeMap::new();
        let mut copies = Vec::new();
        for i in 0..4 {
            assignments.insert(
                SlotId {
                    service: ServiceName::new("web").expect("name"),
                    slot: i,
                },
                Assignment {
                    node: id("a"),
                    epoch: Epoch(2),
                    holder: id("a"),
                    spec_generation: 1,
                    displaced: vec![],
                    gpus: Vec::new(),
                },
            );
            copies.push((i, copy("a", 60, TaskHealth::None)));
        }
        // A node where a task of the service failed is never a target.
        let mut failed = observed(&copies, true);
        failed.unrunnable = [(
            SlotId {
                service: ServiceName::new("web").expect("name"),
                slot: 0,
            },
            [id("b"), id("c")].into(),
        )]
        .into();
        assert!(
            plan_observed(&services, &members, &all, &assignments, &lease(), &failed).is_empty()
        );
        let off = observed(&copies, false);
        assert!(plan_observed(&services, &members, &all, &assignments, &lease(), &off).is_empty());
        let on = observed(&copies, true);
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &on);
        assert_eq!(p.put.len(), 1, "one replica at a time: {p:?}");
        assert_eq!(p.put[0].1.node, id("b"));
        assert_eq!(p.put[0].1.displaced, vec![id("a")]);
        // While the move is under way (the new copy not confirmed), nothing else moves.
        apply(&mut assignments, &p);
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &on);
        assert!(p.is_empty(), "{p:?}");
        // A gap of one is spread enough.
        let mut spread = copies.clone();
        spread[3] = (3, copy("b", 1, TaskHealth::None));
        spread[2] = (2, copy("c", 1, TaskHealth::None));
        let mut placed = assignments.clone();
        for (slot, node) in [(2, "c"), (3, "b")] {
            if let Some(a) = placed.get_mut(&SlotId {
                service: ServiceName::new("web").expect("name"),
                slot,
            }) {
                a.node = id(node);
                a.displaced.clear();
            }
        }
        let on = observed(&spread, true);
        assert!(plan_observed(&services, &members, &all, &placed, &lease(), &on).is_empty());
    }

    #[test]
    fn wait_keeps_an_unreachable_members_slots_and_reschedule_after_waits_that_long() {
        use warren_crdt::{OnPartition, PartitionPolicy};
        let members: BTreeMap<_, _> = [member("a"), member("b"), member("c")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let with = |policy: PartitionPolicy| {
            let (n, mut s) = service("web", 3);
            s.spec.partition = policy;
            Services::from(vec![(n, s)])
        };
        let wait = with(PartitionPolicy {
            on_partition: OnPartition::Wait,
            reschedule_after_ms: None,
        });
        let mut assignments = BTreeMap::new();
        let first = plan(&wait, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first);
        // "c" is down for an hour: a waiting service keeps its slot there...
        let live: BTreeSet<_> = [id("a"), id("b")].into();
        let silent = |ms: u64| Observations {
            silent_ms: [(id("c"), ms)].into(),
            ..Observations::default()
        };
        let p = plan_observed(
            &wait,
            &members,
            &live,
            &assignments,
            &lease(),
            &silent(3_600_000),
        );
        assert!(p.is_empty(), "{p:?}");
        // ...unless it was removed from the cluster.
        let mut gone = members.clone();
        if let Some(m) = gone.get_mut(&id("c")) {
            m.state = MemberState::Removed;
        }
        let p = plan_observed(&wait, &gone, &live, &assignments, &lease(), &silent(0));
        assert_eq!(p.put.len(), 1);
        // `--reschedule-after 10m`: kept for ten minutes, then re-placed.
        let after = with(PartitionPolicy {
            on_partition: OnPartition::Reschedule,
            reschedule_after_ms: Some(600_000),
        });
        let p = plan_observed(
            &after,
            &members,
            &live,
            &assignments,
            &lease(),
            &silent(599_999),
        );
        assert!(p.is_empty(), "{p:?}");
        let p = plan_observed(
            &after,
            &members,
            &live,
            &assignments,
            &lease(),
            &silent(600_000),
        );
        assert_eq!(p.put.len(), 1);
        assert_ne!(p.put[0].1.node, id("c"));
        // The default re-places at once (the member is down).
        let default = with(PartitionPolicy::default());
        let p = plan_observed(
            &default,
            &members,
            &live,
            &assignments,
            &lease(),
            &silent(3_001),
        );
        assert_eq!(p.put.len(), 1);
    }

    #[test]
    fn sizes_and_cpus_read_well() {
        assert_eq!(format_bytes(2 << 30), "2 GiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes(100), "100 B");
        assert_eq!(format_cpus(500_000_000), "0.5 CPUs");
        assert_eq!(format_cpus(1_000_000_000), "1 CPU");
        assert_eq!(format_cpus(2_000_000_000), "2 CPUs");
    }

    #[test]
    fn no_live_node_leaves_slots_pending() {
        let members: BTreeMap<_, _> = [member("a")].into();
        let services = Services::from(vec![service("web", 2)]);
        let p = plan(
            &services,
            &members,
            &BTreeSet::new(),
            &BTreeMap::new(),
            &lease(),
        );
        assert!(p.is_empty());
    }

    fn labelled(s: &str, labels: &[(&str, &str)]) -> (NodeId, Member) {
        let (n, mut m) = member(s);
        m.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (n, m)
    }

    fn placed(name: &str, replicas: u32, placement: warren_crdt::Placement) -> Services {
        let (n, mut s) = service(name, replicas);
        s.spec.placement = placement;
        Services::from(vec![(n, s)])
    }

    fn constrained(constraints: &[&str]) -> warren_crdt::Placement {
        warren_crdt::Placement {
            constraints: constraints.iter().map(|c| c.parse().expect(c)).collect(),
            ..Default::default()
        }
    }

    fn nodes_of(assignments: &BTreeMap<SlotId, Assignment>) -> Vec<NodeId> {
        assignments.values().map(|a| a.node.clone()).collect()
    }

    #[test]
    fn constraints_filter_nodes_and_a_slot_that_fits_none_says_which() {
        let mut members: BTreeMap<_, _> = [
            labelled("a", &[("zone", "north")]),
            labelled("b", &[("zone", "south")]),
            labelled("c", &[]),
        ]
        .into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let services = placed("web", 3, constrained(&["node.labels.zone==south"]));
        let mut assignments = BTreeMap::new();
        let p = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &p);
        assert_eq!(nodes_of(&assignments), vec![id("b"); 3], "{p:?}");

        // != matches the member lacking the label, never the one with the value.
        let services = placed("web", 4, constrained(&["node.labels.zone!=south"]));
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        let on: BTreeSet<_> = p.put.iter().map(|(_, a)| a.node.clone()).collect();
        assert_eq!(on, [id("a"), id("c")].into(), "{p:?}");

        // Nobody matches: every slot waits and says why.
        let services = placed("web", 2, constrained(&["node.labels.zone==east"]));
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        assert!(p.put.is_empty(), "{p:?}");
        assert_eq!(p.pending.len(), 2);
        assert!(p
            .pending
            .iter()
            .all(|(_, why)| why == "no node matches node.labels.zone==east"));

        // The only matching member is down: the reason says a live one is missing.
        members.insert(
            labelled("d", &[("zone", "east")]).0,
            labelled("d", &[("zone", "east")]).1,
        );
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        assert_eq!(
            p.pending[0].1,
            "no node matches node.labels.zone==east among the live members"
        );

        // Name, arch, OS and capability constraints.
        let mut gpu = labelled("e", &[]);
        gpu.1.capabilities = ["gpu".to_string()].into();
        gpu.1.platform = warren_crdt::Platform::from_rust("aarch64", "linux");
        members.insert(gpu.0.clone(), gpu.1);
        let mut all = all;
        all.insert(id("e"));
        for (constraint, want) in [
            ("node.capabilities==gpu", id("e")),
            ("node.arch==arm64", id("e")),
            ("node.name==b", id("b")),
            ("node.id==c", id("c")),
        ] {
            let services = placed("web", 1, constrained(&[constraint, "node.os!=windows"]));
            let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
            assert_eq!(
                nodes_of(&p.put.into_iter().collect()),
                vec![want],
                "{constraint}"
            );
        }
        // Unannounced platforms never match ==: only "e" announced one.
        let services = placed("web", 2, constrained(&["node.os==linux"]));
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        assert_eq!(
            nodes_of(&p.put.into_iter().collect()),
            vec![id("e"), id("e")]
        );
    }

    #[test]
    fn a_label_change_moves_the_replicas_it_no_longer_allows() {
        let mut members: BTreeMap<_, _> = [
            labelled("a", &[("zone", "north")]),
            labelled("b", &[("zone", "south")]),
        ]
        .into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let services = placed("web", 2, constrained(&["node.labels.zone==north"]));
        let mut assignments = BTreeMap::new();
        let first = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &first);
        assert_eq!(nodes_of(&assignments), vec![id("a"), id("a")]);
        assert!(plan(&services, &members, &all, &assignments, &lease()).is_empty());

        // "b" becomes north and "a" south: both replicas move to "b" (Swarm's rule).
        members.get_mut(&id("a")).expect("a").labels = [("zone".into(), "south".into())].into();
        members.get_mut(&id("b")).expect("b").labels = [("zone".into(), "north".into())].into();
        let p = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &p);
        assert_eq!(nodes_of(&assignments), vec![id("b"), id("b")], "{p:?}");

        // A copy still running on the node that no longer matches is judged by the move:
        // it stops once the new node confirms its own (make before break).
        members.get_mut(&id("b")).expect("b").labels = [("zone".into(), "south".into())].into();
        members.get_mut(&id("a")).expect("a").labels = [("zone".into(), "north".into())].into();
        let slot0 = assignments.keys().next().expect("slot").clone();
        let running = observed(&[(slot0.slot, copy("b", 30, TaskHealth::None))], false);
        let p = plan_observed(&services, &members, &all, &assignments, &lease(), &running);
        let moved = p.put.iter().find(|(s, _)| *s == slot0).expect("moved");
        assert_eq!(
            (&moved.1.node, &moved.1.displaced),
            (&id("a"), &vec![id("b")])
        );
        members.get_mut(&id("b")).expect("b").labels = [("zone".into(), "north".into())].into();
        members.get_mut(&id("a")).expect("a").labels = [("zone".into(), "south".into())].into();

        // No node matches any more: the replicas leave "b" rather than stay on a node
        // their constraints exclude, and wait with the reason.
        members.get_mut(&id("b")).expect("b").labels.clear();
        let p = plan(&services, &members, &all, &assignments, &lease());
        assert_eq!(p.remove.len(), 2, "{p:?}");
        assert!(p.put.is_empty());
        assert_eq!(p.pending[0].1, "no node matches node.labels.zone==north");
    }

    #[test]
    fn max_replicas_per_node_caps_each_node_and_says_when_all_are_full() {
        let members: BTreeMap<_, _> = [member("a"), member("b")].into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let cap = |n| warren_crdt::Placement {
            max_replicas_per_node: Some(n),
            ..Default::default()
        };
        let services = placed("web", 5, cap(2));
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        assert_eq!(p.put.len(), 4, "{p:?}");
        let mut assignments = BTreeMap::new();
        apply(&mut assignments, &p);
        for n in [id("a"), id("b")] {
            assert_eq!(
                nodes_of(&assignments).iter().filter(|x| **x == n).count(),
                2
            );
        }
        assert_eq!(
            p.pending,
            vec![(
                SlotId {
                    service: ServiceName::new("web").expect("name"),
                    slot: 4
                },
                "max-replicas-per-node 2 reached on every matching node (2)".to_string()
            )]
        );

        // Everything on "a" (placed before the cap), then a cap of 1: the extra slot
        // moves to "b", the third has nowhere to go and is cleared.
        let services = placed("web", 3, cap(1));
        let mut assignments: BTreeMap<SlotId, Assignment> = (0..3)
            .map(|slot| {
                (
                    SlotId {
                        service: ServiceName::new("web").expect("name"),
                        slot,
                    },
                    Assignment {
                        node: id("a"),
                        epoch: Epoch(1),
                        holder: id("a"),
                        spec_generation: 1,
                        displaced: vec![],
                        gpus: Vec::new(),
                    },
                )
            })
            .collect();
        let p = plan(&services, &members, &all, &assignments, &lease());
        apply(&mut assignments, &p);
        assert_eq!(nodes_of(&assignments), vec![id("a"), id("b")], "{p:?}");
        assert_eq!(p.pending.len(), 1);
    }

    #[test]
    fn spread_preference_balances_label_values_before_nodes() {
        // Zone "a" has three nodes, zone "b" one, and "x" has no zone label.
        let members: BTreeMap<_, _> = [
            labelled("a1", &[("zone", "a")]),
            labelled("a2", &[("zone", "a")]),
            labelled("a3", &[("zone", "a")]),
            labelled("b1", &[("zone", "b")]),
        ]
        .into();
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let spread = warren_crdt::Placement {
            preferences: vec!["spread=node.labels.zone".parse().expect("pref")],
            ..Default::default()
        };
        let services = placed("web", 4, spread.clone());
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        let in_zone = |z: &str| {
            p.put
                .iter()
                .filter(|(_, a)| members[&a.node].labels["zone"] == z)
                .count()
        };
        // Two per zone (node spread alone would put three in zone "a").
        assert_eq!((in_zone("a"), in_zone("b")), (2, 2), "{p:?}");
        let a_nodes: BTreeSet<_> = p
            .put
            .iter()
            .filter(|(_, a)| members[&a.node].labels["zone"] == "a")
            .map(|(_, a)| a.node.clone())
            .collect();
        assert_eq!(a_nodes.len(), 2, "then spread over the zone's nodes");

        // Members lacking the label count as one more value.
        let mut members = members;
        members.insert(id("x"), member("x").1);
        let all: BTreeSet<_> = members.keys().cloned().collect();
        let services = placed("web", 3, spread);
        let p = plan(&services, &members, &all, &BTreeMap::new(), &lease());
        let groups: BTreeSet<_> = p
            .put
            .iter()
            .map(|(_, a)| members[&a.node].labels.get("zone").cloned())
            .collect();
        assert_eq!(
            groups,
            [None, Some("a".to_string()), Some("b".to_string())].into()
        );
    }
}
