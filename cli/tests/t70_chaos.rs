//! The chaos harness in CI (the short profile): seeded runs of real
//! `twopc` processes under every fault kind must violate nothing, and
//! each negative control (a durability rule broken on purpose) must be
//! caught within a few seeds. One cluster at a time: the runs are timing
//! sensitive, and CI has two cores.
//!
//! The long profile is not run here; see `twopc chaos --help` and the
//! README (e.g. 100 seeds × 60 s).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use twopc_chaos::nemesis::{parse_faults, FaultKind, Sabotage};
use twopc_chaos::report::Report;
use twopc_chaos::workload::WorkloadKind;
use twopc_chaos::ChaosOptions;

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(seed: u64, secs: u64, workload: WorkloadKind, faults: &str) -> ChaosOptions {
    let mut opts = ChaosOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_twopc")), seed);
    opts.duration = Duration::from_secs(secs);
    opts.workload = workload;
    opts.faults = parse_faults(faults).expect("valid fault list");
    opts.clients = 6;
    opts
}

async fn run(opts: &ChaosOptions) -> Report {
    let report = twopc_chaos::run(opts)
        .await
        .unwrap_or_else(|e| panic!("the harness could not run: {e:#}\nreplay: {}", opts.replay_command()));
    eprintln!("{}", report.summary());
    report
}

/// Violations that show data went wrong (not just slowness).
const DATA_VIOLATIONS: [&str; 9] = [
    "atomicity",
    "lost-commit",
    "lost-update",
    "aborted-visible",
    "unknown-inconsistent",
    "unexplained-write",
    "wrong-value",
    "bank-total",
    "negative-balance",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_profile_every_fault_kind_violates_nothing() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    // (seed, seconds, workload, faults): every kind alone, then all at once.
    // Pauses get 9 s so that some last past the 5 s RPC deadline.
    let profile = [
        (101, 6, WorkloadKind::Bank, "kill"),
        (102, 9, WorkloadKind::AtomicSet, "pause"),
        (103, 8, WorkloadKind::Bank, "partition"),
        (104, 6, WorkloadKind::AtomicSet, "delay,drop"),
        (105, 6, WorkloadKind::Bank, "crash"),
        (106, 8, WorkloadKind::AtomicSet, "all"),
    ];
    let mut injected: BTreeSet<String> = BTreeSet::new();
    let mut max_resolve = Duration::ZERO;
    let mut committed = 0;
    for (seed, secs, workload, faults) in profile {
        let opts = options(seed, secs, workload, faults);
        let report = run(&opts).await;
        assert!(report.ok(), "seed {seed} violated invariants: {:#?}\nreplay: {}", report.violations, report.replay);
        assert!(report.txns.committed > 0, "seed {seed}: nothing committed");
        injected.extend(report.fault_events.iter().map(|e| e.kind.name().to_string()));
        let resolved = report.max_resolve_ms.expect("recovered within the bound");
        max_resolve = max_resolve.max(Duration::from_millis(resolved));
        committed += report.txns.committed;
    }
    for kind in FaultKind::ALL {
        assert!(injected.contains(kind.name()), "the short profile never injected {kind}: {injected:?}");
    }
    eprintln!("short profile: {committed} commits, every in-doubt transaction resolved within {max_resolve:?} of heal");
}

/// Runs seeds with `sabotage` until the checker catches it.
async fn caught_within(sabotage: Sabotage, seeds: std::ops::RangeInclusive<u64>) -> (u64, Report) {
    let mut tried = Vec::new();
    for seed in seeds {
        let mut opts = options(seed, 6, WorkloadKind::Bank, "crash,kill");
        opts.sabotage = Some(sabotage);
        let report = run(&opts).await;
        if report.violations.iter().any(|v| DATA_VIOLATIONS.contains(&v.kind.as_str())) {
            return (seed, report);
        }
        tried.push(format!("seed {seed}: {:?}", report.violations));
    }
    panic!("the checker never caught {}: {tried:#?}", sabotage.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_voting_before_the_sync_is_caught() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (seed, report) = caught_within(Sabotage::VoteBeforeSync, 1..=4).await;
    eprintln!("vote-before-sync caught at seed {seed}: {} violations", report.violations.len());
    assert!(!report.ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_answering_committed_before_the_sync_is_caught() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (seed, report) = caught_within(Sabotage::CommitBeforeSync, 1..=4).await;
    eprintln!("commit-before-sync caught at seed {seed}: {} violations", report.violations.len());
    assert!(!report.ok());
}

#[test]
fn the_chaos_command_reports_json_and_exits_zero_when_clean() {
    let _one = ONE_CLUSTER_AT_A_TIME.blocking_lock();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twopc"))
        .args(["chaos", "--seed", "7", "--duration", "3s", "--faults", "kill,delay", "--participants", "2"])
        .args(["--clients", "4", "--workload", "atomic-set", "--json"])
        .output()
        .expect("run twopc chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(report["seed"], 7);
    assert_eq!(report["violations"], serde_json::json!([]));
    assert_eq!(report["verdict"], "ok");
    assert!(report["txns"]["committed"].as_u64().unwrap() > 0, "{stdout}");
    assert!(report["max_resolve_ms"].is_u64(), "{stdout}");
    assert!(report["faults_injected"].is_object(), "{stdout}");
    assert!(report["replay"].as_str().unwrap().contains("chaos --seed 7 --duration 3s"), "{stdout}");
}

/// A clean run whose report cannot be written (a full disk) is not
/// "clean" to a script that keeps the report: exit 5, not 0.
#[test]
fn a_clean_chaos_run_whose_report_is_lost_exits_5() {
    let _one = ONE_CLUSTER_AT_A_TIME.blocking_lock();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twopc"))
        .args(["chaos", "--seed", "3", "--duration", "2s", "--faults", "delay", "--participants", "2", "--json"])
        .stdout(std::fs::File::create("/dev/full").expect("open /dev/full"))
        .output()
        .expect("run twopc chaos");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("could not write the output to stdout"), "{stderr}");
}

#[test]
fn the_chaos_command_rejects_unknown_faults() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twopc"))
        .args(["chaos", "--faults", "kill,meteor", "--json"])
        .output()
        .expect("run twopc chaos");
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("meteor"), "{stdout}");
}

/// Settings that cannot give a verdict are usage errors, said before
/// anything runs (with --json, as a JSON object on stdout).
#[test]
fn the_chaos_command_refuses_settings_that_cannot_give_a_verdict() {
    let bad: [&[&str]; 9] = [
        &["--faults", "none,kill"],
        // Only a killed process can expose a broken durability rule.
        &["--faults", "delay,pause", "--sabotage", "vote-before-sync"],
        &["--faults", "all,none"],
        &["--faults", ""],
        &["--faults", "kill,,delay"],
        &["--recovery-timeout", "0s"],
        &["--recovery-timeout", "5s"],
        &["--duration", "0s"],
        // Checked before the run, not after it (which would lose its verdict).
        &["--history", "/nonexistent/h.jsonl"],
    ];
    for args in bad {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_twopc"))
            .args(["chaos", "--seed", "1", "--duration", "2s"])
            .args(args)
            .arg("--json")
            .output()
            .expect("run twopc chaos");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stdout}");
        let error: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"));
        assert!(error["error"].is_string(), "{args:?}: {stdout}");
        assert!(started.elapsed() < Duration::from_secs(2), "{args:?}: a run was started");
    }
    assert!(!std::path::Path::new("/nonexistent/h.jsonl").exists());
}
