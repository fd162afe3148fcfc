//! Partial changes sent by operators: [`ServicePatch`] and [`ClusterSettingsPatch`].
//!
//! A service patch is what `warren-cli service update NAME --flag ...` sends: only the fields
//! given change. The node that takes the write applies it to the spec its
//! replica holds and writes the result with the field-wise
//! [`DesiredState::update_service`](warren_crdt::DesiredState::update_service), so concurrent
//! updates of other fields on other peers survive the merge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warren_crdt::{
    CanaryCount, ClusterSetting, Deploy, FailureAction, HealthCheck, HealthProbe, PortSpec,
    RestartCondition, SecretMount, ServiceMode, ServiceSpec, UpdateOrder, UpdatePolicy,
};

/// Changes to a health check. With no check in the spec, `probe` is required; the other
/// fields keep their value (or the default of [`HealthCheck::new`]) unless given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthPatch {
    /// A new probe.
    #[serde(default)]
    pub probe: Option<HealthProbe>,
    /// Milliseconds between probes.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Milliseconds before a probe counts as failed.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Consecutive failures that make a task unhealthy.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Milliseconds after a start in which failures do not count.
    #[serde(default)]
    pub start_period_ms: Option<u64>,
}

impl HealthPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == HealthPatch::default()
    }
}

/// The body of `PATCH /v1/services/{name}`: every field optional; absent fields keep their
/// value. For limits, `0` means "no limit" (`restart_max_attempts`, `nano_cpus`,
/// `memory_bytes`), as with Docker's own flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePatch {
    /// New image reference.
    #[serde(default)]
    pub image: Option<String>,
    /// New replica count.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// New command (replaces the whole command).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// New environment (replaces the whole map).
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// New published ports (replace the list).
    #[serde(default)]
    pub ports: Option<Vec<PortSpec>>,
    /// New secret mounts (replace the list).
    #[serde(default)]
    pub secrets: Option<Vec<SecretMount>>,
    /// Changes to the health check.
    #[serde(default)]
    pub health: Option<HealthPatch>,
    /// Remove the health check (cannot be combined with `health`).
    #[serde(default)]
    pub no_health: bool,
    /// New restart condition.
    #[serde(default)]
    pub restart_condition: Option<RestartCondition>,
    /// New restart limit; `0`: no limit.
    #[serde(default)]
    pub restart_max_attempts: Option<u32>,
    /// New base restart delay, milliseconds.
    #[serde(default)]
    pub restart_delay_ms: Option<u64>,
    /// New CPU limit in nano-CPUs; `0`: no limit.
    #[serde(default)]
    pub nano_cpus: Option<u64>,
    /// New memory limit in bytes; `0`: no limit.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// New stop timeout, milliseconds.
    #[serde(default)]
    pub stop_timeout_ms: Option<u64>,
    /// New partition policy (`--on-partition`).
    #[serde(default)]
    pub on_partition: Option<warren_crdt::OnPartition>,
    /// New `--reschedule-after`, milliseconds; `0`: none (the policy's default).
    #[serde(default)]
    pub reschedule_after_ms: Option<u64>,
    /// New placement constraints (replace the list; empty: none).
    #[serde(default)]
    pub constraints: Option<Vec<warren_crdt::Constraint>>,
    /// New spread preferences (replace the list; empty: none).
    #[serde(default)]
    pub preferences: Option<Vec<warren_crdt::SpreadPreference>>,
    /// New `--max-replicas-per-node`; `0`: no limit.
    #[serde(default)]
    pub max_replicas_per_node: Option<u32>,
    /// Mounts to add (`--mount`); one at a target already mounted replaces it.
    #[serde(default)]
    pub mounts_add: Vec<warren_crdt::Mount>,
    /// Targets whose mounts to remove (`--mount-rm TARGET`), applied before `mounts_add`.
    #[serde(default)]
    pub mounts_rm: Vec<String>,
    /// New `--gpus`: whole GPUs each task reserves; `0`: none.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Constraints to remove (`--constraint-rm`), after `constraints` applies; one not in the
    /// spec is ignored, as in Swarm.
    #[serde(default)]
    pub constraints_rm: Vec<warren_crdt::Constraint>,
    /// Constraints to add (`--constraint-add`), after the removals; one already there is
    /// not added twice.
    #[serde(default)]
    pub constraints_add: Vec<warren_crdt::Constraint>,
    /// Spread preferences to remove (`--placement-pref-rm`), after `preferences` applies.
    #[serde(default)]
    pub preferences_rm: Vec<warren_crdt::SpreadPreference>,
    /// Spread preferences to add (`--placement-pref-add`), after the removals.
    #[serde(default)]
    pub preferences_add: Vec<warren_crdt::SpreadPreference>,
    /// The mode the operator expects (`--mode`): the same as the spec's, or the patch is
    /// refused ([`PatchError::ModeChange`]).
    #[serde(default)]
    pub mode: Option<ServiceMode>,
    /// Changes to the update policy (`--update-*`): only the fields given (issue 15).
    #[serde(default)]
    pub update: Option<PolicyPatch>,
    /// Changes to the rollback policy (`--rollback-*`): only the fields given.
    #[serde(default)]
    pub rollback: Option<PolicyPatch>,
    /// Changes to the deployment strategy (`--deploy`, `--canary`, `--canary-weight`).
    #[serde(default)]
    pub deploy: Option<DeployPatch>,
}

/// Changes to an update or rollback policy ([`UpdatePolicy`]): absent fields keep their
/// value, so `--update-delay 5s` alone changes only the delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    /// Slots per batch; 0: all at once.
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Milliseconds between batches.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Stop-first or start-first.
    #[serde(default)]
    pub order: Option<UpdateOrder>,
    /// Milliseconds a new task must stay running and healthy.
    #[serde(default)]
    pub monitor_ms: Option<u64>,
    /// Pause, rollback or continue when failures exceed the ratio.
    #[serde(default)]
    pub failure_action: Option<FailureAction>,
    /// Failures tolerated, thousandths of the slots updated (0–1,000).
    #[serde(default)]
    pub max_failure_ratio_permille: Option<u16>,
}

impl PolicyPatch {
    /// `policy` with the fields given replaced.
    pub fn apply(&self, policy: &UpdatePolicy) -> UpdatePolicy {
        UpdatePolicy {
            parallelism: self.parallelism.unwrap_or(policy.parallelism),
            delay_ms: self.delay_ms.unwrap_or(policy.delay_ms),
            order: self.order.unwrap_or(policy.order),
            monitor_ms: self.monitor_ms.unwrap_or(policy.monitor_ms),
            failure_action: self.failure_action.unwrap_or(policy.failure_action),
            max_failure_ratio_permille: self
                .max_failure_ratio_permille
                .unwrap_or(policy.max_failure_ratio_permille),
        }
    }
}

/// A deployment strategy's name, as `--deploy` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployStrategy {
    /// [`Deploy::Rolling`].
    Rolling,
    /// [`Deploy::Canary`].
    Canary,
    /// [`Deploy::BlueGreen`].
    BlueGreen,
}

/// Changes to the deployment strategy. `canary` or `canary_weight_percent` without
/// `strategy` keep (or, from another strategy, choose) canary; with another strategy they
/// are refused ([`PatchError::CanaryFlagsWithoutCanary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployPatch {
    /// The new strategy.
    #[serde(default)]
    pub strategy: Option<DeployStrategy>,
    /// How many tasks run the canary (`--canary N` or `P%`); default 1 task when canary is
    /// chosen without it.
    #[serde(default)]
    pub canary: Option<CanaryCount>,
    /// Share of connections the canary gets, percent (`--canary-weight`).
    #[serde(default)]
    pub canary_weight_percent: Option<u8>,
}

impl DeployPatch {
    /// `deploy` with the patch applied.
    ///
    /// Errors: [`PatchError::CanaryFlagsWithoutCanary`] when `canary` or
    /// `canary_weight_percent` come with a strategy other than canary.
    pub fn apply(&self, deploy: &Deploy) -> Result<Deploy, PatchError> {
        let canary_flags = self.canary.is_some() || self.canary_weight_percent.is_some();
        let strategy = match (self.strategy, canary_flags) {
            (Some(s), _) => s,
            (None, true) => DeployStrategy::Canary,
            (None, false) => return Ok(*deploy),
        };
        match strategy {
            DeployStrategy::Canary => {
                let (count, weight) = match deploy {
                    Deploy::Canary {
                        count,
                        weight_percent,
                    } => (*count, *weight_percent),
                    _ => (CanaryCount::Tasks(1), None),
                };
                Ok(Deploy::Canary {
                    count: self.canary.unwrap_or(count),
                    weight_percent: self.canary_weight_percent.or(weight),
                })
            }
            _ if canary_flags => Err(PatchError::CanaryFlagsWithoutCanary),
            DeployStrategy::Rolling => Ok(Deploy::Rolling),
            DeployStrategy::BlueGreen => Ok(Deploy::BlueGreen),
        }
    }
}

/// Why a patch cannot be applied to a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The patch both changes and removes the health check.
    #[error("a health check cannot be changed and removed at once")]
    HealthChangedAndRemoved,
    /// The patch changes a health check's timing, the spec has no check and the patch gives
    /// no probe.
    #[error(
        "the service has no health check to change: give a probe \
         (--health-cmd, --health-http or --health-tcp)"
    )]
    NoHealthCheckToChange,
    /// The patch changes the service's mode (replicated or global): as in Swarm, a service
    /// keeps its mode; remove it and create it again.
    #[error(
        "a service's mode cannot change (it is {from}, not {to}): remove the service and \
         create it again with --mode {to}",
        from = .from.as_str(),
        to = .to.as_str()
    )]
    ModeChange {
        /// The service's mode.
        from: ServiceMode,
        /// The mode the patch asked for.
        to: ServiceMode,
    },
    /// `--canary` or `--canary-weight` with a `--deploy` other than canary.
    #[error("--canary and --canary-weight go with --deploy canary only")]
    CanaryFlagsWithoutCanary,
}

impl ServicePatch {
    /// `spec` with the patch's fields applied. It is not validated here: check the result
    /// with [`ServiceSpec::validate`].
    ///
    /// Errors: [`PatchError::HealthChangedAndRemoved`] when the patch contradicts itself
    /// (`no_health` with `health`); [`PatchError::NoHealthCheckToChange`] when it changes a
    /// health check's timing while the spec has no check and the patch no probe;
    /// [`PatchError::ModeChange`] when it asks for another mode.
    pub fn apply(&self, spec: &ServiceSpec) -> Result<ServiceSpec, PatchError> {
        if let Some(to) = self.mode.filter(|m| *m != spec.mode) {
            return Err(PatchError::ModeChange {
                from: spec.mode,
                to,
            });
        }
        let mut out = spec.clone();
        if let Some(image) = &self.image {
            out.image = image.clone();
        }
        if let Some(replicas) = self.replicas {
            out.replicas = replicas;
        }
        if let Some(command) = &self.command {
            out.command = command.clone();
        }
        if let Some(env) = &self.env {
            out.env = env.clone();
        }
        if let Some(ports) = &self.ports {
            out.ports = ports.clone();
        }
        if let Some(secrets) = &self.secrets {
            out.secrets = secrets.clone();
        }
        match (&self.health, self.no_health) {
            (Some(h), true) if !h.is_empty() => return Err(PatchError::HealthChangedAndRemoved),
            (_, true) => out.health = None,
            (Some(h), false) if !h.is_empty() => {
                let mut check = match (out.health.take(), &h.probe) {
                    (_, Some(probe)) => HealthCheck {
                        probe: probe.clone(),
                        ..spec
                            .health
                            .clone()
                            .unwrap_or_else(|| HealthCheck::new(probe.clone()))
                    },
                    (Some(existing), None) => existing,
                    (None, None) => return Err(PatchError::NoHealthCheckToChange),
                };
                if let Some(v) = h.interval_ms {
                    check.interval_ms = v;
                }
                if let Some(v) = h.timeout_ms {
                    check.timeout_ms = v;
                }
                if let Some(v) = h.retries {
                    check.retries = v;
                }
                if let Some(v) = h.start_period_ms {
                    check.start_period_ms = v;
                }
                out.health = Some(check);
            }
            (_, false) => {}
        }
        if let Some(condition) = self.restart_condition {
            out.restart.condition = condition;
        }
        if let Some(max) = self.restart_max_attempts {
            out.restart.max_attempts = (max > 0).then_some(max);
        }
        if let Some(delay) = self.restart_delay_ms {
            out.restart.delay_ms = delay;
        }
        if let Some(n) = self.nano_cpus {
            out.resources.nano_cpus = (n > 0).then_some(n);
        }
        if let Some(m) = self.memory_bytes {
            out.resources.memory_bytes = (m > 0).then_some(m);
        }
        if let Some(ms) = self.stop_timeout_ms {
            out.stop_timeout_ms = Some(ms);
        }
        if let Some(policy) = self.on_partition {
            out.partition.on_partition = policy;
        }
        if let Some(ms) = self.reschedule_after_ms {
            out.partition.reschedule_after_ms = (ms > 0).then_some(ms);
        }
        if let Some(constraints) = &self.constraints {
            out.placement.constraints = constraints.clone();
        }
        if let Some(preferences) = &self.preferences {
            out.placement.preferences = preferences.clone();
        }
        if let Some(max) = self.max_replicas_per_node {
            out.placement.max_replicas_per_node = (max > 0).then_some(max);
        }
        out.mounts.retain(|m| {
            !self.mounts_rm.contains(&m.target)
                && !self.mounts_add.iter().any(|a| a.target == m.target)
        });
        out.mounts.extend(self.mounts_add.iter().cloned());
        if let Some(gpus) = self.gpus {
            out.gpus = gpus;
        }
        edit_list(
            &mut out.placement.constraints,
            &self.constraints_rm,
            &self.constraints_add,
        );
        edit_list(
            &mut out.placement.preferences,
            &self.preferences_rm,
            &self.preferences_add,
        );
        if let Some(p) = &self.update {
            out.update = p.apply(&out.update);
        }
        if let Some(p) = &self.rollback {
            out.rollback = p.apply(&out.rollback);
        }
        if let Some(d) = &self.deploy {
            out.deploy = d.apply(&out.deploy)?;
        }
        Ok(out)
    }
}

/// `list` without the items of `rm`, then with those of `add` it lacks, in their order
/// (`--constraint-rm`/`--constraint-add`, Swarm's order: removals first).
fn edit_list<T: PartialEq + Clone>(list: &mut Vec<T>, rm: &[T], add: &[T]) {
    list.retain(|item| !rm.contains(item));
    for item in add {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// The body of `PATCH /v1/cluster/settings`, as `warren-cli cluster set KEY VALUE` sends
/// it: every setting optional; only those given are written, so a concurrent change of
/// another setting on another peer survives the merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettingsPatch {
    /// [`ClusterSettings::rebalance`](warren_crdt::ClusterSettings::rebalance).
    #[serde(default)]
    pub rebalance: Option<bool>,
}

impl ClusterSettingsPatch {
    /// The settings the patch writes, in a fixed order; empty when it names none.
    pub fn settings(&self) -> Vec<ClusterSetting> {
        self.rebalance
            .map(ClusterSetting::Rebalance)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_crdt::RestartPolicy;

    fn base() -> ServiceSpec {
        ServiceSpec {
            image: "warren/busybox:latest".into(),
            replicas: 2,
            command: vec!["httpd".into()],
            ..Default::default()
        }
    }

    #[test]
    fn policy_and_deploy_patches_change_only_what_they_name() {
        let patch: ServicePatch = serde_json::from_str(
            r#"{"update": {"delay_ms": 5000}, "rollback": {"order": "start-first"}}"#,
        )
        .expect("a patch");
        let mut spec = base();
        spec.update.parallelism = 2;
        let out = patch.apply(&spec).expect("apply");
        assert_eq!(
            out.update,
            UpdatePolicy {
                parallelism: 2,
                delay_ms: 5_000,
                ..UpdatePolicy::default()
            }
        );
        assert_eq!(out.rollback.order, UpdateOrder::StartFirst);
        assert_eq!(out.rollback.parallelism, 1);
        // --canary alone chooses canary (1 task unless given); the weight is kept after.
        let canary: ServicePatch =
            serde_json::from_str(r#"{"deploy": {"canary_weight_percent": 10}}"#).expect("patch");
        let out = canary.apply(&base()).expect("apply");
        assert_eq!(
            out.deploy,
            Deploy::Canary {
                count: CanaryCount::Tasks(1),
                weight_percent: Some(10)
            }
        );
        let count: ServicePatch =
            serde_json::from_str(r#"{"deploy": {"canary": {"percent": 25}}}"#).expect("patch");
        assert_eq!(
            count.apply(&out).expect("apply").deploy,
            Deploy::Canary {
                count: CanaryCount::Percent(25),
                weight_percent: Some(10)
            }
        );
        let rolling: ServicePatch =
            serde_json::from_str(r#"{"deploy": {"strategy": "rolling"}}"#).expect("patch");
        assert_eq!(rolling.apply(&out).expect("apply").deploy, Deploy::Rolling);
        let contradiction: ServicePatch = serde_json::from_str(
            r#"{"deploy": {"strategy": "blue-green", "canary": {"tasks": 2}}}"#,
        )
        .expect("patch");
        assert_eq!(
            contradiction.apply(&out),
            Err(PatchError::CanaryFlagsWithoutCanary)
        );
        assert!(serde_json::from_str::<ServicePatch>(r#"{"update": {"paralelism": 2}}"#).is_err());
    }

    #[test]
    fn only_the_given_fields_change() {
        let patch = ServicePatch {
            restart_condition: Some(RestartCondition::OnFailure),
            restart_max_attempts: Some(3),
            memory_bytes: Some(64 << 20),
            ..Default::default()
        };
        let out = patch.apply(&base()).expect("apply");
        assert_eq!(
            out.restart,
            RestartPolicy {
                condition: RestartCondition::OnFailure,
                max_attempts: Some(3),
                delay_ms: 1_000
            }
        );
        assert_eq!(out.resources.memory_bytes, Some(64 << 20));
        assert_eq!(
            ServiceSpec {
                restart: RestartPolicy::default(),
                resources: Default::default(),
                ..out.clone()
            },
            base()
        );
        // Zero lifts a limit.
        let lifted = ServicePatch {
            restart_max_attempts: Some(0),
            memory_bytes: Some(0),
            ..Default::default()
        }
        .apply(&out)
        .expect("apply");
        assert_eq!(lifted.restart.max_attempts, None);
        assert_eq!(lifted.resources.memory_bytes, None);
        assert_eq!(ServicePatch::default().apply(&out), Ok(out));
    }

    #[test]
    fn health_timing_needs_a_probe_and_keeps_the_rest() {
        let timing = ServicePatch {
            health: Some(HealthPatch {
                interval_ms: Some(2_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(timing.apply(&base()).is_err());
        let with_probe = ServicePatch {
            health: Some(HealthPatch {
                probe: Some(HealthProbe::Tcp { port: 80 }),
                retries: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        }
        .apply(&base())
        .expect("apply");
        let check = with_probe.health.clone().expect("check");
        assert_eq!((check.retries, check.interval_ms), (5, 10_000));
        let retimed = timing.apply(&with_probe).expect("apply");
        let check = retimed.health.clone().expect("check");
        assert_eq!(
            (check.probe, check.retries, check.interval_ms),
            (HealthProbe::Tcp { port: 80 }, 5, 2_000)
        );
        let removed = ServicePatch {
            no_health: true,
            ..Default::default()
        }
        .apply(&retimed)
        .expect("apply");
        assert_eq!(removed.health, None);
        assert!(ServicePatch {
            no_health: true,
            ..timing
        }
        .apply(&retimed)
        .is_err());
    }

    #[test]
    fn mounts_are_added_by_target_and_removed_by_target() {
        let patch: ServicePatch =
            serde_json::from_str(r#"{"mounts_add": ["source=a,target=/a", "source=b,target=/b"]}"#)
                .expect("a patch");
        let mounted = patch.apply(&base()).expect("apply");
        assert_eq!(mounted.mounts.len(), 2);
        let patch: ServicePatch = serde_json::from_str(
            r#"{"mounts_add": ["source=c,target=/a,readonly"], "mounts_rm": ["/b"]}"#,
        )
        .expect("a patch");
        let changed = patch.apply(&mounted).expect("apply");
        assert_eq!(changed.mounts.len(), 1, "{:?}", changed.mounts);
        assert_eq!(
            (
                changed.mounts[0].source.as_str(),
                changed.mounts[0].readonly
            ),
            ("c", true)
        );
        changed.validate().expect("valid");
    }

    #[test]
    fn placement_fields_replace_their_lists_and_zero_lifts_the_cap() {
        let patch: ServicePatch = serde_json::from_str(
            r#"{"constraints": ["node.labels.zone==a"], "max_replicas_per_node": 2}"#,
        )
        .expect("a patch");
        let placed = patch.apply(&base()).expect("apply");
        assert_eq!(placed.placement.constraints.len(), 1);
        let gpus: ServicePatch = serde_json::from_str(r#"{"gpus": 2}"#).expect("a patch");
        assert_eq!(gpus.apply(&base()).expect("apply").gpus, 2);
        let too_many: ServicePatch = serde_json::from_str(r#"{"gpus": 17}"#).expect("a patch");
        assert!(too_many.apply(&base()).expect("apply").validate().is_err());
        assert_eq!(placed.placement.max_replicas_per_node, Some(2));
        placed.validate().expect("valid");
        let cleared: ServicePatch =
            serde_json::from_str(r#"{"constraints": [], "max_replicas_per_node": 0}"#)
                .expect("a patch");
        let cleared = cleared.apply(&placed).expect("apply");
        assert!(cleared.placement.is_default(), "{:?}", cleared.placement);
        // A constraint that does not parse reads, and the spec's validation names it.
        let bad: ServicePatch =
            serde_json::from_str(r#"{"constraints": ["node.labels.zone=a"]}"#).expect("reads");
        let err = bad
            .apply(&base())
            .expect("apply")
            .validate()
            .expect_err("invalid")
            .to_string();
        assert!(
            err.contains("node.labels.zone=a") && err.contains("=="),
            "{err}"
        );
    }

    #[test]
    fn constraint_and_preference_edits_apply_to_the_current_lists() {
        let mut spec = base();
        spec.placement.constraints = vec![
            "node.labels.zone==a".parse().expect("c"),
            "node.os==linux".parse().expect("c"),
        ];
        let patch: ServicePatch = serde_json::from_str(
            r#"{"constraints_rm": ["node.labels.zone==a", "node.name==gone"],
                "constraints_add": ["node.labels.zone==b", "node.os==linux"],
                "preferences_add": ["spread=node.labels.rack"]}"#,
        )
        .expect("a patch");
        let out = patch.apply(&spec).expect("apply");
        let texts: Vec<String> = out
            .placement
            .constraints
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts, ["node.os==linux", "node.labels.zone==b"]);
        assert_eq!(out.placement.preferences.len(), 1);
        let rm: ServicePatch =
            serde_json::from_str(r#"{"preferences_rm": ["spread=node.labels.rack"]}"#)
                .expect("a patch");
        assert!(rm
            .apply(&out)
            .expect("apply")
            .placement
            .preferences
            .is_empty());
    }

    #[test]
    fn a_mode_change_is_refused_and_the_same_mode_is_not() {
        let same = ServicePatch {
            mode: Some(ServiceMode::Replicated),
            ..Default::default()
        };
        assert_eq!(same.apply(&base()).expect("same mode"), base());
        let global = ServicePatch {
            mode: Some(ServiceMode::Global),
            ..Default::default()
        };
        let err = global.apply(&base()).expect_err("mode change");
        assert_eq!(
            err,
            PatchError::ModeChange {
                from: ServiceMode::Replicated,
                to: ServiceMode::Global
            }
        );
        assert!(err.to_string().contains("--mode global"), "{err}");
    }
}
