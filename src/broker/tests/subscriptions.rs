//! Matching: overlapping filters, no-local, invalid filters, shared subscriptions.

use super::*;

#[test]
fn overlapping_filters_deliver_once_at_highest_qos_with_all_subscription_ids() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe_with(s, &[("t/+", opts(QoS::AtMostOnce))], Some(1));
    h.subscribe_with(s, &[("t/#", opts(QoS::ExactlyOnce))], Some(2));
    h.subscribe_with(s, &[("t/a", opts(QoS::AtLeastOnce))], Some(3));
    h.publish(p, "t/a", QoS::ExactlyOnce, b"x");
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    assert_eq!(got[0].properties.subscription_identifiers, vec![1, 2, 3]);
}

#[test]
fn no_local_skips_the_publishers_own_session() {
    let mut h = Harness::new();
    let a = h.connect("a");
    let b = h.connect("b");
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    h.subscribe_with(a, &[("t", no_local)], None);
    h.subscribe_with(b, &[("t", no_local)], None);
    h.publish(a, "t", QoS::AtMostOnce, b"x");
    assert!(h.publishes(a).is_empty());
    assert_eq!(h.publishes(b).len(), 1);
}

#[test]
fn own_messages_are_received_without_no_local() {
    let mut h = Harness::new();
    let a = h.connect("a");
    h.subscribe(a, "t", QoS::AtMostOnce);
    h.publish(a, "t", QoS::AtMostOnce, b"x");
    assert_eq!(h.publishes(a).len(), 1);
}

#[test]
fn invalid_filters_get_topic_filter_invalid() {
    let mut h = Harness::new();
    let s = h.connect("s");
    let ack = h.subscribe_with(
        s,
        &[
            ("a/#/b", opts(QoS::AtMostOnce)),
            ("ok/+", opts(QoS::AtLeastOnce)),
            ("$share//t", opts(QoS::AtMostOnce)),
            ("a+", opts(QoS::AtMostOnce)),
        ],
        None,
    );
    assert_eq!(
        ack.reason_codes,
        [
            ReasonCode::TopicFilterInvalid,
            ReasonCode::GrantedQoS1,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::TopicFilterInvalid
        ]
    );
    assert_eq!(h.broker.metrics().subscriptions, 1);
}

#[test]
fn v311_invalid_filter_gets_failure_0x80() {
    let mut h = Harness::new();
    let (s, _) = h.connect_with(v311("s", true));
    let ack = h.subscribe(s, "a/#/b", QoS::AtMostOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::UnspecifiedError]);
}

#[test]
fn resubscribe_replaces_options() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe_with(s, &[("t", opts(QoS::ExactlyOnce))], Some(4));
    h.subscribe_with(s, &[("t", opts(QoS::AtMostOnce))], None);
    assert_eq!(h.broker.metrics().subscriptions, 1);
    h.publish(p, "t", QoS::ExactlyOnce, b"x");
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    assert!(got[0].properties.subscription_identifiers.is_empty());
}

#[test]
fn unsubscribe_reports_success_or_no_subscription_existed() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtMostOnce);
    h.subscribe(s, "$share/g/t", QoS::AtMostOnce);
    let unsub = crate::codec::Unsubscribe {
        packet_id: 3,
        user_properties: Vec::new(),
        filters: vec!["t".into(), "nope".into(), "$share/g/t".into()],
    };
    h.send(s, Packet::Unsubscribe(unsub));
    let Packet::UnsubAck(ack) = &h.take(s)[0] else {
        panic!()
    };
    assert_eq!(ack.packet_id, 3);
    assert_eq!(
        ack.reason_codes,
        [
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted,
            ReasonCode::Success
        ]
    );
    assert_eq!(h.broker.metrics().subscriptions, 0);
    h.publish(p, "t", QoS::AtMostOnce, b"x");
    assert!(h.publishes(s).is_empty());
}

#[test]
fn shared_subscription_round_robins_among_three_members() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let members = [h.connect("m1"), h.connect("m2"), h.connect("m3")];
    for m in members {
        h.subscribe(m, "$share/g/t/+", QoS::AtLeastOnce);
    }
    for _ in 0..6 {
        h.publish(p, "t/x", QoS::AtMostOnce, b"x");
    }
    let counts: Vec<usize> = members.iter().map(|&m| h.publishes(m).len()).collect();
    assert_eq!(counts, [2, 2, 2]);
    // Order is strictly rotating.
    h.publish(p, "t/x", QoS::AtMostOnce, b"x");
    assert_eq!(h.publishes(members[0]).len(), 1);
    h.publish(p, "t/x", QoS::AtMostOnce, b"x");
    assert_eq!(h.publishes(members[1]).len(), 1);
}

#[test]
fn shared_subscription_delivers_once_per_group() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let a = [h.connect("a1"), h.connect("a2")];
    let b = [h.connect("b1"), h.connect("b2")];
    for m in a {
        h.subscribe(m, "$share/ga/t", QoS::AtMostOnce);
    }
    for m in b {
        h.subscribe(m, "$share/gb/t", QoS::AtMostOnce);
    }
    h.publish(p, "t", QoS::AtMostOnce, b"x");
    let got_a: usize = a.iter().map(|&m| h.publishes(m).len()).sum();
    let got_b: usize = b.iter().map(|&m| h.publishes(m).len()).sum();
    assert_eq!((got_a, got_b), (1, 1));
}

#[test]
fn shared_subscription_skips_disconnected_members() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (m1, _) = h.connect_with(v5_persistent("m1", 100));
    let m2 = h.connect("m2");
    h.subscribe(m1, "$share/g/t", QoS::AtLeastOnce);
    h.subscribe(m2, "$share/g/t", QoS::AtLeastOnce);
    h.lose(m1, ConnectionLoss::Io);
    for _ in 0..3 {
        h.publish(p, "t", QoS::AtLeastOnce, b"x");
    }
    assert_eq!(h.publishes(m2).len(), 3);
    assert_eq!(h.broker.clients()[0].queued, 0);
}

#[test]
fn shared_subscription_falls_back_to_offline_queue_for_qos1() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let (m1, _) = h.connect_with(v5_persistent("m1", 100));
    h.subscribe(m1, "$share/g/t", QoS::AtLeastOnce);
    h.lose(m1, ConnectionLoss::Io);
    h.publish(p, "t", QoS::AtLeastOnce, b"kept");
    h.publish(p, "t", QoS::AtMostOnce, b"lost");
    assert_eq!(h.broker.clients()[0].queued, 1);
}

#[test]
fn shared_no_local_is_protocol_error() {
    let mut h = Harness::new();
    let s = h.connect("s");
    let o = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    let sub = Subscribe {
        packet_id: 1,
        properties: SubscribeProperties::default(),
        filters: vec![("$share/g/t".into(), o)],
    };
    h.send(s, Packet::Subscribe(sub));
    assert_eq!(h.disconnect_reason(s), Some(ReasonCode::ProtocolError));
}

#[test]
fn plain_and_shared_subscriptions_both_deliver() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtMostOnce);
    h.subscribe(s, "$share/g/t", QoS::AtMostOnce);
    h.publish(p, "t", QoS::AtMostOnce, b"x");
    assert_eq!(h.publishes(s).len(), 2);
}

#[test]
fn wildcards_do_not_match_dollar_topics() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "#", QoS::AtMostOnce);
    h.subscribe(s, "+/x", QoS::AtMostOnce);
    h.publish(p, "$SYS/x", QoS::AtMostOnce, b"x");
    assert!(h.publishes(s).is_empty());
    h.subscribe(s, "$SYS/#", QoS::AtMostOnce);
    h.publish(p, "$SYS/x", QoS::AtMostOnce, b"x");
    assert_eq!(h.publishes(s).len(), 1);
}

#[test]
fn empty_subscribe_is_protocol_error() {
    let mut h = Harness::new();
    let s = h.connect("s");
    h.send(s, Packet::Subscribe(Subscribe::default()));
    assert_eq!(h.disconnect_reason(s), Some(ReasonCode::ProtocolError));
}

#[test]
fn shared_messages_owed_by_an_ending_session_go_to_another_member() {
    // Found by the simulator (scenarios/shared_subscriptions.toml, seed 24): a member whose
    // connection was already dying was chosen, its clean session then ended, and the acknowledged
    // QoS 1 message was lost for the whole group.
    let mut h = Harness::new();
    let p = h.connect("p");
    let m1 = h.connect("m1");
    let m2 = h.connect("m2");
    h.subscribe(m1, "$share/g/t", QoS::AtLeastOnce);
    h.subscribe(m2, "$share/g/t", QoS::AtLeastOnce);
    h.publish(p, "t", QoS::AtLeastOnce, b"one");
    h.publish(p, "t", QoS::AtLeastOnce, b"two");
    assert_eq!(payloads(&h.publishes(m1)), [b"one"]);
    assert_eq!(payloads(&h.publishes(m2)), [b"two"]);
    // m1 never acknowledges and its clean session ends with the connection.
    h.lose(m1, ConnectionLoss::Io);
    let got = h.publishes(m2);
    assert_eq!(
        payloads(&got),
        [b"one"],
        "m1's unacknowledged message moves to m2"
    );
    assert!(!got[0].dup, "a first delivery to m2");
}

#[test]
fn acknowledged_shared_messages_are_not_redelivered() {
    let mut h = Harness::new();
    let p = h.connect("p");
    let m1 = h.connect("m1");
    let m2 = h.connect("m2");
    h.subscribe(m1, "$share/g/t", QoS::AtLeastOnce);
    h.subscribe(m2, "$share/g/t", QoS::AtLeastOnce);
    h.publish(p, "t", QoS::AtLeastOnce, b"one");
    let got = h.publishes(m1);
    h.send(m1, puback(got[0].packet_id.unwrap()));
    h.lose(m1, ConnectionLoss::Io);
    assert!(h.publishes(m2).is_empty());
}
