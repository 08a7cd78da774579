//! Simulation tests (see the crate docs for the properties checked).

use twopc_tests::sim::{self, Sabotage};

#[test]
fn smoke() {
    let mut fails = 0;
    let (mut c, mut a, mut u, mut ev) = (0, 0, 0, 0);
    for seed in 0..3000 {
        let r = sim::run_seed(seed, Sabotage::None);
        c += r.committed; a += r.aborted; u += r.unknown; ev += r.events;
        if seed < 14 { println!("{seed}: {} {} events, {} ms, c={} a={} u={}", r.profile, r.events, r.sim_ms, r.committed, r.aborted, r.unknown); }
        if !r.passed() { fails += 1; if fails < 6 { println!("{}", r.describe()); } }
    }
    println!("fails={fails} committed={c} aborted={a} unknown={u} events={ev}");
    assert_eq!(fails, 0);
}
