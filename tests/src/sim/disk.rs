//! A simulated disk: the real in-memory WAL ([`MemWal`]) behind a group
//! commit queue with latency.
//!
//! A submitted batch waits in the queue until the node's next flush (a
//! scheduled event, after the fsync latency). A flush writes every queued
//! batch in submission order as one group — synced if any batch of the
//! group asked for `Sync`, as the real writer thread does — and returns
//! the completions in order. A crash empties the queue and calls
//! [`MemWal::crash`], which drops every batch not yet synced: exactly the
//! state a power cut leaves.
//!
//! A `Deferred` batch of an unsynced group is written at once, but its
//! completion is held until a sync covers it: the next synced group, or
//! the disk's own sync [`DEFERRED_SYNC_MS`] later (as `RocksWal` does).
//!
//! Each batch may carry a ghost tag; the disk tells the caller when a
//! tagged batch becomes durable, so checks can ask "was this record durable
//! when that message was sent?".

use twopc_wal::{Durability, Lsn, MemWal, Wal, WalBatch, WalError};

/// The WAL's bound on how long a deferred completion waits for a sync.
pub const DEFERRED_SYNC_MS: u64 = twopc_wal::DEFERRED_SYNC_WAIT.as_millis() as u64;

/// One batch that the last flush wrote.
#[derive(Debug)]
pub struct Written<T> {
    pub tag: T,
    pub lsns: Result<Vec<Lsn>, WalError>,
}

/// What a flush did.
#[derive(Debug)]
pub struct Flushed<T, G> {
    /// Completions, in submission order.
    pub written: Vec<Written<T>>,
    /// Ghost tags whose batch became durable in this flush.
    pub durable: Vec<G>,
    /// The group was written lazily: a background sync is due.
    pub lazy: bool,
    /// Deferred completions are held: the disk's own sync is due then.
    pub deferred_due_ms: Option<u64>,
}

/// What a background sync of lazy writes did.
#[derive(Debug)]
pub enum LazySync<T, G> {
    /// Every lazy write is durable now; these ghosts became durable and
    /// these held deferred completions run.
    Synced(Vec<G>, Vec<Written<T>>),
    /// Not quiet yet: try again at this time.
    Later(u64),
    /// Nothing unsynced.
    Nothing,
}

/// A node's disk: the WAL plus the batches not yet written.
pub struct Disk<R, T, G> {
    pub wal: MemWal<R>,
    queue: Vec<(WalBatch<R>, Durability, T, Option<G>)>,
    /// Ghost tags of batches written lazily since the last sync.
    lazy: Vec<G>,
    /// Lazy writes reached the WAL since the last sync.
    unsynced: bool,
    /// When the last group was written.
    last_write_ms: u64,
    /// Completions of written deferred batches waiting for a sync, and
    /// when the oldest was written.
    held: Vec<Written<T>>,
    held_since_ms: Option<u64>,
}

impl<R, T, G> Disk<R, T, G>
where
    MemWal<R>: Wal<R>,
{
    pub fn new() -> Self {
        Disk {
            wal: MemWal::new(),
            queue: Vec::new(),
            lazy: Vec::new(),
            unsynced: false,
            last_write_ms: 0,
            held: Vec::new(),
            held_since_ms: None,
        }
    }

    /// Queues a batch; returns true if the queue was empty (the caller
    /// schedules a flush).
    pub fn submit(&mut self, batch: WalBatch<R>, durability: Durability, tag: T, ghost: Option<G>) -> bool {
        self.queue.push((batch, durability, tag, ghost));
        self.queue.len() == 1
    }

    /// True if any queued batch asks for `Sync` (flush after fsync latency).
    pub fn wants_sync(&self) -> bool {
        self.queue.iter().any(|(_, d, _, _)| *d == Durability::Sync)
    }

    /// Nothing queued and nothing written lazily left unsynced.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.unsynced
    }

    /// Writes every queued batch as one group.
    pub fn flush(&mut self, now_ms: u64) -> Flushed<T, G> {
        self.last_write_ms = now_ms;
        let sync = self.wants_sync();
        let durability = if sync { Durability::Sync } else { Durability::Lazy };
        let mut written = if sync { self.release_held() } else { Vec::new() };
        let mut ghosts = Vec::new();
        for (batch, asked, tag, ghost) in std::mem::take(&mut self.queue) {
            let lsns = self.wal.write(batch, durability);
            if lsns.is_ok() {
                ghosts.extend(ghost);
            }
            if asked == Durability::Deferred && !sync {
                self.held_since_ms.get_or_insert(now_ms);
                self.held.push(Written { tag, lsns });
            } else {
                written.push(Written { tag, lsns });
            }
        }
        let durable = if sync {
            let mut durable = std::mem::take(&mut self.lazy);
            durable.extend(ghosts);
            durable
        } else {
            self.lazy.extend(ghosts);
            Vec::new()
        };
        self.unsynced = !sync;
        let deferred_due_ms = self.held_since_ms.map(|since| since + DEFERRED_SYNC_MS);
        Flushed { written, durable, lazy: !sync, deferred_due_ms }
    }

    fn release_held(&mut self) -> Vec<Written<T>> {
        self.held_since_ms = None;
        std::mem::take(&mut self.held)
    }

    /// The WAL's background sync: lazy writes become durable once the
    /// writer has been quiet for `interval_ms` (as `RocksWal` does within
    /// `LAZY_SYNC_INTERVAL`), or [`DEFERRED_SYNC_MS`] after the oldest
    /// held deferred completion was written.
    pub fn lazy_sync(&mut self, now_ms: u64, interval_ms: u64) -> LazySync<T, G> {
        if !self.unsynced {
            return LazySync::Nothing;
        }
        let due_ms = match self.held_since_ms {
            Some(since) => since + DEFERRED_SYNC_MS,
            None => self.last_write_ms + interval_ms,
        };
        if now_ms < due_ms || (self.held_since_ms.is_none() && !self.queue.is_empty()) {
            return LazySync::Later(due_ms.max(now_ms + 1));
        }
        if let Err(e) = self.wal.write(WalBatch::new(), Durability::Sync) {
            panic!("background sync failed: {e}");
        }
        self.unsynced = false;
        LazySync::Synced(std::mem::take(&mut self.lazy), self.release_held())
    }

    /// A power cut: the queue and every unsynced batch are lost.
    pub fn crash(&mut self) {
        self.queue.clear();
        self.lazy.clear();
        self.release_held();
        self.unsynced = false;
        self.wal.crash();
    }
}

impl<R, T, G> Default for Disk<R, T, G>
where
    MemWal<R>: Wal<R>,
{
    fn default() -> Self {
        Self::new()
    }
}
