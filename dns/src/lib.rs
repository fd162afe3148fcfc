//! Warren's embedded DNS server: how a container finds its services by name.
//!
//! Every node runs one [`DnsServer`] on its overlay address, port 53, and gives it to its
//! tasks as their resolver. It answers from a [`Zone`], plain data the daemon rebuilds from its
//! view (the running, healthy tasks of each service, the members) and sends through a
//! `tokio::sync::watch` channel; the next query sees the new zone.
//!
//! | query | answer (TTL [`TTL_SECS`] = 5 s) |
//! |---|---|
//! | `web.warren.` or `web.` AAAA | every healthy task of `web`, rotated by one per query |
//! | `2.web.warren.` AAAA | the task in slot 2 of `web` |
//! | `alpha.node.warren.` AAAA | member `alpha`'s overlay address |
//! | another type, or a service with no task | NOERROR, no answer, the zone's SOA |
//! | any other name under `warren.` | NXDOMAIN (authoritative) |
//! | anything else | forwarded to the upstreams (the host's, [`read_upstreams`]), REFUSED without one, SERVFAIL on timeout |
//!
//! hickory (`hickory-server` 0.26) parses and writes every message, runs the UDP loop and
//! forwards (its resolver, with a bounded cache); this crate adds the zone, the handler, and
//! a TCP loop that bounds its connections. Forwarded queries in flight are bounded too
//! ([`DnsConfig::max_forwards`]).
//!
//! hickory logs every request at `info` (target `hickory_server`): filter it to `warn` in
//! production.
//!
//! ```no_run
//! use std::sync::Arc;
//! use warren_dns::{DnsConfig, DnsServer, Zone};
//!
//! # async fn run() -> Result<(), warren_dns::DnsError> {
//! let mut zone = Zone::new();
//! zone.insert_service("web", [(1, "fd00:0:0:1::2".parse().unwrap())]).unwrap();
//! let (zone_tx, zone_rx) = tokio::sync::watch::channel(Arc::new(zone));
//! let mut config = DnsConfig::new("[::1]:5353".parse().unwrap());
//! config.upstreams = warren_dns::read_upstreams(warren_dns::RESOLV_CONF.as_ref())?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let server = DnsServer::spawn(config, zone_rx, cancel.clone()).await?;
//! // ... later: a task failed its health check.
//! zone_tx.send_replace(Arc::new(Zone::new()));
//! cancel.cancel();
//! server.stopped().await
//! # }
//! ```

mod resolv;
mod server;
mod zone;

pub use resolv::{read_upstreams, upstreams_from_resolv_conf, DNS_PORT, RESOLV_CONF};
pub use server::{DnsConfig, DnsServer, TTL_SECS};
pub use zone::{InvalidName, Resolution, Zone, ZoneTask, DOMAIN, NODE_LABEL};

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong starting or running a [`DnsServer`], or reading the host's resolvers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A limit in [`DnsConfig`] is out of range (see [`DnsConfig::validate`]).
    #[error("invalid DNS configuration: {0}")]
    Config(&'static str),
    /// A UDP or TCP socket could not be bound on this address (in use, not a local address,
    /// port 53 without the privilege).
    #[error("cannot bind the DNS server on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// The forwarding resolver could not be built from the upstreams.
    #[error("cannot set up DNS forwarding: {0}")]
    Upstream(String),
    /// `resolv.conf` could not be read or parsed.
    #[error("cannot read the host's resolvers{}: {reason}", path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default())]
    ResolvConf {
        /// The file, when one was read.
        path: Option<PathBuf>,
        /// Why it failed.
        reason: String,
    },
    /// The UDP loop stopped on its own (its socket failed) or panicked.
    #[error("the DNS server stopped: {0}")]
    Serve(String),
}
