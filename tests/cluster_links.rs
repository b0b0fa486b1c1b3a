//! Inter-node links on real sockets, in process: bad input on the cluster port (garbage, an
//! oversize frame, a wrong cookie, an unknown protocol version) is disconnected with a log line
//! naming the peer; the cookie never appears in the bytes two nodes exchange (captured by a
//! proxy between them); links work over IPv6.
//!
//! Each test runs on a current-thread runtime so the log capture (a thread-local subscriber)
//! sees every task of the node.

mod common;

use common::logs::Logs;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::WAIT;
use flockmq::cluster::handshake::{Role, Transcript};
use flockmq::cluster::wire::{self, LinkMessage, NONCE_LEN, PROTOCOL_VERSION};
use flockmq::node::RunningNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const COOKIE: &str = "the-cluster-cookie-4711";
/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(20);

/// How many polls fit in `WAIT` (tests count polls: the clock belongs to `Net`).
fn polls() -> u32 {
    (WAIT.as_millis() / POLL.as_millis()) as u32
}

async fn node(name: &str, extra: &[(&str, &str)]) -> RunningNode {
    common::start_cluster_node(name, COOKIE, extra).await
}

/// Reads until EOF (or the test's patience ends); returns every byte read.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the node did not close the link");
    all
}

/// The messages in `bytes`, which must be whole frames.
fn frames(bytes: &[u8]) -> Vec<LinkMessage> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(frame) = wire::split_frame(&mut buf, 1 << 20).unwrap() {
        out.push(wire::decode(&frame).unwrap());
    }
    out
}

fn hello(protocol: u16, nonce: [u8; NONCE_LEN]) -> bytes::Bytes {
    wire::encode(&LinkMessage::Hello {
        protocol,
        cluster: "flockmq".into(),
        node: "fake@127.0.0.1".into(),
        port: 1,
        incarnation: 1,
        nonce,
    })
}

#[tokio::test]
async fn garbage_on_the_cluster_port_is_disconnected_with_a_log_line() {
    let (logs, _guard) = Logs::capture("flockmq=debug");
    let n = node("n1@127.0.0.1", &[]).await;
    let mut peer = TcpStream::connect(n.cluster_addr().unwrap()).await.unwrap();
    let me = peer.local_addr().unwrap().to_string();
    peer.write_all(&[0, 0, 0, 6, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa])
        .await
        .unwrap();
    let answer = frames(&read_to_close(&mut peer).await);
    assert_eq!(
        answer,
        vec![LinkMessage::Reject {
            reason: "undecodable frame".into()
        }]
    );
    logs.wait_for(&["refusing link", &me, "garbage"]).await;
    assert_eq!(
        n.handle().metrics().await.unwrap().cluster.links_rejected,
        1
    );
}

#[tokio::test]
async fn an_oversize_frame_closes_the_link_with_a_log_line() {
    let (logs, _guard) = Logs::capture("flockmq=debug");
    let n = node("n1@127.0.0.1", &[]).await;
    let mut peer = TcpStream::connect(n.cluster_addr().unwrap()).await.unwrap();
    let me = peer.local_addr().unwrap().to_string();
    // An HTTP request's first four bytes read as a ~1.2 GB length.
    peer.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = frames(&read_to_close(&mut peer).await);
    assert_eq!(
        answer,
        vec![LinkMessage::Reject {
            reason: "bad framing".into()
        }]
    );
    logs.wait_for(&["bad framing", &me, "exceeds the limit"])
        .await;
}

#[tokio::test]
async fn an_unknown_protocol_version_is_refused_with_a_log_line() {
    let (logs, _guard) = Logs::capture("flockmq=debug");
    let n = node("n1@127.0.0.1", &[]).await;
    let mut peer = TcpStream::connect(n.cluster_addr().unwrap()).await.unwrap();
    let me = peer.local_addr().unwrap().to_string();
    peer.write_all(&hello(PROTOCOL_VERSION + 98, [1; NONCE_LEN]))
        .await
        .unwrap();
    let answer = frames(&read_to_close(&mut peer).await);
    assert_eq!(
        answer,
        vec![LinkMessage::Reject {
            reason: "unknown protocol version".into()
        }]
    );
    let version = format!("unknown protocol version {}", PROTOCOL_VERSION + 98);
    logs.wait_for(&["refusing link", &me, &version]).await;
}

#[tokio::test]
async fn a_wrong_cookie_is_refused_with_a_log_line() {
    let (logs, _guard) = Logs::capture("flockmq=debug");
    let n = node("n1@127.0.0.1", &[]).await;
    let mut peer = TcpStream::connect(n.cluster_addr().unwrap()).await.unwrap();
    let our_nonce = [5; NONCE_LEN];
    peer.write_all(&hello(PROTOCOL_VERSION, our_nonce))
        .await
        .unwrap();
    // Read the Challenge (one frame).
    let mut buf = BytesMut::new();
    let challenge = loop {
        if let Some(frame) = wire::split_frame(&mut buf, 1 << 20).unwrap() {
            break wire::decode(&frame).unwrap();
        }
        let read = tokio::time::timeout(WAIT, peer.read_buf(&mut buf)).await;
        assert!(read.unwrap().unwrap() > 0, "closed before the challenge");
    };
    let LinkMessage::Challenge {
        node: acceptor,
        nonce,
        proof,
        ..
    } = challenge
    else {
        panic!("expected a Challenge, got {challenge:?}")
    };
    let transcript = Transcript {
        cluster: "flockmq",
        dialer: "fake@127.0.0.1",
        acceptor: &acceptor,
        dialer_nonce: &our_nonce,
        acceptor_nonce: &nonce,
    };
    assert!(
        transcript.verify(COOKIE, Role::Acceptor, &proof),
        "the node proves it knows the cookie"
    );
    let wrong = transcript.proof("not-the-cookie", Role::Dialer);
    peer.write_all(&wire::encode(&LinkMessage::Proof { proof: wrong }))
        .await
        .unwrap();
    let answer = frames(&read_to_close(&mut peer).await);
    assert_eq!(
        answer,
        vec![LinkMessage::Reject {
            reason: "authentication failed".into()
        }]
    );
    logs.wait_for(&["refusing link", "fake@127.0.0.1", "failed the cookie check"])
        .await;
    let status = n.handle().cluster_status().await.unwrap();
    assert_eq!(status.running_nodes, vec!["n1@127.0.0.1"]);
}

/// Forwards TCP connections to `target`, recording every byte in both directions.
async fn capturing_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    delaying_proxy(target, Duration::ZERO).await
}

/// Forwards TCP connections to `target`, each chunk `delay` after it arrived (order kept),
/// recording every byte in both directions.
async fn delaying_proxy(target: SocketAddr, delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let captured = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, Arc::clone(&captured), delay));
            tokio::spawn(pump(sr, cw, Arc::clone(&captured), delay));
        }
    });
    (addr, seen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        seen.lock().unwrap().extend_from_slice(&buf[..n]);
        #[allow(clippy::disallowed_methods)] // the test's proxy, not node code
        let due = tokio::time::Instant::now() + delay;
        if tx.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn the_cookie_never_crosses_the_wire_between_two_nodes() {
    let n1 = node("n1@127.0.0.1", &[]).await;
    let n2 = node("n2@127.0.0.1", &[]).await;
    let (proxy, seen) = capturing_proxy(n2.cluster_addr().unwrap()).await;
    let seed = format!("n2@127.0.0.1:{}", proxy.port()).parse().unwrap();
    n1.handle()
        .cluster_join(seed)
        .await
        .expect("join through the proxy");
    let both = vec!["n1@127.0.0.1".to_string(), "n2@127.0.0.1".to_string()];
    assert_eq!(
        n1.handle().cluster_status().await.unwrap().running_nodes,
        both
    );
    // Let routes and heartbeats cross as well.
    let sub = common::V4::connect("s", n2.mqtt_addr()).await;
    let mut sub = sub;
    sub.subscribe("c/#", rumqttc::QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let captured = seen.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&captured);
    assert!(text.contains("n1@127.0.0.1"), "the proxy saw the handshake");
    assert!(
        !captured
            .windows(COOKIE.len())
            .any(|w| w == COOKIE.as_bytes()),
        "the cookie appeared on the wire"
    );
}

#[tokio::test]
async fn nodes_link_and_forward_over_ipv6() {
    // Skip quietly where the machine has no IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return;
    }
    let n1 = node("n1@::1", &[]).await;
    let n2 = node("n2@::1", &[]).await;
    let seed = format!("n2@[::1]:{}", n2.cluster_addr().unwrap().port())
        .parse()
        .unwrap();
    n1.handle()
        .cluster_join(seed)
        .await
        .expect("join over IPv6");
    // The joiner is up once it verified n2; n2 follows when the dialer's proof arrives.
    let both = vec!["n1@::1".to_string(), "n2@::1".to_string()];
    let mut polled = 0;
    while n2.handle().cluster_status().await.unwrap().running_nodes != both {
        polled += 1;
        assert!(polled < polls(), "n2 never saw n1");
        tokio::time::sleep(POLL).await;
    }
    let mut sub = common::V4::connect("s6", n2.mqtt_addr()).await;
    sub.subscribe("v6/#", rumqttc::QoS::AtLeastOnce).await;
    // Wait until n1 knows n2's route.
    let mut polled = 0;
    while n1.handle().routes().await.unwrap().is_empty() {
        polled += 1;
        assert!(polled < polls(), "route never arrived");
        tokio::time::sleep(POLL).await;
    }
    let publisher = common::V4::connect("p6", n1.mqtt_addr()).await;
    publisher
        .client
        .publish("v6/a", rumqttc::QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    let got = sub.next_publish().await;
    assert_eq!(got.topic, "v6/a");
    assert_eq!(&got.payload[..], b"hi");
}

/// Issue 11 item 7 across nodes: a QoS 1 subscriber on n2, 50 clients with QoS 1 wills on n1;
/// n1 shuts down gracefully: its wills are forwarded (and acknowledged by n2) before its links
/// close, so all 50 reach the subscriber on n2.
#[tokio::test]
async fn wills_of_a_node_shutting_down_reach_subscribers_on_another_node() {
    use flockmq::codec::{Protocol, QoS as Q};
    let (logs, _guard) = Logs::capture("flockmq=debug");
    let n1 = node("n1@127.0.0.1", &[]).await;
    let n2 = node("n2@127.0.0.1", &[]).await;
    let seed = format!("n2@127.0.0.1:{}", n2.cluster_addr().unwrap().port())
        .parse()
        .unwrap();
    n1.handle().cluster_join(seed).await.expect("join");
    let mut sub = common::Raw::connect(n2.mqtt_addr(), "far-sub", Protocol::V5).await;
    sub.subscribe("will/#", Q::AtLeastOnce).await;
    let mut polled = 0;
    while n1.handle().routes().await.unwrap().is_empty() {
        polled += 1;
        assert!(polled < polls(), "n1 never learnt n2's route");
        tokio::time::sleep(POLL).await;
    }
    let mut mortals = Vec::new();
    for i in 0..50 {
        let (id, topic) = (format!("mortal-{i}"), format!("will/{i}"));
        mortals.push(common::Raw::connect_with_will(n1.mqtt_addr(), &id, &topic).await);
    }
    n1.shutdown().await;
    // n1 stopped because n2 acknowledged every forward (not because its timeout passed).
    let line = logs
        .wait_for(&["n1@127.0.0.1", "every client and peer acknowledged"])
        .await;
    println!("{line}");
    let mut topics = Vec::new();
    while topics.len() < 50 {
        match sub.try_next(WAIT).await {
            Some(flockmq::codec::Packet::Publish(p)) => {
                topics.push(p.topic.to_string());
                let id = p.packet_id.expect("QoS 1");
                sub.send(&flockmq::codec::Packet::PubAck(flockmq::codec::Ack::new(
                    id,
                )))
                .await;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    topics.sort();
    topics.dedup();
    assert_eq!(topics.len(), 50, "every will reached n2: {topics:?}");
    n2.shutdown().await;
}

/// Issue 13 item 5: a SUBACK means the subscription is live in the whole cluster. The only link
/// between n1 and n2 delays every byte by 300 ms each way; a publish on n1 sent right after the
/// SUBACK on n2 is delivered (without waiting for the route, the SUBACK came at once and n1
/// dropped the publish: it had no route yet).
#[tokio::test]
async fn a_publish_on_another_node_right_after_the_suback_is_delivered() {
    let n1 = node("n1@127.0.0.1", &[("cluster.heartbeat", "500ms")]).await;
    let n2 = node("n2@127.0.0.1", &[("cluster.heartbeat", "500ms")]).await;
    let (proxy, _) = delaying_proxy(n1.cluster_addr().unwrap(), Duration::from_millis(300)).await;
    let seed = format!("n1@127.0.0.1:{}", proxy.port()).parse().unwrap();
    n2.handle()
        .cluster_join(seed)
        .await
        .expect("join through the slow proxy");
    let publisher = common::V5::connect("p", n1.mqtt_addr()).await;
    let mut sub = common::V5::connect("s", n2.mqtt_addr()).await;
    for round in 0..3 {
        let filter = format!("slow/{round}/#");
        sub.subscribe(&filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await;
        publisher
            .client
            .publish(
                format!("slow/{round}/x"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                "right after the SUBACK",
            )
            .await
            .unwrap();
        let got = sub.next_publish().await;
        assert_eq!(&got.topic[..], format!("slow/{round}/x").as_bytes());
    }
    drop(publisher);
}
