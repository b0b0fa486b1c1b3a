//! The sans-IO single-node MQTT core: sessions, subscriptions (topic trie), retained messages,
//! QoS state machines, wills, keepalive, topic aliases, shared subscriptions.
//!
//! It owns no socket, never reads the clock (`now` is passed in as the time since the node
//! started), never spawns, and draws randomness only from its seeded RNG. The node driver feeds it
//! events and carries out the `Action`s it queues.
//!
//! Layout: `connect` (CONNECT, takeover, disconnects, wills, session end), `publish` (inbound
//! PUBLISH and the fan-out to sessions), `subscribe` (SUBSCRIBE/UNSUBSCRIBE, retained at
//! subscribe), `session` (per-session queue, in-flight window, outbound aliases), `inflight`
//! (outbound QoS 1/2 packet ids and states), `timers` (keepalive, will delay, session expiry,
//! retry). State lives in `BTreeMap`s and a slab so that the same inputs and seed always give the
//! same actions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use rand::SeedableRng;
use rand::rngs::StdRng;

mod connect;
mod handoff;
mod inflight;
mod publish;
mod retained;
mod session;
mod subscribe;
mod timers;

#[cfg(test)]
mod tests;

use crate::codec::{DecodeError, Packet, Protocol, Publish, PublishProperties, QoS, ReasonCode};
use crate::topic::{self, TopicTrie};
pub use handoff::{
    ImportError, SessionSnapshot, SnapshotDelivery, SnapshotInflight, SnapshotSubscription,
};
use inflight::OutState;
pub use retained::{DIGEST_BUCKETS, RetainVersion, RetainedDigest, RetainedRecord, TOMBSTONE_TTL};
use session::{Message, Outbox, SessionKey, Sessions, SubOptions};
use timers::Timer;

/// Identifies one network connection for the lifetime of the node (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the driver must do on the broker's behalf.
// `Send` is by far the most common variant, so boxing its packet would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Encode `packet` with `protocol` onto the connection's write buffer.
    Send {
        conn: ConnId,
        protocol: Protocol,
        packet: Packet,
    },
    /// Flush what was sent so far, then close the connection. No further actions name it.
    Close { conn: ConnId },
    /// The connection has been handed `BrokerConfig::conn_output_window` bytes of PUBLISHes and
    /// is paused: call `Broker::connection_drained` once everything sent on it so far has been
    /// written to the socket.
    NotifyDrained { conn: ConnId },
}

/// Limits and switches of the single-node core (the `mqtt.*` config keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Largest packet accepted from clients, bytes (also announced in CONNACK).
    pub max_packet_size: u32,
    /// Receive Maximum announced to clients and the in-flight window towards each client.
    pub max_inflight: u16,
    /// Messages queued per session while offline or while the in-flight window is full.
    pub max_queued_messages: usize,
    /// Topic names/filters with more levels are rejected.
    pub max_topic_levels: usize,
    /// Topic Alias Maximum announced to clients (0 disables client→server aliases).
    pub max_topic_alias: u16,
    /// Upper bound on a session's expiry interval (seconds).
    pub max_session_expiry: u32,
    /// Whether retained messages are stored.
    pub retain_available: bool,
    /// Largest QoS granted.
    pub max_qos: crate::codec::QoS,
    /// Keepalive the server imposes (MQTT 5 Server Keep Alive); `None` accepts the client's.
    pub server_keepalive: Option<u16>,
    /// Longest accepted client id.
    pub max_client_id_len: usize,
    /// Retry interval for unacknowledged QoS>0 messages on a live connection (0 = only on reconnect).
    pub retry_interval: Duration,
    /// A connection that has not completed CONNECT within this time is closed (0 = never).
    pub connect_timeout: Duration,
    /// PUBLISH bytes handed to one connection before it pauses until they are written: retained
    /// floods and resumed sessions are paced by what the client reads.
    pub conn_output_window: usize,
    /// Topic bytes one connection's alias table may hold, each direction (`mqtt.max_topic_alias_bytes`).
    pub max_topic_alias_bytes: usize,
    /// Subscriptions one session may hold (`mqtt.max_subscriptions`).
    pub max_subscriptions: usize,
    /// Unwritten output of all connections together above which the node counts as congested
    /// (`mqtt.output_budget`; measured by the node driver, see `Broker::set_congested`).
    pub output_budget: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1024 * 1024,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_topic_levels: 64,
            max_topic_alias: 65535,
            max_session_expiry: u32::MAX,
            retain_available: true,
            max_qos: crate::codec::QoS::ExactlyOnce,
            server_keepalive: None,
            max_client_id_len: 65535,
            retry_interval: Duration::ZERO,
            connect_timeout: Duration::from_secs(10),
            conn_output_window: 1024 * 1024,
            max_topic_alias_bytes: 1024 * 1024,
            max_subscriptions: 100_000,
            output_budget: 256 * 1024 * 1024,
        }
    }
}

/// Counters exported by the admin endpoint (`/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BrokerMetrics {
    pub connections: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained: u64,
    /// PUBLISH packets received from clients, by QoS.
    pub messages_in: [u64; 3],
    /// PUBLISH packets sent to clients, by QoS.
    pub messages_out: [u64; 3],
    /// Messages dropped (queue full, expired, too large for the client, no subscriber for QoS0...), by QoS.
    pub messages_dropped: [u64; 3],
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One row of `flockmq ctl clients list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientInfo {
    pub client_id: String,
    pub connected: bool,
    pub protocol: u8,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub session_expiry_interval: u32,
    pub subscriptions: usize,
    pub inflight: usize,
    pub queued: usize,
}

/// A change of the node's route set, reported to the cluster core: a filter gained its first
/// local subscriber, or lost its last one. Shared subscriptions `$share/g/f` count for `f`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// The first local subscription for this filter appeared.
    Added(ByteString),
    /// The last local subscription for this filter went away.
    Removed(ByteString),
}

/// A publish from a local client (or a will) that the cluster may forward to other nodes.
#[derive(Debug, Clone)]
pub struct LocalPublish(Arc<Message>, Option<RetainVersion>);

impl LocalPublish {
    /// The version its retained value got here (a retained publish only).
    pub fn retain_version(&self) -> Option<RetainVersion> {
        self.1
    }

    pub fn topic(&self) -> &str {
        &self.0.topic
    }

    pub fn payload(&self) -> &[u8] {
        &self.0.payload
    }

    pub fn qos(&self) -> QoS {
        self.0.qos
    }

    pub fn retain(&self) -> bool {
        self.0.retain
    }

    /// Seconds left of its message expiry interval at `now` (at least 1), if it has one.
    pub fn remaining_expiry(&self, now: Duration) -> Option<u32> {
        self.0.remaining_expiry(now)
    }

    /// The publisher's properties that travel with the message (no alias, no subscription ids,
    /// expiry as `remaining_expiry`).
    pub fn properties(&self) -> &PublishProperties {
        &self.0.properties
    }

    /// Whether its expiry has passed (then it is not forwarded).
    pub fn expired(&self, now: Duration) -> bool {
        self.0.expired(now)
    }
}

/// Why a connection went away (told to the broker by the driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionLoss {
    /// EOF, reset, or I/O error: an abrupt disconnect (wills fire).
    Io,
    /// The bytes could not be decoded; the broker sends DISCONNECT (MQTT 5, after CONNECT) or a
    /// CONNACK with the error (before CONNECT), then closes.
    Decode(DecodeError),
}

/// The single-node MQTT broker state machine.
pub struct Broker {
    config: BrokerConfig,
    rng: StdRng,
    connections: BTreeMap<ConnId, Connection>,
    sessions: Sessions,
    /// Plain subscriptions: filter -> session -> options.
    subscriptions: TopicTrie<SessionKey, SubOptions>,
    /// Shared subscriptions: inner filter -> (group, session) -> options.
    shared: TopicTrie<(ByteString, SessionKey), SubOptions>,
    /// Round-robin position per shared group: inner filter -> group -> last chosen member.
    shared_cursors: BTreeMap<ByteString, BTreeMap<ByteString, SessionKey>>,
    retained: retained::Retained,
    timers: BTreeSet<(Duration, Timer)>,
    out: Outbox,
    /// Reused by every publish so fan-out does not allocate per message.
    scratch: Vec<publish::Match>,
    shared_scratch: Vec<(ByteString, ByteString)>,
    /// Bumped on every session attach/detach; timers carry it so stale ones are ignored.
    epoch: u64,
    /// Set by a clustered node: route changes and local publishes are queued for the cluster.
    clustered: bool,
    route_changes: std::collections::VecDeque<RouteChange>,
    /// Route changes queued since start (the cluster numbers them the same way).
    route_seq: u64,
    /// The highest route change the cluster confirmed as known to every linked node.
    routes_confirmed: u64,
    /// Hold each SUBACK until the route changes before it are confirmed (`routes_confirmed`).
    hold_subacks: bool,
    held_subacks: std::collections::VecDeque<subscribe::HeldSubAck>,
    forwards: std::collections::VecDeque<LocalPublish>,
    /// Set by `shutdown`: connections are closed as soon as their session has nothing left
    /// to deliver (queue empty, every message acknowledged), new ones at once.
    shutting_down: bool,
}

/// One network connection as the broker sees it.
struct Connection {
    /// Set once CONNECT was accepted.
    session: Option<SessionKey>,
    protocol: Protocol,
    /// Effective keepalive in seconds (0 = none).
    keep_alive: u16,
    last_activity: Duration,
    /// Whether CONNECT asked for session expiry 0 (DISCONNECT may then not raise it).
    connect_expiry_zero: bool,
    /// Client -> server topic aliases.
    client_aliases: BTreeMap<u16, ByteString>,
    /// Topic bytes held by `client_aliases` (bounded by `max_topic_alias_bytes`).
    client_alias_bytes: usize,
}

impl Broker {
    /// A broker with the given limits; `rng_seed` seeds all its randomness.
    pub fn new(config: BrokerConfig, rng_seed: u64) -> Broker {
        Broker {
            config,
            rng: StdRng::seed_from_u64(rng_seed),
            connections: BTreeMap::new(),
            sessions: Sessions::default(),
            subscriptions: TopicTrie::new(),
            shared: TopicTrie::new(),
            shared_cursors: BTreeMap::new(),
            retained: retained::Retained::default(),
            timers: BTreeSet::new(),
            out: Outbox::default(),
            scratch: Vec::new(),
            shared_scratch: Vec::new(),
            epoch: 0,
            clustered: false,
            route_changes: std::collections::VecDeque::new(),
            route_seq: 0,
            routes_confirmed: 0,
            hold_subacks: false,
            held_subacks: std::collections::VecDeque::new(),
            forwards: std::collections::VecDeque::new(),
            shutting_down: false,
        }
    }

    /// Makes this broker part of a cluster: from now on it queues route changes
    /// (`poll_route_change`) and local publishes (`poll_forward`), a publish without a local
    /// subscriber is not counted as dropped (it may have remote ones), and retained values are
    /// versioned with `origin` (this node's id) and a clock reading `epoch_ms` at `now` = 0, clears
    /// leaving tombstones (see `retained`).
    pub fn enable_cluster(&mut self, origin: u64, epoch_ms: u64) {
        self.clustered = true;
        self.retained.enable_cluster(origin, epoch_ms);
    }

    /// From now on a SUBACK waits until the cluster confirms (`routes_confirmed`) that every
    /// linked node knows the route changes queued up to it, so that a publish accepted anywhere
    /// in the cluster after the SUBACK reaches the new subscription. Route changes are numbered
    /// from 1 in the order `poll_route_change` returns them.
    pub fn hold_subacks_for_routes(&mut self) {
        self.hold_subacks = true;
    }

    /// The digest of the retained set, for a peer to compare with its own (on link up).
    pub fn retained_digest(&mut self, now: Duration) -> RetainedDigest {
        self.retained.digest(now)
    }

    /// The retained values (and clears) of the digest buckets where a peer's `digest` differs
    /// from ours: what it needs to converge with us.
    pub fn retained_records(
        &mut self,
        digest: &RetainedDigest,
        now: Duration,
    ) -> Vec<RetainedRecord> {
        self.retained.records(digest, now)
    }

    /// Merges a peer's retained values, keeping the newer version of each topic; returns how
    /// many replaced ours. Nothing is delivered: subscribers see them when they subscribe.
    pub fn merge_retained(&mut self, records: Vec<RetainedRecord>, now: Duration) -> usize {
        if !self.config.retain_available {
            return 0;
        }
        self.retained
            .merge(records, self.config.max_topic_levels, now)
    }

    /// The next route change for the cluster core, in order.
    pub fn poll_route_change(&mut self) -> Option<RouteChange> {
        self.route_changes.pop_front()
    }

    /// The next local publish for the cluster core to forward, in order.
    pub fn poll_forward(&mut self) -> Option<LocalPublish> {
        self.forwards.pop_front()
    }

    /// Delivers a publish forwarded by another node to the local subscribers (and, when it is
    /// retained, stores it if its `version` is newer than ours). It is never forwarded again. Its
    /// expiry is its Message Expiry Interval property, counted from `now`. Returns the number of
    /// deliveries; a publish with an invalid topic (never sent by a flockmq peer) is dropped, not
    /// repaired.
    pub fn deliver_forwarded(
        &mut self,
        publish: Publish,
        version: Option<RetainVersion>,
        now: Duration,
    ) -> usize {
        if publish.topic.is_empty()
            || !topic::valid_topic_name(&publish.topic, self.config.max_topic_levels)
        {
            tracing::debug!("dropping a malformed forwarded publish");
            return 0;
        }
        let msg = Arc::new(Message::from_publish(publish, now));
        if msg.retain && self.config.retain_available {
            match version {
                Some(version) => {
                    self.retained.store_remote(&msg, version, now);
                }
                // A peer without versions: its value is as new as our clock says.
                None => {
                    self.retained.store_local(&msg, now);
                }
            }
        }
        self.route(msg, None, now)
    }

    /// Whether any local subscription (plain or shared) uses `filter`.
    fn has_route(&self, filter: &str) -> bool {
        self.subscriptions.get(filter).is_some() || self.shared.get(filter).is_some()
    }

    /// Hands a local publish to the cluster (when clustered).
    fn queue_forward(&mut self, msg: &Arc<Message>, version: Option<RetainVersion>) {
        if self.clustered {
            self.forwards
                .push_back(LocalPublish(Arc::clone(msg), version));
        }
    }

    /// A new network connection was accepted.
    pub fn connection_opened(&mut self, conn: ConnId, now: Duration) {
        if self.shutting_down {
            self.out.actions.push_back(Action::Close { conn });
            return;
        }
        self.connections.insert(
            conn,
            Connection {
                session: None,
                protocol: Protocol::V311,
                keep_alive: 0,
                last_activity: now,
                connect_expiry_zero: true,
                client_aliases: BTreeMap::new(),
                client_alias_bytes: 0,
            },
        );
        if !self.config.connect_timeout.is_zero() {
            let deadline = now + self.config.connect_timeout;
            self.timers.insert((deadline, Timer::ConnectTimeout(conn)));
        }
    }

    /// A decoded packet arrived on `conn`.
    pub fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Duration) {
        self.dispatch_packet(conn, packet, now);
        if self.shutting_down {
            // An acknowledgement may have been the last thing this connection was waiting for.
            self.close_if_drained(conn, now);
        }
    }

    fn dispatch_packet(&mut self, conn: ConnId, packet: Packet, now: Duration) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        c.last_activity = now;
        let Some(key) = c.session else {
            match packet {
                Packet::Connect(connect) => self.handle_connect(conn, *connect, now),
                other => {
                    tracing::debug!(?conn, packet = ?other.packet_type(), "first packet is not CONNECT");
                    self.close_unattached(conn);
                }
            }
            return;
        };
        match packet {
            Packet::Publish(p) => self.handle_publish(conn, key, p, now),
            Packet::PubAck(ack) => self.with_session(key, now, |s, cfg, out, now| {
                s.on_flow_complete(ack.packet_id, OutState::Qos1Sent, cfg, out, now)
            }),
            Packet::PubRec(ack) => self.with_session(key, now, |s, cfg, out, now| {
                s.on_pubrec(&ack, cfg, out, now)
            }),
            Packet::PubRel(ack) => self.handle_pubrel(conn, key, ack.packet_id),
            Packet::PubComp(ack) => self.with_session(key, now, |s, cfg, out, now| {
                s.on_flow_complete(ack.packet_id, OutState::Released, cfg, out, now)
            }),
            Packet::Subscribe(sub) => self.handle_subscribe(conn, key, sub, now),
            Packet::Unsubscribe(unsub) => self.handle_unsubscribe(conn, key, unsub),
            Packet::PingReq => self.send(conn, Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(conn, key, d, now),
            Packet::Connect(_) => {
                tracing::debug!(?conn, "second CONNECT");
                self.protocol_violation(conn, ReasonCode::ProtocolError, now);
            }
            Packet::Auth(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                tracing::debug!(?conn, "client sent a packet it must not send");
                self.protocol_violation(conn, ReasonCode::ProtocolError, now);
            }
        }
    }

    /// The connection broke or sent undecodable bytes.
    pub fn connection_lost(&mut self, conn: ConnId, why: ConnectionLoss, now: Duration) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if c.session.is_none() {
            // A CONNECT naming a protocol level we do not speak is answered in the oldest form
            // every client understands, 3.1.1's CONNACK 0x01 (MQTT-3.1.2-2), then closed. Any
            // other undecodable first packet is just closed.
            if let ConnectionLoss::Decode(DecodeError::UnsupportedProtocol(level)) = why {
                tracing::debug!(?conn, level, "unsupported protocol level");
                self.refuse_connect(conn, ReasonCode::UnsupportedProtocolVersion);
            } else {
                self.close_unattached(conn);
            }
            return;
        }
        let reason = match why {
            ConnectionLoss::Io => None,
            ConnectionLoss::Decode(err) => {
                tracing::debug!(?conn, %err, "undecodable packet");
                Some(err.reason_code())
            }
        };
        self.end_connection(conn, reason, true, now);
    }

    /// Everything sent on `conn` so far has been written (answer to `Action::NotifyDrained`):
    /// its session sends what waited.
    pub fn connection_drained(&mut self, conn: ConnId, now: Duration) {
        let Some(key) = self.connections.get(&conn).and_then(|c| c.session) else {
            return;
        };
        self.with_session(key, now, |s, cfg, out, now| s.on_drained(cfg, out, now));
        if self.shutting_down {
            // What waited for the drain may have been the last thing this connection owed.
            self.close_if_drained(conn, now);
        }
    }

    /// Whether the node's unwritten output is over its budget (`mqtt.output_budget`), as the
    /// driver measures it: while it is, QoS 0 messages for paused connections are dropped.
    pub fn set_congested(&mut self, congested: bool) {
        self.out.congested = congested;
    }

    /// Timers (keepalive, will delay, session expiry, message expiry, retries) due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.fire(timer, now);
        }
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next queued action, in the order they were produced.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// Graceful shutdown, first step: the wills of every session (connected, or waiting out a
    /// will delay) are published, connections without a session are closed, and from now on a
    /// connection gets DISCONNECT 0x8B (MQTT 5) and is closed as soon as its session has
    /// nothing left to deliver: queue empty and every QoS 1/2 message acknowledged (PUBACK /
    /// PUBCOMP). `shutdown_drained` tells when all are gone; `finish_shutdown` closes the rest
    /// when the driver's shutdown timeout passes.
    pub fn shutdown(&mut self, now: Duration) {
        self.shutting_down = true;
        let with_will: Vec<ByteString> = self
            .sessions
            .iter_by_client_id()
            .filter(|s| s.will.is_some())
            .map(|s| s.client_id.clone())
            .collect();
        for client_id in with_will {
            let will = self
                .sessions
                .lookup(&client_id)
                .and_then(|key| self.sessions.get_mut(key))
                .and_then(|s| s.will.take());
            if let Some(will) = will {
                self.publish_will(will, now);
            }
        }
        let conns: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in conns {
            self.close_if_drained(conn, now);
        }
    }

    /// Whether a shutdown has closed every connection.
    pub fn shutdown_drained(&self) -> bool {
        self.shutting_down && self.connections.is_empty()
    }

    /// Graceful shutdown, last step (the timeout passed): every connection still open gets
    /// DISCONNECT 0x8B (MQTT 5) and is closed, acknowledged or not.
    pub fn finish_shutdown(&mut self, now: Duration) {
        self.shutting_down = true;
        let conns: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in conns {
            self.end_for_shutdown(conn, now);
        }
    }

    /// During shutdown: closes `conn` if its session owes the client nothing any more.
    fn close_if_drained(&mut self, conn: ConnId, now: Duration) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let owes = c
            .session
            .and_then(|key| self.sessions.get(key))
            .is_some_and(|s| !s.queue.is_empty() || s.inflight.len() > 0);
        if !owes {
            self.end_for_shutdown(conn, now);
        }
    }

    fn end_for_shutdown(&mut self, conn: ConnId, now: Duration) {
        if self
            .connections
            .get(&conn)
            .is_some_and(|c| c.session.is_some())
        {
            self.end_connection(conn, Some(ReasonCode::ServerShuttingDown), false, now);
        } else {
            self.close_unattached(conn);
        }
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> BrokerMetrics {
        BrokerMetrics {
            connections: self.connections.len() as u64,
            sessions: self.sessions.len() as u64,
            subscriptions: (self.subscriptions.len() + self.shared.len()) as u64,
            retained: self.retained.len() as u64,
            ..self.out.metrics.clone()
        }
    }

    /// Sessions, connected or not, sorted by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.sessions
            .iter_by_client_id()
            .map(|s| ClientInfo {
                client_id: s.client_id.to_string(),
                connected: s.link.is_some(),
                protocol: protocol_level(s.protocol),
                clean_start: s.clean_start,
                keep_alive: s.keep_alive,
                session_expiry_interval: s.expiry_interval,
                subscriptions: s.subscriptions.len(),
                inflight: s.inflight.len(),
                queued: s.queue.len(),
            })
            .collect()
    }

    /// Queues `packet` for `conn` with the connection's protocol.
    fn send(&mut self, conn: ConnId, packet: Packet) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        self.out.actions.push_back(Action::Send {
            conn,
            protocol: c.protocol,
            packet,
        });
    }

    /// Runs `f` on a session with the pieces it needs to send.
    fn with_session(
        &mut self,
        key: SessionKey,
        now: Duration,
        f: impl FnOnce(&mut session::Session, &BrokerConfig, &mut Outbox, Duration),
    ) {
        if let Some(s) = self.sessions.get_mut(key) {
            f(s, &self.config, &mut self.out, now);
        }
    }
}

/// The protocol level byte shown in `clients list`.
fn protocol_level(p: Protocol) -> u8 {
    match p {
        Protocol::V31 => 3,
        Protocol::V311 => 4,
        Protocol::V5 => 5,
    }
}
