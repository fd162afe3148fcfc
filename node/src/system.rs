//! What a node reads of its own machine: capacity (CPUs, memory) offered to reservations,
//! usage (load, memory in use) and GPUs, reported to the members that need it (soft state). Readings
//! come from `/proc` and, where it is installed, `nvidia-smi`; a reading that fails is `None`
//! or empty, never an error: the node runs without it.
//!
//! The data types and the parsers of what is read are pure and live in
//! [`warren_core::system`] (re-exported here); this module holds only the probes that touch
//! the machine.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use warren_core::system::{
    device_ids, parse_capacity, parse_nvidia_smi, parse_usage, Gpu, Usage, MAX_GPUS,
    MAX_GPU_NAME_BYTES, NVIDIA_SMI_ARGS,
};

use crate::core::Capacity;

/// Longest `nvidia-smi` may run before its reading is dropped.
const NVIDIA_SMI_DEADLINE: Duration = Duration::from_secs(3);

/// This machine's CPUs (the threads this process may run on) and memory (`MemTotal`);
/// `None` when either cannot be read.
pub fn read_capacity() -> Option<Capacity> {
    let cpus = std::thread::available_parallelism().ok()?.get() as u64;
    parse_capacity(&std::fs::read_to_string("/proc/meminfo").ok()?, cpus)
}

/// This machine's usage now; `None` when `/proc` cannot be read.
pub fn read_usage() -> Option<Usage> {
    parse_usage(
        &std::fs::read_to_string("/proc/loadavg").ok()?,
        &std::fs::read_to_string("/proc/meminfo").ok()?,
    )
}

/// This machine's NVIDIA GPUs, from `nvidia-smi` when it is installed and answers within 3 s;
/// empty otherwise (no GPU, no driver, or a hung tool — it is killed).
pub fn read_gpus() -> Vec<Gpu> {
    let Ok(mut child) = Command::new("nvidia-smi")
        .args(NVIDIA_SMI_ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Vec::new();
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return Vec::new(),
            Ok(None) if start.elapsed() > NVIDIA_SMI_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Vec::new();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.by_ref().take(64 * 1024).read_to_string(&mut out);
    }
    parse_nvidia_smi(&out)
}
