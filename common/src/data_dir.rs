//! A server's data directory names its owner (`OWNER`: role and id,
//! written and synced at the first start), so that a node started on
//! another node's directory (directories swapped, a wrong `--data-dir`)
//! refuses to start instead of serving that node's data as its own; and
//! where in it the write-ahead log lives.

use std::io::Write;
use std::path::Path;

/// The file, inside the data directory, that names its owner.
pub const OWNER_FILE: &str = "OWNER";
/// The write-ahead log's directory inside the data directory: a node has
/// data once it exists.
pub const WAL_DIR: &str = "wal";

/// Claims `dir` for `role` `id`: writes the owner file if there is none
/// (a new directory, or one from before owner files), else checks it.
/// The error says whose directory it is.
pub fn claim(dir: &Path, role: &str, id: &str) -> Result<(), String> {
    let path = dir.join(OWNER_FILE);
    let wanted = format!("twopc {role} {id}\n");
    match std::fs::read_to_string(&path) {
        Ok(found) if found == wanted => Ok(()),
        Ok(found) => Err(format!(
            "{} belongs to {}, not to {role} {id}: started on it, this node would serve another node's data \
             as its own. Give it its own --data-dir",
            dir.display(),
            found.trim().strip_prefix("twopc ").unwrap_or(found.trim()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_synced(dir, &path, &wanted).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `text` to `path` durably: a temp file, synced, renamed, and the
/// directory synced.
fn write_synced(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    let temp = dir.join(format!("{OWNER_FILE}.new"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_serves_only_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), "participant", "p2").unwrap();
        claim(dir.path(), "participant", "p2").expect("its owner again");
        let other = claim(dir.path(), "participant", "p3").unwrap_err();
        assert!(other.contains("belongs to participant p2, not to participant p3"), "{other}");
        assert!(claim(dir.path(), "coordinator", "p2").is_err(), "another role");
    }
}
