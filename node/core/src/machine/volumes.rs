//! Operator writes of volumes (issue 16, item 6): create with the node it is bound to, and
//! remove, refused while a live service mounts it.

use warren_crdt::{ChangeBytes, CrdtError, MountKind, Volume};

use super::{NodeMachine, WriteError};

impl NodeMachine {
    /// Writes volume `volume` after checking it ([`Volume::validate`]), that no volume has
    /// its name and that its node is a member.
    ///
    /// Errors: [`WriteError::VolumeExists`]; [`CrdtError::InvalidSpec`];
    /// [`CrdtError::UnknownMember`].
    pub(super) fn create_volume(&mut self, volume: &Volume) -> Result<ChangeBytes, WriteError> {
        volume.validate()?;
        if self.state.volumes().contains_key(&volume.name) {
            return Err(WriteError::VolumeExists(volume.name.clone()));
        }
        if !self.state.members().contains_key(&volume.node) {
            return Err(CrdtError::UnknownMember(volume.node.clone()).into());
        }
        Ok(self.state.put_volume(volume)?)
    }

    /// Removes volume `name` unless a live service mounts it.
    ///
    /// Errors: [`WriteError::VolumeInUse`] naming the services; [`CrdtError::UnknownVolume`].
    pub(super) fn remove_volume(&mut self, name: &str) -> Result<ChangeBytes, WriteError> {
        let users: Vec<String> = self
            .state
            .services()
            .into_values()
            .filter(|s| {
                !s.deleted
                    && s.spec
                        .mounts
                        .iter()
                        .any(|m| m.kind == MountKind::Volume && m.source == name)
            })
            .map(|s| s.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(WriteError::VolumeInUse {
                name: name.to_string(),
                services: users,
            });
        }
        Ok(self.state.remove_volume(name)?)
    }
}
