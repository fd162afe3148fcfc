//! Addresses on the overlay, and the WireGuard key they come from: a pure rule (DESIGN §4).
//!
//! Every member has a WireGuard key pair of its own (X25519, never the identity key nor the
//! key secrets are sealed to) and two things on the overlay: its own address, and a subnet its
//! tasks take addresses from. Both are **derived from its public key**, inside an IPv6 unique
//! local prefix derived from the cluster's id, so that no allocation ever needs agreement:
//!
//! ```text
//!  fd | global id (40 bits)   | node id (48 bits)        | host (32 bits)
//!     = SHA-256(cluster id)   = SHA-256(WireGuard key)   0000:0001      the node's address
//!                                                        8000:0000/1    its container subnet
//! ```
//!
//! - **The cluster's /48** is `fd00::/8` with a 40-bit global id, the layout of RFC 4193
//!   §3.2 (there drawn at random; here a hash of the cluster id, so every member computes the
//!   same prefix and two clusters almost surely differ).
//! - **Each member's /96** is the /48 and 48 bits of the SHA-256 of its public key. Its own
//!   address is the /96's `::1`; its tasks' subnet is the upper half of the /96 (a /97,
//!   2^31 addresses), so Docker's gateway for the subnet never takes the member's address.
//!
//! **Why derived and not allocated:** members are admitted on both sides of a partition at
//! once, by different admitters who cannot ask each other. A counter or a free-list would hand
//! out the same subnet twice and need a rule at the heal that renumbers one side's running
//! containers. A hash of a fresh random key needs nobody: two members collide only if 48
//! bits of their keys' hashes do, for `n` members with probability about n²/2^49 (2·10^-9 at
//! 1,000 members, 2·10^-7 at 10,000). That is not zero, so [`collisions`] finds such pairs and
//! the overlay leaves both out rather than route one's traffic to the other; the operator
//! rotates one key (a new key is a new /96). This is Uncloud's choice for its management
//! addresses, taken for the container subnets too.
//!
//! A member publishes its key, derived addresses and WireGuard port in the desired state
//! ([`warren_crdt::MemberOverlay`]); peers re-derive them with [`verify`] and ignore a record
//! whose addresses do not follow from its key. [`peers`] turns the membership and the
//! records into one node's WireGuard peers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use base64::Engine;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use warren_crdt::{Member, MemberOverlay, MemberState, NodeId};
use zeroize::Zeroizing;

/// Prefix length of the cluster's overlay network.
pub const CLUSTER_PREFIX_LEN: u8 = 48;
/// Prefix length of one member's block (its address and its container subnet).
pub const NODE_PREFIX_LEN: u8 = 96;
/// Prefix length of a member's container subnet.
pub const CONTAINER_PREFIX_LEN: u8 = 97;

/// Why an overlay record or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// Not a 32-byte key in base64.
    #[error("not a WireGuard key (32 bytes, base64): {0}")]
    InvalidKey(String),
    /// The record's addresses are not the ones its key gives.
    #[error("addresses {got} do not follow from the key (want {want})")]
    Mismatch {
        /// What the record says.
        got: String,
        /// What the rule gives.
        want: String,
    },
}

/// An IPv6 prefix: address and length in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network address (host bits zero).
    pub addr: Ipv6Addr,
    /// Length in bits, 0..=128.
    pub len: u8,
}

impl Prefix {
    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = mask(self.len);
        u128::from(ip) & mask == u128::from(self.addr) & mask
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => u128::MAX,
        l => u128::MAX << (128 - u32::from(l)),
    }
}

/// One member's place on the overlay, as the rule gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAddresses {
    /// Its /96: what its WireGuard peer entry allows and what it routes.
    pub block: Prefix,
    /// Its own address (the /96's `::1`), on its `warren0`.
    pub overlay_ip: Ipv6Addr,
    /// Its tasks' subnet (the /96's upper half), its Docker network's subnet.
    pub container_subnet: Prefix,
}

impl NodeAddresses {
    /// The record a member publishes for `key`, its interface listening on UDP `wg_port`.
    pub fn record(&self, key: &WireguardPublic, wg_port: u16) -> MemberOverlay {
        MemberOverlay {
            wg_public_key: key.to_base64(),
            overlay_ip: self.overlay_ip.to_string(),
            container_subnet: self.container_subnet.to_string(),
            wg_port,
        }
    }
}

/// The cluster's overlay prefix: `fd` and 40 bits of the SHA-256 of `cluster_id` (a /48).
pub fn cluster_prefix(cluster_id: &str) -> Prefix {
    let digest = Sha256::digest(format!("warren overlay cluster {cluster_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes[0] = 0xfd;
    bytes[1..6].copy_from_slice(&digest[..5]);
    Prefix {
        addr: Ipv6Addr::from(bytes),
        len: CLUSTER_PREFIX_LEN,
    }
}

/// The addresses of the member whose WireGuard public key is `key`, in cluster `cluster_id`.
pub fn addresses(cluster_id: &str, key: &WireguardPublic) -> NodeAddresses {
    let mut bytes = cluster_prefix(cluster_id).addr.octets();
    let mut hasher = Sha256::new();
    hasher.update(b"warren overlay node ");
    hasher.update(key.0);
    let digest = hasher.finalize();
    bytes[6..12].copy_from_slice(&digest[..6]);
    let block = u128::from(Ipv6Addr::from(bytes));
    NodeAddresses {
        block: Prefix {
            addr: Ipv6Addr::from(block),
            len: NODE_PREFIX_LEN,
        },
        overlay_ip: Ipv6Addr::from(block | 1),
        container_subnet: Prefix {
            addr: Ipv6Addr::from(block | 0x8000_0000),
            len: CONTAINER_PREFIX_LEN,
        },
    }
}

/// Checks a published record against the rule: its key parses and its addresses are the
/// ones the key gives in `cluster_id`.
///
/// Errors: [`OverlayError::InvalidKey`], [`OverlayError::Mismatch`].
pub fn verify(cluster_id: &str, record: &MemberOverlay) -> Result<NodeAddresses, OverlayError> {
    let key = WireguardPublic::from_base64(&record.wg_public_key)?;
    let want = addresses(cluster_id, &key);
    let expected = want.record(&key, record.wg_port);
    if expected.overlay_ip != record.overlay_ip
        || expected.container_subnet != record.container_subnet
    {
        return Err(OverlayError::Mismatch {
            got: format!("{} {}", record.overlay_ip, record.container_subnet),
            want: format!("{} {}", expected.overlay_ip, expected.container_subnet),
        });
    }
    Ok(want)
}

/// Members whose /96 blocks coincide with another member's (a hash collision of their keys):
/// the overlay configures none of them. Input: each member's addresses.
pub fn collisions(members: &BTreeMap<NodeId, NodeAddresses>) -> Vec<NodeId> {
    let mut by_block: BTreeMap<Prefix, Vec<&NodeId>> = BTreeMap::new();
    for (id, a) in members {
        by_block.entry(a.block).or_default().push(id);
    }
    by_block
        .into_values()
        .filter(|ids| ids.len() > 1)
        .flatten()
        .cloned()
        .collect()
}

/// Persistent keepalive of every overlay peer, in seconds: WireGuard's usual figure, short
/// enough to keep a NAT's or a stateful firewall's UDP mapping open while the tunnel idles.
pub const PEER_KEEPALIVE_S: u16 = 25;

/// One WireGuard peer of a node: another member on the overlay, as [`peers`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPeer {
    /// The member.
    pub node: NodeId,
    /// Its WireGuard public key.
    pub public_key: WireguardPublic,
    /// Where its WireGuard socket is reached: the IP of its first usable mesh address and
    /// its published WireGuard port; `None` when it lists no usable address (the interface
    /// then answers it from wherever its packets come).
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs: its /96 block (its overlay address and its container subnet).
    pub allowed: Prefix,
    /// Persistent keepalive in seconds ([`PEER_KEEPALIVE_S`]).
    pub keepalive_s: u16,
}

/// The WireGuard peers of node `me` in cluster `cluster_id`: one per other **active** member
/// (not draining, not removed) whose overlay record in `overlays` [`verify`]s and whose /96
/// block collides with no other active member's (this node's included; [`collisions`]).
/// `members` are the member records (state and mesh addresses), `overlays` the published
/// overlay records, both by id. The result is ordered by member id.
///
/// A member that is removed (`node rm`) or leaves drops out of the set, and so does a
/// member whose record is forged or half-rotated; a rotated key gives a new key and block.
pub fn peers(
    cluster_id: &str,
    me: &NodeId,
    members: &BTreeMap<NodeId, Member>,
    overlays: &BTreeMap<NodeId, MemberOverlay>,
) -> Vec<OverlayPeer> {
    let active: BTreeMap<NodeId, (NodeAddresses, WireguardPublic, &Member, u16)> = members
        .values()
        .filter(|m| m.state == MemberState::Active)
        .filter_map(|m| {
            let record = overlays.get(&m.id)?;
            let addresses = verify(cluster_id, record).ok()?;
            let key = WireguardPublic::from_base64(&record.wg_public_key).ok()?;
            Some((m.id.clone(), (addresses, key, m, record.wg_port)))
        })
        .collect();
    let blocks = active
        .iter()
        .map(|(id, (a, ..))| (id.clone(), *a))
        .collect();
    let colliding = collisions(&blocks);
    active
        .into_iter()
        .filter(|(id, _)| id != me && !colliding.contains(id))
        .map(
            |(node, (addresses, public_key, member, port))| OverlayPeer {
                // Port 0: the member has no interface listening (yet): no endpoint, its
                // own handshakes (once it has one) tell where it is.
                endpoint: member
                    .addrs
                    .iter()
                    .find_map(|a| endpoint_ip(a))
                    .filter(|_| port != 0)
                    .map(|ip| SocketAddr::new(ip, port)),
                node,
                public_key,
                allowed: addresses.block,
                keepalive_s: PEER_KEEPALIVE_S,
            },
        )
        .collect()
}

/// The IP address a mesh multiaddr starts with (`/ip4/X/...` or `/ip6/X/...`), when it is
/// one a peer can send to (not `0.0.0.0` or `::`). Other multiaddrs (`/dns4/...`) give
/// `None`: the core resolves no names. Only the first two components are read; the address
/// itself is parsed by [`IpAddr`]'s parser.
pub fn endpoint_ip(multiaddr: &str) -> Option<IpAddr> {
    let mut parts = multiaddr.strip_prefix('/')?.split('/');
    let ip: IpAddr = match (parts.next()?, parts.next()?) {
        ("ip4", text) => IpAddr::V4(text.parse().ok()?),
        ("ip6", text) => IpAddr::V6(text.parse().ok()?),
        _ => return None,
    };
    (!ip.is_unspecified()).then_some(ip)
}

/// A WireGuard public key (32 bytes of X25519).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireguardPublic(pub [u8; 32]);

impl WireguardPublic {
    /// The key in base64, as `wg` prints and reads it.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Parses a base64 key.
    ///
    /// Errors: [`OverlayError::InvalidKey`] when it is not base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, OverlayError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| OverlayError::InvalidKey(e.to_string()))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| OverlayError::InvalidKey(format!("{} bytes", b.len())))?;
        Ok(Self(array))
    }
}

/// A member's WireGuard private key. Its key file holds the base64 text, as `wg genkey`
/// writes it (so `wg pubkey < wireguard.key` prints the public key).
pub struct WireguardKey {
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for WireguardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireguardKey")
            .field("public", &self.public().to_base64())
            .finish_non_exhaustive()
    }
}

impl WireguardKey {
    /// A fresh key from `rng` (the daemon passes the OS's), clamped as `wg genkey` does.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        secret[0] &= 248;
        secret[31] &= 127;
        secret[31] |= 64;
        Self { secret }
    }

    /// The key file's text: base64 and a newline.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&self.secret[..])
        ))
    }

    /// Reads a key file's text.
    ///
    /// Errors: [`OverlayError::InvalidKey`] when it is not base64 of 32 bytes.
    pub fn from_file_text(text: &str) -> Result<Self, OverlayError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| OverlayError::InvalidKey(e.to_string()))?,
        );
        let array: [u8; 32] = bytes[..]
            .try_into()
            .map_err(|_| OverlayError::InvalidKey(format!("{} bytes", bytes.len())))?;
        Ok(Self {
            secret: Zeroizing::new(array),
        })
    }

    /// The private key in hex, as WireGuard's UAPI (`private_key=`) takes it.
    pub fn to_uapi_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.secret[..]))
    }

    /// The public key: X25519 of the private key and the base point.
    pub fn public(&self) -> WireguardPublic {
        let secret = crypto_box::SecretKey::from(*self.secret);
        WireguardPublic(*secret.public_key().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key(seed: u64) -> WireguardKey {
        WireguardKey::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    #[test]
    fn addresses_follow_the_layout() {
        let k = key(1).public();
        let a = addresses("cluster-1", &k);
        let prefix = cluster_prefix("cluster-1");
        assert_eq!(prefix.addr.octets()[0], 0xfd, "a unique local address");
        assert_eq!(prefix.len, 48);
        assert!(prefix.contains(a.overlay_ip));
        assert!(prefix.contains(a.container_subnet.addr));
        assert!(a.block.contains(a.overlay_ip));
        assert!(a.block.contains(a.container_subnet.addr));
        assert!(!a.container_subnet.contains(a.overlay_ip), "{a:?}");
        assert_eq!(u128::from(a.overlay_ip) & 0xffff_ffff, 1);
        assert_eq!(a.container_subnet.len, 97);
        // The same inputs give the same addresses; another cluster another prefix.
        assert_eq!(addresses("cluster-1", &k), a);
        let other = addresses("cluster-2", &k);
        assert!(!prefix.contains(other.overlay_ip));
    }

    #[test]
    fn ten_thousand_keys_give_ten_thousand_blocks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let members: BTreeMap<NodeId, NodeAddresses> = (0..10_000)
            .map(|i| {
                let k = WireguardKey::generate(&mut rng).public();
                (NodeId(format!("n{i}")), addresses("c", &k))
            })
            .collect();
        assert!(collisions(&members).is_empty());
        // A collision is found, both ways.
        let mut members = members;
        let first = members[&NodeId("n0".into())];
        members.insert(NodeId("twin".into()), first);
        assert_eq!(
            collisions(&members),
            vec![NodeId("n0".into()), NodeId("twin".into())]
        );
    }

    #[test]
    fn a_published_record_is_verified_against_its_key() {
        let k = key(2).public();
        let record = addresses("c", &k).record(&k, 51820);
        assert_eq!(verify("c", &record).expect("valid"), addresses("c", &k));
        let mut forged = record.clone();
        forged.container_subnet = addresses("c", &key(3).public())
            .container_subnet
            .to_string();
        assert!(matches!(
            verify("c", &forged),
            Err(OverlayError::Mismatch { .. })
        ));
        let mut bad = record;
        bad.wg_public_key = "not base64!".into();
        assert!(matches!(
            verify("c", &bad),
            Err(OverlayError::InvalidKey(_))
        ));
    }

    #[test]
    fn the_key_file_round_trips_and_matches_wireguard_tools() {
        let k = key(4);
        let text = k.to_file_text();
        assert!(text.ends_with('\n') && text.len() == 45, "{:?}", text.len());
        let back = WireguardKey::from_file_text(&text).expect("parse");
        assert_eq!(back.public(), k.public());
        assert!(WireguardKey::from_file_text("c2hvcnQ=").is_err());
        // RFC 7748 §6.1's Alice: private key 77076d0a…, public key 8520f009….
        let alice = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .expect("hex");
        let alice =
            WireguardKey::from_file_text(&base64::engine::general_purpose::STANDARD.encode(alice))
                .expect("key");
        assert_eq!(
            hex::encode(alice.public().0),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    fn member(id: &str, state: MemberState, addrs: &[&str]) -> Member {
        Member {
            id: NodeId(id.into()),
            name: id.into(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            labels: BTreeMap::new(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: NodeId("a".into()),
            admitted_at: 0,
            state,
            availability: Default::default(),
        }
    }

    /// Members `a`..: each active, at 10.0.0.N, with its own key's valid record on port
    /// 51820 + N.
    fn cluster(n: u8) -> (BTreeMap<NodeId, Member>, BTreeMap<NodeId, MemberOverlay>) {
        let mut members = BTreeMap::new();
        let mut overlays = BTreeMap::new();
        for i in 0..n {
            let id = ((b'a' + i) as char).to_string();
            let addr = format!("/ip4/10.0.0.{i}/udp/7701/quic-v1/p2p/x");
            members.insert(
                NodeId(id.clone()),
                member(&id, MemberState::Active, &[&addr]),
            );
            let k = key(100 + u64::from(i)).public();
            overlays.insert(
                NodeId(id),
                addresses("c", &k).record(&k, 51820 + u16::from(i)),
            );
        }
        (members, overlays)
    }

    fn ids(peers: &[OverlayPeer]) -> Vec<&str> {
        peers.iter().map(|p| p.node.as_str()).collect()
    }

    #[test]
    fn peers_are_the_other_active_members_with_valid_records() {
        let (members, overlays) = cluster(3);
        let me = NodeId("a".into());
        let peers = peers("c", &me, &members, &overlays);
        assert_eq!(ids(&peers), ["b", "c"], "self excluded");
        let b = &peers[0];
        let b_key = key(101).public();
        assert_eq!(b.public_key, b_key);
        assert_eq!(b.allowed, addresses("c", &b_key).block);
        assert!(b.allowed.contains(addresses("c", &b_key).overlay_ip));
        assert!(b
            .allowed
            .contains(addresses("c", &b_key).container_subnet.addr));
        assert_eq!(b.endpoint, Some("10.0.0.1:51821".parse().expect("addr")));
        assert_eq!(b.keepalive_s, 25);
        // Another cluster's rule refuses every record.
        assert!(super::peers("other", &me, &members, &overlays).is_empty());
    }

    #[test]
    fn removed_draining_and_unpublished_members_are_no_peers() {
        let (mut members, mut overlays) = cluster(5);
        let me = NodeId("a".into());
        members.get_mut(&NodeId("b".into())).expect("b").state = MemberState::Removed;
        members.get_mut(&NodeId("c".into())).expect("c").state = MemberState::Draining;
        overlays.remove(&NodeId("d".into()));
        assert_eq!(ids(&peers("c", &me, &members, &overlays)), ["e"]);
    }

    #[test]
    fn a_mismatched_record_is_no_peer() {
        let (members, mut overlays) = cluster(3);
        let me = NodeId("a".into());
        // b claims c's subnet under its own key.
        let c_subnet = overlays[&NodeId("c".into())].container_subnet.clone();
        overlays
            .get_mut(&NodeId("b".into()))
            .expect("b")
            .container_subnet = c_subnet;
        assert_eq!(ids(&peers("c", &me, &members, &overlays)), ["c"]);
        overlays
            .get_mut(&NodeId("c".into()))
            .expect("c")
            .wg_public_key = "junk".into();
        assert!(peers("c", &me, &members, &overlays).is_empty());
    }

    #[test]
    fn colliding_members_are_no_peers_even_with_this_node() {
        let (members, mut overlays) = cluster(4);
        let me = NodeId("a".into());
        // c publishes d's record (same key, same block): both are left out.
        let d = overlays[&NodeId("d".into())].clone();
        overlays.insert(NodeId("c".into()), d);
        assert_eq!(ids(&peers("c", &me, &members, &overlays)), ["b"]);
        // b publishes this node's record: b is left out (this node keeps its own address).
        let a = overlays[&NodeId("a".into())].clone();
        overlays.insert(NodeId("b".into()), a);
        assert!(peers("c", &me, &members, &overlays).is_empty());
        // A removed member's block collides with nobody.
        let (mut members, mut overlays) = cluster(3);
        let c = overlays[&NodeId("c".into())].clone();
        overlays.insert(NodeId("b".into()), c);
        members.get_mut(&NodeId("b".into())).expect("b").state = MemberState::Removed;
        assert_eq!(ids(&peers("c", &me, &members, &overlays)), ["c"]);
    }

    #[test]
    fn the_endpoint_is_the_first_usable_address_with_the_wireguard_port() {
        assert_eq!(
            endpoint_ip("/ip4/198.18.0.2/udp/7701/quic-v1/p2p/12D3"),
            Some("198.18.0.2".parse().expect("ip"))
        );
        assert_eq!(
            endpoint_ip("/ip6/fd00::2/udp/7701/quic-v1"),
            Some("fd00::2".parse().expect("ip"))
        );
        assert_eq!(endpoint_ip("/ip4/0.0.0.0/udp/7701/quic-v1"), None);
        assert_eq!(endpoint_ip("/ip6/::/udp/7701/quic-v1"), None);
        assert_eq!(endpoint_ip("/dns4/example.org/udp/7701/quic-v1"), None);
        assert_eq!(endpoint_ip("/ip4/300.1.1.1/udp/1"), None);
        assert_eq!(endpoint_ip("ip4/1.2.3.4"), None);
        assert_eq!(endpoint_ip(""), None);
        assert_eq!(endpoint_ip("/ip4"), None);

        let (mut members, overlays) = cluster(3);
        let me = NodeId("a".into());
        let b = members.get_mut(&NodeId("b".into())).expect("b");
        b.addrs = vec![
            "/ip4/0.0.0.0/udp/7701/quic-v1".into(),
            "/dns4/b.example/udp/7701/quic-v1".into(),
            "/ip6/fd00::b/udp/7701/quic-v1".into(),
            "/ip4/10.9.9.9/udp/7701/quic-v1".into(),
        ];
        members.get_mut(&NodeId("c".into())).expect("c").addrs = vec![];
        let peers = peers("c", &me, &members, &overlays);
        assert_eq!(
            peers[0].endpoint,
            Some("[fd00::b]:51821".parse().expect("addr"))
        );
        assert_eq!(peers[1].endpoint, None, "no address: no endpoint");

        // A member whose interface has no port yet (or none at all) gets no endpoint.
        let (members, mut overlays) = cluster(2);
        overlays.get_mut(&NodeId("b".into())).expect("b").wg_port = 0;
        let peers = super::peers("c", &me, &members, &overlays);
        assert_eq!(ids(&peers), ["b"]);
        assert_eq!(peers[0].endpoint, None, "port 0: no endpoint");
    }
}
