//! Record encoding shared by both WAL implementations.
//!
//! Every log record value and every data value is an envelope:
//! `[format version u8 = 1][crc32c of payload, u32 LE][payload]`.
//! Log payload = `bincode(R)`; data payload = raw bytes. Log keys are the
//! LSN as a big-endian `u64` (8 bytes), so byte order equals LSN order.
//! Decoding checks the version, the length and the checksum, in that order,
//! and reports any failure as [`WalError::Corrupt`].

use crate::{Lsn, WalError};
use serde::{de::DeserializeOwned, Serialize};

/// Current envelope format version.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the payload: version (1) + crc32c (4).
pub const HEADER_LEN: usize = 5;
/// Length of a log key.
pub const LSN_KEY_LEN: usize = 8;

/// Wrap `payload` in an envelope.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Check an envelope and return its payload; the error is the reason.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    let Some(&version) = bytes.first() else {
        return Err("empty value".to_string());
    };
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version} (expected {FORMAT_VERSION})"));
    }
    if bytes.len() < HEADER_LEN {
        return Err(format!("truncated envelope: {} bytes, header needs {HEADER_LEN}", bytes.len()));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[1..HEADER_LEN]);
    let stored = u32::from_le_bytes(crc);
    let payload = &bytes[HEADER_LEN..];
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"));
    }
    Ok(payload)
}

/// Serialize a log record and wrap it in an envelope.
pub fn encode_record<R: Serialize>(record: &R) -> Result<Vec<u8>, WalError> {
    let payload = bincode::serialize(record).map_err(|e| WalError::Encode(e.to_string()))?;
    Ok(seal(&payload))
}

/// Check and deserialize a log record; `location` names it in errors.
pub fn decode_record<R: DeserializeOwned>(bytes: &[u8], location: impl FnOnce() -> String) -> Result<R, WalError> {
    match unseal(bytes) {
        Ok(payload) => {
            bincode::deserialize(payload).map_err(|e| WalError::corrupt(location(), format!("undecodable record: {e}")))
        }
        Err(reason) => Err(WalError::corrupt(location(), reason)),
    }
}

/// Wrap a raw data value in an envelope.
pub fn encode_value(value: &[u8]) -> Vec<u8> {
    seal(value)
}

/// Check a data value envelope and return the raw value.
pub fn decode_value(bytes: &[u8], location: impl FnOnce() -> String) -> Result<Vec<u8>, WalError> {
    unseal(bytes).map(<[u8]>::to_vec).map_err(|reason| WalError::corrupt(location(), reason))
}

/// The log key of `lsn`.
pub fn lsn_key(lsn: Lsn) -> [u8; LSN_KEY_LEN] {
    lsn.to_be_bytes()
}

/// Parse a log key; a key of the wrong length is corrupt.
pub fn decode_lsn_key(key: &[u8], location: impl FnOnce() -> String) -> Result<Lsn, WalError> {
    let arr: [u8; LSN_KEY_LEN] = key.try_into().map_err(|_| {
        WalError::corrupt(
            location(),
            format!("log key has {} bytes, expected {LSN_KEY_LEN} (key {})", key.len(), hex(key)),
        )
    })?;
    Ok(Lsn::from_be_bytes(arr))
}

/// Lower-case hex rendering of (at most the first 64 bytes of) `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 + bytes.len().min(64) * 2);
    s.push_str("0x");
    for b in bytes.iter().take(64) {
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > 64 {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> String {
        "test log lsn 7".to_string()
    }

    #[test]
    fn record_roundtrip() {
        let rec = ("hello".to_string(), 42u64, vec![1u8, 2, 3]);
        let bytes = encode_record(&rec).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (String, u64, Vec<u8>) = decode_record(&bytes, loc).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn value_roundtrip_including_empty() {
        for v in [&b""[..], b"x", b"some longer value"] {
            let sealed = encode_value(v);
            assert_eq!(sealed.len(), HEADER_LEN + v.len());
            assert_eq!(decode_value(&sealed, loc).unwrap(), v);
        }
    }

    #[test]
    fn checksum_mismatch_is_corrupt() {
        let mut bytes = encode_record(&123u32).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let err = decode_record::<u32>(&bytes, loc).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("lsn 7") && msg.contains("checksum mismatch"), "{msg}");
    }

    #[test]
    fn unknown_version_is_corrupt() {
        let mut bytes = encode_value(b"abc");
        bytes[0] = 9;
        let msg = decode_value(&bytes, loc).unwrap_err().to_string();
        assert!(msg.contains("unknown format version 9"), "{msg}");
    }

    #[test]
    fn truncated_and_empty_are_corrupt() {
        assert!(matches!(decode_value(&[], loc), Err(WalError::Corrupt { .. })));
        assert!(matches!(decode_value(&[FORMAT_VERSION, 0, 0], loc), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn undecodable_payload_is_corrupt() {
        // Valid envelope, but 2 bytes cannot be a u64.
        let bytes = seal(&[1, 2]);
        let msg = decode_record::<u64>(&bytes, loc).unwrap_err().to_string();
        assert!(msg.contains("undecodable"), "{msg}");
    }

    #[test]
    fn lsn_keys_sort_like_lsns_and_check_length() {
        assert!(lsn_key(255) < lsn_key(256));
        assert_eq!(decode_lsn_key(&lsn_key(99), loc).unwrap(), 99);
        let msg = decode_lsn_key(&[1, 2, 3], loc).unwrap_err().to_string();
        assert!(msg.contains("expected 8"), "{msg}");
    }
}
