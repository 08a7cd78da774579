//! Process-level cluster launcher: every server is a separate OS process
//! of the built `twopc` binary, on a free loopback port, with its own data
//! directory. Used by the chaos harness, the benchmark and the
//! multi-process tests. Dropping a [`Cluster`] kills its processes (and
//! removes its directory when it owns a temp dir); they are also killed
//! if this process dies without dropping it (SIGKILL): see [`crate::child`].
//!
//! Each process gets its own cluster file (`<id>.cluster.toml`): its own
//! entry is where it listens, the other entries are where it reaches its
//! peers. Normally they are the same everywhere; a harness may point a
//! process's view of a peer at a proxy (see [`Cluster::set_view`]) to
//! fault one link. Routing never depends on addresses (the ring hashes
//! ids), so views may differ.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use twopc_common::config::ClusterConfig;

/// How long a process may take to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A port nobody listens on right now (bound, read, released).
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct ports nobody listens on right now, and never handed out
/// before by this process. All are held until all are read: ports bound
/// and released one at a time may repeat. And a port released here is free
/// until its server binds it, so the kernel could give it to the next
/// caller, say a test running alongside, whose server then took it: one of
/// the two servers failed to start, and a cluster ready by the port's
/// answer talked to the other test's (a test's participant stayed "not
/// yet reached", seen in CI).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    // Bound until the end, so that a port skipped is not offered again.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    while ports.len() < n {
        anyhow::ensure!(held.len() < n + FREE_PORT_TRIES, "no port free that this process has not used");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}

/// Ports [`free_ports`] may pass over (used before) per call, at most.
const FREE_PORT_TRIES: usize = 1_000;

pub struct Cluster {
    binary: PathBuf,
    _temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    /// The cluster as the processes listen.
    pub config: ClusterConfig,
    /// Per-process views (what each process's cluster file says).
    views: BTreeMap<String, ClusterConfig>,
    procs: BTreeMap<String, Child>,
    /// Environment given to each process at every (re)start.
    env: BTreeMap<String, Vec<(String, String)>>,
}

impl Cluster {
    /// Plans a cluster of `coordinators` + `participants` on free loopback
    /// ports under a new temp dir; starts nothing.
    pub fn new(binary: &Path, coordinators: usize, participants: usize) -> Result<Cluster> {
        let temp = tempfile::tempdir().context("temp dir")?;
        let dir = temp.path().to_path_buf();
        let mut cluster = Cluster::in_dir(binary, &dir, coordinators, participants)?;
        cluster._temp = Some(temp);
        Ok(cluster)
    }

    /// Same, under `dir` (kept after the cluster is dropped).
    pub fn in_dir(binary: &Path, dir: &Path, coordinators: usize, participants: usize) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let mut config = ClusterConfig::loopback(coordinators, participants, 0);
        let ports = free_ports(coordinators + participants)?;
        for (entry, port) in config.coordinator.iter_mut().chain(config.participant.iter_mut()).zip(ports) {
            entry.addr = format!("127.0.0.1:{port}");
        }
        let views =
            config.coordinator.iter().chain(&config.participant).map(|e| (e.id.clone(), config.clone())).collect();
        Ok(Cluster {
            binary: binary.to_path_buf(),
            _temp: None,
            dir: dir.to_path_buf(),
            config,
            views,
            procs: BTreeMap::new(),
            env: BTreeMap::new(),
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.config.coordinator.iter().chain(&self.config.participant).map(|e| e.id.clone()).collect()
    }

    pub fn participant_ids(&self) -> Vec<String> {
        self.config.participant.iter().map(|p| p.id.clone()).collect()
    }

    pub fn coordinator_ids(&self) -> Vec<String> {
        self.config.coordinator.iter().map(|c| c.id.clone()).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the cluster's directory after the cluster is dropped (a temp
    /// dir is no longer removed); returns it.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(temp) = self._temp.take() {
            let _ = temp.keep();
        }
        self.dir.clone()
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    fn config_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.cluster.toml"))
    }

    /// Where process `id` listens.
    pub fn addr(&self, id: &str) -> String {
        let entry = self.config.coordinator.iter().chain(&self.config.participant).find(|e| e.id == id);
        entry.unwrap_or_else(|| panic!("no process {id}")).addr.clone()
    }

    pub fn coordinator_addr(&self) -> String {
        self.addr(&self.config.coordinator[0].id)
    }

    /// Makes process `viewer` reach `peer` at `addr` (e.g. a proxy) from
    /// its next (re)start on.
    pub fn set_view(&mut self, viewer: &str, peer: &str, addr: &str) {
        let view = self.view_mut(viewer);
        for entry in view.coordinator.iter_mut().chain(view.participant.iter_mut()) {
            if entry.id == peer {
                entry.addr = addr.to_string();
            }
        }
    }

    /// What process `id`'s cluster file says, to change before its next
    /// (re)start (e.g. a stale copy with other vnodes).
    pub fn view_mut(&mut self, id: &str) -> &mut ClusterConfig {
        self.views.get_mut(id).unwrap_or_else(|| panic!("no process {id}"))
    }

    /// Sets the admin token in every process's cluster file (from the next
    /// (re)start on) and in [`Self::write_cluster_file`]'s.
    pub fn set_admin_token(&mut self, token: &str) {
        self.config.admin_token = Some(token.to_string());
        for view in self.views.values_mut() {
            view.admin_token = Some(token.to_string());
        }
    }

    /// Writes the cluster as the processes listen to `<dir>/cluster.toml`
    /// (for `twopc admin --config`) and returns its path.
    pub fn write_cluster_file(&self) -> Result<PathBuf> {
        let path = self.dir.join("cluster.toml");
        std::fs::write(&path, self.config.to_toml())?;
        Ok(path)
    }

    /// Environment for process `id` at every later (re)start.
    pub fn set_env(&mut self, id: &str, env: &[(&str, &str)]) {
        self.env.insert(id.to_string(), env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    }

    /// The command that runs process `id` (not started).
    pub fn command(&self, id: &str) -> Result<Command> {
        let role = if self.config.coordinator_entry(id).is_some() { "coordinator" } else { "participant" };
        std::fs::write(self.config_path(id), self.views[id].to_toml())?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg(role)
            .arg("--config")
            .arg(self.config_path(id))
            .arg("--id")
            .arg(id)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            // First starts create the directories; a log lost later is
            // still refused (LOG_CREATED).
            .arg("--init")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,tarpc=warn".into()))
            .stdin(Stdio::null());
        for (k, v) in self.env.get(id).into_iter().flatten() {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// Starts every process and waits until all listen.
    pub fn start_all(&mut self) -> Result<()> {
        for id in self.participant_ids().into_iter().chain(self.coordinator_ids()) {
            self.start(&id)?;
        }
        Ok(())
    }

    /// Starts process `id` (logs appended to `<id>.log`) and waits until
    /// it accepts connections.
    pub fn start(&mut self, id: &str) -> Result<()> {
        self.spawn(id)?;
        self.wait_ready(id)
    }

    /// Starts process `id` without waiting.
    pub fn spawn(&mut self, id: &str) -> Result<()> {
        // A process started twice would fight over its data dir and port.
        self.kill(id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id))?;
        let mut cmd = self.command(id)?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let child = crate::child::spawn_tied(cmd, libc::SIGKILL)
            .with_context(|| format!("spawning {id} ({})", self.binary.display()))?;
        self.procs.insert(id.to_string(), child);
        Ok(())
    }

    pub fn wait_ready(&mut self, id: &str) -> Result<()> {
        let addr = self.addr(id);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.procs.get_mut(id).and_then(|c| c.try_wait().ok().flatten()) {
                self.procs.remove(id);
                bail!("{id} exited with {status} before listening; log tail:\n{}", self.log_tail(id, 20));
            }
            if Instant::now() > deadline {
                bail!("{id} did not listen on {addr} within {READY_TIMEOUT:?}; log tail:\n{}", self.log_tail(id, 20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self, id: &str) -> Option<u32> {
        self.procs.get(id).map(Child::id)
    }

    pub fn is_running(&mut self, id: &str) -> bool {
        match self.procs.get_mut(id) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How process `id` exited, if it was started and has exited by itself
    /// (it stays known until restarted or [`Cluster::forget`]).
    pub fn exit_status(&mut self, id: &str) -> Option<std::process::ExitStatus> {
        self.procs.get_mut(id).and_then(|c| c.try_wait().ok().flatten())
    }

    /// Forgets an exited process (after reading its status).
    pub fn forget(&mut self, id: &str) {
        if let Some(mut child) = self.procs.remove(id) {
            let _ = child.wait();
        }
    }

    /// SIGKILLs process `id` and reaps it.
    pub fn kill(&mut self, id: &str) {
        if let Some(mut child) = self.procs.remove(id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to process `id`.
    pub fn signal(&self, id: &str, signal: i32) -> Result<()> {
        let pid = self.pid(id).with_context(|| format!("{id} is not running"))?;
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid as i32, signal) };
        if rc != 0 {
            bail!("kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for process `id` to exit by itself (e.g. at a crash fault).
    pub fn wait_exit(&mut self, id: &str, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.procs.get_mut(id).with_context(|| format!("{id} not running"))?;
            if let Some(status) = child.try_wait()? {
                self.procs.remove(id);
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{id} still running after {timeout:?}; log tail:\n{}", self.log_tail(id, 20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of process `id`'s log.
    pub fn log_tail(&self, id: &str, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.procs) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_goes_with_the_cluster_unless_kept() {
        let gone = Cluster::new(Path::new("twopc"), 1, 1).unwrap().dir().to_path_buf();
        assert!(!gone.exists(), "{} left behind", gone.display());
        let mut cluster = Cluster::new(Path::new("twopc"), 1, 1).unwrap();
        let kept = cluster.keep_dir();
        drop(cluster);
        assert!(kept.is_dir(), "{} removed", kept.display());
        std::fs::remove_dir_all(&kept).unwrap();
    }
}
