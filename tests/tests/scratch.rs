use twopc_tests::model::{self, ModelConfig, TxnSpec};

#[test]
fn m() {
    let configs = vec![
        ModelConfig::new("2p-1txn", 2, vec![TxnSpec { writes: vec![0, 1], reads: vec![] }]),
        ModelConfig::new("1p-1txn", 1, vec![TxnSpec { writes: vec![0], reads: vec![] }]),
    ];
    for mut cfg in configs {
        cfg.states_max = 300_000;
        let r = model::check(&cfg);
        println!("{}", r.describe());
    }
}
