//! The host's resolvers, from `/etc/resolv.conf`: where names outside the zone are forwarded.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::DnsError;

/// The DNS port the upstream resolvers of `resolv.conf` listen on.
pub const DNS_PORT: u16 = 53;

/// The host's resolver configuration file.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` entries of a `resolv.conf` text, in file order, as `ip:53` addresses
/// (IPv6 scope ids are dropped).
///
/// Loopback entries such as systemd-resolved's `127.0.0.53` are kept as they are: the DNS
/// server forwards from the node's own network namespace, where they answer, not from a
/// container's. (A daemon that runs in a namespace of its own must pass its upstreams
/// explicitly.)
///
/// # Errors
///
/// [`DnsError::ResolvConf`] when the text does not parse (the `resolv-conf` crate's
/// reading, the one hickory uses).
pub fn upstreams_from_resolv_conf(text: &[u8]) -> Result<Vec<SocketAddr>, DnsError> {
    let config = resolv_conf::Config::parse(text).map_err(|e| DnsError::ResolvConf {
        path: None,
        reason: e.to_string(),
    })?;
    Ok(config
        .nameservers
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::from(ip), DNS_PORT))
        .collect())
}

/// [`upstreams_from_resolv_conf`] on the file at `path` (usually [`RESOLV_CONF`]).
///
/// # Errors
///
/// [`DnsError::ResolvConf`] when the file cannot be read or does not parse.
pub fn read_upstreams(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read(path).map_err(|e| DnsError::ResolvConf {
        path: Some(path.to_owned()),
        reason: e.to_string(),
    })?;
    upstreams_from_resolv_conf(&text).map_err(|e| match e {
        DnsError::ResolvConf { reason, .. } => DnsError::ResolvConf {
            path: Some(path.to_owned()),
            reason,
        },
        other => other,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_with_port_53() {
        let text = b"# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver 2001:db8::1\noptions edns0 trust-ad\nnameserver 192.0.2.1\n";
        let upstreams = upstreams_from_resolv_conf(text).unwrap();
        let expected: Vec<SocketAddr> = ["127.0.0.53:53", "[2001:db8::1]:53", "192.0.2.1:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(upstreams, expected);
    }

    #[test]
    fn scoped_ipv6_and_no_nameserver() {
        let upstreams = upstreams_from_resolv_conf(b"nameserver fe80::1%eth0\n").unwrap();
        assert_eq!(upstreams, vec!["[fe80::1]:53".parse().unwrap()]);
        assert!(upstreams_from_resolv_conf(b"search x\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_text_is_an_error() {
        assert!(matches!(
            upstreams_from_resolv_conf(b"nameserver not-an-ip\n"),
            Err(DnsError::ResolvConf { .. })
        ));
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = read_upstreams(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/resolv.conf"),
            "{err}"
        );
    }
}
