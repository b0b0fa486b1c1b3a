//! `flockmq-sim swarm --jobs N`: runs on several threads give the same results, in the same
//! order, with the same `reproduce:` lines as one thread; a run replays on any thread.

mod common;

use std::path::Path;
use std::process::Command;

use flockmq_sim::harness::RunOptions;
use flockmq_sim::run;
use flockmq_sim::scenario::Scenario;

fn swarm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flockmq-sim"))
        .arg("swarm")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("flockmq-sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The totals line names the job count and the wall time; everything else must match.
    let stable = stdout
        .lines()
        .map(|l| match l.split_once(" (") {
            Some((head, _)) if l.starts_with("swarm: ") => head,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.success(), stable)
}

#[test]
fn swarm_output_is_the_same_with_one_job_or_three() {
    let (dir, starved) = common::starved_scenario("swarm");
    let starved = starved.to_str().unwrap();
    let args = |jobs| {
        [
            "scenarios/single_node_basic.toml",
            starved,
            "--seeds",
            "0..4",
            "--jobs",
            jobs,
        ]
    };
    let (ok1, one) = swarm(&args("1"));
    let (ok3, three) = swarm(&args("3"));
    assert!(!ok1 && !ok3, "failures make the exit code non-zero");
    assert_eq!(one, three);
    assert!(
        one.contains("scenarios/single_node_basic.toml: seeds 0..4, 0 failed"),
        "{one}"
    );
    assert!(one.contains(": seeds 0..4, 4 failed"), "{one}");
    for seed in 0..4 {
        let line = format!("reproduce: cargo run -p flockmq-sim -- run {starved} --seed {seed}");
        assert!(one.lines().any(|l| l == line), "{line} missing in\n{one}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_on_another_thread_replays_the_same_trace() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/qos_mix.toml");
    let scenario = Scenario::load(&file).unwrap();
    let here = run(&scenario, 5, RunOptions::default()).trace_hash;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&scenario, 5, RunOptions::default()).trace_hash);
        let b = s.spawn(|| run(&scenario, 5, RunOptions::default()).trace_hash);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((here, here), (a, b), "two runs at once, on other threads");
}
