//! `twopc outcome TXID`: what happened to a transaction, for whoever was
//! told "outcome unknown" (or a script that wants to wait until it is
//! decided). Asks the coordinator that minted it; one that has forgotten
//! the transaction asks its participants.

use crate::duration::parse_duration;
use crate::output;
use crate::say::out;
use crate::say::say_err;
use crate::txn_cmd::{connect, error, failure};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN};
use clap::Args;
use std::time::{Duration, Instant};
use twopc_common::client::{Client, ClientError};
use twopc_common::txn::OutcomeStatus;
use twopc_common::{ServiceError, TxnId};

/// With `--wait`, how often a pending transaction is asked about again.
pub const OUTCOME_POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct OutcomeArgs {
    /// Address of a coordinator (`twopc local` prints it: 127.0.0.1:7000
    /// unless given --base-port), or several, comma-separated: the one
    /// that minted TXID is found by asking.
    #[arg(long, value_name = "HOST:PORT[,..]", env = "TWOPC_COORDINATOR", value_parser = twopc_common::address::host_port_list)]
    pub coordinator: String,
    /// Ask again every 0.5 s while the transaction is pending, its
    /// coordinator cannot be reached or cannot know it (started on another
    /// data directory), for at most this long (e.g. 30s,
    /// 2m); without it, ask once.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, value_name = "DURATION")]
    pub wait: Option<Duration>,
    /// Print exactly one JSON object on stdout instead of a line:
    /// {"txid": "...", "outcome": "committed"|"aborted"|"pending"|"unknown"|"mixed"}
    /// ("unknown": the coordinator runs on a log that never ran the
    /// txid's epoch, or it dropped that outcome from memory and no
    /// participant remembers it; "mixed": committed, but an operator forced abort at
    /// some participants); on a usage error {"error": "..."}, on a failed
    /// request {"error": "...", "retryable": true|false}.
    #[arg(long)]
    pub json: bool,
    /// The transaction id, as `twopc txn` printed it (e.g. c1.1.19).
    #[arg(value_name = "TXID")]
    pub txid: String,
}

/// The least time the first question gets, whatever `--wait` says.
const FIRST_QUESTION_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// `twopc outcome`: returns the exit code.
pub async fn run_outcome(args: OutcomeArgs) -> u8 {
    let txid: TxnId = match args.txid.parse() {
        Ok(txid) => txid,
        Err(e) => return error(args.json, &format!("{:?} is not a transaction id: {e}", args.txid)),
    };
    let deadline = args.wait.map(|wait| Instant::now() + wait);
    let mut first_question_until = Instant::now() + FIRST_QUESTION_TIME;
    // A command stopped (SIGSTOP, a stalled machine) past its --wait asks
    // once more on resuming rather than blame the coordinator (trial 19A).
    twopc_common::stall::watch();
    let mut asked_again_after_a_stall = false;
    let time_left = || deadline.is_some_and(|d| Instant::now() + OUTCOME_POLL_INTERVAL < d);
    let mut client = None;
    let mut said_waiting = false;
    let status = loop {
        let asking = async {
            match &client {
                Some(client) => ask(client, &txid).await,
                None => match connect(&args.coordinator).await {
                    Ok(connected) => {
                        let answer = ask(&connected, &txid).await;
                        client = Some(connected);
                        answer
                    }
                    Err(e) => Err(Ask::Unreachable(e.to_string())),
                },
            }
        };
        // --wait bounds the whole command, a question to a coordinator
        // that does not answer (a paused one) included; the first question
        // gets at least FIRST_QUESTION_TIME (`--wait 0s` failed without
        // asking anything).
        let asked_at = Instant::now();
        let answer = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.max(first_question_until).into(), asking).await {
                Ok(answer) => answer,
                Err(_) => Err(Ask::Unreachable(format!(
                    "no answer from the coordinator within --wait {:?}",
                    args.wait.unwrap_or_default()
                ))),
            },
            None => asking.await,
        };
        // Not answered while this command stood still (its own deadlines,
        // or the connection's, ran out meanwhile): asked once more.
        let unanswered = matches!(answer, Err(Ask::Unreachable(_)));
        if unanswered && !asked_again_after_a_stall && twopc_common::stall::stood_still_since(asked_at) {
            asked_again_after_a_stall = true;
            first_question_until = Instant::now() + FIRST_QUESTION_TIME;
            continue;
        }
        match answer {
            Ok(OutcomeStatus::Pending) if time_left() => {}
            Ok(status) => break status,
            // While its coordinator is down (why the outcome is unknown,
            // most often), --wait waits for it to come back.
            Err(Ask::Unreachable(e)) if time_left() => {
                if !said_waiting {
                    say_err!("{e}; asking again every {OUTCOME_POLL_INTERVAL:?} until --wait runs out");
                    said_waiting = true;
                }
            }
            // Its coordinator runs on a log that cannot know (another data
            // directory): in doubt, not an error; it may come back.
            Err(Ask::NotKnownHere(e)) if time_left() => {
                if !said_waiting {
                    say_err!("{e}\nasking again every {OUTCOME_POLL_INTERVAL:?} until --wait runs out");
                    said_waiting = true;
                }
            }
            Err(Ask::NotKnownHere(e) | Ask::Forgotten(e)) => {
                if args.json {
                    out!("{}", output::outcome_json(&txid.to_string(), "unknown"));
                } else {
                    out!("{txid}: unknown");
                }
                say_err!("{e}");
                return EXIT_UNKNOWN;
            }
            Err(Ask::Mixed { message: e, forced_abort_at }) => {
                if args.json {
                    // The participants to repair, for a monitor (trial 19C:
                    // only on stderr).
                    let json = serde_json::json!({
                        "txid": txid.to_string(), "outcome": "mixed", "forced_abort_at": forced_abort_at,
                    });
                    out!("{json}");
                } else {
                    out!("{txid}: mixed");
                }
                say_err!(
                    "{e}: the coordinator decided commit, and an operator forced abort there; \
                     `twopc admin show {txid}` tells each participant's state"
                );
                return EXIT_FAILED;
            }
            Err(Ask::Unreachable(e)) => return failure(args.json, &ClientError::Connection(e)),
            Err(Ask::Failed(e)) => return failure(args.json, &e),
        }
        tokio::time::sleep(OUTCOME_POLL_INTERVAL).await;
    };
    let (word, code) = match status {
        OutcomeStatus::Committed => ("committed", EXIT_OK),
        OutcomeStatus::Aborted => ("aborted", EXIT_FAILED),
        OutcomeStatus::Pending => ("pending", EXIT_UNKNOWN),
    };
    if args.json {
        out!("{}", output::outcome_json(&txid.to_string(), word));
    } else {
        out!("{txid}: {word}");
    }
    code
}

/// Why asking failed: the coordinator could not be reached (worth asking
/// again while waiting), or it answered with an error.
enum Ask {
    Unreachable(String),
    /// The coordinator's log never ran the txid's epoch: the outcome is
    /// in another log (see `ServiceError::ForeignEpoch`).
    NotKnownHere(String),
    /// Forgotten (see `ServiceError::Forgotten`): asking again changes
    /// nothing.
    Forgotten(String),
    /// Committed by the coordinator, forced to abort by an operator at
    /// some participants (see `ServiceError::HeuristicMixed`).
    Mixed {
        message: String,
        forced_abort_at: Vec<String>,
    },
    Failed(ClientError),
}

async fn ask(client: &Client, txid: &TxnId) -> Result<OutcomeStatus, Ask> {
    client.outcome(txid).await.map_err(|e| match e {
        ClientError::Connection(e) => Ask::Unreachable(e),
        ClientError::Service(e @ ServiceError::ForeignEpoch { .. }) => Ask::NotKnownHere(e.to_string()),
        ClientError::Service(e @ ServiceError::Forgotten { .. }) => Ask::Forgotten(e.to_string()),
        // The coordinator names them joined by ", " (`forced_against`).
        ClientError::Service(ref e @ ServiceError::HeuristicMixed { ref participant, .. }) => Ask::Mixed {
            message: e.to_string(),
            forced_abort_at: participant.split(", ").map(str::to_string).collect(),
        },
        other => Ask::Failed(other),
    })
}
