//! Integration tests against the local Docker engine (image `warren/busybox:latest`).
//!
//! Every test uses its own node name, so tests run in parallel without seeing each
//! other's containers, and a [`Cleanup`] guard removes that node's containers even when an
//! assertion fails. Run `scripts/ensure-docker.sh` first on a fresh machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::{KillContainerOptions, RemoveContainerOptionsBuilder};
use warren_runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, DockerRuntime, HealthCheck, HealthStatus,
    HealthTest, PortMapping, RuntimeError, TaskSpec,
};

mod common;
use common::{http_get, poll, unique_node, wait_for_tasks, IMAGE};

fn spec(node: &str, service: &str, image: &str, ports: Vec<PortMapping>) -> TaskSpec {
    TaskSpec {
        node: node.to_string(),
        service: service.to_string(),
        slot: 0,
        epoch: 3,
        generation: 5,
        image: image.to_string(),
        command: vec![],
        env: BTreeMap::from([("WARREN_TEST".to_string(), "1".to_string())]),
        ports,
        ..Default::default()
    }
}

/// Force-removes every container labelled with `node` when dropped (also on panic).
struct Cleanup {
    node: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let node = self.node.clone();
        // Drop cannot await; run the cleanup on a private runtime in its own thread (the
        // test's runtime may be the one unwinding).
        let joined = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(runtime) = DockerRuntime::connect(None).await else {
                    return;
                };
                let Ok(tasks) = runtime.list_tasks(&node).await else {
                    return;
                };
                for t in tasks {
                    let options = RemoveContainerOptionsBuilder::new().force(true).build();
                    let _ = runtime
                        .docker()
                        .remove_container(&t.id, Some(options))
                        .await;
                }
            });
        })
        .join();
        if joined.is_err() {
            eprintln!("cleanup of node {} panicked", self.node);
        }
    }
}

async fn connect() -> DockerRuntime {
    DockerRuntime::connect(None)
        .await
        .expect("Docker engine reachable (run scripts/ensure-docker.sh)")
}

fn one_task(tasks: &[ContainerInfo]) -> &ContainerInfo {
    assert_eq!(tasks.len(), 1, "expected exactly one task: {tasks:#?}");
    &tasks[0]
}

#[tokio::test]
async fn task_lifecycle_publish_kill_restart_remove() {
    let rt = connect().await;
    let info = rt.engine_info().await.expect("engine_info");
    assert!(!info.version.is_empty() && !info.api_version.is_empty());

    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let spec = spec(
        &node,
        "web",
        IMAGE,
        vec![PortMapping {
            container_port: 80,
            host_port: None,
        }],
    );

    let id = rt.create_and_start(&spec).await.expect("create_and_start");
    assert!(!id.is_empty());

    let tasks = wait_for_tasks(&rt, &node, "task running", |t| {
        t.len() == 1 && t[0].state == ContainerState::Running && !t[0].ports.is_empty()
    })
    .await;
    let task = one_task(&tasks);
    assert_eq!(task.id, id);
    assert_eq!(task.name, spec.container_name());
    assert!(task.name.starts_with("warren-web-0-"), "{}", task.name);
    assert_eq!((task.service.as_str(), task.slot), ("web", 0));
    assert_eq!((task.epoch, task.generation), (3, 5));
    assert!(task.status.starts_with("Up"), "status {:?}", task.status);
    assert_eq!(task.ports.len(), 1, "{:?}", task.ports);
    let port = &task.ports[0];
    assert_eq!(port.container_port, 80);
    assert_eq!(port.host_ip, "127.0.0.1");
    assert_ne!(port.host_port, 0);

    let host_port = port.host_port;
    let response = poll("HTTP answer", || http_get(host_port)).await;
    assert!(response.contains("hello from warren"));

    // Kill it behind the runtime's back: the listing must show it exited.
    rt.docker()
        .kill_container(&id, None::<KillContainerOptions>)
        .await
        .expect("kill_container");
    let tasks = wait_for_tasks(&rt, &node, "task exited", |t| {
        t.len() == 1 && t[0].state == ContainerState::Exited
    })
    .await;
    assert!(
        one_task(&tasks).status.starts_with("Exited"),
        "status {:?}",
        tasks[0].status
    );
    assert!(one_task(&tasks).ports.is_empty());

    rt.start(&id).await.expect("start");
    let tasks = wait_for_tasks(&rt, &node, "task running again", |t| {
        t.len() == 1 && t[0].state == ContainerState::Running && !t[0].ports.is_empty()
    })
    .await;
    let host_port = one_task(&tasks).ports[0].host_port;
    poll("HTTP answer after restart", || http_get(host_port)).await;

    rt.remove(&id).await.expect("remove");
    wait_for_tasks(&rt, &node, "task gone", |t| t.is_empty()).await;
    rt.remove(&id).await.expect("second remove is Ok");
}

#[tokio::test]
async fn create_replaces_stale_container_with_same_name() {
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let mut spec = spec(&node, "stale", IMAGE, vec![]);
    spec.command = vec!["sleep".into(), "300".into()];

    spec.generation = 6;
    let first = rt.create_and_start(&spec).await.expect("first create");
    // The same slot and generation on the same node: the same name (names carry the
    // generation, so two generations of a slot can run side by side in a rollout).
    let second = rt.create_and_start(&spec).await.expect("second create");
    assert_ne!(first, second);

    let tasks = wait_for_tasks(&rt, &node, "replacement running", |t| {
        t.len() == 1 && t[0].state == ContainerState::Running
    })
    .await;
    assert_eq!(one_task(&tasks).id, second);
    assert_eq!(one_task(&tasks).generation, 6);
    // `sleep` as PID 1 ignores SIGTERM; leave the force-removal to the guard instead of
    // waiting out remove()'s 10 s grace period.
}

#[tokio::test]
async fn missing_image_is_image_unavailable() {
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let spec = spec(&node, "ghost", "warren/does-not-exist:1", vec![]);
    match rt.create_and_start(&spec).await {
        Err(e @ RuntimeError::ImageUnavailable { .. }) => {
            eprintln!("{e}");
            let RuntimeError::ImageUnavailable { image, reason } = e else {
                unreachable!()
            };
            assert_eq!(image, "warren/does-not-exist:1");
            assert!(!reason.is_empty());
        }
        other => panic!("expected ImageUnavailable, got {other:?}"),
    }
    assert!(rt.list_tasks(&node).await.expect("list").is_empty());
}

#[tokio::test]
async fn invalid_image_is_rejected_before_the_engine() {
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let spec = spec(&node, "bad", "Busybox", vec![]);
    assert!(matches!(
        rt.create_and_start(&spec).await,
        Err(RuntimeError::InvalidImage { .. })
    ));
}

#[tokio::test]
async fn unreachable_engine_is_unavailable() {
    match DockerRuntime::connect(Some("unix:///nonexistent.sock")).await {
        Err(e @ RuntimeError::Unavailable { .. }) => {
            let text = e.to_string();
            eprintln!("{text}");
            assert!(text.contains("unix:///nonexistent.sock"), "{text}");
            assert!(text.contains("is dockerd running?"), "{text}");
        }
        other => panic!(
            "expected Unavailable, got {:?}",
            other.map(|r| r.endpoint().to_string())
        ),
    }
    // Nothing listens on this TCP port on 127.0.0.1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let endpoint = format!("tcp://127.0.0.1:{closed}");
    assert!(matches!(
        DockerRuntime::connect(Some(&endpoint)).await,
        Err(RuntimeError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn unlabelled_containers_are_skipped() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptionsBuilder;

    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    // A container with warren.node but without warren.slot.
    let body = ContainerCreateBody {
        image: Some(IMAGE.to_string()),
        cmd: Some(vec!["true".to_string()]),
        labels: Some(
            [
                ("warren.node".to_string(), node.clone()),
                ("warren.service".to_string(), "odd".to_string()),
            ]
            .into_iter()
            .collect(),
        ),
        ..Default::default()
    };
    let name = format!("warren-odd-{node}");
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    rt.docker()
        .create_container(Some(options), body)
        .await
        .expect("create unlabelled container");
    assert!(rt.list_tasks(&node).await.expect("list").is_empty());
    rt.remove(&name).await.expect("remove by name");
}

/// A health check probing every 500 ms, unhealthy after 2 failures.
fn quick_check(test: HealthTest) -> HealthCheck {
    HealthCheck {
        test,
        interval: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        retries: 2,
        start_period: Duration::ZERO,
    }
}

/// busybox httpd on port 80 that exits on SIGTERM.
fn web_command() -> Vec<String> {
    [
        "sh",
        "-c",
        "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test]
async fn limits_health_check_and_stop_timeout_are_in_docker_inspect() {
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let limited = TaskSpec {
        command: web_command(),
        nano_cpus: Some(500_000_000),
        memory_bytes: Some(64 * 1024 * 1024),
        stop_timeout: Some(Duration::from_millis(2_500)),
        health: Some(HealthCheck {
            start_period: Duration::from_secs(3),
            ..quick_check(HealthTest::Http {
                port: 80,
                path: "/index.html".into(),
            })
        }),
        ..spec(&node, "limited", IMAGE, vec![])
    };
    let id = rt.create_and_start(&limited).await.expect("create limited");
    let inspected = rt
        .docker()
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let host = inspected.host_config.expect("host config");
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert!(
        host.restart_policy
            .and_then(|p| p.name)
            .is_none_or(|n| n.to_string() == "no" || n.to_string().is_empty()),
        "Warren restarts tasks itself; the engine must not"
    );
    let config = inspected.config.expect("config");
    // 2.5 s rounds up to the engine's whole seconds.
    assert_eq!(config.stop_timeout, Some(3));
    let check = config.healthcheck.expect("healthcheck");
    assert_eq!(
        check.test,
        Some(
            [
                "CMD",
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1:80/index.html"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    assert_eq!(check.interval, Some(500_000_000));
    assert_eq!(check.timeout, Some(2_000_000_000));
    assert_eq!(check.retries, Some(2));
    assert_eq!(check.start_period, Some(3_000_000_000));

    // Without a health check in the spec, an image's own is switched off.
    let plain = TaskSpec {
        command: web_command(),
        ..spec(&node, "plain", IMAGE, vec![])
    };
    let id = rt.create_and_start(&plain).await.expect("create plain");
    let inspected = rt
        .docker()
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let config = inspected.config.expect("config");
    assert_eq!(
        config.healthcheck.and_then(|h| h.test),
        Some(vec!["NONE".to_string()])
    );
    assert_eq!(config.stop_timeout, None);
    let host = inspected.host_config.expect("host config");
    assert!(host.memory.unwrap_or(0) == 0 && host.nano_cpus.unwrap_or(0) == 0);
}

#[tokio::test]
async fn health_verdicts_of_each_probe_kind_reach_list_tasks() {
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let cases = [
        (
            "http-ok",
            HealthTest::Http {
                port: 80,
                path: "/".into(),
            },
            HealthStatus::Healthy,
        ),
        (
            "http-404",
            HealthTest::Http {
                port: 80,
                path: "/missing".into(),
            },
            HealthStatus::Unhealthy,
        ),
        (
            "tcp-ok",
            HealthTest::Tcp { port: 80 },
            HealthStatus::Healthy,
        ),
        (
            "tcp-closed",
            HealthTest::Tcp { port: 81 },
            HealthStatus::Unhealthy,
        ),
        (
            "cmd-ok",
            HealthTest::Shell("test -f /www/index.html".into()),
            HealthStatus::Healthy,
        ),
        (
            "cmd-fail",
            HealthTest::Shell("echo probe says no; exit 1".into()),
            HealthStatus::Unhealthy,
        ),
    ];
    for (service, test, _) in &cases {
        let task = TaskSpec {
            command: web_command(),
            health: Some(quick_check(test.clone())),
            ..spec(&node, service, IMAGE, vec![])
        };
        rt.create_and_start(&task).await.expect("create");
    }
    let tasks = wait_for_tasks(&rt, &node, "every health verdict", |tasks| {
        cases.iter().all(|(service, _, want)| {
            tasks
                .iter()
                .any(|t| t.service == *service && t.health == Some(*want))
        })
    })
    .await;
    for t in &tasks {
        assert_eq!(t.state, ContainerState::Running, "{t:#?}");
        match t.health {
            Some(HealthStatus::Unhealthy) => {
                assert!(!t.detail.is_empty(), "an unhealthy task says why: {t:#?}")
            }
            _ => assert!(t.detail.is_empty(), "{t:#?}"),
        }
    }
    let cmd_fail = tasks
        .iter()
        .find(|t| t.service == "cmd-fail")
        .expect("cmd-fail");
    assert!(cmd_fail.detail.contains("probe says no"), "{cmd_fail:#?}");
}

#[tokio::test]
async fn stop_waits_the_stop_timeout_only_for_a_task_that_ignores_sigterm() {
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let stubborn = TaskSpec {
        command: [
            "sh",
            "-c",
            "trap 'echo ignoring TERM' TERM; while true; do sleep 0.2; done",
        ]
        .map(String::from)
        .to_vec(),
        stop_timeout: Some(Duration::from_secs(3)),
        ..spec(&node, "stubborn", IMAGE, vec![])
    };
    let polite = TaskSpec {
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
            .map(String::from)
            .to_vec(),
        stop_timeout: Some(Duration::from_secs(30)),
        ..spec(&node, "polite", IMAGE, vec![])
    };
    let stubborn_id = rt.create_and_start(&stubborn).await.expect("create");
    let polite_id = rt.create_and_start(&polite).await.expect("create");
    wait_for_tasks(&rt, &node, "both running", |t| {
        t.len() == 2 && t.iter().all(|t| t.state == ContainerState::Running)
    })
    .await;

    let started = Instant::now();
    rt.stop(&stubborn_id).await.expect("stop stubborn");
    let stubborn_took = started.elapsed();
    let started = Instant::now();
    rt.stop(&polite_id).await.expect("stop polite");
    let polite_took = started.elapsed();

    let tasks = rt.list_tasks(&node).await.expect("list");
    let exit = |service: &str| {
        tasks
            .iter()
            .find(|t| t.service == service)
            .map(|t| (t.state, t.exit_code))
    };
    // SIGKILL after the timeout: 128 + 9.
    assert_eq!(exit("stubborn"), Some((ContainerState::Exited, Some(137))));
    assert!(
        stubborn_took >= Duration::from_millis(2_500),
        "SIGKILL came after {stubborn_took:?}, before the 3 s stop timeout"
    );
    // It left on SIGTERM, long before its 30 s timeout.
    assert_eq!(exit("polite"), Some((ContainerState::Exited, Some(0))));
    assert!(
        polite_took < Duration::from_secs(15),
        "a task that exits on SIGTERM took {polite_took:?} to stop"
    );
    // Stopping a stopped container is fine; the container stays for its logs.
    rt.stop(&polite_id).await.expect("stop again");
    assert_eq!(rt.list_tasks(&node).await.expect("list").len(), 2);
}

#[tokio::test]
async fn exit_codes_of_stopped_tasks_are_listed() {
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let crash = TaskSpec {
        command: ["sh", "-c", "exit 3"].map(String::from).to_vec(),
        ..spec(&node, "crash", IMAGE, vec![])
    };
    rt.create_and_start(&crash).await.expect("create");
    let tasks = wait_for_tasks(&rt, &node, "the task to exit", |t| {
        t.len() == 1 && t[0].state == ContainerState::Exited
    })
    .await;
    assert_eq!(one_task(&tasks).exit_code, Some(3));
    assert_eq!(one_task(&tasks).health, None);
}

#[tokio::test]
async fn logs_are_read_as_bounded_timestamped_lines() {
    use warren_runtime::{LogQuery, LogStream};
    let rt = connect().await;
    let node = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let script = "for i in $(seq 0 29); do echo out $i; done; echo problem >&2; \
                  head -c 20000 /dev/zero | tr '\\0' x; echo";
    let chatty = TaskSpec {
        command: ["sh", "-c", script].map(String::from).to_vec(),
        ..spec(&node, "chatty", IMAGE, vec![])
    };
    let id = rt.create_and_start(&chatty).await.expect("create");
    wait_for_tasks(&rt, &node, "the task to exit", |t| {
        t.len() == 1 && t[0].state == ContainerState::Exited
    })
    .await;
    let query = LogQuery {
        since_secs: 0,
        tail: None,
        max_lines: 1_000,
        max_bytes: 1 << 20,
        max_line_bytes: 1_024,
    };

    let all = rt.read_logs(&id, &query, |_| true).await.expect("logs");
    assert!(!all.cut);
    let out: Vec<&str> = all
        .lines
        .iter()
        .filter(|l| l.stream == LogStream::Stdout && l.text.starts_with("out "))
        .map(|l| l.text.as_str())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("out {i}")).collect();
    assert_eq!(out, expected);
    assert!(all
        .lines
        .iter()
        .any(|l| l.stream == LogStream::Stderr && l.text == "problem"));
    // Stdout and stderr are timestamped by the engine as it reads each pipe, so "problem" may
    // come after the long stdout line: find the long line by its text, not its place.
    let long = all
        .lines
        .iter()
        .find(|l| l.stream == LogStream::Stdout && l.text.starts_with('x'))
        .expect("the long line");
    assert!(
        long.text.len() <= 1_024 && long.text.ends_with('…'),
        "{}",
        long.text.len()
    );
    assert!(all.lines.windows(2).all(|w| w[0].ts <= w[1].ts));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    assert!(
        (now - all.lines[0].ts).abs() < 120_000_000_000,
        "engine timestamp far off"
    );

    // The line limit cuts and says so.
    let few = rt
        .read_logs(
            &id,
            &LogQuery {
                max_lines: 10,
                ..query.clone()
            },
            |_| true,
        )
        .await
        .expect("logs");
    assert_eq!(few.lines.len(), 10);
    assert!(few.cut);
    assert_eq!(few.lines, all.lines[..10]);

    // The caller's filter decides; the limit counts kept lines only.
    let after = all.lines[4].ts;
    let kept = rt
        .read_logs(
            &id,
            &LogQuery {
                max_lines: 3,
                ..query.clone()
            },
            |l| l.ts > after,
        )
        .await
        .expect("logs");
    assert!(kept.lines.iter().all(|l| l.ts > after));
    assert_eq!(kept.lines.len(), 3);

    // The engine's tail.
    let tail = rt
        .read_logs(
            &id,
            &LogQuery {
                tail: Some(2),
                ..query.clone()
            },
            |_| true,
        )
        .await
        .expect("logs");
    // The engine's tail counts lines in the order it stored them, which may differ from
    // timestamp order by a stderr line: the long line is the last stdout line stored, so it
    // is always among the last two.
    assert_eq!(tail.lines.len(), 2, "{:?}", tail.lines);
    assert!(tail.lines.iter().all(|l| all.lines.contains(l)));
    assert!(tail.lines.windows(2).all(|w| w[0].ts <= w[1].ts));
    assert!(tail.lines.contains(long), "{:?}", tail.lines);

    // An unknown container is the engine's 404.
    let err = rt
        .read_logs("warren-no-such-container", &query, |_| true)
        .await
        .expect_err("unknown container");
    assert_eq!(err.status_code(), Some(404), "{err}");
}

#[tokio::test]
async fn health_events_announce_each_verdict_of_the_nodes_containers_only() {
    use futures::StreamExt;

    let rt = connect().await;
    let node = unique_node();
    let other = unique_node();
    let _cleanup = Cleanup { node: node.clone() };
    let _cleanup_other = Cleanup {
        node: other.clone(),
    };
    let mut events = rt.health_events(&node);
    // The stream sends its request at its first poll: poll it before anything happens.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.next())
            .await
            .is_err(),
        "no event before any container"
    );
    // Healthy while /tmp/ok exists. Another node's container on the same engine turns
    // healthy too: its verdicts are not this node's.
    let check = HealthCheck {
        retries: 1,
        ..quick_check(HealthTest::Shell("test -f /tmp/ok".into()))
    };
    let command: Vec<String> = [
        "sh",
        "-c",
        "touch /tmp/ok; trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
    ]
    .map(String::from)
    .to_vec();
    let mine = TaskSpec {
        command: command.clone(),
        health: Some(check.clone()),
        ..spec(&node, "ev", IMAGE, vec![])
    };
    let id = rt.create_and_start(&mine).await.expect("create");
    let theirs = TaskSpec {
        command,
        health: Some(check),
        ..spec(&other, "ev", IMAGE, vec![])
    };
    rt.create_and_start(&theirs).await.expect("create other");
    wait_for_tasks(&rt, &other, "the other node's container healthy", |tasks| {
        tasks
            .iter()
            .any(|t| t.health == Some(HealthStatus::Healthy))
    })
    .await;

    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let mut seen = Vec::new();
    let mut next = async |seen: &mut Vec<warren_runtime::HealthEvent>| {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no further health event; seen: {seen:#?}"))
            .expect("the stream goes on")
            .expect("an event");
        seen.push(event.clone());
        event
    };
    while next(&mut seen).await.status != HealthStatus::Healthy {}
    let rm = tokio::process::Command::new("docker")
        .args(["exec", &id, "rm", "/tmp/ok"])
        .output()
        .await
        .expect("docker exec");
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    while next(&mut seen).await.status != HealthStatus::Unhealthy {}
    for event in &seen {
        assert_eq!(
            (event.id.as_str(), event.service.as_str()),
            (id.as_str(), "ev"),
            "{seen:#?}"
        );
        assert_eq!(event.name, mine.container_name(), "{seen:#?}");
    }
}
