//! The node's Docker network on the overlay: one IPv6-enabled bridge per node, on the
//! node's container subnet ([`warren_core::overlay::NodeAddresses::container_subnet`]).

use std::collections::HashMap;
use std::net::Ipv6Addr;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest, NetworkInspect};
use warren_core::overlay::Prefix;

use crate::error::status_code;
use crate::{DockerRuntime, RuntimeError, LABEL_NODE};

/// Label marking a network as Warren's overlay network (value `overlay`).
pub const LABEL_NETWORK: &str = "warren.network";
/// Driver option naming the Linux bridge of a network.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Driver option listing host interfaces allowed direct access to published ports
/// (engines 28+).
const TRUSTED_INTERFACES_OPTION: &str = "com.docker.network.bridge.trusted_host_interfaces";

/// The overlay network a node wants: its name, its IPv6 subnet and the node it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Docker network name, e.g. from [`overlay_network_name`].
    pub name: String,
    /// The IPv6 subnet its containers take addresses from (the node's /97).
    pub subnet: Prefix,
    /// Full PeerId of the node (value of the network's [`LABEL_NODE`] label).
    pub node: String,
    /// The overlay interface (e.g. `warren0`), named in the network's
    /// `com.docker.network.bridge.trusted_host_interfaces` option: engines 28+ drop packets
    /// for a container's published ports that arrive on any other interface than its bridge
    /// unless it is listed there. Older engines keep the option without using it.
    pub overlay_interface: Option<String>,
}

/// The overlay network as the engine has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The engine's network id (64 hex characters).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its IPv6 subnet.
    pub subnet: Prefix,
    /// The Linux bridge interface the engine made for it (e.g. `warren-AbCdEfGh`, or
    /// `br-<12 hex>` for a network created without a bridge name): what host forwarding
    /// rules name as the containers' side.
    pub bridge: String,
    /// Whether this call created it (`false`: it was there and matched).
    pub created: bool,
}

/// The overlay network's name for `node` (a PeerId string): `warren-overlay-<last 8
/// characters of node>`, the same suffix as its containers' names
/// ([`crate::container_name`]), so nodes sharing one engine never collide. Characters
/// Docker does not allow are replaced by `-`.
pub fn overlay_network_name(node: &str) -> String {
    format!("warren-overlay-{}", node_suffix(node))
}

/// The Linux bridge name of `node`'s overlay network: `warren-<last 8 characters>`, 15 bytes
/// at most (the kernel's limit for interface names).
pub fn overlay_bridge_name(node: &str) -> String {
    format!("warren-{}", node_suffix(node))
}

/// The last 8 characters of `node`, each outside `[A-Za-z0-9]` replaced by `-`.
fn node_suffix(node: &str) -> String {
    let count = node.chars().count();
    node.chars()
        .skip(count.saturating_sub(8))
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The create request for `spec`: a bridge with IPv6 on `spec.subnet` (the engine picks an
/// IPv4 subnet from its default pools: Debian's engine 20.10 needs one), the bridge named by
/// [`overlay_bridge_name`], labelled as Warren's.
fn create_request(spec: &NetworkSpec) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some("bridge".into()),
        enable_ipv6: Some(true),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(spec.subnet.to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        options: Some(
            [(BRIDGE_NAME_OPTION, Some(overlay_bridge_name(&spec.node)))]
                .into_iter()
                .chain([(TRUSTED_INTERFACES_OPTION, spec.overlay_interface.clone())])
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
        ),
        labels: Some(HashMap::from([
            (LABEL_NODE.to_string(), spec.node.clone()),
            (LABEL_NETWORK.to_string(), "overlay".to_string()),
        ])),
        ..Default::default()
    }
}

/// The IPv6 subnets an inspected network has (unparsable ones are skipped).
fn ipv6_subnets(inspect: &NetworkInspect) -> Vec<Prefix> {
    inspect
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| parse_prefix(c.subnet.as_deref()?))
        .collect()
}

/// Parses `addr/len` as an IPv6 prefix; `None` for IPv4 or malformed text.
pub(crate) fn parse_prefix(text: &str) -> Option<Prefix> {
    let (addr, len) = text.split_once('/')?;
    let addr: Ipv6Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 128)?;
    Some(Prefix { addr, len })
}

/// Checks an existing network against `spec`: same IPv6 subnet, IPv6 on, a bridge.
fn verify(spec: &NetworkSpec, inspect: &NetworkInspect) -> Result<NetworkInfo, RuntimeError> {
    let subnets = ipv6_subnets(inspect);
    let conflict = |have: String| RuntimeError::NetworkConflict {
        name: spec.name.clone(),
        want: spec.subnet.to_string(),
        have,
    };
    if inspect.driver.as_deref() != Some("bridge") {
        return Err(conflict(format!(
            "driver {}",
            inspect.driver.as_deref().unwrap_or("unknown")
        )));
    }
    if inspect.enable_ipv6 != Some(true) || !subnets.contains(&spec.subnet) {
        let have = if subnets.is_empty() {
            "no IPv6 subnet".to_string()
        } else {
            subnets
                .iter()
                .map(Prefix::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(conflict(have));
    }
    let id = inspect.id.clone().unwrap_or_default();
    let bridge = inspect
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .cloned()
        .unwrap_or_else(|| format!("br-{}", id.get(..12).unwrap_or(&id)));
    Ok(NetworkInfo {
        id,
        name: spec.name.clone(),
        subnet: spec.subnet,
        bridge,
        created: false,
    })
}

impl DockerRuntime {
    /// Creates the network `spec` describes, or checks that the one of that name has its
    /// subnet. Idempotent: a matching network is used as is (`created: false`).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NetworkConflict`] when a network of that name exists with another
    /// subnet, without IPv6, or with another driver: never reused silently (remove it, or
    /// its containers first, if it is a leftover). [`RuntimeError::Engine`] when the engine
    /// refuses the create (e.g. the subnet overlaps another network's: `op =
    /// "create_network"`), [`RuntimeError::Unavailable`].
    pub async fn ensure_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo, RuntimeError> {
        if let Some(existing) = self.inspect_network(&spec.name).await? {
            return verify(spec, &existing);
        }
        match self.docker().create_network(create_request(spec)).await {
            Ok(_) => {}
            // Created meanwhile by another caller: check that one below.
            Err(e) if status_code(&e) == Some(409) => {}
            Err(e) => return Err(self.err("create_network", e)),
        }
        let inspect = self.inspect_network(&spec.name).await?.ok_or_else(|| {
            RuntimeError::NetworkConflict {
                name: spec.name.clone(),
                want: spec.subnet.to_string(),
                have: "nothing: the network vanished right after its creation".into(),
            }
        })?;
        tracing::info!(network = %spec.name, subnet = %spec.subnet, "created the overlay network");
        verify(spec, &inspect).map(|info| NetworkInfo {
            created: true,
            ..info
        })
    }

    /// Removes network `name` if no container is attached to it. Returns `Ok(true)` when
    /// it was removed, `Ok(false)` when it is still in use (left alone) or did not exist.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] (`op = "remove_network"`) or [`RuntimeError::Unavailable`].
    pub async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        let Some(inspect) = self.inspect_network(name).await? else {
            return Ok(false);
        };
        if inspect.containers.as_ref().is_some_and(|c| !c.is_empty()) {
            return Ok(false);
        }
        match self.docker().remove_network(name).await {
            Ok(()) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            // 403 "has active endpoints": a container was attached meanwhile.
            Err(e) if status_code(&e) == Some(403) => Ok(false),
            Err(e) => Err(self.err("remove_network", e)),
        }
    }

    /// The global IPv6 address of container `id_or_name` on network `network`; `None` when
    /// the container is not attached to it, has no IPv6 address there (not running), or does
    /// not exist.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] (`op = "inspect_container"`) or
    /// [`RuntimeError::Unavailable`].
    pub async fn container_ipv6(
        &self,
        id_or_name: &str,
        network: &str,
    ) -> Result<Option<Ipv6Addr>, RuntimeError> {
        let inspected = match self.docker().inspect_container(id_or_name, None).await {
            Ok(i) => i,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.err("inspect_container", e)),
        };
        Ok(inspected
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|e| e.global_ipv6_address)
            .and_then(|a| a.parse().ok()))
    }

    /// The network `name`, `None` when the engine has none of that name.
    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInspect>, RuntimeError> {
        match self.docker().inspect_network(name, None).await {
            Ok(n) => Ok(Some(n)),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("inspect_network", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NetworkSpec {
        NetworkSpec {
            name: overlay_network_name("12D3KooWAbCdEfGh"),
            subnet: parse_prefix("fd00:1:2:3:4:5:8000:0/97").expect("prefix"),
            node: "12D3KooWAbCdEfGh".into(),
            overlay_interface: Some("warren0".into()),
        }
    }

    #[test]
    fn names_are_per_node_and_fit_the_kernels_limit() {
        assert_eq!(
            overlay_network_name("12D3KooWAbCdEfGh"),
            "warren-overlay-AbCdEfGh"
        );
        assert_eq!(overlay_bridge_name("12D3KooWAbCdEfGh"), "warren-AbCdEfGh");
        assert!(overlay_bridge_name("12D3KooWAbCdEfGh").len() <= 15);
        assert_eq!(overlay_network_name("a/b"), "warren-overlay-a-b");
    }

    #[test]
    fn the_create_request_has_ipv6_the_subnet_the_bridge_name_and_labels() {
        let request = create_request(&spec());
        assert_eq!(request.enable_ipv6, Some(true));
        let config = request.ipam.and_then(|i| i.config).unwrap_or_default();
        assert_eq!(config.len(), 1, "only the IPv6 subnet; IPv4 from the pools");
        assert_eq!(
            config[0].subnet.as_deref(),
            Some("fd00:1:2:3:4:5:8000:0/97")
        );
        let options = request.options.unwrap_or_default();
        assert_eq!(
            options.get(BRIDGE_NAME_OPTION).map(String::as_str),
            Some("warren-AbCdEfGh")
        );
        assert_eq!(
            options.get(TRUSTED_INTERFACES_OPTION).map(String::as_str),
            Some("warren0")
        );
        let labels = request.labels.unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_NETWORK).map(String::as_str),
            Some("overlay")
        );
    }

    #[test]
    fn an_existing_network_with_another_subnet_is_a_conflict() {
        let inspect = |subnet: &str, ipv6: bool| NetworkInspect {
            id: Some("0123456789abcdef0123".into()),
            driver: Some("bridge".into()),
            enable_ipv6: Some(ipv6),
            ipam: Some(Ipam {
                config: Some(vec![
                    IpamConfig {
                        subnet: Some("172.18.0.0/16".into()),
                        ..Default::default()
                    },
                    IpamConfig {
                        subnet: Some(subnet.into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ok = verify(&spec(), &inspect("fd00:1:2:3:4:5:8000:0/97", true)).expect("match");
        assert_eq!(ok.bridge, "br-0123456789ab");
        let err = verify(&spec(), &inspect("fd00:9:2:3:4:5:8000:0/97", true));
        assert!(
            matches!(&err, Err(RuntimeError::NetworkConflict { have, .. }) if have == "fd00:9:2:3:4:5:8000:0/97"),
            "{err:?}"
        );
        let err = verify(&spec(), &inspect("fd00:1:2:3:4:5:8000:0/97", false));
        assert!(matches!(err, Err(RuntimeError::NetworkConflict { .. })));
    }
}
