//! A fault-injecting TCP proxy for one link (a viewer process reaching a
//! peer), and the set of link proxies in front of every listener.
//!
//! Each [`LinkProxy`] listens on its own loopback port and forwards every
//! accepted connection to the peer's real address. Bytes flow in two
//! directions: `up` (viewer → peer: requests) and `down` (peer → viewer:
//! replies). Each direction can be
//! - **blocked** (black-holed): bytes are held, as TCP holds them while a
//!   partition drops its segments; on heal they flow again, late (so the
//!   system also sees long-delayed, out-of-deadline messages). New
//!   connections are accepted and stall the same way;
//! - **delayed**: every chunk is held for a fixed time (latency, not a
//!   throughput cap).
//!
//! Existing connections can also be **closed** (FIN) or **reset** (RST),
//! making the viewer reconnect and lose whatever was in flight.
//!
//! A [`Network`] holds one proxy per link of a cluster: coordinator →
//! participant, participant → coordinator (outcome questions), and the
//! application ([`CLIENT`]) → coordinator. Routing hashes ids, not
//! addresses, so each process may reach its peers through its own
//! proxies (see [`Cluster::set_view`](crate::cluster::Cluster::set_view)).
//! Everything listens on 127.0.0.1.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cluster::Cluster;

/// The application side of client → coordinator links, as a node name.
pub const CLIENT: &str = "client";
/// Chunks buffered per direction of a connection (then the proxy stops
/// reading, and TCP back-pressure does the rest).
const CHUNKS_IN_FLIGHT: usize = 256;
const CHUNK_BYTES: usize = 64 * 1024;
/// Tries to bind a proxy's port before giving up.
const MAX_BIND_ATTEMPTS: usize = 64;

/// One direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirFault {
    /// Hold every byte until unblocked.
    pub blocked: bool,
    /// Hold every chunk this long.
    pub delay: Duration,
}

impl DirFault {
    pub fn is_clear(&self) -> bool {
        *self == DirFault::default()
    }
}

/// A link's faults. `up`: viewer → peer; `down`: peer → viewer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFault {
    pub up: DirFault,
    pub down: DirFault,
}

#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    fault: LinkFault,
    /// Bumped to end every connection that exists now.
    generation: u64,
    /// How the last bump ends them: RST (true) or FIN.
    reset: bool,
}

/// A proxy for the link `viewer` → `peer`.
pub struct LinkProxy {
    pub viewer: String,
    pub peer: String,
    addr: SocketAddr,
    state: watch::Sender<LinkState>,
    accept: tokio::task::JoinHandle<()>,
}

/// Binds a free loopback port that is none of `reserved`, in at most
/// [`MAX_BIND_ATTEMPTS`] tries.
///
/// The cluster's servers get their ports before they start (so that every
/// cluster file can name them), and those ports are free until then: a
/// proxy given one by the OS would take a server's place, the server would
/// fail to start, and connecting to "the server" would reach the proxy.
async fn bind_avoiding(reserved: &BTreeSet<u16>) -> Result<TcpListener> {
    for _ in 0..MAX_BIND_ATTEMPTS {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind proxy")?;
        if !reserved.contains(&listener.local_addr()?.port()) {
            return Ok(listener);
        }
    }
    anyhow::bail!("no free port outside the cluster's own in {MAX_BIND_ATTEMPTS} tries")
}

impl LinkProxy {
    /// Listens on a free loopback port (none of `reserved`) and forwards
    /// to `target`.
    pub async fn start(viewer: &str, peer: &str, target: &str, reserved: &BTreeSet<u16>) -> Result<LinkProxy> {
        let listener = bind_avoiding(reserved).await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(LinkState::default());
        let rx = state.subscribe();
        let target = target.to_string();
        let accept = tokio::spawn(accept_loop(listener, target, rx));
        Ok(LinkProxy { viewer: viewer.to_string(), peer: peer.to_string(), addr, state, accept })
    }

    /// Where the viewer should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn fault(&self) -> LinkFault {
        self.state.borrow().fault
    }

    pub fn set_fault(&self, fault: LinkFault) {
        self.state.send_modify(|s| s.fault = fault);
    }

    pub fn update(&self, f: impl FnOnce(&mut LinkFault)) {
        self.state.send_modify(|s| f(&mut s.fault));
    }

    /// Ends every open connection: with RST when `reset`, else FIN.
    pub fn cut_connections(&self, reset: bool) {
        self.state.send_modify(|s| {
            s.generation += 1;
            s.reset = reset;
        });
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it ends them.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: String, state: watch::Receiver<LinkState>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, target.clone(), state.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Sets SO_LINGER to 0 so that closing the socket sends RST.
fn set_reset_on_close(fd: i32) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: fd is an open socket owned by a live TcpStream half; the
    // option value is a properly sized, initialised `linger`.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Up,
    Down,
}

async fn connection(mut client: TcpStream, target: String, mut state: watch::Receiver<LinkState>) {
    let born = state.borrow().generation;
    let Ok(Ok(server)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&target)).await else {
        // The peer is down: the viewer sees its connection closed.
        return;
    };
    let Ok(mut server) = twopc_common::net::refuse_self_connection(server) else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let fds = [client.as_raw_fd(), server.as_raw_fd()];
    {
        // Borrowed halves: dropping them does not send FIN (owned write
        // halves would, spoiling a reset).
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, Dir::Up, state.clone());
        let down = pump(server_read, client_write, Dir::Down, state.clone());
        let cut = state.wait_for(|s| s.generation != born);
        tokio::select! {
            _ = up => {}
            _ = down => {}
            cut = cut => {
                if cut.map(|s| s.reset).unwrap_or(false) {
                    for fd in fds {
                        set_reset_on_close(fd);
                    }
                }
            }
        }
    }
    // Both sockets close here (RST if linger was zeroed).
}

/// Copies one direction, holding bytes while blocked or delayed. Ends at
/// EOF or on an error.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    dir: Dir,
    state: watch::Receiver<LinkState>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut state = state;
        while let Some((read_at, chunk)) = rx.recv().await {
            loop {
                let fault = {
                    let s = state.borrow_and_update();
                    match dir {
                        Dir::Up => s.fault.up,
                        Dir::Down => s.fault.down,
                    }
                };
                if fault.blocked {
                    if state.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let due = read_at + fault.delay;
                if Instant::now() < due {
                    // Re-check if the fault changes meanwhile (e.g. healed).
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        changed = state.changed() => if changed.is_err() { return },
                    }
                    continue;
                }
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// One proxy per link of a cluster.
pub struct Network {
    links: BTreeMap<(String, String), LinkProxy>,
}

impl Network {
    /// Puts a proxy on every link of `cluster` (coordinator ↔ participant
    /// both ways, and [`CLIENT`] → each coordinator) and points each
    /// process's view of its peers at them (effective from each process's
    /// next start: call before starting the cluster).
    pub async fn start(cluster: &mut Cluster) -> Result<Network> {
        let mut links = BTreeMap::new();
        let coordinators = cluster.coordinator_ids();
        let participants = cluster.participant_ids();
        let mut pairs = Vec::new();
        for c in &coordinators {
            pairs.push((CLIENT.to_string(), c.clone()));
            for p in &participants {
                pairs.push((c.clone(), p.clone()));
                pairs.push((p.clone(), c.clone()));
            }
        }
        let reserved: BTreeSet<u16> = cluster
            .ids()
            .iter()
            .filter_map(|id| cluster.addr(id).parse::<SocketAddr>().ok())
            .map(|a| a.port())
            .collect();
        for (viewer, peer) in pairs {
            let proxy = LinkProxy::start(&viewer, &peer, &cluster.addr(&peer), &reserved).await?;
            if viewer != CLIENT {
                cluster.set_view(&viewer, &peer, &proxy.addr().to_string());
            }
            links.insert((viewer, peer), proxy);
        }
        Ok(Network { links })
    }

    /// Every link as (viewer, peer).
    pub fn links(&self) -> Vec<(String, String)> {
        self.links.keys().cloned().collect()
    }

    /// Every node that has a link (processes and [`CLIENT`]).
    pub fn nodes(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.links.keys().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
        set.into_iter().collect()
    }

    pub fn link(&self, viewer: &str, peer: &str) -> Option<&LinkProxy> {
        self.links.get(&(viewer.to_string(), peer.to_string()))
    }

    /// Where the application reaches coordinator `id`.
    pub fn client_addr(&self, coordinator: &str) -> String {
        self.link(CLIENT, coordinator).map(|l| l.addr().to_string()).expect("every coordinator has a client link")
    }

    /// Blocks every byte sent from `from` to `to` (on both links between
    /// them: requests `from` makes and replies `from` sends). Returns
    /// whether any link exists between them.
    pub fn block(&self, from: &str, to: &str) -> bool {
        let mut any = false;
        if let Some(link) = self.link(from, to) {
            link.update(|f| f.up.blocked = true);
            any = true;
        }
        if let Some(link) = self.link(to, from) {
            link.update(|f| f.down.blocked = true);
            any = true;
        }
        any
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[String], b: &[String]) {
        for x in a {
            for y in b {
                self.block(x, y);
                self.block(y, x);
            }
        }
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: &str) {
        let others: Vec<String> = self.nodes().into_iter().filter(|n| n != node).collect();
        self.partition(&[node.to_string()], &others);
    }

    /// Delays each direction of link `viewer` → `peer`.
    pub fn delay(&self, viewer: &str, peer: &str, up: Duration, down: Duration) {
        if let Some(link) = self.link(viewer, peer) {
            link.update(|f| {
                f.up.delay = up;
                f.down.delay = down;
            });
        }
    }

    /// Ends the open connections of link `viewer` → `peer`.
    pub fn cut_connections(&self, viewer: &str, peer: &str, reset: bool) {
        if let Some(link) = self.link(viewer, peer) {
            link.cut_connections(reset);
        }
    }

    /// Clears every fault (held bytes flow again).
    pub fn heal(&self) {
        for link in self.links.values() {
            link.set_fault(LinkFault::default());
        }
    }

    /// Links with a fault right now, described.
    pub fn faulty(&self) -> Vec<String> {
        self.links
            .values()
            .filter(|l| l.fault() != LinkFault::default())
            .map(|l| format!("{}->{}: {:?}", l.viewer, l.peer, l.fault()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_proxy_never_takes_a_reserved_port() {
        assert!(bind_avoiding(&BTreeSet::new()).await.is_ok());
        // Every port reserved: each one the OS offers is refused, so the
        // bounded tries run out.
        let all: BTreeSet<u16> = (1..=u16::MAX).collect();
        let err = bind_avoiding(&all).await.unwrap_err();
        assert!(err.to_string().contains("no free port outside"), "{err}");
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(timeout, s.read_exact(&mut buf)).await.ok()?.ok()?;
        assert_eq!(&buf, b"ping");
        Some(start.elapsed())
    }

    #[tokio::test]
    async fn forwards_blocks_delays_and_heals() {
        let echo = echo_server().await;
        let proxy = LinkProxy::start("a", "b", &echo.to_string(), &BTreeSet::new()).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut s, Duration::from_secs(2)).await.is_some());

        // Replies black-holed: the request arrives, the answer is held.
        proxy.update(|f| f.down.blocked = true);
        assert!(roundtrip(&mut s, Duration::from_millis(300)).await.is_none());
        proxy.set_fault(LinkFault::default());
        // The held reply arrives after heal.
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"ping");

        proxy.update(|f| f.up.delay = Duration::from_millis(200));
        let took = roundtrip(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        proxy.set_fault(LinkFault::default());
        assert!(roundtrip(&mut s, Duration::from_secs(2)).await.unwrap() < Duration::from_millis(200));
    }

    #[tokio::test]
    async fn cuts_connections_with_fin_or_rst() {
        let echo = echo_server().await;
        let proxy = LinkProxy::start("a", "b", &echo.to_string(), &BTreeSet::new()).await.unwrap();
        for reset in [false, true] {
            let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
            assert!(roundtrip(&mut s, Duration::from_secs(2)).await.is_some());
            proxy.cut_connections(reset);
            let mut buf = [0u8; 4];
            let got = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.unwrap();
            match got {
                Ok(0) => assert!(!reset, "RST expected, got FIN"),
                Err(e) => assert!(reset, "FIN expected, got {e}"),
                Ok(n) => panic!("read {n} bytes from a cut connection"),
            }
            // New connections work.
            let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
            assert!(roundtrip(&mut again, Duration::from_secs(2)).await.is_some());
        }
    }

    #[tokio::test]
    async fn a_down_peer_closes_the_viewers_connection() {
        let port = crate::cluster::free_port().unwrap();
        let proxy = LinkProxy::start("a", "b", &format!("127.0.0.1:{port}"), &BTreeSet::new()).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let got = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.unwrap();
        assert!(matches!(got, Ok(0) | Err(_)));
    }
}
