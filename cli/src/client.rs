//! A small blocking client of a peer's HTTP API with errors a person can act on.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use ureq::Agent;

pub(crate) struct Client {
    base: String,
    agent: Agent,
}

impl Client {
    pub(crate) fn new(peer: &str) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Self {
            base: peer.trim_end_matches('/').to_string(),
            agent,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        self.finish(self.agent.get(&url).call(), &url)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        self.finish(self.agent.post(&url).send_json(body), &url)
    }

    pub(crate) fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        self.finish(self.agent.patch(&url).send_json(body), &url)
    }

    pub(crate) fn delete(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        self.finish(self.agent.delete(&url).call(), &url)
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        url: &str,
    ) -> Result<Value> {
        let mut response = result.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                anyhow!(
                    "cannot reach peer at {}: {e} (is warren-node running there? set --peer or WARREN_PEER)",
                    self.base
                )
            }
            ureq::Error::Timeout(_) => anyhow!("peer at {} did not answer in time", self.base),
            other => anyhow!("request to {url} failed: {other}"),
        })?;
        let status = response.status();
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
