//! Runs the participant engine: one task owns the engine and executes its
//! commands (WAL writes through group commit, replies, outcome questions).
//!
//! Order of work for a prepare: the RPC handler queues the request; the
//! engine task reads the current versions of the request's keys (in the
//! task, so no commit can slip in between), feeds the engine, and executes
//! the commands in order. `SyncPrepared` goes to the WAL; only its
//! completion (fed back as `PrepareSynced`) lets the engine vote Yes.

use crate::engine::{Command, Engine, Event, Reply, RequestId, IN_DOUBT_AFTER_MS, STUCK_AFTER_MS};
use crate::forgotten::LoggedHorizons;
use crate::record::{Decision, ParticipantRecord};
use crate::server::ParticipantServer;
use crate::store::{self, ParticipantWal};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use twopc_common::admin::{AdminReply, AdminRequest, LockView, NodeStats, MAX_ADMIN_LIST};
use twopc_common::config::ClusterConfig;
use twopc_common::limits::RPC_TIMEOUT;
use twopc_common::net::{self, client_config, context_with_timeout, Expected, Peer};
use twopc_common::node::{now_ms, worth_a_warning, Mailbox, Running};
use twopc_common::service::{coordinator_hello, CoordinatorRpcClient, ParticipantRpc, Role};
use twopc_common::txn::{OutcomeStatus, PrepareRequest, Vote};
use twopc_common::{fault, Key, NodeId, Outcome, ServiceError, TxnId, Versioned};
use twopc_wal::{Durability, HeldWrites, Lsn, RocksWal, WalBatch, WalError};

/// Requests queued for the engine task, at most.
pub const ENGINE_QUEUE_CAPACITY: usize = 8_192;
/// How often the engine is ticked (to ask outcomes of in-doubt txns).
pub const TICK_INTERVAL: Duration = Duration::from_millis(500);
/// Outcome questions in flight at once to one coordinator, at most. Each
/// coordinator has its own: questions to one that accepts connections but
/// does not answer (paused, or its host gone) wait out their deadlines,
/// and once shared they held every slot, so transactions of the other
/// coordinators, up and answering, stayed in doubt with their locks.
pub const MAX_OUTCOME_QUERIES_PER_COORDINATOR: usize = 256;
/// Reads waiting for a prepared writer's outcome, at most.
pub const MAX_PARKED_READS: usize = 10_000;
/// A read waits this long for a prepared writer's outcome, then fails
/// naming the writer. It never returns the value from before the writer:
/// the writer may be committed, and its client told so, already.
pub const READ_WAIT_MAX: Duration = Duration::from_secs(2);
/// While reads wait for prepared writers, they are looked at this often:
/// served if their writers finished, and their writers' outcomes asked
/// (see `BLOCKER_ASKS_AFTER_MS`).
pub const PARKED_READ_RECHECK: Duration = Duration::from_millis(50);
/// A prepare (or one-phase commit) that needs a lock held by a prepared
/// transaction (whatever its txid) asks that holder's coordinator at once; if it
/// committed, the prepare waits this long at most for the commit to apply,
/// then votes No (lock conflict). The holder is most often the previous
/// transaction on the same keys, with its commit message on the way;
/// without the wait, a client that heard Committed and wrote the same keys
/// again at once could be aborted by its own last transaction. A holder
/// still undecided ends the wait at once: waiting for those let prepares
/// wait for each other across participants (and hold the votes batched
/// with them), which cost p99 at concurrency 256 five times over.
pub const PREPARE_WAIT_MAX: Duration = Duration::from_millis(250);
/// Prepares waiting for prepared lock holders, at most; beyond, a prepare
/// does not wait.
pub const MAX_PARKED_PREPARES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    #[error("participant {0:?} is not in the cluster file")]
    UnknownId(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The data directory cannot be used: it holds no log (and no --init),
    /// cannot be created, is another node's, or holds data written under
    /// another participant list.
    #[error("{0}")]
    DataDir(String),
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    #[error("stopped: {0}")]
    Fatal(String),
}

pub struct ParticipantOptions {
    pub id: String,
    pub cluster: ClusterConfig,
    pub data_dir: PathBuf,
    /// May begin a new log in `data_dir` if it holds none (`--init`);
    /// otherwise such a directory is refused.
    pub init: bool,
}

/// The outcome questions asked about one stuck prepared transaction.
#[derive(Debug, Default)]
struct Asked {
    /// Since it is stuck ([`STUCK_AFTER_MS`]), one per in-doubt timer
    /// period at most.
    times: u32,
    /// When the last one counted was asked.
    last_ms: u64,
    /// A line said it is in doubt: its end is logged at info too.
    logged_in_doubt: bool,
}

/// What a loud outcome question says of its transaction.
#[derive(Debug, Clone, Copy)]
struct InDoubtFor {
    /// Seconds since it was prepared here.
    in_doubt_s: u64,
    /// Keys it holds locked here.
    locks: usize,
}

/// A request from the RPC layer to the engine task.
pub(crate) enum Request {
    Prepare(PrepareRequest),
    OnePhase(PrepareRequest),
    Commit(TxnId),
    Abort(TxnId),
    Probe(TxnId),
}

type ReadReply = oneshot::Sender<Result<Vec<Versioned>, ServiceError>>;

type AdminResult = oneshot::Sender<Result<AdminReply, ServiceError>>;

enum Input {
    Engine(Request, oneshot::Sender<Reply>),
    Read(Vec<Key>, ReadReply),
    Stats(oneshot::Sender<NodeStats>),
    Admin(AdminRequest, AdminResult),
}

/// A read waiting for a prepared writer of one of its keys.
struct ParkedRead {
    keys: Vec<Key>,
    reply: ReadReply,
    deadline: tokio::time::Instant,
}

/// A prepare waiting for a prepared lock holder (see [`PREPARE_WAIT_MAX`]).
struct ParkedPrepare {
    request: Request,
    reply: oneshot::Sender<Reply>,
    wait_until: tokio::time::Instant,
    /// The holder it waits for, whose coordinator was asked.
    holder: TxnId,
}

/// What the RPC layer holds: the engine task's queue.
#[derive(Clone)]
pub(crate) struct Handle {
    mailbox: Mailbox<Input>,
}

impl Handle {
    pub(crate) async fn call(&self, request: Request) -> Result<Reply, ServiceError> {
        self.mailbox.ask(|reply| Input::Engine(request, reply)).await
    }

    /// Committed values of `keys`, after any prepared writer of them has
    /// applied (or [`READ_WAIT_MAX`] passed): a client that heard
    /// Committed then reads its own writes.
    pub(crate) async fn read(&self, keys: Vec<Key>) -> Result<Vec<Versioned>, ServiceError> {
        self.mailbox.ask(|reply| Input::Read(keys, reply)).await?
    }

    pub(crate) async fn stats(&self) -> NodeStats {
        self.mailbox.ask(Input::Stats).await.unwrap_or_default()
    }

    /// An authorised operator's request.
    pub(crate) async fn admin(&self, request: AdminRequest) -> Result<AdminReply, ServiceError> {
        self.mailbox.ask(|reply| Input::Admin(request, reply)).await?
    }
}

/// A participant serving in this process.
pub type RunningParticipant = Running<ParticipantError>;

/// Opens the log, recovers, and starts serving on the cluster file's
/// address (or `listen`, e.g. `127.0.0.1:0` in tests).
pub async fn start(opts: ParticipantOptions, listen: Option<&str>) -> Result<RunningParticipant, ParticipantError> {
    let entry = opts.cluster.participant_entry(&opts.id).ok_or_else(|| ParticipantError::UnknownId(opts.id.clone()))?;
    let me = NodeId::new(&opts.id).map_err(ParticipantError::Fatal)?;
    // Says when this process stood still (stopped, starved of CPU).
    twopc_common::stall::watch();
    let addr = listen.unwrap_or(&entry.addr).to_string();
    // Reserved first: a busy port (another instance running) then leaves
    // no new data directory behind. Listening waits until the server can
    // serve (see `net::ReservedPort`).
    let port = net::reserve(&addr).await.map_err(|source| ParticipantError::Bind { addr: addr.clone(), source })?;
    let local = port.local;
    let log = twopc_common::data_dir::ready(&opts.data_dir, "participant", &opts.id, opts.init, |log| {
        RocksWal::<ParticipantRecord>::exists_at(&log.wal, &log.created)
    })
    .map_err(ParticipantError::DataDir)?;
    twopc_common::data_dir::claim_ring(&opts.data_dir, &opts.cluster.ring()).map_err(ParticipantError::DataDir)?;
    let data_id = twopc_common::data_dir::data_id(
        &opts.data_dir,
        !RocksWal::<ParticipantRecord>::exists_at(&log.wal, &log.created),
        true,
    )
    .map_err(ParticipantError::DataDir)?;
    // Lazy writes are synced in the background, except while a durability
    // rule is sabotaged: a record written lazily in breach of it then stays
    // loseable until the next synced write, so the checkers can see it.
    let rocks_wal = Arc::new(RocksWal::<ParticipantRecord>::open_created_once(
        &log.wal,
        &log.created,
        fault::unless_sabotaged(&["vote-before-sync", "ack-before-sync"], twopc_wal::LAZY_SYNC_INTERVAL),
    )?);
    let wal: Arc<ParticipantWal> = rocks_wal.clone();
    let coordinators = opts
        .cluster
        .coordinator
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                Peer::expecting(
                    c.addr.clone(),
                    |s, closed| {
                        net::spawn_watched(CoordinatorRpcClient::new(client_config(), net::transport(s)), closed)
                    },
                    Expected {
                        hello: coordinator_hello,
                        role: Role::Coordinator,
                        id: Some(c.id.clone()),
                        accept: None,
                    },
                ),
            )
        })
        .collect();
    let engine = Engine::new(me.clone(), opts.cluster.ring().fingerprint());
    let (mailbox, rx) = Mailbox::new(ENGINE_QUEUE_CAPACITY, "participant");
    let mut task = EngineTask::new(engine, wal.clone(), coordinators);
    task.recover()?;
    tracing::info!(participant = %me, addr = %local, "participant serving");
    let stopped = tokio::spawn(task.run(rx));
    let admin_token = twopc_common::admin::server_token(&opts.cluster).map(Into::into);
    let ring = Arc::new(opts.cluster.ring());
    let coordinators = Arc::new(opts.cluster.coordinator.iter().map(|c| c.id.clone()).collect());
    let server =
        ParticipantServer { handle: Handle { mailbox }, admin_token, ring, coordinators, me: me.clone(), data_id };
    let listener = port.listen().map_err(|source| ParticipantError::Bind { addr, source })?;
    let server = tokio::spawn(async move { twopc_common::serve_tarpc!(listener, server).await });
    let at_stop: twopc_common::node::AtStop = Box::new(move || match rocks_wal.sync_for_stop() {
        Ok(()) => tracing::info!("log synced for the stop"),
        Err(e) => tracing::warn!(error = %e, "could not sync the log for the stop"),
    });
    Ok(Running::new(local, stopped, server, at_stop))
}

/// Completions fed back into the engine task.
enum Completion {
    Event(Event),
    PrepareLogged {
        txid: TxnId,
        lsn: Lsn,
    },
    /// A Done record of `txid`, and the `Forgotten` record written with
    /// it, if any.
    DoneLogged {
        txid: TxnId,
        lsn: Lsn,
        forgotten: Option<Lsn>,
    },
    Fatal(WalError),
}

impl Completion {
    /// The batch of [`EngineTask::finish_batch`] was written at `lsns`.
    fn done_logged(txid: TxnId, lsns: &[Lsn]) -> Self {
        Completion::DoneLogged { txid, lsn: lsns[0], forgotten: lsns.get(1).copied() }
    }
}

struct EngineTask {
    engine: Engine,
    wal: Arc<ParticipantWal>,
    coordinators: HashMap<String, Arc<Peer<CoordinatorRpcClient>>>,
    /// Requests the engine has not answered; `true` marks a `Commit`,
    /// whose reply waits for a sync covering everything written before it.
    pending: HashMap<RequestId, (oneshot::Sender<Reply>, bool)>,
    next_req: RequestId,
    /// LSN of each live Prepared record (removed when the outcome applies).
    prepared_lsn: HashMap<TxnId, Lsn>,
    /// Stuck prepared transactions whose outcome was asked of their
    /// coordinator, with how many times (so that the asking is logged
    /// ever more rarely) and whether a line said it was in doubt (so that
    /// its end gets a closing line however it comes); a subset of
    /// `prepared_lsn`'s, removed with it.
    asked_outcome: HashMap<TxnId, Asked>,
    /// Done records, oldest first (trimmed to the engine's memory).
    done_lsns: VecDeque<(Lsn, TxnId)>,
    /// How far the trimmed ones reach, per coordinator.
    forgotten: LoggedHorizons,
    /// LSNs of each txid's heuristic records (removed when an operator
    /// forgets it).
    heuristic_lsns: HashMap<TxnId, Vec<Lsn>>,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    /// WAL writes of the inputs handled since the last flush, in order.
    held_writes: HeldWrites<ParticipantRecord>,
    /// Per coordinator id: the outcome questions it may still be sent.
    queries_in_flight: HashMap<String, Arc<tokio::sync::Semaphore>>,
    parked: Vec<ParkedRead>,
    parked_prepares: Vec<ParkedPrepare>,
    /// Holders whose coordinator was asked for parked prepares, and did not
    /// answer "still undecided" (yet); dropped once no prepare waits for
    /// them.
    holders_asked: HashSet<TxnId>,
    /// Set when a transaction finished: parked reads and prepares may
    /// proceed.
    released: bool,
}

/// Sync before vote. Only the negative control (`vote-before-sync`, in
/// fault-point builds) breaks this rule, to prove the checkers catch it.
fn prepare_durability() -> Durability {
    if fault::sabotaged("vote-before-sync") {
        Durability::Lazy
    } else {
        Durability::Sync
    }
}

impl EngineTask {
    fn new(
        engine: Engine,
        wal: Arc<ParticipantWal>,
        coordinators: HashMap<String, Arc<Peer<CoordinatorRpcClient>>>,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let budget = || Arc::new(tokio::sync::Semaphore::new(MAX_OUTCOME_QUERIES_PER_COORDINATOR));
        let queries_in_flight = coordinators.keys().map(|id| (id.clone(), budget())).collect();
        EngineTask {
            engine,
            wal,
            coordinators,
            pending: HashMap::new(),
            next_req: 0,
            prepared_lsn: HashMap::new(),
            asked_outcome: HashMap::new(),
            done_lsns: VecDeque::new(),
            forgotten: LoggedHorizons::default(),
            heuristic_lsns: HashMap::new(),
            done_tx,
            done_rx,
            held_writes: HeldWrites::default(),
            queries_in_flight,
            parked: Vec::new(),
            parked_prepares: Vec::new(),
            holders_asked: HashSet::new(),
            released: false,
        }
    }

    /// Replays the log: Prepared records re-take their locks and ask for
    /// their outcome; Done records restore the memory of decisions.
    fn recover(&mut self) -> Result<(), ParticipantError> {
        let mut prepared = Vec::new();
        let mut decided = Vec::new();
        let mut heuristics = std::collections::BTreeMap::new();
        for (lsn, record) in self.wal.replay()? {
            match record {
                ParticipantRecord::Prepared(record) => {
                    self.prepared_lsn.insert(record.txid.clone(), lsn);
                    prepared.push(record);
                }
                ParticipantRecord::Done { txid, decision } => {
                    self.done_lsns.push_back((lsn, txid.clone()));
                    decided.push((txid, decision));
                }
                ParticipantRecord::Forgotten(horizons) => self.forgotten.found(&horizons, lsn),
                // The latest record of a txid wins.
                ParticipantRecord::Heuristic(h) => {
                    self.heuristic_lsns.entry(h.txid.clone()).or_default().push(lsn);
                    heuristics.insert(h.txid.clone(), h);
                }
            }
        }
        if !prepared.is_empty() {
            tracing::info!(count = prepared.len(), "recovered in-doubt transactions; asking their coordinators");
        }
        for record in &prepared {
            tracing::info!(txid = %record.txid, locks = record.locks.len(), "re-took locks of prepared transaction");
        }
        for h in heuristics.values().filter(|h| h.conflict.is_some()) {
            tracing::error!(txid = %h.txid, forced = h.decision.name(), "heuristic-mixed: an operator forced this transaction against the coordinator's decision");
        }
        let heuristics = heuristics.into_values().collect();
        let forgotten = self.forgotten.horizons().clone();
        let commands =
            self.engine.handle(Event::Recovered { prepared, decided, heuristics, forgotten, now_ms: now_ms() });
        self.execute(commands);
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>) -> ParticipantError {
        let mut tick = tokio::time::interval(TICK_INTERVAL);
        let mut recheck = tokio::time::interval(PARKED_READ_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.flush_writes();
        loop {
            tokio::select! {
                biased;
                Some(done) = self.done_rx.recv() => {
                    if let Some(fatal) = self.complete(done) {
                        return fatal;
                    }
                }
                input = rx.recv() => {
                    if let Some(fatal) = self.input(input) {
                        return fatal;
                    }
                }
                _ = tick.tick() => {
                    let commands = self.engine.handle(Event::Tick { now_ms: now_ms() });
                    self.execute(commands);
                    self.released = true;
                }
                _ = recheck.tick(), if self.is_waiting() => self.recheck_parked(),
            }
            if self.held_writes.is_full() || (rx.is_empty() && self.done_rx.is_empty()) {
                self.flush_writes();
            }
            if std::mem::take(&mut self.released) && (self.is_waiting() || !self.holders_asked.is_empty()) {
                for parked in std::mem::take(&mut self.parked) {
                    self.read(parked.keys, parked.reply, parked.deadline);
                }
                for parked in std::mem::take(&mut self.parked_prepares) {
                    self.request(parked.request, parked.reply, parked.wait_until);
                }
                // A holder no prepare waits for any more needs no answer.
                let waited: HashSet<&TxnId> = self.parked_prepares.iter().map(|p| &p.holder).collect();
                let gone: Vec<TxnId> = self.holders_asked.iter().filter(|h| !waited.contains(h)).cloned().collect();
                for holder in gone {
                    self.holders_asked.remove(&holder);
                }
            }
        }
    }

    fn stats(&self) -> NodeStats {
        let wal = self.wal.stats();
        let (heuristics, heuristic_mixed) = self.engine.heuristic_counts();
        NodeStats {
            id: self.engine.me().to_string(),
            role: "participant".into(),
            now_ms: now_ms(),
            in_doubt: self.engine.in_doubt().count(),
            oldest_prepared_ms: self.engine.in_doubt().map(|r| r.prepared_at_ms).min(),
            locks: self.engine.locks().len(),
            heuristics,
            heuristic_mixed,
            wal_syncs: wal.syncs,
            wal_batches: wal.batches,
            wal_groups: wal.groups,
            wal_records: wal.records_appended,
            storage_errors: crate::store::storage_errors(),
            ..NodeStats::default()
        }
    }

    /// An operator's request: views are answered here; recovery and
    /// heuristic resolution go through the engine.
    fn admin(&mut self, request: AdminRequest, reply: AdminResult) {
        let on_ack = match request {
            AdminRequest::Forget(_) => AdminReply::Forgotten,
            _ => AdminReply::Recovered { asked: 0 },
        };
        let event = match request {
            AdminRequest::Ping => return drop(reply.send(Ok(AdminReply::Pong))),
            AdminRequest::InDoubt => {
                let views = self.engine.in_doubt().take(MAX_ADMIN_LIST).map(|r| self.engine.view(&r.txid)).collect();
                return drop(reply.send(Ok(AdminReply::Txns(views))));
            }
            AdminRequest::Show(txid) => {
                return drop(reply.send(Ok(AdminReply::Txn(Box::new(self.engine.view(&txid))))))
            }
            AdminRequest::Locks { key } => {
                let locks = self
                    .engine
                    .locks()
                    .iter()
                    .filter(|(k, _, _)| key.as_ref().is_none_or(|want| want == *k))
                    .take(MAX_ADMIN_LIST)
                    .map(|(k, holder, since_ms)| LockView { key: k.clone(), holder: holder.clone(), since_ms })
                    .collect();
                return drop(reply.send(Ok(AdminReply::Locks(locks))));
            }
            AdminRequest::Cluster => {
                let e = ServiceError::Invalid(
                    "this is a participant, not a coordinator: give --coordinator a coordinator's address \
                     (the cluster file lists them), or use --config CLUSTER.toml"
                        .into(),
                );
                return drop(reply.send(Err(e)));
            }
            AdminRequest::Heuristics => {
                let views =
                    self.engine.heuristic_txids().take(MAX_ADMIN_LIST).map(|txid| self.engine.view(txid)).collect();
                return drop(reply.send(Ok(AdminReply::Txns(views))));
            }
            AdminRequest::Recover => Event::RecoverNow { req: self.next_req },
            AdminRequest::Resolve { txid, commit, reason } => {
                Event::Heuristic { req: self.next_req, txid, commit, reason, now_ms: now_ms() }
            }
            AdminRequest::Forget(txid) => Event::ForgetHeuristic { req: self.next_req, txid },
        };
        let (engine_tx, engine_rx) = oneshot::channel();
        self.pending.insert(self.next_req, (engine_tx, false));
        self.next_req += 1;
        tokio::spawn(async move {
            let answer = match engine_rx.await {
                Ok(Reply::Recovered { asked }) => Ok(AdminReply::Recovered { asked }),
                Ok(Reply::Ack) => Ok(on_ack),
                Ok(Reply::Error(e)) => Err(e),
                Ok(other) => Err(ServiceError::Invalid(format!("unexpected engine reply {other:?}"))),
                Err(_) => Err(ServiceError::Unavailable("participant is stopping".into())),
            };
            let _ = reply.send(answer);
        });
        let commands = self.engine.handle(event);
        self.execute(commands);
    }

    /// Serves a read now, or parks it while a prepared writer of one of
    /// its keys may already be committed. A read whose writer stays in
    /// doubt until `deadline` fails, naming it.
    fn read(&mut self, keys: Vec<Key>, reply: ReadReply, deadline: tokio::time::Instant) {
        let Some((key, writer)) = keys.iter().find_map(|k| self.engine.pending_writer(k).map(|t| (k, t))) else {
            let _ = reply.send(store::get_many(&*self.wal, &keys));
            return;
        };
        let answer = if tokio::time::Instant::now() >= deadline {
            // How long it has been in doubt, not how long this read waited
            // (trial 26A read "in doubt after 2s" of one prepared 44 s ago).
            let prepared_ago = self.engine.view(writer).since_ms.map_or(0, |t| now_ms().saturating_sub(t));
            ServiceError::Unavailable(format!(
                "{:?} is written by {writer}, prepared at {} {} s ago and still in doubt (this read waited \
                 {READ_WAIT_MAX:?}; its coordinator {} has not given the outcome): the writer may be committed \
                 already, so neither the old value nor the new one can be given; retry later, or see `twopc \
                 admin in-doubt`",
                String::from_utf8_lossy(key),
                self.engine.me(),
                prepared_ago / 1000,
                writer.coordinator
            ))
        } else if self.parked.len() >= MAX_PARKED_READS {
            ServiceError::Overloaded(format!("{MAX_PARKED_READS} reads waiting for prepared writers"))
        } else {
            self.parked.push(ParkedRead { keys, reply, deadline });
            return;
        };
        let _ = reply.send(Err(answer));
    }

    /// A parked prepare's holder's coordinator answered: still undecided
    /// means no wait (the prepare votes No at once, as it would have
    /// without waiting). A decision is applied and frees the lock soon; the
    /// holder stays marked as asked meanwhile, so that retries of its
    /// waiting prepares do not ask again.
    fn holder_answered(&mut self, holder: &TxnId, status: &OutcomeStatus) {
        if *status != OutcomeStatus::Pending || !self.holders_asked.remove(holder) {
            return;
        }
        let now = tokio::time::Instant::now();
        for parked in self.parked_prepares.iter_mut().filter(|p| p.holder == *holder) {
            parked.wait_until = now;
        }
    }

    /// Whether reads or prepares wait for prepared transactions.
    fn is_waiting(&self) -> bool {
        !self.parked.is_empty() || !self.parked_prepares.is_empty()
    }

    /// Every 50 ms while reads or prepares wait: the transactions they
    /// wait for are asked about, and the waiting looked at again.
    fn recheck_parked(&mut self) {
        let now = now_ms();
        let writers: std::collections::BTreeSet<TxnId> = self
            .parked
            .iter()
            .flat_map(|read| read.keys.iter().filter_map(|k| self.engine.pending_writer(k).cloned()))
            .collect();
        for txid in writers {
            let commands = self.engine.handle(Event::ReadWaiting { txid, now_ms: now });
            self.execute(commands);
        }
        self.released = true;
    }

    /// Handles one input from the RPC layer (`None`: the queue closed).
    fn input(&mut self, input: Option<Input>) -> Option<ParticipantError> {
        match input {
            Some(Input::Engine(request, reply)) => {
                self.request(request, reply, tokio::time::Instant::now() + PREPARE_WAIT_MAX)
            }
            Some(Input::Read(keys, reply)) => self.read(keys, reply, tokio::time::Instant::now() + READ_WAIT_MAX),
            Some(Input::Stats(reply)) => drop(reply.send(self.stats())),
            Some(Input::Admin(request, reply)) => self.admin(request, reply),
            None => return Some(ParticipantError::Fatal("request queue closed".into())),
        }
        None
    }

    fn complete(&mut self, done: Completion) -> Option<ParticipantError> {
        match done {
            Completion::Event(event) => {
                if let Event::OutcomeAnswer { txid, status } = &event {
                    self.holder_answered(txid, status);
                }
                self.released |= matches!(event, Event::Applied { .. } | Event::OutcomeAnswer { .. });
                let commands = self.engine.handle(event);
                self.execute(commands);
            }
            Completion::PrepareLogged { txid, lsn } => {
                fault::hit("participant.after-prepare-synced", Some(&txid));
                self.prepared_lsn.insert(txid.clone(), lsn);
                tracing::debug!(%txid, "prepared record synced: voting yes");
                let commands = self.engine.handle(Event::PrepareSynced { txid });
                self.execute(commands);
            }
            Completion::DoneLogged { txid, lsn, forgotten } => {
                self.done_lsns.push_back((lsn, txid));
                if let Some(lsn) = forgotten {
                    self.forgotten.logged(lsn);
                }
            }
            Completion::Fatal(e) => {
                tracing::error!(error = %e, "write-ahead log failed; stopping");
                return Some(ParticipantError::Wal(e));
            }
        }
        None
    }

    /// Hands `request` to the engine; a prepare that needs a prepared
    /// transaction's lock waits for it first, until `wait_until`.
    fn request(&mut self, request: Request, reply: oneshot::Sender<Reply>, wait_until: tokio::time::Instant) {
        let blocker = match &request {
            Request::Prepare(prepare) | Request::OnePhase(prepare) => {
                self.engine.prepared_blocker(prepare).map(|b| (prepare.txid.clone(), b.holder.clone(), b.applying))
            }
            _ => None,
        };
        let may_wait = tokio::time::Instant::now() < wait_until && self.parked_prepares.len() < MAX_PARKED_PREPARES;
        if let Some((txid, holder, applying)) = blocker.filter(|_| may_wait) {
            // Worth waiting for only if it committed: a holder being applied
            // did; else its coordinator is asked at once, once per holder,
            // and "still undecided" (or a question that cannot be sent)
            // ends the wait.
            let asked = applying
                || self.holders_asked.contains(&holder)
                || (self.holders_asked.len() < MAX_PARKED_PREPARES && self.query_outcome(holder.clone(), None));
            if asked {
                tracing::debug!(%txid, %holder, "prepare waits for the prepared holder of a lock it needs");
                if !applying {
                    self.holders_asked.insert(holder.clone());
                }
                self.parked_prepares.push(ParkedPrepare { request, reply, wait_until, holder });
                return;
            }
        }
        let req = self.next_req;
        self.next_req += 1;
        let is_commit = matches!(request, Request::Commit(_));
        // What each transaction was asked, at debug (trial 24C: an abort
        // left no line at a participant, nor a No vote its key).
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| match &request {
            Request::Prepare(p) => (p.txid.clone(), "prepare"),
            Request::OnePhase(p) => (p.txid.clone(), "one-phase commit"),
            Request::Commit(txid) => (txid.clone(), "commit"),
            Request::Abort(txid) => (txid.clone(), "abort"),
            Request::Probe(txid) => (txid.clone(), "probe"),
        });
        if let Some((txid, asked)) = &logged {
            tracing::debug!(%txid, "{asked} received");
        }
        let event = match request {
            Request::Prepare(prepare) => match self.current(&prepare) {
                Ok(current) => Event::Prepare { req, prepare, current, now_ms: now_ms() },
                Err(e) => return drop(reply.send(Reply::Error(e))),
            },
            Request::OnePhase(prepare) => match self.current(&prepare) {
                Ok(current) => Event::OnePhase { req, prepare, current, now_ms: now_ms() },
                Err(e) => return drop(reply.send(Reply::Error(e))),
            },
            Request::Commit(txid) => Event::Commit { req: Some(req), txid },
            Request::Abort(txid) => Event::Abort { req: Some(req), txid },
            Request::Probe(txid) => Event::Probe { req, txid },
        };
        self.pending.insert(req, (reply, is_commit));
        let commands = self.engine.handle(event);
        if let Some((txid, _)) = &logged {
            for command in &commands {
                match command {
                    Command::Reply { reply: Reply::Vote(Vote::No(reason)), .. } => {
                        tracing::debug!(%txid, %reason, "voting no")
                    }
                    Command::Reply { reply: Reply::Outcome(Outcome::Aborted(reason)), .. } => {
                        tracing::debug!(%txid, %reason, "one-phase commit aborted")
                    }
                    _ => {}
                }
            }
        }
        self.execute(commands);
    }

    /// Current committed state of every key the request touches. Read in
    /// the engine task: any commit that changed them has already applied.
    fn current(&self, prepare: &PrepareRequest) -> Result<HashMap<Vec<u8>, twopc_common::Versioned>, ServiceError> {
        prepare.ops.validate().map_err(ServiceError::Invalid)?;
        let mut current = HashMap::new();
        for key in prepare.ops.keys() {
            if !current.contains_key(key) {
                current.insert(key.clone(), store::get(&*self.wal, key)?);
            }
        }
        Ok(current)
    }

    fn execute(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::SyncPrepared(record) => {
                    let txid = record.txid.clone();
                    tracing::debug!(%txid, "syncing prepared record");
                    let mut batch = WalBatch::new();
                    batch.append.push(ParticipantRecord::Prepared(record));
                    let tx = self.done_tx.clone();
                    self.held_writes.hold(
                        batch,
                        prepare_durability(),
                        Box::new(move |result| {
                            let _ = tx.send(match result {
                                Ok(lsns) => Completion::PrepareLogged { txid, lsn: lsns[0] },
                                Err(e) => Completion::Fatal(e),
                            });
                        }),
                    );
                }
                Command::Apply { txid, writes, synced } => {
                    fault::hit("participant.before-apply", Some(&txid));
                    tracing::debug!(%txid, writes = writes.len(), synced, "applying commit");
                    let mut batch = self.finish_batch(&txid, Decision::Committed);
                    batch.data = store::data_writes(&writes);
                    let tx = self.done_tx.clone();
                    // Unsynced applies are made durable by the next sync
                    // (a prepare's, usually); the ack waits for it.
                    let durability = if synced { Durability::Sync } else { Durability::Lazy };
                    self.held_writes.hold(
                        batch,
                        durability,
                        Box::new(move |result| match result {
                            Ok(lsns) => {
                                let _ = tx.send(Completion::done_logged(txid.clone(), &lsns));
                                let _ = tx.send(Completion::Event(Event::Applied { txid }));
                            }
                            Err(e) => drop(tx.send(Completion::Fatal(e))),
                        }),
                    );
                }
                Command::ForgetAborted { txid } => {
                    self.released = true;
                    tracing::debug!(%txid, "forgetting aborted transaction");
                    let batch = self.finish_batch(&txid, Decision::Aborted);
                    let tx = self.done_tx.clone();
                    // No sync: losing this only means the abort is re-learned.
                    self.held_writes.hold(
                        batch,
                        Durability::Lazy,
                        Box::new(move |result| {
                            let _ = tx.send(match result {
                                Ok(lsns) => Completion::done_logged(txid, &lsns),
                                Err(e) => Completion::Fatal(e),
                            });
                        }),
                    );
                }
                Command::Reply { req, reply } => match self.pending.remove(&req) {
                    Some((sender, true)) => self.ack_when_durable(sender, reply),
                    Some((sender, false)) => drop(sender.send(reply)),
                    None => {}
                },
                Command::AskOutcome { txid } => self.ask_outcome(txid),
                Command::LogHeuristic(record) => {
                    // Rare (operators only): written inline, before the
                    // commands that follow it.
                    if record.conflict.is_some() {
                        tracing::error!(txid = %record.txid, forced = record.decision.name(), "heuristic-mixed: the coordinator decided the other way");
                    } else {
                        tracing::warn!(txid = %record.txid, forced = record.decision.name(), reason = %record.reason, "heuristic decision forced by an operator");
                    }
                    let txid = record.txid.clone();
                    let mut batch = WalBatch::new();
                    batch.append.push(ParticipantRecord::Heuristic(record));
                    let lsns = self.write_inline(batch);
                    self.heuristic_lsns.entry(txid).or_default().extend(lsns);
                }
                Command::DropHeuristic { txid } => {
                    tracing::warn!(%txid, "forced outcome forgotten by an operator");
                    let mut batch = WalBatch::new();
                    batch.remove = self.heuristic_lsns.remove(&txid).unwrap_or_default();
                    self.write_inline(batch);
                }
            }
        }
    }

    /// Writes an operator's rare record at once, synced, after everything
    /// held: before the commands that follow it. A failed write stops the
    /// server.
    fn write_inline(&mut self, batch: WalBatch<ParticipantRecord>) -> Vec<Lsn> {
        self.held_writes.write_now(&*self.wal, self.pending.len(), batch).unwrap_or_else(|e| {
            let _ = self.done_tx.send(Completion::Fatal(e));
            Vec::new()
        })
    }

    /// Submits the held writes (see `HeldWrites::flush`).
    fn flush_writes(&mut self) {
        self.held_writes.flush(&*self.wal, self.pending.len());
    }

    /// Sync before ack: the reply to a commit leaves once everything
    /// written so far (its apply included) is durable, through an empty
    /// deferred batch that shares the next sync. The coordinator may
    /// forget the transaction once every participant acked.
    fn ack_when_durable(&mut self, sender: oneshot::Sender<Reply>, reply: Reply) {
        if fault::sabotaged("ack-before-sync") {
            let _ = sender.send(reply);
            fault::hit("participant.after-commit-acked", None);
            return;
        }
        let tx = self.done_tx.clone();
        self.held_writes.hold(
            WalBatch::new(),
            Durability::Deferred,
            Box::new(move |result| match result {
                Ok(_) => {
                    let _ = sender.send(reply);
                    fault::hit("participant.after-commit-acked", None);
                }
                Err(e) => drop(tx.send(Completion::Fatal(e))),
            }),
        );
    }

    /// A batch that logs the decision, drops the Prepared record, and trims
    /// the oldest Done records beyond what the engine remembers.
    fn finish_batch(&mut self, txid: &TxnId, decision: Decision) -> WalBatch<ParticipantRecord> {
        let mut batch = WalBatch::new();
        batch.append.push(ParticipantRecord::Done { txid: txid.clone(), decision });
        batch.remove.extend(self.prepared_lsn.remove(txid));
        // Only a transaction said to be in doubt gets a line at info: one
        // asked about young, for a prepare it blocked, was not (trial 24C:
        // 150 routine aborts a minute logged as "in-doubt … resolved").
        match self.asked_outcome.remove(txid) {
            Some(Asked { logged_in_doubt: true, .. }) => {
                tracing::info!(%txid, ?decision, "in-doubt transaction resolved")
            }
            Some(_) => tracing::debug!(%txid, ?decision, "asked-about transaction resolved"),
            None => {}
        }
        while self.done_lsns.len() >= crate::engine::MAX_REMEMBERED_DECISIONS {
            let (lsn, old) = self.done_lsns.pop_front().expect("not empty");
            batch.remove.push(lsn);
            self.forgotten.trimmed(&old, &mut batch);
        }
        batch
    }

    /// Asks the coordinator of in-doubt `txid` (every 2 s while it stays
    /// in doubt, and for prepares and reads it blocks); once it is stuck,
    /// the answer is logged at the 1st, 2nd, 4th, 8th… try and at least
    /// one in 64 (a thousand transactions in doubt behind a coordinator
    /// down for an hour would write 500 warnings a second).
    fn ask_outcome(&mut self, txid: TxnId) {
        let now = now_ms();
        let in_doubt = self.prepared_lsn.contains_key(&txid);
        let view = self.engine.view(&txid);
        let prepared_ms_ago = view.since_ms.map_or(0, |since| now.saturating_sub(since));
        // A try counts once it is stuck (asked sooner, it is mostly just
        // being decided), and at most one per in-doubt timer period (one
        // asked for a blocked prepare or read in between is not another:
        // trial 26A saw a line every 7 s while clients kept retrying).
        // Every loud question gets a line, whatever the answer, saying how
        // long and what it holds (trial 24C: the lines said neither).
        let counts = in_doubt
            && prepared_ms_ago >= STUCK_AFTER_MS
            && self.asked_outcome.get(&txid).is_none_or(|a| now.saturating_sub(a.last_ms) >= IN_DOUBT_AFTER_MS);
        let loud = match counts.then(|| self.asked_outcome.entry(txid.clone()).or_default()) {
            Some(asked) if worth_a_warning(asked.times) => {
                asked.logged_in_doubt = true;
                Some(InDoubtFor { in_doubt_s: prepared_ms_ago / 1000, locks: view.locks.len() })
            }
            _ => None,
        };
        let known = self.coordinators.contains_key(txid.coordinator.as_str());
        if let (false, Some(InDoubtFor { in_doubt_s, locks })) = (known, &loud) {
            tracing::error!(%txid, in_doubt_s, locks, "in doubt, and its coordinator is not in the cluster file: resolve with twopc admin");
        }
        // Counted only when asked (or unaskable): a question not sent, all
        // of its coordinator's slots being taken, is not a try.
        if (!known || self.query_outcome(txid.clone(), loud)) && counts {
            if let Some(asked) = self.asked_outcome.get_mut(&txid) {
                asked.times = asked.times.saturating_add(1);
                asked.last_ms = now;
            }
        }
    }

    /// Asks `txid`'s coordinator for its outcome, which comes back as an
    /// `OutcomeAnswer` event; `loud` logs the answer (or the failure) at
    /// info (warn) rather than debug. False if no question could be sent.
    fn query_outcome(&self, txid: TxnId, loud: Option<InDoubtFor>) -> bool {
        let Some(peer) = self.coordinators.get(txid.coordinator.as_str()).cloned() else {
            return false;
        };
        let Some(Ok(permit)) =
            self.queries_in_flight.get(txid.coordinator.as_str()).map(|s| s.clone().try_acquire_owned())
        else {
            return false;
        };
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let asked = txid.clone();
            let answer = peer
                .call(|c| {
                    let asked = asked.clone();
                    async move { c.outcome(context_with_timeout(RPC_TIMEOUT), asked).await }
                })
                .await;
            match (answer, loud) {
                // Stuck and still undecided there: its coordinator cannot
                // decide yet (trial 25A: nothing said so for 23 s), most
                // often because it waits for another participant's answer.
                (Ok(Ok(OutcomeStatus::Pending)), Some(InDoubtFor { in_doubt_s, locks })) => {
                    tracing::info!(%txid, in_doubt_s, locks, "still in doubt: its coordinator has not decided yet; will ask again");
                    let status = OutcomeStatus::Pending;
                    let _ = tx.send(Completion::Event(Event::OutcomeAnswer { txid, status }));
                }
                (Ok(Ok(status)), loud) => {
                    // A decision, for a loud question; else at debug (a
                    // waiting read asks every 100 ms).
                    if loud.is_some() {
                        tracing::info!(%txid, ?status, "coordinator answered outcome question");
                    } else {
                        tracing::debug!(%txid, ?status, "coordinator answered outcome question");
                    }
                    let _ = tx.send(Completion::Event(Event::OutcomeAnswer { txid, status }));
                }
                (Ok(Err(e)), Some(InDoubtFor { in_doubt_s, locks })) => {
                    tracing::warn!(%txid, in_doubt_s, locks, error = %e, "coordinator refused outcome question; still in doubt, will ask again")
                }
                (Err(e), Some(InDoubtFor { in_doubt_s, locks })) => {
                    tracing::warn!(%txid, in_doubt_s, locks, error = %e, "coordinator unreachable; still in doubt, will ask again")
                }
                (Ok(Err(e)), None) => tracing::debug!(%txid, error = %e, "coordinator refused outcome question"),
                (Err(e), None) => tracing::debug!(%txid, error = %e, "coordinator unreachable"),
            }
        });
        true
    }
}
