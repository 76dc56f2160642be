//! MessagePack (Pyro5's serializer id 4, rmp-serde): the only module that names rmp-serde.
//!
//! Structs are written with named fields (maps), as Python peers expect; an INVOKE payload is
//! Pyro5's 4-element array `[object, method, [args...], {kwargs}]`.

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::bounded::{counting_elements, Bounded, Budget};
use super::DecodeLimits;
use crate::error::Error;

fn codec_error(e: impl std::fmt::Display) -> Error {
    Error::Codec(e.to_string())
}

/// msgpack is one of Pyro's formats: values take their Pyro shape (`is_human_readable`), so a
/// URI is Pyro's URI class dict and a UUID a string, as Python peers expect; a non-empty
/// `Vec<u8>` is bin, Python's bytes (rmp-serde's `BytesMode::ForceIterables`, which reads back
/// into a `Vec<u8>`).
///
/// The value is walked twice: once to count its bytes, then into a buffer of that size. A
/// buffer grown by doubling instead cost a 10 MB argument a third more page faults and copies
/// (bincode sizes its buffer the same way); counting is cheap, as bytes and strings are
/// counted by their length, not copied.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    fn write<T: Serialize + ?Sized, W: std::io::Write>(value: &T, out: W) -> Result<(), Error> {
        let mut ser = rmp_serde::Serializer::new(out)
            .with_struct_map()
            .with_human_readable()
            .with_bytes(rmp_serde::config::BytesMode::ForceIterables);
        value
            .serialize(super::wide_ints::WideInts(&mut ser))
            .map_err(codec_error)
    }
    let mut len = Counter(0);
    write(value, &mut len)?;
    // (A large byte argument offered in an `in_place::offering` is left out, for the tail.)
    let mut out = super::in_place::Splitter::new(len.0);
    write(value, &mut out)?;
    Ok(out.finish())
}

/// A writer that only counts what is written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes `bytes` as a `T`; what does not fit directly (Pyro5's extensions for ints beyond 64
/// bits and datetimes, say) is read again through the value tree, which knows Python's shapes.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, Error> {
    decode_direct(bytes, limits).or_else(|first| {
        match decode_direct::<super::value::Value>(bytes, limits) {
            Ok(value) => T::deserialize(value).map_err(|_| first),
            Err(_) => Err(first),
        }
    })
}

/// Decodes over the borrowed payload: strings and bytes are copied once, into the value
/// (`Deserializer::new` would read each into a growing scratch buffer first).
fn decode_direct<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
    let value = counting_elements(bytes.len(), || {
        T::deserialize(Bounded {
            inner: &mut de,
            budget: Budget::new(limits.depth(), bytes.len()),
        })
    })
    .map_err(codec_error)?;
    // The borrowing reader does not say where it stopped: measure the document instead.
    match document_len(bytes) {
        Some(len) if len == bytes.len() => Ok(value),
        Some(len) => Err(Error::Codec(format!(
            "{} trailing bytes after the value",
            bytes.len() - len
        ))),
        None => Err(Error::Codec("truncated msgpack document".into())),
    }
}

/// Whether `head` ends in the header of a bin of `len` bytes, written as an encoder writes a
/// large one (bin32): where a sender left that bin's bytes out of its payload.
fn ends_in_bin_header(head: &[u8], len: usize) -> bool {
    let Ok(len) = u32::try_from(len) else {
        return false;
    };
    head.len() >= 5 && head[head.len() - 5] == 0xc6 && head[head.len() - 4..] == len.to_be_bytes()
}

/// Decodes `T` from a payload in pieces: `head`, which ends in the bin header of the first
/// piece of `tail`, then that bin's bytes, in a buffer of their own, then the rest of `tail`.
/// The buffer is handed by value to the visitor that reads the bin, not copied: the rest is
/// decoded with the bin declared empty, and the buffer stands in for that empty bin.
///
/// `None` (the first piece of `tail` put back) when `head` does not end in that header, or the
/// decoder did not read a bin there (the header's bytes were inside something else): the
/// caller decodes the joined payload instead. `Some` means the bin was read exactly there, so
/// the value is the one the joined payload gives.
pub(super) fn decode_apart<T: DeserializeOwned>(
    head: &[u8],
    tail: &mut [Bytes],
    limits: &DecodeLimits,
) -> Option<Result<T, Error>> {
    let (first, rest) = tail.split_first_mut()?;
    if !ends_in_bin_header(head, first.len()) {
        return None;
    }
    let rest_len = rest.iter().map(Bytes::len).sum::<usize>();
    let mut around = Vec::with_capacity(head.len() + rest_len);
    around.extend_from_slice(head);
    let declared = around.len() - 4;
    around[declared..].fill(0);
    for piece in &*rest {
        around.extend_from_slice(piece);
    }
    // (No copy: a piece a reader split off is its buffer's only owner.)
    let buf = Vec::from(std::mem::take(first));
    let at = around[head.len()..].as_ptr();
    let (decoded, left) = super::bounded::with_apart(at, buf, || decode_direct(&around, limits));
    match left {
        Some(buf) => {
            *first = Bytes::from(buf);
            None
        }
        None => Some(decoded),
    }
}

/// The object id and method name at the start of `head`, an INVOKE payload's first part, when
/// both lie before the bin header it ends in (see [`decode_apart`]); `None` otherwise.
pub(super) fn route_apart(head: &[u8], bin_len: usize) -> Option<(String, String)> {
    if !ends_in_bin_header(head, bin_len) {
        return None;
    }
    let before = &head[..head.len() - 5];
    let mut rd = before;
    if rmp::decode::read_array_len(&mut rd).ok()? != 4 {
        return None;
    }
    let mut name = || -> Option<String> {
        let len = rmp::decode::read_str_len(&mut rd).ok()? as usize;
        let bytes = rd.get(..len)?;
        rd = &rd[len..];
        String::from_utf8(bytes.to_vec()).ok()
    };
    Some((name()?, name()?))
}

/// How the msgpack value starting at `doc[pos]` is laid out, read from its header alone.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// The marker byte.
    marker: u8,
    /// Header bytes (marker, lengths, an extension's type).
    head: usize,
    /// Payload bytes after the header (a string's, bin's or extension's data).
    body: usize,
    /// Values nested inside (a map's keys and values both count).
    items: usize,
    /// A map: its items alternate key, value.
    map: bool,
}

/// The layout of the value at `doc[pos]`; `None` when its header is cut short or the marker is
/// the never-used `0xc1`. The body may still run past the end: callers check.
fn layout(doc: &[u8], pos: usize) -> Option<Layout> {
    let be = |n: usize| -> Option<usize> {
        let bytes = doc.get(pos + 1..(pos + 1).checked_add(n)?)?;
        usize::try_from(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b))).ok()
    };
    let marker = *doc.get(pos)?;
    let (head, body, items, map) = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0, false),
        0x80..=0x8f => (1, 0, usize::from(marker & 0x0f) * 2, true),
        0x90..=0x9f => (1, 0, usize::from(marker & 0x0f), false),
        0xa0..=0xbf => (1, usize::from(marker & 0x1f), 0, false),
        0xc4 | 0xd9 => (2, be(1)?, 0, false),
        0xc5 | 0xda => (3, be(2)?, 0, false),
        0xc6 | 0xdb => (5, be(4)?, 0, false),
        0xc7 => (3, be(1)?, 0, false),
        0xc8 => (4, be(2)?, 0, false),
        0xc9 => (6, be(4)?, 0, false),
        0xca => (5, 0, 0, false),
        0xcb => (9, 0, 0, false),
        0xcc | 0xd0 => (2, 0, 0, false),
        0xcd | 0xd1 => (3, 0, 0, false),
        0xce | 0xd2 => (5, 0, 0, false),
        0xcf | 0xd3 => (9, 0, 0, false),
        0xd4..=0xd8 => (2, 1 << (marker - 0xd4), 0, false),
        0xdc => (3, 0, be(2)?, false),
        0xdd => (5, 0, be(4)?, false),
        0xde => (3, 0, be(2)?.checked_mul(2)?, true),
        0xdf => (5, 0, be(4)?.checked_mul(2)?, true),
        0xc1 => return None,
    };
    Some(Layout {
        marker,
        head,
        body,
        items,
        map,
    })
}

/// The length of the one msgpack value at the start of `doc`, walked from its headers (a
/// string's or bin's bytes are skipped, not read); `None` when it is cut short or malformed.
fn document_len(doc: &[u8]) -> Option<usize> {
    // Values still to walk; each takes at least one byte, so more than the bytes left is a lie.
    let mut pending = 1usize;
    let mut pos = 0usize;
    while pending > 0 {
        pending -= 1;
        let value = layout(doc, pos)?;
        pos = pos.checked_add(value.head)?.checked_add(value.body)?;
        pending = pending.checked_add(value.items)?;
        if pos > doc.len() || pending > doc.len() - pos {
            return None;
        }
    }
    Some(pos)
}

/// A msgpack array of already encoded `items`.
pub(super) fn array_of(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(Vec::len).sum::<usize>() + 5);
    // Writing to a Vec cannot fail; a batch cannot hold 2^32 results.
    let _ = rmp::encode::write_array_len(&mut out, items.len() as u32);
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

/// Object id and method name of an INVOKE payload.
///
/// Routing needs only the first two elements; the rest is skipped over the borrowed payload
/// (no copy) and decoded, with the trailing-bytes check, when the arguments are.
pub(super) fn decode_route(
    payload: &Bytes,
    limits: &DecodeLimits,
) -> Result<(String, String), Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]).with_human_readable();
    let (object, method, _, _): (String, String, IgnoredAny, IgnoredAny) =
        counting_elements(payload.len(), || {
            Deserialize::deserialize(Bounded {
                inner: &mut de,
                budget: Budget::new(limits.depth(), payload.len()),
            })
        })
        .map_err(codec_error)?;
    Ok((object, method))
}

/// The array length the first argument declares, in a `[object, method, [args...], kwargs]`
/// INVOKE payload, read from the headers without decoding anything else.
pub(super) fn leading_seq_len(payload: &[u8]) -> Option<u64> {
    let mut rd = payload;
    if rmp::decode::read_array_len(&mut rd).ok()? != 4 {
        return None;
    }
    for _ in 0..2 {
        let len = rmp::decode::read_str_len(&mut rd).ok()? as usize;
        rd = rd.get(len..)?;
    }
    if rmp::decode::read_array_len(&mut rd).ok()? == 0 {
        return None;
    }
    rmp::decode::read_array_len(&mut rd).ok().map(u64::from)
}

/// Renames, in place, every `__class__` value `Pyro5.<rest>` of an encoded document to
/// `Pyro4.<rest>` (the same length), so a Pyro4 peer rebuilds rmi's URIs and errors. Walks the
/// document without recursion; stops at anything it does not recognise.
pub(super) fn rename_classes_for_pyro4(doc: &mut [u8]) {
    /// A container being walked: items left, and (maps) whether the next value is a class's.
    struct Open {
        left: usize,
        map: bool,
        class_value_next: bool,
    }
    let mut stack = vec![Open {
        left: 1,
        map: false,
        class_value_next: false,
    }];
    let mut pos = 0usize;
    while let Some(top) = stack.last_mut() {
        if top.left == 0 {
            stack.pop();
            continue;
        }
        top.left -= 1;
        // Map items alternate key, value: with 2n items, a key leaves an odd count behind.
        let is_key = top.map && top.left % 2 == 1;
        let class_value = top.map && !is_key && std::mem::take(&mut top.class_value_next);
        let Some(value) = layout(doc, pos) else {
            return;
        };
        let start = pos + value.head;
        let Some(end) = start
            .checked_add(value.body)
            .filter(|&end| end <= doc.len())
        else {
            return;
        };
        let is_str = matches!(value.marker, 0xa0..=0xbf | 0xd9..=0xdb);
        if is_str && is_key {
            top.class_value_next = &doc[start..end] == b"__class__";
        }
        if is_str && class_value && doc[start..end].starts_with(b"Pyro5.") {
            doc[start + 4] = b'4';
        }
        pos = end;
        if value.items > 0 {
            stack.push(Open {
                left: value.items,
                map: value.map,
                class_value_next: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_int_past_i64_within_u64_is_written_as_an_int_not_as_bytes() {
        use super::super::value::Value;
        let big = Value::Int(i128::from(u64::MAX));
        let bytes = encode(&big).unwrap();
        assert_eq!(bytes, [[0xcf].as_slice(), &[0xff; 8]].concat());
        let small = encode(&Value::Int(-5)).unwrap();
        assert_eq!(small, [0xfb]);
    }

    /// A call's arguments with a large bin between a string and a number, as msgpack.
    type Call = (String, serde_bytes::ByteBuf, u32);

    fn call() -> (Call, Vec<u8>) {
        let big = (0..70_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>();
        let value = ("name".to_owned(), serde_bytes::ByteBuf::from(big), 9);
        let encoded = rmp_serde::to_vec(&value).unwrap();
        (value, encoded)
    }

    #[test]
    fn a_bin_read_apart_is_handed_to_its_visitor_and_anything_else_is_left_to_a_join() {
        let limits = DecodeLimits::default();
        let (value, whole) = call();
        let start = whole.len() - 70_000 - 1;
        let pieces = |from: usize, to: usize| {
            vec![
                Bytes::copy_from_slice(&whole[from..to]),
                Bytes::copy_from_slice(&whole[to..]),
            ]
        };
        let mut tail = pieces(start, start + 70_000);
        let at = tail[0].as_ptr();
        let got: Call = decode_apart(&whole[..start], &mut tail, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(got, value);
        assert_eq!(got.1.as_ptr(), at, "the piece's own buffer, not a copy");
        // Split anywhere else: not decoded apart, and the piece is back.
        for (from, to) in [
            (start - 1, start + 70_000),
            (start, start + 69_999),
            (0, 10),
        ] {
            let mut tail = pieces(from, to);
            let before = tail.clone();
            assert!(decode_apart::<Call>(&whole[..from], &mut tail, &limits).is_none());
            assert_eq!(tail, before, "{from}..{to}");
        }
        // A bin header's bytes inside another bin's data are no header: never read apart.
        let mut text = vec![b'a'; 10];
        text.extend_from_slice(&[0xc6, 0, 1, 0x11, 0x70]);
        text.extend(std::iter::repeat_n(b'b', 70_000 + 20));
        let lying = rmp_serde::to_vec(&(serde_bytes::ByteBuf::from(text), 1u8)).unwrap();
        let from = lying.iter().position(|&b| b == 0xc6).unwrap() + 5;
        let mut tail = vec![
            Bytes::copy_from_slice(&lying[from..from + 70_000]),
            Bytes::copy_from_slice(&lying[from + 70_000..]),
        ];
        let got = decode_apart::<(serde_bytes::ByteBuf, u8)>(&lying[..from], &mut tail, &limits);
        assert!(got.is_none(), "{got:?}");
        assert_eq!(frame_join(&lying[..from], &tail), lying);
    }

    fn frame_join(head: &[u8], tail: &[Bytes]) -> Vec<u8> {
        crate::protocol::frame::join(head, tail).to_vec()
    }

    #[test]
    fn names_before_a_bin_read_apart_route_the_call() {
        let args = (serde_bytes::ByteBuf::from(vec![1u8; 70_000]),);
        let payload = rmp_serde::to_vec(&("obj", "method", args, ())).unwrap();
        let start = payload.iter().position(|&b| b == 0xc6).unwrap() + 5;
        let route = route_apart(&payload[..start], 70_000);
        assert_eq!(route, Some(("obj".into(), "method".into())));
        assert_eq!(route_apart(&payload[..start], 69_999), None);
        assert_eq!(route_apart(&payload[..start - 1], 70_000), None);
    }

    #[test]
    fn the_length_of_a_document_is_walked_from_its_headers() {
        use std::collections::BTreeMap;
        let value = (
            "text",
            serde_bytes::ByteBuf::from(vec![7u8; 70_000]),
            BTreeMap::from([("k", vec![1.5f64, -2.0]), ("j", vec![])]),
            (u64::MAX, -3i64, None::<u8>, true, 1.25f32),
            vec!["x".repeat(40); 20],
        );
        let doc = encode(&value).unwrap();
        assert_eq!(document_len(&doc), Some(doc.len()));
        // Counted first, then written into a buffer of exactly that size: one allocation.
        assert_eq!(doc.capacity(), doc.len());
        let mut longer = doc.clone();
        longer.push(0xc0);
        assert_eq!(document_len(&longer), Some(doc.len()));
        for cut in [1, 2, 10, doc.len() / 2, doc.len() - 1] {
            assert_eq!(document_len(&doc[..cut]), None, "cut at {cut}");
        }
        // Extensions (Pyro5's big ints and datetimes): fixext and ext 8/16/32, header and data.
        for ext in [
            &[0xd7, 0x32, 1, 2, 3, 4, 5, 6, 7, 8][..],
            &[0xc7, 3, 0x31, b'1', b'2', b'3'][..],
            &[0xc8, 0, 2, 0x31, b'1', b'2'][..],
            &[0xc9, 0, 0, 0, 1, 0x31, b'7'][..],
        ] {
            assert_eq!(document_len(ext), Some(ext.len()), "{ext:x?}");
            assert_eq!(document_len(&ext[..ext.len() - 1]), None, "{ext:x?}");
        }
        // An array claiming more items than there are bytes, and the never-used marker.
        assert_eq!(document_len(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
        assert_eq!(document_len(&[0xc1]), None);
        // Through decode: the value, and trailing bytes refused.
        let limits = DecodeLimits::default();
        let back: (String, serde_bytes::ByteBuf) = decode(
            &encode(&("a", serde_bytes::Bytes::new(b"xyz"))).unwrap(),
            &limits,
        )
        .unwrap();
        assert_eq!((back.0.as_str(), back.1.as_slice()), ("a", &b"xyz"[..]));
        let err = decode::<IgnoredAny>(&longer[..], &limits).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn pyro5_classes_are_renamed_for_pyro4_and_nothing_else_is() {
        use std::collections::BTreeMap;
        let uri: crate::uri::Uri = "PYRO:obj@127.0.0.1:4000".parse().unwrap();
        let value = (
            "Pyro5.core.URI",
            BTreeMap::from([("__class__", "Pyro5.errors.NamingError"), ("x", "Pyro5.y")]),
            vec![uri],
            (
                1u64 << 40,
                -3i64,
                1.5f64,
                serde_bytes::ByteBuf::from(vec![0u8; 300]),
            ),
        );
        let mut doc = encode(&value).unwrap();
        rename_classes_for_pyro4(&mut doc);
        let text = String::from_utf8_lossy(&doc);
        assert!(text.contains("Pyro4.errors.NamingError"), "{text}");
        assert!(text.contains("Pyro4.core.URI"), "{text}");
        assert!(
            text.contains("Pyro5.core.URI"),
            "a plain string stays: {text}"
        );
        assert!(text.contains("Pyro5.y"), "{text}");
        // A class after a nested list in the same dict: the walk comes back to the dict.
        #[derive(Serialize)]
        struct Shaped {
            items: Vec<&'static str>,
            #[serde(rename = "__class__")]
            class: &'static str,
        }
        let mut doc = encode(&Shaped {
            items: vec!["Pyro5.a"],
            class: "Pyro5.errors.CommunicationError",
        })
        .unwrap();
        rename_classes_for_pyro4(&mut doc);
        let text = String::from_utf8_lossy(&doc);
        assert!(text.contains("Pyro4.errors.CommunicationError"), "{text}");
        assert!(text.contains("Pyro5.a"), "{text}");
    }
}
