//! Route confirmation (SUBACK timing): a route change counts as confirmed once every linked
//! node acknowledged it, or stopped counting after the dead-link time.

use super::*;

fn confirmed_at(h: &Harness, node: usize) -> Option<u64> {
    h.confirmed
        .iter()
        .filter(|(i, _)| *i == node)
        .map(|(_, seq)| *seq)
        .max()
}

#[test]
fn a_route_change_is_confirmed_only_after_every_linked_node_applied_it() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(0), all3());
    let before = confirmed_at(&h, 0);
    let now = h.now;
    h.nodes[0].local_route_added("c/#", now);
    // Not before the peers answered: drain n1's own actions only.
    h.drain(0);
    assert_eq!(confirmed_at(&h, 0), before, "sent, not yet acknowledged");
    h.settle();
    let seq = confirmed_at(&h, 0).expect("confirmed");
    assert!(seq >= 1);
    for peer in [1, 2] {
        assert!(h.nodes[peer].routes().iter().any(|r| r.filter == "c/#"));
    }
}

#[test]
fn a_partitioned_peer_holds_confirmation_back_at_most_the_dead_link_time() {
    let mut h = Harness::static3();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.running(0), all3());
    h.partition(0, 2);
    let now = h.now;
    h.nodes[0].local_route_added("p/#", now);
    h.settle();
    assert_eq!(confirmed_at(&h, 0), None, "n3 cannot have acknowledged");
    h.advance(HEARTBEAT * 3);
    assert_eq!(
        confirmed_at(&h, 0),
        Some(1),
        "n3 stopped counting after the dead-link time"
    );
}

#[test]
fn a_lone_node_confirms_at_once() {
    let mut c = lone_n1(Discovery::Manual);
    c.local_route_added("x", Duration::ZERO);
    let actions: Vec<ClusterAction> = std::iter::from_fn(|| c.poll_action()).collect();
    assert!(
        actions.contains(&ClusterAction::RoutesConfirmed(1)),
        "{actions:?}"
    );
}
