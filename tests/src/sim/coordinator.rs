//! A simulated coordinator: the real [`Engine`] driven by an executor that
//! mirrors `coordinator/src/runtime.rs` and `server.rs` — routing with the
//! ring (the real `routing::plan`), prepares with a deadline, one-phase and commit sends
//! retried after `backoff(attempt)`, single-try aborts, probes of every
//! participant, the decision log (Commit synced, End lazy), and recovery
//! (replay, bump and sync the epoch, `Recovered` with a new epoch).

use super::config::Sabotage;
use super::disk::{Disk, LazySync};
use super::env::{Env, Timer, LAZY_SYNC_MS};
use super::history::Ghost;
use super::msg::{Addr, CallId, Request, Response};
use super::participant::participant_id;
use std::collections::{BTreeMap, BTreeSet};
use twopc_common::limits::RPC_TIMEOUT;
use twopc_common::ring::Ring;
use twopc_common::txn::ProbeAnswer;
use twopc_common::{AbortReason, NodeId, Outcome, OutcomeStatus, ServiceError, TxnId};
use twopc_coordinator::engine::{Command, Engine, Event, Reply, RequestId, Unanswered};
use twopc_coordinator::epochs::EpochHistory;
use twopc_coordinator::record::CoordinatorRecord;
use twopc_coordinator::routing;
use twopc_coordinator::runtime::{backoff, ABORT_TIMEOUT};
use twopc_participant::engine::Reply as PReply;
use twopc_wal::{Durability, Wal, WalBatch};

/// The coordinator runtime's tick period.
pub const TICK_MS: u64 = 1_000;

/// What a written batch completes.
#[derive(Debug)]
pub enum Done {
    CommitLogged(TxnId),
    EndLogged,
}

/// An RPC the coordinator is waiting on.
#[derive(Debug)]
enum Call {
    Prepare { txid: TxnId, to: usize },
    OnePhase { txid: TxnId, to: usize, attempt: u32 },
    Commit { txid: TxnId, to: usize, attempt: u32 },
    Abort { txid: TxnId, to: usize },
    Probe { probe: u64, slot: usize },
}

type ProbeAnswers = Vec<Option<Result<ProbeAnswer, String>>>;

pub struct CoordinatorNode {
    pub id: NodeId,
    ring: Ring,
    pub engine: Engine,
    pub disk: Disk<CoordinatorRecord, Done, Ghost>,
    /// Requests the engine has not answered: caller, call, txid.
    pending: BTreeMap<RequestId, (Addr, CallId, &'static str, Option<TxnId>)>,
    next_req: RequestId,
    /// RPCs this coordinator waits on.
    calls: BTreeMap<CallId, Call>,
    /// Probes collecting answers: txid and one slot per participant.
    probes: BTreeMap<u64, (TxnId, ProbeAnswers)>,
    next_probe: u64,
}

impl CoordinatorNode {
    pub fn new(ring: Ring) -> Self {
        let id = coordinator_id();
        CoordinatorNode {
            engine: Engine::new(id.clone()),
            id,
            ring,
            disk: Disk::new(),
            pending: BTreeMap::new(),
            next_req: 0,
            calls: BTreeMap::new(),
            probes: BTreeMap::new(),
            next_probe: 0,
        }
    }

    pub fn crash(&mut self) {
        self.disk.crash();
    }

    /// Starts a new incarnation: replay, sync the next epoch, re-drive
    /// every Commit without End (the runtime's `recover`).
    pub fn recover(&mut self, env: &mut Env) {
        self.engine = Engine::new(self.id.clone());
        self.pending.clear();
        self.calls.clear();
        self.probes.clear();
        let mut last_epoch = 0;
        let mut epoch_lsns = Vec::new();
        let mut commits = Vec::new();
        let mut ends = BTreeSet::new();
        let mut mixed = Vec::new();
        let records = self.disk.wal.replay().unwrap_or_else(|e| panic!("coordinator replay failed: {e}"));
        for (lsn, record) in records {
            match record {
                CoordinatorRecord::Epoch(e) => {
                    last_epoch = last_epoch.max(e);
                    epoch_lsns.push(lsn);
                }
                CoordinatorRecord::Commit { txid, participants } => commits.push((txid, participants)),
                CoordinatorRecord::End { txid } => {
                    ends.insert(txid);
                }
                CoordinatorRecord::Mixed { txid, participant } => mixed.push((txid, participant)),
                // The simulated log is never lost (every epoch is its own)
                // nor trimmed.
                CoordinatorRecord::EpochsKept { .. } | CoordinatorRecord::Forgotten { .. } => {}
            }
        }
        let epoch = last_epoch + 1;
        let mut batch = WalBatch::new();
        batch.append.push(CoordinatorRecord::Epoch(epoch));
        batch.remove = epoch_lsns;
        if let Err(e) = self.disk.wal.write(batch, Durability::Sync) {
            panic!("coordinator epoch sync failed: {e}");
        }
        let mut commits: Vec<_> = commits.into_iter().map(|(txid, p)| (txid.clone(), p, ends.remove(&txid))).collect();
        // End records without a Commit record: one-phase commits.
        commits.extend(ends.into_iter().map(|txid| (txid, Vec::new(), true)));
        if env.sabotage == Sabotage::ForgetfulCoordinator {
            commits.clear();
        }
        self.feed(env, Event::Recovered { epoch, epochs: EpochHistory::every_epoch_up_to(epoch), commits, mixed });
        env.timer(Addr::Coordinator, TICK_MS, Timer::Tick);
    }

    /// What is in progress, for failure messages.
    pub fn describe(&self) -> String {
        format!("coordinator: pending {:?}, calls {:?}, disk idle {}", self.pending, self.calls, self.disk.is_idle())
    }

    pub fn is_quiet(&self) -> bool {
        self.engine.active().next().is_none() && self.disk.is_idle() && self.calls.is_empty()
    }

    /// Requests the engine never answered (checked once the run is quiet).
    pub fn unanswered(&self) -> Vec<String> {
        let show = |t: &Option<TxnId>| t.as_ref().map(ToString::to_string).unwrap_or_default();
        self.pending
            .values()
            .map(|(from, call, kind, txid)| format!("{kind} {} (call {call} from {from:?})", show(txid)))
            .collect()
    }

    pub fn request(&mut self, env: &mut Env, from: Addr, call: CallId, request: Request) {
        let req = self.next_req;
        self.next_req += 1;
        let kind = request_kind(&request);
        let (event, txid) = match request {
            Request::Begin => (Event::Begin { req, now_ms: env.now_ms }, None),
            Request::CommitTxn { txid, ops } => {
                if let Err(e) = ops.validate() {
                    let reply = Reply::Error(ServiceError::Invalid(e));
                    return env.respond(Addr::Coordinator, from, call, Response::Coordinator(reply));
                }
                let plan = routing::plan(&self.ring, &txid, ops);
                (Event::Commit { req, txid: txid.clone(), plan }, Some(txid))
            }
            Request::ClientAbort(txid) => (Event::ClientAbort { req, txid }, None),
            Request::Outcome(txid) => (Event::Outcome { req, txid: txid.clone() }, Some(txid)),
            other => panic!("the coordinator was sent a participant request: {other:?}"),
        };
        self.pending.insert(req, (from, call, kind, txid));
        self.feed(env, event);
    }

    pub fn response(&mut self, env: &mut Env, call: CallId, response: Response) {
        let Some(pending) = self.calls.remove(&call) else {
            return;
        };
        let Response::Participant(reply) = response else {
            panic!("the coordinator got a non-participant response: {response:?}");
        };
        let event = match (pending, reply) {
            (Call::Prepare { txid, to }, PReply::Vote(vote)) => {
                Event::Vote { txid, from: participant_id(to), vote: Ok(vote) }
            }
            (Call::Prepare { txid, to }, PReply::Error(e)) => {
                let (from, detail) = (participant_id(to), e.to_string());
                let reason = twopc_common::AbortReason::Refused { participant: from.clone(), detail };
                Event::Vote { txid, from, vote: Err(reason) }
            }
            (Call::OnePhase { txid, attempt, .. }, PReply::Outcome(outcome)) => {
                Event::OnePhaseResult { txid, result: Ok(outcome), attempt }
            }
            (Call::OnePhase { txid, to, attempt }, PReply::Error(e)) => {
                let reason = AbortReason::Refused { participant: participant_id(to), detail: e.to_string() };
                Event::OnePhaseResult { txid, result: Ok(Outcome::Aborted(reason)), attempt }
            }
            (Call::Commit { txid, to, .. }, PReply::Ack) => Event::CommitAcked { txid, from: participant_id(to) },
            (Call::Commit { txid, to, .. }, PReply::Error(ServiceError::HeuristicMixed { .. })) => {
                Event::HeuristicMixed { txid, from: participant_id(to) }
            }
            (Call::Commit { txid, to, attempt }, PReply::Error(_)) => {
                Event::CommitFailed { txid, from: participant_id(to), attempt }
            }
            (Call::Abort { txid, to }, reply) => {
                Event::AbortSent { txid, to: participant_id(to), delivered: reply == PReply::Ack }
            }
            (Call::Probe { probe, slot }, PReply::Probe(answer)) => {
                return self.probe_answer(env, probe, slot, Ok(answer))
            }
            (Call::Probe { probe, slot }, PReply::Error(e)) => {
                return self.probe_answer(env, probe, slot, Err(e.to_string()))
            }
            (call, reply) => {
                panic!("engine answered {call:?} with the wrong reply kind: {reply:?}")
            }
        };
        self.feed(env, event);
    }

    fn probe_answer(&mut self, env: &mut Env, probe: u64, slot: usize, answer: Result<ProbeAnswer, String>) {
        let Some((_, answers)) = self.probes.get_mut(&probe) else {
            return;
        };
        answers[slot] = Some(answer);
        if answers.iter().all(Option::is_some) {
            let (txid, answers) = self.probes.remove(&probe).expect("present above");
            let answers = answers
                .into_iter()
                .enumerate()
                .map(|(slot, a)| (participant_id(slot), a.expect("all answered")))
                .collect();
            self.feed(env, Event::ProbeResult { txid, answers });
        }
    }

    pub fn timer(&mut self, env: &mut Env, timer: Timer) {
        let timeout = RPC_TIMEOUT.as_millis() as u64;
        match timer {
            Timer::Tick => {
                self.feed(env, Event::Tick { now_ms: env.now_ms });
                env.timer(Addr::Coordinator, TICK_MS, Timer::Tick);
            }
            Timer::CallTimeout(call) => {
                let event = match self.calls.remove(&call) {
                    None => return,
                    Some(Call::Abort { txid, to }) => {
                        Event::AbortSent { txid, to: participant_id(to), delivered: false }
                    }
                    Some(Call::Prepare { txid, to }) if env.sabotage == Sabotage::TimeoutIsYes => {
                        Event::Vote { txid, from: participant_id(to), vote: Ok(twopc_common::Vote::Yes) }
                    }
                    Some(Call::Prepare { txid, to }) => {
                        let (from, detail) = (participant_id(to), "deadline exceeded".into());
                        let reason =
                            twopc_common::AbortReason::ParticipantUnavailable { participant: from.clone(), detail };
                        Event::Vote { txid, from, vote: Err(reason) }
                    }
                    Some(Call::OnePhase { txid, attempt, .. }) => Event::OnePhaseResult {
                        txid,
                        result: Err(Unanswered::Lost("deadline exceeded".into())),
                        attempt,
                    },
                    Some(Call::Commit { txid, to, attempt }) => {
                        Event::CommitFailed { txid, from: participant_id(to), attempt }
                    }
                    Some(Call::Probe { probe, slot }) => {
                        return self.probe_answer(env, probe, slot, Err("deadline exceeded".into()));
                    }
                };
                self.feed(env, event);
            }
            Timer::SendCommit { txid, to, attempt } => {
                let call = env.call(Addr::Coordinator, Addr::Participant(to), Request::Commit(txid.clone()), timeout);
                self.calls.insert(call, Call::Commit { txid, to, attempt });
                env.crash_point(Addr::Coordinator);
            }
            Timer::SendOnePhase { to, prepare, attempt } => {
                let txid = prepare.txid.clone();
                if !env.life(Addr::Participant(to)).up {
                    // As the runtime finds it: no connection, nothing sent.
                    let result = Err(Unanswered::NotSent("connection refused".into()));
                    return self.feed(env, Event::OnePhaseResult { txid, result, attempt });
                }
                let call = env.call(Addr::Coordinator, Addr::Participant(to), Request::OnePhase(prepare), timeout);
                self.calls.insert(call, Call::OnePhase { txid, to, attempt });
            }
            Timer::ClientStep | Timer::ReadRecheck => panic!("the coordinator got another node's timer {timer:?}"),
        }
    }

    pub fn flush(&mut self, env: &mut Env) {
        let flushed = self.disk.flush(env.now_ms);
        for ghost in flushed.durable {
            env.history.durable(env.now_ms, None, ghost);
        }
        if flushed.lazy {
            env.schedule_lazy_sync(Addr::Coordinator, env.now_ms + LAZY_SYNC_MS);
        }
        debug_assert!(flushed.deferred_due_ms.is_none(), "the coordinator writes nothing deferred");
        for written in flushed.written {
            if let Err(e) = written.lsns {
                panic!("coordinator write failed: {e}");
            }
            if let Done::CommitLogged(txid) = written.tag {
                self.feed(env, Event::DecisionSynced { txid });
            }
        }
    }

    /// The WAL's background sync of lazy writes.
    pub fn lazy_sync(&mut self, env: &mut Env) {
        match self.disk.lazy_sync(env.now_ms, LAZY_SYNC_MS) {
            LazySync::Synced(ghosts, _) => {
                for ghost in ghosts {
                    env.history.durable(env.now_ms, None, ghost);
                }
            }
            LazySync::Later(at_ms) => env.schedule_lazy_sync(Addr::Coordinator, at_ms),
            LazySync::Nothing => {}
        }
    }

    fn feed(&mut self, env: &mut Env, event: Event) {
        let commands = self.engine.handle(event);
        self.execute(env, commands);
    }

    fn execute(&mut self, env: &mut Env, commands: Vec<Command>) {
        let timeout = RPC_TIMEOUT.as_millis() as u64;
        for command in commands {
            match command {
                Command::SendPrepare { to, prepare } => {
                    let to = participant_index(&to);
                    let txid = prepare.txid.clone();
                    let call = env.call(Addr::Coordinator, Addr::Participant(to), Request::Prepare(prepare), timeout);
                    self.calls.insert(call, Call::Prepare { txid, to });
                }
                Command::SendOnePhase { to, prepare, attempt } => {
                    let to = participant_index(&to);
                    env.timer(Addr::Coordinator, backoff_ms(attempt), Timer::SendOnePhase { to, prepare, attempt });
                }
                Command::SyncDecision { txid, participants } => {
                    let indexes: Vec<usize> = participants.iter().map(participant_index).collect();
                    env.history.coordinator_decided(env.now_ms, &txid, &indexes);
                    let mut batch = WalBatch::new();
                    batch.append.push(CoordinatorRecord::Commit { txid: txid.clone(), participants });
                    let lazy = env.sabotage == Sabotage::CommitBeforeSync;
                    let durability = if lazy { Durability::Lazy } else { Durability::Sync };
                    let ghost = Some(Ghost::Decision(txid.clone()));
                    self.submit(env, batch, durability, Done::CommitLogged(txid), ghost);
                    env.crash_point(Addr::Coordinator);
                }
                Command::SendCommit { txid, to, attempt } => {
                    let to = participant_index(&to);
                    env.timer(Addr::Coordinator, backoff_ms(attempt), Timer::SendCommit { txid, to, attempt });
                }
                Command::SendAbort { txid, to } => {
                    env.history.coordinator_said_aborted(env.now_ms, &txid);
                    let to = participant_index(&to);
                    let abort_timeout = ABORT_TIMEOUT.as_millis() as u64;
                    let call =
                        env.call(Addr::Coordinator, Addr::Participant(to), Request::Abort(txid.clone()), abort_timeout);
                    self.calls.insert(call, Call::Abort { txid, to });
                }
                Command::LogMixed { txid, participant } => {
                    // After an operator's forced abort only (never in the
                    // simulation): written inline, synced.
                    let mut batch = WalBatch::new();
                    batch.append.push(CoordinatorRecord::Mixed { txid, participant });
                    if let Err(e) = self.disk.wal.write(batch, Durability::Sync) {
                        panic!("coordinator Mixed write failed: {e}");
                    }
                }
                Command::DropMixed { txid } => panic!("no operator in the simulation forgets {txid}"),
                Command::LogEnd { txid } => {
                    let mut batch = WalBatch::new();
                    batch.append.push(CoordinatorRecord::End { txid });
                    self.submit(env, batch, Durability::Lazy, Done::EndLogged, None);
                }
                Command::Probe { txid } => {
                    let probe = self.next_probe;
                    self.next_probe += 1;
                    let n = self.ring.nodes().len();
                    for slot in 0..n {
                        let call =
                            env.call(Addr::Coordinator, Addr::Participant(slot), Request::Probe(txid.clone()), timeout);
                        self.calls.insert(call, Call::Probe { probe, slot });
                    }
                    self.probes.insert(probe, (txid, vec![None; n]));
                }
                Command::Reply { req, reply } => {
                    let Some((to, call, _, txid)) = self.pending.remove(&req) else {
                        continue;
                    };
                    if let Some(txid) = &txid {
                        match &reply {
                            Reply::Outcome(Outcome::Committed) | Reply::Status(OutcomeStatus::Committed) => {
                                env.history.coordinator_said_committed(env.now_ms, txid);
                                env.crash_point(Addr::Coordinator);
                            }
                            Reply::Outcome(Outcome::Aborted(_)) | Reply::Status(OutcomeStatus::Aborted) => {
                                env.history.coordinator_said_aborted(env.now_ms, txid)
                            }
                            _ => {}
                        }
                    }
                    env.respond(Addr::Coordinator, to, call, Response::Coordinator(reply));
                }
            }
        }
    }

    fn submit(
        &mut self,
        env: &mut Env,
        batch: WalBatch<CoordinatorRecord>,
        durability: Durability,
        tag: Done,
        ghost: Option<Ghost>,
    ) {
        if self.disk.submit(batch, durability, tag, ghost) {
            env.schedule_flush(Addr::Coordinator, self.disk.wants_sync());
        }
    }
}

fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Begin => "begin",
        Request::CommitTxn { .. } => "commit",
        Request::ClientAbort(_) => "abort",
        Request::Outcome(_) => "outcome",
        _ => "participant request",
    }
}

fn backoff_ms(attempt: u32) -> u64 {
    backoff(attempt).as_millis() as u64
}

pub fn coordinator_id() -> NodeId {
    NodeId::new("c1").expect("a valid node id")
}

/// The index of participant `p<i+1>`.
pub fn participant_index(id: &NodeId) -> usize {
    let n: usize = id
        .as_str()
        .strip_prefix('p')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a participant id: {id}"));
    n - 1
}
