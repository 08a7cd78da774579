//! `twopc txn` and `twopc get`: the client library behind a command line.
//!
//! `txn` parses its OPs strictly before connecting, runs them in order in
//! one transaction (gets read through the transaction, so their versions are
//! validated at commit), commits, and maps the result to an exit code.

use crate::output::{self, Read, TxnOutcome, TxnReport};
use crate::say::say_err;
use crate::say::{out, out_raw};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_RETRY, EXIT_UNKNOWN, EXIT_USAGE};
use clap::Args;
use std::io::Read as _;
use twopc_common::client::{Client, ClientError};
use twopc_common::limits::{MAX_OPS_PER_TXN, MAX_TXN_BYTES, MAX_VALUE_BYTES};
use twopc_common::txn::{check_key, check_value, TXN_BYTES_PER_OP};

/// The OP grammar, for error messages.
const OP_USAGE: &str = "put K V | put-file K FILE | del K | get K | expect K V | expect-absent K";

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Address of the coordinator that runs the transaction (`twopc local`
    /// prints it: 127.0.0.1:7000 unless given --base-port), or several,
    /// comma-separated: the first that can be reached runs it.
    #[arg(long, value_name = "HOST:PORT[,..]", env = "TWOPC_COORDINATOR", value_parser = twopc_common::address::host_port_list)]
    pub coordinator: String,
    /// Print exactly one JSON object on stdout instead of lines:
    /// {"txid": "...", "outcome": "committed"|"aborted"|"unknown",
    /// "reason": "..." or null, "reason_kind": "lock-conflict",
    /// "held-in-doubt", "stale-read", "condition-failed", … or null,
    /// "retryable": true|false, "reads": {"K": "V"
    /// or null}} (a value that is not UTF-8 is {"base64": "..."}; a key
    /// read twice, say before and after its own put, shows its last read:
    /// the lines without --json list every read in order); on a
    /// usage error {"error": "..."}, on a failed request {"error": "...",
    /// "retryable": true|false}.
    #[arg(long)]
    pub json: bool,
    /// The operations, run in order: put K V | put-file K FILE | del K |
    /// get K | expect K V | expect-absent K. `put-file` stores FILE's bytes
    /// as the value (for values too big for a command line, or binary; at
    /// most 1 MiB). Flags must come before the first OP: everything from the
    /// first OP on is taken literally (so values may start with '-'; an
    /// unknown flag before it is an error).
    #[arg(value_name = "OP", required = true, num_args = 1.., trailing_var_arg = true)]
    pub ops: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Address of the coordinator to read through (`twopc local` prints it:
    /// 127.0.0.1:7000 unless given --base-port), or several,
    /// comma-separated: the first that can be reached serves the read.
    #[arg(long, value_name = "HOST:PORT[,..]", env = "TWOPC_COORDINATOR", value_parser = twopc_common::address::host_port_list)]
    pub coordinator: String,
    /// Print exactly one JSON object on stdout instead of lines:
    /// {"reads": {"K": "V" or null}} (a value that is not UTF-8 is
    /// {"base64": "..."}); on a usage error {"error": "..."}, on a failed
    /// request {"error": "...", "retryable": true|false}.
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Write the value's bytes to stdout exactly as stored (no newline;
    /// binary-safe: `twopc get --raw photo > photo.jpg`; the lines show
    /// bytes that are not UTF-8 as `\xNN`, `--json` as base64). Takes one key;
    /// exit code 1 if it is absent.
    #[arg(long)]
    pub raw: bool,
    /// The keys to read. Flags must come before the first key; a flag after
    /// a key is refused (it would be read as a key). To read keys that
    /// start with '-', put them after `--`: `twopc get --coordinator C -- --raw`.
    #[arg(value_name = "K", required = true, num_args = 1.., trailing_var_arg = true)]
    pub keys: Vec<String>,
}

/// One operation of a `txn` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Del { key: Vec<u8> },
    Get { key: Vec<u8> },
    Expect { key: Vec<u8>, value: Vec<u8> },
    ExpectAbsent { key: Vec<u8> },
}

impl Op {
    /// What it counts towards the transaction's byte limit (as
    /// `TxnOps::approx_bytes` counts it).
    fn approx_bytes(&self) -> usize {
        let (key, value) = match self {
            Op::Put { key, value } | Op::Expect { key, value } => (key, value.len()),
            Op::Del { key } | Op::Get { key } | Op::ExpectAbsent { key } => (key, 0),
        };
        key.len() + value + TXN_BYTES_PER_OP
    }
}

/// Parses `put K V | put-file K FILE | del K | get K | expect K V |
/// expect-absent K ...`, reading `put-file`'s files and checking the key
/// and value limits. The error is one line.
pub fn parse_ops(words: &[String]) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let op = match word.as_str() {
            "put" => {
                let key = key_arg(&mut words, "put", "put K V")?;
                Op::Put { key, value: value_arg(&mut words, "put", "put K V")? }
            }
            "put-file" => {
                let key = key_arg(&mut words, "put-file", "put-file K FILE")?;
                let path = words.next().ok_or("put-file: missing FILE (usage: put-file K FILE)")?;
                Op::Put { key, value: read_value_file(path)? }
            }
            "del" => Op::Del { key: key_arg(&mut words, "del", "del K")? },
            "get" => Op::Get { key: key_arg(&mut words, "get", "get K")? },
            "expect" => {
                let key = key_arg(&mut words, "expect", "expect K V")?;
                Op::Expect { key, value: value_arg(&mut words, "expect", "expect K V")? }
            }
            "expect-absent" => Op::ExpectAbsent { key: key_arg(&mut words, "expect-absent", "expect-absent K")? },
            flag if flag.starts_with('-') => {
                return Err(format!("unexpected {flag:?} where an OP should be: flags must come before the first OP"))
            }
            other => return Err(format!("unknown op {other:?}: expected {OP_USAGE}")),
        };
        ops.push(op);
        if ops.len() > MAX_OPS_PER_TXN {
            return Err(format!(
                "more than {MAX_OPS_PER_TXN} OPs in one transaction (every transaction's limit): split it into \
                 several transactions, each atomic on its own"
            ));
        }
    }
    if ops.is_empty() {
        return Err(format!("no OP given: expected {OP_USAGE}"));
    }
    // Checked here too, so that it is refused as a usage error with no
    // coordinator reached: unreachable, it was a retryable "cannot
    // connect" (trial 22B).
    let bytes: usize = ops.iter().map(Op::approx_bytes).sum();
    if bytes > MAX_TXN_BYTES {
        return Err(format!(
            "the OPs take about {bytes} bytes, over every transaction's limit of {MAX_TXN_BYTES} (keys and values, \
             plus {TXN_BYTES_PER_OP} per OP): split them into several transactions, each atomic on its own"
        ));
    }
    Ok(ops)
}

fn key_arg<'a>(words: &mut impl Iterator<Item = &'a String>, op: &str, usage: &str) -> Result<Vec<u8>, String> {
    let key = words.next().ok_or_else(|| format!("{op}: missing K (usage: {usage})"))?;
    check_key(key.as_bytes()).map_err(|e| format!("{op} {}: {e}", abbreviated(key)))?;
    Ok(key.as_bytes().to_vec())
}

/// `text` quoted, cut after [`SHOWN_CHARS`] characters: an error about a
/// 4 KiB key need not repeat it.
fn abbreviated(text: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

fn value_arg<'a>(words: &mut impl Iterator<Item = &'a String>, op: &str, usage: &str) -> Result<Vec<u8>, String> {
    let value = words.next().ok_or_else(|| format!("{op}: missing V (usage: {usage})"))?;
    check_value(value.as_bytes()).map_err(|e| format!("{op}: {e}"))?;
    Ok(value.as_bytes().to_vec())
}

/// The bytes of `path`, read no further than one byte past the value limit.
fn read_value_file(path: &str) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("put-file: cannot open {path:?}: {e}"))?;
    let mut value = Vec::new();
    file.take(MAX_VALUE_BYTES as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|e| format!("put-file: cannot read {path:?}: {e}"))?;
    if value.len() > MAX_VALUE_BYTES {
        // Only one byte past the limit was read: say the file's own size.
        let size = file_size(path).map_or_else(|| "more bytes than".to_string(), |n| format!("{n} bytes, over"));
        return Err(format!("put-file {path:?}: {size} the value limit of {MAX_VALUE_BYTES} bytes"));
    }
    check_value(&value).map_err(|e| format!("put-file {path:?}: {e}"))?;
    Ok(value)
}

/// The size of a regular file (a pipe's or a device's metadata says 0).
fn file_size(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// `twopc txn`: returns the exit code.
pub async fn run_txn(args: TxnArgs) -> u8 {
    let ops = match parse_ops(&args.ops) {
        Ok(ops) => ops,
        Err(e) => return error(args.json, &e),
    };
    match execute(&args.coordinator, ops).await {
        Ok(report) => {
            if args.json {
                out!("{}", report.json());
            } else {
                out_raw!("{}", report.human());
            }
            match report.outcome {
                TxnOutcome::Committed => EXIT_OK,
                TxnOutcome::Aborted { .. } => EXIT_FAILED,
                TxnOutcome::Unknown(_) => {
                    let coordinator = args.coordinator.split(',').next().unwrap_or_default();
                    say_err!(
                        "hint: it settles once its coordinator is up and reaches every participant; \
                         `twopc outcome --coordinator {coordinator} --wait 1m {}` waits for it",
                        report.txid
                    );
                    EXIT_UNKNOWN
                }
            }
        }
        Err(e) => failure(args.json, &e),
    }
}

/// Runs `ops` in one transaction. `Err` is a request or connection error
/// (the transaction did not commit); aborts and unknown outcomes are
/// reports.
async fn execute(coordinator: &str, ops: Vec<Op>) -> Result<TxnReport, ClientError> {
    let client = connect(coordinator).await?;
    let mut txn = client.begin().await?;
    let mut reads: Vec<Read> = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, value } => txn.put(&key, value),
            Op::Del { key } => txn.delete(&key),
            Op::Expect { key, value } => txn.expect(&key, value),
            Op::ExpectAbsent { key } => txn.expect_absent(&key),
            Op::Get { key } => match txn.get(&key).await {
                Ok(value) => reads.push((key, value)),
                Err(e) => {
                    if !matches!(e, ClientError::Connection(_)) {
                        // Best effort: the coordinator forgets it either way.
                        let _ = txn.abort().await;
                    }
                    return report_or_error(e, reads);
                }
            },
        }
    }
    match txn.commit().await {
        Ok(txid) => Ok(TxnReport { txid: txid.to_string(), outcome: TxnOutcome::Committed, reads }),
        Err(e) => report_or_error(e, reads),
    }
}

/// An abort or an unknown outcome is a result to report; anything else is
/// an error.
fn report_or_error(e: ClientError, reads: Vec<Read>) -> Result<TxnReport, ClientError> {
    let (txid, outcome) = match e {
        ClientError::Aborted { txid, reason } => {
            let retryable = reason.is_transient();
            (txid.to_string(), TxnOutcome::Aborted { reason: reason.to_string(), retryable, kind: reason.kind() })
        }
        ClientError::OutcomeUnknown { txid, detail } => (txid.to_string(), TxnOutcome::Unknown(detail)),
        other => return Err(other),
    };
    Ok(TxnReport { txid, outcome, reads })
}

/// `twopc get`: returns the exit code.
/// `get`'s own flags: given after a key they would be read as keys.
const GET_FLAGS: [&str; 5] = ["--json", "--raw", "--coordinator", "--help", "-h"];

pub async fn run_get(args: GetArgs) -> u8 {
    // After `--` every word is a key, as the user asked.
    let literal = std::env::args_os().any(|a| a == "--");
    let flag_like = |k: &&String| GET_FLAGS.contains(&k.split('=').next().unwrap_or(k));
    if let Some(flag) = args.keys.iter().find(flag_like).filter(|_| !literal) {
        return error(
            args.json,
            &format!(
                "{flag:?} after a key would be read as a key: flags must come before the first key \
                 (to read a key named {flag:?}, put `--` before the first key: `twopc get [FLAGS] -- {first} \
                 ...`; a `--` after a key is read as a key named \"--\")",
                first = args.keys[0],
            ),
        );
    }
    if args.raw && args.keys.len() != 1 {
        return error(false, &format!("--raw takes exactly one key, not {}", args.keys.len()));
    }
    let keys: Vec<Vec<u8>> = args.keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    // Checked before connecting: a key no server accepts is a usage error
    // (exit 3) whether or not the coordinator is up.
    if let Err(e) = twopc_common::txn::check_read_keys(&keys) {
        return failure(args.json, &ClientError::Invalid(e));
    }
    match read(&args.coordinator, keys).await {
        Ok(reads) if args.raw => write_raw(&args.keys[0], &reads[0].1),
        Ok(reads) => {
            if args.json {
                out!("{}", output::reads_json(&reads));
            } else {
                out_raw!("{}", output::reads_human(&reads));
            }
            EXIT_OK
        }
        Err(e) => failure(args.json, &e),
    }
}

/// A client of the coordinators listed in `--coordinator` (comma-separated).
pub(crate) async fn connect(coordinators: &str) -> Result<Client, ClientError> {
    let addrs: Vec<&str> = coordinators.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    Client::connect_any(&addrs).await
}

/// `get --raw`: the value's bytes on stdout; exit code 1 if absent.
fn write_raw(key: &str, value: &Option<Vec<u8>>) -> u8 {
    use std::io::Write as _;
    let Some(value) = value else {
        say_err!("{key} is absent");
        return EXIT_FAILED;
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(value).and_then(|()| stdout.flush()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            say_err!("error: cannot write the value to stdout: {e}");
            crate::EXIT_OUTPUT
        }
    }
}

async fn read(coordinator: &str, keys: Vec<Vec<u8>>) -> Result<Vec<Read>, ClientError> {
    let client = connect(coordinator).await?;
    let got = client.read(keys.clone()).await?;
    if got.len() != keys.len() {
        let short = format!("coordinator {coordinator} returned {} values for {} keys", got.len(), keys.len());
        return Err(ClientError::Connection(short));
    }
    Ok(keys.into_iter().zip(got).map(|(k, v)| (k, v.value)).collect())
}

/// Reports a usage or connection error; returns exit code 3.
pub(crate) fn error(json: bool, message: &str) -> u8 {
    say_error(json, message, false);
    EXIT_USAGE
}

/// Reports a request that failed (nothing committed): exit code 4 if
/// trying again later may succeed (a coordinator or participant that could
/// not be used for now, an overloaded server, a read's writer still in
/// doubt), else 3.
pub(crate) fn failure(json: bool, e: &ClientError) -> u8 {
    let retryable = e.is_retryable();
    say_error(json, &e.to_string(), retryable);
    if retryable {
        EXIT_RETRY
    } else {
        EXIT_USAGE
    }
}

fn say_error(json: bool, message: &str, retryable: bool) {
    if json {
        out!("{}", output::failure_json(message, retryable));
    } else {
        say_err!("error: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn every_op_parses() {
        let ops = parse_ops(&words("put a 1 del b get c expect d 4 expect-absent e")).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Put { key: b("a"), value: b("1") },
                Op::Del { key: b("b") },
                Op::Get { key: b("c") },
                Op::Expect { key: b("d"), value: b("4") },
                Op::ExpectAbsent { key: b("e") },
            ]
        );
    }

    #[test]
    fn values_are_taken_literally() {
        let ops = parse_ops(&words("put -k -1 put get put")).unwrap();
        assert_eq!(ops, vec![Op::Put { key: b("-k"), value: b("-1") }, Op::Put { key: b("get"), value: b("put") }]);
    }

    #[test]
    fn empty_values_are_allowed_but_empty_keys_are_not() {
        let ops = parse_ops(&["put".to_string(), "k".to_string(), String::new()]).unwrap();
        assert_eq!(ops, vec![Op::Put { key: b("k"), value: Vec::new() }]);
        let err = parse_ops(&["get".to_string(), String::new()]).unwrap_err();
        assert!(err.contains("empty key"), "{err}");
    }

    #[test]
    fn unknown_ops_are_refused() {
        let err = parse_ops(&words("put a 1 frob b")).unwrap_err();
        assert!(err.contains("unknown op \"frob\""), "{err}");
        assert!(err.contains(OP_USAGE), "{err}");
        assert!(parse_ops(&words("PUT a 1")).is_err(), "ops are case-sensitive");
        assert!(parse_ops(&words("delete a")).is_err());
    }

    #[test]
    fn missing_arguments_are_refused() {
        for (line, needle) in [
            ("put", "put: missing K"),
            ("put a", "put: missing V"),
            ("del", "del: missing K"),
            ("get", "get: missing K"),
            ("expect a", "expect: missing V"),
            ("expect-absent", "expect-absent: missing K"),
            ("get a put b", "put: missing V"),
        ] {
            let err = parse_ops(&words(line)).unwrap_err();
            assert!(err.contains(needle), "{line:?}: {err}");
        }
    }

    #[test]
    fn a_flag_after_the_ops_gets_a_hint() {
        let err = parse_ops(&words("put a 1 --json")).unwrap_err();
        assert!(err.contains("flags must come before the first OP"), "{err}");
    }

    #[test]
    fn no_ops_is_an_error() {
        assert!(parse_ops(&[]).unwrap_err().contains("no OP given"));
    }

    #[test]
    fn limits_are_checked_before_connecting() {
        let long_key = "k".repeat(twopc_common::limits::MAX_KEY_BYTES + 1);
        let err = parse_ops(&["del".to_string(), long_key]).unwrap_err();
        assert!(err.contains("exceeds the limit"), "{err}");
        let big_value = "v".repeat(twopc_common::limits::MAX_VALUE_BYTES + 1);
        let err = parse_ops(&["put".to_string(), "k".to_string(), big_value]).unwrap_err();
        assert!(err.contains("exceeds the limit"), "{err}");
        let many: Vec<String> = (0..=MAX_OPS_PER_TXN).flat_map(|i| ["get".to_string(), format!("k{i}")]).collect();
        assert!(parse_ops(&many).unwrap_err().contains("more than"));
        let value = "v".repeat(twopc_common::limits::MAX_VALUE_BYTES);
        let puts =
            |n: usize| -> Vec<String> { (0..n).flat_map(|i| ["put".into(), format!("k{i}"), value.clone()]).collect() };
        assert!(parse_ops(&puts(31)).is_ok());
        let err = parse_ops(&puts(32)).unwrap_err();
        assert!(err.contains("over every transaction's limit of 33554432"), "{err}");
    }

    #[test]
    fn put_file_takes_the_files_bytes_and_checks_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let value: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(path("v.bin"), &value).unwrap();
        let ops = parse_ops(&["put-file".into(), "k".into(), path("v.bin")]).unwrap();
        assert_eq!(ops, vec![Op::Put { key: b"k".to_vec(), value }]);
        std::fs::write(path("big"), vec![b'x'; MAX_VALUE_BYTES + 1]).unwrap();
        let err = parse_ops(&["put-file".into(), "k".into(), path("big")]).unwrap_err();
        assert!(err.contains(&format!("{} bytes, over the value limit", MAX_VALUE_BYTES + 1)), "{err}");
        let err = parse_ops(&["put-file".into(), "k".into(), path("missing")]).unwrap_err();
        assert!(err.starts_with("put-file: cannot open") && !err.contains('\n'), "{err}");
        assert!(parse_ops(&words("put-file k")).unwrap_err().contains("missing FILE"));
    }

    #[test]
    fn errors_are_one_line() {
        for line in ["frob", "put", "put a", "put a 1 --json"] {
            assert!(!parse_ops(&words(line)).unwrap_err().contains('\n'), "{line:?}");
        }
    }
}
