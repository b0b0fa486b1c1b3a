//! The admin endpoint (`/metrics`, the JSON behind `flockmq ctl`) and graceful shutdown, in
//! process and through the built binary.

mod common;

use std::process::Command;
use std::time::Duration;

use common::binary::Broker;
use common::{V4, V5, start_node, v5_options};
use rumqttc::QoS;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::LastWill;

const BIN: &str = env!("CARGO_BIN_EXE_flockmq");

async fn http_get(addr: std::net::SocketAddr, path: &'static str) -> String {
    tokio::task::spawn_blocking(move || flockmq::admin::ctl::get(addr, path, None))
        .await
        .unwrap()
        .expect("admin answers")
}

/// The value of one Prometheus sample line, e.g. `flockmq_connections` or
/// `flockmq_messages_received_total{qos="1"}`.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_connections_messages_and_retained() {
    let node = start_node(&[]).await;
    let admin = node.admin_addr().expect("admin endpoint is on");
    let addr = node.mqtt_addr();
    let mut sub = V4::connect("metrics-sub", addr).await;
    sub.subscribe("m/#", QoS::AtLeastOnce).await;
    let pubr = V4::connect("metrics-pub", addr).await;
    for _ in 0..3 {
        pubr.client
            .publish("m/a", QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
    }
    pubr.client
        .publish("m/r", QoS::AtMostOnce, true, "kept")
        .await
        .unwrap();
    for _ in 0..4 {
        sub.next_publish().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = http_get(admin, "/metrics").await;
    assert!(
        text.contains("# TYPE flockmq_messages_received_total counter"),
        "{text}"
    );
    assert_eq!(sample(&text, "flockmq_connections"), 2);
    assert_eq!(sample(&text, "flockmq_subscriptions"), 1);
    assert_eq!(sample(&text, "flockmq_retained_messages"), 1);
    assert_eq!(
        sample(&text, "flockmq_messages_received_total{qos=\"1\"}"),
        3
    );
    assert_eq!(
        sample(&text, "flockmq_messages_received_total{qos=\"0\"}"),
        1
    );
    assert_eq!(sample(&text, "flockmq_messages_sent_total{qos=\"1\"}"), 3);
    assert!(sample(&text, "flockmq_bytes_received_total") > 0);

    let json = http_get(admin, "/api/v1/clients").await;
    let clients: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ids: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["metrics-pub", "metrics-sub"], "sorted by client id");
    node.shutdown().await;
}

#[tokio::test]
async fn ctl_clients_list_and_metrics_through_the_binary() {
    let node = start_node(&[]).await;
    let admin = node.admin_addr().unwrap().to_string();
    let _a = V4::connect("ctl-alpha", node.mqtt_addr()).await;
    let admin2 = admin.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["ctl", "--admin", &admin2, "clients", "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("ctl-alpha")), "{text}");

    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["ctl", "--admin", &admin, "metrics"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        sample(&String::from_utf8_lossy(&out.stdout), "flockmq_connections"),
        1
    );
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_publishes_wills_then_disconnects_v5_clients_with_0x8b() {
    use flockmq::codec::{Packet, Protocol, QoS as Q, ReasonCode, Subscribe, SubscriptionOptions};
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    // rumqttc drops a PUBLISH that arrives in the same read as a DISCONNECT: use the bare client.
    let mut watcher = common::Raw::connect(addr, "watcher", Protocol::V5).await;
    let opts = SubscriptionOptions {
        qos: Q::AtLeastOnce,
        ..Default::default()
    };
    let sub = Subscribe {
        packet_id: 1,
        filters: vec![("wills/#".into(), opts)],
        ..Default::default()
    };
    watcher.send(&Packet::Subscribe(sub)).await;
    assert!(matches!(watcher.next().await, Packet::SubAck(_)));
    let mut o = v5_options("mortal", addr);
    o.set_last_will(LastWill::new(
        "wills/mortal",
        "node went down",
        QoS5::AtLeastOnce,
        false,
        None,
    ));
    let _mortal = V5::connect_with(o).await;

    // The node waits for the watcher's PUBACK before it says goodbye: stop it in the background.
    let stopping = tokio::spawn(node.shutdown());
    match watcher.next().await {
        Packet::Publish(p) => {
            assert_eq!(&*p.topic, "wills/mortal");
            let id = p.packet_id.expect("QoS 1");
            watcher
                .send(&Packet::PubAck(flockmq::codec::Ack::new(id)))
                .await;
        }
        other => panic!("expected the will first, got {other:?}"),
    }
    match watcher.next().await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    stopping.await.unwrap();
}

/// Issue 11 item 7: 50 clients with QoS 1 wills, one QoS 1 subscriber on `will/#` that reads and
/// acknowledges normally. A graceful shutdown delivers all 50 wills (more than the in-flight
/// window of 32) before the subscriber gets DISCONNECT 0x8B; the will clients get 0x8B too.
#[tokio::test]
async fn shutdown_delivers_every_will_before_disconnecting_the_subscriber() {
    use flockmq::codec::{Packet, Protocol, QoS as Q, ReasonCode};
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut sub = common::Raw::connect(addr, "will-sub", Protocol::V5).await;
    sub.subscribe("will/#", Q::AtLeastOnce).await;
    let mut mortals = Vec::new();
    for i in 0..50 {
        let (id, topic) = (format!("mortal-{i}"), format!("will/{i}"));
        mortals.push(common::Raw::connect_with_will(addr, &id, &topic).await);
    }
    #[allow(clippy::disallowed_methods)] // a printed figure, not a decision
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(node.shutdown());
    let mut topics = Vec::new();
    let reason = sub.ack_publishes_until_disconnect(&mut topics).await;
    println!(
        "{} wills received and acknowledged in {:?} after the shutdown began",
        topics.len(),
        started.elapsed()
    );
    topics.sort();
    topics.dedup();
    assert_eq!(topics.len(), 50, "every will, each once: {topics:?}");
    assert_eq!(reason, Some(ReasonCode::ServerShuttingDown));
    assert!(sub.next_or_closed().await.is_none(), "closed after 0x8B");
    stopping.await.unwrap();
    println!(
        "node stopped {:?} after the shutdown began",
        started.elapsed()
    );
    for mut m in mortals {
        match m.next_or_closed().await {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown)
            }
            other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn sigterm_stops_the_binary_gracefully() {
    let broker = Broker::start(&["admin.bind=off"]);
    let mut c = V5::connect("term", broker.addr).await;
    broker.signal("TERM");
    assert_eq!(c.expect_server_disconnect().await, 0x8B);
    let mut broker = broker;
    let exit = tokio::task::spawn_blocking(move || broker.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

/// SIGHUP reloads the configuration: `log.level` applies at once (debug lines appear), another
/// changed key is logged as taking effect at the next start, a configuration that no longer
/// loads is logged and ignored; the node and its clients stay up throughout, and SIGTERM still
/// stops it gracefully.
#[tokio::test]
async fn sighup_reloads_the_log_level_and_never_kills_the_node() {
    let dir = common::unique_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::path::Path::new(&dir).join("flockmq.conf");
    std::fs::write(&file, "log.level = info\nmqtt.max_inflight = 32\n").unwrap();
    let mut cmd = Broker::command(&["admin.bind=off"]);
    cmd.arg("--config").arg(&file).env_remove("RUST_LOG");
    let broker = Broker::spawn(cmd);
    let mut c = V5::connect("hup-1", broker.addr).await;
    assert!(
        !broker.log_lines().iter().any(|l| l.contains("DEBUG")),
        "no debug lines at log.level = info"
    );

    std::fs::write(&file, "log.level = debug\nmqtt.max_inflight = 16\n").unwrap();
    broker.signal("HUP");
    broker
        .wait_for_log(&["SIGHUP: configuration reloaded, applied log.level = debug"])
        .await;
    broker
        .wait_for_log(&["mqtt.max_inflight changed from 32 to 16", "next start"])
        .await;
    let _d = V5::connect("hup-2", broker.addr).await;
    broker.wait_for_log(&["DEBUG", "connection accepted"]).await;

    std::fs::write(&file, "log.level = debug\nno.such.key = 1\n").unwrap();
    broker.signal("HUP");
    broker
        .wait_for_log(&["SIGHUP: configuration not reloaded", "no.such.key"])
        .await;

    // Still serving: the first client subscribes and gets a message published by another.
    c.subscribe("hup/t", QoS5::AtLeastOnce).await;
    let p = V5::connect("hup-3", broker.addr).await;
    p.client
        .publish("hup/t", QoS5::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    assert_eq!(&c.next_publish().await.payload[..], b"still here");

    broker.signal("TERM");
    assert_eq!(c.expect_server_disconnect().await, 0x8B);
    let mut broker = broker;
    let exit = tokio::task::spawn_blocking(move || broker.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
