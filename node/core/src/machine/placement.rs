//! What this node says of itself for placement (DESIGN §3 `members.<id>.{labels,
//! capabilities, arch, os}`): its `--label` flags (which win per key over the join token's
//! and any earlier change), its `--capability` flags and its platform, written to its member
//! record once per start; and the operator's label changes (`node update --label-add/-rm`).
//!
//! Arch and OS live in the member record (DESIGN §3), not in the soft-state report: the
//! scheduler reads constraints against the document, so every holder on every side of a
//! split judges a member by the same values, including a member it cannot hear (whose
//! report it lacks); and they change only when the binary does, which costs one write at
//! that start.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};
use warren_crdt::{
    validate_label, ChangeBytes, CrdtError, MemberState, NodeId, Platform, MAX_NODE_LABELS,
};

use super::{NodeMachine, WriteError};

/// What a node announces about itself at start, for placement constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnDescription {
    /// `--label K=V` flags: written over the record's values of the same keys (other keys,
    /// from the join token or `node update`, stay).
    pub labels: BTreeMap<String, String>,
    /// `--capability NAME` flags: the record's capabilities become exactly these.
    pub capabilities: BTreeSet<String>,
    /// The node's CPU architecture and OS ([`Platform::current`] in the daemon).
    pub platform: Platform,
}

impl OwnDescription {
    /// Checks every label ([`validate_label`]), capability (a label key's grammar) and the
    /// counts (at most [`MAX_NODE_LABELS`] of each).
    ///
    /// Errors: [`CrdtError::InvalidSpec`] naming the rule.
    pub fn validate(&self) -> Result<(), CrdtError> {
        if self.labels.len() > MAX_NODE_LABELS || self.capabilities.len() > MAX_NODE_LABELS {
            return Err(CrdtError::InvalidSpec {
                field: "labels",
                reason: format!(
                    "at most {MAX_NODE_LABELS} labels and {MAX_NODE_LABELS} capabilities"
                ),
            });
        }
        for (k, v) in &self.labels {
            validate_label(k, v)?;
        }
        if let Some(bad) = self
            .capabilities
            .iter()
            .find(|c| !warren_crdt::valid_label_key(c))
        {
            return Err(CrdtError::InvalidSpec {
                field: "capabilities",
                reason: format!(
                    "invalid capability {bad:?}: 1-63 letters, digits, '.', '_' or '-'"
                ),
            });
        }
        Ok(())
    }
}

impl NodeMachine {
    /// Sets what this node announces about itself; written to its member record at the next
    /// tick where the record differs (once per start: a later `node update` stands).
    pub fn describe_self(&mut self, description: OwnDescription) {
        self.own_description = Some(description);
    }

    /// Writes [`OwnDescription`] into this node's member record once the record exists.
    pub(super) fn refresh_own_description(&mut self) {
        if self.own_description.is_none() {
            return;
        }
        let me = self.me.clone();
        let Some(record) = self.view().members.get(&me).cloned() else {
            return;
        };
        let Some(own) = self.own_description.take() else {
            return;
        };
        let add: BTreeMap<String, String> = own
            .labels
            .into_iter()
            .filter(|(k, v)| record.labels.get(k) != Some(v))
            .collect();
        if !add.is_empty() {
            match self.state.update_member_labels(&me, &add, &BTreeSet::new()) {
                Ok(change) => {
                    info!(labels = ?add, "publishing this node's labels");
                    self.changed(true);
                    self.publish_change(change);
                }
                Err(e) => warn!(error = %e, "could not publish this node's labels"),
            }
        }
        if record.capabilities != own.capabilities || record.platform != own.platform {
            match self
                .state
                .set_member_platform(&me, &own.capabilities, &own.platform)
            {
                Ok(change) => {
                    info!(arch = %own.platform.arch, os = %own.platform.os, capabilities = ?own.capabilities, "publishing this node's platform and capabilities");
                    self.changed(true);
                    self.publish_change(change);
                }
                Err(e) => warn!(error = %e, "could not publish this node's platform"),
            }
        }
    }

    /// The change of `node update NODE --label-add K=V --label-rm K`: one write of the
    /// member's labels. A key may not be both added and removed.
    ///
    /// Errors: [`CrdtError::UnknownMember`] for a member that does not exist or was removed;
    /// [`CrdtError::InvalidSpec`] for an invalid label, a key in both lists, or more than
    /// [`MAX_NODE_LABELS`] labels after the change.
    pub(super) fn update_node_labels(
        &mut self,
        node: &NodeId,
        add: &BTreeMap<String, String>,
        remove: &BTreeSet<String>,
    ) -> Result<ChangeBytes, WriteError> {
        for (k, v) in add {
            validate_label(k, v)?;
        }
        if let Some(both) = remove.iter().find(|k| add.contains_key(*k)) {
            return Err(CrdtError::InvalidSpec {
                field: "labels",
                reason: format!("label {both:?} is both added and removed"),
            }
            .into());
        }
        let member = self
            .view()
            .members
            .get(node)
            .filter(|m| m.state != MemberState::Removed)
            .cloned()
            .ok_or_else(|| CrdtError::UnknownMember(node.clone()))?;
        let mut after = member.labels.clone();
        after.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
        after.retain(|k, _| !remove.contains(k));
        if after.len() > MAX_NODE_LABELS {
            return Err(CrdtError::InvalidSpec {
                field: "labels",
                reason: format!("a node has at most {MAX_NODE_LABELS} labels"),
            }
            .into());
        }
        Ok(self.state.update_member_labels(node, add, remove)?)
    }
}
