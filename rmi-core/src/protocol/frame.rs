//! One Pyro5 message: the 40-byte header, annotations and payload; check, parse and encode.
//!
//! Decoding runs in two steps, as in mini-redis: [`check`] looks at the buffered bytes and says
//! whether a whole message is there (validating the header and both lengths against the
//! configured maximum before anything is allocated), then [`Message::parse`] builds it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the fixed header.
pub const HEADER_SIZE: usize = 40;
/// Payloads larger than this are compressed when compression is on (Pyro5's threshold).
pub const COMPRESS_ABOVE: usize = 100;
/// Length of an annotation chunk's own header: a 4-byte id and a u32 length.
pub const ANNOTATION_HEADER_SIZE: usize = 8;
/// Protocol version spoken (Pyro5).
pub const PROTOCOL_VERSION: u16 = 502;
/// Magic number at offset 0x26.
pub const MAGIC: u16 = 0x4DC5;
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

/// Pyro5 message types.
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
    fn from_u8(v: u8) -> Option<Self> {
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
    /// The protocol version is not 502.
    #[error("unsupported protocol version {0} (expected {PROTOCOL_VERSION})")]
    BadVersion(u16),
    /// The magic number is wrong.
    #[error("invalid magic number {0:#06x} (expected {MAGIC:#06x})")]
    BadMagic(u16),
    /// The message type byte is unknown.
    #[error("unknown message type {0}")]
    BadType(u8),
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

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub msg_type: MessageType,
    /// Serializer id of the payload.
    pub serializer: u8,
    /// Flag bits (`FLAGS_*`).
    pub flags: u16,
    /// Sequence number correlating a reply with its request.
    pub seq: u16,
    /// Payload length.
    pub data_len: u32,
    /// Total annotation length.
    pub ann_len: u32,
    /// Correlation id (valid when `FLAGS_CORR_ID` is set).
    pub corr_id: [u8; 16],
}

impl Header {
    /// Parses and validates the first [`HEADER_SIZE`] bytes of `buf`, refusing lengths above `max_size`.
    pub fn parse(buf: &[u8], max_size: usize) -> Result<Header, Error> {
        if buf.len() < HEADER_SIZE {
            // Validate what is there already, so garbage is refused without waiting for 40 bytes.
            let tag_len = buf.len().min(4);
            if buf[..tag_len] != b"PYRO"[..tag_len] {
                let mut tag = [0u8; 4];
                tag[..tag_len].copy_from_slice(&buf[..tag_len]);
                return Err(Error::BadTag(tag));
            }
            return Err(Error::Incomplete);
        }
        let mut b = &buf[..HEADER_SIZE];
        let mut tag = [0u8; 4];
        b.copy_to_slice(&mut tag);
        if &tag != b"PYRO" {
            return Err(Error::BadTag(tag));
        }
        let version = b.get_u16();
        if version != PROTOCOL_VERSION {
            return Err(Error::BadVersion(version));
        }
        let type_byte = b.get_u8();
        let serializer = b.get_u8();
        let flags = b.get_u16();
        let seq = b.get_u16();
        let data_len = b.get_u32();
        let ann_len = b.get_u32();
        let mut corr_id = [0u8; 16];
        b.copy_to_slice(&mut corr_id);
        let _reserved = b.get_u16();
        let magic = b.get_u16();
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let msg_type = MessageType::from_u8(type_byte).ok_or(Error::BadType(type_byte))?;
        let size = data_len as u64 + ann_len as u64;
        if size > max_size as u64 {
            return Err(Error::TooLarge {
                size,
                max: max_size,
            });
        }
        Ok(Header {
            msg_type,
            serializer,
            flags,
            seq,
            data_len,
            ann_len,
            corr_id,
        })
    }

    /// Total message length including the header.
    pub fn total_len(&self) -> usize {
        HEADER_SIZE + self.data_len as usize + self.ann_len as usize
    }
}

/// Checks whether `buf` starts with a complete, valid message; returns its header.
///
/// `Err(Error::Incomplete)` means "read more"; any other error means the stream is not Pyro5 and
/// must be closed.
pub fn check(buf: &[u8], max_size: usize) -> Result<Header, Error> {
    let header = Header::parse(buf, max_size)?;
    if buf.len() < header.total_len() {
        return Err(Error::Incomplete);
    }
    Ok(header)
}

/// One annotation: a 4-byte ASCII id and its value.
pub type Annotation = ([u8; 4], Bytes);

/// A complete Pyro5 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type.
    pub msg_type: MessageType,
    /// Serializer id of the payload.
    pub serializer: u8,
    /// Flag bits (`FLAGS_*`).
    pub flags: u16,
    /// Sequence number.
    pub seq: u16,
    /// Correlation id; sent with `FLAGS_CORR_ID` when not all zero.
    pub corr_id: [u8; 16],
    /// Annotations in order.
    pub annotations: Vec<Annotation>,
    /// Payload bytes.
    pub payload: Bytes,
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
        let mut msg = buf.split_to(header.total_len()).freeze();
        msg.advance(HEADER_SIZE);
        let mut ann = msg.split_to(header.ann_len as usize);
        let payload = msg;
        let mut annotations = Vec::new();
        while !ann.is_empty() {
            if ann.len() < 8 {
                return Err(Error::BadAnnotations("truncated annotation chunk header"));
            }
            let mut id = [0u8; 4];
            ann.copy_to_slice(&mut id);
            let len = ann.get_u32() as usize;
            if len > ann.len() {
                return Err(Error::BadAnnotations(
                    "annotation chunk longer than the annotations",
                ));
            }
            annotations.push((id, ann.split_to(len)));
        }
        Ok(Message {
            msg_type: header.msg_type,
            serializer: header.serializer,
            flags: header.flags,
            seq: header.seq,
            corr_id: header.corr_id,
            annotations,
            payload,
        })
    }

    /// Bytes of annotations (each with its 8-byte chunk header) plus payload: what a header
    /// declares, and what `max_message_size` limits.
    pub fn size(&self) -> usize {
        self.annotations_len() + self.payload.len()
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
        use std::io::Read;
        if !self.has_flag(FLAGS_COMPRESSED) {
            return Ok(());
        }
        let limit = max_size.saturating_sub(self.annotations_len());
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&self.payload[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::Decompress(e.to_string()))?;
        if out.len() > limit {
            return Err(Error::Decompress(format!(
                "it inflates past max_message_size ({max_size} bytes)"
            )));
        }
        self.payload = out.into();
        self.flags &= !FLAGS_COMPRESSED;
        Ok(())
    }

    /// Compresses the payload with zlib (level 4, as Pyro5) and sets `FLAGS_COMPRESSED`, when
    /// it is larger than [`COMPRESS_ABOVE`] bytes, as Pyro5 does.
    pub fn compress(&mut self) {
        use std::io::Write;
        if self.payload.len() <= COMPRESS_ABOVE || self.has_flag(FLAGS_COMPRESSED) {
            return;
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(4));
        if z.write_all(&self.payload).is_ok() {
            if let Ok(compressed) = z.finish() {
                self.payload = compressed.into();
                self.flags |= FLAGS_COMPRESSED;
            }
        }
    }

    /// Appends the encoded message to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        self.encode_head(buf);
        buf.put_slice(&self.payload);
    }

    /// Appends the header and annotations, everything but the payload, to `buf`.
    pub fn encode_head(&self, buf: &mut BytesMut) {
        let ann_len = self.annotations_len();
        let mut flags = self.flags;
        if self.corr_id != [0; 16] {
            flags |= FLAGS_CORR_ID;
        }
        buf.reserve(HEADER_SIZE + ann_len + self.payload.len());
        buf.put_slice(b"PYRO");
        buf.put_u16(PROTOCOL_VERSION);
        buf.put_u8(self.msg_type as u8);
        buf.put_u8(self.serializer);
        buf.put_u16(flags);
        buf.put_u16(self.seq);
        buf.put_u32(self.payload.len() as u32);
        buf.put_u32(ann_len as u32);
        buf.put_slice(&self.corr_id);
        buf.put_u16(0);
        buf.put_u16(MAGIC);
        for (id, value) in &self.annotations {
            buf.put_slice(id);
            buf.put_u32(value.len() as u32);
            buf.put_slice(value);
        }
    }

    /// The encoded message as bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
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
        // Not zlib at all.
        let mut junk = Message::new(MessageType::Invoke, 4, FLAGS_COMPRESSED, 1, &b"nope"[..]);
        assert!(matches!(junk.decompress(MAX), Err(Error::Decompress(_))));
    }
}
