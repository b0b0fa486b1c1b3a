//! Retained messages that converge across a cluster: versions (hybrid logical clock, origin
//! tie-break), tombstones for clears, and the digest / records / merge exchange of a link up.

use super::*;
use crate::broker::{DIGEST_BUCKETS, RetainVersion, RetainedDigest, RetainedRecord, TOMBSTONE_TTL};

/// A clustered broker with node id `origin` whose clock read `epoch_ms` at start, and a
/// connected publisher.
fn node(origin: u64, epoch_ms: u64) -> (Harness, ConnId) {
    let mut h = Harness::new();
    h.broker.enable_cluster(origin, epoch_ms);
    let p = h.connect("publisher");
    (h, p)
}

fn set(h: &mut Harness, p: ConnId, topic: &str, payload: &'static [u8]) {
    let mut publish = publish(topic, QoS::AtMostOnce, None, payload);
    publish.retain = true;
    h.send(p, Packet::Publish(publish));
    h.collect();
}

/// Everything stored (values and clears), by topic: what a peer with an empty set is sent.
fn stored(h: &mut Harness) -> Vec<(String, Vec<u8>, RetainVersion)> {
    let differs_everywhere = RetainedDigest(vec![u64::MAX; DIGEST_BUCKETS]);
    h.broker
        .retained_records(&differs_everywhere, h.now)
        .into_iter()
        .map(|r| {
            (
                r.publish.topic.to_string(),
                r.publish.payload.to_vec(),
                r.version,
            )
        })
        .collect()
}

/// What a new subscriber to `filter` gets.
fn served(h: &mut Harness, filter: &str) -> Vec<(String, Vec<u8>)> {
    let s = h.connect("reader");
    h.subscribe(s, filter, QoS::AtMostOnce);
    let got = h
        .publishes(s)
        .into_iter()
        .map(|p| (p.topic.to_string(), p.payload.to_vec()))
        .collect();
    h.lose(s, ConnectionLoss::Io);
    h.collect();
    got
}

/// One link-up exchange: digests, then each side's records of the differing buckets.
fn sync(a: &mut Harness, b: &mut Harness) -> (usize, usize) {
    let (da, db) = (
        a.broker.retained_digest(a.now),
        b.broker.retained_digest(b.now),
    );
    let to_b = a.broker.retained_records(&db, a.now);
    let to_a = b.broker.retained_records(&da, b.now);
    (
        a.broker.merge_retained(to_a, a.now),
        b.broker.merge_retained(to_b, b.now),
    )
}

fn text(entries: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|(t, p)| (t.to_string(), p.as_bytes().to_vec()))
        .collect()
}

#[test]
fn versions_follow_the_clock_and_grow_within_one_millisecond() {
    let (mut h, p) = node(1, 5_000);
    set(&mut h, p, "a", b"1");
    set(&mut h, p, "b", b"2");
    h.advance(Duration::from_millis(3));
    set(&mut h, p, "c", b"3");
    let v: Vec<RetainVersion> = stored(&mut h).into_iter().map(|e| e.2).collect();
    assert_eq!(
        v[0],
        RetainVersion {
            hlc: 5_000 << 16,
            origin: 1
        }
    );
    assert_eq!(
        v[1].hlc,
        (5_000 << 16) + 1,
        "same millisecond: the counter grows"
    );
    assert_eq!(v[2].hlc, 5_003 << 16);
}

#[test]
fn a_local_retained_publish_carries_its_version_to_the_cluster() {
    let (mut h, p) = node(9, 1_000);
    set(&mut h, p, "r", b"x");
    let forward = h.broker.poll_forward().expect("forwarded");
    assert_eq!(
        forward.retain_version(),
        Some(RetainVersion {
            hlc: 1_000 << 16,
            origin: 9
        })
    );
    h.publish(p, "plain", QoS::AtMostOnce, b"y");
    assert_eq!(h.broker.poll_forward().unwrap().retain_version(), None);
}

#[test]
fn a_forwarded_value_is_stored_only_when_newer_but_always_delivered() {
    let (mut h, p) = node(1, 0);
    let s = h.connect("live");
    h.subscribe(s, "t", QoS::AtMostOnce);
    set(&mut h, p, "t", b"mine");
    let mine = stored(&mut h)[0].2;
    let older = RetainVersion {
        hlc: mine.hlc - 1,
        origin: 2,
    };
    let mut late = publish("t", QoS::AtMostOnce, None, b"older");
    late.retain = true;
    h.broker.deliver_forwarded(late.clone(), Some(older), h.now);
    assert_eq!(served(&mut h, "t"), text(&[("t", "mine")]));
    let newer = RetainVersion {
        hlc: mine.hlc,
        origin: 2,
    };
    late.payload = Bytes::from_static(b"newer");
    h.broker.deliver_forwarded(late, Some(newer), h.now);
    assert_eq!(served(&mut h, "t"), text(&[("t", "newer")]));
    // The live subscriber got all three as ordinary publishes.
    assert_eq!(
        payloads(&h.publishes(s)),
        [&b"mine"[..], b"older", b"newer"]
    );
}

#[test]
fn two_nodes_converge_on_the_newest_value_of_every_topic() {
    let (mut a, pa) = node(1, 1_000);
    let (mut b, pb) = node(2, 1_000);
    set(&mut a, pa, "only/a", b"a");
    set(&mut a, pa, "$SYS/a", b"sys");
    set(&mut b, pb, "only/b", b"b");
    // Concurrent writes of one topic: b's is later by its clock.
    set(&mut a, pa, "both", b"from a");
    b.advance(Duration::from_millis(5));
    set(&mut b, pb, "both", b"from b");

    let (won_a, won_b) = sync(&mut a, &mut b);
    assert!(won_a > 0 && won_b > 0);
    assert_eq!(stored(&mut a), stored(&mut b));
    assert_eq!(
        a.broker.retained_digest(a.now),
        b.broker.retained_digest(b.now)
    );
    let expect = text(&[("both", "from b"), ("only/a", "a"), ("only/b", "b")]);
    assert_eq!(served(&mut a, "#"), expect);
    assert_eq!(served(&mut b, "#"), expect);
    assert_eq!(served(&mut b, "$SYS/#"), text(&[("$SYS/a", "sys")]));
    // Converged: a second exchange finds nothing to send.
    let (da, db) = (
        a.broker.retained_digest(a.now),
        b.broker.retained_digest(b.now),
    );
    assert!(a.broker.retained_records(&db, a.now).is_empty());
    assert!(b.broker.retained_records(&da, b.now).is_empty());
}

#[test]
fn equal_clocks_are_ordered_by_origin_the_same_way_on_both_nodes() {
    let (mut a, pa) = node(1, 1_000);
    let (mut b, pb) = node(2, 1_000);
    set(&mut a, pa, "tie", b"a");
    set(&mut b, pb, "tie", b"b");
    assert_eq!(stored(&mut a)[0].2.hlc, stored(&mut b)[0].2.hlc);
    sync(&mut a, &mut b);
    assert_eq!(served(&mut a, "tie"), text(&[("tie", "b")]));
    assert_eq!(served(&mut b, "tie"), text(&[("tie", "b")]));
}

#[test]
fn a_clear_wins_over_the_older_value_a_node_missed() {
    let (mut a, pa) = node(1, 0);
    let (mut b, _) = node(2, 0);
    set(&mut a, pa, "t", b"old");
    sync(&mut a, &mut b);
    assert_eq!(served(&mut b, "t"), text(&[("t", "old")]));
    a.advance(Duration::from_millis(1));
    set(&mut a, pa, "t", b"");
    assert!(served(&mut a, "t").is_empty());
    sync(&mut a, &mut b);
    assert!(served(&mut b, "t").is_empty(), "the tombstone won");
    assert_eq!(b.broker.metrics().retained, 0, "tombstones are not counted");
}

#[test]
fn a_node_that_heard_a_later_clock_stamps_later_versions() {
    let (mut a, pa) = node(1, 1_000_000);
    let (mut b, pb) = node(2, 0); // b's clock is far behind
    set(&mut a, pa, "t", b"a");
    sync(&mut a, &mut b);
    set(&mut b, pb, "t", b"b, after seeing a's");
    sync(&mut a, &mut b);
    assert_eq!(served(&mut a, "t"), text(&[("t", "b, after seeing a's")]));
}

#[test]
fn tombstones_are_forgotten_after_their_ttl_and_a_single_node_keeps_none() {
    let (mut h, p) = node(1, 0);
    set(&mut h, p, "t", b"x");
    set(&mut h, p, "t", b"");
    assert_eq!(stored(&mut h).len(), 1, "a tombstone");
    h.advance(TOMBSTONE_TTL + Duration::from_secs(1));
    h.broker.retained_digest(h.now);
    assert!(stored(&mut h).is_empty());

    let mut single = Harness::new();
    let p = single.connect("p");
    set(&mut single, p, "t", b"x");
    set(&mut single, p, "t", b"");
    assert!(stored(&mut single).is_empty());
}

#[test]
fn expired_values_are_not_sent_and_the_rest_keep_their_remaining_expiry() {
    let (mut a, pa) = node(1, 0);
    let (mut b, _) = node(2, 0);
    for (topic, secs) in [("short", 2), ("long", 100)] {
        let mut p = publish(topic, QoS::AtMostOnce, None, b"v");
        p.retain = true;
        p.properties.message_expiry_interval = Some(secs);
        a.send(pa, Packet::Publish(p));
    }
    a.advance(Duration::from_secs(10));
    let records: Vec<RetainedRecord> = a
        .broker
        .retained_records(&b.broker.retained_digest(b.now), a.now);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].publish.topic, "long");
    assert_eq!(
        records[0].publish.properties.message_expiry_interval,
        Some(90)
    );
    b.broker.merge_retained(records, b.now);
    b.advance(Duration::from_secs(91));
    assert!(
        served(&mut b, "#").is_empty(),
        "expired 90 s after the merge"
    );
}
