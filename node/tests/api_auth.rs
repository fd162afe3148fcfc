//! The remote API: HTTPS only, and only with a valid operator token; the loopback API stays
//! open to whoever is on the node. Every error is JSON with a stable code.
//!
//! Traffic goes to 127.0.0.1 only: the remote listener binds 0.0.0.0 (not a loopback address,
//! so it is the remote API, not the local one) and the tests connect to it on 127.0.0.1.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

const T: Duration = Duration::from_secs(30);

/// The body of every 401, whatever the reason.
const UNAUTHORIZED: &str = r#"{"error":{"code":"unauthorized","message":"unauthorized"}}"#;

/// A node serving its remote API on 0.0.0.0:<port>.
fn start_remote(name: &str, dir: &Path, extra: &[&str]) -> (Node, u16) {
    let port = free_tcp_port();
    let remote = format!("0.0.0.0:{port}");
    let mut args = vec!["--api-remote", remote.as_str()];
    args.extend_from_slice(extra);
    (Node::start(name, dir, &args), port)
}

/// An HTTPS client that trusts the node's generated certificate (and nothing else).
fn agent(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).expect("read the node's certificate");
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert!(!certs.is_empty(), "no certificate in {}", ca.display());
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

/// One answer: status, `WWW-Authenticate`, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.body))
            .to_string()
    }
}

/// `method url` with an optional `Authorization` value and JSON body.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(auth) = authorization {
        request = request.header("Authorization", auth);
    }
    if body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let request = request
        .body(body.unwrap_or("").to_string())
        .expect("request");
    let mut response = agent
        .run(request)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Answer {
        status: response.status().as_u16(),
        www_authenticate: response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `warren-cli` against `peer` with nothing from the environment but what is passed.
fn cli(peer: &str, token: Option<&str>, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(cli_bin());
    command
        .env_remove("WARREN_TOKEN")
        .env_remove("WARREN_TLS_CA")
        .env_remove("WARREN_PEER")
        .args(["--peer", peer]);
    if let Some(token) = token {
        command.env("WARREN_TOKEN", token);
    }
    if let Some(ca) = ca {
        command.arg("--tls-ca").arg(ca);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run warren-cli")
}

/// `api-token create ARGS` at `node`'s loopback API; the token's text.
fn create_token(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["api-token", "create"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "api-token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(token.starts_with("WRNA1-"), "{token}");
    token
}

/// The id part of `WRNA1-<id>.<secret>`.
fn id_of(token: &str) -> String {
    token
        .trim_start_matches("WRNA1-")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn secret_of(token: &str) -> String {
    token.rsplit('.').next().unwrap_or_default().to_string()
}

fn cert_of(node: &Node) -> PathBuf {
    node.data_dir.join("api-cert.pem")
}

/// Whether `node`'s log has a refusal line naming `reason`.
fn logged_refusal(node: &Node, reason: &str) -> bool {
    node.log_text()
        .lines()
        .any(|l| l.contains("API request refused") && l.contains(reason))
}

#[test]
fn remote_api_needs_a_valid_operator_token() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, port) = start_remote("a", &dir.path().join("a"), &["--init", "locks"]);
    let b = Node::start("b", &dir.path().join("b"), &["--join", &a.join_token()]);
    let remote = format!("https://127.0.0.1:{port}");
    let status_url = format!("{remote}/v1/status");
    let ca = cert_of(&a);
    let https = agent(&ca);

    // The generated certificate's key is the node's alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.data_dir.join("api-key.pem"))
            .expect("generated key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        a.log_text().contains("generated a self-signed certificate"),
        "the node says where its certificate is"
    );

    // The loopback API needs no token.
    assert!(a.cli(&["service", "ls"]).status.success());
    assert!(a.status().is_some());

    // No token, a malformed one, an unknown one, a wrong secret, a join token: one 401,
    // byte for byte the same, with nothing of why.
    let good = create_token(&a, &["--label", "owner=test"]);
    let wrong_secret = format!("WRNA1-{}.{}", id_of(&good), "0".repeat(64));
    let unknown = format!("WRNA1-{}.{}", "1".repeat(16), "2".repeat(64));
    let join = a.join_token();
    let refused: Vec<(Option<String>, &str)> = vec![
        (None, "missing"),
        (Some("Bearer nonsense".into()), "malformed"),
        (Some(format!("Basic {good}")), "malformed"),
        (Some(bearer(&unknown)), "unknown"),
        (Some(bearer(&wrong_secret)), "wrong_secret"),
        (Some(bearer(&join)), "malformed"),
    ];
    for (auth, reason) in &refused {
        let answer = call(&https, "GET", &status_url, auth.as_deref(), None);
        assert_eq!(answer.status, 401, "{reason}: {answer:?}");
        assert_eq!(
            answer.body, UNAUTHORIZED,
            "{reason}: the body says nothing more"
        );
        assert_eq!(
            answer.www_authenticate.as_deref(),
            Some("Bearer realm=\"warren\""),
            "{reason}"
        );
        assert!(logged_refusal(&a, reason), "the node logs why: {reason}");
    }
    // Writes and unknown routes are refused before anything else: no route enumeration.
    for (method, path, body) in [
        ("POST", "/v1/api-tokens", Some("{}")),
        ("DELETE", "/v1/services/web", None),
        ("GET", "/v1/no-such-route", None),
    ] {
        let answer = call(&https, method, &format!("{remote}{path}"), None, body);
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (401, UNAUTHORIZED),
            "{method} {path}"
        );
    }
    assert!(
        call(
            &https,
            "GET",
            &format!("{remote}/v1/api-tokens"),
            None,
            None
        )
        .status
            == 401
            && a.cli_json(&["api-token", "ls"])
                .is_some_and(|ls| ls.as_array().is_some_and(|l| l.len() == 1)),
        "nothing was minted without a token"
    );

    // The good token opens the remote API, through warren-cli trusting the certificate.
    let out = cli(
        &remote,
        Some(&good),
        Some(&ca),
        &["-o", "json", "cluster", "status"],
    );
    assert!(
        out.status.success(),
        "good token refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["node"].as_str(), Some(a.peer_id.as_str()));
    let answer = call(&https, "GET", &status_url, Some(&bearer(&good)), None);
    assert_eq!(answer.status, 200, "{answer:?}");
    // And --token works as well as WARREN_TOKEN.
    let out = Command::new(cli_bin())
        .env_remove("WARREN_TOKEN")
        .args(["--peer", &remote, "--token", &good, "--tls-ca"])
        .arg(&ca)
        .args(["service", "ls"])
        .output()
        .expect("run warren-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A PATCH carries the token like every other method (it once went without: 401).
    let out = cli(
        &remote,
        Some(&good),
        Some(&ca),
        &["-o", "json", "cluster", "set", "rebalance", "off"],
    );
    assert!(
        out.status.success(),
        "cluster set through the remote API: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        a.cli_json(&["cluster", "settings"]),
        Some(serde_json::json!({"rebalance": false}))
    );
    // An authenticated unknown route is a JSON 404.
    let answer = call(
        &https,
        "GET",
        &format!("{remote}/v1/nope"),
        Some(&bearer(&good)),
        None,
    );
    assert_eq!(
        (answer.status, answer.code()),
        (404, "not_found".to_string())
    );

    // The CLI says so in one line: no token, a bad token, an untrusted certificate.
    let err = one_line_error(&cli(&remote, None, Some(&ca), &["cluster", "status"]));
    assert!(err.contains("requires an operator token"), "{err}");
    let err = one_line_error(&cli(
        &remote,
        Some(&wrong_secret),
        Some(&ca),
        &["node", "ls"],
    ));
    assert!(err.contains("refused the operator token"), "{err}");
    assert!(!err.contains(&secret_of(&wrong_secret)), "{err}");
    let err = one_line_error(&cli(&remote, Some(&good), None, &["cluster", "status"]));
    assert!(err.contains("TLS") && err.contains("--tls-ca"), "{err}");

    // Plain HTTP to the TLS port gets nothing of the API.
    let out = cli(
        &format!("http://127.0.0.1:{port}"),
        None,
        None,
        &["cluster", "status"],
    );
    one_line_error(&out);
    let plain = raw_http(port, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(
        !plain.contains("HTTP/1.1 200") && !plain.contains(&a.peer_id) && !plain.contains("locks"),
        "plain HTTP answered: {plain:?}"
    );

    // Revoked at another peer: the revocation reaches a, which then refuses the token.
    let doomed = create_token(&a, &["--ttl", "1h"]);
    assert_eq!(
        call(&https, "GET", &status_url, Some(&bearer(&doomed)), None).status,
        200
    );
    wait_for("b to hear of the new token", T, || {
        b.cli_json(&["api-token", "ls"])?
            .as_array()?
            .iter()
            .any(|t| t["id"] == id_of(&doomed).as_str())
            .then_some(())
    });
    let out = b.cli(&["api-token", "revoke", &id_of(&doomed)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = wait_for("a to refuse the token b revoked", T, || {
        let answer = call(&https, "GET", &status_url, Some(&bearer(&doomed)), None);
        (answer.status != 200).then_some(answer)
    });
    assert_eq!((answer.status, answer.body.as_str()), (401, UNAUTHORIZED));
    assert!(logged_refusal(&a, "revoked"), "a logs the reason");
    assert_eq!(
        call(&https, "GET", &status_url, Some(&bearer(&good)), None).status,
        200,
        "other tokens still work"
    );
    let ls = a.cli_json(&["api-token", "ls"]).expect("ls");
    let listed = ls
        .as_array()
        .and_then(|l| l.iter().find(|t| t["id"] == id_of(&doomed).as_str()))
        .expect("the revoked token is listed");
    assert_eq!(listed["revoked"], Value::Bool(true));

    // Expired: valid for 5 s, then refused.
    let brief = create_token(&a, &["--ttl", "5s"]);
    assert_eq!(
        call(&https, "GET", &status_url, Some(&bearer(&brief)), None).status,
        200
    );
    let answer = wait_for("the short-lived token to expire", T, || {
        let answer = call(&https, "GET", &status_url, Some(&bearer(&brief)), None);
        (answer.status != 200).then_some(answer)
    });
    assert_eq!((answer.status, answer.body.as_str()), (401, UNAUTHORIZED));
    assert!(logged_refusal(&a, "expired"), "a logs the reason");

    // Revoking through the wrong command does nothing: ids are per kind.
    let out = a.cli(&["join-token", "revoke", &id_of(&good)]);
    assert!(
        !out.status.success(),
        "a join-token revoke of an API token id"
    );
    assert_eq!(
        call(&https, "GET", &status_url, Some(&bearer(&good)), None).status,
        200
    );

    // No secret in any listing, log or data-dir-adjacent text; digests stay inside the document.
    for token in [&good, &doomed, &brief] {
        let secret = secret_of(token);
        let digest = hex_sha256(&secret);
        for node in [&a, &b] {
            let ls = node.cli(&["-o", "json", "api-token", "ls"]);
            let ls = String::from_utf8_lossy(&ls.stdout);
            assert!(ls.contains(&id_of(token)), "listed at {}", node.name);
            assert!(
                !ls.contains(&secret) && !ls.contains(&digest),
                "ls leaks at {}",
                node.name
            );
            let log = node.log_text();
            assert!(
                !log.contains(&secret),
                "{}'s log holds a token secret",
                node.name
            );
        }
        let history = a.cli(&["-o", "json", "cluster", "history"]);
        let history = String::from_utf8_lossy(&history.stdout);
        assert!(
            history.contains("api-token create"),
            "history names the write"
        );
        assert!(!history.contains(&secret));
    }
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends `request` as plain bytes to 127.0.0.1:`port`; whatever comes back within 3 s.
fn raw_http(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.write_all(request.as_bytes());
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn every_api_error_is_json_with_a_stable_code() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, port) = start_remote("solo", &dir.path().join("solo"), &["--init", "codes"]);
    let local: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let token = create_token(&node, &[]);
    let remote = agent(&cert_of(&node));
    let big = format!(
        r#"{{"name":"big","image":"warren/busybox:latest","command":["{}"]}}"#,
        "x".repeat(200 * 1024)
    );
    let long_path = format!("/v1/services/{}", "a".repeat(9 * 1024));
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("GET", "/v1/no-such-route", None, 404, "not_found"),
        ("GET", "/", None, 404, "not_found"),
        ("PUT", "/v1/status", None, 405, "method_not_allowed"),
        ("POST", "/v1/services", Some(&big), 413, "payload_too_large"),
        ("POST", "/v1/services", Some("{"), 400, "invalid_argument"),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":1}"#),
            422,
            "invalid_argument",
        ),
        (
            "GET",
            "/v1/services/NOT_A_NAME",
            None,
            400,
            "invalid_argument",
        ),
        ("GET", "/v1/services/absent", None, 404, "not_found"),
        (
            "POST",
            "/v1/services",
            Some(r#"{"name":"typo","image":"warren/busybox:latest","replica":0}"#),
            400,
            "unknown_field",
        ),
        (
            "POST",
            "/v1/services",
            Some(
                r#"{"name":"abs","image":"warren/busybox:latest","secrets":[{"name":"s","target":"/etc/warren-pwned"}]}"#,
            ),
            400,
            "invalid_argument",
        ),
        ("GET", "/v1/history?limit=x", None, 400, "invalid_argument"),
        ("GET", &long_path, None, 414, "uri_too_long"),
    ];
    let bases = [
        (format!("http://127.0.0.1:{}", node.api_port), &local, None),
        (
            format!("https://127.0.0.1:{port}"),
            &remote,
            Some(bearer(&token)),
        ),
    ];
    for (base, agent, auth) in &bases {
        for (method, path, body, status, code) in &cases {
            let answer = call(
                agent,
                method,
                &format!("{base}{path}"),
                auth.as_deref(),
                *body,
            );
            assert_eq!(answer.status, *status, "{base} {method} {path}: {answer:?}");
            assert_eq!(answer.code(), *code, "{base} {method} {path}: {answer:?}");
            let message = answer.json()["error"]["message"].as_str().map(str::len);
            assert!(
                message.is_some_and(|n| n > 0 && n < 1024),
                "{base} {method} {path}: a short message: {answer:?}"
            );
            // The message names the offending field.
            let text = answer.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if *code == "unknown_field" {
                assert!(text.contains("`replica`"), "names the field: {text}");
            }
            if body.is_some_and(|b| b.contains("warren-pwned")) {
                assert!(text.contains("secrets.target"), "names the field: {text}");
            }
        }
        // A body without a JSON content type.
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{base}/v1/services"));
        let request = match auth {
            Some(auth) => request.header("Authorization", auth),
            None => request,
        };
        let mut response = agent
            .run(request.body("name=x".to_string()).expect("request"))
            .expect("answer");
        let text = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(response.status().as_u16(), 415, "{base}: {text}");
        assert!(
            text.contains(r#""code":"unsupported_media_type""#),
            "{base}: {text}"
        );
    }
    // The oversized body created nothing.
    assert!(node
        .cli_json(&["service", "ls"])
        .and_then(|v| v.as_array().map(Vec::is_empty))
        .unwrap_or(false));
}
