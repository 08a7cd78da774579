//! A twopc coordinator: runs two-phase commit (presumed abort) for
//! applications and keeps the decision log.
//!
//! # Layout
//! - [`commit_batch`]: second-phase commits, batched per participant.
//! - [`engine`]: the pure protocol state machine (events in, commands out).
//! - [`record`]: what the coordinator logs (Epoch, Commit, End).
//! - [`routing`]: splitting a transaction by owning participant.
//! - [`runtime`]: runs the engine with tokio, RocksDB and tarpc: recovery,
//!   the decision log, sending to participants with retries.
//! - [`server`]: the `CoordinatorRpc` service (routing keys to participants).

pub mod commit_batch;
pub mod engine;
pub mod record;
pub mod routing;
pub mod runtime;
pub mod server;

pub use runtime::{run, start, CoordinatorError, CoordinatorOptions, RunningCoordinator};
