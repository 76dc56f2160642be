//! Pyro4's 24-byte header (protocol 48): parse and encode, with its checksum, Pyro4's flag bits,
//! u16 annotation chunks and the correlation id as a `CORR` annotation.
//!
//! ```text
//! !4sHHHHiHHHH: tag "PYRO", version 48, type, flags, seq, data length (i32), serializer id,
//!               annotations length, reserved 0, checksum
//! checksum = (type + 48 + data_len + ann_len + serializer + flags + seq + 0x34E9) & 0xFFFF
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    check_tag, Error, Header, Message, MessageType, Protocol, FLAGS_BATCH, FLAGS_COMPRESSED,
    FLAGS_CORR_ID, FLAGS_EXCEPTION, FLAGS_ITEMSTREAMRESULT, FLAGS_KEEPSERIALIZED,
    FLAGS_META_ON_CONNECT, FLAGS_ONEWAY,
};

/// Length of the fixed header.
pub(super) const HEADER_SIZE: usize = 24;
/// Protocol version.
pub(super) const VERSION: u16 = 48;
/// Added to the header's fields to make its checksum.
const CHECKSUM_MAGIC: u32 = 0x34E9;
/// Length of an annotation chunk's own header: a 4-byte id and a u16 length.
pub(super) const ANNOTATION_HEADER_SIZE: usize = 6;
/// Pyro4's serializer id for msgpack (4 is pickle there).
pub(super) const MSGPACK_ID: u8 = 6;
/// Pyro4's serializer id for json (Pyro5's is 3).
pub(super) const JSON_ID: u8 = 2;
/// Pyro4's serializer id for marshal (Pyro5's is 2).
pub(super) const MARSHAL_ID: u8 = 3;
/// The annotation carrying the correlation id (16 bytes, a UUID's).
const CORR: [u8; 4] = *b"CORR";

/// Pyro4's flag bits and the `FLAGS_*` (Pyro5's numbering) each one is.
const FLAG_MAP: [(u16, u16); 7] = [
    (0x01, FLAGS_EXCEPTION),
    (0x02, FLAGS_COMPRESSED),
    (0x04, FLAGS_ONEWAY),
    (0x08, FLAGS_BATCH),
    (0x10, FLAGS_META_ON_CONNECT),
    (0x20, FLAGS_ITEMSTREAMRESULT),
    (0x40, FLAGS_KEEPSERIALIZED),
];

/// Pyro4's wire flags as `FLAGS_*`; bits Pyro4 does not define are dropped (Pyro4 ignores them).
fn flags_in(wire: u16) -> u16 {
    FLAG_MAP
        .iter()
        .filter(|(w, _)| wire & w != 0)
        .fold(0, |acc, (_, f)| acc | f)
}

/// `FLAGS_*` as Pyro4's wire flags; `FLAGS_CORR_ID` travels as the `CORR` annotation instead.
fn flags_out(flags: u16) -> u16 {
    FLAG_MAP
        .iter()
        .filter(|(_, f)| flags & f != 0)
        .fold(0, |acc, (w, _)| acc | w)
}

/// The checksum of a header's fields.
fn checksum(
    msg_type: u16,
    flags: u16,
    seq: u16,
    data_len: u32,
    serializer: u16,
    ann_len: u16,
) -> u16 {
    let sum = u32::from(msg_type)
        .wrapping_add(u32::from(VERSION))
        .wrapping_add(data_len)
        .wrapping_add(u32::from(ann_len))
        .wrapping_add(u32::from(serializer))
        .wrapping_add(u32::from(flags))
        .wrapping_add(u32::from(seq))
        .wrapping_add(CHECKSUM_MAGIC);
    (sum & 0xFFFF) as u16
}

/// Parses and validates the header at the front of `buf`, refusing lengths above `max_size`.
pub(super) fn parse_header(buf: &[u8], max_size: usize) -> Result<Header, Error> {
    if buf.len() < HEADER_SIZE {
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
    let msg_type = b.get_u16();
    let flags = b.get_u16();
    let seq = b.get_u16();
    let data_len = b.get_i32();
    let serializer = b.get_u16();
    let ann_len = b.get_u16();
    let _reserved = b.get_u16();
    let found = b.get_u16();
    // As Pyro4: the sum over the fields as read (a negative length as its two's complement).
    let expected = checksum(msg_type, flags, seq, data_len as u32, serializer, ann_len);
    if found != expected {
        return Err(Error::BadChecksum { found, expected });
    }
    let msg_type = MessageType::from_u16(msg_type).ok_or(Error::BadType(msg_type))?;
    let serializer = u8::try_from(serializer).map_err(|_| Error::BadSerializer(serializer))?;
    let data_len = u32::try_from(data_len).map_err(|_| Error::BadLength(data_len))?;
    let header = Header {
        protocol: Protocol::Pyro4,
        msg_type,
        serializer,
        flags: flags_in(flags),
        seq,
        data_len,
        ann_len: ann_len.into(),
        corr_id: [0; 16],
    };
    header.check_size(max_size)?;
    Ok(header)
}

/// Moves a 16-byte `CORR` annotation into the message's correlation id.
pub(super) fn take_correlation_id(msg: &mut Message) {
    let Some(at) = msg
        .annotations
        .iter()
        .position(|(id, v)| *id == CORR && v.len() == 16)
    else {
        return;
    };
    let (_, value) = msg.annotations.remove(at);
    msg.corr_id.copy_from_slice(&value);
    msg.flags |= FLAGS_CORR_ID;
}

/// `FLAGS_*` as a Pyro4 peer reads them: the bits Pyro4 defines (see
/// [`Protocol::as_received`]).
pub(super) fn flags_as_received(flags: u16) -> u16 {
    flags_in(flags_out(flags))
}

/// The annotation chunks written for `msg`: the correlation id first as `CORR` (not on
/// exception replies, which Pyro4 sends without it; see [`Protocol::as_received`]), then the
/// message's own. The annotations length is a u16: chunks that would not fit are left out.
fn chunks(msg: &Message) -> Vec<([u8; 4], Bytes)> {
    let (_, corr_id) = Protocol::Pyro4.as_received(msg);
    let corr = (corr_id != [0; 16]).then(|| (CORR, Bytes::copy_from_slice(&corr_id)));
    let mut total = 0usize;
    corr.into_iter()
        .chain(msg.annotations.iter().cloned())
        .filter(|(_, v)| {
            let size = ANNOTATION_HEADER_SIZE + v.len();
            let fits = total + size <= usize::from(u16::MAX);
            if fits {
                total += size;
            }
            fits
        })
        .collect()
}

/// Appends the header and annotations of `msg` to `buf`.
pub(super) fn encode_head(msg: &Message, buf: &mut BytesMut, room: usize) {
    let chunks = chunks(msg);
    let ann_len: usize = chunks
        .iter()
        .map(|(_, v)| ANNOTATION_HEADER_SIZE + v.len())
        .sum();
    let ann_len = ann_len as u16;
    let msg_type = msg.msg_type as u16;
    let flags = flags_out(msg.flags);
    // Replies are held to max_message_size, far below 2 GiB, before they get here.
    let data_len = u32::try_from(msg.payload_len())
        .unwrap_or(u32::MAX)
        .min(i32::MAX as u32);
    let serializer = u16::from(msg.serializer);
    buf.reserve(HEADER_SIZE + usize::from(ann_len) + room);
    buf.put_slice(b"PYRO");
    buf.put_u16(VERSION);
    buf.put_u16(msg_type);
    buf.put_u16(flags);
    buf.put_u16(msg.seq);
    buf.put_u32(data_len);
    buf.put_u16(serializer);
    buf.put_u16(ann_len);
    buf.put_u16(0);
    buf.put_u16(checksum(
        msg_type, flags, msg.seq, data_len, serializer, ann_len,
    ));
    for (id, value) in &chunks {
        buf.put_slice(id);
        buf.put_u16(value.len() as u16);
        buf.put_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{check_any, Protocol, PYRO4_HEADER_SIZE};
    use super::*;

    const MAX: usize = 64 << 20;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// pyro4-wire.md §15: the CONNECT a Pyro4 4.82 client sent (serpent, META_ON_CONNECT).
    const CAPTURED_CONNECT: &str = "50 59 52 4f 00 30 00 01 00 10 00 00 00 00 00 4a
        00 01 00 00 00 00 35 75 23 20 73 65 72 70 65 6e 74 20 75 74 66 2d 38 20 70 79 74 68 6f 6e 33 2e
        32 0a 7b 27 68 61 6e 64 73 68 61 6b 65 27 3a 27 68 65 6c 6c 6f 27 2c 27 6f 62 6a 65 63 74 27 3a
        27 65 78 61 6d 70 6c 65 2e 77 65 6c 63 6f 6d 65 27 7d";

    /// pyro4-wire.md §15: the INVOKE of welcomeMessage('Rashmi'), seq 1.
    const CAPTURED_INVOKE: &str = "50 59 52 4f 00 30 00 04 00 00 00 01 00 00 00 4d
        00 01 00 00 00 00 35 6c 23 20 73 65 72 70 65 6e 74 20 75 74 66 2d 38 20 70 79 74 68 6f 6e 33 2e
        32 0a 28 27 65 78 61 6d 70 6c 65 2e 77 65 6c 63 6f 6d 65 27 2c 27 77 65 6c 63 6f 6d 65 4d 65 73
        73 61 67 65 27 2c 28 27 52 61 73 68 6d 69 27 2c 29 2c 7b 7d 29";

    /// pyro4-wire.md §15: the RESULT to it, with the daemon's CORR annotation.
    const CAPTURED_RESULT: &str = "50 59 52 4f 00 30 00 05 00 00 00 01 00 00 00 2d
        00 01 00 16 00 00 35 63 43 4f 52 52 00 10 09 ff 69 f6 e7 77 41 be be 7c bc 29 ab 1a a2 16 23 20
        73 65 72 70 65 6e 74 20 75 74 66 2d 38 20 70 79 74 68 6f 6e 33 2e 32 0a 27 48 69 20 77 65 6c 63
        6f 6d 65 20 52 61 73 68 6d 69 27";

    fn parse(bytes: &[u8]) -> Message {
        let header = check_any(bytes, MAX).unwrap();
        assert_eq!(header.protocol, Protocol::Pyro4);
        let mut buf = BytesMut::from(bytes);
        let msg = Message::parse(&mut buf, &header).unwrap();
        assert!(buf.is_empty());
        msg
    }

    #[test]
    fn parses_a_captured_pyro4_connect_and_encodes_it_back_byte_for_byte() {
        let bytes = hex(CAPTURED_CONNECT);
        assert_eq!(Protocol::detect(&bytes), Ok(Protocol::Pyro4));
        let header = Protocol::Pyro4.parse_header(&bytes, MAX).unwrap();
        assert_eq!(header.msg_type, MessageType::Connect);
        assert_eq!(
            (header.data_len, header.ann_len, header.serializer),
            (74, 0, 1)
        );
        assert_eq!(header.total_len(), PYRO4_HEADER_SIZE + 74);
        let msg = parse(&bytes);
        assert_eq!(msg.flags, FLAGS_META_ON_CONNECT, "Pyro4's 0x10");
        assert_eq!(
            &msg.payload[..],
            &b"# serpent utf-8 python3.2\n{'handshake':'hello','object':'example.welcome'}"[..]
        );
        assert_eq!(msg.to_bytes_in(Protocol::Pyro4).to_vec(), bytes);
        assert_eq!(
            Protocol::Pyro4.serializer(msg.serializer),
            Some(crate::protocol::Serializer::Serpent)
        );
    }

    #[test]
    fn the_captured_invoke_and_result_round_trip_with_the_corr_annotation_as_the_correlation_id() {
        let invoke = hex(CAPTURED_INVOKE);
        let msg = parse(&invoke);
        assert_eq!(
            (msg.msg_type, msg.seq, msg.flags),
            (MessageType::Invoke, 1, 0)
        );
        assert_eq!(msg.to_bytes_in(Protocol::Pyro4).to_vec(), invoke);

        let result = hex(CAPTURED_RESULT);
        let msg = parse(&result);
        assert_eq!(msg.flags, FLAGS_CORR_ID);
        assert!(msg.annotations.is_empty(), "CORR became the correlation id");
        assert_eq!(msg.corr_id[..2], [0x09, 0xff]);
        assert_eq!(&msg.payload[26..], &b"'Hi welcome Rashmi'"[..]);
        assert_eq!(msg.to_bytes_in(Protocol::Pyro4).to_vec(), result);
    }

    #[test]
    fn the_checksum_is_pyro4s_and_a_wrong_one_is_refused_from_the_header_alone() {
        // pyro4-wire.md §3: 1 + 48 + 74 + 0 + 1 + 16 + 0 + 0x34E9 = 0x3575.
        assert_eq!(checksum(1, 0x10, 0, 74, 1, 0), 0x3575);
        let bytes = hex(CAPTURED_CONNECT);
        for at in [6, 9, 11, 15, 17, 19, 22, 23] {
            let mut bad = bytes[..HEADER_SIZE].to_vec();
            bad[at] ^= 0x01;
            assert!(
                matches!(check_any(&bad, MAX), Err(Error::BadChecksum { .. })),
                "byte {at} changed: {:?}",
                check_any(&bad, MAX)
            );
        }
        // The reserved field is not summed.
        let mut reserved = bytes.clone();
        reserved[20] = 0xff;
        assert!(check_any(&reserved, MAX).is_ok());
    }

    #[test]
    fn versions_lengths_and_types_are_checked_before_the_body() {
        let good = hex(CAPTURED_CONNECT);
        // Every prefix is incomplete, none an error.
        for n in 0..good.len() {
            assert_eq!(
                check_any(&good[..n], MAX),
                Err(Error::Incomplete),
                "prefix {n}"
            );
        }
        // A header with fields re-summed, so only the field under test is wrong.
        let header = |msg_type: u16, data_len: i32, serializer: u16, ann_len: u16| {
            let mut h = good[..HEADER_SIZE].to_vec();
            h[6..8].copy_from_slice(&msg_type.to_be_bytes());
            h[12..16].copy_from_slice(&data_len.to_be_bytes());
            h[16..18].copy_from_slice(&serializer.to_be_bytes());
            h[18..20].copy_from_slice(&ann_len.to_be_bytes());
            let sum = checksum(msg_type, 0x10, 0, data_len as u32, serializer, ann_len);
            h[22..24].copy_from_slice(&sum.to_be_bytes());
            h
        };
        assert_eq!(check_any(&header(9, 0, 1, 0), MAX), Err(Error::BadType(9)));
        assert_eq!(
            check_any(&header(1, -1, 1, 0), MAX),
            Err(Error::BadLength(-1))
        );
        assert_eq!(
            check_any(&header(1, 0, 300, 0), MAX),
            Err(Error::BadSerializer(300))
        );
        assert!(
            matches!(
                check_any(&header(1, i32::MAX, 1, 0), MAX),
                Err(Error::TooLarge { .. })
            ),
            "2 GiB refused from the header alone"
        );
        assert!(
            matches!(
                check_any(&header(1, 1000, 1, 100), 1050),
                Err(Error::TooLarge { size: 1100, .. })
            ),
            "both lengths count"
        );
        // A complete header declaring a body is incomplete until the body is there.
        assert_eq!(check_any(&header(1, 10, 1, 6), MAX), Err(Error::Incomplete));
        // Version 48 is Pyro4's; a Pyro5-only check refuses it, and other versions are refused.
        assert_eq!(super::super::check(&good, MAX), Err(Error::BadVersion(48)));
        let mut v47 = good.clone();
        v47[5] = 47;
        assert_eq!(check_any(&v47, MAX), Err(Error::BadVersion(47)));
        assert_eq!(Protocol::Pyro4.check(&v47, MAX), Err(Error::BadVersion(47)));
        let mut tag = good.clone();
        tag[1] = b'X';
        assert!(matches!(check_any(&tag[..2], MAX), Err(Error::BadTag(_))));
    }

    #[test]
    fn only_a_16_byte_corr_annotation_is_taken_for_the_correlation_id() {
        let mut msg = Message::new(MessageType::Invoke, 1, 0, 1, &b"x"[..]);
        msg.annotations.push((*b"XYZW", Bytes::from(vec![1u8; 16])));
        msg.annotations.push((*b"CORR", Bytes::from(vec![2u8; 15])));
        let back = parse(&msg.to_bytes_in(Protocol::Pyro4));
        assert_eq!(back.corr_id, [0; 16]);
        assert!(!back.has_flag(FLAGS_CORR_ID));
        assert_eq!(back.annotations, msg.annotations);
    }

    #[test]
    fn annotations_past_the_u16_block_are_left_out_and_later_ones_that_fit_are_not() {
        let mut msg = Message::new(MessageType::Invoke, 1, 0, 1, &b"x"[..]);
        msg.annotations
            .push((*b"AAAA", Bytes::from(vec![1u8; 60_000])));
        msg.annotations
            .push((*b"BBBB", Bytes::from(vec![2u8; 6_000])));
        msg.annotations.push((*b"CCCC", Bytes::from(vec![3u8; 10])));
        let back = parse(&msg.to_bytes_in(Protocol::Pyro4));
        let ids: Vec<_> = back.annotations.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [*b"AAAA", *b"CCCC"]);
        assert_eq!(back.annotation(b"CCCC").unwrap().as_ref(), &[3u8; 10]);
    }

    #[test]
    fn annotations_have_u16_lengths_and_flags_are_translated_both_ways() {
        let mut msg = Message::new(
            MessageType::Result,
            MSGPACK_ID,
            FLAGS_EXCEPTION | FLAGS_ITEMSTREAMRESULT,
            7,
            &b"payload"[..],
        );
        msg.corr_id = [3; 16];
        msg.annotations
            .push((*b"STRM", Bytes::from_static(b"0123")));
        let bytes = msg.to_bytes_in(Protocol::Pyro4);
        // Pyro4's EXCEPTION|ITEMSTREAMRESULT is 0x21; an exception reply carries no CORR.
        assert_eq!(&bytes[8..10], &[0x00, 0x21]);
        assert_eq!(&bytes[18..20], &[0, 10], "one chunk of 6 + 4 bytes");
        assert_eq!(&bytes[24..34], b"STRM\x00\x040123");
        let back = parse(&bytes);
        assert_eq!(back.flags, FLAGS_EXCEPTION | FLAGS_ITEMSTREAMRESULT);
        assert_eq!(back.annotation(b"STRM").unwrap().as_ref(), b"0123");
        // A normal reply carries CORR first; META_ON_CONNECT and KEEPSERIALIZED map to 0x10, 0x40.
        msg.flags = FLAGS_META_ON_CONNECT | FLAGS_KEEPSERIALIZED;
        let bytes = msg.to_bytes_in(Protocol::Pyro4);
        assert_eq!(&bytes[8..10], &[0x00, 0x50]);
        assert_eq!(&bytes[24..30], b"CORR\x00\x10");
        let back = parse(&bytes);
        assert_eq!(
            back.flags,
            FLAGS_META_ON_CONNECT | FLAGS_KEEPSERIALIZED | FLAGS_CORR_ID
        );
        assert_eq!(back.corr_id, [3; 16]);
        // A chunk longer than the block is refused.
        let mut bad = bytes.to_vec();
        bad[24 + 22 + 5] = 0xff;
        let header = check_any(&bad, MAX).unwrap();
        assert!(matches!(
            Message::parse(&mut BytesMut::from(&bad[..]), &header),
            Err(Error::BadAnnotations(_))
        ));
        // Annotations past the u16 limit are left out rather than corrupting the header.
        let mut big = Message::new(MessageType::Result, 1, 0, 1, &b""[..]);
        big.annotations
            .push((*b"BIG1", Bytes::from(vec![1; 40_000])));
        big.annotations
            .push((*b"BIG2", Bytes::from(vec![2; 40_000])));
        let back = parse(&big.to_bytes_in(Protocol::Pyro4));
        assert_eq!(back.annotations.len(), 1);
    }
}
