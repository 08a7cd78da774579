//! Simulated application clients, one transaction at a time each: begin,
//! read (committed values with versions, no locks), commit with the read
//! set and the writes, record what was heard. And the resolver, which after
//! healing asks the coordinator the outcome of every submitted transaction.

use super::env::{Env, Timer};
use super::history::{ClientView, Submitted};
use super::msg::{Addr, CallId, Request, Response};
use super::workload::Keys;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use twopc_common::client::{OUTCOME_QUERY_ATTEMPTS, OUTCOME_QUERY_INTERVAL};
use twopc_common::limits::{CLIENT_COMMIT_TIMEOUT, RPC_TIMEOUT};
use twopc_common::{Key, Outcome, OutcomeStatus, TxnId, Versioned};
use twopc_coordinator::engine::Reply as CReply;

/// Longest pause between a client's transactions.
const THINK_MS_MAX: u64 = 30;
/// The resolver asks again after this long.
const RESOLVE_RETRY_MS: u64 = 1_000;

#[derive(Debug)]
enum State {
    Idle,
    Beginning,
    Reading {
        txid: TxnId,
        read: BTreeMap<Key, Versioned>,
        waiting: usize,
    },
    Committing {
        txid: TxnId,
    },
    /// The commit call failed: asking the outcome, as the client library
    /// does (`OUTCOME_QUERY_ATTEMPTS` questions, `OUTCOME_QUERY_INTERVAL` apart).
    Resolving {
        txid: TxnId,
        attempts_left: u32,
    },
    Done,
}

pub struct Client {
    index: usize,
    txns_left: usize,
    /// Outcome questions after a failed commit call: the client library's
    /// `OUTCOME_QUERY_ATTEMPTS`, or none (an application that gives up;
    /// the resolver asks after healing).
    resolve_attempts: u32,
    state: State,
    /// Calls in flight, with the keys asked (reads) or none.
    calls: BTreeMap<CallId, Vec<Key>>,
}

impl Client {
    pub fn new(index: usize, txns: usize, resolves: bool) -> Client {
        let resolve_attempts = if resolves { OUTCOME_QUERY_ATTEMPTS } else { 0 };
        Client { index, txns_left: txns, resolve_attempts, state: State::Idle, calls: BTreeMap::new() }
    }

    fn me(&self) -> Addr {
        Addr::Client(self.index)
    }

    /// The client's state, for failure messages.
    pub fn describe(&self) -> String {
        format!("client {}: {:?}, {} calls, {} txns left", self.index, self.state, self.calls.len(), self.txns_left)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done) && self.calls.is_empty()
    }

    /// Schedules the next step after some think time.
    pub fn start(&mut self, env: &mut Env) {
        let think = env.rng.gen_range(0..=THINK_MS_MAX);
        env.timer(self.me(), think, Timer::ClientStep);
    }

    pub fn timer(&mut self, env: &mut Env, timer: Timer) {
        match timer {
            Timer::ClientStep => self.step(env),
            Timer::CallTimeout(call) => {
                if self.calls.remove(&call).is_some() {
                    self.failed(env);
                }
            }
            other => panic!("client {}: unexpected timer {other:?}", self.index),
        }
    }

    fn step(&mut self, env: &mut Env) {
        if let State::Resolving { txid, .. } = &self.state {
            let txid = txid.clone();
            return self.call(
                env,
                Addr::Coordinator,
                Request::Outcome(txid),
                Vec::new(),
                RPC_TIMEOUT.as_millis() as u64,
            );
        }
        if self.txns_left == 0 || env.healed {
            self.state = State::Done;
            return;
        }
        self.txns_left -= 1;
        self.state = State::Beginning;
        self.call(env, Addr::Coordinator, Request::Begin, Vec::new(), RPC_TIMEOUT.as_millis() as u64);
    }

    fn call(&mut self, env: &mut Env, to: Addr, request: Request, keys: Vec<Key>, timeout_ms: u64) {
        let call = env.call(self.me(), to, request, timeout_ms);
        self.calls.insert(call, keys);
    }

    /// A call failed or timed out: the transaction is abandoned (told to
    /// the coordinator if it was still reading; Unknown if committing).
    fn failed(&mut self, env: &mut Env) {
        self.calls.clear();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Reading { txid, .. } => {
                // Fire and forget: the answer is not awaited.
                env.call(self.me(), Addr::Coordinator, Request::ClientAbort(txid), RPC_TIMEOUT.as_millis() as u64);
                self.next(env)
            }
            State::Committing { txid } if self.resolve_attempts > 0 => {
                self.state = State::Resolving { txid, attempts_left: self.resolve_attempts };
                self.step(env);
            }
            State::Resolving { txid, attempts_left } if attempts_left > 1 => {
                self.state = State::Resolving { txid, attempts_left: attempts_left - 1 };
                env.timer(self.me(), OUTCOME_QUERY_INTERVAL.as_millis() as u64, Timer::ClientStep);
            }
            _ => self.next(env),
        }
    }

    fn heard(&mut self, env: &mut Env, txid: &TxnId, view: ClientView) {
        if let Some(s) = env.history.submitted.get_mut(txid) {
            s.view = view;
        }
        self.next(env);
    }

    fn next(&mut self, env: &mut Env) {
        self.state = State::Idle;
        self.calls.clear();
        self.start(env);
    }

    pub fn response(&mut self, env: &mut Env, keys: &Keys, call: CallId, response: Response) {
        let Some(asked) = self.calls.remove(&call) else {
            return;
        };
        match (&mut self.state, response) {
            (State::Beginning, Response::Coordinator(CReply::Begun(txid))) => self.read(env, keys, txid),
            (State::Reading { read, waiting, .. }, Response::Read(Ok(values))) if values.len() == asked.len() => {
                read.extend(asked.into_iter().zip(values));
                *waiting -= 1;
                if *waiting == 0 {
                    self.commit(env, keys);
                }
            }
            (State::Committing { txid }, Response::Coordinator(reply)) => {
                let view = match reply {
                    CReply::Outcome(Outcome::Committed) => ClientView::Committed,
                    CReply::Outcome(Outcome::Aborted(reason)) => ClientView::Aborted(reason.to_string()),
                    CReply::Error(e) => ClientView::Refused(e.to_string()),
                    other => ClientView::Refused(format!("unexpected reply {other:?}")),
                };
                let txid = txid.clone();
                self.heard(env, &txid, view);
            }
            (State::Resolving { txid, .. }, Response::Coordinator(CReply::Status(status))) => {
                let txid = txid.clone();
                match status {
                    OutcomeStatus::Committed => self.heard(env, &txid, ClientView::Committed),
                    OutcomeStatus::Aborted => self.heard(env, &txid, ClientView::Aborted("outcome: aborted".into())),
                    OutcomeStatus::Pending => self.failed(env),
                }
            }
            _ => self.failed(env),
        }
    }

    /// Reads the transaction's keys from their owners.
    fn read(&mut self, env: &mut Env, keys: &Keys, txid: TxnId) {
        let mut by_owner: BTreeMap<usize, Vec<Key>> = BTreeMap::new();
        for key in keys.pick_reads(&mut env.rng) {
            by_owner.entry(keys.owner[&key]).or_default().push(key);
        }
        self.state = State::Reading { txid, read: BTreeMap::new(), waiting: by_owner.len() };
        if by_owner.is_empty() {
            return self.commit(env, keys);
        }
        for (owner, asked) in by_owner {
            let timeout = RPC_TIMEOUT.as_millis() as u64;
            self.call(env, Addr::Participant(owner), Request::Read(asked.clone()), asked, timeout);
        }
    }

    fn commit(&mut self, env: &mut Env, keys: &Keys) {
        let State::Reading { txid, read, .. } = std::mem::replace(&mut self.state, State::Idle) else {
            unreachable!("commit only after reading")
        };
        let read: Vec<(Key, Versioned)> = read.into_iter().collect();
        let ops = match keys.build(&mut env.rng, &txid, &read) {
            Ok(Some(ops)) => ops,
            Ok(None) => {
                self.state = State::Reading { txid, read: BTreeMap::new(), waiting: 0 };
                return self.failed(env);
            }
            Err(e) => {
                env.history.violation(env.now_ms, format!("client {} read an impossible state: {e}", self.index));
                self.state = State::Reading { txid, read: BTreeMap::new(), waiting: 0 };
                return self.failed(env);
            }
        };
        let participants = keys.participants(&ops);
        let submitted = Submitted { ops: ops.clone(), participants, view: ClientView::Unknown, resolved: None };
        env.history.submitted.insert(txid.clone(), submitted);
        let request = Request::CommitTxn { txid: txid.clone(), ops };
        self.state = State::Committing { txid };
        self.call(env, Addr::Coordinator, request, Vec::new(), CLIENT_COMMIT_TIMEOUT.as_millis() as u64);
    }
}

/// After healing: asks the coordinator the outcome of every submitted
/// transaction until each has a final answer.
pub struct Resolver {
    pub addr: Addr,
    asking: BTreeMap<CallId, TxnId>,
    pub started: bool,
}

impl Resolver {
    pub fn new(addr: Addr) -> Resolver {
        Resolver { addr, asking: BTreeMap::new(), started: false }
    }

    pub fn is_done(&self, submitted: &BTreeMap<TxnId, Submitted>) -> bool {
        self.started && self.asking.is_empty() && submitted.values().all(|s| s.resolved.is_some())
    }

    /// Asks about every unresolved transaction not already being asked.
    pub fn step(&mut self, env: &mut Env) {
        self.started = true;
        let asking: BTreeSet<&TxnId> = self.asking.values().collect();
        let todo: Vec<TxnId> = env
            .history
            .submitted
            .iter()
            .filter(|(t, s)| s.resolved.is_none() && !asking.contains(t))
            .map(|(t, _)| t.clone())
            .collect();
        for txid in todo {
            let call =
                env.call(self.addr, Addr::Coordinator, Request::Outcome(txid.clone()), RPC_TIMEOUT.as_millis() as u64);
            self.asking.insert(call, txid);
        }
        if !env.history.submitted.values().all(|s| s.resolved.is_some()) {
            env.timer(self.addr, RESOLVE_RETRY_MS, Timer::ClientStep);
        }
    }

    pub fn response(&mut self, env: &mut Env, call: CallId, response: Response) {
        let Some(txid) = self.asking.remove(&call) else {
            return;
        };
        if let Response::Coordinator(CReply::Status(status)) = response {
            if status != OutcomeStatus::Pending {
                if let Some(s) = env.history.submitted.get_mut(&txid) {
                    s.resolved = Some(status);
                }
            }
        }
    }

    pub fn timer(&mut self, env: &mut Env, timer: Timer) {
        match timer {
            Timer::ClientStep => self.step(env),
            Timer::CallTimeout(call) => {
                self.asking.remove(&call);
            }
            other => panic!("resolver: unexpected timer {other:?}"),
        }
    }
}
