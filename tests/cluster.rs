//! A three-node static cluster on 127.0.0.1, 127.0.0.2 and 127.0.0.3, started from the built
//! binary with configs in the EMQX tutorial's style, driven with `flockmq ctl` and rumqttc:
//! status, the tutorial's routing example, a killed and restarted node, manual join / leave /
//! force-leave.
//!
//! Each test uses its own cluster port (all its nodes share it, each on its own IP) so tests run
//! in parallel; MQTT and admin ports are ephemeral and read from the startup line. Every admin
//! endpoint is on 127.0.0.1 (any other address would need `admin.token`).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{QUIET, V4};
use rumqttc::QoS;

const BIN: &str = env!("CARGO_BIN_EXE_flockmq");
/// Cluster formation, node death and restart are a few heartbeats of 200 ms each.
const CONVERGE: Duration = Duration::from_secs(15);
/// How often a waiting test asks again.
const POLL: Duration = Duration::from_millis(100);

/// How many polls fit in `CONVERGE` (tests count polls: the clock belongs to `Net`).
fn polls() -> u32 {
    (CONVERGE.as_millis() / POLL.as_millis()) as u32
}

/// A `flockmq start` process, killed on drop; its stderr is kept for diagnostics.
struct Node {
    name: String,
    config: PathBuf,
    child: Child,
    mqtt: SocketAddr,
    admin: SocketAddr,
    logs: Arc<Mutex<String>>,
}

fn node_name(i: usize) -> String {
    format!("n{i}@127.0.0.{i}")
}

/// Writes the tutorial-style config of node `i` (1-based) of a cluster on `cluster_port`.
fn write_config(test: &str, i: usize, cluster_port: u16, discovery: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flockmq-cluster-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("n{i}.conf"));
    let seeds = (1..=3).map(node_name).collect::<Vec<_>>().join(",");
    let text = format!(
        "## node {i} of the {test} test\n\
         node.name = {name}\n\
         node.cookie = emqxsecretcookie\n\
         node.data_dir = {data}\n\
         listener.tcp.bind = 127.0.0.{i}:0\n\
         admin.bind = 127.0.0.1:0\n\
         cluster.name = testcluster\n\
         cluster.port = {cluster_port}\n\
         cluster.discovery = {discovery}\n\
         ##--------------------------------------------------------------------\n\
         ## Cluster with static node list\n\
         cluster.static.seeds = {seeds}\n\
         cluster.heartbeat = 200ms\n\
         log.level = flockmq=debug,info\n",
        name = node_name(i),
        data = dir.join(format!("data{i}")).display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Node {
    fn start(config: PathBuf, name: String) -> Node {
        let mut child = Command::new(BIN)
            .arg("start")
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flockmq binary runs");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        #[allow(clippy::disallowed_methods)] // test harness, not broker code
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = String::new();
            while reader.read_line(&mut buf).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&buf);
                buf.clear();
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // flockmq NODE listening for MQTT on ADDR, admin on ADDR
        let addr_after = |marker: &str| -> SocketAddr {
            let rest = line.split(marker).nth(1).expect("startup line");
            rest.split([',', ' ', '\n'])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (mqtt, admin) = (
            addr_after("listening for MQTT on "),
            addr_after("admin on "),
        );
        Node {
            name,
            config,
            child,
            mqtt,
            admin,
            logs,
        }
    }

    fn start_nth(test: &str, i: usize, cluster_port: u16, discovery: &str) -> Node {
        Node::start(write_config(test, i, cluster_port, discovery), node_name(i))
    }

    /// Kills the process (SIGKILL: no goodbye to anyone).
    fn kill(mut self) -> (PathBuf, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.config.clone(), self.name.clone())
    }

    /// Runs `flockmq ctl --admin ADDR ARGS...`: (success, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let admin = self.admin.to_string();
        let out = Command::new(BIN)
            .args(["ctl", "--admin", &admin])
            .args(args)
            .output()
            .expect("ctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn status(&self) -> String {
        let (ok, out, err) = self.ctl(&["cluster", "status"]);
        assert!(ok, "cluster status failed: {err}");
        out.trim_end().to_owned()
    }

    /// Polls `cluster status` until it prints `expected`.
    async fn wait_status(&self, expected: &str) {
        let mut now = String::new();
        for _ in 0..polls() {
            now = self.status();
            if now == expected {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "{}: status stayed {now:?}, expected {expected:?}\nlogs:\n{}",
            self.name,
            self.logs.lock().unwrap()
        );
    }

    /// Polls `routes list` until it contains every line of `lines`.
    async fn wait_routes(&self, lines: &[&str]) {
        let mut out = String::new();
        for _ in 0..polls() {
            let (ok, text, err) = self.ctl(&["routes", "list"]);
            assert!(ok, "routes list failed: {err}");
            out = text;
            if lines.iter().all(|l| out.lines().any(|o| o == *l)) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("{}: routes stayed\n{out}\nexpected {lines:?}", self.name);
    }
}

/// Polls a file the node writes in the background until its text satisfies `done`.
async fn wait_file(path: &std::path::Path, done: impl Fn(&str) -> bool) {
    let mut last = None;
    for _ in 0..polls() {
        last = Some(std::fs::read_to_string(path));
        if matches!(&last, Some(Ok(text)) if done(text)) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{}: stayed {last:?}", path.display());
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut rest);
        }
    }
}

fn running(nodes: &[usize]) -> String {
    let names: Vec<String> = nodes.iter().map(|&i| node_name(i)).collect();
    common::running_status(&names)
}

async fn publish(addr: SocketAddr, id: &str, topic: &str, payload: &str) {
    publish_as(addr, id, topic, payload, false).await;
}

async fn publish_retained(addr: SocketAddr, id: &str, topic: &str, payload: &str) {
    publish_as(addr, id, topic, payload, true).await;
}

/// Publishes one QoS 1 message (retained or not) and waits for its PUBACK.
async fn publish_as(addr: SocketAddr, id: &str, topic: &str, payload: &str, retain: bool) {
    let mut publisher = V4::connect(id, addr).await;
    publisher
        .client
        .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
        .await
        .unwrap();
    loop {
        if let rumqttc::Packet::PubAck(_) = publisher.next_incoming().await {
            break;
        }
    }
    publisher.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_static_nodes_form_a_cluster_and_route_once_per_node() {
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start_nth("route", i, 14371, "static"))
        .collect();
    for n in &nodes {
        n.wait_status(&running(&[1, 2, 3])).await;
    }
    let (ok, json, _) = nodes[1].ctl(&["cluster", "status", "--json"]);
    assert!(ok);
    assert_eq!(
        json.trim_end(),
        r#"{"running_nodes":["n1@127.0.0.1","n2@127.0.0.2","n3@127.0.0.3"],"stopped_nodes":[]}"#
    );

    // The tutorial: client1@node1 t/+/x, t/+/y; client2@node2 t/#; client3@node3 t/+/x, t/a.
    let mut c1 = V4::connect("client1", nodes[0].mqtt).await;
    c1.subscribe("t/+/x", QoS::AtLeastOnce).await;
    c1.subscribe("t/+/y", QoS::AtLeastOnce).await;
    let mut c2 = V4::connect("client2", nodes[1].mqtt).await;
    c2.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut c3 = V4::connect("client3", nodes[2].mqtt).await;
    c3.subscribe("t/+/x", QoS::AtLeastOnce).await;
    c3.subscribe("t/a", QoS::AtLeastOnce).await;
    let table = [
        "t/# -> n2@127.0.0.2",
        "t/+/x -> n1@127.0.0.1,n3@127.0.0.3",
        "t/+/y -> n1@127.0.0.1",
        "t/a -> n3@127.0.0.3",
    ];
    for n in &nodes {
        n.wait_routes(&table).await;
    }

    // client1 publishes t/a on node1: node2 and node3 get it, each client once.
    publish(nodes[0].mqtt, "pub1", "t/a", "one").await;
    for c in [&mut c2, &mut c3] {
        let p = c.next_publish().await;
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("t/a", &b"one"[..]));
    }
    // t/b/x matches t/+/x on n1 and n3 and t/# on n2: one delivery per client.
    publish(nodes[1].mqtt, "pub2", "t/b/x", "two").await;
    for c in [&mut c1, &mut c2, &mut c3] {
        let p = c.next_publish().await;
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("t/b/x", &b"two"[..]));
    }
    for c in [&mut c1, &mut c2, &mut c3] {
        c.expect_no_publish().await;
    }

    let (ok, metrics, _) = nodes[0].ctl(&["metrics"]);
    assert!(ok);
    assert!(
        metrics.lines().any(|l| l == "flockmq_cluster_links_up 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "flockmq_cluster_running_nodes 3")
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "flockmq_cluster_forwards_sent_total 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_stopped_and_running_again_after_restart() {
    let mut nodes: Vec<Option<Node>> = (1..=3)
        .map(|i| Some(Node::start_nth("restart", i, 14372, "static")))
        .collect();
    let n = |nodes: &Vec<Option<Node>>, i: usize| -> SocketAddr { nodes[i].as_ref().unwrap().mqtt };
    for node in nodes.iter().flatten() {
        node.wait_status(&running(&[1, 2, 3])).await;
    }
    let mut sub3 = V4::connect("sub3", n(&nodes, 2)).await;
    sub3.subscribe("k/#", QoS::AtLeastOnce).await;
    nodes[0]
        .as_ref()
        .unwrap()
        .wait_routes(&["k/# -> n3@127.0.0.3"])
        .await;
    publish(n(&nodes, 0), "p1", "k/1", "before").await;
    assert_eq!(&sub3.next_publish().await.payload[..], b"before");

    let (config, name) = nodes[1].take().unwrap().kill();
    let stopped = "Cluster status: [{running_nodes,['n1@127.0.0.1','n3@127.0.0.3']},{stopped_nodes,['n2@127.0.0.2']}]";
    nodes[0].as_ref().unwrap().wait_status(stopped).await;
    nodes[2].as_ref().unwrap().wait_status(stopped).await;
    publish(n(&nodes, 0), "p2", "k/2", "during").await;
    assert_eq!(&sub3.next_publish().await.payload[..], b"during");

    nodes[1] = Some(Node::start(config, name));
    for node in nodes.iter().flatten() {
        node.wait_status(&running(&[1, 2, 3])).await;
    }
    let mut sub2 = V4::connect("sub2", n(&nodes, 1)).await;
    sub2.subscribe("k/#", QoS::AtLeastOnce).await;
    nodes[0]
        .as_ref()
        .unwrap()
        .wait_routes(&["k/# -> n2@127.0.0.2,n3@127.0.0.3"])
        .await;
    publish(n(&nodes, 0), "p3", "k/3", "after").await;
    assert_eq!(&sub2.next_publish().await.payload[..], b"after");
    assert_eq!(&sub3.next_publish().await.payload[..], b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_join_leave_and_force_leave_print_the_emqx_texts() {
    let n1 = Node::start_nth("manual", 1, 14373, "manual");
    let n2 = Node::start_nth("manual", 2, 14373, "manual");
    n1.wait_status(&running(&[1])).await;

    let (ok, out, _) = n2.ctl(&["cluster", "join", "n1@127.0.0.1"]);
    assert!(ok);
    assert_eq!(out, "Join the cluster successfully.\n");
    n1.wait_status(&running(&[1, 2])).await;
    n2.wait_status(&running(&[1, 2])).await;

    let (ok, _, err) = n2.ctl(&["cluster", "join", "n2@127.0.0.2"]);
    assert!(!ok);
    assert_eq!(
        err,
        "Failed to join the cluster: cannot join the node itself\n"
    );
    let (ok, _, err) = n2.ctl(&["cluster", "join", "nobody@127.0.0.9"]);
    assert!(!ok);
    assert!(
        err.starts_with("Failed to join the cluster: cannot reach nobody@127.0.0.9"),
        "{err}"
    );

    let (ok, out, _) = n2.ctl(&["cluster", "leave"]);
    assert!(ok);
    assert_eq!(out, "Leave the cluster successfully.\n");
    n1.wait_status(&running(&[1])).await;
    n2.wait_status(&running(&[2])).await;
    let (ok, _, err) = n2.ctl(&["cluster", "leave"]);
    assert!(!ok);
    assert_eq!(
        err,
        "Failed to leave the cluster: node is not in a cluster\n"
    );

    // Join again, stop n2, and remove it from n1.
    let (ok, _, _) = n2.ctl(&["cluster", "join", "n1@127.0.0.1"]);
    assert!(ok);
    n1.wait_status(&running(&[1, 2])).await;
    drop(n2.kill());
    n1.wait_status(
        "Cluster status: [{running_nodes,['n1@127.0.0.1']},{stopped_nodes,['n2@127.0.0.2']}]",
    )
    .await;
    let (ok, out, _) = n1.ctl(&["cluster", "force-leave", "n2@127.0.0.2"]);
    assert!(ok);
    assert_eq!(out, "Remove the node from cluster successfully.\n");
    assert_eq!(n1.status(), running(&[1]));
    let (ok, _, err) = n1.ctl(&["cluster", "force-leave", "n2@127.0.0.2"]);
    assert!(!ok);
    assert!(
        err.starts_with("Failed to remove the node from cluster: "),
        "{err}"
    );
    tokio::time::sleep(QUIET).await;
}

#[tokio::test]
async fn a_whole_manual_cluster_killed_and_restarted_forms_again_from_its_data_dirs() {
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start_nth("restart-all", i, 14374, "manual"))
        .collect();
    for n in &nodes[1..] {
        let (ok, out, err) = n.ctl(&["cluster", "join", "n1@127.0.0.1"]);
        assert!(ok, "{out}{err}");
    }
    for n in &nodes {
        n.wait_status(&running(&[1, 2, 3])).await;
    }
    // The member list is on disk: what `node.data_dir` is for. A task writes it after the
    // membership changed, so wait for it (and for every node's copy before the power cut).
    for (i, n) in nodes.iter().enumerate() {
        let data = n.config.parent().unwrap().join(format!("data{}", i + 1));
        let others: Vec<String> = (1..=3)
            .filter(|&j| j != i + 1)
            .map(|j| format!("{} 14374", node_name(j)))
            .collect();
        wait_file(&data.join("cluster-members"), |text| {
            others.iter().all(|o| text.lines().any(|l| l == o))
        })
        .await;
    }

    // Power cut: every node killed, nobody joins anything afterwards.
    let configs: Vec<(PathBuf, String)> = nodes.into_iter().map(Node::kill).collect();
    let nodes: Vec<Node> = configs
        .into_iter()
        .map(|(config, name)| Node::start(config, name))
        .collect();
    for n in &nodes {
        n.wait_status(&running(&[1, 2, 3])).await;
    }
}

/// What a new subscriber to `filter` on `addr` is served: retained topic -> payload. Reads until
/// `expected.len()` messages arrived or the node sent nothing more for a moment.
async fn retained_at(
    addr: SocketAddr,
    filter: &str,
    expected: usize,
) -> std::collections::BTreeMap<String, String> {
    let mut reader = V4::connect("retained-reader", addr).await;
    reader.subscribe(filter, QoS::AtMostOnce).await;
    let mut got = std::collections::BTreeMap::new();
    while got.len() < expected {
        let next = tokio::time::timeout(QUIET, reader.next_publish()).await;
        let Ok(p) = next else { break };
        assert!(p.retain, "only retained messages are published here");
        got.insert(
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        );
    }
    reader.disconnect().await;
    got
}

/// Polls until a new subscriber on `addr` is served exactly `expected`.
async fn wait_retained(addr: SocketAddr, filter: &str, expected: &[(&str, &str)]) {
    let expected: std::collections::BTreeMap<String, String> = expected
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect();
    let mut got = Default::default();
    for _ in 0..polls() {
        got = retained_at(addr, filter, expected.len()).await;
        if got == expected {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{addr}: retained stayed {got:?}, expected {expected:?}");
}

/// Issue 13: a node that was down while retained messages changed (and comes back with an empty
/// store) serves the new values, the clear included, once it is linked again; so do the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_retained_updates_serves_the_new_values() {
    let mut nodes: Vec<Option<Node>> = (1..=3)
        .map(|i| Some(Node::start_nth("retained", i, 14376, "static")))
        .collect();
    let n = |nodes: &Vec<Option<Node>>, i: usize| -> SocketAddr { nodes[i].as_ref().unwrap().mqtt };
    for node in nodes.iter().flatten() {
        node.wait_status(&running(&[1, 2, 3])).await;
    }
    publish_retained(n(&nodes, 0), "p1", "cfg/x", "v1").await;
    publish_retained(n(&nodes, 0), "p1", "cfg/z", "doomed").await;
    wait_retained(
        n(&nodes, 1),
        "cfg/#",
        &[("cfg/x", "v1"), ("cfg/z", "doomed")],
    )
    .await;

    let (config, name) = nodes[1].take().unwrap().kill();
    let stopped = "Cluster status: [{running_nodes,['n1@127.0.0.1','n3@127.0.0.3']},{stopped_nodes,['n2@127.0.0.2']}]";
    nodes[0].as_ref().unwrap().wait_status(stopped).await;
    publish_retained(n(&nodes, 0), "p1", "cfg/x", "v2").await;
    publish_retained(n(&nodes, 2), "p3", "cfg/y", "from n3").await;
    publish_retained(n(&nodes, 2), "p3", "cfg/z", "").await;

    nodes[1] = Some(Node::start(config, name));
    for node in nodes.iter().flatten() {
        node.wait_status(&running(&[1, 2, 3])).await;
    }
    let expected = [("cfg/x", "v2"), ("cfg/y", "from n3")];
    for i in 0..3 {
        wait_retained(n(&nodes, i), "cfg/#", &expected).await;
    }
}
