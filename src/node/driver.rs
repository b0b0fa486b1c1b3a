//! The broker task: the one task that owns the sans-IO core. It takes events in batches, feeds
//! them to the core, fires the core's timers, and turns the core's actions into one chunk of
//! bytes per connection per batch.
//!
//! It never awaits a socket (writers get chunks over unbounded channels, bounded by the
//! slow-consumer limit) and reads time only from `Net::now`.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use super::NodeMetrics;
use super::conn::{ConnShared, Outbox};
use super::core::{Core, Wire};
use crate::broker::{Action, ClientInfo, ConnId, ConnectionLoss};
use crate::codec::Packet;
use crate::net::Net;

/// Events handled per batch: enough to amortise a flush, few enough to keep timers prompt.
const BATCH: usize = 256;

/// Everything that reaches the broker task.
#[derive(Debug)]
pub(crate) enum Event {
    /// A connection was accepted; `outbox` reaches its writer.
    Opened { conn: ConnId, outbox: Outbox },
    /// Packets decoded from one read of `bytes` bytes.
    Packets {
        conn: ConnId,
        packets: Vec<Packet>,
        bytes: usize,
    },
    /// The reader saw EOF, an I/O error or undecodable bytes.
    Lost { conn: ConnId, why: ConnectionLoss },
    /// A metrics snapshot for the admin endpoint / simulator.
    Metrics(oneshot::Sender<NodeMetrics>),
    /// The session list for `ctl clients list`.
    Clients(oneshot::Sender<Vec<ClientInfo>>),
    /// Graceful shutdown; answered once every connection has been told to close.
    Shutdown(oneshot::Sender<()>),
}

impl Drop for ConnOut {
    /// However the broker task lets go of a connection (closed, dropped as a slow consumer,
    /// node stopping), its writer flushes what it has and shuts the socket down.
    fn drop(&mut self) {
        self.shared.close_writer();
    }
}

/// The broker task's view of one connection.
struct ConnOut {
    shared: Arc<ConnShared>,
    /// What this batch encoded for the connection; handed over as one chunk.
    buf: BytesMut,
    closing: bool,
    touched: bool,
}

/// The broker task's state.
pub(crate) struct Driver<N: Net, C: Core, W: Wire> {
    pub(crate) net: N,
    pub(crate) core: C,
    pub(crate) start: tokio::time::Instant,
    /// A writer with more than this many bytes unwritten is a slow consumer and is dropped.
    pub(crate) max_queued_bytes: usize,
    pub(crate) node: String,
    pub(crate) mqtt_addr: SocketAddr,
    conns: BTreeMap<ConnId, ConnOut>,
    touched: Vec<ConnId>,
    lost: Vec<ConnId>,
    bytes_in: u64,
    bytes_out: u64,
    accepted: u64,
    slow_consumers: u64,
    wire: PhantomData<W>,
}

impl<N: Net, C: Core, W: Wire> Driver<N, C, W> {
    pub(crate) fn new(
        net: N,
        core: C,
        node: String,
        mqtt_addr: SocketAddr,
        max_queued_bytes: usize,
    ) -> Self {
        let start = net.now();
        Driver {
            net,
            core,
            start,
            max_queued_bytes,
            node,
            mqtt_addr,
            conns: BTreeMap::new(),
            touched: Vec::new(),
            lost: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            accepted: 0,
            slow_consumers: 0,
            wire: PhantomData,
        }
    }

    fn now(&self) -> Duration {
        self.net.now().saturating_duration_since(self.start)
    }

    /// Runs until shutdown or until every event sender is gone.
    pub(crate) async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut stopping: Option<oneshot::Sender<()>> = None;
        loop {
            let deadline = self.core.poll_timeout().map(|at| self.start + at);
            tokio::select! {
                biased;
                received = events.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    let now = self.now();
                    for event in batch.drain(..) {
                        if let Some(reply) = self.handle(event, now) {
                            stopping = Some(reply);
                        }
                    }
                }
                () = sleep_until(deadline) => {}
            }
            // Checked on every pass: a busy event stream must not starve keepalive and retries.
            let now = self.now();
            if self.core.poll_timeout().is_some_and(|at| at <= now) {
                self.core.handle_timeout(now);
            }
            self.flush();
            if let Some(reply) = stopping.take() {
                self.close_all();
                let _ = reply.send(());
                break;
            }
        }
        tracing::debug!("broker task stopped");
    }

    /// Feeds one event to the core; returns the reply channel of a shutdown request.
    fn handle(&mut self, event: Event, now: Duration) -> Option<oneshot::Sender<()>> {
        match event {
            Event::Opened { conn, outbox } => {
                self.accepted += 1;
                let out = ConnOut {
                    shared: outbox.shared,
                    buf: BytesMut::new(),
                    closing: false,
                    touched: false,
                };
                self.conns.insert(conn, out);
                self.core.connection_opened(conn, now);
            }
            Event::Packets {
                conn,
                packets,
                bytes,
            } => {
                self.bytes_in += bytes as u64;
                // Late packets of a connection we already closed are dropped.
                if self.conns.get(&conn).is_some_and(|c| !c.closing) {
                    for packet in packets {
                        self.core.handle_packet(conn, packet, now);
                    }
                }
            }
            Event::Lost { conn, why } => {
                if self.conns.get(&conn).is_some_and(|c| !c.closing) {
                    self.core.connection_lost(conn, why, now);
                    self.lost.push(conn);
                }
            }
            Event::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
            Event::Clients(reply) => {
                let _ = reply.send(self.core.clients());
            }
            Event::Shutdown(reply) => {
                self.core.shutdown(now);
                return Some(reply);
            }
        }
        None
    }

    fn metrics(&self) -> NodeMetrics {
        let mut broker = self.core.metrics();
        broker.bytes_in = self.bytes_in;
        broker.bytes_out = self.bytes_out;
        NodeMetrics {
            node: self.node.clone(),
            mqtt_listener: self.mqtt_addr,
            uptime: self.now().as_secs(),
            connections_accepted: self.accepted,
            slow_consumer_disconnects: self.slow_consumers,
            broker,
        }
    }

    fn touch(touched: &mut Vec<ConnId>, conn: ConnId, out: &mut ConnOut) {
        if !out.touched {
            out.touched = true;
            touched.push(conn);
        }
    }

    /// Carries out every queued action: encodes sends, then hands each touched connection one
    /// chunk and, if it is closing, the close.
    fn flush(&mut self) {
        loop {
            while let Some(action) = self.core.poll_action() {
                match action {
                    Action::Send {
                        conn,
                        protocol,
                        packet,
                    } => {
                        let Some(out) = self.conns.get_mut(&conn) else {
                            continue;
                        };
                        if out.closing {
                            continue;
                        }
                        let before = out.buf.len();
                        W::encode(&packet, protocol, &mut out.buf);
                        self.bytes_out += (out.buf.len() - before) as u64;
                        Self::touch(&mut self.touched, conn, out);
                    }
                    Action::Close { conn } => {
                        if let Some(out) = self.conns.get_mut(&conn) {
                            out.closing = true;
                            Self::touch(&mut self.touched, conn, out);
                        }
                    }
                }
            }
            // The core has said its last word on connections the reader lost: close them.
            for conn in std::mem::take(&mut self.lost) {
                if let Some(out) = self.conns.get_mut(&conn) {
                    out.closing = true;
                    Self::touch(&mut self.touched, conn, out);
                }
            }
            if self.touched.is_empty() {
                return;
            }
            for conn in std::mem::take(&mut self.touched) {
                self.hand_over(conn);
            }
        }
    }

    fn hand_over(&mut self, conn: ConnId) {
        let Some(out) = self.conns.get_mut(&conn) else {
            return;
        };
        out.touched = false;
        if !out.buf.is_empty() {
            let chunk = out.buf.split().freeze();
            let queued = out.shared.queued.fetch_add(chunk.len(), Ordering::AcqRel) + chunk.len();
            if queued > self.max_queued_bytes && !out.closing {
                return self.drop_slow_consumer(conn, queued);
            }
            // If the writer already died, its reader reports the loss.
            out.shared.push(chunk);
        }
        if out.closing {
            self.conns.remove(&conn);
        }
    }

    fn drop_slow_consumer(&mut self, conn: ConnId, queued: usize) {
        let Some(out) = self.conns.remove(&conn) else {
            return;
        };
        tracing::warn!(
            conn = conn.0,
            queued,
            "client does not read fast enough; dropping the connection"
        );
        self.slow_consumers += 1;
        out.shared.abort.notify_one();
        out.shared.stop_reader.notify_one();
        let now = self.now();
        self.core.connection_lost(conn, ConnectionLoss::Io, now);
    }

    fn close_all(&mut self) {
        // Dropping a `ConnOut` tells its writer to flush and close.
        self.conns.clear();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
