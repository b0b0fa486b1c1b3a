//! Bulk transfers: a set (today the route set; later retained sets and sessions) crosses a link
//! as `LinkMessage::Bulk` chunks of at most `wire::BULK_CHUNK_BYTES` of items, so that no set
//! makes a frame exceed the link frame limit. Sending numbers the transfer and cuts it
//! (`send`); receiving assembles one transfer per link (`Assembly`, kept in the link's state)
//! and hands it over whole only when its last chunk arrives. No deadlines.

use super::wire::{self, BulkBody, BulkChunk, LinkMessage};
use super::{LinkId, NodeName, Outbox};

/// Sends `items` on `link` as transfer `sync`: chunks of bounded size made into bodies by
/// `body` (always at least one chunk, so an empty set still travels and clears the receiver's
/// copy).
pub(super) fn send<T>(
    link: LinkId,
    sync: u64,
    items: impl IntoIterator<Item = T>,
    size: impl Fn(&T) -> usize,
    body: impl Fn(Vec<T>) -> BulkBody,
    out: &mut Outbox,
) {
    let chunks = wire::split_bulk(items, wire::BULK_CHUNK_BYTES, size);
    let count = chunks.len();
    for (i, items) in chunks.into_iter().enumerate() {
        let chunk = BulkChunk {
            sync,
            index: u32::try_from(i).unwrap_or(u32::MAX),
            last: i + 1 == count,
            body: body(items),
        };
        out.send(link, &LinkMessage::Bulk(chunk));
    }
}

/// The bulk transfer being received on one link, until its last chunk.
#[derive(Debug, Default)]
pub(super) struct Assembly {
    partial: Option<Partial>,
}

/// The chunks so far of one transfer.
#[derive(Debug)]
struct Partial {
    sync: u64,
    /// The index the next chunk must have.
    next: u32,
    body: BulkBody,
}

impl Assembly {
    /// One chunk from `peer`: the whole set and its number of chunks once the last arrives. A
    /// chunk that does not continue the transfer in progress drops it (a new transfer starts
    /// only at index 0; stray chunks are ignored), so parts never mix or apply.
    pub(super) fn push(&mut self, peer: &NodeName, chunk: BulkChunk) -> Option<(BulkBody, u32)> {
        let BulkChunk {
            sync,
            index,
            last,
            body,
        } = chunk;
        match self.partial.take() {
            Some(mut a) if a.sync == sync && a.next == index && a.body.same_kind(&body) => {
                a.body.append(body);
                a.next = a.next.saturating_add(1);
                if !last {
                    self.partial = Some(a);
                    return None;
                }
                Some((a.body, a.next))
            }
            old => {
                if let Some(old) = old {
                    tracing::debug!(peer = %peer, sync = old.sync, chunks = old.next, "dropping an incomplete bulk transfer");
                }
                if index != 0 {
                    tracing::debug!(peer = %peer, sync, index, "ignoring a chunk of a bulk transfer whose start was not received");
                    return None;
                }
                if !last {
                    self.partial = Some(Partial {
                        sync,
                        next: 1,
                        body,
                    });
                    return None;
                }
                Some((body, 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterAction;

    fn chunk(sync: u64, index: u32, last: bool, filters: &[&str]) -> BulkChunk {
        BulkChunk {
            sync,
            index,
            last,
            body: BulkBody::Routes(filters.iter().map(|f| f.to_string()).collect()),
        }
    }

    fn routes(done: Option<(BulkBody, u32)>) -> Option<(Vec<String>, u32)> {
        match done {
            Some((BulkBody::Routes(f), n)) => Some((f, n)),
            Some((other, _)) => panic!("not a route set: {other:?}"),
            None => None,
        }
    }

    #[test]
    fn chunks_are_applied_whole_and_only_at_the_last() {
        let peer: NodeName = "n2@10.0.0.2".parse().unwrap();
        let mut a = Assembly::default();
        assert_eq!(a.push(&peer, chunk(1, 0, false, &["a"])), None);
        assert_eq!(a.push(&peer, chunk(1, 1, false, &["b"])), None);
        let done = routes(a.push(&peer, chunk(1, 2, true, &["c"])));
        assert_eq!(done, Some((vec!["a".into(), "b".into(), "c".into()], 3)));
        // A single-chunk transfer.
        assert_eq!(
            routes(a.push(&peer, chunk(2, 0, true, &[]))),
            Some((vec![], 1))
        );
    }

    #[test]
    fn a_gap_or_another_transfer_drops_the_partial_one() {
        let peer: NodeName = "n2@10.0.0.2".parse().unwrap();
        let mut a = Assembly::default();
        a.push(&peer, chunk(1, 0, false, &["a"]));
        // Index 2 after 0: dropped, and so is the transfer in progress.
        assert_eq!(a.push(&peer, chunk(1, 2, true, &["c"])), None);
        assert_eq!(a.push(&peer, chunk(1, 1, true, &["b"])), None, "stray");
        // A new transfer's first chunk replaces the old partial one.
        a.push(&peer, chunk(3, 0, false, &["x"]));
        a.push(&peer, chunk(4, 0, false, &["y"]));
        let done = routes(a.push(&peer, chunk(4, 1, true, &["w"])));
        assert_eq!(done, Some((vec!["y".into(), "w".into()], 2)));
        // A chunk of another transfer drops the one in progress, and is itself ignored.
        a.push(&peer, chunk(5, 0, false, &["p"]));
        assert_eq!(a.push(&peer, chunk(6, 1, true, &["q"])), None);
        assert_eq!(a.push(&peer, chunk(5, 1, true, &["r"])), None);
    }

    #[test]
    fn send_numbers_and_bounds_the_chunks() {
        let mut out = Outbox::default();
        let big: Vec<String> = (0..5000)
            .map(|i| format!("some/long/filter/{i:08}"))
            .collect();
        send(
            LinkId(7),
            9,
            big.clone(),
            |f| wire::str_wire_len(f),
            BulkBody::Routes,
            &mut out,
        );
        let mut got = Vec::new();
        let mut n = 0;
        while let Some(ClusterAction::Send { link, frame }) = out.pop() {
            assert_eq!(link, LinkId(7));
            assert!(frame.len() <= wire::BULK_CHUNK_BYTES + 64);
            let Ok(LinkMessage::Bulk(c)) = wire::decode(&frame[wire::LENGTH_PREFIX..]) else {
                panic!("not a bulk chunk");
            };
            assert_eq!((c.sync, c.index), (9, n));
            n += 1;
            let BulkBody::Routes(items) = c.body else {
                panic!("not a route set");
            };
            got.extend(items);
            if c.last {
                break;
            }
        }
        assert!(n > 1);
        assert_eq!(got, big);
    }
}
