//! The participant's protocol engine: a pure state machine.
//!
//! ```text
//!   runtime ──Event──► Engine::handle ──Vec<Command>──► runtime
//!      ▲                                                  │
//!      └──── completions (PrepareSynced, Applied, ...) ◄──┘
//! ```
//!
//! No async, no I/O, no clock: the runtime reads the committed versions a
//! request needs and passes them in the event, passes the time as
//! `now_ms`, and executes the commands in the order given. Ordering rules
//! enforced here:
//! - a Yes vote is emitted only on `PrepareSynced` (Prepared record durable);
//! - a one-phase Committed reply only on `Applied` (writes durable);
//! - locks are taken at prepare and released only when the outcome is
//!   applied, so they survive restarts through the Prepared record.

use crate::forgotten::Horizons;
use crate::locks::LockTable;
use crate::record::{Decision, HeuristicRecord, PreparedRecord};
use std::collections::{BTreeMap, HashMap};
use twopc_common::admin::{HeuristicView, TxnView, NOT_IN_DOUBT_HERE};
use twopc_common::recent::Recent;
use twopc_common::txn::{PrepareRequest, ProbeAnswer};
use twopc_common::{AbortReason, Key, NodeId, Outcome, OutcomeStatus, ServiceError, TxnId, Versioned, Vote};

/// The runtime's handle for a request awaiting a reply.
pub type RequestId = u64;

/// Decisions remembered for duplicate and late requests.
pub const MAX_REMEMBERED_DECISIONS: usize = 100_000;
/// A prepared transaction that heard nothing for this long asks its
/// coordinator for the outcome.
pub const IN_DOUBT_AFTER_MS: u64 = 2_000;
/// A prepared transaction undecided this long is stuck, not slow: every
/// prepare deadline ([`twopc_common::limits::RPC_TIMEOUT`], 5 s) has run
/// out by then, so a coordinator that can decide has. Only then does a
/// lock conflict with it say it is in doubt, and do the outcome questions
/// about it get log lines (trial 25A: at 2 s both spoke of transactions a
/// paused participant merely slowed down, which then aborted on their own).
pub const STUCK_AFTER_MS: u64 = 10_000;

/// Whether a prepared transaction is stuck at `now_ms` ([`STUCK_AFTER_MS`]).
fn stuck(record: &PreparedRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(record.prepared_at_ms) >= STUCK_AFTER_MS
}

/// Outcome questions sent per tick, at most.
pub const MAX_OUTCOME_QUERIES_PER_TICK: usize = 1_000;
/// A prepared transaction that blocks a read or another prepare (a lock
/// conflict) asks its coordinator once it heard nothing for this long
/// (normally its commit is already on its way, and comes first), and
/// again at most this often. After a coordinator restart, the first
/// conflict with one of its older transactions so learns the presumed
/// abort at once, not at the in-doubt timer.
pub const BLOCKER_ASKS_AFTER_MS: u64 = 100;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The log was replayed at start.
    Recovered {
        prepared: Vec<PreparedRecord>,
        decided: Vec<(TxnId, Decision)>,
        heuristics: Vec<HeuristicRecord>,
        /// How far decisions were trimmed from the log.
        forgotten: Horizons,
        now_ms: u64,
    },
    /// An operator forces the outcome of an in-doubt transaction.
    Heuristic {
        req: RequestId,
        txid: TxnId,
        commit: bool,
        reason: String,
        now_ms: u64,
    },
    /// An operator acknowledges the forced outcome of `txid`: its record
    /// goes (`twopc admin forget`).
    ForgetHeuristic {
        req: RequestId,
        txid: TxnId,
    },
    /// An operator asks for a recovery pass: ask every outcome now.
    RecoverNow {
        req: RequestId,
    },
    Prepare {
        req: RequestId,
        prepare: PrepareRequest,
        current: HashMap<Key, Versioned>,
        now_ms: u64,
    },
    OnePhase {
        req: RequestId,
        prepare: PrepareRequest,
        current: HashMap<Key, Versioned>,
        now_ms: u64,
    },
    /// The Prepared record is durable.
    PrepareSynced {
        txid: TxnId,
    },
    /// A commit from the coordinator (`req`), or learned by asking (`None`).
    Commit {
        req: Option<RequestId>,
        txid: TxnId,
    },
    Abort {
        req: Option<RequestId>,
        txid: TxnId,
    },
    /// The writes (and the Done record) are durable.
    Applied {
        txid: TxnId,
    },
    Probe {
        req: RequestId,
        txid: TxnId,
    },
    /// The coordinator answered an outcome question.
    OutcomeAnswer {
        txid: TxnId,
        status: OutcomeStatus,
    },
    Tick {
        now_ms: u64,
    },
    /// A read is waiting for `txid`, a prepared writer of one of its keys:
    /// the writer's outcome is worth asking sooner than the in-doubt timer.
    ReadWaiting {
        txid: TxnId,
        now_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Append the record, synced; then feed `PrepareSynced`.
    SyncPrepared(PreparedRecord),
    /// In one batch: write `writes`, remove the txid's Prepared record (if
    /// any), log `Done(Committed)`; then feed `Applied`.
    ///
    /// `synced`: feed `Applied` only once the batch is durable. Set when
    /// this participant's word is the decision (one-phase commit, an
    /// operator's heuristic commit): nobody could redo a lost apply, so
    /// nobody may see it first. Otherwise (a coordinator's logged commit)
    /// `Applied` may be fed once the batch is written: a crash before the
    /// sync brings the Prepared record back and the coordinator, which has
    /// not heard the ack, commits again. The runtime must therefore send
    /// every reply to a `Commit` request only once a sync covers everything
    /// written before it: that ack lets the coordinator forget.
    Apply {
        txid: TxnId,
        writes: Vec<(Key, Versioned)>,
        synced: bool,
    },
    /// Remove the txid's Prepared record and log `Done(Aborted)`, lazily.
    ForgetAborted {
        txid: TxnId,
    },
    Reply {
        req: RequestId,
        reply: Reply,
    },
    /// Ask the txid's coordinator for the outcome.
    AskOutcome {
        txid: TxnId,
    },
    /// Append the record, synced, before the commands after it.
    LogHeuristic(HeuristicRecord),
    /// Remove every heuristic record of the txid, synced, before the
    /// commands after it.
    DropHeuristic {
        txid: TxnId,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Vote(Vote),
    Outcome(Outcome),
    Ack,
    Probe(ProbeAnswer),
    Recovered { asked: usize },
    Error(ServiceError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TxnState {
    /// Record being synced; `waiters` get the vote. `aborts` is set when
    /// an abort overtook the sync; its requests are acked once the locks
    /// are released (so the coordinator's "Aborted" means "unlocked").
    Preparing { record: PreparedRecord, waiters: Vec<RequestId>, aborts: Option<Vec<RequestId>> },
    /// Voted Yes; waiting for the decision.
    Prepared { record: PreparedRecord, last_heard_ms: u64 },
    /// Writes being applied (second phase or one-phase).
    Applying { locks: Vec<Key>, waiters: Vec<RequestId>, one_phase: bool },
}

/// What the engine remembers of a txid it is done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Memory {
    Decided(Decision),
    /// Never seen here when a probe asked about it: a request for it
    /// still on its way must abort. Shown to operators as "fenced", not
    /// "aborted": `admin show` listed participants a transaction never
    /// involved as aborted, which read as a mixed outcome (trial 16C).
    Fenced,
}

impl Memory {
    fn decision(self) -> Decision {
        match self {
            Memory::Decided(decision) => decision,
            Memory::Fenced => Decision::Aborted,
        }
    }
}

/// Cloneable and hashable so the model checker can explore its states;
/// ordered maps keep every run deterministic for the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Engine {
    me: NodeId,
    ring: u64,
    locks: LockTable,
    txns: BTreeMap<TxnId, TxnState>,
    decided: Recent<TxnId, Memory>,
    /// How far decisions dropped from `decided` (or from the log) reach.
    forgotten: Horizons,
    heuristics: BTreeMap<TxnId, HeuristicRecord>,
    now_ms: u64,
}

/// A lock holder a prepare may wait for ([`Engine::prepared_blocker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocker<'a> {
    pub holder: &'a TxnId,
    /// Its commit is being applied already: it is committed, and its lock
    /// goes once the apply is written.
    pub applying: bool,
}

impl Engine {
    pub fn new(me: NodeId, ring_fingerprint: u64) -> Self {
        Engine {
            me,
            ring: ring_fingerprint,
            locks: LockTable::default(),
            txns: BTreeMap::new(),
            decided: Recent::new(MAX_REMEMBERED_DECISIONS),
            forgotten: Horizons::default(),
            heuristics: BTreeMap::new(),
            now_ms: 0,
        }
    }

    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            Event::Recovered { prepared, decided, heuristics, forgotten, now_ms } => {
                self.heuristics = heuristics.into_iter().map(|h| (h.txid.clone(), h)).collect();
                self.forgotten = forgotten;
                self.recovered(prepared, decided, now_ms, &mut out)
            }
            Event::Heuristic { req, txid, commit, reason, now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                self.heuristic(req, txid, commit, reason, &mut out)
            }
            Event::ForgetHeuristic { req, txid } => self.forget_heuristic(req, txid, &mut out),
            Event::RecoverNow { req } => {
                let due: Vec<TxnId> = self.in_doubt().map(|r| r.txid.clone()).collect();
                let asked = due.len();
                out.extend(due.into_iter().map(|txid| Command::AskOutcome { txid }));
                out.push(Command::Reply { req, reply: Reply::Recovered { asked } });
            }
            Event::Prepare { req, prepare, current, now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                self.prepare(req, prepare, current, false, &mut out)
            }
            Event::OnePhase { req, prepare, current, now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                self.prepare(req, prepare, current, true, &mut out)
            }
            Event::PrepareSynced { txid } => self.prepare_synced(txid, &mut out),
            Event::Commit { req, txid } => self.commit(req, txid, &mut out),
            Event::Abort { req, txid } => self.abort(req, txid, &mut out),
            Event::Applied { txid } => self.applied(txid, &mut out),
            Event::Probe { req, txid } => self.probe(req, txid, &mut out),
            Event::OutcomeAnswer { txid, status } => match status {
                OutcomeStatus::Committed => self.commit(None, txid, &mut out),
                OutcomeStatus::Aborted => self.abort(None, txid, &mut out),
                OutcomeStatus::Pending => {}
            },
            Event::Tick { now_ms } => self.tick(now_ms, &mut out),
            Event::ReadWaiting { txid, now_ms } => self.read_waiting(txid, now_ms, &mut out),
        }
        out
    }

    fn recovered(
        &mut self,
        prepared: Vec<PreparedRecord>,
        decided: Vec<(TxnId, Decision)>,
        now_ms: u64,
        out: &mut Vec<Command>,
    ) {
        self.now_ms = now_ms;
        for (txid, decision) in decided {
            self.decide(txid, decision);
        }
        for mut record in prepared {
            // Prepared before this start: a time past "now" is a clock
            // set back since (trial 25B: a transaction in doubt 6 hours
            // showed 0 s for 6 hours, out of every `--older-than`).
            record.prepared_at_ms = record.prepared_at_ms.min(now_ms);
            assert!(
                self.locks.conflict(&record.txid, &record.locks).is_none(),
                "two prepared records lock one key: the log is inconsistent"
            );
            self.locks.acquire(&record.txid, &record.locks, record.prepared_at_ms);
            out.push(Command::AskOutcome { txid: record.txid.clone() });
            let txid = record.txid.clone();
            self.txns.insert(txid, TxnState::Prepared { record, last_heard_ms: now_ms });
        }
    }

    fn prepare(
        &mut self,
        req: RequestId,
        prepare: PrepareRequest,
        current: HashMap<Key, Versioned>,
        one_phase: bool,
        out: &mut Vec<Command>,
    ) {
        let reply = |reply| Command::Reply { req, reply };
        if prepare.ring != self.ring {
            let msg = format!("request routed with ring {:#x}, this participant uses {:#x}", prepare.ring, self.ring);
            out.push(reply(Reply::Error(ServiceError::ConfigMismatch(msg))));
            return;
        }
        if let Err(e) = prepare.ops.validate() {
            out.push(reply(Reply::Error(ServiceError::Invalid(e))));
            return;
        }
        let txid = prepare.txid.clone();
        if let Some(memory) = self.decided.get(&txid) {
            out.push(reply(self.answer_for_decided(memory.decision(), one_phase)));
            return;
        }
        match self.txns.get_mut(&txid) {
            None => {}
            Some(TxnState::Preparing { waiters, .. }) if !one_phase => {
                waiters.push(req);
                return;
            }
            Some(TxnState::Prepared { .. }) if !one_phase => {
                out.push(reply(Reply::Vote(Vote::Yes)));
                return;
            }
            Some(TxnState::Applying { waiters, one_phase: true, .. }) if one_phase => {
                waiters.push(req);
                return;
            }
            Some(_) => {
                let msg = format!("{txid} is already being processed in another mode");
                out.push(reply(Reply::Error(ServiceError::Invalid(msg))));
                return;
            }
        }
        let locks = dedup_keys(prepare.ops.keys());
        if let Err(reason) = self.check(&txid, &prepare, &locks, &current) {
            if let Some(holder) = reason.lock_holder().cloned() {
                self.ask_about_blocker(&holder, out);
            }
            self.decide(txid, Decision::Aborted);
            out.push(reply(if one_phase {
                Reply::Outcome(Outcome::Aborted(reason))
            } else {
                Reply::Vote(Vote::No(reason))
            }));
            return;
        }
        self.locks.acquire(&txid, &locks, self.now_ms);
        let writes = new_versions(&prepare, &current);
        if one_phase {
            out.push(Command::Apply { txid: txid.clone(), writes, synced: true });
            self.txns.insert(txid, TxnState::Applying { locks, waiters: vec![req], one_phase: true });
            return;
        }
        let record = PreparedRecord {
            txid: txid.clone(),
            writes,
            locks,
            participants: prepare.participants,
            prepared_at_ms: self.now_ms,
        };
        out.push(Command::SyncPrepared(record.clone()));
        self.txns.insert(txid, TxnState::Preparing { record, waiters: vec![req], aborts: None });
    }

    /// Lock conflicts first (naming the holder), then conditions, then reads.
    fn check(
        &self,
        txid: &TxnId,
        prepare: &PrepareRequest,
        locks: &[Key],
        current: &HashMap<Key, Versioned>,
    ) -> Result<(), AbortReason> {
        let participant = self.me.clone();
        if let Some((key, holder)) = self.locks.conflict(txid, locks) {
            return Err(match self.txns.get(&holder) {
                Some(TxnState::Prepared { record, .. }) if stuck(record, self.now_ms) => {
                    let for_ms = self.now_ms - record.prepared_at_ms;
                    AbortReason::HeldInDoubt { participant, key, holder, for_ms }
                }
                _ => AbortReason::LockConflict { participant, key, holder },
            });
        }
        let now = |key: &Key| lookup(current, key);
        for condition in &prepare.ops.conditions {
            if !condition.holds(now(condition.key())) {
                return Err(AbortReason::ConditionFailed { participant, key: condition.key().clone() });
            }
        }
        for (key, read) in &prepare.ops.reads {
            let current = now(key).version;
            if current != *read {
                return Err(AbortReason::StaleRead { participant, key: key.clone(), read: *read, current });
            }
        }
        Ok(())
    }

    fn prepare_synced(&mut self, txid: TxnId, out: &mut Vec<Command>) {
        let Some(TxnState::Preparing { record, waiters, aborts }) = self.txns.remove(&txid) else {
            panic!("PrepareSynced for {txid}, which is not preparing");
        };
        if let Some(aborts) = aborts {
            // The abort overtook the sync: never vote Yes, drop the record.
            self.finish_abort(&txid, &record.locks, out);
            for req in waiters {
                out.push(Command::Reply { req, reply: Reply::Vote(Vote::No(self.aborted_earlier())) });
            }
            for req in aborts {
                out.push(Command::Reply { req, reply: Reply::Ack });
            }
            return;
        }
        for req in waiters {
            out.push(Command::Reply { req, reply: Reply::Vote(Vote::Yes) });
        }
        self.txns.insert(txid, TxnState::Prepared { record, last_heard_ms: self.now_ms });
    }

    fn commit(&mut self, req: Option<RequestId>, txid: TxnId, out: &mut Vec<Command>) {
        let ack = |out: &mut Vec<Command>, reply| {
            if let Some(req) = req {
                out.push(Command::Reply { req, reply });
            }
        };
        match self.txns.remove(&txid) {
            Some(TxnState::Prepared { record, .. }) => {
                out.push(Command::Apply { txid: txid.clone(), writes: record.writes, synced: false });
                let waiters = req.into_iter().collect();
                self.txns.insert(txid, TxnState::Applying { locks: record.locks, waiters, one_phase: false });
            }
            Some(TxnState::Applying { locks, mut waiters, one_phase: false }) => {
                waiters.extend(req);
                self.txns.insert(txid, TxnState::Applying { locks, waiters, one_phase: false });
            }
            Some(other) => {
                self.txns.insert(txid.clone(), other);
                let msg = format!("commit of {txid} before its prepare completed");
                ack(out, Reply::Error(ServiceError::Invalid(msg)));
            }
            None if self.heuristics.contains_key(&txid) => {
                let reply = self.against_heuristic(&txid, Decision::Committed, out);
                ack(out, reply);
            }
            None => match self.decided.get(&txid).map(|m| m.decision()) {
                // Only an operator's forced abort, its record since
                // forgotten (`admin forget --force`), leads here: the
                // coordinator never commits what a participant aborted.
                // Said as the mismatch it is, so the coordinator records
                // it and stops re-sending (it retried forever).
                Some(Decision::Aborted) => {
                    let mixed = ServiceError::HeuristicMixed {
                        txid: txid.clone(),
                        participant: self.me.to_string(),
                        forced: Decision::Aborted.name().to_string(),
                    };
                    ack(out, Reply::Error(mixed));
                }
                // Applied earlier (duplicate), or applied and forgotten.
                _ => ack(out, Reply::Ack),
            },
        }
    }

    fn abort(&mut self, req: Option<RequestId>, txid: TxnId, out: &mut Vec<Command>) {
        let mut reply = Reply::Ack;
        match self.txns.get_mut(&txid) {
            Some(TxnState::Preparing { aborts, .. }) => {
                aborts.get_or_insert_with(Vec::new).extend(req);
                return;
            }
            Some(TxnState::Prepared { .. }) => {
                let Some(TxnState::Prepared { record, .. }) = self.txns.remove(&txid) else { unreachable!() };
                self.finish_abort(&txid, &record.locks, out);
            }
            Some(TxnState::Applying { .. }) => {
                reply = Reply::Error(ServiceError::Invalid(format!("{txid} is committing here; it cannot abort")));
            }
            None if self.heuristics.contains_key(&txid) => {
                reply = self.against_heuristic(&txid, Decision::Aborted, out)
            }
            None => match self.decided.get(&txid).map(|m| m.decision()) {
                Some(Decision::Committed) => {
                    reply = Reply::Error(ServiceError::Invalid(format!("{txid} was committed here; it cannot abort")));
                }
                Some(Decision::Aborted) => {}
                // Abort before prepare: remember it so a late prepare votes No.
                None => {
                    self.decide(txid, Decision::Aborted);
                }
            },
        }
        if let Some(req) = req {
            out.push(Command::Reply { req, reply });
        }
    }

    /// The coordinator's decision reaches a transaction an operator forced.
    /// Agreement is acked; a conflict is recorded (once, durably) and
    /// refused with `HeuristicMixed`, so both sides report it.
    fn against_heuristic(&mut self, txid: &TxnId, coordinator: Decision, out: &mut Vec<Command>) -> Reply {
        let heuristic = self.heuristics.get_mut(txid).expect("caller checked");
        if heuristic.decision == coordinator {
            return Reply::Ack;
        }
        if heuristic.conflict.is_none() {
            heuristic.conflict = Some(coordinator);
            out.push(Command::LogHeuristic(heuristic.clone()));
        }
        Reply::Error(ServiceError::HeuristicMixed {
            txid: txid.clone(),
            participant: self.me.to_string(),
            forced: heuristic.decision.name().to_string(),
        })
    }

    /// Drops a forced outcome an operator has dealt with. A decision of
    /// the coordinator arriving later is then no longer compared with it:
    /// the CLI forgets only settled ones (the coordinator's decision agrees,
    /// or the mismatch is recorded) unless told `--force`.
    fn forget_heuristic(&mut self, req: RequestId, txid: TxnId, out: &mut Vec<Command>) {
        let reply = if self.heuristics.remove(&txid).is_some() {
            out.push(Command::DropHeuristic { txid });
            Reply::Ack
        } else {
            Reply::Error(ServiceError::Invalid(format!("no forced outcome of {txid} is recorded here")))
        };
        out.push(Command::Reply { req, reply });
    }

    fn heuristic(&mut self, req: RequestId, txid: TxnId, commit: bool, reason: String, out: &mut Vec<Command>) {
        // Looked at before it is taken out: a forced abort arriving while
        // a forced commit was being applied removed the applying state,
        // and its end panicked the participant (trial 16C).
        if !matches!(self.txns.get(&txid), Some(TxnState::Prepared { .. })) {
            let state = self.view(&txid).state;
            let msg = format!("{txid} {NOT_IN_DOUBT_HERE} (it is {state}); nothing to resolve");
            out.push(Command::Reply { req, reply: Reply::Error(ServiceError::Invalid(msg)) });
            return;
        }
        let Some(TxnState::Prepared { record, .. }) = self.txns.remove(&txid) else {
            unreachable!("{txid} was prepared a moment ago");
        };
        let decision = if commit { Decision::Committed } else { Decision::Aborted };
        let heuristic = HeuristicRecord { txid: txid.clone(), decision, at_ms: self.now_ms, reason, conflict: None };
        self.heuristics.insert(txid.clone(), heuristic.clone());
        out.push(Command::LogHeuristic(heuristic));
        if commit {
            out.push(Command::Apply { txid: txid.clone(), writes: record.writes, synced: true });
            self.txns.insert(txid, TxnState::Applying { locks: record.locks, waiters: vec![req], one_phase: false });
        } else {
            self.finish_abort(&txid, &record.locks, out);
            out.push(Command::Reply { req, reply: Reply::Ack });
        }
    }

    fn finish_abort(&mut self, txid: &TxnId, locks: &[Key], out: &mut Vec<Command>) {
        self.locks.release(txid, locks);
        self.decide(txid.clone(), Decision::Aborted);
        out.push(Command::ForgetAborted { txid: txid.clone() });
    }

    fn applied(&mut self, txid: TxnId, out: &mut Vec<Command>) {
        let Some(TxnState::Applying { locks, waiters, one_phase }) = self.txns.remove(&txid) else {
            panic!("Applied for {txid}, which is not applying");
        };
        self.locks.release(&txid, &locks);
        self.decide(txid, Decision::Committed);
        let reply = if one_phase { Reply::Outcome(Outcome::Committed) } else { Reply::Ack };
        for req in waiters {
            out.push(Command::Reply { req, reply: reply.clone() });
        }
    }

    /// Remembers `txid`'s decision; the oldest one dropped to make room
    /// is forgotten.
    fn decide(&mut self, txid: TxnId, decision: Decision) {
        self.remember(txid, Memory::Decided(decision));
    }

    fn remember(&mut self, txid: TxnId, memory: Memory) {
        if let Some((old, _)) = self.decided.insert(txid, memory) {
            self.forgotten.forget(&old);
        }
    }

    fn probe(&mut self, req: RequestId, txid: TxnId, out: &mut Vec<Command>) {
        let answer = match (self.txns.get(&txid), self.decided.get(&txid).map(|m| m.decision())) {
            (Some(TxnState::Prepared { record, .. }), _) => {
                ProbeAnswer::Prepared { participants: record.participants.clone() }
            }
            (Some(_), _) => ProbeAnswer::InFlight,
            (None, Some(Decision::Committed)) => ProbeAnswer::Committed,
            (None, Some(Decision::Aborted)) => ProbeAnswer::Aborted,
            // Not fenced: a fence would answer "aborted" next time.
            (None, None) if self.forgotten.covers(&txid) => ProbeAnswer::Forgotten,
            (None, None) => {
                // Fence: a request for this txid still on its way must abort.
                self.remember(txid, Memory::Fenced);
                ProbeAnswer::Aborted
            }
        };
        out.push(Command::Reply { req, reply: Reply::Probe(answer) });
    }

    fn tick(&mut self, now_ms: u64, out: &mut Vec<Command>) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let due = self.txns.iter_mut().filter_map(|(txid, state)| match state {
            TxnState::Prepared { last_heard_ms, .. } if now.saturating_sub(*last_heard_ms) >= IN_DOUBT_AFTER_MS => {
                *last_heard_ms = now;
                Some(txid.clone())
            }
            _ => None,
        });
        out.extend(due.take(MAX_OUTCOME_QUERIES_PER_TICK).map(|txid| Command::AskOutcome { txid }));
    }

    fn read_waiting(&mut self, txid: TxnId, now_ms: u64, out: &mut Vec<Command>) {
        self.now_ms = self.now_ms.max(now_ms);
        self.ask_about_blocker(&txid, out);
    }

    /// `txid` blocks a read or a prepare: if it is prepared and heard
    /// nothing for [`BLOCKER_ASKS_AFTER_MS`], ask its coordinator.
    /// A stuck one is asked no more often than the in-doubt timer asks: its
    /// commit is not merely late, and each question makes its coordinator
    /// probe every participant (trial 26A: 4 clients retrying against one
    /// stuck transaction caused 80 probes a second).
    fn ask_about_blocker(&mut self, txid: &TxnId, out: &mut Vec<Command>) {
        let now = self.now_ms;
        if let Some(TxnState::Prepared { last_heard_ms, record }) = self.txns.get_mut(txid) {
            let ask_after = if stuck(record, now) { IN_DOUBT_AFTER_MS } else { BLOCKER_ASKS_AFTER_MS };
            if now.saturating_sub(*last_heard_ms) >= ask_after {
                *last_heard_ms = now;
                out.push(Command::AskOutcome { txid: txid.clone() });
            }
        }
    }

    /// Prepared transactions waiting for their outcome.
    pub fn in_doubt(&self) -> impl Iterator<Item = &PreparedRecord> {
        self.txns.values().filter_map(|state| match state {
            TxnState::Prepared { record, .. } => Some(record),
            _ => None,
        })
    }

    /// The transaction, if any, that voted Yes (or is applying) with a
    /// write to `key`: its outcome may already be Committed, so a read of
    /// `key` should wait for it rather than return the older value.
    pub fn pending_writer(&self, key: &[u8]) -> Option<&TxnId> {
        let holder = self.locks.holder(key)?;
        match self.txns.get(holder)? {
            TxnState::Prepared { record, .. } => record.writes.iter().any(|(k, _)| k == key).then_some(holder),
            TxnState::Applying { .. } => Some(holder),
            TxnState::Preparing { .. } => None,
        }
    }

    /// The transaction, if any, that voted Yes (or is applying) and holds
    /// a lock `prepare` needs: most often the previous transaction on the
    /// same keys, committed, whose commit message is on its way. Its lock
    /// goes soon if it committed, so `prepare` may wait for it a little
    /// rather than abort at once. (The runtime waits only while the
    /// holder's coordinator is asked and after it answers Committed; a
    /// committed holder waits for nobody, so no two prepares can wait for
    /// each other past one question.)
    ///
    /// `None` when a holder is still preparing (undecided, it may wait for
    /// anything), is stuck ([`STUCK_AFTER_MS`]: no commit is on its way,
    /// and each wait asked its coordinator, which probes every participant:
    /// trial 27A saw 80 probes a second from clients retrying against one),
    /// or is not one to wait for: the prepare would vote No anyway, so it
    /// does at once.
    pub fn prepared_blocker(&self, prepare: &PrepareRequest) -> Option<Blocker<'_>> {
        let state = |holder: &TxnId| match self.txns.get(holder) {
            Some(TxnState::Prepared { record, .. }) if stuck(record, self.now_ms) => None,
            Some(TxnState::Prepared { .. }) => Some(false),
            Some(TxnState::Applying { .. }) => Some(true),
            _ => None,
        };
        let mut holders = prepare.ops.keys().filter_map(|key| self.locks.holder(key)).filter(|h| **h != prepare.txid);
        let holder = holders.next()?;
        let applying = state(holder)?;
        holders.all(|other| state(other).is_some()).then_some(Blocker { holder, applying })
    }

    /// What this participant knows of `txid`, for operators.
    pub fn view(&self, txid: &TxnId) -> TxnView {
        let mut view = TxnView { txid: Some(txid.clone()), node: self.me.to_string(), ..Default::default() };
        let (state, record) = match self.txns.get(txid) {
            Some(TxnState::Preparing { record, .. }) => ("preparing", Some(record)),
            Some(TxnState::Prepared { record, .. }) => ("prepared", Some(record)),
            Some(TxnState::Applying { locks, .. }) => {
                view.locks = locks.clone();
                ("applying", None)
            }
            None => match (self.decided.get(txid).copied(), self.heuristics.get(txid).map(|h| h.decision)) {
                (Some(Memory::Fenced), None) => ("fenced", None),
                (Some(m), _) if m.decision() == Decision::Committed => ("committed", None),
                (None, Some(Decision::Committed)) => ("committed", None),
                (Some(_), _) | (None, Some(Decision::Aborted)) => ("aborted", None),
                (None, None) if self.forgotten.covers(txid) => ("forgotten", None),
                (None, None) => ("unknown", None),
            },
        };
        view.state = state.into();
        if let Some(record) = record {
            view.participants = record.participants.clone();
            view.since_ms = Some(record.prepared_at_ms);
            view.locks = record.locks.clone();
            view.writes = record.writes.len();
        }
        view.heuristic = self.heuristics.get(txid).map(|h| HeuristicView {
            decision: h.decision.name().into(),
            at_ms: h.at_ms,
            reason: h.reason.clone(),
            conflict: h.conflict.map(|c| c.name().to_string()),
        });
        view
    }

    /// Transactions whose outcome an operator forced here.
    pub fn heuristic_txids(&self) -> impl Iterator<Item = &TxnId> {
        self.heuristics.keys()
    }

    /// Forced outcomes recorded here, and how many conflict with the
    /// coordinator's decision.
    pub fn heuristic_counts(&self) -> (usize, usize) {
        (self.heuristics.len(), self.heuristics.values().filter(|h| h.conflict.is_some()).count())
    }

    fn aborted_earlier(&self) -> AbortReason {
        AbortReason::AbortedEarlier { participant: self.me.clone() }
    }

    /// The answer to a prepare (or one-phase commit) of a transaction
    /// already decided here: a repeat of one answered before.
    fn answer_for_decided(&self, decision: Decision, one_phase: bool) -> Reply {
        match (decision, one_phase) {
            (Decision::Committed, true) => Reply::Outcome(Outcome::Committed),
            (Decision::Committed, false) => Reply::Vote(Vote::Yes),
            (Decision::Aborted, true) => Reply::Outcome(Outcome::Aborted(self.aborted_earlier())),
            (Decision::Aborted, false) => Reply::Vote(Vote::No(self.aborted_earlier())),
        }
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn locks(&self) -> &LockTable {
        &self.locks
    }
}

fn lookup<'a>(current: &'a HashMap<Key, Versioned>, key: &Key) -> &'a Versioned {
    current.get(key).unwrap_or_else(|| panic!("the runtime did not supply the current version of key {key:?}"))
}

fn dedup_keys<'a>(keys: impl Iterator<Item = &'a Key>) -> Vec<Key> {
    let mut keys: Vec<Key> = keys.cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Each written key's state after the commit: version bumped by one. A
/// key written twice keeps the last value (one version bump).
fn new_versions(prepare: &PrepareRequest, current: &HashMap<Key, Versioned>) -> Vec<(Key, Versioned)> {
    let last: std::collections::BTreeMap<&Key, &Option<twopc_common::Value>> =
        prepare.ops.writes.iter().map(|(k, v)| (k, v)).collect();
    last.into_iter()
        .map(|(key, value)| {
            let version = lookup(current, key).version + 1;
            (key.clone(), Versioned { version, value: value.clone() })
        })
        .collect()
}
