//! The admin endpoint cannot be driven by a web page (issue 11, item 5): a cross-site form POST,
//! a foreign Origin or a DNS-rebinding Host are refused and change nothing; without a token only
//! 127.0.0.1 / ::1 binds are accepted; idle, half-sent and surplus connections are closed. Real
//! sockets against in-process nodes, and the binary for `check-config` and `ctl`.

mod common;

use common::logs::Logs;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{WAIT, start_node};
use flockmq::node::RunningNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_flockmq");
/// How long a test waits for the server to close a connection it must close (the server's own
/// limits are 10 s; this only bounds a broken run).
const CLOSE_PATIENCE: Duration = Duration::from_secs(60);

const LEAVE: &str = "/api/v1/cluster/leave";

/// One HTTP/1.1 request as bytes, `Connection: close`, with `headers` and `body`.
fn request(method: &str, path: &str, host: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("Connection: close\r\n\r\n");
    text.push_str(body);
    text
}

/// Sends `raw` on a fresh connection and reads the whole answer: (status, the whole text).
async fn send(addr: SocketAddr, raw: &str) -> (u16, String) {
    try_send(addr, raw)
        .await
        .unwrap_or_else(|text| panic!("not an HTTP answer: {text:?}"))
}

/// `send`, or what came back when it was not an HTTP answer (e.g. a closed connection).
async fn try_send(addr: SocketAddr, raw: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).await.expect("admin accepts");
    stream
        .write_all(raw.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the admin endpoint answers or closes")
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| text.clone())?;
    Ok((status, text))
}

/// Waits (bounded) until the server closes `stream`; returns what it sent before closing.
async fn wait_for_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(CLOSE_PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    seen
}

async fn running(node: &RunningNode) -> Vec<String> {
    node.handle().cluster_status().await.unwrap().running_nodes
}

fn names(nodes: &[&str]) -> Vec<String> {
    nodes.iter().map(|n| n.to_string()).collect()
}

/// n1 (admin on 127.0.0.1, plus `n1_extra`) joined with n2 (no admin endpoint).
async fn two_node_cluster(n1_extra: &[(&str, &str)]) -> (RunningNode, RunningNode) {
    let mut n1_pairs = vec![("node.name", "n1@127.0.0.1")];
    n1_pairs.extend_from_slice(n1_extra);
    let n1 = start_node(&n1_pairs).await;
    let n2 = start_node(&[("node.name", "n2@127.0.0.1"), ("admin.bind", "off")]).await;
    let seed = format!("n2@127.0.0.1:{}", n2.cluster_addr().unwrap().port())
        .parse()
        .unwrap();
    n1.handle().cluster_join(seed).await.expect("n1 joins n2");
    assert_eq!(running(&n1).await, names(&["n1@127.0.0.1", "n2@127.0.0.1"]));
    (n1, n2)
}

#[tokio::test]
async fn a_cross_site_form_post_cannot_make_the_node_leave_but_a_json_post_can() {
    let (n1, _n2) = two_node_cluster(&[]).await;
    let admin = n1.admin_addr().unwrap();
    let host = admin.to_string();
    let both = names(&["n1@127.0.0.1", "n2@127.0.0.1"]);

    // The attack: what a page's <form method=post enctype=text/plain> sends.
    let evil = ("Origin", "http://evil.example");
    let text = ("Content-Type", "text/plain");
    let (status, answer) = send(admin, &request("POST", LEAVE, &host, &[evil, text], "x=y")).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains(r#"{"error":"#), "{answer}");
    assert_eq!(running(&n1).await, both, "the node left its cluster");

    // Each half of the rule on its own: no Origin but not JSON; JSON but a foreign Origin;
    // JSON declared but not JSON; the form's own encoding.
    let json = ("Content-Type", "application/json");
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    for (headers, body) in [
        (vec![text], "{}"),
        (vec![form], "a=b"),
        (vec![json, evil], "{}"),
        (vec![json, ("Origin", "null")], "{}"),
        (vec![json], "not json"),
    ] {
        let (status, answer) = send(admin, &request("POST", LEAVE, &host, &headers, body)).await;
        assert_eq!(status, 403, "{headers:?} {body}: {answer}");
        assert_eq!(
            running(&n1).await,
            both,
            "{headers:?} {body}: the node left"
        );
    }

    // What ctl sends (a JSON body, no Origin) works without a token on loopback, and so does
    // an Origin naming the endpoint itself.
    let own = format!("http://localhost:{}", admin.port());
    let (status, answer) = send(
        admin,
        &request("POST", LEAVE, &host, &[json, ("Origin", &own)], "{}"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(running(&n1).await, names(&["n1@127.0.0.1"]));
}

#[tokio::test]
async fn refusals_are_logged_at_most_once_per_reason_per_period() {
    let (logs, _guard) = Logs::capture("flockmq=info");
    let node = start_node(&[]).await;
    let admin = node.admin_addr().unwrap();
    let rebound = request(
        "GET",
        "/metrics",
        &format!("evil.example:{}", admin.port()),
        &[],
        "",
    );
    let form = request(
        "POST",
        LEAVE,
        &admin.to_string(),
        &[("Content-Type", "text/plain")],
        "x=y",
    );
    for _ in 0..5 {
        assert_eq!(send(admin, &rebound).await.0, 403);
        assert_eq!(send(admin, &form).await.0, 403);
    }
    // The line is written before the answer is sent, so it is there now.
    assert_eq!(logs.count("admin request refused: Host does not name"), 1);
    assert_eq!(
        logs.count("admin request refused: a state-changing request needs"),
        1
    );
    node.shutdown().await;
}

#[tokio::test]
async fn with_a_token_a_state_change_needs_the_bearer_header() {
    let (n1, _n2) = two_node_cluster(&[("admin.token", "s3cret")]).await;
    let admin = n1.admin_addr().unwrap();
    let host = admin.to_string();
    let json = ("Content-Type", "application/json");
    let (status, answer) = send(admin, &request("POST", LEAVE, &host, &[json], "{}")).await;
    assert_eq!(status, 401, "{answer}");
    let wrong = ("Authorization", "Bearer s3cre");
    let (status, _) = send(admin, &request("POST", LEAVE, &host, &[json, wrong], "{}")).await;
    assert_eq!(status, 401);
    assert_eq!(running(&n1).await, names(&["n1@127.0.0.1", "n2@127.0.0.1"]));

    let bearer = ("Authorization", "Bearer s3cret");
    let (status, answer) = send(admin, &request("POST", LEAVE, &host, &[json, bearer], "{}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(running(&n1).await, names(&["n1@127.0.0.1"]));
}

#[tokio::test]
async fn a_foreign_host_is_refused_for_reads_and_state_changes() {
    let (n1, _n2) = two_node_cluster(&[]).await;
    let admin = n1.admin_addr().unwrap();
    let rebound = format!("evil.example:{}", admin.port());

    let (status, answer) = send(admin, &request("GET", "/metrics", &rebound, &[], "")).await;
    assert_eq!(status, 403, "{answer}");
    assert!(!answer.contains("flockmq_connections"), "{answer}");
    let (status, _) = send(admin, &request("GET", "/api/v1/clients", &rebound, &[], "")).await;
    assert_eq!(status, 403);

    let json = ("Content-Type", "application/json");
    let (status, answer) = send(admin, &request("POST", LEAVE, &rebound, &[json], "{}")).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(running(&n1).await, names(&["n1@127.0.0.1", "n2@127.0.0.1"]));

    // The names of the endpoint itself are fine.
    for host in [
        admin.to_string(),
        format!("localhost:{}", admin.port()),
        format!("[::1]:{}", admin.port()),
    ] {
        let (status, answer) = send(admin, &request("GET", "/metrics", &host, &[], "")).await;
        assert_eq!(status, 200, "{host}: {answer}");
        assert!(answer.contains("flockmq_connections"), "{answer}");
    }
}

#[tokio::test]
async fn with_a_token_the_token_is_the_authority_whatever_the_host() {
    let node = start_node(&[("admin.token", "s3cret")]).await;
    let admin = node.admin_addr().unwrap();
    let named = format!("broker.example:{}", admin.port());
    let bearer = ("Authorization", "Bearer s3cret");
    let (status, answer) = send(admin, &request("GET", "/metrics", &named, &[bearer], "")).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = send(admin, &request("GET", "/metrics", &named, &[], "")).await;
    assert_eq!(status, 401);
    node.shutdown().await;
}

fn check_config(sets: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config");
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.output().expect("flockmq runs")
}

#[test]
fn an_admin_bind_other_than_127_0_0_1_or_ipv6_loopback_needs_a_token() {
    for bind in ["127.0.0.5:0", "0.0.0.0:18083"] {
        let set = format!("admin.bind={bind}");
        let out = check_config(&[&set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bind} accepted without a token");
        assert!(
            stderr.contains(&format!(
                "--set: admin.bind: {bind} is not 127.0.0.1 or ::1: set admin.token"
            )),
            "{stderr}"
        );
        let out = check_config(&[&set, "admin.token=t"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.lines().any(|l| l == format!("admin.bind = {bind}")),
            "{stdout}"
        );
    }
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let out = check_config(&[&format!("admin.bind={bind}")]);
        assert!(out.status.success(), "{bind} needs no token");
    }
}

#[tokio::test]
async fn ctl_reads_the_token_from_the_config_for_a_non_default_bind() {
    let node = start_node(&[("admin.bind", "127.0.0.5:0"), ("admin.token", "s3cret")]).await;
    let admin = node.admin_addr().unwrap();
    let dir = common::unique_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let conf = std::path::Path::new(&dir).join("ctl.conf");
    std::fs::write(
        &conf,
        format!("admin.bind = {admin}\nadmin.token = s3cret\n"),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let admin_text = admin.to_string();
    let (with_config, without_token) = tokio::task::spawn_blocking(move || {
        (
            Command::new(BIN)
                .args(["ctl", "--config", &conf, "cluster", "status"])
                .output()
                .unwrap(),
            Command::new(BIN)
                .args(["ctl", "--admin", &admin_text, "cluster", "status"])
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap();
    assert!(
        with_config.status.success(),
        "{}",
        String::from_utf8_lossy(&with_config.stderr)
    );
    assert!(String::from_utf8_lossy(&with_config.stdout).contains("running_nodes"));
    assert!(!without_token.status.success());
    assert!(String::from_utf8_lossy(&without_token.stderr).contains("401"));
    node.shutdown().await;
}

#[tokio::test]
async fn idle_half_sent_and_slow_body_requests_are_closed_by_the_server() {
    let node = start_node(&[]).await;
    let admin = node.admin_addr().unwrap();
    #[allow(clippy::disallowed_methods)] // a printed figure of the test, not broker code
    let started = Instant::now();
    // Connected, nothing sent.
    let mut idle = TcpStream::connect(admin).await.unwrap();
    // Headers never finished.
    let mut half = TcpStream::connect(admin).await.unwrap();
    half.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nX-A: b").as_bytes())
        .await
        .unwrap();
    // Headers complete, body never finished.
    let mut slow = TcpStream::connect(admin).await.unwrap();
    let head = format!(
        "POST {LEAVE} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n\
         Content-Length: 10\r\n\r\n{{}}"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    // One whole request answered, then idle on the kept-alive connection.
    let mut kept = TcpStream::connect(admin).await.unwrap();
    kept.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes())
        .await
        .unwrap();

    let (idle_seen, half_seen, slow_seen, kept_seen) = tokio::join!(
        wait_for_close(&mut idle),
        wait_for_close(&mut half),
        wait_for_close(&mut slow),
        wait_for_close(&mut kept)
    );
    println!(
        "idle, half-sent, slow-body and kept-alive connections closed after {:?}",
        started.elapsed()
    );
    let kept_seen = String::from_utf8_lossy(&kept_seen);
    assert!(kept_seen.starts_with("HTTP/1.1 200"), "{kept_seen}");
    assert!(idle_seen.is_empty() || idle_seen.starts_with(b"HTTP/1.1 408"));
    assert!(half_seen.is_empty() || half_seen.starts_with(b"HTTP/1.1 408"));
    let slow_seen = String::from_utf8_lossy(&slow_seen);
    assert!(slow_seen.starts_with("HTTP/1.1 408"), "{slow_seen}");
    // The endpoint still serves.
    let (status, _) = send(
        admin,
        &request("GET", "/metrics", &admin.to_string(), &[], ""),
    )
    .await;
    assert_eq!(status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_while_earlier_ones_stay_open() {
    let node = start_node(&[]).await;
    let admin = node.admin_addr().unwrap();
    let mut open = Vec::new();
    for _ in 0..flockmq::admin::MAX_CONNECTIONS {
        open.push(TcpStream::connect(admin).await.unwrap());
    }
    let mut surplus = TcpStream::connect(admin).await.unwrap();
    let seen = wait_for_close(&mut surplus).await;
    assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));
    // Every earlier connection is still open and served.
    let get = request("GET", "/metrics", &admin.to_string(), &[], "");
    for stream in &mut open {
        stream.write_all(get.as_bytes()).await.unwrap();
    }
    for stream in &mut open {
        let answer = wait_for_close(stream).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "an earlier connection was closed"
        );
    }
    // Their slots come free again once their tasks end.
    let mut polled = 0;
    while try_send(admin, &get).await.map(|(status, _)| status) != Ok(200) {
        polled += 1;
        assert!(
            polled < 100,
            "the endpoint never took a new connection again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}
