//! The WAL error type. All variants hold plain strings/integers so the
//! error is `Clone`: a failed group commit hands the same error to every
//! waiter of the group.

/// Errors returned by [`crate::Wal`] implementations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// A stored record or value is present but cannot be trusted.
    #[error("corrupt WAL record at {location}: {reason}")]
    Corrupt {
        /// Where: database path plus key space and LSN / key.
        location: String,
        /// What is wrong (checksum mismatch, unknown version, ...).
        reason: String,
    },
    /// A log that was created before is gone or incomplete (its directory,
    /// RocksDB's `CURRENT` file, or a write-ahead file it still needs
    /// missing); nothing was created in its place.
    #[error(
        "the write-ahead log at {location} was created before but is missing or incomplete ({reason}); \
         refusing to start with a new, empty log or without the missing records, which would silently lose \
         committed data and prepared \
         transactions. Restore the data directory from a backup; to give up this node's data for good, delete \
         the whole data directory"
    )]
    Missing {
        /// The log's directory.
        location: String,
        /// What RocksDB said.
        reason: String,
    },
    /// The log opened with fewer records than it had once synced (its
    /// synced mark says so): write-ahead files were deleted or truncated.
    #[error(
        "the write-ahead log at {location} lost records it had synced ({reason}); refusing to serve what is \
         left, which would silently lose committed data and prepared transactions. Restore the data directory \
         from a backup; if the loss is accepted (say, a backup restored on purpose), delete {mark} to start from \
         what is left"
    )]
    Shortened {
        /// The log's directory.
        location: String,
        /// How far it was synced, and where it ends now.
        reason: String,
        /// The mark file to delete to accept the loss.
        mark: String,
    },
    /// The storage engine failed (message includes the database path).
    #[error("WAL storage error: {0}")]
    Storage(String),
    /// The writer has stopped; the batch was not applied.
    #[error("WAL is closed")]
    Closed,
    /// A batch or a single key/value exceeds the configured maximum; nothing
    /// was written.
    #[error("WAL batch too large: {size} bytes (max {max})")]
    TooLarge {
        /// Offending size in bytes.
        size: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// A record could not be serialized; nothing was written.
    #[error("cannot encode WAL record: {0}")]
    Encode(String),
}

impl WalError {
    /// Shorthand for [`WalError::Corrupt`].
    pub fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Self {
        WalError::Corrupt { location: location.into(), reason: reason.into() }
    }
}
