//! Writes seed inputs for every target into `corpus/<target>/` (run from `fuzz/`): real
//! messages of each kind, so the fuzzer starts from what peers actually send.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};
use warren_crdt::{
    Epoch, Lease, Member, MemberState, NodeId, ServiceName, ServiceSpec, SyncState, TokenRecord,
};
use warren_fuzz::{
    cluster_bytes, founder_machine, join_token, state_for, API_SECRET, API_TOKEN_ID, JOINER, PEER,
    SEPARATOR,
};
use warren_node::logs::{Cursor, LogsRequest, LogsResponse, SlotCursor, SlotLine};
use warren_node::machine::Output;
use warren_node::protocol::{
    encode_sync, Direct, EngineStatus, JoinRequest, Report, TaskState, TaskStatus,
};
use warren_runtime::{LogStream, PublishedPort};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn flagged(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(bytes);
    out
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEPARATOR)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = b"WRN\x01".to_vec();
    out.extend_from_slice(&Sha256::digest(payload)[..8]);
    out.extend_from_slice(payload);
    out
}

/// CBOR text string (short).
fn cbor_text(s: &str) -> Vec<u8> {
    assert!(s.len() < 24);
    let mut out = vec![0x60 | s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// CBOR byte string (under 64 KiB).
fn cbor_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = if b.len() < 24 {
        vec![0x40 | b.len() as u8]
    } else if b.len() < 256 {
        vec![0x58, b.len() as u8]
    } else {
        let mut v = vec![0x59];
        v.extend_from_slice(&(b.len() as u16).to_be_bytes());
        v
    };
    out.extend_from_slice(b);
    out
}

fn main() {
    let peer = NodeId(PEER.into());
    let web = ServiceName::new("web").expect("name");

    // Changes a peer makes on its replica of the fixture document.
    let mut other = state_for(PEER, 2);
    let mut changes = Vec::new();
    changes.push(other.scale_service(&web, 3).expect("scale"));
    let api = ServiceName::new("api").expect("name");
    let spec = ServiceSpec {
        image: "warren/api:1".into(),
        replicas: 1,
        env: BTreeMap::from([("K".into(), "v".into())]),
        ..Default::default()
    };
    changes.push(other.create_service(&api, &spec).expect("create"));
    changes.push(
        other
            .claim_lease(&Lease {
                epoch: Epoch(2),
                holder: peer.clone(),
            })
            .expect("lease"),
    );
    changes.push(
        other
            .add_member(&Member {
                id: NodeId(JOINER.into()),
                name: "charlie".into(),
                addrs: Vec::new(),
                labels: BTreeMap::new(),
                capabilities: Default::default(),
                platform: Default::default(),
                admitted_by: peer.clone(),
                admitted_at: 5,
                state: MemberState::Active,
                availability: Default::default(),
            })
            .expect("member"),
    );
    changes.push(other.delete_service(&web).expect("delete"));
    for (i, change) in changes.iter().enumerate() {
        write("gossip_change", &format!("change-{i}"), &flagged(change));
    }

    // Direct messages: reports, SWIM, a request for reports.
    let status = TaskStatus {
        service: "web".into(),
        slot: 1,
        state: TaskState::Running,
        status: "Up 3 seconds".into(),
        container: "0123456789ab".into(),
        ports: vec![PublishedPort {
            container_port: 80,
            host_ip: "127.0.0.1".into(),
            host_port: 32768,
        }],
        generation: 1,
        age_ms: Some(3_000),
        assignment_epoch: 1,
        assignment_holder: warren_fuzz::FOUNDER.into(),
        ..Default::default()
    };
    let reports = [
        Report {
            seq: 1,
            name: "bravo".into(),
            api: "127.0.0.1:7947".into(),
            ..Default::default()
        },
        Report {
            seq: 2,
            name: "bravo".into(),
            api: "127.0.0.1:7947".into(),
            tasks: vec![
                status.clone(),
                TaskStatus {
                    slot: 0,
                    state: TaskState::Failed,
                    unassigned: true,
                    ..status
                },
            ],
            capacity: Some(warren_node::core::Capacity {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
            }),
            usage: Some(warren_node::system::Usage {
                load_1m_milli: 1_500,
                memory_used_bytes: 1 << 29,
            }),
            gpus: vec![warren_node::system::Gpu {
                index: Some(0),
                uuid: "GPU-0".into(),
                name: "T4".into(),
                memory_bytes: 1 << 34,
            }],
            images: vec![warren_node::core::image_platform::ImageReport {
                image: "warren-test:latest".into(),
                source: warren_node::core::image_platform::ImageSource::Local,
                platforms: vec![warren_node::core::image_platform::ImagePlatform {
                    os: "linux".into(),
                    arch: "amd64".into(),
                    variant: String::new(),
                }],
            }],
            engine: Some(EngineStatus {
                reachable: true,
                since_ms: 5,
                endpoint: "unix:///var/run/docker.sock".into(),
                version: "20.10".into(),
                error: String::new(),
            }),
            overlay: Some(Box::new(warren_node::protocol::OverlayStatus::On {
                interface: "warren0".into(),
                address: "fd12:3456:789a:1:2:3::1".into(),
                peers: 2,
                port: 51820,
            })),
        },
    ];
    let mut directs: Vec<Direct> = reports.into_iter().map(|r| Direct::Report(Box::new(r))).collect();
    directs.push(Direct::Want { ms: 60_000 });
    directs.push(Direct::Swim(warren_node::core::SwimMessage {
        kind: warren_node::core::SwimKind::Ping,
        seq: 7,
        inc: 2,
        target: None,
        updates: vec![warren_node::core::SwimUpdate {
            node: NodeId(warren_fuzz::FOUNDER.into()),
            inc: 0,
            state: warren_node::core::SwimUpdateState::Suspect,
            by: Some(NodeId(warren_fuzz::PEER.into())),
        }],
    }));
    for (i, direct) in directs.iter().enumerate() {
        write(
            "direct",
            &format!("direct-{i}"),
            &serde_json::to_vec(direct).expect("json"),
        );
    }

    // Sync: a dialogue between the peer's replica (with its changes) and the founder's.
    let mut founder = state_for(warren_fuzz::FOUNDER, 3);
    let (mut sp, mut sf) = (SyncState::new(), SyncState::new());
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for round in 0..4 {
        let m = other.generate_sync_message(&mut sp);
        if let Some(m) = &m {
            founder.receive_sync_message(&mut sf, m).expect("sync");
        }
        requests.push(encode_sync(round == 0, m));
        let r = founder.generate_sync_message(&mut sf);
        if let Some(r) = &r {
            other.receive_sync_message(&mut sp, r).expect("sync");
        }
        responses.push(encode_sync(false, r));
    }
    let parts: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
    write("sync_request", "dialogue", &joined(&parts));
    write("sync_request", "first", &requests[0]);
    // Responses as the peer would give them to the founder machine's requests.
    let (mut machine, first) = warren_fuzz::founder_machine_with_outputs();
    let mut pending: Vec<Output> = first;
    let mut answers = Vec::new();
    let mut sp = SyncState::new();
    let mut other_for_answers = state_for(PEER, 2);
    for change in &changes {
        let _ = other_for_answers.apply_change(change);
    }
    for _ in 0..4 {
        pending.extend(std::iter::from_fn(|| machine.poll_output()));
        let Some(Output::SyncRequest { body, .. }) = pending
            .drain(..)
            .find(|o| matches!(o, Output::SyncRequest { .. }))
        else {
            break;
        };
        let (reset, message) = warren_node::protocol::decode_sync(&body).expect("body");
        if reset {
            sp = SyncState::new();
        }
        if let Some(m) = message {
            other_for_answers
                .receive_sync_message(&mut sp, m)
                .expect("sync");
        }
        let reply = encode_sync(false, other_for_answers.generate_sync_message(&mut sp));
        machine.handle_sync_response(&peer, Ok(reply.clone()));
        answers.push(reply);
    }
    let parts: Vec<&[u8]> = answers.iter().map(Vec::as_slice).collect();
    write("sync_response", "dialogue", &joined(&parts));

    // Join request, its answer, documents.
    let request = JoinRequest {
        token: join_token().encode(),
        name: "charlie".into(),
        addrs: vec![format!("/ip4/127.0.0.1/udp/7946/quic-v1/p2p/{JOINER}")],
        labels: BTreeMap::from([("zone".into(), "b".into())]),
        x25519_public_key: "ab".repeat(32),
        sync_after: false,
    };
    let request = serde_json::to_vec(&request).expect("json");
    write("join_request", "valid", &request);
    let mut machine = founder_machine();
    let answer = machine
        .handle_join(&NodeId(JOINER.into()), &request, warren_fuzz::NOW_SECS)
        .expect("admitted");
    write("join_response", "answer", &flagged(&answer));
    write("join_response", "fixture", &flagged(cluster_bytes()));
    write("join_response", "peer-replica", &flagged(&other.save()));
    write("join_token", "valid", join_token().encode().as_bytes());
    write(
        "api_token",
        "valid",
        format!("Bearer WRNA1-{API_TOKEN_ID}.{API_SECRET}").as_bytes(),
    );
    write("api_token", "join-id", b"Bearer WRNA1-00112233aabbccdd.00");
    let _ = TokenRecord::ROLE_MEMBER;

    // Mesh: the CBOR envelopes serde and cbor4ii make of a request and of responses.
    for (i, kind) in ["Sync", "Join", "Logs"].iter().enumerate() {
        let mut req = vec![0xa2];
        req.extend(cbor_text("kind"));
        req.extend(cbor_text(kind));
        req.extend(cbor_text("body"));
        req.extend(cbor_bytes(&requests[0]));
        warren_mesh::fuzzing::decode_request(&req).expect("seed request decodes");
        write("mesh_request", &format!("req-{i}"), &req);
    }
    let mut ok = vec![0xa1];
    ok.extend(cbor_text("Ok"));
    ok.extend(cbor_bytes(&answers[0]));
    warren_mesh::fuzzing::decode_response(&ok).expect("seed response decodes");
    write("mesh_response", "ok", &ok);
    let mut refused = vec![0xa1];
    refused.extend(cbor_text("Refused"));
    refused.extend(cbor_text("not a member"));
    warren_mesh::fuzzing::decode_response(&refused).expect("seed response decodes");
    write("mesh_response", "refused", &refused);

    // Logs.
    let logs_request = LogsRequest {
        service: "web".into(),
        since: Some(1_000_000_000),
        tail: Some(10),
        cursors: vec![SlotCursor {
            slot: 1,
            cursor: Cursor {
                ts: 1_000_000_000,
                skip: 1,
            },
        }],
        max_lines: Some(100),
        max_bytes: Some(100_000),
    };
    write(
        "logs_request",
        "cursor",
        &serde_json::to_vec(&logs_request).expect("json"),
    );
    write("logs_request", "tail", br#"{"service":"web","tail":5}"#);
    let response = LogsResponse {
        node_name: "bravo".into(),
        lines: vec![
            SlotLine {
                slot: 0,
                stream: LogStream::Stdout,
                ts: 5,
                text: "hello".into(),
            },
            SlotLine {
                slot: 1,
                stream: LogStream::Stderr,
                ts: 5,
                text: "world".into(),
            },
        ],
        cursors: vec![SlotCursor {
            slot: 0,
            cursor: Cursor { ts: 5, skip: 1 },
        }],
        more: true,
    };
    let response = serde_json::to_vec(&response).expect("json");
    write(
        "logs_response",
        "two-nodes",
        &joined(&[b"0@node-a:4:1,1@node-b:5:0", &response, &response]),
    );

    // Store values: a framed snapshot of the fixture and framed log chunks after it; the same
    // as bare (pre-frame) Automerge values.
    let mut store_state = state_for(warren_fuzz::FOUNDER, 4);
    let snapshot = frame(cluster_bytes());
    let mut chunks = Vec::new();
    for change in &changes {
        let _ = store_state.apply_change(change);
        chunks.push(frame(change));
    }
    let mut parts: Vec<&[u8]> = vec![&snapshot];
    parts.extend(chunks.iter().map(Vec::as_slice));
    let framed = flagged(&joined(&parts));
    let mut parts: Vec<&[u8]> = vec![cluster_bytes()];
    parts.extend(changes.iter().map(Vec::as_slice));
    let bare = flagged(&joined(&parts));
    let only_log = flagged(&joined(&[b"", &chunks[0]]));
    for target in ["store_chunks", "store_open"] {
        write(target, "framed", &framed);
        write(target, "bare", &bare);
        write(target, "log-without-snapshot", &only_log);
    }
    println!("seeds written under corpus/");
}
