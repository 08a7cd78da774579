//! Transactions across real processes: commits land everywhere, conflicts
//! and stale reads abort and leave nothing behind.

mod support;

use anyhow::Result;
use std::time::Duration;
use support::Cluster;
use twopc_common::client::{Client, ClientError};
use twopc_common::AbortReason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_across_three_participants_commits_everywhere() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let keys = cluster.key_per_participant("cross");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    for (i, key) in keys.iter().enumerate() {
        txn.put(key, format!("v{i}").into_bytes());
    }
    let txid = txn.commit().await?;
    for (i, (key, id)) in keys.iter().zip(cluster.participant_ids()).enumerate() {
        let got = cluster.read_at(&id, key).await?;
        assert_eq!(got.value, Some(format!("v{i}").into_bytes()), "{id} lacks the write of {txid}");
        assert_eq!(got.version, 1);
    }
    // Commits reach every participant asynchronously after the reply: wait
    // until no lock is left anywhere.
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        cluster
            .eventually("locks released", Duration::from_secs(10), || async {
                Ok(cluster.lock_holder(&id, key).await?.is_none())
            })
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_aborts_and_leaves_nothing() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let keys = cluster.key_per_participant("stale");
    let client = cluster.client().await?;

    let mut reader = client.begin().await?;
    assert_eq!(reader.get(&keys[0]).await?, None);
    let mut writer = client.begin().await?;
    writer.put(&keys[0], b"changed".to_vec());
    writer.commit().await?;

    reader.put(&keys[1], b"from-stale".to_vec());
    reader.put(&keys[2], b"from-stale".to_vec());
    match reader.commit().await {
        Err(ClientError::Aborted { reason: AbortReason::StaleRead { key, read: 0, current: 1, .. }, .. }) => {
            assert_eq!(key, keys[0])
        }
        other => panic!("expected a stale-read abort, got {other:?}"),
    }
    for (key, id) in keys.iter().zip(cluster.participant_ids()).skip(1) {
        assert_eq!(cluster.read_at(&id, key).await?.value, None, "{id} kept a write of an aborted transaction");
        assert_eq!(cluster.lock_holder(&id, key).await?, None, "{id} kept a lock of an aborted transaction");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_with_another_cluster_file_refuses_and_is_named_as_refusing() -> Result<()> {
    // p2 runs with a stale cluster file (other vnodes, so another ring): it
    // is up, and it says no. The client hears that, not "unavailable": the
    // coordinator, told p2's ring as it connects, refuses the commit (it
    // serves nothing while the rings differ); p2 itself would refuse the
    // prepare.
    let mut cluster = Cluster::new(2);
    cluster.set_admin_token("stale-file-token");
    cluster.view_mut("p2").vnodes = 32;
    cluster.start_all()?;
    let keys = cluster.key_per_participant("stale-file");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"x".to_vec());
    }
    match txn.commit().await {
        Err(ClientError::Service(refused @ twopc_common::ServiceError::ConfigMismatch(_))) => {
            let refused = refused.to_string();
            assert!(refused.contains("cluster configuration mismatch"), "{refused}");
            assert!(refused.contains("participant p2, whose cluster file lists"), "{refused}");
        }
        other => panic!("expected a refusal naming p2, got {other:?}"),
    }
    assert_eq!(cluster.read_at("p1", &keys[0]).await?.value, None, "p1 kept a write of an aborted transaction");
    // `admin` sets that p2 aside rather than take its word on transactions
    // (trial 23B: a p3 from another file was shown "not in doubt").
    let config = cluster.write_cluster_file()?;
    let status = support::twopc(&["admin", "status", "--config", &config.display().to_string()])?;
    let shown = support::text(&status);
    assert_eq!(status.status.code(), Some(3), "{shown}");
    assert!(shown.contains("p2 at") && shown.contains("serves another cluster"), "{shown}");
    Ok(())
}

/// A participant refuses prepares from a coordinator its cluster file
/// does not list: it could not ask that coordinator for the outcome of a
/// transaction left in doubt (trial 23B: such locks stayed until `admin
/// resolve`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_refuses_prepares_from_a_coordinator_it_does_not_know() -> Result<()> {
    let mut cluster = Cluster::plan(2, 2);
    for p in ["p1", "p2"] {
        cluster.view_mut(p).coordinator.retain(|c| c.id != "c2");
    }
    cluster.start_all()?;
    let keys = cluster.key_per_participant("unknown-coordinator");
    let client = twopc_common::client::Client::connect(&cluster.addr("c2")).await?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"x".to_vec());
    }
    let refused = txn.commit().await.expect_err("prepared for a coordinator p1 cannot ask").to_string();
    // Whichever participant answers first names itself.
    let named = ["p1", "p2"].iter().any(|p| refused.contains(&format!("coordinator c2 is not in {p}'s cluster file")));
    assert!(named, "{refused}");
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        assert_eq!(cluster.lock_holder(&id, key).await?, None, "{id} holds a lock for c2");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_file_listing_the_participants_in_another_order_is_the_same_cluster() -> Result<()> {
    // p2's file lists the participants backwards (as a configuration tool
    // generating files per host might): same ring, so it serves.
    let mut cluster = Cluster::new(2);
    cluster.view_mut("p2").participant.reverse();
    cluster.start_all()?;
    let keys = cluster.key_per_participant("reordered");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    for key in &keys {
        txn.put(key, b"x".to_vec());
    }
    txn.commit().await?;
    for read in client.read(keys.clone()).await? {
        assert_eq!(read.value.as_deref(), Some(b"x".as_slice()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_expectation_aborts() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let keys = cluster.key_per_participant("expect");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    txn.expect(&keys[0], b"something".to_vec());
    txn.put(&keys[1], b"x".to_vec());
    assert!(matches!(
        txn.commit().await,
        Err(ClientError::Aborted { reason: AbortReason::ConditionFailed { .. }, .. })
    ));
    let mut txn = client.begin().await?;
    txn.expect_absent(&keys[0]);
    txn.put(&keys[1], b"x".to_vec());
    txn.commit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_conflict_aborts_naming_the_holder() -> Result<()> {
    // The first transaction prepares everywhere, then its coordinator c1
    // dies before deciding: its locks stay held, and nobody can say when
    // they go. A second transaction, through c2, waits for them a little
    // (PREPARE_WAIT_MAX), then aborts naming the holder.
    let mut cluster = Cluster::plan(2, 3);
    for id in cluster.participant_ids() {
        cluster.spawn(&id, &[])?;
    }
    cluster.spawn("c1", &[("TWOPC_FAULTS", "coordinator.before-decision=crash")])?;
    cluster.spawn("c2", &[])?;
    let keys = cluster.key_per_participant("conflict");
    let mut first = Client::connect(&cluster.addr("c1")).await?.begin().await?;
    let holder = first.txid().clone();
    first.put(&keys[0], b"first".to_vec());
    first.put(&keys[1], b"first".to_vec());
    let _ = first.commit().await;
    cluster.wait_exit("c1", Duration::from_secs(10))?;

    let client = Client::connect(&cluster.addr("c2")).await?;
    let mut second = client.begin().await?;
    second.put(&keys[0], b"second".to_vec());
    second.put(&keys[2], b"second".to_vec());
    match second.commit().await {
        // A lock conflict, or (c1 having been dead 10 s on a slow machine)
        // one with a holder in doubt.
        Err(ClientError::Aborted {
            reason: AbortReason::LockConflict { holder: h, key, .. } | AbortReason::HeldInDoubt { holder: h, key, .. },
            ..
        }) => {
            assert_eq!(h, holder);
            assert_eq!(key, keys[0]);
        }
        other => panic!("expected a lock conflict, got {other:?}"),
    }
    // Once it is stuck, the CLI's abort says the holder is in doubt and
    // where to look (trial 24C: "lock conflict", retried 120 times in 30 s).
    tokio::time::sleep(Duration::from_millis(twopc_participant::engine::STUCK_AFTER_MS)).await;
    let key = String::from_utf8(keys[0].clone())?;
    let out = support::twopc(&["txn", "--coordinator", &cluster.addr("c2"), "put", &key, "third"])?;
    assert_eq!(out.status.code(), Some(1), "{}", support::text(&out));
    for words in [&holder.to_string(), "still in doubt", "twopc admin in-doubt"] {
        assert!(support::text(&out).contains(words), "{words:?} not in {}", support::text(&out));
    }
    let p3 = &cluster.participant_ids()[2];
    assert_eq!(cluster.read_at(p3, &keys[2]).await?.value, None, "the aborted transaction left a write");
    assert_eq!(cluster.lock_holder(p3, &keys[2]).await?, None, "the aborted transaction left a lock");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_each_request_in_order_and_over_long_ones_are_refused() -> Result<()> {
    use twopc_common::limits::{MAX_COMMIT_BATCH, MAX_PREPARE_BATCH};
    use twopc_common::net::context_with_timeout;
    use twopc_common::txn::PrepareRequest;
    use twopc_common::{NodeId, ServiceError, TxnId, TxnOps, Vote};

    let cluster = Cluster::start(1)?;
    let id = cluster.participant_ids()[0].clone();
    let p = cluster.participant(&id).await?;
    let txid = |seq| TxnId { coordinator: NodeId::new("c1").unwrap(), epoch: u64::MAX, seq };
    let prepares: Vec<PrepareRequest> = (0..=MAX_PREPARE_BATCH as u64)
        .map(|seq| PrepareRequest {
            txid: txid(seq),
            ring: cluster.config.ring().fingerprint(),
            ops: TxnOps { writes: vec![(format!("k{seq}").into_bytes(), Some(b"v".to_vec()))], ..Default::default() },
            participants: vec![NodeId::new(&id).unwrap()],
        })
        .collect();
    let ctx = || context_with_timeout(Duration::from_secs(5));

    // One answer per prepare, in order: the second conflicts with the first.
    let mut batch = prepares[..2].to_vec();
    batch[1].ops.writes[0].0 = b"k0".to_vec();
    batch.push(prepares[2].clone());
    let votes = p.prepare_many(ctx(), batch.clone()).await??;
    assert!(matches!(votes[0], Ok(Vote::Yes)), "{votes:?}");
    assert!(
        matches!(&votes[1], Ok(Vote::No(AbortReason::LockConflict { holder, .. })) if *holder == batch[0].txid),
        "{votes:?}"
    );
    assert!(matches!(votes[2], Ok(Vote::Yes)), "{votes:?}");
    for prepare in &batch {
        p.abort(ctx(), prepare.txid.clone()).await??;
    }

    match p.prepare_many(ctx(), prepares).await? {
        Err(ServiceError::Invalid(e)) => assert!(e.contains("exceed the limit"), "{e}"),
        other => panic!("{} prepares in one call: expected a refusal, got {other:?}", MAX_PREPARE_BATCH + 1),
    }
    let txids: Vec<TxnId> = (0..=MAX_COMMIT_BATCH as u64).map(txid).collect();
    match p.commit_many(ctx(), txids).await? {
        Err(ServiceError::Invalid(e)) => assert!(e.contains("exceed the limit"), "{e}"),
        other => panic!("{} commits in one call: expected a refusal, got {other:?}", MAX_COMMIT_BATCH + 1),
    }
    // Nothing of the refused batch was prepared, and the participant serves on.
    assert_eq!(cluster.lock_holder(&id, b"k0").await?, None, "a refused batch left a lock");
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    txn.put(b"after", b"ok".to_vec());
    txn.commit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_aborted_not_left_open() -> Result<()> {
    // Found by a user: 64 tasks that began, read and dropped their
    // transactions filled the coordinator's count of open ids in seconds,
    // and every client's `begin` failed as overloaded for a minute.
    use twopc_common::net::context_with_timeout;
    const DROPPED: usize = 500;
    let cluster = Cluster::start(2)?;
    let client = cluster.client().await?;
    let key = cluster.key_per_participant("dropped").remove(0);
    for _ in 0..DROPPED {
        let mut txn = client.begin().await?;
        txn.get(&key).await?;
        drop(txn);
    }
    let c1 = coordinator_rpc(&cluster).await?;
    let spares = twopc_common::client::SPARE_TXIDS;
    cluster
        .eventually("the dropped transactions' ids are released", Duration::from_secs(10), || async {
            let stats = c1.stats(context_with_timeout(Duration::from_secs(2))).await?;
            Ok(stats.open <= spares)
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_clients_and_commits_cut_short_leave_no_id_open() -> Result<()> {
    // Trial 18B: each dropped client left its spare ids open for a minute,
    // so a program making a client per request filled the coordinator's
    // cap on open ids in seconds; a commit future dropped before its
    // request left also left its id open.
    let cluster = Cluster::start(2)?;
    for round in 0..20 {
        let client = cluster.client().await?;
        for i in 0..2 {
            let mut txn = client.begin().await?;
            txn.put(format!("spare-{round}-{i}").as_bytes(), b"v".to_vec());
            txn.commit().await?;
        }
        for i in 0..10u64 {
            let mut txn = client.begin().await?;
            txn.put(format!("cut-{round}-{i}").as_bytes(), b"v".to_vec());
            let _ = tokio::time::timeout(Duration::from_micros(100 * i), txn.commit()).await;
        }
        drop(client);
    }
    let c1 = coordinator_rpc(&cluster).await?;
    cluster
        .eventually("every id of the dropped clients is released", Duration::from_secs(10), || async {
            let stats = c1.stats(twopc_common::net::context_with_timeout(Duration::from_secs(2))).await?;
            Ok(stats.open == 0)
        })
        .await?;
    Ok(())
}

/// Trial 21D: a program returning from `main` right after dropping its
/// client left its spare ids open (the background aborts never ran);
/// `close` aborts them before it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_client_leaves_no_spare_id_open() -> Result<()> {
    let cluster = Cluster::start(2)?;
    let client = cluster.client().await?;
    for i in 0..3 {
        let mut txn = client.begin().await?;
        txn.put(format!("closed-{i}").as_bytes(), b"v".to_vec());
        txn.commit().await?;
    }
    let c1 = coordinator_rpc(&cluster).await?;
    let open = || async {
        Ok::<_, anyhow::Error>(c1.stats(twopc_common::net::context_with_timeout(Duration::from_secs(2))).await?.open)
    };
    cluster
        .eventually("the client holds spare ids", Duration::from_secs(10), || async { Ok(open().await? > 0) })
        .await?;
    client.close().await;
    // At once, not eventually: the aborts were sent and answered.
    assert_eq!(open().await?, 0, "spare ids left open after close");
    Ok(())
}

#[tokio::test]
async fn an_address_that_can_never_work_is_an_invalid_request_not_a_retryable_one() {
    for bad in ["127.0.0.1", "", "127.0.0.1:99999", "http://127.0.0.1:7000", ":7000"] {
        match Client::connect(bad).await {
            Err(e @ ClientError::Invalid(_)) => assert!(!e.is_retryable(), "{bad}: {e}"),
            Err(e) => panic!("{bad:?}: not Invalid: {e:?}"),
            Ok(_) => panic!("{bad:?} connected"),
        }
    }
    let Err(e) = Client::connect_any(&["127.0.0.1:1", "nonsense"]).await else { panic!("connected") };
    assert!(matches!(e, ClientError::Invalid(ref m) if m.contains("nonsense")), "{e:?}");
}

async fn coordinator_rpc(cluster: &Cluster) -> Result<twopc_common::service::CoordinatorRpcClient> {
    use twopc_common::net::{client_config, connect, transport};
    let stream = connect(&cluster.coordinator_addr()).await.map_err(anyhow::Error::msg)?;
    Ok(twopc_common::service::CoordinatorRpcClient::new(client_config(), transport(stream)).spawn())
}

/// A proxy to `target` whose first connection, once `silent` is set,
/// swallows everything the target sends (a connection that stopped
/// delivering); later connections forward both ways.
async fn proxy_whose_first_connection_can_go_silent(
    target: String,
) -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicBool>)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let silent = std::sync::Arc::new(AtomicBool::new(false));
    let flag = silent.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_server).await });
            let watched = first.then(|| flag.clone());
            first = false;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                    if watched.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                        continue;
                    }
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok((addr, silent))
}

/// Trial 20A: a commit whose connection went silent (its answer never
/// came) asked for its outcome on that same connection, and reported
/// "outcome unknown" although the coordinator answered on any new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_connection_went_silent_learns_its_outcome_on_a_new_one() -> Result<()> {
    let cluster = Cluster::start(2)?;
    let (addr, silent) = proxy_whose_first_connection_can_go_silent(cluster.coordinator_addr()).await?;
    let client = Client::connect(&addr).await?;
    let mut txn = client.begin().await?;
    let keys = cluster.key_per_participant("silent");
    for key in &keys {
        txn.put(key, b"landed".to_vec());
    }
    silent.store(true, std::sync::atomic::Ordering::SeqCst);
    let txid = txn.commit().await?;
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        cluster
            .eventually(&format!("{id} to apply {txid}"), Duration::from_secs(10), || async {
                Ok(cluster.read_at(&id, key).await?.value == Some(b"landed".to_vec()))
            })
            .await?;
    }
    Ok(())
}
