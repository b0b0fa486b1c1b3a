//! The links: every inter-node TCP connection the core knows, from accept or dial through the
//! cookie handshake to authenticated, and the one authenticated link per peer.
//!
//! Owns the link table (`LinkId` → in its handshake, whose steps `handshake::Handshake` takes,
//! or `Up`), the cap on accepted links in their handshake (`MAX_PENDING_HANDSHAKES`), the
//! duplicate-link rule, heartbeats and dead-link detection, each link's bulk assembly
//! (`bulk::Assembly`), the link-level messages (`Heartbeat`, `Bulk` chunks, `Reject`, handshake
//! messages out of place) and the rate-limited log of refused or broken links. What a link's
//! coming and going means for the rest of the core is said back to the caller as [`Gone`] and
//! [`Inbound`].
//!
//! Deadlines: per authenticated link, the next heartbeat (every `cluster.heartbeat`) and its
//! death (`DEAD_AFTER_HEARTBEATS` heartbeats without a frame); per link in its handshake, the
//! handshake timeout (`HANDSHAKE_HEARTBEATS` heartbeats, at least `MIN_HANDSHAKE_TIMEOUT`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;

use super::bulk::Assembly;
use super::handshake::{Handshake, Local, Step};
use super::wire::{self, BulkBody, BulkChunk, LinkMessage};
use super::{
    ClusterAction, ClusterConfig, DROP_LOG_EVERY, LinkId, LinkLoss, MAX_PENDING_HANDSHAKES,
    NodeName, Outbox,
};
use crate::log_limit::{LogLimiter, peer_text};

/// A link is declared dead after this many heartbeat periods without a frame.
const DEAD_AFTER_HEARTBEATS: u32 = 3;
/// A connect or handshake taking longer than this many heartbeats (at least 1 s) is abandoned.
const HANDSHAKE_HEARTBEATS: u32 = 3;
pub(super) const MIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// The reject reason sent when a peer's frame was oversize or empty.
const BAD_FRAMING: &str = "bad framing";
/// The reject reason of the losing link when both nodes dialled each other.
const DUPLICATE_LINK: &str = "duplicate link";

#[derive(Debug)]
enum LinkState {
    /// In its handshake.
    Handshake(Handshake),
    /// Authenticated.
    Up {
        peer: NodeName,
        incarnation: u64,
        last_heard: Duration,
        next_heartbeat: Duration,
        /// When it came up.
        since: Duration,
        /// The bulk transfer being received on this link, until its last chunk.
        assembly: Assembly,
    },
}

#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    /// The node we dialled, for links we opened.
    dialed: Option<NodeName>,
    opened_at: Duration,
    state: LinkState,
}

impl Link {
    fn up_peer(&self) -> Option<&NodeName> {
        match &self.state {
            LinkState::Up { peer, .. } => Some(peer),
            _ => None,
        }
    }
}

/// What the rest of the core must hear about a link that went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Gone {
    /// It was `peer`'s authenticated link, up for `up_for`: the peer is down. `bad`: it went
    /// for bad framing or a protocol error.
    Peer {
        peer: NodeName,
        bad: bool,
        up_for: Duration,
    },
    /// A link we dialled to `node` went in its handshake: the dial failed, for `why`.
    Dial { node: NodeName, why: String },
    /// Nothing (an accepted link in its handshake, an unknown or superseded link).
    Quiet,
}

/// What a frame on a link means for the rest of the core.
#[derive(Debug)]
pub(super) enum Inbound {
    /// Nothing (an unknown link, a handshake step, a heartbeat, a bulk chunk not the last).
    Nothing,
    /// The frame made the link go (refused, or the peer refused it).
    Gone(Gone),
    /// The handshake completed: the link is now `peer`'s, at `incarnation`, on cluster `port`.
    Up {
        peer: NodeName,
        port: u16,
        incarnation: u64,
    },
    /// The last chunk of a bulk transfer from `peer`: the whole set, and how many chunks.
    Bulk {
        peer: NodeName,
        body: BulkBody,
        chunks: u32,
    },
    /// Any other message from the authenticated `peer`.
    Message { peer: NodeName, msg: LinkMessage },
}

/// The link table.
#[derive(Debug)]
pub(super) struct Links {
    local: Local,
    heartbeat: Duration,
    max_frame: usize,
    links: BTreeMap<LinkId, Link>,
    /// The one authenticated link per peer.
    peers: BTreeMap<NodeName, LinkId>,
    /// Warnings about refused or broken links, at most one per reason per `DROP_LOG_EVERY`.
    log: LogLimiter<&'static str>,
    /// Links refused or closed for bad input.
    rejected: u64,
    /// Accepted links closed at once because `MAX_PENDING_HANDSHAKES` were pending.
    handshakes_refused: u64,
}

impl Links {
    pub(super) fn new(cfg: &ClusterConfig) -> Links {
        Links {
            local: Local {
                cluster: cfg.cluster_name.clone(),
                node: cfg.node.clone(),
                port: cfg.port,
                cookie: cfg.cookie.clone(),
            },
            heartbeat: cfg.heartbeat,
            max_frame: cfg.max_frame,
            links: BTreeMap::new(),
            peers: BTreeMap::new(),
            log: LogLimiter::new(DROP_LOG_EVERY),
            rejected: 0,
            handshakes_refused: 0,
        }
    }

    /// How long a dial or a handshake may take.
    pub(super) fn handshake_timeout(&self) -> Duration {
        (self.heartbeat * HANDSHAKE_HEARTBEATS).max(MIN_HANDSHAKE_TIMEOUT)
    }

    pub(super) fn dead_after(&self) -> Duration {
        self.heartbeat * DEAD_AFTER_HEARTBEATS
    }

    /// The authenticated link of every peer.
    pub(super) fn peers(&self) -> &BTreeMap<NodeName, LinkId> {
        &self.peers
    }

    /// `node`'s authenticated link.
    pub(super) fn peer(&self, node: &NodeName) -> Option<LinkId> {
        self.peers.get(node).copied()
    }

    pub(super) fn is_linked(&self, node: &NodeName) -> bool {
        self.peers.contains_key(node)
    }

    /// The peer of an authenticated link.
    pub(super) fn up_peer(&self, link: LinkId) -> Option<&NodeName> {
        self.links.get(&link).and_then(Link::up_peer)
    }

    /// Every link, in order.
    pub(super) fn ids(&self) -> Vec<LinkId> {
        self.links.keys().copied().collect()
    }

    /// `(links rejected, handshakes refused)`.
    pub(super) fn counters(&self) -> (u64, u64) {
        (self.rejected, self.handshakes_refused)
    }

    /// Sends `msg` on every authenticated link, in peer order.
    pub(super) fn broadcast(&self, msg: &LinkMessage, out: &mut Outbox) {
        if self.peers.is_empty() {
            return;
        }
        let frame = wire::encode(msg);
        for &link in self.peers.values() {
            out.send_frame(link, frame.clone());
        }
    }

    /// A TCP connection exists; `dialed` names the node we dialled (then a Hello goes out, its
    /// nonce drawn from `rng`; our `incarnation` in it). An accepted one beyond the cap of
    /// pending handshakes is closed at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn opened(
        &mut self,
        link: LinkId,
        addr: SocketAddr,
        dialed: Option<NodeName>,
        now: Duration,
        incarnation: u64,
        rng: &mut StdRng,
        out: &mut Outbox,
    ) {
        if dialed.is_none() {
            let pending = self
                .links
                .values()
                .filter(|l| l.dialed.is_none() && l.up_peer().is_none())
                .count();
            if pending >= MAX_PENDING_HANDSHAKES {
                self.handshakes_refused += 1;
                if let Some(suppressed) = self.log.admit("handshake cap", now) {
                    tracing::warn!(
                        %addr,
                        suppressed,
                        "closing a cluster connection: {MAX_PENDING_HANDSHAKES} handshakes already pending"
                    );
                }
                out.close(link);
                return;
            }
        }
        let state = LinkState::Handshake(if dialed.is_some() {
            Handshake::dial(&self.local, incarnation, link, rng, out)
        } else {
            Handshake::AwaitHello
        });
        self.links.insert(
            link,
            Link {
                addr,
                dialed,
                opened_at: now,
                state,
            },
        );
    }

    /// The driver lost the link. After bad framing a `Reject` and a `Close` go out whether or
    /// not the link was known (the driver keeps its writer until the `Close`).
    pub(super) fn lost(
        &mut self,
        link: LinkId,
        why: LinkLoss,
        now: Duration,
        out: &mut Outbox,
    ) -> Gone {
        let Some(l) = self.links.remove(&link) else {
            if matches!(why, LinkLoss::Frame(_)) {
                out.close(link);
            }
            return Gone::Quiet;
        };
        let who = describe(&l);
        let bad = match &why {
            LinkLoss::Io => {
                tracing::info!(peer = %who, "link closed");
                false
            }
            LinkLoss::Frame(e) => {
                self.rejected += 1;
                if let Some(suppressed) = self.log.admit(BAD_FRAMING, now) {
                    tracing::warn!(peer = %who, error = %e, suppressed, "closing link: bad framing");
                }
                let reject = LinkMessage::Reject {
                    reason: BAD_FRAMING.into(),
                };
                out.send(link, &reject);
                out.close(link);
                true
            }
            LinkLoss::SlowPeer => {
                tracing::warn!(peer = %who, "closing link: peer does not read fast enough");
                false
            }
        };
        let why = "the connection was lost during the handshake";
        self.gone(link, l, why, bad, now)
    }

    /// Closes a link on our side with a log line and a reason for the peer.
    pub(super) fn reject(
        &mut self,
        link: LinkId,
        reason: &'static str,
        log: &str,
        now: Duration,
        out: &mut Outbox,
    ) -> Gone {
        let Some(l) = self.links.remove(&link) else {
            return Gone::Quiet;
        };
        if reason == DUPLICATE_LINK {
            // Both sides dialled at once: expected while a cluster forms, not an error.
            tracing::info!(peer = %describe(&l), reason = log, "closing a duplicate link");
        } else {
            self.rejected += 1;
            if let Some(suppressed) = self.log.admit(reason, now) {
                tracing::warn!(peer = %describe(&l), reason = log, suppressed, "refusing link");
            }
        }
        out.send(
            link,
            &LinkMessage::Reject {
                reason: reason.to_owned(),
            },
        );
        out.close(link);
        self.gone(link, l, log, reason != DUPLICATE_LINK, now)
    }

    /// Closes a link on our side without telling the peer anything; `bad`: because of a
    /// protocol or framing error (a strike against the peer).
    pub(super) fn close(
        &mut self,
        link: LinkId,
        bad: bool,
        now: Duration,
        out: &mut Outbox,
    ) -> Gone {
        let Some(l) = self.links.remove(&link) else {
            return Gone::Quiet;
        };
        out.close(link);
        let why = "the link was closed during the handshake";
        self.gone(link, l, why, bad, now)
    }

    /// What the removal of `l` means: its peer is down if it was the peer's link, a dial failed
    /// (for `why`) if we dialled it and it was still in its handshake.
    fn gone(&mut self, link: LinkId, l: Link, why: &str, bad: bool, now: Duration) -> Gone {
        if let LinkState::Up { peer, since, .. } = l.state {
            if self.peers.get(&peer) != Some(&link) {
                return Gone::Quiet;
            }
            self.peers.remove(&peer);
            return Gone::Peer {
                peer,
                bad,
                up_for: now.saturating_sub(since),
            };
        }
        match l.dialed {
            Some(node) => Gone::Dial {
                node,
                why: why.to_owned(),
            },
            None => Gone::Quiet,
        }
    }

    /// One frame payload (length prefix removed) on `link`. `incarnation`: ours, for the
    /// Challenge; `left`: this node has left the cluster (a Hello is refused); `rng` draws the
    /// Challenge's nonce.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_frame(
        &mut self,
        link: LinkId,
        payload: &[u8],
        now: Duration,
        incarnation: u64,
        left: bool,
        rng: &mut StdRng,
        out: &mut Outbox,
    ) -> Inbound {
        if !self.links.contains_key(&link) {
            return Inbound::Nothing;
        }
        let msg = match wire::decode(payload) {
            Ok(msg) => msg,
            Err(e) => {
                let log = format!("garbage from peer: {e}");
                return Inbound::Gone(self.reject(link, "undecodable frame", &log, now, out));
            }
        };
        let Some(l) = self.links.get_mut(&link) else {
            return Inbound::Nothing;
        };
        if let LinkState::Up {
            peer, last_heard, ..
        } = &mut l.state
        {
            *last_heard = now;
            let peer = peer.clone();
            return self.peer_message(link, peer, msg, now, out);
        }
        self.handshake(link, msg, now, incarnation, left, rng, out)
    }

    /// A message on `peer`'s authenticated link: link-level ones handled here, the rest
    /// returned.
    fn peer_message(
        &mut self,
        link: LinkId,
        peer: NodeName,
        msg: LinkMessage,
        now: Duration,
        out: &mut Outbox,
    ) -> Inbound {
        match msg {
            LinkMessage::Heartbeat => Inbound::Nothing,
            LinkMessage::Bulk(chunk) => match self.bulk_chunk(link, &peer, chunk) {
                Some((body, chunks)) => Inbound::Bulk { peer, body, chunks },
                None => Inbound::Nothing,
            },
            LinkMessage::Reject { reason } => {
                self.log_peer_reject(&peer, &reason, "peer closed the link", now);
                Inbound::Gone(self.close(link, reason != DUPLICATE_LINK, now, out))
            }
            other @ (LinkMessage::Hello { .. }
            | LinkMessage::Challenge { .. }
            | LinkMessage::Proof { .. }
            | LinkMessage::RoutesSync(_)) => {
                let log = format!("unexpected {} after the handshake", other.name());
                Inbound::Gone(self.reject(link, "protocol error", &log, now, out))
            }
            msg => Inbound::Message { peer, msg },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handshake(
        &mut self,
        link: LinkId,
        msg: LinkMessage,
        now: Duration,
        incarnation: u64,
        left: bool,
        rng: &mut StdRng,
        out: &mut Outbox,
    ) -> Inbound {
        let Some(l) = self.links.get_mut(&link) else {
            return Inbound::Nothing;
        };
        let LinkState::Handshake(handshake) = &mut l.state else {
            return Inbound::Nothing;
        };
        let dialed = l.dialed.as_ref();
        let step = handshake.step(msg, &self.local, incarnation, dialed, left, link, rng, out);
        match step {
            Step::Pending => Inbound::Nothing,
            Step::Refuse { reason, log } => {
                Inbound::Gone(self.reject(link, reason, &log, now, out))
            }
            Step::PeerRejected(reason) => {
                let Some(l) = self.links.remove(&link) else {
                    return Inbound::Nothing;
                };
                let who = describe(&l);
                self.log_peer_reject(&who, &reason, "peer refused the link", now);
                out.close(link);
                match l.dialed {
                    Some(node) => {
                        let why = format!("{node} refused the link: {}", peer_text(&reason));
                        Inbound::Gone(Gone::Dial { node, why })
                    }
                    None => Inbound::Gone(Gone::Quiet),
                }
            }
            Step::Authenticated {
                peer,
                port,
                incarnation,
            } => self.authenticated(link, peer, port, incarnation, now, out),
        }
    }

    /// The handshake succeeded: resolve duplicates, then make the link the peer's link.
    fn authenticated(
        &mut self,
        link: LinkId,
        peer: NodeName,
        port: u16,
        incarnation: u64,
        now: Duration,
        out: &mut Outbox,
    ) -> Inbound {
        let Some(new) = self.links.get(&link) else {
            return Inbound::Nothing;
        };
        let new_dialer_is_us = new.dialed.is_some();
        let new_addr = new.addr;
        if let Some(&old_id) = self.peers.get(&peer) {
            let Some(old) = self.links.get(&old_id) else {
                return Inbound::Nothing;
            };
            let old_incarnation = match old.state {
                LinkState::Up { incarnation, .. } => incarnation,
                _ => 0,
            };
            let lower_is_us = self.local.node < peer;
            let prefers = |dialed_by_us: bool| dialed_by_us == lower_is_us;
            let keep_new = incarnation > old_incarnation
                || (incarnation == old_incarnation
                    && prefers(new_dialer_is_us)
                    && !prefers(old.dialed.is_some()));
            if !keep_new {
                let log = if incarnation < old_incarnation || old.addr.ip() != new_addr.ip() {
                    format!(
                        "{peer} is already linked from {}; refusing a second link claiming that name",
                        old.addr
                    )
                } else {
                    let lower = self.local.node.clone().min(peer.clone());
                    format!("duplicate link to {peer}; keeping the one dialled by {lower}")
                };
                return Inbound::Gone(self.reject(link, DUPLICATE_LINK, &log, now, out));
            }
            tracing::info!(peer = %peer, "replacing the link to a node with a newer one");
            // The old link goes without a peer-down: the resync on the new one replaces routes.
            self.peers.remove(&peer);
            self.links.remove(&old_id);
            out.close(old_id);
        }
        let heartbeat = self.heartbeat;
        let Some(l) = self.links.get_mut(&link) else {
            return Inbound::Nothing;
        };
        l.state = LinkState::Up {
            peer: peer.clone(),
            incarnation,
            last_heard: now,
            next_heartbeat: now + heartbeat,
            since: now,
            assembly: Assembly::default(),
        };
        out.push(ClusterAction::FrameLimit {
            link,
            max: self.max_frame,
        });
        let dialer = if new_dialer_is_us {
            &self.local.node
        } else {
            &peer
        };
        tracing::info!(peer = %peer, addr = %new_addr, dialled_by = %dialer, "link up");
        self.peers.insert(peer.clone(), link);
        Inbound::Up {
            peer,
            port,
            incarnation,
        }
    }

    /// One chunk of a bulk transfer from `peer` on `link`: the whole set once its last chunk
    /// arrives (see `bulk::Assembly`).
    fn bulk_chunk(
        &mut self,
        link: LinkId,
        peer: &NodeName,
        chunk: BulkChunk,
    ) -> Option<(BulkBody, u32)> {
        match self.links.get_mut(&link).map(|l| &mut l.state) {
            Some(LinkState::Up { assembly, .. }) => assembly.push(peer, chunk),
            _ => None,
        }
    }

    /// Logs a peer's `Reject`: a lost duplicate-link race is expected (info), anything else a
    /// rate-limited warning saying `what`, with the peer's reason truncated.
    fn log_peer_reject(
        &mut self,
        peer: &dyn std::fmt::Display,
        reason: &str,
        what: &str,
        now: Duration,
    ) {
        if reason == DUPLICATE_LINK {
            tracing::info!(peer = %peer, "peer keeps another link to us; closing this one");
        } else if let Some(suppressed) = self.log.admit("peer reject", now) {
            tracing::warn!(peer = %peer, reason = %peer_text(reason), suppressed, "{what}");
        }
    }

    /// The earliest heartbeat, link death or handshake timeout.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        let handshake_limit = self.handshake_timeout();
        let dead_after = self.dead_after();
        self.links
            .values()
            .map(|l| match &l.state {
                LinkState::Up {
                    last_heard,
                    next_heartbeat,
                    ..
                } => (*next_heartbeat).min(*last_heard + dead_after),
                _ => l.opened_at + handshake_limit,
            })
            .min()
    }

    /// Heartbeats due at `now` go out, each followed by what `ack` returns for its peer (the
    /// cumulative `Ack` of the forwards received since the last one). Returns the links to close,
    /// in order: the dead ones, then those whose handshake timed out (both logged here, the
    /// latter counted as rejected).
    pub(super) fn handle_timeout(
        &mut self,
        now: Duration,
        out: &mut Outbox,
        mut ack: impl FnMut(&NodeName) -> Option<u64>,
    ) -> Vec<LinkId> {
        let handshake_limit = self.handshake_timeout();
        let dead_after = self.dead_after();
        let mut dead = Vec::new();
        let mut stalled = Vec::new();
        let mut beat = Vec::new();
        for (&id, l) in &mut self.links {
            match &mut l.state {
                LinkState::Up {
                    peer,
                    last_heard,
                    next_heartbeat,
                    ..
                } => {
                    if *last_heard + dead_after <= now {
                        dead.push((id, peer.clone()));
                    } else if *next_heartbeat <= now {
                        *next_heartbeat = now + self.heartbeat;
                        beat.push(id);
                    }
                }
                _ if l.opened_at + handshake_limit <= now => stalled.push(id),
                _ => {}
            }
        }
        if !beat.is_empty() {
            let frame = wire::encode(&LinkMessage::Heartbeat);
            for link in beat {
                out.send_frame(link, frame.clone());
                // Acknowledge what arrived since the last ack, however few.
                if let Some(upto) = self.up_peer(link).and_then(&mut ack) {
                    out.send(link, &LinkMessage::Ack(upto));
                }
            }
        }
        let mut close = Vec::with_capacity(dead.len() + stalled.len());
        for (link, peer) in dead {
            tracing::warn!(peer = %peer, "link silent for {DEAD_AFTER_HEARTBEATS} heartbeats; declaring it dead");
            close.push(link);
        }
        for link in stalled {
            if let Some(l) = self.links.get(&link)
                && let Some(suppressed) = self.log.admit("handshake timeout", now)
            {
                tracing::warn!(peer = %describe(l), suppressed, "handshake timed out");
            }
            self.rejected += 1;
            close.push(link);
        }
        close
    }
}

/// A link for log lines: the peer's name once known (truncated: before authentication it is
/// whatever the peer claims), always its address.
fn describe(l: &Link) -> String {
    let name = match &l.state {
        LinkState::Up { peer, .. } => Some(peer),
        LinkState::Handshake(h) => h.claimed().or(l.dialed.as_ref()),
    };
    match name {
        Some(name) => format!("{} ({})", peer_text(name.as_str()), l.addr),
        None => l.addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::cluster::Discovery;

    fn links() -> Links {
        Links::new(&ClusterConfig {
            node: "n1@10.0.0.1".parse().unwrap(),
            port: 4370,
            default_port: 4370,
            cluster_name: "flockmq".into(),
            cookie: "cookie".into(),
            discovery: Discovery::Manual,
            seeds: Vec::new(),
            heartbeat: Duration::from_millis(500),
            autoheal: true,
            autoclean: None,
            max_frame: 1024 * 1024,
        })
    }

    #[test]
    fn a_handshake_that_takes_too_long_is_due_and_closed() {
        let (mut l, mut rng, mut out) = (links(), StdRng::seed_from_u64(1), Outbox::default());
        let addr = SocketAddr::from(([10, 0, 0, 2], 4370));
        let opened = Duration::from_secs(2);
        l.opened(LinkId(1), addr, None, opened, 1, &mut rng, &mut out);
        let due = opened + l.handshake_timeout();
        assert_eq!(l.poll_timeout(), Some(due));
        let early = due - Duration::from_millis(1);
        assert!(l.handle_timeout(early, &mut out, |_| None).is_empty());
        assert_eq!(l.handle_timeout(due, &mut out, |_| None), [LinkId(1)]);
        assert_eq!(l.counters(), (1, 0));
        // Closing the accepted link in its handshake tells the rest of the core nothing.
        assert_eq!(l.close(LinkId(1), false, due, &mut out), Gone::Quiet);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_dialled_link_lost_in_its_handshake_is_a_failed_dial() {
        let (mut l, mut rng, mut out) = (links(), StdRng::seed_from_u64(1), Outbox::default());
        let addr = SocketAddr::from(([10, 0, 0, 2], 4370));
        let n2: NodeName = "n2@10.0.0.2".parse().unwrap();
        l.opened(
            LinkId(1),
            addr,
            Some(n2.clone()),
            Duration::ZERO,
            1,
            &mut rng,
            &mut out,
        );
        assert!(
            matches!(out.pop(), Some(ClusterAction::Send { .. })),
            "the Hello"
        );
        let gone = l.lost(LinkId(1), LinkLoss::Io, Duration::ZERO, &mut out);
        assert!(matches!(gone, Gone::Dial { node, .. } if node == n2));
        assert_eq!(out.pop(), None);
    }
}
