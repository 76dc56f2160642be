//! Byte streams and framed I/O: dial a location, read and write whole messages; frames only.
//!
//! The read buffer grows as bytes arrive, never to a header's declared size up front, and a
//! header is validated against `max_message_size` before any of its body is waited for.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::error::Error;
use crate::protocol::codec::Serializer;
use crate::protocol::frame::{self, Message, MessageType, Protocol};
use crate::uri::Location;

mod halves;
pub mod outbox;
pub(crate) mod received;
pub use halves::{IoReadHalf, IoWriteHalf};
pub use outbox::outbox;

/// Any bidirectional byte channel a connection can run over (TCP, Unix socket, TLS, in-memory
/// duplex). Called `Io`, not "stream": in rmi a stream is a streamed result.
///
/// (`Any`, so that [`split_io`] can tell a socket, which splits without a lock.)
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::any::Any {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Largest chunk reserved for one read; big messages arrive in several.
const READ_CHUNK: usize = 256 * 1024;
/// Smallest read reservation, for headers and small messages, once a connection's reads have
/// filled a buffer.
const MIN_READ: usize = 8 * 1024;
/// A new connection's read reservation, until a read fills it: most connections carry only
/// small messages one at a time, and 1 KiB is an allocation glibc's per-thread cache serves
/// (at most 1,032 bytes) where 8 KiB takes its slow path on every connect. An idle
/// connection holds 1 KiB instead of 8.
const FIRST_READ: usize = 1024;
/// After a message larger than this, the read buffer is replaced by a small one, so an idle
/// connection does not keep the allocation of the largest message it ever received, and the
/// small messages after it are not read into it: a call that waits holding its request keeps
/// the allocation its request is in alive, while the connection's byte budget counts only the
/// request. (At 1 MiB, each of 64 tiny calls waiting behind 1 MB requests kept 1 to 2 MiB.)
const KEEP_READ_BUFFER: usize = 64 * 1024;
/// Messages up to this size are copied out of the read buffer by a reader that
/// [`hands messages off`](FrameReader::hand_messages_off).
const COPY_OUT: usize = 4 * 1024;
/// Smallest announced byte string a reader that [splits](FrameReader::split_bulk) reads into a
/// buffer of its own (the size from which a sender leaves one out of its payload).
const BULK_MIN: usize = 64 * 1024;

/// How much more a reader may reserve for a message of which `received` bytes have arrived
/// while `spare` bytes it reserved are still unused: up to three times what has arrived (at
/// least `READ_CHUNK`) in all, so a peer that announces much and sends little makes it reserve
/// at most about four times what it sent; never less than `MIN_READ`.
fn room(received: usize, spare: usize) -> usize {
    READ_CHUNK
        .max(received.saturating_mul(3))
        .saturating_sub(spare)
        .max(MIN_READ)
}

/// Reads whole messages from the read half of a stream.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    max_message_size: usize,
    /// The protocol messages must speak; `None` until the first header says (a daemon's
    /// connection accepts either).
    protocol: Option<Protocol>,
    /// How long a message may take to arrive once its first byte is in (slow senders).
    frame_timeout: Option<Duration>,
    /// Bytes per second a message's sender earns more time at, on top of `frame_timeout`.
    min_read_rate: Option<u64>,
    /// When the current read first waited for the rest of the message at the front: its
    /// frame clock (unset again when the next read starts).
    partial_since: Option<tokio::time::Instant>,
    /// Messages outlive the next read (see [`FrameReader::hand_messages_off`]).
    hand_off: bool,
    /// The header of the message at the front of the buffer, once parsed: it is looked at
    /// several times per message (is one at hand? is it whole? how much is missing?).
    front: std::cell::Cell<Option<frame::Header>>,
    /// The type of message whose announced byte string is read into a buffer of its own
    /// (see [`FrameReader::split_bulk`]).
    split: Option<MessageType>,
    /// The front message's announced byte string.
    bulk: Bulk,
    /// The smallest read reservation: [`FIRST_READ`] until a read fills the buffer, then
    /// [`MIN_READ`].
    read_size: usize,
    /// Bytes of a message refused for its size, still to be read and dropped (see
    /// [`FrameReader::skip_oversized`]).
    skipping: u64,
    /// Bytes of that message dropped so far: they earn the frame clock's allowance as a
    /// message's bytes do.
    skipped: u64,
}

/// What a reader knows of the large byte string the front message announces.
#[derive(Debug, Default)]
enum Bulk {
    /// Not looked for yet: the message's annotations are not all in (or there is no message).
    #[default]
    Unknown,
    /// None, or none to split off: the message is read whole into the read buffer.
    Whole,
    /// Announced, and read into `buf` as it arrives: `len` bytes at `offset` in the payload,
    /// at `start` in the frame.
    Reading {
        start: usize,
        offset: usize,
        len: usize,
        buf: Vec<u8>,
    },
}

impl<R> std::fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &self.buf.len())
            .field("max_message_size", &self.max_message_size)
            .field("protocol", &self.protocol)
            .field("frame_timeout", &self.frame_timeout)
            .field("min_read_rate", &self.min_read_rate)
            .finish()
    }
}

/// How many times its `max_message_size` a message may be for
/// [`FrameReader::skip_oversized`] to read it and drop it; a larger one is not skipped.
pub const SKIP_AT_MOST: usize = 4;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `rd`, refusing messages larger than `max_message_size` and any that is not Pyro5.
    pub fn new(rd: R, max_message_size: usize) -> Self {
        FrameReader {
            rd,
            buf: BytesMut::with_capacity(FIRST_READ),
            max_message_size,
            protocol: Some(Protocol::Pyro5),
            frame_timeout: None,
            min_read_rate: None,
            partial_since: None,
            hand_off: false,
            front: std::cell::Cell::new(None),
            split: None,
            bulk: Bulk::Unknown,
            read_size: FIRST_READ,
            skipping: 0,
            skipped: 0,
        }
    }

    /// Reads the large byte string a bincode or msgpack message of type `msg_type` announces
    /// (an rmi peer's [`BULK_ANNOTATION`](crate::protocol::names::BULK_ANNOTATION)) into a
    /// buffer of its own, which the message carries as the first piece of its
    /// [`payload_tail`](Message::payload_tail): a `Vec<u8>` argument (on a daemon, `Invoke`) or
    /// result (on a proxy, `Result`) can then be handed over without being copied. The bytes
    /// and every limit are the same either way: the buffer grows as they arrive, by the same
    /// rule as the read buffer, and the frame timeout and `max_message_size` count them.
    pub fn split_bulk(&mut self, msg_type: MessageType) {
        self.split = Some(msg_type);
    }

    /// Tells the reader that its messages are handed to other tasks and usually outlive the
    /// next read (a proxy's replies). A small message that empties the buffer is then copied
    /// out, so the buffer stays the reader's own and the next read reuses it; otherwise every
    /// read of one lone reply would allocate a fresh buffer, because the last one is still
    /// shared with the reply.
    pub fn hand_messages_off(&mut self) {
        self.hand_off = true;
    }

    /// [`hand_messages_off`](Self::hand_messages_off) for the messages read from now on, or
    /// (`false`) not: a reader whose next message is taken and dropped before anything reads
    /// again (a call reading its own reply) need not copy it out.
    pub fn set_hand_off(&mut self, on: bool) {
        self.hand_off = on;
    }

    /// Reads and drops what the peer still sends, until it closes (or the read fails). A
    /// connection closed with bytes unread ends with a reset, which can destroy what was
    /// written just before it on its way (a refusal); drained, it ends with a FIN.
    pub async fn discard_until_end(&mut self) {
        self.bulk = Bulk::Unknown;
        loop {
            self.buf.clear();
            self.buf.reserve(MIN_READ);
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The largest message this reader accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Changes the largest message this reader accepts, from the next message's header on (a
    /// daemon holds the CONNECT handshake to a smaller bound than the calls after it).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.max_message_size = max;
    }

    /// Lets the first message speak Pyro5 or Pyro4 (a daemon's connection); its header fixes
    /// the protocol of every later one.
    pub fn accept_either_protocol(&mut self) {
        self.protocol = None;
    }

    /// The protocol this reader's messages speak; `None` before the first message when
    /// either is accepted.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// The stream this reader reads from.
    pub fn get_ref(&self) -> &R {
        &self.rd
    }

    /// The stream this reader reads from, to ask it about itself (not to read from it: the
    /// reader's buffer would lose its place).
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.rd
    }

    /// True when the next [`read_frame`](Self::read_frame) returns without waiting: a whole
    /// message (or a malformed header) is already buffered.
    pub fn has_frame(&self) -> bool {
        self.skipping == 0
            && !self.buf.is_empty()
            && !matches!(self.check(), Err(frame::Error::Incomplete))
    }

    /// Drops the message at the front, refused for its size (over `max_message_size`), as its
    /// bytes come, without keeping any of them: for a reader whose peer's later messages are
    /// still wanted (a proxy's connection, which other calls share). Returns its header, read
    /// without the bound; `None` when the front message is no such one, or is over
    /// [`SKIP_AT_MOST`] times the limit (a peer that claims gigabytes and sends nothing would
    /// hold every later message up for ever). Read on with [`poll_frame`](Self::poll_frame),
    /// which drops the rest of it as it comes.
    pub fn skip_oversized(&mut self) -> Option<frame::Header> {
        let header = self.oversized_header()?;
        if header.total_len() > self.max_message_size.saturating_mul(SKIP_AT_MOST) {
            return None;
        }
        self.front.set(None);
        self.bulk = Bulk::Unknown;
        self.skipping = header.total_len() as u64;
        self.skipped = 0;
        self.discard();
        Some(header)
    }

    /// Drops what is buffered of the message being skipped.
    fn discard(&mut self) {
        let n = usize::try_from(self.skipping).map_or(self.buf.len(), |n| n.min(self.buf.len()));
        self.buf.advance(n);
        self.skipping -= n as u64;
        self.skipped += n as u64;
    }

    /// The header at the front of the buffer, in the reader's protocol (or either), once its
    /// bytes are in; parsed once per message.
    #[inline(always)]
    fn header(&self) -> Result<frame::Header, frame::Error> {
        if let Some(header) = self.front.get() {
            return Ok(header);
        }
        // (Nothing to look at: the usual state of a reader about to wait.)
        if self.buf.is_empty() {
            return Err(frame::Error::Incomplete);
        }
        let protocol = match self.protocol {
            Some(protocol) => protocol,
            None => Protocol::detect(&self.buf)?,
        };
        let header = protocol.parse_header(&self.buf, self.max_message_size)?;
        self.front.set(Some(header));
        Ok(header)
    }

    /// The header of the message at the front of the buffer when it was refused for its size
    /// (over `max_message_size`), read again without that bound: what a reply refusing it
    /// needs (its sequence number, serializer, flags, correlation id). `None` when the front
    /// message is no such one.
    pub fn oversized_header(&self) -> Option<frame::Header> {
        let protocol = match self.protocol {
            Some(protocol) => protocol,
            None => Protocol::detect(&self.buf).ok()?,
        };
        match protocol.parse_header(&self.buf, self.max_message_size) {
            Err(frame::Error::TooLarge { .. }) => protocol.parse_header(&self.buf, usize::MAX).ok(),
            _ => None,
        }
    }

    /// The header at the front of the buffer, when its whole message is in.
    fn check(&self) -> Result<frame::Header, frame::Error> {
        let header = self.header()?;
        // (While a string is read apart, the read buffer never holds the message's length: it
        // takes no byte past the string's start until the string is whole.)
        if self.buf.len() >= header.total_len() {
            return Ok(header);
        }
        match &self.bulk {
            Bulk::Reading { len, buf, .. }
                if buf.len() == *len && self.buf.len() >= header.total_len() - len =>
            {
                Ok(header)
            }
            _ => Err(frame::Error::Incomplete),
        }
    }

    /// How many more bytes the message at the front needs, when its header is complete.
    fn missing(&self) -> Option<usize> {
        let header = self.header().ok()?;
        Some(header.total_len() - self.received())
    }

    /// Looks, once the front message's annotations are in, for a byte string to read into a
    /// buffer of its own (see [`split_bulk`](Self::split_bulk)); true when it found one, whose
    /// bytes already read were moved there (which may have completed the message).
    #[inline]
    fn plan_bulk(&mut self) -> bool {
        // (Most messages waited for are: their reader asks nothing of this.)
        if self.split.is_none() || !matches!(self.bulk, Bulk::Unknown) || self.buf.is_empty() {
            return false;
        }
        self.plan_bulk_now()
    }

    /// [`plan_bulk`](Self::plan_bulk) for a reader that splits, before it has decided.
    fn plan_bulk_now(&mut self) -> bool {
        let (Some(split), Bulk::Unknown) = (self.split, &self.bulk) else {
            return false;
        };
        // Only a header already parsed (by the `check` just before): parsing a partial one
        // again for nothing would cost every message that has to be waited for.
        let Some(header) = self.front.get() else {
            return false;
        };
        let data_len = header.data_len as usize;
        let ser = header.serializer;
        if header.msg_type != split
            || (ser != Serializer::BINCODE_ID && ser != Serializer::MSGPACK_ID)
            || data_len < BULK_MIN
        {
            self.bulk = Bulk::Whole;
            return false;
        }
        let at = header.protocol.header_size();
        let Some(annotations) = self.buf.get(at..at + header.ann_len as usize) else {
            return false;
        };
        let Some((offset, len)) = frame::bulk_in(&header, annotations, BULK_MIN) else {
            self.bulk = Bulk::Whole;
            return false;
        };
        let start = at + header.ann_len as usize + offset;
        // Room as the read buffer would get it, less what the read buffer holds spare: the two
        // together stay within the read buffer's rule.
        let received = self.buf.len();
        let spare = self.buf.capacity() - received;
        let mut buf = Vec::with_capacity(len.min(room(received, spare)));
        if received > start {
            // The string's first bytes came in with the annotations: moved over.
            let rest = self.buf.split_off(start);
            let moved = rest.len().min(len);
            buf.extend_from_slice(&rest[..moved]);
            self.buf.extend_from_slice(&rest[moved..]);
        }
        self.bulk = Bulk::Reading {
            start,
            offset,
            len,
            buf,
        };
        true
    }

    /// Reads what arrived into the buffer the front message's next bytes belong in: the read
    /// buffer, or the announced byte string's own (reading no further than it, so the bytes
    /// after it are not read into it).
    #[inline]
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if !matches!(self.bulk, Bulk::Reading { .. }) {
            self.reserve();
            let rd = std::pin::Pin::new(&mut self.rd);
            let read = tokio_util::io::poll_read_buf(rd, cx, &mut self.buf);
            // A read that filled the buffer: more was likely waiting. Full-size reads from now on.
            if self.buf.len() == self.buf.capacity() {
                self.read_size = MIN_READ;
            }
            return read;
        }
        self.poll_fill_bulk(cx)
    }

    /// [`poll_fill`](Self::poll_fill) while a byte string is being read apart.
    fn poll_fill_bulk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let rd = std::pin::Pin::new(&mut self.rd);
        match &mut self.bulk {
            Bulk::Reading { start, buf, .. } if self.buf.len() < *start => {
                // The bytes before the string (a peer's offset may be far ahead of its bytes).
                let want = *start - self.buf.len();
                if self.buf.len() == self.buf.capacity() {
                    let received = self.buf.len() + buf.len();
                    let spare = buf.capacity() - buf.len();
                    self.buf.reserve(want.min(room(received, spare)));
                }
                tokio_util::io::poll_read_buf(rd, cx, &mut (&mut self.buf).limit(want))
            }
            Bulk::Reading { len, buf, .. } if buf.len() < *len => {
                let want = *len - buf.len();
                if buf.len() == buf.capacity() {
                    let received = self.buf.len() + buf.len();
                    let spare = self.buf.capacity() - self.buf.len();
                    buf.reserve_exact(want.min(room(received, spare)));
                }
                tokio_util::io::poll_read_buf(rd, cx, &mut buf.limit(want))
            }
            Bulk::Reading { .. } | Bulk::Unknown | Bulk::Whole => {
                self.reserve();
                let rd = std::pin::Pin::new(&mut self.rd);
                tokio_util::io::poll_read_buf(rd, cx, &mut self.buf)
            }
        }
    }

    /// Fails a message that has not fully arrived `timeout` after its first byte (a peer
    /// sending a byte at a time cannot hold the connection).
    pub fn set_frame_timeout(&mut self, timeout: Option<Duration>) {
        self.frame_timeout = timeout;
    }

    /// Gives a message's sender more time than the frame timeout for the bytes it has sent:
    /// `n / rate` seconds for `n` bytes received, so a large message over a slow link is not
    /// cut off for its size, while a sender of a byte at a time earns next to nothing.
    pub fn set_min_read_rate(&mut self, bytes_per_second: Option<u64>) {
        self.min_read_rate = bytes_per_second.map(|r| r.max(1));
    }

    /// The bytes of the front message received so far (split off or not).
    fn received(&self) -> usize {
        let split_off = match &self.bulk {
            Bulk::Reading { buf, .. } => buf.len(),
            Bulk::Unknown | Bulk::Whole => 0,
        };
        self.buf.len() + split_off
    }

    /// How long the front message may take since its first byte, `limit` plus what the bytes
    /// received earn at the minimum read rate.
    fn frame_allowance(&self, limit: Duration) -> Duration {
        let Some(rate) = self.min_read_rate else {
            return limit;
        };
        let received = self.received() as u128 + u128::from(self.skipped);
        let nanos = (received * 1_000_000_000) / u128::from(rate);
        limit.saturating_add(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// Lets go of the allocation a large message arrived in: the message's payload is split off
    /// the same allocation, and `BytesMut::reserve` would reclaim and keep all of it once the
    /// message is dropped. Bytes of the next message already read are copied over.
    fn release_large_buffer(&mut self) {
        let rest = self.buf.split();
        self.buf = BytesMut::with_capacity(MIN_READ.max(rest.len()));
        self.buf.extend_from_slice(&rest);
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
        // no slot free): their clock starts when this read first has to wait for the rest.
        // (The clock is read only then: a message already whole in the buffer, as most are on
        // a busy connection, needs none, and reading it per message is measurable.)
        self.partial_since = None;
        // The idle clock likewise starts at the first wait on an empty buffer.
        let mut idle_until = None;
        loop {
            // The rest of a message being skipped (see `skip_oversized`) is dropped as it
            // comes, under the frame clock, as the message's own bytes would be read.
            if self.skipping > 0 {
                self.discard();
                if self.skipping == 0 {
                    // The skip is over: the next message's clocks start afresh.
                    (self.partial_since, self.skipped) = (None, 0);
                    idle_until = None;
                }
            }
            let skipping = self.skipping > 0;
            if !skipping {
                match self.check() {
                    Ok(header) => return self.take(header).map(Some),
                    Err(frame::Error::Incomplete) => {}
                    Err(e) => return Err(Error::Protocol(e.to_string())),
                }
                if self.plan_bulk() {
                    continue;
                }
            }
            let buffered = self.buf.len().max(usize::from(skipping));
            // The frame clock runs from the first wait for the rest of a message whose first
            // bytes are in (a deadline too far to represent is none).
            let frame_deadline = match (self.frame_timeout, buffered) {
                (Some(limit), 1..) => {
                    let allowed = self.frame_allowance(limit);
                    self.partial_since
                        .get_or_insert_with(tokio::time::Instant::now)
                        .checked_add(allowed)
                        .map(|at| (at, allowed))
                }
                _ => None,
            };
            let idle_deadline = match (idle, buffered) {
                (Some(d), 0) => *idle_until.get_or_insert_with(|| {
                    tokio::time::Instant::now().checked_add(d).map(|at| (at, d))
                }),
                _ => None,
            };
            let read = std::future::poll_fn(|cx| self.poll_fill(cx));
            let n = match (frame_deadline, buffered, idle_deadline) {
                (Some((at, allowed)), 1.., _) => tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| self.too_slow(allowed))?,
                (_, 0, Some((at, d))) => tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| Error::Timeout(d))?,
                _ => read.await,
            }
            .map_err(|e| Error::io("reading from the connection", e))?;
            // (A message's first bytes, read just now, start its clock at the next pass:
            // `frame_deadline` above sets `partial_since` when it is unset.)
            if n == 0 {
                return self.ended();
            }
        }
    }

    /// Polls for the next message, for a reader with no frame timeout (a proxy's): what
    /// [`read_frame`](Self::read_frame) does, for a reader shared by several tasks. The waker
    /// of the last poll that returned `Pending` is the one woken when bytes arrive.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Message>, Error>> {
        debug_assert!(
            self.frame_timeout.is_none(),
            "poll_frame keeps no frame clock"
        );
        loop {
            if self.skipping > 0 {
                self.discard();
                if self.skipping > 0 {
                    let n = std::task::ready!(self.poll_fill(cx))
                        .map_err(|e| Error::io("reading from the connection", e))?;
                    if n == 0 {
                        return Poll::Ready(Err(Error::ConnectionClosed(
                            "the connection ended within a message too large to read".into(),
                        )));
                    }
                    continue;
                }
            }
            match self.check() {
                Ok(header) => return Poll::Ready(self.take(header).map(Some)),
                Err(frame::Error::Incomplete) => {}
                Err(e) => return Poll::Ready(Err(Error::Protocol(e.to_string()))),
            }
            if self.plan_bulk() {
                continue;
            }
            let n = std::task::ready!(self.poll_fill(cx))
                .map_err(|e| Error::io("reading from the connection", e))?;
            if n == 0 {
                return Poll::Ready(self.ended());
            }
        }
    }

    /// Takes the whole message `header` describes off the front of the buffer.
    fn take(&mut self, header: frame::Header) -> Result<Message, Error> {
        self.protocol = Some(header.protocol);
        self.front.set(None);
        if let Bulk::Reading {
            offset, len, buf, ..
        } = std::mem::take(&mut self.bulk)
        {
            let around_len = header.total_len() - len;
            let around = self.buf.split_to(around_len).freeze();
            if around_len > KEEP_READ_BUFFER {
                self.release_large_buffer();
            }
            return Message::from_split_frame(around, &header, offset, Bytes::from(buf))
                .map_err(|e| Error::Protocol(e.to_string()));
        }
        self.bulk = Bulk::Unknown;
        let len = header.total_len();
        let msg = if self.hand_off && len == self.buf.len() && len <= COPY_OUT {
            let whole = Bytes::copy_from_slice(&self.buf);
            self.buf.clear();
            Message::from_frame(whole, &header)
        } else {
            Message::parse(&mut self.buf, &header)
        }
        .map_err(|e| Error::Protocol(e.to_string()))?;
        if len > KEEP_READ_BUFFER {
            self.release_large_buffer();
        }
        Ok(msg)
    }

    /// Makes room for the next read.
    ///
    /// The buffer grows only as a message's bytes arrive, but by up to three times what has
    /// arrived (at least `READ_CHUNK`), so a large message is copied by few reallocations,
    /// while a peer that announces a large message and sends little makes the daemon reserve
    /// at most four times what it sent.
    ///
    /// (Steps planned back from the message's size, a quarter of it, a sixteenth..., which
    /// would copy a third of the message where these copy up to two thirds, measured worse:
    /// glibc's `realloc` grows some of these steps in place.)
    #[inline]
    fn reserve(&mut self) {
        let buffered = self.buf.len();
        let reserve = match self.missing() {
            Some(missing) => missing.min(READ_CHUNK.max(buffered.saturating_mul(3))),
            None => self.read_size,
        };
        self.buf.reserve(reserve.max(self.read_size));
    }

    /// The error for a message that took longer than `allowed` since its first byte.
    fn too_slow(&self, allowed: Duration) -> Error {
        let received = self.received();
        let rate = match self.min_read_rate {
            Some(rate) => format!(" plus {received} bytes at min_read_rate {rate} bytes/s"),
            None => String::new(),
        };
        let total = match self.missing() {
            Some(missing) => format!(" of {}", received + missing),
            None => String::new(),
        };
        Error::Protocol(format!(
            "message not complete {allowed:?} after its first byte (frame_timeout{rate}); {received}{total} bytes received"
        ))
    }

    /// The end of the stream: clean between messages, an error within one.
    fn ended(&self) -> Result<Option<Message>, Error> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        Err(Error::ConnectionClosed(format!(
            "peer closed the connection in the middle of a message ({} bytes buffered)",
            self.buf.len()
        )))
    }
}

/// Payloads at least this large are written from their own buffer instead of being copied
/// into the write buffer.
const LARGE_PAYLOAD: usize = 64 * 1024;
/// A new connection's write buffer (an allocation glibc's per-thread cache serves).
const FIRST_WRITE: usize = 1024;
/// A write buffer that grew past this is released after it is flushed.
pub(crate) const KEEP_WRITE_BUFFER: usize = 1024 * 1024;

/// How long writing a batch of messages may take; see [`FrameWriter::flush_within`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteDeadline {
    /// Longest time the peer may take no byte at all (`write_timeout`).
    pub stall: Option<Duration>,
    /// Slowest average rate, in bytes per second, at which the peer may take a batch
    /// (`min_write_rate`): a batch of `n` bytes must be written within `stall + n / min_rate`.
    pub min_rate: Option<u64>,
}

impl WriteDeadline {
    /// When a batch of `total` bytes started at `started` must be written, if there is a rate.
    fn finish_by(
        &self,
        started: tokio::time::Instant,
        total: usize,
    ) -> Option<tokio::time::Instant> {
        let rate = self.min_rate?.max(1);
        let transfer = Duration::from_secs_f64(total as f64 / rate as f64);
        let allowed = self.stall.unwrap_or_default().saturating_add(transfer);
        started.checked_add(allowed)
    }

    /// Runs one write (or flush) under both limits.
    async fn run<T>(
        &self,
        io: impl std::future::Future<Output = T>,
        finish_by: Option<tokio::time::Instant>,
        written: usize,
        total: usize,
        started: tokio::time::Instant,
    ) -> Result<T, Error> {
        let stall_at = self
            .stall
            .and_then(|limit| tokio::time::Instant::now().checked_add(limit));
        let at = match (stall_at, finish_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(at) = at else { return Ok(io.await) };
        match tokio::time::timeout_at(at, io).await {
            Ok(done) => Ok(done),
            Err(_) if Some(at) == finish_by && finish_by != stall_at => Err(Error::Protocol(format!(
                "peer took our data slower than min_write_rate ({} bytes/s): {written} of {total} bytes in {:?}; closing",
                self.min_rate.unwrap_or_default(),
                started.elapsed()
            ))),
            Err(_) => Err(Error::Protocol(format!(
                "peer took none of our data for {:?} (write_timeout); closing",
                self.stall.unwrap_or_default()
            ))),
        }
    }
}

/// How long [`FrameWriter::shutdown`] may take.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes messages to the write half of a stream.
pub struct FrameWriter<W> {
    wr: W,
    /// Small messages and headers, coalesced into one write.
    buf: BytesMut,
    /// What to write, in order, once `buf` is full of small messages or a large payload comes.
    chunks: Vec<Bytes>,
    /// The buffer grew past [`KEEP_WRITE_BUFFER`] and a write that took only part of it left
    /// it to the next flush, which lets it go (after writing, `capacity` counts only what lies
    /// past the bytes written, though the whole allocation stays).
    grown: bool,
    /// The protocol messages are encoded in.
    protocol: Protocol,
}

impl<W> std::fmt::Debug for FrameWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("buffered", &self.buf.len())
            .field("chunks", &self.chunks.len())
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps `wr`, writing Pyro5.
    pub fn new(wr: W) -> Self {
        FrameWriter {
            wr,
            // Room for a handshake and a first call or two at once: grown from nothing, the
            // buffer was reallocated by the second message a connection wrote.
            buf: BytesMut::with_capacity(FIRST_WRITE),
            chunks: Vec::new(),
            grown: false,
            protocol: Protocol::Pyro5,
        }
    }

    /// Writes later messages in `protocol` (a daemon answers in its client's).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Queues `msg` without writing it yet. Small messages are coalesced; a large payload is
    /// queued by reference, not copied.
    pub fn queue(&mut self, msg: &Message) {
        if msg.payload_len() >= LARGE_PAYLOAD {
            self.protocol.encode_head(msg, &mut self.buf);
            if msg.payload.len() >= LARGE_PAYLOAD {
                self.chunks.push(self.buf.split().freeze());
                self.chunks.push(msg.payload.clone());
            } else {
                self.buf.extend_from_slice(&msg.payload);
            }
            for piece in &msg.payload_tail {
                if piece.len() >= LARGE_PAYLOAD {
                    if !self.buf.is_empty() {
                        self.chunks.push(self.buf.split().freeze());
                    }
                    self.chunks.push(piece.clone());
                } else {
                    self.buf.extend_from_slice(piece);
                }
            }
        } else {
            self.protocol.encode(msg, &mut self.buf);
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.flush_within(WriteDeadline::default()).await
    }

    /// Writes everything queued within `deadline`: it fails when the peer takes no byte for
    /// `stall`, or takes the whole batch slower than `min_rate` (so a peer reading a trickle
    /// cannot hold a connection, or the replies queued for it, for ever).
    ///
    /// When it fails (or is dropped before it is done), what was not written stays queued, and
    /// a later flush writes it first: no message is ever cut short on the wire by a retry.
    /// rmi's own connections close on a failed flush.
    pub async fn flush_within(&mut self, deadline: WriteDeadline) -> Result<(), Error> {
        let total = self.chunks.iter().map(Bytes::len).sum::<usize>() + self.buf.len();
        let started = tokio::time::Instant::now();
        let finish_by = deadline.finish_by(started, total);
        let mut written = 0;
        // The large payloads queued by reference (each behind the small messages queued before
        // it), then the small messages queued since, written from the buffer itself: neither
        // the buffer nor the list is given up, so a flush allocates nothing (splitting the
        // buffer off and taking the list cost two allocations a flush: one of each per
        // connect, one per batch the writer task writes).
        let FrameWriter {
            wr,
            buf,
            chunks,
            grown,
            ..
        } = self;
        // (Looked at before the writes: written bytes are advanced past, not counted.)
        *grown |= buf.capacity() > KEEP_WRITE_BUFFER;
        let mut next = 0;
        loop {
            let piece: &[u8] = match chunks.get(next) {
                Some(chunk) if chunk.is_empty() => {
                    next += 1;
                    continue;
                }
                Some(chunk) => chunk,
                None if buf.is_empty() => break,
                None => buf,
            };
            let n = deadline
                .run(wr.write(piece), finish_by, written, total, started)
                .await?
                .map_err(|e| Error::io("writing to the connection", e))?;
            if n == 0 {
                return Err(Error::ConnectionClosed(
                    "the peer stopped accepting data".into(),
                ));
            }
            match chunks.get_mut(next) {
                Some(chunk) => chunk.advance(n),
                None => buf.advance(n),
            }
            written += n;
        }
        chunks.clear();
        if std::mem::take(grown) {
            *buf = BytesMut::new();
        }
        deadline
            .run(self.wr.flush(), finish_by, written, total, started)
            .await?
            .map_err(|e| Error::io("flushing the connection", e))
    }

    /// Writes one message.
    pub async fn write_frame(&mut self, msg: &Message) -> Result<(), Error> {
        self.queue(msg);
        self.flush().await
    }

    /// Closes the write direction (sends FIN on TCP), giving up after [`SHUTDOWN_TIMEOUT`]:
    /// over TLS this writes a close_notify, which a peer that stopped reading would hold
    /// forever, and with it the connection's task and its `max_connections` slot. Given up,
    /// the stream is closed when it is dropped.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.wr.shutdown()).await;
    }
}

/// A message for an [`outbox()`], with what to release once it is on the socket.
#[derive(Debug)]
pub struct Outgoing {
    /// The message.
    pub msg: Message,
    /// Told when the message has been written (oneway calls return then).
    pub flushed: Option<tokio::sync::oneshot::Sender<()>>,
    /// `Some(bytes)`: the message holds one in-flight slot and `bytes` queued bytes of the
    /// outbox's [`Budget`](outbox::Budget), which the outbox gives back once the message is
    /// written, or refused or dropped by a writer that failed. (A message dropped any other way
    /// keeps its counts: only a connection that is going away drops one.) A `u32`, as a
    /// message's length on the wire is: with the ticket beside it, an `Outgoing` stays the
    /// size it was, which its several moves per call feel (a larger one is moved by `memcpy`).
    pub counted: Option<u32>,
    /// Non-zero: what [`Sender::withdraw`](outbox::Sender::withdraw) knows the message by (a
    /// number its sender makes unique among the outbox's messages).
    pub ticket: u64,
    /// When the caller of a request with a deadline annotation stops waiting: the outbox
    /// rewrites the annotation with the time left then, as it writes the message, so that
    /// time spent queued (behind a large write, or a peer that stopped reading) is not given
    /// to the daemon again.
    pub deadline: Option<tokio::time::Instant>,
}

impl From<Message> for Outgoing {
    fn from(msg: Message) -> Self {
        Outgoing {
            msg,
            flushed: None,
            counted: None,
            ticket: 0,
            deadline: None,
        }
    }
}

/// Bytes held for a connection against a budget: messages queued for its writer and not yet
/// written (and, on a daemon, the requests of its calls that wait); whoever produces them can
/// wait until they drain to the budget.
#[derive(Debug)]
pub struct QueuedBytes {
    bytes: std::sync::atomic::AtomicUsize,
    /// The budget: waiters are woken when the queued bytes fall back to it.
    max: usize,
    drained: tokio::sync::Notify,
}

impl QueuedBytes {
    /// Queued bytes counted against a budget of `max`.
    pub fn new(max: usize) -> Self {
        QueuedBytes {
            bytes: std::sync::atomic::AtomicUsize::new(0),
            max,
            drained: tokio::sync::Notify::new(),
        }
    }

    /// True while the queued bytes are over the budget.
    pub fn over_budget(&self) -> bool {
        self.get() > self.max
    }

    /// Counts `n` more bytes as queued (until [`release`](Self::release)d).
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Counts `n` bytes [`add`](Self::add)ed before as no longer queued.
    pub fn release(&self, n: usize) {
        let before = self.bytes.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
        // Only a release that brings the queue back within budget can free a waiter: the
        // common case (never over budget) takes no lock.
        if before > self.max && before - n <= self.max {
            self.drained.notify_waiters();
        }
    }

    /// Bytes queued now.
    pub fn get(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until the queued bytes are within the budget.
    pub async fn wait_within_budget(&self) {
        while self.over_budget() {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if !self.over_budget() {
                return;
            }
            drained.await;
        }
    }
}

/// Splits a boxed stream into a frame reader and a frame writer, a TCP or Unix stream by its
/// own halves, which need no lock (see [`IoReadHalf`]); what a daemon and a proxy do with
/// every connection.
pub fn split_io(
    stream: BoxIo,
    max_message_size: usize,
) -> (FrameReader<IoReadHalf>, FrameWriter<IoWriteHalf>) {
    let (rd, wr) = halves::halves(stream);
    (FrameReader::new(rd, max_message_size), FrameWriter::new(wr))
}

/// Splits a stream into a frame reader and a frame writer.
pub fn split<S: Io>(
    stream: S,
    max_message_size: usize,
) -> (FrameReader<ReadHalf<S>>, FrameWriter<WriteHalf<S>>) {
    let (rd, wr) = tokio::io::split(stream);
    (FrameReader::new(rd, max_message_size), FrameWriter::new(wr))
}

/// The IP address of the peer at the other end of `io`: a TCP stream's, under TLS or not;
/// `None` for a Unix socket or any other stream.
pub(crate) fn peer_ip(io: &BoxIo) -> Option<std::net::IpAddr> {
    let any: &dyn std::any::Any = &**io;
    if let Some(tcp) = any.downcast_ref::<tokio::net::TcpStream>() {
        return tcp.peer_addr().ok().map(|a| a.ip());
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = any.downcast_ref::<tokio_rustls::client::TlsStream<BoxIo>>() {
        return peer_ip(tls.get_ref().0);
    }
    None
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
        .map_err(|e| {
            // A plaintext daemon reads the TLS hello as a bad Pyro message and closes; a TLS
            // daemon at its `max_connections` closes before TLS too (its refusal, a Pyro
            // message, could not be read here anyway).
            let context = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                format!("TLS handshake with {location}: the daemon closed the connection; it may not serve TLS (connect without TLS then), or it refused the connection before TLS (at its max_connections, say)")
            } else {
                format!("TLS handshake with {location}")
            };
            Error::io(context, e)
        })?;
    Ok(Box::new(tls))
}

/// Whether `e` is a TLS certificate refused: the daemon's, by this side's verifier, or this
/// side's (or its absence), by the daemon's alert. Dialing again would be refused again.
pub(crate) fn is_certificate_refusal(e: &Error) -> bool {
    #[cfg(feature = "tls")]
    if let Error::Io { source, .. } = e.cause() {
        use rustls::AlertDescription as Alert;
        return source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|tls| {
                matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented
                        | rustls::Error::AlertReceived(
                            Alert::BadCertificate
                                | Alert::UnsupportedCertificate
                                | Alert::CertificateRevoked
                                | Alert::CertificateExpired
                                | Alert::CertificateUnknown
                                | Alert::UnknownCA
                                | Alert::CertificateRequired
                                | Alert::AccessDenied
                        )
                )
            });
    }
    let _ = e;
    false
}

/// Sets a TCP connection's options, on either side: no Nagle delay, and keep-alive, as Pyro's
/// sockets have it, so that a peer gone without a word (a host powered off, a NAT that forgot
/// the connection) is found dead by the system in time, even by a call with no deadline.
pub(crate) fn tune(stream: &tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(stream).set_keepalive(true);
}

/// Dials `location` within `timeout`.
pub async fn dial(location: &Location, timeout: Duration) -> Result<BoxIo, Error> {
    tokio::time::timeout(timeout, dial_unbounded(location))
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

/// Dials `location` with no time limit of its own, for a caller that bounds a larger whole
/// (the proxy's dial and handshake, under one connect deadline). A second timer would cost a
/// connect a timer registration and, often, a wake-up of the runtime's driver (a system call).
pub(crate) async fn dial_unbounded(location: &Location) -> Result<BoxIo, Error> {
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
            tune(&stream);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::HEADER_SIZE;
    use std::io;
    use std::pin::Pin;

    fn message(seq: u16, len: usize) -> Message {
        let mut msg = Message::new(MessageType::Result, 0, 0, seq, vec![seq as u8; len]);
        msg.annotations
            .push((*b"TEST", Bytes::from_static(b"note")));
        msg
    }

    #[tokio::test]
    async fn a_small_message_read_after_a_large_one_does_not_keep_the_large_ones_buffer() {
        let (mut peer, theirs) = tokio::io::duplex(4 << 20);
        let mut reader = FrameReader::new(theirs, 64 << 20);
        // 400 KB: the buffer grows to ~526 KB for it, so the small message, read in the same
        // read, lands behind it in that allocation.
        let big = message(1, 400_000);
        let small = message(2, 100);
        let mut wire = big.to_bytes().to_vec();
        wire.extend_from_slice(&small.to_bytes());
        peer.write_all(&wire).await.unwrap();
        let first = reader.read_frame().await.unwrap().unwrap();
        assert!(intact(&first, 1, 400_000));
        let second = reader.read_frame().await.unwrap().unwrap();
        assert!(intact(&second, 2, 100));
        // Zero-copy, the small one would lie right behind the large one, in its allocation
        // (alive, held by `first`, and larger than this range): a copy cannot.
        let start = first.payload.as_ptr() as usize;
        let behind = start..start + 400_000 + 64 * 1024;
        assert!(
            !behind.contains(&(second.payload.as_ptr() as usize)),
            "the small message pins the large one's buffer"
        );
        // Small messages in a small buffer stay zero-copy.
        let mut wire = message(3, 100).to_bytes().to_vec();
        wire.extend_from_slice(&message(4, 100).to_bytes());
        let (mut peer, theirs) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(theirs, 64 << 20);
        peer.write_all(&wire).await.unwrap();
        let third = reader.read_frame().await.unwrap().unwrap();
        let fourth = reader.read_frame().await.unwrap().unwrap();
        assert!(intact(&fourth, 4, 100));
        let start = third.payload.as_ptr() as usize;
        assert!((start..start + 4096).contains(&(fourth.payload.as_ptr() as usize)));
    }

    fn intact(msg: &Message, seq: u16, len: usize) -> bool {
        msg.seq == seq
            && msg.payload[..] == vec![seq as u8; len][..]
            && msg.annotation(b"TEST").map(|v| &v[..]) == Some(&b"note"[..])
    }

    /// A stream whose peer stopped reading, as a TLS stream is to a close_notify that does
    /// not fit: every write and the shutdown wait forever.
    struct Stalled;

    impl AsyncWrite for Stalled {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_shutdown_the_peer_never_takes_is_given_up_after_the_shutdown_timeout() {
        let mut writer = FrameWriter::new(Stalled);
        let started = std::time::Instant::now();
        tokio::time::timeout(SHUTDOWN_TIMEOUT * 10, writer.shutdown())
            .await
            .expect("shutdown returned");
        assert!(started.elapsed() >= SHUTDOWN_TIMEOUT);
    }

    #[tokio::test]
    async fn a_write_buffer_grown_past_a_mebibyte_is_let_go_once_flushed_and_small_ones_kept() {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let mut writer = FrameWriter::new(ours);
        let mut reader = FrameReader::new(theirs, 64 << 20);
        // Small messages (each below the size written by reference), 2.4 MB of them.
        for seq in 0..40 {
            writer.queue(&message(seq, 60_000));
        }
        assert!(writer.buf.capacity() > KEEP_WRITE_BUFFER);
        let read = async {
            for seq in 0..40 {
                let msg = reader.read_frame().await.unwrap().unwrap();
                assert!(intact(&msg, seq, 60_000));
            }
        };
        let (flushed, ()) = tokio::join!(writer.flush(), read);
        flushed.unwrap();
        assert_eq!(writer.buf.capacity(), 0, "a large write buffer is let go");
        // A small batch: its buffer stays for the next.
        writer.queue(&message(40, 100));
        let kept = writer.buf.capacity();
        writer.flush().await.unwrap();
        assert!(intact(
            &reader.read_frame().await.unwrap().unwrap(),
            40,
            100
        ));
        writer.queue(&message(41, 100));
        assert_eq!(writer.buf.capacity(), kept, "the small buffer is reused");
    }

    #[tokio::test]
    async fn a_connection_of_small_messages_keeps_a_small_buffer_until_a_read_fills_it() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(ours, 64 << 20);
        // One small message at a time, read as each arrives: 1 KiB is all the reader holds
        // (an idle connection's cost, and an allocation glibc's thread cache serves).
        for seq in 0..20 {
            peer.write_all(&message(seq, 100).to_bytes()).await.unwrap();
            let msg = reader.read_frame().await.unwrap().unwrap();
            assert!(intact(&msg, seq, 100));
            assert!(
                reader.buf.capacity() <= 1024,
                "{} bytes held for one small message at a time",
                reader.buf.capacity()
            );
        }
        // A burst larger than that: the first read fills the buffer, and the reads after it
        // take full-size ones.
        let burst: Vec<u8> = (20..60)
            .flat_map(|seq| message(seq, 100).to_bytes().to_vec())
            .collect();
        peer.write_all(&burst).await.unwrap();
        for seq in 20..60 {
            let msg = reader.read_frame().await.unwrap().unwrap();
            assert!(intact(&msg, seq, 100));
        }
        assert_eq!(reader.read_size, MIN_READ);
        reader.reserve();
        assert!(reader.buf.capacity() - reader.buf.len() >= MIN_READ);
    }

    #[tokio::test]
    async fn a_large_message_is_read_into_a_buffer_that_grows_only_as_its_bytes_arrive() {
        let (mut peer, ours) = tokio::io::duplex(8 << 20);
        let mut reader = FrameReader::new(ours, 64 << 20);
        let wire = message(1, 10_000_000).to_bytes();
        let mut sent = 0;
        let mut capacities = Vec::new();
        for piece in [100, 5_000, 60_000, 400_000, 3_000_000] {
            peer.write_all(&wire[sent..sent + piece]).await.unwrap();
            sent += piece;
            // Nothing whole yet: the read gives up, and the buffer holds what was sent.
            let read = tokio::time::timeout(Duration::from_millis(50), reader.read_frame()).await;
            assert!(read.is_err(), "a message is not whole after {sent} bytes");
            assert_eq!(reader.buf.len(), sent);
            let cap = reader.buf.capacity();
            // At most four times what was sent, or what was sent and a READ_CHUNK, with the
            // allocator's doubling on top.
            let bound = 2 * (4 * sent).max(sent + READ_CHUNK);
            assert!(cap <= bound, "{cap} bytes reserved after {sent} sent");
            capacities.push(cap);
        }
        peer.write_all(&wire[sent..]).await.unwrap();
        let msg = reader.read_frame().await.unwrap().unwrap();
        assert!(intact(&msg, 1, 10_000_000));
        assert!(
            capacities.windows(2).all(|w| w[0] <= w[1]),
            "{capacities:?}"
        );
    }

    #[tokio::test]
    async fn a_reader_that_hands_messages_off_reuses_its_buffer_while_they_live() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(ours, 1 << 20);
        reader.hand_messages_off();
        let mut kept = Vec::new();
        let mut buffers = std::collections::HashSet::new();
        for seq in 1..=20 {
            peer.write_all(&message(seq, 60).to_bytes()).await.unwrap();
            kept.push(reader.read_frame().await.unwrap().unwrap());
            buffers.insert(reader.buf.as_ptr() as usize - reader.buf.len());
        }
        // Every lone reply was copied out of the one buffer, which stayed the reader's.
        assert_eq!(buffers.len(), 1);
        for (seq, msg) in (1..).zip(&kept) {
            assert!(intact(msg, seq, 60), "message {seq} changed");
        }
    }

    #[tokio::test]
    async fn messages_read_together_or_large_are_whole_when_handed_off() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(ours, 1 << 20);
        reader.hand_messages_off();
        // Three in one read (the first two split off, the last copied), then one larger than
        // what is copied.
        let mut batch = Vec::new();
        for seq in 1..=3 {
            batch.extend_from_slice(&message(seq, 100).to_bytes());
        }
        batch.extend_from_slice(&message(4, COPY_OUT * 2).to_bytes());
        peer.write_all(&batch).await.unwrap();
        let mut kept = Vec::new();
        for _ in 1..=4 {
            kept.push(reader.read_frame().await.unwrap().unwrap());
        }
        for (seq, msg) in (1..).zip(&kept[..3]) {
            assert!(intact(msg, seq, 100), "message {seq} changed");
        }
        assert!(intact(&kept[3], 4, COPY_OUT * 2));
    }

    #[tokio::test]
    async fn messages_arriving_in_pieces_are_read_whole_and_in_order() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(ours, 1 << 20);
        let (first, second) = (message(1, 300).to_bytes(), message(2, 500).to_bytes());
        // The first's header and part of its body; then the rest of it with the second's
        // header; then the rest of the second.
        let (a, b) = first.split_at(100);
        let (c, d) = second.split_at(40);
        peer.write_all(a).await.unwrap();
        tokio::task::yield_now().await;
        let got = tokio::time::timeout(Duration::from_millis(50), reader.read_frame()).await;
        assert!(got.is_err(), "a partial message was returned");
        assert!(!reader.has_frame());
        peer.write_all(b).await.unwrap();
        peer.write_all(c).await.unwrap();
        assert!(intact(&reader.read_frame().await.unwrap().unwrap(), 1, 300));
        assert!(!reader.has_frame(), "the second message is not whole yet");
        peer.write_all(d).await.unwrap();
        assert!(intact(&reader.read_frame().await.unwrap().unwrap(), 2, 500));
        assert!(!reader.has_frame());
    }

    /// A bincode INVOKE announcing its `big` bytes between `head` and `after` (as a proxy
    /// sends a large `Vec<u8>` argument), and its encoding.
    fn announced(seq: u16, head: usize, big: usize, after: usize) -> (Message, Bytes) {
        let fill = |n: usize, k: u8| {
            (0..n)
                .map(|i| (i as u8).wrapping_mul(k))
                .collect::<Vec<_>>()
        };
        let mut msg = Message::new(
            MessageType::Invoke,
            Serializer::BINCODE_ID,
            0,
            seq,
            fill(head, 3),
        );
        msg.payload_tail = vec![Bytes::from(fill(big, 5)), Bytes::from(fill(after, 7))];
        msg.annotations
            .push((*b"TEST", Bytes::from_static(b"note")));
        msg.announce_bulk();
        let wire = msg.to_bytes();
        (msg, wire)
    }

    #[tokio::test]
    async fn an_announced_byte_string_arrives_in_a_buffer_of_its_own_however_reads_cut_it() {
        let (sent, wire) = announced(1, 100, 300_000, 50);
        let (_, next) = announced(2, 10, 70_000, 0);
        let both = [&wire[..], &next[..]].concat();
        // Everything at once; in 1,000-byte pieces; cut in the string's first bytes and at
        // the boundaries of its piece.
        let start = wire.len() - 50 - 300_000;
        let cuts: [Vec<usize>; 4] = [
            vec![],
            (1_000..both.len()).step_by(1_000).collect(),
            vec![HEADER_SIZE + 3, start + 10, start + 299_999, wire.len() + 5],
            vec![start, start + 300_000, wire.len()],
        ];
        for cut in cuts {
            let (mut peer, ours) = tokio::io::duplex(1 << 20);
            let mut reader = FrameReader::new(ours, 64 << 20);
            reader.split_bulk(MessageType::Invoke);
            let mut from = 0;
            let both = both.clone();
            let writer = tokio::spawn(async move {
                for to in cut.into_iter().chain([both.len()]) {
                    peer.write_all(&both[from..to]).await.unwrap();
                    from = to;
                    tokio::task::yield_now().await;
                }
                peer
            });
            let msg = reader.read_frame().await.unwrap().unwrap();
            assert_eq!(msg.payload, sent.payload);
            assert_eq!(
                msg.payload_tail, sent.payload_tail,
                "the string, then the rest"
            );
            assert_eq!(msg.annotation(b"TEST").map(|v| &v[..]), Some(&b"note"[..]));
            let second = reader.read_frame().await.unwrap().unwrap();
            assert_eq!((second.seq, second.payload_len()), (2, 70_010));
            assert_eq!(second.payload_tail.len(), 1, "nothing after its string");
            drop(writer.await.unwrap());
            assert!(reader.read_frame().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn an_announced_string_grows_its_buffer_only_as_its_bytes_arrive() {
        // The string right after the annotations; and announced 30 MB ahead of the bytes
        // sent, whose reservation must not run ahead of them either.
        for (head, big) in [(100, 10_000_000), (30_000_000, 1_000_000)] {
            let (_, wire) = announced(1, head, big, 0);
            let (mut peer, ours) = tokio::io::duplex(8 << 20);
            let mut reader = FrameReader::new(ours, 64 << 20);
            reader.split_bulk(MessageType::Invoke);
            let mut sent = 0;
            for piece in [200, 5_000, 60_000, 400_000, 3_000_000] {
                peer.write_all(&wire[sent..sent + piece]).await.unwrap();
                sent += piece;
                let read =
                    tokio::time::timeout(Duration::from_millis(50), reader.read_frame()).await;
                assert!(read.is_err(), "a message is not whole after {sent} bytes");
                let Bulk::Reading { buf, .. } = &reader.bulk else {
                    panic!("the string is read apart");
                };
                assert_eq!(reader.buf.len() + buf.len(), sent);
                // Both buffers together: within the read buffer's rule (and an allocator's
                // rounding).
                let reserved = reader.buf.capacity() + buf.capacity();
                let bound = (4 * sent).max(sent + READ_CHUNK) + 2 * MIN_READ;
                assert!(
                    reserved <= bound,
                    "{reserved} bytes reserved after {sent} sent ({head} before the string)"
                );
            }
            // The rest is larger than the pipe: write it while the reader reads.
            let (written, msg) = tokio::join!(peer.write_all(&wire[sent..]), reader.read_frame());
            written.unwrap();
            let msg = msg.unwrap().unwrap();
            assert_eq!(msg.payload_tail[0].len(), big);
            assert_eq!(msg.payload.len(), head);
            drop(peer);
            assert!(reader.read_frame().await.unwrap().is_none());
            assert!(
                reader.buf.capacity() <= KEEP_READ_BUFFER,
                "a large message's read buffer is let go ({} kept)",
                reader.buf.capacity()
            );
        }
    }

    #[tokio::test]
    async fn an_announcement_that_is_not_asked_for_or_does_not_fit_leaves_the_message_whole() {
        let (sent, wire) = announced(1, 100, 100_000, 20);
        let whole = {
            let mut m = sent.clone();
            m.join_payload();
            m.payload
        };
        let mut lying = sent.clone();
        lying
            .annotations
            .retain(|(id, _)| *id != crate::protocol::names::BULK_ANNOTATION);
        let mut beyond = [0u8; 8];
        beyond[..4].copy_from_slice(&100u32.to_be_bytes());
        beyond[4..].copy_from_slice(&100_021u32.to_be_bytes());
        lying.annotations.push((
            crate::protocol::names::BULK_ANNOTATION,
            Bytes::copy_from_slice(&beyond),
        ));
        let mut serpent = sent.clone();
        serpent.serializer = Serializer::SERPENT_ID;
        // Not asked for; past the payload's end; not bincode; another message type.
        for (split, wire) in [
            (Some(MessageType::Invoke), lying.to_bytes()),
            (None, wire.clone()),
            (Some(MessageType::Invoke), serpent.to_bytes()),
            (Some(MessageType::Result), wire),
        ] {
            let (mut peer, ours) = tokio::io::duplex(1 << 20);
            let mut reader = FrameReader::new(ours, 64 << 20);
            if let Some(t) = split {
                reader.split_bulk(t);
            }
            // In two writes, so the reader looks before the message is whole.
            peer.write_all(&wire[..2_000]).await.unwrap();
            let early = tokio::time::timeout(Duration::from_millis(20), reader.read_frame()).await;
            assert!(early.is_err());
            peer.write_all(&wire[2_000..]).await.unwrap();
            let msg = reader.read_frame().await.unwrap().unwrap();
            assert!(msg.payload_tail.is_empty(), "{split:?}");
            assert_eq!(msg.payload, whole);
        }
    }

    /// Sends `wire` in pieces of `piece` bytes, one every `every` (on the test clock), to a
    /// reader with a 200 ms frame timeout and a minimum read rate of 1 MiB/s, splitting its
    /// announced byte string or not; what the reader's read gives.
    async fn read_sent_at(
        wire: Bytes,
        piece: usize,
        every: Duration,
        split: bool,
    ) -> Result<Option<Message>, Error> {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(ours, 64 << 20);
        reader.set_frame_timeout(Some(Duration::from_millis(200)));
        reader.set_min_read_rate(Some(1 << 20));
        if split {
            reader.split_bulk(MessageType::Invoke);
        }
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(piece) {
                if peer.write_all(chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
            std::future::pending::<()>().await;
        });
        let read = reader.read_frame().await;
        writer.abort();
        read
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_arriving_above_the_minimum_read_rate_may_take_longer_than_the_frame_timeout()
    {
        // 2 MB at 50 KB every 20 ms (2.5 MB/s, 0.8 s in all, four times the frame timeout):
        // read whole, whether its byte string is read into a buffer of its own or not (the
        // bytes received count in both).
        let (sent, wire) = announced(1, 100, 2_000_000, 0);
        for split in [true, false] {
            let msg = read_sent_at(wire.clone(), 50_000, Duration::from_millis(20), split)
                .await
                .unwrap_or_else(|e| panic!("split {split}: {e}"))
                .unwrap();
            assert_eq!(msg.payload_len(), sent.payload_len());
        }
        // At 5 KB every 50 ms (100 KB/s, a tenth of the rate) it is cut off soon after the
        // frame timeout, by an error that names both settings and what had arrived.
        for split in [true, false] {
            let started = tokio::time::Instant::now();
            let err = read_sent_at(wire.clone(), 5_000, Duration::from_millis(50), split)
                .await
                .unwrap_err();
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(200) && took < Duration::from_millis(300),
                "split {split}: cut off after {took:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("(frame_timeout plus 25000 bytes at min_read_rate 1048576 bytes/s)")
                    && text.contains("25000 of 2000168 bytes received"),
                "split {split}: {text}"
            );
        }
    }
}
