//! `warren-cli`: the operator's command line. Talks to any peer's HTTP API; every peer answers
//! for the whole cluster.
//!
//! Exit status: 0 on success, 1 on an error (printed on stderr), and
//! [`output::STDOUT_CLOSED_EXIT`] (141), silently, when the reader of stdout went away
//! (`warren-cli service inspect web | head -1`).

// Every write to stdout goes through `output::out!`/`outln!`, which turn a closed pipe into
// that exit instead of `println!`'s panic.
#![deny(clippy::print_stdout)]

mod args;
mod client;
mod commands;
mod output;
mod units;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::dispatch(cli).and_then(|()| output::flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<output::StdoutClosed>().is_some() => {
            ExitCode::from(output::STDOUT_CLOSED_EXIT)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
