//! Plumbing shared by the participant and coordinator runtimes: the
//! bounded queue into a runtime's engine task, the handle of a server
//! running in this process, and the wall clock the engines are fed.

use crate::error::ServiceError;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Milliseconds since the Unix epoch, read from the wall clock once per
/// process and advanced by the monotonic clock after that (0 if the wall
/// clock is before the epoch). The engines' timers run on it: a wall clock
/// stepped back (an NTP step, a VM restored from a snapshot) must not
/// stop an in-doubt participant from asking for its outcome, or hold its
/// locks, until the clock catches up; stepped forward, it must not expire
/// everything at once.
pub fn now_ms() -> u64 {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (at, wall_ms) = ANCHOR.get_or_init(|| {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        (std::time::Instant::now(), wall.map(|d| d.as_millis() as u64).unwrap_or(0))
    });
    wall_ms.saturating_add(at.elapsed().as_millis() as u64)
}

/// Whether failed attempt number `attempt` (from 0) of something retried
/// for as long as it takes is worth a log line: the first few, then ever
/// more rarely (attempts 0, 1, 3, 7, 15, …), but at least one in
/// [`WARN_AT_LEAST_EVERY`]. With retries every few seconds that is one
/// line every few minutes after the first minute, so a peer that is down
/// for an hour does not fill the log with a line per transaction per
/// retry, nor goes silent about it (trial 24C: a line an hour after a
/// day); `twopc admin status` counts what waits meanwhile.
pub fn worth_a_warning(attempt: u32) -> bool {
    let nth = attempt.wrapping_add(1);
    nth.is_power_of_two() || nth.is_multiple_of(WARN_AT_LEAST_EVERY)
}

/// A retried failure is logged at least once in this many attempts (2 to
/// 5 minutes at the 2 to 5 s between retries).
pub const WARN_AT_LEAST_EVERY: u32 = 64;

/// Repeated events of one kind (garbage frames, refused connections),
/// logged at the 1st, 2nd, 4th, 8th… and at least once a minute while
/// they go on: counting alone went quiet for good after a burst (a port
/// scanner's millions), hiding a later event of the same kind.
pub struct LogThrottle {
    count: AtomicU64,
    last_logged_ms: AtomicU64,
}

/// The longest a [`LogThrottle`] stays quiet while its events go on.
pub const LOG_THROTTLE_MAX_QUIET_MS: u64 = 60_000;

impl LogThrottle {
    pub const fn new() -> LogThrottle {
        LogThrottle { count: AtomicU64::new(0), last_logged_ms: AtomicU64::new(0) }
    }

    /// Counts one event: `Some(events so far)` if it is worth a line.
    pub fn event(&self) -> Option<u64> {
        self.event_at(now_ms())
    }

    fn event_at(&self, now: u64) -> Option<u64> {
        let seen = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let quiet_for = now.saturating_sub(self.last_logged_ms.load(Ordering::Relaxed));
        if seen.is_power_of_two() || quiet_for >= LOG_THROTTLE_MAX_QUIET_MS {
            self.last_logged_ms.store(now, Ordering::Relaxed);
            return Some(seen);
        }
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

/// The RPC layer's way into an engine task: a bounded queue of inputs,
/// each carrying the sender its answer comes back on.
pub struct Mailbox<I> {
    tx: mpsc::Sender<I>,
    role: &'static str,
}

impl<I> Clone for Mailbox<I> {
    fn clone(&self) -> Self {
        Mailbox { tx: self.tx.clone(), role: self.role }
    }
}

impl<I: Send> Mailbox<I> {
    /// A mailbox holding at most `capacity` inputs (senders wait when it
    /// is full), and the receiver the engine task reads.
    pub fn new(capacity: usize, role: &'static str) -> (Self, mpsc::Receiver<I>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Mailbox { tx, role }, rx)
    }

    /// Sends the input `make` builds around a reply sender and waits for
    /// the reply.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> I) -> Result<T, ServiceError> {
        let stopping = || ServiceError::Unavailable(format!("{} is stopping", self.role));
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx.send(make(reply_tx)).await.map_err(|_| stopping())?;
        reply_rx.await.map_err(|_| stopping())
    }
}

/// What a server does when a stop signal ends its process: make what it
/// wrote durable and say so on disk (its log's sync and synced mark).
pub type AtStop = Box<dyn FnOnce() + Send>;

/// What a server does first when a stop signal comes, before [`AtStop`]:
/// lets what is in progress finish, within a bound of its own.
pub type Drain = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

/// A server running in this process.
pub struct Running<E> {
    pub addr: std::net::SocketAddr,
    /// Ends with the reason the server stopped (a fatal WAL error).
    stopped: tokio::task::JoinHandle<E>,
    pub(crate) server: tokio::task::JoinHandle<()>,
    drain: Option<Drain>,
    at_stop: AtStop,
}

impl<E> Running<E> {
    pub fn new(
        addr: std::net::SocketAddr,
        stopped: tokio::task::JoinHandle<E>,
        server: tokio::task::JoinHandle<()>,
        at_stop: AtStop,
    ) -> Self {
        Running { addr, stopped, server, drain: None, at_stop }
    }

    /// With `drain` run first at a stop signal.
    pub fn with_drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// For a process that a stop signal ends: what ends when the server
    /// stops, and what to do before the process dies (drain, then the
    /// rest).
    pub fn into_stop_parts(self) -> (tokio::task::JoinHandle<E>, Option<Drain>, AtStop) {
        (self.stopped, self.drain, self.at_stop)
    }

    /// Stops serving at once (as a crash would: nothing is flushed).
    pub fn kill(self) {
        self.server.abort();
        self.stopped.abort();
    }
}

#[cfg(test)]
mod clock_tests {
    use super::{now_ms, worth_a_warning, LogThrottle, LOG_THROTTLE_MAX_QUIET_MS};

    #[test]
    fn a_throttled_log_speaks_at_powers_of_two_and_at_least_once_a_minute() {
        let throttle = LogThrottle::new();
        let start = 1_000_000_000;
        let logged: Vec<u64> = (0..100).filter_map(|_| throttle.event_at(start)).collect();
        assert_eq!(logged, vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(throttle.event_at(start + 1_000), None);
        assert_eq!(throttle.event_at(start + LOG_THROTTLE_MAX_QUIET_MS), Some(102), "quiet for a minute");
        assert_eq!(throttle.event_at(start + LOG_THROTTLE_MAX_QUIET_MS + 1), None);
    }

    #[test]
    fn retries_warn_ever_more_rarely() {
        let warned: Vec<u32> = (0..64).filter(|&a| worth_a_warning(a)).collect();
        assert_eq!(warned, [0, 1, 3, 7, 15, 31, 63]);
    }

    #[test]
    fn now_ms_starts_at_the_wall_clock_and_never_goes_back() {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let first = now_ms();
        assert!(first.abs_diff(wall) < 5_000, "{first} vs wall clock {wall}");
        let mut last = first;
        for _ in 0..1000 {
            let now = now_ms();
            assert!(now >= last);
            last = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(now_ms() >= first + 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_retried_for_good_is_logged_ever_more_rarely_but_never_stops() {
        let logged: Vec<u32> = (0..300).filter(|&a| worth_a_warning(a)).collect();
        assert_eq!(logged, vec![0, 1, 3, 7, 15, 31, 63, 127, 191, 255]);
        let after_a_day = (1_000_000..1_000_000 + WARN_AT_LEAST_EVERY).filter(|&a| worth_a_warning(a)).count();
        assert_eq!(after_a_day, 1);
    }
}
