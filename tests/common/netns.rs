//! A throw-away Linux network lab for cluster tests that need real interfaces: one network
//! namespace per node plus one holding a bridge, joined by veth pairs, so multicast and IPv6 behave
//! as on a LAN. It owns creating and removing those namespaces and the processes started in them.
//! It must never add anything to the host's own namespace (only addresses inside the namespaces)
//! and never touch namespaces it did not name (`fmq<pid>t<subnet>...`).
//!
//! Needs root, `ip` (iproute2) and the mosquitto clients: without them a test is skipped loudly,
//! and under `CI=true` it fails instead. `NETNS_LAB_KEEP=1` keeps each lab's temp dir (configs,
//! node logs) after a passing test too.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flockmq");
/// Every node's admin endpoint: each namespace has its own loopback, so all nodes share it.
pub const ADMIN: &str = "127.0.0.1:18083";
/// Every node's MQTT port.
pub const MQTT_PORT: u16 = 1883;
/// How long a waiting test waits for cluster formation or a route.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How often a waiting test asks again (tests count polls: no wall clock in this crate).
pub const POLL: Duration = Duration::from_millis(200);

/// How many `POLL`s fit in `DEADLINE`.
pub fn polls() -> u32 {
    (DEADLINE.as_millis() / POLL.as_millis()) as u32
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints the loud skip line, or panics under `CI=true` where skipping would hide a gap.
fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("CI=true but {test} cannot run: {why}");
    }
    // Straight to the stderr handle: libtest captures eprintln! of a passing test, and a skip
    // must show without --nocapture.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {test}: {why} ***\n");
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Why the lab cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("needs root to create network namespaces".into());
    }
    if !runs("ip", "-V") {
        return Some("`ip` (iproute2) is not installed; run `apt-get install iproute2`".into());
    }
    if !(runs("mosquitto_pub", "--help") && runs("mosquitto_sub", "--help")) {
        return Some(
            "mosquitto_pub/mosquitto_sub not installed; run `apt-get install mosquitto-clients`"
                .into(),
        );
    }
    None
}

/// Runs `ip ARGS`, returning stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// SIGKILLs every process inside namespace `ns` and removes it; errors are ignored because
/// the namespace may be half-built or already gone.
fn destroy_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// The pid in a lab namespace name `fmq<pid>t...`, if `ns` is one.
fn lab_owner(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix("fmq")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[digits..].starts_with('t').then_some(())?;
    rest[..digits].parse().ok()
}

/// Removes lab namespaces left by an earlier run that was killed before its `Drop` ran (its
/// pid no longer exists); a live run's namespaces are left alone.
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let me = std::process::id();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = lab_owner(ns) {
            if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
                destroy_namespace(ns);
            }
        }
    }
}

/// A process started inside a node namespace, with its output in files.
struct Proc {
    node: usize,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// Three (or more) node namespaces `fmq<pid>t<subnet>n<k>` with `eth0` = 10.S.P.k/24 and
/// fdSS:PPPP::k/64, bridged in `fmq<pid>t<subnet>br`; removed with every process in them on
/// drop, also when the test panics.
pub struct NetnsLab {
    test: String,
    prefix: String,
    nodes: usize,
    v4: [u8; 3],
    v6: [u16; 2],
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl NetnsLab {
    /// Builds a lab of `nodes` nodes for `test`, or returns None after printing a SKIPPED line
    /// when the machine cannot run it (under `CI=true` that panics instead). `subnet` must differ
    /// between the tests of one binary: it picks the namespace names and the /24.
    pub fn create(test: &str, subnet: u8, nodes: usize) -> Option<NetnsLab> {
        if let Some(why) = missing_prerequisite() {
            skip(test, &why);
            return None;
        }
        remove_stale_labs();
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("flockmq-netns-{pid}-t{subnet}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab temp dir");
        let lab = NetnsLab {
            test: test.to_owned(),
            prefix: format!("fmq{pid}t{subnet}"),
            nodes,
            // The /24 and /64 depend on the pid so parallel runs never share a prefix, even
            // though each lab's bridge is private to it anyway.
            v4: [10, 100 + subnet, (pid % 256) as u8],
            v6: [0xfd00 | u16::from(subnet), (pid % 65536) as u16],
            dir,
            procs: Vec::new(),
        };
        // Same names from a dead run that had our pid: ours to replace.
        for ns in lab.namespaces() {
            destroy_namespace(&ns);
        }
        if let Err(e) = lab.build() {
            if e.contains("Operation not permitted") && !in_ci() {
                skip(test, &format!("cannot create network namespaces: {e}"));
                return None;
            }
            panic!("{test}: building the netns lab failed: {e}");
        }
        Some(lab)
    }

    fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = (1..=self.nodes).map(|k| self.ns(k)).collect();
        all.push(self.bridge_ns());
        all
    }

    fn bridge_ns(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The namespace of node `k` (1-based).
    pub fn ns(&self, k: usize) -> String {
        format!("{}n{k}", self.prefix)
    }

    /// Node `k`'s IPv4 address on `eth0`.
    pub fn ipv4(&self, k: usize) -> Ipv4Addr {
        let [a, b, c] = self.v4;
        Ipv4Addr::new(a, b, c, k as u8)
    }

    /// Node `k`'s IPv6 (ULA) address on `eth0`.
    pub fn ipv6(&self, k: usize) -> Ipv6Addr {
        let [a, b] = self.v6;
        Ipv6Addr::new(a, b, 0, 0, 0, 0, 0, k as u16)
    }

    /// The lab's temp dir (configs, data dirs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn build(&self) -> Result<(), String> {
        let br = self.bridge_ns();
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        // A dumb hub: without snooping every multicast datagram reaches every port, so what the
        // tests see depends only on the nodes' own sockets.
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for k in 1..=self.nodes {
            let ns = self.ns(k);
            let port = format!("v{k}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            let v4 = format!("{}/24", self.ipv4(k));
            let v6 = format!("{}/64", self.ipv6(k));
            ip(&["-n", &ns, "addr", "add", &v4, "dev", "eth0"])?;
            ip(&["-n", &ns, "addr", "add", &v6, "dev", "eth0", "nodad"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            // No default route in a lab: this one lets a socket on 0.0.0.0 send to and join
            // IPv4 groups.
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(())
    }

    /// `ip netns exec NS(k) PROGRAM`, ready for arguments; without the caller's `FLOCKMQ_*`
    /// variables, which flockmq would read as config overrides.
    pub fn command(&self, k: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(k), program]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLOCKMQ_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Writes `config` to `n<k>.conf` and starts `flockmq start --config` in node `k`'s
    /// namespace, its stdout and stderr going to `n<k>.out` / `n<k>.err`.
    pub fn start_node(&mut self, k: usize, config: &str) {
        let conf = self.dir.join(format!("n{k}.conf"));
        std::fs::write(&conf, config).expect("write node config");
        let stdout = self.dir.join(format!("n{k}.out"));
        let stderr = self.dir.join(format!("n{k}.err"));
        let child = self
            .command(k, BIN)
            .arg("start")
            .arg("--config")
            .arg(&conf)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(File::create(&stdout).expect("node stdout file"))
            .stderr(File::create(&stderr).expect("node stderr file"))
            .spawn()
            .expect("ip netns exec flockmq start");
        self.procs.push(Proc {
            node: k,
            child,
            stdout,
            stderr,
        });
    }

    /// Runs `flockmq ctl --admin ADMIN ARGS...` in node `k`'s namespace: (success, stdout,
    /// stderr).
    pub fn ctl(&self, k: usize, args: &[&str]) -> (bool, String, String) {
        let out: Output = self
            .command(k, BIN)
            .args(["ctl", "--admin", ADMIN])
            .args(args)
            .output()
            .expect("ip netns exec flockmq ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every node's config, stdout and stderr, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for p in &self.procs {
            for (what, path) in [
                ("config", self.dir.join(format!("n{}.conf", p.node))),
                ("stdout", p.stdout.clone()),
                ("stderr", p.stderr.clone()),
            ] {
                let body = std::fs::read_to_string(&path).unwrap_or_default();
                text.push_str(&format!(
                    "----- n{} {what} ({}) -----\n",
                    p.node,
                    path.display()
                ));
                text.push_str(&body);
            }
        }
        text
    }

    /// Panics with `why`, the node logs and the lab's temp dir.
    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "{}: {why}\nlab dir {}\n{}",
            self.test,
            self.dir.display(),
            self.logs()
        );
    }

    /// Polls `cluster status` on node `k` until it prints `expected`.
    pub fn wait_status(&self, k: usize, expected: &str) {
        self.wait_status_where(k, &format!("{expected:?}"), |status| status == expected);
    }

    /// Polls `cluster status` on node `k` until `done` accepts it (trailing newline removed);
    /// `wanted` describes what was waited for in the failure message.
    pub fn wait_status_where(&self, k: usize, wanted: &str, done: impl Fn(&str) -> bool) {
        let mut last = String::new();
        for _ in 0..polls() {
            let (ok, out, err) = self.ctl(k, &["cluster", "status"]);
            last = if ok {
                out
            } else {
                format!("(ctl failed) {err}")
            };
            if done(last.trim_end()) {
                return;
            }
            std::thread::sleep(POLL);
        }
        self.fail(&format!(
            "n{k}: status stayed {:?} for {DEADLINE:?}, expected {wanted}",
            last.trim_end()
        ));
    }

    /// Asserts node `k`'s `eth0` is a member of multicast `group`: the kernel's own record of a
    /// socket's join, which discovery traffic alone cannot prove (a node that only sends, or
    /// is dialled first, still forms the cluster).
    pub fn assert_joined(&self, k: usize, group: &str) {
        let out = Command::new("ip")
            .args(["-n", &self.ns(k), "maddr", "show", "dev", "eth0"])
            .output()
            .expect("ip maddr show");
        let text = String::from_utf8_lossy(&out.stdout);
        if !text
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(group))
        {
            self.fail(&format!(
                "n{k}: eth0 has not joined {group}; ip maddr show dev eth0:\n{text}"
            ));
        }
    }

    /// Polls `routes list` on node `k` until `filter` routes to a set including `node`.
    pub fn wait_route(&self, k: usize, filter: &str, node: &str) {
        let mut last = String::new();
        let head = format!("{filter} -> ");
        for _ in 0..polls() {
            let (ok, out, err) = self.ctl(k, &["routes", "list"]);
            last = if ok {
                out
            } else {
                format!("(ctl failed) {err}")
            };
            let routed = last.lines().any(|l| {
                l.strip_prefix(&head)
                    .is_some_and(|nodes| nodes.split(',').any(|n| n == node))
            });
            if routed {
                return;
            }
            std::thread::sleep(POLL);
        }
        self.fail(&format!(
            "n{k}: no route {filter} -> {node} after {DEADLINE:?}; routes:\n{last}"
        ));
    }

    /// `mosquitto_sub` in `sub`'s namespace (against `sub_host`) receives the QoS 1
    /// message `mosquitto_pub` sends in `publ`'s namespace (against `pub_host`): pub/sub through
    /// the cluster. `sub_node` is the subscriber's node name as routes print it.
    pub fn round_trip(&self, sub: (usize, &str, &str), publ: (usize, &str), topic: &str) {
        let (sub_k, sub_host, sub_node) = sub;
        let (pub_k, pub_host) = publ;
        let port = MQTT_PORT.to_string();
        let payload = format!("from n{pub_k} to n{sub_k}");
        let wait = DEADLINE.as_secs().to_string();
        let sub_id = format!("sub-n{sub_k}-{topic}");
        let subscriber = self
            .command(sub_k, "mosquitto_sub")
            .args(["-h", sub_host, "-p", &port, "-q", "1", "-i", &sub_id])
            .args(["-t", topic, "-v", "-C", "1", "-W", &wait])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec mosquitto_sub");
        // The route reaching the publisher's node means the SUBSCRIBE is done and replicated.
        self.wait_route(pub_k, topic, sub_node);
        let pub_id = format!("pub-n{pub_k}-{topic}");
        let out = self
            .command(pub_k, "mosquitto_pub")
            .args(["-h", pub_host, "-p", &port, "-q", "1", "-i", &pub_id])
            .args(["-t", topic, "-m", &payload])
            .output()
            .expect("ip netns exec mosquitto_pub");
        if !out.status.success() {
            self.fail(&format!(
                "mosquitto_pub in n{pub_k}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let out = subscriber.wait_with_output().expect("mosquitto_sub output");
        let got = String::from_utf8_lossy(&out.stdout);
        if got != format!("{topic} {payload}\n") {
            self.fail(&format!(
                "mosquitto_sub in n{sub_k} printed {got:?} (exit {:?}, stderr {:?}), expected \
                 the {topic:?} message {payload:?}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for ns in self.namespaces() {
            destroy_namespace(&ns);
        }
        if std::thread::panicking() || std::env::var_os("NETNS_LAB_KEEP").is_some() {
            eprintln!("{}: lab files kept in {}", self.test, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
