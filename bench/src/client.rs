//! A minimal MQTT client connection built on flockmq's own codec, for load generation.
//!
//! It owns one TCP stream, a read buffer the codec decodes from and a write buffer the codec
//! encodes into; both buffers are reused for the life of the connection, so the publish path
//! allocates nothing per message. It never spawns, never retries and never interprets what it
//! decodes beyond the handshake: the scenario loops decide what a packet means. Every wait on the
//! broker during setup has a timeout, so a broken broker ends a run instead of hanging it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use flockmq::codec::{
    Connect, DecodeError, Decoder, Disconnect, Packet, PacketType, Protocol, QoS, ReasonCode,
    Subscribe, SubscriptionOptions, encode,
};
use tokio::io::Interest;
use tokio::net::{TcpSocket, TcpStream};

/// How long the handshake and SUBSCRIBE may take before the broker is declared broken.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes made available to each read; large enough that a busy subscriber drains in few calls.
const READ_CHUNK: usize = 64 * 1024;
/// Largest packet the generator accepts from the broker (payloads are small; this is a guard).
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Why a connection failed; any of these ends the scenario that owns the connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed (refused, reset, out of file descriptors...).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The broker sent bytes our codec rejects.
    #[error("undecodable packet from the broker: {0}")]
    Decode(#[from] DecodeError),
    /// The broker closed the TCP connection.
    #[error("the broker closed the connection")]
    Closed,
    /// The broker refused CONNECT or SUBSCRIBE, or sent DISCONNECT.
    #[error("the broker refused: {0:?}")]
    Refused(ReasonCode),
    /// A packet arrived that the handshake did not expect.
    #[error("unexpected {got:?} while waiting for {waiting_for}")]
    Unexpected {
        got: PacketType,
        waiting_for: &'static str,
    },
    /// Setup did not complete in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// Where and how to connect: shared by every client of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The broker's MQTT listener.
    pub addr: SocketAddr,
    /// The protocol level every client speaks.
    pub protocol: Protocol,
}

/// One connected MQTT client.
pub struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    protocol: Protocol,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The Receive Maximum the server announced in CONNACK (65535 when it announced none), which
    /// caps the publisher's QoS 1/2 window.
    pub server_receive_maximum: u16,
}

impl Conn {
    /// Opens a TCP connection (bound to `source` first when given, so thousands of connections
    /// can spread over 127.0.0.0/8 instead of exhausting one address's ephemeral ports), sends
    /// CONNECT with clean start and no keepalive, and waits for a successful CONNACK.
    pub async fn connect(
        target: &Target,
        client_id: &str,
        source: Option<Ipv4Addr>,
    ) -> Result<Conn, ClientError> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip.into(), 0))?;
        }
        let stream = tokio::time::timeout(SETUP_TIMEOUT, socket.connect(target.addr))
            .await
            .map_err(|_| ClientError::Timeout("TCP connect"))??;
        stream.set_nodelay(true)?;
        let mut decoder = Decoder::new(MAX_PACKET);
        decoder.set_protocol(target.protocol);
        let mut conn = Conn {
            stream,
            decoder,
            protocol: target.protocol,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            server_receive_maximum: u16::MAX,
        };
        let connect = Connect {
            protocol: target.protocol,
            clean_start: true,
            keep_alive: 0,
            client_id: ByteString::from(client_id),
            ..Connect::default()
        };
        conn.queue(&Packet::Connect(Box::new(connect)));
        match conn.next_packet("CONNACK").await? {
            Packet::ConnAck(ack) if ack.reason_code.is_error() => {
                Err(ClientError::Refused(ack.reason_code))
            }
            Packet::ConnAck(ack) => {
                conn.server_receive_maximum = ack.properties.receive_maximum.unwrap_or(u16::MAX);
                Ok(conn)
            }
            other => Err(ClientError::Unexpected {
                got: other.packet_type(),
                waiting_for: "CONNACK",
            }),
        }
    }

    /// Subscribes to every filter at `qos` in one SUBSCRIBE and waits for a SUBACK granting all.
    pub async fn subscribe(&mut self, filters: &[String], qos: QoS) -> Result<(), ClientError> {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        let subscribe = Subscribe {
            packet_id: 1,
            filters: filters
                .iter()
                .map(|f| (ByteString::from(f.as_str()), options))
                .collect(),
            ..Subscribe::default()
        };
        self.queue(&Packet::Subscribe(subscribe));
        match self.next_packet("SUBACK").await? {
            Packet::SubAck(ack) => match ack.reason_codes.iter().find(|c| c.is_error()) {
                Some(code) => Err(ClientError::Refused(*code)),
                None => Ok(()),
            },
            other => Err(ClientError::Unexpected {
                got: other.packet_type(),
                waiting_for: "SUBACK",
            }),
        }
    }

    /// Sends DISCONNECT (best effort) and closes, so the broker sees a clean end, not an error.
    pub async fn disconnect(mut self) {
        self.queue(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
        let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
    }

    /// Appends `packet` to the write buffer; nothing is sent until `io` or `flush` runs.
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.protocol, &mut self.wbuf);
    }

    /// The write buffer, for the publisher that patches payload stamps in place after `queue`.
    pub fn write_buffer(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Bytes queued but not yet accepted by the kernel (the publisher's backpressure signal).
    pub fn pending_write(&self) -> usize {
        self.wbuf.len()
    }

    /// Takes the next complete packet out of what has been read, if there is one.
    pub fn try_decode(&mut self) -> Result<Option<Packet>, ClientError> {
        Ok(self.decoder.decode(&mut self.rbuf)?)
    }

    /// Waits until the socket can make progress, then reads what is there and writes what the
    /// kernel takes. Reading and writing in one place lets a single task drive a connection in
    /// both directions without splitting it.
    pub async fn io(&mut self) -> Result<(), ClientError> {
        let interest = if self.wbuf.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let ready = self.stream.ready(interest).await?;
        if ready.is_readable() {
            self.rbuf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        if ready.is_writable() && !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes everything queued (reading meanwhile, so a broker blocked on its own writes to
    /// us cannot deadlock the flush).
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        while !self.wbuf.is_empty() {
            self.io().await?;
        }
        Ok(())
    }

    /// Flushes, then waits (bounded) for the next packet; used only during setup.
    async fn next_packet(&mut self, waiting_for: &'static str) -> Result<Packet, ClientError> {
        let wait = async {
            loop {
                if let Some(packet) = self.try_decode()? {
                    return match packet {
                        Packet::Disconnect(d) => Err(ClientError::Refused(d.reason_code)),
                        packet => Ok(packet),
                    };
                }
                self.io().await?;
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, wait)
            .await
            .map_err(|_| ClientError::Timeout(waiting_for))?
    }
}
