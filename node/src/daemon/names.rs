//! The node's embedded DNS (issue 14, part 4): a [`warren_dns::DnsServer`] on this node's
//! overlay address, port 53, answering its tasks from the names the core's rule gives
//! ([`crate::names::name_records`]) over the node's view.
//!
//! - It waits for the overlay task's verdict: with the interface up it binds (retried every
//!   [`BIND_RETRY`] while that fails, logged once); with the overlay off it never binds, and
//!   says so.
//! - The zone is rebuilt whenever the view's snapshot changes, and sent on only when the
//!   names differ.
//! - The names of tasks on other members come from their reports, which a node receives only
//!   when it asks: while the server runs it asks every member every half of
//!   [`warren_core::machine::WANT_MS`] (a member keeps answering askers for that long). At
//!   most [`MAX_SUBSCRIBERS`](warren_core::machine) askers are kept per member; a cluster
//!   larger than that needs names served from fewer peers (not done yet).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_dns::{DnsConfig, DnsServer, Zone};

use super::actor::Command;
use crate::machine::Snapshot;
use crate::names::{name_records, NameRecords};
use crate::protocol::OverlayStatus;

/// How often binding is tried again while it fails (the address just put on the interface
/// may still be tentative).
const BIND_RETRY: Duration = Duration::from_millis(250);

/// Serves names on `[address]:53` until `cancel`, once the overlay interface is up
/// (`overlay`); `serving` says whether it does: `None` until that is known, then `Some(true)`
/// while it serves, `Some(false)` with the overlay off (tasks get the address as their DNS
/// server only while it serves).
pub(crate) async fn run(
    address: Ipv6Addr,
    resolv_conf: std::path::PathBuf,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Command>,
    mut overlay: watch::Receiver<Option<OverlayStatus>>,
    serving: watch::Sender<Option<bool>>,
    cancel: CancellationToken,
) {
    // The interface's verdict first: binding before the address is on it cannot work.
    loop {
        match overlay.borrow_and_update().as_ref() {
            Some(OverlayStatus::On { .. }) => break,
            Some(status) => {
                serving.send_replace(Some(false));
                info!(?status, "no DNS for tasks: the overlay is not on");
            }
            None => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = overlay.changed() => if changed.is_err() { return },
        }
    }
    let listen = SocketAddr::new(IpAddr::V6(address), warren_dns::DNS_PORT);
    let mut config = DnsConfig::new(listen);
    match warren_dns::read_upstreams(warren_dns::RESOLV_CONF.as_ref()) {
        Ok(upstreams) => config.upstreams = upstreams,
        Err(e) => warn!(error = %e, "names outside the cluster will be refused to tasks"),
    }
    let records = name_records(&snapshots.borrow_and_update());
    let (zone_tx, zone_rx) = watch::channel(Arc::new(zone_of(&records)));
    let mut current = records;
    let mut waiting_logged = false;
    let server = loop {
        match DnsServer::spawn(config.clone(), zone_rx.clone(), cancel.child_token()).await {
            Ok(server) => break server,
            Err(e) => {
                if !waiting_logged {
                    info!(%listen, error = %e, "the DNS for tasks cannot bind yet; retrying");
                    waiting_logged = true;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(BIND_RETRY) => {}
        }
    };
    info!(addr = %server.local_addr(), "serving names to tasks (DNS)");
    // Tasks get this file as their /etc/resolv.conf: written (atomically) before they are
    // told the server serves.
    let tmp = resolv_conf.with_extension("tmp");
    let written = tokio::fs::write(&tmp, resolv_conf_text(address))
        .await
        .and(tokio::fs::rename(&tmp, &resolv_conf).await);
    match written {
        Ok(()) => {
            serving.send_replace(Some(true));
        }
        Err(e) => {
            warn!(path = %resolv_conf.display(), error = %e, "cannot write the tasks' resolver file; tasks keep the engine's resolvers");
            serving.send_replace(Some(false));
        }
    }
    let mut ask = tokio::time::interval(Duration::from_millis(warren_core::machine::WANT_MS / 2));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ask.tick() => {
                let (reply, _) = oneshot::channel();
                let _ = commands.try_send(Command::WantReports { reply });
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let records = name_records(&snapshots.borrow_and_update());
                if records != current {
                    zone_tx.send_replace(Arc::new(zone_of(&records)));
                    current = records;
                }
            }
        }
    }
    serving.send_replace(Some(false));
    if let Err(e) = server.stopped().await {
        warn!(error = %e, "the DNS server stopped with an error");
    }
}

/// The `/etc/resolv.conf` of a task on the overlay: the node's DNS as its only server
/// (`ndots:0`: a bare `web` is asked as it is).
pub(crate) fn resolv_conf_text(address: Ipv6Addr) -> String {
    format!("# written by warren-node: the node's DNS (names of services and members)\nnameserver {address}\noptions ndots:0\n")
}

/// The zone for `records`; a name the DNS cannot carry (not a label) is left out, logged.
fn zone_of(records: &NameRecords) -> Zone {
    let mut zone = Zone::new();
    for (service, tasks) in &records.services {
        if let Err(e) = zone.insert_service(service, tasks.iter().copied()) {
            tracing::debug!(%service, error = %e, "service not served by name");
        }
    }
    for (node, addr) in &records.nodes {
        if let Err(e) = zone.insert_node(node, *addr) {
            tracing::debug!(%node, error = %e, "member not served by name");
        }
    }
    zone
}
