//! The node's log lines captured in a test: a `tracing` subscriber for the test's own thread (the
//! in-process node's tasks run on it with the current-thread runtime), read back as text.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often `wait_for` looks again.
const POLL: Duration = Duration::from_millis(20);

/// Log lines written while a test runs.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Installs a capturing subscriber with `filter` (e.g. `flockmq=debug`) for this thread.
    pub fn capture(filter: &str) -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines containing `part`.
    pub fn count(&self, part: &str) -> usize {
        self.text().lines().filter(|l| l.contains(part)).count()
    }

    /// Waits (up to `super::WAIT`) until a line contains every one of `parts`.
    pub async fn wait_for(&self, parts: &[&str]) -> String {
        let polls = super::WAIT.as_millis() / POLL.as_millis();
        for _ in 0..polls {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_owned();
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("no log line with {parts:?} in\n{}", self.text());
    }
}
