//! Secrets: sealed to members, re-keyed when one is removed, never in clear on disk or in logs.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;
use warren_crdt::{NodeId, Store};
use warren_node::secrets::{self, SecretError, SecretKeys};

const T: Duration = Duration::from_secs(30);
const PLAINTEXT: &str = "s3cr3t-plaintext-XYZ-4242";

fn inspect(node: &Node, name: &str) -> Option<serde_json::Value> {
    node.cli_json(&["secret", "inspect", name])
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn key_of(data_dir: &Path) -> SecretKeys {
    let bytes = std::fs::read(data_dir.join("x25519.key")).expect("key file");
    SecretKeys::from_bytes(&bytes).expect("key")
}

#[test]
fn secrets_are_sealed_to_members_and_rekeyed_without_a_removed_one() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "vault"]);
    let token = n1.join_token();
    let mut n2 = Node::start("n2", &dir.path().join("n2"), &["--join", &token]);
    let token = n1.join_token();
    let mut n3 = Node::start("n3", &dir.path().join("n3"), &["--join", &token]);
    wait_for("3 members", T, || {
        let nodes = n1.cli_json(&["node", "ls"])?;
        (nodes.as_array()?.len() == 3).then_some(())
    });

    let out = n1.cli(&[
        "secret",
        "create",
        "db-password",
        "--from-literal",
        PLAINTEXT,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = wait_for("the secret sealed to all three, seen at n2", T, || {
        let m = inspect(&n2, "db-password")?;
        (m["recipients"].as_array()?.len() == 3).then_some(m)
    });
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["bytes"], PLAINTEXT.len());
    assert!(!meta.to_string().contains(PLAINTEXT));
    let out = n2.cli(&["secret", "create", "db-password", "--from-literal", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // A service on all three nodes mounts it: every container, wherever it runs, reads the
    // value at /run/secrets/db (mode 0400); docker inspect and the environment never hold it.
    let mut create = vec![
        "service",
        "create",
        "vault-web",
        "--image",
        IMAGE,
        "--replicas",
        "3",
        "--secret",
        "db-password:db",
        "--",
    ];
    create.extend(WEB_COMMAND);
    let out = n2.cli(&create);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = [
        n1.peer_id.as_str(),
        n2.peer_id.as_str(),
        n3.peer_id.as_str(),
    ];
    let running = wait_for("3 containers with the secret", T, || {
        let r: Vec<Container> = containers(&ids)
            .into_iter()
            .filter(|c| c.running())
            .collect();
        let on: std::collections::BTreeSet<&str> = r.iter().map(|c| c.node.as_str()).collect();
        (r.len() == 3 && on.len() == 3).then_some(r)
    });
    for c in &running {
        let docker = |args: &[&str]| {
            let out = std::process::Command::new("docker")
                .args(args)
                .output()
                .expect("docker");
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(
            docker(&["exec", &c.id, "cat", "/run/secrets/db"]),
            PLAINTEXT
        );
        let mode = docker(&["exec", &c.id, "ls", "-l", "/run/secrets/db"]);
        assert!(mode.starts_with("-r--------"), "{mode}");
        let inspect = docker(&["inspect", &c.id]);
        assert!(!inspect.contains(PLAINTEXT), "plaintext in docker inspect");
        assert!(inspect.contains("/run/secrets"), "the mount is there");
        assert!(!docker(&["exec", &c.id, "env"]).contains(PLAINTEXT));
    }
    assert!(n1.cli(&["service", "rm", "vault-web"]).status.success());

    // Removing n3 re-keys the secret for n1 and n2 only.
    assert!(n1.cli(&["node", "rm", "n3"]).status.success());
    let meta = wait_for("the secret re-keyed without n3, seen at n2", T, || {
        let m = inspect(&n2, "db-password")?;
        let r: Vec<String> = m["recipients"]
            .as_array()?
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        (r == ["n1", "n2"] || r == ["n2", "n1"]).then_some(m)
    });
    assert_eq!(meta["version"], 2);
    // A rotation at any member bumps the version again.
    assert!(n2
        .cli(&["secret", "rotate", "db-password"])
        .status
        .success());
    wait_for("version 3 at n1", T, || {
        (inspect(&n1, "db-password")?["version"] == 3).then_some(())
    });

    // Read the document as it is on the disk of n2, which acknowledged the rotation (a node
    // flushes its own writes before it answers; changes it merely receives reach its disk
    // within sled's flush interval): n1 can open the secret, the removed n3 cannot.
    n2.kill();
    n3.kill();
    let store = Store::open(&dir.path().join("n2")).expect("n2's store");
    let n2_id = NodeId(n2.peer_id.clone());
    let state = store.load(&n2_id).expect("load").state.expect("state");
    let record = state.secrets().remove("db-password").expect("record");
    assert_eq!(record.version, 3);
    let opened = secrets::open(
        &record,
        &NodeId(n1.peer_id.clone()),
        &key_of(&dir.path().join("n1")),
    )
    .expect("n1 opens it");
    assert_eq!(&*opened, PLAINTEXT.as_bytes());
    assert_eq!(
        secrets::open(
            &record,
            &NodeId(n3.peer_id.clone()),
            &key_of(&dir.path().join("n3"))
        ),
        Err(SecretError::NotARecipient("db-password".into()))
    );
    drop(store);

    // No plaintext in any data dir or log.
    for file in files(dir.path()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes
                .windows(PLAINTEXT.len())
                .any(|w| w == PLAINTEXT.as_bytes()),
            "plaintext found in {}",
            file.display()
        );
    }
    assert!(n1.cli(&["secret", "rm", "db-password"]).status.success());
    let out = n1.cli(&["secret", "rm", "db-password"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no secret named db-password"));
}
