//! Two members' interfaces in two network namespaces joined by a veth pair: TCP between their
//! overlay addresses through WireGuard, the peers as the devices report them (through the
//! UAPI socket, and through `wg show` when wireguard-tools is installed), a member removed
//! and then unreachable, and a clean shutdown on SIGTERM.
//!
//! Needs root and `/dev/net/tun` (it fails, with the reason, without them). Sends packets only
//! between the two namespaces it creates (198.18.254.0/30 on the veth, the cluster's ULA /48
//! on the interfaces); names carry the test's pid, and everything is removed on drop, on
//! failure too.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use warren_core::overlay::{addresses, cluster_prefix, NodeAddresses, WireguardKey};
use warren_overlay::{AllowedIp, Uapi, SOCKET_DIR};
use warren_testkit::{poll_until, wait_for};

const PROBE: &str = env!("CARGO_BIN_EXE_warren-overlay-probe");
const CLUSTER: &str = "test-cluster";
const WG_PORT: u16 = 51820;
const ECHO_PORT: u16 = 7000;
/// How long a probe may take to come up, a handshake and an echo to happen, a removed peer
/// to become unreachable, a probe to stop.
const T: Duration = Duration::from_secs(15);

/// The effective uid, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    warren_testkit::run(Command::new(program).args(args)).map_err(|e| e.to_string())
}

fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// One member: its namespace, veth address, interface, key and overlay addresses.
struct Member {
    ns: String,
    veth: String,
    ip: Ipv4Addr,
    interface: String,
    key: WireguardKey,
    overlay: NodeAddresses,
}

/// The two namespaces and what runs in them; `Drop` removes all of it.
struct Net {
    members: [Member; 2],
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Net {
    fn new() -> Net {
        match effective_uid() {
            Some(0) => {}
            uid => panic!(
                "this test needs root (to create network namespaces and TUN devices); \
                 effective uid {uid:?}"
            ),
        }
        assert!(
            Path::new("/dev/net/tun").exists(),
            "this test needs /dev/net/tun (the TUN driver) to run boringtun"
        );
        let pid = std::process::id();
        let member = |side: char, ip: Ipv4Addr| {
            let key = WireguardKey::generate(&mut rand::rngs::OsRng);
            let overlay = addresses(CLUSTER, &key.public());
            Member {
                ns: format!("wo-{pid}-{side}"),
                veth: format!("wo{pid}v{side}"),
                ip,
                interface: format!("wo{pid}{side}"),
                key,
                overlay,
            }
        };
        let net = Net {
            members: [
                member('a', Ipv4Addr::new(198, 18, 254, 1)),
                member('b', Ipv4Addr::new(198, 18, 254, 2)),
            ],
            children: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        // A namespace of this pid left by an earlier run is stale: ours now.
        net.remove_namespaces();
        let [a, b] = &net.members;
        must("ip", &["netns", "add", &a.ns]);
        must("ip", &["netns", "add", &b.ns]);
        must(
            "ip",
            &[
                "link", "add", &a.veth, "netns", &a.ns, "type", "veth", "peer", "name", &b.veth,
                "netns", &b.ns,
            ],
        );
        for m in [a, b] {
            must(
                "ip",
                &[
                    "-n",
                    &m.ns,
                    "addr",
                    "add",
                    &format!("{}/30", m.ip),
                    "dev",
                    &m.veth,
                ],
            );
            must("ip", &["-n", &m.ns, "link", "set", &m.veth, "up"]);
            must("ip", &["-n", &m.ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// `ip netns exec NS PROGRAM ARGS`, run to its end.
    fn exec(&self, i: usize, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.members[i].ns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Starts `warren-overlay-probe up` for member `i` with the other as its peer; its
    /// stdout and stderr go to files in the test's directory.
    fn start_probe(&mut self, i: usize, extra: &[&str]) {
        let me = &self.members[i];
        let other = &self.members[1 - i];
        let key_file = self.dir.path().join(format!("{}.key", me.interface));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_file)
                .expect("key file");
            f.write_all(me.key.to_uapi_hex().as_bytes())
                .expect("write key");
        }
        let peer = format!(
            "{},{}:{WG_PORT},{}",
            other.key.public().to_base64(),
            other.ip,
            other.overlay.block
        );
        let log = |ext: &str| std::fs::File::create(self.log_path(i, ext)).expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &me.ns,
                PROBE,
                "up",
                "--name",
                &me.interface,
            ])
            .args(["--key-hex-file", &key_file.to_string_lossy()])
            .args(["--port", &WG_PORT.to_string()])
            .args(["--address", &me.overlay.overlay_ip.to_string()])
            .args(["--route", &cluster_prefix(CLUSTER).to_string()])
            .args(["--peer", &peer])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .expect("start the probe");
        // `ip netns exec` execs the program: the child's pid is the probe's.
        self.children.push((me.interface.clone(), child));
    }

    fn log_path(&self, i: usize, ext: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.{ext}", self.members[i].interface))
    }

    fn log(&self, i: usize, ext: &str) -> String {
        std::fs::read_to_string(self.log_path(i, ext)).unwrap_or_default()
    }

    /// Waits until probe `i` printed `ready`; fails with its stderr if it exits first.
    fn wait_ready(&mut self, i: usize) {
        let name = self.members[i].interface.clone();
        wait_for(&format!("probe {name} to be up"), T, || {
            if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| *n == name) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("probe {name} exited ({status}): {}", self.log(i, "err"));
                }
            }
            self.log(i, "out").contains("ready").then_some(())
        });
    }

    /// Whether member `from` gets `text` echoed from member `to`'s overlay address.
    fn echo(&self, from: usize, to: usize, text: &str, timeout: Duration) -> Result<(), String> {
        let target = SocketAddr::new(self.members[to].overlay.overlay_ip.into(), ECHO_PORT);
        let out = self.exec(
            from,
            PROBE,
            &[
                "connect",
                "--to",
                &target.to_string(),
                "--expect",
                text,
                "--timeout-ms",
                &timeout.as_millis().to_string(),
            ],
        );
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == text {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / "))
        }
    }

    /// Sends SIGTERM to probe `i` and waits for it to exit; its exit status.
    fn stop_probe(&mut self, i: usize) -> std::process::ExitStatus {
        let name = self.members[i].interface.clone();
        let index = self
            .children
            .iter()
            .position(|(n, _)| *n == name)
            .expect("a probe of that member");
        let (_, mut child) = self.children.remove(index);
        assert!(
            warren_testkit::signal(child.id(), "TERM"),
            "cannot signal probe {name}"
        );
        let status = poll_until(T, Duration::from_millis(50), || {
            child.try_wait().ok().flatten()
        });
        match status {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("probe {name} still ran {T:?} after SIGTERM");
            }
        }
    }

    fn remove_namespaces(&self) {
        for m in &self.members {
            let listed = run("ip", &["netns", "list"]).unwrap_or_default();
            if !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(m.ns.as_str()))
            {
                continue;
            }
            // Whatever still runs in it (a probe that did not stop) goes first.
            let pids = run("ip", &["netns", "pids", &m.ns]).unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
            if let Err(e) = run("ip", &["netns", "del", &m.ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (name, mut child) in std::mem::take(&mut self.children) {
            warren_testkit::signal(child.id(), "TERM");
            let exited = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
                child.try_wait().ok().flatten()
            });
            if exited.is_none() {
                eprintln!("cleanup: probe {name} ignored SIGTERM, killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.remove_namespaces();
        for m in &self.members {
            let _ =
                std::fs::remove_file(Path::new(SOCKET_DIR).join(format!("{}.sock", m.interface)));
        }
    }
}

#[test]
fn two_members_talk_over_the_overlay_and_a_removed_member_is_cut_off() {
    let started = Instant::now();
    let mut net = Net::new();
    let (a, b) = (0, 1);
    let echo_port = ECHO_PORT.to_string();
    net.start_probe(b, &["--serve-tcp", &echo_port]);
    net.start_probe(a, &[]);
    net.wait_ready(b);
    net.wait_ready(a);
    let up = started.elapsed();

    // A's first packet to B's overlay address starts the handshake; the echo comes back
    // through both tunnels.
    let text = format!("hello over warren {}", std::process::id());
    let mut last_error = String::new();
    let echoed = poll_until(T, Duration::from_millis(200), || {
        match net.echo(a, b, &text, Duration::from_secs(2)) {
            Ok(()) => Some(()),
            Err(e) => {
                last_error = e;
                None
            }
        }
    });
    assert!(
        echoed.is_some(),
        "no echo from B's overlay address within {T:?}: {last_error}\nA: {}\nB: {}",
        net.log(a, "err"),
        net.log(b, "err")
    );
    let echo_at = started.elapsed();

    // Each device reports the other as its peer: key, allowed IPs (the /96 block), endpoint,
    // a handshake, traffic both ways. Read through the UAPI sockets the interfaces serve.
    for (me, other) in [(a, b), (b, a)] {
        let name = &net.members[me].interface;
        let state = Uapi::for_interface(name)
            .expect("name")
            .state()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(state.public_key, Some(net.members[me].key.public()));
        assert_eq!(state.listen_port, WG_PORT);
        let [peer] = state.peers.as_slice() else {
            panic!("{name}: want one peer, got {:?}", state.peers);
        };
        let o = &net.members[other];
        assert_eq!(peer.public_key, o.key.public(), "{name}");
        assert_eq!(
            peer.allowed_ips,
            vec![AllowedIp::from(o.overlay.block)],
            "{name}"
        );
        assert_eq!(
            peer.endpoint,
            Some(SocketAddr::new(o.ip.into(), WG_PORT)),
            "{name}"
        );
        assert!(
            peer.last_handshake.is_some(),
            "{name}: no handshake: {peer:?}"
        );
        assert!(peer.rx_bytes > 0 && peer.tx_bytes > 0, "{name}: {peer:?}");
    }

    // The same through wireguard-tools, when installed (scripts/test.sh installs it).
    let wg = Command::new("wg").arg("--version").output();
    if wg.is_ok_and(|o| o.status.success()) {
        let out = net.exec(a, "wg", &["show", &net.members[a].interface]);
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "wg show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o = &net.members[b];
        assert!(
            shown.contains(&format!("peer: {}", o.key.public().to_base64())),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("allowed ips: {}", o.overlay.block)),
            "{shown}"
        );
    } else {
        eprintln!("wg (wireguard-tools) is not installed: `wg show` not checked");
    }

    // B leaves A's peer set: the set-peers command (another process, through A's socket)
    // with no peers.
    let out = net.exec(
        a,
        PROBE,
        &["set-peers", "--name", &net.members[a].interface],
    );
    assert!(
        out.status.success(),
        "set-peers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers = Uapi::for_interface(&net.members[a].interface)
        .expect("name")
        .peers()
        .expect("A's peers");
    assert!(peers.is_empty(), "A still has peers: {peers:?}");
    let removed_at = Instant::now();
    let cut = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        net.echo(a, b, &text, Duration::from_millis(500))
            .is_err()
            .then_some(())
    });
    assert!(
        cut.is_some(),
        "B's overlay address still answers A 5 s after A removed B"
    );
    let cut_after = removed_at.elapsed();
    // B itself is still up and still lists A: only A's side changed.
    let b_peers = Uapi::for_interface(&net.members[b].interface)
        .expect("name")
        .peers()
        .expect("B's peers");
    assert_eq!(b_peers.len(), 1, "{b_peers:?}");

    // SIGTERM takes an interface down cleanly: the probe exits 0, its link and its socket
    // are gone.
    for i in [a, b] {
        let name = net.members[i].interface.clone();
        let status = net.stop_probe(i);
        assert!(
            status.success(),
            "probe {name} exited {status}: {}",
            net.log(i, "err")
        );
        let link = net.exec(i, "ip", &["link", "show", "dev", &name]);
        assert!(!link.status.success(), "link {name} is still there");
        let socket = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
        assert!(!socket.exists(), "{} is still there", socket.display());
    }
    eprintln!(
        "interfaces up after {up:?}, first echo after {echo_at:?}, unreachable {cut_after:?} \
         after the removal, whole test {:?}",
        started.elapsed()
    );
}
