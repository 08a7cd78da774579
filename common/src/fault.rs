//! Named fault points at protocol moments, for crash tests and the chaos
//! harness. Compiled in only with the `fault-points` feature; otherwise
//! [`hit`] is a constant `false` and costs nothing.
//!
//! Armed from the environment: `TWOPC_FAULTS="point=action[@n],..."` where
//! `action` is `crash` (SIGKILL this process, as a power cut would: the
//! WAL's unsynced buffer is lost), `drop` (the caller skips the step,
//! e.g. a message is not sent) or `crash-soon` (skip the step, and SIGKILL
//! [`CRASH_SOON_DELAY`] later), and `@n` fires on the n-th hit only
//! (default: every hit). Points:
//! - `participant.after-prepare-synced`: Prepared record durable, vote not sent;
//! - `participant.before-apply`: commit received, writes not applied;
//! - `participant.after-commit-acked`: a commit's ack handed to the RPC layer;
//! - `coordinator.before-decision`: every vote Yes, Commit record not written;
//! - `coordinator.after-decision-synced`: Commit record durable, nobody told;
//! - `coordinator.mid-commit-fanout`: the first commit sent, others not;
//! - `coordinator.before-commit-send`: the client was answered Committed,
//!   the commit messages are about to be queued (use `crash-soon`: the
//!   client hears Committed, no participant hears the commit);
//! - `coordinator.commit-send`: each commit message (use `drop` to withhold).

//!
//! Negative controls: `TWOPC_SABOTAGE=vote-before-sync` (a participant
//! votes Yes before its Prepared record is synced) or
//! `TWOPC_SABOTAGE=commit-before-sync` (the coordinator answers Committed
//! before its Commit record is synced) or `TWOPC_SABOTAGE=ack-before-sync`
//! (a participant acks a commit before a sync covers its apply). They
//! exist to prove that the tests and checkers catch a broken durability
//! rule.

/// How long `crash-soon` lets the process go on (replies already handed
/// to the network leave) before it kills it.
pub const CRASH_SOON_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
/// Environment variable that arms fault points.
pub const FAULTS_ENV: &str = "TWOPC_FAULTS";
/// Environment variable that breaks one durability rule on purpose.
pub const SABOTAGE_ENV: &str = "TWOPC_SABOTAGE";

/// `value`, except while one of `rules` is sabotaged (then `None`).
pub fn unless_sabotaged<T>(rules: &[&str], value: T) -> Option<T> {
    (!rules.iter().any(|rule| sabotaged(rule))).then_some(value)
}

/// True when this fault-point build was told to break rule `name`.
pub fn sabotaged(name: &str) -> bool {
    #[cfg(feature = "fault-points")]
    {
        static SABOTAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let armed = SABOTAGE.get_or_init(|| std::env::var(SABOTAGE_ENV).unwrap_or_default());
        armed.split(',').any(|s| s.trim() == name)
    }
    #[cfg(not(feature = "fault-points"))]
    {
        let _ = name;
        false
    }
}

#[cfg(feature = "fault-points")]
mod armed {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    pub struct Fault {
        pub action: String,
        pub nth: Option<u64>,
        pub hits: AtomicU64,
    }

    pub fn faults() -> &'static HashMap<String, Fault> {
        static FAULTS: OnceLock<HashMap<String, Fault>> = OnceLock::new();
        FAULTS.get_or_init(|| {
            let spec = std::env::var(super::FAULTS_ENV).unwrap_or_default();
            spec.split(',')
                .filter(|s| !s.trim().is_empty())
                .filter_map(|entry| {
                    let (point, action) = entry.trim().split_once('=')?;
                    let (action, nth) = match action.split_once('@') {
                        Some((a, n)) => (a, n.parse().ok()),
                        None => (action, None),
                    };
                    let fault = Fault { action: action.to_string(), nth, hits: AtomicU64::new(0) };
                    Some((point.to_string(), fault))
                })
                .collect()
        })
    }

    pub fn hit(point: &str) -> bool {
        let Some(fault) = faults().get(point) else {
            return false;
        };
        let n = fault.hits.fetch_add(1, Ordering::SeqCst) + 1;
        if fault.nth.is_some_and(|nth| nth != n) {
            return false;
        }
        match fault.action.as_str() {
            "crash" => {
                tracing::warn!(point, "fault point: crashing");
                // SAFETY: getpid and kill have no memory-safety preconditions.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                std::process::abort();
            }
            "drop" => {
                tracing::warn!(point, "fault point: dropping");
                true
            }
            "crash-soon" => {
                tracing::warn!(point, "fault point: dropping, crashing soon");
                std::thread::spawn(|| {
                    std::thread::sleep(super::CRASH_SOON_DELAY);
                    // SAFETY: getpid and kill have no memory-safety preconditions.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                });
                true
            }
            other => panic!("unknown fault action {other:?} at {point}"),
        }
    }
}

/// Reports reaching `point`. Crashes the process if armed with `crash`;
/// returns true if armed with `drop` (the caller skips the step).
#[inline]
pub fn hit(point: &str) -> bool {
    #[cfg(feature = "fault-points")]
    {
        armed::hit(point)
    }
    #[cfg(not(feature = "fault-points"))]
    {
        let _ = point;
        false
    }
}
