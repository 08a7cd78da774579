//! A twopc coordinator: runs two-phase commit (presumed abort) for
//! applications and keeps the decision log.
//!
//! # Layout
//! - [`batcher`]: messages to one participant, batched (the shared shape).
//! - [`commit_batch`]: second-phase commits, batched per participant.
//! - [`commit_gate`]: commits in progress, let finish at a stop.
//! - [`ended`]: the log's ended transactions, trimmed beyond a bound, and
//!   how far the trimmed ones reach per epoch.
//! - [`engine`]: the pure protocol state machine (events in, commands out).
//! - [`epochs`]: which epochs the log ran and how far each one's outcomes
//!   were forgotten (presumed abort holds for the rest).
//! - [`participant_data`]: the participants' data ids it worked with (a
//!   participant whose data was begun anew is refused).
//! - [`prepare_batch`]: first-phase prepares, batched per participant.
//! - [`record`]: what the coordinator logs (Epoch, Commit, End, ...).
//! - [`routing`]: splitting a transaction by owning participant.
//! - [`runtime`]: runs the engine with tokio, RocksDB and tarpc: recovery,
//!   the decision log, sending to participants with retries.
//! - [`server`]: the `CoordinatorRpc` service (routing keys to participants).

pub mod batcher;
pub mod commit_batch;
pub mod commit_gate;
pub mod ended;
pub mod engine;
pub mod epochs;
pub mod participant_data;
pub mod prepare_batch;
pub mod record;
pub mod routing;
pub mod runtime;
pub mod server;

pub use runtime::{start, CoordinatorError, CoordinatorOptions, RunningCoordinator};
