//! Membership: forming the cluster (static seeds, join), stopped and running members,
//! autoclean, leave and force-leave, merging member lists, the status line.

use super::*;

#[test]
fn static_seeds_form_a_full_mesh() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
        assert!(h.stopped(i).is_empty());
        assert_eq!(h.nodes[i].metrics().links_up, 2);
    }
}

#[test]
fn manual_join_learns_every_member_and_meshes() {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
        config("n3@10.0.0.3", Discovery::Manual, &[]),
    ]);
    h.nodes[1].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.joins, vec![(1, name("n1@10.0.0.1"), Ok(()))]);
    h.nodes[2].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
    }
    assert_eq!(
        h.nodes[2].metrics().links_up,
        2,
        "n3 dialled n1 it learned from n2"
    );
}

#[test]
fn join_of_an_unreachable_node_fails_with_a_reason() {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
    ]);
    h.crashed.insert(1);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(100));
    let (_, node, result) = h.joins.first().expect("join answered");
    assert_eq!(node, &name("n2@10.0.0.2"));
    assert!(
        result.as_ref().unwrap_err().contains("connection refused"),
        "{result:?}"
    );
    h.nodes[0].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.settle();
    assert_eq!(
        h.joins.last().unwrap().2,
        Err("cannot join the node itself".to_string())
    );
}

#[test]
fn a_crashed_node_is_stopped_then_running_again_after_restart() {
    let mut h = Harness::static3();
    h.nodes[1].local_route_added("old/#", h.now);
    h.advance(Duration::from_secs(1));
    h.crash(1);
    h.advance(HEARTBEAT);
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    assert!(h.nodes[0].routes().is_empty());
    h.restart(1);
    h.nodes[1].local_route_added("new/#", h.now);
    h.advance(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
    }
    assert_eq!(
        h.nodes[0].routes(),
        vec![RouteEntry {
            filter: "new/#".into(),
            nodes: vec!["n2@10.0.0.2".into()]
        }]
    );
}

#[test]
fn autoclean_forgets_a_member_stopped_too_long() {
    let mut configs: Vec<ClusterConfig> = ["n1@10.0.0.1", "n2@10.0.0.2"]
        .iter()
        .map(|n| config(n, Discovery::Manual, &[]))
        .collect();
    for c in &mut configs {
        c.autoclean = Some(Duration::from_secs(2));
    }
    let mut h = Harness::new(configs);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(500));
    h.crash(1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    h.advance(Duration::from_millis(1500));
    assert!(h.stopped(0).is_empty());
    assert_eq!(h.running(0), vec!["n1@10.0.0.1"]);
}

#[test]
fn leave_tells_the_others_and_force_leave_removes_a_stopped_member() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.nodes[2].leave(h.now), Ok(()));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(2), vec!["n3@10.0.0.3"]);
    for i in 0..2 {
        assert_eq!(h.running(i), vec!["n1@10.0.0.1", "n2@10.0.0.2"], "node {i}");
        assert!(h.stopped(i).is_empty(), "a left node is not stopped");
    }
    assert!(
        h.nodes[2].leave(h.now).is_err(),
        "not in a cluster any more"
    );

    h.crash(1);
    h.advance(HEARTBEAT);
    assert_eq!(h.stopped(0), vec!["n2@10.0.0.2"]);
    assert_eq!(h.nodes[0].force_leave(&name("n2@10.0.0.2"), h.now), Ok(()));
    assert!(h.stopped(0).is_empty());
    assert!(h.nodes[0].force_leave(&name("n2@10.0.0.2"), h.now).is_err());
    assert!(h.nodes[0].force_leave(&name("n1@10.0.0.1"), h.now).is_err());
}

#[test]
fn membership_merge_keeps_the_higher_incarnation_and_left_wins_ties() {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
    ]);
    h.nodes[0].join(&"n2@10.0.0.2".parse().unwrap(), h.now);
    h.advance(Duration::from_millis(300));
    let n2 = name("n2@10.0.0.2");
    let link = h.nodes[0].links.peers()[&n2];
    let entry = |node: &str, incarnation, left| MemberEntry {
        node: node.into(),
        port: 4370,
        incarnation,
        left,
    };
    let gossip = |entries: Vec<MemberEntry>| wire::encode(&LinkMessage::Members(entries));
    let now = h.now;
    // A new member, then an older rumour about it: the newer entry stays.
    let frame = gossip(vec![entry("n9@10.0.0.9", 50, false)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    let frame = gossip(vec![entry("n9@10.0.0.9", 40, true)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    assert_eq!(h.stopped(0), vec!["n9@10.0.0.9"]);
    // Same incarnation, left: left wins.
    let frame = gossip(vec![entry("n9@10.0.0.9", 50, true)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    assert!(h.stopped(0).is_empty());
    // A stale "you left" about ourselves is refuted with a higher incarnation.
    let before = h.nodes[0].membership.incarnation();
    let frame = gossip(vec![entry("n1@10.0.0.1", before, true)]);
    h.nodes[0].handle_frame(link, &frame[4..], now);
    assert!(h.nodes[0].membership.incarnation() > before);
    assert_eq!(h.running(0), vec!["n1@10.0.0.1", "n2@10.0.0.2"]);
}

#[test]
fn cluster_status_renders_like_emqx() {
    let status = ClusterStatus {
        running_nodes: vec!["n1@127.0.0.1".into(), "n2@127.0.0.2".into()],
        stopped_nodes: vec![],
    };
    assert_eq!(
        status.render(),
        "Cluster status: [{running_nodes,['n1@127.0.0.1','n2@127.0.0.2']}]"
    );
    let status = ClusterStatus {
        running_nodes: vec!["n1@127.0.0.1".into()],
        stopped_nodes: vec!["n2@127.0.0.2".into()],
    };
    assert_eq!(
        status.render(),
        "Cluster status: [{running_nodes,['n1@127.0.0.1']},{stopped_nodes,['n2@127.0.0.2']}]"
    );
}
