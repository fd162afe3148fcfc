//! Sync responses from a member: the founder's machine, whose first tick started an
//! anti-entropy sync dialogue with the peer, gets each answer through
//! `NodeMachine::handle_sync_response`, for up to four rounds, then a tick and a snapshot.
//!
//! Input: response bodies separated by `SPLT`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::NodeId;
use warren_fuzz::{founder_machine, split_parts, PEER};
use warren_node::core::Millis;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let mut machine = founder_machine();
    let peer = NodeId(PEER.into());
    for body in split_parts(data, 4) {
        while machine.poll_output().is_some() {}
        machine.handle_sync_response(&peer, Ok(body.to_vec()));
    }
    machine.handle_tick(Millis(600));
    while machine.poll_output().is_some() {}
    let _ = machine.snapshot(Millis(600), 0, 1);
});
