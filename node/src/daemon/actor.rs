//! The node actor: owns the replica of the desired state, its store and the decision core, and
//! drives them from mesh events, API commands and timers. Everything else talks to it through
//! bounded channels; reads go through a published [`Snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use warren_crdt::{
    Assignment, ClusterInfo, CrdtError, DesiredState, Epoch, HistoryEntry, Member, MemberState,
    NodeId, Service, ServiceName, ServiceSpec, SlotId, Store, SyncState,
};
use warren_mesh::{
    MeshEvent, MeshHandle, Multiaddr, PeerId, ReplyHandle, RequestKind, Response, Topic,
};

use super::protocol::{self, Heartbeat, JoinRequest, TaskStatus, MAX_HEARTBEAT_TASKS};
use super::token::JoinToken;
use super::NodeError;
use crate::core::{Action, ClusterView, Core, DesiredTask, Liveness, Millis};

/// Most rounds of one sync dialogue; a dialogue that needs more resumes at the next
/// anti-entropy round.
const MAX_SYNC_ROUNDS: u32 = 32;

/// Timers of the actor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timers {
    pub(crate) tick: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) anti_entropy: Duration,
}

/// A write or a question from the API. Each carries its reply channel.
#[derive(Debug)]
pub(crate) enum Command {
    CreateService {
        name: ServiceName,
        spec: ServiceSpec,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    ScaleService {
        name: ServiceName,
        replicas: u32,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    DeleteService {
        name: ServiceName,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    CreateJoinToken {
        ttl_secs: u64,
        reply: oneshot::Sender<Result<String, WriteError>>,
    },
    /// The newest `limit` changes, oldest first; only those touching `service` if given.
    History {
        service: Option<ServiceName>,
        limit: usize,
        reply: oneshot::Sender<Vec<HistoryEntry>>,
    },
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
}

impl From<CrdtError> for WriteError {
    fn from(e: CrdtError) -> Self {
        match e {
            CrdtError::UnknownService(_) | CrdtError::UnknownMember(_) => {
                WriteError::NotFound(e.to_string())
            }
            CrdtError::ServiceExists(_) => WriteError::Conflict(e.to_string()),
            CrdtError::InvalidName { .. } => WriteError::Invalid(e.to_string()),
            other => WriteError::Internal(other.to_string()),
        }
    }
}

/// A member as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemberStatus {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) liveness: Liveness,
    pub(crate) state: MemberState,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) addrs: Vec<String>,
    pub(crate) api: String,
    pub(crate) is_self: bool,
    pub(crate) tasks: usize,
}

/// The lease as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LeaseStatus {
    pub(crate) holder: NodeId,
    pub(crate) holder_name: String,
    pub(crate) epoch: Epoch,
}

/// One task: its assignment and the actual state its node last reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskView {
    pub(crate) service: ServiceName,
    pub(crate) slot: u32,
    pub(crate) node: NodeId,
    pub(crate) node_name: String,
    pub(crate) epoch: Epoch,
    pub(crate) state: String,
    pub(crate) status: String,
    pub(crate) container: String,
    pub(crate) ports: Vec<warren_runtime::PublishedPort>,
}

/// What the API reads: a consistent picture of this node's view, rebuilt every tick.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Snapshot {
    pub(crate) node: Option<NodeId>,
    pub(crate) name: String,
    pub(crate) cluster: Option<ClusterInfo>,
    pub(crate) lease: Option<LeaseStatus>,
    pub(crate) members: Vec<MemberStatus>,
    pub(crate) services: Vec<Service>,
    pub(crate) tasks: Vec<TaskView>,
    pub(crate) dropped_non_member: u64,
    pub(crate) connected_peers: usize,
    pub(crate) heads: Vec<String>,
}

/// Result of one outbound sync request, fed back into the actor.
struct SyncReply {
    peer: PeerId,
    result: Result<Response, warren_mesh::MeshError>,
}

/// Channels the actor is wired to.
pub(crate) struct Wiring {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Receiver<MeshEvent>,
    pub(crate) desired_tx: watch::Sender<Option<Vec<DesiredTask>>>,
    pub(crate) local_status: watch::Receiver<Vec<TaskStatus>>,
    pub(crate) snapshot_tx: watch::Sender<Arc<Snapshot>>,
}

/// The node actor. See the module doc.
pub(crate) struct NodeActor {
    me: NodeId,
    name: String,
    api: String,
    state: DesiredState,
    store: Store,
    core: Core,
    origin: Instant,
    mesh: MeshHandle,
    listen_addrs: Vec<Multiaddr>,
    members_in_mesh: HashMap<PeerId, Vec<Multiaddr>>,
    heartbeats: HashMap<NodeId, Heartbeat>,
    outbound_sync: HashMap<PeerId, (SyncState, u32)>,
    inbound_sync: HashMap<PeerId, SyncState>,
    sync_tx: mpsc::Sender<SyncReply>,
    sync_rx: mpsc::Receiver<SyncReply>,
    dropped_non_member: u64,
    connected_peers: usize,
    heartbeat_seq: u64,
}

fn wall_secs() -> i64 {
    super::wall_ms() / 1000
}

impl NodeActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: NodeId,
        name: String,
        api: String,
        state: DesiredState,
        store: Store,
        core: Core,
        origin: Instant,
        mesh: MeshHandle,
        listen_addrs: Vec<Multiaddr>,
    ) -> Self {
        let (sync_tx, sync_rx) = mpsc::channel(64);
        Self {
            me,
            name,
            api,
            state,
            store,
            core,
            origin,
            mesh,
            listen_addrs,
            members_in_mesh: HashMap::new(),
            heartbeats: HashMap::new(),
            outbound_sync: HashMap::new(),
            inbound_sync: HashMap::new(),
            sync_tx,
            sync_rx,
            dropped_non_member: 0,
            connected_peers: 0,
            heartbeat_seq: 0,
        }
    }

    fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }

    /// Runs until `cancel` fires or the mesh stops. Persists and flushes on the way out.
    pub(crate) async fn run(
        mut self,
        mut wiring: Wiring,
        timers: Timers,
        cancel: CancellationToken,
    ) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(timers.tick);
        let mut heartbeat = tokio::time::interval(timers.heartbeat);
        let mut anti_entropy = tokio::time::interval(timers.anti_entropy);
        for t in [&mut tick, &mut heartbeat, &mut anti_entropy] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let result = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                Some(command) = wiring.commands.recv() => self.handle_command(command).await,
                event = wiring.events.recv() => match event {
                    Some(event) => self.handle_mesh_event(event).await,
                    None => break Err(NodeError::MeshStopped),
                },
                Some(reply) = self.sync_rx.recv() => self.handle_sync_reply(reply),
                _ = tick.tick() => self.tick(&wiring).await,
                _ = heartbeat.tick() => self.send_heartbeat(&wiring).await,
                _ = anti_entropy.tick() => self.anti_entropy(),
            }
        };
        if let Err(e) = self.store.persist(&mut self.state, true) {
            warn!(error = %e, "could not persist the desired state on shutdown");
        }
        self.mesh.shutdown().await;
        result
    }

    /// Persists (flushing when `flush`) and gossips `change`. A write is acknowledged only after
    /// this returns Ok with `flush` set.
    async fn commit_local(&mut self, change: Vec<u8>, flush: bool) -> Result<(), WriteError> {
        self.store
            .persist(&mut self.state, flush)
            .map_err(|e| WriteError::Internal(format!("write not persisted: {e}")))?;
        if !change.is_empty() {
            if let Err(e) = self.mesh.publish(Topic::Changes, change).await {
                debug!(error = %e, "gossip of a change failed; anti-entropy will carry it");
            }
        }
        Ok(())
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::CreateService { name, spec, reply } => {
                let result = match self.state.create_service(&name, &spec) {
                    Ok(change) => self.commit_local(change, true).await,
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            Command::ScaleService {
                name,
                replicas,
                reply,
            } => {
                let result = match self.state.scale_service(&name, replicas) {
                    Ok(change) => self.commit_local(change, true).await,
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            Command::DeleteService { name, reply } => {
                let result = match self.state.delete_service(&name) {
                    Ok(change) => self.commit_local(change, true).await,
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            Command::CreateJoinToken { ttl_secs, reply } => {
                let _ = reply.send(self.create_join_token(ttl_secs).await);
            }
            Command::History {
                service,
                limit,
                reply,
            } => {
                let mut entries = match service {
                    Some(service) => self.state.service_history(&service, limit),
                    None => {
                        let mut all = self.state.history();
                        all.reverse();
                        all.truncate(limit);
                        all
                    }
                };
                entries.reverse();
                let _ = reply.send(entries);
            }
        }
    }

    async fn create_join_token(&mut self, ttl_secs: u64) -> Result<String, WriteError> {
        let cluster = self
            .state
            .cluster()
            .ok_or_else(|| WriteError::Internal("this node holds no cluster".into()))?;
        let bootstrap = self.my_addrs();
        if bootstrap.is_empty() {
            return Err(WriteError::Internal(
                "this node is not listening on any address yet".into(),
            ));
        }
        let (token, record) = JoinToken::mint(&cluster.id, bootstrap, wall_secs(), ttl_secs);
        let change = self.state.add_token(&record)?;
        self.commit_local(change, true).await?;
        Ok(token.encode())
    }

    /// This node's listen addresses with `/p2p/<id>`, as text.
    fn my_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .listen_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", self.me))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    async fn handle_mesh_event(&mut self, event: MeshEvent) {
        match event {
            MeshEvent::Gossip {
                topic: Topic::Changes,
                source,
                data,
            } => {
                if let Err(e) = self.state.apply_change(&data) {
                    debug!(%source, error = %e, "dropping a malformed change");
                    return;
                }
                if let Err(e) = self.store.persist(&mut self.state, false) {
                    warn!(error = %e, "could not persist a received change");
                }
            }
            MeshEvent::Gossip {
                topic: Topic::Heartbeat,
                source,
                data,
            } => match serde_json::from_slice::<Heartbeat>(&data) {
                Ok(mut hb) => {
                    hb.tasks.truncate(MAX_HEARTBEAT_TASKS);
                    let from = NodeId(source.to_string());
                    let now = self.now();
                    self.core
                        .handle_heartbeat(&from, hb.held_lease.map(Epoch), now);
                    self.heartbeats.insert(from, hb);
                }
                Err(e) => debug!(%source, error = %e, "dropping a malformed heartbeat"),
            },
            MeshEvent::Request {
                peer,
                kind,
                body,
                reply,
            } => self.handle_request(peer, kind, body, reply).await,
            MeshEvent::ConnectionEstablished { peer, .. } => {
                if self.is_member(&peer) {
                    self.start_sync(peer);
                }
            }
            MeshEvent::ConnectionClosed { peer } => {
                self.inbound_sync.remove(&peer);
            }
            MeshEvent::NewListenAddr { addr } => {
                if !self.listen_addrs.contains(&addr) {
                    self.listen_addrs.push(addr);
                }
            }
        }
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.members_in_mesh.contains_key(peer)
    }

    async fn handle_request(
        &mut self,
        peer: PeerId,
        kind: RequestKind,
        body: Vec<u8>,
        reply: ReplyHandle,
    ) {
        let response = match kind {
            RequestKind::Sync => self.handle_inbound_sync(peer, &body),
            RequestKind::Join => self.handle_join(peer, &body).await,
        };
        if let Err(e) = self.mesh.respond(reply, response).await {
            debug!(%peer, error = %e, "could not respond");
        }
    }

    fn handle_inbound_sync(&mut self, peer: PeerId, body: &[u8]) -> Response {
        let Some((reset, message)) = protocol::decode_sync(body) else {
            return Response::Refused("empty sync request".into());
        };
        if reset {
            self.inbound_sync.insert(peer, SyncState::new());
        }
        let state = self.inbound_sync.entry(peer).or_default();
        if let Some(message) = message {
            if let Err(e) = self.state.receive_sync_message(state, message) {
                debug!(%peer, error = %e, "bad sync message");
                self.inbound_sync.remove(&peer);
                return Response::Refused(format!("bad sync message: {e}"));
            }
            if let Err(e) = self.store.persist(&mut self.state, false) {
                warn!(error = %e, "could not persist synced changes");
            }
        }
        let state = self.inbound_sync.entry(peer).or_default();
        let reply = self.state.generate_sync_message(state);
        Response::Ok(protocol::encode_sync(false, reply))
    }

    async fn handle_join(&mut self, peer: PeerId, body: &[u8]) -> Response {
        match self.admit(peer, body).await {
            Ok(doc) => Response::Ok(doc),
            Err(reason) => {
                info!(%peer, %reason, "join refused");
                Response::Refused(reason)
            }
        }
    }

    /// Checks a join request and admits its sender. Returns the whole document to send back.
    async fn admit(&mut self, peer: PeerId, body: &[u8]) -> Result<Vec<u8>, String> {
        let request: JoinRequest =
            serde_json::from_slice(body).map_err(|_| "malformed join request".to_string())?;
        let token = JoinToken::decode(&request.token).map_err(|e| e.to_string())?;
        let cluster = self
            .state
            .cluster()
            .ok_or_else(|| "this peer holds no cluster".to_string())?;
        if token.cluster_id != cluster.id {
            return Err("join token is for another cluster".into());
        }
        let id = NodeId(peer.to_string());
        let already = self
            .state
            .members()
            .get(&id)
            .is_some_and(|m| m.state == MemberState::Active);
        if !already {
            token.check(self.state.tokens().get(&token.token_id), wall_secs())?;
            if request.name.is_empty() || request.name.len() > 63 || request.labels.len() > 64 {
                return Err("name must be 1-63 characters and labels at most 64".into());
            }
            let suffix = format!("/p2p/{peer}");
            let addrs: Vec<String> = request
                .addrs
                .into_iter()
                .filter(|a| a.len() < 256 && a.parse::<Multiaddr>().is_ok() && a.ends_with(&suffix))
                .take(16)
                .collect();
            let member = Member {
                id,
                name: request.name,
                addrs,
                labels: request.labels,
                admitted_by: self.me.clone(),
                admitted_at: wall_secs() * 1000,
                state: MemberState::Active,
            };
            let change = self
                .state
                .admit_with_token(&token.token_id, &member)
                .map_err(|e| e.to_string())?;
            self.commit_local(change, true)
                .await
                .map_err(|e| e.to_string())?;
            info!(node = %member.name, peer = %peer, "admitted a new member");
            self.refresh_mesh_members().await;
        }
        Ok(self.state.save())
    }

    /// Starts a sync dialogue with `peer` unless one is running.
    fn start_sync(&mut self, peer: PeerId) {
        if self.outbound_sync.contains_key(&peer) {
            return;
        }
        let mut state = SyncState::new();
        let message = self.state.generate_sync_message(&mut state);
        self.outbound_sync.insert(peer, (state, 1));
        self.send_sync(peer, protocol::encode_sync(true, message));
    }

    fn send_sync(&self, peer: PeerId, body: Vec<u8>) {
        let mesh = self.mesh.clone();
        let tx = self.sync_tx.clone();
        tokio::spawn(
            async move {
                let result = mesh.request(peer, RequestKind::Sync, body).await;
                let _ = tx.send(SyncReply { peer, result }).await;
            }
            .in_current_span(),
        );
    }

    fn handle_sync_reply(&mut self, reply: SyncReply) {
        let peer = reply.peer;
        let Some((mut state, rounds)) = self.outbound_sync.remove(&peer) else {
            return;
        };
        let body = match reply.result {
            Ok(Response::Ok(body)) => body,
            Ok(Response::Refused(reason)) => {
                debug!(%peer, %reason, "sync refused");
                return;
            }
            Err(e) => {
                debug!(%peer, error = %e, "sync request failed");
                return;
            }
        };
        let Some((_, message)) = protocol::decode_sync(&body) else {
            return;
        };
        let got_message = message.is_some();
        if let Some(message) = message {
            if let Err(e) = self.state.receive_sync_message(&mut state, message) {
                debug!(%peer, error = %e, "bad sync reply");
                return;
            }
            if let Err(e) = self.store.persist(&mut self.state, false) {
                warn!(error = %e, "could not persist synced changes");
            }
        }
        let next = self.state.generate_sync_message(&mut state);
        if (next.is_none() && !got_message) || rounds >= MAX_SYNC_ROUNDS {
            return;
        }
        self.outbound_sync.insert(peer, (state, rounds + 1));
        self.send_sync(peer, protocol::encode_sync(false, next));
    }

    /// Anti-entropy: one sync dialogue with a random connected member.
    fn anti_entropy(&mut self) {
        let peers: Vec<PeerId> = self
            .members_in_mesh
            .keys()
            .filter(|p| p.to_string() != self.me.as_str())
            .copied()
            .collect();
        if peers.is_empty() {
            return;
        }
        let pick = peers[rand::random::<usize>() % peers.len()];
        self.start_sync(pick);
    }

    /// Tells the mesh who the members are, when that changed.
    async fn refresh_mesh_members(&mut self) {
        let members: HashMap<PeerId, Vec<Multiaddr>> = self
            .state
            .members()
            .into_values()
            .filter(|m| m.state != MemberState::Removed)
            .filter_map(|m| {
                let peer: PeerId = m.id.as_str().parse().ok()?;
                let addrs = m.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                Some((peer, addrs))
            })
            .collect();
        if members != self.members_in_mesh {
            if let Err(e) = self.mesh.set_members(members.clone()).await {
                warn!(error = %e, "could not update the mesh's member set");
                return;
            }
            self.members_in_mesh = members;
        }
    }

    fn view(&self) -> ClusterView {
        ClusterView::read(&self.state)
    }

    async fn tick(&mut self, wiring: &Wiring) {
        let now = self.now();
        let view = self.view();
        for action in self.core.tick(&view, now) {
            let change = match &action {
                Action::ClaimLease(lease) => {
                    info!(epoch = %lease.epoch, "claiming the scheduling lease");
                    self.state.claim_lease(lease).map(Some)
                }
                Action::WriteAssignments(plan) => {
                    debug!(
                        placed = plan.put.len(),
                        removed = plan.remove.len(),
                        "scheduling"
                    );
                    self.state.write_assignments(&plan.put, &plan.remove)
                }
            };
            match change {
                Ok(Some(change)) => {
                    if let Err(e) = self.commit_local(change, true).await {
                        warn!(error = %e, "could not persist a scheduling decision");
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "could not write a scheduling decision"),
            }
        }
        self.refresh_mesh_members().await;
        self.refresh_own_addrs().await;

        let view = self.view();
        let desired = view.desired_tasks(&self.me);
        wiring.desired_tx.send_if_modified(|current| {
            if current.as_ref() == Some(&desired) {
                false
            } else {
                *current = Some(desired);
                true
            }
        });
        if let Ok(stats) = self.mesh.stats().await {
            self.dropped_non_member = stats.dropped_non_member;
            self.connected_peers = stats.connected_peers.len();
        }
        let snapshot = self.snapshot(&view, &wiring.local_status.borrow(), now);
        wiring.snapshot_tx.send_replace(Arc::new(snapshot));
    }

    /// Keeps this member's addresses in the document current (a restart may bring new ports).
    async fn refresh_own_addrs(&mut self) {
        let mine = self.my_addrs();
        if mine.is_empty() {
            return;
        }
        let recorded = self.state.members().get(&self.me).map(|m| m.addrs.clone());
        if recorded.is_some_and(|r| r != mine) {
            match self.state.set_member_addrs(&self.me, &mine) {
                Ok(change) => {
                    if let Err(e) = self.commit_local(change, true).await {
                        warn!(error = %e, "could not persist new addresses");
                    }
                }
                Err(e) => warn!(error = %e, "could not record new addresses"),
            }
        }
    }

    async fn send_heartbeat(&mut self, wiring: &Wiring) {
        let mut tasks = wiring.local_status.borrow().clone();
        tasks.truncate(MAX_HEARTBEAT_TASKS);
        self.heartbeat_seq += 1;
        let heartbeat = Heartbeat {
            seq: self.heartbeat_seq,
            name: self.name.clone(),
            held_lease: self
                .state
                .lease()
                .filter(|l| l.holder == self.me)
                .map(|l| l.epoch.0),
            api: self.api.clone(),
            tasks,
        };
        match serde_json::to_vec(&heartbeat) {
            Ok(bytes) => {
                if let Err(e) = self.mesh.publish(Topic::Heartbeat, bytes).await {
                    debug!(error = %e, "heartbeat not sent");
                }
            }
            Err(e) => warn!(error = %e, "could not encode a heartbeat"),
        }
    }

    fn snapshot(&mut self, view: &ClusterView, local: &[TaskStatus], now: Millis) -> Snapshot {
        let name_of = |id: &NodeId| {
            view.members
                .get(id)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| id.short().to_string())
        };
        let mut per_node: HashMap<&NodeId, usize> = HashMap::new();
        for a in view.assignments.values() {
            *per_node.entry(&a.node).or_default() += 1;
        }
        let members = view
            .members
            .values()
            .map(|m| MemberStatus {
                id: m.id.clone(),
                name: m.name.clone(),
                liveness: self.core.liveness(&m.id, now),
                state: m.state,
                labels: m.labels.clone(),
                addrs: m.addrs.clone(),
                api: if m.id == self.me {
                    self.api.clone()
                } else {
                    self.heartbeats
                        .get(&m.id)
                        .map(|h| h.api.clone())
                        .unwrap_or_default()
                },
                is_self: m.id == self.me,
                tasks: per_node.get(&m.id).copied().unwrap_or(0),
            })
            .collect();
        let tasks = view
            .assignments
            .iter()
            .filter(|(slot, _)| view.services.get(&slot.service).is_some_and(|s| !s.deleted))
            .map(|(slot, a)| self.task_view(slot, a, local, &name_of(&a.node)))
            .collect();
        Snapshot {
            node: Some(self.me.clone()),
            name: self.name.clone(),
            cluster: self.state.cluster(),
            lease: view.lease.as_ref().map(|l| LeaseStatus {
                holder: l.holder.clone(),
                holder_name: name_of(&l.holder),
                epoch: l.epoch,
            }),
            members,
            services: view
                .services
                .values()
                .filter(|s| !s.deleted)
                .cloned()
                .collect(),
            tasks,
            dropped_non_member: self.dropped_non_member,
            connected_peers: self.connected_peers,
            heads: self.state.heads(),
        }
    }

    fn task_view(
        &self,
        slot: &SlotId,
        a: &Assignment,
        local: &[TaskStatus],
        node_name: &str,
    ) -> TaskView {
        let reported: Option<&TaskStatus> = if a.node == self.me {
            local.iter().find(|t| matches(t, slot))
        } else {
            self.heartbeats
                .get(&a.node)
                .and_then(|h| h.tasks.iter().find(|t| matches(t, slot)))
        };
        TaskView {
            service: slot.service.clone(),
            slot: slot.slot,
            node: a.node.clone(),
            node_name: node_name.to_string(),
            epoch: a.epoch,
            state: reported.map_or_else(|| "unknown".into(), |t| t.state.clone()),
            status: reported.map_or_else(
                || "no report from its node yet".into(),
                |t| t.status.clone(),
            ),
            container: reported.map(|t| t.container.clone()).unwrap_or_default(),
            ports: reported.map(|t| t.ports.clone()).unwrap_or_default(),
        }
    }
}

fn matches(t: &TaskStatus, slot: &SlotId) -> bool {
    t.service == slot.service.as_str() && t.slot == slot.slot
}
