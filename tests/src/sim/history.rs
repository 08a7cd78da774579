//! What happened in a run, as the checkers need it: what clients submitted
//! and heard, and "ghost" facts only a simulator can know — which records
//! were durable when a message was sent, which writes each participant
//! durably applied, which prepared transactions it aborted.
//!
//! The on-the-fly checks (invariants 1, 2, 10 and TCConsistent) run as the
//! commands execute; the end-of-run checks are in [`super::check`].

use std::collections::{BTreeMap, BTreeSet};
use twopc_common::{Key, OutcomeStatus, TxnId, TxnOps, Versioned};

/// What the client that ran a transaction heard at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientView {
    Committed,
    Aborted(String),
    /// The coordinator refused the commit with an error (no effect).
    Refused(String),
    /// No answer: the request or reply was lost, or the coordinator crashed.
    Unknown,
}

/// A transaction a client sent to commit.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub ops: TxnOps,
    /// Indexes of the participants its keys route to.
    pub participants: Vec<usize>,
    pub view: ClientView,
    /// The coordinator's `outcome` answer after healing.
    pub resolved: Option<OutcomeStatus>,
}

/// A record whose durability the checks track.
#[derive(Debug, Clone)]
pub enum Ghost {
    /// A participant's Prepared record.
    Prepared(TxnId),
    /// A participant's commit batch (writes + Done(Committed)).
    Applied(TxnId, Vec<(Key, Versioned)>),
    /// The coordinator's Commit record.
    Decision(TxnId),
}

#[derive(Debug, Default)]
pub struct History {
    /// Run the on-the-fly (white-box) checks.
    pub ghost_checks: bool,
    pub submitted: BTreeMap<TxnId, Submitted>,
    /// Commit records that became durable at the coordinator.
    pub decision_durable: BTreeSet<TxnId>,
    /// Transactions the coordinator answered or sent Aborted for.
    pub said_aborted: BTreeSet<TxnId>,
    /// Per participant: Prepared records that became durable.
    pub prepared_durable: Vec<BTreeSet<TxnId>>,
    /// Per participant: commits whose writes became durable, with the writes.
    pub applied: Vec<BTreeMap<TxnId, Vec<(Key, Versioned)>>>,
    /// Per participant: prepared transactions it aborted.
    pub aborted_prepared: Vec<BTreeSet<TxnId>>,
    pub violations: Vec<String>,
}

impl History {
    pub fn new(participants: usize, ghost_checks: bool) -> History {
        History {
            ghost_checks,
            prepared_durable: vec![BTreeSet::new(); participants],
            applied: vec![BTreeMap::new(); participants],
            aborted_prepared: vec![BTreeSet::new(); participants],
            ..History::default()
        }
    }

    pub fn violation(&mut self, now_ms: u64, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(format!("t={now_ms}ms: {what}"));
        }
    }

    fn applied_anywhere(&self, txid: &TxnId) -> Option<usize> {
        self.applied.iter().position(|a| a.contains_key(txid))
    }

    /// A record of a node became durable.
    pub fn durable(&mut self, now_ms: u64, node: Option<usize>, ghost: Ghost) {
        match (ghost, node) {
            (Ghost::Prepared(txid), Some(p)) => {
                self.prepared_durable[p].insert(txid);
            }
            (Ghost::Applied(txid, writes), Some(p)) => {
                let aborted = self.aborted_prepared.iter().position(|a| a.contains(&txid));
                if let (true, Some(q)) = (self.ghost_checks, aborted) {
                    self.violation(
                        now_ms,
                        format!("TCConsistent: {txid} applied at p{} but aborted at p{}", p + 1, q + 1),
                    );
                }
                self.applied[p].insert(txid, writes);
            }
            (Ghost::Decision(txid), None) => {
                if self.ghost_checks && self.said_aborted.contains(&txid) {
                    self.violation(now_ms, format!("I10: Commit of {txid} logged after the coordinator said Aborted"));
                }
                self.decision_durable.insert(txid);
            }
            (ghost, node) => panic!("ghost {ghost:?} on the wrong node {node:?}"),
        }
    }

    /// Invariant 1: a Yes vote only with a durable Prepared record (or a
    /// durable commit of it: the vote of an already committed txid).
    pub fn vote_yes(&mut self, now_ms: u64, p: usize, txid: &TxnId) {
        if self.ghost_checks && !self.prepared_durable[p].contains(txid) && !self.applied[p].contains_key(txid) {
            self.violation(
                now_ms,
                format!("I1: p{} voted Yes on {txid} before its Prepared record was durable", p + 1),
            );
        }
    }

    /// Sync before ack: a participant acks a commit only once its apply is
    /// durable (after the ack the coordinator may forget the transaction).
    pub fn commit_acked(&mut self, now_ms: u64, p: usize, txid: &TxnId) {
        if self.ghost_checks && !self.applied[p].contains_key(txid) {
            self.violation(now_ms, format!("p{} acked the commit of {txid} before its apply was durable", p + 1));
        }
    }

    /// Invariant 2: Committed only once a decision is durable (the
    /// coordinator's Commit record, or a one-phase participant's apply).
    pub fn coordinator_said_committed(&mut self, now_ms: u64, txid: &TxnId) {
        if self.ghost_checks && !self.decision_durable.contains(txid) && self.applied_anywhere(txid).is_none() {
            self.violation(now_ms, format!("I2: coordinator said Committed for {txid} with no durable decision"));
        }
    }

    /// Invariant 3: commit is decided only when every participant voted
    /// Yes, i.e. holds a durable Prepared record.
    pub fn coordinator_decided(&mut self, now_ms: u64, txid: &TxnId, participants: &[usize]) {
        let unprepared: Vec<usize> =
            participants.iter().copied().filter(|p| !self.prepared_durable[*p].contains(txid)).collect();
        if self.ghost_checks && !unprepared.is_empty() {
            let names: Vec<String> = unprepared.iter().map(|p| format!("p{}", p + 1)).collect();
            self.violation(now_ms, format!("I3: commit of {txid} decided, not prepared at {}", names.join(",")));
        }
    }

    /// Invariant 10: a logged decision never changes.
    pub fn coordinator_said_aborted(&mut self, now_ms: u64, txid: &TxnId) {
        if self.ghost_checks && self.decision_durable.contains(txid) {
            self.violation(now_ms, format!("I10: coordinator said Aborted for {txid}, whose Commit is logged"));
        }
        self.said_aborted.insert(txid.clone());
    }

    /// TCConsistent: a participant aborts a prepared transaction that
    /// another applied.
    pub fn participant_aborted(&mut self, now_ms: u64, p: usize, txid: &TxnId) {
        if let (true, Some(q)) = (self.ghost_checks, self.applied_anywhere(txid)) {
            self.violation(now_ms, format!("TCConsistent: p{} aborted {txid}, which p{} applied", p + 1, q + 1));
        }
        self.aborted_prepared[p].insert(txid.clone());
    }
}
