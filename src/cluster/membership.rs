//! Membership: who is in the cluster. Owns the member list (`(node, incarnation, joined|left)`
//! plus, per member, its cluster port, since when it has had no link and whether it ever had
//! one), this node's own incarnation and `left` flag, autoclean, and the member list file.
//!
//! Entries are merged by higher incarnation, `left` winning ties; this node is the authority on
//! itself and refutes a stale entry about it by raising its incarnation. Whether a member is
//! running is not kept here: the caller says which nodes have a live link (`linked`).
//!
//! Deadlines: with `cluster.autoclean = D`, a joined member without a link since `t` is
//! tombstoned at `t + D` (`poll_timeout` / `handle_timeout`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::wire::MemberEntry;
use super::{ClusterStatus, NodeName};
use crate::log_limit::peer_text;

/// First line of the member list file.
const MEMBERS_FILE_HEADER: &str =
    "# flockmq cluster members, rewritten by the node; delete it to forget the cluster\n";

/// What this node knows of another node of the cluster.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) port: u16,
    pub(super) incarnation: u64,
    pub(super) left: bool,
    /// Since when it has had no live link (for autoclean); `None` while linked.
    pub(super) down_since: Option<Duration>,
    /// Whether we ever had a link to it (autoheal off does not redial those).
    pub(super) was_up: bool,
}

/// The member list and this node's own entry.
#[derive(Debug)]
pub(super) struct Membership {
    node: NodeName,
    port: u16,
    autoclean: Option<Duration>,
    incarnation: u64,
    /// After `leave` and until `join`: no dialling, incoming links refused.
    left: bool,
    members: BTreeMap<NodeName, Member>,
    /// The member list may have changed since `saved` was written.
    dirty: bool,
    saved: String,
}

impl Membership {
    /// Node `node` (cluster port `port`) at `incarnation` (at least 1), in no cluster yet.
    pub(super) fn new(
        node: NodeName,
        port: u16,
        autoclean: Option<Duration>,
        incarnation: u64,
    ) -> Membership {
        let mut membership = Membership {
            node,
            port,
            autoclean,
            incarnation: incarnation.max(1),
            left: false,
            members: BTreeMap::new(),
            dirty: false,
            saved: String::new(),
        };
        membership.saved = membership.file();
        membership
    }

    pub(super) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether this node has left the cluster (and not joined again).
    pub(super) fn left(&self) -> bool {
        self.left
    }

    /// Every member, tombstones included.
    pub(super) fn members(&self) -> &BTreeMap<NodeName, Member> {
        &self.members
    }

    /// The member list to gossip: this node first, then every member.
    pub(super) fn entries(&self) -> Vec<MemberEntry> {
        let me = MemberEntry {
            node: self.node.to_string(),
            port: self.port,
            incarnation: self.incarnation,
            left: self.left,
        };
        std::iter::once(me)
            .chain(self.members.iter().map(|(node, m)| MemberEntry {
                node: node.to_string(),
                port: m.port,
                incarnation: m.incarnation,
                left: m.left,
            }))
            .collect()
    }

    /// The member list file's new text, when the list changed since it was last saved.
    pub(super) fn take_save(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let text = self.file();
        if text == self.saved {
            return None;
        }
        self.saved.clone_from(&text);
        Some(text)
    }

    /// The member list file: one joined member per line, `name@host port`, sorted.
    pub(super) fn file(&self) -> String {
        let mut text = String::from(MEMBERS_FILE_HEADER);
        for (node, m) in self.members.iter().filter(|(_, m)| !m.left) {
            text.push_str(&format!("{node} {}\n", m.port));
        }
        text
    }

    /// Members from the file a previous run wrote, as stopped members at incarnation 0 (so
    /// anything the cluster says about them wins). Returns how many; bad lines are skipped with
    /// a log line.
    pub(super) fn restore(&mut self, text: &str, now: Duration) -> usize {
        if self.left {
            return 0;
        }
        let mut restored = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(' ').and_then(|(node, port)| {
                Some((
                    node.parse::<NodeName>().ok()?,
                    port.trim().parse::<u16>().ok()?,
                ))
            });
            let Some((node, port)) = parsed else {
                tracing::warn!(
                    line = i + 1,
                    text = line,
                    "ignoring a bad line of the member list file"
                );
                continue;
            };
            if node == self.node || self.members.contains_key(&node) {
                continue;
            }
            self.members.insert(
                node,
                Member {
                    port,
                    incarnation: 0,
                    left: false,
                    down_since: Some(now),
                    was_up: false,
                },
            );
            restored += 1;
        }
        if restored > 0 {
            tracing::info!(members = restored, "rejoining the members of the last run");
            self.saved = self.file();
        }
        restored
    }

    /// `peer` (cluster port `port`, at `incarnation`) authenticated a link. Returns whether the
    /// membership changed in a way the other members should hear about.
    pub(super) fn link_up(&mut self, peer: &NodeName, port: u16, incarnation: u64) -> bool {
        match self.members.get_mut(peer) {
            Some(m) => {
                m.down_since = None;
                m.was_up = true;
                self.dirty |= m.port != port;
                m.port = port;
                if incarnation > m.incarnation {
                    m.incarnation = incarnation;
                    self.dirty |= m.left;
                    m.left = false;
                    true
                } else {
                    false
                }
            }
            None => {
                self.dirty = true;
                self.members.insert(
                    peer.clone(),
                    Member {
                        port,
                        incarnation,
                        left: false,
                        down_since: None,
                        was_up: true,
                    },
                );
                true
            }
        }
    }

    /// `peer`'s link went down at `now`. Returns whether it is a joined member.
    pub(super) fn link_down(&mut self, peer: &NodeName, now: Duration) -> bool {
        let member = self.members.get(peer).is_some_and(|m| !m.left);
        if let Some(m) = self.members.get_mut(peer) {
            m.down_since = Some(now);
        }
        member
    }

    /// Merges a peer's member list. Returns whether ours changed (then the others should hear
    /// it) and the linked members that the list says have left, in its order (their links
    /// should close).
    pub(super) fn merge(
        &mut self,
        entries: &[MemberEntry],
        now: Duration,
        linked: impl Fn(&NodeName) -> bool,
    ) -> (bool, Vec<NodeName>) {
        let mut changed = false;
        let mut gone = Vec::new();
        for e in entries {
            let Ok(node) = e.node.parse::<NodeName>() else {
                tracing::debug!(node = %peer_text(&e.node), "ignoring a member with a bad name");
                continue;
            };
            if node == self.node {
                // We are the authority on ourselves: refute a stale "left" or a higher claim.
                let stale = e.incarnation > self.incarnation
                    || (e.incarnation == self.incarnation && e.left && !self.left);
                if stale && !self.left {
                    self.incarnation = e.incarnation.saturating_add(1);
                    tracing::info!(
                        incarnation = self.incarnation,
                        "refuting a stale member entry"
                    );
                    changed = true;
                }
                continue;
            }
            match self.members.get_mut(&node) {
                Some(m) => {
                    let newer = e.incarnation > m.incarnation
                        || (e.incarnation == m.incarnation && e.left && !m.left);
                    if !newer {
                        continue;
                    }
                    m.incarnation = e.incarnation;
                    m.port = e.port;
                    m.left = e.left;
                    changed = true;
                    if e.left {
                        tracing::info!(peer = %node, "member left the cluster");
                        if linked(&node) {
                            gone.push(node);
                        }
                    }
                }
                None => {
                    self.members.insert(
                        node.clone(),
                        Member {
                            port: e.port,
                            incarnation: e.incarnation,
                            left: e.left,
                            down_since: (!linked(&node)).then_some(now),
                            was_up: false,
                        },
                    );
                    if !e.left {
                        tracing::info!(peer = %node, "learned a new member");
                    }
                    changed = true;
                }
            }
        }
        self.dirty |= changed;
        (changed, gone)
    }

    /// `ctl cluster leave`, first half: our "left" entry, at a new incarnation so that it wins.
    pub(super) fn leave(&mut self) -> Result<(), String> {
        if self.left || self.members.values().all(|m| m.left) {
            return Err("node is not in a cluster".into());
        }
        self.incarnation = self.incarnation.saturating_add(1);
        self.left = true;
        Ok(())
    }

    /// `ctl cluster leave`, second half (once the others were told and the links closed):
    /// forget every member.
    pub(super) fn forget_all(&mut self) {
        self.members.clear();
        self.dirty = true;
    }

    /// `ctl cluster join`: a node that had left is in a cluster again, at a new incarnation so
    /// that its "left" tombstone at the others loses. Returns whether it had left.
    pub(super) fn rejoin(&mut self) -> bool {
        let was_left = self.left;
        if was_left {
            self.left = false;
            self.incarnation = self.incarnation.saturating_add(1);
        }
        was_left
    }

    /// Joining a node we had forgotten: forget its tombstone too.
    pub(super) fn forget_tombstone(&mut self, node: &NodeName) {
        if self.members.get(node).is_some_and(|m| m.left) {
            self.members.remove(node);
        }
    }

    /// `ctl cluster force-leave NODE`: tombstone a joined member.
    pub(super) fn force_leave(&mut self, node: &NodeName) -> Result<(), String> {
        if *node == self.node {
            return Err("cannot remove the local node (use leave)".into());
        }
        let Some(m) = self.members.get_mut(node).filter(|m| !m.left) else {
            return Err(format!("{node} is not a member of the cluster"));
        };
        m.incarnation = m.incarnation.saturating_add(1);
        m.left = true;
        self.dirty = true;
        tracing::info!(peer = %node, "removing a member (force-leave)");
        Ok(())
    }

    /// Running (this node and joined members with a link) and stopped members, sorted.
    pub(super) fn status(&self, linked: impl Fn(&NodeName) -> bool) -> ClusterStatus {
        let mut running = vec![self.node.to_string()];
        let mut stopped = Vec::new();
        for (node, m) in &self.members {
            if m.left {
                continue;
            }
            if linked(node) {
                running.push(node.to_string());
            } else {
                stopped.push(node.to_string());
            }
        }
        running.sort();
        ClusterStatus {
            running_nodes: running,
            stopped_nodes: stopped,
        }
    }

    /// The earliest autoclean.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        let after = self.autoclean?;
        self.members
            .values()
            .filter(|m| !m.left)
            .filter_map(|m| m.down_since.map(|at| at + after))
            .min()
    }

    /// Autoclean at `now`: tombstones members stopped too long. Returns whether any was (the
    /// others should hear it).
    pub(super) fn handle_timeout(&mut self, now: Duration) -> bool {
        let Some(after) = self.autoclean else {
            return false;
        };
        let expired: Vec<NodeName> = self
            .members
            .iter()
            .filter(|(_, m)| !m.left && m.down_since.is_some_and(|at| at + after <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for node in &expired {
            tracing::info!(peer = %node, "forgetting a member stopped for {after:?} (autoclean)");
            if let Some(m) = self.members.get_mut(node) {
                // A tombstone at the same incarnation: gossip cannot resurrect it, a restart
                // (higher incarnation) can.
                m.left = true;
            }
        }
        self.dirty |= !expired.is_empty();
        !expired.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn entry(node: &str, incarnation: u64, left: bool) -> MemberEntry {
        MemberEntry {
            node: node.into(),
            port: 4370,
            incarnation,
            left,
        }
    }

    fn n1() -> Membership {
        Membership::new(name("n1@10.0.0.1"), 4370, Some(Duration::from_secs(60)), 5)
    }

    #[test]
    fn merge_keeps_the_higher_incarnation_and_left_wins_ties() {
        let mut m = n1();
        let now = Duration::from_secs(1);
        let (changed, gone) = m.merge(&[entry("n2@10.0.0.2", 3, false)], now, |_| true);
        assert!(changed && gone.is_empty());
        assert_eq!(m.members()[&name("n2@10.0.0.2")].down_since, None, "linked");
        let (changed, _) = m.merge(&[entry("n2@10.0.0.2", 2, true)], now, |_| true);
        assert!(!changed, "older");
        let (changed, gone) = m.merge(&[entry("n2@10.0.0.2", 3, true)], now, |_| true);
        assert!(changed, "left wins a tie");
        assert_eq!(gone, vec![name("n2@10.0.0.2")], "its link should close");
        let (changed, _) = m.merge(&[entry("n2@10.0.0.2", 3, false)], now, |_| true);
        assert!(!changed, "a tie does not undo left");
    }

    #[test]
    fn a_stale_entry_about_ourselves_is_refuted() {
        let mut m = n1();
        let (changed, _) = m.merge(&[entry("n1@10.0.0.1", 5, true)], Duration::ZERO, |_| false);
        assert!(changed);
        assert_eq!(m.incarnation(), 6);
        assert!(
            m.entries()
                .iter()
                .any(|e| e.node == "n1@10.0.0.1" && !e.left)
        );
    }

    #[test]
    fn autoclean_is_due_after_the_period_and_tombstones_once() {
        let mut m = n1();
        let down = Duration::from_secs(10);
        m.merge(&[entry("n2@10.0.0.2", 1, false)], down, |_| false);
        assert_eq!(m.poll_timeout(), Some(down + Duration::from_secs(60)));
        assert!(!m.handle_timeout(down + Duration::from_secs(59)));
        assert!(m.handle_timeout(down + Duration::from_secs(60)));
        assert!(m.members()[&name("n2@10.0.0.2")].left);
        assert_eq!(m.poll_timeout(), None);
        assert!(
            m.link_up(&name("n2@10.0.0.2"), 4370, 2),
            "a restart comes back"
        );
        assert_eq!(m.poll_timeout(), None, "linked");
    }

    #[test]
    fn the_file_is_saved_only_when_it_changed() {
        let mut m = n1();
        assert_eq!(m.take_save(), None);
        m.link_up(&name("n2@10.0.0.2"), 4370, 1);
        let text = m.take_save().unwrap();
        assert!(text.ends_with("n2@10.0.0.2 4370\n"), "{text}");
        assert_eq!(m.take_save(), None);
        m.link_down(&name("n2@10.0.0.2"), Duration::ZERO);
        m.link_up(&name("n2@10.0.0.2"), 4370, 1);
        assert_eq!(m.take_save(), None, "nothing in the file changed");
        let mut again = n1();
        assert_eq!(again.restore(&text, Duration::ZERO), 1);
        assert_eq!(again.file(), text);
    }
}
