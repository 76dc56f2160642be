//! One Pyro message, whichever protocol carries it: the header, annotations and payload; check,
//! parse and encode, for Pyro5 (protocol 502, module `pyro5`) and Pyro4 (protocol 48, `pyro4`).
//!
//! Decoding runs in two steps, as in mini-redis: [`check`] looks at the buffered bytes and says
//! whether a whole message is there (validating the header and both lengths against the
//! configured maximum before anything is allocated), then [`Message::parse`] builds it.
//!
//! [`Message`] is the one currency of both protocols. Its flags use Pyro5's bits; a Pyro4 frame
//! is translated on the way in and out (Pyro4's ITEMSTREAMRESULT 0x20 is [`FLAGS_ITEMSTREAMRESULT`],
//! its META_ON_CONNECT 0x10 is [`FLAGS_META_ON_CONNECT`], and its `CORR` annotation is the
//! message's `corr_id`). The serializer id stays the wire's: [`Protocol::serializer`] names it.

mod pyro4;
mod pyro5;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codec::Serializer;
use super::names::BULK_ANNOTATION;

/// Length of the fixed Pyro5 header.
pub const HEADER_SIZE: usize = pyro5::HEADER_SIZE;
/// Length of the fixed Pyro4 header.
pub const PYRO4_HEADER_SIZE: usize = pyro4::HEADER_SIZE;
/// Payloads larger than this are compressed when compression is on (Pyro5's threshold).
pub const COMPRESS_ABOVE: usize = 100;
/// Length of a Pyro5 annotation chunk's own header: a 4-byte id and a u32 length (Pyro4's
/// chunks have a u16 length, so this bounds both).
pub const ANNOTATION_HEADER_SIZE: usize = 8;
/// Protocol version spoken by Pyro5.
pub const PROTOCOL_VERSION: u16 = pyro5::VERSION;
/// Protocol version spoken by Pyro4.
pub const PYRO4_PROTOCOL_VERSION: u16 = pyro4::VERSION;
/// Magic number at offset 0x26 of a Pyro5 header.
pub const MAGIC: u16 = pyro5::MAGIC;
/// Serializer id Pyro uses for `MSG_PING` (nothing is serialized).
pub const PING_SERIALIZER: u8 = 42;

/// Flag: the payload is a serialized exception.
pub const FLAGS_EXCEPTION: u16 = 0x0001;
/// Flag: the payload is zlib-compressed.
pub const FLAGS_COMPRESSED: u16 = 0x0002;
/// Flag: the caller wants no reply.
pub const FLAGS_ONEWAY: u16 = 0x0004;
/// Flag: a batched call or batched results.
pub const FLAGS_BATCH: u16 = 0x0008;
/// Flag: the result is a remote item stream.
pub const FLAGS_ITEMSTREAMRESULT: u16 = 0x0010;
/// Flag: a `SerializedBlob` call.
pub const FLAGS_KEEPSERIALIZED: u16 = 0x0020;
/// Flag: the header's correlation id field is valid.
pub const FLAGS_CORR_ID: u16 = 0x0040;
/// A fresh random (version 4) correlation id, for a call that was given none.
///
/// Drawn from a per-thread non-cryptographic generator: an id only ties a call's log lines
/// and spans together at both ends, it grants nothing, and a generator for secrets (what
/// `Uuid::new_v4` uses) costs about ten times as much, on every call.
pub(crate) fn new_correlation_id() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

/// Flag: Pyro4's META_ON_CONNECT (0x10 on a protocol 48 wire): the CONNECT asks for, and the
/// CONNECTOK carries, the object's metadata. A bit Pyro5 does not define; only Pyro4 frames
/// set it.
pub const FLAGS_META_ON_CONNECT: u16 = 0x0100;

/// The wire protocol of a connection, chosen by its first header's version field: every later
/// message on the connection must use it, and replies are written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// Pyro5, protocol 502: the 40-byte header. What rmi's own proxies speak.
    #[default]
    Pyro5,
    /// Pyro4, protocol 48: the 24-byte header with a checksum, u16 annotation lengths, the
    /// correlation id as a `CORR` annotation, and Pyro4's serializer ids.
    Pyro4,
}

impl Protocol {
    /// The version number in the header.
    pub fn version(self) -> u16 {
        match self {
            Protocol::Pyro5 => pyro5::VERSION,
            Protocol::Pyro4 => pyro4::VERSION,
        }
    }

    /// Length of the fixed header.
    pub fn header_size(self) -> usize {
        match self {
            Protocol::Pyro5 => pyro5::HEADER_SIZE,
            Protocol::Pyro4 => pyro4::HEADER_SIZE,
        }
    }

    /// Length of an annotation chunk's own header (id and length).
    pub fn annotation_header_size(self) -> usize {
        match self {
            Protocol::Pyro5 => ANNOTATION_HEADER_SIZE,
            Protocol::Pyro4 => pyro4::ANNOTATION_HEADER_SIZE,
        }
    }

    /// The largest payload the header can declare.
    pub fn max_payload(self) -> usize {
        match self {
            Protocol::Pyro5 => u32::MAX as usize,
            Protocol::Pyro4 => i32::MAX as usize,
        }
    }

    /// The protocol a buffer's first header speaks, read from its tag and version field.
    /// `Err(Incomplete)` until those 6 bytes are there; a wrong tag or an unknown version is
    /// refused at once.
    pub fn detect(buf: &[u8]) -> Result<Protocol, Error> {
        check_tag(buf)?;
        if buf.len() < 6 {
            return Err(Error::Incomplete);
        }
        match u16::from_be_bytes([buf[4], buf[5]]) {
            pyro5::VERSION => Ok(Protocol::Pyro5),
            pyro4::VERSION => Ok(Protocol::Pyro4),
            other => Err(Error::BadVersion(other)),
        }
    }

    /// The serializer a header's id names in this protocol, if rmi supports it. The ids differ:
    /// msgpack is 4 in Pyro5 and 6 in Pyro4 (where 4 is pickle); json is 3 in Pyro5 and 2 in
    /// Pyro4; marshal is 2 in Pyro5 and 3 in Pyro4; serpent is 1 in both; rmi's bincode (98)
    /// is Pyro5-only.
    pub fn serializer(self, id: u8) -> Option<Serializer> {
        match self {
            Protocol::Pyro5 => Serializer::from_id(id),
            Protocol::Pyro4 => match id {
                Serializer::SERPENT_ID => Some(Serializer::Serpent),
                pyro4::MSGPACK_ID => Some(Serializer::MsgPack),
                pyro4::JSON_ID => Some(Serializer::Json),
                pyro4::MARSHAL_ID => Some(Serializer::Marshal),
                _ => None,
            },
        }
    }

    /// The id of `ser` in this protocol's headers.
    pub fn serializer_id(self, ser: Serializer) -> u8 {
        match (self, ser) {
            (Protocol::Pyro4, Serializer::MsgPack) => pyro4::MSGPACK_ID,
            (Protocol::Pyro4, Serializer::Json) => pyro4::JSON_ID,
            (Protocol::Pyro4, Serializer::Marshal) => pyro4::MARSHAL_ID,
            _ => ser.id(),
        }
    }

    /// The flags and correlation id of `msg` as its peer reads them in this protocol: what a
    /// MAC must sign. Pyro5 sets `FLAGS_CORR_ID` whenever there is a correlation id. Pyro4 has
    /// no such flag and keeps only the flags it defines; it carries the id as a `CORR`
    /// annotation, and not at all on exception replies, as Pyro4 does.
    pub fn as_received(self, msg: &Message) -> (u16, [u8; 16]) {
        let travels =
            msg.corr_id != [0; 16] && (self == Protocol::Pyro5 || !msg.has_flag(FLAGS_EXCEPTION));
        let flags = match self {
            Protocol::Pyro5 => msg.flags,
            Protocol::Pyro4 => pyro4::flags_as_received(msg.flags),
        };
        if travels {
            (flags | FLAGS_CORR_ID, msg.corr_id)
        } else {
            (flags & !FLAGS_CORR_ID, [0; 16])
        }
    }

    /// Whether the CONNECTOK to `connect` carries the object's metadata: always in Pyro5; in
    /// Pyro4 when the client asked (`FLAGS_META_ON_CONNECT`), else it is the bare answer.
    pub fn meta_on_connect(self, connect: &Message) -> bool {
        self == Protocol::Pyro5 || connect.has_flag(FLAGS_META_ON_CONNECT)
    }

    /// Parses and validates this protocol's header at the front of `buf`, refusing lengths
    /// above `max_size`.
    #[inline]
    pub fn parse_header(self, buf: &[u8], max_size: usize) -> Result<Header, Error> {
        match self {
            Protocol::Pyro5 => pyro5::parse_header(buf, max_size),
            Protocol::Pyro4 => pyro4::parse_header(buf, max_size),
        }
    }

    /// Checks whether `buf` starts with a complete, valid message of this protocol.
    pub fn check(self, buf: &[u8], max_size: usize) -> Result<Header, Error> {
        let header = self.parse_header(buf, max_size)?;
        if buf.len() < header.total_len() {
            return Err(Error::Incomplete);
        }
        Ok(header)
    }

    /// Appends `msg`, encoded in this protocol, to `buf`.
    pub fn encode(self, msg: &Message, buf: &mut BytesMut) {
        self.encode_head_with_room(msg, buf, msg.payload_len());
        buf.put_slice(&msg.payload);
        for piece in &msg.payload_tail {
            buf.put_slice(piece);
        }
    }

    /// Appends the header and annotations of `msg`, everything but the payload, to `buf`.
    pub fn encode_head(self, msg: &Message, buf: &mut BytesMut) {
        // No room for the payload: one written on its own must not make `buf` reserve it.
        self.encode_head_with_room(msg, buf, 0);
    }

    /// [`encode_head`](Self::encode_head), reserving `room` more bytes in the same growth.
    fn encode_head_with_room(self, msg: &Message, buf: &mut BytesMut, room: usize) {
        match self {
            Protocol::Pyro5 => pyro5::encode_head(msg, buf, room),
            Protocol::Pyro4 => pyro4::encode_head(msg, buf, room),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::Pyro5 => write!(f, "Pyro5 (protocol {})", pyro5::VERSION),
            Protocol::Pyro4 => write!(f, "Pyro4 (protocol {})", pyro4::VERSION),
        }
    }
}

/// Pyro message types (the same numbers in both protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client opens a connection to one object.
    Connect = 1,
    /// Server accepts the connection, with the object's metadata.
    ConnectOk = 2,
    /// Server refuses the connection; payload is the reason.
    ConnectFail = 3,
    /// A method call.
    Invoke = 4,
    /// The result (or exception) of a call.
    Result = 5,
    /// Liveness check; answered with the same type.
    Ping = 6,
}

impl MessageType {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Connect,
            2 => Self::ConnectOk,
            3 => Self::ConnectFail,
            4 => Self::Invoke,
            5 => Self::Result,
            6 => Self::Ping,
            _ => return None,
        })
    }
}

/// Why a byte buffer is not (yet) a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// More bytes are needed; not an error of the peer.
    #[error("incomplete message")]
    Incomplete,
    /// The first four bytes are not `PYRO`.
    #[error("{}", bad_tag(.0))]
    BadTag([u8; 4]),
    /// The protocol version is not the connection's (502 or 48 for a first message).
    #[error("unsupported protocol version {0} (expected {PROTOCOL_VERSION}, or Pyro4's {PYRO4_PROTOCOL_VERSION})")]
    BadVersion(u16),
    /// The magic number is wrong.
    #[error("invalid magic number {0:#06x} (expected {MAGIC:#06x})")]
    BadMagic(u16),
    /// A Pyro4 header whose checksum does not match its fields.
    #[error("header checksum mismatch: {found:#06x}, fields sum to {expected:#06x}")]
    BadChecksum {
        /// The checksum in the header.
        found: u16,
        /// The checksum of the header's fields.
        expected: u16,
    },
    /// The message type is unknown.
    #[error("unknown message type {0}")]
    BadType(u16),
    /// A Pyro4 header's serializer id does not fit a byte (no Pyro serializer has such an id).
    #[error("invalid serializer id {0}")]
    BadSerializer(u16),
    /// A Pyro4 header's data length is negative.
    #[error("invalid data length {0}")]
    BadLength(i32),
    /// The declared size is larger than the configured maximum.
    #[error("message of {size} bytes exceeds max_message_size ({max} bytes)")]
    TooLarge {
        /// Declared size of annotations plus payload.
        size: u64,
        /// The configured `max_message_size`.
        max: usize,
    },
    /// The annotation chunks do not add up to the declared annotation length.
    #[error("malformed annotations: {0}")]
    BadAnnotations(&'static str),
    /// A compressed payload (`FLAGS_COMPRESSED`) that is not valid zlib data, or that would
    /// decompress past `max_message_size`.
    #[error("could not decompress the payload: {0}")]
    Decompress(String),
}

/// What a wrong tag says: TLS records are named, since that is the usual mix-up.
fn bad_tag(tag: &[u8; 4]) -> String {
    // A TLS record starts with its content type (20 to 23) and major version 3.
    if (0x14..=0x17).contains(&tag[0]) && tag[1] == 0x03 {
        format!(
            "invalid message tag {tag:02x?}: this looks like TLS, not Pyro: the peer speaks TLS \
             where plaintext was expected; use TLS on both sides (DaemonBuilder::tls, \
             ProxyBuilder::tls) or on neither"
        )
    } else {
        format!("invalid message tag {tag:02x?} (expected \"PYRO\")")
    }
}

/// Refuses a buffer whose first bytes (as many as there are, up to 4) are not `PYRO`.
fn check_tag(buf: &[u8]) -> Result<(), Error> {
    let tag_len = buf.len().min(4);
    if buf[..tag_len] != b"PYRO"[..tag_len] {
        let mut tag = [0u8; 4];
        tag[..tag_len].copy_from_slice(&buf[..tag_len]);
        return Err(Error::BadTag(tag));
    }
    Ok(())
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol the header was written in.
    pub protocol: Protocol,
    /// Message type.
    pub msg_type: MessageType,
    /// Serializer id of the payload, as the protocol numbers it.
    pub serializer: u8,
    /// Flag bits (`FLAGS_*`, Pyro5's numbering; a Pyro4 header's are translated).
    pub flags: u16,
    /// Sequence number correlating a reply with its request.
    pub seq: u16,
    /// Payload length.
    pub data_len: u32,
    /// Total annotation length.
    pub ann_len: u32,
    /// Correlation id (valid when `FLAGS_CORR_ID` is set; a Pyro4 header has none, its `CORR`
    /// annotation is read with the message).
    pub corr_id: [u8; 16],
}

impl Header {
    /// Parses and validates the first [`HEADER_SIZE`] bytes of `buf` as a Pyro5 header, refusing
    /// lengths above `max_size`. (See [`Protocol::parse_header`] for either protocol.)
    pub fn parse(buf: &[u8], max_size: usize) -> Result<Header, Error> {
        pyro5::parse_header(buf, max_size)
    }

    /// Total message length including the header.
    pub fn total_len(&self) -> usize {
        self.protocol.header_size() + self.data_len as usize + self.ann_len as usize
    }

    /// Refuses a declared size above `max_size`.
    fn check_size(&self, max_size: usize) -> Result<(), Error> {
        let size = self.data_len as u64 + self.ann_len as u64;
        if size > max_size as u64 {
            return Err(Error::TooLarge {
                size,
                max: max_size,
            });
        }
        Ok(())
    }
}

/// Checks whether `buf` starts with a complete, valid Pyro5 message; returns its header.
///
/// `Err(Error::Incomplete)` means "read more"; any other error means the stream is not Pyro5 and
/// must be closed. [`check_any`] accepts either protocol.
pub fn check(buf: &[u8], max_size: usize) -> Result<Header, Error> {
    Protocol::Pyro5.check(buf, max_size)
}

/// Checks whether `buf` starts with a complete, valid message of either protocol (a
/// connection's first message); the header says which.
pub fn check_any(buf: &[u8], max_size: usize) -> Result<Header, Error> {
    Protocol::detect(buf)?.check(buf, max_size)
}

/// Where the [`BULK_ANNOTATION`] of a Pyro5 message puts its large byte string: its offset in
/// the payload and its length, when `annotations` (the message's annotation bytes, all of
/// them) carry one that fits the payload `header` declares and announces at least `min` bytes.
/// Anything else (no annotation, a malformed one, another protocol, a compressed payload) is
/// `None`: the message is read whole.
pub fn bulk_in(header: &Header, annotations: &[u8], min: usize) -> Option<(usize, usize)> {
    if header.protocol != Protocol::Pyro5 || header.flags & FLAGS_COMPRESSED != 0 {
        return None;
    }
    let mut rest = annotations;
    while rest.len() >= ANNOTATION_HEADER_SIZE {
        let (chunk, after) = rest.split_at(ANNOTATION_HEADER_SIZE);
        let len = u32::from_be_bytes(chunk[4..8].try_into().expect("4 bytes")) as usize;
        let value = after.get(..len)?;
        rest = &after[len..];
        if chunk[..4] != BULK_ANNOTATION {
            continue;
        }
        let value: [u8; 8] = value.try_into().ok()?;
        let offset = u32::from_be_bytes(value[..4].try_into().expect("4 bytes")) as usize;
        let len = u32::from_be_bytes(value[4..].try_into().expect("4 bytes")) as usize;
        let fits = offset
            .checked_add(len)
            .is_some_and(|end| end <= header.data_len as usize);
        return (fits && len >= min && len > 0).then_some((offset, len));
    }
    None
}

/// Bytes a [`BULK_ANNOTATION`] adds to a message (see [`Message::announce_bulk`]).
pub(crate) const BULK_ANNOUNCEMENT_SIZE: usize = ANNOTATION_HEADER_SIZE + 8;

/// `head` and then each piece of `tail`, copied into one buffer: a payload in pieces, whole.
pub(crate) fn join(head: &[u8], tail: &[Bytes]) -> Bytes {
    let len = tail.iter().fold(head.len(), |n, piece| n + piece.len());
    let mut whole = BytesMut::with_capacity(len);
    whole.extend_from_slice(head);
    for piece in tail {
        whole.extend_from_slice(piece);
    }
    whole.freeze()
}

/// One annotation: a 4-byte ASCII id and its value.
pub type Annotation = ([u8; 4], Bytes);

/// A complete Pyro message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type.
    pub msg_type: MessageType,
    /// Serializer id of the payload, as the connection's protocol numbers it.
    pub serializer: u8,
    /// Flag bits (`FLAGS_*`).
    pub flags: u16,
    /// Sequence number.
    pub seq: u16,
    /// Correlation id; sent with `FLAGS_CORR_ID` (Pyro4: as the `CORR` annotation) when not
    /// all zero.
    pub corr_id: [u8; 16],
    /// Annotations in order.
    pub annotations: Vec<Annotation>,
    /// Payload bytes.
    pub payload: Bytes,
    /// More payload bytes, sent after `payload` from buffers of their own instead of being
    /// copied into it (a large `Vec<u8>` argument goes from the caller's own buffer).
    /// [`size`](Self::size), the header and a MAC count them. A message read off the wire has
    /// one only when a reader [split](crate::transport::FrameReader::split_bulk) it where its
    /// [`BULK_ANNOTATION`] said: the announced bytes in a buffer of their own, then the rest.
    pub payload_tail: Vec<Bytes>,
}

impl Message {
    /// A message with no annotations and no correlation id.
    pub fn new(
        msg_type: MessageType,
        serializer: u8,
        flags: u16,
        seq: u16,
        payload: impl Into<Bytes>,
    ) -> Self {
        Message {
            msg_type,
            serializer,
            flags,
            seq,
            corr_id: [0; 16],
            annotations: Vec::new(),
            payload: payload.into(),
            payload_tail: Vec::new(),
        }
    }

    /// True when `flag` is set.
    pub fn has_flag(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// The value of annotation `id`, if present.
    pub fn annotation(&self, id: &[u8; 4]) -> Option<&Bytes> {
        self.annotations
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v)
    }

    /// Splits one message, already [`check`]ed, off the front of `buf`.
    pub fn parse(buf: &mut BytesMut, header: &Header) -> Result<Message, Error> {
        Self::from_frame(buf.split_to(header.total_len()).freeze(), header)
    }

    /// The message in `msg`, exactly one whole message whose header is `header`.
    pub(crate) fn from_frame(mut msg: Bytes, header: &Header) -> Result<Message, Error> {
        debug_assert_eq!(msg.len(), header.total_len());
        let protocol = header.protocol;
        msg.advance(protocol.header_size());
        let mut ann = msg.split_to(header.ann_len as usize);
        let payload = msg;
        let chunk_header = protocol.annotation_header_size();
        let mut annotations = Vec::new();
        while !ann.is_empty() {
            if ann.len() < chunk_header {
                return Err(Error::BadAnnotations("truncated annotation chunk header"));
            }
            let mut id = [0u8; 4];
            ann.copy_to_slice(&mut id);
            let len = match protocol {
                Protocol::Pyro5 => ann.get_u32() as usize,
                Protocol::Pyro4 => ann.get_u16() as usize,
            };
            if len > ann.len() {
                return Err(Error::BadAnnotations(
                    "annotation chunk longer than the annotations",
                ));
            }
            annotations.push((id, ann.split_to(len)));
        }
        let mut msg = Message {
            msg_type: header.msg_type,
            serializer: header.serializer,
            flags: header.flags,
            seq: header.seq,
            corr_id: header.corr_id,
            annotations,
            payload,
            payload_tail: Vec::new(),
        };
        if protocol == Protocol::Pyro4 {
            pyro4::take_correlation_id(&mut msg);
        }
        Ok(msg)
    }

    /// Bytes of annotations (each with its 8-byte chunk header) plus payload: what a header
    /// declares, and what `max_message_size` limits.
    pub fn size(&self) -> usize {
        self.annotations_len() + self.payload_len()
    }

    /// The message in `frame`, one whole message whose header is `header` but for the `big`
    /// payload bytes at `offset`, which arrived in a buffer of their own: its payload is what
    /// precedes them, its [tail](Self::payload_tail) `big` and what follows.
    pub(crate) fn from_split_frame(
        frame: Bytes,
        header: &Header,
        offset: usize,
        big: Bytes,
    ) -> Result<Message, Error> {
        let mut around = *header;
        around.data_len -= u32::try_from(big.len()).expect("within the header's data_len");
        let mut msg = Self::from_frame(frame, &around)?;
        let after = msg.payload.split_off(offset);
        msg.payload_tail.push(big);
        if !after.is_empty() {
            msg.payload_tail.push(after);
        }
        Ok(msg)
    }

    /// Announces the first piece of the [tail](Self::payload_tail) (a large byte string left
    /// out of the payload) with a [`BULK_ANNOTATION`], for a reader that reads it into a
    /// buffer of its own (an rmi peer's; other peers ignore it). Only for bincode and msgpack
    /// payloads, whose decoders take such a buffer over; without a tail, nothing.
    pub fn announce_bulk(&mut self) {
        let Some(big) = self.payload_tail.first() else {
            return;
        };
        self.annotations.retain(|(id, _)| *id != BULK_ANNOTATION);
        let (Ok(offset), Ok(len)) = (u32::try_from(self.payload.len()), u32::try_from(big.len()))
        else {
            return;
        };
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&offset.to_be_bytes());
        value[4..].copy_from_slice(&len.to_be_bytes());
        self.annotations
            .push((BULK_ANNOTATION, Bytes::copy_from_slice(&value)));
    }

    /// Bytes of payload: [`payload`](Self::payload) and its [tail](Self::payload_tail).
    pub fn payload_len(&self) -> usize {
        self.payload.len() + self.payload_tail.iter().map(Bytes::len).sum::<usize>()
    }

    /// Copies the [tail](Self::payload_tail), if any, into `payload`: one contiguous payload
    /// (and no [`BULK_ANNOTATION`], which would no longer say where a piece starts).
    pub fn join_payload(&mut self) {
        if self.payload_tail.is_empty() {
            return;
        }
        self.annotations.retain(|(id, _)| *id != BULK_ANNOTATION);
        self.payload = join(&self.payload, &std::mem::take(&mut self.payload_tail));
    }

    /// Bytes of the annotations, with their chunk headers.
    pub fn annotations_len(&self) -> usize {
        self.annotations
            .iter()
            .map(|(_, v)| ANNOTATION_HEADER_SIZE + v.len())
            .sum()
    }

    /// Replaces a compressed payload (`FLAGS_COMPRESSED`, zlib, as Pyro sends it) with its
    /// decompressed bytes and clears the flag. The result may not exceed `max_size`: a small
    /// message that inflates past the limit (a zip bomb) is refused after `max_size + 1` bytes.
    pub fn decompress(&mut self, max_size: usize) -> Result<(), Error> {
        if !self.has_flag(FLAGS_COMPRESSED) {
            return Ok(());
        }
        let limit = max_size.saturating_sub(self.annotations_len());
        let inflating = flate2::read::ZlibDecoder::new(&self.payload[..]);
        let out = read_at_most(inflating, limit)
            .map_err(|e| Error::Decompress(e.to_string()))?
            .ok_or_else(|| {
                Error::Decompress(format!(
                    "it inflates past max_message_size ({max_size} bytes)"
                ))
            })?;
        self.payload = out.into();
        self.flags &= !FLAGS_COMPRESSED;
        Ok(())
    }

    /// Compresses the payload with zlib (level 4, as Pyro5) and sets `FLAGS_COMPRESSED`, when
    /// it is larger than [`COMPRESS_ABOVE`] bytes, as Pyro5 does.
    pub fn compress(&mut self) {
        use std::io::Write;
        if self.payload_len() <= COMPRESS_ABOVE || self.has_flag(FLAGS_COMPRESSED) {
            return;
        }
        self.join_payload();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(4));
        if z.write_all(&self.payload).is_ok() {
            if let Ok(compressed) = z.finish() {
                self.payload = compressed.into();
                self.flags |= FLAGS_COMPRESSED;
            }
        }
    }

    /// Appends the message, encoded in Pyro5, to `buf` ([`Protocol::encode`] for either).
    pub fn encode(&self, buf: &mut BytesMut) {
        Protocol::Pyro5.encode(self, buf);
    }

    /// Appends the Pyro5 header and annotations, everything but the payload, to `buf`.
    pub fn encode_head(&self, buf: &mut BytesMut) {
        Protocol::Pyro5.encode_head(self, buf);
    }

    /// The message encoded in Pyro5, as bytes.
    pub fn to_bytes(&self) -> Bytes {
        self.to_bytes_in(Protocol::Pyro5)
    }

    /// The message encoded in `protocol`, as bytes.
    pub fn to_bytes_in(&self, protocol: Protocol) -> Bytes {
        let mut buf = BytesMut::new();
        protocol.encode(self, &mut buf);
        buf.freeze()
    }
}

/// All of `source` if it is at most `limit` bytes, else `None`, having read no more than
/// `limit + 1` of them: what bounds an inflating message (a zip bomb) by what it may become,
/// not by what it would.
fn read_at_most(source: impl std::io::Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut out = Vec::new();
    // (Saturating: a limit of `usize::MAX`, "no limit", would wrap to `take(0)`.)
    source
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 << 20;

    /// The JSON CONNECT captured from a real Pyro5 client (pyro5-wire.md §10).
    const CAPTURED_CONNECT: &str = "5059524f01f60103000000000000003300000000000000000000000000000000000000000000\
        4dc57b2268616e647368616b65223a202268656c6c6f222c20226f626a656374223a20226578616d706c652e77656c636f6d65227d";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_a_captured_pyro5_connect() {
        let bytes = hex(CAPTURED_CONNECT);
        let header = check(&bytes, MAX).unwrap();
        assert_eq!(header.msg_type, MessageType::Connect);
        assert_eq!(header.serializer, 3);
        assert_eq!(header.data_len, 51);
        let mut buf = BytesMut::from(&bytes[..]);
        let msg = Message::parse(&mut buf, &header).unwrap();
        assert!(buf.is_empty());
        assert_eq!(
            &msg.payload[..],
            br#"{"handshake": "hello", "object": "example.welcome"}"#
        );
        // Encoding gives back the captured bytes exactly.
        assert_eq!(msg.to_bytes().to_vec(), bytes);
    }

    /// The numbers each protocol's peers agree on, as pyro5-wire.md and pyro4-wire.md give
    /// them (written out here, not taken from the constants they check).
    #[test]
    fn each_protocol_has_its_documented_numbers() {
        let p5 = Protocol::Pyro5;
        let p4 = Protocol::Pyro4;
        assert_eq!((p5.version(), p4.version()), (502, 48));
        assert_eq!((p5.header_size(), p4.header_size()), (40, 24));
        assert_eq!(
            (p5.annotation_header_size(), p4.annotation_header_size()),
            (8, 6)
        );
        assert_eq!(p5.max_payload(), u32::MAX as usize);
        assert_eq!(p4.max_payload(), i32::MAX as usize);
        let ids = [
            // (serializer, Pyro5 id, Pyro4 id)
            (Serializer::Serpent, 1, Some(1)),
            (Serializer::Json, 3, Some(2)),
            (Serializer::Marshal, 2, Some(3)),
            (Serializer::MsgPack, 4, Some(6)),
            (Serializer::Bincode, 98, None),
        ];
        for (ser, five, four) in ids {
            assert_eq!(p5.serializer_id(ser), five, "{ser:?}");
            assert_eq!(p5.serializer(five), Some(ser), "{ser:?}");
            if let Some(four) = four {
                assert_eq!(p4.serializer_id(ser), four, "{ser:?}");
                assert_eq!(p4.serializer(four), Some(ser), "{ser:?}");
            }
        }
        // Pyro4's 4 is pickle and its 5 dill; bincode is rmi's, for Pyro5 only.
        for id in [4, 5, 7, 98] {
            assert_eq!(p4.serializer(id), None, "{id}");
        }
        // The tag and the version field decide, and not before all six bytes are in.
        let five = Message::new(MessageType::Ping, 42, 0, 0, &b"ping"[..]).to_bytes();
        let four = Message::new(MessageType::Ping, 42, 0, 0, &b"ping"[..]).to_bytes_in(p4);
        assert_eq!(Protocol::detect(&five[..5]), Err(Error::Incomplete));
        assert_eq!(Protocol::detect(&five[..6]), Ok(p5));
        assert_eq!(Protocol::detect(&four[..6]), Ok(p4));
    }

    #[test]
    fn every_message_type_crosses_both_protocols_and_no_other_number_does() {
        let types = [
            (MessageType::Connect, 1u8),
            (MessageType::ConnectOk, 2),
            (MessageType::ConnectFail, 3),
            (MessageType::Invoke, 4),
            (MessageType::Result, 5),
            (MessageType::Ping, 6),
        ];
        for protocol in [Protocol::Pyro5, Protocol::Pyro4] {
            for (msg_type, number) in types {
                let wire = Message::new(msg_type, 1, 0, 7, &b"x"[..]).to_bytes_in(protocol);
                // Right after the version: a byte in Pyro5, a big-endian u16 in Pyro4.
                let on_wire = match protocol {
                    Protocol::Pyro5 => &wire[6..7],
                    Protocol::Pyro4 => &wire[7..8],
                };
                assert_eq!(on_wire, &[number], "{protocol:?} {msg_type:?}");
                if protocol == Protocol::Pyro4 {
                    assert_eq!(wire[6], 0, "{msg_type:?}");
                }
                let header = protocol.check(&wire, MAX).unwrap();
                assert_eq!(header.msg_type, msg_type, "{protocol:?}");
            }
        }
        for number in [0u8, 7, 255] {
            let mut wire = Message::new(MessageType::Invoke, 1, 0, 7, &b"x"[..])
                .to_bytes()
                .to_vec();
            wire[6] = number;
            assert_eq!(check(&wire, MAX), Err(Error::BadType(number.into())));
        }
    }

    #[test]
    fn a_wrong_tag_says_what_came_and_names_tls() {
        let plain = Error::BadTag(*b"GET ").to_string();
        assert!(plain.contains("expected \"PYRO\""), "{plain}");
        assert!(
            plain.contains("47, 45, 54, 20"),
            "the bytes that came: {plain}"
        );
        assert!(!plain.contains("TLS"), "{plain}");
        // A TLS handshake record (22, version 3.x), and the other record types.
        for first in [0x14, 0x15, 0x16, 0x17] {
            let tls = Error::BadTag([first, 0x03, 0x01, 0x02]).to_string();
            assert!(tls.contains("looks like TLS"), "{tls}");
        }
        for not_tls in [[0x13, 0x03, 0, 0], [0x18, 0x03, 0, 0], [0x16, 0x02, 0, 0]] {
            let text = Error::BadTag(not_tls).to_string();
            assert!(!text.contains("TLS"), "{not_tls:?}: {text}");
        }
        assert_eq!(Protocol::Pyro5.to_string(), "Pyro5 (protocol 502)");
        assert_eq!(Protocol::Pyro4.to_string(), "Pyro4 (protocol 48)");
    }

    #[test]
    fn a_message_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
        let mut msg = Message::new(MessageType::Invoke, 4, 0, 1, vec![0u8; 90]);
        msg.annotations.push((*b"XYZW", Bytes::from(vec![1u8; 2])));
        let wire = msg.to_bytes();
        // The limit counts the payload and the annotations with their chunk headers.
        let size = 90 + 8 + 2;
        assert!(check(&wire, size).is_ok());
        assert_eq!(
            check(&wire, size - 1),
            Err(Error::TooLarge {
                size: size as u64,
                max: size - 1
            })
        );
    }

    #[test]
    fn a_bulk_announcement_is_read_only_where_it_can_be_trusted() {
        let announced = |protocol: Protocol, compressed: bool, big: usize| {
            let mut msg = Message::new(MessageType::Invoke, 98, 0, 1, &b"head"[..]);
            msg.payload_tail = vec![Bytes::from(vec![5u8; big]), Bytes::from_static(b"end")];
            let before = msg.annotations_len();
            msg.announce_bulk();
            assert_eq!(msg.annotations_len() - before, BULK_ANNOUNCEMENT_SIZE);
            if compressed {
                msg.flags |= FLAGS_COMPRESSED;
            }
            let wire = msg.to_bytes_in(protocol);
            let header = protocol.check(&wire, MAX).unwrap();
            let at = protocol.header_size();
            let annotations = wire[at..at + header.ann_len as usize].to_vec();
            (header, annotations)
        };
        let (header, annotations) = announced(Protocol::Pyro5, false, 100);
        assert_eq!(bulk_in(&header, &annotations, 100), Some((4, 100)));
        assert_eq!(
            bulk_in(&header, &annotations, 101),
            None,
            "under the minimum"
        );
        // Not in Pyro4, not when compressed, and not for an empty string.
        let (header, annotations) = announced(Protocol::Pyro5, true, 100);
        assert_eq!(bulk_in(&header, &annotations, 1), None, "compressed");
        let (header, annotations) = announced(Protocol::Pyro4, false, 100);
        assert_eq!(bulk_in(&header, &annotations, 1), None, "Pyro4");
        let (header, annotations) = announced(Protocol::Pyro5, false, 0);
        assert_eq!(bulk_in(&header, &annotations, 0), None, "empty");
        // An announcement past the payload's end is ignored: the message is read whole.
        let (mut header, annotations) = announced(Protocol::Pyro5, false, 100);
        header.data_len = 103;
        assert_eq!(bulk_in(&header, &annotations, 1), None, "past the end");
        header.data_len = 104;
        assert_eq!(
            bulk_in(&header, &annotations, 1),
            Some((4, 100)),
            "to the end"
        );
    }

    #[test]
    fn pyro4_sends_metadata_on_connect_only_when_asked() {
        let plain = Message::new(MessageType::Connect, 1, 0, 0, &b""[..]);
        let asking = Message::new(MessageType::Connect, 1, FLAGS_META_ON_CONNECT, 0, &b""[..]);
        assert!(Protocol::Pyro5.meta_on_connect(&plain));
        assert!(Protocol::Pyro5.meta_on_connect(&asking));
        assert!(!Protocol::Pyro4.meta_on_connect(&plain));
        assert!(Protocol::Pyro4.meta_on_connect(&asking));
    }

    #[test]
    fn a_head_encoded_alone_is_the_message_without_its_payload() {
        let mut msg = Message::new(MessageType::Invoke, 4, 0, 3, &b"the payload"[..]);
        msg.annotations.push((*b"XYZW", Bytes::from_static(b"v")));
        for protocol in [Protocol::Pyro5, Protocol::Pyro4] {
            let whole = msg.to_bytes_in(protocol);
            let mut head = BytesMut::new();
            protocol.encode_head(&msg, &mut head);
            assert_eq!(head.len(), whole.len() - msg.payload.len(), "{protocol:?}");
            assert_eq!(&whole[..head.len()], &head[..], "{protocol:?}");
        }
        // The message's own methods speak Pyro5.
        let (mut head, mut whole) = (BytesMut::new(), BytesMut::new());
        msg.encode_head(&mut head);
        msg.encode(&mut whole);
        assert_eq!(whole, msg.to_bytes_in(Protocol::Pyro5));
        assert_eq!(&whole[..head.len()], &head[..]);
        assert_eq!(head.len() + msg.payload.len(), whole.len());
    }

    #[test]
    fn a_payload_tail_is_framed_as_if_it_were_part_of_the_payload() {
        let mut split = Message::new(MessageType::Invoke, 1, 0, 9, &b"head"[..]);
        split.annotations.push((*b"XYZW", Bytes::from_static(b"v")));
        split.payload_tail = vec![Bytes::from(vec![7u8; 300]), Bytes::from_static(b"end")];
        let mut joined = split.clone();
        joined.join_payload();
        assert!(joined.payload_tail.is_empty());
        assert_eq!(joined.payload.len(), 4 + 300 + 3);
        assert_eq!((split.size(), split.payload_len()), (joined.size(), 307));
        // What the header declares: the annotation with its chunk header, and the payload.
        assert_eq!(split.size(), 8 + 1 + 307);
        for protocol in [Protocol::Pyro5, Protocol::Pyro4] {
            let wire = split.to_bytes_in(protocol);
            assert_eq!(wire, joined.to_bytes_in(protocol), "{protocol:?}");
            let mut buf = BytesMut::from(&wire[..]);
            let header = protocol.check(&buf, 1 << 20).unwrap();
            let back = Message::parse(&mut buf, &header).unwrap();
            assert_eq!(back.payload, joined.payload, "{protocol:?}");
        }
        // Compressing takes the tail in.
        split.compress();
        assert!(split.payload_tail.is_empty() && split.has_flag(FLAGS_COMPRESSED));
        split.decompress(1 << 20).unwrap();
        assert_eq!(split.payload, joined.payload);
    }

    #[test]
    fn fresh_correlation_ids_are_random_version_4_uuids_that_do_not_repeat() {
        let ids: std::collections::HashSet<uuid::Uuid> =
            (0..10_000).map(|_| new_correlation_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.get_version(), Some(uuid::Version::Random));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        // Another thread's generator is seeded apart from this one's.
        let there =
            std::thread::spawn(|| (0..1_000).map(|_| new_correlation_id()).collect::<Vec<_>>())
                .join()
                .unwrap();
        assert!(there.iter().all(|id| !ids.contains(id)));
    }

    #[test]
    fn round_trips_annotations_and_correlation_id() {
        let mut msg = Message::new(
            MessageType::Result,
            4,
            FLAGS_EXCEPTION,
            65535,
            &b"payload"[..],
        );
        msg.corr_id = [7; 16];
        msg.annotations.push((*b"STRM", Bytes::from_static(b"abc")));
        msg.annotations.push((*b"XXXX", Bytes::new()));
        let bytes = msg.to_bytes();
        let header = check(&bytes, MAX).unwrap();
        assert_eq!(header.flags, FLAGS_EXCEPTION | FLAGS_CORR_ID);
        let parsed = Message::parse(&mut BytesMut::from(&bytes[..]), &header).unwrap();
        assert_eq!(parsed.annotation(b"STRM").unwrap().as_ref(), b"abc");
        assert_eq!(parsed.annotations.len(), 2);
        assert_eq!(parsed.payload, msg.payload);
        assert_eq!(parsed.seq, 65535);
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = Message::new(MessageType::Invoke, 4, 0, 1, &b"xyz"[..]).to_bytes();
        for n in 0..bytes.len() {
            assert_eq!(
                check(&bytes[..n], MAX),
                Err(Error::Incomplete),
                "prefix of {n}"
            );
        }
        assert!(check(&bytes, MAX).is_ok());
    }

    #[test]
    fn refuses_bad_headers_before_reading_the_body() {
        let good = Message::new(MessageType::Invoke, 4, 0, 1, &b"xyz"[..])
            .to_bytes()
            .to_vec();
        let mut bad_tag = good.clone();
        bad_tag[0] = b'G';
        assert!(
            matches!(check(&bad_tag[..3], MAX), Err(Error::BadTag(_))),
            "garbage refused early"
        );
        let mut bad_version = good.clone();
        bad_version[5] = 0x30;
        assert!(matches!(
            check(&bad_version, MAX),
            Err(Error::BadVersion(0x0130))
        ));
        let mut bad_magic = good.clone();
        bad_magic[39] = 0;
        assert!(matches!(check(&bad_magic, MAX), Err(Error::BadMagic(_))));
        let mut bad_type = good.clone();
        bad_type[6] = 9;
        assert_eq!(check(&bad_type, MAX), Err(Error::BadType(9)));
        let mut huge = good[..HEADER_SIZE].to_vec();
        huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            matches!(check(&huge, MAX), Err(Error::TooLarge { .. })),
            "4 GiB refused from the header alone"
        );
        let mut both = good[..HEADER_SIZE].to_vec();
        both[12..16].copy_from_slice(&(MAX as u32).to_be_bytes());
        both[16..20].copy_from_slice(&1u32.to_be_bytes());
        assert!(
            matches!(check(&both, MAX), Err(Error::TooLarge { .. })),
            "sum of both lengths counts"
        );
    }

    #[test]
    fn refuses_inconsistent_annotations_and_compression() {
        let mut msg = Message::new(MessageType::Invoke, 4, 0, 1, &b""[..]);
        msg.annotations
            .push((*b"ABCD", Bytes::from_static(b"12345678")));
        let mut bytes = msg.to_bytes().to_vec();
        // Claim a longer chunk than the annotation block holds.
        bytes[HEADER_SIZE + 7] = 200;
        let header = check(&bytes, MAX).unwrap();
        assert!(matches!(
            Message::parse(&mut BytesMut::from(&bytes[..]), &header),
            Err(Error::BadAnnotations(_))
        ));
    }

    /// An endless source of zeros that fails the test if more than `allowed` bytes are read.
    struct Endless {
        read: usize,
        allowed: usize,
    }

    impl std::io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            assert!(
                self.read < self.allowed,
                "read past the bound: {} bytes already",
                self.read
            );
            let n = buf.len().min(self.allowed - self.read);
            buf[..n].fill(0);
            self.read += n;
            Ok(n)
        }
    }

    /// What inflates past the limit is read no further than the limit and one byte (a zip bomb
    /// costs what its message may become, not what it would become).
    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        let endless = Endless {
            read: 0,
            allowed: (1 << 20) + 1,
        };
        assert_eq!(read_at_most(endless, 1 << 20).unwrap(), None);
        assert_eq!(
            read_at_most(&[7u8; 1000][..], 1000).unwrap().unwrap().len(),
            1000
        );
        assert_eq!(read_at_most(&[7u8; 1001][..], 1000).unwrap(), None);
        // No limit at all: everything (before, the bound wrapped to nothing, and a debug build
        // panicked on the overflow).
        assert_eq!(
            read_at_most(&[7u8; 3][..], usize::MAX)
                .unwrap()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn compressed_payloads_round_trip_and_a_zip_bomb_is_refused() {
        let text = "Hi welcome Rashmi! ".repeat(50);
        let mut msg = Message::new(MessageType::Result, 4, 0, 1, text.clone().into_bytes());
        msg.compress();
        assert!(msg.has_flag(FLAGS_COMPRESSED));
        assert!(
            msg.payload.len() < text.len() / 5,
            "{} bytes",
            msg.payload.len()
        );
        // On the wire and back.
        let bytes = msg.to_bytes();
        let header = check(&bytes, MAX).unwrap();
        let mut parsed = Message::parse(&mut BytesMut::from(&bytes[..]), &header).unwrap();
        parsed.decompress(MAX).unwrap();
        assert_eq!(parsed.payload, text.as_bytes());
        assert!(!parsed.has_flag(FLAGS_COMPRESSED));
        // Small payloads stay as they are, as Pyro5 leaves them.
        let mut small = Message::new(MessageType::Result, 4, 0, 1, &b"short"[..]);
        small.compress();
        assert!(!small.has_flag(FLAGS_COMPRESSED));
        // 10 MiB of zeros is ~10 KiB compressed: refused against a 1 MiB limit, without
        // inflating more than the limit.
        let mut bomb = Message::new(MessageType::Invoke, 4, 0, 1, vec![0u8; 10 << 20]);
        bomb.compress();
        assert!(bomb.payload.len() < 64 << 10);
        let err = bomb.clone().decompress(1 << 20).unwrap_err();
        assert!(err.to_string().contains("max_message_size"), "{err}");
        // The limit counts the annotations too, and a message that inflates to exactly the
        // limit is accepted.
        let mut exact = Message::new(MessageType::Invoke, 4, 0, 1, vec![1u8; 1000]);
        exact
            .annotations
            .push((*b"XYZW", Bytes::from_static(b"ab")));
        exact.compress();
        assert!(exact.has_flag(FLAGS_COMPRESSED));
        let limit = 1000 + 8 + 2;
        assert!(exact.clone().decompress(limit - 1).is_err());
        exact.decompress(limit).unwrap();
        assert_eq!((exact.payload.len(), exact.size()), (1000, limit));
        // Not zlib at all.
        let mut junk = Message::new(MessageType::Invoke, 4, FLAGS_COMPRESSED, 1, &b"nope"[..]);
        assert!(matches!(junk.decompress(MAX), Err(Error::Decompress(_))));
    }
}
