//! The link handshake's cryptography: HMAC-SHA256 proofs that a side holds the cluster cookie,
//! computed over both nonces, both node names and the cluster name, with a role label so a proof
//! can never be reflected back as the other side's.
//!
//! The cookie itself never leaves the node; only proofs do. Verification is constant time.
//! Pure functions: no I/O, no clock, no randomness (nonces come from the core's seeded RNG).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::wire::NONCE_LEN;

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
}
