//! MQTT data representations (§1.5): integers, variable byte integers, UTF-8 strings, binary data.
//! `Reader` parses them out of one frame without copying; `Sink` writes them either into a
//! `BytesMut` or into a byte counter, so `encoded_len` and `encode` run the same code.
//! Never panics on short or hostile input: every read is bounds-checked.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::DecodeError;

const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its fields");

/// A cursor over the body of one frame; slices it hands out share the frame's buffer.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Reads `buf` from its start.
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails with Malformed when bytes are left over after the last field.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "trailing bytes after the packet's fields",
            ))
        }
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.buf.try_get_u8().map_err(|_| SHORT)
    }

    /// A big-endian two-byte integer.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.buf.try_get_u16().map_err(|_| SHORT)
    }

    /// A big-endian four-byte integer.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.buf.try_get_u32().map_err(|_| SHORT)
    }

    /// A variable byte integer: at most four bytes.
    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// The next `n` bytes, sharing the frame's buffer.
    pub fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.buf.len() {
            return Err(SHORT);
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything not read yet (a PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two-byte length and that many bytes.
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 encoded string; invalid UTF-8 and U+0000 are malformed (MQTT-1.5.4-1/2).
    pub fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed("string contains U+0000"));
        }
        ByteString::try_from(raw).map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))
    }
}

/// Where encoded bytes go: a real buffer, or a counter that only adds up their length.
pub trait Sink {
    /// One byte.
    fn put_u8(&mut self, v: u8);
    /// A big-endian two-byte integer.
    fn put_u16(&mut self, v: u16);
    /// A big-endian four-byte integer.
    fn put_u32(&mut self, v: u32);
    /// Raw bytes, no length prefix.
    fn put_slice(&mut self, s: &[u8]);

    /// A variable byte integer. Values above `VARINT_MAX` cannot be represented; callers keep
    /// packets within the protocol's 256 MB limit (268_435_455), so the excess is simply carried in a fifth
    /// byte that any peer will reject rather than silently wrapped.
    fn put_varint(&mut self, mut v: usize) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.put_u8(byte);
                return;
            }
            self.put_u8(byte | 0x80);
        }
    }

    /// Binary data with its two-byte length. Longer data cannot be represented and is cut at
    /// 65535 bytes (never happens for data that came off the wire).
    fn put_binary(&mut self, b: &[u8]) {
        let n = b.len().min(usize::from(u16::MAX));
        self.put_u16(n as u16);
        self.put_slice(b.get(..n).unwrap_or(b));
    }

    /// A UTF-8 string with its two-byte length, cut at a character boundary if too long.
    fn put_string(&mut self, s: &str) {
        let mut n = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.put_binary(s.as_bytes().get(..n).unwrap_or_default());
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, s: &[u8]) {
        BufMut::put_slice(self, s);
    }
}

/// A `Sink` that counts bytes instead of writing them.
#[derive(Debug, Default)]
pub struct Counter(pub usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
}

/// How many bytes `put_varint(v)` writes.
pub fn varint_len(v: usize) -> usize {
    let mut c = Counter::default();
    c.put_varint(v);
    c.0
}
