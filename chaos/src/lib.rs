//! Process-level testing tools for twopc.
//!
//! # Layout
//! - [`cluster`]: launches real `twopc` processes on loopback, kills,
//!   pauses and restarts them (used by chaos, the benchmark and the
//!   multi-process tests).

pub mod cluster;
