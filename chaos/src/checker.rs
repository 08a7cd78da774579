//! Checks a run's history against the final state (read after heal and
//! recovery). Every violation names its kind and carries the evidence.
//!
//! - **atomic-set**: each transaction's keys are all present (with its
//!   value) or all absent (`atomicity`); acked Committed → all present
//!   (`lost-commit`); acked Aborted → all absent (`aborted-visible`); an
//!   unknown outcome, once the coordinator answers, matches the data
//!   (`unknown-inconsistent`); it must answer (`unresolved`).
//! - **bank**: every write bumps a key's version by one and every transfer
//!   read the accounts it writes, so the committed transactions writing an
//!   account form a chain: exactly one committed writer over each version
//!   from 0 to the final one, each having read what its predecessor wrote.
//!   A committed writer missing from the chain is a lost commit; two
//!   committed writers over one version is a lost update (one of them was
//!   lost, or serializability broke); a version nobody known to have
//!   committed wrote is a visible abort (or a partial commit); the chain's
//!   last value must be the final balance. Then the total is conserved and
//!   no balance is negative.

use crate::history::{Body, Op, Resolved, Told};
use serde::Serialize;
use std::collections::BTreeMap;
use twopc_common::Versioned;

/// Evidence lists are cut at this many entries.
const MAX_EVIDENCE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// atomicity, lost-commit, aborted-visible, unknown-inconsistent,
    /// unresolved, lost-update, unexplained-write, wrong-value,
    /// bank-total, negative-balance, missing-account, in-doubt-left,
    /// unavailable-after-heal.
    pub kind: String,
    pub txid: Option<String>,
    pub evidence: String,
}

impl Violation {
    pub fn new(kind: &str, txid: Option<String>, evidence: String) -> Violation {
        Violation { kind: kind.into(), txid, evidence }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.kind, self.evidence)
    }
}

fn value_str(v: &Versioned) -> String {
    match &v.value {
        Some(b) => format!("{:?} (version {})", String::from_utf8_lossy(b), v.version),
        None => format!("absent (version {})", v.version),
    }
}

/// Unknown outcomes the coordinator never settled.
pub fn check_resolved(ops: &[Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    for op in ops {
        let why = match (&op.told, &op.resolved) {
            (Told::Unknown { .. }, Some(Resolved::Unresolved(why))) => why.as_str(),
            (Told::Unknown { .. }, None) => "not asked",
            _ => continue,
        };
        out.push(Violation::new(
            "unresolved",
            Some(op.txid.to_string()),
            format!("{}: the coordinator never settled its outcome after heal ({why})", op.describe()),
        ));
    }
    out
}

/// Atomic-set: `state` holds every key of every op.
pub fn check_set(ops: &[Op], state: &BTreeMap<String, Versioned>) -> Vec<Violation> {
    let mut out = check_resolved(ops);
    for op in ops {
        let Body::Set { keys, value } = &op.body else { continue };
        let mut present = Vec::new();
        let mut absent = Vec::new();
        for key in keys {
            match state.get(key) {
                Some(v) if v.value.as_deref() == Some(value.as_bytes()) => present.push(key.clone()),
                Some(Versioned { value: None, .. }) | None => absent.push(key.clone()),
                Some(other) => out.push(Violation::new(
                    "wrong-value",
                    Some(op.txid.to_string()),
                    format!("{}: key {key} holds {} (only this txn writes it)", op.describe(), value_str(other)),
                )),
            }
        }
        let txid = Some(op.txid.to_string());
        if !present.is_empty() && !absent.is_empty() {
            out.push(Violation::new(
                "atomicity",
                txid.clone(),
                format!(
                    "{}: {} of {} keys applied: present {:?}, absent {:?}",
                    op.describe(),
                    present.len(),
                    keys.len(),
                    present,
                    absent
                ),
            ));
        }
        let visible = !present.is_empty();
        match (&op.told, &op.resolved) {
            (Told::Committed, _) if !absent.is_empty() => out.push(Violation::new(
                "lost-commit",
                txid,
                format!("{}: keys {:?} are absent after recovery", op.describe(), absent),
            )),
            (Told::Aborted { .. }, _) if visible => out.push(Violation::new(
                "aborted-visible",
                txid,
                format!("{}: keys {:?} hold its value", op.describe(), present),
            )),
            (Told::Unknown { .. }, Some(Resolved::Committed)) if !absent.is_empty() => out.push(Violation::new(
                "unknown-inconsistent",
                txid,
                format!("{}: yet keys {:?} are absent", op.describe(), absent),
            )),
            (Told::Unknown { .. }, Some(Resolved::Aborted)) if visible => out.push(Violation::new(
                "unknown-inconsistent",
                txid,
                format!("{}: yet keys {:?} hold its value", op.describe(), present),
            )),
            _ => {}
        }
    }
    out
}

struct Write<'a> {
    op: &'a Op,
    read_version: u64,
    read_balance: Option<i64>,
    written: i64,
}

/// Bank: `state` holds every account; `accounts` lists them; `total` is
/// what they must sum to.
pub fn check_bank(ops: &[Op], accounts: &[String], state: &BTreeMap<String, Versioned>, total: i64) -> Vec<Violation> {
    let mut out = check_resolved(ops);
    // Per account: every op that wrote it (whatever its outcome).
    let mut writers: BTreeMap<&str, Vec<Write<'_>>> = BTreeMap::new();
    for op in ops {
        let Body::Bank { reads, writes } = &op.body else { continue };
        for (account, written) in writes {
            let Some(read) = reads.iter().find(|r| &r.account == account) else { continue };
            writers.entry(account.as_str()).or_default().push(Write {
                op,
                read_version: read.version,
                read_balance: read.balance,
                written: *written,
            });
        }
    }
    let mut sum = 0i64;
    let mut balances_ok = true;
    for account in accounts {
        let Some(final_state) = state.get(account) else {
            out.push(Violation::new("missing-account", None, format!("account {account} was not read")));
            balances_ok = false;
            continue;
        };
        let balance = final_state.value.as_ref().and_then(|b| std::str::from_utf8(b).ok()?.parse::<i64>().ok());
        match balance {
            Some(b) => {
                sum += b;
                if b < 0 {
                    out.push(Violation::new(
                        "negative-balance",
                        None,
                        format!("account {account} ends at {}", value_str(final_state)),
                    ));
                }
            }
            None => {
                balances_ok = false;
                out.push(Violation::new(
                    "missing-account",
                    None,
                    format!("account {account} ends {}", value_str(final_state)),
                ));
            }
        }
        let all = writers.remove(account.as_str()).unwrap_or_default();
        out.extend(check_chain(account, &all, final_state));
    }
    if balances_ok && sum != total {
        out.push(Violation::new(
            "bank-total",
            None,
            format!("the accounts sum to {sum}, not {total} ({} accounts)", accounts.len()),
        ));
    }
    out
}

fn check_chain(account: &str, all: &[Write<'_>], final_state: &Versioned) -> Vec<Violation> {
    let mut out = Vec::new();
    let final_version = final_state.version;
    let final_balance = final_state.value.as_ref().and_then(|b| std::str::from_utf8(b).ok()?.parse::<i64>().ok());
    let mut by_version: BTreeMap<u64, Vec<&Write<'_>>> = BTreeMap::new();
    for w in all.iter().filter(|w| w.op.effective() == Some(true)) {
        by_version.entry(w.read_version).or_default().push(w);
    }
    for (version, ws) in &by_version {
        if ws.len() > 1 {
            let list: Vec<String> = ws.iter().take(MAX_EVIDENCE).map(|w| w.op.describe()).collect();
            out.push(Violation::new(
                "lost-update",
                Some(ws[0].op.txid.to_string()),
                format!(
                    "account {account}: {} committed transactions all wrote over version {version} (one was lost, or they were not serializable): {}",
                    ws.len(),
                    list.join("; ")
                ),
            ));
        }
        if *version >= final_version {
            for w in ws {
                out.push(Violation::new(
                    "lost-commit",
                    Some(w.op.txid.to_string()),
                    format!(
                        "account {account}: {} wrote {} over version {version}, but the account ends at {}",
                        w.op.describe(),
                        w.written,
                        value_str(final_state)
                    ),
                ));
            }
        }
    }
    // Walk the chain from version 0.
    let mut current: Option<Option<i64>> = Some(None);
    for version in 0..final_version {
        match by_version.get(&version).and_then(|ws| ws.first()) {
            Some(w) => {
                if let Some(expected) = current {
                    if expected != w.read_balance {
                        out.push(Violation::new(
                            "wrong-value",
                            Some(w.op.txid.to_string()),
                            format!(
                                "account {account}: {} read balance {:?} at version {version}, but the committed writer of that version wrote {:?}",
                                w.op.describe(),
                                w.read_balance,
                                expected
                            ),
                        ));
                    }
                }
                current = Some(Some(w.written));
            }
            None => {
                // Somebody not known to have committed wrote version + 1.
                let suspects: Vec<&Write<'_>> =
                    all.iter().filter(|w| w.read_version == version && w.op.effective() != Some(true)).collect();
                let kind = if suspects.iter().any(|w| matches!(w.op.told, Told::Aborted { .. })) {
                    "aborted-visible"
                } else if suspects.iter().any(|w| w.op.resolved == Some(Resolved::Aborted)) {
                    "unknown-inconsistent"
                } else {
                    "unexplained-write"
                };
                let list: Vec<String> = suspects.iter().take(MAX_EVIDENCE).map(|w| w.op.describe()).collect();
                out.push(Violation::new(
                    kind,
                    suspects.first().map(|w| w.op.txid.to_string()),
                    format!(
                        "account {account}: version {} exists, but no transaction known to have committed wrote it; transactions that wrote over version {version}: {}",
                        version + 1,
                        if list.is_empty() { "none recorded".to_string() } else { list.join("; ") }
                    ),
                ));
                current = None;
            }
        }
    }
    if let Some(expected) = current {
        if expected != final_balance {
            out.push(Violation::new(
                "wrong-value",
                None,
                format!(
                    "account {account}: the last committed write left {expected:?}, but the account ends at {}",
                    value_str(final_state)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::AccountRead;
    use twopc_common::{NodeId, TxnId};

    fn op(seq: u64, told: Told, resolved: Option<Resolved>, body: Body) -> Op {
        Op {
            index: seq as usize,
            worker: Some(0),
            txid: TxnId { coordinator: NodeId::new("c1").unwrap(), epoch: 1, seq },
            sent_ms: seq,
            answered_ms: Some(seq + 1),
            told,
            resolved,
            body,
        }
    }

    fn aborted() -> Told {
        Told::Aborted { category: "lock-conflict".into(), reason: "test".into() }
    }

    fn unknown() -> Told {
        Told::Unknown { detail: "test".into() }
    }

    fn set(seq: u64, told: Told, resolved: Option<Resolved>) -> Op {
        let keys = vec![format!("a{seq}"), format!("b{seq}")];
        op(seq, told, resolved, Body::Set { keys, value: format!("v{seq}") })
    }

    fn state(entries: &[(&str, Option<&str>)]) -> BTreeMap<String, Versioned> {
        entries
            .iter()
            .map(|(k, v)| {
                let versioned = Versioned { version: u64::from(v.is_some()), value: v.map(|s| s.as_bytes().to_vec()) };
                (k.to_string(), versioned)
            })
            .collect()
    }

    fn kinds(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|v| v.kind.as_str()).collect()
    }

    #[test]
    fn atomic_set_clean_history_passes() {
        let ops = vec![
            set(1, Told::Committed, None),
            set(2, aborted(), None),
            set(3, unknown(), Some(Resolved::Committed)),
            set(4, unknown(), Some(Resolved::Aborted)),
        ];
        let s = state(&[
            ("a1", Some("v1")),
            ("b1", Some("v1")),
            ("a2", None),
            ("a3", Some("v3")),
            ("b3", Some("v3")),
            ("b4", None),
        ]);
        assert_eq!(check_set(&ops, &s), vec![]);
    }

    #[test]
    fn atomic_set_catches_each_kind() {
        let ops = vec![
            set(1, Told::Committed, None),
            set(2, aborted(), None),
            set(3, unknown(), Some(Resolved::Aborted)),
            set(4, unknown(), Some(Resolved::Unresolved("pending".into()))),
            set(5, Told::Committed, None),
        ];
        let s = state(&[
            ("a1", Some("v1")),
            ("b2", Some("v2")),
            ("a2", Some("v2")),
            ("a3", Some("v3")),
            ("b3", Some("v3")),
            ("a5", Some("other")),
        ]);
        let v = check_set(&ops, &s);
        let k = kinds(&v);
        assert!(k.contains(&"atomicity") && k.contains(&"lost-commit"), "{v:#?}");
        assert!(k.contains(&"aborted-visible"), "{v:#?}");
        assert!(k.contains(&"unknown-inconsistent"), "{v:#?}");
        assert!(k.contains(&"unresolved"), "{v:#?}");
        assert!(k.contains(&"wrong-value"), "{v:#?}");
    }

    fn transfer(seq: u64, told: Told, resolved: Option<Resolved>, reads: &[(&str, u64, i64)], amount: i64) -> Op {
        let reads: Vec<AccountRead> = reads
            .iter()
            .map(|(a, v, b)| AccountRead { account: a.to_string(), version: *v, balance: Some(*b) })
            .collect();
        let writes = vec![
            (reads[0].account.clone(), reads[0].balance.unwrap() - amount),
            (reads[1].account.clone(), reads[1].balance.unwrap() + amount),
        ];
        op(seq, told, resolved, Body::Bank { reads, writes })
    }

    fn init() -> Op {
        let reads =
            ["x", "y"].iter().map(|a| AccountRead { account: a.to_string(), version: 0, balance: None }).collect();
        op(0, Told::Committed, None, Body::Bank { reads, writes: vec![("x".into(), 10), ("y".into(), 10)] })
    }

    fn bank_state(x: (u64, i64), y: (u64, i64)) -> BTreeMap<String, Versioned> {
        let v = |(version, b): (u64, i64)| Versioned { version, value: Some(b.to_string().into_bytes()) };
        [("x".to_string(), v(x)), ("y".to_string(), v(y))].into_iter().collect()
    }

    fn accounts() -> Vec<String> {
        vec!["x".into(), "y".into()]
    }

    #[test]
    fn bank_clean_chain_passes() {
        let ops = vec![
            init(),
            transfer(1, Told::Committed, None, &[("x", 1, 10), ("y", 1, 10)], 3),
            transfer(2, aborted(), None, &[("x", 1, 10), ("y", 1, 10)], 1),
            transfer(3, unknown(), Some(Resolved::Committed), &[("y", 2, 13), ("x", 2, 7)], 5),
            transfer(4, unknown(), Some(Resolved::Aborted), &[("y", 3, 8), ("x", 3, 12)], 5),
        ];
        let v = check_bank(&ops, &accounts(), &bank_state((3, 12), (3, 8)), 20);
        assert_eq!(v, vec![]);
    }

    #[test]
    fn bank_catches_a_lost_commit_even_when_the_total_holds() {
        let ops = vec![init(), transfer(1, Told::Committed, None, &[("x", 1, 10), ("y", 1, 10)], 3)];
        let v = check_bank(&ops, &accounts(), &bank_state((1, 10), (1, 10)), 20);
        assert_eq!(kinds(&v), vec!["lost-commit", "lost-commit"], "{v:#?}");
    }

    #[test]
    fn bank_catches_a_partial_commit() {
        // x applied the transfer, y did not.
        let ops = vec![init(), transfer(1, Told::Committed, None, &[("x", 1, 10), ("y", 1, 10)], 3)];
        let v = check_bank(&ops, &accounts(), &bank_state((2, 7), (1, 10)), 20);
        let k = kinds(&v);
        assert!(k.contains(&"lost-commit") && k.contains(&"bank-total"), "{v:#?}");
    }

    #[test]
    fn bank_catches_a_visible_abort_and_a_lost_update() {
        let ops = vec![
            init(),
            transfer(1, aborted(), None, &[("x", 1, 10), ("y", 1, 10)], 3),
            transfer(2, Told::Committed, None, &[("x", 1, 10), ("y", 1, 10)], 2),
            transfer(3, Told::Committed, None, &[("x", 1, 10), ("y", 1, 10)], 1),
        ];
        let v = check_bank(&ops, &accounts(), &bank_state((2, 7), (2, 13)), 20);
        let k = kinds(&v);
        assert!(k.contains(&"lost-update"), "{v:#?}");
        let ops = vec![init(), transfer(1, aborted(), None, &[("x", 1, 10), ("y", 1, 10)], 3)];
        let v = check_bank(&ops, &accounts(), &bank_state((2, 7), (2, 13)), 20);
        assert_eq!(kinds(&v), vec!["aborted-visible", "aborted-visible"], "{v:#?}");
    }

    #[test]
    fn bank_catches_negative_balances_and_a_wrong_total() {
        let ops = vec![init()];
        let mut s = bank_state((1, 10), (1, 10));
        s.insert("x".into(), Versioned { version: 1, value: Some(b"-1".to_vec()) });
        let v = check_bank(&ops, &accounts(), &s, 20);
        let k = kinds(&v);
        assert!(k.contains(&"negative-balance") && k.contains(&"bank-total") && k.contains(&"wrong-value"), "{v:#?}");
    }
}
