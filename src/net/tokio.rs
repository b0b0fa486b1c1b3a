//! `TokioNet`: the production `Net` on real sockets (tokio + socket2) and the real clocks.
//!
//! The one place in the crate that reads the wall clock and the OS monotonic clock.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::SystemTime;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::{MulticastIface, MulticastOptions, Net};

/// Pending connections the kernel queues before `accept`: enough for a reconnect storm.
const LISTEN_BACKLOG: i32 = 1024;

/// The real network and clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNet;

impl TokioNet {
    /// The production network.
    pub fn new() -> TokioNet {
        TokioNet
    }
}

fn reusable_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    // A restarted node must get its port back while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Net for TokioNet {
    type TcpListener = TcpListener;
    type TcpStream = TcpStream;
    type UdpSocket = UdpSocket;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = reusable_socket(addr, Type::STREAM, Protocol::TCP)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        TcpListener::from_std(socket.into())
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        // MQTT is request/response with small packets: Nagle would add latency to every ack.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        Ok((stream, peer))
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn lookup(&self, host: &str) -> io::Result<IpAddr> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(ip);
        }
        let mut addrs = tokio::net::lookup_host((bare, 0)).await?;
        addrs.next().map(|a| a.ip()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address found"))
        })
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = reusable_socket(addr, Type::DGRAM, Protocol::UDP)?;
        // Several nodes on one machine listen on the same discovery port.
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        UdpSocket::from_std(socket.into())
    }

    fn join_multicast(&self, socket: &UdpSocket, options: MulticastOptions) -> io::Result<()> {
        // Linux otherwise hands a socket bound to 0.0.0.0:PORT the datagrams of every group any
        // socket on the machine joined on PORT (another cluster's group, for instance).
        #[cfg(target_os = "linux")]
        {
            let sock = socket2::SockRef::from(socket);
            match options.group {
                IpAddr::V4(_) => sock.set_multicast_all_v4(false)?,
                IpAddr::V6(_) => sock.set_multicast_all_v6(false)?,
            }
        }
        match (options.group, options.iface) {
            (IpAddr::V4(group), MulticastIface::V4(iface)) => {
                socket.join_multicast_v4(group, iface)
            }
            (IpAddr::V6(group), MulticastIface::Index(index)) => {
                socket.join_multicast_v6(&group, index)
            }
            _ => Err(mismatched_iface()),
        }
    }

    fn multicast_sender(&self, socket: &UdpSocket, options: MulticastOptions) -> io::Result<()> {
        let sock = socket2::SockRef::from(socket);
        match (options.group, options.iface) {
            (IpAddr::V4(_), MulticastIface::V4(iface)) => {
                if !iface.is_unspecified() {
                    sock.set_multicast_if_v4(&iface)?;
                }
                sock.set_multicast_ttl_v4(options.ttl)?;
                sock.set_multicast_loop_v4(options.loopback)
            }
            (IpAddr::V6(_), MulticastIface::Index(index)) => {
                if index != 0 {
                    sock.set_multicast_if_v6(index)?;
                }
                sock.set_multicast_hops_v6(options.ttl)?;
                sock.set_multicast_loop_v6(options.loopback)
            }
            _ => Err(mismatched_iface()),
        }
    }

    fn interface_index(&self, name: &str) -> io::Result<u32> {
        if let Ok(index) = name.parse::<u32>() {
            return Ok(index);
        }
        let path = std::path::Path::new("/sys/class/net")
            .join(name)
            .join("ifindex");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("no network interface '{name}' ({e})"))
        })?;
        text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not an interface index", path.display()),
            )
        })
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

    async fn read_state(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        // Small files read rarely (at start): plain blocking I/O is fine here.
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_state(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Write aside, flush to disk, then rename over: a crash leaves the old or the new file.
        let tmp = path.with_extension("tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    #[allow(clippy::disallowed_methods)] // net/ is the one place that reads the clock
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // net/ is the one place that reads the clock
    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }

    fn entropy_seed(&self) -> Option<u64> {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState keys come from the OS's entropy source on every construction.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Some(h.finish())
    }
}

fn mismatched_iface() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "an IPv4 group needs an interface address, an IPv6 group an interface index",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_seeds_differ_between_calls() {
        let net = TokioNet::new();
        assert_ne!(net.entropy_seed(), net.entropy_seed());
        assert!(net.entropy_seed().is_some());
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bind_port_zero_reports_real_port_and_accepts() {
        let net = TokioNet::new();
        let listener = net.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = net.local_addr(&listener).unwrap();
        assert_ne!(addr.port(), 0);
        let client = tokio::spawn(async move {
            let mut s = TokioNet.connect(addr).await.unwrap();
            s.write_all(b"hi").await.unwrap();
        });
        let (mut stream, peer) = net.accept(&listener).await.unwrap();
        assert_eq!(peer.ip(), addr.ip());
        assert!(stream.nodelay().unwrap());
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        client.await.unwrap();
    }

    #[tokio::test]
    async fn lookup_accepts_ip_literals_with_and_without_brackets() {
        let net = TokioNet::new();
        assert_eq!(
            net.lookup("127.0.0.2").await.unwrap(),
            "127.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            net.lookup("[::1]").await.unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        );
    }
}
