//! Tables for people, JSON for scripts.

use serde_json::Value;

use crate::args::Format;

/// Prints `rows` under `headers` as aligned columns, or `json` as pretty JSON.
pub(crate) fn print(format: Format, json: &Value, headers: &[&str], rows: Vec<Vec<String>>) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string())
        ),
        Format::Table => print!("{}", table(headers, &rows)),
    }
}

pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] + 2 - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON value as table text: strings bare, null empty.
pub(crate) fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// An array value as one cell: its items' [`cell`]s joined by commas; empty when `v` is not
/// an array.
pub(crate) fn list_cell(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|x| cell(Some(x)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["web".into(), "running".into()],
                vec!["a-long-name".into(), "x".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME         STATE\nweb          running\na-long-name  x\n"
        );
    }
}
