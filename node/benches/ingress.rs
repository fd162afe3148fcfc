//! Benchmark (not a test): what the routing mesh's proxy adds to a connection (issue 15).
//! A TCP request/response server on 127.0.0.1 (each request 64 bytes, each answer 64 bytes),
//! reached directly and through the daemon's own proxy ([`warren_node::daemon::ingress`],
//! one route with that server as its only backend), both in one tokio runtime of two worker
//! threads; the client is plain blocking sockets on the main thread (and N threads for the
//! rate).
//!
//! ```sh
//! cargo bench -p warren-node --bench ingress -- --requests 2000 --rate-secs 3 --threads 4
//! ```
//!
//! Reports, direct and proxied, and their ratio:
//! - **new connection per request**: connect, one request/answer, close; p50 and p99;
//! - **keep-alive**: request/answer on one open connection; p50 and p99;
//! - **connection rate**: connections per second (each one request/answer) from `--threads`
//!   client threads for `--rate-secs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warren_crdt::{NodeId, ServiceName};
use warren_node::core::ingress::{Backend, IngressRoute, IngressTable};
use warren_node::daemon::ingress::{IngressConfig, Proxy, Routes};

const MESSAGE: usize = 64;

struct Options {
    requests: usize,
    rate_secs: u64,
    threads: usize,
}

fn options() -> Options {
    let mut o = Options {
        requests: 2_000,
        rate_secs: 3,
        threads: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--requests", Some(v)) => o.requests = v as usize,
            ("--rate-secs", Some(v)) => o.rate_secs = v,
            ("--threads", Some(v)) => o.threads = v as usize,
            // `cargo bench` passes `--bench`; anything else unknown is ignored as well.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// Answers every 64-byte request with 64 bytes, until the client closes.
async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; MESSAGE];
            while stream.read_exact(&mut buf).await.is_ok() {
                if stream.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
    }
}

fn round_trip(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [7u8; MESSAGE];
    stream.write_all(&buf)?;
    stream.read_exact(&mut buf)
}

fn one_connection(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    round_trip(&mut stream)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn latencies(n: usize, mut f: impl FnMut() -> std::io::Result<()>) -> (Duration, Duration) {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().expect("request");
        all.push(start.elapsed());
    }
    all.sort_unstable();
    (percentile(&all, 0.5), percentile(&all, 0.99))
}

fn rate(addr: SocketAddr, threads: usize, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    one_connection(addr).expect("connection");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / secs as f64
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cancel = CancellationToken::new();
    let (direct, proxied) = runtime.block_on(async {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind server");
        let direct = server.local_addr().expect("addr");
        tokio::spawn(serve(server));
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxied = front.local_addr().expect("addr");
        let mut table = IngressTable::default();
        table.routes.insert(
            proxied.port(),
            IngressRoute {
                service: ServiceName::new("bench").expect("name"),
                target_port: direct.port(),
                backends: vec![Backend {
                    slot: 0,
                    node: NodeId("bench".into()),
                    generation: 1,
                    addrs: vec![direct],
                    weight: 1,
                }],
            },
        );
        // The routes never change here: the receiver keeps the last value once the sender
        // is gone.
        let (_routes, routes_rx) = watch::channel(Arc::new(Routes::from_table(&table)));
        let proxy = Proxy::new(&IngressConfig::default(), routes_rx);
        tokio::spawn(proxy.serve(front, proxied.port(), cancel.clone()));
        (direct, proxied)
    });

    println!(
        "routing mesh proxy vs direct, 127.0.0.1, {MESSAGE}-byte request and answer, \
         {} requests per figure",
        o.requests
    );
    // Warm up both paths.
    let _ = latencies(200, || one_connection(direct));
    let _ = latencies(200, || one_connection(proxied));

    let (d50, d99) = latencies(o.requests, || one_connection(direct));
    let (p50, p99) = latencies(o.requests, || one_connection(proxied));
    println!(
        "new connection per request: direct p50 {:.0} µs p99 {:.0} µs; proxied p50 {:.0} µs \
         p99 {:.0} µs; ratio p50 {:.2}x p99 {:.2}x",
        us(d50),
        us(d99),
        us(p50),
        us(p99),
        us(p50) / us(d50),
        us(p99) / us(d99)
    );

    let mut dk = TcpStream::connect(direct).expect("connect");
    dk.set_nodelay(true).expect("nodelay");
    let mut pk = TcpStream::connect(proxied).expect("connect");
    pk.set_nodelay(true).expect("nodelay");
    let n = o.requests * 5;
    let (d50, d99) = latencies(n, || round_trip(&mut dk));
    let (p50, p99) = latencies(n, || round_trip(&mut pk));
    println!(
        "keep-alive ({n} requests): direct p50 {:.0} µs p99 {:.0} µs; proxied p50 {:.0} µs \
         p99 {:.0} µs; ratio p50 {:.2}x p99 {:.2}x",
        us(d50),
        us(d99),
        us(p50),
        us(p99),
        us(p50) / us(d50),
        us(p99) / us(d99)
    );
    drop((dk, pk));

    let dr = rate(direct, o.threads, o.rate_secs);
    let pr = rate(proxied, o.threads, o.rate_secs);
    println!(
        "connection rate ({} client threads, {} s): direct {dr:.0}/s, proxied {pr:.0}/s; \
         ratio {:.2}",
        o.threads,
        o.rate_secs,
        pr / dr
    );
    cancel.cancel();
}
