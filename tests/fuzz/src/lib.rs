//! Helpers shared by the fuzz targets of flockmq (`fuzz_targets/*.rs`): the MQTT checks, the
//! cluster configuration the link targets use, the operations of the stateful broker target, and
//! (in `seeds`) the generator of the committed seed corpus.

pub mod ops;
#[cfg(test)]
mod seeds;

use std::time::Duration;

use bytes::BytesMut;
use flockmq::cluster::{ClusterConfig, Discovery, NodeName};
use flockmq::codec::{DecodeError, Decoder, Packet, Protocol, encode, encoded_len};

// ---- MQTT --------------------------------------------------------------------------------------

/// The decoder state a mode byte selects: the protocol already spoken (`None`: a new server-side
/// connection waiting for CONNECT) and the maximum packet size.
pub fn mqtt_mode(mode: u8) -> (Option<Protocol>, usize) {
    let protocol = match mode & 0b11 {
        0 => None,
        1 => Some(Protocol::V31),
        2 => Some(Protocol::V311),
        _ => Some(Protocol::V5),
    };
    let max = match (mode >> 2) & 0b11 {
        0 => 1 << 20,
        1 => 64,
        2 => 1024,
        // The largest packet MQTT can express (256 MB of body plus a 5-byte fixed header).
        _ => 268_435_460,
    };
    (protocol, max)
}

/// What a decoder made of a stream: the packets (each with the protocol it was read with) and
/// how it ended: the error, or the number of bytes left waiting for more.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub packets: Vec<(Packet, Protocol)>,
    pub end: Result<usize, DecodeError>,
}

/// Decodes `pieces` arriving one after the other on one connection, taking every packet
/// available after each piece, until the decoder wants more bytes or fails.
pub fn decode_all(protocol: Option<Protocol>, max: usize, pieces: &[&[u8]]) -> Decoded {
    let mut decoder = Decoder::new(max);
    if let Some(p) = protocol {
        decoder.set_protocol(p);
    }
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    // A CONNECT sets the protocol; every other packet keeps it.
                    let p = decoder.protocol().unwrap_or_default();
                    packets.push((packet, p));
                }
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        packets,
                        end: Err(e),
                    };
                }
            }
        }
    }
    Decoded {
        packets,
        end: Ok(buf.len()),
    }
}

/// Encodes `packet` for `protocol`, checks `encoded_len`, and decodes it back on a connection
/// already speaking `protocol`.
pub fn encode_checked(packet: &Packet, protocol: Protocol) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf);
    assert_eq!(
        buf.len(),
        encoded_len(packet, protocol),
        "encoded_len disagrees with encode for {packet:?}"
    );
    buf
}

/// Decodes exactly one whole packet from `bytes` on a connection speaking `protocol`.
pub fn decode_one(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    let mut decoder = Decoder::new(usize::MAX);
    decoder.set_protocol(protocol);
    let mut buf = BytesMut::from(bytes);
    let packet = decoder.decode(&mut buf)?;
    if packet.is_some() {
        assert!(
            buf.is_empty(),
            "{} bytes after one encoded packet",
            buf.len()
        );
    }
    Ok(packet)
}

/// A packet that was decoded with `protocol` encodes, decodes back equal, and encodes again to
/// the same bytes.
pub fn check_mqtt_round_trip(packet: &Packet, protocol: Protocol) {
    let bytes = encode_checked(packet, protocol);
    let again = decode_one(&bytes, protocol);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(packet.clone())),
        "{packet:?} encoded for {protocol:?} as {bytes:02x?}"
    );
    assert_eq!(
        encode_checked(packet, protocol),
        bytes,
        "encoding is not deterministic"
    );
}

/// A packet the broker sends encodes to a frame that a client speaking `protocol` decodes, and
/// encoding what the client decoded gives the same bytes (the broker may leave MQTT 5 fields in
/// a packet for a 3.1.1 client: the encoder drops them, so only the bytes are compared).
pub fn check_sendable(packet: &Packet, protocol: Protocol) -> usize {
    let bytes = encode_checked(packet, protocol);
    if bytes.is_empty() {
        // AUTH for 3.1.x: the encoder writes nothing.
        assert!(
            matches!(packet, Packet::Auth(_)),
            "{packet:?} encoded to nothing"
        );
        return 0;
    }
    let decoded = match decode_one(&bytes, protocol) {
        Ok(Some(p)) => p,
        other => panic!("the broker sent {packet:?}, which decodes as {other:?}"),
    };
    assert_eq!(
        encode_checked(&decoded, protocol),
        bytes,
        "{packet:?} does not survive a round trip"
    );
    bytes.len()
}

// ---- cluster -----------------------------------------------------------------------------------

/// The cookie of the fuzzed cluster nodes.
pub const COOKIE: &str = "fuzz-cookie";
/// The cluster name of the fuzzed nodes.
pub const CLUSTER: &str = "flockmq";
/// The name of the fuzzed node.
pub const NODE: &str = "n1@10.0.0.1";
/// The name the fuzzer's peer uses when it completes a handshake.
pub const PEER: &str = "n2@10.0.0.2";
/// The heartbeat of the fuzzed nodes.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

/// A cluster core configuration like the cluster tests' (`src/cluster/tests.rs`).
pub fn cluster_config(discovery: Discovery, max_frame: usize) -> ClusterConfig {
    ClusterConfig {
        node: node(NODE),
        port: 4370,
        default_port: 4370,
        cluster_name: CLUSTER.into(),
        cookie: COOKIE.into(),
        discovery,
        seeds: Vec::new(),
        heartbeat: HEARTBEAT,
        autoheal: true,
        autoclean: Some(Duration::from_secs(60)),
        max_frame,
    }
}

/// Parses a node name that is known to be valid.
pub fn node(name: &str) -> NodeName {
    match name.parse() {
        Ok(n) => n,
        Err(e) => panic!("bad node name {name}: {e}"),
    }
}
