//! The [`NodeMachine`] driven directly, several at once, on the in-memory harness of
//! `support`: admission, sync dialogues, re-keying of secrets.

mod support;

use support::{node_id, Cluster};
use warren_core::core::Liveness;
use warren_core::machine::SecretValue;
use warren_core::secrets::{self, SecretError};
use warren_core::token::TokenRefusal;
use warren_core::{
    Channel, JoinError, MachineConfig, Millis, NodeMachine, Output, SyncError, Write,
};
use warren_crdt::test_utils::{service_name, spec};
use warren_crdt::{NodeId, ServiceName, ServiceSpec};
use zeroize::Zeroizing;

/// A founder `a` and a member `b` it admitted, both ticking; X25519 keys on both when
/// `keys`.
fn pair(keys: bool) -> Cluster {
    let mut cluster = Cluster::founded("a", keys);
    cluster.tick();
    let token = cluster.mint_token(0);
    let b = cluster.join(0, "b", &token, keys).expect("b is admitted");
    assert_eq!(b, 1);
    cluster.advance(1_000);
    cluster
}

fn service(name: &str) -> (ServiceName, Box<ServiceSpec>) {
    (service_name(name), Box::new(spec("nginx", 1)))
}

fn secret(machine: &NodeMachine, name: &str) -> warren_crdt::SecretRecord {
    machine
        .state()
        .secrets()
        .remove(name)
        .unwrap_or_else(|| panic!("no secret {name}"))
}

// ---- admission -------------------------------------------------------------------------

#[test]
fn a_node_joins_with_a_token_and_both_documents_list_both_members() {
    let mut cluster = pair(false);
    let (a, b) = (cluster.id(0), cluster.id(1));
    for i in 0..2 {
        let members = cluster.machine(i).state().members();
        assert!(
            members.contains_key(&a) && members.contains_key(&b),
            "node {i} lists {:?}",
            members.keys().collect::<Vec<_>>()
        );
        // Each names the other to its mesh: only members are heard.
        assert!(cluster.nodes[i].members.contains(&a) && cluster.nodes[i].members.contains(&b));
    }
    // The admission was flushed before the answer went out.
    assert!(cluster.nodes[0].flushes >= 2, "token and admission");
    // Probes and their acks flow both ways once both tick.
    let now = cluster.now;
    assert_eq!(cluster.machine(0).liveness(&b, now), Liveness::Alive);
    assert_eq!(cluster.machine(1).liveness(&a, now), Liveness::Alive);
    assert_eq!(cluster.heads(0), cluster.heads(1));
}

#[test]
fn a_used_single_use_token_is_refused() {
    let mut cluster = Cluster::founded("a", false);
    cluster.tick();
    let token = cluster.mint_token(0);
    cluster
        .join(0, "b", &token, false)
        .expect("first use admits");
    let refused = cluster
        .join(0, "c", &token, false)
        .expect_err("the single use is spent");
    assert!(
        matches!(refused, JoinError::Token(TokenRefusal::Used)),
        "{refused:?}"
    );
    assert!(!cluster
        .machine(0)
        .state()
        .members()
        .contains_key(&node_id("c")));
    assert_eq!(cluster.nodes.len(), 2, "no machine started for c");
}

#[test]
fn a_token_of_another_member_or_a_malformed_request_is_refused() {
    let mut cluster = pair(false);
    // Only the minting member admits with its token.
    let token = cluster.mint_token(0);
    cluster.advance(1_000);
    let refused = cluster
        .join(1, "c", &token, false)
        .expect_err("b did not mint it");
    assert!(
        matches!(&refused, JoinError::MintedElsewhere { name, .. } if name == "a"),
        "{refused:?}"
    );
    let c = node_id("c");
    let refused = cluster.machine(0).handle_join(&c, b"{", 0);
    assert!(matches!(refused, Err(JoinError::MalformedRequest)));
    // The token still admits at its minter.
    cluster.join(0, "c", &token, false).expect("a admits");
}

// ---- sync ------------------------------------------------------------------------------

#[test]
fn divergent_replicas_converge_through_the_sync_dialogue_alone() {
    let mut cluster = pair(false);
    cluster.gossip = false;
    cluster.cut(0, 1);
    let (web, web_spec) = service("web");
    let (db, db_spec) = service("db");
    cluster
        .machine(0)
        .write(Write::CreateService(web.clone(), web_spec))
        .expect("a writes web");
    cluster
        .machine(1)
        .write(Write::CreateService(db.clone(), db_spec))
        .expect("b writes db");
    cluster.advance(1_000);
    assert_ne!(cluster.heads(0), cluster.heads(1), "the replicas diverged");

    let dropped = cluster.dropped;
    cluster.connect(0, 1);
    cluster.drive();
    assert_eq!(cluster.dropped, dropped, "no gossip was sent by the sync");
    assert!(cluster.sync_requests > 0);
    assert_eq!(cluster.heads(0), cluster.heads(1));
    for i in 0..2 {
        let services = cluster.machine(i).state().services();
        assert!(services.contains_key(&web) && services.contains_key(&db));
    }
}

#[test]
fn a_malformed_sync_body_is_refused_with_a_typed_error() {
    let mut cluster = pair(false);
    let b = cluster.id(1);
    let empty = cluster.machine(0).handle_sync_request(&b, &[]);
    assert!(matches!(empty, Err(SyncError::Empty)), "{empty:?}");
    // A reset flag and bytes that are no Automerge sync message.
    let garbage = cluster
        .machine(0)
        .handle_sync_request(&b, &[1, 0xde, 0xad, 0xbe, 0xef]);
    assert!(
        matches!(garbage, Err(SyncError::BadMessage(_))),
        "{garbage:?}"
    );
    // The dialogue was reset, not broken: the next one converges.
    cluster.connect(0, 1);
    cluster.drive();
    assert_eq!(cluster.heads(0), cluster.heads(1));
}

// ---- re-keying -------------------------------------------------------------------------

fn create_secret(cluster: &mut Cluster, i: usize, name: &str, value: &[u8]) {
    cluster
        .machine(i)
        .write(Write::CreateSecret {
            name: name.into(),
            value: SecretValue(Zeroizing::new(value.to_vec())),
        })
        .expect("create a secret");
    cluster.drive();
}

fn open(cluster: &Cluster, i: usize, name: &str) -> Result<Vec<u8>, SecretError> {
    let node = &cluster.nodes[i];
    let keys = node.keys.as_ref().expect("node has keys");
    secrets::open(&secret(&node.machine, name), node.machine.id(), keys).map(|v| v.to_vec())
}

#[test]
fn a_member_that_joins_later_can_open_a_secret_once_it_is_rekeyed() {
    let mut cluster = Cluster::founded("a", true);
    cluster.tick(); // publishes a's key in its member record
    create_secret(&mut cluster, 0, "db", b"hunter2");
    let before = secret(&cluster.nodes[0].machine, "db");
    assert_eq!(before.version, 1);
    assert_eq!(
        before.recipients.keys().collect::<Vec<_>>(),
        [&cluster.id(0)]
    );

    let token = cluster.mint_token(0);
    let b = cluster.join(0, "b", &token, true).expect("b joins");
    // The admission re-sealed the secret to b's key, and the document b received holds it.
    let rekeyed = secret(&cluster.nodes[b].machine, "db");
    assert_eq!(rekeyed.version, 2);
    let recipients: Vec<&NodeId> = rekeyed.recipients.keys().collect();
    assert_eq!(recipients.len(), 2);
    assert_eq!(open(&cluster, b, "db").expect("b opens it"), b"hunter2");
    assert_eq!(
        open(&cluster, 0, "db").expect("a still opens it"),
        b"hunter2"
    );
    cluster.advance(1_000);
    assert_eq!(cluster.heads(0), cluster.heads(b));
}

#[test]
fn members_publish_overlay_addresses_derived_from_their_wireguard_keys() {
    use rand::SeedableRng;
    use warren_core::overlay::{self, WireguardKey};
    let mut cluster = pair(false);
    let keys: Vec<WireguardKey> = (0..2)
        .map(|i| WireguardKey::generate(&mut rand::rngs::StdRng::seed_from_u64(i)))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        cluster.machine(i).set_wireguard_public(key.public());
    }
    cluster.advance(1_000);
    let cluster_id = cluster.nodes[0]
        .machine
        .state()
        .cluster()
        .expect("cluster")
        .id;
    for node in 0..2 {
        let records = cluster.nodes[node].machine.state().member_overlays();
        assert_eq!(records.len(), 2, "node {node} holds both records");
        for (i, key) in keys.iter().enumerate() {
            let record = &records[&cluster.id(i)];
            assert_eq!(record.wg_public_key, key.public().to_base64());
            let addresses = overlay::verify(&cluster_id, record).expect("follows the rule");
            assert_eq!(
                Some(addresses),
                cluster.nodes[i].machine.overlay_addresses()
            );
        }
    }
    // A rotated key is published with its new addresses.
    let rotated = WireguardKey::generate(&mut rand::rngs::StdRng::seed_from_u64(9));
    cluster.machine(1).set_wireguard_public(rotated.public());
    cluster.advance(1_000);
    let record = &cluster.nodes[0].machine.state().member_overlays()[&cluster.id(1)];
    assert_eq!(record.wg_public_key, rotated.public().to_base64());
    assert_eq!(
        overlay::verify(&cluster_id, record)
            .expect("valid")
            .overlay_ip,
        overlay::addresses(&cluster_id, &rotated.public()).overlay_ip
    );
}

#[test]
fn removing_a_member_rekeys_secrets_without_it() {
    let mut cluster = pair(true);
    create_secret(&mut cluster, 0, "db", b"hunter2");
    cluster.advance(1_000);
    assert_eq!(open(&cluster, 1, "db").expect("b opens it"), b"hunter2");
    assert_eq!(secret(&cluster.nodes[0].machine, "db").version, 1);

    let b = cluster.id(1);
    cluster
        .machine(0)
        .write(Write::RemoveMember(b.clone()))
        .expect("remove b");
    cluster.drive();
    let record = secret(&cluster.nodes[0].machine, "db");
    assert!(!record.recipients.contains_key(&b));
    assert_eq!(
        record.version, 2,
        "sealed to a and b, then re-keyed without b"
    );
    assert_eq!(open(&cluster, 0, "db").expect("a opens it"), b"hunter2");
    // The re-keyed record reached b's replica, and b cannot open it.
    assert_eq!(secret(&cluster.nodes[1].machine, "db").version, 2);
    assert!(matches!(
        open(&cluster, 1, "db"),
        Err(SecretError::NotARecipient(_))
    ));
}

#[test]
fn a_key_published_after_admission_is_sealed_to_at_the_next_rotation() {
    let mut cluster = Cluster::founded("a", true);
    cluster.tick();
    create_secret(&mut cluster, 0, "db", b"hunter2");
    let token = cluster.mint_token(0);
    // b joins without a key: nothing is sealed to it.
    let b = cluster.join(0, "b", &token, false).expect("b joins");
    let b_id = cluster.id(b);
    assert!(!secret(&cluster.nodes[0].machine, "db")
        .recipients
        .contains_key(&b_id));

    // b gets keys later and publishes its public key at its next tick; that alone re-keys
    // nothing (only a change of membership does).
    cluster.give_keys(b);
    cluster.advance(1_000);
    assert!(cluster.machine(0).state().member_keys().contains_key(&b_id));
    assert!(matches!(
        open(&cluster, b, "db"),
        Err(SecretError::NotARecipient(_))
    ));

    // A rotation seals the secret to every member with a published key.
    cluster
        .machine(0)
        .write(Write::RotateSecret("db".into()))
        .expect("rotate");
    cluster.drive();
    assert_eq!(open(&cluster, b, "db").expect("b opens it"), b"hunter2");
}

// ---- time ------------------------------------------------------------------------------

fn renewals(machine: &mut NodeMachine) -> usize {
    std::iter::from_fn(|| machine.poll_output())
        .filter(|o| {
            matches!(
                o,
                Output::Publish {
                    channel: Channel::Lease,
                    ..
                }
            )
        })
        .count()
}

/// A machine's timing: the core's tick period, the lease renewal and anti-entropy periods
/// (and a probe period long enough to stay out of the way).
fn timing(tick_ms: u64, renew_ms: u64, anti_entropy_ms: u64) -> MachineConfig {
    let mut config = MachineConfig {
        renew_ms,
        anti_entropy_ms,
        ..MachineConfig::default()
    };
    config.core.tick_ms = tick_ms;
    config.core.swim.probe_interval_ms = 60_000;
    config.core.swim.down_probe_ms = 60_000;
    config
}

#[test]
fn poll_timeout_names_the_next_renewal_anti_entropy_or_core_tick() {
    let mut cluster = Cluster::founded_with("a", false, timing(1_000, 400, 700));
    // The founder holds the lease once its first TTL is over (a restart's wait).
    cluster.advance(3_000);
    let machine = cluster.machine(0);
    let t = 3_000;
    machine.handle_tick(Millis(t));
    renewals(machine);
    // Next: the renewal (400 after the last) before anti-entropy and the core's tick.
    let next = machine.poll_timeout();
    assert!(next.0 <= t + 400 && next.0 > t, "{next:?}");
    machine.handle_tick(Millis(next.0 - 1));
    assert_eq!(renewals(machine), 0, "nothing due before the timeout");
    machine.handle_tick(next);
    assert_eq!(renewals(machine), 1, "the holder renews its lease");
}

#[test]
fn poll_timeout_is_at_most_one_core_tick_away() {
    let mut cluster = Cluster::founded_with("a", false, timing(1_000, 60_000, 60_000));
    let machine = cluster.machine(0);
    machine.handle_tick(Millis(0));
    assert_eq!(machine.poll_timeout(), Millis(1_000));
    // A late tick counts from when it came.
    machine.handle_tick(Millis(1_500));
    assert_eq!(machine.poll_timeout(), Millis(2_500));
}

#[test]
fn overlay_peers_follow_joins_rotations_and_removals_and_statuses_reach_peers() {
    use rand::SeedableRng;
    use warren_core::overlay::{self, WireguardKey};
    use warren_core::protocol::OverlayStatus;
    let key = |seed| WireguardKey::generate(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut cluster = pair(false);
    let token = cluster.mint_token(0);
    let c = cluster.join(0, "c", &token, false).expect("c is admitted");
    for (i, seed) in [(0, 1), (1, 2), (c, 3)] {
        cluster.machine(i).set_wireguard_public(key(seed).public());
    }
    cluster.machine(1).set_wireguard_port(40001);
    cluster.advance(2_000);
    let cluster_id = cluster.nodes[0]
        .machine
        .state()
        .cluster()
        .expect("cluster")
        .id;
    let peers = cluster.machine(0).overlay_peers();
    let ids: Vec<NodeId> = peers.iter().map(|p| p.node.clone()).collect();
    let mut want = vec![cluster.id(1), cluster.id(c)];
    want.sort();
    assert_eq!(ids, want, "a's peers: b and c, not a");
    let b = peers.iter().find(|p| p.node == cluster.id(1)).expect("b");
    assert_eq!(b.public_key, key(2).public());
    assert_eq!(
        b.allowed,
        overlay::addresses(&cluster_id, &key(2).public()).block
    );
    // The harness's members listen on /memory/ addresses: no IP, no endpoint (the
    // endpoint rule has unit tests in warren_core::overlay); b's port is in its record.
    assert_eq!(b.endpoint, None);
    let b_id = cluster.id(1);
    let record = cluster.nodes[0].machine.state().member_overlay(&b_id);
    assert_eq!(record.map(|r| r.wg_port), Some(40001));

    // c rotates its key: a's peer for c takes the new key and block.
    cluster.machine(c).set_wireguard_public(key(4).public());
    cluster.advance(2_000);
    let peers = cluster.machine(0).overlay_peers();
    let for_c = peers.iter().find(|p| p.node == cluster.id(c)).expect("c");
    assert_eq!(for_c.public_key, key(4).public());
    assert_eq!(
        for_c.allowed,
        overlay::addresses(&cluster_id, &key(4).public()).block
    );

    // c is removed: it is nobody's peer.
    let c_id = cluster.id(c);
    cluster
        .machine(0)
        .write(Write::RemoveMember(c_id.clone()))
        .expect("remove c");
    cluster.advance(2_000);
    for i in [0, 1] {
        let peers = cluster.machine(i).overlay_peers();
        assert!(peers.iter().all(|p| p.node != c_id), "node {i}: {peers:?}");
        assert_eq!(peers.len(), 1, "node {i}: {peers:?}");
    }

    // b's word on its interface reaches a's view of b.
    let off = OverlayStatus::Off {
        reason: "no /dev/net/tun".into(),
    };
    cluster.machine(1).set_overlay_status(Some(off.clone()));
    let mut seen = None;
    for _ in 0..20 {
        let now = cluster.now;
        cluster.machine(0).want_reports(now);
        cluster.advance(500);
        let now = cluster.now;
        let snapshot = cluster.machine(0).snapshot(now, 0, 0);
        seen = snapshot
            .members
            .iter()
            .find(|m| m.id == b_id)
            .and_then(|m| m.overlay_state.clone());
        if seen.is_some() {
            break;
        }
    }
    assert_eq!(seen, Some(off));
}

#[test]
fn a_node_announces_its_labels_and_platform_once_and_label_updates_merge() {
    use std::collections::{BTreeMap, BTreeSet};
    use warren_core::machine::OwnDescription;
    use warren_crdt::Platform;
    let mut cluster = pair(false);
    let b = cluster.id(1);
    // b starts with `--label zone=b --capability gpu`; its record (no labels yet) takes them.
    cluster.machine(1).describe_self(OwnDescription {
        labels: [("zone".to_string(), "b".to_string())].into(),
        capabilities: ["gpu".to_string()].into(),
        platform: Platform::from_rust("aarch64", "linux"),
    });
    cluster.advance(1_000);
    let record = cluster.nodes[0].machine.state().members()[&b].clone();
    assert_eq!(record.labels.get("zone").map(String::as_str), Some("b"));
    assert_eq!(record.capabilities, BTreeSet::from(["gpu".to_string()]));
    assert_eq!(record.platform.arch, "arm64");

    // The operator changes b's labels at a, and another key at b: both survive.
    let add = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    cluster
        .machine(0)
        .write(Write::UpdateNodeLabels {
            node: b.clone(),
            add: add("rack", "r1"),
            remove: BTreeSet::from(["zone".to_string()]),
        })
        .expect("label write at a");
    cluster
        .machine(1)
        .write(Write::UpdateNodeLabels {
            node: b.clone(),
            add: add("tier", "front"),
            remove: BTreeSet::new(),
        })
        .expect("label write at b");
    cluster.advance(1_000);
    for node in 0..2 {
        let labels = cluster.nodes[node].machine.state().members()[&b]
            .labels
            .clone();
        assert_eq!(
            labels,
            BTreeMap::from([
                ("rack".to_string(), "r1".to_string()),
                ("tier".to_string(), "front".to_string())
            ]),
            "node {node}"
        );
    }
    // The announcement was once per start: the runtime change stands.
    cluster.advance(2_000);
    assert!(!cluster.nodes[1].machine.state().members()[&b]
        .labels
        .contains_key("zone"));
    // Invalid changes are refused with the rule.
    for (add, remove) in [
        (add("bad key", "x"), BTreeSet::new()),
        (add("k", "v"), BTreeSet::from(["k".to_string()])),
    ] {
        let err = cluster
            .machine(0)
            .write(Write::UpdateNodeLabels {
                node: b.clone(),
                add,
                remove,
            })
            .expect_err("refused");
        assert!(err.to_string().contains("label"), "{err}");
    }
    let unknown = cluster.machine(0).write(Write::UpdateNodeLabels {
        node: NodeId("nobody".into()),
        add: add("k", "v"),
        remove: BTreeSet::new(),
    });
    assert!(unknown.is_err());
}
