//! MQTT 3.1 / 3.1.1 / 5.0 wire format: decode from `BytesMut`, encode into `BytesMut`. No I/O,
//! no clock, never panics on bytes from the network.
//!
//! This file is the API contract; the work happens in the submodules: `wire` (data types),
//! `properties` (MQTT 5 properties), `decode` and `encode` (packet bodies), `reason` (reason code
//! tables and the 3.1.1 return code mappings).
//!
//! Choices the specs leave open, made here once:
//! - An empty PUBLISH (or will) topic without a topic alias is `TopicNameInvalid` for every
//!   protocol level (3.1.1 simply has no code to send for it).
//! - A reason code byte the spec does not define, or does not allow for that packet type, is
//!   `Malformed`. A CONNECT protocol name other than `MQTT`/`MQIsdp` is `Protocol`; a known name
//!   with an unknown level is `UnsupportedProtocol(level)`.
//! - A CONNECT is encoded for its own `Connect::protocol`, whatever protocol is passed in.
//! - MQTT 5 PUBACK..PUBCOMP are written in their shortest form. DISCONNECT and AUTH are written
//!   with length 0 for Success without properties, else with code AND property length: the
//!   code-only DISCONNECT is legal but rumqttc cannot read it (mosquitto writes the same).
//!   Every short form is accepted when decoding.
//! - AUTH does not exist before MQTT 5: for 3.1.x `encode` appends nothing and `encoded_len` is 0.
//! - Topic filters are not validated here (the broker answers a bad filter in SUBACK/UNSUBACK),
//!   nor are rules that depend on direction or session state (a client sending Subscription
//!   Identifiers in PUBLISH, Authentication Data without a method, a Response Topic with
//!   wildcards): the broker owns those.
//! - A non-minimal variable byte integer (e.g. `0x80 0x00`) is accepted, as mosquitto does.

mod decode;
mod encode;
mod packet;
mod properties;
mod reason;
mod wire;

#[cfg(test)]
mod tests;

pub use packet::*;
pub use reason::{
    AUTH_CODES, CONNACK_CODES, DISCONNECT_CODES, PUBACK_CODES, PUBREL_CODES, SUBACK_CODES,
    UNSUBACK_CODES, reason_from_v311_connack, reason_from_v311_suback, v311_connack_code,
    v311_suback_code,
};

use bytes::BytesMut;

/// Why a frame could not be decoded. Each error maps to the reason code the server sends
/// (MQTT 5) before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Structurally wrong bytes.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed but forbidden by the protocol in this place.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The remaining length announces more than the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    /// CONNECT named a protocol name/level we do not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedProtocol(u8),
    /// A PUBLISH topic name is invalid (wildcards, empty without alias, bad UTF-8 content).
    #[error("invalid topic name")]
    TopicNameInvalid,
}

impl DecodeError {
    /// The MQTT 5 reason code to put in the DISCONNECT (or CONNACK) that reports this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) => ReasonCode::ProtocolError,
            DecodeError::TooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocol(_) => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::TopicNameInvalid => ReasonCode::TopicNameInvalid,
        }
    }
}

/// Per-connection decoder state: the protocol level once CONNECT has been seen, and the limit.
#[derive(Debug, Clone)]
pub struct Decoder {
    protocol: Option<Protocol>,
    max_packet_size: usize,
}

impl Decoder {
    /// A decoder for a new server-side connection; frames longer than `max_packet_size` bytes
    /// (whole packet, fixed header included) are rejected as soon as their header is read.
    pub fn new(max_packet_size: usize) -> Decoder {
        Decoder {
            protocol: None,
            max_packet_size,
        }
    }

    /// The protocol level learned from CONNECT (or set by `set_protocol`).
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Fixes the protocol level (client side, or tests).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = Some(protocol);
    }

    /// Takes one complete packet off the front of `buf`. `Ok(None)` means more bytes are needed
    /// (nothing is consumed). A CONNECT sets the protocol used for the following packets.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        // Reject a wrong first packet, bad flags and oversize frames as soon as the header is
        // readable, so a hostile length never makes us buffer anything.
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        decode::check_fixed_header(first, self.protocol)?;
        let Some(header) = decode::fixed_header(buf)? else {
            return Ok(None);
        };
        let total = header.total();
        if total > self.max_packet_size {
            return Err(DecodeError::TooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        if buf.len() < total {
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        let body = frame.slice(header.header_len..);
        // Only a CONNECT gets past `check_fixed_header` while the protocol is unknown, and a
        // CONNECT is parsed by the level it names, so the fallback is never consulted.
        let protocol = self.protocol.unwrap_or(Protocol::V311);
        let packet = decode::packet(first, body, protocol)?;
        if let Packet::Connect(connect) = &packet {
            self.protocol = Some(connect.protocol);
        }
        Ok(Some(packet))
    }
}

/// Appends `packet` encoded for `protocol` to `buf`. MQTT 5-only fields are dropped for 3.1.x.
/// A CONNECT is encoded for its own `protocol` field; AUTH appends nothing for 3.1.x.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) {
    encode::encode(packet, protocol, buf);
}

/// The number of bytes `encode` would append (to honour a peer's Maximum Packet Size).
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> usize {
    encode::encoded_len(packet, protocol)
}
