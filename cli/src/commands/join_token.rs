use anyhow::{anyhow, Result};
use serde_json::json;

use super::tokens;
use crate::args::{Format, JoinTokenCommand};
use crate::client::Client;
use crate::output::outln;
use crate::output::{cell, print};

pub(crate) fn run(client: &Client, format: Format, command: JoinTokenCommand) -> Result<()> {
    match command {
        JoinTokenCommand::Create { ttl, uses, label } => {
            let labels = tokens::labels_body(&label)?;
            let body = json!({ "ttl_secs": ttl, "uses": uses, "labels": labels });
            let answer = client.post("/v1/join-tokens", &body)?;
            if format == Format::Json {
                outln!("{answer}")?;
                return Ok(());
            }
            let token = answer
                .get("token")
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("the peer answered without a token"))?;
            let times = if uses == 1 {
                "single-use".to_string()
            } else {
                format!("{uses}-use")
            };
            eprintln!("{times} join token, valid {ttl} s; on the new node run:");
            eprintln!("  warren-node up --join <TOKEN> --name NAME --data-dir DIR");
            outln!("{token}")?;
        }
        JoinTokenCommand::Ls => {
            let tokens = client.get("/v1/join-tokens")?;
            let rows = tokens::rows(&tokens, |t| {
                [cell(t.get("uses_left")), cell(t.get("expires_at"))]
            });
            print(
                format,
                &tokens,
                &["ID", "STATE", "USES_LEFT", "EXPIRES_AT", "LABELS"],
                rows,
            )?;
        }
        JoinTokenCommand::Revoke { id } => {
            tokens::revoke(
                client,
                format,
                &id,
                "join token",
                "join-token ls",
                "/v1/join-tokens",
            )?;
        }
    }
    Ok(())
}
