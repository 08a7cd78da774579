//! `twopc admin forget`: an operator acknowledges the forced (heuristic)
//! outcome of a transaction once dealt with, so that it stops being
//! reported. Only a settled record is forgotten without `--force`: one
//! whose coordinator decision can no longer arrive and contradict it.

use super::inspect::coordinator_decision;
use super::nodes::Cluster;
use super::{Failure, ADMIN_INCOMPLETE, ADMIN_OK, ADMIN_REFUSED, ADMIN_UNKNOWN_TXN};
use crate::say::out;
use twopc_common::admin::{AdminReply, AdminRequest, HeuristicView, APPLIED};
use twopc_common::TxnId;

pub async fn forget(cluster: &Cluster, txid: &TxnId, force: bool, json: bool) -> Result<u8, Failure> {
    let mut forced = Vec::new();
    let mut unreachable = Vec::new();
    for node in cluster.participants() {
        match cluster.admin(node, AdminRequest::Show(txid.clone())).await? {
            Ok(AdminReply::Txn(view)) => forced.extend(view.heuristic.map(|h| (node, h))),
            Ok(_) => {}
            Err(e) => unreachable.push(format!("{} ({e})", node.id)),
        }
    }
    let (decision, view) = coordinator_decision(cluster, txid).await?;
    if view.is_none() {
        // It may hold a heuristic-mixed finding of the txid: not cleared.
        unreachable.push(format!("coordinator {} ({decision})", txid.coordinator));
    }
    let mixed_at_coordinator = view.as_ref().is_some_and(|v| !v.mixed.is_empty());
    if forced.is_empty() && !mixed_at_coordinator {
        let mut message = format!("no forced outcome of {txid} is recorded at any reachable process");
        if !unreachable.is_empty() {
            message.push_str(&format!(" (not asked: {})", unreachable.join(", ")));
            return Err(Failure::new(ADMIN_INCOMPLETE, message));
        }
        return Err(Failure::new(ADMIN_UNKNOWN_TXN, message));
    }
    let state = view.as_ref().map(|v| v.state.as_str());
    let unsettled: Vec<String> = forced
        .iter()
        .filter(|(_, h)| !settled(h, state))
        .map(|(node, h)| format!("{} was forced to {}", node.id, h.decision))
        .collect();
    if !unsettled.is_empty() && !force {
        return Err(Failure::new(
            ADMIN_REFUSED,
            format!(
                "{}, and the coordinator's decision for {txid} is {decision}: that does not confirm the \
                 forced outcome, and no mismatch is recorded. Forgetting it now could hide a heuristic-mixed \
                 transaction. Run `twopc admin recover` first (a decision still on its way then arrives, and \
                 a mismatch is recorded), see `twopc admin show {txid}`, or --force to forget anyway",
                unsettled.join("; ")
            ),
        ));
    }
    let mut forgotten = Vec::new();
    let mut failed = Vec::new();
    for (node, _) in &forced {
        match cluster.admin(node, AdminRequest::Forget(txid.clone())).await? {
            Ok(_) => forgotten.push(node.id.clone()),
            Err(e) => failed.push(format!("{}: {e}", node.id)),
        }
    }
    // The coordinator's finding goes last, once no participant holds a
    // forced outcome of it any more: the alarm stays until all is done.
    let coordinator = cluster.node(txid.coordinator.as_str()).filter(|_| mixed_at_coordinator);
    if let Some(node) = coordinator.filter(|_| failed.is_empty()) {
        match cluster.admin(node, AdminRequest::Forget(txid.clone())).await? {
            Ok(_) => forgotten.push(node.id.clone()),
            Err(e) => failed.push(format!("{}: {e}", node.id)),
        }
    }
    // Trial 24C: `outcome` answered "committed" for a commit forced to
    // abort everywhere, and nothing had said it would. Only once the
    // coordinator's finding is gone: until then it still says "mixed".
    let outcome_note = coordinator.filter(|c| forgotten.contains(&c.id)).map(|_| {
        format!(
            "`twopc outcome {txid}` now answers the coordinator's decision ({decision}) again, whatever the \
             forced participants hold"
        )
    });
    if json {
        out!(
            "{}",
            serde_json::json!({
                "txid": txid.to_string(), "forgotten_at": forgotten, "coordinator_decision": decision,
                "forced": !unsettled.is_empty(), "failed": failed, "unreachable": unreachable,
                "note": outcome_note,
            })
        );
    } else {
        out!("{txid}: forgotten at {} (coordinator decision: {decision})", forgotten.join(", "));
        if let Some(note) = &outcome_note {
            out!("note: {note}");
        }
        for f in &failed {
            out!("warning: not forgotten at {f}");
        }
        for u in &unreachable {
            out!("warning: could not ask {u}; a forced outcome recorded there is left");
        }
    }
    Ok(if failed.is_empty() && unreachable.is_empty() { ADMIN_OK } else { ADMIN_INCOMPLETE })
}

/// A forced outcome no decision of the coordinator can contradict later
/// unnoticed: the mismatch is already recorded, or the coordinator's
/// decision (`state`, its view) is the same one. A coordinator with no
/// record of the txid and none in progress will only ever answer
/// "aborted" (presumed abort; a commit it ended would have reached this
/// participant, which refused it and recorded the mismatch).
fn settled(forced: &HeuristicView, state: Option<&str>) -> bool {
    forced.conflict.is_some()
        || matches!(
            (forced.decision.as_str(), state),
            ("commit", Some("committed" | "committing" | APPLIED))
                | ("abort", Some("aborted" | "aborting" | "unknown"))
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forced(decision: &str, conflict: Option<&str>) -> HeuristicView {
        HeuristicView { decision: decision.into(), at_ms: 1, reason: "test".into(), conflict: conflict.map(Into::into) }
    }

    #[test]
    fn only_a_forced_outcome_no_later_decision_can_contradict_is_settled() {
        assert!(settled(&forced("commit", None), Some("committed")));
        assert!(settled(&forced("commit", None), Some("committing")));
        assert!(settled(&forced("abort", None), Some("aborted")));
        assert!(settled(&forced("abort", None), Some("unknown")));
        assert!(settled(&forced("abort", Some("commit")), Some("committed")), "mismatch recorded");
        assert!(settled(&forced("abort", Some("commit")), None), "mismatch recorded, coordinator down");
        assert!(!settled(&forced("abort", None), Some("committing")), "its commit is still on its way");
        assert!(!settled(&forced("commit", None), Some("unknown")), "presumed abort would contradict it");
        assert!(!settled(&forced("commit", None), Some("aborted")));
        assert!(!settled(&forced("commit", None), None), "coordinator unreachable");
        assert!(!settled(&forced("abort", None), Some("foreign-epoch")));
        assert!(!settled(&forced("commit", None), Some("preparing")));
    }
}
