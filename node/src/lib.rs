//! # warren-node: one Warren peer
//!
//! - [`core`]: the sans-IO decision core (membership view, lease, scheduler, reconcile).
//!   Events and time in, actions out; no IO. The daemon and `warren-simulations` drive it.
//! - [`daemon`]: `warren-node up`. Wires the core to the desired-state document
//!   (`warren-crdt`), the libp2p mesh (`warren-mesh`), the container runtime
//!   (`warren-runtime`) and the HTTP API every peer serves.

pub mod core;
pub mod daemon;
