//! Errors that cross the wire. Each one says what was wrong and loses
//! nothing: a request that fails with one of these changed no state.

use crate::ids::TxnId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum ServiceError {
    /// The request was malformed or exceeded a limit.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The txid is not one this process knows (or it already finished).
    #[error("unknown transaction {0}")]
    UnknownTxn(TxnId),
    /// The txid belongs to another coordinator.
    #[error("transaction {txid} belongs to coordinator {owner}, not this one")]
    WrongCoordinator { txid: TxnId, owner: String },
    /// The sender routes keys with a different ring: cluster files differ.
    #[error("cluster configuration mismatch: {0}")]
    ConfigMismatch(String),
    /// A peer this request needs could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server's storage failed; the request had no effect.
    #[error("storage error: {0}")]
    Storage(String),
    /// Too much in flight; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A participant had been forced (heuristically) to the other outcome.
    #[error("heuristic mismatch: {txid} was forced to {forced} at {participant}")]
    HeuristicMixed { txid: TxnId, participant: String, forced: String },
    /// The admin token was missing or wrong.
    #[error("unauthorised: {0}")]
    Unauthorised(String),
    // New variants go last: errors cross the wire by variant position, so
    // one inserted earlier made older processes misread every later one.
    /// The txid is of an epoch its coordinator's log never ran: another
    /// instance with that coordinator id minted it, so its outcome cannot
    /// be known from this log (it is not presumed aborted).
    #[error(
        "{txid} is from epoch {}, which this coordinator's log never ran: another instance of {} minted it \
         (another data directory, or another process given its id), it is older than every start this log \
         keeps, or no process minted it (a mistyped id); its outcome cannot be known here. Start the instance \
         whose log has it; if a participant still holds it in doubt, decide it with `twopc admin resolve` (`twopc admin in-doubt` lists them; if none does, \
         nothing is left to decide)",
        txid.epoch,
        txid.coordinator
    )]
    ForeignEpoch { txid: TxnId },
    /// The outcome of `txid` was forgotten: the coordinator keeps only
    /// its latest outcomes (in memory, and in its log across restarts:
    /// how far its trimmed ones reach is logged per epoch), and no
    /// participant remembers applying it (they keep theirs only so long
    /// too). Aborted and committed are both possible; answering "aborted"
    /// (presumed abort) was wrong for transactions that committed long
    /// ago (a soak test: two committed transactions were "aborted" after
    /// 476,000 more commits).
    #[error(
        "the outcome of {txid} is no longer remembered: its coordinator keeps only its latest outcomes, and no \
         participant remembers applying it. It may have committed or aborted: read its keys to know"
    )]
    Forgotten { txid: TxnId },
    /// The coordinator is stopping (a stop signal came): it takes no new
    /// transaction or commit, and nothing of this request was done. A
    /// client with other coordinators moves on to the next.
    #[error("unavailable: {0}")]
    Stopping(String),
}

impl ServiceError {
    /// Whether the same request may succeed later unchanged: a peer it
    /// needs is unavailable (down, paused, or a read's writer still in
    /// doubt) or the server is overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            // Unless another process answers at the address (a wrong
            // cluster file): that fails the same way again.
            ServiceError::Unavailable(detail) => !crate::service::names_wrong_process(detail),
            ServiceError::Overloaded(_) | ServiceError::Stopping(_) => true,
            _ => false,
        }
    }
}
