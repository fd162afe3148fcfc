//! Integration tests: real meshes on 127.0.0.1, port 0. Every wait polls with a deadline.

#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use tokio::{sync::mpsc, time::Instant};
use warren_mesh::{
    spawn, Keypair, MemberLimits, MeshConfig, MeshError, MeshEvent, MeshHandle, Multiaddr,
    NonMemberLimits, PeerId, Rate, RequestKind, Response, Topic, MAX_DIRECT_BYTES,
    MAX_DIRECT_IN_FLIGHT, MAX_REQUEST_BODY,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// Period of the polls that wait for a counter.
const POLL: Duration = Duration::from_millis(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

/// What the pump saw on a node's event channel.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Gossip {
        topic: Topic,
        source: PeerId,
        data: Vec<u8>,
    },
    Request {
        peer: PeerId,
        kind: RequestKind,
        body: Vec<u8>,
    },
    Direct {
        from: PeerId,
        data: Vec<u8>,
    },
    Connected(PeerId, Multiaddr),
    Closed(PeerId),
    Listen(Multiaddr),
}

/// How a test node answers requests: `None` drops the reply unanswered.
type Responder = fn(PeerId, RequestKind, &[u8]) -> Option<Response>;

struct Node {
    mesh: MeshHandle,
    id: PeerId,
    addrs: Vec<Multiaddr>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

async fn node(listen: Vec<Multiaddr>, responder: Responder) -> Node {
    node_with(listen, responder, |_| {}).await
}

/// A node whose configuration `tweak` adjusts.
async fn node_with(
    listen: Vec<Multiaddr>,
    responder: Responder,
    tweak: impl FnOnce(&mut MeshConfig),
) -> Node {
    init_tracing();
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = listen.clone();
    config.redial_interval = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let (mesh, events) = spawn(config).await.expect("spawn");
    let addrs = mesh.stats().await.expect("stats").listen_addrs;
    assert_eq!(addrs.len(), listen.len(), "one address per listener");
    let (tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(pump(events, responder, tx));
    // The NewListenAddr events were queued before spawn returned.
    for addr in &addrs {
        assert_eq!(seen.recv().await, Some(Seen::Listen(addr.clone())));
    }
    let id = mesh.local_peer_id();
    Node {
        mesh,
        id,
        addrs,
        seen,
    }
}

async fn pump(
    mut events: mpsc::Receiver<MeshEvent>,
    responder: Responder,
    tx: mpsc::UnboundedSender<Seen>,
) {
    while let Some(event) = events.recv().await {
        let seen = match event {
            MeshEvent::Gossip {
                topic,
                source,
                data,
            } => Seen::Gossip {
                topic,
                source,
                data,
            },
            MeshEvent::Request {
                peer,
                kind,
                body,
                reply,
            } => {
                assert_eq!((reply.peer(), reply.kind()), (peer, kind));
                if let Some(response) = responder(peer, kind, &body) {
                    reply.send(response).await.expect("reply");
                } else {
                    drop(reply);
                }
                Seen::Request { peer, kind, body }
            }
            MeshEvent::Direct { from, data } => Seen::Direct { from, data },
            MeshEvent::ConnectionEstablished { peer, addr } => Seen::Connected(peer, addr),
            MeshEvent::ConnectionClosed { peer } => Seen::Closed(peer),
            MeshEvent::NewListenAddr { addr } => Seen::Listen(addr),
        };
        if tx.send(seen).is_err() {
            return;
        }
    }
}

fn no_requests(_: PeerId, _: RequestKind, _: &[u8]) -> Option<Response> {
    Some(Response::Refused("test node answers nothing".into()))
}

/// Waits (until `deadline`) for something matching `pred`; earlier non-matching items are
/// returned too, in order, so the caller can assert on them.
async fn wait_for(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    deadline: Instant,
    pred: impl Fn(&Seen) -> bool,
) -> (Option<Seen>, Vec<Seen>) {
    let mut skipped = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(s)) if pred(&s) => return (Some(s), skipped),
            Ok(Some(s)) => skipped.push(s),
            Ok(None) | Err(_) => return (None, skipped),
        }
    }
}

fn drain(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut out = Vec::new();
    while let Ok(s) = seen.try_recv() {
        out.push(s);
    }
    out
}

fn members(nodes: &[&Node]) -> HashMap<PeerId, Vec<Multiaddr>> {
    nodes.iter().map(|n| (n.id, n.addrs.clone())).collect()
}

fn gossip_from(s: &Seen, from: PeerId, topic: Topic, prefix: &[u8]) -> bool {
    matches!(s, Seen::Gossip { topic: t, source, data }
        if *t == topic && *source == from && data.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_all_members_with_author_as_source() {
    let a = node(vec![quic()], no_requests).await;
    let mut b = node(vec![quic()], no_requests).await;
    let mut c = node(vec![quic()], no_requests).await;
    let all = members(&[&a, &b, &c]);
    for n in [&a, &b, &c] {
        n.mesh.set_members(all.clone()).await.unwrap();
    }

    for topic in Topic::ALL {
        let deadline = Instant::now() + DEADLINE;
        let (mut got_b, mut got_c) = (None, None);
        let mut i = 0u32;
        while got_b.is_none() || got_c.is_none() {
            assert!(
                Instant::now() < deadline,
                "{topic:?} gossip from A did not reach B and C (b: {got_b:?}, c: {got_c:?})"
            );
            // Distinct payloads: re-publishing identical bytes is a gossipsub duplicate.
            a.mesh
                .publish(topic, format!("hello-{i}").into_bytes())
                .await
                .unwrap();
            i += 1;
            let tick = Instant::now() + Duration::from_millis(250);
            if got_b.is_none() {
                got_b = wait_for(&mut b.seen, tick, |s| {
                    gossip_from(s, a.id, topic, b"hello-")
                })
                .await
                .0;
            }
            if got_c.is_none() {
                got_c = wait_for(&mut c.seen, tick, |s| {
                    gossip_from(s, a.id, topic, b"hello-")
                })
                .await
                .0;
            }
        }
    }

    // B's gossip reaches A and C too, attributed to B.
    let deadline = Instant::now() + DEADLINE;
    let mut a = a;
    let (mut got_a, mut got_c) = (false, false);
    let mut i = 0u32;
    while !(got_a && got_c) {
        assert!(Instant::now() < deadline, "gossip from B did not spread");
        b.mesh
            .publish(Topic::Changes, format!("from-b-{i}").into_bytes())
            .await
            .unwrap();
        i += 1;
        let tick = Instant::now() + Duration::from_millis(250);
        got_a |= wait_for(&mut a.seen, tick, |s| {
            gossip_from(s, b.id, Topic::Changes, b"from-b-")
        })
        .await
        .0
        .is_some();
        got_c |= wait_for(&mut c.seen, tick, |s| {
            gossip_from(s, b.id, Topic::Changes, b"from-b-")
        })
        .await
        .0
        .is_some();
    }

    let stats = a.mesh.stats().await.unwrap();
    assert!(stats.connected_peers.contains(&b.id) && stats.connected_peers.contains(&c.id));
    assert_eq!(stats.dropped_non_member, 0);

    // Payload limit is enforced locally.
    let err = a
        .mesh
        .publish(Topic::Changes, vec![0; 256 * 1024 + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, MeshError::TooLarge { .. }), "{err:?}");

    for n in [&a, &b, &c] {
        n.mesh.shutdown().await;
    }
}

fn answer_sync(_: PeerId, kind: RequestKind, body: &[u8]) -> Option<Response> {
    match kind {
        RequestKind::Sync if body == b"big" => Some(Response::Ok(vec![0xab; 5 * 1024 * 1024])),
        RequestKind::Sync => {
            let mut out = b"pong:".to_vec();
            out.extend_from_slice(&body[..body.len().min(16)]);
            out.extend_from_slice(format!(":{}", body.len()).as_bytes());
            Some(Response::Ok(out))
        }
        // Dropped unanswered: the mesh answers Refused("no response").
        RequestKind::Join | RequestKind::Logs => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_over_tcp() {
    let mut a = node(vec![tcp()], no_requests).await;
    let mut b = node(vec![tcp()], answer_sync).await;
    assert!(a.addrs[0].to_string().contains("/tcp/"));
    let ab = members(&[&a, &b]);
    a.mesh.set_members(ab.clone()).await.unwrap();
    b.mesh.set_members(ab).await.unwrap();

    // The request dials B itself if the redial has not connected yet.
    let resp = a
        .mesh
        .request(b.id, RequestKind::Sync, b"ping".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Ok(b"pong:ping:4".to_vec()));
    let deadline = Instant::now() + DEADLINE;
    let (req, _) = wait_for(&mut b.seen, deadline, |s| matches!(s, Seen::Request { .. })).await;
    assert_eq!(
        req,
        Some(Seen::Request {
            peer: a.id,
            kind: RequestKind::Sync,
            body: b"ping".to_vec()
        })
    );
    let (conn, _) = wait_for(&mut a.seen, deadline, |s| matches!(s, Seen::Connected(..))).await;
    match conn {
        Some(Seen::Connected(peer, addr)) => {
            assert_eq!(peer, b.id);
            assert!(addr.to_string().contains("/tcp/"), "{addr}");
        }
        other => panic!("no ConnectionEstablished: {other:?}"),
    }

    // Near the size limits: bodies travel as CBOR byte strings.
    let body = vec![7u8; MAX_REQUEST_BODY];
    let resp = a
        .mesh
        .request(b.id, RequestKind::Sync, body.clone())
        .await
        .unwrap();
    assert_eq!(
        resp,
        Response::Ok(format!("pong:{}:{}", "\u{7}".repeat(16), body.len()).into_bytes())
    );
    let resp = a
        .mesh
        .request(b.id, RequestKind::Sync, b"big".to_vec())
        .await
        .unwrap();
    assert!(matches!(resp, Response::Ok(ref v) if v.len() == 5 * 1024 * 1024));
    let err = a
        .mesh
        .request(b.id, RequestKind::Sync, vec![0; MAX_REQUEST_BODY + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, MeshError::TooLarge { .. }), "{err:?}");

    // A reply dropped by the node is answered Refused by the mesh.
    let resp = a
        .mesh
        .request(b.id, RequestKind::Join, b"token".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Refused("no response".into()));

    // Identify told A where B listens.
    let deadline = Instant::now() + DEADLINE;
    loop {
        if a.mesh.peer_addrs(b.id).await.unwrap().contains(&b.addrs[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "identify did not report B's address"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Shutdown: B stops, A sees the connection close and requests fail cleanly.
    b.mesh.shutdown().await;
    assert!(matches!(b.mesh.stats().await, Err(MeshError::Stopped)));
    assert!(matches!(
        b.mesh.publish(Topic::Changes, vec![1]).await,
        Err(MeshError::Stopped)
    ));
    let deadline = Instant::now() + DEADLINE;
    let (closed, _) = wait_for(&mut a.seen, deadline, |s| *s == Seen::Closed(b.id)).await;
    assert!(closed.is_some(), "A did not see B go away");
    let err = a
        .mesh
        .request(b.id, RequestKind::Sync, b"ping".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, MeshError::Request(_) | MeshError::Timeout),
        "{err:?}"
    );
    a.mesh.shutdown().await;
}

fn answer_join(_: PeerId, kind: RequestKind, body: &[u8]) -> Option<Response> {
    match kind {
        RequestKind::Join if body == b"token" => Some(Response::Ok(b"welcome".to_vec())),
        RequestKind::Join => Some(Response::Refused("bad token".into())),
        RequestKind::Sync => Some(Response::Ok(b"synced".to_vec())),
        RequestKind::Logs => Some(Response::Ok(b"logs".to_vec())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_member_is_not_heard_but_may_join() {
    let mut a = node(vec![quic()], answer_join).await;
    let mut b = node(vec![quic()], no_requests).await;
    let mut d = node(vec![quic()], no_requests).await;
    // A and B are members; D is not, but D knows A (a joining node knows its bootstrap peer).
    let ab = members(&[&a, &b]);
    a.mesh.set_members(ab.clone()).await.unwrap();
    b.mesh.set_members(ab).await.unwrap();
    d.mesh.set_members(members(&[&a])).await.unwrap();
    d.mesh.dial(a.addrs[0].clone()).await.unwrap();

    let deadline = Instant::now() + DEADLINE;
    let (conn, _) = wait_for(
        &mut a.seen,
        deadline,
        |s| matches!(s, Seen::Connected(p, _) if *p == d.id),
    )
    .await;
    assert!(conn.is_some(), "D did not connect to A");

    // D's gossip is rejected and counted, never delivered.
    let mut i = 0u32;
    loop {
        d.mesh
            .publish(Topic::Changes, format!("intruder-{i}").into_bytes())
            .await
            .unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if a.mesh.stats().await.unwrap().dropped_non_member > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never saw (and rejected) D's gossip"
        );
    }
    let leaked: Vec<Seen> = drain(&mut a.seen)
        .into_iter()
        .filter(|s| matches!(s, Seen::Gossip { .. }))
        .collect();
    assert!(leaked.is_empty(), "non-member gossip delivered: {leaked:?}");

    // Members' gossip does not flow to D: by the time B got several of A's messages, D got none.
    let deadline = Instant::now() + DEADLINE;
    let mut got = 0;
    let mut i = 0u32;
    while got < 5 {
        assert!(Instant::now() < deadline, "A's gossip did not reach B");
        a.mesh
            .publish(Topic::Changes, format!("members-only-{i}").into_bytes())
            .await
            .unwrap();
        i += 1;
        let tick = Instant::now() + Duration::from_millis(200);
        while wait_for(&mut b.seen, tick, |s| {
            gossip_from(s, a.id, Topic::Changes, b"members-only-")
        })
        .await
        .0
        .is_some()
        {
            got += 1;
        }
    }
    let leaked: Vec<Seen> = drain(&mut d.seen)
        .into_iter()
        .filter(|s| matches!(s, Seen::Gossip { .. }))
        .collect();
    assert!(
        leaked.is_empty(),
        "member gossip sent to non-member: {leaked:?}"
    );

    // D's Sync is refused by A's mesh without reaching A's node, and counted.
    let before = a.mesh.stats().await.unwrap().dropped_non_member;
    let resp = d
        .mesh
        .request(a.id, RequestKind::Sync, b"sync".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Refused("not a member".into()));
    assert_eq!(a.mesh.stats().await.unwrap().dropped_non_member, before + 1);

    // So is its Logs request: container logs are for members only.
    let resp = d
        .mesh
        .request(a.id, RequestKind::Logs, b"web".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Refused("not a member".into()));
    assert_eq!(a.mesh.stats().await.unwrap().dropped_non_member, before + 2);

    // D's Join reaches A's node.
    let resp = d
        .mesh
        .request(a.id, RequestKind::Join, b"token".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Ok(b"welcome".to_vec()));
    let deadline = Instant::now() + DEADLINE;
    let (req, skipped) =
        wait_for(&mut a.seen, deadline, |s| matches!(s, Seen::Request { .. })).await;
    assert_eq!(
        req,
        Some(Seen::Request {
            peer: d.id,
            kind: RequestKind::Join,
            body: b"token".to_vec()
        })
    );
    assert!(
        !skipped
            .iter()
            .any(|s| matches!(s, Seen::Request { .. } | Seen::Gossip { .. })),
        "{skipped:?}"
    );

    // Once admitted, D is heard: its gossip reaches A and its Sync is served.
    a.mesh.set_members(members(&[&a, &b, &d])).await.unwrap();
    let resp = d
        .mesh
        .request(a.id, RequestKind::Sync, b"sync".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Ok(b"synced".to_vec()));
    let resp = d
        .mesh
        .request(a.id, RequestKind::Logs, b"web".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Ok(b"logs".to_vec()));
    let deadline = Instant::now() + DEADLINE;
    let mut i = 0u32;
    loop {
        assert!(
            Instant::now() < deadline,
            "admitted D's gossip not delivered"
        );
        d.mesh
            .publish(Topic::Lease, format!("member-d-{i}").into_bytes())
            .await
            .unwrap();
        i += 1;
        let tick = Instant::now() + Duration::from_millis(250);
        if wait_for(&mut a.seen, tick, |s| {
            gossip_from(s, d.id, Topic::Lease, b"member-d-")
        })
        .await
        .0
        .is_some()
        {
            break;
        }
    }

    for n in [&a, &b, &d] {
        n.mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_address_in_use_is_a_clean_error() {
    init_tracing();
    // A TCP port held by another program.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    config.listen = vec![quic(), addr.clone()];
    match spawn(config).await {
        Err(MeshError::Listen { addr: a, reason }) => {
            assert_eq!(a, addr);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Listen error, got {:?}", other.map(|_| ())),
    }

    // A TCP port held by another mesh (libp2p binds with SO_REUSEPORT).
    let first = node(vec![tcp()], no_requests).await;
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = vec![first.addrs[0].clone()];
    assert!(matches!(spawn(config).await, Err(MeshError::Listen { .. })));

    // A UDP port in use, for QUIC.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = vec![format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap()];
    assert!(matches!(spawn(config).await, Err(MeshError::Listen { .. })));

    // An address no transport supports.
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = vec!["/ip4/127.0.0.1/udp/0".parse().unwrap()];
    assert!(matches!(spawn(config).await, Err(MeshError::Listen { .. })));

    first.mesh.shutdown().await;
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_without_peer_id_connects_and_redials() {
    init_tracing();
    let key_a = Keypair::generate_ed25519();
    let id_a = key_a.public().to_peer_id();
    let mut config = MeshConfig::new(key_a.clone(), "test");
    config.listen = vec![quic()];
    let (a, _a_events) = spawn(config).await.unwrap();
    let addr_a = a.stats().await.unwrap().listen_addrs[0].clone();

    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = vec![quic()];
    config.redial_interval = Duration::from_millis(300);
    // No /p2p suffix: the peer id is learnt from the first connection. The second address is
    // dead and only produces failed dials.
    config.bootstrap = vec![
        addr_a.clone(),
        "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap(),
    ];
    let (e, events) = spawn(config).await.unwrap();
    let (tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(pump(events, no_requests, tx));

    let deadline = Instant::now() + DEADLINE;
    let (conn, _) = wait_for(
        &mut seen,
        deadline,
        |s| matches!(s, Seen::Connected(p, _) if *p == id_a),
    )
    .await;
    assert!(conn.is_some(), "bootstrap dial did not connect");
    assert_eq!(e.stats().await.unwrap().connected_peers, vec![id_a]);

    // A restarts on the same address: E re-dials it.
    a.shutdown().await;
    let (closed, _) = wait_for(&mut seen, deadline, |s| *s == Seen::Closed(id_a)).await;
    assert!(closed.is_some(), "E did not notice A stopping");
    let (a, _a_events) = loop {
        let mut config = MeshConfig::new(key_a.clone(), "test");
        config.listen = vec![addr_a.clone()];
        match spawn(config).await {
            Ok(ok) => break ok,
            Err(MeshError::Listen { reason, .. }) if Instant::now() < deadline => {
                eprintln!("restart: {reason}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart failed: {e}"),
        }
    };
    let deadline = Instant::now() + DEADLINE;
    let (conn, _) = wait_for(
        &mut seen,
        deadline,
        |s| matches!(s, Seen::Connected(p, _) if *p == id_a),
    )
    .await;
    assert!(conn.is_some(), "E did not re-dial A");

    e.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_event_channel_drops_gossip_and_refuses_requests() {
    init_tracing();
    // A never reads its events; its channel holds 4.
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = vec![quic()];
    config.channel_capacity = 4;
    let (a, mut a_events) = spawn(config).await.unwrap();
    let a_id = a.local_peer_id();
    let a_addrs = a.stats().await.unwrap().listen_addrs;
    let b = node(vec![quic()], no_requests).await;
    let both: HashMap<PeerId, Vec<Multiaddr>> = [(a_id, a_addrs), (b.id, b.addrs.clone())].into();
    a.set_members(both.clone()).await.unwrap();
    b.mesh.set_members(both).await.unwrap();

    let deadline = Instant::now() + DEADLINE;
    let mut i = 0u32;
    while a.stats().await.unwrap().dropped_overflow == 0 {
        assert!(
            Instant::now() < deadline,
            "A's full channel never overflowed"
        );
        b.mesh
            .publish(Topic::Lease, format!("flood-{i}").into_bytes())
            .await
            .unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The swarm still works while the node does not read: requests are refused, not stuck.
    let resp = b
        .mesh
        .request(a_id, RequestKind::Sync, b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, Response::Refused("overloaded".into()));

    // What was queued is intact.
    let mut gossip = 0;
    while let Ok(event) = a_events.try_recv() {
        if let MeshEvent::Gossip { source, data, .. } = event {
            assert_eq!(source, b.id);
            assert!(data.starts_with(b"flood-"));
            gossip += 1;
        }
    }
    assert!(gossip > 0);
    a.shutdown().await;
    b.mesh.shutdown().await;
}

/// Issue 13, item 5: peers that are not members hold at most `max_established_incoming` of a
/// node's incoming connections and lose each one `idle` after it was established; a member
/// is neither counted nor limited nor closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_connections_are_bounded_and_closed_when_idle() {
    strangers_are_bounded(
        NonMemberLimits {
            max_established_incoming: 3,
            max_per_peer: 1,
            idle: Duration::from_secs(1),
            ..NonMemberLimits::default()
        },
        3,
    )
    .await;
}

/// The same with the bound per IP address binding (every test peer is on 127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_connections_are_bounded_per_ip_address() {
    strangers_are_bounded(
        NonMemberLimits {
            max_established_incoming: 100,
            max_per_ip: 2,
            idle: Duration::from_secs(1),
            ..NonMemberLimits::default()
        },
        2,
    )
    .await;
}

/// Six strangers and one member dial a node with `limits`: at most `bound` strangers are
/// connected at any time, some are, the member stays connected past the idle period, and a
/// stranger's connection is closed by the node.
async fn strangers_are_bounded(limits: NonMemberLimits, bound: usize) {
    init_tracing();
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = vec![quic()];
    config.redial_interval = Duration::from_millis(300);
    config.non_member = limits;
    let (a, a_events) = spawn(config).await.unwrap();
    let id_a = a.local_peer_id();
    let (tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(pump(a_events, no_requests, tx));
    let addr_a = a.stats().await.unwrap().listen_addrs[0].clone();
    let dialer = || {
        let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
        config.listen = vec![quic()];
        config.redial_interval = Duration::from_millis(300);
        config.bootstrap = vec![addr_a.clone()];
        config
    };
    // Six strangers keep dialing A.
    let mut strangers = Vec::new();
    for _ in 0..6 {
        let (mesh, events) = spawn(dialer()).await.unwrap();
        let (tx, _seen) = mpsc::unbounded_channel();
        tokio::spawn(pump(events, no_requests, tx));
        strangers.push(mesh);
    }
    let stranger_ids: Vec<PeerId> = strangers.iter().map(|s| s.local_peer_id()).collect();
    // A member, known to A as one.
    let (m, m_events) = spawn(dialer()).await.unwrap();
    let id_m = m.local_peer_id();
    let (tx, _m_seen) = mpsc::unbounded_channel();
    tokio::spawn(pump(m_events, no_requests, tx));
    let addr_m = m.stats().await.unwrap().listen_addrs[0].clone();
    a.set_members([(id_m, vec![addr_m])].into()).await.unwrap();
    m.set_members([(id_a, vec![addr_a.clone()])].into())
        .await
        .unwrap();

    // For three idle periods: never more than `bound` strangers connected, some were, and
    // the member connected throughout once it was.
    let start = Instant::now();
    let mut most = 0;
    let mut member_since: Option<Instant> = None;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    while start.elapsed() < Duration::from_secs(3) {
        every.tick().await;
        let connected = a.stats().await.unwrap().connected_peers;
        let strangers_now = connected
            .iter()
            .filter(|p| stranger_ids.contains(p))
            .count();
        assert!(
            strangers_now <= bound,
            "{strangers_now} strangers connected at once"
        );
        most = most.max(strangers_now);
        match (connected.contains(&id_m), member_since) {
            (true, None) => member_since = Some(Instant::now()),
            (false, Some(since)) => {
                panic!("the member lost its connection after {:?}", since.elapsed())
            }
            _ => {}
        }
    }
    assert!(most > 0, "no stranger ever connected");
    assert!(member_since.is_some(), "the member never connected");
    assert!(
        member_since.is_some_and(|since| since.elapsed() > Duration::from_secs(1)),
        "the member was not connected past the idle period"
    );
    // A stranger's connection was closed by A (a refused one is never established).
    let (closed, _) = wait_for(
        &mut seen,
        Instant::now() + DEADLINE,
        |s| matches!(s, Seen::Closed(p) if stranger_ids.contains(p)),
    )
    .await;
    assert!(closed.is_some(), "no stranger's connection was closed");

    for s in strangers {
        s.shutdown().await;
    }
    m.shutdown().await;
    a.shutdown().await;
}

fn direct_from(s: &Seen, peer: PeerId, data: &[u8]) -> bool {
    matches!(s, Seen::Direct { from, data: d } if *from == peer && d == data)
}

/// Issue 13, item 1: direct messages reach members (dialing on demand), are refused locally
/// when too large or addressed to oneself, and are dropped (counted) from non-members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_between_members_and_not_from_strangers() {
    let mut a = node(vec![quic()], no_requests).await;
    let mut b = node(vec![tcp()], no_requests).await;
    let d = node(vec![quic()], no_requests).await;
    let ab = members(&[&a, &b]);
    a.mesh.set_members(ab.clone()).await.unwrap();
    b.mesh.set_members(ab).await.unwrap();

    // A to B, and B back to A; the largest payload too.
    let deadline = Instant::now() + DEADLINE;
    a.mesh.send_direct(b.id, b"ping".to_vec()).unwrap();
    let (got, skipped) =
        wait_for(&mut b.seen, deadline, |s| matches!(s, Seen::Direct { .. })).await;
    assert!(
        got.as_ref().is_some_and(|s| direct_from(s, a.id, b"ping")),
        "{got:?} after {skipped:?}"
    );
    let big = vec![0x5a; MAX_DIRECT_BYTES];
    b.mesh.send_direct(a.id, big.clone()).unwrap();
    let (got, _) = wait_for(&mut a.seen, deadline, |s| matches!(s, Seen::Direct { .. })).await;
    assert!(got.is_some_and(|s| direct_from(&s, b.id, &big)));
    // In order, one after the other, when the peer keeps up.
    for i in 0..20u8 {
        a.mesh.send_direct(b.id, vec![i]).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        match wait_for(&mut b.seen, deadline, |s| matches!(s, Seen::Direct { .. })).await {
            (Some(Seen::Direct { from, data }), _) if from == a.id => got.push(data[0]),
            other => panic!("{} of 20 direct messages, then {other:?}", got.len()),
        }
    }
    got.sort();
    assert_eq!(got, (0..20).collect::<Vec<u8>>());

    // Refused before anything is sent.
    let err = a
        .mesh
        .send_direct(b.id, vec![0; MAX_DIRECT_BYTES + 1])
        .unwrap_err();
    assert!(
        matches!(err, MeshError::TooLarge { size, max } if size == MAX_DIRECT_BYTES + 1 && max == MAX_DIRECT_BYTES),
        "{err:?}"
    );
    assert!(matches!(
        a.mesh.send_direct(a.id, b"me".to_vec()),
        Err(MeshError::Request(_))
    ));

    // D, not a member of A's, is acknowledged but never delivered; A counts it.
    d.mesh.set_members(members(&[&a])).await.unwrap();
    let before = a.mesh.stats().await.unwrap().dropped_non_member;
    d.mesh.send_direct(a.id, b"let me in".to_vec()).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut every = tokio::time::interval(POLL);
    loop {
        every.tick().await;
        if a.mesh.stats().await.unwrap().dropped_non_member > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never saw (and dropped) D's direct message"
        );
    }
    // Acknowledged: nothing counted as failed on D's side.
    let stats = d.mesh.stats().await.unwrap();
    assert_eq!(
        (stats.failed_direct_outbound, stats.dropped_direct_outbound),
        (0, 0)
    );
    let leaked: Vec<Seen> = drain(&mut a.seen)
        .into_iter()
        .filter(|s| matches!(s, Seen::Direct { .. }))
        .collect();
    assert!(
        leaked.is_empty(),
        "non-member's direct delivered: {leaked:?}"
    );

    // The mesh stopped: an error, not a silent drop.
    d.mesh.shutdown().await;
    assert!(matches!(
        d.mesh.send_direct(a.id, b"late".to_vec()),
        Err(MeshError::Stopped)
    ));
    for n in [&a, &b] {
        n.mesh.shutdown().await;
    }
}

/// At most [`MAX_DIRECT_IN_FLIGHT`] direct messages to one peer await their acknowledgement;
/// the rest are dropped, and those in flight to a peer that never answers fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_in_flight_are_bounded() {
    let a = node(vec![quic()], no_requests).await;
    // A "peer" whose address is a UDP socket that reads nothing: the QUIC handshake hangs
    // until its timeout, so every message stays in flight until then.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let ghost = Keypair::generate_ed25519().public().to_peer_id();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap();
    a.mesh
        .set_members(HashMap::from([(ghost, vec![addr])]))
        .await
        .unwrap();

    let sent = 200;
    for i in 0..sent {
        a.mesh.send_direct(ghost, vec![i as u8]).unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    let mut every = tokio::time::interval(POLL);
    loop {
        every.tick().await;
        let stats = a.mesh.stats().await.unwrap();
        if stats.failed_direct_outbound == MAX_DIRECT_IN_FLIGHT as u64 {
            assert_eq!(
                stats.dropped_direct_outbound,
                (sent - MAX_DIRECT_IN_FLIGHT) as u64
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in-flight direct messages did not fail: {stats:?}"
        );
        assert!(
            stats.failed_direct_outbound < MAX_DIRECT_IN_FLIGHT as u64,
            "{stats:?}"
        );
    }
    a.mesh.shutdown().await;
    drop(hole);
}

/// Issue 13, item 5: a member over its request or direct message rate limit is refused
/// (requests) or dropped (direct messages), counted, and served again once it slows down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_over_their_rate_limits_are_refused_and_counted() {
    let mut a = node_with(vec![quic()], answer_sync, |c| {
        c.member = MemberLimits {
            requests: Rate::new(2, 3),
            direct: Rate::new(2, 5),
            ..MemberLimits::default()
        };
    })
    .await;
    let b = node(vec![quic()], no_requests).await;
    let ab = members(&[&a, &b]);
    a.mesh.set_members(ab.clone()).await.unwrap();
    b.mesh.set_members(ab).await.unwrap();

    // A burst of 3 requests is served; more at once are refused by A's mesh.
    let mut answers = Vec::new();
    for i in 0..6u8 {
        answers.push(
            b.mesh
                .request(a.id, RequestKind::Sync, vec![i])
                .await
                .unwrap(),
        );
    }
    let served = answers
        .iter()
        .filter(|r| matches!(r, Response::Ok(_)))
        .count();
    let limited = answers
        .iter()
        .filter(|r| **r == Response::Refused("rate limited".into()))
        .count();
    assert_eq!(served + limited, 6, "{answers:?}");
    // Three from the burst, and at most one refilled while the six took their round trips.
    assert!((3..=4).contains(&served), "{answers:?}");
    assert_eq!(
        a.mesh.stats().await.unwrap().dropped_rate_limited,
        limited as u64
    );

    // Direct messages: 5 at once get through, the rest of 40 are dropped (give or take what
    // the bucket refills, 2/s, while they arrive).
    for i in 0..40u8 {
        b.mesh.send_direct(a.id, vec![i]).unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    let mut every = tokio::time::interval(POLL);
    let mut delivered = 0;
    let dropped = loop {
        every.tick().await;
        delivered += drain(&mut a.seen)
            .into_iter()
            .filter(|s| matches!(s, Seen::Direct { from, .. } if *from == b.id))
            .count() as u64;
        let dropped = a.mesh.stats().await.unwrap().dropped_rate_limited - limited as u64;
        if delivered + dropped == 40 {
            break dropped;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} delivered and {dropped} dropped of 40 direct messages"
        );
    };
    assert!(
        (5..=7).contains(&delivered),
        "{delivered} delivered, {dropped} dropped"
    );

    // Once the bucket refilled (2/s), B is served again.
    let deadline = Instant::now() + DEADLINE;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let resp = b
            .mesh
            .request(a.id, RequestKind::Sync, b"again".to_vec())
            .await
            .unwrap();
        if matches!(resp, Response::Ok(_)) {
            break;
        }
        assert!(Instant::now() < deadline, "B never served again");
    }
    for n in [&a, &b] {
        n.mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_member_limits_are_a_config_error() {
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), "test");
    config.listen = vec![quic()];
    config.member.gossip.per_second = 0;
    assert!(matches!(spawn(config).await, Err(MeshError::Config(_))));
}

/// A node of the previous release (identify `/warren/id/1`, all-to-all heartbeats) dials a
/// current one: the current node refuses it (counted, disconnected, a warning naming both
/// versions in its log), and the old node sees its connection closed — all a real old
/// release sees, since it has no check of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_another_protocol_version_is_refused() {
    let mut current = node(vec![quic()], no_requests).await;
    let mut old = node_with(vec![quic()], no_requests, |c| {
        c.identify_version = "/warren/id/1".into();
    })
    .await;
    // Both name each other as members: the version alone keeps them apart.
    let both = members(&[&current, &old]);
    current.mesh.set_members(both.clone()).await.unwrap();
    old.mesh.set_members(both).await.unwrap();
    old.mesh.dial(current.addrs[0].clone()).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    let (closed, _) = wait_for(&mut current.seen, deadline, |s| *s == Seen::Closed(old.id)).await;
    assert!(closed.is_some(), "the current node kept the old one");
    let stats = current.mesh.stats().await.unwrap();
    assert_eq!(stats.incompatible_peers, 1, "the refusal was not counted");
    let (closed, _) = wait_for(&mut old.seen, deadline, |s| *s == Seen::Closed(current.id)).await;
    assert!(
        closed.is_some(),
        "the old node never saw its connection close"
    );
    // The old node stops dialing (an operator takes it out to upgrade it); the current one
    // does not redial a refused peer, so once a dial in flight is refused too, they stay
    // apart. (Asserted at once, this raced the dials both made as members.)
    old.mesh.set_members(HashMap::new()).await.unwrap();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let apart = loop {
        every.tick().await;
        let stats = current.mesh.stats().await.unwrap();
        if !stats.connected_peers.contains(&old.id) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    assert!(apart, "the current node kept a connection to the old one");
    // And stays so across a redial period: the refused peer is not dialed again.
    for _ in 0..12 {
        every.tick().await;
        let stats = current.mesh.stats().await.unwrap();
        assert!(
            !stats.connected_peers.contains(&old.id),
            "the current node dialed the refused peer again"
        );
    }
    current.mesh.shutdown().await;
    old.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_list_the_peers_known_subscribed_to_every_topic() {
    let x = node(vec![quic()], no_requests).await;
    let mut y = node(vec![quic()], no_requests).await;
    for n in [&x, &y] {
        let stats = n.mesh.stats().await.unwrap();
        assert!(stats.subscribed_peers.is_empty(), "{stats:?}");
    }
    let both = members(&[&x, &y]);
    x.mesh.set_members(both.clone()).await.unwrap();
    y.mesh.set_members(both).await.unwrap();

    // Each lists the other once both of its announcements (lease, changes) arrived; a lost
    // one is repaired by the reconnect rule within its 5 s grace.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (sx, sy) = (x.mesh.stats().await.unwrap(), y.mesh.stats().await.unwrap());
        if sx.subscribed_peers == vec![y.id] && sy.subscribed_peers == vec![x.id] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscriptions never known: x {sx:?}, y {sy:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Listed means reached on every topic: one publication each, no retry.
    for topic in Topic::ALL {
        x.mesh.publish(topic, b"listed".to_vec()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (got, _) = wait_for(&mut y.seen, deadline, |s| {
            gossip_from(s, x.id, topic, b"listed")
        })
        .await;
        assert!(got.is_some(), "y never got x's {topic:?} gossip");
    }
    for n in [&x, &y] {
        n.mesh.shutdown().await;
    }
}
