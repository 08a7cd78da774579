//! Giving the memory of large requests back to the system. mimalloc
//! purges the pages of freed large blocks lazily, when the allocator is
//! next busy: a server that received 64 MiB requests on 16 connections at
//! once (within its 256 MiB frame budget) peaked at 575 MB of RSS and
//! stayed there once it went quiet (trial 16B). A thread asks mimalloc to
//! collect every [`COLLECT_INTERVAL`] while large frames arrive (and for
//! [`COLLECT_AFTER_QUIET`] after the last): the same burst peaked at
//! 337 MB and fell back to 28 MB. Only then: collecting all the time
//! purged pages that busy small requests reuse at once (throughput at
//! concurrency 256 looked about 10% lower, within the noise).

use std::time::Duration;
use twopc_common::frame_gate::SERVER_FRAME_BUDGET;

/// How often freed memory is handed back while large frames arrive.
pub const COLLECT_INTERVAL: Duration = Duration::from_millis(100);
/// How long it goes on after the last large frame was admitted (its
/// buffers are freed once the request is decoded and handled).
pub const COLLECT_AFTER_QUIET: Duration = Duration::from_secs(2);

extern "C" {
    /// mimalloc's documented `void mi_collect(bool force)`: frees what
    /// it can, and purges freed pages now.
    fn mi_collect(force: bool);
}

/// Starts the thread (for the life of the process).
pub fn give_back_freed_memory() {
    let started = std::thread::Builder::new().name("memory-collect".into()).spawn(|| {
        let quiet_ticks = (COLLECT_AFTER_QUIET.as_millis() / COLLECT_INTERVAL.as_millis()) as u32;
        let mut seen = SERVER_FRAME_BUDGET.admitted();
        let mut left = 0;
        loop {
            std::thread::sleep(COLLECT_INTERVAL);
            let admitted = SERVER_FRAME_BUDGET.admitted();
            if admitted != seen || SERVER_FRAME_BUDGET.in_use() > 0 {
                seen = admitted;
                left = quiet_ticks;
            }
            if left > 0 {
                left -= 1;
                // SAFETY: takes no pointers; mimalloc is this process's
                // global allocator and its collect is thread-safe.
                unsafe { mi_collect(true) };
            }
        }
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the memory collector; freed memory may be kept");
    }
}
