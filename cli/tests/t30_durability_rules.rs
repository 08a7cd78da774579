//! The three durability rules, each pinned by a crash at the moment the rule
//! protects, and each with a negative control: the same run with the rule
//! broken on purpose (`TWOPC_SABOTAGE`) must lose what the rule protects,
//! proving the check can fail.
//!
//! 1. sync before vote (the participant's Prepared record);
//! 2. sync before Committed (the coordinator's Commit record);
//! 3. sync before ack (a participant's commit ack lets the coordinator
//!    forget the transaction, so the apply it acknowledges must be durable;
//!    the apply itself is written unsynced and shares a later sync).
//!
//! The WAL keeps unsynced writes in RocksDB's user-space buffer
//! (`manual_wal_flush`), so a SIGKILL loses exactly what a power cut would.

mod support;

use anyhow::Result;
use std::time::Duration;
use support::Cluster;
use twopc_common::client::ClientError;
use twopc_common::TxnId;

/// p1 crashes right after its Prepared record "synced", before it votes.
/// Returns the txid and whether p1 holds its lock after restarting.
async fn crash_participant_at_vote(sabotage: Option<&str>) -> Result<(TxnId, Option<TxnId>)> {
    let mut cluster = Cluster::new(3);
    let mut env = vec![("TWOPC_FAULTS", "participant.after-prepare-synced=crash")];
    env.extend(sabotage.map(|s| ("TWOPC_SABOTAGE", s)));
    cluster.spawn("p1", &env)?;
    cluster.spawn("p2", &[])?;
    cluster.spawn("p3", &[])?;
    cluster.spawn("c1", &[])?;
    let keys = cluster.key_per_participant("vote");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().clone();
    for key in &keys {
        txn.put(key, b"v".to_vec());
    }
    let result = txn.commit().await;
    assert!(matches!(result, Err(ClientError::Aborted { .. })), "p1 never voted, so the commit aborts: {result:?}");
    cluster.wait_exit("p1", Duration::from_secs(10))?;
    // Keep the coordinator away so p1 cannot resolve before we look.
    cluster.kill("c1");
    cluster.spawn("p1", &[])?;
    let holder = cluster.lock_holder("p1", &keys[0]).await?;
    Ok((txid, holder))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_before_vote_the_prepared_record_survives_a_crash_at_the_vote() -> Result<()> {
    let (txid, holder) = crash_participant_at_vote(None).await?;
    assert_eq!(holder, Some(txid), "the Prepared record was not durable when the vote was due");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_voting_before_the_sync_loses_the_prepared_record() -> Result<()> {
    let (_, holder) = crash_participant_at_vote(Some("vote-before-sync")).await?;
    assert_eq!(holder, None, "sabotage did not lose the record: the positive test above proves nothing");
    Ok(())
}

/// The coordinator crashes right after its Commit record "synced", before
/// anyone hears Committed. Returns whether p1 ends up with the write.
async fn crash_coordinator_at_decision(sabotage: Option<&str>) -> Result<bool> {
    let mut cluster = Cluster::new(3);
    for id in cluster.participant_ids() {
        cluster.spawn(&id, &[])?;
    }
    let mut env = vec![("TWOPC_FAULTS", "coordinator.after-decision-synced=crash")];
    env.extend(sabotage.map(|s| ("TWOPC_SABOTAGE", s)));
    cluster.spawn("c1", &env)?;
    let keys = cluster.key_per_participant("decide");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"v".to_vec());
    }
    let _ = txn.commit().await;
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    cluster.spawn("c1", &[])?;
    // Recovery settles: p1's lock is released either way.
    cluster
        .eventually("p1 resolves", Duration::from_secs(30), || async {
            Ok(cluster.lock_holder("p1", &keys[0]).await?.is_none())
        })
        .await?;
    Ok(cluster.read_at("p1", &keys[0]).await?.value.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_before_committed_the_decision_survives_a_crash_at_the_reply() -> Result<()> {
    assert!(crash_coordinator_at_decision(None).await?, "the Commit record was not durable when Committed was due");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_answering_before_the_sync_loses_the_decision() -> Result<()> {
    let committed = crash_coordinator_at_decision(Some("commit-before-sync")).await?;
    assert!(!committed, "sabotage did not lose the decision: the positive test above proves nothing");
    Ok(())
}

/// p1 crashes right after acking the commit of a transaction. The
/// coordinator is then killed, so p1 cannot learn the outcome again.
/// Returns the txid, p1's lock holder after restart, and whether p1 has
/// the write.
async fn crash_participant_at_ack(sabotage: Option<&str>) -> Result<(TxnId, Option<TxnId>, bool)> {
    let mut cluster = Cluster::new(3);
    let mut env = vec![("TWOPC_FAULTS", "participant.after-commit-acked=crash")];
    env.extend(sabotage.map(|s| ("TWOPC_SABOTAGE", s)));
    cluster.spawn("p1", &env)?;
    cluster.spawn("p2", &[])?;
    cluster.spawn("p3", &[])?;
    cluster.spawn("c1", &[])?;
    let keys = cluster.key_per_participant("ack");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().clone();
    for key in &keys {
        txn.put(key, b"v".to_vec());
    }
    // Every participant votes Yes: Committed (p1 dies after its ack).
    txn.commit().await?;
    cluster.wait_exit("p1", Duration::from_secs(10))?;
    cluster.kill("c1");
    cluster.spawn("p1", &[])?;
    let holder = cluster.lock_holder("p1", &keys[0]).await?;
    let applied = holder.is_none() && cluster.read_at("p1", &keys[0]).await?.value.is_some();
    Ok((txid, holder, applied))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_before_ack_an_acked_commit_survives_a_crash_without_the_coordinator() -> Result<()> {
    let (_, holder, applied) = crash_participant_at_ack(None).await?;
    assert_eq!(holder, None, "p1 is in doubt again after acking: the apply was not durable at the ack");
    assert!(applied, "the acked write is gone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_acking_before_the_sync_loses_the_apply() -> Result<()> {
    let (txid, holder, applied) = crash_participant_at_ack(Some("ack-before-sync")).await?;
    assert_eq!(holder, Some(txid), "sabotage did not lose the apply: the positive test above proves nothing");
    assert!(!applied);
    Ok(())
}
