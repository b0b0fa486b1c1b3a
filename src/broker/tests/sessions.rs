//! Persistent sessions: offline queues, resume, resend, expiry.

use super::*;

#[test]
fn persistent_session_resumes_with_queued_qos1_messages() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.send(s, disconnect(ReasonCode::Success));
    h.publish(p, "t", QoS::AtLeastOnce, b"1");
    h.publish(p, "t", QoS::AtLeastOnce, b"2");
    h.publish(p, "t", QoS::AtMostOnce, b"qos0 is not queued");
    assert_eq!(h.broker.clients()[1].queued, 2);
    assert!(!h.broker.clients()[1].connected);
    let (s2, ack) = h.connect_with(v5_persistent("s", 100));
    assert!(ack.session_present);
    let got = h.publishes(s2);
    assert_eq!(payloads(&got), [b"1", b"2"]);
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
    assert_eq!(h.broker.metrics().messages_dropped, [1, 0, 0]);
}

#[test]
fn session_expiry_removes_the_session() {
    let mut h = Harness::new();
    let (s, _) = h.connect_with(v5_persistent("s", 10));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    h.advance_secs(9);
    assert_eq!(h.broker.metrics().sessions, 1);
    h.advance_secs(1);
    assert_eq!(h.broker.metrics().sessions, 0);
    assert_eq!(h.broker.metrics().subscriptions, 0);
    let (_, ack) = h.connect_with(v5_persistent("s", 10));
    assert!(!ack.session_present);
}

#[test]
fn zero_expiry_session_ends_with_its_connection() {
    let mut h = Harness::new();
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.send(s, disconnect(ReasonCode::Success));
    assert_eq!(h.broker.metrics().sessions, 0);
    assert_eq!(h.broker.metrics().subscriptions, 0);
}

#[test]
fn unacked_qos1_is_resent_with_dup_on_reconnect() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.publish(p, "t", QoS::AtLeastOnce, b"1");
    h.publish(p, "t", QoS::AtLeastOnce, b"2");
    assert_eq!(h.publishes(s).len(), 2);
    h.send(s, puback(1));
    h.lose(s, ConnectionLoss::Io);
    let (s2, ack) = h.connect_with(v5_persistent("s", 100));
    assert!(ack.session_present);
    let got = h.publishes(s2);
    assert_eq!(payloads(&got), [b"2"]);
    assert!(got[0].dup);
    assert_eq!(got[0].packet_id, Some(2));
}

#[test]
fn pubrec_d_qos2_gets_pubrel_on_reconnect() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::ExactlyOnce);
    h.send(
        p,
        Packet::Publish(publish("t", QoS::ExactlyOnce, Some(1), b"a")),
    );
    h.send(
        p,
        Packet::Publish(publish("t", QoS::ExactlyOnce, Some(2), b"b")),
    );
    assert_eq!(h.publishes(s).len(), 2);
    h.send(s, Packet::PubRec(Ack::new(1)));
    h.lose(s, ConnectionLoss::Io);
    let (s2, _) = h.connect_with(v5_persistent("s", 100));
    let packets = h.take(s2);
    assert_eq!(packets.len(), 2, "{packets:?}");
    assert_eq!(packets[0], Packet::PubRel(Ack::new(1)));
    let Packet::Publish(p2) = &packets[1] else {
        panic!()
    };
    assert!(p2.dup);
    assert_eq!(p2.packet_id, Some(2));
}

#[test]
fn offline_queue_bound_drops_new_messages() {
    let mut h = Harness::with_config(BrokerConfig {
        max_queued_messages: 2,
        ..Default::default()
    });
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    for payload in [b"1", b"2", b"3"] {
        h.publish(p, "t", QoS::AtLeastOnce, payload);
    }
    assert_eq!(h.broker.metrics().messages_dropped, [0, 1, 0]);
    let (s2, _) = h.connect_with(v5_persistent("s", 100));
    assert_eq!(payloads(&h.publishes(s2)), [b"1", b"2"]);
}

#[test]
fn message_expiry_drops_a_queued_message() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    let mut short = publish("t", QoS::AtLeastOnce, Some(1), b"short");
    short.properties.message_expiry_interval = Some(5);
    h.send(p, Packet::Publish(short));
    let mut long = publish("t", QoS::AtLeastOnce, Some(2), b"long");
    long.properties.message_expiry_interval = Some(60);
    h.send(p, Packet::Publish(long));
    h.advance_secs(10);
    let (s2, _) = h.connect_with(v5_persistent("s", 100));
    let got = h.publishes(s2);
    assert_eq!(payloads(&got), [b"long"]);
    assert_eq!(got[0].properties.message_expiry_interval, Some(50));
    assert_eq!(h.broker.metrics().messages_dropped, [0, 1, 0]);
}

#[test]
fn disconnect_cannot_raise_zero_session_expiry() {
    let mut h = Harness::new();
    let s = h.connect("s");
    let mut d = crate::codec::Disconnect::new(ReasonCode::Success);
    d.properties.session_expiry_interval = Some(60);
    h.send(s, Packet::Disconnect(d));
    assert_eq!(h.disconnect_reason(s), Some(ReasonCode::ProtocolError));
    assert_eq!(h.broker.metrics().sessions, 0);
}

#[test]
fn disconnect_can_shorten_session_expiry() {
    let mut h = Harness::new();
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    let mut d = crate::codec::Disconnect::new(ReasonCode::Success);
    d.properties.session_expiry_interval = Some(0);
    h.send(s, Packet::Disconnect(d));
    assert_eq!(h.broker.metrics().sessions, 0);
}

#[test]
fn clean_start_discards_existing_session() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    h.publish(p, "t", QoS::AtLeastOnce, b"1");
    let (s2, ack) = h.connect_with(v5("s"));
    assert!(!ack.session_present);
    assert!(h.publishes(s2).is_empty());
    assert_eq!(h.broker.metrics().subscriptions, 0);
}

#[test]
fn v311_clean_session_0_never_expires() {
    let mut h = Harness::new();
    let (s, _) = h.connect_with(v311("s", false));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    h.advance_secs(1_000_000);
    assert_eq!(h.broker.metrics().sessions, 1);
    assert_eq!(h.broker.clients()[0].session_expiry_interval, u32::MAX);
    let (_, ack) = h.connect_with(v311("s", false));
    assert!(ack.session_present);
}

#[test]
fn queued_messages_beyond_window_wait_after_resume() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    for _ in 0..3 {
        h.publish(p, "t", QoS::AtLeastOnce, b"m");
    }
    let mut c = v5_persistent("s", 100);
    c.properties.receive_maximum = Some(1);
    let (s2, _) = h.connect_with(c);
    assert_eq!(h.publishes(s2).len(), 1);
    h.send(s2, puback(1));
    assert_eq!(h.publishes(s2).len(), 1);
}

#[test]
fn full_offline_queue_makes_room_by_dropping_expired_messages() {
    let mut h = Harness::with_config(BrokerConfig {
        max_queued_messages: 1,
        ..Default::default()
    });
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    let mut short = publish("t", QoS::AtLeastOnce, Some(1), b"short");
    short.properties.message_expiry_interval = Some(1);
    h.send(p, Packet::Publish(short));
    h.advance_secs(2);
    h.publish(p, "t", QoS::AtLeastOnce, b"fresh");
    let (s2, _) = h.connect_with(v5_persistent("s", 100));
    assert_eq!(payloads(&h.publishes(s2)), [b"fresh"]);
}
