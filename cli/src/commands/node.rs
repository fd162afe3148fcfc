use anyhow::{bail, Result};

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
        NodeCommand::Rm { node } => {
            if node.is_empty()
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!("invalid node name {node:?}");
            }
            let answer = client.delete(&format!("/v1/nodes/{node}"))?;
            match format {
                Format::Json => println!("{answer}"),
                Format::Table => println!("node {node} removed"),
            }
        }
    }
    Ok(())
}
