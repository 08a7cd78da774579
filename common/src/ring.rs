//! Consistent-hash ring: routes each key to the participant that owns it.
//!
//! Each participant gets `vnodes` points on a 64-bit circle; a key belongs to
//! the first point at or after its hash. The hash is FNV-1a followed by the
//! splitmix64 finaliser: fixed arithmetic, so every platform and release
//! routes the same key to the same participant.

use crate::ids::NodeId;
use std::collections::BTreeMap;

/// Default number of virtual nodes per participant.
pub const DEFAULT_VNODES: u32 = 64;
/// Upper bound on virtual nodes per participant.
pub const MAX_VNODES: u32 = 4096;

/// A hash that never changes across platforms or releases.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, usize)>,
    nodes: Vec<NodeId>,
    vnodes: u32,
    fingerprint: u64,
}

/// The fingerprint of `nodes` in the order given. [`Ring::new`] gives them
/// sorted; releases before it gave them in the cluster file's order, and
/// their participants' `RING` files hold that (see
/// `data_dir::claim_ring`).
pub fn fingerprint_of(nodes: &[NodeId], vnodes: u32) -> u64 {
    let mut input = format!("vnodes={vnodes}");
    for node in nodes {
        input.push(';');
        input.push_str(node.as_str());
    }
    stable_hash(input.as_bytes())
}

impl Ring {
    /// Builds the ring. Panics on an empty participant list or a zero vnode
    /// count: the cluster config validates both first. The order of
    /// `participants` does not matter (they are taken sorted by id): two
    /// cluster files listing the same participants in another order route
    /// alike and have one fingerprint.
    pub fn new(participants: &[NodeId], vnodes: u32) -> Self {
        assert!(!participants.is_empty(), "a ring needs at least one participant");
        assert!((1..=MAX_VNODES).contains(&vnodes), "vnodes out of range");
        let mut nodes = participants.to_vec();
        nodes.sort();
        let mut points = BTreeMap::new();
        for (index, node) in nodes.iter().enumerate() {
            for v in 0..vnodes {
                let point = stable_hash(format!("{node}#{v}").as_bytes());
                // On the (astronomically unlikely) collision the smaller id
                // wins, deterministically.
                points.entry(point).or_insert(index);
            }
        }
        Ring { points: points.into_iter().collect(), fingerprint: fingerprint_of(&nodes, vnodes), nodes, vnodes }
    }

    /// Identifies this ring: equal fingerprints route every key alike.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The participants, sorted by id.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The ring in words, for errors: "p1,p2,p3 (vnodes = 64)".
    pub fn describe(&self) -> String {
        let nodes: Vec<&str> = self.nodes.iter().map(NodeId::as_str).collect();
        format!("{} (vnodes = {})", nodes.join(","), self.vnodes)
    }

    /// The participant that owns `key`.
    pub fn owner(&self, key: &[u8]) -> &NodeId {
        let h = stable_hash(key);
        let at = self.points.partition_point(|(p, _)| *p < h);
        let (_, index) = self.points.get(at).unwrap_or(&self.points[0]);
        &self.nodes[*index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId::new(&format!("p{i}")).unwrap()).collect()
    }

    #[test]
    fn hash_is_pinned() {
        // If this changes, keys move between participants: never change it.
        assert_eq!(stable_hash(b""), 0xc381_7c01_6ba4_ff30);
        assert_eq!(stable_hash(b"account-1"), 0xfdc8_8958_4a9c_2a8a);
        assert_eq!(stable_hash(b"a"), 0x5f29_c2aa_dd9b_8527);
    }

    #[test]
    fn keys_spread_over_all_participants() {
        let ring = Ring::new(&nodes(3), DEFAULT_VNODES);
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            let owner = ring.owner(format!("key-{i}").as_bytes());
            counts[ring.nodes().iter().position(|n| n == owner).unwrap()] += 1;
        }
        for c in counts {
            assert!(c > 6_000, "unbalanced ring: {counts:?}");
        }
    }

    #[test]
    fn adding_a_participant_moves_few_keys() {
        let before = Ring::new(&nodes(3), DEFAULT_VNODES);
        let after = Ring::new(&nodes(4), DEFAULT_VNODES);
        let moved = (0..10_000)
            .filter(|i| {
                let k = format!("key-{i}");
                before.owner(k.as_bytes()) != after.owner(k.as_bytes())
            })
            .count();
        assert!(moved < 4_000, "{moved} of 10000 keys moved");
        assert_ne!(before.fingerprint(), after.fingerprint());
    }

    #[test]
    fn the_order_of_the_participants_does_not_matter() {
        let listed = nodes(3);
        let reordered = vec![listed[2].clone(), listed[0].clone(), listed[1].clone()];
        let (a, b) = (Ring::new(&listed, DEFAULT_VNODES), Ring::new(&reordered, DEFAULT_VNODES));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(b.nodes(), listed.as_slice());
        for i in 0..1_000 {
            let k = format!("key-{i}");
            assert_eq!(a.owner(k.as_bytes()), b.owner(k.as_bytes()));
        }
        // Listed sorted, the fingerprint is the one earlier releases wrote.
        assert_eq!(a.fingerprint(), fingerprint_of(&listed, DEFAULT_VNODES));
    }
}
