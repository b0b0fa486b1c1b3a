//! The broker task: the one task that owns the sans-IO core. It takes events in batches, feeds
//! them to the core, fires the core's timers, and turns the core's actions into one chunk of
//! bytes per connection per batch.
//!
//! When the node is clustered it also owns the cluster core: link frames go in, the broker's route
//! changes and local publishes go to the cluster, forwarded publishes come back to the broker,
//! and the cluster's sends, closes and dials are carried out here.
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
use tracing::Instrument;

use bytes::Bytes;

use super::conn::{ConnShared, Outbox};
use super::core::{Core, Wire};
use super::discover::DatagramOut;
use super::link::{LinkCtx, LinkGate};
use super::{CommandError, NodeMetrics};
use crate::broker::{Action, ClientInfo, ConnId, ConnectionLoss, RouteChange};
use crate::cluster::{
    Cluster, ClusterAction, ClusterMetrics, ClusterStatus, LinkId, LinkLoss, RouteEntry,
};
use crate::cluster::{NodeName, SeedNode};
use crate::codec::Packet;
use crate::net::Net;

/// Events handled per batch: enough to amortise a flush, few enough to keep timers prompt.
const BATCH: usize = 256;
/// How often the node's unwritten output is summed up against `mqtt.output_budget`.
const MEASURE_OUTPUT: Duration = Duration::from_millis(100);
/// `node.shutdown_timeout`'s default, for drivers built without a config (tests).
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The writer has written everything it was handed (asked for by `Action::NotifyDrained`).
    Drained { conn: ConnId },
    /// A metrics snapshot for the admin endpoint / simulator.
    Metrics(oneshot::Sender<NodeMetrics>),
    /// The session list for `ctl clients list`.
    Clients(oneshot::Sender<Vec<ClientInfo>>),
    /// The digest of the retained set (the simulator's convergence check).
    RetainedDigest(oneshot::Sender<Vec<u64>>),
    /// Graceful shutdown; answered once every connection has been told to close.
    Shutdown(oneshot::Sender<()>),
    /// An inter-node link exists (accepted, or dialled to `dialed`); `outbox` reaches its writer.
    LinkOpened {
        link: LinkId,
        outbox: Outbox,
        /// Raises the reader's frame limit once the link is authenticated.
        gate: Arc<LinkGate>,
        addr: SocketAddr,
        dialed: Option<NodeName>,
    },
    /// Whole frames (length prefix removed) read from a link.
    LinkFrames { link: LinkId, frames: Vec<Bytes> },
    /// A link's reader saw EOF, an I/O error or bad framing.
    LinkLost { link: LinkId, why: LinkLoss },
    /// A datagram arrived on a multicast discovery socket.
    Datagram { from: SocketAddr, bytes: Bytes },
    /// A dial never produced a connection.
    DialFailed { node: NodeName, reason: String },
    /// `cluster status`.
    ClusterStatus(oneshot::Sender<ClusterStatus>),
    /// `routes list`.
    Routes(oneshot::Sender<Vec<RouteEntry>>),
    /// `cluster join NODE`; answered when the link is up or the attempt failed.
    Join {
        seed: SeedNode,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    /// `cluster leave`.
    Leave(oneshot::Sender<Result<(), CommandError>>),
    /// `cluster force-leave NODE`.
    ForceLeave {
        node: NodeName,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
}

/// The broker task's view of one inter-node link: just its writer.
struct LinkOut {
    shared: Arc<ConnShared>,
    gate: Arc<LinkGate>,
}

impl Drop for LinkOut {
    /// However the broker task lets go of a link, its writer flushes and shuts the socket.
    fn drop(&mut self) {
        self.shared.close_writer();
    }
}

/// Everything the broker task keeps for the cluster.
pub(crate) struct ClusterSide<N: Net> {
    pub(crate) core: Cluster,
    pub(crate) ctx: LinkCtx<N>,
    links: BTreeMap<LinkId, LinkOut>,
    joins: Vec<(NodeName, oneshot::Sender<Result<(), CommandError>>)>,
    /// Frames that could not be handed to a link (it was already gone).
    dropped_frames: u64,
    /// Multicast discovery's sending side (`cluster.discovery = mcast`).
    pub(crate) datagrams: Option<DatagramOut>,
    /// The latest member list file, for the task that writes it to `node.data_dir`.
    pub(crate) members_file: Option<tokio::sync::watch::Sender<String>>,
}

impl<N: Net> ClusterSide<N> {
    pub(crate) fn new(core: Cluster, ctx: LinkCtx<N>) -> Self {
        ClusterSide {
            core,
            ctx,
            links: BTreeMap::new(),
            joins: Vec::new(),
            dropped_frames: 0,
            datagrams: None,
            members_file: None,
        }
    }
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
    /// The core asked to hear when this connection has written everything.
    want_drain: bool,
}

/// The broker task's state.
pub(crate) struct Driver<N: Net, C: Core, W: Wire> {
    pub(crate) net: N,
    pub(crate) core: C,
    pub(crate) start: tokio::time::Instant,
    /// A writer with more than this many bytes unwritten is a slow consumer and is dropped.
    pub(crate) max_queued_bytes: usize,
    /// `mqtt.output_budget`: above this many unwritten bytes in all writers together the core is
    /// told the node is congested.
    pub(crate) output_budget: usize,
    /// When the unwritten output was last summed up.
    output_measured: Duration,
    /// Connections whose writer had drained by the time the core asked (reported right away).
    drained: Vec<ConnId>,
    pub(crate) node: String,
    pub(crate) mqtt_addr: SocketAddr,
    conns: BTreeMap<ConnId, ConnOut>,
    touched: Vec<ConnId>,
    lost: Vec<ConnId>,
    bytes_in: u64,
    bytes_out: u64,
    accepted: u64,
    slow_consumers: u64,
    cluster: Option<ClusterSide<N>>,
    /// How long a graceful shutdown waits for clients to acknowledge what they were sent and
    /// for peers to acknowledge forwards (`node.shutdown_timeout`).
    pub(crate) shutdown_timeout: Duration,
    wire: PhantomData<W>,
}

impl<N: Net, C: Core, W: Wire> Driver<N, C, W> {
    pub(crate) fn new(
        net: N,
        core: C,
        node: String,
        mqtt_addr: SocketAddr,
        max_queued_bytes: usize,
        output_budget: usize,
        cluster: Option<ClusterSide<N>>,
    ) -> Self {
        let start = net.now();
        Driver {
            net,
            core,
            start,
            max_queued_bytes,
            output_budget,
            output_measured: Duration::ZERO,
            drained: Vec::new(),
            node,
            mqtt_addr,
            conns: BTreeMap::new(),
            touched: Vec::new(),
            lost: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            accepted: 0,
            slow_consumers: 0,
            cluster,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            wire: PhantomData,
        }
    }

    /// The earliest timer of the broker and the cluster core.
    fn poll_timeout(&self) -> Option<Duration> {
        let cluster = self.cluster.as_ref().and_then(|c| c.core.poll_timeout());
        match (self.core.poll_timeout(), cluster) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn now(&self) -> Duration {
        self.net.now().saturating_duration_since(self.start)
    }

    /// Runs until shutdown or until every event sender is gone.
    ///
    /// A shutdown request starts the core's shutdown (wills published, idle connections
    /// closed); the task keeps running until every connection has been closed by the core
    /// (its messages acknowledged) and every QoS >= 1 forward to a linked peer is acknowledged,
    /// or until `shutdown_timeout` has passed; then the rest is closed and the request answered.
    pub(crate) async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut batch = Vec::with_capacity(BATCH);
        // The shutdown request's reply and when the wait for acknowledgements ends.
        let mut stopping: Option<(oneshot::Sender<()>, Duration, Duration)> = None;
        loop {
            let mut wake = self.poll_timeout();
            if let Some((_, _, until)) = &stopping {
                wake = Some(wake.map_or(*until, |at| at.min(*until)));
            }
            let deadline = wake.map(|at| self.start + at);
            tokio::select! {
                biased;
                received = events.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    let now = self.now();
                    for event in batch.drain(..) {
                        if let Some(reply) = self.handle(event, now) {
                            stopping = Some((reply, now, now + self.shutdown_timeout));
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
            if let Some(cluster) = &mut self.cluster
                && cluster.core.poll_timeout().is_some_and(|at| at <= now)
            {
                cluster.core.handle_timeout(now);
            }
            self.flush();
            if let Some((_, since, until)) = &stopping {
                let now = self.now();
                let forwards = self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.core.forwards_awaiting_ack());
                let drained = self.core.shutdown_drained() && !forwards;
                if drained || now >= *until {
                    let waited = now.saturating_sub(*since);
                    if drained {
                        tracing::info!(?waited, "every client and peer acknowledged; stopping");
                    } else {
                        tracing::warn!(
                            ?waited,
                            forwards_unacked = forwards,
                            "shutdown timeout passed with messages unacknowledged; closing anyway"
                        );
                        self.core.finish_shutdown(now);
                        self.flush();
                    }
                    self.close_all();
                    if let Some((reply, _, _)) = stopping.take() {
                        let _ = reply.send(());
                    }
                    break;
                }
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
                    want_drain: false,
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
            Event::Drained { conn } => {
                if self.conns.get(&conn).is_some_and(|c| !c.closing) {
                    self.core.connection_drained(conn, now);
                }
            }
            Event::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
            Event::Clients(reply) => {
                let _ = reply.send(self.core.clients());
            }
            Event::RetainedDigest(reply) => {
                let _ = reply.send(self.core.retained_digest(now));
            }
            Event::Shutdown(reply) => {
                self.core.shutdown(now);
                return Some(reply);
            }
            event => self.handle_cluster(event, now),
        }
        None
    }

    /// Feeds a cluster event to the cluster core (or answers that there is no cluster).
    fn handle_cluster(&mut self, event: Event, now: Duration) {
        let standalone = || CommandError::Refused("clustering is disabled on this node".into());
        let Some(cluster) = &mut self.cluster else {
            match event {
                Event::ClusterStatus(reply) => {
                    let _ = reply.send(ClusterStatus {
                        running_nodes: vec![self.node.clone()],
                        stopped_nodes: Vec::new(),
                    });
                }
                Event::Routes(reply) => {
                    let _ = reply.send(Vec::new());
                }
                Event::Join { reply, .. }
                | Event::Leave(reply)
                | Event::ForceLeave { reply, .. } => {
                    let _ = reply.send(Err(standalone()));
                }
                Event::LinkOpened { outbox, .. } => outbox.shared.close_writer(),
                _ => {}
            }
            return;
        };
        match event {
            Event::LinkOpened {
                link,
                outbox,
                gate,
                addr,
                dialed,
            } => {
                cluster.links.insert(
                    link,
                    LinkOut {
                        shared: outbox.shared,
                        gate,
                    },
                );
                cluster.core.link_opened(link, addr, dialed, now);
            }
            Event::LinkFrames { link, frames } => {
                for frame in frames {
                    cluster.core.handle_frame(link, &frame, now);
                }
                cluster.core.frames_done(link);
            }
            Event::LinkLost { link, why } => {
                // After bad framing the core answers with a Reject and then a Close, which drops
                // the `LinkOut`; otherwise dropping it here closes its writer.
                let framing = matches!(why, LinkLoss::Frame(_));
                cluster.core.link_lost(link, why, now);
                if !framing {
                    cluster.links.remove(&link);
                }
            }
            Event::DialFailed { node, reason } => cluster.core.dial_failed(&node, &reason, now),
            Event::Datagram { from, bytes } => cluster.core.handle_datagram(from, &bytes, now),
            Event::ClusterStatus(reply) => {
                let _ = reply.send(cluster.core.status());
            }
            Event::Routes(reply) => {
                let _ = reply.send(cluster.core.routes());
            }
            Event::Join { seed, reply } => {
                cluster.joins.push((seed.node.clone(), reply));
                cluster.core.join(&seed, now);
            }
            Event::Leave(reply) => {
                let _ = reply.send(cluster.core.leave(now).map_err(CommandError::Refused));
            }
            Event::ForceLeave { node, reply } => {
                let result = cluster.core.force_leave(&node, now);
                let _ = reply.send(result.map_err(CommandError::Refused));
            }
            _ => {}
        }
    }

    /// Moves work between the broker and the cluster core and carries out the cluster's
    /// actions; true if anything happened (the broker may have new actions then).
    fn pump_cluster(&mut self, now: Duration) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return false;
        };
        let mut progressed = false;
        while let Some(change) = self.core.poll_route_change() {
            progressed = true;
            match change {
                RouteChange::Added(filter) => cluster.core.local_route_added(&filter, now),
                RouteChange::Removed(filter) => cluster.core.local_route_removed(&filter, now),
            }
        }
        while let Some(publish) = self.core.poll_forward() {
            progressed = true;
            if !publish.expired(now) {
                cluster
                    .core
                    .forward(&super::forward::forward_ref(&publish, now));
            }
        }
        while let Some(action) = cluster.core.poll_action() {
            progressed = true;
            match action {
                ClusterAction::Send { link, frame } => {
                    let Some(out) = cluster.links.get(&link) else {
                        cluster.dropped_frames += 1;
                        continue;
                    };
                    let len = frame.len();
                    let queued = out.shared.queued.fetch_add(len, Ordering::AcqRel) + len;
                    if queued > self.max_queued_bytes {
                        out.shared.abort.notify_one();
                        out.shared.stop_reader.notify_one();
                        cluster.links.remove(&link);
                        cluster.core.link_lost(link, LinkLoss::SlowPeer, now);
                        continue;
                    }
                    out.shared.push(frame);
                }
                ClusterAction::Close { link } => {
                    // Dropping the `LinkOut` closes its writer.
                    cluster.links.remove(&link);
                }
                ClusterAction::Dial { node, host, port } => {
                    let timeout = cluster.core.connect_timeout();
                    let span = cluster.ctx.node_span.clone();
                    let dial = cluster.ctx.clone().dial(node, host, port, timeout);
                    tokio::spawn(dial.instrument(span));
                }
                ClusterAction::Deliver(forwarded) => {
                    let version = super::forward::retain_version(&forwarded);
                    match super::forward::into_publish(forwarded) {
                        Some(publish) => self.core.deliver_forwarded(publish, version, now),
                        None => tracing::debug!("dropping a forwarded publish with a bad QoS"),
                    }
                }
                ClusterAction::SyncRetained { link } => {
                    let ours = self.core.retained_digest(now);
                    cluster.core.sync_retained(link, ours);
                }
                ClusterAction::RetainedWanted { link, digest } => {
                    let ours = self.core.retained_digest(now);
                    let items = self
                        .core
                        .retained_records(&digest, now)
                        .into_iter()
                        .map(super::forward::retained_item)
                        .collect();
                    cluster.core.answer_retained(link, ours, &digest, items);
                }
                ClusterAction::RoutesConfirmed(seq) => self.core.routes_confirmed(seq, now),
                ClusterAction::MergeRetained(items) => {
                    let records = items
                        .into_iter()
                        .filter_map(super::forward::retained_record)
                        .collect();
                    self.core.merge_retained(records, now);
                }
                ClusterAction::SaveMembers(text) => {
                    if let Some(file) = &cluster.members_file {
                        file.send_replace(text);
                    }
                }
                ClusterAction::Announce(bytes) => {
                    if let Some(out) = &cluster.datagrams {
                        out.announce(&bytes);
                    }
                }
                ClusterAction::Datagram { to, bytes } => {
                    if let Some(out) = &cluster.datagrams {
                        out.send(to, bytes);
                    }
                }
                ClusterAction::FrameLimit { link, max } => {
                    if let Some(out) = cluster.links.get(&link) {
                        out.gate.raise(max);
                    }
                }
                ClusterAction::JoinDone { node, result } => {
                    let (done, waiting) = std::mem::take(&mut cluster.joins)
                        .into_iter()
                        .partition(|(n, _)| *n == node);
                    cluster.joins = waiting;
                    for (_, reply) in done {
                        let _ = reply.send(result.clone().map_err(CommandError::Refused));
                    }
                }
            }
        }
        progressed
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
            cluster: self
                .cluster
                .as_ref()
                .map_or_else(ClusterMetrics::default, |c| {
                    let mut m = c.core.metrics();
                    m.forward_drops += c.dropped_frames;
                    m
                }),
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
        self.measure_output();
        loop {
            let now = self.now();
            let mut progressed = self.pump_cluster(now);
            for conn in std::mem::take(&mut self.drained) {
                progressed = true;
                self.core.connection_drained(conn, now);
            }
            while let Some(action) = self.core.poll_action() {
                progressed = true;
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
                    Action::NotifyDrained { conn } => {
                        if let Some(out) = self.conns.get_mut(&conn) {
                            out.want_drain = true;
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
                if progressed {
                    continue;
                }
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
            return;
        }
        // After the chunk is queued, so "drained" covers everything the core has sent.
        if std::mem::take(&mut out.want_drain) && out.shared.want_drain() {
            self.drained.push(conn);
        }
    }

    /// Every `MEASURE_OUTPUT`, sums what the writers hold and tells the core whether the node is
    /// over `output_budget`.
    fn measure_output(&mut self) {
        let now = self.now();
        if now < self.output_measured + MEASURE_OUTPUT {
            return;
        }
        self.output_measured = now;
        let unwritten: usize = self
            .conns
            .values()
            .map(|c| c.shared.queued.load(Ordering::Relaxed))
            .sum();
        self.core.set_congested(unwritten > self.output_budget);
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
        // Dropping a `ConnOut` / `LinkOut` tells its writer to flush and close.
        self.conns.clear();
        if let Some(cluster) = &mut self.cluster {
            cluster.links.clear();
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
