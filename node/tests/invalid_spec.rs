//! A spec that enters the document without the API's check (written by another member, or
//! straight into the store) is validated again where a node reads it to reconcile: it is never
//! run, its tasks say why in `service ps`, and nothing is written outside the secrets
//! directory (issue 11: an absolute secret target would otherwise replace it).

mod support;

use std::time::Duration;

use support::*;
use warren_crdt::{NodeId, SecretMount, ServiceName, ServiceSpec, Store};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_spec_written_past_the_api_is_never_run_and_says_why() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("solo");
    let mut solo = Node::start("solo", &data, &["--init", "alone"]);
    let id = solo.peer_id.clone();
    solo.kill();

    // Bypass the API: write the service into the node's own store while it is down.
    let pwned = std::env::temp_dir().join(format!("warren-pwned-{}", std::process::id()));
    {
        let mut store = Store::open(&data).expect("store");
        let mut state = store
            .load(&NodeId(id.clone()))
            .expect("load")
            .state
            .expect("a cluster");
        let spec = ServiceSpec {
            image: IMAGE.into(),
            replicas: 2,
            env: [("BAD=KEY".to_string(), "x".to_string())].into(),
            secrets: vec![SecretMount {
                name: "db".into(),
                target: pwned.to_string_lossy().into_owned(),
            }],
            ..Default::default()
        };
        let name = ServiceName::new("evil").expect("name");
        assert!(spec.validate().is_err(), "the spec is invalid");
        state.create_service(&name, &spec).expect("written");
        store.persist(&mut state, true).expect("persist");
    }
    solo.restart(&[]);

    let reason = wait_for("both tasks of evil shown rejected", T, || {
        let ps = solo.cli_json(&["service", "ps", "evil"])?;
        let tasks = ps.as_array()?;
        let rejected: Vec<String> = tasks
            .iter()
            .filter(|t| t["state"] == "rejected")
            .filter_map(|t| t["status"].as_str().map(str::to_string))
            .collect();
        (tasks.len() == 2 && rejected.len() == 2).then(|| rejected[0].clone())
    });
    assert!(reason.starts_with("rejected: "), "{reason}");
    assert!(
        reason.contains("env") || reason.contains("secrets"),
        "the reason names the field: {reason}"
    );
    // A running service still runs beside it; the rejected one never gets a container.
    let mut create = vec!["service", "create", "fine", "--image", IMAGE, "--"];
    create.extend(WEB_COMMAND);
    assert!(solo.cli(&create).status.success());
    wait_for("the valid service running", T, || {
        containers(&[&id])
            .iter()
            .any(|c| c.service == "fine" && c.running())
            .then_some(())
    });
    assert!(
        containers(&[&id]).iter().all(|c| c.service != "evil"),
        "no container for the rejected service"
    );
    assert!(
        !pwned.exists(),
        "nothing written outside the secrets directory"
    );
    let logged = solo
        .log_text()
        .matches("refusing to run a service whose spec is invalid")
        .count();
    assert_eq!(logged, 1, "logged once per service generation");
    remove_containers(&id);
}
