//! The log's directory as it was opened. Files deleted while open stay
//! writable, so a server whose data directory was removed (or replaced by
//! a new one) under it would go on syncing and acknowledging writes that
//! live only in deleted files, lost at its next start (trial 6: 20
//! commits acknowledged after `rm -rf` of a participant's directory). A
//! synced write checks the directory first and fails if it is gone.

use crate::WalError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirIdentity {
    path: PathBuf,
    /// Device and inode of the directory when opened.
    id: (u64, u64),
}

impl DirIdentity {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(DirIdentity { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) })
    }

    /// `Err` if the directory is gone or is not the one opened (one `stat`).
    pub fn check(&self) -> Result<(), WalError> {
        let what = match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => return Ok(()),
            Ok(_) => "was replaced by another directory",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was removed",
            Err(_) => "cannot be checked",
        };
        Err(WalError::Storage(format!(
            "{}: the log's directory {what} while it was open; writes since would live only in deleted files, \
             so none is acknowledged",
            self.path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_directory_is_noticed() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("wal");
        std::fs::create_dir(&dir).unwrap();
        let identity = DirIdentity::of(&dir).unwrap();
        identity.check().unwrap();
        // Moved aside (so its inode stays taken) and replaced by a new one.
        std::fs::rename(&dir, parent.path().join("old")).unwrap();
        assert!(identity.check().unwrap_err().to_string().contains("was removed"));
        std::fs::create_dir(&dir).unwrap();
        let replaced = identity.check().unwrap_err().to_string();
        assert!(replaced.contains("was replaced"), "{replaced}");
    }
}
