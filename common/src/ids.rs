//! Node and transaction identifiers.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest node id accepted in a cluster file.
pub const MAX_NODE_ID_LEN: usize = 64;

/// The id of a coordinator or participant as written in the cluster file
/// (`c1`, `p2`, ...): ASCII letters, digits, `_` and `-`. Shared, so that
/// cloning one (every [`TxnId`] holds one) costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Validates and wraps an id.
    pub fn new(id: &str) -> Result<Self, String> {
        if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
            return Err(format!("node id {id:?} must be 1..={MAX_NODE_ID_LEN} characters"));
        }
        if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("node id {id:?} may only contain letters, digits, '_' and '-'"));
        }
        Ok(Self(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A transaction id. The coordinator bumps and syncs its epoch once per
/// start, so `(coordinator, epoch, seq)` is unique without a write per
/// transaction. Written as `c1.3.17`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    pub coordinator: NodeId,
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.coordinator, self.epoch, self.seq)
    }
}

impl FromStr for TxnId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || format!("malformed txid {s:?}: expected COORDINATOR.EPOCH.SEQ, e.g. c1.3.17");
        // Digits as printed, only: "+1" or "01" named the same id as "1",
        // and the id echoed back differed from the one given.
        let number = |p: &str| -> Option<u64> {
            let canonical = p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
            canonical.then(|| p.parse().ok()).flatten()
        };
        let mut parts = s.rsplitn(3, '.');
        let seq = parts.next().and_then(number).ok_or_else(malformed)?;
        let epoch = parts.next().and_then(number).ok_or_else(malformed)?;
        let coordinator = parts.next().ok_or_else(malformed)?;
        let coordinator = NodeId::new(coordinator).map_err(|e| format!("{}: {e}", malformed()))?;
        Ok(TxnId { coordinator, epoch, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_round_trips_through_text() {
        let id = TxnId { coordinator: NodeId::new("c-1").unwrap(), epoch: 3, seq: 17 };
        assert_eq!(id.to_string(), "c-1.3.17");
        assert_eq!(id.to_string().parse::<TxnId>().unwrap(), id);
    }

    #[test]
    fn malformed_txids_are_rejected() {
        for bad in ["", "c1", "c1.3", "c1.x.1", "c1.1.-1", "c 1.1.1", ".1.1", "c1.1.+1", "c1.01.1", "c1.1.01", "c1.1."]
        {
            assert!(bad.parse::<TxnId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(NodeId::new("p1").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("p.1").is_err());
        assert!(NodeId::new(&"x".repeat(65)).is_err());
    }
}
