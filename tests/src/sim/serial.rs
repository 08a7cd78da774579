//! Serializability of committed transactions from their versions.
//!
//! Every committed write creates version `v` of a key (the participant
//! bumps the version by one per commit), and every read names the version
//! it saw. So the per-key version order is known exactly, and the
//! dependency graph is:
//! - ww: the writer of `k@v` → the writer of `k@v+1`;
//! - wr: the writer of `k@v` → every transaction that read `k@v`;
//! - rw: a transaction that read `k@v` → the writer of `k@v+1`.
//!
//! The committed history is (conflict-)serializable iff that graph is
//! acyclic. Also reported: two transactions writing one version (a lost
//! update) and version gaps (a transaction built on a write that is not
//! in the committed history).

use std::collections::{BTreeMap, BTreeSet};
use twopc_common::{Key, TxnId, Version};

/// One committed transaction: the versions it read and created.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub reads: Vec<(Key, Version)>,
    pub writes: Vec<(Key, Version)>,
}

/// Violations found (empty: serializable).
pub fn check(txns: &BTreeMap<TxnId, Committed>) -> Vec<String> {
    let mut violations = Vec::new();
    let mut writer: BTreeMap<&Key, BTreeMap<Version, &TxnId>> = BTreeMap::new();
    for (txid, t) in txns {
        for (key, version) in &t.writes {
            if let Some(other) = writer.entry(key).or_default().insert(*version, txid) {
                if other != txid {
                    violations
                        .push(format!("lost update: {other} and {txid} both wrote version {version} of {}", show(key)));
                }
            }
        }
    }
    for (key, versions) in &writer {
        for (expected, version) in (1..).zip(versions.keys()) {
            if *version != expected {
                violations.push(format!(
                    "version gap: {} has version {version} but no committed version {expected}",
                    show(key)
                ));
                break;
            }
        }
    }
    let mut edges: BTreeMap<&TxnId, BTreeSet<&TxnId>> = txns.keys().map(|t| (t, BTreeSet::new())).collect();
    fn edge<'a>(from: &'a TxnId, to: &'a TxnId, edges: &mut BTreeMap<&'a TxnId, BTreeSet<&'a TxnId>>) {
        if from != to {
            if let Some(out) = edges.get_mut(from) {
                out.insert(to);
            }
        }
    }
    for versions in writer.values() {
        for ((_, a), (_, b)) in versions.iter().zip(versions.iter().skip(1)) {
            edge(a, b, &mut edges);
        }
    }
    for (txid, t) in txns {
        for (key, version) in &t.reads {
            let Some(versions) = writer.get(key) else {
                continue;
            };
            if let Some(w) = versions.get(version) {
                edge(w, txid, &mut edges);
            }
            if let Some((_, next)) = versions.range(version + 1..).next() {
                edge(txid, next, &mut edges);
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let cycle: Vec<String> = cycle.iter().map(|t| t.to_string()).collect();
        violations.push(format!("not serializable: dependency cycle {}", cycle.join(" → ")));
    }
    violations
}

/// A cycle of the graph, if any (iterative depth-first search).
fn find_cycle<'a>(edges: &BTreeMap<&'a TxnId, BTreeSet<&'a TxnId>>) -> Option<Vec<&'a TxnId>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark: BTreeMap<&TxnId, Mark> = edges.keys().map(|t| (*t, Mark::New)).collect();
    for start in edges.keys() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(&TxnId, Vec<&TxnId>)> = vec![(start, edges[start].iter().copied().collect())];
        mark.insert(start, Mark::OnStack);
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            match next.pop() {
                None => {
                    mark.insert(node, Mark::Done);
                    stack.pop();
                }
                Some(to) => match mark.get(to).copied().unwrap_or(Mark::Done) {
                    Mark::OnStack => {
                        let from = stack.iter().position(|(t, _)| *t == to).unwrap_or(0);
                        let mut cycle: Vec<&TxnId> = stack[from..].iter().map(|(t, _)| *t).collect();
                        cycle.push(to);
                        return Some(cycle);
                    }
                    Mark::New => {
                        mark.insert(to, Mark::OnStack);
                        stack.push((to, edges[to].iter().copied().collect()));
                    }
                    Mark::Done => {}
                },
            }
        }
    }
    None
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use twopc_common::NodeId;

    fn t(seq: u64) -> TxnId {
        TxnId { coordinator: NodeId::new("c1").unwrap(), epoch: 1, seq }
    }

    fn k(s: &str) -> Key {
        s.as_bytes().to_vec()
    }

    #[test]
    fn a_serial_history_passes() {
        let mut txns = BTreeMap::new();
        txns.insert(t(1), Committed { reads: vec![(k("x"), 0)], writes: vec![(k("x"), 1)] });
        txns.insert(t(2), Committed { reads: vec![(k("x"), 1)], writes: vec![(k("x"), 2), (k("y"), 1)] });
        assert!(check(&txns).is_empty());
    }

    #[test]
    fn write_skew_is_a_cycle() {
        // T1 reads x@0, y@0, writes x; T2 reads x@0, y@0, writes y.
        let mut txns = BTreeMap::new();
        txns.insert(t(1), Committed { reads: vec![(k("x"), 0), (k("y"), 0)], writes: vec![(k("x"), 1)] });
        txns.insert(t(2), Committed { reads: vec![(k("x"), 0), (k("y"), 0)], writes: vec![(k("y"), 1)] });
        let v = check(&txns);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("cycle"), "{v:?}");
    }

    #[test]
    fn lost_update_and_gap_are_reported() {
        let mut txns = BTreeMap::new();
        txns.insert(t(1), Committed { reads: vec![(k("x"), 0)], writes: vec![(k("x"), 1)] });
        txns.insert(t(2), Committed { reads: vec![(k("x"), 0)], writes: vec![(k("x"), 1)] });
        txns.insert(t(3), Committed { reads: vec![], writes: vec![(k("y"), 2)] });
        let v = check(&txns);
        assert!(v.iter().any(|s| s.contains("lost update")), "{v:?}");
        assert!(v.iter().any(|s| s.contains("version gap")), "{v:?}");
    }
}
