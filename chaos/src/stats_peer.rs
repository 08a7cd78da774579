//! A reconnecting `stats()` connection to any server of a cluster, for the
//! harness's recovery checks and the benchmark's probe: a
//! [`Peer`] (which replaces a dead connection and asks once more) of
//! whichever service the server runs.

use std::sync::Arc;
use std::time::Duration;
use twopc_common::admin::NodeStats;
use twopc_common::net::{client_config, context_with_timeout, spawn_watched, transport, Peer, GUARD_SLACK};
use twopc_common::service::{CoordinatorRpcClient, ParticipantRpcClient};

pub enum StatsPeer {
    Coordinator(Arc<Peer<CoordinatorRpcClient>>),
    Participant(Arc<Peer<ParticipantRpcClient>>),
}

impl StatsPeer {
    /// Not connected until first used.
    pub fn new(addr: &str, coordinator: bool) -> StatsPeer {
        let addr = addr.to_string();
        if coordinator {
            StatsPeer::Coordinator(Peer::new(addr, |s, closed| {
                spawn_watched(CoordinatorRpcClient::new(client_config(), transport(s)), closed)
            }))
        } else {
            StatsPeer::Participant(Peer::new(addr, |s, closed| {
                spawn_watched(ParticipantRpcClient::new(client_config(), transport(s)), closed)
            }))
        }
    }

    /// Opens the connection now (an error if the server cannot be reached).
    pub async fn connect(&self) -> Result<(), String> {
        match self {
            StatsPeer::Coordinator(p) => p.client().await.map(drop),
            StatsPeer::Participant(p) => p.client().await.map(drop),
        }
    }

    /// The server's counters, within `timeout` (a broken connection is
    /// replaced and asked once more).
    pub async fn stats(&self, timeout: Duration) -> Result<NodeStats, String> {
        let guard = timeout + GUARD_SLACK;
        match self {
            StatsPeer::Coordinator(p) => {
                p.call_within(guard, |c| async move { c.stats(context_with_timeout(timeout)).await }).await
            }
            StatsPeer::Participant(p) => {
                p.call_within(guard, |c| async move { c.stats(context_with_timeout(timeout)).await }).await
            }
        }
    }

    /// Connections opened so far: a new one means counters may have
    /// started again from zero (the server restarted).
    pub fn connections_opened(&self) -> u64 {
        match self {
            StatsPeer::Coordinator(p) => p.connections_opened(),
            StatsPeer::Participant(p) => p.connections_opened(),
        }
    }
}
