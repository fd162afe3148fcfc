//! Global services (issue 16, item 1) on real nodes: `--mode global` runs one task on each of
//! three nodes; a fourth node that joins gets one; `node rm` of a node takes its task away
//! from the service (its slot is cleared, not moved), as does `--constraint-add` excluding a
//! node (and `--constraint-rm` gives it back); `--replicas` with `--mode global`,
//! `service scale` of a global service and a mode change are refused with a clear error.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(40);

/// Running tasks of `service` per node name, and the slots they run.
fn running_on(service: &str, nodes: &[&Node]) -> (BTreeMap<String, usize>, Vec<u32>) {
    let mut per_node = BTreeMap::new();
    let mut slots = Vec::new();
    for n in nodes {
        for c in containers(&[&n.peer_id])
            .into_iter()
            .filter(|c| c.service == service && c.running())
        {
            *per_node.entry(n.name.clone()).or_default() += 1;
            slots.push(c.slot);
        }
    }
    slots.sort_unstable();
    (per_node, slots)
}

fn one_each(names: &[&str]) -> BTreeMap<String, usize> {
    names.iter().map(|n| (n.to_string(), 1)).collect()
}

#[test]
fn a_global_service_runs_once_on_every_member_as_members_join_and_leave() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let [n1, n2, n3] = cluster_of_three(dir.path(), "global");
    wait_all_alive(&n1, 3, T);

    let mut create = vec![
        "service", "create", "agent", "--image", IMAGE, "--mode", "global", "--",
    ];
    create.extend(WEB_COMMAND);
    let out = n1.cli(&create);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("one task on each of n1, n2, n3", T, || {
        let (on, slots) = running_on("agent", &[&n1, &n2, &n3]);
        (on == one_each(&["n1", "n2", "n3"]) && slots == [0, 1, 2]).then_some(())
    });
    let ls = n2.cli_json(&["service", "ls"]).expect("service ls");
    let agent = ls
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "agent"))
        .expect("agent listed");
    assert_eq!(
        (&agent["mode"], &agent["replicas"]),
        (&"global".into(), &3.into())
    );

    // A fourth node joins: it gets a task of its own, the others keep theirs.
    let token = n1.join_token();
    let n4 = Node::start("n4", &dir.path().join("n4"), &["--join", &token]);
    wait_for("one task on each of the four", T, || {
        let (on, slots) = running_on("agent", &[&n1, &n2, &n3, &n4]);
        (on == one_each(&["n1", "n2", "n3", "n4"]) && slots == [0, 1, 2, 3]).then_some(())
    });

    // n3 is removed: its task leaves the service (nothing moves to another node).
    let out = n2.cli(&["node", "rm", "n3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the service's tasks: one on each of n1, n2, n4, none on n3",
        T,
        || {
            let (on, _) = running_on("agent", &[&n1, &n2, &n4]);
            let tasks = n1.cli_json(&["service", "ps", "agent"])?;
            let tasks = tasks.as_array()?;
            (on == one_each(&["n1", "n2", "n4"])
                && tasks.len() == 3
                && tasks.iter().all(|t| t["node_name"] != "n3"))
            .then_some(())
        },
    );

    // A constraint added to the current ones (one write) makes n4 ineligible: its task is
    // cleared; removing the constraint gives it one again.
    let update = |flag: &str| {
        let out = n1.cli(&["service", "update", "agent", flag, "node.name!=n4"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    update("--constraint-add");
    wait_for("tasks on n1 and n2 only", T, || {
        let (on, _) = running_on("agent", &[&n1, &n2, &n4]);
        (on == one_each(&["n1", "n2"])).then_some(())
    });
    update("--constraint-rm");
    wait_for("n4 runs one again", T, || {
        let (on, _) = running_on("agent", &[&n1, &n2, &n4]);
        (on == one_each(&["n1", "n2", "n4"])).then_some(())
    });

    // What does not apply to a global service is refused, with the reason.
    let err = one_line_error(&n1.cli(&["service", "scale", "agent", "5"]));
    assert!(err.contains("global service"), "{err}");
    let err = one_line_error(&n1.cli(&["service", "update", "agent", "--replicas", "2"]));
    assert!(err.contains("--mode global"), "{err}");
    let err = one_line_error(&n1.cli(&["service", "update", "agent", "--mode", "replicated"]));
    assert!(err.contains("mode cannot change"), "{err}");
    let err = one_line_error(&n1.cli(&[
        "service",
        "create",
        "both",
        "--image",
        IMAGE,
        "--mode",
        "global",
        "--replicas",
        "2",
    ]));
    assert!(err.contains("--mode global"), "{err}");
}
