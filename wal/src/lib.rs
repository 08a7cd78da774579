//! A durable, typed, checksummed write-ahead log with group commit, plus a
//! small "data" key space stored in the same database so that "apply data
//! writes + delete a log record" is one atomic batch. Two implementations of
//! one trait: RocksDB (real, on disk, fsync) and in-memory (for the
//! deterministic simulator: it loses unsynced writes on a simulated crash).
//!
//! * [`Wal`] is the trait; [`WalBatch`] is the unit of atomicity.
//! * [`RocksWal`] stores log records, data and a persisted LSN high-water
//!   mark in three column families of one RocksDB instance; a dedicated
//!   writer thread merges concurrently submitted batches into one RocksDB
//!   write (group commit), so N concurrent `Sync` submitters cost ~1 fsync.
//!   A group submitted to an idle log is written by its submitter
//!   ([`Wal::submit_group`]). Its writer thread also keeps a synced mark
//!   file (how far the log was once durable): a log that opens with fewer
//!   records, its write-ahead files deleted or truncated, is refused.
//! * [`MemWal`] applies batches inline and keeps an "unsynced tail" that
//!   [`MemWal::crash`] throws away, exactly like a power cut would.
//! * [`record`] defines the on-disk envelope (`version | crc32c | payload`).
//!
//! Semantics shared by both implementations:
//! * Batches are applied in submission order, each atomically.
//! * Within one batch, removals (`remove_below`, then `remove`) are applied
//!   first, then `append`, then `data`; a batch therefore never deletes its
//!   own new records.
//! * LSNs start at 1 and strictly increase. The LSN of a record whose append
//!   became durable is never reused, even after the record was removed and
//!   the log reopened. LSNs of records that were lost in a crash before they
//!   became durable may be handed out again (nobody could have relied on
//!   them: their completion was either never run or was `Lazy`).

mod batch;
mod dir_identity;
mod error;
mod group_commit;
pub mod mem;
pub mod record;
pub mod rocks;
mod synced_mark;
pub mod testing;

pub use batch::{WalBatch, MAX_BATCH_BYTES, MAX_VALUE_BYTES};
pub use error::WalError;
pub use group_commit::{
    DEFERRED_SYNC_WAIT, INLINE_PAUSE_AFTER_SLOW_WRITE, LAZY_SYNC_INTERVAL, MAX_GROUP_BATCHES, SLOW_INLINE_WRITE,
    WAL_QUEUE_CAPACITY, WATCH_AFTER_WRITE,
};
pub use mem::MemWal;
pub use rocks::{RocksWal, MAX_WAL_FILES_BYTES};
pub use synced_mark::MARK_INTERVAL;

/// Log sequence number, assigned by the WAL, strictly increasing, starting
/// at 1, never reused across restarts for durable records.
pub type Lsn = u64;

/// How durable a batch must be before its completion runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Completion only after the batch (and everything before it) is fsynced.
    Sync,
    /// Completion once applied; may be lost in a crash until a later
    /// synced write covers it (the RocksDB WAL syncs lazy writes within
    /// [`LAZY_SYNC_INTERVAL`] of going quiet).
    Lazy,
    /// Applied (visible to reads) at once like `Lazy`, but the completion
    /// runs only once a sync covers the batch: the next `Sync` group, or
    /// the writer's own sync at most [`DEFERRED_SYNC_WAIT`] later. Many
    /// deferred batches share one fsync, usually one that a `Sync` batch
    /// paid for anyway. An empty deferred batch is a durability barrier:
    /// its completion means "everything submitted before me is durable".
    /// ([`MemWal`] syncs at once: a stronger form of the same promise.)
    Deferred,
}

/// One data-space entry returned by [`Wal::scan_data`]: `(key, value)`.
pub type DataEntry = (Vec<u8>, Vec<u8>);

/// Callback run once a batch is applied; receives the LSNs of `append`, in
/// order, or the error that prevented the batch from being applied.
pub type Completion = Box<dyn FnOnce(Result<Vec<Lsn>, WalError>) + Send>;

/// Writes a submitter should hold back for one [`Wal::submit_group`], at
/// most (it submits earlier if nothing else is waiting).
pub const MAX_HELD_WRITES: usize = 32;

/// Requests a server's engine may have in progress and still write an idle
/// log on its own thread ([`Wal::submit_group`] with `inline_if_idle`).
/// With more, the load is high enough that the writer thread pays more
/// (syncing while the engine goes on with the next requests) than the two
/// hand-offs it costs: measured at concurrency 64, writing inline whenever
/// the log was idle cost about 10% of the throughput.
pub const INLINE_MAX_IN_PROGRESS: usize = 2;

/// One batch for [`Wal::submit_group`], with its durability and completion.
pub struct Submission<R> {
    pub batch: WalBatch<R>,
    pub durability: Durability,
    pub done: Completion,
}

/// The WAL writes a server's engine task holds while it handles the inputs
/// waiting now, submitted as one group once none is waiting (or
/// [`MAX_HELD_WRITES`] are held), so that an idle log writes them on the
/// engine's own thread (see [`Wal::submit_group`]).
pub struct HeldWrites<R> {
    writes: Vec<Submission<R>>,
}

impl<R> Default for HeldWrites<R> {
    fn default() -> Self {
        HeldWrites { writes: Vec::new() }
    }
}

impl<R: 'static> HeldWrites<R> {
    /// Holds a write until the next [`HeldWrites::flush`].
    pub fn hold(&mut self, batch: WalBatch<R>, durability: Durability, done: Completion) {
        self.writes.push(Submission { batch, durability, done });
    }

    /// [`MAX_HELD_WRITES`] are held: flush now, whatever is waiting.
    pub fn is_full(&self) -> bool {
        self.writes.len() >= MAX_HELD_WRITES
    }

    /// Submits the held writes as one group: written on the caller's
    /// thread if the log is idle and at most [`INLINE_MAX_IN_PROGRESS`]
    /// requests are `in_progress` at the engine, else queued for the
    /// writer thread.
    pub fn flush(&mut self, wal: &dyn Wal<R>, in_progress: usize) {
        if !self.writes.is_empty() {
            wal.submit_group(std::mem::take(&mut self.writes), in_progress <= INLINE_MAX_IN_PROGRESS);
        }
    }

    /// Writes `batch` now, synced, after every held write (so before
    /// whatever the caller does next): for an operator's rare records.
    pub fn write_now(
        &mut self,
        wal: &dyn Wal<R>,
        in_progress: usize,
        batch: WalBatch<R>,
    ) -> Result<Vec<Lsn>, WalError> {
        self.flush(wal, in_progress);
        wal.write(batch, Durability::Sync)
    }
}

/// Counters describing the work a WAL has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalStats {
    /// Number of fsyncs performed.
    pub syncs: u64,
    /// Batches submitted and successfully applied.
    pub batches: u64,
    /// Number of storage writes (each covers >= 1 batch).
    pub groups: u64,
    /// Log records appended.
    pub records_appended: u64,
}

/// A write-ahead log of records of type `R` plus a small data key space.
///
/// Implementations require `R: Serialize + DeserializeOwned + Send + 'static`.
pub trait Wal<R>: Send + Sync + 'static {
    /// Queue a batch; `done` runs (on the writer thread, or inline for the
    /// in-memory wal) once the batch is applied atomically and, for
    /// [`Durability::Sync`] or [`Durability::Deferred`], fsynced. Batches
    /// are applied in submission order. If the bounded queue is full this
    /// blocks the caller until there is room (back-pressure). Invalid
    /// batches (too large, not encodable) and submissions to a closed WAL
    /// complete inline with an error. `done` must not block on this WAL
    /// (it may run on the writer).
    fn submit(&self, batch: WalBatch<R>, durability: Durability, done: Completion);

    /// Submits several batches, in order, from a caller with nothing else
    /// to submit right now. If `inline_if_idle` and the writer is idle
    /// (every earlier batch written and completed), they are written as
    /// one group (synced if any is [`Durability::Sync`]) on the calling
    /// thread, and their completions run before this returns (deferred
    /// ones once a sync covers them, as usual): at low load that saves the
    /// hand-offs to and from the writer thread. Otherwise they are queued
    /// like `submit`. May block the caller for an fsync.
    fn submit_group(&self, group: Vec<Submission<R>>, inline_if_idle: bool) {
        let _ = inline_if_idle;
        for s in group {
            self.submit(s.batch, s.durability, s.done);
        }
    }

    /// Submit and block until the batch is done.
    fn write(&self, batch: WalBatch<R>, durability: Durability) -> Result<Vec<Lsn>, WalError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            batch,
            durability,
            Box::new(move |res| {
                // The receiver only disappears if the caller is gone.
                let _ = tx.send(res);
            }),
        );
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// All live log records in LSN order. Any undecodable or
    /// checksum-failing record yields [`WalError::Corrupt`] naming its LSN;
    /// records are never skipped.
    fn replay(&self) -> Result<Vec<(Lsn, R)>, WalError>;

    /// Value of one data key.
    fn get_data(&self, key: &[u8]) -> Result<Option<Vec<u8>>, WalError>;

    /// Up to `limit` data entries with key >= `from`, in key order.
    fn scan_data(&self, from: &[u8], limit: usize) -> Result<Vec<DataEntry>, WalError>;

    /// Snapshot of the counters.
    fn stats(&self) -> WalStats;
}
