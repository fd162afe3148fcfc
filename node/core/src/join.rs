//! A new member catching up: from the answer to its join request ([`JoinAnswer`]) to the
//! whole desired state, through the sync protocol, before its [`NodeMachine`] starts.
//!
//! An admission's answer is small whatever the document's size: the cluster id, the admitting
//! member's heads right after the admission, and members to hear. The document itself comes
//! in sync round trips with the admitting member (`RequestKind::Sync`, the dialogue of
//! [`NodeMachine::handle_sync_request`]), each message within the mesh's limits: requests
//! stay under [`SYNC_REQUEST_BUDGET`](crate::protocol::SYNC_REQUEST_BUDGET) and the admitting
//! member's responses under [`SYNC_RESPONSE_BUDGET`](crate::protocol::SYNC_RESPONSE_BUDGET),
//! so a 50 MiB document takes about seven rounds.
//!
//! The new member's machine starts only over the complete state ([`CatchUp::finish`]): a
//! machine over a part of the history would see an old cluster (services since deleted, an
//! old lease it would claim at a stale epoch, slots it might schedule), so none runs until
//! every change of the answer's heads is here. A driver drives it like any sans-IO protocol
//! here:
//!
//! ```text
//! let mut catch_up = CatchUp::new(me, &answer);
//! while let Some(body) = catch_up.next_request()? {
//!     let answer = send_sync_request(admitter, body);   // Result<Vec<u8>, String>
//!     catch_up.handle_response(answer.as_deref().map_err(Clone::clone));
//! }
//! let state = catch_up.finish()?;                        // persist, then start the machine
//! ```
//!
//! Nothing is written to the document while catching up; a node that stops half-way starts
//! over at its next start, with the same token (an admitted identity is answered again
//! without spending a use of it).
//!
//! [`NodeMachine`]: crate::NodeMachine
//! [`NodeMachine::handle_sync_request`]: crate::NodeMachine::handle_sync_request

use tracing::debug;
use warren_crdt::{CrdtError, DesiredState, NodeId, SyncState};

use crate::protocol::{self, JoinAnswer};

/// Most sync round trips of one catch-up: 8 GiB at [`protocol::SYNC_RESPONSE_BUDGET`] per
/// round, and a bound should the admitting member keep answering without progress.
pub const MAX_CATCH_UP_ROUNDS: u32 = 1_000;

/// Why a catch-up ended without the whole state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatchUpError {
    /// The state reached the answer's heads but is of another cluster or does not list the
    /// new member: not the admission it was told.
    #[error("the admitting member's document is of another cluster or does not list this node")]
    NotAdmitted,
    /// [`MAX_CATCH_UP_ROUNDS`] round trips did not bring the whole state.
    #[error("the desired state was still incomplete after {0} sync rounds")]
    Stalled(u32),
    /// The document failed.
    #[error(transparent)]
    Document(#[from] CrdtError),
}

/// A new member's replica between its admission and the whole state. See the module doc.
#[derive(Debug)]
pub struct CatchUp {
    me: NodeId,
    state: DesiredState,
    sync: SyncState,
    /// The next request starts a new dialogue (the first, or after a failed round).
    fresh: bool,
    answer: JoinAnswer,
    rounds: u32,
}

impl CatchUp {
    /// Node `me`, admitted with `answer`, starts from an empty replica.
    pub fn new(me: NodeId, answer: &JoinAnswer) -> Self {
        Self {
            state: DesiredState::empty(me.clone()),
            me,
            sync: SyncState::new(),
            fresh: true,
            answer: answer.clone(),
            rounds: 0,
        }
    }

    /// Whether the replica holds every change of the answer's heads (and so all of the
    /// history they depend on).
    pub fn is_complete(&mut self) -> bool {
        let state = &mut self.state;
        self.answer.heads.iter().all(|h| state.has_change(h))
    }

    /// Sync requests sent so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The body of the next sync request to the admitting member, or `None` once the state
    /// is complete ([`CatchUp::finish`]).
    ///
    /// Errors: [`CatchUpError::Stalled`] after [`MAX_CATCH_UP_ROUNDS`] requests.
    pub fn next_request(&mut self) -> Result<Option<Vec<u8>>, CatchUpError> {
        if self.is_complete() {
            return Ok(None);
        }
        if self.rounds >= MAX_CATCH_UP_ROUNDS {
            return Err(CatchUpError::Stalled(self.rounds));
        }
        self.rounds += 1;
        let mut reset = std::mem::replace(&mut self.fresh, false);
        if reset {
            self.sync = SyncState::new();
        }
        let mut message = self.state.generate_sync_message(&mut self.sync);
        if message.is_none() && !reset {
            // The dialogue has nothing left to say and the state is not complete (the
            // member answered without a message): start a new one.
            self.sync = SyncState::new();
            message = self.state.generate_sync_message(&mut self.sync);
            reset = true;
        }
        Ok(Some(protocol::encode_sync(reset, message)))
    }

    /// The admitting member's answer to the last request, or why there is none: a failed
    /// round or a message that does not apply makes the next request start a new dialogue
    /// (what arrived before stays).
    pub fn handle_response(&mut self, result: Result<&[u8], String>) {
        let body = match result {
            Ok(body) => body,
            Err(reason) => {
                debug!(%reason, "a catch-up round failed");
                self.fresh = true;
                return;
            }
        };
        match protocol::decode_sync(body) {
            Some((_, Some(message))) => {
                if let Err(e) = self.state.receive_sync_message(&mut self.sync, message) {
                    debug!(error = %e, "a bad sync message while catching up");
                    self.fresh = true;
                }
            }
            Some((_, None)) => {}
            None => self.fresh = true,
        }
    }

    /// The whole state, for the new member's machine.
    ///
    /// Errors: [`CatchUpError::Stalled`] while incomplete, [`CatchUpError::NotAdmitted`] for a
    /// state of another cluster or one that does not list this node.
    pub fn finish(mut self) -> Result<DesiredState, CatchUpError> {
        if !self.is_complete() {
            return Err(CatchUpError::Stalled(self.rounds));
        }
        let admitted = self
            .state
            .cluster()
            .is_some_and(|c| c.id == self.answer.cluster_id)
            && self.state.members().contains_key(&self.me);
        if !admitted {
            return Err(CatchUpError::NotAdmitted);
        }
        Ok(self.state)
    }
}
