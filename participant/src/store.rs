//! Committed key-value state, kept in the WAL's data space as
//! `key → bincode(Versioned)`.

use crate::record::ParticipantRecord;
use twopc_common::txn::check_read_reply;
use twopc_common::{Key, ServiceError, Versioned};
use twopc_wal::Wal;

pub type ParticipantWal = dyn Wal<ParticipantRecord>;

/// The committed state of `key` (version 0, absent, if never written).
pub fn get(wal: &ParticipantWal, key: &[u8]) -> Result<Versioned, ServiceError> {
    let Some(bytes) = wal.get_data(key).map_err(|e| ServiceError::Storage(e.to_string()))? else {
        return Ok(Versioned::default());
    };
    bincode::deserialize(&bytes).map_err(|e| ServiceError::Storage(format!("undecodable value of key {key:?}: {e}")))
}

/// The committed states of `keys`, in order. Stops reading, with an
/// error, once the values pass the limit of one read's reply.
pub fn get_many(wal: &ParticipantWal, keys: &[Key]) -> Result<Vec<Versioned>, ServiceError> {
    let mut bytes = 0;
    let mut values = Vec::with_capacity(keys.len());
    for key in keys {
        let value = get(wal, key)?;
        bytes += value.value.as_ref().map_or(0, Vec::len);
        check_read_reply(keys.len(), bytes).map_err(ServiceError::Invalid)?;
        values.push(value);
    }
    Ok(values)
}

pub fn encode(value: &Versioned) -> Vec<u8> {
    bincode::serialize(value).expect("a Versioned always serialises")
}

/// Data-space writes for a commit.
pub fn data_writes(writes: &[(Key, Versioned)]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    writes.iter().map(|(k, v)| (k.clone(), Some(encode(v)))).collect()
}
