//! Safety checkers (they hold all the time, faults on): what was delivered (never published,
//! foreign payload, wrong topic, non-matching filter, wrong QoS, independent-node leak,
//! per-publisher order, QoS 2 exactly once), `session_present` on a clean start, refused SUBACKs,
//! nodes that failed to start.

use std::collections::BTreeMap;

use super::index::{DeliveryEvent, HistoryIndex};
use super::{Ctx, Violation, workload_matches, workload_of};
use crate::history::{ClientIdx, Names, TopicId};

/// A violation at one event of the history (its position).
type AtEvent = (usize, Violation);

/// Every safety checker; the violations found at events come in history order (and, at one
/// event, in the order of the checkers below), then QoS 2 duplicates per (client, message).
pub fn check(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<Violation> {
    let checkers: [fn(&HistoryIndex<'_>, &Ctx<'_>) -> Vec<AtEvent>; 9] = [
        session_on_clean_start,
        refused_subacks,
        unpublished,
        wrong_topic,
        filter_mismatch,
        wrong_qos,
        independent_leak,
        per_publisher_order,
        node_failures,
    ];
    let mut found: Vec<AtEvent> = checkers.iter().flat_map(|c| c(index, ctx)).collect();
    // Stable: at one event the checkers' order stays.
    found.sort_by_key(|(seq, _)| *seq);
    let mut out: Vec<Violation> = found.into_iter().map(|(_, v)| v).collect();
    out.extend(qos2_exactly_once(index, ctx));
    out
}

fn name(ctx: &Ctx<'_>, client: ClientIdx) -> String {
    ctx.recorded.shared.roster.client(client).to_string()
}

/// CONNACK never reports a session on a clean start.
fn session_on_clean_start(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    let bad = index
        .connacks
        .iter()
        .filter(|c| c.clean_start && c.session_present);
    bad.map(|c| {
        let v = Violation::SessionOnCleanStart {
            client: name(ctx, c.client),
            t: c.t,
        };
        (c.seq, v)
    })
    .collect()
}

/// No SUBACK refuses a subscription.
fn refused_subacks(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    let bad = index
        .subacks
        .iter()
        .filter(|s| s.granted.iter().any(|g| *g >= 0x80));
    bad.map(|s| {
        let v = Violation::RefusedSuback {
            client: name(ctx, s.client),
            t: s.t,
            granted: s.granted.to_vec(),
        };
        (s.seq, v)
    })
    .collect()
}

/// Every node starts.
fn node_failures(index: &HistoryIndex<'_>, _: &Ctx<'_>) -> Vec<AtEvent> {
    let failures = index.node_failures.iter();
    failures
        .map(|f| {
            let v = Violation::NodeFailed {
                node: f.node,
                t: f.t,
                why: f.why.to_string(),
            };
            (f.seq, v)
        })
        .collect()
}

/// Runs `judge` on every delivery.
fn deliveries(
    index: &HistoryIndex<'_>,
    judge: impl FnMut(&DeliveryEvent) -> Option<Violation>,
) -> Vec<AtEvent> {
    let mut judge = judge;
    let events = index.delivery_events.iter();
    events.filter_map(|d| Some((d.seq, judge(d)?))).collect()
}

/// Only messages that were published are delivered (and only simulated payloads).
fn unpublished(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    deliveries(index, |d| {
        let (client, t, topic) = (name(ctx, d.client), d.t, index.topic(d.topic).to_string());
        match d.msg {
            None => Some(Violation::ForeignPayload { client, t, topic }),
            Some(msg) if d.publish.is_none() => Some(Violation::NeverPublished {
                client,
                t,
                msg,
                topic,
            }),
            Some(_) => None,
        }
    })
}

/// A message arrives on the topic it was published on.
fn wrong_topic(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    deliveries(index, |d| {
        let (msg, (published_on, _, _)) = (d.msg?, d.publish?);
        (published_on != d.topic).then(|| Violation::WrongTopic {
            client: name(ctx, d.client),
            t: d.t,
            msg,
            topic: index.topic(d.topic).to_string(),
            published_on: index.topic(published_on).to_string(),
        })
    })
}

/// Only subscribers whose filters match the topic receive it.
fn filter_mismatch(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    deliveries(index, |d| {
        let msg = d.msg.filter(|_| d.publish.is_some())?;
        let (spec, w) = workload_of(ctx, d.client)?;
        let topic = index.topic(d.topic);
        if !spec.publisher && workload_matches(w, topic) {
            return None;
        }
        Some(Violation::FilterMismatch {
            client: name(ctx, d.client),
            t: d.t,
            msg,
            topic: topic.to_string(),
            filters: if spec.publisher {
                Vec::new()
            } else {
                w.filters.clone()
            },
        })
    })
}

/// Delivered at min(published, granted), granted by the latest SUBACK (else the workload's).
fn wrong_qos(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    deliveries(index, |d| {
        let (msg, (_, published, _)) = (d.msg.filter(|_| d.accepted)?, d.publish?);
        let granted = d.granted.unwrap_or(workload_of(ctx, d.client)?.1.sub_qos);
        (d.qos != published.min(granted)).then(|| Violation::WrongQos {
            client: name(ctx, d.client),
            t: d.t,
            msg,
            qos: d.qos,
            published,
            granted,
        })
    })
}

/// Without a cluster, a message only reaches the subscribers of the node it was sent to.
fn independent_leak(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    if ctx.scenario.clustered {
        return Vec::new();
    }
    deliveries(index, |d| {
        let (msg, (_, _, published_on)) = (d.msg.filter(|_| d.accepted)?, d.publish?);
        (d.node != published_on).then(|| Violation::IndependentLeak {
            client: name(ctx, d.client),
            t: d.t,
            msg,
            published_on,
            via: d.node,
        })
    })
}

/// Per publisher and topic, first deliveries on one connection come in publish order. Order is
/// judged on first deliveries only: a QoS 1 message the publisher had to resend is a new message
/// for the node and may legally arrive again later.
fn per_publisher_order(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<AtEvent> {
    let mut highest: BTreeMap<(ClientIdx, u32, ClientIdx, TopicId), u32> = BTreeMap::new();
    deliveries(index, |d| {
        let msg = d.msg.filter(|_| d.accepted && d.first)?;
        let key = (d.client, d.conn, msg.publisher, d.topic);
        let last = highest.get(&key).copied();
        let entry = highest.entry(key).or_insert(msg.seq);
        *entry = (*entry).max(msg.seq);
        let last = last.filter(|last| msg.seq <= *last)?;
        Some(Violation::OrderBroken {
            client: name(ctx, d.client),
            t: d.t,
            msg,
            topic: index.topic(d.topic).to_string(),
            after_seq: last,
            conn: d.conn,
        })
    })
}

/// QoS 2: at most one delivery per subscriber and message.
fn qos2_exactly_once(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<Violation> {
    let deliveries = index.deliveries.iter();
    let duplicated = deliveries.filter(|(_, l)| l.iter().any(|d| d.qos == 2) && l.len() > 1);
    duplicated
        .map(|((client, msg), list)| Violation::Qos2Duplicate {
            client: name(ctx, *client),
            msg: *msg,
            times: list.iter().map(|d| d.t).collect(),
        })
        .collect()
}
