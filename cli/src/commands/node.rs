use anyhow::{bail, Result};
use serde_json::Value;

use super::cluster::{engine_cell, member_rows, overlay_state_cell, HEADERS};
use crate::args::{Format, NodeCommand};
use crate::client::Client;
use crate::output::{cell, list_cell, print};
use crate::output::{out, outln};

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
                // One GPU a line, under the first.
                .join(&format!("\n{:<13} ", ""))
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
    let capabilities = list_cell(m.get("capabilities"));
    let rows = [
        ("ID", cell(m.get("id"))),
        ("NAME", cell(m.get("name"))),
        ("LIVENESS", cell(m.get("liveness"))),
        ("STATE", cell(m.get("state"))),
        ("AVAILABILITY", cell(m.get("availability"))),
        ("STAYS", stays_cell(m.get("stays"))),
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
        ("CAPABILITIES", capabilities),
        (
            "PLATFORM",
            format!(
                "{}/{}",
                cell(m["platform"].get("os")),
                cell(m["platform"].get("arch"))
            ),
        ),
        ("API", cell(m.get("api"))),
        ("OVERLAY", overlay_cell(m.get("overlay"))),
        ("OVERLAY STATE", overlay_state_cell(m.get("overlay_state"))),
    ];
    rows.iter().map(|(k, v)| format!("{k:<13} {v}\n")).collect()
}

/// The slots that stay on a drained member, with why, or `none`.
fn stays_cell(stays: Option<&Value>) -> String {
    stays
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.iter()
                .map(|v| cell(Some(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".into())
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

/// The body of `PATCH /v1/nodes/{node}` from `--label-add K=V`, `--label-rm K` and
/// `--availability active|pause|drain`.
fn labels_body(add: &[String], remove: &[String], availability: Option<&str>) -> Result<Value> {
    if add.is_empty() && remove.is_empty() && availability.is_none() {
        bail!("nothing to change: give --label-add K=V, --label-rm K or --availability");
    }
    let mut labels = serde_json::Map::new();
    for pair in add {
        let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--label-add {pair:?} is not of the form K=V");
        };
        labels.insert(k.to_string(), Value::String(v.to_string()));
    }
    let mut body = serde_json::json!({ "label_add": labels, "label_rm": remove });
    if let Some(availability) = availability {
        body["availability"] = Value::String(availability.to_string());
    }
    Ok(body)
}

pub(crate) fn run(client: &Client, format: Format, command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Ls => {
            let nodes = client.get("/v1/nodes")?;
            print(format, &nodes, &HEADERS, member_rows(&nodes))?;
        }
        NodeCommand::Inspect { node } => {
            check_name(&node)?;
            let m = client.get(&format!("/v1/nodes/{node}"))?;
            match format {
                Format::Json => outln!("{m}")?,
                Format::Table => out!("{}", inspect_text(&m))?,
            }
        }
        NodeCommand::Update {
            node,
            label_add,
            label_rm,
            availability,
        } => {
            check_name(&node)?;
            let body = labels_body(&label_add, &label_rm, availability.as_deref())?;
            let answer = client.patch(&format!("/v1/nodes/{node}"), &body)?;
            match format {
                Format::Json => outln!("{answer}")?,
                Format::Table => outln!("node {node} updated")?,
            }
        }
        NodeCommand::Rm { node } => {
            check_name(&node)?;
            let answer = client.delete(&format!("/v1/nodes/{node}"))?;
            match format {
                Format::Json => outln!("{answer}")?,
                Format::Table => outln!("node {node} removed")?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_flags_become_one_patch() {
        assert_eq!(
            labels_body(&["zone=b".into(), "rack=".into()], &["old".into()], None).expect("body"),
            json!({"label_add": {"zone": "b", "rack": ""}, "label_rm": ["old"]})
        );
        assert!(labels_body(&[], &[], None).is_err());
        assert!(labels_body(&["zone".into()], &[], None).is_err());
        assert!(labels_body(&["=b".into()], &[], None).is_err());
        assert_eq!(
            labels_body(&[], &[], Some("drain")).expect("body"),
            json!({"label_add": {}, "label_rm": [], "availability": "drain"})
        );
    }

    #[test]
    fn node_inspect_lists_each_gpu_on_its_own_line_with_its_holder() {
        let m = json!({"display": {"gpus": [
            "0 Tesla T4 (15 GiB) GPU-aa: train.0",
            "1 Tesla T4 (15 GiB) GPU-bb: free"
        ]}});
        let text = inspect_text(&m);
        assert!(
            text.contains(
                "GPUS          0 Tesla T4 (15 GiB) GPU-aa: train.0\n              \
                 1 Tesla T4 (15 GiB) GPU-bb: free\n"
            ),
            "{text}"
        );
        assert!(inspect_text(&json!({"display": {"gpus": []}})).contains("GPUS          none\n"));
    }
}
