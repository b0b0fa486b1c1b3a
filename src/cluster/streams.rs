//! Forwarding: the publishes this node sends to and receives from other nodes. Owns the
//! numbered QoS >= 1 streams per node, out (`OutStream`: numbering, the forwards kept until
//! acknowledged, the buffer while the node's link is down) and in (`InStream`: what was
//! delivered, what was acknowledged), and the forward counters.
//!
//! A publish goes once per destination node. QoS >= 1 forwards are numbered per destination
//! (`ForwardSeq`), acknowledged cumulatively (`Ack`, every `ACK_EVERY` forwards and on every
//! heartbeat), kept until acknowledged, buffered for `FORWARD_BUFFER_WINDOW` while the node's
//! link is down (at most `FORWARD_BUFFER_MSGS` / `FORWARD_BUFFER_BYTES`), and resent in order
//! after the peer's `Resume` on the next link. A peer with a new incarnation gets a fresh
//! numbering. The route table itself belongs to the caller (`forward` reads it).
//!
//! Deadlines: per node whose link is down, the end of its buffer window (`poll_timeout`);
//! `handle_timeout` then drops its streams and returns it, so the caller purges its routes.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::links::Links;
use super::routes::RouteTable;
use super::wire::{self, ForwardRef, ForwardedPublish, LinkMessage};
use super::{ClusterAction, LinkId, NodeName, Outbox};

/// How long QoS >= 1 forwards for a node whose link is down are buffered (its routes kept).
pub(super) const FORWARD_BUFFER_WINDOW: Duration = Duration::from_secs(30);
/// Per-node bounds of the forward buffer (unacknowledged + buffered while down).
pub(super) const FORWARD_BUFFER_MSGS: usize = 10_000;
const FORWARD_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// The receiver acknowledges at least every this many numbered forwards.
pub(super) const ACK_EVERY: u64 = 64;

/// Our numbered QoS >= 1 forwards to one node (kept across its link's outages).
#[derive(Debug, Default)]
struct OutStream {
    /// The peer incarnation the numbers are for.
    incarnation: u64,
    /// The last number used.
    last_seq: u64,
    /// Sent or buffered, not yet acknowledged, in order: (number, whole frame).
    unacked: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Until the peer's `Resume` after a link up, or while the link is down: buffer, do not send.
    paused: bool,
    /// When the link went down; the buffer window runs from here.
    down_since: Option<Duration>,
}

impl OutStream {
    fn full(&self, frame_len: usize) -> bool {
        self.unacked.len() >= FORWARD_BUFFER_MSGS
            || self.bytes.saturating_add(frame_len) > FORWARD_BUFFER_BYTES
    }

    fn acked(&mut self, upto: u64) {
        while let Some((seq, frame)) = self.unacked.front() {
            if *seq > upto {
                break;
            }
            self.bytes = self.bytes.saturating_sub(frame.len());
            self.unacked.pop_front();
        }
    }

    /// Forgets the buffer; returns how many forwards were in it.
    fn drop_all(&mut self) -> u64 {
        let n = self.unacked.len() as u64;
        self.unacked.clear();
        self.bytes = 0;
        n
    }
}

/// What we received of one node's numbered forwards.
#[derive(Debug, Default)]
struct InStream {
    /// The sender incarnation the numbers are from.
    incarnation: u64,
    /// The highest number delivered.
    received: u64,
    /// The highest number acknowledged to the sender.
    acked: u64,
}

impl InStream {
    /// The cumulative ack to send, once at least `min` (>= 1) numbers arrived since the last.
    fn take_ack(&mut self, min: u64) -> Option<u64> {
        (self.received.saturating_sub(self.acked) >= min.max(1)).then(|| {
            self.acked = self.received;
            self.received
        })
    }
}

/// The forward streams of every node.
#[derive(Debug, Default)]
pub(super) struct Streams {
    outs: BTreeMap<NodeName, OutStream>,
    ins: BTreeMap<NodeName, InStream>,
    /// Reused by every forward so the publish path does not allocate for the destination list.
    scratch: Vec<LinkId>,
    frame_buf: BytesMut,
    /// Publishes forwarded (one per destination node).
    sent: u64,
    /// Publishes received from other nodes.
    received: u64,
    /// Forwards that could not be sent or were dropped from a buffer.
    drops: u64,
}

impl Streams {
    /// `(forwards sent, forwards received, forward drops)`.
    pub(super) fn counters(&self) -> (u64, u64, u64) {
        (self.sent, self.received, self.drops)
    }

    /// QoS >= 1 forwards kept until acknowledged, over all nodes.
    pub(super) fn unacked(&self) -> u64 {
        self.outs.values().map(|o| o.unacked.len() as u64).sum()
    }

    /// Whether a QoS >= 1 forward to one of `nodes` still awaits its ack.
    pub(super) fn awaiting_ack<'a>(&self, mut nodes: impl Iterator<Item = &'a NodeName>) -> bool {
        nodes.any(|node| self.outs.get(node).is_some_and(|o| !o.unacked.is_empty()))
    }

    /// The nodes with an out stream (linked, or down and buffered), in order.
    pub(super) fn nodes(&self) -> impl Iterator<Item = &NodeName> {
        self.outs.keys()
    }

    /// A publish from a local client (or a will): one copy to every other node with a matching
    /// route in `routes` (every linked node when it is retained). Returns the number of nodes
    /// it went to (buffered for a node whose link is down included).
    pub(super) fn forward(
        &mut self,
        publish: &ForwardRef<'_>,
        routes: &RouteTable,
        links: &Links,
        out: &mut Outbox,
    ) -> usize {
        let peers = links.peers();
        if peers.is_empty() && routes.is_empty() {
            return 0;
        }
        let reliable = publish.qos > 0;
        let mut dest = std::mem::take(&mut self.scratch);
        dest.clear();
        let mut buffered = 0;
        if publish.retain {
            dest.extend(peers.values().copied());
        } else {
            let outs = &self.outs;
            let mut drops = 0;
            let mut down: Option<Vec<NodeName>> = None;
            routes.for_each_node(publish.topic, |node| match peers.get(node) {
                Some(&link) => dest.push(link),
                None if reliable && outs.get(node).is_some_and(|o| o.down_since.is_some()) => {
                    let down = down.get_or_insert_with(Vec::new);
                    if !down.contains(node) {
                        down.push(node.clone());
                    }
                }
                None => drops += 1,
            });
            self.drops += drops;
            for node in down.into_iter().flatten() {
                buffered += usize::from(self.numbered(&node, None, publish, out));
            }
        }
        dest.sort_unstable();
        dest.dedup();
        let mut sent = 0;
        if reliable {
            for &link in &dest {
                let Some(peer) = links.up_peer(link) else {
                    continue;
                };
                sent += usize::from(self.numbered(peer, Some(link), publish, out));
            }
        } else if !dest.is_empty() {
            let frame = wire::encode_forward(publish, &mut self.frame_buf);
            for &link in &dest {
                out.send_frame(link, frame.clone());
            }
            sent = dest.len();
        }
        self.sent += sent as u64;
        self.scratch = dest;
        sent + buffered
    }

    /// Numbers a QoS >= 1 forward for `peer`, keeps it until acknowledged, and sends it on
    /// `link` unless the stream is paused (link down or awaiting `Resume`). False when the
    /// buffer is full and the forward is dropped.
    fn numbered(
        &mut self,
        peer: &NodeName,
        link: Option<LinkId>,
        publish: &ForwardRef<'_>,
        out: &mut Outbox,
    ) -> bool {
        let Some(stream) = self.outs.get_mut(peer) else {
            self.drops += 1;
            return false;
        };
        let seq = stream.last_seq + 1;
        let frame = wire::encode_forward_seq(publish, seq, &mut self.frame_buf);
        if stream.full(frame.len()) {
            self.drops += 1;
            return false;
        }
        stream.last_seq = seq;
        stream.bytes += frame.len();
        stream.unacked.push_back((seq, frame.clone()));
        if let Some(link) = link.filter(|_| !stream.paused) {
            out.send_frame(link, frame);
        }
        true
    }

    /// A link to `peer` (at `incarnation`) is up: pause our numbered forwards until its
    /// `Resume`, and tell it what we got from it.
    pub(super) fn link_up(
        &mut self,
        link: LinkId,
        peer: &NodeName,
        incarnation: u64,
        out: &mut Outbox,
    ) {
        let stream = self.outs.entry(peer.clone()).or_default();
        if stream.incarnation != incarnation {
            // A restarted node: the sessions the buffer was for are gone; number afresh.
            let dropped = stream.drop_all();
            stream.incarnation = incarnation;
            stream.last_seq = 0;
            self.drops += dropped;
            if dropped > 0 {
                tracing::info!(peer = %peer, dropped, "node restarted; dropping its buffered forwards");
            }
        }
        stream.paused = true;
        stream.down_since = None;
        let inbound = self.ins.entry(peer.clone()).or_default();
        if inbound.incarnation != incarnation {
            *inbound = InStream {
                incarnation,
                ..InStream::default()
            };
        }
        inbound.acked = inbound.received;
        let received = inbound.received;
        out.send(link, &LinkMessage::Resume { received });
    }

    /// `peer`'s link went down at `now` but it is still a member: keep its forwards (and, at the
    /// caller, its routes) for the buffer window.
    pub(super) fn link_down(&mut self, peer: &NodeName, now: Duration) {
        let stream = self.outs.entry(peer.clone()).or_default();
        stream.paused = true;
        stream.down_since = Some(now);
        tracing::info!(peer = %peer, buffered = stream.unacked.len(), "node is down; buffering its QoS >= 1 forwards");
    }

    /// Drops `peer`'s streams (it left, was removed, or stayed away too long), counting what
    /// was buffered as dropped.
    pub(super) fn forget(&mut self, peer: &NodeName) {
        if let Some(mut stream) = self.outs.remove(peer) {
            let dropped = stream.drop_all();
            self.drops += dropped;
            if dropped > 0 {
                tracing::warn!(peer = %peer, dropped, "dropping buffered QoS >= 1 forwards");
            }
        }
        self.ins.remove(peer);
    }

    /// `peer` told us what it has: drop that, send the rest in order, then resume sending.
    pub(super) fn resume(
        &mut self,
        link: LinkId,
        peer: &NodeName,
        received: u64,
        out: &mut Outbox,
    ) {
        let Some(stream) = self.outs.get_mut(peer) else {
            return;
        };
        stream.acked(received);
        stream.paused = false;
        if !stream.unacked.is_empty() {
            tracing::info!(peer = %peer, resent = stream.unacked.len(), "resending unacknowledged forwards");
        }
        for (_, frame) in &stream.unacked {
            out.send_frame(link, frame.clone());
        }
    }

    /// `peer` acknowledged everything up to `upto`.
    pub(super) fn acked(&mut self, peer: &NodeName, upto: u64) {
        if let Some(stream) = self.outs.get_mut(peer) {
            stream.acked(upto);
        }
    }

    /// An unnumbered (QoS 0) forward: deliver it.
    pub(super) fn received(&mut self, publish: ForwardedPublish, out: &mut Outbox) {
        self.received += 1;
        out.push(ClusterAction::Deliver(publish));
    }

    /// A numbered forward from `peer`: deliver it unless we already did; acknowledge every
    /// `ACK_EVERY`.
    pub(super) fn received_numbered(
        &mut self,
        link: LinkId,
        peer: &NodeName,
        seq: u64,
        publish: ForwardedPublish,
        out: &mut Outbox,
    ) {
        let Some(inbound) = self.ins.get_mut(peer) else {
            return;
        };
        if seq <= inbound.received {
            tracing::debug!(peer = %peer, seq, "duplicate forward ignored");
            return;
        }
        inbound.received = seq;
        let ack = inbound.take_ack(ACK_EVERY);
        self.received += 1;
        out.push(ClusterAction::Deliver(publish));
        if let Some(upto) = ack {
            out.send(link, &LinkMessage::Ack(upto));
        }
    }

    /// A heartbeat goes to `peer`: the ack to send with it, if anything arrived since the last.
    pub(super) fn heartbeat_ack(&mut self, peer: &NodeName) -> Option<u64> {
        self.ins.get_mut(peer).and_then(|i| i.take_ack(1))
    }

    /// The earliest end of a buffer window.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        self.outs
            .values()
            .filter_map(|o| o.down_since.map(|at| at + FORWARD_BUFFER_WINDOW))
            .min()
    }

    /// Forgets the streams of nodes down for the whole buffer window at `now`; returns them (the
    /// caller purges their routes).
    pub(super) fn handle_timeout(&mut self, now: Duration) -> Vec<NodeName> {
        let expired: Vec<NodeName> = self
            .outs
            .iter()
            .filter(|(_, o)| {
                o.down_since
                    .is_some_and(|at| at + FORWARD_BUFFER_WINDOW <= now)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for node in &expired {
            self.forget(node);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn publish(payload: &[u8]) -> ForwardRef<'_> {
        ForwardRef {
            topic: "t",
            payload,
            qos: 1,
            retain: false,
            expiry: None,
            payload_format_indicator: None,
            response_topic: None,
            correlation_data: None,
            user_properties: wire::UserProps(&[]),
            content_type: None,
            retain_version: None,
        }
    }

    fn delivered() -> ForwardedPublish {
        ForwardedPublish {
            topic: "t".into(),
            payload: Vec::new(),
            qos: 1,
            retain: false,
            expiry: None,
            payload_format_indicator: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            content_type: None,
            retain_version: None,
        }
    }

    /// The numbers of the `ForwardSeq` frames and the `Resume` / `Ack` values `out` holds.
    fn sent(out: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| out.pop())
            .filter_map(|a| match a {
                ClusterAction::Send { frame, .. } => Some(frame),
                _ => None,
            })
            .map(
                |frame| match wire::decode(&frame[wire::LENGTH_PREFIX..]).unwrap() {
                    LinkMessage::ForwardSeq { seq, .. } => format!("seq {seq}"),
                    LinkMessage::Resume { received } => format!("resume {received}"),
                    LinkMessage::Ack(upto) => format!("ack {upto}"),
                    other => other.name().to_owned(),
                },
            )
            .collect()
    }

    #[test]
    fn forwards_are_numbered_kept_until_acked_and_resent_after_resume() {
        let n2 = name("n2@10.0.0.2");
        let (link, mut out) = (LinkId(1), Outbox::default());
        let mut s = Streams::default();
        s.link_up(link, &n2, 7, &mut out);
        assert_eq!(sent(&mut out), ["resume 0"]);
        // Paused until the peer's Resume: kept, not sent.
        assert!(s.numbered(&n2, Some(link), &publish(b"1"), &mut out));
        assert!(sent(&mut out).is_empty());
        s.resume(link, &n2, 0, &mut out);
        assert_eq!(sent(&mut out), ["seq 1"]);
        assert!(s.numbered(&n2, Some(link), &publish(b"2"), &mut out));
        assert!(s.numbered(&n2, Some(link), &publish(b"3"), &mut out));
        assert_eq!(sent(&mut out), ["seq 2", "seq 3"]);
        s.acked(&n2, 2);
        assert_eq!(s.unacked(), 1);
        // Down, then up again at the same incarnation: the peer says it has 2, 3 is resent.
        s.link_down(&n2, Duration::from_secs(1));
        assert_eq!(
            s.poll_timeout(),
            Some(Duration::from_secs(1) + FORWARD_BUFFER_WINDOW)
        );
        s.link_up(link, &n2, 7, &mut out);
        assert_eq!(s.poll_timeout(), None);
        s.resume(link, &n2, 2, &mut out);
        assert_eq!(sent(&mut out), ["resume 0", "seq 3"]);
        // A restart (new incarnation) numbers afresh and drops the buffer.
        s.link_up(link, &n2, 8, &mut out);
        assert_eq!(s.unacked(), 0);
        assert_eq!(s.counters().2, 1, "one buffered forward dropped");
        s.resume(link, &n2, 0, &mut out);
        assert!(s.numbered(&n2, Some(link), &publish(b"4"), &mut out));
        assert_eq!(sent(&mut out), ["resume 0", "seq 1"]);
    }

    #[test]
    fn received_forwards_are_delivered_once_and_acked_every_so_often() {
        let n2 = name("n2@10.0.0.2");
        let (link, mut out) = (LinkId(1), Outbox::default());
        let mut s = Streams::default();
        s.link_up(link, &n2, 7, &mut out);
        let _ = sent(&mut out);
        let fwd = delivered();
        for seq in 1..=ACK_EVERY {
            s.received_numbered(link, &n2, seq, fwd.clone(), &mut out);
        }
        s.received_numbered(link, &n2, 3, fwd.clone(), &mut out);
        assert_eq!(s.counters().1, ACK_EVERY, "the duplicate is not delivered");
        let acks: Vec<String> = sent(&mut out);
        assert_eq!(acks, [format!("ack {ACK_EVERY}")]);
        assert_eq!(s.heartbeat_ack(&n2), None, "nothing new since");
        s.received_numbered(link, &n2, ACK_EVERY + 1, fwd, &mut out);
        assert_eq!(s.heartbeat_ack(&n2), Some(ACK_EVERY + 1));
    }

    #[test]
    fn a_buffer_window_that_runs_out_forgets_the_node() {
        let n2 = name("n2@10.0.0.2");
        let mut s = Streams::default();
        s.link_up(LinkId(1), &n2, 7, &mut Outbox::default());
        s.link_down(&n2, Duration::ZERO);
        assert!(
            s.handle_timeout(FORWARD_BUFFER_WINDOW - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(s.handle_timeout(FORWARD_BUFFER_WINDOW), vec![n2.clone()]);
        assert_eq!(s.nodes().count(), 0);
        assert_eq!(s.poll_timeout(), None);
    }
}
