//! The child processes of `twopc local`: spawn each server, wait until it
//! accepts connections, restart it when it dies, stop them all.
//!
//! Each child runs in its own process group, so a Ctrl-C in the terminal
//! reaches only the supervisor, which then stops the children in order
//! (SIGTERM, then SIGKILL after [`STOP_GRACE`]). On Linux each child also
//! gets SIGTERM if the supervisor itself dies (`PR_SET_PDEATHSIG`), so a
//! killed supervisor leaves no servers holding the ports.
//!
//! Unix only (process groups and signals).

use crate::say::say;
use crate::signals::StopSignals;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long servers may take, together, to accept connections at start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause before restarting a server that died.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// A server exiting on its own sooner than this after its start is crash
/// looping: its restart delay doubles, up to [`MAX_RESTART_DELAY`].
pub const QUICK_CRASH: Duration = Duration::from_secs(10);
/// Longest pause between restarts of a crash-looping server.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// How long servers get to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for a SIGKILLed server to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often the supervisor looks at its children.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Pause between connection attempts while a server starts.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Deadline of one connection attempt while a server starts.
const READY_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Log lines shown when a server fails on its own.
const LOG_TAIL_LINES: usize = 5;
/// Bytes read from the end of a log to find those lines.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Starts the line written to a server's log before each start of it.
const START_MARKER: &str = "--- twopc local: starting";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Coordinator,
    Participant,
}

impl Role {
    /// The subcommand that runs this role, and its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Participant => "participant",
        }
    }
}

/// One server of the local cluster.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub role: Role,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Node {
    /// Whether this node ever finished a start (its log file says it
    /// served): from then on its data directory must hold its log.
    pub fn has_served(&self) -> bool {
        let said = format!("{} serving", self.role.as_str());
        let Ok(file) = std::fs::File::open(&self.log) else { return false };
        std::io::BufRead::lines(std::io::BufReader::new(file)).map_while(Result::ok).any(|line| line.contains(&said))
    }
}

/// One supervised server and its current process.
struct Proc {
    node: Node,
    /// `None` while dead and waiting for its restart.
    child: Option<Child>,
    /// The current (or last) process id: `Child::id` forgets it once reaped.
    pid: u32,
    /// When the current process started (to spot crash loops).
    started: Instant,
    /// When to restart it, once dead.
    restart_at: Option<Instant>,
    /// The pause before its next restart.
    restart_delay: Duration,
    /// How many times in a row it exited on its own soon after starting.
    quick_exits: u32,
    /// The task reporting that a restarted process accepts connections.
    ready_watch: Option<JoinHandle<()>>,
    /// Its log said it served once (looked up until it does: then its
    /// data directory must hold its log, and it is never given --init).
    served: bool,
}

impl Proc {
    /// Whether to start it with --init: it never served.
    fn needs_init(&mut self) -> bool {
        self.served = self.served || self.node.has_served();
        !self.served
    }
}

/// Every server of the local cluster, spawned from `exe`.
pub struct Supervisor {
    /// This binary: children run its `participant` / `coordinator` subcommands.
    exe: PathBuf,
    /// The cluster file every child is given.
    config: PathBuf,
    procs: Vec<Proc>,
}

impl Supervisor {
    pub fn new(exe: PathBuf, config: PathBuf, nodes: Vec<Node>) -> Self {
        let procs = nodes
            .into_iter()
            .map(|node| Proc {
                node,
                child: None,
                pid: 0,
                started: Instant::now(),
                restart_at: None,
                restart_delay: RESTART_DELAY,
                quick_exits: 0,
                ready_watch: None,
                served: false,
            })
            .collect();
        Supervisor { exe, config, procs }
    }

    /// Each server's node and current pid.
    pub fn servers(&self) -> impl Iterator<Item = (&Node, Option<u32>)> {
        self.procs.iter().map(|p| (&p.node, p.child.as_ref().and_then(Child::id)))
    }

    /// Spawns every server, then waits until each accepts TCP connections
    /// (all within [`READY_TIMEOUT`]). On error some children may be
    /// running: call [`Supervisor::stop`].
    pub async fn start(&mut self) -> Result<(), String> {
        for proc in &mut self.procs {
            let init = proc.needs_init();
            let child = spawn(&self.exe, &self.config, &proc.node, init)
                .map_err(|e| format!("cannot start {} {}: {e}", proc.node.role.as_str(), proc.node.id))?;
            proc.pid = child.id().unwrap_or_default();
            proc.child = Some(child);
            proc.started = Instant::now();
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for proc in &mut self.procs {
            wait_ready(proc, deadline).await?;
        }
        Ok(())
    }

    /// Restarts servers that die, until SIGINT, SIGTERM or SIGHUP; returns the
    /// signal's name.
    pub async fn supervise(&mut self, signals: &mut StopSignals) -> &'static str {
        loop {
            tokio::select! {
                name = signals.recv() => return name,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            for proc in &mut self.procs {
                match proc.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => on_death(proc, status),
                    Some(Ok(None)) => {}
                    Some(Err(e)) => say!("cannot check on {} {}: {e}", proc.node.role.as_str(), proc.node.id),
                    None if proc.restart_at.is_some_and(|at| Instant::now() >= at) => {
                        restart(proc, &self.exe, &self.config)
                    }
                    None => {}
                }
            }
        }
    }

    /// Stops every server: SIGTERM, then SIGKILL for those still running
    /// after [`STOP_GRACE`]; waits for each.
    pub async fn stop(&mut self) {
        for proc in &mut self.procs {
            if let Some(watch) = proc.ready_watch.take() {
                watch.abort();
            }
            proc.restart_at = None;
            if let Some(pid) = proc.child.as_ref().and_then(Child::id) {
                terminate(pid);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            for proc in &mut self.procs {
                if let Some(Ok(Some(status))) = proc.child.as_mut().map(Child::try_wait) {
                    say!("{} {} stopped ({status})", proc.node.role.as_str(), proc.node.id);
                    proc.child = None;
                }
            }
            if self.procs.iter().all(|p| p.child.is_none()) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for proc in &mut self.procs {
            let Some(mut child) = proc.child.take() else {
                continue;
            };
            let (role, id) = (proc.node.role.as_str(), &proc.node.id);
            say!("{role} {id} did not stop within {} s: killing it", STOP_GRACE.as_secs());
            let _ = child.start_kill();
            match tokio::time::timeout(KILL_WAIT, child.wait()).await {
                Ok(Ok(status)) => say!("{role} {id} stopped ({status})"),
                Ok(Err(e)) => say!("cannot wait for {role} {id}: {e}"),
                Err(_) => say!("{role} {id} was not reaped within {} s", KILL_WAIT.as_secs()),
            }
        }
    }
}

/// Starts one server with its output appended to its log file.
/// `init`: may begin a new log (see [`Proc::needs_init`]).
fn spawn(exe: &Path, config: &Path, node: &Node, init: bool) -> std::io::Result<Child> {
    let mut log = OpenOptions::new().create(true).append(true).open(&node.log)?;
    writeln!(log, "{START_MARKER} {} {} ---", node.role.as_str(), node.id)?;
    let stderr = log.try_clone()?;
    let mut command = Command::new(exe);
    command
        .arg(node.role.as_str())
        .arg("--config")
        .arg(config)
        .arg("--id")
        .arg(&node.id)
        .arg("--data-dir")
        .arg(&node.data_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a terminal's Ctrl-C reaches only us.
        .process_group(0);
    // A new log only for a node that never served: one that ran and lost
    // its log is refused by the server itself, at every restart, rather
    // than started empty (restarts passed --init, and a node whose log
    // files were removed came back with no data). One killed during its
    // very first start, before its log existed, gets --init again.
    if init {
        command.arg("--init");
    }
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), which is async-signal-safe. The death signal follows the
    // spawning thread, which is the runtime's main thread (the supervisor
    // runs in `main`'s future), alive until the process exits.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Waits until `proc` accepts connections, failing if it exits first or
/// `deadline` passes.
async fn wait_ready(proc: &mut Proc, deadline: Instant) -> Result<(), String> {
    let node = &proc.node;
    let (role, id, addr) = (node.role.as_str(), &node.id, &node.addr);
    loop {
        let Some(child) = proc.child.as_mut() else {
            return Err(format!("{role} {id} is not running"));
        };
        let pid = proc.pid;
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!(
                    "{role} {id} (pid {pid}) exited ({status}) before accepting connections on {addr}; \
                     see its log {}{}",
                    node.log.display(),
                    tail_note(&node.log)
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot check on {role} {id} (pid {pid}): {e}")),
        }
        if accepts(addr).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{role} {id} (pid {pid}) did not accept connections on {addr} within {} s; see its log {}{}",
                READY_TIMEOUT.as_secs(),
                node.log.display(),
                tail_note(&node.log)
            ));
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}

async fn accepts(addr: &str) -> bool {
    matches!(tokio::time::timeout(READY_CONNECT_TIMEOUT, TcpStream::connect(addr)).await, Ok(Ok(_)))
}

/// Reports a death and schedules the restart (backing off on crash loops).
fn on_death(proc: &mut Proc, status: ExitStatus) {
    let node = &proc.node;
    let pid = proc.pid;
    proc.child = None;
    if let Some(watch) = proc.ready_watch.take() {
        watch.abort();
    }
    // A server that keeps exiting on its own soon after starting is crash
    // looping (say, on a corrupt log): back off. A server killed by a signal
    // (say, `kill -9` in a test) is restarted after the usual pause.
    let crash_looping = status.code().is_some() && proc.started.elapsed() < QUICK_CRASH;
    proc.quick_exits = if crash_looping { proc.quick_exits.saturating_add(1) } else { 0 };
    proc.restart_delay = backoff(proc.quick_exits);
    // A server that exited on its own (not by a signal) says why in its log.
    let why = if status.code().is_some() { tail_note(&node.log) } else { String::new() };
    say!(
        "{} {} (pid {pid}) died ({status}); restarting it in {} s{why}",
        node.role.as_str(),
        node.id,
        proc.restart_delay.as_secs()
    );
    proc.restart_at = Some(Instant::now() + proc.restart_delay);
}

/// The pause before a restart after `quick_exits` crash-loop exits in a
/// row: 1 s, 1 s, 2 s, 4 s, ... up to [`MAX_RESTART_DELAY`].
fn backoff(quick_exits: u32) -> Duration {
    let doublings = quick_exits.saturating_sub(1).min(16);
    (RESTART_DELAY * 2u32.pow(doublings)).min(MAX_RESTART_DELAY)
}

/// Restarts a dead server on its data directory, unless that directory
/// went missing while it ran (removed, or a volume unmounted): started
/// there, it would make a new, empty node and silently lose its committed
/// data. It is looked at again after each pause until it is back.
fn restart(proc: &mut Proc, exe: &Path, config: &Path) {
    let (role, id) = (proc.node.role.as_str(), proc.node.id.clone());
    let owner = proc.node.data_dir.join(twopc_common::data_dir::OWNER_FILE);
    if !owner.exists() {
        let secs = put_off(proc);
        say!(
            "not restarting {role} {id}: its data directory {} is gone or empty (no {}); started there, it \
             would lose its committed data. Restore it (looking again in {secs} s), or stop twopc local",
            proc.node.data_dir.display(),
            twopc_common::data_dir::OWNER_FILE,
        );
        return;
    }
    let init = proc.needs_init();
    match spawn(exe, config, &proc.node, init) {
        Ok(child) => {
            let pid = child.id().unwrap_or_default();
            say!("{role} {id} restarted: pid {pid} (log {})", proc.node.log.display());
            proc.pid = pid;
            proc.child = Some(child);
            proc.started = Instant::now();
            proc.restart_at = None;
            let addr = proc.node.addr.clone();
            proc.ready_watch = Some(tokio::spawn(async move {
                let deadline = Instant::now() + READY_TIMEOUT;
                while Instant::now() < deadline {
                    if accepts(&addr).await {
                        say!("{role} {id} (pid {pid}) accepts connections on {addr} again");
                        return;
                    }
                    tokio::time::sleep(READY_POLL_INTERVAL).await;
                }
                say!("{role} {id} (pid {pid}) does not accept connections on {addr} yet");
            }));
        }
        Err(e) => {
            let secs = put_off(proc);
            say!("cannot restart {role} {id}: {e}; retrying in {secs} s");
        }
    }
}

/// Schedules the next restart attempt of a server that could not be
/// restarted, after twice the last pause (at most [`MAX_RESTART_DELAY`]);
/// returns that pause in seconds.
fn put_off(proc: &mut Proc) -> u64 {
    proc.restart_delay = (proc.restart_delay * 2).min(MAX_RESTART_DELAY);
    proc.restart_at = Some(Instant::now() + proc.restart_delay);
    proc.restart_delay.as_secs()
}

/// Asks a child to exit (SIGTERM).
fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child
    // we have not reaped yet, so it cannot name another process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// `; it ended with:` and the log's last lines, indented, or nothing.
fn tail_note(log: &Path) -> String {
    let lines = log_tail(log, LOG_TAIL_LINES);
    if lines.is_empty() {
        return String::new();
    }
    let mut note = String::from("; it ends with:");
    for line in lines {
        note.push_str("\n    ");
        note.push_str(&line);
    }
    note
}

/// The last `n` non-empty lines the latest process wrote to a log (empty if
/// it cannot be read).
fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let Ok(bytes) = read() else { return Vec::new() };
    let text = String::from_utf8_lossy(&bytes);
    let latest = text.rfind(START_MARKER).map_or(&text[..], |at| {
        let after = &text[at..];
        after.find('\n').map_or("", |end| &after[end + 1..])
    });
    let lines: Vec<&str> = latest.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_only_in_crash_loops() {
        assert_eq!(backoff(0), RESTART_DELAY);
        assert_eq!(backoff(1), RESTART_DELAY);
        assert_eq!(backoff(2), RESTART_DELAY * 2);
        assert_eq!(backoff(3), RESTART_DELAY * 4);
        assert_eq!(backoff(u32::MAX), MAX_RESTART_DELAY);
    }

    #[test]
    fn log_tail_returns_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("twopc-cli-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p1.log");
        std::fs::write(&path, "one\ntwo\n\nthree\nfour\nfive\nsix\nseven\n").unwrap();
        assert_eq!(log_tail(&path, 3), ["five", "six", "seven"]);
        assert_eq!(log_tail(&path, 100).len(), 7);
        assert!(log_tail(&dir.join("missing.log"), 3).is_empty());
        let marked = format!("old\n{START_MARKER} p1 ---\nerror: a\n{START_MARKER} p1 ---\nerror: b\n");
        std::fs::write(&path, marked).unwrap();
        assert_eq!(log_tail(&path, 3), ["error: b"], "only the latest process's lines");
        assert!(tail_note(&dir.join("missing.log")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
