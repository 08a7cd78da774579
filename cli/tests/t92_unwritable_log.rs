//! A server whose log cannot be written (stderr on a full disk, or a pipe
//! whose reader left) keeps working: its log lines are dropped. Before,
//! the first warning after the disk filled panicked inside the task that
//! logged it (tracing-subscriber reports a failed write with `eprintln!`),
//! and a one-phase commit whose participant went down stopped being
//! retried: the transaction stayed undecided for good.

mod support;

use anyhow::{Context, Result};
use std::fs::File;
use std::process::Child;
use std::time::{Duration, Instant};
use support::Cluster;

/// Kills the hand-started coordinator however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn full_disk() -> Result<File> {
    // Every write to /dev/full fails with ENOSPC.
    File::options().write(true).open("/dev/full").context("opening /dev/full")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_cannot_log_keeps_retrying_a_commit() -> Result<()> {
    let mut cluster = Cluster::new(2);
    cluster.spawn("p1", &[])?;
    // p2 dies as the one-phase commit reaches it, before applying it.
    cluster.spawn("p2", &[("TWOPC_FAULTS", "participant.before-apply=crash")])?;
    let mut command = cluster.command("c1")?;
    command.stdout(full_disk()?).stderr(full_disk()?);
    let _c1 = Killed(command.spawn()?);
    let addr = cluster.coordinator_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "c1 did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A key of p2 only: a one-phase commit. It reached p2, which may have
    // applied it, so the coordinator retries it (logging a warning each
    // time) while p2 is down.
    let key = cluster.key_per_participant("unlogged")[1].clone();
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    txn.put(&key, b"v".to_vec());
    let commit = tokio::spawn(async move { txn.commit().await });
    let p2 = cluster.addr("p2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&p2).is_ok() {
        anyhow::ensure!(Instant::now() < deadline, "p2 did not crash at the one-phase commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.spawn("p2", &[])?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), commit).await.context("no answer to the commit")??;
    outcome.context("the commit failed")?;
    assert_eq!(cluster.read_at("p2", &key).await?.value.as_deref(), Some(&b"v"[..]));
    Ok(())
}
