//! Notices when this process itself stood still: stopped (SIGSTOP), its
//! machine stalled, or starved of CPU. A deadline that ran out meanwhile
//! says nothing about the peer that was asked (trial 18A: a coordinator
//! stopped for 7 s aborted a transaction whose participants had all voted
//! Yes, their votes waiting in its sockets, and blamed one of them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the watch looks at the clock.
pub const STALL_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// A gap between two looks longer than this is a stall.
pub const STALL_THRESHOLD: Duration = Duration::from_secs(1);

static WATCHING: AtomicBool = AtomicBool::new(false);
/// When the watch last looked (ms since [`origin`]).
static LAST_LOOK_MS: AtomicU64 = AtomicU64::new(0);
/// When the latest stall the watch saw ended (ms since [`origin`]; 0: none).
static LAST_STALL_END_MS: AtomicU64 = AtomicU64::new(0);
/// Stalls seen since the watch started.
static STALLS: AtomicU64 = AtomicU64::new(0);

/// An instant well before any this process sees (so that 0 is never a
/// time here).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3_600)).unwrap_or(now)
    })
}

fn ms(at: Instant) -> u64 {
    at.saturating_duration_since(origin()).as_millis() as u64
}

/// Starts the watch: a thread of its own, once per process.
pub fn watch() {
    if WATCHING.swap(true, Ordering::AcqRel) {
        return;
    }
    LAST_LOOK_MS.store(ms(Instant::now()), Ordering::Release);
    let spawned = std::thread::Builder::new().name("stall-watch".into()).spawn(|| loop {
        std::thread::sleep(STALL_WATCH_INTERVAL);
        look(Instant::now());
    });
    if let Err(e) = spawned {
        WATCHING.store(false, Ordering::Release);
        tracing::warn!(error = %e, "cannot start the stall watch: deadlines are taken as they come");
    }
}

fn look(now: Instant) {
    let now_ms = ms(now);
    let last = LAST_LOOK_MS.swap(now_ms, Ordering::AcqRel);
    let gap = now_ms.saturating_sub(last);
    if gap > STALL_THRESHOLD.as_millis() as u64 {
        LAST_STALL_END_MS.store(now_ms, Ordering::Release);
        let before = STALLS.fetch_add(1, Ordering::Relaxed);
        let stalls = before + 1;
        // At the 1st, 2nd, 4th, 8th… (trial 19A: a process starved of CPU
        // for 40 s logged it every second).
        if crate::node::worth_a_warning(u32::try_from(before).unwrap_or(u32::MAX)) {
            tracing::warn!(
                stood_still_ms = gap,
                stalls,
                "this process stood still (stopped, its machine stalled, or starved of CPU): \
                 deadlines that ran out meanwhile are not blamed on the peers asked"
            );
        } else {
            tracing::debug!(stood_still_ms = gap, stalls, "this process stood still");
        }
    }
}

/// Whether this process stood still at some time since `since`: a stall
/// the watch saw ended after it, or one is ending now (the watch has not
/// looked for longer than [`STALL_THRESHOLD`]: it stood still too). Always
/// false if the watch is not running.
pub fn stood_still_since(since: Instant) -> bool {
    if !WATCHING.load(Ordering::Acquire) {
        return false;
    }
    let now_ms = ms(Instant::now());
    let unseen = now_ms.saturating_sub(LAST_LOOK_MS.load(Ordering::Acquire)) > STALL_THRESHOLD.as_millis() as u64;
    let ended = LAST_STALL_END_MS.load(Ordering::Acquire);
    unseen || (ended != 0 && ended >= ms(since))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_between_looks_is_a_stall_seen_by_calls_begun_before_it_ends() {
        watch();
        let before = Instant::now();
        assert!(!stood_still_since(before), "no stall yet");
        // The watch looked long ago (as after SIGCONT, before its thread ran).
        LAST_LOOK_MS.store(ms(Instant::now()).saturating_sub(5_000), Ordering::Release);
        assert!(stood_still_since(before), "a stall ending now, not yet seen by the watch");
        std::thread::sleep(STALL_WATCH_INTERVAL * 3);
        assert!(stood_still_since(before), "the watch saw it end after `before`");
        assert!(!stood_still_since(Instant::now()), "a call begun after it is not excused");
    }
}
