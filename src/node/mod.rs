//! The node: the only async code of flockmq. It binds the listeners, accepts connections, runs
//! one reader and one writer task per connection and ONE task that owns the broker core. It
//! knows nothing of the admin endpoint: `server` attaches that beside it (see [`Attachment`]).
//! Generic over `Net`, so production and every simulated host run
//! the same code.
//!
//! Determinism: time only from `Net::now` and tokio timers, `select!` always `biased`, no OS
//! threads, the core's RNG seeded from the config (`Config::rng_seed`). No protocol decisions
//! are made here; they belong to the sans-IO cores.

mod conn;
mod core;
mod discover;
mod driver;
mod forward;
mod framed;
mod link;
#[cfg(test)]
mod tests;

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use self::conn::Acceptor;
use self::core::{Core, MqttWire, Wire};
use self::driver::{ClusterSide, Driver, Event};
use self::link::LinkCtx;
use crate::broker::{Broker, BrokerMetrics, ClientInfo};
use crate::cluster::{
    Cluster, ClusterMetrics, ClusterStatus, NodeHost, NodeName, RouteEntry, SeedNode,
};
use crate::config::Config;
use crate::net::Net;

/// Depth of the event queue into the broker task; readers wait when it is full (backpressure).
const EVENT_QUEUE: usize = 1024;
/// How long `cluster join` waits for the link to come up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long shutdown waits for connections to flush their last bytes.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Unwritten bytes after which a client is dropped as a slow consumer (at least this much, and
/// at least four maximum-size packets).
const MIN_SLOW_CONSUMER_BYTES: usize = 16 * 1024 * 1024;

/// Why a node could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The MQTT listener could not be bound.
    #[error("cannot listen for MQTT on {addr}")]
    BindMqtt {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The admin listener could not be bound.
    #[error("cannot listen for admin HTTP on {addr}")]
    BindAdmin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The cluster listener could not be bound.
    #[error("cannot listen for cluster links on {addr}: {source}")]
    BindCluster {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Multicast discovery could not open its sockets.
    #[error("multicast discovery: {what}: {source}")]
    Discovery {
        what: String,
        source: std::io::Error,
    },
    /// The node has shut down (or its broker task died).
    #[error("the node is not running")]
    Stopped,
}

/// Why a cluster command (join, leave, force-leave) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The node is not running.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The cluster core refused or the attempt failed; the text is shown to the operator.
    #[error("{0}")]
    Refused(String),
    /// No answer within the command's time limit.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// A snapshot of the node's counters (`GET /metrics`, `GET /api/v1/metrics`, the simulator).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeMetrics {
    /// The node name.
    pub node: String,
    /// The address the MQTT listener is bound to.
    pub mqtt_listener: SocketAddr,
    /// Seconds since the node started (on the node's `Net` clock).
    pub uptime: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections dropped because the client did not read its messages.
    pub slow_consumer_disconnects: u64,
    /// The broker's counters; `bytes_in` / `bytes_out` are the node's socket byte counts.
    pub broker: BrokerMetrics,
    /// The cluster's counters (all zero on a node without clustering).
    pub cluster: ClusterMetrics,
}

/// A cheap, clonable way to ask a running node things; what the admin endpoint serves and what
/// the simulator calls directly.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    events: mpsc::Sender<Event>,
}

impl NodeHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Event) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(make(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)
    }

    /// Counters of the node and its broker.
    pub async fn metrics(&self) -> Result<NodeMetrics, NodeError> {
        self.ask(Event::Metrics).await
    }

    /// Every session, connected or not, sorted by client id.
    pub async fn clients(&self) -> Result<Vec<ClientInfo>, NodeError> {
        self.ask(Event::Clients).await
    }

    /// The digest of the retained set, one value per bucket: equal on two nodes when they hold
    /// the same retained values and clears (the simulator's convergence check).
    pub async fn retained_digest(&self) -> Result<Vec<u64>, NodeError> {
        self.ask(Event::RetainedDigest).await
    }

    /// Running and stopped members, each list sorted (`ctl cluster status`, convergence checks).
    pub async fn cluster_status(&self) -> Result<ClusterStatus, NodeError> {
        self.ask(Event::ClusterStatus).await
    }

    /// The route table, local routes included: filter -> nodes, sorted by filter and node.
    pub async fn routes(&self) -> Result<Vec<RouteEntry>, NodeError> {
        self.ask(Event::Routes).await
    }

    /// `ctl cluster join NODE`: returns once the link to `seed` is up, or why it is not.
    pub async fn cluster_join(&self, seed: SeedNode) -> Result<(), CommandError> {
        let answer = self.ask(|reply| Event::Join { seed, reply });
        match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
            Ok(result) => result?,
            Err(_) => Err(CommandError::TimedOut(JOIN_TIMEOUT)),
        }
    }

    /// `ctl cluster leave`: this node leaves its cluster (until the next join or restart).
    pub async fn cluster_leave(&self) -> Result<(), CommandError> {
        self.ask(Event::Leave).await?
    }

    /// `ctl cluster force-leave NODE`: removes a member (normally a stopped one).
    pub async fn cluster_force_leave(&self, node: NodeName) -> Result<(), CommandError> {
        self.ask(|reply| Event::ForceLeave { node, reply }).await?
    }
}

/// A started node. Dropping it stops accepting (MQTT and admin) but leaves open connections and
/// the broker task running until they end; call `shutdown` for a graceful stop.
#[derive(Debug)]
pub struct RunningNode {
    name: String,
    mqtt_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    cluster_addr: Option<SocketAddr>,
    handle: NodeHandle,
    stop: watch::Sender<bool>,
    alive: mpsc::Receiver<()>,
    /// Handed to services attached beside the node (`attach`); dropped when shutdown starts.
    alive_tx: Option<mpsc::Sender<()>>,
    span: tracing::Span,
}

/// What a service running beside a node (the admin endpoint) needs to share its lifecycle: the
/// handle to ask the node, the stop signal, and an `alive` token whose clones the node's
/// graceful shutdown waits for.
#[derive(Debug)]
pub struct Attachment {
    /// Asks the node.
    pub handle: NodeHandle,
    /// Turns true when the node stops accepting.
    pub stop: watch::Receiver<bool>,
    /// Hold it (and a clone per connection) while working; shutdown waits until all are gone.
    pub alive: mpsc::Sender<()>,
    /// The node's tracing span.
    pub span: tracing::Span,
}

impl RunningNode {
    /// Where the MQTT listener really is (the real port when bound to port 0).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Where the admin endpoint really is; `None` when `admin.bind = off`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the cluster listener really is; `None` for a node started without clustering.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// A handle for queries.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Lets a service run beside the node and stop with it (see [`Attachment`]).
    pub fn attach(&self) -> Attachment {
        Attachment {
            handle: self.handle.clone(),
            stop: self.stop.subscribe(),
            alive: self.alive_tx.clone().unwrap_or_else(|| mpsc::channel(1).0),
            span: self.span.clone(),
        }
    }

    /// Records where an attached admin endpoint listens (for `admin_addr` and the startup line).
    pub fn set_admin_addr(&mut self, addr: SocketAddr) {
        self.admin_addr = Some(addr);
    }

    /// The node's tracing span (`node = NAME`).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The startup line, `flockmq NODE listening for MQTT on ADDR, admin on ADDR|off`; logged by
    /// `start` and printed on stdout by the binary so scripts and tests can find the port.
    pub fn startup_line(&self) -> String {
        let admin = self
            .admin_addr
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        format!(
            "flockmq {} listening for MQTT on {}, admin on {admin}",
            self.name, self.mqtt_addr
        )
    }

    /// Graceful stop: stop accepting, publish the wills of every session, keep each connection
    /// open until the client has acknowledged everything it was sent (and peers every QoS >= 1
    /// forward) or `node.shutdown_timeout` passed, say goodbye (DISCONNECT 0x8B for MQTT 5),
    /// flush every connection for up to 2 s, and return.
    pub async fn shutdown(mut self) {
        self.alive_tx = None;
        let _ = self.stop.send(true);
        let (reply, done) = oneshot::channel();
        if self
            .handle
            .events
            .send(Event::Shutdown(reply))
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        drop(self.handle);
        // Every connection task and the acceptor hold an `alive` sender; all gone = all flushed.
        if tokio::time::timeout(SHUTDOWN_FLUSH, self.alive.recv())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not flush within {SHUTDOWN_FLUSH:?}");
        }
        tracing::info!("flockmq {} stopped", self.name);
    }
}

/// Starts a node on `net` without its admin endpoint: binds the MQTT listener (and the cluster
/// listener), spawns its tasks and returns once they are listening. `server::start` is the
/// whole process: this plus the admin endpoint and the startup line.
pub async fn start<N: Net>(net: N, config: Config) -> Result<RunningNode, NodeError> {
    let broker = Broker::new(config.broker_config(), config.rng_seed(net.entropy_seed()));
    start_with::<N, Broker, MqttWire>(net, config, broker, true).await
}

/// The address the cluster listener binds: the node name's IP, or every IPv4 interface for a
/// DNS host (the simulator's host names), on `cluster.port`.
fn cluster_bind(config: &Config) -> SocketAddr {
    let ip = match config.node.name.host() {
        NodeHost::Ip(ip) => *ip,
        NodeHost::Dns(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, config.cluster.port)
}

/// The member list file in `node.data_dir`: a restarted node dials these members again.
pub const MEMBERS_FILE: &str = "cluster-members";

/// Writes the latest member list whenever it changes (intermediate versions may be skipped).
async fn save_members<N: Net>(
    net: N,
    path: std::path::PathBuf,
    mut latest: watch::Receiver<String>,
) {
    while latest.changed().await.is_ok() {
        let text = latest.borrow_and_update().clone();
        if let Err(e) = net.write_state(&path, text.as_bytes()).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the member list");
        }
    }
}

/// A number that grows across restarts of a node (its start time in ms on the `Net` clock; the
/// simulated clock in the simulator), so peers can tell a restarted node from the old one.
fn incarnation<N: Net>(net: &N) -> u64 {
    let since_epoch = net
        .system_time()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// `start` with any core and wire format (tests drive the machinery with fakes); `clustered`
/// binds the cluster listener and runs the cluster core.
pub(crate) async fn start_with<N: Net, C: Core, W: Wire>(
    net: N,
    config: Config,
    mut core: C,
    clustered: bool,
) -> Result<RunningNode, NodeError> {
    let name = config.node.name.to_string();
    let node_span = tracing::info_span!("node", node = %name);

    let bind = config.listener.tcp_bind;
    let listener = net
        .bind(bind)
        .await
        .map_err(|source| NodeError::BindMqtt { addr: bind, source })?;
    let mqtt_addr = net
        .local_addr(&listener)
        .map_err(|source| NodeError::BindMqtt { addr: bind, source })?;

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = mpsc::channel(1);
    let handle = NodeHandle {
        events: events_tx.clone(),
    };

    let (cluster, cluster_addr) = if clustered {
        let addr = cluster_bind(&config);
        let listener = net
            .bind(addr)
            .await
            .map_err(|source| NodeError::BindCluster { addr, source })?;
        let bound = net
            .local_addr(&listener)
            .map_err(|source| NodeError::BindCluster { addr, source })?;
        let cluster_config = config.cluster_config(bound.port());
        for warning in config.warnings() {
            tracing::warn!(parent: &node_span, "{warning}");
        }
        let incarnation = incarnation(&net);
        // Mixed with the incarnation so a restarted node never reuses its handshake nonces; in
        // the simulator the incarnation comes from the simulated clock, so runs still replay.
        let seed = config.rng_seed(net.entropy_seed()) ^ incarnation.rotate_left(32);
        let ctx = LinkCtx {
            net: net.clone(),
            events: events_tx.clone(),
            alive: alive_tx.clone(),
            next_link: Arc::new(AtomicU64::new(0)),
            node_span: node_span.clone(),
        };
        let mut cluster =
            Cluster::new(cluster_config, incarnation, seed, std::time::Duration::ZERO);
        let members_path = config.node.data_dir.join(MEMBERS_FILE);
        match net.read_state(&members_path).await {
            Ok(Some(bytes)) => {
                let text = String::from_utf8_lossy(&bytes);
                cluster.restore_members(&text, std::time::Duration::ZERO);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                parent: &node_span,
                path = %members_path.display(),
                error = %e,
                "cannot read the member list of the last run; starting without it"
            ),
        }
        tokio::spawn(
            ctx.clone()
                .accept_loop(listener, stop_rx.clone())
                .instrument(node_span.clone()),
        );
        // Retained versions: this node's id, and a clock reading the start time (the
        // incarnation, ms) at `now` = 0.
        core.enable_cluster(
            crate::fnv::fnv1a(config.node.name.as_str().as_bytes()),
            incarnation,
        );
        // A SUBACK goes out once every linked node has the route (DESIGN §1).
        core.hold_subacks_for_routes();
        let mut side = ClusterSide::new(cluster, ctx);
        let (file_tx, file_rx) = watch::channel(String::new());
        tokio::spawn(
            save_members(net.clone(), members_path, file_rx).instrument(node_span.clone()),
        );
        side.members_file = Some(file_tx);
        if config.cluster.discovery == crate::cluster::Discovery::Mcast {
            let (out, _port) = discover::start(
                &net,
                &config.cluster.mcast,
                events_tx.clone(),
                stop_rx.clone(),
                &node_span,
            )
            .await?;
            side.datagrams = Some(out);
        }
        (Some(side), Some(bound))
    } else {
        (None, None)
    };

    let max_packet_size = usize::try_from(config.mqtt.max_packet_size).unwrap_or(usize::MAX);
    let max_queued_bytes = MIN_SLOW_CONSUMER_BYTES.max(max_packet_size.saturating_mul(4));
    let mut driver = Driver::<N, C, W>::new(
        net.clone(),
        core,
        name.clone(),
        mqtt_addr,
        max_queued_bytes,
        config.mqtt.output_budget,
        cluster,
    );
    driver.shutdown_timeout = config.node.shutdown_timeout;
    tokio::spawn(driver.run(events_rx).instrument(node_span.clone()));

    let acceptor = Acceptor::<N, W> {
        net,
        listener,
        events: events_tx,
        stop: stop_rx,
        alive: alive_tx.clone(),
        max_packet_size,
        node_span: node_span.clone(),
        wire: PhantomData,
    };
    tokio::spawn(acceptor.run().instrument(node_span.clone()));

    let node = RunningNode {
        name,
        mqtt_addr,
        admin_addr: None,
        cluster_addr,
        handle,
        stop: stop_tx,
        alive: alive_rx,
        alive_tx: Some(alive_tx),
        span: node_span,
    };
    Ok(node)
}
