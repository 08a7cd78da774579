//! Requests still being received cannot exhaust a server's memory. Before
//! the frame gate, each connection that sent a 64 MiB length prefix made
//! the participant reserve the whole frame (about 2.3 MB resident per
//! connection with a bare prefix, plus all that was sent after it): 200
//! such connections, each sending 1 MiB, grew it by 248 MiB (19 MiB with
//! the gate).

mod support;

use anyhow::Result;
use std::time::Duration;
use support::Cluster;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use twopc_common::limits::MAX_FRAME_BYTES;

const FLOOD: usize = 200;
/// What each flood connection sends of its frame's body.
const SENT: usize = 1024 * 1024;
/// The participant's growth allowed while the flood lasts.
const MAX_GROWTH_BYTES: u64 = 64 * 1024 * 1024;

fn resident_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    let kib: u64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_large_frames_take_bounded_memory_and_small_requests_go_on() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    let client = cluster.client().await?;
    commit_round(&cluster, &client, "before", 10).await?;
    let p1 = cluster.pid("p1").expect("p1 runs");
    let before = resident_bytes(p1)?;

    let mut flood = Vec::with_capacity(FLOOD);
    let body = vec![7u8; SENT];
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(cluster.addr("p1")).await?;
        stream.write_all(&(MAX_FRAME_BYTES as u32).to_be_bytes()).await?;
        // Connections left waiting for budget stop being read: what they
        // send then stays in the kernel's buffers (or blocks the writer).
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(&body)).await;
        flood.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = resident_bytes(p1)?;
    let growth = during.saturating_sub(before);
    assert!(growth < MAX_GROWTH_BYTES, "p1 grew by {} MiB for {FLOOD} half-sent frames", growth / (1024 * 1024));

    // Small requests go on over connections opened before the flood.
    commit_round(&cluster, &client, "during", 10).await?;
    assert!(cluster.is_running("p1"));

    // Once the flood is gone its budget is back: large requests pass.
    drop(flood);
    commit_round(&cluster, &client, "after", 300_000).await?;
    let key = cluster.key_per_participant("after").remove(0);
    let got = client.read(vec![key]).await?;
    assert_eq!(got[0].value.as_ref().map(Vec::len), Some(300_000));
    Ok(())
}

/// Complete large frames of garbage, more at once than the budget admits:
/// each is received, fails to decode, and closes its connection. The
/// memory they took is handed back once they are gone (trial 16B: the
/// allocator kept it, and a participant stayed at 575 MB for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_of_large_garbage_frames_is_given_back() -> Result<()> {
    const SENDERS: usize = 8;
    let mut cluster = Cluster::start(3)?;
    let client = cluster.client().await?;
    commit_round(&cluster, &client, "before-garbage", 10).await?;
    let p1 = cluster.pid("p1").expect("p1 runs");
    let before = resident_bytes(p1)?;

    let addr = cluster.addr("p1");
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await?;
                stream.write_all(&(MAX_FRAME_BYTES as u32).to_be_bytes()).await?;
                let chunk = vec![i as u8 ^ 0x5a; 1024 * 1024];
                for _ in 0..MAX_FRAME_BYTES / chunk.len() {
                    if stream.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
                )
                .await;
                anyhow::Ok(())
            })
        })
        .collect();
    for sender in senders {
        sender.await??;
    }
    commit_round(&cluster, &client, "after-garbage", 10).await?;
    assert!(cluster.is_running("p1"));
    support::wait_for("p1 gives the frames' memory back", Duration::from_secs(15), || {
        resident_bytes(p1).is_ok_and(|now| now.saturating_sub(before) < MAX_GROWTH_BYTES)
    })?;
    Ok(())
}

/// Commits a value of `size` bytes to a key on every participant.
async fn commit_round(
    cluster: &Cluster,
    client: &twopc_common::client::Client,
    prefix: &str,
    size: usize,
) -> Result<()> {
    let mut txn = client.begin().await?;
    for key in cluster.key_per_participant(prefix) {
        txn.put(&key, vec![b'v'; size]);
    }
    txn.commit().await?;
    Ok(())
}
