use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::args::{CreateService, Format, ModeArg, ServiceCommand, SpecFlags, UpdateService};
use crate::client::Client;
use crate::commands::cluster::short;
use crate::commands::rollout;
use crate::output::{cell, print};
use crate::output::{out, outln};
use crate::units::{parse_cpus, parse_duration_ms, parse_size};

pub(crate) fn run(client: &Client, format: Format, command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            let body = create_body(&args)?;
            let answer = client.post("/v1/services", &body)?;
            done(format, &answer, &format!("service {} created", args.name))?;
        }
        ServiceCommand::Update(args) => {
            let body = update_body(&args)?;
            if args.rollback {
                // Swarm's `service update --rollback`: the same as `service rollback`.
                if body.as_object().is_some_and(|o| !o.is_empty()) {
                    bail!("--rollback goes alone: it returns to the previous spec");
                }
                return rollback(client, format, &args.name, args.detach);
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                bail!("nothing to change: give at least one flag (see --help)");
            }
            let url = format!("/v1/services/{}", path(&args.name)?);
            // A rollout starts only when the generation moves (an image, command, ... change).
            let generation = |v: &Value| v.get("generation").and_then(Value::as_u64);
            let before = client.get(&url).ok().as_ref().and_then(generation);
            let answer = client.patch(&url, &body)?;
            done(format, &answer, &format!("service {} updated", args.name))?;
            if !args.detach {
                let after = client.get(&url)?;
                if before.is_some() && generation(&after) != before {
                    rollout::wait(client, format, &args.name)?;
                }
            }
        }
        ServiceCommand::Rollback(args) => rollback(client, format, &args.name, args.detach)?,
        ServiceCommand::Promote(args) => {
            let answer = client.post(
                &format!("/v1/services/{}/promote", path(&args.name)?),
                &json!({}),
            )?;
            done(
                format,
                &answer,
                &format!("service {}: canary promoted", args.name),
            )?;
            if !args.detach {
                rollout::wait(client, format, &args.name)?;
            }
        }
        ServiceCommand::Pause { name } => {
            let answer =
                client.post(&format!("/v1/services/{}/pause", path(&name)?), &json!({}))?;
            done(
                format,
                &answer,
                &format!(
                    "service {name}: rollout paused; resume with `warren-cli service resume                      {name}`"
                ),
            )?;
        }
        ServiceCommand::Resume(args) => {
            let answer = client.post(
                &format!("/v1/services/{}/resume", path(&args.name)?),
                &json!({}),
            )?;
            done(
                format,
                &answer,
                &format!("service {}: rollout resumed", args.name),
            )?;
            if !args.detach {
                rollout::wait(client, format, &args.name)?;
            }
        }
        ServiceCommand::Ls => {
            let services = client.get("/v1/services")?;
            let rows = rows(&services, |s| {
                vec![
                    cell(s.get("name")),
                    cell(s.get("image")),
                    cell(s.get("mode")),
                    format!("{}/{}", cell(s.get("running")), cell(s.get("replicas"))),
                    rollout::state_word(s),
                ]
            });
            print(
                format,
                &services,
                &["NAME", "IMAGE", "MODE", "RUNNING", "UPDATE"],
                rows,
            )?;
        }
        ServiceCommand::Inspect { name } => {
            let service = client.get(&format!("/v1/services/{}", path(&name)?))?;
            if format == Format::Table {
                // For people: policies, strategy and the rollout first, then everything.
                out!("{}", rollout::inspect_text(&service))?;
                outln!()?;
            }
            outln!(
                "{}",
                serde_json::to_string_pretty(&service).unwrap_or_default()
            )?;
        }
        ServiceCommand::Ps { name } => {
            let tasks = client.get(&format!("/v1/services/{}/tasks", path(&name)?))?;
            let rows = rows(&tasks, |t| {
                let ports = t
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                format!(
                                    "{}:{}->{}/tcp",
                                    cell(p.get("host_ip")),
                                    cell(p.get("host_port")),
                                    cell(p.get("container_port"))
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let next = t
                    .get("next_restart_ms")
                    .and_then(Value::as_u64)
                    .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                let error = cell(t.get("error"));
                let status = cell(t.get("status"));
                // A rollout's older container kept beside its slot's new one is marked.
                let generation = match t.get("previous") {
                    Some(Value::Bool(true)) => format!("{} (previous)", cell(t.get("generation"))),
                    _ => cell(t.get("generation")),
                };
                vec![
                    format!("{}.{}", cell(t.get("service")), cell(t.get("slot"))),
                    generation,
                    cell(t.get("node_name")),
                    short(&cell(t.get("node"))),
                    cell(t.get("state")),
                    cell(t.get("health")),
                    cell(t.get("exit_code")),
                    cell(t.get("restarts")),
                    next,
                    cell(t.get("container")),
                    ports,
                    cell(t.get("overlay_ip")),
                    if error.is_empty() || status.contains(&error) {
                        status
                    } else {
                        format!("{status} (last error: {error})")
                    },
                ]
            });
            print(
                format,
                &tasks,
                &[
                    "TASK",
                    "GEN",
                    "NODE",
                    "NODE_ID",
                    "STATE",
                    "HEALTH",
                    "EXIT",
                    "RESTARTS",
                    "NEXT_RESTART",
                    "CONTAINER",
                    "PORTS",
                    "OVERLAY_IP",
                    "STATUS",
                ],
                rows,
            )?;
        }
        ServiceCommand::Logs(args) => super::logs::run(client, format, &args)?,
        ServiceCommand::Scale { name, replicas } => {
            let answer = client.post(
                &format!("/v1/services/{}/scale", path(&name)?),
                &json!({ "replicas": replicas }),
            )?;
            done(
                format,
                &answer,
                &format!("service {name} scaled to {replicas}"),
            )?;
        }
        ServiceCommand::Rm { name } => {
            let answer = client.delete(&format!("/v1/services/{}", path(&name)?))?;
            done(format, &answer, &format!("service {name} removed"))?;
        }
    }
    Ok(())
}

/// `service rollback NAME` (and `service update --rollback`): then waits unless `detach`.
fn rollback(client: &Client, format: Format, name: &str, detach: bool) -> Result<()> {
    let answer = client.post(
        &format!("/v1/services/{}/rollback", path(name)?),
        &json!({}),
    )?;
    done(
        format,
        &answer,
        &format!("service {name}: rolling back to the previous spec"),
    )?;
    if !detach {
        rollout::wait(client, format, name)?;
    }
    Ok(())
}

fn done(format: Format, answer: &Value, message: &str) -> Result<()> {
    match format {
        Format::Json => outln!("{answer}"),
        Format::Table => outln!("{message}"),
    }
}

fn rows(list: &Value, f: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array()
        .map(|items| items.iter().map(f).collect())
        .unwrap_or_default()
}

/// A name safe to put in a URL path; the peer validates it fully.
pub(crate) fn path(name: &str) -> Result<&str> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("invalid service name {name:?}: use lowercase letters, digits and '-'");
    }
    Ok(name)
}

fn parse_env(pairs: &[String]) -> Result<Value> {
    let mut env = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {pair:?} is not of the form K=V"))?;
        env.insert(k.to_string(), json!(v));
    }
    Ok(Value::Object(env))
}

fn parse_secrets(mounts: &[String]) -> Result<Vec<Value>> {
    mounts
        .iter()
        .map(|s| {
            let (name, target) = s.split_once(':').unwrap_or((s, s));
            if name.is_empty() || target.is_empty() {
                return Err(anyhow!("--secret {s:?} is not NAME or NAME:TARGET"));
            }
            Ok(json!({ "name": name, "target": target }))
        })
        .collect()
}

fn create_body(args: &CreateService) -> Result<Value> {
    let ports = args
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<Result<Vec<_>>>()?;
    let mut body = json!({
        "secrets": parse_secrets(&args.secret)?,
        // Sent as written: the peer parses each with the one parser (warren_crdt::Mount).
        "mounts": args.mount,
        "name": args.name,
        "image": args.image,
        "env": parse_env(&args.env)?,
        "ports": ports,
        "command": args.command,
    });
    if let Some(out) = body.as_object_mut() {
        // Global: no replica count unless given (the node refuses one with a clear error).
        let replicas = match args.mode {
            ModeArg::Replicated => Some(args.replicas.unwrap_or(1)),
            ModeArg::Global => {
                out.insert("mode".into(), json!(args.mode.as_str()));
                args.replicas
            }
        };
        if let Some(replicas) = replicas {
            out.insert("replicas".into(), json!(replicas));
        }
    }
    let flags = spec_fields(&args.spec)?;
    if let (Some(out), Value::Object(fields)) = (body.as_object_mut(), flags) {
        if let Some(health) = fields.get("health") {
            if health.get("probe").is_none() {
                bail!("--health-interval, --health-timeout, --health-retries and --health-start-period need a probe: --health-cmd, --health-http or --health-tcp");
            }
            out.insert("health".into(), health.clone());
        }
        let mut restart = serde_json::Map::new();
        for (flag, key) in [
            ("restart_condition", "condition"),
            ("restart_delay_ms", "delay_ms"),
        ] {
            if let Some(v) = fields.get(flag) {
                restart.insert(key.into(), v.clone());
            }
        }
        if let Some(max) = fields.get("restart_max_attempts").and_then(Value::as_u64) {
            // 0: no limit.
            restart.insert(
                "max_attempts".into(),
                if max == 0 { Value::Null } else { json!(max) },
            );
        }
        if !restart.is_empty() {
            out.insert("restart".into(), Value::Object(restart));
        }
        let mut resources = serde_json::Map::new();
        for key in ["nano_cpus", "memory_bytes"] {
            if let Some(v) = fields.get(key).and_then(Value::as_u64).filter(|v| *v > 0) {
                resources.insert(key.into(), json!(v));
            }
        }
        if !resources.is_empty() {
            out.insert("resources".into(), Value::Object(resources));
        }
        if let Some(v) = fields.get("stop_timeout_ms") {
            out.insert("stop_timeout_ms".into(), v.clone());
        }
        let mut partition = serde_json::Map::new();
        if let Some(v) = fields.get("on_partition") {
            partition.insert("on_partition".into(), v.clone());
        }
        if let Some(ms) = fields.get("reschedule_after_ms").and_then(Value::as_u64) {
            partition.insert(
                "reschedule_after_ms".into(),
                if ms == 0 { Value::Null } else { json!(ms) },
            );
        }
        if !partition.is_empty() {
            out.insert("partition".into(), Value::Object(partition));
        }
        let mut placement = serde_json::Map::new();
        for key in ["constraints", "preferences"] {
            if let Some(v) = fields.get(key) {
                placement.insert(key.into(), v.clone());
            }
        }
        if let Some(max) = fields
            .get("max_replicas_per_node")
            .and_then(Value::as_u64)
            .filter(|m| *m > 0)
        {
            placement.insert("max_replicas_per_node".into(), json!(max));
        }
        if !placement.is_empty() {
            out.insert("placement".into(), Value::Object(placement));
        }
        if let Some(gpus) = fields.get("gpus").filter(|g| g.as_u64() != Some(0)) {
            out.insert("gpus".into(), gpus.clone());
        }
    }
    if let Some(out) = body.as_object_mut() {
        args.rollout.add_to_create(out)?;
    }
    Ok(body)
}

/// The body of `PATCH /v1/services/NAME`: only what the flags give.
fn update_body(args: &UpdateService) -> Result<Value> {
    let Value::Object(mut body) = spec_fields(&args.spec)? else {
        bail!("internal: spec flags are not an object");
    };
    if let Some(image) = &args.image {
        body.insert("image".into(), json!(image));
    }
    if let Some(replicas) = args.replicas {
        body.insert("replicas".into(), json!(replicas));
    }
    if !args.env.is_empty() {
        body.insert("env".into(), parse_env(&args.env)?);
    }
    if !args.publish.is_empty() {
        let ports = args
            .publish
            .iter()
            .map(|p| parse_publish(p))
            .collect::<Result<Vec<_>>>()?;
        body.insert("ports".into(), json!(ports));
    }
    if !args.secret.is_empty() {
        body.insert("secrets".into(), json!(parse_secrets(&args.secret)?));
    }
    if !args.command.is_empty() {
        body.insert("command".into(), json!(args.command));
    }
    if !args.mount.is_empty() {
        body.insert("mounts_add".into(), json!(args.mount));
    }
    if !args.mount_rm.is_empty() {
        body.insert("mounts_rm".into(), json!(args.mount_rm));
    }
    if args.no_health {
        body.insert("no_health".into(), json!(true));
    }
    if args.no_constraints {
        body.insert("constraints".into(), json!([]));
    }
    if args.no_placement_prefs {
        body.insert("preferences".into(), json!([]));
    }
    for (key, list) in [
        ("constraints_add", &args.constraint_add),
        ("constraints_rm", &args.constraint_rm),
        ("preferences_add", &args.placement_pref_add),
        ("preferences_rm", &args.placement_pref_rm),
    ] {
        if !list.is_empty() {
            body.insert(key.into(), json!(list));
        }
    }
    if let Some(mode) = args.mode {
        body.insert("mode".into(), json!(mode.as_str()));
    }
    args.rollout.add_to_patch(&mut body)?;
    Ok(Value::Object(body))
}

/// The health, restart, resource and stop-timeout flags as the update API's flat fields
/// (`health` holds a partial check: its `probe` only if one was given).
fn spec_fields(f: &SpecFlags) -> Result<Value> {
    let mut out = serde_json::Map::new();
    let mut health = serde_json::Map::new();
    let probe = match (&f.health_cmd, &f.health_http, f.health_port, f.health_tcp) {
        (Some(cmd), _, _, _) => Some(json!({ "kind": "cmd", "command": cmd })),
        (_, Some(path), Some(port), _) => {
            Some(json!({ "kind": "http", "port": port, "path": path }))
        }
        (_, Some(_), None, _) => bail!("--health-http needs --health-port"),
        (_, _, _, Some(port)) => Some(json!({ "kind": "tcp", "port": port })),
        _ => None,
    };
    if let Some(probe) = probe {
        health.insert("probe".into(), probe);
    }
    for (key, flag, text) in [
        ("interval_ms", "--health-interval", &f.health_interval),
        ("timeout_ms", "--health-timeout", &f.health_timeout),
        (
            "start_period_ms",
            "--health-start-period",
            &f.health_start_period,
        ),
    ] {
        if let Some(text) = text {
            let ms = parse_duration_ms(text).map_err(|e| anyhow!("{flag}: {e}"))?;
            health.insert(key.into(), json!(ms));
        }
    }
    if let Some(retries) = f.health_retries {
        health.insert("retries".into(), json!(retries));
    }
    if !health.is_empty() {
        out.insert("health".into(), Value::Object(health));
    }
    if let Some(restart) = f.restart {
        out.insert("restart_condition".into(), json!(restart.as_str()));
    }
    if let Some(max) = f.restart_max_attempts {
        out.insert("restart_max_attempts".into(), json!(max));
    }
    if let Some(text) = &f.restart_delay {
        let ms = parse_duration_ms(text).map_err(|e| anyhow!("--restart-delay: {e}"))?;
        out.insert("restart_delay_ms".into(), json!(ms));
    }
    if let Some(text) = &f.cpus {
        let nano = parse_cpus(text).map_err(|e| anyhow!("--cpus: {e}"))?;
        out.insert("nano_cpus".into(), json!(nano));
    }
    if let Some(text) = &f.memory {
        let bytes = parse_size(text).map_err(|e| anyhow!("--memory: {e}"))?;
        out.insert("memory_bytes".into(), json!(bytes));
    }
    if let Some(text) = &f.stop_timeout {
        let ms = parse_duration_ms(text).map_err(|e| anyhow!("--stop-timeout: {e}"))?;
        out.insert("stop_timeout_ms".into(), json!(ms));
    }
    if let Some(policy) = f.on_partition {
        out.insert("on_partition".into(), json!(policy.as_str()));
    }
    if let Some(text) = &f.reschedule_after {
        let ms = parse_duration_ms(text).map_err(|e| anyhow!("--reschedule-after: {e}"))?;
        out.insert("reschedule_after_ms".into(), json!(ms));
    }
    // Constraints and preferences go as written: the peer parses and checks them (one
    // parser, warren_crdt's) and answers with what is wrong.
    if !f.constraint.is_empty() {
        out.insert("constraints".into(), json!(f.constraint));
    }
    if !f.placement_pref.is_empty() {
        out.insert("preferences".into(), json!(f.placement_pref));
    }
    if let Some(max) = f.max_replicas_per_node {
        out.insert("max_replicas_per_node".into(), json!(max));
    }
    if let Some(gpus) = f.gpus {
        out.insert("gpus".into(), json!(gpus));
    }
    Ok(Value::Object(out))
}

/// A `--publish` value, Docker's syntax: `TARGET` (an engine-chosen port of 127.0.0.1 on the
/// task's node: host mode), `PUBLISHED:TARGET` (the routing mesh: ingress mode), or the long
/// form `published=P,target=T[,mode=ingress|host][,protocol=tcp]` (ingress by default, as in
/// Docker; ingress needs a published port). The mode is always written out.
fn parse_publish(p: &str) -> Result<Value> {
    let port = |s: &str| -> Result<u16> {
        s.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("--publish {p:?}: {s:?} is not a port (1-65535)"))
    };
    if p.contains('=') {
        let (mut published, mut target, mut mode) = (None, None, "ingress");
        for field in p.split(',') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| anyhow!("--publish {p:?}: {field:?} is not KEY=VALUE"))?;
            match key.trim() {
                "published" => published = Some(port(value.trim())?),
                "target" => target = Some(port(value.trim())?),
                "mode" => {
                    mode = match value.trim() {
                        "ingress" => "ingress",
                        "host" => "host",
                        other => bail!("--publish {p:?}: mode {other:?} is not ingress or host"),
                    }
                }
                "protocol" if value.trim() == "tcp" => {}
                "protocol" => bail!("--publish {p:?}: only protocol=tcp is supported"),
                other => bail!(
                    "--publish {p:?}: unknown key {other:?} (published, target, mode, protocol)"
                ),
            }
        }
        let target = target.ok_or_else(|| anyhow!("--publish {p:?}: target=PORT is missing"))?;
        if mode == "ingress" && published.is_none() {
            bail!(
                "--publish {p:?}: the routing mesh (mode=ingress) needs published=PORT; \
                 mode=host without one lets the engine choose"
            );
        }
        return Ok(json!({ "container_port": target, "host_port": published, "mode": mode }));
    }
    let value = match p.split_once(':') {
        Some((host, container)) => json!({
            "container_port": port(container)?,
            "host_port": port(host)?,
            "mode": "ingress",
        }),
        None => json!({ "container_port": port(p)?, "host_port": null, "mode": "host" }),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn parsed(args: &[&str]) -> ServiceCommand {
        let cli = Cli::try_parse_from(args).expect("parse");
        match cli.command {
            Command::Service(command) => command,
            other => panic!("not a service command: {other:?}"),
        }
    }

    #[test]
    fn create_flags_become_spec_objects() {
        let ServiceCommand::Create(args) = parsed(&[
            "warren-cli",
            "service",
            "create",
            "web",
            "--image",
            "img",
            "--health-http",
            "/ok",
            "--health-port",
            "8080",
            "--health-interval",
            "2s",
            "--health-retries",
            "2",
            "--restart",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "--restart-delay",
            "500ms",
            "--cpus",
            "0.5",
            "--memory",
            "256M",
            "--stop-timeout",
            "3s",
        ]) else {
            panic!("create");
        };
        let body = create_body(&args).expect("body");
        assert_eq!(
            body["health"],
            json!({"probe": {"kind": "http", "port": 8080, "path": "/ok"},
                   "interval_ms": 2000, "retries": 2})
        );
        assert_eq!(
            body["restart"],
            json!({"condition": "on-failure", "max_attempts": 3, "delay_ms": 500})
        );
        assert_eq!(
            body["resources"],
            json!({"nano_cpus": 500_000_000u64, "memory_bytes": 268_435_456u64})
        );
        assert_eq!(body["stop_timeout_ms"], json!(3000));
        // Timing without a probe is an error, not a silent no-op.
        let ServiceCommand::Create(args) = parsed(&[
            "warren-cli",
            "service",
            "create",
            "web",
            "--image",
            "img",
            "--health-interval",
            "2s",
        ]) else {
            panic!("create");
        };
        assert!(create_body(&args).is_err());
        assert!(Cli::try_parse_from([
            "warren-cli",
            "service",
            "create",
            "web",
            "--image",
            "img",
            "--health-http",
            "/x"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "warren-cli",
            "service",
            "create",
            "web",
            "--image",
            "img",
            "--restart",
            "sometimes"
        ])
        .is_err());
    }

    #[test]
    fn mount_flags_are_sent_as_written() {
        let ServiceCommand::Update(args) = parsed(&[
            "warren-cli",
            "service",
            "update",
            "web",
            "--mount",
            "source=data,target=/data",
            "--mount-rm",
            "/old",
        ]) else {
            panic!("update");
        };
        assert_eq!(
            update_body(&args).expect("body"),
            json!({"mounts_add": ["source=data,target=/data"], "mounts_rm": ["/old"]})
        );
        let ServiceCommand::Create(args) = parsed(&[
            "warren-cli",
            "service",
            "create",
            "web",
            "--image",
            "img",
            "--mount",
            "type=bind,source=/srv,target=/srv",
        ]) else {
            panic!("create");
        };
        assert_eq!(
            create_body(&args).expect("body")["mounts"],
            json!(["type=bind,source=/srv,target=/srv"])
        );
    }

    #[test]
    fn update_sends_only_the_flags_given() {
        let ServiceCommand::Update(args) = parsed(&[
            "warren-cli",
            "service",
            "update",
            "web",
            "--memory",
            "64m",
            "--restart",
            "never",
        ]) else {
            panic!("update");
        };
        assert_eq!(
            update_body(&args).expect("body"),
            json!({"memory_bytes": 67_108_864u64, "restart_condition": "never"})
        );
        let ServiceCommand::Update(args) = parsed(&[
            "warren-cli",
            "service",
            "update",
            "web",
            "--health-timeout",
            "1s",
            "--replicas",
            "4",
        ]) else {
            panic!("update");
        };
        assert_eq!(
            update_body(&args).expect("body"),
            json!({"health": {"timeout_ms": 1000}, "replicas": 4})
        );
        let ServiceCommand::Update(args) = parsed(&["warren-cli", "service", "update", "web"])
        else {
            panic!("update");
        };
        assert_eq!(update_body(&args).expect("body"), json!({}));
        let ServiceCommand::Update(args) =
            parsed(&["warren-cli", "service", "update", "web", "--memory", "lots"])
        else {
            panic!("update");
        };
        let err = update_body(&args).expect_err("bad size").to_string();
        assert!(
            err.contains("--memory") && err.contains("\"lots\""),
            "{err}"
        );
    }

    #[test]
    fn placement_flags_become_the_specs_placement() {
        let ServiceCommand::Create(args) = parsed(&[
            "warren-cli",
            "service",
            "create",
            "web",
            "--image",
            "img",
            "--constraint",
            "node.labels.zone==north",
            "--constraint",
            "node.os==linux",
            "--placement-pref",
            "spread=node.labels.rack",
            "--max-replicas-per-node",
            "2",
            "--gpus",
            "2",
        ]) else {
            panic!("create");
        };
        assert_eq!(create_body(&args).expect("body")["gpus"], json!(2));
        assert_eq!(
            create_body(&args).expect("body")["placement"],
            json!({"constraints": ["node.labels.zone==north", "node.os==linux"],
                   "preferences": ["spread=node.labels.rack"],
                   "max_replicas_per_node": 2})
        );
        let ServiceCommand::Update(args) = parsed(&[
            "warren-cli",
            "service",
            "update",
            "web",
            "--no-constraints",
            "--max-replicas-per-node",
            "0",
            "--gpus",
            "0",
        ]) else {
            panic!("update");
        };
        assert_eq!(
            update_body(&args).expect("body"),
            json!({"constraints": [], "max_replicas_per_node": 0, "gpus": 0})
        );
        assert!(Cli::try_parse_from([
            "warren-cli",
            "service",
            "update",
            "web",
            "--no-constraints",
            "--constraint",
            "node.name==a"
        ])
        .is_err());
    }

    #[test]
    fn publish_forms() {
        assert_eq!(
            parse_publish("80").expect("80"),
            json!({"container_port": 80, "host_port": null, "mode": "host"})
        );
        assert_eq!(
            parse_publish("8080:80").expect("8080:80"),
            json!({"container_port": 80, "host_port": 8080, "mode": "ingress"})
        );
        assert_eq!(
            parse_publish("published=8080,target=80,mode=host").expect("long host"),
            json!({"container_port": 80, "host_port": 8080, "mode": "host"})
        );
        assert_eq!(
            parse_publish("target=80,published=8080").expect("long, ingress by default"),
            json!({"container_port": 80, "host_port": 8080, "mode": "ingress"})
        );
        assert_eq!(
            parse_publish("target=80,mode=host").expect("long, engine-chosen"),
            json!({"container_port": 80, "host_port": null, "mode": "host"})
        );
        for bad in [
            "target=80",
            "published=8080",
            "published=8080,target=80,mode=vip",
            "published=8080,target=80,protocol=udp",
            "published=8080,target=80,colour=red",
            "published=8080,target=80,mode",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        assert!(parse_publish("x").is_err());
        assert!(parse_publish("0").is_err());
        assert!(parse_publish("70000").is_err());
    }

    #[test]
    fn mode_and_list_edits_become_fields() {
        let ServiceCommand::Create(args) = parsed(&[
            "warren-cli",
            "service",
            "create",
            "agent",
            "--image",
            "img",
            "--mode",
            "global",
        ]) else {
            panic!("create");
        };
        let body = create_body(&args).expect("body");
        assert_eq!(
            (&body["mode"], body.get("replicas")),
            (&json!("global"), None)
        );
        let ServiceCommand::Create(args) =
            parsed(&["warren-cli", "service", "create", "web", "--image", "img"])
        else {
            panic!("create");
        };
        let body = create_body(&args).expect("body");
        assert_eq!((body.get("mode"), &body["replicas"]), (None, &json!(1)));
        let ServiceCommand::Update(args) = parsed(&[
            "warren-cli",
            "service",
            "update",
            "web",
            "--constraint-add",
            "node.labels.zone==b",
            "--constraint-rm",
            "node.labels.zone==a",
            "--placement-pref-add",
            "spread=node.labels.rack",
        ]) else {
            panic!("update");
        };
        assert_eq!(
            update_body(&args).expect("body"),
            json!({"constraints_add": ["node.labels.zone==b"],
                   "constraints_rm": ["node.labels.zone==a"],
                   "preferences_add": ["spread=node.labels.rack"]})
        );
    }
}
