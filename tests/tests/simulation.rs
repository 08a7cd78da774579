//! Simulation tests (see the crate docs for the properties checked).

use twopc_tests::sim::{self, Sabotage};

#[test]
fn smoke() {
    for seed in 0..20 {
        let r = sim::run_seed(seed, Sabotage::None);
        println!("{seed}: {} events, {} ms, c={} a={} u={}", r.events, r.sim_ms, r.committed, r.aborted, r.unknown);
        assert!(r.passed(), "{}", r.describe());
    }
}
