//! The fault schedule: the scenario's `[[fault]]` items (and, with `[swarm]`, random faults drawn
//! from the seed, TigerBeetle VOPR style) turned into a time-ordered list of primitive actions the
//! harness applies between simulation steps.
//!
//! Owns the translation and the swarm draw; never touches the simulation itself. Every swarm fault
//! is undone before the safety phase ends, and the harness heals everything at the start of the
//! liveness phase anyway.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::scenario::{Fault, FaultKind, Scenario};

/// One primitive change to the simulated world.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Cut every link between hosts of different groups.
    Partition(Vec<Vec<String>>),
    /// Repair the links a `Partition` cut.
    Repair(Vec<Vec<String>>),
    PartitionOneway(Vec<String>, Vec<String>),
    RepairOneway(Vec<String>, Vec<String>),
    /// Repair every link and release every hold.
    HealAll,
    Crash(String),
    Restart(String),
    /// Fixed latency on links between two groups (`None`: every link).
    Latency(Duration, Option<(Vec<String>, Vec<String>)>),
    /// Back to the scenario's latency range.
    DefaultLatency(Option<(Vec<String>, Vec<String>)>),
    Hold(Vec<String>, Vec<String>),
    Release(Vec<String>, Vec<String>),
    ReleaseAll,
    McastLoss(f64),
    /// Drop datagrams between node hosts of different groups (TCP untouched).
    McastPartition(Vec<Vec<String>>),
    /// Undo the datagram cuts of one `McastPartition`.
    McastRepair(Vec<Vec<String>>),
    /// Undo every datagram partition.
    McastHealAll,
    ClientDisconnect {
        target: String,
        count: Option<u32>,
        down_for: Option<Duration>,
    },
    /// `node` calls `cluster_join` towards `target`.
    Join {
        node: String,
        target: String,
    },
    /// `node` calls `cluster_leave`.
    Leave(String),
}

/// An action with its time and the text recorded in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub at: Duration,
    pub action: Action,
    pub text: String,
}

fn groups_text(g: &[Vec<String>]) -> String {
    let parts: Vec<String> = g.iter().map(|g| format!("[{}]", g.join(","))).collect();
    parts.join(" | ")
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Every action of a run, ordered by time (scenario order among equal times).
pub fn schedule(scenario: &Scenario, seed: u64) -> Vec<Timed> {
    let mut faults = scenario.faults.clone();
    if scenario.swarm.is_some() {
        faults.extend(swarm(scenario, seed));
    }
    let mut out = Vec::new();
    for f in &faults {
        expand(f, &mut out);
    }
    out.sort_by_key(|t| t.at);
    out
}

fn expand(f: &Fault, out: &mut Vec<Timed>) {
    let mut push =
        |at: Duration, action: Action, text: String| out.push(Timed { at, action, text });
    match &f.kind {
        FaultKind::Partition(g) => {
            push(
                f.at,
                Action::Partition(g.clone()),
                format!("partition {}", groups_text(g)),
            );
            if let Some(u) = f.until {
                push(
                    u,
                    Action::Repair(g.clone()),
                    format!("repair {}", groups_text(g)),
                );
            }
        }
        FaultKind::PartitionOneway(a, b) => {
            let text = format!("[{}] -> [{}]", a.join(","), b.join(","));
            push(
                f.at,
                Action::PartitionOneway(a.clone(), b.clone()),
                format!("partition_oneway {text}"),
            );
            if let Some(u) = f.until {
                push(
                    u,
                    Action::RepairOneway(a.clone(), b.clone()),
                    format!("repair_oneway {text}"),
                );
            }
        }
        FaultKind::Heal => push(f.at, Action::HealAll, "heal".into()),
        FaultKind::Crash {
            node,
            restart_after,
        } => {
            push(f.at, Action::Crash(node.clone()), format!("crash {node}"));
            if let Some(r) = restart_after {
                push(
                    f.at + *r,
                    Action::Restart(node.clone()),
                    format!("restart {node}"),
                );
            }
        }
        FaultKind::Latency { latency, between } => {
            let which = between.as_ref().map_or_else(
                || "all links".to_string(),
                |(a, b)| format!("[{}] - [{}]", a.join(","), b.join(",")),
            );
            push(
                f.at,
                Action::Latency(*latency, between.clone()),
                format!("latency {} {which}", ms(*latency)),
            );
            if let Some(u) = f.until {
                push(
                    u,
                    Action::DefaultLatency(between.clone()),
                    format!("latency default {which}"),
                );
            }
        }
        FaultKind::Hold(a, b) => {
            let text = format!("[{}] - [{}]", a.join(","), b.join(","));
            push(
                f.at,
                Action::Hold(a.clone(), b.clone()),
                format!("hold {text}"),
            );
            if let Some(u) = f.until {
                push(
                    u,
                    Action::Release(a.clone(), b.clone()),
                    format!("release {text}"),
                );
            }
        }
        FaultKind::Release => push(f.at, Action::ReleaseAll, "release all".into()),
        FaultKind::McastLoss(rate) => {
            push(
                f.at,
                Action::McastLoss(*rate),
                format!("mcast_loss {}%", (rate * 100.0).round()),
            );
            if let Some(u) = f.until {
                push(u, Action::McastLoss(0.0), "mcast_loss 0%".into());
            }
        }
        FaultKind::McastPartition(g) => {
            push(
                f.at,
                Action::McastPartition(g.clone()),
                format!("mcast_partition {}", groups_text(g)),
            );
            if let Some(u) = f.until {
                push(
                    u,
                    Action::McastRepair(g.clone()),
                    format!("mcast_repair {}", groups_text(g)),
                );
            }
        }
        FaultKind::McastHeal => push(f.at, Action::McastHealAll, "mcast_heal".into()),
        FaultKind::ClientDisconnect {
            target,
            count,
            down_for,
        } => {
            let mut text = format!("client_disconnect {target}");
            if let Some(c) = count {
                text.push_str(&format!(" count={c}"));
            }
            if let Some(d) = down_for {
                text.push_str(&format!(" down_for={}", ms(*d)));
            }
            push(
                f.at,
                Action::ClientDisconnect {
                    target: target.clone(),
                    count: *count,
                    down_for: *down_for,
                },
                text,
            );
        }
        FaultKind::Join { node, target } => push(
            f.at,
            Action::Join {
                node: node.clone(),
                target: target.clone(),
            },
            format!("join {node} -> {target}"),
        ),
        FaultKind::Leave(node) => push(f.at, Action::Leave(node.clone()), format!("leave {node}")),
    }
}

/// Random faults for `scenario` drawn from `seed`: between one and `max_faults`, each undone
/// before the end of the safety phase.
pub fn swarm(scenario: &Scenario, seed: u64) -> Vec<Fault> {
    let Some(cfg) = &scenario.swarm else {
        return Vec::new();
    };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5741_524d_5741_524d);
    let nodes = scenario.node_hosts();
    let hosts: Vec<String> = nodes
        .iter()
        .cloned()
        .chain(nodes.iter().map(|n| Scenario::client_host_of(n)))
        .collect();
    let kinds: Vec<&str> = cfg
        .kinds
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "client_disconnect" || !scenario.workloads.is_empty())
        .collect();
    let total_ms = scenario.duration.as_millis() as u64;
    if kinds.is_empty() || total_ms < 6_000 {
        return Vec::new();
    }
    let count = rng.random_range(1..=cfg.max_faults);
    let mut faults = Vec::new();
    for _ in 0..count {
        let Some(&kind) = kinds.get(rng.random_range(0..kinds.len())) else {
            continue;
        };
        // Start after the clients are up; end at least a second before the liveness phase.
        let at_ms = rng.random_range(2_000..total_ms - 3_000);
        let len_ms = rng
            .random_range(500..=10_000u64)
            .min(total_ms - 1_000 - at_ms);
        let at = Duration::from_millis(at_ms);
        let until = Some(Duration::from_millis(at_ms + len_ms.max(1)));
        let kind = match kind {
            "partition" => FaultKind::Partition(split(&hosts, &mut rng)),
            "partition_oneway" => {
                let g = split(&hosts, &mut rng);
                FaultKind::PartitionOneway(g[0].clone(), g[1].clone())
            }
            "hold" => {
                let g = split(&hosts, &mut rng);
                FaultKind::Hold(g[0].clone(), g[1].clone())
            }
            "latency" => {
                let g = split(&hosts, &mut rng);
                FaultKind::Latency {
                    latency: Duration::from_millis(rng.random_range(20..=800)),
                    between: Some((g[0].clone(), g[1].clone())),
                }
            }
            "mcast_loss" => FaultKind::McastLoss(f64::from(rng.random_range(1..=9u8)) / 10.0),
            "mcast_partition" if nodes.len() >= 2 => {
                FaultKind::McastPartition(split(&nodes, &mut rng))
            }
            "mcast_partition" => continue,
            "crash" => {
                let node = nodes[rng.random_range(0..nodes.len())].clone();
                faults.push(Fault {
                    at,
                    until: None,
                    kind: FaultKind::Crash {
                        node,
                        restart_after: Some(Duration::from_millis(len_ms.max(1))),
                    },
                });
                continue;
            }
            _ => {
                let w = &scenario.workloads[rng.random_range(0..scenario.workloads.len())];
                faults.push(Fault {
                    at,
                    until: None,
                    kind: FaultKind::ClientDisconnect {
                        target: w.name.clone(),
                        count: Some(rng.random_range(1..=3)),
                        down_for: Some(Duration::from_millis(rng.random_range(0..=3_000))),
                    },
                });
                continue;
            }
        };
        faults.push(Fault { at, until, kind });
    }
    faults
}

/// Two non-empty groups covering `hosts`.
fn split(hosts: &[String], rng: &mut StdRng) -> Vec<Vec<String>> {
    let mut shuffled = hosts.to_vec();
    shuffled.shuffle(rng);
    let cut = rng.random_range(1..shuffled.len().max(2));
    let (a, b) = shuffled.split_at(cut.min(shuffled.len()));
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    vec![a, b]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "name = \"s\"\nnodes = 3\nduration = \"60s\"\nseeds = [1]\n\
             [[workload]]\nkind = \"pubsub\"\npublishers = 1\nsubscribers = 1\n\
             topics = [\"a\"]\nfilters = [\"a\"]\n{extra}"
        );
        Scenario::parse(&text, Path::new("s.toml")).unwrap()
    }

    #[test]
    fn reversible_faults_are_undone_at_until() {
        let s = scenario(
            "[[fault]]\nfrom = \"10s\"\nuntil = \"20s\"\npartition = [[\"n1\"], [\"n2\", \"c1\"]]\n\
             [[fault]]\nat = \"5s\"\ncrash = \"n3\"\nrestart_after = \"2s\"\n",
        );
        let s = schedule(&s, 1);
        let texts: Vec<(u64, &str)> = s
            .iter()
            .map(|t| (t.at.as_secs(), t.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            vec![
                (5, "crash n3"),
                (7, "restart n3"),
                (10, "partition [n1] | [n2,c1]"),
                (20, "repair [n1] | [n2,c1]"),
            ]
        );
    }

    #[test]
    fn mcast_partitions_repair_at_until_and_heal() {
        let s = scenario(
            "[[fault]]\nfrom = \"3s\"\nuntil = \"9s\"\nmcast_partition = [[\"n1\"], [\"n2\", \"n3\"]]\n\
             [[fault]]\nat = \"12s\"\nmcast_heal = true\n",
        );
        let plan = schedule(&s, 1);
        let groups = vec![vec!["n1".to_string()], vec!["n2".into(), "n3".into()]];
        let actions: Vec<(u64, &Action, &str)> = plan
            .iter()
            .map(|t| (t.at.as_secs(), &t.action, t.text.as_str()))
            .collect();
        assert_eq!(
            actions,
            vec![
                (
                    3,
                    &Action::McastPartition(groups.clone()),
                    "mcast_partition [n1] | [n2,n3]"
                ),
                (
                    9,
                    &Action::McastRepair(groups),
                    "mcast_repair [n1] | [n2,n3]"
                ),
                (12, &Action::McastHealAll, "mcast_heal"),
            ]
        );
    }

    #[test]
    fn swarm_draws_mcast_partitions_between_nodes_only_when_named() {
        let s = scenario("[swarm]\nmax_faults = 6\nkinds = [\"mcast_partition\"]\n");
        let drawn: Vec<Action> = (0..10)
            .flat_map(|seed| schedule(&s, seed))
            .map(|t| t.action)
            .collect();
        assert!(!drawn.is_empty());
        for a in &drawn {
            let (Action::McastPartition(g) | Action::McastRepair(g)) = a else {
                panic!("unexpected {a:?}");
            };
            assert!(g.iter().flatten().all(|h| h.starts_with('n')), "{g:?}");
        }
        let default = scenario("[swarm]\nmax_faults = 6\n");
        let any_mcast_partition = (0..50)
            .flat_map(|seed| schedule(&default, seed))
            .any(|t| matches!(t.action, Action::McastPartition(_)));
        assert!(!any_mcast_partition, "not drawn unless named");
    }

    #[test]
    fn swarm_is_a_function_of_the_seed_and_ends_in_the_safety_phase() {
        let s = scenario("[swarm]\nmax_faults = 6\n");
        let a = schedule(&s, 42);
        assert_eq!(a, schedule(&s, 42));
        assert!(!a.is_empty());
        assert!(a.iter().all(|t| t.at < s.duration), "{a:?}");
        let differs = (0..20).any(|seed| schedule(&s, seed) != a);
        assert!(differs, "different seeds draw different schedules");
    }
}
