//! The cluster seam of the broker: route changes (first subscriber adds, last one removes,
//! shared subscriptions count for their inner filter), local publishes handed to the cluster,
//! and delivery of publishes forwarded by other nodes.

use super::*;
use crate::broker::RouteChange;

fn clustered() -> Harness {
    let mut h = Harness::new();
    h.broker.enable_cluster(1, 0);
    h
}

fn changes(h: &mut Harness) -> Vec<RouteChange> {
    std::iter::from_fn(|| h.broker.poll_route_change()).collect()
}

fn added(f: &str) -> RouteChange {
    RouteChange::Added(ByteString::from(f))
}

fn removed(f: &str) -> RouteChange {
    RouteChange::Removed(ByteString::from(f))
}

fn unsubscribe(h: &mut Harness, conn: ConnId, filter: &str) {
    let unsub = crate::codec::Unsubscribe {
        packet_id: 9,
        user_properties: Vec::new(),
        filters: vec![filter.into()],
    };
    h.send(conn, Packet::Unsubscribe(unsub));
}

fn forwarded(topic: &str, retain: bool) -> Publish {
    let mut p = publish(topic, QoS::AtLeastOnce, None, b"remote");
    p.retain = retain;
    p.properties.user_properties = vec![("k".into(), "v".into())];
    p
}

#[test]
fn first_subscriber_adds_a_route_and_last_one_removes_it() {
    let mut h = clustered();
    let a = h.connect("a");
    let b = h.connect("b");
    h.subscribe(a, "t/#", QoS::AtMostOnce);
    h.subscribe(b, "t/#", QoS::AtLeastOnce);
    h.subscribe(a, "t/#", QoS::AtLeastOnce);
    assert_eq!(changes(&mut h), vec![added("t/#")]);
    unsubscribe(&mut h, a, "t/#");
    assert!(changes(&mut h).is_empty(), "b still subscribes");
    h.lose(b, ConnectionLoss::Io);
    assert_eq!(changes(&mut h), vec![removed("t/#")]);
}

#[test]
fn shared_subscriptions_announce_their_inner_filter() {
    let mut h = clustered();
    let a = h.connect("a");
    h.subscribe(a, "$share/g/s/+", QoS::AtMostOnce);
    h.subscribe(a, "s/+", QoS::AtMostOnce);
    assert_eq!(changes(&mut h), vec![added("s/+")]);
    unsubscribe(&mut h, a, "s/+");
    assert!(
        changes(&mut h).is_empty(),
        "the shared group still needs s/+"
    );
    unsubscribe(&mut h, a, "$share/g/s/+");
    assert_eq!(changes(&mut h), vec![removed("s/+")]);
}

#[test]
fn an_unclustered_broker_queues_nothing() {
    let mut h = Harness::new();
    let a = h.connect("a");
    h.subscribe(a, "t", QoS::AtMostOnce);
    h.publish(a, "t", QoS::AtMostOnce, b"x");
    assert!(h.broker.poll_route_change().is_none());
    assert!(h.broker.poll_forward().is_none());
}

#[test]
fn local_publishes_and_wills_are_handed_to_the_cluster() {
    let mut h = clustered();
    let p = h.connect("p");
    h.publish(p, "x/1", QoS::AtLeastOnce, b"x");
    let fwd = h
        .broker
        .poll_forward()
        .expect("publish queued for the cluster");
    assert_eq!(fwd.topic(), "x/1");
    assert_eq!(fwd.payload(), b"x");
    assert_eq!(fwd.qos(), QoS::AtLeastOnce);
    let mut c = v5("w");
    c.will = Some(will("gone/w", b"bye"));
    let (w, _) = h.connect_with(c);
    h.lose(w, ConnectionLoss::Io);
    assert_eq!(
        h.broker.poll_forward().map(|f| f.topic().to_owned()),
        Some("gone/w".to_string())
    );
}

#[test]
fn a_clustered_publish_without_local_subscribers_is_not_a_drop() {
    let mut h = clustered();
    let p = h.connect("p");
    h.publish(p, "nobody/here", QoS::AtLeastOnce, b"x");
    let Packet::PubAck(ack) = &h.take(p)[0] else {
        panic!("no PUBACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert_eq!(h.broker.metrics().messages_dropped, [0, 0, 0]);
}

#[test]
fn a_forwarded_publish_reaches_local_subscribers_once_and_is_not_forwarded_again() {
    let mut h = clustered();
    let s = h.connect("s");
    h.subscribe_with(s, &[("t/+", opts(QoS::AtLeastOnce))], Some(1));
    h.subscribe_with(s, &[("t/#", opts(QoS::AtLeastOnce))], Some(2));
    assert_eq!(
        h.broker
            .deliver_forwarded(forwarded("t/a", false), None, h.now),
        1
    );
    h.collect();
    let got = h.publishes(s);
    assert_eq!(got.len(), 1, "overlapping filters deliver once");
    assert_eq!(&got[0].payload[..], b"remote");
    assert_eq!(got[0].properties.subscription_identifiers, vec![1, 2]);
    assert_eq!(
        got[0].properties.user_properties,
        vec![(ByteString::from("k"), ByteString::from("v"))]
    );
    assert!(h.broker.poll_forward().is_none());
}

#[test]
fn a_forwarded_retained_publish_is_stored() {
    let mut h = clustered();
    h.broker
        .deliver_forwarded(forwarded("r/1", true), None, h.now);
    let s = h.connect("s");
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
}

#[test]
fn a_malformed_forwarded_publish_is_dropped() {
    let mut h = clustered();
    let s = h.connect("s");
    h.subscribe(s, "#", QoS::AtLeastOnce);
    assert_eq!(
        h.broker
            .deliver_forwarded(forwarded("t/+", false), None, h.now),
        0
    );
    assert_eq!(
        h.broker
            .deliver_forwarded(forwarded("", false), None, h.now),
        0
    );
    h.collect();
    assert!(h.publishes(s).is_empty());
}
