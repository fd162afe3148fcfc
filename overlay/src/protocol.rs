//! The UAPI line protocol, pure: parsing replies, writing requests, reading a client's `set`
//! against the device's state. No sockets here (see `uapi.rs` and `device.rs`).
//!
//! ```text
//! → set=1 | get=1                      one request
//! → key=value ...                      (set only) device keys, then per peer: public_key=HEX
//! → (blank line)                       and its keys
//! ← key=value ...                      (get only) the device, then each peer
//! ← errno=N                            0 on success
//! ← (blank line)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use warren_core::overlay::WireguardPublic;
use zeroize::Zeroizing;

use crate::peer::{AllowedIp, Peer, PeerState};
use crate::OverlayError;

/// What the device says about itself (`get=1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    /// Its public key; `None` until a private key is set.
    pub public_key: Option<WireguardPublic>,
    /// The UDP port it listens on (IPv4 and IPv6).
    pub listen_port: u16,
    /// Its peers, in the order the device lists them.
    pub peers: Vec<PeerState>,
}

/// errno answers of the socket this crate serves (Linux numbers, as `wg` prints them).
pub(crate) mod errno {
    /// A malformed line (no `=`).
    pub(crate) const EPROTO: i32 = 71;
    /// A key it does not know or a value it does not take.
    pub(crate) const EINVAL: i32 = 22;
    /// A key it knows and leaves to [`crate::Interface::up`] (`private_key`, `listen_port`,
    /// `fwmark`) or does not do (`preshared_key`, IPv4 allowed IPs).
    pub(crate) const EOPNOTSUPP: i32 = 95;
    /// The device did not answer.
    pub(crate) const EIO: i32 = 5;
}

/// A `set` request a client sent to the interface's socket, read as the cross-platform UAPI
/// describes it (each peer section on its own, nothing carried over), and applied to the
/// device's `current` peers: the peer set it asks for. The device is then brought there with
/// [`peers_request`], so boringtun only ever reads requests this crate wrote.
///
/// `lines` are the request's lines after `set=1`, up to the blank line. Takes
/// `replace_peers`, `protocol_version` and, per peer, `public_key`, `remove`, `update_only`,
/// `endpoint`, `persistent_keepalive_interval`, `replace_allowed_ips`, `allowed_ip` (IPv6).
///
/// Errors: the errno to answer: [`errno::EPROTO`] for a line without `=`,
/// [`errno::EINVAL`] for an unknown key or a bad value, [`errno::EOPNOTSUPP`] for
/// `private_key`, `listen_port`, `fwmark`, `preshared_key` and IPv4 allowed IPs.
pub(crate) fn interpret_set(current: &DeviceState, lines: &[&str]) -> Result<Vec<Peer>, i32> {
    let mut peers: Vec<Peer> = current
        .peers
        .iter()
        .map(|p| Peer {
            public_key: p.public_key,
            endpoint: p.endpoint,
            allowed: p
                .allowed_ips
                .iter()
                .filter_map(AllowedIp::to_prefix)
                .collect(),
            keepalive_s: p.keepalive_s,
        })
        .collect();
    let existed: BTreeSet<WireguardPublic> = peers.iter().map(|p| p.public_key).collect();
    // The peer the current section is about, by key; `None` before the first section.
    let mut section: Option<WireguardPublic> = None;
    let flag = |value: &str| match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(errno::EINVAL),
    };
    for line in lines {
        let (key, value) = line.split_once('=').ok_or(errno::EPROTO)?;
        let Some(current_key) = section else {
            match key {
                "replace_peers" => {
                    if flag(value)? {
                        peers.clear();
                    }
                }
                "protocol_version" if value == "1" => {}
                "public_key" => {
                    let k = parse_hex_key(value).ok_or(errno::EINVAL)?;
                    open_section(&mut peers, k);
                    section = Some(k);
                }
                "private_key" | "listen_port" | "fwmark" => return Err(errno::EOPNOTSUPP),
                _ => return Err(errno::EINVAL),
            }
            continue;
        };
        // A section whose peer was removed (or skipped by update_only) ignores the rest of
        // its keys, as the protocol says; a new public_key opens the next one.
        if key == "public_key" {
            let k = parse_hex_key(value).ok_or(errno::EINVAL)?;
            open_section(&mut peers, k);
            section = Some(k);
            continue;
        }
        let peer = peers.iter_mut().find(|p| p.public_key == current_key);
        match key {
            "remove" => {
                if flag(value)? {
                    peers.retain(|p| p.public_key != current_key);
                }
            }
            "update_only" => {
                if flag(value)? && !existed.contains(&current_key) {
                    peers.retain(|p| p.public_key != current_key);
                }
            }
            "protocol_version" if value == "1" => {}
            "preshared_key" => return Err(errno::EOPNOTSUPP),
            "endpoint" => {
                let e = value.parse().map_err(|_| errno::EINVAL)?;
                if let Some(p) = peer {
                    p.endpoint = Some(e);
                }
            }
            "persistent_keepalive_interval" => {
                let s = value.parse().map_err(|_| errno::EINVAL)?;
                if let Some(p) = peer {
                    p.keepalive_s = s;
                }
            }
            "replace_allowed_ips" => {
                if flag(value)? {
                    if let Some(p) = peer {
                        p.allowed.clear();
                    }
                }
            }
            "allowed_ip" => {
                let ip = AllowedIp::parse(value).map_err(|_| errno::EINVAL)?;
                let prefix = ip.to_prefix().ok_or(errno::EOPNOTSUPP)?;
                if let Some(p) = peer {
                    if !p.allowed.contains(&prefix) {
                        p.allowed.push(prefix);
                    }
                }
            }
            _ => return Err(errno::EINVAL),
        }
    }
    Ok(peers)
}

/// Starts the section of peer `key`: the peer as it is, or a new one with nothing set.
fn open_section(peers: &mut Vec<Peer>, key: WireguardPublic) {
    if !peers.iter().any(|p| p.public_key == key) {
        peers.push(Peer {
            public_key: key,
            endpoint: None,
            allowed: Vec::new(),
            keepalive_s: 0,
        });
    }
}

fn parse_hex_key(value: &str) -> Option<WireguardPublic> {
    let bytes = Zeroizing::new(hex::decode(value).ok()?);
    <[u8; 32]>::try_from(&bytes[..]).ok().map(WireguardPublic)
}

/// Whether `reply` ends with `errno=N` and a blank line.
pub(crate) fn reply_complete(reply: &[u8]) -> bool {
    let Some(body) = reply.strip_suffix(b"\n\n") else {
        return false;
    };
    let last = body.rsplit(|&b| b == b'\n').next().unwrap_or(body);
    last.starts_with(b"errno=")
}

/// A reply that is not a success, before the socket path is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyError {
    /// The device's errno, when it answered one.
    pub(crate) errno: Option<i32>,
    /// What went wrong (never a key).
    pub(crate) reason: String,
}

impl ReplyError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        ReplyError {
            errno: None,
            reason: reason.into(),
        }
    }
}

/// The `key=value` lines of a reply before its `errno=` line; an error for a non-zero errno or
/// a reply without one.
fn body_of(reply: &str) -> Result<Vec<(&str, &str)>, ReplyError> {
    let mut lines: Vec<&str> = reply.lines().collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let Some(last) = lines.pop() else {
        return Err(ReplyError::new(
            "empty reply (the device closed the connection)",
        ));
    };
    let errno = last
        .strip_prefix("errno=")
        .and_then(|n| n.parse::<i32>().ok())
        .ok_or_else(|| ReplyError::new("the reply does not end with errno=N"))?;
    if errno != 0 {
        return Err(ReplyError {
            errno: Some(errno),
            reason: format!("the device answered errno={errno} ({})", errno_name(errno)),
        });
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            line.split_once('=')
                .ok_or_else(|| ReplyError::new(format!("reply line {} is not key=value", i + 1)))
        })
        .collect()
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        5 => "EIO: the request was not understood",
        22 => "EINVAL: a value it did not take",
        71 => "EPROTO: a malformed line",
        98 => "EADDRINUSE: the listen port is taken",
        _ => "see errno(3)",
    }
}

/// Checks a `set` reply: `errno=0` and nothing else.
pub(crate) fn check_set(reply: &str) -> Result<(), ReplyError> {
    let body = body_of(reply)?;
    if let Some((key, _)) = body.first() {
        return Err(ReplyError::new(format!(
            "unexpected {key}= in the reply to a set"
        )));
    }
    Ok(())
}

/// Parses a `get` reply. Unknown keys are skipped (the protocol grows); secrets
/// (`private_key`, `preshared_key`) are never kept.
pub(crate) fn parse_state(reply: &str) -> Result<DeviceState, ReplyError> {
    let mut state = DeviceState::default();
    let mut handshake: (u64, u32) = (0, 0);
    let finish = |state: &mut DeviceState, peer: PeerState, handshake: (u64, u32)| {
        let mut peer = peer;
        // 0/0 is the protocol's "never".
        peer.last_handshake =
            (handshake != (0, 0)).then(|| Duration::new(handshake.0, handshake.1));
        state.peers.push(peer);
    };
    let mut peer: Option<PeerState> = None;
    for (key, value) in body_of(reply)? {
        let number = |what: &str| ReplyError::new(format!("{key}: not {what}: {value:?}"));
        match key {
            "own_public_key" => state.public_key = Some(hex_key(key, value)?),
            "listen_port" => state.listen_port = value.parse().map_err(|_| number("a port"))?,
            "public_key" => {
                if let Some(done) = peer.take() {
                    finish(&mut state, done, handshake);
                }
                handshake = (0, 0);
                peer = Some(PeerState {
                    public_key: hex_key(key, value)?,
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    keepalive_s: 0,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                });
            }
            "endpoint"
            | "allowed_ip"
            | "persistent_keepalive_interval"
            | "last_handshake_time_sec"
            | "last_handshake_time_nsec"
            | "rx_bytes"
            | "tx_bytes" => {
                let p = peer
                    .as_mut()
                    .ok_or_else(|| ReplyError::new(format!("{key}= before any public_key=")))?;
                match key {
                    "endpoint" => {
                        p.endpoint = Some(value.parse().map_err(|_| number("an endpoint"))?)
                    }
                    "allowed_ip" => p
                        .allowed_ips
                        .push(AllowedIp::parse(value).map_err(|_| number("an IP prefix"))?),
                    "persistent_keepalive_interval" => {
                        p.keepalive_s = value.parse().map_err(|_| number("seconds (0-65535)"))?
                    }
                    "last_handshake_time_sec" => {
                        handshake.0 = value.parse().map_err(|_| number("seconds"))?
                    }
                    "last_handshake_time_nsec" => {
                        handshake.1 = value
                            .parse()
                            .ok()
                            .filter(|&n: &u32| n < 1_000_000_000)
                            .ok_or_else(|| number("nanoseconds (below 10^9)"))?
                    }
                    "rx_bytes" => p.rx_bytes = value.parse().map_err(|_| number("a count"))?,
                    _ => p.tx_bytes = value.parse().map_err(|_| number("a count"))?,
                }
            }
            // Known and not kept (secrets among them), or unknown.
            _ => {}
        }
    }
    if let Some(done) = peer.take() {
        finish(&mut state, done, handshake);
    }
    Ok(state)
}

/// A 32-byte key in 64 hex digits (the value is not echoed: it may be a secret).
fn hex_key(key: &str, value: &str) -> Result<WireguardPublic, ReplyError> {
    let bytes = Zeroizing::new(hex::decode(value).unwrap_or_default());
    <[u8; 32]>::try_from(&bytes[..])
        .map(WireguardPublic)
        .map_err(|_| ReplyError::new(format!("{key}: not 64 hex digits")))
}

/// The `set=1` request that turns the device's peers `current` into `wanted`; `None` when
/// they already are.
///
/// boringtun 0.7 carries `remove`, `endpoint`, `persistent_keepalive_interval` and
/// `preshared_key` over from one peer section of a request to the next (it only resets the
/// allowed IPs), so: every added peer says `remove=false` and its keepalive, removals come
/// first, and peers without an endpoint come before any peer with one.
pub(crate) fn peers_request(
    current: &DeviceState,
    wanted: &[Peer],
) -> Result<Option<String>, OverlayError> {
    let mut seen = BTreeSet::new();
    for peer in wanted {
        if !seen.insert(peer.public_key) {
            return Err(OverlayError::Config(format!(
                "peer {} is given twice",
                peer.public_key.to_base64()
            )));
        }
        if let Some(p) = peer.allowed.iter().find(|p| p.len > 128) {
            return Err(OverlayError::Config(format!(
                "peer {}: allowed IP {}/{} is longer than 128 bits",
                peer.public_key.to_base64(),
                p.addr,
                p.len
            )));
        }
    }
    let by_key: BTreeMap<WireguardPublic, &PeerState> =
        current.peers.iter().map(|p| (p.public_key, p)).collect();
    let wanted_keys: BTreeSet<WireguardPublic> = wanted.iter().map(|p| p.public_key).collect();

    let mut removals: Vec<WireguardPublic> = current
        .peers
        .iter()
        .map(|p| p.public_key)
        .filter(|k| !wanted_keys.contains(k))
        .collect();
    let mut additions: Vec<&Peer> = Vec::new();
    for peer in wanted {
        match by_key.get(&peer.public_key) {
            Some(now) if unchanged(now, peer) => {}
            Some(_) => {
                removals.push(peer.public_key);
                additions.push(peer);
            }
            None => additions.push(peer),
        }
    }
    if removals.is_empty() && additions.is_empty() {
        return Ok(None);
    }
    if !additions.is_empty() && current.public_key.is_none() {
        return Err(OverlayError::Config(
            "the device has no private key yet: boringtun cannot add peers".into(),
        ));
    }
    // Stable: the caller's order within each group.
    additions.sort_by_key(|p| p.endpoint.is_some());

    let mut out = String::from("set=1\n");
    for key in removals {
        out.push_str(&format!("public_key={}\nremove=true\n", hex::encode(key.0)));
    }
    for peer in additions {
        out.push_str(&format!(
            "public_key={}\nremove=false\n",
            hex::encode(peer.public_key.0)
        ));
        if let Some(endpoint) = peer.endpoint {
            out.push_str(&format!("endpoint={endpoint}\n"));
        }
        out.push_str(&format!(
            "persistent_keepalive_interval={}\nreplace_allowed_ips=true\n",
            peer.keepalive_s
        ));
        for prefix in &peer.allowed {
            out.push_str(&format!("allowed_ip={}\n", AllowedIp::from(*prefix)));
        }
    }
    out.push('\n');
    Ok(Some(out))
}

/// Whether the device's `now` already is `want`.
fn unchanged(now: &PeerState, want: &Peer) -> bool {
    let have: BTreeSet<AllowedIp> = now.allowed_ips.iter().copied().collect();
    let wanted: BTreeSet<AllowedIp> = want.allowed.iter().map(|&p| p.into()).collect();
    have == wanted
        && now.keepalive_s == want.keepalive_s
        && want.endpoint.is_none_or(|e| now.endpoint == Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::parse_prefix;

    fn key(b: u8) -> WireguardPublic {
        WireguardPublic([b; 32])
    }

    fn peer(b: u8, endpoint: Option<&str>, allowed: &str) -> Peer {
        Peer {
            public_key: key(b),
            endpoint: endpoint.map(|e| e.parse().expect("endpoint")),
            allowed: vec![parse_prefix(allowed).expect("prefix")],
            keepalive_s: 0,
        }
    }

    /// What boringtun 0.7's `api_get` writes for a device with one peer.
    fn boringtun_reply() -> String {
        format!(
            "own_public_key={}\nlisten_port=51820\npublic_key={}\npersistent_keepalive_interval=25\n\
             endpoint=198.18.0.2:51821\nallowed_ip=fd00:1:2:3:4:5::/96\n\
             last_handshake_time_sec=3\nlast_handshake_time_nsec=500000000\n\
             rx_bytes=1184\ntx_bytes=1312\nerrno=0\n\n",
            hex::encode([1u8; 32]),
            hex::encode([2u8; 32])
        )
    }

    #[test]
    fn a_get_reply_is_parsed() {
        let state = parse_state(&boringtun_reply()).expect("parse");
        assert_eq!(state.public_key, Some(key(1)));
        assert_eq!(state.listen_port, 51820);
        assert_eq!(
            state.peers,
            vec![PeerState {
                public_key: key(2),
                endpoint: Some("198.18.0.2:51821".parse().expect("addr")),
                allowed_ips: vec![AllowedIp::parse("fd00:1:2:3:4:5::/96").expect("ip")],
                keepalive_s: 25,
                last_handshake: Some(Duration::from_millis(3500)),
                rx_bytes: 1184,
                tx_bytes: 1312,
            }]
        );
        // No peers, no key; an IPv6 endpoint; never a handshake.
        let empty = parse_state("errno=0\n\n").expect("empty");
        assert_eq!(empty, DeviceState::default());
        let v6 = format!(
            "public_key={}\nendpoint=[fd00::1]:7\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\npublic_key={}\nerrno=0\n\n",
            hex::encode([3u8; 32]),
            hex::encode([4u8; 32])
        );
        let state = parse_state(&v6).expect("v6");
        assert_eq!(state.peers.len(), 2);
        assert_eq!(
            state.peers[0].endpoint,
            Some("[fd00::1]:7".parse().expect("addr"))
        );
        assert_eq!(state.peers[0].last_handshake, None);
    }

    #[test]
    fn bad_replies_are_errors_that_echo_no_key() {
        let secret = "ab".repeat(31); // 62 digits: not a key
        let cases = [
            ("", None),
            ("errno=22\n\n", Some(22)),
            ("listen_port=1\n\n", None),
            ("endpoint=1.2.3.4:5\nerrno=0\n\n", None),
            ("listen_port=70000\nerrno=0\n\n", None),
            ("garbage\nerrno=0\n\n", None),
            ("public_key=zz\nerrno=0\n\n", None),
        ];
        for (reply, errno) in cases {
            let e = parse_state(reply).expect_err(reply);
            assert_eq!(e.errno, errno, "{reply:?}: {e:?}");
        }
        let e = parse_state(&format!("own_public_key={secret}\nerrno=0\n\n")).expect_err("short");
        assert!(!e.reason.contains(&secret), "{e:?}");
        let nsec = format!(
            "public_key={}\nlast_handshake_time_sec={}\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n",
            hex::encode([3u8; 32]),
            u64::MAX
        );
        assert!(parse_state(&nsec).is_err(), "would overflow a Duration");
        // A kernel's get holds the private key: skipped, never kept.
        let kernel = format!("private_key={}\nerrno=0\n\n", hex::encode([9u8; 32]));
        assert_eq!(
            parse_state(&kernel).expect("kernel"),
            DeviceState::default()
        );
        assert!(check_set("errno=0\n\n").is_ok());
        assert_eq!(
            check_set("errno=98\n\n").expect_err("in use").errno,
            Some(98)
        );
        assert!(check_set("listen_port=1\nerrno=0\n\n").is_err());
    }

    #[test]
    fn replies_are_complete_at_the_errno_line() {
        assert!(reply_complete(b"errno=0\n\n"));
        assert!(reply_complete(b"a=1\nerrno=0\n\n"));
        assert!(!reply_complete(b"a=1\nerrno=0\n"));
        assert!(!reply_complete(b"a=1\n\n"));
    }

    #[test]
    fn the_request_removes_adds_and_leaves_unchanged_peers_alone() {
        let state = parse_state(&boringtun_reply()).expect("parse");
        // The device's peer 2 (keepalive 25) is wanted with keepalive 0: changed. Peer 5 is
        // new, without an endpoint; peer 6 new with one.
        let wanted = [
            peer(6, Some("198.18.0.6:1"), "fd00:6::/96"),
            peer(2, Some("198.18.0.2:51821"), "fd00:1:2:3:4:5::/96"),
            peer(5, None, "fd00:5::/96"),
        ];
        let request = peers_request(&state, &wanted)
            .expect("valid")
            .expect("changes");
        let k = |b: u8| hex::encode([b; 32]);
        assert_eq!(
            request,
            format!(
                "set=1\n\
                 public_key={}\nremove=true\n\
                 public_key={}\nremove=false\npersistent_keepalive_interval=0\nreplace_allowed_ips=true\nallowed_ip=fd00:5::/96\n\
                 public_key={}\nremove=false\nendpoint=198.18.0.6:1\npersistent_keepalive_interval=0\nreplace_allowed_ips=true\nallowed_ip=fd00:6::/96\n\
                 public_key={}\nremove=false\nendpoint=198.18.0.2:51821\npersistent_keepalive_interval=0\nreplace_allowed_ips=true\nallowed_ip=fd00:1:2:3:4:5::/96\n\n",
                k(2),
                k(5),
                k(6),
                k(2)
            )
        );

        // The same peer as the device has it: nothing to send. Without an endpoint: the
        // learned one stays, still nothing.
        let mut same = peer(2, Some("198.18.0.2:51821"), "fd00:1:2:3:4:5::/96");
        same.keepalive_s = 25;
        assert_eq!(peers_request(&state, &[same.clone()]).expect("valid"), None);
        same.endpoint = None;
        assert_eq!(peers_request(&state, &[same]).expect("valid"), None);

        // No peers wanted: the one there is removed.
        assert_eq!(
            peers_request(&state, &[]).expect("valid"),
            Some(format!("set=1\npublic_key={}\nremove=true\n\n", k(2)))
        );
    }

    #[test]
    fn a_clients_set_is_read_section_by_section() {
        let state = parse_state(&boringtun_reply()).expect("parse");
        let k = |b: u8| hex::encode([b; 32]);
        // `wg set NAME peer K5 allowed-ips fd00:5::/96`, then the same with remove.
        let add = format!("public_key={}\nallowed_ip=fd00:5::/96", k(5));
        let lines: Vec<&str> = add.lines().collect();
        let peers = interpret_set(&state, &lines).expect("valid");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].public_key, key(2));
        assert_eq!(
            peers[0].keepalive_s, 25,
            "the existing peer is kept as it is"
        );
        assert_eq!(peers[1], peer(5, None, "fd00:5::/96"));
        // Nothing carries over from one section to the next (boringtun's own reader would
        // remove peer 6 too, and give it peer 2's endpoint).
        let text = format!(
            "public_key={}\nremove=true\npublic_key={}\nallowed_ip=fd00:6::/96",
            k(2),
            k(6)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            interpret_set(&state, &lines).expect("valid"),
            vec![peer(6, None, "fd00:6::/96")]
        );
        // What Uapi::set_peers sends round-trips: the peer set it was made from.
        let wanted = [
            peer(6, Some("198.18.0.6:1"), "fd00:6::/96"),
            peer(5, None, "fd00:5::/96"),
        ];
        let request = peers_request(&state, &wanted)
            .expect("valid")
            .expect("changes");
        let lines: Vec<&str> = request.lines().skip(1).filter(|l| !l.is_empty()).collect();
        let mut got = interpret_set(&state, &lines).expect("valid");
        got.sort_by_key(|p| p.public_key);
        let mut want = wanted.to_vec();
        want.sort_by_key(|p| p.public_key);
        assert_eq!(got, want);
        // replace_peers, update_only, replace_allowed_ips.
        let text = format!(
            "replace_peers=true\npublic_key={}\nupdate_only=true\nallowed_ip=fd00:9::/96\npublic_key={}\nallowed_ip=fd00:8::/96\nreplace_allowed_ips=true\nallowed_ip=fd00:7::/96",
            k(9),
            k(7)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            interpret_set(&state, &lines).expect("valid"),
            vec![peer(7, None, "fd00:7::/96")]
        );
    }

    #[test]
    fn a_clients_set_with_what_the_socket_does_not_do_is_refused() {
        let state = parse_state(&boringtun_reply()).expect("parse");
        let k = hex::encode([5u8; 32]);
        let cases: Vec<(String, i32)> = vec![
            ("garbage".into(), errno::EPROTO),
            ("listen_port=1".into(), errno::EOPNOTSUPP),
            (format!("private_key={k}"), errno::EOPNOTSUPP),
            ("nonsense=1".into(), errno::EINVAL),
            ("replace_peers=maybe".into(), errno::EINVAL),
            ("public_key=zz".into(), errno::EINVAL),
            (
                format!("public_key={k}\npreshared_key={k}"),
                errno::EOPNOTSUPP,
            ),
            (
                format!("public_key={k}\nallowed_ip=198.18.0.0/24"),
                errno::EOPNOTSUPP,
            ),
            (format!("public_key={k}\nendpoint=nowhere"), errno::EINVAL),
            (
                format!("public_key={k}\npersistent_keepalive_interval=-1"),
                errno::EINVAL,
            ),
            (format!("public_key={k}\nwhat=1"), errno::EINVAL),
        ];
        for (text, want) in cases {
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(interpret_set(&state, &lines), Err(want), "{text}");
        }
    }

    #[test]
    fn invalid_peer_sets_are_refused_before_anything_is_sent() {
        let state = parse_state(&boringtun_reply()).expect("parse");
        let twice = [peer(7, None, "fd00::/96"), peer(7, None, "fd01::/96")];
        assert!(matches!(
            peers_request(&state, &twice),
            Err(OverlayError::Config(_))
        ));
        let mut long = peer(7, None, "fd00::/96");
        long.allowed[0].len = 129;
        assert!(matches!(
            peers_request(&state, &[long]),
            Err(OverlayError::Config(_))
        ));
        let keyless = DeviceState::default();
        assert!(matches!(
            peers_request(&keyless, &[peer(7, None, "fd00::/96")]),
            Err(OverlayError::Config(_))
        ));
        assert_eq!(peers_request(&keyless, &[]).expect("nothing"), None);
    }

    proptest::proptest! {
        #[test]
        fn no_reply_makes_the_parser_panic(reply in ".{0,400}") {
            let _ = parse_state(&reply);
            let _ = check_set(&reply);
        }

        #[test]
        fn no_key_value_reply_makes_the_parser_panic(
            lines in proptest::collection::vec(
                ("(own_public_key|listen_port|public_key|endpoint|allowed_ip|persistent_keepalive_interval|last_handshake_time_sec|last_handshake_time_nsec|rx_bytes|tx_bytes|x)",
                 "[0-9a-f:./\\[\\]-]{0,70}"),
                0..20)
        ) {
            let mut reply: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            reply.push_str("errno=0\n\n");
            let _ = parse_state(&reply);
        }
    }
}
