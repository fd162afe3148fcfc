//! The data the server answers from ([`Zone`]) and the rule that maps a query name onto it
//! ([`Zone::resolve`]).

use std::collections::HashMap;
use std::net::Ipv6Addr;

/// The cluster's DNS domain: `<service>.warren.`, `<slot>.<service>.warren.`,
/// `<node>.node.warren.`.
pub const DOMAIN: &str = "warren";

/// The label under [`DOMAIN`] that holds the members: `<node>.node.warren.`.
pub const NODE_LABEL: &str = "node";

/// The longest DNS label, in bytes (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A name the zone refuses to hold: not a DNS label, or a reserved one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// Not 1 to 63 bytes of `a-z`, `0-9` and `-`, with no `-` at either end (RFC 1123 §2.1);
    /// upper-case letters are accepted and lower-cased.
    #[error("{0:?} is not a DNS label (1-63 of a-z, 0-9, '-', no '-' at either end)")]
    NotALabel(String),
    /// `warren` and `node` name the zone and its members' subdomain: a service of that name
    /// would shadow them.
    #[error("{0:?} is reserved by the cluster's DNS zone")]
    Reserved(String),
}

/// One task that answers for its service: its slot (`<slot>.<service>.warren.`) and its
/// overlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZoneTask {
    /// The task's slot in its service (1-based in Warren, any `u32` here).
    pub slot: u32,
    /// The task's overlay address (inside its node's container subnet).
    pub addr: Ipv6Addr,
}

/// What the DNS server answers: the tasks of each service that should answer (running and
/// healthy ones) and each member's overlay address.
///
/// Plain data, built whole by the daemon from its view and replaced through a
/// `tokio::sync::watch` channel ([`crate::DnsServer::spawn`]); the server never mutates it.
/// Names are stored lower-cased; a name that is not a DNS label is refused by the insert
/// methods and so never served.
///
/// ```
/// use std::net::Ipv6Addr;
/// use warren_dns::Zone;
///
/// let mut zone = Zone::new();
/// zone.insert_service("Web", [(1, "fd00::1:0:2".parse::<Ipv6Addr>().unwrap())]).unwrap();
/// zone.insert_node("alpha", "fd00::1:0:1".parse().unwrap()).unwrap();
/// assert!(zone.insert_service("not a label", []).is_err());
/// assert_eq!(zone.service("web").map(|tasks| tasks.len()), Some(1));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// Service name (lower-cased label) → its answering tasks, sorted by slot then address.
    services: HashMap<String, Vec<ZoneTask>>,
    /// Member name (lower-cased label) → its overlay address.
    nodes: HashMap<String, Ipv6Addr>,
}

/// Where a query name lands in a [`Zone`] (see [`Zone::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<'z> {
    /// A service, by `<service>.warren.` or its bare `<service>.`: every task that answers
    /// (possibly none: the name exists, with no address).
    Service(&'z [ZoneTask]),
    /// `<slot>.<service>.warren.`: the tasks of that slot (usually one).
    Slot(Vec<Ipv6Addr>),
    /// `<node>.node.warren.`: that member's address.
    Node(Ipv6Addr),
    /// A name that exists in the zone but has no address: `warren.` and `node.warren.`.
    Empty,
    /// Under `warren.` but not in the zone.
    NxDomain,
    /// Outside the zone (and not the bare name of a service): for the upstream resolvers.
    Forward,
}

impl Zone {
    /// An empty zone: no service, no member; every name under `warren.` is NXDOMAIN.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the answering tasks of service `name` (replacing any earlier set); an empty
    /// `tasks` keeps the name (NOERROR, no address) rather than removing it.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] when `name` is not a DNS label or is `warren` or `node`: the zone is
    /// unchanged and the service is not served.
    pub fn insert_service(
        &mut self,
        name: &str,
        tasks: impl IntoIterator<Item = (u32, Ipv6Addr)>,
    ) -> Result<(), InvalidName> {
        let name = label(name)?;
        if name == DOMAIN || name == NODE_LABEL {
            return Err(InvalidName::Reserved(name));
        }
        let mut tasks: Vec<ZoneTask> = tasks
            .into_iter()
            .map(|(slot, addr)| ZoneTask { slot, addr })
            .collect();
        tasks.sort_unstable_by_key(|task| (task.slot, task.addr));
        tasks.dedup();
        self.services.insert(name, tasks);
        Ok(())
    }

    /// Sets the overlay address of member `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] when `name` is not a DNS label: the zone is unchanged.
    pub fn insert_node(&mut self, name: &str, addr: Ipv6Addr) -> Result<(), InvalidName> {
        let name = label(name)?;
        self.nodes.insert(name, addr);
        Ok(())
    }

    /// The answering tasks of service `name` (case-insensitive), sorted by slot; `None` if
    /// the zone does not hold the service.
    pub fn service(&self, name: &str) -> Option<&[ZoneTask]> {
        self.services
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// The overlay address of member `name` (case-insensitive).
    pub fn node(&self, name: &str) -> Option<Ipv6Addr> {
        self.nodes.get(&name.to_ascii_lowercase()).copied()
    }

    /// How many services the zone holds.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// How many members the zone holds.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Maps a query name, given as its labels from the leftmost one (lower-cased, without the
    /// root), onto the zone:
    ///
    /// | name | result |
    /// |---|---|
    /// | `<service>.` (one label, a service of the zone) | [`Resolution::Service`] |
    /// | `<service>.warren.` | [`Resolution::Service`], else NXDOMAIN |
    /// | `<slot>.<service>.warren.` (slot in decimal, no leading zero) | [`Resolution::Slot`], else NXDOMAIN |
    /// | `<node>.node.warren.` | [`Resolution::Node`], else NXDOMAIN |
    /// | `warren.`, `node.warren.` | [`Resolution::Empty`] |
    /// | anything else under `warren.` | [`Resolution::NxDomain`] |
    /// | anything else (including a bare label that is no service) | [`Resolution::Forward`] |
    pub fn resolve(&self, labels: &[&[u8]]) -> Resolution<'_> {
        let (under_domain, top) = match labels.split_last() {
            None => return Resolution::Forward,
            Some((last, rest)) => (eq(last, DOMAIN), rest),
        };
        if !under_domain {
            // A bare service name answers like `<service>.warren.`; every other name outside
            // the zone goes upstream.
            return match labels {
                [single] => match self.service_by_bytes(single) {
                    Some(tasks) => Resolution::Service(tasks),
                    None => Resolution::Forward,
                },
                _ => Resolution::Forward,
            };
        }
        match top {
            [] => Resolution::Empty,
            [node_label] if eq(node_label, NODE_LABEL) => Resolution::Empty,
            [node, node_label] if eq(node_label, NODE_LABEL) => {
                match std::str::from_utf8(node)
                    .ok()
                    .and_then(|n| self.nodes.get(n))
                {
                    Some(addr) => Resolution::Node(*addr),
                    None => Resolution::NxDomain,
                }
            }
            [service] => match self.service_by_bytes(service) {
                Some(tasks) => Resolution::Service(tasks),
                None => Resolution::NxDomain,
            },
            [slot, service] => {
                let (Some(slot), Some(tasks)) = (parse_slot(slot), self.service_by_bytes(service))
                else {
                    return Resolution::NxDomain;
                };
                let addrs: Vec<Ipv6Addr> = tasks
                    .iter()
                    .filter(|task| task.slot == slot)
                    .map(|task| task.addr)
                    .collect();
                if addrs.is_empty() {
                    Resolution::NxDomain
                } else {
                    Resolution::Slot(addrs)
                }
            }
            _ => Resolution::NxDomain,
        }
    }

    fn service_by_bytes(&self, name: &[u8]) -> Option<&[ZoneTask]> {
        let name = std::str::from_utf8(name).ok()?;
        self.services.get(name).map(Vec::as_slice)
    }
}

/// Lower-cases `name` and checks it is a DNS label (RFC 1123 host name label).
fn label(name: &str) -> Result<String, InvalidName> {
    let bytes = name.as_bytes();
    let valid = (1..=MAX_LABEL_LEN).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(InvalidName::NotALabel(name.to_owned()))
    }
}

/// A slot label: decimal digits only, no leading zero (so each slot has one name), fits `u32`.
fn parse_slot(label: &[u8]) -> Option<u32> {
    let canonical = !label.is_empty()
        && label.iter().all(u8::is_ascii_digit)
        && (label.len() == 1 || label.first() != Some(&b'0'));
    if !canonical {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

fn eq(label: &[u8], name: &str) -> bool {
    label.eq_ignore_ascii_case(name.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, last)
    }

    fn zone() -> Zone {
        let mut zone = Zone::new();
        zone.insert_service("web", [(2, addr(2)), (1, addr(1))])
            .unwrap();
        zone.insert_service("idle", []).unwrap();
        zone.insert_node("alpha", addr(100)).unwrap();
        zone
    }

    fn resolve<'z>(zone: &'z Zone, name: &str) -> Resolution<'z> {
        let labels: Vec<&[u8]> = name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes)
            .collect();
        zone.resolve(&labels)
    }

    #[test]
    fn labels_are_validated_and_lower_cased() {
        let mut zone = Zone::new();
        assert!(zone.insert_service("Web-1", []).is_ok());
        assert!(zone.service("web-1").is_some());
        for bad in ["", "-web", "web-", "we b", "wéb", "a.b", &"a".repeat(64)] {
            assert!(
                matches!(zone.insert_service(bad, []), Err(InvalidName::NotALabel(_))),
                "{bad:?} accepted"
            );
            assert!(zone.insert_node(bad, addr(1)).is_err(), "{bad:?} accepted");
        }
        assert!(zone.insert_service(&"a".repeat(63), []).is_ok());
        for reserved in ["warren", "NODE"] {
            assert!(matches!(
                zone.insert_service(reserved, []),
                Err(InvalidName::Reserved(_))
            ));
        }
        assert_eq!(zone.service_count(), 2);
    }

    #[test]
    fn service_names_both_forms() {
        let zone = zone();
        let expected = [
            ZoneTask {
                slot: 1,
                addr: addr(1),
            },
            ZoneTask {
                slot: 2,
                addr: addr(2),
            },
        ];
        assert_eq!(
            resolve(&zone, "web.warren."),
            Resolution::Service(&expected)
        );
        assert_eq!(resolve(&zone, "web."), Resolution::Service(&expected));
        assert_eq!(resolve(&zone, "idle.warren."), Resolution::Service(&[]));
        assert_eq!(resolve(&zone, "idle."), Resolution::Service(&[]));
    }

    #[test]
    fn slots_nodes_and_missing_names() {
        let zone = zone();
        assert_eq!(
            resolve(&zone, "2.web.warren."),
            Resolution::Slot(vec![addr(2)])
        );
        for missing in [
            "3.web.warren.",
            "02.web.warren.",
            "+2.web.warren.",
            "x.web.warren.",
        ] {
            assert_eq!(resolve(&zone, missing), Resolution::NxDomain, "{missing}");
        }
        assert_eq!(
            resolve(&zone, "alpha.node.warren."),
            Resolution::Node(addr(100))
        );
        assert_eq!(resolve(&zone, "beta.node.warren."), Resolution::NxDomain);
        assert_eq!(resolve(&zone, "warren."), Resolution::Empty);
        assert_eq!(resolve(&zone, "node.warren."), Resolution::Empty);
        assert_eq!(resolve(&zone, "db.warren."), Resolution::NxDomain);
        assert_eq!(resolve(&zone, "a.b.c.warren."), Resolution::NxDomain);
    }

    #[test]
    fn outside_names_are_forwarded() {
        let zone = zone();
        for name in [
            "db.",
            "example.com.",
            "web.example.com.",
            "warren.example.",
            ".",
        ] {
            assert_eq!(resolve(&zone, name), Resolution::Forward, "{name}");
        }
    }

    #[test]
    fn slot_parsing() {
        assert_eq!(parse_slot(b"0"), Some(0));
        assert_eq!(parse_slot(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_slot(b"4294967296"), None);
        assert_eq!(parse_slot(b"007"), None);
        assert_eq!(parse_slot(b""), None);
    }
}
