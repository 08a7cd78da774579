//! The peer: two-phase commit over PostgreSQL, as an application would
//! run it. N local PostgreSQL clusters (one per shard, each holding the
//! keys the matching twopc participant holds) with `fsync = on`,
//! `synchronous_commit = on` and `max_prepared_transactions` set, in
//! temp dirs, on free loopback ports; an application-side coordinator
//! in this process with its own decision log (a file, appended and
//! `fdatasync`ed by one writer thread that group-commits every record
//! that arrives while a sync is in flight: the same technique as
//! twopc's WAL).
//!
//! Per transaction, each shard gets one round trip
//! `BEGIN; UPDATE ...; PREPARE TRANSACTION 'gid'`; when all succeed the
//! decision is appended to the log and synced, the application is
//! answered, and `COMMIT PREPARED 'gid'` goes out on each shard's
//! connection off the critical path (sent before that connection's next
//! transaction). If any shard fails, the others get `ROLLBACK PREPARED`
//! and nothing is logged (presumed abort). A transaction on one shard is
//! a plain `BEGIN; ...; COMMIT` (PostgreSQL's one-phase path). Lock
//! waits are bounded by `lock_timeout` ([`LOCK_TIMEOUT_MS`]): a deadlock
//! across shards, which no single PostgreSQL can see, becomes an abort.
//!
//! PostgreSQL refuses to run as root: when this process is root, every
//! PostgreSQL command runs as the `postgres` system user, in directories
//! that user owns.
//!
//! Every PostgreSQL process we start is our child ([`TiedChild`]: the
//! postmaster runs in the foreground, not daemonised by `pg_ctl`): it is
//! stopped when its future is cancelled (Ctrl-C during `initdb`), when
//! the shard is dropped, and when this process dies, SIGKILL included.

use super::driver::{TxnResult, Worker};
use super::procstat;
use super::workload::{KeySpace, ShardKey, TxnPlan, INITIAL_BALANCE};
use super::{NodeSample, Sample};
use crate::child::TiedChild;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// How long a statement waits for a row lock before its transaction aborts.
pub const LOCK_TIMEOUT_MS: u64 = 50;
/// Connections kept free beyond the workers' (monitoring, slack).
pub const SPARE_CONNECTIONS: usize = 8;
/// Most decision records one log sync covers.
pub const MAX_LOG_GROUP: usize = 1024;
/// Queue bound of the decision log.
pub const LOG_QUEUE_CAPACITY: usize = 4096;
/// Commit messages a worker may have outstanding before it waits.
pub const MAX_PENDING_COMMITS_PER_SHARD: usize = 2;
/// How long `initdb` may take, and the postmaster to get ready.
pub const PG_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an immediate shutdown may take before the postmaster is
/// SIGKILLed.
pub const PG_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once while growing the pool.
const CONNECT_PARALLELISM: usize = 16;

/// How to install PostgreSQL when it is absent.
pub const INSTALL_HINT: &str = "PostgreSQL not found (looked for initdb and pg_ctl on PATH and in \
     /usr/lib/postgresql/*/bin). Install it with `apt-get install -y postgresql` (Debian/Ubuntu) \
     to compare against PostgreSQL two-phase commit; twopc's side runs anyway.";

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_binaries() -> Option<PathBuf> {
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let pg_ctl = dir.join("pg_ctl");
            if pg_ctl.is_file() {
                // Follow a symlink (/usr/local/bin/pg_ctl -> the real bin dir).
                if let Some(real) = pg_ctl.canonicalize().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
                    if complete(&real) {
                        return Some(real);
                    }
                }
                if complete(&dir) {
                    return Some(dir);
                }
            }
        }
    }
    // Debian layout: the newest version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` system user.
fn postgres_user() -> Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or null; we
    // copy the two fields out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root, and there is no `postgres` system user to run PostgreSQL as (PostgreSQL refuses root)");
    }
    // SAFETY: non-null, points to a valid passwd entry.
    unsafe { Ok(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// A command running `bin` in `dir`, as the `postgres` user when we are
/// root (the child switches user itself: no `runuser` in between, so the
/// death signal of [`TiedChild`] reaches PostgreSQL's own process).
fn pg_command(bin: &Path, dir: &Path) -> Result<Command> {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir).stdin(Stdio::null());
    if is_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postgres_user()?;
        cmd.uid(uid).gid(gid).env("HOME", dir).env("USER", "postgres").env("LOGNAME", "postgres");
    }
    Ok(cmd)
}

/// The last `lines` lines of `log`.
fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `cmd` to completion (at most [`PG_START_TIMEOUT`]), its output
/// appended to `log`. Cancelling the future kills it.
async fn run(mut cmd: Command, what: &str, log: &Path) -> Result<()> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    let mut child = TiedChild::spawn(cmd, libc::SIGKILL).with_context(|| format!("running {what}"))?;
    match child.wait(PG_START_TIMEOUT).await? {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{what} failed ({status}):\n{}", log_tail(log, 15)),
        None => bail!("{what} did not finish within {PG_START_TIMEOUT:?}:\n{}", log_tail(log, 15)),
    }
}

/// One PostgreSQL cluster (a shard): its postmaster is our child, stopped
/// (immediate mode) on drop, and also when this process dies.
pub struct PgCluster {
    dir: PathBuf,
    pub port: u16,
    pub pid: Option<u32>,
    postmaster: Option<TiedChild>,
}

impl PgCluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// initdb + configure + start under `dir` (created; handed to the
    /// `postgres` user when we are root). Cancelling the future stops
    /// whatever it started.
    pub async fn start(bin: &Path, dir: &Path, max_connections: usize) -> Result<PgCluster> {
        std::fs::create_dir_all(dir)?;
        if is_root() {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the postgres user", dir.display()))?;
            // The postgres user must be able to reach the directory.
            let reach = pg_command(Path::new("test"), Path::new("/"))?.arg("-w").arg(dir).status();
            if !reach.map(|s| s.success()).unwrap_or(false) {
                bail!(
                    "the postgres user cannot write {} (a parent directory is closed to it); \
                     choose a --data-dir it can reach, e.g. under /tmp",
                    dir.display()
                );
            }
        }
        let port = crate::cluster::free_port()?;
        let mut pg = PgCluster { dir: dir.to_path_buf(), port, pid: None, postmaster: None };
        let log = pg.log();
        let mut initdb = pg_command(&bin.join("initdb"), dir)?;
        initdb.arg("-D").arg(pg.data()).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        run(initdb, "initdb", &log).await?;
        let settings = format!(
            "\n# twopc bench\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             fsync = on\nsynchronous_commit = on\nfull_page_writes = on\nwal_sync_method = fdatasync\n\
             max_connections = {max_connections}\nmax_prepared_transactions = {max_connections}\n\
             lock_timeout = '{LOCK_TIMEOUT_MS}ms'\nmax_wal_size = '4GB'\ncheckpoint_timeout = '30min'\n\
             logging_collector = off\nlog_min_messages = warning\n",
            dir = dir.display(),
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data().join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .context("configuring postgresql.conf")?;
        pg.start_postmaster(bin).await?;
        Ok(pg)
    }

    /// Runs `postgres -D data` as our child and waits until it says
    /// `ready` in `postmaster.pid` (what `pg_ctl start -w` waits for).
    /// SIGQUIT at our death: PostgreSQL's immediate shutdown, which stops
    /// its backends too.
    async fn start_postmaster(&mut self, bin: &Path) -> Result<()> {
        let log = self.log();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = pg_command(&bin.join("postgres"), &self.dir)?;
        cmd.arg("-D").arg(self.data()).stdout(out.try_clone()?).stderr(out);
        let postmaster = TiedChild::spawn(cmd, libc::SIGQUIT).context("starting postgres")?;
        self.pid = Some(postmaster.id());
        let postmaster = self.postmaster.insert(postmaster);
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let deadline = Instant::now() + PG_START_TIMEOUT;
        loop {
            // Line 8 of postmaster.pid is the postmaster's status.
            let status = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if status.lines().nth(7).map(str::trim) == Some("ready") {
                return Ok(());
            }
            if let Some(exit) = postmaster.try_wait()? {
                bail!("postgres exited ({exit}) before it was ready:\n{}", log_tail(&log, 15));
            }
            if Instant::now() > deadline {
                bail!("postgres was not ready within {PG_START_TIMEOUT:?}:\n{}", log_tail(&log, 15));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10", self.port)
    }

    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(), NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL on port {}", self.port))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT), as `pg_ctl stop -m immediate`.
        if let Some(mut postmaster) = self.postmaster.take() {
            postmaster.stop(libc::SIGQUIT, PG_STOP_TIMEOUT);
        }
    }
}

/// Creates the table and loads every key of `keys` with the initial
/// balance.
pub async fn load_shard(client: &Client, keys: &[String]) -> Result<()> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v bigint NOT NULL CHECK (v >= 0))")
        .await?;
    client
        .execute(
            "INSERT INTO kv SELECT unnest($1::text[]), $2::bigint ON CONFLICT DO NOTHING",
            &[&keys, &(INITIAL_BALANCE as i64)],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE kv").await?;
    client.batch_execute("CHECKPOINT").await?;
    Ok(())
}

/// A record for the decision log and who to tell once it is durable.
type LogEntry = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// Decision log: one writer thread appends every queued record, one
/// `fdatasync` per group.
pub struct DecisionLog {
    tx: Option<mpsc::Sender<LogEntry>>,
    syncs: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl DecisionLog {
    pub fn open(path: &Path) -> Result<DecisionLog> {
        use std::os::unix::io::AsRawFd;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening decision log {}", path.display()))?;
        let (tx, mut rx) = mpsc::channel::<LogEntry>(LOG_QUEUE_CAPACITY);
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = syncs.clone();
        let writer = std::thread::Builder::new().name("decision-log".into()).spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut group = vec![first];
                while group.len() < MAX_LOG_GROUP {
                    match rx.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let bytes: Vec<u8> = group.iter().flat_map(|(r, _)| r.iter().copied()).collect();
                let result = file.write_all(&bytes).and_then(|()| {
                    // SAFETY: the fd is open for the whole call.
                    if unsafe { libc::fdatasync(file.as_raw_fd()) } == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
                counter.fetch_add(1, Ordering::Relaxed);
                let result = result.map_err(|e| e.to_string());
                for (_, done) in group {
                    let _ = done.send(result.clone());
                }
            }
        })?;
        Ok(DecisionLog { tx: Some(tx), syncs, writer: Some(writer) })
    }

    /// Appends `record`; returns once it is durable.
    pub async fn append(&self, record: Vec<u8>) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or("decision log closed")?;
        tx.send((record, done)).await.map_err(|_| "decision log closed".to_string())?;
        wait.await.map_err(|_| "decision log writer stopped".to_string())?
    }

    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// N shards + the application's decision log.
pub struct PgPeer {
    pub shards: Vec<PgCluster>,
    monitors: Vec<Client>,
    pub log: Arc<DecisionLog>,
    commit_errors: Arc<AtomicU64>,
    next_worker: usize,
    _dir: PathBuf,
}

impl PgPeer {
    /// Starts one cluster per shard under `dir` and loads the keys.
    pub async fn start(bin: &Path, dir: &Path, keys: &KeySpace, max_concurrency: usize) -> Result<PgPeer> {
        std::fs::create_dir_all(dir)?;
        if is_root() {
            // Let the postgres user traverse (not read) the parents we made.
            use std::os::unix::fs::PermissionsExt;
            for d in [dir, dir.parent().unwrap_or(dir)] {
                let mode = std::fs::metadata(d)?.permissions().mode();
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711))?;
            }
        }
        let max_connections = max_concurrency + SPARE_CONNECTIONS;
        let mut shards = Vec::new();
        for i in 0..keys.shard_count() {
            let sub = dir.join(format!("p{}", i + 1));
            shards.push(PgCluster::start(bin, &sub, max_connections).await?);
        }
        let mut monitors = Vec::new();
        for (shard, keys) in shards.iter().zip(&keys.shards) {
            let client = shard.connect().await?;
            load_shard(&client, keys).await.context("loading the keys into PostgreSQL")?;
            monitors.push(client);
        }
        let log = Arc::new(DecisionLog::open(&dir.join("decisions.log"))?);
        Ok(PgPeer {
            shards,
            monitors,
            log,
            commit_errors: Arc::new(AtomicU64::new(0)),
            next_worker: 0,
            _dir: dir.to_path_buf(),
        })
    }

    /// `count` new workers, each with one connection per shard.
    pub async fn workers(&mut self, count: usize) -> Result<Vec<PgWorker>> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let n = (count - out.len()).min(CONNECT_PARALLELISM);
            let batch = (0..n).map(|_| async {
                let mut conns = Vec::new();
                for shard in &self.shards {
                    conns.push(Arc::new(shard.connect().await?));
                }
                anyhow::Ok(conns)
            });
            for conns in futures::future::try_join_all(batch).await? {
                out.push(PgWorker {
                    id: self.next_worker,
                    seq: 0,
                    conns,
                    log: self.log.clone(),
                    pending: tokio::task::JoinSet::new(),
                    commit_errors: self.commit_errors.clone(),
                });
                self.next_worker += 1;
            }
        }
        Ok(out)
    }

    /// `COMMIT PREPARED` that failed (none expected).
    pub fn commit_errors(&self) -> u64 {
        self.commit_errors.load(Ordering::Relaxed)
    }

    /// Each shard's WAL syncs (`pg_stat_wal.wal_sync`: backends flush
    /// their counts at most once a second, so a window's count lags by
    /// up to that), CPU and proportional memory of its processes; the
    /// decision log's syncs.
    pub async fn sample(&self) -> Result<Sample> {
        let mut nodes = BTreeMap::new();
        for (i, (shard, monitor)) in self.shards.iter().zip(&self.monitors).enumerate() {
            let row =
                monitor.query_one("SELECT wal_sync FROM pg_stat_wal", &[]).await.context("reading pg_stat_wal")?;
            let syncs: i64 = row.get(0);
            nodes.insert(
                format!("p{}", i + 1),
                NodeSample {
                    role: "shard".into(),
                    syncs: Some(syncs.max(0) as u64),
                    batches: None,
                    cpu_ticks: shard.pid.and_then(procstat::tree_cpu_ticks),
                    rss_kib: shard.pid.and_then(procstat::tree_pss_kib),
                    ..NodeSample::default()
                },
            );
        }
        nodes.insert(
            "log".into(),
            NodeSample {
                role: "decision log".into(),
                syncs: Some(self.log.syncs()),
                batches: None,
                ..NodeSample::default()
            },
        );
        Ok(Sample::new(nodes))
    }
}

/// One application thread of control: a connection to each shard.
pub struct PgWorker {
    id: usize,
    seq: u64,
    conns: Vec<Arc<Client>>,
    log: Arc<DecisionLog>,
    /// `COMMIT PREPARED` messages sent and not yet answered.
    pending: tokio::task::JoinSet<Result<(), tokio_postgres::Error>>,
    commit_errors: Arc<AtomicU64>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statements a plan runs on each shard it touches (keys in order,
/// so two transactions on one shard never wait for each other in a cycle).
pub fn statements(plan: &TxnPlan) -> BTreeMap<usize, Vec<String>> {
    let mut per: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    let mut add = |k: &ShardKey, set: String| {
        per.entry(k.shard)
            .or_default()
            .push((k.key.clone(), format!("UPDATE kv SET v = {set} WHERE k = {}", quote(&k.key))));
    };
    match plan {
        TxnPlan::Write { keys, value } => keys.iter().for_each(|k| add(k, value.to_string())),
        TxnPlan::Transfer { from, to, amount } => {
            add(from, format!("v - {amount}"));
            add(to, format!("v + {amount}"));
        }
    }
    per.into_iter()
        .map(|(shard, mut stmts)| {
            stmts.sort();
            (shard, stmts.into_iter().map(|(_, s)| s).collect())
        })
        .collect()
}

/// Whether PostgreSQL refused the transaction (nothing written) rather
/// than failed.
fn is_abort(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        [
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::CHECK_VIOLATION,
            SqlState::QUERY_CANCELED,
        ]
        .contains(c)
    })
}

impl PgWorker {
    /// Sends `sql` on shard `s`'s connection now (before any later request
    /// on it) and lets it complete in the background.
    async fn send_background(&mut self, s: usize, sql: String) {
        let conn = self.conns[s].clone();
        let mut fut = Box::pin(async move { conn.batch_execute(&sql).await });
        // The first poll writes the request onto the connection.
        match futures::poll!(&mut fut) {
            Poll::Ready(Err(_)) => {
                self.commit_errors.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Ready(Ok(())) => {}
            Poll::Pending => {
                self.pending.spawn(fut);
            }
        }
        while self.pending.len() > MAX_PENDING_COMMITS_PER_SHARD * self.conns.len() {
            self.reap_one().await;
        }
    }

    async fn reap_one(&mut self) {
        if let Some(done) = self.pending.join_next().await {
            if !matches!(done, Ok(Ok(()))) {
                self.commit_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Worker for PgWorker {
    async fn execute(&mut self, plan: TxnPlan) -> TxnResult {
        let per_shard = statements(&plan);
        if per_shard.len() == 1 {
            let (s, stmts) = per_shard.into_iter().next().expect("one shard");
            let sql = format!("BEGIN; {}; COMMIT", stmts.join("; "));
            return match self.conns[s].batch_execute(&sql).await {
                Ok(()) => TxnResult::Committed,
                Err(e) => {
                    let _ = self.conns[s].batch_execute("ROLLBACK").await;
                    if is_abort(&e) {
                        TxnResult::Aborted
                    } else {
                        TxnResult::Failed(format!("postgres: {e}"))
                    }
                }
            };
        }
        self.seq += 1;
        let gid = format!("bench-{}-{}", self.id, self.seq);
        let prepares = per_shard.iter().map(|(s, stmts)| {
            let sql = format!("BEGIN; {}; PREPARE TRANSACTION {}", stmts.join("; "), quote(&gid));
            let conn = self.conns[*s].clone();
            async move { (*s, conn.batch_execute(&sql).await) }
        });
        let votes = futures::future::join_all(prepares).await;
        if votes.iter().all(|(_, r)| r.is_ok()) {
            let record = format!("commit {gid} {:?}\n", per_shard.keys().collect::<Vec<_>>()).into_bytes();
            if let Err(e) = self.log.append(record).await {
                return TxnResult::Failed(format!("decision log: {e}"));
            }
            // Committed: the application has its answer; the commit
            // messages go out off its critical path.
            for s in per_shard.keys() {
                self.send_background(*s, format!("COMMIT PREPARED {}", quote(&gid))).await;
            }
            return TxnResult::Committed;
        }
        // Presumed abort: nothing logged; undo what was prepared.
        let mut failure = None;
        let undo = votes.into_iter().map(|(s, r)| {
            let conn = self.conns[s].clone();
            let sql = match &r {
                Ok(()) => format!("ROLLBACK PREPARED {}", quote(&gid)),
                Err(_) => "ROLLBACK".to_string(),
            };
            if let Err(e) = r {
                if !is_abort(&e) || failure.is_none() {
                    failure = Some(e);
                }
            }
            async move { conn.batch_execute(&sql).await }
        });
        let undone = futures::future::join_all(undo.collect::<Vec<_>>()).await;
        match failure {
            Some(e) if is_abort(&e) => TxnResult::Aborted,
            Some(e) => TxnResult::Failed(format!("postgres: {e}")),
            None => TxnResult::Failed(format!("postgres rollback: {:?}", undone.into_iter().find_map(Result::err))),
        }
    }

    async fn finish(&mut self) {
        while !self.pending.is_empty() {
            self.reap_one().await;
        }
    }
}

/// Waits until every shard has no prepared transaction left (bounded).
pub async fn wait_no_prepared(peer: &PgPeer, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for monitor in &peer.monitors {
        loop {
            let n: i64 = monitor.query_one("SELECT count(*) FROM pg_prepared_xacts", &[]).await?.get(0);
            if n == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{n} prepared transactions still open after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_grouped_by_shard_in_key_order() {
        let k = |shard, key: &str| ShardKey { shard, key: key.into() };
        let plan = TxnPlan::Transfer { from: k(1, "k9"), to: k(1, "k10"), amount: 3 };
        let s = statements(&plan);
        assert_eq!(s.len(), 1);
        assert_eq!(s[&1], vec!["UPDATE kv SET v = v + 3 WHERE k = 'k10'", "UPDATE kv SET v = v - 3 WHERE k = 'k9'"]);
        let plan = TxnPlan::Write { keys: vec![k(0, "a'b"), k(2, "c")], value: 5 };
        let s = statements(&plan);
        assert_eq!(s[&0], vec!["UPDATE kv SET v = 5 WHERE k = 'a''b'"]);
        assert_eq!(s[&2], vec!["UPDATE kv SET v = 5 WHERE k = 'c'"]);
    }

    /// Bank transfers through the PostgreSQL 2PC driver against real
    /// local PostgreSQL clusters: money is conserved, nothing stays
    /// prepared, fsyncs are counted. Skipped when PostgreSQL is absent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_driver_commits_atomically_against_a_real_postgres() {
        use super::super::driver::LevelRun;
        use super::super::workload::{PlanGenerator, Workload};
        use twopc_common::config::ClusterConfig;
        let Some(bin) = find_binaries() else {
            eprintln!("SKIPPED: {INSTALL_HINT}");
            return;
        };
        let dir = tempfile::Builder::new().prefix("twopc-pg-test-").tempdir().unwrap();
        let ring = ClusterConfig::loopback(1, 2, 0).ring();
        let keys = Arc::new(KeySpace::new(&ring, 20));
        let mut peer = PgPeer::start(&bin, &dir.path().join("pg"), &keys, 4).await.unwrap();
        let before = peer.sample().await.unwrap();
        // Zipfian keys over 40 accounts: conflicts (aborts) happen too.
        let plans = Arc::new(PlanGenerator::new(Workload::Bank, keys.clone(), Some(1.0)));
        let workers = peer.workers(4).await.unwrap();
        let run = LevelRun::start(workers, plans, 2, Duration::from_millis(100), Duration::from_millis(1500), 3);
        let (workers, m) = run.finish().await;
        assert_eq!(workers.len(), 4);
        assert!(m.commits > 0, "no commits; first error: {:?}", m.first_error);
        assert_eq!(m.errors, 0, "errors: {:?}", m.first_error);
        wait_no_prepared(&peer, Duration::from_secs(10)).await.unwrap();
        let after = peer.sample().await.unwrap();
        assert!(after.nodes["log"].syncs.unwrap() > before.nodes["log"].syncs.unwrap());
        assert!(after.nodes["p1"].cpu_ticks.is_some());
        let mut total = 0i64;
        for m in &peer.monitors {
            let sum: i64 = m.query_one("SELECT sum(v)::bigint FROM kv", &[]).await.unwrap().get(0);
            total += sum;
        }
        assert_eq!(total, 40 * INITIAL_BALANCE as i64, "money was created or destroyed");
        assert_eq!(peer.commit_errors(), 0);
        let ports: Vec<u16> = peer.shards.iter().map(|s| s.port).collect();
        drop(workers);
        drop(peer);
        for port in ports {
            assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "PostgreSQL on {port} still runs");
        }
    }

    #[tokio::test]
    async fn decision_log_syncs_groups_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = Arc::new(DecisionLog::open(&path).unwrap());
        let appends = (0..200).map(|i| {
            let log = log.clone();
            async move { log.append(format!("r{i}\n").into_bytes()).await }
        });
        for r in futures::future::join_all(appends).await {
            r.unwrap();
        }
        let syncs = log.syncs();
        assert!((1..=200).contains(&syncs), "{syncs} syncs");
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 200);
        for i in 0..200 {
            assert!(text.lines().any(|l| l == format!("r{i}")));
        }
    }
}
