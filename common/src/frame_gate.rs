//! The inbound side of a server's connections, between the socket and the
//! length-delimited codec: the memory that requests still being received
//! may take is bounded for the whole process.
//!
//! The codec alone reserves the size a frame's prefix announces (up to
//! [`MAX_FRAME_BYTES`]) as soon as the prefix arrives: a few hundred
//! connections that each sent a prefix of 64 MiB, or a prefix and part of
//! the body, took gigabytes. Here a frame of at most [`SMALL_FRAME_BYTES`]
//! passes straight on. A larger one is held back, prefix included, until
//! it is complete: it is first admitted against the process's
//! [`FrameBudget`] for its announced size (waiting, without reading
//! further from that connection, while the budget is spent), grows only
//! with the bytes that really arrive, and must be complete within
//! [`LARGE_FRAME_RECEIVE_TIMEOUT`] of its prefix, or the connection is
//! closed. Admitted frames always have the budget to finish, so large
//! requests arriving together wait for each other and never deadlock.
//! Waiting frames are admitted in the order they began to wait: senders
//! that keep the budget spent cannot hold one back for good while later,
//! smaller frames slip past it.

use crate::limits::{CLIENT_COMMIT_TIMEOUT, MAX_FRAME_BYTES};
use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Frames up to this size (the prefix's announced size) pass on at once.
pub const SMALL_FRAME_BYTES: usize = 64 * 1024;
/// Announced bytes of large frames being received, at most, per process.
pub const MAX_LARGE_FRAME_BYTES_RECEIVING: usize = 256 * 1024 * 1024;
/// A large frame must be complete this long after its prefix arrived: no
/// request that takes longer to arrive could still be answered in time.
pub const LARGE_FRAME_RECEIVE_TIMEOUT: Duration = CLIENT_COMMIT_TIMEOUT;
/// Once admitted, a large frame must keep arriving at this rate (after
/// [`LARGE_FRAME_RATE_GRACE`]): a sender trickling a byte a second would
/// otherwise hold its share of the budget for the whole receive timeout,
/// and a few dozen such connections kept every large request waiting.
pub const MIN_LARGE_FRAME_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// How long an admitted large frame may take before the rate counts.
pub const LARGE_FRAME_RATE_GRACE: Duration = Duration::from_secs(1);
/// How often a large frame waiting for budget tries again.
pub const BUDGET_RETRY_INTERVAL: Duration = Duration::from_millis(10);
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes a large frame's buffer grows by at once, at most.
const LARGE_READ_CHUNK: usize = 1024 * 1024;
const PREFIX_BYTES: usize = 4;

const _: () = assert!(MAX_FRAME_BYTES <= MAX_LARGE_FRAME_BYTES_RECEIVING, "a largest frame must fit the budget");

/// Large frames that had to wait for budget, in this process (logged at
/// the 1st, 2nd, 4th, 8th…).
static FRAMES_WAITED: crate::node::LogThrottle = crate::node::LogThrottle::new();

/// Announced bytes of the large frames being received, shared by every
/// connection of a process, and the line of frames waiting for them.
#[derive(Debug)]
pub struct FrameBudget {
    in_use: AtomicUsize,
    limit: usize,
    /// Tickets of the frames waiting for budget, oldest first; only the
    /// oldest may be admitted (and a new frame only when none waits).
    line: Mutex<BTreeSet<u64>>,
    next_ticket: AtomicU64,
    /// Large frames admitted since the process started.
    admitted: AtomicU64,
}

impl FrameBudget {
    pub const fn new(limit: usize) -> FrameBudget {
        FrameBudget {
            in_use: AtomicUsize::new(0),
            limit,
            line: Mutex::new(BTreeSet::new()),
            next_ticket: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
        }
    }

    /// Admits a frame of `bytes` if it is first in line (`ticket` is the
    /// oldest waiting, or nothing waits and it has none) and they fit;
    /// otherwise it keeps (or takes) its place in line in `ticket`.
    fn admit(&self, bytes: usize, ticket: &mut Option<u64>) -> bool {
        let mut line = self.line.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = match *ticket {
            Some(mine) => line.first() == Some(&mine),
            None => line.is_empty(),
        };
        if first && self.try_take(bytes) {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            if let Some(mine) = ticket.take() {
                line.remove(&mine);
            }
            return true;
        }
        if ticket.is_none() {
            let mine = self.next_ticket.fetch_add(1, Ordering::Relaxed);
            line.insert(mine);
            *ticket = Some(mine);
            // Slow senders of large frames can hold the budget: requests
            // behind them waited 9-13 s with nothing logged (trial 21A).
            if let Some(waited) = FRAMES_WAITED.event() {
                tracing::warn!(
                    bytes,
                    in_use = self.in_use(),
                    limit = self.limit,
                    waiting = line.len(),
                    waited,
                    "a large request waits: the memory for large requests being received is taken (by slow or \
                     stalled senders?)"
                );
            }
        }
        false
    }

    /// Gives up a place in line (the connection closed or gave up).
    fn leave_line(&self, ticket: u64) {
        self.line.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&ticket);
    }

    /// Large frames admitted so far (to tell whether any came lately).
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        let before = self.in_use.fetch_sub(bytes, Ordering::AcqRel);
        assert!(before >= bytes, "frame budget returned more than taken");
    }
}

/// The budget of every server connection of this process.
pub static SERVER_FRAME_BUDGET: FrameBudget = FrameBudget::new(MAX_LARGE_FRAME_BYTES_RECEIVING);

/// Where the reader is in the stream of frames.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Between frames: `have` bytes of the next prefix scanned.
    Prefix { bytes: [u8; PREFIX_BYTES], have: usize },
    /// Inside a frame's body, `left` bytes still to come.
    Body { left: usize, large: bool },
}

/// What scanning the buffered bytes came to.
enum Scan {
    /// Some bytes became ready to pass on, or more must be read.
    Continue,
    /// A large frame waits for budget.
    WaitForBudget,
}

/// Connections closed for announcing a frame over the limit, in this
/// process (logged at the 1st, 2nd, 4th, 8th…).
static OVERSIZED_FRAMES: crate::node::LogThrottle = crate::node::LogThrottle::new();

/// What a connection's first bytes suggest it speaks, if not twopc.
fn not_twopc_hint(prefix: &[u8; PREFIX_BYTES]) -> &'static str {
    match prefix {
        b"GET " | b"POST" | b"HEAD" | b"PUT " | b"HTTP" | b"OPTI" | b"DELE" | b"PATC" | b"CONN" => {
            " (an HTTP request? this port speaks twopc's RPC only)"
        }
        [0x16, 0x03, ..] => " (a TLS handshake? this port speaks twopc's RPC, without TLS)",
        b"SSH-" => " (an SSH client? this port speaks twopc's RPC only)",
        _ => "",
    }
}

/// A socket whose inbound frames pass through the gate (see the module).
pub struct GatedStream<S> {
    inner: S,
    budget: &'static FrameBudget,
    receive_timeout: Duration,
    /// Who is on the other end, for the log.
    peer: String,
    /// Bytes read from the socket: `buf[start..ready]` may be passed on,
    /// `buf[ready..scanned]` belong to a prefix or a large frame not yet
    /// complete, `buf[scanned..end]` are not scanned yet.
    buf: Vec<u8>,
    start: usize,
    ready: usize,
    scanned: usize,
    end: usize,
    position: Position,
    /// Budget held by the large frame being received.
    charged: usize,
    /// When the large frame's prefix arrived, when it was admitted, and
    /// how much of its body has arrived since.
    prefix_at: Option<Instant>,
    admitted_at: Option<Instant>,
    received: usize,
    /// When the large frame being received must be complete.
    deadline: Option<Pin<Box<Sleep>>>,
    /// When a large frame waiting for budget tries again.
    retry: Option<Pin<Box<Sleep>>>,
    /// Its place in the budget's line.
    ticket: Option<u64>,
}

impl<S> GatedStream<S> {
    /// Gates `inner`'s inbound frames against `budget`.
    pub fn new(inner: S, peer: String, budget: &'static FrameBudget, receive_timeout: Duration) -> Self {
        GatedStream {
            inner,
            budget,
            receive_timeout,
            peer,
            buf: Vec::new(),
            start: 0,
            ready: 0,
            scanned: 0,
            end: 0,
            position: Position::Prefix { bytes: [0; PREFIX_BYTES], have: 0 },
            charged: 0,
            prefix_at: None,
            admitted_at: None,
            received: 0,
            deadline: None,
            retry: None,
            ticket: None,
        }
    }

    /// Scans the bytes read so far, moving `ready` past every complete
    /// small-frame byte and every complete large frame.
    fn scan(&mut self) -> io::Result<Scan> {
        loop {
            match self.position {
                Position::Prefix { bytes, have } if have == PREFIX_BYTES => {
                    let announced = u32::from_be_bytes(bytes) as usize;
                    if announced > MAX_FRAME_BYTES {
                        // A port scanner or health check did this on every
                        // connection: 74 lines a second (trial 21A).
                        if let Some(seen) = OVERSIZED_FRAMES.event() {
                            tracing::warn!(
                                peer = %self.peer,
                                announced,
                                max = MAX_FRAME_BYTES,
                                seen,
                                "frame over the size limit{}: closing the connection",
                                not_twopc_hint(&bytes)
                            );
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("a frame of {announced} bytes is over the limit of {MAX_FRAME_BYTES}"),
                        ));
                    }
                    if announced <= SMALL_FRAME_BYTES {
                        self.ready = self.scanned;
                        self.position = Position::Body { left: announced, large: false };
                        continue;
                    }
                    if self.deadline.is_none() {
                        self.prefix_at = Some(Instant::now());
                        self.deadline = Some(Box::pin(tokio::time::sleep(self.receive_timeout)));
                    }
                    if !self.budget.admit(announced, &mut self.ticket) {
                        return Ok(Scan::WaitForBudget);
                    }
                    self.retry = None;
                    self.charged = announced;
                    self.admitted_at = Some(Instant::now());
                    self.received = 0;
                    self.position = Position::Body { left: announced, large: true };
                }
                Position::Prefix { mut bytes, have } => {
                    if self.scanned == self.end {
                        return Ok(Scan::Continue);
                    }
                    let take = (PREFIX_BYTES - have).min(self.end - self.scanned);
                    bytes[have..have + take].copy_from_slice(&self.buf[self.scanned..self.scanned + take]);
                    self.scanned += take;
                    self.position = Position::Prefix { bytes, have: have + take };
                }
                Position::Body { left: 0, large } => {
                    self.ready = self.scanned;
                    if large {
                        self.budget.give_back(std::mem::take(&mut self.charged));
                        self.deadline = None;
                        (self.prefix_at, self.admitted_at) = (None, None);
                    }
                    self.position = Position::Prefix { bytes: [0; PREFIX_BYTES], have: 0 };
                }
                Position::Body { left, large } => {
                    if self.scanned == self.end {
                        return Ok(Scan::Continue);
                    }
                    let take = left.min(self.end - self.scanned);
                    self.scanned += take;
                    if large {
                        self.received += take;
                    } else {
                        self.ready = self.scanned;
                    }
                    self.position = Position::Body { left: left - take, large };
                }
            }
        }
    }

    /// When the large frame being received must be complete by, as it
    /// stands: within the receive timeout of its prefix, and, once
    /// admitted, at the minimum rate; and whether the rate is what binds.
    /// `None` between large frames.
    fn large_frame_due(&self) -> Option<(Instant, bool)> {
        let overall = self.prefix_at? + self.receive_timeout;
        let Some(admitted_at) = self.admitted_at else { return Some((overall, false)) };
        let earned = Duration::from_secs_f64(self.received as f64 / MIN_LARGE_FRAME_BYTES_PER_SEC);
        let by_rate = admitted_at + LARGE_FRAME_RATE_GRACE + earned;
        Some(if by_rate < overall { (by_rate, true) } else { (overall, false) })
    }

    /// Makes room after `end` for the next read: moves unread bytes to the
    /// front, and grows a large frame's buffer by what it still needs.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.ready = 0;
            self.scanned = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.ready -= self.start;
            self.scanned -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        let wanted = match self.position {
            Position::Body { left, large: true } => {
                left.saturating_sub(self.end - self.scanned).clamp(1, LARGE_READ_CHUNK)
            }
            _ => READ_CHUNK,
        };
        if self.buf.len() - self.end < wanted.min(READ_CHUNK) {
            self.buf.resize(self.end + wanted.max(READ_CHUNK), 0);
        }
    }
}

impl<S> Drop for GatedStream<S> {
    fn drop(&mut self) {
        if self.charged > 0 {
            self.budget.give_back(self.charged);
        }
        if let Some(ticket) = self.ticket.take() {
            self.budget.leave_line(ticket);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GatedStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > this.start {
                let n = (this.ready - this.start).min(out.remaining());
                out.put_slice(&this.buf[this.start..this.start + n]);
                this.start += n;
                if this.start == this.end && this.buf.len() > READ_CHUNK {
                    // A large frame went through: do not keep its memory.
                    this.buf = Vec::new();
                    (this.start, this.ready, this.scanned, this.end) = (0, 0, 0, 0);
                }
                return Poll::Ready(Ok(()));
            }
            let scan = this.scan()?;
            if this.ready > this.start {
                continue;
            }
            if let (Some((due, too_slow)), Some(deadline)) = (this.large_frame_due(), this.deadline.as_mut()) {
                if deadline.deadline() != due {
                    deadline.as_mut().reset(due);
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    let why = if too_slow {
                        format!("a large frame arrived slower than {MIN_LARGE_FRAME_BYTES_PER_SEC} bytes/s")
                    } else {
                        format!("a large frame did not arrive within {:?}", this.receive_timeout)
                    };
                    tracing::warn!(peer = %this.peer, "{why}: closing the connection");
                    if let Some(ticket) = this.ticket.take() {
                        this.budget.leave_line(ticket);
                    }
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
            }
            if let Scan::WaitForBudget = scan {
                let retry = this.retry.get_or_insert_with(|| Box::pin(tokio::time::sleep(BUDGET_RETRY_INTERVAL)));
                if retry.as_mut().poll(cx).is_ready() {
                    this.retry = None;
                    continue;
                }
                return Poll::Pending;
            }
            this.make_room();
            let mut read = ReadBuf::new(&mut this.buf[this.end..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The peer closed: a frame it did not finish is dropped.
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => this.end += read.filled().len(),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GatedStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connection_speaking_another_protocol_is_named_in_the_log() {
        assert!(super::not_twopc_hint(b"GET ").contains("HTTP"));
        assert!(super::not_twopc_hint(&[0x16, 0x03, 0x01, 0x02]).contains("TLS"));
        assert!(super::not_twopc_hint(b"SSH-").contains("SSH"));
        assert_eq!(super::not_twopc_hint(&[0xff, 0, 0, 0]), "");
    }

    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncWriteExt, DuplexStream};
    use tokio_util::codec::{Framed, LengthDelimitedCodec};

    type Reader = Framed<GatedStream<DuplexStream>, LengthDelimitedCodec>;

    fn budget(limit: usize) -> &'static FrameBudget {
        Box::leak(Box::new(FrameBudget::new(limit)))
    }

    /// A gated reader and the raw socket that feeds it.
    fn pair(budget: &'static FrameBudget, timeout: Duration) -> (Reader, DuplexStream) {
        // Room for what the tests write before the reader runs.
        let (near, far) = tokio::io::duplex(4 * 1024 * 1024);
        let codec = LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec();
        (Framed::new(GatedStream::new(near, "test".into(), budget, timeout), codec), far)
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn prefixed(body: &[u8]) -> Vec<u8> {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    /// Nothing arrives at `reader` within a short while.
    async fn nothing_yet(reader: &mut Reader) {
        let got = tokio::time::timeout(Duration::from_millis(100), reader.next()).await;
        if let Ok(got) = got {
            panic!("a frame passed the gate too early: {:?}", got.map(|frame| frame.map(|f| f.len())));
        }
    }

    #[tokio::test]
    async fn frames_of_every_size_pass_intact_whatever_the_chunking() {
        let budget = budget(MAX_LARGE_FRAME_BYTES_RECEIVING);
        let (mut reader, mut far) = pair(budget, LARGE_FRAME_RECEIVE_TIMEOUT);
        let sizes = [0, 1, 100, SMALL_FRAME_BYTES, SMALL_FRAME_BYTES + 1, 3 * 1024 * 1024 + 7, 5, 200_000];
        let frames: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| frame(n, i as u8)).collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| prefixed(f)).collect();
        let writer = tokio::spawn(async move {
            // Odd chunk sizes split prefixes and bodies everywhere.
            for (i, chunk) in stream.chunks(7_001).enumerate() {
                let piece = if i % 3 == 0 { 3 } else { chunk.len() };
                far.write_all(&chunk[..piece]).await.unwrap();
                far.write_all(&chunk[piece..]).await.unwrap();
            }
            far
        });
        for expected in &frames {
            let got = reader.next().await.expect("a frame").expect("no error");
            assert_eq!(&got[..], &expected[..]);
        }
        drop(writer.await.unwrap());
        assert!(reader.next().await.is_none(), "the stream ends when the peer closes");
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_large_frame_is_held_back_and_charged_until_complete() {
        let budget = budget(MAX_LARGE_FRAME_BYTES_RECEIVING);
        let (mut reader, mut far) = pair(budget, LARGE_FRAME_RECEIVE_TIMEOUT);
        let body = frame(MAX_FRAME_BYTES / 2, 9);
        let bytes = prefixed(&body);
        far.write_all(&bytes[..1024 * 1024]).await.unwrap();
        nothing_yet(&mut reader).await;
        assert_eq!(budget.in_use(), body.len(), "charged for its announced size");
        // What the reader holds is what arrived, not what was announced.
        let held = reader.get_ref().buf.capacity();
        assert!(held < 4 * 1024 * 1024, "{held} bytes held for 1 MiB received");
        let rest = bytes[1024 * 1024..].to_vec();
        tokio::spawn(async move { far.write_all(&rest).await.unwrap() });
        let got = reader.next().await.unwrap().unwrap();
        assert_eq!(got.len(), body.len());
        assert!(got[..] == body[..]);
        assert_eq!(budget.in_use(), 0, "given back once complete");
        assert!(reader.get_ref().buf.capacity() <= READ_CHUNK, "its memory is not kept");
    }

    #[tokio::test]
    async fn a_large_frame_waits_for_budget_then_passes() {
        let announced = SMALL_FRAME_BYTES * 4;
        let budget = budget(announced + announced / 2);
        let (mut first, mut first_far) = pair(budget, LARGE_FRAME_RECEIVE_TIMEOUT);
        let (mut second, mut second_far) = pair(budget, LARGE_FRAME_RECEIVE_TIMEOUT);
        let (one, two) = (prefixed(&frame(announced, 1)), prefixed(&frame(announced, 2)));
        first_far.write_all(&one[..1000]).await.unwrap();
        nothing_yet(&mut first).await;
        // The second frame does not fit beside the first: it waits, and
        // reads nothing more from its connection meanwhile.
        second_far.write_all(&two).await.unwrap();
        nothing_yet(&mut second).await;
        assert_eq!(budget.in_use(), announced);
        first_far.write_all(&one[1000..]).await.unwrap();
        assert_eq!(first.next().await.unwrap().unwrap().len(), announced);
        assert_eq!(second.next().await.unwrap().unwrap()[..], two[4..]);
        assert_eq!(budget.in_use(), 0);
    }

    /// Three connections on a budget of 1.5 large frames: the first holds
    /// a large frame's budget (1000 bytes of it sent), the second waits
    /// with a whole large frame, the third (a smaller frame that would fit
    /// beside the first) comes after it. Returns the readers, the first's
    /// socket and the frames as sent.
    struct Line {
        budget: &'static FrameBudget,
        readers: [Reader; 3],
        first_far: DuplexStream,
        /// The other two sockets, kept open (closed, they would end the
        /// readers' streams).
        _others: [DuplexStream; 2],
        frames: [Vec<u8>; 3],
    }

    async fn line_of_three() -> Line {
        let announced = SMALL_FRAME_BYTES * 4;
        let budget = budget(announced + announced / 2);
        let frames =
            [(announced, 1), (announced, 2), (SMALL_FRAME_BYTES * 2, 3)].map(|(n, seed)| prefixed(&frame(n, seed)));
        let [(mut first, mut first_far), (mut second, mut second_far), (mut third, mut third_far)] =
            [(); 3].map(|()| pair(budget, LARGE_FRAME_RECEIVE_TIMEOUT));
        first_far.write_all(&frames[0][..1000]).await.unwrap();
        nothing_yet(&mut first).await;
        second_far.write_all(&frames[1]).await.unwrap();
        nothing_yet(&mut second).await;
        third_far.write_all(&frames[2]).await.unwrap();
        nothing_yet(&mut third).await;
        assert_eq!(budget.in_use(), announced);
        Line { budget, readers: [first, second, third], first_far, _others: [second_far, third_far], frames }
    }

    /// A frame waiting for budget is not overtaken by a later one that
    /// would fit: admitted in the order they began to wait.
    #[tokio::test]
    async fn waiting_large_frames_are_admitted_in_order() {
        let Line { budget, readers: [mut first, mut second, mut third], mut first_far, _others: _open, frames } =
            line_of_three().await;
        first_far.write_all(&frames[0][1000..]).await.unwrap();
        for (reader, sent) in [(&mut first, &frames[0]), (&mut second, &frames[1]), (&mut third, &frames[2])] {
            assert!(reader.next().await.unwrap().unwrap()[..] == sent[4..]);
        }
        assert_eq!(budget.in_use(), 0);
        assert!(budget.line.lock().unwrap().is_empty());
    }

    /// A frame that leaves the line (its connection closed) does not hold
    /// up those behind it.
    #[tokio::test]
    async fn a_waiting_frame_whose_connection_closes_leaves_the_line() {
        let Line { budget, readers: [first, second, mut third], _others: _open, frames, .. } = line_of_three().await;
        drop(second);
        let got = tokio::time::timeout(Duration::from_secs(5), third.next()).await;
        let got = got.expect("held up by a frame that left the line").unwrap().unwrap();
        assert!(got[..] == frames[2][4..]);
        drop(first);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.line.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_large_frame_that_stalls_closes_its_connection_and_frees_its_budget() {
        let budget = budget(MAX_LARGE_FRAME_BYTES_RECEIVING);
        let (mut reader, mut far) = pair(budget, Duration::from_millis(300));
        far.write_all(&prefixed(&frame(b"ok".len(), 0))[..]).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap().len(), 2);
        far.write_all(&(MAX_FRAME_BYTES as u32).to_be_bytes()).await.unwrap();
        far.write_all(&[0; 1000]).await.unwrap();
        let err = reader.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        drop(reader);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn an_admitted_large_frame_that_trickles_is_cut_and_frees_its_budget() {
        let budget = budget(MAX_LARGE_FRAME_BYTES_RECEIVING);
        let (mut reader, mut far) = pair(budget, LARGE_FRAME_RECEIVE_TIMEOUT);
        far.write_all(&(MAX_FRAME_BYTES as u32).to_be_bytes()).await.unwrap();
        let trickle = tokio::spawn(async move {
            // A byte every 100 ms: far below the minimum rate.
            while far.write_all(&[1]).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let err = reader.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("slower than"), "{err}");
        drop(reader);
        assert_eq!(budget.in_use(), 0);
        trickle.abort();
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_any_of_it_is_read() {
        let budget = budget(MAX_LARGE_FRAME_BYTES_RECEIVING);
        let (mut reader, mut far) = pair(budget, LARGE_FRAME_RECEIVE_TIMEOUT);
        far.write_all(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes()).await.unwrap();
        let err = reader.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(budget.in_use(), 0);
    }
}
