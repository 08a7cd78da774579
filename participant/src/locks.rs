//! The lock table: which transaction holds which key. Locks are exclusive
//! and never waited for: a conflict makes the prepare vote No at once.

use std::collections::BTreeMap;
use twopc_common::{Key, TxnId};

#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct LockTable {
    held: BTreeMap<Key, (TxnId, u64)>,
}

impl LockTable {
    /// The first key of `keys` held by a transaction other than `txid`.
    pub fn conflict<'a>(&self, txid: &TxnId, keys: impl IntoIterator<Item = &'a Key>) -> Option<(Key, TxnId)> {
        keys.into_iter().find_map(|k| match self.held.get(k) {
            Some((holder, _)) if holder != txid => Some((k.clone(), holder.clone())),
            _ => None,
        })
    }

    /// Takes every key for `txid`. The caller checked [`Self::conflict`].
    pub fn acquire<'a>(&mut self, txid: &TxnId, keys: impl IntoIterator<Item = &'a Key>, now_ms: u64) {
        for key in keys {
            let previous = self.held.insert(key.clone(), (txid.clone(), now_ms));
            if let Some((holder, since)) = previous {
                assert_eq!(&holder, txid, "lock on a held key taken without a conflict check");
                self.held.insert(key.clone(), (holder, since));
            }
        }
    }

    /// Releases `keys` if `txid` holds them.
    pub fn release<'a>(&mut self, txid: &TxnId, keys: impl IntoIterator<Item = &'a Key>) {
        for key in keys {
            if self.held.get(key).is_some_and(|(holder, _)| holder == txid) {
                self.held.remove(key);
            }
        }
    }

    /// The transaction holding `key`, if any.
    pub fn holder(&self, key: &[u8]) -> Option<&TxnId> {
        self.held.get(key).map(|(holder, _)| holder)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Every lock: key, holder, held since (ms).
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &TxnId, u64)> {
        self.held.iter().map(|(k, (t, since))| (k, t, *since))
    }
}
