//! What join tokens and API tokens share on the command line: `--label` parsing, the state and
//! labels columns of `ls`, and the id check of `revoke`.

use anyhow::{anyhow, Result};
use serde_json::{json, Map, Value};

use crate::output::cell;

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
