//! The HTTP API every peer serves (JSON). Reads come from the actor's latest [`Snapshot`];
//! writes go to the actor and are acknowledged only once persisted and flushed.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/status` | cluster, this node, lease, members with liveness |
//! | `GET /v1/nodes` | members with liveness and task counts |
//! | `POST /v1/join-tokens` `{ttl_secs?, uses?, labels?}` | mints a join token (single use by default) |
//! | `GET /v1/join-tokens` | tokens: id, expiry, uses left, labels, revoked (never secrets) |
//! | `DELETE /v1/join-tokens/{id}` | revokes a token |
//! | `GET /v1/nodes/{node}` | one member: liveness, capacity, reserved, usage, GPUs |
//! | `DELETE /v1/nodes/{node}` | removes a member (by name or id) |
//! | `PATCH /v1/nodes/{node}` [`NodePatch`] `{label_add?: {K: V}, label_rm?: [K], availability?: active\|pause\|drain}` | changes a member's labels in one write, its availability in another |
//! | `GET /v1/services` | live services with desired and running replica counts |
//! | `POST /v1/services` [`CreateService`] | creates a service |
//! | `GET /v1/services/{name}` | one service |
//! | `GET /v1/services/{name}/tasks` | its tasks: slot, node, actual state, ports |
//! | `GET /v1/services/{name}/logs?tail=N&since=T&cursor=C` | one page of the logs of all its tasks, from every node that runs one (see [`crate::logs`]) |
//! | `PATCH /v1/services/{name}` [`ServicePatch`](crate::patch::ServicePatch) | changes only the fields given |
//! | `POST /v1/services/{name}/scale` `{replicas}` | sets its replica count |
//! | `DELETE /v1/services/{name}` | removes it |
//! | `POST /v1/services/{name}/rollback` | returns to its previous spec under the rollback policy (400 when it has none) |
//! | `POST /v1/services/{name}/promote` | a canary awaiting promotion rolls the rest (409 `conflict` otherwise) |
//! | `POST /v1/services/{name}/pause` | an updating rollout stops where it stands (409 `conflict` otherwise) |
//! | `POST /v1/services/{name}/resume` | a paused rollout goes on (409 `conflict` otherwise) |
//! | `POST /v1/secrets` `{name, value_base64}` | creates a secret sealed to every member |
//! | `GET /v1/secrets`, `GET /v1/secrets/{name}` | metadata only: version, size, recipients |
//! | `POST /v1/secrets/{name}/rotate` | re-keys it for the current members |
//! | `DELETE /v1/secrets/{name}` | removes it |
//! | `GET /v1/cluster/settings` | the cluster settings in force here, e.g. `{"rebalance": true}` |
//! | `PATCH /v1/cluster/settings` [`ClusterSettingsPatch`](crate::patch::ClusterSettingsPatch) | changes the settings given (`{"rebalance": false}`); answers with all of them |
//! | `GET /v1/history?service=NAME&limit=N` | the newest changes (100 by default), oldest first: who, when, what |
//! | `POST /v1/api-tokens` `{ttl_secs?, labels?}` | mints an operator token (90 days by default); the only time its text is shown |
//! | `GET /v1/api-tokens` | operator tokens: id, labels, created, expiry, revoked (never secrets or digests) |
//! | `DELETE /v1/api-tokens/{id}` | revokes an operator token at every peer the change reaches |
//! | `POST /v1/images/load` (body: a `docker save` tarball, at most 2 GiB) | loads its images into this node's engine |
//! | `GET /metrics` | the node's metrics in the Prometheus text format (README "Metrics") |
//! | `GET /v1/debug/applied?since=MS` | the changes this node applied at or after `MS` (wall-clock Unix ms; all it keeps if absent), oldest first: `[{hash, at_ms, via, author, message}]`, `via` one of `local`, `gossip`, `sync`, `other`; the newest 4,096 are kept (see `daemon/applied.rs`) |
//!
//! The same routes are served twice: on the loopback listener ([`router`]) without a
//! credential, and on the remote TLS listener ([`remote_router`]) only with
//! `Authorization: Bearer <operator token>`; a missing, malformed, unknown, wrong, revoked or
//! expired token gets 401 with the same body whatever the reason, and the reason goes to the
//! node's log.
//!
//! Every error, the framework's own included (unknown route 404, 405, 413 for a body over
//! 128 KiB, 414 for a path and query over [`MAX_URI_BYTES`], malformed JSON), is
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status and a stable code:
//! `invalid_argument`, `unknown_field`, `unauthorized`, `not_found`, `method_not_allowed`,
//! `already_exists`, `conflict`, `payload_too_large`, `uri_too_long`, `unsupported_media_type`,
//! `internal`, `unavailable`. (A request line beyond hyper's own limit, 64 KiB, is refused
//! by hyper before any of this runs, with an empty 414.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use warren_crdt::{
    ClusterSettings, HealthCheck, PortSpec, Resources, RestartPolicy, SecretMount, Service,
    ServiceName, ServiceSpec,
};

use super::actor::Command;
use super::tls::ClientAddr;
use crate::api_token::{self, ApiTokenGrant, Refusal};
use crate::machine::{Snapshot, Write, WriteAck, WriteError, WriteErrorKind};
use crate::token::TokenGrant;

/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 128 * 1024;

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Reads this node's logs and asks peers for theirs.
    pub(crate) logs: Arc<super::logs::LogService>,
    /// This node's Docker endpoint (`--docker-host`), for requests that need the engine.
    pub(crate) docker_host: Option<String>,
    /// This node's routing mesh: its ports and counters, for `GET /v1/status`.
    pub(crate) ingress: super::ingress::IngressHandle,
    /// The node's metrics (`GET /metrics`; the request counter of both listeners).
    pub(crate) metrics: Arc<super::metrics::Metrics>,
}

/// An error response: status, stable code, message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        let message = e.to_string();
        match e.kind() {
            WriteErrorKind::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            // A rollout step refused: nothing exists twice, the state does not allow it.
            WriteErrorKind::Conflict if matches!(e, WriteError::RolloutStep { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            WriteErrorKind::Conflict => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", message)
            }
            WriteErrorKind::Invalid => ApiError::invalid(message),
            WriteErrorKind::Internal => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

/// Longest request target (path and query) the API reads, in bytes; a longer one gets 414
/// `uri_too_long`. No route needs more than a few hundred.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;

/// Refuses a request whose path and query exceed [`MAX_URI_BYTES`] with a JSON 414.
async fn limit_uri(request: Request, next: Next) -> Response {
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request path and query are {len} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    next.run(request).await
}

/// The API for the loopback listener: no credential (whoever reaches loopback is on the node).
pub(crate) fn router(state: ApiState) -> Router {
    let listener = super::metrics::Listener {
        name: "local",
        metrics: Arc::clone(&state.metrics),
    };
    routes(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            listener,
            super::metrics::count_requests,
        ))
}

/// The API for the remote (TLS) listener: every request, unknown routes included, needs a
/// valid operator token first.
pub(crate) fn remote_router(state: ApiState) -> Router {
    let listener = super::metrics::Listener {
        name: "remote",
        metrics: Arc::clone(&state.metrics),
    };
    routes(state.clone())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::from_fn_with_state(
            state,
            require_operator_token,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            listener,
            super::metrics::count_requests,
        ))
}

/// The 401 every refused credential gets: the same bytes whatever the reason.
fn unauthorized() -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"warren\""),
    );
    response
}

/// Lets a request through only with a valid operator token; logs why it refused one (never
/// the token itself).
async fn require_operator_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let snapshot = state.snapshot.borrow().clone();
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let client = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(addr))| addr.to_string())
        .unwrap_or_default();
    let now_secs = super::wall_ms() / 1000;
    match api_token::verify(presented, &snapshot.tokens, now_secs) {
        Ok(id) => {
            tracing::debug!(%client, token_id = %id, method = %request.method(), "API request");
            next.run(request).await
        }
        Err(refusal) => {
            // The id is public (`api-token ls`); name it only when it is one of ours, so a
            // stranger's text never reaches the log.
            let token_id = presented
                .and_then(|h| h.split_once("WRNA1-"))
                .and_then(|(_, rest)| rest.split_once('.'))
                .map(|(id, _)| id)
                .filter(|id| snapshot.tokens.iter().any(|t| t.id == *id))
                .unwrap_or("");
            let (method, path) = (request.method().clone(), request.uri().path().to_string());
            let path: String = path.chars().take(128).collect();
            // Handlers run outside the node's span: name the node here.
            let node = &snapshot.name;
            if refusal == Refusal::Missing {
                tracing::info!(%node, %client, %method, %path, reason = refusal.as_str(), "API request refused: no operator token");
            } else {
                tracing::warn!(%node, %client, %method, %path, reason = refusal.as_str(), token_id, "API request refused: bad operator token");
            }
            unauthorized()
        }
    }
}

/// The stable code and a default message for an error status.
fn code_for(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            ("invalid_argument", "invalid request")
        }
        StatusCode::UNAUTHORIZED => ("unauthorized", "unauthorized"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::CONFLICT => ("already_exists", "conflict"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body too large"),
        StatusCode::URI_TOO_LONG => ("uri_too_long", "request path too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "expected a body of type application/json",
        ),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "unavailable"),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("invalid_argument", "invalid request"),
    }
}

/// Turns every error response that is not already JSON (the framework's 404, 405, 413 and
/// extractor rejections) into `{"error": {"code", "message"}}`, keeping its status and headers
/// such as `Allow`.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let (mut code, default_message) = code_for(status);
    let mut status = status;
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("request body larger than {MAX_BODY} bytes")
    } else {
        // The framework's rejection texts are short; read at most a few KiB of them.
        let text = axum::body::to_bytes(body, 4 * 1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        if text.is_empty() {
            default_message.to_string()
        } else {
            text
        }
    };
    // serde's `deny_unknown_fields` error names the field: a 400 with its own code, so a
    // client can tell a misspelt field from a value of the wrong type (422).
    if status == StatusCode::UNPROCESSABLE_ENTITY && message.contains("unknown field") {
        status = StatusCode::BAD_REQUEST;
        code = "unknown_field";
    }
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Any route the API does not have.
async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(128).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {method} {path}"),
    )
}

fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/nodes", get(nodes))
        .route(
            "/v1/join-tokens",
            post(create_join_token).get(list_join_tokens),
        )
        .route(
            "/v1/join-tokens/{id}",
            axum::routing::delete(revoke_join_token),
        )
        .route(
            "/v1/nodes/{node}",
            get(inspect_node).delete(remove_node).patch(update_node),
        )
        .route("/v1/services", get(list_services).post(create_service))
        .route(
            "/v1/services/{name}",
            get(inspect_service)
                .delete(delete_service)
                .patch(update_service),
        )
        .route("/v1/services/{name}/tasks", get(service_tasks))
        .route("/v1/services/{name}/logs", get(super::logs::service_logs))
        .route("/v1/services/{name}/scale", post(scale_service))
        // Issue 15: an operator's steps in a rollout.
        .route("/v1/services/{name}/rollback", post(rollback_service))
        .route("/v1/services/{name}/promote", post(promote_service))
        .route("/v1/services/{name}/pause", post(pause_service))
        .route("/v1/services/{name}/resume", post(resume_service))
        .route(
            "/v1/cluster/settings",
            get(cluster_settings).patch(update_cluster_settings),
        )
        .route("/v1/history", get(history))
        .route("/v1/debug/applied", get(applied))
        .route("/v1/secrets", get(list_secrets).post(create_secret))
        .route(
            "/v1/secrets/{name}",
            get(inspect_secret).delete(remove_secret),
        )
        .route("/v1/secrets/{name}/rotate", post(rotate_secret))
        .route(
            "/v1/api-tokens",
            post(create_api_token).get(list_api_tokens),
        )
        .route(
            "/v1/api-tokens/{id}",
            axum::routing::delete(revoke_api_token),
        )
        .route("/v1/images/load", post(load_image))
        .route("/v1/volumes", get(list_volumes).post(create_volume))
        // Issue 17: Prometheus metrics (text format 0.0.4).
        .route("/metrics", get(super::metrics::scrape))
        .route(
            "/v1/volumes/{name}",
            get(inspect_volume).delete(remove_volume),
        )
        .fallback(unknown_route)
        .with_state(state)
}

/// Largest image tarball `POST /v1/images/load` accepts, in bytes (2 GiB).
const MAX_IMAGE_BYTES: u64 = 2 << 30;

/// Streams a `docker save` tarball into this node's engine, counting bytes as they pass:
/// 413 past [`MAX_IMAGE_BYTES`] (at once when `Content-Length` says so), 503 when the engine
/// is unreachable, 400 when the engine refuses the tarball.
async fn load_image(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    use std::sync::atomic::{AtomicU64, Ordering};

    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("image tarballs are limited to {MAX_IMAGE_BYTES} bytes (2 GiB)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_IMAGE_BYTES) {
        return Err(too_large());
    }
    let runtime = warren_runtime::DockerRuntime::connect(state.docker_host.as_deref())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?;
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let stream = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        let total = counter.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
        if total > MAX_IMAGE_BYTES {
            return Err(std::io::Error::other("image tarball larger than 2 GiB"));
        }
        Ok(chunk)
    });
    let node = state.snapshot.borrow().name.clone();
    match runtime.load_image(stream).await {
        Ok(loaded) => {
            let bytes = seen.load(Ordering::Relaxed);
            tracing::info!(%node, bytes, images = ?loaded, "loaded an image tarball");
            Ok(Json(
                json!({ "node": node, "bytes": bytes, "loaded": loaded }),
            ))
        }
        Err(_) if seen.load(Ordering::Relaxed) > MAX_IMAGE_BYTES => Err(too_large()),
        Err(e @ warren_runtime::RuntimeError::Unavailable { .. }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
        Err(e) => {
            tracing::warn!(%node, error = %e, "image tarball refused");
            Err(ApiError::invalid(format!(
                "the engine refused the tarball: {e}"
            )))
        }
    }
}

async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node is shutting down",
        )
    };
    state
        .commands
        .send(make(tx))
        .await
        .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

/// Sends a write to the node; answers once it is persisted and flushed.
async fn write(state: &ApiState, write: Write) -> Result<WriteAck, ApiError> {
    Ok(ask(state, |reply| Command::Write { write, reply }).await??)
}

pub(super) fn parse_name(name: &str) -> Result<ServiceName, ApiError> {
    ServiceName::new(name).map_err(|e| ApiError::invalid(e.to_string()))
}

/// How long a read of tasks or members waits for the members' reports to come in (see
/// [`with_reports`]).
const REPORTS_WAIT: Duration = Duration::from_millis(1_500);

/// The snapshot for a read that shows soft state (task states, usage, engines): soft state
/// goes only where it is needed (DESIGN §4), so this peer first asks every member for its
/// reports, unless it did within the last half minute, and waits at most [`REPORTS_WAIT`]
/// for a snapshot that holds them all. A member that does not answer in time shows what
/// this peer last heard (or `unknown`).
pub(super) async fn with_reports(state: &ApiState) -> Arc<Snapshot> {
    let current = state.snapshot.borrow().clone();
    if current.reports_complete {
        // Keep the interest alive for the next read.
        let (reply, _) = oneshot::channel();
        let _ = state.commands.try_send(Command::WantReports { reply });
        return current;
    }
    let (reply, answered) = oneshot::channel();
    if state
        .commands
        .try_send(Command::WantReports { reply })
        .is_err()
    {
        return current;
    }
    let mut snapshots = state.snapshot.clone();
    let wait = async {
        let _ = answered.await;
        loop {
            if snapshots.borrow_and_update().reports_complete {
                return;
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(REPORTS_WAIT, wait).await;
    let latest = state.snapshot.borrow().clone();
    latest
}

async fn status(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let s = with_reports(&state).await;
    Json(json!({
        "cluster": s.cluster,
        "node": s.node,
        "name": s.name,
        "lease": s.lease,
        "members": s.members,
        "connected_peers": s.connected_peers,
        "dropped_non_member": s.dropped_non_member,
        "heads": s.heads,
        "ingress": state.ingress.status(),
    }))
}

async fn nodes(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let s = with_reports(&state).await;
    Json(json!(s.members))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinTokenRequest {
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    uses: Option<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Most admissions one token may allow.
const MAX_TOKEN_USES: u64 = 1_000;

async fn create_join_token(
    State(state): State<ApiState>,
    body: Option<Json<JoinTokenRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map(|Json(b)| b);
    let ttl_secs = body
        .as_ref()
        .and_then(|b| b.ttl_secs)
        .unwrap_or(3_600)
        .clamp(1, 30 * 24 * 3_600);
    let uses = body.as_ref().and_then(|b| b.uses).unwrap_or(1);
    if !(1..=MAX_TOKEN_USES).contains(&uses) {
        return Err(ApiError::invalid(format!(
            "uses must be 1-{MAX_TOKEN_USES}"
        )));
    }
    let labels = body.map(|b| b.labels).unwrap_or_default();
    validate_labels(&labels)?;
    let now_secs = super::wall_ms() / 1000;
    let grant = TokenGrant {
        ttl_secs,
        uses,
        labels,
    };
    let ack = write(&state, Write::CreateJoinToken { grant, now_secs }).await?;
    let WriteAck::JoinToken(token) = ack else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node answered without a token",
        ));
    };
    Ok(Json(
        json!({ "token": token, "ttl_secs": ttl_secs, "uses": uses }),
    ))
}

/// Labels of a token: at most 64, keys 1-63 characters, values at most 255.
fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > 64
        || labels.keys().any(|k| k.is_empty() || k.len() > 63)
        || labels.values().any(|v| v.len() > 255)
    {
        return Err(ApiError::invalid(
            "labels: at most 64, keys 1-63 characters, values at most 255",
        ));
    }
    Ok(())
}

/// A token id as `ls` shows it: 1-64 hex characters.
fn parse_token_id(id: &str, kind: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(format!("invalid {kind} id {id:?}")));
    }
    Ok(())
}

/// `GET /v1/join-tokens`: ids, expiry, uses left, labels, revoked. Never a secret or digest.
async fn list_join_tokens(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let s = state.snapshot.borrow().clone();
    let now_secs = super::wall_ms() / 1000;
    Json(json!(s
        .tokens
        .iter()
        .filter(|t| !t.is_operator())
        .map(|t| json!({
            "id": t.id,
            "expires_at": t.expires_at,
            "expired": t.expires_at <= now_secs,
            "uses_left": t.uses_left,
            "labels": t.labels,
            "revoked": t.revoked,
        }))
        .collect::<Vec<_>>()))
}

async fn revoke_join_token(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    parse_token_id(&id, "join token")?;
    write(&state, Write::RevokeJoinToken(id.clone())).await?;
    Ok(Json(json!({ "id": id, "revoked": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTokenRequest {
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Validity of an operator token when the request names none: 90 days.
const DEFAULT_API_TOKEN_TTL_SECS: u64 = 90 * 24 * 3_600;

/// `POST /v1/api-tokens`: mints an operator token. The answer holds its text, which no peer
/// keeps: it cannot be shown again.
async fn create_api_token(
    State(state): State<ApiState>,
    body: Option<Json<ApiTokenRequest>>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = body.map(|Json(b)| b);
    let ttl_secs = body
        .as_ref()
        .and_then(|b| b.ttl_secs)
        .unwrap_or(DEFAULT_API_TOKEN_TTL_SECS);
    if !(1..=api_token::MAX_TTL_SECS).contains(&ttl_secs) {
        return Err(ApiError::invalid(format!(
            "ttl_secs must be 1-{}",
            api_token::MAX_TTL_SECS
        )));
    }
    let labels = body.map(|b| b.labels).unwrap_or_default();
    validate_labels(&labels)?;
    let now_secs = super::wall_ms() / 1000;
    let grant = ApiTokenGrant { ttl_secs, labels };
    let WriteAck::ApiToken { id, token } =
        write(&state, Write::CreateApiToken { grant, now_secs }).await?
    else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node answered without a token",
        ));
    };
    let expires_at = now_secs.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
    tracing::info!(token_id = %id, ttl_secs, "operator token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "token": token, "expires_at": expires_at })),
    ))
}

/// `GET /v1/api-tokens`: id, labels, created, expiry, revoked. Never a secret or digest.
async fn list_api_tokens(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let s = state.snapshot.borrow().clone();
    let now_secs = super::wall_ms() / 1000;
    Json(json!(s
        .tokens
        .iter()
        .filter(|t| t.is_operator())
        .map(|t| json!({
            "id": t.id,
            "labels": t.labels,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "expired": t.expires_at <= now_secs,
            "revoked": t.revoked,
        }))
        .collect::<Vec<_>>()))
}

/// `DELETE /v1/api-tokens/{id}`: revokes an operator token.
async fn revoke_api_token(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    parse_token_id(&id, "API token")?;
    write(&state, Write::RevokeApiToken(id.clone())).await?;
    tracing::info!(token_id = %id, "operator token revoked");
    Ok(Json(json!({ "id": id, "revoked": true })))
}

/// The member `node` names in `snapshot`: its name or id (or its id's last 8 characters).
///
/// Errors: `not_found` when none matches, `invalid` when several do.
fn find_member(
    snapshot: &crate::machine::Snapshot,
    node: &str,
) -> Result<crate::machine::MemberStatus, ApiError> {
    let matches: Vec<&crate::machine::MemberStatus> = snapshot
        .members
        .iter()
        .filter(|m| m.name == node || m.id.as_str() == node || m.id.short() == node)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no member named {node}"),
        )),
        _ => Err(ApiError::invalid(format!(
            "{node} names several members; use its id"
        ))),
    }
}

/// `GET /v1/nodes/{node}`: one member as this peer sees it, with its capacity, what its tasks
/// reserve, its usage and GPUs; `display` holds the same figures written for people (`2 CPUs`,
/// `23.4 GiB`), so that every client shows them alike.
async fn inspect_node(
    State(state): State<ApiState>,
    Path(node): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::core::{format_bytes, format_cpus};
    let s = with_reports(&state).await;
    let m = find_member(&s, &node)?;
    let unknown = || "unknown".to_string();
    let display = json!({
        "cpus": m.capacity.map_or_else(unknown, |c| format_cpus(c.nano_cpus)),
        "memory": m.capacity.map_or_else(unknown, |c| format_bytes(c.memory_bytes)),
        "reserved_cpus": format_cpus(m.reserved.nano_cpus),
        "reserved_memory": format_bytes(m.reserved.memory_bytes),
        "memory_used": m.usage.map_or_else(unknown, |u| format_bytes(u.memory_used_bytes)),
        "load_1m": m.usage.map_or_else(unknown, |u| format!("{:.2}", u.load_1m_milli as f64 / 1000.0)),
        "gpus": gpu_lines(&m),
    });
    let mut out = json!(m);
    if let Some(obj) = out.as_object_mut() {
        obj.insert("display".into(), display);
    }
    Ok(Json(out))
}

/// A member's GPUs for people, one line each: `0 NVIDIA A100 (40 GiB) GPU-5c0c…: web.0`
/// (the slot holding it, or `free`); then any GPU an assignment names that the member's
/// report does not list, `GPU-zz (not reported): web.1`.
fn gpu_lines(m: &crate::machine::MemberStatus) -> Vec<String> {
    use crate::core::format_bytes;
    let holder = |id: Option<&String>| {
        id.and_then(|id| m.gpu_holders.get(id))
            .map_or_else(|| "free".to_string(), ToString::to_string)
    };
    let mut lines: Vec<String> = Vec::new();
    let mut listed: Vec<String> = Vec::new();
    for g in &m.gpus {
        let id = g.device_id();
        let index = g.index.map(|i| format!("{i} ")).unwrap_or_default();
        let uuid = if g.uuid.is_empty() {
            String::new()
        } else {
            format!(" {}", g.uuid)
        };
        lines.push(format!(
            "{index}{} ({}){uuid}: {}",
            g.name,
            format_bytes(g.memory_bytes),
            holder(id.as_ref())
        ));
        listed.extend(id);
    }
    for (id, slot) in m.gpu_holders.iter().filter(|(id, _)| !listed.contains(id)) {
        lines.push(format!("{id} (not reported): {slot}"));
    }
    lines
}

/// `DELETE /v1/nodes/{node}`: `node` is a member's name or id (or its last 8 characters).
async fn remove_node(
    State(state): State<ApiState>,
    Path(node): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = state.snapshot.borrow().clone();
    let member = find_member(&s, &node)?;
    let (id, name) = (member.id.clone(), member.name.clone());
    write(&state, Write::RemoveMember(id.clone())).await?;
    Ok(Json(json!({ "id": id, "name": name, "removed": true })))
}

/// Body of `PATCH /v1/nodes/{node}`: labels to set and label keys to remove, in one write
/// (each key merges on its own with concurrent changes at other peers). Unknown fields are
/// refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodePatch {
    /// Labels to set; a value replaces the one there.
    #[serde(default)]
    label_add: BTreeMap<String, String>,
    /// Label keys to remove (absent keys are ignored).
    #[serde(default)]
    label_rm: std::collections::BTreeSet<String>,
    /// The member's new availability: `active`, `pause` or `drain` (a write of its own).
    #[serde(default)]
    availability: Option<warren_crdt::Availability>,
}

/// `PATCH /v1/nodes/{node}`: `node` is a member's name or id (or its last 8 characters).
/// Answers with the member's id, name and labels as this peer holds them after the write.
async fn update_node(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    Json(body): Json<NodePatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.label_add.is_empty() && body.label_rm.is_empty() && body.availability.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: give label_add, label_rm or availability",
        ));
    }
    let s = state.snapshot.borrow().clone();
    let member = find_member(&s, &node)?;
    let (id, name) = (member.id.clone(), member.name.clone());
    let mut labels = member.labels.clone();
    labels.extend(body.label_add.clone());
    labels.retain(|k, _| !body.label_rm.contains(k));
    if !body.label_add.is_empty() || !body.label_rm.is_empty() {
        write(
            &state,
            Write::UpdateNodeLabels {
                node: id.clone(),
                add: body.label_add,
                remove: body.label_rm,
            },
        )
        .await?;
    }
    let availability = body.availability.unwrap_or(member.availability);
    if let Some(availability) = body.availability {
        let node = id.clone();
        write(&state, Write::SetNodeAvailability { node, availability }).await?;
    }
    Ok(Json(
        json!({ "id": id, "name": name, "labels": labels, "availability": availability }),
    ))
}

/// Body of `POST /v1/services`. Unknown fields are refused (a misspelt `replica` must not
/// silently start the default replica count).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateService {
    name: String,
    image: String,
    /// Replicas: 1 by default; none with `mode: global`.
    #[serde(default)]
    replicas: Option<u32>,
    /// `replicated` (the default) or `global`.
    #[serde(default)]
    mode: warren_crdt::ServiceMode,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<PortSpec>,
    #[serde(default)]
    secrets: Vec<SecretMount>,
    /// The health check; none by default.
    #[serde(default)]
    health: Option<HealthCheck>,
    /// The restart policy; `always` with a 1 s base delay and no limit by default.
    #[serde(default)]
    restart: RestartPolicy,
    /// CPU and memory limits; none by default.
    #[serde(default)]
    resources: Resources,
    /// Milliseconds between SIGTERM and SIGKILL; the engine's 10 s by default.
    #[serde(default)]
    stop_timeout_ms: Option<u64>,
    /// What happens to an unreachable member's slots; `reschedule` by default.
    #[serde(default)]
    partition: warren_crdt::PartitionPolicy,
    /// Constraints, spread preferences and the cap per node; anywhere by default.
    #[serde(default)]
    placement: warren_crdt::Placement,
    /// Volumes and host paths to mount; none by default.
    #[serde(default)]
    mounts: Vec<warren_crdt::Mount>,
    /// Whole GPUs each task reserves; none by default.
    #[serde(default)]
    gpus: u32,
    /// How updates roll out; Swarm's defaults.
    #[serde(default)]
    update: warren_crdt::UpdatePolicy,
    /// How rollbacks roll out; Swarm's defaults.
    #[serde(default)]
    rollback: warren_crdt::UpdatePolicy,
    /// The deployment strategy of updates; rolling by default.
    #[serde(default)]
    deploy: warren_crdt::Deploy,
}

#[derive(Debug, Serialize)]
struct ServiceSummary {
    name: ServiceName,
    image: String,
    mode: warren_crdt::ServiceMode,
    /// Desired tasks: the replica count, or for a global service its eligible members (the
    /// slots it holds and those pending).
    replicas: u32,
    running: usize,
    generation: u64,
    /// The rollout's state word (`updating`, `paused`, ...); `null` when never updated.
    rollout: Option<&'static str>,
}

async fn create_service(
    State(state): State<ApiState>,
    Json(body): Json<CreateService>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = parse_name(&body.name)?;
    validate_image(&body.image)?;
    let global = body.mode == warren_crdt::ServiceMode::Global;
    let spec = ServiceSpec {
        image: body.image,
        replicas: body.replicas.unwrap_or(if global { 0 } else { 1 }),
        mode: body.mode,
        command: body.command,
        env: body.env,
        ports: body.ports,
        secrets: body.secrets,
        health: body.health,
        restart: body.restart,
        resources: body.resources,
        stop_timeout_ms: body.stop_timeout_ms,
        partition: body.partition,
        placement: body.placement,
        mounts: body.mounts,
        gpus: body.gpus,
        update: body.update,
        rollback: body.rollback,
        deploy: body.deploy,
    };
    // One rule set for every way a spec enters: the same check runs on update and when a
    // node reads a spec from the document.
    spec.validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let reply_name = name.clone();
    write(&state, Write::CreateService(name, Box::new(spec))).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": reply_name }))))
}

fn validate_image(image: &str) -> Result<(), ApiError> {
    warren_runtime::validate_image_reference(image).map_err(|e| ApiError::invalid(e.to_string()))
}

/// `PATCH /v1/services/{name}`: changes only the fields the body gives (see
/// [`ServicePatch`](crate::patch::ServicePatch)); the node applies them to the spec it holds
/// and checks the result before it writes.
async fn update_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(patch): Json<crate::patch::ServicePatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    if let Some(image) = &patch.image {
        validate_image(image)?;
    }
    // The node applies the patch and runs `ServiceSpec::validate` on the result.
    let reply_name = name.clone();
    write(&state, Write::UpdateService(name, Box::new(patch))).await?;
    Ok(Json(json!({ "name": reply_name, "updated": true })))
}

async fn list_services(State(state): State<ApiState>) -> Json<Vec<ServiceSummary>> {
    let s = with_reports(&state).await;
    let mut running: HashMap<&ServiceName, usize> = HashMap::new();
    for t in s
        .tasks
        .iter()
        .filter(|t| t.state == crate::protocol::TaskState::Running)
    {
        *running.entry(&t.service).or_default() += 1;
    }
    Json(
        s.live_services()
            .map(|svc| ServiceSummary {
                name: svc.name.clone(),
                image: svc.spec.image.clone(),
                mode: svc.spec.mode,
                replicas: desired_tasks(&s, svc),
                running: running.get(&svc.name).copied().unwrap_or(0),
                generation: svc.generation,
                rollout: svc.rollout.as_ref().map(warren_crdt::Rollout::state_word),
            })
            .collect(),
    )
}

/// How many tasks `service` wants: its replica count, or for a global service the members
/// eligible for it as the scheduler sees them (each holds a slot or has one pending).
pub(super) fn desired_tasks(snapshot: &Snapshot, service: &Service) -> u32 {
    if service.spec.mode == warren_crdt::ServiceMode::Replicated {
        return service.spec.replicas;
    }
    let held = snapshot
        .tasks
        .iter()
        .filter(|t| t.service == service.name)
        .count();
    let pending = snapshot
        .pending
        .iter()
        .filter(|(p, _)| p.service == service.name)
        .count();
    u32::try_from(held + pending).unwrap_or(u32::MAX)
}

/// The live service `name` in `snapshot`. Errors: 404 `not_found`.
pub(super) fn find_service<'a>(
    snapshot: &'a Snapshot,
    name: &ServiceName,
) -> Result<&'a Service, ApiError> {
    snapshot.live_service(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no service named {name}"),
        )
    })
}

async fn inspect_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let s = state.snapshot.borrow().clone();
    let service = find_service(&s, &name)?;
    let mut body = json!(service);
    body["rollout"] = rollout_json(&s, service);
    Ok(Json(body))
}

/// The `"rollout"` of `GET /v1/services/{name}` (issue 15): the rollout record's fields
/// (`state` as people say it, `reason` of a pause) with its progress counted from the
/// snapshot's tasks by [`RolloutProgress::count_slot`](crate::core::rollout::RolloutProgress::count_slot),
/// or `null` for a service never updated.
fn rollout_json(s: &Snapshot, service: &Service) -> serde_json::Value {
    use crate::core::rollout::{RolloutProgress, SlotReport};
    let Some(r) = &service.rollout else {
        return serde_json::Value::Null;
    };
    let tasks: BTreeMap<u32, &crate::machine::TaskView> = s
        .tasks
        .iter()
        .filter(|t| t.service == service.name)
        .map(|t| (t.slot, t))
        .collect();
    let wanted: Vec<u32> = match service.spec.mode {
        warren_crdt::ServiceMode::Replicated => (0..service.spec.slot_count()).collect(),
        warren_crdt::ServiceMode::Global => tasks
            .keys()
            .copied()
            .filter(|slot| service.spec.wants_slot(*slot))
            .collect(),
    };
    let mut progress = RolloutProgress::default();
    for slot in wanted {
        let task = tasks.get(&slot).filter(|t| t.generation == r.to_generation);
        let report = task.map(|t| SlotReport {
            node: t.node.clone(),
            generation: t.generation,
            state: t.state,
            health: t.health,
            restarts: t.restarts,
            exit_code: t.exit_code,
            unassigned: false,
        });
        progress.count_slot(task.is_some(), report.as_ref());
    }
    let reason = match &r.state {
        warren_crdt::RolloutState::Paused { reason } => Some(reason.as_str()),
        _ => None,
    };
    json!({
        "kind": r.kind,
        "state": r.state_word(),
        "reason": reason,
        "from_generation": r.from_generation,
        "to_generation": r.to_generation,
        "policy": r.policy,
        "deploy": r.deploy,
        "updated_at_ms": r.updated_at_ms,
        "traffic_generation": r.traffic_generation,
        "updated": progress.updated,
        "healthy": progress.healthy,
        "failed": progress.failed,
        "total": progress.total,
    })
}

async fn service_tasks(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let s = with_reports(&state).await;
    let service = find_service(&s, &name)?;
    let mut tasks: Vec<serde_json::Value> = s
        .tasks
        .iter()
        .filter(|t| t.service == name)
        .map(|t| json!(t))
        .collect();
    // Containers of an older generation kept beside their slot's new task (a start-first
    // or blue/green rollout): listed too, marked `previous`.
    tasks.extend(
        s.previous_tasks
            .iter()
            .filter(|t| t.service == name)
            .map(|t| {
                let mut v = json!(t);
                v["previous"] = json!(true);
                v
            }),
    );
    // Slots the scheduler has not placed yet are pending, not invisible, and say why (a
    // global service's pending slots are the members that cannot hold its task).
    let global_pending = s
        .pending
        .iter()
        .filter(|(p, _)| service.spec.mode == warren_crdt::ServiceMode::Global && p.service == name)
        .map(|(p, _)| p.slot);
    for slot in (0..service.spec.slot_count()).chain(global_pending) {
        if !s.tasks.iter().any(|t| t.service == name && t.slot == slot) {
            let why = s
                .pending
                .iter()
                .find(|(p, _)| p.service == name && p.slot == slot)
                .map_or("not assigned to a node yet", |(_, why)| why.as_str());
            tasks.push(json!({
                "service": name, "slot": slot, "node": null, "node_name": "",
                "state": "pending", "status": why,
                "container": "", "ports": [], "health": "", "exit_code": null,
                "restarts": 0, "next_restart_ms": null, "error": "",
            }));
        }
    }
    Ok(Json(json!(tasks)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scale {
    replicas: u32,
}

async fn scale_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<Scale>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let replicas = body.replicas;
    let global = state
        .snapshot
        .borrow()
        .live_service(&name)
        .is_some_and(|svc| svc.spec.mode == warren_crdt::ServiceMode::Global);
    if global {
        return Err(ApiError::invalid(format!(
            "{name} is a global service: it runs one task on every eligible node and cannot \
             be scaled"
        )));
    }
    let reply_name = name.clone();
    write(&state, Write::ScaleService(name, replicas)).await?;
    Ok(Json(json!({ "name": reply_name, "replicas": replicas })))
}

async fn delete_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let reply_name = name.clone();
    write(&state, Write::DeleteService(name)).await?;
    Ok(Json(json!({ "name": reply_name, "deleted": true })))
}

async fn cluster_settings(State(state): State<ApiState>) -> Json<ClusterSettings> {
    Json(state.snapshot.borrow().settings)
}

/// Writes the settings given; 400 `invalid_argument` when the body names none, 400
/// `unknown_field` for a setting this node does not know.
async fn update_cluster_settings(
    State(state): State<ApiState>,
    Json(patch): Json<crate::patch::ClusterSettingsPatch>,
) -> Result<Json<ClusterSettings>, ApiError> {
    let settings = patch.settings();
    if settings.is_empty() {
        return Err(ApiError::invalid(
            "no setting given; the cluster settings are: rebalance",
        ));
    }
    write(&state, Write::SetClusterSettings(settings)).await?;
    // The actor published its snapshot before acknowledging: it holds this write.
    Ok(Json(state.snapshot.borrow().settings))
}

/// Query of `GET /v1/history`.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    service: Option<String>,
    limit: Option<usize>,
}

async fn history(
    State(state): State<ApiState>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let service = query.service.as_deref().map(parse_name).transpose()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let entries = ask(&state, |reply| Command::History {
        service,
        limit,
        reply,
    })
    .await?;
    Ok(Json(json!(entries)))
}

/// Query of `GET /v1/debug/applied`.
#[derive(Debug, Deserialize)]
struct AppliedQuery {
    since: Option<i64>,
}

/// `GET /v1/debug/applied?since=MS`: when this node applied each change (read-only; for
/// measurements such as the testnet's `convergence`).
async fn applied(
    State(state): State<ApiState>,
    Query(query): Query<AppliedQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let since_ms = query.since.unwrap_or(i64::MIN);
    let entries = ask(&state, |reply| Command::Applied { since_ms, reply }).await?;
    Ok(Json(json!(entries)))
}

/// A secret name: 1-63 characters of `[A-Za-z0-9._-]`, not starting with `.` (it becomes a
/// file name under `/run/secrets`).
fn parse_secret_name(name: &str) -> Result<String, ApiError> {
    warren_crdt::validate_secret_name(name).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(name.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSecret {
    name: String,
    value_base64: String,
}

async fn create_secret(
    State(state): State<ApiState>,
    Json(body): Json<CreateSecret>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    use base64::Engine;
    let name = parse_secret_name(&body.name)?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(body.value_base64.as_bytes())
        .map_err(|_| ApiError::invalid("value_base64 is not base64"))?;
    let value = crate::machine::SecretValue(zeroize::Zeroizing::new(value));
    write(
        &state,
        Write::CreateSecret {
            name: name.clone(),
            value,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))))
}

async fn list_secrets(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let s = state.snapshot.borrow().clone();
    Json(json!(s.secrets))
}

async fn inspect_secret(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_secret_name(&name)?;
    let s = state.snapshot.borrow().clone();
    let secret = s.secrets.iter().find(|x| x.name == name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no secret named {name}"),
        )
    })?;
    Ok(Json(json!(secret)))
}

async fn rotate_secret(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_secret_name(&name)?;
    write(&state, Write::RotateSecret(name.clone())).await?;
    Ok(Json(json!({ "name": name, "rotated": true })))
}

async fn remove_secret(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_secret_name(&name)?;
    write(&state, Write::RemoveSecret(name.clone())).await?;
    Ok(Json(json!({ "name": name, "deleted": true })))
}

/// `POST /v1/volumes` body: `driver` defaults to `local` (the only one accepted), `node`
/// (a member's name or id) to the node that serves the request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVolume {
    name: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

fn parse_volume_name(name: &str) -> Result<String, ApiError> {
    warren_crdt::validate_volume_name(name).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(name.to_string())
}

/// `POST /v1/volumes`: creates a volume bound to `node`, or without one to this node (the
/// one that serves the request: the rule is fixed at creation, so the volume never moves).
async fn create_volume(
    State(state): State<ApiState>,
    Json(body): Json<CreateVolume>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = parse_volume_name(&body.name)?;
    let s = state.snapshot.borrow().clone();
    let node = match &body.node {
        Some(node) => find_member(&s, node)?.id,
        None => s
            .node
            .clone()
            .ok_or_else(|| ApiError::invalid("this node has no identity yet"))?,
    };
    let volume = warren_crdt::Volume {
        name: name.clone(),
        driver: body
            .driver
            .unwrap_or_else(|| warren_crdt::LOCAL_DRIVER.to_string()),
        node: node.clone(),
        options: body.options,
    };
    volume
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    write(&state, Write::CreateVolume(volume)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "node": node })),
    ))
}

/// `GET /v1/volumes`: every volume record, with its node's name and the live services that
/// mount it.
async fn list_volumes(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let s = state.snapshot.borrow().clone();
    Json(json!(s
        .volumes
        .values()
        .map(|v| volume_json(&s, v))
        .collect::<Vec<_>>()))
}

fn volume_json(s: &crate::machine::Snapshot, v: &warren_crdt::Volume) -> serde_json::Value {
    let node_name = s
        .members
        .iter()
        .find(|m| m.id == v.node)
        .map_or("", |m| m.name.as_str());
    let used_by: Vec<&ServiceName> = s
        .live_services()
        .filter(|svc| {
            svc.spec
                .mounts
                .iter()
                .any(|m| m.kind == warren_crdt::MountKind::Volume && m.source == v.name)
        })
        .map(|svc| &svc.name)
        .collect();
    json!({
        "name": v.name, "driver": v.driver, "node": v.node, "node_name": node_name,
        "options": v.options, "used_by": used_by,
    })
}

async fn inspect_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_volume_name(&name)?;
    let s = state.snapshot.borrow().clone();
    let volume = s.volumes.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no volume named {name}"),
        )
    })?;
    Ok(Json(volume_json(&s, volume)))
}

/// `DELETE /v1/volumes/{name}`: removes the record (409 while a live service mounts it);
/// its node then deletes the Docker volume and its data.
async fn remove_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_volume_name(&name)?;
    write(&state, Write::RemoveVolume(name.clone())).await?;
    Ok(Json(json!({ "name": name, "deleted": true })))
}

/// `POST /v1/services/{name}/rollback`: the previous spec becomes the spec again, as a new
/// generation rolled out under the rollback policy. 400 when the service has no previous
/// spec (it was never updated in a way that replaced its containers).
async fn rollback_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let reply_name = name.clone();
    write(&state, Write::RollbackService(name)).await?;
    Ok(Json(json!({ "name": reply_name, "rollback": true })))
}

/// One operator step in a rollout; answers `{name, step}` or 409 `conflict` saying the
/// rollout's state.
async fn step_rollout(
    state: &ApiState,
    name: &str,
    step: crate::machine::RolloutStep,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(name)?;
    let reply_name = name.clone();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    write(
        state,
        Write::StepRollout {
            service: name,
            step,
            now_ms,
        },
    )
    .await?;
    Ok(Json(json!({ "name": reply_name, "step": step.as_str() })))
}

/// `POST /v1/services/{name}/promote`: a canary awaiting promotion rolls the rest.
async fn promote_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    step_rollout(&state, &name, crate::machine::RolloutStep::Promote).await
}

/// `POST /v1/services/{name}/pause`: an updating rollout stops where it stands.
async fn pause_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    step_rollout(&state, &name, crate::machine::RolloutStep::Pause).await
}

/// `POST /v1/services/{name}/resume`: a paused rollout goes on.
async fn resume_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    step_rollout(&state, &name, crate::machine::RolloutStep::Resume).await
}
