//! A map that remembers which keys changed, so storage writes only those rows (ADR 0027).
//!
//! [`Tracked`] reads like a `BTreeMap` (it derefs to one) and offers the `BTreeMap` methods
//! that change it — `insert`, `remove`, `get_mut`, `entry`, `retain` — each of which records the
//! key it may change. `apply` stays pure and deterministic: the record is part of the value in
//! memory, never of its encoding (serialized exactly as the map, so the encoding of `State`
//! does not change) or of its equality. Storage takes the changes after each apply batch with
//! [`Tracked::take_changes`], as it does for the proof set.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::collections::btree_map::{BTreeMap, Entry};
use std::ops::Deref;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    transparent,
    bound(
        serialize = "K: Serialize, V: Serialize",
        deserialize = "K: Ord + Deserialize<'de>, V: Deserialize<'de>"
    )
)]
pub struct Tracked<K: Ord, V> {
    map: BTreeMap<K, V>,
    /// Keys that may have changed since storage last took the changes (a superset: `get_mut`
    /// marks the key even if the caller writes nothing).
    #[serde(skip)]
    dirty: BTreeSet<K>,
}

impl<K: Ord, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }
}

/// Equal when the maps are (what changed since the last write is storage's business).
impl<K: Ord, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Ord, V: Eq> Eq for Tracked<K, V> {}

impl<K: Ord, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

/// A map whose rows storage already holds (read from storage, or a snapshot's): nothing dirty.
impl<K: Ord, V> From<BTreeMap<K, V>> for Tracked<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        Tracked {
            map,
            dirty: BTreeSet::new(),
        }
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for Tracked<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        BTreeMap::from_iter(entries).into()
    }
}

impl<K: Ord + Clone, V: Clone> Tracked<K, V> {
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.dirty.insert(key.clone());
        self.map.insert(key, value)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let removed = self.map.remove(key);
        if removed.is_some() {
            self.dirty.insert(key.to_owned());
        }
        removed
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let value = self.map.get_mut(key);
        if value.is_some() {
            self.dirty.insert(key.to_owned());
        }
        value
    }

    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.dirty.insert(key.clone());
        self.map.entry(key)
    }

    /// Keeps the entries `keep` accepts; the others are removed and recorded.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let dirty = &mut self.dirty;
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                dirty.insert(k.clone());
            }
            kept
        });
    }

    /// Every key changed since the last call, in key order, with its value now (`None`:
    /// removed).
    pub fn take_changes(&mut self) -> Vec<(K, Option<V>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let v = self.map.get(&k).cloned();
                (k, v)
            })
            .collect()
    }

    /// How many keys are recorded as changed.
    pub fn changed(&self) -> usize {
        self.dirty.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_recorded_once_with_its_value_now() {
        let mut m: Tracked<String, u32> = [("a".to_owned(), 1), ("b".to_owned(), 2)]
            .into_iter()
            .collect();
        assert_eq!(m.changed(), 0, "read from storage: nothing to write");
        m.insert("c".into(), 3);
        *m.get_mut("a").expect("a") += 10;
        assert!(m.get_mut("zz").is_none());
        assert!(m.remove("nope").is_none());
        *m.entry("d".into()).or_default() += 4;
        m.retain(|k, _| k != "b");
        assert_eq!(
            m.take_changes(),
            vec![
                ("a".into(), Some(11)),
                ("b".into(), None),
                ("c".into(), Some(3)),
                ("d".into(), Some(4)),
            ]
        );
        assert!(m.take_changes().is_empty());
        m.insert("c".into(), 5);
        m.remove("c");
        assert_eq!(m.take_changes(), vec![("c".into(), None)]);
    }

    #[test]
    fn the_encoding_and_equality_are_the_maps() {
        let mut m: Tracked<String, u32> = Tracked::default();
        m.insert("a".into(), 1);
        let plain: BTreeMap<String, u32> = [("a".to_owned(), 1)].into_iter().collect();
        assert_eq!(
            postcard::to_allocvec(&m).expect("enc"),
            postcard::to_allocvec(&plain).expect("enc")
        );
        assert_eq!(m, Tracked::from(plain));
    }
}
