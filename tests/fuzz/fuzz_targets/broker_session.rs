//! The broker core (`flockmq::broker::Broker`) driven like the node drives it: connections
//! opened, client bytes through each connection's `codec::Decoder` (raw, or packets built from
//! a few fields and encoded), decode errors and lost connections reported, writers drained on
//! request, time advanced, and, for a clustered broker, forwarded publishes, route confirmations,
//! session hand-offs and retained echoes. The input is a `BrokerSetup` and a script of
//! `flockmq_fuzz::ops::BrokerOp`s.
//!
//! Checked after every step (all actions taken):
//! - nothing panics (overflow checks are on);
//! - every action names a connection that was opened and not closed yet: nothing after `Close`;
//! - the broker's connection count is the connections opened minus those it closed;
//! - every packet it sends encodes for its connection's protocol to a frame that decodes back to
//!   the same bytes; a PUBLISH has a packet id exactly when its QoS is above 0 and fits the
//!   client's Maximum Packet Size;
//! - a session taken away imports back; our own retained records merged back change nothing.
#![no_main]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use flockmq::broker::{Action, Broker, BrokerConfig, ConnId, ConnectionLoss, RetainedDigest};
use flockmq::codec::{
    Ack, Auth, Connect, ConnectProperties, Decoder, Disconnect, DisconnectProperties, LastWill,
    Packet, Protocol, Publish, PublishProperties, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeProperties, SubscriptionOptions, Unsubscribe, WillProperties, encode,
};
use flockmq_fuzz::check_sendable;
use flockmq_fuzz::ops::{BrokerOp, BrokerSetup, Input, TOPICS};
use libfuzzer_sys::fuzz_target;

const SLOTS: usize = 4;
/// The decoders' maximum packet size (the broker's is the same).
const MAX_PACKET: u32 = 64 * 1024;

fn topic(i: u8) -> &'static str {
    TOPICS[usize::from(i) % TOPICS.len()]
}

fn qos(bits: u8) -> QoS {
    QoS::from_u8(bits & 0b11).unwrap_or(QoS::AtMostOnce)
}

fn client_id(i: u8) -> ByteString {
    if i < 4 {
        format!("c{i}").into()
    } else {
        ByteString::new()
    }
}

/// One client connection as the node's reader and writer see it.
struct Slot {
    conn: ConnId,
    decoder: Decoder,
    buf: BytesMut,
    /// The reader stopped: the broker closed it, it broke, or its bytes did not decode.
    dead: bool,
    /// The broker asked to hear when its writer has drained.
    drain_requested: bool,
    /// The client's Maximum Packet Size (MQTT 5 CONNECT).
    max_packet: Option<u32>,
    /// The acknowledgement the client owes for the newest QoS 1/2 delivery: (kind, id).
    owed: Option<(u8, u16)>,
}

struct Harness {
    broker: Broker,
    now: Duration,
    clustered: bool,
    slots: Vec<Option<Slot>>,
    next_conn: u64,
    opened: BTreeSet<ConnId>,
    closed: BTreeSet<ConnId>,
    route_changes: u64,
    confirmed: u64,
}

impl Harness {
    fn new(setup: &BrokerSetup) -> Harness {
        let defaults = BrokerConfig::default();
        let config = BrokerConfig {
            max_packet_size: MAX_PACKET,
            max_inflight: match setup.max_inflight % 8 {
                0 => defaults.max_inflight,
                n => u16::from(n),
            },
            max_queued_messages: match setup.max_queued {
                255 => defaults.max_queued_messages,
                n => usize::from(n % 8),
            },
            retain_available: setup.retain_available,
            max_qos: qos(setup.max_qos % 3),
            server_keepalive: (setup.server_keepalive > 0)
                .then_some(u16::from(setup.server_keepalive)),
            max_topic_alias: u16::from(setup.max_topic_alias),
            retry_interval: if setup.retry {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            },
            conn_output_window: match setup.window {
                255 => defaults.conn_output_window,
                n => 64 * (1 + usize::from(n)),
            },
            max_topic_alias_bytes: 1024,
            max_subscriptions: 16,
            ..defaults
        };
        let mut broker = Broker::new(config, 7);
        if setup.clustered {
            broker.enable_cluster(1, 1_700_000_000_000);
            if setup.hold_subacks {
                broker.hold_subacks_for_routes();
            }
        }
        Harness {
            broker,
            now: Duration::ZERO,
            clustered: setup.clustered,
            slots: (0..SLOTS).map(|_| None).collect(),
            next_conn: 1,
            opened: BTreeSet::new(),
            closed: BTreeSet::new(),
            route_changes: 0,
            confirmed: 0,
        }
    }

    fn slot(&mut self, i: u8) -> Option<&mut Slot> {
        self.slots[usize::from(i) % SLOTS]
            .as_mut()
            .filter(|s| !s.dead)
    }

    fn slot_of(&mut self, conn: ConnId) -> Option<&mut Slot> {
        self.slots.iter_mut().flatten().find(|s| s.conn == conn)
    }

    fn open(&mut self, i: u8) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.opened.insert(conn);
        self.slots[usize::from(i) % SLOTS] = Some(Slot {
            conn,
            decoder: Decoder::new(MAX_PACKET as usize),
            buf: BytesMut::new(),
            dead: false,
            drain_requested: false,
            max_packet: None,
            owed: None,
        });
        self.broker.connection_opened(conn, self.now);
    }

    /// Client bytes arrive: decode what is complete and hand it to the broker.
    fn bytes(&mut self, i: u8, bytes: &[u8]) {
        let now = self.now;
        let Some(slot) = self.slot(i) else {
            return;
        };
        slot.buf.extend_from_slice(bytes);
        loop {
            let Some(slot) = self.slot(i) else {
                return;
            };
            let conn = slot.conn;
            match slot.decoder.decode(&mut slot.buf) {
                Ok(Some(packet)) => {
                    if let Packet::Connect(c) = &packet {
                        slot.max_packet = c.properties.maximum_packet_size;
                    }
                    self.broker.handle_packet(conn, packet, now);
                    self.drain();
                }
                Ok(None) => return,
                Err(e) => {
                    slot.dead = true;
                    self.broker
                        .connection_lost(conn, ConnectionLoss::Decode(e), now);
                    return;
                }
            }
        }
    }

    /// A packet from the client, through the encoder and the connection's decoder.
    fn packet(&mut self, i: u8, packet: &Packet) {
        let Some(slot) = self.slot(i) else {
            return;
        };
        let protocol = slot.decoder.protocol().unwrap_or(Protocol::V5);
        let mut buf = BytesMut::new();
        encode(packet, protocol, &mut buf);
        self.bytes(i, &buf);
    }

    fn drain(&mut self) {
        while let Some(action) = self.broker.poll_action() {
            let conn = match &action {
                Action::Send { conn, .. }
                | Action::Close { conn }
                | Action::NotifyDrained { conn } => *conn,
            };
            assert!(
                self.opened.contains(&conn),
                "{action:?} names an unknown connection"
            );
            assert!(
                !self.closed.contains(&conn),
                "{action:?} after the connection's Close"
            );
            match action {
                Action::Send {
                    conn,
                    protocol,
                    packet,
                } => self.sent(conn, protocol, &packet),
                Action::Close { conn } => {
                    self.closed.insert(conn);
                    if let Some(slot) = self.slot_of(conn) {
                        slot.dead = true;
                    }
                }
                Action::NotifyDrained { conn } => {
                    if let Some(slot) = self.slot_of(conn) {
                        slot.drain_requested = true;
                    }
                }
            }
        }
        while self.broker.poll_route_change().is_some() {
            assert!(
                self.clustered,
                "a route change from a broker not in a cluster"
            );
            self.route_changes += 1;
        }
        while let Some(forward) = self.broker.poll_forward() {
            assert!(self.clustered, "a forward from a broker not in a cluster");
            assert!(!forward.topic().is_empty(), "a forward without a topic");
        }
        let live = self.opened.len() - self.closed.len();
        assert_eq!(
            self.broker.metrics().connections,
            live as u64,
            "connections counted by the broker"
        );
    }

    fn sent(&mut self, conn: ConnId, protocol: Protocol, packet: &Packet) {
        let len = check_sendable(packet, protocol);
        let Some(slot) = self.slot_of(conn) else {
            return;
        };
        match packet {
            Packet::Publish(p) => {
                assert_eq!(
                    p.packet_id.is_some(),
                    p.qos != QoS::AtMostOnce,
                    "packet id of {p:?}"
                );
                if let Some(max) = slot.max_packet {
                    assert!(
                        len <= max as usize,
                        "a PUBLISH of {len} bytes for a client whose maximum is {max}"
                    );
                }
                slot.owed = match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => Some((0, id)),
                    (QoS::ExactlyOnce, Some(id)) => Some((1, id)),
                    _ => slot.owed,
                };
            }
            Packet::PubRel(ack) => slot.owed = Some((3, ack.packet_id)),
            _ => {}
        }
    }

    fn run(&mut self, op: BrokerOp, input: &mut Input<'_>) {
        let now = self.now;
        match op {
            BrokerOp::Open { conn } => self.open(conn),
            BrokerOp::Raw { conn } => {
                let bytes = input.chunk();
                self.bytes(conn, bytes);
            }
            BrokerOp::Connect {
                conn,
                protocol,
                client,
                clean,
                keep_alive,
                expiry,
                will_topic,
                will_qos,
                will_retain,
                will_delay,
                max_packet,
                receive_max,
                topic_alias_max,
            } => {
                let protocol = match protocol % 3 {
                    0 => Protocol::V31,
                    1 => Protocol::V311,
                    _ => Protocol::V5,
                };
                let v5 = protocol == Protocol::V5;
                let will = (will_qos < 3).then(|| LastWill {
                    topic: topic(will_topic).into(),
                    payload: Bytes::from_static(b"will"),
                    qos: qos(will_qos),
                    retain: will_retain,
                    properties: WillProperties {
                        will_delay_interval: (v5 && will_delay > 0)
                            .then_some(u32::from(will_delay)),
                        ..WillProperties::default()
                    },
                });
                let properties = if v5 {
                    ConnectProperties {
                        session_expiry_interval: (expiry < 255).then_some(u32::from(expiry)),
                        receive_maximum: (receive_max > 0).then_some(u16::from(receive_max)),
                        maximum_packet_size: (max_packet > 0).then_some(u32::from(max_packet) * 16),
                        topic_alias_maximum: Some(u16::from(topic_alias_max)),
                        ..ConnectProperties::default()
                    }
                } else {
                    ConnectProperties::default()
                };
                let connect = Connect {
                    protocol,
                    clean_start: clean,
                    keep_alive: u16::from(keep_alive),
                    client_id: client_id(client),
                    will,
                    username: None,
                    password: None,
                    properties,
                };
                self.packet(conn, &Packet::Connect(Box::new(connect)));
            }
            BrokerOp::Publish {
                conn,
                topic: t,
                flags,
                packet_id,
                alias,
                expiry,
                payload_len,
            } => {
                let qos = qos(flags);
                let aliased = alias > 0 && flags & 0x80 != 0;
                let publish = Publish {
                    dup: flags & 0b1000 != 0 && qos != QoS::AtMostOnce,
                    qos,
                    retain: flags & 0b100 != 0,
                    topic: if aliased { "".into() } else { topic(t).into() },
                    packet_id: (qos != QoS::AtMostOnce).then_some(u16::from(packet_id)),
                    payload: Bytes::from(vec![b'x'; usize::from(payload_len)]),
                    properties: PublishProperties {
                        topic_alias: (alias > 0).then_some(u16::from(alias)),
                        message_expiry_interval: (expiry > 0).then_some(u32::from(expiry)),
                        ..PublishProperties::default()
                    },
                };
                self.packet(conn, &Packet::Publish(publish));
            }
            BrokerOp::Subscribe {
                conn,
                topic: t,
                options,
                packet_id,
                sub_id,
                second,
            } => {
                let opts = SubscriptionOptions {
                    qos: qos(options),
                    no_local: options & 0b100 != 0,
                    retain_as_published: options & 0b1000 != 0,
                    retain_handling: match (options >> 4) & 0b11 {
                        0 => RetainHandling::SendAtSubscribe,
                        1 => RetainHandling::SendIfNew,
                        _ => RetainHandling::DoNotSend,
                    },
                };
                let mut filters = vec![(ByteString::from(topic(t)), opts)];
                if usize::from(second) < TOPICS.len() {
                    filters.push((topic(second).into(), SubscriptionOptions::default()));
                }
                let sub = Subscribe {
                    packet_id: u16::from(packet_id),
                    properties: SubscribeProperties {
                        subscription_identifier: (sub_id > 0).then_some(u32::from(sub_id)),
                        ..SubscribeProperties::default()
                    },
                    filters,
                };
                self.packet(conn, &Packet::Subscribe(sub));
            }
            BrokerOp::Unsubscribe {
                conn,
                topic: t,
                packet_id,
            } => {
                let unsub = Unsubscribe {
                    packet_id: u16::from(packet_id),
                    user_properties: Vec::new(),
                    filters: vec![topic(t).into()],
                };
                self.packet(conn, &Packet::Unsubscribe(unsub));
            }
            BrokerOp::Ack {
                conn,
                kind,
                packet_id,
                reason,
            } => {
                let ack = Ack {
                    packet_id: u16::from(packet_id),
                    reason_code: if reason & 1 == 1 {
                        ReasonCode::UnspecifiedError
                    } else {
                        ReasonCode::Success
                    },
                    ..Ack::default()
                };
                self.packet(conn, &ack_packet(kind, ack));
            }
            BrokerOp::AckLast { conn } => {
                if let Some((kind, id)) = self.slot(conn).and_then(|s| s.owed.take()) {
                    self.packet(conn, &ack_packet(kind, Ack::new(id)));
                }
            }
            BrokerOp::PingReq { conn } => self.packet(conn, &Packet::PingReq),
            BrokerOp::Disconnect {
                conn,
                reason,
                expiry,
            } => {
                let d = Disconnect {
                    reason_code: match reason % 3 {
                        0 => ReasonCode::Success,
                        1 => ReasonCode::DisconnectWithWillMessage,
                        _ => ReasonCode::UnspecifiedError,
                    },
                    properties: DisconnectProperties {
                        session_expiry_interval: (expiry < 255).then_some(u32::from(expiry)),
                        ..DisconnectProperties::default()
                    },
                };
                self.packet(conn, &Packet::Disconnect(d));
            }
            BrokerOp::Auth { conn } => self.packet(conn, &Packet::Auth(Auth::default())),
            BrokerOp::Lost { conn } => {
                if let Some(slot) = self.slot(conn) {
                    slot.dead = true;
                    let c = slot.conn;
                    self.broker.connection_lost(c, ConnectionLoss::Io, now);
                }
            }
            BrokerOp::Drained { conn } => {
                if let Some(slot) = self.slot(conn).filter(|s| s.drain_requested) {
                    slot.drain_requested = false;
                    let c = slot.conn;
                    self.broker.connection_drained(c, now);
                }
            }
            BrokerOp::Advance { ms } => self.advance(Duration::from_millis(u64::from(ms) * 10)),
            BrokerOp::AdvanceSecs { secs } => self.advance(Duration::from_secs(u64::from(secs))),
            BrokerOp::Congested { on } => self.broker.set_congested(on),
            BrokerOp::Forwarded { topic: t, flags } => {
                if self.clustered {
                    let publish = Publish {
                        qos: qos(flags),
                        retain: flags & 0b100 != 0,
                        topic: topic(t).into(),
                        payload: Bytes::from_static(b"forwarded"),
                        ..Publish::default()
                    };
                    self.broker.deliver_forwarded(publish, None, now);
                }
            }
            BrokerOp::ConfirmRoutes { upto } => {
                if self.clustered {
                    self.confirmed = (self.confirmed + u64::from(upto)).min(self.route_changes);
                    self.broker.routes_confirmed(self.confirmed, now);
                }
            }
            BrokerOp::Handoff { client, clean } => {
                if let Some(snapshot) = self.broker.take_session(&client_id(client % 4), clean, now)
                {
                    let again = self.broker.import_session(snapshot, now);
                    assert_eq!(again, Ok(()), "a session taken away does not import back");
                }
            }
            BrokerOp::RetainedEcho => {
                if self.clustered {
                    let records = self
                        .broker
                        .retained_records(&RetainedDigest(Vec::new()), now);
                    let won = self.broker.merge_retained(records, now);
                    assert_eq!(won, 0, "our own retained records replaced ours");
                }
            }
            BrokerOp::Shutdown => self.broker.shutdown(now),
            BrokerOp::FinishShutdown => self.broker.finish_shutdown(now),
        }
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.broker.handle_timeout(self.now);
    }
}

fn ack_packet(kind: u8, ack: Ack) -> Packet {
    match kind % 4 {
        0 => Packet::PubAck(ack),
        1 => Packet::PubRec(ack),
        2 => Packet::PubRel(ack),
        _ => Packet::PubComp(ack),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(setup) = input.take::<BrokerSetup>() else {
        return;
    };
    let mut h = Harness::new(&setup);
    while let Some(op) = input.broker_op() {
        h.run(op, &mut input);
    }
    // Whatever happened, a shutdown closes every connection.
    h.broker.finish_shutdown(h.now);
    h.drain();
    assert!(
        h.broker.shutdown_drained(),
        "connections left after finish_shutdown"
    );
});
