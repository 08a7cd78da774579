//! `twopc admin`: the operator's tool for in-doubt transactions.
//!
//! # Layout
//! - `mod.rs`: arguments, dispatch, exit codes.
//! - `nodes.rs`: reaching every process of the cluster with the token.
//! - `inspect.rs`: `status`, `in-doubt`, `show`, `locks` (read-only).
//! - `act.rs`: `recover` and `resolve` (they change state).
//! - `forget.rs`: `forget` (drops settled forced outcomes).
//! - `render.rs`: tables and durations for humans.

mod act;
mod forget;
mod inspect;
mod nodes;
mod render;

use crate::say::out;
use crate::say::say_err;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Exit code: done (nothing refused, nothing left).
pub const ADMIN_OK: u8 = 0;
/// Exit code: refused for safety, or something is left unresolved.
pub const ADMIN_REFUSED: u8 = 1;
/// Exit code: no process knows the transaction (or it is not in doubt).
pub const ADMIN_UNKNOWN_TXN: u8 = 2;
/// Exit code: usage error, malformed txid, or a process could not be used.
pub const ADMIN_USAGE: u8 = 3;
/// Exit code of a report with a process that could not be asked (shown
/// in the report): the same as [`ADMIN_USAGE`].
pub const ADMIN_INCOMPLETE: u8 = ADMIN_USAGE;
/// Exit code: the admin token was missing or wrong.
pub const ADMIN_UNAUTHORISED: u8 = 4;

pub const ADMIN_AFTER_HELP: &str = "\
The admin token comes from TWOPC_ADMIN_TOKEN, else from `admin_token` in the
cluster file (`twopc local` writes one). Every process compares it in
constant time; a wrong or missing token is refused and changes nothing.

Exit codes:
  0  done: a report (status, in-doubt, show, heuristics, locks) had an
     answer from every process, whatever it lists; resolve, forget and
     recover: nothing refused, nothing left in doubt
  1  refused for safety (resolve, forget), or transactions are still in doubt (recover)
  2  unknown transaction (no process knows it, it is not in doubt, or nothing
     forced is recorded for it: forget)
  3  usage error, malformed txid, or a process could not be reached
  4  the admin token was missing or wrong
  5  the report could not be written to stdout";

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print one JSON object instead of tables (stable field names,
    /// documented in the README).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// How to find the cluster: one of the two, before or after the
/// subcommand (a required group was checked before the subcommand's own
/// arguments were read, so `admin status --config F` was refused; trial
/// 19C). Neither is a usage error from `Cluster::connect`.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct Target {
    /// The cluster file (also the source of the admin token if
    /// TWOPC_ADMIN_TOKEN is unset). `twopc local` writes DIR/cluster.toml.
    #[arg(long, value_name = "CLUSTER.toml", global = true)]
    pub config: Option<PathBuf>,
    /// A coordinator's address; the rest of the cluster is asked from it
    /// (the token must then come from TWOPC_ADMIN_TOKEN).
    #[arg(long, value_name = "HOST:PORT", global = true, value_parser = twopc_common::address::host_port)]
    pub coordinator: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Every process, reachable or not: role, epoch, in-doubt count, age of
    /// the oldest prepared transaction, locks held, heuristic decisions and
    /// mismatches.
    ///
    /// Example: twopc admin --config twopc-data/cluster.toml status
    Status,
    /// Every transaction prepared anywhere and not yet resolved: its
    /// participants and their states, the coordinator's logged decision if
    /// any, age, and locks held.
    ///
    /// A report: exit 0 whether or not it lists any. For a monitor, test
    /// the list: `twopc admin in-doubt --older-than 5s --json | jq -e
    /// '.in_doubt == []'` fails while one is stuck.
    ///
    /// Unanswered one-phase commits are listed too (their participant got
    /// the commit and has not answered: applied or not, it alone knows).
    InDoubt {
        /// List only transactions prepared at least this long ago (e.g.
        /// `5s` for monitoring: under load, younger ones are mostly in
        /// flight, not stuck); how many younger ones were left out is said.
        #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = crate::duration::parse_age, allow_hyphen_values = true)]
        older_than: std::time::Duration,
    },
    /// The full story of one transaction as every process's log knows it.
    ///
    /// Example: twopc admin --config twopc-data/cluster.toml show c1.91561234567.4
    Show {
        /// Transaction id, e.g. c1.3.17 (as printed by `twopc txn`).
        txid: String,
    },
    /// Run a recovery pass now (coordinators re-send undelivered commits,
    /// participants ask for every in-doubt outcome) and report what changed.
    ///
    /// Example: twopc admin --config twopc-data/cluster.toml recover --wait 30s
    Recover {
        /// How long to wait for transactions to resolve.
        #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::duration::parse_duration, allow_hyphen_values = true)]
        wait: std::time::Duration,
        /// Count only transactions prepared at least this long ago (by
        /// default 10 s, when a participant calls one stuck: every prepare
        /// deadline has passed): younger ones are mostly in flight, and
        /// are left out of "resolved" and "still in doubt" (how many is
        /// said). They are recovered all the same.
        #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::duration::parse_age, allow_hyphen_values = true)]
        older_than: std::time::Duration,
    },
    /// Force the outcome of an in-doubt transaction at its participants
    /// (heuristic resolution, for when the coordinator is lost).
    ///
    /// First asks the coordinator: if it logged a decision, that decision
    /// is applied and the opposite is refused unless --force; if it cannot
    /// be reached, resolve refuses unless --force (you take responsibility).
    /// A forced outcome is recorded in the participant's log as heuristic,
    /// with time and reason, and survives restarts. If the coordinator later
    /// holds the other decision, both sides report heuristic-mixed.
    ///
    /// Example: twopc admin --config twopc-data/cluster.toml resolve c1.91561234567.4 --abort --force --reason "c1 lost"
    #[command(group = clap::ArgGroup::new("outcome").required(true).args(["commit", "abort"]))]
    Resolve {
        /// Transaction id, e.g. c1.3.17.
        txid: String,
        /// Commit it.
        #[arg(long)]
        commit: bool,
        /// Abort it.
        #[arg(long)]
        abort: bool,
        /// Apply even against the coordinator's decision or without it.
        #[arg(long)]
        force: bool,
        /// Why (recorded in the participants' logs).
        #[arg(long, default_value = "forced by twopc admin resolve")]
        reason: String,
    },
    /// Every outcome an operator forced (`resolve`), at every participant:
    /// when, why, and whether it disagrees with the coordinator's decision
    /// (heuristic-mixed: the data of that transaction is not atomic, and
    /// needs an operator's repair).
    ///
    /// Example: twopc admin --config twopc-data/cluster.toml heuristics --json
    Heuristics,
    /// Forget the forced outcome of a transaction once you have dealt with
    /// it (checked, or repaired its data): every participant drops its
    /// heuristic record of TXID, and the coordinator its heuristic-mixed
    /// finding, so `status` and `heuristics` stop reporting it, and `twopc
    /// outcome` answers the coordinator's logged decision again (for a
    /// mixed commit: committed, whatever the forced participants hold).
    ///
    /// Refused without --force unless each forced outcome is settled: the
    /// mismatch is already recorded, or the coordinator's decision is the
    /// same one. Otherwise a decision still on its way could contradict it
    /// unnoticed (run `recover` first).
    ///
    /// Example: twopc admin --config twopc-data/cluster.toml forget c1.91561234567.4
    Forget {
        /// Transaction id, e.g. c1.3.17.
        txid: String,
        /// Forget even what is not settled: the participants drop their
        /// record, so a later mismatch is reported by the coordinator
        /// alone (`status` counts it, `heuristics` lists it), without the
        /// participant's reason or time.
        #[arg(long)]
        force: bool,
    },
    /// The lock table: which transaction holds which key, since when.
    ///
    /// Example: twopc admin --config twopc-data/cluster.toml locks --key alice
    Locks {
        /// Only this key.
        #[arg(long, value_name = "K")]
        key: Option<String>,
    },
}

/// An admin failure: the message and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
}

pub async fn run(args: AdminArgs) -> u8 {
    let json = args.json;
    let result = async {
        let cluster = nodes::Cluster::connect(&args.target).await?;
        match args.command {
            AdminCommand::Status => inspect::status(&cluster, json).await,
            AdminCommand::InDoubt { older_than } => inspect::in_doubt(&cluster, older_than, json).await,
            AdminCommand::Show { txid } => inspect::show(&cluster, &nodes::parse_txid(&txid)?, json).await,
            AdminCommand::Locks { key } => inspect::locks(&cluster, key, json).await,
            AdminCommand::Heuristics => inspect::heuristics(&cluster, json).await,
            AdminCommand::Forget { txid, force } => {
                forget::forget(&cluster, &nodes::parse_txid(&txid)?, force, json).await
            }
            AdminCommand::Recover { wait, older_than } => act::recover(&cluster, wait, older_than, json).await,
            AdminCommand::Resolve { txid, commit, abort: _, force, reason } => {
                act::resolve(&cluster, &nodes::parse_txid(&txid)?, commit, force, &reason, json).await
            }
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(f) => {
            if json {
                out!("{}", serde_json::json!({ "error": f.message }));
            }
            say_err!("error: {}", f.message);
            f.code
        }
    }
}
