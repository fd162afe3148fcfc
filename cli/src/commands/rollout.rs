//! Rollouts for the operator (issue 15): the `--update-*`, `--rollback-*` and `--deploy`
//! flags as request fields, and waiting for a rollout with a progress bar (or plain lines
//! without a terminal) until it completes, pauses or waits for promotion.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use crate::args::Format;
use crate::client::Client;
use crate::output::cell;
use crate::output::outln;
use crate::units::parse_duration_ms;

/// How often the rollout is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// `--update-order` / `--rollback-order` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OrderArg {
    /// Stop the old task, then start the new one (the default).
    StopFirst,
    /// Start the new task; the old one stops once the new one runs healthy.
    StartFirst,
}

/// `--update-failure-action` / `--rollback-failure-action` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FailureActionArg {
    /// Stop updating; slots not updated keep the previous generation (the default).
    Pause,
    /// Return to the previous spec with the rollback policy.
    Rollback,
    /// Go on with the next batch.
    Continue,
}

/// `--deploy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeployArg {
    /// Batch by batch under the update policy (the default).
    Rolling,
    /// Update --canary tasks, then wait for `service promote` or `service rollback`.
    Canary,
    /// Start a full new set beside the old one; switch traffic when all are healthy.
    BlueGreen,
}

impl DeployArg {
    fn as_str(self) -> &'static str {
        match self {
            DeployArg::Rolling => "rolling",
            DeployArg::Canary => "canary",
            DeployArg::BlueGreen => "blue-green",
        }
    }
}

/// The rollout flags of `service create` and `service update` (names as `docker service
/// update`'s). Durations as the other service flags: `500ms`, `10s`, `1m` (a bare number is
/// seconds).
#[derive(Debug, Args, Default)]
pub(crate) struct RolloutFlags {
    /// Tasks updated at once, a batch (default 1; 0: all at once).
    #[arg(long, value_name = "N", help_heading = "Rollout")]
    pub(crate) update_parallelism: Option<u32>,
    /// Wait between batches (default 0s).
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub(crate) update_delay: Option<String>,
    /// `stop-first` (default) or `start-first` (the new task runs healthy before the old one
    /// stops).
    #[arg(long, value_enum, value_name = "ORDER", help_heading = "Rollout")]
    pub(crate) update_order: Option<OrderArg>,
    /// How long a new task must stay running and healthy to count as updated (default 5s).
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub(crate) update_monitor: Option<String>,
    /// What a failed batch does: `pause` (default), `rollback` or `continue`.
    #[arg(long, value_enum, value_name = "ACTION", help_heading = "Rollout")]
    pub(crate) update_failure_action: Option<FailureActionArg>,
    /// Share of updated tasks that may fail before the failure action, 0 to 1 (default 0).
    #[arg(long, value_name = "RATIO", help_heading = "Rollout")]
    pub(crate) update_max_failure_ratio: Option<String>,
    /// Tasks rolled back at once (default 1; 0: all at once).
    #[arg(long, value_name = "N", help_heading = "Rollout")]
    pub(crate) rollback_parallelism: Option<u32>,
    /// Wait between rollback batches (default 0s).
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub(crate) rollback_delay: Option<String>,
    /// `stop-first` (default) or `start-first`, for rollbacks.
    #[arg(long, value_enum, value_name = "ORDER", help_heading = "Rollout")]
    pub(crate) rollback_order: Option<OrderArg>,
    /// How long a rolled-back task must stay running and healthy (default 5s).
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub(crate) rollback_monitor: Option<String>,
    /// What a failed rollback batch does: `pause` (default) or `continue` (a rollback is
    /// never rolled back).
    #[arg(long, value_enum, value_name = "ACTION", help_heading = "Rollout")]
    pub(crate) rollback_failure_action: Option<FailureActionArg>,
    /// Share of rolled-back tasks that may fail, 0 to 1 (default 0).
    #[arg(long, value_name = "RATIO", help_heading = "Rollout")]
    pub(crate) rollback_max_failure_ratio: Option<String>,
    /// Deployment strategy of updates: `rolling` (default), `canary` or `blue-green`.
    #[arg(long, value_enum, value_name = "STRATEGY", help_heading = "Rollout")]
    pub(crate) deploy: Option<DeployArg>,
    /// Canary size: N tasks or P% of the replicas (rounded up); implies --deploy canary
    /// (default 1 task).
    #[arg(long, value_name = "N|P%", help_heading = "Rollout")]
    pub(crate) canary: Option<String>,
    /// Share of the routing mesh's connections the canary gets, 0-100 percent (default: its
    /// share of the tasks); implies --deploy canary.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100), help_heading = "Rollout")]
    pub(crate) canary_weight: Option<u8>,
}

/// A failure ratio `0`–`1` (`0.25`, `1`, `.1`) as thousandths; finer than a thousandth is
/// refused rather than rounded.
pub(crate) fn parse_ratio_permille(text: &str) -> Result<u16> {
    let bad = || anyhow!("{text:?} is not a ratio: use a number from 0 to 1, e.g. 0.25");
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        || frac.len() > 3 && frac[3..].bytes().any(|b| b != b'0')
    {
        return Err(bad());
    }
    let whole: u16 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac3: String = frac.chars().chain("000".chars()).take(3).collect();
    let permille = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(frac3.parse::<u16>().ok()?))
        .ok_or_else(bad)?;
    if permille > 1000 {
        bail!("{text:?} is more than 1: a failure ratio is from 0 to 1");
    }
    Ok(permille)
}

/// `N` (tasks, at least 1) or `P%` (1–100) as the API's canary count.
pub(crate) fn parse_canary(text: &str) -> Result<Value> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.parse::<u8>() {
            Ok(p) if (1..=100).contains(&p) => Ok(json!({ "percent": p })),
            _ => bail!("--canary {text:?}: a percentage is 1% to 100%"),
        };
    }
    match t.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(json!({ "tasks": n })),
        _ => {
            bail!("--canary {text:?}: give a number of tasks (at least 1) or a percentage like 25%")
        }
    }
}

/// One policy's fields given on the command line (`prefix` is `update` or `rollback`).
#[allow(clippy::too_many_arguments)]
fn policy_fields(
    prefix: &str,
    parallelism: Option<u32>,
    delay: &Option<String>,
    order: Option<OrderArg>,
    monitor: &Option<String>,
    failure_action: Option<FailureActionArg>,
    ratio: &Option<String>,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(n) = parallelism {
        out.insert("parallelism".into(), json!(n));
    }
    for (key, what, text) in [
        ("delay_ms", "delay", delay),
        ("monitor_ms", "monitor", monitor),
    ] {
        if let Some(text) = text {
            let ms = parse_duration_ms(text).map_err(|e| anyhow!("--{prefix}-{what}: {e}"))?;
            out.insert(key.into(), json!(ms));
        }
    }
    if let Some(order) = order {
        let word = match order {
            OrderArg::StopFirst => "stop-first",
            OrderArg::StartFirst => "start-first",
        };
        out.insert("order".into(), json!(word));
    }
    if let Some(action) = failure_action {
        let word = match action {
            FailureActionArg::Pause => "pause",
            FailureActionArg::Rollback => "rollback",
            FailureActionArg::Continue => "continue",
        };
        out.insert("failure_action".into(), json!(word));
    }
    if let Some(text) = ratio {
        let permille =
            parse_ratio_permille(text).map_err(|e| anyhow!("--{prefix}-max-failure-ratio: {e}"))?;
        out.insert("max_failure_ratio_permille".into(), json!(permille));
    }
    Ok(out)
}

impl RolloutFlags {
    fn policies(&self) -> Result<(Map<String, Value>, Map<String, Value>)> {
        let update = policy_fields(
            "update",
            self.update_parallelism,
            &self.update_delay,
            self.update_order,
            &self.update_monitor,
            self.update_failure_action,
            &self.update_max_failure_ratio,
        )?;
        let rollback = policy_fields(
            "rollback",
            self.rollback_parallelism,
            &self.rollback_delay,
            self.rollback_order,
            &self.rollback_monitor,
            self.rollback_failure_action,
            &self.rollback_max_failure_ratio,
        )?;
        Ok((update, rollback))
    }

    /// Adds `update`, `rollback` and `deploy` to `POST /v1/services`' body (partial
    /// policies: the peer fills in the defaults).
    pub(crate) fn add_to_create(&self, body: &mut Map<String, Value>) -> Result<()> {
        let (update, rollback) = self.policies()?;
        if !update.is_empty() {
            body.insert("update".into(), Value::Object(update));
        }
        if !rollback.is_empty() {
            body.insert("rollback".into(), Value::Object(rollback));
        }
        let canary = self.canary.as_deref().map(parse_canary).transpose()?;
        let canary_flags = canary.is_some() || self.canary_weight.is_some();
        match (self.deploy, canary_flags) {
            (Some(DeployArg::Canary), _) | (None, true) => {
                body.insert(
                    "deploy".into(),
                    json!({
                        "strategy": "canary",
                        "count": canary.unwrap_or_else(|| json!({ "tasks": 1 })),
                        "weight_percent": self.canary_weight,
                    }),
                );
            }
            (Some(other), true) => bail!(
                "--canary and --canary-weight go with --deploy canary, not --deploy {}",
                other.as_str()
            ),
            (Some(other), false) => {
                body.insert("deploy".into(), json!({ "strategy": other.as_str() }));
            }
            (None, false) => {}
        }
        Ok(())
    }

    /// Adds `update`, `rollback` and `deploy` to `PATCH /v1/services/NAME`' body: only the
    /// fields given, so `--update-delay 5s` alone changes only the delay.
    pub(crate) fn add_to_patch(&self, body: &mut Map<String, Value>) -> Result<()> {
        let (update, rollback) = self.policies()?;
        if !update.is_empty() {
            body.insert("update".into(), Value::Object(update));
        }
        if !rollback.is_empty() {
            body.insert("rollback".into(), Value::Object(rollback));
        }
        let mut deploy = Map::new();
        if let Some(strategy) = self.deploy {
            if strategy != DeployArg::Canary
                && (self.canary.is_some() || self.canary_weight.is_some())
            {
                bail!(
                    "--canary and --canary-weight go with --deploy canary, not --deploy {}",
                    strategy.as_str()
                );
            }
            deploy.insert("strategy".into(), json!(strategy.as_str()));
        }
        if let Some(text) = &self.canary {
            deploy.insert("canary".into(), parse_canary(text)?);
        }
        if let Some(w) = self.canary_weight {
            deploy.insert("canary_weight_percent".into(), json!(w));
        }
        if !deploy.is_empty() {
            body.insert("deploy".into(), Value::Object(deploy));
        }
        Ok(())
    }
}

/// How a wait for a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every task runs the new generation.
    Completed,
    /// A canary runs and waits for promote or rollback (the message to print).
    AwaitingPromotion(String),
    /// Stopped, with the reason.
    Paused(String),
    /// The peer reports no rollout (or no progress) for the service: nothing to wait for.
    NoInformation,
}

/// One reading of `GET /v1/services/NAME`'s `"rollout"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// `updating`, `rolling back`, `paused`, `awaiting promotion`, `completed`.
    pub(crate) state: String,
    /// Why it paused.
    pub(crate) reason: String,
    /// The generation rolled out.
    pub(crate) to_generation: u64,
    /// Slots done on the new generation.
    pub(crate) updated: u64,
    /// New tasks running healthy.
    pub(crate) healthy: u64,
    /// New tasks that failed.
    pub(crate) failed: u64,
    /// Slots in all.
    pub(crate) total: u64,
}

/// The rollout in a service's JSON, or `None` when it has none or no progress counts
/// (a peer without the rollout engine's progress). The state is the word (`"paused"`) or,
/// from an older peer, the record's tagged object.
pub(crate) fn read_progress(service: &Value) -> Option<Progress> {
    let r = service.get("rollout").filter(|r| r.is_object())?;
    let state = match r.get("state")? {
        Value::String(word) => word.clone(),
        _ => return None,
    };
    let count = |k: &str| r.get(k).and_then(Value::as_u64);
    Some(Progress {
        state,
        reason: cell(r.get("reason")),
        to_generation: count("to_generation").unwrap_or(0),
        updated: count("updated").unwrap_or(0),
        healthy: count("healthy").unwrap_or(0),
        failed: count("failed").unwrap_or(0),
        total: count("total")?,
    })
}

/// What a reading means for the wait: `Some` ends it.
pub(crate) fn outcome(name: &str, p: &Progress) -> Option<Outcome> {
    match p.state.as_str() {
        "completed" => Some(Outcome::Completed),
        "paused" => Some(Outcome::Paused(if p.reason.is_empty() {
            "no reason given".into()
        } else {
            p.reason.clone()
        })),
        "awaiting promotion" => Some(Outcome::AwaitingPromotion(format!(
            "canary running: {} of {} tasks on generation {}; promote with `warren-cli service \
             promote {name}` or roll back with `warren-cli service rollback {name}`",
            p.updated, p.total, p.to_generation
        ))),
        _ => None,
    }
}

/// One plain line of progress (no terminal, or `-o json` on stderr).
pub(crate) fn line(name: &str, p: &Progress) -> String {
    format!(
        "{name}: {} {}/{} updated ({} healthy, {} failed) generation {}",
        p.state, p.updated, p.total, p.healthy, p.failed, p.to_generation
    )
}

/// Waits for the rollout of `name` to complete, pause or wait for promotion, polling every
/// 500 ms and drawing a bar (a plain line per change without a terminal or with `-o json`).
/// Ctrl-C stops waiting and leaves the rollout running.
///
/// Errors: the API's (the service is gone, the peer is down); a paused rollout, with its
/// reason (the process exits 1).
pub(crate) fn wait(client: &Client, format: Format, name: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = format!("/v1/services/{}", super::service::path(name)?);
    let bar_wanted = format == Format::Table && std::io::stderr().is_terminal();
    let outcome = runtime.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut bar: Option<indicatif::ProgressBar> = None;
        let mut last: Option<Progress> = None;
        loop {
            let service = client.get(&path)?;
            let Some(p) = read_progress(&service) else {
                return Ok::<_, anyhow::Error>(Some(Outcome::NoInformation));
            };
            if bar_wanted {
                let b = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new(p.total);
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} {msg}",
                    ) {
                        b.set_style(style.progress_chars("=> "));
                    }
                    b.set_prefix(name.to_string());
                    b
                });
                b.set_length(p.total);
                b.set_position(p.updated);
                b.set_message(format!("{} ({} failed)", p.state, p.failed));
            } else if last.as_ref() != Some(&p) {
                if format == Format::Json {
                    eprintln!("{}", line(name, &p));
                } else {
                    outln!("{}", line(name, &p))?;
                }
            }
            if let Some(end) = outcome(name, &p) {
                if let Some(b) = bar.take() {
                    b.finish();
                }
                return Ok(Some(end));
            }
            last = Some(p);
            tokio::select! {
                _ = &mut ctrl_c => {
                    if let Some(b) = bar.take() {
                        b.abandon();
                    }
                    return Ok(None);
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })?;
    let say = |text: String| match format {
        Format::Json => {
            eprintln!("{text}");
            Ok(())
        }
        Format::Table => outln!("{text}"),
    };
    match outcome {
        None => say(format!(
            "stopped waiting; the rollout of {name} goes on. Follow it with `warren-cli service \
             ps {name}` and `warren-cli service inspect {name}`"
        )),
        Some(Outcome::NoInformation) => say(format!(
            "{name}: this peer reports no rollout progress; follow it with `warren-cli service \
             ps {name}`"
        )),
        Some(Outcome::Completed) => say(format!("{name}: rollout completed")),
        Some(Outcome::AwaitingPromotion(text)) => say(text),
        Some(Outcome::Paused(reason)) => bail!(
            "rollout of {name} paused: {reason}. Resume with `warren-cli service resume {name}` \
             or roll back with `warren-cli service rollback {name}`"
        ),
    }
}

/// Milliseconds as people write them: `500ms`, `5s`, `1m30s`.
fn duration(ms: u64) -> String {
    match ms {
        0 => "0s".into(),
        ms if ms % 1000 != 0 => format!("{ms}ms"),
        ms if ms < 60_000 || ms % 60_000 != 0 && ms < 3_600_000 => {
            let s = ms / 1000;
            if s >= 60 {
                format!("{}m{}s", s / 60, s % 60)
            } else {
                format!("{s}s")
            }
        }
        ms => format!("{}m", ms / 60_000),
    }
}

/// A policy (`spec.update` or `spec.rollback`) in one line.
pub(crate) fn policy_text(p: Option<&Value>) -> String {
    let Some(p) = p.filter(|p| p.is_object()) else {
        return "defaults".into();
    };
    let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let parallelism = match n("parallelism") {
        0 => "all at once".to_string(),
        n => format!("parallelism {n}"),
    };
    format!(
        "{parallelism}, delay {}, {}, monitor {}, on failure {}, max failure ratio {}",
        duration(n("delay_ms")),
        cell(p.get("order")),
        duration(n("monitor_ms")),
        cell(p.get("failure_action")),
        n("max_failure_ratio_permille") as f64 / 1000.0
    )
}

/// A deploy strategy in one line: `rolling`, `blue-green`, `canary 1 task (weight: share
/// of tasks)`.
pub(crate) fn deploy_text(d: Option<&Value>) -> String {
    let Some(d) = d else {
        return "rolling".into();
    };
    let strategy = cell(d.get("strategy"));
    if strategy != "canary" {
        return if strategy.is_empty() {
            "rolling".into()
        } else {
            strategy
        };
    }
    let count = d.get("count");
    let size = match (
        count.and_then(|c| c.get("tasks")).and_then(Value::as_u64),
        count.and_then(|c| c.get("percent")).and_then(Value::as_u64),
    ) {
        (Some(1), _) => "1 task".to_string(),
        (Some(n), _) => format!("{n} tasks"),
        (_, Some(p)) => format!("{p}% of the tasks"),
        _ => "?".to_string(),
    };
    let weight = match d.get("weight_percent").and_then(Value::as_u64) {
        Some(w) => format!("{w}% of connections"),
        None => "its share of the tasks".to_string(),
    };
    format!("canary {size} (traffic: {weight})")
}

/// `service inspect`'s summary for people: policies, strategy and the rollout.
pub(crate) fn inspect_text(service: &Value) -> String {
    let spec = service.get("spec");
    let mut out = vec![
        ("Name", cell(service.get("name"))),
        ("Image", cell(spec.and_then(|s| s.get("image")))),
        ("Generation", cell(service.get("generation"))),
        ("Update", policy_text(spec.and_then(|s| s.get("update")))),
        (
            "Rollback",
            policy_text(spec.and_then(|s| s.get("rollback"))),
        ),
        ("Deploy", deploy_text(spec.and_then(|s| s.get("deploy")))),
    ];
    let r = service.get("rollout").filter(|r| r.is_object());
    match (r, read_progress(service)) {
        (None, _) => out.push(("Rollout", "none".into())),
        (Some(r), progress) => {
            let state = match r.get("state") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => cell(other.get("state")),
                None => String::new(),
            };
            let mut text = format!(
                "{state} ({}, generation {} -> {})",
                cell(r.get("kind")),
                cell(r.get("from_generation")),
                cell(r.get("to_generation"))
            );
            if let Some(p) = progress {
                text.push_str(&format!(
                    "; {}/{} updated, {} healthy, {} failed",
                    p.updated, p.total, p.healthy, p.failed
                ));
            }
            out.push(("Rollout", text));
            let reason = cell(r.get("reason"));
            if !reason.is_empty() {
                out.push(("Reason", reason));
            }
            let traffic = match r.get("traffic_generation").and_then(Value::as_u64) {
                Some(g) => format!("generation {g}"),
                None => "every running generation".into(),
            };
            out.push(("Traffic", traffic));
            // When the state was last written (the writer's clock); 0: not stamped.
            if let Some(at) = r
                .get("updated_at_ms")
                .filter(|v| v.as_u64().unwrap_or(0) > 0)
            {
                out.push((
                    "Changed",
                    format!("{} UTC", super::cluster::time_of(Some(at))),
                ));
            }
        }
    }
    out.iter()
        .map(|(k, v)| format!("{:<11} {v}\n", format!("{k}:")))
        .collect()
}

/// The rollout's state word for `service ls`'s UPDATE column, or `-`.
pub(crate) fn state_word(summary: &Value) -> String {
    match summary.get("rollout") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(r)) => match r.get("state") {
            Some(Value::String(s)) => s.clone(),
            _ => "-".into(),
        },
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, ServiceCommand};
    use clap::Parser;

    fn service(args: &[&str]) -> Result<ServiceCommand, clap::Error> {
        let mut all = vec!["warren-cli", "service"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Service(c) => Ok(c),
            other => panic!("not a service command: {other:?}"),
        }
    }

    fn create(args: &[&str]) -> Result<Map<String, Value>> {
        let mut all = vec!["create", "web", "--image", "img"];
        all.extend_from_slice(args);
        let ServiceCommand::Create(c) = service(&all)? else {
            panic!("create");
        };
        let mut body = Map::new();
        c.rollout.add_to_create(&mut body)?;
        Ok(body)
    }

    fn update(args: &[&str]) -> Result<Map<String, Value>> {
        let mut all = vec!["update", "web"];
        all.extend_from_slice(args);
        let ServiceCommand::Update(c) = service(&all)? else {
            panic!("update");
        };
        let mut body = Map::new();
        c.rollout.add_to_patch(&mut body)?;
        Ok(body)
    }

    #[test]
    fn every_policy_flag_becomes_its_field() {
        for prefix in ["update", "rollback"] {
            let flag = |name: &str| format!("--{prefix}-{name}");
            let args = [
                flag("parallelism"),
                "2".into(),
                flag("delay"),
                "1.5s".into(),
                flag("order"),
                "start-first".into(),
                flag("monitor"),
                "500ms".into(),
                flag("failure-action"),
                "continue".into(),
                flag("max-failure-ratio"),
                "0.25".into(),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let want = json!({"parallelism": 2, "delay_ms": 1500, "order": "start-first",
                              "monitor_ms": 500, "failure_action": "continue",
                              "max_failure_ratio_permille": 250});
            assert_eq!(create(&args).expect("create")[prefix], want, "{prefix}");
            assert_eq!(update(&args).expect("update")[prefix], want, "{prefix}");
        }
        // One flag alone changes one field of the policy.
        assert_eq!(
            Value::Object(update(&["--update-delay", "5s"]).expect("update")),
            json!({"update": {"delay_ms": 5000}})
        );
        assert_eq!(
            Value::Object(create(&["--update-failure-action", "rollback"]).expect("create")),
            json!({"update": {"failure_action": "rollback"}})
        );
        assert!(update(&[]).expect("update").is_empty());
    }

    #[test]
    fn bad_policy_values_are_refused_with_the_flag() {
        for (args, words) in [
            (&["--update-delay", "5 minutes"][..], "--update-delay"),
            (&["--rollback-monitor", "1d"][..], "--rollback-monitor"),
            (&["--update-max-failure-ratio", "1.5"][..], "more than 1"),
            (&["--rollback-max-failure-ratio=-0.1"][..], "not a ratio"),
            (&["--update-max-failure-ratio", "0.0001"][..], "not a ratio"),
        ] {
            let err = update(args).expect_err("refused").to_string();
            assert!(err.contains(words), "{args:?}: {err}");
        }
        for args in [
            &["--update-order", "sideways"][..],
            &["--update-failure-action", "panic"][..],
            &["--update-parallelism", "-1"][..],
            &["--deploy", "big-bang"][..],
            &["--canary-weight", "101"][..],
        ] {
            let mut all = vec!["update", "web"];
            all.extend_from_slice(args);
            assert!(service(&all).is_err(), "{args:?}");
        }
    }

    #[test]
    fn ratios_parse_to_permille() {
        for (text, want) in [
            ("0", 0),
            ("1", 1000),
            ("0.25", 250),
            (".1", 100),
            ("1.000", 1000),
            ("0.0050", 5),
        ] {
            assert_eq!(parse_ratio_permille(text).expect(text), want, "{text}");
        }
        for bad in ["", ".", "x", "1.001", "2", "0.0001", "1e-1", "-1"] {
            assert!(parse_ratio_permille(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deploy_flags() {
        assert_eq!(
            create(&["--deploy", "blue-green"]).expect("create")["deploy"],
            json!({"strategy": "blue-green"})
        );
        assert_eq!(
            create(&["--deploy", "canary"]).expect("create")["deploy"],
            json!({"strategy": "canary", "count": {"tasks": 1}, "weight_percent": null})
        );
        assert_eq!(
            create(&["--canary", "25%", "--canary-weight", "10"]).expect("create")["deploy"],
            json!({"strategy": "canary", "count": {"percent": 25}, "weight_percent": 10})
        );
        assert!(create(&["--deploy", "rolling", "--canary", "2"]).is_err());
        assert_eq!(
            update(&["--canary", "2"]).expect("update")["deploy"],
            json!({"canary": {"tasks": 2}})
        );
        assert_eq!(
            update(&["--deploy", "canary", "--canary-weight", "0"]).expect("update")["deploy"],
            json!({"strategy": "canary", "canary_weight_percent": 0})
        );
        assert_eq!(
            update(&["--deploy", "rolling"]).expect("update")["deploy"],
            json!({"strategy": "rolling"})
        );
        let err = update(&["--deploy", "blue-green", "--canary-weight", "5"])
            .expect_err("contradiction")
            .to_string();
        assert!(err.contains("--deploy canary"), "{err}");
        for bad in ["0", "0%", "101%", "x", "-2", "2.5"] {
            let err = parse_canary(bad).expect_err(bad).to_string();
            assert!(err.contains("--canary"), "{bad}: {err}");
        }
    }

    #[test]
    fn rollout_commands_parse() {
        assert!(matches!(
            service(&["rollback", "web"]),
            Ok(ServiceCommand::Rollback(c)) if c.name == "web" && !c.detach
        ));
        assert!(matches!(
            service(&["promote", "web", "--detach"]),
            Ok(ServiceCommand::Promote(c)) if c.detach
        ));
        assert!(matches!(
            service(&["pause", "web"]),
            Ok(ServiceCommand::Pause { name }) if name == "web"
        ));
        assert!(matches!(
            service(&["resume", "web", "-d"]),
            Ok(ServiceCommand::Resume(c)) if c.detach
        ));
        assert!(matches!(
            service(&["update", "web", "--rollback"]),
            Ok(ServiceCommand::Update(u)) if u.rollback
        ));
        assert!(matches!(
            service(&["update", "web", "--image", "x", "--detach"]),
            Ok(ServiceCommand::Update(u)) if u.detach
        ));
    }

    fn with_rollout(rollout: Value) -> Value {
        json!({"name": "web", "generation": 3, "spec": {"image": "img"}, "rollout": rollout})
    }

    #[test]
    fn progress_ends_on_completed_paused_and_awaiting_promotion() {
        let reading = |state: &str, reason: Value| {
            read_progress(&with_rollout(json!({
                "kind": "update", "state": state, "reason": reason, "from_generation": 2,
                "to_generation": 3, "updated": 1, "healthy": 1, "failed": 0, "total": 4,
            })))
            .expect("progress")
        };
        let p = reading("updating", Value::Null);
        assert_eq!(outcome("web", &p), None);
        assert_eq!(
            line("web", &p),
            "web: updating 1/4 updated (1 healthy, 0 failed) generation 3"
        );
        assert_eq!(outcome("web", &reading("rolling back", Value::Null)), None);
        assert_eq!(
            outcome("web", &reading("completed", Value::Null)),
            Some(Outcome::Completed)
        );
        assert_eq!(
            outcome(
                "web",
                &reading("paused", json!("task web.0 exited with code 1"))
            ),
            Some(Outcome::Paused("task web.0 exited with code 1".into()))
        );
        assert_eq!(
            outcome("web", &reading("awaiting promotion", Value::Null)),
            Some(Outcome::AwaitingPromotion(
                "canary running: 1 of 4 tasks on generation 3; promote with `warren-cli \
                 service promote web` or roll back with `warren-cli service rollback web`"
                    .into()
            ))
        );
        // No rollout, or a record without progress counts: nothing to wait for.
        assert_eq!(read_progress(&with_rollout(Value::Null)), None);
        assert_eq!(read_progress(&json!({"name": "web"})), None);
        assert_eq!(
            read_progress(&with_rollout(
                json!({"state": {"state": "updating"}, "to_generation": 3})
            )),
            None
        );
    }

    #[test]
    fn inspect_and_ls_show_the_rollout() {
        let service = json!({
            "name": "web", "generation": 3,
            "spec": {"image": "img",
                     "update": {"parallelism": 2, "delay_ms": 5000, "order": "start-first",
                                "monitor_ms": 90000, "failure_action": "rollback",
                                "max_failure_ratio_permille": 250},
                     "deploy": {"strategy": "canary", "count": {"percent": 25},
                                "weight_percent": 10}},
            "rollout": {"kind": "update", "state": "paused", "reason": "task web.0 failed",
                        "from_generation": 2, "to_generation": 3, "traffic_generation": 2,
                        "updated_at_ms": 1_796_000_000_123_u64, "updated": 1, "healthy": 0, "failed": 1, "total": 4},
        });
        let text = inspect_text(&service);
        for want in [
            "Update:     parallelism 2, delay 5s, start-first, monitor 1m30s, on failure rollback, max failure ratio 0.25",
            "Rollback:   defaults",
            "Deploy:     canary 25% of the tasks (traffic: 10% of connections)",
            "Rollout:    paused (update, generation 2 -> 3); 1/4 updated, 0 healthy, 1 failed",
            "Reason:     task web.0 failed",
            "Traffic:    generation 2",
            "Changed:    2026-11-30 00:53:20.123 UTC",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(inspect_text(&with_rollout(Value::Null)).contains("Rollout:    none"));
        assert_eq!(
            state_word(&json!({"rollout": "awaiting promotion"})),
            "awaiting promotion"
        );
        assert_eq!(state_word(&json!({"rollout": null})), "-");
        assert_eq!(state_word(&json!({})), "-");
    }
}
