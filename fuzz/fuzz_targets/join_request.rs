//! Join requests from a node that is not a member: `NodeMachine::handle_join` (JSON
//! `JoinRequest`, its join token decoded and checked, the node admitted) on the founder's
//! machine, whose document holds a valid single-use token. An admission's answer must read as
//! the joining node reads it: a `JoinAnswer` naming the founder's heads when the request says
//! `sync_after`, the whole document otherwise (an older node's request).
//!
//! Input: the request body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::{DesiredState, NodeId};
use warren_fuzz::{founder_machine, JOINER, NOW_SECS};
use warren_node::protocol::{JoinAnswer, JoinRequest};
use warren_node::core::Millis;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let mut machine = founder_machine();
    let joiner = NodeId(JOINER.into());
    let sync_after = serde_json::from_slice::<JoinRequest>(data).is_ok_and(|r| r.sync_after);
    if let Ok(answer) = machine.handle_join(&joiner, data, NOW_SECS) {
        if sync_after {
            let answer = JoinAnswer::decode(&answer).expect("an admission's answer reads");
            let heads = machine.state_mut().heads();
            assert_eq!(answer.heads, heads, "the answer names the founder's heads");
        } else {
            let state = DesiredState::load(joiner, &answer).expect("an admission's answer loads");
            assert!(state.cluster().is_some(), "the answer holds the cluster");
        }
    }
    machine.handle_tick(Millis(600));
    while machine.poll_output().is_some() {}
    let _ = machine.snapshot(Millis(600), 0, 1);
});
