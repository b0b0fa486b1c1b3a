//! The replicated route table: topic filter → the remote nodes with at least one local
//! subscriber for it, kept in a [`TopicTrie`] so a publish finds its destination nodes in time
//! proportional to the topic's depth.
//!
//! Each node is the single writer of its own routes, so the table is a union of per-node sets:
//! a full sync replaces one node's set, deltas edit it, a purge drops it. It never holds the
//! local node's routes (those live in the core) and never decides anything about links.

use std::collections::{BTreeMap, BTreeSet};

use super::NodeName;
use crate::topic::TopicTrie;

/// Filter → remote nodes, plus each node's own set for resync and purge.
#[derive(Debug, Default)]
pub struct RouteTable {
    trie: TopicTrie<NodeName, ()>,
    by_node: BTreeMap<NodeName, BTreeSet<String>>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// `node` has a route for `filter`; false if it already had.
    pub fn add(&mut self, node: &NodeName, filter: &str) -> bool {
        let set = match self.by_node.get_mut(node) {
            Some(set) => set,
            None => self.by_node.entry(node.clone()).or_default(),
        };
        if !set.insert(filter.to_owned()) {
            return false;
        }
        self.trie.insert(filter, node.clone(), ());
        true
    }

    /// `node` no longer has a route for `filter`; false if it had none.
    pub fn remove(&mut self, node: &NodeName, filter: &str) -> bool {
        let Some(set) = self.by_node.get_mut(node) else {
            return false;
        };
        if !set.remove(filter) {
            return false;
        }
        if set.is_empty() {
            self.by_node.remove(node);
        }
        self.trie.remove(filter, node);
        true
    }

    /// Replaces `node`'s whole route set (a full sync); returns (added, removed).
    pub fn replace(&mut self, node: &NodeName, filters: Vec<String>) -> (usize, usize) {
        let new: BTreeSet<String> = filters.into_iter().collect();
        let old = self.by_node.remove(node).unwrap_or_default();
        let mut removed = 0;
        for gone in old.difference(&new) {
            self.trie.remove(gone, node);
            removed += 1;
        }
        let mut added = 0;
        for fresh in new.difference(&old) {
            self.trie.insert(fresh, node.clone(), ());
            added += 1;
        }
        if !new.is_empty() {
            self.by_node.insert(node.clone(), new);
        }
        (added, removed)
    }

    /// Drops every route of `node` (its link is down); returns how many.
    pub fn purge(&mut self, node: &NodeName) -> usize {
        let Some(set) = self.by_node.remove(node) else {
            return 0;
        };
        for filter in &set {
            self.trie.remove(filter, node);
        }
        set.len()
    }

    /// Calls `visit` with every remote node that has a route matching `topic`, possibly more
    /// than once per node (once per matching filter). Allocates nothing.
    pub fn for_each_node(&self, topic: &str, mut visit: impl FnMut(&NodeName)) {
        self.trie.for_each_match(topic, |_, nodes| {
            for node in nodes.keys() {
                visit(node);
            }
        });
    }

    /// Number of routes of one node.
    pub fn count_of(&self, node: &NodeName) -> usize {
        self.by_node.get(node).map_or(0, BTreeSet::len)
    }

    /// Number of (filter, node) routes.
    pub fn len(&self) -> usize {
        self.trie.len()
    }

    /// True when no remote node has a route.
    pub fn is_empty(&self) -> bool {
        self.trie.is_empty()
    }

    /// The routes of one node, sorted.
    pub fn of_node(&self, node: &NodeName) -> Vec<String> {
        self.by_node
            .get(node)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every (filter, node) pair, sorted by filter then node.
    pub fn entries(&self) -> Vec<(String, NodeName)> {
        self.trie.entries()
    }
}
