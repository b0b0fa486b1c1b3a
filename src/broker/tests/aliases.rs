//! Topic aliases in both directions.

use super::*;

fn aliased(topic: &str, alias: u16) -> Packet {
    let mut p = publish(topic, QoS::AtMostOnce, None, b"x");
    p.properties.topic_alias = Some(alias);
    Packet::Publish(p)
}

#[test]
fn client_topic_alias_is_resolved() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "long/topic", QoS::AtMostOnce);
    h.send(p, aliased("long/topic", 3));
    h.send(p, aliased("", 3));
    let got = h.publishes(s);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| &*p.topic == "long/topic"));
}

#[test]
fn client_alias_above_maximum_disconnects() {
    let mut h = Harness::with_config(BrokerConfig {
        max_topic_alias: 4,
        ..Default::default()
    });
    let p = h.connect("p");
    h.send(p, aliased("t", 5));
    assert_eq!(h.disconnect_reason(p), Some(ReasonCode::TopicAliasInvalid));
}

#[test]
fn client_alias_zero_disconnects() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, aliased("t", 0));
    assert_eq!(h.disconnect_reason(p), Some(ReasonCode::TopicAliasInvalid));
}

#[test]
fn unknown_alias_with_empty_topic_is_protocol_error() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, aliased("", 1));
    assert_eq!(h.disconnect_reason(p), Some(ReasonCode::ProtocolError));
}

fn alias_client(h: &mut Harness, max: u16) -> ConnId {
    let mut c = v5("s");
    c.properties.topic_alias_maximum = Some(max);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "#", QoS::AtMostOnce);
    s
}

#[test]
fn server_assigns_aliases_first_come_until_maximum() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = alias_client(&mut h, 1);
    for topic in ["a", "a", "b"] {
        h.publish(p, topic, QoS::AtMostOnce, b"x");
    }
    let got = h.publishes(s);
    let seen: Vec<(&str, Option<u16>)> = got
        .iter()
        .map(|p| (&*p.topic, p.properties.topic_alias))
        .collect();
    assert_eq!(seen, [("a", Some(1)), ("", Some(1)), ("b", None)]);
}

#[test]
fn server_aliases_reset_on_reconnect() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = alias_client(&mut h, 5);
    h.publish(p, "a", QoS::AtMostOnce, b"x");
    h.publish(p, "a", QoS::AtMostOnce, b"x");
    h.take(s);
    let s2 = alias_client(&mut h, 5);
    h.publish(p, "a", QoS::AtMostOnce, b"x");
    let got = h.publishes(s2);
    assert_eq!(
        (&*got[0].topic, got[0].properties.topic_alias),
        ("a", Some(1))
    );
}

#[test]
fn no_server_aliases_without_client_maximum() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "a", QoS::AtMostOnce);
    h.publish(p, "a", QoS::AtMostOnce, b"x");
    h.publish(p, "a", QoS::AtMostOnce, b"x");
    assert!(
        h.publishes(s)
            .iter()
            .all(|p| p.properties.topic_alias.is_none() && &*p.topic == "a")
    );
}

/// A new outbound alias adds its property to the whole topic: the size checked against the
/// client's Maximum Packet Size is the aliased packet's (found by the broker_session fuzz target:
/// a 19-byte PUBLISH went to a client whose maximum was 16). Without room for the alias the
/// message goes without one; an existing alias, which drops the topic, lets it through.
#[test]
fn new_outbound_alias_counts_against_the_client_maximum_packet_size() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let mut c = v5("s");
    c.properties.topic_alias_maximum = Some(4);
    // "t/1" with one payload byte: 2 + 2 + 3 + 1 (properties length) + 1 = 9 bytes; with a new
    // alias (3 more property bytes) 12; with the alias alone (no topic) 9.
    c.properties.maximum_packet_size = Some(10);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t/#", QoS::AtMostOnce);
    h.publish(p, "t/1", QoS::AtMostOnce, b"x");
    h.publish(p, "t/1", QoS::AtMostOnce, b"x");
    let got = h.publishes(s);
    let seen: Vec<(&str, Option<u16>)> = got
        .iter()
        .map(|p| (&*p.topic, p.properties.topic_alias))
        .collect();
    assert_eq!(seen, [("t/1", None), ("t/1", None)]);
    for p in &got {
        let len = crate::codec::encoded_len(&Packet::Publish(p.clone()), Protocol::V5);
        assert!(
            len <= 10,
            "{len} bytes sent to a client whose maximum is 10"
        );
    }

    // Room for the new alias: it is assigned, then used.
    let mut h = Harness::new();
    let p = h.connect("p");
    let mut c = v5("s");
    c.properties.topic_alias_maximum = Some(4);
    c.properties.maximum_packet_size = Some(12);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t/#", QoS::AtMostOnce);
    h.publish(p, "t/1", QoS::AtMostOnce, b"x");
    h.publish(p, "t/1", QoS::AtMostOnce, b"x");
    let seen: Vec<(String, Option<u16>)> = h
        .publishes(s)
        .iter()
        .map(|p| (p.topic.to_string(), p.properties.topic_alias))
        .collect();
    assert_eq!(seen, [("t/1".into(), Some(1)), ("".into(), Some(1))]);
}
