//! A server's live connections, at most a fixed number. When the table is
//! full, a new connection takes the slot of the connection that has been
//! idle longest (no request running, none arrived or finished for at least
//! [`MIN_IDLE_TO_EVICT`]); only if every connection is busy is the new one
//! refused. So connections leaked by a client, or opened and left idle by
//! a flood, cannot lock out a restarted coordinator or a new client: their
//! connections are the ones closed. A peer whose idle connection was
//! closed reconnects on its next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

/// A connection is never closed to make room before it has been idle this
/// long: a client's new connection has time to send its first request,
/// and a response just handed to the connection has time to be written.
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

/// What one connection is doing, updated by its requests.
#[derive(Debug)]
pub struct Activity {
    /// Requests running on the connection.
    running: AtomicUsize,
    /// When a request last arrived or finished (or the connection opened),
    /// in milliseconds since the table's epoch.
    last_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let activity = Activity { running: AtomicUsize::new(0), last_ms: AtomicU64::new(0), epoch };
        activity.touch();
        activity
    }

    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Marks a request as running until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> RunningRequest {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RunningRequest(Arc::clone(self))
    }

    /// How long the connection has been idle, if it is (`None` while a
    /// request runs).
    fn idle_for(&self, now_ms: u64) -> Option<Duration> {
        if self.running.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(Duration::from_millis(now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed))))
    }
}

/// A request running on a connection (see [`Activity::request`]).
#[derive(Debug)]
pub struct RunningRequest(Arc<Activity>);

impl Drop for RunningRequest {
    fn drop(&mut self) {
        self.0.touch();
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Entry {
    activity: Arc<Activity>,
    task: AbortHandle,
}

/// What [`ConnectionTable::admit`] did with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// There was a free slot.
    Admitted,
    /// The connection idle longest (this long) was closed to make room.
    Evicted(Duration),
    /// Every connection is busy or was active within [`MIN_IDLE_TO_EVICT`]:
    /// the new connection is closed.
    Refused,
}

/// The live connections of one server.
pub struct ConnectionTable {
    max: usize,
    epoch: Instant,
    min_idle_to_evict: Duration,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
}

impl ConnectionTable {
    /// A table of at most `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Self::with_min_idle(max, MIN_IDLE_TO_EVICT)
    }

    fn with_min_idle(max: usize, min_idle_to_evict: Duration) -> Arc<Self> {
        Arc::new(ConnectionTable {
            max,
            epoch: Instant::now(),
            min_idle_to_evict,
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // The map stays consistent whatever panicked while holding it.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for a new connection if the table is full (closing the
    /// connection idle longest), and, unless refused, spawns `serve` with
    /// the new connection's [`Activity`]. The connection leaves the table
    /// when `serve` ends or the connection is closed to make room.
    pub fn admit<F, Fut>(self: &Arc<Self>, serve: F) -> Admission
    where
        F: FnOnce(Arc<Activity>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut live = self.lock();
        let mut admission = Admission::Admitted;
        let mut evicted = None;
        if live.len() >= self.max {
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            let idlest = live
                .iter()
                .filter_map(|(id, entry)| entry.activity.idle_for(now_ms).map(|idle| (idle, *id)))
                .filter(|(idle, _)| *idle >= self.min_idle_to_evict)
                .max();
            let Some((idle, id)) = idlest else { return Admission::Refused };
            evicted = live.remove(&id);
            admission = Admission::Evicted(idle);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(self.epoch));
        let leave = LeaveOnDrop { table: Arc::downgrade(self), id };
        let served = serve(Arc::clone(&activity));
        let task = tokio::spawn(async move {
            let _leave = leave;
            served.await;
        });
        live.insert(id, Entry { activity, task: task.abort_handle() });
        drop(live);
        // Aborted outside the lock: the aborted task's own exit takes it.
        if let Some(evicted) = evicted {
            evicted.task.abort();
        }
        admission
    }
}

/// Removes a connection from its table when its task ends or is aborted.
struct LeaveOnDrop {
    table: std::sync::Weak<ConnectionTable>,
    id: u64,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// Admits a connection that lives until its returned sender is dropped
    /// or it is evicted; `closed` fires when it ends either way.
    fn open(table: &Arc<ConnectionTable>) -> (Admission, Option<Arc<Activity>>, oneshot::Receiver<()>) {
        let (closed_tx, closed) = oneshot::channel::<()>();
        let mut seen = None;
        let admission = table.admit(|activity| {
            seen = Some(Arc::clone(&activity));
            async move {
                let _closed_tx = closed_tx;
                std::future::pending::<()>().await;
            }
        });
        (admission, seen, closed)
    }

    #[tokio::test]
    async fn a_full_table_closes_the_connection_idle_longest() {
        let table = ConnectionTable::with_min_idle(2, Duration::from_millis(50));
        let (a, _, a_closed) = open(&table);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (b, _, mut b_closed) = open(&table);
        assert_eq!((a, b), (Admission::Admitted, Admission::Admitted));
        // Neither has been idle long enough yet.
        let (c, activity, _) = open(&table);
        assert_eq!(c, Admission::Refused);
        assert!(activity.is_none(), "a refused connection is not served");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (d, _, _d_closed) = open(&table);
        assert!(matches!(d, Admission::Evicted(idle) if idle >= Duration::from_millis(80)), "{d:?}");
        assert!(a_closed.await.is_err(), "the oldest idle connection is closed");
        assert!(b_closed.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Empty), "b stays open");
        assert_eq!(table.len(), 2);
    }

    #[tokio::test]
    async fn a_connection_running_a_request_is_never_closed_for_room() {
        let table = ConnectionTable::with_min_idle(2, Duration::from_millis(10));
        let (_, busy, mut busy_closed) = open(&table);
        let running = busy.expect("admitted").request();
        let (_, idle, _) = open(&table);
        tokio::time::sleep(Duration::from_millis(40)).await;
        // The busy connection is the older one, but it is running a request.
        let (admission, _, _) = open(&table);
        assert!(matches!(admission, Admission::Evicted(_)), "{admission:?}");
        assert!(busy_closed.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Empty));
        assert!(idle.is_some());
        // Now both live connections are busy or fresh: refused.
        let (refused, _, _) = open(&table);
        assert_eq!(refused, Admission::Refused);
        // A request that just finished counts as activity.
        drop(running);
        let (again, _, _) = open(&table);
        assert_eq!(again, Admission::Refused);
    }

    #[tokio::test]
    async fn a_connection_that_ends_leaves_the_table() {
        let table = ConnectionTable::new(4);
        let (done_tx, done_rx) = oneshot::channel::<()>();
        table.admit(|_| async move {
            let _ = done_rx.await;
        });
        assert_eq!(table.len(), 1);
        drop(done_tx);
        for _ in 0..100 {
            if table.is_empty() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the ended connection is still in the table");
    }
}
