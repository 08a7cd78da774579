//! `RocksWal`: the shared behavioural suite plus group commit, crash (via a
//! child process that aborts) and shutdown behaviour.

mod common;

use common::{appends, put, Harness, Rec};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use tempfile::TempDir;
use twopc_wal::{testing, Durability, Lsn, RocksWal, Wal, WalBatch, WalError, MAX_GROUP_BATCHES};

struct RocksHarness(TempDir);

impl Harness for RocksHarness {
    type W = RocksWal<Rec>;
    fn new() -> Self {
        RocksHarness(tempfile::tempdir().unwrap())
    }
    fn open(&self) -> RocksWal<Rec> {
        RocksWal::open(self.0.path()).unwrap()
    }
    fn reopen(&self, wal: RocksWal<Rec>) -> RocksWal<Rec> {
        drop(wal);
        self.open()
    }
    fn corrupt(&self, wal: RocksWal<Rec>, lsn: Lsn) -> RocksWal<Rec> {
        drop(wal);
        assert!(testing::corrupt_log_record(self.0.path(), lsn).unwrap());
        self.open()
    }
    fn put_raw(&self, wal: RocksWal<Rec>, lsn: Lsn, bytes: &[u8]) -> RocksWal<Rec> {
        drop(wal);
        testing::raw_log_put(self.0.path(), lsn, bytes).unwrap();
        self.open()
    }
    fn location(&self) -> String {
        self.0.path().display().to_string()
    }
}

wal_suite!(RocksHarness);

fn ids(wal: &RocksWal<Rec>) -> Vec<(Lsn, u64)> {
    wal.replay().unwrap().into_iter().map(|(l, r)| (l, r.id)).collect()
}

/// 64 threads submit Sync batches while the writer is held inside a
/// completion, so every batch is queued before the writer can look: the
/// queued batches must then be committed in ceil(n / (1 + MAX_GROUP_BATCHES))
/// groups, i.e. fsyncs.
#[test]
fn group_commit_coalesces_concurrent_sync_batches() {
    const THREADS: u64 = 64;
    const PER_THREAD: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(RocksWal::<Rec>::open(dir.path()).unwrap());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    wal.submit(
        appends([0]),
        Durability::Sync,
        Box::new(move |res| {
            assert_eq!(res.unwrap(), vec![1]);
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        }),
    );
    entered_rx.recv().unwrap();
    let before = wal.stats();
    assert_eq!(before.syncs, 1);

    let (done_tx, done_rx) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (wal, done_tx, barrier) = (Arc::clone(&wal), done_tx.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..PER_THREAD {
                    let id = 1 + t * PER_THREAD + i;
                    let done_tx = done_tx.clone();
                    let mut b = appends([id]);
                    b.data = vec![put(&format!("k{id:05}"), "v")];
                    let done = Box::new(move |res| done_tx.send((id, res)).unwrap());
                    wal.submit(b, Durability::Sync, done);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(done_tx);
    // Nothing can have completed yet: the writer is still held.
    assert!(done_rx.try_recv().is_err());
    release_tx.send(()).unwrap();
    let results: Vec<(u64, Result<Vec<Lsn>, WalError>)> = done_rx.iter().collect();
    let total = THREADS * PER_THREAD;
    assert_eq!(results.len() as u64, total);
    assert!(results.iter().all(|(_, r)| r.as_ref().is_ok_and(|l| l.len() == 1)));

    let stats = wal.stats();
    let syncs = stats.syncs - before.syncs;
    let expected_groups = total.div_ceil(1 + MAX_GROUP_BATCHES as u64);
    assert!(syncs < THREADS, "{stats:?}");
    assert_eq!(syncs, expected_groups, "{stats:?}");
    assert_eq!(stats.groups - before.groups, expected_groups);
    assert_eq!(stats.batches, total + 1);

    let wal = Arc::into_inner(wal).unwrap();
    drop(wal);
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    let mut expected: Vec<(Lsn, u64)> = results.iter().map(|(id, r)| (r.as_ref().unwrap()[0], *id)).collect();
    expected.insert(0, (1, 0));
    expected.sort();
    assert_eq!(ids(&wal), expected);
    assert_eq!(wal.scan_data(b"k", usize::MAX).unwrap().len() as u64, total);
}

const CHILD_ENV: &str = "TWOPC_WAL_CRASH_CHILD_DIR";
const SYNC_ROUNDS: u64 = 3;

/// Runs only inside the child process spawned by
/// `abort_keeps_acknowledged_sync_batches_and_loses_lazy_tail`.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let wal = RocksWal::<Rec>::open(Path::new(&dir)).unwrap();
    for round in 0..SYNC_ROUNDS {
        let mut b = appends((0..4).map(|i| round * 10 + i));
        b.data = vec![put(&format!("sync/{round}"), "v")];
        let lsns = wal.write(b, Durability::Sync).unwrap();
        println!("ACK {}", lsns.iter().map(Lsn::to_string).collect::<Vec<_>>().join(","));
    }
    let mut b = appends(100..105);
    b.data = vec![put("lazy", "v"), put("sync/0", "overwritten")];
    b.remove = vec![1];
    wal.write(b, Durability::Lazy).unwrap();
    println!("LAZY done");
    // Die like a power cut: no destructors, no WAL flush.
    std::process::abort();
}

const LAZY_CHILD_ENV: &str = "TWOPC_WAL_LAZY_CHILD_DIR";

/// Runs only inside the child of `a_quiet_writer_syncs_lazy_writes_soon`:
/// one lazy write, then no more writes; waits for the background sync.
#[test]
fn lazy_child_entry() {
    let Ok(dir) = std::env::var(LAZY_CHILD_ENV) else {
        return;
    };
    let wal = RocksWal::<Rec>::open(Path::new(&dir)).unwrap();
    let syncs_before = wal.stats().syncs;
    let mut b = appends([42]);
    b.data = vec![put("lazy", "v")];
    wal.write(b, Durability::Lazy).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wal.stats().syncs == syncs_before {
        assert!(std::time::Instant::now() < deadline, "no background sync within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!("LAZY synced");
    std::process::abort();
}

#[test]
fn a_quiet_writer_syncs_lazy_writes_soon() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["lazy_child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(LAZY_CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("LAZY synced"), "child did not see the background sync: {stdout}");
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    assert_eq!(ids(&wal).len(), 1, "the lazy record was not made durable by the background sync");
    assert_eq!(wal.get_data(b"lazy").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn abort_keeps_acknowledged_sync_batches_and_loses_lazy_tail() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "child should have aborted: {stdout}");
    assert!(stdout.contains("LAZY done"), "child did not reach the crash: {stdout}");
    let acked: Vec<Lsn> = stdout
        .lines()
        // libtest may print "test crash_child_entry ... " on the same line.
        .filter_map(|l| l.split_once("ACK ").map(|(_, rest)| rest))
        .flat_map(|l| l.split(',').map(|n| n.parse::<Lsn>().unwrap()))
        .collect();
    assert_eq!(acked.len() as u64, SYNC_ROUNDS * 4);

    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    let lsns: Vec<Lsn> = ids(&wal).into_iter().map(|(l, _)| l).collect();
    // Every acknowledged Sync record survived; the Lazy batch (appends,
    // removal and data writes) vanished as a whole.
    assert_eq!(lsns, acked);
    for round in 0..SYNC_ROUNDS {
        assert!(wal.get_data(format!("sync/{round}").as_bytes()).unwrap().is_some());
    }
    assert_eq!(wal.get_data(b"sync/0").unwrap(), Some(b"v".to_vec()));
    assert_eq!(wal.get_data(b"lazy").unwrap(), None);
    let next = wal.write(appends([7]), Durability::Sync).unwrap();
    assert_eq!(next, vec![acked.last().unwrap() + 1]);
}

#[test]
fn drop_completes_pending_requests_with_back_pressure() {
    const N: usize = 3 * twopc_wal::WAL_QUEUE_CAPACITY;
    let dir = tempfile::tempdir().unwrap();
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    let completed = Arc::new(AtomicUsize::new(0));
    for i in 0..N as u64 {
        let completed = Arc::clone(&completed);
        let done = Box::new(move |res: Result<Vec<Lsn>, WalError>| {
            assert_eq!(res.unwrap(), vec![i + 1]);
            completed.fetch_add(1, Ordering::SeqCst);
        });
        wal.submit(appends([i]), Durability::Lazy, done);
    }
    drop(wal);
    assert_eq!(completed.load(Ordering::SeqCst), N);
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    assert_eq!(wal.replay().unwrap().len(), N);
}

#[test]
fn panicking_completion_does_not_stop_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    wal.submit(appends([1]), Durability::Sync, Box::new(|_| panic!("boom")));
    assert_eq!(wal.write(appends([2]), Durability::Sync).unwrap(), vec![2]);
}

#[test]
fn dropping_last_handle_inside_a_completion_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(RocksWal::<Rec>::open(dir.path()).unwrap());
    let last = Arc::clone(&wal);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    wal.submit(
        WalBatch::new(),
        Durability::Sync,
        Box::new(move |res| {
            res.unwrap();
            go_rx.recv().unwrap();
            drop(last); // the last handle: RocksWal::drop runs on the writer
            done_tx.send(std::thread::current().name().map(str::to_string)).unwrap();
        }),
    );
    drop(wal);
    go_tx.send(()).unwrap();
    assert_eq!(done_rx.recv().unwrap().as_deref(), Some("wal-writer"));
    // The writer closes the log when it exits, after this test could
    // return: a temp dir removed first was left behind, holding the files
    // the closing log wrote. The log opens again only once it is closed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while RocksWal::<Rec>::open(dir.path()).is_err() {
        assert!(std::time::Instant::now() < deadline, "the log was never closed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn open_failure_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = RocksWal::<Rec>::open(&file).unwrap_err();
    assert!(matches!(err, WalError::Storage(_)), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

/// Every `*.log` (write-ahead) file RocksDB keeps in `dir`.
fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

/// A log created once (`open_created_once`, with its marker) in a temp dir.
struct CreatedLog {
    _dir: TempDir,
    log: std::path::PathBuf,
    marker: std::path::PathBuf,
}

impl CreatedLog {
    fn new() -> CreatedLog {
        let dir = tempfile::tempdir().unwrap();
        let (log, marker) = (dir.path().join("wal"), dir.path().join("LOG_CREATED"));
        CreatedLog { _dir: dir, log, marker }
    }

    /// A new log holding records 0, 1 and 2, each synced, closed.
    fn with_three_synced() -> CreatedLog {
        let created = CreatedLog::new();
        let wal = created.open().unwrap();
        for id in 0..3 {
            wal.write(appends([id]), Durability::Sync).unwrap();
        }
        created
    }

    fn open(&self) -> Result<RocksWal<Rec>, WalError> {
        RocksWal::<Rec>::open_created_once(&self.log, &self.marker, None)
    }

    fn newest_file(&self) -> std::path::PathBuf {
        log_files(&self.log).into_iter().max().expect("a write-ahead file")
    }
}

#[test]
fn a_write_ahead_file_deleted_while_closed_is_refused_at_open() {
    // Synced records living only in the write-ahead file: removing it (an
    // operator cleaning "logs") must not open as a shorter, valid log.
    let created = CreatedLog::with_three_synced();
    let (log, open) = (&created.log, || created.open());
    let wal = open().expect("a clean reopen");
    assert_eq!(ids(&wal).len(), 3);
    drop(wal);
    let logs = log_files(log);
    assert!(!logs.is_empty(), "no write-ahead file in {}", log.display());
    for file in &logs {
        std::fs::remove_file(file).unwrap();
    }
    for attempt in 0..2 {
        let err = open().map(|wal| ids(&wal)).expect_err("opened without its latest records");
        assert!(matches!(err, WalError::Missing { .. }), "attempt {attempt}: {err}");
        assert!(err.to_string().contains("no write-ahead file"), "{err}");
    }
}

#[test]
fn a_damaged_write_ahead_file_is_refused_at_open_naming_where_to_look() {
    let created = CreatedLog::with_three_synced();
    let (log, open) = (&created.log, || created.open());
    let newest = created.newest_file();
    let mut bytes = std::fs::read(&newest).unwrap();
    assert!(bytes.len() > 20, "{} bytes", bytes.len());
    for b in &mut bytes[10..14] {
        *b ^= 0xff;
    }
    std::fs::write(&newest, bytes).unwrap();
    let err = open().map(|wal| ids(&wal)).expect_err("opened a damaged log").to_string();
    assert!(err.contains("a file of the log is damaged"), "{err}");
    assert!(err.contains(&log.join("LOG").display().to_string()), "{err}");
}

#[test]
fn a_write_ahead_file_emptied_while_closed_is_refused_at_open() {
    // The file is still there but its synced records are gone (as when
    // the newest of several write-ahead files is deleted): RocksDB alone
    // opens what is left; the synced mark says records are missing.
    let created = CreatedLog::with_three_synced();
    let (log, open) = (&created.log, || created.open());
    let newest = created.newest_file();
    std::fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(0).unwrap();
    let err = open().map(|wal| ids(&wal)).expect_err("opened without its latest records");
    assert!(matches!(err, WalError::Shortened { .. }), "{err}");
    assert!(err.to_string().contains("were synced, but the log now ends before"), "{err}");
    assert!(!err.to_string().contains("new, empty log"), "{err}");
    // An operator who accepts the loss removes the mark, as the error says.
    std::fs::remove_file(log.join("TWOPC_SYNCED_MARK")).unwrap();
    assert!(open().is_ok());
}

#[test]
fn an_older_write_ahead_file_deleted_while_closed_is_refused_at_open() {
    // Record 0 lives in the first write-ahead file; data written after it
    // fills a memtable, whose flush moves writes to a second file while
    // the first still holds record 0 (its column family not flushed).
    // Deleting the first (an operator cleaning "old logs") must not open
    // as a valid log without record 0 (trial 11 lost a prepared
    // transaction that way).
    let created = CreatedLog::new();
    let (log, open) = (&created.log, || created.open());
    let wal = open().unwrap();
    wal.write(appends([0]), Durability::Sync).unwrap();
    let value = vec![7u8; 1 << 20];
    for i in 0.. {
        if log_files(log).len() >= 2 {
            break;
        }
        assert!(i < 200, "no second write-ahead file after {i} MiB");
        let mut batch = WalBatch::new();
        batch.data = vec![put(&format!("key{}", i % 8), "")];
        batch.data[0].1 = Some(value.clone());
        wal.write(batch, Durability::Sync).unwrap();
    }
    // A later record, in the newer file: the synced mark is satisfied.
    wal.write(appends([1]), Durability::Sync).unwrap();
    drop(wal);
    let oldest = log_files(log).into_iter().min().expect("a write-ahead file");
    std::fs::remove_file(&oldest).unwrap();
    let err = open().map(|wal| ids(&wal)).expect_err("opened without record 0");
    assert!(matches!(err, WalError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("write-ahead file"), "{err}");
}

#[test]
fn reopening_a_log_many_times_never_trips_its_synced_mark() {
    let dir = tempfile::tempdir().unwrap();
    let (log, marker) = (dir.path().join("wal"), dir.path().join("LOG_CREATED"));
    let open = || RocksWal::<Rec>::open_created_once(&log, &marker, Some(std::time::Duration::from_millis(10)));
    for round in 0..5u64 {
        let wal = open().unwrap_or_else(|e| panic!("round {round}: {e}"));
        wal.write(appends([round]), Durability::Lazy).unwrap();
        wal.write(appends([round + 100]), Durability::Sync).unwrap();
        wal.write(appends([round + 200]), Durability::Lazy).unwrap();
        drop(wal);
    }
    assert_eq!(ids(&open().unwrap()).len(), 15);
}

const RESTART_CHILD_ENV: &str = "TWOPC_WAL_RESTART_CHILD_DIR";

/// Runs only inside the children of
/// `a_log_killed_and_reopened_many_times_does_not_pile_up_tables`: a
/// server's life in short (one record kept for good, as a coordinator
/// keeps each start's epoch), then a kill.
#[test]
fn restart_child_entry() {
    let Ok(dir) = std::env::var(RESTART_CHILD_ENV) else {
        return;
    };
    let wal = RocksWal::<Rec>::open(Path::new(&dir)).unwrap();
    wal.write(appends([7]), Durability::Sync).unwrap();
    println!("WRITTEN");
    std::process::abort();
}

/// Trial 20C: every open flushed the recovered log into a new table, and
/// RocksDB moved those (whose keys never overlap) down without merging
/// them: a coordinator killed and restarted gained a file per restart
/// (it keeps a record of every start's epoch).
#[test]
fn a_log_killed_and_reopened_many_times_does_not_pile_up_tables() {
    const ROUNDS: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    drop(RocksWal::<Rec>::open(dir.path()).unwrap());
    for round in 0..ROUNDS {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["restart_child_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(RESTART_CHILD_ENV, dir.path())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("WRITTEN"), "round {round}: {out:?}");
    }
    let tables = std::fs::read_dir(dir.path()).unwrap().flatten();
    let tables = tables.filter(|e| e.path().extension().is_some_and(|x| x == "sst")).count();
    assert!(tables <= 8, "{tables} table files after {ROUNDS} restarts");
    assert_eq!(ids(&RocksWal::<Rec>::open(dir.path()).unwrap()).len(), ROUNDS);
}

/// Holds the writer inside a completion until the returned sender is used
/// (or dropped), so that everything submitted meanwhile forms one group.
fn hold_writer(wal: &RocksWal<Rec>) -> mpsc::Sender<()> {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    wal.submit(
        appends([0]),
        Durability::Sync,
        Box::new(move |_| {
            entered_tx.send(()).unwrap();
            let _ = release_rx.recv();
        }),
    );
    entered_rx.recv().unwrap();
    release_tx
}

/// Deferred batches written in one unsynced group complete together, only
/// after the writer's own sync (no synced write comes to cover them), and
/// each completion already sees that sync counted.
#[test]
fn deferred_completions_wait_for_one_shared_sync() {
    const N: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    // No background sync of lazy writes: only the deferred bound syncs.
    let wal = Arc::new(RocksWal::<Rec>::open_with(dir.path(), None).unwrap());
    let release = hold_writer(&wal);
    let before = wal.stats().syncs;
    let (done_tx, done_rx) = mpsc::channel();
    for id in 1..=N {
        let (done_tx, stats_wal) = (done_tx.clone(), Arc::clone(&wal));
        let mut b = appends([id]);
        b.data = vec![put(&format!("d{id:03}"), "v")];
        wal.submit(b, Durability::Deferred, Box::new(move |res| done_tx.send((res, stats_wal.stats().syncs)).unwrap()));
    }
    drop(done_tx);
    release.send(()).unwrap();
    let results: Vec<_> = done_rx.iter().collect();
    assert_eq!(results.len() as u64, N);
    for (res, syncs_seen) in &results {
        assert!(res.is_ok());
        assert_eq!(*syncs_seen, before + 1, "a deferred completion ran before its covering sync");
    }
    assert_eq!(wal.stats().syncs, before + 1, "the group shared one sync");
}

/// A synced write covers the deferred batches written before it: they
/// complete with it, and no extra sync is spent on them.
#[test]
fn a_synced_write_completes_earlier_deferred_batches() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(RocksWal::<Rec>::open_with(dir.path(), None).unwrap());
    let before = wal.stats().syncs;
    let release = hold_writer(&wal);
    let (done_tx, done_rx) = mpsc::channel();
    let tx = done_tx.clone();
    wal.submit(appends([1]), Durability::Deferred, Box::new(move |res| tx.send(("deferred", res)).unwrap()));
    let tx = done_tx.clone();
    wal.submit(appends([2]), Durability::Sync, Box::new(move |res| tx.send(("sync", res)).unwrap()));
    drop(done_tx);
    release.send(()).unwrap();
    let order: Vec<&str> = done_rx.iter().map(|(what, res)| res.map(|_| what).unwrap()).collect();
    assert_eq!(order, ["deferred", "sync"]);
    // The held writer's own first write, then one group for both.
    assert_eq!(wal.stats().syncs, before + 2);
}

const DEFERRED_CHILD_ENV: &str = "TWOPC_WAL_DEFERRED_CHILD_DIR";

/// Runs only inside the child of `a_completed_deferred_write_survives_a_crash`:
/// a lazy write, a deferred write (waited for), another lazy write, abort.
/// Background sync is off, so only the deferred rule can sync anything.
#[test]
fn deferred_child_entry() {
    let Ok(dir) = std::env::var(DEFERRED_CHILD_ENV) else {
        return;
    };
    let wal = RocksWal::<Rec>::open_with(Path::new(&dir), None).unwrap();
    let mut b = appends([1]);
    b.data = vec![put("lazy-before", "v")];
    wal.write(b, Durability::Lazy).unwrap();
    let mut b = appends([2]);
    b.data = vec![put("deferred", "v")];
    wal.write(b, Durability::Deferred).unwrap();
    println!("DEFERRED done");
    let mut b = appends([3]);
    b.data = vec![put("lazy-after", "v")];
    wal.write(b, Durability::Lazy).unwrap();
    std::process::abort();
}

#[test]
fn a_completed_deferred_write_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["deferred_child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(DEFERRED_CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DEFERRED done"), "child did not reach the crash: {stdout}");
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    let kept: Vec<u64> = ids(&wal).into_iter().map(|(_, id)| id).collect();
    assert_eq!(kept, [1, 2], "the deferred completion (and what came before it) must be durable; the tail lost");
    assert_eq!(wal.get_data(b"deferred").unwrap(), Some(b"v".to_vec()));
    assert_eq!(wal.get_data(b"lazy-after").unwrap(), None);
}

/// Bytes of RocksDB's write-ahead files (`*.log`) in `dir`.
fn write_ahead_files_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// RocksDB's write-ahead files stay bounded however much is written:
/// every group also writes the `meta` column family, whose memtable hardly
/// ever fills, and it once kept every file alive (0.7–1.8 GB at a
/// participant holding a few MB of data).
#[test]
fn write_ahead_files_stay_bounded() {
    const WRITES: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    let value = vec![7u8; 60 * 1024];
    let mut most = 0;
    for i in 0..WRITES {
        let mut batch = appends([i]);
        batch.data = vec![(format!("key{}", i % 100).into_bytes(), Some(value.clone()))];
        wal.write(batch, Durability::Lazy).unwrap();
        if i % 50 == 0 {
            most = most.max(write_ahead_files_bytes(dir.path()));
        }
    }
    let written = WRITES * value.len() as u64;
    assert!(
        most <= 2 * twopc_wal::MAX_WAL_FILES_BYTES,
        "write-ahead files reached {} MB for {} MB written",
        most >> 20,
        written >> 20
    );
}

/// A first start killed while RocksDB created the log (a `MANIFEST` but
/// no `CURRENT`, no write-ahead file, no table: no record ever) does not
/// leave a directory every later start refuses: the next start creates
/// the log. A log that held records, missing its `CURRENT`, stays refused.
#[test]
fn a_first_start_killed_while_creating_the_log_is_finished_by_the_next() {
    let created = CreatedLog::new();
    let (log, marker, open) = (&created.log, &created.marker, || created.open());
    drop(open().unwrap());
    // What a kill before `CURRENT` leaves: the marker was never written.
    std::fs::remove_file(marker).unwrap();
    std::fs::remove_file(log.join("CURRENT")).unwrap();
    for file in log_files(log) {
        std::fs::remove_file(file).unwrap();
    }
    std::fs::write(log.join("000001.dbtmp"), b"MANIFEST-000001\n").unwrap();
    let wal = open().expect("the interrupted creation is begun again");
    assert!(marker.exists(), "the creation was not recorded");
    wal.write(appends([7]), Durability::Sync).unwrap();
    drop(wal);
    let reopened: Vec<u64> = ids(&open().unwrap()).into_iter().map(|(_, id)| id).collect();
    assert_eq!(reopened, vec![7]);

    // The same files beside a write-ahead file: a damaged log, refused.
    std::fs::remove_file(marker).unwrap();
    std::fs::remove_file(log.join("CURRENT")).unwrap();
    let Err(err) = open() else { panic!("a log with records but no CURRENT opened") };
    assert!(matches!(err, WalError::Missing { .. }), "{err}");
}

/// A log created once is never created again: with RocksDB's `CURRENT`
/// file lost, or the whole log directory removed, opening it is refused,
/// every time, and nothing is created in its place (a failed open once
/// left a fresh `CURRENT` behind, and the next start served an empty log).
#[test]
fn a_log_created_once_is_never_replaced_by_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, marker) = (dir.path().join("wal"), dir.path().join("LOG_CREATED"));
    let open = || RocksWal::<Rec>::open_created_once(&log, &marker, None);
    let wal = open().unwrap();
    assert!(marker.exists(), "the creation was not recorded");
    wal.write(appends([1]), Durability::Sync).unwrap();
    drop(wal);
    assert_eq!(open().unwrap().replay().unwrap().len(), 1, "a clean reopen");

    std::fs::remove_file(log.join("CURRENT")).unwrap();
    for attempt in 0..2 {
        let err = open().err().unwrap_or_else(|| panic!("attempt {attempt}: opened without CURRENT"));
        assert!(matches!(err, WalError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("refusing to start with a new, empty log"), "{err}");
        assert!(!log.join("CURRENT").exists(), "attempt {attempt} created a new CURRENT");
    }

    std::fs::remove_dir_all(&log).unwrap();
    for attempt in 0..2 {
        let err = open().err().unwrap_or_else(|| panic!("attempt {attempt}: opened a removed log"));
        assert!(matches!(err, WalError::Missing { .. }), "{err}");
    }

    // What the refused opens left (RocksDB may make the directory and its
    // info LOG) is not a log: a first start there creates one.
    assert!(!log.join("CURRENT").exists());
    std::fs::remove_file(&marker).unwrap();
    let wal = open().unwrap();

    // A log from before the marker existed, with `CURRENT` lost: refused too.
    wal.write(appends([1]), Durability::Sync).unwrap();
    drop(wal);
    std::fs::remove_file(&marker).unwrap();
    std::fs::remove_file(log.join("CURRENT")).unwrap();
    for attempt in 0..2 {
        let err = open().err().unwrap_or_else(|| panic!("attempt {attempt}: opened a marker-less log without CURRENT"));
        assert!(matches!(err, WalError::Missing { .. }), "{err}");
    }
}
