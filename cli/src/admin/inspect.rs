//! The read-only admin commands: `status`, `in-doubt`, `show`, `heuristics`,
//! `locks`.

use super::nodes::{Cluster, Node};
use super::render::{age, by_node_id, key, table};
use super::{Failure, ADMIN_INCOMPLETE, ADMIN_OK, ADMIN_UNKNOWN_TXN};
use crate::say::{out, out_raw};
use serde::Serialize;
use std::collections::BTreeMap;
use twopc_common::admin::{
    AdminReply, AdminRequest, HeuristicView, TxnView, APPLIED, FOREIGN_EPOCH, ONE_PHASE_UNANSWERED,
};
use twopc_common::TxnId;

pub async fn status(cluster: &Cluster, json: bool) -> Result<u8, Failure> {
    let mut rows = Vec::new();
    let mut nodes = Vec::new();
    let mut all_reached = true;
    let mut damaged = Vec::new();
    let mut unreachable = Vec::new();
    let mut refused = Vec::new();
    for node in &cluster.nodes {
        let stats = &node.stats;
        if let Ok(s) = stats {
            refused.extend(s.refused_participants.iter().map(|why| format!("by {}: {why}", node.id)));
        }
        all_reached &= stats.is_ok();
        if let Some(errors) = stats.as_ref().ok().map(|s| s.storage_errors).filter(|e| *e > 0) {
            damaged.push(format!("{} ({errors})", node.id));
        }
        let dash = || "-".to_string();
        rows.push(match stats {
            Ok(s) => vec![
                node.id.clone(),
                node.role.into(),
                node.addr.clone(),
                "up".into(),
                s.epoch.map_or_else(dash, |e| e.to_string()),
                if node.role == "participant" { s.in_doubt.to_string() } else { s.undelivered_commits.to_string() },
                s.oldest_prepared_ms.map_or_else(dash, |t| age(s.now_ms.saturating_sub(t))),
                if node.role == "participant" { s.locks.to_string() } else { dash() },
                s.heuristics.to_string(),
                s.heuristic_mixed.to_string(),
                s.wal_syncs.to_string(),
            ],
            Err(e) => {
                let mut row = vec![node.id.clone(), node.role.into(), node.addr.clone(), "UNREACHABLE".into()];
                row.extend(std::iter::repeat_n("-".to_string(), 7));
                // In full below the table (a cell is cut at 120
                // characters, and the advice came last: trial 21B).
                row.push("(why: below)".into());
                unreachable.push(format!("{} ({}): {e}", node.id, node.addr));
                row
            }
        });
        nodes.push(serde_json::json!({
            "id": node.id, "role": node.role, "addr": node.addr,
            "reachable": stats.is_ok(),
            "error": stats.as_ref().err(),
            "stats": stats.as_ref().ok(),
            // The age the text shows (`oldest_prepared_ms` is a time):
            // a monitor need not subtract clocks (trial 24C).
            "oldest_prepared_age_ms": stats.as_ref().ok().and_then(|s| s.oldest_prepared_ms.map(|t| s.now_ms.saturating_sub(t))),
        }));
    }
    if json {
        out!("{}", serde_json::json!({ "nodes": nodes }));
    } else {
        let header = [
            "ID",
            "ROLE",
            "ADDR",
            "STATE",
            "EPOCH",
            "IN-DOUBT*",
            "OLDEST",
            "LOCKS",
            "HEURISTIC",
            "MIXED",
            "FSYNCS",
            "",
        ];
        out_raw!("{}", table(&header, &rows));
        out!("* participants: prepared transactions waiting for an outcome; coordinators: commits not yet acked by every participant");
        for why in &unreachable {
            out!("UNREACHABLE {why}");
        }
        // A participant can be up while a coordinator refuses it.
        for why in &refused {
            out!("REFUSED {why}");
        }
        let mixed: usize = rows.iter().filter_map(|r| r[9].parse::<usize>().ok()).sum();
        if mixed > 0 {
            out!("HEURISTIC-MIXED: forced outcomes disagree with the coordinator's decision ({mixed} finding(s) at the processes above: the coordinator and each participant count their own); `twopc admin heuristics` lists them; once dealt with, `twopc admin forget TXID` clears one");
        }
        if !damaged.is_empty() {
            out!(
                "STORAGE ERRORS: reads of committed data failed at {} (damaged data files?); their logs name the keys",
                damaged.join(", ")
            );
        }
    }
    Ok(complete_if(all_reached))
}

/// The exit code of a report: [`ADMIN_INCOMPLETE`] if a process could not
/// be asked.
fn complete_if(all_reached: bool) -> u8 {
    if all_reached {
        ADMIN_OK
    } else {
        ADMIN_INCOMPLETE
    }
}

/// One unresolved transaction, as every process sees it.
#[derive(Debug, Clone, Serialize)]
pub struct InDoubt {
    pub txid: String,
    /// Oldest prepare time among its participants (ms since the epoch).
    pub since_ms: Option<u64>,
    pub age_ms: Option<u64>,
    /// participant → "prepared" | "not in doubt" | "unreachable" | coordinator's view.
    pub participants: BTreeMap<String, String>,
    /// participant → keys it locks.
    pub locks: BTreeMap<String, Vec<String>>,
    /// The coordinator's logged decision: "commit (logged)", "abort",
    /// "none logged (...)", "deciding", "unknown (coordinator unreachable: why)".
    pub decision: String,
    /// The same for a program to branch on (trial 24C): "commit",
    /// "abort", "none" (no Commit record: presumed abort), "pending"
    /// (being decided, or a one-phase answer awaited) or "unknown"
    /// (coordinator unreachable, or its log never ran the epoch).
    pub decision_kind: &'static str,
}

/// [`InDoubt::decision_kind`] of a coordinator's view (none: not reached).
fn decision_kind(view: Option<&TxnView>) -> &'static str {
    match view.map(|v| v.state.as_str()) {
        Some("committed" | "committing" | APPLIED) => "commit",
        Some("aborted" | "aborting") => "abort",
        Some("unknown") => "none",
        Some("preparing" | "deciding" | "one-phase" | ONE_PHASE_UNANSWERED) => "pending",
        _ => "unknown",
    }
}

/// Every transaction prepared somewhere (or committed and not acked), with
/// the coordinator's decision. Also returns the processes that could not be
/// asked.
pub async fn collect_in_doubt(cluster: &Cluster) -> Result<(Vec<InDoubt>, Vec<String>), Failure> {
    let mut found: BTreeMap<TxnId, InDoubt> = BTreeMap::new();
    let mut unreachable = Vec::new();
    let mut reached = Vec::new();
    for node in &cluster.nodes {
        let views = match cluster.admin(node, AdminRequest::InDoubt).await? {
            Ok(AdminReply::Txns(views)) => views,
            Ok(_) => continue,
            Err(e) => {
                unreachable.push(format!("{} ({e})", node.id));
                continue;
            }
        };
        if node.role == "participant" {
            reached.push(node.id.clone());
        }
        for view in views {
            let Some(txid) = view.txid.clone() else { continue };
            if node.role == "coordinator" && view.state != "committing" && view.state != ONE_PHASE_UNANSWERED {
                continue; // still deciding: not in doubt anywhere yet
            }
            let entry = found.entry(txid.clone()).or_insert_with(|| InDoubt {
                txid: txid.to_string(),
                since_ms: None,
                age_ms: None,
                participants: BTreeMap::new(),
                locks: BTreeMap::new(),
                decision: String::new(),
                decision_kind: "unknown",
            });
            for p in &view.participants {
                entry.participants.entry(p.to_string()).or_insert_with(|| "?".into());
            }
            // The oldest of the participants' prepare times and the
            // coordinator's decision time (commits not delivered everywhere),
            // each aged on its own node's clock.
            entry.since_ms = Some(entry.since_ms.unwrap_or(u64::MAX).min(view.since_ms.unwrap_or(u64::MAX)));
            if let Some(since) = view.since_ms {
                entry.age_ms = Some(entry.age_ms.unwrap_or(0).max(cluster.age_at(node, since)));
            }
            if node.role == "participant" {
                entry.participants.insert(node.id.clone(), view.state.clone());
                entry.locks.insert(node.id.clone(), view.locks.iter().map(|k| key(k)).collect());
            } else {
                for p in &view.unacked {
                    entry.participants.entry(p.to_string()).or_insert_with(|| "?".into());
                }
            }
        }
    }
    for (txid, entry) in found.iter_mut() {
        for (p, state) in entry.participants.iter_mut() {
            if state == "?" {
                *state = if reached.contains(p) { "not in doubt".into() } else { "unreachable".into() };
            }
        }
        entry.since_ms = entry.since_ms.filter(|s| *s != u64::MAX);
        let (words, view) = coordinator_decision(cluster, txid).await?;
        entry.decision = words;
        entry.decision_kind = decision_kind(view.as_ref());
    }
    Ok((found.into_values().collect(), unreachable))
}

/// The decision words for a txid with no Commit record at its coordinator.
/// (Asked, it answers "pending" until its participants have answered its
/// probe: trial 26A read "presumed abort" here while a down participant
/// kept the locks.)
pub const NO_DECISION_LOGGED: &str =
    "none logged (presumed abort once its participants have answered, unless one committed it)";
/// A commit applied by a participant, with no Commit record here.
pub const APPLIED_WORDS: &str =
    "commit (applied at a participant: a one-phase commit, or found applied there; no Commit record)";
/// A txid of an epoch the coordinator's log never ran.
pub const FOREIGN_EPOCH_WORDS: &str =
    "unknown: this coordinator's log never ran that epoch (another instance with its id \
     minted it: another data directory, or a stale cluster file; start the one whose log has it)";

/// The decision words for a one-phase commit sent and not answered.
pub const ONE_PHASE_UNANSWERED_WORDS: &str =
    "none (one-phase commit sent, unanswered: the participant's answer decides; retried until it comes)";

/// How the decision words start when the coordinator could not be asked
/// (the reason follows, then a closing parenthesis).
pub const COORDINATOR_UNREACHABLE: &str = "unknown (coordinator unreachable: ";

/// The owning coordinator's decision for `txid`, in words, and its view.
pub async fn coordinator_decision(cluster: &Cluster, txid: &TxnId) -> Result<(String, Option<TxnView>), Failure> {
    let Some(node) = cluster.node(txid.coordinator.as_str()).filter(|n| n.role == "coordinator") else {
        return Ok((format!("unknown ({} is not a coordinator in the cluster file)", txid.coordinator), None));
    };
    let view = match cluster.admin(node, AdminRequest::Show(txid.clone())).await? {
        Ok(AdminReply::Txn(view)) => *view,
        Ok(other) => return Ok((format!("{COORDINATOR_UNREACHABLE}unexpected reply {other:?})"), None)),
        Err(e) => return Ok((format!("{COORDINATOR_UNREACHABLE}{e})"), None)),
    };
    let words = match view.state.as_str() {
        "committed" | "committing" => "commit (logged)",
        APPLIED => APPLIED_WORDS,
        "aborted" | "aborting" => "abort",
        // No Commit record: asked, the coordinator answers from the
        // participants (committed if one applied it, else aborted).
        "unknown" => NO_DECISION_LOGGED,
        ONE_PHASE_UNANSWERED => ONE_PHASE_UNANSWERED_WORDS,
        FOREIGN_EPOCH => FOREIGN_EPOCH_WORDS,
        "preparing" => "none yet (collecting votes)",
        "deciding" => "commit (being logged)",
        "one-phase" => "none yet (one-phase commit in flight)",
        _ => "deciding",
    };
    Ok((words.into(), Some(view)))
}

/// A map keyed by node id, in the order people count them ([`by_node_id`]).
fn by_node<V>(map: &BTreeMap<String, V>) -> impl Iterator<Item = (&String, &V)> {
    let mut entries: Vec<(&String, &V)> = map.iter().collect();
    entries.sort_by(|a, b| by_node_id(a.0, b.0));
    entries.into_iter()
}

pub async fn in_doubt(cluster: &Cluster, older_than: std::time::Duration, json: bool) -> Result<u8, Failure> {
    let (mut entries, unreachable) = collect_in_doubt(cluster).await?;
    let code = complete_if(unreachable.is_empty());
    // An entry of unknown age is listed: it may be old.
    let min_age_ms = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
    let listed = entries.len();
    entries.retain(|e| e.age_ms.is_none_or(|age| age >= min_age_ms));
    let younger = listed - entries.len();
    if json {
        let report =
            serde_json::json!({ "in_doubt": entries, "younger_not_listed": younger, "unreachable": unreachable });
        out!("{report}");
        return Ok(code);
    }
    let left_out =
        if younger > 0 { format!(" ({younger} younger than {older_than:?} not listed)") } else { String::new() };
    if entries.is_empty() && unreachable.is_empty() {
        out!("no transaction is in doubt{left_out}");
    } else if entries.is_empty() {
        out!("no transaction is in doubt at the processes reached{left_out} (not all could be asked: see below)");
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let states: Vec<String> = by_node(&e.participants).map(|(p, s)| format!("{p}={s}")).collect();
                let locks: Vec<String> = by_node(&e.locks).map(|(p, ks)| format!("{p}:{}", ks.join(","))).collect();
                vec![
                    e.txid.clone(),
                    e.age_ms.map_or_else(|| "-".into(), age),
                    states.join(" "),
                    e.decision.clone(),
                    locks.join(" "),
                ]
            })
            .collect();
        out_raw!("{}", table(&["TXID", "AGE", "PARTICIPANTS", "COORDINATOR DECISION", "LOCKS"], &rows));
        if younger > 0 {
            out!("{younger} younger than {older_than:?} not listed");
        }
        out!("resolve: `twopc admin recover` (coordinator reachable) or `twopc admin resolve TXID --commit|--abort`");
        if entries.iter().any(|e| e.decision == FOREIGN_EPOCH_WORDS) {
            out!(
                "a coordinator that \"never ran that epoch\" runs on another data directory than the one whose \
                 log minted the transaction: start it on that one, then `twopc admin recover`"
            );
        }
    }
    for u in unreachable {
        out!("warning: could not ask {u}");
    }
    Ok(code)
}

pub async fn show(cluster: &Cluster, txid: &TxnId, json: bool) -> Result<u8, Failure> {
    let (decision, coordinator) = coordinator_decision(cluster, txid).await?;
    let mut views: Vec<(String, Result<TxnView, String>)> = Vec::new();
    for node in cluster.participants() {
        let view = match cluster.admin(node, AdminRequest::Show(txid.clone())).await? {
            Ok(AdminReply::Txn(view)) => Ok(*view),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e),
        };
        views.push((node.id.clone(), view));
    }
    // A coordinator whose log never ran the txid's epoch does not know it.
    let known = coordinator.as_ref().is_some_and(|v| v.state != "unknown" && v.state != FOREIGN_EPOCH)
        || views
            .iter()
            .any(|(_, v)| v.as_ref().is_ok_and(|v| !matches!(v.state.as_str(), "unknown" | "forgotten" | "fenced")));
    let mixed = mixed_findings(&decision, coordinator.as_ref(), &views);
    if json {
        let participants: BTreeMap<&str, serde_json::Value> = views
            .iter()
            .map(|(id, v)| (id.as_str(), v.as_ref().map_or_else(|e| serde_json::json!({ "error": e }), view_json)))
            .collect();
        out!(
            "{}",
            serde_json::json!({
                "txid": txid.to_string(), "known": known, "decision": decision,
                "coordinator": coordinator.as_ref().map(view_json), "participants": participants,
                "heuristic_mixed": mixed,
            })
        );
    } else {
        out!("transaction {txid}");
        match &coordinator {
            Some(v) => {
                out!("  coordinator {}: {} -> decision: {decision}", v.node, v.state);
                if !v.participants.is_empty() {
                    out!("    participants: {}", join(&v.participants));
                }
                if !v.unacked.is_empty() {
                    out!("    commit not yet acked by: {}", join(&v.unacked));
                }
            }
            None => out!("  coordinator {}: {decision}", txid.coordinator),
        }
        for (id, view) in &views {
            match view {
                Err(e) => out!("  participant {id}: UNREACHABLE ({e})"),
                Ok(v) => {
                    let state = match v.state.as_str() {
                        "unknown" => "no record (never seen here)",
                        "fenced" => "never seen here (fenced: a late request for it aborts)",
                        "forgotten" => "no record (not involved, or finished and forgotten)",
                        state => state,
                    };
                    let mut line = format!("  participant {id}: {state}");
                    if let Some(since) = v.since_ms {
                        line.push_str(&format!(", prepared {} ago", age(cluster.age_at_id(id, since))));
                    }
                    if !v.locks.is_empty() {
                        let keys: Vec<String> = v.locks.iter().map(|k| key(k)).collect();
                        line.push_str(&format!(", locks {}", keys.join(",")));
                    }
                    if v.writes > 0 {
                        line.push_str(&format!(", {} write(s)", v.writes));
                    }
                    out!("{line}");
                    if let Some(h) = &v.heuristic {
                        out!(
                            "    heuristic {} forced {} ago: {}{}",
                            h.decision,
                            age(cluster.age_at_id(id, h.at_ms)),
                            h.reason,
                            h.conflict.as_ref().map_or_else(String::new, |c| format!(" (coordinator decided {c})"))
                        );
                    }
                }
            }
        }
        for m in &mixed {
            out!("  HEURISTIC-MIXED: {m}");
        }
    }
    let all_reached = views.iter().all(|(_, v)| v.is_ok()) && !decision.contains("unreachable");
    // A process not reached may know more: the story is incomplete.
    Ok(if !all_reached {
        ADMIN_INCOMPLETE
    } else if known {
        ADMIN_OK
    } else {
        ADMIN_UNKNOWN_TXN
    })
}

/// One process's view as JSON, in the admin JSON's own terms: the txid as
/// `c1.2.3`, keys as text.
fn view_json(v: &TxnView) -> serde_json::Value {
    serde_json::json!({
        "node": v.node, "state": v.state, "txid": v.txid.as_ref().map(ToString::to_string),
        "participants": v.participants, "since_ms": v.since_ms,
        "locks": v.locks.iter().map(|k| key(k)).collect::<Vec<_>>(), "writes": v.writes,
        "unacked": v.unacked, "heuristic": v.heuristic, "mixed": v.mixed,
    })
}

/// Every disagreement between a forced outcome and the coordinator.
pub fn mixed_findings(
    decision: &str,
    coordinator: Option<&TxnView>,
    views: &[(String, Result<TxnView, String>)],
) -> Vec<String> {
    let mut found: Vec<String> = coordinator
        .map(|c| c.mixed.iter().map(|p| format!("{p} refused the coordinator's commit (forced to abort)")).collect())
        .unwrap_or_default();
    let forced: Vec<&str> =
        views.iter().filter_map(|(_, v)| v.as_ref().ok()?.heuristic.as_ref()).map(|h| h.decision.as_str()).collect();
    if decision == NO_DECISION_LOGGED && forced.contains(&"commit") && forced.contains(&"abort") {
        // No decision to compare with: forced outcomes that disagree are
        // mixed among themselves. (Forced the same way everywhere, they
        // are the outcome: the coordinator adopts a participant's commit.)
        found.push("participants were forced to different outcomes (no coordinator decision logged)".into());
    }
    for (id, view) in views {
        let Ok(view) = view else { continue };
        let Some(h) = &view.heuristic else { continue };
        let coordinator_commits = decision.starts_with("commit");
        let coordinator_aborts = decision.starts_with("abort");
        let disagrees =
            (h.decision == "commit" && coordinator_aborts) || (h.decision == "abort" && coordinator_commits);
        if (disagrees || h.conflict.is_some()) && !found.iter().any(|f| f.starts_with(id.as_str())) {
            found.push(format!("{id} was forced to {} but the coordinator's decision is {decision}", h.decision));
        }
    }
    found
}

fn join(ids: &[twopc_common::NodeId]) -> String {
    ids.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

pub async fn locks(cluster: &Cluster, key_filter: Option<String>, json: bool) -> Result<u8, Failure> {
    let want = key_filter.map(String::into_bytes);
    // A key's locks are at its owner alone: only that one need answer
    // (trial 25A: with another participant down, every key was
    // "incomplete", and the owner, when down, was not named).
    let owner = want.as_deref().map(|k| cluster.ring.owner(k).to_string());
    let mut rows = Vec::new();
    let mut all = Vec::new();
    let mut unreachable = Vec::new();
    for node in cluster.participants().filter(|n| owner.as_ref().is_none_or(|o| *o == n.id)) {
        match cluster.admin(node, AdminRequest::Locks { key: want.clone() }).await? {
            Ok(AdminReply::Locks(locks)) => {
                for l in locks {
                    let held = cluster.age_at(node, l.since_ms);
                    rows.push(vec![key(&l.key), l.holder.to_string(), node.id.clone(), age(held)]);
                    all.push(serde_json::json!({
                        "key": key(&l.key), "holder": l.holder.to_string(), "participant": node.id,
                        "since_ms": l.since_ms, "held_ms": held,
                    }));
                }
            }
            Ok(_) => {}
            Err(e) => unreachable.push(unreachable_note(node, &e)),
        }
    }
    let code = complete_if(unreachable.is_empty());
    if json {
        out!("{}", serde_json::json!({ "locks": all, "unreachable": unreachable }));
    } else {
        if let (true, false, Some(owner)) = (rows.is_empty(), unreachable.is_empty(), &owner) {
            out!("unknown: the key's participant, {owner}, could not be asked (see below)");
        } else if rows.is_empty() && !unreachable.is_empty() {
            // The key may live at one not asked (trial 24C: "no locks held"
            // with the key's own participant stopped).
            out!("no locks held at the participants reached (not all could be asked: see below)");
        } else if rows.is_empty() {
            out!("no locks held");
        } else {
            out_raw!("{}", table(&["KEY", "HOLDER", "PARTICIPANT", "HELD FOR"], &rows));
        }
        for u in unreachable {
            out!("warning: could not ask {u}");
        }
    }
    Ok(code)
}

/// One forced outcome, as `heuristics` lists it.
struct Forced {
    txid: TxnId,
    participant: String,
    decision: String,
    /// When it was forced; unknown for a finding only a coordinator holds.
    at_ms: Option<u64>,
    reason: String,
    /// The coordinator's decision, when it is the other one.
    against: Option<String>,
}

impl Forced {
    fn at_participant(txid: TxnId, participant: String, h: HeuristicView) -> Forced {
        Forced { txid, participant, decision: h.decision, at_ms: Some(h.at_ms), reason: h.reason, against: h.conflict }
    }

    /// A coordinator's heuristic-mixed finding whose participant no
    /// longer keeps its record (forgotten there with --force).
    fn at_coordinator(txid: TxnId, participant: String, coordinator: &str) -> Forced {
        let reason = format!(
            "reported by {coordinator}: {participant} refused its commit, having been forced to abort; \
             {participant}'s own record was forgotten"
        );
        Forced { txid, participant, decision: "abort".into(), at_ms: None, reason, against: Some("commit".into()) }
    }
}

/// Every forced outcome at every participant, and every heuristic-mixed
/// finding a coordinator holds whose participant no longer has its record
/// (forgotten there with --force), mixed ones first.
pub async fn heuristics(cluster: &Cluster, json: bool) -> Result<u8, Failure> {
    let mut found = Vec::new();
    let mut at_coordinators = Vec::new();
    let mut unreachable = Vec::new();
    for node in &cluster.nodes {
        match cluster.admin(node, AdminRequest::Heuristics).await? {
            Ok(AdminReply::Txns(views)) => {
                for view in views {
                    let Some(txid) = view.txid else { continue };
                    if let Some(h) = view.heuristic {
                        found.push(Forced::at_participant(txid, node.id.clone(), h));
                        continue;
                    }
                    for participant in view.mixed {
                        at_coordinators.push(Forced::at_coordinator(txid.clone(), participant.to_string(), &node.id));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => unreachable.push(unreachable_note(node, &e)),
        }
    }
    for finding in at_coordinators {
        if !found.iter().any(|f| f.txid == finding.txid && f.participant == finding.participant) {
            found.push(finding);
        }
    }
    found.sort_by(|a, b| {
        (a.against.is_none(), &a.txid, &a.participant).cmp(&(b.against.is_none(), &b.txid, &b.participant))
    });
    // The coordinator's decision, asked once per transaction (it was
    // given only when it disagreed: null for a forced abort the
    // coordinator also decided, trial 21B).
    let mut decisions = BTreeMap::new();
    for f in &found {
        if !decisions.contains_key(&f.txid) {
            let (words, _) = coordinator_decision(cluster, &f.txid).await?;
            decisions.insert(f.txid.clone(), words);
        }
    }
    let decision_of = |f: &Forced| match &f.against {
        // What the finding was recorded against (the coordinator's log
        // says so too, unless the finding outlived its record).
        Some(against) if !decisions[&f.txid].starts_with(against.as_str()) => against.clone(),
        _ => decisions[&f.txid].clone(),
    };
    let code = complete_if(unreachable.is_empty());
    if json {
        let all: Vec<_> = found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "txid": f.txid.to_string(), "participant": f.participant, "forced": f.decision,
                    "at_ms": f.at_ms, "reason": f.reason, "mixed": f.against.is_some(),
                    "coordinator_decision": decision_of(f),
                })
            })
            .collect();
        out!("{}", serde_json::json!({ "heuristics": all, "unreachable": unreachable }));
        return Ok(code);
    }
    if found.is_empty() && unreachable.is_empty() {
        out!("no outcome was forced");
    } else if found.is_empty() {
        out!("no outcome was forced at the processes reached (not all could be asked: see below)");
    } else {
        let rows: Vec<Vec<String>> = found
            .iter()
            .map(|f| {
                vec![
                    f.txid.to_string(),
                    f.participant.clone(),
                    f.decision.clone(),
                    match &f.against {
                        Some(_) => format!("MIXED: {}", decision_of(f)),
                        None => decision_of(f),
                    },
                    f.at_ms.map_or_else(|| "-".into(), |at| age(cluster.age_at_id(&f.participant, at))),
                    f.reason.clone(),
                ]
            })
            .collect();
        out_raw!("{}", table(&["TXID", "PARTICIPANT", "FORCED", "COORDINATOR DECISION", "AGO", "REASON"], &rows));
        if found.iter().any(|f| f.against.is_some()) {
            out!("MIXED: an outcome was forced against the coordinator's decision, so that transaction is not atomic (some participants may have applied the other outcome, and the coordinator reports its own); check and repair its data by hand (`twopc admin show TXID` has its participants)");
        }
    }
    for u in unreachable {
        out!("warning: could not ask {u}");
    }
    Ok(code)
}

fn unreachable_note(node: &Node, e: &str) -> String {
    format!("{} ({e})", node.id)
}
