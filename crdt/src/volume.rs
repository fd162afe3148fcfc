//! Volumes and mounts (issue 16, item 6): `volumes.<name>` records and a service's
//! `spec.mounts`.
//!
//! A *volume* is named data bound to one node: `{ driver, node, options{} }`. Its node
//! creates the Docker volume itself when a task needs it; tasks of a service that mounts it
//! run only on that node (the scheduler's volume rule, `warren_core::core::volumes`).
//!
//! ## Merge rules
//!
//! - A volume record is one Automerge map under `volumes.<name>`, written whole by
//!   [`DesiredState::put_volume`](crate::DesiredState::put_volume). Two concurrent creates of
//!   one name (two sides of a split) are two conflicting maps: every replica keeps the same
//!   one, whole (Automerge's deterministic choice among conflicting values: the greater
//!   Lamport counter, then the greater actor id), never a mix of the two records' fields.
//!   The losing side's node may already hold a Docker volume of that name: it is its own
//!   (Docker volume names carry the node), never mounted again while the record names
//!   another node.
//! - Remove vs concurrent put: Automerge keeps the put (a delete removes only the values it
//!   saw), so a volume re-created on the other side of a split survives a remove.
//! - A spec's `mounts` list is one JSON value: concurrent changes of it resolve to one whole
//!   list (last writer wins by Automerge's rule).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::NodeId;
use crate::CrdtError;

/// The only volume driver Warren supports: Docker's `local` driver (data on the node's disk).
pub const LOCAL_DRIVER: &str = "local";
/// Most mounts in a spec.
pub const MAX_MOUNTS: usize = 64;
/// Longest volume name, in bytes.
pub const MAX_VOLUME_NAME_BYTES: usize = 63;
/// Longest mount target or bind source, in bytes.
pub const MAX_MOUNT_PATH_BYTES: usize = 4_096;
/// Most driver options of a volume.
pub const MAX_VOLUME_OPTIONS: usize = 32;

/// `volumes.<name>`: a named volume bound to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The volume's name ([`validate_volume_name`]).
    pub name: String,
    /// Docker volume driver: [`LOCAL_DRIVER`].
    pub driver: String,
    /// The node that holds its data (tasks using it are placed there).
    pub node: NodeId,
    /// Driver options, passed to Docker's volume create as `--opt K=V`.
    pub options: BTreeMap<String, String>,
}

impl Volume {
    /// Checks the name, the driver (only `local`: any other is refused, since Warren cannot
    /// know whether another driver's data follows a task to another node) and the options
    /// (at most [`MAX_VOLUME_OPTIONS`], keys non-empty, no NUL).
    ///
    /// Errors: [`CrdtError::InvalidSpec`] naming the field.
    pub fn validate(&self) -> Result<(), CrdtError> {
        validate_volume_name(&self.name)?;
        if self.driver != LOCAL_DRIVER {
            return Err(invalid(
                "volume.driver",
                format!(
                    "driver {:?} is not supported: only \"local\" (data on the volume's node)",
                    self.driver
                ),
            ));
        }
        if self.node.as_str().is_empty() {
            return Err(invalid("volume.node", "must name a member"));
        }
        if self.options.len() > MAX_VOLUME_OPTIONS
            || self
                .options
                .iter()
                .any(|(k, v)| k.is_empty() || k.contains(['\0', '=']) || v.contains('\0'))
        {
            return Err(invalid(
                "volume.options",
                format!("at most {MAX_VOLUME_OPTIONS} options KEY=VALUE, KEY non-empty, no NUL"),
            ));
        }
        Ok(())
    }
}

/// What a mount attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A Warren volume (`source` is its name): the task runs on the volume's node.
    Volume,
    /// A host path (`source` is an absolute path on the node): only on nodes started with
    /// `--allow-host-paths`.
    Bind,
}

impl MountKind {
    /// `volume` or `bind`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
        }
    }
}

/// One mount of a service's tasks: `--mount type=volume,source=NAME,target=/data[,readonly]`.
///
/// Serialised as an object (`{"type", "source", "target", "readonly"}`); read from that
/// object or from the `--mount` text itself ([`Mount::parse`]), so clients send the flag as
/// the operator wrote it and the one parser is this crate's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MountRepr")]
pub struct Mount {
    /// Volume or host path.
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// The volume's name, or the absolute host path.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default)]
    pub readonly: bool,
}

impl Mount {
    /// Parses Docker's `--mount` syntax: comma-separated `key=value` items, keys `type`
    /// (`volume`, the default, or `bind`), `source`/`src`, `target`/`destination`/`dst`,
    /// `readonly`/`ro` (alone, or `=true|false|1|0`). The result is checked with
    /// [`Mount::validate`].
    ///
    /// Errors: [`CrdtError::InvalidSpec`] on field `mounts` saying what is wrong.
    pub fn parse(text: &str) -> Result<Mount, CrdtError> {
        let mut kind = MountKind::Volume;
        let (mut source, mut target, mut readonly) = (None, None, false);
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            match (key, value) {
                ("type", Some("volume")) => kind = MountKind::Volume,
                ("type", Some("bind")) => kind = MountKind::Bind,
                ("type", Some(other)) => {
                    return Err(invalid(
                        "mounts",
                        format!("mount type {other:?} is not supported: volume or bind"),
                    ))
                }
                ("source" | "src", Some(v)) => source = Some(v.to_string()),
                ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_string()),
                ("readonly" | "ro", None) => readonly = true,
                ("readonly" | "ro", Some(v)) => {
                    readonly = match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(invalid(
                                "mounts",
                                format!("readonly={v:?}: use true, false, 1 or 0"),
                            ))
                        }
                    }
                }
                _ => {
                    return Err(invalid(
                        "mounts",
                        format!(
                            "unknown mount option {item:?} in {text:?}: type, source, target, \
                             readonly"
                        ),
                    ))
                }
            }
        }
        let (Some(source), Some(target)) = (source, target) else {
            return Err(invalid(
                "mounts",
                format!("{text:?} needs source=... and target=..."),
            ));
        };
        let mount = Mount {
            kind,
            source,
            target,
            readonly,
        };
        mount.validate()?;
        Ok(mount)
    }

    /// The target is absolute, normalised (no `.`/`..` component, no `//`, no trailing
    /// `/`), not `/`, at most [`MAX_MOUNT_PATH_BYTES`], without NUL, comma or `:`; a volume's
    /// source is a valid volume name ([`validate_volume_name`]); a bind's source is an
    /// absolute path with the same rules.
    ///
    /// Errors: [`CrdtError::InvalidSpec`] on `mounts.target` or `mounts.source`.
    pub fn validate(&self) -> Result<(), CrdtError> {
        if let Err(reason) = check_path(&self.target) {
            return Err(invalid(
                "mounts.target",
                format!("target {:?} {reason}", self.target),
            ));
        }
        match self.kind {
            MountKind::Volume => validate_volume_name(&self.source).map_err(|_| {
                invalid(
                    "mounts.source",
                    format!(
                        "volume name {:?}: 1-63 characters of letters, digits, '_', '.', '-', \
                         starting with a letter or digit",
                        self.source
                    ),
                )
            }),
            MountKind::Bind => check_path(&self.source).map_err(|reason| {
                invalid(
                    "mounts.source",
                    format!("host path {:?} {reason}", self.source),
                )
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MountRepr {
    Text(String),
    Fields {
        #[serde(rename = "type")]
        kind: MountKind,
        source: String,
        target: String,
        #[serde(default)]
        readonly: bool,
    },
}

impl TryFrom<MountRepr> for Mount {
    type Error = CrdtError;
    fn try_from(repr: MountRepr) -> Result<Self, Self::Error> {
        match repr {
            MountRepr::Text(text) => Mount::parse(&text),
            // Checked with the rest of the spec (`ServiceSpec::validate`).
            MountRepr::Fields {
                kind,
                source,
                target,
                readonly,
            } => Ok(Mount {
                kind,
                source,
                target,
                readonly,
            }),
        }
    }
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be an absolute path");
    }
    if path == "/" {
        return Err("must not be /");
    }
    if path.len() > MAX_MOUNT_PATH_BYTES || path.contains(['\0', ',', ':']) {
        return Err("must be at most 4096 bytes without NUL, ',' or ':'");
    }
    if path.ends_with('/')
        || path
            .split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be normalised (no '.', '..', '//' or trailing '/')");
    }
    Ok(())
}

/// Checks a set of mounts: at most [`MAX_MOUNTS`], each valid, no two with one target.
///
/// Errors: [`CrdtError::InvalidSpec`] on field `mounts`.
pub fn validate_mounts(mounts: &[Mount]) -> Result<(), CrdtError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(invalid("mounts", format!("at most {MAX_MOUNTS} mounts")));
    }
    let mut targets = std::collections::BTreeSet::new();
    for mount in mounts {
        mount.validate()?;
        if !targets.insert(mount.target.as_str()) {
            return Err(invalid(
                "mounts.target",
                format!("two mounts at {}", mount.target),
            ));
        }
    }
    Ok(())
}

/// Checks a volume's name: 1 to 63 bytes of ASCII letters, digits, `_`, `.`, `-`, starting
/// with a letter or digit (Docker's volume name rule, shorter so that the node's Docker
/// volume name, which adds a prefix and the node, stays readable).
///
/// Errors: [`CrdtError::InvalidSpec`] on field `volume.name`.
pub fn validate_volume_name(name: &str) -> Result<(), CrdtError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_VOLUME_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "volume.name",
            format!(
                "invalid volume name {name:?}: 1-63 characters of letters, digits, '_', '.', \
                 '-', starting with a letter or digit"
            ),
        ))
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CrdtError {
    CrdtError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: CrdtError) -> &'static str {
        match e {
            CrdtError::InvalidSpec { field, .. } => field,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn parses_docker_mount_syntax() {
        let m = Mount::parse("type=volume,source=data,target=/data,readonly").expect("parse");
        assert_eq!(
            m,
            Mount {
                kind: MountKind::Volume,
                source: "data".into(),
                target: "/data".into(),
                readonly: true
            }
        );
        let m = Mount::parse("src=data,dst=/var/lib/x").expect("parse");
        assert_eq!((m.kind, m.readonly), (MountKind::Volume, false));
        let m = Mount::parse("type=bind,source=/srv/logs,target=/logs,ro=false").expect("parse");
        assert_eq!((m.kind, m.readonly), (MountKind::Bind, false));
    }

    #[test]
    fn refuses_bad_mounts_with_the_field() {
        for (text, want) in [
            ("type=tmpfs,source=a,target=/a", "mounts"),
            ("source=a", "mounts"),
            ("source=a,target=/a,readonly=maybe", "mounts"),
            ("source=a,target=/a,color=red", "mounts"),
            ("source=a,target=data", "mounts.target"),
            ("source=a,target=/", "mounts.target"),
            ("source=a,target=/a/../etc", "mounts.target"),
            ("source=a,target=/a/", "mounts.target"),
            ("source=-a,target=/a", "mounts.source"),
            ("source=a/b,target=/a", "mounts.source"),
            ("type=bind,source=relative,target=/a", "mounts.source"),
        ] {
            let err = Mount::parse(text).expect_err(text);
            assert_eq!(field(err), want, "{text}");
        }
    }

    #[test]
    fn reads_from_the_flag_text_or_the_object() {
        let text: Mount =
            serde_json::from_str(r#""type=volume,source=data,target=/data,ro""#).expect("text");
        let json = serde_json::to_string(&text).expect("ser");
        let object: Mount = serde_json::from_str(&json).expect("object");
        assert_eq!(text, object);
        assert!(text.readonly);
        assert!(serde_json::from_str::<Mount>(r#""source=data""#).is_err());
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let a = Mount::parse("source=a,target=/data").expect("a");
        let b = Mount::parse("source=b,target=/data").expect("b");
        assert_eq!(
            field(validate_mounts(&[a.clone(), b]).expect_err("dup")),
            "mounts.target"
        );
        assert!(validate_mounts(&[a]).is_ok());
    }

    #[test]
    fn volume_records_accept_only_the_local_driver() {
        let mut v = Volume {
            name: "data".into(),
            driver: LOCAL_DRIVER.into(),
            node: NodeId("12D3KooWb".into()),
            options: BTreeMap::new(),
        };
        assert!(v.validate().is_ok());
        v.driver = "nfs".into();
        assert_eq!(field(v.validate().expect_err("driver")), "volume.driver");
        v.driver = LOCAL_DRIVER.into();
        v.name = ".hidden".into();
        assert_eq!(field(v.validate().expect_err("name")), "volume.name");
    }
}
