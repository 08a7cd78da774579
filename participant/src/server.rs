//! The `ParticipantRpc` service: validates input, reads committed values
//! directly, and hands protocol requests to the engine task.

use crate::engine::Reply;
use crate::runtime::{Handle, Request};
use futures::future::join_all;
use tarpc::context::Context;
use twopc_common::admin::{authorise, AdminReply, AdminRequest, NodeStats};
use twopc_common::limits::{MAX_COMMIT_BATCH, MAX_PREPARE_BATCH};
use twopc_common::ring::Ring;
use twopc_common::service::{Hello, ParticipantRpc, Role};
use twopc_common::txn::{check_read_keys, PrepareRequest, ProbeAnswer};
use twopc_common::{Key, NodeId, Outcome, ServiceError, TxnId, Versioned, Vote};

#[derive(Clone)]
pub struct ParticipantServer {
    pub(crate) handle: Handle,
    /// The admin token this process enforces (`None`: admin disabled).
    pub(crate) admin_token: Option<std::sync::Arc<str>>,
    /// This participant's ring and id: a read of a key it does not own is
    /// refused (the sender's cluster file differs), not answered "absent".
    pub(crate) ring: std::sync::Arc<Ring>,
    /// The coordinators of its cluster file: a prepare from another is
    /// refused, since a transaction it left in doubt here could not be
    /// resolved by asking it (trial 23B: a coordinator run from another
    /// file left locks that only `admin resolve` cleared).
    pub(crate) coordinators: std::sync::Arc<std::collections::BTreeSet<String>>,
    pub(crate) me: NodeId,
    /// The id of this participant's data ([`twopc_common::data_dir::data_id`]).
    pub(crate) data_id: String,
}

fn unexpected(reply: Reply) -> ServiceError {
    match reply {
        Reply::Error(e) => e,
        other => panic!("engine answered with the wrong reply kind: {other:?}"),
    }
}

impl ParticipantServer {
    /// Runs each item of a batch call (at most `max`) as its own engine
    /// request, concurrently; one answer per item, in order.
    async fn each<T, A>(
        &self,
        items: Vec<T>,
        max: usize,
        what: &str,
        request: fn(T) -> Request,
        answer: fn(Reply) -> Result<A, ServiceError>,
    ) -> Result<Vec<Result<A, ServiceError>>, ServiceError> {
        if items.len() > max {
            return Err(ServiceError::Invalid(format!("{} {what} exceed the limit of {max}", items.len())));
        }
        let calls = items.into_iter().map(|item| async move { answer(self.handle.call(request(item)).await?) });
        Ok(join_all(calls).await)
    }
}

impl ParticipantRpc for ParticipantServer {
    async fn hello(self, _: Context) -> Hello {
        Hello::new(Role::Participant, self.me.as_str(), &self.data_id, &self.ring)
    }

    async fn read(self, _: Context, keys: Vec<Key>) -> Result<Vec<Versioned>, ServiceError> {
        check_read_keys(&keys).map_err(ServiceError::Invalid)?;
        if let Some(key) = keys.iter().find(|k| *self.ring.owner(k) != self.me) {
            return Err(ServiceError::ConfigMismatch(format!(
                "{:?} belongs to {} in {}'s cluster file, not to {}: the sender routes keys with another \
                 participant list",
                String::from_utf8_lossy(key),
                self.ring.owner(key),
                self.me,
                self.me
            )));
        }
        self.handle.read(keys).await
    }

    async fn prepare_many(
        self,
        _: Context,
        reqs: Vec<PrepareRequest>,
    ) -> Result<Vec<Result<Vote, ServiceError>>, ServiceError> {
        if let Some(req) = reqs.iter().find(|r| !self.coordinators.contains(r.txid.coordinator.as_str())) {
            return Err(ServiceError::ConfigMismatch(format!(
                "{}'s coordinator {} is not in {}'s cluster file: a transaction it left in doubt here could not \
                 be resolved by asking it. Give every node the same cluster file (add a coordinator to the \
                 participants' files, and restart them, before starting it)",
                req.txid, req.txid.coordinator, self.me
            )));
        }
        self.each(reqs, MAX_PREPARE_BATCH, "prepares", Request::Prepare, |reply| match reply {
            Reply::Vote(vote) => Ok(vote),
            other => Err(unexpected(other)),
        })
        .await
    }

    async fn commit_many(self, _: Context, txids: Vec<TxnId>) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        self.each(txids, MAX_COMMIT_BATCH, "commits", Request::Commit, |reply| match reply {
            Reply::Ack => Ok(()),
            other => Err(unexpected(other)),
        })
        .await
    }

    async fn abort(self, _: Context, txid: TxnId) -> Result<(), ServiceError> {
        match self.handle.call(Request::Abort(txid)).await? {
            Reply::Ack => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn commit_one_phase(self, _: Context, req: PrepareRequest) -> Result<Outcome, ServiceError> {
        match self.handle.call(Request::OnePhase(req)).await? {
            Reply::Outcome(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    async fn stats(self, _: Context) -> NodeStats {
        self.handle.stats().await
    }

    async fn admin(self, _: Context, token: String, req: AdminRequest) -> Result<AdminReply, ServiceError> {
        authorise(&token, self.admin_token.as_deref())?;
        self.handle.admin(req).await
    }

    async fn probe(self, _: Context, txid: TxnId) -> Result<ProbeAnswer, ServiceError> {
        match self.handle.call(Request::Probe(txid)).await? {
            Reply::Probe(answer) => Ok(answer),
            other => Err(unexpected(other)),
        }
    }
}
