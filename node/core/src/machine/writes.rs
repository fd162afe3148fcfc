//! Operator writes: services, tokens, secrets, members and settings, each persisted before
//! it is gossiped and acknowledged.

use warren_crdt::{CrdtError, NodeId, ServiceName, ServiceSpec};
use zeroize::Zeroizing;

use crate::api_token::{ApiToken, ApiTokenGrant};
use crate::secrets;
use crate::token::{JoinToken, TokenGrant};

use super::NodeMachine;

/// An operator's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create a service (the spec boxed: it is large).
    CreateService(ServiceName, Box<ServiceSpec>),
    /// Set a service's replica count.
    ScaleService(ServiceName, u32),
    /// Change the given fields of a service's spec, field by field.
    UpdateService(ServiceName, Box<crate::patch::ServicePatch>),
    /// Delete a service.
    DeleteService(ServiceName),
    /// Mint a join token from `now_secs` (Unix seconds).
    CreateJoinToken {
        /// Validity, uses and labels.
        grant: TokenGrant,
        /// Wall clock now, Unix seconds.
        now_secs: i64,
    },
    /// Revoke a join token by id.
    RevokeJoinToken(String),
    /// Mint an operator (API) token from `now_secs` (Unix seconds).
    CreateApiToken {
        /// Validity and labels.
        grant: ApiTokenGrant,
        /// Wall clock now, Unix seconds.
        now_secs: i64,
    },
    /// Revoke an operator (API) token by id.
    RevokeApiToken(String),
    /// Create a secret: the value is sealed to every member with a published key.
    CreateSecret {
        /// Its name.
        name: String,
        /// Its value (never logged, never in the document in clear).
        value: SecretValue,
    },
    /// Re-key a secret for the current members (fresh data key, version + 1).
    RotateSecret(String),
    /// Remove a secret.
    RemoveSecret(String),
    /// Remove a member: cut off, its tasks rescheduled, its identity never admitted again.
    RemoveMember(NodeId),
    /// Change the cluster settings named (others keep their values), in one change.
    SetClusterSettings(Vec<warren_crdt::ClusterSetting>),
    /// Change a member's labels (`node update --label-add K=V --label-rm K`), in one
    /// change: each key merges on its own with concurrent changes elsewhere.
    UpdateNodeLabels {
        /// The member.
        node: NodeId,
        /// Labels to set (the value wins over the one there).
        add: std::collections::BTreeMap<String, String>,
        /// Label keys to remove.
        remove: std::collections::BTreeSet<String>,
    },
    /// Set a member's availability (`node update --availability active|pause|drain`).
    SetNodeAvailability {
        /// The member.
        node: NodeId,
        /// Its new availability.
        availability: warren_crdt::Availability,
    },
    /// Create a volume bound to the node its record names.
    CreateVolume(warren_crdt::Volume),
    /// Remove a volume (refused while a live service mounts it).
    RemoveVolume(String),
    /// `service rollback`: the previous spec becomes the spec again, rolled out under the
    /// rollback policy (issue 15).
    RollbackService(ServiceName),
    /// `service promote|pause|resume`: an operator's step in a service's rollout.
    StepRollout {
        /// The service.
        service: ServiceName,
        /// The step.
        step: super::RolloutStep,
        /// Wall clock now, Unix milliseconds (written in the record for people).
        now_ms: u64,
    },
}

/// A secret's plaintext on its way in: zeroed when dropped, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// What a write returns once acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAck {
    /// The write is in the document (and, after the driver's persist, on disk).
    Done,
    /// A join token, in its text form.
    JoinToken(String),
    /// An operator token: its id and its text form (shown once, never stored).
    ApiToken {
        /// Its public id.
        id: String,
        /// The text the operator passes as `--token`.
        token: String,
    },
}

/// Why a write was refused. [`WriteError::kind`] sorts them for a caller that only needs
/// the class (the API's status code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The document refused it: an unknown service, member, secret or token, a service that
    /// exists, an invalid name or spec, or a store or encoding failure.
    #[error(transparent)]
    Document(#[from] CrdtError),
    /// `service update`'s patch does not apply to the spec.
    #[error(transparent)]
    Patch(#[from] crate::patch::PatchError),
    /// No API token (`operator`) or join token has this id.
    #[error("no {} {id}", if *.operator { "API token" } else { "join token" })]
    NoSuchToken {
        /// The id asked for.
        id: String,
        /// Whether an API token was asked for (else a join token).
        operator: bool,
    },
    /// A secret of that name exists.
    #[error("secret {0} already exists")]
    SecretExists(String),
    /// A value could not be sealed to the members, or this node could not open the secret
    /// to re-seal it.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// This node holds no key to open secrets with.
    #[error("this node has no key to open secrets")]
    NoSecretKey,
    /// A member asked to remove itself.
    #[error("a node cannot remove itself; ask another member")]
    RemoveSelf,
    /// A join token needs this node's addresses, and it listens on none yet.
    #[error("this node is not listening on any address yet")]
    NotListening,
    /// A volume of that name exists.
    #[error("volume {0} already exists")]
    VolumeExists(String),
    /// A live service mounts the volume: remove or update those services first.
    #[error("volume {name} is in use by service(s) {}: remove them or their --mount first", services.join(", "))]
    VolumeInUse {
        /// The volume.
        name: String,
        /// The live services that mount it.
        services: Vec<String>,
    },
    /// The rollout is not in the state the operator's step needs, e.g. `service promote`
    /// while no canary waits: "service web has no canary waiting for promotion (rollout:
    /// completed)".
    #[error("service {service} {} (rollout: {state})", .step.needs())]
    RolloutStep {
        /// The service.
        service: String,
        /// The step refused.
        step: super::RolloutStep,
        /// Its rollout's state word, or `none`.
        state: &'static str,
    },
    /// The change was made but could not be persisted: it is not acknowledged.
    #[error("write not persisted: {0}")]
    NotPersisted(String),
}

/// The class of a [`WriteError`]: what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// The thing to change does not exist.
    NotFound,
    /// The thing to create exists.
    Conflict,
    /// The request is malformed: fix it and ask again.
    Invalid,
    /// This node cannot do it now (not persisted, not listening, no cluster, no key).
    Internal,
}

impl WriteError {
    /// The class of this error.
    pub fn kind(&self) -> WriteErrorKind {
        match self {
            WriteError::Document(e) => match e {
                CrdtError::UnknownService(_)
                | CrdtError::UnknownMember(_)
                | CrdtError::UnknownSecret(_)
                | CrdtError::UnknownVolume(_)
                | CrdtError::UnknownToken(_) => WriteErrorKind::NotFound,
                CrdtError::ServiceExists(_) => WriteErrorKind::Conflict,
                CrdtError::InvalidName { .. } | CrdtError::InvalidSpec { .. } => {
                    WriteErrorKind::Invalid
                }
                _ => WriteErrorKind::Internal,
            },
            WriteError::NoSuchToken { .. } => WriteErrorKind::NotFound,
            WriteError::SecretExists(_)
            | WriteError::VolumeExists(_)
            | WriteError::VolumeInUse { .. }
            | WriteError::RolloutStep { .. } => WriteErrorKind::Conflict,
            WriteError::Patch(_) | WriteError::RemoveSelf => WriteErrorKind::Invalid,
            WriteError::Secret(crate::secrets::SecretError::Invalid(_)) => WriteErrorKind::Invalid,
            WriteError::Secret(_)
            | WriteError::NoSecretKey
            | WriteError::NotListening
            | WriteError::NotPersisted(_) => WriteErrorKind::Internal,
        }
    }
}

impl NodeMachine {
    /// Refuses a spec whose ingress port (or fixed port on another's ingress port) another
    /// live service already publishes ([`crate::core::ingress::ingress_port_taken`]).
    ///
    /// Errors: [`CrdtError::InvalidSpec`] on `ports`, naming the port and the service.
    fn refuse_taken_ingress_port(
        &self,
        name: &ServiceName,
        spec: &ServiceSpec,
    ) -> Result<(), CrdtError> {
        let services = self.state.services();
        match crate::core::ingress::ingress_port_taken(services.values(), name, spec) {
            Some((port, other)) => Err(CrdtError::InvalidSpec {
                field: "ports",
                reason: format!(
                    "port {port} is already published by service {other} through the routing \
                     mesh (ingress): choose another published port"
                ),
            }),
            None => Ok(()),
        }
    }

    /// An operator's write. On success the machine has queued a flushing persist and the
    /// gossip of the change: acknowledge only after the driver carried out the persist.
    ///
    /// Errors: [`WriteError`] saying why nothing was written.
    pub fn write(&mut self, write: Write) -> Result<WriteAck, WriteError> {
        let (change, ack) = match write {
            Write::CreateService(name, spec) => {
                spec.validate()?;
                self.refuse_taken_ingress_port(&name, &spec)?;
                (self.state.create_service(&name, &spec)?, WriteAck::Done)
            }
            Write::UpdateService(name, patch) => {
                let current = self
                    .state
                    .services()
                    .remove(&name)
                    .filter(|s| !s.deleted)
                    .ok_or_else(|| CrdtError::UnknownService(name.clone()))?;
                let spec = patch.apply(&current.spec)?;
                spec.validate()?;
                self.refuse_taken_ingress_port(&name, &spec)?;
                (self.state.update_service(&name, &spec)?, WriteAck::Done)
            }
            Write::ScaleService(name, replicas) => {
                (self.state.scale_service(&name, replicas)?, WriteAck::Done)
            }
            Write::DeleteService(name) => (self.state.delete_service(&name)?, WriteAck::Done),
            Write::UpdateNodeLabels { node, add, remove } => (
                self.update_node_labels(&node, &add, &remove)?,
                WriteAck::Done,
            ),
            Write::SetNodeAvailability { node, availability } => (
                self.set_node_availability(&node, availability)?,
                WriteAck::Done,
            ),
            Write::SetClusterSettings(settings) => {
                (self.state.set_cluster_settings(&settings)?, WriteAck::Done)
            }
            Write::RevokeJoinToken(id) => {
                // Each kind of token is revoked through its own command: an id from
                // `join-token ls` never names an operator token.
                self.token_of_role(&id, false)?;
                (self.state.revoke_token(&id)?, WriteAck::Done)
            }
            Write::RevokeApiToken(id) => {
                self.token_of_role(&id, true)?;
                (self.state.revoke_token(&id)?, WriteAck::Done)
            }
            Write::CreateApiToken { grant, now_secs } => {
                let (token, record) = ApiToken::mint(&mut self.secure_rng, now_secs, &grant);
                (
                    self.state.add_token(&record)?,
                    WriteAck::ApiToken {
                        id: token.id.clone(),
                        token: token.encode(),
                    },
                )
            }
            Write::RemoveMember(id) => {
                if id == self.me {
                    return Err(WriteError::RemoveSelf);
                }
                let change = self.state.remove_member(&id)?;
                self.changed(true);
                self.publish_change(change);
                // What the removed member could read stays read; what comes next it cannot.
                self.rekey_secrets();
                return Ok(WriteAck::Done);
            }
            Write::CreateSecret { name, value } => {
                if self.state.secrets().contains_key(&name) {
                    return Err(WriteError::SecretExists(name));
                }
                let recipients = self.recipients();
                let record = secrets::seal(&mut self.secure_rng, &name, 1, &value.0, &recipients)?;
                (self.state.put_secret(&record)?, WriteAck::Done)
            }
            Write::RotateSecret(name) => {
                let record = self
                    .state
                    .secrets()
                    .remove(&name)
                    .ok_or_else(|| CrdtError::UnknownSecret(name.to_string()))?;
                let recipients = self.recipients();
                let keys = self.secret_keys.as_ref().ok_or(WriteError::NoSecretKey)?;
                let rotated =
                    secrets::reseal(&mut self.secure_rng, &record, &self.me, keys, &recipients)?;
                (self.state.put_secret(&rotated)?, WriteAck::Done)
            }
            Write::RemoveSecret(name) => (self.state.remove_secret(&name)?, WriteAck::Done),
            Write::CreateVolume(volume) => (self.create_volume(&volume)?, WriteAck::Done),
            Write::RemoveVolume(name) => (self.remove_volume(&name)?, WriteAck::Done),
            Write::RollbackService(name) => (self.state.rollback_service(&name)?, WriteAck::Done),
            Write::StepRollout {
                service,
                step,
                now_ms,
            } => (self.step_rollout(&service, step, now_ms)?, WriteAck::Done),
            Write::CreateJoinToken { grant, now_secs } => {
                let cluster = self.state.cluster().ok_or(CrdtError::NoCluster)?;
                let bootstrap = self.my_addrs();
                if bootstrap.is_empty() {
                    return Err(WriteError::NotListening);
                }
                let (token, record) = JoinToken::mint(
                    &mut self.secure_rng,
                    &cluster.id,
                    &self.me.to_string(),
                    bootstrap,
                    now_secs,
                    &grant,
                );
                (
                    self.state.add_token(&record)?,
                    WriteAck::JoinToken(token.encode()),
                )
            }
        };
        self.changed(true);
        self.publish_change(change);
        Ok(ack)
    }

    /// Checks that `id` names a token of the kind asked for (`operator`: an API token, else a
    /// join token).
    ///
    /// Errors: [`WriteError::NoSuchToken`].
    fn token_of_role(&self, id: &str, operator: bool) -> Result<(), WriteError> {
        let found = self
            .state
            .tokens()
            .get(id)
            .is_some_and(|r| r.is_operator() == operator);
        if found {
            Ok(())
        } else {
            Err(WriteError::NoSuchToken {
                id: id.to_string(),
                operator,
            })
        }
    }
}
