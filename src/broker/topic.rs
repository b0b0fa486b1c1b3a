//! Topic names, topic filters and the topic trie (API contract; implementation by the topic helper).
//!
//! STAND-IN: a brute-force implementation so the broker core can be tested before the real trie
//! lands; it is replaced wholesale by the topic helper's file at merge (same signatures).
//!
//! The trie maps each topic filter to a map `K -> D` (in the broker `K` is a session key and `D`
//! the subscription options; in the cluster route table `K` is a node id and `D = ()`). Matching follows MQTT: `+` matches one level, `#` the rest (including
//! the parent level), and filters starting with a wildcard never match topics starting with `$`.

use std::collections::BTreeMap;

/// True if `topic` is a valid PUBLISH topic name: non-empty, no `+`/`#`, no NUL, at most
/// `max_levels` levels.
pub fn valid_topic_name(topic: &str, max_levels: usize) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0']) && topic.split('/').count() <= max_levels
}

/// True if `filter` is a valid (non-shared) topic filter: non-empty, `#` only as the whole last
/// level, `+` only as a whole level, no NUL, at most `max_levels` levels.
pub fn valid_topic_filter(filter: &str, max_levels: usize) -> bool {
    if filter.is_empty() || filter.contains('\0') || filter.split('/').count() > max_levels {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
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
    let Some(rest) = s.strip_prefix("$share/") else {
        return Some(SubscriptionFilter::Plain(s));
    };
    let (group, filter) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || !valid_topic_filter(filter, max_levels) {
        return None;
    }
    Some(SubscriptionFilter::Shared { group, filter })
}

fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Filter → (`K` → `D`), organised by levels so a publish is matched in time proportional to the
/// topic's depth, not to the number of filters.
#[derive(Debug, Clone)]
pub struct TopicTrie<K: Ord + Clone, D> {
    filters: BTreeMap<String, BTreeMap<K, D>>,
}

impl<K: Ord + Clone, D> Default for TopicTrie<K, D> {
    fn default() -> Self {
        TopicTrie {
            filters: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, D> TopicTrie<K, D> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `key -> data` under `filter`; returns the data it replaced.
    pub fn insert(&mut self, filter: &str, key: K, data: D) -> Option<D> {
        self.filters
            .entry(filter.to_string())
            .or_default()
            .insert(key, data)
    }

    /// Removes `key` from `filter`, returning its data. Emptied nodes are pruned.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<D> {
        let entries = self.filters.get_mut(filter)?;
        let old = entries.remove(key);
        if entries.is_empty() {
            self.filters.remove(filter);
        }
        old
    }

    /// Calls `visit(filter, entries)` once for every stored filter matching `topic`, with the
    /// entries stored under that filter (a key under two matching filters is seen twice; callers
    /// dedupe). Visit order is deterministic. Allocates nothing.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&str, &BTreeMap<K, D>)) {
        for (filter, entries) in &self.filters {
            if filter_matches(filter, topic) {
                visit(filter, entries);
            }
        }
    }

    /// Whether any filter matches `topic`.
    pub fn has_match(&self, topic: &str) -> bool {
        self.filters.keys().any(|f| filter_matches(f, topic))
    }

    /// Number of (filter, key) pairs.
    pub fn len(&self) -> usize {
        self.filters.values().map(BTreeMap::len).sum()
    }

    /// True when no filter is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries stored under exactly `filter` (no wildcard matching).
    pub fn get(&self, filter: &str) -> Option<&BTreeMap<K, D>> {
        self.filters.get(filter)
    }

    /// Every (filter, key) pair in filter order (for route listings and resync).
    pub fn entries(&self) -> Vec<(String, K)> {
        self.filters
            .iter()
            .flat_map(|(f, e)| e.keys().map(move |k| (f.clone(), k.clone())))
            .collect()
    }
}

/// Retained messages by topic name, searchable by filter.
#[derive(Debug, Clone)]
pub struct RetainedStore<M> {
    messages: BTreeMap<String, M>,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        RetainedStore {
            messages: BTreeMap::new(),
        }
    }
}

impl<M> RetainedStore<M> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces) the retained message of `topic`; returns the previous one.
    pub fn insert(&mut self, topic: &str, message: M) -> Option<M> {
        self.messages.insert(topic.to_string(), message)
    }

    /// Removes the retained message of `topic`.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        self.messages.remove(topic)
    }

    /// Calls `visit(topic, message)` for every retained message whose topic matches `filter`
    /// (with the `$` rule), in topic order. `visit` returns false to drop the message (e.g. expired).
    pub fn retain_matching(&mut self, filter: &str, mut visit: impl FnMut(&str, &M) -> bool) {
        self.messages
            .retain(|topic, m| !filter_matches(filter, topic) || visit(topic, m));
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}
