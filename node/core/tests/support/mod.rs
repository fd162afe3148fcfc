//! An in-memory cluster of [`NodeMachine`]s for unit tests, after quinn-proto's test `Pair`:
//! the machines, a simulated clock and a [`Cluster::drive`] that carries every [`Output`]
//! out — gossip to the other members, direct messages and sync requests to their target and
//! the answers back —
//! until none is left. No network, no disk, no sleeps: a test is a sequence of inputs and
//! assertions, and it replays exactly (seeded generators, a fixed document clock).
//!
//! It models the daemon's driver only as far as a test needs: a member hears gossip only from
//! the members its machine last named ([`Output::SetMembers`], as the mesh filters; a direct
//! message too), persists
//! are counted, and links can be cut. `warren-simulations` is the full simulator (latency,
//! loss, crashes, containers); this is the small deterministic helper.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::SeedableRng;
use warren_core::join::CatchUp;
use warren_core::protocol::{JoinAnswer, JoinRequest, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use warren_core::secrets::SecretKeys;
use warren_core::token::TokenGrant;
use warren_core::{JoinError, MachineConfig, Millis, NodeMachine, Output, Write, WriteAck};
use warren_crdt::test_utils::cluster_info;
use warren_crdt::{DesiredState, Member, NodeId};

/// Most rounds of [`Cluster::drive`] before it gives up: a machine that never falls quiet is
/// a bug the test should see, not a hang.
const MAX_ROUNDS: usize = 1_000;

/// The wall clock (Unix seconds) at simulated time zero: tokens are minted and checked
/// against it.
pub(crate) const WALL_EPOCH_SECS: i64 = 1_700_000_000;

/// The document clock: every change is stamped 0, so histories replay exactly.
fn zero_clock() -> i64 {
    0
}

/// What a join took ([`Cluster::join_measured`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JoinFigures {
    /// Bytes of the admitter's answer.
    pub(crate) answer: usize,
    /// Sync round trips to the whole state.
    pub(crate) rounds: u32,
    /// The largest sync request and response body.
    pub(crate) largest_request: usize,
    pub(crate) largest_response: usize,
    /// Bytes of all sync responses.
    pub(crate) bytes: usize,
}

/// One member of the cluster and what the harness saw it do.
pub(crate) struct Node {
    /// The machine.
    pub(crate) machine: NodeMachine,
    /// Its X25519 keys, when it was given some.
    pub(crate) keys: Option<SecretKeys>,
    /// The members it last named: it hears gossip from these only.
    pub(crate) members: BTreeSet<NodeId>,
    /// Persists it asked for, and how many of them flushed.
    pub(crate) persists: usize,
    /// Flushing persists it asked for.
    pub(crate) flushes: usize,
}

impl Node {
    /// Its id.
    pub(crate) fn id(&self) -> NodeId {
        self.machine.id().clone()
    }
}

/// N machines, a clock and the links between them.
pub(crate) struct Cluster {
    /// The members, in the order they were made.
    pub(crate) nodes: Vec<Node>,
    /// Simulated time.
    pub(crate) now: Millis,
    /// Whether gossip ([`Output::Publish`]) is delivered; when not, it is counted and dropped
    /// and only sync dialogues move changes.
    pub(crate) gossip: bool,
    /// Gossip messages dropped (gossip off, a cut link, or a receiver not hearing the sender).
    pub(crate) dropped: usize,
    /// Sync requests carried out.
    pub(crate) sync_requests: usize,
    /// Direct messages sent (SWIM, reports), delivered or not.
    pub(crate) direct: usize,
    /// Links that carry nothing, as (lower index, higher index).
    cut: BTreeSet<(usize, usize)>,
    config: MachineConfig,
    seed: u64,
}

impl Cluster {
    /// A one-member cluster: `founder`, as `warren-node up --init` founds it, with X25519
    /// keys when `keys`.
    pub(crate) fn founded(founder: &str, keys: bool) -> Self {
        Self::founded_with(founder, keys, MachineConfig::default())
    }

    /// As [`Cluster::founded`], the founder's document grown by at least `bytes` of changes
    /// first ([`warren_crdt::test_utils::grow_history`]).
    pub(crate) fn founded_with_history(founder: &str, bytes: usize) -> Self {
        Self::founded_grown(founder, false, MachineConfig::default(), bytes)
    }

    /// As [`Cluster::founded`], every machine with `config`.
    pub(crate) fn founded_with(founder: &str, keys: bool, config: MachineConfig) -> Self {
        Self::founded_grown(founder, keys, config, 0)
    }

    fn founded_grown(founder: &str, keys: bool, config: MachineConfig, bytes: usize) -> Self {
        let mut cluster = Self {
            nodes: Vec::new(),
            now: Millis(0),
            gossip: true,
            dropped: 0,
            sync_requests: 0,
            direct: 0,
            cut: BTreeSet::new(),
            config,
            seed: 1,
        };
        let member = Member {
            name: founder.into(),
            ..warren_crdt::test_utils::member(&node_id(founder).0)
        };
        let state = DesiredState::new_cluster_seeded(&cluster_info(), &member, [0; 8], zero_clock)
            .expect("a new cluster");
        let mut state = state;
        if bytes > 0 {
            warren_crdt::test_utils::grow_history(&mut state, bytes);
        }
        cluster.add(founder, state, keys);
        cluster
    }

    /// The wall clock now, in Unix seconds.
    pub(crate) fn now_secs(&self) -> i64 {
        WALL_EPOCH_SECS + (self.now.0 / 1000) as i64
    }

    /// A join token minted by node `i` (single use, valid an hour), the writes driven out.
    pub(crate) fn mint_token(&mut self, i: usize) -> String {
        let now_secs = self.now_secs();
        let ack = self
            .machine(i)
            .write(Write::CreateJoinToken {
                grant: TokenGrant::single_use(3_600),
                now_secs,
            })
            .expect("mint a join token");
        self.drive();
        match ack {
            WriteAck::JoinToken(token) => token,
            other => panic!("a join token write acknowledged with {other:?}"),
        }
    }

    /// Node `i`'s machine.
    pub(crate) fn machine(&mut self, i: usize) -> &mut NodeMachine {
        &mut self.nodes[i].machine
    }

    /// Node `i`'s id.
    pub(crate) fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id()
    }

    /// A machine for `name` over `state`, listening on an in-memory address, with X25519
    /// keys when `keys`; returns its index.
    fn add(&mut self, name: &str, mut state: DesiredState, keys: bool) -> usize {
        let index = self.nodes.len();
        state.set_clock(zero_clock);
        state.set_actor_suffix((index as u64 + 1).to_le_bytes());
        let id = node_id(name);
        self.seed += 1;
        let mut machine = NodeMachine::new(
            id,
            name,
            format!("test://{name}"),
            state,
            self.config,
            self.now,
            self.seed,
        );
        machine.set_secure_rng(Box::new(StdRng::seed_from_u64(self.seed ^ 0x5EC)));
        machine.handle_listen_addr(format!("/memory/{index}"));
        self.nodes.push(Node {
            machine,
            keys: None,
            members: BTreeSet::new(),
            persists: 0,
            flushes: 0,
        });
        if keys {
            self.give_keys(index);
        }
        index
    }

    /// Gives node `i` its X25519 keys (the same for an index on every run); it publishes the
    /// public one in its member record at its next tick.
    pub(crate) fn give_keys(&mut self, i: usize) {
        self.nodes[i].machine.set_secret_keys(secret_keys(i));
        self.nodes[i].keys = Some(secret_keys(i));
    }

    /// `name` joins through member `admitter` with `token`, as the daemon's `join` does: it
    /// sends a [`JoinRequest`] (with an X25519 key when `keys`), catches up from the
    /// admitter's [`JoinAnswer`] by sync round trips ([`CatchUp`]), and starts its machine
    /// over the whole state. Every message is checked against the mesh's limits. Returns the
    /// new member's index, or the admitter's refusal.
    pub(crate) fn join(
        &mut self,
        admitter: usize,
        name: &str,
        token: &str,
        keys: bool,
    ) -> Result<usize, JoinError> {
        self.join_measured(admitter, name, token, keys)
            .map(|(index, _)| index)
    }

    /// [`Cluster::join`], and what the join took.
    pub(crate) fn join_measured(
        &mut self,
        admitter: usize,
        name: &str,
        token: &str,
        keys: bool,
    ) -> Result<(usize, JoinFigures), JoinError> {
        let id = node_id(name);
        let public = if keys {
            secret_keys(self.nodes.len()).public_hex()
        } else {
            String::new()
        };
        let request = serde_json::to_vec(&JoinRequest {
            token: token.into(),
            name: name.into(),
            addrs: vec![format!("/memory/{}/p2p/{id}", self.nodes.len())],
            labels: BTreeMap::new(),
            x25519_public_key: public,
            sync_after: true,
        })
        .expect("encode a join request");
        let now_secs = self.now_secs();
        let answer = self.nodes[admitter]
            .machine
            .handle_join(&id, &request, now_secs);
        // The daemon carries out the admission's outputs (a flushed persist) before answering.
        self.drive();
        let answer = answer?;
        let mut figures = JoinFigures {
            answer: answer.len(),
            ..JoinFigures::default()
        };
        assert!(
            answer.len() <= MAX_RESPONSE_BYTES,
            "a join answer of {} bytes",
            answer.len()
        );
        let answer = JoinAnswer::decode(&answer).expect("the answer is a JoinAnswer");
        assert_eq!(
            answer.members.first().map(|(m, _)| m.clone()),
            Some(self.id(admitter).to_string()),
            "the admitter names itself first"
        );
        let mut catch_up = CatchUp::new(id.clone(), &answer);
        while let Some(body) = catch_up.next_request().expect("no stall") {
            assert!(
                body.len() <= MAX_REQUEST_BYTES,
                "a sync request of {} bytes",
                body.len()
            );
            figures.largest_request = figures.largest_request.max(body.len());
            let response = self.nodes[admitter]
                .machine
                .handle_sync_request(&id, &body)
                .map_err(|e| e.to_string());
            self.drive();
            if let Ok(body) = &response {
                assert!(
                    body.len() <= MAX_RESPONSE_BYTES,
                    "a sync response of {} bytes",
                    body.len()
                );
                figures.largest_response = figures.largest_response.max(body.len());
                figures.bytes += body.len();
            }
            catch_up.handle_response(response.as_deref().map_err(Clone::clone));
        }
        figures.rounds = catch_up.rounds();
        let state = catch_up
            .finish()
            .expect("the whole state, listing the new member");
        Ok((self.add(name, state, keys), figures))
    }

    /// Cuts the link between `a` and `b`: neither gossip nor sync crosses it.
    pub(crate) fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    /// Heals the link between `a` and `b` and tells both machines, as the transport does on a
    /// new connection ([`NodeMachine::handle_connected`]): each starts a sync dialogue.
    pub(crate) fn connect(&mut self, a: usize, b: usize) {
        self.cut.remove(&(a.min(b), a.max(b)));
        let (ida, idb) = (self.id(a), self.id(b));
        let now = self.now;
        self.nodes[a].machine.handle_connected(&idb, now);
        self.nodes[b].machine.handle_connected(&ida, now);
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.machine.id() == id)
    }

    /// Ticks every machine at the current time, then drives.
    pub(crate) fn tick(&mut self) {
        let now = self.now;
        for node in &mut self.nodes {
            node.machine.handle_tick(now);
        }
        self.drive();
    }

    /// Moves the clock `ms` forward as the daemon's timer would: to the earliest
    /// [`NodeMachine::poll_timeout`] of the machines, ticking those that are due and driving,
    /// until the clock reaches `now + ms`.
    pub(crate) fn advance(&mut self, ms: u64) {
        let end = Millis(self.now.0 + ms);
        loop {
            let next = self
                .nodes
                .iter()
                .map(|n| n.machine.poll_timeout())
                .min()
                .unwrap_or(end)
                .max(self.now);
            if next > end {
                break;
            }
            self.now = next;
            for node in &mut self.nodes {
                if node.machine.poll_timeout() <= next {
                    node.machine.handle_tick(next);
                }
            }
            self.drive();
        }
        self.now = end;
    }

    /// Carries out every machine's outputs, and those they cause, until none is left.
    ///
    /// Panics after [`MAX_ROUNDS`] rounds that each had something to do.
    pub(crate) fn drive(&mut self) {
        for _ in 0..MAX_ROUNDS {
            if !self.step() {
                return;
            }
        }
        panic!("the machines did not fall quiet in {MAX_ROUNDS} rounds");
    }

    /// One round: each machine's queued outputs, in order. Returns whether there were any.
    fn step(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.nodes.len() {
            while let Some(output) = self.nodes[i].machine.poll_output() {
                busy = true;
                self.carry_out(i, output);
            }
        }
        busy
    }

    fn carry_out(&mut self, from: usize, output: Output) {
        let sender = self.id(from);
        let now = self.now;
        match output {
            Output::Persist { flush } => {
                self.nodes[from].persists += 1;
                self.nodes[from].flushes += usize::from(flush);
            }
            Output::SetMembers(members) => {
                self.nodes[from].members = members.into_keys().collect();
            }
            Output::Publish { channel, data } => {
                for to in (0..self.nodes.len()).filter(|&to| to != from) {
                    if !self.gossip
                        || !self.linked(from, to)
                        || !self.nodes[to].members.contains(&sender)
                    {
                        self.dropped += 1;
                        continue;
                    }
                    self.nodes[to]
                        .machine
                        .handle_gossip(channel, &sender, &data, now);
                }
            }
            Output::Send { to, data } => {
                self.direct += 1;
                match self.index_of(&to) {
                    Some(target)
                        if self.linked(from, target)
                            && self.nodes[target].members.contains(&sender) =>
                    {
                        self.nodes[target]
                            .machine
                            .handle_direct(&sender, &data, now);
                    }
                    _ => self.dropped += 1,
                }
            }
            Output::SyncRequest { to, body } => {
                self.sync_requests += 1;
                let answer = match self.index_of(&to) {
                    Some(target) if self.linked(from, target) => self.nodes[target]
                        .machine
                        .handle_sync_request(&sender, &body)
                        .map_err(|e| e.to_string()),
                    _ => Err("unreachable".into()),
                };
                self.nodes[from].machine.handle_sync_response(&to, answer);
            }
        }
    }

    /// Node `i`'s document heads.
    pub(crate) fn heads(&mut self, i: usize) -> Vec<String> {
        self.nodes[i].machine.state_mut().heads()
    }
}

/// A node id for `name` (ids are opaque to the machine; the daemon's are libp2p peer ids).
pub(crate) fn node_id(name: &str) -> NodeId {
    NodeId(format!("12D3KooW{name}"))
}

/// The X25519 keys of the `index`th member to be made (drawn from a seeded generator: tests
/// replay exactly).
fn secret_keys(index: usize) -> SecretKeys {
    SecretKeys::generate(&mut StdRng::seed_from_u64(0x4E7 + index as u64))
}
