//! The two seams of the driver: the sans-IO core it feeds (`Core`, the broker in production) and
//! the wire format it frames with (`Wire`, the MQTT codec in production). Tests drive the whole
//! async machinery with fakes of both; nothing here does I/O.

use std::time::Duration;

use bytes::BytesMut;

use crate::broker::{
    Action, Broker, BrokerMetrics, ClientInfo, ConnId, ConnectionLoss, LocalPublish, RetainVersion,
    RetainedDigest, RetainedRecord, RouteChange,
};
use crate::codec::{self, DecodeError, Decoder, Packet, Protocol, Publish};

/// The event/action interface of a sans-IO core, exactly the broker's.
pub(crate) trait Core: Send + 'static {
    fn connection_opened(&mut self, conn: ConnId, now: Duration);
    fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Duration);
    fn connection_lost(&mut self, conn: ConnId, why: ConnectionLoss, now: Duration);
    fn handle_timeout(&mut self, now: Duration);
    fn poll_timeout(&self) -> Option<Duration>;
    fn poll_action(&mut self) -> Option<Action>;
    fn shutdown(&mut self, now: Duration);
    /// Whether the shutdown has closed every connection (test fakes: at once).
    fn shutdown_drained(&self) -> bool {
        true
    }
    /// The shutdown timeout passed: close what is still open.
    fn finish_shutdown(&mut self, _now: Duration) {}
    fn metrics(&self) -> BrokerMetrics;
    fn clients(&self) -> Vec<ClientInfo>;
    /// The retained set's digest buckets (empty for a core without retained messages).
    fn retained_digest(&mut self, _now: Duration) -> Vec<u64> {
        Vec::new()
    }
    /// Retained values in the buckets where `digest` differs from ours.
    fn retained_records(&mut self, _digest: &[u64], _now: Duration) -> Vec<RetainedRecord> {
        Vec::new()
    }
    /// Merges a peer's retained values.
    fn merge_retained(&mut self, _records: Vec<RetainedRecord>, _now: Duration) {}
    /// SUBACKs wait for `routes_confirmed` from now on.
    fn hold_subacks_for_routes(&mut self) {}
    /// The cluster has every route change up to `seq`.
    fn routes_confirmed(&mut self, _seq: u64, _now: Duration) {}
    /// The cluster seam; a core that is never clustered (the test fakes) keeps the defaults.
    fn enable_cluster(&mut self, _origin: u64, _epoch_ms: u64) {}
    fn poll_route_change(&mut self) -> Option<RouteChange> {
        None
    }
    fn poll_forward(&mut self) -> Option<LocalPublish> {
        None
    }
    fn deliver_forwarded(
        &mut self,
        _publish: Publish,
        _version: Option<RetainVersion>,
        _now: Duration,
    ) {
    }
    /// Output pacing (`Action::NotifyDrained`); fakes that never pause keep the defaults.
    fn connection_drained(&mut self, _conn: ConnId, _now: Duration) {}
    fn set_congested(&mut self, _congested: bool) {}
}

impl Core for Broker {
    fn connection_opened(&mut self, conn: ConnId, now: Duration) {
        Broker::connection_opened(self, conn, now);
    }
    fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Duration) {
        Broker::handle_packet(self, conn, packet, now);
    }
    fn connection_lost(&mut self, conn: ConnId, why: ConnectionLoss, now: Duration) {
        Broker::connection_lost(self, conn, why, now);
    }
    fn handle_timeout(&mut self, now: Duration) {
        Broker::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Duration> {
        Broker::poll_timeout(self)
    }
    fn poll_action(&mut self) -> Option<Action> {
        Broker::poll_action(self)
    }
    fn shutdown(&mut self, now: Duration) {
        Broker::shutdown(self, now);
    }
    fn shutdown_drained(&self) -> bool {
        Broker::shutdown_drained(self)
    }
    fn finish_shutdown(&mut self, now: Duration) {
        Broker::finish_shutdown(self, now);
    }
    fn metrics(&self) -> BrokerMetrics {
        Broker::metrics(self)
    }
    fn clients(&self) -> Vec<ClientInfo> {
        Broker::clients(self)
    }
    fn retained_digest(&mut self, now: Duration) -> Vec<u64> {
        Broker::retained_digest(self, now).0
    }
    fn retained_records(&mut self, digest: &[u64], now: Duration) -> Vec<RetainedRecord> {
        Broker::retained_records(self, &RetainedDigest(digest.to_vec()), now)
    }
    fn merge_retained(&mut self, records: Vec<RetainedRecord>, now: Duration) {
        Broker::merge_retained(self, records, now);
    }
    fn hold_subacks_for_routes(&mut self) {
        Broker::hold_subacks_for_routes(self);
    }
    fn routes_confirmed(&mut self, seq: u64, now: Duration) {
        Broker::routes_confirmed(self, seq, now);
    }
    fn enable_cluster(&mut self, origin: u64, epoch_ms: u64) {
        Broker::enable_cluster(self, origin, epoch_ms);
    }
    fn poll_route_change(&mut self) -> Option<RouteChange> {
        Broker::poll_route_change(self)
    }
    fn poll_forward(&mut self) -> Option<LocalPublish> {
        Broker::poll_forward(self)
    }
    fn deliver_forwarded(
        &mut self,
        publish: Publish,
        version: Option<RetainVersion>,
        now: Duration,
    ) {
        Broker::deliver_forwarded(self, publish, version, now);
    }
    fn connection_drained(&mut self, conn: ConnId, now: Duration) {
        Broker::connection_drained(self, conn, now);
    }
    fn set_congested(&mut self, congested: bool) {
        Broker::set_congested(self, congested);
    }
}

/// Framing of packets on a byte stream.
pub(crate) trait Wire: Send + Sync + 'static {
    /// Per-connection decoder state.
    type Decoder: Send + Sync + 'static;
    fn decoder(max_packet_size: usize) -> Self::Decoder;
    fn decode(
        decoder: &mut Self::Decoder,
        buf: &mut BytesMut,
    ) -> Result<Option<Packet>, DecodeError>;
    fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut);
}

/// The MQTT codec.
pub(crate) struct MqttWire;

impl Wire for MqttWire {
    type Decoder = Decoder;

    fn decoder(max_packet_size: usize) -> Decoder {
        Decoder::new(max_packet_size)
    }

    fn decode(decoder: &mut Decoder, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        decoder.decode(buf)
    }

    fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) {
        codec::encode(packet, protocol, buf);
    }
}
