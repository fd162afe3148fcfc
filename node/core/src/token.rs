//! Join tokens: `WRN1-` + base64url(JSON { cluster_id, token_id, secret, expires_at, bootstrap }).
//!
//! The document stores only the SHA-256 digest of the secret, so every member can check a
//! token and none can mint one from what it reads.
//!
//! A join token admits only at the member that minted it (`TokenRecord::minted_by`; the
//! token's `bootstrap` addresses are that member's). Its uses left are a last-writer-wins
//! counter in the replicated document, so if any member could admit, the two sides of a
//! split would each spend their own copy and a single-use token would admit two nodes. A
//! token minted by an older version has no `minted_by`; any member admits with it, as before
//! (split-unsafe: mint a new token to get the guarantee).

use base64::Engine;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warren_crdt::TokenRecord;

const PREFIX: &str = "WRN1-";

/// Why a join token's text does not parse ([`JoinToken::decode`]). The text says what is
/// wrong with it, for the operator who pasted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The text does not start with `WRN1-`: not a join token (an operator token starts
    /// with `WRNA1-`).
    #[error("a join token starts with {PREFIX}")]
    MissingPrefix,
    /// What follows the prefix is not base64url without padding (cut when copied?).
    #[error("the token is not valid base64url")]
    NotBase64,
    /// The decoded bytes are not a join token's JSON.
    #[error("the token's content is malformed")]
    Malformed,
}

/// What a new join token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// Seconds it stays valid.
    pub ttl_secs: u64,
    /// Admissions it allows (1: single use).
    pub uses: u64,
    /// Labels the nodes it admits get.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl TokenGrant {
    /// Single use, no labels, valid `ttl_secs`.
    pub fn single_use(ttl_secs: u64) -> Self {
        Self {
            ttl_secs,
            uses: 1,
            labels: Default::default(),
        }
    }
}

/// A decoded join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The cluster it admits to.
    pub cluster_id: String,
    /// Public id of the token (key in the document's `tokens`).
    pub token_id: String,
    /// Hex secret; only its digest is stored.
    pub secret: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    /// Multiaddrs (with `/p2p/<peer id>`) of members to contact.
    pub bootstrap: Vec<String>,
}

/// Why a join token does not admit ([`JoinToken::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// No join token with this id (an operator's API token never admits a node).
    #[error("unknown join token")]
    Unknown,
    /// The token's secret is not the one minted.
    #[error("join token secret does not match")]
    SecretMismatch,
    /// Revoked by an operator.
    #[error("join token revoked")]
    Revoked,
    /// Past its expiry.
    #[error("join token expired")]
    Expired,
    /// No uses left.
    #[error("join token already used")]
    Used,
}

impl JoinToken {
    /// A fresh token for `cluster_id`, valid for `ttl_secs` from `now_secs` and for `uses`
    /// admissions, giving `labels` to the nodes it admits; and the record to store in the
    /// document (the secret's digest, never the secret).
    ///
    /// `minted_by` is the minting member's node id: only it admits with the token. The id (8
    /// bytes) and the secret (32 bytes) are drawn from `rng`, a cryptographically secure
    /// generator seeded from real entropy (the daemon's is the OS's).
    pub fn mint(
        rng: &mut (impl RngCore + CryptoRng),
        cluster_id: &str,
        minted_by: &str,
        bootstrap: Vec<String>,
        now_secs: i64,
        grant: &TokenGrant,
    ) -> (JoinToken, TokenRecord) {
        let token = JoinToken {
            cluster_id: cluster_id.to_string(),
            token_id: random_hex::<8>(rng),
            secret: random_hex::<32>(rng),
            expires_at: now_secs.saturating_add(i64::try_from(grant.ttl_secs).unwrap_or(i64::MAX)),
            bootstrap,
        };
        let record = TokenRecord {
            id: token.token_id.clone(),
            digest: digest(&token.secret),
            expires_at: token.expires_at,
            uses_left: grant.uses,
            role: TokenRecord::ROLE_MEMBER.into(),
            created_at: now_secs,
            labels: grant.labels.clone(),
            revoked: false,
            minted_by: minted_by.to_string(),
        };
        (token, record)
    }

    /// The text form an operator copies.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// Parses the text form (surrounding whitespace is ignored).
    ///
    /// Errors: [`TokenError`] saying what is wrong with the text.
    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(TokenError::MissingPrefix)?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::NotBase64)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }

    /// Checks this token against the document's record at `now_secs`.
    ///
    /// Errors: [`TokenRefusal`], whose text is sent back to the joining node.
    pub fn check(&self, record: Option<&TokenRecord>, now_secs: i64) -> Result<(), TokenRefusal> {
        // An operator's API token is no join token, whatever its secret.
        let record = record
            .filter(|r| r.role == TokenRecord::ROLE_MEMBER)
            .ok_or(TokenRefusal::Unknown)?;
        if !digest_matches(&self.secret, &record.digest) {
            return Err(TokenRefusal::SecretMismatch);
        }
        if record.revoked {
            return Err(TokenRefusal::Revoked);
        }
        if record.expires_at <= now_secs {
            return Err(TokenRefusal::Expired);
        }
        if record.uses_left == 0 {
            return Err(TokenRefusal::Used);
        }
        Ok(())
    }
}

/// `N` bytes from `rng` as `2 * N` lowercase hex characters: a token's id or secret.
pub(crate) fn random_hex<const N: usize>(rng: &mut (impl RngCore + CryptoRng)) -> String {
    let mut bytes = [0u8; N];
    rng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Lowercase hex SHA-256 of a token secret: what the document stores instead of the secret.
pub(crate) fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to the stored hex `digest`, compared in constant time so that the
/// time taken says nothing of how much of a guess was right.
pub(crate) fn digest_matches(secret: &str, stored: &str) -> bool {
    use subtle::ConstantTimeEq;
    let presented = digest(secret);
    // Both sides are 64 hex characters for any record we wrote; a length mismatch (a
    // malformed record) simply fails.
    presented.as_bytes().ct_eq(stored.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_refusal() {
        let (token, record) = JoinToken::mint(
            &mut rand::rngs::OsRng,
            "c1",
            "me",
            vec!["/ip4/127.0.0.1".into()],
            100,
            &TokenGrant::single_use(60),
        );
        assert_eq!(JoinToken::decode(&token.encode()).expect("decode"), token);
        assert!(token.check(Some(&record), 120).is_ok());
        assert!(token.check(Some(&record), 161).is_err(), "expired");
        assert!(token.check(None, 120).is_err(), "unknown");
        let mut forged = token.clone();
        forged.secret = "00".repeat(32);
        assert!(forged.check(Some(&record), 120).is_err(), "forged");
        let used = TokenRecord {
            uses_left: 0,
            ..record.clone()
        };
        assert!(token.check(Some(&used), 120).is_err(), "used");
        let revoked = TokenRecord {
            revoked: true,
            ..record
        };
        assert_eq!(token.check(Some(&revoked), 120), Err(TokenRefusal::Revoked));
        let operator = TokenRecord {
            role: TokenRecord::ROLE_OPERATOR.into(),
            ..used.clone()
        };
        assert_eq!(
            token.check(
                Some(&TokenRecord {
                    uses_left: 1,
                    ..operator
                }),
                120
            ),
            Err(TokenRefusal::Unknown),
            "an operator token never admits a node"
        );
        assert!(JoinToken::decode("nonsense").is_err());
        assert!(JoinToken::decode("WRN1-!!!").is_err());
    }
}
