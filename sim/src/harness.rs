//! The harness: builds one turmoil simulation from a scenario and a seed (node hosts `n1..nN`
//! running the real `flockmq::server::start`, client hosts `c1..cN` running the simulated clients
//! attached to the node of the same number, a monitor sampling every node through its
//! `NodeHandle`), steps it one tick at a time, applies the fault schedule at exact simulated
//! times, heals everything for the liveness phase, and hands back the recorded history.
//!
//! Determinism: one seed fixes turmoil's RNG (and through `--cfg tokio_unstable` tokio's), every
//! node's `node.seed`, every client's RNG, the swarm draw and `SimNet`'s datagram loss. Everything
//! runs on the calling thread; shared state is `Rc<RefCell<..>>`, borrowed only between awaits.
//! Must never read the real clock.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use flockmq::cluster::Discovery;
use flockmq::config::Config;
use flockmq::net::SimWorld;
use flockmq::node::NodeHandle;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::client::{self, ClientControl, ClientSpec, PlantedBug, Shared, node_number};
use crate::fault::{Action, Timed, schedule};
use crate::history::{ClusterView, Event, History, NodeSample};
use crate::scenario::Scenario;
use flockmq::fnv::Fnv64;

/// How often the monitor samples every node.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How long the monitor waits for a node to answer before calling it down.
const SAMPLE_PATIENCE: Duration = Duration::from_millis(500);

/// Knobs of one run that are not part of the scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// A client bug to inject (checker self-test).
    pub plant: Option<PlantedBug>,
}

/// What a run produced, for the checkers and the summary.
pub struct Recorded {
    /// History, roster and workloads.
    pub shared: Rc<Shared>,
    /// The applied schedule (swarm faults included).
    pub schedule: Vec<Timed>,
    /// When the liveness phase began.
    pub liveness_start: Duration,
    /// When the run stopped.
    pub end: Duration,
    /// Host failures and panics: each one fails the run.
    pub errors: Vec<String>,
    /// Datagrams dropped by the simulated loss rate.
    pub datagrams_dropped: u64,
}

/// One node host's slot in the registry.
#[derive(Default)]
struct NodeSlot {
    handle: Option<NodeHandle>,
    incarnation: u32,
}

/// Derives a sub-seed so that every consumer gets an independent, stable stream.
pub fn derive_seed(seed: u64, what: &str) -> u64 {
    let mut h = Fnv64::new();
    h.write_bytes(&seed.to_le_bytes());
    h.write_bytes(what.as_bytes());
    h.finish()
}

/// The clients of a scenario: per workload, subscribers then publishers, each spread round
/// robin over the workload's `attach` nodes.
pub fn roster(scenario: &Scenario, seed: u64) -> Vec<ClientSpec> {
    let mut out = Vec::new();
    for (wi, w) in scenario.workloads.iter().enumerate() {
        for (publisher, count) in [(false, w.subscribers), (true, w.publishers)] {
            for i in 0..count {
                let id = format!("{}-{}{}", w.name, if publisher { 'p' } else { 's' }, i + 1);
                let first = i as usize % w.attach.len();
                let mut nodes = w.attach.clone();
                nodes.rotate_left(first);
                let host = Scenario::client_host_of(&nodes[0]);
                out.push(ClientSpec {
                    seed: derive_seed(seed, &id),
                    id,
                    workload: wi,
                    publisher,
                    nodes,
                    host,
                });
            }
        }
    }
    out
}

/// Config pairs of node `host` (without `node.seed`).
fn node_pairs(scenario: &Scenario, host: &str) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("node.name".to_string(), format!("{host}@{host}")),
        (
            "listener.tcp.bind".to_string(),
            format!("0.0.0.0:{}", client::MQTT_PORT),
        ),
        ("admin.bind".to_string(), "off".to_string()),
        (
            "cluster.discovery".to_string(),
            scenario.discovery.to_string(),
        ),
    ];
    if scenario.discovery == Discovery::Static {
        let seeds: Vec<String> = scenario
            .node_hosts()
            .iter()
            .map(|h| format!("{h}@{h}"))
            .collect();
        pairs.push(("cluster.static.seeds".to_string(), seeds.join(",")));
    }
    let overrides = scenario.node_overrides.get(host);
    for (k, v) in scenario
        .node_config
        .iter()
        .chain(overrides.into_iter().flatten())
    {
        pairs.retain(|(key, _)| key != k);
        pairs.push((k.clone(), v.clone()));
    }
    pairs
}

/// Runs `scenario` with `seed` and returns what happened.
pub fn simulate(scenario: &Scenario, seed: u64, options: RunOptions) -> Recorded {
    let world = SimWorld::new(derive_seed(seed, "simnet"));
    let roster = roster(scenario, seed);
    let controls = roster.iter().map(|_| ClientControl::default()).collect();
    let shared = Rc::new(Shared {
        history: RefCell::new(History::default()),
        roster,
        workloads: scenario.workloads.clone(),
        controls,
        plant: options.plant,
        world,
    });
    let liveness_start = scenario.duration;
    let end = scenario.total();
    let clients = shared.roster.len();
    let mut sim = turmoil::Builder::new()
        .rng_seed(derive_seed(seed, "turmoil"))
        .simulation_duration(end + Duration::from_secs(60))
        .tick_duration(scenario.tick)
        .min_message_latency(scenario.latency.0)
        .max_message_latency(scenario.latency.1)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        // Accept backlogs above this panic inside turmoil; every client may reconnect at once.
        .tcp_capacity(4096.max(clients * 4))
        .build();

    let nodes = scenario.node_hosts();
    let registry: Rc<RefCell<BTreeMap<String, NodeSlot>>> = Rc::new(RefCell::new(
        nodes
            .iter()
            .map(|n| (n.clone(), NodeSlot::default()))
            .collect(),
    ));
    for host in &nodes {
        let pairs = node_pairs(scenario, host);
        let start = scenario
            .node_start
            .get(host)
            .copied()
            .unwrap_or(Duration::ZERO);
        let (host_name, registry, shared) = (host.clone(), registry.clone(), shared.clone());
        sim.host(host.as_str(), move || {
            let (host, registry, shared, pairs) = (
                host_name.clone(),
                registry.clone(),
                shared.clone(),
                pairs.clone(),
            );
            async move { node_software(host, pairs, start, seed, registry, shared).await }
        });
    }
    let plan = schedule(scenario, seed);
    let has_admin = plan
        .iter()
        .any(|t| matches!(t.action, Action::Join { .. } | Action::Leave(_)));
    let commands: Rc<Commands> = Rc::default();
    for host in &nodes {
        let client_host = Scenario::client_host_of(host);
        let mine: Vec<u32> = (0..shared.roster.len() as u32)
            .filter(|&i| shared.roster[i as usize].host == client_host)
            .collect();
        let what = Sampled {
            clustered: scenario.clustered,
            retained: scenario.workloads.iter().any(|w| w.retain),
        };
        let monitor = (host == &nodes[0]).then(|| (registry.clone(), nodes.len() as u32, what));
        // Only scenarios with join/leave run the admin task, so other traces stay as they were.
        let admin = (host == &nodes[0] && has_admin).then(|| (registry.clone(), commands.clone()));
        let shared = shared.clone();
        sim.client(client_host.as_str(), async move {
            for idx in mine {
                tokio::task::spawn_local(client::run(shared.clone(), idx));
            }
            if let Some((registry, count, what)) = monitor {
                tokio::task::spawn_local(monitor_nodes(shared.clone(), registry, count, what));
            }
            if let Some((registry, commands)) = admin {
                tokio::task::spawn_local(admin_commands(shared.clone(), registry, commands));
            }
            std::future::pending::<()>().await;
            Ok(())
        });
    }

    let mut world = World {
        scenario,
        commands: &commands,
        shared: &shared,
        registry: &registry,
        rng: StdRng::seed_from_u64(derive_seed(seed, "harness")),
        all_hosts: nodes
            .iter()
            .cloned()
            .chain(nodes.iter().map(|n| Scenario::client_host_of(n)))
            .collect(),
        crashed: Vec::new(),
        cut: BTreeSet::new(),
        held: BTreeSet::new(),
    };
    let mut errors = Vec::new();
    let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut next = 0;
        let mut liveness = false;
        while sim.elapsed() < end {
            let t = sim.elapsed();
            while let Some(item) = plan.get(next).filter(|i| i.at <= t) {
                world.apply(&mut sim, item);
                next += 1;
            }
            if !liveness && t >= liveness_start {
                liveness = true;
                world.heal_for_liveness(&mut sim);
            }
            if let Err(e) = sim.step() {
                return Err(format!("simulation failed at {t:?}: {e}"));
            }
        }
        Ok(())
    }));
    match stepped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(e),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            errors.push(format!(
                "panic inside the simulation: {text} (the panicking task's own message is on stderr)"
            ));
        }
    }
    drop(sim);
    Recorded {
        datagrams_dropped: shared.world.datagrams_dropped(),
        shared,
        schedule: plan,
        liveness_start,
        end,
        errors,
    }
}

/// What runs on a node host: the real node, registered so the monitor can ask it things. It
/// starts at `start` (`[node_start]`); until then the host exists but nothing listens on it.
async fn node_software(
    host: String,
    mut pairs: Vec<(String, String)>,
    start: Duration,
    seed: u64,
    registry: Rc<RefCell<BTreeMap<String, NodeSlot>>>,
    shared: Rc<Shared>,
) -> turmoil::Result {
    let number = node_number(&host);
    let wait = start.saturating_sub(client::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let incarnation = {
        let mut r = registry.borrow_mut();
        let slot = r.entry(host.clone()).or_default();
        slot.incarnation += 1;
        slot.incarnation
    };
    // A restarted node gets a fresh seed, as a restarted process would draw new randomness.
    let node_seed = derive_seed(seed, &format!("{host}#{incarnation}"));
    pairs.push(("node.seed".into(), node_seed.to_string()));
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let record = |event| shared.history.borrow_mut().record(client::now(), event);
    let config = match Config::from_pairs(&refs) {
        Ok(c) => c,
        Err(e) => {
            record(Event::NodeFailed {
                node: number,
                why: e.to_string(),
            });
            return Err(e.into());
        }
    };
    // Naming the host lets datagram partitions (`mcast_partition`) drop what this node receives.
    let net = shared.world.net_on_host(turmoil::lookup(host.as_str()));
    match flockmq::server::start(net, config).await {
        Ok(node) => {
            if let Some(slot) = registry.borrow_mut().get_mut(&host) {
                slot.handle = Some(node.handle());
            }
            record(Event::NodeStarted {
                node: number,
                incarnation,
            });
            std::future::pending::<()>().await;
            drop(node);
            Ok(())
        }
        Err(e) => {
            record(Event::NodeFailed {
                node: number,
                why: e.to_string(),
            });
            Err(e.into())
        }
    }
}

/// Cluster commands (`join`/`leave` faults) queued by the harness between steps for the admin
/// task, which calls them through the node's `NodeHandle` inside the simulation.
#[derive(Default)]
struct Commands {
    queue: RefCell<Vec<Action>>,
    wake: tokio::sync::Notify,
}

/// Runs queued `join`/`leave` commands in order, recording each answer as a fault event.
async fn admin_commands(
    shared: Rc<Shared>,
    registry: Rc<RefCell<BTreeMap<String, NodeSlot>>>,
    commands: Rc<Commands>,
) {
    loop {
        commands.wake.notified().await;
        let queued: Vec<Action> = commands.queue.borrow_mut().drain(..).collect();
        for action in queued {
            let (node, text) = match &action {
                Action::Join { node, target } => (node, format!("join {node} -> {target}")),
                Action::Leave(node) => (node, format!("leave {node}")),
                _ => continue,
            };
            let handle = registry.borrow().get(node).and_then(|s| s.handle.clone());
            let answer = match (handle, &action) {
                (None, _) => "node not running".to_string(),
                (Some(h), Action::Join { target, .. }) => {
                    match format!("{target}@{target}").parse::<flockmq::cluster::SeedNode>() {
                        Ok(seed) => format!("{:?}", h.cluster_join(seed).await),
                        Err(e) => format!("bad seed: {e}"),
                    }
                }
                (Some(h), _) => format!("{:?}", h.cluster_leave().await),
            };
            shared.history.borrow_mut().record(
                client::now(),
                Event::Fault {
                    text: format!("{text} answered {answer}"),
                },
            );
        }
    }
}

/// What a node sample reads besides clients and metrics (only what the scenario needs, so the
/// traces of other scenarios stay as they were).
#[derive(Debug, Clone, Copy)]
struct Sampled {
    /// The cluster view (members, routes).
    clustered: bool,
    /// The retained-set digest.
    retained: bool,
}

/// Samples every node every `SAMPLE_EVERY`, in node order.
async fn monitor_nodes(
    shared: Rc<Shared>,
    registry: Rc<RefCell<BTreeMap<String, NodeSlot>>>,
    count: u32,
    what: Sampled,
) {
    let mut next = SAMPLE_EVERY;
    loop {
        let wait = next.saturating_sub(client::now());
        tokio::time::sleep(wait).await;
        for node in 1..=count {
            let handle = registry
                .borrow()
                .get(&format!("n{node}"))
                .and_then(|s| s.handle.clone());
            let sample = match handle {
                Some(h) => sample(&h, what).await,
                None => None,
            };
            shared
                .history
                .borrow_mut()
                .record(client::now(), Event::Sample { node, sample });
        }
        next += SAMPLE_EVERY;
    }
}

async fn sample(handle: &NodeHandle, what: Sampled) -> Option<NodeSample> {
    let clients = tokio::time::timeout(SAMPLE_PATIENCE, handle.clients())
        .await
        .ok()?
        .ok()?;
    let metrics = tokio::time::timeout(SAMPLE_PATIENCE, handle.metrics())
        .await
        .ok()?
        .ok()?;
    let retained = if what.retained {
        let digest = tokio::time::timeout(SAMPLE_PATIENCE, handle.retained_digest())
            .await
            .ok()?
            .ok()?;
        let mut hash = flockmq::fnv::Fnv64::new();
        for bucket in digest {
            hash.write_bytes(&bucket.to_be_bytes());
        }
        Some(hash.finish())
    } else {
        None
    };
    let cluster = if what.clustered {
        let status = tokio::time::timeout(SAMPLE_PATIENCE, handle.cluster_status())
            .await
            .ok()?
            .ok()?;
        let routes = tokio::time::timeout(SAMPLE_PATIENCE, handle.routes())
            .await
            .ok()?
            .ok()?;
        Some(ClusterView {
            running: status.running_nodes,
            stopped: status.stopped_nodes,
            routes: routes.into_iter().map(|r| (r.filter, r.nodes)).collect(),
        })
    } else {
        None
    };
    let b = &metrics.broker;
    Some(NodeSample {
        connected: clients
            .iter()
            .filter(|c| c.connected)
            .map(|c| c.client_id.clone())
            .collect(),
        sessions: b.sessions,
        subscriptions: b.subscriptions,
        messages_in: b.messages_in.iter().sum(),
        messages_out: b.messages_out.iter().sum(),
        messages_dropped: b.messages_dropped.iter().sum(),
        cluster,
        retained,
    })
}

fn sorted(a: String, b: String) -> (String, String) {
    if a <= b { (a, b) } else { (b, a) }
}

/// The harness's view of the world while applying faults.
struct World<'a> {
    scenario: &'a Scenario,
    commands: &'a Rc<Commands>,
    shared: &'a Rc<Shared>,
    registry: &'a Rc<RefCell<BTreeMap<String, NodeSlot>>>,
    rng: StdRng,
    all_hosts: Vec<String>,
    crashed: Vec<String>,
    /// Directed links cut by partitions now in force.
    cut: BTreeSet<(String, String)>,
    /// Links (sorted pair) held now.
    held: BTreeSet<(String, String)>,
}

impl World<'_> {
    fn note(&self, sim: &turmoil::Sim<'_>, event: Event) {
        self.shared
            .history
            .borrow_mut()
            .record(sim.elapsed(), event);
    }

    /// Every (x, y) with x in `a`, y in `b`, x != y.
    fn pairs(a: &[String], b: &[String]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for x in a {
            for y in b.iter().filter(|y| *y != x) {
                out.push((x.clone(), y.clone()));
            }
        }
        out
    }

    /// Every link between hosts of different groups.
    fn group_pairs(groups: &[Vec<String>]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                out.extend(Self::pairs(a, b));
            }
        }
        out
    }

    /// The links between two groups, or every link of the simulation.
    fn links(&self, between: &Option<(Vec<String>, Vec<String>)>) -> Vec<(String, String)> {
        match between {
            Some((a, b)) => Self::pairs(a, b),
            None => {
                let singles: Vec<Vec<String>> =
                    self.all_hosts.iter().map(|h| vec![h.clone()]).collect();
                Self::group_pairs(&singles)
            }
        }
    }

    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, item: &Timed) {
        self.note(
            sim,
            Event::Fault {
                text: item.text.clone(),
            },
        );
        match &item.action {
            Action::Partition(groups) => {
                for (a, b) in Self::group_pairs(groups) {
                    sim.partition(a.as_str(), b.as_str());
                    self.cut.insert((b.clone(), a.clone()));
                    self.cut.insert((a, b));
                }
            }
            Action::Repair(groups) => {
                for (a, b) in Self::group_pairs(groups) {
                    sim.repair(a.as_str(), b.as_str());
                    self.cut.remove(&(b.clone(), a.clone()));
                    self.cut.remove(&(a, b));
                }
            }
            Action::PartitionOneway(from, to) => {
                for (a, b) in Self::pairs(from, to) {
                    sim.partition_oneway(a.as_str(), b.as_str());
                    self.cut.insert((a, b));
                }
            }
            Action::RepairOneway(from, to) => {
                for (a, b) in Self::pairs(from, to) {
                    sim.repair_oneway(a.as_str(), b.as_str());
                    self.cut.remove(&(a, b));
                }
            }
            Action::HealAll | Action::ReleaseAll => self.heal_links(sim),
            Action::Crash(node) => self.crash(sim, node),
            Action::Restart(node) => self.restart(sim, node),
            Action::Latency(latency, between) => {
                for (a, b) in self.links(between) {
                    sim.set_link_latency(a.as_str(), b.as_str(), *latency);
                }
            }
            Action::DefaultLatency(between) => {
                let (min, max) = self.scenario.latency;
                for (a, b) in self.links(between) {
                    sim.set_link_latency(a.as_str(), b.as_str(), min);
                    sim.set_link_max_message_latency(a.as_str(), b.as_str(), max);
                }
            }
            Action::Hold(a, b) => {
                for (x, y) in Self::pairs(a, b) {
                    sim.hold(x.as_str(), y.as_str());
                    self.held.insert(sorted(x, y));
                }
            }
            Action::Release(a, b) => {
                for (x, y) in Self::pairs(a, b) {
                    sim.release(x.as_str(), y.as_str());
                    self.held.remove(&sorted(x, y));
                }
            }
            Action::McastLoss(rate) => self.shared.world.set_datagram_loss(*rate),
            Action::McastPartition(groups) => {
                for (a, b) in self.group_ips(sim, groups) {
                    self.shared.world.partition_datagrams(&a, &b);
                }
            }
            Action::McastRepair(groups) => {
                for (a, b) in self.group_ips(sim, groups) {
                    self.shared.world.repair_datagrams(&a, &b);
                }
            }
            Action::McastHealAll => self.shared.world.heal_datagrams(),
            Action::ClientDisconnect {
                target,
                count,
                down_for,
            } => self.kick_clients(target, *count, *down_for),
            Action::Join { .. } | Action::Leave(_) => {
                self.commands.queue.borrow_mut().push(item.action.clone());
                self.commands.wake.notify_one();
            }
        }
    }

    /// The addresses of every two groups (i < j), for datagram partitions.
    fn group_ips(
        &self,
        sim: &turmoil::Sim<'_>,
        groups: &[Vec<String>],
    ) -> Vec<(Vec<IpAddr>, Vec<IpAddr>)> {
        let ips =
            |g: &Vec<String>| -> Vec<IpAddr> { g.iter().map(|h| sim.lookup(h.as_str())).collect() };
        let mut out = Vec::new();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                out.push((ips(a), ips(b)));
            }
        }
        out
    }

    /// Every link healthy again; held messages are delivered (release also repairs).
    fn heal_links(&mut self, sim: &mut turmoil::Sim<'_>) {
        for (a, b) in self.links(&None) {
            sim.release(a.as_str(), b.as_str());
        }
        self.cut.clear();
        self.held.clear();
    }

    /// The host loses power: its software stops and no FIN or RST reaches anyone (peers notice
    /// by keepalive and timeouts). Dropping the host's runtime does send FINs, but in the order
    /// tokio drops the node's tasks, which follows process-global task ids and would differ
    /// between two runs in one process; so the host is cut off while it goes down, and its links
    /// are put back exactly as they were.
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, node: &str) {
        if self.crashed.iter().any(|n| n == node) {
            return;
        }
        let others: Vec<String> = self
            .all_hosts
            .iter()
            .filter(|h| *h != node)
            .cloned()
            .collect();
        for h in &others {
            sim.partition(node, h.as_str());
        }
        sim.crash(node);
        for h in &others {
            sim.repair(node, h.as_str());
            if self.cut.contains(&(node.to_string(), h.clone())) {
                sim.partition_oneway(node, h.as_str());
            }
            if self.cut.contains(&(h.clone(), node.to_string())) {
                sim.partition_oneway(h.as_str(), node);
            }
            if self.held.contains(&sorted(node.to_string(), h.clone())) {
                sim.hold(node, h.as_str());
            }
        }
        if let Some(slot) = self.registry.borrow_mut().get_mut(node) {
            slot.handle = None;
        }
        self.crashed.push(node.to_string());
        self.note(
            sim,
            Event::NodeCrashed {
                node: node_number(node),
            },
        );
    }

    fn restart(&mut self, sim: &mut turmoil::Sim<'_>, node: &str) {
        let Some(pos) = self.crashed.iter().position(|n| n == node) else {
            return;
        };
        self.crashed.remove(pos);
        sim.bounce(node);
    }

    fn kick_clients(&mut self, target: &str, count: Option<u32>, down_for: Option<Duration>) {
        let mut chosen: Vec<usize> = self
            .shared
            .roster
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let workload = &self.scenario.workloads[c.workload].name;
                target == "all" || target == workload || target == c.id
            })
            .map(|(i, _)| i)
            .filter(|&i| self.shared.controls[i].connected.get())
            .collect();
        if let Some(n) = count {
            chosen.shuffle(&mut self.rng);
            chosen.truncate(n as usize);
            chosen.sort_unstable();
        }
        for i in chosen {
            let control = &self.shared.controls[i];
            control.down_for.set(down_for);
            control.kicks.set(control.kicks.get() + 1);
            control.kick.notify_waiters();
        }
        // Keep the RNG stream independent of how many clients happened to be connected.
        let _: u64 = self.rng.random();
    }

    /// Start of the liveness phase: every fault is undone.
    fn heal_for_liveness(&mut self, sim: &mut turmoil::Sim<'_>) {
        self.note(sim, Event::LivenessPhase);
        self.heal_links(sim);
        let (min, max) = self.scenario.latency;
        for (a, b) in self.links(&None) {
            sim.set_link_latency(a.as_str(), b.as_str(), min);
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), max);
        }
        self.shared.world.set_datagram_loss(0.0);
        self.shared.world.heal_datagrams();
        for node in self.crashed.clone() {
            self.note(
                sim,
                Event::Fault {
                    text: format!("restart {node}"),
                },
            );
            self.restart(sim, &node);
        }
    }
}
