//! The coordinator's protocol engine: a pure state machine (presumed abort).
//!
//! ```text
//!   runtime ──Event──► Engine::handle ──Vec<Command>──► runtime
//!      ▲                                                  │
//!      └──── completions (Vote, DecisionSynced, Acked) ◄──┘
//! ```
//!
//! No async, no I/O, no clock: the runtime routes keys, passes the time as
//! `now_ms`, and executes commands in order. Ordering rules enforced here:
//! - Committed is replied only on `DecisionSynced` (the Commit record is
//!   durable), or on a one-phase participant's Committed (its apply is
//!   durable);
//! - a commit is decided only when every participant voted Yes;
//! - an answered Aborted is final: the txid is removed from the begun set
//!   (a later commit is refused) and remembered as aborted.

use crate::epochs::EpochHistory;
use std::collections::{BTreeMap, BTreeSet};
use twopc_common::admin::{TxnView, APPLIED, FOREIGN_EPOCH, ONE_PHASE_UNANSWERED};
use twopc_common::recent::Recent;
use twopc_common::txn::{PrepareRequest, ProbeAnswer};
use twopc_common::{AbortReason, NodeId, Outcome, OutcomeStatus, ServiceError, TxnId, Vote};

pub type RequestId = u64;

/// Outcomes remembered for clients' and participants' questions.
pub const MAX_REMEMBERED_OUTCOMES: usize = 100_000;
/// Transactions begun and not yet committed or aborted, at most.
pub const MAX_OPEN_TXNS: usize = 100_000;
/// A begun transaction with no commit after this long is aborted.
pub const OPEN_TXN_TIMEOUT_MS: u64 = twopc_common::limits::OPEN_TXN_TIMEOUT.as_millis() as u64;
/// Transactions in commit at once, at most.
pub const MAX_ACTIVE_TXNS: usize = 50_000;
/// Safety net: a transaction still collecting votes this long after a
/// tick first saw it is aborted as if a participant had not answered.
/// Every prepare RPC has its own deadline (5 s), so this only fires if a
/// vote event is lost inside the runtime; it bounds how long a client can
/// hold locks through the coordinator.
pub const PREPARE_STUCK_MS: u64 = 2 * twopc_common::limits::RPC_TIMEOUT.as_millis() as u64;
/// Ticks come every second: a longer gap than this between two means the
/// process stood still (stopped, its machine stalled), and that time does
/// not count towards [`PREPARE_STUCK_MS`] (trial 18A: a coordinator
/// stopped for 8 s aborted prepares whose Yes votes waited in its
/// sockets, blaming a participant).
pub const STALLED_TICK_GAP_MS: u64 = 3_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The log was replayed: `epoch` is this run's (already synced);
    /// `commits` are logged decisions, `ended` says which were finished.
    Recovered {
        epoch: u64,
        /// The epochs the log ran (`epoch` included).
        epochs: EpochHistory,
        commits: Vec<(TxnId, Vec<NodeId>, bool)>,
        /// Heuristic mismatches logged earlier.
        mixed: Vec<(TxnId, NodeId)>,
    },
    /// A participant refused the commit: an operator forced it to abort.
    HeuristicMixed {
        txid: TxnId,
        from: NodeId,
    },
    /// An operator asks for a recovery pass: re-send undelivered commits now.
    RecoverNow {
        req: RequestId,
    },
    /// An operator acknowledges the heuristic-mixed findings of `txid`
    /// (`twopc admin forget`): they go.
    ForgetMixed {
        req: RequestId,
        txid: TxnId,
    },
    Begin {
        req: RequestId,
        now_ms: u64,
    },
    /// The application commits; `plan` is each participant's slice.
    Commit {
        req: RequestId,
        txid: TxnId,
        plan: Vec<(NodeId, PrepareRequest)>,
    },
    ClientAbort {
        req: RequestId,
        txid: TxnId,
    },
    /// A participant's vote; `Err` says why there was none (it could not
    /// be reached, did not answer in time, or refused the prepare). The
    /// participant is then told to abort, in case it prepared after all.
    Vote {
        txid: TxnId,
        from: NodeId,
        vote: Result<Vote, AbortReason>,
    },
    /// The Commit record is durable.
    DecisionSynced {
        txid: TxnId,
    },
    CommitAcked {
        txid: TxnId,
        from: NodeId,
    },
    /// An abort was delivered (`true`) or could not be (`false`).
    AbortSent {
        txid: TxnId,
        to: NodeId,
        delivered: bool,
    },
    CommitFailed {
        txid: TxnId,
        from: NodeId,
        attempt: u32,
    },
    /// A one-phase participant's answer, or why there was none.
    OnePhaseResult {
        txid: TxnId,
        result: Result<Outcome, Unanswered>,
        attempt: u32,
    },
    Outcome {
        req: RequestId,
        txid: TxnId,
    },
    /// Answers of every participant to a probe, by participant (`Err`:
    /// unreachable).
    ProbeResult {
        txid: TxnId,
        answers: Vec<(NodeId, Result<ProbeAnswer, String>)>,
    },
    Tick {
        now_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SendPrepare {
        to: NodeId,
        prepare: PrepareRequest,
    },
    /// Send (after a backoff that grows with `attempt`).
    SendOnePhase {
        to: NodeId,
        prepare: PrepareRequest,
        attempt: u32,
    },
    /// Append `Commit{txid, participants}`, synced; then `DecisionSynced`.
    SyncDecision {
        txid: TxnId,
        participants: Vec<NodeId>,
    },
    /// Send (after a backoff that grows with `attempt`) until acked.
    SendCommit {
        txid: TxnId,
        to: NodeId,
        attempt: u32,
    },
    /// Send once; feed `AbortSent`.
    SendAbort {
        txid: TxnId,
        to: NodeId,
    },
    /// Append `End{txid}`, lazily.
    LogEnd {
        txid: TxnId,
    },
    /// Ask every participant what it knows of `txid`.
    Probe {
        txid: TxnId,
    },
    /// Append `Mixed{txid, participant}`, synced, before what follows.
    LogMixed {
        txid: TxnId,
        participant: NodeId,
    },
    /// Remove every `Mixed` record of the txid, synced, before what follows.
    DropMixed {
        txid: TxnId,
    },
    Reply {
        req: RequestId,
        reply: Reply,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Begun(TxnId),
    Outcome(Outcome),
    Status(OutcomeStatus),
    Ack,
    Recovered { asked: usize },
    Error(ServiceError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Phase {
    Preparing {
        waiting_for: BTreeSet<NodeId>,
    },
    /// Commit record being synced.
    Deciding,
    /// Decision durable; commits being delivered.
    Committing {
        unacked: BTreeSet<NodeId>,
    },
    /// Aborted (no log write); the client is answered once every
    /// participant that may hold locks was told (all but the one whose
    /// vote failed or was No), so its retry finds the locks released.
    Aborting {
        unsent: BTreeSet<NodeId>,
        reason: AbortReason,
    },
    /// One-phase commit at the only participant, in flight.
    SingleParticipant {
        prepare: PrepareRequest,
        /// Some attempt may have reached the participant (so it may have
        /// committed): from then on only its answer settles the outcome.
        maybe_delivered: bool,
    },
}

/// Why a one-phase commit attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// No connection could be opened (or the process there is not the
    /// participant): this attempt was not sent.
    NotSent(String),
    /// Sent, or perhaps sent, and no answer came: it may have committed.
    Lost(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Active {
    participants: Vec<NodeId>,
    phase: Phase,
    /// When a tick first saw it in commit: for [`PREPARE_STUCK_MS`], and
    /// for operators, the age of a one-phase commit left unanswered.
    first_tick_ms: Option<u64>,
    /// Clients waiting for the outcome.
    waiters: Vec<RequestId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Known {
    /// By a Commit record of this coordinator.
    Committed,
    /// By a participant, with no Commit record here: a one-phase commit,
    /// or a commit a probe found applied (shown to operators as
    /// "applied": `admin show` called it "commit (logged)", trial 16C).
    Applied,
    Aborted,
    /// Begun and not committed within [`OPEN_TXN_TIMEOUT_MS`]: aborted.
    Expired,
}

/// Cloneable and hashable so the model checker can explore its states;
/// ordered maps keep every run deterministic for the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Engine {
    me: NodeId,
    epoch: u64,
    epochs: EpochHistory,
    next_seq: u64,
    /// Begun, not yet committing: seq → begun at (ms).
    open: BTreeMap<u64, u64>,
    active: BTreeMap<TxnId, Active>,
    known: Recent<TxnId, Known>,
    /// Participants that refused a commit decision (heuristic-mixed).
    mixed: BTreeMap<TxnId, BTreeSet<NodeId>>,
    /// Outcome questions waiting for a probe: txid → requests.
    probing: BTreeMap<TxnId, Vec<RequestId>>,
    /// Txids of an older epoch this log never ran, probed and found
    /// applied nowhere: txid → when (tick ms). Asked again within
    /// [`FOREIGN_REPROBE_MS`], they are answered unknown without a probe
    /// (in-doubt participants ask about them every few seconds).
    foreign_probed: Recent<TxnId, u64>,
    last_tick_ms: Option<u64>,
}

/// How long a foreign txid found applied nowhere is answered unknown
/// without probing again.
pub const FOREIGN_REPROBE_MS: u64 = 10_000;
/// Foreign txids remembered as probed, at most.
pub const MAX_FOREIGN_PROBED: usize = 10_000;

impl Engine {
    pub fn new(me: NodeId) -> Self {
        Engine {
            me,
            epoch: 0,
            epochs: EpochHistory::default(),
            next_seq: 1,
            open: BTreeMap::new(),
            active: BTreeMap::new(),
            known: Recent::new(MAX_REMEMBERED_OUTCOMES),
            probing: BTreeMap::new(),
            foreign_probed: Recent::new(MAX_FOREIGN_PROBED),
            mixed: BTreeMap::new(),
            last_tick_ms: None,
        }
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            Event::Recovered { epoch, epochs, commits, mixed } => {
                for (txid, participant) in mixed {
                    self.mixed.entry(txid).or_default().insert(participant);
                }
                assert!(epochs.ran(epoch), "the log runs its current epoch");
                self.epochs = epochs;
                self.recovered(epoch, commits, &mut out)
            }
            Event::HeuristicMixed { txid, from } => self.heuristic_mixed(txid, from, &mut out),
            Event::ForgetMixed { req, txid } => {
                let reply = if self.mixed.remove(&txid).is_some() {
                    out.push(Command::DropMixed { txid });
                    Reply::Ack
                } else {
                    Reply::Error(ServiceError::Invalid(format!(
                        "no heuristic-mixed finding of {txid} is recorded here"
                    )))
                };
                out.push(Command::Reply { req, reply });
            }
            Event::RecoverNow { req } => {
                let mut asked = 0;
                for (txid, active) in &self.active {
                    if let Phase::Committing { unacked } = &active.phase {
                        for to in unacked {
                            asked += 1;
                            out.push(Command::SendCommit { txid: txid.clone(), to: to.clone(), attempt: 0 });
                        }
                    }
                }
                out.push(Command::Reply { req, reply: Reply::Recovered { asked } });
            }
            Event::Begin { req, now_ms } => self.begin(req, now_ms, &mut out),
            Event::Commit { req, txid, plan } => self.commit(req, txid, plan, &mut out),
            Event::ClientAbort { req, txid } => self.client_abort(req, txid, &mut out),
            Event::Vote { txid, from, vote } => self.vote(txid, from, vote, &mut out),
            Event::DecisionSynced { txid } => self.decision_synced(txid, &mut out),
            Event::CommitAcked { txid, from } => self.commit_acked(txid, from, &mut out),
            Event::AbortSent { txid, to, delivered } => self.abort_sent(txid, to, delivered, &mut out),
            Event::CommitFailed { txid, from, attempt } => {
                if self.active.contains_key(&txid) {
                    out.push(Command::SendCommit { txid, to: from, attempt: attempt.saturating_add(1) });
                }
            }
            Event::OnePhaseResult { txid, result, attempt } => self.one_phase_result(txid, result, attempt, &mut out),
            Event::Outcome { req, txid } => self.outcome(req, txid, &mut out),
            Event::ProbeResult { txid, answers } => self.probe_result(txid, answers, &mut out),
            Event::Tick { now_ms } => {
                self.discount_stall(now_ms);
                self.expire_open(now_ms);
                self.abort_stuck_prepares(now_ms, &mut out);
            }
        }
        out
    }

    fn recovered(&mut self, epoch: u64, commits: Vec<(TxnId, Vec<NodeId>, bool)>, out: &mut Vec<Command>) {
        assert!(epoch > self.epoch, "epochs only grow");
        self.epoch = epoch;
        self.next_seq = 1;
        for (txid, participants, ended) in commits {
            // An End record alone (no participants): a one-phase commit.
            let known = if participants.is_empty() { Known::Applied } else { Known::Committed };
            self.remember(txid.clone(), known);
            if ended {
                continue;
            }
            for to in &participants {
                out.push(Command::SendCommit { txid: txid.clone(), to: to.clone(), attempt: 0 });
            }
            let unacked = participants.iter().cloned().collect();
            self.active.insert(
                txid,
                Active { participants, phase: Phase::Committing { unacked }, waiters: vec![], first_tick_ms: None },
            );
        }
    }

    fn begin(&mut self, req: RequestId, now_ms: u64, out: &mut Vec<Command>) {
        self.expire_open(now_ms);
        let reply = if self.open.len() >= MAX_OPEN_TXNS {
            Reply::Error(ServiceError::Overloaded(format!("{MAX_OPEN_TXNS} transactions already open")))
        } else {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.open.insert(seq, now_ms);
            Reply::Begun(self.txid(seq))
        };
        out.push(Command::Reply { req, reply });
    }

    fn txid(&self, seq: u64) -> TxnId {
        TxnId { coordinator: self.me.clone(), epoch: self.epoch, seq }
    }

    /// Aborts begun transactions idle for [`OPEN_TXN_TIMEOUT_MS`]. Ids are
    /// minted in time order, so the expired ones are the lowest: the cost
    /// is one map step per expired id (a clock step back only delays).
    fn expire_open(&mut self, now_ms: u64) {
        while let Some(entry) = self.open.first_entry() {
            if now_ms.saturating_sub(*entry.get()) < OPEN_TXN_TIMEOUT_MS {
                break;
            }
            let seq = entry.remove_entry().0;
            self.remember(self.txid(seq), Known::Expired);
        }
    }

    fn commit(&mut self, req: RequestId, txid: TxnId, plan: Vec<(NodeId, PrepareRequest)>, out: &mut Vec<Command>) {
        let reply = |reply| Command::Reply { req, reply };
        if txid.coordinator != self.me {
            let owner = txid.coordinator.to_string();
            out.push(reply(Reply::Error(ServiceError::WrongCoordinator { txid, owner })));
            return;
        }
        if let Some(e) = self.forced_against(&txid) {
            return out.push(reply(Reply::Error(e)));
        }
        if let Some(active) = self.active.get_mut(&txid) {
            // A retried commit joins the one in progress; once the decision
            // is durable it is answered at once (nobody answers waiters
            // while the commits are being delivered).
            if let Phase::Committing { .. } = active.phase {
                return out.push(reply(Reply::Outcome(Outcome::Committed)));
            }
            active.waiters.push(req);
            return;
        }
        match self.known.get(&txid) {
            Some(Known::Committed | Known::Applied) => return out.push(reply(Reply::Outcome(Outcome::Committed))),
            Some(Known::Aborted) => {
                return out.push(reply(Reply::Outcome(Outcome::Aborted(AbortReason::CoordinatorRestarted))))
            }
            Some(Known::Expired) => {
                let idle = AbortReason::Expired { after_ms: OPEN_TXN_TIMEOUT_MS };
                return out.push(reply(Reply::Outcome(Outcome::Aborted(idle))));
            }
            None => {}
        }
        if txid.epoch != self.epoch || self.open.remove(&txid.seq).is_none() {
            if let Some(e) = self.not_minted_here(&txid) {
                return out.push(reply(Reply::Error(e)));
            }
            if txid.epoch < self.epoch {
                self.remember(txid, Known::Aborted);
                return out.push(reply(Reply::Outcome(Outcome::Aborted(AbortReason::CoordinatorRestarted))));
            }
            return out.push(reply(Reply::Error(ServiceError::UnknownTxn(txid))));
        }
        if self.active.len() >= MAX_ACTIVE_TXNS {
            self.remember(txid, Known::Aborted);
            let detail = format!("{MAX_ACTIVE_TXNS} transactions already committing");
            return out.push(reply(Reply::Error(ServiceError::Overloaded(detail))));
        }
        let participants: Vec<NodeId> = plan.iter().map(|(p, _)| p.clone()).collect();
        let phase = match plan.len() {
            0 => {
                // Nothing to read or write: trivially committed.
                self.remember(txid, Known::Committed);
                return out.push(reply(Reply::Outcome(Outcome::Committed)));
            }
            1 => {
                let (to, prepare) = plan.into_iter().next().expect("plan has one entry");
                out.push(Command::SendOnePhase { to, prepare: prepare.clone(), attempt: 0 });
                Phase::SingleParticipant { prepare, maybe_delivered: false }
            }
            _ => {
                for (to, prepare) in plan {
                    out.push(Command::SendPrepare { to, prepare });
                }
                Phase::Preparing { waiting_for: participants.iter().cloned().collect() }
            }
        };
        self.active.insert(txid, Active { participants, phase, waiters: vec![req], first_tick_ms: None });
    }

    fn client_abort(&mut self, req: RequestId, txid: TxnId, out: &mut Vec<Command>) {
        let committed = matches!(self.known.get(&txid), Some(Known::Committed | Known::Applied));
        let reply = if self.active.contains_key(&txid) || committed {
            Reply::Error(ServiceError::Invalid(format!("{txid} is already committing")))
        } else if let Some(e) = self.not_minted_here(&txid) {
            // Marking it aborted would answer its participants "aborted"
            // for an id this log never minted (or mints later).
            Reply::Error(e)
        } else {
            if txid.coordinator == self.me && txid.epoch == self.epoch {
                self.open.remove(&txid.seq);
            }
            self.remember(txid, Known::Aborted);
            Reply::Ack
        };
        out.push(Command::Reply { req, reply });
    }

    fn vote(&mut self, txid: TxnId, from: NodeId, vote: Result<Vote, AbortReason>, out: &mut Vec<Command>) {
        let Some(active) = self.active.get_mut(&txid) else {
            return;
        };
        let Phase::Preparing { waiting_for } = &mut active.phase else {
            return;
        };
        let (reason, silent) = match vote {
            Ok(Vote::Yes) => {
                waiting_for.remove(&from);
                if waiting_for.is_empty() {
                    active.phase = Phase::Deciding;
                    let participants = active.participants.clone();
                    out.push(Command::SyncDecision { txid, participants });
                }
                return;
            }
            // A No vote leaves nothing behind at its participant.
            Ok(Vote::No(reason)) => (reason, false),
            Err(reason) => (reason, true),
        };
        // Presumed abort: no log write. Tell the others, then answer.
        let others: BTreeSet<NodeId> = active.participants.iter().filter(|p| **p != from).cloned().collect();
        for to in &others {
            out.push(Command::SendAbort { txid: txid.clone(), to: to.clone() });
        }
        if silent {
            // It may have prepared after all, so it is told too; but the
            // answer does not wait for a participant that just failed to
            // answer (a paused or overloaded one would hold the client for
            // the abort's deadline, behind its queued prepares). If it did
            // prepare, it asks this coordinator and learns the abort.
            out.push(Command::SendAbort { txid: txid.clone(), to: from });
        }
        active.phase = Phase::Aborting { unsent: others, reason };
        self.remember(txid.clone(), Known::Aborted);
        self.finish_abort_if_sent(txid, out);
    }

    /// After a gap between ticks over [`STALLED_TICK_GAP_MS`], prepares
    /// are timed as if the gap had not been.
    fn discount_stall(&mut self, now_ms: u64) {
        let gap = self.last_tick_ms.map_or(0, |last| now_ms.saturating_sub(last));
        self.last_tick_ms = Some(now_ms);
        if gap <= STALLED_TICK_GAP_MS {
            return;
        }
        for active in self.active.values_mut() {
            if let (Phase::Preparing { .. }, Some(seen)) = (&active.phase, &mut active.first_tick_ms) {
                *seen = seen.saturating_add(gap).min(now_ms);
            }
        }
    }

    /// The safety net of [`PREPARE_STUCK_MS`].
    fn abort_stuck_prepares(&mut self, now_ms: u64, out: &mut Vec<Command>) {
        let mut stuck = Vec::new();
        for (txid, active) in &mut self.active {
            let seen = *active.first_tick_ms.get_or_insert(now_ms);
            let Phase::Preparing { waiting_for } = &active.phase else { continue };
            if now_ms.saturating_sub(seen) >= PREPARE_STUCK_MS {
                if let Some(silent) = waiting_for.iter().next() {
                    stuck.push((txid.clone(), silent.clone()));
                }
            }
        }
        for (txid, silent) in stuck {
            let detail = format!("no vote within {PREPARE_STUCK_MS} ms");
            let reason = AbortReason::ParticipantUnavailable { participant: silent.clone(), detail };
            self.vote(txid, silent, Err(reason), out);
        }
    }

    fn abort_sent(&mut self, txid: TxnId, to: NodeId, delivered: bool, out: &mut Vec<Command>) {
        let Some(active) = self.active.get_mut(&txid) else {
            return;
        };
        let Phase::Aborting { unsent, .. } = &mut active.phase else {
            return;
        };
        // Undelivered: that participant asks for the outcome later.
        let _ = delivered;
        unsent.remove(&to);
        self.finish_abort_if_sent(txid, out);
    }

    fn finish_abort_if_sent(&mut self, txid: TxnId, out: &mut Vec<Command>) {
        let Some(active) = self.active.get(&txid) else {
            return;
        };
        let Phase::Aborting { unsent, reason } = &active.phase else {
            return;
        };
        if !unsent.is_empty() {
            return;
        }
        let reason = reason.clone();
        let active = self.active.remove(&txid).expect("checked above");
        for req in active.waiters {
            out.push(Command::Reply { req, reply: Reply::Outcome(Outcome::Aborted(reason.clone())) });
        }
    }

    fn decision_synced(&mut self, txid: TxnId, out: &mut Vec<Command>) {
        let active = self.active.get_mut(&txid).expect("DecisionSynced for a transaction not deciding");
        assert!(matches!(active.phase, Phase::Deciding), "DecisionSynced for {txid} outside Deciding");
        active.phase = Phase::Committing { unacked: active.participants.iter().cloned().collect() };
        for req in active.waiters.drain(..) {
            out.push(Command::Reply { req, reply: Reply::Outcome(Outcome::Committed) });
        }
        for to in &active.participants {
            out.push(Command::SendCommit { txid: txid.clone(), to: to.clone(), attempt: 0 });
        }
        self.remember(txid, Known::Committed);
    }

    fn commit_acked(&mut self, txid: TxnId, from: NodeId, out: &mut Vec<Command>) {
        let Some(active) = self.active.get_mut(&txid) else {
            return;
        };
        let Phase::Committing { unacked } = &mut active.phase else {
            return;
        };
        unacked.remove(&from);
        if unacked.is_empty() {
            self.active.remove(&txid);
            out.push(Command::LogEnd { txid });
        }
    }

    fn one_phase_result(
        &mut self,
        txid: TxnId,
        result: Result<Outcome, Unanswered>,
        attempt: u32,
        out: &mut Vec<Command>,
    ) {
        let Some(active) = self.active.get_mut(&txid) else {
            return;
        };
        let Phase::SingleParticipant { prepare, maybe_delivered } = &mut active.phase else {
            return;
        };
        let participant = active.participants[0].clone();
        let outcome = match result {
            Ok(outcome) => outcome,
            // No attempt ever reached it: nothing can have committed, and
            // no attempt follows. A definite abort, as for a participant
            // unreachable at prepare.
            Err(Unanswered::NotSent(detail)) if !*maybe_delivered => {
                Outcome::Aborted(AbortReason::ParticipantUnavailable { participant, detail })
            }
            Err(unanswered) => {
                // Unknown whether it applied: ask again (it is idempotent)
                // until the participant answers.
                *maybe_delivered |= matches!(unanswered, Unanswered::Lost(_));
                let prepare = prepare.clone();
                out.push(Command::SendOnePhase { to: participant, prepare, attempt: attempt.saturating_add(1) });
                return;
            }
        };
        let active = self.active.remove(&txid).expect("checked above");
        for req in active.waiters {
            out.push(Command::Reply { req, reply: Reply::Outcome(outcome.clone()) });
        }
        if outcome == Outcome::Committed {
            // Only the participant logged it: an End record here keeps it
            // known after a restart, and counted when trimmed.
            out.push(Command::LogEnd { txid: txid.clone() });
            self.remember(txid, Known::Applied);
        } else {
            self.remember(txid, Known::Aborted);
        }
    }

    fn outcome(&mut self, req: RequestId, txid: TxnId, out: &mut Vec<Command>) {
        let reply = |status| Command::Reply { req, reply: Reply::Status(status) };
        if txid.coordinator != self.me {
            let owner = txid.coordinator.to_string();
            let e = ServiceError::WrongCoordinator { txid, owner };
            return out.push(Command::Reply { req, reply: Reply::Error(e) });
        }
        if let Some(e) = self.forced_against(&txid) {
            return out.push(Command::Reply { req, reply: Reply::Error(e) });
        }
        if let Some(active) = self.active.get(&txid) {
            let status = match active.phase {
                Phase::Committing { .. } => OutcomeStatus::Committed,
                Phase::Aborting { .. } => OutcomeStatus::Aborted,
                _ => OutcomeStatus::Pending,
            };
            return out.push(reply(status));
        }
        match self.known.get(&txid) {
            Some(Known::Committed | Known::Applied) => return out.push(reply(OutcomeStatus::Committed)),
            Some(Known::Aborted | Known::Expired) => return out.push(reply(OutcomeStatus::Aborted)),
            None => {}
        }
        if txid.epoch == self.epoch && self.open.remove(&txid.seq).is_some() {
            // Begun but not committing: abort it for good.
            self.remember(txid, Known::Aborted);
            return out.push(reply(OutcomeStatus::Aborted));
        }
        // Never minted here: unknown, and asking changes nothing. (A
        // question once moved the sequence past the id asked about, so one
        // about seq u64::MAX - 1 made the next begin overflow.) One of an
        // older epoch this log never ran is probed all the same: a
        // participant that applied it knows it committed (an operator
        // forced it after the log that minted it was lost, and `outcome`
        // said "unknown" for good: trials 19, 21C); anything else stays
        // unknown. Not one of a later epoch: no lost log minted it (a
        // second instance started later did, or nothing did: a probe of
        // epoch 2^64-1 fenced it at every participant, and their record
        // of forgotten outcomes jumped past every real txid).
        match self.not_minted_here(&txid) {
            Some(ServiceError::ForeignEpoch { .. }) if txid.epoch < self.epoch && !self.probed_lately(&txid) => {}
            Some(e) => return out.push(Command::Reply { req, reply: Reply::Error(e) }),
            None => {}
        }
        // Finished and forgotten, or from an older run: a two-phase commit
        // would have a Commit record, but a one-phase commit is known only
        // to its participant. Ask them.
        let waiting = self.probing.entry(txid.clone()).or_default();
        waiting.push(req);
        if waiting.len() == 1 {
            out.push(Command::Probe { txid });
        }
    }

    /// Why `txid` (of this coordinator) is not one this log minted, if it
    /// is not: a later sequence of this epoch (`UnknownTxn`), or an epoch
    /// the log never ran (`ForeignEpoch`: another instance minted it, and
    /// only its log knows the outcome). A later epoch is another
    /// instance's too: this log's next epoch comes only with a restart
    /// (trial 20B: a second c1, started later on a stale cluster file,
    /// committed c1.E.1 with E past this one's epoch, and this one called
    /// it an unknown transaction, which `admin` took for presumed abort).
    fn not_minted_here(&self, txid: &TxnId) -> Option<ServiceError> {
        if txid.coordinator != self.me {
            return None;
        }
        if txid.epoch == self.epoch && txid.seq >= self.next_seq {
            return Some(ServiceError::UnknownTxn(txid.clone()));
        }
        (txid.epoch > self.epoch || !self.epochs.ran(txid.epoch))
            .then(|| ServiceError::ForeignEpoch { txid: txid.clone() })
    }

    /// Whether `txid` (foreign) was probed and found applied nowhere lately.
    fn probed_lately(&self, txid: &TxnId) -> bool {
        let now = self.last_tick_ms.unwrap_or(0);
        self.foreign_probed.get(txid).is_some_and(|at| now.saturating_sub(*at) < FOREIGN_REPROBE_MS)
    }

    /// Remembers `txid`'s outcome, noting how far its epoch's forgotten
    /// outcomes reach when the oldest remembered one is dropped.
    fn remember(&mut self, txid: TxnId, known: Known) {
        if let Some((dropped, _)) = self.known.insert(txid, known) {
            if dropped.coordinator == self.me {
                self.epochs.forgot(dropped.epoch, dropped.seq);
            }
        }
    }

    /// Whether the outcome of `txid`, which nothing here remembers, may
    /// have been forgotten: dropped from memory in this run, or trimmed
    /// from the log in an earlier one.
    fn maybe_forgotten(&self, txid: &TxnId) -> bool {
        txid.coordinator == self.me && self.epochs.maybe_forgotten(txid.epoch, txid.seq)
    }

    fn probe_result(
        &mut self,
        txid: TxnId,
        answers: Vec<(NodeId, Result<ProbeAnswer, String>)>,
        out: &mut Vec<Command>,
    ) {
        let Some(waiters) = self.probing.remove(&txid) else {
            return;
        };
        let committed = answers.iter().any(|(_, a)| a == &Ok(ProbeAnswer::Committed));
        let answers = counted_answers(&answers);
        if let Some(foreign) = self.not_minted_here(&txid).filter(|_| !committed) {
            // Only the log that minted it knows: nothing to presume.
            self.foreign_probed.insert(txid, self.last_tick_ms.unwrap_or(0));
            for req in waiters {
                out.push(Command::Reply { req, reply: Reply::Error(foreign.clone()) });
            }
            return;
        }
        let unsure = answers.iter().any(|a| matches!(a, Err(_) | Ok(ProbeAnswer::InFlight)));
        // A participant still prepared never acked a commit, so a Commit
        // record would still be here: that id was not forgotten.
        let prepared = answers.iter().any(|a| matches!(a, Ok(ProbeAnswer::Prepared { .. })));
        // A participant that dropped its decision may have applied it
        // (a one-phase commit leaves no record here if its lazy End was
        // lost in a crash).
        let forgotten_there = answers.contains(&&Ok(ProbeAnswer::Forgotten));
        if !committed && !unsure && !prepared && (forgotten_there || self.maybe_forgotten(&txid)) {
            for req in waiters {
                let e = ServiceError::Forgotten { txid: txid.clone() };
                out.push(Command::Reply { req, reply: Reply::Error(e) });
            }
            return;
        }
        let status = if committed {
            // (Another log's txid is not remembered here: asked again, it
            // is probed again.)
            if self.not_minted_here(&txid).is_none() {
                self.remember(txid, Known::Applied);
            }
            OutcomeStatus::Committed
        } else if unsure {
            OutcomeStatus::Pending
        } else {
            // Every participant that counts answered and none applied it;
            // those that never saw it are fenced. No Commit record exists:
            // aborted.
            self.remember(txid, Known::Aborted);
            OutcomeStatus::Aborted
        };
        for req in waiters {
            out.push(Command::Reply { req, reply: Reply::Status(status.clone()) });
        }
    }

    /// A commit operators forced to abort at some of its participants:
    /// "committed" would be a wrong answer to its client (their writes are
    /// gone), so `outcome` and a repeated `commit` get this instead, until
    /// an operator forgets the finding. Only commits can be mixed here (an
    /// abort is never logged, so none is re-sent against a forced commit).
    fn forced_against(&self, txid: &TxnId) -> Option<ServiceError> {
        let forced_at = self.mixed.get(txid).filter(|m| !m.is_empty())?;
        let participant = forced_at.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        Some(ServiceError::HeuristicMixed { txid: txid.clone(), participant, forced: "abort".into() })
    }

    fn heuristic_mixed(&mut self, txid: TxnId, from: NodeId, out: &mut Vec<Command>) {
        if !self.mixed.entry(txid.clone()).or_default().insert(from.clone()) {
            return;
        }
        out.push(Command::LogMixed { txid: txid.clone(), participant: from.clone() });
        // That participant will never take this decision: stop retrying.
        self.commit_acked(txid, from, out);
    }

    /// What this coordinator knows of `txid`, for operators (no side
    /// effects: unlike `outcome`, it never presumes or probes).
    pub fn view(&self, txid: &TxnId) -> TxnView {
        let mut view = TxnView { txid: Some(txid.clone()), node: self.me.to_string(), ..Default::default() };
        view.state = match (self.active.get(txid), self.known.get(txid)) {
            (Some(active), _) => {
                view.participants = active.participants.clone();
                match &active.phase {
                    Phase::Committing { unacked } => view.unacked = unacked.iter().cloned().collect(),
                    Phase::SingleParticipant { maybe_delivered: true, .. } => {
                        view.unacked = active.participants.clone();
                        view.since_ms = active.first_tick_ms;
                    }
                    _ => {}
                }
                phase_name(&active.phase).into()
            }
            (None, Some(Known::Committed)) => "committed".into(),
            (None, Some(Known::Applied)) => APPLIED.into(),
            (None, Some(Known::Aborted | Known::Expired)) => "aborted".into(),
            (None, None) if matches!(self.not_minted_here(txid), Some(ServiceError::ForeignEpoch { .. })) => {
                FOREIGN_EPOCH.into()
            }
            (None, None) => "unknown".into(),
        };
        view.mixed = self.mixed.get(txid).map(|m| m.iter().cloned().collect()).unwrap_or_default();
        view
    }

    /// Every transaction in commit, for operators.
    pub fn active_views(&self) -> Vec<TxnView> {
        self.active.keys().map(|txid| self.view(txid)).collect()
    }

    /// Every commit some participant refused, having been forced to
    /// abort it (heuristic-mixed), until an operator forgets it.
    pub fn mixed_views(&self) -> Vec<TxnView> {
        self.mixed.keys().map(|txid| self.view(txid)).collect()
    }

    /// Transactions in commit, commits not yet acked everywhere, mixed
    /// outcomes, and ids begun but not finished.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        // A one-phase commit that may have reached its participant, and is
        // unanswered, is a commit not yet acked too (trial 16C: `status`
        // showed 0 while `show` said "not yet acked by p1").
        let undelivered = self
            .active
            .values()
            .filter(|a| {
                matches!(a.phase, Phase::Committing { .. } | Phase::SingleParticipant { maybe_delivered: true, .. })
            })
            .count();
        (self.active.len(), undelivered, self.mixed.len(), self.open.len())
    }

    /// Transactions in commit: txid, participants, phase name.
    pub fn active(&self) -> impl Iterator<Item = (&TxnId, &[NodeId], &'static str)> {
        self.active.iter().map(|(txid, a)| (txid, a.participants.as_slice(), phase_name(&a.phase)))
    }
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Preparing { .. } => "preparing",
        Phase::Deciding => "deciding",
        Phase::Committing { .. } => "committing",
        Phase::Aborting { .. } => "aborting",
        // Sent, perhaps applied, and not answered: in doubt until it is.
        Phase::SingleParticipant { maybe_delivered: true, .. } => ONE_PHASE_UNANSWERED,
        Phase::SingleParticipant { .. } => "one-phase",
    }
}

/// The probe answers that count: those of the participants a prepared one
/// names, when one does. A two-phase commit reaches no other participant,
/// so one down that never took part cannot hold its presumed abort (trial
/// 26A); without a prepared answer, any participant may have committed it
/// in one phase, and every answer counts.
pub fn counted_answers(answers: &[(NodeId, Result<ProbeAnswer, String>)]) -> Vec<&Result<ProbeAnswer, String>> {
    let named = answers.iter().find_map(|(_, answer)| match answer {
        Ok(ProbeAnswer::Prepared { participants }) => Some(participants),
        _ => None,
    });
    answers.iter().filter(|(from, _)| named.is_none_or(|named| named.contains(from))).map(|(_, a)| a).collect()
}
