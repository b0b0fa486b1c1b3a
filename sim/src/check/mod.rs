//! Checkers: read the recorded history (never the code under test) and list every violation
//! (a typed [`Violation`], rendered as one line of text); plus the run summary that the snapshot
//! tests pin.
//!
//! The history is walked once into a [`HistoryIndex`] (`index.rs`); every checker is a small
//! function over that index and a [`Ctx`] (the scenario and the recorded run):
//!
//! - `safety.rs` (all the time, faults on): no delivery to a client whose filters do not match;
//!   no delivery of a message never published (or on another topic, or at the wrong QoS); QoS 2
//!   exactly once per subscriber; per-publisher order per topic for first deliveries on one
//!   connection; independent nodes never leak messages to each other; `session_present` never
//!   set on a clean start; no refused SUBACK; nodes start.
//! - `at_least_once.rs` (the exact excuses are there) with its disturbance windows in
//!   `windows.rs`: QoS >= 1 at least once.
//! - `cluster.rs`: `expect.never_members`, `expect.members_stable_from`, `expect.formed_within`,
//!   and convergence after the liveness phase's quiet period: every client connected exactly
//!   once across the nodes (at most one live session per client id), and in a cluster members
//!   and routes agreed, within `expect.converge_within`.
//!
//! Owns no simulation state; never panics on a strange history (it reports it).

mod at_least_once;
mod cluster;
mod index;
mod safety;
mod violation;
mod windows;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::client::ClientSpec;
use crate::harness::{Recorded, RunOptions, simulate};
use crate::history::ClientIdx;
use crate::scenario::{Scenario, Workload, strip_share};

pub use index::HistoryIndex;
pub use violation::{MemberViews, Problem, Seen, Violation};

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
    pub violations: Vec<Violation>,
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

/// What every checker reads besides the index: the scenario and the recorded run.
pub struct Ctx<'a> {
    pub scenario: &'a Scenario,
    pub recorded: &'a Recorded,
}

/// A client's roster entry and workload.
fn workload_of<'a>(ctx: &Ctx<'a>, client: ClientIdx) -> Option<(&'a ClientSpec, &'a Workload)> {
    let shared = &ctx.recorded.shared;
    let spec = shared.roster.get(client as usize)?;
    Some((spec, shared.workloads.get(spec.workload)?))
}

/// Runs every checker; returns the stats and the violations (harness errors first, then the
/// safety violations in history order, then at-least-once, cluster and convergence).
pub fn check(scenario: &Scenario, recorded: &Recorded) -> (Stats, Vec<Violation>) {
    let ctx = Ctx { scenario, recorded };
    let history = recorded.shared.history.borrow();
    let index = HistoryIndex::build(&history, &ctx);
    let mut stats = index.counts.clone();
    stats.quiet_after = index.last_activity.saturating_sub(recorded.liveness_start);
    let mut violations: Vec<Violation> = recorded
        .errors
        .iter()
        .cloned()
        .map(Violation::Harness)
        .collect();
    violations.extend(safety::check(&index, &ctx));
    let at_least_once = at_least_once::check(&index, &ctx);
    stats.required = at_least_once.required;
    stats.excused = at_least_once.excused;
    violations.extend(at_least_once.violations);
    violations.extend(cluster::never_members(&index, &ctx));
    violations.extend(cluster::members_stable(&index, &ctx));
    let (formed_at, problems) = cluster::formed_within(&index, &ctx);
    stats.formed_at = formed_at;
    violations.extend(problems);
    let (converged_after, problems) = cluster::convergence(&index, &ctx);
    stats.converged_after = converged_after;
    violations.extend(problems);
    violations.extend(min_deliveries(&stats, &ctx));
    (stats, violations)
}

/// `expect.min_deliveries`.
fn min_deliveries(stats: &Stats, ctx: &Ctx<'_>) -> Option<Violation> {
    let delivered: u64 = stats.delivered.iter().sum();
    let min = ctx.scenario.expect.min_deliveries;
    (delivered < min).then_some(Violation::TooFewDeliveries { delivered, min })
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
}
