//! Engine bugs found by the simulator, reduced to the few events that
//! show them: regression tests asserting the correct behaviour. While a
//! bug is unfixed its test carries `#[ignore]` and its violation pattern
//! is listed in `twopc_tests::sim::KNOWN_ENGINE_BUGS`.

use twopc_common::txn::PrepareRequest;
use twopc_common::{NodeId, Outcome, TxnId, TxnOps, Vote};
use twopc_coordinator::engine::{Command, Engine, Event, Reply};
use twopc_coordinator::epochs::EpochHistory;

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn plan(txid: &TxnId) -> Vec<(NodeId, PrepareRequest)> {
    let participants = vec![node("p1"), node("p2")];
    participants
        .iter()
        .map(|p| {
            let ops =
                TxnOps { writes: vec![(format!("k-{p}").into_bytes(), Some(b"v".to_vec()))], ..TxnOps::default() };
            let prepare = PrepareRequest { txid: txid.clone(), ring: 1, ops, participants: participants.clone() };
            (p.clone(), prepare)
        })
        .collect()
}

fn answered(out: &[Command], req: u64) -> bool {
    out.iter().any(|c| matches!(c, Command::Reply { req: r, .. } if *r == req))
}

/// Found by simulation seed 2131 (lossy profile): the network duplicated
/// a client's commit request; the copy arrived while the transaction was
/// delivering its commits and was never answered (the caller could only
/// time out, and the runtime kept the request's reply channel forever).
/// Fixed in the coordinator engine: answered Committed at once.
#[test]
fn a_commit_retried_while_committing_is_answered() {
    let mut e = Engine::new(node("c1"));
    e.handle(Event::Recovered { epoch: 1, epochs: EpochHistory::every_epoch_up_to(1), commits: vec![], mixed: vec![] });
    let out = e.handle(Event::Begin { req: 1, now_ms: 0 });
    let Some(Command::Reply { reply: Reply::Begun(txid), .. }) = out.into_iter().next() else { panic!("no txid") };
    e.handle(Event::Commit { req: 2, txid: txid.clone(), plan: plan(&txid) });
    for p in ["p1", "p2"] {
        e.handle(Event::Vote { txid: txid.clone(), from: node(p), vote: Ok(Vote::Yes) });
    }
    let out = e.handle(Event::DecisionSynced { txid: txid.clone() });
    assert!(out.contains(&Command::Reply { req: 2, reply: Reply::Outcome(Outcome::Committed) }));
    // The retry (or a duplicate) arrives while the commits are delivered.
    let mut out = e.handle(Event::Commit { req: 3, txid: txid.clone(), plan: plan(&txid) });
    for p in ["p1", "p2"] {
        out.extend(e.handle(Event::CommitAcked { txid: txid.clone(), from: node(p) }));
    }
    assert!(answered(&out, 3), "the retried commit was never answered: {out:?}");
}
