//! `warren-testkit`: the one harness for tests and testnets that run real `warren-node`
//! processes. `node/tests` runs them on 127.0.0.1; `warren-testnet` runs them inside network
//! namespaces. Both start them with the same [`Launch`], list their containers with the same
//! [`Container`] parser, and wait with the same [`poll_until`].
//!
//! - [`poll_until`], [`wait_for`], [`holds_for`]: deadline polls (no test sleeps to wait for
//!   a state);
//! - [`Launch`] / [`NodeProcess`]: one `warren-node up` child with its data dir, addresses,
//!   extra arguments and log file, optionally behind a prefix command
//!   (`ip netns exec NS`); stop (SIGTERM, then SIGKILL after a grace) or kill it;
//! - [`Container`], [`PS_FORMAT`], [`parse_containers`], [`containers`], [`docker`]: the
//!   engine's listing of Warren containers (by their `warren.*` labels);
//! - [`IMAGE`], [`WEB_COMMAND`], [`require_docker`]: what every end-to-end test runs;
//! - [`nslookup_addresses`]: the addresses a container's `nslookup` answers;
//! - [`free_tcp_port`], [`free_udp_port`]: ports for nodes on 127.0.0.1;
//! - [`PrivateEngine`]: a `dockerd` of a test's own, in a network namespace of its own.
//!
//! ```no_run
//! use std::time::Duration;
//! use warren_testkit::{containers, wait_for};
//!
//! // Waits (panicking after 30 s) until the engine lists two running containers of `web`.
//! let n = wait_for("two replicas of web", Duration::from_secs(30), || {
//!     let list = containers("label=warren.service=web").ok()?;
//!     let running = list.iter().filter(|c| c.running()).count();
//!     (running == 2).then_some(running)
//! });
//! assert_eq!(n, 2);
//! ```

mod engine;
mod launch;
mod names;
mod poll;
mod ports;
mod private_engine;

pub use engine::{
    containers, docker, parse_containers, ps_args, remove_containers, require_docker, run,
    Container, IMAGE, PS_FORMAT, WEB_COMMAND,
};
pub use launch::{
    log_tail, pid_runs, process_alive, signal, stop_pid, Launch, NodeProcess, Stopped,
};
pub use names::nslookup_addresses;
pub use poll::{holds_for, poll_until, wait_for, POLL};
pub use ports::{free_tcp_port, free_udp_port};
pub use private_engine::PrivateEngine;

use std::path::PathBuf;

/// What can go wrong in the harness. Each variant names what the caller can look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command could not be started (not installed, not executable, ...).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line, as far as it is worth showing.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed (`docker ...`, `warren-cli ...`).
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line, program name and arguments.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it said on stderr (trimmed).
        stderr: String,
    },
    /// A file or directory of the harness (a data dir, a log).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
