//! A real cluster of `twopc` processes for integration tests: each server
//! is a separate OS process of the built binary, on a free loopback port,
//! with its own RocksDB directory under a temp dir. Dropping the cluster
//! kills every process and removes the directory.

#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use twopc_common::client::Client;
use twopc_common::config::ClusterConfig;
use twopc_common::net::{client_config, connect, context_with_timeout, transport};
use twopc_common::service::ParticipantRpcClient;
use twopc_common::txn::PrepareRequest;
use twopc_common::{NodeId, TxnId, TxnOps, Versioned, Vote};

/// How long a process may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn twopc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_twopc")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: ClusterConfig,
    pub config_path: PathBuf,
    procs: HashMap<String, Child>,
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Cluster {
    /// Writes a cluster file for 1 coordinator and `participants`
    /// participants; starts nothing.
    pub fn new(participants: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ClusterConfig::loopback(1, participants, 0);
        for entry in config.coordinator.iter_mut().chain(config.participant.iter_mut()) {
            entry.addr = format!("127.0.0.1:{}", free_port());
        }
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, config.to_toml()).expect("write cluster file");
        Cluster { dir, config, config_path, procs: HashMap::new() }
    }

    /// Starts every process (no faults) and waits until all listen.
    pub fn start(participants: usize) -> Result<Cluster> {
        let mut cluster = Cluster::new(participants);
        for id in cluster.participant_ids() {
            cluster.spawn(&id, &[])?;
        }
        cluster.spawn("c1", &[])?;
        Ok(cluster)
    }

    pub fn participant_ids(&self) -> Vec<String> {
        self.config.participant.iter().map(|p| p.id.clone()).collect()
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.log"))
    }

    pub fn addr(&self, id: &str) -> String {
        let entry = self.config.coordinator.iter().chain(&self.config.participant).find(|e| e.id == id);
        entry.unwrap_or_else(|| panic!("no process {id}")).addr.clone()
    }

    pub fn coordinator_addr(&self) -> String {
        self.addr("c1")
    }

    /// The command that runs process `id` (not started).
    pub fn command(&self, id: &str, env: &[(&str, &str)]) -> Command {
        let role = if id.starts_with('c') { "coordinator" } else { "participant" };
        let mut cmd = Command::new(twopc_bin());
        cmd.arg(role)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--id")
            .arg(id)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts process `id` with extra environment (e.g. `TWOPC_FAULTS`)
    /// and waits until it accepts connections.
    pub fn spawn(&mut self, id: &str, env: &[(&str, &str)]) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id))?;
        let mut cmd = self.command(id, env);
        cmd.stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawning {id}"))?;
        self.procs.insert(id.to_string(), child);
        self.wait_ready(id)
    }

    fn wait_ready(&mut self, id: &str) -> Result<()> {
        let addr = self.addr(id);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.procs.get_mut(id).and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{id} exited with {status} before listening:\n{}", self.log(id));
            }
            if Instant::now() > deadline {
                bail!("{id} did not listen on {addr} within {READY_TIMEOUT:?}:\n{}", self.log(id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs process `id` and reaps it.
    pub fn kill(&mut self, id: &str) {
        if let Some(mut child) = self.procs.remove(id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for process `id` to exit by itself (e.g. at a crash fault).
    pub fn wait_exit(&mut self, id: &str, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.procs.get_mut(id).with_context(|| format!("{id} not running"))?;
            if let Some(status) = child.try_wait()? {
                self.procs.remove(id);
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{id} still running after {timeout:?}:\n{}", self.log(id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
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
        let txid = TxnId { coordinator: NodeId::new("c1").map_err(anyhow::Error::msg)?, epoch: u64::MAX, seq: rand_seq() };
        let ops = TxnOps { writes: vec![(key.to_vec(), Some(b"probe".to_vec()))], ..Default::default() };
        let req = PrepareRequest { txid: txid.clone(), ring: self.config.ring().fingerprint(), ops, participants: vec![NodeId::new(id).map_err(anyhow::Error::msg)?] };
        let vote = p.prepare(context_with_timeout(Duration::from_secs(5)), req).await??;
        p.abort(context_with_timeout(Duration::from_secs(5)), txid).await??;
        Ok(match vote {
            Vote::Yes => None,
            Vote::No(twopc_common::AbortReason::LockConflict { holder, .. }) => Some(holder),
            Vote::No(other) => bail!("probe prepare voted No for another reason: {other:?}"),
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
                Ok(false) => bail!("{what}: not true after {timeout:?}"),
                Err(e) => bail!("{what}: {e:#}"),
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn rand_seq() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in self.procs.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
