//! Query latency of the DNS server over UDP on 127.0.0.1: a zone of `--services` services of
//! `--tasks` tasks each, `--queries` AAAA queries for `<service>.warren.` sent one at a time,
//! then from `--concurrency` clients at once. Prints p50/p99 latency and queries per second.
//!
//! `cargo run --release -p warren-dns --bin warren-dns-bench`

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use warren_dns::{DnsConfig, DnsServer, Zone};

/// Measures the DNS server's UDP query latency on 127.0.0.1.
#[derive(Parser, Debug)]
struct Args {
    /// Queries per run (the concurrent run splits them between its clients).
    #[arg(long, default_value_t = 10_000)]
    queries: usize,
    /// Clients querying at once in the concurrent run.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Services in the zone.
    #[arg(long, default_value_t = 100)]
    services: u16,
    /// Tasks per service.
    #[arg(long, default_value_t = 3)]
    tasks: u16,
}

/// A client gives up on one answer after this long (the run then fails).
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.queries == 0 || args.concurrency == 0 || args.services == 0 || args.tasks == 0 {
        bail!("--queries, --concurrency, --services and --tasks must be at least 1");
    }
    let mut zone = Zone::new();
    for service in 0..args.services {
        zone.insert_service(
            &format!("svc-{service}"),
            (1..=args.tasks).map(|slot| {
                (
                    u32::from(slot),
                    Ipv6Addr::new(0xfd00, 0, 0, service, 0, 0, 0, slot),
                )
            }),
        )?;
    }
    let (_zone_tx, zone_rx) = tokio::sync::watch::channel(Arc::new(zone));
    let cancel = CancellationToken::new();
    let server = DnsServer::spawn(
        DnsConfig::new("127.0.0.1:0".parse()?),
        zone_rx,
        cancel.clone(),
    )
    .await?;
    let addr = server.local_addr();
    let names: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.services)
            .map(|service| query(&format!("svc-{service}.warren."), 0))
            .collect::<Result<_>>()?,
    );
    println!(
        "zone: {} services x {} tasks; {} queries per run; server on {addr}",
        args.services, args.tasks, args.queries
    );

    // Warm up (sockets, allocator, branch predictors) without recording.
    client(addr, names.clone(), 0, args.queries.min(1_000), args.tasks).await?;

    let started = Instant::now();
    let sequential = client(addr, names.clone(), 0, args.queries, args.tasks).await?;
    report("sequential", sequential, started.elapsed());

    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    let per_client = args.queries.div_ceil(args.concurrency);
    for c in 0..args.concurrency {
        clients.spawn(client(addr, names.clone(), c, per_client, args.tasks));
    }
    let mut concurrent = Vec::with_capacity(per_client * args.concurrency);
    while let Some(latencies) = clients.join_next().await {
        concurrent.extend(latencies??);
    }
    report(
        &format!("concurrency {}", args.concurrency),
        concurrent,
        started.elapsed(),
    );

    cancel.cancel();
    server.stopped().await?;
    Ok(())
}

/// An AAAA query for `name` with id `id`, encoded.
fn query(name: &str, id: u16) -> Result<Vec<u8>> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name)?, RecordType::AAAA));
    Ok(message.to_vec()?)
}

/// Sends `count` queries one after the other from one socket, cycling through `names`
/// from `offset`; returns each one's round-trip time. Fails on a lost, wrong or short answer.
async fn client(
    server: SocketAddr,
    names: Arc<Vec<Vec<u8>>>,
    offset: usize,
    count: usize,
    tasks: u16,
) -> Result<Vec<Duration>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(server).await?;
    let mut buf = vec![0u8; 4096];
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let mut wire = names[(offset + i) % names.len()].clone();
        let id = (i % usize::from(u16::MAX)) as u16;
        wire[..2].copy_from_slice(&id.to_be_bytes());
        let sent = Instant::now();
        socket.send(&wire).await?;
        let reply = loop {
            let len = tokio::time::timeout(ANSWER_DEADLINE, socket.recv(&mut buf))
                .await
                .context("no answer")??;
            let reply = Message::from_vec(&buf[..len])?;
            if reply.metadata.id == id {
                break reply;
            }
        };
        latencies.push(sent.elapsed());
        if reply.metadata.response_code != ResponseCode::NoError
            || reply.answers.len() != usize::from(tasks)
        {
            bail!(
                "unexpected answer: {} with {} records",
                reply.metadata.response_code,
                reply.answers.len()
            );
        }
    }
    Ok(latencies)
}

fn report(run: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(index).copied().unwrap_or_default()
    };
    println!(
        "{run:>16}: {} queries in {:.2} s = {:.0} queries/s; p50 {} us, p99 {} us",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50).as_micros(),
        at(0.99).as_micros(),
    );
}
