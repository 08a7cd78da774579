//! SIGTERM (what `kill`, service managers and CI timeouts send) stops the
//! commands that start their own servers, `twopc bench` and `twopc chaos`,
//! as Ctrl-C does: the servers go with them, and no half-written plot is
//! left behind.

mod support;

use anyhow::Result;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{processes_mentioning, twopc_bin, wait_for};

/// Starts `twopc ARGS`, waits until servers with `data` in their command
/// line run, sends SIGTERM, and checks that the command exits 1 and that
/// every one of its servers is gone.
fn sigterm_stops(args: &[&str], data: &Path) -> Result<()> {
    let mut child = Command::new(twopc_bin()).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let marker = data.display().to_string();
    // Two servers: the coordinator and one participant at least.
    let started =
        wait_for("the servers to start", Duration::from_secs(60), || processes_mentioning(&marker).len() >= 2);
    if let Err(e) = started {
        let _ = child.kill();
        return Err(e);
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    assert!(status.success(), "kill failed");
    let mut exited = None;
    wait_for("the command to exit", Duration::from_secs(20), || {
        exited = child.try_wait().ok().flatten();
        exited.is_some()
    })?;
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(exited.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "the reason is said: {stderr}");
    wait_for("the servers to stop", Duration::from_secs(10), || processes_mentioning(&marker).is_empty())?;
    Ok(())
}

#[test]
fn sigterm_stops_a_benchmark_and_its_cluster() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let plot = dir.path().join("bench.svg");
    let (data_arg, plot_arg) = (data.display().to_string(), plot.display().to_string());
    let args = ["bench", "--participants", "2", "--concurrency", "1", "--duration", "60s"];
    let args = [&args[..], &["--data-dir", &data_arg, "--plot", &plot_arg]].concat();
    sigterm_stops(&args, &data)?;
    assert!(!plot.exists(), "an empty plot was left behind");
    // An older plot is neither emptied nor removed by a run that ends
    // without a report.
    std::fs::write(&plot, "<svg>older</svg>")?;
    sigterm_stops(&args, &data)?;
    assert_eq!(std::fs::read_to_string(&plot)?, "<svg>older</svg>");
    Ok(())
}

#[test]
fn sigterm_stops_a_chaos_run_and_its_cluster() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("chaos");
    let data_arg = data.display().to_string();
    sigterm_stops(&["chaos", "--seed", "5", "--duration", "60s", "--faults", "delay", "--dir", &data_arg], &data)
}
