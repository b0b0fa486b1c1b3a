//! Reason codes on the wire: which MQTT 5 codes each packet type may carry, and the 3.1.1
//! CONNACK / SUBACK return codes they map to. Owns no state and never reads a stream.

use super::{DecodeError, QoS, ReasonCode};

impl TryFrom<u8> for ReasonCode {
    type Error = DecodeError;

    /// Parses any MQTT 5 reason code byte; bytes the spec does not define are malformed.
    fn try_from(v: u8) -> Result<ReasonCode, DecodeError> {
        use ReasonCode::*;
        Ok(match v {
            0x00 => Success,
            0x01 => GrantedQoS1,
            0x02 => GrantedQoS2,
            0x04 => DisconnectWithWillMessage,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QoSNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return Err(DecodeError::Malformed("unknown reason code")),
        })
    }
}

use ReasonCode as R;

/// Reason codes a CONNACK may carry (MQTT 5 §3.2.2.2).
pub const CONNACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::UnsupportedProtocolVersion,
    R::ClientIdentifierNotValid,
    R::BadUserNameOrPassword,
    R::NotAuthorized,
    R::ServerUnavailable,
    R::ServerBusy,
    R::Banned,
    R::BadAuthenticationMethod,
    R::TopicNameInvalid,
    R::PacketTooLarge,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::ConnectionRateExceeded,
];

/// Reason codes a PUBACK or PUBREC may carry (MQTT 5 §3.4.2.1, §3.5.2.1).
pub const PUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::NoMatchingSubscribers,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicNameInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
];

/// Reason codes a PUBREL or PUBCOMP may carry (MQTT 5 §3.6.2.1, §3.7.2.1).
pub const PUBREL_CODES: &[ReasonCode] = &[R::Success, R::PacketIdentifierNotFound];

/// Reason codes a SUBACK may carry (MQTT 5 §3.9.3).
pub const SUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::GrantedQoS1,
    R::GrantedQoS2,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::SharedSubscriptionsNotSupported,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];

/// Reason codes an UNSUBACK may carry (MQTT 5 §3.11.3).
pub const UNSUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::NoSubscriptionExisted,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
];

/// Reason codes a DISCONNECT may carry (MQTT 5 §3.14.2.1).
pub const DISCONNECT_CODES: &[ReasonCode] = &[
    R::Success,
    R::DisconnectWithWillMessage,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::ServerBusy,
    R::ServerShuttingDown,
    R::KeepAliveTimeout,
    R::SessionTakenOver,
    R::TopicFilterInvalid,
    R::TopicNameInvalid,
    R::ReceiveMaximumExceeded,
    R::TopicAliasInvalid,
    R::PacketTooLarge,
    R::MessageRateTooHigh,
    R::QuotaExceeded,
    R::AdministrativeAction,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::SharedSubscriptionsNotSupported,
    R::ConnectionRateExceeded,
    R::MaximumConnectTime,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];

/// Reason codes an AUTH may carry (MQTT 5 §3.15.2.1).
pub const AUTH_CODES: &[ReasonCode] = &[R::Success, R::ContinueAuthentication, R::ReAuthenticate];

/// Parses a reason code byte and checks that `allowed` (one of the tables above) contains it.
/// A code the packet type may not carry is treated like an unknown code: malformed.
pub(crate) fn parse_reason(v: u8, allowed: &[ReasonCode]) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode::try_from(v)?;
    if allowed.contains(&code) {
        Ok(code)
    } else {
        Err(DecodeError::Malformed(
            "reason code not allowed for this packet type",
        ))
    }
}

/// The MQTT 3.1.1 CONNACK return code that best reports `code` to a 3.1.x client.
pub fn v311_connack_code(code: ReasonCode) -> u8 {
    match code {
        R::Success => 0,
        R::UnsupportedProtocolVersion => 1,
        R::ClientIdentifierNotValid => 2,
        R::BadUserNameOrPassword => 4,
        R::NotAuthorized => 5,
        // 3.1.1 has no finer codes; "server unavailable" is the closest refusal for the rest
        // (and refusing is the safe reading of a non-error code that has no place in CONNACK).
        _ => 3,
    }
}

/// The reason code a 3.1.1 CONNACK return code stands for; `None` for the reserved values 6..=255.
pub fn reason_from_v311_connack(code: u8) -> Option<ReasonCode> {
    Some(match code {
        0 => R::Success,
        1 => R::UnsupportedProtocolVersion,
        2 => R::ClientIdentifierNotValid,
        3 => R::ServerUnavailable,
        4 => R::BadUserNameOrPassword,
        5 => R::NotAuthorized,
        _ => return None,
    })
}

/// The MQTT 3.1.1 SUBACK return code for `code`: the granted QoS, or 0x80 for any failure.
pub fn v311_suback_code(code: ReasonCode) -> u8 {
    match code {
        R::Success => 0,
        R::GrantedQoS1 => 1,
        R::GrantedQoS2 => 2,
        _ => 0x80,
    }
}

/// The reason code a 3.1.1 SUBACK return code stands for; `None` for reserved values.
pub fn reason_from_v311_suback(code: u8) -> Option<ReasonCode> {
    Some(match code {
        0 => ReasonCode::granted(QoS::AtMostOnce),
        1 => ReasonCode::granted(QoS::AtLeastOnce),
        2 => ReasonCode::granted(QoS::ExactlyOnce),
        0x80 => R::UnspecifiedError,
        _ => return None,
    })
}
