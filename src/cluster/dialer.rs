//! The dialer: whom this node dials and when. Owns the dial table (one entry per node to dial:
//! failed attempts so far, when the next attempt is due, whether one is in flight), the pending
//! `ctl cluster join`, and the strikes against peers whose links broke on a protocol error.
//!
//! Whom to dial (`target`): a pending join; otherwise, unless this node has left or is linked to
//! it, a node heard by multicast, a static seed, or a joined member (with `cluster.autoheal =
//! off`, only members never linked). Failed attempts back off exponentially (`BACKOFF_BASE`
//! doubled per attempt, capped at `BACKOFF_CAP_HEARTBEATS` heartbeats, at least
//! `MIN_BACKOFF_CAP`), half of each delay drawn from the core's RNG. A link that broke on bad
//! framing or a protocol error counts a strike: the next dial waits the backoff of that many
//! attempts; a link that had stayed up for `STABLE_LINK` clears the strikes.
//!
//! Deadlines: the earliest due dial of a node not linked and not already being dialled.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use super::mcast::Heard;
use super::membership::Member;
use super::{ClusterAction, ClusterConfig, Discovery, LinkId, NodeName, Outbox, SeedNode};

/// First reconnect delay; doubled per failed attempt up to the cap.
pub(super) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The reconnect cap is this many heartbeats (at least `MIN_BACKOFF_CAP`).
const BACKOFF_CAP_HEARTBEATS: u32 = 5;
pub(super) const MIN_BACKOFF_CAP: Duration = Duration::from_secs(1);
/// A link up this long before it breaks clears its peer's strikes.
pub(super) const STABLE_LINK: Duration = Duration::from_secs(30);

/// What the dialer needs to know of the other parts to decide whom to dial.
pub(super) struct Facts<'a> {
    /// This node has left the cluster.
    pub(super) left: bool,
    /// The nodes with an authenticated link, and the link.
    pub(super) peers: &'a BTreeMap<NodeName, LinkId>,
    /// Every member, tombstones included.
    pub(super) members: &'a BTreeMap<NodeName, Member>,
    /// Nodes heard by multicast that we should dial (with multicast discovery).
    pub(super) heard: Option<&'a BTreeMap<NodeName, Heard>>,
}

#[derive(Debug, Clone)]
struct Dial {
    attempt: u32,
    next_at: Duration,
    in_flight: bool,
}

impl Dial {
    fn now(now: Duration) -> Dial {
        Dial {
            attempt: 0,
            next_at: now,
            in_flight: false,
        }
    }
}

/// The dial table and its policy.
#[derive(Debug)]
pub(super) struct Dialer {
    node: NodeName,
    discovery: Discovery,
    seeds: Vec<SeedNode>,
    default_port: u16,
    autoheal: bool,
    heartbeat: Duration,
    dials: BTreeMap<NodeName, Dial>,
    /// A pending `ctl cluster join`: the node and its cluster port.
    join: Option<(NodeName, u16)>,
    /// Links lost to bad framing or protocol errors per peer, since its last stable link: the
    /// backoff attempt its next dial starts from.
    strikes: BTreeMap<NodeName, u32>,
}

impl Dialer {
    pub(super) fn new(cfg: &ClusterConfig) -> Dialer {
        Dialer {
            node: cfg.node.clone(),
            discovery: cfg.discovery,
            seeds: cfg.seeds.clone(),
            default_port: cfg.default_port,
            autoheal: cfg.autoheal,
            heartbeat: cfg.heartbeat,
            dials: BTreeMap::new(),
            join: None,
            strikes: BTreeMap::new(),
        }
    }

    /// Whether a dial of `node` is in flight.
    pub(super) fn in_flight(&self, node: &NodeName) -> bool {
        self.dials.get(node).is_some_and(|d| d.in_flight)
    }

    /// When the next dial of `node` is due, if it is in the table.
    #[cfg(test)]
    pub(super) fn next_at(&self, node: &NodeName) -> Option<Duration> {
        self.dials.get(node).map(|d| d.next_at)
    }

    /// Capped exponential backoff with jitter: half the delay fixed, half random (one draw).
    pub(super) fn backoff(&self, attempt: u32, rng: &mut StdRng) -> Duration {
        let cap = (self.heartbeat * BACKOFF_CAP_HEARTBEATS).max(MIN_BACKOFF_CAP);
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.min(16))
            .min(cap);
        let half = exp / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=jitter_ms))
    }

    /// Where to dial `node`, if we should: a pending join, a static seed, or a joined member.
    fn target(&self, node: &NodeName, facts: &Facts<'_>) -> Option<u16> {
        if let Some((join, port)) = &self.join
            && join == node
        {
            return Some(*port);
        }
        if facts.left || facts.peers.contains_key(node) || *node == self.node {
            return None;
        }
        // Heard by multicast just now: it is up, whatever an old tombstone says (a tombstoned
        // node that is still running refutes it once linked, as with static seeds).
        if let Some(heard) = facts.heard.and_then(|h| h.get(node)) {
            return Some(heard.port);
        }
        let member = facts.members.get(node);
        if member.is_some_and(|m| m.left) {
            return None;
        }
        if self.discovery == Discovery::Static
            && let Some(seed) = self.seeds.iter().find(|s| s.node == *node)
        {
            return Some(seed.port_or(self.default_port));
        }
        member
            .filter(|m| self.autoheal || !m.was_up)
            .map(|m| m.port)
    }

    /// Brings the dial table in line with who we should be dialling.
    pub(super) fn refresh(&mut self, now: Duration, facts: &Facts<'_>) {
        let mut wanted: Vec<NodeName> = Vec::new();
        if let Some((node, _)) = &self.join {
            wanted.push(node.clone());
        }
        if self.discovery == Discovery::Static {
            wanted.extend(self.seeds.iter().map(|s| s.node.clone()));
        }
        if let Some(heard) = facts.heard {
            wanted.extend(heard.keys().cloned());
        }
        wanted.extend(facts.members.keys().cloned());
        wanted.retain(|n| self.target(n, facts).is_some());
        self.dials
            .retain(|node, dial| dial.in_flight || wanted.contains(node));
        for node in wanted {
            self.dials.entry(node).or_insert(Dial::now(now));
        }
    }

    /// A dial attempt for `node` ended without a link up (`reason`): back off (one RNG draw when
    /// it is in the table), and fail a pending join of it.
    pub(super) fn failed(
        &mut self,
        node: &NodeName,
        reason: String,
        now: Duration,
        rng: &mut StdRng,
        out: &mut Outbox,
    ) {
        if self.join.as_ref().is_some_and(|(n, _)| n == node) {
            self.join = None;
            out.push(ClusterAction::JoinDone {
                node: node.clone(),
                result: Err(reason),
            });
        }
        if let Some(attempt) = self.dials.get(node).map(|d| d.attempt.saturating_add(1)) {
            let wait = self.backoff(attempt, rng);
            if let Some(dial) = self.dials.get_mut(node) {
                dial.attempt = attempt;
                dial.in_flight = false;
                dial.next_at = now + wait;
            }
        }
    }

    /// A link to `peer` is up: its dial succeeded, and so did a pending join of it.
    pub(super) fn link_up(&mut self, peer: &NodeName, out: &mut Outbox) {
        if let Some(dial) = self.dials.get_mut(peer) {
            dial.attempt = 0;
            dial.in_flight = false;
        }
        if self.join.as_ref().is_some_and(|(n, _)| n == peer) {
            self.join = None;
            out.push(ClusterAction::JoinDone {
                node: peer.clone(),
                result: Ok(()),
            });
        }
    }

    /// `peer`'s link, up for `up_for`, went down; `bad`: for bad framing or a protocol error (a
    /// strike). Schedules the next dial (one RNG draw).
    pub(super) fn link_down(
        &mut self,
        peer: &NodeName,
        bad: bool,
        up_for: Duration,
        now: Duration,
        rng: &mut StdRng,
    ) {
        if up_for >= STABLE_LINK {
            self.strikes.remove(peer);
        }
        let attempt = if bad {
            let strikes = self.strikes.entry(peer.clone()).or_default();
            *strikes = strikes.saturating_add(1);
            *strikes
        } else {
            0
        };
        let first = self.backoff(attempt, rng);
        if bad {
            tracing::info!(peer = %peer, attempt, "link broke on a protocol error; next dial in {first:?}");
            // A linked peer has no dial entry: make one, so the backoff holds (without it the
            // next refresh would dial at once).
            self.dials.entry(peer.clone()).or_insert(Dial {
                attempt,
                next_at: now,
                in_flight: false,
            });
        }
        if let Some(dial) = self.dials.get_mut(peer) {
            dial.attempt = attempt;
            dial.in_flight = false;
            dial.next_at = now + first;
        }
    }

    /// `node` was heard by multicast: it is up right now, so dial at once, but keep counting
    /// failed attempts.
    pub(super) fn heard(&mut self, node: &NodeName, now: Duration) {
        if let Some(dial) = self.dials.get_mut(node)
            && !dial.in_flight
        {
            dial.next_at = dial.next_at.min(now);
        }
    }

    /// `ctl cluster join NODE` (at cluster port `port`): dial it now, answering (failing) a join
    /// still pending.
    pub(super) fn join(&mut self, node: NodeName, port: u16, now: Duration, out: &mut Outbox) {
        if let Some((old, _)) = self.join.take() {
            out.push(ClusterAction::JoinDone {
                node: old,
                result: Err("superseded by another join".into()),
            });
        }
        self.join = Some((node.clone(), port));
        self.dials.insert(node, Dial::now(now));
    }

    /// The node left the cluster: dial nobody, forget a pending join (unanswered).
    pub(super) fn leave(&mut self) {
        self.dials.clear();
        self.join = None;
    }

    /// The earliest due dial of a node we have no link to.
    pub(super) fn poll_timeout(&self, peers: &BTreeMap<NodeName, LinkId>) -> Option<Duration> {
        self.dials
            .iter()
            .filter(|(node, d)| !d.in_flight && !peers.contains_key(*node))
            .map(|(_, d)| d.next_at)
            .min()
    }

    /// Starts every dial due at `now`.
    pub(super) fn handle_timeout(&mut self, now: Duration, facts: &Facts<'_>, out: &mut Outbox) {
        let due: Vec<NodeName> = self
            .dials
            .iter()
            .filter(|(node, d)| {
                !d.in_flight && d.next_at <= now && !facts.peers.contains_key(*node)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            let Some(port) = self.target(&node, facts) else {
                continue;
            };
            if let Some(dial) = self.dials.get_mut(&node) {
                dial.in_flight = true;
            }
            out.push(ClusterAction::Dial {
                host: node.host().to_string(),
                node,
                port,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;

    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn dialer(seeds: &[&str]) -> Dialer {
        Dialer::new(&ClusterConfig {
            node: name("n1@10.0.0.1"),
            port: 4370,
            default_port: 4370,
            cluster_name: "flockmq".into(),
            cookie: "cookie".into(),
            discovery: Discovery::Static,
            seeds: seeds.iter().map(|s| s.parse().unwrap()).collect(),
            heartbeat: Duration::from_millis(100),
            autoheal: true,
            autoclean: None,
            max_frame: 1024 * 1024,
        })
    }

    struct World {
        peers: BTreeMap<NodeName, LinkId>,
        members: BTreeMap<NodeName, Member>,
    }

    impl World {
        fn facts(&self) -> Facts<'_> {
            Facts {
                left: false,
                peers: &self.peers,
                members: &self.members,
                heard: None,
            }
        }
    }

    fn dials(out: &mut Outbox) -> Vec<(String, u16)> {
        std::iter::from_fn(|| out.pop())
            .filter_map(|a| match a {
                ClusterAction::Dial { node, port, .. } => Some((node.to_string(), port)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let d = dialer(&[]);
        let mut rng = StdRng::seed_from_u64(1);
        let first = d.backoff(0, &mut rng);
        assert!(
            first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE,
            "{first:?}"
        );
        for attempt in [10, 20, 40] {
            let b = d.backoff(attempt, &mut rng);
            assert!(b >= MIN_BACKOFF_CAP / 2 && b <= MIN_BACKOFF_CAP, "{b:?}");
        }
        let draws: BTreeSet<Duration> = (0..20).map(|_| d.backoff(5, &mut rng)).collect();
        assert!(draws.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn seeds_are_dialled_once_until_the_attempt_fails_then_after_a_backoff() {
        let mut d = dialer(&["n1@10.0.0.1", "n2@10.0.0.2:4999"]);
        let world = World {
            peers: BTreeMap::new(),
            members: BTreeMap::new(),
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Outbox::default();
        d.refresh(Duration::ZERO, &world.facts());
        assert_eq!(d.poll_timeout(&world.peers), Some(Duration::ZERO));
        d.handle_timeout(Duration::ZERO, &world.facts(), &mut out);
        assert_eq!(dials(&mut out), [("n2@10.0.0.2".to_owned(), 4999)]);
        assert!(d.in_flight(&name("n2@10.0.0.2")));
        assert_eq!(d.poll_timeout(&world.peers), None, "in flight: nothing due");
        let now = Duration::from_secs(1);
        d.failed(
            &name("n2@10.0.0.2"),
            "refused".into(),
            now,
            &mut rng,
            &mut out,
        );
        let next = d.poll_timeout(&world.peers).unwrap();
        assert!(next > now && next <= now + BACKOFF_BASE * 2, "{next:?}");
        d.handle_timeout(next - Duration::from_millis(1), &world.facts(), &mut out);
        assert!(dials(&mut out).is_empty());
        d.handle_timeout(next, &world.facts(), &mut out);
        assert_eq!(dials(&mut out).len(), 1);
    }

    #[test]
    fn strikes_grow_the_backoff_and_a_stable_link_clears_them() {
        let mut d = dialer(&["n2@10.0.0.2"]);
        let n2 = name("n2@10.0.0.2");
        let mut rng = StdRng::seed_from_u64(1);
        let now = Duration::from_secs(100);
        let mut waits = Vec::new();
        for _ in 0..4 {
            d.link_down(&n2, true, Duration::ZERO, now, &mut rng);
            waits.push(d.next_at(&n2).unwrap() - now);
        }
        // Strike n waits at least half of BACKOFF_BASE * 2^n (capped).
        for (i, w) in waits.iter().enumerate() {
            let min = (BACKOFF_BASE * (1 << (i + 1))).min(MIN_BACKOFF_CAP) / 2;
            assert!(*w >= min, "{waits:?}");
        }
        d.link_down(&n2, true, STABLE_LINK, now, &mut rng);
        let w = d.next_at(&n2).unwrap() - now;
        assert!(
            w <= BACKOFF_BASE * 2,
            "one strike after a stable link: {w:?}"
        );
    }

    #[test]
    fn a_join_supersedes_the_previous_one_and_is_answered_on_link_up() {
        let mut d = dialer(&[]);
        let mut out = Outbox::default();
        d.join(name("n2@10.0.0.2"), 4370, Duration::ZERO, &mut out);
        d.join(name("n3@10.0.0.3"), 4370, Duration::ZERO, &mut out);
        d.link_up(&name("n3@10.0.0.3"), &mut out);
        let answers: Vec<_> = std::iter::from_fn(|| out.pop()).collect();
        assert!(matches!(
            &answers[..],
            [
                ClusterAction::JoinDone { node: a, result: Err(_) },
                ClusterAction::JoinDone { node: b, result: Ok(()) },
            ] if a.as_str() == "n2@10.0.0.2" && b.as_str() == "n3@10.0.0.3"
        ));
    }
}
