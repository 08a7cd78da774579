//! A twopc participant: one shard of the key-value store, voting in
//! two-phase commit.
//!
//! # Layout
//! - [`engine`]: the pure protocol state machine (events in, commands out).
//! - [`forgotten`]: how far decisions were forgotten, per coordinator.
//! - [`locks`]: the lock table (exclusive, never waited for).
//! - [`record`]: what the participant logs (Prepared, Done, Heuristic, Forgotten).
//! - [`store`]: how committed values are kept in the WAL's data space.
//! - [`runtime`]: runs the engine with tokio, RocksDB and tarpc.
//! - [`server`]: the `ParticipantRpc` service.
//!
//! Data, Prepared records and Done markers share one RocksDB instance, so
//! "apply the writes + drop the Prepared record" is one atomic synced batch.

pub mod engine;
pub mod forgotten;
pub mod locks;
pub mod record;
pub mod runtime;
pub mod server;
pub mod store;

pub use runtime::{start, ParticipantError, ParticipantOptions, RunningParticipant};
