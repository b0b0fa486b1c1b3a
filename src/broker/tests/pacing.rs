//! Output pacing: a connection is handed at most `conn_output_window` bytes of PUBLISHes before
//! it pauses until its writer reports everything written, so a retained flood or a resumed
//! session is delivered at the pace the client reads instead of being pushed at once (and the
//! client dropped as a slow consumer). Also the per-connection memory bounds: topic alias bytes
//! and the subscription quota.

use super::*;

static KB: [u8; 1000] = [b'x'; 1000];

/// 1 KB messages, 4 per window: a window of 4 KB.
fn paced() -> BrokerConfig {
    BrokerConfig {
        conn_output_window: 4 * 1000,
        ..BrokerConfig::default()
    }
}

fn retained_kb(topic: &str) -> Packet {
    let mut p = publish(topic, QoS::AtMostOnce, None, &KB);
    p.retain = true;
    Packet::Publish(p)
}

/// A QoS 0 subscriber `s` paused after 4 of 6 KB messages from `p` (2 wait for the drain).
fn paused_subscriber() -> (Harness, ConnId, ConnId) {
    let mut h = Harness::with_config(paced());
    let p = h.connect("p");
    let s = h.connect("s");
    h.subscribe(s, "t", QoS::AtMostOnce);
    for _ in 0..6 {
        h.send(p, Packet::Publish(publish("t", QoS::AtMostOnce, None, &KB)));
    }
    assert_eq!(h.publishes(s).len(), 4);
    assert!(h.take_drain_request(s));
    (h, p, s)
}

/// Drains `conn` round by round until it stops asking; returns the PUBLISHes of each round.
fn drain_rounds(h: &mut Harness, conn: ConnId) -> Vec<Vec<Publish>> {
    let mut rounds = vec![h.publishes(conn)];
    while h.take_drain_request(conn) {
        h.drained(conn);
        rounds.push(h.publishes(conn));
        assert!(rounds.len() < 10_000, "never finishes");
    }
    rounds
}

#[test]
fn a_retained_flood_is_delivered_whole_at_the_pace_of_the_writer() {
    let mut h = Harness::with_config(paced());
    let p = h.connect("p");
    for i in 0..2000 {
        h.send(p, retained_kb(&format!("sensors/{i:04}")));
    }
    assert_eq!(h.broker.metrics().retained, 2000);
    let dropped = h.broker.metrics().messages_dropped;
    let s = h.connect("s");
    h.subscribe(s, "sensors/#", QoS::AtMostOnce);
    let rounds = drain_rounds(&mut h, s);
    // Each round stops at the first message that reaches the window.
    assert!(
        rounds.iter().all(|r| r.len() <= 4),
        "{:?}",
        rounds.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let got: Vec<Publish> = rounds.into_iter().flatten().collect();
    assert_eq!(got.len(), 2000, "every retained message arrives");
    assert!(got.iter().all(|p| p.retain));
    assert_eq!(&*got[1999].topic, "sensors/1999", "in store order");
    assert_eq!(h.broker.metrics().messages_dropped, dropped);
}

#[test]
fn a_retained_backlog_does_not_cost_live_messages_their_queue_places() {
    let mut h = Harness::with_config(BrokerConfig {
        max_queued_messages: 10,
        ..paced()
    });
    let p = h.connect("p");
    for i in 0..100 {
        h.send(p, retained_kb(&format!("r/{i}")));
    }
    let dropped = h.broker.metrics().messages_dropped;
    let s = h.connect("s");
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    h.subscribe(s, "live", QoS::AtLeastOnce);
    // The link is paused with ~96 retained messages waiting: 10 live ones still fit.
    for _ in 0..10 {
        h.publish(p, "live", QoS::AtLeastOnce, b"l");
    }
    assert_eq!(h.broker.metrics().messages_dropped, dropped);
    let mut got = Vec::new();
    let mut acked = 0;
    loop {
        let round = h.publishes(s);
        if round.is_empty() {
            if !h.take_drain_request(s) {
                break;
            }
            h.drained(s);
            continue;
        }
        for m in &round {
            if let Some(id) = m.packet_id {
                h.send(s, puback(id));
                acked += 1;
            }
        }
        got.extend(round);
    }
    assert_eq!(got.len(), 110);
    assert_eq!(acked, 10, "the retained ones went at QoS 0, as stored");
    assert_eq!(got.iter().filter(|m| &*m.topic == "live").count(), 10);
}

#[test]
fn a_resumed_session_sends_its_offline_queue_paced() {
    let mut h = Harness::with_config(paced());
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.lose(s, ConnectionLoss::Io);
    for _ in 0..40 {
        h.send(
            p,
            Packet::Publish(publish("t", QoS::AtLeastOnce, Some(1), &KB)),
        );
    }
    let (s2, ack) = h.connect_with(v5_persistent("s", 100));
    assert!(ack.session_present);
    let first = h.publishes(s2);
    assert_eq!(first.len(), 4, "one window's worth, not the whole queue");
    let mut total = first.len();
    for m in &first {
        h.send(s2, puback(m.packet_id.unwrap()));
    }
    while total < 40 {
        assert!(h.take_drain_request(s2), "paused after each window");
        h.drained(s2);
        let round = h.publishes(s2);
        assert!(round.len() <= 4);
        assert!(!round.is_empty(), "drained but nothing sent at {total}");
        for m in &round {
            h.send(s2, puback(m.packet_id.unwrap()));
        }
        total += round.len();
    }
    assert_eq!(total, 40);
    assert_eq!(h.broker.clients()[1].queued, 0);
}

#[test]
fn resends_after_a_reconnect_wait_for_the_drain_too() {
    let mut h = Harness::with_config(BrokerConfig {
        conn_output_window: 1_000_000,
        ..BrokerConfig::default()
    });
    let p = h.connect("p");
    let (s, _) = h.connect_with(v5_persistent("s", 100));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    for _ in 0..20 {
        h.send(
            p,
            Packet::Publish(publish("t", QoS::AtLeastOnce, Some(1), &KB)),
        );
    }
    assert_eq!(h.publishes(s).len(), 20, "all in flight, none acknowledged");
    h.lose(s, ConnectionLoss::Io);
    h.broker.config.conn_output_window = 4 * 1000;
    let (s2, _) = h.connect_with(v5_persistent("s", 100));
    let rounds = drain_rounds(&mut h, s2);
    assert_eq!(rounds[0].len(), 4);
    let got: Vec<Publish> = rounds.into_iter().flatten().collect();
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|p| p.dup), "resends carry DUP");
    let ids: Vec<u16> = got.iter().map(|p| p.packet_id.unwrap()).collect();
    assert_eq!(
        ids,
        (1..=20).collect::<Vec<u16>>(),
        "in first-send order, once each"
    );
}

#[test]
fn qos0_for_a_paused_client_waits_and_is_dropped_first_when_the_node_is_congested() {
    let (mut h, p, s) = paused_subscriber();
    assert_eq!(
        h.broker.clients()[1].queued,
        2,
        "waiting for the drain, not dropped"
    );
    h.broker.set_congested(true);
    h.send(p, Packet::Publish(publish("t", QoS::AtMostOnce, None, &KB)));
    assert_eq!(h.broker.metrics().messages_dropped, [1, 0, 0]);
    h.broker.set_congested(false);
    h.drained(s);
    assert_eq!(h.publishes(s).len(), 2);
}

#[test]
fn client_topic_aliases_are_bounded_by_bytes() {
    let mut h = Harness::with_config(BrokerConfig {
        max_topic_alias_bytes: 3000,
        ..BrokerConfig::default()
    });
    let c = h.connect("c");
    let long = |i: u16| format!("{i}/{}", "a".repeat(995));
    for alias in 1..=3u16 {
        let mut p = publish(&long(alias), QoS::AtMostOnce, None, b"x");
        p.properties.topic_alias = Some(alias);
        h.send(c, Packet::Publish(p));
    }
    // Re-registering an alias replaces its bytes: still within the budget.
    let mut p = publish(&long(9), QoS::AtMostOnce, None, b"x");
    p.properties.topic_alias = Some(1);
    h.send(c, Packet::Publish(p));
    assert!(!h.closed(c));
    let mut p = publish(&long(4), QoS::AtMostOnce, None, b"x");
    p.properties.topic_alias = Some(4);
    h.send(c, Packet::Publish(p));
    assert!(h.closed(c));
    assert_eq!(h.disconnect_reason(c), Some(ReasonCode::QuotaExceeded));
}

#[test]
fn server_topic_aliases_stop_at_the_byte_budget() {
    let mut h = Harness::with_config(BrokerConfig {
        max_topic_alias_bytes: 2500,
        ..BrokerConfig::default()
    });
    let p = h.connect("p");
    let mut connect = v5("s");
    connect.properties.topic_alias_maximum = Some(100);
    let (s, _) = h.connect_with(connect);
    h.subscribe(s, "#", QoS::AtMostOnce);
    for i in 0..4 {
        let topic = format!("{i}/{}", "a".repeat(998));
        h.send(
            p,
            Packet::Publish(publish(&topic, QoS::AtMostOnce, None, b"x")),
        );
    }
    let got = h.publishes(s);
    let aliased: Vec<bool> = got
        .iter()
        .map(|m| m.properties.topic_alias.is_some())
        .collect();
    assert_eq!(aliased, [true, true, false, false]);
    assert!(
        got.iter().all(|m| !m.topic.is_empty()),
        "unaliased topics are sent in full"
    );
}

#[test]
fn subscriptions_beyond_the_quota_are_refused_one_by_one() {
    let mut h = Harness::with_config(BrokerConfig {
        max_subscriptions: 2,
        ..BrokerConfig::default()
    });
    let s = h.connect("s");
    let ack = h.subscribe_with(
        s,
        &[
            ("a", opts(QoS::AtMostOnce)),
            ("b", opts(QoS::AtMostOnce)),
            ("c", opts(QoS::AtMostOnce)),
        ],
        None,
    );
    assert_eq!(
        ack.reason_codes,
        [
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded
        ]
    );
    // Subscribing again to a filter it holds is no new subscription.
    let ack = h.subscribe(s, "a", QoS::AtLeastOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::GrantedQoS1]);
    assert_eq!(h.broker.metrics().subscriptions, 2);
    assert!(!h.closed(s));

    let (v3, _) = h.connect_with(v311("v3", true));
    h.subscribe(v3, "a", QoS::AtMostOnce);
    h.subscribe(v3, "b", QoS::AtMostOnce);
    let ack = h.subscribe(v3, "c", QoS::AtMostOnce);
    assert_eq!(
        ack.reason_codes,
        [ReasonCode::UnspecifiedError],
        "0x80 in 3.1.1"
    );
}

#[test]
fn a_stopping_node_closes_a_paused_connection_once_it_drained() {
    let (mut h, _, s) = paused_subscriber();
    h.broker.shutdown(h.now);
    h.collect();
    assert!(!h.closed(s), "two messages still wait for the drain");
    h.drained(s);
    assert_eq!(h.publishes(s).len(), 2);
    assert!(
        h.closed(s),
        "nothing owed any more: closed without waiting for the timeout"
    );
    assert_eq!(h.disconnect_reason(s), Some(ReasonCode::ServerShuttingDown));
}
