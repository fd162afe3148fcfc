//! `GET /metrics` on a real node: the series a service's tasks, the lease and the members
//! produce, read through the local API and the remote one (401 without an operator token, 200
//! with one), and the body checked by `promtool check metrics` (Debian's `prometheus`
//! package; under `CI=true` its absence fails the test).
//!
//! Traffic goes to 127.0.0.1 only.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

const T: Duration = Duration::from_secs(60);

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text-format body (comment lines skipped). Label values here hold no `,`
/// or `"` (the test's own names), which keeps the parser short.
fn samples(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels end with }");
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label k=\"v\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().unwrap_or_else(|_| panic!("value of {line}")),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include `want`, if there is one.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn get_local(node: &Node, path: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://127.0.0.1:{}{path}", node.api_port))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let status = response.status().as_u16();
    (
        status,
        content_type,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// An HTTPS client that trusts `ca` only.
fn https(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).expect("the node's certificate");
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&certs))
                .build(),
        )
        .build()
        .into()
}

fn get_remote(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// `promtool check metrics` on `body`: `Some(output)` when it ran, `None` when promtool is
/// absent outside CI (a failure under `CI=true`).
fn promtool_check(body: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").is_err(),
                "promtool is missing under CI: scripts/test.sh installs Debian's prometheus package"
            );
            eprintln!(
                "SKIPPED the promtool check: promtool is not installed (apt-get install \
                 prometheus); CI is unset"
            );
            return None;
        }
        Err(e) => panic!("run promtool: {e}"),
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn metrics_show_a_services_tasks_and_need_a_token_remotely() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let remote_port = free_tcp_port();
    let remote = format!("0.0.0.0:{remote_port}");
    let node = Node::start(
        "m1",
        &dir.path().join("m1"),
        // No overlay: this test needs none, and the host's `warren0` stays free for others.
        &["--init", "metrics", "--api-remote", &remote, "--no-overlay"],
    );
    let mut create = vec![
        "service",
        "create",
        "metricsweb",
        "--image",
        IMAGE,
        "--replicas",
        "2",
        "--",
    ];
    create.extend_from_slice(&WEB_COMMAND);
    let out = node.cli(&create);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A service no member can hold: its slot is pending for resources.
    let out = node.cli(&[
        "service",
        "create",
        "metricshuge",
        "--image",
        IMAGE,
        "--cpus",
        "1024",
        "--",
        "sleep",
        "600",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Tasks running = replicas, as the node's own reports say.
    let body = wait_for("2 running metricsweb tasks in /metrics", T, || {
        let (status, _, body) = get_local(&node, "/metrics");
        let s = samples(&body);
        let running = value(
            &s,
            "warren_tasks",
            &[("service", "metricsweb"), ("state", "running")],
        );
        (status == 200 && running == Some(2.0)).then_some(body)
    });
    let (_, content_type, _) = get_local(&node, "/metrics");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let s = samples(&body);
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&s, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{body}"))
    };
    assert_eq!(v("warren_members", &[("state", "alive")]), 1.0);
    assert_eq!(v("warren_members", &[("state", "down")]), 0.0);
    assert_eq!(v("warren_lease_holder", &[("node", "m1")]), 1.0);
    assert!(v("warren_lease_epoch", &[]) >= 1.0);
    assert_eq!(v("warren_services", &[("mode", "replicated")]), 2.0);
    assert_eq!(
        v("warren_service_desired_tasks", &[("service", "metricsweb")]),
        2.0
    );
    assert_eq!(
        v(
            "warren_pending_slots",
            &[("service", "metricshuge"), ("reason", "resources")]
        ),
        1.0
    );
    // This node started both containers; no pull was needed (the image is local).
    assert!(
        v(
            "warren_container_actions_total",
            &[("action", "start"), ("result", "ok")]
        ) >= 2.0
    );
    assert!(v("warren_reconcile_duration_seconds_count", &[]) >= 1.0);
    assert!(v("warren_document_stored_bytes", &[]) > 0.0);
    assert!(v("warren_document_changes", &[]) >= 3.0);
    assert!(v("warren_document_changes_applied_total", &[("via", "local")]) >= 2.0);
    // The two creates went through the local API, counted by route template.
    assert_eq!(
        v(
            "warren_api_requests_total",
            &[
                ("listener", "local"),
                ("route", "/v1/services"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        2.0
    );
    assert!(
        v(
            "warren_api_requests_total",
            &[
                ("listener", "local"),
                ("route", "/metrics"),
                ("method", "GET")
            ]
        ) >= 1.0
    );
    // Raw paths never become labels.
    let (status, _, _) = get_local(&node, "/no/such/route/secret-looking-text");
    assert_eq!(status, 404);
    let (_, _, later) = get_local(&node, "/metrics");
    assert!(!later.contains("secret-looking-text"), "{later}");
    assert!(
        value(
            &samples(&later),
            "warren_api_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) == Some(1.0),
        "{later}"
    );

    // The remote API: 401 without a token, 200 and the same series with one.
    let agent = https(&node.data_dir.join("api-cert.pem"));
    let url = format!("https://127.0.0.1:{remote_port}/metrics");
    let (status, body) = get_remote(&agent, &url, None);
    assert_eq!(status, 401, "{body}");
    let out = node.cli(&["api-token", "create"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let (status, remote_body) = get_remote(&agent, &url, Some(&token));
    assert_eq!(status, 200, "{remote_body}");
    let rs = samples(&remote_body);
    assert_eq!(
        value(
            &rs,
            "warren_tasks",
            &[("service", "metricsweb"), ("state", "running")]
        ),
        Some(2.0)
    );
    // The refused scrape was counted on the remote listener (the token check runs inside
    // the counting layer).
    assert_eq!(
        value(
            &rs,
            "warren_api_requests_total",
            &[
                ("listener", "remote"),
                ("route", "/metrics"),
                ("status", "401")
            ]
        ),
        Some(1.0),
        "{remote_body}"
    );
    assert!(!remote_body.contains(&token), "the token never shows");

    // A container killed behind the node's back is started again, and counted as a restart.
    let victim = containers(&[&node.peer_id])
        .into_iter()
        .find(|c| c.service == "metricsweb" && c.running())
        .expect("a running metricsweb container");
    let killed = Command::new("docker")
        .args(["kill", &victim.id])
        .output()
        .expect("docker kill");
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    wait_for("a restart counted and 2 tasks running again", T, || {
        let (_, _, body) = get_local(&node, "/metrics");
        let s = samples(&body);
        let restarts = value(
            &s,
            "warren_container_actions_total",
            &[("action", "restart"), ("result", "ok")],
        )?;
        let running = value(
            &s,
            "warren_tasks",
            &[("service", "metricsweb"), ("state", "running")],
        );
        (restarts == 1.0 && running == Some(2.0)).then_some(())
    });

    if let Some((ok, output)) = promtool_check(&remote_body) {
        assert!(
            ok,
            "promtool check metrics failed:\n{output}\n{remote_body}"
        );
        assert!(output.trim().is_empty(), "promtool warned:\n{output}");
    }

    for name in ["metricsweb", "metricshuge"] {
        let _ = node.cli(&["service", "rm", name]);
    }
}
