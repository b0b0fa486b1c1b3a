//! Multicast discovery datagrams (`cluster.discovery = mcast`): their format, the cookie digest
//! and the HMAC that authenticates them (their drops are logged through `super::limit`).
//!
//! A node announces itself (`Ping`) to the group; a node that hears an unlinked member of its
//! cluster answers (`Pong`, unicast to the sender) when it is the higher name, or dials when it
//! is the lower one. The decisions live in the cluster core (`Cluster::handle_datagram`); this
//! module only turns bytes into a checked [`Announce`] and back. Pure: no I/O, no clock, no
//! randomness (the instance id comes from the core's seeded RNG).
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic "FMQd" | format u8 (1) | kind u8 (1 ping, 2 pong) | link protocol u16 | cluster port u16
//! | instance u64 | node name len u16 + UTF-8 | cluster name len u16 + UTF-8
//! | cookie digest [8] | HMAC-SHA256 [32]
//! ```
//!
//! The cookie never crosses the wire. The digest (SHA-256 over a label, the cluster name and
//! the cookie, first 8 bytes) lets a node tell "same cluster, other cookie" apart from a forged
//! or corrupted datagram in its logs; the HMAC (keyed with the cookie, over every byte before
//! it) means a stranger on the segment cannot make nodes dial an address of its choosing. A
//! replayed genuine announce only makes nodes dial the genuine node, whose link handshake
//! authenticates again. Both are offline-guessable for a weak cookie, like the handshake
//! itself: use a long random `node.cookie`.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// First bytes of every discovery datagram.
pub const MAGIC: &[u8; 4] = b"FMQd";
/// Version of this datagram layout.
pub const FORMAT: u8 = 1;
/// Largest datagram accepted; announces are far smaller (names are capped by the config).
pub const MAX_DATAGRAM: usize = 1280;
/// Length of the cookie digest carried in clear.
pub const DIGEST_LEN: usize = 8;
/// Length of the HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 2 + 8;
const MAC_LABEL: &[u8] = b"flockmq discovery v1";
const DIGEST_LABEL: &[u8] = b"flockmq cookie digest v1";

/// What an announce asks of its receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "I am here" to the group: unlinked peers answer or dial.
    Ping,
    /// The answer of a higher-named node to a ping: the receiver dials.
    Pong,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Ping => 1,
            Kind::Pong => 2,
        }
    }
}

/// One decoded datagram; borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce<'a> {
    /// Ping or pong.
    pub kind: Kind,
    /// The sender's link protocol version (`wire::PROTOCOL_VERSION`).
    pub protocol: u16,
    /// The sender's cluster port.
    pub port: u16,
    /// Random per node start: tells our own looped-back datagrams from another node that
    /// (wrongly) uses our name.
    pub instance: u64,
    /// The sender's node name (not yet parsed).
    pub node: &'a str,
    /// The sender's cluster name.
    pub cluster: &'a str,
    /// The sender's cookie digest.
    pub digest: [u8; DIGEST_LEN],
    /// The bytes the HMAC covers, and the HMAC.
    signed: &'a [u8],
    mac: &'a [u8],
}

impl Announce<'_> {
    /// Whether the HMAC proves the sender holds `cookie`. Constant time.
    pub fn verify(&self, cookie: &str) -> bool {
        mac(cookie, self.signed).verify_slice(self.mac).is_ok()
    }
}

/// Why a datagram is not a discovery announce at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Larger than any announce can be.
    #[error("{0} bytes, larger than {MAX_DATAGRAM}")]
    TooLarge(usize),
    /// Shorter than its fields say.
    #[error("truncated")]
    Truncated,
    /// Does not start with the flockmq magic: someone else's traffic on the group.
    #[error("not a flockmq announce")]
    NotOurs,
    /// A layout this node does not know.
    #[error("unknown announce format {0}")]
    Format(u8),
    /// Neither ping nor pong.
    #[error("unknown announce kind {0}")]
    Kind(u8),
    /// A name that is not UTF-8.
    #[error("a name is not UTF-8")]
    Utf8,
    /// Bytes after the HMAC.
    #[error("{0} bytes after the end of the announce")]
    Trailing(usize),
}

/// The cookie digest announced in clear (see the module docs).
pub fn cookie_digest(cluster: &str, cookie: &str) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    h.update(DIGEST_LABEL);
    h.update((cluster.len() as u64).to_be_bytes());
    h.update(cluster.as_bytes());
    h.update(cookie.as_bytes());
    let full = h.finalize();
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&full[..DIGEST_LEN]);
    out
}

fn mac(cookie: &str, signed: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(cookie.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(MAC_LABEL);
    m.update(signed);
    m
}

/// What a node says about itself in its announces.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// Link protocol version.
    pub protocol: u16,
    /// Cluster port.
    pub port: u16,
    /// Random per node start.
    pub instance: u64,
    /// Node name.
    pub node: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// Cookie (only the digest and the HMAC leave the node).
    pub cookie: &'a str,
}

/// Room for node name + cluster name in a discovery datagram (kept under a 1,280-byte MTU); the
/// configuration refuses longer names under multicast discovery.
pub const MAX_ANNOUNCED_NAMES: usize = 1024;

/// Encodes one announce. Names longer than 65,535 bytes are cut (the config caps them far
/// lower, [`MAX_ANNOUNCED_NAMES`]).
pub fn encode(kind: Kind, from: &Sender<'_>) -> Bytes {
    let node = cap(from.node.as_bytes());
    let cluster = cap(from.cluster.as_bytes());
    let mut buf =
        BytesMut::with_capacity(HEADER_LEN + 4 + node.len() + cluster.len() + DIGEST_LEN + MAC_LEN);
    buf.put_slice(MAGIC);
    buf.put_u8(FORMAT);
    buf.put_u8(kind.byte());
    buf.put_u16(from.protocol);
    buf.put_u16(from.port);
    buf.put_u64(from.instance);
    put_str(&mut buf, node);
    put_str(&mut buf, cluster);
    buf.put_slice(&cookie_digest(from.cluster, from.cookie));
    let tag = mac(from.cookie, &buf).finalize().into_bytes();
    buf.put_slice(&tag);
    buf.freeze()
}

fn cap(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(usize::from(u16::MAX))]
}

fn put_str(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
    buf.put_slice(bytes);
}

/// A cursor that fails with `Truncated` instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DatagramError> {
        let end = self.pos.checked_add(n).ok_or(DatagramError::Truncated)?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(DatagramError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DatagramError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DatagramError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DatagramError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<&'a str, DatagramError> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| DatagramError::Utf8)
    }
}

/// Decodes one datagram. Checks only its shape; the receiver checks cluster, digest and HMAC.
pub fn decode(buf: &[u8]) -> Result<Announce<'_>, DatagramError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(DatagramError::TooLarge(buf.len()));
    }
    let mut r = Reader { buf, pos: 0 };
    if r.take(MAGIC.len()).map_err(|_| DatagramError::NotOurs)? != MAGIC {
        return Err(DatagramError::NotOurs);
    }
    let format = r.u8()?;
    if format != FORMAT {
        return Err(DatagramError::Format(format));
    }
    let kind = match r.u8()? {
        1 => Kind::Ping,
        2 => Kind::Pong,
        other => return Err(DatagramError::Kind(other)),
    };
    let protocol = r.u16()?;
    let port = r.u16()?;
    let instance = u64::from_be_bytes(r.array()?);
    let node = r.str()?;
    let cluster = r.str()?;
    let digest = r.array()?;
    let signed_len = r.pos;
    let mac = r.take(MAC_LEN)?;
    if r.pos < buf.len() {
        return Err(DatagramError::Trailing(buf.len() - r.pos));
    }
    Ok(Announce {
        kind,
        protocol,
        port,
        instance,
        node,
        cluster,
        digest,
        signed: buf.get(..signed_len).ok_or(DatagramError::Truncated)?,
        mac,
    })
}

/// Why a well-formed datagram was still dropped (the log classes of the drop log, a
/// [`crate::log_limit::LogLimiter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// Undecodable (see [`DatagramError`]).
    Malformed,
    /// Another `cluster.name`.
    OtherCluster,
    /// Another link protocol version.
    Protocol,
    /// Same cluster, another cookie.
    Cookie,
    /// The HMAC does not match although the digest does: forged or corrupted.
    Forged,
    /// A node name that does not parse.
    BadName,
    /// Another node announces our own node name.
    DuplicateName,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Malformed => "malformed",
            DropReason::OtherCluster => "other cluster",
            DropReason::Protocol => "other protocol version",
            DropReason::Cookie => "other cookie",
            DropReason::Forged => "bad HMAC",
            DropReason::BadName => "bad node name",
            DropReason::DuplicateName => "our own node name",
        })
    }
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;

    use super::*;

    fn sender<'a>(node: &'a str, cookie: &'a str) -> Sender<'a> {
        Sender {
            protocol: 1,
            port: 4370,
            instance: 0x0102_0304_0506_0708,
            node,
            cluster: "flockmq",
            cookie,
        }
    }

    #[test]
    fn an_announce_round_trips_and_verifies_with_the_cookie_only() {
        let bytes = encode(Kind::Ping, &sender("n1@10.0.0.1", "secret"));
        let a = decode(&bytes).expect("decodes");
        assert_eq!(a.kind, Kind::Ping);
        assert_eq!(a.protocol, 1);
        assert_eq!(a.port, 4370);
        assert_eq!(a.instance, 0x0102_0304_0506_0708);
        assert_eq!(a.node, "n1@10.0.0.1");
        assert_eq!(a.cluster, "flockmq");
        assert_eq!(a.digest, cookie_digest("flockmq", "secret"));
        assert!(a.verify("secret"));
        assert!(!a.verify("secreT"));
        let pong = encode(Kind::Pong, &sender("n1@10.0.0.1", "secret"));
        assert_eq!(decode(&pong).map(|a| a.kind), Ok(Kind::Pong));
    }

    #[test]
    fn the_cookie_never_appears_in_an_announce() {
        let cookie = "a-very-recognisable-cookie";
        let bytes = encode(Kind::Ping, &sender("n1@h", cookie));
        assert!(!bytes.windows(cookie.len()).any(|w| w == cookie.as_bytes()));
    }

    #[test]
    fn digests_differ_by_cookie_and_by_cluster() {
        let a = cookie_digest("flockmq", "one");
        assert_ne!(a, cookie_digest("flockmq", "two"));
        assert_ne!(a, cookie_digest("other", "one"));
        // The length prefix keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(cookie_digest("ab", "c"), cookie_digest("a", "bc"));
    }

    #[test]
    fn any_flipped_bit_fails_the_hmac_or_the_decode() {
        let bytes = encode(Kind::Ping, &sender("n2@10.0.0.2", "secret"));
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.to_vec();
                b[i] ^= 1 << bit;
                if let Ok(a) = decode(&b) {
                    assert!(!a.verify("secret"), "byte {i} bit {bit} went unnoticed");
                }
            }
        }
    }

    #[test]
    fn bad_datagrams_are_refused_by_shape() {
        let good = encode(Kind::Ping, &sender("n1@h", "c")).to_vec();
        let mut trailing = good.clone();
        trailing.push(0);
        let mut kind = good.clone();
        kind[5] = 9;
        let mut format = good.clone();
        format[4] = 2;
        let mut long_name = good.clone();
        long_name[HEADER_LEN] = 0xff; // node name length far beyond the datagram
        let mut utf8 = good.clone();
        utf8[HEADER_LEN + 2] = 0xff;
        let cases: Vec<(&str, Vec<u8>, DatagramError)> = vec![
            ("empty", vec![], DatagramError::NotOurs),
            (
                "other magic",
                b"M-SEARCH * HTTP/1.1".to_vec(),
                DatagramError::NotOurs,
            ),
            ("magic only", MAGIC.to_vec(), DatagramError::Truncated),
            (
                "cut before the mac",
                good[..good.len() - 1].to_vec(),
                DatagramError::Truncated,
            ),
            ("trailing byte", trailing, DatagramError::Trailing(1)),
            ("unknown kind", kind, DatagramError::Kind(9)),
            ("unknown format", format, DatagramError::Format(2)),
            (
                "name longer than the datagram",
                long_name,
                DatagramError::Truncated,
            ),
            ("non-UTF-8 name", utf8, DatagramError::Utf8),
            (
                "huge",
                vec![0u8; MAX_DATAGRAM + 1],
                DatagramError::TooLarge(MAX_DATAGRAM + 1),
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(decode(&bytes).map(|_| ()), Err(want), "{what}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoding_mutated_announces_never_panics(
            cut in 0usize..200,
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        ) {
            let mut b = encode(Kind::Pong, &sender("n1@[fd00::1]", "cookie")).to_vec();
            for (i, x) in flips {
                let len = b.len();
                b[i % len] ^= x;
            }
            b.truncate(cut);
            if let Ok(a) = decode(&b) {
                prop_assert!(a.signed.len() + MAC_LEN <= b.len());
            }
        }
    }
}
