//! Closed-loop publish/subscribe scenarios: 1→1 at each QoS, fan-out, fan-in on a wildcard, and
//! the fixed-rate latency test, all driven by one engine.
//!
//! Every subscriber subscribes to every publisher's topic, so each publish is expected
//! `subscribers` times. Payloads carry a stamp (publisher index, sequence number, send time), so
//! subscribers can count loss, reordering and latency without any per-message bookkeeping beyond
//! one "highest sequence seen" cell per (subscriber, publisher) pair.
//!
//! Publishers are closed loop: QoS 1/2 keep at most `window` messages unacknowledged, and at
//! every QoS at most `max_lag` deliveries are outstanding across the scenario (each publisher
//! runs at most `max_lag / (publishers × subscribers)` messages ahead of its slowest subscriber),
//! so the figure measured is what the broker delivers, not how much it can buffer. Throughput counts deliveries between
//! the end of the warm-up and the deadline; loss is checked after a drain. This module never
//! touches the broker's process and never sleeps in a hot loop.
//!
//! Subscribers may connect to another broker than publishers (another node of a cluster). Then a
//! subscription reaches the publishers' node asynchronously, and a message published before it
//! arrives is dropped, which the loss check would count against the broker. So before the clock
//! starts, each publisher sends empty QoS 0 probes until every subscriber has received one: the
//! measurement begins on a path known to forward. Probes carry no stamp and are never counted.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use flockmq::codec::{Ack, Packet, Publish, QoS};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::{ClientError, Conn, Target};
use crate::clock;
use crate::result::{Better, Percentiles, TestResult};

/// Bytes at the front of every payload: publisher index (u32), sequence (u64), send time (u64 ns).
pub const STAMP_LEN: usize = 20;
/// Bytes a publisher queues before handing them to the kernel: big enough to amortise the
/// syscall, small enough that QoS 0 stays throttled by TCP backpressure.
const WRITE_BATCH: usize = 64 * 1024;
/// A drain ends when deliveries make no progress for this long (QoS 0 loss never catches up).
const DRAIN_STALL: Duration = Duration::from_secs(1);
/// Granularity of the fixed-rate publisher's schedule (tokio's timer resolution).
const PACE_TICK: Duration = Duration::from_millis(1);
/// How often an unanswered route probe is published again.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// Where publishers and subscribers connect.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    /// The publishers' broker (node 1 of a cluster).
    pub publishers: Target,
    /// The subscribers' broker; the same as `publishers` on a single broker.
    pub subscribers: Target,
    /// Longest wait for probes to reach every subscriber; `None` publishes no probe.
    pub route_wait: Option<Duration>,
}

impl Targets {
    /// Both roles on one broker, no probe.
    pub fn single(target: Target) -> Targets {
        Targets {
            publishers: target,
            subscribers: target,
            route_wait: None,
        }
    }

    /// ` (publishers on A, subscribers on B)` when they differ, else empty: for the summary line.
    pub fn label(&self) -> String {
        if self.publishers.addr == self.subscribers.addr {
            String::new()
        } else {
            format!(
                " (pub on {}, sub on {})",
                self.publishers.addr, self.subscribers.addr
            )
        }
    }
}

/// What to run; built from the command line.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Test name: part of topics and client ids, and the `test` field of the result.
    pub name: String,
    /// Number of publishing clients.
    pub publishers: usize,
    /// Number of subscribing clients (each subscribes to every publisher's topic).
    pub subscribers: usize,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Subscribe with one `+` filter instead of one filter per publisher topic.
    pub wildcard: bool,
    /// Payload size in bytes (at least `STAMP_LEN`).
    pub payload: usize,
    /// QoS 1/2 in-flight window per publisher (also capped by the server's Receive Maximum).
    pub window: u16,
    /// Most deliveries outstanding (published, not yet received) across the whole scenario.
    pub max_lag: u64,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Longest wait after the deadline for in-flight messages to arrive.
    pub drain: Duration,
    /// Publish at this many messages/s per publisher instead of as fast as the loop allows.
    pub rate: Option<f64>,
    /// Record per-message latency (subscriber receive time minus payload send time).
    pub latency: bool,
}

/// Why a scenario could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// One client failed; the scenario's figures would be meaningless.
    #[error("{role} {index}: {source}")]
    Client {
        role: &'static str,
        index: usize,
        source: ClientError,
    },
    /// A client task ended without reporting (panic or cancellation).
    #[error("a client task did not finish: {0}")]
    Task(String),
    /// The specification cannot be run (e.g. a payload too small for the stamp).
    #[error("invalid scenario: {0}")]
    Invalid(String),
    /// Probes published on the publishers' broker never reached some subscriber.
    #[error(
        "no route after {waited:?}: {missing} of {pairs} (subscriber, publisher) pairs never received a probe"
    )]
    NotRouted {
        waited: Duration,
        missing: usize,
        pairs: usize,
    },
}

/// State shared by all tasks of one scenario (single-threaded runtime, hence `Cell`).
struct Shared {
    publishers: usize,
    subscribers: usize,
    /// Highest sequence seen, at `[subscriber * publishers + publisher]`.
    highest: Vec<Cell<u64>>,
    sent: Cell<u64>,
    acked: Cell<u64>,
    rejected: Cell<u64>,
    delivered: Cell<u64>,
    out_of_order: Cell<u64>,
    /// Sequence numbers skipped over (lost in the middle of a stream, not just at its tail).
    skipped: Cell<u64>,
    foreign: Cell<u64>,
    /// Route probes that arrived after the route check had passed (ignored, never delivered).
    late_probes: Cell<u64>,
    /// Publishers currently blocked on `max_lag`; subscribers signal `progress` only then.
    lag_waiters: Cell<usize>,
    progress: Notify,
    finish: Cell<bool>,
    finish_signal: Notify,
    epoch: Instant,
    /// Latency samples are taken for messages sent in `[from, until)` ns after `epoch`.
    sample_from: u64,
    sample_until: u64,
    latencies: RefCell<Vec<u64>>,
}

impl Shared {
    /// The lowest sequence of `publisher` that every subscriber has reached.
    fn floor(&self, publisher: usize) -> u64 {
        (0..self.subscribers)
            .filter_map(|s| self.highest.get(s * self.publishers + publisher))
            .map(Cell::get)
            .min()
            .unwrap_or(0)
    }

    fn bump(cell: &Cell<u64>, by: u64) {
        cell.set(cell.get() + by);
    }
}

/// Runs one scenario against `targets` and returns its figures.
pub async fn run(targets: Targets, spec: Spec) -> Result<TestResult, ScenarioError> {
    if spec.payload < STAMP_LEN {
        return Err(ScenarioError::Invalid(format!(
            "payload must be at least {STAMP_LEN} bytes"
        )));
    }
    if spec.publishers == 0 || spec.subscribers == 0 {
        return Err(ScenarioError::Invalid(
            "need at least one publisher and one subscriber".into(),
        ));
    }
    let topics: Vec<String> = (0..spec.publishers)
        .map(|p| format!("fmqb/{}/{p}", spec.name))
        .collect();
    let filters = if spec.wildcard {
        vec![format!("fmqb/{}/+", spec.name)]
    } else {
        topics.clone()
    };

    let mut sub_conns = Vec::with_capacity(spec.subscribers);
    for s in 0..spec.subscribers {
        let fail = |source| ScenarioError::Client {
            role: "subscriber",
            index: s,
            source,
        };
        let mut conn = Conn::connect(
            &targets.subscribers,
            &format!("fmqb-{}-s{s}", spec.name),
            None,
        )
        .await
        .map_err(fail)?;
        conn.subscribe(&filters, spec.qos).await.map_err(fail)?;
        sub_conns.push(conn);
    }
    let mut pub_conns = Vec::with_capacity(spec.publishers);
    for p in 0..spec.publishers {
        let conn = Conn::connect(
            &targets.publishers,
            &format!("fmqb-{}-p{p}", spec.name),
            None,
        )
        .await
        .map_err(|source| ScenarioError::Client {
            role: "publisher",
            index: p,
            source,
        })?;
        pub_conns.push(conn);
    }
    let routed_after = match targets.route_wait {
        Some(limit) => Some(await_routes(&mut pub_conns, &mut sub_conns, &topics, limit).await?),
        None => None,
    };

    let epoch = clock::now();
    let warm_end = epoch + spec.warmup;
    let end = warm_end + spec.duration;
    let expected_samples = match spec.rate {
        Some(rate) if spec.latency => {
            let per_sub = rate * spec.duration.as_secs_f64() * spec.publishers as f64;
            (per_sub * spec.subscribers as f64 * 1.1) as usize + 1024
        }
        _ => 0,
    };
    let shared = Rc::new(Shared {
        publishers: spec.publishers,
        subscribers: spec.subscribers,
        highest: (0..spec.publishers * spec.subscribers)
            .map(|_| Cell::new(0))
            .collect(),
        sent: Cell::new(0),
        acked: Cell::new(0),
        rejected: Cell::new(0),
        delivered: Cell::new(0),
        out_of_order: Cell::new(0),
        skipped: Cell::new(0),
        foreign: Cell::new(0),
        late_probes: Cell::new(0),
        lag_waiters: Cell::new(0),
        progress: Notify::new(),
        finish: Cell::new(false),
        finish_signal: Notify::new(),
        epoch,
        sample_from: spec.warmup.as_nanos() as u64,
        sample_until: (spec.warmup + spec.duration).as_nanos() as u64,
        latencies: RefCell::new(Vec::with_capacity(expected_samples)),
    });
    let spec = Rc::new(spec);

    let sub_tasks: Vec<JoinHandle<Result<(), ClientError>>> = sub_conns
        .into_iter()
        .enumerate()
        .map(|(s, conn)| {
            tokio::task::spawn_local(subscribe_loop(shared.clone(), spec.clone(), s, conn))
        })
        .collect();
    let pub_tasks: Vec<JoinHandle<Result<(), ClientError>>> = pub_conns
        .into_iter()
        .zip(topics)
        .enumerate()
        .map(|(p, (conn, topic))| {
            tokio::task::spawn_local(publish_loop(
                shared.clone(),
                spec.clone(),
                p,
                conn,
                topic,
                end,
            ))
        })
        .collect();

    tokio::time::sleep_until(warm_end.into()).await;
    let (sent0, delivered0) = (shared.sent.get(), shared.delivered.get());
    tokio::time::sleep_until(end.into()).await;
    let (sent1, delivered1) = (shared.sent.get(), shared.delivered.get());

    // Publishers stop at `end` on their own and return once their window is acknowledged.
    let drain_deadline = clock::now() + spec.drain;
    let mut failure = None;
    for (p, task) in pub_tasks.into_iter().enumerate() {
        let outcome = tokio::time::timeout_at(drain_deadline.into(), task)
            .await
            .ok();
        if let Some(err) = task_failure("publisher", p, outcome, || ScenarioError::Client {
            role: "publisher",
            index: p,
            source: ClientError::Timeout("acknowledgements of the last window"),
        }) {
            failure.get_or_insert(err);
        }
    }

    let expected = shared.sent.get() * spec.subscribers as u64;
    let mut last = (shared.delivered.get(), clock::now());
    while shared.delivered.get() < expected && failure.is_none() {
        let now = clock::now();
        if now >= drain_deadline || now.duration_since(last.1) >= DRAIN_STALL {
            break;
        }
        if shared.delivered.get() != last.0 {
            last = (shared.delivered.get(), now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.finish.set(true);
    shared.finish_signal.notify_waiters();
    for (s, task) in sub_tasks.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .ok();
        if let Some(err) = task_failure("subscriber", s, outcome, || {
            ScenarioError::Task(format!("subscriber {s} did not stop"))
        }) {
            failure.get_or_insert(err);
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }

    let secs = spec.duration.as_secs_f64();
    let delivered = shared.delivered.get();
    let lost = expected.saturating_sub(delivered);
    let mut result = TestResult::new(&spec.name, "");
    if spec.latency {
        let samples = Percentiles::new(shared.latencies.take());
        let us = |q: f64| {
            samples
                .quantile(q)
                .map_or(f64::NAN, |ns| ns as f64 / 1000.0)
        };
        result.figure("p50", us(0.5), "us", Better::Lower);
        result.figure("p99", us(0.99), "us", Better::Lower);
        result.figure("p999", us(0.999), "us", Better::Lower);
        result.detail("samples", samples.len());
        result.detail("mean_us", samples.mean().map_or(f64::NAN, |m| m / 1000.0));
        result.detail(
            "max_us",
            samples.max().map_or(f64::NAN, |m| m as f64 / 1000.0),
        );
        result.detail("target_rate", spec.rate.unwrap_or(0.0));
        result.detail("achieved_rate", (sent1 - sent0) as f64 / secs);
    } else {
        result.figure(
            "deliveries/s",
            (delivered1 - delivered0) as f64 / secs,
            "msg/s",
            Better::Higher,
        );
    }
    if spec.qos != QoS::AtMostOnce {
        result.figure("lost", lost as f64, "msgs", Better::Lower);
    }
    result.detail("publishes_per_s", (sent1 - sent0) as f64 / secs);
    result.detail("publishers", spec.publishers);
    result.detail("subscribers", spec.subscribers);
    result.detail("qos", spec.qos as u8);
    result.detail("payload_bytes", spec.payload);
    result.detail("window", spec.window);
    result.detail("max_lag", spec.max_lag);
    result.detail("warmup_s", spec.warmup.as_secs_f64());
    result.detail("duration_s", secs);
    result.detail("sent", shared.sent.get());
    result.detail("acked", shared.acked.get());
    result.detail("rejected_by_broker", shared.rejected.get());
    result.detail("expected_deliveries", expected);
    result.detail("delivered", delivered);
    result.detail("lost", lost);
    result.detail("out_of_order_or_duplicate", shared.out_of_order.get());
    result.detail("skipped_mid_stream", shared.skipped.get());
    result.detail("unrecognised_payloads", shared.foreign.get());
    result.detail("publisher_broker", targets.publishers.addr.to_string());
    result.detail("subscriber_broker", targets.subscribers.addr.to_string());
    if let Some(waited) = routed_after {
        result.detail("route_ready_s", waited.as_secs_f64());
        result.detail("late_probes", shared.late_probes.get());
    }
    Ok(result)
}

/// Publishes an empty QoS 0 probe on every topic whose probe has not yet reached every
/// subscriber, every `PROBE_EVERY`, until all have; returns how long that took. Runs before the
/// scenario's tasks exist, so it drives the connections itself, one after another.
async fn await_routes(
    pubs: &mut [Conn],
    subs: &mut [Conn],
    topics: &[String],
    limit: Duration,
) -> Result<Duration, ScenarioError> {
    let start = clock::now();
    let deadline = start + limit;
    let probes: Vec<Packet> = topics
        .iter()
        .map(|t| {
            Packet::Publish(Publish {
                qos: QoS::AtMostOnce,
                topic: ByteString::from(t.as_str()),
                payload: Bytes::new(),
                ..Publish::default()
            })
        })
        .collect();
    let n_pubs = pubs.len();
    // seen[s * n_pubs + p]: subscriber s received a probe from publisher p's topic.
    let mut seen = vec![false; subs.len() * n_pubs];
    loop {
        for (p, (conn, probe)) in pubs.iter_mut().zip(&probes).enumerate() {
            if (0..subs.len()).all(|s| seen.get(s * n_pubs + p).copied().unwrap_or(true)) {
                continue;
            }
            conn.queue(probe);
            let fail = |source| ScenarioError::Client {
                role: "publisher",
                index: p,
                source,
            };
            tokio::time::timeout(PROBE_EVERY, conn.flush())
                .await
                .map_err(|_| fail(ClientError::Timeout("route probe write")))?
                .map_err(fail)?;
        }
        let round_end = clock::now() + PROBE_EVERY;
        for (s, conn) in subs.iter_mut().enumerate() {
            let fail = |source| ScenarioError::Client {
                role: "subscriber",
                index: s,
                source,
            };
            loop {
                while let Some(packet) = conn.try_decode().map_err(fail)? {
                    match packet {
                        Packet::Publish(publish) => {
                            if let Some(p) = topics.iter().position(|t| **t == *publish.topic)
                                && let Some(cell) = seen.get_mut(s * n_pubs + p)
                            {
                                *cell = true;
                            }
                        }
                        Packet::Disconnect(d) => {
                            return Err(fail(ClientError::Refused(d.reason_code)));
                        }
                        _ => {}
                    }
                }
                if (0..n_pubs).all(|p| seen.get(s * n_pubs + p).copied().unwrap_or(true)) {
                    break;
                }
                // Wait for more until the round ends; a subscriber reached after that gets one
                // immediate read so data already in its socket is not ignored.
                let until = round_end.max(clock::now() + Duration::from_millis(1));
                match tokio::time::timeout_at(until.into(), conn.io()).await {
                    Ok(r) => r.map_err(fail)?,
                    Err(_) => break,
                }
            }
        }
        if seen.iter().all(|&x| x) {
            return Ok(clock::now().duration_since(start));
        }
        if clock::now() >= deadline {
            return Err(ScenarioError::NotRouted {
                waited: limit,
                missing: seen.iter().filter(|&&x| !x).count(),
                pairs: seen.len(),
            });
        }
    }
}

/// Hands out packet identifiers never in use twice, even if acknowledgements come out of order.
struct PacketIds {
    in_use: Vec<bool>,
    next: u16,
}

impl PacketIds {
    fn new() -> PacketIds {
        PacketIds {
            in_use: vec![false; usize::from(u16::MAX) + 1],
            next: 0,
        }
    }

    /// The next free id. The caller keeps fewer than 65535 in flight, so one is always free.
    fn take(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1);
            if self.next == 0 {
                continue;
            }
            if let Some(slot) = self.in_use.get_mut(usize::from(self.next))
                && !*slot
            {
                *slot = true;
                return self.next;
            }
        }
    }

    /// Frees `id`; false when it was not in flight (a stray or duplicate acknowledgement).
    fn release(&mut self, id: u16) -> bool {
        match self.in_use.get_mut(usize::from(id)) {
            Some(slot) if *slot => {
                *slot = false;
                true
            }
            _ => false,
        }
    }
}

/// Writes the stamp into the first `STAMP_LEN` bytes of `dst` (no-op if `dst` is shorter).
fn write_stamp(dst: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    if let Some(d) = dst.get_mut(..STAMP_LEN) {
        d[..4].copy_from_slice(&publisher.to_be_bytes());
        d[4..12].copy_from_slice(&seq.to_be_bytes());
        d[12..20].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// Reads a stamp; `None` for a payload that is not ours (too short).
fn read_stamp(src: &[u8]) -> Option<(u32, u64, u64)> {
    let publisher = u32::from_be_bytes(src.get(..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(src.get(4..12)?.try_into().ok()?);
    let sent_ns = u64::from_be_bytes(src.get(12..20)?.try_into().ok()?);
    Some((publisher, seq, sent_ns))
}

async fn publish_loop(
    shared: Rc<Shared>,
    spec: Rc<Spec>,
    index: usize,
    mut conn: Conn,
    topic: String,
    deadline: Instant,
) -> Result<(), ClientError> {
    let window = match spec.qos {
        QoS::AtMostOnce => usize::MAX,
        _ => usize::from(spec.window.min(conn.server_receive_maximum).max(1)),
    };
    // One packet reused for every message: only its packet id changes, and the stamp is
    // patched into the encoded bytes, so publishing allocates nothing.
    let mut packet = Packet::Publish(Publish {
        qos: spec.qos,
        topic: ByteString::from(topic),
        payload: Bytes::from(vec![0u8; spec.payload]),
        ..Publish::default()
    });
    let stamp_index = u32::try_from(index).unwrap_or(u32::MAX);
    let mut ids = PacketIds::new();
    let mut inflight = 0usize;
    let mut seq = 0u64;
    let mut floor = 0u64;
    let pairs = (shared.publishers * shared.subscribers) as u64;
    let max_lag = (spec.max_lag / pairs.max(1)).max(1);
    let mut stopping = false;
    let stop = tokio::time::sleep_until(deadline.into());
    tokio::pin!(stop);
    let tick = tokio::time::sleep(PACE_TICK);
    tokio::pin!(tick);
    loop {
        while let Some(packet) = conn.try_decode()? {
            match packet {
                // `release` is false for an id not in flight: a stray ack frees nothing.
                Packet::PubAck(ack) | Packet::PubComp(ack) if ids.release(ack.packet_id) => {
                    inflight -= 1;
                    Shared::bump(&shared.acked, 1);
                    if ack.reason_code.is_error() {
                        Shared::bump(&shared.rejected, 1);
                    }
                }
                // A refused QoS 2 publish ends at PUBREC (MQTT 5 §4.3.3).
                Packet::PubRec(ack) if ack.reason_code.is_error() => {
                    let freed = ids.release(ack.packet_id);
                    inflight -= usize::from(freed);
                    Shared::bump(&shared.rejected, u64::from(freed));
                }
                Packet::PubRec(ack) => conn.queue(&Packet::PubRel(Ack::new(ack.packet_id))),
                Packet::Disconnect(d) => return Err(ClientError::Refused(d.reason_code)),
                _ => {}
            }
        }

        let mut lag_blocked = false;
        let mut pace_blocked = false;
        if !stopping {
            let now_ns = clock::nanos_since(shared.epoch);
            let due = match spec.rate {
                Some(rate) => (now_ns as f64 / 1e9 * rate) as u64,
                None => u64::MAX,
            };
            while inflight < window && conn.pending_write() < WRITE_BATCH {
                if seq >= due {
                    pace_blocked = true;
                    break;
                }
                if seq - floor >= max_lag {
                    floor = shared.floor(index);
                    if seq - floor >= max_lag {
                        lag_blocked = true;
                        break;
                    }
                }
                seq += 1;
                if let Packet::Publish(publish) = &mut packet {
                    publish.packet_id = match spec.qos {
                        QoS::AtMostOnce => None,
                        _ => {
                            inflight += 1;
                            Some(ids.take())
                        }
                    };
                }
                conn.queue(&packet);
                let buf = conn.write_buffer();
                let start = buf.len().saturating_sub(spec.payload);
                if let Some(payload) = buf.get_mut(start..) {
                    write_stamp(payload, stamp_index, seq, clock::nanos_since(shared.epoch));
                }
                Shared::bump(&shared.sent, 1);
            }
        }
        if stopping && inflight == 0 && conn.pending_write() == 0 {
            break;
        }

        let progressed = shared.progress.notified();
        if lag_blocked {
            shared.lag_waiters.set(shared.lag_waiters.get() + 1);
        }
        if pace_blocked && tick.is_elapsed() {
            tick.as_mut().reset((clock::now() + PACE_TICK).into());
        }
        let outcome = tokio::select! {
            biased;
            () = &mut stop, if !stopping => {
                stopping = true;
                Ok(())
            }
            r = conn.io() => r,
            () = progressed, if lag_blocked => Ok(()),
            () = &mut tick, if pace_blocked => Ok(()),
        };
        if lag_blocked {
            shared.lag_waiters.set(shared.lag_waiters.get() - 1);
        }
        outcome?;
    }
    conn.disconnect().await;
    Ok(())
}

async fn subscribe_loop(
    shared: Rc<Shared>,
    spec: Rc<Spec>,
    index: usize,
    mut conn: Conn,
) -> Result<(), ClientError> {
    let row = index * shared.publishers;
    loop {
        while let Some(packet) = conn.try_decode()? {
            match packet {
                Packet::Publish(publish) => {
                    record(&shared, &spec, row, &publish.payload);
                    match (publish.qos, publish.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => conn.queue(&Packet::PubAck(Ack::new(id))),
                        (QoS::ExactlyOnce, Some(id)) => conn.queue(&Packet::PubRec(Ack::new(id))),
                        _ => {}
                    }
                }
                Packet::PubRel(ack) => conn.queue(&Packet::PubComp(Ack::new(ack.packet_id))),
                Packet::Disconnect(d) => return Err(ClientError::Refused(d.reason_code)),
                _ => {}
            }
        }
        if shared.lag_waiters.get() > 0 {
            shared.progress.notify_waiters();
        }
        if shared.finish.get() {
            break;
        }
        let finished = shared.finish_signal.notified();
        tokio::select! {
            biased;
            () = finished => {}
            r = conn.io() => r?,
        }
    }
    conn.disconnect().await;
    Ok(())
}

/// Counts one delivery to the subscriber whose row starts at `row`.
fn record(shared: &Shared, spec: &Spec, row: usize, payload: &[u8]) {
    if payload.is_empty() {
        // A route probe that was still on its way when the route check passed.
        Shared::bump(&shared.late_probes, 1);
        return;
    }
    Shared::bump(&shared.delivered, 1);
    let Some((publisher, seq, sent_ns)) = read_stamp(payload) else {
        Shared::bump(&shared.foreign, 1);
        return;
    };
    let cell = usize::try_from(publisher)
        .ok()
        .filter(|&p| p < shared.publishers)
        .and_then(|p| shared.highest.get(row + p));
    let Some(cell) = cell else {
        Shared::bump(&shared.foreign, 1);
        return;
    };
    let highest = cell.get();
    if seq <= highest {
        Shared::bump(&shared.out_of_order, 1);
    } else {
        Shared::bump(&shared.skipped, seq - highest - 1);
        cell.set(seq);
    }
    if spec.latency && (shared.sample_from..shared.sample_until).contains(&sent_ns) {
        let now_ns = clock::nanos_since(shared.epoch);
        shared
            .latencies
            .borrow_mut()
            .push(now_ns.saturating_sub(sent_ns));
    }
}

/// How a client task ended, as an error (None when it finished cleanly). `outcome` is `None` when
/// the task did not finish in time; `timed_out` says what that means for this role.
fn task_failure(
    role: &'static str,
    index: usize,
    outcome: Option<Result<Result<(), ClientError>, tokio::task::JoinError>>,
    timed_out: impl FnOnce() -> ScenarioError,
) -> Option<ScenarioError> {
    match outcome {
        Some(Ok(Ok(()))) => None,
        Some(Ok(Err(source))) => Some(ScenarioError::Client {
            role,
            index,
            source,
        }),
        Some(Err(join)) => Some(ScenarioError::Task(join.to_string())),
        None => Some(timed_out()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_broker::{self, Knobs};
    use flockmq::codec::Protocol;

    fn spec(name: &str, publishers: usize, subscribers: usize, qos: QoS) -> Spec {
        Spec {
            name: name.to_string(),
            publishers,
            subscribers,
            qos,
            wildcard: false,
            payload: 64,
            window: 8,
            max_lag: 1000,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            drain: Duration::from_secs(2),
            rate: None,
            latency: false,
        }
    }

    /// Runs `fut` on a fresh single-threaded runtime inside a `LocalSet`, as `main` does.
    fn on_local_runtime<F: std::future::Future>(fut: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&runtime, fut)
    }

    /// Runs `spec` against a fresh fake broker on a single-threaded runtime, as `main` does.
    fn run_against_fake(knobs: Knobs, protocol: Protocol, spec: Spec) -> TestResult {
        on_local_runtime(async move {
            let addr = fake_broker::start(knobs).await?;
            anyhow::Ok(run(Targets::single(Target { addr, protocol }), spec).await?)
        })
        .expect("scenario")
    }

    /// Runs `spec` with publishers on one listener of a two-listener fake "cluster" whose first
    /// `unrouted` publishes go nowhere, and subscribers on the other.
    fn run_across_nodes(unrouted: u64, route_wait: Option<Duration>, spec: Spec) -> TestResult {
        on_local_runtime(async move {
            let knobs = Knobs {
                unrouted_first: unrouted,
                ..Knobs::default()
            };
            let addrs = fake_broker::start_nodes(knobs, 2).await?;
            let target = |i: usize| Target {
                addr: addrs[i],
                protocol: Protocol::V5,
            };
            let targets = Targets {
                publishers: target(0),
                subscribers: target(1),
                route_wait,
            };
            anyhow::Ok(run(targets, spec).await?)
        })
        .expect("scenario")
    }

    fn count(result: &TestResult, key: &str) -> u64 {
        result
            .details
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("no {key} in {:?}", result.details))
    }

    #[test]
    fn qos2_stream_through_a_forwarding_broker_loses_nothing() {
        let knobs = Knobs {
            receive_maximum: Some(4),
            ..Knobs::default()
        };
        let r = run_against_fake(knobs, Protocol::V5, spec("q2", 1, 1, QoS::ExactlyOnce));
        let sent = count(&r, "sent");
        assert!(sent > 100, "sent only {sent}");
        assert_eq!(count(&r, "acked"), sent, "every PUBCOMP arrived");
        assert_eq!(count(&r, "delivered"), sent);
        assert_eq!(count(&r, "lost"), 0);
        assert_eq!(count(&r, "out_of_order_or_duplicate"), 0);
        assert!(
            r.figures
                .iter()
                .any(|f| f.name == "deliveries/s" && f.value > 0.0)
        );
    }

    #[test]
    fn fan_in_on_a_wildcard_receives_every_publisher() {
        let mut spec = spec("fanin", 5, 1, QoS::AtLeastOnce);
        spec.wildcard = true;
        let r = run_against_fake(Knobs::default(), Protocol::V311, spec);
        let sent = count(&r, "sent");
        assert!(sent > 100, "sent only {sent}");
        assert_eq!(count(&r, "delivered"), sent);
        assert_eq!(count(&r, "unrecognised_payloads"), 0);
    }

    #[test]
    fn fan_out_counts_one_delivery_per_subscriber() {
        let r = run_against_fake(
            Knobs::default(),
            Protocol::V5,
            spec("fo", 1, 3, QoS::AtMostOnce),
        );
        let sent = count(&r, "sent");
        assert!(sent > 100, "sent only {sent}");
        assert_eq!(count(&r, "expected_deliveries"), sent * 3);
        assert_eq!(count(&r, "delivered"), sent * 3);
    }

    #[test]
    fn publishes_the_broker_drops_are_reported_lost() {
        let knobs = Knobs {
            drop_every: 10,
            ..Knobs::default()
        };
        let r = run_against_fake(knobs, Protocol::V5, spec("drop", 1, 1, QoS::AtLeastOnce));
        let sent = count(&r, "sent");
        assert!(sent >= 100, "sent only {sent}");
        assert_eq!(count(&r, "lost"), sent / 10);
        // Only a drop of the very last message is not followed by a later one.
        assert!(count(&r, "skipped_mid_stream") + 1 >= sent / 10);
        let lost = r.figures.iter().find(|f| f.name == "lost").map(|f| f.value);
        assert_eq!(lost, Some((sent / 10) as f64));
    }

    #[test]
    fn fixed_rate_latency_samples_the_measured_window_only() {
        let mut spec = spec("lat", 1, 1, QoS::AtMostOnce);
        spec.rate = Some(2000.0);
        spec.latency = true;
        let r = run_against_fake(Knobs::default(), Protocol::V5, spec);
        // 0.3 s at 2,000 msg/s; the warm-up's 200 messages are not sampled.
        let samples = count(&r, "samples");
        assert!((450..=700).contains(&samples), "{samples} samples");
        let p = |name: &str| r.figures.iter().find(|f| f.name == name).map(|f| f.value);
        let (p50, p99, p999) = (p("p50"), p("p99"), p("p999"));
        assert!(
            p50 > Some(0.0) && p50 <= p99 && p99 <= p999,
            "{p50:?} {p99:?} {p999:?}"
        );
        assert!(r.figures.iter().all(|f| f.name != "deliveries/s"));
    }

    #[test]
    fn route_probe_keeps_messages_published_before_the_route_from_counting_as_lost() {
        let r = run_across_nodes(
            20,
            Some(Duration::from_secs(5)),
            spec("x1", 2, 2, QoS::AtLeastOnce),
        );
        let sent = count(&r, "sent");
        assert!(sent > 100, "sent only {sent}");
        assert_eq!(count(&r, "lost"), 0);
        assert_eq!(count(&r, "delivered"), sent * 2);
        assert_eq!(count(&r, "unrecognised_payloads"), 0);
        assert_ne!(
            r.details["publisher_broker"],
            r.details["subscriber_broker"]
        );
        assert!(r.details.contains_key("route_ready_s"));
    }

    #[test]
    fn without_the_route_probe_unrouted_publishes_are_lost() {
        let r = run_across_nodes(20, None, spec("x0", 1, 1, QoS::AtLeastOnce));
        assert_eq!(count(&r, "lost"), 20);
        assert!(!r.details.contains_key("route_ready_s"));
    }

    #[test]
    fn a_route_that_never_forms_fails_the_scenario() {
        let outcome = on_local_runtime(async move {
            let knobs = Knobs {
                unrouted_first: u64::MAX,
                ..Knobs::default()
            };
            let addrs = fake_broker::start_nodes(knobs, 2).await.expect("listen");
            let targets = Targets {
                publishers: Target {
                    addr: addrs[0],
                    protocol: Protocol::V311,
                },
                subscribers: Target {
                    addr: addrs[1],
                    protocol: Protocol::V311,
                },
                route_wait: Some(Duration::from_millis(300)),
            };
            run(targets, spec("x2", 1, 1, QoS::AtMostOnce)).await
        });
        assert!(
            matches!(
                outcome,
                Err(ScenarioError::NotRouted {
                    missing: 1,
                    pairs: 1,
                    ..
                })
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn stamp_round_trips_through_a_payload() {
        let mut payload = [0u8; 64];
        write_stamp(&mut payload, 7, 123_456_789, 42);
        assert_eq!(read_stamp(&payload), Some((7, 123_456_789, 42)));
    }

    #[test]
    fn short_payload_has_no_stamp() {
        assert_eq!(read_stamp(&[0u8; STAMP_LEN - 1]), None);
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_still_in_flight() {
        let mut ids = PacketIds::new();
        let first = ids.take();
        assert_eq!(first, 1);
        for _ in 2..=u16::MAX {
            let id = ids.take();
            assert!(ids.release(id));
        }
        // Wrapped around: 1 is still in flight, so 2 comes next, never 0 or 1.
        assert_eq!(ids.take(), 2);
        assert!(ids.release(first));
        assert!(
            !ids.release(first),
            "a second release of the same id is refused"
        );
    }
}
