//! Commits in progress, and the stop that lets them finish. On a stop
//! signal the coordinator refuses new commits (nothing of them is done:
//! the client may retry elsewhere or after the restart) and waits up to
//! [`STOP_DRAIN_TIMEOUT`] for those in progress to be answered. Before, a
//! SIGTERM cut them off: in a rolling restart their clients were told the
//! outcome was unknown, or a later answer was a presumed abort (trial 22C).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use twopc_common::ServiceError;

/// How long a stop waits for commits in progress. Shorter than the grace
/// that `twopc local` (3 s) and most service managers give before SIGKILL.
pub const STOP_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the stop looks whether they have finished.
const DRAIN_POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
pub(crate) struct CommitGate {
    stopping: AtomicBool,
    in_progress: AtomicUsize,
}

/// A commit in progress; it is over when dropped.
pub(crate) struct CommitPass(Arc<CommitGate>);

impl Drop for CommitPass {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CommitGate {
    /// Admits a commit, unless the coordinator is stopping. Counted before
    /// the check, so a stop that finds none in progress misses none.
    pub(crate) fn enter(self: &Arc<Self>, me: &str) -> Result<CommitPass, ServiceError> {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        let pass = CommitPass(Arc::clone(self));
        self.refuse_if_stopping(me)?;
        Ok(pass)
    }

    /// Refuses new work once stopping: commits, and new transaction ids
    /// (so that a client with other coordinators mints on one of those).
    pub(crate) fn refuse_if_stopping(&self, me: &str) -> Result<(), ServiceError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ServiceError::Stopping(format!(
                "coordinator {me} is stopping: nothing of this transaction was done; retry it (on another \
                 coordinator, or once {me} is back)"
            )));
        }
        Ok(())
    }

    /// How many commits are in progress now.
    pub(crate) fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::SeqCst)
    }

    /// Refuses new commits from now on and waits up to `within` for those
    /// in progress; returns how many are still in progress.
    pub(crate) async fn drain(&self, within: Duration) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = self.in_progress.load(Ordering::SeqCst);
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_waits_for_commits_in_progress_and_refuses_new_ones() {
        let gate = Arc::new(CommitGate::default());
        let pass = gate.enter("c1").unwrap();
        let finishing = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(pass);
        });
        let waiter = Arc::clone(&gate);
        let drained = tokio::spawn(async move { waiter.drain(Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let refused = gate.enter("c1").err().expect("a commit admitted during the stop");
        assert!(refused.to_string().contains("c1 is stopping: nothing of this transaction was done"));
        assert_eq!(drained.await.unwrap(), 0, "the one in progress finished");
        finishing.await.unwrap();
        let stuck = gate.in_progress.fetch_add(1, Ordering::SeqCst);
        assert_eq!(stuck, 0);
        assert_eq!(gate.drain(Duration::from_millis(20)).await, 1, "one that never finishes is given up on");
    }
}
