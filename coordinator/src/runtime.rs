//! Runs the coordinator engine: one task owns the engine and executes its
//! commands — decision-log writes through group commit, prepares, commits
//! (retried with capped backoff until acked), aborts, probes and replies.
//!
//! Start-up: replay the log, bump and sync the epoch (txids of older
//! epochs with no Commit record are aborted), re-drive every Commit
//! without End.

use crate::commit_batch::CommitSender;
use crate::commit_gate::{CommitGate, STOP_DRAIN_TIMEOUT};
use crate::ended::EndedLog;
use crate::engine::{counted_answers, Command, Engine, Event, Reply, RequestId, Unanswered};
use crate::epochs::{EpochHistory, MAX_KEPT_EPOCHS};
use crate::participant_data::ParticipantData;
use crate::prepare_batch::PrepareSender;
use crate::record::CoordinatorRecord;
use crate::server::CoordinatorServer;
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use twopc_common::admin::{AdminReply, AdminRequest, NodeStats};
use twopc_common::config::ClusterConfig;
use twopc_common::limits::{MAX_BEGIN_BATCH, RPC_TIMEOUT};
use twopc_common::net::{self, client_config, context_with_timeout, CallError, Expected, Peer, CALL_GUARD};
use twopc_common::node::{now_ms, worth_a_warning, LogThrottle, Mailbox, Running};
use twopc_common::ring::Ring;
use twopc_common::service::{participant_hello, CoordinatorRpc, ParticipantRpcClient, Role};
use twopc_common::txn::{PrepareRequest, ProbeAnswer};
use twopc_common::{fault, AbortReason, NodeId, Outcome, ServiceError, TxnId};
use twopc_wal::{Durability, HeldWrites, Lsn, RocksWal, Wal, WalBatch, WalError};

/// Requests queued for the engine task, at most.
pub const ENGINE_QUEUE_CAPACITY: usize = 8_192;
/// How often the engine is ticked (expires abandoned transactions).
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// First retry delay of a commit or one-phase send; doubles per attempt.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Deadline of an abort message (the client's answer waits for it).
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest an abort message may take, a new connection included (to
/// a participant that accepts connections but never answers, the
/// connection's hello alone took 2 s: trial 20A's aborts took 5.5 s).
/// A little over [`ABORT_TIMEOUT`], so a slow answer ends by its deadline.
pub const ABORT_GUARD: Duration = ABORT_TIMEOUT.saturating_add(Duration::from_millis(250));
/// Retry delays never exceed this (retries continue until acked: a logged
/// decision must reach every participant).
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub type CoordinatorWal = dyn Wal<CoordinatorRecord>;
pub type ParticipantPeer = Arc<Peer<ParticipantRpcClient>>;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("coordinator {0:?} is not in the cluster file")]
    UnknownId(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The data directory cannot be used: it holds no log (and no --init),
    /// cannot be created, or is another node's.
    #[error("{0}")]
    DataDir(String),
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    #[error("stopped: {0}")]
    Fatal(String),
    /// A new log (no start recorded) on a clock before 2024: its first
    /// epoch would be 1, and a lost log's ids would be minted again.
    #[error(
        "this coordinator's log records no earlier start, and the clock reads {now_ms} ms since 1970, before \
         2024-01-01: a new log takes its first epoch from the clock, so that it never mints the transaction ids \
         of a log lost before it (with the clock this early it would start at epoch 1, and participants would \
         take its new transactions for old ones they already decided: commits half applied). Set the clock \
         (NTP), then start it again"
    )]
    ClockBefore2024 { now_ms: u64 },
}

pub struct CoordinatorOptions {
    pub id: String,
    pub cluster: ClusterConfig,
    pub data_dir: PathBuf,
    /// May begin a new log in `data_dir` if it holds none (`--init`);
    /// otherwise such a directory is refused.
    pub init: bool,
}

pub(crate) enum Request {
    Commit { txid: TxnId, plan: Vec<(NodeId, PrepareRequest)> },
    Abort(TxnId),
    Outcome(TxnId),
}

type AdminResult = oneshot::Sender<Result<AdminReply, ServiceError>>;

type BeginReply = oneshot::Sender<Result<Vec<TxnId>, ServiceError>>;

enum Input {
    Engine(Request, oneshot::Sender<Reply>),
    Begin(u32, BeginReply),
    Stats(oneshot::Sender<NodeStats>),
    Admin(AdminRequest, AdminResult),
}

#[derive(Clone)]
pub(crate) struct Handle {
    mailbox: Mailbox<Input>,
    pub(crate) ring: Arc<Ring>,
    pub(crate) participants: Arc<HashMap<NodeId, ParticipantPeer>>,
    participant_data: Arc<ParticipantData>,
    pub(crate) commit_gate: Arc<CommitGate>,
}

impl Handle {
    pub(crate) async fn call(&self, request: Request) -> Result<Reply, ServiceError> {
        self.mailbox.ask(|reply| Input::Engine(request, reply)).await
    }

    /// Up to `count` new transaction ids (at least one, or an error).
    pub(crate) async fn begin(&self, count: u32) -> Result<Vec<TxnId>, ServiceError> {
        self.mailbox.ask(|reply| Input::Begin(count, reply)).await?
    }

    /// Refuses a read or commit while some participant has never been
    /// heard from with this coordinator's ring (connected to first: its
    /// `hello` is checked as the connection opens; see
    /// [`ParticipantData::ring_refusal`]).
    pub(crate) async fn check_ring(&self) -> Result<(), ServiceError> {
        let unheard = self.participant_data.unheard(self.participants.keys());
        if unheard.is_empty() {
            return Ok(());
        }
        self.participant_data.forget_rings(&unheard);
        let attempts = unheard.iter().map(|id| async move { (id.clone(), self.participants[id].client().await) });
        let unreached: BTreeMap<NodeId, String> =
            join_all(attempts).await.into_iter().filter_map(|(id, r)| r.err().map(|e| (id, e))).collect();
        match self.participant_data.ring_refusal(self.participants.keys(), &unreached) {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// Connects to every participant not yet heard from, so that a new
    /// coordinator checks their rings (and records their data ids) before
    /// its first request rather than at it.
    pub(crate) fn greet_unheard(&self) {
        self.connect_in_background(self.participant_data.unheard(self.participants.keys()));
    }

    /// Opens a connection to each of `ids` that has none, in the
    /// background: its `hello` is checked as it opens (which records or
    /// clears what [`ParticipantData`] holds about it).
    fn connect_in_background(&self, ids: impl IntoIterator<Item = NodeId>) {
        for id in ids {
            let Some(peer) = self.participants.get(&id).cloned() else { continue };
            tokio::spawn(async move {
                if let Err(e) = peer.client().await {
                    tracing::debug!(participant = %id, error = %e, "participant not reached");
                }
            });
        }
    }

    pub(crate) async fn stats(&self) -> NodeStats {
        let mut stats = self.mailbox.ask(Input::Stats).await.unwrap_or_default();
        stats.refused_participants = self.participant_data.refused();
        // A refusal is what the participant's latest connection said, and
        // nothing reconnects to it by itself: ask again in the background,
        // so that the next look shows a participant put right (trial 23B:
        // `status` showed the refusal until a request touched it).
        self.connect_in_background(self.participant_data.refused_ids().iter().filter_map(|id| NodeId::new(id).ok()));
        // Those that answered with another list are listed with why.
        let unheard = self.participant_data.not_yet_answered(self.participants.keys());
        if !unheard.is_empty() {
            let unheard: Vec<&str> = unheard.iter().map(NodeId::as_str).collect();
            stats.refused_participants.push(format!(
                "{}: not yet reached since this coordinator's data was created, so it serves no read or commit \
                 until they answer (their participant lists are unchecked)",
                unheard.join(",")
            ));
        }
        stats
    }

    /// An authorised operator's request.
    pub(crate) async fn admin(&self, request: AdminRequest) -> Result<AdminReply, ServiceError> {
        self.mailbox.ask(|reply| Input::Admin(request, reply)).await?
    }
}

/// A coordinator serving in this process.
pub type RunningCoordinator = Running<CoordinatorError>;

pub async fn start(opts: CoordinatorOptions, listen: Option<&str>) -> Result<RunningCoordinator, CoordinatorError> {
    let entry = opts.cluster.coordinator_entry(&opts.id).ok_or_else(|| CoordinatorError::UnknownId(opts.id.clone()))?;
    let me = NodeId::new(&opts.id).map_err(CoordinatorError::Fatal)?;
    // Deadlines that run out while this process stands still are not
    // blamed on participants (see `twopc_common::stall`).
    twopc_common::stall::watch();
    let addr = listen.unwrap_or(&entry.addr).to_string();
    // Reserved first: a busy port (another instance running) then leaves
    // no new data directory behind. Listening waits until the server can
    // serve (see `net::ReservedPort`).
    let port = net::reserve(&addr).await.map_err(|source| CoordinatorError::Bind { addr: addr.clone(), source })?;
    let local = port.local;
    let log = twopc_common::data_dir::ready(&opts.data_dir, "coordinator", &opts.id, opts.init, |log| {
        RocksWal::<CoordinatorRecord>::exists_at(&log.wal, &log.created)
    })
    .map_err(CoordinatorError::DataDir)?;
    // As a participant does (trial 20B: with a participant added to the
    // cluster file, the old participants refused to start, but this
    // coordinator and the new participant ran, serving the keys the new
    // participant now owned as absent and accepting writes to them).
    twopc_common::data_dir::claim_ring(&opts.data_dir, &opts.cluster.ring()).map_err(CoordinatorError::DataDir)?;
    let data_id = twopc_common::data_dir::data_id(
        &opts.data_dir,
        !RocksWal::<CoordinatorRecord>::exists_at(&log.wal, &log.created),
        false,
    )
    .map_err(CoordinatorError::DataDir)?;
    let participant_data =
        Arc::new(ParticipantData::load(&opts.data_dir, &opts.cluster.ring()).map_err(CoordinatorError::DataDir)?);
    // Lazy writes are synced in the background, except while a durability
    // rule is sabotaged: a record written lazily in breach of it then stays
    // loseable until the next synced write, so the checkers can see it.
    let rocks_wal = Arc::new(RocksWal::<CoordinatorRecord>::open_created_once(
        &log.wal,
        &log.created,
        fault::unless_sabotaged(&["commit-before-sync"], twopc_wal::LAZY_SYNC_INTERVAL),
    )?);
    let wal: Arc<CoordinatorWal> = rocks_wal.clone();
    let checker = participant_data.clone();
    let accept: twopc_common::net::Accept = Arc::new(move |addr, hello| checker.check(addr, hello));
    let participants: HashMap<NodeId, ParticipantPeer> = opts
        .cluster
        .participant
        .iter()
        .map(|p| {
            let id = NodeId::new(&p.id).expect("validated config");
            (
                id,
                Peer::expecting(
                    p.addr.clone(),
                    |s, closed| {
                        net::spawn_watched(ParticipantRpcClient::new(client_config(), net::transport(s)), closed)
                    },
                    Expected {
                        hello: participant_hello,
                        role: Role::Participant,
                        id: Some(p.id.clone()),
                        accept: Some(accept.clone()),
                    },
                ),
            )
        })
        .collect();
    let participants = Arc::new(participants);
    let (mailbox, rx) = Mailbox::new(ENGINE_QUEUE_CAPACITY, "coordinator");
    let mut public_cluster = opts.cluster.clone();
    public_cluster.admin_token = None;
    let mut task = EngineTask::new(Engine::new(me.clone()), wal, participants.clone(), public_cluster);
    let epoch = task.recover()?;
    tracing::info!(coordinator = %me, addr = %local, epoch, "coordinator serving");
    let stopped = tokio::spawn(task.run(rx));
    let admin_token = twopc_common::admin::server_token(&opts.cluster).map(Into::into);
    let commit_gate = Arc::new(CommitGate::default());
    let handle = Handle {
        mailbox,
        ring: Arc::new(opts.cluster.ring()),
        participants,
        participant_data,
        commit_gate: commit_gate.clone(),
    };
    handle.greet_unheard();
    let server = CoordinatorServer { handle, admin_token, me: me.clone(), data_id };
    let listener = port.listen().map_err(|source| CoordinatorError::Bind { addr, source })?;
    let server = tokio::spawn(async move { twopc_common::serve_tarpc!(listener, server).await });
    tracing::debug!(epoch, "started");
    let at_stop: twopc_common::node::AtStop = Box::new(move || match rocks_wal.sync_for_stop() {
        Ok(()) => tracing::info!("log synced for the stop"),
        Err(e) => tracing::warn!(error = %e, "could not sync the log for the stop"),
    });
    let drain: twopc_common::node::Drain = Box::new(move || {
        Box::pin(async move {
            let in_progress = commit_gate.in_progress();
            if in_progress > 0 {
                tracing::info!(
                    in_progress,
                    "new commits refused; waiting up to {STOP_DRAIN_TIMEOUT:?} for those in progress"
                );
            }
            let left = commit_gate.drain(STOP_DRAIN_TIMEOUT).await;
            if left > 0 {
                tracing::warn!(left, "commits still in progress at the stop: their clients get no answer (those logged are delivered, the rest presumed aborted, at the next start)");
            }
        })
    });
    Ok(Running::new(local, stopped, server, at_stop).with_drain(drain))
}

pub(crate) enum Completion {
    Event(Event),
    CommitLogged { txid: TxnId, lsn: Lsn },
    EndLogged { txid: TxnId, commit_lsn: Option<Lsn>, end_lsn: Lsn, horizons: Vec<(u64, Lsn)> },
    Fatal(WalError),
}

struct EngineTask {
    /// The cluster file without its admin token (served to `twopc admin`).
    cluster: ClusterConfig,
    engine: Engine,
    wal: Arc<CoordinatorWal>,
    participants: Arc<HashMap<NodeId, ParticipantPeer>>,
    prepare_senders: HashMap<NodeId, PrepareSender>,
    commit_senders: HashMap<NodeId, CommitSender>,
    pending: HashMap<RequestId, oneshot::Sender<Reply>>,
    next_req: RequestId,
    /// LSN of each Commit record whose transaction has not ended, and
    /// since when (ms since the Unix epoch) it is durable here: logged by
    /// this process, or found in the log when it started. `admin in-doubt`
    /// shows that age for commits not yet delivered everywhere.
    commit_lsn: HashMap<TxnId, (Lsn, u64)>,
    /// Ended transactions' records, trimmed beyond what the engine
    /// remembers (see [`EndedLog`]).
    ended: EndedLog,
    /// LSNs of each txid's Mixed records (removed when an operator
    /// forgets them).
    mixed_lsns: HashMap<TxnId, Vec<Lsn>>,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    /// WAL writes of the inputs handled since the last flush, in order.
    held_writes: HeldWrites<CoordinatorRecord>,
    /// Commits withheld by the `coordinator.before-commit-send` fault
    /// point (fault-point builds only; empty otherwise): their outcome is
    /// not told to anyone asking either, so that the point models a crash
    /// before any participant heard the commit (a participant waiting on
    /// the transaction's lock asks within a millisecond). At most one
    /// entry per firing of the point (`crash-soon` then kills the process).
    withheld_commits: HashSet<TxnId>,
}

/// Sync before Committed. Only the negative control
/// (`commit-before-sync`, in fault-point builds) breaks this rule, to
/// prove the checkers catch it.
fn decision_durability() -> Durability {
    if fault::sabotaged("commit-before-sync") {
        Durability::Lazy
    } else {
        Durability::Sync
    }
}

/// Delay before retry number `attempt` (0: none).
pub fn backoff(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (attempt - 1).min(16);
    (RETRY_BACKOFF_MIN * factor).min(RETRY_BACKOFF_MAX)
}

impl EngineTask {
    fn new(
        engine: Engine,
        wal: Arc<CoordinatorWal>,
        participants: Arc<HashMap<NodeId, ParticipantPeer>>,
        cluster: ClusterConfig,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let prepare_senders = participants
            .iter()
            .map(|(id, peer)| (id.clone(), PrepareSender::start(id.clone(), peer.clone(), done_tx.clone())))
            .collect();
        let commit_senders = participants
            .iter()
            .map(|(id, peer)| (id.clone(), CommitSender::start(id.clone(), peer.clone(), done_tx.clone())))
            .collect();
        EngineTask {
            cluster,
            engine,
            wal,
            participants,
            prepare_senders,
            commit_senders,
            pending: HashMap::new(),
            next_req: 0,
            commit_lsn: HashMap::new(),
            ended: EndedLog::new(crate::engine::MAX_REMEMBERED_OUTCOMES),
            mixed_lsns: HashMap::new(),
            done_tx,
            done_rx,
            held_writes: HeldWrites::default(),
            withheld_commits: HashSet::new(),
        }
    }

    /// Replays the log, syncs the next epoch, and re-drives undelivered
    /// commits. Returns the new epoch.
    fn recover(&mut self) -> Result<u64, CoordinatorError> {
        let mut epochs: Vec<(u64, Lsn)> = Vec::new();
        let mut legacy_up_to = None;
        let mut commits: Vec<(TxnId, Vec<NodeId>, Lsn)> = Vec::new();
        let mut ends: HashMap<TxnId, Lsn> = HashMap::new();
        let mut mixed = Vec::new();
        for (lsn, record) in self.wal.replay()? {
            match record {
                CoordinatorRecord::Epoch(e) => epochs.push((e, lsn)),
                CoordinatorRecord::EpochsKept { legacy_up_to: up_to } => legacy_up_to = Some(up_to),
                CoordinatorRecord::Commit { txid, participants } => commits.push((txid, participants, lsn)),
                CoordinatorRecord::End { txid } => {
                    ends.insert(txid, lsn);
                }
                CoordinatorRecord::Forgotten { epoch, up_to } => self.ended.found_horizon(epoch, up_to, lsn),
                CoordinatorRecord::Mixed { txid, participant } => {
                    self.mixed_lsns.entry(txid.clone()).or_default().push(lsn);
                    tracing::error!(%txid, %participant, "heuristic-mixed: a participant was forced against the logged decision");
                    mixed.push((txid, participant));
                }
            }
        }
        epochs.sort_unstable();
        let last = epochs.last().map(|(e, _)| *e);
        let last_epoch = last.unwrap_or(0);
        let epoch = next_epoch(last, now_ms())?;
        let mut batch = WalBatch::new();
        if legacy_up_to.is_none() {
            // A log from before epochs were kept holds only its last one
            // (0 for an empty log): its earlier epochs are taken as its own.
            batch.append.push(CoordinatorRecord::EpochsKept { legacy_up_to: last_epoch });
        }
        batch.append.push(CoordinatorRecord::Epoch(epoch));
        let dropped = (epochs.len() + 1).saturating_sub(MAX_KEPT_EPOCHS);
        batch.remove = epochs.drain(..dropped).map(|(_, lsn)| lsn).collect();
        let oldest_kept = epochs.first().map_or(epoch, |(e, _)| *e);
        self.ended.drop_epochs_before(oldest_kept, &mut batch.remove);
        self.wal.write(batch, Durability::Sync)?;
        let mut ran: BTreeSet<u64> = epochs.iter().map(|(e, _)| *e).collect();
        ran.insert(epoch);
        let epochs =
            EpochHistory { legacy_up_to: legacy_up_to.unwrap_or(last_epoch), ran, forgotten: self.ended.forgotten() };
        let mut recovered = Vec::new();
        for (txid, participants, lsn) in commits {
            let end = ends.remove(&txid);
            match end {
                Some(end_lsn) => self.ended.push(&txid, Some(lsn), end_lsn),
                None => {
                    tracing::info!(%txid, "re-driving logged commit decision");
                    self.commit_lsn.insert(txid.clone(), (lsn, now_ms()));
                }
            }
            recovered.push((txid, participants, end.is_some()));
        }
        // End records without a Commit record: one-phase commits (the
        // participant logged the decision), oldest first.
        let mut ends: Vec<(TxnId, Lsn)> = ends.into_iter().collect();
        ends.sort_unstable_by_key(|(_, lsn)| *lsn);
        for (txid, end_lsn) in ends {
            self.ended.push(&txid, None, end_lsn);
            recovered.push((txid, Vec::new(), true));
        }
        let commands = self.engine.handle(Event::Recovered { epoch, epochs, commits: recovered, mixed });
        self.execute(commands);
        Ok(epoch)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>) -> CoordinatorError {
        let mut tick = tokio::time::interval(TICK_INTERVAL);
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
                }
            }
            if self.held_writes.is_full() || (rx.is_empty() && self.done_rx.is_empty()) {
                self.flush_writes();
            }
        }
    }

    /// Handles one input from the RPC layer (`None`: the queue closed).
    fn input(&mut self, input: Option<Input>) -> Option<CoordinatorError> {
        match input {
            Some(Input::Engine(request, reply)) => self.request(request, reply),
            Some(Input::Begin(count, reply)) => drop(reply.send(self.begin(count))),
            Some(Input::Stats(reply)) => drop(reply.send(self.stats())),
            Some(Input::Admin(request, reply)) => self.admin(request, reply),
            None => return Some(CoordinatorError::Fatal("request queue closed".into())),
        }
        None
    }

    fn complete(&mut self, done: Completion) -> Option<CoordinatorError> {
        match done {
            Completion::Event(event) => {
                let commands = self.engine.handle(event);
                self.execute(commands);
            }
            Completion::CommitLogged { txid, lsn } => {
                fault::hit("coordinator.after-decision-synced", Some(&txid));
                self.commit_lsn.insert(txid.clone(), (lsn, now_ms()));
                let commands = self.engine.handle(Event::DecisionSynced { txid });
                self.execute(commands);
            }
            Completion::EndLogged { txid, commit_lsn, end_lsn, horizons } => {
                self.ended.push(&txid, commit_lsn, end_lsn);
                for (epoch, lsn) in horizons {
                    self.ended.horizon_logged(epoch, lsn);
                }
            }
            Completion::Fatal(e) => {
                tracing::error!(error = %e, "decision log failed; stopping");
                return Some(CoordinatorError::Wal(e));
            }
        }
        None
    }

    fn stats(&self) -> NodeStats {
        let wal = self.wal.stats();
        let (active, undelivered_commits, heuristic_mixed, open) = self.engine.counts();
        NodeStats {
            id: self.cluster_id(),
            role: "coordinator".into(),
            epoch: Some(self.engine.epoch()),
            now_ms: now_ms(),
            active,
            open,
            undelivered_commits,
            heuristic_mixed,
            wal_syncs: wal.syncs,
            wal_batches: wal.batches,
            wal_groups: wal.groups,
            wal_records: wal.records_appended,
            ..NodeStats::default()
        }
    }

    fn cluster_id(&self) -> String {
        self.engine.me().to_string()
    }

    fn admin(&mut self, request: AdminRequest, reply: AdminResult) {
        let answer = match request {
            AdminRequest::Ping => Ok(AdminReply::Pong),
            AdminRequest::InDoubt => {
                let mut views = self.engine.active_views();
                for view in &mut views {
                    let logged = view.txid.as_ref().and_then(|txid| self.commit_lsn.get(txid));
                    if let Some((_, at_ms)) = logged {
                        view.since_ms = Some(*at_ms);
                    }
                }
                Ok(AdminReply::Txns(views))
            }
            AdminRequest::Show(txid) => Ok(AdminReply::Txn(Box::new(self.engine.view(&txid)))),
            AdminRequest::Cluster => Ok(AdminReply::Cluster(self.cluster.to_toml())),
            // Forced outcomes live at participants; a coordinator has its
            // heuristic-mixed findings, which outlive a participant's
            // record forgotten with --force (trial 18C).
            AdminRequest::Heuristics => Ok(AdminReply::Txns(self.engine.mixed_views())),
            AdminRequest::Locks { .. } | AdminRequest::Resolve { .. } => {
                Err(ServiceError::Invalid("locks and heuristic resolution live at participants".into()))
            }
            AdminRequest::Recover | AdminRequest::Forget(_) => {
                let req = self.next_req;
                self.next_req += 1;
                let (engine_tx, engine_rx) = oneshot::channel();
                self.pending.insert(req, engine_tx);
                tokio::spawn(async move {
                    let answer = match engine_rx.await {
                        Ok(Reply::Recovered { asked }) => Ok(AdminReply::Recovered { asked }),
                        Ok(Reply::Ack) => Ok(AdminReply::Forgotten),
                        Ok(Reply::Error(e)) => Err(e),
                        Ok(other) => Err(ServiceError::Invalid(format!("unexpected engine reply {other:?}"))),
                        Err(_) => Err(ServiceError::Unavailable("coordinator is stopping".into())),
                    };
                    let _ = reply.send(answer);
                });
                let event = match request {
                    AdminRequest::Forget(txid) => Event::ForgetMixed { req, txid },
                    _ => Event::RecoverNow { req },
                };
                let commands = self.engine.handle(event);
                return self.execute(commands);
            }
        };
        let _ = reply.send(answer);
    }

    /// Mints up to `count` ids, one engine `Begin` each; stops early when
    /// the engine refuses (too many open), failing only if none was minted.
    fn begin(&mut self, count: u32) -> Result<Vec<TxnId>, ServiceError> {
        let mut txids = Vec::new();
        for _ in 0..count.clamp(1, MAX_BEGIN_BATCH) {
            let req = self.next_req;
            self.next_req += 1;
            match self.engine.handle(Event::Begin { req, now_ms: now_ms() }).as_slice() {
                [Command::Reply { reply: Reply::Begun(txid), .. }] => txids.push(txid.clone()),
                [Command::Reply { reply: Reply::Error(e), .. }] if txids.is_empty() => return Err(e.clone()),
                [Command::Reply { reply: Reply::Error(_), .. }] => break,
                other => unreachable!("the engine answers Begin with one reply, not {other:?}"),
            }
        }
        Ok(txids)
    }

    fn request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        let req = self.next_req;
        self.next_req += 1;
        let event = match request {
            Request::Commit { txid, plan } => Event::Commit { req, txid, plan },
            Request::Abort(txid) => Event::ClientAbort { req, txid },
            Request::Outcome(txid) if self.withheld_commits.contains(&txid) => {
                tracing::warn!(%txid, "fault point: not answering an outcome question about a withheld commit");
                return;
            }
            Request::Outcome(txid) => Event::Outcome { req, txid },
        };
        self.pending.insert(req, reply);
        let commands = self.engine.handle(event);
        self.execute(commands);
    }

    fn peer(&self, node: &NodeId) -> ParticipantPeer {
        self.participants.get(node).cloned().unwrap_or_else(|| panic!("routed to {node}, which is not in the cluster"))
    }

    fn execute(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::SendPrepare { to, prepare } => self.send_prepare(to, prepare),
                Command::SendOnePhase { to, prepare, attempt } => self.send_one_phase(to, prepare, attempt),
                Command::SyncDecision { txid, participants } => {
                    fault::hit("coordinator.before-decision", Some(&txid));
                    tracing::debug!(%txid, "syncing commit decision");
                    let mut batch = WalBatch::new();
                    batch.append.push(CoordinatorRecord::Commit { txid: txid.clone(), participants });
                    let tx = self.done_tx.clone();
                    self.held_writes.hold(
                        batch,
                        decision_durability(),
                        Box::new(move |result| {
                            let _ = tx.send(match result {
                                Ok(lsns) => Completion::CommitLogged { txid, lsn: lsns[0] },
                                Err(e) => Completion::Fatal(e),
                            });
                        }),
                    );
                }
                Command::SendCommit { txid, to, attempt } => {
                    // Fault point: withhold every first commit of this
                    // transaction (they come in one command list).
                    if attempt == 0
                        && (self.withheld_commits.contains(&txid)
                            || fault::hit("coordinator.before-commit-send", Some(&txid)))
                    {
                        self.withheld_commits.insert(txid);
                        continue;
                    }
                    self.send_commit(txid, to, attempt)
                }
                Command::SendAbort { txid, to } => {
                    tracing::debug!(%txid, participant = %to, "aborting: telling the participant");
                    let peer = self.peer(&to);
                    let tx = self.done_tx.clone();
                    tokio::spawn(async move {
                        let sent = txid.clone();
                        // One try: a participant that misses it asks later.
                        let result = peer
                            .call_within(ABORT_GUARD, |c| {
                                let sent = sent.clone();
                                async move { c.abort(context_with_timeout(ABORT_TIMEOUT), sent).await }
                            })
                            .await;
                        if let Err(e) = &result {
                            tracing::debug!(%txid, participant = %to, error = %e, "abort not delivered");
                        }
                        let delivered = matches!(result, Ok(Ok(())));
                        let _ = tx.send(Completion::Event(Event::AbortSent { txid, to, delivered }));
                    });
                }
                Command::LogEnd { txid } => self.log_end(txid),
                Command::Probe { txid } => self.probe(txid),
                Command::LogMixed { txid, participant } => {
                    tracing::error!(%txid, %participant, "heuristic-mixed: participant was forced to abort a committed transaction");
                    let mut batch = WalBatch::new();
                    batch.append.push(CoordinatorRecord::Mixed { txid: txid.clone(), participant });
                    let lsns = self.write_inline(batch);
                    self.mixed_lsns.entry(txid).or_default().extend(lsns);
                }
                Command::DropMixed { txid } => {
                    tracing::warn!(%txid, "heuristic-mixed finding forgotten by an operator");
                    let mut batch = WalBatch::new();
                    batch.remove = self.mixed_lsns.remove(&txid).unwrap_or_default();
                    self.write_inline(batch);
                }
                Command::Reply { req, reply } => {
                    if let Some(sender) = self.pending.remove(&req) {
                        let _ = sender.send(reply);
                    }
                }
            }
        }
    }

    fn send_prepare(&self, to: NodeId, prepare: PrepareRequest) {
        match self.prepare_senders.get(&to) {
            Some(sender) => sender.send(prepare),
            None => panic!("prepare for {to}, which is not in the cluster"),
        }
    }

    fn send_one_phase(&self, to: NodeId, prepare: PrepareRequest, attempt: u32) {
        let peer = self.peer(&to);
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            // (A zero sleep would still wait for the timer's next 1 ms tick.)
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let txid = prepare.txid.clone();
            let result = match peer
                .try_call_within(CALL_GUARD, |c| {
                    let prepare = prepare.clone();
                    async move { c.commit_one_phase(context_with_timeout(RPC_TIMEOUT), prepare).await }
                })
                .await
            {
                Ok(Ok(outcome)) => Ok(outcome),
                // Refused before doing anything: a definite abort.
                Ok(Err(e)) => Ok(Outcome::Aborted(AbortReason::from_participant_error(to.clone(), &e))),
                Err(CallError::Unreachable(e)) => Err(Unanswered::NotSent(e)),
                Err(CallError::Lost(e)) => {
                    if worth_a_warning(attempt) {
                        let failed_attempts = attempt.saturating_add(1);
                        tracing::warn!(%txid, participant = %to, failed_attempts, error = %e, "one-phase commit unanswered; retrying");
                    }
                    Err(Unanswered::Lost(e))
                }
            };
            tracing::debug!(%txid, participant = %to, attempt, ?result, "one-phase commit answered");
            let _ = tx.send(Completion::Event(Event::OnePhaseResult { txid, result, attempt }));
        });
    }

    fn send_commit(&self, txid: TxnId, to: NodeId, attempt: u32) {
        match self.commit_senders.get(&to) {
            Some(sender) => sender.send(txid, attempt),
            None => panic!("commit for {to}, which is not in the cluster"),
        }
    }

    /// Writes an operator's rare record at once, synced, after everything
    /// held: before the commands that follow it. A failed write stops the
    /// server.
    fn write_inline(&mut self, batch: WalBatch<CoordinatorRecord>) -> Vec<Lsn> {
        self.held_writes.write_now(&*self.wal, self.pending.len(), batch).unwrap_or_else(|e| {
            let _ = self.done_tx.send(Completion::Fatal(e));
            Vec::new()
        })
    }

    /// Submits the held writes (see `HeldWrites::flush`).
    fn flush_writes(&mut self) {
        self.held_writes.flush(&*self.wal, self.pending.len());
    }

    /// Logs End lazily and trims the oldest finished transactions beyond
    /// what the engine remembers.
    fn log_end(&mut self, txid: TxnId) {
        let commit_lsn = self.commit_lsn.remove(&txid).map(|(lsn, _)| lsn);
        let mut batch = WalBatch::new();
        batch.append.push(CoordinatorRecord::End { txid: txid.clone() });
        let trimmed_epochs = self.ended.trim_for_one_more(&mut batch);
        let tx = self.done_tx.clone();
        self.held_writes.hold(
            batch,
            Durability::Lazy,
            Box::new(move |result| {
                let _ = tx.send(match result {
                    Ok(lsns) => Completion::EndLogged {
                        txid,
                        commit_lsn,
                        end_lsn: lsns[0],
                        horizons: trimmed_epochs.into_iter().zip(lsns[1..].iter().copied()).collect(),
                    },
                    Err(e) => Completion::Fatal(e),
                });
            }),
        );
    }

    fn probe(&self, txid: TxnId) {
        let peers: Vec<(NodeId, ParticipantPeer)> =
            self.participants.iter().map(|(id, peer)| (id.clone(), peer.clone())).collect();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let asks = peers.into_iter().map(|(id, peer)| {
                let txid = txid.clone();
                async move {
                    let answer = match peer
                        .call(|c| {
                            let txid = txid.clone();
                            async move { c.probe(context_with_timeout(RPC_TIMEOUT), txid).await }
                        })
                        .await
                    {
                        Ok(Ok(answer)) => Ok(answer),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(e),
                    };
                    (id, answer)
                }
            });
            let answers = join_all(asks).await;
            log_probe(&txid, &answers);
            let _ = tx.send(Completion::Event(Event::ProbeResult { txid, answers }));
        });
    }
}

/// Probes logged at info: the 1st, 2nd, 4th… and at least one a minute (a
/// transaction whose participant is down is probed at each of the others'
/// questions, every 2 s: trial 25A saw a line a second).
static PROBES_LOGGED: LogThrottle = LogThrottle::new();

/// The coordinator's side of a presumed abort (trial 24C: only the
/// participants said anything).
fn log_probe(txid: &TxnId, answers: &[(NodeId, Result<ProbeAnswer, String>)]) {
    let applied = answers.iter().filter(|(_, a)| *a == Ok(ProbeAnswer::Committed)).count();
    let prepared = answers.iter().filter(|(_, a)| matches!(a, Ok(ProbeAnswer::Prepared { .. }))).count();
    let unanswered: Vec<String> = answers.iter().filter(|(_, a)| a.is_err()).map(|(id, _)| id.to_string()).collect();
    let unanswered = if unanswered.is_empty() { "none".to_string() } else { unanswered.join(",") };
    let what = "no Commit record here, participants asked: committed if one applied it, else presumed aborted \
                once every one has answered (every one it involved, when a prepared one names them)";
    // One every participant that counts answered settles the txid (an id
    // of a foreign epoch is probed again 10 s later at most): always said,
    // so that the last line about it is not "unanswered=p2" (trial 27A).
    let settled = counted_answers(answers).iter().all(|a| a.is_ok());
    match PROBES_LOGGED.event() {
        Some(probes) => tracing::info!(%txid, applied, prepared, %unanswered, probes, "{what}"),
        None if settled => tracing::info!(%txid, applied, prepared, %unanswered, "{what}"),
        None => tracing::debug!(%txid, applied, prepared, %unanswered, "{what}"),
    }
}

/// 2024-01-01T00:00:00Z, in ms since the Unix epoch.
const EPOCH_CLOCK_BASE_MS: u64 = 1_704_067_200_000;

/// The epoch of a coordinator starting now: after the last one in its log,
/// and at least the milliseconds since 2024 on its clock. A coordinator
/// whose log was lost (an emptied or mistyped data directory, an old
/// backup), or a second process with the same id, then never reuses a txid
/// that participants remember. (It did: starting again at epoch 1, its
/// new `c1.1.2` met participants that had committed the old `c1.1.2` and
/// took the new prepare for a duplicate, so a client told "committed" saw
/// its writes half applied.) A log that recorded no start (`None`) on a
/// clock before 2024 cannot tell: refused (trial 25B: a coordinator on a
/// 2020 clock, its log lost, minted `c1.1.1` again and half applied it).
fn next_epoch(last_epoch: Option<u64>, now_ms: u64) -> Result<u64, CoordinatorError> {
    match last_epoch {
        None if now_ms < EPOCH_CLOCK_BASE_MS => Err(CoordinatorError::ClockBefore2024 { now_ms }),
        last => Ok((last.unwrap_or(0) + 1).max(now_ms.saturating_sub(EPOCH_CLOCK_BASE_MS))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_follows_the_log_and_the_clock() {
        let now = EPOCH_CLOCK_BASE_MS + 60_000_000_000;
        // A lost log still gives an epoch past every earlier one.
        assert_eq!(next_epoch(None, now).unwrap(), 60_000_000_000);
        // Restarts faster than the clock still move on.
        assert_eq!(next_epoch(Some(60_000_000_000), now).unwrap(), 60_000_000_001);
        // A clock before 2024 (or unset) falls back on the log...
        assert_eq!(next_epoch(Some(6), 0).unwrap(), 7);
        // ...and a new log cannot start on it.
        let early = EPOCH_CLOCK_BASE_MS - 1;
        assert!(
            matches!(next_epoch(None, early), Err(CoordinatorError::ClockBefore2024 { now_ms }) if now_ms == early)
        );
        assert_eq!(next_epoch(None, EPOCH_CLOCK_BASE_MS).unwrap(), 1);
    }
}
