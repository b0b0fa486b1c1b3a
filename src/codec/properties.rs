//! MQTT 5 properties (§2.2.2): parsing one property at a time, folding them into each packet's
//! typed property struct (rejecting duplicates and properties the packet may not carry), and
//! writing them back. Never sees 3.1.1 packets: the callers skip properties for 3.1.x.

use bytes::Bytes;
use bytestring::ByteString;

use super::wire::{Counter, Reader, Sink};
use super::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DecodeError,
    DisconnectProperties, PublishProperties, QoS, SubscribeProperties, UserProperty,
    WillProperties,
};

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// One property as read off the wire, value already range-checked.
#[derive(Debug)]
pub(crate) enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(ByteString),
    ResponseTopic(ByteString),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(ByteString),
    ServerKeepAlive(u16),
    AuthenticationMethod(ByteString),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(ByteString),
    ServerReference(ByteString),
    ReasonString(ByteString),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(QoS),
    RetainAvailable(bool),
    User(ByteString, ByteString),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

const NOT_ALLOWED: DecodeError = DecodeError::Malformed("property not allowed in this packet");

fn flag(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("boolean property is neither 0 nor 1")),
    }
}

fn nonzero_u16(r: &mut Reader, what: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(what)),
        v => Ok(v),
    }
}

impl Property {
    fn read(r: &mut Reader) -> Result<Property, DecodeError> {
        // The identifier is a variable byte integer, but every defined one fits in one byte:
        // anything longer is an unknown identifier.
        let id = r.varint()?;
        let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property"))?;
        Ok(match id {
            PAYLOAD_FORMAT_INDICATOR => match r.u8()? {
                v @ (0 | 1) => Property::PayloadFormatIndicator(v),
                _ => {
                    return Err(DecodeError::Protocol(
                        "payload format indicator is neither 0 nor 1",
                    ));
                }
            },
            MESSAGE_EXPIRY_INTERVAL => Property::MessageExpiryInterval(r.u32()?),
            CONTENT_TYPE => Property::ContentType(r.string()?),
            RESPONSE_TOPIC => Property::ResponseTopic(r.string()?),
            CORRELATION_DATA => Property::CorrelationData(r.binary()?),
            SUBSCRIPTION_IDENTIFIER => match r.varint()? {
                0 => return Err(DecodeError::Protocol("subscription identifier 0")),
                v => Property::SubscriptionIdentifier(v),
            },
            SESSION_EXPIRY_INTERVAL => Property::SessionExpiryInterval(r.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => Property::AssignedClientIdentifier(r.string()?),
            SERVER_KEEP_ALIVE => Property::ServerKeepAlive(r.u16()?),
            AUTHENTICATION_METHOD => Property::AuthenticationMethod(r.string()?),
            AUTHENTICATION_DATA => Property::AuthenticationData(r.binary()?),
            REQUEST_PROBLEM_INFORMATION => Property::RequestProblemInformation(flag(r)?),
            WILL_DELAY_INTERVAL => Property::WillDelayInterval(r.u32()?),
            REQUEST_RESPONSE_INFORMATION => Property::RequestResponseInformation(flag(r)?),
            RESPONSE_INFORMATION => Property::ResponseInformation(r.string()?),
            SERVER_REFERENCE => Property::ServerReference(r.string()?),
            REASON_STRING => Property::ReasonString(r.string()?),
            RECEIVE_MAXIMUM => Property::ReceiveMaximum(nonzero_u16(r, "receive maximum 0")?),
            TOPIC_ALIAS_MAXIMUM => Property::TopicAliasMaximum(r.u16()?),
            TOPIC_ALIAS => Property::TopicAlias(nonzero_u16(r, "topic alias 0")?),
            MAXIMUM_QOS => match r.u8()? {
                0 => Property::MaximumQoS(QoS::AtMostOnce),
                1 => Property::MaximumQoS(QoS::AtLeastOnce),
                _ => return Err(DecodeError::Protocol("maximum QoS is neither 0 nor 1")),
            },
            RETAIN_AVAILABLE => Property::RetainAvailable(flag(r)?),
            USER_PROPERTY => Property::User(r.string()?, r.string()?),
            MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => return Err(DecodeError::Protocol("maximum packet size 0")),
                v => Property::MaximumPacketSize(v),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => Property::WildcardSubscriptionAvailable(flag(r)?),
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                Property::SubscriptionIdentifierAvailable(flag(r)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => Property::SharedSubscriptionAvailable(flag(r)?),
            _ => return Err(DecodeError::Malformed("unknown property")),
        })
    }
}

/// Stores a property that may appear at most once.
fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property appears more than once"));
    }
    *slot = Some(v);
    Ok(())
}

/// A property struct that can be filled from the wire.
pub(crate) trait DecodeProps: Default {
    /// Takes one property; Malformed if this packet type may not carry it.
    fn apply(&mut self, p: Property) -> Result<(), DecodeError>;
}

/// A property struct that can be written to the wire (without its length prefix).
pub(crate) trait EncodeProps {
    fn write<S: Sink>(&self, s: &mut S);
}

/// Reads a property length and the properties it covers into a fresh `P`.
pub(crate) fn read_props<P: DecodeProps>(r: &mut Reader) -> Result<P, DecodeError> {
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("property length"))?;
    let mut block = Reader::new(r.take(len)?);
    let mut props = P::default();
    while !block.is_empty() {
        props.apply(Property::read(&mut block)?)?;
    }
    Ok(props)
}

/// The length of a property block without its length prefix.
pub(crate) fn props_len<P: EncodeProps>(p: &P) -> usize {
    let mut c = Counter::default();
    p.write(&mut c);
    c.0
}

/// Writes the property length and then the properties.
pub(crate) fn put_props<P: EncodeProps, S: Sink>(p: &P, s: &mut S) {
    s.put_varint(props_len(p));
    p.write(s);
}

fn put_byte<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u8(v);
    }
}

fn put_flag<S: Sink>(s: &mut S, id: u8, v: Option<bool>) {
    put_byte(s, id, v.map(u8::from));
}

fn put_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u16(v);
    }
}

fn put_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u32(v);
    }
}

fn put_str<S: Sink>(s: &mut S, id: u8, v: Option<&ByteString>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_string(v);
    }
}

fn put_bin<S: Sink>(s: &mut S, id: u8, v: Option<&Bytes>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_binary(v);
    }
}

fn put_user<S: Sink>(s: &mut S, v: &[UserProperty]) {
    for (k, val) in v {
        s.put_u8(USER_PROPERTY);
        s.put_string(k);
        s.put_string(val);
    }
}

fn put_sub_id<S: Sink>(s: &mut S, v: u32) {
    s.put_u8(SUBSCRIPTION_IDENTIFIER);
    s.put_varint(v as usize);
}

impl DecodeProps for ConnectProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReceiveMaximum(v) => once(&mut self.receive_maximum, v),
            Property::MaximumPacketSize(v) => once(&mut self.maximum_packet_size, v),
            Property::TopicAliasMaximum(v) => once(&mut self.topic_alias_maximum, v),
            Property::RequestResponseInformation(v) => {
                once(&mut self.request_response_information, v)
            }
            Property::RequestProblemInformation(v) => {
                once(&mut self.request_problem_information, v)
            }
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        put_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_flag(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_flag(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_user(s, &self.user_properties);
        put_str(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        put_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_ref());
    }
}

impl DecodeProps for WillProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::WillDelayInterval(v) => once(&mut self.will_delay_interval, v),
            Property::PayloadFormatIndicator(v) => once(&mut self.payload_format_indicator, v),
            Property::MessageExpiryInterval(v) => once(&mut self.message_expiry_interval, v),
            Property::ContentType(v) => once(&mut self.content_type, v),
            Property::ResponseTopic(v) => once(&mut self.response_topic, v),
            Property::CorrelationData(v) => once(&mut self.correlation_data, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for WillProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_byte(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        put_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_str(s, CONTENT_TYPE, self.content_type.as_ref());
        put_str(s, RESPONSE_TOPIC, self.response_topic.as_ref());
        put_bin(s, CORRELATION_DATA, self.correlation_data.as_ref());
        put_user(s, &self.user_properties);
    }
}

impl DecodeProps for ConnAckProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReceiveMaximum(v) => once(&mut self.receive_maximum, v),
            Property::MaximumQoS(v) => once(&mut self.maximum_qos, v),
            Property::RetainAvailable(v) => once(&mut self.retain_available, v),
            Property::MaximumPacketSize(v) => once(&mut self.maximum_packet_size, v),
            Property::AssignedClientIdentifier(v) => once(&mut self.assigned_client_identifier, v),
            Property::TopicAliasMaximum(v) => once(&mut self.topic_alias_maximum, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::WildcardSubscriptionAvailable(v) => {
                once(&mut self.wildcard_subscription_available, v)
            }
            Property::SubscriptionIdentifierAvailable(v) => {
                once(&mut self.subscription_identifiers_available, v)
            }
            Property::SharedSubscriptionAvailable(v) => {
                once(&mut self.shared_subscription_available, v)
            }
            Property::ServerKeepAlive(v) => once(&mut self.server_keep_alive, v),
            Property::ResponseInformation(v) => once(&mut self.response_information, v),
            Property::ServerReference(v) => once(&mut self.server_reference, v),
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        // On the wire Maximum QoS is 0 or 1; QoS 2 is said by leaving the property out.
        let max_qos = match self.maximum_qos {
            Some(QoS::AtMostOnce) => Some(0),
            Some(QoS::AtLeastOnce) => Some(1),
            Some(QoS::ExactlyOnce) | None => None,
        };
        put_byte(s, MAXIMUM_QOS, max_qos);
        put_flag(s, RETAIN_AVAILABLE, self.retain_available);
        put_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_str(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_ref(),
        );
        put_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_str(s, REASON_STRING, self.reason_string.as_ref());
        put_user(s, &self.user_properties);
        put_flag(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_flag(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_flag(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_str(s, RESPONSE_INFORMATION, self.response_information.as_ref());
        put_str(s, SERVER_REFERENCE, self.server_reference.as_ref());
        put_str(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        put_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_ref());
    }
}

impl DecodeProps for PublishProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::PayloadFormatIndicator(v) => once(&mut self.payload_format_indicator, v),
            Property::MessageExpiryInterval(v) => once(&mut self.message_expiry_interval, v),
            Property::TopicAlias(v) => once(&mut self.topic_alias, v),
            Property::ResponseTopic(v) => once(&mut self.response_topic, v),
            Property::CorrelationData(v) => once(&mut self.correlation_data, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::SubscriptionIdentifier(v) => {
                self.subscription_identifiers.push(v);
                Ok(())
            }
            Property::ContentType(v) => once(&mut self.content_type, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for PublishProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_byte(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        put_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_u16(s, TOPIC_ALIAS, self.topic_alias);
        put_str(s, RESPONSE_TOPIC, self.response_topic.as_ref());
        put_bin(s, CORRELATION_DATA, self.correlation_data.as_ref());
        put_user(s, &self.user_properties);
        for &id in &self.subscription_identifiers {
            put_sub_id(s, id);
        }
        put_str(s, CONTENT_TYPE, self.content_type.as_ref());
    }
}

impl DecodeProps for AckProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for AckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_str(s, REASON_STRING, self.reason_string.as_ref());
        put_user(s, &self.user_properties);
    }
}

impl DecodeProps for SubscribeProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SubscriptionIdentifier(v) => once(&mut self.subscription_identifier, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for SubscribeProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        if let Some(id) = self.subscription_identifier {
            put_sub_id(s, id);
        }
        put_user(s, &self.user_properties);
    }
}

/// UNSUBSCRIBE carries only user properties, kept directly on `Unsubscribe`.
#[derive(Debug, Default)]
pub(crate) struct UserProperties(pub Vec<UserProperty>);

impl DecodeProps for UserProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::User(k, v) => {
                self.0.push((k, v));
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

/// Borrowed view used to encode UNSUBSCRIBE's user properties without cloning them.
pub(crate) struct UserPropertiesRef<'a>(pub &'a [UserProperty]);

impl EncodeProps for UserPropertiesRef<'_> {
    fn write<S: Sink>(&self, s: &mut S) {
        put_user(s, self.0);
    }
}

impl DecodeProps for DisconnectProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::ServerReference(v) => once(&mut self.server_reference, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for DisconnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_str(s, REASON_STRING, self.reason_string.as_ref());
        put_user(s, &self.user_properties);
        put_str(s, SERVER_REFERENCE, self.server_reference.as_ref());
    }
}

impl DecodeProps for AuthProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl EncodeProps for AuthProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_str(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        put_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_ref());
        put_str(s, REASON_STRING, self.reason_string.as_ref());
        put_user(s, &self.user_properties);
    }
}
