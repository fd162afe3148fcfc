//! Without permission to make a TUN device, bringing the interface up fails with
//! `OverlayError::Unavailable` (the error a daemon answers by running without the overlay),
//! not with a panic or another error. Run as root, the probe is started as `nobody` (with
//! `setpriv`, from util-linux); as any other user, as that user.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use warren_core::overlay::{addresses, cluster_prefix, WireguardKey};

const PROBE: &str = env!("CARGO_BIN_EXE_warren-overlay-probe");

#[test]
fn without_permission_the_overlay_is_unavailable() {
    // A copy of the probe and a key in a directory anyone can read: the checkout may not be.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let probe = dir.path().join("probe");
    std::fs::copy(PROBE, &probe).expect("copy the probe");
    let key = WireguardKey::generate(&mut rand::rngs::OsRng);
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key.to_uapi_hex().as_bytes()).expect("key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let me = addresses("test-cluster", &key.public());

    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&probe);
        c
    } else {
        Command::new(&probe)
    };
    let name = format!("wu{}", std::process::id());
    let out = command
        .args(["up", "--name", &name, "--port", "0"])
        .arg("--key-hex-file")
        .arg(&key_file)
        .args(["--address", &me.overlay_ip.to_string()])
        .args(["--route", &cluster_prefix("test-cluster").to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run the probe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the probe came up without permission"
    );
    assert!(
        stderr.contains("the overlay is unavailable here"),
        "want OverlayError::Unavailable, got: {stderr}"
    );
}
