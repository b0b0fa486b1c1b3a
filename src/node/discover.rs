//! The socket side of multicast discovery (`cluster.discovery = mcast`): two UDP sockets and the
//! tasks that move datagrams between them and the broker task.
//!
//! - The **group socket** is bound with address reuse to the first of `cluster.mcast.ports` that
//!   can be bound and joins the group, so several nodes on one machine share it and each hears
//!   every announce.
//! - The **announce socket** is bound to an ephemeral port: announces leave from it to the group
//!   on every configured port, and pongs come back to it. A unicast answer to the shared group
//!   port would reach only one of the nodes sharing it; the ephemeral port is ours alone.
//!
//! Like `link`, these tasks decide nothing: every datagram goes to the cluster core
//! (`Cluster::handle_datagram`), which says what to send. Sends are lossy by design (a full queue
//! drops the datagram; the next announce repeats it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::NodeError;
use super::driver::Event;
use crate::config::{McastIface, McastSection};
use crate::net::{MulticastIface, MulticastOptions, Net};

/// Largest datagram read; anything longer is reported as such and dropped by the core.
const RECV_BUF: usize = 2048;
/// Datagrams waiting to be sent; more are dropped (announces repeat anyway).
const SEND_QUEUE: usize = 64;
/// Pause after a receive error (e.g. an ICMP error reported on the socket).
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one send-error log line per this period.
const SEND_ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the broker task uses to send discovery datagrams.
#[derive(Debug, Clone)]
pub(crate) struct DatagramOut {
    queue: mpsc::Sender<(SocketAddr, Bytes)>,
    /// The group on every configured port: where announces go.
    group_targets: Vec<SocketAddr>,
}

impl DatagramOut {
    /// Queues an announce to the group on every configured port.
    pub(crate) fn announce(&self, bytes: &Bytes) {
        for &target in &self.group_targets {
            self.send(target, bytes.clone());
        }
    }

    /// Queues one datagram (a pong) to `to`.
    pub(crate) fn send(&self, to: SocketAddr, bytes: Bytes) {
        if self.queue.try_send((to, bytes)).is_err() {
            tracing::debug!(%to, "discovery send queue full; datagram dropped");
        }
    }
}

/// The multicast options of `mcast`, with an interface name resolved to its index.
fn options<N: Net>(net: &N, mcast: &McastSection) -> Result<MulticastOptions, NodeError> {
    let iface = match (&mcast.addr, &mcast.iface) {
        (IpAddr::V4(_), McastIface::Addr(ip)) => MulticastIface::V4(*ip),
        (IpAddr::V6(_), McastIface::Addr(_)) => MulticastIface::Index(0),
        (_, McastIface::Name(name)) => {
            MulticastIface::Index(net.interface_index(name).map_err(|source| {
                NodeError::Discovery {
                    what: format!("cluster.mcast.iface = {name}"),
                    source,
                }
            })?)
        }
    };
    Ok(MulticastOptions {
        group: mcast.addr,
        iface,
        ttl: mcast.ttl,
        loopback: mcast.loopback,
    })
}

fn unspecified(group: IpAddr, port: u16) -> SocketAddr {
    match group {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

/// Binds both sockets, joins the group and spawns the tasks; returns the sending side for the
/// broker task and the group port listened on.
pub(crate) async fn start<N: Net>(
    net: &N,
    mcast: &McastSection,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    span: &tracing::Span,
) -> Result<(DatagramOut, u16), NodeError> {
    let opts = options(net, mcast)?;
    let mut last_error = None;
    let mut group_socket = None;
    for &port in &mcast.ports {
        let bound = async {
            let socket = net.bind_udp(unspecified(opts.group, port)).await?;
            net.join_multicast(&socket, opts)?;
            Ok::<_, std::io::Error>(socket)
        };
        match bound.await {
            Ok(socket) => {
                group_socket = Some((socket, port));
                break;
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "cannot listen for discovery on this port");
                last_error = Some((port, e));
            }
        }
    }
    let Some((group_socket, port)) = group_socket else {
        let (port, source) = last_error
            .unwrap_or_else(|| (0, std::io::Error::other("cluster.mcast.ports is empty")));
        return Err(NodeError::Discovery {
            what: format!("joining {} on port {port}", opts.group),
            source,
        });
    };
    let local = match opts.iface {
        MulticastIface::V4(ip) if !ip.is_unspecified() => SocketAddr::new(IpAddr::V4(ip), 0),
        _ => unspecified(opts.group, 0),
    };
    let announce_socket = async {
        let socket = net.bind_udp(local).await?;
        net.multicast_sender(&socket, opts)?;
        Ok::<_, std::io::Error>(socket)
    }
    .await
    .map_err(|source| NodeError::Discovery {
        what: format!("opening the announce socket on {local}"),
        source,
    })?;
    let group_socket = Arc::new(group_socket);
    let announce_socket = Arc::new(announce_socket);
    for socket in [Arc::clone(&group_socket), Arc::clone(&announce_socket)] {
        let task = receive(net.clone(), socket, events.clone(), stop.clone());
        tokio::spawn(task.instrument(span.clone()));
    }
    let (queue, outgoing) = mpsc::channel(SEND_QUEUE);
    tokio::spawn(send(net.clone(), announce_socket, outgoing).instrument(span.clone()));
    tracing::info!(
        parent: span,
        group = %opts.group,
        port,
        ports = ?mcast.ports,
        "multicast discovery listening"
    );
    let out = DatagramOut {
        queue,
        group_targets: mcast
            .ports
            .iter()
            .map(|&p| SocketAddr::new(opts.group, p))
            .collect(),
    };
    Ok((out, port))
}

/// Hands every datagram of `socket` to the broker task until the node stops.
async fn receive<N: Net>(
    net: N,
    socket: Arc<N::UdpSocket>,
    events: mpsc::Sender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.changed() => break,
            received = net.recv_from(&socket, &mut buf) => received,
        };
        match received {
            Ok((len, from)) => {
                let bytes = Bytes::copy_from_slice(buf.get(..len).unwrap_or(&buf));
                if events.send(Event::Datagram { from, bytes }).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "discovery receive failed");
                tokio::time::sleep(RECV_ERROR_PAUSE).await;
            }
        }
    }
}

/// Sends queued datagrams from the announce socket until the broker task lets go.
async fn send<N: Net>(
    net: N,
    socket: Arc<N::UdpSocket>,
    mut outgoing: mpsc::Receiver<(SocketAddr, Bytes)>,
) {
    let mut last_log: Option<tokio::time::Instant> = None;
    let mut failed = 0u64;
    while let Some((to, bytes)) = outgoing.recv().await {
        if let Err(e) = net.send_to(&socket, &bytes, to).await {
            failed += 1;
            let now = net.now();
            if last_log.is_none_or(|at| now.saturating_duration_since(at) >= SEND_ERROR_LOG_EVERY) {
                last_log = Some(now);
                tracing::warn!(
                    %to,
                    error = %e,
                    failed,
                    "cannot send a discovery datagram (no multicast route? set cluster.mcast.iface)"
                );
            }
        }
    }
}
