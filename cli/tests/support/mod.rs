//! A real cluster of `twopc` processes for integration tests (the chaos
//! crate's launcher: separate OS processes of the built binary, free
//! loopback ports, RocksDB under a temp dir, all killed and removed on
//! drop), plus the questions the tests ask of it.

#![allow(dead_code)]

use anyhow::{bail, Result};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use twopc_common::client::Client;
use twopc_common::net::{client_config, connect, context_with_timeout, transport};
use twopc_common::service::ParticipantRpcClient;
use twopc_common::txn::PrepareRequest;
use twopc_common::{NodeId, TxnId, TxnOps, Versioned, Vote};

pub fn twopc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_twopc")
}

/// Runs `twopc ARGS` to completion.
pub fn twopc(args: &[&str]) -> Result<Output> {
    Ok(Command::new(twopc_bin()).args(args).output()?)
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A command's stdout as JSON (panics, showing the output, if it is not).
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Polls `done` every 50 ms until it holds, or fails after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline).contains(needle).then_some(pid)
        })
        .collect()
}

/// The chaos crate's launcher, plus what the tests ask of a cluster.
pub struct Cluster {
    inner: twopc_chaos::cluster::Cluster,
}

impl std::ops::Deref for Cluster {
    type Target = twopc_chaos::cluster::Cluster;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Cluster {
    /// Plans 1 coordinator and `participants` participants; starts nothing.
    pub fn new(participants: usize) -> Cluster {
        Cluster::plan(1, participants)
    }

    /// Plans `coordinators` and `participants`; starts nothing.
    pub fn plan(coordinators: usize, participants: usize) -> Cluster {
        let inner = twopc_chaos::cluster::Cluster::new(Path::new(twopc_bin()), coordinators, participants)
            .expect("plan a cluster");
        Cluster { inner }
    }

    /// Starts `coordinators` coordinators and `participants` participants
    /// (no faults) and waits until all listen.
    pub fn start_with_coordinators(coordinators: usize, participants: usize) -> Result<Cluster> {
        let inner = twopc_chaos::cluster::Cluster::new(Path::new(twopc_bin()), coordinators, participants)?;
        let mut cluster = Cluster { inner };
        cluster.start_all()?;
        Ok(cluster)
    }

    /// Starts `participants` participants, then coordinator c1 with `env`
    /// (e.g. `TWOPC_FAULTS`), and waits until all listen.
    pub fn start_with_coordinator_env(participants: usize, env: &[(&str, &str)]) -> Result<Cluster> {
        let mut cluster = Cluster::new(participants);
        for id in cluster.participant_ids() {
            cluster.spawn(&id, &[])?;
        }
        cluster.spawn("c1", env)?;
        Ok(cluster)
    }

    /// Starts every process (no faults) and waits until all listen.
    pub fn start(participants: usize) -> Result<Cluster> {
        let mut cluster = Cluster::new(participants);
        cluster.start_all()?;
        Ok(cluster)
    }

    /// Starts process `id` with `env` (e.g. `TWOPC_FAULTS`; empty clears
    /// it) and waits until it accepts connections.
    pub fn spawn(&mut self, id: &str, env: &[(&str, &str)]) -> Result<()> {
        self.inner.set_env(id, env);
        self.inner.start(id)
    }

    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.coordinator_addr()).await?)
    }

    /// Keys such that key `i` is owned by participant `i` (p1, p2, ...).
    pub fn key_per_participant(&self, prefix: &str) -> Vec<Vec<u8>> {
        let ring = self.config.ring();
        self.participant_ids()
            .iter()
            .map(|id| {
                (0..10_000)
                    .map(|i| format!("{prefix}-{i}").into_bytes())
                    .find(|k| ring.owner(k).as_str() == id)
                    .expect("the ring spreads keys over every participant")
            })
            .collect()
    }

    /// A direct connection to a participant (as a coordinator would have).
    pub async fn participant(&self, id: &str) -> Result<ParticipantRpcClient> {
        let stream = connect(&self.addr(id)).await.map_err(anyhow::Error::msg)?;
        Ok(ParticipantRpcClient::new(client_config(), transport(stream)).spawn())
    }

    /// Reads `key` straight from participant `id`.
    pub async fn read_at(&self, id: &str, key: &[u8]) -> Result<Versioned> {
        let p = self.participant(id).await?;
        let mut got = p.read(context_with_timeout(Duration::from_secs(5)), vec![key.to_vec()]).await??;
        Ok(got.remove(0))
    }

    /// Asks participant `id` to prepare a write of `key` under a fresh
    /// txid of a made-up coordinator epoch: Yes means nobody holds the
    /// key's lock. The probe transaction is aborted right after.
    pub async fn lock_holder(&self, id: &str, key: &[u8]) -> Result<Option<TxnId>> {
        let p = self.participant(id).await?;
        let txid =
            TxnId { coordinator: NodeId::new("c1").map_err(anyhow::Error::msg)?, epoch: u64::MAX, seq: rand_seq() };
        let ops = TxnOps { writes: vec![(key.to_vec(), Some(b"probe".to_vec()))], ..Default::default() };
        let req = PrepareRequest {
            txid: txid.clone(),
            ring: self.config.ring().fingerprint(),
            ops,
            participants: vec![NodeId::new(id).map_err(anyhow::Error::msg)?],
        };
        let vote = p.prepare_many(context_with_timeout(Duration::from_secs(5)), vec![req]).await??.remove(0)?;
        p.abort(context_with_timeout(Duration::from_secs(5)), txid).await??;
        Ok(match vote {
            Vote::Yes => None,
            Vote::No(reason) => match reason.lock_holder() {
                Some(holder) => Some(holder.clone()),
                None => bail!("probe prepare voted No for another reason: {reason:?}"),
            },
        })
    }

    /// Polls `check` until it holds or `timeout` passes.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            match check().await {
                Ok(true) => return Ok(()),
                Ok(false) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(false) => bail!("{what}: not true after {timeout:?}\n{}", self.log_tails()),
                Err(e) => bail!("{what}: {e:#}\n{}", self.log_tails()),
            }
        }
    }

    /// The last lines of every process's log, for a failure that is rare
    /// enough that its logs are the only way to tell why.
    pub fn log_tails(&self) -> String {
        self.ids()
            .iter()
            .map(|id| format!("--- {id} log tail:\n{}", self.log_tail(id, 15)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn rand_seq() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}
