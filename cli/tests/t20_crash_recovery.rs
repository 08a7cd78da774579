//! SIGKILL at protocol moments, restart, and check that every participant
//! ends with the coordinator's decision.

mod support;

use anyhow::Result;
use std::time::Duration;
use support::Cluster;
use twopc_common::client::ClientError;
use twopc_common::{AbortReason, OutcomeStatus, TxnId};

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the participants, then the coordinator with `faults` armed.
fn cluster_with_coordinator_faults(faults: &str, sabotage: Option<&str>) -> Result<Cluster> {
    let mut env = vec![("TWOPC_FAULTS", faults)];
    env.extend(sabotage.map(|s| ("TWOPC_SABOTAGE", s)));
    Cluster::start_with_coordinator_env(3, &env)
}

async fn write_everywhere(cluster: &Cluster, keys: &[Vec<u8>]) -> Result<(TxnId, Result<TxnId, ClientError>)> {
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().clone();
    for key in keys {
        txn.put(key, b"written".to_vec());
    }
    Ok((txid, txn.commit().await))
}

async fn wait_all_committed(cluster: &Cluster, keys: &[Vec<u8>]) -> Result<()> {
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        cluster
            .eventually(&format!("{id} applies the commit"), RESOLVE_TIMEOUT, || async {
                Ok(cluster.read_at(&id, key).await?.value.as_deref() == Some(b"written".as_slice()))
            })
            .await?;
        cluster
            .eventually(&format!("{id} releases its lock"), RESOLVE_TIMEOUT, || async {
                Ok(cluster.lock_holder(&id, key).await?.is_none())
            })
            .await?;
    }
    Ok(())
}

async fn wait_all_aborted(cluster: &Cluster, keys: &[Vec<u8>]) -> Result<()> {
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        cluster
            .eventually(&format!("{id} releases its lock"), RESOLVE_TIMEOUT, || async {
                Ok(cluster.lock_holder(&id, key).await?.is_none())
            })
            .await?;
        assert_eq!(cluster.read_at(&id, key).await?.value, None, "{id} applied an aborted transaction");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_after_voting_yes_holds_its_locks_again_and_learns_the_decision() -> Result<()> {
    // Commit messages are withheld: participants stay prepared.
    let mut cluster = cluster_with_coordinator_faults("coordinator.commit-send=drop", None)?;
    let keys = cluster.key_per_participant("kill-p");
    let (txid, result) = write_everywhere(&cluster, &keys).await?;
    assert_eq!(result?, txid, "the decision is logged, so the client hears Committed");

    // Coordinator down (so nobody can resolve), p1 killed and restarted.
    cluster.kill("c1");
    cluster.kill("p1");
    cluster.spawn("p1", &[])?;
    assert_eq!(cluster.lock_holder("p1", &keys[0]).await?, Some(txid.clone()), "p1 lost its locks across the restart");
    // Not applied, and no value from before it either: the read is refused.
    let refused = cluster.read_at("p1", &keys[0]).await.expect_err("p1 answered a read past its in-doubt writer");
    assert!(format!("{refused:#}").contains(&txid.to_string()), "{refused:#}");

    // The coordinator comes back (no faults) and re-drives its decision.
    cluster.spawn("c1", &[])?;
    wait_all_committed(&cluster, &keys).await?;
    let client = cluster.client().await?;
    assert_eq!(client.outcome(&txid).await?, OutcomeStatus::Committed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_after_syncing_commit_recommits_everywhere_after_restart() -> Result<()> {
    let mut cluster = cluster_with_coordinator_faults("coordinator.after-decision-synced=crash", None)?;
    let keys = cluster.key_per_participant("kill-c-commit");
    let (txid, result) = write_everywhere(&cluster, &keys).await?;
    assert!(matches!(result, Err(ClientError::OutcomeUnknown { .. })), "the client cannot know: {result:?}");
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        assert_eq!(cluster.lock_holder(&id, key).await?, Some(txid.clone()), "{id} is not holding its prepared lock");
    }
    cluster.spawn("c1", &[])?;
    wait_all_committed(&cluster, &keys).await?;
    assert_eq!(cluster.client().await?.outcome(&txid).await?, OutcomeStatus::Committed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restarted_on_a_new_data_directory_leaves_older_commits_in_doubt_not_aborted() -> Result<()> {
    // c1 logs a commit and dies; an operator then starts c1 on another
    // (empty) directory, a mistyped --data-dir. That log never ran the
    // epoch of the commit: it must not presume it aborted.
    let mut cluster = cluster_with_coordinator_faults("coordinator.after-decision-synced=crash", None)?;
    let keys = cluster.key_per_participant("new-dir");
    let (txid, _) = write_everywhere(&cluster, &keys).await?;
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    let (real, elsewhere) = (cluster.data_dir("c1"), cluster.dir().join("c1-real"));
    std::fs::rename(&real, &elsewhere)?;
    cluster.spawn("c1", &[])?;
    // The participants ask it (their in-doubt timer) and are told it
    // cannot know.
    // (Logged once it is stuck: 10 s after its prepare.)
    support::wait_for("p1 to ask the new c1", Duration::from_secs(30), || cluster.log("p1").contains("never ran"))?;
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        assert_eq!(cluster.lock_holder(&id, key).await?, Some(txid.clone()), "{id} gave up a committed transaction");
    }
    let asked = cluster.client().await?.outcome(&txid).await.expect_err("a log that never ran the epoch answered");
    assert!(asked.to_string().contains("never ran"), "{asked}");
    // The CLI says unknown (exit 2), as for any outcome not known yet.
    let out = support::twopc(&["outcome", "--coordinator", &cluster.coordinator_addr(), &txid.to_string()])?;
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(support::text(&out).contains(&format!("{txid}: unknown")), "{}", support::text(&out));
    // Back on its own directory, c1 re-drives the commit.
    cluster.kill("c1");
    std::fs::remove_dir_all(&real)?;
    std::fs::rename(&elsewhere, &real)?;
    cluster.spawn("c1", &[])?;
    wait_all_committed(&cluster, &keys).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_before_deciding_aborts_everywhere_after_restart() -> Result<()> {
    let mut cluster = cluster_with_coordinator_faults("coordinator.before-decision=crash", None)?;
    let keys = cluster.key_per_participant("kill-c-undecided");
    let (txid, result) = write_everywhere(&cluster, &keys).await?;
    assert!(matches!(result, Err(ClientError::OutcomeUnknown { .. })), "{result:?}");
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        assert_eq!(cluster.lock_holder(&id, key).await?, Some(txid.clone()), "{id} voted Yes, so it holds the lock");
    }
    cluster.spawn("c1", &[])?;
    wait_all_aborted(&cluster, &keys).await?;
    assert_eq!(cluster.client().await?.outcome(&txid).await?, OutcomeStatus::Aborted);
    // The keys are free again.
    let (_, again) = write_everywhere(&cluster, &keys).await?;
    again?;
    Ok(())
}

/// A participant the transaction never involved, down, does not keep its
/// presumed abort pending: the prepared participants name who took part
/// (trial 26A: p3 down kept p1's and p2's locks until it came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_down_that_took_no_part_does_not_hold_up_a_presumed_abort() -> Result<()> {
    let mut cluster = cluster_with_coordinator_faults("coordinator.before-decision=crash", None)?;
    let keys = cluster.key_per_participant("uninvolved-down");
    let keys = &keys[..2];
    let (txid, result) = write_everywhere(&cluster, keys).await?;
    assert!(matches!(result, Err(ClientError::OutcomeUnknown { .. })), "{result:?}");
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    cluster.kill("p3");
    cluster.spawn("c1", &[])?;
    wait_all_aborted(&cluster, keys).await?;
    assert_eq!(cluster.client().await?.outcome(&txid).await?, OutcomeStatus::Aborted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_client_outlives_a_coordinator_restart() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    let client = cluster.client().await?;
    // Two commits, so the client holds spare ids minted by this run.
    for round in 0..2 {
        let mut txn = client.begin().await?;
        for key in cluster.key_per_participant(&format!("outlive{round}")) {
            txn.put(&key, b"before".to_vec());
        }
        txn.commit().await?;
    }
    // Begun before the restart, committed after it: under a fresh id.
    let mut across = client.begin().await?;
    let keys = cluster.key_per_participant("outlive-across");
    for key in &keys {
        across.put(key, b"across".to_vec());
    }
    let old = across.txid().clone();
    cluster.kill("c1");
    cluster.spawn("c1", &[])?;
    let fresh = across.commit().await?;
    assert_ne!(fresh, old, "the restarted coordinator aborted the old id");
    // Asked about the id it held, this client answers for the fresh one
    // (trial 21D: a commit future dropped meanwhile was told "aborted",
    // its writes committed under the fresh id); another client, about the
    // old id itself.
    assert_eq!(client.outcome(&old).await?, OutcomeStatus::Committed);
    assert_eq!(cluster.client().await?.outcome(&old).await?, OutcomeStatus::Aborted);
    assert_eq!(client.read(keys.clone()).await?[0].value, Some(b"across".to_vec()));
    // The same client: its dead connection is replaced, and the spare ids
    // of the coordinator's earlier run are not used (they would abort).
    for round in 0..5 {
        let mut txn = client.begin().await?;
        let keys = cluster.key_per_participant(&format!("outlive-after{round}"));
        for key in &keys {
            txn.put(key, b"after".to_vec());
        }
        txn.commit().await?;
        assert_eq!(client.read(keys.clone()).await?[0].value, Some(b"after".to_vec()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_lost_its_log_never_reuses_a_txid() -> Result<()> {
    // Found by a user: a coordinator restarted on an empty data directory
    // began at epoch 1 again; its new c1.1.2 met participants that had
    // committed the old c1.1.2 and took the new prepare for a duplicate.
    // The client was told "committed" and saw its writes half applied.
    // (Fresh keys every round: commits reach participants after the reply,
    // so a reused key could meet the previous round's lock.)
    let mut cluster = Cluster::start(3)?;
    let client = cluster.client().await?;
    let mut before = Vec::new();
    for round in 0..3 {
        let mut txn = client.begin().await?;
        for key in cluster.key_per_participant(&format!("lost-log-old{round}")) {
            txn.put(&key, b"old".to_vec());
        }
        before.push(txn.commit().await?);
    }
    cluster.kill("c1");
    std::fs::remove_dir_all(cluster.data_dir("c1"))?;
    cluster.spawn("c1", &[])?;
    let client = cluster.client().await?;
    for round in 0..3 {
        let keys = cluster.key_per_participant(&format!("lost-log-new{round}"));
        let mut txn = client.begin().await?;
        for key in &keys {
            txn.put(key, b"new".to_vec());
        }
        let txid = txn.commit().await?;
        assert!(!before.contains(&txid), "{txid} was used before the log was lost");
        for (key, read) in keys.iter().zip(client.read(keys.clone()).await?) {
            assert_eq!(read.value.as_deref(), Some(b"new".as_slice()), "{key:?} of {txid} is missing");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_two_coordinators_moves_on_when_one_is_down() -> Result<()> {
    let mut cluster = Cluster::start_with_coordinators(2, 3)?;
    let (c1, c2) = (cluster.addr("c1"), cluster.addr("c2"));
    let client = twopc_common::client::Client::connect_any(&[&c1, &c2]).await?;
    let keys: Vec<Vec<Vec<u8>>> =
        (0..6).map(|round| cluster.key_per_participant(&format!("two-coords{round}"))).collect();
    let commit = |round: usize| {
        let (client, keys) = (client.clone(), keys[round].clone());
        async move {
            let mut txn = client.begin().await?;
            for key in &keys {
                txn.put(key, format!("v{round}").into_bytes());
            }
            anyhow::Ok(txn.commit().await?)
        }
    };
    for round in 0..2 {
        assert_eq!(commit(round).await?.coordinator.as_str(), "c1");
    }
    // Begun on c1, committed after c1 is gone: the commit never left, so
    // it goes to c2 under a fresh id.
    let mut pending = client.begin().await?;
    assert_eq!(pending.txid().coordinator.as_str(), "c1");
    pending.put(b"two-coords-pending", b"p".to_vec());
    cluster.kill("c1");
    // A transaction begun in the very instant c1 dies may end unknown (its
    // commit may have reached c1); the client notices the closed
    // connection within moments. Every transaction after that runs
    // through c2, the first included (its spare ids from c1 are not used).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pending.commit().await?.coordinator.as_str(), "c2");
    for round in 2..6 {
        assert_eq!(commit(round).await?.coordinator.as_str(), "c2");
    }
    assert_eq!(client.addr(), c2);
    assert_eq!(client.read(keys[5].clone()).await?[0].value, Some(b"v5".to_vec()));

    // The command line takes the same list.
    let out = std::process::Command::new(support::twopc_bin())
        .args(["txn", "--coordinator", &format!("{c1},{c2}"), "put", "two-coords-cli", "1"])
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("committed c2."));
    Ok(())
}

/// A one-phase commit (one participant) whose participant is down was
/// never sent: the client gets a definite abort at once, as for a
/// participant down at prepare, not "outcome unknown" after its deadline
/// while the coordinator retries. Once the participant is back, the same
/// key commits and the aborted write is nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_phase_commit_to_a_participant_that_is_down_is_a_definite_abort() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    let key = cluster.key_per_participant("one-phase-down").swap_remove(2);
    let client = cluster.client().await?;
    let commit = |value: &'static str| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let mut txn = client.begin().await?;
            txn.put(&key, value.as_bytes().to_vec());
            anyhow::Ok(txn.commit().await)
        }
    };
    // The coordinator has a connection to p3 when it dies.
    commit("before").await??;
    cluster.kill("p3");
    // Time for the coordinator to see that connection close (a request
    // written on it before then might have been sent).
    tokio::time::sleep(Duration::from_millis(300)).await;
    match commit("while-down").await? {
        Err(ClientError::Aborted { reason: AbortReason::ParticipantUnavailable { participant, .. }, .. }) => {
            assert_eq!(participant.as_str(), "p3")
        }
        other => panic!("expected a definite abort naming p3, got {other:?}"),
    }
    cluster.start("p3")?;
    assert_eq!(cluster.read_at("p3", &key).await?.value, Some(b"before".to_vec()));
    commit("after").await??;
    assert_eq!(cluster.read_at("p3", &key).await?.value, Some(b"after".to_vec()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepares_queued_behind_a_paused_participant_fail_with_the_first_deadline() -> Result<()> {
    // p2 is paused (SIGSTOP): the kernel still accepts its connections, but
    // nothing answers. The first prepare calls to it (4 in flight at most)
    // wait out their 5 s deadline; the prepares queued behind them fail
    // with the first of those, not after a deadline of their own (10 s in
    // all, or the engine's 10 s safety net).
    let cluster = Cluster::start(2)?;
    let client = cluster.client().await?;
    // A first commit opens the coordinator's connection to p2: a paused
    // process's kernel accepts connections, but a new one would fail
    // sooner, at its greeting.
    let mut first = client.begin().await?;
    for key in cluster.key_per_participant("paused-first") {
        first.put(&key, b"x".to_vec());
    }
    first.commit().await?;
    cluster.signal("p2", libc::SIGSTOP)?;
    let started = std::time::Instant::now();
    // 100 ms apart, so that each prepare to p2 leaves in a call of its own
    // while a slot is free: 4 calls in flight, and the 2 last prepares
    // queued behind them.
    let commits = (0..6u64).map(|i| {
        let (client, keys) = (&client, cluster.key_per_participant(&format!("paused-{i}")));
        async move {
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
            let mut txn = client.begin().await?;
            for key in &keys {
                txn.put(key, b"x".to_vec());
            }
            let result = txn.commit().await;
            anyhow::Ok((result, started.elapsed()))
        }
    });
    let results = futures::future::join_all(commits).await;
    cluster.signal("p2", libc::SIGCONT)?;
    for result in results {
        let (result, took) = result?;
        match result {
            Err(ClientError::Aborted { reason: AbortReason::ParticipantUnavailable { participant, .. }, .. }) => {
                assert_eq!(participant.as_str(), "p2");
            }
            other => panic!("expected an abort naming p2, got {other:?}"),
        }
        // Not a speed test: one 5 s deadline, far from two.
        assert!(took < Duration::from_secs(8), "a transaction waited {took:?} for a paused participant");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_paused_participant_fail_naming_it_not_the_coordinator() -> Result<()> {
    // Found by a user: with p2 paused, reads of its keys failed with the
    // client's own deadline ("the request exceeded its deadline
    // (coordinator address)"), as if the coordinator were down. More
    // reads than a connection carries at once: the queued ones too.
    let cluster = Cluster::start(2)?;
    let client = cluster.client().await?;
    let key = cluster.key_per_participant("paused-read").remove(1);
    client.read(vec![key.clone()]).await?;
    cluster.signal("p2", libc::SIGSTOP)?;
    // Commits to p2 in flight at the same time, as in an application.
    let commits = (0..8).map(|i| {
        let (client, keys) = (&client, cluster.key_per_participant(&format!("paused-read-{i}")));
        async move {
            let mut txn = client.begin().await?;
            for key in &keys {
                txn.put(key, b"x".to_vec());
            }
            anyhow::Ok(txn.commit().await.is_err())
        }
    });
    let reads = (0..32).map(|i| {
        let (client, key) = (&client, key.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            client.read(vec![key]).await
        }
    });
    let (results, _) =
        futures::future::join(futures::future::join_all(reads), futures::future::join_all(commits)).await;
    cluster.signal("p2", libc::SIGCONT)?;
    for result in results {
        match result {
            Err(ClientError::Service(e)) => assert!(e.to_string().contains("participant p2"), "{e}"),
            other => panic!("expected an error naming p2, got {other:?}"),
        }
    }
    // Back: reads are served again.
    assert_eq!(client.read(vec![key]).await?[0].value, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_coordinator_does_not_keep_another_ones_transactions_in_doubt() -> Result<()> {
    // Found by a user: questions to a paused coordinator (its kernel still
    // accepts connections; each question waits out its deadline) held all
    // of a participant's outcome-question slots, so the in-doubt
    // transactions of the other coordinator, up and answering, stayed in
    // doubt with their locks until the paused one came back.
    let mut cluster = Cluster::plan(2, 2);
    for id in cluster.participant_ids() {
        cluster.spawn(&id, &[])?;
    }
    cluster.spawn("c1", &[("TWOPC_FAULTS", "coordinator.commit-send=drop")])?;
    cluster.spawn("c2", &[("TWOPC_FAULTS", "coordinator.before-decision=crash")])?;
    // Many more c1 transactions left prepared than a coordinator may be
    // asked about at once (committed; their commit messages withheld).
    let via_c1 = twopc_common::client::Client::connect(&cluster.addr("c1")).await?;
    let commits = (0..400).map(|i| {
        let (client, keys) = (&via_c1, cluster.key_per_participant(&format!("hung-c1-{i}")));
        async move {
            let mut txn = client.begin().await?;
            for key in &keys {
                txn.put(key, b"x".to_vec());
            }
            anyhow::Ok(txn.commit().await?)
        }
    });
    for result in futures::future::join_all(commits).await {
        result?;
    }
    cluster.signal("c1", libc::SIGSTOP)?;
    // One c2 transaction left prepared: c2 dies before deciding it, and
    // comes back (no Commit record: aborted, once a participant asks).
    let via_c2 = twopc_common::client::Client::connect(&cluster.addr("c2")).await?;
    let mut txn = via_c2.begin().await?;
    for key in cluster.key_per_participant("hung-c2") {
        txn.put(&key, b"x".to_vec());
    }
    assert!(txn.commit().await.is_err());
    cluster.wait_exit("c2", Duration::from_secs(10))?;
    let p1 = cluster.participant("p1").await?;
    let in_doubt = || async {
        let stats = p1.stats(twopc_common::net::context_with_timeout(Duration::from_secs(5))).await?;
        anyhow::Ok(stats.in_doubt)
    };
    let before = in_doubt().await?;
    assert!(before > 300, "only {before} in doubt at p1: the test needs more than a coordinator's slots");
    cluster.spawn("c2", &[])?;
    let result = cluster
        .eventually("c2's transaction resolved at p1 while c1 is paused", Duration::from_secs(30), || async {
            Ok(in_doubt().await? == before - 1)
        })
        .await;
    cluster.signal("c1", libc::SIGCONT)?;
    result
}

/// The log says, per epoch, how far the outcomes it trimmed reach: after
/// a restart, an id of an earlier run at or below that point, which no
/// participant remembers, is "unknown" (it may have committed), and one
/// past it is presumed aborted. (Trimming takes 100,000 ended
/// transactions, so the test writes the record a trim would write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_trimmed_from_the_log_before_a_restart_is_unknown_not_presumed_aborted() -> Result<()> {
    use twopc_coordinator::record::CoordinatorRecord;
    use twopc_wal::{Durability, RocksWal, Wal, WalBatch};

    let mut cluster = Cluster::start(2)?;
    let client = cluster.client().await?;
    let trimmed = client.begin().await?.txid().clone();
    let past_the_trim = client.begin().await?.txid().clone();
    drop(client);
    cluster.kill("c1");
    let dir = cluster.data_dir("c1");
    let wal = RocksWal::<CoordinatorRecord>::open_created_once(
        &dir.join(twopc_common::data_dir::WAL_DIR),
        &dir.join(twopc_common::data_dir::LOG_CREATED_FILE),
        None,
    )?;
    let mut batch = WalBatch::new();
    batch.append.push(CoordinatorRecord::Forgotten { epoch: trimmed.epoch, up_to: trimmed.seq });
    wal.write(batch, Durability::Sync)?;
    drop(wal);
    cluster.spawn("c1", &[])?;

    let c = cluster.coordinator_addr();
    let out = support::twopc(&["outcome", "--coordinator", &c, &trimmed.to_string()])?;
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(support::text(&out).contains(&format!("{trimmed}: unknown")), "{}", support::text(&out));
    assert!(support::text(&out).contains("no longer remembered"), "{}", support::text(&out));
    let out = support::twopc(&["outcome", "--coordinator", &c, &past_the_trim.to_string()])?;
    assert_eq!(out.status.code(), Some(1), "{}", support::text(&out));
    assert!(support::text(&out).contains(&format!("{past_the_trim}: aborted")), "{}", support::text(&out));
    Ok(())
}

/// A one-phase commit is decided by its participant alone: if its
/// coordinator's lazy End record is lost in a crash, only the
/// participant's Done record knows it committed. Once the participant has
/// trimmed that too (100,000 decisions later), `twopc outcome` must say
/// unknown, not presume an abort. (The test removes the records the
/// crash and the trim would remove, and writes the record a trim writes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_phase_commit_forgotten_by_its_participant_and_unlogged_by_its_coordinator_is_unknown() -> Result<()> {
    use twopc_coordinator::record::CoordinatorRecord;
    use twopc_participant::forgotten::Horizons;
    use twopc_participant::record::ParticipantRecord;
    use twopc_wal::{Durability, RocksWal, Wal, WalBatch};

    fn open<R: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>(
        dir: &std::path::Path,
    ) -> Result<RocksWal<R>> {
        let wal = dir.join(twopc_common::data_dir::WAL_DIR);
        Ok(RocksWal::<R>::open_created_once(&wal, &dir.join(twopc_common::data_dir::LOG_CREATED_FILE), None)?)
    }

    let mut cluster = Cluster::start(2)?;
    let participant = cluster.participant_ids()[0].clone();
    let key = cluster.key_per_participant("one-phase")[0].clone();
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().clone();
    txn.put(&key, b"committed".to_vec());
    txn.commit().await?;
    drop(client);
    cluster.kill("c1");
    cluster.kill(&participant);

    let wal = open::<CoordinatorRecord>(&cluster.data_dir("c1"))?;
    let mut batch = WalBatch::new();
    for (lsn, record) in wal.replay()? {
        if matches!(&record, CoordinatorRecord::End { txid: t } | CoordinatorRecord::Commit { txid: t, .. } if *t == txid)
        {
            batch.remove.push(lsn);
        }
    }
    wal.write(batch, Durability::Sync)?;
    drop(wal);

    let wal = open::<ParticipantRecord>(&cluster.data_dir(&participant))?;
    let mut batch = WalBatch::new();
    for (lsn, record) in wal.replay()? {
        if matches!(&record, ParticipantRecord::Done { txid: t, .. } if *t == txid) {
            batch.remove.push(lsn);
        }
    }
    assert_eq!(batch.remove.len(), 1, "the participant logged its decision");
    let mut trimmed = Horizons::default();
    trimmed.forget(&txid);
    batch.append.push(ParticipantRecord::Forgotten(trimmed));
    wal.write(batch, Durability::Sync)?;
    drop(wal);

    cluster.spawn(&participant, &[])?;
    cluster.spawn("c1", &[])?;
    let out = support::twopc(&["outcome", "--coordinator", &cluster.coordinator_addr(), &txid.to_string()])?;
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(support::text(&out).contains(&format!("{txid}: unknown")), "{}", support::text(&out));
    assert_eq!(cluster.read_at(&participant, &key).await?.value.as_deref(), Some(b"committed".as_slice()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_retried_until_its_participant_is_back_is_logged_as_delivered() -> Result<()> {
    // Trial 18C: the coordinator warned at each failed attempt, and said
    // nothing when the commit got through.
    let mut cluster = Cluster::new(3);
    cluster.spawn("p1", &[])?;
    cluster.spawn("p2", &[("TWOPC_FAULTS", "participant.before-apply=crash")])?;
    cluster.spawn("p3", &[])?;
    cluster.spawn("c1", &[])?;
    let keys = cluster.key_per_participant("delivered-late");
    let (txid, result) = write_everywhere(&cluster, &keys).await?;
    assert_eq!(result?, txid);
    cluster.wait_exit("p2", Duration::from_secs(10))?;
    cluster.spawn("p2", &[])?;
    wait_all_committed(&cluster, &keys).await?;
    cluster
        .eventually("c1 logs that the commit got through", Duration::from_secs(20), || async {
            let log = cluster.log("c1");
            Ok(log.lines().any(|l| {
                l.contains("commit delivered after retries") && l.contains(&txid.to_string()) && l.contains("p2")
            }))
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_stood_still_while_the_votes_came_commits_when_it_resumes() -> Result<()> {
    // Trial 18A: p2 stopped, a commit sent, then the coordinator stopped
    // and p2 resumed (it voted Yes); the coordinator, resumed 8 s later,
    // aborted: "p2 unavailable: no vote", though every vote was Yes.
    let cluster = Cluster::start(3)?;
    // Connections are opened first (a new one to a stopped process fails).
    let warm_up = cluster.key_per_participant("stood-still-warm-up");
    write_everywhere(&cluster, &warm_up).await?.1?;
    let keys = cluster.key_per_participant("stood-still");
    cluster.signal("p2", libc::SIGSTOP)?;
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"written".to_vec());
    }
    let pending = tokio::spawn(txn.commit());
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.signal("c1", libc::SIGSTOP)?;
    cluster.signal("p2", libc::SIGCONT)?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.signal("c1", libc::SIGCONT)?;
    let result = pending.await?;
    assert!(result.is_ok(), "every participant voted Yes: {result:?}");
    wait_all_committed(&cluster, &keys).await?;
    Ok(())
}

/// Trial 20B: with a participant added to the cluster file, the old
/// participants refused to start, but the coordinator ran on its old
/// directory with the new participant, which served the keys it now owned
/// as absent and took writes to them (gone again once the file was put
/// back). The coordinator now refuses another participant list too.
#[test]
fn a_coordinator_restarted_under_another_participant_list_refuses_to_start() -> Result<()> {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let write_cluster = |participants: &[&str]| -> Result<String> {
        let mut toml = format!("[[coordinator]]\nid = \"c1\"\naddr = \"127.0.0.1:{port}\"\n");
        for (i, p) in participants.iter().enumerate() {
            toml += &format!("[[participant]]\nid = \"{p}\"\naddr = \"127.0.0.1:{}\"\n", i + 1);
        }
        let path = dir.path().join(format!("{}.toml", participants.len()));
        std::fs::write(&path, toml)?;
        Ok(path.display().to_string())
    };
    let data = dir.path().join("c1").display().to_string();
    let start = |config: &str, init: bool| -> Result<std::process::Child> {
        let mut args = vec!["coordinator", "--config", config, "--id", "c1", "--data-dir", &data];
        args.extend(init.then_some("--init"));
        Ok(Command::new(support::twopc_bin()).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?)
    };
    let serves_then_stops = |mut child: std::process::Child| -> Result<()> {
        let up = support::wait_for("the coordinator to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        child.wait()?;
        up
    };
    let three = write_cluster(&["p1", "p2", "p3"])?;
    serves_then_stops(start(&three, true)?)?;
    serves_then_stops(start(&three, false)?)?;

    let four = write_cluster(&["p1", "p2", "p3", "p4"])?;
    let mut child = start(&four, false)?;
    let exited = support::wait_for("the coordinator to refuse", Duration::from_secs(30), || {
        child.try_wait().ok().flatten().is_some()
    });
    let _ = child.kill();
    let refused = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    exited.map_err(|e| e.context(format!("it serves: {stderr}")))?;
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("written when the participants were p1,p2,p3"), "{stderr}");
    // The old list still serves.
    serves_then_stops(start(&three, false)?)
}

/// A participant whose data was lost and begun anew (`--init` on an empty
/// directory) is refused by the coordinator that worked with its old data:
/// it would serve the keys committed there as absent and take
/// `expect-absent` writes over them (trial 20B, with a second p2 started
/// where the cluster file pointed). Transactions touching it abort naming
/// why; removing its line from the coordinator's record lets it in.
/// A SIGTERM lets a coordinator's commits in progress finish before it
/// dies (a rolling restart left their clients with "unknown", or a
/// presumed abort, trial 22C); new ones are refused meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_coordinator_first_finishes_the_commits_in_progress() -> Result<()> {
    let mut cluster = Cluster::start(2)?;
    let keys = cluster.key_per_participant("drained");
    let client = cluster.client().await?;
    let mut warm = client.begin().await?;
    warm.put(&keys[0], b"warm".to_vec());
    warm.commit().await?;
    // p2 paused: the commit waits for its vote.
    cluster.signal("p2", libc::SIGSTOP)?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"finished".to_vec());
    }
    let commit = tokio::spawn(txn.commit());
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.signal("c1", libc::SIGTERM)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cluster.is_running("c1"), "c1 died with a commit in progress");
    cluster.signal("p2", libc::SIGCONT)?;
    let committed = tokio::time::timeout(Duration::from_secs(10), commit).await??;
    assert!(committed.is_ok(), "{committed:?}");
    cluster.wait_exit("c1", Duration::from_secs(5))?;
    assert!(cluster.log("c1").contains("waiting up to"), "{}", cluster.log_tail("c1", 10));
    // Its commit messages may have gone out before the stop or not: the
    // next start delivers them, and reads wait for them.
    cluster.start("c1")?;
    let values = cluster.client().await?.read(keys.clone()).await?;
    assert!(values.iter().all(|v| v.value.as_deref() == Some(&b"finished"[..])), "{values:?}");
    Ok(())
}

/// While a coordinator stops, a client that knows another takes its new
/// transactions there: the stopping one mints no id and commits nothing
/// new (trial 23A: the CLI given both failed with "c1 is stopping").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moves_on_from_a_stopping_coordinator() -> Result<()> {
    let mut cluster = Cluster::start_with_coordinators(2, 2)?;
    let keys = cluster.key_per_participant("moves-on");
    let (c1, c2) = (cluster.addr("c1"), cluster.addr("c2"));
    for addr in [&c1, &c2] {
        let client = twopc_common::client::Client::connect(addr).await?;
        let mut warm = client.begin().await?;
        warm.put(&keys[1], b"warm".to_vec());
        warm.commit().await?;
    }
    // A commit in progress at c1 (p2 paused) keeps c1 stopping a while.
    cluster.signal("p2", libc::SIGSTOP)?;
    let held = twopc_common::client::Client::connect(&c1).await?;
    let mut txn = held.begin().await?;
    txn.put(&keys[1], b"held".to_vec());
    let commit = tokio::spawn(txn.commit());
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.signal("c1", libc::SIGTERM)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(cluster.is_running("c1"), "c1 is still finishing its commit");
    let both = twopc_common::client::Client::connect_any(&[&c1, &c2]).await?;
    let mut moved = both.begin().await?;
    moved.put(&keys[0], b"moved".to_vec());
    let txid = moved.commit().await?;
    assert_eq!(txid.coordinator.as_str(), "c2", "committed at {txid}");
    cluster.signal("p2", libc::SIGCONT)?;
    assert!(tokio::time::timeout(Duration::from_secs(10), commit).await??.is_ok());
    Ok(())
}

/// A new coordinator and a new participant started together from a file
/// that added that participant agreed with each other, and the new
/// coordinator served keys the old participants held as absent at the new
/// one (trial 22C): the old participants' own checks only saw keys they
/// still owned. A coordinator now serves nothing until every participant
/// routes keys by its participant list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_participant_list_differs_from_the_participants_serves_nothing() -> Result<()> {
    let mut cluster = Cluster::plan(2, 3);
    for old in ["c1", "p1", "p2"] {
        let view = cluster.view_mut(old);
        view.participant.retain(|p| p.id != "p3");
        view.coordinator.retain(|c| c.id != "c2");
    }
    for id in ["p1", "p2", "c1"] {
        cluster.start(id)?;
    }
    // Keys that the new list gives to p3: only p3 is asked about them.
    let ring = cluster.config.ring();
    let keys: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("moved-{i}").into_bytes())
        .filter(|k| ring.owner(k).as_str() == "p3")
        .take(10)
        .collect();
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"held".to_vec());
    }
    txn.commit().await?;

    // p3 and c2 join from the file that adds them.
    cluster.start("p3")?;
    cluster.start("c2")?;
    let newcomer = twopc_common::client::Client::connect(&cluster.addr("c2")).await?;
    let read = newcomer.read(keys.clone()).await;
    let refused = read.as_ref().expect_err("read with another participant list").to_string();
    assert!(refused.contains("lists the participants p1,p2 (vnodes"), "{refused}");
    let mut txn = newcomer.begin().await?;
    for key in &keys {
        txn.expect_absent(key);
        txn.put(key, b"over a held key".to_vec());
    }
    let refused = txn.commit().await.expect_err("committed with another participant list").to_string();
    assert!(refused.contains("this coordinator serves no read or commit"), "{refused}");
    // The old coordinator still serves every key as it was.
    let values = client.read(keys.clone()).await?;
    assert!(values.iter().all(|v| v.value.as_deref() == Some(&b"held"[..])), "{values:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_data_was_begun_anew_is_refused_by_the_coordinator_that_knew_it() -> Result<()> {
    let mut cluster = Cluster::new(2);
    cluster.set_admin_token("begun-anew-token");
    cluster.start_all()?;
    let keys = cluster.key_per_participant("begun-anew");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"kept".to_vec());
    }
    txn.commit().await?;
    cluster.kill("p2");
    std::fs::remove_dir_all(cluster.data_dir("p2"))?;
    cluster.spawn("p2", &[])?;

    let mut txn = client.begin().await?;
    txn.put(&keys[0], b"beside it".to_vec());
    txn.expect_absent(&keys[1]);
    txn.put(&keys[1], b"over a lost key".to_vec());
    let refused = txn.commit().await.expect_err("committed at a p2 whose data was begun anew");
    assert!(refused.to_string().contains("begun anew"), "{refused}");
    let read = client.read(vec![keys[1].clone()]).await;
    assert!(read.as_ref().is_err_and(|e| e.to_string().contains("begun anew")), "{read:?}");
    assert!(cluster.log("c1").contains("begun anew"), "{}", cluster.log_tail("c1", 20));
    // `admin status` says so too: p2 itself is up.
    let config = cluster.write_cluster_file()?;
    let status = support::twopc(&["admin", "status", "--config", &config.display().to_string()])?;
    assert!(support::text(&status).contains("REFUSED by c1: p2: "), "{}", support::text(&status));

    // The operator gives p2's old data up: its line goes, c1 restarts.
    let record = cluster.data_dir("c1").join("PARTICIPANT_DATA");
    let kept: String = std::fs::read_to_string(&record)?.lines().filter(|l| !l.starts_with("p2 ")).collect();
    std::fs::write(&record, format!("{kept}\n"))?;
    cluster.kill("c1");
    cluster.spawn("c1", &[])?;
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    txn.put(&keys[1], b"anew".to_vec());
    txn.commit().await?;
    Ok(())
}
