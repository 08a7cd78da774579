//! What a transaction is made of: keys, versioned values, read and write
//! sets, conditions, votes and outcomes.

use crate::ids::{NodeId, TxnId};
use crate::limits::{
    MAX_KEYS_PER_READ, MAX_KEY_BYTES, MAX_OPS_PER_TXN, MAX_READ_REPLY_BYTES, MAX_TXN_BYTES, MAX_VALUE_BYTES,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What each operation counts towards [`crate::limits::MAX_TXN_BYTES`]
/// beside its key and value.
pub const TXN_BYTES_PER_OP: usize = 16;

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;
/// Per-key version: 0 means "never written"; every committed write
/// (including a delete) bumps it by one, so a read can be validated later.
pub type Version = u64;

/// A key's committed state as a participant stores and serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioned {
    pub version: Version,
    /// `None`: absent (never written, or deleted).
    pub value: Option<Value>,
}

/// A precondition checked at prepare, under the key's lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Condition {
    /// The key's committed value must equal this.
    Equals { key: Key, value: Value },
    /// The key must be absent.
    Absent { key: Key },
}

impl Condition {
    pub fn key(&self) -> &Key {
        match self {
            Condition::Equals { key, .. } | Condition::Absent { key } => key,
        }
    }

    pub fn holds(&self, current: &Versioned) -> bool {
        match self {
            Condition::Equals { value, .. } => current.value.as_ref() == Some(value),
            Condition::Absent { .. } => current.value.is_none(),
        }
    }
}

/// Everything a transaction asks of the keys it touches: the versions it
/// read, the conditions it expects, and what it writes (`None` deletes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnOps {
    pub reads: Vec<(Key, Version)>,
    pub conditions: Vec<Condition>,
    pub writes: Vec<(Key, Option<Value>)>,
}

impl TxnOps {
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.conditions.is_empty() && self.writes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.reads.len() + self.conditions.len() + self.writes.len()
    }

    /// About how many bytes the operations take on the wire (keys,
    /// values, and a little per operation).
    pub fn approx_bytes(&self) -> usize {
        const PER_OP: usize = TXN_BYTES_PER_OP;
        let reads: usize = self.reads.iter().map(|(k, _)| k.len() + PER_OP).sum();
        let conditions: usize = self
            .conditions
            .iter()
            .map(|c| match c {
                Condition::Equals { key, value } => key.len() + value.len() + PER_OP,
                Condition::Absent { key } => key.len() + PER_OP,
            })
            .sum();
        let writes: usize = self.writes.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + PER_OP).sum();
        reads + conditions + writes
    }

    /// Every key the transaction touches (with repeats), in order: reads,
    /// conditions, writes.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.reads
            .iter()
            .map(|(k, _)| k)
            .chain(self.conditions.iter().map(Condition::key))
            .chain(self.writes.iter().map(|(k, _)| k))
    }

    /// Checks the shared limits; the error names the first violation.
    pub fn validate(&self) -> Result<(), String> {
        if self.len() > MAX_OPS_PER_TXN {
            return Err(format!("{} operations exceed the limit of {MAX_OPS_PER_TXN}", self.len()));
        }
        for key in self.keys() {
            check_key(key)?;
        }
        let values = self.conditions.iter().filter_map(|c| match c {
            Condition::Equals { value, .. } => Some(value),
            Condition::Absent { .. } => None,
        });
        for value in values.chain(self.writes.iter().filter_map(|(_, v)| v.as_ref())) {
            check_value(value)?;
        }
        let bytes = self.approx_bytes();
        if bytes > MAX_TXN_BYTES {
            return Err(format!(
                "transaction of {} operations and about {bytes} bytes exceeds the limit of {MAX_TXN_BYTES} bytes; \
                 split it into smaller transactions",
                self.len()
            ));
        }
        Ok(())
    }
}

pub fn check_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_BYTES}; use a shorter key (a hash of a long one)",
            key.len()
        ));
    }
    Ok(())
}

/// Checks the keys of one read: at most [`MAX_KEYS_PER_READ`] of them,
/// each a valid key. The client, the coordinator and the participants all
/// ask it.
pub fn check_read_keys(keys: &[Key]) -> Result<(), String> {
    if keys.len() > MAX_KEYS_PER_READ {
        return Err(format!(
            "{} keys exceed the limit of {MAX_KEYS_PER_READ} per read; read them in several calls",
            keys.len()
        ));
    }
    keys.iter().try_for_each(|k| check_key(k))
}

pub fn check_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value of {} bytes exceeds the limit of {MAX_VALUE_BYTES}; split it over several keys",
            value.len()
        ));
    }
    Ok(())
}

/// Refuses a read of `keys` keys once its values reach `bytes` bytes,
/// more than [`MAX_READ_REPLY_BYTES`] (the reply would not fit in a frame).
pub fn check_read_reply(keys: usize, bytes: usize) -> Result<(), String> {
    if bytes > MAX_READ_REPLY_BYTES {
        return Err(format!(
            "read of {keys} keys returns more than {MAX_READ_REPLY_BYTES} bytes of values, the limit for one read; \
             read fewer keys at once"
        ));
    }
    Ok(())
}

/// What a coordinator asks one participant to prepare (or to commit in one
/// phase): that participant's slice of the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrepareRequest {
    pub txid: TxnId,
    /// Fingerprint of the sender's ring; a participant refuses a request
    /// routed with a different cluster configuration.
    pub ring: u64,
    pub ops: TxnOps,
    /// Every participant of the transaction (for recovery and admin).
    pub participants: Vec<NodeId>,
}

/// Why a transaction aborted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AbortReason {
    /// Another transaction holds a lock on the key.
    LockConflict { participant: NodeId, key: Key, holder: TxnId },
    /// The key changed since the transaction read it.
    StaleRead { participant: NodeId, key: Key, read: Version, current: Version },
    /// A condition (`expect`) did not hold.
    ConditionFailed { participant: NodeId, key: Key },
    /// A participant could not be reached or did not answer in time.
    ParticipantUnavailable { participant: NodeId, detail: String },
    /// A participant refused the request.
    Refused { participant: NodeId, detail: String },
    /// The participant had aborted the transaction already: the abort
    /// reached it before the prepare, or the request is a retry of one it
    /// refused (the reason of that refusal is not kept).
    AbortedEarlier { participant: NodeId },
    /// The application asked for the abort.
    ClientAborted,
    /// The coordinator restarted (or answered an outcome query) before the
    /// commit request arrived.
    CoordinatorRestarted,
    /// Decided by presumed abort: no commit record exists.
    NoDecisionLogged,
    /// The id was begun longer ago than the coordinator keeps an
    /// uncommitted transaction open (`after_ms`): it was aborted then.
    /// New variants go last: reasons cross the wire by variant position.
    Expired { after_ms: u64 },
    /// The key's lock is held by a transaction prepared at `participant`
    /// at least `for_ms` ago whose coordinator has not given the outcome:
    /// a lock conflict that lasts until it is resolved (trial 24C: told
    /// only "lock conflict", clients retried it 120 times in 30 s).
    HeldInDoubt { participant: NodeId, key: Key, holder: TxnId, for_ms: u64 },
}

impl AbortReason {
    /// A short stable name of the reason, for programs and counting
    /// (`twopc txn --json`'s `reason_kind`, the chaos report).
    pub fn kind(&self) -> &'static str {
        match self {
            AbortReason::LockConflict { .. } => "lock-conflict",
            AbortReason::HeldInDoubt { .. } => "held-in-doubt",
            AbortReason::StaleRead { .. } => "stale-read",
            AbortReason::ConditionFailed { .. } => "condition-failed",
            AbortReason::ParticipantUnavailable { .. } => "participant-unavailable",
            AbortReason::Refused { .. } => "refused-by-participant",
            AbortReason::AbortedEarlier { .. } => "aborted-earlier",
            AbortReason::ClientAborted => "client-aborted",
            AbortReason::CoordinatorRestarted => "coordinator-restarted",
            AbortReason::NoDecisionLogged => "no-decision-logged",
            AbortReason::Expired { .. } => "expired",
        }
    }

    /// The transaction holding the lock that caused the abort, if a lock did.
    pub fn lock_holder(&self) -> Option<&TxnId> {
        match self {
            AbortReason::LockConflict { holder, .. } | AbortReason::HeldInDoubt { holder, .. } => Some(holder),
            _ => None,
        }
    }

    /// The abort that `participant`'s error answer to a prepare (or a
    /// one-phase commit) causes: an outage it reports itself (stopping,
    /// overloaded) is `ParticipantUnavailable`, retryable like one seen
    /// from outside (a trial's participant, stopping on a full disk,
    /// answered "unavailable: participant is stopping", and clients were
    /// told the abort was final); anything else is `Refused`.
    pub fn from_participant_error(participant: NodeId, error: &crate::ServiceError) -> Self {
        let detail = error.to_string();
        if error.is_transient() {
            AbortReason::ParticipantUnavailable { participant, detail }
        } else {
            AbortReason::Refused { participant, detail }
        }
    }

    /// Whether the same operations, run again in a new transaction, may
    /// commit: the abort came from contention or a passing failure, not
    /// from the data (a failed condition) or the request.
    pub fn is_transient(&self) -> bool {
        match self {
            // Another process at its address (a wrong cluster file): the
            // same again fails the same way (it was called retryable, and a
            // retrying client would loop for good).
            AbortReason::ParticipantUnavailable { detail, .. } => !crate::service::names_wrong_process(detail),
            // Free again once the holder is resolved (`twopc admin`).
            AbortReason::LockConflict { .. }
            | AbortReason::HeldInDoubt { .. }
            | AbortReason::StaleRead { .. }
            | AbortReason::AbortedEarlier { .. }
            | AbortReason::CoordinatorRestarted
            | AbortReason::NoDecisionLogged
            | AbortReason::Expired { .. } => true,
            AbortReason::ConditionFailed { .. } | AbortReason::Refused { .. } | AbortReason::ClientAborted => false,
        }
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        match self {
            AbortReason::LockConflict { participant, key: k, holder } => {
                write!(f, "lock conflict on {:?} at {participant}: held by {holder}", key(k))
            }
            AbortReason::HeldInDoubt { participant, key: k, holder, for_ms } => write!(
                f,
                "lock conflict on {:?} at {participant}: held by {holder}, prepared there {} s ago and still in \
                 doubt (its coordinator {} has not given the outcome); a retry conflicts the same way until it \
                 is resolved: see `twopc admin in-doubt`",
                key(k),
                for_ms / 1000,
                holder.coordinator
            ),
            AbortReason::StaleRead { participant, key: k, read, current } => {
                write!(f, "stale read of {:?} at {participant}: read version {read}, now {current}", key(k))
            }
            AbortReason::ConditionFailed { participant, key: k } => {
                write!(f, "condition on {:?} failed at {participant}", key(k))
            }
            AbortReason::ParticipantUnavailable { participant, detail } => {
                // The detail is often the participant's own `Unavailable` error.
                let detail = detail.strip_prefix("unavailable: ").unwrap_or(detail);
                write!(f, "participant {participant} unavailable: {detail}")
            }
            AbortReason::Refused { participant, detail } => write!(f, "refused by {participant}: {detail}"),
            // Also the answer to a prepare or one-phase commit sent again
            // after its first answer was lost (trial 18A: "aborted before
            // prepare" for a retried one-phase commit whose first attempt
            // had been refused).
            AbortReason::AbortedEarlier { participant } => write!(
                f,
                "already aborted at {participant} (an abort reached it first, or an earlier attempt of the \
                 same request was refused there, its answer lost)"
            ),
            AbortReason::ClientAborted => write!(f, "aborted by the application"),
            AbortReason::CoordinatorRestarted => {
                write!(f, "coordinator restarted or outcome already presumed")
            }
            AbortReason::NoDecisionLogged => {
                // Only a client asking after its commit call failed gets
                // it: say so (trial 22C read it as unexplained).
                write!(
                    f,
                    "no commit decision logged (presumed abort): the commit call got no answer (the coordinator \
                     stopped or restarted, or the connection broke) and the coordinator has no commit of it, so \
                     nothing was done"
                )
            }
            AbortReason::Expired { after_ms } => write!(
                f,
                "transaction expired: its id was minted more than {} s before its commit (by `begin`, or up \
                 to 20 s before it, as a client's spare), so the coordinator aborted it (begin a new one)",
                after_ms / 1000
            ),
        }
    }
}

/// A participant's vote.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Vote {
    Yes,
    No(AbortReason),
}

/// A transaction's final outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Committed,
    Aborted(AbortReason),
}

/// The answer to "what happened to txid?".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutcomeStatus {
    Committed,
    Aborted,
    /// Still collecting votes: ask again later.
    Pending,
}

/// What a participant knows of a transaction, answering a coordinator's probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeAnswer {
    /// Applied here (one-phase or second phase).
    Committed,
    /// Aborted here, or never seen and now fenced.
    Aborted,
    /// Prepared in two-phase commit and waiting for the decision; its
    /// prepared record names every participant of the transaction, so a
    /// coordinator need not wait for the others (trial 26A: a participant
    /// that never took part, down, kept a presumed abort pending).
    Prepared { participants: Vec<NodeId> },
    /// A request for it is being processed right now.
    InFlight,
    /// Not remembered, and it may have been decided here: its decision
    /// was dropped with older ones (see `twopc_participant::forgotten`).
    Forgotten,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceError;

    #[test]
    fn a_participant_reporting_an_outage_aborts_retryably_and_a_refusal_finally() {
        let p1 = NodeId::new("p1").unwrap();
        let stopping = ServiceError::Unavailable("participant is stopping".into());
        let reason = AbortReason::from_participant_error(p1.clone(), &stopping);
        assert!(matches!(reason, AbortReason::ParticipantUnavailable { .. }) && reason.is_transient(), "{reason:?}");
        assert_eq!(reason.to_string(), "participant p1 unavailable: participant is stopping", "said once");
        let overloaded = ServiceError::Overloaded("too many prepares in flight".into());
        assert!(AbortReason::from_participant_error(p1.clone(), &overloaded).is_transient());
        for final_error in [ServiceError::ConfigMismatch("ring differs".into()), ServiceError::Storage("eio".into())] {
            let reason = AbortReason::from_participant_error(p1.clone(), &final_error);
            assert!(matches!(reason, AbortReason::Refused { .. }) && !reason.is_transient(), "{reason:?}");
        }
    }

    #[test]
    fn another_process_at_a_participants_address_is_not_retryable() {
        let p1 = NodeId::new("p1").unwrap();
        let wrong = "127.0.0.1:7472 is participant p2, not p1: the cluster file's address for p1 is wrong";
        let reason = AbortReason::ParticipantUnavailable { participant: p1.clone(), detail: wrong.into() };
        assert!(!reason.is_transient());
        assert!(!ServiceError::Unavailable(format!("participant p1: {wrong}")).is_transient());
        let down = "cannot connect to 127.0.0.1:7471: Connection refused (os error 111)";
        assert!(AbortReason::ParticipantUnavailable { participant: p1, detail: down.into() }.is_transient());
        assert!(ServiceError::Unavailable(down.into()).is_transient());
    }

    #[test]
    fn a_transaction_over_the_size_limit_is_refused_with_advice() {
        let mib = vec![7u8; MAX_VALUE_BYTES];
        let writes = |n: usize| (0..n).map(|i| (format!("k{i}").into_bytes(), Some(mib.clone()))).collect();
        let fits = TxnOps { writes: writes(MAX_TXN_BYTES / MAX_VALUE_BYTES - 1), ..TxnOps::default() };
        assert_eq!(fits.validate(), Ok(()));
        let too_big = TxnOps { writes: writes(MAX_TXN_BYTES / MAX_VALUE_BYTES + 1), ..TxnOps::default() };
        let err = too_big.validate().unwrap_err();
        assert!(err.contains("exceeds the limit") && err.contains("split it"), "{err}");
    }

    #[test]
    fn a_read_of_too_many_keys_or_a_bad_key_is_refused() {
        let keys = |n: usize| (0..n).map(|i| format!("k{i}").into_bytes()).collect::<Vec<_>>();
        assert_eq!(check_read_keys(&keys(MAX_KEYS_PER_READ)), Ok(()));
        let err = check_read_keys(&keys(MAX_KEYS_PER_READ + 1)).unwrap_err();
        assert!(err.contains("per read") && err.contains("several calls"), "{err}");
        assert_eq!(check_read_keys(&[b"ok".to_vec(), Vec::new()]), Err("empty key".into()));
    }

    #[test]
    fn a_read_reply_over_the_limit_is_refused_with_advice() {
        assert_eq!(check_read_reply(3, MAX_READ_REPLY_BYTES), Ok(()));
        let err = check_read_reply(40, MAX_READ_REPLY_BYTES + 1).unwrap_err();
        assert!(err.contains("read of 40 keys") && err.contains("read fewer keys"), "{err}");
    }
}
