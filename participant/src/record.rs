//! What a participant writes to its log.

use serde::{Deserialize, Serialize};
use twopc_common::{Key, NodeId, TxnId, Versioned};

use crate::forgotten::Horizons;

/// A prepared transaction, synced before the participant votes Yes. It
/// carries the final state of every key it writes (version already
/// bumped: locks are held from prepare to apply, so no other transaction
/// can change those keys in between) and every key it locks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreparedRecord {
    pub txid: TxnId,
    pub writes: Vec<(Key, Versioned)>,
    pub locks: Vec<Key>,
    pub participants: Vec<NodeId>,
    /// Wall-clock milliseconds when prepared (for operators: age).
    pub prepared_at_ms: u64,
}

/// The decision a participant applied, remembered so duplicate or late
/// requests for the txid are answered consistently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    Committed,
    Aborted,
}

/// An outcome an operator forced on an in-doubt transaction (`twopc
/// admin resolve`). Synced, and kept until an operator forgets it (`twopc
/// admin forget`): it must outlive every restart so a later conflicting
/// decision is reported, never hidden. The latest record of a txid wins
/// at replay.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeuristicRecord {
    pub txid: TxnId,
    pub decision: Decision,
    pub at_ms: u64,
    pub reason: String,
    /// The coordinator's decision, when it turned out to be the other one.
    pub conflict: Option<Decision>,
}

/// A participant log record. Append-only enum: never reorder variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParticipantRecord {
    Prepared(PreparedRecord),
    Done {
        txid: TxnId,
        decision: Decision,
    },
    Heuristic(HeuristicRecord),
    /// How far each coordinator's decisions were trimmed from this log
    /// (see [`crate::forgotten`]); the newest record holds them all.
    Forgotten(Horizons),
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Committed => "commit",
            Decision::Aborted => "abort",
        }
    }
}
