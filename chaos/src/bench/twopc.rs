//! The system under test: a twopc cluster launched with the chaos crate's
//! [`Cluster`] (1 coordinator + N participants, separate processes),
//! driven through the client library, its fsyncs read from each
//! process's `stats()` RPC and its CPU and memory from `/proc`.

use super::driver::{TxnResult, Worker};
use super::procstat;
use super::workload::{TxnPlan, INITIAL_BALANCE};
use super::{NodeSample, Sample};
use crate::cluster::Cluster;
use crate::stats_peer::StatsPeer;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;
use twopc_common::admin::NodeStats;
use twopc_common::client::{Client, ClientError};
use twopc_common::config::{ClusterConfig, NodeEntry};

/// Client connections to the coordinator (workers share them round-robin;
/// each multiplexes many transactions).
pub const CLIENT_CONNECTIONS: usize = 4;
/// Deadline of a `stats()` call.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Launches the cluster (processes log at `warn`: the benchmark measures
/// the protocol, not the logger).
pub fn launch(binary: &Path, dir: &Path, participants: usize) -> Result<Cluster> {
    let mut cluster = Cluster::in_dir(binary, dir, 1, participants)?;
    for id in cluster.ids() {
        cluster.set_env(&id, &[("RUST_LOG", "warn")]);
    }
    cluster.start_all().context("starting the twopc cluster")?;
    Ok(cluster)
}

pub struct TwopcWorker {
    client: Client,
}

/// Workers sharing [`CLIENT_CONNECTIONS`] connections.
pub async fn workers(coordinator: &str, count: usize, connections: &[Client]) -> Result<Vec<TwopcWorker>> {
    let mut conns = connections.to_vec();
    if conns.is_empty() {
        for _ in 0..CLIENT_CONNECTIONS {
            conns.push(Client::connect(coordinator).await.with_context(|| format!("connecting to {coordinator}"))?);
        }
    }
    Ok((0..count).map(|i| TwopcWorker { client: conns[i % conns.len()].clone() }).collect())
}

fn balance(value: Option<Vec<u8>>) -> u64 {
    value.and_then(|v| String::from_utf8(v).ok()?.parse().ok()).unwrap_or(INITIAL_BALANCE)
}

impl TwopcWorker {
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn run(&mut self, plan: TxnPlan) -> Result<TxnResult, ClientError> {
        let mut txn = self.client.begin().await?;
        match plan {
            TxnPlan::Write { keys, value } => {
                for k in keys {
                    txn.put(k.key.as_bytes(), value.to_string().into_bytes());
                }
            }
            TxnPlan::Transfer { from, to, amount } => {
                let got = txn.get_many(vec![from.key.clone().into_bytes(), to.key.clone().into_bytes()]).await?;
                let mut got = got.into_iter();
                let (have, other) = (balance(got.next().flatten()), balance(got.next().flatten()));
                if have < amount {
                    txn.abort().await?;
                    return Ok(TxnResult::Aborted);
                }
                txn.put(from.key.as_bytes(), (have - amount).to_string().into_bytes());
                txn.put(to.key.as_bytes(), (other + amount).to_string().into_bytes());
            }
        }
        txn.commit().await?;
        Ok(TxnResult::Committed)
    }
}

impl Worker for TwopcWorker {
    async fn execute(&mut self, plan: TxnPlan) -> TxnResult {
        match self.run(plan).await {
            Ok(r) => r,
            Err(ClientError::Aborted { .. }) => TxnResult::Aborted,
            Err(e) => TxnResult::Failed(e.to_string()),
        }
    }
}

/// Reads the cluster's counters and its processes' CPU and memory. A
/// server that stops answering (it restarted, say) is asked again on a new
/// connection; while it cannot be reached its counters are unknown, and
/// a new connection tells the window's report that they may have started
/// again from zero.
pub struct Probe {
    /// The coordinator first, then the participants in shard order.
    nodes: Vec<ProbeNode>,
}

/// One server's `stats()` connection.
struct ProbeNode {
    target: Target,
    coordinator: bool,
    peer: StatsPeer,
}

/// A server to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub addr: String,
    /// Known when it runs on this machine under our eyes (for CPU and
    /// memory).
    pub pid: Option<u32>,
}

/// The servers of a launched cluster (with their pids).
pub fn targets_of(cluster: &Cluster) -> (Target, Vec<Target>) {
    let target = |id: String| Target { addr: cluster.addr(&id), pid: cluster.pid(&id), id };
    let coordinator = target(cluster.coordinator_ids()[0].clone());
    (coordinator, cluster.participant_ids().into_iter().map(target).collect())
}

/// The servers of a running cluster's file (the first coordinator; no
/// pids: they may run anywhere).
pub fn targets_in(config: &ClusterConfig) -> (Target, Vec<Target>) {
    let target = |e: &NodeEntry| Target { id: e.id.clone(), addr: e.addr.clone(), pid: None };
    (target(&config.coordinator[0]), config.participant.iter().map(target).collect())
}

impl Probe {
    /// Connects to every server (each must answer now).
    pub async fn connect(coordinator: &Target, participants: &[Target]) -> Result<Probe> {
        let targets = std::iter::once((coordinator, true)).chain(participants.iter().map(|p| (p, false)));
        let nodes: Vec<ProbeNode> = targets
            .map(|(target, coordinator)| ProbeNode {
                target: target.clone(),
                coordinator,
                peer: StatsPeer::new(&target.addr, coordinator),
            })
            .collect();
        for node in &nodes {
            node.peer.connect().await.map_err(anyhow::Error::msg).context("probing the cluster's stats()")?;
        }
        Ok(Probe { nodes })
    }

    /// Every server's counters now; a server that does not answer gets
    /// unknown counters, with the reason (never an error: one server
    /// restarting must not cost the whole report).
    pub async fn sample(&self) -> Result<Sample> {
        let answers = futures::future::join_all(self.nodes.iter().map(ProbeNode::stats)).await;
        let nodes = self.nodes.iter().zip(answers).map(|(node, (session, stats))| {
            let role = if node.coordinator { "coordinator" } else { "participant" };
            let sample = match stats {
                Ok(stats) => node_sample(role, &stats, node.target.pid, session),
                Err(why) => NodeSample {
                    role: role.to_string(),
                    session: Some(session),
                    unread: Some(why),
                    ..NodeSample::default()
                },
            };
            (node.target.id.clone(), sample)
        });
        Ok(Sample::new(nodes.collect()))
    }

    /// Peak RSS of the servers whose pids are known, summed (`None`:
    /// none known).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let peaks: Vec<u64> =
            self.nodes.iter().filter_map(|n| n.target.pid).filter_map(procstat::peak_rss_kib).collect();
        (!peaks.is_empty()).then(|| peaks.iter().sum())
    }

    /// The participants' ids, in shard order.
    pub fn shard_ids(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| !n.coordinator).map(|n| n.target.id.clone()).collect()
    }
}

impl ProbeNode {
    /// The counters, with the number of connections opened so far (a new
    /// one: the server may have restarted).
    async fn stats(&self) -> (u64, Result<NodeStats, String>) {
        let answer = self.peer.stats(STATS_TIMEOUT).await;
        (self.peer.connections_opened(), answer)
    }
}

fn node_sample(role: &str, stats: &NodeStats, pid: Option<u32>, session: u64) -> NodeSample {
    let proc_stat = pid.and_then(procstat::stat);
    NodeSample {
        session: Some(session),
        unread: None,
        role: role.to_string(),
        syncs: Some(stats.wal_syncs),
        batches: Some(stats.wal_batches),
        cpu_ticks: proc_stat.map(|s| s.cpu_ticks),
        rss_kib: pid.and_then(procstat::peak_rss_kib),
    }
}
