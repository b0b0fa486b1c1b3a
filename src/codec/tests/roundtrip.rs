//! Round trips (encode then decode gives the packet back, `encoded_len` is exact), streaming
//! (one byte at a time gives the same packets) and robustness (no input panics the decoder).

use bytes::{BufMut, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies::{connect, packet};
use crate::codec::*;

/// Encodes `packet`, checks `encoded_len` against the bytes written, and decodes it again on a
/// connection already speaking `protocol`.
fn round_trip(packet: &Packet, protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf);
    assert_eq!(
        buf.len(),
        encoded_len(packet, protocol),
        "encoded_len disagrees with encode"
    );
    let mut decoder = Decoder::new(usize::MAX);
    decoder.set_protocol(protocol);
    let decoded = decoder.decode(&mut buf)?;
    assert!(
        buf.is_empty(),
        "decoder left {} bytes of a single frame",
        buf.len()
    );
    Ok(decoded)
}

/// Keeps decoding until the decoder wants more bytes or fails; panics are the only failure.
fn drain(decoder: &mut Decoder, buf: &mut BytesMut) {
    while let Ok(Some(_)) = decoder.decode(buf) {}
}

fn protocol() -> impl Strategy<Value = Option<Protocol>> {
    proptest::option::of(proptest::sample::select(vec![
        Protocol::V31,
        Protocol::V311,
        Protocol::V5,
    ]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn v5_packets_round_trip(p in packet(Protocol::V5)) {
        prop_assert_eq!(round_trip(&p, Protocol::V5), Ok(Some(p)));
    }

    #[test]
    fn v311_packets_round_trip(p in packet(Protocol::V311)) {
        prop_assert_eq!(round_trip(&p, Protocol::V311), Ok(Some(p)));
    }

    #[test]
    fn v5_properties_are_dropped_for_v311(p in packet(Protocol::V5)) {
        // Whatever an MQTT 5 packet carries, its 3.1.1 form must still be a valid 3.1.1 frame
        // (AUTH has none, CONNECT keeps its own level, an aliased empty topic needs MQTT 5).
        let aliased = matches!(&p, Packet::Publish(p) if p.topic.is_empty());
        if !aliased && !matches!(p, Packet::Auth(_) | Packet::Connect(_)) {
            let decoded = round_trip(&p, Protocol::V311);
            prop_assert!(matches!(decoded, Ok(Some(_))), "{:?}", decoded);
        }
    }

    #[test]
    fn byte_at_a_time_stream_yields_the_same_packets(
        first in connect(Protocol::V5),
        rest in vec(packet(Protocol::V5), 0..8),
    ) {
        let packets: Vec<Packet> = std::iter::once(first).chain(rest).collect();
        let mut wire = BytesMut::new();
        for p in &packets {
            encode(p, Protocol::V5, &mut wire);
        }
        let mut decoder = Decoder::new(usize::MAX);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &b in wire.iter() {
            buf.put_u8(b);
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Some(p)) => decoded.push(p),
                    Ok(None) => {
                        prop_assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                        break;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256), protocol in protocol()) {
        let mut decoder = Decoder::new(1024);
        if let Some(p) = protocol {
            decoder.set_protocol(p);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        drain(&mut decoder, &mut buf);
    }

    #[test]
    fn mutated_frames_never_panic(
        p in packet(Protocol::V5),
        edits in vec((any::<usize>(), any::<u8>()), 1..4),
        protocol in protocol(),
    ) {
        let mut buf = BytesMut::new();
        encode(&p, Protocol::V5, &mut buf);
        for (at, b) in edits {
            let len = buf.len();
            if let Some(slot) = buf.get_mut(at % len) {
                *slot = b;
            }
        }
        let mut decoder = Decoder::new(usize::MAX);
        if let Some(p) = protocol {
            decoder.set_protocol(p);
        }
        drain(&mut decoder, &mut buf);
    }
}
