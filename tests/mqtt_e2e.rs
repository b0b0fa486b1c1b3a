//! A node started in-process on an ephemeral port, driven by a real client library (rumqttc) over
//! real sockets, MQTT 3.1.1 and 5.

mod common;

use common::{V4, V5, start_node, v4_options, v5_options};
use rumqttc::QoS;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties};

async fn round_trip_v4(qos: QoS) {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut sub = V4::connect("sub", addr).await;
    sub.subscribe("sensors/+/temp", qos).await;
    let pubr = V4::connect("pub", addr).await;
    for i in 0..10u8 {
        pubr.client
            .publish("sensors/kitchen/temp", qos, false, vec![i; 8])
            .await
            .unwrap();
    }
    for i in 0..10u8 {
        let p = sub.next_publish().await;
        assert_eq!(p.topic, "sensors/kitchen/temp");
        assert_eq!(&p.payload[..], &[i; 8][..], "in order, payload intact");
        assert_eq!(p.qos, qos);
    }
    sub.expect_no_publish().await;
    node.shutdown().await;
}

#[tokio::test]
async fn qos0_round_trip_v311() {
    round_trip_v4(QoS::AtMostOnce).await;
}

#[tokio::test]
async fn qos1_round_trip_v311() {
    round_trip_v4(QoS::AtLeastOnce).await;
}

#[tokio::test]
async fn qos2_round_trip_v311() {
    round_trip_v4(QoS::ExactlyOnce).await;
}

#[tokio::test]
async fn qos_round_trips_v5() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut sub = V5::connect("sub5", addr).await;
    sub.subscribe("a/#", QoS5::ExactlyOnce).await;
    let pubr = V5::connect("pub5", addr).await;
    for (i, qos) in [QoS5::AtMostOnce, QoS5::AtLeastOnce, QoS5::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        pubr.client
            .publish(format!("a/{i}"), qos, false, vec![b'x'; 64])
            .await
            .unwrap();
        let p = sub.next_publish().await;
        assert_eq!(&p.topic[..], format!("a/{i}").as_bytes());
        assert_eq!(p.qos, qos, "granted QoS 2 keeps the publisher's QoS");
        assert_eq!(p.payload.len(), 64);
    }
    node.shutdown().await;
}

#[tokio::test]
async fn granted_qos_caps_delivery_qos() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut sub = V4::connect("capped", addr).await;
    sub.subscribe("cap", QoS::AtLeastOnce).await;
    let pubr = V4::connect("p", addr).await;
    pubr.client
        .publish("cap", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(sub.next_publish().await.qos, QoS::AtLeastOnce);
    node.shutdown().await;
}

#[tokio::test]
async fn retained_message_delivered_to_late_subscriber_and_cleared() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let pubr = V4::connect("retainer", addr).await;
    pubr.client
        .publish("home/door", QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    pubr.client
        .publish("home/door", QoS::AtLeastOnce, true, "closed")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let mut late = V4::connect("late", addr).await;
    late.subscribe("home/#", QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert!(p.retain, "retained flag set on delivery at subscribe");
    assert_eq!(
        &p.payload[..],
        b"closed",
        "only the last retained message is kept"
    );
    late.expect_no_publish().await;

    // An empty retained payload clears it: a later subscriber gets nothing.
    pubr.client
        .publish("home/door", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut later = V4::connect("later", addr).await;
    later.subscribe("home/#", QoS::AtLeastOnce).await;
    later.expect_no_publish().await;
    node.shutdown().await;
}

#[tokio::test]
async fn will_published_on_abrupt_disconnect_not_on_clean_disconnect() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut watcher = V4::connect("watcher", addr).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let mut o = v4_options("dies", addr);
    o.set_last_will(rumqttc::LastWill::new(
        "wills/dies",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let dies = V4::connect_with(o).await;
    dies.kill();
    let p = watcher.next_publish().await;
    assert_eq!(p.topic, "wills/dies");
    assert_eq!(&p.payload[..], b"gone");

    let mut o = v4_options("polite", addr);
    o.set_last_will(rumqttc::LastWill::new(
        "wills/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let polite = V4::connect_with(o).await;
    polite.disconnect().await;
    watcher.expect_no_publish().await;
    node.shutdown().await;
}

#[tokio::test]
async fn persistent_session_resumes_with_queued_qos1_messages() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut o = v4_options("durable", addr);
    o.set_clean_session(false);
    let mut sub = V4::connect_with(o.clone()).await;
    sub.subscribe("jobs/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let pubr = V4::connect("producer", addr).await;
    for i in 0..5 {
        pubr.client
            .publish(format!("jobs/{i}"), QoS::AtLeastOnce, false, "work")
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 100);
    let mut session_present = None;
    let mut got = Vec::new();
    tokio::time::timeout(common::WAIT, async {
        while got.len() < 5 {
            match eventloop.poll().await.unwrap() {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)) => {
                    session_present = Some(a.session_present)
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => got.push(p.topic.clone()),
                _ => {}
            }
        }
    })
    .await
    .expect("queued messages arrive after reconnect");
    assert_eq!(session_present, Some(true));
    assert_eq!(got, ["jobs/0", "jobs/1", "jobs/2", "jobs/3", "jobs/4"]);
    drop(client);
    node.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_all_subscription_ids() {
    use flockmq::codec::{
        Packet, Protocol, QoS as Q, Subscribe, SubscribeProperties, SubscriptionOptions,
    };
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    // rumqttc 0.25 misparses a PUBLISH with several subscription identifiers, so this subscriber
    // is the bare client on flockmq's codec.
    let mut sub = common::Raw::connect(addr, "overlap", Protocol::V5).await;
    for (id, filter, qos) in [
        (1, "t/+", Q::AtMostOnce),
        (2, "t/#", Q::AtLeastOnce),
        (3, "t/a", Q::AtMostOnce),
    ] {
        let s = Subscribe {
            packet_id: id as u16,
            properties: SubscribeProperties {
                subscription_identifier: Some(id),
                ..Default::default()
            },
            filters: vec![(
                filter.into(),
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            )],
        };
        sub.send(&Packet::Subscribe(s)).await;
        assert!(matches!(sub.next().await, Packet::SubAck(_)));
    }
    let pubr = V5::connect("overlap-pub", addr).await;
    pubr.client
        .publish("t/a", QoS5::ExactlyOnce, false, "one")
        .await
        .unwrap();
    let Packet::Publish(p) = sub.next().await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(
        p.qos,
        Q::AtLeastOnce,
        "highest granted QoS among matching subscriptions"
    );
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3]);
    // Acknowledged like a real client would (a graceful stop waits for the PUBACK).
    let id = p.packet_id.expect("QoS 1");
    sub.send(&Packet::PubAck(flockmq::codec::Ack::new(id)))
        .await;
    assert_eq!(
        sub.try_next(common::QUIET).await,
        None,
        "exactly one delivery"
    );

    // The 3.1.1 client sees the same rule.
    let mut v4 = V4::connect("overlap4", addr).await;
    v4.subscribe("u/+", QoS::AtMostOnce).await;
    v4.subscribe("u/#", QoS::AtMostOnce).await;
    pubr.client
        .publish("u/b", QoS5::AtMostOnce, false, "one")
        .await
        .unwrap();
    v4.next_publish().await;
    v4.expect_no_publish().await;
    node.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_group_round_robins() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut a = V4::connect("worker-a", addr).await;
    let mut b = V4::connect("worker-b", addr).await;
    a.subscribe("$share/workers/tasks/#", QoS::AtLeastOnce)
        .await;
    b.subscribe("$share/workers/tasks/#", QoS::AtLeastOnce)
        .await;
    let mut plain = V4::connect("auditor", addr).await;
    plain.subscribe("tasks/#", QoS::AtLeastOnce).await;

    let pubr = V4::connect("boss", addr).await;
    for i in 0..6 {
        pubr.client
            .publish(format!("tasks/{i}"), QoS::AtLeastOnce, false, "do")
            .await
            .unwrap();
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..3 {
        got_a.push(a.next_publish().await.topic);
        got_b.push(b.next_publish().await.topic);
    }
    a.expect_no_publish().await;
    b.expect_no_publish().await;
    let mut all: Vec<String> = got_a.iter().chain(&got_b).cloned().collect();
    all.sort();
    assert_eq!(
        all,
        [
            "tasks/0", "tasks/1", "tasks/2", "tasks/3", "tasks/4", "tasks/5"
        ],
        "each message to exactly one member"
    );
    for _ in 0..6 {
        plain.next_publish().await;
    }
    plain.expect_no_publish().await;
    node.shutdown().await;
}

#[tokio::test]
async fn topic_aliases_in_both_directions() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut o = v5_options("alias-sub", addr);
    o.set_topic_alias_max(Some(10));
    let mut sub = V5::connect_with(o).await;
    sub.subscribe("long/topic/name", QoS5::AtLeastOnce).await;

    let pubr = V5::connect("alias-pub", addr).await;
    let max = pubr
        .connack
        .as_ref()
        .and_then(|c| c.properties.as_ref())
        .and_then(|p| p.topic_alias_max);
    assert!(
        max.unwrap_or(0) >= 1,
        "server announces a topic alias maximum"
    );
    let props = || PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    pubr.client
        .publish_with_properties(
            "long/topic/name",
            QoS5::AtLeastOnce,
            false,
            "first",
            props(),
        )
        .await
        .unwrap();
    pubr.client
        .publish_with_properties("", QoS5::AtLeastOnce, false, "second", props())
        .await
        .unwrap();

    let first = sub.next_publish().await;
    let second = sub.next_publish().await;
    assert_eq!(&first.topic[..], b"long/topic/name");
    assert_eq!(&first.payload[..], b"first");
    assert_eq!(&second.payload[..], b"second");
    // The server sent the topic once with an alias, then the alias alone.
    let alias = first.properties.as_ref().and_then(|p| p.topic_alias);
    assert!(alias.is_some(), "server assigns an alias on first use");
    assert!(
        second.topic.is_empty(),
        "second delivery carries only the alias"
    );
    assert_eq!(
        second.properties.as_ref().and_then(|p| p.topic_alias),
        alias
    );
    node.shutdown().await;
}

#[tokio::test]
async fn takeover_disconnects_old_connection_with_0x8e() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut first = V5::connect("same-id", addr).await;
    let mut second = V5::connect("same-id", addr).await;
    assert_eq!(
        first.expect_server_disconnect().await,
        0x8E,
        "session taken over"
    );
    // The new connection is the live one.
    second.subscribe("x", QoS5::AtMostOnce).await;
    let p = V5::connect("pinger", addr).await;
    p.client
        .publish("x", QoS5::AtMostOnce, false, "hi")
        .await
        .unwrap();
    assert_eq!(&second.next_publish().await.payload[..], b"hi");
    node.shutdown().await;
}

#[tokio::test]
async fn no_local_subscription_skips_own_messages() {
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut c = V5::connect("echo", addr).await;
    let f = Filter {
        nolocal: true,
        ..Filter::new("chat", QoS5::AtMostOnce)
    };
    c.client.subscribe_many(vec![f]).await.unwrap();
    c.expect_suback().await;
    c.client
        .publish("chat", QoS5::AtMostOnce, false, "me")
        .await
        .unwrap();
    c.expect_no_publish().await;
    let other = V5::connect("other", addr).await;
    other
        .client
        .publish("chat", QoS5::AtMostOnce, false, "you")
        .await
        .unwrap();
    assert_eq!(&c.next_publish().await.payload[..], b"you");
    node.shutdown().await;
}

/// MQTT 3.1.1 has no Receive Maximum: a client that writes 100 QoS 2 PUBLISHes in one burst
/// (more than `mqtt.max_inflight` = 32 unreleased) without reading gets 100 PUBRECs, then 100
/// PUBCOMPs for its PUBRELs; each message reaches the subscriber once; the connection stays.
#[tokio::test]
async fn v311_qos2_burst_beyond_max_inflight_is_not_cut_off() {
    use flockmq::codec::{
        Ack, Packet, Protocol, Publish, QoS as Q, Subscribe, SubscriptionOptions,
    };
    let node = start_node(&[]).await;
    let addr = node.mqtt_addr();
    let mut sub = common::Raw::connect(addr, "burst-sub", Protocol::V311).await;
    let opts = SubscriptionOptions {
        qos: Q::AtMostOnce,
        ..Default::default()
    };
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("burst/#".into(), opts)],
        ..Default::default()
    }))
    .await;
    assert!(matches!(sub.next().await, Packet::SubAck(_)));

    let mut p = common::Raw::connect(addr, "burst-pub", Protocol::V311).await;
    let burst: Vec<Packet> = (1..=100u16)
        .map(|id| {
            Packet::Publish(Publish {
                qos: Q::ExactlyOnce,
                topic: "burst/t".into(),
                packet_id: Some(id),
                payload: id.to_string().into(),
                ..Default::default()
            })
        })
        .collect();
    p.send_all(&burst).await;
    for id in 1..=100u16 {
        match p.next().await {
            Packet::PubRec(a) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBREC {id}, got {other:?}"),
        }
    }
    let rels: Vec<Packet> = (1..=100u16)
        .map(|id| Packet::PubRel(Ack::new(id)))
        .collect();
    p.send_all(&rels).await;
    for id in 1..=100u16 {
        match p.next().await {
            Packet::PubComp(a) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBCOMP {id}, got {other:?}"),
        }
    }
    p.send(&Packet::PingReq).await;
    assert_eq!(
        p.next().await,
        Packet::PingResp,
        "the connection stays open"
    );

    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..100 {
        match sub.next().await {
            Packet::Publish(m) => *seen.entry(m.payload.to_vec()).or_insert(0) += 1,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(seen.len(), 100, "every message arrived");
    assert!(seen.values().all(|&n| n == 1), "each exactly once");
    assert!(sub.try_next(common::QUIET).await.is_none(), "no extra copy");
    node.shutdown().await;
}
