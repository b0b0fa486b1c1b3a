//! Sessions: what the broker remembers about one client id across connections — subscriptions
//! (names only; the tries hold the options), the outbound queue and in-flight window, inbound
//! QoS 2 ids, the will — plus the per-connection link used to write PUBLISHes (receive maximum,
//! maximum packet size, server -> client topic aliases).
//!
//! A session never touches another session, the tries or the timers; the broker core does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use super::inflight::{Inflight, InflightEntry, OutState};
use super::{Action, BrokerConfig, BrokerMetrics, ConnId};
use crate::codec::{
    self, Ack, LastWill, Packet, Protocol, Publish, PublishProperties, QoS, ReasonCode,
};

/// Index of a session in the slab; also the key of its trie entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SessionKey(pub(crate) u32);

/// Subscription options stored in the tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubOptions {
    /// Granted QoS (already capped by `max_qos`).
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub sub_id: Option<u32>,
}

/// A published application message, shared by every delivery of it.
#[derive(Debug)]
pub(crate) struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Absolute time (since node start) after which it must not be sent any more.
    pub expires_at: Option<Duration>,
    /// The publisher's properties minus the per-hop ones (alias, expiry, subscription ids).
    pub properties: PublishProperties,
}

impl Message {
    /// Turns an inbound PUBLISH (topic already resolved) into a message.
    pub fn from_publish(p: Publish, now: Duration) -> Message {
        let mut properties = p.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| now + Duration::from_secs(u64::from(s)));
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            expires_at,
            properties,
        }
    }

    /// Turns a will into the message it publishes.
    pub fn from_will(will: LastWill, now: Duration) -> Message {
        let w = will.properties;
        Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            expires_at: w
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s))),
            properties: PublishProperties {
                payload_format_indicator: w.payload_format_indicator,
                response_topic: w.response_topic,
                correlation_data: w.correlation_data,
                user_properties: w.user_properties,
                content_type: w.content_type,
                ..PublishProperties::default()
            },
        }
    }

    /// Whether its expiry has passed.
    pub fn expired(&self, now: Duration) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Seconds left, rounded up, at least 1 (a delivery already under way is finished).
    pub fn remaining_expiry(&self, now: Duration) -> Option<u32> {
        let left = self.expires_at?.saturating_sub(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
    }

    #[cfg(test)]
    pub fn for_test(topic: &'static str, qos: QoS) -> Message {
        Message {
            topic: ByteString::from_static(topic),
            payload: Bytes::from_static(b"x"),
            qos,
            retain: false,
            expires_at: None,
            properties: PublishProperties::default(),
        }
    }
}

/// One message on its way to one session, with the per-subscriber QoS, retain flag and
/// subscription identifiers.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// The shared subscription (group, inner filter) that chose this session, if any: when the
    /// session ends before the client has the message, another member of the group gets it.
    pub shared: Option<(ByteString, ByteString)>,
    /// A retained message sent because of a SUBSCRIBE: it waits in the queue outside
    /// `max_queued_messages` (its own bound is the retained store's size), so a subscription that
    /// matches many retained messages gets all of them, paced by what the client reads.
    pub from_store: bool,
}

/// Where the broker's output goes: actions for the driver and the counters.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub actions: VecDeque<Action>,
    pub metrics: BrokerMetrics,
    /// Set by the driver while the node's unwritten output is over `mqtt.output_budget`: QoS 0
    /// messages for paused connections are then dropped instead of queued.
    pub congested: bool,
}

impl Outbox {
    fn dropped(&mut self, qos: QoS) {
        self.metrics.messages_dropped[qos as usize] += 1;
    }
}

/// The live connection of a session and the client's limits announced in its CONNECT.
#[derive(Debug)]
pub(crate) struct Link {
    pub conn: ConnId,
    pub protocol: Protocol,
    /// The client's Receive Maximum (65535 when absent).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub max_packet_size: Option<u32>,
    /// The client's Topic Alias Maximum (server -> client aliases).
    pub alias_max: u16,
    /// Server -> client aliases assigned on this connection.
    pub aliases: BTreeMap<ByteString, u16>,
    /// Bytes of topic held by `aliases` (bounded by `alias_budget`).
    pub alias_bytes: usize,
    /// `mqtt.max_topic_alias_bytes`: no new outbound alias once `alias_bytes` would pass it.
    pub alias_budget: usize,
    /// Whether a retry timer is armed for this connection.
    pub retry_armed: bool,
    /// PUBLISH bytes handed to the connection since it last reported everything written.
    pub unwritten: usize,
    /// `unwritten` at which the link pauses (`BrokerConfig::conn_output_window`).
    pub output_window: usize,
    /// Paused: no new PUBLISH goes out until the driver reports the connection drained
    /// (`Broker::connection_drained`); deliveries wait in the session queue meanwhile.
    pub paused: bool,
}

impl Link {
    /// Writes a PUBLISH unless it exceeds the client's Maximum Packet Size (then it is dropped
    /// and counted, and `false` returned). The size checked is the packet as written, outbound
    /// topic alias included: a new alias adds its property to the whole topic, so a packet that
    /// only the new alias makes too large goes without it; a dropped packet never consumes an
    /// alias.
    fn send_publish(&mut self, mut publish: Publish, out: &mut Outbox) -> bool {
        let qos = publish.qos;
        let mut new_alias = None;
        match self.alias_for(&publish.topic) {
            Some((alias, false)) => {
                publish.properties.topic_alias = Some(alias);
                publish.topic = ByteString::new();
            }
            Some((alias, true)) => {
                publish.properties.topic_alias = Some(alias);
                new_alias = Some(alias);
            }
            None => {}
        }
        let mut packet = Packet::Publish(publish);
        let mut fits = self.fits(&packet);
        if !fits && new_alias.is_some() {
            if let Packet::Publish(p) = &mut packet {
                p.properties.topic_alias = None;
            }
            new_alias = None;
            fits = self.fits(&packet);
        }
        if !fits {
            tracing::debug!(conn = ?self.conn, "PUBLISH exceeds the client's maximum packet size");
            out.dropped(qos);
            return false;
        }
        let mut size = 0;
        if let Packet::Publish(p) = &packet {
            if let Some(alias) = new_alias {
                // A copy, so the alias table does not pin the publisher's whole frame.
                self.aliases.insert(ByteString::from(&*p.topic), alias);
                self.alias_bytes += p.topic.len();
            }
            // An estimate (properties aside) is enough for pacing; exact sizes cost an encode.
            size = PUBLISH_OVERHEAD + p.topic.len() + p.payload.len();
        }
        out.metrics.messages_out[qos as usize] += 1;
        out.actions.push_back(Action::Send {
            conn: self.conn,
            protocol: self.protocol,
            packet,
        });
        self.unwritten += size;
        if self.unwritten >= self.output_window && !self.paused {
            self.paused = true;
            out.actions
                .push_back(Action::NotifyDrained { conn: self.conn });
        }
        true
    }

    /// Whether `packet` fits the client's Maximum Packet Size.
    fn fits(&self, packet: &Packet) -> bool {
        self.max_packet_size
            .is_none_or(|max| codec::encoded_len(packet, self.protocol) <= max as usize)
    }

    /// The outbound alias for `topic`: an existing one (`false`), or a new one (`true`) if the
    /// table has room; `None` without aliases. Nothing is recorded here.
    fn alias_for(&self, topic: &str) -> Option<(u16, bool)> {
        if self.alias_max == 0 {
            return None;
        }
        if let Some(&alias) = self.aliases.get(topic) {
            return Some((alias, false));
        }
        (self.aliases.len() < usize::from(self.alias_max)
            && self.alias_bytes + topic.len() <= self.alias_budget)
            .then(|| (self.aliases.len() as u16 + 1, true))
    }

    fn send(&self, packet: Packet, out: &mut Outbox) {
        out.actions.push_back(Action::Send {
            conn: self.conn,
            protocol: self.protocol,
            packet,
        });
    }
}

/// Bytes counted per PUBLISH on top of its topic and payload when pacing a connection.
const PUBLISH_OVERHEAD: usize = 16;

/// Builds the PUBLISH for one delivery (MQTT 5 properties only for MQTT 5 clients).
fn build_publish(
    d: &Delivery,
    packet_id: Option<u16>,
    dup: bool,
    protocol: Protocol,
    now: Duration,
) -> Publish {
    let properties = if protocol.is_v5() {
        let m = &d.msg.properties;
        PublishProperties {
            payload_format_indicator: m.payload_format_indicator,
            message_expiry_interval: d.msg.remaining_expiry(now),
            topic_alias: None,
            response_topic: m.response_topic.clone(),
            correlation_data: m.correlation_data.clone(),
            user_properties: m.user_properties.clone(),
            subscription_identifiers: d.sub_ids.clone(),
            content_type: m.content_type.clone(),
        }
    } else {
        PublishProperties::default()
    };
    Publish {
        dup,
        qos: d.qos,
        retain: d.retain,
        topic: d.msg.topic.clone(),
        packet_id,
        payload: d.msg.payload.clone(),
        properties,
    }
}

/// Everything remembered for one client id.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: ByteString,
    /// Changes on every attach/detach; timers naming an old epoch are stale.
    pub epoch: u64,
    pub link: Option<Link>,
    pub protocol: Protocol,
    pub clean_start: bool,
    pub keep_alive: u16,
    /// Seconds the session outlives its connection (`u32::MAX` = forever).
    pub expiry_interval: u32,
    /// Filters as the client wrote them (`$share/...` included).
    pub subscriptions: BTreeSet<ByteString>,
    pub inflight: Inflight,
    /// Messages waiting for the window or a paused link (online) or for the client (offline).
    pub queue: VecDeque<Delivery>,
    /// How many of `queue` are retained messages sent because of a SUBSCRIBE (`from_store`).
    pub stored_queued: usize,
    /// When the full queue was last purged of expired messages.
    purged_at: Option<Duration>,
    /// Inbound QoS 2 packet ids delivered but not yet released by PUBREL. Bounded by the
    /// Receive Maximum for MQTT 5 clients, by the 16-bit packet id space for 3.1.x ones.
    pub incoming_qos2: BTreeSet<u16>,
    /// The will of the current (or, during will delay, the last) connection.
    pub will: Option<LastWill>,
}

impl Session {
    /// A fresh, empty, detached session.
    pub fn new(client_id: ByteString) -> Session {
        Session {
            client_id,
            epoch: 0,
            link: None,
            protocol: Protocol::V311,
            clean_start: true,
            keep_alive: 0,
            expiry_interval: 0,
            subscriptions: BTreeSet::new(),
            inflight: Inflight::default(),
            queue: VecDeque::new(),
            stored_queued: 0,
            purged_at: None,
            incoming_qos2: BTreeSet::new(),
            will: None,
        }
    }

    fn window(&self, cfg: &BrokerConfig) -> usize {
        let client = self.link.as_ref().map_or(u16::MAX, |l| l.receive_maximum);
        usize::from(client.min(cfg.max_inflight).max(1))
    }

    /// Hands one message to this session: sent now if connected, not paused and the window
    /// allows, else queued (QoS 0 only while online and the node is not congested), else dropped.
    pub fn deliver(&mut self, d: Delivery, cfg: &BrokerConfig, out: &mut Outbox, now: Duration) {
        let Some(link) = self.link.as_mut() else {
            if d.qos == QoS::AtMostOnce {
                out.dropped(d.qos);
            } else {
                self.enqueue(d, cfg, out, now);
            }
            return;
        };
        if link.paused {
            if d.qos == QoS::AtMostOnce && out.congested {
                // The node holds too much unwritten output: QoS 0 for a client that is not
                // keeping up goes first.
                out.dropped(d.qos);
            } else {
                self.enqueue(d, cfg, out, now);
            }
            return;
        }
        if d.qos == QoS::AtMostOnce {
            let p = build_publish(&d, None, false, link.protocol, now);
            link.send_publish(p, out);
            return;
        }
        if !self.queue.is_empty() || self.inflight.len() >= self.window(cfg) {
            self.enqueue(d, cfg, out, now);
            return;
        }
        self.send_new(d, out, now);
    }

    /// Hands a retained message matched by a SUBSCRIBE to this session: like `deliver`, but when
    /// it has to wait it is queued outside `max_queued_messages`, up to `limit` such messages.
    pub fn deliver_stored(
        &mut self,
        mut d: Delivery,
        limit: usize,
        cfg: &BrokerConfig,
        out: &mut Outbox,
        now: Duration,
    ) {
        d.from_store = true;
        let must_wait = match &self.link {
            None => true,
            Some(link) if link.paused => true,
            Some(_) if d.qos == QoS::AtMostOnce => false,
            Some(_) => !self.queue.is_empty() || self.inflight.len() >= self.window(cfg),
        };
        if !must_wait {
            return self.deliver(d, cfg, out, now);
        }
        if self.stored_queued >= limit {
            tracing::debug!(client_id = %self.client_id, "retained backlog full, message dropped");
            out.dropped(d.qos);
            return;
        }
        self.stored_queued += 1;
        self.queue.push_back(d);
    }

    fn enqueue(&mut self, d: Delivery, cfg: &BrokerConfig, out: &mut Outbox, now: Duration) {
        if self.queue.len() - self.stored_queued >= cfg.max_queued_messages
            && self.purged_at != Some(now)
        {
            // Expired messages must not cost a fresh one its place. Once per instant: a flood
            // into a full queue must not rescan it for every message.
            self.purged_at = Some(now);
            self.queue.retain(|q| {
                let expired = q.msg.expired(now);
                if expired {
                    out.dropped(q.qos);
                }
                !expired
            });
            self.stored_queued = self.queue.iter().filter(|q| q.from_store).count();
        }
        if self.queue.len() - self.stored_queued >= cfg.max_queued_messages {
            tracing::debug!(client_id = %self.client_id, "queue full, message dropped");
            out.dropped(d.qos);
        } else {
            self.queue.push_back(d);
        }
    }

    /// Sends a QoS>0 message on the link and records it in flight.
    fn send_new(&mut self, d: Delivery, out: &mut Outbox, now: Duration) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let Some(packet_id) = self.inflight.next_packet_id() else {
            out.dropped(d.qos);
            return;
        };
        let p = build_publish(&d, Some(packet_id), false, link.protocol, now);
        if link.send_publish(p, out) {
            let state = match d.qos {
                QoS::ExactlyOnce => OutState::Qos2Sent,
                _ => OutState::Qos1Sent,
            };
            self.inflight.push(InflightEntry {
                packet_id,
                delivery: d,
                state,
                sent_at: now,
                resend: false,
            });
        }
    }

    /// Whether the session has a live link that may take another PUBLISH now.
    fn can_send(&self) -> bool {
        self.link.as_ref().is_some_and(|l| !l.paused)
    }

    /// Moves queued messages into the window while it has room and the link is not paused
    /// (dropping expired ones).
    pub fn pump(&mut self, cfg: &BrokerConfig, out: &mut Outbox, now: Duration) {
        let window = self.window(cfg);
        while self.can_send() && self.inflight.len() < window {
            let Some(d) = self.queue.pop_front() else {
                break;
            };
            if d.from_store {
                self.stored_queued -= 1;
            }
            if d.msg.expired(now) {
                out.dropped(d.qos);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                if let Some(link) = self.link.as_mut() {
                    let p = build_publish(&d, None, false, link.protocol, now);
                    link.send_publish(p, out);
                }
                continue;
            }
            self.send_new(d, out, now);
        }
    }

    /// Marks everything unacknowledged for a resend (PUBLISH with DUP, or PUBREL), with `now` as
    /// the new send time, and resends in first-send order as far as the link is not paused;
    /// `resend_marked` goes on when the connection has drained.
    pub fn resend_inflight(
        &mut self,
        out: &mut Outbox,
        now: Duration,
        only_older_than: Option<Duration>,
    ) {
        if self.link.is_none() {
            return;
        }
        for e in self.inflight.iter_mut() {
            if only_older_than.is_some_and(|limit| e.sent_at > limit) {
                continue;
            }
            // The retry timer counts from here even if the link is paused and the resend waits.
            e.sent_at = now;
            e.resend = true;
        }
        self.resend_marked(out, now);
    }

    /// Resends the entries marked by `resend_inflight` until the link pauses; entries too large
    /// for the client are dropped.
    fn resend_marked(&mut self, out: &mut Outbox, now: Duration) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut too_large = Vec::new();
        for e in self.inflight.iter_mut() {
            if !e.resend {
                continue;
            }
            if link.paused {
                break;
            }
            e.resend = false;
            match e.state {
                OutState::Qos1Sent | OutState::Qos2Sent => {
                    let p = build_publish(&e.delivery, Some(e.packet_id), true, link.protocol, now);
                    if !link.send_publish(p, out) {
                        too_large.push(e.packet_id);
                    }
                }
                OutState::Released => link.send(Packet::PubRel(Ack::new(e.packet_id)), out),
            }
        }
        for id in too_large {
            self.inflight.remove(id);
        }
    }

    /// The connection has written everything handed to it: the link resumes, first with the
    /// resends it still owes, then with the queue.
    pub fn on_drained(&mut self, cfg: &BrokerConfig, out: &mut Outbox, now: Duration) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.paused = false;
        link.unwritten = 0;
        self.resend_marked(out, now);
        self.pump(cfg, out, now);
    }

    /// PUBACK (for a QoS 1 message) or PUBCOMP (for a released QoS 2 message) from the client:
    /// that flow is over and its window slot goes to the next queued message. `expected` is the
    /// state the acknowledged entry must be in; an ack for another state is ignored.
    pub fn on_flow_complete(
        &mut self,
        packet_id: u16,
        expected: OutState,
        cfg: &BrokerConfig,
        out: &mut Outbox,
        now: Duration,
    ) {
        if self.inflight.complete(packet_id, expected).is_some() {
            self.pump(cfg, out, now);
        }
    }

    /// PUBREC from the client: answer PUBREL (or end the flow on an error code).
    pub fn on_pubrec(&mut self, ack: &Ack, cfg: &BrokerConfig, out: &mut Outbox, now: Duration) {
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let v5 = link.protocol.is_v5();
        match self.inflight.get_mut(ack.packet_id) {
            Some(e) if e.state == OutState::Qos2Sent && ack.reason_code.is_error() => {
                self.inflight.remove(ack.packet_id);
                self.pump(cfg, out, now);
            }
            Some(e) if e.state != OutState::Qos1Sent => {
                e.state = OutState::Released;
                e.sent_at = now;
                link.send(Packet::PubRel(Ack::new(ack.packet_id)), out);
            }
            _ => {
                let mut rel = Ack::new(ack.packet_id);
                if v5 {
                    rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                }
                link.send(Packet::PubRel(rel), out);
            }
        }
    }
}

/// Slab of sessions plus the client id index.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    by_client_id: BTreeMap<ByteString, SessionKey>,
}

impl Sessions {
    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.by_client_id.len()
    }

    /// The session of `client_id`.
    pub fn lookup(&self, client_id: &str) -> Option<SessionKey> {
        self.by_client_id.get(client_id).copied()
    }

    pub fn get(&self, key: SessionKey) -> Option<&Session> {
        self.slots.get(key.0 as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.slots.get_mut(key.0 as usize).and_then(Option::as_mut)
    }

    /// Stores a new session (its client id must not be in use).
    pub fn insert(&mut self, session: Session) -> SessionKey {
        let client_id = session.client_id.clone();
        let key = match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.slots.get_mut(slot as usize) {
                    *s = Some(session);
                }
                SessionKey(slot)
            }
            None => {
                self.slots.push(Some(session));
                SessionKey((self.slots.len() - 1) as u32)
            }
        };
        self.by_client_id.insert(client_id, key);
        key
    }

    /// Removes a session, freeing its slot.
    pub fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let session = self.slots.get_mut(key.0 as usize)?.take()?;
        self.by_client_id.remove(&*session.client_id);
        self.free.push(key.0);
        Some(session)
    }

    /// Sessions in client id order.
    pub fn iter_by_client_id(&self) -> impl Iterator<Item = &Session> + '_ {
        self.by_client_id.values().filter_map(|&k| self.get(k))
    }
}
