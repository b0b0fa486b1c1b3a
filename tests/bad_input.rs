//! Bad input closes only the offending connection, with the right reason code where the protocol
//! allows one, while a healthy publisher/subscriber pair on the same node keeps working.

mod common;

use bytes::BytesMut;
use common::{V4, WAIT, start_node};
use flockmq::codec::{self, Connect, Decoder, Packet, Protocol, ReasonCode};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the server sends until it closes the connection (panics if it stays open).
async fn read_until_closed(stream: &mut TcpStream, protocol: Protocol) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("server closes the bad connection");
    let mut dec = Decoder::new(usize::MAX);
    dec.set_protocol(protocol);
    let mut out = Vec::new();
    while let Ok(Some(p)) = dec.decode(&mut buf) {
        out.push(p);
    }
    out
}

fn connect_bytes(id: &str, protocol: Protocol) -> BytesMut {
    let mut b = BytesMut::new();
    let c = Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: id.into(),
        ..Default::default()
    };
    codec::encode(&Packet::Connect(Box::new(c)), protocol, &mut b);
    b
}

async fn connected_raw_v5(addr: std::net::SocketAddr, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_bytes(id, Protocol::V5)).await.unwrap();
    let mut buf = BytesMut::new();
    let mut dec = Decoder::new(usize::MAX);
    dec.set_protocol(Protocol::V5);
    loop {
        s.read_buf(&mut buf).await.unwrap();
        if let Some(p) = dec.decode(&mut buf).unwrap() {
            match p {
                Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::Success),
                other => panic!("expected CONNACK, got {other:?}"),
            }
            return s;
        }
    }
}

/// A subscriber and a publisher that must be undisturbed by everything else.
struct Bystanders {
    sub: V4,
    pubr: V4,
    n: u32,
}

impl Bystanders {
    async fn new(addr: std::net::SocketAddr) -> Bystanders {
        let mut sub = V4::connect("bystander-sub", addr).await;
        sub.subscribe("healthy/#", QoS::AtLeastOnce).await;
        let pubr = V4::connect("bystander-pub", addr).await;
        Bystanders { sub, pubr, n: 0 }
    }

    async fn still_work(&mut self) {
        self.n += 1;
        let topic = format!("healthy/{}", self.n);
        self.pubr
            .client
            .publish(topic.clone(), QoS::AtLeastOnce, false, "ok")
            .await
            .unwrap();
        let p = self.sub.next_publish().await;
        assert_eq!(p.topic, topic);
    }
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let node = start_node(&[]).await;
    let mut ok = Bystanders::new(node.mqtt_addr()).await;
    let mut s = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xff\xff\xff")
        .await
        .unwrap();
    read_until_closed(&mut s, Protocol::V311).await;
    ok.still_work().await;
    node.shutdown().await;
}

#[tokio::test]
async fn truncated_connect_closes_only_that_connection() {
    let node = start_node(&[]).await;
    let mut ok = Bystanders::new(node.mqtt_addr()).await;

    // Fields end inside the frame: protocol name and level but no flags or keepalive.
    let mut s = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    s.write_all(&[0x10, 0x07, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04])
        .await
        .unwrap();
    read_until_closed(&mut s, Protocol::V311).await;
    ok.still_work().await;

    // The frame itself is cut short and the peer half-closes.
    let full = connect_bytes("cut", Protocol::V311);
    let mut s = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    s.write_all(&full[..full.len() - 3]).await.unwrap();
    s.shutdown().await.unwrap();
    read_until_closed(&mut s, Protocol::V311).await;
    ok.still_work().await;
    node.shutdown().await;
}

/// The bytes of a PUBLISH fixed header announcing `remaining` bytes (varint, possibly over-long).
fn publish_header(mut remaining: u64) -> Vec<u8> {
    let mut header = vec![0x30];
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        header.push(byte);
        if remaining == 0 {
            return header;
        }
    }
}

#[tokio::test]
async fn oversized_remaining_length_is_refused_without_buffering() {
    let node = start_node(&[]).await;
    let mut ok = Bystanders::new(node.mqtt_addr()).await;

    // 300 MB does not fit MQTT's 4-byte remaining length: a 5-byte length is malformed (0x81).
    let mut s = connected_raw_v5(node.mqtt_addr(), "huge").await;
    s.write_all(&publish_header(300 * 1024 * 1024))
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Protocol::V5).await;
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::MalformedPacket),
        "expected DISCONNECT 0x81, got {got:?}"
    );
    ok.still_work().await;

    // The largest encodable length (256 MB) is over mqtt.max_packet_size: 0x95, after 5 bytes.
    let mut s = connected_raw_v5(node.mqtt_addr(), "large").await;
    s.write_all(&publish_header(268_435_455)).await.unwrap();
    let got = read_until_closed(&mut s, Protocol::V5).await;
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::PacketTooLarge),
        "expected DISCONNECT 0x95, got {got:?}"
    );
    ok.still_work().await;

    // 3.1.1 has no server DISCONNECT: the connection is just closed.
    let mut s = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    s.write_all(&connect_bytes("large4", Protocol::V311))
        .await
        .unwrap();
    s.write_all(&publish_header(268_435_455)).await.unwrap();
    let got = read_until_closed(&mut s, Protocol::V311).await;
    assert!(matches!(got.as_slice(), [Packet::ConnAck(_)]), "{got:?}");
    ok.still_work().await;
    node.shutdown().await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error() {
    let node = start_node(&[]).await;
    let mut ok = Bystanders::new(node.mqtt_addr()).await;
    let mut s = connected_raw_v5(node.mqtt_addr(), "twice").await;
    s.write_all(&connect_bytes("twice", Protocol::V5))
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Protocol::V5).await;
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::ProtocolError),
        "expected DISCONNECT 0x82, got {got:?}"
    );
    ok.still_work().await;

    // 3.1.1 has no DISCONNECT from the server: the connection is simply closed.
    let mut s = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    s.write_all(&connect_bytes("twice4", Protocol::V311))
        .await
        .unwrap();
    s.write_all(&connect_bytes("twice4", Protocol::V311))
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Protocol::V311).await;
    assert!(matches!(got.first(), Some(Packet::ConnAck(_))), "{got:?}");
    assert!(!got.iter().any(|p| matches!(p, Packet::Disconnect(_))));
    ok.still_work().await;
    node.shutdown().await;
}

#[tokio::test]
async fn publish_with_wildcard_topic_is_rejected() {
    let node = start_node(&[]).await;
    let mut ok = Bystanders::new(node.mqtt_addr()).await;
    let mut s = connected_raw_v5(node.mqtt_addr(), "wild").await;
    // PUBLISH QoS0 to "a/#".
    s.write_all(&[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00])
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Protocol::V5).await;
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::TopicNameInvalid),
        "expected DISCONNECT 0x90, got {got:?}"
    );
    ok.still_work().await;
    node.shutdown().await;
}

/// A CONNECT `MQTT` with a level other than 4 or 5 gets CONNACK 0x01 (unacceptable protocol
/// version, in 3.1.1 form) and then the close (MQTT-3.1.2-2), not a silent close.
#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_then_close() {
    let node = start_node(&[]).await;
    let mut ok = Bystanders::new(node.mqtt_addr()).await;
    for level in [3u8, 6] {
        let mut s = TcpStream::connect(node.mqtt_addr()).await.unwrap();
        // CONNECT "MQTT" level, clean session, keepalive 60, client id "a".
        let connect = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60, 0, 1, b'a',
        ];
        s.write_all(&connect).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
            .await
            .expect("server closes the connection")
            .expect("read");
        assert_eq!(
            raw,
            [0x20, 0x02, 0x00, 0x01],
            "level {level}: CONNACK 0x01, then EOF"
        );
        ok.still_work().await;
    }
    node.shutdown().await;
}

/// A v5 PUBLISH from a client carrying a Subscription Identifier (MQTT-3.3.4-6) or a Response
/// Topic with wildcards (MQTT-3.3.2-14) is a protocol error: DISCONNECT 0x82, close.
#[tokio::test]
async fn v5_publish_with_subscription_id_or_wildcard_response_topic_gets_0x82() {
    use flockmq::codec::{Publish, QoS as Q};
    let node = start_node(&[]).await;
    let mut ok = Bystanders::new(node.mqtt_addr()).await;
    type Spoil = fn(&mut Publish);
    let cases: [(&str, Spoil); 2] = [
        ("subscription identifier", |p| {
            p.properties.subscription_identifiers = vec![1]
        }),
        ("response topic a/+", |p| {
            p.properties.response_topic = Some("a/+".into())
        }),
    ];
    for (what, set) in cases {
        let mut s = connected_raw_v5(node.mqtt_addr(), "manners").await;
        let mut p = Publish {
            qos: Q::AtLeastOnce,
            topic: "healthy/x".into(),
            packet_id: Some(1),
            payload: "no".into(),
            ..Default::default()
        };
        set(&mut p);
        let mut b = BytesMut::new();
        codec::encode(&Packet::Publish(p), Protocol::V5, &mut b);
        s.write_all(&b).await.unwrap();
        let got = read_until_closed(&mut s, Protocol::V5).await;
        assert!(
            matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
            "{what}: expected DISCONNECT 0x82 only, got {got:?}"
        );
        // Not delivered to the bystander subscriber on healthy/#; it still works.
        ok.still_work().await;
    }
    node.shutdown().await;
}
