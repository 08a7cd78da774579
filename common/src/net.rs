//! TCP plumbing for the tarpc services: TCP_NODELAY on every socket, a
//! frame-size cap, bounded in-flight requests, and peers that reconnect.

use crate::limits::{CONNECT_TIMEOUT, MAX_FRAME_BYTES, MAX_IN_FLIGHT_PER_CONNECTION};
use futures::Future;
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_serde::formats::Bincode;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub type Transport<In, Out> = tarpc::serde_transport::Transport<TcpStream, In, Out, Bincode<In, Out>>;

/// How long past its deadline an RPC is still waited for.
pub const GUARD_SLACK: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest any peer-to-peer RPC may take, whatever its deadline says.
pub const CALL_GUARD: std::time::Duration = crate::limits::RPC_TIMEOUT.saturating_add(GUARD_SLACK);

/// Runs one RPC with a timer of its own: tarpc can strand a request on a
/// dying connection, and then the call never returns whatever its
/// deadline, so never wait more than [`GUARD_SLACK`] past `deadline`.
pub async fn guarded<T>(
    deadline: std::time::Duration,
    call: impl Future<Output = Result<T, tarpc::client::RpcError>>,
) -> Result<T, tarpc::client::RpcError> {
    tokio::time::timeout(deadline.saturating_add(GUARD_SLACK), call)
        .await
        .unwrap_or(Err(tarpc::client::RpcError::DeadlineExceeded))
}

/// Wraps a connected socket as a tarpc transport.
pub fn transport<In, Out>(stream: TcpStream) -> Transport<In, Out>
where
    In: DeserializeOwned,
    Out: Serialize,
{
    // Latency matters more than packet count: small RPCs go out at once.
    let _ = stream.set_nodelay(true);
    let codec = LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec();
    tarpc::serde_transport::new(Framed::new(stream, codec), Bincode::default())
}

/// Opens a TCP connection with [`CONNECT_TIMEOUT`].
pub async fn connect(addr: &str) -> Result<TcpStream, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// A client config with the shared in-flight bound.
pub fn client_config() -> tarpc::client::Config {
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = MAX_IN_FLIGHT_PER_CONNECTION;
    config.pending_request_buffer = MAX_IN_FLIGHT_PER_CONNECTION;
    config
}

/// Binds `addr` (use port 0 for any free port).
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Accepts connections forever, handing each socket to `on_connection`.
pub async fn accept_loop(listener: TcpListener, mut on_connection: impl FnMut(TcpStream)) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => on_connection(stream),
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves a tarpc service (`$server` implements the generated trait and is
/// `Clone`) on every connection of `$listener`, each connection running at
/// most [`MAX_CONCURRENT_REQUESTS_PER_CONNECTION`] requests at once.
#[macro_export]
macro_rules! serve_tarpc {
    ($listener:expr, $server:expr) => {{
        use ::futures::StreamExt as _;
        use ::tarpc::server::Channel as _;
        let server = $server;
        $crate::net::accept_loop($listener, move |stream| {
            let server = server.clone();
            ::tokio::spawn(async move {
                ::tarpc::server::BaseChannel::with_defaults($crate::net::transport(stream))
                    .max_concurrent_requests($crate::limits::MAX_CONCURRENT_REQUESTS_PER_CONNECTION)
                    .execute(server.serve())
                    .for_each(|request| async {
                        ::tokio::spawn(request);
                    })
                    .await;
            });
        })
    }};
}

/// A lazily connected, reconnecting client of one peer. `make` turns a
/// connected socket into the typed tarpc client.
pub struct Peer<C> {
    addr: String,
    make: fn(TcpStream) -> C,
    client: tokio::sync::Mutex<Option<C>>,
}

impl<C: Clone> Peer<C> {
    pub fn new(addr: String, make: fn(TcpStream) -> C) -> Arc<Self> {
        Arc::new(Peer { addr, make, client: tokio::sync::Mutex::new(None) })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The current connection, opening one if there is none.
    pub async fn client(&self) -> Result<C, String> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = (self.make)(connect(&self.addr).await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `call` on the connection. A connection found dead (the peer
    /// restarted) is replaced and the call made once more on a fresh one;
    /// every twopc RPC is idempotent, so a repeat is harmless. A deadline
    /// is returned as is (the peer is slow, not gone).
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<T, tarpc::client::RpcError>>,
    {
        let mut last = String::new();
        for _ in 0..2 {
            let client = self.client().await?;
            // tarpc can strand a request whose connection dies while it is
            // being queued, and then the call never returns whatever its
            // deadline (found by the chaos harness): guard it here too.
            let Ok(answer) = tokio::time::timeout(CALL_GUARD, call(client)).await else {
                *self.client.lock().await = None;
                return Err(format!("no answer within {CALL_GUARD:?} ({})", self.addr));
            };
            match answer {
                Ok(v) => return Ok(v),
                Err(tarpc::client::RpcError::DeadlineExceeded) => {
                    return Err(format!("{} ({})", tarpc::client::RpcError::DeadlineExceeded, self.addr))
                }
                Err(e) => {
                    *self.client.lock().await = None;
                    last = format!("{e} ({})", self.addr);
                }
            }
        }
        Err(last)
    }
}

/// A context whose deadline is `timeout` from now.
pub fn context_with_timeout(timeout: std::time::Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}
