//! `flockmq-sim`: run scenarios, swarm over seeds, check determinism, measure speed.
//!
//! CLI only: parses arguments and calls into the library. Any failure prints the violations and
//! ends with exactly one line `reproduce: cargo run -p flockmq-sim -- run FILE --seed N`, and the
//! process exits non-zero.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use flockmq_sim::harness::RunOptions;
use flockmq_sim::scenario::Scenario;
use flockmq_sim::{Outcome, run};

#[derive(Parser)]
#[command(
    name = "flockmq-sim",
    about = "Deterministic cluster simulator for flockmq",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario with one seed and print its summary.
    Run {
        /// The scenario file (scenarios/*.toml).
        file: PathBuf,
        /// The seed; the same seed replays the same run bit for bit.
        #[arg(long)]
        seed: u64,
        /// Print every recorded event.
        #[arg(long)]
        trace: bool,
    },
    /// Run scenarios for a range of seeds (all of scenarios/ when no file is given).
    Swarm {
        files: Vec<PathBuf>,
        /// Seeds as A..B (B excluded) or A..=B.
        #[arg(long, default_value = "0..10")]
        seeds: String,
        /// Runs at once, each on its own thread (every run is still one seed on one thread, so
        /// results and output are the same for any value).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Start no new run after this much wall time (e.g. 10m); runs under way finish.
        #[arg(long, value_parser = parse_budget)]
        time_budget: Option<Duration>,
    },
    /// Run one seed twice in this process and compare the trace hashes.
    CheckDeterminism {
        file: PathBuf,
        #[arg(long)]
        seed: u64,
    },
    /// Simulated seconds per wall-clock second for standard loads.
    Bench,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Node logs on stderr when `RUST_LOG` is set (`RUST_LOG=flockmq=debug`); silent otherwise so
/// swarm output stays readable. Log lines carry no wall-clock time: the run's own simulated time
/// is in the `--trace` output.
fn init_logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .without_time()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn real_main() -> Result<ExitCode> {
    init_logs();
    if !cfg!(tokio_unstable) {
        eprintln!(
            "warning: built without --cfg tokio_unstable (is RUSTFLAGS overriding .cargo/config.toml?): \
             panics in node tasks are not caught and tokio's RNG is not seeded"
        );
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run { file, seed, trace } => {
            let scenario = Scenario::load(&file)?;
            let outcome = run(&scenario, seed, RunOptions::default());
            if trace {
                emit(&outcome.trace());
            }
            print!("{}", outcome.summary());
            Ok(finish(&[outcome]))
        }
        Command::Swarm {
            files,
            seeds,
            jobs,
            time_budget,
        } => {
            let seeds = parse_seeds(&seeds)?;
            let files = if files.is_empty() {
                all_scenarios(Path::new("scenarios"))?
            } else {
                files
            };
            let scenarios = files
                .iter()
                .map(|f| Scenario::load(f))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(swarm(&scenarios, seeds, jobs.max(1), time_budget))
        }
        Command::CheckDeterminism { file, seed } => {
            let scenario = Scenario::load(&file)?;
            let first = run(&scenario, seed, RunOptions::default());
            let second = run(&scenario, seed, RunOptions::default());
            println!(
                "{} seed {seed}: trace {:016x} then {:016x}",
                first.file, first.trace_hash, second.trace_hash
            );
            if first.trace_hash != second.trace_hash {
                let (a, b) = (first.trace(), second.trace());
                let diverged = a
                    .lines()
                    .zip(b.lines())
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.lines().count().min(b.lines().count()));
                println!("NOT deterministic: first difference at event {diverged}:");
                println!("  first:  {}", a.lines().nth(diverged).unwrap_or("<end>"));
                println!("  second: {}", b.lines().nth(diverged).unwrap_or("<end>"));
                println!("{}", first.reproduce_line());
                return Ok(ExitCode::FAILURE);
            }
            println!("deterministic");
            Ok(finish(&[first]))
        }
        Command::Bench => {
            bench()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What a swarm keeps of one run (an `Outcome` holds the run's `Rc` state and stays on the
/// thread that ran it).
struct SwarmRun {
    file: String,
    seed: u64,
    /// The violations and the reproduce line, for a run that failed.
    failure: Option<String>,
}

/// Runs every (scenario, seed) pair on `jobs` threads, taking pairs in order, and prints the
/// results in that order as soon as they are known (a scenario's line once all its seeds ran):
/// the output does not depend on `jobs`. With a budget, pairs not started in time are reported
/// as not run.
#[allow(clippy::disallowed_methods)] // a swarm's budget is wall-clock time on purpose
fn swarm(
    scenarios: &[Scenario],
    (from, to): (u64, u64),
    jobs: usize,
    budget: Option<Duration>,
) -> ExitCode {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let started = std::time::Instant::now();
    let per = usize::try_from(to - from).unwrap_or(usize::MAX);
    let total = scenarios.len().saturating_mul(per);
    let report = Mutex::new(SwarmReport::new(total));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if budget.is_some_and(|b| started.elapsed() >= b) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let (scenario, seed) = (i / per, from + (i % per) as u64);
                    let outcome = run(&scenarios[scenario], seed, RunOptions::default());
                    let done = SwarmRun {
                        file: outcome.file.clone(),
                        seed,
                        failure: (!outcome.passed()).then(|| outcome.failure_report()),
                    };
                    if let Ok(mut r) = report.lock() {
                        r.done(i, done, scenarios, (from, to));
                    }
                }
            });
        }
    });
    let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
    report.finish(scenarios, (from, to));
    println!(
        "swarm: {} runs, {} failed ({} jobs, {:.0}s wall)",
        report.runs,
        report.failed.len(),
        jobs,
        started.elapsed().as_secs_f64()
    );
    if report.failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for r in &report.failed {
        println!("FAILED {} seed {}", r.file, r.seed);
        print!("{}", r.failure.as_deref().unwrap_or_default());
    }
    ExitCode::FAILURE
}

/// The swarm's results in run order, printed up to the first one still missing.
struct SwarmReport {
    slots: Vec<Option<SwarmRun>>,
    /// The first run not printed yet.
    cursor: usize,
    /// Runs of the scenario at the cursor that ran / failed.
    ran_here: usize,
    failed_here: usize,
    runs: usize,
    failed: Vec<SwarmRun>,
}

impl SwarmReport {
    fn new(total: usize) -> SwarmReport {
        SwarmReport {
            slots: (0..total).map(|_| None).collect(),
            cursor: 0,
            ran_here: 0,
            failed_here: 0,
            runs: 0,
            failed: Vec::new(),
        }
    }

    /// Records run `i` and prints what became printable.
    fn done(&mut self, i: usize, run: SwarmRun, scenarios: &[Scenario], seeds: (u64, u64)) {
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(run);
        }
        while self.slots.get(self.cursor).is_some_and(Option::is_some) {
            self.advance(true, scenarios, seeds);
        }
        let _ = std::io::stdout().flush();
    }

    /// Prints everything left; runs never started count as not run.
    fn finish(&mut self, scenarios: &[Scenario], seeds: (u64, u64)) {
        while self.cursor < self.slots.len() {
            let ran = self.slots[self.cursor].is_some();
            self.advance(ran, scenarios, seeds);
        }
    }

    fn advance(&mut self, ran: bool, scenarios: &[Scenario], (from, to): (u64, u64)) {
        let per = (to - from) as usize;
        if let Some(run) = self.slots[self.cursor].take().filter(|_| ran) {
            self.ran_here += 1;
            self.runs += 1;
            if run.failure.is_some() {
                println!("{} seed {}: FAILED", run.file, run.seed);
                self.failed_here += 1;
                self.failed.push(run);
            }
        }
        self.cursor += 1;
        if self.cursor % per == 0 {
            let scenario = &scenarios[self.cursor / per - 1];
            let ran = if self.ran_here == per {
                String::new()
            } else {
                format!(" ({} of {per} run before the time budget)", self.ran_here)
            };
            println!(
                "{}: seeds {from}..{to}{ran}, {} failed",
                flockmq_sim::check::display_path(&scenario.file),
                self.failed_here
            );
            (self.ran_here, self.failed_here) = (0, 0);
        }
    }
}

/// `90s`, `10m`, `2h`: the wall-clock budget of a swarm.
fn parse_budget(s: &str) -> Result<Duration, String> {
    flockmq::config::parse_duration(s)
}

/// Prints the failures (each ends with its reproduce line); the exit code says whether any.
fn finish(outcomes: &[Outcome]) -> ExitCode {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for o in failed {
        println!("FAILED {} seed {}", o.file, o.seed);
        print!("{}", o.failure_report());
    }
    ExitCode::FAILURE
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn parse_seeds(s: &str) -> Result<(u64, u64)> {
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        bail!("--seeds {s}: expected A..B or A..=B");
    };
    let a: u64 = a.trim().parse().with_context(|| format!("--seeds {s}"))?;
    let b: u64 = b.trim().parse().with_context(|| format!("--seeds {s}"))?;
    let b = if inclusive { b.saturating_add(1) } else { b };
    if a >= b {
        bail!("--seeds {s}: empty range");
    }
    Ok((a, b))
}

fn all_scenarios(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.toml scenarios in {}", dir.display());
    }
    Ok(files)
}

/// A built-in load: `nodes` independent nodes with `groups` groups of publishers and subscribers
/// per node; each group has its own topic, so every message reaches `fan_out` subscribers.
fn bench_scenario(nodes: u32, groups: u32, fan_out: u32, rate: u32) -> Result<Scenario> {
    let mut text = format!(
        "name = \"bench\"\nnodes = {nodes}\nduration = \"30s\"\nliveness = \"5s\"\nseeds = [1]\n\
         [expect]\nconverge_within = \"5s\"\n"
    );
    for n in 1..=nodes {
        for g in 1..=groups {
            text.push_str(&format!(
                "[[workload]]\nname = \"n{n}g{g}\"\nkind = \"pubsub\"\npublishers = {fan_out}\n\
                 subscribers = {fan_out}\nqos = 1\nfilters = [\"bench/{g}/+\"]\n\
                 topics = [\"bench/{g}/x\"]\nrate = \"{rate}/s\"\nattach = [\"n{n}\"]\n"
            ));
        }
    }
    Ok(Scenario::parse(&text, Path::new("<bench>"))?)
}

#[allow(clippy::disallowed_methods)] // the benchmark measures wall-clock speed on purpose
fn bench() -> Result<()> {
    for (name, nodes, groups, fan_out, rate) in [
        (
            "1 node, 100 clients (10 topics, fan-out 5, 2 msg/s each)",
            1,
            10,
            5,
            2,
        ),
        (
            "5 independent nodes, 100 clients (fan-out 5, 2 msg/s each)",
            5,
            2,
            5,
            2,
        ),
        (
            "1 node, 100 clients, heavy (fan-out 50, 5 msg/s each)",
            1,
            1,
            50,
            5,
        ),
    ] {
        let scenario = bench_scenario(nodes, groups, fan_out, rate)?;
        let started = std::time::Instant::now();
        let recorded = flockmq_sim::harness::simulate(&scenario, 1, RunOptions::default());
        let simulated_in = started.elapsed().max(Duration::from_micros(1));
        let (stats, violations) = flockmq_sim::check::check(&scenario, &recorded);
        let wall = started.elapsed().max(Duration::from_micros(1));
        let total = scenario.total().as_secs_f64();
        println!(
            "{name}: {total:.0}s simulated in {:.2}s wall (checks included; {:.2}s without) = \
             {:.0} simulated s per wall s; {} deliveries{}",
            wall.as_secs_f64(),
            simulated_in.as_secs_f64(),
            total / wall.as_secs_f64(),
            stats.delivered.iter().sum::<u64>(),
            if violations.is_empty() {
                ""
            } else {
                ", FAILED checks"
            }
        );
    }
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "debug (dependencies opt-level 3)"
        } else {
            "release"
        }
    );
    Ok(())
}
