//! The sans-IO core stays pure, and the compiler's dependency graph is the proof: neither
//! `warren-core` nor the simulator that drives it may link an async runtime, a network stack,
//! TLS or a container engine client. Each test reads `cargo tree` for one package (normal
//! dependencies only, this host's platform) and names every forbidden crate it finds.

use std::path::PathBuf;
use std::process::Command;

/// Crates that mean IO: tokio (and what it sits on), the HTTP server and client, TLS, the
/// Docker client, the mesh, and Warren's own crates that wrap them.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-rustls",
    "mio",
    "axum",
    "hyper",
    "hyper-util",
    "rustls",
    "bollard",
    "warren-node",
    "warren-mesh",
    "warren-runtime",
];

/// Families of crates, forbidden by name prefix: `libp2p-swarm`, `libp2p-quic`, `quinn-proto`...
const FORBIDDEN_FAMILIES: &[&str] = &["libp2p", "quinn"];

/// The names of every crate in `package`'s normal dependency tree, itself included, sorted
/// and without repeats. Panics with cargo's stderr when `cargo tree` fails.
fn dependencies(package: &str) -> Vec<String> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .args(["tree", "--offline", "--prefix", "none"])
        .args(["--edges", "normal", "--package", package])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The forbidden crates among `names`.
fn forbidden(names: &[String]) -> Vec<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|name| {
            FORBIDDEN.contains(name)
                || FORBIDDEN_FAMILIES
                    .iter()
                    .any(|family| *name == *family || name.starts_with(&format!("{family}-")))
        })
        .collect()
}

/// Asserts that `package`'s tree was read (it holds `warren-crdt`, which both packages use)
/// and holds nothing forbidden.
fn assert_pure(package: &str) {
    let names = dependencies(package);
    assert!(
        names.iter().any(|n| n == "warren-crdt"),
        "cargo tree -p {package} did not list warren-crdt; read: {names:?}"
    );
    let found = forbidden(&names);
    assert!(
        found.is_empty(),
        "{package} links crates that do IO: {found:?} (see `cargo tree -p {package} -e normal -i {}`)",
        found[0]
    );
}

#[test]
fn warren_core_links_no_io() {
    assert_pure("warren-core");
}

#[test]
fn the_simulator_links_no_io() {
    assert_pure("warren-simulations");
}

/// The check can fail: the daemon's crate links all of it, and the check says so.
#[test]
fn the_daemon_is_caught_linking_io() {
    let names = dependencies("warren-node");
    let found = forbidden(&names);
    for expected in ["tokio", "axum", "bollard", "libp2p", "warren-runtime"] {
        assert!(
            found.contains(&expected),
            "{expected} not flagged in warren-node's tree; flagged: {found:?}"
        );
    }
}
