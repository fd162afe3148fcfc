//! A member's direct message: `NodeMachine::handle_direct` (JSON `Direct`: a SWIM message, a
//! report, a request for reports; bounded, fed to the core) on the founder's machine, then a
//! tick and everything that reads what it stored (snapshot, held and awaited slots,
//! liveness, the reports it sends).
//!
//! Input: the bytes of one direct message a member sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::NodeId;
use warren_fuzz::{founder_machine, PEER};
use warren_node::core::Millis;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let mut machine = founder_machine();
    let peer = NodeId(PEER.into());
    machine.handle_tick(Millis(0));
    while machine.poll_output().is_some() {}
    machine.handle_direct(&peer, data, Millis(100));
    machine.handle_tick(Millis(600));
    while machine.poll_output().is_some() {}
    let _ = machine.snapshot(Millis(600), 0, 1);
    let _ = machine.held_slots(Millis(600));
    let _ = machine.awaiting_slots(Millis(600));
    let _ = machine.liveness(&peer, Millis(600));
    let _ = machine.desired(Millis(600));
});
