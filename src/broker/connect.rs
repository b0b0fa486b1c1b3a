//! Connection and session lifecycle: CONNECT (validation, client id assignment, takeover,
//! resume), DISCONNECT in both directions, connection loss, wills and the end of sessions.
//!
//! It never routes by itself: wills are handed to the publish path like any other message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use rand::Rng;

use super::inflight::OutState;
use super::session::{Delivery, Link, Message, Session, SessionKey};
use super::timers::Timer;
use super::{Action, Broker, ConnId};
use crate::codec::{
    ConnAck, ConnAckProperties, Connect, Disconnect, LastWill, Packet, QoS, ReasonCode,
};
use crate::topic::{SubscriptionFilter, parse_subscription_filter, valid_topic_name};

impl Broker {
    pub(super) fn handle_connect(&mut self, conn: ConnId, connect: Connect, now: Duration) {
        let protocol = connect.protocol;
        if let Some(c) = self.connections.get_mut(&conn) {
            c.protocol = protocol;
        }
        if let Err(code) = self.check_connect(&connect) {
            tracing::debug!(?conn, ?code, "CONNECT refused");
            self.refuse_connect(conn, code);
            return;
        }
        let props = &connect.properties;
        let clean_start = connect.clean_start;
        let mut assigned = None;
        let client_id = if connect.client_id.is_empty() {
            let id = self.assign_client_id();
            assigned = Some(id.clone());
            id
        } else {
            // A copy, so the session does not pin the CONNECT frame.
            ByteString::from(&*connect.client_id)
        };
        let requested_expiry = match (protocol.is_v5(), clean_start) {
            (true, _) => props.session_expiry_interval.unwrap_or(0),
            (false, true) => 0,
            (false, false) => u32::MAX,
        };
        let expiry = requested_expiry.min(self.config.max_session_expiry);
        let keep_alive = self.config.server_keepalive.unwrap_or(connect.keep_alive);

        let mut resumed = None;
        if let Some(key) = self.sessions.lookup(&client_id) {
            self.take_over(key, clean_start);
            if clean_start {
                self.end_session(key, now);
            } else {
                resumed = Some(key);
            }
        }
        let session_present = resumed.is_some();
        let key = match resumed {
            Some(key) => key,
            None => self.sessions.insert(Session::new(client_id)),
        };
        self.epoch += 1;
        let epoch = self.epoch;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.epoch = epoch;
        session.protocol = protocol;
        session.clean_start = clean_start;
        session.keep_alive = keep_alive;
        session.expiry_interval = expiry;
        // A will left over from the previous connection (will delay running) is cancelled by
        // the reconnect, as the spec requires.
        session.will = connect.will;
        session.link = Some(Link {
            conn,
            protocol,
            receive_maximum: props.receive_maximum.unwrap_or(u16::MAX),
            max_packet_size: props.maximum_packet_size,
            alias_max: if protocol.is_v5() {
                props.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            aliases: BTreeMap::new(),
            alias_bytes: 0,
            alias_budget: self.config.max_topic_alias_bytes,
            retry_armed: false,
            unwritten: 0,
            output_window: self.config.conn_output_window,
            paused: false,
        });
        if let Some(c) = self.connections.get_mut(&conn) {
            c.session = Some(key);
            c.keep_alive = keep_alive;
            c.connect_expiry_zero = requested_expiry == 0;
        }

        let mut ack = ConnAck {
            session_present,
            ..ConnAck::default()
        };
        if protocol.is_v5() {
            ack.properties = self.connack_properties(assigned, requested_expiry, expiry);
            if self.config.server_keepalive.is_some() {
                ack.properties.server_keep_alive = Some(keep_alive);
            }
        }
        self.send(conn, Packet::ConnAck(ack));
        if keep_alive > 0 {
            self.timers
                .insert((now + keepalive_grace(keep_alive), Timer::Keepalive(conn)));
        }
        if let Some(session) = self.sessions.get_mut(key) {
            if session_present {
                session.resend_inflight(&mut self.out, now, None);
            }
            session.pump(&self.config, &mut self.out, now);
        }
        self.arm_retry(conn, now);
    }

    /// Everything that refuses a CONNECT before any session is touched.
    fn check_connect(&self, connect: &Connect) -> Result<(), ReasonCode> {
        let props = &connect.properties;
        if props.authentication_method.is_some() {
            return Err(ReasonCode::BadAuthenticationMethod);
        }
        if props.receive_maximum == Some(0) || props.maximum_packet_size == Some(0) {
            return Err(ReasonCode::ProtocolError);
        }
        if connect.client_id.len() > self.config.max_client_id_len {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        if connect.client_id.is_empty() && !connect.protocol.is_v5() && !connect.clean_start {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        if let Some(will) = &connect.will {
            if !valid_topic_name(&will.topic, self.config.max_topic_levels) {
                return Err(ReasonCode::TopicNameInvalid);
            }
            if will.qos > self.config.max_qos {
                return Err(ReasonCode::QoSNotSupported);
            }
            if will.retain && !self.config.retain_available {
                return Err(ReasonCode::RetainNotSupported);
            }
            // The will becomes a PUBLISH, whose Response Topic has no wildcards (MQTT-3.3.2-14).
            if will
                .properties
                .response_topic
                .as_deref()
                .is_some_and(|t| t.contains(['+', '#']))
            {
                return Err(ReasonCode::ProtocolError);
            }
        }
        Ok(())
    }

    fn connack_properties(
        &self,
        assigned: Option<ByteString>,
        requested_expiry: u32,
        expiry: u32,
    ) -> ConnAckProperties {
        let cfg = &self.config;
        ConnAckProperties {
            session_expiry_interval: (expiry != requested_expiry).then_some(expiry),
            receive_maximum: Some(cfg.max_inflight),
            maximum_qos: (cfg.max_qos < QoS::ExactlyOnce).then_some(cfg.max_qos),
            retain_available: (!cfg.retain_available).then_some(false),
            maximum_packet_size: Some(cfg.max_packet_size),
            assigned_client_identifier: assigned,
            topic_alias_maximum: (cfg.max_topic_alias > 0).then_some(cfg.max_topic_alias),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(true),
            shared_subscription_available: Some(true),
            ..ConnAckProperties::default()
        }
    }

    /// A client id no session uses, from the seeded RNG.
    fn assign_client_id(&mut self) -> ByteString {
        loop {
            let id = ByteString::from(format!("flockmq-{:016x}", self.rng.random::<u64>()));
            if self.sessions.lookup(&id).is_none() {
                return id;
            }
        }
    }

    /// CONNACK with an error code, then close.
    pub(super) fn refuse_connect(&mut self, conn: ConnId, code: ReasonCode) {
        let ack = ConnAck {
            reason_code: code,
            ..ConnAck::default()
        };
        self.send(conn, Packet::ConnAck(ack));
        self.close_unattached(conn);
    }

    /// Closes a connection that has no session (before or without a CONNECT).
    pub(super) fn close_unattached(&mut self, conn: ConnId) {
        if self.connections.remove(&conn).is_some() {
            self.out.actions.push_back(Action::Close { conn });
        }
    }

    /// Disconnects the live connection of `key` because a new CONNECT claims its client id.
    /// The old will is dropped when the session continues; when it ends (clean start) the will
    /// stays and `end_session` publishes it.
    pub(super) fn take_over(&mut self, key: SessionKey, clean_start: bool) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(link) = session.link.take() else {
            return;
        };
        if !clean_start {
            session.will = None;
        }
        tracing::debug!(client_id = %session.client_id, old = ?link.conn, "session taken over");
        self.connections.remove(&link.conn);
        if link.protocol.is_v5() {
            let d = Disconnect::new(ReasonCode::SessionTakenOver);
            self.out.actions.push_back(Action::Send {
                conn: link.conn,
                protocol: link.protocol,
                packet: Packet::Disconnect(d),
            });
        }
        self.out
            .actions
            .push_back(Action::Close { conn: link.conn });
    }

    /// Ends a connection that has a session: optional DISCONNECT (MQTT 5 only), Close, then
    /// the session is detached. `abnormal` means the will is due.
    pub(super) fn end_connection(
        &mut self,
        conn: ConnId,
        reason: Option<ReasonCode>,
        abnormal: bool,
        now: Duration,
    ) {
        let Some(c) = self.connections.remove(&conn) else {
            return;
        };
        if let Some(code) = reason
            && c.protocol.is_v5()
            && c.session.is_some()
        {
            self.out.actions.push_back(Action::Send {
                conn,
                protocol: c.protocol,
                packet: Packet::Disconnect(Disconnect::new(code)),
            });
        }
        self.out.actions.push_back(Action::Close { conn });
        if let Some(key) = c.session {
            self.detach(key, abnormal, now);
        }
    }

    /// The client broke the protocol: DISCONNECT with `code` (MQTT 5), close, will published.
    pub(super) fn protocol_violation(&mut self, conn: ConnId, code: ReasonCode, now: Duration) {
        tracing::debug!(?conn, ?code, "protocol violation");
        self.end_connection(conn, Some(code), true, now);
    }

    /// The session lost its connection: it now lives for its expiry interval, and its will is
    /// published now or after the will delay (only if `abnormal`).
    fn detach(&mut self, key: SessionKey, abnormal: bool, now: Duration) {
        self.epoch += 1;
        let epoch = self.epoch;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.link = None;
        session.epoch = epoch;
        if !abnormal {
            session.will = None;
        }
        let expiry = session.expiry_interval;
        if expiry == 0 {
            self.end_session(key, now);
            return;
        }
        let delay = session
            .will
            .as_ref()
            .map(|w| w.properties.will_delay_interval.unwrap_or(0));
        match delay {
            Some(0) => {
                if let Some(will) = session.will.take() {
                    self.publish_will(will, now);
                }
            }
            // A delay at or beyond the expiry is served by the session expiry timer.
            Some(delay) if delay < expiry => {
                let at = now + Duration::from_secs(u64::from(delay));
                self.timers.insert((at, Timer::WillDelay(key, epoch)));
            }
            _ => {}
        }
        if expiry != u32::MAX {
            let at = now + Duration::from_secs(u64::from(expiry));
            self.timers.insert((at, Timer::SessionExpiry(key, epoch)));
        }
    }

    /// Removes a (detached) session: its subscriptions go, its pending will is published.
    pub(super) fn end_session(&mut self, key: SessionKey, now: Duration) {
        let Some(session) = self.sessions.remove(key) else {
            return;
        };
        tracing::debug!(client_id = %session.client_id, "session ended");
        for filter in &session.subscriptions {
            self.remove_subscription(key, filter);
        }
        // After its subscriptions are gone, so the ending session is never chosen again. A QoS 2
        // message already PUBREC'd (Released) has reached the client: not owed.
        let mut session = session;
        let owed: Vec<Delivery> = session
            .inflight
            .take_all()
            .into_iter()
            .filter(|e| e.state != OutState::Released)
            .map(|e| e.delivery)
            .chain(session.queue.drain(..))
            .filter(|d| d.shared.is_some())
            .collect();
        if !owed.is_empty() {
            self.redistribute_shared(owed, now);
        }
        if let Some(will) = session.will {
            self.publish_will(will, now);
        }
    }

    /// Removes one subscription (as written by the client) from the tries.
    pub(super) fn remove_subscription(&mut self, key: SessionKey, filter: &str) {
        match parse_subscription_filter(filter, usize::MAX) {
            Some(SubscriptionFilter::Plain(f)) if self.subscriptions.remove(f, &key).is_some() => {
                self.note_route_removed(f);
            }
            Some(SubscriptionFilter::Plain(_)) => {}
            Some(SubscriptionFilter::Shared { group, filter: f }) => {
                let group = ByteString::from(group);
                if self.shared.remove(f, &(group.clone(), key)).is_some() {
                    self.note_route_removed(f);
                }
                let group_empty = self
                    .shared
                    .get(f)
                    .is_none_or(|entries| !entries.keys().any(|(g, _)| *g == group));
                if group_empty && let Some(groups) = self.shared_cursors.get_mut(f) {
                    groups.remove(&*group);
                    if groups.is_empty() {
                        self.shared_cursors.remove(f);
                    }
                }
            }
            None => {}
        }
    }

    /// Publishes a will as if its client had sent it.
    pub(super) fn publish_will(&mut self, will: LastWill, now: Duration) {
        let msg = Arc::new(Message::from_will(will, now));
        let version = self.store_retained(&msg, now);
        self.queue_forward(&msg, version);
        self.route(msg, None, now);
    }

    pub(super) fn handle_disconnect(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        d: Disconnect,
        now: Duration,
    ) {
        if let Some(requested) = d.properties.session_expiry_interval {
            let zero_at_connect = self
                .connections
                .get(&conn)
                .is_none_or(|c| c.connect_expiry_zero);
            if zero_at_connect && requested != 0 {
                self.protocol_violation(conn, ReasonCode::ProtocolError, now);
                return;
            }
            let cap = self.config.max_session_expiry;
            if let Some(session) = self.sessions.get_mut(key) {
                session.expiry_interval = requested.min(cap);
            }
        }
        let with_will = d.reason_code == ReasonCode::DisconnectWithWillMessage;
        self.end_connection(conn, None, with_will, now);
    }
}

/// How long a connection may stay silent: 1.5 times its keepalive.
pub(super) fn keepalive_grace(keep_alive: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive) * 1500)
}
