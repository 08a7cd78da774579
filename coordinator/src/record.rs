//! What a coordinator writes to its decision log.

use serde::{Deserialize, Serialize};
use twopc_common::{NodeId, TxnId};

/// A coordinator log record. Append-only enum: never reorder variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorRecord {
    /// Synced once per start: txids minted in this epoch are new.
    Epoch(u64),
    /// The commit decision, synced before anyone hears "Committed".
    Commit { txid: TxnId, participants: Vec<NodeId> },
    /// Every participant acked the commit (written lazily; losing it only
    /// means the commit is re-driven).
    End { txid: TxnId },
    /// A participant refused the commit because an operator had forced it
    /// to abort (heuristic-mixed). Synced; kept for operators.
    Mixed { txid: TxnId, participant: NodeId },
}
