//! MQTT 3.1.1 / 5.0 wire format: decode from `BytesMut`, encode into `BytesMut`. No I/O, no clock.
//!
//! (API contract; the implementation lives in the submodules.)

mod packet;

pub use packet::*;

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
        let _ = buf;
        unimplemented!("codec helper")
    }
}

/// Appends `packet` encoded for `protocol` to `buf`. MQTT 5-only fields are dropped for 3.1.x.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) {
    let _ = (packet, protocol, buf);
    unimplemented!("codec helper")
}

/// The number of bytes `encode` would append (to honour a peer's Maximum Packet Size).
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> usize {
    let _ = (packet, protocol);
    unimplemented!("codec helper")
}
