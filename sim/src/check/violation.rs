//! What a checker found, typed; `Display` renders the one line of the failure report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::secs;
use crate::history::{ClusterView, MsgId};

/// A node's membership view as a violation reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub running: Vec<String>,
    pub stopped: Vec<String>,
}

impl Seen {
    pub fn of(view: &ClusterView) -> Seen {
        Seen {
            running: view.running.clone(),
            stopped: view.stopped.clone(),
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "running={:?} stopped={:?}", self.running, self.stopped)
    }
}

/// Every member's view in one sample round (`None`: not answering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberViews {
    pub at: Duration,
    pub views: Vec<(u32, Option<Seen>)>,
}

/// One violation of a checked property; fails the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A host failure or panic reported by the harness, as text.
    Harness(String),
    /// CONNACK said `session_present = 1` to a clean start.
    SessionOnCleanStart { client: String, t: Duration },
    /// SUBACK carried a failure code.
    RefusedSuback {
        client: String,
        t: Duration,
        granted: Vec<u8>,
    },
    /// A delivery whose payload is not one of the simulated message ids.
    ForeignPayload {
        client: String,
        t: Duration,
        topic: String,
    },
    /// A delivery of a message id nobody had published (yet).
    NeverPublished {
        client: String,
        t: Duration,
        msg: MsgId,
        topic: String,
    },
    /// A delivery on another topic than the message was published on.
    WrongTopic {
        client: String,
        t: Duration,
        msg: MsgId,
        topic: String,
        published_on: String,
    },
    /// A delivery to a client none of whose filters match (publishers have none).
    FilterMismatch {
        client: String,
        t: Duration,
        msg: MsgId,
        topic: String,
        filters: Vec<String>,
    },
    /// A delivery at a QoS other than min(published, granted).
    WrongQos {
        client: String,
        t: Duration,
        msg: MsgId,
        qos: u8,
        published: u8,
        granted: u8,
    },
    /// Without a cluster, a message published on one node delivered through another.
    IndependentLeak {
        client: String,
        t: Duration,
        msg: MsgId,
        published_on: u32,
        via: u32,
    },
    /// A first delivery older than an earlier one from the same publisher on one connection.
    OrderBroken {
        client: String,
        t: Duration,
        msg: MsgId,
        topic: String,
        after_seq: u32,
        conn: u32,
    },
    /// A node could not start.
    NodeFailed { node: u32, t: Duration, why: String },
    /// A QoS 2 message delivered more than once to one subscriber (at these times).
    Qos2Duplicate {
        client: String,
        msg: MsgId,
        times: Vec<Duration>,
    },
    /// An acknowledged QoS >= 1 message that never reached a subscriber (or shared group) that
    /// was subscribed and kept its session.
    NeverDelivered {
        subscribers: Vec<String>,
        qos: u8,
        msg: MsgId,
        topic: String,
        publisher: String,
        sent: Duration,
        subscribed_since: Duration,
    },
    /// A node listed one of `expect.never_members`.
    NeverMember {
        node: u32,
        t: Duration,
        outsider: String,
        seen: Seen,
    },
    /// A member's first sample since `expect.members_stable_from` that did not show exactly the
    /// members (`seen: None`: it did not answer), and how many bad samples it had.
    MembersUnstable {
        node: u32,
        t: Duration,
        seen: Option<Seen>,
        members: Vec<String>,
        from: Duration,
        bad_samples: u32,
    },
    /// The members did not agree on exactly themselves by `expect.formed_within`.
    NotFormed {
        members: Vec<String>,
        formed: Option<Duration>,
        within: Duration,
        /// The last sample round by then.
        last_seen: Option<MemberViews>,
    },
    /// No sample round in the liveness phase.
    NoLivenessSamples,
    /// The last sample round of the liveness phase still had problems.
    NotConverged {
        at: Duration,
        problems: Vec<Problem>,
    },
    /// Converged, but later than `expect.converge_within`.
    ConvergedLate { after: Duration, within: Duration },
    /// Fewer deliveries than `expect.min_deliveries`.
    TooFewDeliveries { delivered: u64, min: u64 },
}

/// Why one sample round is not converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The round has samples of `sampled` nodes, not `nodes`.
    Sampled {
        sampled: usize,
        nodes: usize,
    },
    NotAnswering {
        node: u32,
    },
    NotConnected(Vec<String>),
    /// Client ids live on more than one node.
    LiveTwice(Vec<String>),
    /// A node's members differ from its expected cluster.
    Members {
        node: u32,
        seen: Seen,
        expected: Vec<String>,
    },
    /// A node's route table differs from the live subscriptions of its cluster.
    Routes {
        node: u32,
        routes: BTreeMap<String, Vec<String>>,
        expected: BTreeMap<String, Vec<String>>,
    },
    UnknownClients(Vec<String>),
    /// Members hold different retained sets: (node, digest hash) of each member.
    RetainedDiffers(Vec<(u32, u64)>),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Sampled { sampled, nodes } => write!(f, "{sampled} of {nodes} nodes sampled"),
            Problem::NotAnswering { node } => write!(f, "n{node} not answering"),
            Problem::RetainedDiffers(digests) => {
                write!(f, "retained sets differ:")?;
                for (node, digest) in digests {
                    write!(f, " n{node}={digest:016x}")?;
                }
                Ok(())
            }
            Problem::NotConnected(ids) => write!(f, "not connected: {}", ids.join(",")),
            Problem::LiveTwice(ids) => write!(
                f,
                "live on more than one node (at most one live session per client id): {}",
                ids.join(",")
            ),
            Problem::Members {
                node,
                seen,
                expected,
            } => write!(f, "n{node} sees {seen}, expected running={expected:?}"),
            Problem::Routes {
                node,
                routes,
                expected,
            } => write!(
                f,
                "n{node} routes {routes:?} differ from the live subscriptions {expected:?}"
            ),
            Problem::UnknownClients(ids) => {
                write!(f, "unknown client ids connected: {}", ids.join(","))
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Harness(text) => f.write_str(text),
            Violation::SessionOnCleanStart { client, t } => write!(
                f,
                "{client} at {}: CONNACK session_present=1 answering a clean start",
                secs(*t)
            ),
            Violation::RefusedSuback { client, t, granted } => write!(
                f,
                "{client} at {}: SUBACK refused a subscription: {granted:?}",
                secs(*t)
            ),
            Violation::ForeignPayload { client, t, topic } => write!(
                f,
                "{client} at {}: delivered a message never published (foreign payload) on {topic}",
                secs(*t)
            ),
            Violation::NeverPublished {
                client,
                t,
                msg,
                topic,
            } => write!(
                f,
                "{client} at {}: delivered {msg} on {topic}, never published",
                secs(*t)
            ),
            Violation::WrongTopic {
                client,
                t,
                msg,
                topic,
                published_on,
            } => write!(
                f,
                "{client} at {}: {msg} delivered on {topic}, published on {published_on}",
                secs(*t)
            ),
            Violation::FilterMismatch {
                client,
                t,
                msg,
                topic,
                filters,
            } => write!(
                f,
                "{client} at {}: delivered {msg} on {topic}, which matches none of its filters \
                 {filters:?}",
                secs(*t)
            ),
            Violation::WrongQos {
                client,
                t,
                msg,
                qos,
                published,
                granted,
            } => write!(
                f,
                "{client} at {}: {msg} delivered at QoS {qos}, expected min(published \
                 {published}, granted {granted}) = {}",
                secs(*t),
                published.min(granted)
            ),
            Violation::IndependentLeak {
                client,
                t,
                msg,
                published_on,
                via,
            } => write!(
                f,
                "{client} at {}: {msg} published on independent node n{published_on} delivered \
                 via n{via}",
                secs(*t)
            ),
            Violation::OrderBroken {
                client,
                t,
                msg,
                topic,
                after_seq,
                conn,
            } => write!(
                f,
                "{client} at {}: {msg} on {topic} arrived after m{}.{after_seq} on connection \
                 {conn} (per-publisher order broken)",
                secs(*t),
                msg.publisher
            ),
            Violation::NodeFailed { node, t, why } => {
                write!(f, "n{node} at {}: failed to start: {why}", secs(*t))
            }
            Violation::Qos2Duplicate { client, msg, times } => {
                let times: Vec<String> = times.iter().map(|t| secs(*t)).collect();
                write!(
                    f,
                    "{client}: QoS 2 message {msg} delivered {} times (at {})",
                    times.len(),
                    times.join(", ")
                )
            }
            Violation::NeverDelivered {
                subscribers,
                qos,
                msg,
                topic,
                publisher,
                sent,
                subscribed_since,
            } => write!(
                f,
                "{}: QoS {qos} message {msg} on {topic} sent by {publisher} at {} (acked) never \
                 delivered; subscribed since {}, session never lost",
                subscribers.join("|"),
                secs(*sent),
                secs(*subscribed_since)
            ),
            Violation::NeverMember {
                node,
                t,
                outsider,
                seen,
            } => write!(
                f,
                "n{node} at {} lists {outsider}, which must never be a member: {seen}",
                secs(*t)
            ),
            Violation::MembersUnstable {
                node,
                t,
                seen,
                members,
                from,
                bad_samples,
            } => {
                let what = match seen {
                    None => "did not answer".to_string(),
                    Some(seen) => format!("saw {seen}"),
                };
                write!(
                    f,
                    "n{node} at {} {what}; expected running={members:?} and nothing stopped on \
                     every sample from {} (expect.members_stable_from); {bad_samples} bad samples",
                    secs(*t),
                    secs(*from)
                )
            }
            Violation::NotFormed {
                members,
                formed,
                within,
                last_seen,
            } => {
                let when =
                    formed.map_or_else(|| "never".into(), |t| format!("only at {}", secs(t)));
                write!(
                    f,
                    "members {members:?} agreed on exactly themselves {when}, expected by {} \
                     (expect.formed_within); last seen ",
                    secs(*within)
                )?;
                let Some(MemberViews { at, views }) = last_seen else {
                    return Ok(());
                };
                let parts: Vec<String> = views
                    .iter()
                    .map(|(n, seen)| match seen {
                        Some(seen) => format!("n{n} {seen}"),
                        None => format!("n{n} not answering"),
                    })
                    .collect();
                write!(f, "at {}: {}", secs(*at), parts.join("; "))
            }
            Violation::NoLivenessSamples => {
                f.write_str("no node samples during the liveness phase")
            }
            Violation::NotConverged { at, problems } => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "not converged at the end of the liveness phase ({}): {}",
                    secs(*at),
                    problems.join("; ")
                )
            }
            Violation::ConvergedLate { after, within } => write!(
                f,
                "converged only after {} of liveness (expect.converge_within = {})",
                secs(*after),
                secs(*within)
            ),
            Violation::TooFewDeliveries { delivered, min } => write!(
                f,
                "only {delivered} deliveries in the whole run (expect.min_deliveries = {min})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(publisher: u32, seq: u32) -> MsgId {
        MsgId { publisher, seq }
    }

    #[test]
    fn violations_render_the_report_lines_of_before_the_split() {
        let never_delivered = Violation::NeverDelivered {
            subscribers: vec!["persist-s2".into()],
            qos: 1,
            msg: msg(11, 212),
            topic: "dev/a/state".into(),
            publisher: "persist-p2".into(),
            sent: Duration::from_millis(21_107),
            subscribed_since: Duration::from_millis(308),
        };
        assert_eq!(
            never_delivered.to_string(),
            "persist-s2: QoS 1 message m11.212 on dev/a/state sent by persist-p2 at 21.107s \
             (acked) never delivered; subscribed since 0.308s, session never lost"
        );
        let duplicate = Violation::Qos2Duplicate {
            client: "q2-s1".into(),
            msg: msg(3, 7),
            times: vec![Duration::from_millis(1_500), Duration::from_millis(2_010)],
        };
        assert_eq!(
            duplicate.to_string(),
            "q2-s1: QoS 2 message m3.7 delivered 2 times (at 1.500s, 2.010s)"
        );
        let wrong_qos = Violation::WrongQos {
            client: "w1-s1".into(),
            t: Duration::from_secs(4),
            msg: msg(0, 9),
            qos: 2,
            published: 2,
            granted: 1,
        };
        assert_eq!(
            wrong_qos.to_string(),
            "w1-s1 at 4.000s: m0.9 delivered at QoS 2, expected min(published 2, granted 1) = 1"
        );
        let not_formed = Violation::NotFormed {
            members: vec!["n1@n1".into(), "n2@n2".into()],
            formed: Some(Duration::from_millis(8_500)),
            within: Duration::from_secs(8),
            last_seen: Some(MemberViews {
                at: Duration::from_secs(8),
                views: vec![
                    (
                        1,
                        Some(Seen {
                            running: vec!["n1@n1".into()],
                            stopped: vec![],
                        }),
                    ),
                    (2, None),
                ],
            }),
        };
        assert_eq!(
            not_formed.to_string(),
            "members [\"n1@n1\", \"n2@n2\"] agreed on exactly themselves only at 8.500s, expected \
             by 8.000s (expect.formed_within); last seen at 8.000s: n1 running=[\"n1@n1\"] \
             stopped=[]; n2 not answering"
        );
        let not_converged = Violation::NotConverged {
            at: Duration::from_secs(80),
            problems: vec![
                Problem::NotAnswering { node: 2 },
                Problem::NotConnected(vec!["w1-s1".into(), "w1-p1".into()]),
            ],
        };
        assert_eq!(
            not_converged.to_string(),
            "not converged at the end of the liveness phase (80.000s): n2 not answering; not \
             connected: w1-s1,w1-p1"
        );
    }
}
