//! Service logs across the cluster, sans IO: what a node asks its peers, what they answer,
//! and how the answers become one page of lines in time order.
//!
//! `warren-cli service logs NAME` reaches one peer's API; that peer sends a [`LogsRequest`]
//! over the mesh (`RequestKind::Logs`, members only) to every node that has a task of the
//! service, reads its own tasks' containers itself, and merges the [`LogsResponse`]s with
//! [`merge`] into one [`Page`].
//!
//! # Cursors, so that following never repeats or skips a line
//!
//! A [`Cursor`] marks a position in one task's log on one node: after every line older than
//! `ts`, and after the first `skip` lines stamped exactly `ts` (two lines can share a
//! nanosecond). A page carries the cursor of every task it read ([`Page::cursor`], one opaque
//! string); asking again with it returns only lines after it. A task without a cursor is
//! read from `since` (or its start), keeping its last `tail` lines.
//!
//! # Bounds
//!
//! A node answers at most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes of text, each line at
//! most [`MAX_LINE_BYTES`]; so does a page. What does not fit is cut *from the newest end*
//! and the answer says [`more`](Page::more): its cursors point just after the last line
//! given, so asking again continues exactly there. When one node's answer is cut at time T,
//! the page keeps only lines up to T from every node, so pages stay in time order.
//!
//! A peer asking n nodes gives each a share of a page's bounds ([`LogsRequest::share`]:
//! never below 100 lines and one longest line), so the answers it holds at once stay near one
//! page however many nodes run the service.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::engine::{LogLine, LogStream};

/// Most lines in one node's answer and in one page.
pub const MAX_LINES: usize = 2_000;
/// Most bytes of line text in one node's answer and in one page (256 KiB).
pub const MAX_BYTES: usize = 256 * 1024;
/// Longest line, in bytes; longer ones are cut with `…`.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Most task cursors a request or a page carries.
pub const MAX_CURSORS: usize = 4_096;

/// A position in one task's log: after all lines older than `ts` and after the first `skip`
/// lines stamped `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    /// Unix nanoseconds (the clock of the engine that stamped the lines).
    pub ts: i64,
    /// Lines stamped exactly `ts` already delivered.
    pub skip: u32,
}

impl Cursor {
    /// The cursor before every line stamped at or after `since` (Unix nanoseconds).
    pub fn at(since: i64) -> Self {
        Cursor { ts: since, skip: 0 }
    }

    /// Whether a line stamped `ts` comes after this cursor. `seen_at_ts` counts the lines
    /// stamped exactly `self.ts` met so far (including this one when `ts == self.ts`).
    fn admits(&self, ts: i64, seen_at_ts: u32) -> bool {
        ts > self.ts || (ts == self.ts && seen_at_ts > self.skip)
    }

    /// The cursor after delivering, from this position, lines stamped `stamps` (in order).
    fn advance(prior: Option<Cursor>, stamps: &[i64]) -> Option<Cursor> {
        let Some(&last) = stamps.last() else {
            return prior;
        };
        let at_last = stamps.iter().rev().take_while(|t| **t == last).count();
        let at_last = u32::try_from(at_last).unwrap_or(u32::MAX);
        let skip = match prior {
            Some(p) if p.ts == last => p.skip.saturating_add(at_last),
            _ => at_last,
        };
        Some(Cursor { ts: last, skip })
    }
}

/// The cursor of one slot, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCursor {
    /// The task's slot.
    pub slot: u32,
    /// Its position.
    #[serde(flatten)]
    pub cursor: Cursor,
}

/// What a node asks another for (`RequestKind::Logs`, JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// The service.
    pub service: String,
    /// Lines stamped at or after this time only (Unix nanoseconds), for tasks without a cursor.
    #[serde(default)]
    pub since: Option<i64>,
    /// The last N lines only, for tasks without a cursor.
    #[serde(default)]
    pub tail: Option<u32>,
    /// Where to continue, per slot; at most [`MAX_CURSORS`] are heeded.
    #[serde(default)]
    pub cursors: Vec<SlotCursor>,
    /// Most lines to answer (at most [`MAX_LINES`], the default): a peer asking many nodes at
    /// once gives each a share, so a page's answers together stay small.
    #[serde(default)]
    pub max_lines: Option<u32>,
    /// Most bytes of text to answer (at most [`MAX_BYTES`], the default; at least one
    /// longest line, so every answer makes progress).
    #[serde(default)]
    pub max_bytes: Option<u32>,
}

impl LogsRequest {
    /// The cursor of `slot`, if the request has one.
    pub fn cursor(&self, slot: u32) -> Option<Cursor> {
        self.cursors
            .iter()
            .take(MAX_CURSORS)
            .find(|c| c.slot == slot)
            .map(|c| c.cursor)
    }

    /// The line limit of the answer: `max_lines` within 1..=[`MAX_LINES`].
    pub fn line_limit(&self) -> usize {
        self.max_lines
            .map_or(MAX_LINES, |n| (n as usize).clamp(1, MAX_LINES))
    }

    /// The byte limit of the answer: `max_bytes` within one longest line..=[`MAX_BYTES`].
    pub fn byte_limit(&self) -> usize {
        self.max_bytes
            .map_or(MAX_BYTES, |n| (n as usize).clamp(MIN_BYTES, MAX_BYTES))
    }

    /// The share of a page each of `nodes` nodes answers: the page's bounds divided among
    /// them, never below one longest line or 100 lines.
    pub fn share(nodes: usize) -> (u32, u32) {
        let n = nodes.max(1);
        let lines = (MAX_LINES / n).clamp(100, MAX_LINES);
        let bytes = (MAX_BYTES / n).max(MIN_BYTES);
        (
            u32::try_from(lines).unwrap_or(u32::MAX),
            u32::try_from(bytes).unwrap_or(u32::MAX),
        )
    }
}

/// The smallest byte limit of an answer: one longest line with its fields.
const MIN_BYTES: usize = MAX_LINE_BYTES + LINE_OVERHEAD;
/// What a line's fields count against a byte limit besides its text.
const LINE_OVERHEAD: usize = 32;

/// One line of a node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotLine {
    /// The task's slot.
    pub slot: u32,
    /// stdout or stderr.
    pub stream: LogStream,
    /// Unix nanoseconds.
    pub ts: i64,
    /// The text, at most [`MAX_LINE_BYTES`].
    pub text: String,
}

/// A node's answer to a [`LogsRequest`] (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsResponse {
    /// The answering node's name.
    pub node_name: String,
    /// Lines in time order.
    pub lines: Vec<SlotLine>,
    /// The position after this answer of every task whose log was read (none for a task in
    /// tail mode whose lines were all cut).
    pub cursors: Vec<SlotCursor>,
    /// Cut at a limit: ask again with the cursors for the rest.
    pub more: bool,
}

impl LogsResponse {
    /// The answer cut to the bounds a peer may make us hold: [`MAX_LINES`] lines (the newest
    /// dropped, `more` set), [`MAX_LINE_BYTES`] per line, [`MAX_CURSORS`] cursors, a 64-byte
    /// node name. Applied to every answer that comes from a peer.
    pub fn bounded(mut self) -> Self {
        self.node_name = crate::engine::truncate_text(&self.node_name, 64);
        if self.lines.len() > MAX_LINES {
            self.lines.truncate(MAX_LINES);
            self.more = true;
        }
        for line in &mut self.lines {
            if line.text.len() > MAX_LINE_BYTES {
                line.text = crate::engine::truncate_text(&line.text, MAX_LINE_BYTES);
            }
        }
        self.cursors.truncate(MAX_CURSORS);
        self
    }
}

/// What a node read from the engine for one of its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLog {
    /// The task's slot.
    pub slot: u32,
    /// Lines the read kept (see [`keeps`]), oldest first.
    pub lines: Vec<LogLine>,
    /// The read stopped at a limit: more lines may follow the last one.
    pub cut: bool,
}

/// A filter for one task's read: keeps the lines after `request`'s cursor for `slot`, or at
/// or after `request.since` when it has none. Feed it each line of the log in order.
pub fn keeps(request: &LogsRequest, slot: u32) -> impl FnMut(&LogLine) -> bool + Send {
    let start = request
        .cursor(slot)
        .or_else(|| request.since.map(Cursor::at));
    let mut seen_at_ts = 0u32;
    move |line: &LogLine| match start {
        None => true,
        Some(c) => {
            if line.ts == c.ts {
                seen_at_ts = seen_at_ts.saturating_add(1);
            }
            c.admits(line.ts, seen_at_ts)
        }
    }
}

/// The engine query for one task: from the cursor's second (the engine filters by whole
/// seconds), or from `since` with `tail` when there is no cursor.
pub fn engine_query(request: &LogsRequest, slot: u32) -> crate::engine::LogQuery {
    let nanos_to_secs = |ns: i64| ns.div_euclid(1_000_000_000);
    let (since_secs, tail) = match request.cursor(slot) {
        Some(c) => (nanos_to_secs(c.ts), None),
        None => (request.since.map_or(0, nanos_to_secs), request.tail),
    };
    crate::engine::LogQuery {
        since_secs,
        tail,
        max_lines: request.line_limit(),
        max_bytes: request.byte_limit(),
        max_line_bytes: MAX_LINE_BYTES,
    }
}

/// Bytes a line counts against [`MAX_BYTES`]: its text and a little for its fields.
fn weight(text: &str) -> usize {
    text.len() + LINE_OVERHEAD
}

/// A node's answer from what it read of its tasks: every task's lines merged in time order,
/// cut at the bounds, with the cursor of each task after it.
pub fn answer(request: &LogsRequest, node_name: &str, tasks: Vec<TaskLog>) -> LogsResponse {
    // Lines up to the earliest point where a read was cut: beyond it, that task's lines are
    // unknown, so other tasks' later lines would come out of order.
    let horizon = tasks
        .iter()
        .filter(|t| t.cut)
        .filter_map(|t| t.lines.last().map(|l| l.ts))
        .min();
    let mut more = tasks.iter().any(|t| t.cut);
    let mut all: Vec<SlotLine> = Vec::new();
    for task in &tasks {
        for line in &task.lines {
            if horizon.is_some_and(|h| line.ts > h) {
                continue;
            }
            all.push(SlotLine {
                slot: task.slot,
                stream: line.stream,
                ts: line.ts,
                text: line.text.clone(),
            });
        }
    }
    // Stable: lines of one task keep their order.
    all.sort_by_key(|l| l.ts);
    let (lines, cut) = take_bounded(all, |l| &l.text, request.line_limit(), request.byte_limit());
    more |= cut;

    let mut cursors = Vec::new();
    for task in &tasks {
        let delivered: Vec<i64> = lines
            .iter()
            .filter(|l| l.slot == task.slot)
            .map(|l| l.ts)
            .collect();
        let prior = request.cursor(task.slot);
        let read_everything = !task.cut && delivered.len() == task.lines.len();
        let cursor = if delivered.is_empty() && prior.is_none() && !read_everything {
            // Tail mode and every line cut: read this task afresh next time.
            None
        } else if delivered.is_empty() && prior.is_none() {
            // Nothing (more) in its log: everything from `since` on is new next time.
            Some(Cursor::at(request.since.unwrap_or(0)))
        } else {
            Cursor::advance(prior, &delivered)
        };
        if let Some(cursor) = cursor {
            cursors.push(SlotCursor {
                slot: task.slot,
                cursor,
            });
        }
    }
    LogsResponse {
        node_name: node_name.to_string(),
        lines,
        cursors,
        more,
    }
}

/// The oldest items of `items` that fit in `max_lines` and `max_bytes`, and whether any were
/// left out.
fn take_bounded<T>(
    items: Vec<T>,
    text: impl Fn(&T) -> &str,
    max_lines: usize,
    max_bytes: usize,
) -> (Vec<T>, bool) {
    let mut bytes = 0usize;
    let total = items.len();
    let mut out = Vec::new();
    for item in items {
        let w = weight(text(&item));
        if out.len() >= max_lines || bytes.saturating_add(w) > max_bytes {
            break;
        }
        bytes += w;
        out.push(item);
    }
    let cut = out.len() < total;
    (out, cut)
}

/// The cursors of every task a client has read, keyed by node id and slot; one opaque
/// string in a page (`SLOT@NODE:TS:SKIP`, comma-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CursorSet(pub BTreeMap<(String, u32), Cursor>);

/// Why a cursor text does not parse ([`CursorSet::decode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// More than [`MAX_CURSORS`] entries.
    #[error("more than {MAX_CURSORS} cursors")]
    TooMany,
    /// An entry that is not `SLOT@NODE:TS:SKIP` (the entry, cut short).
    #[error("bad cursor entry {0:?}")]
    BadEntry(String),
}

impl CursorSet {
    /// Parses [`CursorSet::encode`]'s form; empty text is the empty set.
    ///
    /// Errors: [`CursorError`]: a malformed entry, or more than [`MAX_CURSORS`] entries.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let mut set = BTreeMap::new();
        for (i, entry) in text.split(',').filter(|e| !e.is_empty()).enumerate() {
            if i >= MAX_CURSORS {
                return Err(CursorError::TooMany);
            }
            let bad = || CursorError::BadEntry(truncate(entry).to_string());
            let (slot, rest) = entry.split_once('@').ok_or_else(bad)?;
            let mut parts = rest.split(':');
            let (Some(node), Some(ts), Some(skip), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            if node.is_empty() || node.len() > 128 {
                return Err(bad());
            }
            let slot: u32 = slot.parse().map_err(|_| bad())?;
            let ts: i64 = ts.parse().map_err(|_| bad())?;
            let skip: u32 = skip.parse().map_err(|_| bad())?;
            set.insert((node.to_string(), slot), Cursor { ts, skip });
        }
        Ok(CursorSet(set))
    }

    /// The text form, for [`Page::cursor`].
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|((node, slot), c)| format!("{slot}@{node}:{}:{}", c.ts, c.skip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cursors `node` should continue from.
    pub fn for_node(&self, node: &str) -> Vec<SlotCursor> {
        self.0
            .iter()
            .filter(|((n, _), _)| n == node)
            .map(|((_, slot), cursor)| SlotCursor {
                slot: *slot,
                cursor: *cursor,
            })
            .collect()
    }
}

fn truncate(text: &str) -> String {
    crate::engine::truncate_text(text, 64)
}

/// One line of a [`Page`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageLine {
    /// The task's slot.
    pub slot: u32,
    /// The node that runs it (peer id).
    pub node: String,
    /// That node's name.
    pub node_name: String,
    /// stdout or stderr.
    pub stream: LogStream,
    /// Unix nanoseconds, by the clock of that node's engine.
    pub ts: i64,
    /// The text.
    pub text: String,
}

/// A node that did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    /// Its peer id.
    pub node: String,
    /// Its name.
    pub node_name: String,
    /// Why.
    pub error: String,
}

/// What `GET /v1/services/{name}/logs` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The service.
    pub service: String,
    /// Lines of every task, in time order.
    pub lines: Vec<PageLine>,
    /// Where to continue: pass it back as `cursor=` for the lines after this page.
    pub cursor: String,
    /// A bound cut this page: ask again with `cursor` at once for the rest.
    pub more: bool,
    /// Nodes with tasks of the service that did not answer.
    pub unreachable: Vec<Unreachable>,
}

/// One node's part in a [`merge`].
#[derive(Debug, Clone)]
pub struct NodeAnswer {
    /// Its peer id.
    pub node: String,
    /// Its name as the document knows it (used when it did not answer).
    pub node_name: String,
    /// Its answer, or why there is none.
    pub result: Result<LogsResponse, String>,
}

/// Merges the nodes' answers into one page: lines in time order up to the earliest point
/// where a node's answer was cut, bounded again by [`MAX_LINES`] and [`MAX_BYTES`], with the
/// cursors of `prior` advanced past what the page holds. Cursors of tasks no longer assigned
/// (`assigned`: node id and slot) are dropped; those of nodes that did not answer are kept,
/// so a node back from an outage continues where it stopped.
pub fn merge(
    service: &str,
    prior: &CursorSet,
    assigned: &BTreeSet<(String, u32)>,
    answers: Vec<NodeAnswer>,
) -> Page {
    let mut unreachable = Vec::new();
    let mut responses = Vec::new();
    for answer in answers {
        match answer.result {
            Ok(response) => responses.push((answer.node, response)),
            Err(error) => unreachable.push(Unreachable {
                node: answer.node,
                node_name: answer.node_name,
                error,
            }),
        }
    }
    let horizon = responses
        .iter()
        .filter(|(_, r)| r.more)
        .filter_map(|(_, r)| r.lines.last().map(|l| l.ts))
        .min();
    let mut more = responses.iter().any(|(_, r)| r.more);
    // (line, index of its node's response)
    let mut all: Vec<(PageLine, usize)> = Vec::new();
    for (i, (node, response)) in responses.iter().enumerate() {
        for line in &response.lines {
            if horizon.is_some_and(|h| line.ts > h) {
                continue;
            }
            all.push((
                PageLine {
                    slot: line.slot,
                    node: node.clone(),
                    node_name: response.node_name.clone(),
                    stream: line.stream,
                    ts: line.ts,
                    text: line.text.clone(),
                },
                i,
            ));
        }
    }
    all.sort_by(|(a, _), (b, _)| (a.ts, &a.node, a.slot).cmp(&(b.ts, &b.node, b.slot)));
    let (kept, cut) = take_bounded(all, |(l, _)| &l.text, MAX_LINES, MAX_BYTES);
    more |= cut;

    let mut cursors = CursorSet(
        prior
            .0
            .iter()
            .filter(|(key, _)| assigned.contains(key))
            .map(|(k, c)| (k.clone(), *c))
            .collect(),
    );
    for (i, (node, response)) in responses.iter().enumerate() {
        for reported in &response.cursors {
            let key = (node.clone(), reported.slot);
            if !assigned.contains(&key) {
                continue;
            }
            let given = response
                .lines
                .iter()
                .filter(|l| l.slot == reported.slot)
                .count();
            let delivered: Vec<i64> = kept
                .iter()
                .filter(|(l, n)| *n == i && l.slot == reported.slot)
                .map(|(l, _)| l.ts)
                .collect();
            let cursor = if delivered.len() == given {
                // All the node gave of this task is in the page: its cursor holds.
                Some(reported.cursor)
            } else {
                Cursor::advance(prior.0.get(&key).copied(), &delivered)
            };
            match cursor {
                Some(c) => {
                    cursors.0.insert(key, c);
                }
                None => {
                    cursors.0.remove(&key);
                }
            }
        }
    }
    while cursors.0.len() > MAX_CURSORS {
        cursors.0.pop_last();
    }
    Page {
        service: service.to_string(),
        lines: kept.into_iter().map(|(l, _)| l).collect(),
        cursor: cursors.encode(),
        more,
        unreachable,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(ts: i64, text: &str) -> LogLine {
        LogLine {
            ts,
            stream: LogStream::Stdout,
            text: text.to_string(),
        }
    }

    fn request(cursors: &[(u32, i64, u32)]) -> LogsRequest {
        LogsRequest {
            service: "web".into(),
            since: None,
            tail: None,
            max_lines: None,
            max_bytes: None,
            cursors: cursors
                .iter()
                .map(|&(slot, ts, skip)| SlotCursor {
                    slot,
                    cursor: Cursor { ts, skip },
                })
                .collect(),
        }
    }

    /// The lines `keeps` lets through from `log`.
    fn filtered(req: &LogsRequest, slot: u32, log: &[LogLine]) -> Vec<String> {
        let mut keep = keeps(req, slot);
        log.iter()
            .filter(|l| keep(l))
            .map(|l| l.text.clone())
            .collect()
    }

    #[test]
    fn a_cursor_skips_lines_sharing_its_nanosecond_exactly_once() {
        let log = [
            line(5, "a"),
            line(7, "b"),
            line(7, "c"),
            line(7, "d"),
            line(9, "e"),
        ];
        assert_eq!(filtered(&request(&[]), 0, &log), ["a", "b", "c", "d", "e"]);
        assert_eq!(
            filtered(&request(&[(0, 7, 1)]), 0, &log),
            ["c", "d", "e"],
            "one line at 7 was delivered"
        );
        assert_eq!(filtered(&request(&[(0, 7, 3)]), 0, &log), ["e"]);
        assert_eq!(
            filtered(&request(&[(0, 7, 0)]), 0, &log),
            ["b", "c", "d", "e"]
        );
        // Another slot's cursor does not apply.
        assert_eq!(filtered(&request(&[(1, 7, 3)]), 0, &log).len(), 5);
        // `since` without a cursor: at or after.
        let mut since = request(&[]);
        since.since = Some(7);
        assert_eq!(filtered(&since, 0, &log), ["b", "c", "d", "e"]);
    }

    #[test]
    fn engine_query_asks_from_the_cursors_second_without_tail() {
        let mut req = request(&[(0, 3_500_000_000, 2)]);
        req.tail = Some(5);
        req.since = Some(1_000_000_000);
        let q = engine_query(&req, 0);
        assert_eq!((q.since_secs, q.tail), (3, None));
        let q = engine_query(&req, 1);
        assert_eq!((q.since_secs, q.tail), (1, Some(5)));
        assert_eq!(q.max_lines, MAX_LINES);
    }

    #[test]
    fn answer_merges_tasks_in_time_order_with_cursors() {
        let req = request(&[(1, 4, 1)]);
        let tasks = vec![
            TaskLog {
                slot: 0,
                lines: vec![line(1, "0a"), line(6, "0b")],
                cut: false,
            },
            TaskLog {
                slot: 1,
                lines: vec![line(4, "1a"), line(5, "1b")],
                cut: false,
            },
            // Read, empty: a cursor at `since` (0) so its first lines count as new.
            TaskLog {
                slot: 2,
                lines: vec![],
                cut: false,
            },
        ];
        let r = answer(&req, "n1", tasks);
        let texts: Vec<&str> = r.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["0a", "1a", "1b", "0b"]);
        assert!(!r.more);
        assert_eq!(r.node_name, "n1");
        let cursors: Vec<(u32, i64, u32)> = r
            .cursors
            .iter()
            .map(|c| (c.slot, c.cursor.ts, c.cursor.skip))
            .collect();
        assert_eq!(cursors, [(0, 6, 1), (1, 5, 1), (2, 0, 0)]);
    }

    #[test]
    fn a_cursor_at_the_same_nanosecond_accumulates_its_skip() {
        // Delivered one line at 7 before; now two more at 7.
        let req = request(&[(0, 7, 1)]);
        let r = answer(
            &req,
            "n",
            vec![TaskLog {
                slot: 0,
                lines: vec![line(7, "c"), line(7, "d")],
                cut: false,
            }],
        );
        assert_eq!(r.cursors[0].cursor, Cursor { ts: 7, skip: 3 });
        // Nothing new: the cursor stays.
        let r = answer(
            &req,
            "n",
            vec![TaskLog {
                slot: 0,
                lines: vec![],
                cut: false,
            }],
        );
        assert_eq!(r.cursors[0].cursor, Cursor { ts: 7, skip: 1 });
    }

    #[test]
    fn a_cut_read_holds_back_later_lines_of_other_tasks() {
        let tasks = vec![
            TaskLog {
                slot: 0,
                lines: vec![line(1, "a"), line(3, "b")],
                cut: true,
            },
            TaskLog {
                slot: 1,
                lines: vec![line(2, "x"), line(3, "y"), line(4, "z")],
                cut: false,
            },
        ];
        let r = answer(&request(&[]), "n", tasks);
        let texts: Vec<&str> = r.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "x", "b", "y"], "z comes after the cut at 3");
        assert!(r.more);
        let c1 = r.cursors.iter().find(|c| c.slot == 1).unwrap();
        assert_eq!(c1.cursor, Cursor { ts: 3, skip: 1 });
    }

    #[test]
    fn too_many_lines_keep_the_oldest_say_more_and_resume_exactly() {
        // Three tasks in tail mode with 1,000 lines each: 3,000 > MAX_LINES.
        let tasks: Vec<TaskLog> = (0..3)
            .map(|slot| TaskLog {
                slot,
                lines: (0..1000)
                    .map(|i| line(i * 10 + i64::from(slot), &format!("{slot}:{i}")))
                    .collect(),
                cut: false,
            })
            .collect();
        let req = request(&[]);
        let first = answer(&req, "n", tasks.clone());
        assert_eq!(first.lines.len(), MAX_LINES);
        assert!(first.more);
        assert!(first.lines.windows(2).all(|w| w[0].ts <= w[1].ts));
        // Continue: the node filters with the cursors (as the engine read would).
        let next = LogsRequest {
            cursors: first.cursors.clone(),
            ..req.clone()
        };
        let rest: Vec<TaskLog> = tasks
            .iter()
            .map(|t| {
                let mut keep = keeps(&next, t.slot);
                TaskLog {
                    slot: t.slot,
                    lines: t.lines.iter().filter(|l| keep(l)).cloned().collect(),
                    cut: false,
                }
            })
            .collect();
        let second = answer(&next, "n", rest);
        assert!(!second.more);
        let mut all: Vec<String> = first.lines.iter().map(|l| l.text.clone()).collect();
        all.extend(second.lines.iter().map(|l| l.text.clone()));
        assert_eq!(all.len(), 3000, "nothing lost, nothing twice");
        let unique: BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), 3000);
    }

    #[test]
    fn the_byte_bound_cuts_too() {
        let big = "x".repeat(MAX_LINE_BYTES);
        let tasks = vec![TaskLog {
            slot: 0,
            lines: (0..40).map(|i| line(i, &big)).collect(),
            cut: false,
        }];
        let r = answer(&request(&[]), "n", tasks);
        assert!(r.more);
        let bytes: usize = r.lines.iter().map(|l| l.text.len()).sum();
        assert!(bytes <= MAX_BYTES && r.lines.len() == MAX_BYTES / (MAX_LINE_BYTES + 32));
    }

    #[test]
    fn a_node_answers_its_share_of_a_page() {
        assert_eq!(LogsRequest::share(1), (MAX_LINES as u32, MAX_BYTES as u32));
        assert_eq!(LogsRequest::share(4), (500, (MAX_BYTES / 4) as u32));
        // Many nodes: never less than one longest line, so every answer makes progress.
        assert_eq!(LogsRequest::share(1000), (100, MIN_BYTES as u32));
        let mut req = request(&[]);
        (req.max_lines, req.max_bytes) = (Some(3), Some(1));
        assert_eq!((req.line_limit(), req.byte_limit()), (3, MIN_BYTES));
        let r = answer(
            &req,
            "n",
            vec![TaskLog {
                slot: 0,
                lines: (0..10).map(|i| line(i, "l")).collect(),
                cut: false,
            }],
        );
        assert_eq!(r.lines.len(), 3);
        assert!(r.more);
        assert_eq!(r.cursors[0].cursor, Cursor { ts: 2, skip: 1 });
        (req.max_lines, req.max_bytes) = (Some(u32::MAX), Some(u32::MAX));
        assert_eq!((req.line_limit(), req.byte_limit()), (MAX_LINES, MAX_BYTES));
    }

    #[test]
    fn cursor_sets_round_trip_and_reject_garbage() {
        let mut set = CursorSet::default();
        set.0
            .insert(("12D3KooWa".into(), 0), Cursor { ts: 5, skip: 0 });
        set.0
            .insert(("12D3KooWb".into(), 2), Cursor { ts: -1, skip: 3 });
        let text = set.encode();
        assert_eq!(CursorSet::decode(&text).unwrap(), set);
        assert_eq!(CursorSet::decode("").unwrap(), CursorSet::default());
        for bad in [
            "x",
            "0@n:1",
            "0@n:1:2:3",
            "a@n:1:2",
            "0@:1:2",
            "0@n:x:2",
            "0@n:1:-2",
        ] {
            assert!(CursorSet::decode(bad).is_err(), "{bad}");
        }
        let many = (0..=MAX_CURSORS)
            .map(|i| format!("{i}@n:1:0"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(CursorSet::decode(&many).is_err());
    }

    fn slot_line(slot: u32, ts: i64, text: &str) -> SlotLine {
        SlotLine {
            slot,
            stream: LogStream::Stdout,
            ts,
            text: text.to_string(),
        }
    }

    fn assigned(pairs: &[(&str, u32)]) -> BTreeSet<(String, u32)> {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn merge_orders_nodes_by_time_and_lists_the_unreachable() {
        let a = LogsResponse {
            node_name: "n1".into(),
            lines: vec![slot_line(0, 1, "a1"), slot_line(0, 3, "a3")],
            cursors: vec![SlotCursor {
                slot: 0,
                cursor: Cursor { ts: 3, skip: 1 },
            }],
            more: false,
        };
        let b = LogsResponse {
            node_name: "n2".into(),
            lines: vec![slot_line(1, 2, "b2")],
            cursors: vec![SlotCursor {
                slot: 1,
                cursor: Cursor { ts: 2, skip: 1 },
            }],
            more: false,
        };
        let mut prior = CursorSet::default();
        prior.0.insert(("C".into(), 2), Cursor { ts: 9, skip: 1 });
        prior
            .0
            .insert(("gone".into(), 5), Cursor { ts: 9, skip: 1 });
        let page = merge(
            "web",
            &prior,
            &assigned(&[("A", 0), ("B", 1), ("C", 2)]),
            vec![
                NodeAnswer {
                    node: "A".into(),
                    node_name: "n1".into(),
                    result: Ok(a),
                },
                NodeAnswer {
                    node: "B".into(),
                    node_name: "n2".into(),
                    result: Ok(b),
                },
                NodeAnswer {
                    node: "C".into(),
                    node_name: "n3".into(),
                    result: Err("timed out".into()),
                },
            ],
        );
        let shown: Vec<String> = page
            .lines
            .iter()
            .map(|l| format!("{}.{}@{}", l.text, l.slot, l.node_name))
            .collect();
        assert_eq!(shown, ["a1.0@n1", "b2.1@n2", "a3.0@n1"]);
        assert!(!page.more);
        assert_eq!(page.unreachable.len(), 1);
        assert_eq!(page.unreachable[0].node_name, "n3");
        let cursors = CursorSet::decode(&page.cursor).unwrap();
        // C's cursor survives its outage; a task no longer assigned is forgotten.
        assert_eq!(
            cursors.0.keys().cloned().collect::<Vec<_>>(),
            [
                ("A".to_string(), 0),
                ("B".to_string(), 1),
                ("C".to_string(), 2)
            ]
        );
        assert_eq!(cursors.0[&("A".to_string(), 0)], Cursor { ts: 3, skip: 1 });
    }

    #[test]
    fn merge_stops_at_the_earliest_cut_node_and_rewinds_the_others() {
        // A was cut at 3; B has lines up to 6. The page ends at 3 and B resumes after its
        // line at 3 (from its prior cursor), not at 6.
        let a = LogsResponse {
            node_name: "n1".into(),
            lines: vec![slot_line(0, 1, "a1"), slot_line(0, 3, "a3")],
            cursors: vec![SlotCursor {
                slot: 0,
                cursor: Cursor { ts: 3, skip: 1 },
            }],
            more: true,
        };
        let b = LogsResponse {
            node_name: "n2".into(),
            lines: vec![
                slot_line(1, 2, "b2"),
                slot_line(1, 3, "b3"),
                slot_line(1, 6, "b6"),
            ],
            cursors: vec![SlotCursor {
                slot: 1,
                cursor: Cursor { ts: 6, skip: 1 },
            }],
            more: false,
        };
        let page = merge(
            "web",
            &CursorSet::default(),
            &assigned(&[("A", 0), ("B", 1)]),
            vec![
                NodeAnswer {
                    node: "A".into(),
                    node_name: "n1".into(),
                    result: Ok(a),
                },
                NodeAnswer {
                    node: "B".into(),
                    node_name: "n2".into(),
                    result: Ok(b),
                },
            ],
        );
        let texts: Vec<&str> = page.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a1", "b2", "a3", "b3"]);
        assert!(page.more);
        let cursors = CursorSet::decode(&page.cursor).unwrap();
        assert_eq!(cursors.0[&("B".to_string(), 1)], Cursor { ts: 3, skip: 1 });
    }

    #[test]
    fn a_peer_answer_is_bounded() {
        let r = LogsResponse {
            node_name: "n".repeat(1000),
            lines: (0..MAX_LINES as i64 + 5)
                .map(|i| {
                    slot_line(
                        0,
                        i,
                        &"y".repeat(if i == 0 { MAX_LINE_BYTES * 2 } else { 1 }),
                    )
                })
                .collect(),
            cursors: vec![],
            more: false,
        }
        .bounded();
        assert_eq!(r.lines.len(), MAX_LINES);
        assert!(r.more);
        assert!(r.lines[0].text.len() <= MAX_LINE_BYTES);
        assert!(r.node_name.len() <= 64);
    }
}
