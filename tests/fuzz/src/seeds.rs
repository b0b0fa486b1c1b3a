//! The seed corpus: packets, frames, datagrams, config files and scripts like the ones the
//! repository's tests use (`src/codec/tests`, `src/cluster/tests.rs`, `src/broker/tests`,
//! `src/config.rs`, the README's examples), written to `corpus/TARGET/seed-NAME`.
//!
//! `cargo test --manifest-path tests/fuzz/Cargo.toml --lib -- --ignored write_seeds` rewrites
//! them (then `run.sh` or `cargo fuzz cmin` folds them into the minimized corpus). The other test
//! checks that every script decodes back to the operations it was written from.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use flockmq::cluster::discovery::{self, Kind, Sender};
use flockmq::cluster::wire::{
    self, BulkBody, BulkChunk, ForwardedPublish, LinkMessage, MemberEntry, PROTOCOL_VERSION,
    RetainedItem,
};
use flockmq::codec::*;
use flockmq::config::Config;

use crate::ops::{BrokerOp, BrokerSetup, Input, LinkOp, Script};
use crate::{CLUSTER, COOKIE, NODE, PEER};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

// ---- MQTT packets ------------------------------------------------------------------------------

fn user() -> Vec<UserProperty> {
    vec![("k".into(), "v".into())]
}

fn connect(protocol: Protocol) -> Packet {
    let v5 = protocol == Protocol::V5;
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: "client-1".into(),
        will: Some(LastWill {
            topic: "will/topic".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: if v5 {
                WillProperties {
                    will_delay_interval: Some(5),
                    message_expiry_interval: Some(60),
                    content_type: Some("text/plain".into()),
                    user_properties: user(),
                    ..Default::default()
                }
            } else {
                Default::default()
            },
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pass")),
        properties: if v5 {
            ConnectProperties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(10),
                maximum_packet_size: Some(4096),
                topic_alias_maximum: Some(8),
                request_problem_information: Some(true),
                user_properties: user(),
                authentication_method: Some("m".into()),
                authentication_data: Some(Bytes::from_static(b"d")),
                ..Default::default()
            }
        } else {
            Default::default()
        },
    }))
}

/// What a client sends after CONNECT.
fn client_packets(v5: bool) -> Vec<Packet> {
    let props = |p: PublishProperties| if v5 { p } else { Default::default() };
    let ack_props = if v5 {
        AckProperties {
            reason_string: Some("why".into()),
            user_properties: user(),
        }
    } else {
        Default::default()
    };
    let mut out = vec![
        Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            ..Default::default()
        }),
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "sport/tennis".into(),
            packet_id: Some(1),
            payload: Bytes::from_static(b"1"),
            dup: false,
            properties: props(PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(30),
                topic_alias: Some(1),
                response_topic: Some("reply".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: user(),
                content_type: Some("json".into()),
                ..Default::default()
            }),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            topic: "a".into(),
            packet_id: Some(2),
            ..Default::default()
        }),
        Packet::PubAck(Ack::new(3)),
        Packet::PubRec(Ack {
            reason_code: if v5 {
                ReasonCode::NoMatchingSubscribers
            } else {
                ReasonCode::Success
            },
            properties: ack_props.clone(),
            ..Ack::new(4)
        }),
        Packet::PubRel(Ack::new(5)),
        Packet::PubComp(Ack {
            properties: ack_props,
            ..Ack::new(6)
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 7,
            properties: if v5 {
                SubscribeProperties {
                    subscription_identifier: Some(9),
                    user_properties: user(),
                }
            } else {
                Default::default()
            },
            filters: vec![
                (
                    "a/#".into(),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: v5,
                        retain_as_published: v5,
                        retain_handling: if v5 {
                            RetainHandling::SendIfNew
                        } else {
                            RetainHandling::SendAtSubscribe
                        },
                    },
                ),
                ("$share/g/+/b".into(), SubscriptionOptions::default()),
            ],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 8,
            user_properties: if v5 { user() } else { Vec::new() },
            filters: vec!["a/#".into()],
        }),
        Packet::PingReq,
    ];
    if v5 {
        out.push(Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some("m".into()),
                ..Default::default()
            },
        }));
        out.push(Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DisconnectWithWillMessage,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some("bye".into()),
                ..Default::default()
            },
        }));
    } else {
        out.push(Packet::Disconnect(Disconnect::default()));
    }
    out
}

/// What a server sends.
fn server_packets(v5: bool) -> Vec<Packet> {
    vec![
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: ReasonCode::Success,
            properties: if v5 {
                ConnAckProperties {
                    receive_maximum: Some(32),
                    maximum_qos: Some(QoS::AtLeastOnce),
                    retain_available: Some(true),
                    maximum_packet_size: Some(1 << 20),
                    assigned_client_identifier: Some("auto-1".into()),
                    topic_alias_maximum: Some(10),
                    wildcard_subscription_available: Some(true),
                    subscription_identifiers_available: Some(true),
                    shared_subscription_available: Some(true),
                    server_keep_alive: Some(60),
                    ..Default::default()
                }
            } else {
                Default::default()
            },
        }),
        Packet::ConnAck(ConnAck {
            reason_code: ReasonCode::NotAuthorized,
            ..Default::default()
        }),
        Packet::SubAck(SubAck {
            packet_id: 7,
            properties: Default::default(),
            reason_codes: vec![
                ReasonCode::GrantedQoS2,
                ReasonCode::Success,
                ReasonCode::UnspecifiedError,
            ],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 8,
            properties: Default::default(),
            reason_codes: if v5 {
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            } else {
                Vec::new()
            },
        }),
        Packet::PingResp,
        Packet::Disconnect(Disconnect::new(if v5 {
            ReasonCode::SessionTakenOver
        } else {
            ReasonCode::Success
        })),
    ]
}

fn encoded(packets: &[Packet], protocol: Protocol) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for p in packets {
        encode(p, protocol, &mut buf);
    }
    buf.to_vec()
}

/// `[mode, split, stream]` for `mqtt_decode` (mode: see `crate::mqtt_mode`).
fn mqtt(name: &str, mode: u8, stream: &[u8]) {
    let mut bytes = vec![mode, 128];
    bytes.extend_from_slice(stream);
    write("mqtt_decode", name, &bytes);
}

fn mqtt_seeds() {
    for (name, protocol) in [
        ("v5", Protocol::V5),
        ("v311", Protocol::V311),
        ("v31", Protocol::V31),
    ] {
        let v5 = protocol == Protocol::V5;
        let mut session = vec![connect(protocol)];
        session.extend(client_packets(v5));
        mqtt(&format!("{name}-session"), 0, &encoded(&session, protocol));
        // The same session under a 1 KB limit.
        mqtt(
            &format!("{name}-session-1k"),
            0b1000,
            &encoded(&session, protocol),
        );
        let level = match protocol {
            Protocol::V31 => 1,
            Protocol::V311 => 2,
            Protocol::V5 => 3,
        };
        mqtt(
            &format!("{name}-server"),
            level,
            &encoded(&server_packets(v5), protocol),
        );
    }
    // Exact forms from src/codec/tests/wire_format.rs: MQTT 5 short and long acks, a
    // non-minimal remaining length, a reason code without properties.
    mqtt(
        "v5-ack-forms",
        3,
        &[
            0x40, 0x02, 0, 9, 0x40, 0x03, 0, 9, 0x00, 0x40, 0x04, 0, 9, 0, 0,
        ],
    );
    mqtt(
        "v5-long-length",
        3,
        &[0xe0, 0x80, 0x80, 0x00, 0xd0, 0x80, 0x00],
    );
    mqtt("v5-disconnect-code-only", 3, &[0xe0, 0x01, 0x04]);
    mqtt("v311-bad-flags", 2, &[0x62, 0x02, 0, 1, 0x60, 0x02, 0, 1]);
    mqtt(
        "v31-connect-header",
        0,
        &[
            0x10, 0x0c, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 10,
        ],
    );
    mqtt("v5-oversize", 0b0111, &[0x30, 0xff, 0xff, 0xff, 0x7f]);
}

// ---- cluster links -----------------------------------------------------------------------------

fn forwarded(topic: &str) -> ForwardedPublish {
    ForwardedPublish {
        topic: topic.into(),
        payload: b"payload".to_vec(),
        qos: 1,
        retain: false,
        expiry: Some(30),
        payload_format_indicator: Some(1),
        response_topic: Some("reply".into()),
        correlation_data: Some(b"c".to_vec()),
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("json".into()),
        retain_version: None,
    }
}

fn hello(node: &str, nonce: u8) -> LinkMessage {
    LinkMessage::Hello {
        protocol: PROTOCOL_VERSION,
        cluster: CLUSTER.into(),
        node: node.into(),
        port: 4370,
        incarnation: 7,
        nonce: [nonce; 32],
    }
}

/// Every link message, as the cluster tests exchange them.
fn link_messages() -> Vec<(&'static str, LinkMessage)> {
    vec![
        ("hello", hello(PEER, 1)),
        (
            "challenge",
            LinkMessage::Challenge {
                protocol: PROTOCOL_VERSION,
                cluster: CLUSTER.into(),
                node: PEER.into(),
                port: 4370,
                incarnation: 7,
                nonce: [2; 32],
                proof: [3; 32],
            },
        ),
        ("proof", LinkMessage::Proof { proof: [4; 32] }),
        (
            "reject",
            LinkMessage::Reject {
                reason: "authentication failed".into(),
            },
        ),
        ("heartbeat", LinkMessage::Heartbeat),
        (
            "members",
            LinkMessage::Members(vec![
                MemberEntry {
                    node: PEER.into(),
                    port: 4370,
                    incarnation: 7,
                    left: false,
                },
                MemberEntry {
                    node: "n3@10.0.0.3".into(),
                    port: 4371,
                    incarnation: 9,
                    left: false,
                },
                MemberEntry {
                    node: NODE.into(),
                    port: 4370,
                    incarnation: 1,
                    left: true,
                },
            ]),
        ),
        ("routes-sync", LinkMessage::RoutesSync(vec!["a/#".into()])),
        ("route-add", LinkMessage::RouteAdd("sport/+/player1".into())),
        (
            "route-remove",
            LinkMessage::RouteRemove("sport/+/player1".into()),
        ),
        ("forward", LinkMessage::Forward(forwarded("a/b"))),
        (
            "forward-seq",
            LinkMessage::ForwardSeq {
                seq: 1,
                publish: forwarded("a/b"),
            },
        ),
        ("ack", LinkMessage::Ack(1)),
        (
            "retained-digest",
            LinkMessage::RetainedDigest(vec![0, 5, 0, 9]),
        ),
        ("route-ack", LinkMessage::RouteAck(1)),
        (
            "bulk-retained",
            LinkMessage::Bulk(BulkChunk {
                sync: 2,
                index: 0,
                last: true,
                body: BulkBody::Retained(vec![RetainedItem {
                    version: (1 << 20, 7),
                    publish: ForwardedPublish {
                        retain: true,
                        retain_version: Some((1 << 20, 7)),
                        ..forwarded("r/1")
                    },
                }]),
            }),
        ),
        ("resume", LinkMessage::Resume { received: 0 }),
        (
            "bulk",
            LinkMessage::Bulk(BulkChunk {
                sync: 1,
                index: 0,
                last: true,
                body: BulkBody::Routes(vec!["a/#".into(), "$share/g/b".into()]),
            }),
        ),
    ]
}

fn payload(msg: &LinkMessage) -> Vec<u8> {
    wire::encode(msg)[wire::LENGTH_PREFIX..].to_vec()
}

fn link_frame_seeds() {
    let mut all = vec![2, 128];
    for (name, msg) in link_messages() {
        let frame = wire::encode(&msg);
        all.extend_from_slice(&frame);
        let mut one = vec![0, 255];
        one.extend_from_slice(&frame);
        write("link_frame", name, &one);
    }
    write("link_frame", "all", &all);
    write("link_frame", "empty-frame", &[0, 128, 0, 0, 0, 0]);
    write("link_frame", "oversize", &[0, 128, 0, 0, 0x10, 0x01, 0]);
}

/// A `link_handshake` script, checked to decode back to the operations it was written from.
#[derive(Default)]
struct LinkScript {
    script: Script,
    ops: Vec<(LinkOp, Vec<u8>)>,
}

impl LinkScript {
    fn op(&mut self, op: LinkOp) -> &mut Self {
        self.with(op, &[])
    }

    fn frame(&mut self, msg: &LinkMessage) -> &mut Self {
        self.with(LinkOp::Frame { link: 0 }, &payload(msg))
    }

    /// An operation and what it reads after itself (a chunk for `Frame`, a nonce for `Hello`
    /// and `ValidChallenge`).
    fn with(&mut self, op: LinkOp, extra: &[u8]) -> &mut Self {
        op.write(&mut self.script);
        match op {
            LinkOp::Frame { .. } => {
                self.script.chunk(extra);
            }
            LinkOp::Hello { .. } | LinkOp::ValidChallenge => {
                assert_eq!(extra.len(), 32);
                self.script.bytes(extra);
            }
            _ => assert!(extra.is_empty()),
        }
        self.ops.push((op, extra.to_vec()));
        self
    }

    fn check(&self) {
        let mut input = Input::new(&self.script.0);
        let mut decoded = Vec::new();
        while let Some(op) = input.link_op() {
            let extra = match op {
                LinkOp::Frame { .. } => input.chunk().to_vec(),
                LinkOp::Hello { .. } | LinkOp::ValidChallenge => input.array::<32>().to_vec(),
                _ => Vec::new(),
            };
            decoded.push((op, extra));
        }
        assert_eq!(decoded, self.ops);
    }
}

fn link_scripts() -> Vec<(&'static str, LinkScript)> {
    let messages = link_messages();
    let mut out = Vec::new();

    // An honest dialer: Hello, Proof, then everything a linked peer says.
    let mut s = LinkScript::default();
    s.with(LinkOp::Hello { link: 0 }, &[1; 32])
        .op(LinkOp::ValidProof);
    for (name, msg) in &messages {
        if !matches!(
            *name,
            "hello" | "challenge" | "proof" | "reject" | "routes-sync"
        ) {
            s.frame(msg);
        }
    }
    s.op(LinkOp::Route {
        add: true,
        topic: 7,
    })
    .op(LinkOp::Forward { topic: 1, qos: 1 })
    .op(LinkOp::Advance { ms: 20 })
    .op(LinkOp::AnswerDial { ok: true })
    .op(LinkOp::Advance { ms: 100 })
    .op(LinkOp::Lost {
        link: 0,
        bad_frame: false,
    })
    .op(LinkOp::Advance { ms: 200 });
    out.push(("accepted-peer", s));

    // We dial, the honest acceptor answers.
    let mut s = LinkScript::default();
    s.op(LinkOp::Dial)
        .with(LinkOp::ValidChallenge, &[2; 32])
        .frame(&LinkMessage::Resume { received: 0 })
        .op(LinkOp::Forward { topic: 0, qos: 2 })
        .frame(&LinkMessage::Ack(1))
        .op(LinkOp::Leave)
        .op(LinkOp::Join)
        .op(LinkOp::AnswerDial { ok: false })
        .op(LinkOp::Advance { ms: 255 });
    out.push(("dialled-peer", s));

    // Refusals: every handshake message out of place, a wrong cluster, a bad proof, garbage.
    for (name, msg) in &messages {
        let mut s = LinkScript::default();
        s.frame(msg);
        out.push((*name, s));
    }
    let mut s = LinkScript::default();
    s.frame(&LinkMessage::Hello {
        protocol: PROTOCOL_VERSION,
        cluster: "other".into(),
        node: PEER.into(),
        port: 4370,
        incarnation: 7,
        nonce: [0; 32],
    });
    out.push(("other-cluster", s));
    let mut s = LinkScript::default();
    s.frame(&hello(NODE, 5));
    out.push(("own-name", s));
    let mut s = LinkScript::default();
    s.with(LinkOp::Hello { link: 0 }, &[1; 32])
        .frame(&LinkMessage::Proof { proof: [0; 32] });
    out.push(("bad-proof", s));
    let mut s = LinkScript::default();
    s.with(LinkOp::Frame { link: 0 }, b"\xff\xff\xff garbage");
    out.push(("garbage", s));
    let mut s = LinkScript::default();
    for _ in 0..4 {
        s.op(LinkOp::Accept);
    }
    s.op(LinkOp::Advance { ms: 255 }).op(LinkOp::Lost {
        link: 1,
        bad_frame: true,
    });
    out.push(("timeouts", s));
    out
}

// ---- discovery ---------------------------------------------------------------------------------

fn announce(kind: Kind, node: &str, cluster: &str, cookie: &str, protocol: u16) -> Bytes {
    discovery::encode(
        kind,
        &Sender {
            protocol,
            port: 4370,
            instance: 42,
            node,
            cluster,
            cookie,
        },
    )
}

fn discovery_seeds() {
    let ping = announce(Kind::Ping, PEER, CLUSTER, COOKIE, PROTOCOL_VERSION);
    let cases: Vec<(&str, u8, Bytes)> = vec![
        ("ping", 0, ping.clone()),
        (
            "pong-lower",
            2,
            announce(Kind::Pong, "a@10.0.0.9", CLUSTER, COOKIE, PROTOCOL_VERSION),
        ),
        (
            "ping-lower-resigned",
            1,
            announce(Kind::Ping, "a@10.0.0.9", CLUSTER, "x", PROTOCOL_VERSION),
        ),
        (
            "other-cookie",
            0,
            announce(Kind::Ping, PEER, CLUSTER, "other", PROTOCOL_VERSION),
        ),
        (
            "other-cluster",
            0,
            announce(Kind::Ping, PEER, "other", COOKIE, PROTOCOL_VERSION),
        ),
        (
            "other-protocol",
            0,
            announce(Kind::Ping, PEER, CLUSTER, COOKIE, 2),
        ),
        (
            "own-name",
            0,
            announce(Kind::Ping, NODE, CLUSTER, COOKIE, PROTOCOL_VERSION),
        ),
        (
            "bad-name",
            1,
            announce(Kind::Ping, "no-at-sign", CLUSTER, COOKIE, PROTOCOL_VERSION),
        ),
        ("truncated", 0, ping.slice(..ping.len() - 1)),
        (
            "not-ours",
            0,
            Bytes::from_static(b"M-SEARCH * HTTP/1.1\r\n"),
        ),
    ];
    let mut all = Script::default();
    for (name, mode, bytes) in cases {
        let mut one = Script::default();
        one.u8(mode).chunk(&bytes);
        write("discovery_datagram", name, &one.0);
        all.u8(mode | 20).chunk(&bytes);
    }
    write("discovery_datagram", "all", &all.0);
}

// ---- config ------------------------------------------------------------------------------------

fn config_seeds() {
    write("config", "default", Config::default().render().as_bytes());
    // README: "A cluster" and "Multicast discovery".
    write(
        "config",
        "readme-static",
        b"node.name = n1@127.0.0.1\nnode.cookie = mysecretcookie\nnode.data_dir = ./data-n1\n\
          listener.tcp.bind = 127.0.0.1:1883\nadmin.bind = 127.0.0.1:18083\ncluster.name = demo\n\
          cluster.discovery = static\ncluster.static.seeds = n1@127.0.0.1, n2@127.0.0.2, n3@127.0.0.3\n",
    );
    write(
        "config",
        "readme-mcast",
        b"node.name = n1@10.0.0.1\nnode.cookie = a-long-random-cookie\ncluster.name = demo\n\
          cluster.discovery = mcast\ncluster.mcast.addr = 239.192.0.1      # or ff02::4:1\n\
          cluster.mcast.ports = 4369, 4370\ncluster.mcast.iface = 10.0.0.1\n\
          cluster.mcast.ttl = 255\ncluster.mcast.loop = on\n",
    );
    // src/config.rs tests: render_round_trips_through_the_parser and the syntax tests.
    let c = Config::from_pairs(&[
        ("node.name", "n1@[::1]"),
        ("cluster.discovery", "static"),
        (
            "cluster.static.seeds",
            "n1@10.0.0.1, n2@host-b.example:4371, n3@[fe80::1]:4372",
        ),
        ("admin.bind", "0.0.0.0:18083"),
        ("admin.token", "s3cret"),
        ("mqtt.server_keepalive", "90"),
        ("mqtt.max_session_expiry", "2h"),
        ("mqtt.retry_interval", "1500ms"),
        ("cluster.autoclean", "off"),
        ("node.seed", "42"),
        ("log.level", "flockmq=debug,warn"),
        ("mqtt.max_packet_size", "256KB"),
        ("cluster.max_frame_size", "1MB"),
    ])
    .unwrap();
    write("config", "round-trip", c.render().as_bytes());
    write(
        "config",
        "syntax",
        b"# a comment\n   # indented comment\n\nnode.cookie = abc#def # trailing\n\
          cluster.name=edge   #x\n  node.name   =   \"n1@127.0.0.2\"   \n log.level=debug\t\n",
    );
    write(
        "config",
        "mcast-v6",
        b"cluster.discovery = mcast\ncluster.mcast.addr = ff02::4:1\ncluster.mcast.iface = eth0\n\
          mqtt.max_qos = 1\nmqtt.max_inflight = 10\nnode.shutdown_timeout = 1m\n",
    );
}

// ---- broker sessions ---------------------------------------------------------------------------

/// A `broker_session` script, checked to decode back to what it was written from.
struct BrokerScript {
    setup: BrokerSetup,
    script: Script,
    ops: Vec<(BrokerOp, Vec<u8>)>,
}

fn write_setup(s: &mut Script, setup: &BrokerSetup) {
    s.bool(setup.clustered)
        .bool(setup.hold_subacks)
        .u8(setup.max_inflight)
        .u8(setup.max_queued)
        .bool(setup.retain_available)
        .u8(setup.max_qos)
        .u8(setup.server_keepalive)
        .u8(setup.max_topic_alias)
        .bool(setup.retry)
        .u8(setup.window);
}

impl BrokerScript {
    fn new(setup: BrokerSetup) -> BrokerScript {
        let mut script = Script::default();
        write_setup(&mut script, &setup);
        BrokerScript {
            setup,
            script,
            ops: Vec::new(),
        }
    }

    fn op(&mut self, op: BrokerOp) -> &mut Self {
        assert!(!matches!(op, BrokerOp::Raw { .. }));
        op.write(&mut self.script);
        self.ops.push((op, Vec::new()));
        self
    }

    fn raw(&mut self, conn: u8, bytes: &[u8]) -> &mut Self {
        let op = BrokerOp::Raw { conn };
        op.write(&mut self.script);
        self.script.chunk(bytes);
        self.ops.push((op, bytes.to_vec()));
        self
    }

    /// Opens slot `conn` and connects client `c{client}` (MQTT 5 unless `protocol` < 2).
    fn connect(&mut self, conn: u8, client: u8, protocol: u8, clean: bool) -> &mut Self {
        self.op(BrokerOp::Open { conn }).op(BrokerOp::Connect {
            conn,
            protocol,
            client,
            clean,
            keep_alive: 30,
            expiry: if clean { 0 } else { 120 },
            will_topic: 0,
            will_qos: 3,
            will_retain: false,
            will_delay: 0,
            max_packet: 0,
            receive_max: 0,
            topic_alias_max: 4,
        })
    }

    fn subscribe(&mut self, conn: u8, topic: u8, options: u8) -> &mut Self {
        self.op(BrokerOp::Subscribe {
            conn,
            topic,
            options,
            packet_id: 1,
            sub_id: 0,
            second: 255,
        })
    }

    fn publish(&mut self, conn: u8, topic: u8, flags: u8, packet_id: u8) -> &mut Self {
        self.op(BrokerOp::Publish {
            conn,
            topic,
            flags,
            packet_id,
            alias: 0,
            expiry: 0,
            payload_len: 8,
        })
    }

    fn check(&self) {
        let mut input = Input::new(&self.script.0);
        assert_eq!(input.take::<BrokerSetup>().as_ref(), Some(&self.setup));
        let mut decoded = Vec::new();
        while let Some(op) = input.broker_op() {
            let extra = match op {
                BrokerOp::Raw { .. } => input.chunk().to_vec(),
                _ => Vec::new(),
            };
            decoded.push((op, extra));
        }
        assert_eq!(decoded, self.ops);
    }
}

fn setup() -> BrokerSetup {
    BrokerSetup {
        clustered: false,
        hold_subacks: false,
        max_inflight: 0,
        max_queued: 255,
        retain_available: true,
        max_qos: 2,
        server_keepalive: 0,
        max_topic_alias: 8,
        retry: false,
        window: 255,
    }
}

fn broker_scripts() -> Vec<(&'static str, BrokerScript)> {
    let mut out = Vec::new();

    // Publish / subscribe at every QoS between a v5 and a 3.1.1 client, acknowledged.
    let mut s = BrokerScript::new(setup());
    s.connect(0, 0, 2, true)
        .connect(1, 1, 1, true)
        .subscribe(0, 7, 2)
        .subscribe(1, 5, 1)
        .publish(1, 1, 0, 0)
        .publish(1, 1, 1, 10)
        .op(BrokerOp::AckLast { conn: 0 })
        .publish(1, 2, 2, 11)
        .op(BrokerOp::AckLast { conn: 1 })
        .op(BrokerOp::AckLast { conn: 0 })
        .op(BrokerOp::AckLast { conn: 0 })
        .op(BrokerOp::Ack {
            conn: 1,
            kind: 2,
            packet_id: 11,
            reason: 0,
        })
        .op(BrokerOp::PingReq { conn: 0 })
        .op(BrokerOp::Unsubscribe {
            conn: 0,
            topic: 7,
            packet_id: 2,
        })
        .op(BrokerOp::Disconnect {
            conn: 0,
            reason: 0,
            expiry: 255,
        })
        .op(BrokerOp::Disconnect {
            conn: 1,
            reason: 0,
            expiry: 255,
        });
    out.push(("pubsub", s));

    // A persistent session: offline queue, resend on reconnect, retained at subscribe.
    let mut s = BrokerScript::new(setup());
    s.connect(0, 0, 2, false)
        .subscribe(0, 7, 1)
        .op(BrokerOp::Lost { conn: 0 })
        .connect(1, 1, 2, true)
        .publish(1, 1, 1 | 4, 5)
        .publish(1, 2, 2, 6)
        .op(BrokerOp::AckLast { conn: 1 })
        .op(BrokerOp::AdvanceSecs { secs: 10 })
        .connect(0, 0, 2, false)
        .op(BrokerOp::AckLast { conn: 0 })
        .connect(2, 2, 1, true)
        .subscribe(2, 8, 2)
        .op(BrokerOp::AdvanceSecs { secs: 200 });
    out.push(("persistent-session", s));

    // Wills with a delay, keepalive timeout, takeover, topic aliases, a bad packet.
    let mut s = BrokerScript::new(setup());
    s.connect(0, 0, 2, true).subscribe(0, 8, 1);
    s.op(BrokerOp::Open { conn: 1 }).op(BrokerOp::Connect {
        conn: 1,
        protocol: 2,
        client: 1,
        clean: true,
        keep_alive: 1,
        expiry: 10,
        will_topic: 1,
        will_qos: 1,
        will_retain: true,
        will_delay: 2,
        max_packet: 8,
        receive_max: 1,
        topic_alias_max: 2,
    });
    s.op(BrokerOp::Publish {
        conn: 0,
        topic: 2,
        flags: 1,
        packet_id: 3,
        alias: 1,
        expiry: 5,
        payload_len: 200,
    })
    .op(BrokerOp::Publish {
        conn: 0,
        topic: 2,
        flags: 0x80,
        packet_id: 0,
        alias: 1,
        expiry: 0,
        payload_len: 1,
    })
    .op(BrokerOp::AdvanceSecs { secs: 3 })
    .op(BrokerOp::AckLast { conn: 0 })
    .connect(2, 0, 2, true)
    .raw(2, &[0x30, 0x03, 0x00, 0x01, b'#'])
    .op(BrokerOp::Advance { ms: 200 });
    out.push(("wills-keepalive-aliases", s));

    // Shared subscriptions, a slow reader paced by the output window, shutdown with messages in
    // flight.
    let mut s = BrokerScript::new(BrokerSetup {
        max_inflight: 2,
        max_queued: 3,
        window: 1,
        retry: true,
        ..setup()
    });
    s.connect(0, 0, 2, true)
        .connect(1, 1, 1, true)
        .subscribe(0, 10, 2)
        .subscribe(1, 10, 1)
        .connect(2, 2, 2, true);
    for i in 0..6 {
        s.publish(2, 1 + i % 2, 1, 20 + i);
    }
    s.op(BrokerOp::Drained { conn: 0 })
        .op(BrokerOp::Congested { on: true })
        .op(BrokerOp::AdvanceSecs { secs: 2 })
        .op(BrokerOp::Shutdown)
        .op(BrokerOp::AckLast { conn: 0 })
        .op(BrokerOp::FinishShutdown);
    out.push(("shared-paced-shutdown", s));

    // A clustered broker: route confirmations holding SUBACKs, forwarded publishes, a session
    // handed off and back, retained echo.
    let mut s = BrokerScript::new(BrokerSetup {
        clustered: true,
        hold_subacks: true,
        ..setup()
    });
    s.connect(0, 0, 2, false)
        .subscribe(0, 7, 2)
        .op(BrokerOp::ConfirmRoutes { upto: 1 })
        .op(BrokerOp::Forwarded {
            topic: 1,
            flags: 1 | 4,
        })
        .publish(0, 2, 2 | 4, 9)
        .op(BrokerOp::Handoff {
            client: 0,
            clean: false,
        })
        .op(BrokerOp::RetainedEcho)
        .connect(1, 0, 2, false)
        .op(BrokerOp::AckLast { conn: 1 });
    out.push(("clustered", s));

    // Raw client bytes: a CONNECT then garbage; a first packet that is not CONNECT.
    let mut s = BrokerScript::new(setup());
    let mut connect_bytes = BytesMut::new();
    encode(&connect(Protocol::V311), Protocol::V311, &mut connect_bytes);
    s.op(BrokerOp::Open { conn: 0 })
        .raw(0, &connect_bytes)
        .raw(0, &[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'])
        .raw(0, &[0x00, 0x00])
        .op(BrokerOp::Open { conn: 1 })
        .raw(1, &[0xc0, 0x00])
        .op(BrokerOp::Open { conn: 2 })
        .raw(2, &[0x10, 0x07, 0, 4, b'M', b'Q', b'T', b'T', 9]);
    out.push(("raw-bytes", s));
    out
}

#[test]
fn scripts_decode_to_what_they_were_written_from() {
    for (name, s) in link_scripts() {
        s.check();
        assert!(!s.script.0.is_empty(), "{name}");
    }
    for (_, s) in broker_scripts() {
        s.check();
    }
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    mqtt_seeds();
    link_frame_seeds();
    for (name, s) in link_scripts() {
        s.check();
        write("link_handshake", name, &s.script.0);
    }
    discovery_seeds();
    config_seeds();
    for (name, s) in broker_scripts() {
        s.check();
        write("broker_session", name, &s.script.0);
    }
}
