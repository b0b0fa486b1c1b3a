//! Retained sync on link up: the digest exchange and the bulk set of differing entries (the
//! broker's side is answered by the tests, as the node driver would).

use super::*;

fn retained_item(topic: &str) -> wire::RetainedItem {
    wire::RetainedItem {
        version: (42, 1),
        publish: wire::ForwardedPublish {
            topic: topic.into(),
            payload: b"v".to_vec(),
            qos: 1,
            retain: true,
            expiry: None,
            payload_format_indicator: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            content_type: None,
            retain_version: None,
        },
    }
}

/// Every node's link-up asks its broker for the digest; nodes with an empty retained set send
/// nothing, so a cluster without retained messages exchanges no retained frames.
#[test]
fn link_up_asks_for_the_retained_digest_and_empty_sets_send_nothing() {
    let mut h = linked_pair(&[]);
    let syncs: Vec<(usize, LinkId)> = std::mem::take(&mut h.retained)
        .into_iter()
        .filter_map(|(i, a)| match a {
            ClusterAction::SyncRetained { link } => Some((i, link)),
            _ => None,
        })
        .collect();
    let asked: BTreeSet<usize> = syncs.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        asked,
        BTreeSet::from([0, 1]),
        "every link up, on both sides"
    );
    let before = h.wire_log.len();
    for (i, link) in syncs {
        h.nodes[i].sync_retained(link, vec![0; 64]);
    }
    h.settle();
    assert_eq!(h.wire_log.len(), before, "no frame for empty retained sets");
    assert!(h.retained.is_empty());
}

/// n1 has retained values, n2 has none: n1 sends its digest, n2 (empty) answers with its empty
/// digest, n1 answers that with its entries of the differing buckets, n2 merges them.
#[test]
fn a_node_with_an_empty_retained_set_gets_the_peers_entries() {
    let mut h = linked_pair(&[]);
    let link_of = |h: &mut Harness, node: usize| {
        std::mem::take(&mut h.retained)
            .into_iter()
            .find_map(|(i, a)| match a {
                ClusterAction::SyncRetained { link } if i == node => Some(link),
                _ => None,
            })
            .expect("a sync request")
    };
    let l1 = link_of(&mut h, 0);
    let mut digest = vec![0u64; 64];
    digest[3] = 99;
    h.nodes[0].sync_retained(l1, digest.clone());
    h.settle();
    let (i, wanted) = h.retained.remove(0);
    let ClusterAction::RetainedWanted {
        link: l2,
        digest: theirs,
    } = wanted
    else {
        panic!("expected RetainedWanted, got {wanted:?}");
    };
    assert_eq!((i, &theirs), (1, &digest));
    h.nodes[1].answer_retained(l2, vec![0; 64], &theirs, Vec::new());
    h.settle();
    let (i, wanted) = h.retained.remove(0);
    let ClusterAction::RetainedWanted { link, digest: zero } = wanted else {
        panic!("expected RetainedWanted, got {wanted:?}");
    };
    assert_eq!((i, link), (0, l1));
    assert!(zero.iter().all(|&b| b == 0));
    let items: Vec<wire::RetainedItem> = (0..3_000)
        .map(|k| retained_item(&format!("r/{k}")))
        .collect();
    h.nodes[0].answer_retained(l1, digest, &zero, items.clone());
    h.settle();
    let merged: Vec<wire::RetainedItem> = std::mem::take(&mut h.retained)
        .into_iter()
        .flat_map(|(i, a)| match a {
            ClusterAction::MergeRetained(items) if i == 1 => items,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(merged, items, "all of them, in one merge, in order");
    assert!(h.largest_frame < 64 * 1024, "sent in bounded chunks");
}
