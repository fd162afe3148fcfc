//! The heal starts nothing for a slot that runs (DESIGN §5): a node assigned a slot that
//! another live member reports running, by an assignment that did not judge that copy (it
//! does not list the member as displaced), starts nothing until the lease holder judges.
//! Found by `warren-sim run --nodes 30 --seed 1 --scenario three-way-split`: a stale
//! assignment from the winning side made a node start a third copy of a slot that ran.

use warren_crdt::test_utils::{cluster_info, member, node_id as id, service_name, spec};
use warren_crdt::{Assignment, DesiredState, Epoch, Lease, SlotId};
use warren_node::core::Millis;
use warren_node::machine::{MachineConfig, NodeMachine};
use warren_node::protocol::{Direct, Report, TaskState, TaskStatus};

fn slot() -> SlotId {
    SlotId {
        service: service_name("svc1"),
        slot: 2,
    }
}

/// Node `n18`'s machine: `svc1` (3 replicas) with slot 2 assigned to `n18` by holder `n02`
/// at epoch 2, with `displaced` as given.
fn machine(displaced: &[&str]) -> NodeMachine {
    let mut state = DesiredState::new_cluster(&cluster_info(), &member("n00")).expect("cluster");
    for m in ["n02", "n07", "n18", "n26"] {
        state.add_member(&member(m)).expect("member");
    }
    state
        .create_service(&slot().service, &spec("img", 3))
        .expect("service");
    let lease = Lease {
        epoch: Epoch(2),
        holder: id("n02"),
    };
    state.claim_lease(&lease).expect("lease");
    let generation = state.services()[&slot().service].generation;
    let assignment = Assignment {
        node: id("n18"),
        epoch: Epoch(2),
        holder: id("n02"),
        spec_generation: generation,
        displaced: displaced.iter().map(|d| id(d)).collect(),
        gpus: Vec::new(),
    };
    state
        .write_assignments(&[(slot(), assignment)], &[])
        .expect("assign");
    let bytes = state.save();
    let state = DesiredState::load(id("n18"), &bytes).expect("load");
    NodeMachine::new(
        id("n18"),
        "n18",
        "test://api",
        state,
        MachineConfig::default(),
        Millis(0),
        7,
    )
}

/// A report of `from` on slot 2 of `svc1` in `state` at the service's generation.
fn report(m: &mut NodeMachine, from: &str, state: TaskState, now: u64) {
    let generation = m.state().services()[&slot().service].generation;
    let report = Report {
        seq: now,
        name: from.into(),
        tasks: vec![TaskStatus {
            service: "svc1".into(),
            slot: 2,
            state,
            generation,
            unassigned: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = serde_json::to_vec(&Direct::Report(Box::new(report))).expect("encode");
    m.handle_direct(&id(from), &bytes, Millis(now));
}

#[test]
fn a_copy_running_elsewhere_unjudged_holds_back_the_start() {
    let mut m = machine(&["n26"]);
    assert!(
        m.desired(Millis(100)).awaiting.is_empty(),
        "nothing reported yet"
    );
    report(&mut m, "n07", TaskState::Running, 100);
    let desired = m.desired(Millis(200));
    assert_eq!(desired.tasks.len(), 1, "the slot is still assigned here");
    assert_eq!(desired.awaiting, [(slot(), id("n07"))].into());
    // A report goes stale after three digest periods (6 s): then it says nothing.
    let stale = 3 * MachineConfig::default().report_ms + 1;
    assert!(m.desired(Millis(100 + stale)).awaiting.is_empty());
    // A copy that stopped holds nothing back.
    report(&mut m, "n07", TaskState::Exited, 7_000);
    assert!(m.desired(Millis(7_100)).awaiting.is_empty());
}

/// Found by the 5-node testnet's failover (`warren-testnet scenario failover`): the dead
/// holder's last report, still fresh, held its successor's start of a re-placed slot back
/// about 4 s, until the report went stale.
#[test]
fn a_copy_reported_by_a_member_held_down_does_not_hold_back_the_start() {
    use warren_node::core::Liveness;
    let mut m = machine(&["n26"]);
    // Nobody answers: SWIM finds every other member down in a few seconds.
    let mut now = 0;
    while m.liveness(&id("n07"), Millis(now)) != Liveness::Down {
        now += 250;
        assert!(now < 30_000, "n07 is down within 30 s");
        m.handle_tick(Millis(now));
        while m.poll_output().is_some() {}
    }
    report(&mut m, "n07", TaskState::Running, now);
    assert!(
        m.desired(Millis(now + 100)).awaiting.is_empty(),
        "a down member's copy is not awaited"
    );
}

#[test]
fn a_copy_the_holder_judged_does_not_hold_back_the_start() {
    // The holder listed n07 as displaced: it chose this node's copy, to be started here
    // (a start-first move, or the heal's keeper): n07 stops once this one runs.
    let mut m = machine(&["n07", "n26"]);
    report(&mut m, "n07", TaskState::Running, 100);
    assert!(m.desired(Millis(200)).awaiting.is_empty());
}
