//! Cluster and convergence checkers over the node samples: `expect.never_members`,
//! `expect.members_stable_from`, `expect.formed_within`, and convergence by the end of the
//! liveness phase (every node answers, every client connected on exactly one node, in a cluster
//! members and routes agreed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::index::{HistoryIndex, SampleAt};
use super::{Ctx, MemberViews, Problem, Seen, Violation};
use crate::history::{ClusterView, NodeSample};
use crate::scenario::Scenario;

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

/// Whether a view shows exactly `names` running and nothing stopped.
fn exactly(view: &ClusterView, names: &[String]) -> bool {
    view.running == names && view.stopped.is_empty()
}

/// `expect.never_members`: on every sample, no other node lists one of them as running or
/// stopped. Reports the first such sample only.
pub fn never_members(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<Violation> {
    let never = &ctx.scenario.expect.never_members;
    let outsiders: Vec<String> = never.iter().map(|h| format!("{h}@{h}")).collect();
    if outsiders.is_empty() {
        return Vec::new();
    }
    for s in &index.samples {
        let Some(view) = s.view() else {
            continue;
        };
        let me = format!("n{}@n{}", s.node, s.node);
        for o in outsiders.iter().filter(|o| **o != me) {
            if view.running.contains(o) || view.stopped.contains(o) {
                return vec![Violation::NeverMember {
                    node: s.node,
                    t: s.t,
                    outsider: o.clone(),
                    seen: Seen::of(view),
                }];
            }
        }
    }
    Vec::new()
}

/// `expect.members_stable_from`: from then to the end, every sample of every member shows exactly
/// the members running and nothing stopped. One violation per member (its first bad sample).
pub fn members_stable(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<Violation> {
    let Some(from) = ctx.scenario.expect.members_stable_from else {
        return Vec::new();
    };
    let (numbers, names) = member_names(ctx.scenario);
    let mut bad: BTreeMap<u32, Violation> = BTreeMap::new();
    let samples = index.samples.iter();
    for s in samples.filter(|s| s.t >= from && numbers.contains(&s.node)) {
        let seen = match s.view() {
            Some(v) if exactly(v, &names) => continue,
            view => view.map(Seen::of),
        };
        let first = bad.entry(s.node).or_insert(Violation::MembersUnstable {
            node: s.node,
            t: s.t,
            seen,
            members: names.clone(),
            from,
            bad_samples: 0,
        });
        if let Violation::MembersUnstable { bad_samples, .. } = first {
            *bad_samples += 1;
        }
    }
    bad.into_values().collect()
}

/// `expect.formed_within`: the first sample round (faults still on) in which every member lists
/// exactly the members running and nothing stopped must come by then. Returns when that was (for
/// the summary; `None` when not checked).
pub fn formed_within(
    index: &HistoryIndex<'_>,
    ctx: &Ctx<'_>,
) -> (Option<Option<Duration>>, Vec<Violation>) {
    let Some(within) = ctx.scenario.expect.formed_within else {
        return (None, Vec::new());
    };
    let (numbers, names) = member_names(ctx.scenario);
    // The latest view of every member; a round ends with the sample of the last node.
    let mut views: BTreeMap<u32, Option<&ClusterView>> = BTreeMap::new();
    let mut formed = None;
    let mut last_seen = None;
    for s in &index.samples {
        if numbers.contains(&s.node) {
            views.insert(s.node, s.view());
        }
        if s.node != ctx.scenario.nodes {
            continue;
        }
        let view_of = |n: &u32| views.get(n).copied().flatten();
        if numbers
            .iter()
            .all(|n| view_of(n).is_some_and(|v| exactly(v, &names)))
        {
            formed = Some(s.t);
            break;
        }
        if s.t <= within {
            let seen = numbers.iter().map(|n| (*n, view_of(n).map(Seen::of)));
            last_seen = Some(MemberViews {
                at: s.t,
                views: seen.collect(),
            });
        }
    }
    let late = formed.is_none_or(|f| f > within);
    let violations = late.then_some(Violation::NotFormed {
        members: names,
        formed,
        within,
        last_seen,
    });
    (Some(formed), violations.into_iter().collect())
}

/// Every client connected on exactly one node, every node answering (and, in a cluster, agreeing
/// on members and routes), from some moment of the liveness phase to the end. Returns how long
/// that took from the start of the liveness phase (`None`: not converged).
pub fn convergence(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> (Option<Duration>, Vec<Violation>) {
    let liveness_start = ctx.recorded.liveness_start;
    let rounds = sample_rounds(&index.samples);
    let liveness: Vec<&Round<'_>> = rounds
        .iter()
        .filter(|(t, _)| *t >= liveness_start)
        .collect();
    let Some((at, last)) = liveness.last() else {
        return (None, vec![Violation::NoLivenessSamples]);
    };
    let problems = round_problems(ctx, last);
    if !problems.is_empty() {
        return (None, vec![Violation::NotConverged { at: *at, problems }]);
    }
    let mut since = *at;
    for (t, round) in liveness.iter().rev() {
        if !round_problems(ctx, round).is_empty() {
            break;
        }
        since = *t;
    }
    let after = since.saturating_sub(liveness_start);
    let within = ctx.scenario.expect.converge_within;
    let late = (after > within).then_some(Violation::ConvergedLate { after, within });
    (Some(after), late.into_iter().collect())
}

/// One sample round: its first sample's time and every node's sample (n1..nN).
type Round<'a> = (Duration, Vec<Option<&'a NodeSample>>);

/// Samples come in rounds n1..nN.
fn sample_rounds<'a>(samples: &[SampleAt<'a>]) -> Vec<Round<'a>> {
    let mut rounds: Vec<Round<'a>> = Vec::new();
    for s in samples {
        if s.node == 1 || rounds.is_empty() {
            rounds.push((s.t, Vec::new()));
        }
        if let Some(r) = rounds.last_mut() {
            r.1.push(s.sample);
        }
    }
    rounds
}

/// Why one round is not converged (empty: converged).
fn round_problems(ctx: &Ctx<'_>, round: &[Option<&NodeSample>]) -> Vec<Problem> {
    let nodes = ctx.scenario.nodes as usize;
    let roster = &ctx.recorded.shared.roster;
    let expected: BTreeSet<&str> = roster.iter().map(|c| c.id.as_str()).collect();
    let mut out = Vec::new();
    if round.len() != nodes {
        out.push(Problem::Sampled {
            sampled: round.len(),
            nodes,
        });
    }
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, s) in round.iter().enumerate() {
        match s {
            None => out.push(Problem::NotAnswering { node: i as u32 + 1 }),
            Some(s) => {
                for id in &s.connected {
                    *seen.entry(id.as_str()).or_default() += 1;
                }
            }
        }
    }
    let ids = |ids: Vec<&str>| ids.into_iter().map(String::from).collect::<Vec<_>>();
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|id| !seen.contains_key(id))
        .collect();
    if !missing.is_empty() {
        out.push(Problem::NotConnected(ids(missing)));
    }
    let doubles: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    if !doubles.is_empty() {
        out.push(Problem::LiveTwice(ids(doubles)));
    }
    out.extend(cluster_problems(ctx, round));
    let strangers: Vec<&str> = seen
        .keys()
        .copied()
        .filter(|id| !expected.contains(id))
        .collect();
    if !strangers.is_empty() {
        out.push(Problem::UnknownClients(ids(strangers)));
    }
    out
}

/// Cluster agreement in one sample round (only when nodes report a `ClusterView`): every node of
/// `expect.members` (default every node) lists exactly those as running and none as stopped; every
/// other node (left, or never admitted) lists only itself. Every node's route table equals the
/// union of live subscriptions of its cluster (filter -> nodes where a subscriber with that filter
/// is connected).
fn cluster_problems(ctx: &Ctx<'_>, round: &[Option<&NodeSample>]) -> Vec<Problem> {
    if !ctx.scenario.clustered {
        return Vec::new();
    }
    let members: BTreeSet<usize> = ctx
        .scenario
        .expect
        .members
        .iter()
        .filter_map(|h| h.strip_prefix('n')?.parse().ok())
        .collect();
    let local = live_filters(ctx, round);
    let mut out = Vec::new();
    // Retained sets: every member that answered holds the same one.
    let retained: Vec<(u32, u64)> = round
        .iter()
        .enumerate()
        .filter(|(i, _)| members.contains(&(i + 1)))
        .filter_map(|(i, s)| Some((i as u32 + 1, (*s)?.retained?)))
        .collect();
    if retained.windows(2).any(|w| w[0].1 != w[1].1) {
        out.push(Problem::RetainedDiffers(retained));
    }
    for (i, s) in round.iter().enumerate() {
        let Some(view) = s.and_then(|s| s.cluster.as_ref()) else {
            continue;
        };
        let node = i + 1;
        // The nodes this one should be clustered with, itself included.
        let cluster = if members.contains(&node) {
            members.clone()
        } else {
            BTreeSet::from([node])
        };
        let mut running: Vec<String> = cluster.iter().map(|n| format!("n{n}@n{n}")).collect();
        running.sort();
        let expected = expected_routes(&cluster, &local);
        if !exactly(view, &running) {
            out.push(Problem::Members {
                node: node as u32,
                seen: Seen::of(view),
                expected: running,
            });
        }
        if view.routes != expected {
            out.push(Problem::Routes {
                node: node as u32,
                routes: view.routes.clone(),
                expected,
            });
        }
    }
    out
}

/// Live subscriptions per node (1-based): the filters of the subscribers connected there.
fn live_filters(ctx: &Ctx<'_>, round: &[Option<&NodeSample>]) -> BTreeMap<usize, BTreeSet<String>> {
    let shared = &ctx.recorded.shared;
    let mut local: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, s) in round.iter().enumerate() {
        let Some(s) = s else { continue };
        let filters = local.entry(i + 1).or_default();
        for id in &s.connected {
            let Some(spec) = shared.roster.iter().find(|c| &c.id == id) else {
                continue;
            };
            if spec.publisher {
                continue;
            }
            if let Some(w) = shared.workloads.get(spec.workload) {
                for f in &w.filters {
                    // The cluster announces `$share/g/f` under its inner filter `f`.
                    filters.insert(shared_inner(f).unwrap_or(f).to_string());
                }
            }
        }
    }
    local
}

/// The route table a node of `cluster` should have: filter -> sorted node names.
fn expected_routes(
    cluster: &BTreeSet<usize>,
    local: &BTreeMap<usize, BTreeSet<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in cluster {
        for f in local.get(n).into_iter().flatten() {
            let nodes = expected.entry(f.clone()).or_default();
            nodes.push(format!("n{n}@n{n}"));
        }
    }
    for nodes in expected.values_mut() {
        nodes.sort();
    }
    expected
}

/// The inner filter `f` of a shared subscription `$share/g/f`.
fn shared_inner(filter: &str) -> Option<&str> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/').map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_route_under_their_inner_filter() {
        assert_eq!(shared_inner("$share/g/t/+/x"), Some("t/+/x"));
        assert_eq!(shared_inner("$share/g/#"), Some("#"));
        assert_eq!(shared_inner("t/+/x"), None);
        assert_eq!(shared_inner("$share/g"), None);
    }
}
