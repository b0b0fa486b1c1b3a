//! Node identity as the cluster sees it: `name@host` node names, static seeds (`name@host:port`)
//! and the discovery modes. Parsed here (the config file and scenario files both use these
//! `FromStr` impls), so the cluster core never depends on the configuration module.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The host part of a node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeHost {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name (a turmoil host name in the simulation).
    Dns(String),
}

impl fmt::Display for NodeHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeHost::Ip(ip) => write!(f, "{ip}"),
            NodeHost::Dns(name) => f.write_str(name),
        }
    }
}

/// A node's cluster identity `name@host`; ordered and compared by its canonical text, which is
/// how `cluster status` sorts nodes. IPv6 hosts are canonically written without brackets.
#[derive(Debug, Clone)]
pub struct NodeName {
    text: String,
    name_len: usize,
    host: NodeHost,
}

impl NodeName {
    /// `flockmq@127.0.0.1`, the embedded default configuration's node name.
    pub fn loopback_default() -> NodeName {
        NodeName {
            text: "flockmq@127.0.0.1".into(),
            name_len: "flockmq".len(),
            host: NodeHost::Ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        }
    }

    /// The part before `@`.
    pub fn name(&self) -> &str {
        self.text.get(..self.name_len).unwrap_or_default()
    }

    /// The part after `@`.
    pub fn host(&self) -> &NodeHost {
        &self.host
    }

    /// The canonical `name@host` text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for NodeName {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for NodeName {}
impl PartialOrd for NodeName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for NodeName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}
impl std::hash::Hash for NodeName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

fn valid_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_node_host(host: &str) -> Result<NodeHost, String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unclosed '[' in host")?;
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok(NodeHost::Ip(IpAddr::V6(ip))),
            Err(_) => Err(format!("'{inner}' is not an IPv6 address")),
        };
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(NodeHost::Ip(ip));
    }
    if host.contains(':') {
        return Err(format!("'{host}' is not an IPv6 address"));
    }
    // A dotted all-numeric host that failed to parse as IPv4 is a typo, not a DNS name.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("'{host}' is not an IPv4 address"));
    }
    if valid_dns_name(host) {
        Ok(NodeHost::Dns(host.to_owned()))
    } else {
        Err(format!("'{host}' is not an IP address or DNS name"))
    }
}

impl FromStr for NodeName {
    type Err = String;

    fn from_str(s: &str) -> Result<NodeName, String> {
        let (name, host) = s.split_once('@').ok_or("expected name@host")?;
        if name.is_empty() {
            return Err("empty name before '@'".into());
        }
        if name.len() > 255
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(format!(
                "invalid name '{name}' (letters, digits, '_', '-', '.')"
            ));
        }
        if host.is_empty() {
            return Err("empty host after '@'".into());
        }
        let host = parse_node_host(host)?;
        Ok(NodeName {
            text: format!("{name}@{host}"),
            name_len: name.len(),
            host,
        })
    }
}

/// A seed of static discovery: a node name with an optional cluster port
/// (`n1@10.0.0.1:4370`, `n1@[::1]:4370`); without one, `cluster.port` applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeedNode {
    /// The seed's node name.
    pub node: NodeName,
    /// Its cluster port if it differs from ours.
    pub port: Option<u16>,
}

impl SeedNode {
    /// The port to dial: the explicit one or the cluster default.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

impl fmt::Display for SeedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.node.host()) {
            (None, _) => write!(f, "{}", self.node),
            (Some(port), NodeHost::Ip(IpAddr::V6(ip))) => {
                write!(f, "{}@[{ip}]:{port}", self.node.name())
            }
            (Some(port), _) => write!(f, "{}:{port}", self.node),
        }
    }
}

impl FromStr for SeedNode {
    type Err = String;

    fn from_str(s: &str) -> Result<SeedNode, String> {
        let (name, host) = s
            .split_once('@')
            .ok_or_else(|| format!("'{s}': expected name@host"))?;
        let (host, port) = if let Some(rest) = host.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{s}': unclosed '['"))?;
            match after {
                "" => (ip, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (ip, Some(port)),
                    None => return Err(format!("'{s}': expected ':PORT' after ']'")),
                },
            }
        } else if host.matches(':').count() == 1 {
            let (h, p) = host.split_once(':').unwrap_or((host, ""));
            (h, Some(p))
        } else {
            (host, None)
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("'{s}': bad port '{p}'"))?,
            ),
        };
        let node = format!("{name}@{host}")
            .parse::<NodeName>()
            .map_err(|e| format!("'{s}': {e}"))?;
        Ok(SeedNode { node, port })
    }
}

/// How a node finds the other members (`cluster.discovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Only `flockmq ctl cluster join/leave`.
    Manual,
    /// Keep dialling `cluster.static.seeds`.
    Static,
    /// UDP multicast announces.
    Mcast,
}

impl FromStr for Discovery {
    type Err = String;

    fn from_str(v: &str) -> Result<Discovery, String> {
        match v {
            "manual" => Ok(Discovery::Manual),
            "static" => Ok(Discovery::Static),
            "mcast" => Ok(Discovery::Mcast),
            _ => Err(format!("'{v}' is not one of manual, static, mcast")),
        }
    }
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Discovery::Manual => "manual",
            Discovery::Static => "static",
            Discovery::Mcast => "mcast",
        })
    }
}
