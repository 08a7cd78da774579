//! Process-level testing tools for twopc.
//!
//! # Layout
//! - [`cluster`]: launches real `twopc` processes on loopback, kills,
//!   pauses and restarts them (used by chaos, the benchmark and the
//!   multi-process tests).
//! - [`bench`]: `twopc bench`: closed-loop load over a concurrency sweep,
//!   the fsync/round-trip floor, and a PostgreSQL two-phase-commit peer.

pub mod bench;
pub mod cluster;
