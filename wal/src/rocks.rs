//! [`RocksWal`]: the on-disk WAL.
//!
//! One RocksDB database with three column families: `log` (LSN big-endian
//! -> sealed record), `data` (raw key -> sealed value) and `meta`
//! (`next_lsn` high-water mark, rewritten in every group that appends, so
//! LSNs are not reused even after all records were removed).
//!
//! The database runs with `manual_wal_flush`: unsynced (`Lazy`) writes stay
//! in RocksDB's user-space buffer until a `Sync` write (or a clean close)
//! flushes and fsyncs it, so a SIGKILL loses them exactly like a power cut.
//! Writes go through the group-commit writer thread (see `group_commit`),
//! or, for a group submitted with [`Wal::submit_group`] while the writer
//! is idle, straight from the submitter's thread; reads
//! go straight to the database from the calling thread.

use crate::batch::EncodedBatch;
use crate::dir_identity::DirIdentity;
use crate::group_commit::{AtomicStats, Inline, Request, Shared, Writer, WAL_QUEUE_CAPACITY};
use crate::record::{decode_lsn_key, decode_record, decode_value, hex};
use crate::{Completion, DataEntry, Durability, Lsn, Submission, Wal, WalBatch, WalError, WalStats};
use rocksdb::{
    BottommostLevelCompaction, ColumnFamily, ColumnFamilyDescriptor, CompactOptions, DBRecoveryMode, DBWithThreadMode,
    Direction, IteratorMode, Options, SingleThreaded,
};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The RocksDB handle type used by the WAL (column families are fixed at
/// open, so the single-threaded CF map suffices; named explicitly so that
/// feature unification elsewhere cannot change it).
pub(crate) type Db = DBWithThreadMode<SingleThreaded>;

pub(crate) const LOG_CF: &str = "log";
pub(crate) const DATA_CF: &str = "data";
pub(crate) const META_CF: &str = "meta";
pub(crate) const NEXT_LSN_KEY: &[u8] = b"next_lsn";

/// Look up a column family handle.
pub(crate) fn cf<'a>(db: &'a Db, name: &str, location: &str) -> Result<&'a ColumnFamily, WalError> {
    db.cf_handle(name).ok_or_else(|| WalError::Storage(format!("{location}: missing column family {name:?}")))
}

fn storage(location: &str, what: &str, err: rocksdb::Error) -> WalError {
    WalError::Storage(format!("{location}: {what}: {err}"))
}

/// All memtables of one WAL together, at most (RocksDB's own default
/// would allow 3 column families × 2 × 64 MiB).
pub const MEMTABLE_BUDGET_BYTES: usize = 64 << 20;
/// One column family's memtable before it is flushed to an SST file.
pub const MEMTABLE_BYTES: usize = 16 << 20;

/// RocksDB's own write-ahead files, all together, at most about this much
/// (plus the file being written): past it, RocksDB flushes the column
/// families that keep the oldest file alive. Without it, the `meta` column
/// family (a few bytes per group, so its memtable hardly ever fills) kept
/// every file alive until RocksDB's default bound, 4 × every memtable's
/// size, and beyond: a participant held 0.7–1.8 GB of them for a few MB of
/// data, and kept them when idle.
pub const MAX_WAL_FILES_BYTES: u64 = 64 << 20;

/// RocksDB info LOG files kept (the current one and older ones).
pub const MAX_INFO_LOG_FILES: usize = 5;
/// Size at which RocksDB starts a new info LOG file. Unset, it rotated
/// only at restarts, so a long-running server's grew for good (about 30 KB
/// a minute under load). With [`MAX_INFO_LOG_FILES`]: 20 MiB at most.
pub const MAX_INFO_LOG_BYTES: usize = 4 << 20;

/// SST files RocksDB keeps open at once (its default keeps every one open,
/// so a large store could use up the process's file descriptors).
pub const MAX_OPEN_TABLE_FILES: i32 = 256;

/// Open the database with the WAL's options; `create`: create it if it
/// is missing, else refuse.
pub(crate) fn open_db(path: &Path, create: bool) -> Result<Db, WalError> {
    let mut opts = Options::default();
    opts.create_if_missing(create);
    opts.create_missing_column_families(true);
    opts.set_manual_wal_flush(true);
    opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    opts.set_paranoid_checks(true);
    // Every closed, synced write-ahead file is listed in the MANIFEST, so
    // that one deleted while still needed (an older file, whose records a
    // column family has not flushed yet) fails the open instead of opening
    // without its records (the synced mark catches only the newest ones).
    opts.set_track_and_verify_wals_in_manifest(true);
    opts.set_max_open_files(MAX_OPEN_TABLE_FILES);
    // RocksDB starts a new info LOG at every open and keeps 1,000 old
    // ones: a server crash-looping on a full disk added one per attempt.
    opts.set_keep_log_file_num(MAX_INFO_LOG_FILES);
    opts.set_max_log_file_size(MAX_INFO_LOG_BYTES);
    // Memory: all memtables together stay under MEMTABLE_BUDGET_BYTES
    // (RocksDB flushes the largest when the budget is reached).
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
    opts.set_max_total_wal_size(MAX_WAL_FILES_BYTES);
    // The (unused) default column family is listed too: the largest
    // memtable size sets how much disk each new write-ahead file reserves
    // up front (1.1 × it), 64 MB per file with RocksDB's default.
    let cfs = [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, LOG_CF, DATA_CF, META_CF].map(|name| {
        let mut cf_opts = Options::default();
        cf_opts.set_write_buffer_size(MEMTABLE_BYTES);
        cf_opts.set_max_write_buffer_number(2);
        ColumnFamilyDescriptor::new(name, cf_opts)
    });
    Db::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
        let location = path.display().to_string();
        let text = e.to_string();
        if !create && (text.contains("does not exist") || !path.exists()) {
            return WalError::Missing { location, reason: text };
        }
        if text.contains("Missing WAL with log number") {
            let reason = format!("a write-ahead file (*.log) it still needs was deleted; RocksDB: {text}");
            return WalError::Missing { location, reason };
        }
        if text.contains("Corruption") {
            // RocksDB's message names neither the file nor the offset; its
            // own info log does (trial 22A flipped bytes in a *.log file).
            let what = format!(
                "open failed: a file of the log is damaged; RocksDB's own log ({}) names which file and where. \
                 Nothing is opened rather than the records after the damage lost: restore this node's data \
                 directory from a backup, or replace the node",
                path.join("LOG").display()
            );
            return storage(&location, &what, e);
        }
        let in_use = text.contains("LOCK");
        let what = if in_use { "open failed (is another process using this data directory?)" } else { "open failed" };
        storage(&location, what, e)
    })
}

/// True if `dir` holds RocksDB data files (write-ahead `.log`, `.sst`,
/// `MANIFEST-*`), not just the info `LOG`s and `LOCK` a failed first open
/// may leave.
fn holds_data_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".log") || name.ends_with(".sst") || name.starts_with("MANIFEST-")
    })
}

/// Whether `dir` holds what a RocksDB killed while creating a database
/// leaves: a `MANIFEST-*` but no `CURRENT`, no table (`.sst`) and no
/// write-ahead file (`.log`), so no record. (A log that ever held a
/// record keeps a write-ahead file or a table.)
fn creation_interrupted(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let names: Vec<String> =
        entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.iter().any(|n| n.starts_with("MANIFEST-"))
        && !names.iter().any(|n| n == "CURRENT" || n.ends_with(".sst") || n.ends_with(".log"))
}

/// Removes the files of an interrupted creation that would make RocksDB
/// refuse to create the database there (its info `LOG`s stay).
fn clear_interrupted_creation(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("MANIFEST-")
            || name.starts_with("OPTIONS-")
            || name.ends_with(".dbtmp")
            || name == "IDENTITY"
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// How many RocksDB write-ahead files (`NNNNNN.log`) `dir` holds.
fn write_ahead_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_string_lossy().strip_suffix(".log").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// Writes `marker` (saying that the log at `log` exists) durably: the
/// file and its directory synced.
fn write_marker(marker: &Path, log: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(marker)?;
    writeln!(file, "the write-ahead log {} was created here; twopc refuses to start without it", log.display())?;
    file.sync_all()?;
    let dir = marker.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// The first LSN to hand out: after both the last live record and the
/// persisted high-water mark.
fn recover_next_lsn(db: &Db, location: &str) -> Result<Lsn, WalError> {
    let mut next: Lsn = 1;
    let log = cf(db, LOG_CF, location)?;
    if let Some(item) = db.iterator_cf(log, IteratorMode::End).next() {
        let (key, _) = item.map_err(|e| storage(location, "reading last log record", e))?;
        let last = decode_lsn_key(&key, || format!("{location} log key"))?;
        next = next.max(last.saturating_add(1));
    }
    let meta = cf(db, META_CF, location)?;
    let stored = db.get_pinned_cf(meta, NEXT_LSN_KEY).map_err(|e| storage(location, "reading next_lsn", e))?;
    if let Some(bytes) = stored {
        let meta_loc = || format!("{location} meta next_lsn");
        let raw = decode_value(&bytes, meta_loc)?;
        let arr: [u8; 8] = raw
            .as_slice()
            .try_into()
            .map_err(|_| WalError::corrupt(meta_loc(), format!("expected 8 bytes, found {}", raw.len())))?;
        next = next.max(Lsn::from_be_bytes(arr));
    }
    Ok(next)
}

/// RocksDB-backed [`Wal`] with a group-commit writer thread.
///
/// Dropping it closes the queue, lets the writer finish every pending
/// request, joins it, and flushes + fsyncs RocksDB's WAL buffer (so a clean
/// shutdown keeps `Lazy` writes too).
pub struct RocksWal<R> {
    db: Arc<Db>,
    location: String,
    path: PathBuf,
    tx: Option<SyncSender<Request>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<AtomicStats>,
    _records: PhantomData<fn(R) -> R>,
}

impl<R> std::fmt::Debug for RocksWal<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksWal").field("path", &self.path).field("stats", &self.stats.snapshot()).finish()
    }
}

impl<R> RocksWal<R> {
    /// Open or create the WAL at `path` and start its writer thread; lazy
    /// writes are synced within [`crate::LAZY_SYNC_INTERVAL`] of quiet.
    pub fn open(path: &Path) -> Result<Self, WalError> {
        Self::open_with(path, Some(crate::LAZY_SYNC_INTERVAL))
    }

    /// Same, choosing the background sync of lazy writes (`None`: lazy
    /// writes wait for the next synced write, however long; only the
    /// negative controls want that, to make a broken rule visible).
    pub fn open_with(path: &Path, lazy_sync: Option<std::time::Duration>) -> Result<Self, WalError> {
        Self::open_db_with(path, lazy_sync, true)
    }

    /// Whether a log was created at `path` ([`Self::open_created_once`]'s
    /// `created` marker), or files of one are there (a log from before the
    /// marker, or what is left of a damaged one: for the open to refuse,
    /// naming the damage).
    pub fn exists_at(path: &Path, created: &Path) -> bool {
        created.exists() || holds_data_files(path)
    }

    /// Same, for a log created at most once: `created`, a file outside
    /// `path`, is written (synced) once the log exists; from then on a
    /// missing log (its directory gone, or RocksDB's `CURRENT` file lost)
    /// is [`WalError::Missing`], never a new, empty log in its place.
    pub fn open_created_once(
        path: &Path,
        created: &Path,
        lazy_sync: Option<std::time::Duration>,
    ) -> Result<Self, WalError> {
        if !created.exists() && creation_interrupted(path) {
            // Killed while RocksDB created the log, before its `CURRENT`
            // and its first write-ahead file: nothing was ever written
            // to it (no table, no write-ahead file), so it is begun again.
            tracing::warn!(path = %path.display(), "the log's creation was interrupted: creating it again");
            clear_interrupted_creation(path).map_err(|e| {
                WalError::Storage(format!("{}: cannot clear an interrupted creation: {e}", path.display()))
            })?;
        }
        // A log from before `created` existed: files without `CURRENT` are
        // a damaged log (RocksDB, asked to create one there, refuses once
        // but leaves a new `CURRENT` behind), not room for a new one.
        if created.exists() || (holds_data_files(path) && !path.join("CURRENT").exists()) {
            if path.join("CURRENT").exists() && write_ahead_files(path) == 0 {
                // RocksDB keeps its current write-ahead file, even empty,
                // across every close and crash; without one it would open
                // as the flushed tables alone, the latest writes lost.
                return Err(WalError::Missing {
                    location: path.display().to_string(),
                    reason: "no write-ahead file (*.log) in it: the latest writes are gone".into(),
                });
            }
            return Self::open_db_with(path, lazy_sync, false);
        }
        let wal = Self::open_db_with(path, lazy_sync, true)?;
        write_marker(created, path)
            .map_err(|e| WalError::Storage(format!("cannot write {}: {e}", created.display())))?;
        Ok(wal)
    }

    fn open_db_with(path: &Path, lazy_sync: Option<std::time::Duration>, create: bool) -> Result<Self, WalError> {
        let location = path.display().to_string();
        let db = Arc::new(open_db(path, create)?);
        // Each open flushes what it recovered into a new table. The log's
        // keys (LSNs) only grow, so RocksDB moves such tables down whole
        // without merging them: a coordinator, which keeps every start's
        // epoch record, gained a file per restart (trial 20C: 21 after
        // about 20). The live log is small (a record goes when its
        // transaction ends; epochs are capped): merged into one here, also
        // in the bottom level, which a default manual compaction skips.
        let mut merge = CompactOptions::default();
        merge.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        db.compact_range_cf_opt(cf(&db, LOG_CF, &location)?, None::<&[u8]>, None::<&[u8]>, &merge);
        let next_lsn = recover_next_lsn(&db, &location)?;
        crate::synced_mark::check(path, &location, next_lsn)?;
        let stats = Arc::new(AtomicStats::default());
        let (tx, rx) = sync_channel(WAL_QUEUE_CAPACITY);
        let dir = DirIdentity::of(path).map_err(|e| WalError::Storage(format!("{location}: {e}")))?;
        let mark = crate::synced_mark::SyncedMark::new(path, crate::synced_mark::read(path).unwrap_or(0));
        let shared = Shared::new(
            Writer {
                db: Arc::clone(&db),
                dir: Some(dir),
                location: location.clone(),
                next_lsn,
                // RocksDB flushed what it recovered to synced tables at open.
                stored_next_lsn: next_lsn,
                durable_next_lsn: next_lsn,
                stats: Arc::clone(&stats),
                unsynced: false,
                lazy_sync,
                deferred: Vec::new(),
                deferred_since: None,
                slow_inline_write: crate::SLOW_INLINE_WRITE,
                inline_paused_until: None,
                last_write: std::time::Instant::now(),
                asleep: None,
            },
            Some(mark),
        );
        let writer =
            shared.spawn(rx).map_err(|e| WalError::Storage(format!("{location}: cannot start writer thread: {e}")))?;
        tracing::debug!(path = %location, next_lsn, "opened RocksDB WAL");
        Ok(RocksWal {
            db,
            location,
            path: path.to_path_buf(),
            tx: Some(tx),
            shared,
            writer: Some(writer),
            stats,
            _records: PhantomData,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, WalError> {
        cf(&self.db, name, &self.location)
    }

    /// Encodes a submission; `None` if it already completed with an error
    /// (not encodable, too large, or the WAL is closed).
    fn request(&self, batch: WalBatch<R>, durability: Durability, done: Completion) -> Option<Request>
    where
        R: Serialize,
    {
        if self.tx.is_none() {
            done(Err(WalError::Closed));
            return None;
        }
        match EncodedBatch::encode(batch) {
            Ok(batch) => Some(Request { batch, durability, done, wake: false }),
            Err(e) => {
                done(Err(e));
                None
            }
        }
    }

    /// Hands a request to the writer thread (blocking while the queue is full).
    fn enqueue(&self, req: Request) {
        let Some(tx) = &self.tx else {
            return (req.done)(Err(WalError::Closed));
        };
        self.shared.enqueued();
        if let Err(std::sync::mpsc::SendError(req)) = tx.send(req) {
            self.shared.withdrawn();
            (req.done)(Err(WalError::Closed));
        }
    }
}

impl<R> RocksWal<R>
where
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// For a stop by signal, after which the process dies without closing
    /// the log: makes everything written so far durable (one sync, after
    /// what is queued) and rewrites the synced mark to cover it. Without
    /// it the mark lagged up to [`crate::synced_mark::MARK_INTERVAL`]
    /// behind every routine stop, and a write-ahead file cut short while
    /// the server was stopped went unnoticed (a trial lost 10 of 30
    /// transactions' keys at one participant that way, silently).
    pub fn sync_for_stop(&self) -> Result<(), WalError> {
        self.write(WalBatch::new(), Durability::Sync)?;
        self.shared.mark_now();
        Ok(())
    }
}

impl<R> Wal<R> for RocksWal<R>
where
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn submit(&self, batch: WalBatch<R>, durability: Durability, done: Completion) {
        if let Some(req) = self.request(batch, durability, done) {
            self.enqueue(req);
        }
    }

    fn submit_group(&self, group: Vec<Submission<R>>, inline_if_idle: bool) {
        let requests: Vec<Request> =
            group.into_iter().filter_map(|s| self.request(s.batch, s.durability, s.done)).collect();
        if requests.is_empty() {
            return;
        }
        if !inline_if_idle {
            return requests.into_iter().for_each(|req| self.enqueue(req));
        }
        match self.shared.try_inline(requests) {
            Inline::Busy(requests) => requests.into_iter().for_each(|req| self.enqueue(req)),
            Inline::Done { wake_writer: true } => {
                if let Some(tx) = &self.tx {
                    // Full queue: the writer is awake anyway.
                    let _ = tx.try_send(Request::wake());
                }
            }
            Inline::Done { wake_writer: false } => {}
        }
    }

    fn replay(&self) -> Result<Vec<(Lsn, R)>, WalError> {
        let loc = &self.location;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(LOG_CF)?, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| storage(loc, "reading log", e))?;
            let lsn = decode_lsn_key(&key, || format!("{loc} log key"))?;
            let rec = decode_record(&value, || format!("{loc} log lsn {lsn}"))?;
            out.push((lsn, rec));
        }
        Ok(out)
    }

    fn get_data(&self, key: &[u8]) -> Result<Option<Vec<u8>>, WalError> {
        let loc = &self.location;
        let value = self.db.get_pinned_cf(self.cf(DATA_CF)?, key).map_err(|e| storage(loc, "reading data", e))?;
        value.map(|v| decode_value(&v, || format!("{loc} data key {}", hex(key)))).transpose()
    }

    fn scan_data(&self, from: &[u8], limit: usize) -> Result<Vec<DataEntry>, WalError> {
        let loc = &self.location;
        let mode = IteratorMode::From(from, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(DATA_CF)?, mode).take(limit) {
            let (key, value) = item.map_err(|e| storage(loc, "scanning data", e))?;
            let value = decode_value(&value, || format!("{loc} data key {}", hex(&key)))?;
            out.push((key.into_vec(), value));
        }
        Ok(out)
    }

    fn stats(&self) -> WalStats {
        self.stats.snapshot()
    }
}

impl<R> Drop for RocksWal<R> {
    fn drop(&mut self) {
        // Closing the channel makes the writer exit once the queue is drained.
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            if writer.thread().id() == std::thread::current().id() {
                // Dropped from a completion on the writer itself: it exits
                // on its own once it sees the closed channel.
            } else if writer.join().is_err() {
                tracing::error!(path = %self.location, "WAL writer thread panicked");
            }
        }
        if let Err(e) = self.db.flush_wal(true) {
            tracing::error!(path = %self.location, error = %e, "WAL flush on close failed");
        }
    }
}
