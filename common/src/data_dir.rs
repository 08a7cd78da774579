//! A server's data directory names its owner (`OWNER`: role and id,
//! written and synced at the first start), so that a node started on
//! another node's directory (directories swapped, a wrong `--data-dir`)
//! refuses to start instead of serving that node's data as its own; a
//! participant's directory also names the ring its data was written under
//! (`RING`); where in it the write-ahead log lives, and whether that log
//! was created (`LOG_CREATED`), so that a log lost later (its directory
//! removed, RocksDB's `CURRENT` file deleted) is refused at start instead
//! of being replaced by an empty one.

use crate::ring::Ring;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file, inside the data directory, that names its owner.
pub const OWNER_FILE: &str = "OWNER";
/// The write-ahead log's directory inside the data directory: a node has
/// data once it exists.
pub const WAL_DIR: &str = "wal";

/// The file, inside the data directory, that says its write-ahead log
/// was created: from then on the log must exist.
pub const LOG_CREATED_FILE: &str = "LOG_CREATED";

/// Claims `dir` for `role` `id`: writes the owner file if there is none
/// (a new directory, or one from before owner files), else checks it.
/// The error says whose directory it is.
pub fn claim(dir: &Path, role: &str, id: &str) -> Result<(), String> {
    // A directory holding a log but no owner file cannot say whose it is:
    // adopted, it let p2 start on p1's data (the owner file deleted) and
    // serve p2's keys as absent (trial 15).
    let has_log = dir.join(LOG_CREATED_FILE).exists() || dir.join(WAL_DIR).exists();
    if has_log && !dir.join(OWNER_FILE).exists() {
        return Err(format!(
            "{} holds a twopc log but no {OWNER_FILE} file, so whose data it is cannot be checked. If it is \
             {role} {id}'s, write \"twopc {role} {id}\" into {} and start again; otherwise give {id} its own \
             --data-dir",
            dir.display(),
            dir.join(OWNER_FILE).display(),
        ));
    }
    claim_file(dir, OWNER_FILE, &format!("twopc {role} {id}\n"), |found| {
        let owner = found.trim().strip_prefix("twopc ").filter(|o| o.split(' ').count() == 2);
        match owner {
            Some(owner) => format!(
                "{} belongs to {owner}, not to {role} {id}: started on it, this node would serve another node's \
                 data as its own. Give it its own --data-dir",
                dir.display(),
            ),
            None => format!(
                "{} is damaged: it holds {:?}, not the owner of {} (\"twopc ROLE ID\"). If this is {role} \
                 {id}'s data directory, write \"twopc {role} {id}\" into it and start again; otherwise give \
                 {id} its own --data-dir",
                dir.join(OWNER_FILE).display(),
                excerpt(found),
                dir.display(),
            ),
        }
    })
}

/// Writes `wanted` into `dir/name` if there is no such file, else checks
/// that it holds `wanted`; `refuse` words the error from what it holds.
fn claim_file(dir: &Path, name: &str, wanted: &str, refuse: impl FnOnce(&str) -> String) -> Result<(), String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == wanted => Ok(()),
        Ok(found) => Err(refuse(&found)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_synced(dir, &path, wanted).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Where a server's log lives in its data directory.
pub struct LogPaths {
    /// The log's own directory (`WAL_DIR`).
    pub wal: PathBuf,
    /// The marker written once the log exists (`LOG_CREATED_FILE`).
    pub created: PathBuf,
}

/// Readies `dir` for `role` `id` at start, in the order every server keeps:
/// without `init`, a directory holding no log (`has_log`, asked of the
/// log's paths) is refused before anything is written there; then `dir` is
/// created if missing and claimed for its owner. The caller binds its port
/// first, so that a busy port leaves nothing behind either.
pub fn ready(
    dir: &Path,
    role: &str,
    id: &str,
    init: bool,
    has_log: impl FnOnce(&LogPaths) -> bool,
) -> Result<LogPaths, String> {
    let paths = LogPaths { wal: dir.join(WAL_DIR), created: dir.join(LOG_CREATED_FILE) };
    if !init && !has_log(&paths) {
        return Err(no_log_without_init(dir, role, id));
    }
    create(dir).map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    claim(dir, role, id)?;
    Ok(paths)
}

/// Why a server started without `--init` refuses `dir`, which holds no
/// log: starting would begin a new, empty one (a mistyped `--data-dir`
/// once started an empty participant that served its committed keys as
/// absent and took writes over them).
fn no_log_without_init(dir: &Path, role: &str, id: &str) -> String {
    format!(
        "{} holds no twopc log: starting {role} {id} there would begin a new, empty one{}. If this is {id}'s \
         first start (or its data is given up for good), start it once with --init; otherwise give the \
         --data-dir that holds its log",
        dir.display(),
        if role == "participant" { " and serve its keys as absent" } else { "" },
    )
}

/// Creates `dir` (and its parents) if missing; a file in its place is an
/// error saying so (`create_dir_all` said only "File exists").
fn create(dir: &Path) -> std::io::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(std::io::Error::other("it exists and is not a directory"));
    }
    std::fs::create_dir_all(dir)
}

/// The file, inside a data directory, that holds the id of the data there.
pub const DATA_ID_FILE: &str = "DATA_ID";

/// The id of the data in `dir`, which its server gives in `hello`: made
/// anew (random) when its log is about to be created (`new_log`; before
/// the log, so that a crash between the two leaves no old id beside a new
/// log); else read. A node whose data was lost and begun anew has another
/// id, and a coordinator that worked with its old data refuses it.
///
/// A log without an id: a participant's (`checked_by_coordinators`) is
/// refused, since coordinators know its old id and a new one would lock it
/// out of the cluster with an error saying its data was lost (a trial
/// deleted the file); a coordinator's, whose id nobody checks, is made
/// anew.
pub fn data_id(dir: &Path, new_log: bool, checked_by_coordinators: bool) -> Result<String, String> {
    let path = dir.join(DATA_ID_FILE);
    if !new_log && checked_by_coordinators && !path.exists() {
        return Err(format!(
            "{} holds a twopc log but no {DATA_ID_FILE} file. {RESTORE_DATA_ID} into {} and start again. Only if \
             no coordinator ever worked with this data, write any 32 lowercase hex digits there",
            dir.display(),
            path.display(),
        ));
    }
    if !new_log {
        match std::fs::read_to_string(&path) {
            Ok(found) if is_data_id(found.trim()) => return Ok(found.trim().to_string()),
            Ok(found) => {
                let fix = if checked_by_coordinators {
                    format!("{RESTORE_DATA_ID} in its place")
                } else {
                    "Remove it and start again: a new id is made".to_string()
                };
                return Err(format!(
                    "{} is damaged: it holds {:?}, not a data id (32 lowercase hex digits). {fix}",
                    path.display(),
                    excerpt(&found),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    write_synced(dir, &path, &format!("{id}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(id)
}

/// How a participant's lost or damaged data id is restored.
const RESTORE_DATA_ID: &str = "Coordinators that worked with this data know its id: copy the 32 lowercase hex \
     digits that follow this participant's id on its line of a coordinator's PARTICIPANT_DATA file (the id \
     alone)";

/// Whether `text` is a data id: 32 lowercase hex digits.
pub fn is_data_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The file, inside a participant's or coordinator's data directory, that
/// names the ring (the participant list) its data was written under.
pub const RING_FILE: &str = "RING";

/// Claims `dir` for `ring`: writes the ring file if there is none, else
/// checks it. Keys are routed by the ring and twopc does not move data
/// between participants, so a participant restarted under another
/// participant list (one added or removed from the cluster file) would
/// serve its committed keys as absent: it refuses to start instead. A
/// coordinator refuses too, so that a participant added alone is not
/// served keys that another participant holds.
pub fn claim_ring(dir: &Path, ring: &Ring) -> Result<(), String> {
    let nodes: Vec<String> = ring.nodes().iter().map(ToString::to_string).collect();
    let wanted = format!("{:#x} {}\n", ring.fingerprint(), nodes.join(","));
    if written_in_another_order(dir, ring) {
        let path = dir.join(RING_FILE);
        write_synced(dir, &path, &wanted).map_err(|e| format!("cannot rewrite {}: {e}", path.display()))?;
    }
    claim_file(dir, RING_FILE, &wanted, |found| {
        let Some(old_nodes) = ring_file_nodes(found) else {
            return format!(
                "{} is damaged: it holds {:?}, not the participants {}'s data was written under. If they \
                 are the cluster file's ({}, vnodes = {}), remove the file and start again (it is rewritten); \
                 otherwise restore it from a backup",
                dir.join(RING_FILE).display(),
                excerpt(found),
                dir.display(),
                nodes.join(","),
                ring.vnodes(),
            );
        };
        let now = if old_nodes == nodes.join(",") {
            format!("the same participants with vnodes = {}, so the vnodes differ", ring.vnodes())
        } else {
            format!("{} (vnodes = {})", nodes.join(","), ring.vnodes())
        };
        format!(
            "{} holds data written when the participants were {old_nodes}; the cluster file now lists {now}. \
             twopc does not move data between participants: keys would be routed elsewhere and committed \
             data would seem absent. Restore the cluster file's participants and vnodes, or start a new \
             cluster in new directories",
            dir.display(),
        )
    })
}

/// The start of a damaged file's text, for an error message.
fn excerpt(found: &str) -> String {
    found.chars().take(60).collect()
}

/// The participant list a ring file names ("FINGERPRINT P1,P2,..."), if
/// it is one.
fn ring_file_nodes(found: &str) -> Option<&str> {
    let (fingerprint, nodes) = found.trim().split_once(' ')?;
    let valid = fingerprint.starts_with("0x") && nodes.split(',').all(|n| crate::NodeId::new(n).is_ok());
    valid.then_some(nodes)
}

/// Whether `dir`'s ring file names `ring` as releases before sorting the
/// participants wrote it: the same participants and vnodes, in the cluster
/// file's order then, fingerprinted in that order.
fn written_in_another_order(dir: &Path, ring: &Ring) -> bool {
    let Ok(found) = std::fs::read_to_string(dir.join(RING_FILE)) else {
        return false;
    };
    let Some((fingerprint, listed)) = found.trim().split_once(' ') else {
        return false;
    };
    let Ok(listed) = listed.split(',').map(crate::NodeId::new).collect::<Result<Vec<_>, _>>() else {
        return false;
    };
    let mut sorted = listed.clone();
    sorted.sort();
    let legacy = crate::ring::fingerprint_of(&listed, ring.vnodes());
    sorted != listed && sorted == ring.nodes() && fingerprint == format!("{legacy:#x}")
}

/// Writes `text` to `path` (in `dir`) durably: a temp file, synced,
/// renamed, and the directory synced. A crash leaves the old file or the
/// new one, never an empty one.
pub fn write_synced(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    write_synced_with_mode(dir, path, text, 0o666)
}

/// [`write_synced`] for a file holding a secret (a cluster file with its
/// admin token): readable and writable by its owner only.
pub fn write_synced_private(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    write_synced_with_mode(dir, path, text, 0o600)
}

fn write_synced_with_mode(dir: &Path, path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let temp = std::path::PathBuf::from(temp);
    // A leftover of a crash keeps its mode if opened: created anew.
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_id_lasts_as_long_as_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let first = data_id(dir.path(), true, true).unwrap();
        assert!(is_data_id(&first), "{first}");
        assert_eq!(data_id(dir.path(), false, true).unwrap(), first, "read again at the next start");
        let begun_anew = data_id(dir.path(), true, true).unwrap();
        assert_ne!(begun_anew, first, "a new log has a new id");
        std::fs::remove_file(dir.path().join(DATA_ID_FILE)).unwrap();
        let lost = data_id(dir.path(), false, true).unwrap_err();
        assert!(lost.contains("no DATA_ID file") && lost.contains("PARTICIPANT_DATA"), "{lost}");
        let made = data_id(dir.path(), false, false).unwrap();
        assert!(is_data_id(&made) && made != begun_anew, "a coordinator's, which nobody checks, is made anew");
        assert_eq!(data_id(dir.path(), false, true).unwrap(), made);
        std::fs::write(dir.path().join(DATA_ID_FILE), "not an id\n").unwrap();
        assert!(data_id(dir.path(), false, true).unwrap_err().contains("is damaged"));
    }

    #[test]
    fn a_directory_serves_only_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), "participant", "p2").unwrap();
        claim(dir.path(), "participant", "p2").expect("its owner again");
        let other = claim(dir.path(), "participant", "p3").unwrap_err();
        assert!(other.contains("belongs to participant p2, not to participant p3"), "{other}");
        assert!(claim(dir.path(), "coordinator", "p2").is_err(), "another role");
    }

    #[test]
    fn a_participant_keeps_the_ring_its_data_was_written_under() {
        use crate::NodeId;
        let ring = |ids: &[&str]| Ring::new(&ids.iter().map(|i| NodeId::new(i).unwrap()).collect::<Vec<_>>(), 64);
        let dir = tempfile::tempdir().unwrap();
        claim_ring(dir.path(), &ring(&["p1", "p2", "p3"])).unwrap();
        claim_ring(dir.path(), &ring(&["p1", "p2", "p3"])).expect("the same ring again");
        let fewer = claim_ring(dir.path(), &ring(&["p1", "p2"])).unwrap_err();
        assert!(fewer.contains("participants were p1,p2,p3") && fewer.contains("now lists p1,p2"), "{fewer}");
        claim_ring(dir.path(), &ring(&["p3", "p1", "p2"])).expect("the same participants in another order");
        std::fs::write(dir.path().join(RING_FILE), "\0\0garbage").unwrap();
        let damaged = claim_ring(dir.path(), &ring(&["p1", "p2", "p3"])).unwrap_err();
        assert!(damaged.contains("is damaged") && damaged.contains("are the cluster file's (p1,p2,p3"), "{damaged}");
    }

    #[test]
    fn a_log_without_an_owner_file_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), "participant", "p1").unwrap();
        std::fs::create_dir(dir.path().join(WAL_DIR)).unwrap();
        std::fs::remove_file(dir.path().join(OWNER_FILE)).unwrap();
        let refused = claim(dir.path(), "participant", "p2").unwrap_err();
        assert!(refused.contains("no OWNER file") && refused.contains("write \"twopc participant p2\""), "{refused}");
        std::fs::write(dir.path().join(OWNER_FILE), "twopc participant p1\n").unwrap();
        claim(dir.path(), "participant", "p1").expect("its owner, named again");
    }

    #[test]
    fn a_damaged_owner_file_is_called_damaged_not_someone_elses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OWNER_FILE), "").unwrap();
        let damaged = claim(dir.path(), "participant", "p2").unwrap_err();
        assert!(damaged.contains("is damaged") && damaged.contains("write \"twopc participant p2\""), "{damaged}");
    }

    #[test]
    fn a_ring_file_written_in_the_cluster_files_order_is_still_claimed() {
        use crate::{ring::fingerprint_of, NodeId};
        let ids = |ids: &[&str]| ids.iter().map(|i| NodeId::new(i).unwrap()).collect::<Vec<_>>();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RING_FILE);
        // As releases before sorting wrote it for a file listing p2, p1, p3.
        let legacy = format!("{:#x} p2,p1,p3\n", fingerprint_of(&ids(&["p2", "p1", "p3"]), 64));
        std::fs::write(&path, &legacy).unwrap();
        let wrong_vnodes = claim_ring(dir.path(), &Ring::new(&ids(&["p2", "p1", "p3"]), 32)).unwrap_err();
        assert!(wrong_vnodes.contains("vnodes = 32"), "{wrong_vnodes}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), legacy, "a refused claim rewrote the file");
        claim_ring(dir.path(), &Ring::new(&ids(&["p1", "p3", "p2"]), 64)).expect("the same ring, listed anew");
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(now.ends_with(" p1,p2,p3\n"), "{now}");
        claim_ring(dir.path(), &Ring::new(&ids(&["p1", "p2", "p3"]), 64)).expect("and again");
        assert!(claim_ring(dir.path(), &Ring::new(&ids(&["p1", "p2"]), 64)).is_err());
    }
}
