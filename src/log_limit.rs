//! A log-line rate limiter: at most one line per reason per period, counting the rest, so a noisy
//! peer (or an attacker) cannot flood the log. Used by multicast discovery for dropped datagrams
//! and by the admin endpoint for refused requests. It reads no clock: callers pass `now`.

use std::collections::BTreeMap;
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
}
