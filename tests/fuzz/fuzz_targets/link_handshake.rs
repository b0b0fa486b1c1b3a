//! A cluster core (`flockmq::cluster::Cluster`) facing a fuzzed peer: accepted and dialled links
//! fed arbitrary frames, interleaved with timers, lost links, answered dials and local route and
//! forward calls. The input is a script of `flockmq_fuzz::ops::LinkOp`s (see there).
//!
//! The fuzzer cannot forge an HMAC, so two operations play an honest peer that holds the cookie
//! (`ValidProof`, `ValidChallenge`, computing the proof from the nonces the core sent): with
//! them the frames after the handshake reach the authenticated message handling too. Checked:
//! - nothing panics;
//! - no link is ever authenticated (no `FrameLimit`, no `Deliver`, no running peer, no link up)
//!   unless an honest proof was sent;
//! - every frame the core sends is one well-formed frame that decodes;
//! - no action names a link after the core closed it, or a link that was never opened.
#![no_main]

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use flockmq::cluster::handshake::{Role, Transcript};
use flockmq::cluster::wire::{
    self, ForwardRef, ForwardedPublish, LinkMessage, NONCE_LEN, RetainedItem, UserProps,
};
use flockmq::cluster::{Cluster, ClusterAction, Discovery, LinkId, LinkLoss, NodeName};
use flockmq_fuzz::ops::{Input, LinkOp, TOPICS};
use flockmq_fuzz::{CLUSTER, COOKIE, NODE, PEER, cluster_config, node};
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: usize = 1 << 20;

struct Harness {
    core: Cluster,
    now: Duration,
    next_link: u64,
    /// Links opened and not yet closed by the core, with the node dialled (None: accepted).
    open: Vec<(LinkId, Option<NodeName>)>,
    opened: BTreeSet<LinkId>,
    closed: BTreeSet<LinkId>,
    /// Per link, the last handshake message the core sent on it.
    last_hello: Option<(LinkId, [u8; NONCE_LEN])>,
    last_challenge: Option<(LinkId, [u8; NONCE_LEN], [u8; NONCE_LEN])>,
    /// The peer nonce of the Hello we sent on each accepted link.
    our_nonce: [u8; NONCE_LEN],
    dials: VecDeque<NodeName>,
    /// An honest proof or challenge was sent: links may come up.
    honest: bool,
}

impl Harness {
    fn addr() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 2], 40000))
    }

    fn open_link(&mut self, dialed: Option<NodeName>) {
        self.next_link += 1;
        let link = LinkId(self.next_link);
        self.opened.insert(link);
        self.open.push((link, dialed.clone()));
        self.core.link_opened(link, Self::addr(), dialed, self.now);
    }

    fn current(&self, pick: u8) -> Option<LinkId> {
        let n = self.open.len();
        (n > 0).then(|| self.open[n - 1 - usize::from(pick) % n].0)
    }

    fn drain(&mut self) {
        while let Some(action) = self.core.poll_action() {
            let link = match &action {
                ClusterAction::Send { link, .. }
                | ClusterAction::Close { link }
                | ClusterAction::FrameLimit { link, .. }
                | ClusterAction::SyncRetained { link }
                | ClusterAction::RetainedWanted { link, .. } => Some(*link),
                _ => None,
            };
            if let Some(link) = link {
                assert!(
                    self.opened.contains(&link),
                    "{action:?} names an unknown link"
                );
                assert!(
                    !self.closed.contains(&link),
                    "{action:?} after the link's Close"
                );
            }
            match action {
                ClusterAction::Send { link, frame } => self.sent(link, &frame),
                ClusterAction::Close { link } => {
                    self.closed.insert(link);
                    self.open.retain(|(l, _)| *l != link);
                }
                ClusterAction::FrameLimit { .. }
                | ClusterAction::Deliver(_)
                | ClusterAction::MergeRetained(_) => {
                    assert!(self.honest, "{action:?} without an honest proof");
                }
                ClusterAction::SyncRetained { link } => {
                    assert!(self.honest, "{action:?} without an honest proof");
                    // The node's retained set is not empty: its digest travels.
                    self.core.sync_retained(link, vec![1, 0, 2]);
                }
                ClusterAction::RetainedWanted { link, digest } => {
                    assert!(
                        self.honest,
                        "retained digest accepted without an honest proof"
                    );
                    let item = RetainedItem {
                        version: (1 << 20, 7),
                        publish: retained_publish(),
                    };
                    self.core
                        .answer_retained(link, vec![3, 0, 2], &digest, vec![item]);
                }
                ClusterAction::Dial { node, .. } => self.dials.push_back(node),
                ClusterAction::JoinDone { result: Ok(()), .. } => {
                    assert!(self.honest, "a join succeeded without an honest proof");
                }
                _ => {}
            }
        }
        if !self.honest {
            let m = self.core.metrics();
            assert_eq!(m.links_up, 0, "a link is up without an honest proof");
            assert_eq!(m.running_nodes, 1, "a peer runs without an honest proof");
            assert_eq!(m.forwards_received, 0);
        }
    }

    /// A frame the core wrote: one whole, decodable frame.
    fn sent(&mut self, link: LinkId, frame: &[u8]) {
        let mut buf = BytesMut::from(frame);
        let payload = match wire::split_frame(&mut buf, usize::MAX) {
            Ok(Some(p)) if buf.is_empty() => p,
            other => panic!("the core sent a bad frame {frame:02x?}: {other:?}"),
        };
        let msg = match wire::decode(&payload) {
            Ok(m) => m,
            Err(e) => panic!("the core sent an undecodable frame: {e}"),
        };
        match msg {
            LinkMessage::Hello { nonce, .. } => self.last_hello = Some((link, nonce)),
            LinkMessage::Challenge { nonce, .. } => {
                self.last_challenge = Some((link, self.our_nonce, nonce));
            }
            _ => {}
        }
    }

    fn frame(&mut self, pick: u8, payload: &[u8]) {
        if let Some(link) = self.current(pick) {
            self.core.handle_frame(link, payload, self.now);
        }
    }

    fn hello(&self, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let hello = LinkMessage::Hello {
            protocol: wire::PROTOCOL_VERSION,
            cluster: CLUSTER.into(),
            node: PEER.into(),
            port: 4370,
            incarnation: 7,
            nonce,
        };
        payload(&hello)
    }

    fn run(&mut self, op: LinkOp, input: &mut Input<'_>) {
        match op {
            LinkOp::Frame { link } => {
                let bytes = input.chunk();
                self.frame(link, bytes);
            }
            LinkOp::Hello { link } => {
                self.our_nonce = input.array();
                let hello = self.hello(self.our_nonce);
                self.frame(link, &hello);
            }
            LinkOp::ValidProof => {
                // The dialer's proof over the Hello we sent and the core's Challenge.
                if let Some((link, ours, theirs)) = self.last_challenge.take() {
                    let proof = Transcript {
                        cluster: CLUSTER,
                        dialer: PEER,
                        acceptor: NODE,
                        dialer_nonce: &ours,
                        acceptor_nonce: &theirs,
                    }
                    .proof(COOKIE, Role::Dialer);
                    self.honest = true;
                    let proof = payload(&LinkMessage::Proof { proof });
                    self.core.handle_frame(link, &proof, self.now);
                }
            }
            LinkOp::ValidChallenge => {
                // The acceptor's answer to the Hello the core sent on a link it dialled.
                if let Some((link, theirs)) = self.last_hello.take() {
                    let ours: [u8; NONCE_LEN] = input.array();
                    let dialed = self
                        .open
                        .iter()
                        .find(|(l, _)| *l == link)
                        .and_then(|(_, d)| d.clone());
                    let acceptor = dialed.map_or_else(|| PEER.to_owned(), |d| d.to_string());
                    let proof = Transcript {
                        cluster: CLUSTER,
                        dialer: NODE,
                        acceptor: &acceptor,
                        dialer_nonce: &theirs,
                        acceptor_nonce: &ours,
                    }
                    .proof(COOKIE, Role::Acceptor);
                    self.honest = true;
                    let challenge = LinkMessage::Challenge {
                        protocol: wire::PROTOCOL_VERSION,
                        cluster: CLUSTER.into(),
                        node: acceptor,
                        port: 4370,
                        incarnation: 7,
                        nonce: ours,
                        proof,
                    };
                    self.core.handle_frame(link, &payload(&challenge), self.now);
                }
            }
            LinkOp::Accept => self.open_link(None),
            LinkOp::Dial => self.open_link(Some(node(PEER))),
            LinkOp::AnswerDial { ok } => {
                if let Some(n) = self.dials.pop_front() {
                    if ok {
                        self.open_link(Some(n));
                    } else {
                        self.core.dial_failed(&n, "refused", self.now);
                    }
                }
            }
            LinkOp::Lost { link, bad_frame } => {
                if let Some(l) = self.current(link) {
                    let why = if bad_frame {
                        LinkLoss::Frame(wire::FrameError::Empty)
                    } else {
                        LinkLoss::Io
                    };
                    self.open.retain(|(x, _)| *x != l);
                    self.core.link_lost(l, why, self.now);
                }
            }
            LinkOp::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms) * 10);
                self.core.handle_timeout(self.now);
            }
            LinkOp::Route { add, topic } => {
                let filter = TOPICS[usize::from(topic) % TOPICS.len()];
                if add {
                    self.core.local_route_added(filter, self.now);
                } else {
                    self.core.local_route_removed(filter, self.now);
                }
            }
            LinkOp::Forward { topic, qos } => {
                let props = [("k".into(), "v".into())];
                let publish = ForwardRef {
                    topic: TOPICS[usize::from(topic) % TOPICS.len()],
                    payload: b"payload",
                    qos: qos % 3,
                    retain: qos & 4 != 0,
                    expiry: None,
                    payload_format_indicator: None,
                    response_topic: None,
                    correlation_data: None,
                    user_properties: UserProps(&props),
                    content_type: None,
                    retain_version: (qos & 4 != 0).then_some((1 << 20, 7)),
                };
                self.core.forward(&publish);
            }
            LinkOp::Leave => {
                let _ = self.core.leave(self.now);
            }
            LinkOp::Join => {
                if let Ok(seed) = PEER.parse() {
                    self.core.join(&seed, self.now);
                }
            }
        }
        self.drain();
    }
}

fn retained_publish() -> ForwardedPublish {
    ForwardedPublish {
        topic: "a/b".into(),
        payload: b"retained".to_vec(),
        qos: 1,
        retain: true,
        expiry: None,
        payload_format_indicator: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        content_type: None,
        retain_version: Some((1 << 20, 7)),
    }
}

fn payload(msg: &LinkMessage) -> Vec<u8> {
    wire::encode(msg)[wire::LENGTH_PREFIX..].to_vec()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut h = Harness {
        core: Cluster::new(
            cluster_config(Discovery::Manual, MAX_FRAME),
            1,
            1,
            Duration::ZERO,
        ),
        now: Duration::ZERO,
        next_link: 0,
        open: Vec::new(),
        opened: BTreeSet::new(),
        closed: BTreeSet::new(),
        last_hello: None,
        last_challenge: None,
        our_nonce: [0; NONCE_LEN],
        dials: VecDeque::new(),
        honest: false,
    };
    h.open_link(None);
    h.drain();
    while let Some(op) = input.link_op() {
        h.run(op, &mut input);
    }
});
