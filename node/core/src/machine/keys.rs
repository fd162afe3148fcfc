//! Keys in the member record: this node's X25519 public key (and secrets re-sealed to
//! the current members when the membership changes), its WireGuard key, port and overlay
//! addresses; and what the overlay makes of them: this node's WireGuard peers, and its
//! interface's status.

use std::collections::BTreeMap;

use tracing::{info, warn};
use warren_crdt::{MemberState, NodeId};

use crate::overlay::OverlayPeer;
use crate::protocol::OverlayStatus;
use crate::secrets::{self, SecretKeys};

use super::NodeMachine;

impl NodeMachine {
    /// Publishes this node's X25519 public key in its member record when it is not there.
    pub(super) fn refresh_own_key(&mut self) {
        let Some(mine) = self.secret_keys.as_ref().map(SecretKeys::public_hex) else {
            return;
        };
        let me = self.me.clone();
        if !self.view().members.contains_key(&me) || self.published_key.as_ref() == Some(&mine) {
            return;
        }
        if self.state.member_keys().get(&self.me) == Some(&mine) {
            // Read the document once; after that, only when the view changed.
            self.published_key = Some(mine);
            return;
        }
        match self.state.set_member_key(&self.me, &mine) {
            Ok(change) => {
                self.changed(true);
                self.publish_change(change);
            }
            Err(e) => warn!(error = %e, "could not publish this node's key"),
        }
    }

    /// Publishes this node's place on the overlay (its WireGuard key and the addresses
    /// derived from it) when its member record lacks it or holds another (a rotated key).
    pub(super) fn refresh_own_overlay(&mut self) {
        if self.published_overlay {
            return;
        }
        let (Some(key), Some(addresses)) = (self.wireguard, self.overlay_addresses()) else {
            return;
        };
        let me = self.me.clone();
        if !self.view().members.contains_key(&me) {
            return;
        }
        let record = addresses.record(&key, self.wireguard_port);
        if self.state.member_overlay(&me).as_ref() == Some(&record) {
            self.published_overlay = true;
            return;
        }
        match self.state.set_member_overlay(&self.me, &record) {
            Ok(change) => {
                info!(address = %record.overlay_ip, subnet = %record.container_subnet, "publishing this node's overlay addresses");
                self.changed(true);
                self.publish_change(change);
                self.published_overlay = true;
            }
            Err(e) => warn!(error = %e, "could not publish this node's overlay addresses"),
        }
    }

    /// Sets the UDP port this node's WireGuard interface listens on (`--overlay-port`; by
    /// default 51820): published in its overlay record together with the key and addresses
    /// (again when it changes).
    pub fn set_wireguard_port(&mut self, port: u16) {
        if self.wireguard_port != port {
            self.wireguard_port = port;
            self.published_overlay = false;
        }
    }

    /// This node's WireGuard peers now: [`crate::overlay::peers`] over the members and their
    /// published overlay records (reads every member's record: call it when the document
    /// changed, not every tick). Empty before the document names the cluster.
    pub fn overlay_peers(&mut self) -> Vec<OverlayPeer> {
        let Some(cluster) = self.state.cluster() else {
            return Vec::new();
        };
        let overlays = self.state.member_overlays();
        let me = self.me.clone();
        crate::overlay::peers(&cluster.id, &me, &self.view().members, &overlays)
    }

    /// The daemon's latest word on this node's overlay interface (up with how many peers,
    /// down and why, or turned off): reported to peers, shown by `node inspect` and
    /// `cluster status`. A change is reported at the next tick.
    pub fn set_overlay_status(&mut self, status: Option<OverlayStatus>) {
        let status = status.map(OverlayStatus::bounded);
        if status != self.local_overlay {
            self.reports.local_changed();
        }
        self.local_overlay = status;
    }

    /// Active members with a published key: who secrets are sealed to.
    pub(super) fn recipients(&mut self) -> BTreeMap<NodeId, String> {
        let keys = self.state.member_keys();
        self.view()
            .members
            .values()
            .filter(|m| m.state == MemberState::Active)
            .filter_map(|m| keys.get(&m.id).map(|k| (m.id.clone(), k.clone())))
            .collect()
    }

    /// Re-keys every secret this node can open for the current recipients (after an admission
    /// or a removal). Secrets it cannot open are left alone and logged: another member re-keys
    /// them when it next changes the membership.
    pub(super) fn rekey_secrets(&mut self) {
        let recipients = self.recipients();
        let Some(keys) = self.secret_keys.as_ref() else {
            return;
        };
        let mut records = Vec::new();
        for record in self.state.secrets().into_values() {
            if record.recipients.keys().eq(recipients.keys()) {
                continue;
            }
            match secrets::reseal(&mut self.secure_rng, &record, &self.me, keys, &recipients) {
                Ok(new) => records.push(new),
                Err(e) => warn!(secret = %record.name, error = %e, "could not re-key a secret"),
            }
        }
        for record in records {
            match self.state.put_secret(&record) {
                Ok(change) => {
                    info!(secret = %record.name, version = record.version, "re-keyed a secret");
                    self.changed(true);
                    self.publish_change(change);
                }
                Err(e) => warn!(error = %e, "could not write a re-keyed secret"),
            }
        }
    }
}
