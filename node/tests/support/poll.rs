//! The one deadline poll of the test harness, the private engine and the benchmarks.

use std::time::{Duration, Instant};

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
