//! The Docker engine as the tests see it: the one listing of Warren containers (one format,
//! one parser), the image and command every end-to-end test runs, and a `docker` runner.

use std::process::{Command, Stdio};

use crate::Error;

/// The image the project's scripts build (`scripts/ensure-docker.sh`); no registry needed.
pub const IMAGE: &str = "warren/busybox:latest";

/// A web server that exits on SIGTERM at once: busybox `httpd` as PID 1 ignores SIGTERM, which
/// would make every removal wait out Docker's 10 s grace period.
pub const WEB_COMMAND: [&str; 3] = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
];

/// The `docker ps --format` of [`parse_containers`]: id, then the `warren.node`,
/// `warren.service`, `warren.slot` and `warren.epoch` labels, the state and the ports,
/// separated by tabs.
pub const PS_FORMAT: &str = "{{.ID}}\t{{.Label \"warren.node\"}}\t{{.Label \"warren.service\"}}\t{{.Label \"warren.slot\"}}\t{{.Label \"warren.epoch\"}}\t{{.State}}\t{{.Ports}}";

/// The `docker` arguments that list every container (any state, full ids) matching `filter`
/// (a `docker ps --filter` value such as `label=warren.node` or `label=warren.node=<peer>`)
/// in [`PS_FORMAT`].
pub fn ps_args(filter: &str) -> Vec<String> {
    [
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        filter,
        "--format",
        PS_FORMAT,
    ]
    .map(String::from)
    .to_vec()
}

/// A Warren container as the engine lists it ([`PS_FORMAT`]). `N` is how the node is named:
/// its PeerId (the `warren.node` label) as listed, or whatever [`Container::with_node`] maps
/// it to (the testnet's node index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container<N = String> {
    /// The engine's container id (full).
    pub id: String,
    /// The node whose label it carries.
    pub node: N,
    /// The service (`warren.service`).
    pub service: String,
    /// The slot (`warren.slot`).
    pub slot: u32,
    /// The lease epoch it was assigned under (`warren.epoch`); `None` if unlabelled.
    pub epoch: Option<u64>,
    /// The engine's state: `running`, `exited`, `created`, ...
    pub state: String,
    /// The engine's ports column, e.g. `127.0.0.1:32768->80/tcp`; empty when none.
    pub ports: String,
}

impl<N> Container<N> {
    /// Whether the engine lists it as running.
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    /// The host port of the first `127.0.0.1:PORT->...` in its ports column.
    pub fn host_port(&self) -> Option<u16> {
        let after = self.ports.split("127.0.0.1:").nth(1)?;
        after.split("->").next()?.parse().ok()
    }

    /// The same container with its node renamed by `f`; `None` when `f` does not know the
    /// node (a container of another cluster).
    pub fn with_node<M>(self, f: impl FnOnce(&N) -> Option<M>) -> Option<Container<M>> {
        let node = f(&self.node)?;
        Some(Container {
            id: self.id,
            node,
            service: self.service,
            slot: self.slot,
            epoch: self.epoch,
            state: self.state,
            ports: self.ports,
        })
    }
}

/// Parses the output of `docker` [`ps_args`] into containers. Lines that are not a Warren
/// container (fewer fields, no `warren.node` label, a slot that is not a number) are left out.
pub fn parse_containers(out: &str) -> Vec<Container> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let id = f.next()?;
            let node = f.next().filter(|n| !n.is_empty())?;
            let service = f.next()?;
            let slot = f.next()?.parse().ok()?;
            let epoch = f.next()?.parse().ok();
            let state = f.next()?;
            let ports = f.next().unwrap_or("");
            Some(Container {
                id: id.to_string(),
                node: node.to_string(),
                service: service.to_string(),
                slot,
                epoch,
                state: state.to_string(),
                ports: ports.to_string(),
            })
        })
        .collect()
}

/// Runs `cmd` to its end with stdin from `/dev/null` and returns its stdout; a non-zero exit
/// is [`Error::Failed`] with what it said on stderr, one that cannot start [`Error::Spawn`].
pub fn run(cmd: &mut Command) -> Result<String, Error> {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `docker [-H host] ARGS` and returns its stdout.
pub(crate) fn run_docker<S: AsRef<str>>(host: Option<&str>, args: &[S]) -> Result<String, Error> {
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.args(["-H", host]);
    }
    run(cmd.args(args.iter().map(AsRef::as_ref)))
}

/// Runs `docker ARGS` on the machine's engine and returns its stdout; a non-zero exit is
/// [`Error::Failed`] with what it said.
pub fn docker<S: AsRef<str>>(args: &[S]) -> Result<String, Error> {
    run_docker(None, args)
}

/// The Warren containers of the machine's engine matching `filter` (see [`ps_args`]).
pub fn containers(filter: &str) -> Result<Vec<Container>, Error> {
    Ok(parse_containers(&docker(&ps_args(filter))?))
}

/// Removes (`docker rm -f`) every container, Warren's or not, matching `filter` (e.g.
/// `label=warren.node=<peer>`), then the networks matching it (a node's overlay network
/// carries the same label and outlives the node, as its tasks do: left behind, each holds
/// one of the engine's few IPv4 pools); returns how many containers there were.
pub fn remove_containers(filter: &str) -> Result<usize, Error> {
    let out = docker(&["ps", "-aq", "--filter", filter])?;
    let ids: Vec<&str> = out.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(&ids);
        docker(&args)?;
    }
    let networks = docker(&["network", "ls", "-q", "--filter", filter])?;
    for network in networks.split_whitespace() {
        // One still in use by something else stays; that is not this call's to decide.
        let _ = docker(&["network", "rm", network]);
    }
    Ok(ids.len())
}

/// Checks that a Docker engine answers.
///
/// # Panics
///
/// When none does, with the fix (`scripts/ensure-docker.sh`, which the README's test command
/// runs): this is a test's precondition.
pub fn require_docker() {
    let ok = docker(&["info", "--format", "{{.ServerVersion}}"]).is_ok();
    assert!(
        ok,
        "no Docker engine answers: run scripts/ensure-docker.sh (the README's test command does)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_parses_warren_rows_and_leaves_out_the_rest() {
        let out = "abc\tpeer1\tweb\t2\t7\trunning\t127.0.0.1:32768->80/tcp\n\
                   def\tpeer2\tjob\t0\t\texited\t\n\
                   ghi\t\tplain\t\t\trunning\t\n\
                   jkl\tpeer1\tweb\tx\t1\trunning\t\n\
                   short\tpeer1\n";
        let list = parse_containers(out);
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(
            list[0],
            Container {
                id: "abc".into(),
                node: "peer1".into(),
                service: "web".into(),
                slot: 2,
                epoch: Some(7),
                state: "running".into(),
                ports: "127.0.0.1:32768->80/tcp".into(),
            }
        );
        assert!(list[0].running());
        assert_eq!(list[0].host_port(), Some(32768));
        assert_eq!(list[1].host_port(), None);
        assert_eq!((list[1].epoch, list[1].running()), (None, false));
        let mapped = list[1]
            .clone()
            .with_node(|n| (n == "peer2").then_some(1usize));
        assert_eq!(mapped.map(|c| c.node), Some(1));
        assert!(list[0].clone().with_node(|_| None::<usize>).is_none());
    }

    #[test]
    fn the_listing_asks_for_the_format_the_parser_reads() {
        let args = ps_args("label=warren.node");
        assert_eq!(args.last().map(String::as_str), Some(PS_FORMAT));
        assert_eq!(PS_FORMAT.split('\t').count(), 7);
    }
}
