//! The data ids of the participants this coordinator has worked with
//! (`PARTICIPANT_DATA` in its data directory, one `ID DATA_ID` line each,
//! written and synced at the first connection to each). A participant
//! whose data was lost and begun anew (`--init` on an empty directory, or
//! a second process started as p2 with a new directory where the cluster
//! file now points) answers `hello` with another data id: it would serve
//! the keys committed at the old p2 as absent and take `expect-absent`
//! writes over them (trial 20B), so its connections are refused, naming
//! both ids and what the operator can do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use twopc_common::data_dir::{is_data_id, write_synced};
use twopc_common::node::LogThrottle;
use twopc_common::service::Hello;

/// The file, in a coordinator's data directory, that it keeps them in.
pub const PARTICIPANT_DATA_FILE: &str = "PARTICIPANT_DATA";

/// Participant id → the data id first seen from it.
pub(crate) struct ParticipantData {
    dir: PathBuf,
    known: Mutex<BTreeMap<String, String>>,
    /// Connections refused so far (logged at the 1st, 2nd, 4th, 8th…).
    refused: LogThrottle,
    /// Why each participant refused now is (its latest connection was).
    refusing: Mutex<BTreeMap<String, String>>,
}

impl ParticipantData {
    /// Reads the file in `dir` (none yet: nothing known).
    pub(crate) fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(PARTICIPANT_DATA_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut known = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = line.split_once(' ').filter(|(id, data)| !id.is_empty() && is_data_id(data));
            let Some((id, data)) = parsed else {
                return Err(format!(
                    "{} is damaged: {line:?} is not \"PARTICIPANT DATA_ID\". Remove that line (or the file) and \
                     start again: the participant's data id is then taken from it afresh",
                    path.display()
                ));
            };
            known.insert(id.to_string(), data.to_string());
        }
        Ok(ParticipantData {
            dir: dir.to_path_buf(),
            known: Mutex::new(known),
            refused: LogThrottle::new(),
            refusing: Mutex::default(),
        })
    }

    /// Accepts `hello` from the participant at `addr` if its data is the
    /// one known, or none is known yet (then recorded, synced, first).
    pub(crate) fn check(&self, addr: &str, hello: &Hello) -> Result<(), String> {
        // Recorded as given, a malformed one would make the file
        // unreadable at the next start.
        if !is_data_id(&hello.data_id) {
            return Err(format!(
                "{addr} answered as participant {} with a malformed data id {:?} (not a twopc participant of this \
                 release?)",
                hello.id,
                hello.data_id.chars().take(40).collect::<String>()
            ));
        }
        let mut known = self.known.lock().expect("lock");
        match known.get(&hello.id) {
            Some(data) if *data == hello.data_id => {
                self.refusing.lock().expect("lock").remove(&hello.id);
                Ok(())
            }
            Some(data) => {
                let why = format!(
                    "{addr} is participant {id}, but its data is not the data this coordinator worked with as {id} \
                 (data id {now}, not {data}): it was begun anew (--init on an empty or another directory), or \
                 this coordinator's cluster file points {id} at another process than the one holding its data, \
                 so keys committed at {id} would seem absent. Start the {id} that holds its data, or correct the \
                 cluster file; only if that data is lost for good and this {id} takes its place, save `twopc \
                 admin in-doubt` (transactions in doubt at the old {id} lose their writes there), remove the \
                 line \"{id} {data}\" from {path} and restart this coordinator",
                    id = hello.id,
                    now = hello.data_id,
                    path = self.dir.join(PARTICIPANT_DATA_FILE).display(),
                );
                if let Some(refused) = self.refused.event() {
                    tracing::error!(participant = %hello.id, %addr, refused, "{why}");
                }
                self.refusing.lock().expect("lock").insert(hello.id.clone(), why.clone());
                Err(why)
            }
            None => {
                known.insert(hello.id.clone(), hello.data_id.clone());
                let text: String = known.iter().map(|(id, data)| format!("{id} {data}\n")).collect();
                let path = self.dir.join(PARTICIPANT_DATA_FILE);
                write_synced(&self.dir, &path, &text).map_err(|e| {
                    known.remove(&hello.id);
                    format!("cannot record {}'s data id in {}: {e}", hello.id, path.display())
                })?;
                tracing::info!(participant = %hello.id, data_id = %hello.data_id, "participant's data id recorded");
                Ok(())
            }
        }
    }
}

impl ParticipantData {
    /// The participants refused now, each as "ID: why" (`twopc admin
    /// status` shows them: the coordinator's log and its clients' errors
    /// were the only place it was said, trial 21C).
    pub(crate) fn refused(&self) -> Vec<String> {
        self.refusing.lock().expect("lock").iter().map(|(id, why)| format!("{id}: {why}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twopc_common::service::Role;

    fn hello(id: &str, data: char) -> Hello {
        Hello { role: Role::Participant, id: id.into(), data_id: data.to_string().repeat(32) }
    }

    #[test]
    fn a_participant_whose_data_was_begun_anew_is_refused_until_its_line_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let data = ParticipantData::load(dir.path()).unwrap();
        data.check("a:1", &hello("p1", 'a')).unwrap();
        data.check("a:2", &hello("p2", 'b')).unwrap();
        data.check("moved:1", &hello("p1", 'a')).expect("the same data at another address");
        let mut odd = hello("p3", 'a');
        odd.data_id = "x\ny".into();
        assert!(data.check("a:3", &odd).unwrap_err().contains("malformed"), "not recorded");
        // Kept across restarts.
        let data = ParticipantData::load(dir.path()).unwrap();
        let refused = data.check("a:2", &hello("p2", 'c')).unwrap_err();
        assert!(refused.contains("begun anew") && refused.contains(&"b".repeat(32)), "{refused}");
        assert_eq!(data.refused(), vec![format!("p2: {refused}")]);
        data.check("a:2", &hello("p2", 'b')).expect("the right p2 is back");
        assert!(data.refused().is_empty());
        let _ = data.check("a:2", &hello("p2", 'c'));
        // The operator removes p2's line: the new data is taken.
        let file = dir.path().join(PARTICIPANT_DATA_FILE);
        let kept: String = std::fs::read_to_string(&file).unwrap().lines().filter(|l| l.starts_with("p1 ")).collect();
        std::fs::write(&file, format!("{kept}\n")).unwrap();
        let data = ParticipantData::load(dir.path()).unwrap();
        data.check("a:2", &hello("p2", 'c')).unwrap();
        data.check("a:1", &hello("p1", 'a')).unwrap();
        std::fs::write(&file, "p1\n").unwrap();
        assert!(ParticipantData::load(dir.path()).err().unwrap().contains("is damaged"));
    }
}
