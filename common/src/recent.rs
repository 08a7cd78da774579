//! A map that remembers the most recent `capacity` entries and forgets the
//! oldest first. Used for "what happened to txid" memories that must stay
//! bounded.

use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recent<K, V> {
    capacity: usize,
    map: BTreeMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Ord + Clone, V> Recent<K, V> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a Recent map needs room for one entry");
        Recent { capacity, map: BTreeMap::new(), order: VecDeque::new() }
    }

    /// Inserts or replaces; returns the entry evicted to make room, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if self.map.insert(key.clone(), value).is_some() {
            return None;
        }
        self.order.push_back(key);
        if self.order.len() <= self.capacity {
            return None;
        }
        let oldest = self.order.pop_front().expect("order is longer than capacity");
        let value = self.map.remove(&oldest).expect("order and map hold the same keys");
        Some((oldest, value))
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_first() {
        let mut r = Recent::new(2);
        assert_eq!(r.insert(1, "a"), None);
        assert_eq!(r.insert(2, "b"), None);
        assert_eq!(r.insert(1, "A"), None, "replacing does not evict");
        assert_eq!(r.insert(3, "c"), Some((1, "A")));
        assert_eq!(r.get(&1), None);
        assert_eq!(r.get(&3), Some(&"c"));
        assert_eq!(r.len(), 2);
    }
}
