//! Host forwarding between a node's overlay network and its overlay interface (`warren0`):
//! IPv6 forwarding on, `ip6tables` rules that let traffic between the bridge and the
//! interface through and keep its source addresses (no masquerade inside the cluster).
//!
//! Everything goes through the `sysctl` and `ip6tables` commands (`-w`: wait for the
//! xtables lock other tools hold), never netlink by hand. Each rule carries the comment
//! `warren:<node>`, so [`remove`] finds exactly this node's rules, whatever interfaces they
//! name, and [`install`] first removes them: installing again (a restart) leaves one copy,
//! at the top of its chain.
//!
//! Docker engines differ here, so the chains are detected, not assumed:
//! - Debian 12's engine (20.10) leaves `ip6tables` alone unless configured: `FORWARD` accepts
//!   by default and nothing masquerades IPv6. The filter rules go to `FORWARD`.
//! - Engines 25+ manage `ip6tables`: `FORWARD` policy `DROP`, `DOCKER-ISOLATION-*` chains
//!   that drop traffic leaving one bridge for another interface, and a `MASQUERADE` of the
//!   network's subnet in `nat POSTROUTING`. Their `DOCKER-USER` chain is jumped to first
//!   from `FORWARD` and is kept across the engine's own rule rewrites: the filter rules go
//!   there, ahead of isolation. A `RETURN` at the top of `nat POSTROUTING` for traffic
//!   from the cluster's prefix to the cluster's prefix comes before Docker's masquerade.

use std::process::Command;

use warren_core::overlay::Prefix;

/// Why host forwarding could not be set up or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// A command could not be run at all (not installed, not executable).
    #[error("cannot run {command}: {reason} (install iptables / procps)")]
    Spawn {
        /// The command, e.g. `ip6tables`.
        command: String,
        /// The OS error.
        reason: String,
    },
    /// A command ran and failed (e.g. not root: `Permission denied`).
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its standard error, trimmed (at most 256 bytes).
        stderr: String,
    },
    /// An interface name the kernel would not accept (1–15 bytes of `[A-Za-z0-9_.-]`).
    #[error("invalid interface name {0:?}: 1 to 15 characters of A-Z a-z 0-9 _ . -")]
    InvalidInterface(String),
}

/// The rules for one node: which interfaces and which prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRules {
    /// The node's PeerId (or any tag without spaces): rules carry `warren:<node>`.
    pub node: String,
    /// The Linux bridge of the node's overlay network
    /// ([`NetworkInfo::bridge`](crate::NetworkInfo::bridge)).
    pub bridge: String,
    /// The overlay interface, e.g. `warren0`.
    pub interface: String,
    /// The cluster's overlay prefix (its /48): traffic with both ends inside is forwarded
    /// and never masqueraded.
    pub cluster: Prefix,
}

/// The filter chain the forward rules go to: `DOCKER-USER` when the engine made one.
pub const DOCKER_USER: &str = "DOCKER-USER";
/// The filter chain used when there is no `DOCKER-USER`.
pub const FORWARD: &str = "FORWARD";

impl ForwardRules {
    /// The comment every rule of this node carries: `warren:<node>`.
    pub fn comment(&self) -> String {
        format!("warren:{}", self.node)
    }

    /// The filter rules' arguments after `-I <chain> 1` (chain-independent): accept
    /// bridge → interface and interface → bridge for cluster → cluster traffic.
    pub fn filter_rules(&self) -> Vec<Vec<String>> {
        let cluster = self.cluster.to_string();
        [
            (&self.bridge, &self.interface),
            (&self.interface, &self.bridge),
        ]
        .into_iter()
        .map(|(from, to)| {
            self.with_comment(vec![
                "-i".into(),
                from.clone(),
                "-o".into(),
                to.clone(),
                "-s".into(),
                cluster.clone(),
                "-d".into(),
                cluster.clone(),
            ])
            .into_iter()
            .chain(["-j".into(), "ACCEPT".into()])
            .collect()
        })
        .collect()
    }

    /// The `nat POSTROUTING` rule's arguments: cluster → cluster returns before any
    /// masquerade.
    pub fn nat_rule(&self) -> Vec<String> {
        let cluster = self.cluster.to_string();
        let mut rule = self.with_comment(vec!["-s".into(), cluster.clone(), "-d".into(), cluster]);
        rule.extend(["-j".into(), "RETURN".into()]);
        rule
    }

    fn with_comment(&self, mut args: Vec<String>) -> Vec<String> {
        args.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            self.comment(),
        ]);
        args
    }

    fn validate(&self) -> Result<(), ForwardError> {
        for name in [&self.bridge, &self.interface] {
            let ok = (1..=15).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(ForwardError::InvalidInterface(name.clone()));
            }
        }
        Ok(())
    }
}

/// Where [`install`] put the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The filter chain: [`DOCKER_USER`] or [`FORWARD`].
    pub chain: &'static str,
    /// Whether the `nat` rule went in (`false` when the kernel has no IPv6 `nat` table).
    pub nat: bool,
}

/// Installs `rules` (after removing this node's earlier ones): the filter rules at the top
/// of `DOCKER-USER` if it exists, otherwise of `FORWARD`; the `RETURN` at the top of `nat
/// POSTROUTING` when the IPv6 `nat` table exists.
///
/// # Errors
///
/// [`ForwardError::InvalidInterface`], or [`ForwardError::Spawn`] / [`ForwardError::Failed`]
/// from `ip6tables` (not root, no `ip6tables`). Rules inserted before a failure stay; call
/// [`remove`].
pub fn install(rules: &ForwardRules) -> Result<Installed, ForwardError> {
    rules.validate()?;
    remove(&rules.node)?;
    let chain = if chain_exists("filter", DOCKER_USER) {
        DOCKER_USER
    } else {
        FORWARD
    };
    for rule in rules.filter_rules().iter().rev() {
        ip6tables(&prepend(&["-t", "filter", "-I", chain, "1"], rule))?;
    }
    let nat = chain_exists("nat", "POSTROUTING");
    if nat {
        ip6tables(&prepend(
            &["-t", "nat", "-I", "POSTROUTING", "1"],
            &rules.nat_rule(),
        ))?;
    }
    Ok(Installed { chain, nat })
}

/// Removes every rule carrying `warren:<node>` from `FORWARD`, `DOCKER-USER` and `nat
/// POSTROUTING`; returns how many. Chains that do not exist are skipped.
///
/// # Errors
///
/// [`ForwardError::Spawn`] / [`ForwardError::Failed`] from `ip6tables`.
pub fn remove(node: &str) -> Result<usize, ForwardError> {
    let tag = format!("warren:{node}");
    let mut removed = 0;
    for (table, chain) in [
        ("filter", DOCKER_USER),
        ("filter", FORWARD),
        ("nat", "POSTROUTING"),
    ] {
        let Ok(listing) = ip6tables(&["-t", table, "-S", chain].map(String::from)) else {
            continue;
        };
        // By specification, not by number: other nodes on this host (a demo, tests) insert
        // and delete rules in the same chains, and a number read from the listing can point
        // at another node's rule by the time it is deleted (seen: a node's own rule left
        // behind, so another's was deleted in its place).
        for spec in tagged_rules(&listing, &tag) {
            let mut args: Vec<String> = vec!["-t".into(), table.into(), "-D".into()];
            args.extend(spec);
            match ip6tables(&args) {
                Ok(_) => removed += 1,
                // Deleted meanwhile by another process of this node (a restart's cleanup).
                Err(ForwardError::Failed { stderr, .. })
                    if stderr.contains("does a matching rule exist")
                        || stderr.contains("Bad rule") => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// The rules in an `ip6tables -S CHAIN` listing whose comment is exactly `tag` (the listing
/// prints the comment quoted or not), each as the words after `-A`: the chain and the rule's
/// specification, quotes taken off, ready for `ip6tables -D`. Warren's rules have no
/// spaces inside a word.
pub fn tagged_rules(listing: &str, tag: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .filter(|rule| {
            let words: Vec<&str> = rule.split_whitespace().collect();
            words
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1].trim_matches('"') == tag)
        })
        .map(|rule| {
            rule.split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

/// A sysctl setting to write: key and value.
pub type Setting = (String, String);

/// What [`enable_ipv6_forwarding`] writes, given `net.ipv6.conf.all.forwarding` now and each
/// interface's `accept_ra`: nothing when forwarding is on already; otherwise first
/// `accept_ra = 2` on every interface that has `1` now, then `all.forwarding = 1`.
///
/// Why: with forwarding on, the kernel ignores router advertisements on interfaces with
/// `accept_ra = 1`, so a host that gets its IPv6 address and default route by SLAAC would
/// lose them; `2` keeps accepting them while forwarding. Interfaces with `0` did not accept
/// advertisements and are left so; when forwarding was on already, nothing changes.
pub fn forwarding_plan(forwarding: bool, accept_ra: &[(String, u8)]) -> Vec<Setting> {
    if forwarding {
        return Vec::new();
    }
    let mut plan: Vec<Setting> = accept_ra
        .iter()
        .filter(|(_, v)| *v == 1)
        .map(|(iface, _)| (accept_ra_key(iface), "2".into()))
        .collect();
    plan.push(("net.ipv6.conf.all.forwarding".into(), "1".into()));
    plan
}

/// Turns IPv6 forwarding on (`net.ipv6.conf.all.forwarding = 1`), keeping router
/// advertisements accepted where they were (see [`forwarding_plan`]). Returns what it wrote
/// (empty when forwarding was on already).
///
/// # Errors
///
/// [`ForwardError::Spawn`] / [`ForwardError::Failed`] from `sysctl` (e.g. not root).
pub fn enable_ipv6_forwarding() -> Result<Vec<Setting>, ForwardError> {
    let forwarding = sysctl_read("net.ipv6.conf.all.forwarding")? == "1";
    let mut accept_ra = Vec::new();
    if !forwarding {
        let dir =
            std::fs::read_dir("/proc/sys/net/ipv6/conf").map_err(|e| ForwardError::Spawn {
                command: "read /proc/sys/net/ipv6/conf".into(),
                reason: e.to_string(),
            })?;
        for entry in dir.flatten() {
            let iface = entry.file_name().to_string_lossy().into_owned();
            // `all` and `default` are not interfaces.
            if iface == "all" || iface == "default" {
                continue;
            }
            if let Ok(value) = sysctl_read(&accept_ra_key(&iface)) {
                if let Ok(v) = value.parse() {
                    accept_ra.push((iface, v));
                }
            }
        }
    }
    let plan = forwarding_plan(forwarding, &accept_ra);
    for (key, value) in &plan {
        run(
            "sysctl",
            &["-q".into(), "-w".into(), format!("{key}={value}")],
        )?;
    }
    Ok(plan)
}

/// The sysctl key of `iface`'s `accept_ra` (a `.` in an interface name, as in a VLAN's
/// `eth0.100`, is written `/` there).
fn accept_ra_key(iface: &str) -> String {
    format!("net.ipv6.conf.{}.accept_ra", iface.replace('.', "/"))
}

fn sysctl_read(key: &str) -> Result<String, ForwardError> {
    run("sysctl", &["-n".into(), key.into()]).map(|s| s.trim().to_string())
}

fn chain_exists(table: &str, chain: &str) -> bool {
    ip6tables(&["-t", table, "-S", chain].map(String::from)).is_ok()
}

fn prepend(head: &[&str], rest: &[String]) -> Vec<String> {
    head.iter()
        .map(|s| s.to_string())
        .chain(rest.iter().cloned())
        .collect()
}

fn ip6tables(args: &[String]) -> Result<String, ForwardError> {
    let mut all = vec!["-w".to_string()];
    all.extend_from_slice(args);
    run("ip6tables", &all)
}

/// Runs `command args`, returning its standard output.
fn run(command: &str, args: &[String]) -> Result<String, ForwardError> {
    let out = Command::new(command)
        .args(args)
        .output()
        .map_err(|e| ForwardError::Spawn {
            command: command.into(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ForwardError::Failed {
            command: format!("{command} {}", args.join(" ")),
            stderr: crate::truncate_text(
                String::from_utf8_lossy(&out.stderr).trim(),
                crate::MAX_DETAIL_BYTES,
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ForwardRules {
        ForwardRules {
            node: "12D3KooWx".into(),
            bridge: "warren-AbCdEfGh".into(),
            interface: "warren0".into(),
            cluster: crate::network::parse_prefix("fd12:3456:789a::/48").expect("prefix"),
        }
    }

    #[test]
    fn rule_text_accepts_both_directions_and_returns_before_masquerade() {
        let text: Vec<String> = rules().filter_rules().iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "-i warren-AbCdEfGh -o warren0 -s fd12:3456:789a::/48 -d fd12:3456:789a::/48 \
                 -m comment --comment warren:12D3KooWx -j ACCEPT",
                "-i warren0 -o warren-AbCdEfGh -s fd12:3456:789a::/48 -d fd12:3456:789a::/48 \
                 -m comment --comment warren:12D3KooWx -j ACCEPT",
            ]
        );
        assert_eq!(
            rules().nat_rule().join(" "),
            "-s fd12:3456:789a::/48 -d fd12:3456:789a::/48 -m comment --comment \
             warren:12D3KooWx -j RETURN"
        );
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_command() {
        let mut r = rules();
        r.interface = "way-too-long-interface".into();
        assert!(matches!(
            install(&r),
            Err(ForwardError::InvalidInterface(_))
        ));
        r.interface = "a b".into();
        assert!(matches!(
            install(&r),
            Err(ForwardError::InvalidInterface(_))
        ));
    }

    #[test]
    fn tagged_rules_are_found_by_their_exact_comment() {
        let listing = "-P FORWARD ACCEPT\n\
            -A FORWARD -j DOCKER-USER\n\
            -A FORWARD -i a -o b -m comment --comment warren:n1 -j ACCEPT\n\
            -A FORWARD -i a -o b -m comment --comment \"warren:n12\" -j ACCEPT\n\
            -A FORWARD -i b -o a -m comment --comment \"warren:n1\" -j ACCEPT\n";
        let words = |s: &str| -> Vec<String> { s.split(' ').map(String::from).collect() };
        assert_eq!(
            tagged_rules(listing, "warren:n1"),
            vec![
                words("FORWARD -i a -o b -m comment --comment warren:n1 -j ACCEPT"),
                words("FORWARD -i b -o a -m comment --comment warren:n1 -j ACCEPT"),
            ]
        );
        assert_eq!(
            tagged_rules(listing, "warren:n12"),
            vec![words(
                "FORWARD -i a -o b -m comment --comment warren:n12 -j ACCEPT"
            )]
        );
        assert!(tagged_rules(listing, "warren:n").is_empty());
    }

    #[test]
    fn forwarding_keeps_router_advertisements_where_they_were_accepted() {
        let ifaces = vec![
            ("eth0".to_string(), 1),
            ("eth1".to_string(), 0),
            ("lo".to_string(), 2),
            ("eth0.7".to_string(), 1),
        ];
        assert_eq!(
            forwarding_plan(false, &ifaces),
            vec![
                ("net.ipv6.conf.eth0.accept_ra".to_string(), "2".to_string()),
                (
                    "net.ipv6.conf.eth0/7.accept_ra".to_string(),
                    "2".to_string()
                ),
                ("net.ipv6.conf.all.forwarding".to_string(), "1".to_string()),
            ]
        );
        assert!(forwarding_plan(true, &ifaces).is_empty());
    }
}
