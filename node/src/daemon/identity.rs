//! The node's keys, persisted in the data dir with mode 0600: the ed25519 identity (its PeerId),
//! the X25519 key that secrets are sealed to, and the WireGuard key of the overlay. Three
//! separate keys: a signing key is never reused for encryption (CRATES.md), and the overlay's
//! key can be rotated without touching the secrets.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use warren_mesh::Keypair;
use zeroize::Zeroizing;

use super::NodeError;
use crate::overlay::WireguardKey;
use crate::secrets::SecretKeys;

const IDENTITY_FILE: &str = "identity.key";
const X25519_FILE: &str = "x25519.key";
const WIREGUARD_FILE: &str = "wireguard.key";

/// Reads the private key file `path`, or creates it from `make()` with mode 0600.
///
/// Errors: a reason when the file cannot be read or written, or when group or others may read
/// it (the key would no longer be this node's alone).
fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, String>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let mode = std::fs::metadata(path)
                .map_err(|e| e.to_string())?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "mode {:o} lets other users read the key; run chmod 600",
                    mode & 0o777
                ));
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| e.to_string())?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| e.to_string())?;
            Ok(bytes)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Loads `<data_dir>/identity.key` (libp2p protobuf encoding), or creates it with mode 0600.
///
/// Errors: [`NodeError::Identity`] when the file cannot be read, written or decoded, or when it
/// is readable by group or others.
pub(crate) fn load_or_create(data_dir: &Path) -> Result<Keypair, NodeError> {
    let path = data_dir.join(IDENTITY_FILE);
    let bytes = read_or_create(&path, || {
        Keypair::generate_ed25519()
            .to_protobuf_encoding()
            .map(Zeroizing::new)
            .map_err(|e| e.to_string())
    })
    .map_err(|reason| NodeError::Identity {
        path: path.clone(),
        reason,
    })?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| NodeError::Identity {
        path,
        reason: e.to_string(),
    })
}

/// Loads `<data_dir>/x25519.key` (32 raw bytes), or creates it with mode 0600.
///
/// Errors: [`NodeError::Identity`] as for the identity key, or when the file is not 32 bytes.
pub(crate) fn load_or_create_x25519(data_dir: &Path) -> Result<SecretKeys, NodeError> {
    let path = data_dir.join(X25519_FILE);
    let fail = |reason: String| NodeError::Identity {
        path: path.clone(),
        reason,
    };
    let bytes = read_or_create(&path, || {
        Ok(SecretKeys::generate(&mut rand::rngs::OsRng).to_bytes())
    })
    .map_err(fail)?;
    SecretKeys::from_bytes(&bytes).map_err(|e| fail(e.to_string()))
}

/// Loads `<data_dir>/wireguard.key` (base64 text, as `wg genkey` writes it), or creates it
/// with mode 0600.
///
/// Errors: [`NodeError::Identity`] as for the identity key, or when the file is not a
/// WireGuard key.
pub(crate) fn load_or_create_wireguard(data_dir: &Path) -> Result<WireguardKey, NodeError> {
    let path = data_dir.join(WIREGUARD_FILE);
    let fail = |reason: String| NodeError::Identity {
        path: path.clone(),
        reason,
    };
    let bytes = read_or_create(&path, || {
        let key = WireguardKey::generate(&mut rand::rngs::OsRng);
        Ok(Zeroizing::new(key.to_file_text().as_bytes().to_vec()))
    })
    .map_err(fail)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| fail(e.to_string()))?;
    WireguardKey::from_file_text(text).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("create");
        let x = load_or_create_x25519(dir.path()).expect("create x25519");
        for file in [IDENTITY_FILE, X25519_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let b = load_or_create(dir.path()).expect("load");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let y = load_or_create_x25519(dir.path()).expect("load x25519");
        assert_eq!(x.public_hex(), y.public_hex());
        std::fs::set_permissions(
            dir.path().join(X25519_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(
            load_or_create_x25519(dir.path()).is_err(),
            "a readable key is refused"
        );
    }

    #[test]
    fn the_wireguard_key_persists_as_wg_tools_write_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_wireguard(dir.path()).expect("create");
        let path = dir.path().join(WIREGUARD_FILE);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim().len(), 44, "base64 of 32 bytes: {}", text.len());
        let b = load_or_create_wireguard(dir.path()).expect("load");
        assert_eq!(a.public(), b.public());
        // Not the secrets' key: the two files hold different keys.
        let x = load_or_create_x25519(dir.path()).expect("x25519");
        assert_ne!(x.public_hex(), hex::encode(a.public().0));
        std::fs::write(&path, "not a key\n").expect("write");
        assert!(load_or_create_wireguard(dir.path()).is_err());
    }
}
