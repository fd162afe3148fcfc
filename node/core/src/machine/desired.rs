//! What this node should run: its tasks (fenced, valid), the copies it keeps for now, the
//! slots it waits on, and what runs where for the core.

use std::collections::BTreeMap;

use tracing::warn;
use warren_crdt::{MemberState, NodeId, ServiceName, SlotId};

use crate::core::{
    ClusterView, Desired, DesiredTask, HeldSlot, Liveness, Millis, RuleBreak, RunningCopy,
};
use crate::protocol::{TaskState, TaskStatus};

use super::NodeMachine;

impl NodeMachine {
    /// The tasks assigned to this node: the input of the reconcile loop.
    /// A removed member runs nothing.
    ///
    /// Fencing (DESIGN §5): a task whose assignment ranks below the greatest `(epoch,
    /// holder)` this node has seen for its slot is left out, and logged.
    pub fn desired_tasks(&mut self) -> Vec<DesiredTask> {
        let me = self.me.clone();
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        let removed = view
            .members
            .get(&me)
            .is_some_and(|m| m.state == MemberState::Removed);
        for (slot, a) in &view.assignments {
            let rank = (a.epoch, a.holder.clone());
            let seen = self.seen_rank.entry(slot.clone()).or_insert(rank.clone());
            if rank > *seen {
                *seen = rank;
            }
        }
        let services = &view.services;
        self.seen_rank
            .retain(|slot, _| services.get(&slot.service).is_some_and(|s| !s.deleted));
        if removed {
            return Vec::new();
        }
        let seen_rank = &self.seen_rank;
        let fenced = self.config.core.rule_break != RuleBreak::NoFencing;
        let rejected = rejected_services(view);
        let tasks: Vec<DesiredTask> = view
            .desired_tasks(&me)
            .into_iter()
            .filter(|task| {
                let Some(a) = view.assignments.get(&task.slot).filter(|_| fenced) else {
                    return true;
                };
                match seen_rank.get(&task.slot) {
                    Some(seen) if (a.epoch, &a.holder) < (seen.0, &seen.1) => {
                        warn!(
                            slot = %task.slot,
                            epoch = %a.epoch,
                            seen_epoch = %seen.0,
                            "not running a task: its assignment is older than one seen for its slot"
                        );
                        false
                    }
                    _ => true,
                }
            })
            .collect();
        self.filter_rejected(tasks, &rejected)
    }

    /// What the reconcile loop works towards at `now`: [`NodeMachine::desired_tasks`] and
    /// [`NodeMachine::held_slots`].
    pub fn desired(&mut self, now: Millis) -> Desired {
        Desired {
            tasks: self.desired_tasks(),
            held: self.held_slots(now),
            awaiting: self.awaiting_slots(now),
            volumes: self.own_volumes(),
        }
    }

    /// The slots assigned to this node that another live member reports running (a fresh
    /// report, the service's current generation) although the assignment does not list that
    /// member as displaced: the holder that wrote it did not know of that copy — typically
    /// the other side's writes at a heal. This node starts nothing for them until the holder
    /// judges (DESIGN §5: a heal starts nothing for a slot that runs). A member this node
    /// holds down is not waited for, however fresh its last report: the holder judges no copy
    /// of a down member (it re-placed the slot because that member is down), so waiting would
    /// only hold a failover back until the report went stale (6 s); see
    /// [`Supervisor::set_awaiting`](crate::core::Supervisor::set_awaiting). Empty under
    /// [`RuleBreak::StopAtOnce`], the rules from before the heal's.
    pub fn awaiting_slots(&mut self, now: Millis) -> BTreeMap<SlotId, NodeId> {
        if self.config.core.rule_break == RuleBreak::StopAtOnce {
            return BTreeMap::new();
        }
        let me = self.me.clone();
        let fresh_ms = self.report_period().saturating_mul(3);
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        let mut awaiting = BTreeMap::new();
        for (slot, a) in view.assignments.iter().filter(|(_, a)| a.node == me) {
            if crate::core::service_wanting(&view.services, slot).is_none() {
                continue;
            }
            // The lowest such node: the reports map has no order of its own.
            let core = &self.core;
            let elsewhere = self.reports.received.iter().filter(|(node, (report, at))| {
                **node != me
                    && !a.displaced.contains(node)
                    && now.since(*at) <= fresh_ms
                    && self.reports.current(node, *at)
                    && core.liveness(node, now) != Liveness::Down
                    && report.tasks.iter().any(|t| {
                        t.service == slot.service.as_str()
                            && t.slot == slot.slot
                            && t.state == TaskState::Running
                            && t.generation == a.spec_generation
                    })
            });
            if let Some((node, _)) = elsewhere.min_by(|x, y| x.0.cmp(y.0)) {
                awaiting.insert(slot.clone(), node.clone());
            }
        }
        awaiting
    }

    /// The slots of live services assigned to another node whose running copies this node
    /// keeps for now (make before break, DESIGN §5), each with what releases it: the
    /// assigned node's report of the slot running ([`TaskStatus::confirms_running`]) and
    /// whether the holder listed this node as displaced. A removed member holds nothing.
    ///
    /// Also every slot at or beyond its service's replica count whose assignment still
    /// stands, wherever assigned: a scale down stops a copy when the lease holder removes
    /// the slot, not when a node first reads the lower count. At a heal a node's view can be
    /// a partial merge of the other side's scales (a causal prefix of its history) whose
    /// count the rest of the merge raises again; stopping on it would leave the slot with no
    /// running copy until it restarts. Such a hold never releases by itself
    /// ([`HeldSlot::releases`] stays false): the holder's removal ends it.
    ///
    /// And every slot a live service wants (below its replica count) that no assignment
    /// names, until the holder places it: at a heal, one side's holder may have removed a
    /// slot (its scale down) that the merged count keeps, while a node of the other side runs
    /// it. The holder's keep rule then gives the slot to a node that runs a copy.
    pub fn held_slots(&mut self, now: Millis) -> BTreeMap<SlotId, HeldSlot> {
        if self.config.core.rule_break == RuleBreak::StopAtOnce {
            return BTreeMap::new();
        }
        let me = self.me.clone();
        let fresh_ms = self.report_period().saturating_mul(3);
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        if view
            .members
            .get(&me)
            .is_none_or(|m| m.state == MemberState::Removed)
        {
            return BTreeMap::new();
        }
        let received = &self.reports.received;
        let never_released = |service: &warren_crdt::Service| HeldSlot {
            generation: service.generation,
            confirmed_elsewhere: false,
            displaced: false,
        };
        // Slots a live service wants that no assignment names: the holder places them next,
        // on a node that runs a copy first (its keep rule).
        let unassigned = view
            .services
            .iter()
            .filter(|(_, s)| !s.deleted)
            .flat_map(|(name, s)| {
                (0..s.spec.slot_count()).map(move |index| {
                    (
                        SlotId {
                            service: name.clone(),
                            slot: index,
                        },
                        s,
                    )
                })
            })
            .filter(|(slot, _)| !view.assignments.contains_key(slot))
            .map(|(slot, s)| (slot, never_released(s)))
            .collect::<Vec<_>>();
        view.assignments
            .iter()
            .filter_map(|(slot, a)| {
                let service = view.services.get(&slot.service).filter(|s| !s.deleted)?;
                if !service.spec.wants_slot(slot.slot) {
                    // Scaled away in this view, but the holder has not removed the slot yet:
                    // keep its copy until it does. At a heal this view can be a partial
                    // merge whose replica count the rest of the merge raises again.
                    return Some((slot.clone(), never_released(service)));
                }
                if a.node == me {
                    return None;
                }
                let confirmed_elsewhere = received.get(&a.node).is_some_and(|(report, at)| {
                    now.since(*at) <= fresh_ms
                        && self.reports.current(&a.node, *at)
                        && report.tasks.iter().any(|t| {
                            t.service == slot.service.as_str()
                                && t.slot == slot.slot
                                && t.confirms_running(
                                    a.spec_generation,
                                    a.epoch.0,
                                    a.holder.as_str(),
                                )
                        })
                });
                Some((
                    slot.clone(),
                    HeldSlot {
                        // The generation the slot runs (its assignment's, see
                        // `core::rollout`): a copy of any other is released once confirmed.
                        generation: a.spec_generation,
                        confirmed_elsewhere,
                        displaced: a.displaced.contains(&me),
                    },
                ))
            })
            .chain(unassigned)
            .collect()
    }

    /// Tells the core what runs where, from the fresh reports of live members and this
    /// node's own (see [`Core::set_running_copies`](crate::core::Core::set_running_copies)).
    /// A report is fresh for three digest periods; a copy's age is advanced by the time since
    /// its report arrived.
    pub(super) fn observe_running_copies(&mut self, now: Millis) {
        let mut copies: BTreeMap<SlotId, Vec<RunningCopy>> = BTreeMap::new();
        let mut reported = std::collections::BTreeSet::new();
        // The services whose rollout is under way: the rollout engine reads their tasks'
        // reports, whatever their state. Only the lease holder runs it.
        let holds = matches!(
            self.core.last_decision(),
            Some(crate::core::LeaseDecision::Holder(_) | crate::core::LeaseDecision::Claim(_))
        );
        let heal_rules = self.config.core.rule_break != crate::core::RuleBreak::NoRolloutHeal;
        let rolling: std::collections::BTreeSet<ServiceName> = if !holds {
            std::collections::BTreeSet::new()
        } else {
            let view = self.view_cache.get_or_insert_with(|| {
                ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
            });
            view.services
                .iter()
                .filter(|(_, s)| {
                    !s.deleted
                        && crate::core::rollout::record_of(s, &view.assignments, heal_rules)
                            .is_some_and(|r| r.is_active())
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut slot_reports = crate::core::rollout::SlotReports::new();
        let mut add = |node: &NodeId, tasks: &[TaskStatus], since_ms: u64| {
            if !rolling.is_empty() {
                for t in tasks {
                    let Some(service) = ServiceName::new(t.service.clone())
                        .ok()
                        .filter(|s| rolling.contains(s))
                    else {
                        continue;
                    };
                    slot_reports
                        .entry(SlotId {
                            service,
                            slot: t.slot,
                        })
                        .or_default()
                        .push(crate::core::rollout::SlotReport::of(node, t));
                }
            }
            for t in tasks.iter().filter(|t| t.state == TaskState::Running) {
                let Ok(service) = ServiceName::new(t.service.clone()) else {
                    continue;
                };
                copies
                    .entry(SlotId {
                        service,
                        slot: t.slot,
                    })
                    .or_default()
                    .push(RunningCopy {
                        node: node.clone(),
                        generation: t.generation,
                        age_ms: t.age_ms.unwrap_or(0).saturating_add(since_ms),
                        health: t.health,
                    });
            }
        };
        add(&self.me, &self.local_status, 0);
        reported.insert(self.me.clone());
        let fresh_ms = self.report_period().saturating_mul(3);
        let down: Vec<NodeId> = self
            .reports
            .received
            .keys()
            .filter(|node| self.core.liveness(node, now) == Liveness::Down)
            .cloned()
            .collect();
        for node in &down {
            self.reports.saw_down(node, now);
        }
        for (node, (report, at)) in &self.reports.received {
            let since = now.since(*at);
            if since > fresh_ms || down.contains(node) || !self.reports.current(node, *at) {
                continue;
            }
            add(node, &report.tasks, since);
            reported.insert(node.clone());
        }
        self.core.set_running_copies(copies, reported);
        self.core.set_slot_reports(slot_reports);
    }

    /// Drops the tasks of services whose spec fails
    /// [`ServiceSpec::validate`](warren_crdt::ServiceSpec::validate) (a spec written into the
    /// document without the API's check, e.g. by another member): no container is ever
    /// created for them. Logs each rejected service once per generation.
    fn filter_rejected(
        &mut self,
        tasks: Vec<DesiredTask>,
        rejected: &BTreeMap<ServiceName, String>,
    ) -> Vec<DesiredTask> {
        tasks
            .into_iter()
            .filter(|t| {
                let Some(reason) = rejected.get(&t.slot.service) else {
                    return true;
                };
                if self
                    .rejected_logged
                    .insert((t.slot.service.clone(), t.generation))
                {
                    tracing::warn!(
                        service = %t.slot.service,
                        generation = t.generation,
                        %reason,
                        "refusing to run a service whose spec is invalid"
                    );
                }
                false
            })
            .collect()
    }
}

/// The live services whose spec fails
/// [`ServiceSpec::validate`](warren_crdt::ServiceSpec::validate), with the reason. A node
/// never runs these (see [`NodeMachine::desired_tasks`]); `service ps` shows their tasks
/// `rejected`. Kept by the view ([`ClusterView::rejected`]): no validation here.
pub fn rejected_services(view: &ClusterView) -> BTreeMap<ServiceName, String> {
    view.rejected.clone()
}

impl NodeMachine {
    /// The names of the volumes whose record names this node.
    pub fn own_volumes(&mut self) -> std::collections::BTreeSet<String> {
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        view.volumes
            .values()
            .filter(|v| v.node == self.me)
            .map(|v| v.name.clone())
            .collect()
    }
}
