//! The member list file: what is saved, a whole cluster restarted from its files, bad lines.

use super::*;

fn manual3_joined() -> Harness {
    let mut h = Harness::new(vec![
        config("n1@10.0.0.1", Discovery::Manual, &[]),
        config("n2@10.0.0.2", Discovery::Manual, &[]),
        config("n3@10.0.0.3", Discovery::Manual, &[]),
    ]);
    h.nodes[1].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.nodes[2].join(&"n1@10.0.0.1".parse().unwrap(), h.now);
    h.advance(Duration::from_secs(1));
    assert!((0..3).all(|i| h.running(i) == all3()));
    h
}

#[test]
fn the_member_list_file_follows_membership() {
    let mut h = manual3_joined();
    assert_eq!(
        h.saved.get(&0).map(String::as_str),
        Some(
            "# flockmq cluster members, rewritten by the node; delete it to forget the cluster\n\
             n2@10.0.0.2 4370\nn3@10.0.0.3 4370\n"
        )
    );
    // A stopped member stays in the file (it is still a member).
    h.crash(2);
    h.advance(Duration::from_secs(1));
    assert!(h.saved[&0].contains("n3@10.0.0.3"));
    // Leaving empties it, force-leave removes the member.
    let now = h.now;
    h.nodes[0].force_leave(&name("n3@10.0.0.3"), now).unwrap();
    h.advance(HEARTBEAT);
    assert!(!h.saved[&0].contains("n3@10.0.0.3"));
    assert!(h.saved[&0].contains("n2@10.0.0.2"));
    let now = h.now;
    h.nodes[1].leave(now).unwrap();
    h.advance(HEARTBEAT);
    assert_eq!(
        h.saved[&1].lines().filter(|l| !l.starts_with('#')).count(),
        0
    );
}

#[test]
fn a_whole_manual_cluster_restarted_finds_itself_again_from_its_member_files() {
    // Without the files: three islands.
    let mut h = manual3_joined();
    for i in 0..3 {
        h.crash(i);
    }
    for i in 0..3 {
        h.restart(i);
    }
    h.advance(Duration::from_secs(5));
    assert!((0..3).all(|i| h.running(i).len() == 1));

    let mut h = manual3_joined();
    let files = h.saved.clone();
    for i in 0..3 {
        h.crash(i);
    }
    let now = h.now;
    for i in 0..3 {
        h.restart(i);
        assert_eq!(h.nodes[i].restore_members(&files[&i], now), 2);
    }
    h.advance(Duration::from_secs(5));
    for i in 0..3 {
        assert_eq!(h.running(i), all3(), "node {i}");
    }
}

#[test]
fn bad_lines_of_a_member_list_file_are_skipped() {
    let mut c = lone_n1(Discovery::Manual);
    let text = "# comment\n\nn2@10.0.0.2 4370\ngarbage\nn3@10.0.0.3 notaport\nn1@10.0.0.1 4370\n\
                n4@[fd00::4] 4371\n";
    assert_eq!(c.restore_members(text, Duration::ZERO), 2);
    assert_eq!(c.status().stopped_nodes, vec!["n2@10.0.0.2", "n4@fd00::4"]);
    // What a node writes, it reads back (IPv6 hosts included).
    let mut again = lone_n1(Discovery::Manual);
    assert_eq!(
        again.restore_members(&c.membership.file(), Duration::ZERO),
        2
    );
    assert_eq!(again.membership.file(), c.membership.file());
    c.handle_timeout(Duration::ZERO);
    let dials: Vec<(String, u16)> = actions(&mut c)
        .into_iter()
        .filter_map(|a| match a {
            ClusterAction::Dial { node, port, .. } => Some((node.to_string(), port)),
            _ => None,
        })
        .collect();
    assert_eq!(
        dials,
        vec![("n2@10.0.0.2".into(), 4370), ("n4@fd00::4".into(), 4371)]
    );
}
