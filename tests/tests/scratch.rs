use twopc_tests::model::{self, ModelConfig, TxnSpec};

fn t(w: &[u8], r: &[u8]) -> TxnSpec { TxnSpec { writes: w.to_vec(), reads: r.to_vec() } }

#[test]
fn m() {
    let cases: Vec<(&str, u8, Vec<TxnSpec>, bool, u8, u8, u8)> = vec![
        ("2p dup early", 2, vec![t(&[0,1],&[])], true, 1, 0, 1),
        ("1pc all", 1, vec![t(&[0],&[0])], true, 1, 2, 1),
        ("3p loss", 3, vec![t(&[0,1],&[2])], true, 0, 0, 0),
        ("3p crash", 3, vec![t(&[0,1],&[2])], false, 0, 1, 0),
        ("2txn loss", 2, vec![t(&[0,1],&[]), t(&[0,1],&[])], true, 0, 0, 0),
        ("2txn crash", 2, vec![t(&[0,1],&[]), t(&[0,1],&[])], false, 0, 1, 0),
        ("1pc+2pc crash", 2, vec![t(&[0],&[]), t(&[0,1],&[])], false, 0, 1, 0),
    ];
    for (name, n, txns, lose, dup, crash, early) in cases {
        let mut cfg = ModelConfig::new("x", n, txns);
        cfg.lose = lose; cfg.duplicates = dup; cfg.crashes = crash; cfg.early_timeouts = early;
        cfg.states_max = 1_500_000;
        let r = model::check(&cfg);
        println!("{name}: {}", r.describe());
    }
}
