//! `twopc`: the command-line binary of the twopc two-phase-commit system.
//!
//! One binary plays every role, each subcommand a thin shell over the
//! libraries:
//! - `twopc local`: runs a whole cluster on this machine (one coordinator,
//!   N participants) as supervised child processes of this same binary.
//! - `twopc participant` / `twopc coordinator`: run one server of a cluster
//!   described by a cluster file.
//! - `twopc txn` / `twopc get`: the application client, for scripts and
//!   people.
//!
//! # Layout
//! - `main.rs`: the command line (clap), logging, dispatch, exit codes.
//! - `txn_cmd.rs`: `txn` and `get`: OP parsing and the client calls.
//! - `output.rs`: what `txn` and `get` print, human and JSON.
//! - `duration.rs`: durations on the command line (`10s`, `500ms`).
//! - `local.rs`: `twopc local`: cluster file, startup, table, smoke test.
//! - `supervisor.rs`: `twopc local`'s child processes: spawn, restart, stop.
//!
//! # Exit codes
//! 0 success (committed); 1 aborted, or a server / `local` failed;
//! 2 outcome unknown; 3 usage error or refused request; 4 nothing done,
//! and trying again later may succeed (connection, unavailable, overloaded);
//! 5 a report or value could not be written to stdout.

/// Every message allocates (tarpc, serde, tokio); mimalloc bought +13%
/// throughput at concurrency 64 over glibc's malloc (`twopc bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod bench_cmd;
mod chaos_cmd;
mod duration;
mod local;
mod memory;
mod outcome_cmd;
mod output;
mod say;
mod signals;
mod supervisor;
mod txn_cmd;

use crate::say::out;
use crate::say::say_err;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use twopc_common::config::ClusterConfig;

/// Exit code: success (for `txn`, committed).
pub const EXIT_OK: u8 = 0;
/// Exit code: the transaction aborted, or a server or `local` failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the commit outcome is unknown (ask again later).
pub const EXIT_UNKNOWN: u8 = 2;
/// Exit code: bad command line, or a request refused for good.
pub const EXIT_USAGE: u8 = 3;
/// Exit code: nothing was done, and trying again later may succeed (a
/// coordinator or participant that cannot be used for now, an overloaded
/// server, a read whose key's writer is still in doubt).
pub const EXIT_RETRY: u8 = 4;
/// Exit code: `get`, `admin`, `bench` or `chaos` could not write its output to
/// stdout (a full disk, say): their other codes already mean something
/// else (trial 19C: `get --raw k > f || echo absent` took it for absent).
pub const EXIT_OUTPUT: u8 = 5;

const AFTER_HELP: &str = "\
Exit codes:
  0  success (txn, outcome: committed)
  1  txn, outcome: aborted (outcome: or mixed); participant/coordinator/local: failed
  2  txn: outcome unknown (the commit may or may not have happened); outcome: still pending, or unknown
  3  usage error, or the request was refused (it would be again)
  4  txn, get, outcome: nothing was done, and trying again later may succeed
     (a coordinator or participant that cannot be used for now, an overloaded
     server, a read whose key's writer is still in doubt)
  5  get, admin, bench, chaos: the output could not be written to stdout
(each command's --help gives its own)

Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change it
(the RPC library's own lines, which name no txid, only if it is named:
RUST_LOG=debug,tarpc=debug).";

/// The footer of a command whose help text gives its own exit codes.
const LOG_HELP: &str = "Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change it \
(the RPC library's own lines, which name no txid, only if it is named: RUST_LOG=debug,tarpc=debug).";

#[derive(Debug, Parser)]
#[command(
    name = "twopc",
    version,
    about = "twopc: a two-phase-commit transactional key-value system",
    long_about = "twopc: a two-phase-commit transactional key-value system.\n\n\
                  Start a local cluster with `twopc local`, then run transactions \
                  against its coordinator with `twopc txn` and `twopc get`.",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole cluster on this machine (1 coordinator, N participants).
    ///
    /// Writes DIR/cluster.toml (or reuses it if it describes the same
    /// cluster), starts each server as a child process with its data in
    /// DIR/<id> and its log appended to DIR/<id>.log, waits until all accept
    /// connections, runs a smoke transaction across every participant, then
    /// restarts any server that dies (after 1 s; longer, up to 30 s, if it
    /// keeps crashing) until Ctrl-C, SIGTERM or SIGHUP, which stops them all
    /// (SIGTERM, then SIGKILL after 3 s). Running it again on the same DIR
    /// resumes the same data. Exit code 0 after a clean
    /// stop, 1 if the cluster could not be started (a busy port, a DIR
    /// holding another cluster), 3 on a usage error.
    ///
    /// Example: twopc local --dir /tmp/demo --participants 3 --base-port 7000
    #[command(after_help = LOG_HELP)]
    Local(local::LocalArgs),

    /// Run one participant (a shard: data, locks and prepare log).
    ///
    /// Listens on the address the cluster file gives this id and serves
    /// until a fatal error (exit code 1, with `error: ...` on stderr); a
    /// cluster file it cannot read, or an --id not in it, is exit code 3.
    /// A data directory it must not use (another node's, or written when
    /// the cluster file listed other participants) is refused: exit 1.
    /// Default log level: info.
    ///
    /// Example (first start; later starts without --init):
    ///
    /// twopc participant --config cluster.toml --id p1 --data-dir /var/lib/twopc/p1 --init
    #[command(after_help = LOG_HELP)]
    Participant(ServerArgs),

    /// Run one coordinator (runs transactions, keeps the decision log).
    ///
    /// Listens on the address the cluster file gives this id and serves
    /// until a fatal error (exit code 1, with `error: ...` on stderr); a
    /// cluster file it cannot read, or an --id not in it, is exit code 3.
    /// A data directory it must not use (another node's, or written when
    /// the cluster file listed other participants) is refused: exit 1.
    /// Default log level: info.
    ///
    /// Example (first start; later starts without --init):
    ///
    /// twopc coordinator --config cluster.toml --id c1 --data-dir /var/lib/twopc/c1 --init
    #[command(after_help = LOG_HELP)]
    Coordinator(ServerArgs),

    /// Run one transaction: reads, conditions and writes, then commit.
    ///
    /// OPs run in order: `get K` reads K inside the transaction (its version
    /// is validated at commit, so a committed transaction is serializable;
    /// it sees this transaction's own earlier writes); `put K V`,
    /// `put-file K FILE` (FILE's bytes as the value, up to 1 MiB), `del K`,
    /// `expect K V` (commit only if K's committed value is V) and
    /// `expect-absent K` (commit only if K is absent; conditions check the
    /// committed value, not this transaction's own writes) are buffered and sent
    /// at commit. Prints `committed TXID`, `aborted TXID: REASON` or
    /// `outcome unknown TXID: DETAIL`, then `K = V` / `K = (absent)` for each
    /// get. Exit code 0 committed, 1 aborted (whatever the cause), 2
    /// outcome unknown, 3 usage error or refused request, 4 nothing done
    /// and trying again later may succeed (coordinator unreachable,
    /// overloaded, a `get` failing: its participant unavailable or the
    /// key's writer still in doubt). With --json an abort also says
    /// `"retryable"`: whether running it again may commit (a lock conflict,
    /// a stale read, a participant unavailable at prepare: yes; a failed
    /// `expect`: no). Default log level: warn (tarpc: off).
    ///
    /// Examples (TWOPC_COORDINATOR=127.0.0.1:7000 stands for --coordinator):
    ///
    /// twopc txn --coordinator 127.0.0.1:7000 put alice 100 put erin 50
    ///
    /// twopc txn --coordinator 127.0.0.1:7000 --json get erin expect erin 50 put erin 60
    #[command(after_help = LOG_HELP)]
    Txn(txn_cmd::TxnArgs),

    /// Read committed values (outside any transaction, taking no locks).
    ///
    /// Each key is read at its own participant: keys of several
    /// participants are not one snapshot (a get of both sides of a
    /// transfer being committed may see one side of it); `twopc txn get A
    /// get B` reads them together, validated at commit. Prints `K = V` or `K = (absent)` for each key (`--json` for
    /// machines, `--raw` for one value's exact bytes). Exit code 0, 1 if
    /// `--raw`'s key is absent, 3 on a usage error or refused request, 4
    /// when trying again later may succeed (coordinator unreachable,
    /// participant unavailable, overloaded, a key's writer still in doubt),
    /// 5 if the output could not be written to stdout. Default log level:
    /// warn (tarpc: off).
    ///
    /// Example: twopc get --coordinator 127.0.0.1:7000 --json alice erin
    #[command(after_help = LOG_HELP)]
    Get(txn_cmd::GetArgs),

    /// Ask what happened to a transaction (after "outcome unknown").
    ///
    /// Asks the coordinator that minted TXID (found among --coordinator's
    /// list); one that has forgotten it asks its participants. Prints
    /// `TXID: committed`, `aborted` or `pending` (`--json` for machines);
    /// `--wait 1m` asks again every 0.5 s while it is pending or its
    /// coordinator cannot be reached. Asking about an id that was begun but
    /// never committed aborts it for good. An id of its coordinator's
    /// current run newer than any it minted is an unknown transaction
    /// (exit 3); an older one
    /// of an epoch its log ran, with no record, is aborted (presumed abort:
    /// its participants are asked, and fenced so that it can never commit),
    /// even if that id was never used; but one whose outcome it dropped
    /// from memory (it keeps its latest 100,000), if no participant
    /// remembers it either, is `TXID: unknown` (exit 2: read its keys to
    /// tell). One of an epoch its log never ran
    /// (the coordinator was started on another data directory, or another
    /// process had its id; or a later epoch than its current one: also a
    /// mistyped id) prints `TXID: unknown` (exit 2): only the other
    /// log knows; unless a participant applied it (an operator forced it
    /// with `twopc admin resolve --commit --force`): committed. A commit an operator then forced to abort at some of its
    /// participants (`twopc admin resolve --force` while the coordinator
    /// was down) prints `TXID: mixed` (exit 1), naming them (with
    /// --json in `forced_abort_at`).
    /// Exit code 0 committed, 1 aborted or mixed, 2 still pending or unknown here,
    /// 3 usage error or an unknown transaction, 4 the coordinator could not
    /// be asked (try again later, or --wait). Default log level: warn
    /// (tarpc: off).
    ///
    /// Example: twopc outcome --coordinator 127.0.0.1:7000 --wait 1m c1.91561234567.4
    #[command(after_help = LOG_HELP)]
    Outcome(outcome_cmd::OutcomeArgs),

    /// Operate a cluster: see and resolve every in-doubt transaction.
    ///
    /// `status`, `in-doubt`, `show TXID`, `heuristics` and `locks` only
    /// look; `recover` re-drives every logged decision now; `resolve TXID
    /// --commit|--abort` forces an outcome when the coordinator is lost
    /// (checked against the coordinator's decision first); `forget TXID`
    /// clears a forced outcome once dealt with (only a settled one, unless
    /// --force). Every subcommand is idempotent and safe while the cluster
    /// serves traffic. Needs the admin token.
    #[command(after_help = admin::ADMIN_AFTER_HELP)]
    Admin(admin::AdminArgs),

    /// Measure throughput and latency against the fsync floor, optionally
    /// side by side with two-phase commit over PostgreSQL.
    ///
    /// Measures the floor (raw fsync on the data directory's filesystem, a
    /// loopback round trip) and the 2PC skeleton (the same messages and
    /// fsyncs with nothing else: one thread per server, blocking TCP, no
    /// logic; what this machine allows any implementation), launches its own cluster of this binary (1
    /// coordinator + N participants on free loopback ports, data in a temp
    /// dir; or, with `--cluster FILE`, targets a running cluster), and runs
    /// closed-loop clients at each concurrency level: a
    /// warm-up, then a measured window. Prints a table per level:
    /// commits/s, abort rate, p50/p99/p99.9 latency (HDR histogram), fsyncs
    /// per commit, commits per fsync at each participant, CPU, the ratio of
    /// p50 to the floor and to the peer; then peak memory and issue 6's
    /// targets. `--peer postgres` starts N PostgreSQL clusters (fsync on,
    /// synchronous_commit on; found on PATH or in /usr/lib/postgresql/*/bin;
    /// run as the `postgres` user when root) and drives the same workload
    /// with PREPARE TRANSACTION / COMMIT PREPARED and a synced decision log.
    /// Everything started is stopped and removed at the end, or on Ctrl-C,
    /// SIGTERM or SIGHUP. Exit code 0 after a run (whatever the numbers), 1 if it
    /// failed or was stopped, 3 on a usage error (said before anything
    /// runs, an unwritable --plot included), 5 if the report could not be
    /// written to stdout. Default log level: warn (tarpc: off).
    ///
    /// Examples: `twopc bench --peer postgres --plot bench.svg`;
    /// `twopc bench --cluster twopc-data/cluster.toml --concurrency 1,64`.
    #[command(after_help = LOG_HELP)]
    Bench(bench_cmd::BenchArgs),

    /// Run a cluster under faults with a workload, then check that no
    /// invariant broke.
    ///
    /// Starts 1+ coordinators and N participants of this binary on loopback
    /// (a temp dir, or --dir), each behind a fault-injecting TCP proxy on
    /// every link; runs concurrent clients (bank or atomic-set) for
    /// --duration while faults scheduled from --seed hit (kill, pause,
    /// partition, delay, drop, crash); then heals everything, waits for
    /// recovery (bounded by --recovery-timeout) and checks the recorded
    /// history against the final state. Prints a summary (or --json) with
    /// the faults injected, transactions by outcome, violations with their
    /// evidence, and the time every in-doubt transaction took to resolve
    /// after heal; a failure prints the command replaying its seed. Exit
    /// code 0 clean, 1 an invariant was violated (or the run was stopped
    /// by Ctrl-C, SIGTERM or SIGHUP, which stop its cluster too), 2 inconclusive (a
    /// --sabotage run that found no violation: it proves nothing), 3 usage
    /// error or the harness could not run, 5 a clean run whose report
    /// could not be written to stdout. Default log level: error (tarpc:
    /// off).
    ///
    /// Example: twopc chaos --seed 7 --duration 30s --workload atomic-set
    #[command(after_help = chaos_cmd::CHAOS_AFTER_HELP)]
    Chaos(chaos_cmd::ChaosArgs),
    //
    // EXTENSION POINT: the `admin`, `chaos` and `bench` subcommands are added
    // here by their owners (one variant each, with its own module and its own
    // arm in `main`'s dispatch).
}

/// Where a server's cluster file, identity and data are.
#[derive(Debug, Args)]
struct ServerArgs {
    /// The cluster file (TOML) listing every coordinator and participant and
    /// their addresses; all processes of a cluster must use the same one.
    #[arg(long, value_name = "CLUSTER.toml")]
    config: PathBuf,
    /// This server's id in the cluster file (e.g. p1 or c1); it decides the
    /// address it listens on.
    #[arg(long, value_name = "ID")]
    id: String,
    /// Directory of this server's durable state (RocksDB). Restarting on
    /// the same directory recovers from it.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Begin a new, empty log in --data-dir (created if missing) if it
    /// holds none: this server's first start, or a start after its data
    /// was given up for good. Without it such a directory is refused, so a
    /// mistyped --data-dir cannot start this server on an empty log (a
    /// participant would serve its committed keys as absent). Harmless when
    /// the directory holds a log (it is recovered as usual).
    #[arg(long)]
    init: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if matches!(cli.command, Command::Txn(_) | Command::Get(_) | Command::Outcome(_) | Command::Admin(_)) {
        end_quietly_on_a_closed_pipe();
    }
    if matches!(cli.command, Command::Participant(_) | Command::Coordinator(_)) {
        fail_writes_over_the_file_size_limit();
    }
    let runtime = match server_or_client_runtime(&cli.command) {
        Ok(runtime) => runtime,
        Err(e) => {
            say_err!("twopc: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // Where the exit code says what was printed (a read, a report), an
    // output that could not be written is a failure; `txn` and `outcome`
    // keep the transaction's outcome as their exit code.
    // (A clean chaos run whose report was lost is not clean to a script
    // that keeps it: `chaos --json > report || echo violated`.)
    let output_is_the_result =
        matches!(cli.command, Command::Get(_) | Command::Admin(_) | Command::Bench(_) | Command::Chaos(_));
    let code = runtime.block_on(run(cli));
    match say::stdout_failure() {
        Some(e) => {
            say_err!("twopc: could not write the output to stdout: {e}");
            ExitCode::from(if code == EXIT_OK && output_is_the_result { EXIT_OUTPUT } else { code })
        }
        None => ExitCode::from(code),
    }
}

/// A server's write past the file-size limit (`ulimit -f`, systemd's
/// `LimitFSIZE`) fails with "File too large", and the server stops saying
/// so, instead of being killed by SIGXFSZ without a word in its log.
fn fail_writes_over_the_file_size_limit() {
    // SAFETY: setting a signal's disposition to ignore, before any thread
    // is started.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// A report piped into `head` ends the command the Unix way, killed by
/// SIGPIPE, instead of panicking in `println!` (Rust ignores SIGPIPE, so a
/// write to a closed pipe fails). Only for the client commands: they have
/// no children to stop and nothing to clean up. Only a closed stdout does
/// that: a SIGPIPE from a socket whose coordinator died mid-send is
/// ignored, and the write fails as a connection error (with SIGPIPE simply
/// back to its default, `txn` died then with exit 141 and no output: no
/// txid to ask about, and no word on whether anything was sent).
fn end_quietly_on_a_closed_pipe() {
    extern "C" fn on_sigpipe(_: libc::c_int) {
        let mut stdout = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: poll, signal and raise are async-signal-safe; `stdout`
        // lives for the call. A pipe whose reader is gone reports POLLERR.
        unsafe {
            if libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & libc::POLLERR != 0 {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
    }
    // SAFETY: installing a handler (itself async-signal-safe) before any
    // thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

/// A server runs on one thread (plus its WAL writer thread): every message
/// of a commit then stays on that thread, with no wake-ups between worker
/// threads. Measured with `twopc bench` on 2 vCPUs against tokio's
/// two-worker default: p50 at concurrency 1 7% lower, throughput at
/// concurrency 64 20% higher. Everything else (clients, the benchmark, the
/// chaos harness, `local`'s supervisor) uses the multi-threaded runtime.
fn server_or_client_runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Participant(_) | Command::Coordinator(_) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}

async fn run(cli: Cli) -> u8 {
    init_logging(match cli.command {
        // tarpc logs nothing at info, but builds a span for every RPC at
        // that level: 5% of a commit's latency at concurrency 1. Its
        // warnings and errors ("DeadlineExceeded") name no peer and no
        // txid; the servers log those failures themselves, with both.
        Command::Local(_) | Command::Participant(_) | Command::Coordinator(_) => "info,tarpc=off",
        // Client commands say what went wrong themselves (e.g. "outcome
        // unknown"); tarpc's own lines about the same call are noise there.
        Command::Txn(_) | Command::Get(_) | Command::Outcome(_) | Command::Admin(_) | Command::Bench(_) => {
            "warn,tarpc=off"
        }
        // The harness's own deadlines fail client calls on purpose; tarpc
        // logs each at error.
        Command::Chaos(_) => "error,tarpc=off",
    });
    match cli.command {
        Command::Local(args) => local::run(args).await,
        Command::Participant(args) => {
            memory::give_back_freed_memory();
            run_participant(args).await
        }
        Command::Coordinator(args) => {
            memory::give_back_freed_memory();
            run_coordinator(args).await
        }
        Command::Txn(args) => txn_cmd::run_txn(args).await,
        Command::Get(args) => txn_cmd::run_get(args).await,
        Command::Outcome(args) => outcome_cmd::run_outcome(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Bench(args) => bench_cmd::run(args).await,
        Command::Chaos(args) => chaos_cmd::run(args).await,
    }
}

/// Reports a command-line error. Help and version requests are not errors.
/// With `--json` anywhere on the line, stdout still gets one JSON object.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::from(EXIT_OK);
    }
    if std::env::args_os().any(|a| a == "--json") {
        out!("{}", output::error_json(&one_line(&e.render().to_string())));
    }
    let _ = e.print();
    ExitCode::from(EXIT_USAGE)
}

/// clap's message without the usage section, the pointer to `--help` and
/// the `error: ` prefix, on one line.
fn one_line(rendered: &str) -> String {
    let message = rendered.split("\n\nUsage:").next().unwrap_or_default();
    let message = message.split("\n\nFor more information").next().unwrap_or_default();
    let message = message.trim().strip_prefix("error: ").unwrap_or(message.trim());
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Logs to stderr, filtered by RUST_LOG, or `default` when it is unset or
/// unparsable. tarpc's lines stay off unless RUST_LOG names tarpc: at
/// error level they say "DeadlineExceeded" with no txid and no peer
/// (trial 16A, with RUST_LOG=info), and the caller logs the same failure
/// with both.
fn init_logging(default: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if spec.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(default),
        Ok(spec) if spec.contains("tarpc") => tracing_subscriber::EnvFilter::try_new(spec),
        Ok(spec) => tracing_subscriber::EnvFilter::try_new(format!("{spec},tarpc=off")),
        Err(_) => tracing_subscriber::EnvFilter::try_new(default),
    };
    let filter = filter.unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr on a full disk, or a
        // pipe whose reader left) is dropped. Reporting it would use
        // `eprintln!`, which panics: inside whatever task was logging,
        // silently ending e.g. a commit's retries.
        .log_internal_errors(false)
        .init();
}

/// Loads the cluster file and checks that `id` is a `role` in it.
fn load_server_config(args: &ServerArgs, role: &str) -> Result<ClusterConfig, String> {
    twopc_common::fault::check_env()?;
    let cluster = ClusterConfig::load(&args.config).map_err(|e| e.to_string())?;
    let (entries, others, other_role) = if role == "participant" {
        (&cluster.participant, &cluster.coordinator, "coordinator")
    } else {
        (&cluster.coordinator, &cluster.participant, "participant")
    };
    if !entries.iter().any(|e| e.id == args.id) {
        let known: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let hint = if others.iter().any(|e| e.id == args.id) {
            format!(": {} is a {other_role} there (run `twopc {other_role}`)", args.id)
        } else {
            String::new()
        };
        return Err(format!(
            "no {role} with id {:?} in {} ({role}s: {}){hint}",
            args.id,
            args.config.display(),
            known.join(", ")
        ));
    }
    Ok(cluster)
}

async fn run_participant(args: ServerArgs) -> u8 {
    let cluster = match load_server_config(&args, "participant") {
        Ok(c) => c,
        Err(e) => return refuse(&e),
    };
    let opts = twopc_participant::ParticipantOptions { id: args.id, cluster, data_dir: args.data_dir, init: args.init };
    match twopc_participant::start(opts, None).await {
        Ok(running) => fail(&signals::serve_until_stopped(running).await),
        Err(e) => fail(&e.to_string()),
    }
}

async fn run_coordinator(args: ServerArgs) -> u8 {
    let cluster = match load_server_config(&args, "coordinator") {
        Ok(c) => c,
        Err(e) => return refuse(&e),
    };
    let opts = twopc_coordinator::CoordinatorOptions { id: args.id, cluster, data_dir: args.data_dir, init: args.init };
    match twopc_coordinator::start(opts, None).await {
        Ok(running) => fail(&signals::serve_until_stopped(running).await),
        Err(e) => fail(&e.to_string()),
    }
}

/// Prints `error: ...` on one line (a multi-line message, such as a TOML
/// parse error, is joined with "; "); returns exit code 1.
fn fail(message: &str) -> u8 {
    say_err!("error: {}", one_line_message(message));
    EXIT_FAILED
}

/// As [`fail`], for a cluster file or `--id` that cannot be used: exit
/// code 3 (a usage error, as `admin` says of the same file).
fn refuse(message: &str) -> u8 {
    fail(message);
    EXIT_USAGE
}

fn one_line_message(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_socket_closed_by_its_peer_is_a_write_error_not_a_death_by_sigpipe() {
        // Found by a user: `txn` died with exit 141 and no output when its
        // coordinator was killed while a large commit was being sent.
        // (Sockets are written with writev, as tokio's framed writes do:
        // unlike std's send, it has no MSG_NOSIGNAL.)
        use std::os::fd::AsRawFd;
        end_quietly_on_a_closed_pipe();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(theirs);
        let bytes = [0u8; 64];
        let iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        // SAFETY: one valid iovec over `bytes`, which outlives the call.
        let written = unsafe { libc::writev(ours.as_raw_fd(), &iov, 1) };
        let err = std::io::Error::last_os_error();
        assert_eq!((written, err.kind()), (-1, std::io::ErrorKind::BrokenPipe), "{err}");
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_and_flag_has_help() {
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                if arg.is_positional() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} --{} has no help", arg.get_id());
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no help", sub.get_name());
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "twopc");
    }

    #[test]
    fn server_errors_are_one_line() {
        assert_eq!(
            one_line_message("bad file: invalid string\nexpected `\"`\n"),
            "bad file: invalid string; expected `\"`"
        );
        assert_eq!(one_line_message("plain"), "plain");
    }

    #[test]
    fn usage_errors_in_json_are_the_message_alone() {
        for line in [
            vec!["twopc", "bench", "--json", "--concurrency", "x"],
            vec!["twopc", "bench", "--json", "--no-such-flag"],
            vec!["twopc", "outcome", "--json"],
        ] {
            let e = Cli::try_parse_from(&line).unwrap_err();
            let message = one_line(&e.render().to_string());
            assert!(!message.is_empty() && !message.starts_with("error"), "{line:?}: {message}");
            assert!(!message.contains("--help") && !message.contains("Usage"), "{line:?}: {message}");
        }
    }

    #[test]
    fn flags_after_the_first_op_are_taken_literally() {
        let cli = Cli::try_parse_from(["twopc", "txn", "--coordinator", "h:1", "put", "k", "-1"]).unwrap();
        let Command::Txn(args) = cli.command else { panic!("not txn") };
        assert_eq!(args.ops, ["put", "k", "-1"]);
    }
}
