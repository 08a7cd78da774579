//! Messages to one participant, batched: the shape shared by prepares
//! ([`crate::prepare_batch`]) and second-phase commits
//! ([`crate::commit_batch`]).
//!
//! One task per participant reads a bounded queue. It waits for a
//! message, then for a free slot (at most [`BatchLimits::in_flight`]
//! batches in flight); whatever queued meanwhile goes out with it in one
//! call, up to [`BatchLimits::max_items`] messages and
//! [`BatchLimits::max_bytes`] (a message bigger than that goes alone). So
//! at low load a message leaves at once, alone; under load many share one
//! round trip, one write and one read on each side.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use twopc_common::ServiceError;

/// How big batches get, and how many may be in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub max_items: usize,
    /// By the batch's own estimate of its messages' sizes.
    pub max_bytes: usize,
    pub in_flight: usize,
    /// Yield once before sending, so tasks woken with the message run
    /// first (for commits: the client's reply, queued just before).
    pub yield_first: bool,
}

/// Starts the task feeding `send` with batches of what is queued on the
/// returned sender (at most `capacity` messages waiting). `weigh`
/// estimates a message's size in bytes.
pub(crate) fn start<T, F, Fut>(capacity: usize, limits: BatchLimits, weigh: fn(&T) -> usize, send: F) -> mpsc::Sender<T>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (queue, rx) = mpsc::channel(capacity);
    tokio::spawn(run(rx, limits, weigh, send));
    queue
}

async fn run<T, F, Fut>(mut rx: mpsc::Receiver<T>, limits: BatchLimits, weigh: fn(&T) -> usize, send: F)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    let mut carried: Option<T> = None;
    loop {
        let first = match carried.take() {
            Some(message) => message,
            None => match rx.recv().await {
                Some(message) => message,
                None => return,
            },
        };
        if limits.yield_first {
            tokio::task::yield_now().await;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = weigh(&first);
        let mut batch = vec![first];
        while batch.len() < limits.max_items {
            let Ok(next) = rx.try_recv() else { break };
            let size = weigh(&next);
            if bytes.saturating_add(size) > limits.max_bytes {
                carried = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let sent = send(batch);
        tokio::spawn(async move {
            sent.await;
            drop(slot);
        });
    }
}

/// Spreads what one batch call of `n` items returned over its items: each
/// item's own answer, or the call's failure (unreachable peer, refused
/// call, wrong number of answers) for every item.
pub(crate) fn spread<A: Clone>(
    returned: Result<Result<Vec<A>, ServiceError>, String>,
    n: usize,
) -> Vec<Result<A, String>> {
    let failure = match returned {
        Ok(Ok(answers)) if answers.len() == n => return answers.into_iter().map(Ok).collect(),
        Ok(Ok(answers)) => format!("{} answers to {n} requests", answers.len()),
        Ok(Err(e)) => format!("refused: {e}"),
        Err(e) => e,
    };
    vec![Err(failure); n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The batches `queued` (message sizes) form when they queue up while
    /// the only slot is busy with a first message.
    async fn batches_of(max_items: usize, max_bytes: usize, queued: &[usize]) -> Vec<Vec<usize>> {
        let seen: Arc<Mutex<Vec<Vec<usize>>>> = Arc::default();
        let gate = Arc::new(tokio::sync::Notify::new());
        let limits = BatchLimits { max_items, max_bytes, in_flight: 1, yield_first: false };
        let (seen2, gate2) = (seen.clone(), gate.clone());
        let queue = start(
            64,
            limits,
            |m: &usize| *m,
            move |batch: Vec<usize>| {
                let (seen, gate) = (seen2.clone(), gate2.clone());
                async move {
                    let first = seen.lock().unwrap().is_empty();
                    seen.lock().unwrap().push(batch);
                    if first {
                        gate.notified().await;
                    }
                }
            },
        );
        queue.send(1).await.unwrap();
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        for &m in queued {
            queue.send(m).await.unwrap();
        }
        gate.notify_one();
        while seen.lock().unwrap().iter().map(Vec::len).sum::<usize>() < queued.len() + 1 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let mut batches = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(batches.remove(0), vec![1], "the first message leaves alone, at once");
        batches
    }

    #[tokio::test]
    async fn queued_messages_share_a_batch_within_the_limits() {
        // 60 + 50 > 100 bytes; at most 3 messages go together.
        let batches = batches_of(3, 100, &[10, 60, 50, 1, 1, 1, 1]).await;
        assert_eq!(batches, vec![vec![10, 60], vec![50, 1, 1], vec![1, 1]]);
    }

    #[tokio::test]
    async fn a_message_bigger_than_the_limit_goes_alone() {
        let batches = batches_of(10, 100, &[10, 500, 10]).await;
        assert_eq!(batches, vec![vec![10], vec![500], vec![10]]);
    }

    #[test]
    fn a_failed_call_fails_every_item() {
        let ok: Result<Result<Vec<u8>, ServiceError>, String> = Ok(Ok(vec![1, 2]));
        assert_eq!(spread(ok, 2), vec![Ok(1), Ok(2)]);
        assert!(spread(Ok(Ok(vec![1u8])), 2).iter().all(|a| a.as_ref().unwrap_err().contains("1 answers to 2")));
        let refused = Ok(Err(ServiceError::Invalid("too many".into())));
        assert!(spread::<u8>(refused, 3).iter().all(|a| a.as_ref().unwrap_err().contains("too many")));
        assert_eq!(spread::<u8>(Err("unreachable".into()), 2), vec![Err("unreachable".into()); 2]);
    }
}
