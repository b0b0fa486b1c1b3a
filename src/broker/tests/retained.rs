//! Retained messages: store, clear, retain handling, retain-as-published, expiry.

use super::*;

fn retained(topic: &str, qos: QoS, payload: &'static [u8]) -> Packet {
    let mut p = publish(topic, qos, (qos != QoS::AtMostOnce).then_some(1), payload);
    p.retain = true;
    Packet::Publish(p)
}

fn with_handling(qos: QoS, h: crate::codec::RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling: h,
        ..opts(qos)
    }
}

#[test]
fn retained_message_is_sent_on_subscribe_with_retain_flag() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, retained("a/b", QoS::AtLeastOnce, b"r"));
    assert_eq!(h.broker.metrics().retained, 1);
    let s = h.connect("s");
    h.subscribe(s, "a/#", QoS::ExactlyOnce);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    assert_eq!(got[0].qos, QoS::AtLeastOnce, "min(stored QoS, granted)");
    assert_eq!(&got[0].payload[..], b"r");
}

#[test]
fn retained_with_empty_payload_clears() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, retained("a/b", QoS::AtMostOnce, b"r"));
    h.send(p, retained("a/b", QoS::AtMostOnce, b""));
    assert_eq!(h.broker.metrics().retained, 0);
    let s = h.connect("s");
    h.subscribe(s, "a/b", QoS::AtMostOnce);
    assert!(h.publishes(s).is_empty());
}

#[test]
fn retain_handling_1_sends_only_for_new_subscription() {
    use crate::codec::RetainHandling::SendIfNew;
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, retained("t", QoS::AtMostOnce, b"r"));
    let s = h.connect("s");
    h.subscribe_with(s, &[("t", with_handling(QoS::AtMostOnce, SendIfNew))], None);
    assert_eq!(h.publishes(s).len(), 1);
    h.subscribe_with(s, &[("t", with_handling(QoS::AtMostOnce, SendIfNew))], None);
    assert!(h.publishes(s).is_empty());
}

#[test]
fn retain_handling_0_resends_on_every_subscribe() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, retained("t", QoS::AtMostOnce, b"r"));
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtMostOnce);
    h.subscribe(s, "t", QoS::AtMostOnce);
    h.take(s);
    h.subscribe(s, "t", QoS::AtMostOnce);
    assert_eq!(h.publishes(s).len(), 1);
}

#[test]
fn retain_handling_2_never_sends() {
    use crate::codec::RetainHandling::DoNotSend;
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, retained("t", QoS::AtMostOnce, b"r"));
    let s = h.connect("s");
    h.subscribe_with(s, &[("t", with_handling(QoS::AtMostOnce, DoNotSend))], None);
    assert!(h.publishes(s).is_empty());
}

#[test]
fn retain_as_published_keeps_the_flag_on_forwarded_messages() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let keep = h.connect("keep");
    let plain = h.connect("plain");
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..opts(QoS::AtMostOnce)
    };
    h.subscribe_with(keep, &[("t", rap)], None);
    h.subscribe(plain, "t", QoS::AtMostOnce);
    h.send(p, retained("t", QoS::AtMostOnce, b"r"));
    assert!(h.publishes(keep)[0].retain);
    assert!(!h.publishes(plain)[0].retain);
}

#[test]
fn retained_message_expiry_drops_and_counts_down() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let mut m = publish("t", QoS::AtMostOnce, None, b"r");
    m.retain = true;
    m.properties.message_expiry_interval = Some(10);
    h.send(p, Packet::Publish(m));
    h.advance_secs(4);
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtMostOnce);
    let got = h.publishes(s);
    assert_eq!(got[0].properties.message_expiry_interval, Some(6));
    h.advance_secs(7);
    h.subscribe(s, "t", QoS::AtMostOnce);
    assert!(h.publishes(s).is_empty());
    assert_eq!(h.broker.metrics().retained, 0);
}

#[test]
fn shared_subscription_gets_no_retained_messages() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, retained("t", QoS::AtMostOnce, b"r"));
    let s = h.connect("s");
    h.subscribe(s, "$share/g/t", QoS::AtMostOnce);
    assert!(h.publishes(s).is_empty());
}

#[test]
fn retained_messages_carry_the_subscription_identifier() {
    let mut h = Harness::new();
    let p = h.connect("p");
    h.send(p, retained("t", QoS::AtMostOnce, b"r"));
    let s = h.connect("s");
    h.subscribe_with(s, &[("t", opts(QoS::AtMostOnce))], Some(42));
    assert_eq!(
        h.publishes(s)[0].properties.subscription_identifiers,
        vec![42]
    );
}
