use twopc_tests::model::{self, ModelConfig, TxnSpec};

#[test]
fn m() {
    for (lose, dup, crash, early) in [(true,0,1,0)] {
        let mut cfg = ModelConfig::new("2p-1txn", 2, vec![TxnSpec { writes: vec![0, 1], reads: vec![] }]);
        cfg.lose = lose; cfg.duplicates = dup; cfg.crashes = crash; cfg.early_timeouts = early;
        cfg.states_max = 100_000;
        let r = model::check(&cfg);
        println!("lose={lose} dup={dup} crash={crash} early={early}: {}", r.describe());
    }
}
