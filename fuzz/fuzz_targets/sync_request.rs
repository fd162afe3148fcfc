//! Sync requests from a member: `NodeMachine::handle_sync_request` (flag byte, then an
//! Automerge sync message) on the founder's machine, up to four rounds of one dialogue, then a
//! tick and a snapshot. A reply that is produced must itself decode.
//!
//! Input: request bodies separated by `SPLT`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::NodeId;
use warren_fuzz::{founder_machine, split_parts, PEER};
use warren_node::core::Millis;
use warren_node::protocol::decode_sync;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let mut machine = founder_machine();
    let peer = NodeId(PEER.into());
    for body in split_parts(data, 4) {
        if let Ok(reply) = machine.handle_sync_request(&peer, body) {
            assert!(
                decode_sync(&reply).is_some(),
                "a reply always has its flag byte"
            );
        }
    }
    machine.handle_tick(Millis(600));
    while machine.poll_output().is_some() {}
    let _ = machine.snapshot(Millis(600), 0, 1);
});
