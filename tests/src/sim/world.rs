//! One simulation run: the nodes, the fault schedule, the main loop, the
//! phases (faults → heal and settle → resolve outcomes → check).

use super::check;
use super::client::{Client, Resolver};
use super::config::SimConfig;
use super::coordinator::CoordinatorNode;
use super::env::{Env, FaultAction, Item, Life};
use super::history::History;
use super::msg::{Addr, Body, Message};
use super::participant::{participant_id, ParticipantNode};
use super::trace::TraceHash;
use super::workload::Keys;
use super::SimReport;
use rand::Rng;
use twopc_common::ring::{Ring, DEFAULT_VNODES};

/// Longest a crashed node stays down during the fault phase.
const DOWNTIME_MS_MAX: u64 = 4_000;
/// Partitions last this long at most.
const PARTITION_MS_MAX: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    /// Healed: waiting for clients to finish and the system to settle.
    Settling,
    /// Asking the outcome of every submitted transaction.
    Resolving,
    /// Every server crashed and restarted once more: recovery from the
    /// durable state alone must settle again.
    Recovering,
}

pub struct World {
    cfg: SimConfig,
    env: Env,
    keys: Keys,
    coordinator: CoordinatorNode,
    participants: Vec<ParticipantNode>,
    clients: Vec<Client>,
    resolver: Resolver,
    trace: TraceHash,
    phase: Phase,
    events: u64,
}

impl World {
    pub fn new(cfg: &SimConfig) -> World {
        let ids: Vec<_> = (0..cfg.participants).map(participant_id).collect();
        let ring = Ring::new(&ids, DEFAULT_VNODES);
        let history = History::new(cfg.participants, cfg.ghost_checks);
        let mut env = Env::new(cfg.seed, cfg.faults.clone(), history, cfg.sabotage);
        let clients = (0..cfg.clients).map(|i| Client::new(i, cfg.txns_per_client, env.rng.gen_bool(0.5))).collect();
        World {
            keys: Keys::new(cfg.workload, &ring),
            participants: (0..cfg.participants).map(|i| ParticipantNode::new(i, ring.fingerprint())).collect(),
            coordinator: CoordinatorNode::new(ring),
            clients,
            resolver: Resolver::new(Addr::Client(cfg.clients)),
            cfg: cfg.clone(),
            env,
            trace: TraceHash::new(),
            phase: Phase::Faults,
            events: 0,
        }
    }

    pub fn run(mut self) -> SimReport {
        self.coordinator.recover(&mut self.env);
        for p in &mut self.participants {
            p.recover(&mut self.env);
        }
        for c in &mut self.clients {
            c.start(&mut self.env);
        }
        self.schedule_faults();
        let mut healed_at = None;
        while let Some(item) = self.env.pop() {
            self.events += 1;
            self.trace.item(self.env.now_ms, &item);
            if self.cfg.verbose {
                println!("{:>7} {item:?}", self.env.now_ms);
            }
            if let Item::Fault(FaultAction::Heal) = item {
                healed_at = Some(self.env.now_ms);
            }
            self.dispatch(item);
            if self.phase != Phase::Faults && self.advance() {
                break;
            }
            if self.events >= self.cfg.events_max {
                let what = format!("event budget of {} exhausted (livelock?)", self.cfg.events_max);
                self.env.history.violation(self.env.now_ms, what);
                break;
            }
            if healed_at.is_some_and(|t| self.env.now_ms > t + self.cfg.settle_ms_max) {
                let what = format!("not quiescent {} ms after healing: {}", self.cfg.settle_ms_max, self.busy());
                self.env.history.violation(self.env.now_ms, what);
                break;
            }
        }
        let violations =
            check::check(&self.cfg, &mut self.env.history, &self.keys, &self.participants, &self.coordinator);
        SimReport::new(&self.cfg, &self.env.history, violations, self.trace.finish(), self.events, self.env.now_ms)
    }

    /// Moves to the next phase when this one is done; true when the run is.
    fn advance(&mut self) -> bool {
        let quiet = self.quiet();
        match self.phase {
            Phase::Faults => false,
            Phase::Settling if quiet && self.clients.iter().all(Client::is_done) => {
                self.phase = Phase::Resolving;
                self.resolver.step(&mut self.env);
                false
            }
            Phase::Settling => false,
            Phase::Resolving if quiet && self.resolver.is_done(&self.env.history.submitted) => {
                self.phase = Phase::Recovering;
                check::unanswered(&self.coordinator, &self.participants, &mut self.env.history.violations);
                for node in self.servers() {
                    self.crash(node);
                    self.restart(node);
                }
                false
            }
            Phase::Resolving => false,
            Phase::Recovering => quiet,
        }
    }

    fn quiet(&self) -> bool {
        self.env.in_flight == 0
            && self.coordinator.is_quiet()
            && self.participants.iter().all(ParticipantNode::is_quiet)
    }

    /// What is still in progress (for the liveness failure message).
    fn busy(&self) -> String {
        let mut parts = Vec::new();
        for (txid, ps, phase) in self.coordinator.engine.active() {
            parts.push(format!("coordinator: {txid} {phase} at {ps:?}"));
        }
        for p in &self.participants {
            for r in p.engine.in_doubt() {
                parts.push(format!("{}: {} in doubt", p.id, r.txid));
            }
            for (key, txid, _) in p.engine.locks().iter() {
                parts.push(format!("{}: lock {:?} held by {txid}", p.id, String::from_utf8_lossy(key)));
            }
        }
        parts.extend(self.clients.iter().filter(|c| !c.is_done()).map(Client::describe));
        parts.push(format!("phase {:?}", self.phase));
        if !self.coordinator.is_quiet() {
            parts.push(self.coordinator.describe());
        }
        parts.extend(self.participants.iter().filter(|p| !p.is_quiet()).map(ParticipantNode::describe));
        let unresolved = self.env.history.submitted.values().filter(|s| s.resolved.is_none()).count();
        parts.push(format!("{unresolved} outcomes unresolved, {} messages in flight", self.env.in_flight));
        parts.join("; ")
    }

    fn schedule_faults(&mut self) {
        let env = &mut self.env;
        let phase_ms = self.cfg.fault_phase_ms;
        let n = self.cfg.participants;
        let crashes = (0..env.faults.coordinator_crashes)
            .map(|_| Addr::Coordinator)
            .chain((0..env.faults.participant_crashes).map(|_| Addr::Participant(usize::MAX)))
            .collect::<Vec<_>>();
        for node in crashes {
            let node = if node == Addr::Coordinator { node } else { Addr::Participant(env.rng.gen_range(0..n)) };
            let at = env.rng.gen_range(0..phase_ms);
            let down = env.rng.gen_range(0..=DOWNTIME_MS_MAX);
            env.schedule(at, Item::Fault(FaultAction::Crash(node)));
            env.schedule(at + down, Item::Fault(FaultAction::Restart(node)));
        }
        for id in 0..env.faults.partitions {
            let servers: Vec<Addr> = std::iter::once(Addr::Coordinator).chain((0..n).map(Addr::Participant)).collect();
            let side: Vec<Addr> = if env.rng.gen_bool(0.6) {
                vec![servers[env.rng.gen_range(0..servers.len())]]
            } else {
                servers.into_iter().filter(|_| env.rng.gen_bool(0.5)).collect()
            };
            let at = env.rng.gen_range(0..phase_ms);
            let lasts = env.rng.gen_range(100..=PARTITION_MS_MAX);
            env.schedule(at, Item::Fault(FaultAction::PartitionStart { id, side }));
            env.schedule(at + lasts, Item::Fault(FaultAction::PartitionEnd { id }));
        }
        env.schedule(phase_ms, Item::Fault(FaultAction::Heal));
    }

    fn dispatch(&mut self, item: Item) {
        match item {
            Item::Deliver(message) => self.deliver(message),
            Item::Flush { node, incarnation } => {
                if !self.current(node, incarnation) {
                    return;
                }
                match node {
                    Addr::Coordinator => self.coordinator.flush(&mut self.env),
                    Addr::Participant(p) => self.participants[p].flush(&mut self.env),
                    Addr::Client(_) => unreachable!("clients have no disk"),
                }
            }
            Item::LazySync { node, incarnation } => {
                if !self.current(node, incarnation) {
                    return;
                }
                match node {
                    Addr::Coordinator => self.coordinator.lazy_sync(&mut self.env),
                    Addr::Participant(p) => self.participants[p].lazy_sync(&mut self.env),
                    Addr::Client(_) => unreachable!("clients have no disk"),
                }
            }
            Item::Timer { node, incarnation, timer } => {
                if !self.current(node, incarnation) {
                    return;
                }
                match node {
                    Addr::Coordinator => self.coordinator.timer(&mut self.env, timer),
                    Addr::Participant(p) => self.participants[p].timer(&mut self.env, timer),
                    Addr::Client(c) if c == self.cfg.clients => self.resolver.timer(&mut self.env, timer),
                    Addr::Client(c) => self.clients[c].timer(&mut self.env, timer),
                }
            }
            Item::Fault(fault) => self.fault(fault),
        }
    }

    fn current(&self, node: Addr, incarnation: u32) -> bool {
        let life = self.env.life(node);
        life.up && life.incarnation == incarnation
    }

    fn deliver(&mut self, message: Message) {
        if !self.env.deliverable(&message) {
            return;
        }
        let Message { from, to, call, body, .. } = message;
        let env = &mut self.env;
        match (to, body) {
            (Addr::Coordinator, Body::Request(r)) => self.coordinator.request(env, from, call, r),
            (Addr::Coordinator, Body::Response(r)) => self.coordinator.response(env, call, r),
            (Addr::Participant(p), Body::Request(r)) => self.participants[p].request(env, from, call, r),
            (Addr::Participant(p), Body::Response(r)) => self.participants[p].response(env, call, r),
            (Addr::Client(c), Body::Response(r)) if c == self.cfg.clients => self.resolver.response(env, call, r),
            (Addr::Client(c), Body::Response(r)) => self.clients[c].response(env, &self.keys, call, r),
            (Addr::Client(_), Body::Request(r)) => panic!("a client was sent a request: {r:?}"),
        }
    }

    fn fault(&mut self, fault: FaultAction) {
        match fault {
            // After healing, nothing crashes (but the final restart).
            FaultAction::Crash(node) if !self.env.healed => self.crash(node),
            FaultAction::Crash(_) => {}
            FaultAction::Restart(node) => self.restart(node),
            FaultAction::PartitionStart { id, side } => self.env.partition(id, side),
            FaultAction::PartitionEnd { id } => self.env.end_partition(id),
            FaultAction::Heal => {
                self.env.heal();
                self.phase = Phase::Settling;
                let down: Vec<Addr> = self.servers().into_iter().filter(|n| !self.env.life(*n).up).collect();
                for node in down {
                    self.restart(node);
                }
            }
        }
    }

    fn servers(&self) -> Vec<Addr> {
        std::iter::once(Addr::Coordinator).chain((0..self.cfg.participants).map(Addr::Participant)).collect()
    }

    fn crash(&mut self, node: Addr) {
        let life = self.env.life(node);
        if !life.up {
            return;
        }
        self.env.set_life(node, Life { up: false, ..life });
        match node {
            Addr::Coordinator => self.coordinator.crash(),
            Addr::Participant(p) => self.participants[p].crash(),
            Addr::Client(_) => unreachable!("clients do not crash"),
        }
    }

    fn restart(&mut self, node: Addr) {
        let life = self.env.life(node);
        if life.up {
            return;
        }
        self.env.set_life(node, Life { up: true, incarnation: life.incarnation + 1 });
        match node {
            Addr::Coordinator => self.coordinator.recover(&mut self.env),
            Addr::Participant(p) => self.participants[p].recover(&mut self.env),
            Addr::Client(_) => unreachable!("clients do not crash"),
        }
    }
}
