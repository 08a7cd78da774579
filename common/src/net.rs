//! TCP plumbing for the tarpc services: TCP_NODELAY on every socket, a
//! frame-size cap, bounded memory for requests being received, bounded
//! in-flight requests, and peers that reconnect.

use crate::connections::{Activity, Admission, ConnectionTable};
use crate::frame_gate::{GatedStream, LARGE_FRAME_RECEIVE_TIMEOUT, SERVER_FRAME_BUDGET};
use crate::limits::{
    CONNECT_TIMEOUT, MAX_DEADLINE_MISSES_PER_CONNECTION, MAX_FRAME_BYTES, MAX_IN_FLIGHT_PER_CONNECTION,
};
use crate::server_codec::ServerCodec;
use crate::service::{introduce, Hello, Role};
use futures::{Future, FutureExt as _};
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_serde::formats::Bincode;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub type Transport<In, Out> = tarpc::serde_transport::Transport<TcpStream, In, Out, Bincode<In, Out>>;

/// How long past its deadline an RPC is still waited for.
pub const GUARD_SLACK: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest any peer-to-peer RPC may take, whatever its deadline says.
pub const CALL_GUARD: std::time::Duration = crate::limits::RPC_TIMEOUT.saturating_add(GUARD_SLACK);

/// A server's side of a connection: its inbound frames pass the
/// [`frame_gate`](crate::frame_gate).
pub type ServerTransport<Req, Resp> = tarpc::serde_transport::Transport<
    GatedStream<TcpStream>,
    tarpc::ClientMessage<Req>,
    tarpc::Response<Resp>,
    ServerCodec<Req, Resp>,
>;

/// Wraps a connected socket as a client's tarpc transport (its inbound
/// frames are the answers of a server it chose to call).
pub fn transport<In, Out>(stream: TcpStream) -> Transport<In, Out>
where
    In: DeserializeOwned,
    Out: Serialize,
{
    tune(&stream);
    tarpc::serde_transport::new(Framed::new(stream, codec()), Bincode::default())
}

/// Wraps an accepted socket as a server's tarpc transport: the memory of
/// requests still being received is bounded process-wide, and their
/// deadlines are cut to a bound ([`ServerCodec`]).
pub fn server_transport<Req, Resp>(stream: TcpStream) -> ServerTransport<Req, Resp>
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    tune(&stream);
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "unknown peer".to_string());
    let gated = GatedStream::new(stream, peer.clone(), &SERVER_FRAME_BUDGET, LARGE_FRAME_RECEIVE_TIMEOUT);
    tarpc::serde_transport::new(Framed::new(gated, codec()), ServerCodec::new(peer))
}

fn tune(stream: &TcpStream) {
    // Latency matters more than packet count: small RPCs go out at once.
    let _ = stream.set_nodelay(true);
    let _ = set_keepalive(stream);
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

/// A connection idle this long gets TCP keepalive probes...
pub const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// ...this far apart...
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// ...and is closed after this many go unanswered: a peer that vanished
/// (a host lost, a cable cut) frees its connection slot within about a
/// minute instead of holding it for good.
pub const KEEPALIVE_PROBES: u32 = 3;

fn set_keepalive(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE.as_secs() as libc::c_int),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL.as_secs() as libc::c_int),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES as libc::c_int),
    ];
    for (level, name, value) in options {
        // SAFETY: `fd` is an open socket owned by `stream` for the whole
        // call; setsockopt reads `size_of::<c_int>()` bytes of `value`.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens a TCP connection with [`CONNECT_TIMEOUT`].
pub async fn connect(addr: &str) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    refuse_self_connection(stream).map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// Refuses a socket connected to itself. When nothing listens on a
/// loopback port in the ephemeral range, Linux may pick that very port as
/// the connection's own and "connect" it to itself (TCP simultaneous
/// open): a peer that is down would seem up, and hear its own requests.
pub fn refuse_self_connection(stream: TcpStream) -> std::io::Result<TcpStream> {
    if stream.local_addr()? == stream.peer_addr()? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "nothing listens there (self-connection)",
        ));
    }
    Ok(stream)
}

/// A client config with the shared in-flight bound.
pub fn client_config() -> tarpc::client::Config {
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = MAX_IN_FLIGHT_PER_CONNECTION;
    config.pending_request_buffer = MAX_IN_FLIGHT_PER_CONNECTION;
    config
}

/// Connections a listening server lets wait to be accepted.
pub const LISTEN_BACKLOG: u32 = 1024;

/// A server's port, bound but not yet listening: no other server can
/// listen on it, and a client connecting is refused (not left waiting)
/// until [`ReservedPort::listen`]. A server reserves its port before it
/// touches its data directory (a busy port then leaves nothing behind)
/// and listens once it can serve: a port that accepts connections means
/// a server that is up, not one about to fail opening its log (`twopc
/// local` said "accepts connections again" of servers that then died).
pub struct ReservedPort {
    socket: tokio::net::TcpSocket,
    /// The address bound (with the port chosen, for port 0).
    pub local: SocketAddr,
}

impl ReservedPort {
    pub fn listen(self) -> std::io::Result<TcpListener> {
        self.socket.listen(LISTEN_BACKLOG)
    }
}

/// Reserves `addr` (port 0: any free port): the first of its resolved
/// addresses that binds. Fails if a server listens there.
pub async fn reserve(addr: &str) -> std::io::Result<ReservedPort> {
    let mut last_error = None;
    for candidate in tokio::net::lookup_host(addr).await? {
        let socket =
            if candidate.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As `TcpListener::bind` does: a restart may bind over its old
        // connections in TIME_WAIT (never over a listener).
        socket.set_reuseaddr(true)?;
        match socket.bind(candidate) {
            Ok(()) => {
                let local = socket.local_addr()?;
                return Ok(ReservedPort { socket, local });
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr} resolves to no address"))
    }))
}

/// Accepts connections forever, serving each with `serve` (given the
/// connection's [`Activity`], which its requests keep up to date). At most
/// `max_connections` live at once; a connection over that takes the slot
/// of the connection idle longest, or is closed at once if every
/// connection is busy (see [`crate::connections`]): the client sees the
/// connection close and may retry.
pub async fn accept_loop<F, Fut>(listener: TcpListener, max_connections: usize, mut serve: F)
where
    F: FnMut(TcpStream, Arc<Activity>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let table = ConnectionTable::new(max_connections);
    let mut refusing = false;
    let mut evictions: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match table.admit(|activity| serve(stream, activity)) {
                Admission::Admitted => refusing = false,
                Admission::Evicted(idle) => {
                    refusing = false;
                    evictions += 1;
                    // A flood evicts on every accept: log the 1st, 2nd, 4th, ...
                    if evictions.is_power_of_two() {
                        tracing::warn!(
                            %peer,
                            max_connections,
                            idle_ms = idle.as_millis() as u64,
                            evictions,
                            "connection limit reached: closed the connection idle longest to make room"
                        );
                    }
                }
                Admission::Refused => {
                    if !refusing {
                        tracing::warn!(%peer, max_connections, "connection limit reached and every connection busy: closing new connections");
                        refusing = true;
                    }
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection limit of a server in this process, after raising its
/// open-file limit (see [`crate::open_files`]); logged once.
pub fn server_connection_limit() -> usize {
    let open_files = crate::open_files::raise_open_file_limit();
    let limit = crate::open_files::connection_limit(open_files);
    tracing::info!(max_connections = limit, open_files = ?open_files, "connection limit");
    limit
}

/// Serves a tarpc service (`$server` implements the generated trait and is
/// `Clone`) on every connection of `$listener`, each connection running at
/// most [`crate::limits::MAX_CONCURRENT_REQUESTS_PER_CONNECTION`] requests at once.
#[macro_export]
macro_rules! serve_tarpc {
    ($listener:expr, $server:expr) => {{
        use ::futures::StreamExt as _;
        use ::tarpc::server::Channel as _;
        let server = $server;
        $crate::net::accept_loop($listener, $crate::net::server_connection_limit(), move |stream, activity| {
            let server = server.clone();
            async move {
                ::tarpc::server::BaseChannel::with_defaults($crate::net::server_transport(stream))
                    .max_concurrent_requests($crate::limits::MAX_CONCURRENT_REQUESTS_PER_CONNECTION)
                    .execute(server.serve())
                    .for_each(|request| {
                        let running = activity.request();
                        async move {
                            ::tokio::spawn(async move {
                                request.await;
                                drop(running);
                            });
                        }
                    })
                    .await;
            }
        })
    }};
}

/// Set once a connection's dispatch has ended: the peer closed it, or it
/// broke. Calls on it would fail.
pub type Closed = Arc<std::sync::atomic::AtomicBool>;

/// Spawns a tarpc client's dispatch (what `NewClient::spawn` does), and
/// sets `closed` when it ends.
pub fn spawn_watched<C, D, E>(new: tarpc::client::NewClient<C, D>, closed: Closed) -> C
where
    D: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let dispatch = new.dispatch;
    tokio::spawn(async move {
        if let Err(e) = dispatch.await {
            tracing::debug!(error = %e, "connection broken");
        }
        closed.store(true, Ordering::Release);
    });
    new.client
}

/// Why a [`Peer`] call got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No connection could be opened: the request was not sent.
    #[error("{0}")]
    Unreachable(String),
    /// The request was (or may have been) sent, and no answer came.
    #[error("{0}")]
    Lost(String),
}

/// A lazily connected, reconnecting client of one peer. `make` turns a
/// connected socket into the typed tarpc client, spawning its dispatch
/// with [`spawn_watched`] so the peer knows when the connection closes.
pub struct Peer<C> {
    addr: String,
    make: fn(TcpStream, Closed) -> C,
    /// Who must answer there; checked on every new connection.
    expected: Option<Expected<C>>,
    /// The current connection, its number (connections opened so far) and
    /// whether it has closed.
    client: std::sync::Mutex<Option<(u64, C, Closed)>>,
    /// The attempt to open one under way, if any: every caller needing a
    /// connection meanwhile waits for it (see [`Peer::connection`]).
    attempt: std::sync::Mutex<Option<Attempt<C>>>,
    opened: AtomicU64,
    /// Calls on the current connection that ran out of time since its last
    /// answer.
    misses: AtomicU32,
}

/// An attempt to open a connection, awaited by every caller that needs it.
type Attempt<C> = futures::future::Shared<futures::future::BoxFuture<'static, Result<(u64, C), String>>>;

/// Clears a peer's attempt slot when dropped (see [`Peer::start_attempt`]).
struct EndOfAttempt<'a, C>(&'a std::sync::Mutex<Option<Attempt<C>>>);

impl<C> Drop for EndOfAttempt<'_, C> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

/// Who a [`Peer`] must be: its role (and id, if known), asked with `hello`.
pub struct Expected<C> {
    pub hello: fn(C) -> futures::future::BoxFuture<'static, Result<Hello, tarpc::client::RpcError>>,
    pub role: Role,
    pub id: Option<String>,
    /// A further check of the answer (the coordinator's of a participant's
    /// data id); its error refuses the connection.
    pub accept: Option<Accept>,
}

/// See [`Expected::accept`].
pub type Accept = Arc<dyn Fn(&str, &Hello) -> Result<(), String> + Send + Sync>;

impl<C: Clone + Send + Sync + 'static> Peer<C> {
    /// A peer whose connections are used unchecked (tests' own services).
    pub fn new(addr: String, make: fn(TcpStream, Closed) -> C) -> Arc<Self> {
        Self::build(addr, make, None)
    }

    /// A peer whose every new connection is first asked `hello`: a process
    /// that is not `expected` is refused, naming what it is.
    pub fn expecting(addr: String, make: fn(TcpStream, Closed) -> C, expected: Expected<C>) -> Arc<Self> {
        Self::build(addr, make, Some(expected))
    }

    fn build(addr: String, make: fn(TcpStream, Closed) -> C, expected: Option<Expected<C>>) -> Arc<Self> {
        Arc::new(Peer {
            addr,
            make,
            expected,
            client: std::sync::Mutex::new(None),
            attempt: std::sync::Mutex::new(None),
            opened: AtomicU64::new(0),
            misses: AtomicU32::new(0),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many connections were opened so far: it changes when a dead
    /// connection was replaced (the peer may have restarted meanwhile).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The current connection, opening one if there is none.
    pub async fn client(self: &Arc<Self>) -> Result<C, String> {
        self.connection().await.map(|(_, client)| client)
    }

    /// True if the current connection is known to have closed (the next
    /// call opens a new one).
    pub fn connection_closed(&self) -> bool {
        let slot = self.client.lock().expect("lock");
        slot.as_ref().is_some_and(|(_, _, closed)| closed.load(Ordering::Acquire))
    }

    /// The current connection, or a new one if there is none or it closed.
    /// One attempt at a time opens it, in a task of its own, and every
    /// caller that needs a connection meanwhile waits for that attempt and
    /// shares its result. To a peer that accepts connections but never
    /// answers (a black hole, a paused process) an attempt waits out its
    /// hello: callers trying one after another took 2 s more each (6-8.6 s
    /// per transaction, trial 20A), and an attempt cut short by its
    /// caller's deadline (an abort's 1.25 s) was begun again by the next
    /// caller (3.25 s per transaction, trial 21C).
    async fn connection(self: &Arc<Self>) -> Result<(u64, C), String> {
        if let Some(live) = self.live_connection() {
            return Ok(live);
        }
        let attempt = {
            let mut attempt = self.attempt.lock().expect("lock");
            // Looked at again under the lock: an attempt that ended just
            // now left its connection here (else a second one was opened).
            if let Some(live) = self.live_connection() {
                return Ok(live);
            }
            attempt.get_or_insert_with(|| self.start_attempt()).clone()
        };
        attempt.await
    }

    /// The current connection, if it has not closed.
    fn live_connection(&self) -> Option<(u64, C)> {
        let slot = self.client.lock().expect("lock");
        let (number, client, closed) = slot.as_ref()?;
        (!closed.load(Ordering::Acquire)).then(|| (*number, client.clone()))
    }

    /// Starts opening a connection; when done, it is the current one (or
    /// the attempt failed) and the next caller needing one starts anew.
    fn start_attempt(self: &Arc<Self>) -> Attempt<C> {
        let peer = Arc::clone(self);
        let task = tokio::spawn(async move {
            // However the task ends (done, cancelled with its runtime, or
            // a panic), the next caller starts anew: a finished attempt
            // left in place would answer every later call with its error.
            let _ends = EndOfAttempt(&peer.attempt);
            peer.open().await.map(|(client, closed)| {
                let number = peer.opened.fetch_add(1, Ordering::Relaxed) + 1;
                peer.misses.store(0, Ordering::Relaxed);
                *peer.client.lock().expect("lock") = Some((number, client.clone(), closed));
                (number, client)
            })
        });
        let addr = self.addr.clone();
        async move { task.await.unwrap_or_else(|e| Err(format!("connecting to {addr} failed: {e}"))) }.boxed().shared()
    }

    /// Opens a connection and checks who answers there.
    async fn open(&self) -> Result<(C, Closed), String> {
        let closed = Closed::default();
        let client = (self.make)(connect(&self.addr).await?, closed.clone());
        if let Some(expected) = &self.expected {
            let hello =
                introduce((expected.hello)(client.clone()), &self.addr, expected.role, expected.id.as_deref()).await?;
            if let Some(accept) = &expected.accept {
                accept(&self.addr, &hello)?;
            }
        }
        Ok((client, closed))
    }

    /// Makes the next call open a new connection; calls in flight on the
    /// current one go on. For a call whose answer did not come: the
    /// questions that follow it must not wait on the same connection,
    /// which may have gone silent.
    pub fn reconnect_next_call(&self) {
        *self.client.lock().expect("lock") = None;
    }

    /// Drops connection `number` if it is still the current one (another
    /// call may already have replaced it).
    fn forget(&self, number: u64) {
        let mut slot = self.client.lock().expect("lock");
        if slot.as_ref().is_some_and(|(current, _, _)| *current == number) {
            *slot = None;
        }
    }

    /// Runs `call` on the connection. A connection found dead (the peer
    /// restarted) is replaced and the call made once more on a fresh one;
    /// every twopc RPC is idempotent, so a repeat is harmless. A deadline
    /// is returned as is (the peer may be slow, not gone), but after
    /// [`MAX_DEADLINE_MISSES_PER_CONNECTION`] in a row with no answer in
    /// between the connection is replaced: one that silently stopped
    /// delivering (a half-open TCP connection) would otherwise be used
    /// for good.
    pub async fn call<T, F, Fut>(self: &Arc<Self>, call: F) -> Result<T, String>
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<T, tarpc::client::RpcError>>,
    {
        self.call_within(CALL_GUARD, call).await
    }

    /// [`Peer::call`] for a call whose deadline is not
    /// [`crate::limits::RPC_TIMEOUT`]: each attempt is abandoned after
    /// `guard`.
    pub async fn call_within<T, F, Fut>(self: &Arc<Self>, guard: std::time::Duration, call: F) -> Result<T, String>
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<T, tarpc::client::RpcError>>,
    {
        self.try_call_within(guard, call).await.map_err(|e| e.to_string())
    }

    /// [`Peer::call_within`], saying whether the request may have reached
    /// the peer when there is no answer.
    pub async fn try_call_within<T, F, Fut>(
        self: &Arc<Self>,
        guard: std::time::Duration,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<T, tarpc::client::RpcError>>,
    {
        let mut last = String::new();
        for attempt in 0..2 {
            // Bounded too: a new connection (connect and hello) is made by
            // one caller while the others wait for it, and to a peer that
            // accepts but does not answer (a paused process) each made its
            // waiters wait its hello's 2 s more, so calls took 10 s and
            // more, not their guard (trial 14).
            let connection = tokio::time::timeout(guard, self.connection()).await.unwrap_or_else(|_| {
                Err(format!("no connection to {} within {guard:?} (it does not answer: paused, hung, or stuck on a disk that does not complete its writes?)", self.addr))
            });
            let (number, client) = match connection {
                Ok(connection) => connection,
                Err(e) if attempt == 0 => return Err(CallError::Unreachable(e)),
                Err(e) => return Err(CallError::Lost(format!("{last}; then {e}"))),
            };
            // tarpc can strand a request whose connection dies while it is
            // being queued, and then the call never returns whatever its
            // deadline (found by the chaos harness): guard it here too.
            let Ok(answer) = tokio::time::timeout(guard, call(client)).await else {
                self.forget(number);
                return Err(CallError::Lost(format!("no answer within {guard:?} ({})", self.addr)));
            };
            match answer {
                Ok(v) => {
                    self.misses.store(0, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(tarpc::client::RpcError::DeadlineExceeded) => {
                    // Counted for the newest connection only (a late miss
                    // on a replaced one says nothing about its successor).
                    let newest = number == self.opened.load(Ordering::Relaxed);
                    if newest && self.misses.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_DEADLINE_MISSES_PER_CONNECTION {
                        self.forget(number);
                    }
                    let e = tarpc::client::RpcError::DeadlineExceeded;
                    return Err(CallError::Lost(format!("{e} ({})", self.addr)));
                }
                Err(e) => {
                    self.forget(number);
                    last = format!("{e} ({})", self.addr);
                }
            }
        }
        Err(CallError::Lost(last))
    }
}

/// A context whose deadline is `timeout` from now.
pub fn context_with_timeout(timeout: std::time::Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

#[cfg(test)]
mod self_connection_tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_connected_to_itself_is_refused() {
        // Bound to the port it connects to, with nothing listening: a
        // self-connection, made on purpose.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(addr).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        assert_eq!(stream.local_addr().unwrap(), stream.peer_addr().unwrap());
        let err = refuse_self_connection(stream).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        // A real connection passes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let real = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        assert!(refuse_self_connection(real).is_ok());
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A peer that accepts connections and never answers `hello` (a
    /// paused process): every concurrent call gives up within its guard,
    /// not one after another behind the connection being made.
    #[tokio::test]
    async fn calls_to_a_peer_that_never_answers_end_within_their_guard() {
        let (listener, peer) = peer_whose_hello_is(|_| Box::pin(futures::future::pending()));
        let guard = Duration::from_millis(300);
        let started = Instant::now();
        let calls = (0..4).map(|_| {
            let peer = Arc::clone(&peer);
            async move { peer.try_call_within(guard, |()| async { Ok::<(), tarpc::client::RpcError>(()) }).await }
        });
        for answer in futures::future::join_all(calls).await {
            assert!(matches!(answer, Err(CallError::Unreachable(_))), "{:?}", answer.err());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "the calls took {:?}", started.elapsed());
        drop(listener);
    }

    /// A peer at a listener that accepts connections but never serves,
    /// whose `hello` is `hello` (the listener must outlive the peer's use).
    fn peer_whose_hello_is(
        hello: fn(()) -> futures::future::BoxFuture<'static, Result<Hello, tarpc::client::RpcError>>,
    ) -> (std::net::TcpListener, Arc<Peer<()>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer =
            Peer::expecting(addr, |_, _| (), Expected { hello, role: Role::Participant, id: None, accept: None });
        (listener, peer)
    }

    static HELLOS: AtomicU32 = AtomicU32::new(0);

    /// Callers that queue while a connection is being opened to a peer
    /// whose hello gets no answer share that attempt's failure rather than
    /// each make one of their own in turn (trial 20A: 2 s more each).
    #[tokio::test]
    async fn callers_queued_behind_a_failed_connection_attempt_share_its_failure() {
        let (listener, peer) = peer_whose_hello_is(|_| {
            HELLOS.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(tarpc::client::RpcError::DeadlineExceeded)
            })
        });
        let calls = (0..4).map(|_| {
            let peer = Arc::clone(&peer);
            async move {
                peer.try_call_within(Duration::from_secs(30), |()| async { Ok::<(), tarpc::client::RpcError>(()) })
                    .await
            }
        });
        for answer in futures::future::join_all(calls).await {
            let e = answer.unwrap_err();
            assert!(matches!(e, CallError::Unreachable(_)) && e.to_string().contains("did not answer"), "{e}");
        }
        assert_eq!(HELLOS.load(Ordering::SeqCst), 1, "each queued caller made its own attempt");
        // A caller that comes later tries again.
        let later = peer.try_call_within(Duration::from_secs(30), |()| async { Ok::<(), tarpc::client::RpcError>(()) });
        assert!(later.await.is_err());
        assert_eq!(HELLOS.load(Ordering::SeqCst), 2);
        drop(listener);
    }

    static SLOW_HELLOS: AtomicU32 = AtomicU32::new(0);

    /// An attempt whose caller gives up (an abort's short guard) goes on:
    /// a caller that came meanwhile gets its result rather than begin one
    /// of its own (trial 21C: 1.25 s + 2 s per transaction).
    #[tokio::test]
    async fn an_attempt_outlives_the_caller_that_began_it() {
        let (listener, peer) = peer_whose_hello_is(|_| {
            SLOW_HELLOS.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Err(tarpc::client::RpcError::DeadlineExceeded)
            })
        });
        let ok = |()| async { Ok::<(), tarpc::client::RpcError>(()) };
        let impatient = peer.try_call_within(Duration::from_millis(100), ok);
        let patient = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peer.try_call_within(Duration::from_secs(30), ok).await
        };
        let (impatient, patient) = futures::join!(impatient, patient);
        assert!(impatient.unwrap_err().to_string().contains("no connection"));
        assert!(patient.unwrap_err().to_string().contains("did not answer"));
        assert_eq!(SLOW_HELLOS.load(Ordering::SeqCst), 1, "the patient caller began an attempt of its own");
        drop(listener);
    }
}

#[cfg(test)]
mod accept_tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// True if the server closed `stream` (EOF or reset) within `wait`.
    async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(wait, stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
    }

    /// A server of at most 2 connections whose connections live until the
    /// test drops the sender it is handed for each.
    async fn server_of_two() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>) {
        let port = reserve("127.0.0.1:0").await.unwrap();
        let addr = port.local;
        let listener = port.listen().unwrap();
        let (kept_tx, kept) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(accept_loop(listener, 2, move |stream, _activity| {
            let (end_tx, end) = tokio::sync::oneshot::channel::<()>();
            let _ = kept_tx.send(end_tx);
            async move {
                let _stream = stream;
                let _ = end.await;
            }
        }));
        (addr, kept)
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_until_a_slot_frees() {
        let (addr, mut kept) = server_of_two().await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut third, Duration::from_secs(5)).await, "a third connection was kept");
        assert!(!closed_within(&mut first, Duration::from_millis(100)).await);
        assert!(!closed_within(&mut second, Duration::from_millis(100)).await);
        // The server ends one connection: its slot serves the next one.
        drop(kept.recv().await.unwrap());
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(!closed_within(&mut fourth, Duration::from_millis(200)).await, "a freed slot was not reused");
    }

    #[tokio::test]
    async fn a_new_connection_takes_the_slot_of_the_one_idle_longest() {
        let (addr, _kept) = server_of_two().await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(crate::connections::MIN_IDLE_TO_EVICT).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut first, Duration::from_secs(5)).await, "the idlest connection was kept");
        assert!(!closed_within(&mut third, Duration::from_millis(200)).await, "the new connection was refused");
        assert!(!closed_within(&mut second, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn transports_probe_idle_peers() {
        use std::os::fd::AsRawFd;
        let port = reserve("127.0.0.1:0").await.unwrap();
        let addr = port.local;
        let listener = port.listen().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        // Through `transport`, as every connection is made; the socket
        // stays open while the transport lives.
        let fd = stream.as_raw_fd();
        let _transport: Transport<(), ()> = transport(stream);
        assert_eq!(get_int_option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 30);
        assert_eq!(get_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 10);
        assert_eq!(get_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
        assert_eq!(get_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
    }

    fn get_int_option(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads one c_int option of an open socket into `value`.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(rc, 0);
        value
    }
}
