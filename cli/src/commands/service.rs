use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::args::{CreateService, Format, ServiceCommand};
use crate::client::Client;
use crate::commands::cluster::short;
use crate::output::{cell, print};

pub(crate) fn run(client: &Client, format: Format, command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            let body = create_body(&args)?;
            let answer = client.post("/v1/services", &body)?;
            done(format, &answer, &format!("service {} created", args.name));
        }
        ServiceCommand::Ls => {
            let services = client.get("/v1/services")?;
            let rows = rows(&services, |s| {
                vec![
                    cell(s.get("name")),
                    cell(s.get("image")),
                    format!("{}/{}", cell(s.get("running")), cell(s.get("replicas"))),
                ]
            });
            print(format, &services, &["NAME", "IMAGE", "RUNNING"], rows);
        }
        ServiceCommand::Inspect { name } => {
            let service = client.get(&format!("/v1/services/{}", path(&name)?))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&service).unwrap_or_default()
            );
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
                vec![
                    format!("{}.{}", cell(t.get("service")), cell(t.get("slot"))),
                    cell(t.get("node_name")),
                    short(&cell(t.get("node"))),
                    cell(t.get("state")),
                    cell(t.get("container")),
                    ports,
                    cell(t.get("status")),
                ]
            });
            print(
                format,
                &tasks,
                &[
                    "TASK",
                    "NODE",
                    "NODE_ID",
                    "STATE",
                    "CONTAINER",
                    "PORTS",
                    "STATUS",
                ],
                rows,
            );
        }
        ServiceCommand::Scale { name, replicas } => {
            let answer = client.post(
                &format!("/v1/services/{}/scale", path(&name)?),
                &json!({ "replicas": replicas }),
            )?;
            done(
                format,
                &answer,
                &format!("service {name} scaled to {replicas}"),
            );
        }
        ServiceCommand::Rm { name } => {
            let answer = client.delete(&format!("/v1/services/{}", path(&name)?))?;
            done(format, &answer, &format!("service {name} removed"));
        }
    }
    Ok(())
}

fn done(format: Format, answer: &Value, message: &str) {
    match format {
        Format::Json => println!("{answer}"),
        Format::Table => println!("{message}"),
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

fn create_body(args: &CreateService) -> Result<Value> {
    let mut env = serde_json::Map::new();
    for pair in &args.env {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {pair:?} is not of the form K=V"))?;
        env.insert(k.to_string(), json!(v));
    }
    let ports = args
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<Result<Vec<_>>>()?;
    let secrets = args
        .secret
        .iter()
        .map(|s| {
            let (name, target) = s.split_once(':').unwrap_or((s, s));
            if name.is_empty() || target.is_empty() {
                return Err(anyhow!("--secret {s:?} is not NAME or NAME:TARGET"));
            }
            Ok(json!({ "name": name, "target": target }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "secrets": secrets,
        "name": args.name,
        "image": args.image,
        "replicas": args.replicas,
        "env": env,
        "ports": ports,
        "command": args.command,
    }))
}

/// `CONTAINER` or `HOST:CONTAINER` (host side always 127.0.0.1).
fn parse_publish(p: &str) -> Result<Value> {
    let port = |s: &str| -> Result<u16> {
        s.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("--publish {p:?}: {s:?} is not a port (1-65535)"))
    };
    let value = match p.split_once(':') {
        Some((host, container)) => {
            json!({ "container_port": port(container)?, "host_port": port(host)? })
        }
        None => json!({ "container_port": port(p)?, "host_port": null }),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        assert_eq!(
            parse_publish("80").expect("80"),
            json!({"container_port": 80, "host_port": null})
        );
        assert_eq!(
            parse_publish("8080:80").expect("8080:80"),
            json!({"container_port": 80, "host_port": 8080})
        );
        assert!(parse_publish("x").is_err());
        assert!(parse_publish("0").is_err());
        assert!(parse_publish("70000").is_err());
    }
}
