use anyhow::Result;

use super::cluster::{member_rows, HEADERS};
use crate::args::{Format, NodeCommand};
use crate::client::Client;
use crate::output::print;

pub(crate) fn run(client: &Client, format: Format, command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Ls => {
            let nodes = client.get("/v1/nodes")?;
            print(format, &nodes, &HEADERS, member_rows(&nodes));
        }
    }
    Ok(())
}
