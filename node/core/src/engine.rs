//! What a node and its container engine tell each other, as plain data: the ports a
//! container published, the lines of its log and how much of it to read.
//!
//! These types cross the boundary between the sans-IO core and the container runtime, so
//! they live here and `warren-runtime` re-exports them: its public API names them as before
//! (`warren_runtime::PublishedPort`, ...), and the core reads them without linking the
//! engine's client.

use serde::{Deserialize, Serialize};

/// A TCP port the engine actually published: `host_ip:host_port` on the host forwards to
/// `container_port` in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Port inside the container.
    pub container_port: u16,
    /// Host address the port is bound on, e.g. `"127.0.0.1"` (empty if the engine did not say).
    pub host_ip: String,
    /// Host port, chosen by the engine when the mapping's `host_port` was `None`.
    pub host_port: u16,
}

/// Which output stream of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output (also a TTY's console).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the engine received the line, in nanoseconds since the Unix epoch (the engine's
    /// clock).
    pub ts: i64,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The line without its line break, lossy UTF-8, at most [`LogQuery::max_line_bytes`].
    pub text: String,
}

/// What to read of a container's log and how much at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Ask the engine only for lines from this second on (Unix seconds; `0`: from the
    /// start). The engine's filter is per second: finer filtering is the caller's `keep`.
    pub since_secs: i64,
    /// Ask the engine only for the last N lines (before `since_secs` applies), `None`: all.
    pub tail: Option<u32>,
    /// Stop after this many kept lines.
    pub max_lines: usize,
    /// Stop once the kept lines' text reaches this many bytes.
    pub max_bytes: usize,
    /// Cut longer lines to this many bytes (with `…`).
    pub max_line_bytes: usize,
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` appended when cut.
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let ellipsis = if max >= '…'.len_utf8() { "…" } else { "" };
    let mut end = max - ellipsis.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_text("short", 10), "short");
        let cut = truncate_text("ééééééé", 8);
        assert!(cut.len() <= 8, "{cut}");
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_text("abcdef", 4), "a…");
    }
}
