//! What a node says of its own machine: capacity (CPUs, memory) offered to reservations,
//! usage (load, memory in use) and GPUs, reported in its heartbeats (soft state); and the
//! pure parsers of the texts they are read from (`/proc/meminfo`, `/proc/loadavg`,
//! `nvidia-smi`'s CSV). Reading those files and running the tool is the daemon's
//! (`warren_node::system`); a reading that fails is `None` or empty, never an error: the node
//! runs without it.

use serde::{Deserialize, Serialize};

use crate::core::Capacity;

/// Most GPUs one heartbeat reports.
pub const MAX_GPUS: usize = 16;
/// Longest GPU name a heartbeat carries, in bytes.
pub const MAX_GPU_NAME_BYTES: usize = 64;

/// A node's usage at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// One-minute load average × 1,000 (`/proc/loadavg`; 1.5 runnable tasks = 1,500).
    pub load_1m_milli: u64,
    /// Memory in use in bytes: `MemTotal - MemAvailable` of `/proc/meminfo`.
    pub memory_used_bytes: u64,
}

/// One GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Its model name (at most [`MAX_GPU_NAME_BYTES`]).
    pub name: String,
    /// Its memory in bytes.
    pub memory_bytes: u64,
}

impl Gpu {
    /// This GPU with its name cut to [`MAX_GPU_NAME_BYTES`] on a character boundary (a peer's
    /// heartbeat is not trusted to be short).
    pub fn bounded(mut self) -> Self {
        if self.name.len() > MAX_GPU_NAME_BYTES {
            self.name = crate::engine::truncate_text(&self.name, MAX_GPU_NAME_BYTES);
        }
        self
    }
}

/// The value of `key` (e.g. `MemTotal`) in `/proc/meminfo` text, in bytes.
fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// Capacity from `/proc/meminfo` text and a CPU count.
pub fn parse_capacity(meminfo: &str, cpus: u64) -> Option<Capacity> {
    Some(Capacity {
        nano_cpus: cpus.saturating_mul(1_000_000_000),
        memory_bytes: meminfo_bytes(meminfo, "MemTotal")?,
    })
}

/// Usage from `/proc/loadavg` and `/proc/meminfo` texts.
pub fn parse_usage(loadavg: &str, meminfo: &str) -> Option<Usage> {
    let load: f64 = loadavg.split_whitespace().next()?.parse().ok()?;
    if !load.is_finite() || load < 0.0 {
        return None;
    }
    let total = meminfo_bytes(meminfo, "MemTotal")?;
    let available = meminfo_bytes(meminfo, "MemAvailable")?;
    Some(Usage {
        load_1m_milli: (load * 1000.0).round() as u64,
        memory_used_bytes: total.saturating_sub(available),
    })
}

/// GPUs from the output of `nvidia-smi --query-gpu=name,memory.total
/// --format=csv,noheader,nounits` (one `NAME, MiB` line per GPU). Lines that do not parse
/// are skipped; at most [`MAX_GPUS`].
pub fn parse_nvidia_smi(output: &str) -> Vec<Gpu> {
    output
        .lines()
        .filter_map(|line| {
            let (name, mib) = line.rsplit_once(',')?;
            let mib: u64 = mib.trim().parse().ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| {
                Gpu {
                    name: name.to_string(),
                    memory_bytes: mib.saturating_mul(1024 * 1024),
                }
                .bounded()
            })
        })
        .take(MAX_GPUS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str =
        "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20480000 kB\n";

    #[test]
    fn capacity_and_usage_parse_from_proc() {
        assert_eq!(
            parse_capacity(MEMINFO, 2),
            Some(Capacity {
                nano_cpus: 2_000_000_000,
                memory_bytes: 24_576_000 * 1024
            })
        );
        assert_eq!(
            parse_usage("1.53 0.80 0.40 2/345 6789\n", MEMINFO),
            Some(Usage {
                load_1m_milli: 1530,
                memory_used_bytes: (24_576_000 - 20_480_000) * 1024
            })
        );
        assert_eq!(parse_usage("", MEMINFO), None);
        assert_eq!(parse_usage("nan 1 1", MEMINFO), None);
        assert_eq!(parse_usage("1.0 1 1", "MemTotal: 5 kB\n"), None);
        // `MemTotalX` is not `MemTotal`.
        assert_eq!(parse_capacity("MemTotalX: 5 kB\n", 1), None);
    }

    #[test]
    fn nvidia_smi_lines_become_gpus_and_garbage_is_skipped() {
        let out = "NVIDIA A100-SXM4-40GB, 40960\nTesla T4, 15360\nnot a gpu line\n, 5\nX, lots\n";
        assert_eq!(
            parse_nvidia_smi(out),
            vec![
                Gpu {
                    name: "NVIDIA A100-SXM4-40GB".into(),
                    memory_bytes: 40_960 * 1024 * 1024
                },
                Gpu {
                    name: "Tesla T4".into(),
                    memory_bytes: 15_360 * 1024 * 1024
                },
            ]
        );
        let many: String = (0..40).map(|i| format!("gpu{i}, 1\n")).collect();
        assert_eq!(parse_nvidia_smi(&many).len(), MAX_GPUS);
        let long = format!("{}, 1\n", "é".repeat(100));
        let gpus = parse_nvidia_smi(&long);
        assert!(gpus[0].name.len() <= MAX_GPU_NAME_BYTES && !gpus[0].name.is_empty());
    }
}
