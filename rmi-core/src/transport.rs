//! Byte streams and framed I/O: dial a location, read and write whole messages; frames only.
//!
//! The read buffer grows as bytes arrive, never to a header's declared size up front, and a
//! header is validated against `max_message_size` before any of its body is waited for.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::Error;
use crate::protocol::frame::{self, Message};
use crate::uri::Location;

/// Any bidirectional byte channel a connection can run over (TCP, Unix socket, TLS, in-memory
/// duplex). Called `Io`, not "stream": in rmi a stream is a streamed result.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Largest chunk reserved for one read; big messages arrive in several.
const READ_CHUNK: usize = 256 * 1024;
/// Smallest read reservation, for headers and small messages.
const MIN_READ: usize = 8 * 1024;

/// Reads whole messages from the read half of a stream.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    max_message_size: usize,
    /// How long a message may take to arrive once its first byte is in (slow senders).
    frame_timeout: Option<Duration>,
    /// When the first byte of the message being read arrived.
    partial_since: Option<tokio::time::Instant>,
}

impl<R> std::fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &self.buf.len())
            .field("max_message_size", &self.max_message_size)
            .field("frame_timeout", &self.frame_timeout)
            .finish()
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `rd`, refusing messages larger than `max_message_size`.
    pub fn new(rd: R, max_message_size: usize) -> Self {
        FrameReader {
            rd,
            buf: BytesMut::with_capacity(MIN_READ),
            max_message_size,
            frame_timeout: None,
            partial_since: None,
        }
    }

    /// Fails a message that has not fully arrived `timeout` after its first byte (a peer
    /// sending a byte at a time cannot hold the connection).
    pub fn set_frame_timeout(&mut self, timeout: Option<Duration>) {
        self.frame_timeout = timeout;
    }

    /// Reads the next message; `Ok(None)` on a clean end of stream between messages.
    pub async fn read_frame(&mut self) -> Result<Option<Message>, Error> {
        self.read_frame_within(None).await
    }

    /// Like [`read_frame`](Self::read_frame), but gives up with `Error::Timeout` when no byte of
    /// a new message arrives within `idle` (a message that has started is governed by the frame
    /// timeout instead, so an idle limit never cuts one in half).
    pub async fn read_frame_within(
        &mut self,
        idle: Option<Duration>,
    ) -> Result<Option<Message>, Error> {
        // Bytes of the next message may have waited while we were not reading (the caller had
        // no slot free): their clock starts now.
        if !self.buf.is_empty() {
            self.partial_since = Some(tokio::time::Instant::now());
        }
        let idle_until = idle.map(|d| (tokio::time::Instant::now() + d, d));
        loop {
            match frame::check(&self.buf, self.max_message_size) {
                Ok(header) => {
                    let msg = Message::parse(&mut self.buf, &header)
                        .map_err(|e| Error::Protocol(e.to_string()))?;
                    // Bytes of the next message may already be here: its clock starts now.
                    self.partial_since = (!self.buf.is_empty()).then(tokio::time::Instant::now);
                    return Ok(Some(msg));
                }
                Err(frame::Error::Incomplete) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            let wanted = match frame::Header::parse(&self.buf, self.max_message_size) {
                Ok(h) => h.total_len() - self.buf.len(),
                Err(_) => MIN_READ,
            };
            self.buf.reserve(wanted.clamp(MIN_READ, READ_CHUNK));
            let buffered = self.buf.len();
            let read = self.rd.read_buf(&mut self.buf);
            let n = match (self.frame_timeout, buffered, idle_until) {
                (Some(limit), 1.., _) => {
                    let at = *self.partial_since.get_or_insert_with(tokio::time::Instant::now) + limit;
                    tokio::time::timeout_at(at, read).await.map_err(|_| {
                        Error::Protocol(format!(
                            "message not complete {limit:?} after its first byte (frame_timeout); {buffered} bytes received"
                        ))
                    })?
                }
                (_, 0, Some((at, d))) => tokio::time::timeout_at(at, read).await.map_err(|_| Error::Timeout(d))?,
                _ => read.await,
            }
            .map_err(|e| Error::io("reading from the connection", e))?;
            if n > 0 && self.partial_since.is_none() {
                self.partial_since = Some(tokio::time::Instant::now());
            }
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Error::ConnectionClosed(format!(
                    "peer closed the connection in the middle of a message ({} bytes buffered)",
                    self.buf.len()
                )));
            }
        }
    }
}

/// Payloads at least this large are written from their own buffer instead of being copied
/// into the write buffer.
const LARGE_PAYLOAD: usize = 64 * 1024;
/// A write buffer that grew past this is released after it is flushed.
const KEEP_WRITE_BUFFER: usize = 1024 * 1024;

/// Writes messages to the write half of a stream.
pub struct FrameWriter<W> {
    wr: W,
    /// Small messages and headers, coalesced into one write.
    buf: BytesMut,
    /// What to write, in order, once `buf` is full of small messages or a large payload comes.
    chunks: Vec<Bytes>,
}

impl<W> std::fmt::Debug for FrameWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("buffered", &self.buf.len())
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps `wr`.
    pub fn new(wr: W) -> Self {
        FrameWriter {
            wr,
            buf: BytesMut::new(),
            chunks: Vec::new(),
        }
    }

    /// Queues `msg` without writing it yet. Small messages are coalesced; a large payload is
    /// queued by reference, not copied.
    pub fn queue(&mut self, msg: &Message) {
        if msg.payload.len() >= LARGE_PAYLOAD {
            msg.encode_head(&mut self.buf);
            self.chunks.push(self.buf.split().freeze());
            self.chunks.push(msg.payload.clone());
        } else {
            msg.encode(&mut self.buf);
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.flush_within(None).await
    }

    /// Writes everything queued; with `stall`, fails when the peer takes no byte for that long
    /// (a slow reader that keeps taking data is never cut off).
    pub async fn flush_within(&mut self, stall: Option<Duration>) -> Result<(), Error> {
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
        let stalled = |limit: Duration| {
            Error::Protocol(format!(
                "peer took none of our data for {limit:?} (write_timeout); closing"
            ))
        };
        for mut chunk in self.chunks.drain(..) {
            while !chunk.is_empty() {
                let write = self.wr.write(&chunk);
                let n = match stall {
                    Some(limit) => tokio::time::timeout(limit, write)
                        .await
                        .map_err(|_| stalled(limit))?,
                    None => write.await,
                }
                .map_err(|e| Error::io("writing to the connection", e))?;
                if n == 0 {
                    return Err(Error::ConnectionClosed(
                        "the peer stopped accepting data".into(),
                    ));
                }
                chunk.advance(n);
            }
        }
        if self.buf.capacity() > KEEP_WRITE_BUFFER {
            self.buf = BytesMut::new();
        }
        let flush = self.wr.flush();
        match stall {
            Some(limit) => tokio::time::timeout(limit, flush)
                .await
                .map_err(|_| stalled(limit))?,
            None => flush.await,
        }
        .map_err(|e| Error::io("flushing the connection", e))
    }

    /// Writes one message.
    pub async fn write_frame(&mut self, msg: &Message) -> Result<(), Error> {
        self.queue(msg);
        self.flush().await
    }

    /// Closes the write direction (sends FIN on TCP).
    pub async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }
}

/// Writes every message received on `rx` until the channel closes, then shuts the stream down.
///
/// Messages already queued are coalesced into one write. When `busy()` says other calls are in
/// flight, the loop yields once before writing, so replies (or requests) finishing together
/// share a write; a lone sequential caller never waits for that.
///
/// With `write_timeout`, a write that makes no progress for that long (a peer that stopped
/// reading) fails the loop. Each message's `slot` is released only once it is written, so
/// replies a peer does not read keep their slots and the daemon stops reading its requests.
///
/// With a `signer` (shared-secret authentication), every message is signed as it is written,
/// so the signatures' counter follows the order on the wire.
pub async fn write_loop<W, F>(
    mut writer: FrameWriter<W>,
    mut rx: UnboundedReceiver<Outgoing>,
    busy: F,
    write_timeout: Option<Duration>,
    mut signer: Option<crate::auth::Signer>,
) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
    F: Fn() -> bool,
{
    let mut written = Vec::new();
    let mut queue =
        |writer: &mut FrameWriter<W>, mut out: Outgoing, written: &mut Vec<Outgoing>| {
            if let Some(signer) = signer.as_mut() {
                signer.sign(&mut out.msg);
            }
            writer.queue(&out.msg);
            written.push(out);
        };
    while let Some(first) = rx.recv().await {
        queue(&mut writer, first, &mut written);
        if busy() {
            tokio::task::yield_now().await;
        }
        while let Ok(more) = rx.try_recv() {
            queue(&mut writer, more, &mut written);
        }
        writer.flush_within(write_timeout).await?;
        for done in written.drain(..) {
            if let Some(flushed) = done.flushed {
                let _ = flushed.send(());
            }
        }
    }
    writer.shutdown().await;
    Ok(())
}

/// A message for [`write_loop`], with what to release once it is on the socket.
#[derive(Debug)]
pub struct Outgoing {
    /// The message.
    pub msg: Message,
    /// Told when the message has been written (oneway calls return then).
    pub flushed: Option<tokio::sync::oneshot::Sender<()>>,
    /// An in-flight slot held until the message is written.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<Message> for Outgoing {
    fn from(msg: Message) -> Self {
        Outgoing {
            msg,
            flushed: None,
            slot: None,
        }
    }
}

/// Splits a stream into a frame reader and a frame writer.
pub fn split<S: Io>(
    stream: S,
    max_message_size: usize,
) -> (FrameReader<ReadHalf<S>>, FrameWriter<WriteHalf<S>>) {
    let (rd, wr) = tokio::io::split(stream);
    (FrameReader::new(rd, max_message_size), FrameWriter::new(wr))
}

/// Runs the TLS client handshake on `stream`, checking the certificate against `location`'s host.
#[cfg(feature = "tls")]
pub async fn tls_connect(
    stream: BoxIo,
    location: &Location,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<BoxIo, Error> {
    let Location::Tcp { host, .. } = location else {
        return Err(Error::Protocol(format!(
            "TLS needs a TCP location, not {location}"
        )));
    };
    let name =
        rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| Error::InvalidUri {
            uri: location.to_string(),
            reason: format!("not a TLS server name: {e}"),
        })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| Error::io(format!("TLS handshake with {location}"), e))?;
    Ok(Box::new(tls))
}

/// Dials `location` within `timeout`.
pub async fn dial(location: &Location, timeout: Duration) -> Result<BoxIo, Error> {
    let fut = async {
        match location {
            Location::Tcp { host, port } => {
                let stream = if host.eq_ignore_ascii_case("localhost") {
                    // Whatever the resolver says, localhost is both loopbacks: IPv4 first, then IPv6.
                    let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, *port));
                    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, *port));
                    match tokio::net::TcpStream::connect(v4).await {
                        Ok(s) => Ok(s),
                        Err(_) => tokio::net::TcpStream::connect(v6).await,
                    }
                } else {
                    tokio::net::TcpStream::connect((host.as_str(), *port)).await
                }
                .map_err(|e| Error::io(format!("connecting to {location}"), e))?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream) as BoxIo)
            }
            #[cfg(unix)]
            Location::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| Error::io(format!("connecting to {location}"), e))?;
                Ok(Box::new(stream) as BoxIo)
            }
            #[cfg(not(unix))]
            Location::Unix(_) => Err(Error::io(
                format!("connecting to {location}"),
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "unix sockets are not available here",
                ),
            )),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}
