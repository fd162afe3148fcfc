//! The overlay on three real `warren-node` processes in three network namespaces (issue 14):
//! each node runs its WireGuard interface (boringtun, `wt<run>w<i>`), and `wg show` at node 0
//! lists exactly the other two members, each with its /96 block as allowed IPs; node 0 pings
//! node 1's overlay address through the tunnel; after `warren-cli node rm` of node 2 its peer
//! is gone from node 0's interface.
//!
//! Needs root (namespaces, TUN devices), `/dev/net/tun`, `wg` (wireguard-tools; scripts/test.sh
//! installs it), `busybox` (ping) and the binaries (`cargo build --workspace --bins`). Not root
//! is a failure, not a skip (as every testnet test). Sends packets only between the namespaces
//! it creates. Tears everything down in `Drop`, pass or fail.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use warren_core::overlay::{addresses, WireguardPublic};
use warren_testkit::poll_until;
use warren_testnet::cluster::{Cluster, UpOptions};
use warren_testnet::Bins;

const NODES: usize = 3;
/// How long the peers may take to appear (or go) in `wg show`, and a ping to get through.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// One member's place on the overlay, as it published it and the rule derives it.
#[derive(Debug, Clone)]
struct Place {
    key: String,
    overlay_ip: String,
    block: String,
}

/// Node `of`'s published overlay record and reported interface state, read at node `at`.
fn inspect(cluster: &Cluster, at: usize, of: usize) -> Result<Value, String> {
    let name = &cluster.nodes()[of].name;
    cluster
        .cli_handle()
        .json(at, &["node", "inspect", name])
        .map_err(|e| e.to_string())
}

#[test]
fn peers_follow_membership_and_traffic_crosses_the_overlay() {
    assert!(
        warren_testnet::is_root(),
        "the overlay test needs root (network namespaces, TUN devices): run it as root"
    );
    if let Err(e) = Command::new("wg")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        panic!("cannot run `wg` ({e}): install wireguard-tools (scripts/test.sh does)");
    }
    let bins = Bins::find().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::Builder::new()
        .prefix("warren-overlay-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let mut cluster = Cluster::up(UpOptions::new(NODES, dir.path().join("net"), bins))
        .unwrap_or_else(|e| panic!("cannot start the cluster: {e}"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut cluster)));
    if result.is_err() {
        eprintln!("{}", cluster.log_tails(40));
    }
    drop(cluster);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run(cluster: &mut Cluster) {
    let status = cluster.status(0).unwrap_or_else(|e| panic!("status: {e}"));
    let cluster_id = status["cluster"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no cluster id: {status}"))
        .to_string();

    // Every member's record, as node 0 holds it, checked against the rule; and its own word
    // that its interface is up.
    let places: Vec<Place> = (0..NODES)
        .map(|i| {
            let iface = cluster.overlay_interface(i);
            let m = cluster
                .wait_for(&format!("node {i}'s overlay up at node 0"), DEADLINE, |c| {
                    let m = inspect(c, 0, i)?;
                    let on = m["overlay_state"]["state"] == "on" && m["overlay"].is_object();
                    on.then_some(m.clone())
                        .ok_or_else(|| format!("{}", m["overlay_state"]))
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m["overlay_state"]["interface"], iface.as_str(), "{m}");
            let key = m["overlay"]["wg_public_key"]
                .as_str()
                .expect("key")
                .to_string();
            let public = WireguardPublic::from_base64(&key).expect("a WireGuard key");
            let derived = addresses(&cluster_id, &public);
            let overlay_ip = derived.overlay_ip.to_string();
            assert_eq!(m["overlay"]["overlay_ip"], overlay_ip.as_str(), "{m}");
            assert_eq!(m["overlay_state"]["address"], overlay_ip.as_str(), "{m}");
            assert_ne!(m["overlay"]["wg_port"], 0, "{m}");
            assert_eq!(m["overlay"]["wg_port"], m["overlay_state"]["port"], "{m}");
            Place {
                key,
                overlay_ip,
                block: derived.block.to_string(),
            }
        })
        .collect();

    // `wg show` at node 0: exactly nodes 1 and 2, each allowed its /96.
    let want: BTreeSet<(String, String)> = places[1..]
        .iter()
        .map(|p| (p.key.clone(), p.block.clone()))
        .collect();
    cluster
        .wait_for("nodes 1 and 2 as node 0's WireGuard peers", DEADLINE, |c| {
            let got = c.wg_peers(0)?;
            (got == want)
                .then_some(())
                .ok_or_else(|| format!("wg show lists {got:?}, want {want:?}"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let m = inspect(cluster, 0, 0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m["overlay_state"]["peers"], 2, "{m}");

    // Traffic through the tunnel: node 0 pings node 1's overlay address.
    let target = places[1].overlay_ip.clone();
    cluster
        .wait_for(
            "a ping from node 0 to node 1's overlay address",
            DEADLINE,
            |c| {
                let out = c
                    .net()
                    .exec(0, "busybox")
                    .args(["ping", "-6", "-c", "1", "-W", "2", &target])
                    .output()
                    .map_err(|e| format!("cannot run busybox ping: {e}"))?;
                out.status.success().then_some(()).ok_or_else(|| {
                    format!(
                        "ping {target}: {}{}",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                })
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));

    // `node rm` node 2: its peer leaves node 0's interface (node 2 itself may stop: polled
    // without the cluster's liveness check).
    let removed = cluster.nodes()[2].name.clone();
    cluster
        .cli(0, &["node", "rm", &removed])
        .unwrap_or_else(|e| panic!("node rm {removed}: {e}"));
    let want: BTreeSet<(String, String)> =
        [(places[1].key.clone(), places[1].block.clone())].into();
    let mut last = String::new();
    let gone = poll_until(DEADLINE, POLL, || match cluster.wg_peers(0) {
        Ok(got) if got == want => Some(()),
        Ok(got) => {
            last = format!("wg show lists {got:?}");
            None
        }
        Err(e) => {
            last = e;
            None
        }
    });
    assert!(
        gone.is_some(),
        "node 2's peer still at node 0 after node rm: {last}"
    );
    let m = inspect(cluster, 0, 0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m["overlay_state"]["state"], "on", "{m}");
}
