//! What a chaos run reports: a readable summary, and the same as JSON.

use crate::checker::Violation;
use crate::nemesis::{FaultEvent, FaultKind, Sabotage};
use crate::workload::WorkloadKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Transactions by what the client was told (and, for unknown outcomes,
/// what the coordinator said after heal).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TxnCounts {
    pub committed: usize,
    pub aborted: usize,
    pub unknown: usize,
    pub unknown_then_committed: usize,
    pub unknown_then_aborted: usize,
    pub unresolved: usize,
    /// Abandoned before commit (begin or read failed): nothing sent.
    pub not_sent: usize,
}

/// Recovery after heal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// Prepared transactions held by participants when polling began.
    pub in_doubt_at_heal: usize,
    /// Keys locked when polling began.
    pub locks_at_heal: usize,
    /// Commits the coordinators had not yet delivered to every participant.
    pub undelivered_at_heal: usize,
    /// Transactions whose outcome the client did not know.
    pub unknown_at_heal: usize,
    /// Time from heal until nothing was in doubt, locked, undelivered or
    /// unknown (`None`: not within the bound).
    pub resolved_after_ms: Option<u64>,
    pub bound_ms: u64,
    /// Bank: (expected total, final total).
    pub bank_total: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub workload: WorkloadKind,
    pub duration_ms: u64,
    pub participants: usize,
    pub coordinators: usize,
    pub clients: usize,
    pub faults_enabled: Vec<FaultKind>,
    /// Asked for but not possible (aimed crashes without fault points).
    pub faults_skipped: Vec<FaultKind>,
    pub fault_points: bool,
    pub sabotage: Option<Sabotage>,
    /// Faults injected, by label: kill, pause, partition, delay, drop,
    /// crash-armed (a restart with a fault point armed), crash (an armed
    /// point fired), kill-at-heal (a restart to disarm one).
    pub faults_injected: BTreeMap<String, usize>,
    pub fault_events: Vec<FaultEvent>,
    pub txns: TxnCounts,
    pub aborts_by_reason: BTreeMap<String, usize>,
    pub not_sent: BTreeMap<String, usize>,
    /// Client-library calls that outlived their own deadline (by stage)
    /// and were given up by the worker: a client-side hang (see
    /// tokio-rs/tokio#7714), not an invariant violation.
    pub overdue_calls: BTreeMap<String, usize>,
    /// Max time to resolve every in-doubt transaction after heal (ms).
    pub max_resolve_ms: Option<u64>,
    pub recovery: Recovery,
    /// Empty when no invariant was violated.
    pub violations: Vec<Violation>,
    /// A negative control (`sabotage`) that found nothing, and why that
    /// proves nothing: no process was killed or crashed, so the broken
    /// rule was never put to the test.
    pub inconclusive: Option<String>,
    /// The command that replays this run's seed.
    pub replay: String,
    /// Where data and logs were kept (`--dir`, or the temp dir of a run
    /// that found a violation).
    pub dir: Option<String>,
    /// `--history` was asked for but could not be written at the end
    /// (the file was checked before the run; the verdict stands).
    pub history_error: Option<String>,
    pub elapsed_ms: u64,
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// "ok", "violated" or "inconclusive": what the exit code says.
    pub fn verdict(&self) -> &'static str {
        match (self.ok(), &self.inconclusive) {
            (false, _) => "violated",
            (true, Some(_)) => "inconclusive",
            (true, None) => "ok",
        }
    }

    /// The report, with its `verdict` (trial 19B: it had to be inferred
    /// from `violations` and `inconclusive`).
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a report always serialises");
        if let serde_json::Value::Object(fields) = &mut value {
            fields.insert("verdict".into(), self.verdict().into());
        }
        serde_json::to_string_pretty(&value).expect("a report always serialises")
    }

    /// The readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "twopc chaos: seed {}, {} workload, {} of faults, {} participant(s), {} coordinator(s), {} clients{}",
            self.seed,
            self.workload,
            secs(self.duration_ms),
            self.participants,
            self.coordinators,
            self.clients,
            match self.sabotage {
                Some(sab) => format!(", SABOTAGE {} (negative control)", sab.name()),
                None => String::new(),
            }
        );
        let enabled: Vec<&str> = self.faults_enabled.iter().map(|k| k.name()).collect();
        let injected: Vec<String> = self.faults_injected.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            s,
            "faults: {} injected ({}) from [{}]",
            self.fault_events.len(),
            if injected.is_empty() { "none".into() } else { injected.join(", ") },
            enabled.join(",")
        );
        if !self.faults_skipped.is_empty() {
            let skipped: Vec<&str> = self.faults_skipped.iter().map(|k| k.name()).collect();
            let _ = writeln!(
                s,
                "  skipped {}: this twopc binary has no fault points (build with `cargo build -p twopc-cli --features fault-points`)",
                skipped.join(",")
            );
        }
        let t = &self.txns;
        let _ = writeln!(
            s,
            "transactions: {} committed, {} aborted, {} unknown to the client ({} then committed, {} then aborted, {} unresolved); {} abandoned before commit",
            t.committed, t.aborted, t.unknown, t.unknown_then_committed, t.unknown_then_aborted, t.unresolved, t.not_sent
        );
        if !self.aborts_by_reason.is_empty() {
            let reasons: Vec<String> = self.aborts_by_reason.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "  aborts: {}", reasons.join(", "));
        }
        if !self.overdue_calls.is_empty() {
            let calls: Vec<String> = self.overdue_calls.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "  WARNING client calls that outlived their deadline (given up): {}", calls.join(", "));
        }
        let r = &self.recovery;
        let _ = writeln!(
            s,
            "recovery after heal: {} (at heal: {} in doubt, {} keys locked, {} undelivered commits; {} outcomes unknown to clients; bound {})",
            match r.resolved_after_ms {
                Some(ms) => format!("everything resolved in {}", secs(ms)),
                None => "NOT resolved within the bound".into(),
            },
            r.in_doubt_at_heal,
            r.locks_at_heal,
            r.undelivered_at_heal,
            r.unknown_at_heal,
            secs(r.bound_ms)
        );
        if let Some((expected, actual)) = r.bank_total {
            let _ = writeln!(s, "bank total: {actual} (expected {expected})");
        }
        if let (true, Some(why)) = (self.ok(), &self.inconclusive) {
            let _ = writeln!(s, "result: INCONCLUSIVE, {why}");
        } else if self.ok() {
            let _ = writeln!(
                s,
                "result: OK, no invariant violated (atomicity, no lost commit, aborts invisible, unknowns settled, {}no in-doubt left)",
                if self.workload == WorkloadKind::Bank { "bank chain and total, " } else { "" }
            );
        } else {
            let _ = writeln!(s, "result: VIOLATED, {} violation(s):", self.violations.len());
            let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
            for v in &self.violations {
                *by_kind.entry(&v.kind).or_default() += 1;
            }
            let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "  by kind: {}", kinds.join(", "));
            for v in self.violations.iter().take(20) {
                let _ = writeln!(s, "  - {v}");
            }
            if self.violations.len() > 20 {
                let _ = writeln!(s, "  ... and {} more (see --json)", self.violations.len() - 20);
            }
            let _ = writeln!(s, "replay: {}", self.replay);
        }
        if let Some(dir) = &self.dir {
            let _ = writeln!(s, "data and logs: {dir}");
        }
        if let Some(e) = &self.history_error {
            let _ = writeln!(s, "WARNING the history was not written: {e}");
        }
        s
    }
}
