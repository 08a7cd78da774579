//! The decision log's ended transactions: their (Commit, End) records,
//! oldest first, kept so that outcome questions stay exact for recent
//! commits, then trimmed; and per epoch, how far the trimmed ones reach
//! (a `Forgotten` record), so that after a restart a question about a
//! trimmed commit gets "forgotten", never a presumed abort.

use std::collections::{BTreeMap, VecDeque};

use twopc_common::TxnId;
use twopc_wal::{Lsn, WalBatch};

use crate::record::CoordinatorRecord;

#[derive(Debug)]
struct Ended {
    epoch: u64,
    seq: u64,
    commit: Option<Lsn>,
    end: Lsn,
}

/// How far past the highest trimmed seq a `Forgotten` record reaches, so
/// that one record serves this many trims (one per trim added a record
/// write to every commit once trimming began, and throughput at
/// concurrency 256 fell). Ids in that margin that are still logged are
/// answered from the log; others of an earlier run are "forgotten", not
/// presumed aborted: less precise, never wrong.
pub const HORIZON_AHEAD: u64 = 1024;

/// How far one epoch's outcomes are logged as forgotten, and the log's
/// `Forgotten` records saying so (the newest is current; older ones go at
/// the next record of that epoch).
#[derive(Debug, Default)]
struct Horizon {
    up_to: u64,
    lsns: Vec<Lsn>,
}

#[derive(Debug)]
pub struct EndedLog {
    /// Ended transactions kept, at most.
    limit: usize,
    ended: VecDeque<Ended>,
    horizons: BTreeMap<u64, Horizon>,
}

impl EndedLog {
    pub fn new(limit: usize) -> Self {
        EndedLog { limit, ended: VecDeque::new(), horizons: BTreeMap::new() }
    }

    /// A `Forgotten` record found in the log at start.
    pub fn found_horizon(&mut self, epoch: u64, up_to: u64, lsn: Lsn) {
        let horizon = self.horizons.entry(epoch).or_default();
        horizon.up_to = horizon.up_to.max(up_to);
        horizon.lsns.push(lsn);
    }

    /// Per epoch, how far outcomes are logged as forgotten (at least the
    /// highest seq whose records were trimmed).
    pub fn forgotten(&self) -> BTreeMap<u64, u64> {
        self.horizons.iter().map(|(epoch, h)| (*epoch, h.up_to)).collect()
    }

    /// Drops the horizons of epochs the log no longer keeps, adding their
    /// records to `remove`.
    pub fn drop_epochs_before(&mut self, epoch: u64, remove: &mut Vec<Lsn>) {
        let kept = self.horizons.split_off(&epoch);
        for (_, horizon) in std::mem::replace(&mut self.horizons, kept) {
            remove.extend(horizon.lsns);
        }
    }

    /// A transaction whose End record is at `end` (and Commit record, if
    /// still there, at `commit`).
    pub fn push(&mut self, txid: &TxnId, commit: Option<Lsn>, end: Lsn) {
        self.ended.push_back(Ended { epoch: txid.epoch, seq: txid.seq, commit, end });
    }

    /// Trims the oldest transactions so that one more fits within the
    /// limit: their records go into `batch.remove`, and a `Forgotten`
    /// record into `batch.append` for each epoch trimmed past its logged
    /// horizon (replacing the older ones). Returns those epochs, in the
    /// order of their records.
    pub fn trim_for_one_more(&mut self, batch: &mut WalBatch<CoordinatorRecord>) -> Vec<u64> {
        let mut reach: BTreeMap<u64, u64> = BTreeMap::new();
        while self.ended.len() >= self.limit.max(1) {
            let old = self.ended.pop_front().expect("not empty");
            batch.remove.extend(old.commit);
            batch.remove.push(old.end);
            let up_to = reach.entry(old.epoch).or_insert(old.seq);
            *up_to = (*up_to).max(old.seq);
        }
        let mut logged = Vec::new();
        for (epoch, up_to) in reach {
            let horizon = self.horizons.entry(epoch).or_default();
            if up_to <= horizon.up_to {
                continue;
            }
            horizon.up_to = up_to.saturating_add(HORIZON_AHEAD);
            batch.remove.append(&mut horizon.lsns);
            batch.append.push(CoordinatorRecord::Forgotten { epoch, up_to: horizon.up_to });
            logged.push(epoch);
        }
        logged
    }

    /// A `Forgotten` record of `epoch` was written at `lsn`.
    pub fn horizon_logged(&mut self, epoch: u64, lsn: Lsn) {
        self.horizons.entry(epoch).or_default().lsns.push(lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twopc_common::NodeId;

    fn txid(epoch: u64, seq: u64) -> TxnId {
        TxnId { coordinator: NodeId::new("c1").unwrap(), epoch, seq }
    }

    #[test]
    fn trimming_removes_the_oldest_records_and_logs_how_far_each_epoch_reaches() {
        let mut log = EndedLog::new(3);
        log.push(&txid(4, 9), Some(1), 2);
        log.push(&txid(5, 2), None, 3);
        log.push(&txid(5, 1), Some(4), 5);
        let mut batch = WalBatch::new();
        assert_eq!(log.trim_for_one_more(&mut batch), vec![4]);
        assert_eq!(batch.remove, vec![1, 2]);
        let up_to = 9 + HORIZON_AHEAD;
        assert_eq!(batch.append, vec![CoordinatorRecord::Forgotten { epoch: 4, up_to }]);
        log.horizon_logged(4, 6);
        log.push(&txid(5, 7), Some(7), 8);

        // Two more trimmed, both of epoch 5: its horizon is past the higher
        // seq.
        let mut batch = WalBatch::new();
        log.limit = 2;
        assert_eq!(log.trim_for_one_more(&mut batch), vec![5]);
        assert_eq!(batch.remove, vec![3, 4, 5]);
        let up_to = 2 + HORIZON_AHEAD;
        assert_eq!(batch.append, vec![CoordinatorRecord::Forgotten { epoch: 5, up_to }]);
        log.horizon_logged(5, 9);
        assert_eq!(log.forgotten(), BTreeMap::from([(4, 9 + HORIZON_AHEAD), (5, 2 + HORIZON_AHEAD)]));

        // Trims within the logged horizon write no record; one past it
        // replaces the epoch's older records.
        log.push(&txid(5, 8), None, 10);
        log.push(&txid(5, 3 + HORIZON_AHEAD), None, 11);
        let mut batch = WalBatch::new();
        assert_eq!(log.trim_for_one_more(&mut batch), Vec::<u64>::new());
        assert_eq!((batch.remove, batch.append), (vec![7, 8, 10], vec![]));
        log.found_horizon(5, 1, 12);
        let mut batch = WalBatch::new();
        log.limit = 1;
        assert_eq!(log.trim_for_one_more(&mut batch), vec![5]);
        assert_eq!(batch.remove, vec![11, 9, 12]);
        let up_to = 3 + 2 * HORIZON_AHEAD;
        assert_eq!(batch.append, vec![CoordinatorRecord::Forgotten { epoch: 5, up_to }]);
    }

    #[test]
    fn dropped_epochs_take_their_horizons_along() {
        let mut log = EndedLog::new(10);
        log.found_horizon(3, 5, 1);
        log.found_horizon(3, 8, 2);
        log.found_horizon(9, 1, 3);
        assert_eq!(log.forgotten(), BTreeMap::from([(3, 8), (9, 1)]));
        let mut remove = Vec::new();
        log.drop_epochs_before(9, &mut remove);
        assert_eq!(remove, vec![1, 2]);
        assert_eq!(log.forgotten(), BTreeMap::from([(9, 1)]));
    }
}
