//! Topic names, topic filters and the topic trie (API contract; implementation by the topic helper).
//!
//! The trie maps each topic filter to a map `K -> D` (in the broker `K` is a session key and `D`
//! the subscription options; in the cluster route table `K` is a node id and `D = ()`). Matching follows MQTT: `+` matches one level, `#` the rest (including
//! the parent level), and filters starting with a wildcard never match topics starting with `$`.

use std::collections::BTreeMap;

/// True if `topic` is a valid PUBLISH topic name: non-empty, no `+`/`#`, no NUL, at most
/// `max_levels` levels.
pub fn valid_topic_name(topic: &str, max_levels: usize) -> bool {
    let _ = (topic, max_levels);
    unimplemented!("topic helper")
}

/// True if `filter` is a valid (non-shared) topic filter: non-empty, `#` only as the whole last
/// level, `+` only as a whole level, no NUL, at most `max_levels` levels.
pub fn valid_topic_filter(filter: &str, max_levels: usize) -> bool {
    let _ = (filter, max_levels);
    unimplemented!("topic helper")
}

/// A subscription filter as written by a client: plain, or `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionFilter<'a> {
    Plain(&'a str),
    Shared { group: &'a str, filter: &'a str },
}

/// Splits `$share/group/filter`; `None` if it starts with `$share/` but is malformed (empty
/// group, group with `+`/`#`, missing filter) or the inner filter is invalid.
pub fn parse_subscription_filter(s: &str, max_levels: usize) -> Option<SubscriptionFilter<'_>> {
    let _ = (s, max_levels);
    unimplemented!("topic helper")
}

/// Filter → (`K` → `D`), organised by levels so a publish is matched in time proportional to the
/// topic's depth, not to the number of filters.
#[derive(Debug, Clone)]
pub struct TopicTrie<K: Ord + Clone, D> {
    _v: BTreeMap<K, D>,
}

impl<K: Ord + Clone, D> Default for TopicTrie<K, D> {
    fn default() -> Self {
        TopicTrie { _v: BTreeMap::new() }
    }
}

impl<K: Ord + Clone, D> TopicTrie<K, D> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `key -> data` under `filter`; returns the data it replaced.
    pub fn insert(&mut self, filter: &str, key: K, data: D) -> Option<D> {
        let _ = (filter, key, data);
        unimplemented!("topic helper")
    }

    /// Removes `key` from `filter`, returning its data. Emptied nodes are pruned.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<D> {
        let _ = (filter, key);
        unimplemented!("topic helper")
    }

    /// Calls `visit(filter, entries)` once for every stored filter matching `topic`, with the
    /// entries stored under that filter (a key under two matching filters is seen twice; callers
    /// dedupe). Visit order is deterministic. Allocates nothing.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&str, &BTreeMap<K, D>)) {
        let _ = (topic, &mut visit);
        unimplemented!("topic helper")
    }

    /// Whether any filter matches `topic`.
    pub fn has_match(&self, topic: &str) -> bool {
        let _ = topic;
        unimplemented!("topic helper")
    }

    /// Number of (filter, key) pairs.
    pub fn len(&self) -> usize {
        unimplemented!("topic helper")
    }

    /// True when no filter is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries stored under exactly `filter` (no wildcard matching).
    pub fn get(&self, filter: &str) -> Option<&BTreeMap<K, D>> {
        let _ = filter;
        unimplemented!("topic helper")
    }

    /// Every (filter, key) pair in filter order (for route listings and resync).
    pub fn entries(&self) -> Vec<(String, K)> {
        unimplemented!("topic helper")
    }
}

/// Retained messages by topic name, searchable by filter.
#[derive(Debug, Clone)]
pub struct RetainedStore<M> {
    _m: Vec<M>,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        RetainedStore { _m: Vec::new() }
    }
}

impl<M> RetainedStore<M> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces) the retained message of `topic`; returns the previous one.
    pub fn insert(&mut self, topic: &str, message: M) -> Option<M> {
        let _ = (topic, message);
        unimplemented!("topic helper")
    }

    /// Removes the retained message of `topic`.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        let _ = topic;
        unimplemented!("topic helper")
    }

    /// Calls `visit(topic, message)` for every retained message whose topic matches `filter`
    /// (with the `$` rule), in topic order. `visit` returns false to drop the message (e.g. expired).
    pub fn retain_matching(&mut self, filter: &str, mut visit: impl FnMut(&str, &M) -> bool) {
        let _ = (filter, &mut visit);
        unimplemented!("topic helper")
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        unimplemented!("topic helper")
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
