//! Logging what peers and clients send, safely: a log-line rate limiter (at most one line per
//! reason per period, counting the rest) and the truncation of every peer-supplied string put in
//! a log line, so a noisy peer (or an attacker) cannot flood the log. Used by the cluster core
//! (links, discovery) and the admin endpoint. Pure: no clock (callers pass `now`), no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Lets one line per reason through every `every`; counts what it holds back. Holds one entry per
/// reason seen, so `K` should be a small closed set (an enum).
#[derive(Debug, Clone)]
pub struct LogLimiter<K: Ord> {
    every: Duration,
    reasons: BTreeMap<K, Admitted>,
}

#[derive(Debug, Clone, Copy)]
struct Admitted {
    last: Duration,
    suppressed: u64,
}

impl<K: Ord> LogLimiter<K> {
    /// A limiter letting one line per reason through every `every`.
    pub fn new(every: Duration) -> LogLimiter<K> {
        LogLimiter {
            every,
            reasons: BTreeMap::new(),
        }
    }

    /// Whether an event for `reason` at `now` (any monotonic origin) should be logged; if so,
    /// how many were suppressed since the last line for that reason.
    pub fn admit(&mut self, reason: K, now: Duration) -> Option<u64> {
        match self.reasons.get_mut(&reason) {
            Some(entry) if entry.last + self.every > now => {
                entry.suppressed += 1;
                None
            }
            Some(entry) => {
                entry.last = now;
                Some(std::mem::take(&mut entry.suppressed))
            }
            None => {
                self.reasons.insert(
                    reason,
                    Admitted {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Longest peer-supplied string (in chars) a log line shows; the rest is summarised.
pub const LOG_TEXT_CHARS: usize = 64;

/// A peer-supplied string for a log line: at most [`LOG_TEXT_CHARS`] chars, then
/// `…(N bytes)` giving the full length, with control characters escaped.
#[derive(Clone, Copy)]
pub struct PeerText<'a>(pub &'a str);

impl fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(LOG_TEXT_CHARS) {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        if chars.next().is_some() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Shorthand for [`PeerText`].
pub fn peer_text(s: &str) -> PeerText<'_> {
    PeerText(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_one_line_per_reason_per_period_and_counts_the_rest() {
        let mut log = LogLimiter::new(Duration::from_secs(10));
        let s = Duration::from_secs;
        assert_eq!(log.admit("cookie", s(0)), Some(0));
        assert_eq!(log.admit("cookie", s(1)), None);
        assert_eq!(log.admit("cookie", s(9)), None);
        // Another reason has its own budget.
        assert_eq!(log.admit("malformed", s(9)), Some(0));
        assert_eq!(log.admit("cookie", s(10)), Some(2));
        assert_eq!(log.admit("cookie", s(11)), None);
        assert_eq!(log.admit("cookie", s(25)), Some(1));
    }

    #[test]
    fn long_peer_strings_are_cut_with_their_length_and_controls_escaped() {
        assert_eq!(peer_text("n2@10.0.0.2").to_string(), "n2@10.0.0.2");
        let long = "x".repeat(1_000_000);
        let shown = peer_text(&long).to_string();
        assert_eq!(shown, format!("{}…(1000000 bytes)", "x".repeat(64)));
        assert_eq!(peer_text("a\nb\u{1b}").to_string(), "a\\nb\\u{1b}");
        let exact = "é".repeat(64);
        assert_eq!(peer_text(&exact).to_string(), exact);
    }
}
