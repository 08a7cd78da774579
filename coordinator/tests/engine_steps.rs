//! The coordinator engine, one protocol step at a time: each test feeds
//! events and compares the exact commands emitted.

use twopc_common::txn::{PrepareRequest, ProbeAnswer};
use twopc_common::{AbortReason, NodeId, Outcome, OutcomeStatus, ServiceError, TxnId, TxnOps, Vote};
use twopc_coordinator::engine::{
    Command, Engine, Event, Reply, Unanswered, FOREIGN_REPROBE_MS, MAX_REMEMBERED_OUTCOMES, OPEN_TXN_TIMEOUT_MS,
    PREPARE_STUCK_MS, STALLED_TICK_GAP_MS,
};
use twopc_coordinator::epochs::EpochHistory;

fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn txid(epoch: u64, seq: u64) -> TxnId {
    TxnId { coordinator: node("c1"), epoch, seq }
}

/// An engine recovered into epoch 2 with nothing to re-drive.
fn engine() -> Engine {
    let mut e = Engine::new(node("c1"));
    assert_eq!(
        e.handle(Event::Recovered {
            epoch: 2,
            epochs: EpochHistory::every_epoch_up_to(2),
            commits: vec![],
            mixed: vec![]
        }),
        vec![]
    );
    e
}

fn begin(e: &mut Engine, req: u64) -> TxnId {
    match &e.handle(Event::Begin { req, now_ms: 0 })[..] {
        [Command::Reply { reply: Reply::Begun(txid), .. }] => txid.clone(),
        other => panic!("{other:?}"),
    }
}

fn plan(txid: &TxnId, nodes: &[&str]) -> Vec<(NodeId, PrepareRequest)> {
    let participants: Vec<NodeId> = nodes.iter().map(|n| node(n)).collect();
    participants
        .iter()
        .map(|p| {
            let ops =
                TxnOps { writes: vec![(p.as_str().as_bytes().to_vec(), Some(b"v".to_vec()))], ..Default::default() };
            (p.clone(), PrepareRequest { txid: txid.clone(), ring: 1, ops, participants: participants.clone() })
        })
        .collect()
}

/// Probe answers from p1, p2, … in that order.
fn labeled(answers: Vec<Result<ProbeAnswer, String>>) -> Vec<(NodeId, Result<ProbeAnswer, String>)> {
    answers.into_iter().enumerate().map(|(i, a)| (node(&format!("p{}", i + 1)), a)).collect()
}

fn prepared_in(participants: &[&str]) -> ProbeAnswer {
    ProbeAnswer::Prepared { participants: participants.iter().map(|p| node(p)).collect() }
}

fn reply(req: u64, reply: Reply) -> Command {
    Command::Reply { req, reply }
}

fn yes(txid: &TxnId, from: &str) -> Event {
    Event::Vote { txid: txid.clone(), from: node(from), vote: Ok(Vote::Yes) }
}

#[test]
fn begin_mints_ids_in_the_current_epoch() {
    let mut e = engine();
    assert_eq!(begin(&mut e, 1), txid(2, 1));
    assert_eq!(begin(&mut e, 2), txid(2, 2));
}

#[test]
fn all_yes_syncs_the_decision_before_answering_committed() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    let p = plan(&t, &["p1", "p2"]);
    let out = e.handle(Event::Commit { req: 10, txid: t.clone(), plan: p.clone() });
    assert_eq!(
        out,
        vec![
            Command::SendPrepare { to: node("p1"), prepare: p[0].1.clone() },
            Command::SendPrepare { to: node("p2"), prepare: p[1].1.clone() },
        ]
    );
    assert_eq!(e.handle(yes(&t, "p1")), vec![]);
    assert_eq!(e.handle(yes(&t, "p1")), vec![], "a duplicate vote changes nothing");
    let participants = vec![node("p1"), node("p2")];
    assert_eq!(e.handle(yes(&t, "p2")), vec![Command::SyncDecision { txid: t.clone(), participants }]);
    assert_eq!(
        e.handle(Event::Outcome { req: 11, txid: t.clone() }),
        vec![reply(11, Reply::Status(OutcomeStatus::Pending))]
    );
    assert_eq!(
        e.handle(Event::DecisionSynced { txid: t.clone() }),
        vec![
            reply(10, Reply::Outcome(Outcome::Committed)),
            Command::SendCommit { txid: t.clone(), to: node("p1"), attempt: 0 },
            Command::SendCommit { txid: t.clone(), to: node("p2"), attempt: 0 },
        ]
    );
}

#[test]
fn commits_are_retried_until_every_participant_acks_then_end_is_logged() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    e.handle(yes(&t, "p1"));
    e.handle(yes(&t, "p2"));
    e.handle(Event::DecisionSynced { txid: t.clone() });
    let failed = Event::CommitFailed { txid: t.clone(), from: node("p2"), attempt: 3 };
    assert_eq!(e.handle(failed), vec![Command::SendCommit { txid: t.clone(), to: node("p2"), attempt: 4 }]);
    assert_eq!(e.handle(Event::CommitAcked { txid: t.clone(), from: node("p1") }), vec![]);
    assert_eq!(
        e.handle(Event::CommitAcked { txid: t.clone(), from: node("p2") }),
        vec![Command::LogEnd { txid: t.clone() }]
    );
    assert_eq!(e.handle(Event::CommitAcked { txid: t.clone(), from: node("p2") }), vec![], "late duplicate ack");
    assert_eq!(e.handle(Event::Outcome { req: 1, txid: t }), vec![reply(1, Reply::Status(OutcomeStatus::Committed))]);
}

#[test]
fn a_no_vote_aborts_without_a_log_write() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    e.handle(yes(&t, "p1"));
    let reason = AbortReason::StaleRead { participant: node("p2"), key: b"k".to_vec(), read: 1, current: 2 };
    let out = e.handle(Event::Vote { txid: t.clone(), from: node("p2"), vote: Ok(Vote::No(reason.clone())) });
    // p2 voted No and holds nothing; p1 must release its locks first.
    assert_eq!(out, vec![Command::SendAbort { txid: t.clone(), to: node("p1") }]);
    assert_eq!(
        e.handle(Event::Outcome { req: 1, txid: t.clone() }),
        vec![reply(1, Reply::Status(OutcomeStatus::Aborted))]
    );
    assert_eq!(e.handle(yes(&t, "p2")), vec![], "a vote after the decision is ignored");
    let sent = Event::AbortSent { txid: t.clone(), to: node("p1"), delivered: true };
    assert_eq!(e.handle(sent), vec![reply(10, Reply::Outcome(Outcome::Aborted(reason)))]);
    assert_eq!(e.handle(Event::Outcome { req: 2, txid: t }), vec![reply(2, Reply::Status(OutcomeStatus::Aborted))]);
}

#[test]
fn an_unreachable_participant_aborts() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    let reason = AbortReason::ParticipantUnavailable { participant: node("p1"), detail: "deadline".into() };
    let out = e.handle(Event::Vote { txid: t.clone(), from: node("p1"), vote: Err(reason.clone()) });
    // p1 may have prepared after all: it is told too.
    let aborts = vec![
        Command::SendAbort { txid: t.clone(), to: node("p2") },
        Command::SendAbort { txid: t.clone(), to: node("p1") },
    ];
    assert_eq!(out, aborts);
    // The answer waits for p2 (its locks), not for p1, which just failed
    // to answer: a paused participant would hold the client for as long.
    let out = e.handle(Event::AbortSent { txid: t.clone(), to: node("p2"), delivered: true });
    assert_eq!(out, vec![reply(10, Reply::Outcome(Outcome::Aborted(reason)))]);
    assert_eq!(e.handle(Event::AbortSent { txid: t.clone(), to: node("p1"), delivered: false }), vec![]);
}

#[test]
fn one_participant_means_one_phase_retried_until_definite() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    let p = plan(&t, &["p1"]);
    let out = e.handle(Event::Commit { req: 10, txid: t.clone(), plan: p.clone() });
    assert_eq!(out, vec![Command::SendOnePhase { to: node("p1"), prepare: p[0].1.clone(), attempt: 0 }]);
    let out =
        e.handle(Event::OnePhaseResult { txid: t.clone(), result: Err(Unanswered::Lost("reset".into())), attempt: 0 });
    assert_eq!(out, vec![Command::SendOnePhase { to: node("p1"), prepare: p[0].1.clone(), attempt: 1 }]);
    assert_eq!(
        e.handle(Event::Outcome { req: 11, txid: t.clone() }),
        vec![reply(11, Reply::Status(OutcomeStatus::Pending))]
    );
    let out = e.handle(Event::OnePhaseResult { txid: t.clone(), result: Ok(Outcome::Committed), attempt: 1 });
    // Logged here too (lazily), so that it stays known after a restart.
    assert_eq!(out, vec![reply(10, Reply::Outcome(Outcome::Committed)), Command::LogEnd { txid: t }]);
}

/// A one-phase commit no attempt of which reached the participant (it is
/// down, or the address is another process's) is a definite abort at
/// once, as an unreachable participant at prepare is; once an attempt may
/// have reached it, only its answer settles the outcome, reachable or not.
#[test]
fn a_one_phase_commit_never_sent_aborts_and_one_maybe_sent_waits_for_the_answer() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    let p = plan(&t, &["p1"]);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: p.clone() });
    let refused = Unanswered::NotSent("connection refused".into());
    let out = e.handle(Event::OnePhaseResult { txid: t.clone(), result: Err(refused.clone()), attempt: 0 });
    let reason = AbortReason::ParticipantUnavailable { participant: node("p1"), detail: "connection refused".into() };
    assert_eq!(out, vec![reply(10, Reply::Outcome(Outcome::Aborted(reason)))]);
    assert_eq!(
        e.handle(Event::Outcome { req: 11, txid: t.clone() }),
        vec![reply(11, Reply::Status(OutcomeStatus::Aborted))]
    );

    let t = begin(&mut e, 2);
    let p = plan(&t, &["p1"]);
    e.handle(Event::Commit { req: 20, txid: t.clone(), plan: p.clone() });
    let lost = Unanswered::Lost("deadline exceeded".into());
    let out = e.handle(Event::OnePhaseResult { txid: t.clone(), result: Err(lost), attempt: 0 });
    assert_eq!(out, vec![Command::SendOnePhase { to: node("p1"), prepare: p[0].1.clone(), attempt: 1 }]);
    // Unreachable now, but the first attempt may have committed: retried.
    let out = e.handle(Event::OnePhaseResult { txid: t.clone(), result: Err(refused), attempt: 1 });
    assert_eq!(out, vec![Command::SendOnePhase { to: node("p1"), prepare: p[0].1.clone(), attempt: 2 }]);
    let out = e.handle(Event::OnePhaseResult { txid: t.clone(), result: Ok(Outcome::Committed), attempt: 2 });
    assert_eq!(out, vec![reply(20, Reply::Outcome(Outcome::Committed)), Command::LogEnd { txid: t }]);
}

#[test]
fn recovery_redrives_logged_commits_and_remembers_ended_ones() {
    let mut e = Engine::new(node("c1"));
    let ps = vec![node("p1"), node("p2")];
    let out = e.handle(Event::Recovered {
        epoch: 3,
        epochs: EpochHistory::every_epoch_up_to(3),
        commits: vec![(txid(2, 5), ps.clone(), false), (txid(2, 6), ps, true)],
        mixed: vec![],
    });
    assert_eq!(
        out,
        vec![
            Command::SendCommit { txid: txid(2, 5), to: node("p1"), attempt: 0 },
            Command::SendCommit { txid: txid(2, 5), to: node("p2"), attempt: 0 },
        ]
    );
    for seq in [5, 6] {
        let out = e.handle(Event::Outcome { req: seq, txid: txid(2, seq) });
        assert_eq!(out, vec![reply(seq, Reply::Status(OutcomeStatus::Committed))]);
    }
}

#[test]
fn an_older_epoch_without_a_commit_record_is_resolved_by_probing() {
    let mut e = engine();
    let t = txid(1, 9);
    assert_eq!(e.handle(Event::Outcome { req: 1, txid: t.clone() }), vec![Command::Probe { txid: t.clone() }]);
    assert_eq!(e.handle(Event::Outcome { req: 2, txid: t.clone() }), vec![], "one probe at a time");
    let answers = labeled(vec![Ok(prepared_in(&["p1", "p2"])), Ok(ProbeAnswer::Aborted)]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: t.clone(), answers }),
        vec![reply(1, Reply::Status(OutcomeStatus::Aborted)), reply(2, Reply::Status(OutcomeStatus::Aborted))]
    );
    // A one-phase commit of an older run is found at its participant.
    let u = txid(1, 10);
    e.handle(Event::Outcome { req: 3, txid: u.clone() });
    let answers = labeled(vec![Ok(ProbeAnswer::Committed), Ok(ProbeAnswer::Aborted)]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: u.clone(), answers }),
        vec![reply(3, Reply::Status(OutcomeStatus::Committed))]
    );
    // Operators are not told a Commit record was logged (trial 16C).
    assert_eq!(e.view(&u).state, "applied");
    // Unreachable participants leave it pending.
    let w = txid(1, 11);
    e.handle(Event::Outcome { req: 4, txid: w.clone() });
    let answers = labeled(vec![Err("down".into()), Ok(ProbeAnswer::Aborted)]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: w, answers }),
        vec![reply(4, Reply::Status(OutcomeStatus::Pending))]
    );
}

/// A prepared participant names the transaction's participants: one that
/// never took part, unreachable, does not keep its presumed abort pending
/// (trial 26A: a participant down kept others' locks held); one that did
/// take part does (it may have been forced to commit by an operator).
#[test]
fn only_the_participants_a_prepared_one_names_are_waited_for() {
    let mut e = engine();
    let t = txid(1, 9);
    e.handle(Event::Outcome { req: 1, txid: t.clone() });
    let answers = labeled(vec![Ok(prepared_in(&["p1", "p2"])), Ok(ProbeAnswer::Aborted), Err("down".into())]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: t.clone(), answers }),
        vec![reply(1, Reply::Status(OutcomeStatus::Aborted))]
    );
    let u = txid(1, 10);
    e.handle(Event::Outcome { req: 2, txid: u.clone() });
    let answers = labeled(vec![Ok(prepared_in(&["p1", "p3"])), Ok(ProbeAnswer::Aborted), Err("down".into())]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: u.clone(), answers }),
        vec![reply(2, Reply::Status(OutcomeStatus::Pending))]
    );
    // Without a prepared answer, any participant may have committed it in
    // one phase: every one counts.
    let w = txid(1, 11);
    e.handle(Event::Outcome { req: 3, txid: w.clone() });
    let answers = labeled(vec![Ok(ProbeAnswer::Aborted), Ok(ProbeAnswer::Aborted), Err("down".into())]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: w, answers }),
        vec![reply(3, Reply::Status(OutcomeStatus::Pending))]
    );
}

/// An id of this run whose outcome the engine no longer remembers, and
/// that no participant remembers applying, may have committed long ago:
/// it is "forgotten", not presumed aborted (a soak test's committed
/// transactions were answered "aborted" after 476,000 more commits).
#[test]
fn an_outcome_forgotten_in_this_run_is_never_presumed_aborted() {
    let mut e = engine();
    let first = begin(&mut e, 0);
    e.handle(Event::Outcome { req: 0, txid: first.clone() });
    for req in 1..=MAX_REMEMBERED_OUTCOMES as u64 {
        let t = begin(&mut e, req);
        e.handle(Event::Outcome { req, txid: t });
    }
    assert_eq!(e.handle(Event::Outcome { req: 1, txid: first.clone() }), vec![Command::Probe { txid: first.clone() }]);
    let all_aborted = labeled(vec![Ok(ProbeAnswer::Aborted), Ok(ProbeAnswer::Aborted)]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: first.clone(), answers: all_aborted.clone() }),
        vec![reply(1, Reply::Error(ServiceError::Forgotten { txid: first.clone() }))]
    );
    // A participant still prepared never acked a commit: aborted.
    e.handle(Event::Outcome { req: 2, txid: first.clone() });
    let answers = labeled(vec![Ok(prepared_in(&["p1", "p2"])), Ok(ProbeAnswer::Aborted)]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: first, answers }),
        vec![reply(2, Reply::Status(OutcomeStatus::Aborted))]
    );
    // The latest ones are still remembered.
    let recent = txid(2, MAX_REMEMBERED_OUTCOMES as u64 + 1);
    assert_eq!(
        e.handle(Event::Outcome { req: 3, txid: recent }),
        vec![reply(3, Reply::Status(OutcomeStatus::Aborted))]
    );
}

/// After a restart, the log's horizon says how far an earlier run's
/// trimmed outcomes reach: an id at or below it that no participant
/// remembers is "forgotten", and one above it is presumed aborted.
#[test]
fn an_outcome_trimmed_in_an_earlier_run_is_never_presumed_aborted() {
    let mut e = Engine::new(node("c1"));
    let mut epochs = EpochHistory { legacy_up_to: 0, ran: [5, 9].into(), ..Default::default() };
    epochs.forgot(5, 700);
    assert_eq!(e.handle(Event::Recovered { epoch: 9, epochs, commits: vec![], mixed: vec![] }), vec![]);
    let all_aborted = labeled(vec![Ok(ProbeAnswer::Aborted), Ok(ProbeAnswer::Aborted)]);
    for (req, seq) in [(1, 1), (2, 700)] {
        let old = txid(5, seq);
        assert_eq!(e.handle(Event::Outcome { req, txid: old.clone() }), vec![Command::Probe { txid: old.clone() }]);
        assert_eq!(
            e.handle(Event::ProbeResult { txid: old.clone(), answers: all_aborted.clone() }),
            vec![reply(req, Reply::Error(ServiceError::Forgotten { txid: old }))]
        );
    }
    let later = txid(5, 701);
    e.handle(Event::Outcome { req: 3, txid: later.clone() });
    assert_eq!(
        e.handle(Event::ProbeResult { txid: later, answers: all_aborted }),
        vec![reply(3, Reply::Status(OutcomeStatus::Aborted))]
    );
}

/// A one-phase commit of an earlier run whose lazy End record was lost in
/// a crash is known only to its participant; once that participant has
/// dropped its decision too, it answers "forgotten", and so does the
/// coordinator (it presumed an abort of a commit).
#[test]
fn an_outcome_a_participant_forgot_is_never_presumed_aborted() {
    let mut e = engine();
    let t = txid(1, 9);
    e.handle(Event::Outcome { req: 1, txid: t.clone() });
    let answers = labeled(vec![Ok(ProbeAnswer::Forgotten), Ok(ProbeAnswer::Aborted)]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: t.clone(), answers }),
        vec![reply(1, Reply::Error(ServiceError::Forgotten { txid: t.clone() }))]
    );
    // Another that applied it still says so.
    e.handle(Event::Outcome { req: 2, txid: t.clone() });
    let answers = labeled(vec![Ok(ProbeAnswer::Forgotten), Ok(ProbeAnswer::Committed)]);
    assert_eq!(
        e.handle(Event::ProbeResult { txid: t, answers }),
        vec![reply(2, Reply::Status(OutcomeStatus::Committed))]
    );
}

#[test]
fn an_answered_abort_is_final() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    assert_eq!(
        e.handle(Event::Outcome { req: 2, txid: t.clone() }),
        vec![reply(2, Reply::Status(OutcomeStatus::Aborted))]
    );
    let out = e.handle(Event::Commit { req: 3, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    assert_eq!(out, vec![reply(3, Reply::Outcome(Outcome::Aborted(AbortReason::CoordinatorRestarted)))]);
}

#[test]
fn a_question_about_a_txid_never_minted_changes_nothing() {
    let mut e = engine();
    assert_eq!(begin(&mut e, 1), txid(2, 1));
    for seq in [50, u64::MAX - 1, u64::MAX] {
        let future = txid(2, seq);
        assert_eq!(
            e.handle(Event::Outcome { req: 2, txid: future.clone() }),
            vec![reply(2, Reply::Error(ServiceError::UnknownTxn(future)))]
        );
    }
    // The sequence did not move (it once jumped past the question, and a
    // question about seq u64::MAX - 1 made this begin overflow).
    assert_eq!(begin(&mut e, 3), txid(2, 2));
}

#[test]
fn commit_of_an_older_epoch_or_unknown_txid_is_refused() {
    let mut e = engine();
    let old = txid(1, 1);
    let out = e.handle(Event::Commit { req: 1, txid: old.clone(), plan: plan(&old, &["p1", "p2"]) });
    assert_eq!(out, vec![reply(1, Reply::Outcome(Outcome::Aborted(AbortReason::CoordinatorRestarted)))]);
    let unknown = txid(2, 99);
    let out = e.handle(Event::Commit { req: 2, txid: unknown.clone(), plan: plan(&unknown, &["p1", "p2"]) });
    assert_eq!(out, vec![reply(2, Reply::Error(ServiceError::UnknownTxn(unknown)))]);
}

#[test]
fn a_txid_of_an_epoch_this_log_never_ran_is_unknown_never_presumed_aborted() {
    // This log began at epoch 5 (a new data directory) and ran 5 and 9;
    // another instance of c1 ran epoch 7 and may have committed c1.7.1.
    let mut e = Engine::new(node("c1"));
    let epochs = EpochHistory { legacy_up_to: 0, ran: [5, 9].into(), ..Default::default() };
    assert_eq!(e.handle(Event::Recovered { epoch: 9, epochs, commits: vec![], mixed: vec![] }), vec![]);
    let mut now_ms = 1_000_000;
    let _ = e.handle(Event::Tick { now_ms });
    for foreign in [txid(7, 1), txid(3, 1)] {
        let refused = Reply::Error(ServiceError::ForeignEpoch { txid: foreign.clone() });
        // Asked, its participants are probed; none applied it: unknown.
        let probe = vec![Command::Probe { txid: foreign.clone() }];
        assert_eq!(e.handle(Event::Outcome { req: 1, txid: foreign.clone() }), probe);
        let answers = labeled(vec![Ok(ProbeAnswer::Aborted), Ok(prepared_in(&["p1", "p2"]))]);
        let out = e.handle(Event::ProbeResult { txid: foreign.clone(), answers });
        assert_eq!(out, vec![reply(1, refused.clone())]);
        let out = e.handle(Event::Commit { req: 2, txid: foreign.clone(), plan: plan(&foreign, &["p1", "p2"]) });
        assert_eq!(out, vec![reply(2, refused.clone())]);
        // A client's abort does not mark it aborted either.
        assert_eq!(e.handle(Event::ClientAbort { req: 3, txid: foreign.clone() }), vec![reply(3, refused.clone())]);
        // Asked again soon (in-doubt participants ask every few seconds):
        // unknown without another probe.
        assert_eq!(e.handle(Event::Outcome { req: 4, txid: foreign.clone() }), vec![reply(4, refused.clone())]);
        // Later, one that a participant applied meanwhile (an operator
        // forced it, the log that minted it lost) is committed: trial 21C
        // had "unknown" for good.
        now_ms += FOREIGN_REPROBE_MS;
        let _ = e.handle(Event::Tick { now_ms });
        assert_eq!(e.handle(Event::Outcome { req: 4, txid: foreign.clone() }), probe);
        let answers = labeled(vec![Ok(ProbeAnswer::Committed), Err("p2 unreachable".to_string())]);
        let out = e.handle(Event::ProbeResult { txid: foreign.clone(), answers });
        assert_eq!(out, vec![reply(4, Reply::Status(OutcomeStatus::Committed))]);
        assert_eq!(e.view(&foreign).state, "foreign-epoch");
    }
    // Its own older epoch: presumed abort, after asking the participants.
    assert_eq!(e.handle(Event::Outcome { req: 5, txid: txid(5, 1) }), vec![Command::Probe { txid: txid(5, 1) }]);
    assert_eq!(e.view(&txid(5, 1)).state, "unknown");
    // An abort of an id not minted yet does not poison it.
    let future = txid(9, 1);
    assert_eq!(
        e.handle(Event::ClientAbort { req: 6, txid: future.clone() }),
        vec![reply(6, Reply::Error(ServiceError::UnknownTxn(future.clone())))]
    );
    // A later epoch is another instance's: this one's next epoch comes
    // only with a restart.
    // It is not probed either (that would fence it at every participant).
    let later = txid(12, 1);
    let refused = Reply::Error(ServiceError::ForeignEpoch { txid: later.clone() });
    assert_eq!(e.handle(Event::Outcome { req: 8, txid: later.clone() }), vec![reply(8, refused)]);
    assert_eq!(e.view(&later).state, "foreign-epoch");
    assert_eq!(begin(&mut e, 7), future);
}

#[test]
fn abandoned_transactions_expire() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    assert_eq!(e.handle(Event::Tick { now_ms: OPEN_TXN_TIMEOUT_MS }), vec![]);
    let out = e.handle(Event::Commit { req: 2, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    // Said as it is (a user was told "coordinator restarted", which it had not).
    let expired = AbortReason::Expired { after_ms: OPEN_TXN_TIMEOUT_MS };
    assert_eq!(out, vec![reply(2, Reply::Outcome(Outcome::Aborted(expired)))]);
    assert_eq!(e.view(&t).state, "aborted");
    let out = e.handle(Event::Outcome { req: 3, txid: t });
    assert_eq!(out, vec![reply(3, Reply::Status(OutcomeStatus::Aborted))]);
}

#[test]
fn a_retried_commit_joins_the_one_in_progress() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    assert_eq!(e.handle(Event::Commit { req: 11, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) }), vec![]);
    e.handle(yes(&t, "p1"));
    e.handle(yes(&t, "p2"));
    let out = e.handle(Event::DecisionSynced { txid: t });
    assert_eq!(
        out[..2],
        [reply(10, Reply::Outcome(Outcome::Committed)), reply(11, Reply::Outcome(Outcome::Committed))]
    );
}

#[test]
fn a_heuristic_mismatch_stops_retries_and_is_logged_once() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    e.handle(yes(&t, "p1"));
    e.handle(yes(&t, "p2"));
    e.handle(Event::DecisionSynced { txid: t.clone() });
    e.handle(Event::CommitAcked { txid: t.clone(), from: node("p1") });
    let out = e.handle(Event::HeuristicMixed { txid: t.clone(), from: node("p2") });
    assert_eq!(
        out,
        vec![Command::LogMixed { txid: t.clone(), participant: node("p2") }, Command::LogEnd { txid: t.clone() }]
    );
    assert_eq!(e.handle(Event::HeuristicMixed { txid: t.clone(), from: node("p2") }), vec![]);
    let view = e.view(&t);
    assert_eq!((view.state.as_str(), view.mixed), ("committed", vec![node("p2")]));
    // A client asking is not told "committed": p2 holds the abort.
    let mixed = ServiceError::HeuristicMixed { txid: t.clone(), participant: "p2".into(), forced: "abort".into() };
    assert_eq!(e.handle(Event::Outcome { req: 19, txid: t.clone() }), vec![reply(19, Reply::Error(mixed))]);
    // An operator dealt with it: the finding goes (dropped before the ack).
    let out = e.handle(Event::ForgetMixed { req: 20, txid: t.clone() });
    assert_eq!(out, vec![Command::DropMixed { txid: t.clone() }, reply(20, Reply::Ack)]);
    assert_eq!(e.counts().2, 0);
    let view = e.view(&t);
    assert_eq!((view.state.as_str(), view.mixed), ("committed", vec![]));
    let out = e.handle(Event::ForgetMixed { req: 21, txid: t });
    assert!(matches!(&out[..], [Command::Reply { req: 21, reply: Reply::Error(_) }]), "{out:?}");
}

#[test]
fn recover_now_resends_every_undelivered_commit() {
    let mut e = Engine::new(node("c1"));
    let ps = vec![node("p1"), node("p2")];
    e.handle(Event::Recovered {
        epoch: 3,
        epochs: EpochHistory::every_epoch_up_to(3),
        commits: vec![(txid(2, 5), ps, false)],
        mixed: vec![],
    });
    e.handle(Event::CommitAcked { txid: txid(2, 5), from: node("p1") });
    assert_eq!(
        e.handle(Event::RecoverNow { req: 7 }),
        vec![
            Command::SendCommit { txid: txid(2, 5), to: node("p2"), attempt: 0 },
            reply(7, Reply::Recovered { asked: 1 })
        ]
    );
}

#[test]
fn a_transaction_stuck_preparing_is_aborted_by_the_safety_net() {
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    e.handle(yes(&t, "p1"));
    // p2's vote never arrives (lost inside the runtime).
    assert_eq!(e.handle(Event::Tick { now_ms: 1_000 }), vec![], "first seen preparing");
    for now_ms in (2_000..1_000 + PREPARE_STUCK_MS).step_by(1_000) {
        assert_eq!(e.handle(Event::Tick { now_ms }), vec![], "not yet");
    }
    assert_eq!(e.handle(Event::Tick { now_ms: 1_000 + PREPARE_STUCK_MS - 1 }), vec![], "not yet");
    let out = e.handle(Event::Tick { now_ms: 1_000 + PREPARE_STUCK_MS });
    let aborts = vec![
        Command::SendAbort { txid: t.clone(), to: node("p1") },
        Command::SendAbort { txid: t.clone(), to: node("p2") },
    ];
    assert_eq!(out, aborts, "both may hold locks: both are told");
    // The answer waits for p1 (it voted Yes: its locks), not for silent p2.
    let out = e.handle(Event::AbortSent { txid: t.clone(), to: node("p1"), delivered: true });
    assert!(matches!(&out[..], [Command::Reply { req: 10, reply: Reply::Outcome(Outcome::Aborted(_)) }]), "{out:?}");
    assert_eq!(e.handle(Event::AbortSent { txid: t.clone(), to: node("p2"), delivered: false }), vec![]);
    assert_eq!(e.handle(yes(&t, "p2")), vec![], "a late vote changes nothing");
}

#[test]
fn time_the_coordinator_stood_still_does_not_count_against_a_prepare() {
    // Trial 18A: stopped (SIGSTOP) for 8 s while its prepares were out,
    // the coordinator aborted on resuming, though every vote was Yes.
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    e.handle(yes(&t, "p1"));
    assert_eq!(e.handle(Event::Tick { now_ms: 1_000 }), vec![], "first seen preparing");
    assert_eq!(e.handle(Event::Tick { now_ms: 2_000 }), vec![]);
    // No tick for longer than a prepare may take: the process stood still.
    let resumed = 2_000 + PREPARE_STUCK_MS + STALLED_TICK_GAP_MS;
    assert_eq!(e.handle(Event::Tick { now_ms: resumed }), vec![], "the stall is not the participant's");
    let out = e.handle(yes(&t, "p2"));
    assert!(out.iter().any(|c| matches!(c, Command::SyncDecision { .. })), "the votes decide: {out:?}");
    // Without a vote, the net still fires once the time run since counts.
    let mut e = engine();
    let t = begin(&mut e, 1);
    e.handle(Event::Commit { req: 10, txid: t.clone(), plan: plan(&t, &["p1", "p2"]) });
    e.handle(Event::Tick { now_ms: 1_000 });
    e.handle(Event::Tick { now_ms: 1_000 + 2 * PREPARE_STUCK_MS });
    let mut now_ms = 1_000 + 2 * PREPARE_STUCK_MS;
    let mut aborted = false;
    for _ in 0..=PREPARE_STUCK_MS / 1_000 {
        now_ms += 1_000;
        aborted |= !e.handle(Event::Tick { now_ms }).is_empty();
    }
    assert!(aborted, "stuck after the stall too");
}
