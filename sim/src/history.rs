//! The recorded history of a run: every publish, ack, delivery, connect, disconnect, subscription,
//! fault and node sample, in the order the simulation produced them, stamped with simulated time.
//! Checkers read only this (and the scenario), never the code under test.
//!
//! Also owns the trace hash: FNV-1a 64 over the rendered events and their timestamps, so two runs
//! of one seed can be compared with one number. Must never record anything that depends on the
//! real clock, addresses of objects or hash-map iteration order.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use flockmq::fnv::Fnv64;

/// Index of a simulated client in the roster.
pub type ClientIdx = u32;

/// Interned topic name (small set: the scenario's topics plus anything odd a node delivers).
pub type TopicId = u32;

/// A unique message id, carried in the payload as `m<publisher>.<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId {
    /// Roster index of the publishing client.
    pub publisher: ClientIdx,
    /// Per-publisher sequence number, from 1, in publish order.
    pub seq: u32,
}

impl MsgId {
    /// The payload that carries this id.
    pub fn payload(self) -> String {
        format!("m{}.{}", self.publisher, self.seq)
    }

    /// Reads an id back from a payload; `None` for anything that is not one of ours.
    pub fn parse(payload: &[u8]) -> Option<MsgId> {
        let text = std::str::from_utf8(payload).ok()?;
        let (p, s) = text.strip_prefix('m')?.split_once('.')?;
        Some(MsgId {
            publisher: p.parse().ok()?,
            seq: s.parse().ok()?,
        })
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}.{}", self.publisher, self.seq)
    }
}

/// Why a client's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCause {
    /// A `client_disconnect` fault dropped it (no DISCONNECT sent).
    Fault,
    /// Nothing arrived for too long (keepalive expired on the client side).
    Keepalive,
    /// The server closed the stream (EOF, reset) or sent DISCONNECT.
    Closed,
    /// The server sent bytes the client could not decode, or a protocol error.
    Protocol,
    /// A write did not complete in time.
    WriteStalled,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client starts a TCP connect to a node.
    ConnectAttempt {
        client: ClientIdx,
        node: u32,
        clean_start: bool,
    },
    /// The connect or the CONNECT/CONNACK exchange failed.
    ConnectFailed {
        client: ClientIdx,
        node: u32,
        why: String,
    },
    /// CONNACK accepted: a new connection (numbered per client from 1).
    Connected {
        client: ClientIdx,
        node: u32,
        conn: u32,
        session_present: bool,
    },
    /// SUBACK received: the granted QoS (or failure code) per filter.
    Subscribed { client: ClientIdx, granted: Vec<u8> },
    /// A publisher sent a message for the first time.
    Published {
        client: ClientIdx,
        msg: MsgId,
        topic: TopicId,
        qos: u8,
        node: u32,
    },
    /// PUBACK (QoS 1) or PUBREC (QoS 2) with a success code: the node took responsibility.
    Acked { client: ClientIdx, msg: MsgId },
    /// PUBACK/PUBREC with an error code.
    Rejected {
        client: ClientIdx,
        msg: MsgId,
        reason: u8,
    },
    /// A QoS 2 message's PUBCOMP arrived.
    Completed { client: ClientIdx, msg: MsgId },
    /// The session was lost (CONNACK without session) while the message was unacknowledged.
    Abandoned { client: ClientIdx, msg: MsgId },
    /// A subscriber received a message (QoS 2: only the first PUBLISH of a packet id).
    Delivered {
        client: ClientIdx,
        conn: u32,
        msg: Option<MsgId>,
        topic: TopicId,
        qos: u8,
        dup: bool,
    },
    /// A client's connection ended.
    Disconnected {
        client: ClientIdx,
        conn: u32,
        cause: DisconnectCause,
    },
    /// The harness applied a fault (or undid one); text as in the scenario.
    Fault { text: String },
    /// A node host (re)started its node.
    NodeStarted { node: u32, incarnation: u32 },
    /// A node host crashed.
    NodeCrashed { node: u32 },
    /// The node could not start (bind failed...).
    NodeFailed { node: u32, why: String },
    /// The safety phase ended: faults are healed, publishers stop, everything must converge.
    LivenessPhase,
    /// What a node reported (`None`: not running / no answer).
    Sample {
        node: u32,
        sample: Option<NodeSample>,
    },
}

/// What the monitor read from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    /// Client ids with a live connection, sorted.
    pub connected: Vec<String>,
    /// Sessions (connected or not).
    pub sessions: u64,
    pub subscriptions: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub messages_dropped: u64,
    /// The node's cluster view; `None` unless the scenario is clustered.
    pub cluster: Option<ClusterView>,
    /// A hash of the node's retained-set digest; `None` unless a workload retains.
    pub retained: Option<u64>,
}

/// What a node says about its cluster (`NodeHandle::cluster_status` and `routes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// `running_nodes`, sorted node names (`n1@n1`).
    pub running: Vec<String>,
    /// `stopped_nodes`, sorted.
    pub stopped: Vec<String>,
    /// The route table: topic filter -> sorted node names.
    pub routes: BTreeMap<String, Vec<String>>,
}

/// The names behind indices, for rendering.
pub trait Names {
    /// The client id of roster entry `client`.
    fn client(&self, client: ClientIdx) -> &str;
}

/// Every event of a run with its simulated time.
#[derive(Debug, Default)]
pub struct History {
    events: Vec<(Duration, Event)>,
    topics: Vec<String>,
    topic_ids: BTreeMap<String, TopicId>,
}

impl History {
    /// Appends an event at simulated time `at`.
    pub fn record(&mut self, at: Duration, event: Event) {
        self.events.push((at, event));
    }

    /// The id of `topic`, interning it on first use.
    pub fn topic_id(&mut self, topic: &str) -> TopicId {
        if let Some(&id) = self.topic_ids.get(topic) {
            return id;
        }
        let id = self.topics.len() as TopicId;
        self.topics.push(topic.to_string());
        self.topic_ids.insert(topic.to_string(), id);
        id
    }

    /// The name of an interned topic.
    pub fn topic(&self, id: TopicId) -> &str {
        self.topics.get(id as usize).map_or("?", String::as_str)
    }

    /// All events in order.
    pub fn events(&self) -> &[(Duration, Event)] {
        &self.events
    }

    /// Writes one event as a line (without newline): `12.345000 w1-s3 delivered m4.17 ...`.
    pub fn render(
        &self,
        names: &dyn Names,
        at: Duration,
        event: &Event,
        out: &mut dyn fmt::Write,
    ) -> fmt::Result {
        write!(out, "{:>4}.{:06} ", at.as_secs(), at.subsec_micros())?;
        let c = |i: ClientIdx| names.client(i);
        match event {
            Event::ConnectAttempt {
                client,
                node,
                clean_start,
            } => write!(
                out,
                "{} connect n{node} clean_start={clean_start}",
                c(*client)
            ),
            Event::ConnectFailed { client, node, why } => {
                write!(out, "{} connect n{node} failed: {why}", c(*client))
            }
            Event::Connected {
                client,
                node,
                conn,
                session_present,
            } => write!(
                out,
                "{} connected n{node} conn={conn} session_present={session_present}",
                c(*client)
            ),
            Event::Subscribed { client, granted } => {
                write!(out, "{} subscribed granted={granted:?}", c(*client))
            }
            Event::Published {
                client,
                msg,
                topic,
                qos,
                node,
            } => write!(
                out,
                "{} publish {msg} {} qos={qos} via n{node}",
                c(*client),
                self.topic(*topic)
            ),
            Event::Acked { client, msg } => write!(out, "{} acked {msg}", c(*client)),
            Event::Rejected {
                client,
                msg,
                reason,
            } => write!(out, "{} rejected {msg} reason=0x{reason:02x}", c(*client)),
            Event::Completed { client, msg } => write!(out, "{} completed {msg}", c(*client)),
            Event::Abandoned { client, msg } => write!(out, "{} abandoned {msg}", c(*client)),
            Event::Delivered {
                client,
                conn,
                msg,
                topic,
                qos,
                dup,
            } => {
                write!(out, "{} deliver ", c(*client))?;
                match msg {
                    Some(m) => write!(out, "{m}")?,
                    None => out.write_str("<foreign payload>")?,
                }
                write!(
                    out,
                    " {} qos={qos} dup={dup} conn={conn}",
                    self.topic(*topic)
                )
            }
            Event::Disconnected {
                client,
                conn,
                cause,
            } => write!(out, "{} disconnected conn={conn} {cause:?}", c(*client)),
            Event::Fault { text } => write!(out, "fault {text}"),
            Event::NodeStarted { node, incarnation } => {
                write!(out, "n{node} started incarnation={incarnation}")
            }
            Event::NodeCrashed { node } => write!(out, "n{node} crashed"),
            Event::NodeFailed { node, why } => write!(out, "n{node} failed to start: {why}"),
            Event::LivenessPhase => write!(out, "liveness phase: faults healed"),
            Event::Sample { node, sample: None } => write!(out, "n{node} sample: down"),
            Event::Sample {
                node,
                sample: Some(s),
            } => {
                write!(
                    out,
                    "n{node} sample: connected={} sessions={} subscriptions={} in={} out={} dropped={}",
                    s.connected.len(),
                    s.sessions,
                    s.subscriptions,
                    s.messages_in,
                    s.messages_out,
                    s.messages_dropped
                )?;
                if let Some(c) = &s.cluster {
                    write!(
                        out,
                        " running={:?} stopped={:?} routes={}",
                        c.running,
                        c.stopped,
                        c.routes.len()
                    )?;
                }
                match s.retained {
                    Some(digest) => write!(out, " retained={digest:016x}"),
                    None => Ok(()),
                }
            }
        }
    }

    /// FNV-1a 64 over every rendered event and its timestamp: equal for equal histories.
    pub fn trace_hash(&self, names: &dyn Names) -> u64 {
        let mut hash = Fnv64::new();
        for (at, event) in &self.events {
            // `Fnv64` never fails to absorb text.
            let _ = self.render(names, *at, event, &mut hash);
            hash.write_bytes(b"\n");
        }
        hash.finish()
    }

    /// The whole trace as text, one event per line (`--trace`).
    pub fn dump(&self, names: &dyn Names) -> String {
        let mut out = String::new();
        for (at, event) in &self.events {
            let _ = self.render(names, *at, event, &mut out);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_round_trip_through_payloads() {
        let m = MsgId {
            publisher: 12,
            seq: 345,
        };
        assert_eq!(MsgId::parse(m.payload().as_bytes()), Some(m));
        assert_eq!(MsgId::parse(b"hello"), None);
        assert_eq!(MsgId::parse(b"m1.x"), None);
    }

    struct Ids;
    impl Names for Ids {
        fn client(&self, _: ClientIdx) -> &str {
            "c"
        }
    }

    #[test]
    fn trace_hash_depends_on_time_and_content() {
        let mut a = History::default();
        a.record(Duration::from_millis(5), Event::LivenessPhase);
        let mut b = History::default();
        b.record(Duration::from_millis(6), Event::LivenessPhase);
        let mut c = History::default();
        c.record(Duration::from_millis(5), Event::LivenessPhase);
        assert_ne!(a.trace_hash(&Ids), b.trace_hash(&Ids));
        assert_eq!(a.trace_hash(&Ids), c.trace_hash(&Ids));
    }
}
