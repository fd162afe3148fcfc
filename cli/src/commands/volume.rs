//! `warren-cli volume create/ls/inspect/rm`.

use anyhow::{anyhow, Result};
use serde_json::{json, Map, Value};

use crate::args::{Format, VolumeCommand};
use crate::client::Client;
use crate::output::outln;
use crate::output::{cell, list_cell, print};

const COLUMNS: [&str; 4] = ["NAME", "NODE", "DRIVER", "USED BY"];

pub(crate) fn run(client: &Client, format: Format, command: VolumeCommand) -> Result<()> {
    match command {
        VolumeCommand::Create {
            name,
            node,
            driver,
            opt,
        } => {
            let mut options = Map::new();
            for o in &opt {
                let (k, v) = o
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| anyhow!("--opt {o:?} is not K=V"))?;
                options.insert(k.to_string(), json!(v));
            }
            let mut body = json!({ "name": name, "driver": driver, "options": options });
            if let Some(node) = node {
                body["node"] = json!(node);
            }
            let answer = client.post("/v1/volumes", &body)?;
            done(format, &answer, &format!("volume {name} created"))?;
        }
        VolumeCommand::Ls => {
            let volumes = client.get("/v1/volumes")?;
            let rows = volumes
                .as_array()
                .map(|list| list.iter().map(row).collect())
                .unwrap_or_default();
            print(format, &volumes, &COLUMNS, rows)?;
        }
        VolumeCommand::Inspect { name } => {
            let volume = client.get(&format!("/v1/volumes/{}", path(&name)?))?;
            match format {
                Format::Json => outln!("{volume}")?,
                Format::Table => print(format, &volume, &COLUMNS, vec![row(&volume)])?,
            }
        }
        VolumeCommand::Rm { name } => {
            let answer = client.delete(&format!("/v1/volumes/{}", path(&name)?))?;
            done(format, &answer, &format!("volume {name} removed"))?;
        }
    }
    Ok(())
}

fn row(v: &Value) -> Vec<String> {
    let used_by = list_cell(v.get("used_by"));
    let node = match v.get("node_name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => cell(v.get("node")),
    };
    vec![cell(v.get("name")), node, cell(v.get("driver")), used_by]
}

fn done(format: Format, answer: &Value, message: &str) -> Result<()> {
    match format {
        Format::Json => outln!("{answer}"),
        Format::Table => outln!("{message}"),
    }
}

/// The name as a URL path segment; the peer checks the full rule.
fn path(name: &str) -> Result<&str> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(anyhow!("invalid volume name {name:?}"));
    }
    Ok(name)
}
