//! The `CoordinatorRpc` service: validates input, routes keys with the
//! ring, serves reads directly, hands protocol requests to the engine task.

use crate::engine::Reply;
use crate::runtime::{Handle, Request};
use futures::future::join_all;
use std::collections::BTreeMap;
use tarpc::context::Context;
use twopc_common::admin::{authorise, AdminReply, AdminRequest, NodeStats};
use twopc_common::limits::{MAX_BEGIN_BATCH, READ_FORWARD_TIMEOUT, RPC_TIMEOUT};
use twopc_common::net::{context_with_timeout, GUARD_SLACK};
use twopc_common::service::{CoordinatorRpc, Hello, Role};
use twopc_common::txn::{check_read_keys, check_read_reply};
use twopc_common::{Key, NodeId, Outcome, OutcomeStatus, ServiceError, TxnId, TxnOps, Versioned};

#[derive(Clone)]
pub struct CoordinatorServer {
    pub(crate) handle: Handle,
    pub(crate) me: NodeId,
    /// The admin token this process enforces (`None`: admin disabled).
    pub(crate) admin_token: Option<std::sync::Arc<str>>,
    /// The id of this coordinator's data ([`twopc_common::data_dir::data_id`]).
    pub(crate) data_id: String,
}

fn unexpected(reply: Reply) -> ServiceError {
    match reply {
        Reply::Error(e) => e,
        other => panic!("engine answered with the wrong reply kind: {other:?}"),
    }
}

impl CoordinatorRpc for CoordinatorServer {
    async fn hello(self, _: Context) -> Hello {
        Hello::new(Role::Coordinator, self.me.as_str(), &self.data_id, &self.handle.ring)
    }

    async fn begin(self, _: Context) -> Result<TxnId, ServiceError> {
        self.handle.commit_gate.refuse_if_stopping(self.me.as_str())?;
        let txids = self.handle.begin(1).await?;
        txids.into_iter().next().ok_or_else(|| ServiceError::Unavailable("no transaction id minted".into()))
    }

    async fn begin_many(self, _: Context, count: u32) -> Result<Vec<TxnId>, ServiceError> {
        self.handle.commit_gate.refuse_if_stopping(self.me.as_str())?;
        if !(1..=MAX_BEGIN_BATCH).contains(&count) {
            return Err(ServiceError::Invalid(format!("count must be 1..={MAX_BEGIN_BATCH}, not {count}")));
        }
        self.handle.begin(count).await
    }

    async fn read(self, ctx: Context, keys: Vec<Key>) -> Result<Vec<Versioned>, ServiceError> {
        check_read_keys(&keys).map_err(ServiceError::Invalid)?;
        self.handle.check_ring().await?;
        let mut by_owner: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_owner.entry(self.handle.ring.owner(key).clone()).or_default().push(i);
        }
        // The participants get less time than the client gave: a slow one
        // is then named in the answer, before the client's own deadline.
        let timeout = forwarded_timeout(ctx.deadline).min(READ_FORWARD_TIMEOUT);
        let reads = by_owner.into_iter().map(|(owner, indexes)| {
            let peer = self.handle.participants[&owner].clone();
            let wanted: Vec<Key> = indexes.iter().map(|i| keys[*i].clone()).collect();
            async move {
                let call = peer.call_within(timeout.saturating_add(GUARD_SLACK), |c| {
                    let wanted = wanted.clone();
                    async move { c.read(context_with_timeout(timeout), wanted).await }
                });
                // Also bounds a read queued behind the connection's calls
                // in flight, which tarpc's deadline does not cover yet.
                let got = tokio::time::timeout(timeout, call)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {timeout:?} (hung or paused?)")));
                let values = got.map_err(|e| ServiceError::Unavailable(format!("participant {owner}: {e}")))??;
                if values.len() != indexes.len() {
                    return Err(ServiceError::Unavailable(format!("participant {owner} returned a short read")));
                }
                Ok(indexes.into_iter().zip(values).collect::<Vec<_>>())
            }
        });
        let mut out = vec![Versioned::default(); keys.len()];
        let mut bytes = 0;
        for part in join_all(reads).await {
            for (i, value) in part? {
                bytes += value.value.as_ref().map_or(0, Vec::len);
                out[i] = value;
            }
        }
        check_read_reply(keys.len(), bytes).map_err(ServiceError::Invalid)?;
        Ok(out)
    }

    async fn commit(self, _: Context, txid: TxnId, ops: TxnOps) -> Result<Outcome, ServiceError> {
        ops.validate().map_err(ServiceError::Invalid)?;
        let _in_progress = self.handle.commit_gate.enter(self.me.as_str())?;
        self.handle.check_ring().await?;
        let plan = crate::routing::plan(&self.handle.ring, &txid, ops);
        match self.handle.call(Request::Commit { txid, plan }).await? {
            Reply::Outcome(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    async fn abort(self, _: Context, txid: TxnId) -> Result<(), ServiceError> {
        match self.handle.call(Request::Abort(txid)).await? {
            Reply::Ack => Ok(()),
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

    async fn outcome(self, _: Context, txid: TxnId) -> Result<OutcomeStatus, ServiceError> {
        match self.handle.call(Request::Outcome(txid)).await? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }
}

/// What a forwarded read leaves the client to hear its answer (or the
/// participant's failure) before its own deadline.
pub const FORWARD_MARGIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The deadline of a call forwarded on behalf of a request due by
/// `deadline`: [`FORWARD_MARGIN`] earlier, at most [`RPC_TIMEOUT`], at
/// least 100 ms.
fn forwarded_timeout(deadline: std::time::Instant) -> std::time::Duration {
    deadline
        .saturating_duration_since(std::time::Instant::now())
        .saturating_sub(FORWARD_MARGIN)
        .clamp(std::time::Duration::from_millis(100), RPC_TIMEOUT)
}
