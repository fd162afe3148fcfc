//! Failure detection: who has been heard from recently, by this node's own clock.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use warren_crdt::{Member, MemberState, NodeId};

use super::{CoreConfig, Millis};

/// How a member looks from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Heard from within `suspect_after_ms`.
    Alive,
    /// Silent for longer than `suspect_after_ms`; still keeps its tasks.
    Suspect,
    /// Silent for longer than `down_after_ms`; its tasks are rescheduled.
    Down,
}

/// The last time each peer was heard from.
///
/// A peer never heard from is judged from the moment this view started, so a node that just
/// restarted gives its peers one full `down_after_ms` before it writes them off.
#[derive(Debug)]
pub struct MembershipView {
    me: NodeId,
    config: CoreConfig,
    started: Millis,
    last_heard: HashMap<NodeId, Millis>,
}

impl MembershipView {
    /// A view for node `me`, started at `now`.
    pub fn new(me: NodeId, config: CoreConfig, now: Millis) -> Self {
        Self {
            me,
            config,
            started: now,
            last_heard: HashMap::new(),
        }
    }

    /// `peer` was heard from at `now`.
    pub fn heard(&mut self, peer: &NodeId, now: Millis) {
        let entry = self.last_heard.entry(peer.clone()).or_insert(now);
        *entry = (*entry).max(now);
    }

    /// This node was not running for `ms` milliseconds before `now` (see
    /// [`super::Core::tick`]): every peer's silence, and the time since this view started,
    /// count `ms` less (never less than none).
    pub fn credit(&mut self, ms: u64, now: Millis) {
        for last in self.last_heard.values_mut() {
            *last = Millis(last.0.saturating_add(ms).min(now.0.max(last.0)));
        }
        self.started = Millis(
            self.started
                .0
                .saturating_add(ms)
                .min(now.0.max(self.started.0)),
        );
    }

    /// `peer`'s liveness at `now`. This node is always alive to itself.
    pub fn liveness(&self, peer: &NodeId, now: Millis) -> Liveness {
        if *peer == self.me {
            return Liveness::Alive;
        }
        let last = self.last_heard.get(peer).copied().unwrap_or(self.started);
        let silent = now.since(last);
        if silent > self.config.down_after_ms {
            Liveness::Down
        } else if silent > self.config.suspect_after_ms {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    }

    /// Milliseconds `peer` has been silent at `now` (from this view's start if never heard);
    /// 0 for this node.
    pub fn silent_ms(&self, peer: &NodeId, now: Millis) -> u64 {
        if *peer == self.me {
            return 0;
        }
        now.since(self.last_heard.get(peer).copied().unwrap_or(self.started))
    }

    /// Active members of `members` that are not down at `now`.
    pub fn live<'a>(
        &self,
        members: impl IntoIterator<Item = &'a Member>,
        now: Millis,
    ) -> BTreeSet<NodeId> {
        members
            .into_iter()
            .filter(|m| m.state == MemberState::Active)
            .filter(|m| self.liveness(&m.id, now) != Liveness::Down)
            .map(|m| m.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_turns_alive_into_suspect_then_down() {
        let config = CoreConfig::default();
        let mut view = MembershipView::new(NodeId("me".into()), config, Millis(0));
        let b = NodeId("b".into());
        assert_eq!(view.liveness(&b, Millis(1_000)), Liveness::Alive);
        view.heard(&b, Millis(10_000));
        assert_eq!(view.liveness(&b, Millis(11_000)), Liveness::Alive);
        assert_eq!(view.liveness(&b, Millis(12_000)), Liveness::Suspect);
        assert_eq!(view.liveness(&b, Millis(13_001)), Liveness::Down);
        // An older heartbeat arriving late does not move the clock back.
        view.heard(&b, Millis(9_000));
        assert_eq!(view.liveness(&b, Millis(13_001)), Liveness::Down);
        assert_eq!(
            view.liveness(&NodeId("me".into()), Millis(99_999)),
            Liveness::Alive
        );
    }
}
