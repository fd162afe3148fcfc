//! One Docker engine per testnet node (issue 14's overlay scenario needs containers on n1
//! and n2 to be on different hosts in every sense): each `dockerd` runs inside its node's
//! network namespace with its own socket, data root and exec root, its own bridge and its
//! own iptables rules. A container published on node 1's address answers node 0 across the
//! testnet's bridge, and node 1's engine does not see node 0's containers. Needs root,
//! `docker.io` and `busybox`; traffic stays between the namespaces the test creates.

use std::time::Duration;

use warren_testkit::{poll_until, PrivateEngine, IMAGE};
use warren_testnet::Testnet;

#[test]
fn each_node_runs_its_own_engine_and_reaches_the_other_s_published_port() {
    let net = match Testnet::new(2) {
        Ok(net) => net,
        Err(e) => panic!("cannot build the testnet (this test needs root): {e}"),
    };
    let mut engines: Vec<PrivateEngine> = (0..2)
        .map(|i| PrivateEngine::new().in_namespace(&net.namespace(i)))
        .collect();
    for engine in &mut engines {
        if let Err(e) = engine.start() {
            panic!("{e}");
        }
    }
    let addr1 = net.addr(1).to_string();
    let run = engines[1].docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{addr1}:8080:80"),
        IMAGE,
        "sh",
        "-c",
        "echo served by node 1 > /index.html && exec httpd -f -p 80 -h /",
    ]);
    assert!(
        run.status.success(),
        "docker run on node 1's engine: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Node 0's own engine knows nothing of node 1's container.
    let ps0 = engines[0].docker(&["ps", "-aq", "--filter", "name=web"]);
    assert!(ps0.status.success());
    assert!(
        String::from_utf8_lossy(&ps0.stdout).trim().is_empty(),
        "node 0's engine lists node 1's container"
    );
    let url = format!("http://{addr1}:8080/");
    let page = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        // Not busybox's own `-T`: Debian 12's busybox-static wget crashes with it.
        let out = net
            .exec(0, "timeout")
            .args(["3", "busybox", "wget", "-q", "-O", "-", &url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(
        page.as_deref().map(str::trim),
        Some("served by node 1"),
        "node 0 fetching {url} from node 1's container"
    );
}
