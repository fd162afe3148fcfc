//! Merge-rule and persistence tests.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

fn member(id: &str) -> Member {
    Member {
        id: NodeId(id.into()),
        name: id.into(),
        addrs: vec![format!("/ip4/127.0.0.1/udp/1/quic-v1/p2p/{id}")],
        labels: [("zone".to_string(), "a".to_string())].into(),
        capabilities: Default::default(),
        platform: Default::default(),
        admitted_by: NodeId(id.into()),
        admitted_at: 1,
        state: MemberState::Active,
        availability: Default::default(),
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
            mode: PublishMode::Host,
        }],
        secrets: Vec::new(),
        ..Default::default()
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
        displaced: Vec::new(),
        gpus: Vec::new(),
    };
    a.write_assignments(&[(slot.clone(), assignment.clone())], &[])
        .expect("assign");
    let token = TokenRecord {
        id: "t1".into(),
        digest: "ab".into(),
        expires_at: 99,
        uses_left: 1,
        role: "member".into(),
        created_at: 7,
        labels: Default::default(),
        revoked: false,
        minted_by: String::new(),
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

/// Two sides each update a service to a new image (each writes generation 2): the merged
/// document reads generation 3, which neither side ran, on both replicas, so the merged spec
/// is rolled out everywhere; the next update writes one value again (4).
#[test]
fn concurrent_updates_read_a_generation_neither_side_ran() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(2)).expect("create");
    sync_pair(&mut a, &mut b);
    let with_image = |doc: &DesiredState, image: &str| ServiceSpec {
        image: image.into(),
        ..doc.service(&name("web")).expect("web").spec
    };
    let spec_a = with_image(&a, "web:a");
    a.update_service(&name("web"), &spec_a).expect("update a");
    let spec_b = with_image(&b, "web:b");
    b.update_service(&name("web"), &spec_b).expect("update b");
    assert_eq!(a.service(&name("web")).map(|s| s.generation), Some(2));
    sync_pair(&mut a, &mut b);
    let (wa, wb) = (
        a.service(&name("web")).expect("a"),
        b.service(&name("web")).expect("b"),
    );
    assert_eq!(wa.generation, 3);
    assert_eq!(wb.generation, 3);
    assert_eq!(wa.spec, wb.spec);
    assert!(matches!(wa.spec.image.as_str(), "web:a" | "web:b"));
    // The sides' records target generation 2: no longer the service's.
    assert_eq!(wa.rollout.map(|r| r.to_generation), Some(2));
    let next = with_image(&a, "web:c");
    a.update_service(&name("web"), &next).expect("update c");
    sync_pair(&mut a, &mut b);
    assert_eq!(b.service(&name("web")).map(|s| s.generation), Some(4));
    // A scale on each side leaves the generation alone.
    a.scale_service(&name("web"), 3).expect("scale a");
    b.scale_service(&name("web"), 5).expect("scale b");
    sync_pair(&mut a, &mut b);
    assert_eq!(a.service(&name("web")).map(|s| s.generation), Some(4));
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
        displaced: Vec::new(),
        gpus: Vec::new(),
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
fn a_lower_rank_never_replaces_a_higher_one_even_causally_after() {
    let (mut a, mut b) = pair();
    let slot = SlotId {
        service: name("web"),
        slot: 0,
    };
    let by = |node: &str, epoch, holder: &str, displaced: &[&str]| Assignment {
        node: NodeId(node.into()),
        epoch: Epoch(epoch),
        holder: NodeId(holder.into()),
        spec_generation: 1,
        displaced: displaced.iter().map(|d| NodeId((*d).into())).collect(),
        gpus: Vec::new(),
    };
    // B (epoch 7) decides; A, a holder at epoch 6 that has heard it, writes after it.
    b.write_assignments(&[(slot.clone(), by("B", 7, "B", &["A"]))], &[])
        .expect("b");
    sync_pair(&mut a, &mut b);
    let stale = a
        .write_assignments(&[(slot.clone(), by("A", 6, "A", &[]))], &[])
        .expect("a");
    assert!(stale.is_none(), "a fenced write writes nothing");
    sync_pair(&mut a, &mut b);
    for doc in [&a, &b] {
        assert_eq!(doc.assignments()[&slot], by("B", 7, "B", &["A"]));
    }
    // The same rank (the holder's next round) and a greater one do replace it.
    a.write_assignments(&[(slot.clone(), by("C", 7, "B", &[]))], &[])
        .expect("same rank");
    assert_eq!(a.assignments()[&slot].node, NodeId("C".into()));
    a.write_assignments(&[(slot.clone(), by("A", 8, "A", &[]))], &[])
        .expect("greater");
    assert_eq!(a.assignments()[&slot], by("A", 8, "A", &[]));
}

#[test]
fn without_fencing_the_conflict_winner_stands_and_a_lower_write_replaces_a_higher() {
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
        displaced: Vec::new(),
        gpus: Vec::new(),
    };
    // Concurrent writes: both values stand; fenced, the greater rank is read; unfenced,
    // Automerge's own winner is, the same on both replicas whatever its rank.
    a.write_assignments(&[(slot.clone(), by("A", 7, "A"))], &[])
        .expect("a");
    b.write_assignments(&[(slot.clone(), by("B", 6, "B"))], &[])
        .expect("b");
    sync_pair(&mut a, &mut b);
    let mut values = a.assignment_values()[&slot].clone();
    values.sort_by(|x, y| x.rank().cmp(&y.rank()));
    assert_eq!(values, vec![by("B", 6, "B"), by("A", 7, "A")]);
    // The ranks alone, as the simulator's fencing check reads them: the same values in the
    // same order.
    let ranks: Vec<(Epoch, NodeId)> = a.assignment_values()[&slot]
        .iter()
        .map(|v| (v.epoch, v.holder.clone()))
        .collect();
    assert_eq!(ranks.len(), 2);
    assert_eq!(a.assignment_ranks()[&slot], ranks);
    let winner = a.assignments_with(Fencing::Off)[&slot].clone();
    assert_eq!(b.assignments_with(Fencing::Off)[&slot], winner);
    assert_eq!(a.assignments_with(Fencing::On)[&slot], by("A", 7, "A"));
    // A lower rank written causally after a higher one replaces it without fencing.
    let lower = a
        .write_assignments_with(&[(slot.clone(), by("C", 5, "C"))], &[], Fencing::Off)
        .expect("unfenced");
    assert!(lower.is_some());
    assert_eq!(a.assignments()[&slot], by("C", 5, "C"));
    assert_eq!(a.assignment_values()[&slot], vec![by("C", 5, "C")]);
}

#[test]
fn has_change_finds_a_change_by_its_hash() {
    let (mut a, mut b) = pair();
    b.create_service(&name("web"), &spec(1)).expect("create");
    let hash = b.history().pop().expect("a change").hash;
    assert!(b.has_change(&hash));
    assert!(!a.has_change(&hash));
    sync_pair(&mut a, &mut b);
    assert!(a.has_change(&hash));
    assert!(!a.has_change("not a hash"));
}

#[test]
fn changes_since_lists_exactly_the_changes_taken_in_after_the_heads() {
    let (mut a, mut b) = pair();
    let before = a.heads();
    assert!(a.changes_since(&before).is_empty());
    b.create_service(&name("web"), &spec(1)).expect("create");
    b.create_service(&name("db"), &spec(1)).expect("create");
    a.create_service(&name("own"), &spec(1)).expect("create");
    sync_pair(&mut a, &mut b);
    let new = a.changes_since(&before);
    let messages: Vec<&str> = new.iter().map(|c| c.message.as_str()).collect();
    assert_eq!(new.len(), 3, "{messages:?}");
    for m in [
        "service create web",
        "service create db",
        "service create own",
    ] {
        assert!(messages.contains(&m), "{m} missing from {messages:?}");
    }
    let web = new.iter().find(|c| c.message == "service create web");
    assert_eq!(web.and_then(|c| c.node.clone()), Some(NodeId("B".into())));
    assert!(new.iter().all(|c| a.has_change(&c.hash)));
    // Nothing new after the current heads; every change when no head is known.
    let heads = a.heads();
    assert!(a.changes_since(&heads).is_empty());
    assert_eq!(a.changes_since(&[]).len(), a.history().len());
    assert_eq!(
        a.changes_since(&["not a hash".to_string()]).len(),
        a.history().len()
    );
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

#[test]
fn service_history_lists_only_changes_that_touched_the_service() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(2))
        .expect("create web");
    a.create_service(&name("api"), &spec(1))
        .expect("create api");
    sync_pair(&mut a, &mut b);
    b.scale_service(&name("web"), 3).expect("scale web");
    let slot = SlotId {
        service: name("web"),
        slot: 0,
    };
    let assignment = Assignment {
        node: NodeId("B".into()),
        epoch: Epoch(1),
        holder: NodeId("A".into()),
        spec_generation: 1,
        displaced: Vec::new(),
        gpus: Vec::new(),
    };
    a.write_assignments(&[(slot, assignment)], &[])
        .expect("assign");
    a.scale_service(&name("api"), 4).expect("scale api");
    sync_pair(&mut a, &mut b);

    let web: Vec<String> = a
        .service_history(&name("web"), 10)
        .into_iter()
        .map(|h| h.message)
        .collect();
    assert_eq!(web.len(), 3, "{web:?}");
    assert!(web.contains(&"service create web".to_string()));
    assert!(web.contains(&"service scale web 3".to_string()));
    assert!(web.iter().any(|m| m.starts_with("schedule")));
    let api: Vec<String> = b
        .service_history(&name("api"), 10)
        .into_iter()
        .map(|h| h.message)
        .collect();
    assert_eq!(api, vec!["service scale api 4", "service create api"]);
    assert_eq!(a.service_history(&name("web"), 1).len(), 1, "limit holds");
    let by_b = a.service_history(&name("web"), 10);
    assert!(by_b
        .iter()
        .any(|h| h.message == "service scale web 3" && h.node == Some(NodeId("B".into()))));
}

#[test]
fn update_service_writes_only_what_changed_and_keeps_the_previous_spec() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(1)).expect("create");
    sync_pair(&mut a, &mut b);
    // Concurrently: a changes the image, b the environment. Both survive.
    let mut image = spec(1);
    image.image = "warren/busybox:2".into();
    a.update_service(&name("web"), &image).expect("update a");
    let mut env = spec(1);
    env.env.insert("NEW".into(), "1".into());
    env.env.remove("K");
    b.update_service(&name("web"), &env).expect("update b");
    sync_pair(&mut a, &mut b);
    for doc in [&a, &b] {
        let web = doc.service(&name("web")).expect("web");
        assert_eq!(web.spec.image, "warren/busybox:2");
        assert_eq!(web.spec.env, [("NEW".to_string(), "1".to_string())].into());
        // Each side ran its own generation 2; the merged spec is neither's: generation 3.
        assert_eq!(web.generation, 3);
        assert!(web.previous_spec.is_some());
    }
    // No change, no change bytes; a replica-only change keeps the generation.
    let current = a.service(&name("web")).expect("web").spec;
    assert!(a
        .update_service(&name("web"), &current)
        .expect("noop")
        .is_empty());
    let mut more = current.clone();
    more.replicas = 9;
    a.update_service(&name("web"), &more)
        .expect("scale via update");
    assert_eq!(a.service(&name("web")).map(|s| s.generation), Some(3));
}

#[test]
fn an_update_starts_a_rollout_and_keeps_the_older_specs_a_rollback_returns() {
    use crate::{FailureAction, RolloutKind, RolloutState, UpdatePolicy, KEPT_OLDER_SPECS};
    let (mut a, mut b) = pair();
    let web = name("web");
    a.create_service(&web, &spec(3)).expect("create");
    assert!(a.service(&web).expect("web").rollout.is_none());
    // A policy-only change is no new generation and no rollout.
    let mut policy = spec(3);
    policy.update = UpdatePolicy {
        parallelism: 2,
        failure_action: FailureAction::Rollback,
        ..UpdatePolicy::default()
    };
    a.update_service(&web, &policy).expect("policy");
    let s = a.service(&web).expect("web");
    assert_eq!((s.generation, s.rollout.is_none()), (1, true));
    let mut v2 = policy.clone();
    v2.image = "warren/busybox:2".into();
    a.update_service(&web, &v2).expect("update");
    sync_pair(&mut a, &mut b);
    for doc in [&a, &b] {
        let s = doc.service(&web).expect("web");
        let rollout = s.rollout.clone().expect("rollout");
        assert_eq!((rollout.from_generation, rollout.to_generation), (1, 2));
        assert_eq!(rollout.kind, RolloutKind::Update);
        assert_eq!(rollout.state, RolloutState::Updating);
        assert_eq!(
            rollout.policy.parallelism, 2,
            "the new spec's update policy"
        );
        assert_eq!(
            s.spec_for(1).map(|p| p.image.as_str()),
            Some("warren/busybox:latest")
        );
        assert_eq!(
            s.spec_for(2).map(|p| p.image.as_str()),
            Some("warren/busybox:2")
        );
    }
    // The holder's state write for a superseded generation is refused.
    let mut done = a.service(&web).and_then(|s| s.rollout).expect("rollout");
    done.state = RolloutState::Completed;
    a.set_rollout(&web, &done).expect("current generation");
    assert_eq!(
        a.service(&web).and_then(|s| s.rollout).map(|r| r.state),
        Some(RolloutState::Completed)
    );
    // Rollback: the previous spec again, as generation 3, rolled out as a rollback; the
    // replica count stays.
    let mut scaled = v2.clone();
    scaled.replicas = 5;
    a.update_service(&web, &scaled).expect("scale");
    a.rollback_service(&web).expect("rollback");
    let s = a.service(&web).expect("web");
    assert_eq!(s.generation, 3);
    assert_eq!(s.spec.image, "warren/busybox:latest");
    assert_eq!(s.spec.replicas, 5);
    let rollout = s.rollout.clone().expect("rollout");
    assert_eq!(
        (rollout.kind, rollout.from_generation, rollout.to_generation),
        (RolloutKind::Rollback, 2, 3)
    );
    assert!(
        a.set_rollout(&web, &done).is_err(),
        "generation 2's rollout is superseded"
    );
    // Older specs are bounded.
    for i in 0..10 {
        let mut next = a.service(&web).expect("web").spec;
        next.command = vec![format!("v{i}")];
        a.update_service(&web, &next).expect("update");
    }
    let s = a.service(&web).expect("web");
    assert_eq!(s.older_specs.len(), KEPT_OLDER_SPECS);
    assert!(s.older_specs.contains_key(&(s.generation - 1)));
}

#[test]
fn publish_mode_round_trips_and_changing_it_bumps_the_generation_like_any_port_change() {
    let (mut a, mut b) = pair();
    let mut ingress = spec(2);
    ingress.ports = vec![PortSpec {
        container_port: 80,
        host_port: Some(8080),
        mode: PublishMode::Ingress,
    }];
    a.create_service(&name("web"), &ingress).expect("create");
    sync_pair(&mut a, &mut b);
    let web = b.service(&name("web")).expect("web");
    assert_eq!(web.spec.ports, ingress.ports);
    assert_eq!(web.generation, 1);
    // Host mode needs other containers (a fixed port on each): a new generation, as a change
    // of the published port itself always made.
    let mut host = ingress.clone();
    host.ports[0].mode = PublishMode::Host;
    b.update_service(&name("web"), &host).expect("to host mode");
    sync_pair(&mut a, &mut b);
    let web = a.service(&name("web")).expect("web");
    assert_eq!(web.spec.ports[0].mode, PublishMode::Host);
    assert_eq!(web.generation, 2);
}

#[test]
fn concurrent_re_creations_resolve_to_the_higher_generation() {
    let (mut a, mut b) = pair();
    a.create_service(&name("web"), &spec(1)).expect("create");
    sync_pair(&mut a, &mut b);
    a.delete_service(&name("web")).expect("delete");
    sync_pair(&mut a, &mut b);
    a.create_service(&name("web"), &spec(2))
        .expect("re-create gen 2");
    a.delete_service(&name("web")).expect("delete again");
    a.create_service(&name("web"), &spec(3))
        .expect("re-create gen 3");
    b.create_service(&name("web"), &spec(7))
        .expect("re-create gen 2 at b");
    sync_pair(&mut a, &mut b);
    for doc in [&a, &b] {
        let web = doc.service(&name("web")).expect("web");
        assert_eq!((web.generation, web.spec.replicas), (3, 3));
    }
}

#[test]
fn jobs_secrets_and_volumes_round_trip_and_merge() {
    let (mut a, mut b) = pair();
    let spec = JobSpec {
        image: "warren/busybox:latest".into(),
        command: vec!["true".into()],
        env: Default::default(),
    };
    a.create_job("backup", &spec, 5, 3).expect("job");
    assert!(matches!(
        a.create_job("backup", &spec, 1, 1),
        Err(CrdtError::JobExists(_))
    ));
    sync_pair(&mut a, &mut b);
    // Two nodes record attempts concurrently: both attempts survive the merge.
    let attempt = |n, node: &str| JobAttempt {
        number: n,
        node: NodeId(node.into()),
        started_at: 10,
        exit_code: Some(1),
    };
    a.record_job_attempt("backup", &attempt(1, "A"), JobState::Pending)
        .expect("a");
    b.record_job_attempt("backup", &attempt(1, "B"), JobState::Pending)
        .expect("b");
    sync_pair(&mut a, &mut b);
    let job = &a.jobs()["backup"];
    assert_eq!(job.attempts.len(), 2);
    assert_eq!((job.priority, job.max_attempts), (5, 3));
    assert_eq!(a.jobs(), b.jobs());
    assert!(matches!(
        a.record_job_attempt("nope", &attempt(1, "A"), JobState::Dead),
        Err(CrdtError::UnknownJob(_))
    ));

    let secret = SecretRecord {
        name: "db".into(),
        version: 1,
        ciphertext: vec![1, 2, 3],
        nonce: vec![0; 24],
        recipients: [(NodeId("A".into()), vec![9; 48])].into(),
    };
    a.put_secret(&secret).expect("secret");
    let volume = Volume {
        name: "data".into(),
        driver: "local".into(),
        node: NodeId("B".into()),
        options: [("size".to_string(), "1G".to_string())].into(),
    };
    b.put_volume(&volume).expect("volume");
    sync_pair(&mut a, &mut b);
    assert_eq!(b.secrets()["db"], secret);
    assert_eq!(a.volumes()["data"], volume);
    b.remove_secret("db").expect("rm secret");
    a.remove_volume("data").expect("rm volume");
    sync_pair(&mut a, &mut b);
    assert!(a.secrets().is_empty() && b.volumes().is_empty());
    assert!(matches!(
        a.remove_secret("db"),
        Err(CrdtError::UnknownSecret(_))
    ));
    assert!(matches!(
        a.remove_volume("data"),
        Err(CrdtError::UnknownVolume(_))
    ));
}

#[test]
fn service_history_survives_save_and_load() {
    let (mut a, _) = pair();
    a.create_service(&name("web"), &spec(2))
        .expect("create web");
    a.scale_service(&name("web"), 1).expect("scale");
    let bytes = a.save();
    let mut loaded = DesiredState::load(NodeId("A".into()), &bytes).expect("load");
    assert_eq!(
        web_history(&mut loaded),
        vec!["service scale web 1", "service create web"]
    );
}

#[test]
fn service_history_survives_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, _) = pair();
    let mut store = Store::open(dir.path()).expect("open");
    store.persist(&mut a, true).expect("persist");
    a.create_service(&name("web"), &spec(2))
        .expect("create web");
    store.persist(&mut a, true).expect("persist");
    a.scale_service(&name("web"), 1).expect("scale");
    store.persist(&mut a, true).expect("persist");
    drop(store);
    let mut loaded = reload(dir.path());
    assert_eq!(
        web_history(&mut loaded),
        vec!["service scale web 1", "service create web"]
    );
}

#[test]
fn a_full_save_for_a_peer_never_hides_changes_from_storage() {
    // The admission path: a write, then a full save sent to the joining node, then persist.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, _) = pair();
    let mut store = Store::open(dir.path()).expect("open");
    store.persist(&mut a, true).expect("persist");
    a.create_service(&name("web"), &spec(2))
        .expect("create web");
    let _for_the_peer = a.save();
    store.persist(&mut a, true).expect("persist");
    a.scale_service(&name("web"), 1).expect("scale");
    store.persist(&mut a, true).expect("persist");
    drop(store);
    let mut loaded = reload(dir.path());
    assert_eq!(loaded.heads(), a.heads());
    assert_eq!(
        loaded.service(&name("web")).map(|s| s.spec.replicas),
        Some(1)
    );
}

#[test]
fn member_keys_are_published_and_merge() {
    let (mut a, mut b) = pair();
    a.set_member_key(&NodeId("A".into()), "ab12").expect("key");
    assert!(matches!(
        a.set_member_key(&NodeId("Z".into()), "00"),
        Err(CrdtError::UnknownMember(_))
    ));
    sync_pair(&mut a, &mut b);
    assert_eq!(
        b.member_keys(),
        [(NodeId("A".into()), "ab12".to_string())].into()
    );
    // The key is not part of the typed member record, so members() is unchanged by it.
    assert_eq!(b.members()[&NodeId("A".into())], member("A"));
}

#[test]
fn member_overlays_are_published_replaced_whole_and_merge() {
    let (mut a, mut b) = pair();
    let first = MemberOverlay {
        wg_public_key: "key-one".into(),
        overlay_ip: "fd00::1".into(),
        container_subnet: "fd00::8000:0/97".into(),
        wg_port: 51820,
    };
    a.set_member_overlay(&NodeId("A".into()), &first)
        .expect("overlay");
    assert!(matches!(
        a.set_member_overlay(&NodeId("Z".into()), &first),
        Err(CrdtError::UnknownMember(_))
    ));
    sync_pair(&mut a, &mut b);
    assert_eq!(b.member_overlay(&NodeId("A".into())), Some(first.clone()));
    assert_eq!(b.member_overlay(&NodeId("Z".into())), None);
    assert_eq!(b.member_overlays(), [(NodeId("A".into()), first)].into());
    // A rotation (at the member's current replica) replaces the three fields together.
    let second = MemberOverlay {
        wg_public_key: "key-two".into(),
        overlay_ip: "fd00::2:0:1".into(),
        container_subnet: "fd00::2:8000:0/97".into(),
        wg_port: 51900,
    };
    b.set_member_overlay(&NodeId("A".into()), &second)
        .expect("rotate");
    sync_pair(&mut a, &mut b);
    assert_eq!(a.member_overlays()[&NodeId("A".into())], second);
    // Not part of the typed member record.
    assert_eq!(a.members()[&NodeId("A".into())], member("A"));
}

#[test]
fn an_overlay_record_without_a_port_reads_as_wireguards_usual_one() {
    let (mut a, _) = pair();
    let record = MemberOverlay {
        wg_public_key: "key".into(),
        overlay_ip: "fd00::1".into(),
        container_subnet: "fd00::8000:0/97".into(),
        wg_port: 40000,
    };
    a.set_member_overlay(&NodeId("A".into()), &record)
        .expect("overlay");
    assert_eq!(
        a.member_overlay(&NodeId("A".into())).map(|r| r.wg_port),
        Some(40000)
    );
    // A document written before the port was: doc.rs's own test. In JSON (the API):
    let old: MemberOverlay = serde_json::from_str(
        r#"{"wg_public_key":"key","overlay_ip":"fd00::1","container_subnet":"fd00::8000:0/97"}"#,
    )
    .expect("old record");
    assert_eq!(old.wg_port, 51820);
}

#[test]
fn a_seeded_cluster_has_the_same_history_on_every_run() {
    fn zero() -> i64 {
        0
    }
    let info = ClusterInfo {
        id: "c".into(),
        name: "n".into(),
        created_at: 0,
    };
    let mut a = DesiredState::new_cluster_seeded(&info, &member("A"), [7; 8], zero).expect("a");
    let mut b = DesiredState::new_cluster_seeded(&info, &member("A"), [7; 8], zero).expect("b");
    assert_eq!(a.heads(), b.heads());
    let mut c = DesiredState::new_cluster(&info, &member("A")).expect("c");
    assert_ne!(a.heads(), c.heads(), "an unseeded cluster differs");
}

/// The messages of web's history, newest first.
fn web_history(doc: &mut DesiredState) -> Vec<String> {
    doc.service_history(&name("web"), 10)
        .into_iter()
        .map(|h| h.message)
        .collect()
}

/// A's replica as a fresh process would load it from `dir`.
fn reload(dir: &std::path::Path) -> DesiredState {
    Store::open(dir)
        .expect("open")
        .load(&NodeId("A".into()))
        .expect("load")
        .state
        .expect("state")
}

/// A document written before the health, restart, resources and stop-timeout keys existed
/// reads with their defaults.
#[test]
fn specs_written_before_issue_6_read_with_defaults() {
    use automerge::transaction::Transactable;
    let mut raw = automerge::AutoCommit::new();
    let services = raw
        .put_object(automerge::ROOT, "services", automerge::ObjType::Map)
        .expect("services");
    let web = raw
        .put_object(&services, "web", automerge::ObjType::Map)
        .expect("web");
    raw.put(&web, "generation", 1u64).expect("generation");
    raw.put(&web, "deleted", false).expect("deleted");
    let spec_obj = raw
        .put_object(&web, "spec", automerge::ObjType::Map)
        .expect("spec");
    raw.put(&spec_obj, "image", "warren/busybox:latest")
        .expect("image");
    raw.put(&spec_obj, "replicas", 2u64).expect("replicas");
    raw.put(&spec_obj, "command", "[]").expect("command");
    raw.put(&spec_obj, "ports", "[]").expect("ports");
    raw.put(&spec_obj, "secrets", "[]").expect("secrets");
    let doc = DesiredState::load(NodeId("A".into()), &raw.save()).expect("load");
    let service = doc.services().remove(&name("web")).expect("web");
    assert_eq!(service.spec.replicas, 2);
    assert_eq!(service.spec.health, None);
    assert_eq!(service.spec.restart, RestartPolicy::default());
    assert_eq!(service.spec.restart.condition, RestartCondition::Always);
    assert_eq!(service.spec.restart.delay_ms, 1_000);
    assert_eq!(service.spec.resources, Resources::default());
    assert_eq!(service.spec.stop_timeout_ms, None);
    // A previous_spec kept as JSON by an older node reads the same way.
    let old: ServiceSpec = serde_json::from_str(
        r#"{"image":"x","replicas":1,"command":[],"env":{},"ports":[],"secrets":[]}"#,
    )
    .expect("old spec JSON");
    assert_eq!(old.restart, RestartPolicy::default());
    assert_eq!(old.health, None);
}

#[test]
fn runtime_fields_round_trip_and_concurrent_edits_of_different_ones_merge() {
    let (mut a, mut b) = pair();
    let mut s = spec(1);
    s.health = Some(HealthCheck {
        probe: HealthProbe::Http {
            port: 80,
            path: "/index.html".into(),
        },
        interval_ms: 2_000,
        timeout_ms: 1_000,
        retries: 2,
        start_period_ms: 500,
    });
    s.resources = Resources {
        nano_cpus: Some(500_000_000),
        memory_bytes: Some(64 << 20),
    };
    s.stop_timeout_ms = Some(3_000);
    a.create_service(&name("web"), &s).expect("create");
    sync_pair(&mut a, &mut b);
    let read = b.services().remove(&name("web")).expect("web");
    assert_eq!(read.spec, s);

    // A changes the restart policy while B changes the memory limit: both survive, and only
    // B's change needs new containers.
    let mut on_a = s.clone();
    on_a.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        max_attempts: Some(3),
        delay_ms: 200,
    };
    let mut on_b = s.clone();
    on_b.resources.memory_bytes = Some(128 << 20);
    a.update_service(&name("web"), &on_a).expect("update a");
    assert_eq!(
        a.services().remove(&name("web")).expect("web").generation,
        1,
        "a restart policy change keeps the containers"
    );
    b.update_service(&name("web"), &on_b).expect("update b");
    sync_pair(&mut a, &mut b);
    let (sa, sb) = (
        a.services().remove(&name("web")).expect("web"),
        b.services().remove(&name("web")).expect("web"),
    );
    assert_eq!(sa, sb);
    assert_eq!(sa.spec.restart, on_a.restart);
    assert_eq!(sa.spec.resources.memory_bytes, Some(128 << 20));
    assert_eq!(sa.spec.health, s.health);
    assert_eq!(sa.generation, 2);
}

#[test]
fn spec_limits_are_checked_with_the_field_named() {
    let field_of = |s: &ServiceSpec| match s.validate() {
        Err(CrdtError::InvalidSpec { field, .. }) => Some(field),
        _ => None,
    };
    assert_eq!(field_of(&spec(1)), None);
    let with_health = |probe| ServiceSpec {
        health: Some(HealthCheck::new(probe)),
        ..spec(1)
    };
    assert_eq!(
        field_of(&with_health(HealthProbe::Cmd {
            command: "  ".into()
        })),
        Some("health.command")
    );
    assert_eq!(
        field_of(&with_health(HealthProbe::Http {
            port: 80,
            path: "/a b".into()
        })),
        Some("health.path")
    );
    assert_eq!(
        field_of(&with_health(HealthProbe::Http {
            port: 80,
            path: "/x';reboot;'".into()
        })),
        Some("health.path")
    );
    assert_eq!(
        field_of(&with_health(HealthProbe::Tcp { port: 0 })),
        Some("health.port")
    );
    let mut zero_retries = with_health(HealthProbe::Tcp { port: 80 });
    if let Some(h) = zero_retries.health.as_mut() {
        h.retries = 0;
    }
    assert_eq!(field_of(&zero_retries), Some("health.retries"));
    let small_memory = ServiceSpec {
        resources: Resources {
            nano_cpus: None,
            memory_bytes: Some(1 << 20),
        },
        ..spec(1)
    };
    assert_eq!(field_of(&small_memory), Some("resources.memory_bytes"));
    let tiny_cpu = ServiceSpec {
        resources: Resources {
            nano_cpus: Some(1_000),
            memory_bytes: None,
        },
        ..spec(1)
    };
    assert_eq!(field_of(&tiny_cpu), Some("resources.nano_cpus"));
    let long_stop = ServiceSpec {
        stop_timeout_ms: Some(MAX_STOP_TIMEOUT_MS + 1),
        ..spec(1)
    };
    assert_eq!(field_of(&long_stop), Some("stop_timeout_ms"));
    let no_delay = ServiceSpec {
        restart: RestartPolicy {
            delay_ms: 0,
            ..RestartPolicy::default()
        },
        ..spec(1)
    };
    assert_eq!(field_of(&no_delay), Some("restart.delay_ms"));
}

#[test]
fn cluster_settings_round_trip_through_gossip_and_the_store() {
    let (mut a, mut b) = pair();
    assert_eq!(a.cluster_settings(), ClusterSettings::default());
    assert!(a.cluster_settings().rebalance, "rebalance is on by default");
    let change = a
        .set_cluster_settings(&[ClusterSetting::Rebalance(false)])
        .expect("set");
    assert!(!a.cluster_settings().rebalance);
    b.apply_change(&change).expect("gossip");
    assert!(!b.cluster_settings().rebalance);
    // Survives save and load; the history names the change.
    let reloaded = DesiredState::load(NodeId("C".into()), &a.save()).expect("load");
    assert!(!reloaded.cluster_settings().rebalance);
    assert!(a
        .history()
        .iter()
        .any(|e| e.message == "cluster set rebalance=off"));
    // Back on; nothing given writes nothing.
    a.set_cluster_settings(&[ClusterSetting::Rebalance(true)])
        .expect("set");
    assert!(a.cluster_settings().rebalance);
    let heads = a.heads();
    assert!(a.set_cluster_settings(&[]).expect("empty").is_empty());
    assert_eq!(a.heads(), heads);
}

#[test]
fn absent_or_unreadable_settings_read_as_defaults() {
    use automerge::transaction::Transactable;
    // A document made before settings existed: a cluster record without them.
    let mut raw = automerge::AutoCommit::new();
    let cluster = raw
        .put_object(automerge::ROOT, "cluster", automerge::ObjType::Map)
        .expect("cluster");
    raw.put(&cluster, "id", "c1").expect("id");
    let old = DesiredState::load(NodeId("A".into()), &raw.save()).expect("load");
    assert_eq!(old.cluster_settings(), ClusterSettings::default());
    // A value this version cannot read (say, a newer node's "auto"), and unknown keys.
    raw.put(&cluster, "rebalance", "auto").expect("rebalance");
    raw.put(&cluster, "some_future_setting", 7u64)
        .expect("future");
    let newer = DesiredState::load(NodeId("A".into()), &raw.save()).expect("load");
    assert_eq!(newer.cluster_settings(), ClusterSettings::default());
    // An empty replica (a joining node) reads defaults and refuses to write.
    let mut empty = DesiredState::empty(NodeId("B".into()));
    assert_eq!(empty.cluster_settings(), ClusterSettings::default());
    assert!(matches!(
        empty.set_cluster_settings(&[ClusterSetting::Rebalance(false)]),
        Err(CrdtError::NoCluster)
    ));
    // The API's JSON of old or newer nodes reads with defaults too.
    let partial: ClusterSettings = serde_json::from_str("{}").expect("json");
    assert_eq!(partial, ClusterSettings::default());
    let wider: ClusterSettings =
        serde_json::from_str(r#"{"rebalance":false,"later":1}"#).expect("json");
    assert!(!wider.rebalance);
}

#[test]
fn concurrent_writes_of_a_setting_merge_to_one_value_on_both_replicas() {
    for (on_a, on_b) in [(false, true), (true, false), (false, false)] {
        let (mut a, mut b) = pair();
        a.set_cluster_settings(&[ClusterSetting::Rebalance(on_a)])
            .expect("set a");
        b.set_cluster_settings(&[ClusterSetting::Rebalance(on_b)])
            .expect("set b");
        sync_pair(&mut a, &mut b);
        assert_eq!(a.heads(), b.heads());
        let (ra, rb) = (a.cluster_settings(), b.cluster_settings());
        assert_eq!(ra, rb, "one value on both replicas");
        assert!(ra.rebalance == on_a || ra.rebalance == on_b);
        // A write made after seeing the conflict wins everywhere.
        b.set_cluster_settings(&[ClusterSetting::Rebalance(!ra.rebalance)])
            .expect("set after merge");
        sync_pair(&mut a, &mut b);
        assert_eq!(a.cluster_settings().rebalance, !ra.rebalance);
        assert_eq!(b.cluster_settings().rebalance, !ra.rebalance);
    }
    // A setting change concurrent with a service change: both survive.
    let (mut a, mut b) = pair();
    a.set_cluster_settings(&[ClusterSetting::Rebalance(false)])
        .expect("set");
    b.create_service(&name("web"), &spec(2)).expect("create");
    sync_pair(&mut a, &mut b);
    assert!(!b.cluster_settings().rebalance);
    assert!(a.service(&name("web")).is_some());
}

/// Any interleaving of writes of the rebalance setting and syncs among three replicas ends,
/// after a full sync, with one value on every replica: the value of a write that no other
/// write had seen (last writer wins), or the default when nobody wrote it.
mod setting_merge_law {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Step {
        Set(usize, bool),
        Sync(usize, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, any::<bool>()).prop_map(|(r, on)| Step::Set(r, on)),
            (0..3usize, 0..3usize).prop_map(|(a, b)| Step::Sync(a, b)),
        ]
    }

    /// Syncs replicas `a` and `b` (distinct) of `docs`.
    fn sync_two(docs: &mut [DesiredState], a: usize, b: usize) {
        let (lo, hi) = (a.min(b), a.max(b));
        let (left, right) = docs.split_at_mut(hi);
        sync_pair(&mut left[lo], &mut right[0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn concurrent_setting_writes_converge_to_a_surviving_write(
            steps in proptest::collection::vec(step(), 0..24)
        ) {
            let (a, b) = pair();
            let mut c = DesiredState::empty(NodeId("C".into()));
            let mut docs = vec![a, b];
            sync_pair(&mut docs[0], &mut c);
            docs.push(c);
            // The model: each write's value and the writes its author had seen.
            let mut writes: Vec<(bool, BTreeSet<usize>)> = Vec::new();
            let mut seen: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); 3];
            for s in &steps {
                match *s {
                    Step::Set(r, on) => {
                        docs[r]
                            .set_cluster_settings(&[ClusterSetting::Rebalance(on)])
                            .expect("set");
                        writes.push((on, seen[r].clone()));
                        seen[r].insert(writes.len() - 1);
                    }
                    Step::Sync(x, y) if x != y => {
                        sync_two(&mut docs, x, y);
                        let union: BTreeSet<usize> = seen[x].union(&seen[y]).copied().collect();
                        seen[x] = union.clone();
                        seen[y] = union;
                    }
                    Step::Sync(..) => {}
                }
            }
            for (x, y) in [(0, 1), (1, 2), (0, 2)] {
                sync_two(&mut docs, x, y);
            }
            let heads = docs[0].heads();
            let value = docs[0].cluster_settings();
            for doc in &mut docs[1..] {
                prop_assert_eq!(doc.heads(), heads.clone());
                prop_assert_eq!(doc.cluster_settings(), value);
            }
            let surviving: BTreeSet<bool> = writes
                .iter()
                .enumerate()
                .filter(|(i, _)| !writes.iter().any(|(_, past)| past.contains(i)))
                .map(|(_, (on, _))| *on)
                .collect();
            if surviving.is_empty() {
                prop_assert_eq!(value, ClusterSettings::default());
            } else {
                prop_assert!(
                    surviving.contains(&value.rebalance),
                    "reads {:?}; surviving writes {:?}", value, surviving
                );
            }
        }
    }
}

/// Inputs the fuzz targets in `fuzz/` found that made Automerge 0.12 panic (each minimal enough
/// to keep: the target's crash file with its checksums made right). Each must now be an error,
/// and the replica it was fed to must be unchanged and still work.
mod fuzz_regressions {
    use super::*;

    /// The fuzz targets' fixture: cluster `c1`, two members, service `web`, a lease,
    /// assignments and two token records.
    const FIXTURE: &[u8] = include_bytes!("../tests/data/fuzz/fixture.automerge");

    fn fixture() -> DesiredState {
        DesiredState::load(NodeId("12D3KooWfounder".into()), FIXTURE).expect("fixture")
    }

    /// The replica still saves a document that loads back with the same heads.
    fn still_works(state: &mut DesiredState, heads: &[String]) {
        assert_eq!(state.heads(), heads, "the replica is unchanged");
        let saved = state.save();
        let mut back = DesiredState::load(state.node().clone(), &saved).expect("reload");
        assert_eq!(back.heads(), heads);
        assert!(state.cluster().is_some());
    }

    #[test]
    fn a_gossiped_change_automerge_panics_on_is_an_error() {
        // gossip_change: `Option::unwrap()` on `None` in op_set2/change/batch.rs (import_ops).
        let change = include_bytes!("../tests/data/fuzz/gossip_change-batch-unwrap.change");
        let mut state = fixture();
        let heads = state.heads();
        assert!(state.apply_change(change).is_err());
        still_works(&mut state, &heads);
    }

    #[test]
    fn a_panic_rebuilds_the_document_with_all_it_took_in() {
        // The guard runs Automerge on the document itself and, only after a panic, rebuilds it
        // from the last save and what came since: local writes, gossip, sync, before and after
        // a save.
        let change = include_bytes!("../tests/data/fuzz/gossip_change-batch-unwrap.change");
        let mut state = fixture();
        let mut peer = fixture();
        let w1 = state.create_service(&name("api"), &spec(1)).expect("write");
        let gossip = peer.create_service(&name("db"), &spec(2)).expect("peer");
        state.apply_change(&gossip).expect("gossip");
        let _ = state.save();
        let w2 = state.scale_service(&name("api"), 4).expect("write");
        peer.scale_service(&name("db"), 5).expect("peer");
        sync_pair(&mut peer, &mut state);
        assert_eq!(state.service(&name("db")).map(|s| s.spec.replicas), Some(5));
        let heads = state.heads();
        let _ = state.take_touched();
        let _ = state.take_touched();

        assert!(state.apply_change(change).is_err());
        assert!(
            state.take_touched().all,
            "the change panicked and the document was rebuilt"
        );
        assert_eq!(state.heads(), heads, "nothing lost, nothing added");
        assert_eq!(
            state.service(&name("api")).map(|s| s.spec.replicas),
            Some(4)
        );

        // The replica writes on as the same actor, its sequence numbers continuing: a peer
        // that has its earlier changes takes the next one with nothing missing.
        let w3 = state.scale_service(&name("api"), 6).expect("write after");
        for c in [&w1, &w2, &w3] {
            peer.apply_change(c).expect("peer applies");
        }
        assert!(!peer.has_missing_deps());
        assert_eq!(peer.heads(), state.heads());
        still_works(&mut state, &peer.heads());
    }

    #[test]
    fn a_change_whose_checksum_is_wrong_is_refused() {
        // Automerge's `apply_changes` does not check it but its load does: a document holding
        // such a change would not load back from the store.
        let mut state = fixture();
        let mut peer = fixture();
        let mut change = peer.create_service(&name("db"), &spec(2)).expect("peer");
        change[4] ^= 0xff;
        let heads = state.heads();
        assert!(matches!(
            state.apply_change(&change),
            Err(CrdtError::Decode(_))
        ));
        still_works(&mut state, &heads);
    }

    #[test]
    fn a_change_whose_first_op_its_dependencies_contradict_is_refused() {
        // store_chunks: a change starting at op 37 on dependencies that end at op 73. Automerge
        // applied it, and the document's save then failed to load ("max_op is lower than
        // start_op"), on every replica the change reached.
        let change = include_bytes!("../tests/data/fuzz/store_chunks-start-op-below-deps.change");
        let mut state = fixture();
        let heads = state.heads();
        let refused = state.apply_change(change);
        assert!(
            matches!(&refused, Err(CrdtError::Decode(e)) if e.contains("starts at op 37")),
            "{refused:?}"
        );
        still_works(&mut state, &heads);
    }

    #[test]
    fn a_sync_message_carrying_a_change_whose_first_op_is_contradicted_is_refused() {
        // The same change as above, inside a sync message (version 1: one chunk per change),
        // as a peer's anti-entropy would send it.
        let bytes = include_bytes!("../tests/data/fuzz/store_chunks-start-op-below-deps.change");
        let change = automerge::Change::from_bytes(bytes.to_vec()).expect("a change");
        let message = automerge::sync::Message {
            heads: vec![change.hash()],
            need: Vec::new(),
            have: Vec::new(),
            changes: vec![bytes.to_vec()].into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        }
        .encode();
        let mut state = fixture();
        let heads = state.heads();
        let refused = state.receive_sync_message(&mut SyncState::new(), &message);
        assert!(
            matches!(&refused, Err(CrdtError::Decode(e)) if e.contains("starts at op 37")),
            "{refused:?}"
        );
        still_works(&mut state, &heads);
    }

    /// A version-2 sync message whose changes are `chunk`, as a peer would send it.
    fn sync_message_carrying(chunk: &[u8]) -> Vec<u8> {
        automerge::sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: vec![chunk.to_vec()].into(),
            flags: None,
            version: automerge::sync::MessageVersion::V2,
        }
        .encode()
    }

    #[test]
    fn a_sync_message_carrying_a_whole_document_is_refused() {
        // Automerge's version-2 sync sends a peer that holds nothing its whole document as one
        // chunk; Warren never does, and never loads one from a peer: a few KB of document can
        // declare gigabytes of columns (fuzz/README.md, "Open findings").
        let mut peer = fixture();
        peer.create_service(&name("db"), &spec(2)).expect("peer");
        let whole = peer.save();
        let mut state = fixture();
        let heads = state.heads();
        let refused =
            state.receive_sync_message(&mut SyncState::new(), &sync_message_carrying(&whole));
        assert!(
            matches!(&refused, Err(CrdtError::Decode(e)) if e.contains("not one change")),
            "{refused:?}"
        );
        assert!(
            state.service(&name("db")).is_none(),
            "nothing of it was taken in"
        );
        still_works(&mut state, &heads);
    }

    #[test]
    fn documents_that_make_automerge_allocate_gigabytes_never_reach_it_from_a_peer() {
        // join_response found both (checksums made right): loading the first makes Automerge
        // 0.12 allocate 2 GiB (change_graph.rs, an RLE column declaring hundreds of millions
        // of changes), the second 4 GiB (bundle storage, decode_delta_int); the process
        // aborts. `DesiredState::load` is never called on a peer's bytes, and a sync message
        // carrying them is refused before Automerge decodes them.
        for bytes in [
            &include_bytes!("../tests/data/fuzz/load-oom-change-graph-rle.automerge")[..],
            &include_bytes!("../tests/data/fuzz/load-oom-bundle-delta-int.automerge")[..],
        ] {
            let mut state = fixture();
            let heads = state.heads();
            let refused =
                state.receive_sync_message(&mut SyncState::new(), &sync_message_carrying(bytes));
            assert!(
                matches!(&refused, Err(CrdtError::Decode(e)) if e.contains("not one change")),
                "{refused:?}"
            );
            still_works(&mut state, &heads);
        }
    }

    #[test]
    fn a_change_automerge_panics_on_parsing_is_an_error() {
        // store_chunks: an operation on an object whose counter exceeds 32 bits makes
        // Automerge's change parser panic (`OpId::new`, under `verify_ops`), before any
        // document sees the change: through gossip, a sync message and the store alike.
        let mut peer = fixture();
        let good = peer.create_service(&name("db"), &spec(2)).expect("peer");
        let mut expanded = automerge::Change::from_bytes(good)
            .expect("a change")
            .decode();
        let actor = expanded.actor_id.clone();
        let op = expanded.operations.first_mut().expect("an operation");
        op.obj = automerge::legacy::ObjectId::Id(automerge::legacy::OpId(1 << 33, actor));
        let bad = automerge::Change::from(expanded).raw_bytes().to_vec();
        let mut state = fixture();
        let heads = state.heads();
        let refused = state.apply_change(&bad);
        assert!(
            matches!(&refused, Err(CrdtError::Decode(e)) if e.contains("panic")),
            "{refused:?}"
        );
        let message = automerge::sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: vec![bad].into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        }
        .encode();
        let _ = state.receive_sync_message(&mut SyncState::new(), &message);
        still_works(&mut state, &heads);
    }

    #[test]
    fn documents_automerge_panics_on_do_not_load() {
        // join_response: "RawColumnIter::take would cross slab boundary" in hexane;
        // store_chunks: `assertion failed: self.data[index].is_none()` in change/collector.rs.
        for bytes in [
            &include_bytes!("../tests/data/fuzz/load-raw-column-slab.automerge")[..],
            &include_bytes!("../tests/data/fuzz/load-collector-assert.automerge")[..],
        ] {
            assert!(DesiredState::load(NodeId("n".into()), bytes).is_err());
            let mut state = fixture();
            let heads = state.heads();
            // Automerge's partial-load quirk may keep what parsed and return `Ok` (see
            // `Store`); either way, no panic, and an error leaves the replica as it was.
            if state.load_incremental(bytes).is_err() {
                still_works(&mut state, &heads);
            } else {
                let heads = state.heads();
                still_works(&mut state, &heads);
            }
        }
    }

    #[test]
    fn a_sync_message_with_an_empty_bloom_filter_does_not_panic_the_next_message() {
        // sync_request: "attempt to calculate the remainder with a divisor of zero" in
        // sync/bloom.rs, when the next message is generated from the peer's `have`.
        let message = include_bytes!("../tests/data/fuzz/sync-bloom-zero-divisor.msg");
        let mut state = fixture();
        let heads = state.heads();
        let mut sync = SyncState::new();
        let _ = state.receive_sync_message(&mut sync, message);
        let _ = state.generate_sync_message(&mut sync);
        // The dialogue goes on with a fresh state.
        let _ = state.generate_sync_message(&mut sync);
        still_works(&mut state, &heads);
    }
}

/// store_chunks (second run): a snapshot and log that load without an error, after which
/// `history()` (which `Store::load` calls when it skipped a chunk) hit the change collector's
/// assertion. Loading must refuse such bytes instead.
#[test]
fn a_store_whose_history_automerge_panics_on_does_not_load() {
    let snapshot = include_bytes!("../tests/data/fuzz/history-collector-assert.snapshot");
    let log = include_bytes!("../tests/data/fuzz/history-collector-assert.log");
    let Ok(mut state) = DesiredState::load(NodeId("n".into()), snapshot) else {
        return;
    };
    let _ = state.load_incremental(log);
    let _ = state.history();
    let _ = state.heads();
}

// ---- a large history, synced in messages within a budget -------------------------------

/// What [`sync_within`] saw: rounds (a message each way at most), messages, and the largest.
#[derive(Debug, Default)]
struct SyncFigures {
    rounds: usize,
    messages: usize,
    largest: usize,
}

/// Runs the sync dialogue from `from` (which starts it) to `to`, every message of either side
/// within `budget` bytes, until neither has anything to send; panics after 200 rounds.
fn sync_within(from: &mut DesiredState, to: &mut DesiredState, budget: usize) -> SyncFigures {
    let (mut s_from, mut s_to) = (
        SyncState::with_max_message(budget),
        SyncState::with_max_message(budget),
    );
    let mut figures = SyncFigures::default();
    for _ in 0..200 {
        figures.rounds += 1;
        let m1 = from.generate_sync_message(&mut s_from);
        if let Some(m) = &m1 {
            figures.messages += 1;
            figures.largest = figures.largest.max(m.len());
            assert!(m.len() <= budget, "a message of {} bytes", m.len());
            to.receive_sync_message(&mut s_to, m).expect("receive");
        }
        let m2 = to.generate_sync_message(&mut s_to);
        if let Some(m) = &m2 {
            figures.messages += 1;
            figures.largest = figures.largest.max(m.len());
            assert!(m.len() <= budget, "a message of {} bytes", m.len());
            from.receive_sync_message(&mut s_from, m).expect("receive");
        }
        if m1.is_none() && m2.is_none() {
            return figures;
        }
    }
    panic!("no end to the dialogue in 200 rounds: {figures:?}");
}

#[test]
fn a_history_of_50_mib_syncs_in_messages_within_the_budget() {
    const BUDGET: usize = 4 << 20;
    let started = std::time::Instant::now();
    let mut big = crate::test_utils::new_cluster("12D3KooWbig");
    let changes = crate::test_utils::grow_history(&mut big, 62 << 20);
    let saved = big.save().len();
    assert!(saved >= 50 << 20, "the document takes {saved} bytes");
    let built = started.elapsed();

    // A replica with nothing (a node just admitted) asks for everything.
    let started = std::time::Instant::now();
    let mut empty = DesiredState::empty(NodeId("12D3KooWnew".into()));
    let figures = sync_within(&mut empty, &mut big, BUDGET);
    assert_eq!(empty.heads(), big.heads());
    assert!(
        figures.rounds >= saved / BUDGET,
        "{saved} bytes cannot travel in {figures:?}"
    );
    let first = started.elapsed();

    // Both sides write, then the one that is behind starts: a budget as small as one change
    // still gets everything across, both ways.
    let fresh = empty.update_service(
        &name("big-0"),
        &ServiceSpec {
            replicas: 7,
            ..big.service(&name("big-0")).expect("big-0").spec
        },
    );
    fresh.expect("an update on the new replica");
    crate::test_utils::grow_history(&mut big, 2 << 20);
    let again = sync_within(&mut empty, &mut big, DEFAULT_MAX_SYNC_MESSAGE);
    assert_eq!(empty.heads(), big.heads());
    assert_eq!(
        big.service(&name("big-0")).map(|s| s.spec.replicas),
        empty.service(&name("big-0")).map(|s| s.spec.replicas)
    );
    eprintln!(
        "document {saved} bytes, {changes} changes, built in {built:?}; from nothing: \
         {figures:?} in {first:?} (budget {BUDGET}); then 2 MiB more: {again:?} \
         (budget {DEFAULT_MAX_SYNC_MESSAGE})"
    );
}

#[test]
fn concurrent_label_changes_of_different_keys_both_survive() {
    let (mut a, mut b) = pair();
    let id = NodeId("A".into());
    let add = |k: &str, v: &str| -> BTreeMap<String, String> { [(k.into(), v.into())].into() };
    a.update_member_labels(&id, &add("rack", "r1"), &BTreeSet::new())
        .expect("a");
    b.update_member_labels(&id, &BTreeMap::new(), &["zone".to_string()].into())
        .expect("b");
    // Nothing to change: no change at all.
    assert!(b
        .update_member_labels(&id, &BTreeMap::new(), &["nope".to_string()].into())
        .expect("noop")
        .is_empty());
    sync_pair(&mut a, &mut b);
    for s in [&a, &b] {
        assert_eq!(
            s.members()[&id].labels,
            [("rack".to_string(), "r1".to_string())].into()
        );
    }
    assert!(matches!(
        a.update_member_labels(&NodeId("Z".into()), &add("k", "v"), &BTreeSet::new()),
        Err(CrdtError::UnknownMember(_))
    ));
}

#[test]
fn platform_and_capabilities_round_trip_and_older_records_read_unknown() {
    let (mut a, mut b) = pair();
    let id = NodeId("A".into());
    assert_eq!(a.members()[&id].platform, Platform::default());
    assert!(a.members()[&id].capabilities.is_empty());
    let platform = Platform::from_rust("aarch64", "linux");
    let caps: BTreeSet<String> = ["gpu".to_string(), "tpm".to_string()].into();
    assert!(!a
        .set_member_platform(&id, &caps, &platform)
        .expect("set")
        .is_empty());
    assert!(a
        .set_member_platform(&id, &caps, &platform)
        .expect("again")
        .is_empty());
    let fewer: BTreeSet<String> = ["gpu".to_string()].into();
    a.set_member_platform(&id, &fewer, &platform)
        .expect("fewer");
    sync_pair(&mut a, &mut b);
    let m = &b.members()[&id];
    assert_eq!((&m.platform, &m.capabilities), (&platform, &fewer));
}

#[test]
fn placement_is_stored_and_changes_it_start_no_new_containers() {
    let (mut a, _) = pair();
    let mut s = spec(2);
    s.placement = Placement {
        constraints: vec!["node.labels.zone==a".parse().expect("c")],
        preferences: vec!["spread=node.labels.rack".parse().expect("p")],
        max_replicas_per_node: Some(1),
    };
    a.create_service(&name("web"), &s).expect("create");
    let stored = a.services()[&name("web")].clone();
    assert_eq!(stored.spec.placement, s.placement);
    s.placement.constraints = vec!["node.labels.zone!=a".parse().expect("c")];
    a.update_service(&name("web"), &s).expect("update");
    let updated = a.services()[&name("web")].clone();
    assert_eq!(updated.spec.placement, s.placement);
    assert_eq!(updated.generation, stored.generation, "no new containers");
}

#[test]
fn availability_is_stored_merged_and_reads_active_when_absent() {
    let (mut a, mut b) = pair();
    let id = NodeId("A".into());
    assert_eq!(a.members()[&id].availability, crate::Availability::Active);
    assert!(a
        .set_member_availability(&id, crate::Availability::Active)
        .expect("same")
        .is_empty());
    assert!(!a
        .set_member_availability(&id, crate::Availability::Drain)
        .expect("drain")
        .is_empty());
    sync_pair(&mut a, &mut b);
    assert_eq!(b.members()[&id].availability, crate::Availability::Drain);
    b.set_member_availability(&id, crate::Availability::Pause)
        .expect("pause");
    sync_pair(&mut a, &mut b);
    assert_eq!(a.members()[&id].availability, crate::Availability::Pause);
    // A record written before the field existed (no key) reads `active`.
    let json = r#"{"id":"A","name":"a","addrs":[],"labels":{},"admitted_by":"A","admitted_at":0,"state":"active"}"#;
    let old: Member = serde_json::from_str(json).expect("old record");
    assert_eq!(old.availability, crate::Availability::Active);
    assert!(matches!(
        a.set_member_availability(&NodeId("Z".into()), crate::Availability::Drain),
        Err(CrdtError::UnknownMember(_))
    ));
}

#[test]
fn concurrent_creates_of_one_volume_keep_one_whole_record_everywhere() {
    let (mut a, mut b) = pair();
    let on = |node: &str, opt: &str| Volume {
        name: "data".into(),
        driver: "local".into(),
        node: NodeId(node.into()),
        options: [("o".to_string(), opt.to_string())].into(),
    };
    // Two sides of a split create the same name on different nodes.
    a.put_volume(&on("A", "from-a")).expect("a");
    b.put_volume(&on("B", "from-b")).expect("b");
    sync_pair(&mut a, &mut b);
    let kept = a.volumes()["data"].clone();
    assert_eq!(
        b.volumes()["data"],
        kept,
        "both replicas keep the same record"
    );
    assert!(
        kept == on("A", "from-a") || kept == on("B", "from-b"),
        "one whole record, never a mix: {kept:?}"
    );
    // A mount list written into a spec reads back whole.
    let web = ServiceName::new("web").expect("name");
    let mut spec = ServiceSpec {
        image: "warren/busybox:latest".into(),
        replicas: 1,
        ..Default::default()
    };
    spec.mounts = vec![crate::Mount::parse("source=data,target=/data").expect("mount")];
    a.create_service(&web, &spec).expect("create");
    sync_pair(&mut a, &mut b);
    assert_eq!(b.service(&web).expect("web").spec.mounts, spec.mounts);
}

#[test]
fn gpus_of_a_spec_and_an_assignment_survive_the_document_and_a_peer_is_bounded() {
    let (mut a, mut b) = pair();
    let mut wants = spec(1);
    wants.gpus = 2;
    a.create_service(&name("train"), &wants).expect("create");
    let slot = SlotId {
        service: name("train"),
        slot: 0,
    };
    let placed = Assignment {
        node: NodeId("A".into()),
        epoch: Epoch(1),
        holder: NodeId("A".into()),
        spec_generation: 1,
        displaced: Vec::new(),
        gpus: vec!["GPU-0".into(), "GPU-1".into()],
    };
    a.write_assignments(&[(slot.clone(), placed.clone())], &[])
        .expect("write");
    sync_pair(&mut a, &mut b);
    assert_eq!(b.services()[&name("train")].spec.gpus, 2);
    assert_eq!(b.assignments()[&slot], placed);
    // An update to 0 is written (and read back), not skipped as a default.
    wants.gpus = 0;
    b.update_service(&name("train"), &wants).expect("update");
    assert_eq!(b.services()[&name("train")].spec.gpus, 0);
    // A peer's assignment naming too many or too long ids is read bounded.
    let mut huge = placed.clone();
    huge.epoch = Epoch(2);
    huge.gpus = (0..100).map(|i| format!("GPU-{i}")).collect();
    huge.gpus.insert(0, "x".repeat(crate::MAX_GPU_ID_BYTES + 1));
    a.write_assignments(&[(slot.clone(), huge)], &[])
        .expect("write");
    let read = &a.assignments()[&slot].gpus;
    assert_eq!(read.len(), crate::MAX_SERVICE_GPUS as usize);
    assert_eq!(read[0], "GPU-0");
    // A spec above the bound fails validation.
    let mut greedy = spec(1);
    greedy.gpus = crate::MAX_SERVICE_GPUS + 1;
    assert!(greedy.validate().is_err());
}

#[test]
fn a_fork_holds_what_a_fresh_load_holds_and_writes_as_its_own_node() {
    fn zero() -> i64 {
        0
    }
    let (mut a, _) = pair();
    a.create_service(&name("web"), &spec(2)).expect("create");
    let saved = a.save();
    let mut template = DesiredState::empty(NodeId("T".into()));
    template.load_incremental(&saved).expect("load");
    let template_heads = template.heads();
    let mut loaded = DesiredState::empty(NodeId("B".into()));
    loaded.load_incremental(&saved).expect("load");
    let mut forked = template.fork(NodeId("B".into()));
    assert_eq!(forked.node(), &NodeId("B".into()));
    assert_eq!(forked.heads(), loaded.heads());
    assert_eq!(forked.services(), loaded.services());
    assert_eq!(forked.members(), loaded.members());
    assert_eq!(forked.take_touched(), loaded.take_touched());
    assert_eq!(forked.save_incremental(), loaded.save_incremental());
    assert!(forked.save_incremental().is_empty());
    // The same write with the same actor and clock makes the same change on both.
    for state in [&mut forked, &mut loaded] {
        state.set_actor_suffix([3; 8]);
        state.set_clock(zero);
    }
    let from_fork = forked.scale_service(&name("web"), 5).expect("scale");
    let from_load = loaded.scale_service(&name("web"), 5).expect("scale");
    assert!(!from_fork.is_empty());
    assert_eq!(from_fork, from_load);
    let scaled: Vec<Option<NodeId>> = forked
        .history()
        .into_iter()
        .filter(|h| h.message.contains("scale"))
        .map(|h| h.node)
        .collect();
    assert_eq!(scaled, vec![Some(NodeId("B".into()))]);
    assert_eq!(
        template.heads(),
        template_heads,
        "the template is untouched"
    );
    assert_eq!(template.services()[&name("web")].spec.replicas, 2);
}
