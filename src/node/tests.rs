//! The node's async machinery on real loopback sockets, with a fake core and a one-byte fake wire
//! format, so accept, batching, flushing, closing, timers, shutdown and the admin endpoint are
//! tested without the broker or the codec.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::core::{Core, Wire};
use super::{NodeError, RunningNode, start_with};
use crate::broker::{Action, BrokerMetrics, ClientInfo, ConnId, ConnectionLoss};
use crate::codec::{Ack, DecodeError, Disconnect, Packet, Protocol, ReasonCode};
use crate::config::Config;
use crate::net::TokioNet;

/// What the fake core saw.
#[derive(Debug, Default)]
struct Seen {
    opened: Vec<ConnId>,
    lost: Vec<(ConnId, ConnectionLoss)>,
}

/// Answers PINGREQ with PINGRESP, DISCONNECT with DISCONNECT + close, arms a 50 ms timer on
/// PUBACK (the timer sends PINGREQ), answers decode errors with DISCONNECT + close.
struct FakeCore {
    seen: Arc<Mutex<Seen>>,
    conns: BTreeSet<ConnId>,
    actions: VecDeque<Action>,
    timer: Option<(Duration, ConnId)>,
}

impl FakeCore {
    fn new() -> (FakeCore, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let core = FakeCore {
            seen: Arc::clone(&seen),
            conns: BTreeSet::new(),
            actions: VecDeque::new(),
            timer: None,
        };
        (core, seen)
    }

    fn send(&mut self, conn: ConnId, packet: Packet) {
        self.actions.push_back(Action::Send {
            conn,
            protocol: Protocol::V5,
            packet,
        });
    }

    fn goodbye(&mut self, conn: ConnId, reason: ReasonCode) {
        self.send(conn, Packet::Disconnect(Disconnect::new(reason)));
        self.actions.push_back(Action::Close { conn });
        self.conns.remove(&conn);
    }
}

impl Core for FakeCore {
    fn connection_opened(&mut self, conn: ConnId, _now: Duration) {
        self.seen.lock().unwrap().opened.push(conn);
        self.conns.insert(conn);
    }
    fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Duration) {
        match packet {
            Packet::PingReq => self.send(conn, Packet::PingResp),
            Packet::Disconnect(_) => self.goodbye(conn, ReasonCode::Success),
            Packet::PubAck(_) => self.timer = Some((now + Duration::from_millis(50), conn)),
            _ => {}
        }
    }
    fn connection_lost(&mut self, conn: ConnId, why: ConnectionLoss, _now: Duration) {
        self.seen.lock().unwrap().lost.push((conn, why.clone()));
        match why {
            ConnectionLoss::Decode(e) => self.goodbye(conn, e.reason_code()),
            ConnectionLoss::Io => {
                self.conns.remove(&conn);
            }
        }
    }
    fn handle_timeout(&mut self, now: Duration) {
        if let Some((_, conn)) = self.timer.filter(|(at, _)| *at <= now) {
            self.timer = None;
            self.send(conn, Packet::PingReq);
        }
    }
    fn poll_timeout(&self) -> Option<Duration> {
        self.timer.map(|(at, _)| at)
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn shutdown(&mut self, _now: Duration) {
        for conn in std::mem::take(&mut self.conns) {
            self.goodbye(conn, ReasonCode::ServerShuttingDown);
        }
    }
    fn metrics(&self) -> BrokerMetrics {
        BrokerMetrics {
            connections: self.conns.len() as u64,
            ..BrokerMetrics::default()
        }
    }
    fn clients(&self) -> Vec<ClientInfo> {
        self.conns
            .iter()
            .map(|c| ClientInfo {
                client_id: format!("c{}", c.0),
                connected: true,
                protocol: 5,
                clean_start: true,
                keep_alive: 0,
                session_expiry_interval: 0,
                subscriptions: 0,
                inflight: 0,
                queued: 0,
            })
            .collect()
    }
}

/// One byte per packet: `p` PINGREQ, `d` DISCONNECT, `a` PUBACK; anything else is malformed.
/// Encodes PINGRESP as `r`, DISCONNECT as `D`, PINGREQ as `T`.
struct ByteWire;

impl Wire for ByteWire {
    type Decoder = ();
    fn decoder(_max_packet_size: usize) {}
    fn decode(_: &mut (), buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let packet = match buf.get_u8() {
            b'p' => Packet::PingReq,
            b'd' => Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
            b'a' => Packet::PubAck(Ack::new(1)),
            _ => return Err(DecodeError::Malformed("fake")),
        };
        Ok(Some(packet))
    }
    fn encode(packet: &Packet, _protocol: Protocol, buf: &mut BytesMut) {
        buf.put_u8(match packet {
            Packet::PingResp => b'r',
            Packet::Disconnect(_) => b'D',
            Packet::PingReq => b'T',
            _ => b'?',
        });
    }
}

const WAIT: Duration = Duration::from_secs(5);

async fn fake_node(extra: &[(&str, &str)]) -> (RunningNode, Arc<Mutex<Seen>>) {
    let mut pairs = vec![("listener.tcp.bind", "127.0.0.1:0"), ("admin.bind", "off")];
    pairs.extend_from_slice(extra);
    let config = Config::from_pairs(&pairs).unwrap();
    let (core, seen) = FakeCore::new();
    let node = start_with::<TokioNet, FakeCore, ByteWire>(TokioNet::new(), config, core, false)
        .await
        .unwrap();
    (node, seen)
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(buf).unwrap()
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(buf).unwrap()
}

async fn eventually(mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn packets_of_one_read_are_answered_and_bytes_counted() {
    let (node, _) = fake_node(&[]).await;
    assert_ne!(node.mqtt_addr().port(), 0);
    let mut client = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    client.write_all(b"ppp").await.unwrap();
    assert_eq!(read_exactly(&mut client, 3).await, "rrr");
    let m = node.handle().metrics().await.unwrap();
    assert_eq!((m.broker.bytes_in, m.broker.bytes_out), (3, 3));
    assert_eq!((m.connections_accepted, m.broker.connections), (1, 1));
    assert_eq!(m.mqtt_listener, node.mqtt_addr());
    node.shutdown().await;
}

#[tokio::test]
async fn close_action_flushes_earlier_sends_then_closes() {
    let (node, seen) = fake_node(&[]).await;
    let mut client = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    client.write_all(b"pd").await.unwrap();
    assert_eq!(read_to_close(&mut client).await, "rD");
    // The core closed it: the driver must not report the EOF that follows as a loss.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(seen.lock().unwrap().lost.is_empty());
    node.shutdown().await;
}

#[tokio::test]
async fn decode_error_is_reported_and_the_cores_answer_flushed() {
    let (node, seen) = fake_node(&[]).await;
    let mut client = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    client.write_all(b"pxp").await.unwrap();
    assert_eq!(read_to_close(&mut client).await, "rD");
    let lost = seen.lock().unwrap().lost.clone();
    assert_eq!(
        lost.as_slice(),
        &[(
            ConnId(1),
            ConnectionLoss::Decode(DecodeError::Malformed("fake"))
        )]
    );
    node.shutdown().await;
}

#[tokio::test]
async fn peer_eof_is_reported_as_io_loss() {
    let (node, seen) = fake_node(&[]).await;
    let mut client = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    client.write_all(b"p").await.unwrap();
    assert_eq!(read_exactly(&mut client, 1).await, "r");
    drop(client);
    eventually(|| seen.lock().unwrap().lost == vec![(ConnId(1), ConnectionLoss::Io)]).await;
    node.shutdown().await;
}

#[tokio::test]
async fn core_timers_fire_at_poll_timeout() {
    let (node, _) = fake_node(&[]).await;
    let mut client = TcpStream::connect(node.mqtt_addr()).await.unwrap();
    client.write_all(b"a").await.unwrap();
    assert_eq!(read_exactly(&mut client, 1).await, "T");
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_says_goodbye_to_everyone_and_stops_accepting() {
    let (node, seen) = fake_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    eventually(|| seen.lock().unwrap().opened.len() == 2).await;
    let clients = node.handle().clients().await.unwrap();
    assert_eq!(
        clients
            .iter()
            .map(|c| c.client_id.as_str())
            .collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    let handle = node.handle();
    node.shutdown().await;
    assert_eq!(read_to_close(&mut a).await, "D");
    assert_eq!(read_to_close(&mut b).await, "D");
    assert!(TcpStream::connect(addr).await.is_err());
    assert!(matches!(handle.metrics().await, Err(NodeError::Stopped)));
}

#[tokio::test]
async fn binding_a_busy_port_fails_with_the_address() {
    let (node, _) = fake_node(&[]).await;
    let busy = node.mqtt_addr().to_string();
    let config =
        Config::from_pairs(&[("listener.tcp.bind", &busy), ("admin.bind", "off")]).unwrap();
    let (core, _) = FakeCore::new();
    let err = start_with::<TokioNet, FakeCore, ByteWire>(TokioNet::new(), config, core, false)
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::BindMqtt { addr, .. } if addr.to_string() == busy));
    node.shutdown().await;
}

#[tokio::test]
async fn startup_line_names_node_and_both_addresses() {
    let (node, _) = fake_node(&[("node.name", "n1@127.0.0.1")]).await;
    assert_eq!(
        node.startup_line(),
        format!(
            "flockmq n1@127.0.0.1 listening for MQTT on {}, admin on off",
            node.mqtt_addr()
        )
    );
    node.shutdown().await;
}

/// The same node code on a simulated turmoil host: spawned tasks, timers from `Net::now` and the
/// MQTT listener all work through `SimNet` (the admin endpoint on turmoil: `server` tests).
#[cfg(feature = "sim")]
#[test]
fn node_runs_on_a_turmoil_host() {
    use crate::net::{SimNet, SimWorld};

    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(10))
        .build();
    sim.host("n1", || async {
        let config = Config::from_pairs(&[
            ("node.name", "n1@n1"),
            ("listener.tcp.bind", "0.0.0.0:1883"),
            ("admin.bind", "off"),
        ])?;
        let (core, _) = FakeCore::new();
        let net = SimWorld::new(1).net();
        let _node = start_with::<SimNet, FakeCore, ByteWire>(net, config, core, false).await?;
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client("client", async {
        let mut mqtt = turmoil::net::TcpStream::connect(("n1", 1883)).await?;
        mqtt.write_all(b"pa").await?;
        let mut answer = [0u8; 2];
        mqtt.read_exact(&mut answer).await?;
        assert_eq!(&answer, b"rT");
        Ok(())
    });
    sim.run().unwrap();
}

/// Two clustered nodes on turmoil hosts find each other from their static seeds: host names
/// resolve through turmoil, the cluster listener binds 0.0.0.0 for a DNS host, and the handles
/// (what the simulator reads) report the same membership and routes.
#[cfg(feature = "sim")]
#[test]
fn clustered_nodes_form_a_cluster_on_turmoil_hosts() {
    use super::NodeHandle;
    use crate::net::SimWorld;
    use std::sync::Mutex as StdMutex;

    let handles: Arc<StdMutex<Vec<NodeHandle>>> = Arc::default();
    let world = SimWorld::new(1);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(30))
        .build();
    for host in ["n1", "n2"] {
        let (handles, world) = (Arc::clone(&handles), world.clone());
        sim.host(host, move || {
            let (handles, world) = (Arc::clone(&handles), world.clone());
            async move {
                let name = format!("{host}@{host}");
                let config = Config::from_pairs(&[
                    ("node.name", name.as_str()),
                    ("listener.tcp.bind", "0.0.0.0:1883"),
                    ("admin.bind", "off"),
                    ("cluster.discovery", "static"),
                    ("cluster.static.seeds", "n1@n1,n2@n2"),
                    ("cluster.heartbeat", "200ms"),
                ])?;
                let net = world.net_on_host(turmoil::lookup(host));
                let node = crate::node::start(net, config).await?;
                handles.lock().unwrap().push(node.handle());
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    sim.client("check", async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let all: Vec<NodeHandle> = handles.lock().unwrap().clone();
        assert_eq!(all.len(), 2);
        for h in &all {
            let status = h.cluster_status().await?;
            assert_eq!(status.running_nodes, ["n1@n1", "n2@n2"]);
            assert!(status.stopped_nodes.is_empty());
        }
        Ok(())
    });
    sim.run().unwrap();
}
