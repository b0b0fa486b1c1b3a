//! Forwarding: once per destination node, retained publishes, and numbered QoS >= 1 forwards
//! (acks, resume, buffer window and bounds, restarts).

use super::*;

#[test]
fn the_seed_example_forwards_once_per_destination_node() {
    let mut h = Harness::static3();
    // client1@n1: t/+/x, t/+/y; client2@n2: t/#; client3@n3: t/+/x, t/a.
    for f in ["t/+/x", "t/+/y"] {
        h.nodes[0].local_route_added(f, h.now);
    }
    h.nodes[1].local_route_added("t/#", h.now);
    for f in ["t/+/x", "t/a"] {
        h.nodes[2].local_route_added(f, h.now);
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[0].forward(&publish("t/a", false)), 2);
    h.settle();
    assert_eq!(
        delivered_to(&h),
        vec![(1, "t/a".to_string()), (2, "t/a".to_string())]
    );
    // n3 has two filters matching t/b/x but gets one copy.
    h.delivered.clear();
    assert_eq!(h.nodes[1].forward(&publish("t/b/x", false)), 2);
    h.settle();
    assert_eq!(
        delivered_to(&h),
        vec![(0, "t/b/x".to_string()), (2, "t/b/x".to_string())]
    );
    h.delivered.clear();
    assert_eq!(h.nodes[0].forward(&publish("u/1", false)), 0);
    h.settle();
    assert!(h.delivered.is_empty());
    assert_eq!(h.nodes[0].metrics().forwards_sent, 2);
    assert_eq!(h.nodes[2].metrics().forwards_received, 2);
}

#[test]
fn overlapping_filters_on_one_node_get_one_copy() {
    let mut h = Harness::static3();
    for f in ["t/+", "t/#", "t/a", "+/a"] {
        h.nodes[1].local_route_added(f, h.now);
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[0].forward(&publish("t/a", false)), 1);
    h.settle();
    assert_eq!(delivered_to(&h), vec![(1, "t/a".to_string())]);
}

#[test]
fn a_forwarded_publish_is_delivered_and_never_forwarded_again() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#", h.now);
    h.nodes[2].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(1));
    h.nodes[0].forward(&publish("t/x", false));
    // Take n1's frames by hand, hand them to n2, and look at everything n2 does.
    h.drain(0);
    let frames: Vec<Ev> = h.queue.drain(..).collect();
    for ev in frames {
        if let Ev::Frame { to: 1, link, frame } = ev {
            h.nodes[1].handle_frame(link, &frame.slice(wire::LENGTH_PREFIX..), h.now);
        }
    }
    let mut actions = Vec::new();
    while let Some(a) = h.nodes[1].poll_action() {
        actions.push(a);
    }
    assert!(matches!(actions.as_slice(), [ClusterAction::Deliver(p)] if p.topic == "t/x"));
}

#[test]
fn retained_publishes_go_to_every_linked_node() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[0].forward(&publish("r/1", true)), 2);
    h.settle();
    assert_eq!(
        delivered_to(&h),
        vec![(1, "r/1".to_string()), (2, "r/1".to_string())]
    );
}

fn payloads_at(h: &Harness, node: usize) -> Vec<Vec<u8>> {
    h.delivered
        .iter()
        .filter(|(i, _)| *i == node)
        .map(|(_, p)| p.payload.clone())
        .collect()
}

fn numbered_publish(payload: &[u8]) -> ForwardRef<'_> {
    ForwardRef {
        payload,
        ..publish("t/x", false)
    }
}

fn expected(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| i.to_be_bytes().to_vec()).collect()
}

#[test]
fn qos1_forwards_survive_a_partition_shorter_than_the_window_in_order_and_once() {
    let mut h = Harness::static3();
    h.nodes[2].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(1));
    for i in 0..10u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.settle();
    // The link dies silently: these frames vanish on the wire, before anyone notices.
    h.partition(0, 2);
    for i in 10..20u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.advance(HEARTBEAT * 4);
    assert_eq!(h.stopped(0), vec!["n3@10.0.0.3"]);
    // Noticed as down: buffered.
    for i in 20..30u32 {
        assert_eq!(h.nodes[0].forward(&numbered_publish(&i.to_be_bytes())), 1);
    }
    assert!(h.nodes[0].metrics().forwards_unacked >= 20);
    h.advance(Duration::from_secs(5));
    assert_eq!(payloads_at(&h, 2), expected(0..10));
    h.heal();
    h.advance(Duration::from_secs(3));
    assert_eq!(h.running(0), all3());
    // New traffic after the heal comes after the resent backlog.
    for i in 30..35u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(payloads_at(&h, 2), expected(0..35));
    assert_eq!(h.nodes[0].metrics().forwards_unacked, 0, "all acknowledged");
    assert_eq!(h.nodes[0].metrics().forward_drops, 0);
}

#[test]
fn a_resumed_link_does_not_resend_what_was_delivered() {
    let mut h = Harness::static3();
    h.nodes[2].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(1));
    // Delivered, but the partition comes before the heartbeat's ack.
    for i in 0..5u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    h.settle();
    h.partition(0, 2);
    assert!(h.nodes[0].metrics().forwards_unacked > 0);
    h.advance(Duration::from_secs(1));
    h.heal();
    h.advance(Duration::from_secs(3));
    assert_eq!(h.running(2), all3());
    assert_eq!(payloads_at(&h, 2), expected(0..5), "no duplicates");
    assert_eq!(h.nodes[0].metrics().forwards_unacked, 0);
}

#[test]
fn a_duplicate_numbered_forward_is_not_delivered_twice() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    let link = *h.nodes[2].links.peers().get(&name("n1@10.0.0.1")).unwrap();
    let frame = wire::encode_forward_seq(&numbered_publish(b"x"), 1, &mut BytesMut::new());
    for _ in 0..3 {
        h.nodes[2].handle_frame(link, &frame[wire::LENGTH_PREFIX..], h.now);
    }
    let delivered = actions(&mut h.nodes[2])
        .into_iter()
        .filter(|a| matches!(a, ClusterAction::Deliver(_)))
        .count();
    assert_eq!(delivered, 1);
}

#[test]
fn acknowledgements_keep_the_sender_buffer_small_on_a_live_link() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(1));
    for i in 0..1000u32 {
        h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
        if i % 10 == 0 {
            h.settle();
        }
    }
    h.settle();
    assert!(
        h.nodes[0].metrics().forwards_unacked < ACK_EVERY,
        "{:?}",
        h.nodes[0].metrics()
    );
    h.advance(HEARTBEAT * 2);
    assert_eq!(h.nodes[0].metrics().forwards_unacked, 0);
    assert_eq!(payloads_at(&h, 1), expected(0..1000));
}

#[test]
fn a_restarted_node_gets_fresh_numbering_and_not_the_old_buffer() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(1));
    h.crash(1);
    h.advance(HEARTBEAT * 4);
    assert_eq!(h.nodes[0].forward(&numbered_publish(b"old")), 1, "buffered");
    h.restart(1);
    h.nodes[1].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(3));
    assert_eq!(h.running(0), all3());
    assert_eq!(h.nodes[0].forward(&numbered_publish(b"new")), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(payloads_at(&h, 1), vec![b"new".to_vec()]);
    assert_eq!(
        h.nodes[0].metrics().forward_drops,
        1,
        "the old one was dropped"
    );
}

#[test]
fn the_forward_buffer_is_bounded() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("t/#", h.now);
    h.advance(Duration::from_secs(1));
    h.partition(0, 1);
    h.advance(HEARTBEAT * 4);
    let mut kept = 0;
    for i in 0..(FORWARD_BUFFER_MSGS as u32 + 10) {
        kept += h.nodes[0].forward(&numbered_publish(&i.to_be_bytes()));
    }
    assert_eq!(kept, FORWARD_BUFFER_MSGS);
    assert_eq!(h.nodes[0].metrics().forward_drops, 10);
}
