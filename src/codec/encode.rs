//! Writing packets. Every body is written by one generic function run twice: once into a
//! `Counter` to learn the remaining length, once into the `BytesMut` (reserved once up front),
//! so `encoded_len` can never disagree with `encode`. Never allocates per packet.

use bytes::BytesMut;

use super::properties::{EncodeProps, UserPropertiesRef, props_len, put_props};
use super::reason::{v311_connack_code, v311_suback_code};
use super::wire::{Counter, Sink, varint_len};
use super::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, Protocol, Publish, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};

/// The protocol a packet is really written for: a CONNECT names its own.
fn effective(packet: &Packet, protocol: Protocol) -> Protocol {
    match packet {
        Packet::Connect(c) => c.protocol,
        _ => protocol,
    }
}

/// AUTH does not exist before MQTT 5; nothing is written for it there.
fn representable(packet: &Packet, protocol: Protocol) -> bool {
    !matches!(packet, Packet::Auth(_)) || protocol.is_v5()
}

fn body_len(packet: &Packet, protocol: Protocol) -> usize {
    let mut c = Counter::default();
    body(packet, protocol, &mut c);
    c.0
}

pub(crate) fn encoded_len(packet: &Packet, protocol: Protocol) -> usize {
    let protocol = effective(packet, protocol);
    if !representable(packet, protocol) {
        return 0;
    }
    let n = body_len(packet, protocol);
    1 + varint_len(n) + n
}

pub(crate) fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) {
    let protocol = effective(packet, protocol);
    if !representable(packet, protocol) {
        return;
    }
    let n = body_len(packet, protocol);
    buf.reserve(1 + varint_len(n) + n);
    buf.put_u8(first_byte(packet));
    buf.put_varint(n);
    body(packet, protocol, buf);
}

/// Packet type and flags.
fn first_byte(packet: &Packet) -> u8 {
    let ptype = packet.packet_type() as u8;
    let flags = match packet {
        Packet::Publish(p) => {
            // DUP must be 0 for QoS 0 (MQTT-3.3.1-2).
            let dup = p.dup && p.qos != QoS::AtMostOnce;
            u8::from(dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain)
        }
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    ptype << 4 | flags
}

fn body<S: Sink>(packet: &Packet, protocol: Protocol, s: &mut S) {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Connect(c) => connect(c, s),
        Packet::ConnAck(c) => connack(c, v5, s),
        Packet::Publish(p) => publish(p, v5, s),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack(a, v5, s)
        }
        Packet::Subscribe(sub) => subscribe(sub, v5, s),
        Packet::SubAck(a) => suback(a, v5, s),
        Packet::Unsubscribe(u) => unsubscribe(u, v5, s),
        Packet::UnsubAck(a) => unsuback(a, v5, s),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => disconnect(d, v5, s),
        Packet::Auth(a) => auth(a, s),
    }
}

/// Writes `code` and the properties in MQTT 5's shortest form: nothing at all for Success
/// without properties, the code alone when there are no properties and `props_optional`
/// (PUBACK..PUBCOMP), else both.
fn reason_and_props<P: EncodeProps, S: Sink>(
    code: ReasonCode,
    props: &P,
    props_optional: bool,
    s: &mut S,
) {
    let has_props = props_len(props) != 0;
    if code == ReasonCode::Success && !has_props {
        return;
    }
    s.put_u8(code as u8);
    if has_props || !props_optional {
        put_props(props, s);
    }
}

fn connect<S: Sink>(c: &Connect, s: &mut S) {
    let (name, level): (&[u8], u8) = match c.protocol {
        Protocol::V31 => (b"MQIsdp", 3),
        Protocol::V311 => (b"MQTT", 4),
        Protocol::V5 => (b"MQTT", 5),
    };
    let v5 = c.protocol.is_v5();
    s.put_binary(name);
    s.put_u8(level);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if v5 {
        put_props(&c.properties, s);
    }
    s.put_string(&c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            put_props(&w.properties, s);
        }
        s.put_string(&w.topic);
        s.put_binary(&w.payload);
    }
    if let Some(u) = &c.username {
        s.put_string(u);
    }
    if let Some(p) = &c.password {
        s.put_binary(p);
    }
}

fn connack<S: Sink>(c: &ConnAck, v5: bool, s: &mut S) {
    s.put_u8(u8::from(c.session_present));
    if v5 {
        s.put_u8(c.reason_code as u8);
        put_props(&c.properties, s);
    } else {
        s.put_u8(v311_connack_code(c.reason_code));
    }
}

fn publish<S: Sink>(p: &Publish, v5: bool, s: &mut S) {
    s.put_string(&p.topic);
    if p.qos != QoS::AtMostOnce {
        s.put_u16(p.packet_id.unwrap_or(0));
    }
    if v5 {
        put_props(&p.properties, s);
    }
    s.put_slice(&p.payload);
}

fn ack<S: Sink>(a: &Ack, v5: bool, s: &mut S) {
    s.put_u16(a.packet_id);
    if v5 {
        reason_and_props(a.reason_code, &a.properties, true, s);
    }
}

fn subscribe<S: Sink>(sub: &Subscribe, v5: bool, s: &mut S) {
    s.put_u16(sub.packet_id);
    if v5 {
        put_props(&sub.properties, s);
    }
    for (filter, o) in &sub.filters {
        s.put_string(filter);
        let mut options = o.qos as u8;
        if v5 {
            options |= u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4;
        }
        s.put_u8(options);
    }
}

fn suback<S: Sink>(a: &SubAck, v5: bool, s: &mut S) {
    s.put_u16(a.packet_id);
    if v5 {
        put_props(&a.properties, s);
    }
    for &code in &a.reason_codes {
        s.put_u8(if v5 {
            code as u8
        } else {
            v311_suback_code(code)
        });
    }
}

fn unsubscribe<S: Sink>(u: &Unsubscribe, v5: bool, s: &mut S) {
    s.put_u16(u.packet_id);
    if v5 {
        put_props(&UserPropertiesRef(&u.user_properties), s);
    }
    for filter in &u.filters {
        s.put_string(filter);
    }
}

fn unsuback<S: Sink>(a: &UnsubAck, v5: bool, s: &mut S) {
    s.put_u16(a.packet_id);
    if v5 {
        put_props(&a.properties, s);
        for &code in &a.reason_codes {
            s.put_u8(code as u8);
        }
    }
}

fn disconnect<S: Sink>(d: &Disconnect, v5: bool, s: &mut S) {
    // The spec allows a code-only DISCONNECT, but some clients (rumqttc 0.25) cannot parse it;
    // like mosquitto we always follow the code with the property length.
    if v5 {
        reason_and_props(d.reason_code, &d.properties, false, s);
    }
}

fn auth<S: Sink>(a: &Auth, s: &mut S) {
    reason_and_props(a.reason_code, &a.properties, false, s);
}
