//! Memo of the sync protocol's steps at one set of heads.
//!
//! Automerge 0.12 walks the whole change history in several steps of a sync dialogue, even
//! when both replicas hold the same heads: a first message's Bloom filter covers every change
//! (`make_bloom_filter` over `get_hashes(&[])`), the answer checks every change against the
//! peer's filter (`get_hashes_to_send`), and every received message walks every ancestor of
//! the peer's heads (`filter_changes`, even when nothing was sent). At 1,000 members a
//! cluster's document holds a change per admission, and every node starts a dialogue every
//! few seconds with a peer it has rarely met (a fresh sync state each time), so these walks
//! were a third of a quiet simulated node's time.
//!
//! Both steps are functions of the document and the per-peer sync state alone. While the
//! document holds the same heads (and holds no change waiting for its dependencies), it holds
//! the same changes, so a step taken before with an equal sync state (and equal message)
//! gives the same result; and in a quiet cluster the states repeat: every dialogue starts from
//! an empty state, and every peer at the same heads sends the same first message (the filter
//! of one set of changes does not depend on the order they arrived in). The memo keeps the
//! last few results per heads and is emptied when the heads move. It changes nothing a peer
//! sees: the messages and states are Automerge's own, byte for byte (tests in `tests.rs`).

use std::collections::VecDeque;

use automerge::{sync, ChangeHash};

/// Most results kept per kind: a quiet dialogue takes four distinct generate steps (the
/// starter's first and second, the responder's answer and its last empty one) and three
/// receives.
const MAX_ENTRIES: usize = 8;

/// Largest message (generated or received) whose step is remembered, in bytes: the steps
/// that repeat carry heads and a Bloom filter (about 10 bits per change since the last sync),
/// not changes, so a few KB; a message carrying changes is answered once and would only hold
/// memory (up to the sync budget per entry).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One generated message: the sync state before (and its message bound), the state after
/// and the encoded message (`None`: nothing to send).
struct Generated {
    before: sync::State,
    max: usize,
    after: sync::State,
    message: Option<Vec<u8>>,
}

/// One received message without changes: the sync state before, the message's bytes, the
/// state after.
struct Received {
    before: sync::State,
    message: Vec<u8>,
    after: sync::State,
}

/// Results of sync steps taken at [`SyncMemo::heads`]; see the module doc.
#[derive(Default)]
pub(crate) struct SyncMemo {
    heads: Vec<ChangeHash>,
    generated: VecDeque<Generated>,
    received: VecDeque<Received>,
}

impl SyncMemo {
    /// Forgets every result unless they were taken at `heads`.
    fn at(&mut self, heads: &[ChangeHash]) {
        if self.heads != heads {
            self.heads = heads.to_vec();
            self.generated.clear();
            self.received.clear();
        }
    }

    /// Forgets every result (the document was rebuilt).
    pub(crate) fn clear(&mut self) {
        self.heads.clear();
        self.generated.clear();
        self.received.clear();
    }

    /// The message generated before at `heads` from a state equal to `state` with bound
    /// `max`: `Some((state after, message))`.
    pub(crate) fn generated(
        &mut self,
        heads: &[ChangeHash],
        state: &sync::State,
        max: usize,
    ) -> Option<(sync::State, Option<Vec<u8>>)> {
        self.at(heads);
        self.generated
            .iter()
            .find(|g| g.max == max && g.before == *state)
            .map(|g| (g.after.clone(), g.message.clone()))
    }

    /// Remembers a message generated at `heads`.
    pub(crate) fn remember_generated(
        &mut self,
        heads: &[ChangeHash],
        before: sync::State,
        max: usize,
        after: &sync::State,
        message: Option<&[u8]>,
    ) {
        if message.is_some_and(|m| m.len() > MAX_MESSAGE_BYTES) {
            return;
        }
        self.at(heads);
        if self.generated.len() >= MAX_ENTRIES {
            self.generated.pop_front();
        }
        self.generated.push_back(Generated {
            before,
            max,
            after: after.clone(),
            message: message.map(<[u8]>::to_vec),
        });
    }

    /// The state after receiving `message` (which carries no change) at `heads` in a state
    /// equal to `state`, if that was done before.
    pub(crate) fn received(
        &mut self,
        heads: &[ChangeHash],
        state: &sync::State,
        message: &[u8],
    ) -> Option<sync::State> {
        self.at(heads);
        self.received
            .iter()
            .find(|r| r.message == message && r.before == *state)
            .map(|r| r.after.clone())
    }

    /// Remembers the state after a message without changes was received at `heads`.
    pub(crate) fn remember_received(
        &mut self,
        heads: &[ChangeHash],
        before: sync::State,
        message: &[u8],
        after: &sync::State,
    ) {
        if message.len() > MAX_MESSAGE_BYTES {
            return;
        }
        self.at(heads);
        if self.received.len() >= MAX_ENTRIES {
            self.received.pop_front();
        }
        self.received.push_back(Received {
            before,
            message: message.to_vec(),
            after: after.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::{member, new_cluster, service_name, spec};
    use crate::{DesiredState, NodeId, SyncState};

    /// What one side of a dialogue produced at each step: the message generated (or none) and
    /// the Automerge sync state after it.
    type Steps = Vec<(Option<Vec<u8>>, automerge::sync::State)>;

    /// One dialogue as the node runs it: `from` starts with a fresh state, `to` answers with
    /// a fresh one, until neither has anything to send. With `no_memo`, both memos are emptied
    /// before every step, so every step is Automerge's own. Returns each side's steps.
    fn dialogue(from: &mut DesiredState, to: &mut DesiredState, no_memo: bool) -> (Steps, Steps) {
        let (mut s_from, mut s_to) = (SyncState::new(), SyncState::with_max_message(4 << 20));
        let (mut steps_from, mut steps_to) = (Vec::new(), Vec::new());
        for _ in 0..32 {
            if no_memo {
                from.sync_memo.clear();
                to.sync_memo.clear();
            }
            let m1 = from.generate_sync_message(&mut s_from);
            steps_from.push((m1.clone(), s_from.inner.clone()));
            if let Some(m) = &m1 {
                to.receive_sync_message(&mut s_to, m).expect("receive");
                steps_to.push((None, s_to.inner.clone()));
            }
            if no_memo {
                from.sync_memo.clear();
                to.sync_memo.clear();
            }
            let m2 = to.generate_sync_message(&mut s_to);
            steps_to.push((m2.clone(), s_to.inner.clone()));
            if let Some(m) = &m2 {
                from.receive_sync_message(&mut s_from, m).expect("receive");
                steps_from.push((None, s_from.inner.clone()));
            }
            if m1.is_none() && m2.is_none() {
                return (steps_from, steps_to);
            }
        }
        panic!("no end to the dialogue in 32 rounds");
    }

    /// A founder with 40 admitted members and a service, and a replica synced with it.
    fn cluster() -> (DesiredState, DesiredState) {
        let mut a = new_cluster("A");
        for i in 0..40 {
            a.add_member(&member(&format!("M{i:02}"))).expect("admit");
        }
        a.create_service(&service_name("web"), &spec("warren/busybox:latest", 3))
            .expect("create");
        let mut b = DesiredState::empty(NodeId("B".into()));
        dialogue(&mut a, &mut b, true);
        assert_eq!(a.heads(), b.heads());
        (a, b)
    }

    #[test]
    fn a_step_answered_from_the_memo_is_automerges_own_byte_for_byte() {
        let (mut a, mut b) = cluster();
        let plain = dialogue(&mut a, &mut b, true);
        let first = dialogue(&mut a, &mut b, false);
        let entries = (a.sync_memo.generated.len(), b.sync_memo.generated.len());
        assert!(entries.0 > 0 && entries.1 > 0, "the memo took nothing in");
        let again = dialogue(&mut a, &mut b, false);
        // The same dialogue again is answered from the memo: nothing new was remembered.
        assert_eq!(
            (a.sync_memo.generated.len(), b.sync_memo.generated.len()),
            entries
        );
        assert_eq!(first, plain);
        assert_eq!(again, plain);
        // The other direction meets the memo's entries too: the same as Automerge's.
        let plain_back = dialogue(&mut b, &mut a, true);
        dialogue(&mut b, &mut a, false);
        assert_eq!(dialogue(&mut b, &mut a, false), plain_back);
    }

    #[test]
    fn messages_that_carry_changes_are_not_kept() {
        let mut a = new_cluster("A");
        crate::test_utils::grow_history(&mut a, 4 * super::MAX_MESSAGE_BYTES);
        let mut b = DesiredState::empty(NodeId("B".into()));
        let (from, _) = dialogue(&mut a, &mut b, false);
        assert_eq!(a.heads(), b.heads());
        assert!(
            from.iter().any(|(m, _)| m
                .as_ref()
                .is_some_and(|m| m.len() > super::MAX_MESSAGE_BYTES)),
            "the dialogue carried no large message"
        );
        for memo in [&a.sync_memo, &b.sync_memo] {
            for g in &memo.generated {
                assert!(g
                    .message
                    .as_ref()
                    .is_none_or(|m| m.len() <= super::MAX_MESSAGE_BYTES));
            }
            for r in &memo.received {
                assert!(r.message.len() <= super::MAX_MESSAGE_BYTES);
            }
        }
    }

    #[test]
    fn a_new_change_moves_the_heads_and_travels_despite_the_memo() {
        let (mut a, mut b) = cluster();
        dialogue(&mut a, &mut b, false);
        dialogue(&mut b, &mut a, false);
        a.scale_service(&service_name("web"), 5).expect("scale");
        // b starts: its memo holds answers for the old heads, which it still has.
        dialogue(&mut b, &mut a, false);
        assert_eq!(a.heads(), b.heads());
        b.scale_service(&service_name("web"), 2).expect("scale");
        dialogue(&mut a, &mut b, false);
        assert_eq!(a.heads(), b.heads());
    }

    #[test]
    fn a_peer_that_lost_its_document_or_restarted_from_an_older_one_converges() {
        let (mut a, mut b) = cluster();
        let older = b.save();
        a.scale_service(&service_name("web"), 4).expect("scale");
        dialogue(&mut a, &mut b, false);
        dialogue(&mut b, &mut a, false);
        // b loses everything: its next start holds an empty document.
        let mut lost = DesiredState::empty(NodeId("B".into()));
        dialogue(&mut a, &mut lost, false);
        assert_eq!(lost.heads(), a.heads());
        // b restarts from a snapshot older than what it told a before (a's memo holds
        // answers to the b that had everything): it starts the dialogue, and is answered.
        let mut restarted = DesiredState::load(NodeId("B".into()), &older).expect("load");
        assert_ne!(restarted.heads(), a.heads());
        dialogue(&mut restarted, &mut a, false);
        assert_eq!(restarted.heads(), a.heads());
        // and once more, with a starting.
        let mut restarted = DesiredState::load(NodeId("B".into()), &older).expect("load");
        dialogue(&mut a, &mut restarted, false);
        assert_eq!(restarted.heads(), a.heads());
    }
}
