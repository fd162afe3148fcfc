//! # warren-simulations: many peers, one process, virtual time
//!
//! A [`Simulation`] runs N nodes, each a [`warren_core::machine::NodeMachine`] — the sans-IO
//! node `warren-node` itself drives — over a simulated network, a simulated container runtime
//! reconciled by [`warren_core::Supervisor`], and a discrete-event virtual clock
//! (microseconds, a priority queue of `(time, sequence)` events). Nothing of the node's logic
//! is copied here: the simulator only delivers inputs and carries out outputs (DESIGN §2).
//!
//! What is modelled:
//! - **Nodes**: up or crashed (a crash loses nothing persisted: a restart loads every persisted
//!   chunk into a fresh replica and a fresh machine with a new actor id and a new monotonic
//!   clock origin); process pauses (messages and ticks wait); clock rates drifting up to 2×;
//!   a virtual cost for each handled message, so queueing shows in latency.
//! - **Containers**: per node, slot → generation, running or stopped; reconciled every second
//!   and at the first tick after the document changed; container crashes; a crash of the node
//!   stops its containers (the restart starts them again).
//! - **Network** ([`NetConfig`]): geographic delays (regions), jitter (which reorders), loss and
//!   duplication of gossip, partitions into any number of components over time. Direct
//!   messages (SWIM, reports, the broadcast tree that carries changes: the node's own
//!   protocols, run unchanged) go to their one target; lease renewals follow a gossipsub-like
//!   mesh of degree D (receivers forward a renewal they have not seen to their mesh peers).
//!   Direct messages and sync requests
//!   travel a reliable stream (loss costs retransmissions) and time out when the peer is
//!   unreachable. A pair of nodes cut for longer than the connection timeout reconnects when
//!   it meets again, and each side's machine is told (`handle_connected`), so they sync at once.
//! - **Writes** go through `NodeMachine::write` and are acknowledged once the flushing persist
//!   they queued was carried out.
//!
//! Invariants (DESIGN §7) are checked by a periodic probe and at the end: see [`Report`].
//! Everything random comes from the seed, so a seed replays exactly ([`Report::trace_hash`]).
//!
//! [`broadcast`] runs the node's broadcast tree alone over up to 10,000 peers, where the
//! whole node is too slow to simulate.

pub mod broadcast;
mod engine;
pub mod net;
mod report;
pub mod scenario;

pub use engine::{Fault, Simulation};
pub use net::NetConfig;
pub use report::{percentile, HealFigures, Report};
pub use scenario::{Failure, Params, Scenario, Step, Target, UpdatePlan, WriteKind};
pub use warren_core::core::RuleBreak;

/// Runs scenario `name` over `nodes` nodes with `seed` (duration: its default unless given).
/// `None` for an unknown scenario name.
pub fn run(name: &str, nodes: usize, seed: u64, duration_ms: Option<u64>) -> Option<Report> {
    run_breaking(name, nodes, seed, duration_ms, RuleBreak::None)
}

/// [`run`] with one of the node's rules swapped for a deliberately wrong one (see
/// [`RuleBreak`]): the experiment that shows the invariant checks catch a broken lease, lease
/// merge, heal keep or fencing rule. `RuleBreak::None` is [`run`].
pub fn run_breaking(
    name: &str,
    nodes: usize,
    seed: u64,
    duration_ms: Option<u64>,
    rule_break: RuleBreak,
) -> Option<Report> {
    let mut scenario = scenario::by_name(name, nodes, duration_ms, seed)?;
    scenario.params.machine.core.rule_break = rule_break;
    Some(Simulation::new(scenario, seed).run())
}
