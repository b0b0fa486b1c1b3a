//! The node's own bounds, against the built binary: a big batch the broker itself queues (a
//! retained flood, a resumed session) is paced by what the client reads instead of dropping the
//! client, and what one client can make the node hold is bounded (topic alias bytes, queued
//! output of clients that never read, subscriptions). Memory figures are printed, with generous
//! bounds asserted only where the old behaviour was off by an order of magnitude.

mod common;

use bytes::{Bytes, BytesMut};
use common::Raw;
use common::binary::Broker;
use flockmq::codec::{
    self, Ack, Connect, Disconnect, Packet, Protocol, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use tokio::io::AsyncWriteExt;

const V5: Protocol = Protocol::V5;

fn publish(topic: String, qos: QoS, packet_id: Option<u16>, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id,
        payload,
        ..Publish::default()
    })
}

fn subscribe(filters: &[String], qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: filters
            .iter()
            .map(|f| {
                let opts = SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                };
                (f.as_str().into(), opts)
            })
            .collect(),
    })
}

/// Reads until the packet `pred` accepts, failing on anything that closes the connection.
async fn expect(raw: &mut Raw, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
    loop {
        let p = raw.next().await;
        if pred(&p) {
            return p;
        }
        assert!(!matches!(p, Packet::Disconnect(_)), "{what}: got {p:?}");
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn persistent(id: &str) -> Connect {
    let mut c = Connect {
        protocol: V5,
        clean_start: false,
        keep_alive: 60,
        client_id: id.into(),
        ..Connect::default()
    };
    c.properties.session_expiry_interval = Some(3600);
    c
}

#[tokio::test]
async fn twenty_thousand_retained_messages_reach_one_subscriber() {
    let b = Broker::start(&[]);
    let mut p = Raw::connect(b.addr, "retainer", V5).await;
    let payload = Bytes::from(vec![b'r'; 1000]);
    let retained = (0..20_000).map(|i| {
        let mut packet = publish(
            format!("sensors/{i:05}"),
            QoS::AtMostOnce,
            None,
            payload.clone(),
        );
        if let Packet::Publish(p) = &mut packet {
            p.retain = true;
        }
        packet
    });
    // One connection is processed in order: the PUBACK of the last says all are stored.
    let done = publish("done".into(), QoS::AtLeastOnce, Some(1), Bytes::new());
    p.send_all(&retained.chain([done]).collect::<Vec<_>>())
        .await;
    expect(&mut p, "publisher", |p| matches!(p, Packet::PubAck(_))).await;

    let mut s = Raw::connect(b.addr, "sensor-reader", V5).await;
    s.send(&subscribe(&["sensors/#".into()], QoS::AtMostOnce))
        .await;
    expect(&mut s, "subscriber", |p| matches!(p, Packet::SubAck(_))).await;
    let mut topics = std::collections::BTreeSet::new();
    while topics.len() < 20_000 {
        match s.next().await {
            Packet::Publish(m) => {
                assert!(m.retain);
                topics.insert(m.topic.to_string());
            }
            other => panic!("subscriber got {other:?} after {} messages", topics.len()),
        }
    }
    println!(
        "20,000 retained 1 KB messages to one subscriber: all received; broker RSS {}, peak {}",
        mib(b.vm_kib("VmRSS")),
        mib(b.vm_kib("VmHWM"))
    );
}

#[tokio::test]
async fn a_session_with_forty_queued_megabyte_messages_resumes() {
    let b = Broker::start(&[]);
    let (mut s, ack) = Raw::connect_answer(b.addr, persistent("big-session")).await;
    assert!(!ack.session_present);
    s.send(&subscribe(&["big".into()], QoS::AtLeastOnce)).await;
    expect(&mut s, "subscriber", |p| matches!(p, Packet::SubAck(_))).await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    drop(s);

    let mut p = Raw::connect(b.addr, "big-publisher", V5).await;
    let messages = (1..=40u16).map(|i| {
        let mut body = vec![b'm'; 1_000_000];
        body[0] = i as u8;
        publish("big".into(), QoS::AtLeastOnce, Some(i), Bytes::from(body))
    });
    p.send_all(&messages.collect::<Vec<_>>()).await;
    for _ in 0..40 {
        expect(&mut p, "publisher", |p| matches!(p, Packet::PubAck(_))).await;
    }

    let (mut s, ack) = Raw::connect_answer(b.addr, persistent("big-session")).await;
    assert!(ack.session_present, "the session waited with its queue");
    let mut got = Vec::new();
    while got.len() < 40 {
        match s.next().await {
            Packet::Publish(m) => {
                got.push(m.payload[0]);
                let id = m.packet_id.expect("QoS 1");
                s.send(&Packet::PubAck(Ack::new(id))).await;
            }
            other => panic!("resumed session got {other:?} after {} messages", got.len()),
        }
    }
    assert_eq!(got, (1..=40u8).collect::<Vec<_>>(), "all 40, in order");
    println!(
        "40 x 1 MB queued offline, resumed: all received; broker peak RSS {}",
        mib(b.vm_kib("VmHWM"))
    );
}

/// A v5 client registering topic aliases with 60 KB topics until the broker stops it.
async fn alias_flood(b: &Broker, aliases: u16) -> Option<ReasonCode> {
    let mut c = Raw::connect(b.addr, "alias-flood", V5).await;
    let flood = (1..=aliases).map(|alias| {
        let topic = format!("{alias}/{}", "t".repeat(60_000));
        let mut packet = publish(topic, QoS::AtMostOnce, None, Bytes::from_static(b"x"));
        if let Packet::Publish(p) = &mut packet {
            p.properties.topic_alias = Some(alias);
        }
        packet
    });
    let mut out = BytesMut::new();
    for p in flood {
        codec::encode(&p, V5, &mut out);
    }
    // The broker may close the connection part way through: that is the point.
    let _ = c.stream.write_all(&out).await;
    let _ = c
        .stream
        .write_all(&{
            let mut ping = BytesMut::new();
            codec::encode(&Packet::PingReq, V5, &mut ping);
            ping
        })
        .await;
    match c.try_next(common::WAIT * 4).await {
        Some(Packet::Disconnect(d)) => Some(d.reason_code),
        _ => None,
    }
}

#[tokio::test]
async fn topic_alias_tables_are_bounded_by_bytes() {
    // Without a budget (raised out of the way) 2,000 aliases of 60 KB stay in memory.
    let unbounded = Broker::start(&["mqtt.max_topic_alias_bytes=4GB"]);
    let before = unbounded.vm_kib("VmRSS");
    assert_eq!(alias_flood(&unbounded, 2_000).await, None, "accepted");
    let after = unbounded.vm_kib("VmRSS");
    println!(
        "2,000 topic aliases of 60 KB with no budget: broker RSS {} -> {}",
        mib(before),
        mib(after)
    );

    let b = Broker::start(&[]);
    let before = b.vm_kib("VmRSS");
    let reason = alias_flood(&b, 2_000).await;
    assert_eq!(reason, Some(ReasonCode::QuotaExceeded));
    println!(
        "the same flood with the default budget (1MB): DISCONNECT 0x97, broker RSS {} -> {}",
        mib(before),
        mib(b.vm_kib("VmRSS"))
    );
    // The node is fine: another client connects.
    Raw::connect(b.addr, "after-the-flood", V5).await;
}

#[tokio::test]
async fn clients_that_never_read_cost_a_bounded_amount_of_memory() {
    let b = Broker::start(&[]);
    let mut sleepers = Vec::new();
    for i in 0..100 {
        let mut s = Raw::connect(b.addr, &format!("sleeper-{i}"), V5).await;
        s.send(&subscribe(&["flood".into()], QoS::AtMostOnce)).await;
        expect(&mut s, "sleeper", |p| matches!(p, Packet::SubAck(_))).await;
        sleepers.push(s);
    }
    let before = b.vm_kib("VmRSS");
    // 60,000 x 1 KB QoS 0 to 100 subscribers that read nothing: 6 GB of output offered.
    let mut p = Raw::connect(b.addr, "flooder", V5).await;
    let payload = Bytes::from(vec![b'f'; 1000]);
    for round in 0..6 {
        let batch =
            (0..10_000).map(|_| publish("flood".into(), QoS::AtMostOnce, None, payload.clone()));
        let sync = publish(
            "sync".into(),
            QoS::AtLeastOnce,
            Some(round + 1),
            Bytes::new(),
        );
        p.send_all(&batch.chain([sync]).collect::<Vec<_>>()).await;
        expect(&mut p, "flooder", |p| matches!(p, Packet::PubAck(_))).await;
    }
    let peak = b.vm_kib("VmHWM");
    println!(
        "100 subscribers that never read, 60,000 x 1 KB QoS 0 flood: broker RSS {} -> {}, peak {}",
        mib(before),
        mib(b.vm_kib("VmRSS")),
        mib(peak)
    );
    if let (Some(before), Some(peak)) = (before, peak) {
        // Unpaced, every such client held up to 16 MiB of unwritten output (1.6 GB for 100).
        assert!(
            peak - before < 600 * 1024,
            "peak grew by {} KiB",
            peak - before
        );
    }
    // They were never dropped: one that starts reading gets the messages held for it.
    let mut late = sleepers.pop().expect("a sleeper");
    expect(&mut late, "late reader", |p| {
        matches!(p, Packet::Publish(_))
    })
    .await;
}

#[tokio::test]
async fn subscriptions_beyond_max_subscriptions_are_refused() {
    let b = Broker::start(&["mqtt.max_subscriptions=100"]);
    let mut c = Raw::connect(b.addr, "greedy", V5).await;
    let filters: Vec<String> = (0..101).map(|i| format!("devices/{i}/cmd")).collect();
    c.send(&subscribe(&filters, QoS::AtLeastOnce)).await;
    let Packet::SubAck(ack) = c.next().await else {
        panic!("expected SUBACK");
    };
    assert_eq!(ack.reason_codes.len(), 101);
    assert!(
        ack.reason_codes[..100]
            .iter()
            .all(|c| *c == ReasonCode::GrantedQoS1)
    );
    assert_eq!(ack.reason_codes[100], ReasonCode::QuotaExceeded);
    // The connection stays: the quota refuses a filter, not the client.
    c.send(&Packet::PingReq).await;
    assert_eq!(c.next().await, Packet::PingResp);
}
