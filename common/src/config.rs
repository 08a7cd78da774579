//! The cluster file: which coordinators and participants exist and where.
//!
//! ```toml
//! # admin_token = "..."   # optional; TWOPC_ADMIN_TOKEN overrides it
//! # vnodes = 64           # optional; virtual nodes per participant
//! [[coordinator]]
//! id = "c1"
//! addr = "127.0.0.1:7000"
//! [[participant]]
//! id = "p1"
//! addr = "127.0.0.1:7001"
//! ```

use crate::ids::NodeId;
use crate::ring::{Ring, DEFAULT_VNODES, MAX_VNODES};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: String,
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    #[serde(default)]
    pub coordinator: Vec<NodeEntry>,
    #[serde(default)]
    pub participant: Vec<NodeEntry>,
}

fn default_vnodes() -> u32 {
    DEFAULT_VNODES
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cluster file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("malformed cluster file {path}: {detail}")]
    Malformed { path: String, detail: String },
    #[error("invalid cluster file {path}: {detail}")]
    Invalid { path: String, detail: String },
}

impl ClusterConfig {
    /// Reads and validates a cluster file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates a cluster file's text; `source` names it in
    /// errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        let config: ClusterConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Malformed { path: source.to_string(), detail: located(text, &e) })?;
        config.validate().map_err(|detail| ConfigError::Invalid { path: source.to_string(), detail })?;
        Ok(config)
    }

    /// Checks ids, addresses, duplicates and counts.
    pub fn validate(&self) -> Result<(), String> {
        if self.coordinator.is_empty() {
            return Err("no [[coordinator]] entries".into());
        }
        if self.participant.is_empty() {
            return Err("no [[participant]] entries".into());
        }
        if !(1..=MAX_VNODES).contains(&self.vnodes) {
            return Err(format!("vnodes = {} is outside 1..={MAX_VNODES}", self.vnodes));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            // An empty token would let anyone force outcomes.
            return Err("admin_token is empty: set a secret, or remove the line to disable admin".into());
        }
        let mut ids = HashSet::new();
        let mut endpoints: HashMap<(String, &str), &str> = HashMap::new();
        for entry in self.coordinator.iter().chain(&self.participant) {
            NodeId::new(&entry.id)?;
            if !ids.insert(entry.id.as_str()) {
                return Err(format!("duplicate id {:?}", entry.id));
            }
            check_addr(&entry.addr).map_err(|e| format!("{}: {e}", entry.id))?;
            if let Some(first) = endpoints.insert(endpoint(&entry.addr), &entry.addr) {
                return Err(if first == entry.addr {
                    format!("duplicate address {:?}", entry.addr)
                } else {
                    format!("duplicate address: {first:?} and {:?} name the same host and port", entry.addr)
                });
            }
        }
        Ok(())
    }

    pub fn participant_ids(&self) -> Vec<NodeId> {
        self.participant.iter().map(|p| node_id(&p.id)).collect()
    }

    /// The routing ring every process of this cluster must share.
    pub fn ring(&self) -> Ring {
        Ring::new(&self.participant_ids(), self.vnodes)
    }

    pub fn coordinator_entry(&self, id: &str) -> Option<&NodeEntry> {
        self.coordinator.iter().find(|c| c.id == id)
    }

    pub fn participant_entry(&self, id: &str) -> Option<&NodeEntry> {
        self.participant.iter().find(|p| p.id == id)
    }

    /// A loopback cluster: coordinators on `base_port..`, participants after.
    pub fn loopback(coordinators: usize, participants: usize, base_port: u16) -> Self {
        let entry = |prefix: &str, i: usize, port: usize| NodeEntry {
            id: format!("{prefix}{i}"),
            addr: format!("127.0.0.1:{port}"),
        };
        let base = usize::from(base_port);
        ClusterConfig {
            admin_token: None,
            vnodes: DEFAULT_VNODES,
            coordinator: (1..=coordinators).map(|i| entry("c", i, base + i - 1)).collect(),
            participant: (1..=participants).map(|i| entry("p", i, base + coordinators + i - 1)).collect(),
        }
    }

    /// How `other` describes a different cluster than this one, in words
    /// (the first difference: vnodes, then the coordinators, then the
    /// participants, by id and address, in the order of their ids); `None`
    /// if it is the same cluster, whatever order the files list them in.
    /// The admin token is not compared.
    pub fn difference(&self, other: &ClusterConfig) -> Option<String> {
        if self.vnodes != other.vnodes {
            return Some(format!("vnodes {} instead of {}", other.vnodes, self.vnodes));
        }
        let list = |entries: &[NodeEntry]| {
            let mut listed: Vec<String> = entries.iter().map(|e| format!("{}@{}", e.id, e.addr)).collect();
            listed.sort();
            listed.join(", ")
        };
        for (role, mine, theirs) in [
            ("coordinators", list(&self.coordinator), list(&other.coordinator)),
            ("participants", list(&self.participant), list(&other.participant)),
        ] {
            if mine != theirs {
                return Some(format!("{role} {theirs} instead of {mine}"));
            }
        }
        None
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a cluster config always serialises")
    }
}

fn node_id(id: &str) -> NodeId {
    NodeId::new(id).expect("ids are validated when the config is loaded")
}

/// What `addr` (checked by [`check_addr`]) names, for finding two entries
/// that are one place: the host in lower case, with this machine's
/// loopback names (`localhost`, `127.0.0.1`, `[::1]`) as one.
fn endpoint(addr: &str) -> (String, &str) {
    let (host, port) = addr.rsplit_once(':').expect("checked by check_addr");
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "localhost" | "127.0.0.1" | "[::1]" => "localhost".to_string(),
        _ => host,
    };
    (host, port.trim_start_matches('0'))
}

fn check_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("address {addr:?} must be HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("address {addr:?} has no host"));
    }
    // Found here, not when that one node fails to listen.
    if !crate::address::is_host(host) {
        return Err(format!("address {addr:?} has an invalid host {host:?}"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(format!("address {addr:?} has port 0: a node must listen where the others can find it")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("address {addr:?} has an invalid port")),
    }
}

/// A parse error's message and the line it points at (for a missing
/// field, the line of the entry that lacks it).
fn located(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_config_round_trips_and_validates() {
        let c = ClusterConfig::loopback(1, 3, 7000);
        c.validate().unwrap();
        let back: ClusterConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.participant[2].addr, "127.0.0.1:7003");
    }

    #[test]
    fn a_different_cluster_is_told_by_its_first_difference() {
        let c = ClusterConfig::loopback(1, 3, 7000);
        let mut same = c.clone();
        same.admin_token = Some("another".into());
        assert_eq!(c.difference(&same), None);
        let mut vnodes = c.clone();
        vnodes.vnodes = 32;
        assert_eq!(c.difference(&vnodes).unwrap(), "vnodes 32 instead of 64");
        let moved = ClusterConfig::loopback(1, 3, 7400);
        assert_eq!(c.difference(&moved).unwrap(), "coordinators c1@127.0.0.1:7400 instead of c1@127.0.0.1:7000");
        let fewer = ClusterConfig::loopback(1, 2, 7000);
        let why = c.difference(&fewer).unwrap();
        assert!(why.starts_with("participants p1@127.0.0.1:7001, p2@127.0.0.1:7002 instead of"), "{why}");
        let mut reordered = c.clone();
        reordered.participant.reverse();
        assert_eq!(c.difference(&reordered), None, "the same participants listed in another order");
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        let mut c = ClusterConfig::loopback(1, 2, 7000);
        c.participant[1].id = "p1".into();
        assert!(c.validate().unwrap_err().contains("duplicate id"));
        let mut c = ClusterConfig::loopback(1, 2, 7000);
        c.participant[0].addr = "nowhere".into();
        assert!(c.validate().unwrap_err().contains("HOST:PORT"));
        for bad in ["127.0.0.1:0", "not a host:7173", " 127.0.0.1:7171", "a/b:1"] {
            c.participant[0].addr = bad.into();
            assert!(c.validate().is_err(), "{bad:?} was accepted");
        }
        for good in ["db-1.example.com:7001", "[::1]:7001", "10.0.0.2:7001"] {
            c.participant[0].addr = good.into();
            assert!(c.validate().is_ok(), "{good:?} was refused");
        }
        // p2 is at 127.0.0.1:7002: other spellings of it are the same place.
        for same in ["localhost:7002", "LOCALHOST:7002", "[::1]:7002", "127.0.0.1:07002"] {
            c.participant[0].addr = same.into();
            let e = c.validate().unwrap_err();
            assert!(e.contains("duplicate address") && e.contains("127.0.0.1:7002"), "{same:?}: {e}");
        }
        assert!(toml::from_str::<ClusterConfig>("[[participant]]\nid='p1'\naddr='x:1'\ncolour=1").is_err());
        let missing = "[[coordinator]]\nid = 'c1'\naddr = '127.0.0.1:1'\n\n[[participant]]\nid = 'p1'\n";
        let e = ClusterConfig::parse(missing, "f").unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("addr"), "{e}");
        let mut c = ClusterConfig::loopback(1, 2, 7000);
        c.admin_token = Some(" ".into());
        assert!(c.validate().unwrap_err().contains("admin_token is empty"));
    }
}
