//! Placement in a service spec: constraints, spread preferences and a cap per node
//! (`--constraint`, `--placement-pref`, `--max-replicas-per-node`), in Docker Swarm's syntax.
//!
//! This module holds the types and their one parser; what a constraint means for a member
//! (the matching rule) and how the scheduler uses them live in `warren-core`
//! (`warren_core::placement`, `warren_core::core::plan_observed`).
//!
//! ```
//! use warren_crdt::{Constraint, ConstraintKey, ConstraintOp, SpreadPreference};
//!
//! let c: Constraint = "node.labels.zone==north".parse().unwrap();
//! assert_eq!(c.key, ConstraintKey::Label("zone".into()));
//! assert_eq!(c.op, ConstraintOp::Eq);
//! assert_eq!(c.to_string(), "node.labels.zone==north");
//! assert!("node.labels.zone=north".parse::<Constraint>().is_err());
//! let p: SpreadPreference = "spread=node.labels.zone".parse().unwrap();
//! assert_eq!(p.label, "zone");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::CrdtError;

/// Most constraints in one spec.
pub const MAX_CONSTRAINTS: usize = 32;
/// Most spread preferences in one spec.
pub const MAX_PREFERENCES: usize = 8;
/// Longest constraint or preference text, in bytes.
pub const MAX_CONSTRAINT_BYTES: usize = 512;
/// Longest node label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 63;
/// Longest node label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 255;
/// Most labels (and most capabilities) on one member.
pub const MAX_NODE_LABELS: usize = 64;

/// What a constraint looks at on a member.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConstraintKey {
    /// `node.name` (Swarm's `node.hostname` is accepted too): the member's `--name`.
    Name,
    /// `node.id`: the member's whole id (its PeerId).
    Id,
    /// `node.labels.KEY`: the value of one of the member's labels.
    Label(String),
    /// `node.arch` (or `node.platform.arch`): the member's CPU architecture in Docker's
    /// words (`amd64`, `arm64`, ...).
    Arch,
    /// `node.os` (or `node.platform.os`): the member's operating system (`linux`, ...).
    Os,
    /// `node.capabilities`: whether the member announced a capability (`--capability`).
    Capability,
    /// A constraint this node could not read (written by a newer peer, or invalid): it keeps
    /// the text and the reason; [`crate::ServiceSpec::validate`] refuses it and it matches
    /// no member, so a slot it governs waits rather than run anywhere.
    Unreadable {
        /// The text as written.
        text: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// A constraint's operator: `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConstraintOp {
    /// `==`: the member's value equals the constraint's (ASCII case-insensitive, as Swarm).
    Eq,
    /// `!=`: it does not (a member lacking the label matches, as in Swarm).
    NotEq,
}

impl ConstraintOp {
    /// `==` or `!=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintOp::Eq => "==",
            ConstraintOp::NotEq => "!=",
        }
    }
}

/// One placement constraint, `KEY==VALUE` or `KEY!=VALUE` (Swarm's syntax). Stored and sent
/// as its text; parsed by [`FromStr`], the one parser (the API's validation and the
/// scheduler both read this type).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Constraint {
    /// What it looks at.
    pub key: ConstraintKey,
    /// `==` or `!=`.
    pub op: ConstraintOp,
    /// The value compared, trimmed of surrounding spaces.
    pub value: String,
}

/// A label key a constraint or a member may use: 1 to 63 bytes of ASCII letters, digits,
/// `.`, `_`, `-`, starting with a letter, digit or `_`.
pub fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_LABEL_KEY_BYTES
        && !key.starts_with(['.', '-'])
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks a node label (`warren-node up --label`, `node update --label-add`): the key as
/// [`valid_label_key`] says, the value at most 255 bytes without control characters or
/// surrounding spaces (a constraint's value is trimmed, so such a value could never match).
///
/// Errors: [`CrdtError::InvalidSpec`] on field `labels`, naming the rule.
pub fn validate_label(key: &str, value: &str) -> Result<(), CrdtError> {
    if !valid_label_key(key) {
        return Err(CrdtError::InvalidSpec {
            field: "labels",
            reason: format!(
                "invalid label key {key:?}: 1-{MAX_LABEL_KEY_BYTES} letters, digits, '.', '_' \
                 or '-', not starting with '.' or '-'"
            ),
        });
    }
    if value.len() > MAX_LABEL_VALUE_BYTES
        || value.chars().any(char::is_control)
        || value.trim() != value
    {
        return Err(CrdtError::InvalidSpec {
            field: "labels",
            reason: format!(
                "invalid value {value:?} of label {key:?}: at most {MAX_LABEL_VALUE_BYTES} \
                 bytes, no control characters, no surrounding spaces"
            ),
        });
    }
    Ok(())
}

fn parse_key(key: &str) -> Result<ConstraintKey, String> {
    if let Some(label) = key.strip_prefix("node.labels.") {
        return if valid_label_key(label) {
            Ok(ConstraintKey::Label(label.to_string()))
        } else {
            Err(format!(
                "invalid label key {label:?}: 1-{MAX_LABEL_KEY_BYTES} letters, digits, '.', '_' \
                 or '-'"
            ))
        };
    }
    match key.to_ascii_lowercase().as_str() {
        "node.name" | "node.hostname" => Ok(ConstraintKey::Name),
        "node.id" => Ok(ConstraintKey::Id),
        "node.arch" | "node.platform.arch" => Ok(ConstraintKey::Arch),
        "node.os" | "node.platform.os" => Ok(ConstraintKey::Os),
        "node.capabilities" | "node.capability" => Ok(ConstraintKey::Capability),
        _ => Err(format!(
            "unknown key {key:?}: one of node.name, node.id, node.labels.KEY, node.arch, \
             node.os, node.capabilities"
        )),
    }
}

impl FromStr for Constraint {
    type Err = CrdtError;

    /// Parses `KEY==VALUE` or `KEY!=VALUE`; spaces around the key and the value are
    /// trimmed.
    ///
    /// Errors: [`CrdtError::InvalidSpec`] on field `placement.constraints`: no operator (`=`
    /// alone is not one), an unknown key, an empty, over-long or control-character value.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_constraint(text).map_err(|reason| CrdtError::InvalidSpec {
            field: "placement.constraints",
            reason: format!("constraint {text:?}: {reason}"),
        })
    }
}

fn parse_constraint(text: &str) -> Result<Constraint, String> {
    if text.len() > MAX_CONSTRAINT_BYTES {
        return Err(format!("longer than {MAX_CONSTRAINT_BYTES} bytes"));
    }
    // The first operator in the text splits it: `a==b!=c` compares `a` with `b!=c`.
    let eq = text.find("==");
    let ne = text.find("!=");
    let (at, op) = match (eq, ne) {
        (Some(e), Some(n)) if n < e => (n, ConstraintOp::NotEq),
        (Some(e), _) => (e, ConstraintOp::Eq),
        (None, Some(n)) => (n, ConstraintOp::NotEq),
        (None, None) => {
            return Err("expected KEY==VALUE or KEY!=VALUE (the operator is == or !=)".into())
        }
    };
    let key = parse_key(text[..at].trim())?;
    let value = text[at + 2..].trim();
    if value.is_empty() {
        return Err("the value is empty".into());
    }
    if value.chars().any(char::is_control) {
        return Err("the value holds a control character".into());
    }
    if value.starts_with('=') {
        return Err("expected KEY==VALUE or KEY!=VALUE (the operator is == or !=)".into());
    }
    Ok(Constraint {
        key,
        op,
        value: value.to_string(),
    })
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            ConstraintKey::Name => "node.name",
            ConstraintKey::Id => "node.id",
            ConstraintKey::Label(label) => {
                return write!(f, "node.labels.{label}{}{}", self.op.as_str(), self.value)
            }
            ConstraintKey::Arch => "node.arch",
            ConstraintKey::Os => "node.os",
            ConstraintKey::Capability => "node.capabilities",
            ConstraintKey::Unreadable { text, .. } => return f.write_str(text),
        };
        write!(f, "{key}{}{}", self.op.as_str(), self.value)
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    /// Reads the text; a text that does not parse becomes [`ConstraintKey::Unreadable`]
    /// (never an error: a spec from a newer peer must still read, and its unknown
    /// constraint must not vanish).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(parse_constraint(&text).unwrap_or_else(|reason| Constraint {
            key: ConstraintKey::Unreadable {
                text: text.clone(),
                reason,
            },
            op: ConstraintOp::Eq,
            value: String::new(),
        }))
    }
}

/// A spread preference, `spread=node.labels.KEY` (Swarm's `--placement-pref`): replicas are
/// spread evenly over the values of the label before they are spread over nodes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpreadPreference {
    /// The label key whose values the replicas spread over. Empty only for a preference
    /// this node could not read (see [`SpreadPreference`]'s `Deserialize`), which spreads
    /// nothing and fails validation.
    pub label: String,
}

impl FromStr for SpreadPreference {
    type Err = CrdtError;

    /// Parses `spread=node.labels.KEY`.
    ///
    /// Errors: [`CrdtError::InvalidSpec`] on field `placement.preferences`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| CrdtError::InvalidSpec {
            field: "placement.preferences",
            reason: format!("preference {text:?}: {reason}"),
        };
        let Some((strategy, target)) = text.split_once('=') else {
            return Err(invalid("expected spread=node.labels.KEY".into()));
        };
        if strategy.trim() != "spread" {
            return Err(invalid(format!(
                "unknown strategy {:?}: only spread is known",
                strategy.trim()
            )));
        }
        match target.trim().strip_prefix("node.labels.") {
            Some(label) if valid_label_key(label) => Ok(SpreadPreference {
                label: label.to_string(),
            }),
            _ => Err(invalid(
                "spread takes a node label: spread=node.labels.KEY".into(),
            )),
        }
    }
}

impl fmt::Display for SpreadPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spread=node.labels.{}", self.label)
    }
}

impl Serialize for SpreadPreference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpreadPreference {
    /// Reads the text; one that does not parse becomes a preference with an empty label,
    /// which spreads nothing (a preference is soft) and fails validation.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(text.parse().unwrap_or(SpreadPreference {
            label: String::new(),
        }))
    }
}

/// Where a service's replicas may go and how they spread: `services.<name>.spec.placement`.
/// The default places anywhere, spread over nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// Every one must hold for a member to take a replica (`--constraint`, repeatable).
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Spread over label values, in order, before spreading over nodes
    /// (`--placement-pref`, repeatable).
    #[serde(default)]
    pub preferences: Vec<SpreadPreference>,
    /// Most replicas of the service on one member (`--max-replicas-per-node`); `None`: no
    /// limit. At least 1.
    #[serde(default)]
    pub max_replicas_per_node: Option<u32>,
}

impl Placement {
    /// Whether it constrains nothing (the default).
    pub fn is_default(&self) -> bool {
        *self == Placement::default()
    }

    /// Checks the counts, that every constraint and preference parsed, and that the cap is
    /// at least 1.
    ///
    /// Errors: [`CrdtError::InvalidSpec`] on field `placement.constraints`,
    /// `placement.preferences` or `placement.max_replicas_per_node`, naming the rule.
    pub fn validate(&self) -> Result<(), CrdtError> {
        if self.constraints.len() > MAX_CONSTRAINTS {
            return Err(CrdtError::InvalidSpec {
                field: "placement.constraints",
                reason: format!("at most {MAX_CONSTRAINTS} constraints"),
            });
        }
        for c in &self.constraints {
            if let ConstraintKey::Unreadable { text, reason } = &c.key {
                return Err(CrdtError::InvalidSpec {
                    field: "placement.constraints",
                    reason: format!("constraint {text:?}: {reason}"),
                });
            }
        }
        if self.preferences.len() > MAX_PREFERENCES {
            return Err(CrdtError::InvalidSpec {
                field: "placement.preferences",
                reason: format!("at most {MAX_PREFERENCES} preferences"),
            });
        }
        if self.preferences.iter().any(|p| !valid_label_key(&p.label)) {
            return Err(CrdtError::InvalidSpec {
                field: "placement.preferences",
                reason: "a preference is spread=node.labels.KEY".into(),
            });
        }
        if self.max_replicas_per_node == Some(0) {
            return Err(CrdtError::InvalidSpec {
                field: "placement.max_replicas_per_node",
                reason: "must be at least 1 (leave it out for no limit)".into(),
            });
        }
        Ok(())
    }
}

/// A member's CPU architecture and operating system, in Docker's words (`amd64`, `arm64`;
/// `linux`), announced by the member itself; `unknown` in records written before members
/// announced them (an `unknown` value never matches `==`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    pub arch: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
}

/// The value of an architecture or OS nobody announced.
pub const UNKNOWN_PLATFORM: &str = "unknown";

impl Default for Platform {
    fn default() -> Self {
        Platform {
            arch: UNKNOWN_PLATFORM.into(),
            os: UNKNOWN_PLATFORM.into(),
        }
    }
}

impl Platform {
    /// Rust's names (`std::env::consts::{ARCH, OS}`) in Docker's words: `x86_64` is
    /// `amd64`, `aarch64` is `arm64`, `x86` is `386`, `arm` is `arm`, `powerpc64` is
    /// `ppc64` (big-endian targets are rare enough to keep Rust's word), `loongarch64` is
    /// `loong64`; an OS name is kept (`linux`, `windows`, `macos` → `darwin`).
    pub fn from_rust(arch: &str, os: &str) -> Platform {
        let arch = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        let os = match os {
            "macos" => "darwin",
            other => other,
        };
        Platform {
            arch: arch.to_string(),
            os: os.to_string(),
        }
    }

    /// The platform this binary was built for.
    pub fn current() -> Platform {
        Platform::from_rust(std::env::consts::ARCH, std::env::consts::OS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_parse_in_swarms_syntax_and_print_back() {
        for (text, key, op, value) in [
            (
                "node.labels.zone==north",
                ConstraintKey::Label("zone".into()),
                ConstraintOp::Eq,
                "north",
            ),
            (
                " node.labels.zone != north ",
                ConstraintKey::Label("zone".into()),
                ConstraintOp::NotEq,
                "north",
            ),
            ("node.name==n1", ConstraintKey::Name, ConstraintOp::Eq, "n1"),
            (
                "node.hostname==n1",
                ConstraintKey::Name,
                ConstraintOp::Eq,
                "n1",
            ),
            (
                "node.id!=12D3",
                ConstraintKey::Id,
                ConstraintOp::NotEq,
                "12D3",
            ),
            (
                "node.arch==arm64",
                ConstraintKey::Arch,
                ConstraintOp::Eq,
                "arm64",
            ),
            (
                "node.platform.os==linux",
                ConstraintKey::Os,
                ConstraintOp::Eq,
                "linux",
            ),
            (
                "NODE.CAPABILITIES==gpu",
                ConstraintKey::Capability,
                ConstraintOp::Eq,
                "gpu",
            ),
        ] {
            let c: Constraint = text.parse().expect(text);
            assert_eq!(
                (&c.key, c.op, c.value.as_str()),
                (&key, op, value),
                "{text}"
            );
            let again: Constraint = c.to_string().parse().expect("round trip");
            assert_eq!(again, c);
        }
        // The first operator splits.
        let c: Constraint = "node.labels.a==b!=c".parse().expect("first op");
        assert_eq!((c.op, c.value.as_str()), (ConstraintOp::Eq, "b!=c"));
    }

    #[test]
    fn bad_constraints_say_what_is_wrong() {
        for (text, says) in [
            ("node.labels.zone=north", "operator"),
            ("node.labels.zone===north", "operator"),
            ("node.labels.zone", "operator"),
            ("node.role==manager", "unknown key"),
            ("engine.labels.x==y", "unknown key"),
            ("node.labels.==x", "invalid label key"),
            ("node.labels.a b==x", "invalid label key"),
            ("node.labels.zone==", "empty"),
            ("node.labels.zone==a\u{7}", "control"),
        ] {
            let err = text.parse::<Constraint>().expect_err(text).to_string();
            assert!(
                err.contains(says) && err.contains("placement.constraints"),
                "{text}: {err}"
            );
        }
        assert!("x".repeat(600).parse::<Constraint>().is_err());
    }

    #[test]
    fn an_unreadable_constraint_survives_a_read_and_fails_validation() {
        let placement: Placement = serde_json::from_str(
            r#"{"constraints":["node.role==manager","node.labels.zone==a"],"preferences":["spread=node.labels.zone","pack=x"]}"#,
        )
        .expect("reads");
        assert_eq!(placement.constraints.len(), 2);
        assert!(matches!(
            placement.constraints[0].key,
            ConstraintKey::Unreadable { .. }
        ));
        assert_eq!(placement.constraints[0].to_string(), "node.role==manager");
        let err = placement.validate().expect_err("unknown key").to_string();
        assert!(err.contains("unknown key \"node.role\""), "{err}");
        let json = serde_json::to_string(&placement).expect("writes");
        assert!(json.contains("node.role==manager"), "{json}");
        let fine = Placement {
            constraints: vec!["node.labels.zone==a".parse().expect("c")],
            preferences: vec!["spread=node.labels.zone".parse().expect("p")],
            max_replicas_per_node: Some(2),
        };
        fine.validate().expect("valid");
        let back: Placement =
            serde_json::from_str(&serde_json::to_string(&fine).expect("json")).expect("read");
        assert_eq!(back, fine);
        // A preference that does not parse spreads nothing and is refused.
        assert!(Placement {
            preferences: placement.preferences.clone(),
            ..Placement::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn placement_limits() {
        let zero = Placement {
            max_replicas_per_node: Some(0),
            ..Placement::default()
        };
        let err = zero.validate().expect_err("max 0").to_string();
        assert!(
            err.contains("max_replicas_per_node") && err.contains("at least 1"),
            "{err}"
        );
        let many = Placement {
            constraints: vec!["node.os==linux".parse().expect("c"); MAX_CONSTRAINTS + 1],
            ..Placement::default()
        };
        assert!(many.validate().is_err());
        for bad in [
            "pack=node.labels.zone",
            "spread=node.name",
            "spread",
            "spread=node.labels.",
        ] {
            assert!(bad.parse::<SpreadPreference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_checked_and_platforms_use_dockers_words() {
        validate_label("zone", "north").expect("fine");
        validate_label("com.example.rack-1", "").expect("empty value is a value");
        for (k, v) in [
            ("", "x"),
            ("a b", "x"),
            (".x", "x"),
            ("k", " x"),
            ("k", "a\nb"),
        ] {
            assert!(validate_label(k, v).is_err(), "{k:?}={v:?}");
        }
        assert!(validate_label(&"k".repeat(64), "v").is_err());
        assert_eq!(
            Platform::from_rust("x86_64", "linux"),
            Platform {
                arch: "amd64".into(),
                os: "linux".into()
            }
        );
        assert_eq!(Platform::from_rust("aarch64", "linux").arch, "arm64");
        assert_eq!(Platform::from_rust("riscv64", "linux").arch, "riscv64");
        assert_eq!(Platform::default().arch, UNKNOWN_PLATFORM);
    }
}
