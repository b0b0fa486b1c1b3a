//! The sans-IO single-node MQTT core: sessions, subscriptions (topic trie), retained messages,
//! QoS state machines, wills, keepalive, topic aliases, shared subscriptions.
//!
//! It owns no socket, never reads the clock (`now` is passed in as the time since the node
//! started), never spawns, and draws randomness only from its seeded RNG. The node driver feeds it
//! events and carries out the `Action`s it queues. (API contract; implementation in submodules.)

use std::time::Duration;

pub mod topic;

use crate::codec::{DecodeError, Packet, Protocol};

/// Identifies one network connection for the lifetime of the node (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the driver must do on the broker's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Encode `packet` with `protocol` onto the connection's write buffer.
    Send { conn: ConnId, protocol: Protocol, packet: Packet },
    /// Flush what was sent so far, then close the connection. No further actions name it.
    Close { conn: ConnId },
}

/// Limits and switches of the single-node core (the `mqtt.*` config keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Largest packet accepted from clients, bytes (also announced in CONNACK).
    pub max_packet_size: u32,
    /// Receive Maximum announced to clients and the in-flight window towards each client.
    pub max_inflight: u16,
    /// Messages queued per session while offline or while the in-flight window is full.
    pub max_queued_messages: usize,
    /// Topic names/filters with more levels are rejected.
    pub max_topic_levels: usize,
    /// Topic Alias Maximum announced to clients (0 disables client→server aliases).
    pub max_topic_alias: u16,
    /// Upper bound on a session's expiry interval (seconds).
    pub max_session_expiry: u32,
    /// Whether retained messages are stored.
    pub retain_available: bool,
    /// Largest QoS granted.
    pub max_qos: crate::codec::QoS,
    /// Keepalive the server imposes (MQTT 5 Server Keep Alive); `None` accepts the client's.
    pub server_keepalive: Option<u16>,
    /// Longest accepted client id.
    pub max_client_id_len: usize,
    /// Retry interval for unacknowledged QoS>0 messages on a live connection (0 = only on reconnect).
    pub retry_interval: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1024 * 1024,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_topic_levels: 64,
            max_topic_alias: 65535,
            max_session_expiry: u32::MAX,
            retain_available: true,
            max_qos: crate::codec::QoS::ExactlyOnce,
            server_keepalive: None,
            max_client_id_len: 65535,
            retry_interval: Duration::ZERO,
        }
    }
}

/// Counters exported by the admin endpoint (`/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BrokerMetrics {
    pub connections: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained: u64,
    /// PUBLISH packets received from clients, by QoS.
    pub messages_in: [u64; 3],
    /// PUBLISH packets sent to clients, by QoS.
    pub messages_out: [u64; 3],
    /// Messages dropped (queue full, expired, too large for the client, no subscriber for QoS0...), by QoS.
    pub messages_dropped: [u64; 3],
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One row of `flockmq ctl clients list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientInfo {
    pub client_id: String,
    pub connected: bool,
    pub protocol: u8,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub session_expiry_interval: u32,
    pub subscriptions: usize,
    pub inflight: usize,
    pub queued: usize,
}

/// Why a connection went away (told to the broker by the driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionLoss {
    /// EOF, reset, or I/O error: an abrupt disconnect (wills fire).
    Io,
    /// The bytes could not be decoded; the broker sends DISCONNECT (MQTT 5, after CONNECT) or a
    /// CONNACK with the error (before CONNECT), then closes.
    Decode(DecodeError),
}

/// The single-node MQTT broker state machine.
pub struct Broker {
    _private: (),
}

impl Broker {
    /// A broker with the given limits; `rng_seed` seeds all its randomness.
    pub fn new(config: BrokerConfig, rng_seed: u64) -> Broker {
        let _ = (config, rng_seed);
        Broker { _private: () }
    }

    /// A new network connection was accepted.
    pub fn connection_opened(&mut self, conn: ConnId, now: Duration) {
        let _ = (conn, now);
        unimplemented!("broker helper")
    }

    /// A decoded packet arrived on `conn`.
    pub fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Duration) {
        let _ = (conn, packet, now);
        unimplemented!("broker helper")
    }

    /// The connection broke or sent undecodable bytes.
    pub fn connection_lost(&mut self, conn: ConnId, why: ConnectionLoss, now: Duration) {
        let _ = (conn, why, now);
        unimplemented!("broker helper")
    }

    /// Timers (keepalive, will delay, session expiry, message expiry, retries) due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        let _ = now;
        unimplemented!("broker helper")
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Duration> {
        unimplemented!("broker helper")
    }

    /// The next queued action, in the order they were produced.
    pub fn poll_action(&mut self) -> Option<Action> {
        unimplemented!("broker helper")
    }

    /// Graceful shutdown: every connection gets DISCONNECT 0x8B (MQTT 5) and is closed; wills of
    /// sessions that end now are published first.
    pub fn shutdown(&mut self, now: Duration) {
        let _ = now;
        unimplemented!("broker helper")
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> BrokerMetrics {
        unimplemented!("broker helper")
    }

    /// Sessions, connected or not, sorted by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        unimplemented!("broker helper")
    }
}
