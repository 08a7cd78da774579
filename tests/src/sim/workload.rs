//! The two workloads: which keys a transaction reads, what it writes, and
//! the end-state property each one must keep.

use super::config::Workload;
use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeMap;
use twopc_common::ring::Ring;
use twopc_common::{Key, TxnId, TxnOps, Versioned};

/// Every account's balance before any transfer (an absent key).
pub const INITIAL_BALANCE: u64 = 100;
/// Accounts per participant in the bank workload.
pub const ACCOUNTS_PER_PARTICIPANT: usize = 2;
/// Candidate keys tried when looking for keys owned by each participant.
const KEY_SEARCH_MAX: usize = 100_000;

/// The workload's keys, with the participant owning each.
#[derive(Debug, Clone)]
pub struct Keys {
    pub workload: Workload,
    pub keys: Vec<Key>,
    pub owner: BTreeMap<Key, usize>,
}

impl Keys {
    /// Bank: `ACCOUNTS_PER_PARTICIPANT` accounts on each participant.
    /// Atomic-set: one key on each participant.
    pub fn new(workload: Workload, ring: &Ring) -> Keys {
        let per = match workload {
            Workload::Bank => ACCOUNTS_PER_PARTICIPANT,
            Workload::AtomicSet => 1,
        };
        let prefix = match workload {
            Workload::Bank => "account",
            Workload::AtomicSet => "set",
        };
        let index: BTreeMap<&str, usize> = ring.nodes().iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let mut count = vec![0; ring.nodes().len()];
        let mut keys = Vec::new();
        let mut owner = BTreeMap::new();
        for i in 0..KEY_SEARCH_MAX {
            let key = format!("{prefix}-{i}").into_bytes();
            let p = index[ring.owner(&key).as_str()];
            if count[p] < per {
                count[p] += 1;
                keys.push(key.clone());
                owner.insert(key, p);
            }
            if count.iter().all(|c| *c == per) {
                break;
            }
        }
        assert!(count.iter().all(|c| *c == per), "the ring left a participant without keys");
        Keys { workload, keys, owner }
    }

    /// The keys a new transaction reads.
    pub fn pick_reads(&self, rng: &mut SmallRng) -> Vec<Key> {
        match self.workload {
            Workload::Bank => {
                let a = rng.gen_range(0..self.keys.len());
                let mut b = rng.gen_range(0..self.keys.len() - 1);
                if b >= a {
                    b += 1;
                }
                vec![self.keys[a].clone(), self.keys[b].clone()]
            }
            Workload::AtomicSet if rng.gen_bool(0.5) => self.keys.clone(),
            Workload::AtomicSet => Vec::new(),
        }
    }

    /// The transaction to commit, given what it read; `Ok(None)`: nothing
    /// to do (abandon it); `Err`: the read state is impossible.
    pub fn build(&self, rng: &mut SmallRng, txid: &TxnId, read: &[(Key, Versioned)]) -> Result<Option<TxnOps>, String> {
        let reads = read.iter().map(|(k, v)| (k.clone(), v.version)).collect();
        match self.workload {
            Workload::Bank => {
                let [(from, a), (to, b)] = read else {
                    return Err(format!("a transfer read {} keys", read.len()));
                };
                let (a, b) = (balance(a)?, balance(b)?);
                let amount = rng.gen_range(1..=30).min(a);
                if amount == 0 {
                    return Ok(None);
                }
                let writes = vec![(from.clone(), Some(encode(a - amount))), (to.clone(), Some(encode(b + amount)))];
                Ok(Some(TxnOps { reads, conditions: Vec::new(), writes }))
            }
            Workload::AtomicSet => {
                let value = txid.to_string().into_bytes();
                let writes = self.keys.iter().map(|k| (k.clone(), Some(value.clone()))).collect();
                Ok(Some(TxnOps { reads, conditions: Vec::new(), writes }))
            }
        }
    }

    /// The participants a transaction's keys route to.
    pub fn participants(&self, ops: &TxnOps) -> Vec<usize> {
        let mut ps: Vec<usize> = ops.keys().filter_map(|k| self.owner.get(k).copied()).collect();
        ps.sort_unstable();
        ps.dedup();
        ps
    }
}

/// An account's balance (absent: the initial balance).
pub fn balance(v: &Versioned) -> Result<u64, String> {
    match &v.value {
        None => Ok(INITIAL_BALANCE),
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("undecodable balance {bytes:?} at version {}", v.version)),
    }
}

fn encode(balance: u64) -> Vec<u8> {
    balance.to_string().into_bytes()
}
