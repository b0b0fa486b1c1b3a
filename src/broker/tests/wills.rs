//! Wills (with delay), keepalive and shutdown.

use super::*;

/// A watcher subscribed to `will/#` and a client "c" with a will on `will/c`.
fn setup(delay: Option<u32>, expiry: u32) -> (Harness, ConnId, ConnId) {
    let mut h = Harness::new();
    let watcher = h.connect("watcher");
    h.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let mut c = v5_persistent("c", expiry);
    let mut w = will("will/c", b"gone");
    w.properties.will_delay_interval = delay;
    c.will = Some(w);
    c.keep_alive = 10;
    let (conn, _) = h.connect_with(c);
    (h, watcher, conn)
}

#[test]
fn will_published_on_io_loss() {
    let (mut h, watcher, c) = setup(None, 0);
    h.lose(c, ConnectionLoss::Io);
    let got = h.publishes(watcher);
    assert_eq!(payloads(&got), [b"gone"]);
    assert_eq!(&*got[0].topic, "will/c");
}

#[test]
fn will_not_published_on_normal_disconnect() {
    let (mut h, watcher, c) = setup(None, 0);
    h.send(c, disconnect(ReasonCode::Success));
    assert!(h.closed(c));
    assert!(h.publishes(watcher).is_empty());
}

#[test]
fn will_published_on_disconnect_with_will_message() {
    let (mut h, watcher, c) = setup(None, 0);
    h.send(c, disconnect(ReasonCode::DisconnectWithWillMessage));
    assert_eq!(h.publishes(watcher).len(), 1);
}

#[test]
fn will_delay_fires_via_handle_timeout() {
    let (mut h, watcher, c) = setup(Some(5), 100);
    h.lose(c, ConnectionLoss::Io);
    assert!(h.publishes(watcher).is_empty());
    assert_eq!(
        h.broker.poll_timeout(),
        Some(h.now + Duration::from_secs(5))
    );
    h.advance_secs(4);
    assert!(h.publishes(watcher).is_empty());
    h.advance_secs(1);
    assert_eq!(h.publishes(watcher).len(), 1);
}

#[test]
fn will_delay_is_cut_short_by_session_expiry() {
    let (mut h, watcher, c) = setup(Some(50), 3);
    h.lose(c, ConnectionLoss::Io);
    h.advance_secs(3);
    assert_eq!(h.publishes(watcher).len(), 1);
    assert_eq!(
        h.broker.metrics().sessions,
        1,
        "only the watcher's session is left"
    );
}

#[test]
fn will_delay_cancelled_by_reconnect() {
    let (mut h, watcher, c) = setup(Some(5), 100);
    h.lose(c, ConnectionLoss::Io);
    h.advance_secs(2);
    let (_, ack) = h.connect_with(v5_persistent("c", 100));
    assert!(ack.session_present);
    h.advance_secs(10);
    assert!(h.publishes(watcher).is_empty());
}

#[test]
fn keepalive_timeout_closes_and_fires_will() {
    let (mut h, watcher, c) = setup(None, 0);
    h.advance_secs(10);
    h.send(c, Packet::PingReq);
    h.advance_secs(14);
    assert!(!h.closed(c), "traffic at t=10 moved the deadline to t=25");
    h.advance_secs(1);
    assert!(h.closed(c));
    assert_eq!(h.disconnect_reason(c), Some(ReasonCode::KeepAliveTimeout));
    assert_eq!(h.publishes(watcher).len(), 1);
}

#[test]
fn server_keepalive_overrides_the_clients() {
    let mut h = Harness::with_config(BrokerConfig {
        server_keepalive: Some(2),
        ..Default::default()
    });
    let mut c = v5("c");
    c.keep_alive = 100;
    let (conn, ack) = h.connect_with(c);
    assert_eq!(ack.properties.server_keep_alive, Some(2));
    h.advance_secs(3);
    assert!(h.closed(conn));
}

#[test]
fn protocol_error_publishes_will() {
    let (mut h, watcher, c) = setup(None, 0);
    h.send(c, Packet::PingResp);
    assert_eq!(h.publishes(watcher).len(), 1);
}

#[test]
fn takeover_resuming_session_does_not_publish_will() {
    let (mut h, watcher, c) = setup(None, 100);
    let (_, ack) = h.connect_with(v5_persistent("c", 100));
    assert!(ack.session_present);
    assert!(h.closed(c));
    assert!(h.publishes(watcher).is_empty());
}

#[test]
fn takeover_with_clean_start_ends_session_and_publishes_will() {
    let (mut h, watcher, c) = setup(Some(30), 100);
    let (_, ack) = h.connect_with(v5("c"));
    assert!(!ack.session_present);
    assert_eq!(h.disconnect_reason(c), Some(ReasonCode::SessionTakenOver));
    assert_eq!(h.publishes(watcher).len(), 1);
}

#[test]
fn retained_will_is_stored() {
    let mut h = Harness::new();
    let mut c = v5("c");
    let mut w = will("will/c", b"gone");
    w.retain = true;
    w.qos = QoS::AtLeastOnce;
    c.will = Some(w);
    let (conn, _) = h.connect_with(c);
    h.lose(conn, ConnectionLoss::Io);
    assert_eq!(h.broker.metrics().retained, 1);
    let s = h.connect("s");
    h.subscribe(s, "will/c", QoS::AtLeastOnce);
    let got = h.publishes(s);
    assert!(got[0].retain);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

#[test]
fn shutdown_publishes_wills_then_disconnects_everyone() {
    let (mut h, watcher, c) = setup(Some(30), 100);
    h.broker.shutdown(h.now);
    h.collect();
    let to_watcher = h.take(watcher);
    assert!(
        matches!(to_watcher[0], Packet::Publish(_)),
        "will before the DISCONNECT: {to_watcher:?}"
    );
    assert_eq!(
        h.disconnect_reason(watcher),
        Some(ReasonCode::ServerShuttingDown)
    );
    assert_eq!(h.disconnect_reason(c), Some(ReasonCode::ServerShuttingDown));
    assert!(h.closed(watcher) && h.closed(c));
    assert_eq!(h.broker.metrics().connections, 0);
}

/// 50 clients with QoS 1 wills and one QoS 1 subscriber whose window (max_inflight 32) cannot
/// take them all: shutdown publishes every will, closes the will clients at once (0x8B), and
/// keeps the subscriber open until it has acknowledged all 50; only then 0x8B and close.
#[test]
fn shutdown_keeps_subscribers_open_until_every_will_is_acknowledged() {
    let mut h = Harness::new();
    let sub = h.connect("sub");
    h.subscribe(sub, "will/#", QoS::AtLeastOnce);
    let mut mortals = Vec::new();
    for i in 0..50 {
        let mut c = v5(&format!("c{i}"));
        let mut w = will(&format!("will/{i}"), b"gone");
        w.qos = QoS::AtLeastOnce;
        c.will = Some(w);
        mortals.push(h.connect_with(c).0);
    }
    h.broker.shutdown(h.now);
    h.collect();
    for &c in &mortals {
        assert_eq!(h.disconnect_reason(c), Some(ReasonCode::ServerShuttingDown));
        assert!(h.closed(c));
    }
    let mut topics = Vec::new();
    loop {
        let got = h.publishes(sub);
        if got.is_empty() {
            break;
        }
        assert!(!h.closed(sub), "closed with wills unacknowledged");
        assert!(!h.broker.shutdown_drained());
        for p in got {
            topics.push(p.topic.to_string());
            h.send(sub, puback(p.packet_id.expect("QoS 1")));
        }
    }
    topics.sort();
    let mut expected: Vec<String> = (0..50).map(|i| format!("will/{i}")).collect();
    expected.sort();
    assert_eq!(topics, expected, "every will exactly once");
    assert_eq!(
        h.disconnect_reason(sub),
        Some(ReasonCode::ServerShuttingDown)
    );
    assert!(h.closed(sub));
    assert!(h.broker.shutdown_drained());
    // A connection accepted after the shutdown began is closed at once.
    let late = h.open();
    h.collect();
    assert!(h.closed(late));
}

/// A subscriber that never acknowledges is closed by `finish_shutdown` (the driver's timeout).
#[test]
fn finish_shutdown_closes_what_never_drained() {
    let mut h = Harness::new();
    let mut connect = v5("c");
    let mut w = will("will/c", b"gone");
    w.qos = QoS::AtLeastOnce;
    connect.will = Some(w);
    let (c, _) = h.connect_with(connect);
    let sub = h.connect("sub");
    h.subscribe(sub, "will/#", QoS::AtLeastOnce);
    h.broker.shutdown(h.now);
    h.collect();
    assert_eq!(h.publishes(sub).len(), 1);
    assert!(h.closed(c) && !h.closed(sub));
    assert!(!h.broker.shutdown_drained());
    h.broker.finish_shutdown(h.now);
    h.collect();
    assert_eq!(
        h.disconnect_reason(sub),
        Some(ReasonCode::ServerShuttingDown)
    );
    assert!(h.closed(sub));
    assert!(h.broker.shutdown_drained());
}

/// A will waiting out its delay is published at shutdown too (the session ends with the node).
#[test]
fn shutdown_publishes_delayed_wills_of_detached_sessions() {
    let (mut h, watcher, c) = setup(Some(30), 100);
    h.lose(c, ConnectionLoss::Io);
    assert!(h.publishes(watcher).is_empty(), "delay running");
    h.broker.shutdown(h.now);
    h.collect();
    assert_eq!(payloads(&h.publishes(watcher)), [b"gone"]);
}
