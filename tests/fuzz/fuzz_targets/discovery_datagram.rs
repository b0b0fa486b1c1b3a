//! Multicast discovery datagrams: `cluster::discovery::decode` on arbitrary bytes, and a cluster
//! core with multicast discovery receiving a script of them (`[mode, chunk]...`) interleaved with
//! its timers.
//!
//! `mode` bit 0 re-signs a datagram that decodes with the cluster's real cookie (the fuzzer cannot
//! forge the HMAC), so the handling of authenticated announces is reached too; bits 1-7 give the
//! time that passes before it, in 10 ms steps. Checked:
//! - nothing panics;
//! - a datagram that decodes, encoded again from its fields, has the same header, names and
//!   length, decodes to the same fields and verifies with the cookie it was signed with;
//! - the core's own announces and pongs decode and verify;
//! - the core counts every datagram it is given as received or dropped, never both, and none
//!   that fails the HMAC as received.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use flockmq::cluster::discovery::{self, Announce, DIGEST_LEN, MAC_LEN, Sender};
use flockmq::cluster::{Cluster, ClusterAction, Discovery};
use flockmq_fuzz::ops::Input;
use flockmq_fuzz::{COOKIE, cluster_config};
use libfuzzer_sys::fuzz_target;

fn sender<'a>(a: &Announce<'a>) -> Sender<'a> {
    Sender {
        protocol: a.protocol,
        port: a.port,
        instance: a.instance,
        node: a.node,
        cluster: a.cluster,
        cookie: COOKIE,
    }
}

/// Decodes `bytes`; when they decode, checks the re-encoding and returns it (signed with
/// `COOKIE`).
fn check_decode(bytes: &[u8]) -> Option<Bytes> {
    let a = discovery::decode(bytes).ok()?;
    let again = discovery::encode(a.kind, &sender(&a));
    assert_eq!(again.len(), bytes.len(), "re-encoded length of {a:?}");
    let unsigned = bytes.len() - DIGEST_LEN - MAC_LEN;
    assert_eq!(
        again[..unsigned],
        bytes[..unsigned],
        "re-encoded header of {a:?}"
    );
    let b = match discovery::decode(&again) {
        Ok(b) => b,
        Err(e) => panic!("{a:?} re-encoded does not decode: {e}"),
    };
    assert_eq!(
        (b.kind, b.protocol, b.port, b.instance, b.node, b.cluster),
        (a.kind, a.protocol, a.port, a.instance, a.node, a.cluster)
    );
    assert!(
        b.verify(COOKIE),
        "an announce signed with the cookie fails the HMAC"
    );
    assert_eq!(b.digest, discovery::cookie_digest(a.cluster, COOKIE));
    Some(again)
}

fn drain(core: &mut Cluster) {
    while let Some(action) = core.poll_action() {
        let bytes = match &action {
            ClusterAction::Announce(b) | ClusterAction::Datagram { bytes: b, .. } => b.clone(),
            _ => continue,
        };
        let a = match discovery::decode(&bytes) {
            Ok(a) => a,
            Err(e) => panic!("the core sent an undecodable datagram: {e}"),
        };
        assert!(a.verify(COOKIE), "the core's own datagram fails the HMAC");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut now = Duration::ZERO;
    let mut core = Cluster::new(cluster_config(Discovery::Mcast, 1 << 20), 1, 1, now);
    drain(&mut core);
    let from = SocketAddr::from(([10, 0, 0, 2], 4369));
    let mut given = 0u64;
    let mut authentic = 0u64;
    while let Some(mode) = input.take::<u8>() {
        let bytes = input.chunk();
        now += Duration::from_millis(u64::from(mode >> 1) * 10);
        core.handle_timeout(now);
        drain(&mut core);
        let datagram = match check_decode(bytes) {
            Some(resigned) if mode & 1 == 1 => resigned,
            _ => Bytes::copy_from_slice(bytes),
        };
        if discovery::decode(&datagram).is_ok_and(|a| a.verify(COOKIE)) {
            authentic += 1;
        }
        core.handle_datagram(from, &datagram, now);
        given += 1;
        drain(&mut core);
        let m = core.metrics();
        // Our own looped-back announce is neither (the instance is random per core and the
        // fuzzer cannot know it, but a re-signed copy of the core's own ping could match it).
        assert!(m.datagrams_received + m.datagrams_dropped <= given);
        assert!(
            m.datagrams_received <= authentic,
            "a datagram failing the HMAC was accepted"
        );
    }
});
