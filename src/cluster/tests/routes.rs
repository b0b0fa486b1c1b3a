//! Route sync: the route set on link up, deltas, and chunked (bulk) route sets.

use super::*;

#[test]
fn routes_sync_on_link_up_then_follow_deltas() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#", h.now);
    h.nodes[2].local_route_added("t/+/x", h.now);
    h.advance(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(
            h.nodes[i].routes(),
            vec![
                RouteEntry {
                    filter: "t/#".into(),
                    nodes: vec!["n2@10.0.0.2".into()],
                },
                RouteEntry {
                    filter: "t/+/x".into(),
                    nodes: vec!["n3@10.0.0.3".into()],
                },
            ],
            "node {i}"
        );
    }
    h.nodes[2].local_route_added("t/#", h.now);
    h.nodes[1].local_route_removed("t/#", h.now);
    h.settle();
    for i in 0..3 {
        assert_eq!(
            h.nodes[i].routes(),
            vec![
                RouteEntry {
                    filter: "t/#".into(),
                    nodes: vec!["n3@10.0.0.3".into()],
                },
                RouteEntry {
                    filter: "t/+/x".into(),
                    nodes: vec!["n3@10.0.0.3".into()],
                },
            ],
            "node {i}"
        );
    }
}

/// Feeds one bulk chunk from n1 to n2 on n2's link to n1.
fn chunk_to_n2(h: &mut Harness, sync: u64, index: u32, last: bool, filters: &[&str]) {
    let link = h.nodes[1].links.peers()[&name("n1@10.0.0.1")];
    let frame = wire::encode(&LinkMessage::Bulk(wire::BulkChunk {
        sync,
        index,
        last,
        body: wire::BulkBody::Routes(filters.iter().map(|f| f.to_string()).collect()),
    }));
    let now = h.now;
    h.nodes[1].handle_frame(link, &frame[wire::LENGTH_PREFIX..], now);
}

#[test]
fn a_huge_route_set_crosses_in_bounded_chunks_and_arrives_whole() {
    let filters: Vec<String> = (0..60_000)
        .map(|i| format!("hog/{:05}/{:03}/sensor-value", i / 1000, i % 1000))
        .collect();
    let h = linked_pair(&filters);
    let mut want = filters.clone();
    want.sort();
    assert_eq!(n1_routes_at_n2(&h), want);
    assert!(
        h.largest_frame <= wire::BULK_CHUNK_BYTES + 64,
        "largest frame {} bytes",
        h.largest_frame
    );
}

#[test]
fn a_partial_route_set_never_purges_or_adds_routes() {
    let mut h = linked_pair(&["a/1".to_string(), "a/2".to_string()]);
    chunk_to_n2(&mut h, 99, 0, false, &["b/1"]);
    chunk_to_n2(&mut h, 99, 1, false, &["b/2"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1", "a/2"]);
    // The last chunk applies the whole set, replacing the old one.
    chunk_to_n2(&mut h, 99, 2, true, &["b/3"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["b/1", "b/2", "b/3"]);
}

#[test]
fn chunks_of_two_transfers_never_mix() {
    let mut h = linked_pair(&["a/1".to_string()]);
    chunk_to_n2(&mut h, 5, 0, false, &["x"]);
    // A new transfer starts: the old one is dropped.
    chunk_to_n2(&mut h, 6, 0, false, &["y"]);
    // The old transfer's last chunk does not continue the new one, nor apply anything.
    chunk_to_n2(&mut h, 5, 1, true, &["z"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // And it dropped the new one too (chunks must follow each other): its end is ignored.
    chunk_to_n2(&mut h, 6, 1, true, &["w"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // A skipped index is not a continuation either.
    chunk_to_n2(&mut h, 7, 0, false, &["p"]);
    chunk_to_n2(&mut h, 7, 2, true, &["q"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // A clean transfer applies exactly its own items.
    chunk_to_n2(&mut h, 8, 0, false, &["y"]);
    chunk_to_n2(&mut h, 8, 1, true, &["w"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["w", "y"]);
}

#[test]
fn a_new_link_starts_with_no_partial_transfer() {
    let mut h = linked_pair(&["a/1".to_string()]);
    chunk_to_n2(&mut h, 42, 0, false, &["half/1"]);
    // The link breaks mid-transfer and a new one comes up (with its own full resync).
    let link = h.nodes[1].links.peers()[&name("n1@10.0.0.1")];
    let now = h.now;
    h.nodes[1].link_lost(link, LinkLoss::Io, now);
    h.nodes[1].close(link, now);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.running(1), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
    assert_ne!(h.nodes[1].links.peers()[&name("n1@10.0.0.1")], link);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    // The rest of the old transfer on the new link continues nothing.
    chunk_to_n2(&mut h, 42, 1, true, &["half/2"]);
    assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
}
