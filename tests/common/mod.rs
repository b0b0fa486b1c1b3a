//! Shared helpers for the real-socket tests: an in-process node on an ephemeral port, rumqttc
//! clients (3.1.1 and 5) whose incoming events land in a channel, and a raw TCP client for
//! bad-input tests.
#![allow(dead_code)]

pub mod binary;
pub mod logs;
pub mod netns;

use std::net::SocketAddr;
use std::time::Duration;

use flockmq::config::Config;
use flockmq::net::TokioNet;
use flockmq::node::RunningNode;
use tokio::sync::mpsc;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does NOT happen.
pub const QUIET: Duration = Duration::from_millis(400);

/// A fresh `node.data_dir` for one node of one test: nodes keep their cluster member list
/// there and read it at start, so nodes of parallel tests must never share one.
pub fn unique_data_dir() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("flockmq-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.display().to_string()
}

/// Starts a node on 127.0.0.1 with ephemeral MQTT and admin ports, plus `extra` config keys.
pub async fn start_node(extra: &[(&str, &str)]) -> RunningNode {
    let data_dir = unique_data_dir();
    let mut pairs = vec![
        ("listener.tcp.bind", "127.0.0.1:0"),
        ("admin.bind", "127.0.0.1:0"),
        ("node.data_dir", data_dir.as_str()),
        // Any free cluster port: many single nodes run in parallel on 127.0.0.1.
        ("cluster.port", "0"),
    ];
    pairs.extend_from_slice(extra);
    let config = Config::from_pairs(&pairs).expect("test config is valid");
    flockmq::server::start(TokioNet::new(), config)
        .await
        .expect("node starts")
}

/// Starts an in-process cluster node `name` (`name@IP`) with `cookie`, its MQTT listener on
/// `IP:0`, any free cluster port, 200 ms heartbeats, no admin endpoint, plus `extra` keys.
pub async fn start_cluster_node(name: &str, cookie: &str, extra: &[(&str, &str)]) -> RunningNode {
    let ip = name.split_once('@').map_or("127.0.0.1", |(_, ip)| ip);
    let mqtt = if ip.contains(':') {
        format!("[{ip}]:0")
    } else {
        format!("{ip}:0")
    };
    let data_dir = unique_data_dir();
    let mut pairs = vec![
        ("node.name", name),
        ("node.data_dir", data_dir.as_str()),
        ("node.cookie", cookie),
        ("listener.tcp.bind", mqtt.as_str()),
        ("admin.bind", "off"),
        ("cluster.port", "0"),
        ("cluster.heartbeat", "200ms"),
    ];
    pairs.extend_from_slice(extra);
    let config = Config::from_pairs(&pairs).expect("valid config");
    flockmq::server::start(TokioNet::new(), config)
        .await
        .expect("node starts")
}

/// An MQTT 3.1.1 client (rumqttc) with its event loop polled in the background.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    pub events: mpsc::UnboundedReceiver<rumqttc::Event>,
    task: tokio::task::JoinHandle<()>,
}

/// Builds 3.1.1 options for `id` against `addr`.
pub fn v4_options(id: &str, addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

impl V4 {
    /// Connects with default options and waits for CONNACK.
    pub async fn connect(id: &str, addr: SocketAddr) -> V4 {
        V4::connect_with(v4_options(id, addr)).await
    }

    /// Connects with `options` and waits for CONNACK.
    pub async fn connect_with(options: rumqttc::MqttOptions) -> V4 {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = eventloop.poll().await {
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        let mut c = V4 {
            client,
            events,
            task,
        };
        c.expect_connack().await;
        c
    }

    /// Waits for CONNACK and returns its session-present flag.
    pub async fn expect_connack(&mut self) -> bool {
        match self.next_incoming().await {
            rumqttc::Packet::ConnAck(a) => {
                assert_eq!(a.code, rumqttc::ConnectReturnCode::Success);
                a.session_present
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next incoming packet (PINGRESP skipped), or panics after WAIT.
    pub async fn next_incoming(&mut self) -> rumqttc::Packet {
        loop {
            let ev = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("event loop ended");
            if let rumqttc::Event::Incoming(p) = ev {
                if !matches!(p, rumqttc::Packet::PingResp) {
                    return p;
                }
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe queued");
        loop {
            if let rumqttc::Packet::SubAck(_) = self.next_incoming().await {
                return;
            }
        }
    }

    /// The next PUBLISH received, skipping acks.
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        loop {
            if let rumqttc::Packet::Publish(p) = self.next_incoming().await {
                return p;
            }
        }
    }

    /// Asserts no PUBLISH arrives within QUIET.
    pub async fn expect_no_publish(&mut self) {
        let deadline = tokio::time::sleep(QUIET);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                ev = self.events.recv() => {
                    if let Some(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = ev {
                        panic!("unexpected publish {p:?}");
                    }
                    if ev.is_none() { return; }
                }
            }
        }
    }

    /// Sends DISCONNECT and waits until it has been written.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect queued");
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(ev) = self.events.recv().await {
                if let rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                    break;
                }
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
    }

    /// Drops the TCP connection without DISCONNECT (an abrupt loss).
    pub fn kill(self) {
        self.task.abort();
    }
}

/// An MQTT 5 client (rumqttc v5).
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>>,
    pub connack: Option<rumqttc::v5::mqttbytes::v5::ConnAck>,
    task: tokio::task::JoinHandle<()>,
}

/// Builds MQTT 5 options for `id` against `addr`.
pub fn v5_options(id: &str, addr: SocketAddr) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

use rumqttc::v5::mqttbytes::v5::Packet as P5;

impl V5 {
    /// Connects with default options and waits for CONNACK.
    pub async fn connect(id: &str, addr: SocketAddr) -> V5 {
        V5::connect_with(v5_options(id, addr)).await
    }

    /// Connects with `options` and waits for CONNACK.
    pub async fn connect_with(options: rumqttc::v5::MqttOptions) -> V5 {
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).is_err() || failed {
                    return;
                }
            }
        });
        let mut c = V5 {
            client,
            events,
            connack: None,
            task,
        };
        match c.next_incoming().await {
            P5::ConnAck(a) => {
                assert_eq!(
                    a.code,
                    rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
                );
                c.connack = Some(a);
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// The next incoming packet (PINGRESP skipped), or panics after WAIT.
    pub async fn next_incoming(&mut self) -> P5 {
        loop {
            let ev = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("event loop ended")
                .expect("connection failed");
            if let rumqttc::v5::Event::Incoming(p) = ev {
                if !matches!(p, P5::PingResp(_)) {
                    return p;
                }
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe queued");
        self.expect_suback().await;
    }

    /// Waits for the next SUBACK.
    pub async fn expect_suback(&mut self) {
        loop {
            if let P5::SubAck(_) = self.next_incoming().await {
                return;
            }
        }
    }

    /// The next PUBLISH received, skipping acks.
    pub async fn next_publish(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        loop {
            if let P5::Publish(p) = self.next_incoming().await {
                return p;
            }
        }
    }

    /// Asserts no PUBLISH arrives within QUIET.
    pub async fn expect_no_publish(&mut self) {
        let deadline = tokio::time::sleep(QUIET);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                ev = self.events.recv() => {
                    if let Some(Ok(rumqttc::v5::Event::Incoming(P5::Publish(p)))) = ev {
                        panic!("unexpected publish {p:?}");
                    }
                    if ev.is_none() { return; }
                }
            }
        }
    }

    /// Waits until the server ends the connection with a DISCONNECT; returns its reason code.
    pub async fn expect_server_disconnect(&mut self) -> u8 {
        use rumqttc::v5::{ConnectionError, StateError};
        loop {
            let ev = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("timed out waiting for DISCONNECT")
                .expect("event loop ended without an error");
            match ev {
                Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => {
                    return reason_code as u8;
                }
                Err(e) => panic!("connection ended without DISCONNECT: {e}"),
                Ok(_) => {}
            }
        }
    }

    /// Drops the TCP connection without DISCONNECT.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// The EMQX-style `ctl cluster status` text when exactly `names` run (in the order given, which
/// must be the canonical-name order the node sorts by) and none are stopped.
pub fn running_status(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("Cluster status: [{{running_nodes,[{}]}}]", quoted.join(","))
}

/// A bare MQTT client on flockmq's own codec, for what rumqttc cannot express or parse (several
/// subscription identifiers on one PUBLISH, raw bad input).
pub struct Raw {
    pub stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    decoder: flockmq::codec::Decoder,
    protocol: flockmq::codec::Protocol,
}

impl Raw {
    /// Connects with a clean session and waits for a successful CONNACK.
    pub async fn connect(addr: SocketAddr, id: &str, protocol: flockmq::codec::Protocol) -> Raw {
        let connect = flockmq::codec::Connect {
            protocol,
            clean_start: true,
            keep_alive: 30,
            client_id: id.into(),
            ..Default::default()
        };
        Raw::connect_with(addr, connect).await
    }

    /// Sends `connect` (a will, a persistent session...) and waits for a successful CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: flockmq::codec::Connect) -> Raw {
        let (raw, ack) = Raw::connect_answer(addr, connect).await;
        assert_eq!(ack.reason_code, flockmq::codec::ReasonCode::Success);
        raw
    }

    /// An MQTT 5 client `id` whose will is a QoS 1 "gone" on `will_topic`.
    pub async fn connect_with_will(addr: SocketAddr, id: &str, will_topic: &str) -> Raw {
        use flockmq::codec::{Connect, LastWill, Protocol, QoS};
        let connect = Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 30,
            client_id: id.into(),
            will: Some(LastWill {
                topic: will_topic.into(),
                payload: "gone".into(),
                qos: QoS::AtLeastOnce,
                ..Default::default()
            }),
            ..Default::default()
        };
        Raw::connect_with(addr, connect).await
    }

    /// Sends `connect` and returns the CONNACK, whatever it says.
    pub async fn connect_answer(
        addr: SocketAddr,
        connect: flockmq::codec::Connect,
    ) -> (Raw, flockmq::codec::ConnAck) {
        use flockmq::codec::{Decoder, Packet};
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("tcp connect");
        let protocol = connect.protocol;
        let mut decoder = Decoder::new(usize::MAX);
        decoder.set_protocol(protocol);
        let mut raw = Raw {
            stream,
            buf: bytes::BytesMut::new(),
            decoder,
            protocol,
        };
        raw.send(&Packet::Connect(Box::new(connect))).await;
        match raw.next().await {
            Packet::ConnAck(a) => (raw, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, packet: &flockmq::codec::Packet) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        flockmq::codec::encode(packet, self.protocol, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    /// Encodes `packets` into one buffer and writes it with one `write_all` (a burst).
    pub async fn send_all(&mut self, packets: &[flockmq::codec::Packet]) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        for packet in packets {
            flockmq::codec::encode(packet, self.protocol, &mut out);
        }
        self.stream.write_all(&out).await.expect("write");
    }

    /// Reads until the server closes the connection; returns the packets that came first.
    /// Panics if it stays open for WAIT.
    pub async fn until_closed(&mut self) -> Vec<flockmq::codec::Packet> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, async {
            loop {
                while let Ok(Some(p)) = self.decoder.decode(&mut self.buf) {
                    got.push(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("server closes the connection");
        while let Ok(Some(p)) = self.decoder.decode(&mut self.buf) {
            got.push(p);
        }
        got
    }

    /// Subscribes to `filter` with `qos` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: flockmq::codec::QoS) {
        use flockmq::codec::{Packet, Subscribe, SubscriptionOptions};
        let opts = SubscriptionOptions {
            qos,
            ..Default::default()
        };
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(filter.into(), opts)],
            ..Default::default()
        }))
        .await;
        match self.next().await {
            Packet::SubAck(_) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Reads like a normal QoS 1 subscriber: acknowledges every PUBLISH and collects its
    /// topic, until the server sends DISCONNECT (its reason is returned) or closes (`None`).
    pub async fn ack_publishes_until_disconnect(
        &mut self,
        topics: &mut Vec<String>,
    ) -> Option<flockmq::codec::ReasonCode> {
        use flockmq::codec::{Ack, Packet};
        loop {
            match self.next_or_closed().await? {
                Packet::Publish(p) => {
                    topics.push(p.topic.to_string());
                    if let Some(id) = p.packet_id {
                        // The server may already have closed: the test then counts what came.
                        use tokio::io::AsyncWriteExt;
                        let mut out = bytes::BytesMut::new();
                        let ack = Packet::PubAck(Ack::new(id));
                        flockmq::codec::encode(&ack, self.protocol, &mut out);
                        let _ = self.stream.write_all(&out).await;
                    }
                }
                Packet::Disconnect(d) => return Some(d.reason_code),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next packet, `None` if the server closes first; panics after WAIT.
    pub async fn next_or_closed(&mut self) -> Option<flockmq::codec::Packet> {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = self
                    .decoder
                    .decode(&mut self.buf)
                    .expect("server sends valid packets")
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }

    /// The next packet from the server, or panics after WAIT.
    pub async fn next(&mut self) -> flockmq::codec::Packet {
        self.try_next(WAIT)
            .await
            .expect("timed out waiting for a packet")
    }

    /// The next packet within `wait`, or None.
    pub async fn try_next(&mut self, wait: Duration) -> Option<flockmq::codec::Packet> {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(wait, async {
            loop {
                if let Some(p) = self
                    .decoder
                    .decode(&mut self.buf)
                    .expect("server sends valid packets")
                {
                    return p;
                }
                let n = self.stream.read_buf(&mut self.buf).await.expect("read");
                assert!(n > 0, "server closed the connection");
            }
        })
        .await
        .ok()
    }
}
