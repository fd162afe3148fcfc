//! The checks a spec's rollout fields pass (`update`, `rollback`, `deploy`; issue 15), run
//! by [`ServiceSpec::validate`] wherever a spec enters: create, update, and a spec read from
//! the document.

use crate::model::{ServiceMode, ServiceSpec, MAX_PERIOD_MS};
use crate::rollout::{CanaryCount, Deploy, UpdatePolicy};
use crate::CrdtError;

/// Largest `max_failure_ratio_permille`: 1,000 (a ratio of 1.0, every slot may fail).
pub const MAX_FAILURE_RATIO_PERMILLE: u16 = 1_000;

fn invalid(field: &'static str, reason: impl Into<String>) -> CrdtError {
    CrdtError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}

/// Checks one policy; `flag` is `update` or `rollback` (the CLI's `--update-*` or
/// `--rollback-*`), `field` the API field named in the error.
fn check_policy(field: &'static str, flag: &str, p: &UpdatePolicy) -> Result<(), CrdtError> {
    if p.max_failure_ratio_permille > MAX_FAILURE_RATIO_PERMILLE {
        return Err(invalid(
            field,
            format!(
                "--{flag}-max-failure-ratio must be between 0 and 1 (got {})",
                f64::from(p.max_failure_ratio_permille) / 1000.0
            ),
        ));
    }
    for (what, ms) in [("delay", p.delay_ms), ("monitor", p.monitor_ms)] {
        if ms > MAX_PERIOD_MS {
            return Err(invalid(
                field,
                format!(
                    "--{flag}-{what} must be at most {} s (got {} ms)",
                    MAX_PERIOD_MS / 1000,
                    ms
                ),
            ));
        }
    }
    Ok(())
}

impl ServiceSpec {
    /// The rollout fields' rules: failure ratios at most 1.0 (1,000‰), delays and monitor
    /// periods at most an hour, a canary of at least 1 task or 1–100 %, a canary weight of
    /// 0–100 %, and no canary for a global service (it has no replica count to take a share
    /// of).
    ///
    /// Errors: [`CrdtError::InvalidSpec`] on field `update`, `rollback` or `deploy`.
    pub(crate) fn validate_rollout(&self) -> Result<(), CrdtError> {
        check_policy("update", "update", &self.update)?;
        check_policy("rollback", "rollback", &self.rollback)?;
        if let Deploy::Canary {
            count,
            weight_percent,
        } = self.deploy
        {
            if self.mode == ServiceMode::Global {
                return Err(invalid(
                    "deploy",
                    "a global service runs one task per node: --deploy canary needs a \
                     replicated service (use --deploy rolling)",
                ));
            }
            match count {
                CanaryCount::Tasks(0) => {
                    return Err(invalid("deploy", "--canary must be at least 1 task"))
                }
                CanaryCount::Percent(p) if !(1..=100).contains(&p) => {
                    return Err(invalid(
                        "deploy",
                        format!("--canary must be 1% to 100% (got {p}%)"),
                    ))
                }
                _ => {}
            }
            if let Some(w) = weight_percent.filter(|w| *w > 100) {
                return Err(invalid(
                    "deploy",
                    format!("--canary-weight must be 0 to 100 percent (got {w})"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            image: "warren/busybox:latest".into(),
            replicas: 4,
            ..Default::default()
        }
    }

    fn refused(s: &ServiceSpec, field: &str, words: &str) {
        match s.validate() {
            Err(CrdtError::InvalidSpec { field: f, reason }) => {
                assert_eq!(f, field, "{reason}");
                assert!(reason.contains(words), "{reason}");
            }
            other => panic!("expected {field} refused, got {other:?}"),
        }
    }

    #[test]
    fn rollout_fields_are_checked() {
        let mut s = spec();
        s.update.parallelism = 0;
        s.update.max_failure_ratio_permille = 1_000;
        s.rollback.parallelism = 1_000_000;
        assert!(s.validate().is_ok());
        s.update.max_failure_ratio_permille = 1_001;
        refused(&s, "update", "--update-max-failure-ratio");
        let mut s = spec();
        s.rollback.monitor_ms = MAX_PERIOD_MS + 1;
        refused(&s, "rollback", "--rollback-monitor");
        let canary = |count, weight_percent| Deploy::Canary {
            count,
            weight_percent,
        };
        let mut s = spec();
        for ok in [
            canary(CanaryCount::Tasks(1), None),
            canary(CanaryCount::Percent(100), Some(0)),
            canary(CanaryCount::Percent(1), Some(100)),
        ] {
            s.deploy = ok;
            assert!(s.validate().is_ok(), "{ok:?}");
        }
        s.deploy = canary(CanaryCount::Tasks(0), None);
        refused(&s, "deploy", "at least 1");
        s.deploy = canary(CanaryCount::Percent(0), None);
        refused(&s, "deploy", "1% to 100%");
        s.deploy = canary(CanaryCount::Percent(101), None);
        refused(&s, "deploy", "1% to 100%");
        s.deploy = canary(CanaryCount::Tasks(1), Some(101));
        refused(&s, "deploy", "--canary-weight");
        let global = ServiceSpec {
            replicas: 0,
            mode: ServiceMode::Global,
            deploy: canary(CanaryCount::Tasks(1), None),
            ..spec()
        };
        refused(&global, "deploy", "global");
        let blue_green = ServiceSpec {
            deploy: Deploy::BlueGreen,
            ..global
        };
        assert!(blue_green.validate().is_ok());
    }
}
