//! Splitting a transaction by participant: each key goes to the
//! participant that owns it on the ring.

use std::collections::BTreeMap;
use twopc_common::ring::Ring;
use twopc_common::txn::PrepareRequest;
use twopc_common::{NodeId, TxnId, TxnOps};

/// Each involved participant's slice of `ops`, as the prepare (or
/// one-phase commit) it will receive, in participant order.
pub fn plan(ring: &Ring, txid: &TxnId, ops: TxnOps) -> Vec<(NodeId, PrepareRequest)> {
    let mut slices: BTreeMap<NodeId, TxnOps> = BTreeMap::new();
    for (key, version) in ops.reads {
        slices.entry(ring.owner(&key).clone()).or_default().reads.push((key, version));
    }
    for condition in ops.conditions {
        slices.entry(ring.owner(condition.key()).clone()).or_default().conditions.push(condition);
    }
    for (key, value) in ops.writes {
        slices.entry(ring.owner(&key).clone()).or_default().writes.push((key, value));
    }
    let participants: Vec<NodeId> = slices.keys().cloned().collect();
    slices
        .into_iter()
        .map(|(node, ops)| {
            let prepare = PrepareRequest {
                txid: txid.clone(),
                ring: ring.fingerprint(),
                ops,
                participants: participants.clone(),
            };
            (node, prepare)
        })
        .collect()
}
