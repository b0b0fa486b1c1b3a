//! Simulated MQTT clients: publishers and subscribers built on flockmq's codec, talking to nodes
//! over turmoil TCP through the run's `SimWorld` (a connect to a crashed node hangs, as to a dead
//! machine, so clients time their connects out like real clients do).
//!
//! A client behaves like a careful real client with persistent client-side state: it reconnects
//! with capped exponential backoff and jitter, resumes its session (resending unacknowledged
//! QoS 1/2 messages in order, DUP set) when CONNACK says the session is present, and discards its
//! session state (recording the unacknowledged messages as abandoned) when it is not. QoS 2
//! inbound uses packet-id deduplication until PUBREL, so the application sees each message once.
//!
//! After a CONNECT that got no CONNACK (lost on the way back, connection cut), the next connect
//! uses clean start: the node may have created a fresh session from that CONNECT (e.g. after it
//! restarted), and a later `session_present = 1` would then describe a session without our
//! subscriptions or QoS 2 state, which no client can tell apart from its old one.
//!
//! Everything observable goes into the shared `History`. A client never reads the real clock,
//! never draws unseeded randomness and never panics on what a node sends.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use flockmq::codec::{
    Ack, Connect, ConnectProperties, Decoder, Packet, Protocol, Publish, QoS, ReasonCode,
    Subscribe, SubscriptionOptions, encode,
};
use flockmq::net::{Net, SimWorld};
use rand::rngs::StdRng;

/// Filters per SUBSCRIBE packet (a workload with generated filters sends several).
const SUBSCRIBE_BATCH: usize = 1000;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::history::{ClientIdx, DisconnectCause, Event, History, MsgId, Names};
use crate::scenario::{SessionKind, Workload};

/// The MQTT port every simulated node listens on.
pub const MQTT_PORT: u16 = 1883;
/// How long a simulated client waits for a TCP connect (a crashed node never answers).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// Most QoS>0 messages a publisher keeps unacknowledged (also capped by the node's Receive Maximum).
const PUBLISH_WINDOW: usize = 16;

/// One simulated client, fixed before the run.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Client id, `<workload>-s<i>` or `<workload>-p<i>`.
    pub id: String,
    /// Index into the scenario's workloads.
    pub workload: usize,
    pub publisher: bool,
    /// Node hosts to use, the preferred one first (later ones only with `failover`).
    pub nodes: Vec<String>,
    /// The client host it runs on.
    pub host: String,
    /// Seed of the client's RNG (jitter, topic choice).
    pub seed: u64,
}

/// A deliberately broken client, to prove the checkers catch what they claim to catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// The client acknowledges its `nth` QoS 1 delivery (1-based) but never records it, as an
    /// application that loses a message after PUBACK would.
    DropQos1Delivery { client: ClientIdx, nth: u64 },
    /// The client hands its `nth` QoS 2 delivery (1-based) to the application twice, as a client
    /// without packet-id deduplication would.
    DuplicateQos2Delivery { client: ClientIdx, nth: u64 },
    /// The client's task panics right after its first CONNACK: proves a panic in any spawned
    /// task fails the run (needs `--cfg tokio_unstable`).
    PanicAfterConnect { client: ClientIdx },
}

/// What the harness can tell a client between steps.
#[derive(Debug, Default)]
pub struct ClientControl {
    /// Wakes the client to drop its connection abruptly (a `client_disconnect` fault).
    pub kick: Notify,
    /// Kicks so far; a connection ends when this grows past its value at connect time.
    pub kicks: Cell<u64>,
    /// Whether the client has a connection now (only connected clients are kicked).
    pub connected: Cell<bool>,
    /// How long to stay away after a kick (default: the reconnect backoff).
    pub down_for: Cell<Option<Duration>>,
}

/// State shared by every task of a run (all on the simulation's one thread).
pub struct Shared {
    /// The recorded history.
    pub history: RefCell<History>,
    /// Every client of the run, indexed by `ClientIdx`.
    pub roster: Vec<ClientSpec>,
    /// The scenario's workloads (client settings).
    pub workloads: Vec<Workload>,
    /// One control per client.
    pub controls: Vec<ClientControl>,
    /// An injected client bug, if any.
    pub plant: Option<PlantedBug>,
    /// The simulated network's state (datagram faults, disks); clients reach nodes through it.
    pub world: SimWorld,
}

impl Names for Vec<ClientSpec> {
    fn client(&self, client: ClientIdx) -> &str {
        self.get(client as usize).map_or("?", |c| c.id.as_str())
    }
}

impl Shared {
    fn record(&self, event: Event) {
        self.history.borrow_mut().record(now(), event);
    }
}

/// Simulated time since the start of the run.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Sleeps until simulated time `at`.
async fn sleep_until(at: Duration) {
    let wait = at.saturating_sub(now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// `n3` -> 3.
pub fn node_number(host: &str) -> u32 {
    host.trim_start_matches(['n', 'c']).parse().unwrap_or(0)
}

/// An outgoing QoS 1/2 message not yet finished.
#[derive(Debug, Clone)]
struct Outgoing {
    msg: MsgId,
    topic: ByteString,
    qos: QoS,
    /// QoS 2 after PUBREC: PUBREL sent, waiting for PUBCOMP.
    released: bool,
}

/// Client-side session and application state (survives reconnects).
struct Client {
    ctx: Rc<Shared>,
    idx: ClientIdx,
    spec: ClientSpec,
    wl: Workload,
    rng: StdRng,
    protocol: Protocol,
    /// Connections made so far (the current one's number).
    conn: u32,
    /// The node of the current (or last) connection.
    node: u32,
    /// Whether a session we created may exist on the server (persistent sessions only).
    session_started: bool,
    /// A CONNECT was sent but its CONNACK never arrived: the server's session is unknown.
    connect_unanswered: bool,
    subscribed: bool,
    /// SUBACKs still expected for the SUBSCRIBEs of this connection.
    subacks_due: usize,
    /// Reason codes of the SUBACKs received so far on this connection.
    granted: Vec<u8>,
    next_seq: u32,
    next_pid: u16,
    outgoing: BTreeMap<u16, Outgoing>,
    incoming_qos2: BTreeSet<u16>,
    qos1_received: u64,
    qos2_received: u64,
    next_publish: Duration,
    window: usize,
}

/// Runs client `idx` forever (the harness stops the simulation at the end of the run).
pub async fn run(ctx: Rc<Shared>, idx: ClientIdx) {
    let Some(spec) = ctx.roster.get(idx as usize).cloned() else {
        return;
    };
    let Some(wl) = ctx.workloads.get(spec.workload).cloned() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let jitter = Duration::from_millis(rng.random_range(0..500));
    // Subscribers first, publishers a second later, so that most messages have an audience.
    let start = wl.start + jitter + Duration::from_secs(u64::from(spec.publisher));
    let protocol = if wl.protocol == 4 {
        Protocol::V311
    } else {
        Protocol::V5
    };
    let mut client = Client {
        ctx,
        idx,
        spec,
        next_publish: start,
        wl,
        rng,
        protocol,
        conn: 0,
        node: 0,
        session_started: false,
        connect_unanswered: false,
        subscribed: false,
        subacks_due: 0,
        granted: Vec::new(),
        next_seq: 1,
        next_pid: 1,
        outgoing: BTreeMap::new(),
        incoming_qos2: BTreeSet::new(),
        qos1_received: 0,
        qos2_received: 0,
        window: PUBLISH_WINDOW,
    };
    sleep_until(start).await;
    client.run().await;
}

impl Client {
    async fn run(&mut self) {
        let mut failures: u32 = 0;
        let mut node_pos = 0usize;
        loop {
            let node = self
                .spec
                .nodes
                .get(node_pos % self.spec.nodes.len().max(1))
                .cloned()
                .unwrap_or_default();
            match self.connect(&node).await {
                Err(why) => {
                    self.ctx.record(Event::ConnectFailed {
                        client: self.idx,
                        node: node_number(&node),
                        why,
                    });
                    failures = failures.saturating_add(1);
                    if self.wl.failover {
                        node_pos += 1;
                    }
                    tokio::time::sleep(self.backoff(failures)).await;
                }
                Ok((stream, rbuf, decoder)) => {
                    failures = 0;
                    self.ctx.controls[self.idx as usize].connected.set(true);
                    let cause = self.session(stream, rbuf, decoder).await;
                    self.ctx.controls[self.idx as usize].connected.set(false);
                    self.ctx.record(Event::Disconnected {
                        client: self.idx,
                        conn: self.conn,
                        cause,
                    });
                    let control = &self.ctx.controls[self.idx as usize];
                    let pause = match (cause, control.down_for.take()) {
                        (DisconnectCause::Fault, Some(d)) => d,
                        _ => self.backoff(1),
                    };
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let (min, max) = self.wl.reconnect;
        let exp = min.saturating_mul(1u32 << failures.min(16).saturating_sub(1));
        let cap = exp.min(max).max(Duration::from_millis(1));
        let half = cap / 2;
        half + Duration::from_micros(self.rng.random_range(0..=cap.as_micros() as u64 / 2))
    }

    fn persistent(&self) -> bool {
        self.wl.session == SessionKind::Persistent
    }

    /// TCP connect, CONNECT, CONNACK; on success the connection is counted and recorded.
    async fn connect(
        &mut self,
        node: &str,
    ) -> Result<(turmoil::net::TcpStream, BytesMut, Decoder), String> {
        let clean_start = !self.persistent() || !self.session_started || self.connect_unanswered;
        let number = node_number(node);
        self.ctx.record(Event::ConnectAttempt {
            client: self.idx,
            node: number,
            clean_start,
        });
        let net = self.ctx.world.net();
        let ip = net.lookup(node).await.map_err(|e| e.to_string())?;
        // A connect to a crashed node hangs (as to a dead machine): give up like a real client.
        let connect = net.connect(SocketAddr::new(ip, MQTT_PORT));
        let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(connected) => connected.map_err(|e| format!("{:?}", e.kind()))?,
            Err(_) => return Err(format!("{:?}", std::io::ErrorKind::TimedOut)),
        };
        let keep_alive = self.wl.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16;
        let v5 = self.protocol.is_v5();
        let connect = Connect {
            protocol: self.protocol,
            clean_start,
            keep_alive,
            client_id: ByteString::from(self.spec.id.as_str()),
            properties: ConnectProperties {
                session_expiry_interval: (v5 && self.persistent())
                    .then_some(self.wl.session_expiry),
                receive_maximum: self.wl.receive_maximum.filter(|_| v5),
                ..ConnectProperties::default()
            },
            ..Connect::default()
        };
        let mut out = BytesMut::new();
        encode(&Packet::Connect(Box::new(connect)), self.protocol, &mut out);
        // From here on the node may act on the CONNECT even if we never see its answer.
        self.connect_unanswered = true;
        let patience = self.wl.keep_alive * 2;
        match tokio::time::timeout(patience, stream.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("write CONNECT: {:?}", e.kind())),
            Err(_) => return Err("write CONNECT timed out".into()),
        }
        let mut decoder = Decoder::new(1 << 20);
        decoder.set_protocol(self.protocol);
        let mut rbuf = BytesMut::with_capacity(4096);
        let connack = tokio::time::timeout(patience, async {
            loop {
                match decoder.decode(&mut rbuf) {
                    Ok(Some(packet)) => return Ok(packet),
                    Ok(None) => {}
                    Err(e) => return Err(format!("bad CONNACK: {e}")),
                }
                match stream.read_buf(&mut rbuf).await {
                    Ok(0) => return Err("closed before CONNACK".to_string()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read CONNACK: {:?}", e.kind())),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK in time".to_string())??;
        let Packet::ConnAck(ack) = connack else {
            return Err("first packet is not CONNACK".into());
        };
        if ack.reason_code.is_error() {
            return Err(format!("CONNACK 0x{:02x}", ack.reason_code as u8));
        }
        self.connect_unanswered = false;
        self.conn += 1;
        self.node = number;
        if self.persistent() {
            self.session_started = true;
        }
        if let Some(max) = ack.properties.receive_maximum {
            self.window = PUBLISH_WINDOW.min(usize::from(max)).max(1);
        }
        self.ctx.record(Event::Connected {
            client: self.idx,
            node: number,
            conn: self.conn,
            session_present: ack.session_present,
        });
        if !ack.session_present {
            self.session_lost();
        }
        if self.ctx.plant == Some(PlantedBug::PanicAfterConnect { client: self.idx }) {
            panic!("planted panic in client {}", self.spec.id);
        }
        Ok((stream, rbuf, decoder))
    }

    /// The server has no session for us: drop ours (MQTT-3.2.2-4 client side).
    fn session_lost(&mut self) {
        for o in std::mem::take(&mut self.outgoing).into_values() {
            if !o.released {
                self.ctx.record(Event::Abandoned {
                    client: self.idx,
                    msg: o.msg,
                });
            }
        }
        self.incoming_qos2.clear();
        self.subscribed = false;
    }

    fn alloc_pid(&mut self) -> u16 {
        loop {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.outgoing.contains_key(&pid) {
                return pid;
            }
        }
    }

    /// One connection's life: resend, subscribe, then publish / receive / keepalive until it
    /// breaks.
    async fn session(
        &mut self,
        mut stream: turmoil::net::TcpStream,
        mut rbuf: BytesMut,
        mut decoder: Decoder,
    ) -> DisconnectCause {
        let mut wbuf = BytesMut::with_capacity(4096);
        // Resume: unfinished messages go out again in their original order.
        let mut resend: Vec<(u16, Outgoing)> =
            self.outgoing.iter().map(|(p, o)| (*p, o.clone())).collect();
        resend.sort_by_key(|(_, o)| o.msg.seq);
        for (pid, o) in resend {
            let packet = if o.released {
                Packet::PubRel(Ack::new(pid))
            } else {
                self.publish_packet(pid, &o, true)
            };
            encode(&packet, self.protocol, &mut wbuf);
        }
        if !self.wl.filters.is_empty() && !self.spec.publisher && !self.subscribed {
            // Many filters (a generated route flood) go in several SUBSCRIBEs; the client counts
            // as subscribed once every SUBACK is back.
            self.subacks_due = 0;
            self.granted.clear();
            let count = self.wl.filters.len();
            for start in (0..count).step_by(SUBSCRIBE_BATCH) {
                let end = (start + SUBSCRIBE_BATCH).min(count);
                let filters = self.wl.filters[start..end]
                    .iter()
                    .map(|f| {
                        let opts = SubscriptionOptions {
                            qos: QoS::from_u8(self.wl.sub_qos).unwrap_or(QoS::AtMostOnce),
                            ..SubscriptionOptions::default()
                        };
                        (ByteString::from(f.as_str()), opts)
                    })
                    .collect();
                let pid = self.alloc_pid();
                let sub = Subscribe {
                    packet_id: pid,
                    filters,
                    ..Subscribe::default()
                };
                encode(&Packet::Subscribe(sub), self.protocol, &mut wbuf);
                self.subacks_due += 1;
            }
        }
        let keep_alive = self.wl.keep_alive;
        let mut last_recv = now();
        let mut last_sent = now();
        let control = Rc::clone(&self.ctx);
        let kick = &control.controls[self.idx as usize].kick;
        let kicks = &control.controls[self.idx as usize].kicks;
        let kicks_at_connect = kicks.get();
        loop {
            if kicks.get() > kicks_at_connect {
                return DisconnectCause::Fault;
            }
            // Packets already buffered (the CONNACK read may have pulled in more).
            loop {
                match decoder.decode(&mut rbuf) {
                    Ok(Some(packet)) => {
                        if let Err(cause) = self.handle(packet, &mut wbuf) {
                            return cause;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return DisconnectCause::Protocol,
                }
            }
            if !wbuf.is_empty() {
                match tokio::time::timeout(keep_alive, stream.write_all(&wbuf)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return DisconnectCause::Closed,
                    Err(_) => return DisconnectCause::WriteStalled,
                }
                wbuf.clear();
                last_sent = now();
            }
            let t = now();
            let dead_at = last_recv + keep_alive * 2;
            // `>=`: a timer that fires at exactly `dead_at` must end the connection, or the loop
            // would spin without simulated time moving.
            if t >= dead_at {
                return DisconnectCause::Keepalive;
            }
            let publishing = self.spec.publisher && t < self.wl.stop;
            let next_publish = if publishing {
                self.next_publish
            } else {
                Duration::MAX
            };
            let ping_at = last_sent + keep_alive;
            tokio::select! {
                biased;
                _ = kick.notified() => continue,
                read = stream.read_buf(&mut rbuf) => match read {
                    Ok(0) | Err(_) => return DisconnectCause::Closed,
                    Ok(_) => last_recv = now(),
                },
                _ = sleep_until(next_publish), if publishing => {
                    self.publish_next(&mut wbuf);
                }
                _ = sleep_until(ping_at.min(dead_at)) => {
                    if now() >= ping_at {
                        encode(&Packet::PingReq, self.protocol, &mut wbuf);
                    }
                }
            }
        }
    }

    fn publish_packet(&self, pid: u16, o: &Outgoing, dup: bool) -> Packet {
        Packet::Publish(Publish {
            dup,
            qos: o.qos,
            retain: self.wl.retain,
            topic: o.topic.clone(),
            packet_id: Some(pid),
            payload: Bytes::from(o.msg.payload()),
            ..Publish::default()
        })
    }

    /// Publishes the next message if the window allows, and schedules the one after.
    fn publish_next(&mut self, wbuf: &mut BytesMut) {
        let interval = Duration::from_secs_f64(1.0 / self.wl.rate);
        self.next_publish = self.next_publish.max(now().saturating_sub(interval)) + interval;
        let qos = QoS::from_u8(self.wl.pub_qos).unwrap_or(QoS::AtMostOnce);
        if qos != QoS::AtMostOnce && self.outgoing.len() >= self.window {
            return;
        }
        let Some(topic) = self
            .wl
            .topics
            .get(self.rng.random_range(0..self.wl.topics.len().max(1)))
            .cloned()
        else {
            return;
        };
        let msg = MsgId {
            publisher: self.idx,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let topic_id = self.ctx.history.borrow_mut().topic_id(&topic);
        self.ctx.record(Event::Published {
            client: self.idx,
            msg,
            topic: topic_id,
            qos: qos as u8,
            node: self.node,
        });
        let o = Outgoing {
            msg,
            topic: ByteString::from(topic),
            qos,
            released: false,
        };
        if qos == QoS::AtMostOnce {
            let packet = Packet::Publish(Publish {
                topic: o.topic,
                retain: self.wl.retain,
                payload: Bytes::from(msg.payload()),
                ..Publish::default()
            });
            encode(&packet, self.protocol, wbuf);
            return;
        }
        let pid = self.alloc_pid();
        encode(&self.publish_packet(pid, &o, false), self.protocol, wbuf);
        self.outgoing.insert(pid, o);
    }

    /// Reacts to one packet from the node; `Err` ends the connection.
    fn handle(&mut self, packet: Packet, wbuf: &mut BytesMut) -> Result<(), DisconnectCause> {
        match packet {
            Packet::Publish(p) => self.receive(p, wbuf),
            Packet::PubAck(ack) => {
                if let Some(o) = self.outgoing.get(&ack.packet_id)
                    && o.qos == QoS::AtLeastOnce
                {
                    let msg = o.msg;
                    self.outgoing.remove(&ack.packet_id);
                    self.acked(msg, ack.reason_code);
                }
            }
            Packet::PubRec(ack) => {
                let Some(o) = self.outgoing.get_mut(&ack.packet_id) else {
                    // Not ours (any more): tell the node we are done with it.
                    encode(
                        &Packet::PubRel(Ack {
                            packet_id: ack.packet_id,
                            reason_code: ReasonCode::PacketIdentifierNotFound,
                            ..Ack::default()
                        }),
                        self.protocol,
                        wbuf,
                    );
                    return Ok(());
                };
                if o.qos != QoS::ExactlyOnce {
                    return Ok(());
                }
                let msg = o.msg;
                if ack.reason_code.is_error() {
                    self.outgoing.remove(&ack.packet_id);
                    self.acked(msg, ack.reason_code);
                    return Ok(());
                }
                if !o.released {
                    o.released = true;
                    self.acked(msg, ack.reason_code);
                }
                encode(
                    &Packet::PubRel(Ack::new(ack.packet_id)),
                    self.protocol,
                    wbuf,
                );
            }
            Packet::PubComp(ack) => {
                if let Some(o) = self.outgoing.get(&ack.packet_id)
                    && o.released
                {
                    let msg = o.msg;
                    self.outgoing.remove(&ack.packet_id);
                    self.ctx.record(Event::Completed {
                        client: self.idx,
                        msg,
                    });
                }
            }
            Packet::PubRel(ack) => {
                self.incoming_qos2.remove(&ack.packet_id);
                encode(
                    &Packet::PubComp(Ack::new(ack.packet_id)),
                    self.protocol,
                    wbuf,
                );
            }
            Packet::SubAck(ack) => {
                self.granted
                    .extend(ack.reason_codes.iter().map(|c| *c as u8));
                self.subacks_due = self.subacks_due.saturating_sub(1);
                if self.subacks_due == 0 {
                    self.subscribed = true;
                    self.ctx.record(Event::Subscribed {
                        client: self.idx,
                        granted: std::mem::take(&mut self.granted),
                    });
                }
            }
            Packet::PingResp | Packet::UnsubAck(_) | Packet::Auth(_) => {}
            Packet::Disconnect(_) => return Err(DisconnectCause::Closed),
            Packet::ConnAck(_)
            | Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => return Err(DisconnectCause::Protocol),
        }
        Ok(())
    }

    fn acked(&self, msg: MsgId, code: ReasonCode) {
        let event = if code.is_error() {
            Event::Rejected {
                client: self.idx,
                msg,
                reason: code as u8,
            }
        } else {
            Event::Acked {
                client: self.idx,
                msg,
            }
        };
        self.ctx.record(event);
    }

    fn receive(&mut self, p: Publish, wbuf: &mut BytesMut) {
        let msg = MsgId::parse(&p.payload);
        let topic = self.ctx.history.borrow_mut().topic_id(&p.topic);
        let delivered = Event::Delivered {
            client: self.idx,
            conn: self.conn,
            msg,
            topic,
            qos: p.qos as u8,
            dup: p.dup,
        };
        let pid = p.packet_id.unwrap_or(0);
        match p.qos {
            QoS::AtMostOnce => self.ctx.record(delivered),
            QoS::AtLeastOnce => {
                self.qos1_received += 1;
                let planted = matches!(
                    self.ctx.plant,
                    Some(PlantedBug::DropQos1Delivery { client, nth })
                        if client == self.idx && nth == self.qos1_received
                );
                if !planted {
                    self.ctx.record(delivered);
                }
                encode(&Packet::PubAck(Ack::new(pid)), self.protocol, wbuf);
            }
            QoS::ExactlyOnce => {
                if self.incoming_qos2.insert(pid) {
                    self.qos2_received += 1;
                    let planted = matches!(
                        self.ctx.plant,
                        Some(PlantedBug::DuplicateQos2Delivery { client, nth })
                            if client == self.idx && nth == self.qos2_received
                    );
                    if planted {
                        self.ctx.record(delivered.clone());
                    }
                    self.ctx.record(delivered);
                }
                encode(&Packet::PubRec(Ack::new(pid)), self.protocol, wbuf);
            }
        }
    }
}
