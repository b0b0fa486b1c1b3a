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

/// A clustered broker that holds SUBACKs until the cluster confirms its route changes.
fn holding() -> Harness {
    let mut h = clustered();
    h.broker.hold_subacks_for_routes();
    h
}

fn send_subscribe(h: &mut Harness, conn: ConnId, filter: &str, packet_id: u16) {
    let sub = Subscribe {
        packet_id,
        properties: SubscribeProperties::default(),
        filters: vec![(ByteString::from(filter), opts(QoS::AtLeastOnce))],
    };
    h.send(conn, Packet::Subscribe(sub));
}

/// The packet ids of the SUBACKs among `packets`, and the payloads of the PUBLISHes, in order.
fn subacks_and_payloads(packets: &[Packet]) -> (Vec<u16>, Vec<Vec<u8>>) {
    let mut acks = Vec::new();
    let mut payloads = Vec::new();
    for p in packets {
        match p {
            Packet::SubAck(a) => acks.push(a.packet_id),
            Packet::Publish(p) => payloads.push(p.payload.to_vec()),
            _ => {}
        }
    }
    (acks, payloads)
}

#[test]
fn a_suback_for_a_new_route_waits_until_the_cluster_confirms_it() {
    let mut h = holding();
    let s = h.connect("s");
    send_subscribe(&mut h, s, "t/#", 1);
    assert_eq!(changes(&mut h), vec![added("t/#")]);
    assert!(subacks_and_payloads(&h.take(s)).0.is_empty(), "held");
    h.broker.routes_confirmed(1, h.now);
    h.collect();
    assert_eq!(subacks_and_payloads(&h.take(s)).0, [1]);
}

#[test]
fn a_suback_also_waits_for_an_unconfirmed_route_it_shares_and_subacks_keep_their_order() {
    let mut h = holding();
    let (a, b) = (h.connect("a"), h.connect("b"));
    send_subscribe(&mut h, a, "t/#", 1);
    send_subscribe(&mut h, b, "t/#", 2); // no new route, but the route is not confirmed yet
    send_subscribe(&mut h, a, "u", 3);
    assert_eq!(changes(&mut h), vec![added("t/#"), added("u")]);
    assert!(subacks_and_payloads(&h.take(b)).0.is_empty());
    h.broker.routes_confirmed(1, h.now);
    h.collect();
    assert_eq!(subacks_and_payloads(&h.take(a)).0, [1]);
    assert_eq!(subacks_and_payloads(&h.take(b)).0, [2]);
    h.broker.routes_confirmed(2, h.now);
    h.collect();
    assert_eq!(subacks_and_payloads(&h.take(a)).0, [3]);
    // Nothing pending: the next SUBACK is immediate.
    send_subscribe(&mut h, b, "u", 4);
    assert_eq!(subacks_and_payloads(&h.take(b)).0, [4]);
}

#[test]
fn retained_messages_follow_a_held_suback_with_the_newest_value() {
    let mut h = holding();
    let p = h.connect("p");
    let mut retained = publish("r", QoS::AtMostOnce, None, b"old");
    retained.retain = true;
    h.send(p, Packet::Publish(retained.clone()));
    let s = h.connect("s");
    send_subscribe(&mut h, s, "r", 1);
    retained.payload = bytes::Bytes::from_static(b"new");
    h.send(p, Packet::Publish(retained));
    // The live subscription already got the new value; the SUBACK is still held.
    assert_eq!(
        subacks_and_payloads(&h.take(s)),
        (vec![], vec![b"new".to_vec()])
    );
    h.broker.routes_confirmed(1, h.now);
    h.collect();
    assert_eq!(
        subacks_and_payloads(&h.take(s)),
        (vec![1], vec![b"new".to_vec()])
    );
}

#[test]
fn a_held_suback_of_a_closed_connection_is_dropped() {
    let mut h = holding();
    let s = h.connect("s");
    send_subscribe(&mut h, s, "t", 1);
    h.lose(s, ConnectionLoss::Io);
    h.broker.routes_confirmed(5, h.now);
    h.collect();
    assert!(subacks_and_payloads(&h.take(s)).0.is_empty());
}
