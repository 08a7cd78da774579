//! End-of-run checks, after healing, settling and resolving outcomes.
//!
//! Black-box where possible: they read the participants' durable logs and
//! data (after a final simulated power cut), what clients heard and the
//! coordinator's `outcome` answers; the ghost `applied` sets are
//! cross-checked against the durable logs.

use super::config::{SimConfig, Workload};
use super::coordinator::CoordinatorNode;
use super::history::{ClientView, History};
use super::participant::ParticipantNode;
use super::serial::{self, Committed};
use super::workload::{balance, Keys, INITIAL_BALANCE};
use std::collections::{BTreeMap, BTreeSet};
use twopc_common::{Key, OutcomeStatus, TxnId, Versioned};
use twopc_participant::record::{Decision, ParticipantRecord};
use twopc_participant::store::{self, ParticipantWal};
use twopc_wal::Wal;

/// Every violation of the run: the on-the-fly ones, then the end-state ones.
pub fn check(
    cfg: &SimConfig,
    history: &mut History,
    keys: &Keys,
    participants: &[ParticipantNode],
    coordinator: &CoordinatorNode,
) -> Vec<String> {
    let mut v = std::mem::take(&mut history.violations);
    unanswered(coordinator, participants, &mut v);
    let applied = durable_state(history, keys, participants, &mut v);
    let submitted = &history.submitted;

    // Atomicity (4) and TCConsistent.
    for (txid, at) in &applied {
        match submitted.get(txid) {
            None => v.push(format!("{txid} applied at {} but never submitted", names(at))),
            Some(s) => {
                let missing: BTreeSet<usize> = s.participants.iter().copied().filter(|p| !at.contains(p)).collect();
                if !missing.is_empty() {
                    v.push(format!("atomicity: {txid} applied at {} but not at {}", names(at), names(&missing)));
                }
            }
        }
        for (q, aborted) in history.aborted_prepared.iter().enumerate() {
            if aborted.contains(txid) {
                v.push(format!(
                    "TCConsistent: {txid} applied at {} and aborted after prepare at p{}",
                    names(at),
                    q + 1
                ));
            }
        }
    }

    // What clients heard (5) and the resolved outcomes (7).
    for (txid, s) in submitted {
        let at = applied.get(txid).map(BTreeSet::len).unwrap_or(0);
        match &s.view {
            ClientView::Committed if at == 0 => {
                v.push(format!("lost commit: client heard Committed for {txid}, applied nowhere"))
            }
            ClientView::Aborted(r) | ClientView::Refused(r) if at > 0 => {
                v.push(format!("client heard Aborted/refused ({r}) for {txid}, applied at {at} participants"))
            }
            _ => {}
        }
        match &s.resolved {
            None => v.push(format!("{txid}: no final outcome from the coordinator after healing")),
            Some(OutcomeStatus::Committed) if at == 0 => {
                v.push(format!("outcome({txid}) = Committed, applied nowhere"))
            }
            Some(OutcomeStatus::Aborted) if at > 0 => {
                v.push(format!("outcome({txid}) = Aborted, applied at {at} participants"))
            }
            Some(OutcomeStatus::Aborted) if s.view == ClientView::Committed => {
                v.push(format!("decision changed: client heard Committed for {txid}, outcome now Aborted"))
            }
            _ => {}
        }
    }

    // In-doubt resolution (6, 7): nothing prepared, no lock after healing.
    for p in participants {
        let doubt: Vec<String> = p.engine.in_doubt().map(|r| r.txid.to_string()).collect();
        if !doubt.is_empty() {
            v.push(format!("{} still in doubt after healing: {}", p.id, doubt.join(", ")));
        }
        if !p.engine.locks().is_empty() {
            v.push(format!("{} still holds {} locks after healing", p.id, p.engine.locks().len()));
        }
    }

    // Serializability (8) of everything applied.
    let mut committed: BTreeMap<TxnId, Committed> = BTreeMap::new();
    for (p, writes) in history.applied.iter().enumerate() {
        let _ = p;
        for (txid, w) in writes {
            let c = committed.entry(txid.clone()).or_default();
            c.writes.extend(w.iter().map(|(k, v)| (k.clone(), v.version)));
        }
    }
    for (txid, c) in &mut committed {
        if let Some(s) = submitted.get(txid) {
            c.reads = s.ops.reads.clone();
        }
    }
    v.extend(serial::check(&committed));

    workload_property(cfg.workload, keys, participants, &mut v);
    v
}

/// Every request was answered (a caller could otherwise only time out,
/// and the runtime would keep the request forever). Checked when quiet.
pub fn unanswered(coordinator: &CoordinatorNode, participants: &[ParticipantNode], v: &mut Vec<String>) {
    for u in coordinator.unanswered() {
        v.push(format!("coordinator never answered {u}"));
    }
    for p in participants {
        for u in p.unanswered() {
            v.push(format!("{} never answered {u}", p.id));
        }
    }
}

/// Cross-checks each participant's durable log and data with the ghost
/// history; returns, per txid, the participants that durably applied it.
fn durable_state(
    history: &History,
    keys: &Keys,
    participants: &[ParticipantNode],
    v: &mut Vec<String>,
) -> BTreeMap<TxnId, BTreeSet<usize>> {
    let mut applied: BTreeMap<TxnId, BTreeSet<usize>> = BTreeMap::new();
    for p in participants {
        // A last power cut: only what is durable counts.
        p.disk.wal.crash();
        let records = match p.disk.wal.replay() {
            Ok(r) => r,
            Err(e) => {
                v.push(format!("{}: durable log unreadable: {e}", p.id));
                continue;
            }
        };
        let mut logged = BTreeSet::new();
        for (_, record) in records {
            match record {
                ParticipantRecord::Done { txid, decision: Decision::Committed } => {
                    logged.insert(txid);
                }
                // A Prepared record whose lazy abort was lost is re-resolved
                // at the next start (the final restart checked that).
                ParticipantRecord::Done { .. }
                | ParticipantRecord::Prepared(_)
                | ParticipantRecord::Heuristic(_)
                | ParticipantRecord::Forgotten(_) => {}
            }
        }
        let ghost: BTreeSet<TxnId> = history.applied[p.index].keys().cloned().collect();
        if logged != ghost {
            v.push(format!("{}: durable commits {logged:?} differ from those observed {ghost:?}", p.id));
        }
        for txid in logged {
            applied.entry(txid).or_default().insert(p.index);
        }
        // Each key holds the highest version any durable commit wrote.
        for key in keys.keys.iter().filter(|k| keys.owner[*k] == p.index) {
            let expected = history.applied[p.index]
                .values()
                .flat_map(|w| w.iter().filter(|(k, _)| k == key).map(|(_, v)| v))
                .max_by_key(|v| v.version)
                .cloned()
                .unwrap_or_default();
            let wal: &ParticipantWal = &p.disk.wal;
            match store::get(wal, key) {
                Ok(got) if got == expected => {}
                Ok(got) => v.push(format!("{}: {} is {got:?}, the last commit wrote {expected:?}", p.id, show(key))),
                Err(e) => v.push(format!("{}: {} unreadable: {e}", p.id, show(key))),
            }
        }
    }
    applied
}

/// Bank: total conserved, balances decodable. Atomic-set: every key holds
/// the same transaction's value.
fn workload_property(workload: Workload, keys: &Keys, participants: &[ParticipantNode], v: &mut Vec<String>) {
    let mut values: Vec<(Key, Versioned)> = Vec::new();
    for key in &keys.keys {
        let p = &participants[keys.owner[key]];
        let wal: &ParticipantWal = &p.disk.wal;
        match store::get(wal, key) {
            Ok(value) => values.push((key.clone(), value)),
            Err(e) => return v.push(format!("{}: {} unreadable: {e}", p.id, show(key))),
        }
    }
    match workload {
        Workload::Bank => {
            let mut total = 0;
            for (key, value) in &values {
                match balance(value) {
                    Ok(b) => total += b,
                    Err(e) => v.push(format!("bank: account {}: {e}", show(key))),
                }
            }
            let expected = INITIAL_BALANCE * keys.keys.len() as u64;
            if total != expected {
                v.push(format!("bank: total is {total}, expected {expected}: {}", describe(&values)));
            }
        }
        Workload::AtomicSet => {
            let distinct: BTreeSet<&Option<Vec<u8>>> = values.iter().map(|(_, v)| &v.value).collect();
            if distinct.len() > 1 {
                v.push(format!("atomic-set: keys disagree: {}", describe(&values)));
            }
        }
    }
}

fn describe(values: &[(Key, Versioned)]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|(k, v)| {
            format!("{}@{}={}", show(k), v.version, v.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default())
        })
        .collect();
    parts.join(", ")
}

fn names(ps: &BTreeSet<usize>) -> String {
    let names: Vec<String> = ps.iter().map(|p| format!("p{}", p + 1)).collect();
    names.join(",")
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}
