//! Three `flockmq start` processes, each in its own Linux network namespace on one bridged LAN
//! (see `common::netns`), forming a cluster by static seeds, by IPv4 multicast and by IPv6
//! multicast, checked with `flockmq ctl cluster status` and the mosquitto clients.
//!
//! Needs root, iproute2 and mosquitto clients: skipped loudly without them, failed under CI=true.
//! Each test has its own subnet number, hence its own namespaces and prefixes, so they run in
//! parallel.

mod common;

use common::netns::{ADMIN, MQTT_PORT, NetnsLab};

/// Config lines every lab node shares; `host` is how the node name writes its address.
fn base_config(lab: &NetnsLab, k: usize, host: &str, mqtt_bind: &str) -> String {
    format!(
        "## node {k} of a netns lab\n\
         node.name = n{k}@{host}\n\
         node.cookie = netnslabcookie\n\
         node.data_dir = {data}\n\
         listener.tcp.bind = {mqtt_bind}:{MQTT_PORT}\n\
         admin.bind = {ADMIN}\n\
         cluster.name = netnslab\n\
         cluster.port = 4370\n\
         cluster.heartbeat = 200ms\n\
         log.level = flockmq=debug,info\n",
        data = lab.dir().join(format!("data{k}")).display(),
    )
}

fn names_v4(lab: &NetnsLab) -> Vec<String> {
    (1..=3).map(|k| format!("n{k}@{}", lab.ipv4(k))).collect()
}

/// Waits until every node's status lists exactly `names` running.
fn wait_formed(lab: &NetnsLab, names: &[String]) {
    let expected = common::running_status(names);
    for k in 1..=names.len() {
        lab.wait_status(k, &expected);
    }
}

/// Starts n1..n3 with static seeds listing all three and waits until each lists all three;
/// returns their names.
fn start_static_cluster(lab: &mut NetnsLab) -> Vec<String> {
    let names = names_v4(lab);
    let seeds = names.join(",");
    for k in 1..=3 {
        let config = base_config(lab, k, &lab.ipv4(k).to_string(), "0.0.0.0")
            + &format!("cluster.discovery = static\ncluster.static.seeds = {seeds}\n");
        lab.start_node(k, &config);
    }
    wait_formed(lab, &names);
    names
}

#[test]
fn static_cluster_across_namespaces() {
    let Some(mut lab) = NetnsLab::create("static_cluster_across_namespaces", 1, 3) else {
        return;
    };
    let names = start_static_cluster(&mut lab);
    let (h1, h3) = (lab.ipv4(1).to_string(), lab.ipv4(3).to_string());
    lab.round_trip((3, &h3, &names[2]), (1, &h1), "lab/static");
}

#[test]
fn mcast_cluster_ipv4_without_seeds() {
    // Four namespaces: n4 sits on the same group with another cookie and must never join.
    let Some(mut lab) = NetnsLab::create("mcast_cluster_ipv4_without_seeds", 2, 4) else {
        return;
    };
    let names = names_v4(&lab);
    let stranger = format!("n4@{}", lab.ipv4(4));
    let config = base_config(&lab, 4, &lab.ipv4(4).to_string(), "0.0.0.0")
        .replace("netnslabcookie", "not-the-lab-cookie")
        + &format!(
            "cluster.discovery = mcast\ncluster.mcast.iface = {}\n",
            lab.ipv4(4)
        );
    lab.start_node(4, &config);
    for k in 1..=3 {
        // n3 keeps the default interface 0.0.0.0: the lab's 224.0.0.0/4 route must be enough.
        let iface = match k {
            3 => String::from("0.0.0.0"),
            _ => lab.ipv4(k).to_string(),
        };
        let config = base_config(&lab, k, &lab.ipv4(k).to_string(), "0.0.0.0")
            + &format!("cluster.discovery = mcast\ncluster.mcast.iface = {iface}\n");
        lab.start_node(k, &config);
    }
    wait_formed(&lab, &names);
    for k in 1..=4 {
        lab.assert_joined(k, "239.192.0.1");
    }
    // n4 keeps announcing; the others refuse it (and say why in their logs).
    lab.wait_status(4, &common::running_status(std::slice::from_ref(&stranger)));
    for k in 1..=3 {
        let (_, status, _) = lab.ctl(k, &["cluster", "status"]);
        if status.contains(&stranger) {
            lab.fail(&format!("n{k} lists the wrong-cookie node: {status}"));
        }
    }
    let refused = format!("{stranger} announces itself with another node.cookie");
    let mut polls = common::netns::polls();
    while !lab.logs().contains(&refused) {
        polls = polls.checked_sub(1).unwrap_or_else(|| {
            lab.fail("no node logged the wrong-cookie announce");
        });
        std::thread::sleep(common::netns::POLL);
    }
    let (h2, h3) = (lab.ipv4(2).to_string(), lab.ipv4(3).to_string());
    lab.round_trip((2, &h2, &names[1]), (3, &h3), "lab/v4/to2");
    lab.round_trip((3, &h3, &names[2]), (2, &h2), "lab/v4/to3");
}

#[test]
fn mcast_cluster_ipv6_without_seeds() {
    let Some(mut lab) = NetnsLab::create("mcast_cluster_ipv6_without_seeds", 3, 3) else {
        return;
    };
    // Node names carry IPv6 hosts in brackets; status prints them canonically, without.
    let names: Vec<String> = (1..=3).map(|k| format!("n{k}@{}", lab.ipv6(k))).collect();
    for k in 1..=3 {
        let host = format!("[{}]", lab.ipv6(k));
        let config = base_config(&lab, k, &host, "[::]")
            + "cluster.discovery = mcast\n\
               cluster.mcast.addr = ff02::4:1\n\
               cluster.mcast.iface = eth0\n";
        lab.start_node(k, &config);
    }
    wait_formed(&lab, &names);
    for k in 1..=3 {
        lab.assert_joined(k, "ff02::4:1");
    }
    let (h1, h2) = (lab.ipv6(1).to_string(), lab.ipv6(2).to_string());
    lab.round_trip((1, &h1, &names[0]), (2, &h2), "lab/v6/to1");
    lab.round_trip((2, &h2, &names[1]), (1, &h1), "lab/v6/to2");
}

/// Publishes `range` as QoS 1 payloads on `topic` from node `k`'s namespace (one connection).
fn publish_range(lab: &NetnsLab, k: usize, topic: &str, range: std::ops::Range<u32>) {
    use std::io::Write as _;
    let port = common::netns::MQTT_PORT.to_string();
    let mut child = lab
        .command(k, "mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip netns exec mosquitto_pub");
    {
        let mut stdin = child.stdin.take().expect("mosquitto_pub stdin");
        for i in range {
            writeln!(stdin, "m{i}").expect("write to mosquitto_pub");
        }
    }
    let status = child.wait().expect("mosquitto_pub exit");
    if !status.success() {
        lab.fail(&format!("mosquitto_pub in n{k} exited with {status}"));
    }
}

/// `ip -n NS link set eth0 up|down`: cuts node `k` off the bridge (its loopback stays up).
fn set_link(lab: &NetnsLab, k: usize, state: &str) {
    let ok = std::process::Command::new("ip")
        .args(["-n", &lab.ns(k), "link", "set", "eth0", state])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        lab.fail(&format!("ip link set eth0 {state} in n{k}"));
    }
}

/// QoS 1 messages published on n1 for a subscriber on n3 while n3's network is cut — some
/// written to the dead link before anyone noticed, some while n3 is listed as stopped — all
/// reach the subscriber once the network is back: the cluster buffers and resends them.
#[test]
fn qos1_forwards_survive_a_real_network_cut() {
    let Some(mut lab) = NetnsLab::create("qos1_forwards_survive_a_real_network_cut", 4, 3) else {
        return;
    };
    let names = start_static_cluster(&mut lab);
    let topic = "lab/cut";
    let port = common::netns::MQTT_PORT.to_string();
    let subscriber = lab
        .command(3, "mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-i", "cut-sub"])
        .args(["-t", topic, "-C", "60", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ip netns exec mosquitto_sub");
    lab.wait_route(1, topic, &names[2]);

    publish_range(&lab, 1, topic, 0..20);
    set_link(&lab, 3, "down");
    // Written to links that are already dead but not yet known to be.
    publish_range(&lab, 1, topic, 20..30);
    let stopped = format!("stopped_nodes,['{}']", names[2]);
    lab.wait_status_where(1, &format!("one containing {stopped:?}"), |s| {
        s.contains(&stopped)
    });
    // Buffered for the stopped node.
    publish_range(&lab, 1, topic, 30..45);
    set_link(&lab, 3, "up");
    lab.wait_status(1, &common::running_status(&names));
    publish_range(&lab, 1, topic, 45..60);

    let out = subscriber.wait_with_output().expect("mosquitto_sub output");
    let got: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let want: std::collections::BTreeSet<String> = (0..60).map(|i| format!("m{i}")).collect();
    if got != want {
        let missing: Vec<&String> = want.difference(&got).collect();
        lab.fail(&format!(
            "subscriber on n3 is missing {} of 60 messages: {missing:?} (stderr {:?})",
            missing.len(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}
