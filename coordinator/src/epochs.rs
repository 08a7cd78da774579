//! Which epochs this coordinator's log ran, and how far each one's
//! outcomes were forgotten: presumed abort holds only for the txids of
//! those epochs past that point. A txid of an epoch the log never ran was
//! minted by another instance of this coordinator id (a mistyped or new data directory, a
//! stale cluster file giving the id to a second process), whose Commit
//! record, if any, is in another log: "no record here" proves nothing, so
//! its outcome is unknown here, never presumed aborted. (A client was told
//! "committed" by such an instance, and the real coordinator then answered
//! the participants' question with "aborted".)

use std::collections::{BTreeMap, BTreeSet};

/// The epochs a coordinator's log keeps, at most: one per start, the
/// oldest dropped beyond it. A txid of a dropped epoch is then unknown
/// (never presumed aborted), so the bound costs liveness only, and only
/// for transactions in doubt across this many restarts.
pub const MAX_KEPT_EPOCHS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EpochHistory {
    /// Every epoch from 1 up to this one is taken as this log's: a log written
    /// before epochs were kept holds only its last one (0 for a log that
    /// began keeping them).
    pub legacy_up_to: u64,
    /// The epochs this log ran, the current one included.
    pub ran: BTreeSet<u64>,
    /// Per epoch, the highest sequence number whose outcome was dropped
    /// (from the log's End records, or from memory in this run): a txid
    /// at or below it that nothing remembers may have committed, so its
    /// outcome is unknown, not presumed aborted.
    pub forgotten: BTreeMap<u64, u64>,
}

impl EpochHistory {
    /// A log that ran every epoch up to `epoch` (the model checker's and
    /// the simulator's coordinators, whose logs are never lost).
    pub fn every_epoch_up_to(epoch: u64) -> Self {
        EpochHistory { legacy_up_to: epoch, ran: BTreeSet::from([epoch]), forgotten: BTreeMap::new() }
    }

    /// Whether this log ran `epoch`: only then does the absence of a
    /// Commit record mean the transaction did not commit. Epochs start at
    /// 1, so a new log's `legacy_up_to` of 0 covers none (`c1.0.1` was
    /// answered "aborted", as if that epoch had run).
    pub fn ran(&self, epoch: u64) -> bool {
        (1..=self.legacy_up_to).contains(&epoch) || self.ran.contains(&epoch)
    }

    /// Notes that the outcome of txid `epoch.seq` was dropped.
    pub fn forgot(&mut self, epoch: u64, seq: u64) {
        let up_to = self.forgotten.entry(epoch).or_insert(seq);
        *up_to = (*up_to).max(seq);
    }

    /// Whether the outcome of txid `epoch.seq` may have been dropped.
    pub fn maybe_forgotten(&self, epoch: u64, seq: u64) -> bool {
        self.forgotten.get(&epoch).is_some_and(|up_to| seq <= *up_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_epochs_the_log_ran_are_its_own() {
        let new_log = EpochHistory { legacy_up_to: 0, ran: BTreeSet::from([100, 250]), ..Default::default() };
        assert!(new_log.ran(100) && new_log.ran(250));
        assert!(!new_log.ran(99) && !new_log.ran(200) && !new_log.ran(251));
        let upgraded = EpochHistory { legacy_up_to: 50, ran: BTreeSet::from([100]), ..Default::default() };
        assert!(upgraded.ran(1) && upgraded.ran(50) && upgraded.ran(100) && !upgraded.ran(70));
        assert!(!new_log.ran(0) && !upgraded.ran(0), "no log runs epoch 0");
    }

    #[test]
    fn forgotten_outcomes_reach_the_highest_dropped_seq_of_their_epoch() {
        let mut epochs = EpochHistory::every_epoch_up_to(7);
        assert!(!epochs.maybe_forgotten(7, 1));
        epochs.forgot(7, 40);
        epochs.forgot(7, 12);
        assert!(epochs.maybe_forgotten(7, 1) && epochs.maybe_forgotten(7, 40));
        assert!(!epochs.maybe_forgotten(7, 41) && !epochs.maybe_forgotten(6, 1) && !epochs.maybe_forgotten(8, 1));
    }
}
