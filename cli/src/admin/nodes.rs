//! Reaching every process of a cluster for `twopc admin`.

use super::{Failure, Target, ADMIN_UNAUTHORISED, ADMIN_USAGE};
use std::time::Duration;
use twopc_common::admin::{AdminReply, AdminRequest, NodeStats, ADMIN_TOKEN_ENV};
use twopc_common::config::ClusterConfig;
use twopc_common::net::{client_config, connect, context_with_timeout, transport};
use twopc_common::node::now_ms;
use twopc_common::ring::Ring;
use twopc_common::service::{
    coordinator_hello, introduce, participant_hello, CoordinatorRpcClient, ParticipantRpcClient, Role,
};
use twopc_common::{ServiceError, TxnId};

/// Deadline of one admin call.
pub const ADMIN_RPC_TIMEOUT: Duration = Duration::from_secs(5);

pub fn parse_txid(text: &str) -> Result<TxnId, Failure> {
    text.parse().map_err(|e: String| Failure::new(ADMIN_USAGE, e))
}

pub enum Client {
    Coordinator(CoordinatorRpcClient),
    Participant(ParticipantRpcClient),
}

/// One process: where it is and, if reachable, a connection.
pub struct Node {
    pub id: String,
    pub role: &'static str,
    pub addr: String,
    pub client: Result<Client, String>,
    /// Its clock less this process's, in ms, as seen at connect time. A
    /// node's times (prepared at, locked since) are aged on its own clock:
    /// mixed with this process's, ages were off by 48 s after the wall
    /// clock was stepped (trial 21C), or by the skew between hosts.
    pub clock_offset_ms: i64,
    /// Its statistics, asked once at connect time.
    pub stats: Result<NodeStats, String>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    token: String,
    /// Which participant owns a key.
    pub ring: Ring,
}

impl Cluster {
    /// Loads the cluster (file, or asked from a coordinator) and connects
    /// to every process; unreachable ones are kept with their error.
    pub async fn connect(target: &Target) -> Result<Cluster, Failure> {
        let env_token = std::env::var(ADMIN_TOKEN_ENV).ok().filter(|t| !t.is_empty());
        let (config, token) = match (&target.config, &target.coordinator) {
            // clap's group does not see a global flag given on both sides
            // of the subcommand (trial 21B: both taken, one silently used).
            (Some(_), Some(_)) => {
                return Err(Failure::new(ADMIN_USAGE, "give --config or --coordinator, not both".to_string()))
            }
            (Some(path), None) => {
                let config = ClusterConfig::load(path).map_err(|e| Failure::new(ADMIN_USAGE, e.to_string()))?;
                let token = env_token.or_else(|| config.admin_token.clone());
                (config, token)
            }
            (None, Some(addr)) => {
                let token = env_token.ok_or_else(|| {
                    Failure::new(
                        ADMIN_UNAUTHORISED,
                        format!("set {ADMIN_TOKEN_ENV} (or use --config with a cluster file that has admin_token)"),
                    )
                })?;
                let client = coordinator(addr, None).await.map_err(|e| Failure::new(ADMIN_USAGE, e))?;
                let reply = client
                    .admin(context_with_timeout(ADMIN_RPC_TIMEOUT), token.clone(), AdminRequest::Cluster)
                    .await
                    .map_err(|e| Failure::new(ADMIN_USAGE, format!("coordinator {addr}: {e}")))?;
                match reply.map_err(service_failure)? {
                    AdminReply::Cluster(text) => {
                        let source = format!("the cluster file of coordinator {addr}");
                        let config = ClusterConfig::parse(&text, &source)
                            .map_err(|e| Failure::new(ADMIN_USAGE, e.to_string()))?;
                        (config, Some(token))
                    }
                    other => return Err(Failure::new(ADMIN_USAGE, format!("unexpected reply {other:?}"))),
                }
            }
            (None, None) => {
                return Err(Failure::new(ADMIN_USAGE, "give --config CLUSTER.toml or --coordinator HOST:PORT"))
            }
        };
        let token = token.ok_or_else(|| {
            Failure::new(
                ADMIN_UNAUTHORISED,
                format!("no admin token: set {ADMIN_TOKEN_ENV} or admin_token in the cluster file"),
            )
        })?;
        let mut nodes = Vec::new();
        for entry in &config.coordinator {
            let client = coordinator(&entry.addr, Some(&entry.id)).await.map(Client::Coordinator);
            nodes.push(Node {
                id: entry.id.clone(),
                role: "coordinator",
                addr: entry.addr.clone(),
                client,
                clock_offset_ms: 0,
                stats: Err("not asked".into()),
            });
        }
        let ring = config.ring();
        for entry in &config.participant {
            let client = participant(&entry.addr, &entry.id, &ring).await.map(Client::Participant);
            nodes.push(Node {
                id: entry.id.clone(),
                role: "participant",
                addr: entry.addr.clone(),
                client,
                clock_offset_ms: 0,
                stats: Err("not asked".into()),
            });
        }
        let mut cluster = Cluster { nodes, token, ring };
        cluster.set_aside_refusing_nodes().await?;
        if target.config.is_some() {
            cluster.shun_other_clusters(&config).await?;
        }
        // After the shunning: `status` showed a coordinator of another
        // cluster as up from statistics read before it (trial 22C).
        cluster.read_stats().await;
        Ok(cluster)
    }

    /// Asks each node for its statistics once, noting its clock offset
    /// ([`Node::clock_offset_ms`]); `status` shows the same answers.
    async fn read_stats(&mut self) {
        for i in 0..self.nodes.len() {
            let asked = now_ms();
            let stats = self.ask_stats(&self.nodes[i]).await;
            if let Ok(stats) = &stats {
                let midway = asked + now_ms().saturating_sub(asked) / 2;
                self.nodes[i].clock_offset_ms = stats.now_ms as i64 - midway as i64;
            }
            self.nodes[i].stats = stats;
        }
    }

    /// The time now on `node`'s clock (ms since the Unix epoch), to age
    /// the times it reports.
    pub fn now_at(&self, node: &Node) -> u64 {
        (now_ms() as i64).saturating_add(node.clock_offset_ms).max(0) as u64
    }

    /// How long ago `at` (a time `node` reported) was, on its clock.
    pub fn age_at(&self, node: &Node, at: u64) -> u64 {
        self.now_at(node).saturating_sub(at)
    }

    /// [`Cluster::age_at`] of the node named `id` (this process's clock
    /// for a node not in the cluster).
    pub fn age_at_id(&self, id: &str, at: u64) -> u64 {
        self.node(id).map_or_else(|| now_ms().saturating_sub(at), |n| self.age_at(n, at))
    }

    /// Asks every reachable process to check the token. A token no
    /// process takes is refused before anything is shown; a process that
    /// alone refuses it (another `admin_token`, or none, in its cluster
    /// file) is set aside as not reached, naming why, and the report is
    /// incomplete. Checking only the first process let `status` show such
    /// a participant as up, while every other command failed on it (trial
    /// 18C).
    async fn set_aside_refusing_nodes(&mut self) -> Result<(), Failure> {
        let mut refusals = Vec::new();
        let mut accepted = false;
        for i in 0..self.nodes.len() {
            if self.nodes[i].client.is_err() {
                continue;
            }
            match self.admin(&self.nodes[i], AdminRequest::Ping).await {
                Ok(Ok(_)) => accepted = true,
                // Not answered: later calls fail on it too, and say so.
                Ok(Err(_)) => {}
                Err(refused) => refusals.push((i, refused)),
            }
        }
        if !accepted {
            if let Some((_, refused)) = refusals.into_iter().next() {
                return Err(refused);
            }
            return Ok(());
        }
        for (i, refused) in refusals {
            let node = &mut self.nodes[i];
            node.client = Err(format!(
                "{} (the other processes take this token: is {}'s admin_token, or its {ADMIN_TOKEN_ENV}, another?)",
                refused.message, node.id
            ));
        }
        Ok(())
    }

    /// A coordinator whose own cluster file differs from `config` belongs
    /// to another cluster (a stale or wrong `--config`, ids reused across
    /// clusters): it is set aside as not reached. Its "no record, so
    /// aborted" would otherwise let `resolve` force an abort that the
    /// right coordinator contradicts.
    async fn shun_other_clusters(&mut self, config: &ClusterConfig) -> Result<(), Failure> {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.role != "coordinator" || node.client.is_err() {
                continue;
            }
            let theirs = match self.admin(node, AdminRequest::Cluster).await? {
                Ok(AdminReply::Cluster(text)) => {
                    ClusterConfig::parse(&text, &format!("the cluster file of {}", node.id)).map_err(|e| e.to_string())
                }
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e),
            };
            let why = match theirs {
                Ok(theirs) => config.difference(&theirs).map(|diff| {
                    format!(
                        "{} at {} serves another cluster: its cluster file has {diff}. Is --config this \
                         cluster's file?",
                        node.id, node.addr
                    )
                }),
                Err(e) => Some(format!("{} at {}: cannot compare its cluster file: {e}", node.id, node.addr)),
            };
            if let Some(why) = why {
                self.nodes[i].client = Err(why);
            }
        }
        Ok(())
    }

    pub fn participants(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == "participant")
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Sends an admin request to `node`. `Err` carries a message; a
    /// refused token becomes a [`Failure`] at once (it would be refused
    /// everywhere).
    pub async fn admin(&self, node: &Node, request: AdminRequest) -> Result<Result<AdminReply, String>, Failure> {
        let client = match &node.client {
            Ok(c) => c,
            Err(e) => return Ok(Err(e.clone())),
        };
        let ctx = context_with_timeout(ADMIN_RPC_TIMEOUT);
        let token = self.token.clone();
        let answer = match client {
            Client::Coordinator(c) => c.admin(ctx, token, request).await,
            Client::Participant(c) => c.admin(ctx, token, request).await,
        };
        match answer {
            Err(e) => Ok(Err(format!("{}: {e}", node.id))),
            Ok(Err(ServiceError::Unauthorised(m))) => {
                Err(Failure::new(ADMIN_UNAUTHORISED, format!("{}: {m}", node.id)))
            }
            Ok(Err(e)) => Ok(Err(e.to_string())),
            Ok(Ok(reply)) => Ok(Ok(reply)),
        }
    }

    /// A node's statistics (no token needed).
    async fn ask_stats(&self, node: &Node) -> Result<NodeStats, String> {
        let client = node.client.as_ref().map_err(Clone::clone)?;
        let ctx = context_with_timeout(ADMIN_RPC_TIMEOUT);
        let answer = match client {
            Client::Coordinator(c) => c.stats(ctx).await,
            Client::Participant(c) => c.stats(ctx).await,
        };
        answer.map_err(|e| format!("{}: {e}", node.id))
    }
}

fn service_failure(e: ServiceError) -> Failure {
    match e {
        ServiceError::Unauthorised(m) => Failure::new(ADMIN_UNAUTHORISED, m),
        other => Failure::new(ADMIN_USAGE, other.to_string()),
    }
}

/// A connection to the coordinator at `addr` (`id`, if the cluster file
/// names it), checked with `hello`.
async fn coordinator(addr: &str, id: Option<&str>) -> Result<CoordinatorRpcClient, String> {
    let client = CoordinatorRpcClient::new(client_config(), transport(connect(addr).await?)).spawn();
    introduce(coordinator_hello(client.clone()), addr, Role::Coordinator, id).await?;
    Ok(client)
}

/// A connection to participant `id` at `addr`, checked with `hello`: one
/// routing keys by another participant list than `ring` serves another
/// cluster, and is set aside as not reached (trial 23B: a p3 started from
/// another file was shown "not in doubt" for a transaction the real p3
/// held prepared).
async fn participant(addr: &str, id: &str, ring: &Ring) -> Result<ParticipantRpcClient, String> {
    let client = ParticipantRpcClient::new(client_config(), transport(connect(addr).await?)).spawn();
    let hello = introduce(participant_hello(client.clone()), addr, Role::Participant, Some(id)).await?;
    if hello.ring != ring.fingerprint() {
        return Err(format!(
            "{id} at {addr} serves another cluster: its cluster file lists the participants {}, this one {}",
            hello.ring_described,
            ring.describe()
        ));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trial 21C: a node whose clock is 48 s behind this one (its wall
    /// clock read before a step) reported a transaction prepared 1 s ago,
    /// which was listed as 49 s old.
    #[test]
    fn times_a_node_reports_are_aged_on_its_own_clock() {
        let behind = Node {
            id: "p1".into(),
            role: "participant",
            addr: "127.0.0.1:1".into(),
            client: Err("not connected".into()),
            clock_offset_ms: -48_000,
            stats: Err("not asked".into()),
        };
        let ring = Ring::new(&[twopc_common::NodeId::new("p1").unwrap()], 1);
        let cluster = Cluster { nodes: vec![behind], token: String::new(), ring };
        let prepared = now_ms() - 48_000 - 1_000;
        let age = cluster.age_at_id("p1", prepared);
        assert!((1_000..1_500).contains(&age), "{age} ms");
        assert!(cluster.age_at_id("elsewhere", prepared) >= 49_000, "a node not in the cluster: this clock");
    }
}
