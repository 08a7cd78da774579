//! `twopc chaos`: a real cluster of this binary's servers on loopback,
//! faults from a seed while a workload runs, then heal, recovery and a
//! check of the history against the final state (the `twopc-chaos`
//! crate does the work).

use crate::duration::parse_duration;
use crate::say::say_err;
use crate::say::{out, out_raw};
use crate::signals::StopSignals;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;
use twopc_chaos::nemesis::{parse_faults, FaultKind, Sabotage};
use twopc_chaos::runner::ChaosOptions;
use twopc_chaos::workload::WorkloadKind;

pub const CHAOS_AFTER_HELP: &str = "\
Faults (--faults, comma-separated kinds, or all, or none; all and none stand alone):
  kill       SIGKILL one or two processes, restart them on their data dirs 0-2 s later
  pause      SIGSTOP a process for 1-5 s or (half the time) 5.5-9 s, past the 5 s RPC
             deadline, then SIGCONT
  partition  through a TCP proxy on every link: isolate a process (or the clients),
             cut one direction between two nodes, or split the cluster in two; 1-8 s
  delay      slow links: 5-300 ms each way on random links, 2-8 s
  drop       close (FIN) or reset (RST) open connections of random links, for 1-5 s
  crash      kills aimed at protocol moments via named fault points: right after a
             participant's prepare is synced, before it applies a commit, before or
             right after the coordinator's decision is synced, mid commit fan-out
             (and withholding one commit message)

`crash` and --sabotage need a binary with fault points: ./scripts/twopc-fault-points
(or cargo build -p twopc-cli --features fault-points; a `cargo test` build of
target/debug/twopc has them too); without them the default (all) skips `crash` and
says so, and --faults naming `crash` is refused.

Workloads:
  bank        transfers between accounts on every participant (read both, write
              both); checked: each account's committed writes form one chain of
              versions ending at the final balance, the total never changes, no
              balance is negative
  atomic-set  each transaction writes its txid under one fresh key on every
              participant; checked: all present or all absent

Checked after heal, for every transaction: atomicity; acknowledged commits fully
visible; acknowledged aborts left nothing; unknown outcomes settled by the
coordinator and matching the data; no prepared transaction, lock or undelivered
commit left within --recovery-timeout (the time it took is reported).

The seed fixes the fault schedule and the workload's choices, not the exact
interleaving: a replay repeats the schedule. A failed run prints the command
that replays its seed.

Exit codes:
  0  no invariant violated
  1  an invariant was violated (the report says which, with the evidence)
  2  inconclusive: a --sabotage run that found no violation (no process was
     killed or crashed at a moment the broken rule mattered: it proves
     nothing; try another --seed or a longer --duration)
  3  usage error, or the harness could not run (e.g. the cluster did not start)";

/// `twopc chaos` options.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule and the clients' choices, 0 to 2^64-1
    /// (default: random; printed, with the command that replays it).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    seed: Option<u64>,
    /// How long the workload runs under faults, e.g. 60s, 2m; at least
    /// 1.5s, the longest wait before the first fault (then everything is
    /// healed, recovery awaited, and the history checked).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    duration: Duration,
    /// The workload: bank or atomic-set.
    #[arg(long, value_name = "NAME", default_value = "bank", value_parser = ["bank", "atomic-set"])]
    workload: String,
    /// Participant processes (shards), 1 to 16.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    participants: u16,
    /// Coordinator processes (each client prefers one, spread over them,
    /// and moves on to the others while it cannot be reached), 1 to 4.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4))]
    coordinators: u16,
    /// Concurrent clients, each with its own connection, 1 to 256.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    clients: u16,
    /// Fault kinds to inject: some of kill,pause,partition,delay,drop,crash,
    /// or all, or none (see below) [default: all; without fault points,
    /// all but crash]. Asking for crash by name without fault points is
    /// refused: the run would test nothing it was asked to.
    #[arg(long, value_name = "LIST", value_parser = parse_fault_list)]
    faults: Option<FaultList>,
    /// Negative control: break one durability rule on purpose, to see the
    /// checker catch it: vote-before-sync (participants vote Yes before
    /// their Prepared record is synced) or commit-before-sync (the
    /// coordinator answers Committed before its Commit record is synced).
    /// Aimed crashes then target the sabotaged role. Needs fault points.
    /// (The third rule, ack-before-sync, is proven caught by
    /// cli/tests/t30_durability_rules.rs, not by this harness.)
    #[arg(long, value_name = "RULE", value_parser = ["vote-before-sync", "commit-before-sync"])]
    sabotage: Option<String>,
    /// Bound on recovery after heal: every prepared transaction, lock and
    /// unknown outcome must be resolved within it. At least 22.5s: the
    /// client's commit deadline (15 s), a participant's in-doubt timer and
    /// tick (2.5 s) and one RPC deadline (5 s); a shorter bound would
    /// report the recovery it cuts off as violations.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    recovery_timeout: Duration,
    /// Keep every process's data and log under DIR (default: a temp dir,
    /// removed at the end of a clean run; a run that found a violation
    /// keeps it and prints where).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Write the history (one JSON object per transaction) to FILE
    /// (created, or checked writable, before the run).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Print the report as one JSON object on stdout (seed, faults
    /// injected, transactions by outcome, violations, recovery time).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone)]
pub struct FaultList(std::collections::BTreeSet<FaultKind>);

fn parse_fault_list(s: &str) -> Result<FaultList, String> {
    parse_faults(s).map(FaultList)
}

/// The `--history` file, checked before the run.
struct HistoryFile {
    path: PathBuf,
    /// It was there before: never removed.
    existed: bool,
}

impl HistoryFile {
    /// Creates the file (or checks that an existing one can be written;
    /// it is replaced after the run).
    fn open(path: &Path) -> Result<HistoryFile, String> {
        let existed = path.exists();
        match std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path) {
            Ok(_) => Ok(HistoryFile { path: path.to_path_buf(), existed }),
            Err(e) => Err(format!("cannot write the history {}: {e}", path.display())),
        }
    }

    /// A run that ends without a report leaves no empty history behind.
    fn discard(self) {
        if !self.existed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn random_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    // Short enough to type when replaying.
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000
}

fn usage(json: bool, message: &str) -> u8 {
    if json {
        out!("{}", crate::output::error_json(message));
    }
    say_err!("error: {message}");
    EXIT_USAGE
}

pub async fn run(args: ChaosArgs) -> u8 {
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => return usage(args.json, &format!("cannot find this binary: {e}")),
    };
    let fault_points = twopc_common::fault::COMPILED_IN;
    let sabotage: Option<Sabotage> = args.sabotage.as_deref().map(|s| s.parse().expect("clap checked it"));
    if sabotage.is_some() && !fault_points {
        return usage(
            args.json,
            "--sabotage needs a twopc binary with fault points: run ./scripts/twopc-fault-points (or cargo build -p twopc-cli --features fault-points)",
        );
    }
    let asked_crash = args.faults.as_ref().is_some_and(|f| f.0.contains(&FaultKind::Crash));
    if asked_crash && !fault_points {
        return usage(
            args.json,
            "--faults crash needs a twopc binary with fault points: run ./scripts/twopc-fault-points (or cargo build -p twopc-cli --features fault-points)",
        );
    }
    let workload: WorkloadKind = args.workload.parse().expect("clap checked it");
    let mut opts = ChaosOptions::new(binary, args.seed.unwrap_or_else(random_seed));
    opts.duration = args.duration;
    opts.workload = workload;
    opts.participants = usize::from(args.participants);
    opts.coordinators = usize::from(args.coordinators);
    opts.clients = usize::from(args.clients);
    opts.faults = match args.faults {
        Some(list) => list.0,
        None => FaultKind::ALL.into_iter().collect(),
    };
    opts.sabotage = sabotage;
    opts.fault_points = fault_points;
    opts.recovery_timeout = args.recovery_timeout;
    opts.dir = args.dir;
    opts.keep_failed = true;
    opts.history_file = args.history;
    opts.progress = !args.json;
    if let Err(e) = opts.validate() {
        return usage(args.json, &e);
    }
    // Checked before the run, so that a bad path cannot waste one.
    let history = match opts.history_file.as_deref().map(HistoryFile::open).transpose() {
        Ok(h) => h,
        Err(e) => return usage(args.json, &e),
    };
    if !args.json {
        say_err!("twopc chaos: seed {} (replay: {})", opts.seed, opts.replay_command());
        let skipped: Vec<&str> = opts.faults.difference(&opts.active_faults()).map(|k| k.name()).collect();
        if !skipped.is_empty() {
            say_err!(
                "note: skipping {}: aimed kills need a build with fault points (./scripts/twopc-fault-points)",
                skipped.join(",")
            );
        }
    }
    let mut signals = match StopSignals::new() {
        Ok(s) => s,
        Err(e) => {
            say_err!("error: cannot listen for signals: {e}");
            return EXIT_FAILED;
        }
    };
    let outcome = tokio::select! {
        outcome = twopc_chaos::run(&opts) => Ok(outcome),
        signal = signals.recv() => Err(signal),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(signal) => {
            // The run was dropped with the select: its threads stop and the
            // last handle on the cluster kills the processes and removes the
            // temp dir; give that a moment.
            if let Some(h) = history {
                h.discard();
            }
            if args.json {
                out!("{}", crate::output::error_json(&format!("{signal}: chaos run stopped")));
            }
            say_err!("{signal}: stopping the cluster");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return EXIT_FAILED;
        }
    };
    match outcome {
        Ok(report) => {
            if args.json {
                out!("{}", report.to_json());
            } else {
                out_raw!("{}", report.summary());
            }
            if let Some(e) = &report.history_error {
                say_err!("error: {e}");
            }
            match (report.ok(), &report.inconclusive, &report.history_error) {
                (false, _, _) => EXIT_FAILED,
                // Asked for, not delivered: the harness failed at it.
                (true, _, Some(_)) => EXIT_USAGE,
                (true, None, None) => EXIT_OK,
                (true, Some(_), None) => EXIT_UNKNOWN,
            }
        }
        Err(e) => {
            if let Some(h) = history {
                h.discard();
            }
            let message = format!("chaos run could not complete: {e:#} (replay: {})", opts.replay_command());
            usage(args.json, &message)
        }
    }
}
