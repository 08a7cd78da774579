//! What a coordinator writes to its decision log.

use serde::{Deserialize, Serialize};
use twopc_common::{NodeId, TxnId};

/// A coordinator log record. Append-only enum: never reorder variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorRecord {
    /// Synced once per start: txids minted in this epoch are new. Every
    /// one is kept (up to `epochs::MAX_KEPT_EPOCHS`): presumed abort holds
    /// only for txids of epochs this log ran.
    Epoch(u64),
    /// The commit decision, synced before anyone hears "Committed".
    Commit { txid: TxnId, participants: Vec<NodeId> },
    /// Every participant acked the commit (written lazily; losing it only
    /// means the commit is re-driven).
    End { txid: TxnId },
    /// A participant refused the commit because an operator had forced it
    /// to abort (heuristic-mixed). Synced; kept until an operator forgets it.
    Mixed { txid: TxnId, participant: NodeId },
    /// Written by the first start that keeps every epoch: epochs up to
    /// `legacy_up_to` ran before (a log then kept only its last Epoch
    /// record) and are taken as this log's; 0 for a log begun keeping them.
    EpochsKept { legacy_up_to: u64 },
    /// Ended transactions of `epoch` up to seq `up_to` had their records
    /// trimmed: their outcomes are unknown here, never presumed aborted.
    /// (One per epoch is current; a later one for the same epoch replaces
    /// it.)
    Forgotten { epoch: u64, up_to: u64 },
}
