//! Test support: raw access to a closed [`crate::RocksWal`] database.
//!
//! Integration tests (in this and other crates) use these helpers to inject
//! corrupted records and then check that replay reports them. They open the
//! database without the WAL machinery, so the WAL at `path` must not be open.
//! Not for production use.

use crate::record::lsn_key;
use crate::rocks::{cf, open_db, LOG_CF};
use crate::{Lsn, WalError};
use rocksdb::WriteOptions;
use std::path::Path;

/// Overwrite the raw (envelope) value of log record `lsn`, synchronously.
pub fn raw_log_put(path: &Path, lsn: Lsn, bytes: &[u8]) -> Result<(), WalError> {
    let location = path.display().to_string();
    let db = open_db(path, false)?;
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(cf(&db, LOG_CF, &location)?, lsn_key(lsn), bytes, &opts)
        .map_err(|e| WalError::Storage(format!("{location}: raw put failed: {e}")))
}

/// Read the raw (envelope) value of log record `lsn`.
pub fn raw_log_get(path: &Path, lsn: Lsn) -> Result<Option<Vec<u8>>, WalError> {
    let location = path.display().to_string();
    let db = open_db(path, false)?;
    db.get_cf(cf(&db, LOG_CF, &location)?, lsn_key(lsn))
        .map_err(|e| WalError::Storage(format!("{location}: raw get failed: {e}")))
}

/// Flip the last byte of log record `lsn` (a payload or checksum byte, so
/// the checksum no longer matches). Returns false if the record is absent.
pub fn corrupt_log_record(path: &Path, lsn: Lsn) -> Result<bool, WalError> {
    let Some(mut bytes) = raw_log_get(path, lsn)? else {
        return Ok(false);
    };
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    } else {
        bytes.push(0xff);
    }
    raw_log_put(path, lsn, &bytes)?;
    Ok(true)
}

/// The lowest LSN in the log, if any record exists.
pub fn first_log_lsn(path: &Path) -> Result<Option<Lsn>, WalError> {
    let location = path.display().to_string();
    let db = open_db(path, false)?;
    let mut iter = db.iterator_cf(cf(&db, LOG_CF, &location)?, rocksdb::IteratorMode::Start);
    match iter.next() {
        None => Ok(None),
        Some(Err(e)) => Err(WalError::Storage(format!("{location}: raw scan failed: {e}"))),
        Some(Ok((key, _))) => crate::record::decode_lsn_key(&key, || location.clone()).map(Some),
    }
}
