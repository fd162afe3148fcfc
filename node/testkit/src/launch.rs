//! The one node launcher: `warren-node up` as a child process with its data dir, addresses,
//! extra arguments and log file, run directly (the node's tests, on 127.0.0.1) or behind a
//! prefix command (the testnet: `ip netns exec NS`), and the process helpers that stop it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::poll::poll_until;
use crate::Error;

/// How often a stop looks whether the process is gone.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How to start one `warren-node up`: built with [`Launch::new`] and its setters, started with
/// [`Launch::spawn`] (or turned into a [`Command`] with [`Launch::command`]).
///
/// The command line is `PREFIX... PROGRAM up --name NAME --data-dir DIR --listen LISTEN --api
/// API ARGS...`, with `ENV` added to the environment, stdin from `/dev/null`, stderr appended
/// to `log` and stdout appended to `stdout` (or discarded).
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `warren-node` binary.
    pub program: PathBuf,
    /// A command the node runs under (e.g. `["ip", "netns", "exec", "wt-1-n0"]`); empty: none.
    pub prefix: Vec<OsString>,
    /// `--name`.
    pub name: String,
    /// `--data-dir` (created if missing).
    pub data_dir: PathBuf,
    /// `--listen`: the libp2p multiaddr of its QUIC listener.
    pub listen: String,
    /// `--api`: the `host:port` its HTTP API listens on.
    pub api: String,
    /// Arguments after the above: the role (`--init NAME`, `--join TOKEN`) and any flag.
    pub args: Vec<String>,
    /// Environment variables added to the inherited ones.
    pub env: Vec<(String, String)>,
    /// Where stderr (the node's log) is appended.
    pub log: PathBuf,
    /// Where stdout is appended; `None`: discarded.
    pub stdout: Option<PathBuf>,
    /// Whether the node gets a process group of its own, so a Ctrl-C at the terminal that
    /// started it does not reach it.
    pub own_process_group: bool,
}

impl Launch {
    /// `program up --name name --data-dir data_dir`, listening on an ephemeral QUIC port and
    /// an ephemeral API port of 127.0.0.1, logging to `<data_dir>.log`; no prefix, no extra
    /// arguments or environment.
    pub fn new(program: impl Into<PathBuf>, name: &str, data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            program: program.into(),
            prefix: Vec::new(),
            name: name.to_string(),
            log: data_dir.with_extension("log"),
            data_dir,
            listen: "/ip4/127.0.0.1/udp/0/quic-v1".to_string(),
            api: "127.0.0.1:0".to_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdout: None,
            own_process_group: false,
        }
    }

    /// Runs the node under `prefix` (e.g. `ip netns exec NS`).
    pub fn prefix<S: Into<OsString>>(mut self, prefix: impl IntoIterator<Item = S>) -> Self {
        self.prefix = prefix.into_iter().map(Into::into).collect();
        self
    }

    /// `--listen` multiaddr.
    pub fn listen(mut self, multiaddr: impl Into<String>) -> Self {
        self.listen = multiaddr.into();
        self
    }

    /// `--api` address (`host:port`).
    pub fn api(mut self, addr: impl Into<String>) -> Self {
        self.api = addr.into();
        self
    }

    /// Appends arguments (the role, flags).
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Appends stderr to `path` instead of `<data_dir>.log`.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = path.into();
        self
    }

    /// Appends stdout to `path` instead of discarding it.
    pub fn stdout(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdout = Some(path.into());
        self
    }

    /// Gives the node a process group of its own.
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// The command that starts the node: creates the data dir and opens the log files.
    pub fn command(&self) -> Result<Command, Error> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| Error::Io {
            path: self.data_dir.clone(),
            source,
        })?;
        let stderr = append(&self.log)?;
        let stdout = match &self.stdout {
            Some(path) => Stdio::from(append(path)?),
            None => Stdio::null(),
        };
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&self.program);
                cmd
            }
            None => Command::new(&self.program),
        };
        cmd.args(["up", "--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.listen, "--api", &self.api])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if self.own_process_group {
            cmd.process_group(0);
        }
        Ok(cmd)
    }

    /// Starts the node (see [`command`](Self::command)).
    pub fn spawn(&self) -> Result<NodeProcess, Error> {
        let child = self.command()?.spawn().map_err(|source| Error::Spawn {
            command: format!("{} up --name {}", self.program.display(), self.name),
            source,
        })?;
        Ok(NodeProcess { child })
    }
}

fn append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A `warren-node` started by [`Launch::spawn`]. Dropping it leaves the process running (as
/// dropping a [`Child`] does); [`stop`](Self::stop) or [`kill`](Self::kill) end it.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
}

impl NodeProcess {
    /// Its process id (with a prefix command that execs, the node's own).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status once it has exited (reaped), `None` while it runs.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (a `kill -s` name: `TERM`, `INT`, ...), waits up to `grace` for the
    /// exit, then SIGKILLs it (and waits up to `grace` again); reaps it. Returns how it ended.
    pub fn stop(&mut self, signal: &str, grace: Duration) -> Stopped {
        let pid = self.id();
        let child = &mut self.child;
        let stopped = stop_pid(pid, signal, grace, || matches!(child.try_wait(), Ok(None)));
        let _ = self.child.wait();
        stopped
    }

    /// SIGKILL, as on power loss: the process dies without any cleanup; reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How [`stop_pid`] ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running, or exited on the first signal within the grace.
    Exited,
    /// It outlived the grace and was SIGKILLed; it is gone now.
    Killed,
    /// It still runs after the SIGKILL and a second grace.
    Survived,
}

/// Sends `kill -s signal pid`; whether `kill` succeeded.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ends process `pid`: if `alive()` says it runs, sends `signal`, waits up to `grace` for
/// `alive()` to turn false, then SIGKILLs it and waits up to `grace` again. `alive` is the
/// caller's test (a child's `try_wait`, or [`pid_runs`] for a process it did not start).
pub fn stop_pid(
    pid: u32,
    signal_name: &str,
    grace: Duration,
    mut alive: impl FnMut() -> bool,
) -> Stopped {
    if !alive() {
        return Stopped::Exited;
    }
    signal(pid, signal_name);
    if poll_until(grace, STOP_POLL, || (!alive()).then_some(())).is_some() {
        return Stopped::Exited;
    }
    signal(pid, "KILL");
    match poll_until(grace, STOP_POLL, || (!alive()).then_some(())) {
        Some(()) => Stopped::Killed,
        None => Stopped::Survived,
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Whether process `pid` is alive and its command line contains each of `needles` (e.g.
/// `warren-node` and its data dir): a pid read back from a state file may have been reused.
pub fn pid_runs(pid: u32, needles: &[&str]) -> bool {
    if !process_alive(pid) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    needles.iter().all(|n| cmdline.contains(n))
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_prefix_program_up_and_the_options() {
        let dir = std::env::temp_dir().join(format!("wtk-launch-{}", std::process::id()));
        let launch = Launch::new("/bin/warren-node", "n1", dir.join("n1"))
            .prefix(["ip", "netns", "exec", "ns1"])
            .listen("/ip4/10.0.0.1/udp/7701/quic-v1")
            .api("127.0.0.1:7700")
            .args(["--join", "TOKEN"])
            .env("NO_COLOR", "1");
        let cmd = launch.command().expect("command");
        let line: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let data = dir.join("n1").display().to_string();
        assert_eq!(
            line,
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "/bin/warren-node",
                "up",
                "--name",
                "n1",
                "--data-dir",
                &data,
                "--listen",
                "/ip4/10.0.0.1/udp/7701/quic-v1",
                "--api",
                "127.0.0.1:7700",
                "--join",
                "TOKEN"
            ]
        );
        assert!(dir.join("n1").is_dir(), "the data dir is created");
        assert!(dir.join("n1.log").is_file(), "the log is opened");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(dir.with_extension("log"));
    }

    #[test]
    fn a_process_that_ignores_the_signal_is_killed_after_the_grace() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do :; done"])
            .spawn()
            .expect("sh");
        let pid = child.id();
        // The shell installs its trap before it loops: wait until SIGTERM (15, bit 14 of
        // the mask) is ignored (bounded).
        let ignores_term = || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
            (mask & (1 << 14) != 0).then_some(())
        };
        assert!(
            poll_until(Duration::from_secs(5), STOP_POLL, ignores_term).is_some(),
            "the shell never ignored SIGTERM"
        );
        let stopped = stop_pid(pid, "TERM", Duration::from_millis(300), || {
            matches!(child.try_wait(), Ok(None))
        });
        assert_eq!(stopped, Stopped::Killed);
        assert!(!process_alive(pid));
    }

    #[test]
    fn the_tail_is_the_last_lines() {
        let path = std::env::temp_dir().join(format!("wtk-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\n").expect("write");
        assert_eq!(log_tail(&path, 2), "b\nc");
        assert_eq!(log_tail(&path, 9), "a\nb\nc");
        let _ = std::fs::remove_file(&path);
        assert_eq!(log_tail(&path, 2), "");
    }
}
