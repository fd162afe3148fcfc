//! Running `ip` (iproute2) with a deadline and bounded output.
//!
//! Addresses, MTU, link state and routes are set with the `ip` command rather than a netlink
//! crate (rtnetlink and its netlink-packet-* family, with futures and a tokio runtime of its
//! own): four commands at start-up and one at shutdown do not justify the build time and the
//! dependency tree, every machine Warren runs on has iproute2 (the test scripts install it),
//! and an operator can replay a failing command from the error, which names it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::OverlayError;

/// How long one `ip` command may run before it is killed.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this much of a command's stdout and of its stderr is kept.
const OUTPUT_LIMIT: u64 = 4096;

/// Runs `program args` with stdin from `/dev/null`, waits at most [`COMMAND_TIMEOUT`], and
/// returns its stdout (at most 4 KiB, lossily decoded).
///
/// Errors: [`OverlayError::Command`] when it cannot start, exits non-zero (with its stderr),
/// is killed by a signal or runs past the deadline (then it is killed).
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, OverlayError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let failed = |status: Option<i32>, stderr: String| OverlayError::Command {
        command: command.clone(),
        status,
        stderr,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(None, format!("cannot start: {e}")))?;
    // Each pipe is drained by a thread of its own, so a chatty command never blocks on a full
    // pipe while we wait for its exit; whatever is beyond the limit is read and dropped.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = (&mut pipe).take(OUTPUT_LIMIT).read_to_end(&mut kept);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            }
            String::from_utf8_lossy(&kept).trim().to_string()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );

    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("timed out after {COMMAND_TIMEOUT:?}, killed"));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("cannot wait for it: {e}"));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Ok(status) if status.success() => Ok(stdout),
        Ok(status) => Err(failed(status.code(), stderr)),
        Err(why) => Err(failed(None, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_failure_and_missing_program_are_told_apart() {
        assert_eq!(run("sh", &["-c", "echo hello"]).expect("runs"), "hello");
        match run("sh", &["-c", "echo oops >&2; exit 3"]) {
            Err(OverlayError::Command {
                command,
                status,
                stderr,
            }) => {
                assert_eq!(command, "sh -c echo oops >&2; exit 3");
                assert_eq!(status, Some(3));
                assert_eq!(stderr, "oops");
            }
            other => panic!("want a Command error, got {other:?}"),
        }
        match run("/nonexistent/ip", &["link"]) {
            Err(OverlayError::Command {
                status: None,
                stderr,
                ..
            }) => {
                assert!(stderr.starts_with("cannot start"), "{stderr}");
            }
            other => panic!("want a start failure, got {other:?}"),
        }
    }

    #[test]
    fn output_is_bounded() {
        let out = run("sh", &["-c", "head -c 100000 /dev/zero | tr '\\0' x"]).expect("runs");
        assert_eq!(out.len(), OUTPUT_LIMIT as usize);
    }
}
