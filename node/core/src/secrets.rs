//! Secrets sealed to members (DESIGN §4).
//!
//! A secret's value is encrypted once with a fresh 256-bit data key under XChaCha20-Poly1305
//! (`chacha20poly1305`, random 24-byte nonce stored beside the ciphertext); the additional
//! authenticated data binds it to the secret's name and version, so a ciphertext cannot be
//! moved to another secret or replayed as another version. The data key is sealed to each
//! recipient member's X25519 public key with a libsodium-compatible sealed box (`crypto_box`
//! 0.9, feature `seal`: an ephemeral X25519 key agreement + XSalsa20-Poly1305). We chose the
//! sealed box because it is the simplest reviewed multi-recipient construction with a
//! well-kept Rust implementation (an earlier version of the crate was audited), and it matches
//! what libsodium users know. No primitive is written here.
//!
//! Only [`SecretRecord`]s (ciphertext, nonce, sealed keys) enter the document, gossip and disk;
//! a node decrypts a value only to hand it to a container.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};
use warren_crdt::{NodeId, SecretRecord};
use zeroize::Zeroizing;

/// Largest secret value accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// This node holds no sealed key for the secret (not a recipient, e.g. admitted after the
    /// last re-keying, or removed).
    #[error("this node is not a recipient of secret {0}")]
    NotARecipient(String),
    /// The ciphertext, nonce or sealed key does not authenticate: tampered or corrupt.
    #[error("secret {0} does not authenticate (tampered or corrupt)")]
    Tampered(String),
    /// A key that is not 32 bytes, or a public key that is not hex of 32 bytes.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A value over [`MAX_SECRET_BYTES`], or an empty recipient list.
    #[error("{0}")]
    Invalid(String),
}

/// One node's X25519 key pair for secrets.
pub struct SecretKeys {
    secret: crypto_box::SecretKey,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeys")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl SecretKeys {
    /// A fresh key pair drawn from `rng` (the daemon passes the OS's generator,
    /// `rand::rngs::OsRng`).
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self {
            secret: crypto_box::SecretKey::generate(rng),
        }
    }

    /// The private key's 32 bytes, for the key file.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_bytes().to_vec())
    }

    /// From the key file's 32 bytes. Errors: [`SecretError::InvalidKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SecretError::InvalidKey(format!("{} bytes, not 32", bytes.len())))?;
        Ok(Self {
            secret: crypto_box::SecretKey::from(array),
        })
    }

    /// The public key as 64 hex characters, as members publish it in the document.
    pub fn public_hex(&self) -> String {
        hex::encode(self.secret.public_key().as_bytes())
    }
}

fn public_key(hex_key: &str) -> Result<crypto_box::PublicKey, SecretError> {
    let bytes = hex::decode(hex_key).map_err(|e| SecretError::InvalidKey(e.to_string()))?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| SecretError::InvalidKey("a public key is 32 bytes".into()))?;
    Ok(crypto_box::PublicKey::from(array))
}

fn aad(name: &str, version: u64) -> Vec<u8> {
    format!("warren-secret/v1/{name}/{version}").into_bytes()
}

/// Encrypts `value` as version `version` of secret `name`, sealed to every recipient
/// (member id → X25519 public key in hex). The data key, the nonce and each sealed box's
/// ephemeral key are drawn from `rng`, which must be a cryptographically secure generator
/// seeded from real entropy (the machine's, see
/// [`NodeMachine::set_secure_rng`](crate::machine::NodeMachine::set_secure_rng)).
///
/// Errors: [`SecretError::Invalid`] for a value over [`MAX_SECRET_BYTES`] or no recipient;
/// [`SecretError::InvalidKey`] for a malformed public key.
pub fn seal(
    rng: &mut (impl RngCore + CryptoRng),
    name: &str,
    version: u64,
    value: &[u8],
    recipients: &BTreeMap<NodeId, String>,
) -> Result<SecretRecord, SecretError> {
    if value.len() > MAX_SECRET_BYTES {
        return Err(SecretError::Invalid(format!(
            "a secret is at most {MAX_SECRET_BYTES} bytes"
        )));
    }
    if recipients.is_empty() {
        return Err(SecretError::Invalid(
            "no member to seal the secret to".into(),
        ));
    }
    let data_key = XChaCha20Poly1305::generate_key(&mut *rng);
    let nonce = XChaCha20Poly1305::generate_nonce(&mut *rng);
    let aad = aad(name, version);
    let ciphertext = XChaCha20Poly1305::new(&data_key)
        .encrypt(
            &nonce,
            Payload {
                msg: value,
                aad: &aad,
            },
        )
        .map_err(|_| SecretError::Invalid("encryption failed".into()))?;
    let mut sealed = BTreeMap::new();
    for (member, key) in recipients {
        let key = public_key(key)?;
        let box_ = key
            .seal(rng, data_key.as_slice())
            .map_err(|_| SecretError::Invalid("sealing failed".into()))?;
        sealed.insert(member.clone(), box_);
    }
    Ok(SecretRecord {
        name: name.to_string(),
        version,
        ciphertext,
        nonce: nonce.to_vec(),
        recipients: sealed,
    })
}

/// Decrypts `record` as member `me` with `keys`.
///
/// Errors: [`SecretError::NotARecipient`], [`SecretError::Tampered`].
pub fn open(
    record: &SecretRecord,
    me: &NodeId,
    keys: &SecretKeys,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let tampered = || SecretError::Tampered(record.name.clone());
    let sealed = record
        .recipients
        .get(me)
        .ok_or_else(|| SecretError::NotARecipient(record.name.clone()))?;
    let data_key = Zeroizing::new(keys.secret.unseal(sealed).map_err(|_| tampered())?);
    if data_key.len() != 32 || record.nonce.len() != 24 {
        return Err(tampered());
    }
    let cipher = XChaCha20Poly1305::new_from_slice(&data_key).map_err(|_| tampered())?;
    let aad = aad(&record.name, record.version);
    cipher
        .decrypt(
            XNonce::from_slice(&record.nonce),
            Payload {
                msg: &record.ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| tampered())
}

/// Re-keys `record` for `recipients`: a fresh data key and nonce drawn from `rng` (as in
/// [`seal`]), version + 1. Used when a member joins (it gets a sealed key) or is removed (it
/// must not read what comes next).
///
/// Errors: those of [`open`] and [`seal`].
pub fn reseal(
    rng: &mut (impl RngCore + CryptoRng),
    record: &SecretRecord,
    me: &NodeId,
    keys: &SecretKeys,
    recipients: &BTreeMap<NodeId, String>,
) -> Result<SecretRecord, SecretError> {
    let value = open(record, me, keys)?;
    seal(rng, &record.name, record.version + 1, &value, recipients)
}

#[cfg(test)]
mod tests {
    use rand::rngs::{OsRng, StdRng};
    use rand::SeedableRng;

    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    #[test]
    fn sealed_to_each_member_and_only_to_them() {
        let (a, b, c) = (
            SecretKeys::generate(&mut OsRng),
            SecretKeys::generate(&mut OsRng),
            SecretKeys::generate(&mut OsRng),
        );
        let recipients: BTreeMap<NodeId, String> =
            [(id("a"), a.public_hex()), (id("b"), b.public_hex())].into();
        let record = seal(&mut OsRng, "db", 1, b"hunter2", &recipients).expect("seal");
        assert!(!record.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(&*open(&record, &id("a"), &a).expect("a"), b"hunter2");
        assert_eq!(&*open(&record, &id("b"), &b).expect("b"), b"hunter2");
        assert_eq!(
            open(&record, &id("c"), &c),
            Err(SecretError::NotARecipient("db".into()))
        );
        // c's key under b's name opens nothing.
        assert_eq!(
            open(&record, &id("b"), &c),
            Err(SecretError::Tampered("db".into()))
        );
    }

    #[test]
    fn tampering_and_moving_are_detected() {
        let a = SecretKeys::generate(&mut OsRng);
        let recipients: BTreeMap<NodeId, String> = [(id("a"), a.public_hex())].into();
        let record = seal(&mut OsRng, "db", 1, b"hunter2", &recipients).expect("seal");
        let mut flipped = record.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            open(&flipped, &id("a"), &a),
            Err(SecretError::Tampered(_))
        ));
        let moved = SecretRecord {
            name: "other".into(),
            ..record.clone()
        };
        assert!(matches!(
            open(&moved, &id("a"), &a),
            Err(SecretError::Tampered(_))
        ));
        let replayed = SecretRecord {
            version: 2,
            ..record.clone()
        };
        assert!(matches!(
            open(&replayed, &id("a"), &a),
            Err(SecretError::Tampered(_))
        ));
        let mut short_nonce = record;
        short_nonce.nonce.truncate(3);
        assert!(matches!(
            open(&short_nonce, &id("a"), &a),
            Err(SecretError::Tampered(_))
        ));
    }

    #[test]
    fn reseal_drops_a_removed_member() {
        let (a, b) = (
            SecretKeys::generate(&mut OsRng),
            SecretKeys::generate(&mut OsRng),
        );
        let both: BTreeMap<NodeId, String> =
            [(id("a"), a.public_hex()), (id("b"), b.public_hex())].into();
        let record = seal(&mut OsRng, "db", 1, b"v", &both).expect("seal");
        let only_a: BTreeMap<NodeId, String> = [(id("a"), a.public_hex())].into();
        let rekeyed = reseal(&mut OsRng, &record, &id("a"), &a, &only_a).expect("reseal");
        assert_eq!(rekeyed.version, 2);
        assert_ne!(rekeyed.ciphertext, record.ciphertext);
        assert!(matches!(
            open(&rekeyed, &id("b"), &b),
            Err(SecretError::NotARecipient(_))
        ));
        assert!(seal(&mut OsRng, "db", 1, &vec![0; MAX_SECRET_BYTES + 1], &only_a).is_err());
        assert!(seal(&mut OsRng, "db", 1, b"v", &BTreeMap::new()).is_err());
    }

    #[test]
    fn the_generator_given_is_the_only_source_of_randomness() {
        let keys = SecretKeys::generate(&mut StdRng::seed_from_u64(1));
        let again = SecretKeys::generate(&mut StdRng::seed_from_u64(1));
        assert_eq!(keys.public_hex(), again.public_hex());
        let recipients: BTreeMap<NodeId, String> = [(id("a"), keys.public_hex())].into();
        let sealed = |seed| {
            seal(&mut StdRng::seed_from_u64(seed), "db", 1, b"v", &recipients).expect("seal")
        };
        assert_eq!(sealed(7), sealed(7), "a seeded generator replays exactly");
        assert_ne!(sealed(7).ciphertext, sealed(8).ciphertext);
        assert_eq!(&*open(&sealed(7), &id("a"), &keys).expect("open"), b"v");
    }
}
