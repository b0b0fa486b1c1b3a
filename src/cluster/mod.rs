//! The sans-IO cluster core: link handshakes, heartbeats, membership, the replicated route table
//! and the forwarding of publishes to other nodes.
//!
//! Like the broker it takes events (a link opened, a frame arrived, a link was lost, a dial
//! failed, a local route changed, a local publish, an admin command, `handle_timeout(now)`) and
//! queues [`ClusterAction`]s (send a frame, close a link, dial a node, deliver a forwarded
//! publish locally, answer a join). It never reads the clock (`now` is passed in as the time since
//! the node started), never spawns, never touches a socket, and draws randomness (nonces, backoff
//! jitter) only from its seeded RNG.
//!
//! Structure: [`Cluster`] composes sub-state-machines, one a file, and only routes events between
//! them, in a fixed order; a part never touches another's state (what it needs to know of another
//! part comes in as an argument, what the others must hear comes back as a return value). Every
//! part that emits frames or actions queues them on the core's one `Outbox`, and every random
//! draw comes from the core's one `StdRng`, passed in, so actions and draws happen in call order.
//! - `links`: the link table, heartbeats, dead links, the duplicate-link rule, the cap on
//!   pending handshakes, link-level messages; `handshake` the steps and proofs of one link's
//!   handshake; `bulk` the chunking and per-link assembly of bulk sets.
//! - `membership`: the member list, this node's incarnation and `left` flag, autoclean, the
//!   member list file.
//! - `dialer`: whom to dial and when (dial table, backoff, strikes, the pending join).
//! - `streams`: forwarding and the numbered QoS >= 1 streams with their buffer.
//! - `sync`: local routes and the replicated route table (`routes::RouteTable`); `route_acks`
//!   which of our route changes every linked node has applied.
//! - `mcast`: multicast announces and the nodes heard (`discovery` is the datagram codec).
//! - `api`: the public types; `wire` the link messages; `name` node names and seeds.
//!
//! Timers: each part with deadlines has its own `poll_timeout` (its earliest deadline) and
//! `handle_timeout`; [`Cluster::poll_timeout`] is the earliest of theirs, and
//! [`Cluster::handle_timeout`] runs theirs in a fixed order: links (heartbeats, each with the
//! pending ack from streams; dead and stalled links collected), streams (expired buffer windows;
//! their routes purged), the collected links closed, membership (autoclean), mcast (announce),
//! dialer (due dials).
//!
//! Model (DESIGN §1): every node is the single writer of its own routes. On link up each side
//! sends its member list and its full route set; afterwards ordered `RouteAdd` / `RouteRemove`
//! deltas on the same link. A link silent for three heartbeats, or closed, takes the peer's
//! routes with it at once (a member's are only hidden until its forward buffer window ends, see
//! below); the next link up resyncs them. Members are `(node, incarnation,
//! joined|left)` merged by higher incarnation; `running` = joined with a live link, `stopped` =
//! joined without one. Every node dials every known member it has no link to (full mesh), plus
//! its static seeds. A publish is forwarded once per destination node however many of that node's
//! filters match, and a forwarded publish is delivered locally only, never forwarded again.
//!
//! Decisions documented here because the issue left them open:
//! - Retained messages: a publish with the retain flag is forwarded to every linked node (not
//!   only those with matching routes) with its version; on link up the nodes exchange retained
//!   digests and the entries that differ (`ClusterAction::SyncRetained` / `RetainedWanted` /
//!   `MergeRetained`: the broker owns the store, see `broker::retained`), so every running
//!   node converges on the newest value of each topic.
//! - SUBACK timing: route messages are acknowledged per link (`RouteAck`, once per read batch,
//!   `frames_done`) and `ClusterAction::RoutesConfirmed` says when every linked node has a route
//!   change (`route_acks`); the broker holds each SUBACK until then.
//! - Shared subscriptions `$share/g/f` announce the route `f`; groups stay per node, so a group
//!   with members on two nodes receives one copy per node.
//! - Multicast discovery (`mcast`; `discovery` for the datagrams): a node announces itself to the
//!   group at start and then forever, every 0.5 s doubling to every 5 s, each with ±25% jitter.
//!   Hearing an authenticated announce from a node it has no link to, the lower node name dials
//!   (at once, keeping its backoff count); the higher one answers a ping with a unicast pong so
//!   the lower one learns of it without waiting for its next announce. A node that has left the
//!   cluster neither announces nor answers until it joins again. What is heard is forgotten after
//!   15 s of silence; members found this way are ordinary members afterwards.
//! - QoS >= 1 forwards are numbered per destination node (`ForwardSeq`), acknowledged
//!   cumulatively (`Ack`, every 64 forwards and on every heartbeat) and kept by the sender until
//!   acknowledged. When a link dies, the peer's routes are kept (hidden from `routes list`) for
//!   `FORWARD_BUFFER_WINDOW` and QoS >= 1 forwards matching them are buffered (at most
//!   `FORWARD_BUFFER_MSGS` / `FORWARD_BUFFER_BYTES` per node); after the next handshake each side
//!   says what it has received (`Resume`) and the other resends the rest, in order, before
//!   anything new. The receiver delivers each number at most once. A peer that comes back with
//!   a new incarnation (restarted: its sessions are gone) gets a fresh numbering and the buffer is
//!   dropped; so is a buffer older than the window, together with the peer's routes. Dropped
//!   forwards are counted in `forward_drops`. QoS 0 forwards are never buffered.
//! - Bulk sets (the route set on link up; later retained sets and sessions) travel as
//!   `LinkMessage::Bulk` chunks of at most `wire::BULK_CHUNK_BYTES` of items, so no subscription
//!   pattern makes a frame exceed `cluster.max_frame_size`. The receiver assembles one transfer
//!   per link and applies it only when its last chunk arrives: a half-received route set never
//!   purges routes, chunks of two transfers never mix, and a new link starts afresh.
//! - Links are untrusted until authenticated: frames are capped at `PREAUTH_MAX_FRAME` until the
//!   handshake succeeds (`ClusterAction::FrameLimit` then raises the reader's limit), at most
//!   `MAX_PENDING_HANDSHAKES` accepted links may be in their handshake (more are closed at once),
//!   and every peer-supplied string in a log line goes through `log_limit::peer_text`; warnings about
//!   refused or broken links are rate-limited per reason (`log_limit::LogLimiter`, shared with
//!   discovery).
//! - A link closed for bad framing or a protocol error (either side) counts a strike against
//!   the peer: the next dial waits the backoff of that many failed attempts, so a peer whose
//!   frames are refused is retried with capped exponential backoff, never in a tight loop. A link
//!   that stayed up for `STABLE_LINK` clears the strikes.
//! - Duplicate links (both sides dialled at once): a higher peer incarnation (a restart) replaces
//!   the old link; at equal incarnation the link dialled by the lower node name is kept; anything
//!   else is refused with a log line.

mod api;
mod bulk;
mod dialer;
pub mod discovery;
pub mod handshake;
mod links;
mod mcast;
mod membership;
pub mod name;
mod route_acks;
pub mod routes;
mod streams;
mod sync;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

pub use api::{
    ClusterAction, ClusterConfig, ClusterMetrics, ClusterStatus, LinkId, LinkLoss, RouteEntry,
};
use dialer::{Dialer, Facts};
use links::{Gone, Inbound, Links};
use mcast::Announcer;
use membership::Membership;
pub use name::{Discovery, NodeHost, NodeName, SeedNode};
use route_acks::RouteAcks;
use streams::{FORWARD_BUFFER_WINDOW, Streams};
use sync::RouteSync;
use wire::{BulkBody, ForwardRef, LinkMessage, MemberEntry};

/// Largest frame accepted on a link before it is authenticated (Hello, Challenge, Proof and
/// Reject are a few hundred bytes).
pub const PREAUTH_MAX_FRAME: usize = 4 * 1024;
/// Accepted links allowed in their handshake at once; more are closed at once.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// At most one log line per drop reason per this period.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// The actions queued for the driver, in the order the parts produced them. Every part that
/// emits frames or actions takes `&mut Outbox`.
#[derive(Debug, Default)]
struct Outbox(VecDeque<ClusterAction>);

impl Outbox {
    fn push(&mut self, action: ClusterAction) {
        self.0.push_back(action);
    }

    /// Queues `msg` on `link`.
    fn send(&mut self, link: LinkId, msg: &LinkMessage) {
        self.send_frame(link, wire::encode(msg));
    }

    /// Queues an encoded frame on `link`.
    fn send_frame(&mut self, link: LinkId, frame: Bytes) {
        self.push(ClusterAction::Send { link, frame });
    }

    /// Queues the close of `link`.
    fn close(&mut self, link: LinkId) {
        self.push(ClusterAction::Close { link });
    }

    fn pop(&mut self) -> Option<ClusterAction> {
        self.0.pop_front()
    }
}

/// The cluster core of one node.
pub struct Cluster {
    cfg: ClusterConfig,
    rng: StdRng,
    membership: Membership,
    links: Links,
    dialer: Dialer,
    routes: RouteSync,
    out: Outbox,
    mcast: Option<Announcer>,
    streams: Streams,
    /// Which of our route changes every linked node has applied (SUBACKs wait for it).
    route_acks: RouteAcks,
}

impl Cluster {
    /// A cluster core; `incarnation` should grow across restarts (the node uses its start time in
    /// ms) and `rng_seed` seeds nonces and jitter.
    pub fn new(cfg: ClusterConfig, incarnation: u64, rng_seed: u64, now: Duration) -> Cluster {
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let mcast =
            (cfg.discovery == Discovery::Mcast).then(|| Announcer::new(&cfg, &mut rng, now));
        let mut cluster = Cluster {
            rng,
            membership: Membership::new(cfg.node.clone(), cfg.port, cfg.autoclean, incarnation),
            links: Links::new(&cfg),
            dialer: Dialer::new(&cfg),
            routes: RouteSync::default(),
            out: Outbox::default(),
            mcast,
            streams: Streams::default(),
            route_acks: RouteAcks::default(),
            cfg,
        };
        cluster.refresh_dials(now);
        cluster
    }

    /// This node's name.
    pub fn node(&self) -> &NodeName {
        &self.cfg.node
    }

    /// How long a dial (connect) may take before the driver gives up.
    pub fn connect_timeout(&self) -> Duration {
        self.links.handshake_timeout()
    }

    /// Largest frame a peer may send.
    pub fn max_frame(&self) -> usize {
        self.cfg.max_frame
    }

    fn send(&mut self, link: LinkId, msg: &LinkMessage) {
        self.out.send(link, msg);
    }

    fn broadcast(&mut self, msg: &LinkMessage) {
        self.links.broadcast(msg, &mut self.out);
    }

    /// Tells every linked node our member list.
    fn gossip_members(&mut self) {
        let members = LinkMessage::Members(self.membership.entries());
        self.broadcast(&members);
    }

    /// The next queued action, in the order they were produced.
    pub fn poll_action(&mut self) -> Option<ClusterAction> {
        if let Some(text) = self.membership.take_save() {
            self.out.push(ClusterAction::SaveMembers(text));
        }
        self.out.pop()
    }

    /// Members from the file a previous run of this node wrote: dialled like stopped members
    /// (incarnation 0, so anything the cluster says about them wins). Returns how many; bad
    /// lines are skipped with a log line.
    pub fn restore_members(&mut self, text: &str, now: Duration) -> usize {
        let restored = self.membership.restore(text, now);
        if restored > 0 {
            self.refresh_dials(now);
        }
        restored
    }

    // ---- links -------------------------------------------------------------------------

    /// A TCP connection to or from another node exists; `dialed` names the node we dialled.
    pub fn link_opened(
        &mut self,
        link: LinkId,
        addr: SocketAddr,
        dialed: Option<NodeName>,
        now: Duration,
    ) {
        let incarnation = self.membership.incarnation();
        let (rng, out) = (&mut self.rng, &mut self.out);
        self.links
            .opened(link, addr, dialed, now, incarnation, rng, out);
    }

    /// A dial (`ClusterAction::Dial`) failed before a connection existed.
    pub fn dial_failed(&mut self, node: &NodeName, reason: &str, now: Duration) {
        tracing::debug!(peer = %node, reason, "dial failed");
        self.dial_done(node, format!("cannot reach {node}: {reason}"), now);
    }

    /// A dial attempt for `node` ended without a link up (`why`): back off, and fail a pending
    /// join of it.
    fn dial_done(&mut self, node: &NodeName, why: String, now: Duration) {
        self.dialer
            .failed(node, why, now, &mut self.rng, &mut self.out);
        self.refresh_dials(now);
    }

    /// The link broke (EOF, I/O error, bad framing, slow peer).
    ///
    /// After `LinkLoss::Frame` the driver keeps the link's writer until the `Close` this queues
    /// (after a `Reject` telling the peer why), whether or not the core still knew the link.
    pub fn link_lost(&mut self, link: LinkId, why: LinkLoss, now: Duration) {
        let gone = self.links.lost(link, why, now, &mut self.out);
        self.link_gone(gone, now);
        self.check_routes_confirmed(now);
    }

    /// Closes a link on our side without telling the peer anything.
    fn close(&mut self, link: LinkId, now: Duration) {
        let gone = self.links.close(link, false, now, &mut self.out);
        self.link_gone(gone, now);
        self.check_routes_confirmed(now);
    }

    /// What a link that went means for the other parts: a peer down for an authenticated link,
    /// a failed dial (answering a pending join) for one we dialled that was still in its
    /// handshake.
    fn link_gone(&mut self, gone: Gone, now: Duration) {
        match gone {
            Gone::Peer { peer, bad, up_for } => self.peer_down(&peer, bad, up_for, now),
            Gone::Dial { node, why } => self.dial_done(&node, why, now),
            Gone::Quiet => {}
        }
    }

    /// `bad`: the link went for bad framing or a protocol error; `up_for`: how long it had been
    /// up.
    fn peer_down(&mut self, peer: &NodeName, bad: bool, up_for: Duration, now: Duration) {
        let member = self.membership.link_down(peer, now);
        if member && !self.membership.left() {
            // Keep its routes for the buffer window: QoS >= 1 forwards wait for its return.
            self.streams.link_down(peer, now);
        } else {
            let purged = self.forget_node(peer);
            tracing::info!(peer = %peer, purged_routes = purged, "node is down");
        }
        self.dialer.link_down(peer, bad, up_for, now, &mut self.rng);
        self.refresh_dials(now);
    }

    /// Drops a node's routes and forward buffer (it left, was removed, or stayed away too long);
    /// returns how many routes went.
    fn forget_node(&mut self, peer: &NodeName) -> usize {
        self.streams.forget(peer);
        self.routes.purge(peer)
    }

    /// One frame payload (length prefix removed) arrived on `link`.
    pub fn handle_frame(&mut self, link: LinkId, payload: &[u8], now: Duration) {
        let (incarnation, left) = (self.membership.incarnation(), self.membership.left());
        let (rng, out) = (&mut self.rng, &mut self.out);
        let inbound = self
            .links
            .handle_frame(link, payload, now, incarnation, left, rng, out);
        match inbound {
            Inbound::Nothing => {}
            Inbound::Gone(gone) => {
                self.link_gone(gone, now);
                self.check_routes_confirmed(now);
            }
            Inbound::Up {
                peer,
                port,
                incarnation,
            } => self.link_up(link, peer, port, incarnation, now),
            Inbound::Bulk { peer, body, chunks } => match body {
                BulkBody::Routes(filters) => {
                    self.route_acks.applied(link);
                    self.routes.replace(&peer, filters, chunks);
                }
                BulkBody::Retained(items) => {
                    tracing::debug!(peer = %peer, items = items.len(), chunks, "retained values received");
                    self.out.push(ClusterAction::MergeRetained(items));
                }
            },
            Inbound::Message { peer, msg } => self.handle_peer_message(link, peer, msg, now),
        }
    }

    /// `link` is `peer`'s authenticated link now: membership, dialer and discovery hear of it,
    /// then the peer gets the member list, our routes and our forward streams' state.
    fn link_up(
        &mut self,
        link: LinkId,
        peer: NodeName,
        port: u16,
        incarnation: u64,
        now: Duration,
    ) {
        let changed = self.membership.link_up(&peer, port, incarnation);
        self.dialer.link_up(&peer, &mut self.out);
        if let Some(m) = &mut self.mcast {
            m.forget(&peer);
        }
        // The new link gets everything; the others hear about the membership change.
        let members = LinkMessage::Members(self.membership.entries());
        if changed {
            self.broadcast(&members);
        } else {
            self.send(link, &members);
        }
        self.routes.send_all(link, &mut self.out);
        self.route_acks.sent(link, now);
        self.out.push(ClusterAction::SyncRetained { link });
        self.streams
            .link_up(link, &peer, incarnation, &mut self.out);
        self.refresh_dials(now);
    }

    fn handle_peer_message(
        &mut self,
        link: LinkId,
        peer: NodeName,
        msg: LinkMessage,
        now: Duration,
    ) {
        match msg {
            LinkMessage::Members(entries) => self.merge_members(&entries, now),
            LinkMessage::RouteAdd(filter) => {
                self.routes.add(&peer, &filter);
                self.route_acks.applied(link);
            }
            LinkMessage::RouteRemove(filter) => {
                self.routes.remove(&peer, &filter);
                self.route_acks.applied(link);
            }
            LinkMessage::RouteAck(count) => {
                self.route_acks.acked(link, count);
                self.check_routes_confirmed(now);
            }
            LinkMessage::RetainedDigest(digest) => {
                self.out
                    .push(ClusterAction::RetainedWanted { link, digest });
            }
            LinkMessage::Forward(publish) => self.streams.received(publish, &mut self.out),
            LinkMessage::ForwardSeq { seq, publish } => {
                let out = &mut self.out;
                self.streams
                    .received_numbered(link, &peer, seq, publish, out);
            }
            LinkMessage::Ack(upto) => self.streams.acked(&peer, upto),
            LinkMessage::Resume { received } => {
                self.streams.resume(link, &peer, received, &mut self.out);
            }
            // Link-level messages: `Links` handles them and never returns them.
            LinkMessage::Heartbeat
            | LinkMessage::Bulk(_)
            | LinkMessage::Reject { .. }
            | LinkMessage::Hello { .. }
            | LinkMessage::Challenge { .. }
            | LinkMessage::Proof { .. }
            | LinkMessage::RoutesSync(_) => {}
        }
    }

    // ---- membership --------------------------------------------------------------------

    fn merge_members(&mut self, entries: &[MemberEntry], now: Duration) {
        let links = &self.links;
        let (changed, gone) = self.membership.merge(entries, now, |n| links.is_linked(n));
        let to_close: Vec<LinkId> = gone.iter().filter_map(|n| links.peer(n)).collect();
        for link in to_close {
            self.close(link, now);
        }
        if changed {
            self.gossip_members();
            self.refresh_dials(now);
        }
    }

    /// Brings the dial table in line with who we should be dialling.
    fn refresh_dials(&mut self, now: Duration) {
        let facts = dial_facts(&self.links, &self.membership, self.mcast.as_ref());
        self.dialer.refresh(now, &facts);
    }

    // ---- timers ------------------------------------------------------------------------

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let links = self.links.poll_timeout();
        let dials = self.dialer.poll_timeout(self.links.peers());
        let cleans = self.membership.poll_timeout();
        let announce = self.mcast.as_ref().and_then(Announcer::poll_timeout);
        let buffers = self.streams.poll_timeout();
        let route_acks = self.route_acks.next_expiry(self.links.dead_after());
        links
            .into_iter()
            .chain(dials)
            .chain(cleans)
            .chain(announce)
            .chain(buffers)
            .chain(route_acks)
            .min()
    }

    /// Heartbeats, dead links, stalled handshakes, expired forward buffers, autoclean, announces
    /// and due dials at `now`, each part in turn (see the module doc for the order).
    pub fn handle_timeout(&mut self, now: Duration) {
        // Acknowledgements a caller without `frames_done` left owed, and silent links that no
        // longer hold route confirmations back.
        for (link, count) in self.route_acks.take_due() {
            self.out.send(link, &LinkMessage::RouteAck(count));
        }
        self.check_routes_confirmed(now);
        let streams = &mut self.streams;
        let ack = |peer: &NodeName| streams.heartbeat_ack(peer);
        let to_close = self.links.handle_timeout(now, &mut self.out, ack);
        for node in self.streams.handle_timeout(now) {
            let routes = self.routes.purge(&node);
            tracing::warn!(peer = %node, purged_routes = routes, "node down for {FORWARD_BUFFER_WINDOW:?}; purging its routes");
        }
        for link in to_close {
            self.close(link, now);
        }
        if self.membership.handle_timeout(now) {
            self.gossip_members();
            self.refresh_dials(now);
        }
        if let Some(m) = &mut self.mcast {
            let dialer = &self.dialer;
            let in_flight = |node: &NodeName| dialer.in_flight(node);
            if m.handle_timeout(now, &mut self.rng, &mut self.out, in_flight) {
                self.refresh_dials(now);
            }
        }
        let facts = dial_facts(&self.links, &self.membership, self.mcast.as_ref());
        self.dialer.handle_timeout(now, &facts, &mut self.out);
    }

    // ---- multicast discovery -----------------------------------------------------------

    /// A datagram arrived on a discovery socket from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Duration) {
        let Some(m) = &mut self.mcast else {
            return;
        };
        let links = &self.links;
        let left = self.membership.left();
        let linked = |node: &NodeName| links.is_linked(node);
        let Some(node) = m.handle_datagram(from, bytes, now, left, linked, &mut self.out) else {
            return;
        };
        self.dialer.heard(&node, now);
        self.refresh_dials(now);
    }

    // ---- routes and forwarding ---------------------------------------------------------

    /// The local broker gained its first subscriber for `filter` (route change number n, for
    /// the n-th call of this or `local_route_removed`).
    pub fn local_route_added(&mut self, filter: &str, now: Duration) {
        self.route_acks.changed();
        if self.routes.add_local(filter) {
            self.broadcast_route(&LinkMessage::RouteAdd(filter.to_owned()), now);
        }
        self.check_routes_confirmed(now);
    }

    /// The local broker lost its last subscriber for `filter`.
    pub fn local_route_removed(&mut self, filter: &str, now: Duration) {
        self.route_acks.changed();
        if self.routes.remove_local(filter) {
            self.broadcast_route(&LinkMessage::RouteRemove(filter.to_owned()), now);
        }
        self.check_routes_confirmed(now);
    }

    /// Sends a route delta to every linked node, remembering it for the confirmation.
    fn broadcast_route(&mut self, msg: &LinkMessage, now: Duration) {
        for &link in self.links.peers().values() {
            self.route_acks.sent(link, now);
        }
        self.broadcast(msg);
    }

    /// Reports newly confirmed route changes (`ClusterAction::RoutesConfirmed`); links no longer
    /// authenticated stop counting.
    fn check_routes_confirmed(&mut self, now: Duration) {
        let up: Vec<LinkId> = self.links.peers().values().copied().collect();
        self.route_acks.keep_links(|link| up.contains(&link));
        if let Some(seq) = self
            .route_acks
            .newly_confirmed(now, self.links.dead_after())
        {
            self.out.push(ClusterAction::RoutesConfirmed(seq));
        }
    }

    /// The driver has handed over every frame of one read from `link`: acknowledge the route
    /// messages they carried, once for the batch.
    pub fn frames_done(&mut self, link: LinkId) {
        if let Some(count) = self.route_acks.take_due_on(link) {
            self.out.send(link, &LinkMessage::RouteAck(count));
        }
    }

    // ---- retained sync -----------------------------------------------------------------

    /// Starts the retained sync of a new link with our digest: sent unless our set is empty
    /// (then nothing travels until the peer's digest arrives, so clusters without retained
    /// messages exchange nothing).
    pub fn sync_retained(&mut self, link: LinkId, ours: Vec<u64>) {
        if ours.iter().any(|&b| b != 0) && self.links.up_peer(link).is_some() {
            self.out.send(link, &LinkMessage::RetainedDigest(ours));
        }
    }

    /// Answers a peer's retained digest: our entries in the buckets that differ (one bulk set,
    /// if any), and, if our set is empty and theirs is not, our (empty) digest so that the peer
    /// sends us its entries.
    pub fn answer_retained(
        &mut self,
        link: LinkId,
        ours: Vec<u64>,
        theirs: &[u64],
        items: Vec<wire::RetainedItem>,
    ) {
        if self.links.up_peer(link).is_none() {
            return;
        }
        if !items.is_empty() {
            let sync = self.routes.next_sync();
            let size = wire::RetainedItem::wire_len;
            bulk::send(link, sync, items, size, BulkBody::Retained, &mut self.out);
        }
        let empty = |d: &[u64]| d.iter().all(|&b| b == 0);
        if empty(&ours) && !empty(theirs) {
            self.out.send(link, &LinkMessage::RetainedDigest(ours));
        }
    }

    /// A publish from a local client (or a will): one copy to every other node with a matching
    /// route (every linked node when it is retained). Returns the number of nodes it went to.
    pub fn forward(&mut self, publish: &ForwardRef<'_>) -> usize {
        let (routes, links) = (self.routes.table(), &self.links);
        self.streams.forward(publish, routes, links, &mut self.out)
    }

    // ---- admin -------------------------------------------------------------------------

    /// `ctl cluster join NODE`: dial it; the answer comes as `ClusterAction::JoinDone`.
    pub fn join(&mut self, seed: &SeedNode, now: Duration) {
        let node = seed.node.clone();
        let done = |result| ClusterAction::JoinDone {
            node: node.clone(),
            result,
        };
        if node == self.cfg.node {
            self.out
                .push(done(Err("cannot join the node itself".into())));
            return;
        }
        if self.membership.rejoin() {
            // Our "left" tombstone at the others must lose to the new membership.
            if let Some(m) = &mut self.mcast {
                m.restart(now);
            }
        }
        if self.links.is_linked(&node) {
            self.out.push(done(Ok(())));
            return;
        }
        self.membership.forget_tombstone(&node);
        let port = seed.port_or(self.cfg.default_port);
        self.dialer.join(node, port, now, &mut self.out);
        self.refresh_dials(now);
    }

    /// `ctl cluster leave`: tell every member we leave, close every link, stop dialling.
    pub fn leave(&mut self, now: Duration) -> Result<(), String> {
        self.membership.leave()?;
        self.gossip_members();
        for link in self.links.ids() {
            self.close(link, now);
        }
        self.membership.forget_all();
        self.dialer.leave();
        let nodes: Vec<NodeName> = self.streams.nodes().cloned().collect();
        for node in nodes {
            self.forget_node(&node);
        }
        if let Some(m) = &mut self.mcast {
            m.stop();
        }
        tracing::info!("left the cluster");
        Ok(())
    }

    /// `ctl cluster force-leave NODE`: remove a member (normally a stopped one).
    pub fn force_leave(&mut self, node: &NodeName, now: Duration) -> Result<(), String> {
        self.membership.force_leave(node)?;
        if let Some(link) = self.links.peer(node) {
            self.close(link, now);
        }
        self.gossip_members();
        self.refresh_dials(now);
        Ok(())
    }

    /// Running and stopped members, sorted.
    pub fn status(&self) -> ClusterStatus {
        self.membership.status(|n| self.links.is_linked(n))
    }

    /// The route table, local routes included, sorted by filter; nodes sorted per filter.
    pub fn routes(&self) -> Vec<RouteEntry> {
        // Routes of a node whose link is down are kept for the forward buffer, not shown.
        self.routes
            .list(&self.cfg.node, |n| self.links.is_linked(n))
    }

    /// Whether a QoS >= 1 forward to a node we are linked to still awaits its ack. A node
    /// shutting down waits for these; forwards buffered for unreachable nodes are not waited for.
    pub fn forwards_awaiting_ack(&self) -> bool {
        self.streams.awaiting_ack(self.links.peers().keys())
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> ClusterMetrics {
        let status = self.status();
        // Routes of a node whose link is down are kept for the forward buffer, not counted.
        let hidden = self.streams.nodes().filter(|n| !self.links.is_linked(n));
        let (links_rejected, handshakes_refused) = self.links.counters();
        let (forwards_sent, forwards_received, forward_drops) = self.streams.counters();
        let (announces_sent, datagrams_received, datagrams_dropped) =
            self.mcast.as_ref().map_or((0, 0, 0), Announcer::counters);
        ClusterMetrics {
            links_up: self.links.peers().len() as u64,
            links_rejected,
            handshakes_refused,
            running_nodes: status.running_nodes.len() as u64,
            stopped_nodes: status.stopped_nodes.len() as u64,
            routes: self.routes.count(hidden) as u64,
            forwards_sent,
            forwards_received,
            forward_drops,
            forwards_unacked: self.streams.unacked(),
            announces_sent,
            datagrams_received,
            datagrams_dropped,
        }
    }
}

/// What the dialer needs to know of the other parts.
fn dial_facts<'a>(
    links: &'a Links,
    membership: &'a Membership,
    mcast: Option<&'a Announcer>,
) -> Facts<'a> {
    Facts {
        left: membership.left(),
        peers: links.peers(),
        members: membership.members(),
        heard: mcast.map(Announcer::heard),
    }
}
