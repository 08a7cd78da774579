//! The nemesis: faults scheduled from a seed, one episode at a time
//! (inject, hold, heal, a quiet gap), while a watchdog restarts any process
//! that died by itself (an aimed crash) on its data dir.
//!
//! Fault kinds:
//! - `kill`: SIGKILL one or two processes, restart them 0–2 s later;
//! - `pause`: SIGSTOP one process for 1–5 s or (half the time) 5.5–9 s,
//!   past the 5 s RPC deadline, then SIGCONT;
//! - `partition`: through the link proxies: isolate a node (a process or
//!   the clients), a one-way cut between two nodes, or a random split in
//!   two, for 1–8 s;
//! - `delay`: slow links (5–300 ms each way) for 2–8 s;
//! - `drop`: close (FIN) or reset (RST) the open connections of random
//!   links, repeatedly, for 1–5 s;
//! - `crash`: restart a process armed with a named fault point
//!   (`TWOPC_FAULTS`, fault-point builds only) so that it kills itself at
//!   a protocol moment: right after a participant's prepare is synced,
//!   before it applies a commit, before or right after the coordinator's
//!   decision is synced, mid commit fan-out; or withholds one commit
//!   message. Restarts after kills and aimed crashes are sometimes armed
//!   again.
//!
//! The schedule (which fault, where, for how long) is a function of the
//! seed; what the processes are doing when a fault lands is not, so a
//! replay repeats the schedule, not the exact interleaving.

use crate::cluster::Cluster;
use crate::proxy::Network;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Delay,
    Drop,
    Crash,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] =
        [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition, FaultKind::Delay, FaultKind::Drop, FaultKind::Crash];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Delay => "delay",
            FaultKind::Drop => "drop",
            FaultKind::Crash => "crash",
        }
    }

    /// Needs a binary built with the `fault-points` feature.
    pub fn needs_fault_points(self) -> bool {
        self == FaultKind::Crash
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!("unknown fault {s:?} (expected kill, pause, partition, delay, drop, crash, all or none)")
        })
    }
}

/// Parses `kill,pause,...`, `all` or `none`.
pub fn parse_faults(s: &str) -> Result<BTreeSet<FaultKind>, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("empty fault name in {s:?} (give kinds, e.g. kill,delay, or all, or none)"));
    }
    match parts.as_slice() {
        ["all"] => return Ok(FaultKind::ALL.into_iter().collect()),
        ["none"] => return Ok(BTreeSet::new()),
        _ => {}
    }
    if let Some(word) = parts.iter().find(|p| ["all", "none"].contains(p)) {
        return Err(format!("{word} stands alone: {s:?} mixes it with other kinds"));
    }
    parts.into_iter().map(str::parse).collect()
}

/// The quiet time before each fault episode, ms (drawn from the seed).
pub const QUIET_GAP_MS: std::ops::Range<u64> = 200..1500;

/// A durability rule broken on purpose (negative control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sabotage {
    /// Participants vote Yes before their Prepared record is synced.
    VoteBeforeSync,
    /// The coordinator answers Committed before its Commit record is synced.
    CommitBeforeSync,
}

impl Sabotage {
    pub fn name(self) -> &'static str {
        match self {
            Sabotage::VoteBeforeSync => "vote-before-sync",
            Sabotage::CommitBeforeSync => "commit-before-sync",
        }
    }

    /// Whether it applies to a process of this role.
    pub fn applies_to(self, coordinator: bool) -> bool {
        match self {
            Sabotage::VoteBeforeSync => !coordinator,
            Sabotage::CommitBeforeSync => coordinator,
        }
    }
}

impl FromStr for Sabotage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vote-before-sync" => Ok(Sabotage::VoteBeforeSync),
            "commit-before-sync" => Ok(Sabotage::CommitBeforeSync),
            other => Err(format!("unknown sabotage {other:?} (expected vote-before-sync or commit-before-sync)")),
        }
    }
}

/// Participant fault points and their action.
pub const PARTICIPANT_POINTS: [(&str, &str); 3] = [
    ("participant.after-prepare-synced", "crash"),
    ("participant.before-apply", "crash"),
    ("participant.after-commit-acked", "crash"),
];
/// The moment the commit-before-sync rule protects: the client heard
/// Committed, no participant heard the commit (killed 100 ms later).
pub const COMMIT_WITHHELD_POINT: (&str, &str) = ("coordinator.before-commit-send", "crash-soon");
/// Coordinator fault points and their action. (`coordinator.commit-send=drop`
/// is not used: it withholds a commit without telling the engine, which
/// then never retries it, so the commit stays undelivered until restart.)
pub const COORDINATOR_POINTS: [(&str, &str); 4] = [
    ("coordinator.before-decision", "crash"),
    ("coordinator.after-decision-synced", "crash"),
    ("coordinator.mid-commit-fanout", "crash"),
    COMMIT_WITHHELD_POINT,
];

/// One fault injected.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// When it started (ms since the run started).
    pub at_ms: u64,
    pub kind: FaultKind,
    /// What happened, for counting: the kind's name, or `crash-armed` (a
    /// process restarted with a fault point armed), `crash` (an armed
    /// point fired), `kill-at-heal` (a restart to disarm).
    pub label: String,
    /// The process, node or link it hit.
    pub target: String,
    pub detail: String,
    /// How long it was held (until healed), when that applies.
    pub held_ms: Option<u64>,
}

/// What the nemesis is doing, for progress display and the report.
#[derive(Debug, Default)]
pub struct NemesisStatus {
    pub events: Vec<FaultEvent>,
    pub current: String,
    /// Processes that exited without being killed by the nemesis or
    /// crashing at an armed fault point: (process, status, log tail).
    pub unexpected_exits: Vec<(String, String, String)>,
    /// Restarts that failed (process, error).
    pub restart_failures: Vec<(String, String)>,
}

pub struct Nemesis {
    cluster: Arc<Mutex<Cluster>>,
    network: Arc<Network>,
    rng: SmallRng,
    kinds: Vec<FaultKind>,
    sabotage: Option<Sabotage>,
    start: Instant,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    pub status: Arc<Mutex<NemesisStatus>>,
    /// TWOPC_FAULTS of processes started armed.
    armed: BTreeMap<String, String>,
    /// Processes the nemesis keeps down on purpose right now.
    down: BTreeSet<String>,
    /// Fault-point lines seen in each process's log so far.
    seen_points: BTreeMap<String, usize>,
    /// Every process's admin token (the harness lists in-doubt
    /// transactions as evidence).
    admin_token: String,
}

const POINT_LINE: &str = "fault point: ";

/// A per-run admin token (loopback only; not a secret worth more).
fn admin_token(seed: u64) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("chaos-{seed:x}-{:x}", nanos ^ u64::from(std::process::id()))
}

impl Nemesis {
    /// A nemesis for `cluster` behind `network`, its schedule drawn from
    /// `seed`. `start` is the run's time zero (for event times).
    pub fn new(
        cluster: Arc<Mutex<Cluster>>,
        network: Arc<Network>,
        seed: u64,
        kinds: &BTreeSet<FaultKind>,
        sabotage: Option<Sabotage>,
        start: Instant,
        stop: Arc<AtomicBool>,
    ) -> Nemesis {
        Nemesis {
            cluster,
            network,
            rng: SmallRng::seed_from_u64(seed),
            kinds: kinds.iter().copied().collect(),
            sabotage,
            start,
            deadline: start,
            stop,
            status: Arc::default(),
            armed: BTreeMap::new(),
            down: BTreeSet::new(),
            seen_points: BTreeMap::new(),
            admin_token: admin_token(seed),
        }
    }

    /// The admin token every process of this run accepts.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().expect("cluster lock")
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    fn record(&self, kind: FaultKind, target: &str, detail: String, held: Option<Duration>) -> usize {
        self.record_labeled(kind, kind.name(), target, detail, held)
    }

    fn record_labeled(
        &self,
        kind: FaultKind,
        label: &str,
        target: &str,
        detail: String,
        held: Option<Duration>,
    ) -> usize {
        let mut status = self.status.lock().expect("status lock");
        status.current = format!("{kind} {target}");
        status.events.push(FaultEvent {
            at_ms: self.now_ms(),
            kind,
            label: label.to_string(),
            target: target.to_string(),
            detail,
            held_ms: held.map(|d| d.as_millis() as u64),
        });
        status.events.len() - 1
    }

    fn set_held(&self, event: usize, since: Instant) {
        let mut status = self.status.lock().expect("status lock");
        status.events[event].held_ms = Some(since.elapsed().as_millis() as u64);
        status.current.clear();
    }

    fn is_coordinator(&self, id: &str) -> bool {
        self.cluster().config.coordinator_entry(id).is_some()
    }

    /// The environment a process starts with: its armed fault points (if
    /// any) and the run's sabotage (if it applies to its role).
    fn env(&self, id: &str, armed: Option<&str>) -> Vec<(String, String)> {
        let sabotage = self
            .sabotage
            .filter(|s| s.applies_to(self.is_coordinator(id)))
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        vec![
            (twopc_common::fault::FAULTS_ENV.to_string(), armed.unwrap_or_default().to_string()),
            (twopc_common::fault::SABOTAGE_ENV.to_string(), sabotage),
            (twopc_common::admin::ADMIN_TOKEN_ENV.to_string(), self.admin_token.clone()),
        ]
    }

    /// (Re)starts `id`, armed with `armed` fault points if given.
    fn restart(&mut self, id: &str, armed: Option<String>) {
        let env = self.env(id, armed.as_deref());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let result = {
            let mut cluster = self.cluster();
            cluster.set_env(id, &env);
            cluster.start(id)
        };
        match armed {
            Some(spec) => self.armed.insert(id.to_string(), spec),
            None => self.armed.remove(id),
        };
        self.down.remove(id);
        if let Err(e) = result {
            // An armed point may fire right after start: the watchdog
            // records that crash and restarts the process again.
            if !self.crashed_since_seen(id) {
                self.status.lock().expect("status lock").restart_failures.push((id.to_string(), format!("{e:#}")));
            }
        }
    }

    /// Starts every process with the run's environment (no armed points).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let ids = {
            let cluster = self.cluster();
            cluster.participant_ids().into_iter().chain(cluster.coordinator_ids()).collect::<Vec<_>>()
        };
        for id in ids {
            let env = self.env(&id, None);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut cluster = self.cluster();
            cluster.set_env(&id, &env);
            cluster.start(&id)?;
        }
        Ok(())
    }

    /// A random fault-point spec for process `id`, firing at hit `1..=max_n`.
    fn arm_spec(&mut self, id: &str, max_n: u64) -> String {
        let points: &[(&str, &str)] = match (self.is_coordinator(id), self.sabotage) {
            // Aim at the moment the broken rule protects: the client heard
            // Committed and a participant is still waiting for the commit.
            (true, Some(Sabotage::CommitBeforeSync)) => std::slice::from_ref(&COMMIT_WITHHELD_POINT),
            (true, _) => &COORDINATOR_POINTS,
            (false, _) => &PARTICIPANT_POINTS,
        };
        let (point, action) = points[self.rng.gen_range(0..points.len())];
        format!("{point}={action}@{}", self.rng.gen_range(1..=max_n))
    }

    /// Arms a restart with probability `p` when aimed crashes are enabled.
    fn maybe_arm(&mut self, id: &str, p: f64) -> Option<String> {
        if self.kinds.contains(&FaultKind::Crash) && self.rng.gen_bool(p) {
            Some(self.arm_spec(id, 20))
        } else {
            None
        }
    }

    /// Runs episodes until `deadline` (or stop). Each episode ends healed.
    pub fn run(&mut self, deadline: Instant) {
        self.deadline = deadline;
        while !self.over() {
            let gap = Duration::from_millis(self.rng.gen_range(QUIET_GAP_MS));
            self.sleep_watching(gap);
            if self.over() || self.kinds.is_empty() {
                continue;
            }
            let kind = self.kinds[self.rng.gen_range(0..self.kinds.len())];
            match kind {
                FaultKind::Kill => self.kill_episode(),
                FaultKind::Pause => self.pause_episode(),
                FaultKind::Partition => self.partition_episode(),
                FaultKind::Delay => self.delay_episode(),
                FaultKind::Drop => self.drop_episode(),
                FaultKind::Crash => self.crash_episode(),
            }
        }
        self.sleep_watching(Duration::ZERO);
    }

    /// Sleeps `d` (or until the deadline), restarting crashed processes.
    fn sleep_watching(&mut self, d: Duration) {
        let until = (Instant::now() + d).min(self.deadline);
        loop {
            self.watchdog();
            let now = Instant::now();
            if now >= until || self.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    /// Whether `id` crashed at a fault point since its log was last looked
    /// at (without marking the lines seen).
    fn crashed_since_seen(&self, id: &str) -> bool {
        let log = self.cluster().log(id);
        let seen = self.seen_points.get(id).copied().unwrap_or(0);
        log.lines().filter(|l| l.contains(POINT_LINE)).skip(seen).any(|l| l.contains("crashing"))
    }

    /// New fault-point lines in `id`'s log since last looked.
    fn new_point_lines(&mut self, id: &str) -> Vec<String> {
        let log = self.cluster().log(id);
        let lines: Vec<String> = log.lines().filter(|l| l.contains(POINT_LINE)).map(str::to_string).collect();
        let seen = self.seen_points.entry(id.to_string()).or_default();
        let fresh = lines[(*seen).min(lines.len())..].to_vec();
        *seen = lines.len();
        fresh
    }

    /// Restarts processes that died by themselves.
    fn watchdog(&mut self) {
        let ids = self.cluster().ids();
        for id in ids {
            if self.down.contains(&id) {
                continue;
            }
            let status = {
                let mut cluster = self.cluster();
                if cluster.pid(&id).is_none() {
                    // Never started, or a restart failed: try again.
                    Some(None)
                } else {
                    cluster.exit_status(&id).map(Some)
                }
            };
            let Some(status) = status else { continue };
            let points = self.new_point_lines(&id);
            let armed = self.armed.remove(&id);
            let mut event = None;
            match (points.iter().find(|l| l.contains("crashing")), status) {
                (Some(line), _) => {
                    let point = log_field(line, "point").unwrap_or(line);
                    let txid = log_field(line, "txid").unwrap_or("-");
                    let armed = armed.unwrap_or_default();
                    let detail = format!("crashed at fault point {point} handling {txid} (armed {armed})");
                    event = Some(self.record(FaultKind::Crash, &id, detail, None));
                }
                (None, Some(status)) => {
                    let tail = self.cluster().log_tail(&id, 30);
                    self.status.lock().expect("status lock").unexpected_exits.push((
                        id.clone(),
                        status.to_string(),
                        tail,
                    ));
                }
                // A failed restart, already recorded.
                (None, None) => {}
            }
            self.cluster().forget(&id);
            let pause = Duration::from_millis(self.rng.gen_range(100..800));
            std::thread::sleep(pause);
            let arm = self.maybe_arm(&id, 0.3);
            if let (Some(event), Some(spec)) = (event, &arm) {
                self.append_detail(event, &format!("; restarted armed with {spec}"));
            }
            self.restart(&id, arm);
        }
    }

    fn append_detail(&self, event: usize, more: &str) {
        self.status.lock().expect("status lock").events[event].detail.push_str(more);
    }

    fn random_process(&mut self) -> String {
        let ids = self.cluster().ids();
        ids[self.rng.gen_range(0..ids.len())].clone()
    }

    fn kill_episode(&mut self) {
        let mut ids = self.cluster().ids();
        ids.shuffle(&mut self.rng);
        let count = if ids.len() > 1 && self.rng.gen_bool(0.2) { 2 } else { 1 };
        let targets: Vec<String> = ids.into_iter().take(count).collect();
        let down_for = Duration::from_millis(self.rng.gen_range(0..2000));
        let since = Instant::now();
        let event = self.record(
            FaultKind::Kill,
            &targets.join("+"),
            format!("SIGKILL, restart after {} ms", down_for.as_millis()),
            None,
        );
        for id in &targets {
            self.down.insert(id.clone());
            self.cluster().kill(id);
            self.new_point_lines(id);
        }
        self.sleep_watching(down_for);
        for id in &targets {
            let arm = self.maybe_arm(id, 0.3);
            if let Some(spec) = &arm {
                self.append_detail(event, &format!("; {id} restarted armed with {spec}"));
            }
            self.restart(id, arm);
        }
        self.set_held(event, since);
    }

    fn pause_episode(&mut self) {
        let id = self.random_process();
        // Half of the pauses outlast the 5 s RPC deadline.
        let hold = if self.rng.gen_bool(0.5) {
            Duration::from_millis(self.rng.gen_range(5500..9000))
        } else {
            Duration::from_millis(self.rng.gen_range(1000..5000))
        };
        let since = Instant::now();
        let event =
            self.record(FaultKind::Pause, &id, format!("SIGSTOP for {} ms, then SIGCONT", hold.as_millis()), None);
        if self.cluster().signal(&id, libc::SIGSTOP).is_ok() {
            self.sleep_paused(&id, hold);
            let _ = self.cluster().signal(&id, libc::SIGCONT);
        } else {
            // It had just died (an aimed crash): the watchdog restarts it.
            self.append_detail(event, "; it was not running");
            self.sleep_watching(hold);
        }
        self.set_held(event, since);
    }

    /// Sleeps while `id` is stopped (the watchdog must not restart it).
    fn sleep_paused(&mut self, id: &str, d: Duration) {
        self.down.insert(id.to_string());
        self.sleep_watching(d);
        self.down.remove(id);
    }

    fn partition_episode(&mut self) {
        let hold = Duration::from_millis(self.rng.gen_range(1000..8000));
        let nodes = self.network.nodes();
        let (target, detail) = match self.rng.gen_range(0..3) {
            0 => {
                let node = nodes[self.rng.gen_range(0..nodes.len())].clone();
                self.network.isolate(&node);
                (node, "isolated both ways".to_string())
            }
            1 => {
                let links = self.network.links();
                let (a, b) = links[self.rng.gen_range(0..links.len())].clone();
                let (from, to) = if self.rng.gen_bool(0.5) { (a, b) } else { (b, a) };
                self.network.block(&from, &to);
                (format!("{from}->{to}"), format!("one way: nothing from {from} reaches {to}"))
            }
            _ => {
                let mut shuffled = nodes.clone();
                shuffled.shuffle(&mut self.rng);
                let cut = self.rng.gen_range(1..shuffled.len());
                let (a, b) = shuffled.split_at(cut);
                self.network.partition(a, b);
                (format!("{}|{}", a.join(","), b.join(",")), "split in two, both ways".to_string())
            }
        };
        let since = Instant::now();
        let event = self.record(FaultKind::Partition, &target, format!("{detail}, for {} ms", hold.as_millis()), None);
        self.sleep_watching(hold);
        self.network.heal();
        self.set_held(event, since);
    }

    fn delay_episode(&mut self) {
        let hold = Duration::from_millis(self.rng.gen_range(2000..8000));
        let mut links = self.network.links();
        links.shuffle(&mut self.rng);
        let count = self.rng.gen_range(1..=links.len());
        let mut described = Vec::new();
        for (viewer, peer) in links.into_iter().take(count) {
            let up = Duration::from_millis(self.rng.gen_range(0..300));
            let down = Duration::from_millis(self.rng.gen_range(5..300));
            self.network.delay(&viewer, &peer, up, down);
            described.push(format!("{viewer}->{peer} +{}/{} ms", up.as_millis(), down.as_millis()));
        }
        let since = Instant::now();
        let event = self.record(
            FaultKind::Delay,
            &format!("{count} links"),
            format!("{} for {} ms", described.join(", "), hold.as_millis()),
            None,
        );
        self.sleep_watching(hold);
        self.network.heal();
        self.set_held(event, since);
    }

    fn drop_episode(&mut self) {
        let hold = Duration::from_millis(self.rng.gen_range(1000..5000));
        let since = Instant::now();
        let until = Instant::now() + hold;
        let links = self.network.links();
        let mut cuts = Vec::new();
        let event = self.record(FaultKind::Drop, "links", String::new(), None);
        while Instant::now() < until && !self.over() {
            let (viewer, peer) = links[self.rng.gen_range(0..links.len())].clone();
            let reset = self.rng.gen_bool(0.5);
            self.network.cut_connections(&viewer, &peer, reset);
            cuts.push(format!("{viewer}->{peer} {}", if reset { "RST" } else { "FIN" }));
            let gap = Duration::from_millis(self.rng.gen_range(50..700));
            self.sleep_watching(gap);
        }
        {
            let mut status = self.status.lock().expect("status lock");
            status.events[event].target = format!("{} cuts", cuts.len());
            status.events[event].detail = cuts.join(", ");
        }
        self.set_held(event, since);
    }

    fn crash_episode(&mut self) {
        let candidates: Vec<String> = {
            let cluster = self.cluster();
            match self.sabotage {
                // Aim at the role whose rule is broken.
                Some(Sabotage::VoteBeforeSync) => cluster.participant_ids(),
                Some(Sabotage::CommitBeforeSync) => cluster.coordinator_ids(),
                None => cluster.ids(),
            }
        };
        let candidates: Vec<String> = candidates.into_iter().filter(|id| !self.armed.contains_key(id)).collect();
        if candidates.is_empty() {
            // Everything is armed already: let them fire.
            self.sleep_watching(Duration::from_millis(1000));
            return;
        }
        let id = candidates[self.rng.gen_range(0..candidates.len())].clone();
        let spec = self.arm_spec(&id, 3);
        let hold = Duration::from_millis(self.rng.gen_range(2000..6000));
        let since = Instant::now();
        let event = self.record_labeled(
            FaultKind::Crash,
            "crash-armed",
            &id,
            format!("SIGKILL, restart armed with {spec}, wait up to {} ms for it", hold.as_millis()),
            None,
        );
        self.down.insert(id.clone());
        self.cluster().kill(&id);
        self.new_point_lines(&id);
        self.restart(&id, Some(spec));
        // The watchdog records the crash and restarts it.
        let until = Instant::now() + hold;
        while Instant::now() < until && !self.over() && self.armed.contains_key(&id) {
            self.sleep_watching(Duration::from_millis(50));
        }
        self.set_held(event, since);
    }

    /// Heals everything: links clear, paused processes continued, armed
    /// crash points disarmed (by a restart), dead processes restarted.
    /// Returns the ids restarted.
    pub fn heal(&mut self) -> Vec<String> {
        self.network.heal();
        let ids = self.cluster().ids();
        for id in &ids {
            let _ = self.cluster().signal(id, libc::SIGCONT);
        }
        self.down.clear();
        // Crashes already fired get recorded (and restarted clean).
        self.watchdog_clean();
        let mut restarted = Vec::new();
        let armed: Vec<(String, String)> = self.armed.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, spec) in armed {
            if spec.contains("=crash") {
                self.record_labeled(FaultKind::Kill, "kill-at-heal", &id, format!("restart to disarm {spec}"), None);
                self.cluster().kill(&id);
                self.restart(&id, None);
                restarted.push(id);
            } else {
                self.armed.remove(&id);
            }
        }
        restarted
    }

    /// Like the watchdog, but restarts without arming.
    fn watchdog_clean(&mut self) {
        let kinds = std::mem::take(&mut self.kinds);
        self.watchdog();
        self.kinds = kinds;
    }

    /// Processes running now.
    pub fn running(&self) -> Vec<String> {
        let mut cluster = self.cluster();
        cluster.ids().into_iter().filter(|id| cluster.is_running(id)).collect()
    }
}

/// The value of `name` in a tracing line: `name="v"` or `name=v`.
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.split(&format!(" {name}=")).nth(1)?;
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split_whitespace().next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_a_log_line() {
        let line = r#"2026-12-01T23:51:17Z  WARN twopc_common::fault::armed: fault point: crashing point="coordinator.after-decision-synced" txid=c1.92101871129.2"#;
        assert_eq!(log_field(line, "point"), Some("coordinator.after-decision-synced"));
        assert_eq!(log_field(line, "txid"), Some("c1.92101871129.2"));
        assert_eq!(log_field(line, "holder"), None);
    }

    #[test]
    fn fault_lists_parse() {
        assert_eq!(parse_faults("all").unwrap().len(), FaultKind::ALL.len());
        assert!(parse_faults("none").unwrap().is_empty());
        let some = parse_faults("kill, delay,kill").unwrap();
        assert_eq!(some.into_iter().collect::<Vec<_>>(), vec![FaultKind::Kill, FaultKind::Delay]);
        assert!(parse_faults("kill,meteor").unwrap_err().contains("meteor"));
        for contradictory in ["", " ", "kill,", "kill,,delay", "none,kill", "all,none", "kill,all"] {
            assert!(parse_faults(contradictory).is_err(), "{contradictory:?} accepted");
        }
    }

    #[test]
    fn sabotage_names_round_trip_and_pick_their_role() {
        for s in [Sabotage::VoteBeforeSync, Sabotage::CommitBeforeSync] {
            assert_eq!(s.name().parse::<Sabotage>().unwrap(), s);
        }
        assert!(Sabotage::VoteBeforeSync.applies_to(false) && !Sabotage::VoteBeforeSync.applies_to(true));
        assert!(Sabotage::CommitBeforeSync.applies_to(true) && !Sabotage::CommitBeforeSync.applies_to(false));
        assert!("other".parse::<Sabotage>().is_err());
    }
}
