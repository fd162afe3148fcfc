//! The broadcast tree alone, at sizes the whole-node simulation cannot reach (10,000 peers).
//!
//! Each simulated peer runs the node's own [`Plumtree`] (`node/core/src/core/plumtree.rs`,
//! unchanged) over the [`NetConfig`] delay model of the whole-node simulation; nothing else of
//! the node runs. What stands in for the rest of the node, and how:
//!
//! - **Round trips** come from SWIM's probes in the daemon: one member a second. Here each
//!   peer learns the round trip of one random member a second (twice the link's base delay,
//!   which is what SWIM's smoothed estimate converges to) and hands the tree those it knows
//!   ([`Plumtree::optimize`] every tick, as the machine does).
//! - **Members**: the daemon hands the tree every live member; at 10,000 peers that is 10^8
//!   ids in memory. Here each peer hands it a random sample of [`SAMPLE`] members plus the
//!   ones it measured and its neighbours: the tree only draws its random neighbours from the
//!   list (a uniform pick from a uniform sample is a uniform pick; so are a broadcast's
//!   seeds, whose number comes from the count of live members handed beside the sample) and
//!   ranks the measured ones by round trip.
//!   Nobody fails: there is no churn of membership.
//! - **Loss**: the tree's messages are direct messages on the mesh's reliable QUIC streams,
//!   so a lost packet costs a retransmission (`rto_ms`, repeated while lost), never the
//!   message, as in the whole-node simulation.
//! - **Ticks** when the tree asks ([`Plumtree::poll_timeout`]) and once a second.
//! - **Processing** costs nothing; the message bytes are the daemon's JSON (`Direct::Plum`
//!   adds a few bytes of envelope, not counted).
//!
//! Broadcasts start from random peers after a warm-up (the overlay re-shapes by round trip
//! meanwhile), one every `every_ms`; the report gives, over all (broadcast, peer) pairs, the
//! delivery latency percentiles, the share delivered within 2 s, the time to reach every peer,
//! and the copies and messages per peer.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use warren_core::core::{Millis, PlumConfig, PlumMessage, Plumtree};
use warren_crdt::NodeId;

use crate::net::{mix, Network};
use crate::report::percentile;
use crate::NetConfig;

/// Random members each peer hands its tree (besides the ones it measured).
pub const SAMPLE: usize = 100;

const MS: u64 = 1_000;

/// What to run. Times in milliseconds.
#[derive(Debug, Clone)]
pub struct BroadcastParams {
    /// Peers.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// The network (delays, loss as retransmissions).
    pub net: NetConfig,
    /// The tree's settings (the daemon's defaults unless changed).
    pub plum: PlumConfig,
    /// Quiet time before the first broadcast: the peers measure round trips and re-shape.
    pub warm_ms: u64,
    /// Broadcasts measured.
    pub broadcasts: usize,
    /// Time between two broadcasts.
    pub every_ms: u64,
    /// Bytes of each broadcast (a change of a service is a few hundred; at least 8, its index).
    pub payload: usize,
}

impl Default for BroadcastParams {
    fn default() -> Self {
        Self {
            nodes: 1_000,
            seed: 1,
            net: NetConfig::default(),
            plum: PlumConfig::default(),
            warm_ms: 60_000,
            broadcasts: 30,
            every_ms: 500,
            payload: 400,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct BroadcastReport {
    /// The parameters.
    pub params: BroadcastParams,
    /// Delivery latency over all (broadcast, peer) pairs delivered, ms: p50, p99, p99.99, max.
    pub latency_ms: [u64; 4],
    /// Per broadcast, the time until the last peer had it (ms): p50, p99 (max when fewer than
    /// 100 broadcasts), max; `None` when a broadcast missed a peer.
    pub to_all_ms: Option<[u64; 3]>,
    /// What no broadcast protocol beats in this delay model: per broadcast, the time until
    /// the last peer is reached along shortest paths of base link delays from its origin
    /// (every peer forwarding at once to every other, no jitter, no loss), ms: p50, p99, max.
    /// Computed up to [`BOUND_MAX_NODES`] peers (`None` above: Dijkstra over every pair).
    pub bound_to_all_ms: Option<[u64; 3]>,
    /// Share of (broadcast, peer) pairs delivered within 2 s, and delivered at all.
    pub within_2s: f64,
    /// Share of (broadcast, peer) pairs delivered by the end.
    pub delivered: f64,
    /// Full copies (`Gossip`) received per peer per broadcast.
    pub copies: f64,
    /// Messages of the tree (any kind) sent per peer per second, from the first broadcast to
    /// 10 s after the last.
    pub messages_per_node_s: f64,
    /// Bytes of those messages (their JSON) per peer per second.
    pub bytes_per_node_s: f64,
    /// Near neighbours swapped for nearer ones, per peer, over the whole run.
    pub swaps_per_node: f64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
}

impl BroadcastReport {
    /// One paragraph for people.
    pub fn summary(&self) -> String {
        let p = &self.params;
        let [p50, p99, p9999, max] = self.latency_ms;
        let to_all = match self.to_all_ms {
            Some([a, b, c]) => format!("to all peers p50 {a} ms · p99 {b} ms · max {c} ms"),
            None => "some broadcast missed a peer".into(),
        };
        let bound = match self.bound_to_all_ms {
            Some([a, b, c]) => format!(
                "\n  lower bound to all peers (shortest paths from the origin): p50 {a} ms · p99 {b} ms · max {c} ms"
            ),
            None => String::new(),
        };
        format!(
            "broadcast tree · {} peers · seed {} · loss {:.0} % · {} broadcasts after {} s warm-up · {:.1} s wall\n  \
             per peer: p50 {p50} ms · p99 {p99} ms · p99.99 {p9999} ms · max {max} ms; {to_all}{bound}\n  \
             within 2 s: {:.4} % of (broadcast, peer) pairs; delivered: {:.4} %\n  \
             copies per peer {:.2} · {:.1} messages and {:.0} bytes per peer per s · {:.1} swaps per peer\n",
            p.nodes,
            p.seed,
            p.net.loss * 100.0,
            p.broadcasts,
            p.warm_ms / 1000,
            self.wall_s,
            self.within_2s * 100.0,
            self.delivered * 100.0,
            self.copies,
            self.messages_per_node_s,
            self.bytes_per_node_s,
            self.swaps_per_node,
        )
    }
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        message: PlumMessage,
    },
    /// The tree's own deadline (`seq` drops superseded ones).
    Tick {
        node: usize,
        seq: u64,
    },
    /// Once a second: learn a round trip, optimise.
    Period {
        node: usize,
    },
    Broadcast {
        k: usize,
    },
}

/// Most peers for which a report computes [`BroadcastReport::bound_to_all_ms`].
pub const BOUND_MAX_NODES: usize = 2_000;

struct Peer {
    tree: Plumtree,
    rtt: BTreeMap<NodeId, u64>,
    sample: Vec<NodeId>,
    tick_seq: u64,
    next_tick: u64,
}

struct Sim {
    params: BroadcastParams,
    net: Network,
    rng: StdRng,
    ids: Vec<NodeId>,
    peers: Vec<Peer>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    seq: u64,
    now: u64,
    /// Per broadcast: start time, origin and each peer's delivery time.
    started: Vec<u64>,
    origins: Vec<usize>,
    arrivals: Vec<Vec<Option<u64>>>,
    measuring: bool,
    messages: u64,
    bytes: u64,
    copies: u64,
    window_start: u64,
}

/// Runs the broadcast tree alone over `params.nodes` peers.
pub fn run(params: BroadcastParams) -> BroadcastReport {
    let wall = std::time::Instant::now();
    let n = params.nodes.max(2);
    let mut rng = StdRng::seed_from_u64(mix(params.seed ^ 0xB20A_DCA5));
    let mut net_config = params.net.clone();
    // The gossipsub mesh of the whole-node simulation is not used here.
    net_config.mesh_degree = 0;
    let net = Network::new(net_config, n, params.seed, &mut rng);
    let ids: Vec<NodeId> = (0..n).map(|i| NodeId(format!("n{i:05}"))).collect();
    let peers = (0..n)
        .map(|i| {
            let sample: Vec<NodeId> = ids
                .choose_multiple(&mut rng, SAMPLE.min(n - 1) + 1)
                .filter(|id| **id != ids[i])
                .take(SAMPLE.min(n - 1))
                .cloned()
                .collect();
            let mut tree = Plumtree::new(ids[i].clone(), params.plum, mix(params.seed ^ i as u64));
            tree.set_members_sampled(&sample, Some(n));
            Peer {
                tree,
                rtt: BTreeMap::new(),
                sample,
                tick_seq: 0,
                next_tick: u64::MAX,
            }
        })
        .collect();
    let broadcasts = params.broadcasts;
    let mut sim = Sim {
        params,
        net,
        rng,
        ids,
        peers,
        queue: BinaryHeap::new(),
        events: Vec::new(),
        free: Vec::new(),
        seq: 0,
        now: 0,
        started: vec![0; broadcasts],
        origins: vec![0; broadcasts],
        arrivals: vec![vec![None; n]; broadcasts],
        measuring: false,
        messages: 0,
        bytes: 0,
        copies: 0,
        window_start: 0,
    };
    for i in 0..n {
        sim.flush(i);
        let first = sim.rng.gen_range(0..1_000 * MS);
        sim.push(first, Ev::Period { node: i });
    }
    for k in 0..broadcasts {
        let at = (sim.params.warm_ms + k as u64 * sim.params.every_ms) * MS;
        sim.push(at, Ev::Broadcast { k });
    }
    let end = (sim.params.warm_ms + broadcasts as u64 * sim.params.every_ms + 10_000) * MS;
    while let Some(Reverse((t, _, slot))) = sim.queue.pop() {
        if t > end {
            break;
        }
        sim.now = t;
        let Some(ev) = sim.events[slot].take() else {
            continue;
        };
        sim.free.push(slot);
        sim.handle(ev);
    }
    sim.report(wall.elapsed().as_secs_f64())
}

impl Sim {
    fn push(&mut self, at: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(ev);
                slot
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    fn local(&self) -> Millis {
        Millis(self.now / MS)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, message } => {
                let now = self.local();
                if matches!(message, PlumMessage::Gossip { .. }) && self.measuring {
                    self.copies += 1;
                }
                let from_id = self.ids[from].clone();
                self.peers[to].tree.handle(&from_id, message, now);
                self.drain_deliveries(to);
                self.flush(to);
            }
            Ev::Tick { node, seq } => {
                if seq != self.peers[node].tick_seq {
                    return;
                }
                self.peers[node].next_tick = u64::MAX;
                let now = self.local();
                self.peers[node].tree.tick(now);
                self.flush(node);
            }
            Ev::Period { node } => {
                self.learn_rtt(node);
                let now = self.local();
                let peer = &mut self.peers[node];
                let rtt = &peer.rtt;
                peer.tree.optimize(now, |m| rtt.get(m).copied());
                peer.tree.tick(now);
                self.flush(node);
                self.push(self.now + 1_000 * MS, Ev::Period { node });
            }
            Ev::Broadcast { k } => {
                if k == 0 {
                    self.measuring = true;
                    self.window_start = self.now;
                }
                let origin = self.rng.gen_range(0..self.peers.len());
                // The first 8 bytes say which broadcast it is.
                let mut data = vec![0u8; self.params.payload.max(8)];
                self.rng.fill(&mut data[..]);
                data[..8].copy_from_slice(&(k as u64).to_le_bytes());
                self.started[k] = self.now;
                self.origins[k] = origin;
                self.arrivals[k][origin] = Some(self.now);
                let now = self.local();
                self.peers[origin].tree.broadcast(data, now);
                self.flush(origin);
            }
        }
    }

    /// One member's round trip measured, as one SWIM probe a second does; it joins the
    /// members the tree knows.
    fn learn_rtt(&mut self, i: usize) {
        let n = self.peers.len();
        let j = self.rng.gen_range(0..n);
        if j == i {
            return;
        }
        // Both ways: twice the base delay and, on average, half the jitter each way.
        let base = self.net.base_us(i, j);
        let rtt_ms = (2 * base + (self.net.config.jitter * base as f64) as u64) / MS;
        let id = self.ids[j].clone();
        let peer = &mut self.peers[i];
        if peer.rtt.insert(id.clone(), rtt_ms).is_none() && !peer.sample.contains(&id) {
            peer.sample.push(id);
            // The sample, and the neighbours the tree has: the daemon hands it every live
            // member, so a neighbour is never dropped for being left out of the list.
            let (eager, lazy) = peer.tree.neighbours();
            let mut members: Vec<NodeId> = peer.sample.clone();
            members.extend(eager.iter().chain(lazy).cloned());
            peer.tree
                .set_members_sampled(&members, Some(self.ids.len()));
        }
    }

    fn drain_deliveries(&mut self, i: usize) {
        while let Some((_, data)) = self.peers[i].tree.poll_deliver() {
            let mut k = [0u8; 8];
            k.copy_from_slice(&data[..8]);
            let k = u64::from_le_bytes(k) as usize;
            if let Some(slot) = self.arrivals.get_mut(k).and_then(|a| a.get_mut(i)) {
                slot.get_or_insert(self.now);
            }
        }
    }

    /// Sends what peer `i`'s tree queued and arms its next tick.
    fn flush(&mut self, i: usize) {
        while let Some((to, message)) = self.peers[i].tree.poll_send() {
            let Some(j) = to.0[1..].parse::<usize>().ok() else {
                continue;
            };
            if self.measuring {
                self.messages += 1;
                self.bytes += serde_json::to_vec(&message).map_or(0, |b| b.len() as u64);
            }
            let mut delay = self.net.delay_us(i, j, &mut self.rng);
            let loss = self.params.net.loss;
            while loss > 0.0 && self.rng.gen_bool(loss) {
                delay += self.params.net.rto_ms * MS;
            }
            self.push(
                self.now + delay,
                Ev::Deliver {
                    to: j,
                    from: i,
                    message,
                },
            );
        }
        if let Some(due) = self.peers[i].tree.poll_timeout() {
            let at = (due.0 * MS).max(self.now + MS);
            let peer = &mut self.peers[i];
            if at < peer.next_tick {
                peer.tick_seq += 1;
                peer.next_tick = at;
                let seq = peer.tick_seq;
                self.push(at, Ev::Tick { node: i, seq });
            }
        }
    }

    /// The longest of the shortest paths from `origin` to every peer over base link delays
    /// (Dijkstra on the complete graph, O(n²)), µs.
    fn shortest_to_all_us(&self, origin: usize) -> u64 {
        let n = self.peers.len();
        let mut dist = vec![u64::MAX; n];
        let mut done = vec![false; n];
        dist[origin] = 0;
        let mut farthest = 0;
        for _ in 0..n {
            let Some(u) = (0..n).filter(|&i| !done[i]).min_by_key(|&i| dist[i]) else {
                break;
            };
            done[u] = true;
            farthest = farthest.max(dist[u]);
            for v in 0..n {
                if !done[v] {
                    let via = dist[u].saturating_add(self.net.base_us(u, v));
                    if via < dist[v] {
                        dist[v] = via;
                    }
                }
            }
        }
        farthest
    }

    fn report(&self, wall_s: f64) -> BroadcastReport {
        let n = self.peers.len();
        let mut latencies = Vec::new();
        let mut to_all = Vec::new();
        let mut complete = true;
        let (mut within, mut delivered, mut pairs) = (0u64, 0u64, 0u64);
        for (k, arrivals) in self.arrivals.iter().enumerate() {
            let start = self.started[k];
            let mut last = 0;
            for at in arrivals {
                pairs += 1;
                match at {
                    Some(at) => {
                        let ms = (at - start) / MS;
                        latencies.push(ms);
                        delivered += 1;
                        if ms <= 2_000 {
                            within += 1;
                        }
                        last = last.max(ms);
                    }
                    None => complete = false,
                }
            }
            to_all.push(last);
        }
        let pct = |v: &[u64], p: f64| percentile(v, p).unwrap_or(0);
        // From the first broadcast to the end of the run (10 s after the last).
        let window_s =
            (self.params.broadcasts as u64 * self.params.every_ms + 10_000) as f64 / 1_000.0;
        let swaps: u64 = self.peers.iter().map(|p| p.tree.stats().swaps).sum();
        BroadcastReport {
            params: self.params.clone(),
            latency_ms: [
                pct(&latencies, 50.0),
                pct(&latencies, 99.0),
                pct(&latencies, 99.99),
                latencies.iter().copied().max().unwrap_or(0),
            ],
            to_all_ms: complete.then(|| {
                [
                    pct(&to_all, 50.0),
                    pct(&to_all, 99.0),
                    to_all.iter().copied().max().unwrap_or(0),
                ]
            }),
            bound_to_all_ms: (n <= BOUND_MAX_NODES).then(|| {
                let mut bound: Vec<u64> = self
                    .origins
                    .iter()
                    .map(|&o| self.shortest_to_all_us(o) / MS)
                    .collect();
                bound.sort_unstable();
                [
                    pct(&bound, 50.0),
                    pct(&bound, 99.0),
                    bound.last().copied().unwrap_or(0),
                ]
            }),
            within_2s: within as f64 / pairs.max(1) as f64,
            delivered: delivered as f64 / pairs.max(1) as f64,
            copies: self.copies as f64 / ((n - 1) * self.params.broadcasts).max(1) as f64,
            messages_per_node_s: self.messages as f64 / n as f64 / window_s.max(1e-9),
            bytes_per_node_s: self.bytes as f64 / n as f64 / window_s.max(1e-9),
            swaps_per_node: swaps as f64 / n as f64,
            wall_s,
        }
    }
}
