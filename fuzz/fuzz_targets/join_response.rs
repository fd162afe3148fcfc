//! The answer to a join request, and any whole document a node loads: `JoinAnswer::decode`
//! (what a member answers now), then `DesiredState::load` as a node calls it on its own store
//! (a peer's whole document is never loaded since 2026-11-29), the admission check, every typed reader of the
//! document, then a machine over it ticked once (what the node does next).
//!
//! Input: one flag byte (bit 0: make the Automerge chunk checksums right), then the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::{DesiredState, NodeId};
use warren_fuzz::{fix_automerge_checksums, CLUSTER_ID, JOINER};
use warren_node::core::Millis;
use warren_node::machine::{MachineConfig, NodeMachine};
use warren_node::protocol::JoinAnswer;
use warren_node::join::CatchUp;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let Some((flags, doc)) = data.split_first() else {
        return;
    };
    let mut doc = doc.to_vec();
    if flags & 1 == 1 {
        fix_automerge_checksums(&mut doc);
    }
    if let Some(answer) = JoinAnswer::decode(&doc) {
        let _ = CatchUp::new(NodeId(JOINER.into()), &answer).next_request();
    }
    let me = NodeId(JOINER.into());
    let Ok(mut state) = DesiredState::load(me.clone(), &doc) else {
        return;
    };
    let _admitted =
        state.cluster().is_some_and(|c| c.id == CLUSTER_ID) && state.members().contains_key(&me);
    let _ = state.services();
    let _ = state.assignments();
    let _ = state.lease();
    let _ = state.lease_claims();
    let _ = state.tokens();
    let _ = state.jobs();
    let _ = state.secrets();
    let _ = state.volumes();
    let _ = state.member_keys();
    let _ = state.history();
    let _ = state.heads();
    let mut machine = NodeMachine::new(
        me,
        "joiner",
        "test://api",
        state,
        MachineConfig::default(),
        Millis(0),
        7,
    );
    machine.handle_tick(Millis(0));
    machine.handle_tick(Millis(600));
    while machine.poll_output().is_some() {}
    let _ = machine.snapshot(Millis(600), 0, 1);
    let _ = machine.desired_tasks();
});
