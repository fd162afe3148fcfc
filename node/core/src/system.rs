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
    /// Its index on the node (`nvidia-smi`'s `index`: the order the driver enumerates GPUs
    /// in, which a reboot or a GPU added may change). `None` in reports of older nodes.
    #[serde(default)]
    pub index: Option<u32>,
    /// Its UUID (`GPU-5c0cbd6e-…`, at most [`MAX_GPU_ID_BYTES`]); empty in reports of older
    /// nodes.
    #[serde(default)]
    pub uuid: String,
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
        if !valid_uuid(&self.uuid) {
            self.uuid.clear();
        }
        self
    }

    /// The id a task's assignment names this GPU by, and Docker is given (`DeviceRequests`'
    /// `DeviceIDs`): its UUID, which names the same GPU across reboots and re-enumeration (an
    /// index may name another GPU after either); its index only where no UUID was reported.
    /// `None` when neither is known (an older node's report): such a GPU is not reserved.
    pub fn device_id(&self) -> Option<String> {
        if !self.uuid.is_empty() {
            Some(self.uuid.clone())
        } else {
            self.index.map(|i| i.to_string())
        }
    }
}

/// The device ids of `gpus` ([`Gpu::device_id`]), in order, each once.
pub fn device_ids(gpus: &[Gpu]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in gpus.iter().filter_map(Gpu::device_id) {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Longest GPU UUID a heartbeat carries, in bytes (`GPU-` and a 36-character UUID is 40).
pub const MAX_GPU_ID_BYTES: usize = warren_crdt::MAX_GPU_ID_BYTES;

/// Whether `uuid` looks like an `nvidia-smi` UUID: 1 to [`MAX_GPU_ID_BYTES`] ASCII letters,
/// digits and `-` (it is passed to Docker as a device id).
fn valid_uuid(uuid: &str) -> bool {
    !uuid.is_empty()
        && uuid.len() <= MAX_GPU_ID_BYTES
        && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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

/// The arguments `nvidia-smi` is run with; [`parse_nvidia_smi`] reads what it prints.
pub const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader,nounits",
];

/// GPUs from the output of `nvidia-smi` run with [`NVIDIA_SMI_ARGS`]: one `INDEX, UUID, NAME,
/// MiB` line per GPU (`nvidia-smi` does not quote its CSV; a name may hold commas, so the
/// name is what lies between the second and the last comma). A line whose index or memory is
/// not a number, whose UUID is not 1 to [`MAX_GPU_ID_BYTES`] letters, digits and `-`, or
/// whose name is empty is skipped, as is a second line with an index or UUID already seen;
/// at most [`MAX_GPUS`].
pub fn parse_nvidia_smi(output: &str) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = Vec::new();
    for line in output.lines() {
        if gpus.len() >= MAX_GPUS {
            break;
        }
        let parsed = (|| {
            let mut fields = line.splitn(3, ',');
            let index: u32 = fields.next()?.trim().parse().ok()?;
            let uuid = fields.next()?.trim();
            let (name, mib) = fields.next()?.rsplit_once(',')?;
            let mib: u64 = mib.trim().parse().ok()?;
            let name = name.trim();
            (valid_uuid(uuid) && !name.is_empty()).then(|| {
                Gpu {
                    index: Some(index),
                    uuid: uuid.to_string(),
                    name: name.to_string(),
                    memory_bytes: mib.saturating_mul(1024 * 1024),
                }
                .bounded()
            })
        })();
        if let Some(gpu) = parsed {
            if !gpus
                .iter()
                .any(|g| g.index == gpu.index || g.uuid == gpu.uuid)
            {
                gpus.push(gpu);
            }
        }
    }
    gpus
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
        let out = "0, GPU-5c0cbd6e-2a9f-4b1e-9d1c-0e4a1b2c3d4e, NVIDIA A100-SXM4-40GB, 40960\n\
                   1, GPU-aa, Tesla T4, rev 2, 15360\n\
                   not a gpu line\n\
                   2, GPU-bb, , 5\n\
                   3, GPU-cc, X, lots\n\
                   x, GPU-dd, X, 5\n\
                   4, GPU ee, X, 5\n\
                   5, , X, 5\n\
                   1, GPU-ff, Same index, 5\n\
                   6, GPU-aa, Same uuid, 5\n";
        assert_eq!(
            parse_nvidia_smi(out),
            vec![
                Gpu {
                    index: Some(0),
                    uuid: "GPU-5c0cbd6e-2a9f-4b1e-9d1c-0e4a1b2c3d4e".into(),
                    name: "NVIDIA A100-SXM4-40GB".into(),
                    memory_bytes: 40_960 * 1024 * 1024
                },
                Gpu {
                    index: Some(1),
                    uuid: "GPU-aa".into(),
                    name: "Tesla T4, rev 2".into(),
                    memory_bytes: 15_360 * 1024 * 1024
                },
            ]
        );
        let many: String = (0..40).map(|i| format!("{i}, GPU-{i}, g, 1\n")).collect();
        assert_eq!(parse_nvidia_smi(&many).len(), MAX_GPUS);
        let long = format!("0, GPU-0, {}, 1\n", "é".repeat(100));
        let gpus = parse_nvidia_smi(&long);
        assert!(gpus[0].name.len() <= MAX_GPU_NAME_BYTES && !gpus[0].name.is_empty());
        let uuid = format!("0, GPU-{}, g, 1\n", "a".repeat(MAX_GPU_ID_BYTES));
        assert!(parse_nvidia_smi(&uuid).is_empty());
    }

    #[test]
    fn a_gpu_is_named_by_its_uuid_else_its_index() {
        let gpu = |index, uuid: &str| Gpu {
            index,
            uuid: uuid.into(),
            ..Gpu::default()
        };
        assert_eq!(
            device_ids(&[
                gpu(Some(0), "GPU-a"),
                gpu(Some(1), ""),
                gpu(None, ""),
                gpu(Some(2), "GPU-a")
            ]),
            vec!["GPU-a".to_string(), "1".to_string()]
        );
        // A peer's report with a UUID Docker could not take loses it.
        assert_eq!(
            gpu(Some(3), "GPU a;b").bounded().device_id(),
            Some("3".into())
        );
    }
}
