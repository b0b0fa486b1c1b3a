//! The node: the only async code of flockmq. It binds the listeners, accepts connections, runs
//! one reader and one writer task per connection and ONE task that owns the broker core, and
//! serves the admin endpoint. Generic over `Net`, so production and every simulated host run
//! the same code.
//!
//! Determinism: time only from `Net::now` and tokio timers, `select!` always `biased`, no OS
//! threads, the core's RNG seeded from the config (`Config::rng_seed`). No protocol decisions
//! are made here; they belong to the sans-IO cores.

mod conn;
mod core;
mod driver;
#[cfg(test)]
mod tests;

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use self::conn::Acceptor;
use self::core::{Core, MqttWire, Wire};
use self::driver::{Driver, Event};
use crate::broker::{Broker, BrokerMetrics, ClientInfo};
use crate::config::Config;
use crate::net::Net;

/// Depth of the event queue into the broker task; readers wait when it is full (backpressure).
const EVENT_QUEUE: usize = 1024;
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
    /// The node has shut down (or its broker task died).
    #[error("the node is not running")]
    Stopped,
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
}

/// A started node. Dropping it stops accepting (MQTT and admin) but leaves open connections and
/// the broker task running until they end; call `shutdown` for a graceful stop.
#[derive(Debug)]
pub struct RunningNode {
    name: String,
    mqtt_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    handle: NodeHandle,
    stop: watch::Sender<bool>,
    alive: mpsc::Receiver<()>,
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

    /// A handle for queries.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
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

    /// Graceful stop: stop accepting, let the broker say goodbye to every client (DISCONNECT
    /// 0x8B for MQTT 5, wills), flush every connection for up to 2 s, and return.
    pub async fn shutdown(mut self) {
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

/// Starts a node on `net`: binds the MQTT listener (and the admin endpoint unless
/// `admin.bind = off`), spawns its tasks and returns once both are listening.
pub async fn start<N: Net>(net: N, config: Config) -> Result<RunningNode, NodeError> {
    let broker = Broker::new(config.broker_config(), config.rng_seed(net.entropy_seed()));
    start_with::<N, Broker, MqttWire>(net, config, broker).await
}

/// `start` with any core and wire format (tests drive the machinery with fakes).
pub(crate) async fn start_with<N: Net, C: Core, W: Wire>(
    net: N,
    config: Config,
    core: C,
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

    let admin_addr = match config.admin.bind {
        None => None,
        Some(addr) => {
            let admin_listener = net
                .bind(addr)
                .await
                .map_err(|source| NodeError::BindAdmin { addr, source })?;
            let local = net
                .local_addr(&admin_listener)
                .map_err(|source| NodeError::BindAdmin { addr, source })?;
            let server = crate::admin::serve(
                net.clone(),
                admin_listener,
                handle.clone(),
                config.admin.token.clone(),
                stop_rx.clone(),
                alive_tx.clone(),
            );
            tokio::spawn(server.instrument(node_span.clone()));
            Some(local)
        }
    };

    let max_packet_size = usize::try_from(config.mqtt.max_packet_size).unwrap_or(usize::MAX);
    let max_queued_bytes = MIN_SLOW_CONSUMER_BYTES.max(max_packet_size.saturating_mul(4));
    let driver =
        Driver::<N, C, W>::new(net.clone(), core, name.clone(), mqtt_addr, max_queued_bytes);
    tokio::spawn(driver.run(events_rx).instrument(node_span.clone()));

    let acceptor = Acceptor::<N, W> {
        net,
        listener,
        events: events_tx,
        stop: stop_rx,
        alive: alive_tx,
        max_packet_size,
        node_span: node_span.clone(),
        wire: PhantomData,
    };
    tokio::spawn(acceptor.run().instrument(node_span.clone()));

    let node = RunningNode {
        name,
        mqtt_addr,
        admin_addr,
        handle,
        stop: stop_tx,
        alive: alive_rx,
    };
    tracing::info!(parent: &node_span, "{}", node.startup_line());
    Ok(node)
}
