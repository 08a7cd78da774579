//! Addresses, RPC requests and responses that travel the simulated network.
//!
//! Every exchange is an RPC, as in the real system (tarpc): the caller
//! allocates a [`CallId`], sends a [`Request`], and arms a timeout; the
//! first [`Response`] (or the timeout) completes the call, later ones are
//! ignored. The callee's engine sees its own `RequestId`s.

use twopc_common::txn::PrepareRequest;
use twopc_common::{Key, TxnId, TxnOps, Versioned};
use twopc_coordinator::engine::Reply as CReply;
use twopc_participant::engine::Reply as PReply;

/// A process in the simulation. Clients never crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Coordinator,
    Participant(usize),
    Client(usize),
}

/// Identifies one RPC, unique in a run.
pub type CallId = u64;

/// What a caller asks of a callee.
#[derive(Debug, Clone)]
pub enum Request {
    // Coordinator → participant (`ParticipantRpc`).
    Prepare(PrepareRequest),
    OnePhase(PrepareRequest),
    Commit(TxnId),
    Abort(TxnId),
    Probe(TxnId),
    // Client → participant: committed values, no locks (`ParticipantRpc::read`).
    Read(Vec<Key>),
    // Client → coordinator (`CoordinatorRpc`); participants ask `Outcome` too.
    Begin,
    CommitTxn { txid: TxnId, ops: TxnOps },
    ClientAbort(TxnId),
    Outcome(TxnId),
}

/// A callee's answer.
#[derive(Debug, Clone)]
pub enum Response {
    Participant(PReply),
    Coordinator(CReply),
    Read(Result<Vec<Versioned>, String>),
}

/// A message on the wire.
#[derive(Debug, Clone)]
pub struct Message {
    pub from: Addr,
    pub to: Addr,
    /// The receiver's incarnation when sent: like a TCP connection, a
    /// message never reaches a later incarnation of its receiver.
    pub to_incarnation: u32,
    pub call: CallId,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub enum Body {
    Request(Request),
    Response(Response),
}
