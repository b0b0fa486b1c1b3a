//! The `flockmq` command line: parses arguments, loads the config and calls into the library.
//! No broker or cluster logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use flockmq::admin::ctl;
use flockmq::config::Config;
use flockmq::net::TokioNet;

/// Exit code of a rejected configuration.
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "flockmq",
    version,
    about = "A clustered MQTT 3.1.1 / 5.0 broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground until SIGINT/SIGTERM.
    Start(ConfigArgs),
    /// Validate the configuration and print the effective `key = value` lines.
    CheckConfig(ConfigArgs),
    /// Ask a running node through its admin endpoint.
    Ctl(CtlArgs),
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// The config file (`key = value` lines); without it the embedded defaults apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides one key, after the file and FLOCKMQ_* variables (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, flockmq::config::ConfigError> {
        Config::load(self.config.as_deref(), std::env::vars(), &self.sets)
    }
}

#[derive(Debug, Args)]
struct CtlArgs {
    /// Find the admin endpoint (and token) in this config file.
    #[arg(long, value_name = "FILE", conflicts_with = "admin")]
    config: Option<PathBuf>,
    /// The admin endpoint address, instead of reading a config.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Bearer token for the admin endpoint (default: admin.token of the config).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Client sessions.
    Clients {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// The cluster route table.
    Routes {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Print the node's Prometheus metrics.
    Metrics,
}

#[derive(Debug, Subcommand)]
enum ListCommand {
    /// List them.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Print running and stopped nodes.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join the cluster NODE belongs to.
    Join { node: String },
    /// Leave the cluster.
    Leave,
    /// Remove a (stopped) NODE from the cluster.
    ForceLeave { node: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => start(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Ctl(args) => ctl_command(&args),
    }
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    match args.load() {
        Ok(config) => {
            print!("{}", config.render());
            // Warnings go to stderr so stdout stays a config file that parses back.
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

fn start(args: &ConfigArgs) -> ExitCode {
    let config = match args.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let log = init_tracing(&config.log_level);
    match run_node(config, args, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flockmq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter of the running process, replaceable on SIGHUP.
struct LogControl {
    reload: Option<tracing_subscriber::reload::Handle<EnvFilter, FmtFormatter>>,
    /// `RUST_LOG` is set: it wins over `log.level`, also after a reload.
    from_env: bool,
}

type EnvFilter = tracing_subscriber::EnvFilter;
type FmtFormatter = tracing_subscriber::fmt::Formatter<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    fn() -> std::io::Stderr,
>;

/// Logs go to stderr so stdout carries only the startup line.
fn init_tracing(level: &str) -> LogControl {
    let from_env = EnvFilter::try_from_default_env().ok();
    let is_env = from_env.is_some();
    let filter = from_env
        .or_else(|| flockmq::config::log_env_filter(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // No colour codes in log files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
        .with_ansi(ansi)
        .with_filter_reloading();
    let reload = builder.reload_handle();
    let installed = builder.try_init().is_ok();
    LogControl {
        reload: installed.then_some(reload),
        from_env: is_env,
    }
}

fn run_node(config: Config, args: &ConfigArgs, log: &LogControl) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let node = flockmq::server::start(TokioNet::new(), config.clone()).await?;
        println!("{}", node.startup_line());
        let mut running = config;
        let mut signals = Signals::new().context("cannot wait for signals")?;
        loop {
            match signals.next().await {
                Signal::Stop => break,
                Signal::Reload => reload(&mut running, args, log),
            }
        }
        tracing::info!("shutting down");
        node.shutdown().await;
        Ok(())
    })
}

/// SIGHUP: reads the configuration again (the same file, `FLOCKMQ_*` variables and `--set`s) and
/// applies what can change while running, `log.level` (unless `RUST_LOG` is set); every other
/// changed key is logged as taking effect at the next start. A configuration that no longer
/// loads is logged and ignored: the node keeps running as it was.
fn reload(running: &mut Config, args: &ConfigArgs, log: &LogControl) {
    let new = match args.load() {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded, the node keeps its settings: {e}");
            return;
        }
    };
    let lines = |c: &Config| -> std::collections::BTreeMap<String, String> {
        c.render()
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let (old_keys, new_keys) = (lines(running), lines(&new));
    let mut applied = Vec::new();
    for (key, value) in &new_keys {
        let before = old_keys.get(key).map_or("", String::as_str);
        if before == value {
            continue;
        }
        if key == "log.level" {
            match (&log.reload, log.from_env) {
                (_, true) => tracing::warn!(
                    "SIGHUP: log.level = {value} not applied: RUST_LOG is set and wins"
                ),
                (Some(handle), false) => {
                    let filter = flockmq::config::log_env_filter(value);
                    if filter.is_ok_and(|f| handle.reload(f).is_ok()) {
                        running.log_level.clone_from(&new.log_level);
                        applied.push(format!("{key} = {value}"));
                    } else {
                        tracing::warn!("SIGHUP: log.level = {value} could not be applied");
                    }
                }
                (None, false) => {}
            }
        } else {
            tracing::warn!(
                "SIGHUP: {key} changed from {before} to {value}: takes effect at the next start"
            );
        }
    }
    if applied.is_empty() {
        tracing::info!("SIGHUP: configuration reloaded, nothing to apply");
    } else {
        tracing::info!(
            "SIGHUP: configuration reloaded, applied {}",
            applied.join(", ")
        );
    }
}

enum Signal {
    /// SIGINT or SIGTERM: graceful stop.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// The signals the node obeys, registered once at start.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = self.term.recv() => Signal::Stop,
                _ = self.hup.recv() => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

fn ctl_command(args: &CtlArgs) -> ExitCode {
    match run_ctl(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_ctl(args: &CtlArgs) -> anyhow::Result<()> {
    let (addr, token) = match args.admin {
        Some(addr) => (addr, args.token.clone()),
        None => {
            let config = Config::load(args.config.as_deref(), std::env::vars(), &[])?;
            (
                ctl::admin_target(&config)?,
                args.token.clone().or(config.admin.token),
            )
        }
    };
    let token = token.as_deref();
    match &args.command {
        CtlCommand::Clients {
            command: ListCommand::List { json },
        } => {
            let body = ctl::get(addr, "/api/v1/clients", token)?;
            if *json {
                println!("{}", body.trim_end());
            } else {
                print!("{}", ctl::clients_table(&ctl::parse_clients(&body)?));
            }
        }
        CtlCommand::Metrics => print!("{}", ctl::get(addr, "/metrics", token)?),
        CtlCommand::Routes {
            command: ListCommand::List { json },
        } => {
            let body = ctl::get(addr, "/api/v1/routes", token)?;
            if *json {
                println!("{}", body.trim_end());
            } else {
                print!("{}", ctl::routes_table(&ctl::parse_routes(&body)?));
            }
        }
        CtlCommand::Cluster { command } => cluster_command(addr, token, command)?,
    }
    Ok(())
}

/// The cluster commands, printing what EMQX prints (DESIGN §2).
fn cluster_command(
    addr: SocketAddr,
    token: Option<&str>,
    command: &ClusterCommand,
) -> anyhow::Result<()> {
    /// The reason of a refused command: the endpoint's text for a 400, else the error itself.
    fn reason(e: ctl::CtlError) -> String {
        match e {
            ctl::CtlError::Status { status: 400, body } => body,
            other => other.to_string(),
        }
    }
    match command {
        ClusterCommand::Status { json } => {
            let body = ctl::get(addr, "/api/v1/cluster/status", token)?;
            let status = ctl::parse_cluster_status(&body)?;
            if *json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                println!("{}", status.render());
            }
        }
        ClusterCommand::Join { node } => {
            let body = serde_json::json!({ "node": node });
            match ctl::post(addr, "/api/v1/cluster/join", &body, token) {
                Ok(_) => println!("Join the cluster successfully."),
                Err(e) => anyhow::bail!("Failed to join the cluster: {}", reason(e)),
            }
        }
        ClusterCommand::Leave => {
            let body = serde_json::json!({});
            match ctl::post(addr, "/api/v1/cluster/leave", &body, token) {
                Ok(_) => println!("Leave the cluster successfully."),
                Err(e) => anyhow::bail!("Failed to leave the cluster: {}", reason(e)),
            }
        }
        ClusterCommand::ForceLeave { node } => {
            let body = serde_json::json!({ "node": node });
            match ctl::post(addr, "/api/v1/cluster/force-leave", &body, token) {
                Ok(_) => println!("Remove the node from cluster successfully."),
                Err(e) => anyhow::bail!("Failed to remove the node from cluster: {}", reason(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("flockmq").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn start_takes_a_config_file_and_repeated_sets() {
        let cli = parse(&[
            "start",
            "--config",
            "n1.conf",
            "--set",
            "node.name=n1@127.0.0.1",
            "--set",
            "a=b",
        ]);
        let Command::Start(args) = cli.command else {
            panic!("not start")
        };
        assert_eq!(args.config, Some(PathBuf::from("n1.conf")));
        assert_eq!(
            args.sets,
            vec!["node.name=n1@127.0.0.1".to_string(), "a=b".to_string()]
        );
        let Command::Start(args) = parse(&["start"]).command else {
            panic!("not start")
        };
        assert_eq!((args.config, args.sets.len()), (None, 0));
    }

    #[test]
    fn check_config_takes_the_same_arguments() {
        let Command::CheckConfig(args) = parse(&["check-config", "--config", "x.conf"]).command
        else {
            panic!("not check-config")
        };
        assert_eq!(args.config, Some(PathBuf::from("x.conf")));
    }

    #[test]
    fn ctl_clients_list_with_admin_address_and_json() {
        let Command::Ctl(args) = parse(&[
            "ctl",
            "--admin",
            "127.0.0.1:18083",
            "clients",
            "list",
            "--json",
        ])
        .command
        else {
            panic!("not ctl")
        };
        assert_eq!(args.admin, Some("127.0.0.1:18083".parse().unwrap()));
        assert!(matches!(
            args.command,
            CtlCommand::Clients {
                command: ListCommand::List { json: true }
            }
        ));
    }

    #[test]
    fn ctl_cluster_subcommands_parse() {
        let Command::Ctl(args) = parse(&["ctl", "cluster", "join", "n2@127.0.0.2"]).command else {
            panic!()
        };
        assert!(
            matches!(args.command, CtlCommand::Cluster { command: ClusterCommand::Join { ref node } } if node == "n2@127.0.0.2")
        );
        let Command::Ctl(args) =
            parse(&["ctl", "--config", "c", "cluster", "force-leave", "n3@h"]).command
        else {
            panic!()
        };
        assert!(matches!(
            args.command,
            CtlCommand::Cluster {
                command: ClusterCommand::ForceLeave { .. }
            }
        ));
        let Command::Ctl(args) = parse(&["ctl", "cluster", "status", "--json"]).command else {
            panic!()
        };
        assert!(matches!(
            args.command,
            CtlCommand::Cluster {
                command: ClusterCommand::Status { json: true }
            }
        ));
        assert!(matches!(
            parse(&["ctl", "cluster", "leave"]).command,
            Command::Ctl(_)
        ));
        assert!(matches!(
            parse(&["ctl", "metrics"]).command,
            Command::Ctl(_)
        ));
        assert!(matches!(
            parse(&["ctl", "routes", "list"]).command,
            Command::Ctl(_)
        ));
    }

    #[test]
    fn ctl_rejects_config_and_admin_together_and_bad_addresses() {
        assert!(
            Cli::try_parse_from([
                "flockmq",
                "ctl",
                "--config",
                "c",
                "--admin",
                "127.0.0.1:1",
                "metrics"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["flockmq", "ctl", "--admin", "localhost", "metrics"]).is_err()
        );
        assert!(Cli::try_parse_from(["flockmq", "ctl", "cluster", "join"]).is_err());
        assert!(Cli::try_parse_from(["flockmq", "bogus"]).is_err());
    }

    #[test]
    fn cluster_join_reports_an_unreachable_admin_endpoint_as_a_failed_join() {
        let Command::Ctl(args) = parse(&[
            "ctl",
            "--admin",
            "127.0.0.1:1",
            "cluster",
            "join",
            "n2@127.0.0.2",
        ])
        .command
        else {
            panic!()
        };
        let err = run_ctl(&args).unwrap_err().to_string();
        assert!(
            err.starts_with("Failed to join the cluster: cannot reach the admin endpoint"),
            "{err}"
        );
    }
}
