//! Retained messages, versioned so that the nodes of a cluster converge on one value per topic.
//!
//! Every stored value carries a [`RetainVersion`]: a hybrid logical clock (milliseconds of the
//! node's clock in the high 48 bits, a counter in the low 16) with the origin node's id as the
//! tie-break. A node stamps its clients' retained publishes (and wills) from its own clock, and
//! moves the clock past every version it hears, so a value set after seeing another always wins
//! over it, and two values set concurrently on two sides of a partition are ordered the same way
//! on every node (last writer wins by clock, then by node id).
//!
//! A clear (a retained publish with an empty payload) leaves a tombstone carrying its version
//! while the node is clustered, so that the clear also wins over the older value on a node that
//! missed it; tombstones are kept for [`TOMBSTONE_TTL`], then forgotten. A single node keeps no
//! tombstones.
//!
//! Convergence (`digest`, `records`, `merge`): the topics are hashed into [`DIGEST_BUCKETS`]
//! buckets; a bucket's digest combines the hashes of its entries' topics and versions. Two nodes
//! exchange digests when their link comes up, each sends the entries of the buckets that differ,
//! and each keeps the higher version of every topic: afterwards both hold the same set. Merging
//! is state repair, not a publish: subscribers get the merged value when they next subscribe.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use super::session::Message;
use crate::codec::{Publish, QoS};
use crate::fnv::{Fnv64, fnv1a};
use crate::topic::RetainedStore;

/// How long a clear is remembered (as a tombstone) so that it wins over older values held by
/// nodes that were away; a node away for longer may bring a cleared value back.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);
/// Buckets of the retained-set digest exchanged on link up.
pub const DIGEST_BUCKETS: usize = 64;
/// Most tombstones kept at once; beyond it the oldest are forgotten early.
const MAX_TOMBSTONES: usize = 100_000;

/// The version of a retained value: ordered by clock, then origin node.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct RetainVersion {
    /// Hybrid logical clock: milliseconds << 16 | counter.
    pub hlc: u64,
    /// The node that set the value (a hash of its name).
    pub origin: u64,
}

/// A retained topic's value as it travels between nodes: the publish (topic, payload, QoS,
/// properties, the expiry left in `message_expiry_interval`) or, with an empty payload, a clear.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedRecord {
    /// Its version.
    pub version: RetainVersion,
    /// The retained publish; an empty payload is a clear (tombstone).
    pub publish: Publish,
}

/// The per-bucket digest of a retained set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedDigest(pub Vec<u64>);

/// One topic's stored value.
#[derive(Debug)]
struct Entry {
    /// `None`: cleared (a tombstone).
    message: Option<Arc<Message>>,
    version: RetainVersion,
    /// When it was stored here (tombstones expire from it).
    stored_at: Duration,
}

/// The broker's retained messages with their versions and clock.
#[derive(Debug, Default)]
pub(super) struct Retained {
    store: RetainedStore<Entry>,
    tombstones: usize,
    /// The last clock value used or heard.
    hlc: u64,
    /// This node's id (`RetainVersion::origin`).
    origin: u64,
    /// Milliseconds of the node's clock at `now` = 0 (its start), for the clock's physical part.
    epoch_ms: u64,
    /// Clears leave tombstones (set by a clustered node).
    clustered: bool,
}

impl Retained {
    /// Makes clears leave tombstones and stamps versions with `origin` and a clock that reads
    /// `epoch_ms` at `now` = 0.
    pub(super) fn enable_cluster(&mut self, origin: u64, epoch_ms: u64) {
        self.clustered = true;
        self.origin = origin;
        self.epoch_ms = epoch_ms;
    }

    /// Live retained messages (tombstones not counted).
    pub(super) fn len(&self) -> usize {
        self.store.len() - self.tombstones
    }

    fn tick(&mut self, now: Duration) -> RetainVersion {
        let ms = self
            .epoch_ms
            .saturating_add(u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
        self.hlc = (ms << 16).max(self.hlc.saturating_add(1));
        RetainVersion {
            hlc: self.hlc,
            origin: self.origin,
        }
    }

    /// Stores (or clears) the value of a local retained publish; returns the version it got.
    pub(super) fn store_local(&mut self, msg: &Arc<Message>, now: Duration) -> RetainVersion {
        let version = self.tick(now);
        self.put(msg, version, now);
        version
    }

    /// Stores (or clears) a value set elsewhere, if it is newer than ours. True if it was.
    pub(super) fn store_remote(
        &mut self,
        msg: &Arc<Message>,
        version: RetainVersion,
        now: Duration,
    ) -> bool {
        self.hlc = self.hlc.max(version.hlc);
        if self
            .store
            .get(&msg.topic)
            .is_some_and(|e| e.version >= version)
        {
            return false;
        }
        self.put(msg, version, now);
        true
    }

    fn put(&mut self, msg: &Arc<Message>, version: RetainVersion, now: Duration) {
        let clear = msg.payload.is_empty();
        if clear && !self.clustered {
            if self
                .store
                .remove(&msg.topic)
                .is_some_and(|e| e.message.is_none())
            {
                self.tombstones -= 1;
            }
            return;
        }
        let entry = Entry {
            message: (!clear).then(|| Arc::clone(msg)),
            version,
            stored_at: now,
        };
        let old = self.store.insert(&msg.topic, entry);
        let was_tombstone = old.is_some_and(|e| e.message.is_none());
        match (was_tombstone, clear) {
            (false, true) => self.tombstones += 1,
            (true, false) => self.tombstones -= 1,
            _ => {}
        }
        if self.tombstones > MAX_TOMBSTONES {
            self.purge(now, true);
        }
    }

    /// The unexpired retained messages matching `filter`, in topic order; expired ones are
    /// dropped for good.
    pub(super) fn collect(
        &mut self,
        filter: &str,
        now: Duration,
        mut visit: impl FnMut(&Arc<Message>),
    ) {
        self.store.retain_matching(filter, |_, e| match &e.message {
            None => true,
            Some(msg) if msg.expired(now) => false,
            Some(msg) => {
                visit(msg);
                true
            }
        });
    }

    /// Forgets tombstones older than [`TOMBSTONE_TTL`] (and, when `crowded`, the older half of
    /// them) and expired messages.
    fn purge(&mut self, now: Duration, crowded: bool) {
        let cutoff = now.saturating_sub(TOMBSTONE_TTL);
        // When crowded, also every tombstone no newer than the median age.
        let mut median = None;
        if crowded {
            let mut ages: Vec<Duration> = Vec::new();
            self.store.for_each(|_, e| {
                if e.message.is_none() {
                    ages.push(e.stored_at);
                }
            });
            ages.sort_unstable();
            median = ages.get(ages.len() / 2).copied();
        }
        let mut forgot = 0;
        self.store.retain_all(|_, e| match &e.message {
            None if e.stored_at < cutoff || median.is_some_and(|m| e.stored_at <= m) => {
                forgot += 1;
                false
            }
            None => true,
            Some(msg) => !msg.expired(now),
        });
        self.tombstones -= forgot;
    }

    /// The digest of the retained set (tombstones included, expired messages not), after
    /// forgetting old tombstones.
    pub(super) fn digest(&mut self, now: Duration) -> RetainedDigest {
        self.purge(now, false);
        let mut buckets = vec![0u64; DIGEST_BUCKETS];
        self.store.for_each(|topic, e| {
            if let Some(slot) = buckets.get_mut(bucket(topic)) {
                *slot ^= entry_hash(topic, e.version);
            }
        });
        RetainedDigest(buckets)
    }

    /// Our entries in the buckets where `theirs` differs from our digest, as records.
    pub(super) fn records(
        &mut self,
        theirs: &RetainedDigest,
        now: Duration,
    ) -> Vec<RetainedRecord> {
        let ours = self.digest(now);
        let differs: Vec<bool> = (0..DIGEST_BUCKETS)
            .map(|b| ours.0.get(b) != theirs.0.get(b))
            .collect();
        let mut out = Vec::new();
        self.store.for_each(|topic, e| {
            if !differs.get(bucket(topic)).copied().unwrap_or(true) {
                return;
            }
            out.push(record(topic, e, now));
        });
        out
    }

    /// Keeps the newer of ours and each record's value; returns how many records won. Records
    /// already expired, or with an invalid topic, are skipped.
    pub(super) fn merge(
        &mut self,
        records: Vec<RetainedRecord>,
        max_topic_levels: usize,
        now: Duration,
    ) -> usize {
        let mut won = 0;
        for r in records {
            if r.publish.topic.is_empty()
                || !crate::topic::valid_topic_name(&r.publish.topic, max_topic_levels)
            {
                continue;
            }
            let mut publish = r.publish;
            publish.retain = true;
            let msg = Arc::new(Message::from_publish(publish, now));
            if self.store_remote(&msg, r.version, now) {
                won += 1;
            }
        }
        won
    }
}

fn bucket(topic: &str) -> usize {
    // The modulo keeps the value below DIGEST_BUCKETS, so the cast cannot truncate.
    (fnv1a(topic.as_bytes()) % DIGEST_BUCKETS as u64) as usize
}

fn entry_hash(topic: &str, version: RetainVersion) -> u64 {
    let mut hash = Fnv64::new();
    hash.write_bytes(topic.as_bytes());
    hash.write_bytes(&version.hlc.to_be_bytes());
    hash.write_bytes(&version.origin.to_be_bytes());
    hash.finish()
}

fn record(topic: &str, e: &Entry, now: Duration) -> RetainedRecord {
    let publish = match &e.message {
        Some(msg) => {
            let mut properties = msg.properties.clone();
            properties.message_expiry_interval = msg.remaining_expiry(now);
            Publish {
                dup: false,
                qos: msg.qos,
                retain: true,
                topic: msg.topic.clone(),
                packet_id: None,
                payload: msg.payload.clone(),
                properties,
            }
        }
        None => Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: ByteString::from(topic),
            packet_id: None,
            payload: bytes::Bytes::new(),
            properties: Default::default(),
        },
    };
    RetainedRecord {
        version: e.version,
        publish,
    }
}
