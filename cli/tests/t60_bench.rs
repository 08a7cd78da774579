//! `twopc bench`: a short run produces a well-formed report (commits,
//! fsyncs counted, plot written) and cleans up after itself; the bank
//! workload conserves money on a real cluster; the PostgreSQL peer runs
//! when PostgreSQL is installed. Correctness only: no timing assertions.

mod support;

use anyhow::Result;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::{json, processes_mentioning, twopc_bin, Cluster};
use twopc_chaos::bench::driver::LevelRun;
use twopc_chaos::bench::workload::{KeySpace, PlanGenerator, Workload, INITIAL_BALANCE};
use twopc_chaos::bench::{postgres, twopc};
use twopc_common::net::context_with_timeout;

#[test]
fn a_short_run_prints_a_well_formed_json_report_and_a_plot() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let plot = dir.path().join("bench.svg");
    let out = Command::new(twopc_bin())
        .args(["bench", "--participants", "2", "--concurrency", "1,4", "--duration", "1s", "--warmup", "200ms"])
        .args(["--keys", "500", "--json", "--plot"])
        .arg(&plot)
        .arg("--data-dir")
        .arg(&data)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["settings"]["participants"], 2);
    assert_eq!(report["settings"]["workload"], "multi-shard");
    assert!(report["floor"]["floor_us"].as_f64().unwrap() > 0.0);
    assert!(report["floor"]["skeleton"]["p50_us"].as_f64().unwrap() > 0.0, "{}", report["floor"]);
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let levels = report["twopc"]["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for level in levels {
        assert!(level["commits"].as_u64().unwrap() > 0, "no commits: {level}");
        assert!(level["throughput"].as_f64().unwrap() > 0.0);
        let (p50, p99, p999) =
            (level["p50_us"].as_f64().unwrap(), level["p99_us"].as_f64().unwrap(), level["p999_us"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{level}");
        assert!(level["fsyncs_per_commit"].as_f64().unwrap() > 0.0, "fsyncs not counted: {level}");
        assert!(level["p50_to_floor"].as_f64().unwrap() > 0.0);
        assert!(level["server_cpu_pct"].as_f64().is_some());
        let nodes = level["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "coordinator + 2 participants: {level}");
        for node in nodes.iter().filter(|n| n["role"] == "participant") {
            assert!(node["fsyncs"].as_u64().unwrap() > 0, "{node}");
            assert!(node["commits_per_fsync"].as_f64().unwrap() > 0.0, "{node}");
            assert!(node["rss_kib"].as_u64().unwrap() > 0, "{node}");
        }
    }
    assert!(report["twopc"]["peak_rss_kib"].as_u64().unwrap() > 0);
    assert_eq!(report["targets"].as_array().unwrap().len(), 5);
    let svg = std::fs::read_to_string(&plot)?;
    assert!(svg.starts_with("<svg") && svg.contains("twopc"));
    // Every server the run started is gone.
    let left = processes_mentioning(&data.display().to_string());
    assert!(left.is_empty(), "processes left running: {left:?}");
    Ok(())
}

#[test]
fn bad_arguments_are_usage_errors() -> Result<()> {
    let bad: [&[&str]; 8] = [
        &["bench", "--concurrency", "0"],
        &["bench", "--concurrency", "1", "--concurrency", "2"],
        &["bench", "--concurrency", "4,1,4"],
        &["bench", "--duration", "5h"],
        &["bench", "--zipf", "-1"],
        &["bench", "--cluster", "/nonexistent/cluster.toml"],
        &["bench", "--cluster", "/nonexistent/cluster.toml", "--participants", "2"],
        // Said before the run, not after it (which would lose its results).
        &["bench", "--plot", "/nonexistent/dir/bench.svg"],
    ];
    for args in bad {
        let out = Command::new(twopc_bin()).args(args).output()?;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        // With --json, stdout still says why, as one JSON object.
        let out = Command::new(twopc_bin()).args(args).arg("--json").output()?;
        assert_eq!(out.status.code(), Some(3), "{args:?} --json: {}", String::from_utf8_lossy(&out.stderr));
        assert!(json(&out)["error"].is_string(), "{args:?} --json: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

#[test]
fn a_failed_run_says_why_in_json() -> Result<()> {
    // A cluster file whose servers are not running.
    let cluster = Cluster::new(1);
    let file = cluster.write_cluster_file()?;
    let out = Command::new(twopc_bin())
        .args(["bench", "--cluster"])
        .arg(&file)
        .args(["--concurrency", "1", "--duration", "1s", "--warmup", "100ms", "--json"])
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let error = json(&out)["error"].as_str().map(str::to_string);
    assert!(error.as_deref().is_some_and(|e| e.contains("stats()")), "{error:?}");
    Ok(())
}

/// A server of the targeted cluster is killed and restarted during the
/// measured window: the run still reports, with that server's counters
/// unknown (said why), not a lost report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarting_mid_run_costs_its_counters_not_the_report() -> Result<()> {
    let mut cluster = Cluster::start(2)?;
    let file = cluster.write_cluster_file()?;
    let bench = Command::new(twopc_bin())
        .args(["bench", "--cluster"])
        .arg(&file)
        .args(["--concurrency", "2", "--duration", "4s", "--warmup", "200ms", "--keys", "100", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The load has begun once p2 syncs its log; then into the window.
    let p2 = cluster.participant("p2").await?;
    let syncs = || async { anyhow::Ok(p2.stats(context_with_timeout(Duration::from_secs(5))).await?.wal_syncs) };
    let before = syncs().await?;
    cluster
        .eventually("the benchmark's load", Duration::from_secs(30), || async { Ok(syncs().await? > before + 10) })
        .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.start("p2")?;
    let out = tokio::task::spawn_blocking(move || bench.wait_with_output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report = json(&out);
    let level = &report["twopc"]["levels"][0];
    assert!(level["commits"].as_u64().unwrap() > 0, "no commits: {level}");
    let notes = level["counter_notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap().starts_with("p2: fsyncs unknown")), "{level}");
    assert!(level["fsyncs_per_commit"].is_null(), "a total missing p2's fsyncs: {level}");
    let p2_level = level["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "p2").unwrap();
    assert!(p2_level["fsyncs"].is_null(), "{p2_level}");
    Ok(())
}

#[test]
fn a_running_cluster_can_be_the_target() -> Result<()> {
    let cluster = Cluster::start(2)?;
    let file = cluster.write_cluster_file()?;
    let out = Command::new(twopc_bin())
        .args(["bench", "--cluster"])
        .arg(&file)
        .args(["--concurrency", "2", "--duration", "1s", "--warmup", "200ms", "--keys", "100", "--json"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["settings"]["participants"], 2, "the file's participants");
    assert!(report["twopc"]["setup"].as_str().unwrap().contains("running cluster"), "{}", report["twopc"]);
    let level = &report["twopc"]["levels"][0];
    assert!(level["commits"].as_u64().unwrap() > 0, "no commits: {level}");
    assert!(level["fsyncs_per_commit"].as_f64().unwrap() > 0.0, "fsyncs not counted: {level}");
    // The benchmark wrote its own keys, and the cluster still serves.
    let read =
        Command::new(twopc_bin()).args(["get", "--coordinator", &cluster.coordinator_addr(), "bench/k0"]).output()?;
    let shown = String::from_utf8_lossy(&read.stdout);
    assert!(read.status.success() && shown.starts_with("bench/k0 = ") && !shown.contains("(absent)"), "{read:?}");
    assert_eq!(cluster.participant_ids().len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_through_the_bench_workers_conserve_money() -> Result<()> {
    let cluster = Cluster::start(2)?;
    let keys = Arc::new(KeySpace::new(&cluster.config.ring(), 10));
    // Zipfian over 20 accounts: conflicts and one-phase commits both happen.
    let plans = Arc::new(PlanGenerator::new(Workload::Bank, keys.clone(), Some(1.0)));
    let workers = twopc::workers(&cluster.coordinator_addr(), 6, &[]).await?;
    let run = LevelRun::start(workers, plans, 2, Duration::from_millis(100), Duration::from_millis(1500), 9);
    let (_, measured) = run.finish().await;
    assert!(measured.commits > 0, "no commits: {:?}", measured.first_error);
    assert_eq!(measured.errors, 0, "{:?}", measured.first_error);
    let client = cluster.client().await?;
    let all: Vec<Vec<u8>> = keys.shards.iter().flatten().map(|k| k.clone().into_bytes()).collect();
    cluster
        .eventually("balances add up", Duration::from_secs(10), || async {
            let total: u64 = client
                .read(all.clone())
                .await?
                .into_iter()
                .map(|v| v.value.map_or(INITIAL_BALANCE, |b| String::from_utf8(b).unwrap().parse::<u64>().unwrap()))
                .sum();
            Ok(total == 20 * INITIAL_BALANCE)
        })
        .await
}

#[test]
fn the_postgres_peer_runs_side_by_side_when_installed() -> Result<()> {
    if postgres::find_binaries().is_none() {
        eprintln!("SKIPPED: {}", postgres::INSTALL_HINT);
        return Ok(());
    }
    let out = Command::new(twopc_bin())
        .args(["bench", "--participants", "2", "--concurrency", "1,2", "--duration", "1s", "--warmup", "200ms"])
        .args(["--keys", "200", "--workload", "bank", "--peer", "postgres", "--json"])
        .output()?;
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let peer = &report["peer"];
    assert_eq!(peer["system"], "postgres");
    for (t, p) in report["twopc"]["levels"].as_array().unwrap().iter().zip(peer["levels"].as_array().unwrap()) {
        assert!(p["commits"].as_u64().unwrap() > 0, "{p}");
        assert!(p["fsyncs_per_commit"].as_f64().is_some(), "{p}");
        assert!(t["throughput_to_peer"].as_f64().unwrap() > 0.0, "{t}");
    }
    Ok(())
}
