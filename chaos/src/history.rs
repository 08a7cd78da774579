//! What the workload did: every transaction whose commit was sent, what it
//! read and wrote, and what the client was told, with times. An operation
//! is recorded *before* its commit is sent (as in flight), so a client cut
//! off mid-commit still leaves a record for the checker.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use twopc_common::TxnId;

/// What the client was told about a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Told {
    Committed,
    Aborted {
        /// Short category (lock-conflict, stale-read, ...).
        category: String,
        reason: String,
    },
    /// The client could not learn the outcome (or never got an answer).
    Unknown {
        detail: String,
    },
}

impl Told {
    pub fn name(&self) -> &'static str {
        match self {
            Told::Committed => "committed",
            Told::Aborted { .. } => "aborted",
            Told::Unknown { .. } => "unknown",
        }
    }
}

/// The coordinator's answer about an unknown outcome, asked after heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolved {
    Committed,
    Aborted,
    /// Still pending, or the question failed, when recovery ran out.
    Unresolved(String),
}

/// One account as a bank transaction read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRead {
    pub account: String,
    pub version: u64,
    /// `None`: absent.
    pub balance: Option<i64>,
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Body {
    /// Bank: read these accounts (version seen), wrote these balances.
    Bank { reads: Vec<AccountRead>, writes: Vec<(String, i64)> },
    /// Atomic-set: wrote `value` under every key (one per participant).
    Set { keys: Vec<String>, value: String },
}

impl Body {
    pub fn written_keys(&self) -> Vec<String> {
        match self {
            Body::Bank { writes, .. } => writes.iter().map(|(k, _)| k.clone()).collect(),
            Body::Set { keys, .. } => keys.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// Index in the history.
    pub index: usize,
    /// Worker (client) number; `None` for set-up transactions.
    pub worker: Option<usize>,
    pub txid: TxnId,
    /// When the commit was sent and answered (ms since the run started).
    pub sent_ms: u64,
    pub answered_ms: Option<u64>,
    pub told: Told,
    /// For unknown outcomes: what the coordinator said after heal.
    pub resolved: Option<Resolved>,
    pub body: Body,
}

impl Op {
    /// What the checker takes as this transaction's outcome: the client's
    /// answer, else the coordinator's after heal. `None`: not known.
    pub fn effective(&self) -> Option<bool> {
        match (&self.told, &self.resolved) {
            (Told::Committed, _) => Some(true),
            (Told::Aborted { .. }, _) => Some(false),
            (Told::Unknown { .. }, Some(Resolved::Committed)) => Some(true),
            (Told::Unknown { .. }, Some(Resolved::Aborted)) => Some(false),
            (Told::Unknown { .. }, _) => None,
        }
    }

    /// Describes the op for evidence.
    pub fn describe(&self) -> String {
        let told = match &self.told {
            Told::Committed => "acked Committed".to_string(),
            Told::Aborted { reason, .. } => format!("acked Aborted ({reason})"),
            Told::Unknown { detail } => format!("outcome unknown to the client ({detail})"),
        };
        let resolved = match &self.resolved {
            None => String::new(),
            Some(Resolved::Committed) => ", coordinator says Committed after heal".into(),
            Some(Resolved::Aborted) => ", coordinator says Aborted after heal".into(),
            Some(Resolved::Unresolved(d)) => format!(", unresolved after heal ({d})"),
        };
        let when = match self.answered_ms {
            Some(a) => format!("sent at {:.3}s, answered at {:.3}s", secs(self.sent_ms), secs(a)),
            None => format!("sent at {:.3}s, never answered", secs(self.sent_ms)),
        };
        format!("{} ({when}; {told}{resolved})", self.txid)
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Shared, append-only history (workers record, then update on answer).
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    /// Operations that never reached commit (begin or read failed).
    not_sent: Arc<Mutex<BTreeMap<String, usize>>>,
    /// Client calls that outlived their deadline, by stage.
    overdue: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl History {
    pub fn new(start: Instant) -> History {
        History { start, ops: Arc::default(), not_sent: Arc::default(), overdue: Arc::default() }
    }

    /// The run's time zero.
    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Records a transaction whose commit is about to be sent.
    pub fn sending(&self, worker: Option<usize>, txid: TxnId, body: Body) -> usize {
        let mut ops = self.ops.lock().expect("history lock");
        let index = ops.len();
        ops.push(Op {
            index,
            worker,
            txid,
            sent_ms: self.now_ms(),
            answered_ms: None,
            told: Told::Unknown { detail: "no answer (client stopped waiting)".into() },
            resolved: None,
            body,
        });
        index
    }

    /// Records the client's answer.
    pub fn answered(&self, index: usize, told: Told) {
        let now = self.now_ms();
        let mut ops = self.ops.lock().expect("history lock");
        ops[index].answered_ms = Some(now);
        ops[index].told = told;
    }

    /// The client library committed (or tried) op `index` under `txid`: a
    /// fresh id when its first one could no longer commit (aborted by a
    /// coordinator restart, or never sent to an unreachable coordinator).
    pub fn sent_as(&self, index: usize, txid: TxnId) {
        self.ops.lock().expect("history lock")[index].txid = txid;
    }

    /// Counts a transaction abandoned before commit (nothing was sent).
    pub fn not_sent(&self, why: &str) {
        *self.not_sent.lock().expect("history lock").entry(why.to_string()).or_default() += 1;
    }

    /// Counts a client call that outlived its deadline (and was given up).
    pub fn overdue(&self, stage: &str) {
        *self.overdue.lock().expect("history lock").entry(stage.to_string()).or_default() += 1;
    }

    pub fn overdue_counts(&self) -> BTreeMap<String, usize> {
        self.overdue.lock().expect("history lock").clone()
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    pub fn not_sent_counts(&self) -> BTreeMap<String, usize> {
        self.not_sent.lock().expect("history lock").clone()
    }

    /// (committed, aborted, unknown, in flight) as told so far.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let ops = self.ops.lock().expect("history lock");
        let mut c = (0, 0, 0, 0);
        for op in ops.iter() {
            match op.told {
                _ if op.answered_ms.is_none() => c.3 += 1,
                Told::Committed => c.0 += 1,
                Told::Aborted { .. } => c.1 += 1,
                Told::Unknown { .. } => c.2 += 1,
            }
        }
        c
    }

    /// Sets the coordinator's answer for an unknown outcome.
    pub fn resolve(&self, index: usize, resolved: Resolved) {
        self.ops.lock().expect("history lock")[index].resolved = Some(resolved);
    }
}
