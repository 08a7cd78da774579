//! What one simulation run does: the workload, the fault profile, the
//! sabotage (negative control) — all derived from the seed, so a seed alone
//! replays a run.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The transactions the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Accounts spread over every participant; a transfer reads two
    /// accounts and writes both. Total conserved, no negative balance.
    Bank,
    /// Each transaction writes one unique value under one key on every
    /// participant: after the run, every key holds the same value.
    AtomicSet,
}

/// A durability rule broken on purpose, to prove the checkers notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    None,
    /// (a) `SyncPrepared` is written lazily: a participant votes Yes
    /// before its Prepared record is durable.
    VoteBeforeSync,
    /// (b) `SyncDecision` is written lazily: the coordinator answers
    /// Committed before its Commit record is durable.
    CommitBeforeSync,
    /// (c) The one-phase `Apply` is written lazily: the participant
    /// answers Committed (and releases its locks) before the commit is
    /// durable. (A second-phase apply is lazy by design: its Prepared
    /// record and the coordinator's Commit record let recovery redo it.)
    ApplyBeforeSync,
    /// (g) A participant acks a second-phase commit as soon as the apply
    /// is written, before a sync covers it: the coordinator may then
    /// forget a commit that the participant can still lose.
    AckBeforeSync,
    /// (d) The coordinator's recovery drops its Commit records: it answers
    /// Aborted for transactions it committed.
    ForgetfulCoordinator,
    /// (e) The coordinator takes a prepare that timed out for a Yes vote:
    /// it decides commit without every participant prepared.
    TimeoutIsYes,
    /// (f) Participants skip read validation (the runtime reports each
    /// read key's version as the one the transaction read): stale reads
    /// commit, serializability breaks.
    SkipReadValidation,
}

impl Sabotage {
    pub const ALL: [Sabotage; 7] = [
        Sabotage::VoteBeforeSync,
        Sabotage::CommitBeforeSync,
        Sabotage::ApplyBeforeSync,
        Sabotage::AckBeforeSync,
        Sabotage::ForgetfulCoordinator,
        Sabotage::TimeoutIsYes,
        Sabotage::SkipReadValidation,
    ];
}

/// Which faults a run injects during its fault phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Name of the profile, for reports.
    pub profile: &'static str,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Usual one-way delay, uniform in this range (ms): reorders messages.
    pub delay_ms: (u64, u64),
    /// Probability that a message takes up to `long_delay_ms_max` instead.
    pub long_delay: f64,
    pub long_delay_ms_max: u64,
    /// Partitions during the fault phase (each isolates a set of servers).
    pub partitions: u32,
    /// Crash-and-restart of the coordinator during the fault phase.
    pub coordinator_crashes: u32,
    /// Crash-and-restart of participants during the fault phase.
    pub participant_crashes: u32,
    /// Time for a synced group to become durable (ms), uniform.
    pub fsync_ms: (u64, u64),
    /// Probability that a node crashes right at a protocol moment (a
    /// record queued for sync, a vote sent, a decision made, a commit
    /// sent), like the runtime's named fault points.
    pub crash_point: f64,
    /// Crashes at protocol moments in one run, at most.
    pub crash_points_max: u32,
}

/// The fault profiles, cycled through by seed.
pub const PROFILES: [&str; 8] = [
    "calm",
    "lossy",
    "partitions",
    "participant-crashes",
    "coordinator-crashes",
    "crash-points",
    "slow-disk",
    "everything",
];

impl Faults {
    /// Profile `name` with its parameters drawn from `rng`.
    pub fn profile(name: &'static str, rng: &mut SmallRng) -> Faults {
        let mut f = Faults {
            profile: name,
            loss: 0.0,
            duplicate: 0.0,
            delay_ms: (1, rng.gen_range(2..=20)),
            long_delay: 0.0,
            long_delay_ms_max: 0,
            partitions: 0,
            coordinator_crashes: 0,
            participant_crashes: 0,
            fsync_ms: (1, rng.gen_range(2..=10)),
            crash_point: 0.0,
            crash_points_max: 0,
        };
        let crash_points = |f: &mut Faults, rng: &mut SmallRng| {
            f.crash_point = rng.gen_range(0.01..0.2);
            f.crash_points_max = rng.gen_range(1..=4);
        };
        let lossy = |f: &mut Faults, rng: &mut SmallRng| {
            f.loss = rng.gen_range(0.0..0.2);
            f.duplicate = rng.gen_range(0.0..0.2);
            f.long_delay = rng.gen_range(0.0..0.1);
            f.long_delay_ms_max = rng.gen_range(100..=6_000);
        };
        match name {
            "calm" => {}
            "lossy" => lossy(&mut f, rng),
            "partitions" => f.partitions = rng.gen_range(1..=3),
            "participant-crashes" => {
                f.participant_crashes = rng.gen_range(1..=4);
                crash_points(&mut f, rng);
            }
            "coordinator-crashes" => {
                f.coordinator_crashes = rng.gen_range(1..=3);
                crash_points(&mut f, rng);
            }
            "crash-points" => crash_points(&mut f, rng),
            "slow-disk" => {
                f.fsync_ms = (1, rng.gen_range(50..=400));
                f.participant_crashes = rng.gen_range(0..=2);
                f.coordinator_crashes = rng.gen_range(0..=1);
            }
            _ => {
                lossy(&mut f, rng);
                f.partitions = rng.gen_range(0..=2);
                f.participant_crashes = rng.gen_range(0..=3);
                f.coordinator_crashes = rng.gen_range(0..=2);
                f.fsync_ms = (1, rng.gen_range(2..=100));
                crash_points(&mut f, rng);
            }
        }
        f
    }
}

/// Everything one run needs; [`SimConfig::for_seed`] derives it from a seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub workload: Workload,
    pub participants: usize,
    pub clients: usize,
    /// Transactions each client starts during the fault phase, at most.
    pub txns_per_client: usize,
    /// Faults are injected in `0..fault_phase_ms`; then everything heals.
    pub fault_phase_ms: u64,
    /// After healing, the run must be quiescent within this (simulated) time.
    pub settle_ms_max: u64,
    /// Events processed in one run, at most (a bound on every run).
    pub events_max: u64,
    pub faults: Faults,
    pub sabotage: Sabotage,
    /// Check invariants 1, 2 and 10 as each command is executed (white-box
    /// ghost state). Off: only the end-of-run (black-box) checks run.
    pub ghost_checks: bool,
    /// Print every event (for replaying a seed).
    pub verbose: bool,
}

impl SimConfig {
    /// The configuration seed `seed` stands for: the workload alternates,
    /// the fault profile cycles, the sizes are drawn from the seed.
    pub fn for_seed(seed: u64) -> SimConfig {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_c0f1_6000_0001);
        let workload = if seed & 1 == 0 { Workload::Bank } else { Workload::AtomicSet };
        let profile = PROFILES[((seed / 2) % PROFILES.len() as u64) as usize];
        let faults = Faults::profile(profile, &mut rng);
        SimConfig {
            seed,
            workload,
            participants: rng.gen_range(2..=4),
            clients: rng.gen_range(1..=6),
            txns_per_client: rng.gen_range(2..=20),
            fault_phase_ms: rng.gen_range(3_000..=30_000),
            settle_ms_max: 180_000,
            events_max: 400_000,
            faults,
            sabotage: Sabotage::None,
            ghost_checks: true,
            verbose: false,
        }
    }

    pub fn with_sabotage(mut self, sabotage: Sabotage) -> SimConfig {
        self.sabotage = sabotage;
        self
    }

    pub fn with_ghost_checks(mut self, on: bool) -> SimConfig {
        self.ghost_checks = on;
        self
    }
}
