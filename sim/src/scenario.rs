//! Scenario files (`scenarios/*.toml`, DESIGN §4): the cluster, its clients, its faults and what
//! must hold, as data. Loading validates everything up front so that a typo is an error naming the
//! file and the key, never a silently ignored setting.
//!
//! Owns parsing and validation only; it never runs anything and never draws randomness (swarm
//! faults are drawn by `fault::swarm` from the seed).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flockmq::cluster::Discovery;
use flockmq::config::parse_duration;
use serde::Deserialize;

/// Why a scenario file could not be used.
#[derive(Debug)]
pub struct ScenarioError {
    /// The file (or `<inline>` for scenarios parsed from a string).
    pub file: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// The raw file format; `deny_unknown_fields` everywhere so a misspelt key is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    nodes: u32,
    #[serde(default)]
    discovery: Option<String>,
    #[serde(default)]
    clustered: Option<bool>,
    duration: String,
    #[serde(default)]
    liveness: Option<String>,
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    tick: Option<String>,
    #[serde(default)]
    latency: Option<String>,
    /// String values apply to every node; a table named after a node host (`[node_config.n4]`)
    /// holds that node's overrides.
    #[serde(default)]
    node_config: BTreeMap<String, toml::Value>,
    /// Node host -> when its node starts (the host exists from 0).
    #[serde(default)]
    node_start: BTreeMap<String, String>,
    #[serde(default)]
    workload: Vec<WorkloadFile>,
    #[serde(default)]
    fault: Vec<FaultFile>,
    #[serde(default)]
    swarm: Option<SwarmFile>,
    #[serde(default)]
    expect: ExpectFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    publishers: u32,
    #[serde(default)]
    subscribers: u32,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    pub_qos: Option<u8>,
    #[serde(default)]
    sub_qos: Option<u8>,
    #[serde(default)]
    filters: Vec<String>,
    /// Each subscriber also subscribes to this many generated filters
    /// `<name>/<i / 1000:05>/<i % 1000:03>/sensor-value` (a route flood).
    #[serde(default)]
    generated_filters: u32,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    session_expiry: Option<String>,
    #[serde(default)]
    protocol: Option<u8>,
    #[serde(default)]
    attach: Option<Vec<String>>,
    #[serde(default)]
    failover: bool,
    #[serde(default)]
    reconnect: Option<String>,
    #[serde(default)]
    keep_alive: Option<String>,
    #[serde(default)]
    receive_maximum: Option<u16>,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    stop: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    partition: Option<Vec<Vec<String>>>,
    #[serde(default)]
    partition_oneway: Option<Vec<Vec<String>>>,
    #[serde(default)]
    heal: Option<bool>,
    #[serde(default)]
    crash: Option<String>,
    #[serde(default)]
    restart_after: Option<String>,
    #[serde(default)]
    latency: Option<String>,
    #[serde(default)]
    between: Option<Vec<Vec<String>>>,
    #[serde(default)]
    hold: Option<Vec<Vec<String>>>,
    #[serde(default)]
    release: Option<bool>,
    #[serde(default)]
    mcast_loss: Option<f64>,
    #[serde(default)]
    mcast_partition: Option<Vec<Vec<String>>>,
    #[serde(default)]
    mcast_heal: Option<bool>,
    #[serde(default)]
    client_disconnect: Option<String>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    down_for: Option<String>,
    #[serde(default)]
    join: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    leave: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwarmFile {
    #[serde(default)]
    max_faults: Option<u32>,
    #[serde(default)]
    kinds: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    #[serde(default)]
    converge_within: Option<String>,
    #[serde(default)]
    min_deliveries: Option<u64>,
    #[serde(default)]
    route_settle: Option<String>,
    #[serde(default)]
    members: Option<Vec<String>>,
    #[serde(default)]
    never_members: Vec<String>,
    #[serde(default)]
    members_stable_from: Option<String>,
    #[serde(default)]
    formed_within: Option<String>,
    #[serde(default)]
    excuse_until_formed: bool,
}

/// A validated scenario: what the harness runs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from (shown in the reproduce line).
    pub file: PathBuf,
    /// `name`: shown in summaries and snapshot names.
    pub name: String,
    /// `description`: what the scenario is about (free text).
    pub description: String,
    /// Number of nodes, hosts `n1..nN` with node names `nK@nK`.
    pub nodes: u32,
    /// `discovery`: manual, static or mcast (passed to `cluster.discovery`).
    pub discovery: Discovery,
    /// Whether messages cross nodes (a cluster) or every node is an island.
    pub clustered: bool,
    /// Length of the safety phase (workloads and faults).
    pub duration: Duration,
    /// Length of the liveness phase (no faults, no new publishes, everything converges).
    pub liveness: Duration,
    /// The fixed seeds CI runs.
    pub seeds: Vec<u64>,
    /// Simulation tick.
    pub tick: Duration,
    /// Default link latency range.
    pub latency: (Duration, Duration),
    /// Extra node config pairs for every node (e.g. cluster settings).
    pub node_config: BTreeMap<String, String>,
    /// Per-node overrides (`[node_config.n4]`), applied after `node_config`: a node with another
    /// cookie, another heartbeat...
    pub node_overrides: BTreeMap<String, BTreeMap<String, String>>,
    /// `[node_start]`: nodes whose software starts later than 0 (their host exists from 0, so
    /// their clients' connects are refused until then). Always within the safety phase.
    pub node_start: BTreeMap<String, Duration>,
    /// The client workloads.
    pub workloads: Vec<Workload>,
    /// The fixed fault schedule.
    pub faults: Vec<Fault>,
    /// Random faults drawn from the seed, when present.
    pub swarm: Option<Swarm>,
    /// What must hold.
    pub expect: Expect,
}

/// Session kind of a workload's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Clean start, session expiry 0: the session ends with the connection.
    Clean,
    /// Clean start only on the first connect, then resume; the session outlives connections.
    Persistent,
}

/// One `[[workload]]`: a group of publishers and subscribers with the same settings.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `name` (default `w1`, `w2`, ...): prefix of client ids, target of `client_disconnect`.
    pub name: String,
    /// Number of publishing clients (`<name>-p1`...).
    pub publishers: u32,
    /// Number of subscribing clients (`<name>-s1`...).
    pub subscribers: u32,
    /// QoS of every PUBLISH sent.
    pub pub_qos: u8,
    /// QoS requested in every SUBSCRIBE.
    pub sub_qos: u8,
    /// Filters every subscriber subscribes to (all shared in one group, or none shared).
    pub filters: Vec<String>,
    /// Topics publishers publish to (chosen by the client's seeded RNG).
    pub topics: Vec<String>,
    /// Publishes per second per publisher.
    pub rate: f64,
    /// Clean or persistent sessions.
    pub session: SessionKind,
    /// Session expiry interval (seconds) for persistent sessions.
    pub session_expiry: u32,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    pub protocol: u8,
    /// Node host names clients attach to, round robin.
    pub attach: Vec<String>,
    /// Whether a client tries the next node of `attach` after a failed connect.
    pub failover: bool,
    /// Reconnect backoff range (exponential with jitter).
    pub reconnect: (Duration, Duration),
    /// MQTT keepalive; a client also gives up on a connection silent for twice this.
    pub keep_alive: Duration,
    /// Receive Maximum the clients announce (MQTT 5), limiting QoS>0 messages in flight to them.
    pub receive_maximum: Option<u16>,
    /// Publishers set the retain flag (the nodes' retained sets are then checked to converge).
    pub retain: bool,
    /// When clients connect.
    pub start: Duration,
    /// When publishers stop publishing.
    pub stop: Duration,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Cut every link between hosts of different groups (both directions).
    Partition(Vec<Vec<String>>),
    /// Cut links from the first group to the second only.
    PartitionOneway(Vec<String>, Vec<String>),
    /// Repair every link and release every hold.
    Heal,
    /// Crash a node (sockets close, in-memory state is lost); restart after the delay if given.
    Crash {
        node: String,
        restart_after: Option<Duration>,
    },
    /// Fixed latency on links between the two groups (all links if `None`).
    Latency {
        latency: Duration,
        between: Option<(Vec<String>, Vec<String>)>,
    },
    /// Hold (queue, do not drop) messages between the two groups.
    Hold(Vec<String>, Vec<String>),
    /// Release every held link.
    Release,
    /// Datagram loss rate for UDP (multicast discovery); TCP is untouched.
    McastLoss(f64),
    /// Drop UDP datagrams (multicast discovery) between node hosts of different groups, both
    /// ways; TCP (cluster links, clients) is untouched.
    McastPartition(Vec<Vec<String>>),
    /// Undo every `McastPartition`.
    McastHeal,
    /// Abruptly drop the connection of clients (a workload name, a client id, or `all`).
    ClientDisconnect {
        target: String,
        count: Option<u32>,
        down_for: Option<Duration>,
    },
    /// `ctl cluster join`: `node` joins the cluster of `target` (`NodeHandle::cluster_join`).
    Join { node: String, target: String },
    /// `ctl cluster leave`: `node` leaves its cluster (`NodeHandle::cluster_leave`).
    Leave(String),
}

/// One `[[fault]]`: what, when, and until when (for reversible faults).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// When it happens (simulated time from the start).
    pub at: Duration,
    /// When a reversible fault (partition, hold, latency, mcast_loss, mcast_partition) is undone.
    pub until: Option<Duration>,
    /// What happens.
    pub kind: FaultKind,
}

/// `[swarm]`: draw random faults from the seed in every run of this scenario.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// Upper bound of faults per run (at least one is drawn).
    pub max_faults: u32,
    /// Fault kinds to draw from (`SWARM_KINDS`).
    pub kinds: Vec<String>,
}

/// Fault kinds swarm draws from when `[swarm] kinds` is absent.
pub const SWARM_KINDS: &[&str] = &[
    "partition",
    "partition_oneway",
    "crash",
    "latency",
    "hold",
    "mcast_loss",
    "client_disconnect",
];

/// Fault kinds swarm draws only when `[swarm] kinds` names them (kept out of the default so that
/// adding one does not change the draws, and so the snapshots, of existing scenarios).
pub const SWARM_EXTRA_KINDS: &[&str] = &["mcast_partition"];

/// `[expect]`.
#[derive(Debug, Clone)]
pub struct Expect {
    /// After the last fault (the start of the liveness phase), everything agrees within this.
    pub converge_within: Duration,
    /// A run delivering fewer messages than this fails (guards against a silently idle run).
    pub min_deliveries: u64,
    /// Cluster mode: messages published this close to a fault that cut the publisher's node from
    /// the subscriber's node are excused from at-least-once.
    pub route_settle: Duration,
    /// Cluster mode: the node hosts whose final membership is checked (default every node); the
    /// others must end up reporting only themselves as running (left, or never admitted).
    pub members: Vec<String>,
    /// Cluster mode: node hosts that no other node may ever list as running or stopped (e.g. a
    /// node with the wrong cookie); checked on every sample.
    pub never_members: Vec<String>,
    /// Cluster mode: from this time to the end, every sample of every node of `members` shows
    /// exactly `members` running and nothing stopped ("an existing cluster stays up").
    pub members_stable_from: Option<Duration>,
    /// Cluster mode: `members` must agree on exactly themselves (every member lists exactly
    /// `members` running, nothing stopped) in some sample round by this time (faults still on);
    /// the summary then shows when they first did.
    pub formed_within: Option<Duration>,
    /// Cluster mode: messages between two nodes are excused (with `route_settle`) until both
    /// first list each other as running, for scenarios where the cluster forms slowly (lossy
    /// discovery). Pairs with a node of `[node_start]` are always treated this way.
    pub excuse_until_formed: bool,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&text, path)
    }

    /// Parses and validates scenario text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let err = |message: String| ScenarioError {
            file: path.to_path_buf(),
            message,
        };
        let raw: ScenarioFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        build(raw, path).map_err(err)
    }

    /// Host names of the nodes, `n1..nN`.
    pub fn node_hosts(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("n{i}")).collect()
    }

    /// The client host that carries the clients of node host `node` (`n3` -> `c3`).
    pub fn client_host_of(node: &str) -> String {
        format!("c{}", node.trim_start_matches('n'))
    }

    /// Safety phase plus liveness phase.
    pub fn total(&self) -> Duration {
        self.duration + self.liveness
    }
}

/// Parses `20/s`, `5/m`, `0.5/s` into events per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, per) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}' is not a rate like 20/s"))?;
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a rate like 20/s"))?;
    let per = match per.trim() {
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("'{s}': rate unit must be /s or /m")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("'{s}': rate must be positive"));
    }
    Ok(n / per)
}

/// Parses a range `100ms..2s`.
fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("'{s}' is not a range like 100ms..2s"))?;
    let (a, b) = (parse_duration(a)?, parse_duration(b)?);
    if a > b {
        return Err(format!("'{s}': the lower bound is above the upper bound"));
    }
    Ok((a, b))
}

fn key<T>(key: &str, r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("{key}: {e}"))
}

fn opt_duration(name: &str, v: &Option<String>) -> Result<Option<Duration>, String> {
    v.as_deref()
        .map(|s| key(name, parse_duration(s)))
        .transpose()
}

fn build(raw: ScenarioFile, path: &Path) -> Result<Scenario, String> {
    if raw.nodes == 0 || raw.nodes > 16 {
        return Err(format!("nodes: {} is not in 1..=16", raw.nodes));
    }
    let discovery = match raw.discovery {
        Some(d) => key("discovery", d.parse::<Discovery>())?,
        None => Discovery::Manual,
    };
    let clustered = raw.clustered.unwrap_or(discovery != Discovery::Manual);
    let duration = key("duration", parse_duration(&raw.duration))?;
    let hosts: Vec<String> = (1..=raw.nodes).map(|i| format!("n{i}")).collect();
    let node_list = |name: &str, v: Vec<String>| -> Result<Vec<String>, String> {
        if let Some(h) = v.iter().find(|h| !hosts.contains(h)) {
            return Err(format!("{name}: '{h}' is not a node host"));
        }
        Ok(v)
    };
    let members = node_list(
        "expect.members",
        raw.expect.members.unwrap_or_else(|| hosts.clone()),
    )?;
    let never_members = node_list("expect.never_members", raw.expect.never_members)?;
    let expect = Expect {
        converge_within: opt_duration("expect.converge_within", &raw.expect.converge_within)?
            .unwrap_or(Duration::from_secs(15)),
        min_deliveries: raw.expect.min_deliveries.unwrap_or(1),
        route_settle: opt_duration("expect.route_settle", &raw.expect.route_settle)?
            .unwrap_or(Duration::from_secs(5)),
        members,
        never_members,
        members_stable_from: opt_duration(
            "expect.members_stable_from",
            &raw.expect.members_stable_from,
        )?,
        formed_within: opt_duration("expect.formed_within", &raw.expect.formed_within)?,
        excuse_until_formed: raw.expect.excuse_until_formed,
    };
    let membership_keys = expect.members_stable_from.is_some()
        || expect.formed_within.is_some()
        || expect.excuse_until_formed;
    if membership_keys && !clustered {
        return Err(
            "expect.members_stable_from / formed_within / excuse_until_formed: only for a cluster"
                .into(),
        );
    }
    if expect.formed_within.is_some_and(|f| f > duration) {
        return Err("expect.formed_within: must be within the safety phase (duration)".into());
    }
    let mut node_start = BTreeMap::new();
    for (host, at) in raw.node_start {
        if !hosts.contains(&host) {
            return Err(format!("node_start: '{host}' is not a node host"));
        }
        let at = key(&format!("node_start.{host}"), parse_duration(&at))?;
        if at >= duration {
            return Err(format!(
                "node_start.{host}: must be within the safety phase (duration)"
            ));
        }
        if let Some(from) = expect.members_stable_from
            && at >= from
            && expect.members.contains(&host)
        {
            return Err(format!(
                "expect.members_stable_from: member {host} only starts at node_start.{host}"
            ));
        }
        node_start.insert(host, at);
    }
    let liveness = opt_duration("liveness", &raw.liveness)?
        .unwrap_or(expect.converge_within + Duration::from_secs(5));
    if liveness < expect.converge_within {
        return Err("liveness: shorter than expect.converge_within".into());
    }
    if expect
        .members_stable_from
        .is_some_and(|f| f >= duration + liveness)
    {
        return Err("expect.members_stable_from: must be before the end of the run".into());
    }
    let tick = opt_duration("tick", &raw.tick)?.unwrap_or(Duration::from_millis(1));
    if tick.is_zero() || tick > Duration::from_millis(50) {
        return Err("tick: must be in (0, 50ms]".into());
    }
    let latency = match &raw.latency {
        Some(s) => key("latency", parse_range(s))?,
        None => (Duration::from_millis(1), Duration::from_millis(10)),
    };
    let all_hosts: Vec<String> = hosts
        .iter()
        .cloned()
        .chain((1..=raw.nodes).map(|i| format!("c{i}")))
        .collect();
    let reserved = |k: &str| ["node.name", "listener.tcp.bind", "node.seed"].contains(&k);
    let mut node_config = BTreeMap::new();
    let mut node_overrides = BTreeMap::new();
    for (k, v) in raw.node_config {
        if reserved(&k) {
            return Err(format!(
                "node_config: '{k}' is set by the simulator for every node"
            ));
        }
        match v {
            toml::Value::String(v) => {
                node_config.insert(k, v);
            }
            toml::Value::Table(t) if hosts.contains(&k) => {
                let mut pairs = BTreeMap::new();
                for (key, v) in t {
                    match v {
                        toml::Value::String(v) if !reserved(&key) => {
                            pairs.insert(key, v);
                        }
                        _ => {
                            return Err(format!(
                                "node_config.{k}: '{key}' must be a string and not one the simulator sets"
                            ));
                        }
                    }
                }
                node_overrides.insert(k, pairs);
            }
            _ => {
                return Err(format!(
                    "node_config: '{k}' must be a string value, or a table named after a node host (n1..n{})",
                    raw.nodes
                ));
            }
        }
    }

    let mut workloads = Vec::new();
    for (i, w) in raw.workload.into_iter().enumerate() {
        let name = w.name.clone().unwrap_or_else(|| format!("w{}", i + 1));
        let wl = workload(w, name.clone(), duration, &hosts)
            .map_err(|e| format!("workload '{name}': {e}"))?;
        if workloads.iter().any(|o: &Workload| o.name == wl.name) {
            return Err(format!("workload '{name}': duplicate name"));
        }
        workloads.push(wl);
    }

    let mut faults = Vec::new();
    for (i, f) in raw.fault.into_iter().enumerate() {
        let fault =
            fault(f, &all_hosts, &workloads).map_err(|e| format!("fault #{}: {e}", i + 1))?;
        if fault.at > duration || fault.until.is_some_and(|u| u > duration) {
            return Err(format!(
                "fault #{}: must happen within the safety phase (duration)",
                i + 1
            ));
        }
        faults.push(fault);
    }

    let swarm = match raw.swarm {
        None => None,
        Some(s) => {
            let kinds = s
                .kinds
                .unwrap_or_else(|| SWARM_KINDS.iter().map(|k| k.to_string()).collect());
            let known = |k: &str| SWARM_KINDS.contains(&k) || SWARM_EXTRA_KINDS.contains(&k);
            if let Some(k) = kinds.iter().find(|k| !known(k)) {
                return Err(format!(
                    "swarm.kinds: '{k}' is not one of {}, {}",
                    SWARM_KINDS.join(", "),
                    SWARM_EXTRA_KINDS.join(", ")
                ));
            }
            Some(Swarm {
                max_faults: s.max_faults.unwrap_or(4).clamp(1, 20),
                kinds,
            })
        }
    };
    if raw.seeds.is_empty() {
        return Err("seeds: list at least one seed for CI".into());
    }
    Ok(Scenario {
        file: path.to_path_buf(),
        name: raw.name,
        description: raw.description.unwrap_or_default(),
        nodes: raw.nodes,
        discovery,
        clustered,
        duration,
        liveness,
        seeds: raw.seeds,
        tick,
        latency,
        node_config,
        node_overrides,
        node_start,
        workloads,
        faults,
        swarm,
        expect,
    })
}

fn qos(name: &str, v: Option<u8>, default: u8) -> Result<u8, String> {
    match v.unwrap_or(default) {
        q @ 0..=2 => Ok(q),
        q => Err(format!("{name}: {q} is not 0, 1 or 2")),
    }
}

fn workload(
    mut w: WorkloadFile,
    name: String,
    duration: Duration,
    nodes: &[String],
) -> Result<Workload, String> {
    if w.kind != "pubsub" {
        return Err(format!("kind: '{}' is not one of pubsub", w.kind));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("name: only letters, digits and _".into());
    }
    if w.generated_filters > 1_000_000 {
        return Err("generated_filters: at most 1000000".into());
    }
    w.filters.extend(
        (0..w.generated_filters)
            .map(|i| format!("{name}/{:05}/{:03}/sensor-value", i / 1000, i % 1000)),
    );
    let base = qos("qos", w.qos, 1)?;
    let pub_qos = qos("pub_qos", w.pub_qos, base)?;
    let sub_qos = qos("sub_qos", w.sub_qos, base)?;
    if w.subscribers > 0 && w.filters.is_empty() {
        return Err("filters: subscribers need at least one filter".into());
    }
    if w.publishers > 0 && w.topics.is_empty() {
        return Err("topics: publishers need at least one topic".into());
    }
    let groups: Vec<Option<&str>> = w.filters.iter().map(|f| share_group(f)).collect();
    if groups.iter().any(|g| *g != groups[0]) {
        return Err("filters: either all filters are shared in one group or none is".into());
    }
    for f in &w.filters {
        if !valid_filter(strip_share(f)) {
            return Err(format!("filters: '{f}' is not a valid topic filter"));
        }
    }
    for t in &w.topics {
        if t.is_empty() || t.contains(['+', '#']) {
            return Err(format!("topics: '{t}' is not a valid topic name"));
        }
    }
    let session = match w.session.as_deref().unwrap_or("clean") {
        "clean" => SessionKind::Clean,
        "persistent" => SessionKind::Persistent,
        other => return Err(format!("session: '{other}' is not clean or persistent")),
    };
    let session_expiry = opt_duration("session_expiry", &w.session_expiry)?
        .unwrap_or(Duration::from_secs(600))
        .as_secs()
        .min(u64::from(u32::MAX)) as u32;
    let protocol = match w.protocol.unwrap_or(5) {
        p @ (4 | 5) => p,
        p => return Err(format!("protocol: {p} is not 4 (3.1.1) or 5")),
    };
    if protocol == 4 && groups[..].first().copied().flatten().is_some() {
        return Err("filters: shared subscriptions need protocol 5".into());
    }
    let attach = w.attach.unwrap_or_else(|| nodes.to_vec());
    if attach.is_empty() {
        return Err("attach: empty".into());
    }
    if let Some(n) = attach.iter().find(|n| !nodes.contains(n)) {
        return Err(format!(
            "attach: '{n}' is not a node host (n1..n{})",
            nodes.len()
        ));
    }
    let rate = key("rate", parse_rate(w.rate.as_deref().unwrap_or("1/s")))?;
    let reconnect = key(
        "reconnect",
        parse_range(w.reconnect.as_deref().unwrap_or("200ms..3s")),
    )?;
    let keep_alive = opt_duration("keep_alive", &w.keep_alive)?.unwrap_or(Duration::from_secs(5));
    if keep_alive < Duration::from_secs(1) || keep_alive.subsec_nanos() != 0 {
        return Err("keep_alive: whole seconds, at least 1s".into());
    }
    if w.receive_maximum == Some(0) {
        return Err("receive_maximum: must be at least 1".into());
    }
    let start = opt_duration("start", &w.start)?.unwrap_or(Duration::ZERO);
    let stop = opt_duration("stop", &w.stop)?.unwrap_or(duration);
    if stop > duration || start >= stop {
        return Err("start/stop: need start < stop <= duration".into());
    }
    Ok(Workload {
        name,
        publishers: w.publishers,
        subscribers: w.subscribers,
        pub_qos,
        sub_qos,
        filters: w.filters,
        topics: w.topics,
        rate,
        session,
        session_expiry,
        protocol,
        attach,
        failover: w.failover,
        reconnect,
        keep_alive,
        receive_maximum: w.receive_maximum,
        retain: w.retain,
        start,
        stop,
    })
}

/// `$share/group/filter` -> `Some(group)`.
pub fn share_group(filter: &str) -> Option<&str> {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(group, _)| group)
}

/// `$share/group/filter` -> `filter`; anything else unchanged.
pub fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "+" => true,
        "#" => i + 1 == levels.len(),
        l => !l.contains(['+', '#']),
    })
}

fn groups(name: &str, v: &[Vec<String>], hosts: &[String]) -> Result<(), String> {
    if v.len() < 2 || v.iter().any(|g| g.is_empty()) {
        return Err(format!(
            "{name}: needs at least two non-empty groups of hosts"
        ));
    }
    for h in v.iter().flatten() {
        if !hosts.contains(h) {
            return Err(format!(
                "{name}: '{h}' is not a host ({})",
                hosts.join(", ")
            ));
        }
    }
    Ok(())
}

fn fault(f: FaultFile, hosts: &[String], workloads: &[Workload]) -> Result<Fault, String> {
    let at = opt_duration("at", &f.at)?;
    let from = opt_duration("from", &f.from)?;
    let until = opt_duration("until", &f.until)?;
    let at = match (at, from) {
        (Some(a), None) | (None, Some(a)) => a,
        (Some(_), Some(_)) => return Err("give either at or from, not both".into()),
        (None, None) => return Err("needs at (or from)".into()),
    };
    if until.is_some_and(|u| u <= at) {
        return Err("until: must be after at/from".into());
    }
    let mut kinds = Vec::new();
    if let Some(p) = f.partition {
        groups("partition", &p, hosts)?;
        kinds.push(FaultKind::Partition(p));
    }
    if let Some(p) = f.partition_oneway {
        groups("partition_oneway", &p, hosts)?;
        if p.len() != 2 {
            return Err("partition_oneway: exactly two groups, [[from...], [to...]]".into());
        }
        kinds.push(FaultKind::PartitionOneway(p[0].clone(), p[1].clone()));
    }
    if f.heal == Some(true) {
        kinds.push(FaultKind::Heal);
    }
    if let Some(node) = f.crash {
        if !node.starts_with('n') || !hosts.contains(&node) {
            return Err(format!("crash: '{node}' is not a node host"));
        }
        kinds.push(FaultKind::Crash {
            node,
            restart_after: opt_duration("restart_after", &f.restart_after)?,
        });
    } else if f.restart_after.is_some() {
        return Err("restart_after: only with crash".into());
    }
    if let Some(l) = f.latency {
        let between = match f.between {
            None => None,
            Some(b) => {
                groups("between", &b, hosts)?;
                if b.len() != 2 {
                    return Err("between: exactly two groups".into());
                }
                Some((b[0].clone(), b[1].clone()))
            }
        };
        kinds.push(FaultKind::Latency {
            latency: key("latency", parse_duration(&l))?,
            between,
        });
    } else if f.between.is_some() {
        return Err("between: only with latency".into());
    }
    if let Some(h) = f.hold {
        groups("hold", &h, hosts)?;
        if h.len() != 2 {
            return Err("hold: exactly two groups".into());
        }
        kinds.push(FaultKind::Hold(h[0].clone(), h[1].clone()));
    }
    if f.release == Some(true) {
        kinds.push(FaultKind::Release);
    }
    if let Some(rate) = f.mcast_loss {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("mcast_loss: {rate} is not in 0..=1"));
        }
        kinds.push(FaultKind::McastLoss(rate));
    }
    if let Some(g) = f.mcast_partition {
        let nodes: Vec<String> = hosts
            .iter()
            .filter(|h| h.starts_with('n'))
            .cloned()
            .collect();
        groups("mcast_partition", &g, &nodes)?;
        kinds.push(FaultKind::McastPartition(g));
    }
    if f.mcast_heal == Some(true) {
        kinds.push(FaultKind::McastHeal);
    }
    if let Some(target) = f.client_disconnect {
        let known = target == "all"
            || workloads
                .iter()
                .any(|w| w.name == target || target.starts_with(&format!("{}-", w.name)));
        if !known {
            return Err(format!(
                "client_disconnect: '{target}' is not all, a workload name or a client id"
            ));
        }
        kinds.push(FaultKind::ClientDisconnect {
            target,
            count: f.count,
            down_for: opt_duration("down_for", &f.down_for)?,
        });
    } else if f.count.is_some() || f.down_for.is_some() {
        return Err("count/down_for: only with client_disconnect".into());
    }
    let node_host = |name: &str, h: &str| -> Result<(), String> {
        if h.starts_with('n') && hosts.iter().any(|x| x == h) {
            Ok(())
        } else {
            Err(format!("{name}: '{h}' is not a node host"))
        }
    };
    if let Some(node) = f.join {
        node_host("join", &node)?;
        let target = f.target.ok_or("join: needs target (the node to join)")?;
        node_host("target", &target)?;
        if target == node {
            return Err("target: a node cannot join itself".into());
        }
        kinds.push(FaultKind::Join { node, target });
    } else if f.target.is_some() {
        return Err("target: only with join".into());
    }
    if let Some(node) = f.leave {
        node_host("leave", &node)?;
        kinds.push(FaultKind::Leave(node));
    }
    if kinds.len() != 1 {
        return Err(format!(
            "needs exactly one of partition, partition_oneway, heal, crash, latency, hold, \
             release, mcast_loss, mcast_partition, mcast_heal, client_disconnect, join, leave \
             (found {})",
            kinds.len()
        ));
    }
    let kind = kinds.remove(0);
    let reversible = matches!(
        kind,
        FaultKind::Partition(_)
            | FaultKind::PartitionOneway(..)
            | FaultKind::Latency { .. }
            | FaultKind::Hold(..)
            | FaultKind::McastLoss(_)
            | FaultKind::McastPartition(_)
    );
    if until.is_some() && !reversible {
        return Err(
            "until: only for partition, partition_oneway, latency, hold, mcast_loss, \
             mcast_partition"
                .into(),
        );
    }
    Ok(Fault { at, until, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(text, Path::new("x.toml")).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "name = \"m\"\nnodes = 1\nduration = \"10s\"\nseeds = [1]\n";

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse(&format!("{MINIMAL}colour = \"red\"\n")).unwrap_err();
        assert!(e.starts_with("x.toml: "), "{e}");
        assert!(e.contains("colour"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}[[workload]]\nkind = \"pubsub\"\npublisher = 3\n"
        ))
        .unwrap_err();
        assert!(e.contains("publisher"), "{e}");
    }

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(
            parse_duration("1.5s").is_err(),
            "a scenario says durations the way a node's config does"
        );
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_rate("20/s"), Ok(20.0));
        assert_eq!(parse_rate("30/m"), Ok(0.5));
        assert!(parse_rate("0/s").is_err());
    }

    #[test]
    fn a_fault_needs_exactly_one_kind() {
        let e = parse(&format!(
            "{MINIMAL}[[fault]]\nat = \"1s\"\nheal = true\nrelease = true\n"
        ))
        .unwrap_err();
        assert!(e.contains("fault #1: needs exactly one"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}[[fault]]\nat = \"1s\"\ncrash = \"n7\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("crash: 'n7'"), "{e}");
    }

    #[test]
    fn node_config_tables_override_one_node() {
        let s = parse(&format!(
            "{MINIMAL}[node_config]\n\"cluster.heartbeat\" = \"500ms\"\n[node_config.n1]\n\"node.cookie\" = \"other\"\n"
        ))
        .unwrap();
        assert_eq!(s.node_config.len(), 1);
        assert_eq!(s.node_overrides["n1"]["node.cookie"], "other");
        let e = parse(&format!(
            "{MINIMAL}[node_config.n2]\n\"node.cookie\" = \"other\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("node_config: 'n2'"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}[node_config.n1]\n\"node.seed\" = \"7\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("node.seed"), "{e}");
    }

    #[test]
    fn join_needs_a_target_node() {
        let two = MINIMAL.replace("nodes = 1", "nodes = 2");
        let s = parse(&format!(
            "{two}[[fault]]\nat = \"1s\"\njoin = \"n2\"\ntarget = \"n1\"\n[[fault]]\nat = \"2s\"\nleave = \"n2\"\n"
        ))
        .unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::Join {
                node: "n2".into(),
                target: "n1".into()
            }
        );
        assert_eq!(s.faults[1].kind, FaultKind::Leave("n2".into()));
        let e = parse(&format!("{two}[[fault]]\nat = \"1s\"\njoin = \"n2\"\n")).unwrap_err();
        assert!(e.contains("needs target"), "{e}");
        let e = parse(&format!("{two}[[fault]]\nat = \"1s\"\nleave = \"c1\"\n")).unwrap_err();
        assert!(e.contains("leave: 'c1'"), "{e}");
    }

    #[test]
    fn mcast_partitions_take_node_hosts_and_until() {
        let three = MINIMAL.replace("nodes = 1", "nodes = 3");
        let s = parse(&format!(
            "{three}[[fault]]\nfrom = \"1s\"\nuntil = \"5s\"\nmcast_partition = [[\"n1\"], [\"n2\", \"n3\"]]\n\
             [[fault]]\nat = \"6s\"\nmcast_heal = true\n"
        ))
        .unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::McastPartition(vec![vec!["n1".into()], vec!["n2".into(), "n3".into()]])
        );
        assert_eq!(s.faults[0].until, Some(Duration::from_secs(5)));
        assert_eq!(s.faults[1].kind, FaultKind::McastHeal);
        let e = parse(&format!(
            "{three}[[fault]]\nat = \"1s\"\nmcast_partition = [[\"n1\"], [\"c2\"]]\n"
        ))
        .unwrap_err();
        assert!(e.contains("mcast_partition: 'c2' is not a host"), "{e}");
        let e = parse(&format!(
            "{three}[[fault]]\nat = \"1s\"\nuntil = \"2s\"\nmcast_heal = true\n"
        ))
        .unwrap_err();
        assert!(e.contains("until: only for"), "{e}");
    }

    #[test]
    fn node_start_and_membership_expectations_validate() {
        let three = MINIMAL.replace("nodes = 1", "nodes = 3\ndiscovery = \"static\"");
        let s = parse(&format!(
            "{three}[node_start]\nn3 = \"4s\"\n[expect]\nmembers_stable_from = \"6s\"\n\
             formed_within = \"8s\"\nexcuse_until_formed = true\n"
        ))
        .unwrap();
        assert_eq!(s.node_start["n3"], Duration::from_secs(4));
        assert_eq!(s.expect.members_stable_from, Some(Duration::from_secs(6)));
        assert_eq!(s.expect.formed_within, Some(Duration::from_secs(8)));
        assert!(s.expect.excuse_until_formed);
        let err = |extra: &str| parse(&format!("{three}{extra}")).unwrap_err();
        let e = err("[node_start]\nn4 = \"1s\"\n");
        assert!(e.contains("node_start: 'n4'"), "{e}");
        let e = err("[node_start]\nn2 = \"10s\"\n");
        assert!(
            e.contains("node_start.n2: must be within the safety phase"),
            "{e}"
        );
        let e = err("[node_start]\nn2 = \"5s\"\n[expect]\nmembers_stable_from = \"5s\"\n");
        assert!(e.contains("member n2 only starts"), "{e}");
        let e = err("[expect]\nformed_within = \"11s\"\n");
        assert!(e.contains("expect.formed_within"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}[expect]\nmembers_stable_from = \"1s\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("only for a cluster"), "{e}");
    }

    #[test]
    fn shared_and_plain_filters_do_not_mix() {
        let e = parse(&format!(
            "{MINIMAL}[[workload]]\nkind = \"pubsub\"\nsubscribers = 1\nfilters = [\"$share/g/a\", \"b\"]\n"
        ))
        .unwrap_err();
        assert!(e.contains("shared"), "{e}");
    }

    #[test]
    fn design_example_parses() {
        let s = parse(
            r#"
name = "partition-heal"
nodes = 3
discovery = "static"
duration = "90s"
seeds = [7]
[[workload]]
kind = "pubsub"
publishers = 6
subscribers = 6
qos = 1
filters = ["t/+/x", "t/#"]
topics = ["t/a/x"]
rate = "20/s"
[[fault]]
at = "20s"
partition = [["n1"], ["n2", "n3"]]
[[fault]]
at = "40s"
heal = true
[[fault]]
at = "50s"
crash = "n2"
restart_after = "5s"
[[fault]]
from = "0s"
until = "30s"
mcast_loss = 0.5
[expect]
converge_within = "15s"
"#,
        )
        .unwrap();
        assert!(s.clustered);
        assert_eq!(s.faults.len(), 4);
        assert_eq!(s.workloads[0].attach, vec!["n1", "n2", "n3"]);
        assert_eq!(
            s.faults[2].kind,
            FaultKind::Crash {
                node: "n2".into(),
                restart_after: Some(Duration::from_secs(5))
            }
        );
    }
}
