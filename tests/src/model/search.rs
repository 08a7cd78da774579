//! Breadth-first (or depth-first) search over every reachable state, with a visited set of
//! 64-bit state hashes and parent links (so the shortest counterexample
//! is rebuilt by replaying action indexes from the initial state).
//!
//! The liveness-ish property (`Resolves`) is checked from every reachable
//! state: a fault-free completion (restart every process, deliver every
//! message, write every queued record, let deadlines pass, let in-doubt
//! participants ask) must leave every transaction resolved.

use super::state::{Answer, Client, State};
use super::step;
use super::{ModelConfig, Property};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Steps a fault-free completion may take, at most.
pub const COMPLETION_STEPS_MAX: usize = 2_000;

#[derive(Debug, Clone)]
pub struct Counterexample {
    pub violation: String,
    /// The actions from the initial state to the violating state.
    pub trace: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ModelReport {
    pub name: &'static str,
    pub states: usize,
    pub transitions: u64,
    pub depth: usize,
    /// False if the search stopped at `states_max`.
    pub exhaustive: bool,
    pub elapsed: Duration,
    pub counterexample: Option<Counterexample>,
}

impl ModelReport {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "model {}: {} states, {} transitions, depth {}, {}, {:.1?}",
            self.name,
            self.states,
            self.transitions,
            self.depth,
            if self.exhaustive { "exhaustive" } else { "TRUNCATED" },
            self.elapsed
        );
        if let Some(c) = &self.counterexample {
            s.push_str(&format!("\n  violation: {}\n  trace ({} steps):", c.violation, c.trace.len()));
            for (i, a) in c.trace.iter().enumerate() {
                s.push_str(&format!("\n    {i:3}. {a}"));
            }
        }
        s
    }
}

/// A 64-bit state hash: a collision among a few million states is
/// unlikely (about n²/2⁶⁵), and would only prune a path.
fn fingerprint(s: &State) -> u64 {
    let mut h = FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

/// A fast, non-cryptographic hasher (the Fx multiply-rotate scheme), with
/// a final mix so the low bits spread well.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // splitmix64's finaliser.
        let mut z = self.hash;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Explores every state reachable under `cfg`'s faults.
pub fn check(cfg: &ModelConfig) -> ModelReport {
    let started = Instant::now();
    let init = step::initial(cfg);
    let root = fingerprint(&init);
    // State hash → (parent hash, index of the action taken in the parent).
    let mut parents: HashMap<u64, (u64, u32)> = HashMap::new();
    parents.insert(root, (root, u32::MAX));
    let mut queue: VecDeque<(State, u64, usize)> = VecDeque::from([(init, root, 0)]);
    let mut resolved = HashSet::new();
    let mut report = ModelReport {
        name: cfg.name,
        states: 1,
        transitions: 0,
        depth: 0,
        exhaustive: true,
        elapsed: Duration::ZERO,
        counterexample: None,
    };
    loop {
        let next = if cfg.depth_first { queue.pop_back() } else { queue.pop_front() };
        let Some((state, id, depth)) = next else { break };
        report.depth = report.depth.max(depth);
        if cfg.checks(Property::Resolves) {
            if let Err(what) = completion(cfg, &state, &mut resolved) {
                let mut trace = rebuild(cfg, &parents, id);
                trace.push(format!("then, with no more faults: {what}"));
                report.counterexample = Some(Counterexample { violation: format!("Resolves: {what}"), trace });
                break;
            }
        }
        for (index, action) in step::actions(cfg, &state, true).iter().enumerate() {
            let next = step::apply(cfg, &state, action);
            report.transitions += 1;
            let next_id = fingerprint(&next);
            if parents.contains_key(&next_id) {
                continue;
            }
            parents.insert(next_id, (id, index as u32));
            if let Some(violation) = &next.ghost.violation {
                let trace = rebuild(cfg, &parents, next_id);
                report.counterexample = Some(Counterexample { violation: violation.clone(), trace });
                break;
            }
            queue.push_back((next, next_id, depth + 1));
        }
        report.states = parents.len();
        if report.counterexample.is_some() {
            break;
        }
        if report.states >= cfg.states_max {
            report.exhaustive = false;
            break;
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// The actions leading from the initial state to state `id`.
fn rebuild(cfg: &ModelConfig, parents: &HashMap<u64, (u64, u32)>, id: u64) -> Vec<String> {
    let mut indexes = Vec::new();
    let mut at = id;
    while let Some(&(parent, index)) = parents.get(&at) {
        if index == u32::MAX {
            break;
        }
        indexes.push(index as usize);
        at = parent;
    }
    indexes.reverse();
    let mut state = step::initial(cfg);
    let mut trace = Vec::new();
    for index in indexes {
        let action = step::actions(cfg, &state, true).swap_remove(index);
        trace.push(compact_txids(&format!("{action:?}")));
        state = step::apply(cfg, &state, &action);
    }
    trace
}

/// Runs `s` to quiescence without faults; `Err` says what is unresolved.
/// `resolved` holds states already known to complete well: a completion
/// is deterministic, so reaching one of them settles the question, and
/// every state of a good completion is added to it.
pub fn completion(cfg: &ModelConfig, s: &State, resolved: &mut HashSet<u64>) -> Result<(), String> {
    let mut path = Vec::new();
    let result = complete(cfg, s, resolved, &mut path);
    if result.is_ok() {
        resolved.extend(path);
    }
    result
}

fn complete(cfg: &ModelConfig, s: &State, resolved: &HashSet<u64>, path: &mut Vec<u64>) -> Result<(), String> {
    let mut s = s.clone();
    let mut steps = 0;
    loop {
        let id = fingerprint(&s);
        if resolved.contains(&id) {
            return Ok(());
        }
        path.push(id);
        let Some(action) = step::next_fault_free(cfg, &s) else { break };
        steps += 1;
        if steps > COMPLETION_STEPS_MAX {
            return Err(format!("still busy after {COMPLETION_STEPS_MAX} fault-free steps (last: {action:?})"));
        }
        step::apply_in_place(cfg, &mut s, &action);
        if let Some(v) = &s.ghost.violation {
            return Err(format!("during completion: {v}"));
        }
    }
    resolved_state(cfg, &s)
}

/// Whether a quiescent state has every transaction resolved.
fn resolved_state(cfg: &ModelConfig, s: &State) -> Result<(), String> {
    for (p, part) in s.participants.iter().enumerate() {
        if let Some(r) = part.engine.in_doubt().next() {
            return Err(format!("p{} still in doubt about {}", p + 1, r.txid));
        }
        if !part.engine.locks().is_empty() {
            return Err(format!("p{} still holds {} locks", p + 1, part.engine.locks().len()));
        }
    }
    if let Some((txid, _, phase)) = s.coordinator.engine.active().next() {
        return Err(format!("coordinator still has {txid} {phase}"));
    }
    for (t, client) in s.clients.iter().enumerate() {
        let (txid, heard) = match client {
            Client::Idle => continue,
            Client::Committing(txid) => (txid, None),
            Client::Heard(txid, answer) => (txid, Some(*answer)),
        };
        let spec = &cfg.txns[t];
        let mut ps: Vec<u8> = spec.writes.iter().chain(&spec.reads).copied().collect();
        ps.sort_unstable();
        ps.dedup();
        let applied: Vec<u8> = ps.iter().copied().filter(|p| s.ghost.applied.contains(&(*p, txid.clone()))).collect();
        if !applied.is_empty() && applied.len() != ps.len() {
            return Err(format!("atomicity: {txid} applied at {applied:?} of {ps:?}"));
        }
        match heard {
            Some(Answer::Committed) if applied.is_empty() => {
                return Err(format!("client heard Committed for {txid}, applied nowhere"))
            }
            Some(Answer::Aborted) if !applied.is_empty() => {
                return Err(format!("client heard Aborted for {txid}, applied"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Shortens `TxnId { coordinator: NodeId("c1"), epoch: 1, seq: 2 }` to
/// `c1.1.2` in a trace line.
fn compact_txids(line: &str) -> String {
    const OPEN: &str = "TxnId { coordinator: NodeId(\"";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let after = &rest[at + OPEN.len()..];
        let parsed = after.split_once("\"), epoch: ").and_then(|(node, after)| {
            let (epoch, after) = after.split_once(", seq: ")?;
            let (seq, after) = after.split_once(" }")?;
            Some((format!("{node}.{epoch}.{seq}"), after))
        });
        match parsed {
            Some((txid, after)) => {
                out.push_str(&txid);
                rest = after;
            }
            None => {
                out.push_str(OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn txids_are_compacted() {
        let line = r#"Ask(0, TxnId { coordinator: NodeId("c1"), epoch: 1, seq: 2 })"#;
        assert_eq!(super::compact_txids(line), "Ask(0, c1.1.2)");
    }
}
