//! `warren-testnet`: real `warren-node` processes in Linux network namespaces on one machine.
//!
//! The simulations (`warren-simulations`) drive the sans-IO core with virtual time; this crate
//! is the other half of the evidence: actual daemons, actual QUIC over actual (virtual) links,
//! and partitions made by firewall rules, so the invariants of DESIGN §7 can be checked on the
//! real binaries.
//!
//! Today it holds the [`netns`] module — a [`Testnet`] of N namespaces on a bridge in
//! `198.18.0.0/24`, with [`Testnet::partition`], [`Testnet::heal`], [`Testnet::exec`] and a
//! teardown that removes exactly what it created — and the integration test
//! `tests/partition.rs`, which runs three `warren-node`s through a partition and its heal.
//! Everything here needs root (namespaces, links, iptables).

pub mod cluster;
pub mod measure;
pub mod netns;
mod overlay;
pub mod scenario;
pub mod topology;

pub use cluster::{Bins, Cluster, UpOptions};
pub use netns::{Error, Testnet};
pub use scenario::{Scenario, ScenarioOptions, Verdict};

/// Whether this process runs as root (effective uid 0), which the testnet needs.
pub fn is_root() -> bool {
    netns::effective_uid() == 0
}
