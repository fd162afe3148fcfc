//! A change whose history the receiver lacks starts a sync with its sender at once
//! (not at the next anti-entropy round): after a heal, the other side's changes arrive by
//! gossip before their history does. Found by `warren-sim run --nodes 30 --seed 7
//! --scenario flapping-link` (one leader 15.2 s after the heal, over the 15 s bound).

use warren_crdt::test_utils::{member_admitted_by, new_cluster, service_name, spec};
use warren_crdt::{DesiredState, NodeId};
use warren_node::core::{Millis, PlumMessage};
use warren_node::machine::{Channel, MachineConfig, NodeMachine, Output, Write};
use warren_node::protocol::Direct;

/// Machines `a-founder`, `b-second0` and a second replica of `b` (`c`), of one document.
fn trio() -> (NodeMachine, NodeMachine, NodeMachine) {
    let mut state = new_cluster("a-founder");
    state
        .add_member(&member_admitted_by("b-second0", "a-founder"))
        .expect("b");
    let bytes = state.save();
    let machine = |id: &str| {
        let state = DesiredState::load(NodeId(id.into()), &bytes).expect("load");
        NodeMachine::new(
            NodeId(id.into()),
            id,
            "test://api",
            state,
            MachineConfig::default(),
            Millis(0),
            7,
        )
    };
    (
        machine("a-founder"),
        machine("b-second0"),
        machine("b-second0"),
    )
}

/// Creates service `name` at `m` and returns the changes it broadcasts, in order (along its
/// broadcast tree: the machine ticks first, so it has neighbours; what the tick writes, e.g.
/// the founder's lease claim, comes first).
fn create(m: &mut NodeMachine, name: &str) -> Vec<Vec<u8>> {
    m.handle_tick(Millis(0));
    m.write(Write::CreateService(
        service_name(name),
        Box::new(spec("warren/busybox:latest", 0)),
    ))
    .expect("write");
    let mut changes = Vec::new();
    while let Some(out) = m.poll_output() {
        let Output::Send { data, .. } = out else {
            continue;
        };
        if let Ok(Direct::Plum(PlumMessage::Gossip { data, .. })) = Direct::decode(&data) {
            if !changes.contains(&data) {
                changes.push(data);
            }
        }
    }
    assert!(!changes.is_empty(), "a broadcast change");
    changes
}

fn sync_requests_to(m: &mut NodeMachine, peer: &str) -> usize {
    let mut n = 0;
    while let Some(out) = m.poll_output() {
        if matches!(&out, Output::SyncRequest { to, .. } if to.as_str() == peer) {
            n += 1;
        }
    }
    n
}

#[test]
fn a_change_with_a_missing_history_starts_a_sync_with_its_sender() {
    let (mut a, mut b, mut c) = trio();
    let a_id = NodeId("a-founder".into());
    sync_requests_to(&mut b, "a-founder");
    let first = create(&mut a, "one");
    let second = create(&mut a, "two");
    // In order: nothing is missing, no sync.
    sync_requests_to(&mut c, "a-founder");
    for change in first.iter().chain(&second) {
        c.handle_gossip(Channel::Changes, &a_id, change, Millis(10));
    }
    assert_eq!(sync_requests_to(&mut c, "a-founder"), 0);
    assert_eq!(c.state().services().len(), 2);
    // The second without the first: held back, and a sync with the sender starts.
    let last = second.last().expect("a change");
    b.handle_gossip(Channel::Changes, &a_id, last, Millis(10));
    assert!(!b.state().services().contains_key(&service_name("two")));
    assert_eq!(sync_requests_to(&mut b, "a-founder"), 1);
}
