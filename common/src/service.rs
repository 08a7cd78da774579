//! The tarpc services. Applications talk to [`CoordinatorRpc`]; the
//! coordinator talks to [`ParticipantRpc`]; participants ask
//! [`CoordinatorRpc::outcome`] while in doubt.

use crate::admin::{AdminReply, AdminRequest, NodeStats};
use crate::error::ServiceError;
use crate::ids::TxnId;
use crate::txn::{Key, Outcome, OutcomeStatus, PrepareRequest, ProbeAnswer, TxnOps, Versioned, Vote};

#[tarpc::service]
pub trait ParticipantRpc {
    /// Committed values and versions of `keys`; takes no locks.
    async fn read(keys: Vec<Key>) -> Result<Vec<Versioned>, ServiceError>;
    /// Phase one for each request (at most
    /// [`crate::limits::MAX_PREPARE_BATCH`]): lock, validate, sync a
    /// Prepared record, vote; one answer per request, in order. Idempotent.
    async fn prepare_many(reqs: Vec<PrepareRequest>) -> Result<Vec<Result<Vote, ServiceError>>, ServiceError>;
    /// Phase two for each txid (at most [`crate::limits::MAX_COMMIT_BATCH`]):
    /// apply the prepared writes and release the locks; one answer per
    /// txid, in order. An ack means the apply is durable. Idempotent; acks
    /// a txid it no longer holds.
    async fn commit_many(txids: Vec<TxnId>) -> Result<Vec<Result<(), ServiceError>>, ServiceError>;
    /// Phase two: drop the prepared writes and release the locks. Idempotent.
    async fn abort(txid: TxnId) -> Result<(), ServiceError>;
    /// One-phase commit for a transaction that touches only this
    /// participant: validate, lock, apply and sync in one step. Idempotent.
    async fn commit_one_phase(req: PrepareRequest) -> Result<Outcome, ServiceError>;
    /// The coordinator asks what this participant knows of `txid` when its
    /// own memory cannot answer (an older epoch's one-phase commit). A txid
    /// the participant never saw is fenced: later requests for it abort.
    async fn probe(txid: TxnId) -> Result<ProbeAnswer, ServiceError>;
    /// Counters (no token needed).
    async fn stats() -> NodeStats;
    /// An operator's request; refused without the right token.
    async fn admin(token: String, req: AdminRequest) -> Result<AdminReply, ServiceError>;
}

#[tarpc::service]
pub trait CoordinatorRpc {
    /// Allocates a transaction id (no write: ids are unique by epoch).
    async fn begin() -> Result<TxnId, ServiceError>;
    /// Allocates `count` transaction ids at once (at most
    /// [`crate::limits::MAX_BEGIN_BATCH`]; fewer if the coordinator has
    /// less room). Clients keep them as spares, so `begin` needs no round
    /// trip. An id unused for a minute is aborted by the coordinator.
    async fn begin_many(count: u32) -> Result<Vec<TxnId>, ServiceError>;
    /// Committed values of `keys`, routed to their participants.
    async fn read(keys: Vec<Key>) -> Result<Vec<Versioned>, ServiceError>;
    /// Runs two-phase commit (one-phase when one participant is involved).
    async fn commit(txid: TxnId, ops: TxnOps) -> Result<Outcome, ServiceError>;
    /// Abandons a begun transaction; later commits of it are refused.
    async fn abort(txid: TxnId) -> Result<(), ServiceError>;
    /// What happened to `txid`. Presumed abort: a txid with no logged
    /// commit that is not in progress is Aborted, for good.
    async fn outcome(txid: TxnId) -> Result<OutcomeStatus, ServiceError>;
    /// Counters (no token needed).
    async fn stats() -> NodeStats;
    /// An operator's request; refused without the right token.
    async fn admin(token: String, req: AdminRequest) -> Result<AdminReply, ServiceError>;
}
