//! The idle-connection memory test: how much resident memory the broker gains per connected,
//! idle MQTT client.
//!
//! It owns opening many connections from source addresses spread over 127.0.0.0/8 (one address
//! has only ~28,000 ephemeral ports, and TIME_WAIT from earlier runs eats into them) and reading
//! the broker's VmRSS from /proc. It only reads the broker's process; it never signals it.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::client::{ClientError, Conn, Target};
use crate::clock;
use crate::result::{Better, TestResult};

/// What to run; built from the command line.
#[derive(Debug, Clone)]
pub struct Spec {
    /// How many idle connections to open.
    pub count: usize,
    /// The broker's process id, whose /proc/PID/status is read.
    pub broker_pid: u32,
    /// Connection handshakes in progress at once (keeps the listen backlog from overflowing).
    pub concurrency: usize,
    /// Pause after the last CONNACK before reading RSS, so the broker finishes its bookkeeping.
    pub settle: Duration,
}

/// Why the test could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ConnsError {
    /// /proc/PID/status could not be read or had no VmRSS line.
    #[error("cannot read VmRSS of pid {pid}: {reason}")]
    Rss { pid: u32, reason: String },
    /// A connection failed (file descriptor limit, broker refusal...).
    #[error("connection {index}: {source}")]
    Client { index: usize, source: ClientError },
}

/// The source address for connection `index`: 127.0.{1..=250}.{1..=250}, one address per
/// connection for the first 62,500 connections, so no address runs short of ports.
pub fn source_address(index: usize) -> Ipv4Addr {
    let host = (index % 250) as u8 + 1;
    let net = ((index / 250) % 250) as u8 + 1;
    Ipv4Addr::new(127, 0, net, host)
}

/// Parses the VmRSS line of a /proc/PID/status text, in kB.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(value)
}

fn read_rss_kb(pid: u32) -> Result<u64, ConnsError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| ConnsError::Rss {
        pid,
        reason: e.to_string(),
    })?;
    parse_vm_rss_kb(&text).ok_or_else(|| ConnsError::Rss {
        pid,
        reason: "no VmRSS line".into(),
    })
}

/// Opens `spec.count` idle connections, measures the broker's RSS growth, then closes them.
pub async fn run(target: Target, spec: Spec) -> Result<TestResult, ConnsError> {
    let before_kb = read_rss_kb(spec.broker_pid)?;
    let started = clock::now();
    let mut conns = Vec::with_capacity(spec.count);
    let mut pending = JoinSet::new();
    let mut next = 0usize;
    while conns.len() < spec.count {
        while next < spec.count && pending.len() < spec.concurrency.max(1) {
            let index = next;
            next += 1;
            pending.spawn_local(async move {
                let id = format!("fmqb-idle-{index}");
                let conn = Conn::connect(&target, &id, Some(source_address(index))).await;
                (index, conn)
            });
        }
        match pending.join_next().await {
            Some(Ok((_, Ok(conn)))) => conns.push(conn),
            Some(Ok((index, Err(source)))) => return Err(ConnsError::Client { index, source }),
            Some(Err(join)) => {
                return Err(ConnsError::Client {
                    index: next,
                    source: ClientError::Io(std::io::Error::other(join.to_string())),
                });
            }
            None => break,
        }
    }
    let connect_secs = clock::now().duration_since(started).as_secs_f64();
    tokio::time::sleep(spec.settle).await;
    let after_kb = read_rss_kb(spec.broker_pid)?;
    let count = conns.len();
    // Dropping closes the sockets; the broker sees EOF, as from clients that went away.
    drop(conns);

    let grown_bytes = after_kb.saturating_sub(before_kb) * 1024;
    let mut result = TestResult::new("idle-conns", "");
    result.figure(
        "RSS/conn",
        grown_bytes as f64 / count.max(1) as f64,
        "bytes",
        Better::Lower,
    );
    result.detail("connections", count);
    result.detail("rss_before_kb", before_kb);
    result.detail("rss_after_kb", after_kb);
    result.detail("connect_seconds", connect_secs);
    result.detail("connects_per_s", count as f64 / connect_secs.max(1e-9));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kb() {
        let status = "Name:\tmosquitto\nVmPeak:\t  9000 kB\nVmRSS:\t    6244 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kb(status), Some(6244));
    }

    #[test]
    fn status_without_vm_rss_is_none() {
        // A zombie process has no VmRSS line.
        assert_eq!(parse_vm_rss_kb("Name:\tx\nState:\tZ (zombie)\n"), None);
    }

    #[test]
    fn source_addresses_are_distinct_loopback_hosts() {
        let first = source_address(0);
        assert_eq!(first, Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(source_address(249), Ipv4Addr::new(127, 0, 1, 250));
        assert_eq!(source_address(250), Ipv4Addr::new(127, 0, 2, 1));
        let distinct: std::collections::BTreeSet<_> = (0..10_000).map(source_address).collect();
        assert_eq!(distinct.len(), 10_000);
        assert!(distinct.iter().all(|a| a.is_loopback()));
    }
}
