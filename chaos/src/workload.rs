//! The workloads: many concurrent clients running transactions through
//! the client library, recording everything in the [`History`].
//!
//! - **bank**: [`ACCOUNTS_PER_PARTICIPANT`] accounts on every participant,
//!   each starting at [`INITIAL_BALANCE`]. A transfer reads two accounts
//!   (mostly on different participants, so two-phase commit runs; else a
//!   one-phase commit), and writes both: `from - amount`, `to + amount`,
//!   never below zero. Aborted transfers are simply followed by others.
//! - **atomic-set**: each transaction writes one unique value (its txid)
//!   under one fresh key on every participant.

use crate::history::{AccountRead, Body, History, Told};
use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use twopc_common::client::{Client, ClientError, OUTCOME_QUERY_ATTEMPTS, OUTCOME_QUERY_INTERVAL};
use twopc_common::limits::{CLIENT_COMMIT_TIMEOUT, RPC_TIMEOUT};
use twopc_common::ring::Ring;
use twopc_common::Versioned;

/// Bank accounts on each participant.
pub const ACCOUNTS_PER_PARTICIPANT: usize = 4;
const _: () = assert!(ACCOUNTS_PER_PARTICIPANT >= 2, "transfers need two accounts per participant");
/// Every account's opening balance.
pub const INITIAL_BALANCE: i64 = 100;
/// Largest transfer.
pub const MAX_TRANSFER: i64 = 5;
/// Share of bank transfers between accounts on different participants.
pub const CROSS_PARTICIPANT_SHARE: f64 = 0.8;
/// Keys per final read request.
const READ_CHUNK: usize = 1_000;
/// How far past its own deadline a client call may run before the worker
/// gives up on it (a tarpc call can hang when its connection breaks at
/// the wrong moment: tokio-rs/tokio#7714). Such calls are counted.
const CALL_GRACE: Duration = Duration::from_secs(5);

/// Bound on `begin` and reads.
fn rpc_bound() -> Duration {
    RPC_TIMEOUT + CALL_GRACE
}

/// Bound on a commit: its deadline, then the library's outcome questions.
fn commit_bound() -> Duration {
    CLIENT_COMMIT_TIMEOUT + (RPC_TIMEOUT + OUTCOME_QUERY_INTERVAL) * OUTCOME_QUERY_ATTEMPTS + CALL_GRACE
}

/// What the worker records when a call outlived its bound.
const OVERDUE: &str = "client call outlived its deadline (connection presumed broken)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    Bank,
    AtomicSet,
}

impl FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bank" => Ok(WorkloadKind::Bank),
            "atomic-set" => Ok(WorkloadKind::AtomicSet),
            other => Err(format!("unknown workload {other:?} (expected bank or atomic-set)")),
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkloadKind::Bank => "bank",
            WorkloadKind::AtomicSet => "atomic-set",
        })
    }
}

/// The keys a run uses.
pub enum Workload {
    Bank {
        /// Accounts grouped by owning participant.
        by_participant: Vec<Vec<String>>,
    },
    AtomicSet {
        ring: Ring,
        participants: Vec<String>,
    },
}

/// The txid a commit's result names (the one the library committed under).
pub fn reported_txid(result: &Result<twopc_common::TxnId, ClientError>) -> Option<&twopc_common::TxnId> {
    match result {
        Ok(txid) | Err(ClientError::Aborted { txid, .. } | ClientError::OutcomeUnknown { txid, .. }) => Some(txid),
        Err(_) => None,
    }
}

/// Records a commit's answer, and the txid it names; true if the outcome
/// is unknown to the client.
fn record_answer(history: &History, index: usize, result: &Result<twopc_common::TxnId, ClientError>) -> bool {
    if let Some(txid) = reported_txid(result) {
        history.sent_as(index, txid.clone());
    }
    let told = told(result);
    let unknown = matches!(told, Told::Unknown { .. });
    history.answered(index, told);
    unknown
}

/// What the client was told, from a commit's result.
pub fn told(result: &Result<twopc_common::TxnId, ClientError>) -> Told {
    match result {
        Ok(_) => Told::Committed,
        Err(ClientError::Aborted { reason, .. }) => {
            Told::Aborted { category: reason.kind().into(), reason: reason.to_string() }
        }
        // The library documents these as "nothing was committed".
        Err(ClientError::Service(e)) => {
            Told::Aborted { category: "refused-by-coordinator".into(), reason: e.to_string() }
        }
        // The commit never left the client (no coordinator could be
        // reached), or was refused before sending: nothing is committed,
        // which the checker then holds the cluster to.
        Err(e @ (ClientError::Connection(_) | ClientError::Invalid(_))) => {
            Told::Aborted { category: "not-sent".into(), reason: e.to_string() }
        }
        Err(e @ ClientError::OutcomeUnknown { .. }) => Told::Unknown { detail: e.to_string() },
    }
}

impl Workload {
    pub fn plan(kind: WorkloadKind, ring: Ring, participants: &[String]) -> Workload {
        match kind {
            WorkloadKind::Bank => {
                let mut by_participant = vec![Vec::new(); participants.len()];
                let mut i = 0;
                while by_participant.iter().any(|a| a.len() < ACCOUNTS_PER_PARTICIPANT) {
                    let key = format!("acct-{i}");
                    i += 1;
                    let owner = ring.owner(key.as_bytes()).as_str().to_string();
                    let slot = participants.iter().position(|p| *p == owner).expect("ring owner is a participant");
                    if by_participant[slot].len() < ACCOUNTS_PER_PARTICIPANT {
                        by_participant[slot].push(key);
                    }
                }
                Workload::Bank { by_participant }
            }
            WorkloadKind::AtomicSet => Workload::AtomicSet { ring, participants: participants.to_vec() },
        }
    }

    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Bank { .. } => WorkloadKind::Bank,
            Workload::AtomicSet { .. } => WorkloadKind::AtomicSet,
        }
    }

    /// Every bank account.
    pub fn accounts(&self) -> Vec<String> {
        match self {
            Workload::Bank { by_participant } => by_participant.iter().flatten().cloned().collect(),
            Workload::AtomicSet { .. } => Vec::new(),
        }
    }

    /// One fresh key per participant for atomic-set transaction `n` of
    /// `worker`.
    fn set_keys(&self, worker: usize, n: u64) -> Vec<String> {
        let Workload::AtomicSet { ring, participants } = self else { return Vec::new() };
        let mut keys: Vec<Option<String>> = vec![None; participants.len()];
        let mut k = 0u32;
        while keys.iter().any(Option::is_none) {
            let key = format!("set-{worker}-{n}-{k}");
            k += 1;
            let owner = ring.owner(key.as_bytes()).as_str();
            let slot = participants.iter().position(|p| p == owner).expect("ring owner is a participant");
            keys[slot].get_or_insert(key);
        }
        keys.into_iter().flatten().collect()
    }

    /// Opens every account (bank), before any fault. Retries until the
    /// accounts exist; every attempt is in the history.
    pub async fn set_up(&self, addr: &str, history: &History) -> Result<()> {
        let Workload::Bank { .. } = self else { return Ok(()) };
        let accounts = self.accounts();
        let keys: Vec<Vec<u8>> = accounts.iter().map(|a| a.as_bytes().to_vec()).collect();
        for attempt in 0..20 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let client = Client::connect(addr).await.context("connect to the coordinator")?;
            let current = client.read(keys.clone()).await?;
            if current.iter().all(|v| v.value.is_some()) {
                return Ok(());
            }
            if current.iter().any(|v| v.value.is_some()) {
                bail!("bank set-up left some accounts open and others not (atomicity?): {current:?}");
            }
            let mut txn = client.begin().await?;
            for key in &keys {
                txn.expect_absent(key);
                txn.put(key, INITIAL_BALANCE.to_string().into_bytes());
            }
            let reads =
                accounts.iter().map(|a| AccountRead { account: a.clone(), version: 0, balance: None }).collect();
            let writes = accounts.iter().map(|a| (a.clone(), INITIAL_BALANCE)).collect();
            let index = history.sending(None, txn.txid().clone(), Body::Bank { reads, writes });
            let result = txn.commit().await;
            record_answer(history, index, &result);
        }
        bail!("could not open the bank accounts in 20 attempts")
    }

    /// One worker: transactions until `stop`, through the first reachable
    /// of `addrs` (the client re-opened when an outcome was lost).
    pub async fn worker(
        self: Arc<Self>,
        worker: usize,
        addrs: Vec<String>,
        seed: u64,
        history: History,
        stop: Arc<AtomicBool>,
    ) {
        let mut rng = SmallRng::seed_from_u64(seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut client: Option<Client> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let c = match &client {
                Some(c) => c.clone(),
                None => match Client::connect_any(&addrs.iter().map(String::as_str).collect::<Vec<_>>()).await {
                    Ok(c) => {
                        client = Some(c.clone());
                        c
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            n += 1;
            let result = match self.as_ref() {
                Workload::Bank { .. } => self.transfer(&c, worker, &mut rng, &history).await,
                Workload::AtomicSet { .. } => self.add(&c, worker, n, &history).await,
            };
            match result {
                Step::Done => {}
                Step::Unknown => client = None,
                Step::NotSent(why, reconnect) => {
                    history.not_sent(&why);
                    if reconnect {
                        client = None;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(20..100))).await;
                }
            }
        }
    }

    async fn transfer(&self, client: &Client, worker: usize, rng: &mut SmallRng, history: &History) -> Step {
        let Workload::Bank { by_participant } = self else { unreachable!() };
        let (from, to) = pick_accounts(by_participant, rng);
        let mut txn = match tokio::time::timeout(rpc_bound(), client.begin()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Step::not_sent("begin", &e),
            Err(_) => return Step::overdue("begin", history),
        };
        let keys = vec![from.as_bytes().to_vec(), to.as_bytes().to_vec()];
        let got = match tokio::time::timeout(rpc_bound(), txn.get_many(keys)).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => return Step::not_sent("read", &e),
            Err(_) => return Step::overdue("read", history),
        };
        let balance = |v: &Option<Vec<u8>>| v.as_ref().and_then(|b| std::str::from_utf8(b).ok()?.parse::<i64>().ok());
        let (Some(from_balance), Some(to_balance)) = (balance(&got[0]), balance(&got[1])) else {
            // A missing account is the checker's to report.
            return Step::NotSent("account missing or unreadable".into(), false);
        };
        let amount = rng.gen_range(1..=MAX_TRANSFER).min(from_balance.max(0));
        txn.put(from.as_bytes(), (from_balance - amount).to_string().into_bytes());
        txn.put(to.as_bytes(), (to_balance + amount).to_string().into_bytes());
        let versions: BTreeMap<Vec<u8>, u64> = txn.ops().reads.into_iter().collect();
        let read = |account: &String, balance: i64| AccountRead {
            account: account.clone(),
            version: versions.get(account.as_bytes()).copied().unwrap_or(0),
            balance: Some(balance),
        };
        let body = Body::Bank {
            reads: vec![read(&from, from_balance), read(&to, to_balance)],
            writes: vec![(from.clone(), from_balance - amount), (to.clone(), to_balance + amount)],
        };
        let index = history.sending(Some(worker), txn.txid().clone(), body);
        commit(txn, index, history).await
    }

    async fn add(&self, client: &Client, worker: usize, n: u64, history: &History) -> Step {
        let keys = self.set_keys(worker, n);
        let mut txn = match tokio::time::timeout(rpc_bound(), client.begin()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Step::not_sent("begin", &e),
            Err(_) => return Step::overdue("begin", history),
        };
        let value = txn.txid().to_string();
        for key in &keys {
            txn.put(key.as_bytes(), value.clone().into_bytes());
        }
        let index = history.sending(Some(worker), txn.txid().clone(), Body::Set { keys, value });
        commit(txn, index, history).await
    }
}

/// Commits and records the answer (bounded: see [`CALL_GRACE`]).
async fn commit(txn: twopc_common::client::Transaction, index: usize, history: &History) -> Step {
    let unknown = match tokio::time::timeout(commit_bound(), txn.commit()).await {
        Ok(result) => record_answer(history, index, &result),
        Err(_) => {
            history.overdue("commit");
            history.answered(index, Told::Unknown { detail: OVERDUE.into() });
            true
        }
    };
    if unknown {
        Step::Unknown
    } else {
        Step::Done
    }
}

enum Step {
    Done,
    /// The commit's outcome is unknown: the connection may be broken.
    Unknown,
    /// Nothing was committed (why, reconnect?).
    NotSent(String, bool),
}

impl Step {
    fn overdue(stage: &str, history: &History) -> Step {
        history.overdue(stage);
        Step::NotSent(format!("{stage}: {OVERDUE}"), true)
    }

    fn not_sent(stage: &str, e: &ClientError) -> Step {
        let reconnect = matches!(e, ClientError::Connection(_));
        let kind = match e {
            ClientError::Connection(_) => "connection",
            ClientError::Service(_) => "refused",
            _ => "error",
        };
        Step::NotSent(format!("{stage}: {kind}"), reconnect)
    }
}

/// Two distinct accounts: mostly on different participants (every
/// participant has [`ACCOUNTS_PER_PARTICIPANT`] ≥ 2 accounts).
fn pick_accounts(by_participant: &[Vec<String>], rng: &mut SmallRng) -> (String, String) {
    let n = by_participant.len();
    if n > 1 && rng.gen_bool(CROSS_PARTICIPANT_SHARE) {
        let a = rng.gen_range(0..n);
        let b = (a + rng.gen_range(1..n)) % n;
        let from = &by_participant[a];
        let to = &by_participant[b];
        (from[rng.gen_range(0..from.len())].clone(), to[rng.gen_range(0..to.len())].clone())
    } else {
        let accounts = &by_participant[rng.gen_range(0..n)];
        let i = rng.gen_range(0..accounts.len());
        let j = (i + rng.gen_range(1..accounts.len())) % accounts.len();
        (accounts[i].clone(), accounts[j].clone())
    }
}

/// Committed values of `keys`, read through the coordinator at `addr`.
pub async fn read_all(addr: &str, keys: &[String]) -> Result<BTreeMap<String, Versioned>> {
    let client = Client::connect(addr).await.context("connect to the coordinator for the final read")?;
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(READ_CHUNK) {
        let wanted: Vec<Vec<u8>> = chunk.iter().map(|k| k.as_bytes().to_vec()).collect();
        let got = client.read(wanted).await.with_context(|| format!("final read of {} keys", chunk.len()))?;
        if got.len() != chunk.len() {
            bail!("final read returned {} values for {} keys", got.len(), chunk.len());
        }
        out.extend(chunk.iter().cloned().zip(got));
    }
    Ok(out)
}
