//! The built `flockmq` binary as users run it: `flockmq start`, `check-config` with bad files, and
//! the MQTT flows with the mosquitto command-line clients (run whenever they are installed; CI
//! installs them and then requires them).

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

mod common;

use common::binary::{BIN, Broker};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// True when the mosquitto clients are installed. Without them the test says so loudly, and in CI
/// (CI=true) their absence is a failure, never a silent pass.
fn mosquitto_clients() -> bool {
    if have("mosquitto_sub") && have("mosquitto_pub") {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but mosquitto_pub/mosquitto_sub are not installed (.ci/run installs them)");
    }
    eprintln!(
        "\n*** SKIPPED: mosquitto_pub/mosquitto_sub not installed; run `apt-get install mosquitto-clients` ***\n"
    );
    false
}

fn sub(b: &Broker, args: &[&str]) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &b.port()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs")
}

fn publish(b: &Broker, args: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.port()])
        .args(args)
        .output()
        .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Gives a freshly spawned mosquitto_sub time to connect and subscribe.
fn settle() {
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn mosquitto_qos_round_trips_v311_and_v5() {
    if !mosquitto_clients() {
        return;
    }
    let b = Broker::start(&[]);
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("rt/{version}/{qos}");
            let s = sub(
                &b,
                &[
                    "-V", version, "-q", qos, "-t", &topic, "-C", "3", "-W", "10",
                ],
            );
            settle();
            for i in 0..3 {
                publish(
                    &b,
                    &[
                        "-V",
                        version,
                        "-q",
                        qos,
                        "-t",
                        &topic,
                        "-m",
                        &format!("m{i}"),
                    ],
                );
            }
            let out = s.wait_with_output().unwrap();
            assert_eq!(
                lines(&out),
                ["m0", "m1", "m2"],
                "{version} qos {qos}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn mosquitto_retained_set_and_cleared() {
    if !mosquitto_clients() {
        return;
    }
    let b = Broker::start(&[]);
    publish(&b, &["-t", "ret/a", "-m", "kept", "-r", "-q", "1"]);
    let out = sub(&b, &["-t", "ret/#", "-C", "1", "-W", "5", "-v"])
        .wait_with_output()
        .unwrap();
    assert_eq!(lines(&out), ["ret/a kept"]);
    publish(&b, &["-t", "ret/a", "-n", "-r", "-q", "1"]);
    let out = sub(&b, &["-t", "ret/#", "-W", "1"])
        .wait_with_output()
        .unwrap();
    assert!(
        lines(&out).is_empty(),
        "cleared retained message still delivered: {:?}",
        lines(&out)
    );
}

#[test]
fn mosquitto_will_on_kill_not_on_clean_exit() {
    if !mosquitto_clients() {
        return;
    }
    let b = Broker::start(&[]);
    let watcher = sub(&b, &["-t", "will/#", "-v", "-W", "5", "-C", "1"]);
    let clean = sub(
        &b,
        &[
            "-t",
            "nothing",
            "-i",
            "clean",
            "--will-topic",
            "will/clean",
            "--will-payload",
            "x",
            "-W",
            "1",
        ],
    );
    let clean_out = clean.wait_with_output().unwrap();
    assert_eq!(
        clean_out.status.code(),
        Some(27),
        "mosquitto_sub -W exits 27 after a clean DISCONNECT"
    );
    let mut dying = sub(
        &b,
        &[
            "-t",
            "nothing",
            "-i",
            "dying",
            "--will-topic",
            "will/dying",
            "--will-payload",
            "bye",
        ],
    );
    settle();
    dying.kill().unwrap();
    let _ = dying.wait();
    let out = watcher.wait_with_output().unwrap();
    assert_eq!(
        lines(&out),
        ["will/dying bye"],
        "only the killed client's will"
    );
}

#[test]
fn mosquitto_persistent_session_gets_queued_messages() {
    if !mosquitto_clients() {
        return;
    }
    let b = Broker::start(&[]);
    let first = sub(&b, &["-c", "-i", "durable", "-q", "1", "-t", "q/#", "-E"])
        .wait_with_output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for i in 0..3 {
        publish(
            &b,
            &["-q", "1", "-t", &format!("q/{i}"), "-m", &format!("job{i}")],
        );
    }
    let out = sub(
        &b,
        &[
            "-c", "-i", "durable", "-q", "1", "-t", "q/#", "-C", "3", "-W", "5",
        ],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(lines(&out), ["job0", "job1", "job2"]);
}

#[test]
fn mosquitto_overlapping_filters_and_shared_groups() {
    if !mosquitto_clients() {
        return;
    }
    let b = Broker::start(&[]);
    let overlap = sub(
        &b,
        &[
            "-V", "mqttv5", "-t", "o/+", "-t", "o/#", "-t", "o/a", "-W", "2",
        ],
    );
    let g1 = sub(&b, &["-t", "$share/g/s/#", "-W", "2"]);
    let g2 = sub(&b, &["-t", "$share/g/s/#", "-W", "2"]);
    settle();
    publish(&b, &["-t", "o/a", "-m", "once"]);
    for i in 0..4 {
        publish(&b, &["-t", &format!("s/{i}"), "-m", &format!("s{i}")]);
    }
    assert_eq!(lines(&overlap.wait_with_output().unwrap()), ["once"]);
    let a = lines(&g1.wait_with_output().unwrap());
    let c = lines(&g2.wait_with_output().unwrap());
    assert_eq!(a.len(), 2, "round robin: {a:?} / {c:?}");
    assert_eq!(c.len(), 2, "round robin: {a:?} / {c:?}");
}

#[test]
fn bad_config_names_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("flockmq-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.conf");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "# a comment\nlistener.tcp.bind = 127.0.0.1:1883\nnode.name = no-at-sign"
    )
    .unwrap();
    drop(f);
    for sub in ["start", "check-config"] {
        let out = Command::new(BIN)
            .args([sub, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sub} must fail on a bad config");
        let err = String::from_utf8_lossy(&out.stderr);
        let expect = format!("{}:3: node.name: ", path.display());
        assert!(
            err.contains(&expect),
            "{sub}: stderr {err:?} lacks {expect:?}"
        );
    }

    let path2 = dir.join("unknown.conf");
    std::fs::write(&path2, "mqtt.max_inflight = 10\nmqtt.colour = blue\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path2)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: mqtt.colour: ", path2.display())),
        "{err}"
    );
}

#[test]
fn check_config_prints_effective_config_with_overrides() {
    let out = Command::new(BIN)
        .args(["check-config", "--set", "mqtt.max_inflight=7"])
        .env("FLOCKMQ_NODE__NAME", "alpha@127.0.0.1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "mqtt.max_inflight = 7"), "{text}");
    assert!(
        text.lines().any(|l| l == "node.name = alpha@127.0.0.1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "listener.tcp.bind = 0.0.0.0:1883"),
        "{text}"
    );
}

#[test]
fn check_config_warns_about_the_default_cookie_and_still_succeeds() {
    let check = |args: &[&str]| {
        let (ok, stdout, stderr) = check_config(args);
        assert!(ok, "{stderr}");
        (stdout, stderr)
    };
    let (stdout, stderr) = check(&["--set", "cluster.discovery=manual"]);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: node.cookie:"))
        .unwrap_or_else(|| panic!("no cookie warning in {stderr:?}"));
    assert!(warning.contains("offline"), "{warning}");
    // The warning stays off stdout, which remains a config file.
    assert!(!stdout.contains("warning"), "{stdout}");
    let (_, stderr) = check(&["--set", "node.cookie=Zq8vT1r0-long-random-cookie-3f9a"]);
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn check_config_refuses_a_link_frame_limit_below_the_largest_forward() {
    let (ok, _, err) = check_config(&["--set", "mqtt.max_packet_size=4MB"]);
    assert!(!ok);
    assert!(err.contains("cluster.max_frame_size"), "{err}");
    assert!(err.contains("mqtt.max_packet_size"), "{err}");
    let (ok, text, err) = check_config(&[
        "--set",
        "mqtt.max_packet_size=4MB",
        "--set",
        "cluster.max_frame_size=5MB",
    ]);
    assert!(ok, "{err}");
    assert!(
        text.lines().any(|l| l == "cluster.max_frame_size = 5MB"),
        "{text}"
    );
}

/// Runs `flockmq check-config ARGS` (without a cookie from the environment): (success, stdout,
/// stderr).
fn check_config(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .args(args)
        .env_remove("FLOCKMQ_NODE__COOKIE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mosquitto_takeover_and_topic_alias() {
    if !mosquitto_clients() {
        return;
    }
    let b = Broker::start(&[]);
    // Takeover: the first mosquitto_sub receives DISCONNECT 0x8E (printed as 142) and exits.
    let first = sub(
        &b,
        &["-V", "mqttv5", "-i", "same", "-t", "x", "-d", "-W", "5"],
    );
    settle();
    let mut second = sub(&b, &["-V", "mqttv5", "-i", "same", "-t", "x", "-W", "5"]);
    let out = first.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Received DISCONNECT (142)"), "{text}");
    let _ = second.kill();
    let _ = second.wait();

    // Topic alias: mosquitto_pub -l sends the topic once with alias 1, then the alias alone.
    let s = sub(&b, &["-V", "mqttv5", "-t", "alias/t", "-C", "3", "-W", "5"]);
    settle();
    let mut p = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port(),
            "-V",
            "mqttv5",
            "-t",
            "alias/t",
            "-l",
        ])
        .args(["-D", "publish", "topic-alias", "1", "-q", "1"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\nthree\n")
        .unwrap();
    assert!(p.wait().unwrap().success());
    assert_eq!(
        lines(&s.wait_with_output().unwrap()),
        ["one", "two", "three"]
    );
}
