//! The simulated environment shared by every node: the clock, the seeded
//! random source, the event queue, and the network (loss, duplication,
//! delay and so reordering, partitions, TCP-like incarnation fencing).
//!
//! Determinism: one `SmallRng` seeded from the run's seed; the queue is
//! ordered by `(time, sequence number)`; nothing iterates a `HashMap`.

use super::config::{Faults, Sabotage};
use super::history::History;
use super::msg::{Addr, Body, CallId, Message, Request, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use twopc_common::txn::PrepareRequest;
use twopc_common::TxnId;

/// The WAL syncs lazy writes this long after going quiet
/// (`twopc_wal::LAZY_SYNC_INTERVAL`).
pub const LAZY_SYNC_MS: u64 = twopc_wal::LAZY_SYNC_INTERVAL.as_millis() as u64;

/// Longest a node crashed at a protocol moment stays down.
const CRASH_POINT_DOWNTIME_MS_MAX: u64 = 3_000;

/// A node's timers (each tied to the incarnation that set it).
#[derive(Debug, Clone)]
pub enum Timer {
    /// Periodic engine tick.
    Tick,
    /// Participant: look at the reads waiting for prepared writers again.
    ReadRecheck,
    /// An RPC's deadline.
    CallTimeout(CallId),
    /// Coordinator: a commit to send after its backoff.
    SendCommit { txid: TxnId, to: usize, attempt: u32 },
    /// Coordinator: a one-phase commit to send after its backoff.
    SendOnePhase { to: usize, prepare: PrepareRequest, attempt: u32 },
    /// Client: think time is over, take the next step.
    ClientStep,
}

/// Faults scheduled at the start of the run.
#[derive(Debug, Clone)]
pub enum FaultAction {
    Crash(Addr),
    Restart(Addr),
    /// Cut these servers off from everyone else until `PartitionEnd(id)`.
    PartitionStart {
        id: u32,
        side: Vec<Addr>,
    },
    PartitionEnd {
        id: u32,
    },
    /// End of the fault phase: heal everything.
    Heal,
}

/// Something that happens at a simulated time.
#[derive(Debug, Clone)]
pub enum Item {
    Deliver(Message),
    /// Write a node's queued disk batches.
    Flush {
        node: Addr,
        incarnation: u32,
    },
    /// The WAL's background sync of lazy writes.
    LazySync {
        node: Addr,
        incarnation: u32,
    },
    Timer {
        node: Addr,
        incarnation: u32,
        timer: Timer,
    },
    Fault(FaultAction),
}

struct Scheduled {
    at_ms: u64,
    seq: u64,
    item: Item,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// Whether a node is running, and which incarnation it is.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    pub up: bool,
    pub incarnation: u32,
}

pub struct Env {
    pub now_ms: u64,
    pub rng: SmallRng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    next_call: CallId,
    pub faults: Faults,
    /// True once the fault phase is over: no loss, no duplicates, no
    /// partitions, short delays.
    pub healed: bool,
    partitions: BTreeMap<u32, BTreeSet<Addr>>,
    lives: BTreeMap<Addr, Life>,
    /// Messages scheduled and not yet delivered or dropped.
    pub in_flight: u64,
    pub history: History,
    pub sabotage: Sabotage,
}

impl Env {
    pub fn new(seed: u64, faults: Faults, history: History, sabotage: Sabotage) -> Env {
        Env {
            now_ms: 0,
            rng: SmallRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            next_call: 1,
            faults,
            healed: false,
            partitions: BTreeMap::new(),
            lives: BTreeMap::new(),
            in_flight: 0,
            history,
            sabotage,
        }
    }

    pub fn schedule(&mut self, delay_ms: u64, item: Item) {
        if matches!(item, Item::Deliver(_)) {
            self.in_flight += 1;
        }
        self.seq += 1;
        self.queue.push(Scheduled { at_ms: self.now_ms + delay_ms, seq: self.seq, item });
    }

    /// The next item, advancing the clock to its time.
    pub fn pop(&mut self) -> Option<Item> {
        let next = self.queue.pop()?;
        self.now_ms = next.at_ms;
        if matches!(next.item, Item::Deliver(_)) {
            self.in_flight -= 1;
        }
        Some(next.item)
    }

    pub fn life(&self, node: Addr) -> Life {
        self.lives.get(&node).copied().unwrap_or(Life { up: true, incarnation: 0 })
    }

    pub fn set_life(&mut self, node: Addr, life: Life) {
        self.lives.insert(node, life);
    }

    pub fn timer(&mut self, node: Addr, delay_ms: u64, timer: Timer) {
        let incarnation = self.life(node).incarnation;
        self.schedule(delay_ms, Item::Timer { node, incarnation, timer });
    }

    /// Starts an RPC: sends the request and arms its deadline.
    pub fn call(&mut self, from: Addr, to: Addr, request: Request, timeout_ms: u64) -> CallId {
        let call = self.next_call;
        self.next_call += 1;
        self.send(from, to, call, Body::Request(request));
        self.timer(from, timeout_ms, Timer::CallTimeout(call));
        call
    }

    pub fn respond(&mut self, from: Addr, to: Addr, call: CallId, response: Response) {
        self.send(from, to, call, Body::Response(response));
    }

    fn send(&mut self, from: Addr, to: Addr, call: CallId, body: Body) {
        let to_incarnation = self.life(to).incarnation;
        let copies = if self.healed {
            1
        } else if self.rng.gen_bool(self.faults.loss) {
            0
        } else if self.rng.gen_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.delay_ms();
            let message = Message { from, to, to_incarnation, call, body: body.clone() };
            self.schedule(delay, Item::Deliver(message));
        }
    }

    fn delay_ms(&mut self) -> u64 {
        let (lo, hi) = self.faults.delay_ms;
        if self.healed {
            return self.rng.gen_range(lo..=hi.min(5).max(lo));
        }
        if self.faults.long_delay > 0.0 && self.rng.gen_bool(self.faults.long_delay) {
            return self.rng.gen_range(hi..=self.faults.long_delay_ms_max.max(hi));
        }
        self.rng.gen_range(lo..=hi)
    }

    /// True if the message may be delivered now: its receiver is up, is the
    /// incarnation it was sent to, and no partition separates the two.
    pub fn deliverable(&self, message: &Message) -> bool {
        let life = self.life(message.to);
        life.up && life.incarnation == message.to_incarnation && !self.partitioned(message.from, message.to)
    }

    fn partitioned(&self, a: Addr, b: Addr) -> bool {
        self.partitions.values().any(|side| side.contains(&a) != side.contains(&b))
    }

    pub fn partition(&mut self, id: u32, side: Vec<Addr>) {
        if !self.healed {
            self.partitions.insert(id, side.into_iter().collect());
        }
    }

    pub fn end_partition(&mut self, id: u32) {
        self.partitions.remove(&id);
    }

    /// Schedules a flush of `node`'s disk: after the fsync latency if the
    /// group must be synced, at once (next millisecond at most) if lazy.
    pub fn schedule_flush(&mut self, node: Addr, sync: bool) {
        let delay = if sync {
            self.rng.gen_range(self.faults.fsync_ms.0..=self.faults.fsync_ms.1)
        } else {
            self.rng.gen_range(0..=1)
        };
        let incarnation = self.life(node).incarnation;
        self.schedule(delay, Item::Flush { node, incarnation });
    }

    /// A protocol moment of `node`: with the profile's probability, the
    /// node crashes right after the current event (and restarts later).
    pub fn crash_point(&mut self, node: Addr) {
        if self.healed || self.faults.crash_points_max == 0 || !self.rng.gen_bool(self.faults.crash_point) {
            return;
        }
        self.faults.crash_points_max -= 1;
        let down = self.rng.gen_range(0..=CRASH_POINT_DOWNTIME_MS_MAX);
        self.schedule(0, Item::Fault(FaultAction::Crash(node)));
        self.schedule(down, Item::Fault(FaultAction::Restart(node)));
    }

    /// Schedules `node`'s background sync of lazy writes.
    pub fn schedule_lazy_sync(&mut self, node: Addr, at_ms: u64) {
        let incarnation = self.life(node).incarnation;
        let delay = at_ms.saturating_sub(self.now_ms);
        self.schedule(delay, Item::LazySync { node, incarnation });
    }

    pub fn heal(&mut self) {
        self.healed = true;
        self.partitions.clear();
    }
}
