//! flockmq: a clustered MQTT 3.1.1 / 5.0 broker whose broker logic runs unchanged on real sockets
//! and inside a deterministic network simulation.
//!
//! # Map of the crate
//!
//! - [`codec`]: MQTT control packets as typed values, decoded incrementally from a `BytesMut` and
//!   encoded into one. Pure functions of bytes: no I/O, no clock. Bad input becomes a
//!   [`codec::DecodeError`] that knows the reason code to report.
//! - [`topic`]: topic names and filters, the topic trie and the retained store: the MQTT
//!   matching rules shared by the broker (subscriptions) and the cluster (route table).
//! - [`broker`]: the sans-IO single-node core (quinn-proto style). It takes events (a connection
//!   opened, a packet arrived, a connection broke, a timer is due) with `now` passed in, and queues
//!   [`broker::Action`]s (send a packet, close a connection). It owns sessions, the topic trie,
//!   retained messages, QoS state machines, wills and keepalive, draws randomness only from its
//!   seeded RNG, and never reads a clock, spawns or touches a socket. It knows nothing of the
//!   cluster: `node` converts between its messages and the cluster's wire form.
//! - [`cluster`]: the sans-IO cluster core (same shape as the broker): link handshakes with
//!   HMAC cookie proofs, heartbeats, membership merged by incarnation, the replicated route table
//!   (filter -> nodes) and forwarding of publishes once per destination node. Its wire format
//!   (length-prefixed postcard frames) lives in `cluster::wire`.
//! - [`config`]: the flat `key = value` configuration (file < `FLOCKMQ_*` environment < `--set`),
//!   validated into typed settings with errors that name file, line and key.
//! - [`net`]: the [`net::Net`] trait through which a node reaches sockets and time, with the tokio
//!   backend for production (and the turmoil backend behind feature `sim`). The only module that
//!   may read the real clock.
//! - [`node`]: the only async code. Generic over `Net`, it accepts connections, frames packets,
//!   and runs the one task that owns the broker core; the production binary and every simulated
//!   host run the same `node::start`.
//! - [`server`]: a whole broker process: `node::start` plus the admin endpoint beside it (what
//!   the binary and the simulator start).
//! - [`log_limit`]: the log-line rate limiter (one line per reason per period, counting the rest).
//! - [`admin`]: the admin HTTP endpoint (Prometheus `/metrics`, the JSON behind `flockmq ctl`)
//!   and the client side of `ctl`.
//! - [`fnv`]: the one stable hash (FNV-1a 64) for seeds and trace hashes.
//!
//! `main.rs` only parses the command line and calls into these modules.
//!
//! Layers: `codec`, `topic`, `fnv`, `log_limit` < `broker`, `cluster` (the sans-IO cores) <
//! `config` < `net`, `node` < `admin` < `server`; nothing imports upwards. Everything from `config`
//! up is the default feature `runtime`: without it the crate is the cores alone, with no tokio,
//! axum, clap or socket2 in its dependency tree.

#[cfg(feature = "runtime")]
pub mod admin;
pub mod broker;
pub mod cluster;
pub mod codec;
#[cfg(feature = "runtime")]
pub mod config;
pub mod fnv;
pub mod log_limit;
#[cfg(feature = "runtime")]
pub mod net;
#[cfg(feature = "runtime")]
pub mod node;
#[cfg(feature = "runtime")]
pub mod server;
pub mod topic;
