//! The cluster link framing and message decoder on arbitrary bytes from a peer.
//!
//! Input: `[limit, split, stream...]`. `limit` picks the frame size limit (the pre-handshake
//! limit, a small one or the default `cluster.max_frame_size`), `split` where the stream is cut
//! in two. Checked:
//! - `wire::split_frame` and `wire::decode` never panic;
//! - the stream fed whole and in two pieces gives the same frames and the same end;
//! - every decoded message encodes (`wire::encode`) to a frame with a correct length prefix
//!   that decodes to an equal message and encodes again to the same bytes;
//! - a decoded `Forward` / `ForwardSeq` encodes to the same bytes through the borrowed encoders
//!   (`encode_forward`, `encode_forward_seq`), as their documentation promises.
#![no_main]

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use flockmq::cluster::PREAUTH_MAX_FRAME;
use flockmq::cluster::wire::{
    self, ForwardRef, ForwardedPublish, FrameError, LENGTH_PREFIX, LinkMessage, UserProps,
};
use libfuzzer_sys::fuzz_target;

fn split_all(max: usize, pieces: &[&[u8]]) -> (Vec<Bytes>, Result<usize, FrameError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match wire::split_frame(&mut buf, max) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Err(e)),
            }
        }
    }
    (frames, Ok(buf.len()))
}

fn forward_ref<'a>(
    p: &'a ForwardedPublish,
    props: &'a [(ByteString, ByteString)],
) -> ForwardRef<'a> {
    ForwardRef {
        topic: &p.topic,
        payload: &p.payload,
        qos: p.qos,
        retain: p.retain,
        expiry: p.expiry,
        payload_format_indicator: p.payload_format_indicator,
        response_topic: p.response_topic.as_deref(),
        correlation_data: p.correlation_data.as_deref(),
        user_properties: UserProps(props),
        content_type: p.content_type.as_deref(),
        retain_version: p.retain_version,
    }
}

fn user_props(p: &ForwardedPublish) -> Vec<(ByteString, ByteString)> {
    p.user_properties
        .iter()
        .map(|(k, v)| (ByteString::from(k.as_str()), ByteString::from(v.as_str())))
        .collect()
}

fn check_round_trip(msg: &LinkMessage) {
    let frame = wire::encode(msg);
    let (prefix, payload) = frame.split_at(LENGTH_PREFIX);
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    assert_eq!(len, payload.len(), "length prefix of {msg:?}");
    assert_eq!(
        wire::decode(payload).as_ref(),
        Ok(msg),
        "{msg:?} as {payload:02x?}"
    );
    assert_eq!(wire::encode(msg), frame, "encoding is not deterministic");
    let mut scratch = BytesMut::new();
    match msg {
        LinkMessage::Forward(p) => {
            let props = user_props(p);
            let borrowed = wire::encode_forward(&forward_ref(p, &props), &mut scratch);
            assert_eq!(
                borrowed, frame,
                "encode_forward differs from encode for {msg:?}"
            );
        }
        LinkMessage::ForwardSeq { seq, publish } => {
            let props = user_props(publish);
            let borrowed =
                wire::encode_forward_seq(&forward_ref(publish, &props), *seq, &mut scratch);
            assert_eq!(
                borrowed, frame,
                "encode_forward_seq differs from encode for {msg:?}"
            );
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, split, stream @ ..] = data else {
        return;
    };
    let max = match limit % 3 {
        0 => PREAUTH_MAX_FRAME,
        1 => 64,
        _ => 1 << 20,
    };
    let cut = usize::from(*split) * stream.len() / 255;
    let whole = split_all(max, &[stream]);
    let pieces = split_all(max, &[&stream[..cut], &stream[cut..]]);
    assert_eq!(whole, pieces, "cut at {cut} of {}", stream.len());

    for frame in &whole.0 {
        assert!(
            !frame.is_empty() && frame.len() <= max,
            "frame of {} bytes",
            frame.len()
        );
        if let Ok(msg) = wire::decode(frame) {
            check_round_trip(&msg);
        }
    }
});
