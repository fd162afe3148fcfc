//! Volumes and host paths mounted into task containers (issue 16, item 6).
//!
//! A Warren volume becomes one Docker volume per node, named
//! `warren-{volume}-{last 8 chars of node}` ([`docker_volume_name`]) and labelled
//! [`LABEL_VOLUME`] (the Warren name) and [`LABEL_NODE`](crate::LABEL_NODE) (the node), so that
//! two nodes sharing one engine (tests do) never share data, and a node finds its own
//! volumes again. [`create_and_start`](crate::ContainerRuntime::create_and_start) creates
//! the task's volumes first (Docker's volume create is idempotent for one name and driver);
//! stopping or removing a task never touches them: only
//! [`DockerRuntime::remove_volume`] deletes a volume's data.

use std::collections::HashMap;

use bollard::models::{Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};

use crate::error::status_code;
use crate::{DockerRuntime, RuntimeError, LABEL_NODE};

/// Label on a Docker volume Warren made: the Warren volume's name.
pub const LABEL_VOLUME: &str = "warren.volume";

/// Where a task mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A Warren volume on this node.
    Volume {
        /// The Warren volume's name (value of [`LABEL_VOLUME`]).
        name: String,
        /// Docker volume driver (`local`).
        driver: String,
        /// Driver options (`docker volume create --opt K=V`).
        options: std::collections::BTreeMap<String, String>,
    },
    /// A host path (absolute), bind-mounted.
    Bind {
        /// The path on the host.
        path: String,
    },
}

/// One mount of a task container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMount {
    /// What is mounted.
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
}

/// The Docker volume holding Warren volume `volume` on node `node`:
/// `warren-{volume}-{last 8 chars of node}` (characters Docker refuses become `-`).
pub fn docker_volume_name(volume: &str, node: &str) -> String {
    let count = node.chars().count();
    let suffix: String = node.chars().skip(count.saturating_sub(8)).collect();
    format!("warren-{volume}-{suffix}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The engine's mounts for `mounts` of a task on node `node`.
pub(crate) fn docker_mounts(node: &str, mounts: &[TaskMount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| {
            let (typ, source) = match &m.source {
                MountSource::Volume { name, .. } => {
                    (MountType::VOLUME, docker_volume_name(name, node))
                }
                MountSource::Bind { path } => (MountType::BIND, path.clone()),
            };
            Mount {
                target: Some(m.target.clone()),
                source: Some(source),
                typ: Some(typ),
                read_only: Some(m.readonly),
                ..Default::default()
            }
        })
        .collect()
}

impl DockerRuntime {
    /// Creates the Docker volume of every Warren volume in `mounts` for node `node` (a
    /// no-op for one that exists).
    ///
    /// Errors: [`RuntimeError::Docker`] when the engine refuses (e.g. an unknown driver
    /// option).
    pub async fn ensure_volumes(
        &self,
        node: &str,
        mounts: &[TaskMount],
    ) -> Result<(), RuntimeError> {
        for m in mounts {
            let MountSource::Volume {
                name,
                driver,
                options,
            } = &m.source
            else {
                continue;
            };
            let labels: HashMap<String, String> = [
                (LABEL_VOLUME.to_string(), name.clone()),
                (LABEL_NODE.to_string(), node.to_string()),
            ]
            .into();
            let request = VolumeCreateRequest {
                name: Some(docker_volume_name(name, node)),
                driver: Some(driver.clone()),
                driver_opts: Some(options.clone().into_iter().collect()),
                labels: Some(labels),
                ..Default::default()
            };
            self.docker()
                .create_volume(request)
                .await
                .map_err(|e| self.err("create_volume", e))?;
        }
        Ok(())
    }

    /// The Warren volumes node `node` holds on this engine, as (Warren name, Docker name).
    ///
    /// Errors: [`RuntimeError::Docker`] / [`RuntimeError::Unavailable`].
    pub async fn list_node_volumes(
        &self,
        node: &str,
    ) -> Result<Vec<(String, String)>, RuntimeError> {
        let filters: HashMap<&str, Vec<String>> =
            [("label", vec![format!("{LABEL_NODE}={node}")])].into();
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let list = self
            .docker()
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.err("list_volumes", e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((v.labels.get(LABEL_VOLUME)?.clone(), v.name)))
            .collect())
    }

    /// Deletes Docker volume `docker_name` and its data; `Ok` when it does not exist.
    ///
    /// Errors: [`RuntimeError::Docker`] when the engine refuses (409: a container still
    /// uses it; retry once that container is gone).
    pub async fn remove_docker_volume(&self, docker_name: &str) -> Result<(), RuntimeError> {
        let options = RemoveVolumeOptionsBuilder::new().force(false).build();
        match self
            .docker()
            .remove_volume(docker_name, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.err("remove_volume", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_volume_names_carry_the_node() {
        assert_eq!(
            docker_volume_name("data", "12D3KooWAbCdEfGh12345678"),
            "warren-data-12345678"
        );
        let mounts = [
            TaskMount {
                source: MountSource::Volume {
                    name: "data".into(),
                    driver: "local".into(),
                    options: Default::default(),
                },
                target: "/data".into(),
                readonly: false,
            },
            TaskMount {
                source: MountSource::Bind {
                    path: "/srv".into(),
                },
                target: "/srv".into(),
                readonly: true,
            },
        ];
        let docker = docker_mounts("12D3KooWnodeBxyz", &mounts);
        assert_eq!(docker[0].source.as_deref(), Some("warren-data-nodeBxyz"));
        assert_eq!(docker[0].typ, Some(MountType::VOLUME));
        assert_eq!(docker[1].typ, Some(MountType::BIND));
        assert_eq!(docker[1].read_only, Some(true));
    }
}
