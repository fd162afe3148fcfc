//! Restart backoff, the one rule for how long a task that keeps stopping waits before its
//! next start: the first restart is immediate, then `initial`, `2 × initial`, `4 × initial`,
//! ... up to a cap; once the task has kept running for `stable_after_ms`, the count starts
//! over. Pure: the caller passes the time. [`super::Supervisor`] keeps one [`Backoff`] per
//! slot, with a [`BackoffConfig`] made from the service's restart policy.

use warren_crdt::RestartPolicy;

use super::Millis;

/// Backoff timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the second restart in a row (default 1,000).
    pub initial_ms: u64,
    /// Longest delay (default 60,000).
    pub max_ms: u64,
    /// Running this long resets the count (default 30,000).
    pub stable_after_ms: u64,
}

/// The cap of the doubling delay unless a policy's own delay is longer: 60 s.
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// How long a task must keep running before its restart count starts over: 30 s.
pub const STABLE_AFTER_MS: u64 = 30_000;

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            max_ms: MAX_BACKOFF_MS,
            stable_after_ms: STABLE_AFTER_MS,
        }
    }
}

impl BackoffConfig {
    /// The timing a restart policy asks for: its `delay_ms` doubling up to 60 s (or up to the
    /// delay itself when that is longer), reset after 30 s of running.
    pub fn for_policy(policy: &RestartPolicy) -> Self {
        Self {
            initial_ms: policy.delay_ms,
            max_ms: MAX_BACKOFF_MS.max(policy.delay_ms),
            stable_after_ms: STABLE_AFTER_MS,
        }
    }

    /// The delay before restart number `restarts + 1` when `restarts` happened in a row
    /// (`restarts ≥ 1`): initial × 2^(restarts − 1), capped at `max_ms`; 0 before the first.
    pub fn delay_ms(&self, restarts: u32) -> u64 {
        let Some(doublings) = restarts.checked_sub(1) else {
            return 0;
        };
        let factor = 1u64.checked_shl(doublings.min(63)).unwrap_or(u64::MAX);
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }
}

/// One slot's restart count and when its next restart is allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    restarts: u32,
    last_start: Option<Millis>,
    running_since: Option<Millis>,
}

impl Backoff {
    /// The slot's container is running at `now`: once it has run for
    /// `config.stable_after_ms`, the count starts over.
    pub fn running(&mut self, config: &BackoffConfig, now: Millis) {
        if self.restarts == 0 {
            return;
        }
        let since = *self.running_since.get_or_insert(now);
        if now.since(since) >= config.stable_after_ms {
            *self = Backoff::default();
        }
    }

    /// Milliseconds from `now` until the next restart is allowed (0: now).
    pub fn wait_ms(&self, config: &BackoffConfig, now: Millis) -> u64 {
        match self.last_start {
            None => 0,
            Some(last) => {
                let ready = Millis(last.0.saturating_add(config.delay_ms(self.restarts)));
                ready.since(now)
            }
        }
    }

    /// Whether the stopped container may be started again at `now`; if so, the restart is
    /// counted. Otherwise `Err` with the milliseconds left to wait.
    pub fn try_restart(&mut self, config: &BackoffConfig, now: Millis) -> Result<(), u64> {
        match self.wait_ms(config, now) {
            0 => {
                self.restarts = self.restarts.saturating_add(1);
                self.last_start = Some(now);
                self.running_since = None;
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Restarts counted since the task last ran stable.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_when_stable() {
        let config = BackoffConfig {
            initial_ms: 1_000,
            max_ms: 4_000,
            stable_after_ms: 10_000,
        };
        let mut b = Backoff::default();
        // The first restart is immediate; then 1 s, 2 s, 4 s, 4 s.
        assert_eq!(b.try_restart(&config, Millis(0)), Ok(()));
        assert_eq!(b.try_restart(&config, Millis(500)), Err(500));
        assert_eq!(b.try_restart(&config, Millis(1_000)), Ok(()));
        assert_eq!(b.try_restart(&config, Millis(2_999)), Err(1));
        assert_eq!(b.try_restart(&config, Millis(3_000)), Ok(()));
        assert_eq!(b.try_restart(&config, Millis(6_000)), Err(1_000));
        assert_eq!(b.try_restart(&config, Millis(7_000)), Ok(()));
        assert_eq!(b.try_restart(&config, Millis(11_000)), Ok(()));
        assert_eq!(b.restarts(), 5);
        // Running 10 s resets it.
        b.running(&config, Millis(12_000));
        b.running(&config, Millis(22_000));
        assert_eq!(b.restarts(), 0);
        assert_eq!(b.try_restart(&config, Millis(22_001)), Ok(()));
    }

    #[test]
    fn a_policy_sets_the_base_and_a_long_delay_raises_the_cap() {
        let policy = |delay_ms| RestartPolicy {
            delay_ms,
            ..RestartPolicy::default()
        };
        let c = BackoffConfig::for_policy(&policy(200));
        assert_eq!(
            (1..=11).map(|n| c.delay_ms(n)).collect::<Vec<_>>(),
            vec![200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 60_000, 60_000]
        );
        assert_eq!(c.delay_ms(0), 0);
        assert_eq!(c.delay_ms(u32::MAX), 60_000);
        let long = BackoffConfig::for_policy(&policy(120_000));
        assert_eq!((long.delay_ms(1), long.delay_ms(5)), (120_000, 120_000));
    }
}
