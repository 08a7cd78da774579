//! The actions enabled in a state, and what each does.

use super::exec::{self, participant_id, violate, RING};
use super::state::{
    Answer, Asker, CStore, CWrite, CallKey, Client, Coordinator, Disk, Ghost, Msg, PWrite, Participant, State,
};
use super::{ModelConfig, ModelSabotage, Property};
use std::collections::{BTreeMap, BTreeSet};
use twopc_common::{NodeId, OutcomeStatus, TxnId};
use twopc_coordinator::engine::{Command as CCommand, Engine as CEngine, Event as CEvent, Reply as CReply};
use twopc_coordinator::epochs::EpochHistory;
use twopc_participant::engine::{Engine as PEngine, Event as PEvent};

/// A process that can crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Coordinator,
    Participant(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Client `i` begins its transaction and its commit reaches the
    /// coordinator (a commit lost on the way is a transaction never
    /// started; a late one, a later start); `duplicate`: a copy of the
    /// commit request stays in flight (costs from the duplicate budget).
    Start {
        client: u8,
        duplicate: bool,
    },
    /// Deliver a message; `keep`: a duplicate stays in flight.
    Deliver {
        msg: Msg,
        keep: bool,
    },
    Drop(Msg),
    /// The node's oldest queued disk write completes.
    Flush(Node),
    /// A participant's WAL syncs on its own (the runtime does within 2 ms
    /// of a held ack): its lazy writes become durable, held acks go out.
    Sync(u8),
    /// An RPC deadline of the coordinator passes (`early`: an answer
    /// may still come; costs from the budget).
    Timeout {
        call: CallKey,
        early: bool,
    },
    /// A participant asks the outcome of an in-doubt transaction (its tick).
    Ask(u8, TxnId),
    /// A power cut: the first `keep` lazy writes had become durable (the
    /// WAL is durable as a prefix: a later sync, or the WAL's background
    /// sync, covered them), the rest and every queued write are lost.
    Crash {
        node: Node,
        keep: u8,
    },
    Restart(Node),
}

/// The initial state: every process started on an empty disk.
pub fn initial(cfg: &ModelConfig) -> State {
    let coordinator = Coordinator {
        up: false,
        incarnation: 0,
        engine: CEngine::new(coordinator_id()),
        disk: Disk::default(),
        pending: BTreeMap::new(),
        calls: BTreeSet::new(),
        unsent: BTreeSet::new(),
        probes: BTreeMap::new(),
    };
    let participants = (0..cfg.participants)
        .map(|p| Participant {
            up: false,
            incarnation: 0,
            engine: PEngine::new(participant_id(p), RING),
            disk: Disk::default(),
            pending: BTreeMap::new(),
            held_acks: Vec::new(),
        })
        .collect();
    let mut s = State {
        coordinator,
        participants,
        net: BTreeSet::new(),
        clients: vec![Client::Idle; cfg.txns.len()],
        crashes_left: cfg.crashes,
        duplicates_left: cfg.duplicates,
        early_timeouts_left: cfg.early_timeouts,
        ghost: Ghost::default(),
    };
    restart(cfg, &mut s, Node::Coordinator);
    for p in 0..cfg.participants {
        restart(cfg, &mut s, Node::Participant(p));
    }
    s
}

pub fn coordinator_id() -> NodeId {
    NodeId::new("c1").expect("a valid node id")
}

/// Every action enabled in `s` (faults included when `faults`).
pub fn actions(cfg: &ModelConfig, s: &State, faults: bool) -> Vec<Action> {
    let mut out = Vec::new();
    for (i, c) in s.clients.iter().enumerate() {
        if *c == Client::Idle && s.coordinator.up {
            out.push(Action::Start { client: i as u8, duplicate: false });
            if faults && s.duplicates_left > 0 {
                out.push(Action::Start { client: i as u8, duplicate: true });
            }
        }
    }
    for msg in &s.net {
        out.push(Action::Deliver { msg: msg.clone(), keep: false });
        if faults && s.duplicates_left > 0 {
            out.push(Action::Deliver { msg: msg.clone(), keep: true });
        }
        if faults && cfg.lose {
            out.push(Action::Drop(msg.clone()));
        }
    }
    let nodes = std::iter::once(Node::Coordinator).chain((0..cfg.participants).map(Node::Participant));
    for node in nodes {
        let (up, queued) = match node {
            Node::Coordinator => (s.coordinator.up, !s.coordinator.disk.queue.is_empty()),
            Node::Participant(p) => (s.participants[p as usize].up, !s.participants[p as usize].disk.queue.is_empty()),
        };
        if up && queued {
            out.push(Action::Flush(node));
        }
        if up && faults && s.crashes_left > 0 {
            let lazy = match node {
                Node::Coordinator => s.coordinator.disk.lazy.len(),
                Node::Participant(p) => s.participants[p as usize].disk.lazy.len(),
            };
            out.extend((0..=lazy as u8).map(|keep| Action::Crash { node, keep }));
        }
        if !up {
            out.push(Action::Restart(node));
        }
        if let Node::Participant(p) = node {
            if up && !s.participants[p as usize].held_acks.is_empty() {
                out.push(Action::Sync(p));
            }
        }
    }
    for call in &s.coordinator.calls {
        if s.call_is_dead(call) {
            out.push(Action::Timeout { call: call.clone(), early: false });
        } else if faults && s.early_timeouts_left > 0 {
            out.push(Action::Timeout { call: call.clone(), early: true });
        }
    }
    out.extend(asks(cfg, s));
    out
}

/// Outcome questions participants may ask now: one at a time per
/// in-doubt transaction (the runtime asks on a timer).
fn asks(cfg: &ModelConfig, s: &State) -> Vec<Action> {
    let mut out = Vec::new();
    if cfg.sabotage == ModelSabotage::NoOutcomeQuestions {
        return out;
    }
    for (p, part) in s.participants.iter().enumerate() {
        if !part.up {
            continue;
        }
        for record in part.engine.in_doubt() {
            if !s.asking(p as u8, &record.txid) {
                out.push(Action::Ask(p as u8, record.txid.clone()));
            }
        }
    }
    out
}

/// The next step of a fault-free completion: restart, deliver, write,
/// let dead calls time out, ask — in that order of preference.
pub fn next_fault_free(cfg: &ModelConfig, s: &State) -> Option<Action> {
    if !s.coordinator.up {
        return Some(Action::Restart(Node::Coordinator));
    }
    if let Some(p) = s.participants.iter().position(|p| !p.up) {
        return Some(Action::Restart(Node::Participant(p as u8)));
    }
    if let Some(msg) = s.net.iter().next() {
        return Some(Action::Deliver { msg: msg.clone(), keep: false });
    }
    if !s.coordinator.disk.queue.is_empty() {
        return Some(Action::Flush(Node::Coordinator));
    }
    if let Some(p) = s.participants.iter().position(|p| !p.disk.queue.is_empty()) {
        return Some(Action::Flush(Node::Participant(p as u8)));
    }
    if let Some(p) = s.participants.iter().position(|p| !p.held_acks.is_empty()) {
        return Some(Action::Sync(p as u8));
    }
    if let Some(call) = s.coordinator.calls.iter().next() {
        return Some(Action::Timeout { call: call.clone(), early: false });
    }
    asks(cfg, s).into_iter().next()
}

/// The state after `action`.
pub fn apply(cfg: &ModelConfig, s: &State, action: &Action) -> State {
    let mut s = s.clone();
    apply_in_place(cfg, &mut s, action);
    s
}

pub fn apply_in_place(cfg: &ModelConfig, s: &mut State, action: &Action) {
    match action {
        Action::Start { client, duplicate } => start(cfg, s, *client, *duplicate),
        Action::Deliver { msg, keep } => {
            if *keep {
                s.duplicates_left -= 1;
            } else {
                s.net.remove(msg);
            }
            deliver(cfg, s, msg.clone());
        }
        Action::Drop(msg) => {
            s.net.remove(msg);
        }
        Action::Flush(node) => flush(cfg, s, *node),
        Action::Sync(p) => sync_lazy(cfg, s, Node::Participant(*p)),
        Action::Timeout { call, early } => {
            if *early {
                s.early_timeouts_left -= 1;
            }
            exec::coordinator_timeout(cfg, s, call.clone());
        }
        Action::Ask(p, txid) => {
            let asker = Asker::Participant(*p, s.participants[*p as usize].incarnation);
            let inc = s.coordinator.incarnation;
            s.net.insert(Msg::ToCoordinator { asker, inc, commit: false, txid: txid.clone() });
        }
        Action::Crash { node, keep } => crash(cfg, s, *node, *keep as usize),
        Action::Restart(node) => restart(cfg, s, *node),
    }
    collect_garbage(s);
}

/// Removes messages whose delivery can only be a no-op (their receiver
/// restarted or is down, or no call waits for the answer): a state with
/// them behaves exactly like one without, so this merges equal states.
fn collect_garbage(s: &mut State) {
    let c = &s.coordinator;
    let ps = &s.participants;
    s.net.retain(|m| match m {
        Msg::ToParticipant { to, inc, .. } | Msg::OutcomeAnswer { to, inc, .. } => {
            ps[*to as usize].up && ps[*to as usize].incarnation == *inc
        }
        Msg::ToCoordinator { inc, .. } => c.up && c.incarnation == *inc,
        Msg::FromParticipant { from, inc, kind, txid, .. } => {
            c.up && c.incarnation == *inc && c.calls.contains(&CallKey { kind: *kind, txid: txid.clone(), to: *from })
        }
    });
}

fn start(cfg: &ModelConfig, s: &mut State, client: u8, duplicate: bool) {
    let commands = s.coordinator.engine.handle(CEvent::Begin { req: u64::MAX, now_ms: 0 });
    let txid = match commands.as_slice() {
        [CCommand::Reply { reply: CReply::Begun(txid), .. }] => txid.clone(),
        other => panic!("Begin answered {other:?}"),
    };
    s.clients[client as usize] = Client::Committing(txid.clone());
    if duplicate {
        s.duplicates_left -= 1;
        let inc = s.coordinator.incarnation;
        s.net.insert(Msg::ToCoordinator { asker: Asker::Client(client), inc, commit: true, txid: txid.clone() });
    }
    exec::coordinator_request(cfg, s, Asker::Client(client), true, txid);
}

fn deliver(cfg: &ModelConfig, s: &mut State, msg: Msg) {
    match msg {
        Msg::ToParticipant { to, inc, from, kind, txid } => {
            let p = &s.participants[to as usize];
            if p.up && p.incarnation == inc {
                exec::participant_request(cfg, s, to, from, kind, txid);
            }
        }
        Msg::FromParticipant { from, inc, kind, txid, answer } => {
            if s.coordinator.up && s.coordinator.incarnation == inc {
                exec::coordinator_response(cfg, s, from, kind, txid, answer);
            }
        }
        Msg::ToCoordinator { asker, inc, commit, txid } => {
            if s.coordinator.up && s.coordinator.incarnation == inc {
                exec::coordinator_request(cfg, s, asker, commit, txid);
            }
        }
        Msg::OutcomeAnswer { to, inc, txid, answer } => {
            let p = &s.participants[to as usize];
            let status = match answer {
                Answer::Committed => OutcomeStatus::Committed,
                Answer::Aborted => OutcomeStatus::Aborted,
                _ => OutcomeStatus::Pending,
            };
            if p.up && p.incarnation == inc {
                exec::feed_participant(cfg, s, to, PEvent::OutcomeAnswer { txid, status });
            }
        }
    }
}

/// The oldest queued write of `node` is written (synced, or lazily:
/// visible, durable only once a sync covers it), then its completion is
/// fed to the engine.
fn flush(cfg: &ModelConfig, s: &mut State, node: Node) {
    match node {
        Node::Coordinator => {
            let (write, synced) = s.coordinator.disk.queue.remove(0);
            s.coordinator.disk.lazy.push(write.clone());
            if synced {
                sync_lazy(cfg, s, node);
            }
            if let CWrite::Commit { txid, .. } = write {
                exec::feed_coordinator(cfg, s, CEvent::DecisionSynced { txid });
            }
        }
        Node::Participant(p) => {
            let (write, synced) = s.participants[p as usize].disk.queue.remove(0);
            s.participants[p as usize].disk.lazy.push(write.clone());
            if synced {
                sync_lazy(cfg, s, node);
            }
            match write {
                PWrite::Prepared(record) => {
                    exec::feed_participant(cfg, s, p, PEvent::PrepareSynced { txid: record.txid })
                }
                PWrite::Commit { txid, .. } => {
                    if let Some((q, _)) = s.ghost.aborted.iter().find(|(_, t)| *t == txid) {
                        let what = format!("p{} applied {txid}, p{} aborted it after prepare", p + 1, q + 1);
                        violate(cfg, s, Property::TcConsistent, what);
                    }
                    s.ghost.applied.insert((p, txid.clone()));
                    exec::feed_participant(cfg, s, p, PEvent::Applied { txid });
                }
                PWrite::Abort { .. } => unreachable!("aborts are written lazily, never queued"),
            }
        }
    }
}

/// Every lazy write of `node` becomes durable (a synced write covers them).
fn sync_lazy(cfg: &ModelConfig, s: &mut State, node: Node) {
    match node {
        Node::Coordinator => {
            let disk = &mut s.coordinator.disk;
            for w in disk.lazy.drain(..) {
                disk.durable.apply(&w);
            }
            let decided: Vec<TxnId> = disk.durable.commits.keys().cloned().collect();
            for txid in decided {
                if s.ghost.said_aborted.contains(&txid) && !s.ghost.decided.contains(&txid) {
                    let what = format!("Commit of {txid} durable after Aborted was said");
                    violate(cfg, s, Property::DecisionStable, what);
                }
                s.ghost.decided.insert(txid);
            }
        }
        Node::Participant(p) => {
            let part = &mut s.participants[p as usize];
            for w in part.disk.lazy.drain(..) {
                part.disk.durable.apply(&w);
            }
            for ack in std::mem::take(&mut part.held_acks) {
                exec::send_answer(cfg, s, p, ack);
            }
        }
    }
}

/// A power cut: the process stops; its queued writes, its lazy writes
/// but the first `keep`, its volatile state and every message on its way
/// to it are lost.
fn crash(cfg: &ModelConfig, s: &mut State, node: Node, keep: usize) {
    s.crashes_left -= 1;
    if let Node::Participant(p) = node {
        // Held acks die with the process.
        s.participants[p as usize].held_acks.clear();
    }
    match node {
        Node::Coordinator => s.coordinator.disk.lazy.truncate(keep),
        Node::Participant(p) => s.participants[p as usize].disk.lazy.truncate(keep),
    }
    sync_lazy(cfg, s, node);
    match node {
        Node::Coordinator => {
            let c = &mut s.coordinator;
            c.up = false;
            c.disk.queue.clear();
            c.disk.lazy.clear();
            s.net.retain(|m| !matches!(m, Msg::FromParticipant { .. } | Msg::ToCoordinator { .. }));
        }
        Node::Participant(p) => {
            let part = &mut s.participants[p as usize];
            part.up = false;
            part.disk.queue.clear();
            part.disk.lazy.clear();
            s.net.retain(|m| !matches!(m, Msg::ToParticipant { to, .. } | Msg::OutcomeAnswer { to, .. } if *to == p));
        }
    }
}

/// A new incarnation recovers from the durable tables.
pub fn restart(cfg: &ModelConfig, s: &mut State, node: Node) {
    match node {
        Node::Coordinator => {
            let c = &mut s.coordinator;
            let CStore { epoch, commits, ends } = &mut c.disk.durable;
            *epoch += 1;
            let mut recovered: Vec<_> =
                commits.iter().map(|(t, ps)| (t.clone(), ps.clone(), ends.contains(t))).collect();
            // End records without a Commit record: one-phase commits.
            let one_phase = ends.iter().filter(|t| !commits.contains_key(*t));
            recovered.extend(one_phase.map(|t| (t.clone(), Vec::new(), true)));
            if cfg.sabotage == ModelSabotage::ForgetfulCoordinator {
                recovered.clear();
            }
            let epoch = *epoch;
            c.up = true;
            c.incarnation += 1;
            c.engine = CEngine::new(coordinator_id());
            c.pending.clear();
            c.calls.clear();
            c.unsent.clear();
            c.probes.clear();
            exec::feed_coordinator(
                cfg,
                s,
                CEvent::Recovered {
                    epoch,
                    epochs: EpochHistory::every_epoch_up_to(epoch),
                    commits: recovered,
                    mixed: Vec::new(),
                },
            );
        }
        Node::Participant(p) => {
            let part = &mut s.participants[p as usize];
            part.up = true;
            part.incarnation += 1;
            part.engine = PEngine::new(participant_id(p), RING);
            part.pending.clear();
            let prepared = part.disk.durable.prepared.values().cloned().collect();
            let decided = part.disk.durable.done.iter().map(|(t, d)| (t.clone(), *d)).collect();
            exec::feed_participant(
                cfg,
                s,
                p,
                PEvent::Recovered {
                    prepared,
                    decided,
                    heuristics: Vec::new(),
                    forgotten: Default::default(),
                    now_ms: 0,
                },
            );
        }
    }
}
