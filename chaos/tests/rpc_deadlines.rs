//! Regression test for a hang the chaos harness found: a call through
//! `twopc_common::net::Peer` can outlive its deadline forever when the
//! peer's connections break at the wrong moment (a participant
//! crash-looping behind a proxy, or any address that accepts and closes).
//!
//! Cause: tarpc's `Channel::call` sends its request (with a oneshot for
//! the answer) into the dispatch task's tokio mpsc channel and then waits
//! only on that oneshot. If the dispatch task ends (connection closed)
//! while the send is in progress, tokio can leave the request stranded in
//! the channel, never dropped while a sender lives
//! (tokio-rs/tokio#7714), and the caller's own `Channel` is such a sender:
//! the call waits forever, whatever its deadline. In the coordinator this
//! left a transaction in "preparing" forever (the vote never came), its
//! participants holding locks (`twopc chaos` seed 39, atomic-set, 30 s).
//!
//! The fix is in `Peer::call` and the client library: every call is
//! bounded by a timer of its own (`net::CALL_GUARD`). This test pins it.
//!
//! Also pinned here: a connection that silently stops answering (half
//! open) is replaced after a few missed deadlines in a row, instead of
//! failing every call on it for good.

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tarpc::server::Channel as _;
use twopc_chaos::proxy::LinkProxy;
use twopc_common::limits::MAX_DEADLINE_MISSES_PER_CONNECTION;
use twopc_common::net::{client_config, context_with_timeout, spawn_watched, transport, Peer};

#[tarpc::service]
trait Echo {
    async fn echo(x: u64) -> u64;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, x: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        x
    }
}

/// Serves until aborted; aborting closes every connection (a crash).
async fn serve(listener: tokio::net::TcpListener) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        conns.spawn(async move {
            let mut requests =
                Box::pin(tarpc::server::BaseChannel::with_defaults(transport(stream)).execute(EchoServer.serve()));
            let mut running = tokio::task::JoinSet::new();
            while let Some(request) = requests.next().await {
                running.spawn(request);
            }
        });
    }
}

/// Accepts connections and closes them at once (a process dying right
/// after accept, or a proxy in front of a dead one).
async fn accept_and_close(listener: tokio::net::TcpListener) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    }
}

/// 64 callers share one `Peer` while the server crash-loops; every call
/// must end within its 2 s deadline plus slack.
async fn crash_loop(proxied: bool) {
    let port = twopc_chaos::cluster::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let proxy = LinkProxy::start("c", "p", &addr, &Default::default()).await.unwrap();
    let target = if proxied { proxy.addr().to_string() } else { addr.clone() };
    let peer = Peer::new(target, |s, closed| spawn_watched(EchoClient::new(client_config(), transport(s)), closed));
    let stop = Instant::now() + Duration::from_secs(10);
    let mut callers = Vec::new();
    for i in 0..64u64 {
        let peer = Arc::clone(&peer);
        callers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let x = i * 1_000_000 + n;
                let call = peer.call(|c| async move { c.echo(context_with_timeout(Duration::from_secs(2)), x).await });
                if tokio::time::timeout(Duration::from_secs(8), call).await.is_err() {
                    return Err(format!("caller {i}: call {n} outlived its 2 s deadline by 6 s"));
                }
            }
            Ok(())
        }));
    }
    let mut k = 0u64;
    while Instant::now() < stop {
        k += 1;
        let server = tokio::spawn(serve(tokio::net::TcpListener::bind(&addr).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(k * 37 % 300)).await;
        server.abort();
        let _ = server.await;
        let closer = tokio::spawn(accept_and_close(tokio::net::TcpListener::bind(&addr).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(k * 53 % 300)).await;
        closer.abort();
        let _ = closer.await;
    }
    let _up = tokio::spawn(serve(tokio::net::TcpListener::bind(&addr).await.unwrap()));
    let mut stuck = Vec::new();
    for caller in callers {
        if let Err(e) = caller.await.unwrap() {
            stuck.push(e);
        }
    }
    assert!(stuck.is_empty(), "{} callers hung: {stuck:#?}", stuck.len());
}

/// Both ways, one after the other (each needs the CPU to race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn peer_calls_end_by_their_deadline_while_the_peer_crash_loops() {
    crash_loop(false).await;
    crash_loop(true).await;
}

/// Serves every connection but the first, which is read and never
/// answered: a half-open connection, whose other end is gone without a
/// word (a crashed host, a middlebox that dropped its state).
async fn black_hole_first(listener: tokio::net::TcpListener) {
    use tokio::io::AsyncReadExt;
    let (mut first, _) = listener.accept().await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while matches!(first.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    serve(listener).await;
}

/// Deadlines alone never replace a connection, so one that silently stopped
/// delivering would fail every call for good; after a few misses in a row
/// the peer opens a new one.
#[tokio::test]
async fn a_connection_that_never_answers_is_replaced() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(black_hole_first(listener));
    let peer = Peer::new(addr, |s, closed| spawn_watched(EchoClient::new(client_config(), transport(s)), closed));
    let ask = || peer.call(|c| async move { c.echo(context_with_timeout(Duration::from_millis(200)), 7).await });
    for miss in 0..MAX_DEADLINE_MISSES_PER_CONNECTION {
        let err = ask().await.unwrap_err();
        assert!(err.contains("deadline"), "miss {miss}: {err}");
    }
    assert_eq!(ask().await.unwrap(), 7, "a new connection, served");
    server.abort();
}
