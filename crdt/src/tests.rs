//! Merge-rule and persistence tests.

use super::*;

fn member(id: &str) -> Member {
    Member {
        id: NodeId(id.into()),
        name: id.into(),
        addrs: vec![format!("/ip4/127.0.0.1/udp/1/quic-v1/p2p/{id}")],
        labels: [("zone".to_string(), "a".to_string())].into(),
        admitted_by: NodeId(id.into()),
        admitted_at: 1,
        state: MemberState::Active,
    }
}

fn spec(replicas: u32) -> ServiceSpec {
    ServiceSpec {
        image: "warren/busybox:latest".into(),
        replicas,
        command: vec!["httpd".into(), "-f".into()],
        env: [("K".to_string(), "V".to_string())].into(),
        ports: vec![PortSpec {
            container_port: 80,
            host_port: None,
        }],
    }
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid name")
}

/// Runs the sync protocol between two replicas until neither has anything to send.
fn sync_pair(a: &mut DesiredState, b: &mut DesiredState) {
    let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
    for _ in 0..32 {
        let m1 = a.generate_sync_message(&mut sa);
        if let Some(m) = &m1 {
            b.receive_sync_message(&mut sb, m).expect("receive");
        }
        let m2 = b.generate_sync_message(&mut sb);
        if let Some(m) = &m2 {
            a.receive_sync_message(&mut sa, m).expect("receive");
        }
        if m1.is_none() && m2.is_none() {
            return;
        }
    }
    panic!("sync did not finish in 32 rounds");
}

/// A cluster founded by "A" and a second replica "B" that has synced with it.
fn pair() -> (DesiredState, DesiredState) {
    let info = ClusterInfo {
        id: "c1".into(),
        name: "lab".into(),
        created_at: 5,
    };
    let mut a = DesiredState::new_cluster(&info, &member("A")).expect("init");
    let mut b = DesiredState::empty(NodeId("B".into()));
    sync_pair(&mut a, &mut b);
    (a, b)
}

#[test]
fn typed_round_trip_of_every_section() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(3)).expect("create");
    a.claim_lease(&Lease {
        epoch: Epoch(1),
        holder: NodeId("A".into()),
    })
    .expect("lease");
    let slot = SlotId {
        service: name("web"),
        slot: 2,
    };
    let assignment = Assignment {
        node: NodeId("B".into()),
        epoch: Epoch(1),
        holder: NodeId("A".into()),
        spec_generation: 1,
    };
    a.write_assignments(&[(slot.clone(), assignment.clone())], &[])
        .expect("assign");
    let token = TokenRecord {
        id: "t1".into(),
        digest: "ab".into(),
        expires_at: 99,
        uses_left: 1,
        role: "member".into(),
    };
    a.add_token(&token).expect("token");
    sync_pair(&mut a, &mut b);

    assert_eq!(b.cluster().map(|c| c.name), Some("lab".into()));
    assert_eq!(b.members().get(&NodeId("A".into())), Some(&member("A")));
    let web = b.service(&name("web")).expect("service");
    assert_eq!(web.spec, spec(3));
    assert_eq!(web.generation, 1);
    assert_eq!(b.lease().map(|l| l.epoch), Some(Epoch(1)));
    assert_eq!(b.assignments().get(&slot), Some(&assignment));
    assert_eq!(b.tokens().get("t1"), Some(&token));

    b.admit_with_token("t1", &member("C")).expect("admit");
    assert_eq!(b.tokens()["t1"].uses_left, 0);
    assert!(b.members().contains_key(&NodeId("C".into())));
}

#[test]
fn concurrent_edits_of_different_fields_both_survive() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(1)).expect("create");
    sync_pair(&mut a, &mut b);
    a.scale_service(&name("web"), 5).expect("scale");
    // B edits another part of the same service concurrently: its tombstone field stays false,
    // but a different service is created in the same map.
    b.create_service(&name("api"), &spec(2)).expect("create");
    sync_pair(&mut a, &mut b);
    for doc in [&a, &b] {
        assert_eq!(doc.service(&name("web")).map(|s| s.spec.replicas), Some(5));
        assert_eq!(doc.service(&name("api")).map(|s| s.spec.replicas), Some(2));
    }
}

#[test]
fn concurrent_edits_of_one_field_resolve_identically() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(1)).expect("create");
    sync_pair(&mut a, &mut b);
    a.scale_service(&name("web"), 4).expect("scale a");
    b.scale_service(&name("web"), 7).expect("scale b");
    sync_pair(&mut a, &mut b);
    let ra = a.service(&name("web")).map(|s| s.spec.replicas);
    let rb = b.service(&name("web")).map(|s| s.spec.replicas);
    assert_eq!(ra, rb);
    assert!(matches!(ra, Some(4) | Some(7)));
    assert_eq!(a.heads(), b.heads());
}

#[test]
fn delete_wins_over_concurrent_update_and_recreate_raises_generation() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(1)).expect("create");
    sync_pair(&mut a, &mut b);
    a.delete_service(&name("web")).expect("delete");
    b.scale_service(&name("web"), 9).expect("scale");
    sync_pair(&mut a, &mut b);
    assert!(a.service(&name("web")).is_none());
    assert!(b.service(&name("web")).is_none());
    assert!(matches!(
        a.scale_service(&name("web"), 2),
        Err(CrdtError::UnknownService(_))
    ));
    a.create_service(&name("web"), &spec(2)).expect("re-create");
    sync_pair(&mut a, &mut b);
    let web = b.service(&name("web")).expect("re-created");
    assert_eq!(web.generation, 2);
    assert!(matches!(
        b.create_service(&name("web"), &spec(1)),
        Err(CrdtError::ServiceExists(_))
    ));
}

#[test]
fn lease_conflict_after_partition_higher_epoch_then_peer_id_wins() {
    let (mut a, mut b) = pair();
    a.claim_lease(&Lease {
        epoch: Epoch(3),
        holder: NodeId("A".into()),
    })
    .expect("a");
    b.claim_lease(&Lease {
        epoch: Epoch(4),
        holder: NodeId("B".into()),
    })
    .expect("b");
    sync_pair(&mut a, &mut b);
    let expected = Lease {
        epoch: Epoch(4),
        holder: NodeId("B".into()),
    };
    assert_eq!(a.lease(), Some(expected.clone()));
    assert_eq!(b.lease(), Some(expected));

    // Same epoch on both sides: the greater peer id stands, everywhere.
    a.claim_lease(&Lease {
        epoch: Epoch(5),
        holder: NodeId("A".into()),
    })
    .expect("a");
    b.claim_lease(&Lease {
        epoch: Epoch(5),
        holder: NodeId("B".into()),
    })
    .expect("b");
    sync_pair(&mut a, &mut b);
    assert_eq!(a.lease().map(|l| l.holder), Some(NodeId("B".into())));
    assert_eq!(b.lease().map(|l| l.holder), Some(NodeId("B".into())));
}

#[test]
fn two_assignments_of_one_slot_the_greater_epoch_stands() {
    let (mut a, mut b) = pair();
    let slot = SlotId {
        service: name("web"),
        slot: 0,
    };
    let by = |node: &str, epoch, holder: &str| Assignment {
        node: NodeId(node.into()),
        epoch: Epoch(epoch),
        holder: NodeId(holder.into()),
        spec_generation: 1,
    };
    a.write_assignments(&[(slot.clone(), by("A", 7, "A"))], &[])
        .expect("a");
    b.write_assignments(&[(slot.clone(), by("B", 6, "B"))], &[])
        .expect("b");
    sync_pair(&mut a, &mut b);
    assert_eq!(a.assignments()[&slot], by("A", 7, "A"));
    assert_eq!(b.assignments()[&slot], by("A", 7, "A"));
}

#[test]
fn history_names_the_author_node() {
    let (mut a, mut b) = pair();
    b.create_service(&name("web"), &spec(1)).expect("create");
    sync_pair(&mut a, &mut b);
    let history = a.history();
    let entry = history
        .iter()
        .find(|h| h.message == "service create web")
        .expect("entry");
    assert_eq!(entry.node, Some(NodeId("B".into())));
    assert!(history
        .iter()
        .any(|h| h.message == "cluster init lab" && h.node == Some(NodeId("A".into()))));
}

#[test]
fn store_round_trip_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeId("A".into());
    let (mut a, _) = pair();
    {
        let mut store = Store::open(dir.path()).expect("open");
        assert!(store.load(&node).expect("load").state.is_none());
        store.persist(&mut a, true).expect("persist");
        a.create_service(&name("web"), &spec(3)).expect("create");
        store.persist(&mut a, true).expect("persist");
    }
    let mut store = Store::open(dir.path()).expect("reopen");
    let mut loaded = store.load(&node).expect("load").state.expect("state");
    assert_eq!(loaded.heads(), a.heads());
    assert_eq!(
        loaded.service(&name("web")).map(|s| s.spec.replicas),
        Some(3)
    );

    // Writes after a reload continue the log, and compaction keeps everything.
    loaded.scale_service(&name("web"), 1).expect("scale");
    store.persist(&mut loaded, true).expect("persist");
    store.compact(&mut loaded).expect("compact");
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let mut again = store.load(&node).expect("load").state.expect("state");
    assert_eq!(again.heads(), loaded.heads());
    assert_eq!(
        again.service(&name("web")).map(|s| s.spec.replicas),
        Some(1)
    );
}

#[test]
fn service_names_follow_the_dns_label_rule() {
    assert!(ServiceName::new("web-1").is_ok());
    for bad in ["", "Web", "-web", "web-", "a_b", &"x".repeat(64)] {
        assert!(ServiceName::new(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn garbage_from_a_peer_is_an_error_not_a_panic() {
    let (mut a, _) = pair();
    assert!(a.apply_change(b"not a change").is_err());
    assert!(a
        .receive_sync_message(&mut SyncState::new(), &[0x42, 1, 2, 3])
        .is_err());
}
