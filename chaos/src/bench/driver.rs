//! The closed-loop driver: `concurrency` workers, each running one
//! transaction after another for a warm-up and then a measured window.
//! A transaction counts if it completes inside the window; its latency
//! (start to commit acknowledged) goes into the worker's HDR histogram.
//! Everything is bounded: workers start nothing after the window, and
//! the driver waits at most [`DRAIN_TIMEOUT`] for the last ones.

use super::workload::{PlanGenerator, TxnPlan};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest one transaction may take before it counts as an error.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the driver waits for workers after the window closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(40);

/// What became of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    Committed,
    /// Refused by the system (lock conflict, stale read, condition,
    /// insufficient funds): nothing was written.
    Aborted,
    /// The system failed (connection, timeout, unknown outcome).
    Failed(String),
}

/// One client of the system under test. Each worker owns one.
pub trait Worker: Send + 'static {
    fn execute(&mut self, plan: TxnPlan) -> impl Future<Output = TxnResult> + Send;
    /// After the window: finish background work (e.g. commit messages in
    /// flight) so the next level starts clean.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What the workers measured in one window.
#[derive(Debug, Clone)]
pub struct Measured {
    pub window: Duration,
    pub commits: u64,
    pub aborts: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Commits that touched each shard.
    pub shard_commits: Vec<u64>,
    /// Commit latencies, µs.
    pub latency: Histogram<u64>,
}

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Counters live while a level runs (for the progress bar).
#[derive(Debug, Default)]
pub struct Live {
    pub commits: AtomicU64,
    pub attempts: AtomicU64,
}

/// A level in flight.
pub struct LevelRun<W: Worker> {
    /// Start of the measured window.
    pub t0: Instant,
    /// End of the measured window.
    pub t1: Instant,
    pub live: Arc<Live>,
    tasks: Vec<tokio::task::JoinHandle<(W, Measured)>>,
    shards: usize,
}

impl<W: Worker> LevelRun<W> {
    /// Starts one task per worker: warm-up, then the measured window.
    pub fn start(
        workers: Vec<W>,
        plans: Arc<PlanGenerator>,
        shards: usize,
        warmup: Duration,
        window: Duration,
        seed: u64,
    ) -> Self {
        let start = Instant::now();
        let t0 = start + warmup;
        let t1 = t0 + window;
        let live = Arc::new(Live::default());
        let tasks = workers
            .into_iter()
            .enumerate()
            .map(|(i, mut worker)| {
                let plans = plans.clone();
                let live = live.clone();
                tokio::spawn(async move {
                    let mut rng =
                        rand::rngs::SmallRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let mut m = Measured {
                        window,
                        commits: 0,
                        aborts: 0,
                        errors: 0,
                        first_error: None,
                        shard_commits: vec![0; shards],
                        latency: latency_histogram(),
                    };
                    while Instant::now() < t1 {
                        let plan = plans.next(&mut rng);
                        let touched = plan.shards();
                        let began = Instant::now();
                        let result = match tokio::time::timeout(TXN_TIMEOUT, worker.execute(plan)).await {
                            Ok(r) => r,
                            Err(_) => TxnResult::Failed(format!("no answer within {TXN_TIMEOUT:?}")),
                        };
                        let ended = Instant::now();
                        live.attempts.fetch_add(1, Ordering::Relaxed);
                        if result == TxnResult::Committed {
                            live.commits.fetch_add(1, Ordering::Relaxed);
                        }
                        if ended < t0 || ended > t1 {
                            if let TxnResult::Failed(_) = result {
                                // Failing outside the window still slows
                                // the loop down; pause so a dead server
                                // does not spin it.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            continue;
                        }
                        match result {
                            TxnResult::Committed => {
                                m.commits += 1;
                                for s in touched {
                                    m.shard_commits[s] += 1;
                                }
                                m.latency.saturating_record(((ended - began).as_nanos() as u64 / 1000).max(1));
                            }
                            TxnResult::Aborted => m.aborts += 1,
                            TxnResult::Failed(e) => {
                                m.errors += 1;
                                m.first_error.get_or_insert(e);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    worker.finish().await;
                    (worker, m)
                })
            })
            .collect();
        LevelRun { t0, t1, live, tasks, shards }
    }

    /// Waits for every worker (at most [`DRAIN_TIMEOUT`] after the window)
    /// and merges what they measured. Workers that did not finish in time
    /// are aborted (and lost).
    pub async fn finish(self) -> (Vec<W>, Measured) {
        let mut total = Measured {
            window: self.t1 - self.t0,
            commits: 0,
            aborts: 0,
            errors: 0,
            first_error: None,
            shard_commits: vec![0; self.shards],
            latency: latency_histogram(),
        };
        let mut workers = Vec::new();
        let deadline = tokio::time::Instant::from_std(self.t1 + DRAIN_TIMEOUT);
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok((w, m))) => {
                    total.commits += m.commits;
                    total.aborts += m.aborts;
                    total.errors += m.errors;
                    if total.first_error.is_none() {
                        total.first_error = m.first_error;
                    }
                    for (t, s) in total.shard_commits.iter_mut().zip(m.shard_commits) {
                        *t += s;
                    }
                    let _ = total.latency.add(&m.latency);
                    workers.push(w);
                }
                Ok(Err(e)) => {
                    total.errors += 1;
                    total.first_error.get_or_insert(format!("worker failed: {e}"));
                }
                Err(_) => {
                    abort.abort();
                    total.errors += 1;
                    total.first_error.get_or_insert(format!("worker still busy {DRAIN_TIMEOUT:?} after the window"));
                }
            }
        }
        (workers, total)
    }
}

#[cfg(test)]
mod tests {
    use super::super::workload::{KeySpace, Workload};
    use super::*;
    use twopc_common::config::ClusterConfig;

    /// Commits every other transaction after a short sleep.
    struct Fake {
        n: u64,
        finished: bool,
    }

    impl Worker for Fake {
        async fn execute(&mut self, _plan: TxnPlan) -> TxnResult {
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.n += 1;
            if self.n.is_multiple_of(2) {
                TxnResult::Committed
            } else {
                TxnResult::Aborted
            }
        }

        async fn finish(&mut self) {
            self.finished = true;
        }
    }

    #[tokio::test]
    async fn counts_only_the_window_and_returns_the_workers() {
        let ring = ClusterConfig::loopback(1, 2, 7000).ring();
        let keys = Arc::new(KeySpace::new(&ring, 10));
        let plans = Arc::new(PlanGenerator::new(Workload::MultiShard, keys, None));
        let workers = (0..4).map(|_| Fake { n: 0, finished: false }).collect();
        let run = LevelRun::start(workers, plans, 2, Duration::from_millis(50), Duration::from_millis(200), 1);
        let (workers, m) = run.finish().await;
        assert_eq!(workers.len(), 4);
        assert!(workers.iter().all(|w| w.finished));
        let attempts: u64 = workers.iter().map(|w| w.n).sum();
        assert!(m.commits > 0 && m.aborts > 0);
        assert!(m.commits + m.aborts < attempts, "warm-up transactions were counted");
        assert_eq!(m.shard_commits, vec![m.commits, m.commits]);
        assert_eq!(m.latency.len(), m.commits);
        assert!(m.latency.value_at_quantile(0.5) >= 2_000);
    }
}
