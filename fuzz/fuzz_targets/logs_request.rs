//! A member's logs request: `serde_json::from_slice::<LogsRequest>` as
//! `daemon::logs::LogService::serve` calls it, then what `read_local` does with it minus the
//! engine: `engine_query` and the `keeps` filter for three slots over lines stamped around the
//! request's own cursors, the engine's limits applied, `answer`, and the JSON encoding of the
//! answer (which must decode back).
//!
//! Input: the request body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_node::logs::{answer, engine_query, keeps, LogsRequest, LogsResponse, TaskLog};
use warren_runtime::{LogLine, LogStream};

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let Ok(request) = serde_json::from_slice::<LogsRequest>(data) else {
        return;
    };
    // Stamps where the request's filters have edges.
    let mut stamps = vec![0, i64::MIN, i64::MAX, 1_000_000_000];
    stamps.extend(request.since);
    for c in request.cursors.iter().take(8) {
        stamps.extend([
            c.cursor.ts.saturating_sub(1),
            c.cursor.ts,
            c.cursor.ts.saturating_add(1),
        ]);
    }
    stamps.sort_unstable();
    let mut tasks = Vec::new();
    for slot in 0..3u32 {
        let query = engine_query(&request, slot);
        let mut keep = keeps(&request, slot);
        let mut lines = Vec::new();
        let mut cut = false;
        for (i, ts) in stamps.iter().flat_map(|t| [*t, *t]).enumerate() {
            let line = LogLine {
                ts,
                stream: if i % 2 == 0 {
                    LogStream::Stdout
                } else {
                    LogStream::Stderr
                },
                text: format!("line {i} of slot {slot}"),
            };
            if !keep(&line) {
                continue;
            }
            if lines.len() >= query.max_lines {
                cut = true;
                break;
            }
            lines.push(line);
        }
        tasks.push(TaskLog { slot, lines, cut });
    }
    let response = answer(&request, "alpha", tasks);
    let bytes = serde_json::to_vec(&response).expect("an answer encodes");
    let back: LogsResponse = serde_json::from_slice(&bytes).expect("an answer decodes");
    assert_eq!(back, response);
});
