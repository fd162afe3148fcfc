//! The scheduling lease, judged by each node's own monotonic clock (DESIGN §5).
//!
//! The holder announces the epoch it holds in every heartbeat; that is the renewal. A receiver
//! remembers when, by its own clock, it last heard a renewal of the lease in force, and
//! considers the lease expired `ttl` after that. Then the candidate (the live member with the
//! lowest id, never the silent holder) claims `epoch + 1`. Every node computes the same
//! candidate from the same view, so candidates do not duel; when views differ (a partition),
//! both sides may claim, and the document's merge rule (greater `(epoch, holder)`) leaves one.

use warren_crdt::{Epoch, Lease, NodeId};

use super::{Millis, RuleBreak};

/// What the lease looks like from one node at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// This node holds the lease: it schedules.
    Holder(Lease),
    /// Another node holds a lease renewed within the TTL.
    Follower {
        /// The lease in force.
        lease: Lease,
        /// Milliseconds until it expires without a renewal.
        expires_in_ms: u64,
    },
    /// No valid lease and this node is the candidate: write this claim.
    Claim(Lease),
    /// No valid lease; another live member is the candidate.
    Vacant {
        /// The member expected to claim.
        candidate: Option<NodeId>,
    },
}

/// When this node last saw the lease in force renewed.
#[derive(Debug)]
pub struct LeaseTracker {
    ttl_ms: u64,
    started: Millis,
    observed: Option<(Lease, Millis)>,
    claimed_here: Option<Lease>,
    rule_break: RuleBreak,
}

impl LeaseTracker {
    /// A tracker with lease TTL `ttl_ms` milliseconds, started at `now`, deciding by the lease
    /// rule ([`RuleBreak::None`]) or a deliberately broken one.
    pub fn new(ttl_ms: u64, now: Millis, rule_break: RuleBreak) -> Self {
        Self {
            ttl_ms,
            started: now,
            observed: None,
            claimed_here: None,
            rule_break,
        }
    }

    /// This process wrote `lease` (it schedules under it at once).
    pub fn claimed(&mut self, lease: &Lease) {
        self.claimed_here = Some(lease.clone());
    }

    /// The lease in the document at `now`. A lease not seen before counts as renewed now: a
    /// fresh claim (or a node that just started) gives the holder one full TTL.
    pub fn observe(&mut self, lease: Option<&Lease>, now: Millis) {
        match (lease, &self.observed) {
            (Some(lease), Some((seen, _))) if seen == lease => {}
            (Some(lease), _) => self.observed = Some((lease.clone(), now)),
            (None, _) => {}
        }
    }

    /// `from` announced at `now` that it holds `epoch`.
    pub fn on_renewal(&mut self, from: &NodeId, epoch: Epoch, now: Millis) {
        if let Some((lease, renewed)) = &mut self.observed {
            if lease.holder == *from && lease.epoch == epoch {
                *renewed = (*renewed).max(now);
            }
        }
    }

    /// This node was not running for `ms` milliseconds before `now` (see
    /// [`super::Core::tick`]): the lease in force counts as renewed `ms` later than heard,
    /// and this tracker as started `ms` later (never later than `now`).
    pub fn credit(&mut self, ms: u64, now: Millis) {
        let later = |t: Millis| Millis(t.0.saturating_add(ms).min(now.0.max(t.0)));
        if let Some((_, renewed)) = &mut self.observed {
            *renewed = later(*renewed);
        }
        self.started = later(self.started);
    }

    /// Decides for node `me` at `now`, given the lease in force and the live members in
    /// ascending order of id. `live` is only walked when the lease expired (or there is
    /// none), and then only up to the candidate: a caller passes a lazy iterator, so the
    /// usual tick (a lease in force) costs nothing per member.
    pub fn decide<'a>(
        &self,
        me: &NodeId,
        lease: Option<&Lease>,
        live: impl IntoIterator<Item = &'a NodeId>,
        now: Millis,
    ) -> LeaseDecision {
        if self.rule_break == RuleBreak::HolderNeverStepsDown {
            if let Some(own) = self.claimed_here.as_ref().filter(|l| l.holder == *me) {
                return LeaseDecision::Holder(own.clone());
            }
        }
        if let Some(lease) = lease {
            if lease.holder == *me {
                // A lease this node held before a restart may have been taken over while it
                // was away: wait one TTL for peers to tell it so before scheduling under it.
                let fresh = self.claimed_here.as_ref() == Some(lease);
                if fresh || now.since(self.started) >= self.ttl_ms {
                    return LeaseDecision::Holder(lease.clone());
                }
                return LeaseDecision::Vacant {
                    candidate: Some(me.clone()),
                };
            }
            let renewed = match &self.observed {
                Some((seen, at)) if seen == lease => *at,
                _ => now,
            };
            let age = now.since(renewed);
            if age <= self.ttl_ms {
                return LeaseDecision::Follower {
                    lease: lease.clone(),
                    expires_in_ms: self.ttl_ms - age,
                };
            }
        }
        let silent_holder = lease.map(|l| &l.holder);
        let candidate = live
            .into_iter()
            .find(|id| Some(*id) != silent_holder)
            .cloned();
        match candidate {
            Some(c) if c == *me => LeaseDecision::Claim(Lease {
                epoch: lease.map(|l| l.epoch).unwrap_or_default().next(),
                holder: me.clone(),
            }),
            candidate => LeaseDecision::Vacant { candidate },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn live(ids: &[&str]) -> BTreeSet<NodeId> {
        ids.iter().map(|s| id(s)).collect()
    }

    #[test]
    fn renewals_keep_the_lease_and_silence_expires_it() {
        let lease = Lease {
            epoch: Epoch(4),
            holder: id("c"),
        };
        let mut t = LeaseTracker::new(3_000, Millis(0), RuleBreak::None);
        t.observe(Some(&lease), Millis(0));
        t.on_renewal(&id("c"), Epoch(4), Millis(2_000));
        // A renewal of another epoch, or from another node, does not count.
        t.on_renewal(&id("c"), Epoch(3), Millis(4_000));
        t.on_renewal(&id("b"), Epoch(4), Millis(4_000));
        assert!(matches!(
            t.decide(
                &id("a"),
                Some(&lease),
                &live(&["a", "b", "c"]),
                Millis(4_500)
            ),
            LeaseDecision::Follower {
                expires_in_ms: 500,
                ..
            }
        ));
        // Expired: "a" is the lowest live member that is not the silent holder.
        assert_eq!(
            t.decide(&id("a"), Some(&lease), &live(&["a", "b"]), Millis(5_001)),
            LeaseDecision::Claim(Lease {
                epoch: Epoch(5),
                holder: id("a")
            })
        );
        assert_eq!(
            t.decide(&id("b"), Some(&lease), &live(&["a", "b"]), Millis(5_001)),
            LeaseDecision::Vacant {
                candidate: Some(id("a"))
            }
        );
    }

    #[test]
    fn holder_is_holder_and_a_new_lease_restarts_the_clock() {
        let mut t = LeaseTracker::new(3_000, Millis(0), RuleBreak::None);
        let l1 = Lease {
            epoch: Epoch(1),
            holder: id("a"),
        };
        // Held before a restart: not scheduled under until one TTL has passed...
        assert!(matches!(
            t.decide(&id("a"), Some(&l1), &live(&["a"]), Millis(99)),
            LeaseDecision::Vacant { .. }
        ));
        assert!(matches!(
            t.decide(&id("a"), Some(&l1), &live(&["a"]), Millis(3_000)),
            LeaseDecision::Holder(_)
        ));
        // ...unless this process claimed it.
        t.claimed(&l1);
        assert!(matches!(
            t.decide(&id("a"), Some(&l1), &live(&["a"]), Millis(99)),
            LeaseDecision::Holder(_)
        ));
        t.observe(Some(&l1), Millis(0));
        let l2 = Lease {
            epoch: Epoch(2),
            holder: id("b"),
        };
        t.observe(Some(&l2), Millis(10_000));
        assert!(matches!(
            t.decide(&id("a"), Some(&l2), &live(&["a", "b"]), Millis(12_000)),
            LeaseDecision::Follower { .. }
        ));
    }
}
