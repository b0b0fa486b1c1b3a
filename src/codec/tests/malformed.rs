//! Table of malformed and forbidden inputs, each pinned to the exact `DecodeError` variant.

use bytes::BytesMut;

use crate::codec::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Malformed,
    Protocol,
    TooLarge,
    Unsupported(u8),
    TopicName,
}

fn kind(e: &DecodeError) -> Kind {
    match e {
        DecodeError::Malformed(_) => Kind::Malformed,
        DecodeError::Protocol(_) => Kind::Protocol,
        DecodeError::TooLarge { .. } => Kind::TooLarge,
        DecodeError::UnsupportedProtocol(level) => Kind::Unsupported(*level),
        DecodeError::TopicNameInvalid => Kind::TopicName,
    }
}

/// A frame: first byte, remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn s(x: &[u8]) -> Vec<u8> {
    let mut out = (x.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(x);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A property block with its one-byte length.
fn props(p: &[u8]) -> Vec<u8> {
    cat(&[&[p.len() as u8], p])
}

/// A CONNECT frame with the given protocol name, level, flags, MQTT 5 properties (if any) and
/// payload; keepalive 60.
fn connect_frame(
    name: &[u8],
    level: u8,
    flags: u8,
    properties: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let props = properties.map(props).unwrap_or_default();
    frame(
        0x10,
        &cat(&[&s(name), &[level, flags, 0, 60], &props, payload]),
    )
}

fn v5_connect(flags: u8, properties: &[u8], payload: &[u8]) -> Vec<u8> {
    connect_frame(b"MQTT", 5, flags, Some(properties), payload)
}

fn v311_connect(flags: u8, payload: &[u8]) -> Vec<u8> {
    connect_frame(b"MQTT", 4, flags, None, payload)
}

/// An MQTT 5 QoS 0 PUBLISH to `a` with the given properties.
fn v5_publish(properties: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&s(b"a"), &props(properties), b"payload"]))
}

struct Case {
    name: &'static str,
    protocol: Option<Protocol>,
    bytes: Vec<u8>,
    expected: Kind,
}

const V5: Option<Protocol> = Some(Protocol::V5);
const V311: Option<Protocol> = Some(Protocol::V311);
const NONE: Option<Protocol> = None;

fn case(name: &'static str, protocol: Option<Protocol>, bytes: Vec<u8>, expected: Kind) -> Case {
    Case {
        name,
        protocol,
        bytes,
        expected,
    }
}

fn cases() -> Vec<Case> {
    use Kind::*;
    let client_a = s(b"a");
    vec![
        // Fixed header and remaining length.
        case(
            "remaining length of five bytes",
            V5,
            vec![0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
            Malformed,
        ),
        case(
            "256 MB remaining length, 5 bytes buffered",
            V5,
            vec![0x30, 0xff, 0xff, 0xff, 0x7f],
            TooLarge,
        ),
        case("first packet is PINGREQ", NONE, vec![0xc0, 0x00], Protocol),
        case(
            "first packet is PUBLISH, one byte buffered",
            NONE,
            vec![0x30],
            Protocol,
        ),
        case(
            "CONNECT with fixed header flags",
            NONE,
            vec![0x11, 0x00],
            Malformed,
        ),
        case(
            "SUBSCRIBE with flags 0",
            V5,
            frame(0x80, &cat(&[&[0, 1, 0], &s(b"a"), &[0]])),
            Malformed,
        ),
        case(
            "UNSUBSCRIBE with flags 0",
            V311,
            frame(0xa0, &cat(&[&[0, 1], &s(b"a")])),
            Malformed,
        ),
        case("PUBREL with flags 0", V311, frame(0x60, &[0, 1]), Malformed),
        case("PUBACK with flags 2", V311, frame(0x42, &[0, 1]), Malformed),
        case("PINGREQ with flags 1", V5, vec![0xc1, 0x00], Malformed),
        case("packet type 0", V5, vec![0x00, 0x00], Malformed),
        case(
            "AUTH on a 3.1.1 connection",
            V311,
            vec![0xf0, 0x00],
            Malformed,
        ),
        // PUBLISH.
        case(
            "PUBLISH QoS 3",
            V311,
            frame(0x36, &cat(&[&s(b"a"), &[0, 1]])),
            Malformed,
        ),
        case(
            "PUBLISH QoS 0 with DUP",
            V311,
            frame(0x38, &s(b"a")),
            Malformed,
        ),
        case(
            "topic name with +",
            V311,
            frame(0x30, &s(b"a/+")),
            TopicName,
        ),
        case(
            "topic name with #",
            V5,
            frame(0x30, &cat(&[&s(b"#"), &[0]])),
            TopicName,
        ),
        case(
            "v5 empty topic without alias",
            V5,
            frame(0x30, &[0, 0, 0]),
            TopicName,
        ),
        case("3.1.1 empty topic", V311, frame(0x30, &[0, 0]), TopicName),
        case(
            "topic name not UTF-8",
            V311,
            frame(0x30, &[0, 2, 0xc3, 0x28]),
            Malformed,
        ),
        case(
            "topic name with U+0000",
            V311,
            frame(0x30, &[0, 3, b'a', 0, b'b']),
            Malformed,
        ),
        case(
            "topic longer than the frame",
            V311,
            frame(0x30, &[0, 9, b'a']),
            Malformed,
        ),
        case(
            "PUBLISH packet id 0",
            V311,
            frame(0x32, &cat(&[&s(b"a"), &[0, 0]])),
            Protocol,
        ),
        case(
            "PUBLISH QoS 1 without packet id",
            V311,
            frame(0x32, &s(b"a")),
            Malformed,
        ),
        // Properties.
        case(
            "user property not UTF-8",
            V5,
            v5_publish(&[0x26, 0, 1, 0xff, 0, 1, b'v']),
            Malformed,
        ),
        case(
            "duplicate message expiry",
            V5,
            v5_publish(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
            Protocol,
        ),
        case(
            "duplicate topic alias",
            V5,
            v5_publish(&[0x23, 0, 1, 0x23, 0, 2]),
            Protocol,
        ),
        case(
            "session expiry in PUBLISH",
            V5,
            v5_publish(&[0x11, 0, 0, 0, 1]),
            Malformed,
        ),
        case(
            "unknown property 0x05",
            V5,
            v5_publish(&[0x05, 0]),
            Malformed,
        ),
        case(
            "property identifier over 1 byte",
            V5,
            v5_publish(&[0x81, 0x01, 0]),
            Malformed,
        ),
        case(
            "property value cut short",
            V5,
            v5_publish(&[0x02, 0, 0]),
            Malformed,
        ),
        case("topic alias 0", V5, v5_publish(&[0x23, 0, 0]), Protocol),
        case(
            "payload format indicator 2",
            V5,
            v5_publish(&[0x01, 2]),
            Protocol,
        ),
        case(
            "property length past the frame",
            V5,
            frame(0x30, &cat(&[&s(b"a"), &[20, 0x01, 0]])),
            Malformed,
        ),
        case(
            "topic alias in PUBACK",
            V5,
            frame(0x40, &[0, 1, 0x00, 3, 0x23, 0, 1]),
            Malformed,
        ),
        // CONNECT.
        case(
            "protocol name MQTX",
            NONE,
            connect_frame(b"MQTX", 4, 2, None, &client_a),
            Protocol,
        ),
        case(
            "MQTT level 6",
            NONE,
            connect_frame(b"MQTT", 6, 2, None, &client_a),
            Unsupported(6),
        ),
        case(
            "MQTT level 3",
            NONE,
            connect_frame(b"MQTT", 3, 2, None, &client_a),
            Unsupported(3),
        ),
        case(
            "MQIsdp level 4",
            NONE,
            connect_frame(b"MQIsdp", 4, 2, None, &client_a),
            Unsupported(4),
        ),
        case(
            "reserved connect flag",
            NONE,
            v311_connect(0x03, &client_a),
            Malformed,
        ),
        case(
            "will QoS without will flag",
            NONE,
            v311_connect(0x0a, &client_a),
            Malformed,
        ),
        case(
            "will retain without will flag",
            NONE,
            v5_connect(0x22, &[], &client_a),
            Malformed,
        ),
        case(
            "will QoS 3",
            NONE,
            v311_connect(0x1e, &cat(&[&client_a, &s(b"w"), &s(b"x")])),
            Malformed,
        ),
        case(
            "3.1.1 password without user name",
            NONE,
            v311_connect(0x42, &cat(&[&client_a, &s(b"pw")])),
            Malformed,
        ),
        case(
            "3.1 password without user name",
            NONE,
            connect_frame(b"MQIsdp", 3, 0x42, None, &cat(&[&client_a, &s(b"pw")])),
            Malformed,
        ),
        case(
            "will topic with #",
            NONE,
            v311_connect(0x06, &cat(&[&client_a, &s(b"a/#"), &s(b"x")])),
            TopicName,
        ),
        case(
            "receive maximum 0",
            NONE,
            v5_connect(0x02, &[0x21, 0, 0], &client_a),
            Protocol,
        ),
        case(
            "maximum packet size 0",
            NONE,
            v5_connect(0x02, &[0x27, 0, 0, 0, 0], &client_a),
            Protocol,
        ),
        case(
            "duplicate session expiry in CONNECT",
            NONE,
            v5_connect(0x02, &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1], &client_a),
            Protocol,
        ),
        case(
            "topic alias in CONNECT",
            NONE,
            v5_connect(0x02, &[0x23, 0, 1], &client_a),
            Malformed,
        ),
        case(
            "will delay in CONNECT properties",
            NONE,
            v5_connect(0x02, &[0x18, 0, 0, 0, 1], &client_a),
            Malformed,
        ),
        case(
            "request problem information 2",
            NONE,
            v5_connect(0x02, &[0x17, 2], &client_a),
            Protocol,
        ),
        case(
            "CONNECT trailing byte",
            NONE,
            v311_connect(0x02, &cat(&[&client_a, &[0xff]])),
            Malformed,
        ),
        case(
            "client id longer than the frame",
            NONE,
            v311_connect(0x02, &[0, 5, b'a']),
            Malformed,
        ),
        case(
            "CONNECT cut after the protocol name",
            NONE,
            frame(0x10, &s(b"MQTT")),
            Malformed,
        ),
        case(
            "user name flag without user name",
            NONE,
            v311_connect(0x82, &client_a),
            Malformed,
        ),
        // SUBSCRIBE / UNSUBSCRIBE.
        case(
            "v5 SUBSCRIBE without filters",
            V5,
            frame(0x82, &[0, 1, 0]),
            Protocol,
        ),
        case(
            "3.1.1 SUBSCRIBE without filters",
            V311,
            frame(0x82, &[0, 1]),
            Protocol,
        ),
        case(
            "v5 UNSUBSCRIBE without filters",
            V5,
            frame(0xa2, &[0, 1, 0]),
            Protocol,
        ),
        case(
            "3.1.1 UNSUBSCRIBE without filters",
            V311,
            frame(0xa2, &[0, 1]),
            Protocol,
        ),
        case(
            "subscription option bits 6-7",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[0x40]])),
            Malformed,
        ),
        case(
            "retain handling 3",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[0x30]])),
            Malformed,
        ),
        case(
            "subscription QoS 3",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[0x03]])),
            Malformed,
        ),
        case(
            "3.1.1 subscription option bit 2",
            V311,
            frame(0x82, &cat(&[&[0, 1], &s(b"a"), &[0x04]])),
            Malformed,
        ),
        case(
            "subscription filter without options",
            V311,
            frame(0x82, &cat(&[&[0, 1], &s(b"a")])),
            Malformed,
        ),
        case(
            "subscription identifier 0",
            V5,
            frame(0x82, &cat(&[&[0, 1, 2, 0x0b, 0x00], &s(b"a"), &[0]])),
            Protocol,
        ),
        case(
            "two subscription identifiers in SUBSCRIBE",
            V5,
            frame(0x82, &cat(&[&[0, 1, 4, 0x0b, 1, 0x0b, 2], &s(b"a"), &[0]])),
            Protocol,
        ),
        case(
            "subscription identifier of five bytes",
            V5,
            frame(
                0x82,
                &cat(&[
                    &[0, 1, 6, 0x0b, 0x80, 0x80, 0x80, 0x80, 0x01],
                    &s(b"a"),
                    &[0],
                ]),
            ),
            Malformed,
        ),
        case(
            "SUBSCRIBE packet id 0",
            V311,
            frame(0x82, &cat(&[&[0, 0], &s(b"a"), &[0]])),
            Protocol,
        ),
        case(
            "UNSUBSCRIBE packet id 0",
            V311,
            frame(0xa2, &cat(&[&[0, 0], &s(b"a")])),
            Protocol,
        ),
        // Acknowledgements.
        case("PUBACK packet id 0", V311, frame(0x40, &[0, 0]), Protocol),
        case("PUBCOMP packet id 0", V5, frame(0x70, &[0, 0]), Protocol),
        case(
            "SUBACK packet id 0",
            V311,
            frame(0x90, &[0, 0, 0]),
            Protocol,
        ),
        case("UNSUBACK packet id 0", V311, frame(0xb0, &[0, 0]), Protocol),
        case("PUBACK cut short", V311, frame(0x40, &[0]), Malformed),
        case(
            "3.1.1 PUBACK with a reason code",
            V311,
            frame(0x40, &[0, 1, 0]),
            Malformed,
        ),
        case(
            "v5 PUBACK trailing after properties",
            V5,
            frame(0x40, &[0, 1, 0x10, 0, 0xaa]),
            Malformed,
        ),
        case(
            "v5 PUBACK reason 0x01",
            V5,
            frame(0x40, &[0, 1, 0x01]),
            Malformed,
        ),
        case(
            "v5 PUBREL reason 0x10",
            V5,
            frame(0x62, &[0, 1, 0x10]),
            Malformed,
        ),
        case(
            "3.1.1 UNSUBACK with a reason code",
            V311,
            frame(0xb0, &[0, 1, 0]),
            Malformed,
        ),
        case(
            "v5 UNSUBACK without reason codes",
            V5,
            frame(0xb0, &[0, 1, 0]),
            Protocol,
        ),
        case(
            "3.1.1 SUBACK return code 3",
            V311,
            frame(0x90, &[0, 1, 3]),
            Malformed,
        ),
        case(
            "v5 SUBACK without reason codes",
            V5,
            frame(0x90, &[0, 1, 0]),
            Protocol,
        ),
        case(
            "v5 SUBACK reason 0x10",
            V5,
            frame(0x90, &[0, 1, 0, 0x10]),
            Malformed,
        ),
        case(
            "3.1.1 CONNACK return code 6",
            V311,
            frame(0x20, &[0, 6]),
            Malformed,
        ),
        case(
            "CONNACK reserved flags",
            V311,
            frame(0x20, &[0x02, 0]),
            Malformed,
        ),
        case(
            "v5 CONNACK without property length",
            V5,
            frame(0x20, &[0, 0]),
            Malformed,
        ),
        case(
            "v5 CONNACK maximum QoS 2",
            V5,
            frame(0x20, &[0, 0, 2, 0x24, 2]),
            Protocol,
        ),
        case(
            "v5 CONNACK reason 0x10",
            V5,
            frame(0x20, &[0, 0x10, 0]),
            Malformed,
        ),
        // Packets without a body in 3.1.1.
        case("PINGREQ with a body", V5, frame(0xc0, &[0]), Malformed),
        case("PINGRESP with a body", V311, frame(0xd0, &[0]), Malformed),
        case(
            "3.1.1 DISCONNECT with a body",
            V311,
            frame(0xe0, &[0]),
            Malformed,
        ),
        case(
            "v5 DISCONNECT unknown reason 0x03",
            V5,
            frame(0xe0, &[0x03]),
            Malformed,
        ),
        case(
            "v5 DISCONNECT property length past the frame",
            V5,
            frame(0xe0, &[0x00, 5]),
            Malformed,
        ),
        case(
            "v5 AUTH reason 0x80",
            V5,
            frame(0xf0, &[0x80, 0]),
            Malformed,
        ),
    ]
}

#[test]
fn malformed_inputs_are_rejected_with_the_right_error() {
    let mut failures = Vec::new();
    for c in cases() {
        let mut decoder = Decoder::new(1 << 20);
        if let Some(p) = c.protocol {
            decoder.set_protocol(p);
        }
        let mut buf = BytesMut::from(&c.bytes[..]);
        match decoder.decode(&mut buf) {
            Err(e) if kind(&e) == c.expected => {}
            other => failures.push(format!(
                "{}: expected {:?}, got {:?}",
                c.name, c.expected, other
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn huge_remaining_length_is_refused_after_five_bytes() {
    let mut decoder = Decoder::new(1 << 20);
    decoder.set_protocol(Protocol::V311);
    let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f][..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::TooLarge {
            size: 268_435_455 + 5,
            max: 1 << 20
        })
    );
}

#[test]
fn frame_of_exactly_the_maximum_size_is_accepted_and_one_more_is_not() {
    let max = 2 + 2 + 1 + 10; // PUBLISH to "a" with a 10-byte payload
    let publish = |n: usize| frame(0x30, &cat(&[&s(b"a"), &vec![7u8; n]]));
    let mut decoder = Decoder::new(max);
    decoder.set_protocol(Protocol::V311);
    let mut buf = BytesMut::from(&publish(10)[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Packet::Publish(_)))
    ));
    let mut buf = BytesMut::from(&publish(11)[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::TooLarge { size: max + 1, max })
    );
}

#[test]
fn decode_error_reason_codes() {
    assert_eq!(
        DecodeError::Malformed("x").reason_code(),
        ReasonCode::MalformedPacket
    );
    assert_eq!(
        DecodeError::Protocol("x").reason_code(),
        ReasonCode::ProtocolError
    );
    assert_eq!(
        DecodeError::TooLarge { size: 2, max: 1 }.reason_code(),
        ReasonCode::PacketTooLarge
    );
    assert_eq!(
        DecodeError::UnsupportedProtocol(6).reason_code(),
        ReasonCode::UnsupportedProtocolVersion
    );
    assert_eq!(
        DecodeError::TopicNameInvalid.reason_code(),
        ReasonCode::TopicNameInvalid
    );
}

#[test]
fn v5_password_without_user_name_is_allowed() {
    let bytes = v5_connect(0x42, &[], &cat(&[&s(b"a"), &s(b"pw")]));
    let mut decoder = Decoder::new(1 << 20);
    let Ok(Some(Packet::Connect(c))) = decoder.decode(&mut BytesMut::from(&bytes[..])) else {
        panic!("v5 CONNECT with a password and no user name was refused");
    };
    assert_eq!(
        (c.username, c.password.as_deref()),
        (None, Some(&b"pw"[..]))
    );
}

#[test]
fn v5_empty_topic_with_alias_is_allowed() {
    let bytes = frame(0x30, &cat(&[&[0, 0], &props(&[0x23, 0, 7]), b"x"]));
    let mut decoder = Decoder::new(1 << 20);
    decoder.set_protocol(Protocol::V5);
    let Ok(Some(Packet::Publish(p))) = decoder.decode(&mut BytesMut::from(&bytes[..])) else {
        panic!("aliased PUBLISH with an empty topic was refused");
    };
    assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("", Some(7)));
}

/// Direction rules are the broker's (see `codec/mod.rs`): a PUBLISH carrying a Subscription
/// Identifier or a Response Topic with wildcards decodes; the broker answers it with 0x82.
#[test]
fn v5_publish_direction_rules_are_left_to_the_broker() {
    let mut p = crate::codec::Publish {
        topic: "t".into(),
        ..Default::default()
    };
    p.properties.subscription_identifiers = vec![1];
    p.properties.response_topic = Some("a/+".into());
    let mut bytes = BytesMut::new();
    crate::codec::encode(&Packet::Publish(p.clone()), Protocol::V5, &mut bytes);
    let mut decoder = Decoder::new(1 << 20);
    decoder.set_protocol(Protocol::V5);
    assert_eq!(decoder.decode(&mut bytes), Ok(Some(Packet::Publish(p))));
}
