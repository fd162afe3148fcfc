//! This node's word on the platforms of the current services' images (issue 16, the
//! architecture rule of [`crate::core::image_platform`]): every [`EVERY`], the images of the
//! live services that are in this engine's store are inspected
//! ([`DockerRuntime::image_report`]) and the reports go to the actor, which sends them in its
//! heartbeats. An engine that cannot be reached reports nothing (the rule then restricts
//! nothing from this node).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use warren_runtime::DockerRuntime;

use crate::core::image_platform::{ImageReport, MAX_IMAGE_REPORTS};
use crate::machine::Snapshot;

/// How often the images are inspected again.
pub(crate) const EVERY: Duration = Duration::from_secs(30);

/// Runs the readings until `cancel` fires: the first at once, then every [`EVERY`].
pub(crate) fn spawn(
    docker_host: Option<String>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    reports: watch::Sender<Vec<ImageReport>>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let images: BTreeSet<String> = snapshot
                .borrow()
                .services
                .values()
                .filter(|s| !s.deleted)
                .map(|s| s.spec.image.clone())
                .collect();
            let read = tokio::select! {
                () = cancel.cancelled() => return,
                read = read(docker_host.as_deref(), images) => read,
            };
            reports.send_if_modified(|current| {
                let changed = *current != read;
                *current = read;
                changed
            });
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    })
}

/// The reports of those of `images` the engine has (at most [`MAX_IMAGE_REPORTS`]).
async fn read(docker_host: Option<&str>, images: BTreeSet<String>) -> Vec<ImageReport> {
    let runtime = match DockerRuntime::connect(docker_host).await {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "no engine to read image platforms from");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for image in images.into_iter().take(MAX_IMAGE_REPORTS) {
        match runtime.image_report(&image).await {
            Ok(Some(report)) => out.push(report),
            Ok(None) => {}
            Err(e) => debug!(%image, error = %e, "could not inspect an image's platform"),
        }
    }
    out
}
