//! The node configuration: the flat `key = value` file format, its layering (defaults < file <
//! `FLOCKMQ_*` environment < `--set`), value syntax, validation and error reporting.
//!
//! Owns parsing and checking only: it never opens sockets, never reads the clock, and never
//! panics on user input. Every error names where the bad value came from (`FILE:LINE`,
//! `env VAR` or `--set`) and the key.
//!
//! Value syntax: `#` starts a comment at the start of a line or after whitespace; values are
//! trimmed and may be wrapped in double quotes; lists are comma separated; durations are an
//! integer with `ms`, `s`, `m`, `h` or `d` (`0` alone is zero); booleans are `on/off/true/false`;
//! sizes are bytes with an optional `B`, `KB`, `MB` or `GB` suffix (powers of 1024).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::broker::BrokerConfig;
use crate::cluster::ClusterConfig;
use crate::codec::QoS;

/// Prefix of the environment variables that override keys (`FLOCKMQ_NODE__NAME`).
pub const ENV_PREFIX: &str = "FLOCKMQ_";

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A line of a config file.
    File { path: PathBuf, line: usize },
    /// An environment variable.
    Env { var: String },
    /// A `--set KEY=VALUE` argument (or `Config::from_pairs`).
    Set,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env { var } => write!(f, "env {var}"),
            Origin::Set => f.write_str("--set"),
        }
    }
}

/// Why a configuration was rejected; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A bad key, value or combination of values.
    #[error("{origin}: {key}: {why}")]
    Invalid {
        origin: Origin,
        key: String,
        why: String,
    },
}

impl ConfigError {
    fn invalid(origin: &Origin, key: &str, why: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: origin.clone(),
            key: key.to_owned(),
            why: why.into(),
        }
    }
}

pub use crate::cluster::name::{Discovery, NodeHost, NodeName, SeedNode};

/// `node.*`: identity and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    /// `node.name`: the cluster identity.
    pub name: NodeName,
    /// `node.cookie`: the shared secret of the cluster handshake.
    pub cookie: String,
    /// `node.data_dir`: where the member list is kept.
    pub data_dir: PathBuf,
    /// `node.seed`: RNG seed; `None` (`auto`) derives it from the node name.
    pub seed: Option<u64>,
    /// `node.shutdown_timeout`: how long a graceful shutdown waits for subscribers to
    /// acknowledge what they were sent (wills included) and for peers to acknowledge forwards.
    pub shutdown_timeout: Duration,
}

/// `listener.*`: client-facing sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSection {
    /// `listener.tcp.bind`: the MQTT TCP listener (a bare port means 0.0.0.0:PORT).
    pub tcp_bind: SocketAddr,
}

/// `admin.*`: the HTTP admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSection {
    /// `admin.bind`: `None` (`off`) disables the endpoint; any address but 127.0.0.1 or ::1
    /// needs `token`.
    pub bind: Option<SocketAddr>,
    /// `admin.token`: bearer token required by every request when set.
    pub token: Option<String>,
}

/// `cluster.mcast.iface`: the interface multicast discovery joins on and sends from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McastIface {
    /// An IPv4 address of a local interface (IPv4 groups); `0.0.0.0` lets the OS choose.
    Addr(Ipv4Addr),
    /// An interface name or index such as `eth0` or `2` (IPv6 groups).
    Name(String),
}

impl fmt::Display for McastIface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McastIface::Addr(ip) => ip.fmt(f),
            McastIface::Name(name) => f.write_str(name),
        }
    }
}

/// `cluster.mcast.*`: multicast discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McastSection {
    /// `cluster.mcast.addr`: the multicast group (IPv4 224.0.0.0/4 or IPv6 ff00::/8).
    pub addr: IpAddr,
    /// `cluster.mcast.ports`: announces go to every one; a node listens on the first it can bind.
    pub ports: Vec<u16>,
    /// `cluster.mcast.iface`: the interface to join on and send from.
    pub iface: McastIface,
    /// `cluster.mcast.ttl`: hop limit.
    pub ttl: u32,
    /// `cluster.mcast.loop`: whether own datagrams loop back (they are ignored anyway).
    pub loopback: bool,
}

/// `cluster.*`: membership and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSection {
    /// `cluster.name`: nodes of different clusters refuse to link.
    pub name: String,
    /// `cluster.port`: the inter-node TCP port (0: any free port, announced to peers).
    pub port: u16,
    /// `cluster.discovery`.
    pub discovery: Discovery,
    /// `cluster.static.seeds`.
    pub static_seeds: Vec<SeedNode>,
    /// `cluster.mcast.*`.
    pub mcast: McastSection,
    /// `cluster.heartbeat`: link heartbeat period; 3 missed = link dead.
    pub heartbeat: Duration,
    /// `cluster.autoheal`: rejoin split halves when the network heals.
    pub autoheal: bool,
    /// `cluster.autoclean`: forget a node stopped this long; `None` (`off`) never.
    pub autoclean: Option<Duration>,
    /// `cluster.max_frame_size`: largest link frame accepted from an authenticated node.
    pub max_frame_size: u64,
}

/// The whole validated configuration of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `node.*`.
    pub node: NodeSection,
    /// `listener.*`.
    pub listener: ListenerSection,
    /// `admin.*`.
    pub admin: AdminSection,
    /// `cluster.*`.
    pub cluster: ClusterSection,
    /// `log.level`: a tracing filter (`info`, `flockmq=debug,warn`...); `RUST_LOG` wins over it.
    pub log_level: String,
    /// `mqtt.*`.
    pub mqtt: BrokerConfig,
}

/// The built-in `node.cookie`: fine for one machine, guessable for anything else.
pub const DEFAULT_COOKIE: &str = "flockmqsecretcookie";

/// Default of `cluster.max_frame_size`: the default 1 MB `mqtt.max_packet_size` plus the
/// forward overhead, rounded up.
pub const DEFAULT_MAX_FRAME_SIZE: u64 = 2 << 20;

pub use crate::cluster::discovery::MAX_ANNOUNCED_NAMES;

fn default_node_name() -> NodeName {
    NodeName::loopback_default()
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node: NodeSection {
                name: default_node_name(),
                cookie: DEFAULT_COOKIE.into(),
                data_dir: PathBuf::from("./data"),
                seed: None,
                shutdown_timeout: Duration::from_secs(10),
            },
            listener: ListenerSection {
                tcp_bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            },
            admin: AdminSection {
                bind: Some(SocketAddr::from(([127, 0, 0, 1], 18083))),
                token: None,
            },
            cluster: ClusterSection {
                name: "flockmq".into(),
                port: 4370,
                discovery: Discovery::Manual,
                static_seeds: Vec::new(),
                mcast: McastSection {
                    addr: IpAddr::V4(Ipv4Addr::new(239, 192, 0, 1)),
                    ports: vec![4369, 4370],
                    iface: McastIface::Addr(Ipv4Addr::UNSPECIFIED),
                    ttl: 255,
                    loopback: true,
                },
                heartbeat: Duration::from_secs(1),
                autoheal: true,
                autoclean: Some(Duration::from_secs(300)),
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            },
            log_level: "info".into(),
            mqtt: BrokerConfig::default(),
        }
    }
}

// ---- value syntax -------------------------------------------------------------------------

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean (on/off/true/false)")),
    }
}

fn render_bool(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

fn split_number(v: &str) -> (&str, &str) {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    v.split_at(digits)
}

/// `500ms`, `5s`, `5m`, `1h`, `2d`, or `0`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("'{v}' is not a duration (e.g. 500ms, 5s, 5m, 1h)");
    let (num, unit) = split_number(v);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" if n == 0 => 0,
        _ => return Err(bad()),
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{v}' is too long"))
}

/// The largest unit that expresses `d` exactly (so rendering round-trips).
pub fn render_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, per) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// A whole number of seconds: a bare integer or a duration.
fn parse_seconds(v: &str) -> Result<u64, String> {
    if let Ok(n) = v.parse::<u64>() {
        return Ok(n);
    }
    let d = parse_duration(v)?;
    if d.subsec_millis() != 0 {
        return Err(format!("'{v}' is not a whole number of seconds"));
    }
    Ok(d.as_secs())
}

/// `1048576`, `64KB`, `1MB`, `1GB` (powers of 1024).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let bad = || format!("'{v}' is not a size (e.g. 65536, 64KB, 1MB)");
    let (num, unit) = split_number(v);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{v}' is too large"))
}

fn render_size(n: u64) -> String {
    for (unit, per) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if n != 0 && n % per == 0 {
            return format!("{}{unit}", n / per);
        }
    }
    n.to_string()
}

/// A size of at least `min` bytes that fits in memory.
fn parse_size_usize(v: &str, min: usize) -> Result<usize, String> {
    match usize::try_from(parse_size(v)?) {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(format!(
            "'{v}' is below the minimum of {}",
            render_size(min as u64)
        )),
        Err(_) => Err(format!("'{v}' is too large")),
    }
}

fn parse_int<T>(v: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("'{v}' is not an integer between {min} and {max}")),
    }
}

fn parse_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A socket address, or a bare port meaning all IPv4 interfaces.
fn parse_bind(v: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    v.parse()
        .map_err(|_| format!("'{v}' is not an address (IP:PORT, [IPv6]:PORT or PORT)"))
}

/// An IPv4 interface address, or an interface name / index (`eth0`, `2`).
fn parse_iface(v: &str) -> Result<McastIface, String> {
    if let Ok(ip) = v.parse::<Ipv4Addr>() {
        return Ok(McastIface::Addr(ip));
    }
    let name_like = !v.is_empty()
        && v.len() <= 15
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if name_like {
        Ok(McastIface::Name(v.to_owned()))
    } else {
        Err(format!(
            "'{v}' is neither an IPv4 address nor an interface name or index"
        ))
    }
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_owned())
    }
}

fn parse_off<T>(v: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

fn render_off<T>(v: &Option<T>, render: impl Fn(&T) -> String) -> String {
    v.as_ref().map_or_else(|| "off".into(), render)
}

/// The tracing filter of a `log.level` value (what the node logs with). Field values in it
/// (`[span{field=value}]`) match literally, not as regular expressions: tracing-subscriber builds
/// those into a DFA without a size limit, and a value of a hundred bytes such as
/// `[{f=(a|b)*a(a|b)(a|b)...}]` took minutes to parse (found by the `config` fuzz target as a
/// timeout), at start, in check-config and on SIGHUP.
pub fn log_env_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .map_err(|e| e.to_string())
}

/// A `log.level` filter with the whitespace around each comma-separated directive removed.
/// tracing-subscriber (0.3.23) cuts a directive at offsets it counts in the directive without its
/// leading whitespace: `warn, flockmq=debug` named the target ` flockm`, and a directive starting
/// with a non-ASCII space (U+00A0) made it slice inside that character and panic (found by the
/// `config` fuzz target).
fn trim_directives(v: &str) -> String {
    v.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

fn parse_qos(v: &str) -> Result<QoS, String> {
    v.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("'{v}' is not a QoS (0, 1 or 2)"))
}

/// The MQTT limit on a packet: 256 MB of payload plus the 5-byte fixed header.
const MQTT_MAX_PACKET: u64 = 268_435_460;

// ---- the key table ------------------------------------------------------------------------

type Apply = fn(&mut Config, &str) -> Result<(), String>;
type Render = fn(&Config) -> String;

/// One configuration key: how to parse it into the `Config` and how to print it back.
struct KeySpec {
    key: &'static str,
    apply: Apply,
    render: Render,
}

/// Every key, sorted (the order `render` prints them in).
static KEYS: &[KeySpec] = &[
    KeySpec {
        key: "admin.bind",
        apply: |c, v| set(&mut c.admin.bind, parse_off(v, parse_bind)),
        render: |c| render_off(&c.admin.bind, |a| a.to_string()),
    },
    KeySpec {
        key: "admin.token",
        apply: |c, v| {
            set(
                &mut c.admin.token,
                Ok((!v.is_empty()).then(|| v.to_owned())),
            )
        },
        render: |c| c.admin.token.clone().unwrap_or_default(),
    },
    KeySpec {
        key: "cluster.autoclean",
        apply: |c, v| set(&mut c.cluster.autoclean, parse_off(v, parse_duration)),
        render: |c| render_off(&c.cluster.autoclean, |d| render_duration(*d)),
    },
    KeySpec {
        key: "cluster.autoheal",
        apply: |c, v| set(&mut c.cluster.autoheal, parse_bool(v)),
        render: |c| render_bool(c.cluster.autoheal),
    },
    KeySpec {
        key: "cluster.discovery",
        apply: |c, v| set(&mut c.cluster.discovery, v.parse()),
        render: |c| c.cluster.discovery.to_string(),
    },
    KeySpec {
        key: "cluster.heartbeat",
        apply: |c, v| match parse_duration(v)? {
            d if d.is_zero() => Err("must be longer than 0".into()),
            d => set(&mut c.cluster.heartbeat, Ok(d)),
        },
        render: |c| render_duration(c.cluster.heartbeat),
    },
    KeySpec {
        key: "cluster.max_frame_size",
        apply: |c, v| match parse_size(v)? {
            n @ 4096..=0xFFFF_FFFF => set(&mut c.cluster.max_frame_size, Ok(n)),
            _ => Err(format!("'{v}' is outside 4KB ..= 4294967295 bytes")),
        },
        render: |c| render_size(c.cluster.max_frame_size),
    },
    KeySpec {
        key: "cluster.mcast.addr",
        apply: |c, v| match v.parse::<IpAddr>() {
            Ok(ip) if ip.is_multicast() => set(&mut c.cluster.mcast.addr, Ok(ip)),
            _ => Err(format!(
                "'{v}' is not a multicast address (224.0.0.0/4 or ff00::/8)"
            )),
        },
        render: |c| c.cluster.mcast.addr.to_string(),
    },
    KeySpec {
        key: "cluster.mcast.iface",
        apply: |c, v| set(&mut c.cluster.mcast.iface, parse_iface(v)),
        render: |c| c.cluster.mcast.iface.to_string(),
    },
    KeySpec {
        key: "cluster.mcast.loop",
        apply: |c, v| set(&mut c.cluster.mcast.loopback, parse_bool(v)),
        render: |c| render_bool(c.cluster.mcast.loopback),
    },
    KeySpec {
        key: "cluster.mcast.ports",
        apply: |c, v| {
            let ports = parse_list(v)
                .map(|p| parse_int(p, 1u16, u16::MAX))
                .collect::<Result<Vec<_>, _>>()?;
            set(&mut c.cluster.mcast.ports, Ok(ports))
        },
        render: |c| join(&c.cluster.mcast.ports),
    },
    KeySpec {
        key: "cluster.mcast.ttl",
        apply: |c, v| set(&mut c.cluster.mcast.ttl, parse_int(v, 0, 255)),
        render: |c| c.cluster.mcast.ttl.to_string(),
    },
    KeySpec {
        key: "cluster.name",
        apply: |c, v| set(&mut c.cluster.name, non_empty(v)),
        render: |c| c.cluster.name.clone(),
    },
    KeySpec {
        key: "cluster.port",
        // 0 picks a free port: for a node nobody dials by configuration (tests, standalone).
        apply: |c, v| set(&mut c.cluster.port, parse_int(v, 0, u16::MAX)),
        render: |c| c.cluster.port.to_string(),
    },
    KeySpec {
        key: "cluster.static.seeds",
        apply: |c, v| {
            let seeds = parse_list(v)
                .map(str::parse::<SeedNode>)
                .collect::<Result<Vec<_>, _>>()?;
            set(&mut c.cluster.static_seeds, Ok(seeds))
        },
        render: |c| join(&c.cluster.static_seeds),
    },
    KeySpec {
        key: "listener.tcp.bind",
        apply: |c, v| set(&mut c.listener.tcp_bind, parse_bind(v)),
        render: |c| c.listener.tcp_bind.to_string(),
    },
    KeySpec {
        key: "log.level",
        apply: |c, v| match log_env_filter(&trim_directives(v)) {
            Ok(_) if !v.is_empty() => set(&mut c.log_level, Ok(trim_directives(v))),
            _ => Err(format!(
                "'{v}' is not a log filter (error, warn, info, debug, trace, or target=level,...)"
            )),
        },
        render: |c| c.log_level.clone(),
    },
    KeySpec {
        key: "mqtt.connect_timeout",
        apply: |c, v| set(&mut c.mqtt.connect_timeout, parse_duration(v)),
        render: |c| render_duration(c.mqtt.connect_timeout),
    },
    KeySpec {
        key: "mqtt.max_clientid_len",
        apply: |c, v| set(&mut c.mqtt.max_client_id_len, parse_int(v, 23, 65535)),
        render: |c| c.mqtt.max_client_id_len.to_string(),
    },
    KeySpec {
        key: "mqtt.max_inflight",
        apply: |c, v| set(&mut c.mqtt.max_inflight, parse_int(v, 1, u16::MAX)),
        render: |c| c.mqtt.max_inflight.to_string(),
    },
    KeySpec {
        key: "mqtt.max_packet_size",
        apply: |c, v| match parse_size(v)? {
            n @ 64..=MQTT_MAX_PACKET => set(&mut c.mqtt.max_packet_size, Ok(n as u32)),
            _ => Err(format!(
                "'{v}' is outside 64 bytes ..= {MQTT_MAX_PACKET} bytes"
            )),
        },
        render: |c| render_size(u64::from(c.mqtt.max_packet_size)),
    },
    KeySpec {
        key: "mqtt.max_qos",
        apply: |c, v| set(&mut c.mqtt.max_qos, parse_qos(v)),
        render: |c| (c.mqtt.max_qos as u8).to_string(),
    },
    KeySpec {
        key: "mqtt.max_queued_messages",
        apply: |c, v| set(&mut c.mqtt.max_queued_messages, parse_int(v, 0, usize::MAX)),
        render: |c| c.mqtt.max_queued_messages.to_string(),
    },
    KeySpec {
        key: "mqtt.max_session_expiry",
        apply: |c, v| {
            if v == "infinity" {
                return set(&mut c.mqtt.max_session_expiry, Ok(u32::MAX));
            }
            match u32::try_from(parse_seconds(v)?) {
                Ok(s) if s < u32::MAX => set(&mut c.mqtt.max_session_expiry, Ok(s)),
                _ => Err(format!("'{v}' is too long (use infinity)")),
            }
        },
        render: |c| match c.mqtt.max_session_expiry {
            u32::MAX => "infinity".into(),
            s => render_duration(Duration::from_secs(u64::from(s))),
        },
    },
    KeySpec {
        key: "mqtt.max_subscriptions",
        apply: |c, v| set(&mut c.mqtt.max_subscriptions, parse_int(v, 1, usize::MAX)),
        render: |c| c.mqtt.max_subscriptions.to_string(),
    },
    KeySpec {
        key: "mqtt.max_topic_alias",
        apply: |c, v| set(&mut c.mqtt.max_topic_alias, parse_int(v, 0, u16::MAX)),
        render: |c| c.mqtt.max_topic_alias.to_string(),
    },
    KeySpec {
        key: "mqtt.max_topic_alias_bytes",
        apply: |c, v| set(&mut c.mqtt.max_topic_alias_bytes, parse_size_usize(v, 1024)),
        render: |c| render_size(c.mqtt.max_topic_alias_bytes as u64),
    },
    KeySpec {
        key: "mqtt.max_topic_levels",
        apply: |c, v| set(&mut c.mqtt.max_topic_levels, parse_int(v, 1, 65535)),
        render: |c| c.mqtt.max_topic_levels.to_string(),
    },
    KeySpec {
        key: "mqtt.output_budget",
        apply: |c, v| set(&mut c.mqtt.output_budget, parse_size_usize(v, 1024 * 1024)),
        render: |c| render_size(c.mqtt.output_budget as u64),
    },
    KeySpec {
        key: "mqtt.retain_available",
        apply: |c, v| set(&mut c.mqtt.retain_available, parse_bool(v)),
        render: |c| render_bool(c.mqtt.retain_available),
    },
    KeySpec {
        key: "mqtt.retry_interval",
        apply: |c, v| set(&mut c.mqtt.retry_interval, parse_duration(v)),
        render: |c| render_duration(c.mqtt.retry_interval),
    },
    KeySpec {
        key: "mqtt.server_keepalive",
        apply: |c, v| {
            let keepalive = parse_off(v, |v| {
                u16::try_from(parse_seconds(v)?).map_err(|_| format!("'{v}' is longer than 65535s"))
            })?;
            set(&mut c.mqtt.server_keepalive, Ok(keepalive))
        },
        render: |c| {
            render_off(&c.mqtt.server_keepalive, |s| {
                render_duration(Duration::from_secs(u64::from(*s)))
            })
        },
    },
    KeySpec {
        key: "node.cookie",
        apply: |c, v| set(&mut c.node.cookie, non_empty(v)),
        render: |c| c.node.cookie.clone(),
    },
    KeySpec {
        key: "node.data_dir",
        apply: |c, v| set(&mut c.node.data_dir, Ok(PathBuf::from(non_empty(v)?))),
        render: |c| c.node.data_dir.display().to_string(),
    },
    KeySpec {
        key: "node.name",
        apply: |c, v| set(&mut c.node.name, v.parse()),
        render: |c| c.node.name.to_string(),
    },
    KeySpec {
        key: "node.seed",
        apply: |c, v| {
            let seed = if v == "auto" {
                None
            } else {
                Some(parse_int(v, 0, u64::MAX)?)
            };
            set(&mut c.node.seed, Ok(seed))
        },
        render: |c| c.node.seed.map_or_else(|| "auto".into(), |s| s.to_string()),
    },
    KeySpec {
        key: "node.shutdown_timeout",
        apply: |c, v| {
            let d = parse_duration(v)?;
            if d > MAX_SHUTDOWN_TIMEOUT {
                return Err(format!("at most {}", render_duration(MAX_SHUTDOWN_TIMEOUT)));
            }
            set(&mut c.node.shutdown_timeout, Ok(d))
        },
        render: |c| render_duration(c.node.shutdown_timeout),
    },
];

/// Upper bound of `node.shutdown_timeout` (a stop should not hang for hours).
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3600);

/// Stores a parsed value (keeps the key table's closures one expression each).
fn set<T>(slot: &mut T, value: Result<T, String>) -> Result<(), String> {
    *slot = value?;
    Ok(())
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.key == key)
}

// ---- layering -----------------------------------------------------------------------------

/// One `key = value` assignment and where it came from.
struct Assignment {
    key: &'static str,
    value: String,
    origin: Origin,
}

fn strip_quotes(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Cuts a trailing comment: `#` at the start or after whitespace (so `a#b` stays a value).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes.get(i - 1).is_some_and(u8::is_ascii_whitespace)) {
            return line.get(..i).unwrap_or_default();
        }
    }
    line
}

/// `value` as `render` writes it: in quotes when the bare value would not read back the same (a
/// value starting with `#` would be a comment, surrounding whitespace would be trimmed, and
/// surrounding quotes stripped; found by the `config` fuzz target with `admin.token =#...`).
/// A value with whitespace before a `#` (only from the environment or `--set`) has no file form.
fn quote_if_needed(value: &str) -> String {
    if value.starts_with('#') || strip_quotes(value.trim()) != value {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    }
}

fn assignment(key: &str, value: &str, origin: Origin) -> Result<Assignment, ConfigError> {
    let spec = key_spec(key).ok_or_else(|| ConfigError::invalid(&origin, key, "unknown key"))?;
    Ok(Assignment {
        key: spec.key,
        value: strip_quotes(value.trim()).to_owned(),
        origin,
    })
}

fn parse_file(text: &str, path: &Path) -> Result<Vec<Assignment>, ConfigError> {
    let mut out: Vec<Assignment> = Vec::new();
    let mut first_line: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let origin = Origin::File {
            path: path.to_owned(),
            line,
        };
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(ConfigError::invalid(
                &origin,
                content,
                "expected KEY = VALUE",
            ));
        };
        let a = assignment(key.trim(), value, origin.clone())?;
        if let Some(first) = first_line.insert(a.key, line) {
            return Err(ConfigError::invalid(
                &origin,
                a.key,
                format!("duplicate key (first set on line {first})"),
            ));
        }
        out.push(a);
    }
    Ok(out)
}

fn env_assignments(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Assignment>, ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(var, _)| var.starts_with(ENV_PREFIX))
        .collect();
    // Report the same first error whatever order the OS lists variables in.
    vars.sort();
    vars.into_iter()
        .map(|(var, value)| {
            let key = var
                .get(ENV_PREFIX.len()..)
                .unwrap_or_default()
                .to_ascii_lowercase()
                .replace("__", ".");
            assignment(&key, &value, Origin::Env { var })
        })
        .collect()
}

fn set_assignment(arg: &str) -> Result<Assignment, ConfigError> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(ConfigError::invalid(
            &Origin::Set,
            arg.trim(),
            "expected KEY=VALUE",
        ));
    };
    assignment(key.trim(), value, Origin::Set)
}

impl Config {
    /// Builds the effective config: defaults, then the file, then `FLOCKMQ_*` variables of `env`,
    /// then `sets` (`KEY=VALUE`), each layer overriding the previous one.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Config, ConfigError> {
        let mut layers = Vec::new();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            layers.extend(parse_file(&text, path)?);
        }
        layers.extend(env_assignments(env)?);
        for arg in sets {
            layers.push(set_assignment(arg)?);
        }
        Config::from_assignments(layers)
    }

    /// A config from defaults plus `(key, value)` pairs (tests and embedders).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let layers = pairs
            .iter()
            .map(|(k, v)| assignment(k, v, Origin::Set))
            .collect::<Result<Vec<_>, _>>()?;
        Config::from_assignments(layers)
    }

    /// The config a file with this text gives (defaults plus the file; no environment, no
    /// `--set`), as `load` reads it; `path` only names the file in errors.
    pub fn from_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::from_assignments(parse_file(text, path)?)
    }

    fn from_assignments(layers: Vec<Assignment>) -> Result<Config, ConfigError> {
        // Only the winning value of each key is parsed: a bad file value fixed by --set is fine.
        let mut winners: BTreeMap<&'static str, Assignment> = BTreeMap::new();
        for a in layers {
            winners.insert(a.key, a);
        }
        let mut config = Config::default();
        for a in winners.values() {
            if let Some(spec) = key_spec(a.key) {
                (spec.apply)(&mut config, &a.value)
                    .map_err(|why| ConfigError::invalid(&a.origin, a.key, why))?;
            }
        }
        let origin_of = |key: &str| {
            winners
                .get(key)
                .map_or(Origin::Default, |a| a.origin.clone())
        };
        config.validate(origin_of)?;
        Ok(config)
    }

    /// Rules that involve more than one key.
    fn validate(&self, origin_of: impl Fn(&str) -> Origin) -> Result<(), ConfigError> {
        if self.cluster.discovery == Discovery::Static && self.cluster.static_seeds.is_empty() {
            let key = "cluster.discovery";
            return Err(ConfigError::invalid(
                &origin_of(key),
                key,
                "static discovery needs cluster.static.seeds",
            ));
        }
        if self.cluster.discovery == Discovery::Mcast && self.cluster.mcast.ports.is_empty() {
            let key = "cluster.mcast.ports";
            return Err(ConfigError::invalid(
                &origin_of(key),
                key,
                "multicast discovery needs at least one port",
            ));
        }
        if self.cluster.discovery == Discovery::Mcast {
            let key = "cluster.mcast.iface";
            let why = match (&self.cluster.mcast.addr, &self.cluster.mcast.iface) {
                (IpAddr::V4(_), McastIface::Name(name)) => Some(format!(
                    "an IPv4 group joins on an interface address, not '{name}' (e.g. 0.0.0.0)"
                )),
                (IpAddr::V6(_), McastIface::Addr(ip)) if !ip.is_unspecified() => Some(format!(
                    "an IPv6 group joins on an interface name or index, not {ip} (e.g. eth0)"
                )),
                _ => None,
            };
            if let Some(why) = why {
                return Err(ConfigError::invalid(&origin_of(key), key, why));
            }
            let key = if self.cluster.name.len() > self.node.name.as_str().len() {
                "cluster.name"
            } else {
                "node.name"
            };
            let announce_len = self.node.name.as_str().len() + self.cluster.name.len();
            if announce_len > MAX_ANNOUNCED_NAMES {
                return Err(ConfigError::invalid(
                    &origin_of(key),
                    key,
                    format!(
                        "node.name and cluster.name together are {announce_len} bytes; \
                         multicast announces carry at most {MAX_ANNOUNCED_NAMES}"
                    ),
                ));
            }
        }
        let needed =
            u64::from(self.mqtt.max_packet_size) + crate::cluster::wire::FORWARD_OVERHEAD as u64;
        if self.cluster.max_frame_size < needed {
            let key = "cluster.max_frame_size";
            return Err(ConfigError::invalid(
                &origin_of(key),
                key,
                format!(
                    "{} leaves no room for the largest forward: mqtt.max_packet_size ({}) plus {} \
                     bytes of forward overhead needs at least {needed} bytes",
                    render_size(self.cluster.max_frame_size),
                    render_size(u64::from(self.mqtt.max_packet_size)),
                    crate::cluster::wire::FORWARD_OVERHEAD,
                ),
            ));
        }
        // Only 127.0.0.1 and ::1 go without a token: another loopback address (127.0.0.5) is
        // not where the endpoint's Host check expects it, and anything else is reachable from
        // other hosts.
        let unprotected =
            |b: &SocketAddr| !admin_bind_is_local_only(b.ip()) && self.admin.token.is_none();
        if let Some(bind) = self.admin.bind.filter(unprotected) {
            let key = "admin.bind";
            return Err(ConfigError::invalid(
                &origin_of(key),
                key,
                format!(
                    "{bind} is not 127.0.0.1 or ::1: set admin.token (or admin.bind = 127.0.0.1:PORT)"
                ),
            ));
        }
        Ok(())
    }

    /// Settings that are valid but unwise, one sentence each (`check-config` prints them, the
    /// node logs them at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.node.cookie == DEFAULT_COOKIE {
            out.push(
                "node.cookie: the built-in default cookie is in use; anyone who knows it (it is \
                 public) can join the cluster, and a guessable cookie can be found offline from \
                 one recorded link handshake: set a long random node.cookie"
                    .to_owned(),
            );
        }
        out
    }

    /// The cluster core's settings for a node whose cluster listener is on `bound_port`.
    pub fn cluster_config(&self, bound_port: u16) -> ClusterConfig {
        ClusterConfig {
            node: self.node.name.clone(),
            port: bound_port,
            default_port: self.cluster.port,
            cluster_name: self.cluster.name.clone(),
            cookie: self.node.cookie.clone(),
            discovery: self.cluster.discovery,
            seeds: self.cluster.static_seeds.clone(),
            heartbeat: self.cluster.heartbeat,
            autoheal: self.cluster.autoheal,
            autoclean: self.cluster.autoclean,
            max_frame: usize::try_from(self.cluster.max_frame_size).unwrap_or(usize::MAX),
        }
    }

    /// The limits handed to the broker core.
    pub fn broker_config(&self) -> BrokerConfig {
        self.mqtt.clone()
    }

    /// The seed of the node's RNGs: `node.seed`, else `entropy` (fresh from the OS in
    /// production, see `Net::entropy_seed`), else a fixed hash (FNV-1a) of the node name, so a
    /// simulated node behaves the same on every run and two nodes never share a seed by accident.
    pub fn rng_seed(&self, entropy: Option<u64>) -> u64 {
        self.node
            .seed
            .or(entropy)
            .unwrap_or_else(|| crate::fnv::fnv1a(self.node.name.as_str().as_bytes()))
    }

    /// The effective config as sorted `key = value` lines (what `check-config` prints); parsing
    /// it back yields the same config.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for spec in KEYS {
            let line = format!("{} = {}", spec.key, quote_if_needed(&(spec.render)(self)));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Whether an admin endpoint bound to `ip` may go without `admin.token`: exactly 127.0.0.1 or ::1.
fn admin_bind_is_local_only(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(pairs: &[(&str, &str)]) -> String {
        match Config::from_pairs(pairs) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn file_err(text: &str) -> String {
        let path = Path::new("flockmq.conf");
        match Config::from_text(text, path) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn file_config(text: &str) -> Config {
        Config::from_text(text, Path::new("f.conf")).unwrap()
    }

    #[test]
    fn embedded_default_runs_one_node_with_loopback_admin() {
        let c = Config::load(None, Vec::new(), &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listener.tcp_bind, "0.0.0.0:1883".parse().unwrap());
        assert_eq!(c.admin.bind, Some("127.0.0.1:18083".parse().unwrap()));
        assert_eq!(c.node.name.as_str(), "flockmq@127.0.0.1");
        assert_eq!(c.cluster.discovery, Discovery::Manual);
        assert_eq!(c.cluster.mcast.ports, vec![4369, 4370]);
        assert_eq!(c.broker_config(), BrokerConfig::default());
    }

    #[test]
    fn default_node_name_matches_its_parse() {
        let parsed: NodeName = "flockmq@127.0.0.1".parse().unwrap();
        assert_eq!(parsed, default_node_name());
        assert_eq!(parsed.name(), default_node_name().name());
        assert_eq!(parsed.host(), default_node_name().host());
    }

    #[test]
    fn keys_are_sorted_and_unique() {
        assert!(KEYS.windows(2).all(|w| w[0].key < w[1].key));
    }

    #[test]
    fn render_round_trips_through_the_parser() {
        let c = Config::from_pairs(&[
            ("node.name", "n1@[::1]"),
            ("cluster.discovery", "static"),
            (
                "cluster.static.seeds",
                "n1@10.0.0.1, n2@host-b.example:4371, n3@[fe80::1]:4372",
            ),
            ("admin.bind", "0.0.0.0:18083"),
            ("admin.token", "s3cret"),
            ("mqtt.server_keepalive", "90"),
            ("mqtt.max_session_expiry", "2h"),
            ("mqtt.retry_interval", "1500ms"),
            ("cluster.autoclean", "off"),
            ("node.seed", "42"),
        ])
        .unwrap();
        let rendered = c.render();
        let again = file_config(&rendered);
        assert_eq!(again, c);
        assert_eq!(Config::default(), file_config(&Config::default().render()));
        assert!(rendered.contains("mqtt.server_keepalive = 90s\n"));
        assert!(rendered.contains("mqtt.max_session_expiry = 2h\n"));
        assert!(rendered.contains("mqtt.max_packet_size = 1MB\n"));
        assert!(rendered.contains(
            "cluster.static.seeds = n1@10.0.0.1, n2@host-b.example:4371, n3@[fe80::1]:4372\n"
        ));
        let keys: Vec<&str> = rendered
            .lines()
            .map(|l| l.split(" = ").next().unwrap_or(""))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn from_text_is_what_load_reads_from_a_file() {
        let text = "node.cookie = abc\ncluster.heartbeat = 2s\n";
        let dir = std::env::temp_dir().join(format!("flockmq-from-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.conf");
        std::fs::write(&path, text).unwrap();
        let loaded = Config::load(Some(&path), Vec::new(), &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let parsed = Config::from_text(text, &path).unwrap();
        assert_eq!(parsed, loaded);
        assert_eq!(parsed.node.cookie, "abc");
        let e = Config::from_text("node.cookie\n", Path::new("x.conf")).unwrap_err();
        assert!(e.to_string().contains("x.conf"), "{e}");
    }

    #[test]
    fn render_quotes_values_that_would_not_read_back_bare() {
        // The `config` fuzz target's crash, minimized: a token starting with '#' was rendered
        // as `admin.token = #x`, a comment, so check-config's output did not parse back.
        let c = file_config(
            "admin.bind = 0.0.0.0:18083\nadmin.token =#x\nnode.cookie = \" padded \"\n\
             cluster.name = \"\"quoted\"\"\n",
        );
        assert_eq!(c.admin.token.as_deref(), Some("#x"));
        assert_eq!(c.node.cookie, " padded ");
        assert_eq!(c.cluster.name, "\"quoted\"");
        let rendered = c.render();
        assert!(rendered.contains("admin.token = \"#x\"\n"), "{rendered}");
        assert!(
            rendered.contains("node.cookie = \" padded \"\n"),
            "{rendered}"
        );
        assert!(
            rendered.contains("cluster.name = \"\"quoted\"\"\n"),
            "{rendered}"
        );
        assert_eq!(file_config(&rendered), c);
        assert!(
            Config::default()
                .render()
                .contains("node.cookie = flockmqsecretcookie\n")
        );
    }

    #[test]
    fn comments_whole_line_and_trailing_after_whitespace() {
        let c = file_config(
            "# a comment\n   # indented comment\n\nnode.cookie = abc#def # trailing\ncluster.name=edge   #x\n",
        );
        assert_eq!(c.node.cookie, "abc#def");
        assert_eq!(c.cluster.name, "edge");
    }

    #[test]
    fn values_are_trimmed_and_quotes_stripped() {
        let c = file_config("  node.name   =   \"n1@127.0.0.2\"   \n log.level=debug\t\n");
        assert_eq!(c.node.name.as_str(), "n1@127.0.0.2");
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn line_without_equals_names_file_and_line() {
        assert_eq!(
            file_err("# ok\nnode.name n1@h\n"),
            "flockmq.conf:2: node.name n1@h: expected KEY = VALUE"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        assert_eq!(
            file_err("node.name = a@b\nnode.nmae = x\n"),
            "flockmq.conf:2: node.nmae: unknown key"
        );
        assert_eq!(err(&[("bogus", "1")]), "--set: bogus: unknown key");
    }

    #[test]
    fn duplicate_key_in_a_file_is_an_error() {
        assert_eq!(
            file_err("cluster.port = 1\n\ncluster.port = 2\n"),
            "flockmq.conf:3: cluster.port: duplicate key (first set on line 1)"
        );
    }

    #[test]
    fn bad_value_names_file_line_and_key() {
        assert_eq!(
            file_err("cluster.heartbeat = 5 s\n"),
            "flockmq.conf:1: cluster.heartbeat: '5 s' is not a duration (e.g. 500ms, 5s, 5m, 1h)"
        );
    }

    #[test]
    fn durations_accept_ms_s_m_h_and_reject_bare_numbers() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(render_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(render_duration(Duration::from_secs(7200)), "2h");
        assert!(err(&[("cluster.heartbeat", "0s")]).contains("must be longer than 0"));
    }

    #[test]
    fn sizes_accept_units_and_plain_bytes() {
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1000B"), Ok(1000));
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("MB").is_err());
        let c = Config::from_pairs(&[("mqtt.max_packet_size", "64KB")]).unwrap();
        assert_eq!(c.mqtt.max_packet_size, 65536);
        assert!(
            err(&[("mqtt.max_packet_size", "1GB")])
                .starts_with("--set: mqtt.max_packet_size: '1GB' is outside")
        );
    }

    #[test]
    fn booleans_accept_on_off_true_false() {
        for (v, b) in [
            ("on", true),
            ("off", false),
            ("true", true),
            ("false", false),
            ("ON", true),
        ] {
            assert_eq!(
                Config::from_pairs(&[("cluster.autoheal", v)])
                    .unwrap()
                    .cluster
                    .autoheal,
                b
            );
        }
        assert!(err(&[("cluster.autoheal", "yes")]).contains("is not a boolean"));
    }

    #[test]
    fn lists_are_comma_separated_and_trimmed() {
        let c = Config::from_pairs(&[("cluster.mcast.ports", " 5000 ,5001,, 5002 ")]).unwrap();
        assert_eq!(c.cluster.mcast.ports, vec![5000, 5001, 5002]);
        assert!(err(&[("cluster.mcast.ports", "5000,x")]).contains("'x' is not an integer"));
    }

    #[test]
    fn env_overrides_file_and_set_overrides_env() {
        let dir = std::env::temp_dir().join(format!("flockmq-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.conf");
        std::fs::write(
            &path,
            "node.name = file@127.0.0.1\ncluster.name = fromfile\nmqtt.max_inflight = 10\n",
        )
        .unwrap();
        let env = vec![
            (
                "FLOCKMQ_NODE__NAME".to_string(),
                "env@127.0.0.1".to_string(),
            ),
            ("FLOCKMQ_MQTT__MAX_INFLIGHT".to_string(), "20".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let c = Config::load(Some(&path), env, &["mqtt.max_inflight=30".into()]).unwrap();
        assert_eq!(c.node.name.as_str(), "env@127.0.0.1");
        assert_eq!(c.cluster.name, "fromfile");
        assert_eq!(c.mqtt.max_inflight, 30);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_file_value_overridden_later_is_not_an_error() {
        let path = Path::new("x.conf");
        let mut layers = parse_file("cluster.port = nope\n", path).unwrap();
        layers.push(set_assignment("cluster.port=4444").unwrap());
        assert_eq!(Config::from_assignments(layers).unwrap().cluster.port, 4444);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = vec![("FLOCKMQ_CLUSTER__PORT".to_string(), "65536".to_string())];
        let e = Config::load(None, env, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "env FLOCKMQ_CLUSTER__PORT: cluster.port: '65536' is not an integer between 0 and 65535"
        );
        let env = vec![("FLOCKMQ_NOPE".to_string(), "1".to_string())];
        assert_eq!(
            Config::load(None, env, &[]).unwrap_err().to_string(),
            "env FLOCKMQ_NOPE: nope: unknown key"
        );
    }

    #[test]
    fn set_without_equals_is_an_error() {
        let e = Config::load(None, Vec::new(), &["node.name".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--set: node.name: expected KEY=VALUE");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = Config::load(
            Some(Path::new("/nonexistent/flockmq.conf")),
            Vec::new(),
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/flockmq.conf: cannot read:"),
            "{e}"
        );
    }

    #[test]
    fn static_discovery_without_seeds_is_a_conflict() {
        assert_eq!(
            file_err("cluster.discovery = static\n"),
            "flockmq.conf:1: cluster.discovery: static discovery needs cluster.static.seeds"
        );
        let c = Config::from_pairs(&[
            ("cluster.discovery", "static"),
            ("cluster.static.seeds", "a@b"),
        ])
        .unwrap();
        assert_eq!(c.cluster.static_seeds.len(), 1);
        assert!(
            err(&[("cluster.discovery", "gossip")]).contains("not one of manual, static, mcast")
        );
    }

    #[test]
    fn mcast_discovery_needs_ports_and_a_multicast_group() {
        assert!(
            err(&[("cluster.discovery", "mcast"), ("cluster.mcast.ports", "")])
                .contains("at least one port")
        );
        assert!(err(&[("cluster.mcast.addr", "10.0.0.1")]).contains("not a multicast address"));
        assert!(err(&[("cluster.mcast.ttl", "256")]).contains("between 0 and 255"));
    }

    #[test]
    fn mcast_groups_are_ipv4_or_ipv6_with_the_matching_kind_of_interface() {
        let mcast = ("cluster.discovery", "mcast");
        let c = Config::from_pairs(&[mcast]).unwrap();
        assert_eq!(
            c.cluster.mcast.addr,
            "239.192.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            c.cluster.mcast.iface,
            McastIface::Addr(Ipv4Addr::UNSPECIFIED)
        );
        let c = Config::from_pairs(&[
            mcast,
            ("cluster.mcast.addr", "ff02::4:1"),
            ("cluster.mcast.iface", "eth0"),
        ])
        .unwrap();
        assert_eq!(c.cluster.mcast.iface, McastIface::Name("eth0".into()));
        // The default interface (0.0.0.0, "any") works for IPv6 groups too.
        Config::from_pairs(&[mcast, ("cluster.mcast.addr", "ff15::7")]).unwrap();
        Config::from_pairs(&[mcast, ("cluster.mcast.iface", "10.1.2.3")]).unwrap();
        assert!(
            err(&[mcast, ("cluster.mcast.iface", "eth0")])
                .contains("an IPv4 group joins on an interface address")
        );
        assert!(
            err(&[
                mcast,
                ("cluster.mcast.addr", "ff02::4:1"),
                ("cluster.mcast.iface", "10.0.0.1")
            ])
            .contains("an IPv6 group joins on an interface name or index")
        );
        assert!(err(&[("cluster.mcast.iface", "eth 0")]).contains("interface name"));
        assert!(err(&[("cluster.mcast.addr", "fe80::1")]).contains("not a multicast address"));
        let long = "c".repeat(MAX_ANNOUNCED_NAMES);
        assert!(
            err(&[mcast, ("cluster.name", &long)]).contains("multicast announces carry at most")
        );
        // Without multicast discovery the interface is not checked against the group.
        Config::from_pairs(&[("cluster.mcast.iface", "eth0")]).unwrap();
    }

    #[test]
    fn admin_bind_other_than_127_0_0_1_or_ipv6_loopback_requires_a_token() {
        for bind in [
            "0.0.0.0:18083",
            "127.0.0.5:0",
            "10.1.2.3:18083",
            "[::]:18083",
        ] {
            assert_eq!(
                err(&[("admin.bind", bind)]),
                format!(
                    "--set: admin.bind: {} is not 127.0.0.1 or ::1: set admin.token (or admin.bind = 127.0.0.1:PORT)",
                    bind.parse::<SocketAddr>().unwrap()
                )
            );
            let c = Config::from_pairs(&[("admin.bind", bind), ("admin.token", "t")]).unwrap();
            assert_eq!(c.admin.token.as_deref(), Some("t"));
        }
        assert_eq!(
            file_err("admin.bind = 127.0.0.5:18083\n"),
            "flockmq.conf:1: admin.bind: 127.0.0.5:18083 is not 127.0.0.1 or ::1: set admin.token (or admin.bind = 127.0.0.1:PORT)"
        );
        for bind in ["[::1]:18083", "127.0.0.1:0", "127.0.0.1:18083"] {
            let c = Config::from_pairs(&[("admin.bind", bind)]).unwrap();
            assert!(c.admin.token.is_none());
        }
        assert_eq!(
            Config::from_pairs(&[("admin.bind", "off")])
                .unwrap()
                .admin
                .bind,
            None
        );
    }

    #[test]
    fn bind_accepts_a_bare_port() {
        let c = Config::from_pairs(&[("listener.tcp.bind", "1884")]).unwrap();
        assert_eq!(c.listener.tcp_bind, "0.0.0.0:1884".parse().unwrap());
        assert!(err(&[("listener.tcp.bind", "localhost:1883")]).contains("is not an address"));
    }

    #[test]
    fn node_names_accept_ipv4_ipv6_and_dns_hosts() {
        let n: NodeName = "n1@127.0.0.2".parse().unwrap();
        assert_eq!(
            (n.name(), n.host()),
            ("n1", &NodeHost::Ip("127.0.0.2".parse().unwrap()))
        );
        let n: NodeName = "n1@[::1]".parse().unwrap();
        assert_eq!(n.as_str(), "n1@::1");
        assert_eq!(n, "n1@::1".parse().unwrap());
        let n: NodeName = "emqx_1.a-b@broker-1.example.com".parse().unwrap();
        assert_eq!(n.host(), &NodeHost::Dns("broker-1.example.com".into()));
        assert_eq!(
            "n1@n1".parse::<NodeName>().unwrap().host(),
            &NodeHost::Dns("n1".into())
        );
    }

    #[test]
    fn node_names_reject_malformed_input() {
        for bad in [
            "noat",
            "@host",
            "name@",
            "na me@host",
            "n@host_name",
            "n@-host",
            "n@host-",
            "n@a..b",
            "n@300.1.1.1",
            "n@[::1",
            "n@[not-v6]",
            "n@1:2",
            "n@h@h",
        ] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad} should be rejected");
        }
        assert!(
            err(&[("node.name", "flockmq")]).starts_with("--set: node.name: expected name@host")
        );
    }

    #[test]
    fn seeds_take_optional_ports() {
        let s: SeedNode = "n2@127.0.0.2:4371".parse().unwrap();
        assert_eq!((s.node.as_str(), s.port), ("n2@127.0.0.2", Some(4371)));
        let s: SeedNode = "n2@[::1]:4371".parse().unwrap();
        assert_eq!((s.node.as_str(), s.port_or(4370)), ("n2@::1", 4371));
        let s: SeedNode = "n2@::1".parse().unwrap();
        assert_eq!((s.node.as_str(), s.port_or(4370)), ("n2@::1", 4370));
        let s: SeedNode = "n3@n3".parse().unwrap();
        assert_eq!(s.port, None);
        assert!("n2@h:99999".parse::<SeedNode>().is_err());
        assert!("n2@[::1]x".parse::<SeedNode>().is_err());
    }

    #[test]
    fn mqtt_keys_map_onto_broker_config() {
        let c = Config::from_pairs(&[
            ("mqtt.max_packet_size", "512KB"),
            ("mqtt.max_inflight", "64"),
            ("mqtt.max_queued_messages", "5000"),
            ("mqtt.max_topic_levels", "16"),
            ("mqtt.max_topic_alias", "0"),
            ("mqtt.max_session_expiry", "1h"),
            ("mqtt.retain_available", "off"),
            ("mqtt.max_qos", "1"),
            ("mqtt.server_keepalive", "60s"),
            ("mqtt.max_clientid_len", "128"),
            ("mqtt.retry_interval", "30s"),
        ])
        .unwrap();
        let b = c.broker_config();
        assert_eq!(b.max_packet_size, 512 * 1024);
        assert_eq!(b.max_inflight, 64);
        assert_eq!(b.max_queued_messages, 5000);
        assert_eq!(b.max_topic_levels, 16);
        assert_eq!(b.max_topic_alias, 0);
        assert_eq!(b.max_session_expiry, 3600);
        assert!(!b.retain_available);
        assert_eq!(b.max_qos, QoS::AtLeastOnce);
        assert_eq!(b.server_keepalive, Some(60));
        assert_eq!(b.max_client_id_len, 128);
        assert_eq!(b.retry_interval, Duration::from_secs(30));
    }

    #[test]
    fn mqtt_limits_reject_out_of_range_values() {
        assert!(err(&[("mqtt.max_inflight", "0")]).contains("between 1 and 65535"));
        assert!(err(&[("mqtt.max_qos", "3")]).contains("is not a QoS"));
        assert!(err(&[("mqtt.max_clientid_len", "10")]).contains("between 23 and 65535"));
        assert!(err(&[("mqtt.server_keepalive", "100000")]).contains("longer than 65535s"));
        assert!(err(&[("mqtt.max_session_expiry", "1500ms")]).contains("whole number of seconds"));
        let c = Config::from_pairs(&[
            ("mqtt.server_keepalive", "off"),
            ("mqtt.max_session_expiry", "infinity"),
        ])
        .unwrap();
        assert_eq!(
            (c.mqtt.server_keepalive, c.mqtt.max_session_expiry),
            (None, u32::MAX)
        );
    }

    #[test]
    fn log_level_directives_are_trimmed() {
        // Once a panic inside tracing-subscriber: a directive starting with U+00A0, a space
        // outside ASCII (the `config` fuzz target's crash input, minimized).
        let crash = "log.level = a,\u{a0}\u{a0}ab=info\n";
        assert_eq!(file_config(crash).log_level, "a,ab=info");
        // ASCII spaces after commas used to shift the target name (` flockm`).
        let c = Config::from_pairs(&[("log.level", "warn, flockmq=debug ,  x")]).unwrap();
        assert_eq!(c.log_level, "warn,flockmq=debug,x");
        assert_eq!(file_config(&c.render()), c);
    }

    #[test]
    // A wall-clock bound is the point of this test (the regression is a hang), not core logic.
    #[allow(clippy::disallowed_methods)]
    fn log_level_field_values_are_not_regular_expressions() {
        // The `config` fuzz target's timeout, as a pattern whose DFA has 2^21 states: as a
        // regular expression it took minutes to compile; as a literal value it costs nothing.
        let level = format!("[{{f=(a|b)*a{}}}]", "(a|b)".repeat(20));
        let started = std::time::Instant::now();
        let c = Config::from_pairs(&[("log.level", &level)]).unwrap();
        assert_eq!(c.log_level, level);
        assert!(log_env_filter(&level).is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn log_level_must_be_a_filter() {
        assert_eq!(
            Config::from_pairs(&[("log.level", "flockmq=debug,warn")])
                .unwrap()
                .log_level,
            "flockmq=debug,warn"
        );
        assert!(err(&[("log.level", "")]).contains("is not a log filter"));
        assert!(err(&[("log.level", "a=b=c")]).contains("is not a log filter"));
    }

    #[test]
    fn shutdown_timeout_is_a_bounded_duration() {
        assert_eq!(
            Config::default().node.shutdown_timeout,
            Duration::from_secs(10)
        );
        let c = Config::from_pairs(&[("node.shutdown_timeout", "500ms")]).unwrap();
        assert_eq!(c.node.shutdown_timeout, Duration::from_millis(500));
        assert!(c.render().contains("node.shutdown_timeout = 500ms"));
        let zero = Config::from_pairs(&[("node.shutdown_timeout", "0s")]).unwrap();
        assert_eq!(zero.node.shutdown_timeout, Duration::ZERO);
        assert!(err(&[("node.shutdown_timeout", "2h")]).contains("at most 1h"));
        assert_eq!(
            file_err("node.name = a@127.0.0.1\nnode.shutdown_timeout = soon\n")
                .split(':')
                .take(3)
                .collect::<Vec<_>>(),
            ["flockmq.conf", "2", " node.shutdown_timeout"]
        );
    }

    #[test]
    fn empty_required_strings_are_errors() {
        assert!(err(&[("node.cookie", "")]).contains("must not be empty"));
        assert!(err(&[("cluster.name", "  ")]).contains("must not be empty"));
    }

    #[test]
    fn rng_seed_is_explicit_then_entropy_then_a_stable_hash_of_the_name() {
        let a = Config::from_pairs(&[("node.name", "n1@n1")]).unwrap();
        assert_eq!(a.rng_seed(Some(99)), 99, "auto takes the backend's entropy");
        let b = Config::from_pairs(&[("node.name", "n2@n2")]).unwrap();
        assert_eq!(a.rng_seed(None), crate::fnv::fnv1a(b"n1@n1"));
        assert_ne!(a.rng_seed(None), b.rng_seed(None));
        assert_eq!(
            Config::from_pairs(&[("node.seed", "7")])
                .unwrap()
                .rng_seed(Some(1)),
            7
        );
    }
}
