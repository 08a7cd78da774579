//! Second-phase commit messages, batched per participant
//! ([`crate::batcher`]): at most [`MAX_COMMIT_BATCHES_IN_FLIGHT`]
//! `commit_many` calls in flight per participant, each carrying at most
//! [`MAX_COMMIT_BATCH`] txids. So at low load a commit leaves at once,
//! alone; under load the messages and acks of many transactions share one
//! round trip, which is most of what the commit phase costs.
//!
//! Each txid's answer is fed back to the engine as its own event, exactly
//! as single commits were: `CommitAcked`, `HeuristicMixed` or
//! `CommitFailed` (the engine retries with backoff; a retry waits its
//! backoff here before it joins the queue).

use crate::batcher::{self, BatchLimits};
use crate::engine::Event;
use crate::runtime::{backoff, Completion, ParticipantPeer};
use tokio::sync::mpsc;
use twopc_common::limits::{MAX_COMMIT_BATCH, RPC_TIMEOUT};
use twopc_common::net::context_with_timeout;
use twopc_common::{fault, NodeId, ServiceError, TxnId};

/// `commit_many` calls in flight to one participant, at most.
pub const MAX_COMMIT_BATCHES_IN_FLIGHT: usize = 4;
/// Commits queued for one participant, at most (the engine's cap on
/// transactions in commit bounds it first).
pub const COMMIT_QUEUE_CAPACITY: usize = crate::engine::MAX_ACTIVE_TXNS;

const LIMITS: BatchLimits = BatchLimits {
    max_items: MAX_COMMIT_BATCH,
    max_bytes: usize::MAX,
    in_flight: MAX_COMMIT_BATCHES_IN_FLIGHT,
    // The client's Committed reply was queued just before the commits,
    // and it is the one somebody waits for.
    yield_first: true,
};

/// One participant's queue of commits to send.
pub(crate) struct CommitSender {
    to: NodeId,
    queue: mpsc::Sender<(TxnId, u32)>,
    events: mpsc::UnboundedSender<Completion>,
}

impl CommitSender {
    /// Starts the participant's sender task.
    pub(crate) fn start(to: NodeId, peer: ParticipantPeer, events: mpsc::UnboundedSender<Completion>) -> Self {
        let (to2, events2) = (to.clone(), events.clone());
        let queue = batcher::start(
            COMMIT_QUEUE_CAPACITY,
            LIMITS,
            |_| 0,
            move |batch| {
                let (to, peer, events) = (to2.clone(), peer.clone(), events2.clone());
                async move { send_batch(&to, &peer, batch, &events).await }
            },
        );
        CommitSender { to, queue, events }
    }

    /// Queues the commit of `txid` (attempt `attempt`, after its backoff).
    pub(crate) fn send(&self, txid: TxnId, attempt: u32) {
        let delay = backoff(attempt);
        if delay.is_zero() {
            return self.enqueue(txid, attempt);
        }
        let (queue, events, to) = (self.queue.clone(), self.events.clone(), self.to.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            CommitSender { to, queue, events }.enqueue(txid, attempt);
        });
    }

    fn enqueue(&self, txid: TxnId, attempt: u32) {
        if let Err(e) = self.queue.try_send((txid, attempt)) {
            let (txid, attempt) = e.into_inner();
            tracing::warn!(%txid, participant = %self.to, "commit queue full; will retry");
            let _ = self.events.send(Completion::Event(Event::CommitFailed { txid, from: self.to.clone(), attempt }));
        }
    }
}

async fn send_batch(
    to: &NodeId,
    peer: &ParticipantPeer,
    batch: Vec<(TxnId, u32)>,
    events: &mpsc::UnboundedSender<Completion>,
) {
    // `coordinator.commit-send=drop` withholds a message for good.
    let batch: Vec<(TxnId, u32)> =
        batch.into_iter().filter(|(txid, _)| !fault::hit("coordinator.commit-send", Some(txid))).collect();
    if batch.is_empty() {
        return;
    }
    let txids: Vec<TxnId> = batch.iter().map(|(txid, _)| txid.clone()).collect();
    let sent_at = std::time::Instant::now();
    let answers = peer
        .call(|c| {
            let txids = txids.clone();
            async move { c.commit_many(context_with_timeout(RPC_TIMEOUT), txids).await }
        })
        .await;
    // A deadline that ran out while this process stood still is not the
    // participant's doing (trial 19A: warnings named healthy ones).
    let stood_still = answers.is_err() && twopc_common::stall::stood_still_since(sent_at);
    let answers = batcher::spread(answers, batch.len());
    for ((txid, attempt), answer) in batch.into_iter().zip(answers) {
        let from = to.clone();
        let event = match answer {
            Ok(Ok(())) => {
                if attempt > 0 {
                    // Closes the warnings above (trial 18C: none said it got through).
                    tracing::info!(%txid, participant = %from, failed_attempts = attempt, "commit delivered after retries");
                }
                fault::hit("coordinator.mid-commit-fanout", Some(&txid));
                Event::CommitAcked { txid, from }
            }
            // An operator forced the other outcome there.
            Ok(Err(ServiceError::HeuristicMixed { .. })) => Event::HeuristicMixed { txid, from },
            Ok(Err(e)) => commit_failed(txid, from, attempt, e.to_string(), false),
            Err(error) => commit_failed(txid, from, attempt, error, stood_still),
        };
        let _ = events.send(Completion::Event(event));
    }
}

fn commit_failed(txid: TxnId, from: NodeId, attempt: u32, error: String, stood_still: bool) -> Event {
    // Counted from 1 in the log, as "delivered after retries" counts them
    // (trial 21B read attempt=0, 1, 3, 7, then failed_attempts=8).
    let failed_attempts = attempt.saturating_add(1);
    if stood_still {
        tracing::info!(%txid, participant = %from, failed_attempts, %error, "commit not delivered while this process stood still; will retry");
    } else if twopc_common::node::worth_a_warning(attempt) {
        tracing::warn!(%txid, participant = %from, failed_attempts, %error, "commit not delivered; will retry");
    }
    Event::CommitFailed { txid, from, attempt }
}
