//! What the benchmark's clients do, independent of the system under test:
//! the key space (keys grouped by the participant that owns them, so a
//! PostgreSQL shard holds exactly the keys a twopc participant holds), a
//! uniform or zipfian key chooser, and the transaction plans of each
//! workload.

use rand::Rng;
use twopc_common::ring::Ring;

/// Balance of an account nobody wrote yet (twopc reads it as absent;
/// PostgreSQL shards are loaded with it).
pub const INITIAL_BALANCE: u64 = 1_000;
/// Largest amount one transfer moves (amounts are 1..=this).
pub const MAX_TRANSFER: u64 = 10;

/// Which transactions the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Blind write of one key on every participant (full two-phase commit).
    MultiShard,
    /// Read two accounts, move 1..=10 from one to the other (a read round
    /// trip, then a commit on one or two participants).
    Bank,
    /// Blind write of one key on one participant (one-phase commit).
    SingleShard,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::MultiShard => "multi-shard",
            Workload::Bank => "bank",
            Workload::SingleShard => "single-shard",
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One key and the shard (participant index, 0-based) that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardKey {
    pub shard: usize,
    pub key: String,
}

/// One transaction to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnPlan {
    /// Write `value` to every key (no reads).
    Write { keys: Vec<ShardKey>, value: u64 },
    /// Move `amount` from `from` to `to` if `from` holds at least that much.
    Transfer { from: ShardKey, to: ShardKey, amount: u64 },
}

impl TxnPlan {
    /// The shards the transaction touches, sorted, without repeats.
    pub fn shards(&self) -> Vec<usize> {
        let mut shards: Vec<usize> = match self {
            TxnPlan::Write { keys, .. } => keys.iter().map(|k| k.shard).collect(),
            TxnPlan::Transfer { from, to, .. } => vec![from.shard, to.shard],
        };
        shards.sort_unstable();
        shards.dedup();
        shards
    }
}

/// Picks ranks `0..n`: uniformly, or zipfian with exponent `s` (rank 0
/// the hottest).
#[derive(Debug, Clone)]
pub struct KeyChooser {
    n: usize,
    /// Cumulative distribution (zipfian only).
    cdf: Option<Vec<f64>>,
}

impl KeyChooser {
    /// `zipf`: `None` for uniform; `Some(s)` with `s > 0`.
    pub fn new(n: usize, zipf: Option<f64>) -> KeyChooser {
        assert!(n > 0, "a key chooser needs at least one key");
        let cdf = zipf.map(|s| {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = (1..=n)
                .map(|rank| {
                    acc += 1.0 / (rank as f64).powf(s);
                    acc
                })
                .collect();
            for c in &mut cdf {
                *c /= acc;
            }
            cdf
        });
        KeyChooser { n, cdf }
    }

    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        match &self.cdf {
            None => rng.gen_range(0..self.n),
            Some(cdf) => {
                let u: f64 = rng.gen();
                cdf.partition_point(|c| *c < u).min(self.n - 1)
            }
        }
    }
}

/// The keys of a benchmark run, grouped by owning participant.
#[derive(Debug, Clone)]
pub struct KeySpace {
    /// `shards[i]`: the keys participant `i` (in ring order) owns.
    pub shards: Vec<Vec<String>>,
}

impl KeySpace {
    /// `per_shard` keys owned by each participant of `ring`, named
    /// `bench/k0`, `bench/k1`, ... (the first names the ring gives each
    /// participant; the prefix keeps them apart from an application's
    /// keys when the benchmark targets a running cluster).
    pub fn new(ring: &Ring, per_shard: usize) -> KeySpace {
        let nodes = ring.nodes();
        let mut shards = vec![Vec::with_capacity(per_shard); nodes.len()];
        let mut i = 0u64;
        // The ring spreads keys over every participant; bound the search
        // anyway (a participant with no keys at all is a broken ring).
        let limit = (per_shard as u64 * nodes.len() as u64).saturating_mul(64).max(100_000);
        while shards.iter().any(|s| s.len() < per_shard) && i < limit {
            let key = format!("bench/k{i}");
            let owner = ring.owner(key.as_bytes());
            let index = nodes.iter().position(|n| n == owner).expect("owner is a ring node");
            if shards[index].len() < per_shard {
                shards[index].push(key);
            }
            i += 1;
        }
        assert!(shards.iter().all(|s| !s.is_empty()), "the ring left a participant without keys");
        KeySpace { shards }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

/// Generates the plans of one workload.
#[derive(Debug, Clone)]
pub struct PlanGenerator {
    workload: Workload,
    keys: std::sync::Arc<KeySpace>,
    /// Over one shard's keys (multi-shard, single-shard).
    per_shard: KeyChooser,
    /// Over all accounts, interleaved across shards (bank).
    global: KeyChooser,
}

impl PlanGenerator {
    pub fn new(workload: Workload, keys: std::sync::Arc<KeySpace>, zipf: Option<f64>) -> PlanGenerator {
        let smallest = keys.shards.iter().map(Vec::len).min().unwrap_or(1).max(1);
        let per_shard = KeyChooser::new(smallest, zipf);
        let global = KeyChooser::new(smallest * keys.shard_count(), zipf);
        PlanGenerator { workload, keys, per_shard, global }
    }

    fn global_key(&self, g: usize) -> ShardKey {
        let n = self.keys.shard_count();
        let shard = g % n;
        ShardKey { shard, key: self.keys.shards[shard][g / n].clone() }
    }

    pub fn next(&self, rng: &mut impl Rng) -> TxnPlan {
        match self.workload {
            Workload::MultiShard => TxnPlan::Write {
                keys: (0..self.keys.shard_count())
                    .map(|shard| ShardKey { shard, key: self.keys.shards[shard][self.per_shard.pick(rng)].clone() })
                    .collect(),
                value: rng.gen_range(0..1_000_000),
            },
            Workload::SingleShard => {
                let shard = rng.gen_range(0..self.keys.shard_count());
                TxnPlan::Write {
                    keys: vec![ShardKey { shard, key: self.keys.shards[shard][self.per_shard.pick(rng)].clone() }],
                    value: rng.gen_range(0..1_000_000),
                }
            }
            Workload::Bank => {
                let from = self.global.pick(rng);
                let mut to = self.global.pick(rng);
                // Two distinct accounts (bounded: fall back to the neighbour).
                for _ in 0..16 {
                    if to != from {
                        break;
                    }
                    to = self.global.pick(rng);
                }
                if to == from {
                    to = (from + 1) % (self.global.n);
                }
                TxnPlan::Transfer {
                    from: self.global_key(from),
                    to: self.global_key(to),
                    amount: rng.gen_range(1..=MAX_TRANSFER),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::sync::Arc;
    use twopc_common::config::ClusterConfig;

    fn keys(participants: usize, per: usize) -> (Ring, Arc<KeySpace>) {
        let ring = ClusterConfig::loopback(1, participants, 7000).ring();
        let keys = Arc::new(KeySpace::new(&ring, per));
        (ring, keys)
    }

    #[test]
    fn every_key_belongs_to_its_shard() {
        let (ring, keys) = keys(3, 200);
        for (i, shard) in keys.shards.iter().enumerate() {
            assert_eq!(shard.len(), 200);
            for k in shard {
                assert_eq!(ring.owner(k.as_bytes()), &ring.nodes()[i]);
            }
        }
    }

    #[test]
    fn multi_shard_touches_every_shard_and_single_shard_one() {
        let (_, keys) = keys(3, 50);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let multi = PlanGenerator::new(Workload::MultiShard, keys.clone(), None);
        let single = PlanGenerator::new(Workload::SingleShard, keys.clone(), Some(1.1));
        let bank = PlanGenerator::new(Workload::Bank, keys, Some(0.99));
        for _ in 0..500 {
            assert_eq!(multi.next(&mut rng).shards(), vec![0, 1, 2]);
            assert_eq!(single.next(&mut rng).shards().len(), 1);
            let TxnPlan::Transfer { from, to, amount } = bank.next(&mut rng) else { panic!("not a transfer") };
            assert_ne!(from, to);
            assert!((1..=MAX_TRANSFER).contains(&amount));
        }
    }

    #[test]
    fn zipf_prefers_low_ranks_and_uniform_does_not() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let zipf = KeyChooser::new(1000, Some(1.2));
        let uniform = KeyChooser::new(1000, None);
        let hot = |c: &KeyChooser, rng: &mut rand::rngs::SmallRng| (0..10_000).filter(|_| c.pick(rng) < 10).count();
        let z = hot(&zipf, &mut rng);
        let u = hot(&uniform, &mut rng);
        assert!(z > 4_000, "zipf 1.2 should put most picks on the 10 hottest keys: {z}");
        assert!(u < 300, "uniform should put ~1% on them: {u}");
        for _ in 0..1000 {
            assert!(zipf.pick(&mut rng) < 1000);
        }
    }
}
