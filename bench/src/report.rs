//! The comparison report: joins the JSON lines each broker's run produced, prints one table row
//! per figure with both values and the ratio first/second, and writes everything as one JSON
//! document. It owns presentation only; it never runs a test and never invents a value: a
//! figure missing for a broker prints as `n/a`.
//!
//! Cluster tests follow a naming convention the runner keeps: `cluster-qosN` (publisher on node
//! 1, subscriber on node 3) and `cluster-local-qosN` (both on node 1 of the same cluster) sit next
//! to the single-broker `qosN`; `cluster_rows` puts the three side by side.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::result::{Better, TestResult};

/// One broker's results as read from its JSON-lines file.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerRun {
    /// Display name (`flockmq`, `mosquitto`).
    pub name: String,
    /// Every test result it produced, in run order.
    pub results: Vec<TestResult>,
    /// Lines of the file that were not results (kept so a failure is visible in the JSON).
    pub unreadable_lines: usize,
}

impl BrokerRun {
    /// Parses a JSON-lines file's text; lines that are not a `TestResult` are counted, not fatal.
    pub fn parse(name: &str, text: &str) -> BrokerRun {
        let mut results = Vec::new();
        let mut unreadable_lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<TestResult>(line) {
                Ok(r) => results.push(r),
                Err(_) => unreadable_lines += 1,
            }
        }
        BrokerRun {
            name: name.to_string(),
            results,
            unreadable_lines,
        }
    }
}

/// One row of the comparison: a figure of one test, per broker.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub test: String,
    pub protocol: String,
    pub figure: String,
    pub unit: String,
    pub better: Better,
    /// Value per broker name; absent when that broker has no such figure.
    pub values: BTreeMap<String, f64>,
    /// First broker's value over the second's, when both exist and the second is not zero.
    pub ratio: Option<f64>,
}

/// Builds the rows in the order figures first appear across the runs.
pub fn rows(runs: &[BrokerRun]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for run in runs {
        for result in &run.results {
            for figure in &result.figures {
                let existing = rows.iter_mut().find(|r| {
                    r.test == result.test
                        && r.protocol == result.protocol
                        && r.figure == figure.name
                });
                let row = match existing {
                    Some(row) => row,
                    None => {
                        rows.push(Row {
                            test: result.test.clone(),
                            protocol: result.protocol.clone(),
                            figure: figure.name.clone(),
                            unit: figure.unit.clone(),
                            better: figure.better,
                            values: BTreeMap::new(),
                            ratio: None,
                        });
                        let last = rows.len() - 1;
                        &mut rows[last]
                    }
                };
                row.values.insert(run.name.clone(), figure.value);
            }
        }
    }
    if let [first, second, ..] = runs {
        for row in &mut rows {
            let a = row.values.get(&first.name);
            let b = row.values.get(&second.name);
            row.ratio = match (a, b) {
                (Some(a), Some(b)) if *b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
                _ => None,
            };
        }
    }
    rows
}

/// Prefix of the tests that need a cluster: only brokers that have one produce them.
pub const CLUSTER_PREFIX: &str = "cluster-";

/// Cross-node forwarding of one broker at one QoS and protocol, next to its single-node figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRow {
    pub broker: String,
    pub protocol: String,
    pub qos: u8,
    /// `cluster-qosN`: deliveries/s, publisher on node 1, subscriber on node 3.
    pub cross_node: f64,
    /// `cluster-local-qosN`: deliveries/s, publisher and subscriber both on node 1.
    pub node1_alone: Option<f64>,
    /// `qosN`: deliveries/s of the single-broker run.
    pub single_broker: Option<f64>,
    /// `cluster-qosN`'s loss figure (QoS 1 and 2 only).
    pub lost: Option<f64>,
}

fn figure_of(run: &BrokerRun, test: &str, protocol: &str, figure: &str) -> Option<f64> {
    run.results
        .iter()
        .filter(|r| r.test == test && r.protocol == protocol)
        .flat_map(|r| &r.figures)
        .find(|f| f.name == figure)
        .map(|f| f.value)
}

/// One row per `cluster-qosN` result, in run order.
pub fn cluster_rows(runs: &[BrokerRun]) -> Vec<ClusterRow> {
    let mut out = Vec::new();
    for run in runs {
        for result in &run.results {
            let Some(qos) = result
                .test
                .strip_prefix("cluster-qos")
                .and_then(|q| q.parse::<u8>().ok())
            else {
                continue;
            };
            let Some(cross_node) = result
                .figures
                .iter()
                .find(|f| f.name == "deliveries/s")
                .map(|f| f.value)
            else {
                continue;
            };
            let p = result.protocol.as_str();
            out.push(ClusterRow {
                broker: run.name.clone(),
                protocol: result.protocol.clone(),
                qos,
                cross_node,
                node1_alone: figure_of(run, &format!("cluster-local-qos{qos}"), p, "deliveries/s"),
                single_broker: figure_of(run, &format!("qos{qos}"), p, "deliveries/s"),
                lost: figure_of(run, &result.test, p, "lost"),
            });
        }
    }
    out
}

/// The cluster rows as text: cross-node throughput and its ratio to each single-node figure.
pub fn cluster_table(rows: &[ClusterRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<6} {:<4} {:>16} {:>22} {:>22} {:>6}",
        "broker",
        "proto",
        "qos",
        "node1→node3 msg/s",
        "node1 alone (ratio)",
        "single broker (ratio)",
        "lost"
    );
    let versus = |base: Option<f64>, cross: f64| match base {
        Some(b) if b > 0.0 && b.is_finite() => {
            format!("{} ({:.2}x)", format_value(b, "msg/s"), cross / b)
        }
        Some(b) => format_value(b, "msg/s"),
        None => "n/a".into(),
    };
    for r in rows {
        let lost = r.lost.map_or("-".to_string(), |l| format_value(l, "msgs"));
        let _ = writeln!(
            out,
            "{:<10} {:<6} {:<4} {:>16} {:>22} {:>22} {:>6}",
            r.broker,
            r.protocol,
            r.qos,
            format_value(r.cross_node, "msg/s"),
            versus(r.node1_alone, r.cross_node),
            versus(r.single_broker, r.cross_node),
            lost
        );
    }
    out
}

/// Formats a value for the table: microseconds with one decimal, counts with separators.
pub fn format_value(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    if unit == "us" {
        return format!("{value:.1}");
    }
    let rounded = value.round() as i128;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

fn direction(better: Better) -> &'static str {
    match better {
        Better::Higher => "higher is better",
        Better::Lower => "lower is better",
    }
}

/// What the ratio means, in words, so nobody has to remember which way latency goes.
fn verdict(row: &Row, first: &str, second: &str) -> String {
    let direction = direction(row.better);
    let (Some(a), Some(b)) = (row.values.get(first), row.values.get(second)) else {
        return direction.to_string();
    };
    let winner = match (row.better, a.partial_cmp(b)) {
        (_, Some(std::cmp::Ordering::Equal)) => "same",
        (Better::Higher, Some(std::cmp::Ordering::Greater))
        | (Better::Lower, Some(std::cmp::Ordering::Less)) => first,
        (_, Some(_)) => second,
        (_, None) => "?",
    };
    if winner == "same" || winner == "?" {
        format!("{direction}: {winner}")
    } else {
        format!("{direction}: {winner} better")
    }
}

/// The comparison table as text.
pub fn table(runs: &[BrokerRun], rows: &[Row]) -> String {
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let ratio_title = match names.as_slice() {
        [a, b, ..] => format!("{a}/{b}"),
        _ => "ratio".to_string(),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<18} {:<6} {:<13} {:<6}",
        "test", "proto", "figure", "unit"
    );
    for name in &names {
        let _ = write!(out, " {name:>13}");
    }
    let _ = writeln!(out, " {ratio_title:>18}  meaning");
    for row in rows {
        let _ = write!(
            out,
            "{:<18} {:<6} {:<13} {:<6}",
            row.test, row.protocol, row.figure, row.unit
        );
        for name in &names {
            let value = row
                .values
                .get(*name)
                .map_or("n/a".to_string(), |v| format_value(*v, &row.unit));
            let _ = write!(out, " {value:>13}");
        }
        let ratio = row.ratio.map_or("n/a".to_string(), |r| format!("{r:.2}x"));
        let missing = names.iter().find(|n| !row.values.contains_key(**n));
        let meaning = match (names.as_slice(), missing) {
            (_, Some(name)) if row.test.starts_with(CLUSTER_PREFIX) => {
                format!("{}; {name}: no cluster", direction(row.better))
            }
            ([a, b, ..], _) => verdict(row, a, b),
            _ => direction(row.better).to_string(),
        };
        let _ = writeln!(out, " {ratio:>18}  {meaning}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, p99: f64, rate: f64) -> BrokerRun {
        let mut lat = TestResult::new("latency-qos0", "5");
        lat.figure("p99", p99, "us", Better::Lower);
        let mut tput = TestResult::new("qos0", "5");
        tput.figure("deliveries/s", rate, "msg/s", Better::Higher);
        let text = format!(
            "{}\nnot json\n{}\n",
            serde_json::to_string(&tput).unwrap_or_default(),
            serde_json::to_string(&lat).unwrap_or_default()
        );
        BrokerRun::parse(name, &text)
    }

    #[test]
    fn rows_join_brokers_and_ratio_is_first_over_second() {
        let runs = [
            run("flockmq", 50.0, 300_000.0),
            run("mosquitto", 100.0, 200_000.0),
        ];
        assert_eq!(runs[0].unreadable_lines, 1);
        let rows = rows(&runs);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].figure, "deliveries/s");
        assert_eq!(rows[0].ratio, Some(1.5));
        assert_eq!(rows[1].ratio, Some(0.5));
        let text = table(&runs, &rows);
        assert!(text.contains("flockmq/mosquitto"), "{text}");
        assert!(text.contains("lower is better: flockmq better"), "{text}");
        assert!(text.contains("higher is better: flockmq better"), "{text}");
    }

    #[test]
    fn a_broker_without_results_shows_not_available() {
        let runs = [
            BrokerRun::parse("flockmq", ""),
            run("mosquitto", 100.0, 200_000.0),
        ];
        let rows = rows(&runs);
        assert!(rows.iter().all(|r| r.ratio.is_none()));
        let text = table(&runs, &rows);
        assert!(text.contains("n/a"), "{text}");
        assert!(text.contains("200,000"), "{text}");
    }

    fn result(test: &str, figures: &[(&str, f64)]) -> TestResult {
        let mut r = TestResult::new(test, "5");
        for (name, value) in figures {
            r.figure(name, *value, "msg/s", Better::Higher);
        }
        r
    }

    #[test]
    fn cluster_rows_pair_cross_node_with_both_single_node_figures() {
        let results = [
            result("qos1", &[("deliveries/s", 100_000.0), ("lost", 0.0)]),
            result("cluster-local-qos1", &[("deliveries/s", 80_000.0)]),
            result("cluster-qos1", &[("deliveries/s", 40_000.0), ("lost", 0.0)]),
            result("cluster-qos0", &[("deliveries/s", 60_000.0)]),
        ];
        let runs = [
            BrokerRun {
                name: "flockmq".into(),
                results: results.to_vec(),
                unreadable_lines: 0,
            },
            run("mosquitto", 100.0, 200_000.0),
        ];
        let cluster = cluster_rows(&runs);
        assert_eq!(cluster.len(), 2);
        assert_eq!(
            (
                cluster[0].qos,
                cluster[0].cross_node,
                cluster[0].node1_alone
            ),
            (1, 40_000.0, Some(80_000.0))
        );
        assert_eq!(
            (cluster[0].single_broker, cluster[0].lost),
            (Some(100_000.0), Some(0.0))
        );
        assert_eq!(
            (cluster[1].qos, cluster[1].node1_alone, cluster[1].lost),
            (0, None, None)
        );
        let text = cluster_table(&cluster);
        assert!(text.contains("80,000 (0.50x)"), "{text}");
        assert!(text.contains("100,000 (0.40x)"), "{text}");
        let table = table(&runs, &rows(&runs));
        let line = table
            .lines()
            .find(|l| l.starts_with("cluster-qos1") && l.contains("deliveries/s"))
            .unwrap_or_default();
        assert!(
            line.contains("n/a") && line.contains("mosquitto: no cluster"),
            "{table}"
        );
    }

    #[test]
    fn values_format_with_separators_and_microsecond_decimals() {
        assert_eq!(format_value(1_234_567.4, "msg/s"), "1,234,567");
        assert_eq!(format_value(999.0, "msgs"), "999");
        assert_eq!(format_value(85.25, "us"), "85.2");
        assert_eq!(format_value(f64::NAN, "us"), "n/a");
    }
}
