//! The coordinators one client may use. New transactions and reads go to
//! the current one; when it cannot be reached, to the next one in the
//! list that can, which becomes current. A transaction's commit and its
//! outcome questions go to the coordinator that minted its id.

use crate::ids::NodeId;
use crate::net::{client_config, spawn_watched, transport, Expected, Peer};
use crate::service::{coordinator_hello, CoordinatorRpcClient, Role};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) type CoordinatorPeer = Arc<Peer<CoordinatorRpcClient>>;

pub(crate) struct CoordinatorSet {
    peers: Vec<CoordinatorPeer>,
    current: AtomicUsize,
    /// Which peer is which coordinator, learned from the ids they mint.
    owners: Mutex<HashMap<NodeId, usize>>,
}

impl CoordinatorSet {
    /// Peers for `addrs` (at least one), none connected yet.
    pub fn new(addrs: &[&str]) -> CoordinatorSet {
        assert!(!addrs.is_empty(), "a client needs at least one coordinator address");
        let peers = addrs
            .iter()
            .map(|addr| {
                Peer::expecting(
                    addr.to_string(),
                    |s, closed| spawn_watched(CoordinatorRpcClient::new(client_config(), transport(s)), closed),
                    Expected { hello: coordinator_hello, role: Role::Coordinator, id: None, accept: None },
                )
            })
            .collect();
        CoordinatorSet { peers, current: AtomicUsize::new(0), owners: Mutex::default() }
    }

    pub fn peer(&self, index: usize) -> &CoordinatorPeer {
        &self.peers[index]
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Connects to the first coordinator that can be reached, in list
    /// order, and makes it current; the error names every failure.
    pub async fn connect_first(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        for (index, peer) in self.peers.iter().enumerate() {
            match peer.client().await {
                Ok(_) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => failures.push(e),
            }
        }
        Err(failures.join("; "))
    }

    /// Runs `call(index)` on the current coordinator, then on each other
    /// in list order while the call fails to get an answer (`Err`); the
    /// first to answer becomes current. Only for idempotent calls.
    pub async fn first_answer<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let start = self.current();
        let mut failures = Vec::new();
        for step in 0..self.peers.len() {
            let index = (start + step) % self.peers.len();
            match call(index).await {
                Ok(answer) => {
                    if index != start {
                        tracing::info!(from = %self.peers[start].addr(), to = %self.peers[index].addr(), "coordinator unreachable: using the next one");
                    }
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) => failures.push(e),
            }
        }
        Err(failures.join("; "))
    }

    /// Remembers that the peer at `index` is coordinator `id`.
    pub fn learn_owner(&self, id: &NodeId, index: usize) {
        self.owners.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), index);
    }

    /// The peer known to be coordinator `id`, if any.
    pub fn owner(&self, id: &NodeId) -> Option<usize> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }
}
