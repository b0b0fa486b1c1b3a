//! Scenario tests (DESIGN §5.2): every file in `scenarios/` for its fixed seed list, compared with
//! an insta snapshot of its summary under the top-level `snapshots/`; the determinism check for
//! every scenario; planted bugs that prove the checkers bite; the CLI's failure contract.
//!
//! A behaviour change of the node or the broker shows up as a snapshot diff: review it, then
//! accept with `INSTA_UPDATE=always cargo test -p flockmq-sim --test scenarios` (or
//! `cargo insta review`).

mod common;

use std::path::{Path, PathBuf};

use flockmq_sim::client::PlantedBug;
use flockmq_sim::harness::RunOptions;
use flockmq_sim::scenario::Scenario;
use flockmq_sim::{Outcome, run};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the scenario set, found {files:?}"
    );
    files
}

fn load(file: &Path) -> Scenario {
    Scenario::load(file).unwrap_or_else(|e| panic!("{e}"))
}

fn scenario_named(stem: &str) -> Scenario {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{stem}.toml")))
}

fn assert_passed(outcome: &Outcome) {
    assert!(
        outcome.passed(),
        "{}\n{}",
        outcome.summary(),
        outcome.failure_report()
    );
}

#[test]
fn every_scenario_matches_its_snapshot() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for file in scenario_files() {
            let scenario = load(&file);
            let stem = file.file_stem().unwrap().to_string_lossy().to_string();
            for &seed in &scenario.seeds {
                let outcome = run(&scenario, seed, RunOptions::default());
                assert_passed(&outcome);
                insta::assert_snapshot!(format!("{stem}__seed_{seed}"), outcome.summary());
            }
        }
    });
}

#[test]
fn every_scenario_is_deterministic() {
    for file in scenario_files() {
        let scenario = load(&file);
        let seed = scenario.seeds[0];
        let first = run(&scenario, seed, RunOptions::default());
        let second = run(&scenario, seed, RunOptions::default());
        assert_eq!(
            first.trace_hash,
            second.trace_hash,
            "{} seed {seed} is not deterministic:\n{}",
            file.display(),
            first.reproduce_line()
        );
        assert_eq!(first.summary(), second.summary());
    }
}

#[test]
fn clustered_runs_sample_membership_and_the_tutorial_route_table() {
    use flockmq_sim::history::Event;
    let outcome = run(
        &scenario_named("cluster_seed_example"),
        1,
        RunOptions::default(),
    );
    assert_passed(&outcome);
    let history = outcome.recorded.shared.history.borrow();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let expected_routes: std::collections::BTreeMap<String, Vec<String>> = [
        ("t/#", &["n2@n2"][..]),
        ("t/+/x", &["n1@n1", "n3@n3"][..]),
        ("t/+/y", &["n1@n1"][..]),
        ("t/a", &["n3@n3"][..]),
    ]
    .into_iter()
    .map(|(f, n)| (f.to_string(), strings(n)))
    .collect();
    for node in 1..=3 {
        let last = history
            .events()
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Event::Sample { node: n, sample } if *n == node => Some(sample.clone()),
                _ => None,
            })
            .flatten()
            .unwrap_or_else(|| panic!("n{node} was never sampled"));
        let view = last
            .cluster
            .unwrap_or_else(|| panic!("n{node}: no cluster view in a clustered run"));
        assert_eq!(view.running, strings(&["n1@n1", "n2@n2", "n3@n3"]));
        assert!(view.stopped.is_empty());
        assert_eq!(view.routes, expected_routes, "n{node}");
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let scenario = scenario_named("swarm_single_node");
    let a = run(&scenario, 1, RunOptions::default());
    let b = run(&scenario, 2, RunOptions::default());
    assert_ne!(a.trace_hash, b.trace_hash);
}

#[test]
fn planted_lost_qos1_delivery_fails_at_least_once_with_the_reproduce_line() {
    let scenario = scenario_named("single_node_basic");
    let clean = run(&scenario, 1, RunOptions::default());
    assert_passed(&clean);

    let plant = PlantedBug::DropQos1Delivery { client: 0, nth: 7 };
    let broken = run(&scenario, 1, RunOptions { plant: Some(plant) });
    assert!(!broken.passed(), "the planted bug went unnoticed");
    assert_eq!(broken.violations.len(), 1, "{:?}", broken.violations);
    let v = broken.violations[0].to_string();
    assert!(
        v.starts_with("w1-s1: QoS 1 message ") && v.contains("never delivered"),
        "{v}"
    );
    let report = broken.failure_report();
    assert_eq!(
        report.lines().last(),
        Some(
            "reproduce: cargo run -p flockmq-sim -- run scenarios/single_node_basic.toml --seed 1"
        )
    );
}

#[test]
fn planted_duplicate_qos2_delivery_fails_exactly_once() {
    let scenario = scenario_named("qos_mix");
    let plant = PlantedBug::DuplicateQos2Delivery { client: 0, nth: 3 };
    let broken = run(&scenario, 1, RunOptions { plant: Some(plant) });
    assert_eq!(broken.violations.len(), 1, "{:?}", broken.violations);
    let v = broken.violations[0].to_string();
    assert!(
        v.starts_with("q2-s1: QoS 2 message ") && v.contains("delivered 2 times"),
        "{v}"
    );
}

#[test]
fn cli_failure_ends_with_the_reproduce_line_and_exits_non_zero() {
    let (dir, file) = common::starved_scenario("cli");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flockmq-sim"))
        .args(["run", file.to_str().unwrap(), "--seed", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("violation: only "), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some(
            format!(
                "reproduce: cargo run -p flockmq-sim -- run {} --seed 3",
                file.display()
            )
            .as_str()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_panic_in_a_spawned_task_fails_the_run() {
    let scenario = scenario_named("single_node_basic");
    let plant = PlantedBug::PanicAfterConnect { client: 2 };
    let broken = run(&scenario, 1, RunOptions { plant: Some(plant) });
    assert!(
        broken
            .violations
            .iter()
            .any(|v| v.to_string().starts_with("panic inside the simulation")),
        "{:?}",
        broken.violations
    );
}

/// `cluster_mcast_static_faults` with `extra` appended (more faults, other expectations).
fn static_faults_with(extra: &str, replace: (&str, &str)) -> Scenario {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/cluster_mcast_static_faults.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(replace.0),
        "{} not in the scenario",
        replace.0
    );
    let text = format!("{}\n{extra}", text.replace(replace.0, replace.1));
    Scenario::parse(&text, &file).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_late_node_refuses_its_clients_until_it_starts_then_joins() {
    use flockmq_sim::history::Event;
    let scenario = scenario_named("cluster_mcast_static_faults");
    let outcome = run(&scenario, 1, RunOptions::default());
    assert_passed(&outcome);
    let history = outcome.recorded.shared.history.borrow();
    let start = std::time::Duration::from_secs(8);
    let started: Vec<_> = history
        .events()
        .iter()
        .filter_map(|(t, e)| match e {
            Event::NodeStarted { node: 4, .. } => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(started[0] >= start, "n4 started at {:?}", started[0]);
    let on_n4 = |t: &std::time::Duration, e: &Event| match e {
        Event::ConnectFailed { node: 4, .. } => Some((*t, false)),
        Event::Connected { node: 4, .. } => Some((*t, true)),
        _ => None,
    };
    let attempts: Vec<_> = history
        .events()
        .iter()
        .filter_map(|(t, e)| on_n4(t, e))
        .collect();
    assert!(
        attempts.iter().any(|(t, ok)| !ok && *t < start),
        "no refused connect before 8 s"
    );
    assert!(attempts.iter().all(|(t, ok)| !ok || *t >= started[0]));
    assert!(
        attempts.iter().any(|(_, ok)| *ok),
        "n4's clients never connected"
    );
    assert!(
        outcome.summary().contains("formed at: 8."),
        "{}",
        outcome.summary()
    );
}

#[test]
fn members_stable_from_names_the_node_the_time_and_what_it_saw() {
    // A TCP partition (unlike the datagram faults) does drop n1 out of the cluster.
    let scenario = static_faults_with(
        "[[fault]]\nfrom = \"14s\"\nuntil = \"17s\"\npartition = [[\"n1\", \"c1\"], [\"n2\", \"c2\", \"n3\", \"c3\", \"n4\", \"c4\"]]\n",
        ("", ""),
    );
    let outcome = run(&scenario, 1, RunOptions::default());
    let stable: Vec<String> = outcome
        .violations
        .iter()
        .map(ToString::to_string)
        .filter(|v| v.contains("(expect.members_stable_from)"))
        .collect();
    assert!(!stable.is_empty(), "{:?}", outcome.violations);
    let n1 = stable
        .iter()
        .find(|v| v.starts_with("n1 at "))
        .unwrap_or_else(|| panic!("{stable:?}"));
    assert!(
        n1.contains("saw running=[\"n1@n1\"]") || n1.contains("stopped=[\"n"),
        "{n1}"
    );
    assert!(n1.contains("from 12.000s"), "{n1}");
}

#[test]
fn formed_within_fails_when_the_late_node_cannot_have_joined_yet() {
    let scenario = static_faults_with("", ("formed_within = \"12s\"", "formed_within = \"8s\""));
    let outcome = run(&scenario, 1, RunOptions::default());
    assert_eq!(outcome.violations.len(), 1, "{:?}", outcome.violations);
    let v = outcome.violations[0].to_string();
    assert!(v.contains("agreed on exactly themselves only at 8."), "{v}");
    assert!(
        v.contains("expected by 8.000s (expect.formed_within)"),
        "{v}"
    );
    assert!(v.contains("n4 not answering"), "{v}");
}
