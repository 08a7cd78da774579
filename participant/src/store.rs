//! Committed key-value state, kept in the WAL's data space as
//! `key → bincode(Versioned)`.

use crate::record::ParticipantRecord;
use std::sync::atomic::{AtomicU64, Ordering};
use twopc_common::txn::check_read_reply;
use twopc_common::{Key, ServiceError, Versioned};
use twopc_wal::Wal;

pub type ParticipantWal = dyn Wal<ParticipantRecord>;

/// Reads of the committed state that failed in storage, in this process.
static STORAGE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// How many reads of the committed state failed in storage (damaged data
/// files, most often), for `admin status`.
pub fn storage_errors() -> u64 {
    STORAGE_ERRORS.load(Ordering::Relaxed)
}

/// The committed state of `key` (version 0, absent, if never written).
pub fn get(wal: &ParticipantWal, key: &[u8]) -> Result<Versioned, ServiceError> {
    let Some(bytes) = wal.get_data(key).map_err(|e| failed(key, e.to_string()))? else {
        return Ok(Versioned::default());
    };
    bincode::deserialize(&bytes).map_err(|e| failed(key, format!("undecodable value of key {key:?}: {e}")))
}

/// A read that failed in storage: counted, and logged (the 1st, 2nd, 4th,
/// 8th... time, so a damaged key read in a loop cannot flood the log).
/// The client gets the error; before, the server said nothing.
fn failed(key: &[u8], error: String) -> ServiceError {
    let failures = STORAGE_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
    if failures.is_power_of_two() {
        tracing::error!(
            key = %String::from_utf8_lossy(key),
            failures,
            %error,
            "reading committed data failed: its data files may be damaged (`twopc admin status` counts these)"
        );
    }
    ServiceError::Storage(error)
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

#[cfg(test)]
mod tests {
    use super::*;
    use twopc_wal::{mem::MemWal, Durability, WalBatch};

    #[test]
    fn a_read_that_fails_in_storage_is_counted_and_changes_nothing() {
        let wal = MemWal::<ParticipantRecord>::new();
        let mut batch = WalBatch::new();
        batch.data.push((b"good".to_vec(), Some(encode(&Versioned { version: 1, value: Some(b"v".to_vec()) }))));
        batch.data.push((b"damaged".to_vec(), Some(b"\xff".to_vec())));
        wal.write(batch, Durability::Sync).unwrap();
        let before = storage_errors();
        assert_eq!(get(&wal, b"good").unwrap().version, 1);
        let err = get(&wal, b"damaged").unwrap_err();
        assert!(matches!(err, ServiceError::Storage(_)), "{err}");
        assert!(storage_errors() > before, "the failed read was not counted");
        assert_eq!(get(&wal, b"good").unwrap().version, 1);
    }
}
