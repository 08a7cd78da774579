//! `twopc local`, the README's first command, as a user runs it: it starts
//! a cluster and proves it with a smoke transaction, restarts a server
//! killed with SIGKILL (which recovers its data), stops everything on
//! SIGTERM, and resumes the same data when run again.

mod support;

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{processes_mentioning, text, twopc, twopc_bin, wait_for};

/// A running `twopc local`, its stdout collected as it comes; killed with
/// its servers on drop.
struct Local {
    child: Child,
    stdout: Arc<Mutex<String>>,
    marker: String,
}

impl Local {
    fn start(dir: &Path, base_port: u16) -> Result<Local> {
        Local::start_reading_until(dir, base_port, None)
    }

    /// Starts it; its stdout is read until a line contains `leave_after`
    /// (if given), and then closed, like `twopc local | head`.
    fn start_reading_until(dir: &Path, base_port: u16, leave_after: Option<&'static str>) -> Result<Local> {
        let mut child = Command::new(twopc_bin())
            .args(["local", "--dir", &dir.display().to_string(), "--base-port", &base_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        let pipe = child.stdout.take().context("stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                if leave_after.is_some_and(|needle| line.contains(needle)) {
                    break;
                }
            }
        });
        Ok(Local { child, stdout, marker: dir.display().to_string() })
    }

    fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn wait_for_line(&self, needle: &str) -> Result<()> {
        wait_for(&format!("{needle:?} from twopc local"), Duration::from_secs(90), || self.output().contains(needle))
            .with_context(|| self.output())
    }

    /// The pid `twopc local`'s table gives server `id`.
    fn pid_of(&self, id: &str) -> Result<u32> {
        let out = self.output();
        let row = out.lines().find(|l| l.starts_with(&format!("{id} "))).context("no table row")?;
        Ok(row.split_whitespace().nth(3).context("no pid column")?.parse()?)
    }

    /// Sends SIGTERM and returns the exit code once it has exited.
    fn terminate(&mut self) -> Result<Option<i32>> {
        self.stop_with("TERM")
    }

    /// Sends SIG`signal` and returns the exit code once it has exited.
    fn stop_with(&mut self, signal: &str) -> Result<Option<i32>> {
        Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status()?;
        let mut code = None;
        wait_for("twopc local to exit", Duration::from_secs(20), || {
            code = self.child.try_wait().ok().flatten().map(|s| s.code());
            code.is_some()
        })?;
        Ok(code.flatten())
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in processes_mentioning(&self.marker) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// A port P with P..P+3 free just now (the coordinator and 3 participants).
/// SIGKILLs server `id` and waits until `local` has started it again.
fn kill_and_wait_for_restart(local: &Local, data: &Path, id: &str) -> Result<()> {
    let pid = local.pid_of(id)?;
    Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    let marker = data.join(id).display().to_string();
    wait_for(&format!("{id} to be restarted"), Duration::from_secs(30), || {
        processes_mentioning(&marker).iter().any(|&other| other != pid)
    })
}

fn free_port_range() -> Result<u16> {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port > u16::MAX - 3 {
            continue;
        }
        let rest: Vec<_> = (1..=3).map(|i| std::net::TcpListener::bind(("127.0.0.1", port + i))).collect();
        if rest.iter().all(Result::is_ok) {
            return Ok(port);
        }
    }
    bail!("no 4 consecutive free ports")
}

#[test]
fn local_starts_restarts_a_killed_server_stops_on_sigterm_and_resumes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("cluster");
    let port = free_port_range()?;
    let coordinator = format!("127.0.0.1:{port}");

    let mut local = Local::start(&data, port)?;
    local.wait_for_line("smoke test: committed")?;
    // It holds the admin token: its owner's only (trial 19C: 0644).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("cluster.toml"))?.permissions().mode();
    assert_eq!(mode & 0o077, 0, "cluster.toml mode {mode:o}");
    let out = twopc(&["txn", "--coordinator", &coordinator, "put", "alice", "100", "put", "bob", "50"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A second `local` on the same DIR is refused, naming the first, on any
    // ports, and leaves the first running.
    let data_arg = data.display().to_string();
    for other_port in [port, if port > 30_000 { port - 20 } else { port + 20 }] {
        let out = twopc(&["local", "--dir", &data_arg, "--base-port", &other_port.to_string()])?;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let expected = format!("in use by another twopc local (pid {})", local.child.id());
        assert!(text(&out).contains(&expected), "{}", text(&out));
    }

    // SIGKILL a participant: `local` restarts it on its data.
    kill_and_wait_for_restart(&local, &data, "p1")?;
    wait_for("a transaction to commit after the restart", Duration::from_secs(30), || {
        twopc(&["txn", "--coordinator", &coordinator, "expect", "alice", "100", "put", "carol", "1"])
            .is_ok_and(|o| o.status.code() == Some(0))
    })?;

    assert_eq!(local.terminate()?, Some(0), "{}", local.output());
    assert!(local.output().contains("twopc local stopped"), "{}", local.output());
    wait_for("every server to stop", Duration::from_secs(10), || processes_mentioning(&local.marker).is_empty())?;
    drop(local);

    // The same command again resumes the same data.
    let mut again = Local::start(&data, port)?;
    again.wait_for_line("smoke test: committed")?;
    assert!(again.output().contains("reused"), "{}", again.output());
    let out = twopc(&["get", "--coordinator", &coordinator, "--json", "alice", "bob", "carol"])?;
    let reads: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| text(&out))?;
    assert_eq!(reads["reads"], serde_json::json!({"alice": "100", "bob": "50", "carol": "1"}));

    // A closed terminal (SIGHUP) stops it as SIGTERM does, saying so (it
    // died at once, without its closing lines).
    assert_eq!(again.stop_with("HUP")?, Some(0), "{}", again.output());
    assert!(again.output().contains("SIGHUP received"), "{}", again.output());

    // On other ports it moves: data is tied to node ids, not addresses
    // (it was refused as "a different cluster").
    wait_for("every server to stop", Duration::from_secs(10), || processes_mentioning(&again.marker).is_empty())?;
    drop(again);
    let moved_port = loop {
        let p = free_port_range()?;
        if p != port {
            break p;
        }
    };
    let mut again = Local::start(&data, moved_port)?;
    again.wait_for_line("smoke test: committed")?;
    let moved = format!("moving the cluster from --base-port {port} to {moved_port}");
    assert!(again.output().contains(&moved), "{}", again.output());
    let out = twopc(&["get", "--coordinator", &format!("127.0.0.1:{moved_port}"), "--json", "alice"])?;
    assert!(text(&out).contains(r#""alice":"100""#), "{}", text(&out));

    // Found by a user: a node that ran, its log files removed, was
    // restarted with --init and served its keys as absent. Now it is
    // refused at every restart, and says why.
    std::fs::remove_dir_all(data.join("p1").join("wal"))?;
    std::fs::remove_file(data.join("p1").join("LOG_CREATED"))?;
    let pid = again.pid_of("p1")?;
    Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    wait_for("p1 to refuse its emptied directory", Duration::from_secs(30), || {
        std::fs::read_to_string(data.join("p1.log")).is_ok_and(|log| log.contains("holds no twopc log"))
    })?;
    assert!(!data.join("p1").join("wal").exists(), "a new, empty log was begun");
    assert_eq!(again.terminate()?, Some(0), "{}", again.output());
    Ok(())
}

/// `twopc local | head`: the supervisor's next line after the reader left
/// used to panic ("failed printing to stdout: Broken pipe"), taking every
/// server down with it.
#[test]
fn local_outlives_the_reader_of_its_output() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("cluster");
    let port = free_port_range()?;
    let coordinator = format!("127.0.0.1:{port}");
    let mut local = Local::start_reading_until(&data, port, Some("smoke test: committed"))?;
    local.wait_for_line("smoke test: committed")?;
    // The supervisor says something about the killed server: to nobody.
    kill_and_wait_for_restart(&local, &data, "p1")?;
    wait_for("a transaction to commit after the restart", Duration::from_secs(30), || {
        twopc(&["txn", "--coordinator", &coordinator, "put", "after", "restart"])
            .is_ok_and(|o| o.status.code() == Some(0))
    })?;
    assert_eq!(local.terminate()?, Some(0));
    wait_for("every server to stop", Duration::from_secs(10), || processes_mentioning(&local.marker).is_empty())?;
    Ok(())
}

#[test]
fn local_refuses_bad_flags_and_busy_ports_before_touching_its_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("never");
    let data_arg = data.display().to_string();
    let out = twopc(&["local", "--dir", &data_arg, "--base-port", "65534"])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("leaves no room"), "{}", text(&out));

    let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = busy.local_addr()?.port().to_string();
    let out = twopc(&["local", "--dir", &data_arg, "--base-port", &port])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&port), "the busy port is named: {}", text(&out));
    assert!(!data.exists(), "a refused start created its dir");

    // So do the servers started by hand: a busy port leaves no new (valid
    // looking, empty) data directory behind; a file given as the data
    // directory is said to be one.
    let busy_too = std::net::TcpListener::bind("127.0.0.1:0")?;
    let other = busy_too.local_addr()?.port();
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(
        &cluster,
        format!("[[coordinator]]\nid = \"c1\"\naddr = \"127.0.0.1:{other}\"\n[[participant]]\nid = \"p1\"\naddr = \"127.0.0.1:{port}\"\n"),
    )?;
    let cluster_arg = cluster.display().to_string();
    // A cluster file that cannot be used is a usage error, as for `admin`.
    for (role, id) in [("participant", "c1"), ("coordinator", "p1")] {
        let out = twopc(&[role, "--config", &cluster_arg, "--id", id, "--data-dir", &data_arg])?;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(text(&out).contains(&format!("no {role} with id \"{id}\"")), "{}", text(&out));
    }
    let missing = dir.path().join("missing.toml").display().to_string();
    let out = twopc(&["participant", "--config", &missing, "--id", "p1", "--data-dir", &data_arg])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for (role, id) in [("participant", "p1"), ("coordinator", "c1")] {
        let out = twopc(&[role, "--config", &cluster_arg, "--id", id, "--data-dir", &data_arg])?;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("cannot listen"), "{}", text(&out));
        assert!(!data.exists(), "{role}: a refused start created its dir");
    }
    drop((busy, busy_too));
    let out = twopc(&["participant", "--config", &cluster_arg, "--id", "p1", "--data-dir", &cluster_arg, "--init"])?;
    assert!(text(&out).contains("exists and is not a directory"), "{}", text(&out));
    // A directory with no log (a mistyped --data-dir) is refused without
    // --init, before anything is written there.
    for (role, id) in [("participant", "p1"), ("coordinator", "c1")] {
        let out = twopc(&[role, "--config", &cluster_arg, "--id", id, "--data-dir", &data_arg])?;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("holds no twopc log") && text(&out).contains("--init"), "{}", text(&out));
        assert!(!data.exists(), "{role}: a refused start created its dir");
    }
    // Once begun with --init, the log is recovered without it.
    let log = dir.path().join("p1.log");
    for init in [true, false] {
        let mut args = vec!["participant", "--config", &cluster_arg, "--id", "p1", "--data-dir", &data_arg];
        args.extend(init.then_some("--init"));
        let stderr = std::fs::File::create(&log)?;
        let mut p1 = Command::new(twopc_bin()).args(&args).stdout(Stdio::null()).stderr(stderr).spawn()?;
        let serving = wait_for("p1 to serve", Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("participant serving"))
        });
        let _ = p1.kill();
        let _ = p1.wait();
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        serving.with_context(|| format!("--init {init}: {said}"))?;
    }
    Ok(())
}

/// A server whose log went missing while it ran is never started empty:
/// with its `wal/` removed, the restarted participant refuses its data
/// directory (every time); with its whole data directory removed, `local`
/// does not restart it at all. Either way, its committed data would have
/// been served as absent.
#[test]
fn a_server_whose_data_went_missing_is_not_restarted_empty() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("cluster");
    let port = free_port_range()?;
    let local = Local::start(&data, port)?;
    local.wait_for_line("smoke test: committed")?;

    std::fs::remove_dir_all(data.join("p1").join("wal"))?;
    Command::new("kill").args(["-KILL", &local.pid_of("p1")?.to_string()]).status()?;
    local.wait_for_line("was created before but is missing or incomplete")?;

    std::fs::remove_dir_all(data.join("p2"))?;
    Command::new("kill").args(["-KILL", &local.pid_of("p2")?.to_string()]).status()?;
    local.wait_for_line("not restarting participant p2")?;
    // Looked at again after the pause: still not started.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!data.join("p2").exists(), "p2 was started on an empty directory\n{}", local.output());
    assert!(!local.output().contains("participant p2 restarted"), "{}", local.output());
    Ok(())
}
