//! A `dockerd` of a test's or a benchmark's own, in a network namespace of its own, so
//! killing it, restarting it or putting it in swarm mode never touches the machine's shared
//! engine, which other tests use. Used by `node/tests/engine.rs` and
//! `node/benches/create_to_running.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::engine::{parse_containers, ps_args, run_docker, Container, IMAGE};
use crate::launch::process_alive;
use crate::poll::poll_until;
use crate::Error;

/// How long the engine may take to answer after its start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A private `dockerd` under `/tmp/wpe-*` (own socket, data root, exec root; no bridge, no
/// iptables). Everything it made (a swarm, containers, processes, mounts, directories) goes
/// in `Drop`, on failure too. [`IMAGE`] is loaded into it from the shared engine.
#[derive(Debug)]
pub struct PrivateEngine {
    dir: PathBuf,
    child: Option<Child>,
    loopback: bool,
    swarm: bool,
    /// A named network namespace (`ip netns`) to run in, as that host's own engine.
    netns: Option<String>,
}

impl PrivateEngine {
    /// A directory for the engine; nothing runs yet (its socket does not exist).
    ///
    /// # Panics
    ///
    /// When `/tmp` has no room for the directory: a test's precondition.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Short: the socket path must fit a sockaddr_un (108 bytes).
        let dir = PathBuf::from(format!("/tmp/wpe-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("engine dir");
        PrivateEngine {
            dir,
            child: None,
            loopback: false,
            swarm: false,
            netns: None,
        }
    }

    /// In the named network namespace `netns` (made by `ip netns add`; its loopback already
    /// up), as the engine of the host that namespace stands for (a testnet node): with its
    /// default bridge and its iptables rules, which live in that namespace only. Without
    /// this, the engine runs in a fresh namespace of its own with neither.
    pub fn in_namespace(mut self, netns: &str) -> Self {
        self.netns = Some(netns.to_string());
        self
    }

    /// With the namespace's loopback up (`ip link set lo up` before dockerd starts): a fresh
    /// network namespace has it down, and `swarm init --advertise-addr 127.0.0.1` needs it.
    pub fn with_loopback(mut self) -> Self {
        self.loopback = true;
        self
    }

    /// The engine's socket, as `docker -H` takes it (`unix:///tmp/wpe-.../docker.sock`).
    pub fn socket(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    /// `docker -H <this engine> args...`: its output, whatever its status.
    ///
    /// # Panics
    ///
    /// When `docker` cannot be run at all (not installed): a test's precondition.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// The Warren containers of this engine matching `filter` (see [`ps_args`]).
    pub fn containers(&self, filter: &str) -> Result<Vec<Container>, Error> {
        Ok(parse_containers(&run_docker(
            Some(&self.socket()),
            &ps_args(filter),
        )?))
    }

    /// Whether the engine answers (`docker info`).
    pub fn answers(&self) -> bool {
        self.docker(&["info", "--format", "{{.ServerVersion}}"])
            .status
            .success()
    }

    /// Starts `dockerd` and waits until it answers; loads the test image into it from the
    /// shared engine the first time. The error carries the end of dockerd's log.
    pub fn start(&mut self) -> Result<(), String> {
        let d = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .map_err(|e| format!("dockerd log: {e}"))?;
        // In a network namespace of its own: a dockerd started with `--bridge none` deletes
        // the host's `docker0` link at start (libnetwork's removeDefaultBridgeInterface),
        // which breaks the shared engine every other test uses. `unshare` (and the shell,
        // when the loopback is brought up first) execs dockerd, so the child is dockerd
        // itself.
        let mut command;
        if let Some(netns) = &self.netns {
            // `nsenter`, not `ip netns exec`: the latter enters a mount namespace of its own
            // and remounts /sys, which hides the cgroup mounts dockerd needs ("Devices
            // cgroup isn't mounted").
            command = Command::new("nsenter");
            command
                .arg(format!("--net=/var/run/netns/{netns}"))
                .args(["--", "dockerd"]);
        } else {
            command = Command::new("unshare");
            command.args(["--net", "--"]);
            if self.loopback {
                command.args(["sh", "-c", "ip link set lo up && exec dockerd \"$@\"", "sh"]);
            } else {
                command.arg("dockerd");
            }
        }
        command
            .arg("--host")
            .arg(self.socket())
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"));
        if self.netns.is_none() {
            command.args(["--bridge", "none", "--iptables=false", "--ip6tables=false"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("spawn dockerd (is docker.io installed? scripts/ensure-docker.sh): {e}")
            })?;
        self.child = Some(child);
        let mut exited = None;
        let answered = poll_until(START_TIMEOUT, Duration::from_millis(100), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                exited = Some(status);
                return Some(false);
            }
            self.answers().then_some(true)
        });
        match (answered, exited) {
            (Some(true), _) => {}
            (_, Some(status)) => {
                return Err(format!(
                    "private dockerd exited ({status}):\n{}",
                    self.log_tail()
                ))
            }
            _ => {
                return Err(format!(
                    "the private dockerd did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                ))
            }
        }
        if !self.docker(&["image", "inspect", IMAGE]).status.success() {
            let mut save = Command::new("docker")
                .args(["save", IMAGE])
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("docker save: {e}"))?;
            let load = Command::new("docker")
                .arg("-H")
                .arg(self.socket())
                .arg("load")
                .stdin(save.stdout.take().expect("docker save's output"))
                .output()
                .map_err(|e| format!("docker load: {e}"));
            let _ = save.wait();
            let load = load?;
            if !load.status.success() {
                return Err(format!(
                    "loading {IMAGE} into the private engine failed: {}",
                    String::from_utf8_lossy(&load.stderr)
                ));
            }
        }
        Ok(())
    }

    /// `docker swarm init` on this engine, advertising its namespace's own 127.0.0.1 (so
    /// [`with_loopback`](Self::with_loopback) is needed). `Drop` leaves the swarm.
    pub fn swarm_init(&mut self) -> Result<(), String> {
        self.swarm = true;
        let out = self.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "swarm init on the private engine failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// SIGKILL to `dockerd`, as a crash: no shutdown of its containers (its containerd
    /// lives on and the next start adopts it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its containerd dies with it, but may linger as a zombie of this process, which
        // `kill -0` still finds: the next dockerd would wait for it forever. Make sure it is
        // dead and drop its pid file, so the next start runs a fresh containerd (which picks
        // up the shims of the containers that survived).
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
                (!process_alive(pid)).then_some(())
            });
            if process_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = std::fs::remove_file(&pidfile);
        }
    }

    /// The last 30 lines of dockerd's log that say something (grpc chatter left out).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        // grpc's connectivity chatter says nothing a reader needs.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("[core]") && !l.contains("plugin"))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Pids of processes whose command line names this engine's directory (its dockerd,
    /// containerd and shims): only what this process started.
    fn own_processes(&self) -> Vec<u32> {
        let needle = self.dir.to_string_lossy().into_owned();
        let mut pids = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

impl Default for PrivateEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- private dockerd log ----\n{}", self.log_tail());
        }
        if self.child.is_some() && self.answers() {
            // The swarm first: its services would start their tasks again as they go.
            if self.swarm {
                let _ = self.docker(&["swarm", "leave", "--force"]);
            }
            let ids = self.docker(&["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args);
            }
        }
        if let Some(child) = self.child.as_ref() {
            // SIGTERM: dockerd stops its containerd on the way out.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            poll_until(
                Duration::from_secs(15),
                Duration::from_millis(100),
                || match self.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(_))) => Some(()),
                    _ => None,
                },
            );
        }
        self.kill();
        // Whatever survived (a containerd orphaned by a SIGKILL, shims): by pid, ours only.
        let survivors = self.own_processes();
        for pid in &survivors {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // Their mounts can be released once they are gone: wait for that, bounded.
        poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
            (!survivors.iter().any(|pid| process_alive(*pid))).then_some(())
        });
        for point in mounts_under(&self.dir) {
            let _ = Command::new("umount").args(["-l", &point]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
