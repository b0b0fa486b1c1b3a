//! Prometheus text exposition (format 0.0.4) of a `NodeMetrics` snapshot. Pure formatting.

use std::fmt::Write;

use crate::node::NodeMetrics;

const QOS_LABELS: [&str; 3] = ["0", "1", "2"];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn by_qos(out: &mut String, name: &str, help: &str, values: &[u64; 3]) {
    family(out, name, "counter", help);
    for (qos, value) in QOS_LABELS.iter().zip(values) {
        let _ = writeln!(out, "{name}{{qos=\"{qos}\"}} {value}");
    }
}

/// The body of `GET /metrics`.
pub fn render_prometheus(m: &NodeMetrics) -> String {
    let b = &m.broker;
    let mut out = String::with_capacity(2048);
    single(
        &mut out,
        "flockmq_connections",
        "gauge",
        "Client connections currently open.",
        b.connections,
    );
    single(
        &mut out,
        "flockmq_sessions",
        "gauge",
        "Sessions, connected or not.",
        b.sessions,
    );
    single(
        &mut out,
        "flockmq_subscriptions",
        "gauge",
        "Subscriptions of all sessions.",
        b.subscriptions,
    );
    single(
        &mut out,
        "flockmq_retained_messages",
        "gauge",
        "Retained messages stored.",
        b.retained,
    );
    by_qos(
        &mut out,
        "flockmq_messages_received_total",
        "PUBLISH packets received from clients.",
        &b.messages_in,
    );
    by_qos(
        &mut out,
        "flockmq_messages_sent_total",
        "PUBLISH packets sent to clients.",
        &b.messages_out,
    );
    by_qos(
        &mut out,
        "flockmq_messages_dropped_total",
        "Messages dropped: no matching subscriber, queue full, expired, or too large for the client.",
        &b.messages_dropped,
    );
    single(
        &mut out,
        "flockmq_bytes_received_total",
        "counter",
        "Bytes read from client sockets.",
        b.bytes_in,
    );
    single(
        &mut out,
        "flockmq_bytes_sent_total",
        "counter",
        "Bytes handed to client sockets.",
        b.bytes_out,
    );
    single(
        &mut out,
        "flockmq_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        m.connections_accepted,
    );
    single(
        &mut out,
        "flockmq_slow_consumer_disconnects_total",
        "counter",
        "Connections dropped because the client did not read its messages.",
        m.slow_consumer_disconnects,
    );
    single(
        &mut out,
        "flockmq_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        m.uptime,
    );
    let c = &m.cluster;
    for (name, kind, help, value) in [
        (
            "flockmq_cluster_links_up",
            "gauge",
            "Authenticated links to other nodes.",
            c.links_up,
        ),
        (
            "flockmq_cluster_running_nodes",
            "gauge",
            "Running cluster members, this node included.",
            c.running_nodes,
        ),
        (
            "flockmq_cluster_stopped_nodes",
            "gauge",
            "Known cluster members without a live link.",
            c.stopped_nodes,
        ),
        (
            "flockmq_cluster_routes",
            "gauge",
            "Routes: local filters plus (filter, remote node) pairs.",
            c.routes,
        ),
        (
            "flockmq_cluster_forwards_sent_total",
            "counter",
            "Publishes forwarded to other nodes (one per destination node).",
            c.forwards_sent,
        ),
        (
            "flockmq_cluster_forwards_received_total",
            "counter",
            "Publishes received from other nodes.",
            c.forwards_received,
        ),
        (
            "flockmq_cluster_forward_drops_total",
            "counter",
            "Forwards that could not be sent to a node.",
            c.forward_drops,
        ),
        (
            "flockmq_cluster_links_rejected_total",
            "counter",
            "Links refused or closed for bad input (handshake, framing, garbage).",
            c.links_rejected,
        ),
        (
            "flockmq_cluster_forwards_unacked",
            "gauge",
            "QoS >= 1 forwards kept until their node acknowledges them (also while its link is down).",
            c.forwards_unacked,
        ),
        (
            "flockmq_cluster_announces_sent_total",
            "counter",
            "Multicast discovery announces sent.",
            c.announces_sent,
        ),
        (
            "flockmq_cluster_discovery_datagrams_received_total",
            "counter",
            "Authenticated discovery datagrams received from other nodes.",
            c.datagrams_received,
        ),
        (
            "flockmq_cluster_discovery_datagrams_dropped_total",
            "counter",
            "Discovery datagrams dropped (malformed, other cluster or cookie, bad HMAC).",
            c.datagrams_dropped,
        ),
        (
            "flockmq_cluster_handshakes_refused_total",
            "counter",
            "Incoming cluster connections closed at once because too many handshakes were pending.",
            c.handshakes_refused,
        ),
    ] {
        single(&mut out, name, kind, help, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerMetrics;

    fn sample() -> NodeMetrics {
        NodeMetrics {
            node: "n1@127.0.0.1".into(),
            mqtt_listener: "127.0.0.1:1883".parse().unwrap(),
            uptime: 42,
            connections_accepted: 9,
            slow_consumer_disconnects: 1,
            broker: BrokerMetrics {
                connections: 3,
                sessions: 5,
                subscriptions: 7,
                retained: 2,
                messages_in: [10, 11, 12],
                messages_out: [20, 21, 22],
                messages_dropped: [1, 0, 0],
                bytes_in: 1000,
                bytes_out: 2000,
            },
            cluster: crate::cluster::ClusterMetrics {
                links_up: 2,
                running_nodes: 3,
                stopped_nodes: 1,
                routes: 4,
                forwards_sent: 5,
                forwards_received: 6,
                forward_drops: 7,
                links_rejected: 8,
                forwards_unacked: 12,
                announces_sent: 9,
                datagrams_received: 10,
                datagrams_dropped: 11,
                handshakes_refused: 13,
            },
        }
    }

    #[test]
    fn renders_every_family_with_help_type_and_value() {
        let text = render_prometheus(&sample());
        for line in [
            "# HELP flockmq_connections Client connections currently open.",
            "# TYPE flockmq_connections gauge",
            "flockmq_connections 3",
            "flockmq_sessions 5",
            "flockmq_subscriptions 7",
            "flockmq_retained_messages 2",
            "# TYPE flockmq_messages_received_total counter",
            "flockmq_messages_received_total{qos=\"0\"} 10",
            "flockmq_messages_received_total{qos=\"2\"} 12",
            "flockmq_messages_sent_total{qos=\"1\"} 21",
            "flockmq_messages_dropped_total{qos=\"0\"} 1",
            "flockmq_bytes_received_total 1000",
            "flockmq_bytes_sent_total 2000",
            "flockmq_connections_accepted_total 9",
            "flockmq_slow_consumer_disconnects_total 1",
            "flockmq_uptime_seconds 42",
            "flockmq_cluster_links_up 2",
            "flockmq_cluster_running_nodes 3",
            "flockmq_cluster_stopped_nodes 1",
            "flockmq_cluster_routes 4",
            "flockmq_cluster_forwards_sent_total 5",
            "flockmq_cluster_forwards_received_total 6",
            "flockmq_cluster_forward_drops_total 7",
            "flockmq_cluster_links_rejected_total 8",
            "flockmq_cluster_forwards_unacked 12",
            "flockmq_cluster_announces_sent_total 9",
            "flockmq_cluster_discovery_datagrams_received_total 10",
            "flockmq_cluster_discovery_datagrams_dropped_total 11",
            "flockmq_cluster_handshakes_refused_total 13",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family() {
        let text = render_prometheus(&sample());
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(
                    declared.last().map(String::as_str),
                    Some(name),
                    "sample {line:?} outside its family"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<u64>().is_ok(), "bad value in {line:?}");
            }
        }
        assert_eq!(declared.len(), 25);
        assert!(text.ends_with('\n'));
    }
}
