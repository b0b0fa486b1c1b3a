//! The socket side of the node: the accept loop and, per connection, a reader task (bytes ->
//! packets -> one event per read) and a writer task (chunks -> socket).
//!
//! These tasks hold no protocol state and never decide anything: every decision is the broker
//! task's. They never read the clock except through tokio timers.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use super::core::Wire;
use super::driver::Event;
use super::framed::{AfterError, FramedReader, Framing};
use crate::broker::{ConnId, ConnectionLoss};
use crate::codec::{DecodeError, Packet};
use crate::net::Net;

/// Chunks written with one vectored write.
const MAX_IOSLICES: usize = 64;
/// Back-off after a failed accept (e.g. out of file descriptors) so we do not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the broker task has handed a writer and the writer has not taken yet. A plain queue
/// behind a mutex rather than a channel: a channel preallocates a block of slots per
/// connection, which idle connections would pay for.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    /// Bytes to write, each encoded in one batch of the broker task.
    chunks: VecDeque<Bytes>,
    /// Flush what is queued, then shut the socket down.
    close: bool,
}

/// State shared by a connection's reader, writer and the broker task.
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    /// Bytes handed to the writer and not yet written: the slow-consumer measure.
    pub(crate) queued: AtomicUsize,
    /// Wakes the writer to drop everything and go (slow consumer).
    pub(crate) abort: Notify,
    /// Wakes the reader to stop reading (connection closed on our side).
    pub(crate) stop_reader: Notify,
    /// Set by the writer on an I/O error so the woken reader reports the loss.
    pub(crate) writer_failed: AtomicBool,
    /// Chunks waiting for the writer.
    pub(crate) outq: std::sync::Mutex<OutQueue>,
    /// Wakes the writer when `outq` changed.
    pub(crate) writer_wake: Notify,
    /// The broker wants to hear when `queued` is back at zero (`Event::Drained`); whichever of
    /// the writer and the broker task sees zero first clears it and reports.
    pub(crate) drain_wanted: AtomicBool,
}

impl ConnShared {
    /// Asks for `Event::Drained`; true if everything is written already (the caller reports it
    /// then, the writer will not).
    pub(crate) fn want_drain(&self) -> bool {
        self.drain_wanted.store(true, Ordering::SeqCst);
        self.take_drained()
    }

    /// True once per `want_drain` when nothing is left to write.
    fn take_drained(&self) -> bool {
        self.queued.load(Ordering::SeqCst) == 0 && self.drain_wanted.swap(false, Ordering::SeqCst)
    }
}

/// Where a connection's writer reports that it has written everything (`Event::Drained`).
pub(crate) struct DrainReport {
    pub(crate) conn: ConnId,
    pub(crate) events: mpsc::Sender<Event>,
}

impl ConnShared {
    /// Queues `chunk` for the writer.
    pub(crate) fn push(&self, chunk: Bytes) {
        if let Ok(mut q) = self.outq.lock() {
            q.chunks.push_back(chunk);
        }
        self.writer_wake.notify_one();
    }

    /// Tells the writer to flush what is queued and shut the socket down.
    pub(crate) fn close_writer(&self) {
        if let Ok(mut q) = self.outq.lock() {
            q.close = true;
        }
        self.writer_wake.notify_one();
    }
}

/// The broker task's end of one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) shared: Arc<ConnShared>,
}

/// Everything the accept loop needs.
pub(crate) struct Acceptor<N: Net, W> {
    pub(crate) net: N,
    pub(crate) listener: N::TcpListener,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop: watch::Receiver<bool>,
    /// Cloned into every connection task; shutdown waits until all clones are gone.
    pub(crate) alive: mpsc::Sender<()>,
    pub(crate) max_packet_size: usize,
    pub(crate) node_span: tracing::Span,
    pub(crate) wire: PhantomData<W>,
}

impl<N: Net, W: Wire> Acceptor<N, W> {
    /// Accepts until told to stop or the broker task is gone; dropping the listener on return
    /// closes the port.
    pub(crate) async fn run(mut self) {
        let mut next_id: u64 = 0;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                accepted = self.net.accept(&self.listener) => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            next_id += 1;
            let conn = ConnId(next_id);
            if !self.open(conn, peer, stream).await {
                break;
            }
        }
        tracing::debug!("stopped accepting MQTT connections");
    }

    /// Registers the connection with the broker task, then spawns its reader and writer.
    /// False if the broker task is gone.
    async fn open(&self, conn: ConnId, peer: SocketAddr, stream: N::TcpStream) -> bool {
        let span = tracing::debug_span!(parent: &self.node_span, "conn", conn = conn.0, %peer);
        let shared = Arc::new(ConnShared::default());
        let outbox = Outbox {
            shared: Arc::clone(&shared),
        };
        // Sent before the reader exists, so Opened precedes the connection's packets.
        if self
            .events
            .send(Event::Opened { conn, outbox })
            .await
            .is_err()
        {
            return false;
        }
        let (read_half, write_half) = tokio::io::split(stream);
        let report = DrainReport {
            conn,
            events: self.events.clone(),
        };
        tokio::spawn(
            write_loop(
                write_half,
                Arc::clone(&shared),
                self.alive.clone(),
                Some(report),
            )
            .instrument(span.clone()),
        );
        let reader = FramedReader {
            framing: MqttFraming::<W> {
                conn,
                decoder: W::decoder(self.max_packet_size),
            },
            events: self.events.clone(),
            shared,
            _alive: self.alive.clone(),
        };
        tokio::spawn(reader.run(read_half).instrument(span));
        tracing::debug!(parent: &self.node_span, conn = conn.0, %peer, "connection accepted");
        true
    }
}

/// How MQTT connections are framed: packets decoded by the wire format, one `Packets` event per
/// read (also when it completed none: the byte count feeds the metrics).
struct MqttFraming<W: Wire> {
    conn: ConnId,
    decoder: W::Decoder,
}

impl<W: Wire> Framing for MqttFraming<W> {
    type Frame = Packet;
    type Error = DecodeError;
    const READ_CHUNK: usize = 8 * 1024;
    const RELEASE_IDLE: bool = true;

    fn split(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        W::decode(&mut self.decoder, buf)
    }

    fn frames(&mut self, packets: Vec<Packet>, bytes: usize) -> Option<Event> {
        Some(Event::Packets {
            conn: self.conn,
            packets,
            bytes,
        })
    }

    fn io_lost(&self) -> Event {
        self.lost(ConnectionLoss::Io)
    }

    // The broker answers a decode error (DISCONNECT / CONNACK with the reason) and closes.
    async fn failed(&mut self, error: DecodeError, _: &ConnShared) -> AfterError {
        AfterError::Lost(self.lost(ConnectionLoss::Decode(error)))
    }
}

impl<W: Wire> MqttFraming<W> {
    fn lost(&self, why: ConnectionLoss) -> Event {
        Event::Lost {
            conn: self.conn,
            why,
        }
    }
}

/// Writes chunks until told to close (the broker task also closes when it drops the
/// connection or link), then shuts the socket down and stops the reader.
pub(crate) async fn write_loop<Wr: AsyncWrite + Unpin>(
    mut socket: Wr,
    shared: Arc<ConnShared>,
    _alive: mpsc::Sender<()>,
    drained: Option<DrainReport>,
) {
    // Grows on first use: an idle connection's writer holds no buffer.
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            () = shared.abort.notified() => return,
            () = shared.writer_wake.notified() => {}
        }
        let close = match shared.outq.lock() {
            Ok(mut q) => {
                std::mem::swap(&mut chunks, &mut q.chunks);
                q.close
            }
            Err(_) => true,
        };
        let written = tokio::select! {
            biased;
            () = shared.abort.notified() => return,
            written = write_chunks(&mut socket, &mut chunks, &shared.queued) => written,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "write failed");
            shared.writer_failed.store(true, Ordering::Release);
            shared.stop_reader.notify_one();
            return;
        }
        if let Some(report) = &drained
            && shared.take_drained()
        {
            let conn = report.conn;
            // The broker task may be gone (node stopping): then nobody is waiting.
            let _ = report.events.send(Event::Drained { conn }).await;
        }
        if close {
            break;
        }
    }
    if let Err(e) = socket.shutdown().await {
        tracing::debug!(error = %e, "shutdown failed");
    }
    shared.stop_reader.notify_one();
}

/// Writes every chunk with vectored writes, then flushes.
async fn write_chunks<Wr: AsyncWrite + Unpin>(
    socket: &mut Wr,
    chunks: &mut VecDeque<Bytes>,
    queued: &AtomicUsize,
) -> std::io::Result<()> {
    while !chunks.is_empty() {
        let mut n = write_some(socket, chunks).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        queued.fetch_sub(n, Ordering::AcqRel);
        while n > 0 {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    socket.flush().await
}

/// One vectored write of the queued chunks. The `IoSlice` array is built on the stack inside
/// each poll, so it is not part of the writer task's state (which every idle connection keeps).
async fn write_some<Wr: AsyncWrite + Unpin>(
    socket: &mut Wr,
    chunks: &VecDeque<Bytes>,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut slices = [IoSlice::new(&[]); MAX_IOSLICES];
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
            *slot = IoSlice::new(chunk);
            count += 1;
        }
        std::pin::Pin::new(&mut *socket)
            .poll_write_vectored(cx, slices.get(..count).unwrap_or_default())
    })
    .await
}
