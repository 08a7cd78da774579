//! How far each coordinator's decisions are forgotten here. A participant
//! remembers its last [`MAX_REMEMBERED_DECISIONS`] decisions (and keeps
//! as many `Done` records); older ones are dropped. A txid at or below the
//! newest dropped one of its coordinator (by `(epoch, seq)`: a
//! coordinator's epochs only grow) may have been decided here, so a probe
//! about it that nothing here remembers is answered `Forgotten`, never
//! "never seen": that answer would let its coordinator presume an abort of
//! a one-phase commit whose lazy `End` record was lost in a crash.
//!
//! [`Horizons`] is the memory's view (the engine's); [`LoggedHorizons`]
//! the log's: a `Forgotten` record written when a trimmed `Done` passes
//! it, reaching [`HORIZON_AHEAD`] further so one record serves many trims.
//!
//! [`MAX_REMEMBERED_DECISIONS`]: crate::engine::MAX_REMEMBERED_DECISIONS

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use twopc_common::{NodeId, TxnId};
use twopc_wal::{Lsn, WalBatch};

use crate::record::ParticipantRecord;

/// Coordinators with a horizon of their own, at most. Txids name their
/// coordinator, and a participant does not refuse unknown ones, so past
/// this every other coordinator counts as forgotten entirely: less
/// precise, never wrong.
pub const MAX_HORIZONS: usize = 1_024;

/// How far past a trimmed `(epoch, seq)` a logged horizon reaches (the
/// coordinator's log does the same, for the same reason: a record per
/// trim would add a write to every commit once trimming begins).
pub const HORIZON_AHEAD: u64 = 1_024;

/// Per coordinator, the newest `(epoch, seq)` forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Horizons {
    up_to: BTreeMap<NodeId, (u64, u64)>,
    /// Set once [`MAX_HORIZONS`] was exceeded: every coordinator not in
    /// `up_to` counts as forgotten up to any txid.
    others: bool,
}

impl Horizons {
    /// Whether the outcome of `txid`, when nothing remembers it, may have
    /// been forgotten.
    pub fn covers(&self, txid: &TxnId) -> bool {
        match self.up_to.get(&txid.coordinator) {
            Some(&up_to) => (txid.epoch, txid.seq) <= up_to,
            None => self.others,
        }
    }

    /// Forgets everything of `coordinator` up to `(epoch, seq)`.
    pub fn raise(&mut self, coordinator: &NodeId, epoch: u64, seq: u64) {
        if let Some(up_to) = self.up_to.get_mut(coordinator) {
            *up_to = (*up_to).max((epoch, seq));
        } else if self.up_to.len() < MAX_HORIZONS {
            self.up_to.insert(coordinator.clone(), (epoch, seq));
        } else {
            self.others = true;
        }
    }

    /// Forgets `txid`'s decision.
    pub fn forget(&mut self, txid: &TxnId) {
        self.raise(&txid.coordinator, txid.epoch, txid.seq);
    }

    /// Forgets everything `other` forgot too.
    pub fn merge(&mut self, other: &Horizons) {
        for (coordinator, &(epoch, seq)) in &other.up_to {
            self.raise(coordinator, epoch, seq);
        }
        self.others |= other.others;
    }
}

/// The horizons the log holds, and the LSNs of the `Forgotten` records
/// saying so (the next record replaces them all).
#[derive(Debug, Default)]
pub struct LoggedHorizons {
    horizons: Horizons,
    lsns: Vec<Lsn>,
}

impl LoggedHorizons {
    /// A `Forgotten` record found in the log at start.
    pub fn found(&mut self, horizons: &Horizons, lsn: Lsn) {
        self.horizons.merge(horizons);
        self.lsns.push(lsn);
    }

    pub fn horizons(&self) -> &Horizons {
        &self.horizons
    }

    /// The `Done` record of `txid` is trimmed in `batch`: if the logged
    /// horizon does not cover it, raise it [`HORIZON_AHEAD`] past it,
    /// and say so in `batch` (once per batch, replacing the older
    /// records). True if a record was appended.
    pub fn trimmed(&mut self, txid: &TxnId, batch: &mut WalBatch<ParticipantRecord>) -> bool {
        if self.horizons.covers(txid) {
            return false;
        }
        self.horizons.raise(&txid.coordinator, txid.epoch, txid.seq.saturating_add(HORIZON_AHEAD));
        batch.remove.append(&mut self.lsns);
        let record = ParticipantRecord::Forgotten(self.horizons.clone());
        match batch.append.iter_mut().find(|r| matches!(r, ParticipantRecord::Forgotten(_))) {
            Some(earlier) => {
                *earlier = record;
                false
            }
            None => {
                batch.append.push(record);
                true
            }
        }
    }

    /// A `Forgotten` record was written at `lsn`.
    pub fn logged(&mut self, lsn: Lsn) {
        self.lsns.push(lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txid(coordinator: &str, epoch: u64, seq: u64) -> TxnId {
        TxnId { coordinator: NodeId::new(coordinator).unwrap(), epoch, seq }
    }

    #[test]
    fn a_horizon_covers_earlier_epochs_and_seqs_of_its_coordinator_only() {
        let mut h = Horizons::default();
        assert!(!h.covers(&txid("c1", 5, 10)));
        h.forget(&txid("c1", 5, 10));
        h.forget(&txid("c1", 4, 900));
        assert!(h.covers(&txid("c1", 5, 10)));
        assert!(h.covers(&txid("c1", 4, 1_000_000)), "an earlier epoch");
        assert!(!h.covers(&txid("c1", 5, 11)));
        assert!(!h.covers(&txid("c1", 6, 1)));
        assert!(!h.covers(&txid("c2", 1, 1)), "another coordinator");
    }

    #[test]
    fn past_the_limit_every_other_coordinator_counts_as_forgotten() {
        let mut h = Horizons::default();
        for i in 0..MAX_HORIZONS {
            h.forget(&txid(&format!("c{i}"), 1, 1));
        }
        assert!(!h.covers(&txid("extra", 1, 1)));
        h.forget(&txid("extra", 1, 1));
        assert!(h.covers(&txid("extra", 9, 9)));
        assert!(h.covers(&txid("never-seen", 1, 1)));
        assert!(!h.covers(&txid("c0", 1, 2)), "a listed coordinator keeps its own horizon");
    }

    #[test]
    fn one_record_serves_many_trims_and_replaces_the_older_ones() {
        let mut logged = LoggedHorizons::default();
        logged.found(&Horizons::default(), 7);
        let mut batch = WalBatch::new();
        assert!(logged.trimmed(&txid("c1", 1, 1), &mut batch));
        assert_eq!(batch.remove, vec![7]);
        assert!(!logged.trimmed(&txid("c2", 1, 1), &mut batch), "one record per batch");
        assert_eq!(batch.append.len(), 1);
        let ParticipantRecord::Forgotten(h) = &batch.append[0] else { panic!("{:?}", batch.append) };
        assert!(h.covers(&txid("c1", 1, 1 + HORIZON_AHEAD)) && h.covers(&txid("c2", 1, 1)));
        logged.logged(8);

        let mut batch = WalBatch::new();
        for seq in 2..=1 + HORIZON_AHEAD {
            assert!(!logged.trimmed(&txid("c1", 1, seq), &mut batch));
        }
        assert!(batch.append.is_empty() && batch.remove.is_empty());
        assert!(logged.trimmed(&txid("c1", 1, 2 + HORIZON_AHEAD), &mut batch));
        assert_eq!(batch.remove, vec![8]);
    }
}
