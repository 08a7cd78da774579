//! The behavioural suite shared by every `Wal` implementation.
//!
//! Each implementation provides a [`Harness`] (fresh storage, clean reopen,
//! corruption injection) and instantiates the suite with [`wal_suite!`].

#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use twopc_wal::{record, Durability, Lsn, Wal, WalBatch, WalError, MAX_VALUE_BYTES};

/// The record type used by the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rec {
    pub id: u64,
    pub name: String,
}

pub fn rec(id: u64) -> Rec {
    Rec { id, name: format!("record-{id}") }
}

/// Storage-specific operations the suite needs.
pub trait Harness: Sized {
    type W: Wal<Rec>;
    /// Fresh, empty storage.
    fn new() -> Self;
    /// Open the WAL on this storage.
    fn open(&self) -> Self::W;
    /// Clean shutdown and reopen.
    fn reopen(&self, wal: Self::W) -> Self::W;
    /// Flip a byte of stored record `lsn`.
    fn corrupt(&self, wal: Self::W, lsn: Lsn) -> Self::W;
    /// Store raw envelope bytes as record `lsn`.
    fn put_raw(&self, wal: Self::W, lsn: Lsn, bytes: &[u8]) -> Self::W;
    /// Text every corruption message must contain (e.g. the db path).
    fn location(&self) -> String;
}

pub fn appends(ids: impl IntoIterator<Item = u64>) -> WalBatch<Rec> {
    let mut b = WalBatch::new();
    b.append = ids.into_iter().map(rec).collect();
    b
}

pub fn put(key: &str, value: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
}

pub fn del(key: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    (key.as_bytes().to_vec(), None)
}

fn lsns_of<W: Wal<Rec>>(wal: &W) -> Vec<Lsn> {
    wal.replay().unwrap().into_iter().map(|(l, _)| l).collect()
}

fn data_of<W: Wal<Rec>>(wal: &W) -> Vec<(String, String)> {
    wal.scan_data(b"", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

pub fn append_replay_order_and_lsns_across_reopen<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    assert_eq!(wal.write(appends([10, 11, 12]), Durability::Sync).unwrap(), vec![1, 2, 3]);
    assert_eq!(wal.write(appends([13, 14]), Durability::Sync).unwrap(), vec![4, 5]);
    let expected: Vec<(Lsn, Rec)> = (1..=5).map(|l| (l, rec(l + 9))).collect();
    assert_eq!(wal.replay().unwrap(), expected);
    let wal = h.reopen(wal);
    assert_eq!(wal.replay().unwrap(), expected);
    assert_eq!(wal.write(appends([15]), Durability::Sync).unwrap(), vec![6]);
    let wal = h.reopen(wal);
    assert_eq!(lsns_of(&wal), vec![1, 2, 3, 4, 5, 6]);
}

pub fn empty_batch_completes<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    assert!(WalBatch::<Rec>::new().is_empty());
    assert_eq!(wal.write(WalBatch::new(), Durability::Sync).unwrap(), Vec::<Lsn>::new());
    assert_eq!(wal.write(WalBatch::new(), Durability::Lazy).unwrap(), Vec::<Lsn>::new());
    assert!(wal.replay().unwrap().is_empty());
}

pub fn remove_and_remove_below_compact<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    wal.write(appends(1..=6), Durability::Sync).unwrap();
    let mut b = WalBatch::new();
    b.remove = vec![2, 5, 100];
    wal.write(b, Durability::Sync).unwrap();
    assert_eq!(lsns_of(&wal), vec![1, 3, 4, 6]);
    let mut b = WalBatch::new();
    b.remove_below = Some(4);
    wal.write(b, Durability::Sync).unwrap();
    assert_eq!(lsns_of(&wal), vec![4, 6]);
    let wal = h.reopen(wal);
    assert_eq!(wal.replay().unwrap(), vec![(4, rec(4)), (6, rec(6))]);
}

pub fn removals_apply_before_own_appends<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    wal.write(appends([1, 2]), Durability::Sync).unwrap();
    let mut b = appends([3, 4]);
    b.remove_below = Some(1_000);
    assert_eq!(wal.write(b, Durability::Sync).unwrap(), vec![3, 4]);
    assert_eq!(lsns_of(&wal), vec![3, 4]);
}

pub fn lsns_not_reused_after_everything_removed<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    wal.write(appends([1, 2, 3]), Durability::Sync).unwrap();
    let mut b = WalBatch::new();
    b.remove_below = Some(u64::MAX);
    wal.write(b, Durability::Sync).unwrap();
    assert!(wal.replay().unwrap().is_empty());
    let wal = h.reopen(wal);
    let wal = h.reopen(wal);
    assert!(wal.replay().unwrap().is_empty());
    assert_eq!(wal.write(appends([4]), Durability::Sync).unwrap(), vec![4]);
    let mut b = WalBatch::new();
    b.remove = vec![4];
    wal.write(b, Durability::Sync).unwrap();
    let wal = h.reopen(wal);
    assert_eq!(wal.write(appends([5]), Durability::Sync).unwrap(), vec![5]);
}

pub fn data_put_delete_get_scan<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    let mut b = WalBatch::new();
    b.data = vec![put("b", "2"), put("a", "1"), put("c", "3"), put("e", "")];
    wal.write(b, Durability::Sync).unwrap();
    assert_eq!(wal.get_data(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(wal.get_data(b"e").unwrap(), Some(Vec::new()));
    assert_eq!(wal.get_data(b"zz").unwrap(), None);
    let mut b = WalBatch::new();
    b.data = vec![del("b"), put("c", "33"), del("missing")];
    wal.write(b, Durability::Sync).unwrap();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    assert_eq!(data_of(&wal), pairs(&[("a", "1"), ("c", "33"), ("e", "")]));
    let scan = wal.scan_data(b"b", 10).unwrap();
    assert_eq!(scan, vec![(b"c".to_vec(), b"33".to_vec()), (b"e".to_vec(), vec![])]);
    assert_eq!(wal.scan_data(b"a", 1).unwrap(), vec![(b"a".to_vec(), b"1".to_vec())]);
    assert!(wal.scan_data(b"a", 0).unwrap().is_empty());
    assert!(wal.scan_data(b"f", 10).unwrap().is_empty());
    let wal = h.reopen(wal);
    assert_eq!(data_of(&wal), pairs(&[("a", "1"), ("c", "33"), ("e", "")]));
    assert_eq!(wal.get_data(b"b").unwrap(), None);
}

pub fn data_atomic_with_log_changes<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    let mut b = appends([1, 2]);
    b.data = vec![put("txn/1", "prepared")];
    assert_eq!(wal.write(b, Durability::Sync).unwrap(), vec![1, 2]);
    // "Apply data writes + delete a log record" in one batch.
    let mut b = WalBatch::new();
    b.remove = vec![1];
    b.data = vec![put("txn/1", "committed"), put("kv/x", "42")];
    wal.write(b, Durability::Sync).unwrap();
    let wal = h.reopen(wal);
    assert_eq!(lsns_of(&wal), vec![2]);
    assert_eq!(wal.get_data(b"txn/1").unwrap(), Some(b"committed".to_vec()));
    assert_eq!(wal.get_data(b"kv/x").unwrap(), Some(b"42".to_vec()));
}

fn assert_corrupt(err: WalError, needles: &[&str]) {
    let msg = err.to_string();
    assert!(matches!(err, WalError::Corrupt { .. }), "not Corrupt: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

pub fn corrupted_record_is_reported<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    wal.write(appends([1, 2, 3]), Durability::Sync).unwrap();
    let mut b = WalBatch::new();
    b.data = vec![put("k", "v")];
    wal.write(b, Durability::Sync).unwrap();
    let wal = h.corrupt(wal, 2);
    let err = wal.replay().unwrap_err();
    assert_corrupt(err, &["lsn 2", "checksum mismatch", &h.location()]);
    // Data reads are unaffected; replay keeps failing (never skips).
    assert_eq!(wal.get_data(b"k").unwrap(), Some(b"v".to_vec()));
    let wal = h.reopen(wal);
    assert!(wal.replay().is_err());
}

pub fn unknown_envelope_version_is_corrupt<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    wal.write(appends([1]), Durability::Sync).unwrap();
    let mut bytes = record::encode_record(&rec(2)).unwrap();
    bytes[0] = 9;
    let wal = h.put_raw(wal, 2, &bytes);
    assert_corrupt(wal.replay().unwrap_err(), &["lsn 2", "version 9"]);
    let wal = h.put_raw(wal, 2, &record::seal(b"not bincode"));
    assert_corrupt(wal.replay().unwrap_err(), &["lsn 2", "undecodable"]);
}

pub fn oversized_value_rejected_nothing_written<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    let mut b = appends([1]);
    b.data = vec![put("small", "x"), (b"big".to_vec(), Some(vec![7; MAX_VALUE_BYTES + 1]))];
    let err = wal.write(b, Durability::Sync).unwrap_err();
    assert_eq!(err, WalError::TooLarge { size: MAX_VALUE_BYTES + 1, max: MAX_VALUE_BYTES });
    assert!(wal.replay().unwrap().is_empty());
    assert_eq!(wal.get_data(b"small").unwrap(), None);
    assert_eq!(wal.stats().batches, 0);
    // No LSN was consumed.
    assert_eq!(wal.write(appends([2]), Durability::Sync).unwrap(), vec![1]);
}

pub fn lazy_writes_visible_and_kept_on_clean_reopen<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    let mut b = appends([1, 2]);
    b.data = vec![put("k", "lazy")];
    assert_eq!(wal.write(b, Durability::Lazy).unwrap(), vec![1, 2]);
    assert_eq!(lsns_of(&wal), vec![1, 2]);
    assert_eq!(wal.get_data(b"k").unwrap(), Some(b"lazy".to_vec()));
    let wal = h.reopen(wal);
    assert_eq!(lsns_of(&wal), vec![1, 2]);
    assert_eq!(wal.get_data(b"k").unwrap(), Some(b"lazy".to_vec()));
}

pub fn completions_run_in_submission_order<H: Harness>() {
    let h = H::new();
    let wal = h.open();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 0..200u64 {
        let seen = Arc::clone(&seen);
        let durability = if i % 10 == 9 { Durability::Sync } else { Durability::Lazy };
        wal.submit(appends([i, i]), durability, Box::new(move |res| seen.lock().unwrap().push(res.unwrap())));
    }
    // A blocking write completes after everything submitted before it.
    wal.write(WalBatch::new(), Durability::Sync).unwrap();
    let seen = seen.lock().unwrap().clone();
    let expected: Vec<Vec<Lsn>> = (0..200u64).map(|i| vec![2 * i + 1, 2 * i + 2]).collect();
    assert_eq!(seen, expected);
    let stats = wal.stats();
    assert_eq!(stats.batches, 201);
    assert_eq!(stats.records_appended, 400);
    assert!(stats.syncs >= 1 && stats.syncs <= 21, "{stats:?}");
    assert!(stats.groups >= 1 && stats.groups <= 201, "{stats:?}");
}

pub const THREADS: u64 = 64;
pub const PER_THREAD: u64 = 8;

pub fn concurrent_sync_writers_all_complete<H: Harness>() {
    let h = H::new();
    let wal = Arc::new(h.open());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        let id = t * 1_000 + i;
                        let mut b = appends([id]);
                        b.data = vec![put(&format!("k{id}"), "v")];
                        let lsns = wal.write(b, Durability::Sync).unwrap();
                        assert_eq!(lsns.len(), 1);
                        (lsns[0], id)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(Lsn, u64)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    acked.sort();
    let total = THREADS * PER_THREAD;
    let lsns: Vec<Lsn> = acked.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, (1..=total).collect::<Vec<_>>(), "LSNs unique and dense");
    let stats = wal.stats();
    assert_eq!(stats.batches, total);
    assert!(stats.syncs >= 1 && stats.syncs <= total, "{stats:?}");
    let wal = h.reopen(Arc::into_inner(wal).expect("all writer threads joined"));
    let replayed: Vec<(Lsn, u64)> = wal.replay().unwrap().into_iter().map(|(l, r)| (l, r.id)).collect();
    assert_eq!(replayed, acked);
    assert_eq!(wal.scan_data(b"k", usize::MAX).unwrap().len() as u64, total);
}

/// Instantiate the suite for a harness type.
#[macro_export]
macro_rules! wal_suite {
    ($h:ty) => {
        $crate::wal_suite!(@tests $h;
            append_replay_order_and_lsns_across_reopen,
            empty_batch_completes,
            remove_and_remove_below_compact,
            removals_apply_before_own_appends,
            lsns_not_reused_after_everything_removed,
            data_put_delete_get_scan,
            data_atomic_with_log_changes,
            corrupted_record_is_reported,
            unknown_envelope_version_is_corrupt,
            oversized_value_rejected_nothing_written,
            lazy_writes_visible_and_kept_on_clean_reopen,
            completions_run_in_submission_order,
            concurrent_sync_writers_all_complete,
        );
    };
    (@tests $h:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                common::$name::<$h>();
            }
        )*
    };
}
