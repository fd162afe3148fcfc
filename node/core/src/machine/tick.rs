//! Time: the tick that decides (lease, schedule), failure detection, lease renewals, reports,
//! anti-entropy, and keeping the member set and this member's addresses current.

use std::collections::BTreeMap;

use rand::Rng;
use tracing::{debug, info, warn};
use warren_crdt::{MemberState, NodeId};

use crate::core::{Action, ClusterView, Millis};
use crate::protocol::LeaseRenewal;

use super::{Channel, NodeMachine, Output};

/// Longest a lease holder defers removing the slots of a scale down while its replica holds a
/// partial merge (changes waiting for history it lacks), in milliseconds: a heal's sync
/// completes well within it, and history that never arrives holds nothing back for good.
pub const MERGE_WAIT_MS: u64 = 10_000;

impl NodeMachine {
    /// Time passed: decide (lease, schedule), probe (SWIM), renew the lease when this node
    /// holds it, send reports and run anti-entropy when due, keep the
    /// member set and this member's addresses current. While changes received wait for
    /// history this replica lacks (for at most [`MERGE_WAIT_MS`]), the scheduler removes no
    /// slot of a scale down
    /// ([`Core::set_merge_incomplete`](crate::core::Core::set_merge_incomplete)).
    pub fn handle_tick(&mut self, now: Millis) {
        self.last_tick = now;
        self.observe_running_copies(now);
        self.missing_deps_since = if self.state.has_missing_deps() {
            self.missing_deps_since.or(Some(now))
        } else {
            None
        };
        self.core.set_merge_incomplete(
            self.missing_deps_since
                .is_some_and(|since| now.since(since) < MERGE_WAIT_MS),
        );
        // The members first: a claim or an assignment this tick writes is broadcast to them.
        self.refresh_members();
        self.refresh_plum_members(now);
        let wall_ms = self.wall_ms(now);
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        for mut action in self.core.tick(view, now) {
            // A rollout record's state changed: stamped with this holder's wall clock.
            if let (Action::SetRollout(_, record), Some(ms)) = (&mut action, wall_ms) {
                record.updated_at_ms = ms;
            }
            match &action {
                Action::ClaimLease(lease) => {
                    info!(epoch = %lease.epoch, "claiming the scheduling lease");
                }
                Action::WriteAssignments(plan) => {
                    debug!(
                        placed = plan.put.len(),
                        removed = plan.remove.len(),
                        "scheduling"
                    );
                }
                Action::SetRollout(service, record) => {
                    info!(%service, state = record.state_word(), "rollout");
                }
                Action::Rollback {
                    service,
                    generation,
                } => {
                    warn!(%service, generation, "rollout failed: rolling back");
                }
            }
            match action.apply(&mut self.state, self.config.core.rule_break.fencing()) {
                Ok(Some(change)) => {
                    self.changed(true);
                    self.publish_change(change);
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "could not write a scheduling decision"),
            }
        }
        self.flush_swim();
        self.refresh_members();
        self.refresh_plum_members(now);
        let swim = self.core.swim();
        self.plum
            .optimize_by(now, swim.members_by_rtt(), |member| swim.rtt_ms(member));
        self.plum.tick(now);
        self.flush_plum();
        self.refresh_own_addrs();
        self.refresh_own_key();
        self.refresh_own_overlay();
        self.refresh_own_description();
        if now >= self.next_renewal {
            self.next_renewal = Millis(now.0 + self.config.renew_ms);
            self.renew_lease();
        }
        self.send_reports(now);
        if now >= self.next_anti_entropy {
            self.next_anti_entropy = Millis(now.0 + self.config.anti_entropy_ms);
            self.anti_entropy();
        }
    }

    /// The latest instant at which the driver should next call
    /// [`handle_tick`](NodeMachine::handle_tick): the earliest of the next lease renewal, the
    /// next anti-entropy round, failure detection's next deadline, and one core tick period
    /// ([`CoreConfig::tick_ms`]) after the last tick, since the core's lease timer and its
    /// stall detection expect a tick at least that often. At or before now when something is
    /// due already (a new machine's first probe).
    ///
    /// A driver may tick earlier (a tick after other inputs decides on them sooner). Ticking
    /// later delays probes and decisions; more than two tick periods late, the core takes
    /// the excess for a stall of its own and credits it to its peers' silence
    /// ([`Core::tick`](crate::core::Core::tick)).
    ///
    /// [`CoreConfig::tick_ms`]: crate::core::CoreConfig::tick_ms
    pub fn poll_timeout(&self) -> Millis {
        let core_due = Millis(self.last_tick.0.saturating_add(self.config.core.tick_ms));
        self.next_renewal
            .min(self.next_anti_entropy)
            .min(core_due)
            .min(self.core.swim_timeout(self.last_tick))
            .min(self.plum.poll_timeout().unwrap_or(core_due))
    }

    /// Gossips a renewal of the lease this node holds, if it holds one.
    fn renew_lease(&mut self) {
        let view = self.view_cache.get_or_insert_with(|| {
            ClusterView::read_as(&self.state, &self.me, self.config.core.rule_break)
        });
        let Some(epoch) = self.core.held_lease(view) else {
            return;
        };
        self.renewal_seq += 1;
        let renewal = LeaseRenewal {
            epoch: epoch.0,
            seq: self.renewal_seq,
        };
        match serde_json::to_vec(&renewal) {
            Ok(data) => self.outputs.push_back(Output::Publish {
                channel: Channel::Lease,
                data,
            }),
            Err(e) => warn!(error = %e, "could not encode a lease renewal"),
        }
    }

    /// Anti-entropy: one sync dialogue with a random member.
    fn anti_entropy(&mut self) {
        let peers: Vec<NodeId> = self
            .members
            .keys()
            .filter(|p| **p != self.me)
            .cloned()
            .collect();
        if peers.is_empty() {
            return;
        }
        let pick = peers[self.rng.gen_range(0..peers.len())].clone();
        self.start_sync(pick);
    }

    /// Keeps the member set (the view's members but the removed ones) current: the core's,
    /// the reports', and the driver's ([`Output::SetMembers`]). Read from the view only when
    /// a change touched the members since the last read: every tick calls this, and at 1,000 members
    /// rebuilding the set each time was most of a quiet node's work.
    pub(super) fn refresh_members(&mut self) {
        if self.members_at == Some(self.members_version) {
            return;
        }
        self.members_at = Some(self.members_version);
        let members: BTreeMap<NodeId, Vec<String>> = self
            .view()
            .members
            .values()
            .filter(|m| m.state != MemberState::Removed)
            .map(|m| (m.id.clone(), m.addrs.clone()))
            .collect();
        if members != self.members {
            self.core.set_members(members.keys());
            self.reports.retain_members(&members);
            self.members = members.clone();
            self.outputs.push_back(Output::SetMembers(members));
        }
    }

    /// The transport listens on `addr` (multiaddr text, without `/p2p`).
    pub fn handle_listen_addr(&mut self, addr: String) {
        if !self.listen_addrs.contains(&addr) {
            self.listen_addrs.push(addr);
        }
    }

    /// This node's listen addresses with `/p2p/<id>`.
    pub fn my_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .listen_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", self.me))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Keeps this member's addresses in the document current (a restart may bring new ports).
    fn refresh_own_addrs(&mut self) {
        let mine = self.my_addrs();
        if mine.is_empty() {
            return;
        }
        let me = self.me.clone();
        let recorded = self.view().members.get(&me).map(|m| m.addrs.clone());
        if recorded.is_some_and(|r| r != mine) {
            match self.state.set_member_addrs(&self.me, &mine) {
                Ok(change) => {
                    self.changed(true);
                    self.publish_change(change);
                }
                Err(e) => warn!(error = %e, "could not record new addresses"),
            }
        }
    }
}
