//! Exact bytes on the wire for the forms the round trips cannot pin: MQTT 5 short forms,
//! 3.1.1 return code mappings, 3.1 CONNECT, and decoder state across CONNECT.

use bytes::{Bytes, BytesMut};

use crate::codec::*;

fn encoded(packet: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf);
    assert_eq!(buf.len(), encoded_len(packet, protocol));
    buf.to_vec()
}

fn decoded(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    let mut decoder = Decoder::new(1 << 20);
    decoder.set_protocol(protocol);
    decoder.decode(&mut BytesMut::from(bytes))
}

#[test]
fn v5_ack_uses_the_shortest_form() {
    let ok = Packet::PubAck(Ack::new(1));
    assert_eq!(encoded(&ok, Protocol::V5), [0x40, 0x02, 0x00, 0x01]);
    let no_match = Packet::PubRec(Ack {
        reason_code: ReasonCode::NoMatchingSubscribers,
        ..Ack::new(1)
    });
    assert_eq!(
        encoded(&no_match, Protocol::V5),
        [0x50, 0x03, 0x00, 0x01, 0x10]
    );
    let with_reason = Packet::PubComp(Ack {
        properties: AckProperties {
            reason_string: Some("r".into()),
            ..Default::default()
        },
        ..Ack::new(1)
    });
    assert_eq!(
        encoded(&with_reason, Protocol::V5),
        [0x70, 0x08, 0, 1, 0x00, 4, 0x1f, 0, 1, b'r']
    );
}

#[test]
fn v5_ack_short_and_long_forms_decode_alike() {
    let expected = Ok(Some(Packet::PubAck(Ack::new(9))));
    assert_eq!(decoded(&[0x40, 0x02, 0, 9], Protocol::V5), expected);
    assert_eq!(decoded(&[0x40, 0x03, 0, 9, 0x00], Protocol::V5), expected);
    assert_eq!(
        decoded(&[0x40, 0x04, 0, 9, 0x00, 0x00], Protocol::V5),
        expected
    );
}

#[test]
fn pubrel_carries_its_reserved_flags() {
    assert_eq!(
        encoded(&Packet::PubRel(Ack::new(2)), Protocol::V311),
        [0x62, 0x02, 0, 2]
    );
}

#[test]
fn v5_disconnect_and_auth_with_length_zero_mean_success() {
    let normal = Packet::Disconnect(Disconnect::default());
    assert_eq!(encoded(&normal, Protocol::V5), [0xe0, 0x00]);
    assert_eq!(decoded(&[0xe0, 0x00], Protocol::V5), Ok(Some(normal)));
    let taken_over = Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver));
    // Written with its property length (clients such as rumqttc need it), read either way.
    assert_eq!(encoded(&taken_over, Protocol::V5), [0xe0, 0x02, 0x8e, 0x00]);
    assert_eq!(
        decoded(&[0xe0, 0x02, 0x8e, 0x00], Protocol::V5),
        Ok(Some(taken_over.clone()))
    );
    assert_eq!(
        decoded(&[0xe0, 0x01, 0x8e], Protocol::V5),
        Ok(Some(taken_over))
    );
    let auth = Packet::Auth(Auth::default());
    assert_eq!(encoded(&auth, Protocol::V5), [0xf0, 0x00]);
    assert_eq!(decoded(&[0xf0, 0x00], Protocol::V5), Ok(Some(auth)));
    // AUTH has no "code only" short form: the property length follows the code.
    let reauth = Packet::Auth(Auth {
        reason_code: ReasonCode::ReAuthenticate,
        ..Default::default()
    });
    assert_eq!(encoded(&reauth, Protocol::V5), [0xf0, 0x02, 0x19, 0x00]);
}

#[test]
fn v311_drops_mqtt5_fields() {
    let disconnect = Packet::Disconnect(Disconnect::new(ReasonCode::ServerShuttingDown));
    assert_eq!(encoded(&disconnect, Protocol::V311), [0xe0, 0x00]);
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: 3,
        reason_codes: vec![ReasonCode::NoSubscriptionExisted],
        ..Default::default()
    });
    assert_eq!(encoded(&unsuback, Protocol::V311), [0xb0, 0x02, 0, 3]);
    let puback = Packet::PubAck(Ack {
        reason_code: ReasonCode::QuotaExceeded,
        ..Ack::new(4)
    });
    assert_eq!(encoded(&puback, Protocol::V311), [0x40, 0x02, 0, 4]);
    let publish = Packet::Publish(Publish {
        topic: "a".into(),
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties {
            message_expiry_interval: Some(5),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(
        encoded(&publish, Protocol::V311),
        [0x30, 0x04, 0, 1, b'a', b'x']
    );
    assert_eq!(
        encoded(&Packet::Auth(Auth::default()), Protocol::V311),
        [0u8; 0]
    );
}

#[test]
fn v311_connack_return_codes_map_both_ways() {
    let table = [
        (ReasonCode::Success, 0, ReasonCode::Success),
        (
            ReasonCode::UnsupportedProtocolVersion,
            1,
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (
            ReasonCode::ClientIdentifierNotValid,
            2,
            ReasonCode::ClientIdentifierNotValid,
        ),
        (
            ReasonCode::ServerUnavailable,
            3,
            ReasonCode::ServerUnavailable,
        ),
        (ReasonCode::ServerBusy, 3, ReasonCode::ServerUnavailable),
        (ReasonCode::Banned, 3, ReasonCode::ServerUnavailable),
        (
            ReasonCode::BadUserNameOrPassword,
            4,
            ReasonCode::BadUserNameOrPassword,
        ),
        (ReasonCode::NotAuthorized, 5, ReasonCode::NotAuthorized),
    ];
    for (code, wire, back) in table {
        let packet = Packet::ConnAck(ConnAck {
            reason_code: code,
            ..Default::default()
        });
        assert_eq!(
            encoded(&packet, Protocol::V311),
            [0x20, 0x02, 0x00, wire],
            "{code:?}"
        );
        let expected = Packet::ConnAck(ConnAck {
            reason_code: back,
            ..Default::default()
        });
        assert_eq!(
            decoded(&[0x20, 0x02, 0x00, wire], Protocol::V311),
            Ok(Some(expected))
        );
    }
}

#[test]
fn v311_suback_reports_any_failure_as_0x80() {
    let suback = Packet::SubAck(SubAck {
        packet_id: 5,
        reason_codes: vec![
            ReasonCode::GrantedQoS2,
            ReasonCode::QuotaExceeded,
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
        ],
        ..Default::default()
    });
    assert_eq!(
        encoded(&suback, Protocol::V311),
        [0x90, 0x06, 0, 5, 2, 0x80, 0, 1]
    );
    let Ok(Some(Packet::SubAck(back))) = decoded(&[0x90, 0x04, 0, 5, 0x80, 1], Protocol::V311)
    else {
        panic!("3.1.1 SUBACK did not decode");
    };
    assert_eq!(
        back.reason_codes,
        [ReasonCode::UnspecifiedError, ReasonCode::GrantedQoS1]
    );
}

#[test]
fn maximum_qos_2_is_said_by_leaving_the_property_out() {
    let connack = |q| {
        Packet::ConnAck(ConnAck {
            properties: ConnAckProperties {
                maximum_qos: q,
                ..Default::default()
            },
            ..Default::default()
        })
    };
    assert_eq!(
        encoded(&connack(Some(QoS::ExactlyOnce)), Protocol::V5),
        [0x20, 0x03, 0, 0, 0]
    );
    assert_eq!(
        encoded(&connack(Some(QoS::AtLeastOnce)), Protocol::V5),
        [0x20, 0x05, 0, 0, 2, 0x24, 1]
    );
}

#[test]
fn v311_connect_from_the_wire_sets_the_decoder_protocol() {
    // mosquitto_sub -V mqttv311 -i a -k 60: clean session, keepalive 60, client id "a".
    let wire = [
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a',
    ];
    let mut decoder = Decoder::new(1 << 20);
    assert_eq!(decoder.protocol(), None);
    let packet = decoder.decode(&mut BytesMut::from(&wire[..]));
    let expected = Connect {
        protocol: Protocol::V311,
        clean_start: true,
        keep_alive: 60,
        client_id: "a".into(),
        ..Default::default()
    };
    assert_eq!(
        packet,
        Ok(Some(Packet::Connect(Box::new(expected.clone()))))
    );
    assert_eq!(decoder.protocol(), Some(Protocol::V311));
    assert_eq!(
        encoded(&Packet::Connect(Box::new(expected)), Protocol::V5),
        wire
    );
}

#[test]
fn v31_connect_uses_mqisdp_level_3() {
    let connect = Packet::Connect(Box::new(Connect {
        protocol: Protocol::V31,
        client_id: "c".into(),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        ..Default::default()
    }));
    let wire = encoded(&connect, Protocol::V31);
    assert_eq!(
        &wire[2..12],
        &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0xc0]
    );
    let mut decoder = Decoder::new(1 << 20);
    assert_eq!(
        decoder.decode(&mut BytesMut::from(&wire[..])),
        Ok(Some(connect))
    );
    assert_eq!(decoder.protocol(), Some(Protocol::V31));
}

#[test]
fn second_connect_is_still_decoded() {
    let connect = |protocol| {
        Packet::Connect(Box::new(Connect {
            protocol,
            client_id: "a".into(),
            ..Default::default()
        }))
    };
    let mut buf = BytesMut::new();
    encode(&connect(Protocol::V5), Protocol::V5, &mut buf);
    encode(&connect(Protocol::V5), Protocol::V5, &mut buf);
    let mut decoder = Decoder::new(1 << 20);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(connect(Protocol::V5))));
    assert_eq!(decoder.decode(&mut buf), Ok(Some(connect(Protocol::V5))));
    assert_eq!(decoder.decode(&mut buf), Ok(None));
}

#[test]
fn incomplete_frame_consumes_nothing() {
    let publish = Packet::Publish(Publish {
        topic: "a/b".into(),
        payload: Bytes::from(vec![1u8; 300]),
        ..Default::default()
    });
    let wire = encoded(&publish, Protocol::V311);
    let mut decoder = Decoder::new(1 << 20);
    decoder.set_protocol(Protocol::V311);
    for cut in [0, 1, 2, 3, wire.len() - 1] {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut);
    }
    let mut buf = BytesMut::from(&wire[..]);
    buf.extend_from_slice(&[0xc0]);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(publish)));
    assert_eq!(
        &buf[..],
        [0xc0],
        "the next frame's first byte stays buffered"
    );
}

#[test]
fn publish_payload_shares_the_frame_buffer() {
    let wire = encoded(
        &Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from_static(b"hello"),
            ..Default::default()
        }),
        Protocol::V311,
    );
    let mut buf = BytesMut::from(&wire[..]);
    let start = buf.as_ptr() as usize;
    let mut decoder = Decoder::new(1 << 20);
    decoder.set_protocol(Protocol::V311);
    let Ok(Some(Packet::Publish(p))) = decoder.decode(&mut buf) else {
        panic!("PUBLISH did not decode");
    };
    let offset = p.payload.as_ptr() as usize - start;
    assert_eq!(
        offset,
        wire.len() - 5,
        "payload was copied instead of sliced"
    );
}
