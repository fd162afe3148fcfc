//! Admission: a joining node's request, checked against its join token, and its answer.

use tracing::info;
use warren_crdt::{CrdtError, Member, MemberState, NodeId};

use crate::protocol::{JoinAnswer, JoinRequest, MAX_ANSWER_MEMBERS, MAX_RESPONSE_BYTES};
use crate::token::JoinToken;

use super::NodeMachine;

/// Why a join request was refused ([`NodeMachine::handle_join`]); the text goes back to the
/// joining node, so each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The request is not a JSON [`JoinRequest`].
    #[error("malformed join request")]
    MalformedRequest,
    /// The token does not parse.
    #[error("{0}")]
    MalformedToken(String),
    /// This peer holds no cluster yet.
    #[error("this peer holds no cluster")]
    NoCluster,
    /// The token is another cluster's.
    #[error("join token is for another cluster")]
    OtherCluster,
    /// The joining identity was removed from the cluster for good.
    #[error("this node was removed from the cluster; its identity cannot rejoin")]
    Removed,
    /// The token does not admit (unknown, wrong secret, revoked, expired, used).
    #[error(transparent)]
    Token(#[from] crate::token::TokenRefusal),
    /// Another member minted the token, and only it admits with it.
    #[error(
        "join token {token} was minted by member {name} ({short}) and only it can admit with \
         it; make sure {name} is reachable, or mint a token at a reachable member with \
         `warren-cli join-token create`"
    )]
    MintedElsewhere {
        /// The token's id.
        token: String,
        /// The minting member's name (`?` if unknown here).
        name: String,
        /// The last 8 characters of the minting member's id.
        short: String,
    },
    /// The joining node's name or labels are out of bounds.
    #[error("name must be 1-63 characters and labels at most 64")]
    BadName,
    /// The joining node expects the whole document as the answer (a version older than
    /// issue 13, whose request lacks `sync_after`) and the document is larger than one answer
    /// carries. Nothing was written: the node is not admitted.
    #[error(
        "the cluster's document takes {bytes} bytes, more than one join answer carries \
         ({max}); upgrade this node: newer versions fetch the document by sync"
    )]
    DocumentTooLarge {
        /// The saved document's size.
        bytes: usize,
        /// The most one answer carries.
        max: usize,
    },
    /// Writing the admission failed (the token was used up concurrently, or the store).
    #[error(transparent)]
    Document(#[from] CrdtError),
}

impl NodeMachine {
    /// A join request from `from` (its authenticated id) at wall time `now_secs`: checks the
    /// token and admits it. Returns the answer to send back, or why it is refused.
    ///
    /// The answer is a [`JoinAnswer`] (JSON): the cluster id, this replica's heads right after
    /// the admission, and members to hear (this one first). It stays small whatever the
    /// document's size; the new member fetches the document through the sync protocol
    /// ([`crate::join::CatchUp`]) and starts its machine only once it holds those heads.
    /// An already admitted identity is answered again without a token use (a node that
    /// stopped while catching up starts over with the same token).
    ///
    /// Mixed versions: a request without `sync_after` comes from a node older than this
    /// (issue 13), which loads the answer as a whole saved document. It still gets one when
    /// the document fits in a response ([`MAX_RESPONSE_BYTES`]); a larger one is refused
    /// with [`JoinError::DocumentTooLarge`] before anything is written. (Before, such a node
    /// was admitted and then never got an answer: the mesh refused to send it.)
    ///
    /// Errors: [`JoinError`] (its text goes back to the joining node).
    pub fn handle_join(
        &mut self,
        from: &NodeId,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Vec<u8>, JoinError> {
        let request: JoinRequest =
            serde_json::from_slice(body).map_err(|_| JoinError::MalformedRequest)?;
        let token = JoinToken::decode(&request.token)
            .map_err(|e| JoinError::MalformedToken(e.to_string()))?;
        let cluster = self.state.cluster().ok_or(JoinError::NoCluster)?;
        if token.cluster_id != cluster.id {
            return Err(JoinError::OtherCluster);
        }
        let known = self.state.members().get(from).map(|m| m.state);
        if known == Some(MemberState::Removed) {
            return Err(JoinError::Removed);
        }
        if !request.sync_after {
            let bytes = self.state.save().len();
            if bytes > MAX_RESPONSE_BYTES {
                return Err(JoinError::DocumentTooLarge {
                    bytes,
                    max: MAX_RESPONSE_BYTES,
                });
            }
        }
        if known.is_none() {
            let record = self.state.tokens().remove(&token.token_id);
            token.check(record.as_ref(), now_secs)?;
            // Only the minting member admits with a token, so that its uses hold across a
            // split (see `crate::token`); an empty `minted_by` is an older version's token.
            if let Some(minter) = record
                .as_ref()
                .map(|r| r.minted_by.as_str())
                .filter(|m| !m.is_empty() && *m != self.me.to_string())
            {
                let name = self
                    .state
                    .members()
                    .into_iter()
                    .find(|(id, _)| id.to_string() == minter)
                    .map(|(_, m)| m.name)
                    .unwrap_or_else(|| "?".into());
                let short: String = minter
                    .chars()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(JoinError::MintedElsewhere {
                    token: token.token_id.clone(),
                    name,
                    short,
                });
            }
            if request.name.is_empty() || request.name.len() > 63 || request.labels.len() > 64 {
                return Err(JoinError::BadName);
            }
            let suffix = format!("/p2p/{from}");
            let addrs: Vec<String> = request
                .addrs
                .into_iter()
                .filter(|a| a.len() < 256 && a.ends_with(&suffix))
                .take(16)
                .collect();
            // The token's labels, then the node's own `--label` flags, which win per key
            // (the node writes them again at every start: `OwnDescription`).
            let mut labels = record.map(|r| r.labels).unwrap_or_default();
            labels.extend(
                request
                    .labels
                    .into_iter()
                    .filter(|(k, v)| warren_crdt::validate_label(k, v).is_ok()),
            );
            let member = Member {
                id: from.clone(),
                name: request.name,
                addrs,
                labels,
                capabilities: Default::default(),
                platform: Default::default(),
                admitted_by: self.me.clone(),
                admitted_at: now_secs.saturating_mul(1000),
                state: MemberState::Active,
                availability: Default::default(),
            };
            let change = self.state.admit_with_token(&token.token_id, &member)?;
            self.changed(true);
            self.publish_change(change);
            info!(node = %member.name, peer = %from, "admitted a new member");
            let key_ok = hex::decode(&request.x25519_public_key).is_ok_and(|k| k.len() == 32);
            if key_ok {
                let change = self
                    .state
                    .set_member_key(from, &request.x25519_public_key)?;
                self.changed(true);
                self.publish_change(change);
                self.rekey_secrets();
            }
            self.refresh_members();
        }
        if !request.sync_after {
            return Ok(self.state.save());
        }
        let answer = JoinAnswer {
            cluster_id: cluster.id,
            heads: self.state.heads(),
            members: self.answer_members(from),
        };
        Ok(serde_json::to_vec(&answer).map_err(CrdtError::from)?)
    }

    /// The members a [`JoinAnswer`] names for `joining`: this one first, then others (not
    /// `joining` itself), at most [`MAX_ANSWER_MEMBERS`] in all.
    fn answer_members(&self, joining: &NodeId) -> Vec<(String, Vec<String>)> {
        let mine = self
            .members
            .get(&self.me)
            .cloned()
            .unwrap_or_else(|| self.my_addrs());
        let others = self
            .members
            .iter()
            .filter(|(id, _)| **id != self.me && *id != joining)
            .map(|(id, addrs)| (id.to_string(), addrs.clone()));
        std::iter::once((self.me.to_string(), mine))
            .chain(others)
            .take(MAX_ANSWER_MEMBERS)
            .collect()
    }
}
