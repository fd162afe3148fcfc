//! `GET /v1/services/{name}/logs` and the mesh's `Logs` requests: the IO around
//! [`crate::logs`]. A node reads its own tasks' containers through the engine; the peer that
//! serves the API asks every node with a task of the service in parallel, itself included,
//! and merges the answers into one page.
//!
//! Bounded: at most [`MAX_CONCURRENT_READS`] log reads at once on a node (a peer's request
//! beyond that is refused `busy`, not queued), each read and each peer's answer has a
//! deadline, and every answer and page is bounded by [`crate::logs`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::{debug, Instrument};
use warren_crdt::NodeId;
use warren_mesh::{MeshHandle, PeerId, ReplyHandle, RequestKind, Response};
use warren_runtime::{ContainerRuntime, DockerRuntime};

use super::api::{find_service, parse_name, ApiError, ApiState};
use crate::logs::{
    answer, engine_query, keeps, merge, CursorSet, LogsRequest, LogsResponse, NodeAnswer, Page,
    TaskLog,
};

/// Log reads a node runs at once, for the API and for peers together.
pub(crate) const MAX_CONCURRENT_READS: usize = 8;
/// Deadline of one node's read of its containers' logs.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of a peer's answer (its read and the round trip).
const ASK_DEADLINE: Duration = Duration::from_secs(6);
/// Longest error text kept from a peer.
const MAX_ERROR_BYTES: usize = 256;

/// Reads this node's logs and asks peers for theirs. Shared by the API and the node actor.
#[derive(Debug)]
pub(crate) struct LogService {
    /// `--docker-host`: the engine is connected at the first read and again after an outage
    /// (the node starts and runs without its engine).
    docker_host: Option<String>,
    runtime: tokio::sync::Mutex<Option<DockerRuntime>>,
    me: NodeId,
    name: String,
    mesh: MeshHandle,
    reads: Arc<Semaphore>,
}

impl LogService {
    pub(crate) fn new(
        docker_host: Option<String>,
        me: NodeId,
        name: String,
        mesh: MeshHandle,
    ) -> Self {
        Self {
            docker_host,
            runtime: tokio::sync::Mutex::new(None),
            me,
            name,
            mesh,
            reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
        }
    }

    /// The engine, connected now if it was not (within 10 s).
    ///
    /// Errors: the engine cannot be reached, as text.
    async fn engine(&self) -> Result<DockerRuntime, String> {
        let mut cached = self.runtime.lock().await;
        if let Some(runtime) = cached.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            DockerRuntime::connect(self.docker_host.as_deref()),
        )
        .await
        .map_err(|_| "the container engine did not answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
        *cached = Some(runtime.clone());
        Ok(runtime)
    }

    /// Reads the logs of this node's tasks of `request.service` (one engine read per
    /// container, bounded) and answers as [`crate::logs::answer`] does. A container removed
    /// meanwhile is skipped.
    ///
    /// Errors: the engine's, as text.
    async fn read_local(&self, request: &LogsRequest) -> Result<LogsResponse, String> {
        let runtime = self.engine().await?;
        let containers = match runtime.list_tasks(self.me.as_str()).await {
            Ok(c) => c,
            Err(e) => {
                if matches!(e, warren_runtime::RuntimeError::Unavailable { .. }) {
                    *self.runtime.lock().await = None;
                }
                return Err(e.to_string());
            }
        };
        let mut tasks = Vec::new();
        for container in containers.iter().filter(|c| c.service == request.service) {
            let query = engine_query(request, container.slot);
            let keep = keeps(request, container.slot);
            match runtime.read_logs(&container.id, &query, keep).await {
                Ok(read) => tasks.push(TaskLog {
                    slot: container.slot,
                    lines: read.lines,
                    cut: read.cut,
                }),
                Err(e) if e.status_code() == Some(404) => {
                    debug!(container = %container.name, "container gone while reading its logs");
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(answer(request, &self.name, tasks))
    }

    /// [`read_local`](Self::read_local) under a read permit and [`READ_DEADLINE`].
    async fn read_local_bounded(&self, request: &LogsRequest) -> Result<LogsResponse, String> {
        let read = async {
            let _permit = self
                .reads
                .acquire()
                .await
                .map_err(|_| "shutting down".to_string())?;
            self.read_local(request).await
        };
        tokio::time::timeout(READ_DEADLINE, read)
            .await
            .unwrap_or_else(|_| Err(format!("reading the logs took over {READ_DEADLINE:?}")))
    }

    /// Answers a peer's `Logs` request in a task of its own, so the actor never waits for
    /// the engine. Refused at once when [`MAX_CONCURRENT_READS`] reads are running.
    pub(crate) fn serve(self: &Arc<Self>, peer: PeerId, body: Vec<u8>, reply: ReplyHandle) {
        let Ok(permit) = self.reads.clone().try_acquire_owned() else {
            debug!(%peer, "logs request refused: too many reads running");
            tokio::spawn(async move {
                let _ = reply.send(Response::Refused("busy".into())).await;
            });
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(
            async move {
                let response = match serde_json::from_slice::<LogsRequest>(&body) {
                    Err(e) => Response::Refused(format!("bad logs request: {e}")),
                    Ok(request) => {
                        let read = tokio::time::timeout(READ_DEADLINE, this.read_local(&request));
                        match read.await {
                            Ok(Ok(answer)) => match serde_json::to_vec(&answer) {
                                Ok(bytes) => Response::Ok(bytes),
                                Err(e) => Response::Refused(format!("encoding the logs: {e}")),
                            },
                            Ok(Err(e)) => Response::Refused(e),
                            Err(_) => Response::Refused(format!(
                                "reading the logs took over {READ_DEADLINE:?}"
                            )),
                        }
                    }
                };
                drop(permit);
                if let Err(e) = reply.send(response).await {
                    debug!(%peer, error = %e, "could not answer a logs request");
                }
            }
            .in_current_span(),
        );
    }

    /// Asks `node` for its part over the mesh.
    async fn ask(&self, node: &NodeId, request: &LogsRequest) -> Result<LogsResponse, String> {
        let peer: PeerId = node
            .as_str()
            .parse()
            .map_err(|_| "not a peer id".to_string())?;
        let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let asked = self.mesh.request(peer, RequestKind::Logs, body);
        let bounded = |text: String| warren_runtime::truncate_text(&text, MAX_ERROR_BYTES);
        match tokio::time::timeout(ASK_DEADLINE, asked).await {
            Err(_) => Err(format!("no answer within {ASK_DEADLINE:?}")),
            Ok(Err(e)) => Err(bounded(e.to_string())),
            Ok(Ok(Response::Refused(reason))) => Err(bounded(reason)),
            Ok(Ok(Response::Ok(bytes))) => serde_json::from_slice::<LogsResponse>(&bytes)
                .map(LogsResponse::bounded)
                .map_err(|e| bounded(format!("unreadable answer: {e}"))),
        }
    }

    /// One page of `service`'s logs: every node in `nodes` (id -> name) asked in parallel,
    /// this one read locally, merged with [`merge`].
    async fn page(
        &self,
        service: &str,
        since: Option<i64>,
        tail: Option<u32>,
        prior: &CursorSet,
        nodes: &BTreeMap<NodeId, String>,
        assigned: &BTreeSet<(String, u32)>,
    ) -> Page {
        // Each node answers its share of a page, so the answers held at once stay small.
        let (max_lines, max_bytes) = LogsRequest::share(nodes.len());
        let asks = nodes.iter().map(|(node, node_name)| async move {
            let request = LogsRequest {
                service: service.to_string(),
                since,
                tail,
                cursors: prior.for_node(node.as_str()),
                max_lines: Some(max_lines),
                max_bytes: Some(max_bytes),
            };
            let result = if *node == self.me {
                self.read_local_bounded(&request).await
            } else {
                self.ask(node, &request).await
            };
            NodeAnswer {
                node: node.as_str().to_string(),
                node_name: node_name.clone(),
                result,
            }
        });
        let answers = futures::future::join_all(asks).await;
        merge(service, prior, assigned, answers)
    }
}

/// Query of `GET /v1/services/{name}/logs`.
#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    /// The last N lines of each task (for tasks without a cursor).
    tail: Option<u32>,
    /// Lines at or after this time: Unix seconds (fractions allowed) or RFC 3339.
    since: Option<String>,
    /// A previous page's `cursor`: only lines after it.
    cursor: Option<String>,
}

/// `GET /v1/services/{name}/logs?tail=N&since=T&cursor=C`: one [`Page`] of the logs of every
/// task of the service, from whichever nodes run them. Follow by asking again with the
/// page's `cursor` (every second or so); ask again at once while `more` is set.
///
/// Errors: 404 for an unknown service, 400 for a malformed `since` or `cursor`.
pub(super) async fn service_logs(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<Page>, ApiError> {
    let name = parse_name(&name)?;
    let snapshot = state.snapshot.borrow().clone();
    find_service(&snapshot, &name)?;
    let since = query
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(ApiError::invalid)?;
    let prior = CursorSet::decode(query.cursor.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("cursor: {e}")))?;
    let mut nodes = BTreeMap::new();
    let mut assigned = BTreeSet::new();
    for task in snapshot.tasks.iter().filter(|t| t.service == name) {
        nodes.insert(task.node.clone(), task.node_name.clone());
        assigned.insert((task.node.as_str().to_string(), task.slot));
    }
    let page = state
        .logs
        .page(name.as_str(), since, query.tail, &prior, &nodes, &assigned)
        .await;
    Ok(Json(page))
}

/// `since` of the API: Unix seconds, with up to 9 decimals (`1795315951.25`), or an RFC 3339
/// time (`2026-11-22T02:52:31Z`); as Unix nanoseconds.
pub(crate) fn parse_since(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "since {:?}: give Unix seconds (e.g. 1795315951.5) or an RFC 3339 time (e.g. \
             2026-11-22T02:52:31Z)",
            warren_runtime::truncate_text(text, 64)
        )
    };
    let text = text.trim();
    if text.contains('T') || text.contains('t') {
        return warren_runtime::parse_rfc3339_nanos(text).ok_or_else(bad);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || fraction.len() > 9
        || text.ends_with('.')
    {
        return Err(bad());
    }
    let secs: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = if fraction.is_empty() {
        0
    } else {
        let digits: i64 = fraction.parse().map_err(|_| bad())?;
        digits * 10i64.pow(9 - fraction.len() as u32)
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(bad)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_unix_seconds_or_rfc3339() {
        assert_eq!(parse_since("0"), Ok(0));
        assert_eq!(parse_since("1795315951"), Ok(1_795_315_951_000_000_000));
        assert_eq!(parse_since("1795315951.25"), Ok(1_795_315_951_250_000_000));
        assert_eq!(
            parse_since("2026-11-22T02:52:31.000000001Z"),
            Ok(1_795_315_951_000_000_001)
        );
        for bad in [
            "",
            "-1",
            "1.",
            ".5",
            "1.1234567891",
            "10m",
            "99999999999999999999",
            "2026-11-22T02:52:31",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
