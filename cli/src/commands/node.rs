use anyhow::{bail, Result};
use serde_json::Value;

use super::cluster::{engine_cell, member_rows, overlay_state_cell, HEADERS};
use crate::args::{Format, NodeCommand};
use crate::client::Client;
use crate::output::{cell, print};

/// Checks a node name or id given on the command line before it goes into a URL.
fn check_name(node: &str) -> Result<()> {
    if node.is_empty()
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("invalid node name {node:?}");
    }
    Ok(())
}

/// `node inspect` as `KEY  value` lines, from `GET /v1/nodes/{node}`.
fn inspect_text(m: &Value) -> String {
    let d = &m["display"];
    let gpus = d["gpus"]
        .as_array()
        .filter(|g| !g.is_empty())
        .map(|g| {
            g.iter()
                .map(|v| cell(Some(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".into());
    let labels = m["labels"]
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", cell(Some(v))))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let rows = [
        ("ID", cell(m.get("id"))),
        ("NAME", cell(m.get("name"))),
        ("LIVENESS", cell(m.get("liveness"))),
        ("STATE", cell(m.get("state"))),
        ("ENGINE", engine_cell(m.get("engine"))),
        ("TASKS", cell(m.get("tasks"))),
        (
            "CPUS",
            format!(
                "{} (reserved {})",
                cell(d.get("cpus")),
                cell(d.get("reserved_cpus"))
            ),
        ),
        (
            "MEMORY",
            format!(
                "{} (reserved {}, in use {})",
                cell(d.get("memory")),
                cell(d.get("reserved_memory")),
                cell(d.get("memory_used"))
            ),
        ),
        ("LOAD (1 MIN)", cell(d.get("load_1m"))),
        ("GPUS", gpus),
        ("LABELS", labels),
        ("API", cell(m.get("api"))),
        ("OVERLAY", overlay_cell(m.get("overlay"))),
        ("OVERLAY STATE", overlay_state_cell(m.get("overlay_state"))),
    ];
    rows.iter().map(|(k, v)| format!("{k:<13} {v}\n")).collect()
}

/// The member's overlay address and container subnet, or why it has none.
fn overlay_cell(overlay: Option<&Value>) -> String {
    match overlay {
        Some(o) if o.is_object() => format!(
            "{} (containers {}, key {})",
            cell(o.get("overlay_ip")),
            cell(o.get("container_subnet")),
            cell(o.get("wg_public_key"))
        ),
        _ => "none published (--no-overlay, or not yet)".into(),
    }
}

pub(crate) fn run(client: &Client, format: Format, command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Ls => {
            let nodes = client.get("/v1/nodes")?;
            print(format, &nodes, &HEADERS, member_rows(&nodes));
        }
        NodeCommand::Inspect { node } => {
            check_name(&node)?;
            let m = client.get(&format!("/v1/nodes/{node}"))?;
            match format {
                Format::Json => println!("{m}"),
                Format::Table => print!("{}", inspect_text(&m)),
            }
        }
        NodeCommand::Rm { node } => {
            check_name(&node)?;
            let answer = client.delete(&format!("/v1/nodes/{node}"))?;
            match format {
                Format::Json => println!("{answer}"),
                Format::Table => println!("node {node} removed"),
            }
        }
    }
    Ok(())
}
