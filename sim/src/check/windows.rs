//! Disturbance windows: when node pairs could not talk, the excuses of the at-least-once rule in
//! cluster mode. From the applied schedule ([`disturbances`]) and from the node samples (pairs
//! not yet formed, [`forming_windows`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Ctx;
use super::index::HistoryIndex;
use crate::fault::Action;
use crate::harness::Recorded;

/// A window in which a node pair could not talk.
pub struct Disturbance {
    pub from: Duration,
    pub until: Duration,
    pub nodes: BTreeSet<u32>,
    /// Which node pairs were cut; empty = every pair touching `nodes`.
    pub pairs: Vec<(u32, u32)>,
}

impl Disturbance {
    fn node(n: u32, from: Duration, until: Duration) -> Disturbance {
        Disturbance {
            from,
            until,
            nodes: BTreeSet::from([n]),
            pairs: Vec::new(),
        }
    }

    fn pair((a, b): (u32, u32), from: Duration, until: Duration) -> Disturbance {
        Disturbance {
            from,
            until,
            nodes: BTreeSet::new(),
            pairs: vec![(a, b)],
        }
    }
}

/// `nK` -> K.
fn number(host: &str) -> Option<u32> {
    host.strip_prefix('n').and_then(|n| n.parse().ok())
}

fn nodes_of(group: &[String]) -> BTreeSet<u32> {
    group.iter().filter_map(|h| number(h)).collect()
}

/// Directed node pairs from every node of `a` to every node of `b`.
fn directed(a: &BTreeSet<u32>, b: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if x != y {
                out.push((*x, *y));
            }
        }
    }
    out
}

/// Directed node pairs between different groups.
fn across(groups: &[Vec<String>]) -> Vec<(u32, u32)> {
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
}

/// Unordered node pairs (smaller first) between `a` and `b`.
fn between(a: &[String], b: &[String]) -> Vec<(u32, u32)> {
    let (a, b) = (nodes_of(a), nodes_of(b));
    let mut out = directed(&a, &b);
    out.extend(directed(&b, &a));
    out.into_iter().map(|(x, y)| (x.min(y), x.max(y))).collect()
}

/// Node-to-node disturbance windows from the applied schedule (cluster-mode excuses).
///
/// Tracked per node pair and per crashed node, the way the harness applies faults: a pair is
/// disturbed from the first action that cuts or holds it (either direction) until the action that
/// repairs or releases its last cut direction and hold; a crash lasts until that node restarts.
/// One fault's repair never ends another fault's window.
pub fn disturbances(recorded: &Recorded) -> Vec<Disturbance> {
    let mut tracker = Tracker::default();
    for item in &recorded.schedule {
        tracker.apply(item.at, &item.action, recorded.end);
        tracker.close_pairs(item.at);
    }
    tracker.finish(recorded.liveness_start)
}

/// The schedule's state while it is replayed.
#[derive(Default)]
struct Tracker {
    /// Directed pairs cut now.
    cut: BTreeSet<(u32, u32)>,
    /// Unordered pairs held now.
    held: BTreeSet<(u32, u32)>,
    /// Disturbed pairs and since when.
    open_pairs: BTreeMap<(u32, u32), Duration>,
    /// Crashed nodes and since when.
    open_crashes: BTreeMap<u32, Duration>,
    done: Vec<Disturbance>,
}

impl Tracker {
    /// One action at `t` (`end`: the end of the run, for a node that left).
    fn apply(&mut self, t: Duration, action: &Action, end: Duration) {
        match action {
            Action::Partition(g) => self.cut.extend(across(g)),
            Action::Repair(g) => {
                for p in across(g) {
                    self.cut.remove(&p);
                }
            }
            Action::PartitionOneway(a, b) => self.cut.extend(directed(&nodes_of(a), &nodes_of(b))),
            Action::RepairOneway(a, b) => {
                for p in directed(&nodes_of(a), &nodes_of(b)) {
                    self.cut.remove(&p);
                }
            }
            Action::Hold(a, b) => self.held.extend(between(a, b)),
            Action::Release(a, b) => {
                for p in between(a, b) {
                    self.held.remove(&p);
                }
            }
            Action::HealAll | Action::ReleaseAll => {
                self.cut.clear();
                self.held.clear();
            }
            Action::Crash(n) => {
                if let Some(n) = number(n) {
                    self.open_crashes.entry(n).or_insert(t);
                }
            }
            Action::Restart(n) => {
                if let Some((n, from)) =
                    number(n).and_then(|n| Some((n, self.open_crashes.remove(&n)?)))
                {
                    self.done.push(Disturbance::node(n, from, t));
                }
            }
            // Before its join a node is outside the cluster: every pair touching it is cut.
            Action::Join { node, .. } => {
                if let Some(n) = number(node) {
                    self.done.push(Disturbance::node(n, Duration::ZERO, t));
                }
            }
            // After its leave a node is outside the cluster for good (until the end of the run).
            Action::Leave(node) => {
                if let Some(n) = number(node) {
                    self.done.push(Disturbance::node(n, t, end));
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
    }

    /// Opens the windows of pairs cut or held now, closes the others' at `t`.
    fn close_pairs(&mut self, t: Duration) {
        let now: BTreeSet<(u32, u32)> = self
            .cut
            .iter()
            .map(|&(x, y)| (x.min(y), x.max(y)))
            .chain(self.held.iter().copied())
            .collect();
        for p in &now {
            self.open_pairs.entry(*p).or_insert(t);
        }
        let ended: Vec<(u32, u32)> = self
            .open_pairs
            .keys()
            .filter(|p| !now.contains(p))
            .copied()
            .collect();
        for p in ended {
            if let Some(from) = self.open_pairs.remove(&p) {
                self.done.push(Disturbance::pair(p, from, t));
            }
        }
    }

    /// Every window, the ones still open ending at `end`.
    fn finish(mut self, end: Duration) -> Vec<Disturbance> {
        for (p, from) in self.open_pairs {
            self.done.push(Disturbance::pair(p, from, end));
        }
        for (n, from) in self.open_crashes {
            self.done.push(Disturbance::node(n, from, end));
        }
        self.done
    }
}

/// When each node pair first listed each other as running (both nodes' latest samples), from the
/// node samples; a node that does not answer forgets its view.
fn pairs_formed(index: &HistoryIndex<'_>) -> BTreeMap<(u32, u32), Duration> {
    let mut views: BTreeMap<u32, &[String]> = BTreeMap::new();
    let mut formed = BTreeMap::new();
    for s in &index.samples {
        match s.view() {
            Some(view) => views.insert(s.node, &view.running[..]),
            None => views.remove(&s.node),
        };
        let Some(mine) = views.get(&s.node) else {
            continue;
        };
        for (other, theirs) in &views {
            let (a, b) = (s.node.min(*other), s.node.max(*other));
            let lists = |list: &[String], n: u32| list.iter().any(|x| *x == format!("n{n}@n{n}"));
            if a != b && lists(mine, *other) && lists(theirs, s.node) {
                formed.entry((a, b)).or_insert(s.t);
            }
        }
    }
    formed
}

/// Excuse windows until a node pair first formed (`expect.excuse_until_formed`: every pair; else
/// only pairs with a node of `[node_start]`, which cannot be in the cluster before it starts):
/// from 0 until both first listed each other as running, or the end of the run if they never did
/// (the convergence check then fails the run anyway).
pub fn forming_windows(index: &HistoryIndex<'_>, ctx: &Ctx<'_>) -> Vec<Disturbance> {
    let scenario = ctx.scenario;
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
    let formed = pairs_formed(index);
    let mut out = Vec::new();
    for a in 1..=scenario.nodes {
        for b in a + 1..=scenario.nodes {
            if scenario.expect.excuse_until_formed || late.contains(&a) || late.contains(&b) {
                let until = formed.get(&(a, b)).copied().unwrap_or(ctx.recorded.end);
                out.push(Disturbance::pair((a, b), Duration::ZERO, until));
            }
        }
    }
    out
}
