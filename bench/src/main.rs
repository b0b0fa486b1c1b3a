//! flockmq-bench: a closed-loop MQTT load generator and the report that compares brokers.
//!
//! Map of the crate:
//! - `client`: one MQTT connection over flockmq's codec, reused buffers, no per-message allocation.
//! - `pubsub`: the publish/subscribe scenarios (1→1 per QoS, fan-out, fan-in, fixed-rate latency).
//! - `conns`: idle connections spread over 127.0.0.0/8 and the broker's RSS per connection.
//! - `report`: joins per-broker JSON lines into a table and one JSON document.
//! - `result`, `clock`: the result shape and the generator's only access to real time.
//!
//! Each test subcommand prints a human summary on stderr and one JSON line on stdout, so
//! `bench/run.sh` can collect results with a plain redirect. Everything runs on one thread
//! (tokio current_thread), so the generator uses one core and the broker can have the other.

mod client;
mod clock;
mod conns;
#[cfg(test)]
mod fake_broker;
mod pubsub;
mod report;
mod result;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use flockmq::codec::{Protocol, QoS};

use crate::client::{Conn, Target};
use crate::result::TestResult;

#[derive(Parser)]
#[command(
    name = "flockmq-bench",
    about = "Closed-loop MQTT load generator for flockmq and other brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Broker address (loopback only: this tool is for local benchmarks).
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: SocketAddr,
    /// MQTT protocol version: 3.1.1 (also `311`, `4`) or 5.
    #[arg(long, default_value = "5", value_parser = parse_protocol)]
    protocol: Protocol,
}

/// Where subscribers connect when it is not where publishers do (cross-node forwarding).
#[derive(Args, Clone)]
struct Split {
    /// Broker address for subscribers (loopback only); default: the same as --broker.
    #[arg(long)]
    sub_broker: Option<SocketAddr>,
    /// When --sub-broker differs from --broker: longest wait (seconds) for a probe published on
    /// --broker to reach every subscriber before the run starts (routes between cluster nodes
    /// propagate asynchronously). 0 skips the probe.
    #[arg(long, default_value_t = 10.0)]
    route_wait: f64,
}

#[derive(Args, Clone)]
struct Timing {
    /// Seconds before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Longest wait (seconds) after the deadline for in-flight messages.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Payload bytes (at least 20: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// QoS 1/2 in-flight window per publisher.
    #[arg(long, default_value_t = 64)]
    window: u16,
    /// Most deliveries outstanding (published, not yet received) across the whole test.
    #[arg(long, default_value_t = 10_000)]
    max_lag: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput: N publishers → M subscribers, every subscriber receiving every message.
    Pubsub {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        split: Split,
        #[command(flatten)]
        timing: Timing,
        /// Test name (topics, client ids and the result's `test` field).
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        #[arg(long, default_value = "0", value_parser = parse_qos)]
        qos: QoS,
        /// Subscribe with one `+` wildcard filter instead of one filter per publisher topic.
        #[arg(long)]
        wildcard: bool,
    },
    /// Latency percentiles of a 1→1 stream published at a fixed rate.
    Latency {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        split: Split,
        #[command(flatten)]
        timing: Timing,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "0", value_parser = parse_qos)]
        qos: QoS,
        /// Messages per second.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
    },
    /// Broker RSS per idle connection (needs the broker's PID and enough file descriptors).
    Conns {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// The broker's process id (its /proc/PID/status VmRSS is read before and after).
        #[arg(long)]
        broker_pid: u32,
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Seconds to wait after the last CONNACK before reading RSS.
        #[arg(long, default_value_t = 1.0)]
        settle: f64,
    },
    /// Waits until the broker answers CONNECT (exit 1 after the timeout).
    Wait {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Joins per-broker JSON-lines files into a table (stdout) and one JSON file.
    Report {
        /// `NAME=FILE`, in column order; the ratio is first/second.
        #[arg(long = "broker", required = true)]
        brokers: Vec<String>,
        /// `KEY=VALUE` machine context, printed and stored.
        #[arg(long = "context")]
        context: Vec<String>,
        #[arg(long)]
        run_id: String,
        #[arg(long, default_value = "")]
        mode: String,
        /// Where to write the combined JSON.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "3.1.1" | "311" | "4" => Ok(Protocol::V311),
        "5" | "5.0" => Ok(Protocol::V5),
        _ => Err(format!("'{s}' is not 3.1.1 or 5")),
    }
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("'{s}' is not 0, 1 or 2"))
}

fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::V31 => "3.1",
        Protocol::V311 => "3.1.1",
        Protocol::V5 => "5",
    }
}

fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{what} {s} is not a duration"))
}

fn target(common: &Common) -> anyhow::Result<Target> {
    loopback_target(common.broker, common.protocol)
}

fn loopback_target(addr: SocketAddr, protocol: Protocol) -> anyhow::Result<Target> {
    if !addr.ip().is_loopback() {
        bail!("refusing to load {addr}: benchmarks target loopback only");
    }
    Ok(Target { addr, protocol })
}

/// The publishers' and the subscribers' targets, and the route wait when they differ.
fn targets(common: &Common, split: &Split) -> anyhow::Result<pubsub::Targets> {
    let publishers = target(common)?;
    let subscribers = loopback_target(split.sub_broker.unwrap_or(common.broker), common.protocol)?;
    if subscribers.addr == publishers.addr {
        return Ok(pubsub::Targets::single(publishers));
    }
    let route_wait = if split.route_wait > 0.0 {
        Some(seconds(split.route_wait, "route-wait")?)
    } else {
        None
    };
    Ok(pubsub::Targets {
        publishers,
        subscribers,
        route_wait,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text its parent already includes (our
/// error enums print their source inline, anyhow contexts do not).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Pubsub {
            common,
            split,
            timing,
            name,
            publishers,
            subscribers,
            qos,
            wildcard,
        } => {
            let spec = pubsub_spec(&timing, name, publishers, subscribers, qos, wildcard, None)?;
            let targets = targets(&common, &split)?;
            let shape = format!("{publishers}→{subscribers}{}", targets.label());
            let result = pubsub::run(targets, spec).await?;
            emit(result, &common, &shape)
        }
        Command::Latency {
            common,
            split,
            timing,
            name,
            qos,
            rate,
        } => {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be positive");
            }
            let spec = pubsub_spec(&timing, name, 1, 1, qos, false, Some(rate))?;
            let targets = targets(&common, &split)?;
            let shape = format!("1→1 at {rate} msg/s{}", targets.label());
            let result = pubsub::run(targets, spec).await?;
            emit(result, &common, &shape)
        }
        Command::Conns {
            common,
            count,
            broker_pid,
            concurrency,
            settle,
        } => {
            let spec = conns::Spec {
                count,
                broker_pid,
                concurrency,
                settle: seconds(settle, "settle")?,
            };
            let result = conns::run(target(&common)?, spec).await?;
            emit(result, &common, &format!("{count} idle"))
        }
        Command::Wait { common, timeout } => {
            wait(&target(&common)?, seconds(timeout, "timeout")?).await
        }
        Command::Report {
            brokers,
            context,
            run_id,
            mode,
            out,
        } => write_report(&brokers, &context, &run_id, &mode, &out),
    }
}

fn pubsub_spec(
    timing: &Timing,
    name: String,
    publishers: usize,
    subscribers: usize,
    qos: QoS,
    wildcard: bool,
    rate: Option<f64>,
) -> anyhow::Result<pubsub::Spec> {
    Ok(pubsub::Spec {
        name,
        publishers,
        subscribers,
        qos,
        wildcard,
        payload: timing.payload,
        window: timing.window.max(1),
        max_lag: timing.max_lag.max(1),
        warmup: seconds(timing.warmup, "warmup")?,
        duration: seconds(timing.duration, "duration")?,
        drain: seconds(timing.drain, "drain")?,
        rate,
        latency: rate.is_some(),
    })
}

/// Prints the human summary (stderr) and the JSON line (stdout).
fn emit(mut result: TestResult, common: &Common, shape: &str) -> anyhow::Result<ExitCode> {
    result.protocol = protocol_label(common.protocol).to_string();
    let figures: Vec<String> = result
        .figures
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f.name,
                report::format_value(f.value, &f.unit),
                f.unit
            )
        })
        .collect();
    eprintln!(
        "{:<18} MQTT {:<5} {:<20} {}",
        result.test,
        result.protocol,
        shape,
        figures.join(", ")
    );
    let count = |k: &str| result.details.get(k).and_then(serde_json::Value::as_u64);
    if let (Some(sent), Some(expected), Some(delivered), Some(lost), Some(ooo)) = (
        count("sent"),
        count("expected_deliveries"),
        count("delivered"),
        count("lost"),
        count("out_of_order_or_duplicate"),
    ) {
        let skipped = count("skipped_mid_stream").unwrap_or(0);
        let qos = count("qos").unwrap_or(0);
        let note = if qos == 0 {
            "QoS 0: loss allowed"
        } else if lost == 0 && ooo == 0 {
            "verified: nothing lost"
        } else {
            "LOSS OR DUPLICATES"
        };
        eprintln!(
            "{:<18} sent {sent}, received {delivered} of {expected} expected, lost {lost}, skipped mid-stream {skipped}, out of order/dup {ooo} ({note})",
            ""
        );
    }
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

async fn wait(target: &Target, timeout: Duration) -> anyhow::Result<ExitCode> {
    let deadline = clock::now() + timeout;
    loop {
        // A broker that accepts TCP but never answers CONNECT must not outlast the timeout.
        let attempt =
            tokio::time::timeout_at(deadline.into(), Conn::connect(target, "fmqb-wait", None));
        match attempt.await {
            Ok(Ok(conn)) => {
                conn.disconnect().await;
                return Ok(ExitCode::SUCCESS);
            }
            Ok(Err(_)) if clock::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => {
                eprintln!("broker at {} not ready: {e}", target.addr);
                return Ok(ExitCode::FAILURE);
            }
            Err(_) => {
                eprintln!("broker at {} not ready: no CONNACK in time", target.addr);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

fn split_pair(s: &str) -> anyhow::Result<(&str, &str)> {
    s.split_once('=')
        .with_context(|| format!("'{s}' is not KEY=VALUE"))
}

fn write_report(
    brokers: &[String],
    context: &[String],
    run_id: &str,
    mode: &str,
    out: &PathBuf,
) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::new();
    for spec in brokers {
        let (name, path) = split_pair(spec)?;
        // A broker that did not start has no file: it shows as n/a, not as an error.
        let text = std::fs::read_to_string(path).unwrap_or_default();
        runs.push(report::BrokerRun::parse(name, &text));
    }
    let mut ctx = std::collections::BTreeMap::new();
    for pair in context {
        let (k, v) = split_pair(pair)?;
        ctx.insert(k.to_string(), v.to_string());
    }
    let rows = report::rows(&runs);
    println!("run {run_id} ({mode})");
    for (k, v) in &ctx {
        println!("  {k}: {v}");
    }
    println!();
    print!("{}", report::table(&runs, &rows));
    let cluster = report::cluster_rows(&runs);
    if !cluster.is_empty() {
        println!(
            "\ncross-node forwarding, 1 publisher → 1 subscriber (ratio: node1→node3 over each single-node figure)"
        );
        print!("{}", report::cluster_table(&cluster));
    }
    let doc = serde_json::json!({
        "run_id": run_id,
        "mode": mode,
        "context": ctx,
        "brokers": runs,
        "comparison": rows,
        "cluster": cluster,
    });
    std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("\nresults: {}", out.display());
    Ok(ExitCode::SUCCESS)
}
