//! The participant engine, one protocol step at a time: each test feeds
//! events and compares the exact commands emitted.

use std::collections::HashMap;
use twopc_common::txn::{PrepareRequest, ProbeAnswer};
use twopc_common::{
    AbortReason, Condition, NodeId, Outcome, OutcomeStatus, ServiceError, TxnId, TxnOps, Versioned, Vote,
};
use twopc_participant::engine::{
    Command, Engine, Event, Reply, BLOCKER_ASKS_AFTER_MS, IN_DOUBT_AFTER_MS, MAX_REMEMBERED_DECISIONS, STUCK_AFTER_MS,
};
use twopc_participant::forgotten::Horizons;
use twopc_participant::record::{Decision, HeuristicRecord, PreparedRecord};

const RING: u64 = 42;

fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn txid(seq: u64) -> TxnId {
    TxnId { coordinator: node("c1"), epoch: 1, seq }
}

fn k(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn engine() -> Engine {
    Engine::new(node("p1"), RING)
}

fn prepare_req(seq: u64, ops: TxnOps) -> PrepareRequest {
    PrepareRequest { txid: txid(seq), ring: RING, ops, participants: vec![node("p1"), node("p2")] }
}

fn write(key: &str, value: &str) -> TxnOps {
    TxnOps { writes: vec![(k(key), Some(k(value)))], ..Default::default() }
}

/// Current state: every key absent except those given.
fn current(ops: &TxnOps, known: &[(&str, u64, Option<&str>)]) -> HashMap<Vec<u8>, Versioned> {
    let mut map: HashMap<_, _> = ops.keys().map(|key| (key.clone(), Versioned::default())).collect();
    for (key, version, value) in known {
        map.insert(k(key), Versioned { version: *version, value: value.map(k) });
    }
    map
}

fn prepare(e: &mut Engine, req: u64, seq: u64, ops: TxnOps) -> Vec<Command> {
    let current = current(&ops, &[]);
    e.handle(Event::Prepare { req, prepare: prepare_req(seq, ops), current, now_ms: 1_000 })
}

fn record(seq: u64, key: &str, value: &str) -> PreparedRecord {
    PreparedRecord {
        txid: txid(seq),
        writes: vec![(k(key), Versioned { version: 1, value: Some(k(value)) })],
        locks: vec![k(key)],
        participants: vec![node("p1"), node("p2")],
        prepared_at_ms: 1_000,
    }
}

fn reply(req: u64, reply: Reply) -> Command {
    Command::Reply { req, reply }
}

#[test]
fn prepare_syncs_before_voting_yes() {
    let mut e = engine();
    assert_eq!(prepare(&mut e, 7, 1, write("a", "1")), vec![Command::SyncPrepared(record(1, "a", "1"))]);
    assert_eq!(e.handle(Event::PrepareSynced { txid: txid(1) }), vec![reply(7, Reply::Vote(Vote::Yes))]);
}

#[test]
fn duplicate_prepare_while_syncing_waits_for_the_same_sync() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    assert_eq!(prepare(&mut e, 2, 1, write("a", "1")), vec![]);
    assert_eq!(
        e.handle(Event::PrepareSynced { txid: txid(1) }),
        vec![reply(1, Reply::Vote(Vote::Yes)), reply(2, Reply::Vote(Vote::Yes))]
    );
    assert_eq!(
        prepare(&mut e, 3, 1, write("a", "1")),
        vec![reply(3, Reply::Vote(Vote::Yes))],
        "prepared: answer again"
    );
}

#[test]
fn lock_conflict_votes_no_naming_the_holder_without_waiting() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    let reason = AbortReason::LockConflict { participant: node("p1"), key: k("a"), holder: txid(1) };
    assert_eq!(prepare(&mut e, 2, 2, write("a", "2")), vec![reply(2, Reply::Vote(Vote::No(reason)))]);
}

/// An engine where txid 1 holds "a", prepared (and synced) at 1_000.
fn holder_of_a() -> Engine {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    e
}

/// Txid `seq` (request `seq`) prepares a write of "a" at `now_ms`.
fn prepare_a_at(e: &mut Engine, seq: u64, now_ms: u64) -> Vec<Command> {
    let ops = write("a", "2");
    let current = current(&ops, &[]);
    e.handle(Event::Prepare { req: seq, prepare: prepare_req(seq, ops), current, now_ms })
}

#[test]
fn a_conflict_with_a_holder_in_doubt_says_so() {
    let mut e = holder_of_a();
    let conflict_at = prepare_a_at;
    // Prepared at 1_000: not stuck yet one tick before the threshold.
    let young = AbortReason::LockConflict { participant: node("p1"), key: k("a"), holder: txid(1) };
    let just_before = conflict_at(&mut e, 2, 1_000 + STUCK_AFTER_MS - 1);
    assert!(just_before.contains(&reply(2, Reply::Vote(Vote::No(young)))), "{just_before:?}");
    let for_ms = STUCK_AFTER_MS + 500;
    let stuck = AbortReason::HeldInDoubt { participant: node("p1"), key: k("a"), holder: txid(1), for_ms };
    let after = conflict_at(&mut e, 3, 1_000 + for_ms);
    assert!(after.contains(&reply(3, Reply::Vote(Vote::No(stuck.clone())))), "{after:?}");
    assert!(stuck.to_string().contains("still in doubt"), "{stuck}");
    assert!(stuck.is_transient(), "free again once resolved");
}

#[test]
fn a_stuck_holder_is_asked_about_no_more_often_than_the_in_doubt_timer_asks() {
    let mut e = holder_of_a();
    let asks = |e: &mut Engine, seq: u64, now_ms: u64| {
        prepare_a_at(e, seq, now_ms).contains(&Command::AskOutcome { txid: txid(1) })
    };
    // Young: asked again after BLOCKER_ASKS_AFTER_MS.
    assert!(asks(&mut e, 2, 1_000 + BLOCKER_ASKS_AFTER_MS));
    assert!(asks(&mut e, 3, 1_000 + 2 * BLOCKER_ASKS_AFTER_MS));
    // Stuck: not before IN_DOUBT_AFTER_MS since the last question.
    let stuck_at = 1_000 + STUCK_AFTER_MS;
    assert!(asks(&mut e, 4, stuck_at));
    assert!(!asks(&mut e, 5, stuck_at + BLOCKER_ASKS_AFTER_MS));
    assert!(!asks(&mut e, 6, stuck_at + IN_DOUBT_AFTER_MS - 1));
    assert!(asks(&mut e, 7, stuck_at + IN_DOUBT_AFTER_MS));
    // Nor is it one for a prepare to wait for (each wait asked too).
    assert_eq!(e.prepared_blocker(&prepare_req(8, write("a", "2"))).map(|b| b.holder.clone()), None);
}

#[test]
fn a_young_prepared_holder_is_one_to_wait_for() {
    let mut e = holder_of_a();
    e.handle(Event::Tick { now_ms: 1_000 + STUCK_AFTER_MS - 1 });
    assert_eq!(e.prepared_blocker(&prepare_req(2, write("a", "2"))).map(|b| b.holder.clone()), Some(txid(1)));
}

#[test]
fn a_prepare_may_wait_only_for_holders_that_voted_yes_whatever_their_txids() {
    let mut e = engine();
    let holder =
        |e: &Engine, seq: u64, ops: TxnOps| e.prepared_blocker(&prepare_req(seq, ops)).map(|b| b.holder.clone());
    prepare(&mut e, 1, 5, write("a", "1"));
    // Still syncing its Prepared record: not one to wait for.
    assert_eq!(holder(&e, 6, write("a", "2")), None);
    e.handle(Event::PrepareSynced { txid: txid(5) });
    // Txids do not follow time (ids are minted ahead, in batches): a
    // smaller one may wait for a larger one as well.
    assert_eq!(holder(&e, 6, write("a", "2")), Some(txid(5)));
    assert_eq!(holder(&e, 4, write("a", "2")), Some(txid(5)));
    assert_eq!(holder(&e, 6, write("b", "2")), None, "no conflict");
    // Another holder it must not wait for: no wait at all (it votes No).
    prepare(&mut e, 2, 7, write("c", "1"));
    let both = TxnOps { writes: vec![(k("a"), Some(k("x"))), (k("c"), Some(k("x")))], ..Default::default() };
    assert_eq!(holder(&e, 8, both.clone()), None, "c's holder is still preparing");
    e.handle(Event::PrepareSynced { txid: txid(7) });
    assert_eq!(holder(&e, 8, both), Some(txid(5)));
    // Prepared: its outcome must be asked. Applying: it committed.
    assert!(!e.prepared_blocker(&prepare_req(6, write("a", "2"))).unwrap().applying);
    e.handle(Event::Commit { req: Some(9), txid: txid(5) });
    assert!(e.prepared_blocker(&prepare_req(6, write("a", "2"))).unwrap().applying);
}

#[test]
fn stale_read_and_failed_condition_vote_no() {
    let mut e = engine();
    let ops = TxnOps { reads: vec![(k("a"), 3)], ..Default::default() };
    let cur = current(&ops, &[("a", 4, Some("x"))]);
    let out = e.handle(Event::Prepare { req: 1, prepare: prepare_req(1, ops), current: cur, now_ms: 0 });
    let reason = AbortReason::StaleRead { participant: node("p1"), key: k("a"), read: 3, current: 4 };
    assert_eq!(out, vec![reply(1, Reply::Vote(Vote::No(reason)))]);

    let ops = TxnOps { conditions: vec![Condition::Absent { key: k("b") }], ..Default::default() };
    let cur = current(&ops, &[("b", 1, Some("y"))]);
    let out = e.handle(Event::Prepare { req: 2, prepare: prepare_req(2, ops), current: cur, now_ms: 0 });
    let reason = AbortReason::ConditionFailed { participant: node("p1"), key: k("b") };
    assert_eq!(out, vec![reply(2, Reply::Vote(Vote::No(reason)))]);
    assert!(e.locks().is_empty(), "a No vote holds no locks");
}

#[test]
fn versions_are_bumped_from_the_current_state() {
    let mut e = engine();
    let ops = write("a", "new");
    let cur = current(&ops, &[("a", 9, Some("old"))]);
    let out = e.handle(Event::Prepare { req: 1, prepare: prepare_req(1, ops), current: cur, now_ms: 5 });
    let Command::SyncPrepared(rec) = &out[0] else { panic!("{out:?}") };
    assert_eq!(rec.writes, vec![(k("a"), Versioned { version: 10, value: Some(k("new")) })]);
}

#[test]
fn commit_applies_then_acks_and_releases_locks() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    let writes = record(1, "a", "1").writes;
    assert_eq!(
        e.handle(Event::Commit { req: Some(2), txid: txid(1) }),
        vec![Command::Apply { txid: txid(1), writes, synced: false }]
    );
    assert_eq!(e.locks().len(), 1, "locks held until the apply is durable");
    assert_eq!(e.handle(Event::Commit { req: Some(3), txid: txid(1) }), vec![], "duplicate joins");
    assert_eq!(e.handle(Event::Applied { txid: txid(1) }), vec![reply(2, Reply::Ack), reply(3, Reply::Ack)]);
    assert!(e.locks().is_empty());
    assert_eq!(e.handle(Event::Commit { req: Some(4), txid: txid(1) }), vec![reply(4, Reply::Ack)], "idempotent");
    assert_eq!(
        prepare(&mut e, 5, 1, write("a", "1")),
        vec![reply(5, Reply::Vote(Vote::Yes))],
        "late duplicate prepare"
    );
}

#[test]
fn abort_releases_locks_without_a_sync() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    assert_eq!(
        e.handle(Event::Abort { req: Some(2), txid: txid(1) }),
        vec![Command::ForgetAborted { txid: txid(1) }, reply(2, Reply::Ack)]
    );
    assert!(e.locks().is_empty());
    assert_eq!(e.handle(Event::Abort { req: Some(3), txid: txid(1) }), vec![reply(3, Reply::Ack)], "idempotent");
}

#[test]
fn abort_before_prepare_makes_the_late_prepare_vote_no() {
    let mut e = engine();
    assert_eq!(e.handle(Event::Abort { req: Some(1), txid: txid(1) }), vec![reply(1, Reply::Ack)]);
    let no = Reply::Vote(Vote::No(AbortReason::AbortedEarlier { participant: node("p1") }));
    assert_eq!(prepare(&mut e, 2, 1, write("a", "1")), vec![reply(2, no)]);
    assert!(e.locks().is_empty());
}

#[test]
fn abort_during_the_prepare_sync_never_votes_yes() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    assert_eq!(e.handle(Event::Abort { req: Some(2), txid: txid(1) }), vec![], "acked once the locks are released");
    let no = Reply::Vote(Vote::No(AbortReason::AbortedEarlier { participant: node("p1") }));
    assert_eq!(
        e.handle(Event::PrepareSynced { txid: txid(1) }),
        vec![Command::ForgetAborted { txid: txid(1) }, reply(1, no), reply(2, Reply::Ack)]
    );
    assert!(e.locks().is_empty());
}

#[test]
fn one_phase_commit_replies_only_after_the_apply_is_durable() {
    let mut e = engine();
    let ops = write("a", "1");
    let cur = current(&ops, &[]);
    let out =
        e.handle(Event::OnePhase { req: 1, prepare: prepare_req(1, ops.clone()), current: cur.clone(), now_ms: 0 });
    assert_eq!(out, vec![Command::Apply { txid: txid(1), writes: record(1, "a", "1").writes, synced: true }]);
    assert_eq!(
        e.handle(Event::OnePhase { req: 2, prepare: prepare_req(1, ops.clone()), current: cur.clone(), now_ms: 0 }),
        vec![]
    );
    let committed = Reply::Outcome(Outcome::Committed);
    assert_eq!(
        e.handle(Event::Applied { txid: txid(1) }),
        vec![reply(1, committed.clone()), reply(2, committed.clone())]
    );
    let again = e.handle(Event::OnePhase { req: 3, prepare: prepare_req(1, ops), current: cur, now_ms: 0 });
    assert_eq!(again, vec![reply(3, committed)], "a retried one-phase commit is not applied twice");
}

#[test]
fn a_recovered_prepare_is_never_younger_than_the_start_that_found_it() {
    // Prepared at 1_000 on a clock since set back: found at 400.
    let mut e = engine();
    let (prepared, decided, heuristics, forgotten) = (vec![record(1, "a", "1")], vec![], vec![], Horizons::default());
    e.handle(Event::Recovered { prepared, decided, heuristics, forgotten, now_ms: 400 });
    assert_eq!(e.view(&txid(1)).since_ms, Some(400));
    // Its age counts from there: stuck once the threshold has passed.
    let out = prepare_a_at(&mut e, 2, 400 + STUCK_AFTER_MS);
    let stuck =
        AbortReason::HeldInDoubt { participant: node("p1"), key: k("a"), holder: txid(1), for_ms: STUCK_AFTER_MS };
    assert!(out.contains(&reply(2, Reply::Vote(Vote::No(stuck)))), "{out:?}");
}

#[test]
fn recovery_retakes_locks_and_asks_the_coordinator() {
    let mut e = engine();
    let out = e.handle(Event::Recovered {
        prepared: vec![record(1, "a", "1")],
        decided: vec![(txid(9), Decision::Committed)],
        heuristics: vec![],
        forgotten: Horizons::default(),
        now_ms: 0,
    });
    assert_eq!(out, vec![Command::AskOutcome { txid: txid(1) }]);
    let reason = AbortReason::LockConflict { participant: node("p1"), key: k("a"), holder: txid(1) };
    // The holder, quiet since recovery, is asked about again.
    assert_eq!(
        prepare(&mut e, 1, 2, write("a", "2")),
        vec![Command::AskOutcome { txid: txid(1) }, reply(1, Reply::Vote(Vote::No(reason)))]
    );
    // The coordinator answers: apply.
    let out = e.handle(Event::OutcomeAnswer { txid: txid(1), status: OutcomeStatus::Committed });
    assert_eq!(out, vec![Command::Apply { txid: txid(1), writes: record(1, "a", "1").writes, synced: false }]);
    assert_eq!(e.handle(Event::Applied { txid: txid(1) }), vec![]);
    assert!(e.locks().is_empty());
}

#[test]
fn a_waiting_read_has_its_prepared_writer_ask_soon_and_not_too_often() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    assert_eq!(e.pending_writer(b"a"), Some(&txid(1)));
    let waiting = |now_ms| Event::ReadWaiting { txid: txid(1), now_ms };
    // Prepared at 1 s: the commit is normally on its way; wait for it.
    assert_eq!(e.handle(waiting(1_000 + BLOCKER_ASKS_AFTER_MS - 1)), vec![]);
    let ask = vec![Command::AskOutcome { txid: txid(1) }];
    assert_eq!(e.handle(waiting(1_000 + BLOCKER_ASKS_AFTER_MS)), ask, "asked long before the in-doubt timer");
    assert_eq!(e.handle(waiting(1_000 + BLOCKER_ASKS_AFTER_MS + 1)), vec![], "not again at once");
    assert_eq!(e.handle(waiting(1_000 + 2 * BLOCKER_ASKS_AFTER_MS)), ask);
    // Only a prepared writer is asked about.
    assert_eq!(e.handle(Event::ReadWaiting { txid: txid(7), now_ms: 5_000 }), vec![]);
}

#[test]
fn a_prepare_blocked_by_a_quiet_prepared_transaction_has_it_ask_soon_and_not_too_often() {
    // After a coordinator restart, its older prepared transactions learn
    // the presumed abort at the first conflict, not at the in-doubt timer.
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    let blocked = |e: &mut Engine, req, seq, now_ms| {
        let ops = write("a", "2");
        let current = current(&ops, &[]);
        e.handle(Event::Prepare { req, prepare: prepare_req(seq, ops), current, now_ms })
    };
    let ask = Command::AskOutcome { txid: txid(1) };
    let no = |req| {
        let reason = AbortReason::LockConflict { participant: node("p1"), key: k("a"), holder: txid(1) };
        reply(req, Reply::Vote(Vote::No(reason)))
    };
    assert_eq!(blocked(&mut e, 2, 2, 1_000 + BLOCKER_ASKS_AFTER_MS - 1), vec![no(2)], "its commit is on its way");
    assert_eq!(blocked(&mut e, 3, 3, 1_000 + BLOCKER_ASKS_AFTER_MS), vec![ask.clone(), no(3)]);
    assert_eq!(blocked(&mut e, 4, 4, 1_000 + BLOCKER_ASKS_AFTER_MS + 1), vec![no(4)], "not again at once");
    assert_eq!(blocked(&mut e, 5, 5, 1_000 + 2 * BLOCKER_ASKS_AFTER_MS), vec![ask, no(5)]);
}

#[test]
fn in_doubt_transactions_ask_again_after_a_quiet_period() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    assert_eq!(e.handle(Event::Tick { now_ms: 1_000 + IN_DOUBT_AFTER_MS - 1 }), vec![]);
    assert_eq!(
        e.handle(Event::Tick { now_ms: 1_000 + IN_DOUBT_AFTER_MS }),
        vec![Command::AskOutcome { txid: txid(1) }]
    );
    assert_eq!(e.handle(Event::OutcomeAnswer { txid: txid(1), status: OutcomeStatus::Pending }), vec![]);
    assert_eq!(
        e.handle(Event::OutcomeAnswer { txid: txid(1), status: OutcomeStatus::Aborted }),
        vec![Command::ForgetAborted { txid: txid(1) }]
    );
}

#[test]
fn probe_fences_unknown_txids() {
    let mut e = engine();
    assert_eq!(e.handle(Event::Probe { req: 1, txid: txid(1) }), vec![reply(1, Reply::Probe(ProbeAnswer::Aborted))]);
    // Operators see a fence, not an abort (trial 16C: participants a
    // transaction never involved were listed as aborted).
    assert_eq!(e.view(&txid(1)).state, "fenced");
    let ops = write("a", "1");
    let cur = current(&ops, &[]);
    let out = e.handle(Event::OnePhase { req: 2, prepare: prepare_req(1, ops), current: cur, now_ms: 0 });
    assert_eq!(
        out,
        vec![reply(2, Reply::Outcome(Outcome::Aborted(AbortReason::AbortedEarlier { participant: node("p1") })))]
    );
}

/// A prepared transaction's answer names its participants: its
/// coordinator waits for no other (trial 26A).
#[test]
fn a_probe_of_a_prepared_transaction_names_its_participants() {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    let named = ProbeAnswer::Prepared { participants: vec![node("p1"), node("p2")] };
    assert_eq!(e.handle(Event::Probe { req: 2, txid: txid(1) }), vec![reply(2, Reply::Probe(named))]);
}

/// A one-phase commit's coordinator may have lost its lazy End record in
/// a crash; once this participant dropped the decision, "never seen"
/// would make the coordinator presume an abort of a commit.
#[test]
fn a_probe_about_a_decision_dropped_from_memory_answers_forgotten_and_fences_nothing() {
    let mut e = engine();
    let decided = (1..=MAX_REMEMBERED_DECISIONS as u64 + 1).map(|seq| (txid(seq), Decision::Committed)).collect();
    e.handle(Event::Recovered {
        prepared: vec![],
        decided,
        heuristics: vec![],
        forgotten: Horizons::default(),
        now_ms: 0,
    });
    let forgotten = reply(1, Reply::Probe(ProbeAnswer::Forgotten));
    assert_eq!(e.handle(Event::Probe { req: 1, txid: txid(1) }), vec![forgotten.clone()]);
    assert_eq!(e.handle(Event::Probe { req: 1, txid: txid(1) }), vec![forgotten], "not fenced as aborted");
    assert_eq!(e.handle(Event::Probe { req: 2, txid: txid(2) }), vec![reply(2, Reply::Probe(ProbeAnswer::Committed))]);
    let later = TxnId { seq: MAX_REMEMBERED_DECISIONS as u64 + 2, ..txid(0) };
    assert_eq!(e.handle(Event::Probe { req: 3, txid: later }), vec![reply(3, Reply::Probe(ProbeAnswer::Aborted))]);
    let other = TxnId { coordinator: node("c2"), ..txid(1) };
    assert_eq!(e.handle(Event::Probe { req: 4, txid: other }), vec![reply(4, Reply::Probe(ProbeAnswer::Aborted))]);
}

/// The same across a restart: the log's horizon comes back with it.
#[test]
fn a_probe_about_a_decision_trimmed_from_the_log_answers_forgotten() {
    let mut e = engine();
    let mut forgotten = Horizons::default();
    forgotten.forget(&txid(5));
    e.handle(Event::Recovered { prepared: vec![], decided: vec![], heuristics: vec![], forgotten, now_ms: 0 });
    assert_eq!(e.handle(Event::Probe { req: 1, txid: txid(4) }), vec![reply(1, Reply::Probe(ProbeAnswer::Forgotten))]);
    assert_eq!(e.handle(Event::Probe { req: 2, txid: txid(6) }), vec![reply(2, Reply::Probe(ProbeAnswer::Aborted))]);
}

#[test]
fn bad_input_is_refused_without_state_change() {
    let mut e = engine();
    let mut req = prepare_req(1, write("a", "1"));
    req.ring = 7;
    let out = e.handle(Event::Prepare { req: 1, prepare: req, current: HashMap::new(), now_ms: 0 });
    assert!(
        matches!(&out[..], [Command::Reply { reply: Reply::Error(ServiceError::ConfigMismatch(_)), .. }]),
        "{out:?}"
    );
    let out = prepare(&mut e, 2, 2, write("", "1"));
    assert!(matches!(&out[..], [Command::Reply { reply: Reply::Error(ServiceError::Invalid(_)), .. }]), "{out:?}");
    let out = e.handle(Event::Commit { req: Some(3), txid: txid(5) });
    assert_eq!(out, vec![reply(3, Reply::Ack)], "commit of an unknown txid: already applied and forgotten");
    assert!(e.locks().is_empty());
}

fn prepared_engine() -> Engine {
    let mut e = engine();
    prepare(&mut e, 1, 1, write("a", "1"));
    e.handle(Event::PrepareSynced { txid: txid(1) });
    e
}

fn heuristic(txid: TxnId, decision: Decision) -> HeuristicRecord {
    HeuristicRecord { txid, decision, at_ms: 1_000, reason: "operator".into(), conflict: None }
}

#[test]
fn a_forced_abort_is_logged_before_the_locks_are_released() {
    let mut e = prepared_engine();
    let out =
        e.handle(Event::Heuristic { req: 9, txid: txid(1), commit: false, reason: "operator".into(), now_ms: 1_000 });
    assert_eq!(
        out,
        vec![
            Command::LogHeuristic(heuristic(txid(1), Decision::Aborted)),
            Command::ForgetAborted { txid: txid(1) },
            reply(9, Reply::Ack),
        ]
    );
    assert!(e.locks().is_empty());
    // The coordinator later delivers Committed: the mismatch is recorded
    // once and refused, never applied.
    let out = e.handle(Event::Commit { req: Some(10), txid: txid(1) });
    let mut conflict = heuristic(txid(1), Decision::Aborted);
    conflict.conflict = Some(Decision::Committed);
    let mixed = ServiceError::HeuristicMixed { txid: txid(1), participant: "p1".into(), forced: "abort".into() };
    assert_eq!(out, vec![Command::LogHeuristic(conflict), reply(10, Reply::Error(mixed.clone()))]);
    assert_eq!(e.handle(Event::Commit { req: Some(11), txid: txid(1) }), vec![reply(11, Reply::Error(mixed))]);
    assert_eq!(e.heuristic_counts(), (1, 1));
}

#[test]
fn a_forgotten_forced_outcome_is_dropped_from_the_log_and_no_longer_reported() {
    let mut e = prepared_engine();
    e.handle(Event::Heuristic { req: 9, txid: txid(1), commit: false, reason: "operator".into(), now_ms: 1_000 });
    let out = e.handle(Event::ForgetHeuristic { req: 10, txid: txid(1) });
    assert_eq!(out, vec![Command::DropHeuristic { txid: txid(1) }, reply(10, Reply::Ack)], "dropped before the ack");
    assert_eq!(e.heuristic_counts(), (0, 0));
    assert_eq!(e.heuristic_txids().count(), 0);
    let view = e.view(&txid(1));
    assert_eq!((view.state.as_str(), view.heuristic), ("aborted", None));
    // Nothing left to forget: refused, nothing dropped.
    let out = e.handle(Event::ForgetHeuristic { req: 11, txid: txid(1) });
    assert!(
        matches!(&out[..], [Command::Reply { req: 11, reply: Reply::Error(ServiceError::Invalid(m)) }] if m.contains("no forced outcome")),
        "{out:?}"
    );
    // The abort it forced is still remembered: a late commit is refused.
    let out = e.handle(Event::Commit { req: Some(12), txid: txid(1) });
    assert!(matches!(&out[..], [Command::Reply { reply: Reply::Error(_), .. }]), "{out:?}");
}

#[test]
fn a_forced_commit_applies_and_agrees_with_a_later_commit() {
    let mut e = prepared_engine();
    let out =
        e.handle(Event::Heuristic { req: 9, txid: txid(1), commit: true, reason: "operator".into(), now_ms: 1_000 });
    assert_eq!(
        out,
        vec![
            Command::LogHeuristic(heuristic(txid(1), Decision::Committed)),
            Command::Apply { txid: txid(1), writes: record(1, "a", "1").writes, synced: true },
        ]
    );
    assert_eq!(e.handle(Event::Applied { txid: txid(1) }), vec![reply(9, Reply::Ack)]);
    assert_eq!(e.handle(Event::Commit { req: Some(10), txid: txid(1) }), vec![reply(10, Reply::Ack)]);
    assert_eq!(e.heuristic_counts(), (1, 0));
}

#[test]
fn only_in_doubt_transactions_can_be_forced() {
    let mut e = engine();
    let out = e.handle(Event::Heuristic { req: 1, txid: txid(1), commit: false, reason: "x".into(), now_ms: 0 });
    assert!(
        matches!(&out[..], [Command::Reply { reply: Reply::Error(ServiceError::Invalid(m)), .. }] if m.contains("not in doubt"))
    );
}

/// Trial 16C: two operators forced opposite outcomes at once; the abort
/// arrived while the forced commit was being applied, removed its state,
/// and the participant panicked once the apply was written.
#[test]
fn a_forced_abort_while_a_forced_commit_applies_is_refused() {
    let mut e = prepared_engine();
    e.handle(Event::Heuristic { req: 9, txid: txid(1), commit: true, reason: "one".into(), now_ms: 1_000 });
    let out = e.handle(Event::Heuristic { req: 10, txid: txid(1), commit: false, reason: "two".into(), now_ms: 1_001 });
    assert!(
        matches!(&out[..], [Command::Reply { req: 10, reply: Reply::Error(ServiceError::Invalid(m)) }] if m.contains("it is applying")),
        "{out:?}"
    );
    assert_eq!(e.handle(Event::Applied { txid: txid(1) }), vec![reply(9, Reply::Ack)]);
}

#[test]
fn heuristics_survive_recovery() {
    let mut e = engine();
    let mut h = heuristic(txid(1), Decision::Aborted);
    h.conflict = Some(Decision::Committed);
    e.handle(Event::Recovered {
        prepared: vec![],
        decided: vec![],
        heuristics: vec![h],
        forgotten: Horizons::default(),
        now_ms: 0,
    });
    assert_eq!(e.heuristic_counts(), (1, 1));
    assert_eq!(e.view(&txid(1)).state, "aborted");
    assert_eq!(e.view(&txid(1)).heuristic.unwrap().conflict.as_deref(), Some("commit"));
}
