//! QoS 0/1/2 flows in both directions, the in-flight window and retries.

use super::*;

#[test]
fn qos0_publish_is_forwarded_without_ack() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "a/b", QoS::AtMostOnce);
    h.publish(p, "a/b", QoS::AtMostOnce, b"hi");
    assert!(h.take(p).is_empty());
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].qos, got[0].packet_id, &got[0].payload[..]),
        (QoS::AtMostOnce, None, &b"hi"[..])
    );
    assert_eq!(&*got[0].topic, "a/b");
}

#[test]
fn qos1_publish_is_acked_and_delivered_with_packet_id() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "a/+", QoS::AtLeastOnce);
    h.publish(p, "a/b", QoS::AtLeastOnce, b"x");
    assert!(matches!(&h.take(p)[..], [Packet::PubAck(a)] if a.reason_code == ReasonCode::Success));
    let got = h.publishes(s);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(got[0].packet_id, Some(1));
    h.send(s, puback(1));
    assert_eq!(h.broker.clients()[1].inflight, 0);
}

#[test]
fn qos1_without_subscribers_acks_no_matching_subscribers() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.publish(p, "nobody/here", QoS::AtLeastOnce, b"x");
    let acks = h.take(p);
    let Packet::PubAck(ack) = &acks[0] else {
        panic!("{acks:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::NoMatchingSubscribers);
}

#[test]
fn qos2_inbound_delivers_once_and_completes() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::ExactlyOnce);
    h.send(
        p,
        Packet::Publish(publish("t", QoS::ExactlyOnce, Some(5), b"x")),
    );
    assert_eq!(h.take(p), vec![Packet::PubRec(Ack::new(5))]);
    let mut dup = publish("t", QoS::ExactlyOnce, Some(5), b"x");
    dup.dup = true;
    h.send(p, Packet::Publish(dup));
    assert_eq!(h.take(p), vec![Packet::PubRec(Ack::new(5))]);
    assert_eq!(
        h.publishes(s).len(),
        1,
        "the resent PUBLISH is not delivered again"
    );
    h.send(p, Packet::PubRel(Ack::new(5)));
    assert_eq!(h.take(p), vec![Packet::PubComp(Ack::new(5))]);
    // After release the id is free again: a new message with it is delivered.
    h.send(
        p,
        Packet::Publish(publish("t", QoS::ExactlyOnce, Some(5), b"y")),
    );
    assert_eq!(h.publishes(s).len(), 1);
}

#[test]
fn pubrel_for_unknown_id_gets_packet_identifier_not_found() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, Packet::PubRel(Ack::new(9)));
    let Packet::PubComp(comp) = &h.take(p)[0] else {
        panic!()
    };
    assert_eq!(comp.reason_code, ReasonCode::PacketIdentifierNotFound);
}

#[test]
fn qos2_outbound_flow_pubrec_pubrel_pubcomp() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::ExactlyOnce);
    h.publish(p, "t", QoS::ExactlyOnce, b"x");
    let got = h.publishes(s);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let id = got[0].packet_id.unwrap();
    h.send(s, Packet::PubRec(Ack::new(id)));
    assert_eq!(h.take(s), vec![Packet::PubRel(Ack::new(id))]);
    assert_eq!(
        h.broker.clients()[1].inflight,
        1,
        "still in flight until PUBCOMP"
    );
    h.send(s, Packet::PubComp(Ack::new(id)));
    assert_eq!(h.broker.clients()[1].inflight, 0);
}

#[test]
fn inbound_qos2_beyond_receive_maximum_disconnects() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 2,
        ..Default::default()
    });
    let p = h.connect("p");
    for id in 1..=3 {
        h.send(
            p,
            Packet::Publish(publish("t", QoS::ExactlyOnce, Some(id), b"x")),
        );
    }
    assert_eq!(
        h.disconnect_reason(p),
        Some(ReasonCode::ReceiveMaximumExceeded)
    );
    assert!(h.closed(p));
}

/// MQTT 3.1.1 has no Receive Maximum: a burst of unreleased QoS 2 PUBLISHes far beyond
/// `max_inflight` is acknowledged and delivered once each, never a reason to disconnect.
#[test]
fn inbound_qos2_burst_from_v311_client_is_not_cut_off() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 2,
        ..Default::default()
    });
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtMostOnce);
    let (p, ack) = h.connect_with(v311("p", true));
    assert_eq!(ack.reason_code, ReasonCode::Success);
    for id in 1..=100 {
        h.send(
            p,
            Packet::Publish(publish("t", QoS::ExactlyOnce, Some(id), b"x")),
        );
    }
    // A resent one (DUP) is acknowledged again but not delivered again.
    h.send(
        p,
        Packet::Publish(publish("t", QoS::ExactlyOnce, Some(50), b"x")),
    );
    assert!(
        !h.closed(p),
        "a 3.1.1 client is not disconnected for a burst"
    );
    let recs: Vec<u16> = h
        .take(p)
        .into_iter()
        .map(|packet| match packet {
            Packet::PubRec(a) => a.packet_id,
            other => panic!("expected PUBREC, got {other:?}"),
        })
        .collect();
    let mut expected: Vec<u16> = (1..=100).collect();
    expected.push(50);
    assert_eq!(recs, expected);
    assert_eq!(h.publishes(s).len(), 100, "each delivered exactly once");
    for id in 1..=100 {
        h.send(p, Packet::PubRel(Ack::new(id)));
    }
    let comps = h.take(p);
    assert_eq!(comps.len(), 100);
    assert!(
        comps
            .iter()
            .zip(1..)
            .all(|(c, id)| *c == Packet::PubComp(Ack::new(id)))
    );
    assert!(!h.closed(p));
}

#[test]
fn publish_above_max_qos_disconnects() {
    let mut h = Harness::with_config(BrokerConfig {
        max_qos: QoS::AtLeastOnce,
        ..Default::default()
    });
    let p = h.connect("p");
    h.publish(p, "t", QoS::ExactlyOnce, b"x");
    assert_eq!(h.disconnect_reason(p), Some(ReasonCode::QoSNotSupported));
}

#[test]
fn retain_when_not_available_disconnects() {
    let mut h = Harness::with_config(BrokerConfig {
        retain_available: false,
        ..Default::default()
    });
    let p = h.connect("p");
    let mut msg = publish("t", QoS::AtMostOnce, None, b"x");
    msg.retain = true;
    h.send(p, Packet::Publish(msg));
    assert_eq!(h.disconnect_reason(p), Some(ReasonCode::RetainNotSupported));
}

#[test]
fn invalid_topic_name_disconnects() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.publish(p, "a/+", QoS::AtMostOnce, b"x");
    assert_eq!(h.disconnect_reason(p), Some(ReasonCode::TopicNameInvalid));
}

#[test]
fn max_qos_downgrades_granted_qos() {
    let mut h = Harness::with_config(BrokerConfig {
        max_qos: QoS::AtLeastOnce,
        ..Default::default()
    });
    let p = h.connect("p");
    let s = h.connect("s");
    let ack = h.subscribe(s, "t", QoS::ExactlyOnce);
    assert_eq!(ack.reason_codes, vec![ReasonCode::GrantedQoS1]);
    h.publish(p, "t", QoS::AtLeastOnce, b"x");
    assert_eq!(h.publishes(s)[0].qos, QoS::AtLeastOnce);
}

#[test]
fn delivered_qos_is_min_of_publish_and_granted() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.publish(p, "t", QoS::ExactlyOnce, b"x");
    h.publish(p, "t", QoS::AtMostOnce, b"y");
    let got = h.publishes(s);
    assert_eq!(
        got.iter().map(|p| p.qos).collect::<Vec<_>>(),
        [QoS::AtLeastOnce, QoS::AtMostOnce]
    );
}

#[test]
fn inflight_window_respects_client_receive_maximum_and_refills_on_puback() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let mut c = v5("s");
    c.properties.receive_maximum = Some(2);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    for _ in 0..5 {
        h.publish(p, "t", QoS::AtLeastOnce, b"m");
    }
    let first = h.publishes(s);
    assert_eq!(
        first.iter().map(|p| p.packet_id).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
    assert_eq!(h.broker.clients()[1].queued, 3);
    h.send(s, puback(1));
    let next = h.publishes(s);
    assert_eq!(
        next.iter().map(|p| p.packet_id).collect::<Vec<_>>(),
        [Some(3)]
    );
    h.send(s, puback(2));
    h.send(s, puback(3));
    assert_eq!(h.publishes(s).len(), 2);
    assert_eq!(h.broker.clients()[1].queued, 0);
}

#[test]
fn server_max_inflight_also_bounds_the_window() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 1,
        ..Default::default()
    });
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.publish(p, "t", QoS::AtLeastOnce, b"1");
    h.publish(p, "t", QoS::AtLeastOnce, b"2");
    assert_eq!(payloads(&h.publishes(s)), [b"1"]);
    h.send(s, puback(1));
    assert_eq!(payloads(&h.publishes(s)), [b"2"]);
}

#[test]
fn retry_resends_unacked_with_dup_on_live_connection() {
    let mut h = Harness::with_config(BrokerConfig {
        retry_interval: Duration::from_secs(10),
        ..Default::default()
    });
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.publish(p, "t", QoS::AtLeastOnce, b"x");
    assert!(!h.publishes(s)[0].dup);
    h.advance_secs(5);
    assert!(h.publishes(s).is_empty());
    h.advance_secs(6);
    let again = h.publishes(s);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup);
    assert_eq!(again[0].packet_id, Some(1));
    h.send(s, puback(1));
    h.advance_secs(30);
    assert!(h.publishes(s).is_empty());
}

#[test]
fn v311_subscriber_gets_no_v5_properties() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (s, _) = h.connect_with(v311("s", true));
    h.subscribe_with(s, &[("t", opts(QoS::AtMostOnce))], None);
    let mut msg = publish("t", QoS::AtMostOnce, None, b"x");
    msg.properties
        .user_properties
        .push((ByteString::from("k"), ByteString::from("v")));
    h.send(p, Packet::Publish(msg));
    let got = h.publishes(s);
    assert!(got[0].properties.user_properties.is_empty());
}

#[test]
fn v5_subscriber_gets_user_properties() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtMostOnce);
    let mut msg = publish("t", QoS::AtMostOnce, None, b"x");
    msg.properties
        .user_properties
        .push((ByteString::from("k"), ByteString::from("v")));
    msg.properties.content_type = Some(ByteString::from("text/plain"));
    h.send(p, Packet::Publish(msg));
    let got = h.publishes(s);
    assert_eq!(got[0].properties.user_properties.len(), 1);
    assert_eq!(
        got[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
}

#[test]
fn publish_larger_than_client_maximum_packet_size_is_dropped() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let mut c = v5("s");
    c.properties.maximum_packet_size = Some(64);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.publish(p, "t", QoS::AtLeastOnce, b"small");
    h.publish(p, "t", QoS::AtLeastOnce, &[b'x'; 200]);
    h.publish(p, "t", QoS::AtLeastOnce, b"small again");
    let got = h.publishes(s);
    assert_eq!(payloads(&got), [&b"small"[..], &b"small again"[..]]);
    assert_eq!(h.broker.metrics().messages_dropped, [0, 1, 0]);
    assert_eq!(
        h.broker.clients()[1].inflight,
        2,
        "the dropped message holds no slot"
    );
}

/// A client may not send Subscription Identifiers in PUBLISH (MQTT-3.3.4-6) nor a Response
/// Topic with wildcards (MQTT-3.3.2-14): DISCONNECT 0x82, nothing delivered, others unaffected.
#[test]
fn publish_with_subscription_id_or_wildcard_response_topic_is_a_protocol_error() {
    let cases: [fn(&mut Publish); 3] = [
        |p| p.properties.subscription_identifiers = vec![7],
        |p| p.properties.response_topic = Some(ByteString::from("a/+")),
        |p| p.properties.response_topic = Some(ByteString::from("#")),
    ];
    for (i, set) in cases.into_iter().enumerate() {
        let mut h = Harness::new();
        let s = h.connect("s");
        h.subscribe(s, "t", QoS::AtMostOnce);
        let p = h.connect("p");
        let mut bad = publish("t", QoS::AtLeastOnce, Some(1), b"x");
        set(&mut bad);
        h.send(p, Packet::Publish(bad));
        assert_eq!(
            h.disconnect_reason(p),
            Some(ReasonCode::ProtocolError),
            "case {i}"
        );
        assert!(h.closed(p), "case {i}");
        assert!(h.publishes(s).is_empty(), "case {i}: not delivered");
        // A good Response Topic is fine and the subscriber still works.
        let other = h.connect("other");
        let mut good = publish("t", QoS::AtMostOnce, None, b"ok");
        good.properties.response_topic = Some(ByteString::from("reply/to/me"));
        h.send(other, Packet::Publish(good));
        assert_eq!(payloads(&h.publishes(s)), [b"ok"], "case {i}");
        assert!(!h.closed(other) && !h.closed(s), "case {i}");
    }
}
