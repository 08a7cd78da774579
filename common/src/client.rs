//! The application client library.
//!
//! ```no_run
//! # async fn demo() -> Result<(), twopc_common::client::ClientError> {
//! let client = twopc_common::client::Client::connect("127.0.0.1:7000").await?;
//! let mut txn = client.begin().await?;
//! let balance = txn.get(b"alice").await?;          // read (version recorded)
//! txn.put(b"alice", b"90".to_vec());                // buffered write
//! txn.put(b"bob", b"110".to_vec());
//! match txn.commit().await {
//!     Ok(txid) => println!("committed {txid}"),
//!     Err(twopc_common::client::ClientError::Aborted { reason, .. }) => println!("aborted: {reason}"),
//!     Err(twopc_common::client::ClientError::OutcomeUnknown { txid, .. }) => println!("ask later: {txid}"),
//!     Err(e) => return Err(e),
//! }
//! # let _ = balance; Ok(()) }
//! ```
//!
//! Reads go to the owning participants (through the coordinator) and take
//! no locks; the version seen is sent at commit and validated there, so a
//! committed transaction is serializable. Writes are buffered until commit.

use crate::error::ServiceError;
use crate::ids::TxnId;
use crate::limits::{CLIENT_COMMIT_TIMEOUT, MAX_BEGIN_BATCH, MAX_KEYS_PER_READ, RPC_TIMEOUT};
use crate::net::{client_config, context_with_timeout, transport, Peer, GUARD_SLACK};
use crate::service::CoordinatorRpcClient;
use crate::txn::{check_key, AbortReason, Condition, Key, Outcome, OutcomeStatus, TxnOps, Value, Version, Versioned};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Times the client asks for the outcome after a commit call failed.
pub const OUTCOME_QUERY_ATTEMPTS: u32 = 10;
/// Pause between those questions.
pub const OUTCOME_QUERY_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The transaction aborted; nothing it wrote is visible.
    #[error("transaction {txid} aborted: {reason}")]
    Aborted { txid: TxnId, reason: AbortReason },
    /// The commit was sent but its outcome could not be learned: it may or
    /// may not have committed. Ask again with [`Client::outcome`].
    #[error("outcome of transaction {txid} unknown: {detail}")]
    OutcomeUnknown { txid: TxnId, detail: String },
    /// The coordinator could not be reached (nothing was committed).
    #[error("{0}")]
    Connection(String),
    /// The server refused the request (nothing was committed).
    #[error("{0}")]
    Service(#[from] ServiceError),
    /// The request was invalid before it was sent.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// A connection to one coordinator. Cheap to clone; clones share the
/// connection, which multiplexes many concurrent transactions. A
/// connection found dead (the coordinator restarted) is replaced by the
/// next call, so a `Client` outlives coordinator restarts.
#[derive(Clone)]
pub struct Client {
    coordinator: Arc<Peer<CoordinatorRpcClient>>,
    /// Transaction ids minted ahead of need, with when they were minted:
    /// `begin` takes one, and when fewer than half of [`SPARE_TXIDS`] are
    /// left one background `begin_many` call refills them, so the `begin`
    /// round trip leaves the transaction's critical path. Spares are minted
    /// only for a client that began before, so a one-shot client (the CLI)
    /// leaves no unused id behind.
    /// Each with the connection it was minted on: spares from before a
    /// reconnect are dropped (a restarted coordinator aborts the ids of
    /// its earlier runs).
    spare_txids: Arc<Mutex<VecDeque<Spare>>>,
    begun: Arc<AtomicBool>,
    /// A refill is in flight (at most one per client).
    refilling: Arc<AtomicBool>,
}

/// A transaction id minted ahead of need.
struct Spare {
    txid: TxnId,
    minted: Instant,
    connection: u64,
}

/// Spare transaction ids a client keeps, at most.
pub const SPARE_TXIDS: usize = 32;
/// A spare id older than this is dropped (the coordinator aborts ids that
/// stay unused for a minute).
pub const SPARE_TXID_MAX_AGE: Duration = Duration::from_secs(20);

impl Client {
    /// Connects to the coordinator at `addr` (an error if it cannot be
    /// reached now).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let coordinator =
            Peer::new(addr.to_string(), |s| CoordinatorRpcClient::new(client_config(), transport(s)).spawn());
        coordinator.client().await.map_err(ClientError::Connection)?;
        Ok(Client { coordinator, spare_txids: Arc::default(), begun: Arc::default(), refilling: Arc::default() })
    }

    pub fn addr(&self) -> &str {
        self.coordinator.addr()
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Transaction, ClientError> {
        let spare = self.take_spare_txid();
        if self.begun.swap(true, Ordering::Relaxed) {
            self.refill_spare_txids();
        }
        let (txid, minted_on) = match spare {
            Some(spare) => spare,
            None => self.mint_txid().await?,
        };
        Ok(Transaction {
            client: self.clone(),
            txid,
            minted_on,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            conditions: Vec::new(),
        })
    }

    /// `count` new ids (at least one; fewer if the coordinator is full).
    async fn mint_txids(&self, count: usize) -> Result<Vec<TxnId>, ClientError> {
        let count = count.clamp(1, MAX_BEGIN_BATCH as usize) as u32;
        let txids = self
            .coordinator
            .call(|c| async move { c.begin_many(context_with_timeout(RPC_TIMEOUT), count).await })
            .await
            .map_err(ClientError::Connection)??;
        if txids.is_empty() {
            return Err(ClientError::Service(ServiceError::Unavailable("the coordinator minted no id".into())));
        }
        Ok(txids)
    }

    /// A new id, and the connection it was minted on (counted before the
    /// call, as for spares).
    async fn mint_txid(&self) -> Result<(TxnId, u64), ClientError> {
        let connection = self.coordinator.connections_opened();
        Ok((self.mint_txids(1).await?.swap_remove(0), connection))
    }

    /// An unexpired spare id minted on the current connection, with that
    /// connection's number.
    fn take_spare_txid(&self) -> Option<(TxnId, u64)> {
        let connection = self.coordinator.connections_opened();
        let mut spare = self.spare_txids.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Spare { txid, minted, connection: minted_on }) = spare.pop_front() {
            if minted.elapsed() < SPARE_TXID_MAX_AGE && minted_on == connection {
                return Some((txid, connection));
            }
        }
        None
    }

    /// Tops the spares up in the background once fewer than half are left
    /// (one `begin_many` call, one refill at a time per client).
    fn refill_spare_txids(&self) {
        let have = self.spare_txids.lock().unwrap_or_else(|e| e.into_inner()).len();
        if have >= SPARE_TXIDS / 2 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            // Counted before the call: ids minted on a connection opened
            // during it are dropped rather than mistaken for current ones.
            let connection = client.coordinator.connections_opened();
            let minted = client.mint_txids(SPARE_TXIDS - have).await;
            if let Ok(txids) = minted {
                let minted = Instant::now();
                let mut spare = client.spare_txids.lock().unwrap_or_else(|e| e.into_inner());
                spare.extend(txids.into_iter().map(|txid| Spare { txid, minted, connection }));
            }
            client.refilling.store(false, Ordering::Release);
        });
    }

    /// One commit call. On a connection found dead it is sent once more on
    /// a fresh one: the coordinator answers a repeat from what it knows
    /// (in progress, decided, or aborted by its restart).
    async fn send_commit(&self, txid: &TxnId, ops: &TxnOps) -> Result<Result<Outcome, ServiceError>, String> {
        let call = |c: CoordinatorRpcClient| {
            let (txid, ops) = (txid.clone(), ops.clone());
            async move { c.commit(context_with_timeout(CLIENT_COMMIT_TIMEOUT), txid, ops).await }
        };
        self.coordinator.call_within(CLIENT_COMMIT_TIMEOUT.saturating_add(GUARD_SLACK), call).await
    }

    /// Committed values and versions, outside any transaction (no locks).
    pub async fn read(&self, keys: Vec<Key>) -> Result<Vec<Versioned>, ClientError> {
        if keys.len() > MAX_KEYS_PER_READ {
            return Err(ClientError::Invalid(format!("{} keys exceed the limit of {MAX_KEYS_PER_READ}", keys.len())));
        }
        for key in &keys {
            check_key(key).map_err(ClientError::Invalid)?;
        }
        let call = |c: CoordinatorRpcClient| {
            let keys = keys.clone();
            async move { c.read(context_with_timeout(RPC_TIMEOUT), keys).await }
        };
        Ok(self.coordinator.call(call).await.map_err(ClientError::Connection)??)
    }

    /// What happened to `txid`.
    pub async fn outcome(&self, txid: &TxnId) -> Result<OutcomeStatus, ClientError> {
        let call = |c: CoordinatorRpcClient| {
            let txid = txid.clone();
            async move { c.outcome(context_with_timeout(RPC_TIMEOUT), txid).await }
        };
        Ok(self.coordinator.call(call).await.map_err(ClientError::Connection)??)
    }

    /// After a failed commit call: ask until the outcome is known or the
    /// attempts run out.
    /// The coordinator may have restarted (its old connection is then
    /// dead), so each question after a connection failure uses a fresh
    /// connection.
    async fn resolve(&self, txid: TxnId, first_error: String) -> Result<TxnId, ClientError> {
        let mut last = first_error;
        for _ in 0..OUTCOME_QUERY_ATTEMPTS {
            match self.outcome(&txid).await {
                Ok(OutcomeStatus::Committed) => return Ok(txid),
                Ok(OutcomeStatus::Aborted) => {
                    return Err(ClientError::Aborted { txid, reason: AbortReason::NoDecisionLogged })
                }
                Ok(OutcomeStatus::Pending) => last = "still pending".into(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(OUTCOME_QUERY_INTERVAL).await;
        }
        Err(ClientError::OutcomeUnknown { txid, detail: last })
    }
}

/// A transaction: reads record the version seen, writes are buffered.
pub struct Transaction {
    client: Client,
    txid: TxnId,
    /// The connection `txid` was minted on.
    minted_on: u64,
    reads: BTreeMap<Key, Version>,
    writes: BTreeMap<Key, Option<Value>>,
    conditions: Vec<Condition>,
}

impl Transaction {
    pub fn txid(&self) -> &TxnId {
        &self.txid
    }

    /// Reads a key: this transaction's own write if any, else the committed
    /// value (its version is validated at commit).
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Value>, ClientError> {
        if let Some(own) = self.writes.get(key) {
            return Ok(own.clone());
        }
        let got = self.get_many(vec![key.to_vec()]).await?;
        Ok(got.into_iter().next().flatten())
    }

    /// Reads several keys in one round trip.
    pub async fn get_many(&mut self, keys: Vec<Key>) -> Result<Vec<Option<Value>>, ClientError> {
        let remote: Vec<Key> = keys.iter().filter(|k| !self.writes.contains_key(*k)).cloned().collect();
        let mut fetched =
            if remote.is_empty() { Vec::new() } else { self.client.read(remote.clone()).await? }.into_iter();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(own) = self.writes.get(&key) {
                out.push(own.clone());
                continue;
            }
            let Some(v) = fetched.next() else {
                return Err(ClientError::Connection("coordinator returned too few read results".into()));
            };
            // The first version seen is the one the transaction depends on.
            self.reads.entry(key).or_insert(v.version);
            out.push(v.value);
        }
        Ok(out)
    }

    pub fn put(&mut self, key: &[u8], value: Value) {
        self.writes.insert(key.to_vec(), Some(value));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }

    /// Commit only if `key`'s committed value equals `value` at commit time.
    pub fn expect(&mut self, key: &[u8], value: Value) {
        self.conditions.push(Condition::Equals { key: key.to_vec(), value });
    }

    /// Commit only if `key` is absent at commit time.
    pub fn expect_absent(&mut self, key: &[u8]) {
        self.conditions.push(Condition::Absent { key: key.to_vec() });
    }

    /// The operations the commit will send.
    pub fn ops(&self) -> TxnOps {
        TxnOps {
            reads: self.reads.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            conditions: self.conditions.clone(),
            writes: self.writes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// Commits. `Ok(txid)` means durably committed; `Aborted` means nothing
    /// is visible; `OutcomeUnknown` means ask again later.
    ///
    /// Returns the txid it committed under: if the coordinator restarted
    /// since this transaction's id was minted, the new run aborts that id
    /// (presumed abort: it was never decided), and the same operations are
    /// committed once more under a fresh id, as the application would.
    pub async fn commit(self) -> Result<TxnId, ClientError> {
        let ops = self.ops();
        ops.validate().map_err(ClientError::Invalid)?;
        let client = self.client;
        let mut txid = self.txid;
        let mut answer = client.send_commit(&txid, &ops).await;
        let restarted = matches!(answer, Ok(Ok(Outcome::Aborted(AbortReason::CoordinatorRestarted))));
        if restarted && client.coordinator.connections_opened() != self.minted_on {
            tracing::debug!(%txid, "minted before the coordinator restarted: committing under a fresh id");
            txid = client.mint_txid().await?.0;
            answer = client.send_commit(&txid, &ops).await;
        }
        match answer {
            Ok(Ok(Outcome::Committed)) => Ok(txid),
            Ok(Ok(Outcome::Aborted(reason))) => Err(ClientError::Aborted { txid, reason }),
            Ok(Err(e)) => Err(ClientError::Service(e)),
            // The request may or may not have reached the coordinator.
            Err(e) => client.resolve(txid, e).await,
        }
    }

    /// Abandons the transaction (nothing was sent to participants yet).
    pub async fn abort(self) -> Result<(), ClientError> {
        let txid = &self.txid;
        let call = |c: CoordinatorRpcClient| {
            let txid = txid.clone();
            async move { c.abort(context_with_timeout(RPC_TIMEOUT), txid).await }
        };
        self.client.coordinator.call(call).await.map_err(ClientError::Connection)??;
        Ok(())
    }
}
