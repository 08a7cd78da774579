//! Exhaustive model checking of the real engines: 1 coordinator, up to 3
//! participants, a few transactions; every interleaving of message
//! delivery, loss, duplication, reordering, disk writes, RPC timeouts,
//! one-phase commits never sent (their participant down), outcome
//! questions, and crashes (losing everything unsynced) of any
//! process, up to a crash budget.
//!
//! # Layout
//! - [`state`]: the hashable state (engines + disks + network + ghosts).
//! - [`exec`]: the executors: engine commands → disk writes and messages,
//!   mirroring the runtimes; property checks as commands run.
//! - [`step`]: the enabled actions of a state and their effect.
//! - [`search`]: breadth-first search with a visited set, counterexample
//!   traces, and the fault-free completion check.
//!
//! Abstractions (each sound for the properties checked): time does not
//! exist — timers are actions that may fire at any moment (an RPC
//! deadline, a participant's in-doubt question); retry attempts are not
//! counted (they only set backoff delays); reasons and error texts are not
//! kept in messages (no engine branches on them).

pub mod exec;
pub mod search;
pub mod state;
pub mod step;

pub use search::{check, Counterexample, ModelReport};

/// A transaction of the model: participant `p` owns key `k<p>`.
#[derive(Debug, Clone)]
pub struct TxnSpec {
    /// Participants whose key it writes.
    pub writes: Vec<u8>,
    /// Participants whose key it reads (at version 0: nothing committed).
    pub reads: Vec<u8>,
}

/// A rule broken on purpose, to show the checker finds a counterexample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSabotage {
    None,
    /// A participant votes Yes before its Prepared record is durable.
    VoteBeforeSync,
    /// The coordinator answers Committed before its Commit record is durable.
    CommitBeforeSync,
    /// The coordinator's recovery forgets its Commit records.
    ForgetfulCoordinator,
    /// Participants never ask the outcome of in-doubt transactions (no
    /// tick, no recovery question): a lost abort leaves them blocked.
    NoOutcomeQuestions,
    /// The coordinator takes a prepare that timed out for a Yes vote.
    TimeoutIsYes,
    /// A participant acks a commit before a sync covers its apply.
    AckBeforeSync,
    /// The runtime reports a one-phase commit that may have been
    /// delivered (its deadline passed) as never sent.
    LostIsNotSent,
}

/// The properties the checker can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    /// No participant applies a transaction another aborted after prepare.
    TcConsistent,
    /// Once a Commit record is durable the coordinator never says Aborted
    /// (and never logs Commit after saying Aborted).
    DecisionStable,
    /// Committed is never answered without a durable decision.
    CommittedDurable,
    /// Yes is never voted without a durable Prepared record.
    VoteDurable,
    /// A commit is never acked before its apply is durable (the ack lets
    /// the coordinator end, then forget, the transaction).
    AckDurable,
    /// Commit is decided only when every participant holds a durable
    /// Prepared record (every vote was Yes).
    DecideAllPrepared,
    /// From every reachable state, once crashes and losses stop, every
    /// transaction resolves: atomically applied or not at all, no
    /// participant in doubt or holding locks, and what clients heard holds.
    Resolves,
}

impl Property {
    pub const ALL: [Property; 7] = [
        Property::DecideAllPrepared,
        Property::TcConsistent,
        Property::DecisionStable,
        Property::CommittedDurable,
        Property::VoteDurable,
        Property::AckDurable,
        Property::Resolves,
    ];
}

/// One model checking run.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: &'static str,
    pub participants: u8,
    pub txns: Vec<TxnSpec>,
    /// Crashes (of any process) along one path, at most.
    pub crashes: u8,
    /// Duplicate deliveries along one path, at most.
    pub duplicates: u8,
    /// RPC deadlines passing early (an answer may still come), at most.
    /// Deadlines of calls that can no longer be answered always pass.
    pub early_timeouts: u8,
    /// Messages may be lost.
    pub lose: bool,
    pub sabotage: ModelSabotage,
    pub properties: Vec<Property>,
    /// Stop (and report incomplete) beyond this many states.
    pub states_max: usize,
    /// Explore depth-first: memory stays proportional to the depth (the
    /// visited set aside), for big configurations. Breadth-first (the
    /// default) finds the shortest counterexample.
    pub depth_first: bool,
}

impl ModelConfig {
    pub fn new(name: &'static str, participants: u8, txns: Vec<TxnSpec>) -> ModelConfig {
        ModelConfig {
            name,
            participants,
            txns,
            crashes: 1,
            duplicates: 1,
            early_timeouts: 1,
            lose: true,
            sabotage: ModelSabotage::None,
            properties: Property::ALL.to_vec(),
            states_max: 5_000_000,
            depth_first: false,
        }
    }

    pub fn checks(&self, property: Property) -> bool {
        self.properties.contains(&property)
    }
}
