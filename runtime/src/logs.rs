//! Reading a container's logs: bounded, timestamped, lossy UTF-8 lines.
//!
//! [`DockerRuntime::read_logs`] asks the engine for a container's stdout and stderr with
//! timestamps (`GET /containers/{id}/logs?timestamps=1`), splits what comes back into
//! [`LogLine`]s and stops reading shortly after a limit of [`LogQuery`] is reached, so a chatty
//! container never makes the node hold more than the caller allowed. Which lines to keep
//! (cursors, `since` to the nanosecond) is the caller's decision, passed in as a filter.

use futures::StreamExt;
use warren_core::engine::{truncate_text, LogLine, LogQuery, LogStream};

use crate::{docker::DockerRuntime, RuntimeError};

/// What [`DockerRuntime::read_logs`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    /// Kept lines, oldest first: sorted by timestamp, stably (the engine stamps each pipe as
    /// it reads it, and may store a stderr line after a later stdout line, or the reverse).
    pub lines: Vec<LogLine>,
    /// The read stopped at a limit: there may be more lines after the last one.
    pub cut: bool,
}

impl DockerRuntime {
    /// Reads the logs of container `id` (stdout and stderr, not following), keeping the
    /// lines for which `keep` returns true. The answer is the oldest kept lines by timestamp
    /// that fit the limits of `query`; when a limit cuts, [`LogRead::cut`] is set, the read
    /// goes on for at most [`REORDER_WINDOW_NS`] of log time (and
    /// [`REORDER_LOOKAHEAD_LINES`] lines) to place lines the engine stored out of order, and
    /// the rest of the stream is dropped unread.
    ///
    /// A line whose timestamp does not parse (not expected from the engine) gets the
    /// timestamp of the line before it.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] (`op = "logs"`; status 404 for an unknown container, see
    /// [`RuntimeError::status_code`]) or [`RuntimeError::Unavailable`].
    pub async fn read_logs(
        &self,
        id: &str,
        query: &LogQuery,
        mut keep: impl FnMut(&LogLine) -> bool + Send,
    ) -> Result<LogRead, RuntimeError> {
        let tail = query
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let since = i32::try_from(query.since_secs.max(0)).unwrap_or(i32::MAX);
        let options = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .follow(false)
            .since(since)
            .tail(&tail)
            .build();
        let mut stream = self.docker().logs(id, Some(options));
        let mut gather = Gather::new(query);
        let mut last_ts = 0i64;
        'frames: while let Some(frame) = stream.next().await {
            let frame = frame.map_err(|e| self.err("logs", e))?;
            let (stream_kind, message) = match frame {
                bollard::container::LogOutput::StdErr { message } => (LogStream::Stderr, message),
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => {
                    (LogStream::Stdout, message)
                }
                bollard::container::LogOutput::StdIn { .. } => continue,
            };
            for (ts, text) in split_frame(&message, last_ts) {
                last_ts = ts;
                let line = LogLine {
                    ts,
                    stream: stream_kind,
                    text: truncate_text(&text, query.max_line_bytes),
                };
                if !gather.offer(line, &mut keep) {
                    break 'frames;
                }
            }
        }
        Ok(gather.read)
    }
}

/// The lines of one read as they arrive in the engine's stored order: keeps the oldest by
/// timestamp within the limits, and says when reading on cannot change the answer.
struct Gather<'q> {
    query: &'q LogQuery,
    read: LogRead,
    /// Bytes of text in `read.lines`.
    bytes: usize,
    /// Set at the first cut: a line stamped after it ends the read.
    horizon: Option<i64>,
    /// Lines offered since the first cut.
    lookahead: usize,
}

impl<'q> Gather<'q> {
    fn new(query: &'q LogQuery) -> Self {
        Gather {
            query,
            read: LogRead::default(),
            bytes: 0,
            horizon: None,
            lookahead: 0,
        }
    }

    /// Takes the next stored line. Returns false when the read should stop: a limit has cut
    /// and this line lies past the reorder window or the lookahead budget (the line itself
    /// is not kept then).
    fn offer(&mut self, line: LogLine, keep: &mut impl FnMut(&LogLine) -> bool) -> bool {
        if let Some(horizon) = self.horizon {
            self.lookahead += 1;
            if line.ts > horizon || self.lookahead > REORDER_LOOKAHEAD_LINES {
                return false;
            }
        }
        if !keep(&line) {
            return true;
        }
        self.bytes = self.bytes.saturating_add(line.text.len());
        // After every line with the same timestamp: stored order breaks ties.
        let at = self.read.lines.partition_point(|l| l.ts <= line.ts);
        self.read.lines.insert(at, line);
        while self.read.lines.len() > self.query.max_lines || self.bytes > self.query.max_bytes {
            let Some(dropped) = self.read.lines.pop() else {
                break;
            };
            self.bytes -= dropped.text.len();
            self.read.cut = true;
            if self.horizon.is_none() {
                let newest = self.read.lines.last().map_or(dropped.ts, |l| l.ts);
                self.horizon = Some(newest.saturating_add(REORDER_WINDOW_NS));
            }
        }
        true
    }
}

/// How far out of timestamp order the engine may store a line (ns). The engine stamps each
/// pipe as it reads it and writes the two pipes' lines to its log in whatever order its
/// copiers run, so a stderr line can sit after stdout lines stamped later than it (seen:
/// a few lines, well under a millisecond apart). After a limit cuts a read,
/// [`DockerRuntime::read_logs`] reads on until a line stamped this much after the newest kept
/// line, so a late-stored line is never skipped by the next page's cursor.
pub const REORDER_WINDOW_NS: i64 = 1_000_000_000;

/// At most this many lines are read past a cut while looking for late-stored lines, so a
/// chatty container's burst within [`REORDER_WINDOW_NS`] cannot make one read unbounded.
pub const REORDER_LOOKAHEAD_LINES: usize = 10_000;

/// Splits one frame of a timestamped log stream into `(timestamp, text)` lines.
///
/// A frame is normally one line, `2026-11-22T02:52:31.123456789Z text\n`. Should it hold
/// several, each line may carry its own timestamp; one that does not gets the previous one
/// (`last_ts` for the first). The line break (and a `\r` before it) is removed; text is lossy
/// UTF-8.
pub(crate) fn split_frame(frame: &[u8], last_ts: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut ts = last_ts;
    let body = frame.strip_suffix(b"\n").unwrap_or(frame);
    for raw in body.split(|b| *b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let (line_ts, text) = match raw.iter().position(|b| *b == b' ') {
            Some(space) => match std::str::from_utf8(&raw[..space])
                .ok()
                .and_then(parse_rfc3339_nanos)
            {
                Some(t) => (t, &raw[space + 1..]),
                None => (ts, raw),
            },
            // A timestamp alone is an empty line.
            None => match std::str::from_utf8(raw).ok().and_then(parse_rfc3339_nanos) {
                Some(t) => (t, &raw[raw.len()..]),
                None => (ts, raw),
            },
        };
        ts = line_ts;
        out.push((ts, String::from_utf8_lossy(text).into_owned()));
    }
    out
}

/// Parses an RFC 3339 time such as the engine's log timestamps
/// (`2026-11-22T02:52:31.123456789Z`, any number of fraction digits, `Z` or `±HH:MM`) into
/// nanoseconds since the Unix epoch. `None` for anything else or a time outside
/// 1970–2262 (what `i64` nanoseconds hold).
pub fn parse_rfc3339_nanos(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0i64, |n, d| {
            n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        // Nanosecond precision: further digits are dropped.
        let kept = (end - start).min(9);
        nanos = digits(start..start + kept)? * 10i64.pow(9 - kept as u32);
        i = end;
    }
    let offset_secs = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_secs;
    if secs < 0 {
        return None;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(ts: i64, stream: LogStream, text: &str) -> LogLine {
        LogLine {
            ts,
            stream,
            text: text.to_string(),
        }
    }

    fn limits(max_lines: usize, max_bytes: usize) -> LogQuery {
        LogQuery {
            since_secs: 0,
            tail: None,
            max_lines,
            max_bytes,
            max_line_bytes: 1_024,
        }
    }

    /// Offers lines in stored order; returns what was kept and how many were offered.
    fn gather(query: &LogQuery, stored: &[LogLine]) -> (LogRead, usize) {
        let mut g = Gather::new(query);
        let mut offered = 0;
        for l in stored {
            offered += 1;
            if !g.offer(l.clone(), &mut |_| true) {
                break;
            }
        }
        (g.read, offered)
    }

    /// The CI failure of 2026-11-28: the engine stored a stderr line after ten stdout lines
    /// stamped later than it. A read cut at ten lines must still hold it, in its place.
    #[test]
    fn a_line_stored_late_still_takes_its_place_in_a_cut_read() {
        let mut stored: Vec<LogLine> = (0..30)
            .map(|i| line(1_000 + i * 100, LogStream::Stdout, &format!("out {i}")))
            .collect();
        stored.insert(10, line(1_150, LogStream::Stderr, "problem"));
        let (read, _) = gather(&limits(10, 1 << 20), &stored);
        assert!(read.cut);
        let texts: Vec<&str> = read.lines.iter().map(|l| l.text.as_str()).collect();
        let mut expected: Vec<String> = (0..9).map(|i| format!("out {i}")).collect();
        expected.insert(2, "problem".into());
        assert_eq!(texts, expected);
        // The uncut read has the same order.
        let (all, _) = gather(&limits(1_000, 1 << 20), &stored);
        assert!(!all.cut);
        assert_eq!(all.lines[..10], read.lines[..]);
    }

    #[test]
    fn a_cut_read_stops_at_the_reorder_horizon_and_the_lookahead_budget() {
        // One line a second: the first line past newest-kept + window ends the read.
        let stored: Vec<LogLine> = (0..100)
            .map(|i| line(i * REORDER_WINDOW_NS / 2, LogStream::Stdout, "x"))
            .collect();
        let (read, offered) = gather(&limits(3, 1 << 20), &stored);
        assert_eq!(read.lines, stored[..3]);
        // Kept 0..3; 3 cuts (horizon = ts[2] + window = ts[4]); 4 is within, 5 is past.
        assert_eq!(offered, 6);

        // Everything stamped alike: the lookahead budget ends it.
        let same: Vec<LogLine> = (0..REORDER_LOOKAHEAD_LINES + 100)
            .map(|i| line(7, LogStream::Stdout, &i.to_string()))
            .collect();
        let (read, offered) = gather(&limits(2, 1 << 20), &same);
        assert_eq!(read.lines, same[..2], "ties keep stored order");
        // Two kept, one cuts, the budget, then the line that ends it.
        assert_eq!(offered, 2 + 1 + REORDER_LOOKAHEAD_LINES + 1);
    }

    #[test]
    fn the_byte_limit_keeps_the_oldest_lines_that_fit() {
        let stored = vec![
            line(30, LogStream::Stdout, "cccc"),
            line(10, LogStream::Stderr, "aaaa"),
            line(20, LogStream::Stdout, "bbbb"),
        ];
        let (read, _) = gather(&limits(100, 9), &stored);
        assert!(read.cut);
        let texts: Vec<&str> = read.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["aaaa", "bbbb"]);
        // Nothing fits: empty, cut.
        let (read, _) = gather(&limits(0, 9), &stored);
        assert!(read.cut && read.lines.is_empty());
    }

    #[test]
    fn engine_timestamps_parse_to_unix_nanos() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos("2026-11-22T02:52:31.123456789Z"),
            Some(1_795_315_951_123_456_789)
        );
        // Fewer and more fraction digits; an offset.
        assert_eq!(
            parse_rfc3339_nanos("2026-11-22T02:52:31.5Z"),
            Some(1_795_315_951_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-11-22T02:52:31.1234567891Z"),
            Some(1_795_315_951_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-11-22T04:52:31+02:00"),
            Some(1_795_315_951_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000_000_000)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T02:52:31",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T02:52:31.Z",
            "2026-11-22T02:52:31.5",
            "2026-11-22T02:52:31+0200",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59Z",
            "2026-11-22T02:52:3xZ",
            "２026-11-22T02:52:31Z",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames_split_into_lines_with_their_timestamps() {
        let frame = b"2026-11-22T02:52:31.000000001Z line 0\n";
        assert_eq!(
            split_frame(frame, 0),
            vec![(1_795_315_951_000_000_001, "line 0".to_string())]
        );
        // Several lines in one frame; one without a timestamp inherits the previous one;
        // CRLF and invalid UTF-8 are handled; an empty line stays a line.
        let frame = b"2026-11-22T02:52:31Z a\r\nno stamp\n2026-11-22T02:52:32Z \xff\n2026-11-22T02:52:33Z\n";
        let lines = split_frame(frame, 7);
        let t = 1_795_315_951_000_000_000;
        assert_eq!(
            lines,
            vec![
                (t, "a".to_string()),
                (t, "no stamp".to_string()),
                (t + 1_000_000_000, "\u{fffd}".to_string()),
                (t + 2_000_000_000, String::new()),
            ]
        );
        // No timestamp at all: the caller's last one.
        assert_eq!(split_frame(b"plain\n", 7), vec![(7, "plain".to_string())]);
    }
}
