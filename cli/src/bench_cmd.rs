//! `twopc bench`: a thin shell over `twopc_chaos::bench`: parses the
//! command line, runs the benchmark (a twopc cluster of this very binary,
//! and optionally PostgreSQL), prints the table or the JSON report, and
//! writes the SVG plot.

use crate::duration::parse_duration;
use crate::say::say_err;
use crate::say::{out, out_raw};
use crate::signals::StopSignals;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use clap::{ArgAction, Args, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use twopc_chaos::bench::{self, workload::Workload, BenchOptions, Peer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    /// Blind write of one key on every participant (full 2PC).
    MultiShard,
    /// Read two accounts, move 1..=10 between them (read round trip, then
    /// a commit on one or two participants).
    Bank,
    /// Blind write of one key on one participant (one-phase commit).
    SingleShard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerArg {
    /// N local PostgreSQL clusters driven with PREPARE TRANSACTION /
    /// COMMIT PREPARED by an application-side coordinator.
    Postgres,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Participants (shards) of the benchmark cluster (plus one
    /// coordinator), 1 to 16.
    #[arg(long, default_value_t = 3, value_name = "N")]
    participants: usize,
    /// Concurrency levels to sweep, each once, in this order: closed-loop
    /// clients, each running one transaction after another, 1 to 4096.
    /// Given once (a comma-separated list).
    #[arg(long, action = ArgAction::Set, value_delimiter = ',', default_value = "1,4,16,64,256", value_name = "C,C,..")]
    concurrency: Vec<usize>,
    /// Measured time per level (e.g. 10s, 500ms, 1m), 100ms to 1h.
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true, value_name = "DURATION")]
    duration: Duration,
    /// Unmeasured load before each level's window, at most 10m.
    #[arg(long, default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true, value_name = "DURATION")]
    warmup: Duration,
    /// What each transaction does.
    #[arg(long, value_enum, default_value_t = WorkloadArg::MultiShard)]
    workload: WorkloadArg,
    /// Zipfian key choice with exponent S, above 0 and at most 10
    /// (contention; e.g. 0.99); uniform when absent.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    zipf: Option<f64>,
    /// Keys per participant, 1 to 1,000,000 (the key space; bank accounts
    /// start at 1000).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    keys: usize,
    /// Also run the same workload against this system, side by side.
    #[arg(long, value_enum)]
    peer: Option<PeerArg>,
    /// Print the report as one JSON object on stdout (no table); a run
    /// that fails or is stopped prints `{"error": "..."}` instead.
    #[arg(long)]
    json: bool,
    /// Write a plot of throughput and latency against concurrency (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Keep the clusters' data under DIR (default: a temp dir, removed at
    /// the end). Must be on the filesystem you want measured.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Benchmark the running cluster this cluster file describes (as
    /// `twopc local` writes it) instead of launching one: its first
    /// coordinator takes the clients, every server's stats() gives the
    /// fsync counts (CPU and memory are not measured). The benchmark
    /// writes keys `bench/…` into it.
    #[arg(long, value_name = "FILE", conflicts_with = "participants")]
    cluster: Option<PathBuf>,
}

fn options(args: &BenchArgs) -> Result<BenchOptions, String> {
    let binary = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut opts = BenchOptions::new(binary);
    opts.participants = args.participants;
    opts.concurrency = args.concurrency.clone();
    opts.duration = args.duration;
    opts.warmup = args.warmup;
    opts.workload = match args.workload {
        WorkloadArg::MultiShard => Workload::MultiShard,
        WorkloadArg::Bank => Workload::Bank,
        WorkloadArg::SingleShard => Workload::SingleShard,
    };
    opts.zipf = args.zipf;
    opts.keys_per_participant = args.keys;
    opts.peer = args.peer.map(|PeerArg::Postgres| Peer::Postgres);
    opts.data_dir = args.data_dir.clone();
    if let Some(file) = &args.cluster {
        // A missing or malformed file is a usage error, said before anything runs.
        let config = twopc_common::config::ClusterConfig::load(file).map_err(|e| e.to_string())?;
        opts.participants = config.participant.len();
        opts.target = Some(file.clone());
    }
    // indicatif draws only when stderr is a terminal.
    opts.progress = true;
    opts.validate().map_err(|e| e.to_string())?;
    Ok(opts)
}

/// The `--plot` file, opened before the run.
struct PlotFile<'a> {
    path: &'a Path,
    file: std::fs::File,
    /// It was there before (an older plot): never removed.
    existed: bool,
}

/// Says why the run ended without a report (on stdout too, as JSON, with
/// `--json`, as `chaos` and `txn` do); returns `code`.
fn fail(json: bool, code: u8, message: &str) -> u8 {
    if json {
        out!("{}", crate::output::error_json(message));
    }
    say_err!("error: {message}");
    code
}

pub async fn run(args: BenchArgs) -> u8 {
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => return fail(args.json, EXIT_USAGE, &e),
    };
    // Opened before the run, so that a bad path cannot waste one; an
    // existing plot is kept as it is until the new one is written.
    let plot = match &args.plot {
        None => None,
        Some(path) => {
            let existed = path.exists();
            match std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path) {
                Ok(file) => Some(PlotFile { path, file, existed }),
                Err(e) => {
                    return fail(args.json, EXIT_USAGE, &format!("cannot write the plot {}: {e}", path.display()))
                }
            }
        }
    };
    // A run that ends without a report leaves no empty plot behind.
    let discard_plot = |plot: Option<PlotFile>| {
        if let Some(p) = plot.filter(|p| !p.existed) {
            let _ = std::fs::remove_file(p.path);
        }
    };
    let mut signals = match StopSignals::new() {
        Ok(s) => s,
        Err(e) => return fail(args.json, EXIT_FAILED, &format!("cannot listen for signals: {e}")),
    };
    let result = tokio::select! {
        r = bench::run(&opts) => r,
        signal = signals.recv() => {
            // Dropping the run stops its processes; its temp dir goes
            // once its blocking tasks have ended (before the exit).
            discard_plot(plot);
            if args.json {
                out!("{}", crate::output::error_json(&format!("{signal}: benchmark stopped")));
            }
            say_err!("{signal}: benchmark stopped");
            return EXIT_FAILED;
        }
    };
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            discard_plot(plot);
            return fail(args.json, EXIT_FAILED, &format!("{e:#}"));
        }
    };
    report.notes.push(format!(
        "built with the {} profile",
        if cfg!(debug_assertions) {
            "dev (debug assertions; twopc crates at opt-level 2, dependencies incl. RocksDB at 3)"
        } else {
            "release"
        }
    ));
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => out!("{json}"),
            Err(e) => return fail(true, EXIT_FAILED, &e.to_string()),
        }
    } else {
        out_raw!("{}", report.table());
    }
    // Written after the report is out: a failure here loses no result.
    if let Some(PlotFile { path, mut file, .. }) = plot {
        let svg = bench::plot::svg(&report);
        if let Err(e) = file.set_len(0).and_then(|()| file.write_all(svg.as_bytes())) {
            say_err!("error: cannot write the plot {}: {e}", path.display());
            return EXIT_FAILED;
        }
        if !args.json {
            out!("plot: {}", path.display());
        }
    }
    EXIT_OK
}
