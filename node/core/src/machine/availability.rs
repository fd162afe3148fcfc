//! The operator's availability change (`node update NAME --availability active|pause|drain`,
//! `PATCH /v1/nodes/{node}` with `availability`): one register of the member record, merged
//! like any other write. What it means for placement is [`crate::core::availability`]'s.

use warren_crdt::{Availability, ChangeBytes, CrdtError, MemberState, NodeId};

use super::{NodeMachine, WriteError};

impl NodeMachine {
    /// Sets member `node`'s availability. Returns an empty change when it already is.
    ///
    /// Errors: [`CrdtError::UnknownMember`] for a member that is not (or no longer) admitted.
    pub(super) fn set_node_availability(
        &mut self,
        node: &NodeId,
        availability: Availability,
    ) -> Result<ChangeBytes, WriteError> {
        let admitted = self
            .view()
            .members
            .get(node)
            .is_some_and(|m| m.state != MemberState::Removed);
        if !admitted {
            return Err(CrdtError::UnknownMember(node.clone()).into());
        }
        Ok(self.state.set_member_availability(node, availability)?)
    }
}
