//! `RocksWal::submit_group`, the idle fast path: a group submitted while
//! the writer is idle is written on the submitter's thread; otherwise it
//! queues behind earlier batches. Durability and deadlines are the same
//! either way.

mod common;

use common::{appends, put, Rec};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use twopc_wal::{Durability, RocksWal, Submission, Wal, WalBatch, WalError};

type Done = mpsc::Receiver<(Result<Vec<u64>, WalError>, std::thread::ThreadId)>;

/// One submission whose completion reports its result and the thread it
/// ran on.
fn submission(batch: WalBatch<Rec>, durability: Durability) -> (Submission<Rec>, Done) {
    let (tx, rx) = mpsc::channel();
    let done = Box::new(move |res| tx.send((res, std::thread::current().id())).unwrap());
    (Submission { batch, durability, done }, rx)
}

fn ids(wal: &RocksWal<Rec>) -> Vec<u64> {
    wal.replay().unwrap().into_iter().map(|(_, r)| r.id).collect()
}

/// The writer thread takes its lock briefly when it wakes (every
/// `DEFERRED_SYNC_WAIT` for `WATCH_AFTER_WRITE` after a write, and at
/// start), and a submission that meets it there rightly queues. On a busy
/// machine that thread may be descheduled while holding it, so the test
/// waits for the writer to go quiet and tries a few times; it fails if the
/// fast path never writes inline.
#[test]
fn an_idle_wal_writes_and_syncs_a_group_on_the_callers_thread() {
    const ATTEMPTS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    let me = std::thread::current().id();
    for attempt in 0..ATTEMPTS {
        std::thread::sleep(twopc_wal::WATCH_AFTER_WRITE * 2);
        let before = wal.stats();
        let first_id = 1 + 3 * attempt;
        let (first, first_done) = submission(appends([first_id]), Durability::Lazy);
        let (second, second_done) = submission(appends([first_id + 1, first_id + 2]), Durability::Sync);
        wal.submit_group(vec![first, second], true);
        let mut inline = true;
        let expected = [vec![first_id], vec![first_id + 1, first_id + 2]];
        for (done, lsns) in [(first_done, &expected[0]), (second_done, &expected[1])] {
            // Both completions ran before submit_group returned, on this
            // thread, or (queued) they arrive from the writer thread.
            let (res, thread) = match done.try_recv() {
                Ok(completed) => completed,
                Err(_) => done.recv_timeout(Duration::from_secs(10)).expect("queued group never completed"),
            };
            assert_eq!(&res.unwrap(), lsns, "one LSN per record, in order");
            inline &= thread == me;
        }
        if inline {
            let after = wal.stats();
            assert_eq!(after.groups, before.groups + 1, "one storage write for the group");
            assert_eq!(after.syncs, before.syncs + 1, "one fsync for the group");
            return;
        }
    }
    panic!("in {ATTEMPTS} tries with the writer quiet, no group was written on the caller's thread");
}

#[test]
fn a_busy_wal_queues_the_group_behind_earlier_batches() {
    let dir = tempfile::tempdir().unwrap();
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    // Hold the writer thread inside the completion of batch 1.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    wal.submit(
        appends([1]),
        Durability::Sync,
        Box::new(move |_| {
            entered_tx.send(()).unwrap();
            let _ = release_rx.recv();
        }),
    );
    entered_rx.recv().unwrap();
    let (group, done) = submission(appends([2]), Durability::Sync);
    wal.submit_group(vec![group], true);
    assert!(done.try_recv().is_err(), "written inline while an earlier batch was not finished");
    release_tx.send(()).unwrap();
    let (res, thread) = done.recv().unwrap();
    assert_eq!(res.unwrap(), vec![2], "queued behind batch 1, in submission order");
    assert_ne!(thread, std::thread::current().id(), "the writer thread completed it");
    assert_eq!(ids(&wal), [1, 2]);
}

/// Deferred and lazy writes made inline still get their sync with no
/// further traffic, even once the writer thread sleeps with no deadline.
#[test]
fn inline_writes_get_their_owed_sync_without_more_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(RocksWal::<Rec>::open_with(dir.path(), Some(Duration::from_millis(50))).unwrap());
    // Long enough after the last write for the writer to stop watching.
    std::thread::sleep(twopc_wal::WATCH_AFTER_WRITE * 3);
    let before = wal.stats().syncs;
    let (lazy, _) = submission(appends([1]), Durability::Lazy);
    let (barrier_tx, barrier_done) = mpsc::channel();
    let stats_wal = Arc::clone(&wal);
    let barrier = Submission {
        batch: WalBatch::new(),
        durability: Durability::Deferred,
        done: Box::new(move |res: Result<Vec<u64>, WalError>| barrier_tx.send((res, stats_wal.stats().syncs)).unwrap()),
    };
    wal.submit_group(vec![lazy, barrier], true);
    let (res, syncs_seen) = barrier_done.recv_timeout(Duration::from_secs(5)).expect("the deferred sync never came");
    res.unwrap();
    assert_eq!(syncs_seen, before + 1, "a deferred completion ran before its covering sync");
    assert_eq!(wal.stats().syncs, before + 1);

    std::thread::sleep(twopc_wal::WATCH_AFTER_WRITE * 3);
    let before = wal.stats().syncs;
    let (lazy, lazy_done) = submission(appends([2]), Durability::Lazy);
    wal.submit_group(vec![lazy], true);
    // Inline it has run already; queued (the writer was waking) it comes soon.
    lazy_done.recv_timeout(Duration::from_secs(5)).expect("a lazy completion runs once written").0.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while wal.stats().syncs == before {
        assert!(Instant::now() < deadline, "the lazy write was never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The synced mark follows inline writes with no further traffic: the
/// writer thread, asleep until a request comes, is woken to rewrite it.
/// Before, a participant committing one-phase transactions one at a time
/// left its mark behind for good, and a write-ahead file cut short while
/// it was down opened without those acknowledged commits.
#[test]
fn inline_synced_writes_move_the_synced_mark_without_more_traffic() {
    const ATTEMPTS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let (log, marker) = (dir.path().join("wal"), dir.path().join("LOG_CREATED"));
    let wal = RocksWal::<Rec>::open_created_once(&log, &marker, None).unwrap();
    let mark =
        || std::fs::read_to_string(log.join("TWOPC_SYNCED_MARK")).ok().and_then(|m| m.trim().parse::<u64>().ok());
    for attempt in 0..ATTEMPTS {
        // Past the mark's interval and the writer's watch: it now sleeps
        // until a request comes.
        std::thread::sleep(twopc_wal::MARK_INTERVAL + twopc_wal::WATCH_AFTER_WRITE * 3);
        let (write, done) = submission(appends([attempt]), Durability::Sync);
        wal.submit_group(vec![write], true);
        let Ok((res, thread)) = done.try_recv() else {
            // Queued (the writer was awake): the writer thread wrote it.
            done.recv_timeout(Duration::from_secs(10)).expect("queued write never completed").0.unwrap();
            continue;
        };
        let lsn = *res.unwrap().last().unwrap();
        assert_eq!(thread, std::thread::current().id());
        let deadline = Instant::now() + twopc_wal::MARK_INTERVAL * 5;
        while mark().is_none_or(|m| m <= lsn) {
            assert!(Instant::now() < deadline, "the synced mark ({:?}) never covered LSN {lsn}", mark());
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    panic!("in {ATTEMPTS} tries with the writer quiet, no write was made on the caller's thread");
}

const CHILD_ENV: &str = "TWOPC_WAL_INLINE_CRASH_CHILD_DIR";

/// Runs only inside the child of `an_inline_sync_is_durable_when_it_completes`:
/// an inline synced write (acknowledged), an inline lazy one, then abort.
#[test]
fn inline_crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let wal = RocksWal::<Rec>::open_with(Path::new(&dir), None).unwrap();
    // Past the writer's watch after open, so the writes below go inline
    // (if the writer still happens to be waking, they queue: the parent's
    // checks hold either way).
    std::thread::sleep(twopc_wal::WATCH_AFTER_WRITE * 2);
    let mut batch = appends([1]);
    batch.data = vec![put("synced", "v")];
    let (synced, done) = submission(batch, Durability::Sync);
    wal.submit_group(vec![synced], true);
    done.recv_timeout(Duration::from_secs(5)).expect("never written").0.unwrap();
    println!("SYNC acknowledged");
    let mut batch = appends([2]);
    batch.data = vec![put("lazy", "v")];
    let (lazy, done) = submission(batch, Durability::Lazy);
    wal.submit_group(vec![lazy], true);
    done.recv_timeout(Duration::from_secs(5)).expect("never written").0.unwrap();
    // Die like a power cut: no destructors, no WAL flush.
    std::process::abort();
}

#[test]
fn an_inline_sync_is_durable_when_it_completes() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["inline_crash_child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SYNC acknowledged"), "child did not reach the crash: {stdout}");
    let wal = RocksWal::<Rec>::open(dir.path()).unwrap();
    assert_eq!(ids(&wal), [1], "the acknowledged inline sync must survive; the lazy tail is lost");
    assert_eq!(wal.get_data(b"synced").unwrap(), Some(b"v".to_vec()));
    assert_eq!(wal.get_data(b"lazy").unwrap(), None);
}
