//! SUBSCRIBE and UNSUBSCRIBE: validation, per-filter reason codes, the tries, and the retained
//! messages a new subscription receives.
//!
//! Shared subscriptions (`$share/group/filter`) go to their own trie keyed by (group, session)
//! and never receive retained messages.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use super::session::{Delivery, Message, SessionKey, SubOptions};
use super::{Broker, ConnId};
use crate::codec::{
    AckProperties, Packet, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::topic::{SubscriptionFilter, parse_subscription_filter, valid_topic_filter};

/// A SUBACK waiting until the cluster has confirmed the route changes before it (`seq`).
#[derive(Debug)]
pub(super) struct HeldSubAck {
    /// The number of route changes queued when the SUBSCRIBE was handled.
    seq: u64,
    conn: ConnId,
    key: SessionKey,
    ack: SubAck,
    /// The filters whose retained messages follow the SUBACK, with their options.
    retained: Vec<(ByteString, SubOptions)>,
}

impl Broker {
    pub(super) fn handle_subscribe(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        sub: Subscribe,
        now: Duration,
    ) {
        let levels = self.config.max_topic_levels;
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let v5 = session.protocol.is_v5();
        let shared_no_local = sub.filters.iter().any(|(f, o)| {
            o.no_local
                && matches!(
                    parse_subscription_filter(f, levels),
                    Some(SubscriptionFilter::Shared { .. })
                )
        });
        if sub.filters.is_empty()
            || sub.properties.subscription_identifier == Some(0)
            || shared_no_local
        {
            self.protocol_violation(conn, ReasonCode::ProtocolError, now);
            return;
        }
        let invalid = if v5 {
            ReasonCode::TopicFilterInvalid
        } else {
            ReasonCode::UnspecifiedError
        };
        let sub_id = sub.properties.subscription_identifier;
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut retained: Vec<(ByteString, SubOptions)> = Vec::new();
        for (filter, o) in &sub.filters {
            let opts = SubOptions {
                qos: o.qos.min(self.config.max_qos),
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                sub_id,
            };
            let over_quota = self.sessions.get(key).is_some_and(|s| {
                s.subscriptions.len() >= self.config.max_subscriptions
                    && !s.subscriptions.contains(&**filter)
            });
            if over_quota {
                tracing::debug!(?conn, "subscription quota reached");
                codes.push(if v5 {
                    ReasonCode::QuotaExceeded
                } else {
                    ReasonCode::UnspecifiedError
                });
                continue;
            }
            match parse_subscription_filter(filter, levels) {
                Some(SubscriptionFilter::Plain(f)) if valid_topic_filter(f, levels) => {
                    self.note_route_added(f);
                    let existed = self.subscriptions.insert(f, key, opts).is_some();
                    let wants_retained = match o.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                    if wants_retained {
                        retained.push((ByteString::from(f), opts));
                    }
                }
                Some(SubscriptionFilter::Shared { group, filter: f }) => {
                    self.note_route_added(f);
                    self.shared.insert(f, (ByteString::from(group), key), opts);
                }
                _ => {
                    codes.push(invalid);
                    continue;
                }
            }
            if let Some(s) = self.sessions.get_mut(key) {
                s.subscriptions.insert(ByteString::from(&**filter));
            }
            codes.push(ReasonCode::granted(opts.qos));
        }
        let ack = SubAck {
            packet_id: sub.packet_id,
            properties: AckProperties::default(),
            reason_codes: codes,
        };
        let held = HeldSubAck {
            seq: self.route_seq,
            conn,
            key,
            ack,
            retained,
        };
        if self.hold_subacks && self.route_seq > self.routes_confirmed {
            self.held_subacks.push_back(held);
        } else {
            self.release_suback(held, now);
        }
    }

    /// The cluster confirmed every route change up to `seq` (every linked node has it): the
    /// SUBACKs held for them go out, each followed by its retained messages.
    pub fn routes_confirmed(&mut self, seq: u64, now: Duration) {
        self.routes_confirmed = self.routes_confirmed.max(seq);
        while self
            .held_subacks
            .front()
            .is_some_and(|h| h.seq <= self.routes_confirmed)
        {
            if let Some(held) = self.held_subacks.pop_front() {
                let attached = self
                    .connections
                    .get(&held.conn)
                    .is_some_and(|c| c.session == Some(held.key));
                if attached {
                    self.release_suback(held, now);
                }
            }
        }
    }

    /// Sends a SUBACK, then the retained messages of its filters that asked for them.
    fn release_suback(&mut self, held: HeldSubAck, now: Duration) {
        let HeldSubAck {
            conn,
            key,
            ack,
            retained: filters,
            ..
        } = held;
        self.send(conn, Packet::SubAck(ack));
        let mut retained: Vec<(Arc<Message>, SubOptions)> = Vec::new();
        for (filter, opts) in filters {
            self.collect_retained(&filter, opts, now, &mut retained);
        }
        // Retained messages wait outside the session's queue bound, up to one store's worth.
        let limit = self.config.max_queued_messages.max(self.retained.len());
        for (msg, opts) in retained {
            let delivery = Delivery {
                qos: msg.qos.min(opts.qos),
                msg,
                retain: true,
                sub_ids: opts.sub_id.into_iter().collect(),
                shared: None,
                from_store: false,
            };
            if let Some(s) = self.sessions.get_mut(key) {
                s.deliver_stored(delivery, limit, &self.config, &mut self.out, now);
            }
        }
    }

    /// Called before a subscription for `filter` is stored: the first one is a new route.
    pub(super) fn note_route_added(&mut self, filter: &str) {
        if self.clustered && !self.has_route(filter) {
            self.route_seq += 1;
            self.route_changes
                .push_back(super::RouteChange::Added(ByteString::from(filter)));
        }
    }

    /// Called after a subscription for `filter` was removed: if it was the last, the route goes.
    pub(super) fn note_route_removed(&mut self, filter: &str) {
        if self.clustered && !self.has_route(filter) {
            self.route_seq += 1;
            self.route_changes
                .push_back(super::RouteChange::Removed(ByteString::from(filter)));
        }
    }

    /// The unexpired retained messages matching `filter`; expired ones are dropped for good.
    fn collect_retained(
        &mut self,
        filter: &str,
        opts: SubOptions,
        now: Duration,
        into: &mut Vec<(Arc<Message>, SubOptions)>,
    ) {
        self.retained
            .collect(filter, now, |msg| into.push((Arc::clone(msg), opts)));
    }

    pub(super) fn handle_unsubscribe(&mut self, conn: ConnId, key: SessionKey, unsub: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsub.filters.len());
        for filter in &unsub.filters {
            let existed = self
                .sessions
                .get_mut(key)
                .is_some_and(|s| s.subscriptions.remove(&**filter));
            if existed {
                self.remove_subscription(key, filter);
                codes.push(ReasonCode::Success);
            } else {
                codes.push(ReasonCode::NoSubscriptionExisted);
            }
        }
        let ack = UnsubAck {
            packet_id: unsub.packet_id,
            properties: AckProperties::default(),
            reason_codes: codes,
        };
        self.send(conn, Packet::UnsubAck(ack));
    }
}
