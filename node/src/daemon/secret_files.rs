//! A task's secrets as files on a tmpfs: `/run/warren/<node id>/secrets/<container name>/<target>`,
//! mode 0400, bind-mounted read-only at `/run/secrets` in the container. The plaintext lives only
//! in memory and on that tmpfs, never in the data dir, the document, the environment or a log.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use warren_crdt::{NodeId, SecretMount, SecretRecord};

use crate::secrets::{self, SecretKeys};

/// Where secret files of node `me` live.
pub(crate) fn root(me: &NodeId) -> PathBuf {
    PathBuf::from("/run/warren")
        .join(me.as_str())
        .join("secrets")
}

/// The file system type of the mount that holds `path`, from /proc/mounts (longest prefix).
fn fs_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = fields.next()?;
            let fs = fields.next()?;
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

fn on_tmpfs(path: &Path) -> bool {
    matches!(fs_type(path).as_deref(), Some("tmpfs") | Some("ramfs"))
}

/// Makes sure `root` is on a tmpfs: when it is not, mounts a small tmpfs (mode 0700) on it,
/// one per node, so that two nodes of one machine never stack mounts over each other.
fn ensure_tmpfs(root: &Path) -> Result<(), String> {
    if on_tmpfs(root) {
        return Ok(());
    }
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0700,size=16m", "warren-secrets"])
        .arg(root)
        .output()
        .map_err(|e| format!("secrets need a tmpfs and `mount` cannot run: {e}"))?;
    if !out.status.success() || !on_tmpfs(root) {
        return Err(format!(
            "secrets need a tmpfs: {} is on {} and mounting one failed: {}",
            root.display(),
            fs_type(root).unwrap_or_else(|| "an unknown file system".into()),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    tracing::info!(dir = %root.display(), "mounted a tmpfs for secret files");
    Ok(())
}

/// Writes the secrets of one container into a fresh directory under `root` and returns its path.
///
/// Errors: a message for the task's status: the root is not on a tmpfs, a secret does not
/// exist, this node cannot open it (not re-keyed for it yet), or the files cannot be written.
pub(crate) fn prepare(
    root: &Path,
    container: &str,
    mounts: &[SecretMount],
    records: &BTreeMap<String, SecretRecord>,
    me: &NodeId,
    keys: &SecretKeys,
) -> Result<PathBuf, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    ensure_tmpfs(root)?;
    let dir = root.join(container);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for mount in mounts {
        let record = records
            .get(&mount.name)
            .ok_or_else(|| format!("secret {} does not exist", mount.name))?;
        let value = secrets::open(record, me, keys).map_err(|e| e.to_string())?;
        let path = secret_path(&dir, &mount.target)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("cannot write secret {}: {e}", mount.target))?;
        file.write_all(&value)
            .map_err(|e| format!("cannot write secret {}: {e}", mount.target))?;
    }
    Ok(dir)
}

/// `dir/target` if `target` is exactly one normal path component (no root, no `..`, no
/// `.`, no separator), so the joined path can never leave `dir`. Defense in depth: the spec's
/// validation already refuses such targets, but a spec read from the document is checked
/// here again before anything is written as root.
///
/// Errors: a message naming the refused target.
fn secret_path(dir: &Path, target: &str) -> Result<PathBuf, String> {
    use std::path::Component;
    let mut components = Path::new(target).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) if !target.contains('\0') => Ok(dir.join(name)),
        _ => Err(format!(
            "refused secret target {target:?}: it must be one file name under /run/secrets"
        )),
    }
}

/// Removes the secret directories of containers not in `keep` (removed or never started).
pub(crate) fn sweep(root: &Path, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove old secret files");
            }
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::secret_path;
    use std::path::Path;

    #[test]
    fn secret_path_stays_in_dir() {
        let dir = Path::new("/run/x/secrets/c1");
        assert_eq!(secret_path(dir, "db"), Ok(dir.join("db")));
        for bad in [
            "/etc/warren-pwned",
            "../x",
            "a/b",
            "..",
            ".",
            "",
            "a/../../b",
            "a\0b",
        ] {
            assert!(secret_path(dir, bad).is_err(), "{bad:?} accepted");
        }
    }
}
