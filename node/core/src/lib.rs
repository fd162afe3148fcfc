//! # warren-core: one Warren peer, sans IO
//!
//! - [`core`]: the decision core (membership view, lease, scheduler, reconcile).
//! - [`machine`]: the node above the core: sync dialogues, gossip, heartbeats, admission and
//!   operator writes, with the time as a value and outputs as values.
//! - [`protocol`]: messages between nodes (heartbeats, task status, sync framing).
//! - [`token`], [`api_token`]: join tokens and operator tokens; [`secrets`]: sealing.
//! - [`patch`]: partial service updates and cluster settings changes.
//! - [`logs`]: `service logs` across nodes, the pure part.
//! - [`system`]: what a node says of its machine (capacity, usage, GPUs).
//! - [`engine`]: the plain data shared with the container runtime.

pub mod api_token;
pub mod core;
pub mod engine;
pub mod logs;
pub mod machine;
pub mod patch;
pub mod protocol;
pub mod secrets;
pub mod system;
pub mod token;
