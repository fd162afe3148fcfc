//! Peers: what the interface is told about other members, and what it reports of them.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use warren_core::overlay::{Prefix, WireguardPublic};

use crate::OverlayError;

/// One other member as the interface is to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its WireGuard public key (32 bytes of X25519).
    pub public_key: WireguardPublic,
    /// Where its WireGuard UDP socket is reached (IPv4 or IPv6 address and port); `None` when
    /// unknown: the interface then only answers it, from wherever its packets come.
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs: the overlay prefixes routed to it and accepted from it (for a
    /// member, its /96 block, `warren_core::overlay::NodeAddresses::block`).
    pub allowed: Vec<Prefix>,
    /// Persistent keepalive interval in seconds; 0 turns it off. A peer behind a NAT needs
    /// one (25 s is the usual figure) to stay reachable while idle.
    pub keepalive_s: u16,
}

/// One allowed IP prefix as the device reports it (IPv4 or IPv6, length in bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowedIp {
    /// The network address, host bits zero.
    pub addr: IpAddr,
    /// Prefix length in bits: 0..=32 for IPv4, 0..=128 for IPv6.
    pub len: u8,
}

impl AllowedIp {
    /// The same prefix as a [`Prefix`], when it is an IPv6 one.
    pub fn to_prefix(&self) -> Option<Prefix> {
        match self.addr {
            IpAddr::V6(addr) => Some(Prefix {
                addr,
                len: self.len,
            }),
            IpAddr::V4(_) => None,
        }
    }

    /// Parses `ADDR/LEN` (IPv4 or IPv6); host bits are cleared.
    ///
    /// Errors: [`OverlayError::Config`] when it is not an address, a slash and a length no
    /// longer than the address.
    pub fn parse(text: &str) -> Result<Self, OverlayError> {
        let bad = || OverlayError::Config(format!("not an IP prefix (ADDR/LEN): {text:?}"));
        let (addr, len) = text.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad());
        }
        Ok(AllowedIp {
            addr: network(addr, len),
            len,
        })
    }
}

impl From<Prefix> for AllowedIp {
    fn from(p: Prefix) -> Self {
        AllowedIp {
            addr: network(IpAddr::V6(p.addr), p.len),
            len: p.len,
        }
    }
}

impl std::fmt::Display for AllowedIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `addr` with the bits past `len` cleared.
fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Parses an IPv6 prefix `ADDR/LEN` (e.g. `fd12:3456:789a::/48`) as `Prefix` displays it.
///
/// Errors: [`OverlayError::Config`] for anything else (an IPv4 prefix, a length over 128,
/// host bits set).
pub fn parse_prefix(text: &str) -> Result<Prefix, OverlayError> {
    let bad = |why: &str| OverlayError::Config(format!("{text:?}: {why}"));
    let (addr, len) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("not ADDR/LEN"))?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| bad("not an IPv6 address"))?;
    let len: u8 = len.parse().map_err(|_| bad("not a prefix length"))?;
    if len > 128 {
        return Err(bad("longer than 128 bits"));
    }
    if network(IpAddr::V6(addr), len) != IpAddr::V6(addr) {
        return Err(bad("host bits are set"));
    }
    Ok(Prefix { addr, len })
}

/// Parses a WireGuard public key given as 64 hex digits (as the UAPI writes it) or as base64
/// (as `wg` and the desired state write it).
///
/// Errors: [`OverlayError::Config`] when it is neither.
pub fn parse_public_key(text: &str) -> Result<WireguardPublic, OverlayError> {
    let text = text.trim();
    if text.len() == 64 {
        if let Ok(bytes) = hex::decode(text) {
            if let Ok(array) = <[u8; 32]>::try_from(bytes) {
                return Ok(WireguardPublic(array));
            }
        }
    }
    WireguardPublic::from_base64(text).map_err(|e| OverlayError::Config(e.to_string()))
}

/// One peer as the device reports it (`get=1` on its UAPI socket; what `wg show` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// Its public key.
    pub public_key: WireguardPublic,
    /// Where its packets go: the configured endpoint, or the address its last authenticated
    /// packet came from (WireGuard follows a roaming peer).
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs.
    pub allowed_ips: Vec<AllowedIp>,
    /// Persistent keepalive interval in seconds, 0 when off.
    pub keepalive_s: u16,
    /// How long ago the current session's handshake completed; `None` before the first.
    /// boringtun reports this age in `last_handshake_time_sec`/`_nsec`, where the kernel
    /// and wireguard-go report the Unix time of the handshake (so `wg show` prints a date
    /// decades ago for a fresh boringtun handshake).
    pub last_handshake: Option<Duration>,
    /// Bytes received from it, WireGuard headers included.
    pub rx_bytes: u64,
    /// Bytes sent to it, WireGuard headers included.
    pub tx_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_as_they_display() {
        let p = parse_prefix("fd12:3456:789a::/48").expect("prefix");
        assert_eq!(p.len, 48);
        assert_eq!(parse_prefix(&p.to_string()).expect("round trip"), p);
        assert!(parse_prefix("fd12::1/48").is_err(), "host bits");
        assert!(parse_prefix("fd12::/129").is_err());
        assert!(parse_prefix("10.0.0.0/8").is_err());
        assert!(parse_prefix("fd12::").is_err());
        assert_eq!(
            parse_prefix("::/0").expect("default"),
            Prefix {
                addr: Ipv6Addr::UNSPECIFIED,
                len: 0
            }
        );
    }

    #[test]
    fn allowed_ips_of_both_families() {
        let v4 = AllowedIp::parse("198.18.0.7/24").expect("v4");
        assert_eq!(v4.to_string(), "198.18.0.0/24");
        assert_eq!(v4.to_prefix(), None);
        assert!(AllowedIp::parse("198.18.0.0/33").is_err());
        let v6 = AllowedIp::parse("fd00:1:2:3:4:5::/96").expect("v6");
        assert_eq!(
            v6.to_prefix(),
            Some(parse_prefix("fd00:1:2:3:4:5::/96").expect("prefix"))
        );
        assert_eq!(
            AllowedIp::from(parse_prefix("fd00::/8").expect("p")).to_string(),
            "fd00::/8"
        );
        assert_eq!(AllowedIp::parse("::/0").expect("all").to_string(), "::/0");
    }

    #[test]
    fn public_keys_in_hex_or_base64() {
        let key = WireguardPublic([7; 32]);
        assert_eq!(parse_public_key(&hex::encode(key.0)).expect("hex"), key);
        assert_eq!(parse_public_key(&key.to_base64()).expect("b64"), key);
        assert!(parse_public_key("zz").is_err());
        assert!(parse_public_key(&"g".repeat(64)).is_err());
    }
}
