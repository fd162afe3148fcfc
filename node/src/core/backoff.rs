//! Restart backoff: a container that keeps exiting is started again after 1 s, then 2 s, 4 s,
//! ... up to a cap, instead of every reconcile round; once it has kept running for
//! `stable_after_ms`, the count starts over. Pure: the caller passes the time.

use std::collections::BTreeMap;

use warren_crdt::SlotId;

use super::Millis;

/// Backoff timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first restart (default 1,000).
    pub initial_ms: u64,
    /// Longest delay (default 60,000).
    pub max_ms: u64,
    /// Running this long resets the count (default 30,000).
    pub stable_after_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            max_ms: 60_000,
            stable_after_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    restarts: u32,
    last_start: Millis,
    running_since: Option<Millis>,
}

/// Per-slot restart counts and when the next restart is allowed.
#[derive(Debug, Default)]
pub struct RestartBackoff {
    config: BackoffConfig,
    slots: BTreeMap<SlotId, Entry>,
}

impl RestartBackoff {
    /// A tracker with `config`.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            slots: BTreeMap::new(),
        }
    }

    /// The delay before restart number `restarts + 1`: initial × 2^restarts, capped.
    fn delay(&self, restarts: u32) -> u64 {
        let factor = 1u64.checked_shl(restarts.min(32)).unwrap_or(u64::MAX);
        self.config
            .initial_ms
            .saturating_mul(factor)
            .min(self.config.max_ms)
    }

    /// The slot's container is running at `now` (resets the count once it has been stable).
    pub fn running(&mut self, slot: &SlotId, now: Millis) {
        if let Some(e) = self.slots.get_mut(slot) {
            let since = *e.running_since.get_or_insert(now);
            if now.since(since) >= self.config.stable_after_ms {
                self.slots.remove(slot);
            }
        }
    }

    /// Whether the stopped container of `slot` may be started again at `now`; if so, the
    /// restart is counted. Returns the milliseconds left to wait otherwise.
    pub fn try_restart(&mut self, slot: &SlotId, now: Millis) -> Result<(), u64> {
        let delay = |restarts| self.delay(restarts);
        match self.slots.get(slot).copied() {
            Some(e) => {
                let wait = delay(e.restarts.saturating_sub(1));
                let ready = Millis(e.last_start.0.saturating_add(wait));
                if now < ready {
                    return Err(ready.since(now));
                }
                self.slots.insert(
                    slot.clone(),
                    Entry {
                        restarts: e.restarts.saturating_add(1),
                        last_start: now,
                        running_since: None,
                    },
                );
                Ok(())
            }
            None => {
                self.slots.insert(
                    slot.clone(),
                    Entry {
                        restarts: 1,
                        last_start: now,
                        running_since: None,
                    },
                );
                Ok(())
            }
        }
    }

    /// Restarts counted for `slot` since it was last stable.
    pub fn restarts(&self, slot: &SlotId) -> u32 {
        self.slots.get(slot).map_or(0, |e| e.restarts)
    }

    /// Forgets slots not in `keep` (no longer assigned here).
    pub fn retain(&mut self, keep: impl Fn(&SlotId) -> bool) {
        self.slots.retain(|s, _| keep(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::ServiceName;

    fn slot() -> SlotId {
        SlotId {
            service: ServiceName::new("web").expect("name"),
            slot: 0,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset_when_stable() {
        let mut b = RestartBackoff::new(BackoffConfig {
            initial_ms: 1_000,
            max_ms: 4_000,
            stable_after_ms: 10_000,
        });
        let s = slot();
        // The first restart is immediate; then 1 s, 2 s, 4 s, 4 s.
        assert_eq!(b.try_restart(&s, Millis(0)), Ok(()));
        assert_eq!(b.try_restart(&s, Millis(500)), Err(500));
        assert_eq!(b.try_restart(&s, Millis(1_000)), Ok(()));
        assert_eq!(b.try_restart(&s, Millis(2_999)), Err(1));
        assert_eq!(b.try_restart(&s, Millis(3_000)), Ok(()));
        assert_eq!(b.try_restart(&s, Millis(6_000)), Err(1_000));
        assert_eq!(b.try_restart(&s, Millis(7_000)), Ok(()));
        assert_eq!(b.try_restart(&s, Millis(11_000)), Ok(()));
        assert_eq!(b.restarts(&s), 5);
        // Running 10 s resets it.
        b.running(&s, Millis(12_000));
        b.running(&s, Millis(22_000));
        assert_eq!(b.restarts(&s), 0);
        assert_eq!(b.try_restart(&s, Millis(22_001)), Ok(()));
    }
}
