//! The synced mark: a small file in the log's directory saying how far
//! the log was once durable (the next LSN after everything a sync
//! covered). It is written by the writer thread at most every
//! [`MARK_INTERVAL`], after a sync, never ahead of one, so a log opened
//! with fewer records than its mark lost records that were durable:
//! write-ahead files deleted or truncated while it was closed. RocksDB
//! alone opens such a log as what is left, and the latest writes are
//! silently gone (a user deleted the newest of two `*.log` files and lost
//! 6 of 8 committed transactions' keys).
//!
//! The mark only ever lags the log: a mark not written (a crash just
//! before) or lost (a crash during the rename) is older, which is safe.
//! A mark that cannot be read is ignored, with a warning, and rewritten.

use crate::error::WalError;
use crate::Lsn;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The mark's file name, in the log's directory (RocksDB leaves files it
/// does not know alone).
pub const SYNCED_MARK_FILE: &str = "TWOPC_SYNCED_MARK";
/// The mark is rewritten at most this often (one small write and fsync).
pub const MARK_INTERVAL: Duration = Duration::from_secs(1);

/// The writer thread's record of the mark on disk.
pub(crate) struct SyncedMark {
    dir: PathBuf,
    written: Lsn,
    written_at: Option<Instant>,
    /// Failed writes in a row (warned at the 1st, 2nd, 4th, 8th, ...: a
    /// full or read-only disk failed it every second, and said so each
    /// time).
    failures: u32,
}

impl SyncedMark {
    pub fn new(dir: &Path, written: Lsn) -> Self {
        SyncedMark { dir: dir.to_path_buf(), written, written_at: None, failures: 0 }
    }

    /// How long until the mark should be rewritten to `durable` (`None`:
    /// it holds that already).
    pub fn due_in(&self, durable: Lsn) -> Option<Duration> {
        if durable <= self.written {
            return None;
        }
        Some(self.written_at.map_or(Duration::ZERO, |at| MARK_INTERVAL.saturating_sub(at.elapsed())))
    }

    /// Whether the mark may be due (without knowing what is durable): not
    /// within [`MARK_INTERVAL`] of its last write.
    pub fn may_be_due(&self) -> bool {
        self.written_at.is_none_or(|at| at.elapsed() >= MARK_INTERVAL)
    }

    /// Rewrites the mark if it is due. A failure is logged and tried
    /// again later: the old mark stays, which is safe.
    pub fn update(&mut self, durable: Lsn) {
        if self.due_in(durable) == Some(Duration::ZERO) {
            self.update_now(durable);
        }
    }

    /// Rewrites the mark now if it is behind (at a clean close).
    pub fn update_now(&mut self, durable: Lsn) {
        if durable <= self.written {
            return;
        }
        self.written_at = Some(Instant::now());
        match write(&self.dir, durable) {
            Ok(()) => {
                self.written = durable;
                if self.failures > 0 {
                    tracing::info!(dir = %self.dir.display(), failures = self.failures, "the synced mark is written again");
                    self.failures = 0;
                }
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                if self.failures.is_power_of_two() {
                    tracing::warn!(
                        dir = %self.dir.display(), error = %e, failures_in_a_row = self.failures,
                        "cannot write the synced mark (a deleted newest write-ahead file goes unnoticed until it is)"
                    );
                }
            }
        }
    }
}

/// The mark in `dir`, if there is a readable one.
pub(crate) fn read(dir: &Path) -> Option<Lsn> {
    let path = dir.join(SYNCED_MARK_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the synced mark; ignored");
            return None;
        }
    };
    let mark = text.trim().parse().ok();
    if mark.is_none() {
        tracing::warn!(path = %path.display(), "the synced mark is not a number; ignored");
    }
    mark
}

/// Refuses a log opened with fewer records than its mark says were durable.
pub(crate) fn check(dir: &Path, location: &str, next_lsn: Lsn) -> Result<(), WalError> {
    match read(dir) {
        Some(mark) if next_lsn < mark => Err(WalError::Shortened {
            location: location.to_string(),
            reason: format!(
                "records up to LSN {} were synced, but the log now ends before LSN {next_lsn}: write-ahead \
                 files (*.log) were deleted or truncated, and the latest writes are gone",
                mark - 1
            ),
            mark: dir.join(SYNCED_MARK_FILE).display().to_string(),
        }),
        _ => Ok(()),
    }
}

/// Replaces the mark with `durable`: written to a temporary file, synced,
/// then renamed over the old one.
fn write(dir: &Path, durable: Lsn) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SYNCED_MARK_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{durable}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(SYNCED_MARK_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_due_only_when_behind_and_at_most_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut mark = SyncedMark::new(dir.path(), 1);
        assert_eq!(mark.due_in(1), None, "nothing new is durable");
        assert_eq!(mark.due_in(5), Some(Duration::ZERO), "never written: at once");
        mark.update(5);
        assert_eq!(read(dir.path()), Some(5));
        assert!(mark.due_in(9).is_some_and(|d| d > Duration::ZERO), "written just now: later");
        mark.update(9);
        assert_eq!(read(dir.path()), Some(5), "not rewritten within the interval");
    }

    #[test]
    fn a_log_shorter_than_its_mark_is_refused_and_a_bad_mark_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path(), "log", 1).is_ok(), "no mark: nothing to compare");
        write(dir.path(), 10).unwrap();
        assert!(check(dir.path(), "log", 10).is_ok());
        assert!(check(dir.path(), "log", 11).is_ok());
        let refused = check(dir.path(), "log", 7).unwrap_err().to_string();
        assert!(refused.contains("records up to LSN 9 were synced"), "{refused}");
        std::fs::write(dir.path().join(SYNCED_MARK_FILE), "garbage").unwrap();
        assert!(check(dir.path(), "log", 1).is_ok());
    }
}
