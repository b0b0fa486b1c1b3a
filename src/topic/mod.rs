//! Topic names, topic filters, the topic trie and the retained-message store: the MQTT matching
//! rules shared by the broker core (subscriptions, retained) and the cluster core (route table).
//!
//! Owns the MQTT matching rules (§4.7): `/` separates levels (empty levels are real levels), `+`
//! matches exactly one level, `#` matches the parent level and everything below it, and a filter
//! whose first level is a wildcard never matches a topic starting with `$`. Both trees are keyed by
//! level, so a publish is matched in time proportional to the topic's depth, not to the number of
//! stored filters or retained messages.
//!
//! The trie maps each topic filter to a map `K -> D` (in the broker `K` is a session key and `D`
//! the subscription options; in the cluster route table `K` is a node id and `D = ()`).
//!
//! Must never: allocate while matching a publish, iterate in an order that depends on hashing, or
//! panic on any string (invalid filters are stored literally and simply never match wildcards the
//! way a valid one would). Recursion depth is bounded by the deepest stored filter or topic, which
//! callers cap with [`valid_topic_filter`] / [`valid_topic_name`].

use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// Longest topic name or filter MQTT can carry (a UTF-8 string with a 16-bit length).
const MAX_TOPIC_BYTES: usize = 65_535;

/// Prefix that marks a shared subscription (MQTT 5 §4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// True if `topic` is a valid PUBLISH topic name: non-empty, no `+`/`#`, no NUL, at most
/// `max_levels` levels, at most 65535 bytes.
pub fn valid_topic_name(topic: &str, max_levels: usize) -> bool {
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return false;
    }
    let mut levels = 1;
    for b in topic.bytes() {
        match b {
            b'+' | b'#' | 0 => return false,
            b'/' => levels += 1,
            _ => {}
        }
    }
    levels <= max_levels
}

/// True if `filter` is a valid (non-shared) topic filter: non-empty, `#` only as the whole last
/// level, `+` only as a whole level, no NUL, at most `max_levels` levels, at most 65535 bytes.
pub fn valid_topic_filter(filter: &str, max_levels: usize) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_BYTES || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    let mut count = 0;
    while let Some(level) = levels.next() {
        count += 1;
        if count > max_levels {
            return false;
        }
        match level {
            "+" => {}
            "#" if levels.peek().is_none() => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// A subscription filter as written by a client: plain, or `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionFilter<'a> {
    /// An ordinary filter: every matching subscriber gets a copy.
    Plain(&'a str),
    /// A shared subscription: one member of `group` gets each message matching `filter`.
    Shared { group: &'a str, filter: &'a str },
}

/// Splits `$share/group/filter`; `None` if it starts with `$share/` but is malformed (empty
/// group, group with `+`/`#`, missing filter) or the inner (or plain) filter is invalid.
pub fn parse_subscription_filter(s: &str, max_levels: usize) -> Option<SubscriptionFilter<'_>> {
    let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
        return valid_topic_filter(s, max_levels).then_some(SubscriptionFilter::Plain(s));
    };
    let (group, filter) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#', '\0']) {
        return None;
    }
    valid_topic_filter(filter, max_levels).then_some(SubscriptionFilter::Shared { group, filter })
}

/// Splits off the first level of a non-empty remainder; the tail is `None` after the last level.
fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((level, tail)) => (level, Some(tail)),
        None => (rest, None),
    }
}

/// Whether the first level of `filter` is a wildcard, which hides `$` topics from it.
fn starts_with_wildcard(filter: &str) -> bool {
    matches!(split_level(filter).0, "+" | "#")
}

/// The entries of one stored filter, kept with the filter text so matching can hand out `&str`.
#[derive(Debug, Clone)]
struct Subscribers<K, D> {
    filter: Box<str>,
    entries: BTreeMap<K, D>,
}

/// One level of the filter tree. `#` is a child like any other so `a/#` lives below `a` and is
/// seen while standing on `a` (it matches the parent level).
#[derive(Debug, Clone)]
struct FilterNode<K, D> {
    exact: BTreeMap<Box<str>, FilterNode<K, D>>,
    plus: Option<Box<FilterNode<K, D>>>,
    hash: Option<Box<FilterNode<K, D>>>,
    /// Never empty when `Some`: emptied maps are dropped so the node can be pruned.
    here: Option<Subscribers<K, D>>,
}

impl<K, D> Default for FilterNode<K, D> {
    fn default() -> Self {
        FilterNode {
            exact: BTreeMap::new(),
            plus: None,
            hash: None,
            here: None,
        }
    }
}

impl<K: Ord, D> FilterNode<K, D> {
    fn is_empty(&self) -> bool {
        self.here.is_none() && self.exact.is_empty() && self.plus.is_none() && self.hash.is_none()
    }

    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.exact.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.exact.get_mut(level),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        match level {
            "+" => self.plus.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => self.exact.entry(level.into()).or_default(),
        }
    }

    fn drop_child(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.exact.remove(level);
            }
        }
    }

    /// Removes `key` under the filter whose remaining levels are `levels`, pruning on the way up.
    fn remove(&mut self, mut levels: std::str::Split<'_, char>, key: &K) -> Option<D> {
        let Some(level) = levels.next() else {
            let subs = self.here.as_mut()?;
            let old = subs.entries.remove(key)?;
            if subs.entries.is_empty() {
                self.here = None;
            }
            return Some(old);
        };
        let child = self.child_mut(level)?;
        let old = child.remove(levels, key)?;
        if child.is_empty() {
            self.drop_child(level);
        }
        Some(old)
    }

    /// Visits every stored filter under this node matching the topic remainder `rest` (`None`
    /// once every topic level has been consumed). Order: `#` child, this node, exact, `+`.
    fn walk<'t, F>(&'t self, rest: Option<&str>, visit: &mut F) -> ControlFlow<()>
    where
        F: FnMut(&'t Subscribers<K, D>) -> ControlFlow<()>,
    {
        if let Some(subs) = self.hash.as_ref().and_then(|h| h.here.as_ref()) {
            visit(subs)?;
        }
        let Some(rest) = rest else {
            if let Some(subs) = &self.here {
                visit(subs)?;
            }
            return ControlFlow::Continue(());
        };
        let (level, tail) = split_level(rest);
        if let Some(child) = self.exact.get(level) {
            child.walk(tail, visit)?;
        }
        if let Some(child) = &self.plus {
            child.walk(tail, visit)?;
        }
        ControlFlow::Continue(())
    }

    /// Like `walk`, but for the root, where wildcards skip topics starting with `$`. The root
    /// itself never holds entries (every filter has at least one level).
    fn walk_root<'t, F>(&'t self, topic: &str, visit: &mut F) -> ControlFlow<()>
    where
        F: FnMut(&'t Subscribers<K, D>) -> ControlFlow<()>,
    {
        let wildcards = !topic.starts_with('$');
        let hash = self.hash.as_ref().and_then(|h| h.here.as_ref());
        if let Some(subs) = hash.filter(|_| wildcards) {
            visit(subs)?;
        }
        let (level, tail) = split_level(topic);
        if let Some(child) = self.exact.get(level) {
            child.walk(tail, visit)?;
        }
        if let Some(child) = self.plus.as_ref().filter(|_| wildcards) {
            child.walk(tail, visit)?;
        }
        ControlFlow::Continue(())
    }

    fn collect<'t>(&'t self, out: &mut Vec<&'t Subscribers<K, D>>) {
        if let Some(subs) = &self.here {
            out.push(subs);
        }
        for child in self.exact.values() {
            child.collect(out);
        }
        for child in self.plus.iter().chain(self.hash.iter()) {
            child.collect(out);
        }
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        let below: usize = self.exact.values().map(Self::count_nodes).sum::<usize>()
            + self
                .plus
                .iter()
                .chain(self.hash.iter())
                .map(|c| c.count_nodes())
                .sum::<usize>();
        below + 1
    }
}

/// Filter → (`K` → `D`), organised by levels so a publish is matched in time proportional to the
/// topic's depth, not to the number of filters.
#[derive(Debug, Clone)]
pub struct TopicTrie<K: Ord + Clone, D> {
    root: FilterNode<K, D>,
    len: usize,
}

impl<K: Ord + Clone, D> Default for TopicTrie<K, D> {
    fn default() -> Self {
        TopicTrie {
            root: FilterNode::default(),
            len: 0,
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
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_or_insert(level);
        }
        let subs = node.here.get_or_insert_with(|| Subscribers {
            filter: filter.into(),
            entries: BTreeMap::new(),
        });
        let old = subs.entries.insert(key, data);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key` from `filter`, returning its data. Emptied nodes are pruned.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<D> {
        let old = self.root.remove(filter.split('/'), key)?;
        self.len -= 1;
        Some(old)
    }

    /// Calls `visit(filter, entries)` once for every stored filter matching `topic`, with the
    /// entries stored under that filter (a key under two matching filters is seen twice; callers
    /// dedupe). Visit order is deterministic. Allocates nothing.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&str, &BTreeMap<K, D>)) {
        let _ = self.root.walk_root(topic, &mut |subs: &Subscribers<K, D>| {
            visit(&subs.filter, &subs.entries);
            ControlFlow::Continue(())
        });
    }

    /// Whether any filter matches `topic`.
    pub fn has_match(&self, topic: &str) -> bool {
        self.root
            .walk_root(topic, &mut |_: &Subscribers<K, D>| ControlFlow::Break(()))
            .is_break()
    }

    /// Number of (filter, key) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no filter is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries stored under exactly `filter` (no wildcard matching).
    pub fn get(&self, filter: &str) -> Option<&BTreeMap<K, D>> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.child(level)?;
        }
        node.here.as_ref().map(|subs| &subs.entries)
    }

    /// Every (filter, key) pair in filter order (for route listings and resync).
    pub fn entries(&self) -> Vec<(String, K)> {
        let mut all = Vec::new();
        self.root.collect(&mut all);
        all.sort_unstable_by(|a, b| a.filter.cmp(&b.filter));
        all.iter()
            .flat_map(|subs| {
                subs.entries
                    .keys()
                    .map(|key| (subs.filter.to_string(), key.clone()))
            })
            .collect()
    }

    /// Number of tree nodes below the root, to prove that removal prunes.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.count_nodes() - 1
    }
}

/// A retained message together with its topic, so visits can hand out `&str`.
#[derive(Debug, Clone)]
struct Retained<M> {
    topic: Box<str>,
    message: M,
}

/// One level of the retained-message tree.
#[derive(Debug, Clone)]
struct TopicNode<M> {
    children: BTreeMap<Box<str>, TopicNode<M>>,
    retained: Option<Retained<M>>,
}

impl<M> Default for TopicNode<M> {
    fn default() -> Self {
        TopicNode {
            children: BTreeMap::new(),
            retained: None,
        }
    }
}

impl<M> TopicNode<M> {
    fn is_empty(&self) -> bool {
        self.retained.is_none() && self.children.is_empty()
    }

    fn remove(&mut self, rest: Option<&str>) -> Option<M> {
        let Some(rest) = rest else {
            return self.retained.take().map(|r| r.message);
        };
        let (level, tail) = split_level(rest);
        let child = self.children.get_mut(level)?;
        let old = child.remove(tail)?;
        if child.is_empty() {
            self.children.remove(level);
        }
        Some(old)
    }

    /// Offers this node's message to `visit`, dropping it if `visit` says so.
    fn offer<F: FnMut(&str, &M) -> bool>(&mut self, visit: &mut F, removed: &mut usize) {
        let keep = self
            .retained
            .as_ref()
            .is_none_or(|r| visit(&r.topic, &r.message));
        if !keep {
            self.retained = None;
            *removed += 1;
        }
    }

    /// Offers this node's message and every message below it, in topic order.
    fn offer_subtree<F: FnMut(&str, &M) -> bool>(&mut self, visit: &mut F, removed: &mut usize) {
        self.offer(visit, removed);
        self.children.retain(|_, child| {
            child.offer_subtree(visit, removed);
            !child.is_empty()
        });
    }

    /// Offers every message below this node matching the filter remainder `rest`; `hide_dollar`
    /// is set only at the root for filters starting with a wildcard.
    fn offer_matching<F: FnMut(&str, &M) -> bool>(
        &mut self,
        rest: Option<&str>,
        hide_dollar: bool,
        visit: &mut F,
        removed: &mut usize,
    ) {
        let Some(rest) = rest else {
            self.offer(visit, removed);
            return;
        };
        match split_level(rest) {
            ("#", None) => {
                // The root never holds a message, so offering it is harmless there.
                self.offer(visit, removed);
                self.children.retain(|name, child| {
                    if !(hide_dollar && name.starts_with('$')) {
                        child.offer_subtree(visit, removed);
                    }
                    !child.is_empty()
                });
            }
            ("+", tail) => self.children.retain(|name, child| {
                if !(hide_dollar && name.starts_with('$')) {
                    child.offer_matching(tail, false, visit, removed);
                }
                !child.is_empty()
            }),
            (level, tail) => {
                if let Some(child) = self.children.get_mut(level) {
                    child.offer_matching(tail, false, visit, removed);
                    if child.is_empty() {
                        self.children.remove(level);
                    }
                }
            }
        }
    }

    fn for_each<F: FnMut(&str, &M)>(&self, visit: &mut F) {
        if let Some(r) = &self.retained {
            visit(&r.topic, &r.message);
        }
        for child in self.children.values() {
            child.for_each(visit);
        }
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        1 + self.children.values().map(Self::count_nodes).sum::<usize>()
    }
}

/// Retained messages by topic name, searchable by filter.
///
/// "Topic order" below means ordered level by level, each level by bytes (`a` < `a/b` < `a-b`).
#[derive(Debug, Clone)]
pub struct RetainedStore<M> {
    root: TopicNode<M>,
    len: usize,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        RetainedStore {
            root: TopicNode::default(),
            len: 0,
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
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        match &mut node.retained {
            Some(r) => Some(std::mem::replace(&mut r.message, message)),
            slot @ None => {
                *slot = Some(Retained {
                    topic: topic.into(),
                    message,
                });
                self.len += 1;
                None
            }
        }
    }

    /// Removes the retained message of `topic`.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        let old = self.root.remove(Some(topic))?;
        self.len -= 1;
        Some(old)
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.retained.as_ref().map(|r| &r.message)
    }

    /// Calls `visit(topic, message)` for every retained message whose topic matches `filter`
    /// (with the `$` rule), in topic order. `visit` returns false to drop the message (e.g. expired).
    pub fn retain_matching(&mut self, filter: &str, mut visit: impl FnMut(&str, &M) -> bool) {
        let mut removed = 0;
        let hide_dollar = starts_with_wildcard(filter);
        self.root
            .offer_matching(Some(filter), hide_dollar, &mut visit, &mut removed);
        self.len -= removed;
    }

    /// Offers every retained message, `$` topics included, in topic order; those `visit`
    /// returns false for are removed.
    pub fn retain_all(&mut self, mut visit: impl FnMut(&str, &M) -> bool) {
        let mut removed = 0;
        self.root.offer_subtree(&mut visit, &mut removed);
        self.len -= removed;
    }

    /// Calls `visit(topic, message)` for every retained message, `$` topics included, in topic
    /// order (for cluster-wide retained sync and admin listings).
    pub fn for_each(&self, mut visit: impl FnMut(&str, &M)) {
        self.root.for_each(&mut visit);
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of tree nodes below the root, to prove that removal prunes.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.count_nodes() - 1
    }
}

#[cfg(test)]
mod tests;
