//! How a member looks from one node. Decided by SWIM ([`super::swim`]).

use serde::Serialize;

/// How a member looks from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Answering probes (or heard from directly within one probe period).
    Alive,
    /// A probe went unanswered and the suspicion is not refuted yet; it keeps its tasks.
    Suspect,
    /// Its suspicion ran out unrefuted: its tasks are rescheduled (by their partition policy).
    Down,
}
