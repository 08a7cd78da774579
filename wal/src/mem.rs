//! [`MemWal`]: the in-memory WAL used by the deterministic simulator.
//!
//! It keeps two copies of the tables: the *durable* state (what survives a
//! power cut) and the *visible* state (what reads see), plus the unsynced
//! tail of batches applied to the visible state since the last `Sync`.
//! `submit` applies the batch at once and runs `done` inline, before it
//! returns. A `Sync` batch replays the unsynced tail and itself onto the
//! durable state; [`MemWal::crash`] discards the tail and resets the visible
//! state to the durable one.
//!
//! LSN choice: the LSN counter is part of the tables, so after a crash it
//! continues from the durable high-water mark. LSNs of lost (never durable)
//! records are therefore handed out again — the same behaviour as
//! [`crate::RocksWal`], whose high-water mark is written in the same atomic
//! batch as the records. A durable LSN is never reused.
//!
//! Records and values are stored sealed in the same envelope as on disk, so
//! the decode paths are exercised; [`MemWal::corrupt_record`] flips a byte.

use crate::batch::EncodedBatch;
use crate::record::{decode_record, decode_value, hex};
use crate::{Completion, DataEntry, Durability, Lsn, Wal, WalBatch, WalError, WalStats};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

/// Location prefix used in [`WalError::Corrupt`] messages.
const LOCATION: &str = "memwal";

#[derive(Debug, Clone)]
struct Tables {
    records: BTreeMap<Lsn, Vec<u8>>,
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    next_lsn: Lsn,
}

impl Default for Tables {
    fn default() -> Self {
        Tables { records: BTreeMap::new(), data: BTreeMap::new(), next_lsn: 1 }
    }
}

impl Tables {
    /// Apply a batch (removals, then appends, then data); returns the LSNs.
    fn apply(&mut self, batch: &EncodedBatch) -> Vec<Lsn> {
        if let Some(below) = batch.remove_below {
            self.records = self.records.split_off(&below);
        }
        for lsn in &batch.remove {
            self.records.remove(lsn);
        }
        let mut lsns = Vec::with_capacity(batch.append.len());
        for rec in &batch.append {
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            self.records.insert(lsn, rec.clone());
            lsns.push(lsn);
        }
        for (key, value) in &batch.data {
            match value {
                Some(v) => self.data.insert(key.clone(), v.clone()),
                None => self.data.remove(key),
            };
        }
        lsns
    }
}

#[derive(Debug, Default)]
struct State {
    durable: Tables,
    visible: Tables,
    unsynced: Vec<EncodedBatch>,
    stats: WalStats,
}

/// In-memory [`Wal`] with simulated crashes. `Clone` shares the state.
pub struct MemWal<R> {
    state: Arc<Mutex<State>>,
    _records: PhantomData<fn(R) -> R>,
}

impl<R> Clone for MemWal<R> {
    fn clone(&self) -> Self {
        MemWal { state: Arc::clone(&self.state), _records: PhantomData }
    }
}

impl<R> Default for MemWal<R> {
    fn default() -> Self {
        MemWal { state: Arc::default(), _records: PhantomData }
    }
}

impl<R> std::fmt::Debug for MemWal<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("MemWal")
            .field("records", &s.visible.records.len())
            .field("data", &s.visible.data.len())
            .field("unsynced_batches", &s.unsynced.len())
            .field("stats", &s.stats)
            .finish()
    }
}

impl<R> MemWal<R> {
    /// An empty WAL.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("MemWal state mutex poisoned")
    }

    /// Simulate a power cut: drop everything not yet durable.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.unsynced.clear();
        s.visible = s.durable.clone();
    }

    /// Number of applied batches that a crash would lose.
    pub fn unsynced_batches(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// Flip the last byte of record `lsn` (visible and durable copies), so
    /// its checksum no longer matches. Returns false if it does not exist.
    pub fn corrupt_record(&self, lsn: Lsn) -> bool {
        let mut s = self.lock();
        let mut found = false;
        let State { durable, visible, .. } = &mut *s;
        for tables in [durable, visible] {
            if let Some(last) = tables.records.get_mut(&lsn).and_then(|b| b.last_mut()) {
                *last ^= 0xff;
                found = true;
            }
        }
        found
    }

    /// Store raw (envelope) bytes as record `lsn`, durably, bypassing
    /// encoding: lets tests inject undecodable records.
    pub fn put_raw_record(&self, lsn: Lsn, bytes: Vec<u8>) {
        let mut s = self.lock();
        let State { durable, visible, .. } = &mut *s;
        for tables in [durable, visible] {
            tables.records.insert(lsn, bytes.clone());
            tables.next_lsn = tables.next_lsn.max(lsn.saturating_add(1));
        }
    }
}

impl<R> Wal<R> for MemWal<R>
where
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn submit(&self, batch: WalBatch<R>, durability: Durability, done: Completion) {
        let result = EncodedBatch::encode(batch).map(|batch| {
            let mut guard = self.lock();
            let s = &mut *guard;
            let lsns = s.visible.apply(&batch);
            match durability {
                Durability::Lazy => s.unsynced.push(batch),
                Durability::Sync | Durability::Deferred => {
                    for pending in s.unsynced.drain(..) {
                        s.durable.apply(&pending);
                    }
                    s.durable.apply(&batch);
                    s.stats.syncs += 1;
                }
            }
            s.stats.groups += 1;
            s.stats.batches += 1;
            s.stats.records_appended += lsns.len() as u64;
            lsns
        });
        // The lock is released: `done` may call back into this WAL.
        done(result);
    }

    fn replay(&self) -> Result<Vec<(Lsn, R)>, WalError> {
        let s = self.lock();
        s.visible
            .records
            .iter()
            .map(|(&lsn, bytes)| {
                let rec = decode_record(bytes, || format!("{LOCATION} log lsn {lsn}"))?;
                Ok((lsn, rec))
            })
            .collect()
    }

    fn get_data(&self, key: &[u8]) -> Result<Option<Vec<u8>>, WalError> {
        let s = self.lock();
        s.visible.data.get(key).map(|v| decode_value(v, || format!("{LOCATION} data key {}", hex(key)))).transpose()
    }

    fn scan_data(&self, from: &[u8], limit: usize) -> Result<Vec<DataEntry>, WalError> {
        let s = self.lock();
        s.visible
            .data
            .range(from.to_vec()..)
            .take(limit)
            .map(|(k, v)| {
                let value = decode_value(v, || format!("{LOCATION} data key {}", hex(k)))?;
                Ok((k.clone(), value))
            })
            .collect()
    }

    fn stats(&self) -> WalStats {
        self.lock().stats
    }
}
