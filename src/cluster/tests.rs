//! Cluster core tests without any runtime: several cores wired together by an in-memory harness
//! that turns `Dial` into link pairs, `Send` into frames on the paired link, `Close` into a lost
//! link on the other side, and can partition (frames silently vanish, as on a frozen TCP stream)
//! or crash nodes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::dialer::{BACKOFF_BASE, MIN_BACKOFF_CAP, STABLE_LINK};
use super::mcast::ANNOUNCE_MAX;
use super::streams::{ACK_EVERY, FORWARD_BUFFER_MSGS, FORWARD_BUFFER_WINDOW};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::links::MIN_HANDSHAKE_TIMEOUT;
use super::wire::{self, ForwardRef, ForwardedPublish, LinkMessage, NONCE_LEN, UserProps};
use super::*;
use super::{Discovery, NodeName, SeedNode};

const HEARTBEAT: Duration = Duration::from_millis(100);
const STEP: Duration = Duration::from_millis(10);
const COOKIE: &str = "s3cr3t-cookie";

fn name(s: &str) -> NodeName {
    s.parse().unwrap()
}

fn config(node: &str, discovery: Discovery, seeds: &[&str]) -> ClusterConfig {
    ClusterConfig {
        node: name(node),
        port: 4370,
        default_port: 4370,
        cluster_name: "flockmq".into(),
        cookie: COOKIE.into(),
        discovery,
        seeds: seeds
            .iter()
            .map(|s| s.parse::<SeedNode>().unwrap())
            .collect(),
        heartbeat: HEARTBEAT,
        autoheal: true,
        autoclean: Some(Duration::from_secs(60)),
        max_frame: 1024 * 1024,
    }
}

/// Node n1 on its own (incarnation 1, seed 1, started at 0).
fn lone_n1(discovery: Discovery) -> Cluster {
    Cluster::new(config("n1@10.0.0.1", discovery, &[]), 1, 1, Duration::ZERO)
}

enum Ev {
    Connect {
        from: usize,
        node: NodeName,
    },
    Frame {
        to: usize,
        link: LinkId,
        frame: Bytes,
    },
    Lost {
        to: usize,
        link: LinkId,
    },
    Datagram {
        to: usize,
        from: SocketAddr,
        bytes: Bytes,
    },
}

struct Harness {
    nodes: Vec<Cluster>,
    configs: Vec<ClusterConfig>,
    crashed: BTreeSet<usize>,
    queue: VecDeque<Ev>,
    pairs: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    next_link: u64,
    now: Duration,
    delivered: Vec<(usize, ForwardedPublish)>,
    joins: Vec<(usize, NodeName, Result<(), String>)>,
    cut: BTreeSet<(usize, usize)>,
    /// Every frame any node sent, in order.
    wire_log: Vec<u8>,
    incarnation: u64,
    /// Multicast only: (sender, receiver) pairs whose datagrams vanish (TCP unaffected).
    mcast_cut: BTreeSet<(usize, usize)>,
    /// Datagram loss rate and its seeded RNG.
    mcast_loss: f64,
    loss_rng: StdRng,
    /// Every datagram sent, in order.
    datagram_log: Vec<u8>,
    /// Announces sent per node, with the time.
    announces: Vec<(usize, Duration)>,
    /// The last member list file each node asked to save (its "disk").
    saved: BTreeMap<usize, String>,
    /// The largest frame any node sent.
    largest_frame: usize,
    /// Every `FrameLimit` action: (node, max).
    frame_limits: Vec<(usize, usize)>,
}

impl Harness {
    fn new(configs: Vec<ClusterConfig>) -> Harness {
        let nodes = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Cluster::new(c.clone(), 1000, i as u64, Duration::ZERO))
            .collect();
        Harness {
            nodes,
            configs,
            crashed: BTreeSet::new(),
            queue: VecDeque::new(),
            pairs: BTreeMap::new(),
            next_link: 0,
            now: Duration::ZERO,
            delivered: Vec::new(),
            joins: Vec::new(),
            cut: BTreeSet::new(),
            wire_log: Vec::new(),
            incarnation: 1000,
            mcast_cut: BTreeSet::new(),
            mcast_loss: 0.0,
            loss_rng: StdRng::seed_from_u64(7),
            datagram_log: Vec::new(),
            announces: Vec::new(),
            saved: BTreeMap::new(),
            largest_frame: 0,
            frame_limits: Vec::new(),
        }
    }

    /// `n` nodes with multicast discovery and nothing else.
    fn mcast(n: usize) -> Harness {
        Harness::new(
            (1..=n)
                .map(|i| config(&format!("n{i}@10.0.0.{i}"), Discovery::Mcast, &[]))
                .collect(),
        )
    }

    /// The announce socket of node `i` (pongs go there).
    fn announce_addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8 + 1], 40000))
    }

    fn datagram(&mut self, from: usize, to: usize, bytes: &Bytes) {
        self.datagram_log.extend_from_slice(bytes);
        if self.crashed.contains(&to) || self.mcast_cut.contains(&(from, to)) {
            return;
        }
        if from != to && self.mcast_loss > 0.0 && self.loss_rng.random_bool(self.mcast_loss) {
            return;
        }
        self.queue.push_back(Ev::Datagram {
            to,
            from: Self::announce_addr(from),
            bytes: bytes.clone(),
        });
    }

    /// Three nodes with static discovery listing all three.
    fn static3() -> Harness {
        let seeds = ["n1@10.0.0.1", "n2@10.0.0.2", "n3@10.0.0.3"];
        Harness::new(
            seeds
                .iter()
                .map(|n| config(n, Discovery::Static, &seeds))
                .collect(),
        )
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8 + 1], 4370))
    }

    fn index(&self, node: &NodeName) -> Option<usize> {
        self.configs.iter().position(|c| c.node == *node)
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn drain(&mut self, i: usize) -> bool {
        let mut any = false;
        while let Some(action) = self.nodes[i].poll_action() {
            any = true;
            self.requeue(i, action);
        }
        any
    }

    /// Carries out one action of node `i` (what `drain` does with each).
    fn requeue(&mut self, i: usize, action: ClusterAction) {
        {
            match action {
                ClusterAction::Send { link, frame } => {
                    self.wire_log.extend_from_slice(&frame);
                    self.largest_frame = self.largest_frame.max(frame.len());
                    if let Some(&(j, lj)) = self.pairs.get(&(i, link))
                        && !self.is_cut(i, j)
                    {
                        self.queue.push_back(Ev::Frame {
                            to: j,
                            link: lj,
                            frame,
                        });
                    }
                }
                ClusterAction::Close { link } => {
                    if let Some((j, lj)) = self.pairs.remove(&(i, link)) {
                        self.pairs.remove(&(j, lj));
                        self.queue.push_back(Ev::Lost { to: j, link: lj });
                    }
                }
                ClusterAction::Dial { node, .. } => {
                    self.queue.push_back(Ev::Connect { from: i, node });
                }
                ClusterAction::Deliver(p) => self.delivered.push((i, p)),
                ClusterAction::JoinDone { node, result } => self.joins.push((i, node, result)),
                ClusterAction::SaveMembers(text) => {
                    self.saved.insert(i, text);
                }
                ClusterAction::Announce(bytes) => {
                    self.announces.push((i, self.now));
                    // Loopback on: the sender hears itself too.
                    for j in 0..self.nodes.len() {
                        self.datagram(i, j, &bytes);
                    }
                }
                ClusterAction::Datagram { to, bytes } => {
                    if let Some(j) = (0..self.nodes.len()).find(|&j| Self::announce_addr(j) == to) {
                        self.datagram(i, j, &bytes);
                    }
                }
                ClusterAction::FrameLimit { max, .. } => self.frame_limits.push((i, max)),
            }
        }
    }

    fn apply(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Connect { from, node } => match self.index(&node) {
                Some(j) if !self.is_cut(from, j) && !self.crashed.contains(&j) => {
                    self.next_link += 1;
                    let li = LinkId(self.next_link);
                    self.next_link += 1;
                    let lj = LinkId(self.next_link);
                    self.pairs.insert((from, li), (j, lj));
                    self.pairs.insert((j, lj), (from, li));
                    self.nodes[from].link_opened(li, Self::addr(j), Some(node), now);
                    self.nodes[j].link_opened(lj, Self::addr(from), None, now);
                }
                _ => self.nodes[from].dial_failed(&node, "connection refused", now),
            },
            Ev::Frame { to, link, frame } => {
                let payload = frame.slice(wire::LENGTH_PREFIX..);
                self.nodes[to].handle_frame(link, &payload, now);
            }
            Ev::Lost { to, link } => self.nodes[to].link_lost(link, LinkLoss::Io, now),
            Ev::Datagram { to, from, bytes } => {
                if !self.crashed.contains(&to) {
                    self.nodes[to].handle_datagram(from, &bytes, now);
                }
            }
        }
    }

    fn settle(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                if !self.crashed.contains(&i) {
                    any |= self.drain(i);
                }
            }
            match self.queue.pop_front() {
                Some(ev) => self.apply(ev),
                None if !any => return,
                None => {}
            }
        }
    }

    fn advance(&mut self, total: Duration) {
        let end = self.now + total;
        self.settle();
        while self.now < end {
            self.now += STEP;
            for i in 0..self.nodes.len() {
                if !self.crashed.contains(&i)
                    && self.nodes[i]
                        .poll_timeout()
                        .is_some_and(|at| at <= self.now)
                {
                    self.nodes[i].handle_timeout(self.now);
                }
            }
            self.settle();
        }
    }

    fn partition(&mut self, a: usize, b: usize) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn crash(&mut self, i: usize) {
        self.crashed.insert(i);
        let gone: Vec<(usize, LinkId)> = self
            .pairs
            .iter()
            .filter(|((a, _), _)| *a == i)
            .map(|(_, &other)| other)
            .collect();
        self.pairs.retain(|(a, _), (b, _)| *a != i && *b != i);
        for (j, lj) in gone {
            self.queue.push_back(Ev::Lost { to: j, link: lj });
        }
        while self.nodes[i].poll_action().is_some() {}
    }

    fn restart(&mut self, i: usize) {
        self.crashed.remove(&i);
        self.incarnation += 1000;
        self.nodes[i] = Cluster::new(
            self.configs[i].clone(),
            self.incarnation,
            i as u64 + 100,
            self.now,
        );
    }

    fn running(&self, i: usize) -> Vec<String> {
        self.nodes[i].status().running_nodes
    }

    fn stopped(&self, i: usize) -> Vec<String> {
        self.nodes[i].status().stopped_nodes
    }
}

fn all3() -> Vec<String> {
    vec![
        "n1@10.0.0.1".to_string(),
        "n2@10.0.0.2".into(),
        "n3@10.0.0.3".into(),
    ]
}

fn publish(topic: &str, retain: bool) -> ForwardRef<'_> {
    ForwardRef {
        topic,
        payload: b"p",
        qos: 1,
        retain,
        expiry: None,
        payload_format_indicator: None,
        response_topic: None,
        correlation_data: None,
        user_properties: UserProps(&[]),
        content_type: None,
    }
}

fn delivered_to(h: &Harness) -> Vec<(usize, String)> {
    h.delivered
        .iter()
        .map(|(i, p)| (*i, p.topic.clone()))
        .collect()
}

#[test]
fn static_seeds_form_a_full_mesh() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
        assert!(h.stopped(i).is_empty());
        assert_eq!(h.nodes[i].metrics().links_up, 2);
    }
}

#[test]
fn simultaneous_dials_keep_the_same_single_link_on_both_sides() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    // Every surviving link on one side is paired with a surviving link on the other.
    for i in 0..3 {
        for (peer, &link) in h.nodes[i].links.peers() {
            let j = h.index(peer).unwrap();
            let &(pj, plink) = h.pairs.get(&(i, link)).expect("kept link still exists");
            assert_eq!(pj, j);
            assert_eq!(
                h.nodes[j].links.peers().get(&h.configs[i].node),
                Some(&plink)
            );
        }
    }
    // Links that lost the tie were closed: only one pair per node pair is left.
    assert_eq!(h.pairs.len(), 6);
}

#[test]
fn manual_join_learns_every_member_and_meshes() {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
        config("n3@10.0.0.3", Discovery::Manual, &[]),
    ]);
    h.nodes[1].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.joins, vec![(1, name("n1@10.0.0.1"), Ok(()))]);
    h.nodes[2].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
    }
    assert_eq!(
        h.nodes[2].metrics().links_up,
        2,
        "n3 dialled n1 it learned from n2"
    );
}

#[test]
fn join_of_an_unreachable_node_fails_with_a_reason() {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
    ]);
    h.crashed.insert(1);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(100));
    let (_, node, result) = h.joins.first().expect("join answered");
    assert_eq!(node, &name("n2@10.0.0.2"));
    assert!(
        result.as_ref().unwrap_err().contains("connection refused"),
        "{result:?}"
    );
    h.nodes[0].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.settle();
    assert_eq!(
        h.joins.last().unwrap().2,
        Err("cannot join the node itself".to_string())
    );
}

#[test]
fn routes_sync_on_link_up_then_follow_deltas() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#");
    h.nodes[2].local_route_added("t/+/x");
    h.advance(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(
            h.nodes[i].routes(),
            vec![
                RouteEntry {
                    filter: "t/#".into(),
                    nodes: vec!["n2@10.0.0.2".into()],
                },
                RouteEntry {
                    filter: "t/+/x".into(),
                    nodes: vec!["n3@10.0.0.3".into()],
                },
            ],
            "node {i}"
        );
    }
    h.nodes[2].local_route_added("t/#");
    h.nodes[1].local_route_removed("t/#");
    h.settle();
    for i in 0..3 {
        assert_eq!(
            h.nodes[i].routes(),
            vec![
                RouteEntry {
                    filter: "t/#".into(),
                    nodes: vec!["n3@10.0.0.3".into()],
                },
                RouteEntry {
                    filter: "t/+/x".into(),
                    nodes: vec!["n3@10.0.0.3".into()],
                },
            ],
            "node {i}"
        );
    }
}

// ---- bulk transfers (chunked route sets) ----------------------------------------------------

/// n1 and n2 linked by static seeds; n1 has `filters`.
fn linked_pair(filters: &[String]) -> Harness {
    let seeds = ["n1@10.0.0.1", "n2@10.0.0.2"];
    let mut h = Harness::new(
        seeds
            .iter()
            .map(|n| config(n, Discovery::Static, &seeds))
            .collect(),
    );
    for f in filters {
        h.nodes[0].local_route_added(f);
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(1), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
    h
}

fn n1_routes_at_n2(h: &Harness) -> Vec<String> {
    h.nodes[1].routes.table().of_node(&name("n1@10.0.0.1"))
}

/// Feeds one bulk chunk from n1 to n2 on n2's link to n1.
fn chunk_to_n2(h: &mut Harness, sync: u64, index: u32, last: bool, filters: &[&str]) {
    let link = h.nodes[1].links.peers()[&name("n1@10.0.0.1")];
    let frame = wire::encode(&LinkMessage::Bulk(wire::BulkChunk {
        sync,
        index,
        last,
        body: wire::BulkBody::Routes(filters.iter().map(|f| f.to_string()).collect()),
    }));
    let now = h.now;
    h.nodes[1].handle_frame(link, &frame[wire::LENGTH_PREFIX..], now);
}

#[test]
fn a_huge_route_set_crosses_in_bounded_chunks_and_arrives_whole() {
    let filters: Vec<String> = (0..60_000)
        .map(|i| format!("hog/{:05}/{:03}/sensor-value", i / 1000, i % 1000))
        .collect();
    let h = linked_pair(&filters);
    let mut want = filters.clone();
    want.sort();
    assert_eq!(n1_routes_at_n2(&h), want);
    assert!(
        h.largest_frame <= wire::BULK_CHUNK_BYTES + 64,
        "largest frame {} bytes",
        h.largest_frame
    );
}

#[test]
fn a_partial_route_set_never_purges_or_adds_routes() {
    let mut h = linked_pair(&["a/1".to_string(), "a/2".to_string()]);
    chunk_to_n2(&mut h, 99, 0, false, &["b/1"]);
    chunk_to_n2(&mut h, 99, 1, false, &["b/2"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1", "a/2"]);
    // The last chunk applies the whole set, replacing the old one.
    chunk_to_n2(&mut h, 99, 2, true, &["b/3"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["b/1", "b/2", "b/3"]);
}

#[test]
fn chunks_of_two_transfers_never_mix() {
    let mut h = linked_pair(&["a/1".to_string()]);
    chunk_to_n2(&mut h, 5, 0, false, &["x"]);
    // A new transfer starts: the old one is dropped.
    chunk_to_n2(&mut h, 6, 0, false, &["y"]);
    // The old transfer's last chunk does not continue the new one, nor apply anything.
    chunk_to_n2(&mut h, 5, 1, true, &["z"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // And it dropped the new one too (chunks must follow each other): its end is ignored.
    chunk_to_n2(&mut h, 6, 1, true, &["w"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // A skipped index is not a continuation either.
    chunk_to_n2(&mut h, 7, 0, false, &["p"]);
    chunk_to_n2(&mut h, 7, 2, true, &["q"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // A clean transfer applies exactly its own items.
    chunk_to_n2(&mut h, 8, 0, false, &["y"]);
    chunk_to_n2(&mut h, 8, 1, true, &["w"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["w", "y"]);
}

#[test]
fn a_new_link_starts_with_no_partial_transfer() {
    let mut h = linked_pair(&["a/1".to_string()]);
    chunk_to_n2(&mut h, 42, 0, false, &["half/1"]);
    // The link breaks mid-transfer and a new one comes up (with its own full resync).
    let link = h.nodes[1].links.peers()[&name("n1@10.0.0.1")];
    let now = h.now;
    h.nodes[1].link_lost(link, LinkLoss::Io, now);
    h.nodes[1].close(link, now);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.running(1), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
    assert_ne!(h.nodes[1].links.peers()[&name("n1@10.0.0.1")], link);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // The rest of the old transfer on the new link continues nothing.
    chunk_to_n2(&mut h, 42, 1, true, &["half/2"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
}

#[test]
fn the_frame_limit_is_raised_only_once_the_link_is_authenticated() {
    let frame_limits = |actions: &[ClusterAction]| -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                ClusterAction::FrameLimit { max, .. } => Some(*max),
                _ => None,
            })
            .collect()
    };
    let cfg = config("n1@10.0.0.1", Discovery::Manual, &[]);
    let (mut c, link) = accepted(cfg.clone());
    c.handle_frame(
        link,
        &hello(wire::PROTOCOL_VERSION, "flockmq", "n2@10.0.0.2")[4..],
        Duration::ZERO,
    );
    let after_hello = actions(&mut c);
    assert!(frame_limits(&after_hello).is_empty(), "{after_hello:?}");
    // A wrong proof: refused, the limit never raised.
    let proof = wire::encode(&LinkMessage::Proof {
        proof: [0; NONCE_LEN],
    });
    c.handle_frame(link, &proof[4..], Duration::ZERO);
    let refused = actions(&mut c);
    assert!(rejected_with(&refused, "authentication failed"));
    assert!(frame_limits(&refused).is_empty());
    // A good handshake raises it to cluster.max_frame_size on both sides, once.
    let mut h = Harness::new(vec![cfg, config("n2@10.0.0.2", Discovery::Manual, &[])]);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), Duration::ZERO);
    h.advance(Duration::from_millis(500));
    assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
    h.frame_limits.sort();
    assert_eq!(h.frame_limits, vec![(0, 1024 * 1024), (1, 1024 * 1024)]);
}

#[test]
fn pending_handshakes_are_capped_and_the_excess_closed_at_once() {
    let mut c = lone_n1(Discovery::Manual);
    let now = Duration::ZERO;
    for i in 0..MAX_PENDING_HANDSHAKES as u64 {
        c.link_opened(LinkId(i + 1), Harness::addr(5), None, now);
    }
    assert!(actions(&mut c).is_empty());
    // Dialled links are ours: not counted, not refused.
    c.link_opened(
        LinkId(1000),
        Harness::addr(2),
        Some(name("n3@10.0.0.3")),
        now,
    );
    assert!(
        actions(&mut c)
            .iter()
            .all(|a| !matches!(a, ClusterAction::Close { .. }))
    );
    let over = LinkId(2000);
    c.link_opened(over, Harness::addr(5), None, now);
    assert_eq!(actions(&mut c), vec![ClusterAction::Close { link: over }]);
    assert_eq!(c.metrics().handshakes_refused, 1);
    // The refused link is unknown to the core: its frames are ignored.
    c.handle_frame(
        over,
        &hello(wire::PROTOCOL_VERSION, "flockmq", "n2@10.0.0.2")[4..],
        now,
    );
    assert!(actions(&mut c).is_empty());
    // Once the pending ones time out, new connections are accepted again.
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    let _ = actions(&mut c);
    c.link_opened(LinkId(3000), Harness::addr(5), None, at);
    assert!(actions(&mut c).is_empty());
    assert_eq!(c.metrics().handshakes_refused, 1);
}

#[test]
fn a_framing_error_closes_the_link_with_a_reason_and_backs_off_growing() {
    let mut h = linked_pair(&["a/1".to_string()]);
    let n1 = name("n1@10.0.0.1");
    let n2 = name("n2@10.0.0.2");
    let cap = MIN_BACKOFF_CAP;
    for strike in 1..=5u32 {
        let link = h.nodes[0].links.peers()[&n2];
        let now = h.now;
        let oversize = wire::FrameError::Oversize {
            len: 2 << 20,
            max: 1 << 20,
        };
        h.nodes[0].link_lost(link, LinkLoss::Frame(oversize), now);
        let acts = actions(&mut h.nodes[0]);
        assert!(rejected_with(&acts, "bad framing"), "{acts:?}");
        // Hand the Reject and the close to n2 as the harness would.
        for a in acts {
            h.requeue(0, a);
        }
        h.settle();
        let min_wait = (BACKOFF_BASE * (1 << strike)).min(cap) / 2;
        for (i, peer) in [(0, &n2), (1, &n1)] {
            let wait = h.nodes[i].dialer.next_at(peer).unwrap().saturating_sub(now);
            println!("strike {strike}: node {i} redials after {wait:?}");
            assert!(
                wait >= min_wait,
                "strike {strike}, node {i}: {wait:?} < {min_wait:?}"
            );
        }
        // Nothing is dialled before the backoff is over.
        h.advance(min_wait - STEP);
        assert_eq!(h.running(0), vec!["n1@10.0.0.1"], "strike {strike}");
        h.advance(cap + Duration::from_millis(200));
        assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
        assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    }
    // A link that stays up long enough clears the strikes: the next plain loss redials fast.
    h.advance(STABLE_LINK);
    let link = h.nodes[0].links.peers()[&n2];
    let now = h.now;
    h.nodes[0].close(link, now);
    let wait = h.nodes[0].dialer.next_at(&n2).unwrap().saturating_sub(now);
    assert!(wait <= BACKOFF_BASE, "{wait:?}");
}

#[test]
fn the_seed_example_forwards_once_per_destination_node() {
    let mut h = Harness::static3();
    // client1@n1: t/+/x, t/+/y; client2@n2: t/#; client3@n3: t/+/x, t/a.
    for f in ["t/+/x", "t/+/y"] {
        h.nodes[0].local_route_added(f);
    }
    h.nodes[1].local_route_added("t/#");
    for f in ["t/+/x", "t/a"] {
        h.nodes[2].local_route_added(f);
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[0].forward(&publish("t/a", false)), 2);
    h.settle();
    assert_eq!(
        delivered_to(&h),
        vec![(1, "t/a".to_string()), (2, "t/a".to_string())]
    );
    // n3 has two filters matching t/b/x but gets one copy.
    h.delivered.clear();
    assert_eq!(h.nodes[1].forward(&publish("t/b/x", false)), 2);
    h.settle();
    assert_eq!(
        delivered_to(&h),
        vec![(0, "t/b/x".to_string()), (2, "t/b/x".to_string())]
    );
    h.delivered.clear();
    assert_eq!(h.nodes[0].forward(&publish("u/1", false)), 0);
    h.settle();
    assert!(h.delivered.is_empty());
    assert_eq!(h.nodes[0].metrics().forwards_sent, 2);
    assert_eq!(h.nodes[2].metrics().forwards_received, 2);
}

#[test]
fn overlapping_filters_on_one_node_get_one_copy() {
    let mut h = Harness::static3();
    for f in ["t/+", "t/#", "t/a", "+/a"] {
        h.nodes[1].local_route_added(f);
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[0].forward(&publish("t/a", false)), 1);
    h.settle();
    assert_eq!(delivered_to(&h), vec![(1, "t/a".to_string())]);
}

#[test]
fn a_forwarded_publish_is_delivered_and_never_forwarded_again() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#");
    h.nodes[2].local_route_added("t/#");
    h.advance(Duration::from_secs(1));
    h.nodes[0].forward(&publish("t/x", false));
    // Take n1's frames by hand, hand them to n2, and look at everything n2 does.
    h.drain(0);
    let frames: Vec<Ev> = h.queue.drain(..).collect();
    for ev in frames {
        if let Ev::Frame { to: 1, link, frame } = ev {
            h.nodes[1].handle_frame(link, &frame.slice(wire::LENGTH_PREFIX..), h.now);
        }
    }
    let mut actions = Vec::new();
    while let Some(a) = h.nodes[1].poll_action() {
        actions.push(a);
    }
    assert!(matches!(actions.as_slice(), [ClusterAction::Deliver(p)] if p.topic == "t/x"));
}

#[test]
fn retained_publishes_go_to_every_linked_node() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[0].forward(&publish("r/1", true)), 2);
    h.settle();
    assert_eq!(
        delivered_to(&h),
        vec![(1, "r/1".to_string()), (2, "r/1".to_string())]
    );
}

#[test]
fn a_silent_link_is_dead_after_three_heartbeats_and_its_routes_are_hidden_then_purged() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#");
    h.advance(Duration::from_secs(1));
    h.partition(0, 1);
    h.advance(HEARTBEAT * 2);
    assert_eq!(h.running(0), all3(), "two silent heartbeats are not enough");
    h.advance(HEARTBEAT * 2);
    assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n3@10.0.0.3"]);
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    assert!(
        h.nodes[0].routes().is_empty(),
        "n2's routes no longer listed on n1"
    );
    assert_eq!(h.nodes[0].metrics().routes, 0);
    // QoS >= 1 is buffered for n2, QoS 0 is not.
    assert_eq!(h.nodes[0].forward(&publish("t/1", false)), 1);
    let qos0 = ForwardRef {
        qos: 0,
        ..publish("t/1", false)
    };
    assert_eq!(h.nodes[0].forward(&qos0), 0);
    // After the buffer window the routes and the buffer go.
    h.advance(FORWARD_BUFFER_WINDOW);
    assert_eq!(h.nodes[0].forward(&publish("t/1", false)), 0);
    assert!(h.nodes[0].metrics().forward_drops >= 2);
    // n3 still sees n2 and its routes.
    assert_eq!(h.running(2), all3());
    assert_eq!(h.nodes[2].routes().len(), 1);
}

#[test]
fn a_healed_partition_rejoins_and_resyncs_without_an_operator() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    h.partition(0, 1);
    h.partition(0, 2);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2", "n3@10.0.0.3"]);
    // Routes change on both sides while split.
    h.nodes[2].local_route_added("s/#");
    h.nodes[0].local_route_added("m/#");
    h.heal();
    h.advance(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
        assert_eq!(
            h.nodes[i].routes(),
            vec![
                RouteEntry {
                    filter: "m/#".into(),
                    nodes: vec!["n1@10.0.0.1".into()]
                },
                RouteEntry {
                    filter: "s/#".into(),
                    nodes: vec!["n3@10.0.0.3".into()]
                },
            ],
            "node {i}"
        );
    }
}

#[test]
fn a_crashed_node_is_stopped_then_running_again_after_restart() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("old/#");
    h.advance(Duration::from_secs(1));
    h.crash(1);
    h.advance(HEARTBEAT);
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    assert!(h.nodes[0].routes().is_empty());
    h.restart(1);
    h.nodes[1].local_route_added("new/#");
    h.advance(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
    }
    assert_eq!(
        h.nodes[0].routes(),
        vec![RouteEntry {
            filter: "new/#".into(),
            nodes: vec!["n2@10.0.0.2".into()]
        }]
    );
}

#[test]
fn autoclean_forgets_a_member_stopped_too_long() {
    let mut configs: Vec<ClusterConfig> = ["n1@10.0.0.1", "n2@10.0.0.2"]
        .iter()
        .map(|n| config(n, Discovery::Manual, &[]))
        .collect();
    for c in &mut configs {
        c.autoclean = Some(Duration::from_secs(2));
    }
    let mut h = Harness::new(configs);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(500));
    h.crash(1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    h.advance(Duration::from_millis(1500));
    assert!(h.stopped(0).is_empty());
    assert_eq!(h.running(0), vec!["n1@10.0.0.1"]);
}

#[test]
fn leave_tells_the_others_and_force_leave_removes_a_stopped_member() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[2].leave(h.now), Ok(()));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(2), vec!["n3@10.0.0.3"]);
    for i in 0..2 {
        assert_eq!(h.running(i), vec!["n1@10.0.0.1", "n2@10.0.0.2"], "node {i}");
        assert!(h.stopped(i).is_empty(), "a left node is not stopped");
    }
    assert!(
        h.nodes[2].leave(h.now).is_err(),
        "not in a cluster any more"
    );

    h.crash(1);
    h.advance(HEARTBEAT);
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    assert_eq!(h.nodes[0].force_leave(&name("n2@10.0.0.2"), h.now), Ok(()));
    assert!(h.stopped(0).is_empty());
    assert!(h.nodes[0].force_leave(&name("n2@10.0.0.2"), h.now).is_err());
    assert!(h.nodes[0].force_leave(&name("n1@10.0.0.1"), h.now).is_err());
}

#[test]
fn membership_merge_keeps_the_higher_incarnation_and_left_wins_ties() {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
    ]);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(300));
    let n2 = name("n2@10.0.0.2");
    let link = h.nodes[0].links.peers()[&n2];
    let entry = |node: &str, incarnation, left| MemberEntry {
        node: node.into(),
        port: 4370,
        incarnation,
        left,
    };
    let gossip = |entries: Vec<MemberEntry>| wire::encode(&LinkMessage::Members(entries));
    let now = h.now;
    // A new member, then an older rumour about it: the newer entry stays.
    let frame = gossip(vec![entry("n9@10.0.0.9", 50, false)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    let frame = gossip(vec![entry("n9@10.0.0.9", 40, true)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    assert_eq!(h.stopped(0), vec!["n9@10.0.0.9"]);
    // Same incarnation, left: left wins.
    let frame = gossip(vec![entry("n9@10.0.0.9", 50, true)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    assert!(h.stopped(0).is_empty());
    // A stale "you left" about ourselves is refuted with a higher incarnation.
    let before = h.nodes[0].membership.incarnation();
    let frame = gossip(vec![entry("n1@10.0.0.1", before, true)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    assert!(h.nodes[0].membership.incarnation() > before);
    assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
}

// ---- handshake and bad input ---------------------------------------------------------------

fn accepted(cfg: ClusterConfig) -> (Cluster, LinkId) {
    let mut c = Cluster::new(cfg, 7, 7, Duration::ZERO);
    let link = LinkId(1);
    c.link_opened(link, Harness::addr(5), None, Duration::ZERO);
    (c, link)
}

fn actions(c: &mut Cluster) -> Vec<ClusterAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn rejected_with(actions: &[ClusterAction], reason: &str) -> bool {
    let reject = actions.iter().find_map(|a| match a {
        ClusterAction::Send { frame, .. } => {
            match wire::decode(&frame[wire::LENGTH_PREFIX..]).ok()? {
                LinkMessage::Reject { reason } => Some(reason),
                _ => None,
            }
        }
        _ => None,
    });
    reject.as_deref() == Some(reason) && matches!(actions.last(), Some(ClusterAction::Close { .. }))
}

fn hello(protocol: u16, cluster: &str, node: &str) -> Bytes {
    wire::encode(&LinkMessage::Hello {
        protocol,
        cluster: cluster.into(),
        node: node.into(),
        port: 4370,
        incarnation: 1,
        nonce: [9; NONCE_LEN],
    })
}

#[test]
fn unknown_protocol_version_is_refused() {
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(
        link,
        &hello(99, "flockmq", "n2@10.0.0.2")[4..],
        Duration::ZERO,
    );
    assert!(rejected_with(&actions(&mut c), "unknown protocol version"));
    assert_eq!(c.metrics().links_rejected, 1);
}

#[test]
fn another_cluster_and_our_own_name_are_refused() {
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(
        link,
        &hello(wire::PROTOCOL_VERSION, "other", "n2@10.0.0.2")[4..],
        Duration::ZERO,
    );
    assert!(rejected_with(&actions(&mut c), "cluster name mismatch"));
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(
        link,
        &hello(wire::PROTOCOL_VERSION, "flockmq", "n1@10.0.0.1")[4..],
        Duration::ZERO,
    );
    assert!(rejected_with(&actions(&mut c), "duplicate node name"));
}

#[test]
fn garbage_and_messages_before_the_handshake_are_refused() {
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(link, b"\xff\xff\xff\xffGET / HTTP/1.1", Duration::ZERO);
    assert!(rejected_with(&actions(&mut c), "undecodable frame"));
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    let routes = wire::encode(&LinkMessage::RouteAdd("#".into()));
    c.handle_frame(link, &routes[4..], Duration::ZERO);
    assert!(rejected_with(&actions(&mut c), "protocol error"));
    assert!(c.routes().is_empty());
}

#[test]
fn a_stalled_handshake_times_out() {
    let (mut c, _link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    let at = c.poll_timeout().expect("handshake deadline armed");
    assert_eq!(at, MIN_HANDSHAKE_TIMEOUT);
    c.handle_timeout(at);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [ClusterAction::Close { .. }]
    ));
}

#[test]
fn wrong_cookie_is_refused_and_no_cookie_crosses_the_wire() {
    let mut other = config("n2@10.0.0.2", Discovery::Manual, &[]);
    other.cookie = "another-cookie".into();
    let mut h = Harness::new(vec![config("n1@10.0.0.1", Discovery::Manual, &[]), other]);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(100));
    let (_, _, result) = h.joins.first().expect("join answered");
    let reason = result.as_ref().unwrap_err();
    assert!(reason.contains("cookie check"), "{reason}");
    assert_eq!(h.running(0), vec!["n1@10.0.0.1"]);
    assert_eq!(h.running(1), vec!["n2@10.0.0.2"]);
    assert!(!h.wire_log.is_empty());
    for cookie in [COOKIE, "another-cookie"] {
        assert!(
            !h.wire_log
                .windows(cookie.len())
                .any(|w| w == cookie.as_bytes()),
            "{cookie} appeared on the wire"
        );
    }
}

#[test]
fn handshake_bytes_of_a_good_link_never_contain_the_cookie() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(0), all3());
    let text = String::from_utf8_lossy(&h.wire_log);
    assert!(
        text.contains("n1@10.0.0.1"),
        "the capture saw the handshake"
    );
    assert!(!text.contains(COOKIE));
}

#[test]
fn cluster_status_renders_like_emqx() {
    let status = ClusterStatus {
        running_nodes: vec!["n1@127.0.0.1".into(), "n2@127.0.0.2".into()],
        stopped_nodes: vec![],
    };
    assert_eq!(
        status.render(),
        "Cluster status: [{running_nodes,['n1@127.0.0.1','n2@127.0.0.2']}]"
    );
    let status = ClusterStatus {
        running_nodes: vec!["n1@127.0.0.1".into()],
        stopped_nodes: vec!["n2@127.0.0.2".into()],
    };
    assert_eq!(
        status.render(),
        "Cluster status: [{running_nodes,['n1@127.0.0.1']},{stopped_nodes,['n2@127.0.0.2']}]"
    );
}

// ---- multicast discovery -------------------------------------------------------------------

fn all_n(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}@10.0.0.{i}")).collect()
}

fn everyone_sees_everyone(h: &Harness, n: usize) -> bool {
    (0..n).all(|i| h.running(i) == all_n(n) && h.stopped(i).is_empty())
}

#[test]
fn multicast_alone_forms_a_full_mesh() {
    let mut h = Harness::mcast(3);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3), "{:?}", h.running(0));
    // Discovery made exactly one link per pair, each dialled by the lower name.
    for i in 0..3 {
        assert_eq!(h.nodes[i].metrics().links_up, 2);
    }
}

#[test]
fn the_lower_name_dials_and_the_higher_answers_a_ping_with_a_pong() {
    let n1 = config("n1@10.0.0.1", Discovery::Mcast, &[]);
    let n2 = config("n2@10.0.0.2", Discovery::Mcast, &[]);
    let mut c1 = Cluster::new(n1.clone(), 1, 1, Duration::ZERO);
    let mut c2 = Cluster::new(n2.clone(), 1, 2, Duration::ZERO);
    let ping = |c: &mut Cluster| {
        c.handle_timeout(Duration::ZERO);
        actions(c)
    };
    let ping = |c: &mut Cluster| match ping(c).into_iter().find_map(|a| match a {
        ClusterAction::Announce(b) => Some(b),
        _ => None,
    }) {
        Some(b) => b,
        None => panic!("no announce at start"),
    };
    let ping1 = ping(&mut c1);
    let ping2 = ping(&mut c2);
    let from1: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let from2: SocketAddr = "10.0.0.2:40000".parse().unwrap();

    // n2 hears n1's ping: n2 is higher, so it answers n1's announce socket and does not dial.
    c2.handle_datagram(from1, &ping1, Duration::ZERO);
    c2.handle_timeout(Duration::ZERO);
    let a2 = actions(&mut c2);
    assert!(
        a2.iter()
            .any(|a| matches!(a, ClusterAction::Datagram { to, .. } if *to == from1)),
        "{a2:?}"
    );
    assert!(!a2.iter().any(|a| matches!(a, ClusterAction::Dial { .. })));
    let pong = a2
        .iter()
        .find_map(|a| match a {
            ClusterAction::Datagram { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .unwrap();

    // n1 hears the pong (or n2's ping): n1 is lower, so it dials n2 at n2's cluster port.
    for datagram in [pong, ping2] {
        let mut c1 = Cluster::new(n1.clone(), 1, 1, Duration::ZERO);
        let _ = actions(&mut c1);
        c1.handle_datagram(from2, &datagram, Duration::ZERO);
        c1.handle_timeout(Duration::ZERO);
        let a1 = actions(&mut c1);
        assert!(
            a1.iter().any(|a| matches!(a, ClusterAction::Dial { node, port: 4370, .. } if node.as_str() == "n2@10.0.0.2")),
            "{a1:?}"
        );
        assert!(
            !a1.iter()
                .any(|a| matches!(a, ClusterAction::Datagram { .. }))
        );
        assert_eq!(c1.metrics().datagrams_received, 1);
    }
}

#[test]
fn own_announces_looped_back_are_ignored() {
    let mut h = Harness::mcast(1);
    h.advance(Duration::from_secs(10));
    let m = h.nodes[0].metrics();
    assert!(m.announces_sent >= 3, "{m:?}");
    assert_eq!(m.datagrams_received, 0);
    assert_eq!(m.datagrams_dropped, 0);
    assert_eq!(h.running(0), all_n(1));
    assert!(h.queue.is_empty());
}

/// Feeds `datagram` to a fresh n1 and returns its actions and metrics.
fn n1_hears(datagram: &[u8]) -> (Vec<ClusterAction>, ClusterMetrics) {
    let mut c = lone_n1(Discovery::Mcast);
    let _ = actions(&mut c);
    let from: SocketAddr = "10.0.0.9:40000".parse().unwrap();
    c.handle_datagram(from, datagram, Duration::ZERO);
    c.handle_timeout(Duration::ZERO);
    let acts = actions(&mut c)
        .into_iter()
        .filter(|a| !matches!(a, ClusterAction::Announce(_)))
        .collect();
    (acts, c.metrics())
}

fn announce_of(node: &str, cluster: &str, cookie: &str, kind: discovery::Kind) -> Bytes {
    discovery::encode(
        kind,
        &discovery::Sender {
            protocol: wire::PROTOCOL_VERSION,
            port: 4370,
            instance: 99,
            node,
            cluster,
            cookie,
        },
    )
}

#[test]
fn a_genuine_announce_is_acted_on() {
    let (acts, m) = n1_hears(&announce_of(
        "n9@10.0.0.9",
        "flockmq",
        COOKIE,
        discovery::Kind::Ping,
    ));
    assert!(
        matches!(acts.as_slice(), [ClusterAction::Dial { .. }]),
        "{acts:?}"
    );
    assert_eq!((m.datagrams_received, m.datagrams_dropped), (1, 0));
}

#[test]
fn bad_announces_are_dropped_and_make_nobody_dial_or_answer() {
    let genuine = announce_of("n9@10.0.0.9", "flockmq", COOKIE, discovery::Kind::Ping);
    // Same digest, another port: a forger who does not know the cookie.
    let mut forged = genuine.to_vec();
    forged[8] ^= 0x01;
    let other_protocol = discovery::encode(
        discovery::Kind::Ping,
        &discovery::Sender {
            protocol: wire::PROTOCOL_VERSION + 1,
            port: 4370,
            instance: 99,
            node: "n9@10.0.0.9",
            cluster: "flockmq",
            cookie: COOKIE,
        },
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", genuine[..genuine.len() - 3].to_vec()),
        ("huge", vec![b'F'; 4000]),
        ("not ours", b"NOTIFY * HTTP/1.1\r\n".to_vec()),
        (
            "other cluster",
            announce_of("n9@10.0.0.9", "other", COOKIE, discovery::Kind::Ping).to_vec(),
        ),
        (
            "other cookie",
            announce_of("n9@10.0.0.9", "flockmq", "wrong", discovery::Kind::Ping).to_vec(),
        ),
        ("forged", forged),
        ("other protocol", other_protocol.to_vec()),
        (
            "bad node name",
            announce_of("no-at-sign", "flockmq", COOKIE, discovery::Kind::Ping).to_vec(),
        ),
        (
            "our own name from another instance",
            announce_of("n1@10.0.0.1", "flockmq", COOKIE, discovery::Kind::Ping).to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let (acts, m) = n1_hears(&bytes);
        assert!(acts.is_empty(), "{what}: {acts:?}");
        assert_eq!(
            (m.datagrams_received, m.datagrams_dropped),
            (0, 1),
            "{what}"
        );
    }
}

#[test]
fn announces_never_stop_and_back_off_to_about_five_seconds() {
    let mut h = Harness::mcast(1);
    h.advance(Duration::from_secs(120));
    let times: Vec<Duration> = h.announces.iter().map(|(_, t)| *t).collect();
    assert!(
        times.first().is_some_and(|t| *t <= STEP),
        "announces at start"
    );
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] < Duration::from_millis(700),
        "fast at first: {gaps:?}"
    );
    for g in &gaps {
        assert!(*g <= ANNOUNCE_MAX * 5 / 4 + STEP, "gap {g:?} too long");
    }
    assert!(
        times.last().unwrap() >= &Duration::from_secs(113),
        "still announcing"
    );
    let late: BTreeSet<Duration> = gaps[gaps.len() - 10..].iter().copied().collect();
    assert!(late.len() > 1, "jittered: {late:?}");
    assert!(late.iter().all(|g| *g >= ANNOUNCE_MAX * 3 / 4), "{late:?}");
}

#[test]
fn five_nodes_converge_under_ninety_percent_datagram_loss_only_later() {
    let mut clean = Harness::mcast(5);
    clean.advance(Duration::from_secs(1));
    assert!(everyone_sees_everyone(&clean, 5));

    let mut lossy = Harness::mcast(5);
    lossy.mcast_loss = 0.9;
    let mut waited = Duration::ZERO;
    while !everyone_sees_everyone(&lossy, 5) {
        lossy.advance(Duration::from_millis(500));
        waited += Duration::from_millis(500);
        assert!(waited < Duration::from_secs(120), "{:?}", lossy.running(0));
    }
    assert!(
        waited > Duration::from_secs(1),
        "loss slowed it down: {waited:?}"
    );
}

#[test]
fn a_node_started_later_is_found_by_its_first_announce() {
    let mut h = Harness::mcast(4);
    h.crash(3);
    h.advance(Duration::from_secs(30));
    assert!(everyone_sees_everyone(&h, 3) || h.running(0).len() == 3);
    let before = h.announces.len();
    h.restart(3);
    h.advance(Duration::from_millis(200));
    assert!(everyone_sees_everyone(&h, 4), "{:?}", h.running(3));
    // Found well before anyone's next periodic announce.
    assert!(
        h.announces.len() - before <= 2,
        "{}",
        h.announces.len() - before
    );
}

#[test]
fn cutting_only_multicast_leaves_an_existing_cluster_alone() {
    let mut h = Harness::mcast(3);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3));
    for a in 0..3 {
        for b in 0..3 {
            h.mcast_cut.insert((a, b));
        }
    }
    for _ in 0..60 {
        h.advance(Duration::from_secs(1));
        assert!(everyone_sees_everyone(&h, 3));
    }
}

#[test]
fn a_node_that_left_neither_announces_nor_answers_until_it_joins() {
    let mut h = Harness::mcast(3);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3));
    let now = h.now;
    h.nodes[2].leave(now).unwrap();
    h.advance(Duration::from_secs(30));
    assert_eq!(h.running(2), vec!["n3@10.0.0.3".to_string()]);
    assert_eq!(h.running(0), all_n(2));
    assert!(
        !h.announces.iter().any(|(i, t)| *i == 2 && *t > now),
        "a node that left stopped announcing"
    );
    let now = h.now;
    h.nodes[2].join(&"n1@10.0.0.1".parse().unwrap(), now);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3));
    assert!(h.announces.iter().any(|(i, t)| *i == 2 && *t > now));
}

#[test]
fn a_wrong_cookie_node_on_the_group_never_joins_and_no_cookie_is_sent() {
    let mut configs: Vec<ClusterConfig> = (1..=4)
        .map(|i| config(&format!("n{i}@10.0.0.{i}"), Discovery::Mcast, &[]))
        .collect();
    configs[3].cookie = "another-cookie".into();
    // The odd node has the lowest name, so it is the one that would dial.
    configs[3].node = name("a0@10.0.0.4");
    let mut h = Harness::new(configs);
    h.advance(Duration::from_secs(30));
    assert!((0..3).all(|i| h.running(i) == all_n(3) && h.stopped(i).is_empty()));
    assert_eq!(h.running(3), vec!["a0@10.0.0.4".to_string()]);
    assert!(h.nodes[3].metrics().datagrams_dropped > 0);
    for cookie in [COOKIE, "another-cookie"] {
        assert!(
            !h.datagram_log
                .windows(cookie.len())
                .any(|w| w == cookie.as_bytes())
        );
    }
}

// ---- numbered QoS >= 1 forwards ----------------------------------------------------------

fn payloads_at(h: &Harness, node: usize) -> Vec<Vec<u8>> {
    h.delivered
        .iter()
        .filter(|(i, _)| *i == node)
        .map(|(_, p)| p.payload.clone())
        .collect()
}

fn numbered_publish(payload: &[u8]) -> ForwardRef<'_> {
    ForwardRef {
        payload,
        ..publish("t/x", false)
    }
}

fn expected(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| i.to_be_bytes().to_vec()).collect()
}

#[test]
fn qos1_forwards_survive_a_partition_shorter_than_the_window_in_order_and_once() {
    let mut h = Harness::static3();
    h.nodes[2].local_route_added("t/#");
    h.advance(Duration::from_secs(1));
    for i in 0..10u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.settle();
    // The link dies silently: these frames vanish on the wire, before anyone notices.
    h.partition(0, 2);
    for i in 10..20u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.advance(HEARTBEAT * 4);
    assert_eq!(h.stopped(0), vec!["n3@10.0.0.3"]);
    // Noticed as down: buffered.
    for i in 20..30u32 {
        assert_eq!(h.nodes[0].forward(&numbered_publish(&i.to_be_bytes())), 1);
    }
    assert!(h.nodes[0].metrics().forwards_unacked >= 20);
    h.advance(Duration::from_secs(5));
    assert_eq!(payloads_at(&h, 2), expected(0..10));
    h.heal();
    h.advance(Duration::from_secs(3));
    assert_eq!(h.running(0), all3());
    // New traffic after the heal comes after the resent backlog.
    for i in 30..35u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(payloads_at(&h, 2), expected(0..35));
    assert_eq!(h.nodes[0].metrics().forwards_unacked, 0, "all acknowledged");
    assert_eq!(h.nodes[0].metrics().forward_drops, 0);
}

#[test]
fn a_resumed_link_does_not_resend_what_was_delivered() {
    let mut h = Harness::static3();
    h.nodes[2].local_route_added("t/#");
    h.advance(Duration::from_secs(1));
    // Delivered, but the partition comes before the heartbeat's ack.
    for i in 0..5u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.settle();
    h.partition(0, 2);
    assert!(h.nodes[0].metrics().forwards_unacked > 0);
    h.advance(Duration::from_secs(1));
    h.heal();
    h.advance(Duration::from_secs(3));
    assert_eq!(h.running(2), all3());
    assert_eq!(payloads_at(&h, 2), expected(0..5), "no duplicates");
    assert_eq!(h.nodes[0].metrics().forwards_unacked, 0);
}

#[test]
fn a_duplicate_numbered_forward_is_not_delivered_twice() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    let link = *h.nodes[2].links.peers().get(&name("n1@10.0.0.1")).unwrap();
    let frame = wire::encode_forward_seq(&numbered_publish(b"x"), 1, &mut BytesMut::new());
    for _ in 0..3 {
        h.nodes[2].handle_frame(link, &frame[wire::LENGTH_PREFIX..], h.now);
    }
    let delivered = actions(&mut h.nodes[2])
        .into_iter()
        .filter(|a| matches!(a, ClusterAction::Deliver(_)))
        .count();
    assert_eq!(delivered, 1);
}

#[test]
fn acknowledgements_keep_the_sender_buffer_small_on_a_live_link() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#");
    h.advance(Duration::from_secs(1));
    for i in 0..1000u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
        if i % 10 == 0 {
            h.settle();
        }
    }
    h.settle();
    assert!(
        h.nodes[0].metrics().forwards_unacked < ACK_EVERY,
        "{:?}",
        h.nodes[0].metrics()
    );
    h.advance(HEARTBEAT * 2);
    assert_eq!(h.nodes[0].metrics().forwards_unacked, 0);
    assert_eq!(payloads_at(&h, 1), expected(0..1000));
}

#[test]
fn a_restarted_node_gets_fresh_numbering_and_not_the_old_buffer() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#");
    h.advance(Duration::from_secs(1));
    h.crash(1);
    h.advance(HEARTBEAT * 4);
    assert_eq!(h.nodes[0].forward(&numbered_publish(b"old")), 1, "buffered");
    h.restart(1);
    h.nodes[1].local_route_added("t/#");
    h.advance(Duration::from_secs(3));
    assert_eq!(h.running(0), all3());
    assert_eq!(h.nodes[0].forward(&numbered_publish(b"new")), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(payloads_at(&h, 1), vec![b"new".to_vec()]);
    assert_eq!(
        h.nodes[0].metrics().forward_drops,
        1,
        "the old one was dropped"
    );
}

#[test]
fn the_forward_buffer_is_bounded() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#");
    h.advance(Duration::from_secs(1));
    h.partition(0, 1);
    h.advance(HEARTBEAT * 4);
    let mut kept = 0;
    for i in 0..(FORWARD_BUFFER_MSGS as u32 + 10) {
        kept += h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    assert_eq!(kept, FORWARD_BUFFER_MSGS);
    assert_eq!(h.nodes[0].metrics().forward_drops, 10);
}

// ---- member list file ----------------------------------------------------------------------

fn manual3_joined() -> Harness {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
        config("n3@10.0.0.3", Discovery::Manual, &[]),
    ]);
    h.nodes[1].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.nodes[2].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.advance(Duration::from_secs(1));
    assert!((0..3).all(|i| h.running(i) == all3()));
    h
}

#[test]
fn the_member_list_file_follows_membership() {
    let mut h = manual3_joined();
    assert_eq!(
        h.saved.get(&0).map(String::as_str),
        Some(
            "# flockmq cluster members, rewritten by the node; delete it to forget the cluster\n\
             n2@10.0.0.2 4370\nn3@10.0.0.3 4370\n"
        )
    );
    // A stopped member stays in the file (it is still a member).
    h.crash(2);
    h.advance(Duration::from_secs(1));
    assert!(h.saved[&0].contains("n3@10.0.0.3"));
    // Leaving empties it, force-leave removes the member.
    let now = h.now;
    h.nodes[0].force_leave(&name("n3@10.0.0.3"), now).unwrap();
    h.advance(HEARTBEAT);
    assert!(!h.saved[&0].contains("n3@10.0.0.3"));
    assert!(h.saved[&0].contains("n2@10.0.0.2"));
    let now = h.now;
    h.nodes[1].leave(now).unwrap();
    h.advance(HEARTBEAT);
    assert_eq!(
        h.saved[&1].lines().filter(|l| !l.starts_with('#')).count(),
        0
    );
}

#[test]
fn a_whole_manual_cluster_restarted_finds_itself_again_from_its_member_files() {
    // Without the files: three islands.
    let mut h = manual3_joined();
    for i in 0..3 {
        h.crash(i);
    }
    for i in 0..3 {
        h.restart(i);
    }
    h.advance(Duration::from_secs(5));
    assert!((0..3).all(|i| h.running(i).len() == 1));

    let mut h = manual3_joined();
    let files = h.saved.clone();
    for i in 0..3 {
        h.crash(i);
    }
    let now = h.now;
    for i in 0..3 {
        h.restart(i);
        assert_eq!(h.nodes[i].restore_members(&files[&i], now), 2);
    }
    h.advance(Duration::from_secs(5));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
    }
}

#[test]
fn bad_lines_of_a_member_list_file_are_skipped() {
    let mut c = lone_n1(Discovery::Manual);
    let text = "# comment\n\nn2@10.0.0.2 4370\ngarbage\nn3@10.0.0.3 notaport\nn1@10.0.0.1 4370\n\
                n4@[fd00::4] 4371\n";
    assert_eq!(c.restore_members(text, Duration::ZERO), 2);
    assert_eq!(c.status().stopped_nodes, vec!["n2@10.0.0.2", "n4@fd00::4"]);
    // What a node writes, it reads back (IPv6 hosts included).
    let mut again = lone_n1(Discovery::Manual);
    assert_eq!(
        again.restore_members(&c.membership.file(), Duration::ZERO),
        2
    );
    assert_eq!(again.membership.file(), c.membership.file());
    c.handle_timeout(Duration::ZERO);
    let dials: Vec<(String, u16)> = actions(&mut c)
        .into_iter()
        .filter_map(|a| match a {
            ClusterAction::Dial { node, port, .. } => Some((node.to_string(), port)),
            _ => None,
        })
        .collect();
    assert_eq!(
        dials,
        vec![("n2@10.0.0.2".into(), 4370), ("n4@fd00::4".into(), 4371)]
    );
}
