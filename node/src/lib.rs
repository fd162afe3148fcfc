//! # warren-node: one Warren peer
//!
//! The sans-IO node lives in `warren-core` and is re-exported here under its old paths, so
//! `warren_node::machine::NodeMachine` and `warren_core::machine::NodeMachine` are one type:
//!
//! - [`core`]: the sans-IO decision core (membership view, lease, scheduler, reconcile).
//!   Events and time in, actions out; no IO. The daemon and `warren-simulations` drive it.
//! - [`machine`]: the sans-IO node above the core: sync dialogues, gossip, SWIM, reports,
//!   admission and operator writes, with the time as a value and outputs as values. The
//!   daemon and the simulator both drive it.
//! - [`join`]: a new member catching up with the cluster's document after its admission,
//!   in sync round trips, before its machine starts.
//! - [`patch`]: partial service updates (`service update NAME --flag ...`) and cluster
//!   settings changes (`cluster set KEY VALUE`).
//! - [`api_token`]: operator tokens for the remote API, stored as digests; the pure check.
//! - [`logs`]: `service logs` across nodes, the pure part: requests, answers, cursors and
//!   the merge of many nodes' answers into pages in time order.
//!
//! What is this crate's own:
//!
//! - [`daemon`]: `warren-node up`. Wires the core to the desired-state document
//!   (`warren-crdt`), the libp2p mesh (`warren-mesh`), the container runtime
//!   (`warren-runtime`) and the HTTP API every peer serves.
//! - [`system`]: the probes of this machine (`/proc`, `nvidia-smi`), over the pure types
//!   and parsers of [`warren_core::system`].

pub use warren_core::{
    api_token, core, join, logs, machine, names, overlay, patch, protocol, secrets, token,
};

pub mod daemon;
pub mod system;
