//! `warren-cli service logs NAME [-f] [--tail N] [--since T]`.
//!
//! The peer answers pages (`GET /v1/services/{name}/logs`): lines of every task in time
//! order and a `cursor` that says where they end. This command asks again with the cursor at
//! once while a page says `more`, then, with `--follow`, every second: each line is printed
//! exactly once. A node that does not answer is reported once per outage on stderr; the
//! command goes on with the others.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::args::{Format, ServiceLogs};
use crate::client::Client;
use crate::commands::service::path;
use crate::output::outln;
use crate::units::parse_duration_ms;

/// Time between two polls while following.
const POLL: Duration = Duration::from_secs(1);

pub(crate) fn run(client: &Client, format: Format, args: &ServiceLogs) -> Result<()> {
    let name = path(&args.name)?;
    let since = args.since.as_deref().map(resolve_since).transpose()?;
    let mut cursor = String::new();
    // Nodes not answering now: warned about once per outage.
    let mut down = BTreeSet::new();
    let mut peer_down = false;
    let mut first = true;
    loop {
        let url = logs_url(name, args.tail, since.as_deref(), &cursor);
        let page = match client.get(&url) {
            Ok(page) => {
                if peer_down {
                    eprintln!("warning: the peer answers again");
                    peer_down = false;
                }
                page
            }
            // The first answer decides (unknown service, unreachable peer): fail.
            Err(e) if first || !args.follow => return Err(e),
            Err(e) => {
                if !peer_down {
                    eprintln!("warning: {e:#}; retrying every second");
                    peer_down = true;
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        first = false;
        let lines = page
            .get("lines")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for line in lines {
            outln!("{}", render(format, name, line, args.timestamps))?;
        }
        report_outages(&page, &mut down);
        if let Some(next) = page.get("cursor").and_then(Value::as_str) {
            cursor = next.to_string();
        }
        let more = page.get("more").and_then(Value::as_bool).unwrap_or(false);
        if more && !lines.is_empty() {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// One warning line per node that stopped answering. A node that is no longer listed (it
/// answers again, or runs no task of the service any more) is forgotten, so its next outage
/// is reported again.
fn report_outages(page: &Value, down: &mut BTreeSet<String>) {
    let mut now = BTreeSet::new();
    for u in page
        .get("unreachable")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let text = |k: &str| u.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (node, node_name, error) = (text("node"), text("node_name"), text("error"));
        if !down.contains(&node) {
            eprintln!(
                "warning: node {node_name} ({}) does not answer, its tasks' logs are missing: {error}",
                crate::commands::cluster::short(&node)
            );
        }
        now.insert(node);
    }
    *down = now;
}

/// `SERVICE.SLOT@NODE | [TIMESTAMP ]TEXT`, or the line as one JSON object.
fn render(format: Format, service: &str, line: &Value, timestamps: bool) -> String {
    let text = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or("");
    let slot = line.get("slot").and_then(Value::as_u64).unwrap_or(0);
    let task = format!("{service}.{slot}@{}", text("node_name"));
    match format {
        Format::Json => {
            let mut object = line.clone();
            if let Some(map) = object.as_object_mut() {
                map.insert("service".into(), Value::from(service));
                map.insert("task".into(), Value::from(task));
            }
            object.to_string()
        }
        Format::Table if timestamps => {
            let ts = line.get("ts").and_then(Value::as_i64).unwrap_or(0);
            format!("{task} | {} {}", rfc3339(ts), text("text"))
        }
        Format::Table => format!("{task} | {}", text("text")),
    }
}

fn rfc3339(nanos: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| nanos.to_string())
}

/// `--since` as the API takes it: RFC 3339 and Unix seconds as given, a duration (`10m`)
/// as Unix seconds that long before now.
fn resolve_since(text: &str) -> Result<String> {
    let t = text.trim();
    let unix = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.');
    if t.contains('T') || unix {
        return Ok(t.to_string());
    }
    let Ok(ms) = parse_duration_ms(t) else {
        bail!(
            "--since {text:?}: give an RFC 3339 time (2026-11-22T02:52:31Z), Unix seconds, or \
             a duration ago (10s, 5m, 2h)"
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let then = now.saturating_sub(Duration::from_millis(ms));
    Ok(format!("{}.{:03}", then.as_secs(), then.subsec_millis()))
}

/// The page URL, with every query value percent-encoded.
fn logs_url(name: &str, tail: Option<u32>, since: Option<&str>, cursor: &str) -> String {
    let mut query = Vec::new();
    if let Some(n) = tail {
        query.push(format!("tail={n}"));
    }
    if let Some(s) = since {
        query.push(format!("since={}", encode(s)));
    }
    if !cursor.is_empty() {
        query.push(format!("cursor={}", encode(cursor)));
    }
    let mut url = format!("/v1/services/{name}/logs");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

/// Percent-encodes all but unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_prefixed_with_task_and_node() {
        let line = json!({"slot": 2, "node": "12D3KooWx", "node_name": "n3", "stream": "stdout",
                          "ts": 1_795_315_951_000_000_001_i64, "text": "hello"});
        assert_eq!(
            render(Format::Table, "web", &line, false),
            "web.2@n3 | hello"
        );
        assert_eq!(
            render(Format::Table, "web", &line, true),
            "web.2@n3 | 2026-11-22T02:52:31.000000001Z hello"
        );
        let json: Value =
            serde_json::from_str(&render(Format::Json, "web", &line, false)).expect("json");
        assert_eq!(json["task"], "web.2@n3");
        assert_eq!(json["text"], "hello");
    }

    #[test]
    fn since_passes_times_through_and_resolves_durations() {
        assert_eq!(resolve_since("1795315951").expect("ok"), "1795315951");
        assert_eq!(
            resolve_since("2026-11-22T02:52:31+02:00").expect("ok"),
            "2026-11-22T02:52:31+02:00"
        );
        let ago: f64 = resolve_since("10m").expect("ok").parse().expect("number");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!((now - 600.0 - ago).abs() < 5.0, "{ago} vs {now}");
        assert!(resolve_since("yesterday").is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            logs_url("web", Some(5), Some("2026-11-22T02:52:31+02:00"), "0@12D3:5:0,1@x:6:1"),
            "/v1/services/web/logs?tail=5&since=2026-11-22T02%3A52%3A31%2B02%3A00&cursor=0%4012D3%3A5%3A0%2C1%40x%3A6%3A1"
        );
        assert_eq!(logs_url("web", None, None, ""), "/v1/services/web/logs");
    }
}
