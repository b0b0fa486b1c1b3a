//! `SimNet`: the `Net` of a turmoil host (feature `sim`). Every call must run inside a turmoil
//! host or client; time is the host's simulated tokio clock.
//!
//! It adds what turmoil 0.7 lacks:
//! - **Datagram loss** for UDP (multicast discovery) that leaves TCP alone: turmoil's `fail_rate`
//!   drops whole links, TCP included, and turmoil TCP never retransmits. The loss is applied on
//!   receive and drawn from one seeded `StdRng` per sending host, so a run replays bit for bit.
//! - **Datagram partitions**: UDP between two groups of hosts is dropped (both ways) while TCP
//!   between them keeps working, which turmoil's own `partition` cannot do. A receiver can only be
//!   named when it knows its host: a `SimWorld::net_on_host(ip)` does, a `SimWorld::net()` (clients,
//!   tests) does not and is never partitioned.
//! - **Strict lookups**: `lookup` of a name that is not a registered turmoil host fails with
//!   `ErrorKind::NotFound` (turmoil's own `lookup` would invent a fresh address). A node name
//!   `name@host` resolves by its host part, so `n1@n1` works.
//!
//! A connect to a crashed host hangs until the host comes back, as a connect to a dead machine
//! does on a real network: callers time connects out themselves (the node's dial does), so a
//! failed dial takes the same path in simulation as in production.
//!
//! The knobs and the hosts' disks live in a `SimWorld`, one per simulation, that the harness
//! creates and hands to every `SimNet` it builds: no global or thread-local state, nothing to
//! reset between runs. Must never read the real clock or draw unseeded randomness.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use turmoil::net::{TcpListener, TcpStream, UdpSocket};

use super::{MulticastOptions, Net};

/// The network of a turmoil host as seen by one task, optionally knowing that host's address
/// (needed for datagram partitions, which must name the receiver).
#[derive(Debug, Clone)]
pub struct SimNet {
    /// The address of the host this `SimNet` receives on; `None`: unknown, never partitioned.
    host: Option<IpAddr>,
    world: SimWorld,
}

/// The simulated network's own state for one simulation: datagram loss and partitions, the seeded
/// loss RNGs and every host's disk. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct SimWorld(Arc<Mutex<Knobs>>);

impl std::fmt::Debug for SimWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimWorld")
    }
}

/// Settings, RNGs and disks of one simulation.
struct Knobs {
    seed: u64,
    datagram_loss: f64,
    /// One loss RNG per sending host, created on first use from `seed` and the host's address.
    loss_rngs: BTreeMap<IpAddr, StdRng>,
    datagrams_dropped: u64,
    /// Directed (sender, receiver) pairs whose datagrams are dropped (datagram partitions).
    datagram_cuts: BTreeSet<(IpAddr, IpAddr)>,
    /// Each host's state files: they survive a crash and restart, like a disk.
    disk: BTreeMap<(Option<IpAddr>, PathBuf), Vec<u8>>,
}

impl Knobs {
    fn new(seed: u64) -> Knobs {
        Knobs {
            seed,
            datagram_loss: 0.0,
            loss_rngs: BTreeMap::new(),
            datagrams_dropped: 0,
            datagram_cuts: BTreeSet::new(),
            disk: BTreeMap::new(),
        }
    }

    /// Whether the next datagram from `sender` to `receiver` is dropped: by a datagram partition
    /// (checked first, so a cut link does not consume the loss RNG), else by the loss rate.
    fn drops_datagram(&mut self, sender: IpAddr, receiver: Option<IpAddr>) -> bool {
        if let Some(receiver) = receiver
            && self.datagram_cuts.contains(&(sender, receiver))
        {
            self.datagrams_dropped += 1;
            return true;
        }
        self.lose(sender)
    }

    /// Whether the next datagram from `sender` is lost.
    fn lose(&mut self, sender: IpAddr) -> bool {
        if self.datagram_loss <= 0.0 {
            return false;
        }
        let seed = self.seed ^ crate::fnv::fnv1a(sender.to_string().as_bytes());
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

impl SimWorld {
    /// A fresh network whose datagram loss RNGs derive from `seed`.
    pub fn new(seed: u64) -> SimWorld {
        SimWorld(Arc::new(Mutex::new(Knobs::new(seed))))
    }

    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        // One simulation runs on one thread: a poisoned lock only follows a panic that already
        // failed the run, and its state is still the best there is.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The network of a task that does not name its host (clients, tests): never partitioned.
    pub fn net(&self) -> SimNet {
        SimNet {
            host: None,
            world: self.clone(),
        }
    }

    /// The network of the host at `ip`: datagram partitions naming `ip` apply to what it receives.
    /// Call inside that host (e.g. with `turmoil::lookup(name)`) and hand it to the node.
    pub fn net_on_host(&self, ip: IpAddr) -> SimNet {
        SimNet {
            host: Some(ip),
            world: self.clone(),
        }
    }

    /// Drops UDP datagrams between every host of `a` and every host of `b`, both ways, until
    /// `repair_datagrams` or `heal_datagrams`; UDP within a group and all TCP are untouched.
    pub fn partition_datagrams(&self, a: &[IpAddr], b: &[IpAddr]) {
        let cuts = &mut self.knobs().datagram_cuts;
        for &x in a {
            for &y in b.iter().filter(|&&y| y != x) {
                cuts.insert((x, y));
                cuts.insert((y, x));
            }
        }
    }

    /// Undoes `partition_datagrams(a, b)` (also pairs another partition cut: like turmoil's
    /// `repair`, a link is either cut or not).
    pub fn repair_datagrams(&self, a: &[IpAddr], b: &[IpAddr]) {
        let cuts = &mut self.knobs().datagram_cuts;
        for &x in a {
            for &y in b {
                cuts.remove(&(x, y));
                cuts.remove(&(y, x));
            }
        }
    }

    /// Undoes every datagram partition.
    pub fn heal_datagrams(&self) {
        self.knobs().datagram_cuts.clear();
    }

    /// Sets the probability (0..=1) that a UDP datagram is lost on its way to a receiver.
    /// TCP is not affected.
    pub fn set_datagram_loss(&self, rate: f64) {
        self.knobs().datagram_loss = rate.clamp(0.0, 1.0);
    }

    /// The datagram loss rate now in force.
    pub fn datagram_loss(&self) -> f64 {
        self.knobs().datagram_loss
    }

    /// Datagrams dropped by the loss rate or a datagram partition so far (for run summaries).
    pub fn datagrams_dropped(&self) -> u64 {
        self.knobs().datagrams_dropped
    }
}

impl SimNet {
    /// The host address given to `net_on_host`, if any.
    pub fn host(&self) -> Option<IpAddr> {
        self.host
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
        TcpStream::connect(addr).await
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
            if !self.world.knobs().drops_datagram(from.ip(), self.host) {
                return Ok((len, from));
            }
            tracing::trace!(%from, len, "datagram lost (simulated loss or datagram partition)");
        }
    }

    #[allow(clippy::disallowed_methods)] // the host's paused tokio clock is the simulated time
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    async fn read_state(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let key = (self.host, path.to_path_buf());
        Ok(self.world.knobs().disk.get(&key).cloned())
    }

    async fn write_state(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let key = (self.host, path.to_path_buf());
        self.world.knobs().disk.insert(key, bytes.to_vec());
        Ok(())
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
        let net = SimWorld::new(1).net();
        let mut sim = turmoil::Builder::new().build();
        sim.host("n1", || async {
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("c1", async move {
            let n1 = net.lookup("n1@n1").await?;
            assert_eq!(n1, net.lookup("n1").await?);
            let err = net.lookup("nope@nope").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert_eq!(
                net.lookup("10.1.2.3").await?,
                IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
            );
            Ok(())
        });
        run(&mut sim);
    }

    #[test]
    fn connect_to_a_crashed_host_hangs_like_a_dead_machine() {
        let net = SimWorld::new(1).net();
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(30))
            .build();
        sim.host("n1", || async {
            let listener = TcpListener::bind("0.0.0.0:1883").await?;
            loop {
                let _ = listener.accept().await?;
            }
        });
        sim.client("c1", async move {
            let addr = SocketAddr::new(net.lookup("n1").await?, 1883);
            net.connect(addr).await?;
            // The harness crashes n1 at 1 s; the next connect neither succeeds nor fails: the
            // caller's own timeout (the node's dial, a client's connect) must end it.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let attempt = tokio::time::timeout(Duration::from_secs(5), net.connect(addr)).await;
            assert!(attempt.is_err(), "still pending after 5 s");
            Ok(())
        });
        while sim.elapsed() < Duration::from_secs(1) {
            sim.step().unwrap();
        }
        sim.crash("n1");
        run(&mut sim);
    }

    /// Sends `count` datagrams from `n1` to `c1` under `loss`; returns how many arrived.
    fn datagrams_arriving(seed: u64, loss: f64, count: u32) -> (u32, u64) {
        let world = SimWorld::new(seed);
        world.set_datagram_loss(loss);
        let net = world.net();
        let received = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(60))
            .rng_seed(seed)
            .build();
        let sender = net.clone();
        sim.host("n1", move || {
            let net = sender.clone();
            async move {
                let socket = net.bind_udp("0.0.0.0:0".parse().unwrap()).await?;
                let to = SocketAddr::new(net.lookup("c1").await?, 4369);
                for i in 0..count {
                    net.send_to(&socket, &i.to_be_bytes(), to).await?;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let seen = received.clone();
        sim.client("c1", async move {
            let socket = net.bind_udp("0.0.0.0:4369".parse().unwrap()).await?;
            let mut buf = [0u8; 16];
            let deadline = Duration::from_secs(u64::from(count) / 100 + 2);
            while let Ok(r) = tokio::time::timeout(deadline, net.recv_from(&socket, &mut buf)).await
            {
                r?;
                seen.set(seen.get() + 1);
            }
            Ok(())
        });
        run(&mut sim);
        (received.get(), world.datagrams_dropped())
    }

    #[test]
    fn datagram_loss_drops_about_the_rate_and_replays_exactly() {
        let (a, dropped) = datagrams_arriving(7, 0.5, 400);
        assert!((150..=250).contains(&a), "{a} of 400 arrived at 50% loss");
        assert_eq!(
            (a, dropped),
            datagrams_arriving(7, 0.5, 400),
            "same seed, same losses"
        );
        assert_eq!(dropped, u64::from(400 - a));
        assert_eq!(datagrams_arriving(7, 0.0, 100), (100, 0));
    }

    /// (sender, receiver, time) of every group datagram received by hosts n1..n3, each of which
    /// announces itself to a multicast group every 100 ms; the datagram partition `[n1] | [n2, n3]`
    /// is in force from 2 s to 4 s, and n2 talks TCP to n1 during it.
    fn group_datagrams_around_a_datagram_partition() -> (Vec<(u8, u8, Duration)>, u64) {
        use std::cell::RefCell;
        use std::rc::Rc;

        use super::super::MulticastIface;

        let world = SimWorld::new(5);
        let seen: Rc<RefCell<Vec<(u8, u8, Duration)>>> = Rc::default();
        let tcp_ok = Rc::new(std::cell::Cell::new(false));
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(10))
            .rng_seed(5)
            .build();
        let group = IpAddr::V4(Ipv4Addr::new(239, 0, 0, 9));
        let options = MulticastOptions {
            group,
            iface: MulticastIface::V4(Ipv4Addr::UNSPECIFIED),
            ttl: 1,
            loopback: false,
        };
        for me in 1..=3u8 {
            let (seen, tcp_ok, world) = (seen.clone(), tcp_ok.clone(), world.clone());
            sim.host(format!("n{me}"), move || {
                let (seen, tcp_ok, world) = (seen.clone(), tcp_ok.clone(), world.clone());
                async move {
                    let net = world.net_on_host(turmoil::lookup(format!("n{me}")));
                    let socket = net.bind_udp("0.0.0.0:4369".parse().unwrap()).await?;
                    net.join_multicast(&socket, options)?;
                    net.multicast_sender(&socket, options)?;
                    let listener = net.bind("0.0.0.0:1883".parse().unwrap()).await?;
                    let socket = Rc::new(socket);
                    let receiver = socket.clone();
                    let rx_net = net.clone();
                    tokio::task::spawn_local(async move {
                        let mut buf = [0u8; 4];
                        while let Ok((_, from)) = rx_net.recv_from(&receiver, &mut buf).await {
                            let sender = turmoil::reverse_lookup(from.ip())
                                .and_then(|n| n.trim_start_matches('n').parse().ok())
                                .unwrap_or(0);
                            let t = turmoil::sim_elapsed().unwrap_or_default();
                            seen.borrow_mut().push((sender, me, t));
                        }
                    });
                    if me == 1 {
                        let net = net.clone();
                        tokio::task::spawn_local(async move {
                            while let Ok((mut s, _)) = net.accept(&listener).await {
                                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"tcp").await;
                            }
                        });
                    }
                    if me == 2 {
                        let net = net.clone();
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep(Duration::from_millis(3000)).await;
                            let n1 = net.lookup("n1").await?;
                            let mut s = net.connect(SocketAddr::new(n1, 1883)).await?;
                            let mut buf = [0u8; 3];
                            tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf).await?;
                            tcp_ok.set(&buf == b"tcp");
                            Ok::<(), io::Error>(())
                        });
                    }
                    loop {
                        net.send_to(&socket, &[me], SocketAddr::new(group, 4369))
                            .await?;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
        }
        let hosts =
            |names: &[&str]| -> Vec<IpAddr> { names.iter().map(|n| sim.lookup(*n)).collect() };
        let (a, b) = (hosts(&["n1"]), hosts(&["n2", "n3"]));
        while sim.elapsed() < Duration::from_secs(6) {
            if sim.elapsed() == Duration::from_secs(2) {
                world.partition_datagrams(&a, &b);
            }
            if sim.elapsed() == Duration::from_secs(4) {
                world.heal_datagrams();
            }
            sim.step().unwrap();
        }
        assert!(
            tcp_ok.get(),
            "TCP between n2 and n1 failed during the datagram partition"
        );
        (seen.take(), world.datagrams_dropped())
    }

    #[test]
    fn a_datagram_partition_cuts_udp_between_groups_only_and_leaves_tcp_alone() {
        let (seen, dropped) = group_datagrams_around_a_datagram_partition();
        let pairs = |from: Duration, to: Duration| -> BTreeSet<(u8, u8)> {
            seen.iter()
                .filter(|(_, _, t)| (from..to).contains(t))
                .map(|(s, r, _)| (*s, *r))
                .collect()
        };
        let all: BTreeSet<(u8, u8)> = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)].into();
        let secs = Duration::from_secs;
        // Datagrams in flight at the cut may still arrive (turmoil latency is below 100 ms here).
        assert_eq!(pairs(secs(1), secs(2)), all, "before");
        assert_eq!(
            pairs(Duration::from_millis(2001), secs(4)),
            [(2, 3), (3, 2)].into(),
            "during: only within the group [n2, n3]"
        );
        assert_eq!(
            pairs(Duration::from_millis(4200), secs(6)),
            all,
            "after the heal"
        );
        assert!(dropped >= 2 * 2 * 15, "dropped datagrams are counted");
        assert_eq!(
            (seen, dropped),
            group_datagrams_around_a_datagram_partition(),
            "replays exactly"
        );
    }

    #[test]
    fn repair_datagrams_undoes_one_partition_and_a_new_world_knows_none() {
        let ip = |d: u8| IpAddr::V4(Ipv4Addr::new(192, 168, 0, d));
        let world = SimWorld::new(1);
        world.partition_datagrams(&[ip(1)], &[ip(2), ip(3)]);
        let dropped = |w: &SimWorld, s, r| w.knobs().drops_datagram(ip(s), Some(ip(r)));
        assert!(dropped(&world, 1, 2) && dropped(&world, 3, 1));
        assert!(!dropped(&world, 2, 3), "within a group");
        assert!(
            !world.knobs().drops_datagram(ip(1), None),
            "an unnamed receiver"
        );
        world.repair_datagrams(&[ip(1)], &[ip(2)]);
        assert!(!dropped(&world, 1, 2) && !dropped(&world, 2, 1));
        assert!(dropped(&world, 1, 3));
        let fresh = SimWorld::new(1);
        assert!(!dropped(&fresh, 1, 3));
        assert_eq!(fresh.net().host(), None);
        assert_eq!(fresh.net_on_host(ip(4)).host(), Some(ip(4)));
    }

    #[test]
    fn datagram_loss_leaves_tcp_alone() {
        let world = SimWorld::new(3);
        world.set_datagram_loss(1.0);
        let net = world.net();
        let mut sim = turmoil::Builder::new().build();
        sim.host("n1", || async {
            let listener = TcpListener::bind("0.0.0.0:1883").await?;
            let (mut s, _) = listener.accept().await?;
            tokio::io::AsyncWriteExt::write_all(&mut s, b"hello").await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("c1", async move {
            let addr = SocketAddr::new(net.lookup("n1").await?, 1883);
            let mut s = net.connect(addr).await?;
            let mut buf = [0u8; 5];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf).await?;
            assert_eq!(&buf, b"hello");
            Ok(())
        });
        run(&mut sim);
    }
}
