//! What operators see: process statistics (open to anyone) and the admin
//! requests and views behind `twopc admin` (token required).

use crate::config::ClusterConfig;
use crate::ids::{NodeId, TxnId};
use crate::txn::Key;
use serde::{Deserialize, Serialize};

/// Environment variable holding the admin token (overrides the cluster
/// file's `admin_token`).
pub const ADMIN_TOKEN_ENV: &str = "TWOPC_ADMIN_TOKEN";
/// Most entries one admin listing returns.
pub const MAX_ADMIN_LIST: usize = 10_000;

/// One process's counters, served by `stats()` without a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub id: String,
    /// "coordinator" or "participant".
    pub role: String,
    /// Coordinator: the current epoch.
    pub epoch: Option<u64>,
    /// The process's clock when it answered (ms since the Unix epoch).
    pub now_ms: u64,
    /// Participant: prepared transactions waiting for an outcome.
    pub in_doubt: usize,
    /// Participant: when the oldest of them prepared.
    pub oldest_prepared_ms: Option<u64>,
    /// Participant: keys locked.
    pub locks: usize,
    /// Coordinator: transactions in commit (any phase).
    pub active: usize,
    /// Coordinator: ids begun and neither committed nor aborted yet
    /// (clients' spares included; expired after a minute unused).
    pub open: usize,
    /// Coordinator: committed transactions not yet acked by every
    /// participant, and one-phase commits that may have reached their
    /// participant and are unanswered.
    pub undelivered_commits: usize,
    /// Heuristic decisions recorded here (participant) and mismatches seen.
    pub heuristics: usize,
    pub heuristic_mixed: usize,
    pub wal_syncs: u64,
    pub wal_batches: u64,
    pub wal_groups: u64,
    pub wal_records: u64,
    /// Participant: reads of its committed data that failed in storage
    /// (damaged data files, most often); its log names the key and error.
    #[serde(default)]
    pub storage_errors: u64,
    /// Coordinator: participants whose connections it refuses because
    /// their data is not the data it worked with, each as "ID: why".
    #[serde(default)]
    pub refused_participants: Vec<String>,
}

/// An admin operation, sent with the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Checks the token; changes nothing.
    Ping,
    /// Participant: prepared transactions; coordinator: transactions in commit.
    InDoubt,
    /// What this process knows of one transaction.
    Show(TxnId),
    /// Participant: the lock table (or one key's lock).
    Locks { key: Option<Key> },
    /// Run a recovery pass now: participants ask every in-doubt outcome,
    /// the coordinator re-sends every undelivered commit.
    Recover,
    /// Participant only: force an in-doubt transaction's outcome
    /// (heuristic). The CLI checks with the coordinator first.
    Resolve { txid: TxnId, commit: bool, reason: String },
    /// Coordinator only: the cluster (token removed), for `--coordinator`.
    Cluster,
    /// Participant: every outcome forced here by an operator (kept until
    /// forgotten), agreeing with the coordinator or not. Coordinator: every
    /// heuristic-mixed finding (a commit some participant refused, forced
    /// to abort), until forgotten.
    Heuristics,
    /// An operator acknowledges a forced outcome (`twopc admin forget`):
    /// a participant drops its heuristic record of the txid, a coordinator
    /// its heuristic-mixed findings. The CLI checks first that the record
    /// is settled (see `twopc admin forget --help`). New variants go last:
    /// requests cross the wire by variant position.
    Forget(TxnId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    Pong,
    Txns(Vec<TxnView>),
    Txn(Box<TxnView>),
    Locks(Vec<LockView>),
    Recovered {
        asked: usize,
    },
    /// The cluster file's text, token removed. Text, not the struct: the
    /// struct's serde attributes are written for TOML (an omitted token),
    /// which a bincode reader cannot follow.
    Cluster(String),
    /// `Forget` was done (the log no longer holds the record).
    Forgotten,
}

/// A coordinator's state for a one-phase commit that may have reached its
/// participant, which has not answered (down, or its disk full): retried
/// until it does, and listed by `twopc admin in-doubt`.
pub const ONE_PHASE_UNANSWERED: &str = "one-phase-unanswered";

/// Words of a participant's refusal to force an outcome on a transaction
/// it no longer holds prepared; `admin resolve` stops at the first one
/// (another resolve, or its coordinator, got there first).
pub const NOT_IN_DOUBT_HERE: &str = "is not in doubt here";

/// A coordinator's state for a transaction committed by a participant,
/// with no Commit record at the coordinator: a one-phase commit, or a
/// commit its probe found applied (by the coordinator's own decision
/// since trimmed, or by an operator's commit forced everywhere).
pub const APPLIED: &str = "applied";

/// A coordinator's state for a txid of an epoch its log never ran: minted
/// by another instance of it, so its outcome is unknown there.
pub const FOREIGN_EPOCH: &str = "foreign-epoch";

/// One process's view of one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnView {
    pub txid: Option<TxnId>,
    /// The process answering.
    pub node: String,
    /// Participant: preparing, prepared, applying, committed, aborted,
    /// forgotten (no record, and its decision here may have been dropped
    /// with older ones), fenced (never seen here when its coordinator
    /// probed: a late request for it aborts), unknown (never seen here).
    /// Coordinator: preparing, deciding, committing, aborting, one-phase,
    /// one-phase-unanswered (sent, perhaps applied, no answer yet),
    /// committed, aborted, unknown.
    pub state: String,
    pub participants: Vec<NodeId>,
    /// Since when (ms since the Unix epoch): prepared at, for participants;
    /// for a coordinator's commit not delivered everywhere (`admin
    /// in-doubt` only), since its decision was durable there; for a
    /// one-phase commit left unanswered, since the coordinator's timer
    /// first saw it in commit (trial 16A: it showed no age).
    pub since_ms: Option<u64>,
    /// Participant: keys locked by it.
    pub locks: Vec<Key>,
    /// Participant: how many keys it writes.
    pub writes: usize,
    /// Coordinator: participants that have not acked the commit (or not
    /// answered a one-phase commit that may have reached them).
    pub unacked: Vec<NodeId>,
    /// Participant: a forced (heuristic) outcome recorded here.
    pub heuristic: Option<HeuristicView>,
    /// Coordinator: participants that refused its decision because they
    /// had been forced the other way (heuristic-mixed).
    pub mixed: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeuristicView {
    /// "commit" or "abort".
    pub decision: String,
    pub at_ms: u64,
    pub reason: String,
    /// Set when the coordinator's decision turned out to be the other one.
    pub conflict: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    pub key: Key,
    pub holder: TxnId,
    pub since_ms: u64,
}

/// Compares tokens in time independent of where they differ.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The token a server enforces: the environment's, else the cluster
/// file's. `None` disables admin operations.
pub fn server_token(cluster: &ClusterConfig) -> Option<String> {
    std::env::var(ADMIN_TOKEN_ENV).ok().filter(|t| !t.is_empty()).or_else(|| cluster.admin_token.clone())
}

/// Checks a request's token against the server's.
pub fn authorise(given: &str, expected: Option<&str>) -> Result<(), crate::ServiceError> {
    match expected {
        None => Err(crate::ServiceError::Unauthorised(format!(
            "admin operations are disabled on this process: start it with {ADMIN_TOKEN_ENV} or an admin_token in the cluster file"
        ))),
        // Belt and braces: the cluster file refuses an empty token.
        Some("") => Err(crate::ServiceError::Unauthorised("admin is disabled: the admin token is empty".into())),
        Some(expected) if token_matches(given, expected) => Ok(()),
        Some(_) => Err(crate::ServiceError::Unauthorised("wrong admin token".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_match_exactly() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("secret", "secret2"));
        assert!(!token_matches("", "secret"));
        assert!(authorise("x", None).is_err());
        assert!(authorise("", Some("")).is_err(), "an empty token authorises nobody");
        assert!(authorise("x", Some("y")).is_err());
        assert!(authorise("y", Some("y")).is_ok());
    }
}
