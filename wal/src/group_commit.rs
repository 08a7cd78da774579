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
//!
//! Idle fast path ([`Shared::try_inline`]): a group of requests submitted
//! (with `Wal::submit_group`) while nothing is queued, being written or
//! being completed is written as one storage write (synced, if any asks)
//! on the submitter's own thread.
//! At low load that saves the two thread hand-offs (wake the writer, wake
//! the submitter) that otherwise cost more than the fsync on a busy
//! machine. The writer's state sits behind one mutex, so either thread
//! writes, never both; the `queued` count (raised before a request enters
//! the channel, lowered once its group is finished) keeps submission
//! order: the fast path is only taken when every earlier request has been
//! written and its completion run (or held, if deferred). The syncs that
//! lazy and deferred writes are owed stay the writer thread's job: for
//! [`WATCH_AFTER_WRITE`] after a write it wakes every
//! [`DEFERRED_SYNC_WAIT`] to check, and an inline write that leaves a sync
//! owed while the writer sleeps past its deadline wakes it with an
//! uncounted wake-up request, so the deadlines above hold either way.
//!
//! The cost: a fast-path fsync blocks the submitter's thread (a server's
//! only runtime thread) for as long as the disk takes, and nothing else in
//! that process runs meanwhile. So a fast-path write slower than
//! [`SLOW_INLINE_WRITE`] turns the fast path off for
//! [`INLINE_PAUSE_AFTER_SLOW_WRITE`]: a stalling disk then holds up only
//! the writes, as it would without the fast path, not the server's reads
//! and admin answers.

use crate::batch::{EncodedBatch, MAX_BATCH_BYTES};
use crate::dir_identity::DirIdentity;
use crate::record::{encode_value, lsn_key};
use crate::rocks::Db;
use crate::rocks::{cf, DATA_CF, LOG_CF, META_CF, NEXT_LSN_KEY};
use crate::synced_mark::SyncedMark;
use crate::{Completion, Durability, Lsn, WalError, WalStats};
use rocksdb::{WriteBatch, WriteOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
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
/// A fast-path write that takes longer than this (a stalling disk)...
pub const SLOW_INLINE_WRITE: Duration = Duration::from_millis(20);
/// ...sends every write to the writer thread for this long.
pub const INLINE_PAUSE_AFTER_SLOW_WRITE: Duration = Duration::from_secs(10);
/// An inline write this slow is logged as a warning (a slow one below it,
/// at debug).
pub const STALLED_WRITE_WARNING: Duration = Duration::from_secs(1);
/// For this long after a write, the idle writer thread wakes every
/// [`DEFERRED_SYNC_WAIT`] to check for owed syncs (then it sleeps until
/// a request comes), so inline writes rarely need to wake it.
pub const WATCH_AFTER_WRITE: Duration = Duration::from_millis(100);

/// One submitted batch waiting for the writer.
pub(crate) struct Request {
    pub batch: EncodedBatch,
    pub durability: Durability,
    pub done: Completion,
    /// Not a write: makes a sleeping writer re-read its sync deadline.
    /// Not counted in `queued`.
    pub wake: bool,
}

impl Request {
    pub fn wake() -> Self {
        Request { batch: EncodedBatch::default(), durability: Durability::Lazy, done: Box::new(|_| {}), wake: true }
    }
}

/// What [`Shared::try_inline`] did.
pub(crate) enum Inline {
    /// Written and completed; `wake_writer`: the writer thread sleeps past
    /// the sync it now owes, so it must be sent a [`Request::wake`].
    Done { wake_writer: bool },
    /// The writer is busy: queue the requests instead.
    Busy(Vec<Request>),
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

/// Completions of finished work with their results, run (in order) once
/// the writer's state is unlocked, so a completion may submit again.
type Finished = Vec<(Completion, Result<Vec<Lsn>, WalError>)>;

/// What the writer thread and the idle fast path share.
pub(crate) struct Shared {
    writer: Mutex<Writer>,
    /// Requests submitted whose group is not finished yet.
    queued: AtomicUsize,
    /// The synced mark (`None`: none kept). Its own lock: rewriting it
    /// (an fsync) holds up no write.
    mark: Mutex<Option<SyncedMark>>,
}

/// The writer's state: whoever holds the lock may write.
pub(crate) struct Writer {
    pub db: Arc<Db>,
    /// The database directory as opened: checked before a synced write
    /// is reported done (`None`: not checked).
    pub dir: Option<DirIdentity>,
    /// Human-readable database path, used in error messages.
    pub location: String,
    /// Next LSN to assign; never rolled back (even after a failed write,
    /// whose records may have partly reached the storage engine).
    pub next_lsn: Lsn,
    /// The next LSN as the last successful write stored it, and as the
    /// last successful sync covered it (what the synced mark may say).
    pub stored_next_lsn: Lsn,
    pub durable_next_lsn: Lsn,
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
    /// A fast-path write slower than this pauses the fast path
    /// ([`SLOW_INLINE_WRITE`]).
    pub slow_inline_write: Duration,
    /// No fast-path writes before this (after a slow one).
    pub inline_paused_until: Option<Instant>,
    /// When the last group was written (by either thread).
    pub last_write: Instant,
    /// The writer thread went to sleep until this time (`Some(None)`: with
    /// no deadline); `None` while it works (or is being woken).
    pub asleep: Option<Option<Instant>>,
}

/// Run completions in order, containing a panic so the writer keeps
/// serving others.
fn run_all(finished: Finished) {
    for (done, result) in finished {
        if catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
            tracing::error!("WAL completion callback panicked; writer continues");
        }
    }
}

impl Shared {
    /// `mark`: the synced mark to keep (`None`: none).
    pub fn new(writer: Writer, mark: Option<SyncedMark>) -> Arc<Self> {
        Arc::new(Shared { writer: Mutex::new(writer), queued: AtomicUsize::new(0), mark: Mutex::new(mark) })
    }

    /// The writer's state. A panic while it was held can only come from
    /// RocksDB's bindings; the state stays consistent (LSNs are never
    /// reused), so the lock is taken over rather than poisoning the WAL.
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a request about to enter the channel.
    pub fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// Uncounts a request that never reached the writer.
    pub fn withdrawn(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// The idle fast path: writes `group` (in order, as one storage write)
    /// on this thread if nothing else is queued, being written or being
    /// completed, and runs its completions (deferred ones once a sync
    /// covers them) before returning. Gives the group back if the writer
    /// is busy or the group is larger than the writer's own.
    pub fn try_inline(&self, group: Vec<Request>) -> Inline {
        let bytes: usize = group.iter().map(|r| r.batch.size).sum();
        if group.len() > MAX_GROUP_BATCHES || bytes > MAX_BATCH_BYTES || self.queued.load(Ordering::SeqCst) != 0 {
            return Inline::Busy(group);
        }
        let Ok(mut writer) = self.writer.try_lock() else { return Inline::Busy(group) };
        // Re-checked under the lock: the writer thread may have taken a
        // request out of the channel between the check and the lock.
        if self.queued.load(Ordering::SeqCst) != 0 {
            return Inline::Busy(group);
        }
        if writer.inline_paused_until.is_some_and(|until| Instant::now() < until) {
            return Inline::Busy(group);
        }
        let started = Instant::now();
        let finished = writer.commit(group);
        let took = started.elapsed();
        if took > writer.slow_inline_write {
            // A mode switch, not an alarm, unless the disk really stalled
            // (trial 24C: 19 warnings in 15 min for 20-50 ms writes).
            let took_ms = took.as_millis() as u64;
            let path = &writer.location;
            if took >= STALLED_WRITE_WARNING {
                tracing::warn!(%path, took_ms, "WAL write stalled; writing on the writer thread only for a while");
            } else {
                tracing::debug!(%path, took_ms, "slow WAL write; writing on the writer thread only for a while");
            }
            writer.inline_paused_until = Some(Instant::now() + INLINE_PAUSE_AFTER_SLOW_WRITE);
        }
        let sync_owed = writer.sleeps_past_deadline();
        let (durable, asleep) = (writer.durable_next_lsn, writer.asleep);
        drop(writer);
        run_all(finished);
        // The synced mark is the writer thread's to rewrite: one sleeping
        // until a request comes would leave it behind for good while
        // every write goes inline (a trial truncated a participant's
        // write-ahead file after 25 s of one-phase commits, and its
        // acknowledged keys opened as absent, unnoticed). Its own lock,
        // taken after the writer's is released (`update_mark` takes them
        // in the other order).
        let mark_owed = self.mark_due_in(durable).is_some_and(|due| sleeps_past(asleep, due));
        Inline::Done { wake_writer: sync_owed || mark_owed }
    }

    /// Start the writer thread ("wal-writer").
    pub fn spawn(self: &Arc<Self>, rx: Receiver<Request>) -> std::io::Result<JoinHandle<()>> {
        let shared = Arc::clone(self);
        std::thread::Builder::new().name("wal-writer".to_string()).spawn(move || shared.run(rx))
    }

    fn lock_mark(&self) -> MutexGuard<'_, Option<SyncedMark>> {
        self.mark.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rewrites the synced mark if it is due (outside the writer's lock:
    /// its fsync holds up no write).
    fn update_mark(&self) {
        if let Some(mark) = self.lock_mark().as_mut().filter(|m| m.may_be_due()) {
            let durable = self.lock().durable_next_lsn;
            mark.update(durable);
        }
    }

    /// How long until the mark should be rewritten (`None`: not owed).
    fn mark_due_in(&self, durable: Lsn) -> Option<Duration> {
        self.lock_mark().as_ref().and_then(|m| m.due_in(durable))
    }

    /// Rewrites the synced mark now, if it is behind what is durable (at a
    /// close or a stop).
    pub fn mark_now(&self) {
        if let Some(mark) = self.lock_mark().as_mut() {
            let durable = self.lock().durable_next_lsn;
            mark.update_now(durable);
        }
    }

    /// Serve groups until every sender is gone and the queue is drained.
    /// Lazy writes left unsynced are synced after [`LAZY_SYNC_INTERVAL`]
    /// of quiet, so "lazy" means "durable soon", never "maybe never";
    /// deferred completions get their sync within [`DEFERRED_SYNC_WAIT`].
    fn run(&self, rx: Receiver<Request>) {
        let mut carry: Option<Request> = None;
        loop {
            self.update_mark();
            let first = match carry.take() {
                Some(req) => req,
                None => {
                    let wait = {
                        let durable = self.lock().durable_next_lsn;
                        let mark_due = self.mark_due_in(durable);
                        let mut writer = self.lock();
                        let wait = match (writer.sleep_for(), mark_due) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        writer.asleep = Some(wait.map(|wait| Instant::now() + wait));
                        wait
                    };
                    let received = match wait {
                        Some(wait) => match rx.recv_timeout(wait) {
                            Ok(req) => req,
                            Err(RecvTimeoutError::Timeout) => {
                                let finished = {
                                    let mut writer = self.lock();
                                    writer.asleep = None;
                                    if writer.sync_due().is_some_and(|due| due.is_zero()) {
                                        writer.sync_written()
                                    } else {
                                        Vec::new()
                                    }
                                };
                                run_all(finished);
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        },
                        None => match rx.recv() {
                            Ok(req) => req,
                            Err(_) => break,
                        },
                    };
                    if received.wake {
                        continue;
                    }
                    received
                }
            };
            let mut bytes = first.batch.size;
            let mut group = vec![first];
            while group.len() <= MAX_GROUP_BATCHES {
                let Ok(req) = rx.try_recv() else { break };
                if req.wake {
                    continue;
                }
                if bytes + req.batch.size > MAX_BATCH_BYTES {
                    carry = Some(req);
                    break;
                }
                bytes += req.batch.size;
                group.push(req);
            }
            let count = group.len();
            let finished = {
                let mut writer = self.lock();
                writer.asleep = None;
                let mut finished = writer.commit(group);
                if writer.deferred_since.is_some_and(|since| since.elapsed() >= DEFERRED_SYNC_WAIT) {
                    finished.extend(writer.sync_written());
                }
                finished
            };
            run_all(finished);
            self.queued.fetch_sub(count, Ordering::SeqCst);
        }
        let finished = {
            let mut writer = self.lock();
            if writer.deferred.is_empty() {
                Vec::new()
            } else {
                writer.sync_written()
            }
        };
        run_all(finished);
        self.mark_now();
    }
}

/// Whether a writer thread `asleep` so (see [`Writer::asleep`]) sleeps
/// past something owed `due` from now.
fn sleeps_past(asleep: Option<Option<Instant>>, due: Duration) -> bool {
    match asleep {
        None => false,
        Some(None) => true,
        Some(Some(until)) => until > Instant::now() + due,
    }
}

impl Writer {
    /// Whether the writer thread sleeps past the sync it now owes (after
    /// an inline write), so it must be woken to keep the deadline.
    fn sleeps_past_deadline(&self) -> bool {
        self.sync_due().is_some_and(|due| sleeps_past(self.asleep, due))
    }

    /// Time left until a sync is owed (`None`: nothing is owed): deferred
    /// completions wait at most [`DEFERRED_SYNC_WAIT`], lazy writes at
    /// most the lazy interval after the last write.
    fn sync_due(&self) -> Option<Duration> {
        if let Some(since) = self.deferred_since {
            return Some(DEFERRED_SYNC_WAIT.saturating_sub(since.elapsed()));
        }
        self.lazy_sync.filter(|_| self.unsynced).map(|lazy| lazy.saturating_sub(self.last_write.elapsed()))
    }

    /// How long the writer thread may sleep (`None`: until a request
    /// comes). Within [`WATCH_AFTER_WRITE`] of a write it wakes at least
    /// every [`DEFERRED_SYNC_WAIT`], so an inline write that leaves a sync
    /// owed need not wake it.
    fn sleep_for(&self) -> Option<Duration> {
        let watch = (self.last_write.elapsed() < WATCH_AFTER_WRITE).then_some(DEFERRED_SYNC_WAIT);
        match (self.sync_due(), watch) {
            (Some(due), Some(watch)) => Some(due.min(watch)),
            (due, watch) => due.or(watch),
        }
    }

    /// Makes every write so far durable (one fsync of the WAL) and runs
    /// the deferred completions it covers. If the sync fails they get the
    /// error; lazy writes are retried at the next interval (a lasting
    /// failure also fails the next synced write, which stops the process).
    fn sync_written(&mut self) -> Finished {
        let result = if self.unsynced { self.db.flush_wal(true).map(|()| true) } else { Ok(false) };
        let result = match result {
            Ok(synced) => self.check_dir().map(|()| synced),
            Err(e) => Err(WalError::Storage(format!("{}: sync failed: {e}", self.location))),
        };
        let result = match result {
            Ok(synced) => {
                if synced {
                    self.unsynced = false;
                    self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                }
                self.durable_next_lsn = self.stored_next_lsn;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, location = %self.location, "background WAL sync failed");
                Err(e)
            }
        };
        let mut finished = Vec::new();
        self.release_deferred(result, &mut finished);
        finished
    }

    /// Hands over every held deferred completion, oldest first.
    fn release_deferred(&mut self, result: Result<(), WalError>, finished: &mut Finished) {
        self.deferred_since = None;
        for (done, lsns) in std::mem::take(&mut self.deferred) {
            finished.push((done, result.clone().map(|()| lsns)));
        }
    }

    /// Write one group atomically; returns its completions (holding the
    /// deferred ones if the group was not synced).
    fn commit(&mut self, group: Vec<Request>) -> Finished {
        self.last_write = Instant::now();
        let mut finished = Vec::with_capacity(group.len());
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
                        finished.push((req.done, Ok(lsns)));
                    }
                }
                if !self.unsynced {
                    // This group's sync (or an earlier one) covers them.
                    // They run after the group's own completions: a
                    // deferred one is never what a caller is waiting on.
                    self.release_deferred(Ok(()), &mut finished);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, batches = group.len(), "WAL group commit failed");
                for req in group {
                    finished.push((req.done, Err(err.clone())));
                }
            }
        }
        finished
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
        let wrote = res.map_err(|e| WalError::Storage(format!("{}: write failed: {e}", self.location)))?;
        if next != start_lsn {
            self.stored_next_lsn = next;
        }
        if sync {
            self.check_dir()?;
            // Everything written so far is durable (a sync covers all).
            self.durable_next_lsn = self.stored_next_lsn;
        }
        Ok(wrote)
    }

    /// Fails once the database directory is gone or replaced (see
    /// [`DirIdentity`]): what a sync made "durable" is then not.
    fn check_dir(&self) -> Result<(), WalError> {
        self.dir.as_ref().map_or(Ok(()), DirIdentity::check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rocks::open_db;

    fn request(durability: Durability) -> Request {
        Request { batch: EncodedBatch::default(), durability, done: Box::new(|_| {}), wake: false }
    }

    /// A slow fast-path write (here: any, with the threshold at zero)
    /// sends the next writes to the writer thread.
    #[test]
    fn a_slow_inline_write_pauses_the_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new(
            Writer {
                db: Arc::new(open_db(dir.path(), true).unwrap()),
                dir: None,
                location: "test".into(),
                next_lsn: 1,
                stored_next_lsn: 1,
                durable_next_lsn: 1,
                stats: Arc::default(),
                unsynced: false,
                lazy_sync: None,
                deferred: Vec::new(),
                deferred_since: None,
                slow_inline_write: Duration::ZERO,
                inline_paused_until: None,
                last_write: Instant::now(),
                asleep: None,
            },
            None,
        );
        assert!(matches!(shared.try_inline(vec![request(Durability::Sync)]), Inline::Done { .. }));
        assert!(matches!(shared.try_inline(vec![request(Durability::Sync)]), Inline::Busy(_)));
        shared.lock().inline_paused_until = Some(Instant::now());
        assert!(matches!(shared.try_inline(vec![request(Durability::Sync)]), Inline::Done { .. }), "pause over");
    }
}
