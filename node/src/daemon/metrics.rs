//! `GET /metrics`: the node's metrics in the Prometheus text exposition format (0.0.4),
//! encoded by the `prometheus-client` crate, on the local API and (with an operator token)
//! on the remote one. README "Metrics" lists every series.
//!
//! Two kinds of figures:
//!
//! - **Counters** live in [`Metrics`], shared (`Arc`) with the parts that count: the reconcile
//!   loop (round durations, container actions, image pulls), the API's middleware (requests
//!   by route template and status) and the actor (gossip, sync and direct messages it hands to
//!   or takes from the mesh). Their label sets are fixed words, never text a peer or user
//!   chose.
//! - **State** is computed at scrape time by [`StateCollector`] from the same read model the
//!   CLI's `service ps` and `cluster status` read ([`Snapshot`]), and from the counters the
//!   mesh, failure detection, broadcast tree, store and applied-change record keep themselves,
//!   which the actor copies into [`Observed`] after every tick. Service names and the lease
//!   holder's member name (both stored in the desired state) are the only labels that come
//!   from it; a pending slot's reason is reduced to a fixed kind ([`pending_kind`]).

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::machine::Snapshot;

/// Upper bounds of the reconcile-duration buckets, in seconds: a round that only lists is a
/// few milliseconds; one that stops a container waits for its stop timeout (10 s by default).
const RECONCILE_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Labels of a container action: `action` is `start` (created and started), `restart` (a
/// stopped container started again), `stop` or `remove` (stopped and removed); `result` is
/// `ok` or `error`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    result: &'static str,
}

/// `result` of an image pull: `ok` or `error`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Labels of an API request: the listener (`local`, `remote`), the route template as the
/// router matched it (`/v1/services/{name}`; `unmatched` for none), the method (one of the
/// standard ones, else `other`) and the status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    listener: &'static str,
    route: String,
    method: &'static str,
    status: u16,
}

/// Labels of a message between members: `direction` (`sent`, `received`) and `kind`
/// (`gossip_changes`, `gossip_lease`, `direct`, `sync_request`, `sync_response`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: &'static str,
    kind: &'static str,
}

/// Counters kept by other parts of the node (the mesh, failure detection, the broadcast tree,
/// the store), as the actor last copied them: each is monotonic where it is kept, so it is
/// exposed as a counter. All zero until the first tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Mesh: messages and requests dropped because their author is not a member.
    pub(crate) dropped_non_member: u64,
    /// Mesh: messages and inbound requests dropped because the event channel was full.
    pub(crate) dropped_overflow: u64,
    /// Mesh: messages and requests of members over their rate limits.
    pub(crate) dropped_rate_limited: u64,
    /// Mesh: peers refused for another protocol version.
    pub(crate) incompatible_peers: u64,
    /// Mesh: outbound direct messages never sent (queue full, too many in flight).
    pub(crate) dropped_direct_outbound: u64,
    /// Mesh: outbound direct messages sent but not acknowledged.
    pub(crate) failed_direct_outbound: u64,
    /// Peers connected now (a gauge).
    pub(crate) connected_peers: u64,
    /// SWIM: messages queued to send.
    pub(crate) swim_sent: u64,
    /// SWIM: messages received from members.
    pub(crate) swim_received: u64,
    /// SWIM: probes that got no ack.
    pub(crate) swim_failed_probes: u64,
    /// Broadcast tree: messages delivered (first copies).
    pub(crate) plum_delivered: u64,
    /// Broadcast tree: copies received that were already delivered.
    pub(crate) plum_duplicates: u64,
    /// Bytes the store holds for the document (snapshot and log chunks; a gauge).
    pub(crate) document_bytes: u64,
    /// Changes in the document (a gauge: it only grows, but a restart re-reads it).
    pub(crate) document_changes: u64,
    /// Changes this replica took in since the node started, by how they came (the order of
    /// `Via::ALL`: local, gossip, sync, other).
    pub(crate) changes_applied: [u64; 4],
}

/// The node's metrics: counters the node's parts increment, and the registry that encodes
/// them with the state read at scrape time. Shared as `Arc<Metrics>`; every method takes
/// `&self` (the counters are atomic, [`Observed`] sits behind a mutex held for a copy).
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    reconcile_seconds: Histogram,
    container_actions: Family<ActionLabels, Counter>,
    image_pulls: Family<ResultLabels, Counter>,
    api_requests: Family<ApiLabels, Counter>,
    messages: Family<MessageLabels, Counter>,
    message_bytes: Family<MessageLabels, Counter>,
    observed: Arc<Mutex<Observed>>,
}

impl Metrics {
    /// Metrics whose state gauges read `snapshot` (the actor's latest view) at every scrape.
    pub(crate) fn new(snapshot: watch::Receiver<Arc<Snapshot>>) -> Self {
        let mut registry = Registry::with_prefix("warren");
        let reconcile_seconds = Histogram::new(RECONCILE_BUCKETS);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile round of this node (list, decide, act, list again)",
            Unit::Seconds,
            reconcile_seconds.clone(),
        );
        let container_actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "container_actions",
            "Container actions this node's reconcile loop took, by action (start: created and \
             started, restart: a stopped container started again, stop, remove) and result",
            container_actions.clone(),
        );
        let image_pulls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "image_pulls",
            "Image pulls this node finished, by result",
            image_pulls.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "HTTP API requests answered, by listener, route template, method and status",
            api_requests.clone(),
        );
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages between this node and its members that the node handed to the mesh \
             (sent) or took from it (received), by kind",
            messages.clone(),
        );
        let message_bytes = Family::<MessageLabels, Counter>::default();
        registry.register_with_unit(
            "message",
            "Payload bytes of the messages counted by warren_messages_total",
            Unit::Bytes,
            message_bytes.clone(),
        );
        let observed = Arc::new(Mutex::new(Observed::default()));
        registry.register_collector(Box::new(StateCollector {
            snapshot,
            observed: Arc::clone(&observed),
        }));
        Self {
            registry,
            reconcile_seconds,
            container_actions,
            image_pulls,
            api_requests,
            messages,
            message_bytes,
            observed,
        }
    }

    /// A reconcile round took `seconds`.
    pub(crate) fn observe_reconcile(&self, seconds: f64) {
        self.reconcile_seconds.observe(seconds);
    }

    /// A container action (`start`, `restart`, `stop`, `remove`) ended, well or not.
    pub(crate) fn container_action(&self, action: &'static str, ok: bool) {
        self.container_actions
            .get_or_create(&ActionLabels {
                action,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// An image pull ended, well or not.
    pub(crate) fn image_pull(&self, ok: bool) {
        self.image_pulls
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// A message of `kind` with `bytes` of payload went out (`sent`) or came in
    /// (`received`).
    pub(crate) fn message(&self, direction: &'static str, kind: &'static str, bytes: usize) {
        let labels = MessageLabels { direction, kind };
        self.messages.get_or_create(&labels).inc();
        self.message_bytes
            .get_or_create(&labels)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Replaces the counters other parts keep with their current values.
    pub(crate) fn set_observed(&self, observed: Observed) {
        *self.observed.lock().unwrap_or_else(PoisonError::into_inner) = observed;
    }

    /// Every series, in the Prometheus text format (version 0.0.4).
    ///
    /// Errors: only a formatting error of the encoder, which writes to a `String`.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut body, &self.registry)?;
        Ok(body)
    }

    fn api_request(&self, listener: &'static str, route: String, method: &Method, status: u16) {
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.api_requests
            .get_or_create(&ApiLabels {
                listener,
                route,
                method,
                status,
            })
            .inc();
    }
}

/// Which API a request came through, for [`count_requests`].
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    /// `local` or `remote`.
    pub(crate) name: &'static str,
    /// Where the requests are counted.
    pub(crate) metrics: Arc<Metrics>,
}

/// Middleware: counts every request by listener, matched route template (`unmatched` when no
/// route matched: never the raw path, which the client chose), method and final status
/// (refusals of the token check included when it runs inside this layer).
pub(crate) async fn count_requests(
    State(listener): State<Listener>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    listener
        .metrics
        .api_request(listener.name, route, &method, response.status().as_u16());
    response
}

/// `GET /metrics`: every series, with task states as fresh as `service ps` shows them.
pub(crate) async fn scrape(State(state): State<super::api::ApiState>) -> Response {
    // The same wait for members' reports as `service ps` (the scrape reads the published
    // snapshot, which this refreshes).
    let _ = super::api::with_reports(&state).await;
    match state.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response(),
    }
}

/// The kind of a pending slot's reason, a fixed word for the `reason` label (the reason
/// itself names images, labels and sizes: README "Metrics" lists the kinds). Reads the
/// scheduler's wording (`warren_core::core::scheduler`'s module doc lists it).
pub(crate) fn pending_kind(reason: &str) -> &'static str {
    if reason.starts_with("no live member") {
        "no_live_member"
    } else if reason.starts_with("image ") && reason.contains(" only (") {
        "image_platform"
    } else if reason.starts_with("max-replicas-per-node") {
        "max_replicas_per_node"
    } else if reason.starts_with("no node with") && reason.contains("GPU") {
        "gpus"
    } else if reason.starts_with("no node with") {
        "resources"
    } else if reason.starts_with("no node matches") {
        "constraints"
    } else if reason.contains("volume") || reason.contains("host paths") {
        "volumes"
    } else if reason.starts_with("not assigned") {
        "not_assigned"
    } else {
        "other"
    }
}

/// Encodes the series that describe state, at every scrape: from the latest [`Snapshot`]
/// and the [`Observed`] counters.
#[derive(Debug)]
struct StateCollector {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    observed: Arc<Mutex<Observed>>,
}

/// One family of constant values: name, help, unit, type, and its samples.
struct Series<'a> {
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, u64)>,
}

impl<'a> Series<'a> {
    fn gauge(name: &'a str, help: &'a str) -> Self {
        Self {
            name,
            help,
            unit: None,
            kind: MetricType::Gauge,
            samples: Vec::new(),
        }
    }

    fn counter(name: &'a str, help: &'a str) -> Self {
        Self {
            kind: MetricType::Counter,
            ..Self::gauge(name, help)
        }
    }

    fn unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    fn with(mut self, labels: Vec<(&'static str, String)>, value: u64) -> Self {
        self.samples.push((labels, value));
        self
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The registry ends its own metrics' help with a period: these read alike.
        let help = format!("{}.", self.help);
        let mut family =
            encoder.encode_descriptor(self.name, &help, self.unit.as_ref(), self.kind)?;
        for (labels, value) in &self.samples {
            let sample = family.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                _ => ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)).encode(sample)?,
            }
        }
        Ok(())
    }
}

/// Adds one to the count of `key` in `counts`, a list kept in first-seen order.
fn bump<K: PartialEq>(counts: &mut Vec<(K, u64)>, key: K) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

/// The state series of `s` and `o`, in the order they are encoded.
fn state_series(s: &Snapshot, o: &Observed) -> Vec<Series<'static>> {
    use crate::core::Liveness;
    let mut out = Vec::new();

    let mut members = Series::gauge(
        "members",
        "Members of the cluster (not removed) by liveness as this node sees them",
    );
    for (liveness, word) in [
        (Liveness::Alive, "alive"),
        (Liveness::Suspect, "suspect"),
        (Liveness::Down, "down"),
    ] {
        let n = s
            .members
            .iter()
            .filter(|m| m.state != warren_crdt::MemberState::Removed && m.liveness == liveness)
            .count();
        members = members.with(vec![("state", word.to_string())], n as u64);
    }
    out.push(members);

    let mut holder = Series::gauge(
        "lease_holder",
        "1 for the member that holds the lease as this node sees it (label node: its name)",
    );
    let mut epoch = Series::gauge(
        "lease_epoch",
        "Epoch of the lease in force as this node sees it",
    );
    if let Some(lease) = &s.lease {
        holder = holder.with(vec![("node", lease.holder_name.clone())], 1);
        epoch = epoch.with(vec![], lease.epoch.0);
    }
    out.push(holder);
    out.push(epoch);

    let mut services = Series::gauge("services", "Live services by mode");
    let mut by_mode = vec![("replicated", 0u64), ("global", 0u64)];
    let mut desired = Series::gauge(
        "service_desired_tasks",
        "Tasks each live service wants (replicas, or the eligible members of a global service)",
    );
    let mut rollout = Series::gauge(
        "service_rollout",
        "1 for each live service's last rollout, by its state (updating, rolling back, paused, \
         awaiting promotion, completed)",
    );
    for svc in s.live_services() {
        let mode = svc.spec.mode.as_str();
        if let Some((_, n)) = by_mode.iter_mut().find(|(m, _)| *m == mode) {
            *n += 1;
        }
        desired = desired.with(
            vec![("service", svc.name.to_string())],
            u64::from(super::api::desired_tasks(s, svc)),
        );
        if let Some(r) = &svc.rollout {
            rollout = rollout.with(
                vec![
                    ("service", svc.name.to_string()),
                    ("state", r.state_word().to_string()),
                ],
                1,
            );
        }
    }
    for (mode, n) in by_mode {
        services = services.with(vec![("mode", mode.to_string())], n);
    }
    out.push(services);
    out.push(desired);
    out.push(rollout);

    let mut tasks = Series::gauge(
        "tasks",
        "Tasks of live services (one per assigned slot) by service, actual state and health, \
         as their nodes last reported them",
    );
    let mut counts = Vec::new();
    for t in &s.tasks {
        bump(
            &mut counts,
            (t.service.to_string(), t.state.as_str(), t.health.as_str()),
        );
    }
    for ((service, state, health), n) in counts {
        tasks = tasks.with(
            vec![
                ("service", service),
                ("state", state.to_string()),
                ("health", health.to_string()),
            ],
            n,
        );
    }
    out.push(tasks);

    let mut pending = Series::gauge(
        "pending_slots",
        "Slots of live services the scheduler could not place, by service and kind of reason",
    );
    let mut counts = Vec::new();
    for (slot, why) in &s.pending {
        bump(&mut counts, (slot.service.to_string(), pending_kind(why)));
    }
    for ((service, reason), n) in counts {
        pending = pending.with(
            vec![("service", service), ("reason", reason.to_string())],
            n,
        );
    }
    out.push(pending);

    out.push(
        Series::gauge("connected_peers", "Peers connected to this node now")
            .with(vec![], o.connected_peers),
    );
    out.push(
        Series::counter(
            "mesh_dropped",
            "Messages and requests the mesh dropped, by reason (non_member: author not a \
             member; overflow: event queue full; rate_limited: member over its limits; \
             direct_outbound: outbound direct message never sent)",
        )
        .with(vec![("reason", "non_member".into())], o.dropped_non_member)
        .with(vec![("reason", "overflow".into())], o.dropped_overflow)
        .with(
            vec![("reason", "rate_limited".into())],
            o.dropped_rate_limited,
        )
        .with(
            vec![("reason", "direct_outbound".into())],
            o.dropped_direct_outbound,
        ),
    );
    out.push(
        Series::counter(
            "mesh_direct_failed",
            "Outbound direct messages sent but not acknowledged",
        )
        .with(vec![], o.failed_direct_outbound),
    );
    out.push(
        Series::counter(
            "mesh_incompatible_peers",
            "Peers refused because they speak another protocol version",
        )
        .with(vec![], o.incompatible_peers),
    );
    out.push(
        Series::counter(
            "swim_messages",
            "Failure-detection (SWIM) messages, by direction",
        )
        .with(vec![("direction", "sent".into())], o.swim_sent)
        .with(vec![("direction", "received".into())], o.swim_received),
    );
    out.push(
        Series::counter(
            "swim_failed_probes",
            "Probes that got no ack, directly or indirectly",
        )
        .with(vec![], o.swim_failed_probes),
    );
    out.push(
        Series::counter(
            "broadcast_received",
            "Changes received along the broadcast tree, by outcome (delivered: first copy; \
             duplicate: already delivered)",
        )
        .with(vec![("outcome", "delivered".into())], o.plum_delivered)
        .with(vec![("outcome", "duplicate".into())], o.plum_duplicates),
    );
    out.push(
        Series::gauge(
            "document_stored",
            "Bytes the store holds for the desired-state document (snapshot and log chunks)",
        )
        .unit(Unit::Bytes)
        .with(vec![], o.document_bytes),
    );
    out.push(
        Series::gauge("document_changes", "Changes in the desired-state document")
            .with(vec![], o.document_changes),
    );
    let mut applied = Series::counter(
        "document_changes_applied",
        "Changes this replica took in since the node started, by how they came (local: \
         written here; gossip; sync: anti-entropy or a join; other)",
    );
    for (via, n) in super::applied::Via::ALL.iter().zip(o.changes_applied) {
        applied = applied.with(vec![("via", via.as_str().to_string())], n);
    }
    out.push(applied);
    out
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.borrow().clone();
        let observed = *self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        for series in state_series(&snapshot, &observed) {
            series.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Capacity, Liveness, TaskHealth};
    use crate::machine::{LeaseStatus, MemberStatus, TaskView};
    use crate::protocol::TaskState;
    use warren_crdt::test_utils::{node_id, service_name, spec};
    use warren_crdt::{Epoch, MemberState, Service, SlotId};

    fn member(name: &str, liveness: Liveness, state: MemberState) -> MemberStatus {
        MemberStatus {
            id: node_id(name),
            name: name.into(),
            liveness,
            state,
            availability: Default::default(),
            stays: vec![],
            labels: Default::default(),
            capabilities: Default::default(),
            platform: Default::default(),
            addrs: vec![],
            api: String::new(),
            is_self: name == "a",
            tasks: 0,
            capacity: None,
            reserved: Capacity::default(),
            usage: None,
            gpus: vec![],
            gpu_holders: Default::default(),
            engine: None,
            overlay: None,
            overlay_state: None,
        }
    }

    fn task(service: &str, slot: u32, state: TaskState, health: TaskHealth) -> TaskView {
        TaskView {
            service: service_name(service),
            slot,
            node: node_id("a"),
            node_name: "a".into(),
            epoch: Epoch(1),
            state,
            status: String::new(),
            container: String::new(),
            ports: vec![],
            health,
            exit_code: None,
            restarts: 0,
            next_restart_ms: None,
            error: String::new(),
            overlay_ip: None,
            generation: 1,
        }
    }

    fn service(name: &str, replicas: u32) -> Service {
        Service {
            name: service_name(name),
            generation: 1,
            deleted: false,
            spec: spec("app:1", replicas),
            previous_spec: None,
            older_specs: Default::default(),
            rollout: None,
        }
    }

    /// Three members (one suspect, one removed), the lease at `b`, a service `web` of three
    /// replicas with two running (one healthy, one unhealthy) and one pending for memory, a
    /// deleted service, and some of the mesh's and the store's figures.
    fn fixed() -> (Snapshot, Observed) {
        let mut services = crate::core::Services::new();
        services.insert(service_name("web"), service("web", 3));
        let mut gone = service("old", 1);
        gone.deleted = true;
        services.insert(service_name("old"), gone);
        let snapshot = Snapshot {
            members: vec![
                member("a", Liveness::Alive, MemberState::Active),
                member("b", Liveness::Suspect, MemberState::Active),
                member("c", Liveness::Down, MemberState::Removed),
            ],
            lease: Some(LeaseStatus {
                holder: node_id("b"),
                holder_name: "b".into(),
                epoch: Epoch(7),
            }),
            services,
            tasks: vec![
                task("web", 0, TaskState::Running, TaskHealth::Healthy),
                task("web", 1, TaskState::Running, TaskHealth::Unhealthy),
            ],
            pending: vec![(
                SlotId {
                    service: service_name("web"),
                    slot: 2,
                },
                "no node with 2 GiB free memory".into(),
            )],
            ..Snapshot::default()
        };
        let observed = Observed {
            dropped_non_member: 4,
            dropped_overflow: 1,
            connected_peers: 2,
            swim_sent: 10,
            swim_received: 9,
            plum_delivered: 3,
            document_bytes: 2048,
            document_changes: 12,
            changes_applied: [2, 3, 1, 0],
            ..Observed::default()
        };
        (snapshot, observed)
    }

    #[test]
    fn encodes_a_fixed_state_in_the_text_format() {
        let (snapshot, observed) = fixed();
        let (_tx, rx) = watch::channel(Arc::new(snapshot));
        let metrics = Metrics::new(rx);
        metrics.set_observed(observed);
        metrics.observe_reconcile(0.02);
        metrics.observe_reconcile(3.0);
        metrics.container_action("start", true);
        metrics.container_action("start", true);
        metrics.container_action("stop", false);
        metrics.image_pull(true);
        metrics.message("sent", "gossip_changes", 300);
        metrics.message("sent", "gossip_changes", 200);
        metrics.message("received", "sync_request", 50);
        metrics.api_request("local", "/v1/services/{name}".into(), &Method::GET, 200);
        metrics.api_request(
            "remote",
            "unmatched".into(),
            &Method::from_bytes(b"BREW").expect("method"),
            401,
        );
        let body = metrics.encode().expect("encode");
        assert_eq!(canonical(&body), canonical(FIXED), "{body}");
    }

    /// `body` with the samples of each family sorted (a family's label sets come out of a
    /// hash map in any order); comments stay where they are.
    fn canonical(body: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut samples: Vec<String> = Vec::new();
        for line in body.lines() {
            if line.starts_with('#') {
                samples.sort();
                out.append(&mut samples);
                out.push(line.to_string());
            } else {
                samples.push(line.to_string());
            }
        }
        samples.sort();
        out.append(&mut samples);
        out
    }

    /// What [`encodes_a_fixed_state_in_the_text_format`] must produce.
    const FIXED: &str = r#"# HELP warren_reconcile_duration_seconds Duration of one reconcile round of this node (list, decide, act, list again).
# TYPE warren_reconcile_duration_seconds histogram
warren_reconcile_duration_seconds_bucket{le="0.005"} 0
warren_reconcile_duration_seconds_bucket{le="0.01"} 0
warren_reconcile_duration_seconds_bucket{le="0.025"} 1
warren_reconcile_duration_seconds_bucket{le="0.05"} 1
warren_reconcile_duration_seconds_bucket{le="0.1"} 1
warren_reconcile_duration_seconds_bucket{le="0.25"} 1
warren_reconcile_duration_seconds_bucket{le="0.5"} 1
warren_reconcile_duration_seconds_bucket{le="1"} 1
warren_reconcile_duration_seconds_bucket{le="2.5"} 1
warren_reconcile_duration_seconds_bucket{le="5"} 2
warren_reconcile_duration_seconds_bucket{le="10"} 2
warren_reconcile_duration_seconds_bucket{le="30"} 2
warren_reconcile_duration_seconds_bucket{le="+Inf"} 2
warren_reconcile_duration_seconds_sum 3.02
warren_reconcile_duration_seconds_count 2
# HELP warren_container_actions_total Container actions this node's reconcile loop took, by action (start: created and started, restart: a stopped container started again, stop, remove) and result.
# TYPE warren_container_actions_total counter
warren_container_actions_total{action="start",result="ok"} 2
warren_container_actions_total{action="stop",result="error"} 1
# HELP warren_image_pulls_total Image pulls this node finished, by result.
# TYPE warren_image_pulls_total counter
warren_image_pulls_total{result="ok"} 1
# HELP warren_api_requests_total HTTP API requests answered, by listener, route template, method and status.
# TYPE warren_api_requests_total counter
warren_api_requests_total{listener="local",route="/v1/services/{name}",method="GET",status="200"} 1
warren_api_requests_total{listener="remote",route="unmatched",method="other",status="401"} 1
# HELP warren_messages_total Messages between this node and its members that the node handed to the mesh (sent) or took from it (received), by kind.
# TYPE warren_messages_total counter
warren_messages_total{direction="sent",kind="gossip_changes"} 2
warren_messages_total{direction="received",kind="sync_request"} 1
# HELP warren_message_bytes_total Payload bytes of the messages counted by warren_messages_total.
# TYPE warren_message_bytes_total counter
warren_message_bytes_total{direction="sent",kind="gossip_changes"} 500
warren_message_bytes_total{direction="received",kind="sync_request"} 50
# HELP warren_members Members of the cluster (not removed) by liveness as this node sees them.
# TYPE warren_members gauge
warren_members{state="alive"} 1
warren_members{state="suspect"} 1
warren_members{state="down"} 0
# HELP warren_lease_holder 1 for the member that holds the lease as this node sees it (label node: its name).
# TYPE warren_lease_holder gauge
warren_lease_holder{node="b"} 1
# HELP warren_lease_epoch Epoch of the lease in force as this node sees it.
# TYPE warren_lease_epoch gauge
warren_lease_epoch 7
# HELP warren_services Live services by mode.
# TYPE warren_services gauge
warren_services{mode="replicated"} 1
warren_services{mode="global"} 0
# HELP warren_service_desired_tasks Tasks each live service wants (replicas, or the eligible members of a global service).
# TYPE warren_service_desired_tasks gauge
warren_service_desired_tasks{service="web"} 3
# HELP warren_service_rollout 1 for each live service's last rollout, by its state (updating, rolling back, paused, awaiting promotion, completed).
# TYPE warren_service_rollout gauge
# HELP warren_tasks Tasks of live services (one per assigned slot) by service, actual state and health, as their nodes last reported them.
# TYPE warren_tasks gauge
warren_tasks{service="web",state="running",health="healthy"} 1
warren_tasks{service="web",state="running",health="unhealthy"} 1
# HELP warren_pending_slots Slots of live services the scheduler could not place, by service and kind of reason.
# TYPE warren_pending_slots gauge
warren_pending_slots{service="web",reason="resources"} 1
# HELP warren_connected_peers Peers connected to this node now.
# TYPE warren_connected_peers gauge
warren_connected_peers 2
# HELP warren_mesh_dropped_total Messages and requests the mesh dropped, by reason (non_member: author not a member; overflow: event queue full; rate_limited: member over its limits; direct_outbound: outbound direct message never sent).
# TYPE warren_mesh_dropped_total counter
warren_mesh_dropped_total{reason="non_member"} 4
warren_mesh_dropped_total{reason="overflow"} 1
warren_mesh_dropped_total{reason="rate_limited"} 0
warren_mesh_dropped_total{reason="direct_outbound"} 0
# HELP warren_mesh_direct_failed_total Outbound direct messages sent but not acknowledged.
# TYPE warren_mesh_direct_failed_total counter
warren_mesh_direct_failed_total 0
# HELP warren_mesh_incompatible_peers_total Peers refused because they speak another protocol version.
# TYPE warren_mesh_incompatible_peers_total counter
warren_mesh_incompatible_peers_total 0
# HELP warren_swim_messages_total Failure-detection (SWIM) messages, by direction.
# TYPE warren_swim_messages_total counter
warren_swim_messages_total{direction="sent"} 10
warren_swim_messages_total{direction="received"} 9
# HELP warren_swim_failed_probes_total Probes that got no ack, directly or indirectly.
# TYPE warren_swim_failed_probes_total counter
warren_swim_failed_probes_total 0
# HELP warren_broadcast_received_total Changes received along the broadcast tree, by outcome (delivered: first copy; duplicate: already delivered).
# TYPE warren_broadcast_received_total counter
warren_broadcast_received_total{outcome="delivered"} 3
warren_broadcast_received_total{outcome="duplicate"} 0
# HELP warren_document_stored_bytes Bytes the store holds for the desired-state document (snapshot and log chunks).
# TYPE warren_document_stored_bytes gauge
warren_document_stored_bytes 2048
# HELP warren_document_changes Changes in the desired-state document.
# TYPE warren_document_changes gauge
warren_document_changes 12
# HELP warren_document_changes_applied_total Changes this replica took in since the node started, by how they came (local: written here; gossip; sync: anti-entropy or a join; other).
# TYPE warren_document_changes_applied_total counter
warren_document_changes_applied_total{via="local"} 2
warren_document_changes_applied_total{via="gossip"} 3
warren_document_changes_applied_total{via="sync"} 1
warren_document_changes_applied_total{via="other"} 0
"#;

    #[test]
    fn pending_reasons_reduce_to_fixed_kinds() {
        for (reason, kind) in [
            ("no live member to run it", "no_live_member"),
            ("no live member to run it (b: drain)", "no_live_member"),
            ("no node matches node.labels.zone==x", "constraints"),
            (
                "max-replicas-per-node 1 reached on every matching node (2)",
                "max_replicas_per_node",
            ),
            (
                "image app:1 is linux/amd64 only (node.arch=arm64)",
                "image_platform",
            ),
            ("no node with 1 free GPU", "gpus"),
            ("no node with 2 free GPUs", "gpus"),
            ("no node with 2 GiB free memory", "resources"),
            ("no node with 3 CPUs free", "resources"),
            ("waits for volume data on node b", "volumes"),
            (
                "no live node allows host paths (--allow-host-paths)",
                "volumes",
            ),
            ("not assigned to a node yet", "not_assigned"),
            ("something new", "other"),
        ] {
            assert_eq!(pending_kind(reason), kind, "{reason}");
        }
    }
}
