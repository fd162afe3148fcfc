use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use crate::args::{Format, SecretCommand};
use crate::client::Client;
use crate::output::outln;
use crate::output::{cell, list_cell, print};

/// Largest value read, in bytes (the peer enforces its own limit too).
const MAX_VALUE: u64 = 64 * 1024;

pub(crate) fn run(client: &Client, format: Format, command: SecretCommand) -> Result<()> {
    match command {
        SecretCommand::Create {
            name,
            from_file,
            from_literal,
            stdin,
        } => {
            let value = match (from_file, from_literal, stdin.as_deref()) {
                (Some(path), None, None) => {
                    let mut bytes = Vec::new();
                    std::fs::File::open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?
                        .take(MAX_VALUE + 1)
                        .read_to_end(&mut bytes)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    bytes
                }
                (None, Some(literal), None) => literal.into_bytes(),
                (None, None, Some("-")) => {
                    let mut bytes = Vec::new();
                    std::io::stdin()
                        .take(MAX_VALUE + 1)
                        .read_to_end(&mut bytes)
                        .context("cannot read standard input")?;
                    bytes
                }
                _ => {
                    bail!("give the value with --from-file FILE, --from-literal VALUE or - (stdin)")
                }
            };
            if value.len() as u64 > MAX_VALUE {
                bail!("a secret is at most {MAX_VALUE} bytes");
            }
            let body = json!({
                "name": name,
                "value_base64": base64::engine::general_purpose::STANDARD.encode(&value),
            });
            let answer = client.post("/v1/secrets", &body)?;
            done(format, &answer, &format!("secret {name} created"))?;
        }
        SecretCommand::Ls => {
            let secrets = client.get("/v1/secrets")?;
            let rows = secrets
                .as_array()
                .map(|list| list.iter().map(row).collect())
                .unwrap_or_default();
            print(
                format,
                &secrets,
                &["NAME", "VERSION", "BYTES", "RECIPIENTS"],
                rows,
            )?;
        }
        SecretCommand::Inspect { name } => {
            let secret = client.get(&format!("/v1/secrets/{}", path(&name)?))?;
            match format {
                Format::Json => outln!("{secret}")?,
                Format::Table => print(
                    format,
                    &secret,
                    &["NAME", "VERSION", "BYTES", "RECIPIENTS"],
                    vec![row(&secret)],
                )?,
            }
        }
        SecretCommand::Rotate { name } => {
            let answer =
                client.post(&format!("/v1/secrets/{}/rotate", path(&name)?), &json!({}))?;
            done(format, &answer, &format!("secret {name} re-keyed"))?;
        }
        SecretCommand::Rm { name } => {
            let answer = client.delete(&format!("/v1/secrets/{}", path(&name)?))?;
            done(format, &answer, &format!("secret {name} removed"))?;
        }
    }
    Ok(())
}

fn row(s: &Value) -> Vec<String> {
    let recipients = list_cell(s.get("recipients"));
    vec![
        cell(s.get("name")),
        cell(s.get("version")),
        cell(s.get("bytes")),
        recipients,
    ]
}

fn done(format: Format, answer: &Value, message: &str) -> Result<()> {
    match format {
        Format::Json => outln!("{answer}"),
        Format::Table => outln!("{message}"),
    }
}

fn path(name: &str) -> Result<&str> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(anyhow!("invalid secret name {name:?}"));
    }
    Ok(name)
}
