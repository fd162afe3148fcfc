use anyhow::Result;
use serde_json::Value;

use crate::args::{ClusterCommand, Format};
use crate::client::Client;
use crate::output::{cell, print};

pub(crate) fn run(client: &Client, format: Format, command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status => {
            let status = client.get("/v1/status")?;
            if format == Format::Table {
                println!(
                    "cluster {} ({}), seen from {}",
                    cell(status.pointer("/cluster/name")),
                    cell(status.pointer("/cluster/id")),
                    cell(status.get("name")),
                );
                match status.get("lease").filter(|l| !l.is_null()) {
                    Some(lease) => println!(
                        "lease: held by {} ({}) at epoch {}",
                        cell(lease.get("holder_name")),
                        short(&cell(lease.get("holder"))),
                        cell(lease.get("epoch")),
                    ),
                    None => println!("lease: vacant"),
                }
                println!(
                    "non-member messages dropped: {}\n",
                    cell(status.get("dropped_non_member"))
                );
            }
            let members = status.get("members").cloned().unwrap_or(Value::Null);
            print(format, &status, &HEADERS, member_rows(&members));
        }
        ClusterCommand::History => {
            let history = client.get("/v1/history")?;
            let rows = history
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            vec![
                                cell(e.get("time")),
                                short(&cell(e.get("node"))),
                                cell(e.get("message")),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print(format, &history, &["TIME_MS", "NODE", "CHANGE"], rows);
        }
    }
    Ok(())
}

pub(crate) const HEADERS: [&str; 6] = ["NAME", "ID", "LIVENESS", "STATE", "TASKS", "API"];

pub(crate) fn member_rows(members: &Value) -> Vec<Vec<String>> {
    members
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let mut name = cell(m.get("name"));
                    if m.get("is_self").and_then(Value::as_bool) == Some(true) {
                        name.push_str(" *");
                    }
                    vec![
                        name,
                        short(&cell(m.get("id"))),
                        cell(m.get("liveness")),
                        cell(m.get("state")),
                        cell(m.get("tasks")),
                        cell(m.get("api")),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Last 8 characters of a peer id.
pub(crate) fn short(id: &str) -> String {
    let n = id.chars().count();
    id.chars().skip(n.saturating_sub(8)).collect()
}
