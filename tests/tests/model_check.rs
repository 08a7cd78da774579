//! Exhaustive model checking of the real engines (see `twopc_tests::model`
//! and the crate docs for the properties): small configurations explored
//! completely, and one negative control per property.

use twopc_tests::model::{self, ModelConfig, ModelSabotage, Property, TxnSpec};

fn txn(writes: &[u8], reads: &[u8]) -> TxnSpec {
    TxnSpec { writes: writes.to_vec(), reads: reads.to_vec() }
}

/// Explores `cfg` completely; every property must hold.
fn holds(cfg: ModelConfig) -> model::ModelReport {
    let report = model::check(&cfg);
    println!("{}", report.describe());
    assert!(report.counterexample.is_none(), "{}", report.describe());
    assert!(report.exhaustive, "the search was cut short: {}", report.describe());
    assert!(report.states > 1, "nothing explored");
    report
}

#[test]
fn two_phase_commit_two_participants() {
    // Loss, one duplicate, one early deadline, one crash of any process.
    holds(ModelConfig::new("2pc, 2 participants, 1 txn", 2, vec![txn(&[0, 1], &[])]));
}

#[test]
fn two_phase_commit_three_participants() {
    let mut cfg = ModelConfig::new("2pc, 3 participants, 1 txn", 3, vec![txn(&[0, 1], &[2])]);
    cfg.duplicates = 0;
    cfg.early_timeouts = 0;
    holds(cfg);
}

#[test]
fn one_phase_commit() {
    let mut cfg = ModelConfig::new("1pc, 1 participant, 1 txn", 1, vec![txn(&[0], &[0])]);
    cfg.crashes = 2;
    holds(cfg);
}

#[test]
fn two_conflicting_transactions() {
    // Both write k1 and k2: lock conflicts, No votes, aborts racing commits.
    let mut cfg =
        ModelConfig::new("2 txns, 2 participants, conflicting", 2, vec![txn(&[0, 1], &[]), txn(&[0, 1], &[])]);
    cfg.duplicates = 0;
    cfg.early_timeouts = 0;
    holds(cfg);
}

/// A negative control: only `property` is checked, under `sabotage`; the
/// checker must find a counterexample.
fn control(property: Property, sabotage: ModelSabotage) {
    let mut cfg = ModelConfig::new("negative control", 2, vec![txn(&[0, 1], &[])]);
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
    control(Property::VoteDurable, ModelSabotage::VoteBeforeSync);
}

#[test]
fn control_committed_durable() {
    control(Property::CommittedDurable, ModelSabotage::CommitBeforeSync);
}

#[test]
fn control_decision_stable() {
    control(Property::DecisionStable, ModelSabotage::ForgetfulCoordinator);
}

#[test]
fn control_tc_consistent() {
    control(Property::TcConsistent, ModelSabotage::ForgetfulCoordinator);
}

#[test]
fn control_resolves() {
    control(Property::Resolves, ModelSabotage::NoOutcomeQuestions);
}

#[test]
fn control_resolves_catches_lost_atomicity() {
    // A participant that votes before its record is durable can lose it
    // and ack a commit it never applied: the completion finds it.
    control(Property::Resolves, ModelSabotage::VoteBeforeSync);
}
