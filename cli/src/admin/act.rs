//! The admin commands that change state: `recover` and `resolve`.

use super::inspect::{collect_in_doubt, coordinator_decision};
use super::nodes::Cluster;
use super::{Failure, ADMIN_OK, ADMIN_REFUSED, ADMIN_UNKNOWN_TXN};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use twopc_common::admin::{AdminReply, AdminRequest};
use twopc_common::TxnId;

/// How often `recover` looks again while waiting.
const RECOVER_POLL: Duration = Duration::from_millis(250);

pub async fn recover(cluster: &Cluster, wait: Duration, json: bool) -> Result<u8, Failure> {
    let (before, _) = collect_in_doubt(cluster).await?;
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
    // A progress line redrawn in place: only on a terminal.
    let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let after = loop {
        let (now, _) = collect_in_doubt(cluster).await?;
        if now.is_empty() || Instant::now() >= deadline {
            break now;
        }
        if progress {
            eprint!("\rwaiting for {} transaction(s) to resolve...", now.len());
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
        println!(
            "{}",
            serde_json::json!({
                "asked": asked, "resolved": resolved, "still_in_doubt": after, "unreachable": unreachable,
            })
        );
    } else {
        for (id, n) in &asked {
            println!("{id}: re-sent {n} question(s)/commit(s)");
        }
        println!("resolved {} transaction(s){}", resolved.len(), list(&resolved));
        if after.is_empty() {
            println!("nothing is in doubt");
        } else {
            println!("still in doubt: {}", after.len());
            for e in &after {
                println!("  {} (coordinator decision: {})", e.txid, e.decision);
            }
        }
        for u in &unreachable {
            println!("warning: could not ask {u}");
        }
    }
    Ok(if after.is_empty() { ADMIN_OK } else { ADMIN_REFUSED })
}

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
    let (decision, view) = coordinator_decision(cluster, txid).await?;
    let reachable = view.is_some();
    let agrees = decision.starts_with(wanted);
    let refusal = if !reachable {
        Some(format!(
            "the coordinator of {txid} cannot be reached, so its decision is unknown; \
             --force to {wanted} anyway (you take responsibility: if it decided otherwise, \
             the mismatch will be reported as heuristic-mixed)"
        ))
    } else if decision == "deciding" {
        Some(format!(
            "the coordinator is still deciding {txid}; wait, or run `twopc admin recover`; --force to override"
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
    let reason = if refusal.is_some() { format!("{reason} (forced against: {decision})") } else { reason.to_string() };
    let mut resolved = Vec::new();
    let mut failed = Vec::new();
    for node in cluster.participants() {
        let state = match cluster.admin(node, AdminRequest::Show(txid.clone())).await? {
            Ok(AdminReply::Txn(view)) => view.state,
            Ok(_) => continue,
            Err(e) => {
                failed.push(format!("{}: unreachable ({e})", node.id));
                continue;
            }
        };
        if state != "prepared" {
            continue;
        }
        let request = AdminRequest::Resolve { txid: txid.clone(), commit, reason: reason.clone() };
        match cluster.admin(node, request).await? {
            Ok(_) => resolved.push(node.id.clone()),
            Err(e) => failed.push(format!("{}: {e}", node.id)),
        }
    }
    if resolved.is_empty() && failed.is_empty() {
        return Err(Failure::new(ADMIN_UNKNOWN_TXN, format!("{txid} is not in doubt at any reachable participant")));
    }
    let forced_against = refusal.is_some();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "txid": txid.to_string(), "applied": wanted, "coordinator_decision": decision,
                "forced": forced_against, "resolved": resolved, "failed": failed,
            })
        );
    } else {
        println!("{txid}: {wanted} applied at {} (coordinator decision: {decision})", resolved.join(", "));
        if forced_against {
            println!("recorded as heuristic at each participant; a conflicting coordinator decision will be reported as heuristic-mixed");
        }
        for f in &failed {
            println!("warning: {f}");
        }
    }
    Ok(if failed.is_empty() { ADMIN_OK } else { ADMIN_REFUSED })
}
