//! Cluster core tests without any runtime: several cores wired together by an in-memory harness
//! that turns `Dial` into link pairs, `Send` into frames on the paired link, `Close` into a lost
//! link on the other side, and can partition (frames silently vanish, as on a frozen TCP stream)
//! or crash nodes. The tests are grouped by part: one file each.

mod discovery;
mod forward;
mod links;
mod members_file;
mod membership;
mod retained;
mod route_acks;
mod routes;

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
    /// Retained-sync actions, for the tests to answer as the broker would.
    pub(super) retained: Vec<(usize, ClusterAction)>,
    /// Route changes confirmed per node, in order.
    pub(super) confirmed: Vec<(usize, u64)>,
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
            retained: Vec::new(),
            confirmed: Vec::new(),
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
                ClusterAction::RoutesConfirmed(seq) => self.confirmed.push((i, seq)),
                // The broker's side of the retained sync; tests that need it take them here.
                action @ (ClusterAction::SyncRetained { .. }
                | ClusterAction::RetainedWanted { .. }
                | ClusterAction::MergeRetained(_)) => self.retained.push((i, action)),
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
                self.nodes[to].frames_done(link);
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

/// Every action `c` has queued.
fn actions(c: &mut Cluster) -> Vec<ClusterAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

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
        h.nodes[0].local_route_added(f, h.now);
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(1), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
    h
}

fn n1_routes_at_n2(h: &Harness) -> Vec<String> {
    h.nodes[1].routes.table().of_node(&name("n1@10.0.0.1"))
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
        retain_version: None,
    }
}

fn delivered_to(h: &Harness) -> Vec<(usize, String)> {
    h.delivered
        .iter()
        .map(|(i, p)| (*i, p.topic.clone()))
        .collect()
}
