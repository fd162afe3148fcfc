//! One module per subcommand group.

mod api_token;
mod cluster;
mod image;
mod join_token;
mod logs;
mod node;
pub(crate) mod rollout;
mod secret;
pub(crate) mod service;
mod tokens;
mod volume;

use anyhow::Result;

use crate::args::{Cli, Command};
use crate::client::Client;

pub(crate) fn dispatch(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.peer, cli.token.as_deref(), cli.tls_ca.as_deref())?;
    match cli.command {
        Command::Cluster(c) => cluster::run(&client, cli.output, c),
        Command::Node(c) => node::run(&client, cli.output, c),
        Command::JoinToken(c) => join_token::run(&client, cli.output, c),
        Command::ApiToken(c) => api_token::run(&client, cli.output, c),
        Command::Service(c) => service::run(&client, cli.output, c),
        Command::Secret(c) => secret::run(&client, cli.output, c),
        Command::Image(c) => image::run(&client, cli.output, c),
        Command::Volume(c) => volume::run(&client, cli.output, c),
    }
}
