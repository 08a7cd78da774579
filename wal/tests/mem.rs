//! `MemWal`: the shared behavioural suite plus crash semantics.

mod common;

use common::{appends, put, Harness, Rec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use twopc_wal::{Durability, Lsn, MemWal, Wal, WalBatch};

struct MemHarness(MemWal<Rec>);

impl Harness for MemHarness {
    type W = MemWal<Rec>;
    fn new() -> Self {
        MemHarness(MemWal::new())
    }
    fn open(&self) -> MemWal<Rec> {
        self.0.clone()
    }
    fn reopen(&self, wal: MemWal<Rec>) -> MemWal<Rec> {
        drop(wal);
        self.0.clone()
    }
    fn corrupt(&self, wal: MemWal<Rec>, lsn: Lsn) -> MemWal<Rec> {
        assert!(wal.corrupt_record(lsn));
        wal
    }
    fn put_raw(&self, wal: MemWal<Rec>, lsn: Lsn, bytes: &[u8]) -> MemWal<Rec> {
        wal.put_raw_record(lsn, bytes.to_vec());
        wal
    }
    fn location(&self) -> String {
        "memwal".to_string()
    }
}

wal_suite!(MemHarness);

fn ids(wal: &MemWal<Rec>) -> Vec<(Lsn, u64)> {
    wal.replay().unwrap().into_iter().map(|(l, r)| (l, r.id)).collect()
}

#[test]
fn completion_runs_inline_before_submit_returns() {
    let wal = MemWal::<Rec>::new();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    wal.submit(
        appends([1]),
        Durability::Lazy,
        Box::new(move |res| {
            assert_eq!(res.unwrap(), vec![1]);
            flag.store(true, Ordering::SeqCst);
        }),
    );
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn completion_may_call_back_into_the_wal() {
    let wal = MemWal::<Rec>::new();
    let inner = wal.clone();
    wal.submit(
        appends([1]),
        Durability::Sync,
        Box::new(move |res| {
            assert_eq!(res.unwrap(), vec![1]);
            assert_eq!(inner.write(appends([2]), Durability::Sync).unwrap(), vec![2]);
        }),
    );
    assert_eq!(ids(&wal), vec![(1, 1), (2, 2)]);
}

#[test]
fn sync_completion_survives_crash() {
    let wal = MemWal::<Rec>::new();
    let mut b = appends([1, 2]);
    b.data = vec![put("k", "v")];
    assert_eq!(wal.write(b, Durability::Sync).unwrap(), vec![1, 2]);
    wal.crash();
    assert_eq!(ids(&wal), vec![(1, 1), (2, 2)]);
    assert_eq!(wal.get_data(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn lazy_batch_is_lost_entirely_by_crash() {
    let wal = MemWal::<Rec>::new();
    wal.write(appends([1]), Durability::Sync).unwrap();
    let mut b = appends([2, 3, 4]);
    b.data = vec![put("a", "1"), put("b", "2")];
    b.remove = vec![1];
    assert_eq!(wal.write(b, Durability::Lazy).unwrap(), vec![2, 3, 4]);
    assert_eq!(ids(&wal), vec![(2, 2), (3, 3), (4, 4)]);
    assert_eq!(wal.unsynced_batches(), 1);
    wal.crash();
    // All-or-nothing: no record, no data write and no removal survived.
    assert_eq!(ids(&wal), vec![(1, 1)]);
    assert!(wal.scan_data(b"", usize::MAX).unwrap().is_empty());
    assert_eq!(wal.unsynced_batches(), 0);
    // Documented choice: LSNs of lost records are handed out again.
    assert_eq!(wal.write(appends([5]), Durability::Sync).unwrap(), vec![2]);
}

#[test]
fn sync_makes_earlier_lazy_batches_durable() {
    let wal = MemWal::<Rec>::new();
    wal.write(appends([1]), Durability::Lazy).unwrap();
    let mut b = WalBatch::new();
    b.data = vec![put("k", "v")];
    wal.write(b, Durability::Lazy).unwrap();
    wal.write(WalBatch::new(), Durability::Sync).unwrap();
    wal.write(appends([3]), Durability::Lazy).unwrap();
    wal.crash();
    assert_eq!(ids(&wal), vec![(1, 1)]);
    assert_eq!(wal.get_data(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(wal.write(appends([4]), Durability::Sync).unwrap(), vec![2]);
}

#[test]
fn lazy_removal_is_undone_by_crash() {
    let wal = MemWal::<Rec>::new();
    wal.write(appends([1, 2]), Durability::Sync).unwrap();
    let mut b = WalBatch::new();
    b.remove_below = Some(3);
    wal.write(b, Durability::Lazy).unwrap();
    assert!(wal.replay().unwrap().is_empty());
    wal.crash();
    assert_eq!(ids(&wal), vec![(1, 1), (2, 2)]);
    // The durable high-water mark survives: no durable LSN is reused.
    assert_eq!(wal.write(appends([3]), Durability::Sync).unwrap(), vec![3]);
}

#[test]
fn stats_count_one_sync_per_sync_batch() {
    let wal = MemWal::<Rec>::new();
    wal.write(appends([1, 2]), Durability::Sync).unwrap();
    wal.write(appends([3]), Durability::Lazy).unwrap();
    let s = wal.stats();
    assert_eq!((s.syncs, s.batches, s.groups, s.records_appended), (1, 2, 2, 3));
}
