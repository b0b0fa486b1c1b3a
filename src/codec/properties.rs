//! MQTT 5 properties (§2.2.2): parsing one property at a time, folding them into each packet's
//! typed property struct (rejecting duplicates and properties the packet may not carry), and
//! writing them back. Never sees 3.1.1 packets: the callers skip properties for 3.1.x.
//!
//! Declared once: `property_kinds!` lists every property with its identifier, value type and how
//! its value is read (with its range checks) and written; `property_struct!` lists, in wire order,
//! which properties each packet's struct carries. Both the decoder and the encoder of every struct
//! are generated from those two lists, so they cannot drift apart.

use bytes::Bytes;
use bytestring::ByteString;

use super::wire::{Counter, Reader, Sink};
use super::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DecodeError,
    DisconnectProperties, PublishProperties, QoS, SubscribeProperties, UserProperty,
    WillProperties,
};

/// One kind of property: its identifier and the wire form of its value.
trait Kind {
    type Value;
    fn read(r: &mut Reader) -> Result<Self::Value, DecodeError>;
    /// Writes identifier and value (a value without a wire form writes nothing).
    fn put<S: Sink>(v: &Self::Value, s: &mut S);
}

macro_rules! property_kinds {
    ($( $kind:ident = $id:literal : $ty:ty, $read:ident, $put:ident; )*) => {
        /// One property as read off the wire, value already range-checked.
        #[derive(Debug)]
        pub(crate) enum Property {
            $( $kind($ty), )*
        }

        /// A marker type per property kind, so a packet's property list can name its kinds.
        mod kind {
            $( pub(super) struct $kind; )*
        }

        $(
            impl Kind for kind::$kind {
                type Value = $ty;
                fn read(r: &mut Reader) -> Result<$ty, DecodeError> {
                    $read(r)
                }
                fn put<S: Sink>(v: &$ty, s: &mut S) {
                    $put(s, $id, v)
                }
            }
        )*

        impl Property {
            fn read(r: &mut Reader) -> Result<Property, DecodeError> {
                // The identifier is a variable byte integer, but every defined one fits in one
                // byte: anything longer is an unknown identifier.
                let id = r.varint()?;
                let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property"))?;
                match id {
                    $( $id => Ok(Property::$kind(<kind::$kind as Kind>::read(r)?)), )*
                    _ => Err(DecodeError::Malformed("unknown property")),
                }
            }
        }
    };
}

property_kinds! {
    PayloadFormatIndicator = 0x01: u8, read_format_indicator, put_u8;
    MessageExpiryInterval = 0x02: u32, read_u32, put_u32;
    ContentType = 0x03: ByteString, read_string, put_string;
    ResponseTopic = 0x08: ByteString, read_string, put_string;
    CorrelationData = 0x09: Bytes, read_binary, put_binary;
    SubscriptionIdentifier = 0x0B: u32, read_subscription_identifier, put_varint;
    SessionExpiryInterval = 0x11: u32, read_u32, put_u32;
    AssignedClientIdentifier = 0x12: ByteString, read_string, put_string;
    ServerKeepAlive = 0x13: u16, read_u16, put_u16;
    AuthenticationMethod = 0x15: ByteString, read_string, put_string;
    AuthenticationData = 0x16: Bytes, read_binary, put_binary;
    RequestProblemInformation = 0x17: bool, read_flag, put_flag;
    WillDelayInterval = 0x18: u32, read_u32, put_u32;
    RequestResponseInformation = 0x19: bool, read_flag, put_flag;
    ResponseInformation = 0x1A: ByteString, read_string, put_string;
    ServerReference = 0x1C: ByteString, read_string, put_string;
    ReasonString = 0x1F: ByteString, read_string, put_string;
    ReceiveMaximum = 0x21: u16, read_receive_maximum, put_u16;
    TopicAliasMaximum = 0x22: u16, read_u16, put_u16;
    TopicAlias = 0x23: u16, read_topic_alias, put_u16;
    MaximumQoS = 0x24: QoS, read_maximum_qos, put_maximum_qos;
    RetainAvailable = 0x25: bool, read_flag, put_flag;
    User = 0x26: UserProperty, read_user, put_user;
    MaximumPacketSize = 0x27: u32, read_maximum_packet_size, put_u32;
    WildcardSubscriptionAvailable = 0x28: bool, read_flag, put_flag;
    SubscriptionIdentifierAvailable = 0x29: bool, read_flag, put_flag;
    SharedSubscriptionAvailable = 0x2A: bool, read_flag, put_flag;
}

const NOT_ALLOWED: DecodeError = DecodeError::Malformed("property not allowed in this packet");

fn read_u16(r: &mut Reader) -> Result<u16, DecodeError> {
    r.u16()
}

fn read_u32(r: &mut Reader) -> Result<u32, DecodeError> {
    r.u32()
}

fn read_string(r: &mut Reader) -> Result<ByteString, DecodeError> {
    r.string()
}

fn read_binary(r: &mut Reader) -> Result<Bytes, DecodeError> {
    r.binary()
}

fn read_user(r: &mut Reader) -> Result<UserProperty, DecodeError> {
    Ok((r.string()?, r.string()?))
}

fn read_flag(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("boolean property is neither 0 nor 1")),
    }
}

fn read_format_indicator(r: &mut Reader) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol(
            "payload format indicator is neither 0 nor 1",
        )),
    }
}

fn read_subscription_identifier(r: &mut Reader) -> Result<u32, DecodeError> {
    match r.varint()? {
        0 => Err(DecodeError::Protocol("subscription identifier 0")),
        v => Ok(v),
    }
}

fn read_receive_maximum(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("receive maximum 0")),
        v => Ok(v),
    }
}

fn read_topic_alias(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("topic alias 0")),
        v => Ok(v),
    }
}

fn read_maximum_qos(r: &mut Reader) -> Result<QoS, DecodeError> {
    match r.u8()? {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => Err(DecodeError::Protocol("maximum QoS is neither 0 nor 1")),
    }
}

fn read_maximum_packet_size(r: &mut Reader) -> Result<u32, DecodeError> {
    match r.u32()? {
        0 => Err(DecodeError::Protocol("maximum packet size 0")),
        v => Ok(v),
    }
}

fn put_u8<S: Sink>(s: &mut S, id: u8, v: &u8) {
    s.put_u8(id);
    s.put_u8(*v);
}

fn put_flag<S: Sink>(s: &mut S, id: u8, v: &bool) {
    put_u8(s, id, &u8::from(*v));
}

fn put_u16<S: Sink>(s: &mut S, id: u8, v: &u16) {
    s.put_u8(id);
    s.put_u16(*v);
}

fn put_u32<S: Sink>(s: &mut S, id: u8, v: &u32) {
    s.put_u8(id);
    s.put_u32(*v);
}

fn put_varint<S: Sink>(s: &mut S, id: u8, v: &u32) {
    s.put_u8(id);
    s.put_varint(*v as usize);
}

fn put_string<S: Sink>(s: &mut S, id: u8, v: &ByteString) {
    s.put_u8(id);
    s.put_string(v);
}

fn put_binary<S: Sink>(s: &mut S, id: u8, v: &Bytes) {
    s.put_u8(id);
    s.put_binary(v);
}

fn put_user<S: Sink>(s: &mut S, id: u8, (k, v): &UserProperty) {
    s.put_u8(id);
    s.put_string(k);
    s.put_string(v);
}

/// On the wire Maximum QoS is 0 or 1; QoS 2 is said by leaving the property out.
fn put_maximum_qos<S: Sink>(s: &mut S, id: u8, v: &QoS) {
    match v {
        QoS::AtMostOnce => put_u8(s, id, &0),
        QoS::AtLeastOnce => put_u8(s, id, &1),
        QoS::ExactlyOnce => {}
    }
}

/// A struct field holding a property: `Option` for one that may appear once, `Vec` for one that
/// may repeat (user properties, a PUBLISH's subscription identifiers).
trait Slot<V> {
    fn fill(&mut self, v: V) -> Result<(), DecodeError>;
    fn values(&self) -> &[V];
}

impl<V> Slot<V> for Option<V> {
    fn fill(&mut self, v: V) -> Result<(), DecodeError> {
        if self.is_some() {
            return Err(DecodeError::Protocol("property appears more than once"));
        }
        *self = Some(v);
        Ok(())
    }
    fn values(&self) -> &[V] {
        self.as_slice()
    }
}

impl<V> Slot<V> for Vec<V> {
    fn fill(&mut self, v: V) -> Result<(), DecodeError> {
        self.push(v);
        Ok(())
    }
    fn values(&self) -> &[V] {
        self
    }
}

/// Writes every value of one field as property `K`.
fn put_slot<K: Kind, S: Sink>(slot: &impl Slot<K::Value>, s: &mut S) {
    for v in slot.values() {
        K::put(v, s);
    }
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

/// Generates `DecodeProps` and `EncodeProps` of a packet's property struct from its fields and
/// their property kinds, listed in the order they are written.
macro_rules! property_struct {
    ($ty:ty { $( $field:tt: $kind:ident ),* $(,)? }) => {
        impl DecodeProps for $ty {
            fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
                match p {
                    $( Property::$kind(v) => Slot::fill(&mut self.$field, v), )*
                    _ => Err(NOT_ALLOWED),
                }
            }
        }

        impl EncodeProps for $ty {
            fn write<S: Sink>(&self, s: &mut S) {
                $( put_slot::<kind::$kind, S>(&self.$field, s); )*
            }
        }
    };
}

property_struct!(ConnectProperties {
    session_expiry_interval: SessionExpiryInterval,
    receive_maximum: ReceiveMaximum,
    maximum_packet_size: MaximumPacketSize,
    topic_alias_maximum: TopicAliasMaximum,
    request_response_information: RequestResponseInformation,
    request_problem_information: RequestProblemInformation,
    user_properties: User,
    authentication_method: AuthenticationMethod,
    authentication_data: AuthenticationData,
});

property_struct!(WillProperties {
    will_delay_interval: WillDelayInterval,
    payload_format_indicator: PayloadFormatIndicator,
    message_expiry_interval: MessageExpiryInterval,
    content_type: ContentType,
    response_topic: ResponseTopic,
    correlation_data: CorrelationData,
    user_properties: User,
});

property_struct!(ConnAckProperties {
    session_expiry_interval: SessionExpiryInterval,
    receive_maximum: ReceiveMaximum,
    maximum_qos: MaximumQoS,
    retain_available: RetainAvailable,
    maximum_packet_size: MaximumPacketSize,
    assigned_client_identifier: AssignedClientIdentifier,
    topic_alias_maximum: TopicAliasMaximum,
    reason_string: ReasonString,
    user_properties: User,
    wildcard_subscription_available: WildcardSubscriptionAvailable,
    subscription_identifiers_available: SubscriptionIdentifierAvailable,
    shared_subscription_available: SharedSubscriptionAvailable,
    server_keep_alive: ServerKeepAlive,
    response_information: ResponseInformation,
    server_reference: ServerReference,
    authentication_method: AuthenticationMethod,
    authentication_data: AuthenticationData,
});

property_struct!(PublishProperties {
    payload_format_indicator: PayloadFormatIndicator,
    message_expiry_interval: MessageExpiryInterval,
    topic_alias: TopicAlias,
    response_topic: ResponseTopic,
    correlation_data: CorrelationData,
    user_properties: User,
    subscription_identifiers: SubscriptionIdentifier,
    content_type: ContentType,
});

property_struct!(AckProperties {
    reason_string: ReasonString,
    user_properties: User,
});

property_struct!(SubscribeProperties {
    subscription_identifier: SubscriptionIdentifier,
    user_properties: User,
});

property_struct!(DisconnectProperties {
    session_expiry_interval: SessionExpiryInterval,
    reason_string: ReasonString,
    user_properties: User,
    server_reference: ServerReference,
});

property_struct!(AuthProperties {
    authentication_method: AuthenticationMethod,
    authentication_data: AuthenticationData,
    reason_string: ReasonString,
    user_properties: User,
});

/// UNSUBSCRIBE carries only user properties, kept directly on `Unsubscribe`.
#[derive(Debug, Default)]
pub(crate) struct UserProperties(pub Vec<UserProperty>);

property_struct!(UserProperties { 0: User });

/// Borrowed view used to encode UNSUBSCRIBE's user properties without cloning them.
pub(crate) struct UserPropertiesRef<'a>(pub &'a [UserProperty]);

impl EncodeProps for UserPropertiesRef<'_> {
    fn write<S: Sink>(&self, s: &mut S) {
        for user in self.0 {
            <kind::User as Kind>::put(user, s);
        }
    }
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
