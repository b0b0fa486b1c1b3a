//! proptest strategies for arbitrary, valid packets of every type, per protocol level: MQTT 5
//! packets carry arbitrary properties and reason codes allowed for their type; 3.1.x packets
//! carry only what 3.1.x can express, so every generated packet must survive a round trip.

use bytes::Bytes;
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

use crate::codec::*;

/// Largest value a variable byte integer can hold.
pub const VARINT_MAX: u32 = 268_435_455;

/// Any UTF-8 string MQTT allows (everything but U+0000), short.
pub fn string() -> impl Strategy<Value = ByteString> + Clone {
    vec(any::<char>(), 0..8).prop_map(|cs| {
        cs.into_iter()
            .filter(|&c| c != '\0')
            .collect::<String>()
            .into()
    })
}

/// A valid, non-empty topic name.
pub fn topic() -> impl Strategy<Value = ByteString> + Clone {
    vec(any::<char>(), 0..8).prop_map(|cs| {
        let rest: String = cs
            .into_iter()
            .filter(|c| !matches!(c, '\0' | '+' | '#'))
            .collect();
        format!("t/{rest}").into()
    })
}

pub fn binary() -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

pub fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> + Clone {
    vec((string(), string()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> + Clone {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id() -> impl Strategy<Value = u16> + Clone {
    1..=u16::MAX
}

fn code(allowed: &'static [ReasonCode]) -> impl Strategy<Value = ReasonCode> + Clone {
    select(allowed)
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(1..=u32::MAX),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        user_properties(),
        of(string()),
        of(binary()),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, up, am, ad)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                authentication_method: am,
                authentication_data: ad,
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        of(0..=1u8),
        of(any::<u32>()),
        of(string()),
        of(topic()),
        of(binary()),
        user_properties(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
}

fn will(protocol: Protocol) -> impl Strategy<Value = LastWill> {
    let props = if protocol.is_v5() {
        will_properties().boxed()
    } else {
        Just(WillProperties::default()).boxed()
    };
    (topic(), binary(), qos(), any::<bool>(), props).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    )
}

/// A CONNECT for `protocol` (3.1.x: a password only with a user name).
pub fn connect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let props = if protocol.is_v5() {
        connect_properties().boxed()
    } else {
        Just(ConnectProperties::default()).boxed()
    };
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        of(will(protocol)),
        of(string()),
        of(binary()),
        props,
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                let password = if protocol.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let a = (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        of(any::<bool>()),
        of(1..=u32::MAX),
        of(string()),
        of(any::<u16>()),
        of(string()),
        user_properties(),
    );
    let b = (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(string()),
        of(string()),
        of(string()),
        of(binary()),
    );
    (a, b).prop_map(
        |((sei, rm, mq, ra, mps, aci, tam, rs, up), (wsa, sia, ssa, ska, ri, sr, am, ad))| {
            ConnAckProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_qos: mq,
                retain_available: ra,
                maximum_packet_size: mps,
                assigned_client_identifier: aci,
                topic_alias_maximum: tam,
                reason_string: rs,
                user_properties: up,
                wildcard_subscription_available: wsa,
                subscription_identifiers_available: sia,
                shared_subscription_available: ssa,
                server_keep_alive: ska,
                response_information: ri,
                server_reference: sr,
                authentication_method: am,
                authentication_data: ad,
            }
        },
    )
}

/// The CONNACK codes 3.1.1 can express, each the image of its return code.
const V311_CONNACK_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::UnsupportedProtocolVersion,
    ReasonCode::ClientIdentifierNotValid,
    ReasonCode::ServerUnavailable,
    ReasonCode::BadUserNameOrPassword,
    ReasonCode::NotAuthorized,
];

/// The SUBACK codes 3.1.1 can express.
const V311_SUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::UnspecifiedError,
];

fn connack(v5: bool) -> impl Strategy<Value = Packet> {
    let rest = if v5 {
        (code(CONNACK_CODES), connack_properties()).boxed()
    } else {
        (code(V311_CONNACK_CODES), Just(ConnAckProperties::default())).boxed()
    };
    (any::<bool>(), rest).prop_map(|(session_present, (reason_code, properties))| {
        Packet::ConnAck(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    })
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        of(0..=1u8),
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(topic()),
        of(binary()),
        user_properties(),
        vec(1..=VARINT_MAX, 0..3),
        of(string()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, up, si, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: si,
            content_type: ct,
        })
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    let props = if v5 {
        publish_properties().boxed()
    } else {
        Just(PublishProperties::default()).boxed()
    };
    // MQTT 5 may send an empty topic name when a topic alias stands in for it.
    let empty_topic = if v5 {
        any::<bool>().boxed()
    } else {
        Just(false).boxed()
    };
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        empty_topic,
        packet_id(),
        binary(),
        props,
    )
        .prop_map(
            |(qos, dup, retain, topic, empty_topic, id, payload, mut properties)| {
                let topic = if empty_topic {
                    properties.topic_alias.get_or_insert(1);
                    ByteString::new()
                } else {
                    topic
                };
                let queued = qos != QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && queued,
                    qos,
                    retain,
                    topic,
                    packet_id: queued.then_some(id),
                    payload,
                    properties,
                })
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(string()), user_properties()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

fn ack(v5: bool, allowed: &'static [ReasonCode]) -> impl Strategy<Value = Ack> {
    let rest = if v5 {
        (code(allowed), ack_properties()).boxed()
    } else {
        Just((ReasonCode::Success, AckProperties::default())).boxed()
    };
    (packet_id(), rest).prop_map(|(packet_id, (reason_code, properties))| Ack {
        packet_id,
        reason_code,
        properties,
    })
}

fn subscription_options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    let rh = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNew,
        RetainHandling::DoNotSend,
    ]);
    (qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| {
        if v5 {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            }
        }
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let props = if v5 {
        (of(1..=VARINT_MAX), user_properties())
            .prop_map(
                |(subscription_identifier, user_properties)| SubscribeProperties {
                    subscription_identifier,
                    user_properties,
                },
            )
            .boxed()
    } else {
        Just(SubscribeProperties::default()).boxed()
    };
    (
        packet_id(),
        props,
        vec((string(), subscription_options(v5)), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(v5: bool) -> impl Strategy<Value = Packet> {
    let rest = if v5 {
        (ack_properties(), vec(code(SUBACK_CODES), 1..4)).boxed()
    } else {
        (
            Just(AckProperties::default()),
            vec(code(V311_SUBACK_CODES), 1..4),
        )
            .boxed()
    };
    (packet_id(), rest).prop_map(|(packet_id, (properties, reason_codes))| {
        Packet::SubAck(SubAck {
            packet_id,
            properties,
            reason_codes,
        })
    })
}

fn unsubscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let props = if v5 {
        user_properties().boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), props, vec(string(), 1..4)).prop_map(|(packet_id, user_properties, filters)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id,
            user_properties,
            filters,
        })
    })
}

fn unsuback(v5: bool) -> impl Strategy<Value = Packet> {
    let rest = if v5 {
        (ack_properties(), vec(code(UNSUBACK_CODES), 1..4)).boxed()
    } else {
        Just((AckProperties::default(), Vec::new())).boxed()
    };
    (packet_id(), rest).prop_map(|(packet_id, (properties, reason_codes))| {
        Packet::UnsubAck(UnsubAck {
            packet_id,
            properties,
            reason_codes,
        })
    })
}

fn disconnect(v5: bool) -> BoxedStrategy<Packet> {
    if !v5 {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    let props = (
        of(any::<u32>()),
        of(string()),
        user_properties(),
        of(string()),
    )
        .prop_map(|(sei, rs, up, sr)| DisconnectProperties {
            session_expiry_interval: sei,
            reason_string: rs,
            user_properties: up,
            server_reference: sr,
        });
    (code(DISCONNECT_CODES), props)
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> impl Strategy<Value = Packet> {
    let props = (of(string()), of(binary()), of(string()), user_properties()).prop_map(
        |(am, ad, rs, up)| AuthProperties {
            authentication_method: am,
            authentication_data: ad,
            reason_string: rs,
            user_properties: up,
        },
    );
    (code(AUTH_CODES), props).prop_map(|(reason_code, properties)| {
        Packet::Auth(Auth {
            reason_code,
            properties,
        })
    })
}

/// Any packet a connection speaking `protocol` can carry. For 3.1.x, CONNECTs are drawn from
/// both 3.1 and 3.1.1 (they share every other packet's form).
pub fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let v5 = protocol.is_v5();
    let connect = if v5 {
        connect(Protocol::V5).boxed()
    } else {
        prop_oneof![connect(Protocol::V311), connect(Protocol::V31)].boxed()
    };
    let common = prop_oneof![
        connect,
        connack(v5),
        publish(v5),
        ack(v5, PUBACK_CODES).prop_map(Packet::PubAck),
        ack(v5, PUBACK_CODES).prop_map(Packet::PubRec),
        ack(v5, PUBREL_CODES).prop_map(Packet::PubRel),
        ack(v5, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(v5),
        suback(v5),
        unsubscribe(v5),
        unsuback(v5),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v5),
    ];
    if v5 {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}
