//! Executors: run an engine event, turn its commands into disk writes and
//! messages as the runtimes do, and check the safety properties as the
//! commands execute.

use super::state::{Answer, Asker, CWrite, CallKey, Client, Msg, PCall, PWrite, State};
use super::{ModelConfig, ModelSabotage, Property};
use twopc_common::txn::{PrepareRequest, ProbeAnswer};
use twopc_common::{Key, NodeId, Outcome, OutcomeStatus, TxnId, TxnOps, Vote};
use twopc_coordinator::engine::{Command as CCommand, Event as CEvent, Reply as CReply, Unanswered};
use twopc_participant::engine::{Command as PCommand, Event as PEvent, Reply as PReply};
use twopc_participant::record::Decision;

/// The ring fingerprint every process of the model agrees on.
pub const RING: u64 = 0x7a;

pub fn key(p: u8) -> Key {
    format!("k{}", p + 1).into_bytes()
}

pub fn participant_id(p: u8) -> NodeId {
    NodeId::new(&format!("p{}", p + 1)).expect("a valid node id")
}

pub fn participant_index(id: &NodeId) -> u8 {
    let n: u8 = id.as_str()[1..].parse().unwrap_or_else(|_| panic!("not a participant id: {id}"));
    n - 1
}

/// Which client's transaction `txid` is.
pub fn txn_index(s: &State, txid: &TxnId) -> usize {
    s.clients
        .iter()
        .position(|c| matches!(c, Client::Committing(t) | Client::Heard(t, _) if t == txid))
        .unwrap_or_else(|| panic!("{txid} belongs to no client"))
}

/// The coordinator's plan for transaction `t`: each participant's slice.
pub fn plan(cfg: &ModelConfig, t: usize, txid: &TxnId) -> Vec<(NodeId, PrepareRequest)> {
    let spec = &cfg.txns[t];
    let mut ps: Vec<u8> = spec.writes.iter().chain(&spec.reads).copied().collect();
    ps.sort_unstable();
    ps.dedup();
    let participants: Vec<NodeId> = ps.iter().map(|p| participant_id(*p)).collect();
    ps.iter()
        .map(|&p| {
            let mut ops = TxnOps::default();
            if spec.reads.contains(&p) {
                ops.reads.push((key(p), 0));
            }
            if spec.writes.contains(&p) {
                ops.writes.push((key(p), Some(format!("t{t}").into_bytes())));
            }
            let prepare = PrepareRequest { txid: txid.clone(), ring: RING, ops, participants: participants.clone() };
            (participant_id(p), prepare)
        })
        .collect()
}

/// Records the first violation of a checked property.
pub fn violate(cfg: &ModelConfig, s: &mut State, property: Property, what: String) {
    if cfg.checks(property) && s.ghost.violation.is_none() {
        s.ghost.violation = Some(format!("{property:?}: {what}"));
    }
}

fn free_id<V>(pending: &std::collections::BTreeMap<u64, V>) -> u64 {
    (0..).find(|id| !pending.contains_key(id)).expect("an unused id")
}

/// A request reaches participant `p`.
pub fn participant_request(cfg: &ModelConfig, s: &mut State, p: u8, from: u8, kind: PCall, txid: TxnId) {
    let part = &mut s.participants[p as usize];
    let req = free_id(&part.pending);
    part.pending.insert(req, (kind, txid.clone(), from));
    let event = match kind {
        PCall::Prepare | PCall::OnePhase => {
            let t = txn_index(s, &txid);
            let (_, prepare) =
                plan(cfg, t, &txid).into_iter().find(|(n, _)| participant_index(n) == p).expect("p is in the plan");
            let visible = State::visible(&s.participants[p as usize]);
            let current =
                prepare.ops.keys().map(|k| (k.clone(), visible.data.get(k).cloned().unwrap_or_default())).collect();
            if kind == PCall::Prepare {
                PEvent::Prepare { req, prepare, current, now_ms: 0 }
            } else {
                PEvent::OnePhase { req, prepare, current, now_ms: 0 }
            }
        }
        PCall::Commit => PEvent::Commit { req: Some(req), txid },
        PCall::Abort => PEvent::Abort { req: Some(req), txid },
        PCall::Probe => PEvent::Probe { req, txid },
    };
    feed_participant(cfg, s, p, event);
}

pub fn feed_participant(cfg: &ModelConfig, s: &mut State, p: u8, event: PEvent) {
    let commands = s.participants[p as usize].engine.handle(event);
    for command in commands {
        participant_command(cfg, s, p, command);
    }
}

fn participant_command(cfg: &ModelConfig, s: &mut State, p: u8, command: PCommand) {
    let part = &mut s.participants[p as usize];
    match command {
        PCommand::SyncPrepared(record) => {
            part.disk.queue.push((PWrite::Prepared(record), cfg.sabotage != ModelSabotage::VoteBeforeSync))
        }
        // As in the runtime: a second-phase apply is written lazily (its
        // ack waits for a covering sync, below); a one-phase one is synced.
        PCommand::Apply { txid, writes, synced } => part.disk.queue.push((PWrite::Commit { txid, writes }, synced)),
        PCommand::ForgetAborted { txid } => {
            part.disk.lazy.push(PWrite::Abort { txid: txid.clone() });
            if let Some((q, _)) = s.ghost.applied.iter().find(|(_, t)| *t == txid) {
                let what = format!("p{} aborted {txid} after prepare, p{} applied it", p + 1, q + 1);
                violate(cfg, s, Property::TcConsistent, what);
            }
            s.ghost.aborted.insert((p, txid));
        }
        PCommand::Reply { req, reply } => {
            let Some((kind, txid, inc)) = part.pending.remove(&req) else {
                return;
            };
            if reply == PReply::Vote(Vote::Yes) {
                let durable = &part.disk.durable;
                if !durable.prepared.contains_key(&txid) && durable.done.get(&txid) != Some(&Decision::Committed) {
                    violate(
                        cfg,
                        s,
                        Property::VoteDurable,
                        format!("p{} voted Yes on {txid} with no durable Prepared record", p + 1),
                    );
                }
            }
            let answer = match reply {
                PReply::Vote(Vote::Yes) => Answer::Yes,
                PReply::Vote(Vote::No(_)) => Answer::No,
                PReply::Outcome(Outcome::Committed) => Answer::Committed,
                PReply::Outcome(Outcome::Aborted(_)) => Answer::Aborted,
                PReply::Ack => Answer::Ack,
                PReply::Probe(a) => Answer::Probe(probe_index(&a)),
                PReply::Error(_) | PReply::Recovered { .. } => Answer::Error,
            };
            let msg = Msg::FromParticipant { from: p, inc, kind, txid, answer };
            let part = &mut s.participants[p as usize];
            if kind == PCall::Commit && cfg.sabotage != ModelSabotage::AckBeforeSync && !part.disk.lazy.is_empty() {
                // Sync before ack: wait for a sync covering the writes.
                part.held_acks.push(msg);
            } else {
                send_answer(cfg, s, p, msg);
            }
        }
        PCommand::AskOutcome { txid } => {
            if cfg.sabotage != ModelSabotage::NoOutcomeQuestions {
                let asker = Asker::Participant(p, part.incarnation);
                s.net.insert(Msg::ToCoordinator { asker, inc: s.coordinator.incarnation, commit: false, txid });
            }
        }
        PCommand::LogHeuristic(record) => panic!("no operator in the model, yet a heuristic decision: {record:?}"),
        PCommand::DropHeuristic { txid } => panic!("no operator in the model, yet a heuristic forgotten: {txid}"),
    }
}

/// Sends participant `p`'s answer; an acked commit must be durable there.
pub fn send_answer(cfg: &ModelConfig, s: &mut State, p: u8, msg: Msg) {
    if let Msg::FromParticipant { kind: PCall::Commit, answer: Answer::Ack, txid, .. } = &msg {
        if s.participants[p as usize].disk.durable.done.get(txid) != Some(&Decision::Committed) {
            let what = format!("p{} acked the commit of {txid} before its apply was durable", p + 1);
            violate(cfg, s, Property::AckDurable, what);
        }
    }
    s.net.insert(msg);
}

pub fn feed_coordinator(cfg: &ModelConfig, s: &mut State, event: CEvent) {
    let commands = s.coordinator.engine.handle(event);
    for command in commands {
        coordinator_command(cfg, s, command);
    }
}

fn send(s: &mut State, to: &NodeId, kind: PCall, txid: TxnId) {
    let to = participant_index(to);
    let inc = s.participants[to as usize].incarnation;
    let call = CallKey { kind, txid: txid.clone(), to };
    s.coordinator.calls.insert(call.clone());
    if kind == PCall::OnePhase && !s.participants[to as usize].up {
        // As the runtime finds it: no connection, nothing sent. Only the
        // one-phase engine tells "not sent" from "lost"; the answer is
        // fed when the (dead) call's deadline passes, as a retry would.
        s.coordinator.unsent.insert(call);
        return;
    }
    s.net.insert(Msg::ToParticipant { to, inc, from: s.coordinator.incarnation, kind, txid });
}

fn coordinator_command(cfg: &ModelConfig, s: &mut State, command: CCommand) {
    match command {
        CCommand::SendPrepare { to, prepare } => send(s, &to, PCall::Prepare, prepare.txid),
        CCommand::SendOnePhase { to, prepare, .. } => send(s, &to, PCall::OnePhase, prepare.txid),
        CCommand::SyncDecision { txid, participants } => {
            let unprepared: Vec<&NodeId> = participants
                .iter()
                .filter(|p| !s.participants[participant_index(p) as usize].disk.durable.prepared.contains_key(&txid))
                .collect();
            if !unprepared.is_empty() {
                let what = format!("commit of {txid} decided, not prepared at {unprepared:?}");
                violate(cfg, s, Property::DecideAllPrepared, what);
            }
            if s.ghost.said_aborted.contains(&txid) {
                violate(cfg, s, Property::DecisionStable, format!("Commit of {txid} logged after Aborted was said"));
            }
            let synced = cfg.sabotage != ModelSabotage::CommitBeforeSync;
            s.coordinator.disk.queue.push((CWrite::Commit { txid, participants }, synced));
        }
        CCommand::SendCommit { txid, to, .. } => send(s, &to, PCall::Commit, txid),
        CCommand::SendAbort { txid, to } => {
            said_aborted(cfg, s, &txid);
            send(s, &to, PCall::Abort, txid);
        }
        CCommand::LogMixed { txid, .. } => panic!("no operator in the model, yet heuristic-mixed {txid}"),
        CCommand::DropMixed { txid } => panic!("no operator in the model, yet heuristic-mixed forgotten: {txid}"),
        CCommand::LogEnd { txid } => s.coordinator.disk.lazy.push(CWrite::End { txid }),
        CCommand::Probe { txid } => {
            s.coordinator.probes.insert(txid.clone(), vec![None; cfg.participants as usize]);
            for p in 0..cfg.participants {
                send(s, &participant_id(p), PCall::Probe, txid.clone());
            }
        }
        CCommand::Reply { req, reply } => {
            let Some((asker, txid)) = s.coordinator.pending.remove(&req) else {
                return;
            };
            let answer = match reply {
                CReply::Outcome(Outcome::Committed) | CReply::Status(OutcomeStatus::Committed) => Answer::Committed,
                CReply::Outcome(Outcome::Aborted(_)) | CReply::Status(OutcomeStatus::Aborted) => Answer::Aborted,
                CReply::Status(OutcomeStatus::Pending) => Answer::Pending,
                _ => Answer::Error,
            };
            match answer {
                Answer::Committed => said_committed(cfg, s, &txid),
                Answer::Aborted => said_aborted(cfg, s, &txid),
                _ => {}
            }
            match asker {
                // Clients hear at once and always: hearing more only
                // strengthens the checks, and spares interleavings.
                Asker::Client(client) => {
                    if let Client::Committing(t) = &s.clients[client as usize] {
                        if *t == txid {
                            s.clients[client as usize] = Client::Heard(txid, answer);
                        }
                    }
                }
                Asker::Participant(to, inc) if answer != Answer::Error => {
                    s.net.insert(Msg::OutcomeAnswer { to, inc, txid, answer });
                }
                Asker::Participant(..) => {}
            }
        }
    }
}

fn said_committed(cfg: &ModelConfig, s: &mut State, txid: &TxnId) {
    let logged = s.coordinator.disk.durable.commits.contains_key(txid);
    let applied = s.participants.iter().any(|p| p.disk.durable.done.get(txid) == Some(&Decision::Committed));
    if !logged && !applied {
        violate(cfg, s, Property::CommittedDurable, format!("Committed answered for {txid} with no durable decision"));
    }
}

fn said_aborted(cfg: &ModelConfig, s: &mut State, txid: &TxnId) {
    if s.ghost.decided.contains(txid) {
        violate(cfg, s, Property::DecisionStable, format!("Aborted said for {txid}, whose Commit record was durable"));
    }
    s.ghost.said_aborted.insert(txid.clone());
}

/// A participant's answer reaches the coordinator.
pub fn coordinator_response(cfg: &ModelConfig, s: &mut State, from: u8, kind: PCall, txid: TxnId, answer: Answer) {
    if !s.coordinator.calls.remove(&CallKey { kind, txid: txid.clone(), to: from }) {
        return;
    }
    let node = participant_id(from);
    let event = match (kind, answer) {
        (PCall::Prepare, Answer::Yes) => CEvent::Vote { txid, from: node, vote: Ok(Vote::Yes) },
        (PCall::Prepare, Answer::No) => {
            let reason = twopc_common::AbortReason::AbortedEarlier { participant: node.clone() };
            CEvent::Vote { txid, from: node, vote: Ok(Vote::No(reason)) }
        }
        (PCall::Prepare, _) => {
            let reason = twopc_common::AbortReason::Refused { participant: node.clone(), detail: "refused".into() };
            CEvent::Vote { txid, from: node, vote: Err(reason) }
        }
        (PCall::OnePhase, Answer::Committed) => {
            CEvent::OnePhaseResult { txid, result: Ok(Outcome::Committed), attempt: 0 }
        }
        (PCall::OnePhase, _) => {
            let reason = twopc_common::AbortReason::AbortedEarlier { participant: node.clone() };
            CEvent::OnePhaseResult { txid, result: Ok(Outcome::Aborted(reason)), attempt: 0 }
        }
        (PCall::Commit, Answer::Ack) => CEvent::CommitAcked { txid, from: node },
        (PCall::Commit, _) => CEvent::CommitFailed { txid, from: node, attempt: 0 },
        (PCall::Probe, Answer::Probe(a)) => return probe_answer(cfg, s, txid, from, Ok(a)),
        (PCall::Probe, _) => return probe_answer(cfg, s, txid, from, Err(())),
        (PCall::Abort, answer) => CEvent::AbortSent { txid, to: node, delivered: answer == Answer::Ack },
    };
    feed_coordinator(cfg, s, event);
}

/// An RPC of the coordinator times out.
pub fn coordinator_timeout(cfg: &ModelConfig, s: &mut State, call: CallKey) {
    if !s.coordinator.calls.remove(&call) {
        return;
    }
    let CallKey { kind, txid, to } = call;
    let from = participant_id(to);
    let event = match kind {
        PCall::Prepare if cfg.sabotage == ModelSabotage::TimeoutIsYes => {
            CEvent::Vote { txid, from, vote: Ok(Vote::Yes) }
        }
        PCall::Prepare => {
            let detail = "deadline exceeded".into();
            let reason = twopc_common::AbortReason::ParticipantUnavailable { participant: from.clone(), detail };
            CEvent::Vote { txid, from, vote: Err(reason) }
        }
        PCall::OnePhase => {
            let never_sent = s.coordinator.unsent.remove(&CallKey { kind, txid: txid.clone(), to })
                || cfg.sabotage == ModelSabotage::LostIsNotSent;
            let result = if never_sent {
                Err(Unanswered::NotSent("connection refused".into()))
            } else {
                Err(Unanswered::Lost("deadline exceeded".into()))
            };
            CEvent::OnePhaseResult { txid, result, attempt: 0 }
        }
        PCall::Commit => CEvent::CommitFailed { txid, from, attempt: 0 },
        PCall::Probe => return probe_answer(cfg, s, txid, to, Err(())),
        PCall::Abort => CEvent::AbortSent { txid, to: from, delivered: false },
    };
    feed_coordinator(cfg, s, event);
}

fn probe_answer(cfg: &ModelConfig, s: &mut State, txid: TxnId, from: u8, answer: Result<u8, ()>) {
    let Some(slots) = s.coordinator.probes.get_mut(&txid) else {
        return;
    };
    slots[from as usize] = Some(answer);
    if slots.iter().any(Option::is_none) {
        return;
    }
    let slots = s.coordinator.probes.remove(&txid).expect("present above");
    let took_part: Vec<NodeId> = plan(cfg, txn_index(s, &txid), &txid).into_iter().map(|(p, _)| p).collect();
    let answers = slots
        .into_iter()
        .enumerate()
        .map(|(p, a)| {
            let answer = match a {
                Some(Ok(a)) => Ok(probe_from_index(a, &took_part)),
                _ => Err("unreachable".to_string()),
            };
            (participant_id(p as u8), answer)
        })
        .collect();
    feed_coordinator(cfg, s, CEvent::ProbeResult { txid, answers });
}

/// A probe answer as a compact index (a prepared one's participants are
/// the transaction's plan: rebuilt from it).
fn probe_index(a: &ProbeAnswer) -> u8 {
    match a {
        ProbeAnswer::Committed => 0,
        ProbeAnswer::Aborted => 1,
        ProbeAnswer::Prepared { .. } => 2,
        ProbeAnswer::InFlight => 3,
        ProbeAnswer::Forgotten => 4,
    }
}

fn probe_from_index(a: u8, took_part: &[NodeId]) -> ProbeAnswer {
    match a {
        0 => ProbeAnswer::Committed,
        1 => ProbeAnswer::Aborted,
        2 => ProbeAnswer::Prepared { participants: took_part.to_vec() },
        3 => ProbeAnswer::InFlight,
        _ => ProbeAnswer::Forgotten,
    }
}

/// A commit or outcome question reaches the coordinator.
pub fn coordinator_request(cfg: &ModelConfig, s: &mut State, asker: Asker, commit: bool, txid: TxnId) {
    let req = free_id(&s.coordinator.pending);
    s.coordinator.pending.insert(req, (asker, txid.clone()));
    let event = if commit {
        let t = txn_index(s, &txid);
        CEvent::Commit { req, plan: plan(cfg, t, &txid), txid }
    } else {
        CEvent::Outcome { req, txid }
    };
    feed_coordinator(cfg, s, event);
}
