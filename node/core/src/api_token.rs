//! Operator tokens for the remote API: `WRNA1-<id>.<secret>`, both lowercase hex.
//!
//! A token is minted at any peer (`warren-cli api-token create`); the document stores only the
//! SHA-256 digest of its secret, under `tokens.<id>` with role
//! [`TokenRecord::ROLE_OPERATOR`], so every peer can check it and none can recover it from what
//! it reads. A revocation is one write to that record, so it reaches every peer the way any
//! other change does. The check is a pure function of the presented text, the records and the
//! wall clock ([`verify`]); the HTTP layer only turns its answer into 401 or a pass.

use std::collections::BTreeMap;

use rand::{CryptoRng, RngCore};
use warren_crdt::TokenRecord;

use crate::token::{digest, digest_matches, random_hex};

const PREFIX: &str = "WRNA1-";
/// Hex characters of a token id (8 random bytes).
const ID_LEN: usize = 16;
/// Hex characters of a token secret (32 random bytes).
const SECRET_LEN: usize = 64;

/// Longest validity an operator token may be given: ten years, in seconds.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3_600;

/// What a new operator token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenGrant {
    /// Seconds it stays valid (1 to [`MAX_TTL_SECS`]).
    pub ttl_secs: u64,
    /// Free-form labels for the operator's own bookkeeping (who, what for).
    pub labels: BTreeMap<String, String>,
}

/// A freshly minted operator token: the only moment its secret exists in clear at a peer.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Public id (key in the document's `tokens`; shown by `api-token ls`).
    pub id: String,
    secret: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// A fresh token valid for `grant.ttl_secs` from `now_secs` (Unix seconds), and the record
    /// to store in the document: the digest of its secret, never the secret. The id (8 bytes)
    /// and the secret (32 bytes) are drawn from `rng`, a cryptographically secure generator
    /// seeded from real entropy (the daemon's is the OS's).
    pub fn mint(
        rng: &mut (impl RngCore + CryptoRng),
        now_secs: i64,
        grant: &ApiTokenGrant,
    ) -> (ApiToken, TokenRecord) {
        let token = ApiToken {
            id: random_hex::<8>(rng),
            secret: zeroize::Zeroizing::new(random_hex::<32>(rng)),
        };
        let ttl = grant.ttl_secs.clamp(1, MAX_TTL_SECS);
        let record = TokenRecord {
            id: token.id.clone(),
            digest: digest(&token.secret),
            expires_at: now_secs.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            uses_left: 0,
            role: TokenRecord::ROLE_OPERATOR.into(),
            created_at: now_secs,
            labels: grant.labels.clone(),
            revoked: false,
            minted_by: String::new(),
        };
        (token, record)
    }

    /// The text an operator passes as `--token` / `WARREN_TOKEN` (and the API receives as
    /// `Authorization: Bearer <text>`).
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}.{}", self.id, self.secret.as_str())
    }
}

/// Why a request's credential was refused. Only the node's log sees this; the client gets a
/// bare 401 whatever the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer WRNA1-<id>.<secret>`.
    Malformed,
    /// No operator token has that id.
    Unknown,
    /// The id exists but the secret does not match its digest.
    WrongSecret,
    /// The token was revoked.
    Revoked,
    /// The token's validity ended.
    Expired,
}

impl Refusal {
    /// A short stable word for logs (`missing`, `malformed`, `unknown`, `wrong_secret`,
    /// `revoked`, `expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::WrongSecret => "wrong_secret",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
        }
    }
}

/// Splits `WRNA1-<id>.<secret>` into its id and secret, checking lengths and alphabet.
fn parse(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix(PREFIX)?.split_once('.')?;
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(id, ID_LEN) && hex(secret, SECRET_LEN)).then_some((id, secret))
}

/// Checks the value of an `Authorization` header (`None` when absent) against the document's
/// token records at wall time `now_secs` (Unix seconds).
///
/// Returns the id of the operator token that matched, or why the request is refused. The
/// secret's digest is compared in constant time; an unknown id still costs one digest and one
/// comparison, so the time taken does not tell a known id from an unknown one either. Join
/// tokens never match, whatever their secret.
pub fn verify<'a>(
    header: Option<&str>,
    records: impl IntoIterator<Item = &'a TokenRecord>,
    now_secs: i64,
) -> Result<&'a str, Refusal> {
    let header = header.ok_or(Refusal::Missing)?;
    let (scheme, credential) = header.trim().split_once(' ').ok_or(Refusal::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Malformed);
    }
    let (id, secret) = parse(credential.trim()).ok_or(Refusal::Malformed)?;
    let record = records.into_iter().find(|r| r.id == id && r.is_operator());
    let Some(record) = record else {
        // Same work as for a known id, against a digest nothing hashes to.
        let _ = digest_matches(secret, &"0".repeat(SECRET_LEN));
        return Err(Refusal::Unknown);
    };
    if !digest_matches(secret, &record.digest) {
        return Err(Refusal::WrongSecret);
    }
    if record.revoked {
        return Err(Refusal::Revoked);
    }
    if record.expires_at <= now_secs {
        return Err(Refusal::Expired);
    }
    Ok(&record.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ttl_secs: u64) -> ApiTokenGrant {
        ApiTokenGrant {
            ttl_secs,
            labels: BTreeMap::from([("owner".into(), "ops".into())]),
        }
    }

    #[test]
    fn a_minted_token_opens_the_api_until_revoked_or_expired() {
        let (token, record) = ApiToken::mint(&mut rand::rngs::OsRng, 1_000, &grant(60));
        assert_eq!(record.role, TokenRecord::ROLE_OPERATOR);
        assert_eq!(record.created_at, 1_000);
        assert_eq!(record.expires_at, 1_060);
        let text = token.encode();
        assert!(!record.digest.contains(&text[PREFIX.len() + ID_LEN + 1..]));
        let header = format!("Bearer {text}");
        let records = [record.clone()];
        assert_eq!(
            verify(Some(&header), &records, 1_001),
            Ok(token.id.as_str())
        );
        assert_eq!(
            verify(Some(&format!("bearer  {text} ")), &records, 1_001),
            Ok(token.id.as_str()),
            "the scheme is case-insensitive"
        );
        assert_eq!(
            verify(Some(&header), &records, 1_060),
            Err(Refusal::Expired)
        );
        let revoked = [TokenRecord {
            revoked: true,
            ..record.clone()
        }];
        assert_eq!(
            verify(Some(&header), &revoked, 1_001),
            Err(Refusal::Revoked)
        );
    }

    #[test]
    fn every_bad_credential_is_refused_with_its_reason() {
        let (token, record) = ApiToken::mint(&mut rand::rngs::OsRng, 1_000, &grant(60));
        let records = [record.clone()];
        let text = token.encode();
        assert_eq!(verify(None, &records, 1_001), Err(Refusal::Missing));
        for bad in [
            "Basic abc",
            "Bearer",
            "Bearer WRN1-abc",
            &format!("Token {text}"),
            &format!("Bearer {}", text.to_uppercase()),
            &format!("Bearer {text}0"),
        ] {
            assert_eq!(
                verify(Some(bad), &records, 1_001),
                Err(Refusal::Malformed),
                "{bad}"
            );
        }
        let (other, _) = ApiToken::mint(&mut rand::rngs::OsRng, 1_000, &grant(60));
        assert_eq!(
            verify(Some(&format!("Bearer {}", other.encode())), &records, 1_001),
            Err(Refusal::Unknown)
        );
        let forged = format!("{PREFIX}{}.{}", token.id, "0".repeat(SECRET_LEN));
        assert_eq!(
            verify(Some(&format!("Bearer {forged}")), &records, 1_001),
            Err(Refusal::WrongSecret)
        );
        // A join token's record with the same id and digest is not an operator token.
        let join = [TokenRecord {
            role: TokenRecord::ROLE_MEMBER.into(),
            ..record
        }];
        assert_eq!(
            verify(Some(&format!("Bearer {text}")), &join, 1_001),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let (token, _) = ApiToken::mint(&mut rand::rngs::OsRng, 0, &grant(60));
        let shown = format!("{token:?}");
        let secret = token.encode();
        let secret = secret.rsplit('.').next().unwrap_or_default();
        assert!(!shown.contains(secret), "{shown}");
    }
}
