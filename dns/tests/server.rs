//! The DNS server on 127.0.0.1, queried over UDP and TCP with messages hickory builds and
//! parses.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hickory_server::proto::op::Query;
use hickory_server::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::AAAA;
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warren_dns::{DnsConfig, DnsServer, Zone, TTL_SECS};

/// How long a test waits for one answer before it fails (not a timing assertion: a bound on
/// a hang).
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

fn addr(service: u16, slot: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xabcd, 0, service, 0, 0, 0, slot)
}

/// `web` with slots 1-3, `idle` with none, member `alpha`.
fn zone() -> Zone {
    let mut zone = Zone::new();
    zone.insert_service("web", (1..=3).map(|slot| (u32::from(slot), addr(1, slot))))
        .unwrap();
    zone.insert_service("idle", []).unwrap();
    zone.insert_node("alpha", addr(0xff, 1)).unwrap();
    zone
}

struct Running {
    server: DnsServer,
    zone: watch::Sender<Arc<Zone>>,
    cancel: CancellationToken,
}

impl Running {
    async fn start(zone: Zone, upstreams: Vec<SocketAddr>) -> Result<Self> {
        let mut config = DnsConfig::new("127.0.0.1:0".parse()?);
        config.upstreams = upstreams;
        Self::with_config(zone, config).await
    }

    async fn with_config(zone: Zone, config: DnsConfig) -> Result<Self> {
        let (tx, rx) = watch::channel(Arc::new(zone));
        let cancel = CancellationToken::new();
        let server = DnsServer::spawn(config, rx, cancel.clone()).await?;
        Ok(Self {
            server,
            zone: tx,
            cancel,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        tokio::time::timeout(ANSWER_DEADLINE, self.server.stopped())
            .await
            .context("server did not stop")??;
        Ok(())
    }
}

fn query_message(name: &str, qtype: RecordType, id: u16) -> Result<Vec<u8>> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name)?, qtype));
    Ok(message.to_vec()?)
}

/// One query over UDP from a fresh socket; the first reply with the query's id.
async fn udp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let id = rand_id(name);
    socket
        .send_to(&query_message(name, qtype, id)?, server)
        .await?;
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(ANSWER_DEADLINE, async {
        loop {
            let (len, _) = socket.recv_from(&mut buf).await?;
            let reply = Message::from_vec(&buf[..len])?;
            if reply.metadata.id == id {
                return Ok(reply);
            }
        }
    })
    .await
    .with_context(|| format!("no UDP answer for {name}"))?
}

/// One query over a TCP connection (RFC 1035 §4.2.2: a two-byte length before each message).
async fn tcp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let id = rand_id(name);
    let query = query_message(name, qtype, id)?;
    stream
        .write_all(&u16::try_from(query.len())?.to_be_bytes())
        .await?;
    stream.write_all(&query).await?;
    let reply = tokio::time::timeout(ANSWER_DEADLINE, async {
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        anyhow::Ok(Message::from_vec(&buf)?)
    })
    .await
    .with_context(|| format!("no TCP answer for {name}"))??;
    if reply.metadata.id != id {
        bail!("TCP answer has id {} for query {id}", reply.metadata.id);
    }
    Ok(reply)
}

fn rand_id(name: &str) -> u16 {
    // Distinct enough per query; the server must echo it whatever it is.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos as u16) ^ (name.len() as u16)
}

fn aaaa(reply: &Message) -> Vec<Ipv6Addr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn service_answers_both_name_forms_with_every_task() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    let expected: Vec<Ipv6Addr> = (1..=3).map(|slot| addr(1, slot)).collect();
    for name in ["web.warren.", "web.", "WEB.Warren."] {
        let reply = udp_query(dns.addr(), name, RecordType::AAAA).await?;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(reply.metadata.authoritative, "{name}");
        let mut got = aaaa(&reply);
        got.sort();
        assert_eq!(got, expected, "{name}");
        assert!(reply.answers.iter().all(|r| r.ttl == TTL_SECS), "{name}");
        assert!(
            reply
                .answers
                .iter()
                .all(|r| r.name == Name::from_ascii(name).unwrap()),
            "{name}: answers owned by the asked name"
        );
    }
    dns.stop().await
}

#[tokio::test]
async fn consecutive_queries_rotate_the_order() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    let mut firsts = Vec::new();
    let mut orders = Vec::new();
    for _ in 0..3 {
        let got = aaaa(&udp_query(dns.addr(), "web.warren.", RecordType::AAAA).await?);
        assert_eq!(got.len(), 3);
        firsts.push(got[0]);
        orders.push(got);
    }
    firsts.sort();
    firsts.dedup();
    assert_eq!(
        firsts.len(),
        3,
        "each task comes first once in 3 queries: {orders:?}"
    );
    // Each answer is a rotation of the same cycle (slot order).
    let cycle: Vec<Ipv6Addr> = (1..=3).map(|slot| addr(1, slot)).collect();
    for order in &orders {
        let start = cycle.iter().position(|a| *a == order[0]).unwrap();
        let rotated: Vec<Ipv6Addr> = cycle[start..]
            .iter()
            .chain(&cycle[..start])
            .copied()
            .collect();
        assert_eq!(order, &rotated);
    }
    dns.stop().await
}

#[tokio::test]
async fn slot_and_node_names() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    let reply = udp_query(dns.addr(), "2.web.warren.", RecordType::AAAA).await?;
    assert_eq!(aaaa(&reply), vec![addr(1, 2)]);
    let reply = udp_query(dns.addr(), "alpha.node.warren.", RecordType::AAAA).await?;
    assert_eq!(aaaa(&reply), vec![addr(0xff, 1)]);
    assert!(reply.metadata.authoritative);
    dns.stop().await
}

#[tokio::test]
async fn missing_names_under_warren_are_nxdomain_and_empty_ones_nodata() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    for name in [
        "db.warren.",
        "4.web.warren.",
        "beta.node.warren.",
        "a.b.c.warren.",
    ] {
        let reply = udp_query(dns.addr(), name, RecordType::AAAA).await?;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        assert!(reply.metadata.authoritative, "{name}");
        assert!(reply.answers.is_empty(), "{name}");
        assert!(
            reply
                .authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA),
            "{name}: SOA for negative caching"
        );
    }
    // Names that exist without an address of the asked type: NOERROR, no answer.
    for (name, qtype) in [
        ("web.warren.", RecordType::A),
        ("web.", RecordType::A),
        ("idle.warren.", RecordType::AAAA),
        ("idle.", RecordType::AAAA),
        ("warren.", RecordType::AAAA),
    ] {
        let reply = udp_query(dns.addr(), name, qtype).await?;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name} {qtype}"
        );
        assert!(reply.answers.is_empty(), "{name} {qtype}");
    }
    dns.stop().await
}

#[tokio::test]
async fn zone_update_removes_a_task_on_the_next_query() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    assert_eq!(
        aaaa(&udp_query(dns.addr(), "web.", RecordType::AAAA).await?).len(),
        3
    );

    // Slot 2 failed its health check.
    let mut zone = zone();
    zone.insert_service("web", [(1, addr(1, 1)), (3, addr(1, 3))])
        .unwrap();
    dns.zone.send_replace(Arc::new(zone));

    let mut got = aaaa(&udp_query(dns.addr(), "web.warren.", RecordType::AAAA).await?);
    got.sort();
    assert_eq!(got, vec![addr(1, 1), addr(1, 3)]);
    let reply = udp_query(dns.addr(), "2.web.warren.", RecordType::AAAA).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    dns.stop().await
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream() -> Result<()> {
    // The upstream: another instance whose zone has `db`, which it answers by its bare name.
    let mut upstream_zone = Zone::new();
    upstream_zone
        .insert_service("db", [(1, addr(2, 1))])
        .unwrap();
    let upstream = Running::start(upstream_zone, vec![]).await?;
    let dns = Running::start(zone(), vec![upstream.addr()]).await?;

    let reply = udp_query(dns.addr(), "db.", RecordType::AAAA).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(aaaa(&reply), vec![addr(2, 1)]);
    assert!(
        !reply.metadata.authoritative,
        "a forwarded answer is not ours"
    );
    assert!(reply.metadata.recursion_available);
    // Our own names are still ours, not the upstream's.
    assert_eq!(
        aaaa(&udp_query(dns.addr(), "web.", RecordType::AAAA).await?).len(),
        3
    );

    dns.stop().await?;
    upstream.stop().await
}

#[tokio::test]
async fn other_names_are_refused_without_upstream() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    for name in ["example.com.", "db."] {
        let reply = udp_query(dns.addr(), name, RecordType::AAAA).await?;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
    }
    dns.stop().await
}

#[tokio::test]
async fn silent_upstream_answers_servfail() -> Result<()> {
    // An upstream that never answers: a bound socket nobody reads.
    let silent = UdpSocket::bind("127.0.0.1:0").await?;
    let mut config = DnsConfig::new("127.0.0.1:0".parse()?);
    config.upstreams = vec![silent.local_addr()?];
    config.forward_timeout = Duration::from_millis(300);
    let dns = Running::with_config(zone(), config).await?;
    let reply = udp_query(dns.addr(), "example.com.", RecordType::AAAA).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    dns.stop().await
}

#[tokio::test]
async fn forwards_beyond_the_limit_are_servfail_at_once() -> Result<()> {
    // An upstream the test answers by hand, so a forward stays in flight as long as it likes.
    let upstream = UdpSocket::bind("127.0.0.1:0").await?;
    let mut config = DnsConfig::new("127.0.0.1:0".parse()?);
    config.upstreams = vec![upstream.local_addr()?];
    config.max_forwards = 1;
    config.forward_timeout = Duration::from_secs(60);
    let dns = Running::with_config(zone(), config).await?;

    let server = dns.addr();
    let first =
        tokio::spawn(async move { udp_query(server, "first.example.", RecordType::AAAA).await });
    let mut buf = vec![0u8; 4096];
    let (len, resolver) = tokio::time::timeout(ANSWER_DEADLINE, upstream.recv_from(&mut buf))
        .await
        .context("the first query never reached the upstream")??;
    let held = Message::from_vec(&buf[..len])?;
    assert_eq!(held.queries[0].name(), &Name::from_ascii("first.example.")?);

    // The one forwarding slot is taken: the next outside name is refused service at once
    // (were it forwarded, it would wait the 60 s timeout and the query would fail).
    let reply = udp_query(dns.addr(), "second.example.", RecordType::AAAA).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    // Zone names do not need a slot.
    assert_eq!(
        aaaa(&udp_query(dns.addr(), "web.", RecordType::AAAA).await?).len(),
        3
    );

    // The upstream answers the held query; its answer reaches the client.
    let mut answer = Message::response(held.metadata.id, OpCode::Query);
    answer.metadata.recursion_available = true;
    answer.add_queries(held.queries.clone());
    answer.add_answer(Record::from_rdata(
        held.queries[0].name().clone(),
        60,
        RData::AAAA(AAAA(addr(9, 9))),
    ));
    upstream.send_to(&answer.to_vec()?, resolver).await?;
    let first = first.await??;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(aaaa(&first), vec![addr(9, 9)]);
    dns.stop().await
}

#[tokio::test]
async fn other_classes_and_opcodes_are_not_served() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut chaos = Message::query();
    chaos.metadata.id = 11;
    let mut query = Query::query(Name::from_ascii("web.warren.")?, RecordType::AAAA);
    query.set_query_class(DNSClass::CH);
    chaos.add_query(query);
    let mut notify = Message::new(12, MessageType::Query, OpCode::Notify);
    notify.add_query(Query::query(
        Name::from_ascii("web.warren.")?,
        RecordType::SOA,
    ));
    let mut two_questions = Message::query();
    two_questions.metadata.id = 13;
    for name in ["web.warren.", "alpha.node.warren."] {
        two_questions.add_query(Query::query(Name::from_ascii(name)?, RecordType::AAAA));
    }
    for (message, expected) in [
        (chaos, ResponseCode::Refused),
        (notify, ResponseCode::NotImp),
        (two_questions, ResponseCode::FormErr),
    ] {
        socket.send_to(&message.to_vec()?, dns.addr()).await?;
        let mut buf = vec![0u8; 4096];
        let (len, _) = tokio::time::timeout(ANSWER_DEADLINE, socket.recv_from(&mut buf))
            .await
            .context("no answer")??;
        let reply = Message::from_vec(&buf[..len])?;
        assert_eq!(reply.metadata.id, message.metadata.id);
        assert_eq!(
            reply.metadata.response_code, expected,
            "{:?}",
            message.metadata.op_code
        );
        assert!(reply.answers.is_empty());
    }
    dns.stop().await
}

#[tokio::test]
async fn tcp_queries_are_answered() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    let reply = tcp_query(dns.addr(), "web.warren.", RecordType::AAAA).await?;
    assert_eq!(aaaa(&reply).len(), 3);
    let reply = tcp_query(dns.addr(), "nope.warren.", RecordType::AAAA).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    dns.stop().await
}

#[tokio::test]
async fn garbage_does_not_stop_the_server() -> Result<()> {
    let dns = Running::start(zone(), vec![]).await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let valid_header_then_junk = {
        let mut bytes = query_message("web.warren.", RecordType::AAAA, 7)?;
        bytes.truncate(14);
        bytes.extend_from_slice(&[0xff; 40]);
        bytes
    };
    for datagram in [
        &b""[..],
        &[0x00, 0x01, 0x02],
        &[0xff; 512],
        &valid_header_then_junk,
    ] {
        socket.send_to(datagram, dns.addr()).await?;
    }
    // Garbage over TCP too: a length prefix that promises more than is sent, then a close.
    let mut stream = TcpStream::connect(dns.addr()).await?;
    stream.write_all(&[0x40, 0x00, 0xde, 0xad]).await?;
    drop(stream);

    let reply = udp_query(dns.addr(), "web.warren.", RecordType::AAAA).await?;
    assert_eq!(aaaa(&reply).len(), 3);
    let reply = tcp_query(dns.addr(), "web.warren.", RecordType::AAAA).await?;
    assert_eq!(aaaa(&reply).len(), 3);
    dns.stop().await
}
