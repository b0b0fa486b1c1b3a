//! The built `flockmq` binary as a broker process: started with `flockmq start` on ephemeral
//! ports, its MQTT address read from its log, killed on drop; plus its memory figures from
//! /proc for the tests that print them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_flockmq");

/// A broker process started with `flockmq start`, killed on drop.
pub struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Broker {
    /// Starts the binary on 127.0.0.1 with ephemeral ports and `extra` `--set KEY=VALUE`s.
    pub fn start(extra: &[&str]) -> Broker {
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
        let mut child = cmd
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flockmq binary runs");
        let addr = listen_addr(&mut child).expect("broker prints its MQTT address");
        Broker { child, addr }
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

/// Reads the broker's log (stdout and stderr) until the line announcing the MQTT listener.
fn listen_addr(child: &mut Child) -> Option<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    let streams: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take()?),
        Box::new(child.stderr.take()?),
    ];
    for s in streams {
        let tx = tx.clone();
        #[allow(clippy::disallowed_methods)] // test harness, not broker code
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening for MQTT on ").nth(1) {
                    let addr = rest
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .next()
                        .unwrap_or("");
                    let _ = tx.send(addr.parse::<SocketAddr>().ok());
                }
            }
        });
    }
    rx.recv_timeout(Duration::from_secs(30)).ok().flatten()
}
