//! An operator's steps in a rollout through the node machine (issue 15): `service rollback`
//! needs a previous spec and returns to it; `promote` only moves a canary awaiting
//! promotion, `pause` only an updating rollout, `resume` only a paused one; each is in the
//! cluster's history under its verb.

mod support;

use support::Cluster;
use warren_core::machine::WriteErrorKind;
use warren_core::machine::{RolloutStep, PAUSED_BY_OPERATOR};
use warren_core::patch::ServicePatch;
use warren_core::{Write, WriteError};
use warren_crdt::test_utils::{service_name, spec};
use warren_crdt::{CanaryCount, Deploy, Rollout, RolloutState};

fn step(service: &str, step: RolloutStep) -> Write {
    Write::StepRollout {
        service: service_name(service),
        step,
        now_ms: 1_000,
    }
}

#[test]
fn rollback_promote_pause_and_resume_check_the_rollouts_state() {
    let mut cluster = Cluster::founded("a", false);
    cluster.tick();
    let m = cluster.machine(0);
    let web = service_name("web");
    m.write(Write::CreateService(
        web.clone(),
        Box::new(spec("warren/busybox:latest", 4)),
    ))
    .expect("create");

    let never_updated = m
        .write(Write::RollbackService(web.clone()))
        .expect_err("nothing to roll back to");
    assert_eq!(never_updated.kind(), WriteErrorKind::Invalid);
    assert!(
        never_updated.to_string().contains("no previous spec"),
        "{never_updated}"
    );
    let none = m
        .write(step("web", RolloutStep::Promote))
        .expect_err("no rollout yet");
    assert_eq!(
        none.to_string(),
        "service web has no canary waiting for promotion (rollout: none)"
    );

    let patch: ServicePatch =
        serde_json::from_str(r#"{"image": "warren/busybox:v2", "update": {"delay_ms": 5000}}"#)
            .expect("patch");
    m.write(Write::UpdateService(web.clone(), Box::new(patch)))
        .expect("update");
    let service = m.state().services().remove(&web).expect("web");
    assert_eq!(service.spec.update.delay_ms, 5_000);
    assert_eq!(service.spec.update.parallelism, 1, "only the delay changed");
    let rollout = service.rollout.expect("an update starts a rollout");
    assert_eq!(rollout.state, RolloutState::Updating);

    let promote = m
        .write(step("web", RolloutStep::Promote))
        .expect_err("no canary");
    assert!(
        matches!(promote, WriteError::RolloutStep { .. }),
        "{promote:?}"
    );
    assert_eq!(promote.kind(), WriteErrorKind::Conflict);
    assert_eq!(
        promote.to_string(),
        "service web has no canary waiting for promotion (rollout: updating)"
    );
    assert!(m.write(step("web", RolloutStep::Resume)).is_err());

    m.write(step("web", RolloutStep::Pause)).expect("pause");
    let paused = m.state().services().remove(&web).expect("web").rollout;
    assert_eq!(
        paused.as_ref().map(|r| r.state.clone()),
        Some(RolloutState::Paused {
            reason: PAUSED_BY_OPERATOR.into()
        })
    );
    let again = m
        .write(step("web", RolloutStep::Pause))
        .expect_err("paused already");
    assert!(again.to_string().contains("(rollout: paused)"), "{again}");
    m.write(step("web", RolloutStep::Resume)).expect("resume");
    let resumed = m
        .state()
        .services()
        .remove(&web)
        .expect("web")
        .rollout
        .expect("rollout");
    assert_eq!(resumed.state, RolloutState::Updating);
    assert_eq!(resumed.updated_at_ms, 1_000);

    // A canary waiting (as the lease holder writes it) is promoted to a rolling update.
    let awaiting = Rollout {
        state: RolloutState::AwaitingPromotion,
        deploy: Deploy::Canary {
            count: CanaryCount::Tasks(1),
            weight_percent: None,
        },
        ..resumed
    };
    m.state_mut().set_rollout(&web, &awaiting).expect("set");
    m.write(step("web", RolloutStep::Promote)).expect("promote");
    let promoted = m
        .state()
        .services()
        .remove(&web)
        .expect("web")
        .rollout
        .expect("rollout");
    assert_eq!(
        (promoted.state, promoted.deploy),
        (RolloutState::Updating, Deploy::Rolling)
    );

    m.write(Write::RollbackService(web.clone()))
        .expect("rollback");
    let back = m.state().services().remove(&web).expect("web");
    assert_eq!(back.spec.image, "warren/busybox:latest");
    assert_eq!(back.rollout.map(|r| r.state_word()), Some("rolling back"));

    let history: Vec<String> = m
        .history(Some(&web), 100)
        .into_iter()
        .map(|h| h.message)
        .collect();
    for verb in ["pause", "resume", "promote", "rollback"] {
        let line = format!("service {verb} web");
        assert!(history.contains(&line), "{line} not in {history:?}");
    }
}

/// The lease holder stamps each rollout record it writes with its wall clock (as the
/// driver gave it): here the pause its monitor writes when the new task exits.
#[test]
fn the_holders_record_writes_carry_its_wall_clock() {
    use warren_core::protocol::{TaskState, TaskStatus};
    const WALL: u64 = 1_796_000_000_000;
    let mut cluster = Cluster::founded("a", false);
    cluster.tick();
    let web = service_name("web");
    cluster
        .machine(0)
        .write(Write::CreateService(
            web.clone(),
            Box::new(spec("warren/busybox:latest", 1)),
        ))
        .expect("create");
    let start = cluster.now;
    cluster.machine(0).set_wall_clock(start, WALL);
    cluster.advance(2_000);
    let slot_generation = |cluster: &mut Cluster| {
        cluster
            .machine(0)
            .state()
            .assignments()
            .values()
            .map(|a| a.spec_generation)
            .collect::<Vec<u64>>()
    };
    assert_eq!(slot_generation(&mut cluster), vec![1], "placed");
    let patch: ServicePatch =
        serde_json::from_str(r#"{"image": "warren/busybox:v2"}"#).expect("patch");
    cluster
        .machine(0)
        .write(Write::UpdateService(web.clone(), Box::new(patch)))
        .expect("update");
    cluster.advance(1_000);
    assert_eq!(
        slot_generation(&mut cluster),
        vec![2],
        "moved by the rollout"
    );
    cluster.machine(0).set_local_status(vec![TaskStatus {
        service: "web".into(),
        slot: 0,
        state: TaskState::Exited,
        exit_code: Some(1),
        generation: 2,
        ..TaskStatus::default()
    }]);
    cluster.advance(1_000);
    let end = cluster.now;
    let record = cluster
        .machine(0)
        .state()
        .services()
        .remove(&web)
        .and_then(|s| s.rollout)
        .expect("a record");
    assert!(
        matches!(&record.state, RolloutState::Paused { reason } if reason.contains("exited with code 1")),
        "{record:?}"
    );
    assert!(
        (WALL..=WALL + end.since(start)).contains(&record.updated_at_ms),
        "stamped within the ticks that ran: {}",
        record.updated_at_ms
    );
}
