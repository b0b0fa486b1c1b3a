//! Which of our route changes every linked node has applied, so that a SUBACK can wait until a
//! publish accepted anywhere in the cluster reaches the new subscription.
//!
//! Our route changes are numbered from 1 in the order the broker reported them (`route_seq`).
//! Every route message we send on a link (a delta, or the whole set on link up) is remembered
//! with the number of the change it carries; the peer counts the route messages it applied from
//! the link and acknowledges the count (`RouteAck`, at most one per batch of frames it read). A
//! change is confirmed once every authenticated link has acknowledged the message carrying it,
//! or no longer counts: a link that went down, or whose oldest unacknowledged route message is
//! older than the dead-link time (the peer would be declared dead for that silence too).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::LinkId;

/// Our side of one link: route messages sent and not yet acknowledged.
#[derive(Debug, Default)]
struct Outgoing {
    /// Route messages sent on the link so far.
    sent: u64,
    /// (message number on the link, route change it carries, when sent), oldest first.
    pending: VecDeque<(u64, u64, Duration)>,
    /// The oldest pending message went unacknowledged for the dead-link time: the link holds
    /// nothing back until the peer acknowledges it.
    silent: bool,
}

/// Route-change confirmation for every link, both directions.
#[derive(Debug, Default)]
pub(super) struct RouteAcks {
    /// Our route changes so far.
    seq: u64,
    /// The highest change reported confirmed.
    confirmed: u64,
    out: BTreeMap<LinkId, Outgoing>,
    /// Route messages applied per link (what we acknowledge to the sender).
    applied: BTreeMap<LinkId, u64>,
    /// Links owed an acknowledgement.
    due: BTreeSet<LinkId>,
}

impl RouteAcks {
    /// A local route change happened; returns its number.
    pub(super) fn changed(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A route message carrying every change up to now was sent on `link`.
    pub(super) fn sent(&mut self, link: LinkId, now: Duration) {
        let out = self.out.entry(link).or_default();
        out.sent += 1;
        out.pending.push_back((out.sent, self.seq, now));
    }

    /// The peer on `link` has applied our first `count` route messages.
    pub(super) fn acked(&mut self, link: LinkId, count: u64) {
        if let Some(out) = self.out.get_mut(&link) {
            while out.pending.front().is_some_and(|(n, _, _)| *n <= count) {
                out.pending.pop_front();
                out.silent = false;
            }
        }
    }

    /// We applied a route message from `link`: an acknowledgement is due.
    pub(super) fn applied(&mut self, link: LinkId) {
        *self.applied.entry(link).or_default() += 1;
        self.due.insert(link);
    }

    /// The acknowledgements due: (link, route messages applied from it).
    pub(super) fn take_due(&mut self) -> Vec<(LinkId, u64)> {
        std::mem::take(&mut self.due)
            .into_iter()
            .filter_map(|link| Some((link, *self.applied.get(&link)?)))
            .collect()
    }

    /// The acknowledgement due on `link`, if any.
    pub(super) fn take_due_on(&mut self, link: LinkId) -> Option<u64> {
        self.due
            .remove(&link)
            .then(|| self.applied.get(&link).copied())
            .flatten()
    }

    /// Forgets every link `keep` says no to (no longer authenticated).
    pub(super) fn keep_links(&mut self, keep: impl Fn(LinkId) -> bool) {
        self.out.retain(|&l, _| keep(l));
        self.applied.retain(|&l, _| keep(l));
        self.due.retain(|&l| keep(l));
    }

    /// Every change up to the returned number is confirmed at `now`; `Some` only when that
    /// number grew since the last call that returned one.
    pub(super) fn newly_confirmed(&mut self, now: Duration, dead_after: Duration) -> Option<u64> {
        let mut confirmed = self.seq;
        for out in self.out.values_mut() {
            let Some(&(_, seq, sent_at)) = out.pending.front() else {
                continue;
            };
            if now.saturating_sub(sent_at) >= dead_after {
                out.silent = true;
            }
            if !out.silent {
                confirmed = confirmed.min(seq.saturating_sub(1));
            }
        }
        (confirmed > self.confirmed).then(|| {
            self.confirmed = confirmed;
            confirmed
        })
    }

    /// When the oldest unacknowledged route message stops counting (for `poll_timeout`).
    pub(super) fn next_expiry(&self, dead_after: Duration) -> Option<Duration> {
        self.out
            .values()
            .filter(|o| !o.silent)
            .filter_map(|o| o.pending.front().map(|&(_, _, at)| at + dead_after))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_secs(3);

    #[test]
    fn a_change_is_confirmed_once_every_link_acknowledged_it() {
        let mut a = RouteAcks::default();
        let (l1, l2) = (LinkId(1), LinkId(2));
        let now = Duration::ZERO;
        assert_eq!(a.changed(), 1);
        a.sent(l1, now);
        a.sent(l2, now);
        assert_eq!(a.newly_confirmed(now, DEAD), None);
        a.acked(l1, 1);
        assert_eq!(a.newly_confirmed(now, DEAD), None, "l2 has not");
        a.acked(l2, 1);
        assert_eq!(a.newly_confirmed(now, DEAD), Some(1));
        assert_eq!(a.newly_confirmed(now, DEAD), None, "reported once");
    }

    #[test]
    fn later_changes_wait_only_for_their_own_messages() {
        let mut a = RouteAcks::default();
        let l = LinkId(1);
        let now = Duration::ZERO;
        a.changed();
        a.sent(l, now);
        a.changed();
        a.sent(l, now);
        a.acked(l, 1);
        assert_eq!(a.newly_confirmed(now, DEAD), Some(1));
        a.acked(l, 2);
        assert_eq!(a.newly_confirmed(now, DEAD), Some(2));
    }

    #[test]
    fn no_links_or_a_gone_link_or_a_silent_one_hold_nothing_back() {
        let mut a = RouteAcks::default();
        a.changed();
        assert_eq!(a.newly_confirmed(Duration::ZERO, DEAD), Some(1), "no links");
        a.changed();
        a.sent(LinkId(1), Duration::ZERO);
        a.sent(LinkId(2), Duration::ZERO);
        a.keep_links(|l| l != LinkId(1));
        assert_eq!(a.newly_confirmed(Duration::ZERO, DEAD), None);
        assert_eq!(a.next_expiry(DEAD), Some(DEAD));
        assert_eq!(
            a.newly_confirmed(DEAD, DEAD),
            Some(2),
            "l2 silent for the dead-link time"
        );
    }

    #[test]
    fn acknowledgements_count_what_was_applied_per_link() {
        let mut a = RouteAcks::default();
        a.applied(LinkId(1));
        a.applied(LinkId(1));
        a.applied(LinkId(2));
        assert_eq!(a.take_due_on(LinkId(2)), Some(1));
        assert_eq!(a.take_due(), vec![(LinkId(1), 2)]);
        assert!(a.take_due().is_empty());
    }
}
