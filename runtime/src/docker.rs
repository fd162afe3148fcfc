//! The Docker driver: [`DockerRuntime`] over bollard.

use std::collections::HashMap;

use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerSummary, CreateImageInfo, DeviceRequest, HealthConfig,
    HealthStatusEnum, HostConfig, PortBinding, PortSummaryTypeEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ImportImageOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;

use crate::error::{error_chain, is_connection_error, status_code};
use crate::types::{HealthStatus, MAX_DETAIL_BYTES};
use crate::{
    truncate_text, ContainerInfo, ContainerRuntime, ContainerState, EngineInfo, NetworkInfo,
    NetworkSpec, PublishedPort, PullProgress, RuntimeError, TaskSpec, LABEL_EPOCH,
    LABEL_GENERATION, LABEL_GPUS, LABEL_NODE, LABEL_SERVICE, LABEL_SLOT,
};

/// Validates a Docker image reference offline against Docker's reference grammar
/// (`distribution/reference`; the rule is [`warren_crdt::parse_image_reference`], the same
/// one [`warren_crdt::ServiceSpec::validate`] applies). Examples of valid references:
/// `busybox`, `warren/busybox:latest`, `localhost:5000/a/b:1.0`, `a@sha256:<64 hex>`.
///
/// # Errors
///
/// [`RuntimeError::InvalidImage`] with `image` set to the input and a `reason` that says
/// which part is wrong and what is allowed there.
pub fn validate_image_reference(image: &str) -> Result<(), RuntimeError> {
    parse_image_reference(image).map(|_| ())
}

/// Parses `image` into its parts, or says why it is not a valid reference.
fn parse_image_reference(image: &str) -> Result<warren_crdt::ImageReference<'_>, RuntimeError> {
    warren_crdt::parse_image_reference(image).map_err(|reason| RuntimeError::InvalidImage {
        image: image.to_string(),
        reason,
    })
}

/// Endpoint used when neither an explicit host nor `DOCKER_HOST` is given.
const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// The longest stop timeout the engine is asked to honour, in seconds: stop requests get a
/// client timeout this long plus a margin (bollard's default 2 min would cut them short).
pub const MAX_STOP_TIMEOUT_SECS: u64 = 3_600;
/// Host address published ports are bound on.
const PUBLISH_HOST_IP: &str = "127.0.0.1";

/// A [`ContainerRuntime`] backed by a Docker engine (API ≥ 1.41, e.g. Debian's 20.10),
/// talking over a unix socket or plain TCP.
///
/// Cheap to clone (the bollard client is reference-counted); share one per node.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
}

impl DockerRuntime {
    /// Connects to the engine at `docker_host`, negotiates the API version and pings it.
    ///
    /// `docker_host`:
    /// - `None`: the `DOCKER_HOST` environment variable if set and non-empty, else
    ///   `unix:///var/run/docker.sock`;
    /// - `Some("unix:///path/to/docker.sock")` (a bare absolute path `/path` is taken as
    ///   `unix:///path`);
    /// - `Some("tcp://127.0.0.1:2375")` or `Some("http://127.0.0.1:2375")` (no TLS).
    ///
    /// After connecting it calls bollard's `negotiate_version()`: bollard 0.21 defaults to
    /// API 1.53, which Debian's engine 20.10 (max 1.41) refuses, so every later request uses
    /// `min(1.53, engine's version)`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] (with the endpoint and the cause) when the socket does
    /// not exist, the scheme is unsupported, the connection fails, or the version/ping
    /// exchange fails.
    pub async fn connect(docker_host: Option<&str>) -> Result<Self, RuntimeError> {
        let endpoint = Self::resolve_endpoint(docker_host)?;
        let unavailable = |e: bollard::errors::Error| RuntimeError::Unavailable {
            endpoint: endpoint.clone(),
            reason: error_chain(&e),
        };
        let docker = Docker::connect_with_host(&endpoint).map_err(unavailable)?;
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        let version = docker.client_version();
        tracing::debug!(%endpoint, api = %version, "connected to Docker engine");
        Ok(DockerRuntime { docker, endpoint })
    }

    /// The endpoint [`connect`](Self::connect) would use for `docker_host` (same rules),
    /// checked without any I/O: a node validates its `--docker-host` at start this way and
    /// connects later, when the engine is there.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] for a scheme other than `unix://`, `tcp://` or
    /// `http://` (a typo will not become reachable by waiting).
    pub fn resolve_endpoint(docker_host: Option<&str>) -> Result<String, RuntimeError> {
        let endpoint = match docker_host {
            Some(h) if h.starts_with('/') => format!("unix://{h}"),
            Some(h) => h.to_string(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        };
        let supported = ["unix:///", "tcp://", "http://"]
            .iter()
            .any(|scheme| endpoint.starts_with(scheme));
        if !supported {
            return Err(RuntimeError::Unavailable {
                endpoint,
                reason: "unsupported endpoint: use unix:///PATH, tcp://HOST:PORT or \
                         http://HOST:PORT"
                    .to_string(),
            });
        }
        Ok(endpoint)
    }

    /// The engine's version and API version (`GET /version`).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unavailable`] if the engine cannot be reached,
    /// [`RuntimeError::Engine`] (`op = "version"`) if it refuses.
    pub async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| self.err("version", e))?;
        Ok(EngineInfo {
            version: v.version.unwrap_or_else(|| "unknown".to_string()),
            api_version: v.api_version.unwrap_or_else(|| "unknown".to_string()),
        })
    }

    /// The endpoint this runtime connected to, e.g. `unix:///var/run/docker.sock` (for
    /// messages and logs).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The underlying bollard client (already version-negotiated), for operations this
    /// crate does not wrap (logs, stats, events, kill, …).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Maps a bollard error from operation `op` to [`RuntimeError`]: connection-level
    /// failures become `Unavailable`, everything else `Engine`.
    pub(crate) fn err(&self, op: &'static str, e: bollard::errors::Error) -> RuntimeError {
        if is_connection_error(&e) {
            RuntimeError::Unavailable {
                endpoint: self.endpoint.clone(),
                reason: error_chain(&e),
            }
        } else {
            RuntimeError::Engine { op, source: e }
        }
    }

    /// Makes sure `image` is in the local store, pulling it once if it is not.
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        if self.image_present(image).await? {
            return Ok(());
        }
        self.pull(image, |_| {}).await
    }

    /// Whether `image` is in the local store.
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err("inspect_image", e)),
        }
    }

    /// Pulls `image`, reporting running totals to `progress`.
    async fn pull(
        &self,
        image: &str,
        progress: impl Fn(&PullProgress) + Send + Sync,
    ) -> Result<(), RuntimeError> {
        let parsed = parse_image_reference(image)?;
        // A name without tag or digest would make the engine pull every tag.
        let tag = match (parsed.tag, parsed.digest) {
            (None, None) => "latest",
            (Some(tag), None) => tag,
            (_, Some(digest)) => digest,
        };
        tracing::info!(%image, "image not present locally; pulling");
        let options = CreateImageOptionsBuilder::new()
            .from_image(parsed.name)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        let mut tally = PullTally::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if tally.update(&info) {
                        progress(&tally.progress());
                    }
                }
                Err(e) if is_connection_error(&e) => return Err(self.err("create_image", e)),
                Err(e) => {
                    let reason = match e {
                        bollard::errors::Error::DockerResponseServerError { message, .. } => {
                            message
                        }
                        bollard::errors::Error::DockerStreamError { error } => error,
                        other => error_chain(&other),
                    };
                    return Err(RuntimeError::ImageUnavailable {
                        image: image.to_string(),
                        reason,
                    });
                }
            }
        }
        tracing::info!(%image, progress = %tally.progress(), "image pulled");
        Ok(())
    }

    /// Loads the images of a `docker save` tarball (`POST /images/load`), streamed from
    /// `tarball` without holding it in memory; returns what the engine loaded, e.g.
    /// `["Loaded image: warren/app:1"]`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] (`op = "import_image"`) when the engine refuses the
    /// tarball (not an image archive, truncated) or the stream fails,
    /// [`RuntimeError::Unavailable`] when the engine cannot be reached.
    pub async fn load_image<S, E>(&self, tarball: S) -> Result<Vec<String>, RuntimeError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let options = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut stream = self.docker.import_image_stream(options, tarball, None);
        let mut loaded = Vec::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| self.err("import_image", e))?;
            if let Some(line) = info.stream.as_deref().map(str::trim) {
                // Bounded: one line per image in the tarball, each cut to 256 bytes.
                if !line.is_empty() && loaded.len() < 1_000 {
                    loaded.push(truncate_text(line, MAX_DETAIL_BYTES));
                }
            }
        }
        Ok(loaded)
    }

    /// Stops container `id_or_name`: SIGTERM, then SIGKILL after the container's own stop
    /// timeout (set at create from [`TaskSpec::stop_timeout`]; the engine's 10 s for a
    /// container created without one). No `t` is sent, so the engine uses that timeout.
    /// `Ok(true)` when it stopped or was not running, `Ok(false)` when it does not exist.
    async fn stop_container(&self, id_or_name: &str) -> Result<bool, RuntimeError> {
        let patient = self
            .docker
            .clone()
            .with_timeout(Duration::from_secs(MAX_STOP_TIMEOUT_SECS + 60));
        match patient
            .stop_container(id_or_name, None::<StopContainerOptions>)
            .await
        {
            Ok(()) => Ok(true),
            // 304: already stopped.
            Err(e) if status_code(&e) == Some(304) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err("stop_container", e)),
        }
    }

    /// Stops (with the container's stop timeout) and force-removes container `id_or_name`;
    /// a container that is already gone is success.
    async fn stop_and_remove(&self, id_or_name: &str) -> Result<(), RuntimeError> {
        match self.stop_container(id_or_name).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e @ RuntimeError::Unavailable { .. }) => return Err(e),
            // Force-removal below kills it anyway.
            Err(e) => {
                tracing::warn!(container = %id_or_name, error = %e, "stop failed; force-removing")
            }
        }
        self.force_remove(id_or_name).await
    }

    /// Adds what only `inspect` tells to `info`: exit code, health verdict and the reason for
    /// trouble. A container that vanished meanwhile keeps what the listing said.
    async fn inspect_into(&self, info: &mut ContainerInfo) -> Result<(), RuntimeError> {
        let inspected = match self.docker.inspect_container(&info.id, None).await {
            Ok(i) => i,
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(self.err("inspect_container", e)),
        };
        if let Some(state) = inspected.state {
            apply_inspected_state(info, &state);
        }
        Ok(())
    }

    /// Force-removes container `id_or_name` (SIGKILL if running) with its anonymous
    /// volumes; gone or already being removed is success.
    async fn force_remove(&self, id_or_name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self
            .docker
            .remove_container(id_or_name, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e)
                if status_code(&e) == Some(409)
                    && e.to_string().contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(self.err("remove_container", e)),
        }
    }
}

/// Fills exit code, health and detail of `info` from an inspected container state.
fn apply_inspected_state(info: &mut ContainerInfo, state: &bollard::models::ContainerState) {
    let stopped = matches!(info.state, ContainerState::Exited | ContainerState::Dead);
    info.exit_code = if stopped { state.exit_code } else { None };
    let health = state.health.as_ref();
    info.health = match health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Some(HealthStatus::Starting),
        Some(HealthStatusEnum::HEALTHY) => Some(HealthStatus::Healthy),
        Some(HealthStatusEnum::UNHEALTHY) => Some(HealthStatus::Unhealthy),
        _ => None,
    };
    let last_probe = health
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .filter(|r| r.exit_code != Some(0))
        .map(|r| {
            let output = r.output.as_deref().unwrap_or("").trim();
            match r.exit_code {
                Some(code) if output.is_empty() => format!("health probe exited {code}"),
                _ => format!("health probe: {output}"),
            }
        });
    let detail = if state.oom_killed == Some(true) {
        "OOM killed (memory limit reached)".to_string()
    } else if let Some(error) = state.error.as_deref().filter(|e| !e.is_empty()) {
        error.to_string()
    } else if info.health == Some(HealthStatus::Unhealthy) {
        last_probe.unwrap_or_default()
    } else {
        String::new()
    };
    info.detail = truncate_text(&detail, MAX_DETAIL_BYTES);
}

/// Milliseconds as the engine's nanoseconds, saturating.
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The create request for `spec` (labels, env, command, published ports, health check,
/// limits, stop timeout; no restart policy: the node restarts tasks itself).
fn create_body(spec: &TaskSpec) -> ContainerCreateBody {
    let labels: HashMap<String, String> = [
        (LABEL_NODE, spec.node.clone()),
        (LABEL_SERVICE, spec.service.clone()),
        (LABEL_SLOT, spec.slot.to_string()),
        (LABEL_EPOCH, spec.epoch.to_string()),
        (LABEL_GENERATION, spec.generation.to_string()),
        (LABEL_GPUS, spec.gpus.join(",")),
    ]
    .into_iter()
    .filter(|(k, v)| *k != LABEL_GPUS || !v.is_empty())
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed: Vec<String> = Vec::new();
    for mapping in &spec.ports {
        let key = format!("{}/tcp", mapping.container_port);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(PUBLISH_HOST_IP.to_string()),
                host_port: Some(mapping.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }

    let healthcheck = match &spec.health {
        Some(h) => HealthConfig {
            test: Some(h.docker_test()),
            interval: Some(nanos(h.interval)),
            timeout: Some(nanos(h.timeout)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(nanos(h.start_period)),
            // StartInterval needs API 1.44; Debian's engine speaks 1.41.
            start_interval: None,
        },
        // Health is what the spec says: an image's own HEALTHCHECK is switched off.
        None => HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        },
    };
    let stop_timeout = spec.stop_timeout.map(|d| {
        let secs = d.as_millis().div_ceil(1000);
        i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .min(MAX_STOP_TIMEOUT_SECS as i64)
    });

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: Some(healthcheck),
        stop_timeout,
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            binds: {
                let binds: Vec<String> = spec
                    .secrets_dir
                    .iter()
                    .map(|dir| format!("{dir}:{}:ro", crate::types::SECRETS_MOUNT))
                    .chain(
                        spec.resolv_conf
                            .iter()
                            .map(|file| format!("{file}:/etc/resolv.conf:ro")),
                    )
                    .collect();
                (!binds.is_empty()).then_some(binds)
            },
            nano_cpus: spec.nano_cpus.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            memory: spec
                .memory_bytes
                .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            network_mode: spec.network.clone(),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.iter().map(ToString::to_string).collect()),
            mounts: (!spec.mounts.is_empty())
                .then(|| crate::volumes::docker_mounts(&spec.node, &spec.mounts)),
            device_requests: gpu_requests(&spec.gpus),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The device request giving a container exactly the NVIDIA GPUs `gpus` (device ids:
/// UUIDs or indexes), as `docker run --gpus device=…` sends it; `None` for no GPU.
fn gpu_requests(gpus: &[String]) -> Option<Vec<DeviceRequest>> {
    (!gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_string()),
            device_ids: Some(gpus.to_vec()),
            capabilities: Some(vec![vec!["gpu".to_string()]]),
            ..Default::default()
        }]
    })
}

/// Parses one list entry; `None` (after a warning) when its Warren labels are unusable.
fn container_info(summary: ContainerSummary) -> Option<ContainerInfo> {
    let id = summary.id.unwrap_or_default();
    let name = summary
        .names
        .and_then(|n| n.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let labels = summary.labels.unwrap_or_default();

    let skip = |why: &str| {
        tracing::warn!(container = %id, %name, "skipping container with warren.node label: {why}");
    };
    let Some(service) = labels.get(LABEL_SERVICE).filter(|s| !s.is_empty()) else {
        skip("missing warren.service label");
        return None;
    };
    let Some(slot) = labels.get(LABEL_SLOT) else {
        skip("missing warren.slot label");
        return None;
    };
    let Ok(slot) = slot.parse::<u32>() else {
        skip(&format!("warren.slot={slot:?} is not a u32"));
        return None;
    };
    let number = |label: &str| -> Result<u64, ()> {
        match labels.get(label) {
            None => Ok(0),
            Some(v) => v.parse::<u64>().map_err(|_| {
                skip(&format!("{label}={v:?} is not a u64"));
            }),
        }
    };
    let epoch = number(LABEL_EPOCH).ok()?;
    let generation = number(LABEL_GENERATION).ok()?;

    let state = match summary.state {
        Some(s) => ContainerState::from_docker(s.as_ref()),
        None => ContainerState::Unknown,
    };

    let mut ports: Vec<PublishedPort> = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter(|p| matches!(p.typ, None | Some(PortSummaryTypeEnum::TCP)))
        .filter_map(|p| {
            p.public_port.map(|host_port| PublishedPort {
                container_port: p.private_port,
                host_ip: p.ip.unwrap_or_default(),
                host_port,
            })
        })
        .collect();
    ports.sort_by(|a, b| {
        (a.container_port, a.host_port, &a.host_ip).cmp(&(
            b.container_port,
            b.host_port,
            &b.host_ip,
        ))
    });
    ports.dedup();
    let ipv6 = summary
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, endpoint)| {
            let addr = endpoint.global_ipv6_address?.parse().ok()?;
            Some((name, addr))
        })
        .collect();

    Some(ContainerInfo {
        id,
        name,
        service: service.clone(),
        slot,
        epoch,
        generation,
        state,
        status: summary.status.unwrap_or_default(),
        ports,
        exit_code: None,
        health: None,
        detail: String::new(),
        created_secs: summary.created.unwrap_or_default(),
        ipv6,
        gpus: labels
            .get(LABEL_GPUS)
            .map(|g| {
                g.split(',')
                    .filter(|d| !d.is_empty() && d.len() <= warren_crdt::MAX_GPU_ID_BYTES)
                    .take(warren_crdt::MAX_SERVICE_GPUS as usize)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Whether the listing alone leaves out something reconcile needs: the exit code of a
/// stopped container, or the health verdict of one with a health check (the listing's
/// status text says `(healthy)`, `(unhealthy)` or `(health: starting)` then).
fn needs_inspect(info: &ContainerInfo) -> bool {
    info.state != ContainerState::Running || info.status.contains("health")
}

impl ContainerRuntime for DockerRuntime {
    async fn list_tasks(&self, node: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        filters.insert("label", vec![format!("{LABEL_NODE}={node}")]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err("list_containers", e))?;
        let mut tasks: Vec<ContainerInfo> =
            summaries.into_iter().filter_map(container_info).collect();
        // Health and exit codes come from inspect, for the containers that need it (one
        // request each, in turn: an edge node runs few containers).
        for task in tasks.iter_mut() {
            if needs_inspect(task) {
                self.inspect_into(task).await?;
            }
        }
        tasks.sort_by(|a, b| (&a.service, a.slot, &a.name).cmp(&(&b.service, b.slot, &b.name)));
        Ok(tasks)
    }

    async fn create_and_start(&self, spec: &TaskSpec) -> Result<String, RuntimeError> {
        parse_image_reference(&spec.image)?;
        self.ensure_image(&spec.image).await?;
        self.ensure_volumes(&spec.node, &spec.mounts).await?;

        let name = spec.container_name();
        let body = create_body(spec);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Err(e) if status_code(&e) == Some(409) => {
                tracing::warn!(container = %name, "name already in use; removing the old container and retrying");
                self.force_remove(&name).await?;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        };
        let id = match created {
            Ok(response) => response.id,
            Err(e) if status_code(&e) == Some(404) => {
                // The image vanished between the check and the create.
                return Err(RuntimeError::ImageUnavailable {
                    image: spec.image.clone(),
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(self.err("create_container", e)),
        };

        if let Err(e) = self
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            let err = self.err("start_container", e);
            // Do not leave a created-but-never-started container behind.
            if let Err(cleanup) = self.force_remove(&id).await {
                tracing::warn!(container = %name, error = %cleanup, "could not remove container after failed start");
            }
            return Err(err);
        }
        tracing::debug!(container = %name, %id, "task container started");
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| self.err("start_container", e))
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.stop_container(id).await.map(|_| ())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.stop_and_remove(id).await
    }

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        parse_image_reference(image)?;
        self.image_present(image).await
    }

    async fn pull_image<F>(&self, image: &str, progress: F) -> Result<(), RuntimeError>
    where
        F: Fn(&PullProgress) + Send + Sync + 'static,
    {
        self.pull(image, progress).await
    }

    async fn list_volumes(&self, node: &str) -> Result<Vec<(String, String)>, RuntimeError> {
        self.list_node_volumes(node).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.remove_docker_volume(name).await
    }

    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo, RuntimeError> {
        DockerRuntime::ensure_network(self, spec).await
    }
}

/// Running totals of a pull, from the engine's per-layer progress messages.
#[derive(Debug, Default)]
struct PullTally {
    /// Per layer id: (downloaded, size, complete). Bounded by the image's layer count.
    layers: std::collections::BTreeMap<String, (u64, u64, bool)>,
}

impl PullTally {
    /// Most layers tracked (an image has at most 127 in practice).
    const MAX_LAYERS: usize = 1_024;

    /// Takes one message; `true` when the totals changed.
    fn update(&mut self, info: &CreateImageInfo) -> bool {
        let (Some(id), Some(status)) = (info.id.as_deref(), info.status.as_deref()) else {
            return false;
        };
        // Messages with an id are per layer, except the first ("Pulling from repo", id = tag).
        if status.starts_with("Pulling from") || status.starts_with("Digest") {
            return false;
        }
        if !self.layers.contains_key(id) && self.layers.len() >= Self::MAX_LAYERS {
            return false;
        }
        let layer = self.layers.entry(id.to_string()).or_default();
        let before = *layer;
        match status {
            "Pull complete" | "Already exists" | "Download complete" => {
                if layer.1 > 0 {
                    layer.0 = layer.1;
                }
                if status != "Download complete" {
                    layer.2 = true;
                }
            }
            "Downloading" => {
                if let Some(detail) = &info.progress_detail {
                    let current = detail.current.unwrap_or(0).max(0) as u64;
                    let total = detail.total.unwrap_or(0).max(0) as u64;
                    layer.0 = current;
                    layer.1 = layer.1.max(total);
                }
            }
            _ => {}
        }
        *layer != before || before == (0, 0, false)
    }

    fn progress(&self) -> PullProgress {
        PullProgress {
            layers: self.layers.len() as u32,
            layers_done: self.layers.values().filter(|l| l.2).count() as u32,
            bytes_done: self.layers.values().map(|l| l.0).sum(),
            bytes_total: self.layers.values().map(|l| l.1).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortMapping;
    use bollard::models::ContainerSummaryStateEnum;

    #[test]
    fn create_body_has_labels_ports_env_and_no_restart_policy() {
        let spec = TaskSpec {
            node: "12D3KooWnode".into(),
            service: "web".into(),
            slot: 2,
            epoch: 7,
            generation: 9,
            image: "warren/busybox:latest".into(),
            command: vec![],
            env: [("A".to_string(), "1".to_string())].into_iter().collect(),
            ports: vec![
                PortMapping {
                    container_port: 80,
                    host_port: None,
                },
                PortMapping {
                    container_port: 80,
                    host_port: Some(8080),
                },
            ],
            secrets_dir: Some("/run/warren/x/secrets/c".into()),
            ..Default::default()
        };
        let body = create_body(&spec);
        let labels = body.labels.unwrap_or_default();
        assert_eq!(labels.get(LABEL_SLOT).map(String::as_str), Some("2"));
        assert_eq!(labels.get(LABEL_EPOCH).map(String::as_str), Some("7"));
        assert_eq!(labels.get(LABEL_GENERATION).map(String::as_str), Some("9"));
        assert_eq!(body.cmd, None);
        assert_eq!(body.env, Some(vec!["A=1".to_string()]));
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string()]));
        assert_eq!(
            body.host_config.as_ref().and_then(|h| h.binds.clone()),
            Some(vec!["/run/warren/x/secrets/c:/run/secrets:ro".to_string()])
        );
        let hc = body.host_config.unwrap_or_default();
        assert!(hc.restart_policy.is_none());
        assert_eq!(hc.device_requests, None, "no GPU, no device request");
        assert!(!labels.contains_key(LABEL_GPUS));
        let bindings = hc
            .port_bindings
            .unwrap_or_default()
            .remove("80/tcp")
            .flatten()
            .unwrap_or_default();
        let ports: Vec<_> = bindings.iter().map(|b| b.host_port.clone()).collect();
        assert_eq!(ports, vec![Some(String::new()), Some("8080".to_string())]);
        assert!(bindings
            .iter()
            .all(|b| b.host_ip.as_deref() == Some("127.0.0.1")));
    }

    #[test]
    fn a_task_with_gpus_requests_exactly_those_devices() {
        let spec = TaskSpec {
            node: "12D3KooWnode".into(),
            service: "train".into(),
            image: "warren/busybox:latest".into(),
            gpus: vec!["GPU-5c0cbd6e".into(), "GPU-aa".into()],
            ..Default::default()
        };
        assert_eq!(
            create_body(&spec)
                .labels
                .unwrap_or_default()
                .get(LABEL_GPUS)
                .map(String::as_str),
            Some("GPU-5c0cbd6e,GPU-aa")
        );
        let requests = create_body(&spec)
            .host_config
            .and_then(|h| h.device_requests)
            .expect("a device request");
        assert_eq!(
            requests,
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: None,
                device_ids: Some(vec!["GPU-5c0cbd6e".into(), "GPU-aa".into()]),
                capabilities: Some(vec![vec!["gpu".into()]]),
                options: None,
            }]
        );
    }

    #[test]
    fn pull_progress_sums_the_layers() {
        let msg = |id: &str, status: &str, current: i64, total: i64| CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(bollard::models::ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..Default::default()
        };
        let mut tally = PullTally::default();
        assert!(!tally.update(&msg("latest", "Pulling from library/x", 0, 0)));
        assert!(tally.update(&msg("a", "Pulling fs layer", 0, 0)));
        assert!(tally.update(&msg("b", "Already exists", 0, 0)));
        assert!(tally.update(&msg("a", "Downloading", 1 << 20, 4 << 20)));
        let p = tally.progress();
        assert_eq!((p.layers, p.layers_done), (2, 1));
        assert_eq!((p.bytes_done, p.bytes_total), (1 << 20, 4 << 20));
        assert_eq!(p.percent(), Some(25));
        assert_eq!(p.to_string(), "1/2 layers, 1.0 MiB of 4.0 MiB (25%)");
        assert!(tally.update(&msg("a", "Pull complete", 0, 0)));
        let p = tally.progress();
        assert_eq!((p.layers_done, p.percent()), (2, Some(100)));
        assert_eq!(PullProgress::default().to_string(), "starting");
    }

    #[test]
    fn summaries_without_service_or_slot_are_skipped() {
        let labels = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            )
        };
        let summary = |l| ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/warren-web-0-x".into()]),
            labels: l,
            state: Some(ContainerSummaryStateEnum::EXITED),
            status: Some("Exited (0) 1 second ago".into()),
            ..Default::default()
        };
        assert!(container_info(summary(labels(&[(LABEL_SLOT, "0")]))).is_none());
        assert!(container_info(summary(labels(&[(LABEL_SERVICE, "web")]))).is_none());
        assert!(container_info(summary(labels(&[
            (LABEL_SERVICE, "web"),
            (LABEL_SLOT, "x")
        ])))
        .is_none());
        let info = container_info(summary(labels(&[
            (LABEL_SERVICE, "web"),
            (LABEL_SLOT, "0"),
        ])));
        let info = info.map(|i| (i.name, i.slot, i.epoch, i.state));
        assert_eq!(
            info,
            Some(("warren-web-0-x".to_string(), 0, 0, ContainerState::Exited))
        );
    }
}
