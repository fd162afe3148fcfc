//! The topology file of `warren-testnet up --topology FILE`: node names and the faults in
//! force once the cluster has formed. JSON:
//!
//! ```json
//! {
//!   "nodes": ["gateway", "cam-1", "cam-2", "cam-3"],
//!   "partition": [["gateway", "cam-1"], ["cam-2", "cam-3"]],
//!   "loss": { "cam-3": 5 }
//! }
//! ```
//!
//! `nodes` (required) names the nodes, in order (node `i` gets the `i`-th address). Every
//! node stands on one bridge; `partition` (optional, groups of names; unnamed nodes form one
//! more group) and `loss` (optional, name → percent) are applied, and logged as faults,
//! after the cluster has formed, and `heal` removes them like any other fault.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A parsed topology file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Node names, in order.
    pub nodes: Vec<String>,
    /// Initial partition: groups of node names.
    #[serde(default)]
    pub partition: Vec<Vec<String>>,
    /// Initial loss: node name → percent.
    #[serde(default)]
    pub loss: BTreeMap<String, f64>,
}

impl Topology {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks a topology.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if t.nodes.is_empty() {
            return Err("`nodes` is empty".into());
        }
        let known = |n: &String| t.nodes.contains(n);
        for n in t.partition.iter().flatten().chain(t.loss.keys()) {
            if !known(n) {
                return Err(format!("`{n}` is not in `nodes`"));
            }
        }
        Ok(t)
    }

    /// Index of node `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let t = Topology::parse(
            r#"{"nodes": ["gateway", "cam-1", "cam-2", "cam-3"],
                "partition": [["gateway", "cam-1"], ["cam-2", "cam-3"]],
                "loss": {"cam-3": 5}}"#,
        );
        let t = t.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.nodes.len(), 4);
        assert_eq!(t.index("cam-2"), Some(2));
        assert_eq!(t.loss.get("cam-3"), Some(&5.0));
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!(Topology::parse(r#"{"nodes": ["a"], "partition": [["b"]]}"#).is_err());
        assert!(Topology::parse(r#"{"nodes": []}"#).is_err());
        assert!(Topology::parse(r#"{"nodes": ["a"], "links": []}"#).is_err());
    }
}
