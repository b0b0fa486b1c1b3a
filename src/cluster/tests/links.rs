//! Links: duplicate links, the frame limit, the cap on pending handshakes, framing errors and
//! strikes, dead links and healed partitions, and the handshake refusing bad input.

use super::*;

#[test]
fn simultaneous_dials_keep_the_same_single_link_on_both_sides() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    // Every surviving link on one side is paired with a surviving link on the other.
    for i in 0..3 {
        for (peer, &link) in h.nodes[i].links.peers() {
            let j = h.index(peer).unwrap();
            let &(pj, plink) = h.pairs.get(&(i, link)).expect("kept link still exists");
            assert_eq!(pj, j);
            assert_eq!(
                h.nodes[j].links.peers().get(&h.configs[i].node),
                Some(&plink)
            );
        }
    }
    // Links that lost the tie were closed: only one pair per node pair is left.
    assert_eq!(h.pairs.len(), 6);
}

#[test]
fn the_frame_limit_is_raised_only_once_the_link_is_authenticated() {
    let frame_limits = |actions: &[ClusterAction]| -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                ClusterAction::FrameLimit { max, .. } => Some(*max),
                _ => None,
            })
            .collect()
    };
    let cfg = config("n1@10.0.0.1", Discovery::Manual, &[]);
    let (mut c, link) = accepted(cfg.clone());
    c.handle_frame(
        link,
        &hello(wire::PROTOCOL_VERSION, "flockmq", "n2@10.0.0.2")[4..],
        Duration::ZERO,
    );
    let after_hello = actions(&mut c);
    assert!(frame_limits(&after_hello).is_empty(), "{after_hello:?}");
    // A wrong proof: refused, the limit never raised.
    let proof = wire::encode(&LinkMessage::Proof {
        proof: [0; NONCE_LEN],
    });
    c.handle_frame(link, &proof[4..], Duration::ZERO);
    let refused = actions(&mut c);
    assert!(rejected_with(&refused, "authentication failed"));
    assert!(frame_limits(&refused).is_empty());
    // A good handshake raises it to cluster.max_frame_size on both sides, once.
    let mut h = Harness::new(vec![cfg, config("n2@10.0.0.2", Discovery::Manual, &[])]);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), Duration::ZERO);
    h.advance(Duration::from_millis(500));
    assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
    h.frame_limits.sort();
    assert_eq!(h.frame_limits, vec![(0, 1024 * 1024), (1, 1024 * 1024)]);
}

#[test]
fn pending_handshakes_are_capped_and_the_excess_closed_at_once() {
    let mut c = lone_n1(Discovery::Manual);
    let now = Duration::ZERO;
    for i in 0..MAX_PENDING_HANDSHAKES as u64 {
        c.link_opened(LinkId(i + 1), Harness::addr(5), None, now);
    }
    assert!(actions(&mut c).is_empty());
    // Dialled links are ours: not counted, not refused.
    c.link_opened(
        LinkId(1000),
        Harness::addr(2),
        Some(name("n3@10.0.0.3")),
        now,
    );
    assert!(
        actions(&mut c)
            .iter()
            .all(|a| !matches!(a, ClusterAction::Close { .. }))
    );
    let over = LinkId(2000);
    c.link_opened(over, Harness::addr(5), None, now);
    assert_eq!(actions(&mut c), vec![ClusterAction::Close { link: over }]);
    assert_eq!(c.metrics().handshakes_refused, 1);
    // The refused link is unknown to the core: its frames are ignored.
    c.handle_frame(
        over,
        &hello(wire::PROTOCOL_VERSION, "flockmq", "n2@10.0.0.2")[4..],
        now,
    );
    assert!(actions(&mut c).is_empty());
    // Once the pending ones time out, new connections are accepted again.
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    let _ = actions(&mut c);
    c.link_opened(LinkId(3000), Harness::addr(5), None, at);
    assert!(actions(&mut c).is_empty());
    assert_eq!(c.metrics().handshakes_refused, 1);
}

#[test]
fn a_framing_error_closes_the_link_with_a_reason_and_backs_off_growing() {
    let mut h = linked_pair(&["a/1".to_string()]);
    let n1 = name("n1@10.0.0.1");
    let n2 = name("n2@10.0.0.2");
    let cap = MIN_BACKOFF_CAP;
    for strike in 1..=5u32 {
        let link = h.nodes[0].links.peers()[&n2];
        let now = h.now;
        let oversize = wire::FrameError::Oversize {
            len: 2 << 20,
            max: 1 << 20,
        };
        h.nodes[0].link_lost(link, LinkLoss::Frame(oversize), now);
        let acts = actions(&mut h.nodes[0]);
        assert!(rejected_with(&acts, "bad framing"), "{acts:?}");
        // Hand the Reject and the close to n2 as the harness would.
        for a in acts {
            h.requeue(0, a);
        }
        h.settle();
        let min_wait = (BACKOFF_BASE * (1 << strike)).min(cap) / 2;
        for (i, peer) in [(0, &n2), (1, &n1)] {
            let wait = h.nodes[i].dialer.next_at(peer).unwrap().saturating_sub(now);
            println!("strike {strike}: node {i} redials after {wait:?}");
            assert!(
                wait >= min_wait,
                "strike {strike}, node {i}: {wait:?} < {min_wait:?}"
            );
        }
        // Nothing is dialled before the backoff is over.
        h.advance(min_wait - STEP);
        assert_eq!(h.running(0), vec!["n1@10.0.0.1"], "strike {strike}");
        h.advance(cap + Duration::from_millis(200));
        assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
        assert_eq!(n1_routes_at_n2(&h), vec!["a/1"]);
    }
    // A link that stays up long enough clears the strikes: the next plain loss redials fast.
    h.advance(STABLE_LINK);
    let link = h.nodes[0].links.peers()[&n2];
    let now = h.now;
    h.nodes[0].close(link, now);
    let wait = h.nodes[0].dialer.next_at(&n2).unwrap().saturating_sub(now);
    assert!(wait <= BACKOFF_BASE, "{wait:?}");
}

#[test]
fn a_silent_link_is_dead_after_three_heartbeats_and_its_routes_are_hidden_then_purged() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(1));
    h.partition(0, 1);
    h.advance(HEARTBEAT * 2);
    assert_eq!(h.running(0), all3(), "two silent heartbeats are not enough");
    h.advance(HEARTBEAT * 2);
    assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n3@10.0.0.3"]);
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    assert!(
        h.nodes[0].routes().is_empty(),
        "n2's routes no longer listed on n1"
    );
    assert_eq!(h.nodes[0].metrics().routes, 0);
    // QoS >= 1 is buffered for n2, QoS 0 is not.
    assert_eq!(h.nodes[0].forward(&publish("t/1", false)), 1);
    let qos0 = ForwardRef {
        qos: 0,
        ..publish("t/1", false)
    };
    assert_eq!(h.nodes[0].forward(&qos0), 0);
    // After the buffer window the routes and the buffer go.
    h.advance(FORWARD_BUFFER_WINDOW);
    assert_eq!(h.nodes[0].forward(&publish("t/1", false)), 0);
    assert!(h.nodes[0].metrics().forward_drops >= 2);
    // n3 still sees n2 and its routes.
    assert_eq!(h.running(2), all3());
    assert_eq!(h.nodes[2].routes().len(), 1);
}

#[test]
fn a_healed_partition_rejoins_and_resyncs_without_an_operator() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    h.partition(0, 1);
    h.partition(0, 2);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2", "n3@10.0.0.3"]);
    // Routes change on both sides while split.
    h.nodes[2].local_route_added("s/#", h.now);
    h.nodes[0].local_route_added("m/#", h.now);
    h.heal();
    h.advance(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
        assert_eq!(
            h.nodes[i].routes(),
            vec![
                RouteEntry {
                    filter: "m/#".into(),
                    nodes: vec!["n1@10.0.0.1".into()]
                },
                RouteEntry {
                    filter: "s/#".into(),
                    nodes: vec!["n3@10.0.0.3".into()]
                },
            ],
            "node {i}"
        );
    }
}

fn accepted(cfg: ClusterConfig) -> (Cluster, LinkId) {
    let mut c = Cluster::new(cfg, 7, 7, Duration::ZERO);
    let link = LinkId(1);
    c.link_opened(link, Harness::addr(5), None, Duration::ZERO);
    (c, link)
}

fn rejected_with(actions: &[ClusterAction], reason: &str) -> bool {
    let reject = actions.iter().find_map(|a| match a {
        ClusterAction::Send { frame, .. } => {
            match wire::decode(&frame[wire::LENGTH_PREFIX..]).ok()? {
                LinkMessage::Reject { reason } => Some(reason),
                _ => None,
            }
        }
        _ => None,
    });
    reject.as_deref() == Some(reason) && matches!(actions.last(), Some(ClusterAction::Close { .. }))
}

fn hello(protocol: u16, cluster: &str, node: &str) -> Bytes {
    wire::encode(&LinkMessage::Hello {
        protocol,
        cluster: cluster.into(),
        node: node.into(),
        port: 4370,
        incarnation: 1,
        nonce: [9; NONCE_LEN],
    })
}

#[test]
fn unknown_protocol_version_is_refused() {
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(
        link,
        &hello(99, "flockmq", "n2@10.0.0.2")[4..],
        Duration::ZERO,
    );
    assert!(rejected_with(&actions(&mut c), "unknown protocol version"));
    assert_eq!(c.metrics().links_rejected, 1);
}

#[test]
fn another_cluster_and_our_own_name_are_refused() {
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(
        link,
        &hello(wire::PROTOCOL_VERSION, "other", "n2@10.0.0.2")[4..],
        Duration::ZERO,
    );
    assert!(rejected_with(&actions(&mut c), "cluster name mismatch"));
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(
        link,
        &hello(wire::PROTOCOL_VERSION, "flockmq", "n1@10.0.0.1")[4..],
        Duration::ZERO,
    );
    assert!(rejected_with(&actions(&mut c), "duplicate node name"));
}

#[test]
fn garbage_and_messages_before_the_handshake_are_refused() {
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    c.handle_frame(link, b"\xff\xff\xff\xffGET / HTTP/1.1", Duration::ZERO);
    assert!(rejected_with(&actions(&mut c), "undecodable frame"));
    let (mut c, link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    let routes = wire::encode(&LinkMessage::RouteAdd("#".into()));
    c.handle_frame(link, &routes[4..], Duration::ZERO);
    assert!(rejected_with(&actions(&mut c), "protocol error"));
    assert!(c.routes().is_empty());
}

#[test]
fn a_stalled_handshake_times_out() {
    let (mut c, _link) = accepted(config("n1@10.0.0.1", Discovery::Manual, &[]));
    let at = c.poll_timeout().expect("handshake deadline armed");
    assert_eq!(at, MIN_HANDSHAKE_TIMEOUT);
    c.handle_timeout(at);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [ClusterAction::Close { .. }]
    ));
}

#[test]
fn wrong_cookie_is_refused_and_no_cookie_crosses_the_wire() {
    let mut other = config("n2@10.0.0.2", Discovery::Manual, &[]);
    other.cookie = "another-cookie".into();
    let mut h = Harness::new(vec![config("n1@10.0.0.1", Discovery::Manual, &[]), other]);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(100));
    let (_, _, result) = h.joins.first().expect("join answered");
    let reason = result.as_ref().unwrap_err();
    assert!(reason.contains("cookie check"), "{reason}");
    assert_eq!(h.running(0), vec!["n1@10.0.0.1"]);
    assert_eq!(h.running(1), vec!["n2@10.0.0.2"]);
    assert!(!h.wire_log.is_empty());
    for cookie in [COOKIE, "another-cookie"] {
        assert!(
            !h.wire_log
                .windows(cookie.len())
                .any(|w| w == cookie.as_bytes()),
            "{cookie} appeared on the wire"
        );
    }
}

#[test]
fn handshake_bytes_of_a_good_link_never_contain_the_cookie() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(0), all3());
    let text = String::from_utf8_lossy(&h.wire_log);
    assert!(
        text.contains("n1@10.0.0.1"),
        "the capture saw the handshake"
    );
    assert!(!text.contains(COOKIE));
}
