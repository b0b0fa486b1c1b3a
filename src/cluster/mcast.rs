//! Multicast discovery (`cluster.discovery = mcast`), the state machine; `discovery` has the
//! datagram codec. Owns the announce schedule (every 0.5 s doubling to every 5 s, each ±25%
//! jitter from the core's RNG), the table of nodes heard that this node (the lower name) should
//! dial, forgotten after `DISCOVERED_TTL` of silence, the pong answering a ping from a lower
//! node, and the rate-limited log of dropped datagrams.
//!
//! Deadlines: the next announce (`None` while the node has left the cluster). Expiry of the
//! heard table is checked when an announce goes out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;

use super::discovery::{self, DropReason, Kind};
use super::wire::PROTOCOL_VERSION;
use super::{ClusterAction, ClusterConfig, DROP_LOG_EVERY, NodeName, Outbox};
use crate::log_limit::{LogLimiter, peer_text};

/// Multicast announces start this often and double up to `ANNOUNCE_MAX`.
const ANNOUNCE_FIRST: Duration = Duration::from_millis(500);
pub(super) const ANNOUNCE_MAX: Duration = Duration::from_secs(5);
/// A node heard by multicast and not heard again for this long is no longer dialled (unless it
/// became a member).
const DISCOVERED_TTL: Duration = Duration::from_secs(15);

/// A node heard by multicast that we (the lower name) should dial.
#[derive(Debug, Clone)]
pub(super) struct Heard {
    pub(super) port: u16,
    at: Duration,
}

/// Multicast discovery state.
#[derive(Debug)]
pub(super) struct Announcer {
    node: NodeName,
    cluster_name: String,
    cookie: String,
    /// Random per start: our own looped-back announces carry it.
    instance: u64,
    digest: [u8; discovery::DIGEST_LEN],
    ping: Bytes,
    pong: Bytes,
    /// `None` while the node has left the cluster.
    next_announce: Option<Duration>,
    interval: Duration,
    heard: BTreeMap<NodeName, Heard>,
    drops: LogLimiter<DropReason>,
    /// Announces (pings) sent.
    announces_sent: u64,
    /// Authenticated datagrams from other nodes of the cluster.
    datagrams_received: u64,
    /// Datagrams dropped for any reason.
    datagrams_dropped: u64,
}

impl Announcer {
    /// Draws the instance number from `rng`; the first announce is due at `now`.
    pub(super) fn new(cfg: &ClusterConfig, rng: &mut StdRng, now: Duration) -> Announcer {
        let instance = rng.random();
        let sender = discovery::Sender {
            protocol: PROTOCOL_VERSION,
            port: cfg.port,
            instance,
            node: cfg.node.as_str(),
            cluster: &cfg.cluster_name,
            cookie: &cfg.cookie,
        };
        Announcer {
            node: cfg.node.clone(),
            cluster_name: cfg.cluster_name.clone(),
            cookie: cfg.cookie.clone(),
            instance,
            digest: discovery::cookie_digest(&cfg.cluster_name, &cfg.cookie),
            ping: discovery::encode(Kind::Ping, &sender),
            pong: discovery::encode(Kind::Pong, &sender),
            next_announce: Some(now),
            interval: ANNOUNCE_FIRST,
            heard: BTreeMap::new(),
            drops: LogLimiter::new(DROP_LOG_EVERY),
            announces_sent: 0,
            datagrams_received: 0,
            datagrams_dropped: 0,
        }
    }

    /// Nodes heard recently that we should dial.
    pub(super) fn heard(&self) -> &BTreeMap<NodeName, Heard> {
        &self.heard
    }

    /// `(announces sent, datagrams received, datagrams dropped)`.
    pub(super) fn counters(&self) -> (u64, u64, u64) {
        (
            self.announces_sent,
            self.datagrams_received,
            self.datagrams_dropped,
        )
    }

    /// The node has a link to `node` now: no need to remember having heard it.
    pub(super) fn forget(&mut self, node: &NodeName) {
        self.heard.remove(node);
    }

    /// The node joins a cluster again: announce at once, starting the schedule over.
    pub(super) fn restart(&mut self, now: Duration) {
        self.next_announce = Some(now);
        self.interval = ANNOUNCE_FIRST;
    }

    /// The node left the cluster: no announces, nothing heard.
    pub(super) fn stop(&mut self) {
        self.heard.clear();
        self.next_announce = None;
    }

    /// The next announce.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        self.next_announce
    }

    /// Sends the next announce when it is due (one jitter draw from `rng`) and forgets nodes not
    /// heard for a while, except those with a dial in flight. Returns whether any was forgotten
    /// (the dial table should follow).
    pub(super) fn handle_timeout(
        &mut self,
        now: Duration,
        rng: &mut StdRng,
        out: &mut Outbox,
        dialling: impl Fn(&NodeName) -> bool,
    ) -> bool {
        if self.next_announce.is_none_or(|at| at > now) {
            return false;
        }
        out.push(ClusterAction::Announce(self.ping.clone()));
        self.announces_sent += 1;
        let permille = rng.random_range(750..1250u32);
        self.next_announce = Some(now + self.interval * permille / 1000);
        self.interval = (self.interval * 2).min(ANNOUNCE_MAX);
        let before = self.heard.len();
        self.heard
            .retain(|node, h| h.at + DISCOVERED_TTL > now || dialling(node));
        self.heard.len() != before
    }

    /// A datagram from `from`. An authenticated announce from a node we have no link to (`left`:
    /// this node has left the cluster and ignores it): the lower name remembers it and returns
    /// it, to be dialled at once; the higher answers a ping with a pong.
    pub(super) fn handle_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Duration,
        left: bool,
        linked: impl Fn(&NodeName) -> bool,
        out: &mut Outbox,
    ) -> Option<NodeName> {
        let announce = match discovery::decode(bytes) {
            Ok(a) => a,
            Err(e) => {
                return self.drop_datagram(DropReason::Malformed, from, &e.to_string(), now);
            }
        };
        if announce.cluster != self.cluster_name {
            let why = format!("announce for cluster '{}'", peer_text(announce.cluster));
            return self.drop_datagram(DropReason::OtherCluster, from, &why, now);
        }
        if announce.protocol != PROTOCOL_VERSION {
            let why = format!(
                "{} speaks link protocol {} (we speak {PROTOCOL_VERSION})",
                peer_text(announce.node),
                announce.protocol
            );
            return self.drop_datagram(DropReason::Protocol, from, &why, now);
        }
        if announce.digest != self.digest {
            let why = format!(
                "{} announces itself with another node.cookie; it will not be dialled",
                peer_text(announce.node)
            );
            return self.drop_datagram(DropReason::Cookie, from, &why, now);
        }
        if !announce.verify(&self.cookie) {
            let why = format!(
                "announce claiming to be {} fails the HMAC",
                peer_text(announce.node)
            );
            return self.drop_datagram(DropReason::Forged, from, &why, now);
        }
        if announce.node == self.node.as_str() {
            if announce.instance == self.instance {
                return None; // our own announce, looped back
            }
            let why = format!("another node announces our node name {}", self.node);
            return self.drop_datagram(DropReason::DuplicateName, from, &why, now);
        }
        let node = match announce.node.parse::<NodeName>() {
            Ok(node) => node,
            Err(e) => {
                let why = format!("bad node name '{}': {e}", peer_text(announce.node));
                return self.drop_datagram(DropReason::BadName, from, &why, now);
            }
        };
        self.datagrams_received += 1;
        if left || linked(&node) {
            return None;
        }
        if self.node < node {
            let heard = Heard {
                port: announce.port,
                at: now,
            };
            if self.heard.insert(node.clone(), heard).is_none() {
                tracing::info!(peer = %node, %from, "heard by multicast; dialling it");
            }
            Some(node)
        } else {
            if announce.kind == Kind::Ping {
                tracing::debug!(peer = %node, %from, "heard by multicast; answering so it dials us");
                out.push(ClusterAction::Datagram {
                    to: from,
                    bytes: self.pong.clone(),
                });
            }
            None
        }
    }

    /// Counts a dropped datagram and logs it (rate-limited per reason).
    fn drop_datagram(
        &mut self,
        reason: DropReason,
        from: SocketAddr,
        why: &str,
        now: Duration,
    ) -> Option<NodeName> {
        self.datagrams_dropped += 1;
        if let Some(suppressed) = self.drops.admit(reason, now) {
            tracing::warn!(
                %from,
                %reason,
                suppressed,
                "dropping a discovery datagram: {why}"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn config(node: &str) -> ClusterConfig {
        ClusterConfig {
            node: node.parse().unwrap(),
            port: 4370,
            default_port: 4370,
            cluster_name: "flockmq".into(),
            cookie: "cookie".into(),
            discovery: super::super::Discovery::Mcast,
            seeds: Vec::new(),
            heartbeat: Duration::from_millis(100),
            autoheal: true,
            autoclean: None,
            max_frame: 1024 * 1024,
        }
    }

    #[test]
    fn the_interval_doubles_with_jitter_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut a = Announcer::new(&config("n1@10.0.0.1"), &mut rng, Duration::ZERO);
        let mut out = Outbox::default();
        let mut now = Duration::ZERO;
        let mut nominal = ANNOUNCE_FIRST;
        for _ in 0..8 {
            assert_eq!(a.poll_timeout(), Some(now));
            a.handle_timeout(now, &mut rng, &mut out, |_| false);
            let next = a.poll_timeout().unwrap();
            let gap = next - now;
            assert!(gap >= nominal * 3 / 4 && gap < nominal * 5 / 4, "{gap:?}");
            nominal = (nominal * 2).min(ANNOUNCE_MAX);
            now = next;
        }
        assert_eq!(a.counters().0, 8);
        assert!(matches!(out.pop(), Some(ClusterAction::Announce(_))));
        // Not due: nothing sent, no RNG draw.
        assert!(
            !a.handle_timeout(now - Duration::from_millis(1), &mut rng, &mut out, |_| {
                false
            })
        );
        assert_eq!(a.counters().0, 8);
    }

    #[test]
    fn heard_nodes_expire_unless_a_dial_is_in_flight() {
        let mut rng = StdRng::seed_from_u64(3);
        let cfg = config("n1@10.0.0.1");
        let mut a = Announcer::new(&cfg, &mut rng, Duration::ZERO);
        let mut out = Outbox::default();
        let mut b = config("n2@10.0.0.2");
        b.port = 4999;
        let sender = discovery::Sender {
            protocol: PROTOCOL_VERSION,
            port: b.port,
            instance: 9,
            node: b.node.as_str(),
            cluster: &b.cluster_name,
            cookie: &b.cookie,
        };
        let ping = discovery::encode(Kind::Ping, &sender);
        let from = SocketAddr::from(([10, 0, 0, 2], 4370));
        let n2 = a.handle_datagram(from, &ping, Duration::ZERO, false, |_| false, &mut out);
        assert_eq!(n2.as_ref(), Some(&b.node));
        assert_eq!(a.heard()[&b.node].port, 4999);
        // Linked or left: ignored.
        assert_eq!(
            a.handle_datagram(from, &ping, Duration::ZERO, true, |_| false, &mut out),
            None
        );
        assert_eq!(
            a.handle_datagram(from, &ping, Duration::ZERO, false, |_| true, &mut out),
            None
        );
        a.stop();
        assert!(a.heard().is_empty());
        a.restart(Duration::ZERO);
        a.handle_datagram(from, &ping, Duration::ZERO, false, |_| false, &mut out);
        let late = DISCOVERED_TTL + Duration::from_secs(1);
        assert!(
            !a.handle_timeout(late, &mut rng, &mut out, |_| true),
            "dialling: kept"
        );
        a.restart(late);
        assert!(
            a.handle_timeout(late, &mut rng, &mut out, |_| false),
            "silent: forgotten"
        );
        assert!(a.heard().is_empty());
    }
}
