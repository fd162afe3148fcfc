//! What comes from peers: connections, gossip (changes and lease renewals) and the sync
//! dialogues that bring two replicas to the same heads.

use tracing::debug;
use warren_crdt::{CrdtError, Epoch, NodeId, ServiceName, SlotId, SyncState};

use crate::core::Millis;
use crate::protocol::{self, LeaseRenewal, TaskState, TaskStatus};

use super::{Channel, NodeMachine, Output};

/// Most rounds of one sync dialogue; a dialogue that needs more resumes at the next
/// anti-entropy round. Each message is bounded ([`protocol::SYNC_REQUEST_BUDGET`] for what the
/// starter sends, [`protocol::SYNC_RESPONSE_BUDGET`] for what it gets back): 32 rounds move
/// 256 MiB towards the starter but only about 30 MiB from it; the peer's own dialogues, which
/// pull from us in responses, take the rest.
pub const MAX_SYNC_ROUNDS: u32 = 32;

/// Why a peer's sync request was refused ([`NodeMachine::handle_sync_request`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The body holds no sync frame.
    #[error("empty sync request")]
    Empty,
    /// The Automerge sync message does not decode or apply; the dialogue is reset.
    #[error("bad sync message: {0}")]
    BadMessage(CrdtError),
}

impl NodeMachine {
    /// A connection to member `peer` opened at `now`: direct evidence that it runs (after a
    /// heal the merged document may arrive before the peer's refutation of its suspicion, and
    /// its slots must not look like a down member's; see [`crate::core::Swim::connected`]),
    /// a probe goes out, and a sync starts.
    pub fn handle_connected(&mut self, peer: &NodeId, now: Millis) {
        if self.members.contains_key(peer) && *peer != self.me {
            self.core.connected(peer, now);
            self.flush_swim();
            self.start_sync(peer.clone());
        }
    }

    /// The last connection to `peer` closed.
    pub fn handle_disconnected(&mut self, peer: &NodeId) {
        self.inbound_sync.remove(peer);
    }

    /// Gossip from member `from` arrived at `now`. Malformed payloads are dropped and logged.
    pub fn handle_gossip(&mut self, channel: Channel, from: &NodeId, data: &[u8], now: Millis) {
        match channel {
            Channel::Changes => self.apply_remote_change(from, data),
            Channel::Lease => match serde_json::from_slice::<LeaseRenewal>(data) {
                Ok(renewal) => self.core.handle_renewal(from, Epoch(renewal.epoch), now),
                Err(e) => debug!(%from, error = %e, "dropping a malformed lease renewal"),
            },
        }
    }

    /// A change's bytes from member `from` (delivered by the broadcast tree or a gossip
    /// channel): merged; a change whose history this replica lacks (the other side of a heal)
    /// starts a sync with `from` now rather than at the next anti-entropy round.
    pub(super) fn apply_remote_change(&mut self, from: &NodeId, data: &[u8]) {
        match self.state.apply_change(data) {
            Ok(()) => {
                self.merged();
                if *from != self.me && self.state.has_missing_deps() {
                    self.start_sync(from.clone());
                }
            }
            Err(e) => debug!(%from, error = %e, "dropping a malformed change"),
        }
    }

    /// Tells the core which of `from`'s tasks are `failed` (out of restart attempts) under
    /// their service's current generation, so the scheduler moves them to another node.
    pub(super) fn note_task_reports(&mut self, from: &NodeId, tasks: &[TaskStatus]) {
        let reports: Vec<(SlotId, u64, bool)> = {
            let view = self.view();
            tasks
                .iter()
                .filter_map(|t| {
                    let service = ServiceName::new(t.service.clone()).ok()?;
                    let generation = view.services.get(&service)?.generation;
                    let slot = SlotId {
                        service,
                        slot: t.slot,
                    };
                    Some((slot, generation, t.state == TaskState::Failed))
                })
                .collect()
        };
        for (slot, generation, failed) in reports {
            self.core.task_reported(from, &slot, generation, failed);
        }
    }

    /// Starts a sync dialogue with `peer` unless one is running.
    pub(super) fn start_sync(&mut self, peer: NodeId) {
        if self.outbound_sync.contains_key(&peer) {
            return;
        }
        let mut state = SyncState::new();
        let message = self.state.generate_sync_message(&mut state);
        self.outbound_sync.insert(peer.clone(), (state, 1));
        self.outputs.push_back(Output::SyncRequest {
            to: peer,
            body: protocol::encode_sync(true, message),
        });
    }

    /// A sync request from member `from`: returns the response body, or why it is refused.
    ///
    /// Errors: [`SyncError`] (its text goes back to the peer).
    pub fn handle_sync_request(
        &mut self,
        from: &NodeId,
        body: &[u8],
    ) -> Result<Vec<u8>, SyncError> {
        let Some((reset, message)) = protocol::decode_sync(body) else {
            return Err(SyncError::Empty);
        };
        if reset {
            self.inbound_sync.insert(from.clone(), responder_state());
        }
        let state = self
            .inbound_sync
            .entry(from.clone())
            .or_insert_with(responder_state);
        if let Some(message) = message {
            if let Err(e) = self.state.receive_sync_message(state, message) {
                debug!(%from, error = %e, "bad sync message");
                self.inbound_sync.remove(from);
                return Err(SyncError::BadMessage(e));
            }
            self.merged();
        }
        let state = self
            .inbound_sync
            .entry(from.clone())
            .or_insert_with(responder_state);
        let reply = self.state.generate_sync_message(state);
        Ok(protocol::encode_sync(false, reply))
    }

    /// The answer to our sync request to `from` (or why there is none): continue or end the
    /// dialogue.
    pub fn handle_sync_response(&mut self, from: &NodeId, result: Result<Vec<u8>, String>) {
        let Some((mut state, rounds)) = self.outbound_sync.remove(from) else {
            return;
        };
        let body = match result {
            Ok(body) => body,
            Err(reason) => {
                debug!(%from, %reason, "sync ended");
                return;
            }
        };
        let Some((_, message)) = protocol::decode_sync(&body) else {
            return;
        };
        let got_message = message.is_some();
        if let Some(message) = message {
            if let Err(e) = self.state.receive_sync_message(&mut state, message) {
                debug!(%from, error = %e, "bad sync reply");
                return;
            }
            self.merged();
        }
        let next = self.state.generate_sync_message(&mut state);
        if (next.is_none() && !got_message) || rounds >= MAX_SYNC_ROUNDS {
            return;
        }
        self.outbound_sync.insert(from.clone(), (state, rounds + 1));
        self.outputs.push_back(Output::SyncRequest {
            to: from.clone(),
            body: protocol::encode_sync(false, next),
        });
    }
}

/// The sync state of a dialogue a peer started: our messages travel as responses, which the
/// mesh lets be larger than requests.
fn responder_state() -> SyncState {
    SyncState::with_max_message(protocol::SYNC_RESPONSE_BUDGET)
}
