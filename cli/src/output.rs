//! What `twopc txn`, `twopc get` and `twopc outcome` print: human lines, or
//! exactly one JSON object for scripts. In human lines bytes are shown as
//! UTF-8, a byte that is not UTF-8 as `\xNN`, control characters
//! escaped (`\n`, `\u{0}`, `\u{1b}`), a backslash doubled and, in a key,
//! `=` written `\=`: one read stays one line that splits at its first
//! ` = `, two different values never print the same, and a value cannot
//! drive the terminal. In JSON a value that is not UTF-8 is
//! given exactly, as `{"base64": "..."}`. (`twopc get --raw` writes a
//! value's exact bytes.)

use serde_json::{json, Map, Value as Json};

/// One key read and what it held (`None`: absent).
pub type Read = (Vec<u8>, Option<Vec<u8>>);

/// How a `txn` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed,
    /// Nothing was written; the reason says why, and whether running it
    /// again may commit (a conflict or a passing failure).
    Aborted {
        reason: String,
        retryable: bool,
        /// [`twopc_common::AbortReason::kind`].
        kind: &'static str,
    },
    /// The commit may or may not have happened; the detail says what failed.
    Unknown(String),
}

/// The result of a `txn` that got as far as its commit.
#[derive(Debug, Clone)]
pub struct TxnReport {
    pub txid: String,
    pub outcome: TxnOutcome,
    /// The transaction's gets, in command-line order.
    pub reads: Vec<Read>,
}

impl TxnReport {
    /// `committed c1.1.5` (or `aborted ...: reason`, `outcome unknown ...:
    /// detail`), then one `K = V` line per get.
    pub fn human(&self) -> String {
        let mut out = match &self.outcome {
            TxnOutcome::Committed => format!("committed {}\n", self.txid),
            TxnOutcome::Aborted { reason, .. } => format!("aborted {}: {reason}\n", self.txid),
            TxnOutcome::Unknown(detail) => format!("outcome unknown {}: {detail}\n", self.txid),
        };
        out.push_str(&reads_human(&self.reads));
        out
    }

    /// `{"txid": ..., "outcome": ..., "reason": ..., "retryable": ...,
    /// "reads": {...}}` (`retryable`: an abort that running the transaction
    /// again may commit; false otherwise).
    pub fn json(&self) -> String {
        let (outcome, reason, kind, retryable) = match &self.outcome {
            TxnOutcome::Committed => ("committed", Json::Null, Json::Null, false),
            TxnOutcome::Aborted { reason, retryable, kind } => {
                ("aborted", Json::from(reason.as_str()), Json::from(*kind), *retryable)
            }
            TxnOutcome::Unknown(detail) => ("unknown", Json::from(detail.as_str()), Json::Null, false),
        };
        // Written field by field to keep the documented order (serde_json's
        // map would sort the keys).
        format!(
            "{{\"txid\":{},\"outcome\":{},\"reason\":{},\"reason_kind\":{},\"retryable\":{},\"reads\":{}}}",
            Json::from(self.txid.as_str()),
            Json::from(outcome),
            reason,
            kind,
            retryable,
            reads_map(&self.reads)
        )
    }
}

/// `K = V` or `K = (absent)`, one line per read.
pub fn reads_human(reads: &[Read]) -> String {
    reads
        .iter()
        .map(|(key, value)| match value {
            Some(v) => format!("{} = {}\n", printable_key(key), printable_value(v)),
            None => format!("{} = (absent)\n", printable_key(key)),
        })
        .collect()
}

/// `{"reads": {"k": "v" or null}}`.
pub fn reads_json(reads: &[Read]) -> String {
    json!({ "reads": reads_map(reads) }).to_string()
}

/// `{"txid": "...", "outcome": "..."}`, in that order (`twopc outcome`).
pub fn outcome_json(txid: &str, outcome: &str) -> String {
    format!("{{\"txid\":{},\"outcome\":{}}}", Json::from(txid), Json::from(outcome))
}

/// `{"error": "..."}`.
pub fn error_json(message: &str) -> String {
    json!({ "error": message }).to_string()
}

/// `{"error": "...", "retryable": ...}` (`retryable`: trying again later
/// may succeed).
pub fn failure_json(message: &str, retryable: bool) -> String {
    format!("{{\"error\":{},\"retryable\":{retryable}}}", Json::from(message))
}

fn reads_map(reads: &[Read]) -> Json {
    let mut map = Map::new();
    for (key, value) in reads {
        map.insert(lossy(key), value.as_deref().map_or(Json::Null, value_json));
    }
    Json::Object(map)
}

/// A value as a JSON string, or `{"base64": "..."}` if it is not UTF-8
/// (a string would have to replace those bytes).
fn value_json(value: &[u8]) -> Json {
    use base64::Engine as _;
    match std::str::from_utf8(value) {
        Ok(text) => Json::from(text),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(value) }),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Text for a terminal: control characters escaped, and bytes that are
/// not UTF-8 shown as `\xNN` (not replaced: two different values never
/// print the same).
fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else if c == '\\' {
                // Else a typed `\xff` printed as the byte 0xff does (trial 19C).
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A key for a `K = V` line: [`printable`], and `=` written `\=` (key
/// `a = b` holding `c` printed as key `a` holding `b = c` did).
fn printable_key(key: &[u8]) -> String {
    printable(key).replace('=', "\\=")
}

/// A value for a `K = V` line: [`printable`], and a leading `(` written
/// `\(` (a stored `(absent)` printed as an absent key did, trial 21B).
fn printable_value(value: &[u8]) -> String {
    let text = printable(value);
    match text.strip_prefix('(') {
        Some(rest) => format!("\\({rest}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_lines_escape_control_characters() {
        let reads = vec![(b"k\n".to_vec(), Some(b"a\0b\x1b[2Jc\xffd".to_vec()))];
        assert_eq!(reads_human(&reads), "k\\n = a\\u{0}b\\u{1b}[2Jc\\xffd\n");
        // JSON escapes control characters itself (and gives bytes that are
        // not UTF-8 as base64).
        let reads = vec![(b"k\n".to_vec(), Some(b"a\0b\x1b[2Jc".to_vec()))];
        assert_eq!(reads_json(&reads), "{\"reads\":{\"k\\n\":\"a\\u0000b\\u001b[2Jc\"}}");
    }

    fn reads() -> Vec<Read> {
        vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"c".to_vec(), None)]
    }

    #[test]
    fn human_output_names_the_outcome_and_every_read() {
        let report = TxnReport { txid: "c1.1.5".into(), outcome: TxnOutcome::Committed, reads: reads() };
        assert_eq!(report.human(), "committed c1.1.5\na = 1\nc = (absent)\n");
        let aborted = TxnOutcome::Aborted { reason: "stale".into(), retryable: true, kind: "stale-read" };
        let report = TxnReport { txid: "c1.1.6".into(), outcome: aborted, reads: vec![] };
        assert_eq!(report.human(), "aborted c1.1.6: stale\n");
        let report = TxnReport { txid: "c1.1.7".into(), outcome: TxnOutcome::Unknown("timeout".into()), reads: vec![] };
        assert_eq!(report.human(), "outcome unknown c1.1.7: timeout\n");
    }

    #[test]
    fn json_output_is_one_object_with_fixed_fields() {
        let report = TxnReport { txid: "c1.1.5".into(), outcome: TxnOutcome::Committed, reads: reads() };
        assert!(report.json().starts_with(
            r#"{"txid":"c1.1.5","outcome":"committed","reason":null,"reason_kind":null,"retryable":false,"reads":"#
        ));
        let parsed: Json = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(
            parsed,
            json!({"txid": "c1.1.5", "outcome": "committed", "reason": null, "reason_kind": null, "retryable": false, "reads": {"a": "1", "c": null}})
        );
        let report = TxnReport { txid: "c1.1.6".into(), outcome: TxnOutcome::Unknown("x".into()), reads: vec![] };
        let parsed: Json = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(parsed["outcome"], "unknown");
        assert_eq!(parsed["reason"], "x");
        assert!(!report.json().contains('\n'));
    }

    #[test]
    fn get_and_error_json() {
        let parsed: Json = serde_json::from_str(&reads_json(&reads())).unwrap();
        assert_eq!(parsed, json!({"reads": {"a": "1", "c": null}}));
        let parsed: Json = serde_json::from_str(&error_json("no \"quote\"")).unwrap();
        assert_eq!(parsed, json!({"error": "no \"quote\""}));
        let parsed: Json = serde_json::from_str(&failure_json("down", true)).unwrap();
        assert_eq!(parsed, json!({"error": "down", "retryable": true}));
    }

    #[test]
    fn a_value_that_is_not_utf8_is_given_exactly_in_json() {
        let reads = vec![(b"bin".to_vec(), Some(vec![0xff, 0xfe, 0, b'b'])), (b"text".to_vec(), Some(b"ok".to_vec()))];
        let parsed: Json = serde_json::from_str(&reads_json(&reads)).unwrap();
        assert_eq!(parsed, json!({"reads": {"bin": {"base64": "//4AYg=="}, "text": "ok"}}));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex_escapes() {
        // Two different values never print the same (a replacement
        // character would stand for any invalid byte).
        let reads = vec![(b"k".to_vec(), Some(vec![0xff, b'x'])), (b"\xfe".to_vec(), Some(b"caf\xc3\xa9".to_vec()))];
        assert_eq!(reads_human(&reads), "k = \\xffx\n\\xfe = caf\u{e9}\n");
        // Nor does a typed escape print as the byte or character it names.
        let reads = vec![(b"k".to_vec(), Some(vec![0xff])), (b"t".to_vec(), Some(b"\\xff\\n".to_vec()))];
        assert_eq!(reads_human(&reads), "k = \\xff\nt = \\\\xff\\\\n\n");
    }

    #[test]
    fn a_line_splits_at_its_first_equals_sign() {
        let reads = vec![(b"a = b".to_vec(), Some(b"c".to_vec())), (b"a".to_vec(), Some(b"b = c".to_vec()))];
        assert_eq!(reads_human(&reads), "a \\= b = c\na = b = c\n");
        let reads = vec![(b"x\\=".to_vec(), None)];
        assert_eq!(reads_human(&reads), "x\\\\\\= = (absent)\n");
        let stored = vec![(b"k".to_vec(), Some(b"(absent)".to_vec())), (b"j".to_vec(), None)];
        assert_eq!(reads_human(&stored), "k = \\(absent)\nj = (absent)\n");
    }
}
