//! A small blocking client of a peer's HTTP API with errors a person can act on.
//!
//! `http://` reaches a node's loopback API, which asks for no credential; `https://` reaches
//! its remote API, which needs an operator token (`--token` / `WARREN_TOKEN`) and, for a
//! self-signed certificate, `--tls-ca FILE` to trust it. A token is never sent over plain
//! HTTP.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
use ureq::Agent;

pub(crate) struct Client {
    base: String,
    agent: Agent,
    /// `Bearer <token>`, sent only over HTTPS.
    authorization: Option<String>,
    /// Whether the caller gave a token at all (for the 401 message).
    has_token: bool,
}

/// Whether `url`'s host is a loopback name or address.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The certificates of the PEM file `path`, to trust as roots.
fn load_roots(path: &Path) -> Result<RootCerts> {
    let pem = std::fs::read(path).with_context(|| format!("--tls-ca {}", path.display()))?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        if let Ok(PemItem::Certificate(cert)) = item {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        bail!("--tls-ca {}: no PEM certificate in it", path.display());
    }
    Ok(RootCerts::new_with_certs(&certs))
}

impl Client {
    /// A client of the peer at `peer` (`http://` or `https://`), presenting `token` over
    /// HTTPS and trusting the certificates in `tls_ca` (else the usual web roots).
    ///
    /// Errors: a URL of another scheme, a token given for plain HTTP to a non-loopback host
    /// (it would cross the network in clear), or an unreadable `tls_ca`.
    pub(crate) fn new(peer: &str, token: Option<&str>, tls_ca: Option<&Path>) -> Result<Self> {
        let base = peer.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            bail!("--peer {base}: use an http:// (loopback) or https:// (remote API) URL");
        }
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if token.is_some() && !https && !is_loopback_url(&base) {
            bail!(
                "refusing to send the operator token over plain HTTP to {base}: use the peer's \
                 https:// remote API address"
            );
        }
        let mut config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)));
        if let Some(path) = tls_ca {
            config = config.tls_config(TlsConfig::builder().root_certs(load_roots(path)?).build());
        }
        let agent: Agent = config.build().into();
        Ok(Self {
            base,
            agent,
            // The loopback API asks for no credential: keep the token off plain HTTP altogether.
            authorization: token.filter(|_| https).map(|t| format!("Bearer {t}")),
            has_token: token.is_some(),
        })
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        self.finish(request.call(), &url)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.post(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        self.finish(request.send_json(body), &url)
    }

    pub(crate) fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.patch(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        self.finish(request.send_json(body), &url)
    }

    pub(crate) fn delete(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.delete(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        self.finish(request.call(), &url)
    }

    /// POSTs the file `file` (`application/x-tar`) to `path`. No overall timeout: a large
    /// tarball takes as long as it takes; connecting still times out.
    pub(crate) fn post_file(&self, path: &str, file: std::fs::File) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/x-tar")
            .config()
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(15)))
            .build();
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        self.finish(request.send(file), &url)
    }

    /// One line for a failed TLS handshake with the peer.
    fn tls_error(&self, e: &dyn std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "TLS with {} failed: {e} (for a node's self-signed certificate pass its api-cert.pem \
             with --tls-ca or WARREN_TLS_CA; the URL's host must be one the certificate names)",
            self.base
        )
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        url: &str,
    ) -> Result<Value> {
        let https = self.base.starts_with("https://");
        let mut response = result.map_err(|e| match e {
            ureq::Error::Rustls(e) => self.tls_error(&e),
            ureq::Error::Tls(e) => self.tls_error(&e),
            // rustls reports a refused certificate or a non-TLS answer as invalid data.
            ureq::Error::Io(ref io) if https && io.kind() == std::io::ErrorKind::InvalidData => {
                self.tls_error(io)
            }
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                anyhow!(
                    "cannot reach peer at {}: {e} (is warren-node running there? set --peer or WARREN_PEER)",
                    self.base
                )
            }
            ureq::Error::Timeout(_) => anyhow!("peer at {} did not answer in time", self.base),
            ureq::Error::Protocol(_) if !https => anyhow!(
                "peer at {} did not answer plain HTTP: {e} (a remote API speaks https:// only)",
                self.base
            ),
            other => anyhow!("request to {url} failed: {other}"),
        })?;
        let status = response.status();
        if status == ureq::http::StatusCode::UNAUTHORIZED {
            return Err(if self.has_token {
                anyhow!(
                    "the peer at {} refused the operator token (unknown, revoked or expired); \
                     check --token / WARREN_TOKEN",
                    self.base
                )
            } else {
                anyhow!(
                    "the peer at {} requires an operator token: pass --token or set WARREN_TOKEN \
                     (made with `warren-cli api-token create` on the node)",
                    self.base
                )
            });
        }
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{url} did not answer with JSON (is it a warren peer?)"))?;
        if status.is_success() {
            Ok(value)
        } else {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            Err(anyhow!("{message}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for url in [
            "http://127.0.0.1:7700",
            "http://localhost:7700/",
            "http://[::1]:7700",
            "http://127.0.0.2",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:7700",
            "http://example.org",
            "http://[fe80::1]:1",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn a_token_never_goes_over_plain_http_to_another_host() {
        assert!(Client::new("http://10.0.0.5:7700", Some("WRNA1-x.y"), None).is_err());
        assert!(Client::new("http://10.0.0.5:7700", None, None).is_ok());
        let local = Client::new("http://127.0.0.1:7700", Some("WRNA1-x.y"), None).expect("ok");
        assert_eq!(
            local.authorization, None,
            "loopback API: no credential sent"
        );
        let remote = Client::new("https://10.0.0.5:7443", Some("WRNA1-x.y"), None).expect("ok");
        assert_eq!(remote.authorization.as_deref(), Some("Bearer WRNA1-x.y"));
        assert!(Client::new("ftp://x", None, None).is_err());
    }
}
