//! Multicast discovery: announces, who dials whom, bad datagrams, loss, late nodes, leaving.

use super::*;
use crate::cluster::discovery;

fn all_n(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}@10.0.0.{i}")).collect()
}

fn everyone_sees_everyone(h: &Harness, n: usize) -> bool {
    (0..n).all(|i| h.running(i) == all_n(n) && h.stopped(i).is_empty())
}

#[test]
fn multicast_alone_forms_a_full_mesh() {
    let mut h = Harness::mcast(3);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3), "{:?}", h.running(0));
    // Discovery made exactly one link per pair, each dialled by the lower name.
    for i in 0..3 {
        assert_eq!(h.nodes[i].metrics().links_up, 2);
    }
}

#[test]
fn the_lower_name_dials_and_the_higher_answers_a_ping_with_a_pong() {
    let n1 = config("n1@10.0.0.1", Discovery::Mcast, &[]);
    let n2 = config("n2@10.0.0.2", Discovery::Mcast, &[]);
    let mut c1 = Cluster::new(n1.clone(), 1, 1, Duration::ZERO);
    let mut c2 = Cluster::new(n2.clone(), 1, 2, Duration::ZERO);
    let ping = |c: &mut Cluster| {
        c.handle_timeout(Duration::ZERO);
        actions(c)
    };
    let ping = |c: &mut Cluster| match ping(c).into_iter().find_map(|a| match a {
        ClusterAction::Announce(b) => Some(b),
        _ => None,
    }) {
        Some(b) => b,
        None => panic!("no announce at start"),
    };
    let ping1 = ping(&mut c1);
    let ping2 = ping(&mut c2);
    let from1: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let from2: SocketAddr = "10.0.0.2:40000".parse().unwrap();

    // n2 hears n1's ping: n2 is higher, so it answers n1's announce socket and does not dial.
    c2.handle_datagram(from1, &ping1, Duration::ZERO);
    c2.handle_timeout(Duration::ZERO);
    let a2 = actions(&mut c2);
    assert!(
        a2.iter()
            .any(|a| matches!(a, ClusterAction::Datagram { to, .. } if *to == from1)),
        "{a2:?}"
    );
    assert!(!a2.iter().any(|a| matches!(a, ClusterAction::Dial { .. })));
    let pong = a2
        .iter()
        .find_map(|a| match a {
            ClusterAction::Datagram { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .unwrap();

    // n1 hears the pong (or n2's ping): n1 is lower, so it dials n2 at n2's cluster port.
    for datagram in [pong, ping2] {
        let mut c1 = Cluster::new(n1.clone(), 1, 1, Duration::ZERO);
        let _ = actions(&mut c1);
        c1.handle_datagram(from2, &datagram, Duration::ZERO);
        c1.handle_timeout(Duration::ZERO);
        let a1 = actions(&mut c1);
        assert!(
            a1.iter().any(|a| matches!(a, ClusterAction::Dial { node, port: 4370, .. } if node.as_str() == "n2@10.0.0.2")),
            "{a1:?}"
        );
        assert!(
            !a1.iter()
                .any(|a| matches!(a, ClusterAction::Datagram { .. }))
        );
        assert_eq!(c1.metrics().datagrams_received, 1);
    }
}

#[test]
fn own_announces_looped_back_are_ignored() {
    let mut h = Harness::mcast(1);
    h.advance(Duration::from_secs(10));
    let m = h.nodes[0].metrics();
    assert!(m.announces_sent >= 3, "{m:?}");
    assert_eq!(m.datagrams_received, 0);
    assert_eq!(m.datagrams_dropped, 0);
    assert_eq!(h.running(0), all_n(1));
    assert!(h.queue.is_empty());
}

/// Feeds `datagram` to a fresh n1 and returns its actions and metrics.
fn n1_hears(datagram: &[u8]) -> (Vec<ClusterAction>, ClusterMetrics) {
    let mut c = lone_n1(Discovery::Mcast);
    let _ = actions(&mut c);
    let from: SocketAddr = "10.0.0.9:40000".parse().unwrap();
    c.handle_datagram(from, datagram, Duration::ZERO);
    c.handle_timeout(Duration::ZERO);
    let acts = actions(&mut c)
        .into_iter()
        .filter(|a| !matches!(a, ClusterAction::Announce(_)))
        .collect();
    (acts, c.metrics())
}

fn announce_of(node: &str, cluster: &str, cookie: &str, kind: discovery::Kind) -> Bytes {
    discovery::encode(
        kind,
        &discovery::Sender {
            protocol: wire::PROTOCOL_VERSION,
            port: 4370,
            instance: 99,
            node,
            cluster,
            cookie,
        },
    )
}

#[test]
fn a_genuine_announce_is_acted_on() {
    let (acts, m) = n1_hears(&announce_of(
        "n9@10.0.0.9",
        "flockmq",
        COOKIE,
        discovery::Kind::Ping,
    ));
    assert!(
        matches!(acts.as_slice(), [ClusterAction::Dial { .. }]),
        "{acts:?}"
    );
    assert_eq!((m.datagrams_received, m.datagrams_dropped), (1, 0));
}

#[test]
fn bad_announces_are_dropped_and_make_nobody_dial_or_answer() {
    let genuine = announce_of("n9@10.0.0.9", "flockmq", COOKIE, discovery::Kind::Ping);
    // Same digest, another port: a forger who does not know the cookie.
    let mut forged = genuine.to_vec();
    forged[8] ^= 0x01;
    let other_protocol = discovery::encode(
        discovery::Kind::Ping,
        &discovery::Sender {
            protocol: wire::PROTOCOL_VERSION + 1,
            port: 4370,
            instance: 99,
            node: "n9@10.0.0.9",
            cluster: "flockmq",
            cookie: COOKIE,
        },
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", genuine[..genuine.len() - 3].to_vec()),
        ("huge", vec![b'F'; 4000]),
        ("not ours", b"NOTIFY * HTTP/1.1\r\n".to_vec()),
        (
            "other cluster",
            announce_of("n9@10.0.0.9", "other", COOKIE, discovery::Kind::Ping).to_vec(),
        ),
        (
            "other cookie",
            announce_of("n9@10.0.0.9", "flockmq", "wrong", discovery::Kind::Ping).to_vec(),
        ),
        ("forged", forged),
        ("other protocol", other_protocol.to_vec()),
        (
            "bad node name",
            announce_of("no-at-sign", "flockmq", COOKIE, discovery::Kind::Ping).to_vec(),
        ),
        (
            "our own name from another instance",
            announce_of("n1@10.0.0.1", "flockmq", COOKIE, discovery::Kind::Ping).to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let (acts, m) = n1_hears(&bytes);
        assert!(acts.is_empty(), "{what}: {acts:?}");
        assert_eq!(
            (m.datagrams_received, m.datagrams_dropped),
            (0, 1),
            "{what}"
        );
    }
}

#[test]
fn announces_never_stop_and_back_off_to_about_five_seconds() {
    let mut h = Harness::mcast(1);
    h.advance(Duration::from_secs(120));
    let times: Vec<Duration> = h.announces.iter().map(|(_, t)| *t).collect();
    assert!(
        times.first().is_some_and(|t| *t <= STEP),
        "announces at start"
    );
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] < Duration::from_millis(700),
        "fast at first: {gaps:?}"
    );
    for g in &gaps {
        assert!(*g <= ANNOUNCE_MAX * 5 / 4 + STEP, "gap {g:?} too long");
    }
    assert!(
        times.last().unwrap() >= &Duration::from_secs(113),
        "still announcing"
    );
    let late: BTreeSet<Duration> = gaps[gaps.len() - 10..].iter().copied().collect();
    assert!(late.len() > 1, "jittered: {late:?}");
    assert!(late.iter().all(|g| *g >= ANNOUNCE_MAX * 3 / 4), "{late:?}");
}

#[test]
fn five_nodes_converge_under_ninety_percent_datagram_loss_only_later() {
    let mut clean = Harness::mcast(5);
    clean.advance(Duration::from_secs(1));
    assert!(everyone_sees_everyone(&clean, 5));

    let mut lossy = Harness::mcast(5);
    lossy.mcast_loss = 0.9;
    let mut waited = Duration::ZERO;
    while !everyone_sees_everyone(&lossy, 5) {
        lossy.advance(Duration::from_millis(500));
        waited += Duration::from_millis(500);
        assert!(waited < Duration::from_secs(120), "{:?}", lossy.running(0));
    }
    assert!(
        waited > Duration::from_secs(1),
        "loss slowed it down: {waited:?}"
    );
}

#[test]
fn a_node_started_later_is_found_by_its_first_announce() {
    let mut h = Harness::mcast(4);
    h.crash(3);
    h.advance(Duration::from_secs(30));
    assert!(everyone_sees_everyone(&h, 3) || h.running(0).len() == 3);
    let before = h.announces.len();
    h.restart(3);
    h.advance(Duration::from_millis(200));
    assert!(everyone_sees_everyone(&h, 4), "{:?}", h.running(3));
    // Found well before anyone's next periodic announce.
    assert!(
        h.announces.len() - before <= 2,
        "{}",
        h.announces.len() - before
    );
}

#[test]
fn cutting_only_multicast_leaves_an_existing_cluster_alone() {
    let mut h = Harness::mcast(3);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3));
    for a in 0..3 {
        for b in 0..3 {
            h.mcast_cut.insert((a, b));
        }
    }
    for _ in 0..60 {
        h.advance(Duration::from_secs(1));
        assert!(everyone_sees_everyone(&h, 3));
    }
}

#[test]
fn a_node_that_left_neither_announces_nor_answers_until_it_joins() {
    let mut h = Harness::mcast(3);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3));
    let now = h.now;
    h.nodes[2].leave(now).unwrap();
    h.advance(Duration::from_secs(30));
    assert_eq!(h.running(2), vec!["n3@10.0.0.3".to_string()]);
    assert_eq!(h.running(0), all_n(2));
    assert!(
        !h.announces.iter().any(|(i, t)| *i == 2 && *t > now),
        "a node that left stopped announcing"
    );
    let now = h.now;
    h.nodes[2].join(&"n1@10.0.0.1".parse().unwrap(), now);
    h.advance(Duration::from_secs(2));
    assert!(everyone_sees_everyone(&h, 3));
    assert!(h.announces.iter().any(|(i, t)| *i == 2 && *t > now));
}

#[test]
fn a_wrong_cookie_node_on_the_group_never_joins_and_no_cookie_is_sent() {
    let mut configs: Vec<ClusterConfig> = (1..=4)
        .map(|i| config(&format!("n{i}@10.0.0.{i}"), Discovery::Mcast, &[]))
        .collect();
    configs[3].cookie = "another-cookie".into();
    // The odd node has the lowest name, so it is the one that would dial.
    configs[3].node = name("a0@10.0.0.4");
    let mut h = Harness::new(configs);
    h.advance(Duration::from_secs(30));
    assert!((0..3).all(|i| h.running(i) == all_n(3) && h.stopped(i).is_empty()));
    assert_eq!(h.running(3), vec!["a0@10.0.0.4".to_string()]);
    assert!(h.nodes[3].metrics().datagrams_dropped > 0);
    for cookie in [COOKIE, "another-cookie"] {
        assert!(
            !h.datagram_log
                .windows(cookie.len())
                .any(|w| w == cookie.as_bytes())
        );
    }
}
