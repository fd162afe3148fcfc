//! `node update --availability` through the node machine: the write reaches every peer, the
//! snapshot (`node ls`, `node inspect`, `service ps`) shows the availability and the slots
//! that stay on a drained node with the reason; an unknown member is refused.

mod support;

use support::Cluster;
use warren_core::Write;
use warren_crdt::test_utils::{service_name, spec};
use warren_crdt::{Availability, NodeId, OnPartition};

#[test]
fn a_drained_node_lists_the_wait_slots_that_stay_and_every_peer_sees_it() {
    let mut cluster = Cluster::founded("a", false);
    cluster.tick();
    let token = cluster.mint_token(0);
    cluster.join(0, "b", &token, false).expect("b is admitted");
    cluster.advance(1_000);
    let mut web = spec("nginx", 1);
    web.partition.on_partition = OnPartition::Wait;
    cluster
        .machine(0)
        .write(Write::CreateService(service_name("web"), Box::new(web)))
        .expect("create");
    cluster.advance(2_000);
    let now = cluster.now;
    let task = cluster.machine(0).snapshot(now, 0, 0).tasks[0].clone();
    let on = task.node.clone();

    // Drained at b: a learns it; the slot stays (on-partition wait) and says so.
    cluster
        .machine(1)
        .write(Write::SetNodeAvailability {
            node: on.clone(),
            availability: Availability::Drain,
        })
        .expect("drain");
    cluster.advance(2_000);
    let now = cluster.now;
    let snapshot = cluster.machine(0).snapshot(now, 0, 0);
    let member = snapshot
        .members
        .iter()
        .find(|m| m.id == on)
        .expect("the drained member");
    assert_eq!(member.availability, Availability::Drain);
    assert_eq!(
        member.stays,
        vec!["web.0: stays: on-partition wait".to_string()]
    );
    let task = &snapshot.tasks[0];
    assert_eq!(task.node, on, "a wait slot does not leave a drained node");
    assert!(
        task.status.starts_with("stays: on-partition wait"),
        "{task:?}"
    );
    for other in snapshot.members.iter().filter(|m| m.id != on) {
        assert_eq!(other.availability, Availability::Active);
        assert!(other.stays.is_empty());
    }

    // Active again: nothing stays for a reason any more.
    cluster
        .machine(0)
        .write(Write::SetNodeAvailability {
            node: on.clone(),
            availability: Availability::Active,
        })
        .expect("active");
    cluster.advance(1_000);
    let now = cluster.now;
    let snapshot = cluster.machine(1).snapshot(now, 0, 0);
    assert!(snapshot
        .members
        .iter()
        .all(|m| m.availability == Availability::Active));
    assert!(!snapshot.tasks[0].status.starts_with("stays"));

    let unknown = cluster.machine(0).write(Write::SetNodeAvailability {
        node: NodeId("nobody".into()),
        availability: Availability::Pause,
    });
    assert!(unknown.is_err());
}
