//! The one read loop of the node: bytes from a socket -> frames -> one event per read, for MQTT
//! connections (frames are decoded packets) and cluster links (frames are length-prefixed link
//! messages) alike. What differs is a [`Framing`]: how to split a frame off the buffer, which
//! event carries the frames, and what a framing error means.
//!
//! The loop stops when the connection's `stop_reader` is notified (closed on our side; if the
//! writer failed, the loss is reported), on EOF or a read error (reported as an I/O loss), when
//! the framing says a bad frame ends the stream, or when the broker task is gone.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::conn::ConnShared;
use super::driver::Event;

/// The stack buffer of `RELEASE_IDLE` reads; a larger `Framing::READ_CHUNK` reads into the buffer.
const MAX_READ_CHUNK: usize = 16 * 1024;

/// What follows a framing error.
pub(crate) enum AfterError {
    /// Report this event (the loss) and stop reading.
    Lost(Event),
    /// Split what is buffered again (the frame limit changed) before reading more.
    Resplit,
    /// Stop reading without a report (the connection is being closed on our side).
    Stop,
}

/// How one kind of stream is framed and reported.
pub(crate) trait Framing: Send + 'static {
    /// One frame.
    type Frame: Send;
    /// Why bytes cannot be framed.
    type Error: std::fmt::Display + Send;

    /// Bytes asked of each read.
    const READ_CHUNK: usize;
    /// Keep no read buffer while no partial frame is buffered: read into a stack buffer and copy
    /// only what arrived (MQTT connections: many, mostly idle). Otherwise keep `READ_CHUNK` of
    /// capacity and read straight into it (cluster links: few, busy).
    const RELEASE_IDLE: bool;

    /// Splits one frame off the front of `buf`; `None` while it is incomplete.
    fn split(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Frame>, Self::Error>;

    /// The event carrying what one read of `bytes` bytes completed (`None`: nothing to send).
    fn frames(&mut self, frames: Vec<Self::Frame>, bytes: usize) -> Option<Event>;

    /// The event reporting that the socket broke (EOF, a read or a write error).
    fn io_lost(&self) -> Event;

    /// What a framing error means, once the frames before it were reported.
    fn failed(
        &mut self,
        error: Self::Error,
        shared: &ConnShared,
    ) -> impl Future<Output = AfterError> + Send;
}

/// The read side of one connection or link.
pub(crate) struct FramedReader<F: Framing> {
    pub(crate) framing: F,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) shared: Arc<ConnShared>,
    /// Held while reading: the node's graceful shutdown waits for it.
    pub(crate) _alive: mpsc::Sender<()>,
}

impl<F: Framing> FramedReader<F> {
    /// Reads, frames and reports until the stream ends (see the module doc).
    pub(crate) async fn run<R: AsyncRead + Unpin>(mut self, mut socket: R) {
        let mut buf = if F::RELEASE_IDLE {
            BytesMut::new()
        } else {
            BytesMut::with_capacity(F::READ_CHUNK)
        };
        let mut resplit = false;
        loop {
            let mut bytes = 0;
            if !std::mem::take(&mut resplit) {
                let read = tokio::select! {
                    biased;
                    () = self.shared.stop_reader.notified() => {
                        if self.shared.writer_failed.load(Ordering::Acquire) {
                            self.report(self.framing.io_lost()).await;
                        }
                        return;
                    }
                    read = read_some::<F, R>(&mut socket, &mut buf) => read,
                };
                bytes = match read {
                    Ok(0) => {
                        tracing::debug!("peer closed the stream");
                        return self.report(self.framing.io_lost()).await;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(error = %e, "read failed");
                        return self.report(self.framing.io_lost()).await;
                    }
                };
            }
            let mut frames = Vec::new();
            let failure = loop {
                match self.framing.split(&mut buf) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            if let Some(event) = self.framing.frames(frames, bytes) {
                if self.events.send(event).await.is_err() {
                    return;
                }
            }
            if let Some(e) = failure {
                tracing::debug!(error = %e, "bytes that cannot be framed");
                match self.framing.failed(e, &self.shared).await {
                    AfterError::Lost(event) => return self.report(event).await,
                    AfterError::Resplit => resplit = true,
                    AfterError::Stop => return,
                }
            }
        }
    }

    async fn report(&self, event: Event) {
        // If the broker task is gone the node is stopping; nobody needs to know.
        let _ = self.events.send(event).await;
    }
}

/// Reads what the socket has into `buf`. With `RELEASE_IDLE`, while `buf` holds no partial frame
/// the read goes into a stack buffer that lives only inside one poll, and only the bytes that
/// arrived are copied into `buf`: idle connections keep no read buffer allocated. A partial
/// frame (or any read without `RELEASE_IDLE`) reads straight into `buf`.
async fn read_some<F: Framing, R: AsyncRead + Unpin>(
    socket: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if !F::RELEASE_IDLE || !buf.is_empty() || F::READ_CHUNK > MAX_READ_CHUNK {
        buf.reserve(F::READ_CHUNK);
        return socket.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        let mut stack = [0u8; MAX_READ_CHUNK];
        let mut rb = tokio::io::ReadBuf::new(stack.get_mut(..F::READ_CHUNK).unwrap_or_default());
        std::task::ready!(std::pin::Pin::new(&mut *socket).poll_read(cx, &mut rb))?;
        buf.extend_from_slice(rb.filled());
        std::task::Poll::Ready(Ok(rb.filled().len()))
    })
    .await
}
