//! The overlay network against the local Docker engine (image `warren/busybox:latest`), and
//! the host forwarding rules against this host's `ip6tables` (root; rules for made-up
//! interface names, removed at the end).
//!
//! Each test uses its own node name and a random subnet in `fd00::/8`; a [`Cleanup`] guard
//! removes its containers and its network even when an assertion fails.

use std::net::Ipv6Addr;
use std::process::Command;

use warren_core::overlay::Prefix;
use warren_runtime::forward::{self, ForwardRules};
use warren_runtime::{
    overlay_network_name, ContainerRuntime, ContainerState, DockerRuntime, NetworkSpec,
    PortMapping, RuntimeError, TaskSpec,
};

mod common;
use common::{http_get, poll, random_u64, wait_for_tasks, IMAGE};

/// A node name no other test uses, and a /97 in `fd00::/8` shaped like a node's container
/// subnet (the upper half of a /96).
fn unique() -> (String, Prefix) {
    let bits = random_u64();
    let node = format!("test-{bits:016x}");
    let addr = (0xfdu128 << 120) | (u128::from(bits) << 56) | 0x8000_0000;
    let subnet = Prefix {
        addr: Ipv6Addr::from(addr),
        len: 97,
    };
    (node, subnet)
}

/// Removes the node's containers, then its network, when dropped (also on panic).
struct Cleanup {
    node: String,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=warren.node={}", self.node);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

async fn connect() -> DockerRuntime {
    DockerRuntime::connect(None)
        .await
        .expect("Docker engine reachable (run scripts/ensure-docker.sh)")
}

fn task(node: &str, network: &str, slot: u32, ports: Vec<PortMapping>) -> TaskSpec {
    TaskSpec {
        node: node.to_string(),
        service: "web".into(),
        slot,
        image: IMAGE.into(),
        command: [
            "sh",
            "-c",
            "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
        ]
        .map(String::from)
        .to_vec(),
        ports,
        network: Some(network.to_string()),
        ..Default::default()
    }
}

/// `docker exec ID ARGS...`: standard output on success, the error text otherwise.
fn exec(id: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .arg("exec")
        .arg(id)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn the_overlay_network_is_created_once_and_a_conflicting_subnet_is_refused() {
    let rt = connect().await;
    let (node, subnet) = unique();
    let name = overlay_network_name(&node);
    let _cleanup = Cleanup {
        node: node.clone(),
        network: name.clone(),
    };
    let spec = NetworkSpec {
        name: name.clone(),
        subnet,
        node: node.clone(),
        overlay_interface: Some("warren0".into()),
    };
    let first = rt.ensure_network(&spec).await.expect("create");
    assert!(first.created);
    assert_eq!(first.subnet, subnet);
    let inspect = Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{.EnableIPv6}} {{range .IPAM.Config}}{{.Subnet}} {{end}}{{index .Labels \"warren.network\"}}",
            &name,
        ])
        .output()
        .expect("docker network inspect");
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.starts_with("true "), "{text}");
    assert!(text.contains(&subnet.to_string()), "{text}");
    assert!(text.trim_end().ends_with("overlay"), "{text}");

    let again = rt.ensure_network(&spec).await.expect("verify");
    assert!(!again.created, "the second call reuses the network");
    assert_eq!(
        (again.id.as_str(), again.bridge.as_str()),
        (first.id.as_str(), first.bridge.as_str())
    );

    let mut other = spec.clone();
    other.subnet.addr = Ipv6Addr::from(u128::from(subnet.addr) ^ (1 << 40));
    let err = rt.ensure_network(&other).await.expect_err("another subnet");
    assert!(
        matches!(&err, RuntimeError::NetworkConflict { have, .. } if have.contains(&subnet.to_string())),
        "{err:?}"
    );
    assert!(err.to_string().contains("docker network rm"), "{err}");

    assert!(rt.remove_network(&name).await.expect("remove"));
    assert!(!rt.remove_network(&name).await.expect("remove again"));
}

#[tokio::test]
async fn tasks_on_the_overlay_network_get_addresses_in_the_subnet_and_reach_each_other() {
    let rt = connect().await;
    let (node, subnet) = unique();
    let name = overlay_network_name(&node);
    let _cleanup = Cleanup {
        node: node.clone(),
        network: name.clone(),
    };
    let spec = NetworkSpec {
        name: name.clone(),
        subnet,
        node: node.clone(),
        overlay_interface: Some("warren0".into()),
    };
    rt.ensure_network(&spec).await.expect("network");
    let dns: Ipv6Addr = Ipv6Addr::from((u128::from(subnet.addr) & !0xffff_ffffu128) | 1);
    let mut first = task(
        &node,
        &name,
        0,
        vec![PortMapping {
            container_port: 80,
            host_port: None,
        }],
    );
    first.dns = vec![dns.into()];
    let a = rt.create_and_start(&first).await.expect("first task");
    let b = rt
        .create_and_start(&task(&node, &name, 1, vec![]))
        .await
        .expect("second task");

    let tasks = wait_for_tasks(&rt, &node, "two running tasks with addresses", |t| {
        t.len() == 2
            && t.iter()
                .all(|c| c.state == ContainerState::Running && c.ipv6.contains_key(&name))
    })
    .await;
    let addr_a = tasks[0].ipv6[&name];
    let addr_b = tasks[1].ipv6[&name];
    assert_ne!(addr_a, addr_b);
    for addr in [addr_a, addr_b] {
        assert!(subnet.contains(addr), "{addr} outside {subnet}");
    }
    assert_eq!(
        rt.container_ipv6(&a, &name).await.expect("inspect"),
        Some(addr_a)
    );
    assert_eq!(
        rt.container_ipv6(&a, "bridge").await.expect("inspect"),
        None
    );

    // The published port answers on 127.0.0.1 as on the default bridge.
    let port = tasks[0].ports.first().expect("published port").host_port;
    assert_eq!(tasks[0].ports[0].host_ip, "127.0.0.1");
    poll(&format!("127.0.0.1:{port} to answer"), || http_get(port)).await;

    // The second reaches the first over IPv6 on the overlay network.
    let url = format!("http://[{addr_a}]/");
    poll(&format!("wget {url} from the second task"), || async {
        exec(&b, &["wget", "-q", "-O", "-", &url]).and_then(|text| {
            if text.contains("hello from warren") {
                Ok(text)
            } else {
                Err(format!("unexpected answer {text:?}"))
            }
        })
    })
    .await;

    // The DNS server reaches the container's configuration.
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{json .HostConfig.Dns}}", &a])
        .output()
        .expect("docker inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("[\"{dns}\"]"));

    // In use: the network stays; once the tasks are gone it is removed.
    assert!(!rt.remove_network(&name).await.expect("remove in use"));
    rt.remove(&a).await.expect("remove a");
    rt.remove(&b).await.expect("remove b");
    assert!(rt.remove_network(&name).await.expect("remove unused"));
}

/// `ip6tables -w [-t TABLE] -S CHAIN`, or empty when the chain does not exist.
fn listing(table: &str, chain: &str) -> String {
    Command::new("ip6tables")
        .args(["-w", "-t", table, "-S", chain])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn forward_rules_are_installed_once_at_the_top_and_removed() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: ip6tables needs root");
        return;
    }
    let (node, _) = unique();
    let suffix = &node[node.len() - 6..];
    let rules = ForwardRules {
        node: node.clone(),
        // Made-up interfaces: the rules match no traffic on this host.
        bridge: format!("wtb{suffix}"),
        interface: format!("wtw{suffix}"),
        cluster: Prefix {
            addr: "fd12:3456:789a::".parse().expect("addr"),
            len: 48,
        },
    };
    let tag = rules.comment();
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = forward::remove(&self.0);
        }
    }
    let _guard = Remove(node.clone());

    let installed = forward::install(&rules).expect("install");
    let chain = installed.chain;
    let expected_chain = if Command::new("ip6tables")
        .args(["-w", "-S", forward::DOCKER_USER])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        forward::DOCKER_USER
    } else {
        forward::FORWARD
    };
    assert_eq!(chain, expected_chain);
    let filter = listing("filter", chain);
    let ours: Vec<&str> = filter.lines().filter(|l| l.contains(&tag)).collect();
    assert_eq!(ours.len(), 2, "{filter}");
    // At the top of the chain, in order: bridge -> interface, then back.
    let rules_only: Vec<&str> = filter.lines().filter(|l| l.starts_with("-A ")).collect();
    assert!(rules_only[0].contains(&format!("-i {} -o {}", rules.bridge, rules.interface)));
    assert!(rules_only[1].contains(&format!("-i {} -o {}", rules.interface, rules.bridge)));
    assert!(rules_only[0].contains("-s fd12:3456:789a::/48 -d fd12:3456:789a::/48"));
    assert!(rules_only[0].ends_with("-j ACCEPT"));
    if installed.nat {
        let nat = listing("nat", "POSTROUTING");
        let first = nat.lines().find(|l| l.starts_with("-A ")).unwrap_or("");
        assert!(
            first.contains(&tag) && first.ends_with("-j RETURN"),
            "{nat}"
        );
    }

    // Installing again (a restart) leaves one copy.
    forward::install(&rules).expect("install again");
    let count = listing("filter", chain).matches(&tag).count();
    assert_eq!(count, 2);

    let removed = forward::remove(&node).expect("remove");
    assert_eq!(removed, 2 + usize::from(installed.nat));
    assert!(!listing("filter", chain).contains(&tag));
    assert!(!listing("nat", "POSTROUTING").contains(&tag));
    assert_eq!(forward::remove(&node).expect("remove again"), 0);
}
