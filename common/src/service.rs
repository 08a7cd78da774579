//! The tarpc services. Applications talk to [`CoordinatorRpc`]; the
//! coordinator talks to [`ParticipantRpc`]; participants ask
//! [`CoordinatorRpc::outcome`] while in doubt.
//!
//! Both services start with the same `hello`: the two services' requests
//! share a layout (bincode numbers a request by its method's position), so
//! a client pointed at the wrong kind of process would otherwise have its
//! requests read as other requests (`outcome` at a participant was answered
//! by `probe`). Clients ask `hello` once per connection and refuse a
//! process that is not what they expect.

use crate::admin::{AdminReply, AdminRequest, NodeStats};
use crate::error::ServiceError;
use crate::ids::TxnId;
use crate::limits::HELLO_TIMEOUT;
use crate::net::context_with_timeout;
use crate::txn::{Key, Outcome, OutcomeStatus, PrepareRequest, ProbeAnswer, TxnOps, Versioned, Vote};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
pub use tarpc::client::RpcError;

/// What kind of process answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Coordinator,
    Participant,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Coordinator => "coordinator",
            Role::Participant => "participant",
        })
    }
}

/// Who answers at an address (the answer to `hello`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub role: Role,
    pub id: String,
    /// The id of the data it serves, made when its log was created
    /// ([`crate::data_dir::data_id`]): a node whose data was lost and
    /// begun anew (`--init` on an empty directory) has another.
    pub data_id: String,
    /// The fingerprint of the ring it routes keys by (its cluster file's
    /// participants and vnodes, [`crate::ring::Ring::fingerprint`]).
    pub ring: u64,
    /// That ring in words ([`crate::ring::Ring::describe`]), for errors.
    pub ring_described: String,
}

impl Hello {
    /// What a `role` `id` serving data `data_id` under `ring` answers.
    pub fn new(role: Role, id: &str, data_id: &str, ring: &crate::ring::Ring) -> Hello {
        Hello {
            role,
            id: id.to_string(),
            data_id: data_id.to_string(),
            ring: ring.fingerprint(),
            ring_described: ring.describe(),
        }
    }

    /// Checks that the process at `addr` is a `role` (and `id`, if given).
    pub fn expect(&self, addr: &str, role: Role, id: Option<&str>) -> Result<(), String> {
        if self.role != role {
            return Err(format!("{addr} is {} {}, not a {role}", self.role, self.id));
        }
        match id {
            Some(id) if id != self.id => {
                Err(format!("{addr} is {role} {}, not {id}: the cluster file's address for {id} is wrong", self.id))
            }
            _ => Ok(()),
        }
    }
}

/// Whether a connection failure is [`Hello::expect`]'s: another process
/// answers at the address. Trying again fails the same way, unlike a
/// process that is down or hung.
pub fn names_wrong_process(failure: &str) -> bool {
    ((failure.contains(" is coordinator ") || failure.contains(" is participant ")) && failure.contains(", not "))
        || failure.contains(NOT_TWOPC)
}

/// What [`hello_failure`] says of an answer that is not twopc's protocol.
const NOT_TWOPC: &str = "does not speak twopc's protocol";

#[tarpc::service]
pub trait ParticipantRpc {
    /// Who this is (first in both services: see the module).
    async fn hello() -> Hello;
    /// Committed values and versions of `keys`; takes no locks.
    async fn read(keys: Vec<Key>) -> Result<Vec<Versioned>, ServiceError>;
    /// Phase one for each request (at most
    /// [`crate::limits::MAX_PREPARE_BATCH`]): lock, validate, sync a
    /// Prepared record, vote; one answer per request, in order. Idempotent.
    async fn prepare_many(reqs: Vec<PrepareRequest>) -> Result<Vec<Result<Vote, ServiceError>>, ServiceError>;
    /// Phase two for each txid (at most [`crate::limits::MAX_COMMIT_BATCH`]):
    /// apply the prepared writes and release the locks; one answer per
    /// txid, in order. An ack means the apply is durable. Idempotent; acks
    /// a txid it no longer holds.
    async fn commit_many(txids: Vec<TxnId>) -> Result<Vec<Result<(), ServiceError>>, ServiceError>;
    /// Phase two: drop the prepared writes and release the locks. Idempotent.
    async fn abort(txid: TxnId) -> Result<(), ServiceError>;
    /// One-phase commit for a transaction that touches only this
    /// participant: validate, lock, apply and sync in one step. Idempotent.
    async fn commit_one_phase(req: PrepareRequest) -> Result<Outcome, ServiceError>;
    /// The coordinator asks what this participant knows of `txid` when its
    /// own memory cannot answer (an older epoch's one-phase commit). A txid
    /// the participant never saw is fenced: later requests for it abort.
    async fn probe(txid: TxnId) -> Result<ProbeAnswer, ServiceError>;
    /// Counters (no token needed).
    async fn stats() -> NodeStats;
    /// An operator's request; refused without the right token.
    async fn admin(token: String, req: AdminRequest) -> Result<AdminReply, ServiceError>;
}

#[tarpc::service]
pub trait CoordinatorRpc {
    /// Who this is (first in both services: see the module).
    async fn hello() -> Hello;
    /// Allocates a transaction id (no write: ids are unique by epoch).
    async fn begin() -> Result<TxnId, ServiceError>;
    /// Allocates `count` transaction ids at once (at most
    /// [`crate::limits::MAX_BEGIN_BATCH`]; fewer if the coordinator has
    /// less room). Clients keep them as spares, so `begin` needs no round
    /// trip. An id unused for a minute is aborted by the coordinator.
    async fn begin_many(count: u32) -> Result<Vec<TxnId>, ServiceError>;
    /// Committed values of `keys`, routed to their participants.
    async fn read(keys: Vec<Key>) -> Result<Vec<Versioned>, ServiceError>;
    /// Runs two-phase commit (one-phase when one participant is involved).
    async fn commit(txid: TxnId, ops: TxnOps) -> Result<Outcome, ServiceError>;
    /// Abandons a begun transaction; later commits of it are refused.
    async fn abort(txid: TxnId) -> Result<(), ServiceError>;
    /// What happened to `txid`. Presumed abort: a txid with no logged
    /// commit that is not in progress is Aborted, for good. One this
    /// coordinator never minted is `UnknownTxn` (asking changes nothing).
    async fn outcome(txid: TxnId) -> Result<OutcomeStatus, ServiceError>;
    /// Counters (no token needed).
    async fn stats() -> NodeStats;
    /// An operator's request; refused without the right token.
    async fn admin(token: String, req: AdminRequest) -> Result<AdminReply, ServiceError>;
}

/// Asks `hello` (one of [`coordinator_hello`], [`participant_hello`]) of
/// the process at `addr` and checks that it is a `role` (and `id`, if
/// given), returning its answer; the error says what is there instead, or
/// that nothing answered.
pub async fn introduce(
    hello: BoxFuture<'static, Result<Hello, RpcError>>,
    addr: &str,
    role: Role,
    id: Option<&str>,
) -> Result<Hello, String> {
    // A guard beside the call's own deadline: a call stranded on a dying
    // connection may never end by itself.
    let answer = tokio::time::timeout(HELLO_TIMEOUT + crate::net::GUARD_SLACK, hello)
        .await
        .unwrap_or(Err(RpcError::DeadlineExceeded));
    let hello = answer.map_err(|e| hello_failure(addr, role, &e))?;
    hello.expect(addr, role, id)?;
    Ok(hello)
}

/// Why `hello` to `addr` (expected to be a `role`) got no answer, in words.
fn hello_failure(addr: &str, role: Role, e: &RpcError) -> String {
    match e {
        RpcError::DeadlineExceeded => {
            format!("{addr} accepted the connection but did not answer within {HELLO_TIMEOUT:?} (overloaded, hung, stopped, or stuck on a disk that does not complete its writes?)")
        }
        // The connection closed before any answer: the process died or
        // is restarting (a kill mid-load did this), or it does not speak
        // twopc and dropped what it could not read.
        RpcError::Shutdown => {
            format!("{addr} closed the connection without answering (stopping or restarting, or not a twopc {role}?)")
        }
        // Also what a server speaking another protocol causes: its bytes
        // do not decode (an echo server was said to have closed).
        RpcError::Channel(e) => {
            let mut why = e.to_string();
            let mut undecodable = false;
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                undecodable |= is_invalid_data(s);
                source = s.source();
            }
            // (bincode's messages span lines.)
            let why = why.replace('\n', " ");
            if undecodable {
                // Bytes that are not twopc frames (an HTTP or SSH server
                // there, or a twopc of another release): trying again
                // fails the same way (it was exit 4, "retryable": trial 21A).
                format!(
                    "{addr} {NOT_TWOPC} ({why}): another program listens there, or a twopc {role} of another release?"
                )
            } else {
                format!("{addr} gave no twopc answer ({why}): stopping or restarting, at its connection limit, or not a twopc {role}?")
            }
        }
        e => format!("{addr}: {e} (is it a twopc {role}?)"),
    }
}

/// Whether `e` is, or wraps, an I/O error of kind `InvalidData` (bytes
/// that do not decode). tarpc hands a transport's error on as an
/// `Arc<dyn Error>`, wrapped in an `io::Error` of kind `Other`, whose
/// `source()` skips the wrapped error itself.
fn is_invalid_data(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.kind() == ErrorKind::InvalidData || io.get_ref().is_some_and(|inner| is_invalid_data(inner));
    }
    e.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        .is_some_and(|shared| is_invalid_data(shared.as_ref()))
}

/// Asks a coordinator who it is, within [`HELLO_TIMEOUT`].
pub fn coordinator_hello(client: CoordinatorRpcClient) -> BoxFuture<'static, Result<Hello, RpcError>> {
    Box::pin(async move { client.hello(context_with_timeout(HELLO_TIMEOUT)).await })
}

/// Asks a participant who it is, within [`HELLO_TIMEOUT`].
pub fn participant_hello(client: ParticipantRpcClient) -> BoxFuture<'static, Result<Hello, RpcError>> {
    Box::pin(async move { client.hello(context_with_timeout(HELLO_TIMEOUT)).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_process_is_told_from_one_that_is_down() {
        let ring = crate::ring::Ring::new(&[crate::NodeId::new("p1").unwrap()], 64);
        let participant = Hello::new(Role::Participant, "p1", "d", &ring);
        let wrong_role = participant.expect("127.0.0.1:7001", Role::Coordinator, None).unwrap_err();
        assert!(names_wrong_process(&wrong_role), "{wrong_role}");
        let wrong_id = participant.expect("127.0.0.1:7001", Role::Participant, Some("p2")).unwrap_err();
        assert!(names_wrong_process(&wrong_id), "{wrong_id}");
        let hung = hello_failure("127.0.0.1:7001", Role::Coordinator, &RpcError::DeadlineExceeded);
        assert!(!names_wrong_process(&hung), "{hung}");
        assert!(!names_wrong_process("cannot connect to 127.0.0.1:7000: Connection refused (os error 111)"));
    }

    /// Trial 21A: an SSH or HTTP server at the address was "retryable".
    #[test]
    fn an_answer_in_another_protocol_is_not_worth_retrying() {
        let garbage =
            std::io::Error::new(ErrorKind::InvalidData, "Byte 255 is treated as an extension point;\nit should not");
        // Wrapped as tarpc's transport hands it on.
        let garbage = std::io::Error::other(garbage);
        let e = RpcError::Channel(tarpc::ChannelError::Read(std::sync::Arc::new(garbage)));
        let said = hello_failure("127.0.0.1:22", Role::Coordinator, &e);
        assert!(names_wrong_process(&said) && !said.contains('\n'), "{said}");
        let reset = std::io::Error::new(ErrorKind::ConnectionReset, "Connection reset by peer");
        let e = RpcError::Channel(tarpc::ChannelError::Read(std::sync::Arc::new(reset)));
        assert!(!names_wrong_process(&hello_failure("127.0.0.1:7001", Role::Participant, &e)));
    }
}
