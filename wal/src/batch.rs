//! [`WalBatch`], the unit of atomicity, and its validated, encoded form
//! shared by both implementations.

use crate::record::{encode_record, encode_value, LSN_KEY_LEN};
use crate::{Lsn, WalError};
use serde::Serialize;

/// Maximum encoded size of one batch (records, keys and values).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Maximum size of one serialized record, data key or data value.
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// One atomic change: new log records, removed log records and data writes.
#[derive(Debug, Clone)]
pub struct WalBatch<R> {
    /// New records; they get consecutive LSNs in this order.
    pub append: Vec<R>,
    /// Delete finished records (compaction). Unknown LSNs are ignored.
    pub remove: Vec<Lsn>,
    /// Delete every record with lsn < this (range delete).
    pub remove_below: Option<Lsn>,
    /// Data space writes: `Some` = put, `None` = delete.
    pub data: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl<R> WalBatch<R> {
    /// An empty batch.
    pub fn new() -> Self {
        WalBatch { append: Vec::new(), remove: Vec::new(), remove_below: None, data: Vec::new() }
    }

    /// True if the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.append.is_empty() && self.remove.is_empty() && self.remove_below.is_none() && self.data.is_empty()
    }
}

impl<R> Default for WalBatch<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// A validated batch with every record and data value already sealed in
/// its envelope; independent of `R`.
#[derive(Debug, Clone, Default)]
pub(crate) struct EncodedBatch {
    pub append: Vec<Vec<u8>>,
    pub remove: Vec<Lsn>,
    pub remove_below: Option<Lsn>,
    pub data: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Approximate bytes this batch adds to a storage write.
    pub size: usize,
}

fn check_item(len: usize) -> Result<(), WalError> {
    if len > MAX_VALUE_BYTES {
        return Err(WalError::TooLarge { size: len, max: MAX_VALUE_BYTES });
    }
    Ok(())
}

impl EncodedBatch {
    /// Serialize and validate `batch` against the size limits.
    pub fn encode<R: Serialize>(batch: WalBatch<R>) -> Result<Self, WalError> {
        let mut size = batch.remove.len() * LSN_KEY_LEN;
        if batch.remove_below.is_some() {
            size += 2 * LSN_KEY_LEN;
        }
        // Check raw sizes first so an oversized value is never copied.
        for (key, value) in &batch.data {
            check_item(key.len())?;
            check_item(value.as_ref().map_or(0, Vec::len))?;
        }
        let mut append = Vec::with_capacity(batch.append.len());
        for record in &batch.append {
            let sealed = encode_record(record)?;
            check_item(sealed.len() - crate::record::HEADER_LEN)?;
            size += LSN_KEY_LEN + sealed.len();
            append.push(sealed);
        }
        for (key, value) in &batch.data {
            size += key.len() + value.as_ref().map_or(0, |v| v.len() + crate::record::HEADER_LEN);
        }
        if size > MAX_BATCH_BYTES {
            return Err(WalError::TooLarge { size, max: MAX_BATCH_BYTES });
        }
        let data = batch.data.into_iter().map(|(key, value)| (key, value.map(|v| encode_value(&v)))).collect();
        Ok(EncodedBatch { append, remove: batch.remove, remove_below: batch.remove_below, data, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_default() {
        let b: WalBatch<u32> = WalBatch::default();
        assert!(b.is_empty());
        let mut b2 = WalBatch::<u32>::new();
        b2.remove_below = Some(3);
        assert!(!b2.is_empty());
    }

    #[test]
    fn oversized_value_rejected() {
        let mut b = WalBatch::<u32>::new();
        b.data.push((b"k".to_vec(), Some(vec![0; MAX_VALUE_BYTES + 1])));
        let err = EncodedBatch::encode(b).unwrap_err();
        assert_eq!(err, WalError::TooLarge { size: MAX_VALUE_BYTES + 1, max: MAX_VALUE_BYTES });
    }

    #[test]
    fn oversized_batch_rejected() {
        let mut b = WalBatch::<u32>::new();
        for i in 0..5u8 {
            b.data.push((vec![i], Some(vec![0; MAX_VALUE_BYTES])));
        }
        let err = EncodedBatch::encode(b).unwrap_err();
        assert!(matches!(err, WalError::TooLarge { max, .. } if max == MAX_BATCH_BYTES), "{err}");
    }
}
