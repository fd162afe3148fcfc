//! What a node's embedded DNS answers (issue 14, DESIGN §4): a pure rule over the node's
//! view ([`Snapshot`]), so every node derives its answers the same way and the daemon only
//! serves them (`warren-dns`).
//!
//! - A service answers with the overlay addresses of its tasks that are running, not failing
//!   their health check (healthy, or without a check; not while starting), on a member not
//!   held down here and not removed (a draining member's tasks answer until they move): a
//!   task that fails its check leaves the answers with the report that says so; a member
//!   cut off by a partition leaves them when SWIM's suspicion of it runs out.
//! - A member answers with its overlay address while it is not removed nor held down here,
//!   if its published record is the one the overlay's rule gives its key.
//!
//! The tasks come from the reports the node holds; a node that serves names keeps asking
//! every member for them ([`crate::machine::NodeMachine::want_reports`]).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use crate::core::TaskHealth;
use crate::machine::Snapshot;
use crate::protocol::TaskState;

/// The names one node answers: per service, its answering tasks as (slot, address) in slot
/// order; per member name, its overlay address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    /// Service name → (slot, overlay address) of each task that answers, by slot.
    pub services: BTreeMap<String, Vec<(u32, Ipv6Addr)>>,
    /// Member name → its overlay address.
    pub nodes: BTreeMap<String, Ipv6Addr>,
}

/// The names `snapshot` (one node's view) answers, by the rule in the module doc.
pub fn name_records(snapshot: &Snapshot) -> NameRecords {
    let cluster = snapshot
        .cluster
        .as_ref()
        .map(|c| c.id.as_str())
        .unwrap_or("");
    let mut records = NameRecords::default();
    let serving = crate::machine::MemberStatus::serves;
    let serving_nodes: BTreeMap<_, _> = snapshot
        .members
        .iter()
        .map(|m| (&m.id, serving(m)))
        .collect();
    for m in snapshot.members.iter().filter(|m| serving(m)) {
        let Some(record) = &m.overlay else { continue };
        if let Ok(addresses) = crate::overlay::verify(cluster, record) {
            records.nodes.insert(m.name.clone(), addresses.overlay_ip);
        }
    }
    for task in &snapshot.tasks {
        let answers = task.state == TaskState::Running
            && matches!(task.health, TaskHealth::None | TaskHealth::Healthy)
            && serving_nodes.get(&task.node).copied().unwrap_or(false);
        if let (true, Some(ip)) = (answers, task.overlay_ip) {
            records
                .services
                .entry(task.service.to_string())
                .or_default()
                .push((task.slot, ip));
        }
    }
    for tasks in records.services.values_mut() {
        tasks.sort_unstable();
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Liveness;
    use crate::machine::{MemberStatus, TaskView};
    use crate::overlay::{addresses, WireguardPublic};
    use warren_crdt::MemberState;
    use warren_crdt::{ClusterInfo, Epoch, NodeId, ServiceName};

    const CLUSTER: &str = "c1";

    fn member(name: &str, key: u8, liveness: Liveness, state: MemberState) -> MemberStatus {
        let public = WireguardPublic([key; 32]);
        MemberStatus {
            id: NodeId(format!("id-{name}")),
            name: name.into(),
            liveness,
            state,
            availability: Default::default(),
            stays: Vec::new(),
            labels: Default::default(),
            capabilities: Default::default(),
            platform: Default::default(),
            addrs: Vec::new(),
            api: String::new(),
            is_self: false,
            tasks: 0,
            capacity: None,
            reserved: Default::default(),
            usage: None,
            gpus: Vec::new(),
            gpu_holders: Default::default(),
            engine: None,
            overlay: Some(addresses(CLUSTER, &public).record(&public, 51820)),
            overlay_state: None,
        }
    }

    fn task(node: &str, slot: u32, state: TaskState, health: TaskHealth, ip: u16) -> TaskView {
        TaskView {
            service: ServiceName::new("web").expect("a name"),
            slot,
            node: NodeId(format!("id-{node}")),
            node_name: node.into(),
            epoch: Epoch(1),
            state,
            status: String::new(),
            container: String::new(),
            ports: Vec::new(),
            health,
            exit_code: None,
            restarts: 0,
            next_restart_ms: None,
            error: String::new(),
            overlay_ip: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, ip)),
            generation: 1,
        }
    }

    fn snapshot(members: Vec<MemberStatus>, tasks: Vec<TaskView>) -> Snapshot {
        Snapshot {
            cluster: Some(ClusterInfo {
                id: CLUSTER.into(),
                name: "lab".into(),
                created_at: 0,
            }),
            members,
            tasks,
            ..Snapshot::default()
        }
    }

    fn web(records: &NameRecords) -> Vec<u32> {
        records
            .services
            .get("web")
            .map(|t| t.iter().map(|(slot, _)| *slot).collect())
            .unwrap_or_default()
    }

    #[test]
    fn running_tasks_not_failing_their_check_on_live_members_answer() {
        let s = snapshot(
            vec![
                member("a", 1, Liveness::Alive, MemberState::Active),
                member("b", 2, Liveness::Suspect, MemberState::Active),
            ],
            vec![
                task("b", 3, TaskState::Running, TaskHealth::Healthy, 3),
                task("a", 0, TaskState::Running, TaskHealth::None, 1),
                task("a", 1, TaskState::Running, TaskHealth::Unhealthy, 2),
                task("a", 2, TaskState::Running, TaskHealth::Starting, 4),
                task("a", 4, TaskState::Unknown, TaskHealth::None, 5),
            ],
        );
        let records = name_records(&s);
        assert_eq!(
            web(&records),
            vec![0, 3],
            "by slot; unhealthy, starting, not running out"
        );
        assert_eq!(
            records.services["web"][0].1,
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)
        );
        let a = addresses(CLUSTER, &WireguardPublic([1; 32])).overlay_ip;
        assert_eq!(records.nodes.get("a"), Some(&a));
        assert!(
            records.nodes.contains_key("b"),
            "a suspect member still answers"
        );
    }

    #[test]
    fn members_held_down_or_removed_leave_the_answers() {
        let s = snapshot(
            vec![
                member("a", 1, Liveness::Alive, MemberState::Active),
                member("b", 2, Liveness::Down, MemberState::Active),
                member("c", 3, Liveness::Alive, MemberState::Removed),
            ],
            vec![
                task("a", 0, TaskState::Running, TaskHealth::None, 1),
                task("b", 1, TaskState::Running, TaskHealth::None, 2),
                task("c", 2, TaskState::Running, TaskHealth::None, 3),
                task("gone", 3, TaskState::Running, TaskHealth::None, 4),
            ],
        );
        let records = name_records(&s);
        assert_eq!(web(&records), vec![0]);
        assert_eq!(records.nodes.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn a_record_the_rule_does_not_give_is_not_served() {
        let mut forged = member("a", 1, Liveness::Alive, MemberState::Active);
        if let Some(record) = forged.overlay.as_mut() {
            record.overlay_ip = "fd00::1".into();
        }
        let mut bare = member("b", 2, Liveness::Alive, MemberState::Active);
        bare.overlay = None;
        let records = name_records(&snapshot(vec![forged, bare], Vec::new()));
        assert!(records.nodes.is_empty(), "{records:?}");
    }
}
