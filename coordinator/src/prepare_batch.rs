//! First-phase prepare messages, batched per participant
//! ([`crate::batcher`]): at most [`MAX_PREPARE_BATCHES_IN_FLIGHT`]
//! `prepare_many` calls in flight per participant, each carrying at most
//! [`MAX_PREPARE_BATCH`] prepares and, beyond the first,
//! [`MAX_PREPARE_BATCH_BYTES`] of keys and values. At low load a prepare
//! leaves at once, alone; under load one call, one socket write and one
//! reply carry many, where the coordinator used to spend a third of its
//! time writing single messages.
//!
//! Each vote reaches the engine as its own `Vote` event, exactly as with
//! single prepares; a failed call is a failed vote for each of its
//! prepares (the engine aborts them).

use crate::batcher::{self, BatchLimits};
use crate::engine::Event;
use crate::runtime::{Completion, ParticipantPeer};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use twopc_common::limits::{MAX_PREPARE_BATCH, MAX_PREPARE_BATCH_BYTES, RPC_TIMEOUT};
use twopc_common::net::context_with_timeout;
use twopc_common::node::worth_a_warning;
use twopc_common::stall;
use twopc_common::txn::{AbortReason, PrepareRequest, Vote};
use twopc_common::NodeId;
use twopc_common::ServiceError;

/// `prepare_many` calls in flight to one participant, at most.
pub const MAX_PREPARE_BATCHES_IN_FLIGHT: usize = 4;
/// Prepares queued for one participant, at most (the engine's cap on
/// transactions in commit bounds it first).
pub const PREPARE_QUEUE_CAPACITY: usize = crate::engine::MAX_ACTIVE_TXNS;

const LIMITS: BatchLimits = BatchLimits {
    max_items: MAX_PREPARE_BATCH,
    max_bytes: MAX_PREPARE_BATCH_BYTES,
    in_flight: MAX_PREPARE_BATCHES_IN_FLIGHT,
    yield_first: false,
};

/// One participant's queue of prepares to send.
pub(crate) struct PrepareSender {
    to: NodeId,
    queue: mpsc::Sender<Queued>,
    events: mpsc::UnboundedSender<Completion>,
}

/// A prepare, and when it was queued.
struct Queued {
    at: Instant,
    prepare: PrepareRequest,
}

/// When a call to the participant last went unanswered (its deadline
/// passed, or it could not be made), and how many went unanswered since
/// one was answered (the warning is logged at the 1st, 2nd, 4th, 8th…:
/// a participant down under load failed 100 calls a second, each logged).
type LastUnanswered = Arc<Mutex<Unanswered>>;

#[derive(Default)]
struct Unanswered {
    last: Option<Instant>,
    in_a_row: u32,
}

impl PrepareSender {
    /// Starts the participant's sender task.
    pub(crate) fn start(to: NodeId, peer: ParticipantPeer, events: mpsc::UnboundedSender<Completion>) -> Self {
        let (to2, events2) = (to.clone(), events.clone());
        let last_unanswered = LastUnanswered::default();
        let weigh = |q: &Queued| q.prepare.ops.approx_bytes();
        let queue = batcher::start(PREPARE_QUEUE_CAPACITY, LIMITS, weigh, move |batch| {
            let (to, peer, events, last) = (to2.clone(), peer.clone(), events2.clone(), last_unanswered.clone());
            async move { send_batch(&to, &peer, batch, &events, &last).await }
        });
        PrepareSender { to, queue, events }
    }

    /// Queues `prepare`; a full queue is a failed vote.
    pub(crate) fn send(&self, prepare: PrepareRequest) {
        if let Err(e) = self.queue.try_send(Queued { at: Instant::now(), prepare }) {
            let txid = e.into_inner().prepare.txid;
            let detail = format!("{} prepares already queued for it", PREPARE_QUEUE_CAPACITY);
            let vote = Err(AbortReason::ParticipantUnavailable { participant: self.to.clone(), detail });
            let _ = self.events.send(Completion::Event(Event::Vote { txid, from: self.to.clone(), vote }));
        }
    }
}

async fn send_batch(
    to: &NodeId,
    peer: &ParticipantPeer,
    batch: Vec<Queued>,
    events: &mpsc::UnboundedSender<Completion>,
    last_unanswered: &LastUnanswered,
) {
    // Prepares queued before a call to this participant went unanswered
    // waited behind calls to a participant that does not answer (paused,
    // hung): they fail now rather than wait out a deadline of their own
    // (a paused participant held such clients 10 s instead of 5).
    let cutoff = last_unanswered.lock().expect("lock").last;
    let (stale, batch): (Vec<Queued>, Vec<Queued>) = batch.into_iter().partition(|q| cutoff.is_some_and(|c| q.at < c));
    for q in stale {
        let detail = "it left an earlier prepare unanswered while this one waited to be sent".to_string();
        let vote = Err(AbortReason::ParticipantUnavailable { participant: to.clone(), detail });
        tracing::debug!(txid = %q.prepare.txid, participant = %to, "prepare not sent: participant unanswering");
        let _ = events.send(Completion::Event(Event::Vote { txid: q.prepare.txid, from: to.clone(), vote }));
    }
    if batch.is_empty() {
        return;
    }
    let batch: Vec<PrepareRequest> = batch.into_iter().map(|q| q.prepare).collect();
    let call = || {
        peer.call(|c| {
            let batch = batch.clone();
            async move { c.prepare_many(context_with_timeout(RPC_TIMEOUT), batch).await }
        })
    };
    let sent_at = Instant::now();
    let mut answers = call().await;
    if answers.is_err() && stall::stood_still_since(sent_at) {
        // Its deadline ran out while this process stood still, the votes
        // perhaps waiting in the socket: asked once more rather than blame
        // the participant (a prepare is idempotent: one that voted answers
        // with its vote again).
        let first = batch[0].txid.to_string();
        tracing::info!(participant = %to, txid = %first, prepares = batch.len(), "prepare unanswered while this process stood still: asking again");
        answers = call().await;
    }
    match &answers {
        Err(e) => {
            let in_a_row = {
                let mut unanswered = last_unanswered.lock().expect("lock");
                unanswered.last = Some(Instant::now());
                unanswered.in_a_row = unanswered.in_a_row.saturating_add(1);
                unanswered.in_a_row
            };
            // Naming its transactions (they all abort); every txid is in
            // the debug line of its vote.
            const NAMED: usize = 8;
            let mut txids: Vec<String> = batch.iter().take(NAMED).map(|p| p.txid.to_string()).collect();
            if batch.len() > NAMED {
                txids.push(format!("and {} more", batch.len() - NAMED));
            }
            let txids = txids.join(",");
            if worth_a_warning(in_a_row - 1) {
                tracing::warn!(participant = %to, error = %e, in_a_row, %txids, "prepare unanswered: aborting");
            } else {
                tracing::debug!(participant = %to, error = %e, in_a_row, %txids, "prepare unanswered: aborting");
            }
        }
        Ok(_) => {
            let in_a_row = std::mem::take(&mut last_unanswered.lock().expect("lock").in_a_row);
            if in_a_row > 0 {
                tracing::info!(participant = %to, unanswered = in_a_row, "participant answers prepares again");
            }
        }
    }
    let refused = |e: ServiceError| AbortReason::from_participant_error(to.clone(), &e);
    let votes: Vec<Result<Vote, AbortReason>> = match answers {
        // The participant refused the whole call (say, its cluster file
        // differs): that is its answer, not an outage.
        Ok(Err(refusal)) => vec![Err(refused(refusal)); batch.len()],
        answers => batcher::spread(answers, batch.len())
            .into_iter()
            .map(|vote| match vote {
                Ok(vote) => vote.map_err(refused),
                Err(detail) => Err(AbortReason::ParticipantUnavailable { participant: to.clone(), detail }),
            })
            .collect(),
    };
    for (prepare, vote) in batch.into_iter().zip(votes) {
        let txid = prepare.txid;
        match &vote {
            Ok(Vote::Yes) => tracing::debug!(%txid, participant = %to, "vote: yes"),
            Ok(Vote::No(reason)) | Err(reason) => tracing::debug!(%txid, participant = %to, %reason, "vote: no"),
        }
        let _ = events.send(Completion::Event(Event::Vote { txid, from: to.clone(), vote }));
    }
}
