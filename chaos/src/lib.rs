//! Process-level testing tools for twopc.
//!
//! # Layout
//! - [`cluster`]: launches real `twopc` processes on loopback, kills,
//!   pauses and restarts them (used by chaos, the benchmark and the
//!   multi-process tests).
//! - the chaos harness (`twopc chaos`): [`proxy`] (fault-injecting TCP
//!   proxies on every link), [`nemesis`] (faults from a seed),
//!   [`workload`] (bank, atomic-set), [`history`], [`checker`],
//!   [`runner`] (one run: start, faults, heal, recover, check) and
//!   [`report`].
//! - [`stats_peer`]: a reconnecting `stats()` connection to any server.
//! - [`child`]: child processes that die with this process (SIGKILL
//!   included), whichever thread asks for them.
//! - [`bench`]: `twopc bench`: closed-loop load over a concurrency sweep,
//!   the fsync/round-trip floor, and a PostgreSQL two-phase-commit peer.

pub mod bench;
pub mod checker;
pub mod child;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod stats_peer;
pub mod workload;

pub use runner::{run, ChaosOptions};
