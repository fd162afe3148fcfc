//! Gossip on the changes channel: `NodeMachine::handle_gossip(Channel::Changes, ..)` (which
//! calls `DesiredState::apply_change`) on the founder's machine over a small real cluster,
//! then what the node does next with the document: a tick (decide, schedule) and a snapshot.
//!
//! Input: one flag byte (bit 0: make the Automerge chunk checksums right), then the change
//! bytes a peer gossiped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::NodeId;
use warren_fuzz::{fix_automerge_checksums, founder_machine, PEER};
use warren_node::core::Millis;
use warren_node::machine::Channel;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let Some((flags, change)) = data.split_first() else {
        return;
    };
    let mut change = change.to_vec();
    if flags & 1 == 1 {
        fix_automerge_checksums(&mut change);
    }
    let mut machine = founder_machine();
    let peer = NodeId(PEER.into());
    machine.handle_gossip(Channel::Changes, &peer, &change, Millis(100));
    machine.handle_tick(Millis(600));
    while machine.poll_output().is_some() {}
    let _ = machine.snapshot(Millis(600), 0, 1);
    let _ = machine.desired_tasks();
});
