//! Outbound QoS 1/2 state of one session: the packet ids in use and where each message stands in
//! its acknowledgement flow, in the order the messages were first sent.
//!
//! It owns no queue and sends nothing; the session decides when to send and what to resend.

use std::collections::VecDeque;
use std::time::Duration;

use super::session::Delivery;

/// Where an outbound QoS>0 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Qos2Sent,
    /// PUBREL sent, waiting for PUBCOMP (the message itself is no longer resent).
    Released,
}

/// One unacknowledged outbound message.
#[derive(Debug)]
pub(crate) struct InflightEntry {
    pub packet_id: u16,
    pub delivery: Delivery,
    pub state: OutState,
    /// When it (or its PUBREL) was last written, for the retry timer.
    pub sent_at: Duration,
    /// Due for a resend that waits for the connection to drain (see `Session::resend_marked`).
    pub resend: bool,
}

/// The in-flight window towards one client.
#[derive(Debug)]
pub(crate) struct Inflight {
    /// In first-send order, which is also the resend order on reconnect.
    entries: VecDeque<InflightEntry>,
    next_id: u16,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight {
            entries: VecDeque::new(),
            next_id: 1,
        }
    }
}

impl Inflight {
    /// Takes every entry out, in first-send order (the session is ending).
    pub fn take_all(&mut self) -> VecDeque<InflightEntry> {
        std::mem::take(&mut self.entries)
    }

    /// Number of messages awaiting acknowledgement.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The next free packet id (1..=65535, skipping ids still in flight); `None` if all are used.
    pub fn next_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_id;
            self.next_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.entries.iter().any(|e| e.packet_id == id) {
                return Some(id);
            }
        }
        None
    }

    /// Records a message in flight that came with a session from another node (its packet id
    /// is kept; new ids continue after the highest).
    pub fn push_imported(&mut self, entry: InflightEntry) {
        self.next_id = entry
            .packet_id
            .checked_add(1)
            .unwrap_or(1)
            .max(self.next_id);
        self.entries.push_back(entry);
    }

    /// All entries in first-send order.
    pub fn iter(&self) -> impl Iterator<Item = &InflightEntry> {
        self.entries.iter()
    }

    /// Records a message just sent.
    pub fn push(&mut self, entry: InflightEntry) {
        self.entries.push_back(entry);
    }

    /// The entry using `packet_id`.
    pub fn get_mut(&mut self, packet_id: u16) -> Option<&mut InflightEntry> {
        self.entries.iter_mut().find(|e| e.packet_id == packet_id)
    }

    /// Removes the entry using `packet_id` if it is in `state`.
    pub fn complete(&mut self, packet_id: u16, state: OutState) -> Option<InflightEntry> {
        let pos = self
            .entries
            .iter()
            .position(|e| e.packet_id == packet_id && e.state == state)?;
        self.entries.remove(pos)
    }

    /// Removes the entry using `packet_id`, whatever its state.
    pub fn remove(&mut self, packet_id: u16) -> Option<InflightEntry> {
        let pos = self.entries.iter().position(|e| e.packet_id == packet_id)?;
        self.entries.remove(pos)
    }

    /// All entries in first-send order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut InflightEntry> {
        self.entries.iter_mut()
    }

    /// The earliest `sent_at` of any entry.
    pub fn oldest_send(&self) -> Option<Duration> {
        self.entries.iter().map(|e| e.sent_at).min()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::session::Message;
    use crate::codec::QoS;

    fn entry(packet_id: u16) -> InflightEntry {
        let msg = Arc::new(Message::for_test("t", QoS::AtLeastOnce));
        InflightEntry {
            packet_id,
            delivery: Delivery {
                msg,
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: Vec::new(),
                shared: None,
                from_store: false,
            },
            state: OutState::Qos1Sent,
            sent_at: Duration::ZERO,
            resend: false,
        }
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_and_wrap() {
        let mut f = Inflight::default();
        f.push(entry(1));
        f.push(entry(2));
        assert_eq!(f.next_packet_id(), Some(3));
        f.next_id = u16::MAX;
        assert_eq!(f.next_packet_id(), Some(u16::MAX));
        assert_eq!(
            f.next_packet_id(),
            Some(3),
            "wraps to 1, skipping 1 and 2 which are in use"
        );
    }

    #[test]
    fn complete_requires_matching_state() {
        let mut f = Inflight::default();
        f.push(entry(7));
        assert!(f.complete(7, OutState::Qos2Sent).is_none());
        assert!(f.complete(7, OutState::Qos1Sent).is_some());
        assert_eq!(f.len(), 0);
    }
}
