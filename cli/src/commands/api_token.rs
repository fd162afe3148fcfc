use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use super::tokens;
use crate::args::{ApiTokenCommand, Format};
use crate::client::Client;
use crate::output::outln;
use crate::output::{cell, print};

/// Unix seconds as `2026-11-22T03:10:00Z` (the number itself if out of range).
fn when(v: Option<&Value>) -> String {
    let Some(secs) = v.and_then(Value::as_i64) else {
        return cell(v);
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

pub(crate) fn run(client: &Client, format: Format, command: ApiTokenCommand) -> Result<()> {
    match command {
        ApiTokenCommand::Create { ttl, label } => {
            let labels = tokens::labels_body(&label)?;
            let body = json!({ "ttl_secs": ttl, "labels": labels });
            let answer = client.post("/v1/api-tokens", &body)?;
            if format == Format::Json {
                outln!("{answer}")?;
                return Ok(());
            }
            let token = answer
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("the peer answered without a token"))?;
            eprintln!(
                "operator token {} valid until {}; it is shown only now. Use it with:",
                cell(answer.get("id")),
                when(answer.get("expires_at"))
            );
            eprintln!(
                "  WARREN_TOKEN=<TOKEN> warren-cli --peer https://NODE:PORT --tls-ca CERT ..."
            );
            outln!("{token}")?;
        }
        ApiTokenCommand::Ls => {
            let tokens = client.get("/v1/api-tokens")?;
            let rows = tokens::rows(&tokens, |t| {
                [when(t.get("created_at")), when(t.get("expires_at"))]
            });
            print(
                format,
                &tokens,
                &["ID", "STATE", "CREATED", "EXPIRES", "LABELS"],
                rows,
            )?;
        }
        ApiTokenCommand::Revoke { id } => {
            tokens::revoke(
                client,
                format,
                &id,
                "API token",
                "api-token ls",
                "/v1/api-tokens",
            )?;
        }
    }
    Ok(())
}
