//! Inbound PUBLISH / PUBREL and the fan-out of a message to sessions: plain subscriptions
//! (one delivery per session, merged over overlapping filters) and shared groups (one member
//! per group, round-robin).
//!
//! The fan-out reuses the broker's scratch vectors; it allocates only the shared message and, per
//! delivery, the subscription identifier list when there is one.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use super::RetainVersion;
use super::session::{Delivery, Message, SessionKey, SubOptions};
use super::{Broker, ConnId};
use crate::codec::{Ack, Packet, Publish, QoS, ReasonCode};
use crate::topic::valid_topic_name;

/// One (session, subscription) pair matched by a publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Match {
    key: SessionKey,
    opts: SubOptions,
}

impl Broker {
    pub(super) fn handle_publish(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        mut p: Publish,
        now: Duration,
    ) {
        self.out.metrics.messages_in[p.qos as usize] += 1;
        if let Err(code) = self.check_publish(conn, &mut p) {
            self.protocol_violation(conn, code, now);
            return;
        }
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let v5 = session.protocol.is_v5();
        let packet_id = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => 0,
            (_, Some(id)) => id,
            (_, None) => {
                self.protocol_violation(conn, ReasonCode::ProtocolError, now);
                return;
            }
        };
        if p.qos == QoS::ExactlyOnce {
            if session.incoming_qos2.contains(&packet_id) {
                // A resent QoS 2 PUBLISH: acknowledge again, never deliver twice.
                self.send(conn, Packet::PubRec(Ack::new(packet_id)));
                return;
            }
            // MQTT 5 announces a Receive Maximum and enforces it. MQTT 3.1.x has none: a
            // client may have every packet id awaiting PUBREL (the set is bounded by the 16-bit
            // id space), and it is not disconnected for a burst.
            if v5 && session.incoming_qos2.len() >= usize::from(self.config.max_inflight) {
                self.protocol_violation(conn, ReasonCode::ReceiveMaximumExceeded, now);
                return;
            }
        }
        let qos = p.qos;
        let msg = Arc::new(Message::from_publish(p, now));
        let version = self.store_retained(&msg, now);
        self.queue_forward(&msg, version);
        let matched = self.route(msg, Some(key), now);
        let mut ack = Ack::new(packet_id);
        // A clustered node cannot tell whether another node has subscribers: no 0x10 then.
        if v5 && matched == 0 && !self.clustered {
            ack.reason_code = ReasonCode::NoMatchingSubscribers;
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(conn, Packet::PubAck(ack)),
            QoS::ExactlyOnce => {
                if let Some(s) = self.sessions.get_mut(key) {
                    s.incoming_qos2.insert(packet_id);
                }
                self.send(conn, Packet::PubRec(ack));
            }
        }
    }

    /// Validates a PUBLISH and resolves its topic alias; the error is the DISCONNECT reason.
    fn check_publish(&mut self, conn: ConnId, p: &mut Publish) -> Result<(), ReasonCode> {
        let cfg = &self.config;
        // Subscription Identifiers travel server -> client only (MQTT-3.3.4-6), and a Response
        // Topic is a topic name, so without wildcards (MQTT-3.3.2-14).
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(ReasonCode::ProtocolError);
        }
        if p.properties
            .response_topic
            .as_deref()
            .is_some_and(|t| t.contains(['+', '#']))
        {
            return Err(ReasonCode::ProtocolError);
        }
        if p.qos > cfg.max_qos {
            return Err(ReasonCode::QoSNotSupported);
        }
        if p.retain && !cfg.retain_available {
            return Err(ReasonCode::RetainNotSupported);
        }
        let Some(c) = self.connections.get_mut(&conn) else {
            return Err(ReasonCode::UnspecifiedError);
        };
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > cfg.max_topic_alias {
                return Err(ReasonCode::TopicAliasInvalid);
            }
            if p.topic.is_empty() {
                match c.client_aliases.get(&alias) {
                    Some(topic) => p.topic = topic.clone(),
                    None => return Err(ReasonCode::ProtocolError),
                }
            } else {
                let old = c.client_aliases.get(&alias).map_or(0, |t| t.len());
                let bytes = c.client_alias_bytes - old + p.topic.len();
                if bytes > cfg.max_topic_alias_bytes {
                    tracing::debug!(?conn, bytes, "topic alias table over its memory budget");
                    return Err(ReasonCode::QuotaExceeded);
                }
                c.client_alias_bytes = bytes;
                // A copy, so the alias table does not pin this whole frame (payload included).
                c.client_aliases.insert(alias, ByteString::from(&*p.topic));
            }
        }
        if !valid_topic_name(&p.topic, cfg.max_topic_levels) {
            return Err(ReasonCode::TopicNameInvalid);
        }
        Ok(())
    }

    pub(super) fn handle_pubrel(&mut self, conn: ConnId, key: SessionKey, packet_id: u16) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let mut comp = Ack::new(packet_id);
        if !session.incoming_qos2.remove(&packet_id) && session.protocol.is_v5() {
            comp.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        self.send(conn, Packet::PubComp(comp));
    }

    /// Stores or clears the retained message of a local publish with the retain flag; returns
    /// the version it got.
    pub(super) fn store_retained(
        &mut self,
        msg: &Arc<Message>,
        now: Duration,
    ) -> Option<RetainVersion> {
        (msg.retain && self.config.retain_available).then(|| self.retained.store_local(msg, now))
    }

    /// Delivers `msg` to every matching session; returns how many deliveries it made (before
    /// queue/size drops), 0 meaning no subscriber matched.
    pub(super) fn route(
        &mut self,
        msg: Arc<Message>,
        publisher: Option<SessionKey>,
        now: Duration,
    ) -> usize {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.subscriptions.for_each_match(&msg.topic, |_, entries| {
            for (&key, opts) in entries {
                if opts.no_local && Some(key) == publisher {
                    continue;
                }
                scratch.push(Match { key, opts: *opts });
            }
        });
        // Sorting by session (then subscription id) turns overlapping filters into runs that
        // merge into one delivery, in a deterministic order.
        scratch.sort_unstable_by_key(|m| (m.key, m.opts.sub_id));
        let mut matched = 0;
        for run in scratch.chunk_by(|a, b| a.key == b.key) {
            let Some(first) = run.first() else {
                continue;
            };
            let granted = run
                .iter()
                .map(|m| m.opts.qos)
                .max()
                .unwrap_or(QoS::AtMostOnce);
            let as_published = run.iter().any(|m| m.opts.retain_as_published);
            let delivery = Delivery {
                msg: Arc::clone(&msg),
                qos: msg.qos.min(granted),
                retain: msg.retain && as_published,
                sub_ids: run.iter().filter_map(|m| m.opts.sub_id).collect(),
                shared: None,
                from_store: false,
            };
            matched += 1;
            if let Some(s) = self.sessions.get_mut(first.key) {
                s.deliver(delivery, &self.config, &mut self.out, now);
            }
        }
        self.scratch = scratch;
        matched += self.route_shared(&msg, now);
        if matched == 0 && !self.clustered {
            self.out.metrics.messages_dropped[msg.qos as usize] += 1;
        }
        matched
    }

    /// One delivery per matching shared group, to the member after the group's cursor that is
    /// connected; if none is, a disconnected member's queue takes it (QoS>0 only).
    fn route_shared(&mut self, msg: &Arc<Message>, now: Duration) -> usize {
        let mut chosen = std::mem::take(&mut self.shared_scratch);
        chosen.clear();
        self.shared.for_each_match(&msg.topic, |filter, entries| {
            let mut next_group = entries.keys().next().map(|(g, _)| g.clone());
            while let Some(group) = next_group.take() {
                chosen.push((group.clone(), ByteString::from(filter)));
                let hi = (group, SessionKey(u32::MAX));
                next_group = entries
                    .range((Bound::Excluded(hi), Bound::Unbounded))
                    .next()
                    .map(|((g, _), _)| g.clone());
            }
        });
        let mut matched = 0;
        for (group, filter) in chosen.drain(..) {
            if self.deliver_to_group(msg, group, filter, now) {
                matched += 1;
            }
        }
        self.shared_scratch = chosen;
        matched
    }

    /// Delivers `msg` to one member of `group` on `filter` (round robin over connected members;
    /// a disconnected member's queue only for QoS>0). False if the group has no usable member.
    fn deliver_to_group(
        &mut self,
        msg: &Arc<Message>,
        group: ByteString,
        filter: ByteString,
        now: Duration,
    ) -> bool {
        let Some(entries) = self.shared.get(&filter) else {
            return false;
        };
        let sessions = &self.sessions;
        let lo = (group.clone(), SessionKey(0));
        let hi = (group.clone(), SessionKey(u32::MAX));
        let members = || entries.range(lo.clone()..=hi.clone());
        let last = self
            .shared_cursors
            .get(&*filter)
            .and_then(|g| g.get(&*group))
            .copied();
        let online = |k: SessionKey| sessions.get(k).is_some_and(|s| s.link.is_some());
        let after = |k: SessionKey| last.is_none_or(|l| k > l);
        let offline_ok = msg.qos > QoS::AtMostOnce;
        let pick = members()
            .find(|((_, k), _)| after(*k) && online(*k))
            .or_else(|| members().find(|((_, k), _)| online(*k)))
            .or_else(|| {
                offline_ok
                    .then(|| members().find(|((_, k), _)| after(*k)).or(members().next()))
                    .flatten()
            });
        let Some((&(_, key), &opts)) = pick else {
            return false;
        };
        self.shared_cursors
            .entry(filter.clone())
            .or_default()
            .insert(group.clone(), key);
        let delivery = Delivery {
            msg: Arc::clone(msg),
            qos: msg.qos.min(opts.qos),
            retain: msg.retain && opts.retain_as_published,
            sub_ids: opts.sub_id.into_iter().collect(),
            shared: Some((group, filter)),
            from_store: false,
        };
        if let Some(s) = self.sessions.get_mut(key) {
            s.deliver(delivery, &self.config, &mut self.out, now);
        }
        true
    }

    /// A session ended owing messages it got through shared subscriptions (queued, or sent but
    /// not yet received as far as we know): each goes to another member of its group, as
    /// MQTT 5 §4.8.2 asks, so an acknowledged QoS 1/2 message is not lost with one member.
    pub(super) fn redistribute_shared(&mut self, owed: Vec<Delivery>, now: Duration) {
        for d in owed {
            if let Some((group, filter)) = d.shared
                && !self.deliver_to_group(&d.msg, group, filter, now)
            {
                self.out.metrics.messages_dropped[d.msg.qos as usize] += 1;
            }
        }
    }
}
