//! The floor, measured in the same run: what a durable commit cannot go
//! below on this machine. A raw fsync probe on the data directory's
//! filesystem (appends + `fdatasync`, as a write-ahead log does; one
//! writer, then several at once on separate files, as the cluster's
//! processes do), and a loopback TCP round trip (TCP_NODELAY, 64 bytes).
//!
//! floor = 2 sequential fsyncs + 4 one-way message delays (= 2 round
//! trips): participants' prepare records synced in parallel, then the
//! coordinator's decision, with client → coordinator → participants →
//! coordinator → client in between.

use super::skeleton::{skeleton_probe, SkeletonProbe};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes written before each fsync (about one prepare record).
pub const PROBE_RECORD_BYTES: usize = 256;
/// Most syncs per writer in one probe.
pub const MAX_PROBE_SYNCS: usize = 2_000;
/// Longest one probe runs.
pub const PROBE_TIME: Duration = Duration::from_millis(1_500);
/// Round trips measured (after as many for warm-up).
pub const RTT_SAMPLES: usize = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FsyncProbe {
    pub writers: usize,
    pub syncs: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Syncs completed per second, all writers together.
    pub syncs_per_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    /// One writer, then `writers` at once.
    pub fsync: Vec<FsyncProbe>,
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
    /// 2 × the lower fsync p50 (one writer, or concurrent writers) + 2 ×
    /// round trip p50. The lower: on some virtual disks one writer
    /// syncing back to back is many times slower than several at once
    /// (3.9 ms vs 0.45 ms in trial 16B), and a floor from it sat far above
    /// what the bare 2PC skeleton reached.
    pub floor_us: f64,
    /// Same with the concurrent writers' fsync p50 (the processes of a
    /// cluster sync at once; on some virtual disks that is much faster
    /// than one writer syncing back to back).
    #[serde(default)]
    pub floor_concurrent_us: f64,
    /// The bare 2PC pattern run on this machine (see [`super::skeleton`]).
    #[serde(default)]
    pub skeleton: Option<SkeletonProbe>,
}

impl Floor {
    /// Probes the filesystem of `dir` with 1 writer and with one per
    /// server (`participants` + the coordinator), the loopback round trip,
    /// and the 2PC skeleton with `participants`.
    pub fn measure(dir: &Path, participants: usize) -> std::io::Result<Floor> {
        let writers = participants + 1;
        let fsync = vec![fsync_probe(dir, 1)?, fsync_probe(dir, writers)?];
        let (rtt_p50_us, rtt_p99_us) = rtt_probe()?;
        let lower_fsync = fsync.iter().map(|p| p.p50_us).fold(f64::INFINITY, f64::min);
        let floor_us = 2.0 * lower_fsync + 2.0 * rtt_p50_us;
        let floor_concurrent_us = 2.0 * fsync[1].p50_us + 2.0 * rtt_p50_us;
        let skeleton = Some(skeleton_probe(dir, participants)?);
        Ok(Floor { fsync, rtt_p50_us, rtt_p99_us, floor_us, floor_concurrent_us, skeleton })
    }

    pub fn single(&self) -> &FsyncProbe {
        &self.fsync[0]
    }

    pub fn one_line(&self) -> String {
        let mut s = format!("fsync p50 {} (1 writer", ms(self.single().p50_us));
        for p in &self.fsync[1..] {
            s += &format!("; {} writers: p50 {}, {:.0} syncs/s", p.writers, ms(p.p50_us), p.syncs_per_s);
        }
        s += &format!(
            "), loopback round trip p50 {}; floor = 2 fsync (the lower p50) + 2 RTT = {}",
            ms(self.rtt_p50_us),
            ms(self.floor_us)
        );
        if self.fsync.len() > 1 {
            s += &format!(" (with the concurrent fsync p50: {})", ms(self.floor_concurrent_us));
        }
        if let Some(k) = &self.skeleton {
            s += &format!(
                "; 2PC skeleton (bare messages and fsyncs, one thread per server): p50 {}, {:.2}× the floor",
                ms(k.p50_us),
                k.p50_us / self.floor_us.max(1e-9)
            );
        }
        s
    }
}

pub(crate) fn ms(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// `writers` threads, each appending to its own file + fdatasync in a loop.
pub fn fsync_probe(dir: &Path, writers: usize) -> std::io::Result<FsyncProbe> {
    use std::os::unix::io::AsRawFd;
    let started = Instant::now();
    let deadline = started + PROBE_TIME;
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let path = dir.join(format!("fsync-probe-{}-{w}", std::process::id()));
            std::thread::spawn(move || -> std::io::Result<Histogram<u64>> {
                let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
                let record = vec![0x5au8; PROBE_RECORD_BYTES];
                let mut hist = histogram();
                for _ in 0..MAX_PROBE_SYNCS {
                    if Instant::now() > deadline {
                        break;
                    }
                    let t = Instant::now();
                    file.write_all(&record)?;
                    // SAFETY: the fd is open for the whole call.
                    if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    hist.saturating_record(t.elapsed().as_micros() as u64);
                }
                drop(file);
                let _ = std::fs::remove_file(&path);
                Ok(hist)
            })
        })
        .collect();
    let mut all = histogram();
    for t in threads {
        let hist = t.join().map_err(|_| std::io::Error::other("fsync probe thread panicked"))??;
        all.add(&hist).map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok(FsyncProbe {
        writers,
        syncs: all.len(),
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
        syncs_per_s: all.len() as f64 / secs,
    })
}

/// Ping-pong of 64 bytes over loopback TCP with TCP_NODELAY.
pub fn rtt_probe() -> std::io::Result<(f64, f64)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut client = std::net::TcpStream::connect(addr)?;
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut hist = histogram();
    let mut buf = [7u8; 64];
    for i in 0..2 * RTT_SAMPLES {
        let t = Instant::now();
        client.write_all(&buf)?;
        client.read_exact(&mut buf)?;
        if i >= RTT_SAMPLES {
            hist.saturating_record((t.elapsed().as_nanos() as u64 / 1000).max(1));
        }
    }
    drop(client);
    echo.join().map_err(|_| std::io::Error::other("echo thread panicked"))??;
    Ok((hist.value_at_quantile(0.5) as f64, hist.value_at_quantile(0.99) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_measure_something_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let floor = Floor::measure(dir.path(), 1).unwrap();
        assert_eq!(floor.fsync.len(), 2);
        assert_eq!(floor.fsync[1].writers, 2);
        assert!(floor.skeleton.as_ref().is_some_and(|k| k.commits > 0));
        assert!(floor.single().syncs > 0 && floor.fsync[1].syncs > 0);
        assert!(floor.rtt_p50_us >= 1.0);
        assert!(floor.floor_us >= 2.0 * floor.rtt_p50_us);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "probe files left behind");
        assert!(floor.one_line().contains("floor"));
    }
}
