//! What a run measured and which invariants it broke.

use std::fmt::Write as _;

/// What one heal led to. Times in virtual milliseconds after the heal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealFigures {
    /// When the heal happened (ms from the start).
    pub at_ms: u64,
    /// Until every up node followed one lease held by exactly one node.
    pub leader_ms: Option<u64>,
    /// Until every up node held the same document.
    pub converged_ms: Option<u64>,
    /// Until replica counts were right (after convergence).
    pub replicas_ms: Option<u64>,
    /// Containers started in the settle window after the heal.
    pub started: u64,
    /// Running containers stopped in that window.
    pub stopped: u64,
    /// Desired replicas of live services at the end of the window.
    pub replicas_total: u64,
    /// Running copies beyond one per slot at the heal.
    pub duplicates: u64,
    /// Slots seen without a running copy during the window (invariant 6a: 0).
    pub zero_windows: u64,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Nodes.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Scheduled duration (ms), before the final heal and settle.
    pub duration_ms: u64,
    /// Virtual time simulated (ms), settle included.
    pub virtual_ms: u64,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// Hash of every event in order: equal for equal seeds.
    pub trace_hash: u64,
    /// Invariant violations, each with its virtual time.
    pub violations: Vec<String>,
    /// Events handled.
    pub events: u64,
    /// Messages sent (gossip copies and sync messages).
    pub messages: u64,
    /// Writes acknowledged.
    pub writes_acked: usize,
    /// For each change and each peer that got it by gossip: time from the write to the end of
    /// the peer's apply, in µs.
    pub latencies_us: Vec<u64>,
    /// For each change that reached every node by gossip: time until the last one applied it.
    pub full_coverage_us: Vec<u64>,
    /// Changes published during the schedule.
    pub changes_tracked: u64,
    /// Gossip copies of those changes delivered (duplicates included).
    pub copies: u64,
    /// Lease holder crash → new holder and right replica counts, in ms.
    pub failovers_ms: Vec<u64>,
    /// One entry per heal.
    pub heals: Vec<HealFigures>,
    /// Containers started (created or restarted) in the whole run.
    pub containers_started: u64,
    /// Running containers stopped by reconcile in the whole run.
    pub containers_stopped: u64,
    /// Runs of containers that failed on a failing node ([`crate::Step::FailingNode`]) or of a
    /// failing image ([`crate::UpdatePlan::failing`]): exited with code 1 or turned unhealthy.
    pub containers_failed: u64,
    /// Probes at which the lease check (invariant 3: one holder per component) ran while the
    /// network was split into more than one component.
    pub lease_checks_split: u64,
    /// Rollouts judged by the rollout invariants (issue 15: never two rollouts of one
    /// service, start-first keeps all but `parallelism` slots healthy, a paused rollout
    /// leaves the slots not updated on their generation), summed over probes.
    pub rollout_checks: u64,
    /// Direct messages delivered (SWIM, reports, the broadcast tree) and their bytes, all
    /// nodes together.
    pub direct_messages: u64,
    /// See `direct_messages`.
    pub direct_bytes: u64,
    /// Lease renewals delivered (first copies), all nodes together.
    pub lease_copies: u64,
    /// Failure detection summed over the machines up at the end (a restart starts a node's
    /// counters again): probes that failed, members declared down by the node's own
    /// suspicion, suspicions of itself refuted.
    pub swim: warren_core::core::SwimStats,
}

/// The `p`-th percentile (0–100) of `values`, nearest rank; `None` when empty.
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "-".into(), |u| format!("{:.1} ms", u as f64 / 1000.0))
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Copies of each change delivered per peer.
    pub fn copies_per_peer(&self) -> f64 {
        if self.changes_tracked == 0 || self.nodes < 2 {
            return 0.0;
        }
        self.copies as f64 / self.changes_tracked as f64 / (self.nodes - 1) as f64
    }

    /// Wall-clock seconds per virtual second.
    pub fn wall_per_virtual(&self) -> f64 {
        self.wall_secs / (self.virtual_ms.max(1) as f64 / 1000.0)
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} · {} nodes · seed {} · {:.1} virtual s in {:.2} wall s ({:.3} wall s per virtual s)",
            self.scenario,
            self.nodes,
            self.seed,
            self.virtual_ms as f64 / 1000.0,
            self.wall_secs,
            self.wall_per_virtual()
        );
        let _ = writeln!(
            s,
            "  events {} · messages {} · writes acknowledged {} · trace {:016x}",
            self.events, self.messages, self.writes_acked, self.trace_hash
        );
        if self.rollout_checks > 0 {
            let _ = writeln!(
                s,
                "  rollouts judged {} times (issue 15's invariants)",
                self.rollout_checks
            );
        }
        if !self.latencies_us.is_empty() {
            let _ = writeln!(
                s,
                "  change propagation per peer: p50 {} · p99 {} · max {}; to all peers p99 {} ({} of {} changes reached all by gossip); copies per peer {:.2}",
                ms(percentile(&self.latencies_us, 50.0)),
                ms(percentile(&self.latencies_us, 99.0)),
                ms(percentile(&self.latencies_us, 100.0)),
                ms(percentile(&self.full_coverage_us, 99.0)),
                self.full_coverage_us.len(),
                self.changes_tracked,
                self.copies_per_peer()
            );
        }
        for f in &self.failovers_ms {
            let _ = writeln!(s, "  leader failover: {f} ms");
        }
        for h in &self.heals {
            let o = |v: Option<u64>| v.map_or_else(|| "never".into(), |v| format!("{v} ms"));
            let _ = writeln!(
                s,
                "  heal at {} ms: one leader {} · converged {} · replicas right {} · churn {} started, {} stopped for {} duplicates, {} zero-replica windows ({} replicas)",
                h.at_ms,
                o(h.leader_ms),
                o(h.converged_ms),
                o(h.replicas_ms),
                h.started,
                h.stopped,
                h.duplicates,
                h.zero_windows,
                h.replicas_total
            );
        }
        let node_secs = self.nodes as f64 * self.virtual_ms as f64 / 1000.0;
        let _ = writeln!(
            s,
            "  per node: {:.1} direct messages/s, {:.2} KB/s; {:.1} lease renewals/s · SWIM: {} failed probes, {} down verdicts, {} refutations",
            self.direct_messages as f64 / node_secs,
            self.direct_bytes as f64 / node_secs / 1000.0,
            self.lease_copies as f64 / node_secs,
            self.swim.failed_probes,
            self.swim.downs,
            self.swim.refutations
        );
        let _ = writeln!(
            s,
            "  containers started {} · stopped {} · failed (failing node or image) {}",
            self.containers_started, self.containers_stopped, self.containers_failed
        );
        if self.violations.is_empty() {
            let _ = writeln!(s, "  invariants: all held");
        } else {
            let _ = writeln!(s, "  invariants: {} violation(s)", self.violations.len());
            for v in &self.violations {
                let _ = writeln!(s, "    FAIL {v}");
            }
        }
        s
    }
}
