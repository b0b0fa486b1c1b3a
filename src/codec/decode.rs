//! Parsing: the fixed header (cheap, before the body is buffered) and then the body of each
//! packet type from one frame. Strings and payloads are slices of the frame, never copies.
//! Owns no connection state (that is `Decoder`'s) and never panics on any byte sequence.

use bytes::Bytes;

use super::properties::{UserProperties, read_props};
use super::reason::{
    AUTH_CODES, CONNACK_CODES, DISCONNECT_CODES, PUBACK_CODES, PUBREL_CODES, SUBACK_CODES,
    UNSUBACK_CODES, parse_reason, reason_from_v311_connack, reason_from_v311_suback,
};
use super::wire::Reader;
use super::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Protocol, Publish,
    PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

/// Packet type numbers (fixed header high nibble).
pub(crate) const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// Where the body of a frame starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedHeader {
    /// Bytes taken by the first byte plus the remaining-length varint.
    pub header_len: usize,
    /// Bytes of variable header and payload.
    pub remaining: usize,
}

impl FixedHeader {
    /// Bytes of the whole frame.
    pub fn total(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Reads the fixed header from the start of `buf`; `Ok(None)` if it is not all there yet.
pub(crate) fn fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                header_len: 2 + i,
                remaining,
            }));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes",
    ))
}

/// Checks the fixed-header flags of `byte` (MQTT-2.1.3-1) and that the type exists in `protocol`
/// (`None` while waiting for CONNECT: only CONNECT is acceptable then).
pub(crate) fn check_fixed_header(byte: u8, protocol: Option<Protocol>) -> Result<(), DecodeError> {
    let (ptype, flags) = (byte >> 4, byte & 0x0f);
    let Some(protocol) = protocol else {
        if ptype != CONNECT {
            return Err(DecodeError::Protocol("first packet is not CONNECT"));
        }
        return reserved_flags(flags, 0);
    };
    match ptype {
        0 => Err(DecodeError::Malformed("reserved packet type 0")),
        PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 0 and DUP set"));
            }
            Ok(())
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => reserved_flags(flags, 0b0010),
        AUTH if !protocol.is_v5() => Err(DecodeError::Malformed("reserved packet type 15")),
        _ => reserved_flags(flags, 0),
    }
}

fn reserved_flags(flags: u8, expected: u8) -> Result<(), DecodeError> {
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::Malformed("reserved fixed header flags"))
    }
}

/// Parses the body of a frame whose fixed header passed `check_fixed_header`. `protocol` is the
/// connection's protocol; a CONNECT brings its own.
pub(crate) fn packet(byte: u8, body: Bytes, protocol: Protocol) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body);
    let v5 = protocol.is_v5();
    let packet = match byte >> 4 {
        CONNECT => Packet::Connect(Box::new(connect(&mut r)?)),
        CONNACK => Packet::ConnAck(connack(&mut r, v5)?),
        PUBLISH => Packet::Publish(publish(byte, &mut r, v5)?),
        PUBACK => Packet::PubAck(ack(&mut r, v5, PUBACK_CODES)?),
        PUBREC => Packet::PubRec(ack(&mut r, v5, PUBACK_CODES)?),
        PUBREL => Packet::PubRel(ack(&mut r, v5, PUBREL_CODES)?),
        PUBCOMP => Packet::PubComp(ack(&mut r, v5, PUBREL_CODES)?),
        SUBSCRIBE => Packet::Subscribe(subscribe(&mut r, v5)?),
        SUBACK => Packet::SubAck(suback(&mut r, v5)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        UNSUBACK => Packet::UnsubAck(unsuback(&mut r, v5)?),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect(disconnect(&mut r, v5)?),
        AUTH => Packet::Auth(auth(&mut r)?),
        _ => return Err(DecodeError::Malformed("reserved packet type 0")),
    };
    r.finish()?;
    Ok(packet)
}

/// A packet identifier where one is required: 0 is not a valid identifier (MQTT-2.2.1-3).
fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// A topic name must not contain wildcards (MQTT-3.3.2-2) and must not be empty unless
/// `alias` says an MQTT 5 topic alias stands in for it. Both 3.1.1 and 5 report the empty
/// name as TopicNameInvalid: the reason is the same, only 3.1.1 has no code to send.
fn check_topic_name(topic: &str, alias: bool) -> Result<(), DecodeError> {
    if topic.bytes().any(|b| b == b'+' || b == b'#') || (topic.is_empty() && !alias) {
        return Err(DecodeError::TopicNameInvalid);
    }
    Ok(())
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V31,
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedProtocol(level)),
        _ => return Err(DecodeError::Protocol("unknown protocol name")),
    };
    let v5 = protocol.is_v5();

    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain without will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if has_password && !has_username && !v5 {
        return Err(DecodeError::Malformed(
            "password flag without user name flag",
        ));
    }

    let keep_alive = r.u16()?;
    let properties = if v5 {
        read_props(r)?
    } else {
        Default::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            read_props(r)?
        } else {
            Default::default()
        };
        let topic = r.string()?;
        check_topic_name(&topic, false)?;
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xfe != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags set"));
    }
    let code = r.u8()?;
    let (reason_code, properties) = if v5 {
        (parse_reason(code, CONNACK_CODES)?, read_props(r)?)
    } else {
        let code = reason_from_v311_connack(code)
            .ok_or(DecodeError::Malformed("reserved CONNACK return code"))?;
        (code, Default::default())
    };
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason_code,
        properties,
    })
}

fn publish(byte: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    let qos =
        QoS::from_u8((byte >> 1) & 0b11).ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties: PublishProperties = if v5 {
        read_props(r)?
    } else {
        Default::default()
    };
    check_topic_name(&topic, properties.topic_alias.is_some())?;
    Ok(Publish {
        dup: byte & 0b1000 != 0,
        qos,
        retain: byte & 0b0001 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. MQTT 5 may leave out the properties, or the reason code
/// and the properties, when there is nothing but Success to say (§3.4.2.1).
fn ack(r: &mut Reader, v5: bool, allowed: &[ReasonCode]) -> Result<Ack, DecodeError> {
    let mut ack = Ack::new(packet_id(r)?);
    if !v5 || r.is_empty() {
        return Ok(ack);
    }
    ack.reason_code = parse_reason(r.u8()?, allowed)?;
    if !r.is_empty() {
        ack.properties = read_props(r)?;
    }
    Ok(ack)
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        read_props(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v5)?;
        // A shared subscription would deliver a client's own messages back to it through the
        // group anyway, so No Local makes no sense there (MQTT-3.8.3-4).
        if options.no_local && filter.starts_with("$share/") {
            return Err(DecodeError::Protocol("No Local on a shared subscription"));
        }
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn subscription_options(b: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if b & reserved != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits set",
        ));
    }
    let qos = QoS::from_u8(b & 0b11).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
    let retain_handling = match (b >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::Malformed("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: b & 0b0100 != 0,
        retain_as_published: b & 0b1000 != 0,
        retain_handling,
    })
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        read_props(r)?
    } else {
        Default::default()
    };
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let b = r.u8()?;
        let code = if v5 {
            parse_reason(b, SUBACK_CODES)?
        } else {
            reason_from_v311_suback(b)
                .ok_or(DecodeError::Malformed("reserved SUBACK return code"))?
        };
        reason_codes.push(code);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without return codes"));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let UserProperties(user_properties) = if v5 {
        read_props(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        user_properties,
        filters,
    })
}

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let mut unsuback = UnsubAck {
        packet_id: packet_id(r)?,
        ..UnsubAck::default()
    };
    if !v5 {
        return Ok(unsuback);
    }
    unsuback.properties = read_props(r)?;
    while !r.is_empty() {
        unsuback
            .reason_codes
            .push(parse_reason(r.u8()?, UNSUBACK_CODES)?);
    }
    if unsuback.reason_codes.is_empty() {
        return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
    }
    Ok(unsuback)
}

/// 3.1.1 DISCONNECT has no body; MQTT 5 may omit the properties, or both reason code and
/// properties (remaining length 0 means Normal disconnection).
fn disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    if !v5 || r.is_empty() {
        return Ok(disconnect);
    }
    disconnect.reason_code = parse_reason(r.u8()?, DISCONNECT_CODES)?;
    if !r.is_empty() {
        disconnect.properties = read_props(r)?;
    }
    Ok(disconnect)
}

/// AUTH (MQTT 5 only, guaranteed by `check_fixed_header`); remaining length 0 means Success.
fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth::default();
    if r.is_empty() {
        return Ok(auth);
    }
    auth.reason_code = parse_reason(r.u8()?, AUTH_CODES)?;
    if !r.is_empty() {
        auth.properties = read_props(r)?;
    }
    Ok(auth)
}
