//! The model checker's state: the real engines plus a compact, hashable
//! rendering of everything around them — disks (durable part, lazy part,
//! queue), the network (a set of in-flight messages: loss, duplication
//! and reordering are choices of which to deliver, keep or drop), the
//! clients, and ghost facts for the properties.

use std::collections::{BTreeMap, BTreeSet};
use twopc_common::{Key, NodeId, TxnId, Versioned};
use twopc_coordinator::engine::{Engine as CEngine, RequestId};
use twopc_participant::engine::Engine as PEngine;
use twopc_participant::record::{Decision, PreparedRecord};

/// A participant's write, as its runtime would batch it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PWrite {
    Prepared(PreparedRecord),
    /// Writes + drop the Prepared record + Done(Committed).
    Commit {
        txid: TxnId,
        writes: Vec<(Key, Versioned)>,
    },
    /// Drop the Prepared record + Done(Aborted).
    Abort {
        txid: TxnId,
    },
}

/// A participant's durable (or visible) tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PStore {
    pub prepared: BTreeMap<TxnId, PreparedRecord>,
    pub done: BTreeMap<TxnId, Decision>,
    pub data: BTreeMap<Key, Versioned>,
}

impl PStore {
    pub fn apply(&mut self, write: &PWrite) {
        match write {
            PWrite::Prepared(r) => {
                self.prepared.insert(r.txid.clone(), r.clone());
            }
            PWrite::Commit { txid, writes } => {
                self.prepared.remove(txid);
                self.done.insert(txid.clone(), Decision::Committed);
                for (k, v) in writes {
                    self.data.insert(k.clone(), v.clone());
                }
            }
            PWrite::Abort { txid } => {
                self.prepared.remove(txid);
                self.done.insert(txid.clone(), Decision::Aborted);
            }
        }
    }
}

/// A coordinator's write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CWrite {
    Commit { txid: TxnId, participants: Vec<NodeId> },
    End { txid: TxnId },
}

/// A coordinator's durable (or visible) tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CStore {
    pub epoch: u64,
    pub commits: BTreeMap<TxnId, Vec<NodeId>>,
    pub ends: BTreeSet<TxnId>,
}

impl CStore {
    pub fn apply(&mut self, write: &CWrite) {
        match write {
            CWrite::Commit { txid, participants } => {
                self.commits.insert(txid.clone(), participants.clone());
            }
            CWrite::End { txid } => {
                self.ends.insert(txid.clone());
            }
        }
    }
}

/// A disk: durable tables, writes applied lazily since the last sync
/// (visible, lost on a crash), and writes queued (not yet written; each
/// with "synced?" — a queued write's completion is fed when it is written).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Disk<S, W> {
    pub durable: S,
    pub lazy: Vec<W>,
    pub queue: Vec<(W, bool)>,
}

impl<S: Default, W> Default for Disk<S, W> {
    fn default() -> Self {
        Disk { durable: S::default(), lazy: Vec::new(), queue: Vec::new() }
    }
}

/// Who asked a participant, to route its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PCall {
    Prepare,
    OnePhase,
    Commit,
    Abort,
    Probe,
}

/// A participant process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Participant {
    pub up: bool,
    pub incarnation: u8,
    pub engine: PEngine,
    pub disk: Disk<PStore, PWrite>,
    /// Unanswered requests: kind, txid, coordinator incarnation.
    pub pending: BTreeMap<u64, (PCall, TxnId, u8)>,
    /// Commit acks waiting for a sync to cover what was written before
    /// them (the runtime's deferred barrier: "sync before ack").
    pub held_acks: Vec<Msg>,
}

/// Who asked the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asker {
    Client(u8),
    /// A participant and its incarnation.
    Participant(u8, u8),
}

/// An RPC the coordinator waits on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey {
    pub kind: PCall,
    pub txid: TxnId,
    pub to: u8,
}

/// The coordinator process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Coordinator {
    pub up: bool,
    pub incarnation: u8,
    pub engine: CEngine,
    pub disk: Disk<CStore, CWrite>,
    pub pending: BTreeMap<RequestId, (Asker, TxnId)>,
    pub calls: BTreeSet<CallKey>,
    /// One-phase calls never sent: their participant was down, so the
    /// runtime could not connect (their deadline reports "not sent").
    pub unsent: BTreeSet<CallKey>,
    /// Probes collecting answers, one slot per participant.
    pub probes: BTreeMap<TxnId, Vec<Option<Result<u8, ()>>>>,
}

/// A compact, ordered rendering of replies (reasons and error texts are
/// dropped: the engines never branch on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Answer {
    Yes,
    No,
    Committed,
    Aborted,
    Pending,
    Ack,
    /// A probe answer (`ProbeAnswer` as an index).
    Probe(u8),
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Msg {
    /// Coordinator (incarnation `from`) → participant `to` (incarnation `inc`).
    ToParticipant { to: u8, inc: u8, from: u8, kind: PCall, txid: TxnId },
    /// Participant `from` → coordinator incarnation `inc`, answering `kind`.
    FromParticipant { from: u8, inc: u8, kind: PCall, txid: TxnId, answer: Answer },
    /// Client or participant → coordinator incarnation `inc`: commit
    /// (`commit` true, clients only) or outcome question.
    ToCoordinator { asker: Asker, inc: u8, commit: bool, txid: TxnId },
    /// Coordinator → participant `to` (incarnation `inc`): outcome answer.
    OutcomeAnswer { to: u8, inc: u8, txid: TxnId, answer: Answer },
}

/// A client's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    Idle,
    Committing(TxnId),
    Heard(TxnId, Answer),
}

/// Facts the properties need (monotone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// Commit records that were durable at some point.
    pub decided: BTreeSet<TxnId>,
    /// Transactions the coordinator answered or sent Aborted for.
    pub said_aborted: BTreeSet<TxnId>,
    /// (participant, txid): writes applied (written) there.
    pub applied: BTreeSet<(u8, TxnId)>,
    /// (participant, txid): a prepared transaction aborted there.
    pub aborted: BTreeSet<(u8, TxnId)>,
    /// The first property violated, if any.
    pub violation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    pub coordinator: Coordinator,
    pub participants: Vec<Participant>,
    pub net: BTreeSet<Msg>,
    pub clients: Vec<Client>,
    /// Fault budgets left on this path (they bound the state space).
    pub crashes_left: u8,
    /// Deliveries that leave a copy in flight.
    pub duplicates_left: u8,
    /// RPC deadlines passing while an answer may still come.
    pub early_timeouts_left: u8,
    pub ghost: Ghost,
}

impl State {
    /// True if coordinator call `key` can never be answered: its request
    /// and answer are not in flight and its callee does not hold it.
    pub fn call_is_dead(&self, key: &CallKey) -> bool {
        let c_inc = self.coordinator.incarnation;
        let p = &self.participants[key.to as usize];
        let request_live = self.net.iter().any(|m| {
            matches!(m, Msg::ToParticipant { to, inc, from, kind, txid }
                if *to == key.to && *inc == p.incarnation && *from == c_inc && *kind == key.kind && *txid == key.txid)
        });
        let answer_live = self.net.iter().any(|m| {
            matches!(m, Msg::FromParticipant { from, inc, kind, txid, .. }
                if *from == key.to && *inc == c_inc && *kind == key.kind && *txid == key.txid)
        });
        let held = p.up
            && (p.pending.values().any(|(kind, txid, from)| *kind == key.kind && *txid == key.txid && *from == c_inc)
                || p.held_acks.iter().any(|m| {
                    matches!(m, Msg::FromParticipant { inc, kind, txid, .. }
                        if *inc == c_inc && *kind == key.kind && *txid == key.txid)
                }));
        !request_live && !answer_live && !held
    }

    /// True if participant `p` has an outcome question about `txid` open.
    pub fn asking(&self, p: u8, txid: &TxnId) -> bool {
        let inc = self.participants[p as usize].incarnation;
        let me = Asker::Participant(p, inc);
        self.net.iter().any(|m| match m {
            Msg::ToCoordinator { asker, txid: t, .. } => *asker == me && t == txid,
            Msg::OutcomeAnswer { to, inc: i, txid: t, .. } => *to == p && *i == inc && t == txid,
            _ => false,
        }) || self.coordinator.pending.values().any(|(asker, t)| *asker == me && t == txid)
    }

    /// The visible participant tables: durable, then the lazy writes.
    pub fn visible(p: &Participant) -> PStore {
        let mut s = p.disk.durable.clone();
        for w in &p.disk.lazy {
            s.apply(w);
        }
        s
    }
}
