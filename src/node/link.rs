//! The socket side of inter-node links: the cluster accept loop, dial tasks (lookup + connect
//! within a timeout), and per link a reader task (bytes -> frames) plus the same writer task as
//! client connections.
//!
//! Like `conn`, these tasks hold no protocol state and decide nothing: the handshake, liveness and
//! everything else belong to the cluster core in the broker task. They read time only through
//! tokio timers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use super::conn::{ConnShared, Outbox, write_loop};
use super::driver::Event;
use super::framed::{AfterError, FramedReader, Framing};
use crate::cluster::NodeName;
use crate::cluster::wire::{self, FrameError};
use crate::cluster::{LinkId, LinkLoss, PREAUTH_MAX_FRAME};
use crate::net::Net;

/// Back-off after a failed accept so a full fd table does not make us spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The frame limit of one link's reader: [`PREAUTH_MAX_FRAME`] until the cluster core says the
/// link is authenticated (`ClusterAction::FrameLimit`), then `cluster.max_frame_size`. An
/// unauthenticated peer therefore never makes the node buffer more than a few KiB.
#[derive(Debug)]
pub(crate) struct LinkGate {
    max_frame: AtomicUsize,
    raised: Notify,
}

impl LinkGate {
    fn new() -> LinkGate {
        LinkGate {
            max_frame: AtomicUsize::new(PREAUTH_MAX_FRAME),
            raised: Notify::new(),
        }
    }

    /// Lets the reader take frames of up to `max` bytes from now on.
    pub(crate) fn raise(&self, max: usize) {
        self.max_frame.store(max, Ordering::Release);
        self.raised.notify_one();
    }

    fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Acquire)
    }

    fn is_raised(&self) -> bool {
        self.max_frame() > PREAUTH_MAX_FRAME
    }
}

/// What link tasks share: the network, the broker task's queue, and the link id counter.
pub(crate) struct LinkCtx<N: Net> {
    pub(crate) net: N,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) alive: mpsc::Sender<()>,
    pub(crate) next_link: Arc<AtomicU64>,
    pub(crate) node_span: tracing::Span,
}

impl<N: Net> Clone for LinkCtx<N> {
    fn clone(&self) -> Self {
        LinkCtx {
            net: self.net.clone(),
            events: self.events.clone(),
            alive: self.alive.clone(),
            next_link: Arc::clone(&self.next_link),
            node_span: self.node_span.clone(),
        }
    }
}

impl<N: Net> LinkCtx<N> {
    /// Registers a connected stream as a link with the broker task and spawns its reader and
    /// writer. False if the broker task is gone.
    async fn open(&self, stream: N::TcpStream, addr: SocketAddr, dialed: Option<NodeName>) -> bool {
        let link = LinkId(self.next_link.fetch_add(1, Ordering::Relaxed) + 1);
        let span = tracing::debug_span!(parent: &self.node_span, "link", link = link.0, %addr);
        let shared = Arc::new(ConnShared::default());
        let outbox = Outbox {
            shared: Arc::clone(&shared),
        };
        let gate = Arc::new(LinkGate::new());
        let opened = Event::LinkOpened {
            link,
            outbox,
            gate: Arc::clone(&gate),
            addr,
            dialed,
        };
        // Sent before the reader exists, so LinkOpened precedes the link's frames.
        if self.events.send(opened).await.is_err() {
            return false;
        }
        let (read_half, write_half) = tokio::io::split(stream);
        tokio::spawn(
            write_loop(write_half, Arc::clone(&shared), self.alive.clone(), None)
                .instrument(span.clone()),
        );
        let reader = FramedReader {
            framing: LinkFraming {
                link,
                gate,
                delivered: false,
            },
            events: self.events.clone(),
            shared,
            _alive: self.alive.clone(),
        };
        tokio::spawn(reader.run(read_half).instrument(span));
        true
    }

    /// Accepts links until told to stop or the broker task is gone.
    pub(crate) async fn accept_loop(
        self,
        listener: N::TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = stop.changed() => break,
                accepted = self.net.accept(&listener) => accepted,
            };
            match accepted {
                Ok((stream, addr)) => {
                    tracing::debug!(%addr, "cluster connection accepted");
                    if !self.open(stream, addr, None).await {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
        tracing::debug!("stopped accepting cluster links");
    }

    /// Resolves and connects to `host:port` within `timeout`, then opens the link (or reports
    /// the failure to the broker task).
    pub(crate) async fn dial(self, node: NodeName, host: String, port: u16, timeout: Duration) {
        let connect = async {
            let ip = self.net.lookup(&host).await?;
            let addr = SocketAddr::new(ip, port);
            let stream = self.net.connect(addr).await?;
            Ok::<_, std::io::Error>((stream, addr))
        };
        let reason = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok((stream, addr))) => {
                self.open(stream, addr, Some(node)).await;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("connect timed out after {timeout:?}"),
        };
        let _ = self.events.send(Event::DialFailed { node, reason }).await;
    }
}

/// How cluster links are framed: length-prefixed frames under the link's current limit, one
/// `LinkFrames` event per read that completed any.
struct LinkFraming {
    link: LinkId,
    gate: Arc<LinkGate>,
    /// Frames were handed to the broker task: the handshake may be completing.
    delivered: bool,
}

impl Framing for LinkFraming {
    type Frame = Bytes;
    type Error = FrameError;
    const READ_CHUNK: usize = 16 * 1024;
    const RELEASE_IDLE: bool = false;

    fn split(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        wire::split_frame(buf, self.gate.max_frame())
    }

    fn frames(&mut self, frames: Vec<Bytes>, _bytes: usize) -> Option<Event> {
        if frames.is_empty() {
            return None;
        }
        self.delivered = true;
        Some(Event::LinkFrames {
            link: self.link,
            frames,
        })
    }

    fn io_lost(&self) -> Event {
        self.lost(LinkLoss::Io)
    }

    async fn failed(&mut self, error: FrameError, shared: &ConnShared) -> AfterError {
        match error {
            // A large frame right behind the last handshake frame (the peer's first bulk chunk
            // after its Proof): wait, without reading, for the core's verdict on the handshake.
            // Authenticated raises the limit; refused closes the link; a stalled handshake times
            // out in the core.
            FrameError::Oversize { .. } if self.delivered && !self.gate.is_raised() => {
                tokio::select! {
                    biased;
                    () = shared.stop_reader.notified() => AfterError::Stop,
                    () = self.gate.raised.notified() => AfterError::Resplit,
                }
            }
            e => AfterError::Lost(self.lost(LinkLoss::Frame(e))),
        }
    }
}

impl LinkFraming {
    fn lost(&self, why: LinkLoss) -> Event {
        Event::LinkLost {
            link: self.link,
            why,
        }
    }
}
