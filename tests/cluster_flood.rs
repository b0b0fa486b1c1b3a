//! Issue 11: one client must not be able to split the cluster, and unauthenticated peers must
//! not cost memory or flood the log.
//!
//! - A client on n1 with 60,000 filters: its route set resyncs to a restarted n2 (in bounded
//!   chunks) and publishes on n2 still reach it (in process, real sockets).
//! - Unauthenticated connections are cut after a few KiB and capped in number (in process), and
//!   500 of them sending most of a 1 MB frame leave the node's memory alone (the built binary,
//!   its RSS printed).
//! - 50 Hellos with a 1 MB cluster name write a bounded amount of log (the binary's stderr).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::binary::{Broker, free_port};
use common::{Raw, WAIT};
use flockmq::cluster::wire::{self, LinkMessage, NONCE_LEN, PROTOCOL_VERSION};
use flockmq::cluster::{MAX_PENDING_HANDSHAKES, PREAUTH_MAX_FRAME};
use flockmq::codec::{Packet, Protocol, QoS, Subscribe, SubscriptionOptions};
use flockmq::node::RunningNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const COOKIE: &str = "flood-test-cookie-5f1c9a";
/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(50);
/// Resyncing 60,000 routes in a debug build takes a few seconds on a busy machine.
const RESYNC: Duration = Duration::from_secs(60);

async fn node(name: &str, extra: &[(&str, &str)]) -> RunningNode {
    common::start_cluster_node(name, COOKIE, extra).await
}

fn hog_filters() -> Vec<String> {
    (0..60_000)
        .map(|i| format!("hog/{:05}/{:03}/sensor-value", i / 1000, i % 1000))
        .collect()
}

/// Subscribes `filters` with SUBSCRIBE packets of 1,000 filters each; waits for every SUBACK.
async fn subscribe_all(raw: &mut Raw, filters: &[String]) {
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    let batches: Vec<&[String]> = filters.chunks(1000).collect();
    for (i, batch) in batches.iter().enumerate() {
        let sub = Subscribe {
            packet_id: u16::try_from(i + 1).unwrap(),
            filters: batch.iter().map(|f| (f.as_str().into(), opts)).collect(),
            ..Default::default()
        };
        raw.send(&Packet::Subscribe(sub)).await;
    }
    for _ in &batches {
        match raw.next().await {
            Packet::SubAck(_) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// Polls `n`'s route table until its routes of `from` alone are exactly `want` (sorted), bounded;
/// returns the number of polls it took.
async fn wait_routes_of(n: &RunningNode, from: &str, want: &[String]) -> u32 {
    let polls = (RESYNC.as_millis() / POLL.as_millis()) as u32;
    let mut seen: Vec<String> = Vec::new();
    for polled in 0..polls {
        let routes = n.handle().routes().await.unwrap();
        seen = routes
            .into_iter()
            .filter(|r| r.nodes == [from])
            .map(|r| r.filter)
            .collect();
        if seen == want {
            return polled;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!(
        "{from}'s routes never matched: {} of {} held, first missing {:?}",
        seen.len(),
        want.len(),
        want.iter().find(|f| seen.binary_search(f).is_err())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_with_60000_filters_does_not_split_the_cluster() {
    // 1 s heartbeats: handling 60,000 routes in a debug build on a loaded machine can stall a
    // node long enough for 200 ms heartbeats to call the link dead (then its routes are hidden).
    let slow = [("cluster.heartbeat", "1s")];
    let n1 = node("n1@127.0.0.1", &slow).await;
    let seed_n1 = format!("n1@127.0.0.1:{}", n1.cluster_addr().unwrap().port());
    let n2 = node("n2@127.0.0.1", &slow).await;
    n2.handle()
        .cluster_join(seed_n1.parse().unwrap())
        .await
        .expect("n2 joins n1");

    let filters = hog_filters();
    let bytes: usize = filters.iter().map(String::len).sum();
    let mut hog = Raw::connect(n1.mqtt_addr(), "hog", Protocol::V5).await;
    subscribe_all(&mut hog, &filters).await;
    let mut want = filters.clone();
    want.sort();
    let polled = wait_routes_of(&n2, "n1@127.0.0.1", &want).await;
    println!(
        "{} filters ({bytes} bytes) replicated to n2 as deltas after {polled} polls",
        filters.len()
    );

    // n2 restarts: n1's whole route set must cross the new link.
    n2.shutdown().await;
    let n2 = node("n2@127.0.0.1", &slow).await;
    n2.handle()
        .cluster_join(seed_n1.parse().unwrap())
        .await
        .expect("the restarted n2 joins n1");
    let polled = wait_routes_of(&n2, "n1@127.0.0.1", &want).await;
    println!(
        "resync of {} routes to the restarted n2 after {polled} polls",
        filters.len()
    );
    let status = n1.handle().cluster_status().await.unwrap();
    assert_eq!(status.running_nodes, ["n1@127.0.0.1", "n2@127.0.0.1"]);

    // A publish on n2 reaches the client on n1, and so does a new subscription's route.
    let publisher = common::V4::connect("p", n2.mqtt_addr()).await;
    publisher
        .client
        .publish(
            "hog/00042/007/sensor-value",
            rumqttc::QoS::AtLeastOnce,
            false,
            "hi",
        )
        .await
        .unwrap();
    match hog.next().await {
        Packet::Publish(p) => assert_eq!(&*p.topic, "hog/00042/007/sensor-value"),
        other => panic!("expected the publish, got {other:?}"),
    }
}

/// The messages in `bytes` (whole frames).
fn frames(bytes: &[u8]) -> Vec<LinkMessage> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = wire::split_frame(&mut buf, 1 << 20) {
        out.push(wire::decode(&frame).unwrap());
    }
    out
}

/// Reads until the node closes (EOF or reset); panics after WAIT. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node did not close the connection");
    all
}

fn frame_header(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

#[tokio::test]
async fn a_large_frame_before_the_handshake_is_refused_after_a_few_kib() {
    // A 10 s heartbeat makes the handshake timeout 30 s: only the pre-auth limit closes early.
    let n = node("n1@127.0.0.1", &[("cluster.heartbeat", "10s")]).await;
    let mut peer = TcpStream::connect(n.cluster_addr().unwrap()).await.unwrap();
    // Announce a 1 MB frame (allowed after authentication) and send the first 10 KB of it.
    peer.write_all(&frame_header(1_000_000)).await.unwrap();
    peer.write_all(&[0u8; 10_000]).await.unwrap();
    let answer = frames(&read_until_closed(&mut peer).await);
    assert_eq!(
        answer,
        vec![LinkMessage::Reject {
            reason: "bad framing".into()
        }]
    );
    // A frame just under the pre-auth limit is read and judged (garbage), not refused by size.
    let mut peer = TcpStream::connect(n.cluster_addr().unwrap()).await.unwrap();
    let len = PREAUTH_MAX_FRAME as u32;
    peer.write_all(&frame_header(len)).await.unwrap();
    peer.write_all(&vec![0xffu8; PREAUTH_MAX_FRAME])
        .await
        .unwrap();
    let answer = frames(&read_until_closed(&mut peer).await);
    assert_eq!(
        answer,
        vec![LinkMessage::Reject {
            reason: "undecodable frame".into()
        }]
    );
}

fn hello(cluster: &str, nonce: [u8; NONCE_LEN]) -> bytes::Bytes {
    wire::encode(&LinkMessage::Hello {
        protocol: PROTOCOL_VERSION,
        cluster: cluster.into(),
        node: "fake@127.0.0.1".into(),
        port: 1,
        incarnation: 1,
        nonce,
    })
}

/// Reads one frame (the Challenge) within WAIT.
async fn read_one_frame(stream: &mut TcpStream) -> LinkMessage {
    let mut buf = BytesMut::new();
    loop {
        if let Some(frame) = wire::split_frame(&mut buf, 1 << 20).unwrap() {
            return wire::decode(&frame).unwrap();
        }
        let read = tokio::time::timeout(WAIT, stream.read_buf(&mut buf)).await;
        assert!(read.unwrap().unwrap() > 0, "closed before a frame arrived");
    }
}

#[tokio::test]
async fn pending_handshakes_beyond_the_cap_are_closed_at_once() {
    let n = node("n1@127.0.0.1", &[("cluster.heartbeat", "10s")]).await;
    let addr = n.cluster_addr().unwrap();
    // Fill the cap with handshakes that got their Challenge and never send a Proof.
    let mut pending = Vec::new();
    for i in 0..MAX_PENDING_HANDSHAKES {
        let mut peer = TcpStream::connect(addr).await.unwrap();
        peer.write_all(&hello("flockmq", [i as u8; NONCE_LEN]))
            .await
            .unwrap();
        let challenge = read_one_frame(&mut peer).await;
        assert!(
            matches!(challenge, LinkMessage::Challenge { .. }),
            "{challenge:?}"
        );
        pending.push(peer);
    }
    for _ in 0..10 {
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert!(read_until_closed(&mut extra).await.is_empty());
    }
    let metrics = n.handle().metrics().await.unwrap();
    assert_eq!(metrics.cluster.handshakes_refused, 10);
    drop(pending);
}

/// The built binary on 127.0.0.1 with a free cluster port, named and with the test's cookie;
/// returns it and its cluster address.
fn start_binary(extra: &[&str]) -> (Broker, SocketAddr) {
    let port = free_port();
    let mut sets = vec![
        "node.name=flood@127.0.0.1".to_string(),
        format!("node.cookie={COOKIE}"),
        "admin.bind=off".to_string(),
        format!("cluster.port={port}"),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let node = Broker::start(&sets);
    (node, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The bytes of log lines the node wrote (newlines included).
fn log_bytes(lines: &[String]) -> usize {
    lines.iter().map(|l| l.len() + 1).sum()
}

fn rss_kib(node: &Broker) -> u64 {
    node.vm_kib("VmRSS").unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pre_auth_connections_sending_most_of_a_1mb_frame_are_cut_early() {
    // A 10 s heartbeat makes the handshake timeout 30 s: only the pre-auth limit and the
    // handshake cap close connections within the test's patience.
    let (node, addr) = start_binary(&["cluster.heartbeat=10s"]);
    let before = rss_kib(&node);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..500 {
        tasks.spawn(async move {
            let mut peer = TcpStream::connect(addr).await.unwrap();
            let mut data = frame_header(1_000_000).to_vec();
            data.resize(4 + 999_000, 0);
            // The node closes early: the write may fail half way, which is the point.
            let _ = peer.write_all(&data).await;
            read_until_closed(&mut peer).await;
        });
    }
    let mut closed = 0;
    while let Some(done) = tasks.join_next().await {
        done.expect("every connection is closed by the node within WAIT");
        closed += 1;
    }
    let after = rss_kib(&node);
    println!(
        "RSS of the node: {before} KiB before, {after} KiB after {closed} pre-auth connections \
         each sending 999 KB of a 1 MB frame (+{} KiB)",
        after.saturating_sub(before)
    );
    assert_eq!(closed, 500);
    let logs = node.stop();
    println!("{} bytes of log", log_bytes(&logs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_with_huge_cluster_names_write_a_bounded_log() {
    let (node, addr) = start_binary(&[]);
    let huge = "c".repeat(1 << 20);
    let big = "d".repeat(3000); // fits the pre-auth limit: refused by name, logged truncated
    for i in 0..50u8 {
        for name in [&huge, &big] {
            let mut peer = TcpStream::connect(addr).await.unwrap();
            let _ = peer.write_all(&hello(name, [i; NONCE_LEN])).await;
            let answer = read_until_closed(&mut peer).await;
            if i == 0 {
                println!(
                    "answer to a {} byte name: {:?}",
                    name.len(),
                    frames(&answer)
                );
            }
        }
    }
    let logs = node.stop();
    let bytes = log_bytes(&logs);
    let text = logs.join("\n");
    println!(
        "100 bad Hellos (50 with a 1 MB cluster name, 50 with 3,000 chars) wrote {bytes} bytes of log:\n{text}"
    );
    assert!(bytes < 100 * 1024, "{bytes} bytes of log");
    assert!(
        !text.contains(&"d".repeat(65)),
        "a peer string was logged whole"
    );
}
