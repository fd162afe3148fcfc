//! The engine's health verdicts as they happen: [`DockerRuntime::health_events`], so that a
//! node acts on a failing health check when the engine judges it, not at its next listing.

use std::collections::HashMap;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use futures::{future, Stream, StreamExt};

use crate::types::HealthStatus;
use crate::{DockerRuntime, RuntimeError, LABEL_NODE, LABEL_SERVICE};

/// One change of a Warren container's health, as the engine announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// The container's id (Docker: 64 hex characters).
    pub id: String,
    /// The container's name without the leading `/` (empty if the engine gave none).
    pub name: String,
    /// Its service (the value of its [`LABEL_SERVICE`] label).
    pub service: String,
    /// The new verdict.
    pub status: HealthStatus,
}

impl DockerRuntime {
    /// The health verdicts of node `node`'s containers (labelled [`LABEL_NODE`]` = node` and
    /// carrying [`LABEL_SERVICE`]) from now on, in the engine's order: one item each time
    /// the engine's health check of one of them changes its verdict (`docker events
    /// --filter type=container --filter event=health_status`).
    ///
    /// The stream holds no queue of its own: it reads the engine's response as it is polled,
    /// so a caller that does not poll it holds the engine back through the connection's
    /// (bounded) buffers, not this process's memory. It opens the connection at its first
    /// poll and ends (`None`) when the engine closes it (an engine restart); events in
    /// between two streams are not replayed, so a caller that opens a new one should
    /// re-read the containers once ([`ContainerRuntime::list_tasks`]). Events the stream
    /// cannot read (an action other than `health_status: <verdict>`, a container without
    /// an id) are skipped, logged at debug level.
    ///
    /// # Errors
    ///
    /// An item is [`RuntimeError::Unavailable`] when the engine cannot be reached or the
    /// connection breaks, [`RuntimeError::Engine`] (`op = "events"`) when it refuses the
    /// request or sends what does not decode; the stream usually ends after one.
    ///
    /// [`ContainerRuntime::list_tasks`]: crate::ContainerRuntime::list_tasks
    pub fn health_events(
        &self,
        node: &str,
    ) -> impl Stream<Item = Result<HealthEvent, RuntimeError>> + Send + Unpin + 'static {
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        filters.insert("type", vec!["container".to_string()]);
        filters.insert("event", vec!["health_status".to_string()]);
        // Two label filters: the engine keeps events that match both.
        filters.insert(
            "label",
            vec![format!("{LABEL_NODE}={node}"), LABEL_SERVICE.to_string()],
        );
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let runtime = self.clone();
        self.docker().events(Some(options)).filter_map(move |item| {
            future::ready(match item {
                Ok(message) => health_event(message).map(Ok),
                Err(e) => Some(Err(runtime.err("events", e))),
            })
        })
    }
}

/// The health event `message` carries, if it is one (see [`DockerRuntime::health_events`]).
fn health_event(message: EventMessage) -> Option<HealthEvent> {
    let action = message.action.unwrap_or_default();
    let status = match action
        .strip_prefix("health_status:")
        .map(str::trim)
        .unwrap_or_default()
    {
        "healthy" => HealthStatus::Healthy,
        "unhealthy" => HealthStatus::Unhealthy,
        "starting" => HealthStatus::Starting,
        _ => {
            tracing::debug!(%action, "skipping an engine event that is no health verdict");
            return None;
        }
    };
    if message
        .typ
        .is_some_and(|t| t != EventMessageTypeEnum::CONTAINER)
    {
        tracing::debug!(%action, "skipping a health event of no container");
        return None;
    }
    let actor = message.actor.unwrap_or_default();
    let Some(id) = actor.id.filter(|id| !id.is_empty()) else {
        tracing::debug!(%action, "skipping a health event without a container id");
        return None;
    };
    let mut attributes = actor.attributes.unwrap_or_default();
    Some(HealthEvent {
        id,
        name: attributes
            .remove("name")
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        service: attributes.remove(LABEL_SERVICE).unwrap_or_default(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn message(action: &str, id: Option<&str>) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_string()),
            actor: Some(EventActor {
                id: id.map(str::to_string),
                attributes: Some(HashMap::from([
                    ("name".to_string(), "warren-web-0-abcdefgh".to_string()),
                    (LABEL_SERVICE.to_string(), "web".to_string()),
                    ("image".to_string(), "warren/busybox:latest".to_string()),
                ])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_verdict_is_read_from_the_action() {
        for (action, status) in [
            ("health_status: unhealthy", HealthStatus::Unhealthy),
            ("health_status: healthy", HealthStatus::Healthy),
            ("health_status:starting", HealthStatus::Starting),
        ] {
            assert_eq!(
                health_event(message(action, Some("c0ffee"))),
                Some(HealthEvent {
                    id: "c0ffee".into(),
                    name: "warren-web-0-abcdefgh".into(),
                    service: "web".into(),
                    status,
                }),
                "{action}"
            );
        }
    }

    #[test]
    fn other_events_and_events_without_a_container_are_skipped() {
        for action in [
            "die",
            "health_status: sick",
            "health_status",
            "exec_start: ls",
        ] {
            assert_eq!(
                health_event(message(action, Some("c0ffee"))),
                None,
                "{action}"
            );
        }
        assert_eq!(health_event(message("health_status: healthy", None)), None);
        assert_eq!(
            health_event(message("health_status: healthy", Some(""))),
            None
        );
        let mut image = message("health_status: healthy", Some("c0ffee"));
        image.typ = Some(EventMessageTypeEnum::IMAGE);
        assert_eq!(health_event(image), None);
        assert_eq!(health_event(EventMessage::default()), None);
    }
}
