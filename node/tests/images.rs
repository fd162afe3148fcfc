//! End-to-end: images. A task whose image is missing on its node is pulled in the
//! background; when the pull fails (no registry is reachable here) `service ps` shows the
//! engine's reason and the node tries again with backoff; `warren-cli image load FILE` loads
//! a `docker save` tarball into the node's engine and the waiting task starts.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(60);

/// Removes the image tag this test made (never the base image), after the node's
/// containers are gone (declare it before the node).
struct TagGuard(String);

impl Drop for TagGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn task(node: &Node, service: &str) -> Option<Value> {
    let ps = node.cli_json(&["service", "ps", service])?;
    ps.as_array()?.first().cloned()
}

#[test]
fn a_missing_image_is_reported_and_retried_until_image_load_brings_it() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let unique = format!("warren/airgap-{}:1", std::process::id());
    let _tag = TagGuard(unique.clone());
    let node = Node::start("i1", &dir.path().join("i1"), &["--init", "images"]);

    let mut args = vec!["service", "create", "airgap", "--image", &unique, "--"];
    args.extend(WEB_COMMAND);
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pull fails (no registry): the engine's reason is the task's error.
    let failed = wait_for("the pull error in service ps", T, || {
        task(&node, "airgap").filter(|t| {
            t["state"] == "pending"
                && t["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("could not be pulled"))
        })
    });
    assert!(
        failed["error"].as_str().unwrap_or("").contains(&unique),
        "{failed}"
    );
    assert!(
        failed["status"]
            .as_str()
            .unwrap_or("")
            .contains("image pull failed"),
        "{failed}"
    );
    // And it is tried again, with backoff.
    wait_for("a second pull attempt", T, || {
        task(&node, "airgap").filter(|t| {
            t["status"]
                .as_str()
                .is_some_and(|s| s.contains("2 attempts"))
        })
    });
    let table = node.cli(&["service", "ps", "airgap"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("could not be pulled"), "{table}");
    assert!(node.log_text().contains("image pull failed"));

    // Air-gapped fix: a tarball of the image, loaded through the node's API.
    docker(&["tag", IMAGE, &unique]);
    let tarball = dir.path().join("airgap.tar");
    docker(&["save", &unique, "-o", &tarball.to_string_lossy()]);
    docker(&["rmi", &unique]);
    let out = node.cli(&["image", "load", &tarball.to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("Loaded image: {unique}")),
        "{stdout}"
    );

    // The waiting task starts (before the next pull would be due).
    wait_for("the service running from the loaded image", T, || {
        let running = containers(&[node.peer_id.as_str()])
            .into_iter()
            .any(|c| c.service == "airgap" && c.running());
        running.then_some(())
    });
    let t = wait_for("service ps to say running", T, || {
        task(&node, "airgap").filter(|t| t["state"] == "running")
    });
    assert_eq!(t["error"], "", "{t}");

    // Not a tarball: the engine refuses it, one line, non-zero exit.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not an image").expect("write");
    let out = node.cli(&["image", "load", &junk.to_string_lossy()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refused the tarball"),
        "{err}"
    );
}
