//! Members' answers to a logs request and the client's cursor: `serde_json::from_slice::<
//! LogsResponse>` and `LogsResponse::bounded` as `daemon::logs` `ask` calls them, the page
//! cursor a client sends back (`CursorSet::decode`), and `merge` of up to three answers. The
//! page's cursor must decode again (the client sends it back).
//!
//! Input: the client's cursor text, then up to three answers, separated by `SPLT`.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use warren_fuzz::split_parts;
use warren_node::logs::{merge, CursorSet, LogsResponse, NodeAnswer};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let parts = split_parts(data, 4);
    let prior = std::str::from_utf8(parts[0])
        .ok()
        .and_then(|text| CursorSet::decode(text).ok())
        .unwrap_or_default();
    let answers: Vec<NodeAnswer> = parts[1..]
        .iter()
        .zip(NODES)
        .map(|(bytes, node)| NodeAnswer {
            node: node.into(),
            node_name: node.into(),
            result: serde_json::from_slice::<LogsResponse>(bytes)
                .map(LogsResponse::bounded)
                .map_err(|e| e.to_string()),
        })
        .collect();
    let assigned: BTreeSet<(String, u32)> = NODES
        .iter()
        .flat_map(|n| (0..4).map(|slot| (n.to_string(), slot)))
        .chain(prior.0.keys().take(4).cloned())
        .collect();
    let page = merge("web", &prior, &assigned, answers);
    let again = CursorSet::decode(&page.cursor).expect("a page's cursor decodes");
    assert_eq!(again.encode(), page.cursor);
});
