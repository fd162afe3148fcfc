//! Per-member rate limits ([`MemberLimits`]): a token bucket per member and kind of traffic.
//!
//! Sans-IO: every call takes `now`, so the tests drive a made-up clock. A few lines of our own
//! rather than `governor`: a keyed limiter there is a concurrent map with its own clock, and a
//! new dependency of the workspace; here the actor owns one map, pruned with the member set.

use std::{collections::HashMap, time::Instant};

use libp2p::PeerId;

use crate::{MemberLimits, Rate};

/// What a member sends that is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Traffic {
    /// A gossip message it authored.
    Gossip,
    /// A request.
    Request,
    /// A direct message.
    Direct,
}

/// Nano-tokens per token: the bucket counts in whole numbers, so refills of a fraction of a
/// token add up exactly.
const NANO: u128 = 1_000_000_000;

/// One token bucket: holds up to `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// In nano-tokens: at most `burst * NANO`.
    nanos: u128,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    fn new(rate: Rate, now: Instant) -> Self {
        Self {
            nanos: u128::from(rate.burst) * NANO,
            updated: now,
        }
    }

    /// Refills for the time since the last call, then takes one token if there is one.
    fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        // A clock that went backwards (it should not: `Instant` is monotonic) refills nothing.
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        self.updated = self.updated.max(now);
        // A token per `NANO / per_second` nanoseconds: `per_second` nano-tokens per ns.
        let refill = elapsed.saturating_mul(u128::from(rate.per_second));
        self.nanos = self
            .nanos
            .saturating_add(refill)
            .min(u128::from(rate.burst) * NANO);
        if self.nanos >= NANO {
            self.nanos -= NANO;
            true
        } else {
            false
        }
    }
}

/// The three buckets of one member.
#[derive(Debug, Clone, Copy)]
struct MemberBuckets {
    gossip: Bucket,
    requests: Bucket,
    direct: Bucket,
}

/// Token buckets of the members, created on a member's first message (full) and dropped when
/// it leaves the member set ([`RateLimits::retain`]): memory is three buckets per member.
#[derive(Debug)]
pub(crate) struct RateLimits {
    limits: MemberLimits,
    buckets: HashMap<PeerId, MemberBuckets>,
}

impl RateLimits {
    pub(crate) fn new(limits: MemberLimits) -> Self {
        Self {
            limits,
            buckets: HashMap::new(),
        }
    }

    /// Whether `member` may send one more of `traffic` at `now`; takes a token if so. Call it
    /// for members only (the caller checks membership first), or the map grows with strangers.
    pub(crate) fn allow(&mut self, member: PeerId, traffic: Traffic, now: Instant) -> bool {
        let limits = self.limits;
        let buckets = self.buckets.entry(member).or_insert_with(|| MemberBuckets {
            gossip: Bucket::new(limits.gossip, now),
            requests: Bucket::new(limits.requests, now),
            direct: Bucket::new(limits.direct, now),
        });
        match traffic {
            Traffic::Gossip => buckets.gossip.try_take(limits.gossip, now),
            Traffic::Request => buckets.requests.try_take(limits.requests, now),
            Traffic::Direct => buckets.direct.try_take(limits.direct, now),
        }
    }

    /// Drops the buckets of peers for which `keep` is false (those that left the member set).
    pub(crate) fn retain(&mut self, keep: impl Fn(&PeerId) -> bool) {
        self.buckets.retain(|peer, _| keep(peer));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn limits() -> MemberLimits {
        MemberLimits {
            gossip: Rate::new(10, 20),
            requests: Rate::new(1, 2),
            direct: Rate::new(100, 5),
        }
    }

    /// How many of `tries` calls at `now` are allowed.
    fn allowed(l: &mut RateLimits, p: PeerId, t: Traffic, now: Instant, tries: u32) -> u32 {
        (0..tries).filter(|_| l.allow(p, t, now)).count() as u32
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut l = RateLimits::new(limits());
        let (p, t0) = (peer(), Instant::now());
        // A fresh bucket holds the burst, and no more.
        assert_eq!(allowed(&mut l, p, Traffic::Gossip, t0, 50), 20);
        // Half a second at 10/s refills 5.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(allowed(&mut l, p, Traffic::Gossip, t1, 50), 5);
        // A long idle period refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(allowed(&mut l, p, Traffic::Gossip, t2, 50), 20);
        // Tenths of a token add up.
        let mut n = 0;
        for i in 1..=10 {
            n += allowed(
                &mut l,
                p,
                Traffic::Gossip,
                t2 + Duration::from_millis(10 * i),
                1,
            );
        }
        assert_eq!(n, 1, "ten calls 10 ms apart at 10/s: one token");
    }

    #[test]
    fn kinds_and_members_have_their_own_buckets() {
        let mut l = RateLimits::new(limits());
        let (p, q, now) = (peer(), peer(), Instant::now());
        assert_eq!(allowed(&mut l, p, Traffic::Request, now, 10), 2);
        // p's requests are spent; its direct messages and q's requests are not.
        assert_eq!(allowed(&mut l, p, Traffic::Direct, now, 10), 5);
        assert_eq!(allowed(&mut l, q, Traffic::Request, now, 10), 2);
        assert_eq!(allowed(&mut l, p, Traffic::Gossip, now, 100), 20);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut l = RateLimits::new(limits());
        let (p, t0) = (peer(), Instant::now() + Duration::from_secs(10));
        assert_eq!(allowed(&mut l, p, Traffic::Request, t0, 10), 2);
        let earlier = t0 - Duration::from_secs(5);
        assert_eq!(allowed(&mut l, p, Traffic::Request, earlier, 10), 0);
        // And time is counted from the latest instant seen.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(allowed(&mut l, p, Traffic::Request, later, 10), 1);
    }

    #[test]
    fn buckets_of_peers_that_left_are_dropped() {
        let mut l = RateLimits::new(limits());
        let (p, q, now) = (peer(), peer(), Instant::now());
        assert_eq!(allowed(&mut l, p, Traffic::Request, now, 10), 2);
        l.allow(q, Traffic::Direct, now);
        assert_eq!(l.len(), 2);
        l.retain(|peer| *peer == q);
        assert_eq!(l.len(), 1);
        // p comes back later as a new member: a fresh bucket.
        assert_eq!(allowed(&mut l, p, Traffic::Request, now, 10), 2);
    }
}
