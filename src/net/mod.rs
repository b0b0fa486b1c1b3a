//! The `Net` abstraction: every socket, every name lookup and every clock reading of a node goes
//! through it, so the same node code runs on real sockets (`TokioNet`) and inside the turmoil
//! simulation (`SimNet`, feature `sim`).
//!
//! This is the only module allowed to read the real clock; it must never hold protocol state.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::SystemTime;

use ::tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "sim")]
mod sim;
mod tokio;

#[cfg(feature = "sim")]
pub use sim::{SimNet, SimWorld};
pub use tokio::TokioNet;

/// The local interface a multicast socket uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulticastIface {
    /// An IPv4 interface address (IPv4 groups); 0.0.0.0 lets the OS choose.
    V4(Ipv4Addr),
    /// An interface index (IPv6 groups); 0 lets the OS choose.
    Index(u32),
}

/// Multicast settings of the discovery sockets (`cluster.mcast.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastOptions {
    /// The group, e.g. 239.192.0.1 or ff02::4:1.
    pub group: IpAddr,
    /// The local interface to join on and send from.
    pub iface: MulticastIface,
    /// Hop limit of sent datagrams (ignored by the simulation, which has no TTL).
    pub ttl: u32,
    /// Whether our own datagrams are looped back to us.
    pub loopback: bool,
}

/// The network and clock a node runs on. Cloning is cheap; every clone is the same network.
///
/// Futures are `Send` so node tasks can be `tokio::spawn`ed on both backends.
pub trait Net: Clone + Send + Sync + 'static {
    /// A listening TCP socket.
    type TcpListener: Send + Sync + 'static;
    /// A connected TCP stream (split with `tokio::io::split` by the node).
    type TcpStream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound UDP socket (cluster multicast discovery).
    type UdpSocket: Send + Sync + 'static;

    /// Binds a TCP listener; port 0 picks a free port (see `local_addr`).
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::TcpListener>> + Send;

    /// Waits for the next connection on `listener`: the stream and the peer's address.
    fn accept(
        &self,
        listener: &Self::TcpListener,
    ) -> impl Future<Output = io::Result<(Self::TcpStream, SocketAddr)>> + Send;

    /// The address `listener` is really bound to (the real port after binding port 0).
    fn local_addr(&self, listener: &Self::TcpListener) -> io::Result<SocketAddr>;

    /// Opens a TCP connection. May hang (turmoil: a crashed host); callers wrap it in a timeout.
    fn connect(&self, addr: SocketAddr)
    -> impl Future<Output = io::Result<Self::TcpStream>> + Send;

    /// Resolves a host name (or IP literal) to one address.
    fn lookup(&self, host: &str) -> impl Future<Output = io::Result<IpAddr>> + Send;

    /// Binds a UDP socket with address reuse, so several nodes on one machine share a port.
    fn bind_udp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::UdpSocket>> + Send;

    /// Joins `options.group` on `socket` (a socket bound to a group port), on `options.iface`.
    fn join_multicast(&self, socket: &Self::UdpSocket, options: MulticastOptions)
    -> io::Result<()>;

    /// Prepares `socket` to send to the group: outgoing interface, TTL / hop limit, loopback.
    fn multicast_sender(
        &self,
        socket: &Self::UdpSocket,
        options: MulticastOptions,
    ) -> io::Result<()>;

    /// The index of the network interface called `name` (IPv6 groups name their interface).
    fn interface_index(&self, name: &str) -> io::Result<u32>;

    /// Sends one datagram.
    fn send_to(
        &self,
        socket: &Self::UdpSocket,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Receives one datagram into `buf`: its length and sender.
    fn recv_from(
        &self,
        socket: &Self::UdpSocket,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// Reads a whole state file of the node (`Ok(None)` when it does not exist yet).
    fn read_state(&self, path: &Path) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send;

    /// Replaces a state file of the node as a whole (never leaves it half written), creating
    /// its directory. The simulation keeps it per host, across crashes, like a disk.
    fn write_state(&self, path: &Path, bytes: &[u8])
    -> impl Future<Output = io::Result<()>> + Send;

    /// Monotonic time of this network; `tokio::time::sleep_until` understands it on both backends.
    fn now(&self) -> ::tokio::time::Instant;

    /// Wall-clock time (only for things shown to humans, never for protocol decisions).
    fn system_time(&self) -> SystemTime;

    /// A fresh unpredictable seed for the node's RNG when `node.seed = auto`, or `None` where
    /// runs must replay (the simulation), in which case the seed derives from the node name.
    /// Production needs fresh entropy: handshake nonces must not repeat across restarts.
    fn entropy_seed(&self) -> Option<u64> {
        None
    }
}
