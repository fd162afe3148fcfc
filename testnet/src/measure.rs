//! What the testnet measures on its nodes besides their answers: each `warren-node` process's
//! CPU time and resident memory (from `/proc`), and how the nodes see each other's liveness
//! over a window (a [`LivenessWatch`]), to count SWIM's false suspicions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::{liveness, CliHandle};

/// CPU time (user + system) of process `pid` so far, from `/proc/<pid>/stat`; `None` when
/// the process is gone or the file does not parse.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, the Linux default, if that fails).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The command name of process `pid` (`/proc/<pid>/comm`).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// CPU used by each of `pids` over `window`, as a percentage of one core (`None` for a
/// process that was gone at either end). Sleeps for `window`.
pub fn cpu_percent(pids: &[u32], window: Duration) -> Vec<Option<f64>> {
    let start = Instant::now();
    let before: Vec<Option<Duration>> = pids.iter().map(|&p| cpu_time(p)).collect();
    std::thread::sleep(window);
    let wall = start.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(&p, b)| {
            let used = cpu_time(p)?.checked_sub(b?)?;
            Some(100.0 * used.as_secs_f64() / wall)
        })
        .collect()
}

/// How node `i` saw node `j` over a [`LivenessWatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairSeen {
    /// Samples where `i` saw `j` `suspect`.
    pub suspect: u32,
    /// Samples where `i` saw `j` `down` (or did not list it).
    pub down: u32,
    /// Times `i`'s view of `j` went from `alive` to anything else.
    pub flaps: u32,
}

/// What a [`LivenessWatch`] saw: `pairs[i][j]` is how node `i` saw node `j`.
#[derive(Debug, Clone, Default)]
pub struct LivenessSeen {
    /// Complete rounds (every node asked once).
    pub rounds: u32,
    /// Answers that failed (the node's API did not answer in time).
    pub failed: u32,
    /// Per observer, per member.
    pub pairs: Vec<Vec<PairSeen>>,
}

impl LivenessSeen {
    /// Total alive → not-alive transitions over all ordered pairs.
    pub fn flaps(&self) -> u32 {
        self.pairs.iter().flatten().map(|p| p.flaps).sum()
    }

    /// Ordered pairs (observer, member) ever seen `suspect`, and ever seen `down`.
    pub fn pairs_not_alive(&self) -> (usize, usize) {
        let all = || self.pairs.iter().flatten();
        (
            all().filter(|p| p.suspect > 0).count(),
            all().filter(|p| p.down > 0).count(),
        )
    }

    /// The `k` pairs with the most flaps: (observer, member, what was seen).
    pub fn worst(&self, k: usize) -> Vec<(usize, usize, PairSeen)> {
        let mut all: Vec<(usize, usize, PairSeen)> = self
            .pairs
            .iter()
            .enumerate()
            .flat_map(|(i, row)| {
                row.iter()
                    .enumerate()
                    .filter(|(_, p)| p.flaps > 0 || p.suspect > 0 || p.down > 0)
                    .map(move |(j, p)| (i, j, p.clone()))
            })
            .collect();
        all.sort_by_key(|(_, _, p)| std::cmp::Reverse((p.flaps, p.down, p.suspect)));
        all.truncate(k);
        all
    }
}

/// Asks every node for its members' liveness (`GET /v1/status`, all nodes at once) every
/// `period` on a thread, until stopped or for at most `max`. Each read makes the node ask
/// every member for its reports for the next minute (`warren_core::machine::WANT_MS`), so a
/// watch is not idle: stop it a minute before measuring idle CPU.
#[derive(Debug)]
pub struct LivenessWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<LivenessSeen>,
}

impl LivenessWatch {
    /// Starts watching the nodes `h` reaches, whose PeerIds are `peers` (node `i` is
    /// `peers[i]`).
    pub fn start(h: CliHandle, peers: Vec<String>, period: Duration, max: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let n = peers.len();
            let mut seen = LivenessSeen {
                pairs: vec![vec![PairSeen::default(); n]; n],
                ..LivenessSeen::default()
            };
            let mut last_alive = vec![vec![true; n]; n];
            let start = Instant::now();
            let all: Vec<usize> = (0..n).collect();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < max {
                let at = Instant::now();
                let statuses = h.statuses(&all);
                for ((i, row), status) in last_alive.iter_mut().enumerate().zip(statuses) {
                    let Ok(status) = status else {
                        seen.failed += 1;
                        continue;
                    };
                    for (j, peer) in peers.iter().enumerate().filter(|(j, _)| *j != i) {
                        let pair = &mut seen.pairs[i][j];
                        let live = liveness(&status, peer);
                        match live {
                            Some("alive") => {}
                            Some("suspect") => pair.suspect += 1,
                            _ => pair.down += 1,
                        }
                        let alive = live == Some("alive");
                        if row[j] && !alive {
                            pair.flaps += 1;
                        }
                        row[j] = alive;
                    }
                }
                seen.rounds += 1;
                let next = at + period;
                while !flag.load(Ordering::Relaxed) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
                }
            }
            seen
        });
        Self { stop, thread }
    }

    /// Stops watching and returns what was seen.
    pub fn stop(self) -> LivenessSeen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_time(me).is_some());
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(comm(me).is_some());
        assert_eq!(cpu_time(u32::MAX), None);
    }

    #[test]
    fn worst_pairs_come_first() {
        let mut seen = LivenessSeen {
            pairs: vec![vec![PairSeen::default(); 3]; 3],
            ..LivenessSeen::default()
        };
        seen.pairs[0][1].suspect = 2;
        seen.pairs[0][1].flaps = 1;
        seen.pairs[2][0].down = 3;
        seen.pairs[2][0].flaps = 2;
        assert_eq!(seen.flaps(), 3);
        assert_eq!(seen.pairs_not_alive(), (1, 1));
        let worst = seen.worst(5);
        assert_eq!(
            worst.iter().map(|(i, j, _)| (*i, *j)).collect::<Vec<_>>(),
            [(2, 0), (0, 1)]
        );
    }
}
