//! Running many seeds on every core (each run stays single-threaded and
//! deterministic), catching panics so a crashing engine still names its
//! seed.

use super::config::{Sabotage, SimConfig};
use super::SimReport;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures kept in a summary, at most (the count is exact).
const FAILURES_KEPT: usize = 20;

/// What a batch of runs found.
#[derive(Debug, Default)]
pub struct Summary {
    pub runs: u64,
    pub failed: u64,
    /// Runs that hit a known engine bug ([`super::KNOWN_ENGINE_BUGS`]) only.
    pub known_bug_runs: u64,
    /// The first failures, by seed.
    pub failures: Vec<SimReport>,
    pub committed: u64,
    pub aborted: u64,
    pub unknown: u64,
    pub events: u64,
    /// Runs per fault profile.
    pub profiles: BTreeMap<&'static str, u64>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} runs in {:.1?}: {} failed, {} hit known engine bugs only; client outcomes: {} committed, {} aborted, {} unknown; {} events; profiles {:?}",
            self.runs, self.elapsed, self.failed, self.known_bug_runs, self.committed, self.aborted, self.unknown, self.events, self.profiles
        );
        for f in &self.failures {
            s.push('\n');
            s.push_str(&f.describe());
        }
        s
    }

    fn add(&mut self, mut report: SimReport) {
        self.runs += 1;
        if report.set_aside_known_bugs() > 0 && report.passed() {
            self.known_bug_runs += 1;
        }
        self.committed += report.committed as u64;
        self.aborted += report.aborted as u64;
        self.unknown += report.unknown as u64;
        self.events += report.events;
        *self.profiles.entry(report.profile).or_default() += 1;
        if !report.passed() {
            self.failed += 1;
            self.failures.push(report);
            self.failures.sort_by_key(|r| r.seed);
            self.failures.truncate(FAILURES_KEPT);
        }
    }
}

/// Runs one seed; a panic becomes a failed report naming the seed.
pub fn run_caught(cfg: &SimConfig) -> SimReport {
    match catch_unwind(AssertUnwindSafe(|| super::run(cfg))) {
        Ok(report) => report,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            let mut report = SimReport::empty(cfg);
            report.violations.push(format!("panicked: {what}"));
            report
        }
    }
}

/// Runs `seeds` with `sabotage` (and ghost checks on or off) on every core.
pub fn run_seeds(seeds: std::ops::Range<u64>, sabotage: Sabotage, ghost_checks: bool) -> Summary {
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let summary = Mutex::new(Summary::default());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let cfg = SimConfig::for_seed(seed).with_sabotage(sabotage).with_ghost_checks(ghost_checks);
                let report = run_caught(&cfg);
                summary.lock().unwrap_or_else(|e| e.into_inner()).add(report);
            });
        }
    });
    let mut summary = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    summary.elapsed = started.elapsed();
    summary
}

/// The first seed of `seeds` whose run finds a violation.
pub fn first_failing(seeds: std::ops::Range<u64>, sabotage: Sabotage, ghost_checks: bool) -> Option<SimReport> {
    seeds
        .map(|seed| run_caught(&SimConfig::for_seed(seed).with_sabotage(sabotage).with_ghost_checks(ghost_checks)))
        .find(|r| !r.passed())
}
