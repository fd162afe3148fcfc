//! The one deadline poll: every wait of the harness, the tests, the testnet and the
//! benchmarks goes through [`poll_until`].

use std::time::{Duration, Instant};

/// How often [`wait_for`] and [`holds_for`] look: often enough to time a state change to a
/// fifth of a second, rarely enough not to starve the nodes of a small machine.
pub const POLL: Duration = Duration::from_millis(200);

/// Calls `f` every `every` until it returns `Some` (that value) or `timeout` has passed since
/// the first call (`None`). `f` runs at least once, and once more at the deadline.
pub fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// Polls `f` every [`POLL`] until it returns `Some` and returns that value.
///
/// # Panics
///
/// After `timeout`, with `what` in the message: this is a test's assertion that the state
/// comes.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, POLL, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// The counterpart of [`wait_for`] for "nothing changes": for `window`, checks `f` every
/// [`POLL`] (at the start and at the end too).
///
/// # Panics
///
/// The first time `f` fails, with `what` and `f`'s message: this is a test's assertion that
/// the state holds.
pub fn holds_for(what: &str, window: Duration, mut f: impl FnMut() -> Result<(), String>) {
    if let Some(e) = poll_until(window, POLL, || f().err()) {
        panic!("{what} no longer holds: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_returns_the_first_value_and_gives_up_at_the_deadline() {
        let mut calls = 0;
        let got = poll_until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));
        let start = Instant::now();
        let mut calls = 0;
        let none: Option<()> =
            poll_until(Duration::from_millis(30), Duration::from_millis(5), || {
                calls += 1;
                None
            });
        assert_eq!(none, None);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(
            calls >= 2,
            "at least the first call and the one at the deadline"
        );
    }

    #[test]
    #[should_panic(expected = "the flag no longer holds: flipped")]
    fn holds_for_panics_at_the_first_failure() {
        let mut n = 0;
        holds_for("the flag", Duration::from_secs(5), || {
            n += 1;
            if n < 2 {
                Ok(())
            } else {
                Err("flipped".into())
            }
        });
    }
}
