//! The built `flockmq` binary as a broker process: started with `flockmq start` on ephemeral
//! ports, its MQTT address read from its log, its log kept for the test to wait on, killed on
//! drop; plus its memory figures from /proc for the tests that print them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_flockmq");

/// A broker process started with `flockmq start`, killed on drop.
pub struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Broker {
    /// Starts the binary on 127.0.0.1 with ephemeral ports and `extra` `--set KEY=VALUE`s,
    /// logging at `RUST_LOG=info`.
    pub fn start(extra: &[&str]) -> Broker {
        let mut cmd = Broker::command(extra);
        cmd.env("RUST_LOG", "info");
        Broker::spawn(cmd)
    }

    /// `flockmq start` on 127.0.0.1 with ephemeral ports, a fresh data directory and `extra`
    /// `--set KEY=VALUE`s, for a test to add to (a `--config` file, the environment).
    pub fn command(extra: &[&str]) -> Command {
        let data = super::unique_data_dir();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "start",
            "--set",
            "listener.tcp.bind=127.0.0.1:0",
            "--set",
            "admin.bind=127.0.0.1:0",
            "--set",
            "cluster.port=0",
        ])
        .arg("--set")
        .arg(format!("node.data_dir={data}"));
        for e in extra {
            cmd.args(["--set", e]);
        }
        cmd.env("NO_COLOR", "1");
        cmd
    }

    /// Runs `cmd` and waits for its MQTT address.
    pub fn spawn(mut cmd: Command) -> Broker {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flockmq binary runs");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr, readers) = listen_addr(&mut child, &log);
        let addr = addr.expect("broker prints its MQTT address");
        Broker {
            child,
            addr,
            log,
            readers,
        }
    }

    /// Kills the process and returns everything it wrote (stdout and stderr lines).
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.log_lines()
    }

    /// Waits (up to 30 s) for a log line containing every one of `parts`, and returns it.
    pub async fn wait_for_log(&self, parts: &[&str]) -> String {
        for _ in 0..1500 {
            if let Some(line) = self
                .log_lines()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no log line with {parts:?} in\n{}",
            self.log_lines().join("\n")
        );
    }

    /// Every line the process wrote so far (stdout and stderr).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` (`HUP`, `TERM`...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// A `Vm*` figure of the process in KiB (`VmRSS` now, `VmHWM` its peak), from
    /// /proc/PID/status; None where there is no /proc.
    pub fn vm_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (for a key that must be known before the node starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Keeps the broker's log (stdout and stderr) in `log` and returns the address of the line
/// announcing the MQTT listener.
fn listen_addr(
    child: &mut Child,
    log: &Arc<Mutex<Vec<String>>>,
) -> (Option<SocketAddr>, Vec<std::thread::JoinHandle<()>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut streams: Vec<Box<dyn std::io::Read + Send>> = Vec::new();
    if let Some(out) = child.stdout.take() {
        streams.push(Box::new(out));
    }
    if let Some(err) = child.stderr.take() {
        streams.push(Box::new(err));
    }
    let mut readers = Vec::new();
    for s in streams {
        let tx = tx.clone();
        let log = Arc::clone(log);
        #[allow(clippy::disallowed_methods)] // test harness, not broker code
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("listening for MQTT on ").nth(1) {
                    let addr = rest
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .next()
                        .unwrap_or("");
                    let _ = tx.send(addr.parse::<SocketAddr>().ok());
                }
            }
        }));
    }
    let addr = rx.recv_timeout(Duration::from_secs(30)).ok().flatten();
    (addr, readers)
}
