//! The 2PC skeleton, measured in the same run: a commit's bare message and
//! fsync pattern with nothing else. One thread each for a client, a
//! coordinator and N participants; blocking loopback TCP (TCP_NODELAY),
//! 64-byte messages, appends + `fdatasync` on the data directory.
//!
//! Per commit: client → coordinator; a prepare to every participant, each
//! appends, syncs and votes; the coordinator appends and syncs its
//! decision and answers the client; then it sends the commits, which are
//! appended unsynced and acked (the acks are read with the next votes, off
//! the client's path). No encoding, no locks, no RPC framework.
//!
//! The floor adds up its parts; the skeleton runs them together on this
//! machine's CPUs, so it also pays the scheduling and wake-ups that any
//! implementation with this many processes pays before doing any work.

use super::floor::PROBE_TIME;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of every message.
pub const SKELETON_MESSAGE_BYTES: usize = 64;
/// Bytes appended per log write (about one prepare record).
pub const SKELETON_RECORD_BYTES: usize = 256;
/// Commits run before any is measured.
pub const SKELETON_WARMUP: Duration = Duration::from_millis(300);
/// A stuck peer fails the probe after this long instead of hanging it.
pub const SKELETON_IO_TIMEOUT: Duration = Duration::from_secs(5);

const PREPARE: u8 = b'P';
const COMMIT: u8 = b'C';

type Message = [u8; SKELETON_MESSAGE_BYTES];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkeletonProbe {
    pub participants: usize,
    /// Commits measured (after the warm-up).
    pub commits: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Runs the skeleton with `participants` participants for
/// [`PROBE_TIME`], its logs in `dir` (removed afterwards).
pub fn skeleton_probe(dir: &Path, participants: usize) -> std::io::Result<SkeletonProbe> {
    let tag = format!("skeleton-{}", std::process::id());
    let mut threads = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..participants {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        addrs.push(listener.local_addr()?);
        let path = dir.join(format!("{tag}-p{i}"));
        threads.push(std::thread::spawn(move || participant(&listener, path)));
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let coordinator_addr = listener.local_addr()?;
    let path = dir.join(format!("{tag}-c"));
    threads.push(std::thread::spawn(move || coordinator(&listener, &addrs, path)));
    let measured = client(coordinator_addr);
    // The client is gone: the coordinator sees end of stream and closes
    // its participants' connections, so every thread ends.
    let mut result = measured.map(|hist| SkeletonProbe {
        participants,
        commits: hist.len(),
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
    });
    for t in threads {
        let ended = t.join().unwrap_or_else(|_| Err(std::io::Error::other("skeleton thread panicked")));
        if let (Ok(_), Err(e)) = (&result, ended) {
            result = Err(e);
        }
    }
    result
}

fn client(coordinator: SocketAddr) -> std::io::Result<Histogram<u64>> {
    let mut conn = connect(coordinator)?;
    let mut hist = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let started = Instant::now();
    let mut msg: Message = [0; SKELETON_MESSAGE_BYTES];
    while started.elapsed() < SKELETON_WARMUP + PROBE_TIME {
        let t = Instant::now();
        conn.write_all(&msg)?;
        conn.read_exact(&mut msg)?;
        if t > started + SKELETON_WARMUP {
            hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
        }
    }
    Ok(hist)
}

fn coordinator(listener: &TcpListener, participants: &[SocketAddr], path: PathBuf) -> std::io::Result<()> {
    let mut log = Log::create(path)?;
    let mut peers = participants.iter().map(|a| connect(*a)).collect::<std::io::Result<Vec<_>>>()?;
    let mut client = accept(listener)?;
    let mut request: Message = [0; SKELETON_MESSAGE_BYTES];
    let mut acks_owed = false;
    while receive(&mut client, &mut request)? {
        let mut msg: Message = [PREPARE; SKELETON_MESSAGE_BYTES];
        for p in &mut peers {
            p.write_all(&msg)?;
        }
        for p in &mut peers {
            if acks_owed {
                p.read_exact(&mut msg)?;
            }
            p.read_exact(&mut msg)?;
        }
        log.append(true)?;
        client.write_all(&request)?;
        let commit: Message = [COMMIT; SKELETON_MESSAGE_BYTES];
        for p in &mut peers {
            p.write_all(&commit)?;
        }
        acks_owed = true;
    }
    // Read the last acks: closing with unread data would reset the
    // participants' connections instead of ending them.
    if acks_owed {
        let mut ack: Message = [0; SKELETON_MESSAGE_BYTES];
        for p in &mut peers {
            p.read_exact(&mut ack)?;
        }
    }
    Ok(())
}

fn participant(listener: &TcpListener, path: PathBuf) -> std::io::Result<()> {
    let mut log = Log::create(path)?;
    let mut conn = accept(listener)?;
    let mut msg: Message = [0; SKELETON_MESSAGE_BYTES];
    while receive(&mut conn, &mut msg)? {
        log.append(msg[0] == PREPARE)?;
        conn.write_all(&msg)?;
    }
    Ok(())
}

/// One message, or `false` at a clean end of stream.
fn receive(conn: &mut TcpStream, msg: &mut Message) -> std::io::Result<bool> {
    match conn.read_exact(msg) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    tuned(TcpStream::connect(addr)?)
}

/// Waits at most [`SKELETON_IO_TIMEOUT`] for a connection (a peer that
/// failed before connecting must not hang the probe).
fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + SKELETON_IO_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)?;
                return tuned(conn);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(std::io::Error::new(ErrorKind::TimedOut, "skeleton peer never connected"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

fn tuned(conn: TcpStream) -> std::io::Result<TcpStream> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(SKELETON_IO_TIMEOUT))?;
    Ok(conn)
}

/// An append-only file, removed when dropped.
struct Log {
    file: File,
    path: PathBuf,
}

impl Log {
    fn create(path: PathBuf) -> std::io::Result<Log> {
        let file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        Ok(Log { file, path })
    }

    fn append(&mut self, sync: bool) -> std::io::Result<()> {
        self.file.write_all(&[0x5a; SKELETON_RECORD_BYTES])?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skeleton_commits_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let probe = skeleton_probe(dir.path(), 3).unwrap();
        assert_eq!(probe.participants, 3);
        assert!(probe.commits > 0);
        assert!(probe.p50_us >= 1.0 && probe.p99_us >= probe.p50_us);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "skeleton logs left behind");
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert!(skeleton_probe(&gone, 2).is_err());
    }
}
