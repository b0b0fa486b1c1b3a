//! Route sync: this node's local routes and the replicated table of the other nodes' routes,
//! kept in step over the links. On link up the peer gets our whole route set as one bulk
//! transfer (`bulk::send`); afterwards ordered `RouteAdd` / `RouteRemove` deltas (broadcast by
//! the caller). A peer's complete transfer replaces its set, its deltas edit it, a purge drops
//! it. Routes of a node whose link is down may be kept for the forward buffer; they are then
//! hidden from the listing and the count. No deadlines.

use std::collections::{BTreeMap, BTreeSet};

use super::routes::RouteTable;
use super::wire::{self, BulkBody};
use super::{LinkId, NodeName, Outbox, RouteEntry, bulk};

/// Local routes and the route table.
#[derive(Debug, Default)]
pub(super) struct RouteSync {
    /// Filters with at least one local subscriber.
    local: BTreeSet<String>,
    /// The other nodes' routes.
    table: RouteTable,
    /// The last bulk transfer number used.
    last_sync: u64,
}

impl RouteSync {
    /// The other nodes' routes.
    pub(super) fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The local broker gained its first subscriber for `filter`; true when that is news for
    /// the other nodes.
    pub(super) fn add_local(&mut self, filter: &str) -> bool {
        self.local.insert(filter.to_owned())
    }

    /// The local broker lost its last subscriber for `filter`; true when that is news for the
    /// other nodes.
    pub(super) fn remove_local(&mut self, filter: &str) -> bool {
        self.local.remove(filter)
    }

    /// Sends our full route set on `link` as one bulk transfer of bounded chunks.
    pub(super) fn send_all(&mut self, link: LinkId, out: &mut Outbox) {
        let sync = self.next_sync();
        let filters = self.local.iter().cloned();
        let size = |f: &String| wire::str_wire_len(f);
        bulk::send(link, sync, filters, size, BulkBody::Routes, out);
    }

    /// A new bulk transfer number (shared by every kind of set we send).
    pub(super) fn next_sync(&mut self) -> u64 {
        self.last_sync += 1;
        self.last_sync
    }

    /// `peer`'s whole route set arrived (in `chunks` chunks): it replaces the old one.
    pub(super) fn replace(&mut self, peer: &NodeName, filters: Vec<String>, chunks: u32) {
        let (added, removed) = self.table.replace(peer, filters);
        tracing::debug!(peer = %peer, added, removed, chunks, "routes resynced");
    }

    /// `peer` gained a route.
    pub(super) fn add(&mut self, peer: &NodeName, filter: &str) {
        self.table.add(peer, filter);
    }

    /// `peer` lost a route.
    pub(super) fn remove(&mut self, peer: &NodeName, filter: &str) {
        self.table.remove(peer, filter);
    }

    /// Drops every route of `peer`; returns how many.
    pub(super) fn purge(&mut self, peer: &NodeName) -> usize {
        self.table.purge(peer)
    }

    /// Local routes plus the routes of every node but the `hidden` ones.
    pub(super) fn count<'a>(&self, hidden: impl Iterator<Item = &'a NodeName>) -> usize {
        let hidden: usize = hidden.map(|node| self.table.count_of(node)).sum();
        self.local.len() + self.table.len().saturating_sub(hidden)
    }

    /// The route table, local routes (as `me`'s) included, sorted by filter, nodes sorted per
    /// filter; only the routes of nodes that are `shown`.
    pub(super) fn list(&self, me: &NodeName, shown: impl Fn(&NodeName) -> bool) -> Vec<RouteEntry> {
        let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for filter in &self.local {
            table
                .entry(filter.clone())
                .or_default()
                .insert(me.to_string());
        }
        for (filter, node) in self.table.entries() {
            if shown(&node) {
                table.entry(filter).or_default().insert(node.to_string());
            }
        }
        table
            .into_iter()
            .map(|(filter, nodes)| RouteEntry {
                filter,
                nodes: nodes.into_iter().collect(),
            })
            .collect()
    }
}
