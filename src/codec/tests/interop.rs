//! Cross-checks against an independent codec (rumqttc's mqttbytes): what a real client writes we
//! read, and what we write a real client reads, field for field.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes::v5 as r5;

use crate::codec::*;

fn ours(bytes: &mut BytesMut, protocol: Option<Protocol>) -> Packet {
    let mut decoder = Decoder::new(1 << 20);
    if let Some(p) = protocol {
        decoder.set_protocol(p);
    }
    match decoder.decode(bytes) {
        Ok(Some(p)) => {
            assert!(bytes.is_empty(), "frame not fully consumed");
            p
        }
        other => panic!("our decoder refused rumqttc's frame: {other:?}"),
    }
}

fn encoded(packet: &Packet, protocol: Protocol) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf);
    buf
}

#[test]
fn rumqttc_v5_connect_with_will_and_properties_decodes() {
    let connect = r5::Connect {
        keep_alive: 30,
        client_id: "dev-1".into(),
        clean_start: false,
        properties: Some(r5::ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            max_packet_size: Some(65536),
            topic_alias_max: Some(10),
            request_response_info: Some(1),
            request_problem_info: Some(0),
            user_properties: vec![("k".into(), "v".into())],
            authentication_method: None,
            authentication_data: None,
        }),
    };
    let will_props = r5::LastWillProperties {
        delay_interval: Some(5),
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("r/t".into()),
        correlation_data: Some(Bytes::from_static(b"cd")),
        user_properties: vec![],
    };
    let will = r5::LastWill::new(
        "dev/1/status",
        "gone",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        Some(will_props),
    );
    let login = r5::Login::new("user", "pass");
    let mut buf = BytesMut::new();
    r5::Packet::Connect(connect, Some(will), Some(login))
        .write(&mut buf, None)
        .unwrap();

    let Packet::Connect(c) = ours(&mut buf, None) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, Protocol::V5);
    assert_eq!(
        (c.keep_alive, &*c.client_id, c.clean_start),
        (30, "dev-1", false)
    );
    assert_eq!(c.properties.session_expiry_interval, Some(3600));
    assert_eq!(c.properties.receive_maximum, Some(20));
    assert_eq!(c.properties.maximum_packet_size, Some(65536));
    assert_eq!(c.properties.topic_alias_maximum, Some(10));
    assert_eq!(c.properties.request_response_information, Some(true));
    assert_eq!(c.properties.request_problem_information, Some(false));
    assert_eq!(c.properties.user_properties, vec![("k".into(), "v".into())]);
    let w = c.will.expect("will");
    assert_eq!(
        (&*w.topic, &w.payload[..], w.qos, w.retain),
        ("dev/1/status", &b"gone"[..], QoS::AtLeastOnce, true)
    );
    assert_eq!(w.properties.will_delay_interval, Some(5));
    assert_eq!(w.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(w.properties.correlation_data.as_deref(), Some(&b"cd"[..]));
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password.as_deref(), Some(&b"pass"[..]));
}

#[test]
fn rumqttc_v5_publish_and_subscribe_decode() {
    let mut publish = r5::Publish::new("a/b", rumqttc::v5::mqttbytes::QoS::ExactlyOnce, "hi", None);
    publish.pkid = 7;
    publish.properties = Some(r5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(9),
        topic_alias: Some(3),
        response_topic: Some("resp".into()),
        correlation_data: None,
        user_properties: vec![("a".into(), "b".into())],
        subscription_identifiers: vec![],
        content_type: Some("json".into()),
    });
    let mut filter = r5::Filter::new("s/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
    filter.nolocal = true;
    filter.preserve_retain = true;
    filter.retain_forward_rule = r5::RetainForwardRule::Never;
    let mut subscribe = r5::Subscribe::new(
        filter,
        Some(r5::SubscribeProperties {
            id: Some(42),
            user_properties: vec![],
        }),
    );
    subscribe.pkid = 8;
    let mut buf = BytesMut::new();
    r5::Packet::Publish(publish).write(&mut buf, None).unwrap();
    r5::Packet::Subscribe(subscribe)
        .write(&mut buf, None)
        .unwrap();

    let mut decoder = Decoder::new(1 << 20);
    decoder.set_protocol(Protocol::V5);
    let Ok(Some(Packet::Publish(p))) = decoder.decode(&mut buf) else {
        panic!("PUBLISH refused")
    };
    assert_eq!(
        (&*p.topic, p.qos, p.packet_id, &p.payload[..]),
        ("a/b", QoS::ExactlyOnce, Some(7), &b"hi"[..])
    );
    assert_eq!(p.properties.topic_alias, Some(3));
    assert_eq!(p.properties.message_expiry_interval, Some(9));
    assert_eq!(p.properties.content_type.as_deref(), Some("json"));
    assert_eq!(p.properties.response_topic.as_deref(), Some("resp"));
    let Ok(Some(Packet::Subscribe(s))) = decoder.decode(&mut buf) else {
        panic!("SUBSCRIBE refused")
    };
    assert_eq!(
        (s.packet_id, s.properties.subscription_identifier),
        (8, Some(42))
    );
    let expected = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    assert_eq!(s.filters, vec![("s/#".into(), expected)]);
}

#[test]
fn our_v5_server_packets_decode_in_rumqttc() {
    let connack = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties {
            receive_maximum: Some(100),
            maximum_qos: Some(QoS::AtLeastOnce),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_maximum: Some(16),
            server_keep_alive: Some(45),
            shared_subscription_available: Some(true),
            ..Default::default()
        },
    });
    let mut buf = encoded(&connack, Protocol::V5);
    let Ok(r5::Packet::ConnAck(c)) = r5::Packet::read(&mut buf, None) else {
        panic!("rumqttc refused CONNACK")
    };
    assert!(c.session_present);
    assert_eq!(c.code, r5::ConnectReturnCode::Success);
    let props = c.properties.expect("properties");
    assert_eq!(
        (props.receive_max, props.max_qos, props.topic_alias_max),
        (Some(100), Some(1), Some(16))
    );
    assert_eq!(props.assigned_client_identifier.as_deref(), Some("auto-1"));
    assert_eq!(
        (props.server_keep_alive, props.shared_subscription_available),
        (Some(45), Some(1))
    );

    let publish = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "x/y".into(),
        packet_id: Some(300),
        payload: Bytes::from_static(b"payload"),
        properties: PublishProperties {
            subscription_identifiers: vec![1, 200_000],
            ..Default::default()
        },
        ..Default::default()
    });
    let mut buf = encoded(&publish, Protocol::V5);
    let Ok(r5::Packet::Publish(p)) = r5::Packet::read(&mut buf, None) else {
        panic!("rumqttc refused PUBLISH")
    };
    assert_eq!(
        (&p.topic[..], p.pkid, p.retain, &p.payload[..]),
        (&b"x/y"[..], 300, true, &b"payload"[..])
    );
    assert_eq!(
        p.properties.expect("properties").subscription_identifiers,
        vec![1, 200_000]
    );

    let suback = Packet::SubAck(SubAck {
        packet_id: 8,
        reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized],
        ..Default::default()
    });
    let mut buf = encoded(&suback, Protocol::V5);
    let Ok(r5::Packet::SubAck(s)) = r5::Packet::read(&mut buf, None) else {
        panic!("rumqttc refused SUBACK")
    };
    assert_eq!(s.pkid, 8);
    assert_eq!(
        s.return_codes,
        vec![
            r5::SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtLeastOnce),
            r5::SubscribeReasonCode::NotAuthorized
        ]
    );

    for packet in [
        Packet::PubAck(Ack::new(300)),
        Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver)),
    ] {
        let mut buf = encoded(&packet, Protocol::V5);
        assert!(
            r5::Packet::read(&mut buf, None).is_ok(),
            "rumqttc refused {packet:?}"
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn rumqttc_v4_connect_decodes_and_our_v311_replies_decode_in_rumqttc() {
    let mut connect = r4::Connect::new("old-1");
    connect.keep_alive = 15;
    connect.clean_session = true;
    connect.set_login("u", "p");
    let mut buf = BytesMut::new();
    r4::Packet::Connect(connect)
        .write(&mut buf, 1 << 20)
        .unwrap();
    let Packet::Connect(c) = ours(&mut buf, None) else {
        panic!("not a CONNECT")
    };
    assert_eq!(
        (c.protocol, c.keep_alive, &*c.client_id, c.clean_start),
        (Protocol::V311, 15, "old-1", true)
    );
    assert_eq!(
        (c.username.as_deref(), c.password.as_deref()),
        (Some("u"), Some(&b"p"[..]))
    );

    let refused = Packet::ConnAck(ConnAck {
        reason_code: ReasonCode::NotAuthorized,
        ..Default::default()
    });
    let mut buf = encoded(&refused, Protocol::V311);
    let Ok(r4::Packet::ConnAck(c)) = r4::Packet::read(&mut buf, 1 << 20) else {
        panic!("rumqttc refused CONNACK")
    };
    assert_eq!(c.code, r4::ConnectReturnCode::NotAuthorized);

    let suback = Packet::SubAck(SubAck {
        packet_id: 2,
        reason_codes: vec![ReasonCode::GrantedQoS2, ReasonCode::TopicFilterInvalid],
        ..Default::default()
    });
    let mut buf = encoded(&suback, Protocol::V311);
    let Ok(r4::Packet::SubAck(s)) = r4::Packet::read(&mut buf, 1 << 20) else {
        panic!("rumqttc refused SUBACK")
    };
    assert_eq!(
        s.return_codes,
        vec![
            r4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::ExactlyOnce),
            r4::SubscribeReasonCode::Failure
        ]
    );

    let mut buf = BytesMut::new();
    let mut subscribe = r4::Subscribe::new("a/+", rumqttc::mqttbytes::QoS::AtLeastOnce);
    subscribe.pkid = 4;
    r4::Packet::Subscribe(subscribe)
        .write(&mut buf, 1 << 20)
        .unwrap();
    let Packet::Subscribe(s) = ours(&mut buf, Some(Protocol::V311)) else {
        panic!("not a SUBSCRIBE")
    };
    assert_eq!(s.filters.len(), 1);
    assert_eq!(
        (&*s.filters[0].0, s.filters[0].1.qos),
        ("a/+", QoS::AtLeastOnce)
    );
}
