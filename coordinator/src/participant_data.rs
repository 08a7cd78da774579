//! The data ids of the participants this coordinator has worked with
//! (`PARTICIPANT_DATA` in its data directory, one `ID DATA_ID` line each,
//! written and synced at the first connection to each). A participant
//! whose data was lost and begun anew (`--init` on an empty directory, or
//! a second process started as p2 with a new directory where the cluster
//! file now points) answers `hello` with another data id: it would serve
//! the keys committed at the old p2 as absent and take `expect-absent`
//! writes over them (trial 20B), so its connections are refused, naming
//! both ids and what the operator can do.
//!
//! A participant's `hello` also names the ring it routes keys by. One
//! whose cluster file lists other participants (or vnodes) is refused,
//! and its data id is not recorded. While some participant has never
//! answered with this coordinator's ring since its data was created, the
//! coordinator serves no read or commit at all
//! ([`ParticipantData::ring_refusal`]): a new coordinator and a new p3
//! started together from a file that added p3 agreed with each other, and
//! served keys that p2 held as absent at p3 (trial 22C); the old
//! participants' own checks saw only keys they still owned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use twopc_common::data_dir::{is_data_id, write_synced};
use twopc_common::node::LogThrottle;
use twopc_common::ring::Ring;
use twopc_common::service::Hello;
use twopc_common::{NodeId, ServiceError};

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
    /// This coordinator's ring: its fingerprint, and in words.
    ring: u64,
    ring_described: String,
    /// Why each participant whose latest `hello` named another ring is
    /// refused.
    other_ring: Mutex<BTreeMap<String, String>>,
}

impl ParticipantData {
    /// Reads the file in `dir` (none yet: nothing known), for a
    /// coordinator routing keys by `ring`.
    pub(crate) fn load(dir: &Path, ring: &Ring) -> Result<Self, String> {
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
            ring: ring.fingerprint(),
            ring_described: ring.describe(),
            other_ring: Mutex::default(),
        })
    }

    /// Accepts `hello` from the participant at `addr` if it routes keys
    /// by this coordinator's ring and its data is the one known, or none
    /// is known yet (then recorded, synced, first).
    pub(crate) fn check(&self, addr: &str, hello: &Hello) -> Result<(), String> {
        if hello.ring != self.ring {
            let why = format!(
                "{addr} is participant {id}, whose cluster file lists the participants {theirs}, where this \
                 coordinator's lists {ours}: keys would be read and written at other participants than hold \
                 them, and committed data would seem absent. Give every node the same cluster file (twopc does \
                 not reshard: a participant cannot join a cluster that holds data)",
                id = hello.id,
                theirs = hello.ring_described,
                ours = self.ring_described,
            );
            if let Some(refused) = self.refused.event() {
                tracing::error!(participant = %hello.id, %addr, refused, "{why}");
            }
            self.refusing.lock().expect("lock").insert(hello.id.clone(), why.clone());
            self.other_ring.lock().expect("lock").insert(hello.id.clone(), why.clone());
            return Err(why);
        }
        self.other_ring.lock().expect("lock").remove(&hello.id);
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
                self.refusing.lock().expect("lock").remove(&hello.id);
                Ok(())
            }
        }
    }
}

impl ParticipantData {
    /// Why this coordinator may serve no read or commit now, if so: one
    /// of `participants` has never answered `hello` with this ring (its
    /// data id is then unknown), so nothing yet says that this
    /// coordinator routes keys as the participants placed them. A
    /// participant that answered with another ring makes it a
    /// configuration mismatch; one not reached (`unreached`: why, from the
    /// caller's attempt to connect) makes it unavailable for now. A known
    /// participant that later answers with another ring is refused alone,
    /// as one whose data was begun anew is: the others' keys are routed
    /// as they were placed (its refusal clears when it answers rightly).
    pub(crate) fn ring_refusal<'a>(
        &self,
        participants: impl Iterator<Item = &'a NodeId>,
        unreached: &BTreeMap<NodeId, String>,
    ) -> Option<ServiceError> {
        let unheard = self.unheard(participants);
        if unheard.is_empty() {
            return None;
        }
        let other_ring = self.other_ring.lock().expect("lock");
        if let Some(why) = unheard.iter().find_map(|p| other_ring.get(p.as_str())) {
            return Some(ServiceError::ConfigMismatch(format!(
                "{why}; this coordinator serves no read or commit until they agree"
            )));
        }
        let reasons: Vec<String> = unheard
            .iter()
            .map(|p| match unreached.get(p) {
                Some(why) => format!("{p} ({why})"),
                None => p.to_string(),
            })
            .collect();
        Some(ServiceError::Unavailable(format!(
            "this coordinator has not yet reached {} since its data was created, and serves no read or commit \
             until it has checked that every participant routes keys by its participants ({}); it does at the \
             first request after they answer. Retry, or use another coordinator",
            reasons.join("; "),
            self.ring_described
        )))
    }

    /// Forgets what `participants` last answered about their rings, before
    /// they are asked again: one that now cannot be reached is then
    /// unreachable (retryable), not still "another list" (trial 23B).
    pub(crate) fn forget_rings(&self, participants: &[NodeId]) {
        let mut other_ring = self.other_ring.lock().expect("lock");
        let mut refusing = self.refusing.lock().expect("lock");
        for p in participants.iter().filter(|p| other_ring.remove(p.as_str()).is_some()) {
            refusing.remove(p.as_str());
        }
    }

    /// Those of `participants` never heard from (no data id known) that
    /// did not answer with another ring either.
    pub(crate) fn not_yet_answered<'a>(&self, participants: impl Iterator<Item = &'a NodeId>) -> Vec<NodeId> {
        let other_ring = self.other_ring.lock().expect("lock");
        self.unheard(participants).into_iter().filter(|p| !other_ring.contains_key(p.as_str())).collect()
    }

    /// Those of `participants` never heard from (no data id known).
    pub(crate) fn unheard<'a>(&self, participants: impl Iterator<Item = &'a NodeId>) -> Vec<NodeId> {
        let known = self.known.lock().expect("lock");
        participants.filter(|p| !known.contains_key(p.as_str())).cloned().collect()
    }

    /// The participants refused now, each as "ID: why" (`twopc admin
    /// status` shows them: the coordinator's log and its clients' errors
    /// were the only place it was said, trial 21C).
    pub(crate) fn refused(&self) -> Vec<String> {
        self.refusing.lock().expect("lock").iter().map(|(id, why)| format!("{id}: {why}")).collect()
    }

    /// The ids of the participants refused now.
    pub(crate) fn refused_ids(&self) -> Vec<String> {
        self.refusing.lock().expect("lock").keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twopc_common::service::Role;

    fn ring(participants: &[&str]) -> Ring {
        let ids: Vec<NodeId> = participants.iter().map(|p| NodeId::new(p).unwrap()).collect();
        Ring::new(&ids, 64)
    }

    fn hello(id: &str, data: char) -> Hello {
        Hello::new(Role::Participant, id, &data.to_string().repeat(32), &ring(&["p1", "p2", "p3"]))
    }

    #[test]
    fn a_participant_whose_data_was_begun_anew_is_refused_until_its_line_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let data = ParticipantData::load(dir.path(), &ring(&["p1", "p2", "p3"])).unwrap();
        data.check("a:1", &hello("p1", 'a')).unwrap();
        data.check("a:2", &hello("p2", 'b')).unwrap();
        data.check("moved:1", &hello("p1", 'a')).expect("the same data at another address");
        let mut odd = hello("p3", 'a');
        odd.data_id = "x\ny".into();
        assert!(data.check("a:3", &odd).unwrap_err().contains("malformed"), "not recorded");
        // Kept across restarts.
        let data = ParticipantData::load(dir.path(), &ring(&["p1", "p2", "p3"])).unwrap();
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
        let data = ParticipantData::load(dir.path(), &ring(&["p1", "p2", "p3"])).unwrap();
        data.check("a:2", &hello("p2", 'c')).unwrap();
        data.check("a:1", &hello("p1", 'a')).unwrap();
        std::fs::write(&file, "p1\n").unwrap();
        assert!(ParticipantData::load(dir.path(), &ring(&["p1", "p2", "p3"])).err().unwrap().contains("is damaged"));
    }

    #[test]
    fn no_read_or_commit_is_served_until_every_participant_routes_keys_alike() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ring(&["p1", "p2", "p3"]);
        let all = || cluster.nodes().iter();
        let refusal = |data: &ParticipantData, unreached: &BTreeMap<NodeId, String>| {
            data.ring_refusal(all(), unreached).map(|e| (e.is_transient(), e.to_string()))
        };
        let none = BTreeMap::new();
        let data = ParticipantData::load(dir.path(), &cluster).unwrap();
        let p3 = NodeId::new("p3").unwrap();
        let down = BTreeMap::from([(p3.clone(), "cannot connect".to_string())]);
        let (retryable, unheard) = refusal(&data, &down).expect("nothing heard yet");
        assert!(retryable && unheard.contains("not yet reached p1; p2; p3 (cannot connect) since"), "{unheard}");
        data.check("a:1", &hello("p1", 'a')).unwrap();
        data.check("a:2", &hello("p2", 'b')).unwrap();
        // p3 started from an older file, without p3 itself.
        let mut old = Hello::new(Role::Participant, "p3", &"c".repeat(32), &ring(&["p1", "p2"]));
        let refused = data.check("a:3", &old).unwrap_err();
        assert!(refused.contains("lists the participants p1,p2 (vnodes = 64)"), "{refused}");
        assert!(refused.contains("this coordinator's lists p1,p2,p3 (vnodes = 64)"), "{refused}");
        let (retryable, mismatch) = refusal(&data, &none).expect("refused for every key");
        assert!(!retryable && mismatch.contains(&refused) && mismatch.contains("serves no read or commit"));
        assert_eq!(data.unheard(all()), [p3], "its data id not recorded");
        old.ring = cluster.fingerprint();
        data.check("a:3", &old).expect("restarted with the same file");
        assert_eq!(refusal(&data, &none), None);
        assert!(data.refused().is_empty());
        // Once known, a participant with another ring is refused alone, until
        // it answers rightly (trial 23A: the whole coordinator stayed refused).
        let mut rogue = Hello::new(Role::Participant, "p3", &"d".repeat(32), &ring(&["p1", "p2", "p3", "p4"]));
        assert!(data.check("a:3", &rogue).is_err());
        assert_eq!(refusal(&data, &none), None, "p1's and p2's keys are still served");
        assert_eq!(data.refused().len(), 1);
        rogue.ring = cluster.fingerprint();
        rogue.data_id = "c".repeat(32);
        data.check("a:3", &rogue).expect("the right p3 is back");
        assert!(data.refused().is_empty());
        // Known from the file at the next start: no need to hear from each.
        let data = ParticipantData::load(dir.path(), &cluster).unwrap();
        assert_eq!(refusal(&data, &none), None);
    }
}
