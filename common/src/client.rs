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

use crate::coordinator_set::{CoordinatorPeer, CoordinatorSet};
use crate::error::ServiceError;
use crate::ids::TxnId;
use crate::limits::{CLIENT_COMMIT_TIMEOUT, MAX_BEGIN_BATCH, OPEN_TXN_TIMEOUT, RPC_TIMEOUT};
use crate::net::{context_with_timeout, CallError, GUARD_SLACK};
use crate::recent::Recent;
use crate::service::CoordinatorRpcClient;
use crate::txn::{
    check_read_keys, AbortReason, Condition, Key, Outcome, OutcomeStatus, TxnOps, Value, Version, Versioned,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

impl ClientError {
    /// Whether running the same operations again, in a new transaction (or
    /// the same read again), may succeed: a conflict, a coordinator or
    /// participant that could not be used for now, an overloaded server.
    /// Not an `OutcomeUnknown`: that one may have committed, so ask
    /// [`Client::outcome`] first. Not a failed condition, a refused or
    /// invalid request: those fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Aborted { reason, .. } => reason.is_transient(),
            ClientError::Connection(e) => !crate::service::names_wrong_process(e),
            ClientError::Service(e) => e.is_transient(),
            ClientError::OutcomeUnknown { .. } | ClientError::Invalid(_) => false,
        }
    }
}

/// A connection to a coordinator (or to the first reachable of several).
/// Cheap to clone; clones share the connection, which multiplexes many
/// concurrent transactions. A connection found dead (the coordinator
/// restarted) is replaced by the next call, so a `Client` outlives
/// coordinator restarts; a commit whose answer did not come asks its
/// outcome on a new connection; with several coordinators, new transactions and
/// reads move on to the next one while one cannot be reached.
#[derive(Clone)]
pub struct Client {
    coordinators: Arc<CoordinatorSet>,
    /// Transaction ids minted ahead of need: `begin` takes one, and when
    /// fewer than half of [`SPARE_TXIDS`] are left one background
    /// `begin_many` call refills them, so the `begin` round trip leaves the
    /// transaction's critical path. Spares are minted only for a client
    /// that began before, so a one-shot client (the CLI) leaves no unused
    /// id behind.
    spare_txids: Arc<SpareTxids>,
    begun: Arc<AtomicBool>,
    /// A refill is in flight (at most one per client).
    refilling: Arc<AtomicBool>,
    /// Background work in flight: spare refills, and aborts of dropped
    /// transactions ([`Client::close`] waits for it).
    background: Arc<AtomicUsize>,
    /// Ids whose operations `commit` sent once more under a fresh id: old
    /// → fresh ([`Client::outcome`] of the old answers for the fresh).
    resent_as: Arc<Mutex<Recent<TxnId, TxnId>>>,
}

/// Resent ids a client remembers, at most (the newest).
pub const MAX_RESENT_REMEMBERED: usize = 4_096;

/// One piece of a client's background work, counted while it lives.
struct Background(Arc<AtomicUsize>);

impl Background {
    fn start(count: &Arc<AtomicUsize>) -> Background {
        count.fetch_add(1, Ordering::AcqRel);
        Background(count.clone())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long [`Client::close`] waits for background work, at most.
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A transaction id and where it came from.
#[derive(Clone)]
struct Minted {
    txid: TxnId,
    at: Instant,
    /// The coordinator (index in the client's list) that minted it.
    coordinator: usize,
    /// Its connection then: ids from before a reconnect are not used as
    /// spares (a restarted coordinator aborts the ids of its earlier runs).
    connection: u64,
}

/// A client's spare ids. When the last clone of the client goes, the
/// unused ones are aborted in the background: each dropped client left up
/// to [`SPARE_TXIDS`] ids open at the coordinator for a minute, and a
/// program making a client per request filled the coordinator's cap on
/// open ids in seconds, shutting every client out of `begin` (trial 18B).
struct SpareTxids {
    coordinators: Arc<CoordinatorSet>,
    ids: Mutex<VecDeque<Minted>>,
}

impl SpareTxids {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Minted>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpareTxids {
    /// Takes the spare ids still open at their coordinator, and the
    /// aborts that close them. (Ids minted on an earlier connection were
    /// aborted by the coordinator's restart; a closed connection's
    /// coordinator may be gone: its ids expire there.)
    fn take_aborts(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let ids = std::mem::take(&mut *self.lock());
        let open: Vec<Minted> = ids
            .into_iter()
            .filter(|m| {
                let peer = self.coordinators.peer(m.coordinator);
                !peer.connection_closed() && peer.connections_opened() == m.connection
            })
            .collect();
        if open.is_empty() {
            return None;
        }
        let coordinators = self.coordinators.clone();
        Some(async move {
            let aborts = open.into_iter().map(|m| {
                let peer = coordinators.peer(m.coordinator).clone();
                async move {
                    if let Err(e) = send_abort(&peer, m.txid.clone()).await {
                        tracing::debug!(txid = %m.txid, error = %e, "abort of an unused spare id failed");
                    }
                }
            });
            futures::future::join_all(aborts).await;
        })
    }
}

impl Drop for SpareTxids {
    fn drop(&mut self) {
        let Some(aborts) = self.take_aborts() else { return };
        // Outside a runtime there is nothing to send with: they expire.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(aborts);
    }
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
        Client::connect_any(&[addr]).await
    }

    /// Connects to the first of `addrs` that can be reached. Later, while
    /// the current one cannot be reached, new transactions and reads go to
    /// the next; a transaction always commits through the coordinator that
    /// minted its id.
    /// An address that can never work (`HOST:PORT` is required) is
    /// `ClientError::Invalid`, not a retryable connection error.
    pub async fn connect_any(addrs: &[&str]) -> Result<Client, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Invalid("no coordinator address given".into()));
        }
        for addr in addrs {
            crate::address::host_port(addr).map_err(ClientError::Invalid)?;
        }
        let coordinators = Arc::new(CoordinatorSet::new(addrs));
        coordinators.connect_first().await.map_err(ClientError::Connection)?;
        Ok(Client {
            spare_txids: Arc::new(SpareTxids { coordinators: coordinators.clone(), ids: Mutex::default() }),
            coordinators,
            begun: Arc::default(),
            refilling: Arc::default(),
            background: Arc::default(),
            resent_as: Arc::new(Mutex::new(Recent::new(MAX_RESENT_REMEMBERED))),
        })
    }

    /// The address of the coordinator new transactions go to.
    pub fn addr(&self) -> &str {
        self.coordinators.peer(self.coordinators.current()).addr()
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Transaction, ClientError> {
        let spare = self.take_spare_txid();
        if self.begun.swap(true, Ordering::Relaxed) {
            self.refill_spare_txids();
        }
        let minted = match spare {
            Some(spare) => spare,
            None => self.mint(1).await?.pop().expect("mint returns at least one id"),
        };
        Ok(Transaction {
            client: self.clone(),
            minted: Some(minted),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            conditions: Vec::new(),
        })
    }

    /// `count` new ids (at least one; fewer if the coordinator is full)
    /// from the first coordinator that answers.
    async fn mint(&self, count: usize) -> Result<Vec<Minted>, ClientError> {
        self.coordinators
            .first_answer(|index| async move {
                match self.mint_on(index, count).await {
                    // A stopping coordinator is passed over, as one that
                    // cannot be reached is.
                    Ok(Err(ClientError::Service(ServiceError::Stopping(e)))) => Err(e),
                    answer => answer,
                }
            })
            .await
            .map_err(ClientError::Connection)?
    }

    /// `count` new ids from coordinator `index`. `Err` only when it gave
    /// no answer; its refusal is in the `Ok`.
    async fn mint_on(&self, index: usize, count: usize) -> Result<Result<Vec<Minted>, ClientError>, String> {
        let count = count.clamp(1, MAX_BEGIN_BATCH as usize) as u32;
        let peer = self.coordinators.peer(index);
        // Counted before the call: ids minted on a connection opened
        // during it are dropped rather than mistaken for current ones.
        let connection = peer.connections_opened();
        let answer = peer.call(|c| async move { c.begin_many(context_with_timeout(RPC_TIMEOUT), count).await }).await?;
        let txids = match answer {
            Ok(txids) if !txids.is_empty() => txids,
            Ok(_) => return Ok(Err(ServiceError::Unavailable("the coordinator minted no id".into()).into())),
            Err(e) => return Ok(Err(e.into())),
        };
        self.coordinators.learn_owner(&txids[0].coordinator, index);
        let at = Instant::now();
        Ok(Ok(txids.into_iter().map(|txid| Minted { txid, at, coordinator: index, connection }).collect()))
    }

    /// An unexpired spare id minted by the current coordinator on its
    /// current connection.
    fn take_spare_txid(&self) -> Option<Minted> {
        let current = self.coordinators.current();
        let peer = self.coordinators.peer(current);
        if peer.connection_closed() {
            // The coordinator may be gone: mint (and so find a live one).
            return None;
        }
        let connection = peer.connections_opened();
        let mut spare = self.spare_txids.lock();
        while let Some(minted) = spare.pop_front() {
            let usable = minted.coordinator == current && minted.connection == connection;
            if usable && minted.at.elapsed() < SPARE_TXID_MAX_AGE {
                return Some(minted);
            }
        }
        None
    }

    /// Tops the spares up in the background once fewer than half are left
    /// (one `begin_many` call, one refill at a time per client).
    fn refill_spare_txids(&self) {
        let have = self.spare_txids.lock().len();
        if have >= SPARE_TXIDS / 2 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = self.clone();
        let working = Background::start(&self.background);
        tokio::spawn(async move {
            let _working = working;
            if let Ok(minted) = client.mint(SPARE_TXIDS - have).await {
                client.spare_txids.lock().extend(minted);
            }
            client.refilling.store(false, Ordering::Release);
        });
    }

    /// One commit call to coordinator `index`. On a connection found dead
    /// it is sent once more on a fresh one: the coordinator answers a
    /// repeat from what it knows (in progress, decided, or aborted by its
    /// restart).
    async fn send_commit(
        &self,
        index: usize,
        txid: &TxnId,
        ops: &TxnOps,
    ) -> Result<Result<Outcome, ServiceError>, CallError> {
        let call = |c: CoordinatorRpcClient| {
            let (txid, ops) = (txid.clone(), ops.clone());
            async move { c.commit(context_with_timeout(CLIENT_COMMIT_TIMEOUT), txid, ops).await }
        };
        let guard = CLIENT_COMMIT_TIMEOUT.saturating_add(GUARD_SLACK);
        self.coordinators.peer(index).try_call_within(guard, call).await
    }

    /// Committed values and versions, outside any transaction (no locks).
    pub async fn read(&self, keys: Vec<Key>) -> Result<Vec<Versioned>, ClientError> {
        check_read_keys(&keys).map_err(ClientError::Invalid)?;
        let call = |index: usize| {
            let keys = keys.clone();
            let peer = self.coordinators.peer(index);
            peer.call(move |c| {
                let keys = keys.clone();
                async move { c.read(context_with_timeout(RPC_TIMEOUT), keys).await }
            })
        };
        Ok(self.coordinators.first_answer(call).await.map_err(ClientError::Connection)??)
    }

    /// Aborts this client's spare transaction ids now, and waits for it
    /// and for its background work (a refill of spares, aborts of dropped
    /// transactions), up to [`CLOSE_WAIT`]. Dropping the last clone of a
    /// client aborts the spares in the background, which a program that
    /// returns from `main` at once cuts short: they then stay open at the
    /// coordinator for a minute (trial 21D: 24 per run). Call it before a
    /// short program exits. The client still works afterwards (`begin`
    /// mints new ids).
    pub async fn close(&self) {
        let until = Instant::now() + CLOSE_WAIT;
        while self.background.load(Ordering::Acquire) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(aborts) = self.spare_txids.take_aborts() {
            aborts.await;
        }
    }

    /// What happened to `txid`, asked of the coordinator that minted it
    /// (found by asking each in turn if this client does not know it).
    /// Asking about an id that was begun and is not committing aborts it
    /// for good (its later commit is refused): ask only once its commit
    /// was sent, or the answer was lost. For an id whose operations this
    /// client's `commit` sent once more under a fresh id, the answer is
    /// the fresh id's (the old one can never commit): so a commit future
    /// dropped meanwhile still has its outcome asked by the id the
    /// application holds (trial 21D was told "aborted", its writes
    /// committed under the fresh id).
    pub async fn outcome(&self, txid: &TxnId) -> Result<OutcomeStatus, ClientError> {
        let resent = self.resent_as.lock().unwrap_or_else(|e| e.into_inner()).get(txid).cloned();
        let txid = resent.as_ref().unwrap_or(txid);
        if let Some(index) = self.coordinators.owner(&txid.coordinator) {
            return self.outcome_at(index, txid).await;
        }
        let mut last = None;
        for index in 0..self.coordinators.len() {
            match self.outcome_at(index, txid).await {
                Err(ClientError::Service(ServiceError::WrongCoordinator { .. })) => {}
                Err(e @ ClientError::Connection(_)) => last = Some(e),
                answer => {
                    self.coordinators.learn_owner(&txid.coordinator, index);
                    return answer;
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            ClientError::Invalid(format!(
                "{txid} was begun by a coordinator named {c} (a txid is COORDINATOR.EPOCH.SEQ), which is none of \
                 this client's coordinators: ask {c} (its address is in the cluster file; if no coordinator \
                 there is named {c}, it was removed from the file or the id is mistyped: `twopc admin in-doubt` \
                 lists a removed coordinator's transactions that are still in doubt)",
                c = txid.coordinator
            ))
        }))
    }

    async fn outcome_at(&self, index: usize, txid: &TxnId) -> Result<OutcomeStatus, ClientError> {
        let call = |c: CoordinatorRpcClient| {
            let txid = txid.clone();
            async move { c.outcome(context_with_timeout(RPC_TIMEOUT), txid).await }
        };
        Ok(self.coordinators.peer(index).call(call).await.map_err(ClientError::Connection)??)
    }

    /// After a failed commit call: ask until the outcome is known or the
    /// attempts run out. The coordinator may have restarted (its old
    /// connection is then dead): each question after a connection failure
    /// uses a fresh connection.
    async fn resolve(&self, txid: TxnId, first_error: String) -> Result<TxnId, ClientError> {
        let mut last = first_error;
        // A coordinator that hangs (rather than refuses) must not stretch
        // the window: every question ends by the window's end.
        let window_ends = tokio::time::Instant::now() + OUTCOME_QUERY_INTERVAL * OUTCOME_QUERY_ATTEMPTS;
        for _ in 0..OUTCOME_QUERY_ATTEMPTS {
            match tokio::time::timeout_at(window_ends, self.outcome(&txid)).await {
                Ok(Ok(OutcomeStatus::Committed)) => return Ok(txid),
                Ok(Ok(OutcomeStatus::Aborted)) => {
                    return Err(ClientError::Aborted { txid, reason: AbortReason::NoDecisionLogged })
                }
                Ok(Ok(OutcomeStatus::Pending)) => {
                    last = "the coordinator has not decided yet (a participant it waits for may be down or \
                            paused: `twopc admin in-doubt` names it); ask again later (`twopc outcome TXID --wait 1m`)"
                        .into()
                }
                // Known for good: asking again changes nothing.
                Ok(Err(ClientError::Service(e @ ServiceError::HeuristicMixed { .. }))) => {
                    return Err(ClientError::Service(e))
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => {
                    last = format!(
                        "{last}; then the coordinator did not answer within {:?}",
                        OUTCOME_QUERY_INTERVAL * OUTCOME_QUERY_ATTEMPTS
                    );
                    break;
                }
            }
            if tokio::time::Instant::now() + OUTCOME_QUERY_INTERVAL >= window_ends {
                break;
            }
            tokio::time::sleep(OUTCOME_QUERY_INTERVAL).await;
        }
        Err(ClientError::OutcomeUnknown { txid, detail: last })
    }
}

/// A transaction: reads record the version seen, writes are buffered.
///
/// A transaction dropped without `commit` or `abort` (a read-only one, or
/// one given up after an error) is aborted in the background, so the
/// coordinator forgets its id at once: it counts ids open until they end
/// or expire after a minute, and one client dropping many transactions
/// filled that count and shut every client out of `begin` for a minute.
pub struct Transaction {
    client: Client,
    /// Taken by `commit` and `abort`; still here when dropped unfinished.
    minted: Option<Minted>,
    reads: BTreeMap<Key, Version>,
    writes: BTreeMap<Key, Option<Value>>,
    conditions: Vec<Condition>,
}

impl Transaction {
    pub fn txid(&self) -> &TxnId {
        &self.minted().txid
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
    /// Returns the txid it committed under. When this transaction's id
    /// can no longer commit, the same operations are committed once more
    /// under a fresh id, as the application would (validation happens at
    /// the new commit, so this is as safe): if the coordinator restarted
    /// since the id was minted (the new run aborts it: presumed abort), or
    /// if the coordinator could not be reached at all (the request never
    /// left; the fresh id comes from the next coordinator that answers).
    /// Not once the id is older than [`OPEN_TXN_TIMEOUT`]: that is
    /// `Aborted` with [`AbortReason::Expired`], as the coordinator would
    /// have answered.
    ///
    /// A commit future dropped before an answer aborts its id in the
    /// background, as a dropped transaction does; if the commit had
    /// reached the coordinator, that abort is refused and the commit goes
    /// on: ask [`Client::outcome`], of this client (or a clone): if it was
    /// being committed once more under a fresh id, that answers for the
    /// fresh one. Another client, or `twopc outcome`, asked about the old
    /// id, answers "aborted" (that id never committed; the fresh one may
    /// have): keep the client, or let `commit` end by itself (within
    /// [`CLIENT_COMMIT_TIMEOUT`], twice with a fresh id), or make the
    /// transaction idempotent (a key of its own written with
    /// `expect_absent`).
    pub async fn commit(mut self) -> Result<TxnId, ClientError> {
        let ops = self.ops();
        ops.validate().map_err(ClientError::Invalid)?;
        let client = self.client.clone();
        // `self.minted` stays until an answer, so that dropping this future
        // aborts the id (see `Drop`) instead of leaving it open.
        let Minted { mut txid, mut coordinator, connection, at } = self.minted().clone();
        let mut answer = client.send_commit(coordinator, &txid, &ops).await;
        self.minted = None;
        let restarted = matches!(answer, Ok(Ok(Outcome::Aborted(AbortReason::CoordinatorRestarted))))
            && client.coordinators.peer(coordinator).connections_opened() != connection;
        // A coordinator that is stopping did nothing of it either.
        let unreachable = matches!(answer, Err(CallError::Unreachable(_)) | Ok(Err(ServiceError::Stopping(_))));
        if (restarted || unreachable) && at.elapsed() >= OPEN_TXN_TIMEOUT {
            let after_ms = OPEN_TXN_TIMEOUT.as_millis() as u64;
            return Err(ClientError::Aborted { txid, reason: AbortReason::Expired { after_ms } });
        }
        if restarted || unreachable {
            tracing::debug!(%txid, restarted, "this id can no longer commit: committing under a fresh id");
            let fresh = if restarted {
                client.mint_on(coordinator, 1).await.map_err(ClientError::Connection)??
            } else {
                client.mint(1).await?
            };
            let fresh = fresh.into_iter().next().expect("mint returns at least one id");
            client.resent_as.lock().unwrap_or_else(|e| e.into_inner()).insert(txid.clone(), fresh.txid.clone());
            (txid, coordinator) = (fresh.txid.clone(), fresh.coordinator);
            self.minted = Some(fresh);
            answer = client.send_commit(coordinator, &txid, &ops).await;
            self.minted = None;
        }
        match answer {
            Ok(Ok(Outcome::Committed)) => Ok(txid),
            Ok(Ok(Outcome::Aborted(reason))) => Err(ClientError::Aborted { txid, reason }),
            Ok(Err(e)) => Err(ClientError::Service(e)),
            // Never sent: nothing was committed.
            Err(CallError::Unreachable(e)) => Err(ClientError::Connection(e)),
            // The request may or may not have reached the coordinator.
            // Its outcome is asked on a new connection (trial 20A: a
            // connection that went silent carried the questions too, and
            // the answer was "outcome unknown" with the coordinator up).
            Err(CallError::Lost(e)) => {
                client.coordinators.peer(coordinator).reconnect_next_call();
                client.resolve(txid, e).await
            }
        }
    }

    /// Abandons the transaction (nothing was sent to participants yet).
    pub async fn abort(mut self) -> Result<(), ClientError> {
        let minted = self.minted.take().expect("not yet finished");
        send_abort(self.client.coordinators.peer(minted.coordinator), minted.txid).await
    }

    fn minted(&self) -> &Minted {
        self.minted.as_ref().expect("a transaction is used only until commit or abort")
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let Some(minted) = self.minted.take() else { return };
        // Outside a runtime there is nothing to send with: the coordinator
        // expires the id after a minute.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let peer = self.client.coordinators.peer(minted.coordinator).clone();
        let working = Background::start(&self.client.background);
        runtime.spawn(async move {
            let _working = working;
            if let Err(e) = send_abort(&peer, minted.txid.clone()).await {
                tracing::debug!(txid = %minted.txid, error = %e, "abort of a dropped transaction failed");
            }
        });
    }
}

async fn send_abort(peer: &CoordinatorPeer, txid: TxnId) -> Result<(), ClientError> {
    let call = |c: CoordinatorRpcClient| {
        let txid = txid.clone();
        async move { c.abort(context_with_timeout(RPC_TIMEOUT), txid).await }
    };
    peer.call(call).await.map_err(ClientError::Connection)??;
    Ok(())
}
