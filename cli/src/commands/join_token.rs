use anyhow::{anyhow, Result};
use serde_json::json;

use crate::args::{Format, JoinTokenCommand};
use crate::client::Client;

pub(crate) fn run(client: &Client, format: Format, command: JoinTokenCommand) -> Result<()> {
    match command {
        JoinTokenCommand::Create { ttl } => {
            let answer = client.post("/v1/join-tokens", &json!({ "ttl_secs": ttl }))?;
            if format == Format::Json {
                println!("{answer}");
                return Ok(());
            }
            let token = answer
                .get("token")
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("the peer answered without a token"))?;
            eprintln!("single-use join token, valid {ttl} s; on the new node run:");
            eprintln!("  warren-node up --join <TOKEN> --name NAME --data-dir DIR");
            println!("{token}");
        }
    }
    Ok(())
}
