//! # warren-core: one Warren peer, sans IO
//!
//! Everything a Warren node decides, with nothing it does. A [`NodeMachine`] holds the
//! node's replica of the desired state and its decision [`Core`] (membership, lease,
//! scheduler); a [`Supervisor`] decides what to do to the node's containers. Neither opens a
//! socket, reads a clock, spawns a task or talks to Docker: the time comes in as a value
//! ([`Millis`], a monotonic clock from any origin), events come in as method calls, and what
//! must happen goes out as values for a driver to carry out. The daemon (`warren-node`) is
//! one driver, over tokio, libp2p and Docker; `warren-simulations` is another, over a
//! simulated network and a virtual clock. Both run this very code, so a rule is written once.
//!
//! The crate's dependencies prove it: no tokio, no networking, no TLS, no container engine
//! client (`tests/purity.rs` reads `cargo tree` and fails if one appears).
//!
//! ## Driving a [`NodeMachine`]
//!
//! Like quinn-proto's `Connection`, the machine is a state machine that queues its outputs.
//! A driver feeds it inputs, then drains [`NodeMachine::poll_output`] until it returns
//! `None`, carrying out each [`Output`] **in order** before it feeds the next input:
//!
//! | input | when |
//! |---|---|
//! | [`handle_tick`](NodeMachine::handle_tick) | periodically ([`CoreConfig::tick_ms`], 250 ms in the daemon), or by [`poll_timeout`](NodeMachine::poll_timeout) at the latest: decide (claim or follow the lease, schedule), probe a member (SWIM), renew the lease, send reports and run anti-entropy when due |
//! | [`handle_gossip`](NodeMachine::handle_gossip) | a message on a gossip [`Channel`]: a change (merged into the replica) or the holder's lease renewal |
//! | [`handle_direct`](NodeMachine::handle_direct) | a member's direct message: SWIM (membership, failure detection), a report (its tasks, capacity, usage, engine), a request for reports |
//! | [`handle_sync_request`](NodeMachine::handle_sync_request) | a member's sync request; returns the answer to send back |
//! | [`handle_sync_response`](NodeMachine::handle_sync_response) | the answer (or failure) of a request the machine asked for with [`Output::SyncRequest`] |
//! | [`handle_join`](NodeMachine::handle_join) | a joining node's request; returns the answer to send back (small: the new member then fetches the document by sync, see [`join`]) |
//! | [`handle_connected`](NodeMachine::handle_connected), [`handle_disconnected`](NodeMachine::handle_disconnected), [`handle_listen_addr`](NodeMachine::handle_listen_addr) | the transport's connection and address events |
//! | [`write`](NodeMachine::write) | an operator's [`Write`]; acknowledge it only after the outputs it queued are carried out |
//! | [`set_local_status`](NodeMachine::set_local_status), [`set_engine_status`](NodeMachine::set_engine_status), [`set_usage`](NodeMachine::set_usage), [`set_capacity`](NodeMachine::set_capacity), [`set_gpus`](NodeMachine::set_gpus), [`set_images`](NodeMachine::set_images), [`set_secret_keys`](NodeMachine::set_secret_keys) | what the node knows of itself: its tasks (from its reconcile loop), its engine, its machine, its keys; reported to the members that need it |
//!
//! The outputs:
//!
//! - [`Output::Persist`]: save the replica ([`NodeMachine::state_mut`]); with `flush`, wait
//!   for the disk. A write queues a flushing persist *before* its gossip, so a driver that
//!   carries outputs out in order never announces what it could lose.
//! - [`Output::Publish`]: gossip the bytes on the channel to the members.
//! - [`Output::Send`]: send the bytes to that member as a direct message (may be lost).
//! - [`Output::SyncRequest`]: send the body to that member; feed the answer (or why there is
//!   none) to [`handle_sync_response`](NodeMachine::handle_sync_response).
//! - [`Output::SetMembers`]: the members changed; only they may be heard from now on.
//!
//! After a tick, the driver asks what the node should run: [`NodeMachine::desired`] (the
//! tasks assigned here, minus fenced and invalid ones, and the slots whose copies it must keep
//! or wait for). Its reconcile loop gives that and the containers it lists ([`ActualTask`]) to
//! a [`Supervisor`], whose [`round`](Supervisor::round) returns the [`RuntimeAction`]s to carry
//! out and the task statuses to report back with
//! [`set_local_status`](NodeMachine::set_local_status).
//!
//! Randomness comes in too: choices (the anti-entropy peer) from a generator seeded at
//! [`NodeMachine::new`], secrets (token secrets, data keys, nonces) from a cryptographically
//! secure one, the operating system's unless [`NodeMachine::set_secure_rng`] says otherwise.
//! A simulation seeds both and replays exactly.
//!
//! ```
//! use warren_core::{Channel, MachineConfig, Millis, NodeMachine, Output, Write, WriteAck};
//! use warren_core::{RuntimeAction, Supervisor};
//! use warren_crdt::{ClusterInfo, DesiredState, Member, MemberState, NodeId};
//! use warren_crdt::{ServiceName, ServiceSpec};
//!
//! // A one-member cluster, as `warren-node up --init` founds it.
//! let me = NodeId("12D3KooWFounder".into());
//! let founder = Member {
//!     id: me.clone(), name: "a".into(), addrs: vec![], labels: Default::default(),
//!     capabilities: Default::default(), platform: Default::default(),
//!     admitted_by: me.clone(), admitted_at: 0, state: MemberState::Active,
//!     availability: Default::default(),
//! };
//! let info = ClusterInfo { id: "c1".into(), name: "lab".into(), created_at: 0 };
//! let state = DesiredState::new_cluster(&info, &founder).unwrap();
//! let config = MachineConfig::default();
//! let api = "http://127.0.0.1:7070";
//! let mut machine = NodeMachine::new(me.clone(), "a", api, state, config, Millis(0), 1);
//!
//! // The driver's loop: an input, then every output in order.
//! fn drain(machine: &mut NodeMachine) -> Vec<Output> {
//!     let mut outputs = Vec::new();
//!     while let Some(output) = machine.poll_output() {
//!         outputs.push(output); // a real driver persists, publishes, sends here
//!     }
//!     outputs
//! }
//!
//! // The first tick: alone, this node claims the scheduling lease, gossips the claim and
//! // renews it.
//! machine.handle_tick(Millis(0));
//! let outputs = drain(&mut machine);
//! assert!(outputs.contains(&Output::Persist { flush: true }));
//! let renewal = |o: &Output| matches!(o, Output::Publish { channel: Channel::Lease, .. });
//! assert!(outputs.iter().any(renewal));
//!
//! // A write: persisted (flushed) first, broadcast second (along the broadcast tree, as
//! // direct messages: `Output::Send`; alone, this node has no neighbour to send to),
//! // acknowledged after both.
//! let web = ServiceName::new("web").unwrap();
//! let spec = ServiceSpec { image: "nginx".into(), replicas: 2, ..Default::default() };
//! let ack = machine.write(Write::CreateService(web.clone(), Box::new(spec))).unwrap();
//! assert_eq!(ack, WriteAck::Done);
//! let outputs = drain(&mut machine);
//! assert_eq!(outputs[0], Output::Persist { flush: true });
//! assert!(outputs[1..].iter().all(|o| matches!(o, Output::Send { .. })));
//!
//! // The next tick schedules both replicas here; the reconcile loop is told to run them.
//! machine.handle_tick(Millis(250));
//! drain(&mut machine);
//! let desired = machine.desired(Millis(250));
//! assert_eq!(desired.tasks.len(), 2);
//! let mut supervisor = Supervisor::new();
//! let round = supervisor.round(&desired.tasks, &[], Millis(250));
//! assert_eq!(round.actions.len(), 2);
//! assert!(round.actions.iter().all(|a| matches!(a, RuntimeAction::Create(_))));
//! ```
//!
//! ## Modules
//!
//! - [`core`]: the decision core (SWIM membership, lease, scheduler, reconcile, backoff).
//! - [`machine`]: the node above the core ([`NodeMachine`]).
//! - [`protocol`]: messages between nodes (reports, lease renewals, direct messages, sync
//!   framing); every
//!   decoder here reads a peer's bytes and bounds what it keeps.
//! - [`token`], [`api_token`]: join tokens and operator tokens, stored as digests;
//!   [`secrets`]: values sealed to members (XChaCha20-Poly1305, sealed boxes).
//! - [`patch`]: partial service updates and cluster settings changes.
//! - [`logs`]: `service logs` across nodes: requests, answers, cursors, the merge into pages.
//! - [`system`]: what a node says of its machine (capacity, usage, GPUs) and the parsers of
//!   the texts it reads them from.
//! - [`engine`]: the plain data the core shares with the container runtime (published ports,
//!   log lines), re-exported by `warren-runtime`.

pub mod api_token;
pub mod core;
pub mod engine;
pub mod invariants;
pub mod join;
pub mod logs;
pub mod machine;
pub mod names;
pub mod overlay;
pub mod patch;
pub mod placement;
pub mod protocol;
pub mod secrets;
pub mod system;
pub mod token;

pub use crate::core::{
    Action, ActualTask, ClusterView, Core, CoreConfig, Desired, DesiredTask, Millis, Round,
    RuntimeAction, Supervisor,
};
pub use crate::machine::{
    Channel, JoinError, MachineConfig, NodeMachine, Output, Snapshot, SyncError, Write, WriteAck,
    WriteError,
};
