//! The link handshake: its steps for one link until it is authenticated (`Handshake`: the
//! dialer sends Hello, the acceptor answers Challenge, the dialer answers Proof), and its
//! cryptography: HMAC-SHA256 proofs that a side holds the cluster cookie, computed over both
//! nonces, both node names and the cluster name, with a role label so a proof can never be
//! reflected back as the other side's.
//!
//! The cookie itself never leaves the node; only proofs do. Verification is constant time. No
//! I/O, no clock; nonces come from the core's seeded RNG, passed in. No deadlines here: the
//! link table times out a handshake that takes too long.

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use rand::rngs::StdRng;
use sha2::Sha256;

use super::wire::{LinkMessage, NONCE_LEN, PROTOCOL_VERSION};
use super::{LinkId, NodeName, Outbox};
use crate::log_limit::peer_text;

type HmacSha256 = Hmac<Sha256>;

/// Which side of the handshake a proof speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that opened the TCP connection.
    Dialer,
    /// The node that accepted it.
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"flockmq link v1 dialer",
            Role::Acceptor => b"flockmq link v1 acceptor",
        }
    }
}

/// Everything both sides know once the nonces are exchanged; what the proofs cover.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// `cluster.name`.
    pub cluster: &'a str,
    /// The dialer's node name.
    pub dialer: &'a str,
    /// The acceptor's node name.
    pub acceptor: &'a str,
    /// The dialer's nonce.
    pub dialer_nonce: &'a [u8; NONCE_LEN],
    /// The acceptor's nonce.
    pub acceptor_nonce: &'a [u8; NONCE_LEN],
}

impl Transcript<'_> {
    fn mac(&self, cookie: &str, role: Role) -> HmacSha256 {
        // HMAC takes keys of any length, so this never fails; the fallback keeps it total.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(cookie.as_bytes())
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
        // Length-prefixed fields: no two different transcripts feed the same bytes.
        for field in [
            role.label(),
            self.cluster.as_bytes(),
            self.dialer.as_bytes(),
            self.acceptor.as_bytes(),
            self.dialer_nonce,
            self.acceptor_nonce,
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    /// The proof `role` sends: HMAC-SHA256 keyed by the cookie over this transcript.
    pub fn proof(&self, cookie: &str, role: Role) -> [u8; NONCE_LEN] {
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(&self.mac(cookie, role).finalize().into_bytes());
        out
    }

    /// Whether `proof` is what `role` must send, in constant time.
    pub fn verify(&self, cookie: &str, role: Role, proof: &[u8; NONCE_LEN]) -> bool {
        self.mac(cookie, role).verify_slice(proof).is_ok()
    }
}

/// This node as the handshake presents and checks it.
#[derive(Debug, Clone)]
pub(super) struct Local {
    pub(super) cluster: String,
    pub(super) node: NodeName,
    /// The cluster port we listen on.
    pub(super) port: u16,
    pub(super) cookie: String,
}

/// What a peer said about itself in its Hello.
#[derive(Debug, Clone)]
pub(super) struct PeerHello {
    node: NodeName,
    port: u16,
    incarnation: u64,
    nonce: [u8; NONCE_LEN],
}

/// Where one link is in its handshake: each state is named by the message it awaits.
#[derive(Debug)]
#[allow(clippy::enum_variant_names)]
pub(super) enum Handshake {
    /// Accepted; waiting for the dialer's Hello.
    AwaitHello,
    /// Dialled; Hello sent, waiting for the Challenge.
    AwaitChallenge { nonce: [u8; NONCE_LEN] },
    /// Accepted; Challenge sent, waiting for the dialer's Proof.
    AwaitProof {
        peer: PeerHello,
        nonce: [u8; NONCE_LEN],
    },
}

/// The outcome of one handshake message.
#[derive(Debug)]
pub(super) enum Step {
    /// The handshake goes on (a Challenge was sent).
    Pending,
    /// Refuse the link: `reason` for the peer, `log` for our log.
    Refuse { reason: &'static str, log: String },
    /// The peer refused the link, saying `reason`.
    PeerRejected(String),
    /// Authenticated (our Proof, if any, sent): the peer, its cluster port and incarnation.
    Authenticated {
        peer: NodeName,
        port: u16,
        incarnation: u64,
    },
}

fn nonce(rng: &mut StdRng) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce);
    nonce
}

impl Handshake {
    /// A link we dialled: sends our Hello (its nonce drawn from `rng`; our `incarnation` in it).
    pub(super) fn dial(
        local: &Local,
        incarnation: u64,
        link: LinkId,
        rng: &mut StdRng,
        out: &mut Outbox,
    ) -> Handshake {
        let nonce = nonce(rng);
        let hello = LinkMessage::Hello {
            protocol: PROTOCOL_VERSION,
            cluster: local.cluster.clone(),
            node: local.node.to_string(),
            port: local.port,
            incarnation,
            nonce,
        };
        out.send(link, &hello);
        Handshake::AwaitChallenge { nonce }
    }

    /// The node the peer claims to be, once it said so.
    pub(super) fn claimed(&self) -> Option<&NodeName> {
        match self {
            Handshake::AwaitProof { peer, .. } => Some(&peer.node),
            _ => None,
        }
    }

    /// One message on `link` in its handshake. `dialed`: the node we dialled, for a link we
    /// opened; `left`: this node has left the cluster (a Hello is refused). Draws the
    /// Challenge's nonce from `rng`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        msg: LinkMessage,
        local: &Local,
        incarnation: u64,
        dialed: Option<&NodeName>,
        left: bool,
        link: LinkId,
        rng: &mut StdRng,
        out: &mut Outbox,
    ) -> Step {
        match (&*self, msg) {
            (
                Handshake::AwaitHello,
                LinkMessage::Hello {
                    protocol,
                    cluster,
                    node,
                    port,
                    incarnation: peer_incarnation,
                    nonce,
                },
            ) => {
                let peer = match check_hello(local, protocol, &cluster, &node) {
                    Ok(peer) => peer,
                    Err((reason, log)) => return Step::Refuse { reason, log },
                };
                if left {
                    let log = format!("{peer} dialled us but this node has left the cluster");
                    let reason = "node has left the cluster";
                    return Step::Refuse { reason, log };
                }
                let our_nonce = self::nonce(rng);
                let proof = Transcript {
                    cluster: &local.cluster,
                    dialer: peer.as_str(),
                    acceptor: local.node.as_str(),
                    dialer_nonce: &nonce,
                    acceptor_nonce: &our_nonce,
                }
                .proof(&local.cookie, Role::Acceptor);
                let challenge = LinkMessage::Challenge {
                    protocol: PROTOCOL_VERSION,
                    cluster: local.cluster.clone(),
                    node: local.node.to_string(),
                    port: local.port,
                    incarnation,
                    nonce: our_nonce,
                    proof,
                };
                out.send(link, &challenge);
                *self = Handshake::AwaitProof {
                    peer: PeerHello {
                        node: peer,
                        port,
                        incarnation: peer_incarnation,
                        nonce,
                    },
                    nonce: our_nonce,
                };
                Step::Pending
            }
            (
                Handshake::AwaitChallenge { nonce: our_nonce },
                LinkMessage::Challenge {
                    protocol,
                    cluster,
                    node,
                    port,
                    incarnation: peer_incarnation,
                    nonce,
                    proof,
                },
            ) => {
                let peer = match check_hello(local, protocol, &cluster, &node) {
                    Ok(peer) => peer,
                    Err((reason, log)) => return Step::Refuse { reason, log },
                };
                if let Some(expected) = dialed.filter(|e| **e != peer) {
                    let log = format!("dialled {expected} but the peer is {peer}");
                    let reason = "unexpected node name";
                    return Step::Refuse { reason, log };
                }
                let transcript = Transcript {
                    cluster: &local.cluster,
                    dialer: local.node.as_str(),
                    acceptor: peer.as_str(),
                    dialer_nonce: our_nonce,
                    acceptor_nonce: &nonce,
                };
                if !transcript.verify(&local.cookie, Role::Acceptor, &proof) {
                    let log = format!("{peer} failed the cookie check (wrong node.cookie?)");
                    let reason = "authentication failed";
                    return Step::Refuse { reason, log };
                }
                let our_proof = transcript.proof(&local.cookie, Role::Dialer);
                out.send(link, &LinkMessage::Proof { proof: our_proof });
                Step::Authenticated {
                    peer,
                    port,
                    incarnation: peer_incarnation,
                }
            }
            (Handshake::AwaitProof { peer, nonce }, LinkMessage::Proof { proof }) => {
                let ok = Transcript {
                    cluster: &local.cluster,
                    dialer: peer.node.as_str(),
                    acceptor: local.node.as_str(),
                    dialer_nonce: &peer.nonce,
                    acceptor_nonce: nonce,
                }
                .verify(&local.cookie, Role::Dialer, &proof);
                if !ok {
                    let log = format!("{} failed the cookie check (wrong node.cookie?)", peer.node);
                    let reason = "authentication failed";
                    return Step::Refuse { reason, log };
                }
                Step::Authenticated {
                    peer: peer.node.clone(),
                    port: peer.port,
                    incarnation: peer.incarnation,
                }
            }
            (_, LinkMessage::Reject { reason }) => Step::PeerRejected(reason),
            (_, other) => Step::Refuse {
                reason: "protocol error",
                log: format!("unexpected {} during the handshake", other.name()),
            },
        }
    }
}

/// The checks of a Hello or Challenge: protocol version, cluster name, a valid node name that
/// is not ours.
fn check_hello(
    local: &Local,
    protocol: u16,
    cluster: &str,
    node: &str,
) -> Result<NodeName, (&'static str, String)> {
    if protocol != PROTOCOL_VERSION {
        return Err((
            "unknown protocol version",
            format!("unknown protocol version {protocol} (we speak {PROTOCOL_VERSION})"),
        ));
    }
    if cluster != local.cluster {
        return Err((
            "cluster name mismatch",
            format!(
                "peer is in cluster '{}', we are in '{}'",
                peer_text(cluster),
                local.cluster
            ),
        ));
    }
    let node: NodeName = node.parse().map_err(|e| {
        let log = format!("bad node name '{}': {e}", peer_text(node));
        ("bad node name", log)
    })?;
    if node == local.node {
        return Err((
            "duplicate node name",
            format!("peer presents our own node name {node}"),
        ));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(d: &'a [u8; 32], a: &'a [u8; 32]) -> Transcript<'a> {
        Transcript {
            cluster: "flockmq",
            dialer: "n1@127.0.0.1",
            acceptor: "n2@127.0.0.2",
            dialer_nonce: d,
            acceptor_nonce: a,
        }
    }

    #[test]
    fn same_cookie_verifies_other_cookie_does_not() {
        let (d, a) = ([1u8; 32], [2u8; 32]);
        let t = transcript(&d, &a);
        let proof = t.proof("secret", Role::Dialer);
        assert!(t.verify("secret", Role::Dialer, &proof));
        assert!(!t.verify("Secret", Role::Dialer, &proof));
    }

    #[test]
    fn a_proof_cannot_be_reflected_as_the_other_role() {
        let (d, a) = ([1u8; 32], [2u8; 32]);
        let t = transcript(&d, &a);
        let acceptor_proof = t.proof("secret", Role::Acceptor);
        assert!(!t.verify("secret", Role::Dialer, &acceptor_proof));
    }

    #[test]
    fn a_proof_is_bound_to_both_nonces_and_names() {
        let (d, a) = ([1u8; 32], [2u8; 32]);
        let t = transcript(&d, &a);
        let proof = t.proof("secret", Role::Dialer);
        let other_nonce = [3u8; 32];
        assert!(!transcript(&other_nonce, &a).verify("secret", Role::Dialer, &proof));
        assert!(!transcript(&d, &other_nonce).verify("secret", Role::Dialer, &proof));
        let renamed = Transcript {
            dialer: "n9@127.0.0.1",
            ..t
        };
        assert!(!renamed.verify("secret", Role::Dialer, &proof));
    }

    #[test]
    fn the_proof_does_not_contain_the_cookie() {
        let (d, a) = ([0u8; 32], [0u8; 32]);
        let cookie = "abc";
        let proof = transcript(&d, &a).proof(cookie, Role::Dialer);
        assert!(!proof.windows(cookie.len()).any(|w| w == cookie.as_bytes()));
    }

    fn local(node: &str, cookie: &str) -> Local {
        Local {
            cluster: "flockmq".into(),
            node: node.parse().unwrap(),
            port: 4370,
            cookie: cookie.into(),
        }
    }

    /// The message `out` holds last.
    fn sent(out: &mut Outbox) -> LinkMessage {
        let mut last = None;
        while let Some(action) = out.pop() {
            if let crate::cluster::ClusterAction::Send { frame, .. } = action {
                last = Some(crate::cluster::wire::decode(&frame[4..]).unwrap());
            }
        }
        last.expect("a message was sent")
    }

    /// Runs a handshake between a dialer and an acceptor; returns both last steps.
    fn run(dialer_cookie: &str, acceptor_cookie: &str) -> (Step, Step) {
        use rand::SeedableRng;
        let (d, a) = (
            local("n1@10.0.0.1", dialer_cookie),
            local("n2@10.0.0.2", acceptor_cookie),
        );
        let (mut rng, mut out) = (StdRng::seed_from_u64(1), Outbox::default());
        let link = LinkId(1);
        let mut dialer = Handshake::dial(&d, 7, link, &mut rng, &mut out);
        let hello = sent(&mut out);
        let mut acceptor = Handshake::AwaitHello;
        let step = acceptor.step(hello, &a, 9, None, false, link, &mut rng, &mut out);
        assert!(matches!(step, Step::Pending));
        assert_eq!(acceptor.claimed(), Some(&d.node));
        let challenge = sent(&mut out);
        let n2 = Some(&a.node);
        let first = dialer.step(challenge, &d, 7, n2, false, link, &mut rng, &mut out);
        if !matches!(first, Step::Authenticated { .. }) {
            return (first, Step::Pending);
        }
        let proof = sent(&mut out);
        let second = acceptor.step(proof, &a, 9, None, false, link, &mut rng, &mut out);
        (first, second)
    }

    #[test]
    fn hello_challenge_proof_authenticates_both_sides() {
        let (dialer, acceptor) = run("secret", "secret");
        let Step::Authenticated {
            peer, incarnation, ..
        } = &dialer
        else {
            panic!("dialer: {dialer:?}");
        };
        assert_eq!((peer.as_str(), *incarnation), ("n2@10.0.0.2", 9));
        let Step::Authenticated {
            peer, incarnation, ..
        } = &acceptor
        else {
            panic!("acceptor: {acceptor:?}");
        };
        assert_eq!((peer.as_str(), *incarnation), ("n1@10.0.0.1", 7));
    }

    #[test]
    fn a_wrong_cookie_is_refused_by_the_dialer() {
        let (dialer, _) = run("secret", "other");
        assert!(
            matches!(
                dialer,
                Step::Refuse {
                    reason: "authentication failed",
                    ..
                }
            ),
            "{dialer:?}"
        );
    }

    #[test]
    fn anything_but_the_expected_message_is_refused_and_a_reject_reported() {
        use rand::SeedableRng;
        let a = local("n2@10.0.0.2", "secret");
        let (mut rng, mut out) = (StdRng::seed_from_u64(1), Outbox::default());
        let mut h = Handshake::AwaitHello;
        let step = h.step(
            LinkMessage::Heartbeat,
            &a,
            1,
            None,
            false,
            LinkId(1),
            &mut rng,
            &mut out,
        );
        assert!(
            matches!(
                step,
                Step::Refuse {
                    reason: "protocol error",
                    ..
                }
            ),
            "{step:?}"
        );
        let reject = LinkMessage::Reject {
            reason: "no".into(),
        };
        let step = h.step(reject, &a, 1, None, false, LinkId(1), &mut rng, &mut out);
        assert!(matches!(step, Step::PeerRejected(r) if r == "no"));
    }
}
