//! Soft state between members: each node's [`Report`] (task status, capacity, usage, GPUs,
//! engine) goes only where it is needed, on change and as a bounded digest (DESIGN §4):
//!
//! - to the lease holder, which schedules from it, and to its successor (the live member
//!   with the lowest id other than the holder, which claims the lease if the holder dies and
//!   then schedules from the reports it already has);
//! - to the members with a stake in one of the sender's slots: the member a slot the sender
//!   runs is assigned to, and the members whose reports show a copy of a slot the sender
//!   runs or is assigned (the heal's keep rule: a node keeps an unassigned copy until the
//!   assigned node's report confirms its own, and starts nothing for a slot another node
//!   reports running);
//! - to the members that asked ([`Direct::Want`]): a peer whose operator reads tasks or
//!   members asks every member once and hears from them for [`WANT_MS`].
//!
//! In steady state a node sends one digest per period to two members, and the holder takes
//! in at most [`REPORTS_PER_SECOND`](super::REPORTS_PER_SECOND) digests a second whatever
//! the cluster's size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use tracing::{debug, warn};
use warren_crdt::{MemberState, NodeId, SlotId};

use crate::core::{Liveness, Millis};
use crate::protocol::{Direct, Report, TaskStatus, MAX_WANT_MS};

use super::{NodeMachine, Output, REPORTS_PER_SECOND};

/// How long a peer that asked for reports hears from every member, in milliseconds.
pub const WANT_MS: u64 = 60_000;

/// Most members one node sends its reports to because they asked (the rest are not taken).
const MAX_SUBSCRIBERS: usize = 256;

/// Answers every SWIM probe `machine` queued as the members `up` would (test support for
/// drivers without a network, see [`crate::core::reply_of_live_member`]), at `now`; returns
/// the machine's other outputs, in order.
#[doc(hidden)]
pub fn answer_probes(
    machine: &mut NodeMachine,
    up: impl Fn(&NodeId) -> bool,
    now: Millis,
) -> Vec<Output> {
    let mut others = Vec::new();
    let mut replies = Vec::new();
    while let Some(output) = machine.poll_output() {
        match output {
            Output::Send { to, data } => match Direct::decode(&data) {
                Ok(Direct::Swim(message)) if up(&to) => {
                    if let Some(reply) = crate::core::reply_of_live_member(&to, &message, &up) {
                        replies.push((to, reply));
                    }
                }
                Ok(_) => others.push(Output::Send { to, data }),
                Err(_) => {}
            },
            other => others.push(other),
        }
    }
    for (from, reply) in replies {
        if let Ok(data) = serde_json::to_vec(&Direct::Swim(reply)) {
            machine.handle_direct(&from, &data, now);
        }
    }
    others
}

/// The soft state this node sent and received.
#[derive(Debug)]
pub(super) struct Reports {
    /// Each member's last report and when it arrived, by this node's clock.
    pub(super) received: HashMap<NodeId, (Report, Millis)>,
    seq: u64,
    /// Something worth reporting changed since the last send.
    dirty: bool,
    next_digest: Millis,
    /// Who got the last full send (a member added since gets one at once).
    sent_to: BTreeSet<NodeId>,
    /// Members that asked, each until when.
    subscribers: BTreeMap<NodeId, Millis>,
    /// Until when this node asked every member for reports.
    wanted_until: Millis,
    /// The members with a stake in this node's slots; `None` when it must be recomputed.
    stake: Option<BTreeSet<NodeId>>,
    /// Per member, the last time this node held it down ([`Reports::saw_down`]): a report
    /// that arrived before is from before its partition (or crash) and says nothing of what
    /// it runs now ([`Reports::current`]).
    down_at: HashMap<NodeId, Millis>,
}

impl Reports {
    pub(super) fn new(now: Millis) -> Self {
        Self {
            received: HashMap::new(),
            down_at: HashMap::new(),
            seq: 0,
            dirty: true,
            next_digest: now,
            sent_to: BTreeSet::new(),
            subscribers: BTreeMap::new(),
            wanted_until: now,
            stake: None,
        }
    }

    /// This node's own soft state changed in a way worth reporting now.
    pub(super) fn local_changed(&mut self) {
        self.dirty = true;
        self.stake = None;
    }

    /// The document changed (assignments may have): the stake is recomputed.
    pub(super) fn view_changed(&mut self) {
        self.stake = None;
    }

    /// This node holds `member` down at `now` (its liveness): the report it has of it is
    /// stale from now on, until a new one arrives.
    pub(super) fn saw_down(&mut self, member: &NodeId, now: Millis) {
        self.down_at.insert(member.clone(), now);
    }

    /// Whether a report of `member` that arrived at `at` was sent since this node last held
    /// it down. One that arrived before is what the member said before its partition: after
    /// the heal, a copy it then reported `starting` may have run healthy for minutes, so the
    /// heal's keep rule (and a rollout's monitor) must wait for its next report instead.
    pub(super) fn current(&self, member: &NodeId, at: Millis) -> bool {
        self.down_at.get(member).is_none_or(|down| at > *down)
    }

    /// Forgets what members no longer listed sent or asked.
    pub(super) fn retain_members(&mut self, members: &BTreeMap<NodeId, Vec<String>>) {
        self.received.retain(|id, _| members.contains_key(id));
        self.down_at.retain(|id, _| members.contains_key(id));
        self.subscribers.retain(|id, _| members.contains_key(id));
        self.sent_to.retain(|id| members.contains_key(id));
        self.stake = None;
    }
}

/// What of a task list is worth an immediate report: everything but a copy's age, the time
/// to its next restart and the engine's status text, which change on every reading — except
/// the moment a copy becomes old enough to confirm it runs
/// ([`crate::protocol::CONFIRM_AFTER_MS`]): another node waits for that report to stop its
/// own copy (make before break). A hash (not stable across builds): two lists with the same
/// fingerprint say the same; a driver compares them to act at once on a change, as the
/// machine does on this node's own list ([`NodeMachine::set_local_status`]).
pub fn fingerprint(tasks: &[TaskStatus]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in tasks {
        let proven = t
            .age_ms
            .is_some_and(|age| age >= crate::protocol::CONFIRM_AFTER_MS);
        (
            proven,
            &t.service,
            t.slot,
            t.state,
            &t.container,
            t.health as u8,
            t.exit_code,
            t.restarts,
            t.generation,
            t.unassigned,
            t.assignment_epoch,
            &t.assignment_holder,
        )
            .hash(&mut h);
        t.error.hash(&mut h);
        t.overlay_ip.hash(&mut h);
    }
    h.finish()
}

impl NodeMachine {
    /// A direct message from member `from` arrived at `now` (the mesh's unicast: SWIM, the
    /// broadcast tree, a report, a request for reports). Malformed ones are dropped and
    /// logged. Returns whether it brought changes to merge (a broadcast's first copy): the
    /// driver then decides on them at once, as after a write (the daemon ticks now).
    pub fn handle_direct(&mut self, from: &NodeId, data: &[u8], now: Millis) -> bool {
        let member = self
            .view()
            .members
            .get(from)
            .is_some_and(|m| m.state != MemberState::Removed);
        if *from == self.me || !member {
            return false;
        }
        let mut merged = false;
        match Direct::decode(data) {
            Ok(Direct::Swim(message)) => {
                self.core.handle_swim(from, message, now);
                self.flush_swim();
            }
            Ok(Direct::Plum(message)) => {
                self.plum.handle(from, message, now);
                while let Some((relay, change)) = self.plum.poll_deliver() {
                    self.apply_remote_change(&relay, &change);
                    merged = true;
                }
                self.flush_plum();
            }
            Ok(Direct::Report(report)) => {
                let report = (*report).bounded();
                self.core.set_capacity(from, report.capacity);
                self.core
                    .set_gpus(from, Some(crate::system::device_ids(&report.gpus)));
                self.core.set_images(from, report.images.clone());
                self.note_task_reports(from, &report.tasks);
                self.reports.received.insert(from.clone(), (report, now));
                self.reports.stake = None;
            }
            Ok(Direct::Want { ms }) => {
                let subscribers = &mut self.reports.subscribers;
                if subscribers.len() < MAX_SUBSCRIBERS || subscribers.contains_key(from) {
                    subscribers.insert(from.clone(), Millis(now.0 + ms.min(MAX_WANT_MS)));
                    self.send_report(std::slice::from_ref(from));
                    self.reports.sent_to.insert(from.clone());
                }
            }
            Err(e) => debug!(%from, error = %e, "dropping a malformed direct message"),
        }
        merged
    }

    /// The last report heard from `node` and when it arrived, by this node's clock.
    pub fn report_of(&self, node: &NodeId) -> Option<(&Report, Millis)> {
        self.reports.received.get(node).map(|(r, at)| (r, *at))
    }

    /// An operator reads tasks or members at this peer: unless it asked recently, it asks
    /// every member for its reports ([`Direct::Want`], for [`WANT_MS`]). The answers arrive
    /// within a round trip; [`NodeMachine::reports_complete`] says when they are all in.
    pub fn want_reports(&mut self, now: Millis) {
        if now.0 + WANT_MS / 2 < self.reports.wanted_until.0 {
            return;
        }
        self.reports.wanted_until = Millis(now.0 + WANT_MS);
        let data = match serde_json::to_vec(&Direct::Want { ms: WANT_MS }) {
            Ok(data) => data,
            Err(e) => return warn!(error = %e, "could not encode a request for reports"),
        };
        let peers: Vec<NodeId> = self
            .members
            .keys()
            .filter(|id| **id != self.me)
            .cloned()
            .collect();
        for to in peers {
            self.outputs.push_back(Output::Send {
                to,
                data: data.clone(),
            });
        }
    }

    /// Whether every active member not down here has a fresh report here (this node always
    /// has its own): what `service ps` shows at `now` is then current.
    pub fn reports_complete(&mut self, now: Millis) -> bool {
        let me = self.me.clone();
        let active: Vec<NodeId> = self
            .view()
            .members
            .values()
            .filter(|m| m.state == MemberState::Active && m.id != me)
            .map(|m| m.id.clone())
            .collect();
        active
            .iter()
            .all(|id| self.core.liveness(id, now) == Liveness::Down || self.report_fresh(id, now))
    }

    /// The digest period now: [`super::MachineConfig::report_ms`], longer in a cluster too
    /// large for the holder to take one from each member that often.
    pub(super) fn report_period(&self) -> u64 {
        let n = self.members.len() as u64;
        self.config
            .report_ms
            .max(n.saturating_mul(1_000) / REPORTS_PER_SECOND)
    }

    /// Whether `node`'s last report arrived within three digest periods: only such a report
    /// says anything of now (one heard before a split does not).
    pub(super) fn report_fresh(&self, node: &NodeId, now: Millis) -> bool {
        let window = self.report_period().saturating_mul(3);
        self.reports
            .received
            .get(node)
            .is_some_and(|(_, at)| now.since(*at) <= window)
    }

    /// Sends this node's report where it is needed: to every recipient on a change or when
    /// the digest is due, else to recipients that got none yet.
    pub(super) fn send_reports(&mut self, now: Millis) {
        let recipients = self.report_recipients(now);
        let due = self.reports.dirty || now >= self.reports.next_digest;
        let to: Vec<NodeId> = if due {
            recipients.iter().cloned().collect()
        } else {
            recipients
                .difference(&self.reports.sent_to)
                .cloned()
                .collect()
        };
        if due {
            self.reports.dirty = false;
            self.reports.next_digest = Millis(now.0 + self.report_period());
            self.reports.sent_to = recipients;
        } else {
            self.reports.sent_to.extend(to.iter().cloned());
        }
        if !to.is_empty() {
            self.send_report(&to);
        }
    }

    fn send_report(&mut self, to: &[NodeId]) {
        self.reports.seq += 1;
        let report = Report {
            seq: self.reports.seq,
            name: self.name.clone(),
            api: self.api.clone(),
            tasks: self.local_status.clone(),
            capacity: self.core.capacities().get(&self.me).copied(),
            usage: self.usage,
            gpus: self.gpus.clone(),
            images: self.images.clone(),
            engine: self.local_engine.clone(),
            overlay: self.local_overlay.clone().map(Box::new),
        };
        let data = match serde_json::to_vec(&Direct::Report(Box::new(report))) {
            Ok(data) => data,
            Err(e) => return warn!(error = %e, "could not encode a report"),
        };
        for peer in to {
            self.outputs.push_back(Output::Send {
                to: peer.clone(),
                data: data.clone(),
            });
        }
    }

    /// Who needs this node's report at `now` (see the module doc); never this node.
    fn report_recipients(&mut self, now: Millis) -> BTreeSet<NodeId> {
        let mut to = BTreeSet::new();
        let holder = self.view().lease.as_ref().map(|l| l.holder.clone());
        if let Some(holder) = &holder {
            to.insert(holder.clone());
        }
        self.view();
        let core = &self.core;
        let successor = self.view_cache.as_ref().and_then(|view| {
            view.members
                .values()
                .filter(|m| m.state == MemberState::Active && Some(&m.id) != holder.as_ref())
                .map(|m| m.id.clone())
                .find(|id| core.liveness(id, now) != Liveness::Down)
        });
        to.extend(successor);
        self.reports.subscribers.retain(|_, until| *until > now);
        to.extend(self.reports.subscribers.keys().cloned());
        if self.reports.stake.is_none() {
            self.reports.stake = Some(self.compute_stake(now));
        }
        if let Some(stake) = &self.reports.stake {
            to.extend(stake.iter().cloned());
        }
        to.remove(&self.me);
        to
    }

    /// The members with a stake in this node's slots: where each slot it runs is assigned,
    /// and whoever freshly reports a copy of a slot it runs or is assigned.
    fn compute_stake(&mut self, now: Millis) -> BTreeSet<NodeId> {
        let me = self.me.clone();
        let mut mine: BTreeSet<(String, u32)> = self
            .local_status
            .iter()
            .map(|t| (t.service.clone(), t.slot))
            .collect();
        let mut stake = BTreeSet::new();
        self.view();
        if let Some(view) = self.view_cache.as_ref() {
            for t in &self.local_status {
                let Ok(service) = warren_crdt::ServiceName::new(t.service.clone()) else {
                    continue;
                };
                let slot = SlotId {
                    service,
                    slot: t.slot,
                };
                if let Some(a) = view.assignments.get(&slot) {
                    stake.insert(a.node.clone());
                }
            }
            mine.extend(
                view.assignments
                    .iter()
                    .filter(|(_, a)| a.node == me)
                    .map(|(slot, _)| (slot.service.as_str().to_string(), slot.slot)),
            );
        }
        for (node, (report, _)) in &self.reports.received {
            if !self.report_fresh(node, now) {
                continue;
            }
            let overlaps = report
                .tasks
                .iter()
                .any(|t| mine.contains(&(t.service.clone(), t.slot)));
            if overlaps {
                stake.insert(node.clone());
            }
        }
        stake.remove(&me);
        stake
    }

    /// Queues every message of the broadcast tree for sending.
    pub(super) fn flush_plum(&mut self) {
        while let Some((to, message)) = self.plum.poll_send() {
            match serde_json::to_vec(&Direct::Plum(message)) {
                Ok(data) => self.outputs.push_back(Output::Send { to, data }),
                Err(e) => warn!(error = %e, "could not encode a broadcast message"),
            }
        }
    }

    /// Gives the broadcast tree the live members (not down here) when failure detection's
    /// view changed since it last did.
    pub(super) fn refresh_plum_members(&mut self, now: Millis) {
        let version = self.core.swim().version();
        if self.plum_members_at == Some(version) {
            return;
        }
        self.plum_members_at = Some(version);
        let core = &self.core;
        let live = self
            .members
            .keys()
            .filter(|id| core.liveness(id, now) != Liveness::Down);
        self.plum.set_members(live);
    }

    /// Queues every SWIM message the core has for sending.
    pub(super) fn flush_swim(&mut self) {
        while let Some((to, message)) = self.core.poll_swim() {
            match serde_json::to_vec(&Direct::Swim(message)) {
                Ok(data) => self.outputs.push_back(Output::Send { to, data }),
                Err(e) => warn!(error = %e, "could not encode a SWIM message"),
            }
        }
    }
}
