//! SIGTERM (what `kill`, service managers and CI timeouts send) stops the
//! commands that start their own servers, `twopc bench` and `twopc chaos`,
//! as Ctrl-C does: the servers go with them, and no half-written plot is
//! left behind. Ctrl-C while PostgreSQL is being set up leaves nothing
//! either. SIGKILL, which nothing can catch, still takes every server
//! (PostgreSQL's included) with the command.

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

/// Starts `twopc ARGS`, waits until `ready` holds, SIGKILLs the command,
/// and checks that every process `ours` finds then is gone soon after.
fn sigkill_takes_the_servers(args: &[&str], ready: impl Fn() -> bool, ours: impl Fn() -> Vec<u32>) -> Result<()> {
    let mut child = Command::new(twopc_bin()).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    if let Err(e) = wait_for("the servers to start", Duration::from_secs(90), &ready) {
        let _ = child.kill();
        return Err(e);
    }
    let servers = ours();
    assert!(!servers.is_empty());
    child.kill()?;
    child.wait()?;
    let alive =
        || servers.iter().copied().filter(|pid| Path::new(&format!("/proc/{pid}")).exists()).collect::<Vec<_>>();
    let gone = wait_for("the servers to die with the command", Duration::from_secs(15), || alive().is_empty());
    if gone.is_err() {
        // Leave nothing behind for the next test.
        for pid in alive() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
    gone
}

/// Processes of user `postgres` that are `pid` or its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let parent_of = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut tree = vec![pid];
    let mut grew = true;
    while grew {
        grew = false;
        for &p in &all {
            if !tree.contains(&p) && parent_of(p).is_some_and(|pp| tree.contains(&pp)) {
                tree.push(p);
                grew = true;
            }
        }
    }
    tree
}

#[test]
fn sigkill_of_a_chaos_run_takes_its_servers_with_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("chaos");
    let marker = data.display().to_string();
    let args = ["chaos", "--seed", "5", "--duration", "60s", "--faults", "delay", "--dir", &marker];
    sigkill_takes_the_servers(&args, || processes_mentioning(&marker).len() >= 4, || processes_mentioning(&marker))
}

#[test]
fn sigkill_of_a_benchmark_takes_its_servers_with_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let marker = data.display().to_string();
    let args = ["bench", "--participants", "2", "--concurrency", "1", "--duration", "60s", "--data-dir", &marker];
    sigkill_takes_the_servers(&args, || processes_mentioning(&marker).len() >= 3, || processes_mentioning(&marker))
}

/// The PostgreSQL postmaster of a benchmark run whose data is under `marker`.
fn postmaster(marker: &str) -> Option<u32> {
    processes_mentioning(marker).into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("postgres/p1/data")
    })
}

#[test]
fn sigkill_of_a_benchmark_takes_postgres_with_it() -> Result<()> {
    if twopc_chaos::bench::postgres::find_binaries().is_none() {
        eprintln!("SKIPPED: {}", twopc_chaos::bench::postgres::INSTALL_HINT);
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    let marker = data.display().to_string();
    // The postgres user must reach the data dir (when we are root).
    for d in [dir.path(), data.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    // Long enough at PostgreSQL's side for the kill to land there.
    let args = ["bench", "--participants", "1", "--concurrency", "1,2,4", "--duration", "2s", "--warmup", "100ms"];
    let args = [&args[..], &["--keys", "100", "--peer", "postgres", "--data-dir", &marker]].concat();
    sigkill_takes_the_servers(
        &args,
        || postmaster(&marker).is_some(),
        || postmaster(&marker).map(process_tree).unwrap_or_default(),
    )
}

/// Processes whose command line or environment mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = processes_mentioning(needle);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if String::from_utf8_lossy(&environ).contains(needle) && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Ctrl-C while `initdb` runs: the run's temp dir (twopc's WALs, the
/// half-made PostgreSQL cluster) is removed and no process of the run is
/// left, PostgreSQL's included.
#[test]
fn ctrl_c_during_the_postgres_setup_leaves_nothing_behind() -> Result<()> {
    if twopc_chaos::bench::postgres::find_binaries().is_none() {
        eprintln!("SKIPPED: {}", twopc_chaos::bench::postgres::INSTALL_HINT);
        return Ok(());
    }
    // The run's temp dir goes under this one (reachable by the postgres user).
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let marker = tmp.path().display().to_string();
    let mut child = Command::new(twopc_bin())
        .args(["bench", "--participants", "1", "--concurrency", "1", "--duration", "1s", "--warmup", "100ms"])
        .args(["--keys", "100", "--peer", "postgres"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let initdb = || {
        processes_with(&marker).into_iter().any(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("initdb")
        })
    };
    if let Err(e) = wait_for("initdb to run", Duration::from_secs(60), initdb) {
        let _ = child.kill();
        return Err(e);
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    assert!(status.success(), "kill failed");
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())?.flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}; {stderr}");
    wait_for("the run's processes to stop", Duration::from_secs(10), || processes_with(&marker).is_empty())?;
    Ok(())
}
