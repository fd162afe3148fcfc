//! The API's read model: a [`Snapshot`] of this node's view, and the document's history.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use warren_crdt::{
    Assignment, ClusterInfo, Epoch, HistoryEntry, MemberState, NodeId, Service, ServiceName, SlotId,
};

use crate::core::{reservation, Capacity, Liveness, Millis, TaskHealth};
use crate::protocol::{EngineStatus, OverlayStatus, TaskState, TaskStatus};
use crate::system::{Gpu, Usage};

use super::NodeMachine;

/// A member as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// How it looks from here.
    pub liveness: Liveness,
    /// Admission state.
    pub state: MemberState,
    /// `active`, `pause` or `drain` (`node update --availability`).
    pub availability: warren_crdt::Availability,
    /// The slots assigned to it that stay although it is drained, each as `SERVICE.SLOT:
    /// stays: REASON` (e.g. `web.1: stays: on-partition wait`); empty unless drained.
    pub stays: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The capabilities it announced (`--capability`).
    pub capabilities: std::collections::BTreeSet<String>,
    /// Its CPU architecture and OS, as it announced them (`unknown` until it has).
    pub platform: warren_crdt::Platform,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Its API address, from its reports (empty until one arrived).
    pub api: String,
    /// Whether this is the node answering.
    pub is_self: bool,
    /// Slots assigned to it.
    pub tasks: usize,
    /// What it offers to reservations, as it last said; `None` when unknown.
    pub capacity: Option<Capacity>,
    /// What the tasks assigned to it reserve (their services' `--cpus` and `--memory`).
    pub reserved: Capacity,
    /// Its load and memory in use, as it last said; `None` when unknown.
    pub usage: Option<Usage>,
    /// Its GPUs, as it last said.
    pub gpus: Vec<Gpu>,
    /// Which slot holds each of its GPUs, by device id ([`Gpu::device_id`]), from the
    /// assignments (`--gpus`); a GPU missing here is free.
    pub gpu_holders: BTreeMap<String, SlotId>,
    /// Whether it reaches its container engine, as it last said; `None` when unknown.
    pub engine: Option<EngineStatus>,
    /// Its place on the overlay as it published it (WireGuard key, overlay address,
    /// container subnet); `None` when it published none (`--no-overlay`, or not yet).
    pub overlay: Option<warren_crdt::MemberOverlay>,
    /// Its overlay interface as it last said (up with its peers, down and why, or turned
    /// off); `None` when unknown.
    pub overlay_state: Option<OverlayStatus>,
}

impl MemberStatus {
    /// Whether its tasks take traffic (DNS answers, routing-mesh connections): a member that
    /// is neither removed nor held down by this node's failure detector.
    pub fn serves(&self) -> bool {
        self.state != MemberState::Removed && self.liveness != Liveness::Down
    }
}

/// The lease as one node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    /// The holder.
    pub holder: NodeId,
    /// The holder's name.
    pub holder_name: String,
    /// Its epoch.
    pub epoch: Epoch,
}

/// One task: its assignment and the actual state its node last reported.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Service.
    pub service: ServiceName,
    /// Slot.
    pub slot: u32,
    /// Assigned node.
    pub node: NodeId,
    /// Its name.
    pub node_name: String,
    /// Epoch of the assignment.
    pub epoch: Epoch,
    /// Where it stands (`running`, `restarting`, `failed`, `pending`, `unknown`, ...).
    pub state: TaskState,
    /// Docker's status text or the last error.
    pub status: String,
    /// Short container id.
    pub container: String,
    /// Published ports.
    pub ports: Vec<crate::engine::PublishedPort>,
    /// `none` (no health check, or its node has not said), `starting`, `healthy`, `unhealthy`.
    pub health: TaskHealth,
    /// Exit code of its last run, once it stopped.
    pub exit_code: Option<i64>,
    /// Restarts in a row.
    pub restarts: u32,
    /// Milliseconds until its next restart (as of its node's last report), while backing off.
    pub next_restart_ms: Option<u64>,
    /// Why its last run ended or its last action failed; empty when nothing went wrong.
    pub error: String,
    /// Its address on its node's overlay network, when it has one.
    pub overlay_ip: Option<std::net::Ipv6Addr>,
    /// The spec generation it runs: its assignment's (in [`Snapshot::previous_tasks`], its
    /// container's).
    pub generation: u64,
}

/// A consistent picture of one node's view, for the API.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// This node.
    pub node: Option<NodeId>,
    /// Its name.
    pub name: String,
    /// The cluster record.
    pub cluster: Option<ClusterInfo>,
    /// The lease in force.
    pub lease: Option<LeaseStatus>,
    /// Members with liveness.
    pub members: Vec<MemberStatus>,
    /// Services by name, tombstones included ([`Snapshot::live_services`] leaves them out):
    /// the cached view's own table, shared (taking a snapshot copies no service).
    pub services: crate::core::Services,
    /// Tasks of live services.
    pub tasks: Vec<TaskView>,
    /// Containers of an older generation that nodes keep running beside their slot's new
    /// task during a start-first or blue/green rollout (issue 15), as their nodes report
    /// them: `service ps` shows both generations. Not in [`Snapshot::tasks`] (which has one
    /// task per slot).
    pub previous_tasks: Vec<TaskView>,
    /// Messages from non-members dropped by the mesh.
    pub dropped_non_member: u64,
    /// Peers connected now.
    pub connected_peers: usize,
    /// Whether this peer holds a fresh report from every active member not down here, so
    /// task states, usage and engines shown are current ([`NodeMachine::want_reports`]).
    pub reports_complete: bool,
    /// Heads of the document.
    pub heads: Vec<String>,
    /// Join and operator tokens (digests included: never serialize this field to a client as
    /// is). The remote API checks credentials against it.
    #[serde(skip)]
    pub tokens: Vec<warren_crdt::TokenRecord>,
    /// Secrets, metadata only.
    pub secrets: Vec<SecretMeta>,
    /// Why each unassigned slot of a live service waits (e.g. `no node with 2 GiB free
    /// memory`).
    pub pending: Vec<(SlotId, String)>,
    /// The cluster settings in force on this replica.
    pub settings: warren_crdt::ClusterSettings,
    /// The volume records, by name.
    pub volumes: std::collections::BTreeMap<String, warren_crdt::Volume>,
}

impl Snapshot {
    /// The live services (not deleted), by name.
    pub fn live_services(&self) -> impl Iterator<Item = &Service> {
        self.services.values().filter(|s| !s.deleted)
    }

    /// The live service `name`, if any: O(log services).
    pub fn live_service(&self, name: &ServiceName) -> Option<&Service> {
        self.services.get(name).filter(|s| !s.deleted)
    }
}

/// What may be shown of a secret: never its value or keys.
#[derive(Debug, Clone, Serialize)]
pub struct SecretMeta {
    /// Its name.
    pub name: String,
    /// Its version (increases with every rotation and re-keying).
    pub version: u64,
    /// Size of the value in bytes.
    pub bytes: usize,
    /// Names of the members it is sealed to.
    pub recipients: Vec<String>,
}

impl NodeMachine {
    /// The newest `limit` changes, oldest first; only those that touched `service` if given.
    pub fn history(&mut self, service: Option<&ServiceName>, limit: usize) -> Vec<HistoryEntry> {
        let mut entries = match service {
            Some(service) => self.state.service_history(service, limit),
            None => {
                let mut all = self.state.history();
                all.reverse();
                all.truncate(limit);
                all
            }
        };
        entries.reverse();
        entries
    }

    /// This node's view at `now`, for the API. `dropped_non_member` and `connected_peers`
    /// come from the transport.
    pub fn snapshot(
        &mut self,
        now: Millis,
        dropped_non_member: u64,
        connected_peers: usize,
    ) -> Snapshot {
        let reports_complete = self.reports_complete(now);
        // The view is taken out of its cache for the walk and put back after: no copy.
        self.view();
        let Some(view) = self.view_cache.take() else {
            return Snapshot::default();
        };
        let name_of = |id: &NodeId| {
            view.members
                .get(id)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| id.short().to_string())
        };
        let mut per_node: HashMap<&NodeId, usize> = HashMap::new();
        for a in view.assignments.values() {
            *per_node.entry(&a.node).or_default() += 1;
        }
        let mut reserved: HashMap<&NodeId, Capacity> = HashMap::new();
        for (slot, a) in &view.assignments {
            let Some(service) = crate::core::service_wanting(&view.services, slot) else {
                continue;
            };
            let want = reservation(service);
            let r = reserved.entry(&a.node).or_default();
            r.nano_cpus = r.nano_cpus.saturating_add(want.nano_cpus);
            r.memory_bytes = r.memory_bytes.saturating_add(want.memory_bytes);
        }
        let mut gpu_holders = crate::core::gpus::holders(&view.assignments);
        let mut overlays = self.state.member_overlays();
        let staying =
            crate::core::availability::staying(&view.services, &view.members, &view.assignments);
        let unplaced = self.core.unplaced_reasons(&view, now);
        let stays_on = |node: &NodeId| -> Vec<String> {
            staying
                .iter()
                .filter(|(slot, _)| view.assignments.get(*slot).is_some_and(|a| a.node == *node))
                .map(|(slot, why)| format!("{}.{}: {why}", slot.service, slot.slot))
                .collect()
        };
        let members = view
            .members
            .values()
            .map(|m| MemberStatus {
                overlay: overlays.remove(&m.id),
                id: m.id.clone(),
                name: m.name.clone(),
                liveness: self.core.liveness(&m.id, now),
                state: m.state,
                availability: m.availability,
                stays: stays_on(&m.id),
                labels: m.labels.clone(),
                capabilities: m.capabilities.clone(),
                platform: m.platform.clone(),
                addrs: m.addrs.clone(),
                api: if m.id == self.me {
                    self.api.clone()
                } else {
                    self.reports
                        .received
                        .get(&m.id)
                        .map(|(r, _)| r.api.clone())
                        .unwrap_or_default()
                },
                is_self: m.id == self.me,
                tasks: per_node.get(&m.id).copied().unwrap_or(0),
                capacity: self.core.capacities().get(&m.id).copied(),
                reserved: reserved.get(&m.id).copied().unwrap_or_default(),
                usage: if m.id == self.me {
                    self.usage
                } else {
                    self.reports.received.get(&m.id).and_then(|(r, _)| r.usage)
                },
                gpu_holders: gpu_holders.remove(&m.id).unwrap_or_default(),
                gpus: if m.id == self.me {
                    self.gpus.clone()
                } else {
                    self.reports
                        .received
                        .get(&m.id)
                        .map(|(r, _)| r.gpus.clone())
                        .unwrap_or_default()
                },
                engine: if m.id == self.me {
                    self.local_engine.clone()
                } else {
                    self.reports
                        .received
                        .get(&m.id)
                        .and_then(|(r, _)| r.engine.clone())
                },
                overlay_state: if m.id == self.me {
                    self.local_overlay.clone()
                } else {
                    self.reports
                        .received
                        .get(&m.id)
                        .and_then(|(r, _)| r.overlay.as_deref().cloned())
                },
            })
            .collect();
        // Every task report by (node, slot), so each task finds its own in O(1). A node
        // may report two containers of one slot: the assignment's generation and an older
        // one (a rollout's start-first or blue/green keeps it beside the new one, or the node
        // has not replaced it yet); the older ones are listed in `previous_tasks`.
        let mut reports: HashMap<(&NodeId, &str, u32), Vec<&TaskStatus>> = HashMap::new();
        let reported_by = std::iter::once((&self.me, &self.local_status)).chain(
            self.reports
                .received
                .iter()
                .filter(|(node, _)| **node != self.me)
                .map(|(node, (report, _))| (node, &report.tasks)),
        );
        for (node, tasks) in reported_by {
            for t in tasks.iter().filter(|t| !t.unassigned) {
                reports
                    .entry((node, t.service.as_str(), t.slot))
                    .or_default()
                    .push(t);
            }
        }
        let mut older: Vec<(&NodeId, &TaskStatus)> = reports
            .iter()
            .flat_map(|((node, _, _), list)| list.iter().map(move |t| (*node, *t)))
            .collect();
        older.sort_by(|(na, a), (nb, b)| {
            (&a.service, a.slot, a.generation, na).cmp(&(&b.service, b.slot, b.generation, nb))
        });
        let tasks = view
            .assignments
            .iter()
            .filter(|(slot, _)| view.services.get(&slot.service).is_some_and(|s| !s.deleted))
            .map(|(slot, a)| {
                // A report of another generation (0: no container, or an older peer) is the
                // node's older container, not this task's (see `core::rollout`).
                let reported = reports
                    .get(&(&a.node, slot.service.as_str(), slot.slot))
                    .and_then(|list| {
                        list.iter()
                            .find(|t| t.generation == 0 || t.generation == a.spec_generation)
                    })
                    .copied();
                let rejected = view.rejected.get(&slot.service);
                let mut task = self.task_view(slot, a, &name_of(&a.node), reported, rejected);
                // An unreachable member's slot that its service's policy keeps there.
                let waiting = view
                    .services
                    .get(&slot.service)
                    .is_some_and(|s| s.spec.partition.waits(self.core.silent_ms(&a.node, now)));
                // A slot pinned by its volumes waits for their node whatever its policy.
                let on_volume = view.services.get(&slot.service).is_some_and(|s| {
                    crate::core::volumes::waits_for(&s.spec, &view.volumes).as_ref()
                        == Some(&a.node)
                });
                if a.node != self.me
                    && self.core.liveness(&a.node, now) == Liveness::Down
                    && (waiting || on_volume)
                {
                    task.state = TaskState::Unknown;
                    task.status = if on_volume {
                        crate::core::volumes::waits_reason(&a.node, &view.members)
                    } else {
                        "unreachable (waiting)".into()
                    };
                }
                // A slot that stays on its drained node says why: it must (`stays: ...`), or
                // no other node can take it (the scheduler's reason).
                let stuck = || {
                    let drained = view
                        .members
                        .get(&a.node)
                        .is_some_and(|m| m.availability == warren_crdt::Availability::Drain);
                    let why = unplaced.get(slot).filter(|_| drained)?;
                    Some(format!("cannot leave drained node: {why}"))
                };
                if let Some(why) = staying.get(slot).cloned().or_else(stuck) {
                    task.status = if task.status.is_empty() {
                        why
                    } else {
                        format!("{why}; {}", task.status)
                    };
                }
                task
            })
            .collect();
        let snapshot = Snapshot {
            node: Some(self.me.clone()),
            name: self.name.clone(),
            cluster: self.state.cluster(),
            lease: view.lease.as_ref().map(|l| LeaseStatus {
                holder: l.holder.clone(),
                holder_name: name_of(&l.holder),
                epoch: l.epoch,
            }),
            members,
            services: view.services.clone(),
            previous_tasks: older
                .into_iter()
                .filter_map(|(node, t)| {
                    let service = ServiceName::new(t.service.clone()).ok()?;
                    let slot = SlotId {
                        service,
                        slot: t.slot,
                    };
                    let a = view.assignments.get(&slot)?;
                    (a.node == *node && t.generation != 0 && t.generation < a.spec_generation).then(
                        || TaskView {
                            generation: t.generation,
                            ..self.task_view(&slot, a, &name_of(&a.node), Some(t), None)
                        },
                    )
                })
                .collect(),
            tasks,
            pending: unplaced
                .iter()
                .filter(|(slot, _)| !view.assignments.contains_key(*slot))
                .map(|(slot, why)| (slot.clone(), why.clone()))
                .collect(),
            settings: view.settings,
            volumes: view.volumes.clone(),
            dropped_non_member,
            connected_peers,
            reports_complete,
            heads: self.state.heads(),
            tokens: self.state.tokens().into_values().collect(),
            secrets: self
                .state
                .secrets()
                .into_values()
                .map(|r| SecretMeta {
                    // XChaCha20-Poly1305 adds a 16-byte tag.
                    bytes: r.ciphertext.len().saturating_sub(16),
                    recipients: r.recipients.keys().map(&name_of).collect(),
                    name: r.name,
                    version: r.version,
                })
                .collect(),
        };
        self.view_cache = Some(view);
        snapshot
    }

    /// One task: `reported` is its node's latest report of the slot, `rejected` why its
    /// service's spec is refused ([`ClusterView::rejected`](crate::core::ClusterView)).
    fn task_view(
        &self,
        slot: &SlotId,
        a: &Assignment,
        node_name: &str,
        reported: Option<&TaskStatus>,
        rejected: Option<&String>,
    ) -> TaskView {
        if let Some(err) = rejected {
            return TaskView {
                service: slot.service.clone(),
                slot: slot.slot,
                node: a.node.clone(),
                node_name: node_name.to_string(),
                epoch: a.epoch,
                state: TaskState::Rejected,
                status: format!("rejected: {err}"),
                container: String::new(),
                ports: Default::default(),
                health: Default::default(),
                exit_code: None,
                restarts: 0,
                next_restart_ms: None,
                error: err.to_string(),
                overlay_ip: None,
                generation: a.spec_generation,
            };
        }
        TaskView {
            service: slot.service.clone(),
            slot: slot.slot,
            node: a.node.clone(),
            node_name: node_name.to_string(),
            epoch: a.epoch,
            state: reported.map_or(TaskState::Unknown, |t| t.state),
            status: reported.map_or_else(
                || "no report from its node yet".into(),
                |t| t.status.clone(),
            ),
            container: reported.map(|t| t.container.clone()).unwrap_or_default(),
            ports: reported.map(|t| t.ports.clone()).unwrap_or_default(),
            health: reported.map(|t| t.health).unwrap_or_default(),
            exit_code: reported.and_then(|t| t.exit_code),
            restarts: reported.map_or(0, |t| t.restarts),
            next_restart_ms: reported.and_then(|t| t.next_restart_ms),
            error: reported.map(|t| t.error.clone()).unwrap_or_default(),
            overlay_ip: reported.and_then(|t| t.overlay_ip),
            generation: a.spec_generation,
        }
    }
}
