//! Tables for people, JSON for scripts; every write to stdout goes through here.
//!
//! Commands print with [`outln!`] and [`out!`] (not `println!`, which panics when stdout is
//! closed): a write to a closed pipe (`warren-cli service ls | head -1`) becomes a
//! [`StdoutClosed`] error, which `main` turns into a quiet exit with status
//! [`STDOUT_CLOSED_EXIT`]; any other write error is an ordinary error.

use std::{fmt, io};

use serde_json::Value;

use crate::args::Format;

/// Exit status when stdout was closed by its reader: 141, what a shell reports for a
/// process killed by SIGPIPE (128 + 13), as `cat`, `ls` or `yes` piped into `head` exit.
/// Nothing goes to stderr. A command whose request had succeeded before its output was cut
/// off still did what it was asked; the status says only that its output was not all read.
pub(crate) const STDOUT_CLOSED_EXIT: u8 = 141;

/// The reader of stdout went away (a write failed with `ErrorKind::BrokenPipe`).
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Turns the result of a write to stdout into the command's error: [`StdoutClosed`] for a
/// closed pipe, the I/O error with context otherwise.
pub(crate) fn stdout_result(result: io::Result<()>) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// Writes its `format!` arguments to stdout; evaluates to `anyhow::Result<()>` whose error is
/// [`StdoutClosed`] when the reader went away (instead of `print!`'s panic).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdout_result({
            use ::std::io::Write as _;
            ::std::write!(::std::io::stdout().lock(), $($arg)*)
        })
    };
}

/// [`out!`] followed by a newline (`println!` that fails instead of panicking).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::stdout_result({
            use ::std::io::Write as _;
            ::std::writeln!(::std::io::stdout().lock(), $($arg)*)
        })
    };
}

pub(crate) use {out, outln};

/// Flushes stdout (what `out!` left in its line buffer), with the errors of [`out!`].
pub(crate) fn flush() -> anyhow::Result<()> {
    use io::Write as _;
    stdout_result(io::stdout().lock().flush())
}

/// Prints `rows` under `headers` as aligned columns, or `json` as pretty JSON.
///
/// Errors: [`StdoutClosed`] when stdout's reader went away; another write error.
pub(crate) fn print(
    format: Format,
    json: &Value,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string())
        ),
        Format::Table => out!("{}", table(headers, &rows)),
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
