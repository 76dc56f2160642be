//! Pyro5's 40-byte header (protocol 502): parse and encode; annotation chunks with u32 lengths.

use bytes::{Buf, BufMut, BytesMut};

use super::{check_tag, Error, Header, Message, MessageType, Protocol, FLAGS_CORR_ID};

/// Length of the fixed header.
pub(super) const HEADER_SIZE: usize = 40;
/// Protocol version.
pub(super) const VERSION: u16 = 502;
/// Magic number at offset 0x26.
pub(super) const MAGIC: u16 = 0x4DC5;

/// Parses and validates the header at the front of `buf`, refusing lengths above `max_size`.
#[inline]
pub(super) fn parse_header(buf: &[u8], max_size: usize) -> Result<Header, Error> {
    if buf.len() < HEADER_SIZE {
        // Validate what is there already, so garbage is refused without waiting for 40 bytes.
        check_tag(buf)?;
        return Err(Error::Incomplete);
    }
    let mut b = &buf[..HEADER_SIZE];
    let mut tag = [0u8; 4];
    b.copy_to_slice(&mut tag);
    if &tag != b"PYRO" {
        return Err(Error::BadTag(tag));
    }
    let version = b.get_u16();
    if version != VERSION {
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
    let msg_type =
        MessageType::from_u16(type_byte.into()).ok_or(Error::BadType(type_byte.into()))?;
    let header = Header {
        protocol: Protocol::Pyro5,
        msg_type,
        serializer,
        flags,
        seq,
        data_len,
        ann_len,
        corr_id,
    };
    header.check_size(max_size)?;
    Ok(header)
}

/// Appends the header and annotations of `msg` to `buf`.
pub(super) fn encode_head(msg: &Message, buf: &mut BytesMut, room: usize) {
    let ann_len = msg.annotations_len();
    let mut flags = msg.flags;
    if msg.corr_id != [0; 16] {
        flags |= FLAGS_CORR_ID;
    }
    // The header is assembled on the stack and appended in one copy (a `put_*` per field
    // checked the buffer's capacity 13 times).
    let mut head = [0u8; HEADER_SIZE];
    head[0..4].copy_from_slice(b"PYRO");
    head[4..6].copy_from_slice(&VERSION.to_be_bytes());
    head[6] = msg.msg_type as u8;
    head[7] = msg.serializer;
    head[8..10].copy_from_slice(&flags.to_be_bytes());
    head[10..12].copy_from_slice(&msg.seq.to_be_bytes());
    head[12..16].copy_from_slice(&(msg.payload_len() as u32).to_be_bytes());
    head[16..20].copy_from_slice(&(ann_len as u32).to_be_bytes());
    head[20..36].copy_from_slice(&msg.corr_id);
    // head[36..38]: reserved, zero.
    head[38..40].copy_from_slice(&MAGIC.to_be_bytes());
    buf.reserve(HEADER_SIZE + ann_len + room);
    buf.put_slice(&head);
    for (id, value) in &msg.annotations {
        buf.put_slice(id);
        buf.put_u32(value.len() as u32);
        buf.put_slice(value);
    }
}
