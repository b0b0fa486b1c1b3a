//! A session moving between nodes (cluster-wide takeover): the node where the client was
//! connected exports it (`take_session`: the old connection gets DISCONNECT 0x8E and the session
//! leaves this broker), the node where the client now connects imports it (`import_session`)
//! before handling the CONNECT, which then resumes it with `session_present = 1`.
//!
//! What moves: the subscriptions with their options, the outbound QoS 1/2 messages in flight with
//! their packet ids and states (resent with DUP on resume; a QoS 2 message already PUBREC'd is
//! not sent again, only its PUBREL), the queued messages in order, the inbound QoS 2 packet ids
//! awaiting PUBREL (so a resent PUBLISH is not delivered twice), and the expiry interval. The
//! will does not move: a takeover cancels the old connection's will, and the new CONNECT brings
//! its own. Messages travel as MQTT 5 PUBLISH packets encoded by the codec, so every property
//! survives the move exactly as it would a network hop (message expiry counts down across it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;

use super::inflight::{InflightEntry, OutState};
use super::session::{Delivery, Message, Session, SessionKey, SubOptions};
use super::{Broker, Timer};
use crate::codec::{self, Decoder, Packet, Protocol, Publish, QoS};
use crate::topic::{SubscriptionFilter, parse_subscription_filter};

/// A session on its way to another node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSnapshot {
    /// The client id.
    pub client_id: String,
    /// The MQTT protocol level of its last connection (3, 4 or 5).
    pub protocol: u8,
    /// Seconds it outlives its connection (`u32::MAX`: forever).
    pub expiry_interval: u32,
    /// Its subscriptions, as the client wrote them.
    pub subscriptions: Vec<SnapshotSubscription>,
    /// Outbound QoS 1/2 messages awaiting acknowledgement, in first-send order.
    pub inflight: Vec<SnapshotInflight>,
    /// Messages waiting for the client, in order.
    pub queue: Vec<SnapshotDelivery>,
    /// Inbound QoS 2 packet ids delivered and awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
}

/// One subscription and its options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotSubscription {
    /// The filter as written (`$share/g/f` included).
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_id: Option<u32>,
}

/// One message owed to the client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotDelivery {
    /// The PUBLISH as it will be sent (MQTT 5 encoding: delivery QoS, retain flag, properties,
    /// subscription ids, remaining message expiry), without a packet id.
    pub publish: Vec<u8>,
    /// The shared subscription (group, inner filter) that chose it, if any.
    pub shared: Option<(String, String)>,
    /// A retained message sent because of a SUBSCRIBE.
    pub from_store: bool,
}

/// One outbound message in flight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInflight {
    pub packet_id: u16,
    /// 1: QoS 1 sent, 2: QoS 2 sent, 3: PUBREL sent (released).
    pub state: u8,
    pub delivery: SnapshotDelivery,
}

/// Why a snapshot cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("bad protocol level {0}")]
    Protocol(u8),
    #[error("a message of the snapshot does not decode: {0}")]
    Message(String),
    #[error("bad in-flight state {0}")]
    State(u8),
}

impl Broker {
    /// Hands the session of `client_id` to another node: its connection (if any) gets DISCONNECT
    /// 0x8E (MQTT 5) and is closed, its will is cancelled, and the session leaves this broker
    /// (its routes go). With `clean_start` the session is ended here instead, as a local clean
    /// takeover would (its will published) and nothing is returned. `None` if there is no session.
    pub fn take_session(
        &mut self,
        client_id: &str,
        clean_start: bool,
        now: Duration,
    ) -> Option<SessionSnapshot> {
        let key = self.sessions.lookup(client_id)?;
        self.take_over(key, clean_start);
        if clean_start {
            self.end_session(key, now);
            return None;
        }
        let snapshot = self.snapshot(key, now)?;
        self.drop_session(key);
        tracing::debug!(client_id, "session handed to another node");
        Some(snapshot)
    }

    /// Installs a session exported by another node as a detached session, so that the client's
    /// CONNECT (handled next) resumes it. A local session of the same id is replaced (the client
    /// was last connected elsewhere). Subscriptions are added to the tries (new routes announced).
    pub fn import_session(
        &mut self,
        snapshot: SessionSnapshot,
        now: Duration,
    ) -> Result<(), ImportError> {
        let protocol = match snapshot.protocol {
            3 => Protocol::V31,
            4 => Protocol::V311,
            5 => Protocol::V5,
            p => return Err(ImportError::Protocol(p)),
        };
        let queue = snapshot
            .queue
            .iter()
            .map(|d| delivery(d, now))
            .collect::<Result<VecDeque<_>, _>>()?;
        let mut inflight = Vec::with_capacity(snapshot.inflight.len());
        for e in &snapshot.inflight {
            let state = match e.state {
                1 => OutState::Qos1Sent,
                2 => OutState::Qos2Sent,
                3 => OutState::Released,
                s => return Err(ImportError::State(s)),
            };
            inflight.push(InflightEntry {
                packet_id: e.packet_id,
                delivery: delivery(&e.delivery, now)?,
                state,
                sent_at: now,
                resend: false,
            });
        }
        if let Some(old) = self.sessions.lookup(&snapshot.client_id) {
            self.take_over(old, true);
            self.drop_session(old);
        }
        let mut session = Session::new(ByteString::from(snapshot.client_id.as_str()));
        session.protocol = protocol;
        session.clean_start = false;
        session.expiry_interval = snapshot.expiry_interval;
        session.incoming_qos2 = snapshot.incoming_qos2.iter().copied().collect();
        session.stored_queued = queue.iter().filter(|d| d.from_store).count();
        session.queue = queue;
        for entry in inflight {
            session.inflight.push_imported(entry);
        }
        let key = self.sessions.insert(session);
        for s in &snapshot.subscriptions {
            let opts = SubOptions {
                qos: QoS::from_u8(s.qos)
                    .unwrap_or(QoS::AtMostOnce)
                    .min(self.config.max_qos),
                no_local: s.no_local,
                retain_as_published: s.retain_as_published,
                sub_id: s.subscription_id,
            };
            self.add_subscription(key, &s.filter, opts);
        }
        // Detached until the CONNECT: it expires like any session whose client went away.
        self.epoch += 1;
        let epoch = self.epoch;
        if let Some(session) = self.sessions.get_mut(key) {
            session.epoch = epoch;
        }
        if snapshot.expiry_interval != u32::MAX {
            let at = now + Duration::from_secs(u64::from(snapshot.expiry_interval));
            self.timers.insert((at, Timer::SessionExpiry(key, epoch)));
        }
        Ok(())
    }

    /// Adds one subscription (as written by the client) to the tries and the session.
    fn add_subscription(&mut self, key: SessionKey, filter: &str, opts: SubOptions) {
        let levels = self.config.max_topic_levels;
        match parse_subscription_filter(filter, levels) {
            Some(SubscriptionFilter::Plain(f)) => {
                self.note_route_added(f);
                self.subscriptions.insert(f, key, opts);
            }
            Some(SubscriptionFilter::Shared { group, filter: f }) => {
                self.note_route_added(f);
                self.shared.insert(f, (ByteString::from(group), key), opts);
            }
            None => return,
        }
        if let Some(s) = self.sessions.get_mut(key) {
            s.subscriptions.insert(ByteString::from(filter));
        }
    }

    /// The snapshot of a session (its state is left as it is).
    fn snapshot(&self, key: SessionKey, now: Duration) -> Option<SessionSnapshot> {
        let session = self.sessions.get(key)?;
        let mut subscriptions = Vec::with_capacity(session.subscriptions.len());
        for filter in &session.subscriptions {
            let opts = match parse_subscription_filter(filter, usize::MAX) {
                Some(SubscriptionFilter::Plain(f)) => {
                    self.subscriptions.get(f).and_then(|m| m.get(&key)).copied()
                }
                Some(SubscriptionFilter::Shared { group, filter: f }) => self
                    .shared
                    .get(f)
                    .and_then(|m| m.get(&(ByteString::from(group), key)))
                    .copied(),
                None => None,
            };
            if let Some(o) = opts {
                subscriptions.push(SnapshotSubscription {
                    filter: filter.to_string(),
                    qos: o.qos as u8,
                    no_local: o.no_local,
                    retain_as_published: o.retain_as_published,
                    subscription_id: o.sub_id,
                });
            }
        }
        let inflight = session
            .inflight
            .iter()
            .map(|e| SnapshotInflight {
                packet_id: e.packet_id,
                state: match e.state {
                    OutState::Qos1Sent => 1,
                    OutState::Qos2Sent => 2,
                    OutState::Released => 3,
                },
                delivery: snapshot_delivery(&e.delivery, now),
            })
            .collect();
        Some(SessionSnapshot {
            client_id: session.client_id.to_string(),
            protocol: match session.protocol {
                Protocol::V31 => 3,
                Protocol::V311 => 4,
                Protocol::V5 => 5,
            },
            expiry_interval: session.expiry_interval,
            subscriptions,
            inflight,
            queue: session
                .queue
                .iter()
                .map(|d| snapshot_delivery(d, now))
                .collect(),
            incoming_qos2: session.incoming_qos2.iter().copied().collect(),
        })
    }

    /// Removes a detached session without its will or any redistribution (it lives on elsewhere).
    fn drop_session(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.remove(key) else {
            return;
        };
        for filter in &session.subscriptions {
            self.remove_subscription(key, filter);
        }
    }
}

fn snapshot_delivery(d: &Delivery, now: Duration) -> SnapshotDelivery {
    let mut properties = d.msg.properties.clone();
    properties.message_expiry_interval = d.msg.remaining_expiry(now);
    properties.subscription_identifiers = d.sub_ids.clone();
    let publish = Publish {
        dup: false,
        qos: d.qos,
        retain: d.retain,
        topic: d.msg.topic.clone(),
        // The codec needs one for QoS > 0; the receiving session assigns its own.
        packet_id: (d.qos != QoS::AtMostOnce).then_some(1),
        payload: d.msg.payload.clone(),
        properties,
    };
    let mut buf = BytesMut::new();
    codec::encode(&Packet::Publish(publish), Protocol::V5, &mut buf);
    SnapshotDelivery {
        publish: buf.to_vec(),
        shared: d
            .shared
            .as_ref()
            .map(|(g, f)| (g.to_string(), f.to_string())),
        from_store: d.from_store,
    }
}

fn delivery(d: &SnapshotDelivery, now: Duration) -> Result<Delivery, ImportError> {
    let mut bytes = BytesMut::from(&d.publish[..]);
    let mut decoder = Decoder::new(usize::MAX);
    decoder.set_protocol(Protocol::V5);
    let packet = decoder
        .decode(&mut bytes)
        .map_err(|e| ImportError::Message(e.to_string()))?;
    let Some(Packet::Publish(mut p)) = packet else {
        return Err(ImportError::Message("not a PUBLISH".into()));
    };
    let sub_ids = std::mem::take(&mut p.properties.subscription_identifiers);
    let (qos, retain) = (p.qos, p.retain);
    Ok(Delivery {
        msg: Arc::new(Message::from_publish(p, now)),
        qos,
        retain,
        sub_ids,
        shared: d
            .shared
            .as_ref()
            .map(|(g, f)| (ByteString::from(g.as_str()), ByteString::from(f.as_str()))),
        from_store: d.from_store,
    })
}
