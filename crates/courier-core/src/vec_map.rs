//! A map kept as a sorted `VecDeque`, for the core's few small maps (subscriptions, queued
//! events by ticket, batches in flight). Same ordered behaviour as `BTreeMap` for what the
//! core uses, at a fraction of the code size in the WASM build (each `BTreeMap<K, V>`
//! instantiation costs several KB there); lookups are binary searches, inserts at the end
//! (the common case: tickets and batch ids only grow) are pushes, and taking the first
//! entry (the queue sends oldest first) is a pop from the front.

use std::borrow::Borrow;
use std::collections::VecDeque;

/// An ordered map over a sorted `VecDeque<(K, V)>`.
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V>(VecDeque<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(VecDeque::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(feature = "publish")]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    pub(crate) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.0.back().is_none_or(|(k, _)| *k < key) {
            self.0.push_back((key, value));
            return None;
        }
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key).ok()?;
        self.0.remove(i).map(|(_, v)| v)
    }

    #[cfg(feature = "publish")]
    pub(crate) fn first_key_value(&self) -> Option<(&K, &V)> {
        self.0.front().map(|(k, v)| (k, v))
    }

    #[cfg(feature = "publish")]
    pub(crate) fn pop_first(&mut self) -> Option<(K, V)> {
        self.0.pop_front()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::collections::vec_deque::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
