//! A scale merged at a heal never leaves a slot without a running copy (DESIGN §5, the
//! zero-replica window). A node's view during a heal can be a partial merge — a causal prefix
//! of the other side's history — whose replica count the rest of the merge raises again.
//! A node that stopped its copy on the lower count left the slot with no running copy until
//! the higher count came in and it started one afresh. Seen on the testnet's split-brain under
//! load: the other side had scaled twice during the split (down, then up again).
//!
//! The rule: a node keeps the copy of a slot beyond the replica count while the slot's
//! assignment stands; the lease holder's removal of the slot stops it.

use warren_crdt::test_utils::{cluster_info, member, node_id as id, service_name, spec};
use warren_crdt::{
    Assignment, ClusterInfo, DesiredState, Epoch, Lease, NodeId, ServiceName, SlotId,
};
use warren_node::core::{
    ActualTask, ActualTaskState, Millis, RuntimeAction, Supervisor, TaskHealth,
};
use warren_node::machine::{Channel, MachineConfig, NodeMachine};
use warren_node::protocol::TaskState;

fn svc() -> ServiceName {
    service_name("web")
}

fn slot(n: u32) -> SlotId {
    SlotId {
        service: svc(),
        slot: n,
    }
}

fn lease() -> Lease {
    Lease {
        epoch: Epoch(1),
        holder: id("n00"),
    }
}

/// The document both sides start the split from: `web` at 6 replicas, slot 5 assigned to
/// `n02` and the others to `n00` and `n01`, by `n00` at epoch 1. Returned saved, for each side to load as its own replica.
fn before_split() -> Vec<u8> {
    let info = ClusterInfo {
        name: "shop".into(),
        ..cluster_info()
    };
    let mut state = DesiredState::new_cluster(&info, &member("n00")).expect("cluster");
    for m in ["n01", "n02"] {
        state.add_member(&member(m)).expect("member");
    }
    state
        .create_service(&svc(), &spec("img", 6))
        .expect("service");
    state.claim_lease(&lease()).expect("lease");
    let generation = state.services()[&svc()].generation;
    let assignments: Vec<(SlotId, Assignment)> = (0..6)
        .map(|n| {
            (
                slot(n),
                Assignment {
                    node: if n == 5 {
                        id("n02")
                    } else {
                        id(&format!("n0{}", n % 2))
                    },
                    epoch: Epoch(1),
                    holder: id("n00"),
                    spec_generation: generation,
                    displaced: Vec::new(),
                    gpus: Vec::new(),
                },
            )
        })
        .collect();
    state.write_assignments(&assignments, &[]).expect("assign");
    state.save()
}

/// Node `node`'s machine on its replica loaded from `bytes`, started at time 0.
fn machine_of(node: &str, bytes: &[u8]) -> NodeMachine {
    let state = DesiredState::load(id(node), bytes).expect("load");
    NodeMachine::new(
        id(node),
        node,
        "test://api",
        state,
        MachineConfig::default(),
        Millis(0),
        7,
    )
}

/// The running container of slot 5 on `n02`, at `generation`.
fn copy_of_slot_5(generation: u64) -> ActualTask {
    ActualTask {
        id: "c5".into(),
        slot: slot(5),
        generation,
        state: ActualTaskState::Running,
        exit_code: None,
        health: TaskHealth::None,
        detail: String::new(),
        engine_state: TaskState::Running,
        status: String::new(),
        ports: Vec::new(),
        age_ms: Some(60_000),
        gpus: Vec::new(),
    }
}

/// Node `n02`'s reconcile round at `now` against its one running container (slot 5).
fn round(m: &mut NodeMachine, sup: &mut Supervisor, now: u64) -> Vec<RuntimeAction> {
    let generation = m.state().services()[&svc()].generation;
    let desired = m.desired(Millis(now));
    sup.set_held(desired.held);
    sup.set_awaiting(desired.awaiting);
    sup.round(&desired.tasks, &[copy_of_slot_5(generation)], Millis(now))
        .actions
}

#[test]
fn a_partial_merge_of_the_other_sides_scales_stops_nothing() {
    let bytes = before_split();
    // Side A (n00, the holder there) scales down, then up again, during the split.
    let mut a = DesiredState::load(id("n00"), &bytes).expect("load a");
    let down = a.scale_service(&svc(), 4).expect("scale down");
    let up = a.scale_service(&svc(), 7).expect("scale up");
    // Side B: n02, which runs slot 5.
    let mut m = machine_of("n02", &bytes);
    let mut sup = Supervisor::new();
    assert!(
        round(&mut m, &mut sup, 0).is_empty(),
        "slot 5 runs as desired"
    );

    // The heal delivers A's first scale only: this node reads 4 replicas for now.
    m.handle_gossip(Channel::Changes, &id("n00"), &down, Millis(100));
    assert_eq!(m.view().services[&svc()].spec.replicas, 4);
    let desired = m.desired(Millis(100));
    assert!(desired.tasks.iter().all(|t| t.slot != slot(5)));
    let hold = desired.held.get(&slot(5)).expect("slot 5 held");
    assert!(!hold.releases(hold.generation) && !hold.releases(hold.generation + 1));
    let actions = round(&mut m, &mut sup, 100);
    assert!(
        actions.is_empty(),
        "the copy of slot 5 is kept while its assignment stands: {actions:?}"
    );

    // The rest of the merge: 7 replicas. Slot 5 is desired again and its copy never stopped.
    m.handle_gossip(Channel::Changes, &id("n00"), &up, Millis(200));
    assert_eq!(m.view().services[&svc()].spec.replicas, 7);
    assert!(m
        .desired(Millis(200))
        .tasks
        .iter()
        .any(|t| t.slot == slot(5)));
    let actions = round(&mut m, &mut sup, 200);
    assert!(
        actions.is_empty(),
        "the same container runs slot 5: {actions:?}"
    );
}

/// The other side's holder scaled down and removed slot 5 during the split; the merged count
/// keeps slot 5 (here: that side scaled up again before placing it). This node runs slot 5:
/// it keeps its copy until the holder places the slot — on this node, by the keep rule.
/// Seen on the testnet's `split-brain`: the copy was removed at the heal and the slot started
/// afresh on another node 2 s later.
#[test]
fn a_slot_the_other_side_unassigned_is_held_until_placed() {
    let bytes = before_split();
    let mut a = DesiredState::load(id("n00"), &bytes).expect("load a");
    let down = a.scale_service(&svc(), 4).expect("scale down");
    let removal = a
        .write_assignments(&[], &[slot(4), slot(5)])
        .expect("remove")
        .expect("a change");
    let up = a.scale_service(&svc(), 7).expect("scale up");
    let mut m = machine_of("n02", &bytes);
    let mut sup = Supervisor::new();
    for change in [&down, &removal, &up] {
        m.handle_gossip(Channel::Changes, &id("n00"), change, Millis(100));
    }
    assert!(!m.view().assignments.contains_key(&slot(5)));
    let desired = m.desired(Millis(100));
    assert!(desired.held.contains_key(&slot(5)), "{:?}", desired.held);
    assert!(
        desired.held.contains_key(&slot(6)),
        "a new slot is held too: there is nothing of it to keep, and nothing is started"
    );
    let actions = round(&mut m, &mut sup, 100);
    assert!(actions.is_empty(), "slot 5's copy is kept: {actions:?}");
}

#[test]
fn a_scale_down_stops_the_copy_once_the_holder_removes_the_slot() {
    let bytes = before_split();
    let mut holder = DesiredState::load(id("n00"), &bytes).expect("load holder");
    let down = holder.scale_service(&svc(), 4).expect("scale down");
    let mut m = machine_of("n02", &bytes);
    let mut sup = Supervisor::new();
    m.handle_gossip(Channel::Changes, &id("n00"), &down, Millis(100));
    assert!(
        round(&mut m, &mut sup, 100).is_empty(),
        "held until removed"
    );

    // The holder's round removes slots 4 and 5: now the copy stops.
    let removal = holder
        .write_assignments(&[], &[slot(4), slot(5)])
        .expect("remove")
        .expect("a change");
    m.handle_gossip(Channel::Changes, &id("n00"), &removal, Millis(200));
    assert!(!m.desired(Millis(200)).held.contains_key(&slot(5)));
    let actions = round(&mut m, &mut sup, 200);
    assert!(
        matches!(&actions[..], [RuntimeAction::Remove { id, .. }] if id == "c5"),
        "{actions:?}"
    );
}

#[test]
fn a_deleted_service_stops_at_once() {
    let bytes = before_split();
    let mut a = DesiredState::load(id("n00"), &bytes).expect("load a");
    let delete = a.delete_service(&svc()).expect("delete");
    let mut m = machine_of("n02", &bytes);
    let mut sup = Supervisor::new();
    m.handle_gossip(Channel::Changes, &id("n00"), &delete, Millis(100));
    let actions = round(&mut m, &mut sup, 100);
    assert!(
        matches!(&actions[..], [RuntimeAction::Remove { id, .. }] if id == "c5"),
        "{actions:?}"
    );
}

/// Ticks `m` every tick period from `from` to `to` (ms); the other members answer its probes,
/// so the holder keeps its lease and its members live.
fn run(m: &mut NodeMachine, from: u64, to: u64) {
    let config = MachineConfig::default();
    let up = |n: &NodeId| ["n01", "n02"].iter().any(|p| id(p) == *n);
    let mut now = from;
    while now < to {
        now += config.core.tick_ms;
        m.handle_tick(Millis(now));
        warren_node::machine::answer_probes(m, up, Millis(now));
    }
}

/// The holder `n00`'s machine, past its first lease TTL: it schedules under its lease.
fn holder(bytes: &[u8]) -> NodeMachine {
    let mut m = machine_of("n00", bytes);
    run(&mut m, 0, 3_000);
    assert_eq!(
        m.view().assignments.len(),
        6,
        "the holder keeps what stands"
    );
    m
}

/// The lease holder in the middle of a heal's sync: it has the other side's scale down to 4
/// and a later change of that side whose history (a scale up to 7) has not arrived. It
/// removes neither slot 4 nor 5 until the merge is complete; then 7 replicas stand.
#[test]
fn the_holder_defers_a_scale_down_while_its_merge_is_partial() {
    let bytes = before_split();
    let mut other = DesiredState::load(id("n01"), &bytes).expect("load other side");
    let down = other.scale_service(&svc(), 4).expect("scale down");
    let up = other.scale_service(&svc(), 7).expect("scale up");
    let later = other
        .set_cluster_settings(&[warren_crdt::ClusterSetting::Rebalance(false)])
        .expect("settings");
    let mut m = holder(&bytes);
    m.handle_gossip(Channel::Changes, &id("n01"), &down, Millis(3_000));
    m.handle_gossip(Channel::Changes, &id("n01"), &later, Millis(3_000));
    assert!(m.state_mut().has_missing_deps(), "the scale up is missing");
    assert_eq!(m.view().services[&svc()].spec.replicas, 4);
    run(&mut m, 3_000, 5_000);
    assert!(
        m.view().assignments.contains_key(&slot(5)),
        "slot 5 removed on a partial merge"
    );
    m.handle_gossip(Channel::Changes, &id("n01"), &up, Millis(5_000));
    assert!(!m.state_mut().has_missing_deps());
    run(&mut m, 5_000, 5_500);
    let view = m.view();
    assert_eq!(view.services[&svc()].spec.replicas, 7);
    assert_eq!(
        view.assignments.keys().map(|s| s.slot).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
}

/// History that never arrives holds a scale down back for [`MERGE_WAIT_MS`] at most; a
/// complete merge does not hold it back at all.
#[test]
fn history_that_never_arrives_holds_a_scale_down_back_for_a_bounded_time() {
    let bytes = before_split();
    let mut other = DesiredState::load(id("n01"), &bytes).expect("load other side");
    let down = other.scale_service(&svc(), 4).expect("scale down");
    let _lost = other
        .set_cluster_settings(&[warren_crdt::ClusterSetting::Rebalance(true)])
        .expect("settings");
    let later = other
        .set_cluster_settings(&[warren_crdt::ClusterSetting::Rebalance(false)])
        .expect("settings");
    let mut m = holder(&bytes);
    m.handle_gossip(Channel::Changes, &id("n01"), &down, Millis(3_000));
    m.handle_gossip(Channel::Changes, &id("n01"), &later, Millis(3_000));
    let wait = warren_node::machine::MERGE_WAIT_MS;
    run(&mut m, 3_000, 3_000 + wait - 500);
    assert!(m.view().assignments.contains_key(&slot(5)));
    run(&mut m, 3_000 + wait - 500, 3_000 + wait + 500);
    assert!(
        m.state_mut().has_missing_deps(),
        "the lost change never came"
    );
    assert_eq!(
        m.view()
            .assignments
            .keys()
            .map(|s| s.slot)
            .collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "slots 4 and 5 removed once the wait is over"
    );

    // Without a partial merge, the holder removes a scale down's slots in its next round.
    let mut m = holder(&bytes);
    m.handle_gossip(Channel::Changes, &id("n01"), &down, Millis(3_000));
    run(&mut m, 3_000, 3_500);
    assert_eq!(m.view().assignments.len(), 4);
}

/// A replica count far beyond the bound, written into a peer's document (bypassing the API's
/// validation): the node holds at most `MAX_REPLICAS` unassigned slots, promptly, and runs
/// none of them (the spec is rejected).
#[test]
fn an_absurd_replica_count_from_a_peer_holds_a_bounded_number_of_slots() {
    let bytes = before_split();
    let mut peer = DesiredState::load(id("n01"), &bytes).expect("load peer");
    let absurd = peer.scale_service(&svc(), u32::MAX).expect("scale");
    let mut m = machine_of("n02", &bytes);
    m.handle_gossip(Channel::Changes, &id("n01"), &absurd, Millis(100));
    let desired = m.desired(Millis(100));
    assert!(desired.tasks.is_empty(), "a rejected spec runs nothing");
    assert!(desired.held.len() <= warren_crdt::MAX_REPLICAS as usize);
}
