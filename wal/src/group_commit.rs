//! The RocksDB writer thread: group commit.
//!
//! Submitters push [`Request`]s into a bounded channel. The writer blocks
//! for one request, drains up to [`MAX_GROUP_BATCHES`] more without
//! blocking (stopping early if the group would exceed
//! [`MAX_BATCH_BYTES`]), assigns LSNs, merges everything into ONE RocksDB
//! `WriteBatch` and writes it with `sync = true` if any request of the group
//! asked for [`Durability::Sync`]. Then it runs every completion, in order.
//! If the write fails, every completion of the group gets the error.
//!
//! [`Durability::Deferred`] completions of an unsynced group are held until
//! a sync covers them: the next synced group (they run after its own
//! completions), or the writer's own sync once the oldest of them has
//! waited [`DEFERRED_SYNC_WAIT`].

use crate::batch::{EncodedBatch, MAX_BATCH_BYTES};
use crate::record::{encode_value, lsn_key};
use crate::rocks::Db;
use crate::rocks::{cf, DATA_CF, LOG_CF, META_CF, NEXT_LSN_KEY};
use crate::{Completion, Durability, Lsn, WalError, WalStats};
use rocksdb::{WriteBatch, WriteOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Capacity of the bounded submission queue; `submit` blocks when full.
pub const WAL_QUEUE_CAPACITY: usize = 4096;
/// Maximum number of extra batches merged into one group after the first.
pub const MAX_GROUP_BATCHES: usize = 1024;
/// Lazy writes are synced at the latest this long after the writer goes
/// quiet (sooner if a synced write comes along and covers them).
pub const LAZY_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// A [`Durability::Deferred`] completion waits at most this long for a
/// synced write to cover it before the writer syncs on its own.
pub const DEFERRED_SYNC_WAIT: Duration = Duration::from_millis(2);

/// One submitted batch waiting for the writer.
pub(crate) struct Request {
    pub batch: EncodedBatch,
    pub durability: Durability,
    pub done: Completion,
}

/// Lock-free counters behind [`WalStats`].
#[derive(Debug, Default)]
pub(crate) struct AtomicStats {
    syncs: AtomicU64,
    batches: AtomicU64,
    groups: AtomicU64,
    records_appended: AtomicU64,
}

impl AtomicStats {
    pub fn snapshot(&self) -> WalStats {
        WalStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            groups: self.groups.load(Ordering::Relaxed),
            records_appended: self.records_appended.load(Ordering::Relaxed),
        }
    }
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub db: Arc<Db>,
    /// Human-readable database path, used in error messages.
    pub location: String,
    /// Next LSN to assign; never rolled back (even after a failed write,
    /// whose records may have partly reached the storage engine).
    pub next_lsn: Lsn,
    pub stats: Arc<AtomicStats>,
    /// Lazy writes reached RocksDB since the last sync.
    pub unsynced: bool,
    /// How long lazy writes may wait for a sync (`None`: until the next
    /// synced write).
    pub lazy_sync: Option<Duration>,
    /// Completions of written [`Durability::Deferred`] batches, waiting
    /// for a sync, oldest first, with the time the oldest was written.
    pub deferred: Vec<(Completion, Vec<Lsn>)>,
    pub deferred_since: Option<Instant>,
}

/// Run a completion, containing a panic so the writer keeps serving others.
fn complete(done: Completion, result: Result<Vec<Lsn>, WalError>) {
    if catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
        tracing::error!("WAL completion callback panicked; writer continues");
    }
}

impl Writer {
    /// Start the writer thread ("wal-writer").
    pub fn spawn(self, rx: Receiver<Request>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("wal-writer".to_string()).spawn(move || self.run(rx))
    }

    /// Serve groups until every sender is gone and the queue is drained.
    /// Lazy writes left unsynced are synced after [`LAZY_SYNC_INTERVAL`]
    /// of quiet, so "lazy" means "durable soon", never "maybe never";
    /// deferred completions get their sync within [`DEFERRED_SYNC_WAIT`].
    fn run(mut self, rx: Receiver<Request>) {
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(req) => req,
                None => match self.idle_wait() {
                    Some(wait) => match rx.recv_timeout(wait) {
                        Ok(req) => req,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_written();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    },
                    None => match rx.recv() {
                        Ok(req) => req,
                        Err(_) => break,
                    },
                },
            };
            let mut bytes = first.batch.size;
            let mut group = vec![first];
            while group.len() <= MAX_GROUP_BATCHES {
                let Ok(req) = rx.try_recv() else { break };
                if bytes + req.batch.size > MAX_BATCH_BYTES {
                    carry = Some(req);
                    break;
                }
                bytes += req.batch.size;
                group.push(req);
            }
            self.commit(group);
            if self.deferred_since.is_some_and(|since| since.elapsed() >= DEFERRED_SYNC_WAIT) {
                self.sync_written();
            }
        }
        if !self.deferred.is_empty() {
            self.sync_written();
        }
    }

    /// How long the writer may block for the next request before it owes
    /// a sync (`None`: as long as it likes).
    fn idle_wait(&self) -> Option<Duration> {
        if let Some(since) = self.deferred_since {
            return Some(DEFERRED_SYNC_WAIT.saturating_sub(since.elapsed()));
        }
        self.lazy_sync.filter(|_| self.unsynced)
    }

    /// Makes every write so far durable (one fsync of the WAL) and runs
    /// the deferred completions it covers. If the sync fails they get the
    /// error; lazy writes are retried at the next interval (a lasting
    /// failure also fails the next synced write, which stops the process).
    fn sync_written(&mut self) {
        let result = if self.unsynced { self.db.flush_wal(true).map(|()| true) } else { Ok(false) };
        let result = match result {
            Ok(synced) => {
                if synced {
                    self.unsynced = false;
                    self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, location = %self.location, "background WAL sync failed");
                Err(WalError::Storage(format!("{}: sync failed: {e}", self.location)))
            }
        };
        self.run_deferred(result);
    }

    /// Runs every held deferred completion, oldest first.
    fn run_deferred(&mut self, result: Result<(), WalError>) {
        self.deferred_since = None;
        for (done, lsns) in std::mem::take(&mut self.deferred) {
            complete(done, result.clone().map(|()| lsns));
        }
    }

    /// Write one group atomically and run its completions (holding the
    /// deferred ones if the group was not synced).
    fn commit(&mut self, group: Vec<Request>) {
        let sync = group.iter().any(|r| r.durability == Durability::Sync);
        let mut lsns = Vec::with_capacity(group.len());
        let result = self.write_group(&group, sync, &mut lsns);
        match result {
            Ok(wrote) => {
                if wrote {
                    self.unsynced = !sync;
                }
                let appended: usize = lsns.iter().map(Vec::len).sum();
                if wrote {
                    self.stats.groups.fetch_add(1, Ordering::Relaxed);
                    if sync {
                        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.stats.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
                self.stats.records_appended.fetch_add(appended as u64, Ordering::Relaxed);
                for (req, lsns) in group.into_iter().zip(lsns) {
                    if req.durability == Durability::Deferred && self.unsynced {
                        self.deferred_since.get_or_insert_with(Instant::now);
                        self.deferred.push((req.done, lsns));
                    } else {
                        complete(req.done, Ok(lsns));
                    }
                }
                if !self.unsynced {
                    // This group's sync (or an earlier one) covers them.
                    // They run after the group's own completions: a
                    // deferred one is never what a caller is waiting on.
                    self.run_deferred(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, batches = group.len(), "WAL group commit failed");
                for req in group {
                    complete(req.done, Err(err.clone()));
                }
            }
        }
    }

    /// Build and write the merged batch. Returns whether a storage write
    /// (or WAL sync) was issued; fills `lsns` with one entry per request.
    fn write_group(&mut self, group: &[Request], sync: bool, lsns: &mut Vec<Vec<Lsn>>) -> Result<bool, WalError> {
        let db = Arc::clone(&self.db);
        let log = cf(&db, LOG_CF, &self.location)?;
        let data = cf(&db, DATA_CF, &self.location)?;
        let meta = cf(&db, META_CF, &self.location)?;
        let start_lsn = self.next_lsn;
        let mut next = start_lsn;
        let mut wb = WriteBatch::default();
        for req in group {
            let b = &req.batch;
            if let Some(below) = b.remove_below {
                wb.delete_range_cf(log, lsn_key(0), lsn_key(below));
            }
            for &lsn in &b.remove {
                wb.delete_cf(log, lsn_key(lsn));
            }
            let mut mine = Vec::with_capacity(b.append.len());
            for rec in &b.append {
                wb.put_cf(log, lsn_key(next), rec);
                mine.push(next);
                next += 1;
            }
            lsns.push(mine);
            for (key, value) in &b.data {
                match value {
                    Some(v) => wb.put_cf(data, key, v),
                    None => wb.delete_cf(data, key),
                }
            }
        }
        if next != start_lsn {
            wb.put_cf(meta, NEXT_LSN_KEY, encode_value(&next.to_be_bytes()));
        }
        // Never hand out these LSNs again, whatever the outcome below.
        self.next_lsn = next;
        let res = if !wb.is_empty() {
            let mut opts = WriteOptions::default();
            opts.set_sync(sync);
            db.write_opt(wb, &opts).map(|()| true)
        } else if sync {
            // Nothing to write, but the caller wants everything before it
            // durable: flush and fsync the RocksDB WAL buffer.
            db.flush_wal(true).map(|()| true)
        } else {
            Ok(false)
        };
        res.map_err(|e| WalError::Storage(format!("{}: write failed: {e}", self.location)))
    }
}
