//! The admin commands that change state: `recover` and `resolve`.

use super::inspect::{
    collect_in_doubt, coordinator_decision, InDoubt, COORDINATOR_UNREACHABLE, FOREIGN_EPOCH_WORDS, NO_DECISION_LOGGED,
};
use super::nodes::Cluster;
use super::{Failure, ADMIN_INCOMPLETE, ADMIN_OK, ADMIN_REFUSED, ADMIN_UNKNOWN_TXN};
use crate::say::{out, out_raw, say_err};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use twopc_common::admin::{AdminReply, AdminRequest, TxnView, NOT_IN_DOUBT_HERE};
use twopc_common::TxnId;

/// How often `recover` looks again while waiting.
const RECOVER_POLL: Duration = Duration::from_millis(250);

pub async fn recover(cluster: &Cluster, wait: Duration, older_than: Duration, json: bool) -> Result<u8, Failure> {
    // An entry of unknown age counts: it may be old.
    let min_age_ms = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
    let old_enough = |e: &InDoubt| e.age_ms.is_none_or(|age| age >= min_age_ms);
    let (mut before, _) = collect_in_doubt(cluster).await?;
    before.retain(old_enough);
    let mut asked = Vec::new();
    let mut unreachable = Vec::new();
    for node in &cluster.nodes {
        match cluster.admin(node, AdminRequest::Recover).await? {
            Ok(AdminReply::Recovered { asked: n }) => asked.push((node.id.clone(), n)),
            Ok(_) => {}
            Err(e) => unreachable.push(format!("{} ({e})", node.id)),
        }
    }
    let deadline = Instant::now() + wait;
    // A progress line redrawn in place on a terminal; elsewhere (a log,
    // a pipe) one line when the waiting starts (trial 24C: 10 s silent).
    let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut said_waiting = progress || json;
    let (after, younger, not_asked) = loop {
        let (mut now, not_asked) = collect_in_doubt(cluster).await?;
        let listed = now.len();
        now.retain(old_enough);
        if now.is_empty() || Instant::now() >= deadline {
            let younger = listed - now.len();
            break (now, younger, not_asked);
        }
        if progress {
            eprint!("\rwaiting for {} transaction(s) to resolve...", now.len());
        } else if !said_waiting {
            say_err!("waiting up to {wait:?} for {} transaction(s) to resolve...", now.len());
            said_waiting = true;
        }
        tokio::time::sleep(RECOVER_POLL).await;
    };
    if progress {
        eprint!("\r\x1b[K");
    }
    let left: BTreeSet<&str> = after.iter().map(|e| e.txid.as_str()).collect();
    let resolved: Vec<&str> = before.iter().map(|e| e.txid.as_str()).filter(|t| !left.contains(t)).collect();
    if json {
        let asked: serde_json::Map<String, serde_json::Value> =
            asked.iter().map(|(id, n)| (id.clone(), serde_json::json!(n))).collect();
        out!(
            "{}",
            serde_json::json!({
                "asked": asked, "resolved": resolved, "still_in_doubt": after,
                "younger_not_counted": younger, "unreachable": unreachable, "not_checked": not_asked,
            })
        );
    } else {
        for (id, n) in &asked {
            out!("{id}: re-sent {n} question(s)/commit(s)");
        }
        out!("resolved {} transaction(s){}", resolved.len(), list(&resolved));
        if younger > 0 {
            out!("{younger} prepared less than {older_than:?} ago not counted (--older-than)");
        }
        // Not "nothing is in doubt" of younger ones left out (trial 27A:
        // said 4 s after a crash, of a transaction truly stuck).
        let nothing = if younger > 0 {
            format!("nothing prepared {older_than:?} ago or more is in doubt")
        } else {
            "nothing is in doubt".to_string()
        };
        if after.is_empty() && not_asked.is_empty() {
            out!("{nothing}");
        } else if after.is_empty() {
            // An unreachable participant may hold prepared transactions.
            out!("{nothing} at the processes reached; not checked: {}", not_asked.join(", "));
        } else {
            out!("still in doubt: {}", after.len());
            out_raw!("{}", by_decision(&after));
        }
        for u in &unreachable {
            out!("warning: could not ask {u}");
        }
    }
    // Incomplete first: a process not checked may hold more in doubt.
    Ok(if !unreachable.is_empty() || !not_asked.is_empty() {
        ADMIN_INCOMPLETE
    } else if !after.is_empty() {
        ADMIN_REFUSED
    } else {
        ADMIN_OK
    })
}

/// Transactions listed by their coordinator's decision, each decision
/// said once (a thousand left in doubt behind one unreachable coordinator
/// repeated its long reason a thousand times), at most
/// [`LISTED_PER_DECISION`] txids each.
fn by_decision(entries: &[InDoubt]) -> String {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in entries {
        groups.entry(e.decision.as_str()).or_default().push(e.txid.as_str());
    }
    let mut out = String::new();
    for (decision, txids) in groups {
        out.push_str(&format!("  coordinator decision {decision}: {}\n", txids.len()));
        let more = txids.len().saturating_sub(LISTED_PER_DECISION);
        out.push_str(&format!("    {}", txids[..txids.len() - more].join(" ")));
        if more > 0 {
            out.push_str(&format!(" and {more} more (`twopc admin in-doubt` lists every one)"));
        }
        out.push('\n');
    }
    out
}

/// Txids `recover` lists per coordinator decision.
const LISTED_PER_DECISION: usize = 20;

fn list(txids: &[&str]) -> String {
    if txids.is_empty() {
        String::new()
    } else {
        format!(": {}", txids.join(", "))
    }
}

pub async fn resolve(
    cluster: &Cluster,
    txid: &TxnId,
    commit: bool,
    force: bool,
    reason: &str,
    json: bool,
) -> Result<u8, Failure> {
    let wanted = if commit { "commit" } else { "abort" };
    // Where it is in doubt, first: a txid no participant holds prepared
    // needs no decision (and is refused as unknown, whatever is asked).
    let mut holders = Vec::new();
    let mut views = Vec::new();
    let mut failed = Vec::new();
    let mut unreachable = BTreeSet::new();
    for node in cluster.participants() {
        match cluster.admin(node, AdminRequest::Show(txid.clone())).await? {
            Ok(AdminReply::Txn(view)) => {
                if view.state == "prepared" {
                    holders.push(node);
                }
                views.push(*view);
            }
            Ok(_) => {}
            Err(e) => {
                failed.push(format!("{}: unreachable ({e})", node.id));
                unreachable.insert(node.id.clone());
            }
        }
    }
    if !holders.is_empty() {
        let cannot = cannot_take(commit, &views);
        if !cannot.is_empty() {
            let other = if commit { "--abort" } else { "--commit" };
            return Err(Failure::new(
                ADMIN_REFUSED,
                format!(
                    "{txid} cannot {wanted} atomically: {}. Forcing {wanted} would apply it at some participants \
                     only, so it is refused even with --force; the outcome that keeps it atomic is {other} \
                     (`twopc admin resolve {txid} {other}`, with --force if its coordinator cannot tell)",
                    cannot.join("; ")
                ),
            ));
        }
    }
    if holders.is_empty() {
        let code = if failed.is_empty() { ADMIN_UNKNOWN_TXN } else { ADMIN_INCOMPLETE };
        let mut message = format!("{txid} is not in doubt at any reachable participant");
        // What they hold instead (trial 18C: an abort refused this way
        // with others committed did not say so).
        let states: Vec<String> =
            views.iter().filter(|v| v.state != "unknown").map(|v| format!("{}: {}", v.node, v.state)).collect();
        if !states.is_empty() {
            message.push_str(&format!(" ({})", states.join(", ")));
            if views.iter().any(|v| v.state == "committed") && !commit {
                message.push_str("; it committed there, so it cannot be aborted: the others learn the commit");
            }
        }
        if !failed.is_empty() {
            message.push_str(&format!(" (not asked: {})", failed.join("; ")));
        }
        return Err(Failure::new(code, message));
    }
    let (decision, view) = coordinator_decision(cluster, txid).await?;
    // The coordinator is up and deciding it right now: it will decide
    // within its deadlines and tell the participants. Forcing meanwhile can
    // only break atomicity (a user forced an abort while the votes were
    // being collected; the last vote came, and the client heard
    // "committed" with one write of five applied), so not even --force.
    let state = view.as_ref().map(|v| v.state.as_str());
    if matches!(state, Some("preparing" | "deciding" | "one-phase")) {
        return Err(Failure::new(
            ADMIN_REFUSED,
            format!(
                "the coordinator is up and deciding {txid} now ({decision}): it decides within its 5 s \
                 prepare deadline and tells the participants. Forcing an outcome meanwhile could only break \
                 atomicity, so it is refused even with --force; wait, then run `twopc admin recover`"
            ),
        ));
    }
    // With no decision logged, abort is what the coordinator presumes.
    let agrees = decision.starts_with(wanted) || (!commit && decision == NO_DECISION_LOGGED);
    let refusal = if view.is_none() {
        let why = if let Some(e) = decision.strip_prefix(COORDINATOR_UNREACHABLE) {
            let e = e.strip_suffix(')').unwrap_or(e);
            format!("the coordinator of {txid} cannot be reached ({e}), so its decision is unknown")
        } else {
            format!("the decision of {txid} is {decision}")
        };
        Some(format!(
            "{why}; --force to {wanted} anyway (you take responsibility: \
             if its coordinator decided otherwise, the mismatch will be reported as heuristic-mixed)"
        ))
    } else if decision == "deciding" {
        Some(format!(
            "the coordinator is still deciding {txid}; wait, or run `twopc admin recover`; --force to override"
        ))
    } else if decision == FOREIGN_EPOCH_WORDS {
        Some(format!(
            "the coordinator of {txid} runs on a log that never ran its epoch, so no decision can be known \
             here: start that coordinator on the data directory whose log minted {txid} (then `twopc admin \
             recover`), or --force to {wanted} anyway (if that log decided otherwise, the mismatch will be \
             reported as heuristic-mixed)"
        ))
    } else if !agrees {
        Some(format!(
            "the coordinator's decision for {txid} is {decision}; forcing {wanted} would break atomicity \
             (heuristic-mixed). Run `twopc admin recover` to apply the logged decision, or --force to override"
        ))
    } else {
        None
    };
    if let (Some(refusal), false) = (&refusal, force) {
        return Err(Failure::new(ADMIN_REFUSED, refusal.clone()));
    }
    // A commit no coordinator decision backs needs every participant's
    // yes: one that cannot be reached may never have prepared (its
    // prepare lost), and would then be left out for good, with nothing
    // to tell (trial 16C: committed at p1, p2; p3 never had it). An
    // abort is safe whatever it holds.
    let down: Vec<&str> = involved(&views).into_iter().filter(|p| unreachable.contains(*p)).collect();
    if commit && refusal.is_some() && !down.is_empty() {
        return Err(Failure::new(
            ADMIN_REFUSED,
            format!(
                "{} of {txid} cannot be reached, so whether it voted yes is unknown: it may never have prepared \
                 it, and a commit forced now would leave it out for good. Bring it back and run this again, or \
                 abort (safe whatever it holds: `twopc admin resolve {txid} --abort --force`); refused even with \
                 --force",
                down.join(", ")
            ),
        ));
    }
    let reason = if refusal.is_some() { format!("{reason} (forced against: {decision})") } else { reason.to_string() };
    let mut resolved = Vec::new();
    // In the cluster file's order, and stopping at a participant that took
    // another outcome meanwhile: two operators resolving it opposite ways
    // at once (trial 16C) meet at the first participant, where one wins
    // and the other stops before applying anything.
    let mut stopped = None;
    for node in holders {
        let request = AdminRequest::Resolve { txid: txid.clone(), commit, reason: reason.clone() };
        match cluster.admin(node, request).await? {
            Ok(_) => resolved.push(node.id.clone()),
            Err(e) if e.contains(NOT_IN_DOUBT_HERE) => {
                stopped = Some(format!("{}: {e}", node.id));
                break;
            }
            Err(e) => failed.push(format!("{}: {e}", node.id)),
        }
    }
    if let Some(why) = stopped {
        let applied = if resolved.is_empty() {
            "nothing was applied".to_string()
        } else {
            format!("applied at {}", resolved.join(", "))
        };
        return Err(Failure::new(
            ADMIN_REFUSED,
            format!(
                "stopped: {why} (resolved meanwhile, by another `twopc admin resolve` or its coordinator); \
                 {applied}. See `twopc admin show {txid}`"
            ),
        ));
    }
    let forced_against = refusal.is_some();
    if json {
        out!(
            "{}",
            serde_json::json!({
                "txid": txid.to_string(), "applied": wanted, "coordinator_decision": decision,
                "forced": forced_against, "resolved": resolved, "failed": failed,
            })
        );
    } else {
        out!("{txid}: {wanted} applied at {} (coordinator decision: {decision})", resolved.join(", "));
        if forced_against {
            out!("recorded as heuristic at each participant; a conflicting coordinator decision will be reported as heuristic-mixed");
        }
        for f in &failed {
            out!("warning: {f}");
        }
    }
    // A participant not reached (or that failed to apply) may still hold
    // it prepared: the report is incomplete, as for every admin command.
    Ok(if failed.is_empty() { ADMIN_OK } else { ADMIN_INCOMPLETE })
}

/// The transaction's participants, as its prepared records list them.
fn involved(views: &[TxnView]) -> BTreeSet<&str> {
    views.iter().filter(|v| v.state == "prepared").flat_map(|v| v.participants.iter().map(|p| p.as_str())).collect()
}

/// Why `commit` (else abort) cannot be applied everywhere: a participant
/// of the transaction (as its prepared records list them) that took, or
/// can only take, the other outcome. One that never prepared it cannot
/// commit it (it never voted yes); one that applied a commit (the
/// coordinator's, or one forced here) cannot abort it. One whose
/// decision was forgotten, or that is unreachable, proves nothing.
fn cannot_take(commit: bool, views: &[TxnView]) -> Vec<String> {
    let involved = involved(views);
    let forced = |v: &TxnView| if v.heuristic.is_some() { " (forced by an operator)" } else { "" };
    views
        .iter()
        .filter(|v| involved.contains(v.node.as_str()))
        .filter_map(|v| match (commit, v.state.as_str()) {
            (true, "unknown" | "fenced") => Some(format!("{} has no record of it (it never prepared it)", v.node)),
            (true, "aborted") => Some(format!("{} aborted it{}", v.node, forced(v))),
            (false, "committed" | "applying") => Some(format!("{} committed it{}", v.node, forced(v))),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use twopc_common::admin::HeuristicView;
    use twopc_common::NodeId;

    fn view(node: &str, state: &str, participants: &[&str]) -> TxnView {
        TxnView {
            node: node.into(),
            state: state.into(),
            participants: participants.iter().map(|p| NodeId::new(p).unwrap()).collect(),
            ..Default::default()
        }
    }

    /// Trial 16A: a forced commit while p3 (restarted, never prepared)
    /// had no record applied the transaction at p1 and p2 only.
    #[test]
    fn an_outcome_a_participant_cannot_take_is_named() {
        let all = ["p1", "p2", "p3"];
        let views = [view("p1", "prepared", &all), view("p2", "prepared", &all), view("p3", "unknown", &[])];
        assert_eq!(cannot_take(true, &views), vec!["p3 has no record of it (it never prepared it)"]);
        assert!(cannot_take(false, &views).is_empty());

        let mut forced = view("p1", "committed", &[]);
        forced.heuristic =
            Some(HeuristicView { decision: "commit".into(), at_ms: 0, reason: String::new(), conflict: None });
        let views = [forced, view("p2", "committed", &[]), view("p3", "prepared", &all)];
        assert_eq!(cannot_take(false, &views), vec!["p1 committed it (forced by an operator)", "p2 committed it"]);
        assert!(cannot_take(true, &views).is_empty());

        let views = [view("p1", "prepared", &["p1", "p2"]), view("p2", "forgotten", &[]), view("p3", "unknown", &[])];
        assert!(cannot_take(true, &views).is_empty(), "a forgotten decision or an uninvolved node proves nothing");
    }

    fn entry(txid: &str, decision: &str) -> InDoubt {
        InDoubt {
            txid: txid.into(),
            since_ms: None,
            age_ms: None,
            participants: BTreeMap::new(),
            locks: BTreeMap::new(),
            decision: decision.into(),
            decision_kind: "unknown",
        }
    }

    #[test]
    fn each_decision_is_said_once_with_at_most_twenty_txids() {
        let mut entries: Vec<InDoubt> = (0..25).map(|i| entry(&format!("c1.1.{i}"), "unknown (down)")).collect();
        entries.push(entry("c2.1.1", "abort"));
        let out = by_decision(&entries);
        assert_eq!(out.matches("unknown (down)").count(), 1, "{out}");
        assert!(out.contains("coordinator decision unknown (down): 25\n"), "{out}");
        assert!(out.contains("c1.1.19 and 5 more"), "{out}");
        assert!(!out.contains("c1.1.20"), "{out}");
        assert!(out.contains("coordinator decision abort: 1\n    c2.1.1\n"), "{out}");
    }
}
