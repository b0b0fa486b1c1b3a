//! `SimNet`: the `Net` of a turmoil host (feature `sim`). Every call must run inside a turmoil
//! host or client; time is the host's simulated tokio clock.
//!
//! It adds what turmoil 0.7 lacks:
//! - **Datagram loss** for UDP (multicast discovery) that leaves TCP alone: turmoil's `fail_rate`
//!   drops whole links, TCP included, and turmoil TCP never retransmits. The loss is applied on
//!   receive and drawn from one seeded `StdRng` per sending host, so a run replays bit for bit.
//! - **Connect timeouts**: a connect to a crashed host hangs in turmoil until the host comes back;
//!   here it fails with `ErrorKind::TimedOut` after `connect_timeout` (3 s unless set).
//! - **Strict lookups**: `lookup` of a name that is not a registered turmoil host fails with
//!   `ErrorKind::NotFound` (turmoil's own `lookup` would invent a fresh address). A node name
//!   `name@host` resolves by its host part, so `n1@n1` works.
//!
//! The knobs live in a thread-local registry: turmoil runs a whole simulation on the calling
//! thread, and parallel tests each get their own thread, so simulations never see each other's
//! settings. The simulator calls `SimNet::reset(seed)` before building each simulation. Must never
//! read the real clock or draw unseeded randomness.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use turmoil::net::{TcpListener, TcpStream, UdpSocket};

use super::{MulticastOptions, Net};

/// How long a connect may take before it fails with `TimedOut` (unless changed).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The network of the turmoil host the current task runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNet;

/// Per-thread (= per-simulation) settings and RNGs of every `SimNet`.
struct Knobs {
    seed: u64,
    datagram_loss: f64,
    /// One loss RNG per sending host, created on first use from `seed` and the host's address.
    loss_rngs: BTreeMap<IpAddr, StdRng>,
    datagrams_dropped: u64,
    connect_timeout: Duration,
}

impl Knobs {
    fn new(seed: u64) -> Knobs {
        Knobs {
            seed,
            datagram_loss: 0.0,
            loss_rngs: BTreeMap::new(),
            datagrams_dropped: 0,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Whether the next datagram from `sender` is lost.
    fn lose(&mut self, sender: IpAddr) -> bool {
        if self.datagram_loss <= 0.0 {
            return false;
        }
        let seed = self.seed ^ fnv1a(sender.to_string().as_bytes());
        let rng = self
            .loss_rngs
            .entry(sender)
            .or_insert_with(|| StdRng::seed_from_u64(seed));
        let lost = rng.random_bool(self.datagram_loss.clamp(0.0, 1.0));
        if lost {
            self.datagrams_dropped += 1;
        }
        lost
    }
}

thread_local! {
    static KNOBS: RefCell<Knobs> = RefCell::new(Knobs::new(0));
}

/// FNV-1a 64, to derive per-host seeds without std's randomly keyed hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SimNet {
    /// Forgets every setting of this thread's simulation and seeds the loss RNGs from `seed`;
    /// call before building each simulation so runs of one seed are identical.
    pub fn reset(seed: u64) {
        KNOBS.with(|k| *k.borrow_mut() = Knobs::new(seed));
    }

    /// Sets the probability (0..=1) that a UDP datagram is lost on its way to a receiver.
    /// TCP is not affected.
    pub fn set_datagram_loss(rate: f64) {
        KNOBS.with(|k| k.borrow_mut().datagram_loss = rate.clamp(0.0, 1.0));
    }

    /// The datagram loss rate now in force.
    pub fn datagram_loss() -> f64 {
        KNOBS.with(|k| k.borrow().datagram_loss)
    }

    /// Datagrams dropped by the loss rate since the last `reset` (for run summaries).
    pub fn datagrams_dropped() -> u64 {
        KNOBS.with(|k| k.borrow().datagrams_dropped)
    }

    /// Sets how long `connect` waits before failing with `TimedOut`.
    pub fn set_connect_timeout(timeout: Duration) {
        KNOBS.with(|k| k.borrow_mut().connect_timeout = timeout);
    }

    fn connect_timeout() -> Duration {
        KNOBS.with(|k| k.borrow().connect_timeout)
    }

    fn lose_datagram(sender: IpAddr) -> bool {
        KNOBS.with(|k| k.borrow_mut().lose(sender))
    }
}

/// The host part of `name@host`, `[v6]` or a plain host.
fn host_part(host: &str) -> &str {
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

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
        let timeout = SimNet::connect_timeout();
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out after {timeout:?}"),
            )),
        }
    }

    async fn lookup(&self, host: &str) -> io::Result<IpAddr> {
        // `lookup_host` only consults turmoil's registered names (or parses an IP literal) and
        // fails with NotFound otherwise; `turmoil::lookup` would allocate a new address instead.
        let mut addrs = turmoil::net::lookup_host((host_part(host), 0)).await?;
        addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, host.to_string()))
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::bind(addr).await
    }

    fn join_multicast(&self, socket: &UdpSocket, options: MulticastOptions) -> io::Result<()> {
        // turmoil accepts only 0.0.0.0 / 127.0.0.1 (v4) or index 0 (v6) as the interface, and
        // applies loopback per receiving port.
        match options.group {
            IpAddr::V4(group) => {
                socket.join_multicast_v4(group, std::net::Ipv4Addr::UNSPECIFIED)?;
                socket.set_multicast_loop_v4(options.loopback)
            }
            IpAddr::V6(group) => {
                socket.join_multicast_v6(&group, 0)?;
                socket.set_multicast_loop_v6(options.loopback)
            }
        }
    }

    fn multicast_sender(&self, socket: &UdpSocket, options: MulticastOptions) -> io::Result<()> {
        // turmoil has no TTL and no interface choice.
        match options.group {
            IpAddr::V4(_) => socket.set_multicast_loop_v4(options.loopback),
            IpAddr::V6(_) => socket.set_multicast_loop_v6(options.loopback),
        }
    }

    fn interface_index(&self, _name: &str) -> io::Result<u32> {
        // A turmoil host has one interface.
        Ok(0)
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
        loop {
            let (len, from) = socket.recv_from(buf).await?;
            if !SimNet::lose_datagram(from.ip()) {
                return Ok((len, from));
            }
            tracing::trace!(%from, len, "datagram lost (simulated loss rate)");
        }
    }

    #[allow(clippy::disallowed_methods)] // the host's paused tokio clock is the simulated time
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + turmoil::since_epoch().unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn host_part_takes_the_host_of_a_node_name() {
        assert_eq!(host_part("n1@n1"), "n1");
        assert_eq!(host_part("n1"), "n1");
        assert_eq!(host_part("a@[::1]"), "::1");
        assert_eq!(host_part("192.168.0.1"), "192.168.0.1");
    }

    fn run(sim: &mut turmoil::Sim<'_>) {
        sim.run().expect("simulation failed");
    }

    #[test]
    fn lookup_of_an_unknown_name_fails_and_node_names_resolve() {
        SimNet::reset(1);
        let mut sim = turmoil::Builder::new().build();
        sim.host("n1", || async {
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("c1", async {
            let n1 = SimNet.lookup("n1@n1").await?;
            assert_eq!(n1, SimNet.lookup("n1").await?);
            let err = SimNet.lookup("nope@nope").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert_eq!(
                SimNet.lookup("10.1.2.3").await?,
                IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
            );
            Ok(())
        });
        run(&mut sim);
    }

    #[test]
    fn connect_to_a_crashed_host_times_out() {
        SimNet::reset(1);
        SimNet::set_connect_timeout(Duration::from_secs(2));
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(30))
            .build();
        sim.host("n1", || async {
            let listener = TcpListener::bind("0.0.0.0:1883").await?;
            loop {
                let _ = listener.accept().await?;
            }
        });
        sim.client("c1", async {
            let addr = SocketAddr::new(SimNet.lookup("n1").await?, 1883);
            SimNet.connect(addr).await?;
            // The harness crashes n1 at 1 s; the next connect must give up, not hang.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let start = turmoil::sim_elapsed().unwrap_or_default();
            let err = SimNet.connect(addr).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let waited = turmoil::sim_elapsed().unwrap_or_default() - start;
            assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3));
            Ok(())
        });
        while sim.elapsed() < Duration::from_secs(1) {
            sim.step().unwrap();
        }
        sim.crash("n1");
        run(&mut sim);
    }

    /// Sends `count` datagrams from `n1` to `c1` under `loss`; returns how many arrived.
    fn datagrams_arriving(seed: u64, loss: f64, count: u32) -> u32 {
        SimNet::reset(seed);
        SimNet::set_datagram_loss(loss);
        let received = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(60))
            .rng_seed(seed)
            .build();
        sim.host("n1", move || async move {
            let socket = SimNet.bind_udp("0.0.0.0:0".parse().unwrap()).await?;
            let to = SocketAddr::new(SimNet.lookup("c1").await?, 4369);
            for i in 0..count {
                SimNet.send_to(&socket, &i.to_be_bytes(), to).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::future::pending::<()>().await;
            Ok(())
        });
        let seen = received.clone();
        sim.client("c1", async move {
            let socket = SimNet.bind_udp("0.0.0.0:4369".parse().unwrap()).await?;
            let mut buf = [0u8; 16];
            let deadline = Duration::from_secs(u64::from(count) / 100 + 2);
            while let Ok(r) =
                tokio::time::timeout(deadline, SimNet.recv_from(&socket, &mut buf)).await
            {
                r?;
                seen.set(seen.get() + 1);
            }
            Ok(())
        });
        run(&mut sim);
        received.get()
    }

    #[test]
    fn datagram_loss_drops_about_the_rate_and_replays_exactly() {
        let a = datagrams_arriving(7, 0.5, 400);
        assert!((150..=250).contains(&a), "{a} of 400 arrived at 50% loss");
        assert_eq!(a, datagrams_arriving(7, 0.5, 400), "same seed, same losses");
        assert_eq!(SimNet::datagrams_dropped(), u64::from(400 - a));
        assert_eq!(datagrams_arriving(7, 0.0, 100), 100);
    }

    #[test]
    fn datagram_loss_leaves_tcp_alone() {
        SimNet::reset(3);
        SimNet::set_datagram_loss(1.0);
        let mut sim = turmoil::Builder::new().build();
        sim.host("n1", || async {
            let listener = TcpListener::bind("0.0.0.0:1883").await?;
            let (mut s, _) = listener.accept().await?;
            tokio::io::AsyncWriteExt::write_all(&mut s, b"hello").await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("c1", async {
            let addr = SocketAddr::new(SimNet.lookup("n1").await?, 1883);
            let mut s = SimNet.connect(addr).await?;
            let mut buf = [0u8; 5];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf).await?;
            assert_eq!(&buf, b"hello");
            Ok(())
        });
        run(&mut sim);
    }
}
