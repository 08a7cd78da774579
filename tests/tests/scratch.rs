use twopc_tests::sim::{self, Sabotage, SimConfig};

#[test]
fn controls() {
    for s in Sabotage::ALL {
        for ghost in [true, false] {
            let mut found = None;
            let mut n = 0;
            for seed in 0..500 {
                let r = sim::run(&SimConfig::for_seed(seed).with_sabotage(s).with_ghost_checks(ghost));
                if !r.passed() { n += 1; if found.is_none() { found = Some(r); } }
            }
            println!("{s:?} ghost={ghost}: {n}/500 seeds fail");
            if let Some(r) = found { println!("{}", r.describe()); }
        }
    }
}

#[test]
fn one() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let mut cfg = SimConfig::for_seed(seed);
    cfg.verbose = true;
    let r = sim::run(&cfg);
    println!("{}", r.describe());
}
