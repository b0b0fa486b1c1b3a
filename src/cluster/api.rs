//! The types of the cluster core's interface (re-exported by `cluster`): link ids, the actions
//! the driver carries out, why a link broke, the settings, and what status, route listing and
//! metrics report.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::wire::{self, ForwardedPublish};
use super::{Discovery, NodeName, SeedNode};

/// Identifies one inter-node TCP connection for the lifetime of the node (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// What the driver must do on the cluster core's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAction {
    /// Write this whole frame (length prefix included) on the link.
    Send { link: LinkId, frame: Bytes },
    /// Flush what was sent so far, then close the link. No further actions name it.
    Close { link: LinkId },
    /// Open a TCP connection to `host:port` (within
    /// [`Cluster::connect_timeout`](super::Cluster::connect_timeout)) and report
    /// `link_opened(.., Some(node))` or `dial_failed(node, ..)`.
    Dial {
        node: NodeName,
        host: String,
        port: u16,
    },
    /// Hand a publish forwarded by another node to the local broker.
    Deliver(ForwardedPublish),
    /// Send this discovery announce to the multicast group on every `cluster.mcast.ports`.
    Announce(Bytes),
    /// Send this discovery datagram (a pong) to `to`, from the announcing socket.
    Datagram { to: SocketAddr, bytes: Bytes },
    /// Replace the member list file (`node.data_dir/cluster-members`) with this text.
    SaveMembers(String),
    /// The answer to a `join`.
    JoinDone {
        node: NodeName,
        result: Result<(), String>,
    },
    /// The link is authenticated: its reader may now take frames of up to `max` bytes (until
    /// then it takes at most [`PREAUTH_MAX_FRAME`](super::PREAUTH_MAX_FRAME)).
    FrameLimit { link: LinkId, max: usize },
    /// A link just came up: call [`Cluster::sync_retained`](super::Cluster::sync_retained) with
    /// the local retained digest.
    SyncRetained { link: LinkId },
    /// The peer on `link` sent its retained digest: call
    /// [`Cluster::answer_retained`](super::Cluster::answer_retained) with ours and our entries in
    /// the buckets that differ.
    RetainedWanted { link: LinkId, digest: Vec<u64> },
    /// Retained values from a peer: merge them into the local store (newer version wins).
    MergeRetained(Vec<super::wire::RetainedItem>),
    /// Every linked node has applied our route changes up to this number (counted from 1 in
    /// the order of `local_route_added` / `local_route_removed` calls): SUBACKs waiting for
    /// them may go.
    RoutesConfirmed(u64),
}

/// Why a link broke, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLoss {
    /// EOF, reset or an I/O error.
    Io,
    /// The peer sent bytes that are not frames (oversize or empty length prefix).
    Frame(wire::FrameError),
    /// The driver dropped the link because the peer does not read fast enough.
    SlowPeer,
}

/// The cluster settings the core needs (the `cluster.*` and `node.*` keys, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name.
    pub node: NodeName,
    /// The cluster port this node really listens on (announced to peers).
    pub port: u16,
    /// `cluster.port` as configured: the port of seeds given without one.
    pub default_port: u16,
    /// `cluster.name`.
    pub cluster_name: String,
    /// `node.cookie`.
    pub cookie: String,
    /// `cluster.discovery`.
    pub discovery: Discovery,
    /// `cluster.static.seeds` (used with static discovery).
    pub seeds: Vec<SeedNode>,
    /// `cluster.heartbeat`.
    pub heartbeat: Duration,
    /// `cluster.autoheal`: redial members whose link was lost.
    pub autoheal: bool,
    /// `cluster.autoclean`: forget a member stopped this long.
    pub autoclean: Option<Duration>,
    /// `cluster.max_frame_size`: largest frame accepted from an authenticated peer.
    pub max_frame: usize,
}

/// `ctl cluster status`: members with a live link and members without one, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// This node and every joined member with a live link.
    pub running_nodes: Vec<String>,
    /// Joined members without a live link.
    pub stopped_nodes: Vec<String>,
}

impl ClusterStatus {
    /// The EMQX form: `Cluster status: [{running_nodes,['a','b']},{stopped_nodes,['c']}]`, the
    /// stopped part only when there are stopped members.
    pub fn render(&self) -> String {
        let quoted = |nodes: &[String]| {
            nodes
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = format!(
            "Cluster status: [{{running_nodes,[{}]}}",
            quoted(&self.running_nodes)
        );
        if !self.stopped_nodes.is_empty() {
            out.push_str(&format!(
                ",{{stopped_nodes,[{}]}}",
                quoted(&self.stopped_nodes)
            ));
        }
        out.push(']');
        out
    }
}

/// One row of `ctl routes list`: a filter and every node (local included) with a route for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteEntry {
    /// The topic filter (the inner filter of a shared subscription).
    pub filter: String,
    /// Nodes with at least one subscriber for it, sorted.
    pub nodes: Vec<String>,
}

/// Cluster counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterMetrics {
    /// Authenticated links currently up.
    pub links_up: u64,
    /// Running members, this node included.
    pub running_nodes: u64,
    /// Stopped members.
    pub stopped_nodes: u64,
    /// Routes in the table: local filters plus (filter, remote node) pairs.
    pub routes: u64,
    /// Publishes forwarded to other nodes (one per destination node).
    pub forwards_sent: u64,
    /// Publishes received from other nodes.
    pub forwards_received: u64,
    /// Forwards that could not be sent (no live link to a node that had a route).
    pub forward_drops: u64,
    /// Links refused or closed for bad input (handshake failures, garbage, oversize frames).
    pub links_rejected: u64,
    /// QoS >= 1 forwards kept until their node acknowledges them (in flight or buffered while
    /// its link is down).
    pub forwards_unacked: u64,
    /// Multicast announces (pings) sent.
    pub announces_sent: u64,
    /// Authenticated discovery datagrams from other nodes of the cluster.
    pub datagrams_received: u64,
    /// Discovery datagrams dropped (malformed, other cluster, other cookie, bad HMAC...).
    pub datagrams_dropped: u64,
    /// Incoming connections closed at once because `MAX_PENDING_HANDSHAKES` were pending.
    pub handshakes_refused: u64,
}
