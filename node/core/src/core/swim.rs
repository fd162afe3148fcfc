//! Membership and failure detection by SWIM with Lifeguard's refinements, sans IO.
//!
//! Sources: Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process
//! Group Membership Protocol" (DSN 2002): probe one member per period, directly then through
//! `k` others, suspect before declaring down, incarnation numbers to refute, membership
//! updates piggybacked on the probes. Dadgar, Phillips, Currey, "Lifeguard: Local Health
//! Awareness for More Accurate Failure Detection" (2018): a local health multiplier that
//! slows this node's probing and lengthens its timeouts while it misses its own deadlines
//! (LHA-Probe, with nacks from the indirect probers), and a suspicion timeout that starts
//! long and shrinks as independent members confirm the suspicion (LHA-Suspicion).
//!
//! Each node sends O(1) messages per probe period whatever the cluster's size: one ping,
//! its ack, and `indirect_probes` ping-reqs when the direct probe fails. An update about a
//! member rides on at most `retransmit_mult · ⌈log10(n + 1)⌉` messages.
//!
//! Why not `caio/foca` (the sans-IO SWIM crate Corrosion runs on): foca 2.0 has a fixed
//! `suspect_to_down_after` (no suspicion that shrinks with confirmations, no local health
//! multiplier: the two Lifeguard refinements this design asks for), learns members by
//! announcement while Warren's members are the admitted ones in the desired state, schedules
//! its timers as events through a runtime where Warren's core is driven by `Millis` values,
//! and pulls in a second `rand` major version. The protocol is small; this module is it.
//!
//! Warren's adjustments, each said where it is made:
//! - the members are the desired state's (set by [`Swim::set_members`]); updates about
//!   anyone else are ignored, so a peer cannot make this node track more than the members;
//! - direct evidence: a member this node heard from itself within one probe period counts as
//!   alive here, and rumours of its suspicion at the incarnation known are not taken in that
//!   window (after a heal the connection comes before the refutation, and the merged document
//!   must not find its slots on a "down" member);
//! - the direct probe's timeout adapts to the member's measured round trip (within
//!   `probe_timeout_ms ..= probe_interval_ms · 4/5`), so far links do not raise suspicions
//!   on every probe;
//! - down members are pinged one at a time every `down_probe_ms`, so the two sides of a
//!   healed partition find each other without an operator.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};
use warren_crdt::NodeId;

use super::{Liveness, Millis};

/// Timing and fan-out of SWIM. Times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwimConfig {
    /// One member is probed per period (default 1,000), times (1 + local health).
    pub probe_interval_ms: u64,
    /// Least time a direct ping waits for its ack before the indirect probes go out (default
    /// 300), times (1 + local health). Longer for a member whose measured round trip asks
    /// for it (up to 4/5 of the period).
    pub probe_timeout_ms: u64,
    /// Members asked to ping a target that did not answer directly (default 3).
    pub indirect_probes: usize,
    /// Shortest suspicion, for a cluster of at most 10 members (default 1,000); it grows with
    /// `log10(n)`. A suspicion confirmed by [`SUSPICION_CONFIRMATIONS`] members lasts this long.
    pub suspicion_min_ms: u64,
    /// A suspicion nobody confirms lasts this many times the shortest (default 4).
    pub suspicion_max_mult: u64,
    /// An update rides on this many times `⌈log10(n + 1)⌉` messages (default 4).
    pub retransmit_mult: u32,
    /// Most updates one message carries (default 8).
    pub max_piggyback: usize,
    /// Greatest local health multiplier (default 3: probing slows to a quarter at worst;
    /// Lifeguard's S, 8 in the paper, is lower here so that a node cut off alone still finds
    /// its peers down, and claims the lease for its side, within a bounded time).
    pub max_health: u32,
    /// Period of the ping to one down member (default 2,000).
    pub down_probe_ms: u64,
}

impl Default for SwimConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 300,
            indirect_probes: 3,
            suspicion_min_ms: 1_000,
            suspicion_max_mult: 4,
            retransmit_mult: 4,
            max_piggyback: 8,
            max_health: 3,
            down_probe_ms: 2_000,
        }
    }
}

/// Members a node tells at once of its suspicion of a lease holder ([`Swim::suspect`]): with
/// every node telling this many at random, each hears about this many others' suspicions,
/// at least [`SUSPICION_CONFIRMATIONS`] of them 98 times in 100 (Poisson), so the suspicion
/// runs its shortest.
pub(crate) const SUSPICION_TELL: usize = 8;

/// Independent suspicions after which a suspicion's timeout is at its shortest (Lifeguard's K).
pub const SUSPICION_CONFIRMATIONS: usize = 3;

/// Most updates a received message may carry; more are not read.
pub const MAX_UPDATES_READ: usize = 64;

/// Longest node id an update may name, in bytes; longer ones are not read.
pub const MAX_ID_BYTES: usize = 128;

/// Random draws per indirect-probe helper before [`Swim::indirect_helpers`] falls back to a
/// walk of every member: with half the members alive, eight draws miss all of them once in
/// 256.
const HELPER_DRAWS_PER_PICK: usize = 8;

/// Most indirect probes this node relays at once for others; more are not taken.
const MAX_RELAYS: usize = 64;

/// A member's state in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateState {
    /// Alive at this incarnation (a refutation when the member sends it about itself).
    Alive,
    /// Suspected at this incarnation.
    Suspect,
    /// Declared down at this incarnation.
    Down,
}

/// One piggybacked membership update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The member it is about.
    pub node: NodeId,
    /// Its incarnation.
    pub inc: u64,
    /// What is said of it.
    pub state: UpdateState,
    /// Who suspected it (for [`UpdateState::Suspect`]): confirmations count distinct ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<NodeId>,
}

/// What a SWIM message asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Are you alive? Answer with an ack of the same `seq`.
    Ping,
    /// Ping `target` for me and relay its ack (or a nack) with this `seq`.
    PingReq,
    /// The answer to a ping (or a relayed one).
    Ack,
    /// An indirect prober's word that the target did not answer it in time (Lifeguard).
    Nack,
}

/// One SWIM message between two members: JSON on the wire (a direct message of the mesh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimMessage {
    /// What it asks.
    pub kind: Kind,
    /// The probe it belongs to (the sender's number for a ping or ping-req; echoed in the
    /// ack or nack).
    pub seq: u32,
    /// The sender's incarnation.
    pub inc: u64,
    /// For a ping-req: whom to ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<NodeId>,
    /// Piggybacked membership updates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<Update>,
}

#[derive(Debug, Clone)]
enum State {
    Alive,
    Suspect { since: Millis, by: BTreeSet<NodeId> },
    Down { since: Millis },
}

#[derive(Debug, Clone)]
struct MemberInfo {
    inc: u64,
    state: State,
    /// When this node last heard from the member itself.
    direct_at: Option<Millis>,
    /// Smoothed round trip and its variation, in ms (RFC 6298's estimator).
    rtt: Option<(u64, u64)>,
}

#[derive(Debug, Clone)]
struct Probe {
    target: NodeId,
    seq: u32,
    sent_at: Millis,
    direct_deadline: Millis,
    end: Millis,
    indirect: usize,
    nacks: usize,
    acked: bool,
}

#[derive(Debug, Clone)]
struct Relay {
    origin: NodeId,
    origin_seq: u32,
    deadline: Millis,
}

#[derive(Debug, Clone)]
struct Queued {
    update: Update,
    sent: u32,
}

/// Counters of one node's SWIM traffic since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwimStats {
    /// Messages queued to send.
    pub sent: u64,
    /// Messages received from members.
    pub received: u64,
    /// Probes that got no ack, directly or indirectly.
    pub failed_probes: u64,
    /// Suspicions of this node that it refuted.
    pub refutations: u64,
    /// Members this node's own suspicion timed out on (it declared them down).
    pub downs: u64,
}

/// One node's SWIM state machine. Feed it the members, messages and ticks; drain what it
/// sends with [`Swim::poll_send`].
#[derive(Debug)]
pub struct Swim {
    me: NodeId,
    config: SwimConfig,
    inc: u64,
    health: u32,
    members: BTreeMap<NodeId, MemberInfo>,
    /// The members that are suspect or down here (kept with every change of a state), so that
    /// the timers and the down-member ping walk them and not every member.
    not_alive: BTreeSet<NodeId>,
    rotation: Vec<NodeId>,
    next_in_rotation: usize,
    /// Members heard (from others) to be suspect: probed next, each once.
    priority: VecDeque<NodeId>,
    probe: Option<Probe>,
    next_probe: Millis,
    next_down_probe: Millis,
    relays: BTreeMap<u32, Relay>,
    seq: u32,
    queue: BTreeMap<NodeId, Queued>,
    outbox: VecDeque<(NodeId, SwimMessage)>,
    rng: StdRng,
    stats: SwimStats,
    /// Raised on every change of a member's state or of the member set.
    version: u64,
    /// Every member with a measured round trip, by smoothed round trip then id (kept with
    /// each sample): [`Swim::members_by_rtt`].
    by_rtt: BTreeSet<(u64, NodeId)>,
}

impl Swim {
    /// A state machine for member `me` started at `now`; `seed` seeds its choices of whom to
    /// probe, so a simulation replays exactly.
    pub fn new(me: NodeId, config: SwimConfig, now: Millis, seed: u64) -> Self {
        Self {
            me,
            config,
            inc: 0,
            health: 0,
            members: BTreeMap::new(),
            not_alive: BTreeSet::new(),
            rotation: Vec::new(),
            next_in_rotation: 0,
            priority: VecDeque::new(),
            probe: None,
            next_probe: now,
            next_down_probe: Millis(now.0.saturating_add(config.down_probe_ms)),
            relays: BTreeMap::new(),
            seq: 0,
            queue: BTreeMap::new(),
            outbox: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            stats: SwimStats::default(),
            version: 0,
            by_rtt: BTreeSet::new(),
        }
    }

    /// This node's incarnation: raised each time it refutes a suspicion of itself.
    pub fn incarnation(&self) -> u64 {
        self.inc
    }

    /// Lifeguard's local health multiplier: 0 when this node keeps its own deadlines, up to
    /// [`SwimConfig::max_health`] while it misses them. Its probe period and timeouts are
    /// multiplied by one more than this.
    pub fn health(&self) -> u32 {
        self.health
    }

    /// Counters since start.
    pub fn stats(&self) -> SwimStats {
        self.stats
    }

    /// A number raised on every change of a member's state (alive, suspect, down) or of the
    /// member set: a caller that keeps something derived from the states recomputes it when
    /// this moved.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The members, this node included or not (it is skipped): the desired state's admitted,
    /// not removed ones. A new member starts alive at incarnation 0 and is probed like any
    /// other; one no longer listed is forgotten.
    pub fn set_members<'a>(&mut self, members: impl IntoIterator<Item = &'a NodeId>) {
        let wanted: BTreeSet<&NodeId> = members.into_iter().filter(|m| **m != self.me).collect();
        let before = self.members.len();
        self.members.retain(|id, _| wanted.contains(id));
        self.not_alive.retain(|id| wanted.contains(id));
        let mut changed = self.members.len() != before;
        if changed {
            self.by_rtt.retain(|(_, id)| wanted.contains(id));
        }
        for id in wanted {
            if !self.members.contains_key(id) {
                self.members.insert(
                    id.clone(),
                    MemberInfo {
                        inc: 0,
                        state: State::Alive,
                        direct_at: None,
                        rtt: None,
                    },
                );
                changed = true;
            }
        }
        if changed {
            self.queue
                .retain(|id, _| self.members.contains_key(id) || *id == self.me);
            self.priority.retain(|id| self.members.contains_key(id));
            self.rotation = self.members.keys().cloned().collect();
            self.rotation.shuffle(&mut self.rng);
            self.next_in_rotation = 0;
        }
    }

    /// How `peer` looks from here at `now`: alive, suspect or down by SWIM, but alive while
    /// it was heard from directly within one probe period. This node, and anyone not (yet)
    /// a member here, is alive.
    pub fn liveness(&self, peer: &NodeId, now: Millis) -> Liveness {
        let Some(m) = self.members.get(peer) else {
            return Liveness::Alive;
        };
        match m.state {
            State::Alive => Liveness::Alive,
            _ if self.heard_recently(m, now) => Liveness::Alive,
            State::Suspect { .. } => Liveness::Suspect,
            State::Down { .. } => Liveness::Down,
        }
    }

    /// `peer`'s smoothed round trip in ms as this node's probes measured it (RFC 6298's
    /// estimator); `None` until a probe of it was answered directly.
    pub fn rtt_ms(&self, peer: &NodeId) -> Option<u64> {
        self.members
            .get(peer)
            .and_then(|m| m.rtt)
            .map(|(srtt, _)| srtt)
    }

    /// Every member whose round trip this node measured, nearest first: `(smoothed round
    /// trip in ms, member)`, ordered by round trip then id (the values of
    /// [`Swim::rtt_ms`]). A reader that wants the nearest member with some property walks
    /// from the start instead of looking up every member.
    pub fn members_by_rtt(&self) -> impl Iterator<Item = (u64, &NodeId)> + '_ {
        self.by_rtt.iter().map(|(rtt, id)| (*rtt, id))
    }

    /// Milliseconds `peer` has not been alive here at `now` (since its suspicion began); 0
    /// while alive.
    pub fn silent_ms(&self, peer: &NodeId, now: Millis) -> u64 {
        if self.liveness(peer, now) == Liveness::Alive {
            return 0;
        }
        match self.members.get(peer).map(|m| &m.state) {
            Some(State::Suspect { since, .. }) | Some(State::Down { since }) => now.since(*since),
            _ => 0,
        }
    }

    fn heard_recently(&self, m: &MemberInfo, now: Millis) -> bool {
        m.direct_at
            .is_some_and(|at| now.since(at) <= self.config.probe_interval_ms)
    }

    /// A connection to member `peer` opened at `now`: direct evidence that it runs. It is
    /// pinged at once (the ping carries its state here, so a member this side holds suspect
    /// or down refutes within one round trip).
    pub fn connected(&mut self, peer: &NodeId, now: Millis) {
        if let Some(m) = self.members.get_mut(peer) {
            m.direct_at = Some(now);
            let seq = self.next_seq();
            self.send(peer.clone(), Kind::Ping, seq, None);
        }
    }

    /// This node has evidence of its own that `peer` does not run (its lease renewals
    /// stopped): a suspicion by this node at the incarnation known, as a failed probe raises
    /// one; nothing if `peer` is suspect or down already by this node's word, or was heard
    /// from directly within one probe period.
    ///
    /// The suspicion is told at once, not only piggybacked on the next probes: in a ping to
    /// `peer` (which refutes it if it runs) and in pings to `SUSPICION_TELL` (8) random alive
    /// members. Every node that sees the same evidence does the same, so each hears the
    /// others' suspicions within a network delay and Lifeguard's confirmations shorten the
    /// suspicion to its least at once.
    pub fn suspect(&mut self, peer: &NodeId, now: Millis) {
        let Some(m) = self.members.get(peer) else {
            return;
        };
        if self.heard_recently(m, now) {
            debug!(member = %peer.short(), "not suspected: heard from within a probe period");
            return;
        }
        let mine = match &m.state {
            State::Alive => false,
            State::Suspect { by, .. } => by.contains(&self.me),
            State::Down { .. } => true,
        };
        if mine {
            return;
        }
        let update = Update {
            node: peer.clone(),
            inc: m.inc,
            state: UpdateState::Suspect,
            by: Some(self.me.clone()),
        };
        debug!(member = %peer.short(), "suspected: its lease renewals stopped");
        self.apply(update, now);
        let mut others: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| *id != peer && matches!(m.state, State::Alive))
            .map(|(id, _)| id.clone())
            .collect();
        others.shuffle(&mut self.rng);
        others.truncate(SUSPICION_TELL);
        for to in std::iter::once(peer.clone()).chain(others) {
            let seq = self.next_seq();
            self.send(to, Kind::Ping, seq, None);
        }
    }

    /// This node was not running for `ms` milliseconds before `now` (a starved or paused
    /// process): suspicions count that much later, the current probe is abandoned without
    /// blame, and the local health multiplier rises (Lifeguard: a node that misses its own
    /// deadlines must not write others off for it).
    pub fn credit(&mut self, ms: u64, now: Millis) {
        let later = |t: Millis| Millis(t.0.saturating_add(ms).min(now.0.max(t.0)));
        for id in &self.not_alive {
            if let Some(State::Suspect { since, .. }) =
                self.members.get_mut(id).map(|m| &mut m.state)
            {
                *since = later(*since);
            }
        }
        self.probe = None;
        self.relays.clear();
        self.next_probe = now;
        self.raise_health();
    }

    /// A message from `from` at `now`. Messages from non-members are ignored.
    pub fn handle(&mut self, from: &NodeId, msg: SwimMessage, now: Millis) {
        let Some(m) = self.members.get_mut(from) else {
            return;
        };
        self.stats.received += 1;
        m.direct_at = Some(now);
        if msg.inc > m.inc {
            m.inc = msg.inc;
            if !matches!(m.state, State::Alive) {
                m.state = State::Alive;
                self.not_alive.remove(from);
                let update = Update {
                    node: from.clone(),
                    inc: msg.inc,
                    state: UpdateState::Alive,
                    by: None,
                };
                self.enqueue(update);
            }
        }
        let held_not_alive = msg
            .updates
            .iter()
            .take(MAX_UPDATES_READ)
            .any(|u| u.node == self.me && u.state != UpdateState::Alive);
        for update in msg.updates.into_iter().take(MAX_UPDATES_READ) {
            if update.node.0.len() <= MAX_ID_BYTES
                && update.by.as_ref().is_none_or(|b| b.0.len() <= MAX_ID_BYTES)
            {
                self.apply(update, now);
            }
        }
        if held_not_alive && msg.kind != Kind::Ping {
            // `from` holds this node suspect or down and just said so: the refutation (this
            // node's incarnation, raised now or earlier for someone else) goes back to it at
            // once in a ping (a ping is answered with an ack, which carries it anyway). Left
            // to the piggybacked gossip it would reach `from` with this node's next message
            // to it, up to a probe period later; meanwhile `from` counts this node down again
            // once its direct contact is a period old, and a lease holder re-places the slots
            // of a member that has just come back (seen after heals in `constrained-split`:
            // 5 nodes seed 3, 7 nodes seed 0, each a start the heal's churn rule forbids).
            let seq = self.next_seq();
            self.send(from.clone(), Kind::Ping, seq, None);
        }
        match msg.kind {
            Kind::Ping => self.send(from.clone(), Kind::Ack, msg.seq, None),
            Kind::PingReq => {
                let Some(target) = msg.target.filter(|t| self.members.contains_key(t)) else {
                    return;
                };
                if self.relays.len() >= MAX_RELAYS {
                    return;
                }
                let seq = self.next_seq();
                let deadline = Millis(now.0.saturating_add(self.direct_timeout(&target)));
                self.relays.insert(
                    seq,
                    Relay {
                        origin: from.clone(),
                        origin_seq: msg.seq,
                        deadline,
                    },
                );
                self.send(target, Kind::Ping, seq, None);
            }
            Kind::Ack => {
                if let Some(relay) = self.relays.remove(&msg.seq) {
                    self.send(relay.origin, Kind::Ack, relay.origin_seq, None);
                    return;
                }
                let Some(probe) = self.probe.as_mut().filter(|p| p.seq == msg.seq) else {
                    return;
                };
                probe.acked = true;
                if *from == probe.target {
                    let sample = now.since(probe.sent_at);
                    if let Some(m) = self.members.get_mut(from) {
                        let old = m.rtt;
                        let new = match old {
                            None => (sample, sample / 2),
                            Some((srtt, var)) => {
                                let var = (3 * var + srtt.abs_diff(sample)) / 4;
                                ((7 * srtt + sample) / 8, var)
                            }
                        };
                        m.rtt = Some(new);
                        if old.map(|(srtt, _)| srtt) != Some(new.0) {
                            if let Some((srtt, _)) = old {
                                self.by_rtt.remove(&(srtt, from.clone()));
                            }
                            self.by_rtt.insert((new.0, from.clone()));
                        }
                    }
                }
            }
            Kind::Nack => {
                if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == msg.seq) {
                    probe.nacks += 1;
                }
            }
        }
    }

    /// Time passed: finish or advance the current probe, start the next, relay nacks, turn
    /// expired suspicions into down, ping one down member when due.
    pub fn tick(&mut self, now: Millis) {
        self.advance_probe(now);
        if self.probe.is_none() && now >= self.next_probe {
            self.start_probe(now);
        }
        let expired: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(relay) = self.relays.remove(&seq) {
                self.send(relay.origin, Kind::Nack, relay.origin_seq, None);
            }
        }
        self.expire_suspicions(now);
        if now >= self.next_down_probe {
            self.next_down_probe = Millis(now.0.saturating_add(self.config.down_probe_ms));
            let down: Vec<NodeId> = self
                .not_alive
                .iter()
                .filter(|id| {
                    self.members
                        .get(*id)
                        .is_some_and(|m| matches!(m.state, State::Down { .. }))
                })
                .cloned()
                .collect();
            if let Some(target) = down.choose(&mut self.rng).cloned() {
                let seq = self.next_seq();
                self.send(target, Kind::Ping, seq, None);
            }
        }
    }

    /// The latest instant the next [`Swim::tick`] is due: the current probe's next deadline,
    /// the next probe, a relay's deadline, a suspicion's end, the next down-member ping.
    pub fn poll_timeout(&self, now: Millis) -> Millis {
        let mut due = self.next_probe.min(self.next_down_probe);
        if let Some(p) = &self.probe {
            due = due.min(if p.indirect == 0 && !p.acked {
                p.direct_deadline
            } else {
                p.end
            });
        }
        for r in self.relays.values() {
            due = due.min(r.deadline);
        }
        let n = self.members.len() + 1;
        for m in self.not_alive.iter().filter_map(|id| self.members.get(id)) {
            if let State::Suspect { since, by } = &m.state {
                due = due.min(Millis(
                    since.0.saturating_add(self.suspicion_ms(n, by.len())),
                ));
            }
        }
        due.max(now)
    }

    /// The next message to send: `(to, message)`; `None` when there is none.
    pub fn poll_send(&mut self) -> Option<(NodeId, SwimMessage)> {
        self.outbox.pop_front()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn raise_health(&mut self) {
        self.health = (self.health + 1).min(self.config.max_health);
    }

    fn scaled(&self, ms: u64) -> u64 {
        ms.saturating_mul(u64::from(self.health) + 1)
    }

    /// How long a direct ping to `target` waits: the configured least, or the member's
    /// smoothed round trip plus four deviations (RFC 6298) when longer, at most 4/5 of the
    /// period; scaled by local health.
    fn direct_timeout(&self, target: &NodeId) -> u64 {
        let measured = self
            .members
            .get(target)
            .and_then(|m| m.rtt)
            .map_or(0, |(srtt, var)| srtt + 4 * var);
        let cap = self.config.probe_interval_ms * 4 / 5;
        self.scaled(
            measured
                .max(self.config.probe_timeout_ms)
                .min(cap.max(self.config.probe_timeout_ms)),
        )
    }

    /// Lifeguard's suspicion timeout for a cluster of `n` members with `suspectors` distinct
    /// suspicions: from `max` down to `min` as `log(c + 1) / log(K + 1)`, `c` = confirmations
    /// after the first. `min` = `suspicion_min_ms · max(1, log10 n)`.
    fn suspicion_ms(&self, n: usize, suspectors: usize) -> u64 {
        let scale = (n as f64).log10().max(1.0);
        let min = self.config.suspicion_min_ms as f64 * scale;
        let max = min * self.config.suspicion_max_mult as f64;
        let c = suspectors.saturating_sub(1).min(SUSPICION_CONFIRMATIONS) as f64;
        let k = SUSPICION_CONFIRMATIONS as f64;
        let t = max - (max - min) * (c + 1.0).ln() / (k + 1.0).ln();
        t.max(min) as u64
    }

    fn retransmits(&self) -> u32 {
        let n = (self.members.len() + 2) as f64;
        self.config.retransmit_mult * (n.log10().ceil() as u32).max(1)
    }

    fn advance_probe(&mut self, now: Millis) {
        let Some(probe) = self.probe.as_ref() else {
            return;
        };
        if !probe.acked && probe.indirect == 0 && now >= probe.direct_deadline {
            let target = probe.target.clone();
            let seq = probe.seq;
            let helpers = self.indirect_helpers(&target);
            let count = helpers.len();
            for helper in helpers {
                self.send(helper, Kind::PingReq, seq, Some(target.clone()));
            }
            if let Some(p) = self.probe.as_mut() {
                p.indirect = count.max(1);
            }
            return;
        }
        if now < probe.end {
            return;
        }
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.acked {
            self.health = self.health.saturating_sub(1);
            return;
        }
        self.stats.failed_probes += 1;
        // LHA-Probe: helpers that did not even nack point at this node's own links.
        if probe.nacks < probe.indirect {
            self.raise_health();
        }
        let Some(m) = self.members.get(&probe.target) else {
            return;
        };
        if self.heard_recently(m, now) {
            return;
        }
        let update = Update {
            node: probe.target,
            inc: m.inc,
            state: UpdateState::Suspect,
            by: Some(self.me.clone()),
        };
        self.apply(update, now);
    }

    /// Up to [`SwimConfig::indirect_probes`] distinct alive members other than `target`,
    /// drawn uniformly at random: fewer only when fewer are alive. Draws positions of the
    /// member list and skips a member not alive, the target or one drawn already, so the cost
    /// is a few draws while most members are alive, not a walk of every member (at 1,000
    /// members the walk and shuffle of every alive one was most of SWIM's tick); after
    /// [`HELPER_DRAWS_PER_PICK`] draws per helper it falls back to the list of every alive
    /// member (many members suspect or down).
    fn indirect_helpers(&mut self, target: &NodeId) -> Vec<NodeId> {
        let want = self.config.indirect_probes;
        let len = self.rotation.len();
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        if len == 0 || want == 0 {
            return Vec::new();
        }
        let eligible = |id: &NodeId| {
            id != target
                && self
                    .members
                    .get(id)
                    .is_some_and(|m| matches!(m.state, State::Alive))
        };
        let mut draws = 0;
        while picked.len() < want && draws < want.saturating_mul(HELPER_DRAWS_PER_PICK) {
            draws += 1;
            let at = self.rng.gen_range(0..len);
            if !picked.contains(&at) && eligible(&self.rotation[at]) {
                picked.push(at);
            }
        }
        if picked.len() < want {
            let mut rest: Vec<usize> = (0..len)
                .filter(|at| !picked.contains(at) && eligible(&self.rotation[*at]))
                .collect();
            rest.shuffle(&mut self.rng);
            rest.truncate(want - picked.len());
            picked.extend(rest);
        }
        picked
            .into_iter()
            .map(|at| self.rotation[at].clone())
            .collect()
    }

    fn start_probe(&mut self, now: Millis) {
        let Some(target) = self.next_target() else {
            self.next_probe = Millis(now.0.saturating_add(self.config.probe_interval_ms));
            return;
        };
        let seq = self.next_seq();
        let period = self.scaled(self.config.probe_interval_ms);
        let timeout = self.direct_timeout(&target);
        self.probe = Some(Probe {
            target: target.clone(),
            seq,
            sent_at: now,
            direct_deadline: Millis(now.0.saturating_add(timeout)),
            end: Millis(now.0.saturating_add(period)),
            indirect: 0,
            nacks: 0,
            acked: false,
        });
        self.next_probe = Millis(now.0.saturating_add(period));
        self.send(target, Kind::Ping, seq, None);
    }

    /// A suspect heard of first (once each), then the shuffled round-robin of members that
    /// are not down (SWIM's probe order, which bounds the time to the first probe of a
    /// failed member).
    fn next_target(&mut self) -> Option<NodeId> {
        while let Some(id) = self.priority.pop_front() {
            if self
                .members
                .get(&id)
                .is_some_and(|m| matches!(m.state, State::Suspect { .. }))
            {
                return Some(id);
            }
        }
        let len = self.rotation.len();
        for _ in 0..len {
            if self.next_in_rotation >= len {
                self.rotation.shuffle(&mut self.rng);
                self.next_in_rotation = 0;
            }
            let id = self.rotation[self.next_in_rotation].clone();
            self.next_in_rotation += 1;
            if self
                .members
                .get(&id)
                .is_some_and(|m| !matches!(m.state, State::Down { .. }))
            {
                return Some(id);
            }
        }
        None
    }

    fn expire_suspicions(&mut self, now: Millis) {
        let n = self.members.len() + 1;
        let expired: Vec<(NodeId, u64, u64, usize)> = self
            .not_alive
            .iter()
            .filter_map(|id| Some((id, self.members.get(id)?)))
            .filter_map(|(id, m)| match &m.state {
                State::Suspect { since, by }
                    if now.since(*since) >= self.suspicion_ms(n, by.len()) =>
                {
                    Some((id.clone(), m.inc, now.since(*since), by.len()))
                }
                _ => None,
            })
            .collect();
        for (node, inc, suspected_ms, suspectors) in expired {
            info!(member = %node.short(), suspected_ms, suspectors, "member down: its suspicion was not refuted");
            self.stats.downs += 1;
            if let Some(m) = self.members.get_mut(&node) {
                m.state = State::Down { since: now };
            }
            self.enqueue(Update {
                node,
                inc,
                state: UpdateState::Down,
                by: None,
            });
        }
    }

    /// Takes in one update by SWIM's precedence: a greater incarnation wins; at the same one,
    /// down beats suspect beats alive. Suspicions of this node are refuted.
    fn apply(&mut self, update: Update, now: Millis) {
        if update.node == self.me {
            if update.state != UpdateState::Alive && update.inc >= self.inc {
                self.inc = update.inc + 1;
                self.stats.refutations += 1;
                self.raise_health();
                let me = self.me.clone();
                self.enqueue(Update {
                    node: me,
                    inc: self.inc,
                    state: UpdateState::Alive,
                    by: None,
                });
            }
            return;
        }
        let recent = match self.members.get(&update.node) {
            Some(m) => self.heard_recently(m, now),
            None => return,
        };
        let n = self.members.len() + 1;
        let Some(m) = self.members.get_mut(&update.node) else {
            return;
        };
        let gossip = match update.state {
            UpdateState::Alive => {
                if update.inc > m.inc {
                    m.inc = update.inc;
                    m.state = State::Alive;
                    true
                } else {
                    false
                }
            }
            UpdateState::Suspect => {
                let by = update.by.clone().unwrap_or_else(|| update.node.clone());
                match &mut m.state {
                    _ if update.inc < m.inc => false,
                    State::Down { .. } => false,
                    State::Suspect { by: set, .. } if update.inc == m.inc => {
                        // A confirmation: re-gossiped while it still shortens the timeout
                        // (the first suspicion and K confirmations).
                        set.len() <= SUSPICION_CONFIRMATIONS && set.insert(by)
                    }
                    _ if update.inc == m.inc && recent => false,
                    _ => {
                        m.inc = update.inc;
                        let heard = by != self.me;
                        m.state = State::Suspect {
                            since: now,
                            by: [by].into(),
                        };
                        // A suspicion heard from another member is checked with a probe of
                        // this node's own next; one this node raised itself (a failed probe,
                        // the lease's silence) is not probed again at once: a node cut off
                        // alone would spend every other period re-probing members it has
                        // just found silent, and find its peers down twice as slowly.
                        if heard && !self.priority.contains(&update.node) && self.priority.len() < n
                        {
                            self.priority.push_back(update.node.clone());
                        }
                        true
                    }
                }
            }
            UpdateState::Down => match m.state {
                _ if update.inc < m.inc => false,
                State::Down { .. } if update.inc == m.inc => false,
                _ if update.inc == m.inc && recent => false,
                _ => {
                    m.inc = update.inc;
                    m.state = State::Down { since: now };
                    true
                }
            },
        };
        let not_alive = !matches!(m.state, State::Alive);
        if not_alive {
            self.not_alive.insert(update.node.clone());
        } else {
            self.not_alive.remove(&update.node);
        }
        if gossip {
            self.enqueue(update);
        }
    }

    fn enqueue(&mut self, update: Update) {
        self.version += 1;
        self.queue
            .insert(update.node.clone(), Queued { update, sent: 0 });
    }

    /// Queues a message to `to` with the updates sent least so far, and `to`'s own state
    /// here first when it is not alive (so it can refute).
    fn send(&mut self, to: NodeId, kind: Kind, seq: u32, target: Option<NodeId>) {
        let mut updates = Vec::new();
        if let Some(m) = self.members.get(&to) {
            let state = match m.state {
                State::Alive => None,
                State::Suspect { .. } => Some(UpdateState::Suspect),
                State::Down { .. } => Some(UpdateState::Down),
            };
            if let Some(state) = state {
                updates.push(Update {
                    node: to.clone(),
                    inc: m.inc,
                    state,
                    by: Some(self.me.clone()),
                });
            }
        }
        let limit = self.retransmits();
        let mut picks: Vec<(u32, NodeId)> = self
            .queue
            .iter()
            .filter(|(id, _)| **id != to || updates.is_empty())
            .map(|(id, q)| (q.sent, id.clone()))
            .collect();
        picks.sort();
        for (_, id) in picks.into_iter().take(self.config.max_piggyback) {
            if let Some(q) = self.queue.get_mut(&id) {
                q.sent += 1;
                updates.push(q.update.clone());
                if q.sent >= limit {
                    self.queue.remove(&id);
                }
            }
        }
        self.stats.sent += 1;
        self.outbox.push_back((
            to,
            SwimMessage {
                kind,
                seq,
                inc: self.inc,
                target,
                updates,
            },
        ));
    }
}

/// The answer a member `to` that runs gives to `message` (test support for drivers without
/// a network): an ack to a ping (refuting a suspicion of `to` the ping carries), an ack to a
/// ping-req whose target `up` says runs, a nack to one whose target does not; `None` to an
/// ack or a nack.
#[doc(hidden)]
pub fn reply_of_live_member(
    to: &NodeId,
    message: &SwimMessage,
    up: impl Fn(&NodeId) -> bool,
) -> Option<SwimMessage> {
    let inc = message
        .updates
        .iter()
        .filter(|u| u.node == *to && u.state != UpdateState::Alive)
        .map(|u| u.inc + 1)
        .max()
        .unwrap_or(0);
    let kind = match message.kind {
        Kind::Ping => Kind::Ack,
        Kind::PingReq if message.target.as_ref().is_some_and(&up) => Kind::Ack,
        Kind::PingReq => Kind::Nack,
        Kind::Ack | Kind::Nack => return None,
    };
    Some(SwimMessage {
        kind,
        seq: message.seq,
        inc,
        target: None,
        updates: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little network of SWIM machines: every message takes `delay_ms`, and crosses only
    /// between nodes of one component. Ticks every 50 ms.
    struct Net {
        nodes: Vec<Swim>,
        component: Vec<u32>,
        dead: Vec<bool>,
        in_flight: Vec<(Millis, usize, usize, SwimMessage)>,
        now: Millis,
        delay_ms: u64,
        sent: u64,
    }

    fn id(i: usize) -> NodeId {
        NodeId(format!("n{i}"))
    }

    impl Net {
        fn new(n: usize) -> Self {
            let ids: Vec<NodeId> = (0..n).map(id).collect();
            let nodes = (0..n)
                .map(|i| {
                    let mut s = Swim::new(id(i), SwimConfig::default(), Millis(0), i as u64);
                    s.set_members(&ids);
                    s
                })
                .collect();
            Self {
                nodes,
                component: vec![0; n],
                dead: vec![false; n],
                in_flight: Vec::new(),
                now: Millis(0),
                delay_ms: 10,
                sent: 0,
            }
        }

        fn run(&mut self, ms: u64) {
            let end = self.now.0 + ms;
            while self.now.0 < end {
                self.now = Millis(self.now.0 + 50);
                let now = self.now;
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                    .into_iter()
                    .partition(|(at, ..)| *at <= now);
                self.in_flight = later;
                for (_, from, to, message) in due {
                    if !self.dead[to] && self.component[from] == self.component[to] {
                        self.nodes[to].handle(&id(from), message, now);
                    }
                }
                for i in 0..self.nodes.len() {
                    if !self.dead[i] {
                        self.nodes[i].tick(now);
                    }
                }
                for i in 0..self.nodes.len() {
                    while let Some((to, message)) = self.nodes[i].poll_send() {
                        self.sent += 1;
                        let j: usize = to.0[1..].parse().expect("an id of this net");
                        let at = Millis(now.0 + self.delay_ms);
                        self.in_flight.push((at, i, j, message));
                    }
                }
            }
        }

        fn view(&self, of: usize, peer: usize) -> Liveness {
            self.nodes[of].liveness(&id(peer), self.now)
        }

        /// Runs in 50 ms steps until `done` holds, at most `limit_ms`: the milliseconds it
        /// took, `None` if it never held.
        fn ms_until(&mut self, limit_ms: u64, done: impl Fn(&Self) -> bool) -> Option<u64> {
            let start = self.now;
            while self.now.since(start) < limit_ms {
                self.run(50);
                if done(self) {
                    return Some(self.now.since(start));
                }
            }
            None
        }
    }

    #[test]
    fn indirect_probe_helpers_are_distinct_alive_members_other_than_the_target() {
        let ids: Vec<NodeId> = (0..50).map(id).collect();
        let target = id(49);
        // Members n1..=n{down} are down: none, half, all but one, all (the fallback's cases).
        for down in [0, 25, 47, 49] {
            let swim = |seed| {
                let mut s = Swim::new(id(0), SwimConfig::default(), Millis(0), seed);
                s.set_members(&ids);
                for i in 1..=down {
                    if let Some(m) = s.members.get_mut(&id(i)) {
                        m.state = State::Down { since: Millis(0) };
                    }
                }
                s
            };
            let (mut s, mut again) = (swim(7), swim(7));
            let eligible = (1..49).filter(|i| *i > down).count();
            let mut seen = BTreeSet::new();
            for _ in 0..200 {
                let helpers = s.indirect_helpers(&target);
                assert_eq!(
                    helpers,
                    again.indirect_helpers(&target),
                    "one seed, one choice"
                );
                assert_eq!(helpers.len(), eligible.min(3), "down = {down}");
                let distinct: BTreeSet<&NodeId> = helpers.iter().collect();
                assert_eq!(distinct.len(), helpers.len(), "{helpers:?}");
                for h in helpers {
                    assert!(h != target && h != id(0), "{h}");
                    assert!(matches!(s.members[&h].state, State::Alive), "{h}");
                    seen.insert(h);
                }
            }
            // Drawn at random: 200 choices reach every eligible member.
            assert_eq!(seen.len(), eligible, "down = {down}");
        }
    }

    #[test]
    fn a_steady_cluster_raises_no_suspicion_and_sends_a_few_messages_per_period() {
        for n in [5, 50] {
            let mut net = Net::new(n);
            let mut worst = Liveness::Alive;
            for _ in 0..60 {
                net.run(1_000);
                for i in 0..n {
                    for j in 0..n {
                        if net.view(i, j) != Liveness::Alive {
                            worst = net.view(i, j);
                        }
                    }
                }
            }
            assert_eq!(worst, Liveness::Alive, "n = {n}");
            // A ping and its ack per node per one-second period, whatever n.
            let per_node_per_s = net.sent as f64 / n as f64 / 60.0;
            assert!(
                (1.5..=2.5).contains(&per_node_per_s),
                "n = {n}: {per_node_per_s} messages per node per second"
            );
        }
    }

    #[test]
    fn a_dead_member_is_suspected_then_down_everywhere() {
        let mut net = Net::new(8);
        net.run(5_000);
        net.dead[3] = true;
        let down_at = net
            .ms_until(20_000, |net| {
                (0..8)
                    .filter(|&i| i != 3)
                    .all(|i| net.view(i, 3) == Liveness::Down)
            })
            .expect("every live member holds the dead one down within 20 s");
        // Probe (one period), suspicion (1-4 s), dissemination: a few seconds, not 20.
        assert!(down_at <= 10_000, "{down_at} ms");
        for i in (0..8).filter(|&i| i != 3) {
            for j in (0..8).filter(|&j| j != 3) {
                assert_eq!(net.view(i, j), Liveness::Alive, "{i} sees {j}");
            }
        }
    }

    /// Every live member suspects a dead lease holder at once (its renewals stopped): each
    /// tells the others, so each suspicion is confirmed by `K` members within a network delay
    /// and the holder is down one shortest suspicion later (1 s at 8 members), not after the
    /// longer timeout of a suspicion fewer members confirm.
    #[test]
    fn a_suspicion_everyone_raises_is_confirmed_at_once_and_runs_its_shortest() {
        let mut net = Net::new(8);
        net.run(3_000);
        net.dead[3] = true;
        // As the lease rule does, a second (half the TTL) after its last renewal: a member
        // heard from within one probe period is not suspected on this evidence.
        net.run(1_000);
        let at = net.now;
        for i in (0..8).filter(|&i| i != 3) {
            net.nodes[i].suspect(&id(3), at);
        }
        let down_at = net
            .ms_until(5_000, |net| {
                (0..8)
                    .filter(|&i| i != 3)
                    .all(|i| net.view(i, 3) == Liveness::Down)
            })
            .expect("down within 5 s");
        // The shortest suspicion and a tick; with two confirmations it would be 1.62 s.
        assert!(
            (1_000..=1_100).contains(&down_at),
            "down after {down_at} ms"
        );
        for i in (0..8).filter(|&i| i != 3) {
            for j in (0..8).filter(|&j| j != 3) {
                assert_eq!(net.view(i, j), Liveness::Alive, "{i} sees {j}");
            }
        }
    }

    /// A node cut off alone finds every peer down in bounded time: its local health slows
    /// its probes (at most 4×), and it probes each silent member once, not again at once
    /// after its own suspicion of it (which doubled the time).
    #[test]
    fn a_node_cut_off_alone_finds_its_peers_down_one_slowed_probe_each() {
        let n = 7;
        let mut net = Net::new(n);
        net.run(3_000);
        net.component[0] = 1;
        let all_down = net
            .ms_until(60_000, |net| {
                (1..n).all(|j| net.view(0, j) == Liveness::Down)
            })
            .expect("every peer down within 60 s");
        eprintln!("cut off alone: {} peers down after {all_down} ms", n - 1);
        // Six probes at up to 4 s each (local health at its most), then the last suspicion
        // (4 s: nobody confirms it), with slack for the first periods at full speed.
        assert!(all_down <= 32_000, "{all_down} ms");
    }

    #[test]
    fn the_sides_of_a_partition_hold_each_other_down_and_find_each_other_at_the_heal() {
        let mut net = Net::new(6);
        net.run(3_000);
        for i in 0..2 {
            net.component[i] = 1;
        }
        net.run(20_000);
        assert_eq!(net.view(0, 4), Liveness::Down);
        assert_eq!(net.view(4, 1), Liveness::Down);
        assert_eq!(net.view(0, 1), Liveness::Alive);
        assert_eq!(net.view(4, 5), Liveness::Alive);
        net.component = vec![0; 6];
        // The down-member pings find the other side; refutations spread.
        let mut healed = false;
        for _ in 0..200 {
            net.run(100);
            healed = (0..6).all(|i| (0..6).all(|j| net.view(i, j) == Liveness::Alive));
            if healed {
                break;
            }
        }
        assert!(
            healed,
            "every member alive everywhere within 20 s of the heal"
        );
        assert!(net.nodes[0].incarnation() > 0, "n0 refuted its down state");
    }

    #[test]
    fn a_member_suspected_for_lost_messages_refutes_and_is_never_down() {
        let mut net = Net::new(5);
        net.run(3_000);
        // n2's links lose everything for 1.2 s: long enough for a failed probe, far shorter
        // than a suspicion.
        net.component[2] = 7;
        net.run(1_200);
        net.component[2] = 0;
        for _ in 0..100 {
            net.run(100);
            for i in 0..5 {
                assert_ne!(net.view(i, 2), Liveness::Down, "{i} wrote n2 off");
            }
        }
        assert!((0..5).all(|i| net.view(i, 2) == Liveness::Alive));
    }

    #[test]
    fn suspicion_shrinks_as_members_confirm_it() {
        let swim = Swim::new(id(0), SwimConfig::default(), Millis(0), 0);
        let alone = swim.suspicion_ms(5, 1);
        let confirmed = swim.suspicion_ms(5, 1 + SUSPICION_CONFIRMATIONS);
        assert_eq!(alone, 4_000);
        assert_eq!(confirmed, 1_000);
        assert!(swim.suspicion_ms(5, 2) < alone && swim.suspicion_ms(5, 2) > confirmed);
        // Larger clusters wait longer (log10 n).
        assert_eq!(swim.suspicion_ms(1_000, 1 + SUSPICION_CONFIRMATIONS), 3_000);
    }

    #[test]
    fn updates_about_non_members_and_oversized_ids_are_not_taken() {
        let mut swim = Swim::new(id(0), SwimConfig::default(), Millis(0), 0);
        swim.set_members(&[id(0), id(1)]);
        let message = SwimMessage {
            kind: Kind::Ping,
            seq: 1,
            inc: 0,
            target: None,
            updates: vec![
                Update {
                    node: NodeId("stranger".into()),
                    inc: 9,
                    state: UpdateState::Down,
                    by: None,
                },
                Update {
                    node: NodeId("x".repeat(MAX_ID_BYTES + 1)),
                    inc: 9,
                    state: UpdateState::Down,
                    by: None,
                },
            ],
        };
        swim.handle(&id(1), message.clone(), Millis(10));
        assert_eq!(swim.members.len(), 1);
        // A stranger's own message is ignored outright: no answer.
        while swim.poll_send().is_some() {}
        swim.handle(&NodeId("stranger".into()), message, Millis(20));
        assert!(swim.poll_send().is_none());
    }

    #[test]
    fn a_member_told_it_is_down_pings_the_teller_back_with_its_refutation() {
        let mut swim = Swim::new(id(0), SwimConfig::default(), Millis(0), 0);
        swim.set_members(&[id(0), id(1), id(2)]);
        while swim.poll_send().is_some() {}
        let told = |by: usize, inc: u64| SwimMessage {
            kind: Kind::Ack,
            seq: 7,
            inc: 0,
            target: None,
            updates: vec![Update {
                node: id(0),
                inc,
                state: UpdateState::Down,
                by: Some(id(by)),
            }],
        };
        // An ack that says this node is down: it refutes, and the ack's sender hears the
        // refutation at once, not with the next probe.
        swim.handle(&id(1), told(1, 0), Millis(10));
        assert_eq!(swim.incarnation(), 1);
        let sent: Vec<(NodeId, SwimMessage)> = std::iter::from_fn(|| swim.poll_send()).collect();
        assert!(
            sent.iter()
                .any(|(to, m)| *to == id(1) && m.kind == Kind::Ping && m.inc == 1),
            "{sent:?}"
        );
        // Another member still holding the old verdict is answered too, though the
        // incarnation was raised already.
        swim.handle(&id(2), told(2, 0), Millis(20));
        assert_eq!(swim.incarnation(), 1);
        let sent: Vec<(NodeId, SwimMessage)> = std::iter::from_fn(|| swim.poll_send()).collect();
        assert!(
            sent.iter()
                .any(|(to, m)| *to == id(2) && m.kind == Kind::Ping && m.inc == 1),
            "{sent:?}"
        );
        // A message that holds nothing against this node gets no extra ping.
        let plain = SwimMessage {
            updates: Vec::new(),
            ..told(1, 0)
        };
        swim.handle(&id(1), plain, Millis(30));
        assert!(swim.poll_send().is_none());
    }
}
