//! A tiny in-process MQTT broker for the generator's own tests: it forwards publishes to matching
//! subscribers at the subscription's QoS and completes every acknowledgement flow, and can drop
//! every Nth publish so the tests can see the loss accounting catch it. It can listen on several
//! addresses sharing one routing table (a stand-in for cluster nodes), and ignore its first
//! publishes (a route not yet propagated). It is test-only, has
//! no session state and no flow control, and must never be used to produce a figure.

use std::cell::Cell;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use flockmq::codec::{
    Ack, ConnAck, ConnAckProperties, Decoder, Packet, Protocol, QoS, ReasonCode, SubAck, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Behaviour knobs of the fake broker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    /// Receive Maximum announced in MQTT 5 CONNACK.
    pub receive_maximum: Option<u16>,
    /// Acknowledge but never forward every Nth publish (0: forward all).
    pub drop_every: u64,
    /// Acknowledge but never forward the first N publishes, as a cluster node does before a
    /// remote subscription's route has reached it.
    pub unrouted_first: u64,
}

struct Hub {
    knobs: Knobs,
    publishes: Cell<u64>,
    subscriptions: RefCell<Vec<(String, QoS, mpsc::UnboundedSender<Packet>)>>,
}

fn matches(filter: &str, topic: &str) -> bool {
    match filter.strip_suffix('+') {
        Some(prefix) if prefix.ends_with('/') => topic
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.contains('/')),
        _ => filter == topic,
    }
}

/// Starts the broker on a loopback port (on the current `LocalSet`) and returns its address.
pub async fn start(knobs: Knobs) -> std::io::Result<SocketAddr> {
    let addrs = start_nodes(knobs, 1).await?;
    addrs
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no listener"))
}

/// Starts `nodes` listeners sharing one routing table: a publish on any reaches subscribers on all.
pub async fn start_nodes(knobs: Knobs, nodes: usize) -> std::io::Result<Vec<SocketAddr>> {
    let hub = Rc::new(Hub {
        knobs,
        publishes: Cell::new(0),
        subscriptions: RefCell::new(Vec::new()),
    });
    let mut addrs = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        let hub = hub.clone();
        tokio::task::spawn_local(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::task::spawn_local(serve(hub.clone(), stream));
            }
        });
    }
    Ok(addrs)
}

async fn serve(hub: Rc<Hub>, mut stream: TcpStream) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Packet>();
    let mut decoder = Decoder::new(1 << 20);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut wbuf = BytesMut::new();
    let mut next_id = 0u16;
    loop {
        let protocol = decoder.protocol().unwrap_or(Protocol::V311);
        tokio::select! {
            read = stream.read_buf(&mut rbuf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                while let Ok(Some(packet)) = decoder.decode(&mut rbuf) {
                    let protocol = decoder.protocol().unwrap_or(Protocol::V311);
                    if !handle(&hub, &tx, packet, protocol, &mut wbuf) {
                        return;
                    }
                }
            }
            Some(mut packet) = rx.recv() => {
                if let Packet::Publish(publish) = &mut packet
                    && publish.qos != QoS::AtMostOnce
                {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    publish.packet_id = Some(next_id);
                }
                encode(&packet, protocol, &mut wbuf);
            }
        }
        if stream.write_all(&wbuf).await.is_err() {
            return;
        }
        wbuf.clear();
    }
}

/// Answers one packet; false ends the connection.
fn handle(
    hub: &Hub,
    tx: &mpsc::UnboundedSender<Packet>,
    packet: Packet,
    protocol: Protocol,
    out: &mut BytesMut,
) -> bool {
    let reply = match packet {
        Packet::Connect(_) => Packet::ConnAck(ConnAck {
            properties: ConnAckProperties {
                receive_maximum: hub.knobs.receive_maximum,
                ..ConnAckProperties::default()
            },
            ..ConnAck::default()
        }),
        Packet::Subscribe(subscribe) => {
            let mut codes = Vec::new();
            for (filter, options) in &subscribe.filters {
                hub.subscriptions
                    .borrow_mut()
                    .push((filter.to_string(), options.qos, tx.clone()));
                codes.push(ReasonCode::granted(options.qos));
            }
            Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                reason_codes: codes,
                ..SubAck::default()
            })
        }
        Packet::Publish(publish) => {
            let n = hub.publishes.get() + 1;
            hub.publishes.set(n);
            let dropped = (hub.knobs.drop_every > 0 && n % hub.knobs.drop_every == 0)
                || n <= hub.knobs.unrouted_first;
            if !dropped {
                for (filter, qos, sub) in hub.subscriptions.borrow().iter() {
                    if matches(filter, &publish.topic) {
                        let mut copy = publish.clone();
                        copy.qos = publish.qos.min(*qos);
                        copy.packet_id = None;
                        let _ = sub.send(Packet::Publish(copy));
                    }
                }
            }
            match (publish.qos, publish.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => Packet::PubAck(Ack::new(id)),
                (QoS::ExactlyOnce, Some(id)) => Packet::PubRec(Ack::new(id)),
                _ => return true,
            }
        }
        Packet::PubRel(ack) => Packet::PubComp(Ack::new(ack.packet_id)),
        Packet::PubRec(ack) => Packet::PubRel(Ack::new(ack.packet_id)),
        Packet::Disconnect(_) => return false,
        _ => return true,
    };
    encode(&reply, protocol, out);
    true
}
