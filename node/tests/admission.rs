//! Admission and errors: strangers are refused and their writes never reach members; every
//! operator mistake gets one actionable line and a non-zero exit.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use warren_crdt::test_utils::{member, service_name, spec};
use warren_crdt::{ClusterInfo, DesiredState, Member};
use warren_mesh::{Keypair, MeshConfig, RequestKind, Response, Topic};
use warren_node::daemon::JoinToken;

const T: Duration = Duration::from_secs(30);

/// Runs `warren-node up` expecting it to fail; returns its stderr.
fn node_fails(dir: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(node_bin())
        .args([
            "up",
            "--name",
            "stranger",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("run warren-node");
    assert!(!out.status.success(), "warren-node {extra:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn member_count(node: &Node) -> usize {
    node.status()
        .and_then(|s| s["members"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_are_refused_and_their_writes_never_reach_members() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "closed"]);
    let status = n1.status().expect("status");
    let cluster_id = status["cluster"]["id"]
        .as_str()
        .expect("cluster id")
        .to_string();

    // No token at all: the node refuses to start and says what to do.
    let err = node_fails(&dir.path().join("none"), &[]);
    assert!(
        err.contains("holds no cluster") && err.contains("--join"),
        "{err}"
    );

    // A forged token (the right cluster and bootstrap, a wrong secret) is refused by the member.
    let mut forged = JoinToken::decode(&n1.join_token()).expect("token");
    forged.secret = "00".repeat(32);
    let err = node_fails(&dir.path().join("forged"), &["--join", &forged.encode()]);
    assert!(
        err.contains("join refused") && err.contains("secret does not match"),
        "{err}"
    );
    // A token used once cannot admit a second node.
    let token = n1.join_token();
    let n2 = Node::start("n2", &dir.path().join("n2"), &["--join", &token]);
    let err = node_fails(&dir.path().join("again"), &["--join", &token]);
    assert!(err.contains("already used"), "{err}");
    wait_for("2 members", T, || (member_count(&n1) == 2).then_some(()));

    // A peer with a valid PeerId that is not a member connects, gossips a change that would
    // create a service, and asks to sync: the gossip is dropped and counted, the sync refused.
    let mut config = MeshConfig::new(Keypair::generate_ed25519(), cluster_id.clone());
    config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")];
    config.bootstrap = vec![n1.quic_addr().parse().expect("addr")];
    let (rogue, _events) = warren_mesh::spawn(config).await.expect("rogue mesh");
    // The stranger counts n1 as a member on its side, so its mesh does send to n1.
    let n1_peer: warren_mesh::PeerId = n1.peer_id.parse().expect("peer id");
    rogue
        .set_members([(n1_peer, vec![n1.quic_addr().parse().expect("addr")])].into())
        .await
        .expect("set members");
    let rogue_id = rogue.local_peer_id().to_string();
    let founder = Member {
        name: "rogue".into(),
        ..member(&rogue_id)
    };
    let info = ClusterInfo {
        id: cluster_id,
        name: "closed".into(),
        created_at: 0,
    };
    let mut evil = DesiredState::new_cluster(&info, &founder).expect("doc");
    let change = evil
        .create_service(&service_name("evil"), &spec(IMAGE, 1))
        .expect("change");
    let deadline = std::time::Instant::now() + T;
    let dropped = loop {
        let _ = rogue.publish(Topic::Changes, change.clone()).await;
        let _ = rogue.publish(Topic::Changes, evil.save()).await;
        let dropped = n1
            .status()
            .and_then(|s| s["dropped_non_member"].as_u64())
            .unwrap_or(0);
        if dropped > 0 {
            break dropped;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n1 never saw the stranger's gossip"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(dropped > 0);
    let mut sync_body = vec![1u8];
    sync_body.extend(
        evil.generate_sync_message(&mut warren_crdt::SyncState::new())
            .expect("msg"),
    );
    match rogue.request(n1_peer, RequestKind::Sync, sync_body).await {
        Ok(Response::Refused(reason)) => assert!(reason.contains("not a member"), "{reason}"),
        other => panic!("a stranger's sync must be refused, got {other:?}"),
    }
    rogue.shutdown().await;

    // Nothing of it reached any member.
    for node in [&n1, &n2] {
        let services = node.cli_json(&["service", "ls"]).expect("service ls");
        assert_eq!(services.as_array().map(Vec::len), Some(0), "{services}");
        assert_eq!(member_count(node), 2);
    }
}

#[test]
fn operator_errors_are_one_line_and_actionable() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");

    // A Docker endpoint no engine can ever answer on. (An engine that is merely not
    // running yet is waited for: tests/engine.rs.)
    let err = node_fails(
        &dir.path().join("nodocker"),
        &["--init", "x", "--docker-host", "ftp://127.0.0.1/docker"],
    );
    assert!(err.contains("unsupported endpoint"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // An API on a non-loopback address would take writes from anyone: refused.
    let out = Command::new(node_bin())
        .args(["up", "--init", "x", "--api", "0.0.0.0:7799", "--data-dir"])
        .arg(dir.path().join("open"))
        .stdin(Stdio::null())
        .output()
        .expect("run warren-node");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("loopback only"),
        "{err}"
    );

    // A peer that is not there.
    let cli = |args: &[&str]| {
        Command::new(cli_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cli")
    };
    let err = one_line_error(&cli(&["--peer", "http://127.0.0.1:9", "cluster", "status"]));
    assert!(err.contains("cannot reach peer"), "{err}");

    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "errs"]);
    let err = one_line_error(&n1.cli(&["service", "scale", "nope", "2"]));
    assert!(err.contains("no service named nope"), "{err}");
    let err = one_line_error(&n1.cli(&["service", "ps", "nope"]));
    assert!(err.contains("no service named nope"), "{err}");
    let err = one_line_error(&n1.cli(&["service", "rm", "nope"]));
    assert!(err.contains("no service named nope"), "{err}");
    let err = one_line_error(&n1.cli(&["service", "create", "bad", "--image", "Not An Image"]));
    assert!(err.contains("invalid image reference"), "{err}");
    let err = one_line_error(&n1.cli(&["service", "create", "Bad_Name", "--image", IMAGE]));
    assert!(err.contains("invalid"), "{err}");
    let err = one_line_error(&n1.cli(&[
        "service",
        "create",
        "web",
        "--image",
        IMAGE,
        "--publish",
        "http",
    ]));
    assert!(err.contains("not a port"), "{err}");

    // A name taken twice.
    assert!(n1
        .cli(&[
            "service",
            "create",
            "twice",
            "--image",
            IMAGE,
            "--replicas",
            "0"
        ])
        .status
        .success());
    // The peer that took the write reads it at once (read-your-writes).
    let listed = n1.cli_json(&["service", "ls"]).expect("service ls");
    assert!(listed.to_string().contains("\"twice\""), "{listed}");
    let err = one_line_error(&n1.cli(&["service", "create", "twice", "--image", IMAGE]));
    assert!(err.contains("already exists"), "{err}");

    // A container that keeps exiting is restarted with a growing delay, and `service ps`
    // says so.
    let out = n1.cli(&[
        "service", "create", "crashy", "--image", IMAGE, "--", "sh", "-c", "exit 3",
    ]);
    assert!(out.status.success());
    let status = wait_for("the crash loop backing off", T, || {
        let ps = n1.cli_json(&["service", "ps", "crashy"])?;
        let t = ps.as_array()?.first()?.clone();
        t["status"].as_str()?.contains("backing off").then_some(t)
    });
    assert_eq!(status["state"], "restarting", "{status}");
    assert!(n1.cli(&["service", "rm", "crashy"]).status.success());

    // An image that is valid but absent (no registry here): the task says why it cannot run
    // while the node keeps trying to pull it.
    assert!(n1
        .cli(&["service", "create", "ghost", "--image", "warren/not-here:1"])
        .status
        .success());
    let status = wait_for("the missing image reported in service ps", T, || {
        let ps = n1.cli_json(&["service", "ps", "ghost"])?;
        let t = ps.as_array()?.first()?.clone();
        (t["state"] == "pending" && t["error"].as_str()?.contains("could not be pulled"))
            .then_some(t)
    });
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|s| s.contains("warren/not-here:1")),
        "{status}"
    );
}

#[test]
fn tokens_expire_and_revoke_and_removed_members_are_cut_off_for_good() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "gate"]);
    let create_token = |extra: &[&str]| {
        let mut args = vec!["join-token", "create"];
        args.extend_from_slice(extra);
        let out = n1.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    };

    // Expired.
    let short = create_token(&["--ttl", "1"]);
    let short_id = JoinToken::decode(&short).expect("token").token_id;
    wait_for("the short token to expire", T, || {
        let tokens = n1.cli_json(&["join-token", "ls"])?;
        tokens
            .as_array()?
            .iter()
            .any(|t| t["id"] == short_id.as_str() && t["expired"] == true)
            .then_some(())
    });
    let err = node_fails(&dir.path().join("late"), &["--join", &short]);
    assert!(err.contains("expired"), "{err}");

    // Revoked.
    let revoked = create_token(&[]);
    let revoked_id = JoinToken::decode(&revoked).expect("token").token_id;
    assert!(n1
        .cli(&["join-token", "revoke", &revoked_id])
        .status
        .success());
    let err = node_fails(&dir.path().join("revoked"), &["--join", &revoked]);
    assert!(err.contains("revoked"), "{err}");
    let listed = n1.cli_json(&["join-token", "ls"]).expect("ls");
    let text = listed.to_string();
    assert!(
        !text.contains("digest") && !text.contains("secret"),
        "{text}"
    );

    // One token for two nodes, with a label for both.
    let shared = create_token(&["--uses", "2", "--label", "zone=edge"]);
    let n2 = Node::start("n2", &dir.path().join("n2"), &["--join", &shared]);
    let mut n3 = Node::start("n3", &dir.path().join("n3"), &["--join", &shared]);
    let nodes = wait_for("3 members with labels", T, || {
        let nodes = n1.cli_json(&["node", "ls"])?;
        let list = nodes.as_array()?.clone();
        (list.len() == 3).then_some(list)
    });
    for n in nodes.iter().filter(|n| n["name"] != "n1") {
        assert_eq!(n["labels"]["zone"], "edge", "{n}");
    }

    let mut create = vec![
        "service",
        "create",
        "gate-web",
        "--image",
        IMAGE,
        "--replicas",
        "3",
        "--",
    ];
    create.extend(WEB_COMMAND);
    assert!(n1.cli(&create).status.success());
    let ids = [
        n1.peer_id.as_str(),
        n2.peer_id.as_str(),
        n3.peer_id.as_str(),
    ];
    wait_for("3 running replicas on 3 nodes", T, || {
        let running: Vec<Container> = containers(&ids)
            .into_iter()
            .filter(|c| c.running())
            .collect();
        let on: std::collections::BTreeSet<&str> =
            running.iter().map(|c| c.node.as_str()).collect();
        (running.len() == 3 && on.len() == 3).then_some(())
    });

    // Remove n3: every member sees it removed, its slot runs on the others, and what it
    // still sends is dropped.
    let dropped_before = n1
        .status()
        .and_then(|s| s["dropped_non_member"].as_u64())
        .unwrap_or(0);
    let out = n2.cli(&["node", "rm", "n3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in [&n1, &n2] {
        wait_for(&format!("n3 removed at {}", node.name), T, || {
            let nodes = node.cli_json(&["node", "ls"])?;
            nodes
                .as_array()?
                .iter()
                .any(|n| n["name"] == "n3" && n["state"] == "removed")
                .then_some(())
        });
    }
    let survivors = [n1.peer_id.as_str(), n2.peer_id.as_str()];
    wait_for("3 replicas on n1 and n2", T, || {
        let slots: std::collections::BTreeSet<u32> = containers(&survivors)
            .into_iter()
            .filter(|c| c.running() && c.service == "gate-web")
            .map(|c| c.slot)
            .collect();
        (slots.len() == 3).then_some(())
    });
    wait_for("n3's messages dropped at n1", T, || {
        let now = n1.status()?["dropped_non_member"].as_u64()?;
        (now > dropped_before).then_some(())
    });
    let err = one_line_error(&n2.cli(&["node", "rm", "n2"]));
    assert!(err.contains("cannot remove itself"), "{err}");

    // Its identity can never come back, not even with a valid token.
    n3.kill();
    let again = dir.path().join("n3-again");
    std::fs::create_dir_all(&again).expect("dir");
    std::fs::copy(
        dir.path().join("n3/identity.key"),
        again.join("identity.key"),
    )
    .expect("key");
    let fresh = create_token(&[]);
    let err = node_fails(&again, &["--join", &fresh]);
    assert!(err.contains("removed"), "{err}");
}

/// `--join-file` keeps the token out of the process list: a node joins with the token read
/// from a file, and a missing or empty file is a one-line error naming it.
#[test]
fn a_node_joins_with_the_token_in_a_file() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = Node::start("n1", &dir.path().join("n1"), &["--init", "filed"]);
    let token = n1.join_token();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).expect("write the token file");
    let path = file.to_str().expect("utf-8 path");
    let n2 = Node::start("n2", &dir.path().join("n2"), &["--join-file", path]);
    wait_for("n2 admitted with the token from its file", T, || {
        (member_count(&n1) == 2 && member_count(&n2) == 2).then_some(())
    });

    let err = node_fails(
        &dir.path().join("missing"),
        &["--join-file", &format!("{path}.missing")],
    );
    assert!(err.contains("cannot read the join token file"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let err = node_fails(
        &dir.path().join("empty-dir"),
        &["--join-file", empty.to_str().expect("utf-8 path")],
    );
    assert!(err.contains("is empty"), "{err}");
}
