//! Exhaustive model checking of the real engines (see `twopc_tests::model`
//! and the crate docs for the properties): small configurations explored
//! completely in CI, the biggest behind `--ignored`, and one negative
//! control per property.
//!
//! The biggest configuration (every fault at once, about 1.8 million
//! states, under two minutes): `cargo test -p twopc-tests --test
//! model_check -- --ignored --nocapture`.

use twopc_tests::model::{self, ModelConfig, ModelReport, ModelSabotage, Property, TxnSpec};

fn txn(writes: &[u8], reads: &[u8]) -> TxnSpec {
    TxnSpec { writes: writes.to_vec(), reads: reads.to_vec() }
}

/// A configuration with the given fault budgets.
fn config(name: &'static str, participants: u8, txns: Vec<TxnSpec>, faults: (bool, u8, u8, u8)) -> ModelConfig {
    let (lose, duplicates, crashes, early_timeouts) = faults;
    let mut cfg = ModelConfig::new(name, participants, txns);
    cfg.lose = lose;
    cfg.duplicates = duplicates;
    cfg.crashes = crashes;
    cfg.early_timeouts = early_timeouts;
    cfg
}

/// Explores `cfg` completely (depth-first: little memory); every property
/// must hold.
fn holds(mut cfg: ModelConfig) -> ModelReport {
    cfg.depth_first = true;
    let report = model::check(&cfg);
    println!("{}", report.describe());
    assert!(report.counterexample.is_none(), "{}", report.describe());
    assert!(report.exhaustive, "the search was cut short: {}", report.describe());
    assert!(report.states > 100, "too little explored: {}", report.describe());
    report
}

// Fault budgets: (messages lost, duplicate deliveries, crashes of any
// process, RPC deadlines passing early). Reordering is always on.

#[test]
fn two_phase_commit_with_loss_and_a_crash() {
    holds(config("2pc 2 participants: loss + 1 crash", 2, vec![txn(&[0, 1], &[])], (true, 0, 1, 0)));
}

#[test]
fn two_phase_commit_with_loss_duplicates_and_early_deadlines() {
    holds(config("2pc 2 participants: loss + dup + early deadline", 2, vec![txn(&[0, 1], &[])], (true, 1, 0, 1)));
}

#[test]
fn one_phase_commit_with_every_fault() {
    holds(config("1pc: loss + dup + 2 crashes + early deadline", 1, vec![txn(&[0], &[0])], (true, 1, 2, 1)));
}

#[test]
fn one_phase_and_two_phase_sharing_a_participant() {
    let txns = vec![txn(&[0], &[]), txn(&[0, 1], &[])];
    holds(config("1pc + 2pc on a shared key: 1 crash", 2, txns, (false, 0, 1, 0)));
}

#[test]
#[ignore = "about 1.8 million states, under two minutes: run with -- --ignored"]
fn big_two_phase_commit_with_every_fault() {
    holds(config("2pc 2 participants: every fault", 2, vec![txn(&[0, 1], &[])], (true, 1, 1, 1)));
}

#[test]
fn three_participants_with_a_crash() {
    // With loss too, more than 5 million states: beyond this test.
    holds(config("2pc 3 participants: 1 crash", 3, vec![txn(&[0, 1], &[2])], (false, 0, 1, 0)));
}

/// A participant the transaction never involved is unreachable (its
/// probe's deadline passes) while the others resolve it after a crash:
/// only those a prepared participant names count.
#[test]
fn a_participant_outside_the_transaction_unreachable() {
    let txns = vec![txn(&[0, 1], &[])];
    holds(config("2pc on 2 of 3 participants: 1 crash + early deadline", 3, txns, (false, 0, 1, 1)));
}

#[test]
fn two_conflicting_transactions() {
    // With a crash too, more than 5 million states: beyond this test.
    let txns = vec![txn(&[0, 1], &[]), txn(&[0, 1], &[])];
    holds(config("2 conflicting 2pc txns: reordering, deadlines", 2, txns, (false, 0, 0, 0)));
}

/// A negative control: only `property` is checked, under `sabotage` and
/// the given fault budgets; the checker must find a counterexample.
fn control(property: Property, sabotage: ModelSabotage, faults: (bool, u8, u8, u8)) {
    let mut cfg = config("negative control", 2, vec![txn(&[0, 1], &[])], faults);
    cfg.sabotage = sabotage;
    cfg.properties = vec![property];
    let report = model::check(&cfg);
    println!("{property:?} under {sabotage:?}: {}", report.describe());
    let Some(found) = report.counterexample else {
        panic!("{property:?} under {sabotage:?}: no counterexample in {} states", report.states);
    };
    assert!(found.violation.starts_with(&format!("{property:?}")), "{}", found.violation);
}

#[test]
fn control_vote_durable() {
    control(Property::VoteDurable, ModelSabotage::VoteBeforeSync, (false, 0, 0, 0));
}

#[test]
fn control_decide_all_prepared() {
    control(Property::DecideAllPrepared, ModelSabotage::TimeoutIsYes, (true, 0, 0, 0));
}

#[test]
fn control_committed_durable() {
    control(Property::CommittedDurable, ModelSabotage::CommitBeforeSync, (false, 0, 0, 0));
}

#[test]
fn control_decision_stable() {
    control(Property::DecisionStable, ModelSabotage::ForgetfulCoordinator, (false, 0, 1, 0));
}

#[test]
fn control_tc_consistent() {
    control(Property::TcConsistent, ModelSabotage::ForgetfulCoordinator, (false, 0, 1, 0));
}

#[test]
fn control_resolves() {
    control(Property::Resolves, ModelSabotage::NoOutcomeQuestions, (true, 0, 0, 0));
}

#[test]
fn control_resolves_catches_lost_atomicity() {
    // A participant that votes before its record is durable can lose it
    // and ack a commit it never applied: the completion finds it.
    control(Property::Resolves, ModelSabotage::VoteBeforeSync, (false, 0, 1, 0));
}

#[test]
fn control_ack_durable() {
    control(Property::AckDurable, ModelSabotage::AckBeforeSync, (false, 0, 0, 0));
}

#[test]
fn control_one_phase_lost_reported_as_not_sent() {
    // A one-phase commit that reached its participant and committed there,
    // reported "not sent" when its answer is lost: the coordinator aborts
    // what was applied.
    let mut cfg = config("negative control: 1pc", 1, vec![txn(&[0], &[])], (true, 0, 0, 0));
    cfg.sabotage = ModelSabotage::LostIsNotSent;
    cfg.properties = vec![Property::Resolves];
    let report = model::check(&cfg);
    println!("Resolves under LostIsNotSent: {}", report.describe());
    let found = report.counterexample.expect("a counterexample");
    assert!(found.violation.contains("heard Aborted"), "{}", found.violation);
}
