//! CONNECT, CONNACK, takeover, connection-level errors and metrics.

use super::*;

#[test]
fn first_packet_not_connect_closes() {
    let mut h = Harness::new();
    let conn = h.open();
    h.send(conn, Packet::PingReq);
    assert!(h.closed(conn));
    assert!(h.take(conn).is_empty(), "nothing is sent before CONNECT");
}

#[test]
fn second_connect_is_protocol_error() {
    let mut h = Harness::new();
    let conn = h.connect("a");
    h.send(conn, Packet::Connect(Box::new(v5("a"))));
    assert_eq!(h.disconnect_reason(conn), Some(ReasonCode::ProtocolError));
    assert!(h.closed(conn));
}

#[test]
fn empty_client_id_is_assigned() {
    let mut h = Harness::new();
    let (_, ack) = h.connect_with(v5(""));
    let id = ack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(id.starts_with("flockmq-"));
    let clients = h.broker.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].client_id, id.to_string());
    let (_, ack2) = h.connect_with(v5(""));
    assert_ne!(
        ack2.properties.assigned_client_identifier,
        Some(id),
        "ids are unique"
    );
}

#[test]
fn v311_empty_client_id_with_persistent_session_is_rejected() {
    let mut h = Harness::new();
    let (conn, ack) = h.connect_with(v311("", false));
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(h.closed(conn));
    let (conn, ack) = h.connect_with(v311("", true));
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(!h.closed(conn));
}

#[test]
fn too_long_client_id_is_rejected() {
    let mut h = Harness::with_config(BrokerConfig {
        max_client_id_len: 4,
        ..Default::default()
    });
    let (conn, ack) = h.connect_with(v5("abcde"));
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(h.closed(conn));
    assert_eq!(h.broker.metrics().sessions, 0);
}

#[test]
fn authentication_method_is_refused() {
    let mut h = Harness::new();
    let mut c = v5("a");
    c.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-1"));
    let (conn, ack) = h.connect_with(c);
    assert_eq!(ack.reason_code, ReasonCode::BadAuthenticationMethod);
    assert!(h.closed(conn));
}

#[test]
fn connack_announces_server_limits() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 10,
        max_topic_alias: 0,
        retain_available: false,
        max_qos: QoS::AtLeastOnce,
        server_keepalive: Some(30),
        max_session_expiry: 100,
        ..Default::default()
    });
    let mut c = v5_persistent("a", 1000);
    c.keep_alive = 60;
    let (_, ack) = h.connect_with(c);
    let p = ack.properties;
    assert_eq!(p.receive_maximum, Some(10));
    assert_eq!(p.topic_alias_maximum, None);
    assert_eq!(p.retain_available, Some(false));
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.server_keep_alive, Some(30));
    assert_eq!(
        p.session_expiry_interval,
        Some(100),
        "capped expiry is announced"
    );
    assert_eq!(p.maximum_packet_size, Some(1024 * 1024));
    assert_eq!(p.shared_subscription_available, Some(true));
    assert_eq!(h.broker.clients()[0].keep_alive, 30);
}

#[test]
fn connack_of_default_server_omits_defaults() {
    let mut h = Harness::new();
    let (_, ack) = h.connect_with(v5("a"));
    let p = ack.properties;
    assert_eq!(p.retain_available, None);
    assert_eq!(p.maximum_qos, None);
    assert_eq!(p.session_expiry_interval, None);
    assert_eq!(p.topic_alias_maximum, Some(65535));
    assert!(!ack.session_present);
}

#[test]
fn takeover_sends_session_taken_over_to_old_connection() {
    let mut h = Harness::new();
    let old = h.connect("a");
    let new = h.connect("a");
    assert_eq!(h.disconnect_reason(old), Some(ReasonCode::SessionTakenOver));
    assert!(h.closed(old));
    assert!(!h.closed(new));
    assert_eq!(h.broker.metrics().connections, 1);
    assert_eq!(h.broker.metrics().sessions, 1);
}

#[test]
fn v311_takeover_just_closes_old_connection() {
    let mut h = Harness::new();
    let (old, _) = h.connect_with(v311("a", true));
    let (new, ack) = h.connect_with(v311("a", true));
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(h.closed(old));
    assert_eq!(h.disconnect_reason(old), None);
    assert!(!h.closed(new));
}

#[test]
fn pingreq_gets_pingresp() {
    let mut h = Harness::new();
    let conn = h.connect("a");
    h.send(conn, Packet::PingReq);
    assert_eq!(h.take(conn), vec![Packet::PingResp]);
}

#[test]
fn decode_error_after_connect_sends_reason_v5_and_closes() {
    let mut h = Harness::new();
    let conn = h.connect("a");
    h.lose(
        conn,
        ConnectionLoss::Decode(crate::codec::DecodeError::Malformed("x")),
    );
    assert_eq!(h.disconnect_reason(conn), Some(ReasonCode::MalformedPacket));
    assert!(h.closed(conn));
}

/// An undecodable first packet other than an unsupported protocol level (below) is closed
/// without an answer.
#[test]
fn decode_error_before_connect_just_closes() {
    for err in [
        crate::codec::DecodeError::Malformed("x"),
        crate::codec::DecodeError::Protocol("unknown protocol name"),
    ] {
        let mut h = Harness::new();
        let conn = h.open();
        h.lose(conn, ConnectionLoss::Decode(err));
        assert!(h.closed(conn));
        assert!(h.take(conn).is_empty());
    }
}

#[test]
fn server_only_packet_from_client_is_protocol_error() {
    let mut h = Harness::new();
    let conn = h.connect("a");
    h.send(conn, Packet::PingResp);
    assert_eq!(h.disconnect_reason(conn), Some(ReasonCode::ProtocolError));
}

#[test]
fn metrics_count_connections_sessions_and_messages() {
    let mut h = Harness::new();
    let a = h.connect("a");
    let b = h.connect("b");
    h.subscribe(b, "t", QoS::AtLeastOnce);
    h.subscribe(b, "$share/g/t", QoS::AtLeastOnce);
    h.publish(a, "t", QoS::AtLeastOnce, b"x");
    h.publish(a, "nobody", QoS::AtMostOnce, b"x");
    let m = h.broker.metrics();
    assert_eq!(m.connections, 2);
    assert_eq!(m.sessions, 2);
    assert_eq!(m.subscriptions, 2);
    assert_eq!(m.messages_in, [1, 1, 0]);
    assert_eq!(m.messages_out, [0, 2, 0]);
    assert_eq!(m.messages_dropped, [1, 0, 0]);
    let clients = h.broker.clients();
    assert_eq!(
        clients
            .iter()
            .map(|c| c.client_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(clients[1].subscriptions, 2);
    assert_eq!(clients[1].inflight, 2);
}

#[test]
fn connection_without_connect_is_closed_after_connect_timeout() {
    let mut h = Harness::new();
    let conn = h.open();
    h.advance(std::time::Duration::from_secs(9));
    assert!(!h.closed(conn), "still waiting for CONNECT");
    h.advance(std::time::Duration::from_secs(2));
    assert!(h.closed(conn), "closed 10 s after opening without CONNECT");
}

#[test]
fn connect_timeout_does_not_touch_connected_clients() {
    let mut h = Harness::new();
    let c = h.connect("c");
    h.advance(std::time::Duration::from_secs(11));
    assert!(!h.closed(c));
}

/// A CONNECT with a protocol level we do not speak (the codec's `UnsupportedProtocol`) gets a
/// 3.1.1 CONNACK 0x01 and is closed (MQTT-3.1.2-2), not a silent close.
#[test]
fn unsupported_protocol_level_gets_connack_0x01_in_v311_form() {
    for level in [3, 6] {
        let mut h = Harness::new();
        let conn = h.open();
        h.lose(
            conn,
            ConnectionLoss::Decode(crate::codec::DecodeError::UnsupportedProtocol(level)),
        );
        let sent: Vec<&Action> = h.log.iter().collect();
        match sent.as_slice() {
            [
                Action::Send {
                    protocol: Protocol::V311,
                    packet: Packet::ConnAck(ack),
                    ..
                },
                Action::Close { .. },
            ] => {
                assert_eq!(ack.reason_code, ReasonCode::UnsupportedProtocolVersion);
                assert_eq!(crate::codec::v311_connack_code(ack.reason_code), 0x01);
            }
            other => panic!("level {level}: expected CONNACK then close, got {other:?}"),
        }
        assert_eq!(h.broker.metrics().connections, 0);
    }
}

/// A will whose Response Topic has wildcards could never be published: the CONNECT is refused.
#[test]
fn will_response_topic_with_wildcard_is_refused() {
    let mut h = Harness::new();
    let mut c = v5("c");
    let mut w = will("will/c", b"gone");
    w.properties.response_topic = Some(ByteString::from("reply/#"));
    c.will = Some(w);
    let (conn, ack) = h.connect_with(c);
    assert_eq!(ack.reason_code, ReasonCode::ProtocolError);
    assert!(h.closed(conn));
}
