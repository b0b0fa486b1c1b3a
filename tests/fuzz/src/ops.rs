//! The scripts of the stateful targets: operations decoded from the fuzz input with `arbitrary`
//! (`#[derive(Arbitrary)]`), byte chunks between them, and `Script`, which writes operations back
//! as the bytes `arbitrary` decodes them from (for the seed corpus; a test checks the two agree).

use arbitrary::{Arbitrary, Unstructured};

/// Topic names and filters the structured operations pick from (index modulo the length):
/// plain, wildcard, shared, `$`-prefixed, empty and odd ones.
pub const TOPICS: &[&str] = &[
    "a",
    "a/b",
    "a/b/c",
    "sport/tennis/player1",
    "$SYS/uptime",
    "a/+",
    "+/b",
    "a/#",
    "#",
    "+",
    "$share/g/a/#",
    "$share/g/#",
    "$share/h/a/b",
    "",
    "a//b",
    "/",
    "a/b#",
    "$share/g",
];

/// Declares an operation enum deriving `Arbitrary` and its `write`, the inverse for `Script`
/// (variant `u32`, then the fields in order), from one list so the two cannot drift apart.
macro_rules! script_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident {
            $(
                $(#[$vm:meta])*
                $variant:ident $({ $( $(#[$fm:meta])* $field:ident : $ty:ty ),* $(,)? })?
            ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
        pub enum $name {
            $( $(#[$vm])* $variant $({ $( $(#[$fm])* $field: $ty ),* })? ),*
        }

        impl $name {
            const COUNT: u32 = [$(stringify!($variant)),*].len() as u32;

            /// Appends the bytes `Input` decodes this operation from.
            #[allow(unused_assignments)]
            pub fn write(&self, s: &mut Script) {
                let mut index = 0u32;
                $(
                    if let $name::$variant $({ $($field),* })? = self {
                        s.variant(index, Self::COUNT);
                        $($( ScriptValue::write($field, s); )*)?
                        return;
                    }
                    index += 1;
                )*
            }
        }
    };
}

/// A field type of the operations, as `Script` writes it.
pub trait ScriptValue {
    fn write(&self, s: &mut Script);
}

impl ScriptValue for u8 {
    fn write(&self, s: &mut Script) {
        s.u8(*self);
    }
}

impl ScriptValue for u16 {
    fn write(&self, s: &mut Script) {
        s.u16(*self);
    }
}

impl ScriptValue for bool {
    fn write(&self, s: &mut Script) {
        s.bool(*self);
    }
}

script_enum! {
/// One step of the `link_handshake` target.
pub enum LinkOp {
    /// An arbitrary frame payload (a chunk follows) on one of the open links (0: the newest).
    Frame { link: u8 },
    /// A well-formed Hello from the peer with a nonce (32 bytes follow).
    Hello { link: u8 },
    /// The honest dialer's Proof answering the core's last Challenge.
    ValidProof,
    /// The honest acceptor's Challenge answering the core's last Hello (a 32-byte nonce follows).
    ValidChallenge,
    /// A connection from the peer is accepted.
    Accept,
    /// The core's node dialled the peer and the connection is up.
    Dial,
    /// The oldest pending `Dial` action connects (`ok`) or fails.
    AnswerDial { ok: bool },
    /// The connection breaks (I/O, or bad framing seen by the reader).
    Lost { link: u8, bad_frame: bool },
    /// Time passes (`ms` × 10 ms) and timers fire.
    Advance { ms: u8 },
    /// The local broker gains or loses its route for a filter.
    Route { add: bool, topic: u8 },
    /// A local publish to forward (QoS `qos % 3`, retained if bit 2).
    Forward { topic: u8, qos: u8 },
    /// `ctl cluster leave`.
    Leave,
    /// `ctl cluster join` of the peer.
    Join,
}
}

/// The broker limits of one `broker_session` run (the first bytes of its input).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct BrokerSetup {
    /// Part of a cluster: route changes and forwards are queued, retained values versioned.
    pub clustered: bool,
    /// SUBACKs wait for route confirmations (clustered only).
    pub hold_subacks: bool,
    /// Receive Maximum / in-flight window: 1 + `max_inflight % 8`, or 32 when 0.
    pub max_inflight: u8,
    /// Queue bound: `max_queued % 8` messages, or 1000 when 255.
    pub max_queued: u8,
    pub retain_available: bool,
    /// `max_qos % 3`.
    pub max_qos: u8,
    /// Server Keep Alive in seconds; 0: the client's.
    pub server_keepalive: u8,
    /// Topic Alias Maximum.
    pub max_topic_alias: u8,
    /// Resend unacknowledged messages every second (else only on reconnect).
    pub retry: bool,
    /// Output window before a connection pauses: 64 bytes × (1 + this), or 1 MB when 255.
    pub window: u8,
}

script_enum! {
/// One step of the `broker_session` target. `conn` picks one of four connection slots.
pub enum BrokerOp {
    /// A new connection in slot `conn` (the slot's old connection stays open, unreachable).
    Open { conn: u8 },
    /// Raw bytes from the client (a chunk follows), through the connection's decoder.
    Raw { conn: u8 },
    /// A CONNECT, encoded and decoded like any client bytes.
    Connect {
        conn: u8,
        /// 0: 3.1, 1: 3.1.1, else 5.
        protocol: u8,
        /// Client id `c{client % 4}`, or empty for 4 and up.
        client: u8,
        clean: bool,
        keep_alive: u8,
        /// Session Expiry Interval in seconds (MQTT 5); 255: none.
        expiry: u8,
        /// A will on topic `TOPICS[will_topic]` when `will_qos < 3`.
        will_topic: u8,
        will_qos: u8,
        will_retain: bool,
        will_delay: u8,
        /// Maximum Packet Size in 16-byte units (MQTT 5); 0: none.
        max_packet: u8,
        /// Receive Maximum (MQTT 5); 0: none.
        receive_max: u8,
        /// Topic Alias Maximum (MQTT 5).
        topic_alias_max: u8,
    },
    /// A PUBLISH on `TOPICS[topic]` (empty with an alias when `alias > 0` and bit 7 of `flags`).
    Publish {
        conn: u8,
        topic: u8,
        /// bits 0-1 QoS (3 is 0), 2 retain, 3 dup, 7 empty topic.
        flags: u8,
        packet_id: u8,
        alias: u8,
        /// Message Expiry Interval in seconds; 0: none.
        expiry: u8,
        payload_len: u8,
    },
    Subscribe {
        conn: u8,
        topic: u8,
        /// bits 0-1 QoS, 2 No Local, 3 Retain As Published, 4-5 Retain Handling.
        options: u8,
        packet_id: u8,
        /// Subscription Identifier; 0: none.
        sub_id: u8,
        /// A second filter in the same packet when below `TOPICS.len()`.
        second: u8,
    },
    Unsubscribe { conn: u8, topic: u8, packet_id: u8 },
    /// PUBACK / PUBREC / PUBREL / PUBCOMP (`kind % 4`) for `packet_id`.
    Ack { conn: u8, kind: u8, packet_id: u8, reason: u8 },
    /// The right acknowledgement for the newest QoS 1/2 PUBLISH or PUBREL the broker sent on
    /// the connection, as a well-behaved client would.
    AckLast { conn: u8 },
    PingReq { conn: u8 },
    /// DISCONNECT; `reason % 3`: normal, with will, error. Session expiry update when < 255.
    Disconnect { conn: u8, reason: u8, expiry: u8 },
    /// A client-sent AUTH (a protocol error for the broker).
    Auth { conn: u8 },
    /// The connection breaks.
    Lost { conn: u8 },
    /// The connection's writer has written everything (only after the broker asked).
    Drained { conn: u8 },
    /// Time passes: `ms` × 10 ms.
    Advance { ms: u8 },
    /// Time passes: `secs` seconds.
    AdvanceSecs { secs: u16 },
    /// The node's output is (not) over budget.
    Congested { on: bool },
    /// A publish forwarded by another node (clustered).
    Forwarded { topic: u8, flags: u8 },
    /// The cluster confirms route changes up to `upto` more than the last confirmation.
    ConfirmRoutes { upto: u8 },
    /// The session of client `c{client % 4}` moves away and comes back (take / import).
    Handoff { client: u8, clean: bool },
    /// Our own retained records merged back in (a peer with the same set).
    RetainedEcho,
    /// Graceful shutdown starts.
    Shutdown,
    /// The shutdown timeout passes.
    FinishShutdown,
}
}

/// The fuzz input as a script: operations and the chunks some of them take.
pub struct Input<'a> {
    u: Unstructured<'a>,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input {
            u: Unstructured::new(data),
        }
    }

    /// The next value, or `None` at the end of the input.
    pub fn take<T: Arbitrary<'a>>(&mut self) -> Option<T> {
        if self.u.is_empty() {
            return None;
        }
        T::arbitrary(&mut self.u).ok()
    }

    pub fn link_op(&mut self) -> Option<LinkOp> {
        self.take()
    }

    pub fn broker_op(&mut self) -> Option<BrokerOp> {
        self.take()
    }

    /// A chunk: a little-endian `u16` length, then that many bytes (fewer at the end).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = u16::arbitrary(&mut self.u).unwrap_or(0);
        let n = usize::from(len).min(self.u.len());
        self.u.bytes(n).unwrap_or_default()
    }

    /// A fixed number of bytes (zeros past the end).
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let _ = self.u.fill_buffer(&mut out);
        out
    }

    pub fn u8(&mut self) -> u8 {
        u8::arbitrary(&mut self.u).unwrap_or(0)
    }
}

/// Writes values as the bytes `Input` decodes them from (the inverse of `arbitrary` for the
/// types used here: integers little-endian, `bool` as 0/1, an enum variant as the `u32` that
/// `#[derive(Arbitrary)]` maps to it).
#[derive(Debug, Default, Clone)]
pub struct Script(pub Vec<u8>);

impl Script {
    pub fn u8(&mut self, v: u8) -> &mut Script {
        self.0.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Script {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Script {
        self.u8(u8::from(v))
    }

    /// Variant `index` of an enum with `count` variants.
    pub fn variant(&mut self, index: u32, count: u32) -> &mut Script {
        let x = (u64::from(index) << 32).div_ceil(u64::from(count));
        self.0
            .extend_from_slice(&u32::try_from(x).unwrap_or(u32::MAX).to_le_bytes());
        self
    }

    pub fn chunk(&mut self, bytes: &[u8]) -> &mut Script {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.0.extend_from_slice(&bytes[..usize::from(len)]);
        self
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Script {
        self.0.extend_from_slice(bytes);
        self
    }
}
