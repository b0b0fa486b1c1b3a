//! `SimNet`: the `Net` of a turmoil host (feature `sim`). Every call must run inside a turmoil
//! host or client; time is the host's simulated tokio clock.
//!
//! Known gaps, to be filled by the simulator's issues: no datagram loss of its own (turmoil's
//! `fail_rate` would also break TCP), no connect timeout (a connect to a crashed host hangs; the
//! node wraps connects in timeouts), and `lookup` of an unknown name allocates a fresh address
//! instead of failing (turmoil's DNS behaviour).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use turmoil::net::{TcpListener, TcpStream, UdpSocket};

use super::{MulticastOptions, Net};

/// The network of the turmoil host the current task runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNet;

impl Net for SimNet {
    type TcpListener = TcpListener;
    type TcpStream = TcpStream;
    type UdpSocket = UdpSocket;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        listener.accept().await
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }

    async fn lookup(&self, host: &str) -> io::Result<IpAddr> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(turmoil::lookup(bare))
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::bind(addr).await
    }

    fn join_multicast(&self, socket: &UdpSocket, options: MulticastOptions) -> io::Result<()> {
        // turmoil has no TTL; it accepts only 0.0.0.0 or 127.0.0.1 as the interface.
        socket.join_multicast_v4(options.group, options.iface)?;
        socket.set_multicast_loop_v4(options.loopback)
    }

    async fn send_to(
        &self,
        socket: &UdpSocket,
        buf: &[u8],
        target: SocketAddr,
    ) -> io::Result<usize> {
        socket.send_to(buf, target).await
    }

    async fn recv_from(
        &self,
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        socket.recv_from(buf).await
    }

    #[allow(clippy::disallowed_methods)] // the host's paused tokio clock is the simulated time
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + turmoil::since_epoch().unwrap_or(Duration::ZERO)
    }
}
