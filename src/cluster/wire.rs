//! The inter-node wire format: length-prefixed frames (`u32` big-endian length, then a postcard
//! encoded [`LinkMessage`]), the messages themselves, and the borrowed encoding of a forwarded
//! publish so the publish path serialises straight from the broker's message without copying it.
//!
//! Pure functions of bytes: no I/O, no clock. Undecodable or oversize input is an error value,
//! never a panic.
//!
//! Versioning: the handshake's `Hello` / `Challenge` carry [`PROTOCOL_VERSION`]; a peer with
//! another version is refused before any other message is exchanged. The enum order of
//! `LinkMessage` is part of the protocol: new variants go at the end, and a change to an existing
//! variant bumps the version.

use bytes::{BufMut, Bytes, BytesMut};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};

use crate::codec::UserProperty;

/// Version of the link protocol spoken after the handshake (2: sequenced QoS >= 1 forwards with
/// acknowledgements and resume; 3: bulk sets such as the route set travel in bounded
/// [`LinkMessage::Bulk`] chunks instead of one `RoutesSync` frame; 4: retained messages carry
/// versions and converge on link up through `RetainedDigest` and `BulkBody::Retained`; route
/// messages are acknowledged with `RouteAck` so a SUBACK can wait until the cluster has the route).
pub const PROTOCOL_VERSION: u16 = 4;

/// Budget of the items of one bulk chunk. A chunk holds items up to this many bytes, or one
/// item alone when that item is larger (a topic filter never exceeds the largest MQTT packet, so
/// such a chunk still fits the link frame limit, which leaves room for the largest forward).
pub const BULK_CHUNK_BYTES: usize = 32 * 1024;

/// Room a forwarded publish needs on top of the MQTT packet it came from (topic, properties
/// and framing are re-encoded): `cluster.max_frame_size` must be at least
/// `mqtt.max_packet_size` plus this.
pub const FORWARD_OVERHEAD: usize = 64 * 1024;

/// Bytes of the length prefix of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// Size of a handshake nonce and of an HMAC-SHA256 proof.
pub const NONCE_LEN: usize = 32;

/// The postcard variant index of [`LinkMessage::Forward`]; the borrowed encoder writes it by
/// hand, a unit test pins it to the enum.
const FORWARD_TAG: u8 = 9;
/// The postcard variant index of [`LinkMessage::ForwardSeq`] (pinned by the same test).
const FORWARD_SEQ_TAG: u8 = 10;

/// One membership entry as gossiped between nodes: higher incarnation wins, and at equal
/// incarnation `left` wins (a leave is never undone without a new incarnation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// `name@host`.
    pub node: String,
    /// The member's cluster port.
    pub port: u16,
    /// The member's incarnation (its start time in ms, bumped to refute or leave).
    pub incarnation: u64,
    /// True once the member left (or was removed / cleaned).
    pub left: bool,
}

/// A publish forwarded from the node its client is connected to (decoded, owned form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedPublish {
    /// The topic name.
    pub topic: String,
    /// The application payload.
    pub payload: Vec<u8>,
    /// 0, 1 or 2: the QoS it was published with.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// Seconds left of its message expiry interval, if it has one.
    pub expiry: Option<u32>,
    /// MQTT 5 payload format indicator.
    pub payload_format_indicator: Option<u8>,
    /// MQTT 5 response topic.
    pub response_topic: Option<String>,
    /// MQTT 5 correlation data.
    pub correlation_data: Option<Vec<u8>>,
    /// MQTT 5 user properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 content type.
    pub content_type: Option<String>,
    /// For a retained publish: the version its value got on its origin node (hybrid logical
    /// clock, origin id), so that every node keeps the newest.
    pub retain_version: Option<(u64, u64)>,
}

/// The same fields as [`ForwardedPublish`], borrowed; serialises to identical bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ForwardRef<'a> {
    /// The topic name.
    pub topic: &'a str,
    /// The application payload.
    pub payload: &'a [u8],
    /// 0, 1 or 2.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// Seconds left of its message expiry interval.
    pub expiry: Option<u32>,
    /// MQTT 5 payload format indicator.
    pub payload_format_indicator: Option<u8>,
    /// MQTT 5 response topic.
    pub response_topic: Option<&'a str>,
    /// MQTT 5 correlation data.
    pub correlation_data: Option<&'a [u8]>,
    /// MQTT 5 user properties.
    pub user_properties: UserProps<'a>,
    /// MQTT 5 content type.
    pub content_type: Option<&'a str>,
    /// See [`ForwardedPublish::retain_version`].
    pub retain_version: Option<(u64, u64)>,
}

/// User properties serialised as a sequence of string pairs without copying them.
#[derive(Debug, Clone, Copy)]
pub struct UserProps<'a>(pub &'a [UserProperty]);

impl Serialize for UserProps<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (k, v) in self.0 {
            seq.serialize_element(&(&**k, &**v))?;
        }
        seq.end()
    }
}

/// Everything one node says to another over a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkMessage {
    /// Dialer → acceptor, first frame: who I am and my nonce.
    Hello {
        protocol: u16,
        cluster: String,
        node: String,
        port: u16,
        incarnation: u64,
        nonce: [u8; NONCE_LEN],
    },
    /// Acceptor → dialer: who I am, my nonce, and my proof over both nonces.
    Challenge {
        protocol: u16,
        cluster: String,
        node: String,
        port: u16,
        incarnation: u64,
        nonce: [u8; NONCE_LEN],
        proof: [u8; NONCE_LEN],
    },
    /// Dialer → acceptor: the dialer's proof over both nonces. The link is up after it.
    Proof { proof: [u8; NONCE_LEN] },
    /// Either side, before closing: why the link is refused (never says more than needed).
    Reject { reason: String },
    /// Sent every `cluster.heartbeat`; any frame proves the link alive.
    Heartbeat,
    /// The sender's whole member list (gossip; merged by incarnation).
    Members(Vec<MemberEntry>),
    /// Protocol 2's whole route set in one frame. Never sent since protocol 3 (see
    /// [`LinkMessage::Bulk`]); kept so the variant indices stay, refused as a protocol error.
    RoutesSync(Vec<String>),
    /// The sender gained its first local subscriber for this filter.
    RouteAdd(String),
    /// The sender lost its last local subscriber for this filter.
    RouteRemove(String),
    /// A publish for the receiver's local subscribers; never forwarded again. QoS 0 only.
    Forward(ForwardedPublish),
    /// A QoS >= 1 publish, numbered per (sender incarnation, receiver): the receiver delivers
    /// each number once and acknowledges; the sender keeps it until acknowledged and sends it
    /// again after a reconnect.
    ForwardSeq { seq: u64, publish: ForwardedPublish },
    /// The receiver has every `ForwardSeq` up to this number (cumulative).
    Ack(u64),
    /// First message after the handshake: the highest `ForwardSeq` number the sender got from
    /// the receiver's current incarnation (0: none). The receiver resends what follows it.
    Resume { received: u64 },
    /// One chunk of a bulk set (the sender's full route set; later retained sets and sessions):
    /// chunks of one `sync` arrive in `index` order on one link and the receiver applies the
    /// whole set when the `last` one arrives, never a part of it.
    Bulk(BulkChunk),
    /// Sent once after the handshake: the digest buckets of the sender's retained set. The
    /// receiver answers with a `BulkBody::Retained` set of its entries in the buckets that
    /// differ (possibly empty), so each side ends with the newer value of every topic.
    RetainedDigest(Vec<u64>),
    /// The receiver has applied this many route messages (deltas and whole sets) from the
    /// sender on this link; sent once per batch of frames read.
    RouteAck(u64),
}

impl LinkMessage {
    /// The variant's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            LinkMessage::Hello { .. } => "Hello",
            LinkMessage::Challenge { .. } => "Challenge",
            LinkMessage::Proof { .. } => "Proof",
            LinkMessage::Reject { .. } => "Reject",
            LinkMessage::Heartbeat => "Heartbeat",
            LinkMessage::Members(_) => "Members",
            LinkMessage::RoutesSync(_) => "RoutesSync",
            LinkMessage::RouteAdd(_) => "RouteAdd",
            LinkMessage::RouteRemove(_) => "RouteRemove",
            LinkMessage::Forward(_) => "Forward",
            LinkMessage::ForwardSeq { .. } => "ForwardSeq",
            LinkMessage::Ack(_) => "Ack",
            LinkMessage::Resume { .. } => "Resume",
            LinkMessage::Bulk(_) => "Bulk",
            LinkMessage::RetainedDigest(_) => "RetainedDigest",
            LinkMessage::RouteAck(_) => "RouteAck",
        }
    }
}

/// One bounded piece of a bulk set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkChunk {
    /// Which transfer this chunk belongs to (unique per sender and link).
    pub sync: u64,
    /// 0, 1, 2... within the transfer.
    pub index: u32,
    /// True on the final chunk: the receiver applies the set then.
    pub last: bool,
    /// The items of this chunk.
    pub body: BulkBody,
}

/// The items of one chunk, by kind of set. New kinds go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkBody {
    /// Topic filters of the sender's full local route set (replaces the receiver's copy).
    Routes(Vec<String>),
    /// Retained values and clears of the digest buckets where the receiver differs (merged by
    /// version, last writer wins).
    Retained(Vec<RetainedItem>),
}

/// One retained value (or clear: empty payload) with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedItem {
    /// The version: hybrid logical clock, then the origin node's id.
    pub version: (u64, u64),
    /// The retained publish (its `expiry` is what is left of it).
    pub publish: ForwardedPublish,
}

impl RetainedItem {
    /// Bytes it takes in a bulk chunk: at least its encoded size (strings and bytes with their
    /// length prefixes; fixed fields generously counted).
    pub fn wire_len(&self) -> usize {
        let p = &self.publish;
        let opt = |s: &Option<String>| s.as_deref().map_or(1, str_wire_len);
        64 + str_wire_len(&p.topic)
            + p.payload.len()
            + 10
            + opt(&p.response_topic)
            + p.correlation_data.as_ref().map_or(1, |d| d.len() + 10)
            + opt(&p.content_type)
            + p.user_properties
                .iter()
                .map(|(k, v)| str_wire_len(k) + str_wire_len(v))
                .sum::<usize>()
    }
}

impl BulkBody {
    /// Same kind of set as `other` (chunks of one transfer all have one kind).
    pub fn same_kind(&self, other: &BulkBody) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// Appends `other`'s items (of the same kind) to ours.
    pub fn append(&mut self, other: BulkBody) {
        match (self, other) {
            (BulkBody::Routes(ours), BulkBody::Routes(more)) => ours.extend(more),
            (BulkBody::Retained(ours), BulkBody::Retained(more)) => ours.extend(more),
            _ => {}
        }
    }
}

/// Bytes `s` takes in postcard: a varint length, then the UTF-8.
pub fn str_wire_len(s: &str) -> usize {
    let mut len = s.len();
    let mut prefix = 1;
    while len >= 0x80 {
        len >>= 7;
        prefix += 1;
    }
    prefix + s.len()
}

/// Splits `items` into chunks of at most `budget` bytes by `size` (a larger item goes alone),
/// in order. Always at least one chunk, so an empty set still travels (it clears the receiver).
pub fn split_bulk<T>(
    items: impl IntoIterator<Item = T>,
    budget: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut chunks = vec![Vec::new()];
    let mut used = 0;
    for item in items {
        let len = size(&item);
        if used > 0 && used + len > budget {
            chunks.push(Vec::new());
            used = 0;
        }
        used += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(item);
        }
    }
    chunks
}

/// Why bytes from a peer could not be turned into messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the link accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize { len: usize, max: usize },
    /// A zero-length frame: never sent by a flockmq node.
    #[error("empty frame")]
    Empty,
    /// The frame is not a message of this protocol version.
    #[error("undecodable frame ({0})")]
    Garbage(String),
}

/// Splits one complete frame off the front of `buf`: `Ok(None)` while more bytes are needed.
/// The returned payload excludes the length prefix.
pub fn split_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; LENGTH_PREFIX];
    len_bytes.copy_from_slice(prefix);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max_frame {
        return Err(FrameError::Oversize {
            len,
            max: max_frame,
        });
    }
    if buf.len() < LENGTH_PREFIX + len {
        buf.reserve(LENGTH_PREFIX + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(LENGTH_PREFIX + len);
    let _ = frame.split_to(LENGTH_PREFIX);
    Ok(Some(frame.freeze()))
}

/// Decodes a frame payload (without its length prefix).
pub fn decode(payload: &[u8]) -> Result<LinkMessage, FrameError> {
    match postcard::from_bytes::<LinkMessage>(payload) {
        Ok(msg) => Ok(msg),
        Err(e) => Err(FrameError::Garbage(e.to_string())),
    }
}

/// Encodes `msg` as one whole frame (length prefix included).
pub fn encode(msg: &LinkMessage) -> Bytes {
    let mut buf = BytesMut::new();
    encode_into(&mut buf, |buf| postcard::to_extend(msg, buf));
    buf.freeze()
}

/// Encodes a forwarded publish straight from borrowed fields, as one whole frame; `buf` is a
/// scratch buffer reused across calls.
pub fn encode_forward(publish: &ForwardRef<'_>, buf: &mut BytesMut) -> Bytes {
    buf.clear();
    encode_into(buf, |mut buf| {
        buf.put_u8(FORWARD_TAG);
        postcard::to_extend(publish, buf)
    });
    buf.split().freeze()
}

/// Like [`encode_forward`], as a numbered `ForwardSeq` frame.
pub fn encode_forward_seq(publish: &ForwardRef<'_>, seq: u64, buf: &mut BytesMut) -> Bytes {
    buf.clear();
    encode_into(buf, |mut buf| {
        buf.put_u8(FORWARD_SEQ_TAG);
        let buf = postcard::to_extend(&seq, buf)?;
        postcard::to_extend(publish, buf)
    });
    buf.split().freeze()
}

/// Writes a placeholder length prefix, lets `body` append the payload, then patches the length.
fn encode_into(buf: &mut BytesMut, body: impl FnOnce(BytesMut) -> postcard::Result<BytesMut>) {
    let start = buf.len();
    buf.put_u32(0);
    match body(std::mem::take(buf)) {
        Ok(done) => *buf = done,
        // Serialising plain data cannot fail; an error would be a bug in the types.
        Err(e) => tracing::error!(error = %e, "cannot encode a link message"),
    }
    let len = buf.len().saturating_sub(start + LENGTH_PREFIX);
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    if let Some(prefix) = buf.get_mut(start..start + LENGTH_PREFIX) {
        prefix.copy_from_slice(&len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn sample_forward() -> ForwardedPublish {
        ForwardedPublish {
            topic: "t/a".into(),
            payload: b"hello".to_vec(),
            qos: 1,
            retain: true,
            expiry: Some(30),
            payload_format_indicator: Some(1),
            response_topic: Some("r/1".into()),
            correlation_data: Some(vec![1, 2, 3]),
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("text/plain".into()),
            retain_version: Some((1 << 20, 7)),
        }
    }

    #[test]
    fn borrowed_forward_decodes_as_the_owned_message() {
        let owned = sample_forward();
        let props = [(ByteString::from("k"), ByteString::from("v"))];
        let borrowed = ForwardRef {
            topic: "t/a",
            payload: b"hello",
            qos: 1,
            retain: true,
            expiry: Some(30),
            payload_format_indicator: Some(1),
            response_topic: Some("r/1"),
            correlation_data: Some(&[1, 2, 3]),
            user_properties: UserProps(&props),
            content_type: Some("text/plain"),
            retain_version: Some((1 << 20, 7)),
        };
        let frame = encode_forward_seq(&borrowed, 300, &mut BytesMut::new());
        let seq = LinkMessage::ForwardSeq {
            seq: 300,
            publish: owned.clone(),
        };
        assert_eq!(frame, encode(&seq));
        let payload = frame.slice(LENGTH_PREFIX..);
        assert_eq!(decode(&payload).unwrap(), seq);
        let frame = encode_forward(&borrowed, &mut BytesMut::new());
        assert_eq!(frame, encode(&LinkMessage::Forward(owned.clone())));
        let mut buf = BytesMut::from(&frame[..]);
        let payload = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode(&payload).unwrap(), LinkMessage::Forward(owned));
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_split_only_when_complete() {
        let frame = encode(&LinkMessage::RouteAdd("t/#".into()));
        let mut buf = BytesMut::new();
        for (i, byte) in frame.iter().enumerate() {
            assert_eq!(split_frame(&mut buf, 1024).unwrap(), None, "at byte {i}");
            buf.put_u8(*byte);
        }
        let payload = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(
            decode(&payload).unwrap(),
            LinkMessage::RouteAdd("t/#".into())
        );
    }

    #[test]
    fn oversize_and_empty_frames_are_errors() {
        let mut buf = BytesMut::from(&[0u8, 0, 4, 1, 0][..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(FrameError::Oversize {
                len: 1025,
                max: 1024
            })
        );
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(split_frame(&mut buf, 1024), Err(FrameError::Empty));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode(&[0xff; 7]), Err(FrameError::Garbage(_))));
        assert!(matches!(decode(&[]), Err(FrameError::Garbage(_))));
        // A Hello cut short.
        let frame = encode(&LinkMessage::Hello {
            protocol: PROTOCOL_VERSION,
            cluster: "c".into(),
            node: "n@h".into(),
            port: 1,
            incarnation: 2,
            nonce: [7; NONCE_LEN],
        });
        let cut = frame.get(LENGTH_PREFIX..frame.len() - 3).unwrap();
        assert!(matches!(decode(cut), Err(FrameError::Garbage(_))));
    }

    #[test]
    fn bulk_chunks_stay_within_the_budget_and_keep_every_item_in_order() {
        let filters: Vec<String> = (0..60_000)
            .map(|i| format!("hog/{:05}/{:03}/sensor-value", i / 1000, i % 1000))
            .collect();
        let chunks = split_bulk(filters.clone(), BULK_CHUNK_BYTES, |f| str_wire_len(f));
        assert!(chunks.len() > 40, "{} chunks", chunks.len());
        let mut again = Vec::new();
        for (i, items) in chunks.into_iter().enumerate() {
            let frame = encode(&LinkMessage::Bulk(BulkChunk {
                sync: u64::MAX,
                index: u32::MAX,
                last: true,
                body: BulkBody::Routes(items.clone()),
            }));
            assert!(
                frame.len() <= BULK_CHUNK_BYTES + 64,
                "chunk {i}: {}",
                frame.len()
            );
            again.extend(items);
        }
        assert_eq!(again, filters);
        // One oversized item goes alone; an empty set is one empty chunk.
        let big = "x".repeat(BULK_CHUNK_BYTES * 2);
        let chunks = split_bulk(
            vec!["a".to_string(), big, "b".into()],
            BULK_CHUNK_BYTES,
            |f| str_wire_len(f),
        );
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        assert_eq!(
            split_bulk(Vec::<String>::new(), 10, |f| f.len()),
            vec![Vec::<String>::new()]
        );
        for n in [0, 1, 127, 128, 20_000] {
            let s = "y".repeat(n);
            assert_eq!(
                str_wire_len(&s),
                postcard::to_allocvec(&s).unwrap().len(),
                "{n}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = split_frame(&mut buf, 64) {
                let _ = decode(&frame);
            }
        }
    }
}
