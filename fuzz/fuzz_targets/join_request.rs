//! Join requests from a node that is not a member: `NodeMachine::handle_join` (JSON
//! `JoinRequest`, its join token decoded and checked, the node admitted) on the founder's
//! machine, whose document holds a valid single-use token. An admission's answer (the whole
//! document) must load as the joining node loads it.
//!
//! Input: the request body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::{DesiredState, NodeId};
use warren_fuzz::{founder_machine, JOINER, NOW_SECS};
use warren_node::core::Millis;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let mut machine = founder_machine();
    let joiner = NodeId(JOINER.into());
    if let Ok(doc) = machine.handle_join(&joiner, data, NOW_SECS) {
        let state = DesiredState::load(joiner, &doc).expect("an admission's answer loads");
        assert!(state.cluster().is_some(), "the answer holds the cluster");
    }
    machine.handle_tick(Millis(600));
    while machine.poll_output().is_some() {}
    let _ = machine.snapshot(Millis(600), 0, 1);
});
