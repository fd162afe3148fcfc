//! Fixtures shared by the fuzz targets in `fuzz_targets/` and the seed generator
//! (`src/bin/seeds.rs`): a small real cluster document, machines over it, the tokens it knows,
//! and a helper that makes Automerge's chunk checksums right so mutated bytes get past them.
//!
//! Everything here is deterministic across processes (fixed actor suffix, fixed clock, fixed
//! token secrets): a crash file found in one run replays in another.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use warren_crdt::{
    Assignment, ClusterInfo, DesiredState, Epoch, Lease, Member, MemberState, NodeId, PortSpec,
    ServiceName, ServiceSpec, SlotId, TokenRecord,
};
use warren_node::core::Millis;
use warren_node::machine::{MachineConfig, NodeMachine, Output};
use warren_node::token::JoinToken;

/// The founder's node id: the machine every machine target drives is this node.
pub const FOUNDER: &str = "12D3KooWfounderAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// The second member's node id: the peer whose gossip and sync messages the targets feed.
pub const PEER: &str = "12D3KooWsecondBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
/// A node that is not a member: the sender of join requests.
pub const JOINER: &str = "12D3KooWjoinerCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";
/// The cluster's id.
pub const CLUSTER_ID: &str = "c1";
/// Wall time of a join (Unix seconds): the join token is valid then.
pub const NOW_SECS: i64 = 1_000;
/// The join token's id and secret (only its digest is in the document).
pub const JOIN_TOKEN_ID: &str = "00112233aabbccdd";
const JOIN_SECRET: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
/// The operator token's id and secret (only its digest is in the document).
pub const API_TOKEN_ID: &str = "8899aabbccddeeff";
/// See [`API_TOKEN_ID`].
pub const API_SECRET: &str = "a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a";

fn fixed_clock() -> i64 {
    1_700_000_000_000
}

fn member(id: &str, name: &str) -> Member {
    Member {
        id: NodeId(id.into()),
        name: name.into(),
        addrs: vec![format!("/ip4/127.0.0.1/udp/7946/quic-v1/p2p/{id}")],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        capabilities: Default::default(),
        platform: Default::default(),
        admitted_by: NodeId(FOUNDER.into()),
        admitted_at: 0,
        state: MemberState::Active,
        availability: Default::default(),
    }
}

/// Lowercase hex SHA-256 of a token secret, as the document stores it.
fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The join token the document holds a record of (single use, valid at [`NOW_SECS`], minted
/// by [`FOUNDER`], so the founder's machine admits with it).
pub fn join_token() -> JoinToken {
    JoinToken {
        cluster_id: CLUSTER_ID.into(),
        token_id: JOIN_TOKEN_ID.into(),
        secret: JOIN_SECRET.into(),
        expires_at: 1_000_000_000,
        bootstrap: vec![format!("/ip4/127.0.0.1/udp/7946/quic-v1/p2p/{FOUNDER}")],
    }
}

/// The document's token records: the join token's and an operator token's.
pub fn token_records() -> Vec<TokenRecord> {
    vec![
        TokenRecord {
            id: JOIN_TOKEN_ID.into(),
            digest: digest(JOIN_SECRET),
            expires_at: 1_000_000_000,
            uses_left: 1,
            role: TokenRecord::ROLE_MEMBER.into(),
            created_at: 100,
            labels: BTreeMap::from([("pool".into(), "fuzz".into())]),
            revoked: false,
            minted_by: FOUNDER.into(),
        },
        TokenRecord {
            id: API_TOKEN_ID.into(),
            digest: digest(API_SECRET),
            expires_at: 1_000_000_000,
            uses_left: 0,
            role: TokenRecord::ROLE_OPERATOR.into(),
            created_at: 100,
            labels: BTreeMap::new(),
            revoked: false,
            minted_by: String::new(),
        },
    ]
}

/// The fixture document, saved: cluster `c1` with two members, service `web` (two replicas,
/// one port), a lease held by the founder, both slots assigned, and the two token records.
/// Built once per process, the same bytes in every process.
///
/// # Panics
///
/// If the fixture cannot be written (a bug in the fixture, not in what is fuzzed).
pub fn cluster_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let info = ClusterInfo {
            id: CLUSTER_ID.into(),
            name: "lab".into(),
            created_at: 0,
        };
        let mut state =
            DesiredState::new_cluster_seeded(&info, &member(FOUNDER, "alpha"), [1; 8], fixed_clock)
                .expect("cluster");
        state.add_member(&member(PEER, "bravo")).expect("member");
        let web = ServiceName::new("web").expect("name");
        let spec = ServiceSpec {
            image: "warren/busybox:latest".into(),
            replicas: 2,
            command: vec!["sleep".into(), "3600".into()],
            ports: vec![PortSpec {
                container_port: 80,
                host_port: None,
                mode: warren_crdt::PublishMode::Host,
            }],
            ..Default::default()
        };
        state.create_service(&web, &spec).expect("service");
        state
            .claim_lease(&Lease {
                epoch: Epoch(1),
                holder: NodeId(FOUNDER.into()),
            })
            .expect("lease");
        let assign = |slot: u32, node: &str| {
            (
                SlotId {
                    service: web.clone(),
                    slot,
                },
                Assignment {
                    node: NodeId(node.into()),
                    epoch: Epoch(1),
                    holder: NodeId(FOUNDER.into()),
                    spec_generation: 1,
                    displaced: Vec::new(),
                    gpus: Vec::new(),
                },
            )
        };
        state
            .write_assignments(&[assign(0, FOUNDER), assign(1, PEER)], &[])
            .expect("assignments");
        for record in token_records() {
            state.add_token(&record).expect("token");
        }
        state.save()
    })
}

/// A replica of the fixture document for `node`, with a fixed actor suffix and clock.
///
/// # Panics
///
/// If the fixture does not load (a bug in the fixture).
pub fn state_for(node: &str, suffix: u8) -> DesiredState {
    let mut state = DesiredState::load(NodeId(node.into()), cluster_bytes()).expect("fixture");
    state.set_actor_suffix([suffix; 8]);
    state.set_clock(fixed_clock);
    state
}

/// The founder's machine over the fixture document at time 0, built as
/// `node/tests/token_split.rs` builds its machines, and ticked once so it knows its members.
/// That tick starts an anti-entropy sync dialogue with [`PEER`] (the only other member).
pub fn founder_machine() -> NodeMachine {
    founder_machine_with_outputs().0
}

/// [`founder_machine`] and the outputs of its first tick (among them the sync request to
/// [`PEER`]).
pub fn founder_machine_with_outputs() -> (NodeMachine, Vec<Output>) {
    let mut machine = NodeMachine::new(
        NodeId(FOUNDER.into()),
        "alpha",
        "test://api",
        state_for(FOUNDER, 1),
        MachineConfig::default(),
        Millis(0),
        7,
    );
    machine.handle_tick(Millis(0));
    let outputs = std::iter::from_fn(|| machine.poll_output()).collect();
    (machine, outputs)
}

/// Call at the start of every input: replaces libfuzzer-sys's panic hook, which aborts on
/// *any* panic, also one that Warren catches on purpose (`warren-crdt` turns Automerge's
/// panics on malformed input into errors), by one that prints the message only (a backtrace
/// per caught panic would cost more than the input). A panic that escapes the target still
/// aborts: libfuzzer-sys catches it around each input. Replay a crash file with
/// `RUST_BACKTRACE=1` for Rust's default hook and a backtrace.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // With RUST_BACKTRACE set (replaying a crash), Rust's default hook and its backtraces.
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
        } else {
            let _libfuzzer_hook = std::panic::take_hook();
        }
    });
}

/// Automerge's chunk magic bytes.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Rewrites the header checksum of every Automerge chunk in `bytes` (concatenated chunks: a
/// saved document, change bytes, a log value) so that it matches the chunk's content, up to
/// the first thing that is not a whole chunk. A peer computes checksums as easily; fixing them
/// lets the fuzzer reach what lies behind them instead of stopping at a SHA-256 it cannot
/// guess.
pub fn fix_automerge_checksums(bytes: &mut [u8]) {
    let mut at = 0;
    while bytes.len() >= at + 9 && bytes[at..at + 4] == AUTOMERGE_MAGIC {
        let Some((len, len_bytes)) = read_uleb128(&bytes[at + 9..]) else {
            return;
        };
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(at + 9 + len_bytes))
            .filter(|end| *end <= bytes.len())
        else {
            return;
        };
        let sum = Sha256::digest(&bytes[at + 8..end]);
        bytes[at + 4..at + 8].copy_from_slice(&sum[..4]);
        at = end;
    }
}

/// Makes the frame checksum of a store value (`WRN\x01`, 8 bytes of SHA-256, payload) right,
/// for the same reason as [`fix_automerge_checksums`]; also fixes the payload's chunks.
pub fn fix_store_frame(value: &mut [u8]) {
    if value.len() >= 12 && value.starts_with(b"WRN\x01") {
        fix_automerge_checksums(&mut value[12..]);
        let sum = Sha256::digest(&value[12..]);
        value[4..12].copy_from_slice(&sum[..8]);
    } else {
        fix_automerge_checksums(value);
    }
}

fn read_uleb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Splits `data` into at most `max` parts at the 4-byte separator `SPLT`, the way the targets
/// that take several values (store keys, log answers) read their input.
pub fn split_parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest.windows(4).position(|w| w == b"SPLT") {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 4..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// The separator of [`split_parts`].
pub const SEPARATOR: &[u8] = b"SPLT";
