//! The MQTT decoder (3.1, 3.1.1 and 5) on arbitrary bytes.
//!
//! Input: `[mode, split, stream...]`. `mode` picks the decoder's starting state (waiting for
//! CONNECT, or already speaking 3.1 / 3.1.1 / 5) and its maximum packet size; `split` picks where
//! the stream is cut in two. Checked:
//! - decoding never panics;
//! - the stream fed whole and fed in two pieces gives the same packets and the same end (error or
//!   "need more bytes" with the same bytes left);
//! - every decoded packet, encoded again for the protocol it was read with, has the length
//!   `encoded_len` promised and decodes to an equal packet, and encoding that gives the same
//!   bytes (equal packets, not equal input bytes: the decoder accepts non-minimal variable byte
//!   integers and MQTT 5 long forms that the encoder writes shortest).
#![no_main]

use flockmq_fuzz::{check_mqtt_round_trip, decode_all, mqtt_mode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, split, stream @ ..] = data else {
        return;
    };
    let (protocol, max) = mqtt_mode(*mode);
    let cut = usize::from(*split) * stream.len() / 255;

    let whole = decode_all(protocol, max, &[stream]);
    let pieces = decode_all(protocol, max, &[&stream[..cut], &stream[cut..]]);
    assert_eq!(whole, pieces, "cut at {cut} of {}", stream.len());

    for (packet, protocol) in &whole.packets {
        check_mqtt_round_trip(packet, *protocol);
    }
});
