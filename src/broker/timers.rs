//! Broker timers: keepalive, will delay, session expiry and QoS retry, kept in one ordered set.
//!
//! Entries are never cancelled: each carries what it needs to tell whether it is still current
//! (the connection must still exist; the session epoch must be unchanged) and stale ones are
//! ignored when they fire. Keepalive entries are re-armed lazily instead of on every packet.

use std::time::Duration;

use super::connect::keepalive_grace;
use super::session::SessionKey;
use super::{Broker, ConnId};
use crate::codec::ReasonCode;

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Close the connection if it still has not sent CONNECT.
    ConnectTimeout(ConnId),
    /// Check whether the connection stayed silent too long.
    Keepalive(ConnId),
    /// Resend unacknowledged messages on a live connection.
    Retry(ConnId),
    /// Publish the will of a session detached at this epoch.
    WillDelay(SessionKey, u64),
    /// End a session detached at this epoch.
    SessionExpiry(SessionKey, u64),
}

impl Broker {
    pub(super) fn fire(&mut self, timer: Timer, now: Duration) {
        match timer {
            Timer::ConnectTimeout(conn) => {
                if self
                    .connections
                    .get(&conn)
                    .is_some_and(|c| c.session.is_none())
                {
                    tracing::debug!(?conn, "no CONNECT in time");
                    self.end_connection(conn, None, false, now);
                }
            }
            Timer::Keepalive(conn) => self.keepalive_check(conn, now),
            Timer::Retry(conn) => self.retry(conn, now),
            Timer::WillDelay(key, epoch) => {
                let Some(s) = self.sessions.get_mut(key) else {
                    return;
                };
                if s.epoch != epoch || s.link.is_some() {
                    return;
                }
                if let Some(will) = s.will.take() {
                    self.publish_will(will, now);
                }
            }
            Timer::SessionExpiry(key, epoch) => {
                let current = self
                    .sessions
                    .get(key)
                    .is_some_and(|s| s.epoch == epoch && s.link.is_none());
                if current {
                    self.end_session(key, now);
                }
            }
        }
    }

    fn keepalive_check(&mut self, conn: ConnId, now: Duration) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if c.keep_alive == 0 {
            return;
        }
        let deadline = c.last_activity + keepalive_grace(c.keep_alive);
        if deadline > now {
            self.timers.insert((deadline, Timer::Keepalive(conn)));
            return;
        }
        tracing::debug!(?conn, "keepalive timeout");
        self.end_connection(conn, Some(ReasonCode::KeepAliveTimeout), true, now);
    }

    /// Arms the retry timer of a live connection if retries are configured.
    pub(super) fn arm_retry(&mut self, conn: ConnId, now: Duration) {
        let interval = self.config.retry_interval;
        if interval.is_zero() {
            return;
        }
        let Some(key) = self.connections.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(link) = self.sessions.get_mut(key).and_then(|s| s.link.as_mut()) else {
            return;
        };
        if !link.retry_armed {
            link.retry_armed = true;
            self.timers.insert((now + interval, Timer::Retry(conn)));
        }
    }

    fn retry(&mut self, conn: ConnId, now: Duration) {
        let interval = self.config.retry_interval;
        let Some(key) = self.connections.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.resend_inflight(&mut self.out, now, Some(now.saturating_sub(interval)));
        // Entries too large for the client were dropped: their slots go to queued messages.
        s.pump(&self.config, &mut self.out, now);
        let next = s
            .inflight
            .oldest_send()
            .map_or(now, |t| t.max(now.saturating_sub(interval)))
            + interval;
        self.timers.insert((next, Timer::Retry(conn)));
    }
}
