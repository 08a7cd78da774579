//! A simulated participant: the real [`Engine`] driven by an executor that
//! mirrors `participant/src/runtime.rs` — the same WAL batches
//! (`finish_batch`: Done record + removal of the Prepared record + data
//! writes), the same durability per command, the same completions fed
//! back, the same recovery (`Recovered` from a replay of the durable log).

use super::config::Sabotage;
use super::disk::{Disk, LazySync, Written};
use super::env::{Env, Timer, LAZY_SYNC_MS};
use super::history::Ghost;
use super::msg::{Addr, CallId, Request, Response};
use std::collections::BTreeMap;
use twopc_common::limits::RPC_TIMEOUT;
use twopc_common::txn::PrepareRequest;
use twopc_common::{Key, NodeId, ServiceError, TxnId, Versioned, Vote};
use twopc_coordinator::engine::Reply as CReply;
use twopc_participant::engine::{Command, Engine, Event, Reply, RequestId};
use twopc_participant::forgotten::Horizons;
use twopc_participant::record::{Decision, ParticipantRecord};
use twopc_participant::runtime::{MAX_PARKED_READS, PARKED_READ_RECHECK, READ_WAIT_MAX};
use twopc_participant::store::{self, ParticipantWal};
use twopc_wal::{Durability, Lsn, Wal, WalBatch};

/// The participant runtime's tick period.
pub const TICK_MS: u64 = 500;
/// How long a read waits for a prepared writer (the runtime's `READ_WAIT_MAX`).
const READ_WAIT_MS: u64 = READ_WAIT_MAX.as_millis() as u64;
/// How often waiting reads are looked at (the runtime's `PARKED_READ_RECHECK`).
const READ_RECHECK_MS: u64 = PARKED_READ_RECHECK.as_millis() as u64;

/// What a written batch completes.
#[derive(Debug)]
pub enum Done {
    PrepareLogged(TxnId),
    Applied(TxnId),
    DoneLogged,
    /// The durability barrier before a commit's reply (the runtime's
    /// `ack_when_durable`): the reply leaves now.
    Acked {
        to: Addr,
        call: CallId,
        txid: Option<TxnId>,
        reply: Reply,
    },
}

pub struct ParticipantNode {
    pub index: usize,
    pub id: NodeId,
    ring: u64,
    pub engine: Engine,
    pub disk: Disk<ParticipantRecord, Done, Ghost>,
    /// LSN of each live Prepared record (as the runtime keeps it).
    prepared_lsn: BTreeMap<TxnId, Lsn>,
    /// Requests the engine has not answered: caller, call, txid, and
    /// whether it is a `Commit` (its reply waits for a covering sync).
    pending: BTreeMap<RequestId, (Addr, CallId, Option<TxnId>, bool)>,
    next_req: RequestId,
    /// Outcome questions in flight.
    asking: BTreeMap<CallId, TxnId>,
    /// Reads waiting for a prepared writer of one of their keys (the
    /// runtime's parked reads): caller, call, keys, deadline.
    parked: Vec<(Addr, CallId, Vec<Key>, u64)>,
    /// A `ReadRecheck` timer is set.
    recheck_armed: bool,
}

impl ParticipantNode {
    pub fn new(index: usize, ring: u64) -> Self {
        let id = participant_id(index);
        ParticipantNode {
            index,
            engine: Engine::new(id.clone(), ring),
            id,
            ring,
            disk: Disk::new(),
            prepared_lsn: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_req: 0,
            asking: BTreeMap::new(),
            parked: Vec::new(),
            recheck_armed: false,
        }
    }

    fn me(&self) -> Addr {
        Addr::Participant(self.index)
    }

    /// A power cut: volatile state and unsynced writes are gone.
    pub fn crash(&mut self) {
        self.disk.crash();
    }

    /// Starts a new incarnation from the durable log.
    pub fn recover(&mut self, env: &mut Env) {
        self.engine = Engine::new(self.id.clone(), self.ring);
        self.prepared_lsn.clear();
        self.pending.clear();
        self.asking.clear();
        self.parked.clear();
        self.recheck_armed = false;
        let mut prepared = Vec::new();
        let mut decided = Vec::new();
        let mut forgotten = Horizons::default();
        // The latest Heuristic record of a txid wins (as in the runtime).
        let mut heuristics = BTreeMap::new();
        let records = self.disk.wal.replay().unwrap_or_else(|e| panic!("{}: replay failed: {e}", self.id));
        for (lsn, record) in records {
            match record {
                ParticipantRecord::Prepared(record) => {
                    self.prepared_lsn.insert(record.txid.clone(), lsn);
                    prepared.push(record);
                }
                ParticipantRecord::Done { txid, decision } => decided.push((txid, decision)),
                ParticipantRecord::Heuristic(h) => {
                    heuristics.insert(h.txid.clone(), h);
                }
                ParticipantRecord::Forgotten(h) => forgotten.merge(&h),
            }
        }
        let heuristics = heuristics.into_values().collect();
        self.feed(env, Event::Recovered { prepared, decided, heuristics, forgotten, now_ms: env.now_ms });
        env.timer(self.me(), TICK_MS, Timer::Tick);
    }

    /// True when nothing is in progress here.
    pub fn is_quiet(&self) -> bool {
        self.engine.in_doubt().next().is_none()
            && self.engine.locks().is_empty()
            && self.disk.is_idle()
            && self.asking.is_empty()
            && self.parked.is_empty()
    }

    /// Requests the engine never answered (checked once the run is quiet).
    pub fn unanswered(&self) -> Vec<String> {
        self.pending.values().map(|(from, call, txid, _)| format!("call {call} from {from:?} about {txid:?}")).collect()
    }

    /// What is in progress, for failure messages.
    pub fn describe(&self) -> String {
        format!("{}: pending {:?}, asking {:?}, disk idle {}", self.id, self.pending, self.asking, self.disk.is_idle())
    }

    pub fn request(&mut self, env: &mut Env, from: Addr, call: CallId, request: Request) {
        let now_ms = env.now_ms;
        let req = self.next_req;
        self.next_req += 1;
        let is_commit = matches!(request, Request::Commit(_));
        let (event, txid) = match request {
            Request::Read(keys) => return self.read(env, from, call, keys, now_ms + READ_WAIT_MS),
            Request::Prepare(prepare) => match self.current(env, &prepare) {
                Ok(current) => {
                    let txid = prepare.txid.clone();
                    (Event::Prepare { req, prepare, current: current.into_iter().collect(), now_ms }, Some(txid))
                }
                Err(e) => return env.respond(self.me(), from, call, Response::Participant(Reply::Error(e))),
            },
            Request::OnePhase(prepare) => match self.current(env, &prepare) {
                Ok(current) => {
                    let txid = prepare.txid.clone();
                    (Event::OnePhase { req, prepare, current: current.into_iter().collect(), now_ms }, Some(txid))
                }
                Err(e) => return env.respond(self.me(), from, call, Response::Participant(Reply::Error(e))),
            },
            Request::Commit(txid) => (Event::Commit { req: Some(req), txid: txid.clone() }, Some(txid)),
            Request::Abort(txid) => (Event::Abort { req: Some(req), txid: txid.clone() }, Some(txid)),
            Request::Probe(txid) => (Event::Probe { req, txid: txid.clone() }, Some(txid)),
            other => panic!("{} was sent a coordinator request: {other:?}", self.id),
        };
        self.pending.insert(req, (from, call, txid, is_commit));
        self.feed(env, event);
    }

    /// Serves a read now, parks it while a prepared writer of one of its
    /// keys may already be committed, or fails it once the writer stayed
    /// in doubt past the deadline (the runtime's `read`).
    fn read(&mut self, env: &mut Env, from: Addr, call: CallId, keys: Vec<Key>, deadline_ms: u64) {
        let writer = keys.iter().find_map(|k| self.engine.pending_writer(k)).cloned();
        let values = match writer {
            Some(_) if env.now_ms < deadline_ms && self.parked.len() < MAX_PARKED_READS => {
                self.parked.push((from, call, keys, deadline_ms));
                if !std::mem::replace(&mut self.recheck_armed, true) {
                    env.timer(self.me(), READ_RECHECK_MS, Timer::ReadRecheck);
                }
                return;
            }
            Some(_) if env.now_ms < deadline_ms => {
                Err(format!("overloaded: {MAX_PARKED_READS} reads waiting for prepared writers"))
            }
            Some(writer) => Err(format!("unavailable: written by {writer}, still in doubt")),
            None => {
                let wal: &ParticipantWal = &self.disk.wal;
                keys.iter()
                    .map(|k| store::get(wal, k))
                    .collect::<Result<Vec<Versioned>, ServiceError>>()
                    .map_err(|e| e.to_string())
            }
        };
        env.respond(self.me(), from, call, Response::Read(values));
    }

    /// The writers waiting reads wait for are asked about (the runtime's
    /// `recheck_parked_reads`), and the reads looked at again.
    fn recheck_parked(&mut self, env: &mut Env) {
        self.recheck_armed = false;
        let writers: std::collections::BTreeSet<TxnId> = self
            .parked
            .iter()
            .flat_map(|(_, _, keys, _)| keys.iter().filter_map(|k| self.engine.pending_writer(k).cloned()))
            .collect();
        for txid in writers {
            self.feed(env, Event::ReadWaiting { txid, now_ms: env.now_ms });
        }
        self.release_parked(env);
    }

    /// Retries every parked read (after an outcome applied, or a tick).
    fn release_parked(&mut self, env: &mut Env) {
        for (from, call, keys, deadline_ms) in std::mem::take(&mut self.parked) {
            self.read(env, from, call, keys, deadline_ms);
        }
    }

    /// Current committed state of every key the request touches, as the
    /// runtime reads it (`EngineTask::current`).
    fn current(&self, env: &Env, prepare: &PrepareRequest) -> Result<BTreeMap<Vec<u8>, Versioned>, ServiceError> {
        prepare.ops.validate().map_err(ServiceError::Invalid)?;
        let wal: &ParticipantWal = &self.disk.wal;
        let mut current = BTreeMap::new();
        for key in prepare.ops.keys() {
            if !current.contains_key(key) {
                current.insert(key.clone(), store::get(wal, key)?);
            }
        }
        if env.sabotage == Sabotage::SkipReadValidation {
            for (key, read) in &prepare.ops.reads {
                if let Some(v) = current.get_mut(key) {
                    v.version = *read;
                }
            }
        }
        Ok(current)
    }

    pub fn response(&mut self, env: &mut Env, call: CallId, response: Response) {
        let Some(txid) = self.asking.remove(&call) else {
            return;
        };
        if let Response::Coordinator(CReply::Status(status)) = response {
            self.feed(env, Event::OutcomeAnswer { txid, status });
            self.release_parked(env);
        }
    }

    pub fn timer(&mut self, env: &mut Env, timer: Timer) {
        match timer {
            Timer::Tick => {
                self.feed(env, Event::Tick { now_ms: env.now_ms });
                self.release_parked(env);
                env.timer(self.me(), TICK_MS, Timer::Tick);
            }
            Timer::CallTimeout(call) => {
                self.asking.remove(&call);
            }
            Timer::ReadRecheck => self.recheck_parked(env),
            other => panic!("{}: unexpected timer {other:?}", self.id),
        }
    }

    /// Writes the queued batches and feeds their completions.
    pub fn flush(&mut self, env: &mut Env) {
        let flushed = self.disk.flush(env.now_ms);
        for ghost in flushed.durable {
            env.history.durable(env.now_ms, Some(self.index), ghost);
        }
        if flushed.lazy {
            env.schedule_lazy_sync(self.me(), env.now_ms + LAZY_SYNC_MS);
        }
        if let Some(due_ms) = flushed.deferred_due_ms {
            env.schedule_lazy_sync(self.me(), due_ms);
        }
        self.completed(env, flushed.written);
    }

    fn completed(&mut self, env: &mut Env, written: Vec<Written<Done>>) {
        for written in written {
            let lsns = written.lsns.unwrap_or_else(|e| panic!("{}: write failed: {e}", self.id));
            match written.tag {
                Done::PrepareLogged(txid) => {
                    self.prepared_lsn.insert(txid.clone(), lsns[0]);
                    self.feed(env, Event::PrepareSynced { txid });
                }
                Done::Applied(txid) => {
                    self.feed(env, Event::Applied { txid });
                    self.release_parked(env);
                }
                Done::DoneLogged => {}
                Done::Acked { to, call, txid, reply } => self.send_commit_reply(env, to, call, txid, reply),
            }
        }
    }

    /// The reply to a commit leaves: the ghost check that the apply it
    /// acknowledges is durable (the coordinator may now forget).
    fn send_commit_reply(&mut self, env: &mut Env, to: Addr, call: CallId, txid: Option<TxnId>, reply: Reply) {
        if let (Reply::Ack, Some(txid)) = (&reply, &txid) {
            env.history.commit_acked(env.now_ms, self.index, txid);
        }
        env.respond(self.me(), to, call, Response::Participant(reply));
        env.crash_point(self.me());
    }

    /// The WAL's background sync of lazy writes.
    pub fn lazy_sync(&mut self, env: &mut Env) {
        match self.disk.lazy_sync(env.now_ms, LAZY_SYNC_MS) {
            LazySync::Synced(ghosts, written) => {
                for ghost in ghosts {
                    env.history.durable(env.now_ms, Some(self.index), ghost);
                }
                self.completed(env, written);
            }
            LazySync::Later(at_ms) => env.schedule_lazy_sync(self.me(), at_ms),
            LazySync::Nothing => {}
        }
    }

    fn feed(&mut self, env: &mut Env, event: Event) {
        let commands = self.engine.handle(event);
        self.execute(env, commands);
    }

    fn submit(
        &mut self,
        env: &mut Env,
        batch: WalBatch<ParticipantRecord>,
        durability: Durability,
        tag: Done,
        ghost: Option<Ghost>,
    ) {
        if self.disk.submit(batch, durability, tag, ghost) {
            env.schedule_flush(self.me(), self.disk.wants_sync());
        }
    }

    fn execute(&mut self, env: &mut Env, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::SyncPrepared(record) => {
                    let txid = record.txid.clone();
                    let mut batch = WalBatch::new();
                    batch.append.push(ParticipantRecord::Prepared(record));
                    let durability = durability(env.sabotage == Sabotage::VoteBeforeSync);
                    self.submit(env, batch, durability, Done::PrepareLogged(txid.clone()), Some(Ghost::Prepared(txid)));
                    env.crash_point(self.me());
                }
                Command::Apply { txid, writes, synced } => {
                    let mut batch = self.finish_batch(&txid, Decision::Committed);
                    batch.data = store::data_writes(&writes);
                    let durability =
                        if synced { durability(env.sabotage == Sabotage::ApplyBeforeSync) } else { Durability::Lazy };
                    self.submit(
                        env,
                        batch,
                        durability,
                        Done::Applied(txid.clone()),
                        Some(Ghost::Applied(txid, writes)),
                    );
                    env.crash_point(self.me());
                }
                Command::ForgetAborted { txid } => {
                    env.history.participant_aborted(env.now_ms, self.index, &txid);
                    let batch = self.finish_batch(&txid, Decision::Aborted);
                    self.submit(env, batch, Durability::Lazy, Done::DoneLogged, None);
                }
                Command::Reply { req, reply } => {
                    let Some((to, call, txid, is_commit)) = self.pending.remove(&req) else {
                        continue;
                    };
                    if is_commit {
                        if env.sabotage == Sabotage::AckBeforeSync {
                            self.send_commit_reply(env, to, call, txid, reply);
                        } else {
                            let done = Done::Acked { to, call, txid, reply };
                            self.submit(env, WalBatch::new(), Durability::Deferred, done, None);
                        }
                        continue;
                    }
                    let yes = reply == Reply::Vote(Vote::Yes);
                    if let (true, Some(txid)) = (yes, &txid) {
                        env.history.vote_yes(env.now_ms, self.index, txid);
                    }
                    env.respond(self.me(), to, call, Response::Participant(reply));
                    if yes {
                        env.crash_point(self.me());
                    }
                }
                Command::AskOutcome { txid } => {
                    let timeout = RPC_TIMEOUT.as_millis() as u64;
                    let call = env.call(self.me(), Addr::Coordinator, Request::Outcome(txid.clone()), timeout);
                    self.asking.insert(call, txid);
                }
                Command::LogHeuristic(record) => {
                    // Operators only (never in the simulation): written
                    // inline, synced, as the runtime does.
                    let mut batch = WalBatch::new();
                    batch.append.push(ParticipantRecord::Heuristic(record));
                    if let Err(e) = self.disk.wal.write(batch, Durability::Sync) {
                        panic!("{}: heuristic write failed: {e}", self.id);
                    }
                }
                Command::DropHeuristic { txid } => panic!("{}: no operator in the simulation forgets {txid}", self.id),
            }
        }
    }

    /// The runtime's `finish_batch`: log the decision and drop the
    /// Prepared record, in one batch.
    fn finish_batch(&mut self, txid: &TxnId, decision: Decision) -> WalBatch<ParticipantRecord> {
        let mut batch = WalBatch::new();
        batch.append.push(ParticipantRecord::Done { txid: txid.clone(), decision });
        batch.remove.extend(self.prepared_lsn.remove(txid));
        batch
    }
}

fn durability(sabotaged: bool) -> Durability {
    if sabotaged {
        Durability::Lazy
    } else {
        Durability::Sync
    }
}

/// `p1`, `p2`, ... for indexes 0, 1, ...
pub fn participant_id(index: usize) -> NodeId {
    NodeId::new(&format!("p{}", index + 1)).expect("a valid node id")
}
