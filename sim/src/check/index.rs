//! [`HistoryIndex`]: the recorded history walked once and indexed for the checkers — publishes,
//! session incarnations, deliveries, connections, crashes, node samples and the plain counters.
//! Every record keeps what was known at its moment (the history is in simulation order).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Ctx, Stats, workload_matches, workload_of};
use crate::history::{ClientIdx, ClusterView, Event, History, MsgId, NodeSample, TopicId};
use crate::scenario::SessionKind;

/// A published message as the checker sees it.
pub struct Pub {
    pub t: Duration,
    pub topic: TopicId,
    pub qos: u8,
    pub node: u32,
    /// The first successful PUBACK/PUBREC.
    pub acked: Option<Duration>,
}

/// One session incarnation of a client: from a CONNACK without session until the session is
/// known to be gone (clean session: the disconnect; persistent: the next CONNACK without session).
pub struct Incarnation {
    pub begin: Duration,
    pub end: Option<Duration>,
    /// The first SUBACK in this incarnation.
    pub subscribed_at: Option<Duration>,
    /// The latest SUBACK's codes.
    pub granted: Vec<u8>,
    pub node: u32,
}

/// One delivery of a published message to a subscriber whose filters match it.
pub struct Delivery {
    pub t: Duration,
    pub qos: u8,
}

/// An accepted CONNACK.
pub struct Connack {
    /// Position in the history (orders violations of different checkers).
    pub seq: usize,
    pub t: Duration,
    pub client: ClientIdx,
    /// Whether the CONNECT it answers asked for a clean start.
    pub clean_start: bool,
    pub session_present: bool,
}

/// A SUBACK.
pub struct Suback<'a> {
    pub seq: usize,
    pub t: Duration,
    pub client: ClientIdx,
    pub granted: &'a [u8],
}

/// A node that could not start.
pub struct NodeFailure<'a> {
    pub seq: usize,
    pub t: Duration,
    pub node: u32,
    pub why: &'a str,
}

/// Every `Delivered` event, with what was known when it arrived.
pub struct DeliveryEvent {
    pub seq: usize,
    pub t: Duration,
    pub client: ClientIdx,
    pub conn: u32,
    /// `None`: the payload is not a simulated message id.
    pub msg: Option<MsgId>,
    pub topic: TopicId,
    pub qos: u8,
    /// The message's publish (topic, QoS, node) if it was published by then.
    pub publish: Option<(TopicId, u8, u32)>,
    /// The highest QoS (<= 2) granted in the client's latest incarnation by then.
    pub granted: Option<u8>,
    /// The node of the connection it came on (0: unknown connection).
    pub node: u32,
    /// Published, and the receiver is a subscriber with a matching filter: it counts in
    /// [`HistoryIndex::deliveries`].
    pub accepted: bool,
    /// The first accepted delivery of this message to this client.
    pub first: bool,
}

/// A node sample (`None`: not running or no answer).
pub struct SampleAt<'a> {
    pub t: Duration,
    pub node: u32,
    pub sample: Option<&'a NodeSample>,
}

impl<'a> SampleAt<'a> {
    /// The node's cluster view, when it answered and reports one.
    pub fn view(&self) -> Option<&'a ClusterView> {
        self.sample.and_then(|s| s.cluster.as_ref())
    }
}

/// The history, indexed once for every checker.
pub struct HistoryIndex<'a> {
    pub history: &'a History,
    pub publishes: BTreeMap<MsgId, Pub>,
    /// Per client (roster index): its session incarnations in order.
    pub incarnations: Vec<Vec<Incarnation>>,
    /// Per (client, message): the accepted deliveries in order.
    pub deliveries: BTreeMap<(ClientIdx, MsgId), Vec<Delivery>>,
    pub delivery_events: Vec<DeliveryEvent>,
    pub connacks: Vec<Connack>,
    pub subacks: Vec<Suback<'a>>,
    pub node_failures: Vec<NodeFailure<'a>>,
    /// (time, node) of every crash.
    pub crashes: Vec<(Duration, u32)>,
    pub samples: Vec<SampleAt<'a>>,
    /// The last ack, PUBCOMP or delivery.
    pub last_activity: Duration,
    /// The counters of [`Stats`] that are plain counts (the checkers fill in the rest).
    pub counts: Stats,
}

impl<'a> HistoryIndex<'a> {
    /// Walks `history` once.
    pub fn build(history: &'a History, ctx: &Ctx<'_>) -> HistoryIndex<'a> {
        let clients = ctx.recorded.shared.roster.len();
        let mut builder = Builder {
            index: HistoryIndex {
                history,
                publishes: BTreeMap::new(),
                incarnations: (0..clients).map(|_| Vec::new()).collect(),
                deliveries: BTreeMap::new(),
                delivery_events: Vec::new(),
                connacks: Vec::new(),
                subacks: Vec::new(),
                node_failures: Vec::new(),
                crashes: Vec::new(),
                samples: Vec::new(),
                last_activity: Duration::ZERO,
                counts: Stats::default(),
            },
            last_clean_start: vec![true; clients],
            conn_node: BTreeMap::new(),
        };
        for (seq, (t, event)) in history.events().iter().enumerate() {
            builder.event(ctx, seq, *t, event);
        }
        let mut index = builder.index;
        index.counts.qos1_duplicates = index
            .deliveries
            .values()
            .filter(|list| list.iter().all(|d| d.qos == 1))
            .map(|list| list.len() as u64 - 1)
            .sum();
        index
    }

    /// The name of an interned topic.
    pub fn topic(&self, topic: TopicId) -> &'a str {
        self.history.topic(topic)
    }

    /// When `client` first got an accepted delivery of `msg`.
    pub fn first_delivery(&self, client: ClientIdx, msg: &MsgId) -> Option<Duration> {
        self.deliveries
            .get(&(client, *msg))
            .and_then(|l| l.first())
            .map(|d| d.t)
    }
}

/// The walk's state beyond the index itself.
struct Builder<'a> {
    index: HistoryIndex<'a>,
    /// Per client: whether its latest CONNECT asked for a clean start.
    last_clean_start: Vec<bool>,
    /// (client, connection number) -> node.
    conn_node: BTreeMap<(ClientIdx, u32), u32>,
}

impl<'a> Builder<'a> {
    fn event(&mut self, ctx: &Ctx<'_>, seq: usize, t: Duration, event: &'a Event) {
        let counts = &mut self.index.counts;
        match event {
            Event::ConnectAttempt {
                client,
                clean_start,
                ..
            } => {
                if let Some(c) = self.last_clean_start.get_mut(*client as usize) {
                    *c = *clean_start;
                }
            }
            Event::ConnectFailed { .. } => counts.connect_failures += 1,
            Event::Connected {
                client,
                node,
                conn,
                session_present,
            } => self.connected(seq, t, (*client, *conn, *node), *session_present),
            Event::Subscribed { client, granted } => self.subscribed(seq, t, *client, granted),
            Event::Disconnected { client, .. } => self.disconnected(ctx, t, *client),
            Event::Published {
                msg,
                topic,
                qos,
                node,
                ..
            } => self.published(t, *msg, *topic, *qos, *node),
            Event::Acked { msg, .. } => {
                counts.acked += 1;
                self.index.last_activity = self.index.last_activity.max(t);
                if let Some(p) = self.index.publishes.get_mut(msg) {
                    p.acked.get_or_insert(t);
                }
            }
            Event::Rejected { .. } => counts.rejected += 1,
            Event::Completed { .. } => self.index.last_activity = self.index.last_activity.max(t),
            Event::Abandoned { .. } => counts.abandoned += 1,
            Event::Delivered { .. } => self.delivered(ctx, seq, t, event),
            Event::NodeStarted { .. } => counts.node_starts += 1,
            Event::NodeCrashed { node } => {
                counts.crashes += 1;
                self.index.crashes.push((t, *node));
            }
            Event::NodeFailed { node, why } => self.index.node_failures.push(NodeFailure {
                seq,
                t,
                node: *node,
                why,
            }),
            Event::Fault { .. } => counts.faults += 1,
            Event::Sample { node, sample } => self.index.samples.push(SampleAt {
                t,
                node: *node,
                sample: sample.as_ref(),
            }),
            Event::LivenessPhase => {}
        }
    }

    /// A CONNACK: a new incarnation unless it resumed a session.
    fn connected(
        &mut self,
        seq: usize,
        t: Duration,
        (client, conn, node): (ClientIdx, u32, u32),
        session_present: bool,
    ) {
        self.index.counts.connections += 1;
        self.conn_node.insert((client, conn), node);
        let clean_start = self
            .last_clean_start
            .get(client as usize)
            .copied()
            .unwrap_or(true);
        self.index.connacks.push(Connack {
            seq,
            t,
            client,
            clean_start,
            session_present,
        });
        let Some(list) = self.index.incarnations.get_mut(client as usize) else {
            return;
        };
        if !session_present || list.is_empty() {
            if let Some(last) = list.last_mut() {
                last.end.get_or_insert(t);
            }
            list.push(Incarnation {
                begin: t,
                end: None,
                subscribed_at: None,
                granted: Vec::new(),
                node,
            });
        }
    }

    fn subscribed(&mut self, seq: usize, t: Duration, client: ClientIdx, granted: &'a [u8]) {
        self.index.subacks.push(Suback {
            seq,
            t,
            client,
            granted,
        });
        let latest = self.index.incarnations.get_mut(client as usize);
        if let Some(inc) = latest.and_then(|l| l.last_mut()) {
            inc.subscribed_at.get_or_insert(t);
            inc.granted = granted.to_vec();
        }
    }

    /// A clean session ends with its connection.
    fn disconnected(&mut self, ctx: &Ctx<'_>, t: Duration, client: ClientIdx) {
        self.index.counts.disconnects += 1;
        let clean = workload_of(ctx, client).is_some_and(|(_, w)| w.session == SessionKind::Clean);
        let latest = self.index.incarnations.get_mut(client as usize);
        if clean && let Some(inc) = latest.and_then(|l| l.last_mut()) {
            inc.end.get_or_insert(t);
        }
    }

    fn published(&mut self, t: Duration, msg: MsgId, topic: TopicId, qos: u8, node: u32) {
        if let Some(n) = self.index.counts.published.get_mut(usize::from(qos)) {
            *n += 1;
        }
        let p = Pub {
            t,
            topic,
            qos,
            node,
            acked: None,
        };
        self.index.publishes.insert(msg, p);
    }

    fn delivered(&mut self, ctx: &Ctx<'_>, seq: usize, t: Duration, event: &Event) {
        let Event::Delivered {
            client,
            conn,
            msg,
            topic,
            qos,
            ..
        } = *event
        else {
            return;
        };
        let index = &mut self.index;
        index.last_activity = index.last_activity.max(t);
        if let Some(n) = index.counts.delivered.get_mut(usize::from(qos)) {
            *n += 1;
        }
        let publish = msg
            .and_then(|m| index.publishes.get(&m))
            .map(|p| (p.topic, p.qos, p.node));
        let matching = workload_of(ctx, client)
            .is_some_and(|(spec, w)| !spec.publisher && workload_matches(w, index.topic(topic)));
        let accepted = publish.is_some() && matching;
        let msg_key = msg.filter(|_| accepted);
        let first = msg_key.is_some_and(|m| !index.deliveries.contains_key(&(client, m)));
        if let Some(m) = msg_key {
            let list = index.deliveries.entry((client, m)).or_default();
            list.push(Delivery { t, qos });
        }
        let granted = index
            .incarnations
            .get(client as usize)
            .and_then(|l| l.last())
            .and_then(|i| i.granted.iter().copied().filter(|g| *g <= 2).max());
        index.delivery_events.push(DeliveryEvent {
            seq,
            t,
            client,
            conn,
            msg,
            topic,
            qos,
            publish,
            granted,
            node: self.conn_node.get(&(client, conn)).copied().unwrap_or(0),
            accepted,
            first,
        });
    }
}
