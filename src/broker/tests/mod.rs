//! Broker behaviour tests: a harness feeds packets and collects the actions per connection.

mod aliases;
mod cluster;
mod connect;
mod handoff;
mod pacing;
mod qos;
mod retained;
mod retained_sync;
mod sessions;
mod subscriptions;
mod wills;

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use super::{Action, Broker, BrokerConfig, ConnId, ConnectionLoss};
use crate::codec::{
    Ack, ConnAck, Connect, Disconnect, LastWill, Packet, Protocol, Publish, QoS, ReasonCode,
    SubAck, Subscribe, SubscribeProperties, SubscriptionOptions,
};

/// Drives one broker: connections, packets and time, recording every action.
pub(super) struct Harness {
    pub broker: Broker,
    pub now: Duration,
    next_conn: u64,
    /// Packet id of the next QoS>0 `publish` (unique so QoS 2 messages are never duplicates).
    next_packet_id: u16,
    /// Actions not yet taken by `take`.
    pending: Vec<Action>,
    /// Every action ever produced, in order.
    pub log: Vec<Action>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(BrokerConfig::default())
    }

    pub fn with_config(config: BrokerConfig) -> Harness {
        Harness {
            broker: Broker::new(config, 7),
            now: Duration::ZERO,
            next_conn: 1,
            next_packet_id: 100,
            pending: Vec::new(),
            log: Vec::new(),
        }
    }

    pub fn collect(&mut self) {
        while let Some(a) = self.broker.poll_action() {
            self.log.push(a.clone());
            self.pending.push(a);
        }
    }

    /// Opens a connection without sending anything.
    pub fn open(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.broker.connection_opened(conn, self.now);
        conn
    }

    /// Opens a connection and sends `connect`; returns the connection and its CONNACK.
    pub fn connect_with(&mut self, connect: Connect) -> (ConnId, ConnAck) {
        let conn = self.open();
        self.send(conn, Packet::Connect(Box::new(connect)));
        // Only the CONNACK is taken: what follows it (resent messages) stays for the test.
        let pos = self
            .pending
            .iter()
            .position(|a| {
                matches!(a, Action::Send { conn: c, packet: Packet::ConnAck(_), .. } if *c == conn)
            })
            .expect("CONNACK");
        match self.pending.remove(pos) {
            Action::Send {
                packet: Packet::ConnAck(ack),
                ..
            } => (conn, ack),
            other => panic!("not a CONNACK: {other:?}"),
        }
    }

    /// MQTT 5 clean-start connection with `client_id`.
    pub fn connect(&mut self, client_id: &str) -> ConnId {
        let (conn, ack) = self.connect_with(v5(client_id));
        assert_eq!(ack.reason_code, ReasonCode::Success);
        conn
    }

    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        self.broker.handle_packet(conn, packet, self.now);
        self.collect();
    }

    pub fn lose(&mut self, conn: ConnId, why: ConnectionLoss) {
        self.broker.connection_lost(conn, why, self.now);
        self.collect();
    }

    /// Moves time forward and fires due timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.broker.handle_timeout(self.now);
        self.collect();
    }

    pub fn advance_secs(&mut self, secs: u64) {
        self.advance(Duration::from_secs(secs));
    }

    /// Removes and returns the packets sent to `conn` so far.
    pub fn take(&mut self, conn: ConnId) -> Vec<Packet> {
        let mut out = Vec::new();
        self.pending.retain(|a| match a {
            Action::Send {
                conn: c, packet, ..
            } if *c == conn => {
                out.push(packet.clone());
                false
            }
            _ => true,
        });
        out
    }

    /// Removes and returns the PUBLISHes sent to `conn` (other packets are discarded).
    pub fn publishes(&mut self, conn: ConnId) -> Vec<Publish> {
        self.take(conn)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Takes the broker's request to hear when `conn` has written everything; true if there was
    /// one (the connection is paused until `drained`).
    pub fn take_drain_request(&mut self, conn: ConnId) -> bool {
        let before = self.pending.len();
        self.pending
            .retain(|a| !matches!(a, Action::NotifyDrained { conn: c } if *c == conn));
        before != self.pending.len()
    }

    /// The connection's writer has written everything handed to it.
    pub fn drained(&mut self, conn: ConnId) {
        self.broker.connection_drained(conn, self.now);
        self.collect();
    }

    /// Whether the broker closed `conn`.
    pub fn closed(&self, conn: ConnId) -> bool {
        self.log
            .iter()
            .any(|a| matches!(a, Action::Close { conn: c } if *c == conn))
    }

    /// The reason of the DISCONNECT the broker sent to `conn`, if any.
    pub fn disconnect_reason(&self, conn: ConnId) -> Option<ReasonCode> {
        self.log.iter().find_map(|a| match a {
            Action::Send {
                conn: c,
                packet: Packet::Disconnect(d),
                ..
            } if *c == conn => Some(d.reason_code),
            _ => None,
        })
    }

    pub fn subscribe_with(
        &mut self,
        conn: ConnId,
        filters: &[(&str, SubscriptionOptions)],
        sub_id: Option<u32>,
    ) -> SubAck {
        let sub = Subscribe {
            packet_id: 1,
            properties: SubscribeProperties {
                subscription_identifier: sub_id,
                ..Default::default()
            },
            filters: filters
                .iter()
                .map(|(f, o)| (ByteString::from(*f), *o))
                .collect(),
        };
        self.send(conn, Packet::Subscribe(sub));
        let packets = self.take(conn);
        let mut rest = Vec::new();
        let mut ack = None;
        for p in packets {
            match p {
                Packet::SubAck(a) if ack.is_none() => ack = Some(a),
                other => rest.push(other),
            }
        }
        // Keep what followed the SUBACK (retained messages) for the test to take.
        for packet in rest {
            self.pending.push(Action::Send {
                conn,
                protocol: Protocol::V5,
                packet,
            });
        }
        ack.expect("SUBACK")
    }

    pub fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_with(conn, &[(filter, opts(qos))], None)
    }

    pub fn publish(&mut self, conn: ConnId, topic: &str, qos: QoS, payload: &'static [u8]) {
        let id = (qos != QoS::AtMostOnce).then_some(self.next_packet_id);
        self.next_packet_id += 1;
        self.send(conn, Packet::Publish(publish(topic, qos, id, payload)));
    }
}

/// A clean-start MQTT 5 CONNECT.
pub(super) fn v5(client_id: &str) -> Connect {
    Connect {
        protocol: Protocol::V5,
        clean_start: true,
        client_id: ByteString::from(client_id),
        ..Connect::default()
    }
}

/// A persistent MQTT 5 CONNECT (clean_start = 0, expiry `expiry` seconds).
pub(super) fn v5_persistent(client_id: &str, expiry: u32) -> Connect {
    let mut c = v5(client_id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry);
    c
}

/// An MQTT 3.1.1 CONNECT.
pub(super) fn v311(client_id: &str, clean_session: bool) -> Connect {
    Connect {
        protocol: Protocol::V311,
        clean_start: clean_session,
        client_id: ByteString::from(client_id),
        ..Connect::default()
    }
}

pub(super) fn will(topic: &str, payload: &'static [u8]) -> LastWill {
    LastWill {
        topic: ByteString::from(topic),
        payload: Bytes::from_static(payload),
        ..LastWill::default()
    }
}

pub(super) fn publish(
    topic: &str,
    qos: QoS,
    packet_id: Option<u16>,
    payload: &'static [u8],
) -> Publish {
    Publish {
        qos,
        topic: ByteString::from(topic),
        packet_id,
        payload: Bytes::from_static(payload),
        ..Publish::default()
    }
}

pub(super) fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

pub(super) fn disconnect(code: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect::new(code))
}

pub(super) fn puback(id: u16) -> Packet {
    Packet::PubAck(Ack::new(id))
}

pub(super) fn payloads(ps: &[Publish]) -> Vec<&[u8]> {
    ps.iter().map(|p| p.payload.as_ref()).collect()
}

#[test]
fn determinism_same_seed_same_actions() {
    fn run() -> Vec<Action> {
        let mut h = Harness::new();
        let (a, _) = h.connect_with(v5(""));
        let (b, _) = h.connect_with(v5(""));
        let c = h.connect("c");
        for conn in [a, b, c] {
            h.subscribe(conn, "$share/g/t/#", QoS::AtLeastOnce);
            h.subscribe(conn, "t/+", QoS::ExactlyOnce);
        }
        for _ in 0..5 {
            h.publish(c, "t/x", QoS::AtLeastOnce, b"m");
        }
        h.lose(b, ConnectionLoss::Io);
        h.advance_secs(100);
        h.broker.shutdown(h.now);
        h.collect();
        h.log
    }
    let first = run();
    assert!(first.len() > 20);
    assert_eq!(first, run());
}

#[test]
fn broker_is_send_so_the_driver_can_move_it_into_a_task() {
    fn is_send<T: Send>() {}
    is_send::<Broker>();
}
