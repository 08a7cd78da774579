//! `twopc bench`: how close twopc gets to the fsync floor, and how it
//! compares with two-phase commit over PostgreSQL, in one run.
//!
//! A run measures the floor (raw fsync + loopback round trip, see
//! [`floor`]) and the bare 2PC pattern on this machine ([`skeleton`]),
//! launches a twopc cluster with [`crate::cluster::Cluster`]
//! and sweeps the concurrency levels with closed-loop clients
//! ([`driver`]) through the client library ([`twopc`]), then, with
//! `--peer postgres`, does the same against N PostgreSQL clusters driven
//! by an application-side 2PC coordinator ([`postgres`]). Each level
//! warms up, then measures a window; fsync counters, CPU and memory are
//! sampled at both ends of the window. [`report`] computes the ratios and
//! renders the table and JSON; [`plot`] writes the SVG.
//!
//! Everything is bounded: the levels by their durations, each
//! transaction by [`driver::TXN_TIMEOUT`], the drain by
//! [`driver::DRAIN_TIMEOUT`]; processes and temp dirs go away when the
//! run ends (or its future is dropped).
//!
//! # Layout
//! - [`workload`]: key space, uniform/zipfian chooser, transaction plans.
//! - [`driver`]: closed-loop workers, measured window, HDR histograms.
//! - [`twopc`]: the twopc cluster, its workers and its `stats()` probe.
//! - [`postgres`]: PostgreSQL clusters, decision log, 2PC workers.
//! - [`floor`]: fsync and round-trip probes.
//! - [`skeleton`]: the bare 2PC message and fsync pattern, one thread per server.
//! - [`procstat`]: `/proc` CPU and memory, machine description.
//! - [`report`], [`plot`]: the results.

pub mod driver;
pub mod floor;
pub mod plot;
pub mod postgres;
pub mod procstat;
pub mod report;
pub mod skeleton;
pub mod twopc;
pub mod workload;

use anyhow::{bail, Context, Result};
use driver::{LevelRun, Measured, Worker};
use indicatif::{ProgressBar, ProgressStyle};
use report::{Level, NodeLevel, Report, Settings, SystemRun};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{KeySpace, PlanGenerator, Workload};

/// Default concurrency sweep.
pub const DEFAULT_CONCURRENCY: [usize; 5] = [1, 4, 16, 64, 256];
/// Most clients one level may run.
pub const MAX_CONCURRENCY: usize = 4096;
/// Most participants a bench cluster may have.
pub const MAX_PARTICIPANTS: usize = 16;

/// The peer system to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Postgres,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `twopc` binary whose `participant`/`coordinator` subcommands
    /// the cluster runs.
    pub binary: PathBuf,
    pub participants: usize,
    pub concurrency: Vec<usize>,
    /// Measured window per level.
    pub duration: Duration,
    /// Load before each window (not measured).
    pub warmup: Duration,
    pub workload: Workload,
    pub zipf: Option<f64>,
    pub keys_per_participant: usize,
    pub peer: Option<Peer>,
    /// A running cluster's file: benchmark it instead of launching one.
    pub target: Option<PathBuf>,
    /// Where clusters keep their data (default: a temp dir, removed).
    pub data_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    pub seed: u64,
}

impl BenchOptions {
    pub fn new(binary: PathBuf) -> BenchOptions {
        BenchOptions {
            binary,
            participants: 3,
            concurrency: DEFAULT_CONCURRENCY.to_vec(),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            workload: Workload::MultiShard,
            zipf: None,
            keys_per_participant: 10_000,
            peer: None,
            target: None,
            data_dir: None,
            progress: false,
            seed: 0x2bc_be7c,
        }
    }

    pub fn validate(&self) -> Result<()> {
        // (A targeted cluster has as many as its file says.)
        if self.target.is_none() && !(1..=MAX_PARTICIPANTS).contains(&self.participants) {
            bail!("--participants must be 1..={MAX_PARTICIPANTS}");
        }
        if self.concurrency.is_empty() || self.concurrency.iter().any(|c| !(1..=MAX_CONCURRENCY).contains(c)) {
            bail!("--concurrency levels must be 1..={MAX_CONCURRENCY}");
        }
        if let Some(c) =
            self.concurrency.iter().enumerate().find_map(|(i, c)| self.concurrency[..i].contains(c).then_some(c))
        {
            bail!("--concurrency level {c} is given twice (each level runs once)");
        }
        if self.duration < Duration::from_millis(100) || self.duration > Duration::from_secs(3600) {
            bail!("--duration must be between 100ms and 1h");
        }
        if self.warmup > Duration::from_secs(600) {
            bail!("--warmup must be at most 10m");
        }
        if let Some(s) = self.zipf {
            if !(s.is_finite() && s > 0.0 && s <= 10.0) {
                bail!("--zipf must be in (0, 10]");
            }
        }
        if !(1..=1_000_000).contains(&self.keys_per_participant) {
            bail!("--keys must be 1..=1000000");
        }
        Ok(())
    }
}

/// Counters of one server (or shard) at one instant.
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    pub role: String,
    pub syncs: Option<u64>,
    pub batches: Option<u64>,
    pub cpu_ticks: Option<u64>,
    pub rss_kib: Option<u64>,
    /// Which connection the counters came through (twopc): another one
    /// at the other end of a window means the server may have restarted
    /// in between, its counters starting again from zero.
    pub session: Option<u64>,
    /// Why the counters could not be read (the server did not answer).
    pub unread: Option<String>,
}

/// Counters of a whole system at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// By id: `c1`, `p1`.. (twopc); `p1`.., `log` (postgres).
    pub nodes: BTreeMap<String, NodeSample>,
    /// CPU ticks of this process.
    pub bench_ticks: u64,
    /// Busy ticks of the whole machine (all cores).
    pub machine_busy_ticks: u64,
}

impl Sample {
    pub fn new(nodes: BTreeMap<String, NodeSample>) -> Sample {
        Sample {
            at: Instant::now(),
            nodes,
            bench_ticks: procstat::stat(std::process::id()).map_or(0, |s| s.cpu_ticks),
            machine_busy_ticks: procstat::machine_ticks().map_or(0, |(busy, _)| busy),
        }
    }
}

/// `b - a` when both are known.
fn delta(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(b?.saturating_sub(a?))
}

/// Why a server's counters over a window cannot be trusted, if they
/// cannot: it did not answer at one end, or answered on another
/// connection (it restarted, or its connection broke, so they may have
/// started again from zero), or they went back.
fn counters_unknown(n0: &NodeSample, n1: &NodeSample) -> Option<String> {
    if let Some(why) = n0.unread.as_ref().or(n1.unread.as_ref()) {
        return Some(format!("its stats() went unanswered ({why})"));
    }
    if n0.session != n1.session {
        return Some("its stats() connection had to be re-opened during the window (it restarted?)".into());
    }
    match (n0.syncs, n1.syncs) {
        (Some(a), Some(b)) if b < a => Some(format!("its counter went back from {a} to {b} (it restarted)")),
        _ => None,
    }
}

/// Turns a window's measurements and its two samples into a [`Level`].
/// `shard_ids[i]` names shard `i` in the samples.
pub fn level_from(concurrency: usize, m: &Measured, s0: &Sample, s1: &Sample, shard_ids: &[String]) -> Level {
    let secs = m.window.as_secs_f64().max(1e-9);
    let sample_secs = s1.at.duration_since(s0.at).as_secs_f64().max(1e-9);
    let hz = procstat::clock_ticks_per_second() as f64;
    let pct = |t0: u64, t1: u64| t1.saturating_sub(t0) as f64 / hz / sample_secs * 100.0;
    let mut nodes = Vec::new();
    let (mut all_syncs, mut shard_syncs, mut complete) = (0u64, 0u64, true);
    let mut cpu_total: Option<f64> = None;
    let mut counter_notes = Vec::new();
    for (id, n1) in &s1.nodes {
        let Some(n0) = s0.nodes.get(id) else { continue };
        let (fsyncs, batches) = match counters_unknown(n0, n1) {
            None => (delta(n0.syncs, n1.syncs), delta(n0.batches, n1.batches)),
            Some(why) => {
                counter_notes.push(format!("{id}: fsyncs unknown: {why}"));
                (None, None)
            }
        };
        let commits = shard_ids.iter().position(|s| s == id).map(|i| m.shard_commits[i]);
        match fsyncs {
            Some(f) => {
                all_syncs += f;
                if commits.is_some() {
                    shard_syncs += f;
                }
            }
            None => complete = false,
        }
        let cpu_pct = match (n0.cpu_ticks, n1.cpu_ticks) {
            (Some(a), Some(b)) => Some(pct(a, b)),
            _ => None,
        };
        if let Some(c) = cpu_pct {
            *cpu_total.get_or_insert(0.0) += c;
        }
        nodes.push(NodeLevel {
            id: id.clone(),
            role: n1.role.clone(),
            fsyncs,
            commits,
            commits_per_fsync: match (commits, fsyncs) {
                (Some(c), Some(f)) if f > 0 => Some(c as f64 / f as f64),
                _ => None,
            },
            batches_per_fsync: match (batches, fsyncs) {
                (Some(b), Some(f)) if f > 0 => Some(b as f64 / f as f64),
                _ => None,
            },
            cpu_pct,
            rss_kib: n1.rss_kib,
        });
    }
    // Coordinator / decision log first, then participants in order.
    nodes.sort_by_key(|n| (shard_ids.iter().position(|s| *s == n.id).map_or(0, |i| i + 1), n.id.clone()));
    let rss: Vec<u64> = nodes.iter().filter_map(|n| n.rss_kib).collect();
    let per_commit = |syncs: u64| (complete && m.commits > 0).then(|| syncs as f64 / m.commits as f64);
    let attempts = m.commits + m.aborts;
    let lat = &m.latency;
    let q = |p: f64| if m.commits > 0 { lat.value_at_quantile(p) as f64 } else { 0.0 };
    Level {
        concurrency,
        window_s: secs,
        commits: m.commits,
        aborts: m.aborts,
        errors: m.errors,
        first_error: m.first_error.clone(),
        throughput: m.commits as f64 / secs,
        abort_rate: if attempts > 0 { m.aborts as f64 / attempts as f64 } else { 0.0 },
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if m.commits > 0 { lat.max() as f64 } else { 0.0 },
        mean_us: if m.commits > 0 { lat.mean() } else { 0.0 },
        fsyncs_per_commit: per_commit(all_syncs),
        participant_fsyncs_per_commit: per_commit(shard_syncs),
        nodes,
        counter_notes,
        server_cpu_pct: cpu_total,
        bench_cpu_pct: pct(s0.bench_ticks, s1.bench_ticks),
        other_cpu_pct: cpu_total.map(|servers| {
            (pct(s0.machine_busy_ticks, s1.machine_busy_ticks) - servers - pct(s0.bench_ticks, s1.bench_ticks)).max(0.0)
        }),
        rss_kib: (!rss.is_empty()).then(|| rss.iter().sum()),
        p50_to_floor: None,
        throughput_to_peer: None,
        p99_to_peer: None,
    }
}

/// The progress bar over the whole run.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(enabled: bool, total: Duration) -> Progress {
        let bar = if enabled {
            let bar = ProgressBar::new(total.as_millis() as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:32.cyan/blue} {percent:>3}% {msg}")
                    .expect("valid template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }
}

/// Runs one level: workers, window, samples. Returns the workers for the
/// next level.
#[allow(clippy::too_many_arguments)]
async fn run_level<W, S, F>(
    system: &str,
    concurrency: usize,
    workers: Vec<W>,
    plans: &Arc<PlanGenerator>,
    opts: &BenchOptions,
    shard_ids: &[String],
    progress: &Progress,
    mut sample: S,
) -> Result<(Vec<W>, Level)>
where
    W: Worker,
    S: FnMut() -> F,
    F: std::future::Future<Output = Result<Sample>>,
{
    let base = progress.bar.position();
    let run = LevelRun::start(
        workers,
        plans.clone(),
        shard_ids.len(),
        opts.warmup,
        opts.duration,
        opts.seed ^ concurrency as u64,
    );
    let started = Instant::now();
    let live = run.live.clone();
    let tick = |phase: &str| {
        let elapsed = started.elapsed();
        progress.bar.set_position(base + elapsed.as_millis() as u64);
        let commits = live.commits.load(Ordering::Relaxed);
        let rate = commits as f64 / elapsed.as_secs_f64().max(1e-3);
        progress.message(format!("{system} c={concurrency} {phase}: {rate:.0} commits/s"));
    };
    while Instant::now() < run.t0 {
        tick("warm-up");
        tokio::time::sleep(Duration::from_millis(100).min(run.t0.saturating_duration_since(Instant::now()))).await;
    }
    let s0 = sample().await?;
    let commits_at_t0 = live.commits.load(Ordering::Relaxed);
    while Instant::now() < run.t1 {
        let elapsed = Instant::now().saturating_duration_since(run.t0).as_secs_f64().max(1e-3);
        progress.bar.set_position(base + started.elapsed().as_millis() as u64);
        let rate = (live.commits.load(Ordering::Relaxed) - commits_at_t0) as f64 / elapsed;
        progress.message(format!("{system} c={concurrency}: {rate:.0} commits/s"));
        tokio::time::sleep(Duration::from_millis(100).min(run.t1.saturating_duration_since(Instant::now()))).await;
    }
    let s1 = sample().await?;
    progress.message(format!("{system} c={concurrency}: draining"));
    let (workers, measured) = run.finish().await;
    progress.bar.set_position(base + (opts.warmup + opts.duration).as_millis() as u64);
    Ok((workers, level_from(concurrency, &measured, &s0, &s1, shard_ids)))
}

/// The twopc side: launch (or find) the cluster, sweep, stop.
async fn run_twopc(opts: &BenchOptions, dir: &Arc<RunDir>, progress: &Progress) -> Result<SystemRun> {
    let participants = opts.participants;
    let (cluster, config, setup) = match &opts.target {
        None => {
            progress.message("starting the twopc cluster".into());
            let binary = opts.binary.clone();
            let dir = dir.clone();
            // A cancelled run does not wait for this task: it returns the
            // cluster first (stopped when dropped), then the directory.
            let launch = move || (twopc::launch(&binary, &dir.path.join("twopc"), participants), dir);
            let cluster = tokio::task::spawn_blocking(launch).await?.0?;
            let config = cluster.config.clone();
            let setup = format!(
                "1 coordinator + {} (separate processes, RocksDB WAL, group commit)",
                report::participants(participants)
            );
            (Some(cluster), config, setup)
        }
        Some(file) => {
            let config = twopc_common::config::ClusterConfig::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
            let setup = format!(
                "the running cluster of {} ({}; its first coordinator takes the clients; \
                 CPU and memory not measured)",
                file.display(),
                report::participants(config.participant.len())
            );
            (None, config, setup)
        }
    };
    let (coordinator, servers) = match &cluster {
        Some(cluster) => twopc::targets_of(cluster),
        None => twopc::targets_in(&config),
    };
    let keys = Arc::new(KeySpace::new(&config.ring(), opts.keys_per_participant));
    let plans = Arc::new(PlanGenerator::new(opts.workload, keys, opts.zipf));
    let probe = twopc::Probe::connect(&coordinator, &servers).await?;
    let shard_ids = probe.shard_ids();
    let coordinator = coordinator.addr;
    let conns: Vec<_> = twopc::workers(&coordinator, twopc::CLIENT_CONNECTIONS, &[])
        .await?
        .into_iter()
        .map(|w| w.client().clone())
        .collect();
    let mut levels = Vec::new();
    for &c in &opts.concurrency {
        let workers = twopc::workers(&coordinator, c, &conns).await?;
        let (_, level) = run_level("twopc", c, workers, &plans, opts, &shard_ids, progress, || probe.sample()).await?;
        levels.push(level);
    }
    let peak = probe.peak_rss_kib();
    drop(cluster);
    Ok(SystemRun { system: "twopc".into(), setup, levels, peak_rss_kib: peak })
}

/// The PostgreSQL side: start the shards, sweep, stop.
async fn run_postgres(opts: &BenchOptions, bin: &Path, dir: &Path, progress: &Progress) -> Result<SystemRun> {
    progress.message("starting PostgreSQL".into());
    // The same keys on the same shards as the twopc run.
    let ring = twopc_common::config::ClusterConfig::loopback(1, opts.participants, 0).ring();
    let keys = Arc::new(KeySpace::new(&ring, opts.keys_per_participant));
    let max_c = opts.concurrency.iter().copied().max().unwrap_or(1);
    let mut peer = postgres::PgPeer::start(bin, &dir.join("postgres"), &keys, max_c).await?;
    let plans = Arc::new(PlanGenerator::new(opts.workload, keys, opts.zipf));
    let shard_ids: Vec<String> = (1..=opts.participants).map(|i| format!("p{i}")).collect();
    let mut pool: Vec<postgres::PgWorker> = Vec::new();
    let mut levels = Vec::new();
    let mut peak = 0u64;
    for &c in &opts.concurrency {
        if pool.len() < c {
            progress.message(format!("postgres: opening {} connections", (c - pool.len()) * opts.participants));
            let more = peer.workers(c - pool.len()).await?;
            pool.extend(more);
        }
        let rest = pool.split_off(c);
        let (workers, level) =
            run_level("postgres", c, pool, &plans, opts, &shard_ids, progress, || peer.sample()).await?;
        pool = workers;
        pool.extend(rest);
        peak = peak.max(level.rss_kib.unwrap_or(0));
        levels.push(level);
        postgres::wait_no_prepared(&peer, Duration::from_secs(30)).await?;
    }
    let version = bin
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|v| v.to_str())
        .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
        .map(|v| format!("PostgreSQL {v}"))
        .unwrap_or_else(|| "PostgreSQL".into());
    let commit_errors = peer.commit_errors();
    drop(pool);
    drop(peer);
    if commit_errors > 0 {
        bail!("{commit_errors} COMMIT PREPARED failed during the PostgreSQL run");
    }
    Ok(SystemRun {
        system: "postgres".into(),
        setup: format!(
            "{} × {version} (fsync on, synchronous_commit on, lock_timeout {}ms), app-side 2PC coordinator with a group-committed fdatasync'd decision log",
            opts.participants,
            postgres::LOCK_TIMEOUT_MS
        ),
        levels,
        peak_rss_kib: (peak > 0).then_some(peak),
    })
}

/// Most attempts at removing the run's temp dir (a process stopped a
/// moment ago may still be writing into it).
const REMOVE_ATTEMPTS: u32 = 50;
/// Pause between those attempts.
const REMOVE_RETRY: Duration = Duration::from_millis(20);

/// Where the run keeps its data: `--data-dir` (kept), or a new temp dir,
/// removed when the last holder drops it. Blocking tasks writing into it
/// hold a handle, so a run cancelled by Ctrl-C removes it only after they
/// ended (the runtime waits for them before the process exits), and
/// after the processes started in it were stopped.
struct RunDir {
    path: PathBuf,
    /// A temp dir: remove it.
    temporary: bool,
}

impl RunDir {
    fn new(data_dir: Option<&Path>) -> Result<RunDir> {
        match data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                Ok(RunDir { path: d.to_path_buf(), temporary: false })
            }
            None => {
                let temp = tempfile::Builder::new().prefix("twopc-bench-").tempdir().context("temp dir")?;
                Ok(RunDir { path: temp.keep(), temporary: true })
            }
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.temporary {
            return;
        }
        for _ in 0..REMOVE_ATTEMPTS {
            match std::fs::remove_dir_all(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(REMOVE_RETRY),
            }
        }
        eprintln!("warning: could not remove {}", self.path.display());
    }
}

/// Runs the whole benchmark. Progress goes to stderr; the report is
/// returned (nothing printed on stdout).
pub async fn run(opts: &BenchOptions) -> Result<Report> {
    opts.validate()?;
    let mut opts = opts.clone();
    if let Some(file) = &opts.target {
        // The cluster file says how many shards there are.
        let config = twopc_common::config::ClusterConfig::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
        opts.participants = config.participant.len();
    }
    let opts = &opts;
    let run_dir = Arc::new(RunDir::new(opts.data_dir.as_deref())?);
    let dir = run_dir.path.clone();
    let pg_bin = match opts.peer {
        Some(Peer::Postgres) => postgres::find_binaries(),
        None => None,
    };
    let peer_note = (opts.peer.is_some() && pg_bin.is_none()).then(|| postgres::INSTALL_HINT.to_string());
    if let Some(note) = &peer_note {
        eprintln!("warning: {note}");
    }
    let systems = 1 + usize::from(pg_bin.is_some());
    let per_system = (opts.warmup + opts.duration) * opts.concurrency.len() as u32;
    let progress = Progress::new(opts.progress, per_system * systems as u32);
    progress.message("measuring the floor (fsync, loopback round trip, 2PC skeleton)".into());
    let machine = procstat::MachineInfo::probe(&dir);
    let probe_dir = run_dir.clone();
    let participants = opts.participants.min(MAX_PARTICIPANTS);
    let floor = tokio::task::spawn_blocking(move || floor::Floor::measure(&probe_dir.path, participants))
        .await?
        .context("fsync / round-trip probe")?;
    let twopc = run_twopc(opts, &run_dir, &progress).await?;
    let peer = match &pg_bin {
        Some(bin) => Some(run_postgres(opts, bin, &dir, &progress).await?),
        None => None,
    };
    progress.bar.finish_and_clear();
    let mut notes = vec![
        "latency is measured at the client, from begin to the commit answer (twopc: begin + commit RPCs; \
         postgres: prepare round trips + decision sync)"
            .to_string(),
        "CPU is % of one core over the window; bench CPU is this process (the clients, and for postgres also \
         the application's 2PC coordinator); other CPU is the rest of the machine (kernel threads, and anything \
         else running: on a shared machine, numbers are only comparable when it is near 0)"
            .to_string(),
    ];
    if let Some(file) = &opts.target {
        notes.push(format!(
            "the floor was measured on this machine ({}), which may not be where the cluster of {} keeps its data",
            dir.display(),
            file.display()
        ));
    }
    if peer.is_some() {
        notes.push(
            "postgres fsyncs come from pg_stat_wal.wal_sync, which backends publish at most once a second: \
             per-window counts are approximate"
                .into(),
        );
    }
    let mut report = Report {
        format: report::REPORT_FORMAT,
        machine,
        settings: Settings {
            participants: opts.participants,
            workload: opts.workload,
            zipf: opts.zipf,
            keys_per_participant: opts.keys_per_participant,
            concurrency: opts.concurrency.clone(),
            duration_s: opts.duration.as_secs_f64(),
            warmup_s: opts.warmup.as_secs_f64(),
            peer: opts.peer.map(|_| "postgres".to_string()),
        },
        floor,
        twopc,
        peer,
        peer_note,
        targets: Vec::new(),
        notes,
    };
    report.finish();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(syncs: u64, session: u64) -> NodeSample {
        NodeSample {
            role: "participant".into(),
            syncs: Some(syncs),
            batches: Some(syncs),
            session: Some(session),
            ..NodeSample::default()
        }
    }

    fn sample(nodes: [(&str, NodeSample); 2]) -> Sample {
        Sample::new(nodes.into_iter().map(|(id, n)| (id.to_string(), n)).collect())
    }

    fn measured() -> Measured {
        let mut latency = driver::latency_histogram();
        latency.record(1000).unwrap();
        Measured {
            window: Duration::from_secs(1),
            commits: 10,
            aborts: 0,
            errors: 0,
            first_error: None,
            shard_commits: vec![10, 10],
            latency,
        }
    }

    #[test]
    fn counters_of_a_server_that_restarted_or_did_not_answer_are_unknown_not_wrong() {
        let shards = ["p1".to_string(), "p2".to_string()];
        let s0 = sample([("p1", node(100, 1)), ("p2", node(100, 1))]);
        let clean = level_from(1, &measured(), &s0, &sample([("p1", node(110, 1)), ("p2", node(105, 1))]), &shards);
        assert_eq!(clean.fsyncs_per_commit, Some(1.5));
        assert!(clean.counter_notes.is_empty());
        // p2 restarted: a new connection (its counter happens to be higher).
        let restarted = sample([("p1", node(110, 1)), ("p2", node(120, 2))]);
        let level = level_from(1, &measured(), &s0, &restarted, &shards);
        assert_eq!(level.nodes[1].fsyncs, None);
        assert_eq!(level.nodes[0].fsyncs, Some(10));
        assert_eq!(level.fsyncs_per_commit, None, "a total without p2 would be wrong");
        assert!(level.counter_notes[0].starts_with("p2: fsyncs unknown: "), "{:?}", level.counter_notes);
        // The same connection, but the counter went back.
        let reset = sample([("p1", node(110, 1)), ("p2", node(3, 1))]);
        let level = level_from(1, &measured(), &s0, &reset, &shards);
        assert!(level.counter_notes[0].contains("went back"), "{:?}", level.counter_notes);
        // No answer at the end of the window.
        let silent = NodeSample { unread: Some("connection refused".into()), ..node(0, 2) };
        let level = level_from(1, &measured(), &s0, &sample([("p1", node(110, 1)), ("p2", silent)]), &shards);
        assert!(level.counter_notes[0].contains("connection refused"), "{:?}", level.counter_notes);
    }
}
