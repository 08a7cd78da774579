//! `twopc local`: a whole cluster on this machine, for trying twopc out.
//!
//! 1. Writes DIR/cluster.toml (one coordinator on the base port, N
//!    participants on the ports after it), or reuses it when it describes
//!    the same cluster; refuses one that differs, since keys would then be
//!    routed to other participants than the ones holding them.
//! 2. Checks the ports are free, spawns every server (see `supervisor`),
//!    waits until each accepts connections.
//! 3. Prints the servers and commands to try, then runs a smoke transaction
//!    that writes one key on every participant.
//! 4. Restarts servers that die until Ctrl-C, SIGTERM or SIGHUP, then stops them.

use crate::say::{say, say_err, say_raw};
use crate::signals::StopSignals;
use crate::supervisor::{Node, Role, Supervisor};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use twopc_common::client::{Client, ClientError};
use twopc_common::config::ClusterConfig;
use twopc_common::shell::quote_path;

/// Most participants `twopc local` runs.
pub const MAX_LOCAL_PARTICIPANTS: u16 = 64;
/// Smoke transactions tried before reporting a failure (a restarted cluster
/// may still be resolving in-doubt transactions for a moment).
const SMOKE_ATTEMPTS: u32 = 3;
/// Pause between smoke attempts.
const SMOKE_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Candidate smoke keys tried to find one owned by each participant.
const SMOKE_KEY_CANDIDATES: usize = 100_000;

/// Participants of `twopc local` unless `--participants` says otherwise.
pub const DEFAULT_PARTICIPANTS: u16 = 3;
/// The coordinator's port unless `--base-port` says otherwise.
pub const DEFAULT_BASE_PORT: u16 = 7000;

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Directory of the cluster: DIR/cluster.toml, each server's data in
    /// DIR/<id> and its log in DIR/<id>.log. Created if missing; reused
    /// (with its data) when it already holds the same cluster.
    #[arg(long, value_name = "DIR", default_value = "./twopc-data")]
    pub dir: PathBuf,
    /// Number of participants (shards), 1 to 64.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_PARTICIPANTS,
        value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_LOCAL_PARTICIPANTS))
    )]
    pub participants: u16,
    /// The coordinator listens on 127.0.0.1:P and participant i on
    /// 127.0.0.1:P+i.
    #[arg(long, value_name = "P", default_value_t = DEFAULT_BASE_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub base_port: u16,
}

/// `twopc local`: returns the exit code.
pub async fn run(args: LocalArgs) -> u8 {
    let mut signals = match StopSignals::new() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot listen for signals: {e}")),
    };
    if let Err(e) = ports_fit(&args).and_then(|()| twopc_common::fault::check_env()) {
        say_err!("error: {e}");
        return EXIT_USAGE;
    }
    // `_lock` is held until this function returns.
    let (cluster, config_path, reused, _lock) = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(e) => return fail(&e),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(&format!("cannot find this program's path to start the servers: {e}")),
    };
    let mut supervisor = Supervisor::new(exe, config_path.clone(), nodes(&cluster, &args.dir));

    let started = tokio::select! {
        started = supervisor.start() => started,
        name = signals.recv() => Err(format!("{name} while starting")),
    };
    if let Err(e) = started {
        say_err!("error: {e}");
        supervisor.stop().await;
        return EXIT_FAILED;
    }

    let note = if reused { "reused" } else { "written" };
    let participants = cluster.participant.len();
    let noun = if participants == 1 { "participant" } else { "participants" };
    say!(
        "twopc local cluster: 1 coordinator, {participants} {noun} (cluster file {}, {note})\n",
        config_path.display()
    );
    say_raw!("{}", table(&supervisor));
    let coordinator = cluster.coordinator[0].addr.clone();
    say_raw!("{}", hints(&coordinator, &supervisor, &args.dir));

    let smoke = tokio::select! {
        line = smoke_test(&cluster, &coordinator) => Some(line),
        name = signals.recv() => { say!("{name}: stopping the cluster"); None }
    };
    if let Some(line) = smoke {
        say!("{line}");
        let name = supervisor.supervise(&mut signals).await;
        say!("{name}: stopping the cluster");
    }
    supervisor.stop().await;
    say!("twopc local stopped; `{}` resumes it with its data", resume_command(&args));
    EXIT_OK
}

fn fail(message: &str) -> u8 {
    say_err!("error: {message}");
    EXIT_FAILED
}

/// The coordinator and every participant get a port at or after
/// --base-port (a usage error otherwise).
fn ports_fit(args: &LocalArgs) -> Result<(), String> {
    let n = args.participants;
    if u32::from(args.base_port) + u32::from(n) > u32::from(u16::MAX) {
        return Err(format!(
            "--base-port {} leaves no room for {n} participants on the ports after it (highest port is {})",
            args.base_port,
            u16::MAX
        ));
    }
    Ok(())
}

/// The file in DIR that a running `twopc local` holds locked (with its pid).
const LOCK_FILE: &str = "local.lock";

/// Locks DIR for this `twopc local` for as long as the returned file is
/// open: a second one on the same DIR is refused, naming the first, before
/// it touches anything (two at once mixed their servers' logs and failed
/// with a stranger's error).
fn lock_dir(dir: &Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::io::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: the fd is open for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = if pid.trim().is_empty() { "starting".to_string() } else { format!("pid {}", pid.trim()) };
        return Err(format!(
            "{} is in use by another twopc local ({pid}); stop it first, or give another --dir",
            dir.display()
        ));
    }
    let written = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id()));
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(file)
}

/// Locks DIR, creates it, writes or checks DIR/cluster.toml, checks the
/// ports are free. Returns the cluster, the file's path, whether it was
/// reused, and the lock (held while the file is open).
fn prepare(args: &LocalArgs) -> Result<(ClusterConfig, PathBuf, bool, std::fs::File), String> {
    let n = args.participants;
    let path = args.dir.join("cluster.toml");
    let held = if args.dir.is_dir() { Some(lock_dir(&args.dir)?) } else { None };
    let wanted = ClusterConfig::loopback(1, usize::from(n), args.base_port);
    let mut reused = path.exists();
    let mut moved_from = None;
    let cluster = if reused {
        let existing = ClusterConfig::load(&path).map_err(|e| {
            format!(
                "{e}. If it was damaged (say, emptied by a crash), delete it: the next run writes a new one for \
                 the same nodes and keeps their data (with a new admin token; give the --participants and \
                 --base-port it was started with)"
            )
        })?;
        let existing = match loopback_settings(&existing) {
            _ if same_nodes(&existing, &wanted) => existing,
            // Only the ports differ: data is tied to node ids, not to
            // addresses, so the cluster moves (the file is rewritten).
            Some((count, old_port)) if count == usize::from(n) => {
                moved_from = Some(old_port);
                reused = false;
                ClusterConfig {
                    coordinator: wanted.coordinator.clone(),
                    participant: wanted.participant.clone(),
                    ..existing
                }
            }
            _ => return Err(mismatch(&path, &existing, args)),
        };
        missing_data_dir(&existing, &args.dir)?;
        // The file as written (it may set vnodes or an admin token).
        existing
    } else {
        unknown_data_dirs(&wanted, &args.dir)?;
        missing_data_dir(&wanted, &args.dir)?;
        // Operators' `twopc admin --config DIR/cluster.toml` works at once.
        ClusterConfig { admin_token: Some(random_token()), ..wanted }
    };
    // Before touching DIR: a busy port leaves nothing behind.
    for node in cluster.coordinator.iter().chain(&cluster.participant) {
        check_port_free(&node.addr)?;
    }
    // Said once the new ports are known to be free (it was said, then the
    // move failed on a busy port).
    if let Some(old_port) = moved_from {
        say!("twopc local: moving the cluster from --base-port {old_port} to {}", args.base_port);
    }
    if !reused {
        if args.dir.exists() && !args.dir.is_dir() {
            return Err(format!("{} is a file, not a directory: give --dir a directory", args.dir.display()));
        }
        std::fs::create_dir_all(&args.dir).map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    }
    let lock = match held {
        Some(lock) => lock,
        None => lock_dir(&args.dir)?,
    };
    if !reused {
        write_config(&path, &cluster, args)?;
    } else if cluster.admin_token.is_some() {
        // One written before it was made owner-only.
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            say!("twopc local: warning: cannot make {} owner-only (it holds the admin token): {e}", path.display());
        }
    }
    Ok((cluster, path, reused, lock))
}

/// The command that starts this cluster again: `--dir`, plus the flags
/// that differ from their defaults.
fn resume_command(args: &LocalArgs) -> String {
    let mut command = format!("twopc local --dir {}", quote_path(&args.dir));
    if args.participants != DEFAULT_PARTICIPANTS {
        command.push_str(&format!(" --participants {}", args.participants));
    }
    if args.base_port != DEFAULT_BASE_PORT {
        command.push_str(&format!(" --base-port {}", args.base_port));
    }
    command
}

/// Refuses a cluster that ran before (some node has its log) with a node's
/// data directory gone or emptied (an unmounted volume looks like that):
/// started empty, that node would silently lose its committed data (a
/// coordinator, its decisions).
///
/// A node without data counts as lost if its log file says it served, or
/// if it has no log file while others have data; one whose log shows it
/// was started but never served (killed during its very first start) is
/// new, and is started with --init (it was refused for good).
fn missing_data_dir(cluster: &ClusterConfig, dir: &Path) -> Result<(), String> {
    let nodes = nodes(cluster, dir);
    let has_data = |n: &Node| n.data_dir.join(twopc_common::data_dir::WAL_DIR).exists();
    let present: Vec<&str> = nodes.iter().filter(|n| has_data(n)).map(|n| n.id.as_str()).collect();
    let lost = |n: &&Node| !has_data(n) && (n.has_served() || (!present.is_empty() && !n.log.exists()));
    let missing: Vec<String> = nodes.iter().filter(lost).map(|n| n.data_dir.display().to_string()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} ran before (nodes with data: {}), but these nodes' data directories are missing or empty: {}. \
         Started empty, they would silently lose their committed data: restore them, or start a new cluster \
         with another --dir",
        dir.display(),
        if present.is_empty() { "none left".to_string() } else { present.join(", ") },
        missing.join(", "),
    ))
}

/// Refuses a new cluster file over data of nodes it would not list (the
/// file was deleted, and `--participants` is smaller than before): written,
/// it would stay behind and make the right command fail too.
fn unknown_data_dirs(cluster: &ClusterConfig, dir: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let known: Vec<&str> = cluster.coordinator.iter().chain(&cluster.participant).map(|e| e.id.as_str()).collect();
    let mut unknown: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(twopc_common::data_dir::OWNER_FILE).exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| !known.contains(&name.as_str()))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(format!(
        "{} has no cluster.toml but holds data of nodes this command would not start: {}. Restore its \
         cluster.toml, or run with the --participants it was started with, or use another --dir",
        dir.display(),
        unknown.join(", "),
    ))
}

/// 128 random bits, hex.
fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn same_nodes(a: &ClusterConfig, b: &ClusterConfig) -> bool {
    a.coordinator == b.coordinator && a.participant == b.participant
}

/// Why an existing cluster file cannot be used with these flags.
fn mismatch(path: &Path, existing: &ClusterConfig, args: &LocalArgs) -> String {
    let wanted = ClusterConfig {
        vnodes: existing.vnodes,
        ..ClusterConfig::loopback(1, usize::from(args.participants), args.base_port)
    };
    let found = match loopback_settings(existing) {
        Some((n, port)) => format!("written by --participants {n} --base-port {port}"),
        None => wanted.difference(existing).unwrap_or_else(|| "another vnodes".into()),
    };
    format!(
        "{} describes a different cluster ({found}) than --participants {} --base-port {}: its data would be \
         routed to the wrong participants. Run with the same settings again, or use another --dir",
        path.display(),
        args.participants,
        args.base_port
    )
}

/// The `--participants` and `--base-port` that write `config`, if any do.
fn loopback_settings(config: &ClusterConfig) -> Option<(usize, u16)> {
    let first = config.coordinator.first()?;
    let port: u16 = first.addr.strip_prefix("127.0.0.1:")?.parse().ok()?;
    let n = config.participant.len();
    same_nodes(config, &ClusterConfig::loopback(1, n, port)).then_some((n, port))
}

fn write_config(path: &Path, config: &ClusterConfig, args: &LocalArgs) -> Result<(), String> {
    let text = format!(
        "# Written by `twopc local --participants {} --base-port {}`.\n\
         # Every process of this cluster must use this same file.\n{}",
        args.participants,
        args.base_port,
        config.to_toml()
    );
    // Synced: a crash (or an I/O error) once left it empty, and every
    // later start refused the cluster "with no [[coordinator]] entries".
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Owner-only: it holds the admin token (trial 19C: it was 0644).
    twopc_common::data_dir::write_synced_private(dir, path, &text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn check_port_free(addr: &str) -> Result<(), String> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(format!("{addr} is already in use: is another twopc local running? use --base-port"))
        }
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

/// The servers, coordinator first, with data and logs under `dir`.
fn nodes(cluster: &ClusterConfig, dir: &Path) -> Vec<Node> {
    let coordinators = cluster.coordinator.iter().map(|e| (e, Role::Coordinator));
    let participants = cluster.participant.iter().map(|e| (e, Role::Participant));
    coordinators
        .chain(participants)
        .map(|(entry, role)| Node {
            id: entry.id.clone(),
            role,
            addr: entry.addr.clone(),
            data_dir: dir.join(&entry.id),
            log: dir.join(format!("{}.log", entry.id)),
        })
        .collect()
}

/// ID, ROLE, ADDR, PID, DATA DIR, LOG FILE, in aligned columns.
fn table(supervisor: &Supervisor) -> String {
    let mut rows = vec![["ID", "ROLE", "ADDR", "PID", "DATA DIR", "LOG FILE"].map(String::from)];
    for (node, pid) in supervisor.servers() {
        rows.push([
            node.id.clone(),
            node.role.as_str().to_string(),
            node.addr.clone(),
            pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            node.data_dir.display().to_string(),
            node.log.display().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The commands to try against this cluster.
fn hints(coordinator: &str, supervisor: &Supervisor, dir: &Path) -> String {
    let twopc = std::env::args_os().next().map_or_else(|| "twopc".to_string(), |a| quote_path(Path::new(&a)));
    let c = format!("--coordinator {coordinator}");
    let mut lines = vec![
        // With 3 participants alice is p2's, erin p1's, grace p3's.
        format!("{twopc} txn {c} put alice 100 put erin 50"),
        format!("{twopc} txn {c} get alice get erin put alice 90 put erin 60"),
        format!("{twopc} txn {c} --json get grace put grace 1"),
        format!("{twopc} get {c} alice erin grace"),
    ];
    let config = dir.join("cluster.toml");
    lines.push(format!("{twopc} admin --config {} status", quote_path(&config)));
    lines.push(format!("{twopc} admin --config {} in-doubt", quote_path(&config)));
    let participant = supervisor.servers().find(|(node, _)| node.role == Role::Participant);
    if let Some((node, Some(pid))) = participant {
        lines.push(format!(
            "kill -9 {pid}    # {}: restarted after 1 s, recovers from {}",
            node.id,
            node.data_dir.display()
        ));
    }
    let mut out = String::from("\ntry:\n");
    for line in lines {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("Ctrl-C stops the cluster; the same command again resumes it from {}.\n\n", dir.display()));
    out
}

/// One key per participant, in cluster-file order: `twopc-local-smoke-<i>`
/// for the first `i` the ring routes to it.
fn smoke_keys(cluster: &ClusterConfig) -> Vec<(String, String)> {
    let ring = cluster.ring();
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..SMOKE_KEY_CANDIDATES {
        if found.len() == cluster.participant.len() {
            break;
        }
        let key = format!("twopc-local-smoke-{i}");
        found.entry(ring.owner(key.as_bytes()).to_string()).or_insert(key);
    }
    cluster.participant.iter().filter_map(|p| found.remove(&p.id).map(|key| (p.id.clone(), key))).collect()
}

/// Writes one key on every participant in one transaction; returns the line
/// to print.
async fn smoke_test(cluster: &ClusterConfig, coordinator: &str) -> String {
    let keys = smoke_keys(cluster);
    let across: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
    let across = across.join(",");
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let result = smoke_transaction(coordinator, &keys, &stamp.to_string()).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let retryable =
            matches!(result, Err(ClientError::Aborted { .. } | ClientError::Connection(_) | ClientError::Service(_)));
        match result {
            Ok(txid) => return format!("smoke test: committed {txid} across {across} in {ms:.1} ms"),
            Err(_) if retryable && attempt < SMOKE_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(SMOKE_RETRY_PAUSE).await;
            }
            Err(e) => {
                return format!("smoke test: FAILED (attempt {attempt} of {SMOKE_ATTEMPTS}): {e}; see the logs above")
            }
        }
    }
}

async fn smoke_transaction(
    coordinator: &str,
    keys: &[(String, String)],
    value: &str,
) -> Result<twopc_common::TxnId, ClientError> {
    let client = Client::connect(coordinator).await?;
    let mut txn = client.begin().await?;
    for (_, key) in keys {
        txn.put(key.as_bytes(), value.as_bytes().to_vec());
    }
    txn.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(participants: u16, base_port: u16) -> LocalArgs {
        LocalArgs { dir: PathBuf::from("d"), participants, base_port }
    }

    #[test]
    fn smoke_keys_cover_every_participant() {
        for n in [1, 3, 8] {
            let cluster = ClusterConfig::loopback(1, n, 7000);
            let keys = smoke_keys(&cluster);
            let owners: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
            let expected: Vec<&str> = cluster.participant.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(owners, expected);
            let ring = cluster.ring();
            for (owner, key) in &keys {
                assert_eq!(ring.owner(key.as_bytes()).as_str(), owner);
            }
        }
    }

    #[test]
    fn settings_are_recovered_from_a_loopback_file() {
        assert_eq!(loopback_settings(&ClusterConfig::loopback(1, 5, 9000)), Some((5, 9000)));
        let mut odd = ClusterConfig::loopback(1, 2, 9000);
        odd.participant[1].addr = "10.0.0.1:1".into();
        assert_eq!(loopback_settings(&odd), None);
    }

    #[test]
    fn a_different_cluster_file_is_explained() {
        let existing = ClusterConfig::loopback(1, 3, 7000);
        let message = mismatch(Path::new("d/cluster.toml"), &existing, &args(4, 7000));
        assert!(message.contains("--participants 3 --base-port 7000"), "{message}");
        assert!(message.contains("--participants 4"), "{message}");
        assert!(!same_nodes(&existing, &ClusterConfig::loopback(1, 3, 7100)));
        assert!(same_nodes(&existing, &ClusterConfig::loopback(1, 3, 7000)));
    }

    #[test]
    fn ports_past_65535_are_refused() {
        let err = ports_fit(&args(3, 65534)).unwrap_err();
        assert!(err.contains("no room"), "{err}");
    }

    #[test]
    fn a_busy_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let err = check_port_free(&addr).unwrap_err();
        assert!(err.contains(&addr) && err.contains("already in use") && err.contains("--base-port"), "{err}");
    }

    #[test]
    fn the_resume_hint_keeps_the_flags_that_matter() {
        assert_eq!(resume_command(&args(3, 7000)), "twopc local --dir d");
        assert_eq!(resume_command(&args(2, 7100)), "twopc local --dir d --participants 2 --base-port 7100");
    }

    #[test]
    fn a_lost_data_directory_is_refused_once_the_cluster_ran() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterConfig::loopback(1, 2, 7000);
        assert!(missing_data_dir(&cluster, dir.path()).is_ok(), "never ran: nothing to lose");
        for id in ["c1", "p1", "p2"] {
            std::fs::create_dir_all(dir.path().join(id).join(twopc_common::data_dir::WAL_DIR)).unwrap();
        }
        assert!(missing_data_dir(&cluster, dir.path()).is_ok());
        std::fs::remove_dir(dir.path().join("p1").join(twopc_common::data_dir::WAL_DIR)).unwrap();
        let refused = missing_data_dir(&cluster, dir.path()).unwrap_err();
        assert!(refused.contains("p1") && refused.contains("silently lose"), "emptied: {refused}");
        std::fs::remove_dir(dir.path().join("p1")).unwrap();
        assert!(missing_data_dir(&cluster, dir.path()).is_err(), "removed");
        // Started once and killed before it served: new, not lost.
        std::fs::write(dir.path().join("p1.log"), "--- twopc local: starting participant p1 ---\n").unwrap();
        assert!(missing_data_dir(&cluster, dir.path()).is_ok(), "never served");
        // Its log says it served: lost.
        std::fs::write(dir.path().join("p1.log"), "... INFO twopc_participant::runtime: participant serving\n")
            .unwrap();
        assert!(missing_data_dir(&cluster, dir.path()).is_err(), "served, then emptied");
    }

    #[test]
    fn nodes_put_data_and_logs_under_dir() {
        let nodes = nodes(&ClusterConfig::loopback(1, 2, 7000), Path::new("d"));
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["c1", "p1", "p2"]);
        assert_eq!(nodes[0].role, Role::Coordinator);
        assert_eq!(nodes[2].data_dir, Path::new("d/p2"));
        assert_eq!(nodes[2].log, Path::new("d/p2.log"));
    }
}
