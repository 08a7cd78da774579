//! Shared vocabulary of twopc: everything two processes must agree on.
//!
//! # Layout
//! - [`ids`]: node ids and transaction ids (`TxnId { coordinator, epoch, seq }`).
//! - [`txn`]: keys, values, versions, read/write sets, votes, outcomes.
//! - [`limits`]: every size and count bound shared by clients and servers.
//! - [`ring`]: the consistent-hash ring that routes keys to participants.
//! - [`config`]: the cluster file (`CLUSTER.toml`) and its validation.
//! - [`service`]: the tarpc service traits (participant, coordinator, admin).
//! - [`net`]: TCP transport (TCP_NODELAY, keepalive, frame cap), listeners
//!   with a connection cap, and reconnecting peers.
//! - [`frame_gate`]: a process-wide bound on the memory of requests still
//!   being received.
//! - [`server_codec`]: how servers decode requests (tarpc's bincode, with
//!   each request's deadline cut to a bound).
//! - [`connections`]: a server's live connections; at the cap, a new one
//!   takes the slot of the one idle longest.
//! - [`data_dir`]: the owner file that ties a data directory to its node.
//! - [`open_files`]: a server's open-file limit and the connections it allows.
//! - [`client`]: the application client library (begin / get / put / commit),
//!   over one coordinator or the first reachable of several
//!   (`coordinator_set`).
//! - [`error`]: the errors that cross the wire.
//! - [`shell`]: quoting for the command lines printed to users.

pub mod address;
pub mod admin;
pub mod client;
pub mod config;
pub mod connections;
mod coordinator_set;
pub mod data_dir;
pub mod error;
pub mod fault;
pub mod frame_gate;
pub mod ids;
pub mod limits;
pub mod net;
pub mod node;
pub mod open_files;
pub mod recent;
pub mod ring;
pub mod server_codec;
pub mod service;
pub mod shell;
pub mod stall;
pub mod txn;

pub use error::ServiceError;
pub use ids::{NodeId, TxnId};
pub use txn::{AbortReason, Condition, Key, Outcome, OutcomeStatus, TxnOps, Value, Version, Versioned, Vote};
