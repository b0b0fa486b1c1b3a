//! A session moving between two brokers (cluster-wide takeover): export on the old node, import
//! on the new one, and the client's CONNECT there resumes it.

use super::*;
use crate::broker::SessionSnapshot;

/// A persistent MQTT 5 client "c" on `h` with a Receive Maximum of 2, subscribed to `t/#`
/// (QoS 1) and `$share/g/s` (QoS 2).
fn persistent_client(h: &mut Harness) -> ConnId {
    let mut connect = v5_persistent("c", 600);
    connect.properties.receive_maximum = Some(2);
    let (c, _) = h.connect_with(connect);
    h.subscribe(c, "t/#", QoS::AtLeastOnce);
    h.subscribe(c, "$share/g/s", QoS::ExactlyOnce);
    c
}

fn moved(a: &mut Harness) -> SessionSnapshot {
    let snapshot = a.broker.take_session("c", false, a.now).expect("a session");
    a.collect();
    // The snapshot survives the wire form the cluster uses.
    let bytes = postcard::to_allocvec(&snapshot).unwrap();
    assert_eq!(
        postcard::from_bytes::<SessionSnapshot>(&bytes).unwrap(),
        snapshot
    );
    snapshot
}

fn ids_and_dups(packets: &[Packet]) -> Vec<(Option<u16>, bool, Vec<u8>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id, p.dup, p.payload.to_vec())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_moved_session_resumes_with_its_subscriptions_in_flight_messages_and_queue() {
    let mut a = Harness::new();
    let c = persistent_client(&mut a);
    let p = a.connect("p");
    for payload in [&b"1"[..], b"2", b"3"] {
        let publish = publish("t/x", QoS::AtLeastOnce, Some(40), payload);
        a.send(
            p,
            Packet::Publish(Publish {
                packet_id: Some(40 + payload[0] as u16),
                ..publish
            }),
        );
    }
    // Two in flight (the client's Receive Maximum), one queued; none acknowledged.
    assert_eq!(ids_and_dups(&a.take(c)).len(), 2);

    let snapshot = moved(&mut a);
    assert_eq!(a.disconnect_reason(c), Some(ReasonCode::SessionTakenOver));
    assert!(a.closed(c));
    assert_eq!((snapshot.inflight.len(), snapshot.queue.len()), (2, 1));
    assert_eq!(snapshot.subscriptions.len(), 2);
    assert_eq!(
        a.broker.metrics().sessions,
        1,
        "only the publisher's session is left on a"
    );

    let mut b = Harness::new();
    b.broker.import_session(snapshot, b.now).unwrap();
    let mut connect = v5_persistent("c", 600);
    connect.properties.receive_maximum = Some(2);
    let (c2, ack) = b.connect_with(connect);
    assert!(ack.session_present);
    // The two in flight again, same ids, with DUP; the queued one waits for a free slot.
    let resent = ids_and_dups(&b.take(c2));
    assert_eq!(
        resent
            .iter()
            .map(|(_, dup, p)| (*dup, p.clone()))
            .collect::<Vec<_>>(),
        [(true, b"1".to_vec()), (true, b"2".to_vec())]
    );
    b.send(c2, puback(resent[0].0.unwrap()));
    assert_eq!(ids_and_dups(&b.take(c2)), [(Some(3), false, b"3".to_vec())]);
    // The subscriptions moved too: a publish on b reaches the client.
    let p2 = b.connect("p2");
    b.publish(p2, "t/y", QoS::AtLeastOnce, b"on b");
    b.send(c2, puback(resent[1].0.unwrap()));
    assert_eq!(payloads(&b.publishes(c2)), [&b"on b"[..]]);
}

#[test]
fn qos2_state_moves_so_nothing_is_delivered_twice() {
    let mut a = Harness::new();
    let c = persistent_client(&mut a);
    let watcher = a.connect("w");
    a.subscribe(watcher, "in/#", QoS::AtLeastOnce);
    // Inbound: the client's QoS 2 PUBLISH is delivered and PUBREC'd, PUBREL not yet sent.
    a.send(
        c,
        Packet::Publish(publish("in/1", QoS::ExactlyOnce, Some(7), b"once")),
    );
    assert_eq!(a.take(c), vec![Packet::PubRec(Ack::new(7))]);
    assert_eq!(a.publishes(watcher).len(), 1);
    // Outbound: a shared-group QoS 2 message PUBREC'd by the client; PUBREL sent, no PUBCOMP.
    let p = a.connect("p");
    a.publish(p, "s", QoS::ExactlyOnce, b"two");
    let out = ids_and_dups(&a.take(c));
    let id = out[0].0.unwrap();
    a.send(c, Packet::PubRec(Ack::new(id)));
    assert_eq!(a.take(c), vec![Packet::PubRel(Ack::new(id))]);

    let snapshot = moved(&mut a);
    assert_eq!(snapshot.incoming_qos2, [7]);
    let mut b = Harness::new();
    let watcher_b = b.connect("w");
    b.subscribe(watcher_b, "in/#", QoS::AtLeastOnce);
    b.broker.import_session(snapshot, b.now).unwrap();
    let (c2, ack) = b.connect_with(v5_persistent("c", 600));
    assert!(ack.session_present);
    // Only the PUBREL is resent, not the message.
    assert_eq!(b.take(c2), vec![Packet::PubRel(Ack::new(id))]);
    // The client resends its PUBLISH (DUP): acknowledged, not delivered again.
    let mut again = publish("in/1", QoS::ExactlyOnce, Some(7), b"once");
    again.dup = true;
    b.send(c2, Packet::Publish(again));
    assert_eq!(b.take(c2), vec![Packet::PubRec(Ack::new(7))]);
    assert!(b.publishes(watcher_b).is_empty());
    b.send(c2, Packet::PubRel(Ack::new(7)));
    assert_eq!(b.take(c2), vec![Packet::PubComp(Ack::new(7))]);
}

#[test]
fn a_clean_start_takeover_ends_the_session_here_and_moves_nothing() {
    let mut a = Harness::new();
    let mut connect = v5_persistent("c", 600);
    connect.will = Some(will("gone/c", b"bye"));
    let (c, _) = a.connect_with(connect);
    let watcher = a.connect("w");
    a.subscribe(watcher, "gone/#", QoS::AtMostOnce);
    assert!(a.broker.take_session("c", true, a.now).is_none());
    a.collect();
    assert!(a.closed(c));
    assert_eq!(payloads(&a.publishes(watcher)), [&b"bye"[..]]);
    assert!(a.broker.take_session("c", false, a.now).is_none(), "gone");
}

#[test]
fn a_non_clean_takeover_cancels_the_will_of_the_old_connection() {
    let mut a = Harness::new();
    let mut connect = v5_persistent("c", 600);
    connect.will = Some(will("gone/c", b"bye"));
    a.connect_with(connect);
    let watcher = a.connect("w");
    a.subscribe(watcher, "gone/#", QoS::AtMostOnce);
    a.broker.take_session("c", false, a.now).unwrap();
    a.advance_secs(700);
    assert!(a.publishes(watcher).is_empty());
}

#[test]
fn an_imported_session_replaces_a_stale_local_one_and_expires_if_never_resumed() {
    let mut b = Harness::new();
    let (old, _) = b.connect_with(v5_persistent("c", 600));
    b.subscribe(old, "stale/#", QoS::AtLeastOnce);
    b.lose(old, ConnectionLoss::Io);

    let mut a = Harness::new();
    persistent_client(&mut a);
    let mut snapshot = moved(&mut a);
    snapshot.expiry_interval = 30;
    b.broker.import_session(snapshot, b.now).unwrap();
    let clients = b.broker.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(
        b.broker.metrics().subscriptions,
        2,
        "t/# and the shared one, not stale/#"
    );
    b.advance_secs(31);
    assert!(b.broker.clients().is_empty(), "expired without its client");
}

#[test]
fn a_snapshot_with_a_broken_message_is_refused() {
    let mut a = Harness::new();
    let c = persistent_client(&mut a);
    let p = a.connect("p");
    a.publish(p, "t/1", QoS::AtLeastOnce, b"x");
    a.take(c);
    let mut snapshot = moved(&mut a);
    snapshot.inflight[0].delivery.publish.truncate(3);
    let mut b = Harness::new();
    assert!(b.broker.import_session(snapshot.clone(), b.now).is_err());
    snapshot.inflight.clear();
    snapshot.protocol = 9;
    assert!(b.broker.import_session(snapshot, b.now).is_err());
    assert!(b.broker.clients().is_empty());
}
