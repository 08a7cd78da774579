//! Named fault points at protocol moments, for crash tests and the chaos
//! harness. Compiled in only with the `fault-points` feature; otherwise
//! [`hit`] is a constant `false` and costs nothing.
//!
//! Armed from the environment: `TWOPC_FAULTS="point=action[@n],..."` where
//! `action` is `crash` (SIGKILL this process, as a power cut would: the
//! WAL's unsynced buffer is lost), `drop` (the caller skips the step,
//! e.g. a message is not sent) or `crash-soon` (skip the step, and SIGKILL
//! [`CRASH_SOON_DELAY`] later), and `@n` fires on the n-th hit only
//! (default: every hit). Points:
//! - `participant.after-prepare-synced`: Prepared record durable, vote not sent;
//! - `participant.before-apply`: commit received, writes not applied;
//! - `participant.after-commit-acked`: a commit's ack handed to the RPC layer;
//! - `coordinator.before-decision`: every vote Yes, Commit record not written;
//! - `coordinator.after-decision-synced`: Commit record durable, nobody told;
//! - `coordinator.mid-commit-fanout`: a participant's commit acked, its
//!   ack not yet handed to the engine; hit once per participant's ack, so
//!   `@n` counts acks, not transactions (trial 24A; commits to the others
//!   go out in parallel, each participant's on its own sender, so they may
//!   have been delivered too: the End record is what is missing);
//! - `coordinator.before-commit-send`: the client was answered Committed,
//!   the commit messages are about to be queued (use `crash-soon`: the
//!   client hears Committed, no participant hears the commit; questions
//!   about that transaction's outcome go unanswered too);
//! - `coordinator.commit-send`: each commit message (use `drop` to withhold).

//!
//! Negative controls: `TWOPC_SABOTAGE=vote-before-sync` (a participant
//! votes Yes before its Prepared record is synced) or
//! `TWOPC_SABOTAGE=commit-before-sync` (the coordinator answers Committed
//! before its Commit record is synced) or `TWOPC_SABOTAGE=ack-before-sync`
//! (a participant acks a commit before a sync covers its apply). They
//! exist to prove that the tests and checkers catch a broken durability
//! rule.

/// How long `crash-soon` lets the process go on (replies already handed
/// to the network leave) before it kills it.
pub const CRASH_SOON_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
/// Environment variable that arms fault points.
pub const FAULTS_ENV: &str = "TWOPC_FAULTS";
/// Environment variable that breaks one durability rule on purpose.
pub const SABOTAGE_ENV: &str = "TWOPC_SABOTAGE";

/// Whether this build has the fault points (the `fault-points` feature of
/// this crate, which a `cargo test` build turns on for every binary).
pub const COMPILED_IN: bool = cfg!(feature = "fault-points");

/// Every fault point a [`FAULTS_ENV`] entry may name.
pub const POINTS: &[&str] = &[
    "participant.after-prepare-synced",
    "participant.before-apply",
    "participant.after-commit-acked",
    "coordinator.before-decision",
    "coordinator.after-decision-synced",
    "coordinator.mid-commit-fanout",
    "coordinator.before-commit-send",
    "coordinator.commit-send",
];
/// What an armed point may do.
pub const ACTIONS: &[&str] = &["crash", "drop", "crash-soon"];
/// The points whose caller can skip its step, so `drop` and `crash-soon`
/// mean something there; the others only `crash` (`drop` there was
/// accepted, logged "dropping", and the step ran anyway).
pub const SKIPPABLE_POINTS: &[&str] = &["coordinator.before-commit-send", "coordinator.commit-send"];
/// The rules [`SABOTAGE_ENV`] may break.
pub const SABOTAGES: &[&str] = &["vote-before-sync", "commit-before-sync", "ack-before-sync"];

/// One `point=action[@n]` entry of [`FAULTS_ENV`], checked.
fn parse_entry(entry: &str) -> Result<(&str, &str, Option<u64>), String> {
    let (point, action) =
        entry.split_once('=').ok_or_else(|| format!("{FAULTS_ENV}: {entry:?} is not point=action[@n]"))?;
    let (action, nth) = match action.split_once('@') {
        Some((action, n)) => {
            let n = n.parse::<u64>().ok().filter(|n| *n > 0);
            (action, Some(n.ok_or_else(|| format!("{FAULTS_ENV}: in {entry:?}, @n needs a number from 1"))?))
        }
        None => (action, None),
    };
    if !POINTS.contains(&point) {
        return Err(format!("{FAULTS_ENV}: unknown fault point {point:?} (known: {})", POINTS.join(", ")));
    }
    if !ACTIONS.contains(&action) {
        return Err(format!("{FAULTS_ENV}: unknown action {action:?} at {point} (known: {})", ACTIONS.join(", ")));
    }
    if action != "crash" && !SKIPPABLE_POINTS.contains(&point) {
        return Err(format!(
            "{FAULTS_ENV}: {point} can only crash ({action} skips a step, which only {} can)",
            SKIPPABLE_POINTS.join(" and ")
        ));
    }
    Ok((point, action, nth))
}

fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Checks [`FAULTS_ENV`] and [`SABOTAGE_ENV`] before a server starts, so
/// that a misspelt point, or a build that would ignore them, is said at
/// once instead of a test that silently does nothing.
pub fn check_env() -> Result<(), String> {
    let faults = std::env::var(FAULTS_ENV).unwrap_or_default();
    let sabotage = std::env::var(SABOTAGE_ENV).unwrap_or_default();
    if !COMPILED_IN {
        if let Some(name) = [(FAULTS_ENV, &faults), (SABOTAGE_ENV, &sabotage)]
            .into_iter()
            .find_map(|(name, value)| entries(value).next().map(|_| name))
        {
            return Err(format!(
                "{name} is set, but this twopc was built without fault points and would ignore it: \
                 run ./scripts/twopc-fault-points instead of ./scripts/twopc (or build with \
                 `cargo build -p twopc-cli --features fault-points`), or unset {name}"
            ));
        }
        return Ok(());
    }
    for entry in entries(&faults) {
        parse_entry(entry)?;
    }
    for rule in entries(&sabotage) {
        if !SABOTAGES.contains(&rule) {
            return Err(format!("{SABOTAGE_ENV}: unknown rule {rule:?} (known: {})", SABOTAGES.join(", ")));
        }
    }
    Ok(())
}

/// `value`, except while one of `rules` is sabotaged (then `None`).
pub fn unless_sabotaged<T>(rules: &[&str], value: T) -> Option<T> {
    (!rules.iter().any(|rule| sabotaged(rule))).then_some(value)
}

/// True when this fault-point build was told to break rule `name`.
pub fn sabotaged(name: &str) -> bool {
    #[cfg(feature = "fault-points")]
    {
        static SABOTAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let armed = SABOTAGE.get_or_init(|| std::env::var(SABOTAGE_ENV).unwrap_or_default());
        entries(armed).any(|s| s == name)
    }
    #[cfg(not(feature = "fault-points"))]
    {
        let _ = name;
        false
    }
}

#[cfg(feature = "fault-points")]
mod armed {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    pub struct Fault {
        pub action: String,
        pub nth: Option<u64>,
        pub hits: AtomicU64,
    }

    pub fn faults() -> &'static HashMap<String, Fault> {
        static FAULTS: OnceLock<HashMap<String, Fault>> = OnceLock::new();
        FAULTS.get_or_init(|| {
            // Checked at start (`check_env`); an entry that does not
            // parse arms nothing.
            let spec = std::env::var(super::FAULTS_ENV).unwrap_or_default();
            super::entries(&spec)
                .filter_map(|entry| super::parse_entry(entry).ok())
                .map(|(point, action, nth)| {
                    (point.to_string(), Fault { action: action.to_string(), nth, hits: AtomicU64::new(0) })
                })
                .collect()
        })
    }

    pub fn hit(point: &str, txid: Option<&crate::TxnId>) -> bool {
        // A point not in the list could never be armed (`check_env`
        // refuses its name): the list and the code must agree.
        assert!(super::POINTS.contains(&point), "fault point {point:?} is missing from fault::POINTS");
        let Some(fault) = faults().get(point) else {
            return false;
        };
        let n = fault.hits.fetch_add(1, Ordering::SeqCst) + 1;
        if fault.nth.is_some_and(|nth| nth != n) {
            return false;
        }
        // The transaction the fault hits, on the line that says so.
        let txid = txid.map_or_else(|| "-".to_string(), ToString::to_string);
        match fault.action.as_str() {
            "crash" => {
                tracing::warn!(point, %txid, "fault point: crashing");
                // SAFETY: getpid and kill have no memory-safety preconditions.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                std::process::abort();
            }
            "drop" => {
                tracing::warn!(point, %txid, "fault point: dropping");
                true
            }
            "crash-soon" => {
                tracing::warn!(point, %txid, "fault point: dropping, crashing soon");
                std::thread::spawn(|| {
                    std::thread::sleep(super::CRASH_SOON_DELAY);
                    // SAFETY: getpid and kill have no memory-safety preconditions.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                });
                true
            }
            other => unreachable!("parse_entry admits only known actions, not {other:?} at {point}"),
        }
    }
}

/// Reports reaching `point` while handling `txid` (if it is about one
/// transaction). Crashes the process if armed with `crash`; returns true
/// if armed with `drop` (the caller skips the step).
#[inline]
pub fn hit(point: &str, txid: Option<&crate::TxnId>) -> bool {
    #[cfg(feature = "fault-points")]
    {
        armed::hit(point, txid)
    }
    #[cfg(not(feature = "fault-points"))]
    {
        let _ = (point, txid);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_a_known_point_and_action() {
        assert_eq!(parse_entry("coordinator.commit-send=drop"), Ok(("coordinator.commit-send", "drop", None)));
        assert!(parse_entry("participant.before-apply=drop").unwrap_err().contains("can only crash"));
        assert!(parse_entry("coordinator.before-decision=crash-soon").is_err());
        assert!(parse_entry("coordinator.before-commit-send=crash-soon").is_ok());
        assert_eq!(parse_entry("participant.before-apply=crash@3"), Ok(("participant.before-apply", "crash", Some(3))));
        for bad in [
            "participant.before-aply=crash",
            "participant.before-apply=crsh",
            "participant.before-apply",
            "participant.before-apply=crash@0",
            "participant.before-apply=crash@x",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn every_admitted_point_is_documented() {
        // The points this file documents are the ones `check_env` admits.
        let doc = include_str!("fault.rs");
        for point in POINTS {
            assert!(doc.contains(&format!("`{point}`")), "{point} is not documented at the top of fault.rs");
        }
    }
}
