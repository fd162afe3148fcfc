//! What join tokens and API tokens share on the command line: `--label` parsing, the state and
//! labels columns of `ls`, and the id check of `revoke`.

use anyhow::{anyhow, Result};
use serde_json::{json, Map, Value};

use crate::args::Format;
use crate::client::Client;
use crate::output::cell;
use crate::output::outln;

/// `--label K=V` flags as the JSON object the API takes.
///
/// Errors: a flag without `=` or with an empty key.
pub(crate) fn labels_body(flags: &[String]) -> Result<Map<String, Value>> {
    let mut labels = Map::new();
    for pair in flags {
        let (k, v) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow!("--label {pair:?} is not of the form K=V"))?;
        labels.insert(k.to_string(), json!(v));
    }
    Ok(labels)
}

/// A token record's state for `ls`: `revoked`, `expired`, `used` (a join token with no use
/// left) or `valid`.
pub(crate) fn state(t: &Value) -> &'static str {
    if t.get("revoked").and_then(Value::as_bool) == Some(true) {
        "revoked"
    } else if t.get("expired").and_then(Value::as_bool) == Some(true) {
        "expired"
    } else if t.get("uses_left").and_then(Value::as_u64) == Some(0) {
        "used"
    } else {
        "valid"
    }
}

/// A token record's labels as `k=v,k=v`.
pub(crate) fn labels_cell(t: &Value) -> String {
    t.get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", cell(Some(v))))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Checks a token id given to `revoke` (hex digits); `kind` names the token in the error,
/// e.g. `join token` (and its `ls` command, e.g. `join-token ls`).
pub(crate) fn check_id(id: &str, kind: &str, ls: &str) -> Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(anyhow!("invalid {kind} id {id:?} (see {ls})"));
    }
    Ok(())
}

/// The rows of `ls`: id, state, the two columns `middle` gives for a record, labels.
pub(crate) fn rows(tokens: &Value, middle: impl Fn(&Value) -> [String; 2]) -> Vec<Vec<String>> {
    tokens
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let [a, b] = middle(t);
                    vec![
                        cell(t.get("id")),
                        state(t).to_string(),
                        a,
                        b,
                        labels_cell(t),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `revoke ID` of a token `kind` (`join token`) at `path` (`/v1/join-tokens`), with `ls` the
/// command that lists the ids.
///
/// Errors: an id that is not hex digits; the peer's refusal.
pub(crate) fn revoke(
    client: &Client,
    format: Format,
    id: &str,
    kind: &str,
    ls: &str,
    path: &str,
) -> Result<()> {
    check_id(id, kind, ls)?;
    let answer = client.delete(&format!("{path}/{id}"))?;
    match format {
        Format::Json => outln!("{answer}")?,
        Format::Table => outln!("{kind} {id} revoked")?,
    }
    Ok(())
}
