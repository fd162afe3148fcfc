//! A member's availability for tasks (`node update NAME --availability active|pause|drain`,
//! as Docker Swarm has it), stored as `members.<id>.availability`.
//!
//! It is separate from the admission state ([`crate::MemberState`]): admission says whether
//! a peer belongs to the cluster at all (a removed member is removed whatever its
//! availability), availability is the operator's maintenance switch on a member that does.
//! The two are written by different people at different times and merge on their own.

use serde::{Deserialize, Serialize};

/// Whether a member takes tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Takes new tasks and keeps its own (the default, and what a record without the key
    /// reads as).
    #[default]
    Active,
    /// Keeps the tasks it runs; the scheduler places nothing new on it.
    Pause,
    /// Places nothing new on it, and its tasks move away start-first (each replacement
    /// confirmed running and healthy before the old copy stops); some stay (see
    /// `warren_core::availability`).
    Drain,
}

impl Availability {
    /// `active`, `pause` or `drain`: the word in the document, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }

    /// Reads a word written by [`Availability::as_str`]; `None` for any other (the API
    /// refuses it; the document reads an unknown word, e.g. a newer peer's, as `active`).
    pub fn parse(word: &str) -> Option<Availability> {
        match word {
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            _ => None,
        }
    }
}

impl std::fmt::Display for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_ones_are_refused() {
        for a in [
            Availability::Active,
            Availability::Pause,
            Availability::Drain,
        ] {
            assert_eq!(Availability::parse(a.as_str()), Some(a));
            assert_eq!(serde_json::to_string(&a).expect("json"), format!("\"{a}\""));
        }
        assert_eq!(Availability::parse("drained"), None);
        assert_eq!(Availability::default(), Availability::Active);
    }
}
