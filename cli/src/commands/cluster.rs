use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::args::{ClusterCommand, Format};
use crate::client::Client;
use crate::output::{cell, print};
use crate::output::{out, outln};

pub(crate) fn run(client: &Client, format: Format, command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status => {
            let status = client.get("/v1/status")?;
            if format == Format::Table {
                outln!(
                    "cluster {} ({}), seen from {}",
                    cell(status.pointer("/cluster/name")),
                    cell(status.pointer("/cluster/id")),
                    cell(status.get("name")),
                )?;
                match status.get("lease").filter(|l| !l.is_null()) {
                    Some(lease) => outln!(
                        "lease: held by {} ({}) at epoch {}",
                        cell(lease.get("holder_name")),
                        short(&cell(lease.get("holder"))),
                        cell(lease.get("epoch")),
                    )?,
                    None => outln!("lease: vacant")?,
                }
                outln!(
                    "non-member messages dropped: {}\n",
                    cell(status.get("dropped_non_member"))
                )?;
            }
            let members = status.get("members").cloned().unwrap_or(Value::Null);
            print(format, &status, &HEADERS, member_rows(&members))?;
            if format == Format::Table {
                out!("{}", overlay_lines(&members))?;
                out!("{}", ingress_lines(&status))?;
            }
        }
        ClusterCommand::History { service, limit } => {
            let mut path = format!("/v1/history?limit={limit}");
            if let Some(service) = service {
                path.push_str(&format!("&service={}", super::service::path(&service)?));
            }
            let history = client.get(&path)?;
            let rows = history
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            vec![
                                time_of(e.get("time")),
                                short(&cell(e.get("node"))),
                                cell(e.get("message")),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print(format, &history, &["TIME (UTC)", "NODE", "CHANGE"], rows)?;
        }
        ClusterCommand::Settings => {
            let settings = client.get("/v1/cluster/settings")?;
            print_settings(format, &settings)?;
        }
        ClusterCommand::Set { key, value } => {
            let body = setting_body(&key, &value)?;
            let settings = client.patch("/v1/cluster/settings", &body)?;
            print_settings(format, &settings)?;
        }
    }
    Ok(())
}

/// The cluster settings the CLI knows, for error messages.
const SETTINGS: &str = "rebalance";

/// The `PATCH /v1/cluster/settings` body for `cluster set KEY VALUE`.
///
/// Errors: one line naming the unknown setting or the value it takes.
fn setting_body(key: &str, value: &str) -> Result<Value> {
    match key {
        "rebalance" => {
            let on = match value.to_ascii_lowercase().as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                _ => bail!("rebalance takes on or off, not {value:?}"),
            };
            Ok(json!({ "rebalance": on }))
        }
        _ => bail!("no cluster setting {key:?} (the settings are: {SETTINGS})"),
    }
}

fn print_settings(format: Format, settings: &Value) -> Result<()> {
    let rows = settings
        .as_object()
        .map(|all| {
            all.iter()
                .map(|(key, value)| {
                    let shown = match value.as_bool() {
                        Some(true) => "on".to_string(),
                        Some(false) => "off".to_string(),
                        None => cell(Some(value)),
                    };
                    vec![key.clone(), shown]
                })
                .collect()
        })
        .unwrap_or_default();
    print(format, settings, &["SETTING", "VALUE"], rows)
}

pub(crate) const HEADERS: [&str; 8] = [
    "NAME",
    "ID",
    "LIVENESS",
    "STATE",
    "AVAILABILITY",
    "TASKS",
    "ENGINE",
    "API",
];

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
                        cell(m.get("availability")),
                        cell(m.get("tasks")),
                        engine_cell(m.get("engine")),
                        cell(m.get("api")),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A member's container engine as its heartbeats say: `ok`, `unreachable since HH:MM:SS`
/// (UTC, by the member's clock), or empty when it has not said.
pub(crate) fn engine_cell(engine: Option<&Value>) -> String {
    let Some(engine) = engine.filter(|e| !e.is_null()) else {
        return String::new();
    };
    if engine.get("reachable").and_then(Value::as_bool) == Some(true) {
        return "ok".into();
    }
    let since = time_of(engine.get("since_ms"));
    let time = since.split_once(' ').map_or(since.as_str(), |(_, t)| t);
    let time = time.split_once('.').map_or(time, |(t, _)| t);
    format!("unreachable since {time}")
}

/// A member's overlay interface as it last said: `on (IFACE, ADDRESS, N peers)`, `off:
/// REASON`, `disabled (--no-overlay)`, or `unknown` when it has not said.
pub(crate) fn overlay_state_cell(state: Option<&Value>) -> String {
    let Some(state) = state.filter(|s| !s.is_null()) else {
        return "unknown (no report yet)".into();
    };
    match state.get("state").and_then(Value::as_str) {
        Some("on") => format!(
            "on ({}, {}, {} peers)",
            cell(state.get("interface")),
            cell(state.get("address")),
            cell(state.get("peers"))
        ),
        Some("off") => format!("off: {}", cell(state.get("reason"))),
        Some("disabled") => "disabled (--no-overlay)".into(),
        _ => cell(Some(state)),
    }
}

/// Under `cluster status`'s table: one line per member whose overlay is not on, e.g.
/// `overlay off at n2: the overlay is unavailable here: /dev/net/tun does not exist`.
fn overlay_lines(members: &Value) -> String {
    let mut out = String::new();
    for m in members.as_array().map_or(&[][..], Vec::as_slice) {
        let state = m.get("overlay_state").filter(|s| !s.is_null());
        let Some(state) = state else { continue };
        let name = cell(m.get("name"));
        match state.get("state").and_then(Value::as_str) {
            Some("on") | None => {}
            Some("disabled") => {
                out.push_str(&format!("overlay disabled at {name} (--no-overlay)\n"))
            }
            Some("off") => out.push_str(&format!(
                "overlay off at {name}: {}\n",
                cell(state.get("reason"))
            )),
            Some(other) => out.push_str(&format!("overlay {other} at {name}\n")),
        }
    }
    out
}

/// The routing mesh of the node asked (`status.ingress`): its address, each port with its
/// service and backends or why it is not accepted, and its counters.
fn ingress_lines(status: &Value) -> String {
    let Some(ingress) = status.get("ingress").filter(|i| !i.is_null()) else {
        return String::new();
    };
    let Some(addr) = ingress.get("addr").and_then(Value::as_str) else {
        return format!(
            "routing mesh: off at {} (--ingress-addr none)\n",
            cell(status.get("name"))
        );
    };
    let mut out = format!(
        "routing mesh at {} on {addr}: {} active, {} proxied, {} closed without backend, {} over the cap\n",
        cell(status.get("name")),
        cell(ingress.get("active")),
        cell(ingress.get("proxied")),
        cell(ingress.get("no_backend")),
        cell(ingress.get("over_capacity")),
    );
    for p in ingress
        .get("ports")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let state = match p.get("error").and_then(Value::as_str) {
            Some(error) => format!("not accepted: {error} (retrying)"),
            None if p.get("listening") == Some(&Value::Bool(true)) => "listening".into(),
            None => "binding".into(),
        };
        out.push_str(&format!(
            "  port {} -> {} ({} backends): {state}\n",
            cell(p.get("port")),
            cell(p.get("service")),
            cell(p.get("backends")),
        ));
    }
    for c in ingress
        .get("conflicts")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        out.push_str(&format!(
            "  port {} also asked by service {}: not served for it\n",
            cell(c.get(0)),
            cell(c.get(1)),
        ));
    }
    out
}

/// Last 8 characters of a peer id.
pub(crate) fn short(id: &str) -> String {
    let n = id.chars().count();
    id.chars().skip(n.saturating_sub(8)).collect()
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` UTC (the author's clock).
pub(crate) fn time_of(v: Option<&Value>) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    );
    v.and_then(Value::as_i64)
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| cell(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_mesh_says_which_port_it_cannot_take_and_why() {
        let status = serde_json::json!({
            "name": "n2",
            "ingress": {
                "addr": "127.0.0.1", "active": 0, "proxied": 3, "no_backend": 1,
                "over_capacity": 0,
                "ports": [
                    {"port": 8080, "service": "web", "backends": 3, "listening": true,
                     "error": null},
                    {"port": 8081, "service": "api", "backends": 1, "listening": false,
                     "error": "ingress port 8081 on 127.0.0.1: address in use"}
                ],
                "conflicts": [[8080, "other"]]
            }
        });
        let text = ingress_lines(&status);
        assert!(
            text.contains("port 8080 -> web (3 backends): listening"),
            "{text}"
        );
        assert!(
            text.contains("port 8081 -> api (1 backends): not accepted: ingress port 8081 on 127.0.0.1: address in use"),
            "{text}"
        );
        assert!(
            text.contains("port 8080 also asked by service other"),
            "{text}"
        );
        let off = serde_json::json!({"name": "n3", "ingress": {"addr": null}});
        assert_eq!(
            ingress_lines(&off),
            "routing mesh: off at n3 (--ingress-addr none)\n"
        );
    }

    #[test]
    fn engine_cells() {
        assert_eq!(engine_cell(None), "");
        assert_eq!(
            engine_cell(Some(&serde_json::json!({"reachable": true}))),
            "ok"
        );
        assert_eq!(
            engine_cell(Some(&serde_json::json!({
                "reachable": false,
                "since_ms": 1_795_303_972_756_i64
            }))),
            "unreachable since 23:32:52"
        );
    }

    #[test]
    fn overlay_states_read_for_people() {
        let on = json!({"state": "on", "interface": "warren0", "address": "fd00::1", "peers": 2});
        assert_eq!(
            overlay_state_cell(Some(&on)),
            "on (warren0, fd00::1, 2 peers)"
        );
        let off = json!({"state": "off", "reason": "no /dev/net/tun"});
        assert_eq!(overlay_state_cell(Some(&off)), "off: no /dev/net/tun");
        let disabled = json!({"state": "disabled"});
        assert_eq!(
            overlay_state_cell(Some(&disabled)),
            "disabled (--no-overlay)"
        );
        assert_eq!(overlay_state_cell(None), "unknown (no report yet)");
        let members = json!([
            {"name": "n1", "overlay_state": on},
            {"name": "n2", "overlay_state": off},
            {"name": "n3", "overlay_state": disabled},
            {"name": "n4", "overlay_state": null},
        ]);
        assert_eq!(
            overlay_lines(&members),
            "overlay off at n2: no /dev/net/tun\noverlay disabled at n3 (--no-overlay)\n"
        );
    }

    #[test]
    fn settings_take_on_or_off_and_unknown_ones_are_named() {
        assert_eq!(
            setting_body("rebalance", "off").expect("off"),
            json!({"rebalance": false})
        );
        assert_eq!(
            setting_body("rebalance", "ON").expect("on"),
            json!({"rebalance": true})
        );
        assert_eq!(
            setting_body("rebalance", "true").expect("true"),
            json!({"rebalance": true})
        );
        let bad = setting_body("rebalance", "maybe").expect_err("bad value");
        assert_eq!(bad.to_string(), "rebalance takes on or off, not \"maybe\"");
        let unknown = setting_body("spread", "on").expect_err("unknown setting");
        assert_eq!(
            unknown.to_string(),
            "no cluster setting \"spread\" (the settings are: rebalance)"
        );
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(time_of(Some(&Value::from(0))), "1970-01-01 00:00:00.000");
        assert_eq!(
            time_of(Some(&Value::from(1_795_303_972_756_i64))),
            "2026-11-21 23:32:52.756"
        );
    }
}
