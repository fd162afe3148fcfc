//! Store values on load, without sled: the checks `Store::load` runs on each value
//! (`warren_crdt::fuzzing::snapshot_payload` and `log_payload`, the same functions `load`
//! calls), then `DesiredState::load` of the snapshot and `DesiredState::load_incremental` of
//! the log chunks that passed, all at once and, when Automerge refuses the batch, one by one,
//! as `load` does. A loaded state's save is loaded back as `Store::compact` and the repair do
//! before they replace anything; that it may fail (Automerge accepts some bytes whose save
//! does not load: `open/store_chunks-save-does-not-load-back.bin`, see README.md) is an
//! error there, not a panic, so it is not asserted here.
//!
//! Input: one flag byte (bit 0: make frame and chunk checksums right), then the snapshot value
//! (empty: none) and up to seven log values, separated by `SPLT`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_crdt::fuzzing::{log_payload, snapshot_payload};
use warren_crdt::{DesiredState, NodeId};
use warren_fuzz::{fix_store_frame, split_parts, FOUNDER};

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let mut values: Vec<Vec<u8>> = split_parts(rest, 8)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    if flags & 1 == 1 {
        values.iter_mut().for_each(|v| fix_store_frame(v));
    }
    let node = NodeId(FOUNDER.into());
    let mut state = if values[0].is_empty() {
        DesiredState::empty(node.clone())
    } else {
        let Ok(payload) = snapshot_payload(&values[0]) else {
            return;
        };
        match DesiredState::load(node.clone(), payload) {
            Ok(state) => state,
            Err(_) => return,
        }
    };
    let good: Vec<&[u8]> = values[1..]
        .iter()
        .filter_map(|v| log_payload(v).ok())
        .collect();
    let all: Vec<u8> = good.concat();
    if !all.is_empty() && state.load_incremental(&all).is_err() {
        for chunk in &good {
            let _ = state.load_incremental(chunk);
        }
    }
    let _ = state.history();
    let heads = state.heads();
    let _ = state.services();
    let _ = state.members();
    let _ = state.assignments();
    let saved = state.save();
    if let Ok(mut back) = DesiredState::load(node, &saved) {
        assert_eq!(
            back.heads(),
            heads,
            "a save that loads holds the same heads"
        );
    }
});
