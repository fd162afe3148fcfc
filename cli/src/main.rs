//! `warren-cli`: the operator's command line. Talks to any peer's HTTP API; every peer answers
//! for the whole cluster.

mod args;
mod client;
mod commands;
mod output;
mod units;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
