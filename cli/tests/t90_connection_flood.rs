//! A flood of idle connections against a participant whose open-file limit
//! is low (Debian's default soft limit is 1,024): the participant closes
//! what it has no room for, keeps serving, and its write-ahead log keeps
//! the file descriptors it needs. Before the connection limit, the flood
//! took every descriptor and the next WAL file open stopped the server.
//! And the flood cannot lock anybody out: a restarted coordinator's new
//! connections take the slots of flood connections that sat idle. Before
//! that, the participant refused every new connection while the flood
//! lasted, so a coordinator restarted meanwhile could not reach it.
//!
//! Its own test binary: it lowers this process's open-file limit, which
//! the cluster's processes inherit.

mod support;

use anyhow::Result;
use std::time::Duration;
use support::Cluster;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Low enough that the participants' connection limit is the minimum
/// (`open_files::MIN_CONNECTIONS`, 64 connections).
const OPEN_FILES: u64 = 560;
const FLOOD: usize = 200;

fn lower_open_file_limit(to: u64) {
    let limit = libc::rlimit { rlim_cur: to, rlim_max: to };
    // SAFETY: setrlimit only reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "cannot lower the open-file limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_shed_and_transactions_still_commit() -> Result<()> {
    lower_open_file_limit(OPEN_FILES);
    let mut cluster = Cluster::start(3)?;
    let client = cluster.client().await?;
    // The coordinator's connections to the participants open with the
    // first transaction, before the flood.
    commit_round(&cluster, &client, 0).await?;
    let p1 = cluster.addr("p1");
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(TcpStream::connect(&p1).await?);
    }
    let mut closed = 0;
    for stream in &mut flood {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert!(closed >= FLOOD - 64, "only {closed} of {FLOOD} flood connections were closed");

    // While the flood holds every slot it got, transactions commit over
    // the connections opened before it.
    for round in 1..=20 {
        commit_round(&cluster, &client, round).await?;
    }
    assert!(cluster.is_running("p1"), "p1 stopped under the flood");
    let key = cluster.key_per_participant("flood20").remove(0);
    let got = client.read(vec![key.clone()]).await?;
    assert_eq!(got[0].value, Some(b"v20".to_vec()));

    // A coordinator restarted while the flood still holds its slots
    // connects to p1 anew: its connections take the slots of flood
    // connections idle for longer than MIN_IDLE_TO_EVICT.
    tokio::time::sleep(twopc_common::connections::MIN_IDLE_TO_EVICT).await;
    cluster.kill("c1");
    // The slot of the dead coordinator's connection goes to the flood too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    flood.push(TcpStream::connect(&p1).await?);
    let still_open_before = count_open(&mut flood).await;
    cluster.start("c1")?;
    let client = cluster.client().await?;
    for round in 21..=25 {
        commit_round(&cluster, &client, round).await?;
    }
    let key = cluster.key_per_participant("flood25").remove(0);
    assert_eq!(client.read(vec![key.clone()]).await?[0].value, Some(b"v25".to_vec()));
    let still_open_after = count_open(&mut flood).await;
    assert!(
        still_open_after < still_open_before,
        "no flood connection made room ({still_open_before} open before the restart, {still_open_after} after)"
    );

    // Once the flood is gone, new connections are served again.
    drop(flood);
    cluster
        .eventually("p1 takes new connections", Duration::from_secs(10), || async {
            Ok(cluster.read_at("p1", &key).await.is_ok())
        })
        .await?;
    Ok(())
}

/// How many of `flood` the server has not closed.
async fn count_open(flood: &mut [TcpStream]) -> usize {
    let mut open = 0;
    for stream in flood {
        let mut byte = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await.is_err() {
            open += 1;
        }
    }
    open
}

/// Writes `v{round}` to a fresh key on every participant (commits reach
/// participants after the reply, so reusing keys could meet their locks).
async fn commit_round(cluster: &Cluster, client: &twopc_common::client::Client, round: u32) -> Result<()> {
    let mut txn = client.begin().await?;
    for key in cluster.key_per_participant(&format!("flood{round}")) {
        txn.put(&key, format!("v{round}").into_bytes());
    }
    txn.commit().await?;
    Ok(())
}
