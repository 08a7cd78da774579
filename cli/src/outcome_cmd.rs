//! `twopc outcome TXID`: what happened to a transaction, for whoever was
//! told "outcome unknown" (or a script that wants to wait until it is
//! decided). Asks the coordinator that minted it; one that has forgotten
//! the transaction asks its participants.

use crate::duration::parse_duration;
use crate::output;
use crate::txn_cmd::{connect, error};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN};
use clap::Args;
use std::time::{Duration, Instant};
use twopc_common::txn::OutcomeStatus;
use twopc_common::TxnId;

/// With `--wait`, how often a pending transaction is asked about again.
pub const OUTCOME_POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct OutcomeArgs {
    /// Address of a coordinator (`twopc local` prints it; its default is
    /// 127.0.0.1:7000), or several, comma-separated: the one that minted
    /// TXID is found by asking.
    #[arg(long, value_name = "HOST:PORT[,..]", env = "TWOPC_COORDINATOR")]
    pub coordinator: String,
    /// Ask again every 0.5 s while the transaction is pending, for at most
    /// this long (e.g. 30s, 2m); without it, ask once.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub wait: Option<Duration>,
    /// Print exactly one JSON object on stdout instead of a line:
    /// {"txid": "...", "outcome": "committed"|"aborted"|"pending"}; on a
    /// usage or connection error {"error": "..."}.
    #[arg(long)]
    pub json: bool,
    /// The transaction id, as `twopc txn` printed it (e.g. c1.1.19).
    #[arg(value_name = "TXID")]
    pub txid: String,
}

/// `twopc outcome`: returns the exit code.
pub async fn run_outcome(args: OutcomeArgs) -> u8 {
    let txid: TxnId = match args.txid.parse() {
        Ok(txid) => txid,
        Err(e) => return error(args.json, &format!("{:?} is not a transaction id: {e}", args.txid)),
    };
    let client = match connect(&args.coordinator).await {
        Ok(client) => client,
        Err(e) => return error(args.json, &e),
    };
    let deadline = args.wait.map(|wait| Instant::now() + wait);
    let status = loop {
        match client.outcome(&txid).await {
            Ok(OutcomeStatus::Pending) if deadline.is_some_and(|d| Instant::now() + OUTCOME_POLL_INTERVAL < d) => {
                tokio::time::sleep(OUTCOME_POLL_INTERVAL).await
            }
            Ok(status) => break status,
            Err(e) => return error(args.json, &e.to_string()),
        }
    };
    let (word, code) = match status {
        OutcomeStatus::Committed => ("committed", EXIT_OK),
        OutcomeStatus::Aborted => ("aborted", EXIT_FAILED),
        OutcomeStatus::Pending => ("pending", EXIT_UNKNOWN),
    };
    if args.json {
        println!("{}", output::outcome_json(&txid.to_string(), word));
    } else {
        println!("{txid}: {word}");
    }
    code
}
