//! QoS >= 1 at least once. A message is required for a subscriber when all of these hold:
//!
//! 1. its publisher got PUBACK/PUBREC with a success code (the node took responsibility);
//! 2. the delivery QoS min(published, subscribed) is at least 1 and one of the subscriber's
//!    filters matches;
//! 3. the subscriber had a SUBACK for that subscription, in its current session incarnation,
//!    before the message was sent (earlier subscriptions may or may not be in place yet);
//! 4. without a cluster, the subscriber's session lives on the node the message was sent to.
//!
//! Excused (counted, not required), because the lost state was in memory by design:
//! - the subscriber's session incarnation ended after the message was sent: a clean session
//!   disconnected (its queue died with it), or a persistent session was found missing at the next
//!   CONNACK (node crashed and restarted without it, or it expired);
//! - the node the message was sent to crashed after the send and before the subscriber got it
//!   (messages still queued or in flight in that node's memory);
//! - cluster mode only: the message was sent while (or within `expect.route_settle` of) a crash of
//!   either node or a time one of them was outside the cluster (before its join, after its
//!   leave, before the pair first formed for `[node_start]` nodes or `excuse_until_formed`); or
//!   of a cut between them (partition, one-way partition, hold) that lasted at least
//!   [`BUFFERED_CUT`], or that began within `route_settle` of the subscription or of the
//!   publisher's node's restart or join (the route may not have reached that node). Shorter cuts
//!   excuse nothing: nodes buffer QoS >= 1 forwards for an unreachable node and resend them after
//!   reconnecting. "Sent" spans the first send to the ack: a publisher cut from its own node
//!   resends after reconnecting, so its node may only take the message then.
//!
//! Shared subscriptions: the same rules per group (one workload = one group): required when some
//! member was subscribed at the send, excused when any member subscribed at the send lost its
//! session afterwards; satisfied by a delivery to any member (also one that (re)joined after the
//! send).

use std::collections::BTreeMap;
use std::time::Duration;

use super::index::{HistoryIndex, Incarnation, Pub};
use super::windows::{Disturbance, disturbances, forming_windows};
use super::{Ctx, Violation, workload_matches};
use crate::history::{ClientIdx, MsgId, Names};
use crate::scenario::{Workload, share_group};

/// The longest cut between two nodes after which every QoS >= 1 forward must still arrive: the
/// cluster keeps them for 30 s from the moment the link is declared dead (3 heartbeats), and
/// reconnecting after the heal takes up to the capped dial backoff (5 heartbeats), so 20 s leaves
/// margin for the 1 s heartbeat most scenarios use.
const BUFFERED_CUT: Duration = Duration::from_secs(20);

/// The obligations counted and the ones missed.
pub struct Findings {
    /// Obligations met or missed.
    pub required: u64,
    /// Undelivered messages the rules excuse.
    pub excused: u64,
    pub violations: Vec<Violation>,
}

/// Subscribers that must get a message together: one subscriber, or a shared group's members
/// that were subscribed at the send, each with that incarnation.
type Group<'i> = Vec<(ClientIdx, &'i Incarnation)>;

/// What became of one obligation.
enum Verdict {
    Delivered,
    Excused,
    Missed,
}

/// The at-least-once rule over every acknowledged QoS >= 1 message.
pub fn check(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Findings {
    let rule = Rule::new(index, ctx);
    let mut findings = Findings {
        required: 0,
        excused: 0,
        violations: Vec::new(),
    };
    for (msg, p) in &index.publishes {
        if p.qos == 0 || p.acked.is_none() {
            continue;
        }
        for (workload, members) in &rule.by_workload {
            rule.judge_workload(msg, p, (*workload, members), &mut findings);
        }
    }
    findings
}

/// The shared inputs of the rule.
struct Rule<'a> {
    index: &'a HistoryIndex<'a>,
    ctx: &'a Ctx<'a>,
    windows: Vec<Disturbance>,
    /// Subscribers grouped by workload.
    by_workload: BTreeMap<usize, Vec<ClientIdx>>,
}

impl<'a> Rule<'a> {
    fn new(index: &'a HistoryIndex<'a>, ctx: &'a Ctx<'a>) -> Rule<'a> {
        let mut windows = disturbances(ctx.recorded);
        windows.extend(forming_windows(index, ctx));
        let mut by_workload: BTreeMap<usize, Vec<ClientIdx>> = BTreeMap::new();
        for (i, c) in ctx.recorded.shared.roster.iter().enumerate() {
            if !c.publisher {
                let members = by_workload.entry(c.workload).or_default();
                members.push(i as ClientIdx);
            }
        }
        Rule {
            index,
            ctx,
            windows,
            by_workload,
        }
    }

    /// The obligations of one message towards one workload's subscribers.
    fn judge_workload(
        &self,
        msg: &MsgId,
        p: &Pub,
        (workload, members): (usize, &[ClientIdx]),
        findings: &mut Findings,
    ) {
        let Some(w) = self.ctx.recorded.shared.workloads.get(workload) else {
            return;
        };
        if w.sub_qos == 0 || !workload_matches(w, self.index.topic(p.topic)) {
            return;
        }
        for group in self.groups(w, members, p) {
            // A shared group is satisfied by any member, also one that joined after the send.
            let candidates: Vec<ClientIdx> = if is_shared(w) {
                members.to_vec()
            } else {
                group.iter().map(|(c, _)| *c).collect()
            };
            match self.verdict(msg, p, &group, &candidates) {
                Verdict::Delivered => findings.required += 1,
                Verdict::Excused => findings.excused += 1,
                Verdict::Missed => {
                    findings.required += 1;
                    findings.violations.push(self.missed(msg, p, w, &group));
                }
            }
        }
    }

    /// Who had to get `p`: the members subscribed when it was sent (and, without a cluster, on
    /// its node), one group per subscriber or one for a shared group.
    fn groups(&self, w: &Workload, members: &[ClientIdx], p: &Pub) -> Vec<Group<'a>> {
        let index = self.index;
        let eligible: Group<'a> = members
            .iter()
            .filter_map(|&c| {
                let inc = subscribed_at(index.incarnations.get(c as usize)?, p.t)?;
                (self.ctx.scenario.clustered || inc.node == p.node).then_some((c, inc))
            })
            .collect();
        if !is_shared(w) {
            eligible.into_iter().map(|e| vec![e]).collect()
        } else if eligible.is_empty() {
            Vec::new()
        } else {
            vec![eligible]
        }
    }

    fn verdict(
        &self,
        msg: &MsgId,
        p: &Pub,
        group: &Group<'_>,
        candidates: &[ClientIdx],
    ) -> Verdict {
        let delivered = candidates
            .iter()
            .any(|c| self.index.first_delivery(*c, msg).is_some());
        if delivered {
            return Verdict::Delivered;
        }
        let acked = p.acked.unwrap_or(p.t);
        let excused = group.iter().any(|(_, inc)| inc.end.is_some())
            || self.crashed_since(p.node, p.t)
            || group
                .iter()
                .any(|(_, inc)| self.crashed_since(inc.node, p.t))
            || group.iter().any(|(_, inc)| {
                self.disturbed((p.node, inc.node), (p.t, acked), inc.subscribed_at)
            });
        if excused {
            Verdict::Excused
        } else {
            Verdict::Missed
        }
    }

    /// `node` crashed at or after `t` (the message is undelivered, so before any delivery).
    fn crashed_since(&self, node: u32, t: Duration) -> bool {
        let crashes = &self.index.crashes;
        crashes.iter().any(|(tc, n)| *n == node && *tc >= t)
    }

    /// Cluster mode: publisher's node `a` and subscriber's node `b` were disturbed while the
    /// node took the message, somewhere between the first send and the ack (a publisher cut from
    /// its node resends after reconnecting): the whole span counts.
    fn disturbed(
        &self,
        (a, b): (u32, u32),
        (sent, acked): (Duration, Duration),
        subscribed: Option<Duration>,
    ) -> bool {
        let settle = self.ctx.scenario.expect.route_settle;
        self.ctx.scenario.clustered
            && a != b
            && self.windows.iter().any(|w| {
                let during = w.from.saturating_sub(settle) <= acked && sent <= w.until + settle;
                if !during {
                    return false;
                }
                if w.pairs.is_empty() {
                    return w.nodes.contains(&a) || w.nodes.contains(&b);
                }
                // The publisher's node learns the subscriber's route over a link; since the
                // subscription and since the publisher's node (re)started or joined, it needs one.
                let node_since = self
                    .windows
                    .iter()
                    .filter(|o| o.pairs.is_empty() && o.nodes.contains(&a) && o.until <= acked)
                    .map(|o| o.until)
                    .max();
                let route_since = subscribed.max(node_since);
                w.pairs.contains(&(a.min(b), a.max(b)))
                    && (w.until.saturating_sub(w.from) >= BUFFERED_CUT
                        || route_since.is_none_or(|s| s + settle >= w.from))
            })
    }

    fn missed(&self, msg: &MsgId, p: &Pub, w: &Workload, group: &Group<'_>) -> Violation {
        let roster = &self.ctx.recorded.shared.roster;
        let subscribers = group
            .iter()
            .filter_map(|(c, _)| roster.get(*c as usize).map(|s| s.id.clone()))
            .collect();
        let subscribed_since = group
            .iter()
            .filter_map(|(_, i)| i.subscribed_at)
            .min()
            .unwrap_or_default();
        Violation::NeverDelivered {
            subscribers,
            qos: p.qos.min(w.sub_qos),
            msg: *msg,
            topic: self.index.topic(p.topic).to_string(),
            publisher: roster.client(msg.publisher).to_string(),
            sent: p.t,
            subscribed_since,
        }
    }
}

/// The incarnation of a subscriber that was subscribed when a message was sent at `t`.
fn subscribed_at(incs: &[Incarnation], t: Duration) -> Option<&Incarnation> {
    incs.iter().find(|i| {
        i.begin <= t && i.end.is_none_or(|e| e > t) && i.subscribed_at.is_some_and(|s| s <= t)
    })
}

/// A shared subscription (`$share/g/...`): one group per workload.
fn is_shared(w: &Workload) -> bool {
    w.filters.first().and_then(|f| share_group(f)).is_some()
}
