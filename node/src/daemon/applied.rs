//! When each change reached this node's replica: a bounded record for measurements
//! (`GET /v1/debug/applied`), so a harness reads propagation times at millisecond resolution
//! from the nodes themselves instead of polling them.
//!
//! After every input the actor hands to the machine (a write, a gossiped change, a sync
//! message, a tick, ...), [`AppliedLog::note`] compares the replica's heads with the heads it
//! saw last; when they moved, it lists the changes taken in since
//! ([`DesiredState::changes_since`], which costs those changes, not the document) and records
//! each with the wall-clock time and how it came. A change held back by Automerge until its
//! dependencies arrive counts when it is applied, not when it was received. Changes the replica
//! held when the node started (its store, or the document a joiner was admitted with) are not
//! recorded.
//!
//! Times are the node's wall clock (Unix ms): comparable across nodes only when their clocks
//! agree, as for processes on one host (the testnet).

use std::collections::VecDeque;

use serde::Serialize;
use warren_crdt::{DesiredState, NodeId};

/// How many entries the record keeps: the oldest go first.
pub(crate) const CAPACITY: usize = 4_096;

/// How a change came to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// Written here: an operator's write or the node's own (lease, placement, membership).
    Local,
    /// A change gossiped by a peer.
    Gossip,
    /// The sync protocol (anti-entropy, either side of the dialogue) or a join.
    Sync,
    /// Any other input (none is expected to bring changes).
    Other,
}

/// One change as this node first applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Applied {
    /// Hex change hash (as `GET /v1/history` and `cluster status` heads print it).
    pub(crate) hash: String,
    /// Wall-clock Unix milliseconds when this node applied it.
    pub(crate) at_ms: i64,
    /// How it came.
    pub(crate) via: Via,
    /// The node that wrote it, if its actor id names one.
    pub(crate) author: Option<NodeId>,
    /// What it did, e.g. `service create web`.
    pub(crate) message: String,
}

/// The record: see the module doc.
#[derive(Debug)]
pub(crate) struct AppliedLog {
    me: NodeId,
    heads: Vec<String>,
    entries: VecDeque<Applied>,
    /// Changes the replica held when the record started.
    initial: u64,
    /// Changes recorded since, by how they came (index: [`Via::index`]); not bounded by
    /// [`CAPACITY`].
    counts: [u64; 4],
}

impl Via {
    /// Every way, in the order of [`AppliedLog::counts`].
    pub(crate) const ALL: [Via; 4] = [Via::Local, Via::Gossip, Via::Sync, Via::Other];

    fn index(self) -> usize {
        match self {
            Via::Local => 0,
            Via::Gossip => 1,
            Via::Sync => 2,
            Via::Other => 3,
        }
    }

    /// The lowercase word, as `GET /v1/debug/applied` and `/metrics` show it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Local => "local",
            Via::Gossip => "gossip",
            Via::Sync => "sync",
            Via::Other => "other",
        }
    }
}

impl AppliedLog {
    /// An empty record for node `me`, starting from the replica's current heads.
    pub(crate) fn new(me: NodeId, state: &mut DesiredState) -> Self {
        // Reads the metadata of every change once (`changes_since` of no heads).
        let initial = state.changes_since(&[]).len() as u64;
        Self {
            me,
            heads: state.heads(),
            entries: VecDeque::with_capacity(CAPACITY),
            initial,
            counts: [0; 4],
        }
    }

    /// Changes the replica holds now: those it held at the start and those recorded since.
    pub(crate) fn changes(&self) -> u64 {
        self.initial + self.counts.iter().sum::<u64>()
    }

    /// Changes recorded since the start, by how they came (the order of [`Via::ALL`]).
    pub(crate) fn counts(&self) -> [u64; 4] {
        self.counts
    }

    /// Records the changes `state` took in since the last call, at `at_ms`, as having come
    /// `via` this input (`Local` for those this node wrote, whatever the input).
    pub(crate) fn note(&mut self, state: &mut DesiredState, via: Via, at_ms: i64) {
        let heads = state.heads();
        if heads == self.heads {
            return;
        }
        for change in state.changes_since(&self.heads) {
            let via = if change.node.as_ref() == Some(&self.me) {
                Via::Local
            } else {
                via
            };
            self.counts[via.index()] += 1;
            if self.entries.len() == CAPACITY {
                self.entries.pop_front();
            }
            self.entries.push_back(Applied {
                hash: change.hash,
                at_ms,
                via,
                author: change.node,
                message: change.message,
            });
        }
        self.heads = heads;
    }

    /// The entries applied at or after `since_ms`, oldest first.
    pub(crate) fn since(&self, since_ms: i64) -> Vec<Applied> {
        // Times never decrease along the record unless the wall clock stepped back; a scan
        // from the newest end stops at the first older entry.
        let newer = self
            .entries
            .iter()
            .rev()
            .take_while(|e| e.at_ms >= since_ms)
            .count();
        self.entries
            .iter()
            .skip(self.entries.len() - newer)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::{ClusterInfo, Member, MemberState, ServiceName, ServiceSpec, SyncState};

    fn founder(id: &str) -> DesiredState {
        let info = ClusterInfo {
            id: "c".into(),
            name: "t".into(),
            created_at: 1,
        };
        let member = Member {
            id: NodeId(id.into()),
            name: id.into(),
            addrs: Vec::new(),
            labels: Default::default(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: NodeId(id.into()),
            admitted_at: 1,
            state: MemberState::Active,
            availability: Default::default(),
        };
        DesiredState::new_cluster(&info, &member).expect("cluster")
    }

    fn create(state: &mut DesiredState, name: &str) {
        let spec = ServiceSpec {
            image: "warren/busybox:latest".into(),
            ..Default::default()
        };
        state
            .create_service(&ServiceName::new(name).expect("name"), &spec)
            .expect("create");
    }

    fn sync(a: &mut DesiredState, b: &mut DesiredState) {
        let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
        for _ in 0..32 {
            let m1 = a.generate_sync_message(&mut sa);
            if let Some(m) = &m1 {
                b.receive_sync_message(&mut sb, m).expect("receive");
            }
            let m2 = b.generate_sync_message(&mut sb);
            if let Some(m) = &m2 {
                a.receive_sync_message(&mut sa, m).expect("receive");
            }
            if m1.is_none() && m2.is_none() {
                return;
            }
        }
        panic!("sync did not finish");
    }

    #[test]
    fn records_each_new_change_once_with_its_origin() {
        let mut a = founder("A");
        let mut b = DesiredState::empty(NodeId("B".into()));
        sync(&mut a, &mut b);
        let mut log_a = AppliedLog::new(NodeId("A".into()), &mut a);
        let mut log_b = AppliedLog::new(NodeId("B".into()), &mut b);

        create(&mut a, "web");
        log_a.note(&mut a, Via::Other, 100);
        log_a.note(&mut a, Via::Other, 150); // nothing new: nothing recorded
        create(&mut b, "db");
        log_b.note(&mut b, Via::Other, 110);
        sync(&mut a, &mut b);
        log_a.note(&mut a, Via::Sync, 200);
        log_b.note(&mut b, Via::Gossip, 210);

        let a_saw: Vec<(String, i64, Via)> = log_a
            .since(0)
            .into_iter()
            .map(|e| (e.message, e.at_ms, e.via))
            .collect();
        assert_eq!(
            a_saw,
            [
                ("service create web".to_string(), 100, Via::Local),
                ("service create db".to_string(), 200, Via::Sync)
            ]
        );
        let b_saw = log_b.since(0);
        assert_eq!(b_saw.len(), 2);
        assert_eq!(b_saw[0].via, Via::Local);
        assert_eq!(b_saw[1].message, "service create web");
        assert_eq!(b_saw[1].via, Via::Gossip);
        assert_eq!(b_saw[1].author, Some(NodeId("A".into())));
        assert_eq!(b_saw[1].hash, log_a.since(0)[0].hash);
        assert_eq!(log_a.since(150).len(), 1);
        assert!(log_a.since(201).is_empty());
        // Counted by how they came (local, gossip, sync, other), on top of what was there.
        assert_eq!(log_a.counts(), [1, 0, 1, 0]);
        assert_eq!(log_b.counts(), [1, 1, 0, 0]);
        let held_at_start = log_a.initial;
        assert!(held_at_start > 0, "the founder's document has changes");
        assert_eq!(log_a.changes(), held_at_start + 2);
        assert_eq!(
            AppliedLog::new(NodeId("A".into()), &mut a).changes(),
            log_a.changes()
        );
    }

    #[test]
    fn keeps_the_newest_capacity_entries() {
        let mut a = founder("A");
        let mut log = AppliedLog::new(NodeId("A".into()), &mut a);
        for i in 0..CAPACITY + 3 {
            create(&mut a, &format!("s{i}"));
            log.note(&mut a, Via::Local, i as i64);
        }
        let all = log.since(i64::MIN);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].message, "service create s3");
        assert_eq!(all[0].at_ms, 3);
    }
}
