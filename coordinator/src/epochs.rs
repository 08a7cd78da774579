//! Which epochs this coordinator's log ran: presumed abort holds only for
//! those. A txid of an epoch the log never ran was minted by another
//! instance of this coordinator id (a mistyped or new data directory, a
//! stale cluster file giving the id to a second process), whose Commit
//! record, if any, is in another log: "no record here" proves nothing, so
//! its outcome is unknown here, never presumed aborted. (A client was told
//! "committed" by such an instance, and the real coordinator then answered
//! the participants' question with "aborted".)

use std::collections::BTreeSet;

/// The epochs a coordinator's log keeps, at most: one per start, the
/// oldest dropped beyond it. A txid of a dropped epoch is then unknown
/// (never presumed aborted), so the bound costs liveness only, and only
/// for transactions in doubt across this many restarts.
pub const MAX_KEPT_EPOCHS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EpochHistory {
    /// Every epoch up to this one is taken as this log's: a log written
    /// before epochs were kept holds only its last one (0 for a log that
    /// began keeping them).
    pub legacy_up_to: u64,
    /// The epochs this log ran, the current one included.
    pub ran: BTreeSet<u64>,
}

impl EpochHistory {
    /// A log that ran every epoch up to `epoch` (the model checker's and
    /// the simulator's coordinators, whose logs are never lost).
    pub fn every_epoch_up_to(epoch: u64) -> Self {
        EpochHistory { legacy_up_to: epoch, ran: BTreeSet::from([epoch]) }
    }

    /// Whether this log ran `epoch`: only then does the absence of a
    /// Commit record mean the transaction did not commit.
    pub fn ran(&self, epoch: u64) -> bool {
        epoch <= self.legacy_up_to || self.ran.contains(&epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_epochs_the_log_ran_are_its_own() {
        let new_log = EpochHistory { legacy_up_to: 0, ran: BTreeSet::from([100, 250]) };
        assert!(new_log.ran(100) && new_log.ran(250));
        assert!(!new_log.ran(99) && !new_log.ran(200) && !new_log.ran(251));
        let upgraded = EpochHistory { legacy_up_to: 50, ran: BTreeSet::from([100]) };
        assert!(upgraded.ran(1) && upgraded.ran(50) && upgraded.ran(100) && !upgraded.ran(70));
    }
}
