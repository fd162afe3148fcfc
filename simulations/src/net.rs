//! The simulated network: geographic link delays, jitter, loss, duplication, partitions into
//! components, and a gossipsub-like mesh for the gossip channels (the lease renewals).

use rand::rngs::StdRng;
use rand::Rng;

/// How the network behaves. Times in milliseconds, probabilities in `0.0..=1.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Regions; node `i` lives in region `i % regions`.
    pub regions: usize,
    /// Base one-way delay between two nodes of one region: uniform in this range, fixed per pair.
    pub intra_region_ms: (u64, u64),
    /// Base one-way delay between two regions: uniform in this range, fixed per region pair
    /// (each node pair adds up to 10% of its own).
    pub inter_region_ms: (u64, u64),
    /// Jitter: each message adds a uniform delay of up to this fraction of its link's base
    /// delay. Jitter is what reorders messages.
    pub jitter: f64,
    /// Probability that one gossip message (change or heartbeat) is lost.
    pub loss: f64,
    /// Probability that one gossip message is delivered twice.
    pub duplicate: f64,
    /// Gossipsub mesh degree D: each node keeps about D mesh peers (random, symmetric).
    pub mesh_degree: usize,
    /// A connection unreachable for this long is closed; when the peers meet again they
    /// reconnect (and sync at once, as the daemon does on a new connection). Default 5,000:
    /// the mesh's QUIC idle timeout.
    pub conn_timeout_ms: u64,
    /// Redial period: a reconnection happens within this long after a heal or a restart.
    pub redial_ms: u64,
    /// Sync requests travel a reliable stream: a lost packet costs a retransmission after
    /// this long, not the message.
    pub rto_ms: u64,
    /// A sync request with no answer (peer unreachable or down) fails after this long.
    pub sync_timeout_ms: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            regions: 3,
            intra_region_ms: (5, 40),
            inter_region_ms: (50, 250),
            jitter: 0.2,
            loss: 0.0,
            duplicate: 0.0,
            mesh_degree: 6,
            conn_timeout_ms: 5_000,
            redial_ms: 2_000,
            rto_ms: 200,
            sync_timeout_ms: 10_000,
        }
    }
}

/// A deterministic 64-bit mix (splitmix64).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn uniform(h: u64, (lo, hi): (u64, u64)) -> u64 {
    if hi <= lo {
        return lo;
    }
    lo + h % (hi - lo + 1)
}

/// The network state of one simulation.
#[derive(Debug)]
pub(crate) struct Network {
    pub(crate) config: NetConfig,
    seed: u64,
    /// Component of each node: messages cross only within one component.
    pub(crate) component: Vec<u32>,
    /// Mesh peers of each node (sorted, symmetric).
    pub(crate) mesh: Vec<Vec<u32>>,
}

impl Network {
    pub(crate) fn new(config: NetConfig, n: usize, seed: u64, rng: &mut StdRng) -> Self {
        let mut net = Self {
            config,
            seed,
            component: vec![0; n],
            mesh: vec![Vec::new(); n],
        };
        let all: Vec<u32> = (0..n as u32).collect();
        for i in 0..n {
            net.graft(i, &all, rng);
        }
        net
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.mesh[a].binary_search(&(b as u32)).is_ok()
    }

    fn link(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            if let Err(pos) = self.mesh[x].binary_search(&(y as u32)) {
                self.mesh[x].insert(pos, y as u32);
            }
        }
    }

    /// Adds random mesh peers from `candidates` until `i` has D reachable ones (or tries run out).
    /// Peers above 2·D are not taken.
    fn graft(&mut self, i: usize, candidates: &[u32], rng: &mut StdRng) {
        let d = self.config.mesh_degree;
        let reachable = |net: &Self| {
            net.mesh[i]
                .iter()
                .filter(|&&p| net.component[p as usize] == net.component[i])
                .count()
        };
        let mut tries = 0;
        while reachable(self) < d && tries < 20 * d && candidates.len() > 1 {
            tries += 1;
            let j = candidates[rng.gen_range(0..candidates.len())] as usize;
            if j != i && !self.linked(i, j) && self.mesh[j].len() < 2 * d {
                self.link(i, j);
            }
        }
    }

    /// After the components changed: nodes with fewer than D·2/3 reachable mesh peers graft
    /// reachable ones (gossipsub's mesh maintenance), and nodes above 2·D prune links to
    /// peers in other components.
    pub(crate) fn remesh(&mut self, rng: &mut StdRng) {
        let n = self.component.len();
        let d = self.config.mesh_degree;
        for i in 0..n {
            if self.mesh[i].len() > 2 * d {
                let comp = self.component[i];
                let far: Vec<u32> = self.mesh[i]
                    .iter()
                    .copied()
                    .filter(|&p| self.component[p as usize] != comp)
                    .collect();
                for p in far.into_iter().take(self.mesh[i].len() - 2 * d) {
                    self.mesh[i].retain(|&x| x != p);
                    self.mesh[p as usize].retain(|&x| x as usize != i);
                }
            }
        }
        let mut members: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (i, c) in self.component.iter().enumerate() {
            members.entry(*c).or_default().push(i as u32);
        }
        let d_lo = (d * 2).div_ceil(3);
        for i in 0..n {
            let comp = self.component[i];
            let reachable = self.mesh[i]
                .iter()
                .filter(|&&p| self.component[p as usize] == comp)
                .count();
            if reachable < d_lo {
                let candidates = members.get(&comp).cloned().unwrap_or_default();
                self.graft(i, &candidates, rng);
            }
        }
    }

    pub(crate) fn region(&self, i: usize) -> usize {
        i % self.config.regions.max(1)
    }

    /// The fixed base one-way delay between `a` and `b`, in microseconds.
    pub(crate) fn base_us(&self, a: usize, b: usize) -> u64 {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let pair = mix(self.seed ^ mix(lo << 32 | hi));
        let (ra, rb) = (self.region(a), self.region(b));
        let ms_us = |(l, h): (u64, u64)| (l * 1000, h * 1000);
        if ra == rb {
            uniform(pair, ms_us(self.config.intra_region_ms))
        } else {
            let (r1, r2) = (ra.min(rb) as u64, ra.max(rb) as u64);
            let region_pair = mix(self.seed ^ 0x5EED ^ mix(r1 << 32 | r2));
            let base = uniform(region_pair, ms_us(self.config.inter_region_ms));
            base + uniform(pair, (0, base / 10))
        }
    }

    /// One message's delay from `a` to `b`: base plus jitter.
    pub(crate) fn delay_us(&self, a: usize, b: usize, rng: &mut StdRng) -> u64 {
        let base = self.base_us(a, b);
        let jitter = (base as f64 * self.config.jitter) as u64;
        base + if jitter > 0 {
            rng.gen_range(0..=jitter)
        } else {
            0
        }
    }

    pub(crate) fn same_component(&self, a: usize, b: usize) -> bool {
        self.component[a] == self.component[b]
    }

    /// Number of distinct components.
    pub(crate) fn components(&self) -> usize {
        let mut c = self.component.clone();
        c.sort_unstable();
        c.dedup();
        c.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_follow_regions_and_the_mesh_is_symmetric() {
        let mut rng = StdRng::seed_from_u64(1);
        let net = Network::new(NetConfig::default(), 60, 9, &mut rng);
        assert!(net.base_us(0, 3) <= 40_000, "same region");
        assert!(net.base_us(0, 1) >= 50_000, "other region");
        assert_eq!(net.base_us(4, 7), net.base_us(7, 4));
        for (i, peers) in net.mesh.iter().enumerate() {
            assert!(peers.len() >= 5, "node {i} has {} mesh peers", peers.len());
            for p in peers {
                assert!(net.mesh[*p as usize].contains(&(i as u32)));
            }
        }
    }
}
