//! A participant whose write-ahead log cannot grow (a full disk, here a
//! file-size limit: every write past it fails with EFBIG, as one past a
//! full disk fails with ENOSPC) stops, saying why, and loses nothing it
//! acknowledged: restarted with room, it serves every committed write,
//! and the transaction whose prepare could not be written is all or
//! nothing.

mod support;

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::Cluster;
use twopc_common::client::ClientError;

/// Largest file p1 may write: its log fills after a few dozen commits.
const FILE_SIZE_LIMIT: u64 = 4 * 1024 * 1024;
const VALUE_BYTES: usize = 200 * 1024;
/// More commits than fit under the limit.
const MAX_COMMITS: usize = 200;

/// Kills the hand-started participant however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn value(round: usize) -> Vec<u8> {
    let mut v = vec![b'x'; VALUE_BYTES];
    v[..8].copy_from_slice(&(round as u64).to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_cannot_grow_its_log_stops_and_loses_nothing_acknowledged() -> Result<()> {
    let mut cluster = Cluster::new(2);
    let log = cluster.dir().join("p1-full.log");
    let mut command = cluster.command("p1")?;
    command.stdout(Stdio::null()).stderr(std::fs::File::create(&log)?);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // The server itself ignores SIGXFSZ, so a write past the limit
            // fails with EFBIG (it was killed by the signal, silently,
            // until trial 15 saw it: the test ignored the signal for it).
            let limit = libc::rlimit { rlim_cur: FILE_SIZE_LIMIT, rlim_max: FILE_SIZE_LIMIT };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p1 = Killed(command.spawn()?);
    let addr = cluster.addr("p1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "p1 did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.spawn("p2", &[])?;
    cluster.spawn("c1", &[])?;
    let client = cluster.client().await?;

    let mut acknowledged = Vec::new();
    let mut failed = None;
    for round in 0..MAX_COMMITS {
        let keys = cluster.key_per_participant(&format!("full{round}"));
        let mut txn = client.begin().await?;
        let txid = txn.txid().clone();
        for key in &keys {
            txn.put(key, value(round));
        }
        match txn.commit().await {
            Ok(_) => acknowledged.push((round, keys)),
            Err(e) => {
                failed = Some((txid, keys, e));
                break;
            }
        }
    }
    let (txid, failed_keys, error) = failed.context("every commit succeeded: the limit was never reached")?;
    assert!(!acknowledged.is_empty(), "not one commit fit under the limit");
    assert!(
        matches!(error, ClientError::Aborted { .. } | ClientError::OutcomeUnknown { .. }),
        "{txid}: unexpected error {error}"
    );

    // p1 stops, and its log says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = p1.0.try_wait()? {
            break status;
        }
        anyhow::ensure!(Instant::now() < deadline, "p1 kept running after its log stopped growing");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "p1 exited with {status}");
    let said = std::fs::read_to_string(&log)?;
    assert!(said.contains("File too large"), "p1's log does not say why it stopped:\n{said}");

    // Restarted with room: every acknowledged write is there, and the
    // failed transaction is all or nothing.
    cluster.spawn("p1", &[])?;
    for (round, keys) in &acknowledged {
        let got = client.read(keys.clone()).await?;
        for (key, read) in keys.iter().zip(&got) {
            let stored = read.value.as_ref().with_context(|| format!("round {round}: {key:?} lost"))?;
            assert!(*stored == value(*round), "round {round}: {key:?} holds another value");
        }
    }
    let got = client.read(failed_keys.clone()).await?;
    let present = got.iter().filter(|r| r.value.is_some()).count();
    assert!(present == 0 || present == got.len(), "{txid} is half visible: {present} of {} keys", got.len());
    Ok(())
}
