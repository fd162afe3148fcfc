//! Helpers the runtime's integration tests share: unique names, deadline polls, an HTTP get.

#![allow(dead_code)] // each test file uses its own subset

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_runtime::{ContainerInfo, ContainerRuntime, DockerRuntime};

pub(crate) const IMAGE: &str = "warren/busybox:latest";
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
/// How often the polls below look again (the first look is at once).
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// 64 random bits (std's randomly keyed hasher over the time and the pid).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A node name no other test (or run) uses: `test-<16 hex>`.
pub(crate) fn unique_node() -> String {
    format!("test-{:016x}", random_u64())
}

/// Polls `list_tasks(node)` until `pred` holds for the list, or panics after [`DEADLINE`].
pub(crate) async fn wait_for_tasks<F>(
    rt: &DockerRuntime,
    node: &str,
    what: &str,
    pred: F,
) -> Vec<ContainerInfo>
where
    F: Fn(&[ContainerInfo]) -> bool,
{
    let start = Instant::now();
    let mut every = tokio::time::interval(POLL);
    loop {
        every.tick().await;
        let tasks = rt.list_tasks(node).await.expect("list_tasks");
        if pred(&tasks) {
            return tasks;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}; last listing: {tasks:#?}"
        );
    }
}

/// Polls an async probe until it yields `Some`, or panics after [`DEADLINE`].
pub(crate) async fn poll<T, Fut: Future<Output = Result<T, String>>>(
    what: &str,
    mut probe: impl FnMut() -> Fut,
) -> T {
    let start = Instant::now();
    let mut every = tokio::time::interval(POLL);
    loop {
        every.tick().await;
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                start.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for {what}; last error: {last}"
            ),
        }
    }
}

/// `GET /` over HTTP/1.0 to 127.0.0.1:`port`; the whole response as text.
pub(crate) async fn http_get(port: u16) -> Result<String, String> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut body))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if text.contains("hello from warren") {
        Ok(text)
    } else {
        Err(format!("unexpected response {text:?}"))
    }
}
