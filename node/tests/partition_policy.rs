//! `--on-partition wait`: the slots of a member that cannot be reached stay where they are
//! (its containers run on there), `service ps` says so, and a default service beside it is
//! rescheduled as before (issue 12 item 4, DESIGN §5).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn wait_keeps_an_unreachable_members_slots_and_reschedule_moves_them() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster_of_three(dir.path(), "policy");
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (name, policy) in [("waits", "wait"), ("moves", "reschedule")] {
        let mut create = vec![
            "service",
            "create",
            name,
            "--image",
            IMAGE,
            "--replicas",
            "3",
            "--on-partition",
            policy,
            "--",
        ];
        create.extend(WEB_COMMAND);
        let out = nodes[0].cli(&create);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let inspect = wait_for("waits at another peer", T, || {
        nodes[1].cli_json(&["service", "inspect", "waits"])
    });
    assert_eq!(
        inspect["spec"]["partition"]["on_partition"], "wait",
        "{inspect}"
    );
    let running = |service: &str, on: &[&str]| -> usize {
        containers(on)
            .iter()
            .filter(|c| c.service == service && c.running())
            .count()
    };
    wait_for("3 + 3 replicas running", T, || {
        (running("waits", &ids) == 3 && running("moves", &ids) == 3).then_some(())
    });

    // The node that is not the lease holder goes silent (its process is killed; its
    // containers run on, as on a device whose uplink died).
    let holder = nodes[0]
        .status()
        .and_then(|s| s["lease"]["holder"].as_str().map(str::to_string))
        .expect("a lease holder");
    let cut = (0..3).find(|i| ids[*i] != holder).expect("a non-holder");
    let cut_id = ids[cut].to_string();
    let on_cut = containers(&[&cut_id])
        .iter()
        .filter(|c| c.service == "waits" && c.running())
        .count();
    assert_eq!(on_cut, 1, "spread: one replica of waits per node");
    nodes[cut].kill();
    let others: Vec<&str> = ids.iter().copied().filter(|i| *i != cut_id).collect();
    let watcher = (0..3).find(|i| *i != cut).expect("a survivor");

    // `moves` is rescheduled on the survivors; `waits` is not, and says why.
    wait_for("moves back to 3 replicas on the survivors", T, || {
        (running("moves", &others) == 3).then_some(())
    });
    let ps = wait_for("the waiting slot shown unreachable (waiting)", T, || {
        let ps = nodes[watcher].cli_json(&["service", "ps", "waits"])?;
        ps.as_array()?
            .iter()
            .any(|t| t["status"] == "unreachable (waiting)")
            .then_some(ps)
    });
    let waiting: BTreeSet<String> = ps
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["status"] == "unreachable (waiting)")
        .filter_map(|t| t["node"].as_str().map(str::to_string))
        .collect();
    assert_eq!(waiting, BTreeSet::from([cut_id.clone()]));
    // Well past the down timeout, the survivors still run only their own two.
    holds_for(
        "waits kept on the silent node",
        Duration::from_secs(5),
        || match (running("waits", &others), running("waits", &[&cut_id])) {
            (2, 1) => Ok(()),
            (survivors, silent) => Err(format!(
                "{survivors} replicas on the survivors, {silent} on the silent node"
            )),
        },
    );
    for id in &ids {
        remove_containers(id);
    }
}
