//! Checkers: read the recorded history (never the code under test) and list every violation as
//! one line of text; plus the run summary that the snapshot tests pin.
//!
//! Safety (all the time, faults on): no delivery to a client whose filters do not match; no
//! delivery of a message never published (or on another topic, or at the wrong QoS); QoS 2
//! exactly once per subscriber; per-publisher order per topic for first deliveries on one
//! connection; independent nodes never leak messages to each other; `session_present` never set
//! on a clean start.
//!
//! Liveness (after the liveness phase's quiet period): QoS >= 1 at least once (the exact excuses
//! are on [`at_least_once`]); every client connected exactly once across the nodes
//! (at most one live session per client id) within `expect.converge_within`.
//!
//! Owns no simulation state; never panics on a strange history (it reports it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::client::{ClientSpec, Shared};
use crate::fault::Action;
use crate::harness::{Recorded, RunOptions, simulate};
use crate::history::{ClientIdx, ClusterView, Event, MsgId, NodeSample, TopicId};
use crate::scenario::{Scenario, SessionKind, Workload, share_group, strip_share};

/// Counters shown in the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Messages published, by QoS.
    pub published: [u64; 3],
    /// PUBACK/PUBREC with success.
    pub acked: u64,
    /// PUBACK/PUBREC with an error code.
    pub rejected: u64,
    /// Unacknowledged messages dropped by their publisher because the session was gone.
    pub abandoned: u64,
    /// Deliveries, by QoS.
    pub delivered: [u64; 3],
    /// QoS 1 deliveries of a message the subscriber already had.
    pub qos1_duplicates: u64,
    /// QoS >= 1 (subscriber, message) obligations met or missed.
    pub required: u64,
    /// Undelivered messages the at-least-once rules excuse (state lost by design).
    pub excused: u64,
    /// Accepted CONNACKs.
    pub connections: u64,
    /// Connects that failed (TCP, timeout, refused CONNACK).
    pub connect_failures: u64,
    /// Connections that ended.
    pub disconnects: u64,
    /// Fault actions applied (scenario, swarm and liveness restarts).
    pub faults: u64,
    /// Node (re)starts.
    pub node_starts: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Time from the start of the liveness phase until every node agreed for good.
    pub converged_after: Option<Duration>,
    /// With `expect.formed_within`: `Some(when)` the members first agreed on exactly themselves
    /// (`Some(None)`: never in the safety phase); `None` when not checked (and not shown).
    pub formed_at: Option<Option<Duration>>,
    /// Time from the start of the liveness phase to the last ack or delivery.
    pub quiet_after: Duration,
}

/// The result of one run: what happened, what was checked, what failed.
pub struct Outcome {
    /// The scenario's file, as given.
    pub file: String,
    pub name: String,
    pub seed: u64,
    pub recorded: Recorded,
    pub stats: Stats,
    pub violations: Vec<String>,
    pub trace_hash: u64,
}

/// Runs `scenario` with `seed`, then every checker.
pub fn run(scenario: &Scenario, seed: u64, options: RunOptions) -> Outcome {
    let recorded = simulate(scenario, seed, options);
    let (stats, violations) = check(scenario, &recorded);
    let trace_hash = recorded
        .shared
        .history
        .borrow()
        .trace_hash(&recorded.shared.roster);
    Outcome {
        file: display_path(&scenario.file),
        name: scenario.name.clone(),
        seed,
        recorded,
        stats,
        violations,
        trace_hash,
    }
}

/// `../scenarios/x.toml` or `/abs/.../scenarios/x.toml` -> `scenarios/x.toml`, so the reproduce
/// line works from the workspace root whatever directory the run started in.
pub fn display_path(path: &Path) -> String {
    let text = path.display().to_string();
    match text.rfind("scenarios/") {
        Some(i) if i == 0 || text[..i].ends_with('/') => text[i..].to_string(),
        _ => text,
    }
}

impl Outcome {
    /// True when no checker found anything.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The one line that replays this run.
    pub fn reproduce_line(&self) -> String {
        format!(
            "reproduce: cargo run -p flockmq-sim -- run {} --seed {}",
            self.file, self.seed
        )
    }

    /// The summary pinned by snapshot tests: stable text, no wall-clock numbers.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let shared = &self.recorded.shared;
        let publishers = shared.roster.iter().filter(|c| c.publisher).count();
        let mut out = String::new();
        let _ = writeln!(out, "scenario: {} ({})", self.name, self.file);
        let _ = writeln!(out, "seed: {}", self.seed);
        let _ = writeln!(
            out,
            "clients: {} ({publishers} publishers, {} subscribers)",
            shared.roster.len(),
            shared.roster.len() - publishers
        );
        let _ = writeln!(
            out,
            "simulated: {} safety + {} liveness",
            secs(self.recorded.liveness_start),
            secs(self.recorded.end - self.recorded.liveness_start)
        );
        let _ = writeln!(
            out,
            "faults applied: {} (node starts {}, crashes {}, datagrams lost {})",
            s.faults, s.node_starts, s.crashes, self.recorded.datagrams_dropped
        );
        let _ = writeln!(
            out,
            "published: qos0={} qos1={} qos2={} acked={} rejected={} abandoned={}",
            s.published[0], s.published[1], s.published[2], s.acked, s.rejected, s.abandoned
        );
        let _ = writeln!(
            out,
            "delivered: qos0={} qos1={} qos2={} qos1-duplicates={}",
            s.delivered[0], s.delivered[1], s.delivered[2], s.qos1_duplicates
        );
        let _ = writeln!(
            out,
            "at-least-once: required={} excused={}",
            s.required, s.excused
        );
        let _ = writeln!(
            out,
            "connections: {} connect-failures={} disconnects={}",
            s.connections, s.connect_failures, s.disconnects
        );
        let converged = s.converged_after.map_or_else(|| "never".into(), secs);
        let _ = writeln!(out, "converged after: {converged}");
        if let Some(formed) = s.formed_at {
            let formed = formed.map_or_else(|| "never".into(), secs);
            let _ = writeln!(out, "formed at: {formed}");
        }
        let _ = writeln!(out, "quiet after: {}", secs(s.quiet_after));
        let _ = writeln!(out, "violations: {}", self.violations.len());
        let _ = writeln!(out, "trace: {:016x}", self.trace_hash);
        out
    }

    /// Violations (at most 50 lines), then the reproduce line last.
    pub fn failure_report(&self) -> String {
        let mut out = String::new();
        for v in self.violations.iter().take(50) {
            let _ = writeln!(out, "violation: {v}");
        }
        if self.violations.len() > 50 {
            let _ = writeln!(out, "... and {} more", self.violations.len() - 50);
        }
        out.push_str(&self.reproduce_line());
        out.push('\n');
        out
    }

    /// Every event of the run, one per line.
    pub fn trace(&self) -> String {
        self.recorded
            .shared
            .history
            .borrow()
            .dump(&self.recorded.shared.roster)
    }
}

fn secs(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// MQTT filter matching (§4.7), written independently of the broker's trie so the checker is an
/// oracle, not a copy.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn workload_matches(w: &Workload, topic: &str) -> bool {
    w.filters
        .iter()
        .any(|f| topic_matches(strip_share(f), topic))
}

fn is_shared(w: &Workload) -> bool {
    w.filters.first().and_then(|f| share_group(f)).is_some()
}

/// A published message as the checker sees it.
struct Pub {
    t: Duration,
    topic: TopicId,
    qos: u8,
    node: u32,
    acked: Option<Duration>,
}

/// One session incarnation of a subscriber: from a CONNACK without session until the session is
/// known to be gone (clean session: the disconnect; persistent: the next CONNACK without session).
struct Incarnation {
    begin: Duration,
    end: Option<Duration>,
    subscribed_at: Option<Duration>,
    granted: Vec<u8>,
    node: u32,
}

struct Delivery {
    t: Duration,
    qos: u8,
}

/// The longest cut between two nodes after which every QoS >= 1 forward must still arrive: the
/// cluster keeps them for 30 s from the moment the link is declared dead (3 heartbeats), and
/// reconnecting after the heal takes up to the capped dial backoff (5 heartbeats), so 20 s leaves
/// margin for the 1 s heartbeat most scenarios use.
const BUFFERED_CUT: Duration = Duration::from_secs(20);

/// Windows in which a node pair could not talk (cluster mode excuses).
struct Disturbance {
    from: Duration,
    until: Duration,
    nodes: BTreeSet<u32>,
    /// Which node pairs were cut; empty = every pair touching `nodes`.
    pairs: Vec<(u32, u32)>,
}

/// Runs every checker; returns the stats and the violations.
pub fn check(scenario: &Scenario, recorded: &Recorded) -> (Stats, Vec<String>) {
    let shared: &Shared = &recorded.shared;
    let history = shared.history.borrow();
    let roster = &shared.roster;
    let name = |c: ClientIdx| roster.get(c as usize).map_or("?", |c| c.id.as_str());
    let mut stats = Stats::default();
    let mut violations: Vec<String> = recorded.errors.clone();

    let mut publishes: BTreeMap<MsgId, Pub> = BTreeMap::new();
    let mut incs: Vec<Vec<Incarnation>> = roster.iter().map(|_| Vec::new()).collect();
    let mut last_clean_start: Vec<bool> = roster.iter().map(|_| true).collect();
    let mut conn_node: BTreeMap<(ClientIdx, u32), u32> = BTreeMap::new();
    let mut deliveries: BTreeMap<(ClientIdx, MsgId), Vec<Delivery>> = BTreeMap::new();
    let mut order: BTreeMap<(ClientIdx, u32, ClientIdx, TopicId), u32> = BTreeMap::new();
    let mut crashes: Vec<(Duration, u32)> = Vec::new();
    let mut last_activity = Duration::ZERO;

    let workload_of = |c: ClientIdx| -> Option<(&ClientSpec, &Workload)> {
        let spec = roster.get(c as usize)?;
        Some((spec, shared.workloads.get(spec.workload)?))
    };

    for (t, event) in history.events() {
        let t = *t;
        match event {
            Event::ConnectAttempt {
                client,
                clean_start,
                ..
            } => {
                if let Some(c) = last_clean_start.get_mut(*client as usize) {
                    *c = *clean_start;
                }
            }
            Event::ConnectFailed { .. } => stats.connect_failures += 1,
            Event::Connected {
                client,
                node,
                conn,
                session_present,
            } => {
                stats.connections += 1;
                conn_node.insert((*client, *conn), *node);
                let clean = last_clean_start
                    .get(*client as usize)
                    .copied()
                    .unwrap_or(true);
                if clean && *session_present {
                    violations.push(format!(
                        "{} at {}: CONNACK session_present=1 answering a clean start",
                        name(*client),
                        secs(t)
                    ));
                }
                let Some(list) = incs.get_mut(*client as usize) else {
                    continue;
                };
                if !*session_present || list.is_empty() {
                    if let Some(last) = list.last_mut() {
                        last.end.get_or_insert(t);
                    }
                    list.push(Incarnation {
                        begin: t,
                        end: None,
                        subscribed_at: None,
                        granted: Vec::new(),
                        node: *node,
                    });
                }
            }
            Event::Subscribed { client, granted } => {
                if granted.iter().any(|g| *g >= 0x80) {
                    violations.push(format!(
                        "{} at {}: SUBACK refused a subscription: {granted:?}",
                        name(*client),
                        secs(t)
                    ));
                }
                if let Some(inc) = incs.get_mut(*client as usize).and_then(|l| l.last_mut()) {
                    inc.subscribed_at.get_or_insert(t);
                    inc.granted = granted.clone();
                }
            }
            Event::Disconnected { client, .. } => {
                stats.disconnects += 1;
                let clean =
                    workload_of(*client).is_some_and(|(_, w)| w.session == SessionKind::Clean);
                if clean
                    && let Some(inc) = incs.get_mut(*client as usize).and_then(|l| l.last_mut())
                {
                    inc.end.get_or_insert(t);
                }
            }
            Event::Published {
                msg,
                topic,
                qos,
                node,
                ..
            } => {
                if let Some(n) = stats.published.get_mut(usize::from(*qos)) {
                    *n += 1;
                }
                publishes.insert(
                    *msg,
                    Pub {
                        t,
                        topic: *topic,
                        qos: *qos,
                        node: *node,
                        acked: None,
                    },
                );
            }
            Event::Acked { msg, .. } => {
                stats.acked += 1;
                last_activity = last_activity.max(t);
                if let Some(p) = publishes.get_mut(msg) {
                    p.acked.get_or_insert(t);
                }
            }
            Event::Rejected { .. } => stats.rejected += 1,
            Event::Completed { .. } => last_activity = last_activity.max(t),
            Event::Abandoned { .. } => stats.abandoned += 1,
            Event::Delivered {
                client,
                conn,
                msg,
                topic,
                qos,
                ..
            } => {
                last_activity = last_activity.max(t);
                if let Some(n) = stats.delivered.get_mut(usize::from(*qos)) {
                    *n += 1;
                }
                let who = name(*client);
                let topic_name = history.topic(*topic);
                let Some(msg) = msg else {
                    violations.push(format!(
                        "{who} at {}: delivered a message never published (foreign payload) on {topic_name}",
                        secs(t)
                    ));
                    continue;
                };
                let Some(p) = publishes.get(msg) else {
                    violations.push(format!(
                        "{who} at {}: delivered {msg} on {topic_name}, never published",
                        secs(t)
                    ));
                    continue;
                };
                if p.topic != *topic {
                    violations.push(format!(
                        "{who} at {}: {msg} delivered on {topic_name}, published on {}",
                        secs(t),
                        history.topic(p.topic)
                    ));
                }
                let Some((spec, w)) = workload_of(*client) else {
                    continue;
                };
                if spec.publisher || !workload_matches(w, topic_name) {
                    violations.push(format!(
                        "{who} at {}: delivered {msg} on {topic_name}, which matches none of its filters {:?}",
                        secs(t),
                        if spec.publisher { &[][..] } else { &w.filters[..] }
                    ));
                    continue;
                }
                let granted = incs
                    .get(*client as usize)
                    .and_then(|l| l.last())
                    .and_then(|i| i.granted.iter().copied().filter(|g| *g <= 2).max())
                    .unwrap_or(w.sub_qos);
                let expected = p.qos.min(granted);
                if *qos != expected {
                    violations.push(format!(
                        "{who} at {}: {msg} delivered at QoS {qos}, expected min(published {}, granted {granted}) = {expected}",
                        secs(t),
                        p.qos
                    ));
                }
                let node = conn_node.get(&(*client, *conn)).copied().unwrap_or(0);
                if !scenario.clustered && node != p.node {
                    violations.push(format!(
                        "{who} at {}: {msg} published on independent node n{} delivered via n{node}",
                        secs(t),
                        p.node
                    ));
                }
                // Order is judged on first deliveries only: a QoS 1 message the publisher had
                // to resend is a new message for the node and may legally arrive again later.
                let first = !deliveries.contains_key(&(*client, *msg));
                if first {
                    let key = (*client, *conn, msg.publisher, *topic);
                    if let Some(&last) = order.get(&key)
                        && msg.seq <= last
                    {
                        violations.push(format!(
                            "{who} at {}: {msg} on {topic_name} arrived after m{}.{last} on connection {conn} (per-publisher order broken)",
                            secs(t),
                            msg.publisher
                        ));
                    }
                    let entry = order.entry(key).or_insert(msg.seq);
                    *entry = (*entry).max(msg.seq);
                }
                deliveries
                    .entry((*client, *msg))
                    .or_default()
                    .push(Delivery { t, qos: *qos });
            }
            Event::NodeStarted { .. } => stats.node_starts += 1,
            Event::NodeCrashed { node } => {
                stats.crashes += 1;
                crashes.push((t, *node));
            }
            Event::NodeFailed { node, why } => {
                violations.push(format!("n{node} at {}: failed to start: {why}", secs(t)));
            }
            Event::Fault { .. } => stats.faults += 1,
            Event::LivenessPhase | Event::Sample { .. } => {}
        }
    }
    stats.quiet_after = last_activity.saturating_sub(recorded.liveness_start);

    // QoS 2: exactly once per subscriber and message.
    for ((client, msg), list) in &deliveries {
        if list.iter().any(|d| d.qos == 2) && list.len() > 1 {
            let times: Vec<String> = list.iter().map(|d| secs(d.t)).collect();
            violations.push(format!(
                "{}: QoS 2 message {msg} delivered {} times (at {})",
                name(*client),
                list.len(),
                times.join(", ")
            ));
        }
        if list.iter().all(|d| d.qos == 1) {
            stats.qos1_duplicates += list.len() as u64 - 1;
        }
    }

    let mut windows = disturbances(recorded);
    windows.extend(forming_windows(scenario, recorded, history.events()));
    at_least_once(
        scenario,
        shared,
        &publishes,
        &incs,
        &deliveries,
        &crashes,
        &windows,
        &mut stats,
        &mut violations,
        &|t| history.topic(t).to_string(),
    );
    never_members(scenario, history.events(), &mut violations);
    members_stable(scenario, history.events(), &mut violations);
    formed_within(scenario, history.events(), &mut stats, &mut violations);
    convergence(
        scenario,
        recorded,
        history.events(),
        &mut stats,
        &mut violations,
    );

    let delivered: u64 = stats.delivered.iter().sum();
    if delivered < scenario.expect.min_deliveries {
        violations.push(format!(
            "only {delivered} deliveries in the whole run (expect.min_deliveries = {})",
            scenario.expect.min_deliveries
        ));
    }
    (stats, violations)
}

/// The incarnation of a subscriber that was subscribed when a message was sent at `t`.
fn subscribed_at(incs: &[Incarnation], t: Duration) -> Option<&Incarnation> {
    incs.iter().find(|i| {
        i.begin <= t && i.end.is_none_or(|e| e > t) && i.subscribed_at.is_some_and(|s| s <= t)
    })
}

/// QoS >= 1 at least once. A message is required for a subscriber when all of these hold:
///
/// 1. its publisher got PUBACK/PUBREC with a success code (the node took responsibility);
/// 2. the delivery QoS min(published, subscribed) is at least 1 and one of the subscriber's
///    filters matches;
/// 3. the subscriber had a SUBACK for that subscription, in its current session incarnation,
///    before the message was sent (earlier subscriptions may or may not be in place yet);
/// 4. without a cluster, the subscriber's session lives on the node the message was sent to.
///
/// Excused (counted, not required), because the lost state was in memory by design:
/// - the subscriber's session incarnation ended after the message was sent: a clean session
///   disconnected (its queue died with it), or a persistent session was found missing at the next
///   CONNACK (node crashed and restarted without it, or it expired);
/// - the node the message was sent to crashed after the send and before the subscriber got it
///   (messages still queued or in flight in that node's memory);
/// - cluster mode only: the message was sent while (or within `expect.route_settle` of) a crash of
///   either node or a time one of them was outside the cluster (before its join, after its
///   leave, before the pair first formed for `[node_start]` nodes or `excuse_until_formed`); or
///   of a cut between them (partition, one-way partition, hold) that lasted at least
///   [`BUFFERED_CUT`], or that began within `route_settle` of the subscription or of the
///   publisher's node's restart or join (the route may not have reached that node). Shorter cuts
///   excuse nothing: nodes buffer QoS >= 1 forwards for an unreachable node and resend them after
///   reconnecting. "Sent" spans the first send to the ack: a publisher cut from its own node
///   resends after reconnecting, so its node may only take the message then.
///
/// Shared subscriptions: the same rules per group (one workload = one group): required when some
/// member was subscribed at the send, excused when any member subscribed at the send lost its
/// session afterwards; satisfied by a delivery to any member (also one that (re)joined after the
/// send).
#[allow(clippy::too_many_arguments)]
fn at_least_once(
    scenario: &Scenario,
    shared: &Shared,
    publishes: &BTreeMap<MsgId, Pub>,
    incs: &[Vec<Incarnation>],
    deliveries: &BTreeMap<(ClientIdx, MsgId), Vec<Delivery>>,
    crashes: &[(Duration, u32)],
    windows: &[Disturbance],
    stats: &mut Stats,
    violations: &mut Vec<String>,
    topic_name: &dyn Fn(TopicId) -> String,
) {
    let roster = &shared.roster;
    let first_delivery = |c: ClientIdx, m: &MsgId| {
        deliveries
            .get(&(c, *m))
            .and_then(|l| l.first())
            .map(|d| d.t)
    };
    let crashed_before = |node: u32, after: Duration, delivered: Option<Duration>| {
        crashes
            .iter()
            .any(|(tc, n)| *n == node && *tc >= after && delivered.is_none_or(|d| d > *tc))
    };
    // The node took the message somewhere between the first send and the ack (a publisher cut
    // from its node resends after reconnecting): the whole span counts.
    let disturbed =
        |a: u32, b: u32, sent: Duration, acked: Duration, subscribed: Option<Duration>| {
            scenario.clustered
                && a != b
                && windows.iter().any(|w| {
                    let settle = scenario.expect.route_settle;
                    let during = w.from.saturating_sub(settle) <= acked && sent <= w.until + settle;
                    if !during {
                        return false;
                    }
                    if w.pairs.is_empty() {
                        return w.nodes.contains(&a) || w.nodes.contains(&b);
                    }
                    // The publisher's node learns the subscriber's route over a link; since the
                    // subscription and since the publisher's node (re)started or joined, it needs one.
                    let node_since = windows
                        .iter()
                        .filter(|o| o.pairs.is_empty() && o.nodes.contains(&a) && o.until <= acked)
                        .map(|o| o.until)
                        .max();
                    let route_since = subscribed.max(node_since);
                    w.pairs.contains(&(a.min(b), a.max(b)))
                        && (w.until.saturating_sub(w.from) >= BUFFERED_CUT
                            || route_since.is_none_or(|s| s + settle >= w.from))
                })
        };
    // Subscribers grouped by workload.
    let mut by_workload: BTreeMap<usize, Vec<ClientIdx>> = BTreeMap::new();
    for (i, c) in roster.iter().enumerate() {
        if !c.publisher {
            by_workload
                .entry(c.workload)
                .or_default()
                .push(i as ClientIdx);
        }
    }
    for (msg, p) in publishes {
        if p.qos == 0 || p.acked.is_none() {
            continue;
        }
        let topic = topic_name(p.topic);
        for (wi, members) in &by_workload {
            let Some(w) = shared.workloads.get(*wi) else {
                continue;
            };
            if w.sub_qos == 0 || !workload_matches(w, &topic) {
                continue;
            }
            let eligible: Vec<(ClientIdx, &Incarnation)> = members
                .iter()
                .filter_map(|&c| {
                    let inc = subscribed_at(incs.get(c as usize)?, p.t)?;
                    (scenario.clustered || inc.node == p.node).then_some((c, inc))
                })
                .collect();
            let groups: Vec<Vec<(ClientIdx, &Incarnation)>> = if is_shared(w) {
                if eligible.is_empty() {
                    Vec::new()
                } else {
                    vec![eligible]
                }
            } else {
                eligible.into_iter().map(|e| vec![e]).collect()
            };
            for group in groups {
                // A shared group is satisfied by any member, also one that joined after the send.
                let candidates: Vec<ClientIdx> = if is_shared(w) {
                    members.clone()
                } else {
                    group.iter().map(|(c, _)| *c).collect()
                };
                let delivered = candidates
                    .iter()
                    .filter_map(|c| first_delivery(*c, msg))
                    .min();
                if delivered.is_some() {
                    stats.required += 1;
                    continue;
                }
                let excused = group.iter().any(|(_, inc)| inc.end.is_some())
                    || crashed_before(p.node, p.t, delivered)
                    || group
                        .iter()
                        .any(|(_, inc)| crashed_before(inc.node, p.t, delivered))
                    || group.iter().any(|(_, inc)| {
                        let acked = p.acked.unwrap_or(p.t);
                        disturbed(p.node, inc.node, p.t, acked, inc.subscribed_at)
                    });
                if excused {
                    stats.excused += 1;
                    continue;
                }
                stats.required += 1;
                {
                    let who: Vec<&str> = group
                        .iter()
                        .filter_map(|(c, _)| roster.get(*c as usize).map(|s| s.id.as_str()))
                        .collect();
                    let since = group
                        .iter()
                        .filter_map(|(_, i)| i.subscribed_at)
                        .min()
                        .unwrap_or_default();
                    violations.push(format!(
                        "{}: QoS {} message {msg} on {topic} sent by {} at {} (acked) never delivered; subscribed since {}, session never lost",
                        who.join("|"),
                        p.qos.min(w.sub_qos),
                        roster.get(msg.publisher as usize).map_or("?", |s| s.id.as_str()),
                        secs(p.t),
                        secs(since)
                    ));
                }
            }
        }
    }
}

/// Node-to-node disturbance windows from the applied schedule (cluster-mode excuses).
///
/// Tracked per node pair and per crashed node, the way the harness applies faults: a pair is
/// disturbed from the first action that cuts or holds it (either direction) until the action that
/// repairs or releases its last cut direction and hold; a crash lasts until that node restarts.
/// One fault's repair never ends another fault's window.
fn disturbances(recorded: &Recorded) -> Vec<Disturbance> {
    let number = |h: &String| -> Option<u32> { h.strip_prefix('n').and_then(|n| n.parse().ok()) };
    let nodes_of = |g: &[String]| -> BTreeSet<u32> { g.iter().filter_map(number).collect() };
    // Directed node pairs from every host of `a` to every host of `b`.
    let directed = |a: &BTreeSet<u32>, b: &BTreeSet<u32>| -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for x in a {
            for y in b {
                if x != y {
                    out.push((*x, *y));
                }
            }
        }
        out
    };
    let across = |groups: &[Vec<String>]| -> Vec<(u32, u32)> {
        let sets: Vec<BTreeSet<u32>> = groups.iter().map(|g| nodes_of(g)).collect();
        let mut out = Vec::new();
        for (i, a) in sets.iter().enumerate() {
            for (j, b) in sets.iter().enumerate() {
                if i != j {
                    out.extend(directed(a, b));
                }
            }
        }
        out
    };
    let both_ways = |a: &[String], b: &[String]| -> Vec<(u32, u32)> {
        let (a, b) = (nodes_of(a), nodes_of(b));
        let mut out = directed(&a, &b);
        out.extend(directed(&b, &a));
        out
    };
    let mut cut: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut held: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut open_pairs: BTreeMap<(u32, u32), Duration> = BTreeMap::new();
    let mut open_crashes: BTreeMap<u32, Duration> = BTreeMap::new();
    let mut done = Vec::new();
    let pair_window = |(a, b): (u32, u32), from: Duration, until: Duration| Disturbance {
        from,
        until,
        nodes: BTreeSet::new(),
        pairs: vec![(a, b)],
    };
    for item in &recorded.schedule {
        let t = item.at;
        match &item.action {
            Action::Partition(g) => cut.extend(across(g)),
            Action::Repair(g) => {
                for p in across(g) {
                    cut.remove(&p);
                }
            }
            Action::PartitionOneway(a, b) => cut.extend(directed(&nodes_of(a), &nodes_of(b))),
            Action::RepairOneway(a, b) => {
                for p in directed(&nodes_of(a), &nodes_of(b)) {
                    cut.remove(&p);
                }
            }
            Action::Hold(a, b) => {
                held.extend(
                    both_ways(a, b)
                        .into_iter()
                        .map(|(x, y)| (x.min(y), x.max(y))),
                );
            }
            Action::Release(a, b) => {
                for (x, y) in both_ways(a, b) {
                    held.remove(&(x.min(y), x.max(y)));
                }
            }
            Action::HealAll | Action::ReleaseAll => {
                cut.clear();
                held.clear();
            }
            Action::Crash(n) => {
                if let Some(n) = number(n) {
                    open_crashes.entry(n).or_insert(t);
                }
            }
            Action::Restart(n) => {
                if let Some((n, from)) = number(n).and_then(|n| Some((n, open_crashes.remove(&n)?)))
                {
                    done.push(Disturbance {
                        from,
                        until: t,
                        nodes: BTreeSet::from([n]),
                        pairs: Vec::new(),
                    });
                }
            }
            // Before its join a node is outside the cluster: every pair touching it is cut.
            Action::Join { node, .. } => {
                if let Some(n) = number(node) {
                    done.push(Disturbance {
                        from: Duration::ZERO,
                        until: t,
                        nodes: BTreeSet::from([n]),
                        pairs: Vec::new(),
                    });
                }
            }
            // After its leave a node is outside the cluster for good (until the end of the run).
            Action::Leave(node) => {
                if let Some(n) = number(node) {
                    done.push(Disturbance {
                        from: t,
                        until: recorded.end,
                        nodes: BTreeSet::from([n]),
                        pairs: Vec::new(),
                    });
                }
            }
            // Datagram faults leave TCP alone: formed links and their traffic stay required.
            Action::Latency(..)
            | Action::DefaultLatency(_)
            | Action::McastLoss(_)
            | Action::McastPartition(_)
            | Action::McastRepair(_)
            | Action::McastHealAll
            | Action::ClientDisconnect { .. } => {}
        }
        let now: BTreeSet<(u32, u32)> = cut
            .iter()
            .map(|&(x, y)| (x.min(y), x.max(y)))
            .chain(held.iter().copied())
            .collect();
        for p in &now {
            open_pairs.entry(*p).or_insert(t);
        }
        let ended: Vec<(u32, u32)> = open_pairs
            .keys()
            .filter(|p| !now.contains(p))
            .copied()
            .collect();
        for p in ended {
            if let Some(from) = open_pairs.remove(&p) {
                done.push(pair_window(p, from, t));
            }
        }
    }
    let end = recorded.liveness_start;
    for (p, from) in open_pairs {
        done.push(pair_window(p, from, end));
    }
    for (n, from) in open_crashes {
        done.push(Disturbance {
            from,
            until: end,
            nodes: BTreeSet::from([n]),
            pairs: Vec::new(),
        });
    }
    done
}

/// Cluster agreement in one sample round (only when nodes report a `ClusterView`): every node of
/// `expect.members` (default every node) lists exactly those as running and none as stopped; every
/// other node (left, or never admitted) lists only itself. Every node's route table equals the
/// union of live subscriptions of its cluster (filter -> nodes where a subscriber with that filter
/// is connected).
fn cluster_problems(
    scenario: &Scenario,
    recorded: &Recorded,
    round: &[Option<&NodeSample>],
) -> Vec<String> {
    if !scenario.clustered {
        return Vec::new();
    }
    let members: BTreeSet<usize> = scenario
        .expect
        .members
        .iter()
        .filter_map(|h| h.strip_prefix('n')?.parse().ok())
        .collect();
    // The nodes node `i` (1-based) should be clustered with, itself included.
    let cluster_of = |i: usize| -> BTreeSet<usize> {
        if members.contains(&i) {
            members.clone()
        } else {
            BTreeSet::from([i])
        }
    };
    // Live subscriptions per node: filter -> that node.
    let mut local: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, s) in round.iter().enumerate() {
        let Some(s) = s else { continue };
        let filters = local.entry(i + 1).or_default();
        for id in &s.connected {
            let Some(spec) = recorded.shared.roster.iter().find(|c| &c.id == id) else {
                continue;
            };
            if spec.publisher {
                continue;
            }
            if let Some(w) = recorded.shared.workloads.get(spec.workload) {
                for f in &w.filters {
                    // The cluster announces `$share/g/f` under its inner filter `f`.
                    filters.insert(shared_inner(f).unwrap_or(f).to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, s) in round.iter().enumerate() {
        let Some(view) = s.and_then(|s| s.cluster.as_ref()) else {
            continue;
        };
        let cluster = cluster_of(i + 1);
        let mut running: Vec<String> = cluster.iter().map(|n| format!("n{n}@n{n}")).collect();
        running.sort();
        let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in &cluster {
            for f in local.get(n).into_iter().flatten() {
                expected
                    .entry(f.clone())
                    .or_default()
                    .push(format!("n{n}@n{n}"));
            }
        }
        for nodes in expected.values_mut() {
            nodes.sort();
        }
        if view.running != running || !view.stopped.is_empty() {
            out.push(format!(
                "n{} sees running={:?} stopped={:?}, expected running={running:?}",
                i + 1,
                view.running,
                view.stopped
            ));
        }
        if view.routes != expected {
            out.push(format!(
                "n{} routes {:?} differ from the live subscriptions {:?}",
                i + 1,
                view.routes,
                expected
            ));
        }
    }
    out
}

/// When each node pair first listed each other as running (both nodes' latest samples), from the
/// node samples; a node that does not answer forgets its view.
fn pairs_formed(events: &[(Duration, Event)]) -> BTreeMap<(u32, u32), Duration> {
    let mut views: BTreeMap<u32, &[String]> = BTreeMap::new();
    let mut formed = BTreeMap::new();
    for (t, e) in events {
        let Event::Sample { node, sample } = e else {
            continue;
        };
        match sample.as_ref().and_then(|s| s.cluster.as_ref()) {
            Some(view) => views.insert(*node, &view.running[..]),
            None => views.remove(node),
        };
        let Some(mine) = views.get(node) else {
            continue;
        };
        for (other, theirs) in &views {
            let (a, b) = ((*node).min(*other), (*node).max(*other));
            let lists = |list: &[String], n: u32| list.iter().any(|x| *x == format!("n{n}@n{n}"));
            if a != b && lists(mine, *other) && lists(theirs, *node) {
                formed.entry((a, b)).or_insert(*t);
            }
        }
    }
    formed
}

/// Excuse windows until a node pair first formed (`expect.excuse_until_formed`: every pair; else
/// only pairs with a node of `[node_start]`, which cannot be in the cluster before it starts):
/// from 0 until both first listed each other as running, or the end of the run if they never did
/// (the convergence check then fails the run anyway).
fn forming_windows(
    scenario: &Scenario,
    recorded: &Recorded,
    events: &[(Duration, Event)],
) -> Vec<Disturbance> {
    if !scenario.clustered {
        return Vec::new();
    }
    let late: BTreeSet<u32> = scenario
        .node_start
        .keys()
        .filter_map(|h| h.strip_prefix('n')?.parse().ok())
        .collect();
    if late.is_empty() && !scenario.expect.excuse_until_formed {
        return Vec::new();
    }
    let formed = pairs_formed(events);
    let mut out = Vec::new();
    for a in 1..=scenario.nodes {
        for b in a + 1..=scenario.nodes {
            if scenario.expect.excuse_until_formed || late.contains(&a) || late.contains(&b) {
                out.push(Disturbance {
                    from: Duration::ZERO,
                    until: formed.get(&(a, b)).copied().unwrap_or(recorded.end),
                    nodes: BTreeSet::new(),
                    pairs: vec![(a, b)],
                });
            }
        }
    }
    out
}

/// The node numbers and names of `expect.members`.
fn member_names(scenario: &Scenario) -> (BTreeSet<u32>, Vec<String>) {
    let numbers: BTreeSet<u32> = scenario
        .expect
        .members
        .iter()
        .filter_map(|h| h.strip_prefix('n')?.parse().ok())
        .collect();
    let names = numbers.iter().map(|n| format!("n{n}@n{n}")).collect();
    (numbers, names)
}

/// `expect.members_stable_from`: from then to the end, every sample of every member shows exactly
/// the members running and nothing stopped. One violation per member (its first bad sample).
fn members_stable(scenario: &Scenario, events: &[(Duration, Event)], violations: &mut Vec<String>) {
    let Some(from) = scenario.expect.members_stable_from else {
        return;
    };
    let (numbers, names) = member_names(scenario);
    let mut bad: BTreeMap<u32, (String, u32)> = BTreeMap::new();
    for (t, e) in events {
        let Event::Sample { node, sample } = e else {
            continue;
        };
        if *t < from || !numbers.contains(node) {
            continue;
        }
        let what = match sample.as_ref().and_then(|s| s.cluster.as_ref()) {
            None => "did not answer".to_string(),
            Some(v) if v.running == names && v.stopped.is_empty() => continue,
            Some(v) => format!("saw running={:?} stopped={:?}", v.running, v.stopped),
        };
        let entry = bad
            .entry(*node)
            .or_insert_with(|| (format!("n{node} at {} {what}", secs(*t)), 0));
        entry.1 += 1;
    }
    for (text, count) in bad.into_values() {
        violations.push(format!(
            "{text}; expected running={names:?} and nothing stopped on every sample from {} \
             (expect.members_stable_from); {count} bad samples",
            secs(from)
        ));
    }
}

/// `expect.formed_within`: the first sample round (faults still on) in which every member lists
/// exactly the members running and nothing stopped must come by then.
fn formed_within(
    scenario: &Scenario,
    events: &[(Duration, Event)],
    stats: &mut Stats,
    violations: &mut Vec<String>,
) {
    let Some(within) = scenario.expect.formed_within else {
        return;
    };
    let (numbers, names) = member_names(scenario);
    // The latest view of every member; a round ends with the sample of the last node.
    let mut views: BTreeMap<u32, Option<&ClusterView>> = BTreeMap::new();
    let mut formed = None;
    let mut last_seen = String::new();
    for (t, e) in events {
        let Event::Sample { node, sample } = e else {
            continue;
        };
        if numbers.contains(node) {
            views.insert(*node, sample.as_ref().and_then(|s| s.cluster.as_ref()));
        }
        if *node != scenario.nodes {
            continue;
        }
        let agreed = numbers.iter().all(|n| {
            views
                .get(n)
                .copied()
                .flatten()
                .is_some_and(|v| v.running == names && v.stopped.is_empty())
        });
        if agreed {
            formed = Some(*t);
            break;
        }
        if *t <= within {
            let parts: Vec<String> = numbers
                .iter()
                .map(|n| match views.get(n).copied().flatten() {
                    Some(v) => format!("n{n} running={:?} stopped={:?}", v.running, v.stopped),
                    None => format!("n{n} not answering"),
                })
                .collect();
            last_seen = format!("at {}: {}", secs(*t), parts.join("; "));
        }
    }
    stats.formed_at = Some(formed);
    if formed.is_none_or(|f| f > within) {
        let when = formed.map_or_else(|| "never".into(), |f| format!("only at {}", secs(f)));
        violations.push(format!(
            "members {names:?} agreed on exactly themselves {when}, expected by {} \
             (expect.formed_within); last seen {last_seen}",
            secs(within)
        ));
    }
}

/// `expect.never_members`: on every sample, no other node lists one of them as running or stopped.
fn never_members(scenario: &Scenario, events: &[(Duration, Event)], violations: &mut Vec<String>) {
    let outsiders: Vec<String> = scenario
        .expect
        .never_members
        .iter()
        .map(|h| format!("{h}@{h}"))
        .collect();
    if outsiders.is_empty() {
        return;
    }
    for (t, e) in events {
        let Event::Sample {
            node,
            sample: Some(sample),
        } = e
        else {
            continue;
        };
        let Some(view) = &sample.cluster else {
            continue;
        };
        let me = format!("n{node}@n{node}");
        for o in outsiders.iter().filter(|o| **o != me) {
            if view.running.contains(o) || view.stopped.contains(o) {
                violations.push(format!(
                    "n{node} at {} lists {o}, which must never be a member: running={:?} stopped={:?}",
                    secs(*t),
                    view.running,
                    view.stopped
                ));
                return;
            }
        }
    }
}

/// The inner filter `f` of a shared subscription `$share/g/f`.
fn shared_inner(filter: &str) -> Option<&str> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/').map(|(_, f)| f)
}

/// Every client connected on exactly one node, every node answering (and, in a cluster, agreeing
/// on members and routes), from some moment of the liveness phase to the end; how long that took.
fn convergence(
    scenario: &Scenario,
    recorded: &Recorded,
    events: &[(Duration, Event)],
    stats: &mut Stats,
    violations: &mut Vec<String>,
) {
    let nodes = scenario.nodes as usize;
    let expected: BTreeSet<&str> = recorded
        .shared
        .roster
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    // Samples come in rounds n1..nN.
    let mut rounds: Vec<(Duration, Vec<Option<&NodeSample>>)> = Vec::new();
    for (t, e) in events {
        if let Event::Sample { node, sample } = e {
            if *node == 1 || rounds.is_empty() {
                rounds.push((*t, Vec::new()));
            }
            if let Some(r) = rounds.last_mut() {
                r.1.push(sample.as_ref());
            }
        }
    }
    let problems = |round: &[Option<&NodeSample>]| -> Vec<String> {
        let mut out = Vec::new();
        if round.len() != nodes {
            out.push(format!("{} of {nodes} nodes sampled", round.len()));
        }
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        for (i, s) in round.iter().enumerate() {
            match s {
                None => out.push(format!("n{} not answering", i + 1)),
                Some(s) => {
                    for id in &s.connected {
                        *seen.entry(id.as_str()).or_default() += 1;
                    }
                }
            }
        }
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|id| !seen.contains_key(id))
            .collect();
        if !missing.is_empty() {
            out.push(format!("not connected: {}", missing.join(",")));
        }
        let doubles: Vec<&str> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        if !doubles.is_empty() {
            out.push(format!(
                "live on more than one node (at most one live session per client id): {}",
                doubles.join(",")
            ));
        }
        out.extend(cluster_problems(scenario, recorded, round));
        let strangers: Vec<&str> = seen
            .keys()
            .copied()
            .filter(|id| !expected.contains(id))
            .collect();
        if !strangers.is_empty() {
            out.push(format!(
                "unknown client ids connected: {}",
                strangers.join(",")
            ));
        }
        out
    };
    let liveness: Vec<&(Duration, Vec<Option<&NodeSample>>)> = rounds
        .iter()
        .filter(|(t, _)| *t >= recorded.liveness_start)
        .collect();
    let Some(last) = liveness.last() else {
        violations.push("no node samples during the liveness phase".into());
        return;
    };
    let last_problems = problems(&last.1);
    if !last_problems.is_empty() {
        violations.push(format!(
            "not converged at the end of the liveness phase ({}): {}",
            secs(last.0),
            last_problems.join("; ")
        ));
        return;
    }
    let mut since = last.0;
    for (t, round) in liveness.iter().rev() {
        if !problems(round).is_empty() {
            break;
        }
        since = *t;
    }
    let after = since.saturating_sub(recorded.liveness_start);
    stats.converged_after = Some(after);
    if after > scenario.expect.converge_within {
        violations.push(format!(
            "converged only after {} of liveness (expect.converge_within = {})",
            secs(after),
            secs(scenario.expect.converge_within)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_mqtt() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(topic_matches("+", ""));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
        assert!(topic_matches("a//b", "a//b"));
    }

    #[test]
    fn reproduce_paths_are_relative_to_the_workspace() {
        assert_eq!(
            display_path(Path::new("../scenarios/x.toml")),
            "scenarios/x.toml"
        );
        assert_eq!(
            display_path(Path::new("/w/flockmq/scenarios/x.toml")),
            "scenarios/x.toml"
        );
        assert_eq!(display_path(Path::new("my.toml")), "my.toml");
    }

    #[test]
    fn shared_subscriptions_route_under_their_inner_filter() {
        assert_eq!(shared_inner("$share/g/t/+/x"), Some("t/+/x"));
        assert_eq!(shared_inner("$share/g/#"), Some("#"));
        assert_eq!(shared_inner("t/+/x"), None);
        assert_eq!(shared_inner("$share/g"), None);
    }
}
