//! The node actor: drives the sans-IO [`NodeMachine`] with tokio, the libp2p mesh and the
//! desired-state store. It owns the machine and the store; the API talks to it through a
//! bounded command channel and reads the [`Snapshot`] it publishes every tick.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};
use warren_crdt::{HistoryEntry, NodeId, SecretRecord, ServiceName, Store};
use warren_mesh::{MeshEvent, MeshHandle, Multiaddr, PeerId, RequestKind, Response, Topic};

use super::applied::{Applied, AppliedLog, Via};
use super::NodeError;
use crate::core::{Desired, Millis};
use crate::machine::{
    fingerprint, Channel, NodeMachine, Output, Snapshot, Write, WriteAck, WriteError,
};
use crate::protocol::{EngineStatus, TaskStatus};

/// A write or a question from the API. Each carries its reply channel.
#[derive(Debug)]
pub(crate) enum Command {
    Write {
        write: Write,
        reply: oneshot::Sender<Result<WriteAck, WriteError>>,
    },
    /// An operator reads tasks or members here: ask every member for its reports
    /// ([`NodeMachine::want_reports`]); answered at once (the reports arrive after).
    WantReports { reply: oneshot::Sender<()> },
    /// The newest `limit` changes, oldest first; only those touching `service` if given.
    History {
        service: Option<ServiceName>,
        limit: usize,
        reply: oneshot::Sender<Vec<HistoryEntry>>,
    },
    /// The changes this node applied at or after `since_ms` (wall-clock Unix ms), oldest
    /// first ([`AppliedLog`]).
    Applied {
        since_ms: i64,
        reply: oneshot::Sender<Vec<Applied>>,
    },
}

/// Result of one outbound sync request, fed back into the machine.
struct SyncReply {
    peer: NodeId,
    result: Result<Vec<u8>, String>,
}

/// Channels the actor is wired to.
pub(crate) struct Wiring {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Receiver<MeshEvent>,
    pub(crate) desired_tx: watch::Sender<Option<Desired>>,
    pub(crate) secrets_tx: watch::Sender<Arc<BTreeMap<String, SecretRecord>>>,
    pub(crate) local_status: watch::Receiver<Vec<TaskStatus>>,
    pub(crate) engine_status: watch::Receiver<Option<EngineStatus>>,
    pub(crate) snapshot_tx: watch::Sender<Arc<Snapshot>>,
    /// Serves peers' `Logs` requests (in tasks of its own: the engine is slow to answer).
    pub(crate) logs: Arc<super::logs::LogService>,
    /// The overlay task: the peer set goes to it, its interface's status comes back.
    pub(crate) overlay: super::overlay::OverlayLink,
    /// What this node's engine knows of the current services' images' platforms.
    pub(crate) images: watch::Receiver<Vec<crate::core::image_platform::ImageReport>>,
}

/// The driver. See the module doc.
pub(crate) struct NodeActor {
    machine: NodeMachine,
    store: Store,
    origin: Instant,
    mesh: MeshHandle,
    sync_tx: mpsc::Sender<SyncReply>,
    sync_rx: mpsc::Receiver<SyncReply>,
    dropped_non_member: u64,
    connected_peers: usize,
    /// When this node's usage was last read from `/proc`.
    usage_read_at: Millis,
    /// When each change reached the replica (for `GET /v1/debug/applied`).
    applied: AppliedLog,
    /// The document's heads when the overlay's peer set was last computed (it changes only
    /// with the document).
    overlay_heads: Option<Vec<String>>,
    /// [`fingerprint`] of this node's task list as the reconciler last published it.
    local_fingerprint: u64,
    /// Per member, the sequence number and [`fingerprint`] of the last report read from it
    /// (members the machine holds a report of: pruned every tick).
    report_fingerprints: HashMap<NodeId, (u64, u64)>,
    /// Messages counted as they pass; the mesh's, SWIM's and the store's figures copied
    /// every tick (`GET /metrics`).
    metrics: Arc<super::metrics::Metrics>,
}

/// How often the node reads its usage (load, memory in use) for its reports, in ms.
const USAGE_EVERY_MS: u64 = 5_000;

/// The least time between two ticks when the machine's deadline is already due.
const MIN_TICK_GAP: Duration = Duration::from_millis(10);

/// The least time between the last tick and one brought forward by a changed task list
/// (this node's or a member's report): a burst of reports (a rollout over many members)
/// costs at most 20 ticks, and views published, a second.
const CHANGE_TICK_GAP: Duration = Duration::from_millis(50);

/// How soon an input wants the machine's next tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// At its deadline, as planned.
    Due,
    /// Now: the document may have changed, decide on it.
    Now,
    /// Within [`CHANGE_TICK_GAP`] of the last tick: a task list changed.
    Soon,
}

/// Brings the pinned `tick` forward for `wake`; `last` is when the last tick ran.
fn wake_tick(tick: std::pin::Pin<&mut tokio::time::Sleep>, wake: Wake, last: tokio::time::Instant) {
    let now = tokio::time::Instant::now();
    let at = match wake {
        Wake::Due => return,
        Wake::Now => now,
        Wake::Soon => now.max(last + CHANGE_TICK_GAP),
    };
    if at < tick.deadline() {
        tick.reset(at);
    }
}

fn topic(channel: Channel) -> Topic {
    match channel {
        Channel::Changes => Topic::Changes,
        Channel::Lease => Topic::Lease,
    }
}

fn node_id(peer: &PeerId) -> NodeId {
    NodeId(peer.to_string())
}

impl NodeActor {
    pub(crate) fn new(
        mut machine: NodeMachine,
        store: Store,
        origin: Instant,
        mesh: MeshHandle,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Self {
        let (sync_tx, sync_rx) = mpsc::channel(64);
        let me = machine.id().clone();
        let applied = AppliedLog::new(me, machine.state_mut());
        Self {
            machine,
            store,
            origin,
            mesh,
            sync_tx,
            sync_rx,
            dropped_non_member: 0,
            connected_peers: 0,
            usage_read_at: Millis(0),
            applied,
            overlay_heads: None,
            local_fingerprint: fingerprint(&[]),
            report_fingerprints: HashMap::new(),
            metrics,
        }
    }

    fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }

    /// When the machine wants its next tick ([`NodeMachine::poll_timeout`]), on the tokio
    /// clock; no earlier than `MIN_TICK_GAP` after now, so a deadline already due cannot
    /// spin the loop.
    fn next_tick(&self) -> tokio::time::Instant {
        let due = self.origin + Duration::from_millis(self.machine.poll_timeout().0);
        let soonest = Instant::now() + MIN_TICK_GAP;
        tokio::time::Instant::from_std(due.max(soonest))
    }

    /// Runs until `cancel` fires or the mesh stops. Persists and flushes on the way out.
    ///
    /// Sleeps until the machine's next deadline ([`NodeMachine::poll_timeout`]), not on a
    /// period of its own; an input the machine decides on (a write, changes or a sync
    /// message from a peer) brings the tick forward to now. A change of a task list worth
    /// reporting at once ([`fingerprint`]) brings it to now or [`CHANGE_TICK_GAP`] after the
    /// last tick, whichever is later: this node's own list (the tick reports it to the
    /// members that need it) or one a member reported (the tick publishes the view, which
    /// the node's DNS serves from).
    pub(crate) async fn run(
        mut self,
        mut wiring: Wiring,
        cancel: CancellationToken,
    ) -> Result<(), NodeError> {
        let tick = tokio::time::sleep_until(self.next_tick());
        tokio::pin!(tick);
        let now = || tokio::time::Instant::now();
        let mut last_tick = now();
        let mut local_open = true;
        let result = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                Some(command) = wiring.commands.recv() => {
                    if self.handle_command(command, &wiring).await {
                        // Decide on a write at once, not at the next tick: the holder
                        // schedules it and the reconciler hears of it without waiting.
                        tick.as_mut().reset(now());
                    }
                }
                event = wiring.events.recv() => match event {
                    Some(MeshEvent::Request { peer, kind: RequestKind::Logs, body, reply }) => {
                        wiring.logs.serve(peer, body, reply);
                    }
                    Some(event) => {
                        let wake = self.handle_mesh_event(event).await;
                        wake_tick(tick.as_mut(), wake, last_tick);
                    }
                    None => break Err(NodeError::MeshStopped),
                },
                changed = wiring.local_status.changed(), if local_open => {
                    if changed.is_err() {
                        // The reconciler stopped: the tick reads its last word.
                        local_open = false;
                        continue;
                    }
                    let latest = fingerprint(&wiring.local_status.borrow_and_update());
                    if latest != self.local_fingerprint {
                        self.local_fingerprint = latest;
                        wake_tick(tick.as_mut(), Wake::Soon, last_tick);
                    }
                }
                Some(reply) = self.sync_rx.recv() => {
                    self.machine.handle_sync_response(&reply.peer, reply.result);
                    let _ = self.drive(Via::Sync).await;
                    tick.as_mut().reset(now());
                }
                _ = &mut tick => {
                    last_tick = now();
                    self.tick(&wiring).await;
                    tick.as_mut().reset(self.next_tick());
                }
            }
        };
        if let Err(e) = self.store.persist(self.machine.state_mut(), true) {
            warn!(error = %e, "could not persist the desired state on shutdown");
        }
        self.mesh.shutdown().await;
        result
    }

    /// Carries out the machine's outputs in order, after the input that came `via` (called
    /// right after each input: the changes it merged are recorded first). Returns the first
    /// persistence error: a write must not be acknowledged after one.
    async fn drive(&mut self, via: Via) -> Result<(), String> {
        self.applied
            .note(self.machine.state_mut(), via, super::wall_ms());
        let mut persisted = Ok(());
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Persist { flush } => {
                    if let Err(e) = self.store.persist(self.machine.state_mut(), flush) {
                        warn!(error = %e, "could not persist the desired state");
                        if persisted.is_ok() {
                            persisted = Err(format!("write not persisted: {e}"));
                        }
                    }
                }
                Output::Publish { channel, data } => {
                    let kind = match channel {
                        Channel::Changes => "gossip_changes",
                        Channel::Lease => "gossip_lease",
                    };
                    self.metrics.message("sent", kind, data.len());
                    if let Err(e) = self.mesh.publish(topic(channel), data).await {
                        debug!(error = %e, "gossip not sent; anti-entropy will carry it");
                    }
                }
                Output::Send { to, data } => match to.as_str().parse::<PeerId>() {
                    Ok(peer) => {
                        self.metrics.message("sent", "direct", data.len());
                        if let Err(e) = self.mesh.send_direct(peer, data) {
                            debug!(%to, error = %e, "direct message not sent");
                        }
                    }
                    Err(_) => debug!(%to, "not a peer id; direct message skipped"),
                },
                Output::SyncRequest { to, body } => self.send_sync(to, body),
                Output::SetMembers(members) => {
                    let members: HashMap<PeerId, Vec<Multiaddr>> = members
                        .into_iter()
                        .filter_map(|(id, addrs)| {
                            let peer: PeerId = id.as_str().parse().ok()?;
                            Some((peer, addrs.iter().filter_map(|a| a.parse().ok()).collect()))
                        })
                        .collect();
                    if let Err(e) = self.mesh.set_members(members).await {
                        warn!(error = %e, "could not update the mesh's member set");
                    }
                }
            }
        }
        persisted
    }

    fn send_sync(&self, to: NodeId, body: Vec<u8>) {
        let Ok(peer) = to.as_str().parse::<PeerId>() else {
            debug!(%to, "not a peer id; sync skipped");
            return;
        };
        let mesh = self.mesh.clone();
        let tx = self.sync_tx.clone();
        let metrics = Arc::clone(&self.metrics);
        metrics.message("sent", "sync_request", body.len());
        tokio::spawn(
            async move {
                let result = match mesh.request(peer, RequestKind::Sync, body).await {
                    Ok(Response::Ok(body)) => {
                        metrics.message("received", "sync_response", body.len());
                        Ok(body)
                    }
                    Ok(Response::Refused(reason)) => Err(reason),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(SyncReply { peer: to, result }).await;
            }
            .in_current_span(),
        );
    }

    /// Carries out an API command. Returns whether it changed the document (an acknowledged
    /// write), so the caller decides on it at once.
    async fn handle_command(&mut self, command: Command, wiring: &Wiring) -> bool {
        match command {
            Command::Write { write, reply } => {
                let result = match self.machine.write(write) {
                    Ok(ack) => match self.drive(Via::Local).await {
                        Ok(()) => Ok(ack),
                        Err(e) => Err(WriteError::NotPersisted(e)),
                    },
                    Err(e) => Err(e),
                };
                let written = result.is_ok();
                if written {
                    // Read your writes: the next read at this peer already shows it.
                    self.publish_snapshot(wiring);
                }
                let _ = reply.send(result);
                written
            }
            Command::WantReports { reply } => {
                let now = self.now();
                self.machine.want_reports(now);
                let _ = self.drive(Via::Other).await;
                let _ = reply.send(());
                false
            }
            Command::History {
                service,
                limit,
                reply,
            } => {
                let _ = reply.send(self.machine.history(service.as_ref(), limit));
                false
            }
            Command::Applied { since_ms, reply } => {
                let _ = reply.send(self.applied.since(since_ms));
                false
            }
        }
    }

    /// Hands a mesh event to the machine. Returns [`Wake::Now`] when it may have changed the
    /// document (a gossiped change, a sync or join request), so the caller decides on it at
    /// once; [`Wake::Soon`] for a member's report with a changed task list.
    async fn handle_mesh_event(&mut self, event: MeshEvent) -> Wake {
        let now = self.now();
        let mut via = match &event {
            MeshEvent::Gossip {
                topic: Topic::Changes,
                ..
            } => Via::Gossip,
            MeshEvent::Request {
                kind: RequestKind::Sync | RequestKind::Join,
                ..
            } => Via::Sync,
            _ => Via::Other,
        };
        let mut changes = via != Via::Other;
        let mut reported = false;
        match event {
            MeshEvent::Gossip {
                topic,
                source,
                data,
            } => {
                let channel = match topic {
                    Topic::Changes => Channel::Changes,
                    Topic::Lease => Channel::Lease,
                };
                let kind = match channel {
                    Channel::Changes => "gossip_changes",
                    Channel::Lease => "gossip_lease",
                };
                self.metrics.message("received", kind, data.len());
                self.machine
                    .handle_gossip(channel, &node_id(&source), &data, now);
            }
            MeshEvent::Request {
                peer,
                kind,
                body,
                reply,
            } => {
                let from = node_id(&peer);
                let answer = match kind {
                    RequestKind::Sync => {
                        self.metrics.message("received", "sync_request", body.len());
                        self.machine
                            .handle_sync_request(&from, &body)
                            .map_err(|e| e.to_string())
                    }
                    RequestKind::Join => {
                        let now_secs = super::wall_ms() / 1000;
                        self.machine
                            .handle_join(&from, &body, now_secs)
                            .map_err(|e| e.to_string())
                    }
                    // Served by the log service before it gets here (see `run`).
                    RequestKind::Logs => Err("logs are served elsewhere".into()),
                };
                // Persist (and, for an admission, flush) before answering.
                let answer = match self.drive(via).await {
                    Ok(()) => answer,
                    Err(e) => Err(e),
                };
                let response = match answer {
                    Ok(body) => {
                        if kind == RequestKind::Sync {
                            self.metrics.message("sent", "sync_response", body.len());
                        }
                        Response::Ok(body)
                    }
                    Err(reason) => {
                        if kind == RequestKind::Join {
                            tracing::info!(%peer, %reason, "join refused");
                        }
                        Response::Refused(reason)
                    }
                };
                if let Err(e) = self.mesh.respond(reply, response).await {
                    debug!(%peer, error = %e, "could not respond");
                }
            }
            MeshEvent::Direct { from, data } => {
                self.metrics.message("received", "direct", data.len());
                let from = node_id(&from);
                // Changes come along the broadcast tree as direct messages.
                if self.machine.handle_direct(&from, &data, now) {
                    via = Via::Gossip;
                    changes = true;
                }
                reported = self.report_changed(&from);
            }
            MeshEvent::ConnectionEstablished { peer, .. } => {
                let now = self.now();
                self.machine.handle_connected(&node_id(&peer), now);
            }
            MeshEvent::ConnectionClosed { peer } => {
                self.machine.handle_disconnected(&node_id(&peer));
            }
            MeshEvent::NewListenAddr { addr } => {
                self.machine.handle_listen_addr(addr.to_string());
            }
        }
        let _ = self.drive(via).await;
        if changes {
            Wake::Now
        } else if reported {
            Wake::Soon
        } else {
            Wake::Due
        }
    }

    /// Whether the machine holds a report of `from` that it did not hold at the last call,
    /// with tasks that differ ([`fingerprint`]) from those of the one before: a task there
    /// started, stopped or changed its health.
    fn report_changed(&mut self, from: &NodeId) -> bool {
        let Some((report, _)) = self.machine.report_of(from) else {
            return false;
        };
        if self
            .report_fingerprints
            .get(from)
            .is_some_and(|(seq, _)| *seq == report.seq)
        {
            return false;
        }
        let latest = (report.seq, fingerprint(&report.tasks));
        let before = self.report_fingerprints.insert(from.clone(), latest);
        before.is_none_or(|(_, f)| f != latest.1)
    }

    async fn tick(&mut self, wiring: &Wiring) {
        let now = self.now();
        let machine = &self.machine;
        self.report_fingerprints
            .retain(|id, _| machine.report_of(id).is_some());
        if now.since(self.usage_read_at) >= USAGE_EVERY_MS {
            self.usage_read_at = now;
            self.machine.set_usage(crate::system::read_usage());
        }
        self.machine
            .set_local_status(wiring.local_status.borrow().clone());
        self.machine
            .set_engine_status(wiring.engine_status.borrow().clone());
        self.machine.set_images(wiring.images.borrow().clone());
        let overlay = wiring.overlay.status.borrow().clone();
        if let Some(crate::protocol::OverlayStatus::On { port, .. }) = overlay.as_ref() {
            // The port the interface got (any free one unless --overlay-port says which).
            if *port != 0 {
                self.machine.set_wireguard_port(*port);
            }
        }
        self.machine.set_overlay_status(overlay);
        self.machine
            .set_wall_clock(now, u64::try_from(super::wall_ms()).unwrap_or(0));
        self.machine.handle_tick(now);
        let _ = self.drive(Via::Other).await;
        let desired = self.machine.desired(now);
        let records = self.machine.state().secrets();
        wiring.secrets_tx.send_if_modified(|current| {
            if **current == records {
                false
            } else {
                *current = Arc::new(records);
                true
            }
        });
        wiring.desired_tx.send_if_modified(|current| {
            if current.as_ref() == Some(&desired) {
                false
            } else {
                *current = Some(desired);
                true
            }
        });
        self.publish_overlay_peers(wiring);
        let mut observed = super::metrics::Observed::default();
        if let Ok(stats) = self.mesh.stats().await {
            self.dropped_non_member = stats.dropped_non_member;
            self.connected_peers = stats.connected_peers.len();
            observed.dropped_non_member = stats.dropped_non_member;
            observed.dropped_overflow = stats.dropped_overflow;
            observed.dropped_rate_limited = stats.dropped_rate_limited;
            observed.incompatible_peers = stats.incompatible_peers;
            observed.dropped_direct_outbound = stats.dropped_direct_outbound;
            observed.failed_direct_outbound = stats.failed_direct_outbound;
            observed.connected_peers = stats.connected_peers.len() as u64;
        }
        let swim = self.machine.swim_stats();
        observed.swim_sent = swim.sent;
        observed.swim_received = swim.received;
        observed.swim_failed_probes = swim.failed_probes;
        let plum = self.machine.broadcast_tree().stats();
        observed.plum_delivered = plum.delivered;
        observed.plum_duplicates = plum.duplicates;
        observed.document_bytes = self.store.stored_bytes();
        observed.document_changes = self.applied.changes();
        observed.changes_applied = self.applied.counts();
        self.metrics.set_observed(observed);
        self.publish_snapshot(wiring);
    }

    /// Recomputes this node's WireGuard peers when the document changed since they were last
    /// computed, and hands them to the overlay task when they differ (nothing while no
    /// overlay task listens: `--no-overlay`, or no interface).
    fn publish_overlay_peers(&mut self, wiring: &Wiring) {
        if wiring.overlay.peers.is_closed() {
            return;
        }
        let heads = self.machine.state_mut().heads();
        if self.overlay_heads.as_ref() == Some(&heads) {
            return;
        }
        self.overlay_heads = Some(heads);
        let peers = self.machine.overlay_peers();
        wiring.overlay.peers.send_if_modified(|current| {
            if *current == peers {
                false
            } else {
                *current = peers;
                true
            }
        });
    }

    /// Rebuilds the API's view of this node and publishes it.
    fn publish_snapshot(&mut self, wiring: &Wiring) {
        let now = self.now();
        let snapshot = self
            .machine
            .snapshot(now, self.dropped_non_member, self.connected_peers);
        wiring.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_changed_task_list_brings_the_tick_forward_but_not_closer_than_the_gap() {
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let tick = tokio::time::sleep_until(far);
        tokio::pin!(tick);
        let last = tokio::time::Instant::now();

        wake_tick(tick.as_mut(), Wake::Due, last);
        assert_eq!(tick.deadline(), far);
        // A change right after a tick waits for the gap.
        wake_tick(tick.as_mut(), Wake::Soon, last);
        assert_eq!(tick.deadline(), last + CHANGE_TICK_GAP);
        // A tick due sooner already is not put off.
        let sooner = last + CHANGE_TICK_GAP / 2;
        tick.as_mut().reset(sooner);
        wake_tick(tick.as_mut(), Wake::Soon, last);
        assert_eq!(tick.deadline(), sooner);
        // Long after the last tick, a change ticks now.
        tick.as_mut().reset(far);
        let long_ago = last - Duration::from_secs(1);
        let before = tokio::time::Instant::now();
        wake_tick(tick.as_mut(), Wake::Soon, long_ago);
        let after = tokio::time::Instant::now();
        assert!(before <= tick.deadline() && tick.deadline() <= after);
        // A possible change of the document decides now, whatever the gap.
        tick.as_mut().reset(far);
        let last = tokio::time::Instant::now();
        wake_tick(tick.as_mut(), Wake::Now, last);
        let after = tokio::time::Instant::now();
        assert!(last <= tick.deadline() && tick.deadline() <= after);
    }
}
