//! A peer SIGKILLed and restarted at once, before its peers' connections to the dead process
//! time out, must be heard by every peer again: its heartbeats reach them and theirs reach it.

mod support;

use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);

/// Asserts that for `window` no node sees any member as `down` (2 s without a heartbeat): the
/// restarted peer's heartbeats reach everyone, and everyone's reach it.
fn nobody_down_for(nodes: &[Node], window: Duration) {
    holds_for("nobody down after a restart", window, || {
        for node in nodes {
            let Some(s) = node.status() else { continue };
            let members = s["members"].as_array().cloned().unwrap_or_default();
            if let Some(m) = members.iter().find(|m| m["liveness"] == "down") {
                return Err(format!("{} sees {} down", node.name, m["name"]));
            }
        }
        Ok(())
    });
}

/// gossipsub announces subscriptions only on a peer's first connection; a restarted peer that
/// reconnects while the old connection still looks open never learned who gossips with it and
/// stayed silent to some peers (found by the testnet's chaos scenario). Three quick restarts
/// make a regression fail with near certainty.
#[test]
fn a_peer_restarted_at_once_is_heard_by_every_peer() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster_of_three(dir.path(), "restart");
    for node in &nodes {
        wait_all_alive(node, 3, T);
    }
    for round in 0..3 {
        let victim = round % 3;
        let name = nodes[victim].name.clone();
        nodes[victim].kill();
        // The crash is noticed (1.5 s without a heartbeat), and the node is back well inside
        // the 5 s its peers take to find their connections to the dead process dead.
        for node in nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| n)
        {
            wait_for(&format!("{} to miss {name}", node.name), T, || {
                let s = node.status()?;
                let m = s["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["name"] == name.as_str())?
                    .clone();
                (m["liveness"] != "alive").then_some(())
            });
        }
        nodes[victim].restart(&[]);
        for node in &nodes {
            wait_all_alive(node, 3, T);
        }
        // Twice the down detection: a peer that does not hear the restarted one marks it down.
        nobody_down_for(&nodes, Duration::from_secs(6));
    }
}
